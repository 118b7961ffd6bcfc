//! The hybrid vsock handshake (`CONNECT <port>\n`, answered `OK <port>\n`) through which the
//! host reaches a VM's vsock ports, the serving end (the client is `transport::vsock`): the
//! socket a VZ VM's machine process offers, as vhost-device-vsock does for QEMU. Each served connection is joined to a fresh
//! guest connection and relayed both ways until each side closes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

/// The longest handshake line accepted (`CONNECT 4294967295` and its newline).
const MAX_LINE: u64 = 32;

/// The port a `CONNECT <port>` line asks for.
pub fn parse_connect(line: &str) -> Result<u32, String> {
    let port = line
        .strip_suffix('\n')
        .unwrap_or(line)
        .strip_prefix("CONNECT ")
        .ok_or_else(|| format!("not a CONNECT line: {line:?}"))?;
    port.parse()
        .map_err(|_| format!("not a vsock port: {port:?}"))
}

/// Serves `listener` until it fails: every connection in a thread of its own.
/// `connect(port)` opens a stream to that port in the guest.
pub fn serve<F>(listener: UnixListener, connect: F)
where
    F: Fn(u32) -> anyhow::Result<OwnedFd> + Send + Sync + 'static,
{
    let connect = Arc::new(connect);
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("vsock socket: accept failed: {e}");
                return;
            }
        };
        let connect = Arc::clone(&connect);
        std::thread::spawn(move || {
            if let Err(e) = serve_one(conn, &*connect) {
                tracing::debug!("vsock connection: {e:#}");
            }
        });
    }
}

/// One connection: the handshake, then the relay.
fn serve_one(
    client: UnixStream,
    connect: &dyn Fn(u32) -> anyhow::Result<OwnedFd>,
) -> anyhow::Result<()> {
    // Read the line byte by byte: what follows it is the protocol's, not the handshake's.
    let mut line = String::new();
    BufReader::with_capacity(1, (&client).take(MAX_LINE)).read_line(&mut line)?;
    let port = match parse_connect(&line) {
        Ok(p) => p,
        Err(e) => {
            let _ = (&client).write_all(b"FAILED\n");
            anyhow::bail!(e);
        }
    };
    let guest = match connect(port) {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => {
            let _ = (&client).write_all(b"FAILED\n");
            return Err(e);
        }
    };
    (&client).write_all(format!("OK {port}\n").as_bytes())?;
    relay(client, guest);
    Ok(())
}

/// Copies each way until its end closes, then closes the other end for writing.
pub fn relay(client: UnixStream, guest: UnixStream) {
    let (c2, g2) = match (client.try_clone(), guest.try_clone()) {
        (Ok(c), Ok(g)) => (c, g),
        _ => return,
    };
    let up = std::thread::spawn(move || copy_then_shut(c2, g2));
    copy_then_shut(guest, client);
    let _ = up.join();
}

fn copy_then_shut(mut from: UnixStream, mut to: UnixStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn connect_lines_name_a_port_and_nothing_else() {
        assert_eq!(parse_connect("CONNECT 1024\n"), Ok(1024));
        assert_eq!(parse_connect("CONNECT 4294967295"), Ok(u32::MAX));
        assert!(parse_connect("CONNECT -1\n").is_err());
        assert!(parse_connect("connect 1024\n").is_err());
        assert!(parse_connect("CONNECT 1024 extra\n").is_err());
    }

    /// The transport's client against this server, with a socketpair standing in for each
    /// guest connection and an echo on the guest's side.
    #[tokio::test(flavor = "current_thread")]
    async fn the_transport_client_reaches_the_guest_port_through_the_relay() {
        let tmp = tempfile::Builder::new()
            .prefix("agentenv-vz-hybrid")
            .tempdir()
            .unwrap();
        let path = tmp.path().join("vsock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            serve(listener, |port| {
                anyhow::ensure!(port == 1024, "nothing listens on port {port}");
                let (host, mut guest) = UnixStream::pair()?;
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    guest.read_to_end(&mut got).unwrap();
                    guest.write_all(&got).unwrap();
                });
                Ok(OwnedFd::from(host))
            })
        });
        let mut c = crate::transport::vsock::connect_hybrid(&path, 1024)
            .await
            .unwrap();
        c.write_all(b"frames").await.unwrap();
        c.shutdown().await.unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"frames", "the guest's answer, after the handshake");

        let err = crate::transport::vsock::connect_hybrid(&path, 2000)
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    }
}
