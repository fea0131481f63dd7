//! The local store: where a device (or the borough server) keeps its cases between runs.
//!
//! Callers see only the [`Store`] trait, so the engine can be replaced without touching them (sled 0.34
//! has had no release since 2021). Three engines implement it: [`SledStore`] on disk (the
//! default everywhere), `PgStore` in a PostgreSQL schema (feature `postgres`, for servers) and
//! [`MemoryStore`] for tests and benchmarks.
//!
//! A case is stored as a log of automerge chunks: each save appends only the new changes (an
//! incremental save), and [`Store::compact_case`] replaces a prefix of the log with one snapshot. Every
//! value is sealed with an AEAD (XChaCha20-Poly1305) under the store's random data key, kept in its
//! header wrapped under a key derived from the practitioner's passphrase (argon2id) or read from a
//! key file, so the files on disk hold no record text (`crypto.rs` explains the two keys). Keys
//! (case ids, namespace names, sequence numbers) are not secret and are stored in the clear: never
//! put clinical text in a key.
//!
//! Sequence numbers are drawn from one counter per store, so they grow across every case and are
//! never handed out twice, not even after [`Store::remove_case`]: a sync state or acknowledgement
//! that remembers "through chunk 41" can never be confused by a later chunk. They are not dense: a
//! case's log may read 3, 17, 18.

mod crypto;
mod memory;
#[cfg(feature = "postgres")]
pub mod pg_store;
mod sled_store;

#[cfg(test)]
mod conformance;

pub use crypto::{KdfParams, KeySource, SealKey, KEY_LEN};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use pg_store::{PgOptions, PgStore};
pub use sled_store::{SledOptions, SledStore};

use crate::{BlobHash, CaseId};

/// Make a directory that holds record data private: the directory 0700, every file in it 0600.
/// Profiles and the server's data directory call this when they open.
pub fn make_private(dir: &std::path::Path) -> Result<(), StoreError> {
    sled_store::restrict_to_owner(dir)
}

/// Make every file and directory this process creates from now on private to its owner (umask
/// 077). Each binary calls this first: sled and the key files are then born 0600, with no moment
/// at which another local user could open them.
pub fn private_umask() {
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail and touches no
    // memory.
    unsafe {
        libc::umask(0o077);
    }
}

/// Position of a chunk in a case's log. Sequence numbers only grow.
pub type ChunkSeq = u64;

/// A case's log as [`Store::load_chunks`] returns it: `(sequence number, chunk)` in log order.
pub type ChunkLog = Vec<(ChunkSeq, Vec<u8>)>;

/// What can go wrong in the store, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The passphrase (or key file) does not open this store.
    #[error("the passphrase does not open this store (check it and try again)")]
    WrongPassphrase,
    /// The store is already open in another process (sled holds a lock on its files).
    #[error("the store at {path} is in use by another Polyphony process; close it and try again")]
    Locked {
        /// Where the store lives.
        path: String,
    },
    /// A value failed authentication: the file was altered or damaged.
    #[error(
        "stored data for {what} failed its integrity check: the store may be damaged ({detail})"
    )]
    Corrupt {
        /// What was being read.
        what: String,
        /// Detail for the log.
        detail: String,
    },
    /// The disk is full or refused a write; nothing was half-written.
    #[error(
        "could not write to disk ({0}); free some space and try again: nothing saved was lost"
    )]
    Io(#[from] std::io::Error),
    /// Any other failure inside the storage engine.
    #[error("storage engine error: {0}")]
    Engine(String),
    /// The key file is missing or malformed.
    #[error("key file problem: {0}")]
    KeyFile(String),
    /// The caller asked for something the store cannot do (a name with a NUL byte in it, compacting
    /// a case the store does not hold). This is a bug in the calling code, not damage to the data.
    #[error("the store cannot do this: {0} (this is a bug in Polyphony; please report it)")]
    InvalidRequest(String),
}

/// Refuse a meta namespace or log name that would be ambiguous in an engine's key layout, where the
/// name is followed by a NUL separator. Both engines call this, so they refuse the same names.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), StoreError> {
    if name.contains('\0') {
        return Err(StoreError::InvalidRequest(format!(
            "{what} name {name:?} contains a NUL character"
        )));
    }
    Ok(())
}

/// The storage every Polyphony peer uses. Implementations must be safe to share between threads.
///
/// Writes become durable only when [`Store::flush`] returns: a caller that tells a user (or a peer)
/// "saved" must flush first. Implementations must make `flush` power-loss durable (fsync), not merely
/// handed to the OS.
pub trait Store: Send + Sync + 'static {
    /// Append one chunk of automerge changes to a case's log, creating the case if it is new.
    /// Returns the chunk's sequence number, greater than every sequence number the store has
    /// returned before. Appends to one case are serialised: a reader that has seen chunk `n` of a
    /// case will never later find a newly appended chunk of it numbered below `n` (only a
    /// compaction snapshot, whose content it has already seen).
    fn append_chunk(&self, case: &CaseId, chunk: &[u8]) -> Result<ChunkSeq, StoreError>;

    /// Every chunk of a case in log order, or `None` if the store has never seen the case.
    fn load_chunks(&self, case: &CaseId) -> Result<Option<ChunkLog>, StoreError>;

    /// Atomically replace every chunk with sequence number `<= through` by `snapshot` (a full save that
    /// includes all of them). Chunks appended after `through` are kept.
    ///
    /// The snapshot takes the sequence number `through` (or the case's last sequence number, if
    /// `through` is beyond it), so it sorts before the kept chunks. A stale compaction (`through`
    /// below chunks an earlier compaction already replaced) is harmless: the older snapshot is
    /// simply kept alongside. Compacting a case the store does not hold is
    /// [`StoreError::InvalidRequest`]: it must not bring back a removed case.
    fn compact_case(
        &self,
        case: &CaseId,
        snapshot: &[u8],
        through: ChunkSeq,
    ) -> Result<(), StoreError>;

    /// Remove a case's local copy, its attachments' bytes with it (after a revocation wipe, or a
    /// case that moved away). Callers must
    /// first check that every change is acknowledged by the borough server: this is never a way to
    /// delete clinical content. Removing a case the store does not hold does nothing. A chunk
    /// appended concurrently with the removal may survive it: stop syncing the case first.
    fn remove_case(&self, case: &CaseId) -> Result<(), StoreError>;

    /// Every case with at least one chunk.
    fn list_cases(&self) -> Result<Vec<CaseId>, StoreError>;

    /// A small sealed value in a namespace (sync state, acknowledgements, identity, registries).
    /// Namespace names must not contain NUL ([`StoreError::InvalidRequest`]).
    fn get_meta(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Set a small sealed value.
    fn put_meta(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Remove a small value (not for clinical content).
    fn delete_meta(&self, ns: &str, key: &str) -> Result<(), StoreError>;

    /// Every key and value in a namespace, in key order.
    fn scan_meta(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Append an entry to a named append-only log (audit log, offline-read outbox). Returns its index.
    /// Indices count up from 0 in each log, one at a time, and are never reused, even after
    /// [`Store::trim_log`]. Log names must not contain NUL ([`StoreError::InvalidRequest`]).
    fn append_log(&self, log: &str, entry: &[u8]) -> Result<u64, StoreError>;

    /// Entries of a log from index `from` on, in order.
    fn read_log(&self, log: &str, from: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;

    /// Drop entries `<= through` from a log. Only for outboxes whose entries were acknowledged by the
    /// server (the offline-read outbox); the audit log is never trimmed.
    fn trim_log(&self, log: &str, through: u64) -> Result<(), StoreError>;

    /// Keep an attachment's bytes beside a case, under their address (the SHA-256 of `content`,
    /// which the caller has checked: [`BlobHash::matches`]). Sealed like every other value; durable
    /// after [`Store::flush`]. Writing bytes a case holds already changes nothing. Removed only with
    /// the case ([`Store::remove_case`]): attachments are never deleted on their own.
    fn put_blob(&self, case: &CaseId, hash: &BlobHash, content: &[u8]) -> Result<(), StoreError>;

    /// An attachment's bytes, if the store holds them for this case.
    fn get_blob(&self, case: &CaseId, hash: &BlobHash) -> Result<Option<Vec<u8>>, StoreError>;

    /// Whether the store holds an attachment's bytes for this case (without reading them).
    fn has_blob(&self, case: &CaseId, hash: &BlobHash) -> Result<bool, StoreError>;

    /// Make every write so far durable on disk (power-loss safe). One call covers every write that
    /// returned before it, so callers can batch (group commit).
    fn flush(&self) -> Result<(), StoreError>;

    /// Whether this store can no longer write because another server node took over the
    /// database it shares (PostgreSQL); the node must stop serving. Never, for a store of its own.
    fn deposed(&self) -> bool {
        false
    }
}
