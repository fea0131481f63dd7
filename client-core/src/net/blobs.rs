//! Attachments on streams of their own: one QUIC stream per file, beside the sync session.
//!
//! Uploading: the device offers the bytes (`BlobOffer`); the server answers `BlobSaved` if it
//! holds them already, or `BlobWant`, and the device sends them in `BlobChunk` frames; the server
//! checks them against their address and answers `BlobSaved` only once they are on its disk. Only
//! then does the device record them as saved (acknowledged the same way as changes).
//!
//! Downloading: the device asks (`BlobWant`); the server answers `BlobOffer` and the chunks, and
//! the device keeps them only if they hash to the address the record names.
//!
//! A refusal comes as `Error` on the stream, and ends only that stream.

use super::{explain, FramedStream, NetError};
use crate::model::MAX_ATTACHMENT_BYTES;
use crate::sync::{Frame, BLOB_CHUNK_BYTES};
use crate::{BlobHash, CaseId};

/// What an attachment stream may carry at most, frames and all: the largest attachment in
/// chunks, with room for their headers.
fn stream_limit() -> usize {
    BLOB_CHUNK_BYTES + 64
}

async fn open(addr: &str, conn: &quinn::Connection) -> Result<FramedStream, NetError> {
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| explain(addr, Some(conn), e))?;
    Ok(FramedStream::with_limit(send, recv, stream_limit()))
}

/// How long the device waits for the server's next frame on an attachment stream (the server
/// may first wait for room for the file, or for its disk).
pub const FRAME_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

async fn next(
    addr: &str,
    conn: &quinn::Connection,
    s: &mut FramedStream,
) -> Result<Frame, NetError> {
    let read = tokio::time::timeout(FRAME_WAIT, s.read_frame())
        .await
        .map_err(|_| {
            NetError::Local(
                "the server did not answer on an attachment stream within a minute; it is tried again at the next sync".into(),
            )
        })?;
    match read.map_err(|e| explain(addr, Some(conn), e))? {
        Some(Frame::Error(r)) => Err(NetError::Refused {
            code: r.code,
            message: r.message,
        }),
        Some(f) => Ok(f),
        None => Err(explain(
            addr,
            Some(conn),
            "the server ended the attachment stream early",
        )),
    }
}

fn unexpected(f: &Frame) -> NetError {
    NetError::Local(format!(
        "unexpected {} frame from the server on an attachment stream",
        f.kind()
    ))
}

/// The bytes as `BlobChunk` frames.
pub fn chunks(content: &[u8]) -> Vec<Frame> {
    content
        .chunks(BLOB_CHUNK_BYTES)
        .map(|c| Frame::BlobChunk(c.to_vec()))
        .collect()
}

/// Upload an attachment's bytes; returns once the server says they are durable on its disk.
pub async fn upload(
    addr: &str,
    conn: &quinn::Connection,
    case: CaseId,
    hash: BlobHash,
    content: &[u8],
) -> Result<(), NetError> {
    let mut s = open(addr, conn).await?;
    let size = content.len() as u64;
    s.write_frames(&[Frame::BlobOffer { case, hash, size }])
        .await
        .map_err(|e| explain(addr, Some(conn), e))?;
    match next(addr, conn, &mut s).await? {
        Frame::BlobSaved { case: c, hash: h } if c == case && h == hash => {
            let _ = s.send.finish();
            return Ok(());
        }
        Frame::BlobWant { case: c, hash: h } if c == case && h == hash => {}
        other => return Err(unexpected(&other)),
    }
    for frame in chunks(content) {
        s.write_frames(&[frame])
            .await
            .map_err(|e| explain(addr, Some(conn), e))?;
    }
    let _ = s.send.finish();
    match next(addr, conn, &mut s).await? {
        Frame::BlobSaved { case: c, hash: h } if c == case && h == hash => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// Gathers an attachment's chunks, refusing more than was announced or than may be attached,
/// and bytes that are not what their address names. Sans-IO: both ends use it.
#[derive(Debug)]
pub struct Receiving {
    hash: BlobHash,
    size: u64,
    bytes: Vec<u8>,
}

impl Receiving {
    /// Expect `size` bytes that hash to `hash`; refuse a size over [`MAX_ATTACHMENT_BYTES`] or 0.
    pub fn new(hash: BlobHash, size: u64) -> Result<Receiving, String> {
        if size == 0 || size > MAX_ATTACHMENT_BYTES {
            return Err(format!(
                "an attachment of {size} bytes: attachments are 1 byte to {} MB",
                MAX_ATTACHMENT_BYTES >> 20
            ));
        }
        Ok(Receiving {
            hash,
            size,
            bytes: Vec::new(),
        })
    }

    /// Make room for every announced byte at once (a receiver that has already bounded how many
    /// transfers it holds), instead of growing as they arrive.
    pub fn reserve(&mut self) {
        self.bytes
            .reserve_exact((self.size as usize).saturating_sub(self.bytes.len()));
    }

    /// Take the next chunk. Returns whether every announced byte has arrived.
    pub fn take(&mut self, chunk: &[u8]) -> Result<bool, String> {
        if (self.bytes.len() + chunk.len()) as u64 > self.size {
            return Err(format!(
                "more bytes than the {} announced for the attachment",
                self.size
            ));
        }
        self.bytes.extend_from_slice(chunk);
        Ok(self.bytes.len() as u64 == self.size)
    }

    /// The whole attachment, once it hashes to its address.
    pub fn finish(self) -> Result<Vec<u8>, String> {
        if (self.bytes.len() as u64) < self.size {
            return Err(format!(
                "{} of the {} bytes announced arrived",
                self.bytes.len(),
                self.size
            ));
        }
        if !self.hash.matches(&self.bytes) {
            return Err(format!(
                "the bytes are not the attachment {}: they do not hash to its address",
                self.hash
            ));
        }
        Ok(self.bytes)
    }
}

/// Download an attachment's bytes, checked against their address.
pub async fn download(
    addr: &str,
    conn: &quinn::Connection,
    case: CaseId,
    hash: BlobHash,
) -> Result<Vec<u8>, NetError> {
    let mut s = open(addr, conn).await?;
    s.write_frames(&[Frame::BlobWant { case, hash }])
        .await
        .map_err(|e| explain(addr, Some(conn), e))?;
    let _ = s.send.finish();
    let size = match next(addr, conn, &mut s).await? {
        Frame::BlobOffer {
            case: c,
            hash: h,
            size,
        } if c == case && h == hash => size,
        other => return Err(unexpected(&other)),
    };
    let mut receiving = Receiving::new(hash, size).map_err(NetError::Local)?;
    loop {
        match next(addr, conn, &mut s).await? {
            Frame::BlobChunk(bytes) => {
                if receiving.take(&bytes).map_err(NetError::Local)? {
                    break;
                }
            }
            other => return Err(unexpected(&other)),
        }
    }
    receiving.finish().map_err(NetError::Local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiving_takes_exactly_what_was_announced_and_checks_the_address() {
        let content: Vec<u8> = (0..(BLOB_CHUNK_BYTES * 2 + 10))
            .map(|i| (i % 251) as u8)
            .collect();
        let hash = BlobHash::of(&content);
        let mut r = Receiving::new(hash, content.len() as u64).unwrap();
        let frames = chunks(&content);
        assert_eq!(frames.len(), 3);
        let mut done = false;
        for f in &frames {
            let Frame::BlobChunk(b) = f else {
                panic!("chunks are chunks")
            };
            done = r.take(b).unwrap();
        }
        assert!(done);
        assert_eq!(r.finish().unwrap(), content);

        // The wrong bytes of the right length.
        let mut r = Receiving::new(hash, content.len() as u64).unwrap();
        r.take(&vec![0; content.len()]).unwrap();
        assert!(r.finish().unwrap_err().contains("do not hash"));
        // More than announced; fewer than announced; nothing; too much.
        let mut r = Receiving::new(hash, 4).unwrap();
        assert!(r.take(b"12345").is_err());
        let mut r = Receiving::new(hash, 4).unwrap();
        r.take(b"12").unwrap();
        assert!(r.finish().unwrap_err().contains("2 of the 4"));
        assert!(Receiving::new(hash, 0).is_err());
        assert!(Receiving::new(hash, MAX_ATTACHMENT_BYTES + 1).is_err());
        assert!(Receiving::new(hash, MAX_ATTACHMENT_BYTES).is_ok());
    }
}
