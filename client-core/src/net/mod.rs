//! The QUIC shell: moves the sync protocol's bytes between a device and its borough server.
//!
//! It holds no protocol logic. [`FramedStream`] turns a QUIC bidirectional stream into frames (with
//! the size limit enforced before buffering); [`drive`] feeds a [`ClientSession`] with what
//! arrives and carries out the actions it returns; [`enrol`] runs the one-off enrolment exchange
//! (and [`enrol_borough`] its twin, a borough server enrolling with the trust hub).
//! Connection migration is quinn's: a laptop that changes network keeps its connection, because the
//! server identifies it by certificate, never by address.
//!
//! [`ClientSession`]: crate::sync::ClientSession

pub mod blobs;
mod client;

pub use client::{
    carry_out_local, connect, drive, enrol, enrol_borough, fetch_access_log, Outgoing, SessionHost,
    CONNECT_TIMEOUT,
};

use std::net::SocketAddr;

use crate::sync::{ErrorCode, Frame, FrameDecoder, FrameError, DEFAULT_MAX_FRAME};

/// What can go wrong on the network, in words a practitioner can act on. Work is always kept
/// locally whatever happens here.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The address could not be resolved or parsed.
    #[error("cannot find the server at '{0}': check the address (host:port)")]
    BadAddress(String),
    /// No answer from the server.
    #[error("cannot reach the borough server at {addr} ({detail}); your work is saved on this device and will sync later")]
    Unreachable {
        /// Where.
        addr: String,
        /// What quinn said.
        detail: String,
    },
    /// The server refused us, with its reason.
    #[error("the server refused this device: {message}")]
    Refused {
        /// Why.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The connection dropped.
    #[error(
        "the connection to the server was lost ({0}); your work is saved on this device: try again"
    )]
    Lost(String),
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(#[from] FrameError),
    /// TLS or identity setup failed.
    #[error("secure connection setup failed: {0}")]
    Identity(#[from] crate::identity::IdentityError),
    /// A local failure (a socket that would not open, a frame the session did not expect).
    #[error("{0}")]
    Local(String),
    /// The device's store refused to save what arrived; what was saved before stays saved.
    #[error("this device could not save what the server sent ({0}); your own work is safe on it")]
    Store(#[from] crate::store::StoreError),
}

impl NetError {
    /// Whether the message itself tells the user their work is safe on the device (a server out of
    /// reach, a connection lost, the device's store refusing what arrived), so a caller need not
    /// add it.
    pub fn says_work_is_kept(&self) -> bool {
        matches!(
            self,
            NetError::Unreachable { .. } | NetError::Lost(_) | NetError::Store(_)
        )
    }
}

/// Resolve `host:port`.
pub async fn resolve(addr: &str) -> Result<SocketAddr, NetError> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(a);
    }
    tokio::net::lookup_host(addr)
        .await
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| NetError::BadAddress(addr.to_string()))
}

/// Turn a quinn connection error into a clear [`NetError`]: the server's own close reason when it
/// gave one (a refused device often sees only "connection lost" otherwise).
pub fn explain(
    addr: &str,
    conn: Option<&quinn::Connection>,
    err: impl std::fmt::Display,
) -> NetError {
    let reason = conn.and_then(|c| c.close_reason());
    match reason {
        Some(quinn::ConnectionError::ApplicationClosed(close)) => {
            let code = ErrorCode::from_u16(close.error_code.into_inner() as u16).unwrap_or(ErrorCode::Internal);
            let message = String::from_utf8_lossy(&close.reason).to_string();
            if code == ErrorCode::Done {
                NetError::Lost(message)
            } else {
                NetError::Refused { code, message }
            }
        }
        Some(quinn::ConnectionError::TimedOut) => {
            NetError::Unreachable { addr: addr.to_string(), detail: "timed out".into() }
        }
        Some(quinn::ConnectionError::ConnectionClosed(c)) => NetError::Refused {
            code: ErrorCode::Unauthorised,
            message: format!(
                "the secure handshake was refused ({}): this device may be revoked or enrolled with another borough",
                c
            ),
        },
        Some(other) => NetError::Lost(other.to_string()),
        None => NetError::Lost(err.to_string()),
    }
}

/// The receiving half of a framed stream.
pub struct FrameReader {
    recv: quinn::RecvStream,
    dec: FrameDecoder,
    buf: Vec<u8>,
}

impl FrameReader {
    /// The next frame; `Ok(None)` when the peer finished the stream cleanly.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, StreamError> {
        loop {
            if let Some(f) = self.dec.next_frame()? {
                return Ok(Some(f));
            }
            match self.recv.read(&mut self.buf).await {
                Ok(Some(n)) => self.dec.push(&self.buf[..n]),
                Ok(None) => {
                    if self.dec.pending() > 0 {
                        return Err(StreamError::Frame(FrameError::Malformed {
                            kind: "stream",
                            detail: "ended in the middle of a frame".into(),
                        }));
                    }
                    return Ok(None);
                }
                Err(e) => return Err(StreamError::Read(e.to_string())),
            }
        }
    }
}

/// A QUIC bidirectional stream carrying frames.
pub struct FramedStream {
    /// Sending half.
    pub send: quinn::SendStream,
    reader: FrameReader,
}

impl FramedStream {
    /// Wrap a stream, with the default frame size limit.
    pub fn new(send: quinn::SendStream, recv: quinn::RecvStream) -> Self {
        Self::with_limit(send, recv, DEFAULT_MAX_FRAME)
    }

    /// Wrap a stream with a frame size limit.
    pub fn with_limit(send: quinn::SendStream, recv: quinn::RecvStream, max: usize) -> Self {
        FramedStream {
            send,
            reader: FrameReader {
                recv,
                dec: FrameDecoder::new(max),
                buf: vec![0; 64 * 1024],
            },
        }
    }

    /// The next frame; `Ok(None)` when the peer finished the stream cleanly.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, StreamError> {
        self.reader.read_frame().await
    }

    /// Refuse frames over `max` bytes from now on (a stream whose first frame said what it
    /// carries: the sync session takes larger frames than an attachment stream).
    pub fn set_limit(&mut self, max: usize) {
        self.reader.dec.set_max(max);
    }

    /// Write frames as one buffer.
    pub async fn write_frames(&mut self, frames: &[Frame]) -> Result<(), StreamError> {
        write_frames(&mut self.send, frames).await
    }

    /// Separate the halves, so one task can read while another writes.
    pub fn split(self) -> (quinn::SendStream, FrameReader) {
        (self.send, self.reader)
    }
}

/// Write frames to a send stream as one buffer.
pub async fn write_frames(
    send: &mut quinn::SendStream,
    frames: &[Frame],
) -> Result<(), StreamError> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    send.write_all(&out)
        .await
        .map_err(|e| StreamError::Write(e.to_string()))
}

/// A failure on a framed stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The peer sent a bad frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Reading failed (connection lost or reset).
    #[error("read failed: {0}")]
    Read(String),
    /// Writing failed.
    #[error("write failed: {0}")]
    Write(String),
}
