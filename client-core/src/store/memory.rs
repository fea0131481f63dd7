//! An in-memory [`Store`], for tests, benchmarks and throwaway peers.
//!
//! It keeps the exact semantics of the on-disk engine (sequence numbers, compaction, log indices,
//! name rules, ordering), so code tested against it behaves the same on [`super::SledStore`]; the
//! shared conformance suite runs against both to keep it that way. It never touches disk, so it
//! needs no encryption and `flush` has nothing to do.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::{check_name, ChunkLog, ChunkSeq, Store, StoreError};
use crate::{BlobHash, CaseId};

/// Everything the store holds. The maps are ordered the way the sled engine orders its keys
/// (`CaseId` and `String` both compare bytewise), so scans come back in the same order.
#[derive(Default, Clone)]
struct Contents {
    /// The next chunk sequence number: one counter for the whole store, like sled's id generator.
    next_seq: ChunkSeq,
    chunks: BTreeMap<(CaseId, ChunkSeq), Vec<u8>>,
    meta: BTreeMap<(String, String), Vec<u8>>,
    logs: BTreeMap<(String, u64), Vec<u8>>,
    /// The next index of each log; kept after trimming so indices are never reused.
    log_heads: BTreeMap<String, u64>,
    blobs: BTreeMap<(CaseId, BlobHash), Vec<u8>>,
}

/// A [`Store`] held entirely in memory: one lock around ordered maps. Dropping it forgets
/// everything.
#[derive(Default)]
pub struct MemoryStore {
    contents: Mutex<Contents>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn contents(&self) -> MutexGuard<'_, Contents> {
        // No operation below can panic half-way through a change, so a poisoned lock (a panic in
        // another thread while holding it) still guards consistent maps: carry on with them.
        self.contents
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A copy of everything the store holds, as it is now (the simulation test keeps a store's durable
/// state as one, and opens a crashed peer over a copy of it).
impl Clone for MemoryStore {
    fn clone(&self) -> Self {
        MemoryStore {
            contents: Mutex::new(self.contents().clone()),
        }
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print values: they are clinical records.
        let c = self.contents();
        f.debug_struct("MemoryStore")
            .field("chunks", &c.chunks.len())
            .field("meta", &c.meta.len())
            .field("log_entries", &c.logs.len())
            .field("blobs", &c.blobs.len())
            .finish()
    }
}

impl Store for MemoryStore {
    fn append_chunk(&self, case: &CaseId, chunk: &[u8]) -> Result<ChunkSeq, StoreError> {
        let mut c = self.contents();
        let seq = c.next_seq;
        c.next_seq += 1;
        c.chunks.insert((*case, seq), chunk.to_vec());
        Ok(seq)
    }

    fn load_chunks(&self, case: &CaseId) -> Result<Option<ChunkLog>, StoreError> {
        let c = self.contents();
        let chunks: Vec<_> = c
            .chunks
            .range((*case, 0)..=(*case, ChunkSeq::MAX))
            .map(|((_, seq), chunk)| (*seq, chunk.clone()))
            .collect();
        Ok((!chunks.is_empty()).then_some(chunks))
    }

    fn compact_case(
        &self,
        case: &CaseId,
        snapshot: &[u8],
        through: ChunkSeq,
    ) -> Result<(), StoreError> {
        let mut c = self.contents();
        let Some(((_, last), _)) = c
            .chunks
            .range((*case, 0)..=(*case, ChunkSeq::MAX))
            .next_back()
        else {
            return Err(StoreError::InvalidRequest(format!(
                "cannot compact case {case}: the store holds no chunks for it"
            )));
        };
        let snapshot_seq = through.min(*last);
        let replaced: Vec<_> = c
            .chunks
            .range((*case, 0)..=(*case, through))
            .map(|(k, _)| *k)
            .collect();
        for key in replaced {
            c.chunks.remove(&key);
        }
        c.chunks.insert((*case, snapshot_seq), snapshot.to_vec());
        Ok(())
    }

    fn remove_case(&self, case: &CaseId) -> Result<(), StoreError> {
        let mut c = self.contents();
        c.chunks.retain(|(id, _), _| id != case);
        c.blobs.retain(|(id, _), _| id != case);
        Ok(())
    }

    fn list_cases(&self) -> Result<Vec<CaseId>, StoreError> {
        let c = self.contents();
        let mut cases: Vec<CaseId> = c.chunks.keys().map(|(case, _)| *case).collect();
        cases.dedup();
        Ok(cases)
    }

    fn get_meta(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_name("namespace", ns)?;
        Ok(self
            .contents()
            .meta
            .get(&(ns.to_owned(), key.to_owned()))
            .cloned())
    }

    fn put_meta(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        check_name("namespace", ns)?;
        self.contents()
            .meta
            .insert((ns.to_owned(), key.to_owned()), value.to_vec());
        Ok(())
    }

    fn delete_meta(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        check_name("namespace", ns)?;
        self.contents()
            .meta
            .remove(&(ns.to_owned(), key.to_owned()));
        Ok(())
    }

    fn scan_meta(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        check_name("namespace", ns)?;
        let c = self.contents();
        Ok(c.meta
            .range((ns.to_owned(), String::new())..)
            .take_while(|((n, _), _)| n == ns)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn append_log(&self, log: &str, entry: &[u8]) -> Result<u64, StoreError> {
        check_name("log", log)?;
        let mut c = self.contents();
        let head = c.log_heads.entry(log.to_owned()).or_insert(0);
        let index = *head;
        *head += 1;
        c.logs.insert((log.to_owned(), index), entry.to_vec());
        Ok(index)
    }

    fn read_log(&self, log: &str, from: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        check_name("log", log)?;
        let c = self.contents();
        Ok(c.logs
            .range((log.to_owned(), from)..=(log.to_owned(), u64::MAX))
            .map(|((_, index), entry)| (*index, entry.clone()))
            .collect())
    }

    fn trim_log(&self, log: &str, through: u64) -> Result<(), StoreError> {
        check_name("log", log)?;
        let mut c = self.contents();
        let trimmed: Vec<_> = c
            .logs
            .range((log.to_owned(), 0)..=(log.to_owned(), through))
            .map(|(k, _)| k.clone())
            .collect();
        for key in trimmed {
            c.logs.remove(&key);
        }
        Ok(())
    }

    fn put_blob(&self, case: &CaseId, hash: &BlobHash, content: &[u8]) -> Result<(), StoreError> {
        self.contents()
            .blobs
            .entry((*case, *hash))
            .or_insert_with(|| content.to_vec());
        Ok(())
    }

    fn get_blob(&self, case: &CaseId, hash: &BlobHash) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.contents().blobs.get(&(*case, *hash)).cloned())
    }

    fn has_blob(&self, case: &CaseId, hash: &BlobHash) -> Result<bool, StoreError> {
        Ok(self.contents().blobs.contains_key(&(*case, *hash)))
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Nothing is on disk, so nothing can be made more durable.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    super::super::conformance::conformance_tests!(((), MemoryStore::new()));
}
