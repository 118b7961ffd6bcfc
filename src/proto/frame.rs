//! The wire format: each frame is a 4-byte big-endian length (of what follows), a 1-byte kind
//! and a payload. Control frames carry JSON; stdio frames carry raw bytes. A frame that breaks
//! these rules is an error, never a panic.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::message::{ExitStatus, Hello, Request, Response};

/// The protocol version both ends must share.
pub const VERSION: u32 = 1;

/// The largest payload a frame may carry.
pub const MAX_PAYLOAD: usize = 1 << 20;

const HELLO: u8 = 1;
const REQUEST: u8 = 2;
const RESPONSE: u8 = 3;
const STDIN: u8 = 4;
const STDIN_CLOSE: u8 = 5;
const STDOUT: u8 = 6;
const STDERR: u8 = 7;
const RESIZE: u8 = 8;
const SIGNAL: u8 = 9;
const EXIT: u8 = 10;
const END: u8 = 11;

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Hello(Hello),
    Request(Request),
    Response(Response),
    Stdin(Vec<u8>),
    StdinClose,
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Resize {
        rows: u16,
        cols: u16,
    },
    Signal(i32),
    Exit(ExitStatus),
    /// The client is done with an exec session; the connection carries the next request.
    End,
}

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The other side closed the stream between frames.
    #[error("the connection closed")]
    Closed,
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("frame of {0} bytes is larger than the limit of {MAX_PAYLOAD}")]
    TooLarge(usize),
    #[error(
        "protocol version mismatch: this agentenv speaks version {ours}, the other side {theirs}"
    )]
    VersionMismatch { ours: u32, theirs: u32 },
    #[error("unexpected frame: {0}")]
    Unexpected(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn json<T: Serialize>(kind: u8, value: &T) -> Result<(u8, Vec<u8>), ProtoError> {
    serde_json::to_vec(value)
        .map(|v| (kind, v))
        .map_err(|e| ProtoError::Malformed(e.to_string()))
}

fn parse<T: DeserializeOwned>(what: &str, payload: &[u8]) -> Result<T, ProtoError> {
    serde_json::from_slice(payload).map_err(|e| ProtoError::Malformed(format!("{what}: {e}")))
}

impl Frame {
    /// The kind byte and payload of this frame.
    fn parts(&self) -> Result<(u8, std::borrow::Cow<'_, [u8]>), ProtoError> {
        use std::borrow::Cow::{Borrowed, Owned};
        Ok(match self {
            Frame::Hello(h) => json(HELLO, h).map(|(k, v)| (k, Owned(v)))?,
            Frame::Request(r) => json(REQUEST, r).map(|(k, v)| (k, Owned(v)))?,
            Frame::Response(r) => json(RESPONSE, r).map(|(k, v)| (k, Owned(v)))?,
            Frame::Exit(e) => json(EXIT, e).map(|(k, v)| (k, Owned(v)))?,
            Frame::Stdin(d) => (STDIN, Borrowed(d.as_slice())),
            Frame::Stdout(d) => (STDOUT, Borrowed(d.as_slice())),
            Frame::Stderr(d) => (STDERR, Borrowed(d.as_slice())),
            Frame::StdinClose => (STDIN_CLOSE, Borrowed(&[][..])),
            Frame::End => (END, Borrowed(&[][..])),
            Frame::Resize { rows, cols } => {
                let mut v = rows.to_be_bytes().to_vec();
                v.extend_from_slice(&cols.to_be_bytes());
                (RESIZE, Owned(v))
            }
            Frame::Signal(s) => (SIGNAL, Owned(s.to_be_bytes().to_vec())),
        })
    }

    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        let (kind, payload) = self.parts()?;
        if payload.len() > MAX_PAYLOAD {
            return Err(ProtoError::TooLarge(payload.len()));
        }
        out.extend_from_slice(&(payload.len() as u32 + 1).to_be_bytes());
        out.push(kind);
        out.extend_from_slice(&payload);
        Ok(())
    }

    /// Decodes a frame from its kind and payload.
    pub fn decode(kind: u8, payload: Vec<u8>) -> Result<Frame, ProtoError> {
        let fixed = |n: usize| -> Result<(), ProtoError> {
            if payload.len() == n {
                Ok(())
            } else {
                Err(ProtoError::Malformed(format!(
                    "kind {kind} needs {n} bytes, got {}",
                    payload.len()
                )))
            }
        };
        Ok(match kind {
            HELLO => Frame::Hello(parse("hello", &payload)?),
            REQUEST => Frame::Request(parse("request", &payload)?),
            RESPONSE => Frame::Response(parse("response", &payload)?),
            EXIT => Frame::Exit(parse("exit", &payload)?),
            STDIN => Frame::Stdin(payload),
            STDOUT => Frame::Stdout(payload),
            STDERR => Frame::Stderr(payload),
            STDIN_CLOSE => {
                fixed(0)?;
                Frame::StdinClose
            }
            END => {
                fixed(0)?;
                Frame::End
            }
            RESIZE => {
                fixed(4)?;
                Frame::Resize {
                    rows: u16::from_be_bytes([payload[0], payload[1]]),
                    cols: u16::from_be_bytes([payload[2], payload[3]]),
                }
            }
            SIGNAL => {
                fixed(4)?;
                Frame::Signal(i32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]))
            }
            other => return Err(ProtoError::Malformed(format!("unknown frame kind {other}"))),
        })
    }
}

/// The length and kind bytes before a payload.
pub const HEADER: usize = 5;

/// Writes the header of a stdout (or stderr) frame of `len` bytes into `buf[..HEADER]`, for a
/// payload already in place behind it.
pub fn data_header(buf: &mut [u8], stderr: bool, len: usize) {
    buf[..4].copy_from_slice(&(len as u32 + 1).to_be_bytes());
    buf[4] = if stderr { STDERR } else { STDOUT };
}

/// Reads one frame; `Ok(None)` when the stream ends cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, ProtoError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 {
        return Err(ProtoError::Malformed("empty frame".into()));
    }
    if len - 1 > MAX_PAYLOAD {
        return Err(ProtoError::TooLarge(len - 1));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            ProtoError::Malformed("stream ended inside a frame".into())
        }
        _ => e.into(),
    })?;
    let kind = buf.remove(0);
    Frame::decode(kind, buf).map(Some)
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &Frame) -> Result<(), ProtoError> {
    let mut buf = Vec::new();
    f.encode(&mut buf)?;
    w.write_all(&buf).await?;
    // A socket sends at once; a buffered stream (a process's stdout) would hold the frame.
    w.flush().await?;
    Ok(())
}

/// Sends our Hello and checks theirs (a client's end).
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Result<Hello, ProtoError> {
    exchange_hellos(s, our_hello()).await
}

/// The agent's end of the handshake: it offers to take several requests per connection.
pub async fn handshake_as_agent<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
) -> Result<Hello, ProtoError> {
    let hello = Hello {
        reuse: true,
        ..our_hello()
    };
    exchange_hellos(s, hello).await
}

async fn exchange_hellos<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    ours: Hello,
) -> Result<Hello, ProtoError> {
    write_frame(s, &Frame::Hello(ours)).await?;
    match read_frame(s).await? {
        Some(Frame::Hello(h)) if h.version == VERSION => Ok(h),
        Some(Frame::Hello(h)) => Err(ProtoError::VersionMismatch {
            ours: VERSION,
            theirs: h.version,
        }),
        Some(other) => Err(ProtoError::Unexpected(format!("{other:?} before hello"))),
        None => Err(ProtoError::Closed),
    }
}

pub fn our_hello() -> Hello {
    Hello {
        version: VERSION,
        software: format!("agentenv {}", env!("CARGO_PKG_VERSION")),
        reuse: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::message::{ExecSpec, WinSize};

    async fn round_trip(f: Frame) -> Frame {
        let mut buf = Vec::new();
        f.encode(&mut buf).unwrap();
        read_frame(&mut buf.as_slice()).await.unwrap().unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn every_frame_kind_round_trips() {
        let frames = vec![
            Frame::Hello(our_hello()),
            Frame::Request(Request::Ps),
            Frame::Request(Request::Exec(ExecSpec {
                rc_script: "export A=1\n".into(),
                shell: "/nix/store/x/bin/bash".into(),
                command: Some(vec!["echo".into(), "hi".into()]),
                cwd: "/p".into(),
                env: vec![("HOME".into(), "/root".into())],
                prompt_name: "p".into(),
                tty: Some(WinSize { rows: 24, cols: 80 }),
                stdin_script: false,
                passed_stdio: false,
            })),
            Frame::Response(Response::Started { pid: 7 }),
            Frame::Stdin(b"in".to_vec()),
            Frame::StdinClose,
            Frame::Stdout(vec![0, 1, 2, 255]),
            Frame::Stderr(Vec::new()),
            Frame::Resize {
                rows: 50,
                cols: 132,
            },
            Frame::Signal(15),
            Frame::Exit(ExitStatus { code: 143 }),
            Frame::End,
        ];
        for f in frames {
            assert_eq!(round_trip(f.clone()).await, f);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn malformed_frames_are_errors_not_panics() {
        let cases: Vec<Vec<u8>> = vec![
            vec![0, 0, 0, 0],                                  // empty frame
            vec![0, 0, 0, 1, 99],                              // unknown kind
            vec![0, 0, 0, 3, SIGNAL, 1, 2],                    // short signal
            vec![0, 0, 0, 5, REQUEST, b'{', b'x', b'y', b'}'], // bad JSON
            vec![0xff, 0xff, 0xff, 0xff, 1],                   // too large
            vec![0, 0, 0, 9, STDOUT, 1],                       // truncated
        ];
        for c in cases {
            let r = read_frame(&mut c.as_slice()).await;
            assert!(r.is_err(), "{c:?} gave {r:?}");
        }
        assert!(matches!(read_frame(&mut &[][..]).await, Ok(None)));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn version_mismatch_is_reported() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let other = tokio::spawn(async move {
            let _ = read_frame(&mut b).await;
            let hello = Hello {
                version: VERSION + 1,
                software: "future".into(),
                reuse: false,
            };
            write_frame(&mut b, &Frame::Hello(hello)).await.unwrap();
        });
        let err = handshake(&mut a).await.unwrap_err();
        assert!(matches!(err, ProtoError::VersionMismatch { .. }), "{err}");
        other.await.unwrap();
    }
}
