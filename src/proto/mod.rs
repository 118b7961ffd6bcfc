//! The host <-> guest protocol: framed, typed messages over any byte stream (a unix socket
//! here; vsock or ssh stdio later). `frame` is the wire format, `message` the typed payloads,
//! `client` the host's end of an exec session. The guest's end is `guest::agent`.
//! docs/protocol.md specifies it.

pub mod client;
pub mod fdpass;
pub mod frame;
pub mod message;

pub use frame::{read_frame, write_frame, Frame, ProtoError, MAX_PAYLOAD, VERSION};
