//! The sync protocol, as a sans-IO state machine.
//!
//! Nothing here touches a socket, a clock or a disk: [`ClientSession`] takes events (a frame
//! arrived, the user changed a case) and returns [`Action`]s (send this frame, persist these changes,
//! record this acknowledgement). The QUIC shell in [`crate::net`] only moves bytes, so the protocol
//! is tested deterministically and fuzzed without a network.
//!
//! Per case, the client and the server exchange automerge sync messages until neither has anything
//! to say. The server answers every client message with exactly one `Saved` (or `CaseRefused`),
//! sent only after everything it holds for the case is on disk; the client records those heads as
//! acknowledged, which is what makes "unsynced changes" exact rather than hopeful.

mod frame;
mod peer;
mod reply;
mod session;

#[cfg(test)]
mod tests;

pub use frame::*;
pub use peer::{
    prepare, ApplyError, CasePolicy, PeerSync, PolicyRefusal, Prepared, Waiting, MAX_WAITING_BYTES,
};
pub use reply::{answer, Reply};
pub use session::{Action, ClientSession, DocSet, MAX_MESSAGES_PER_CASE};

/// Encode heads for storage.
pub fn encode_heads(heads: &[automerge::ChangeHash]) -> Vec<u8> {
    heads.iter().flat_map(|h| h.0).collect()
}

/// Decode heads stored by [`encode_heads`]; malformed input gives no heads (nothing acknowledged),
/// which can only under-report what is synced, never over-report it.
pub fn decode_heads(bytes: &[u8]) -> Vec<automerge::ChangeHash> {
    if !bytes.len().is_multiple_of(32) {
        return Vec::new();
    }
    bytes
        .chunks_exact(32)
        .filter_map(|c| automerge::ChangeHash::try_from(c).ok())
        .collect()
}
