//! A store that can crash: writes are lost unless a flush made them durable.
//!
//! Every write lands in a pending overlay (reads see durable state plus pending writes); `flush`
//! makes the overlay durable; [`CrashStore::crash`] throws it away, except for a prefix of it,
//! chosen by the caller, that survives, as sled recovers a prefix of its log after a crash. Each
//! store call is atomic (sled applies each of ours as one batch or transaction), so a crash
//! between any two store calls since the last flush leaves exactly one of these prefixes: crashing
//! after a simulation step with a random prefix kept covers a crash at every point inside it.
//!
//! Both layers are [`MemoryStore`]s, so the semantics (sequence numbers, compaction, log indices)
//! are the ones the conformance suite checks for every engine.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use polyphony_core::store::{ChunkLog, ChunkSeq, MemoryStore, Store, StoreError};
use polyphony_core::CaseId;

/// One write, as it will be replayed onto the durable layer.
#[derive(Debug, Clone)]
enum Op {
    Append(CaseId, Vec<u8>),
    Compact(CaseId, Vec<u8>, ChunkSeq),
    Remove(CaseId),
    Put(String, String, Vec<u8>),
    Delete(String, String),
    AppendLog(String, Vec<u8>),
    TrimLog(String, u64),
    PutBlob(CaseId, polyphony_core::BlobHash, Vec<u8>),
}

impl Op {
    fn case(&self) -> Option<CaseId> {
        match self {
            Op::Append(c, _) | Op::Compact(c, _, _) | Op::Remove(c) => Some(*c),
            _ => None,
        }
    }

    fn apply(&self, store: &MemoryStore) -> Result<(), StoreError> {
        match self {
            Op::Append(c, chunk) => store.append_chunk(c, chunk).map(|_| ()),
            Op::Compact(c, snapshot, through) => store.compact_case(c, snapshot, *through),
            Op::Remove(c) => store.remove_case(c),
            Op::Put(ns, k, v) => store.put_meta(ns, k, v),
            Op::Delete(ns, k) => store.delete_meta(ns, k),
            Op::AppendLog(log, e) => store.append_log(log, e).map(|_| ()),
            Op::TrimLog(log, through) => store.trim_log(log, *through),
            Op::PutBlob(c, h, content) => store.put_blob(c, h, content),
        }
    }
}

/// Counts of what a store went through.
#[derive(Debug, Clone, Copy, Default)]
pub struct CrashCounts {
    /// Flushes.
    pub flushes: u64,
    /// Crashes.
    pub crashes: u64,
    /// Pending writes lost in crashes.
    pub lost_writes: u64,
    /// Compactions made (`compact_case` calls that succeeded).
    pub compactions: u64,
    /// The most chunks appended to any one case.
    pub max_case_appends: u64,
}

#[derive(Default)]
struct Layers {
    durable: MemoryStore,
    live: MemoryStore,
    pending: Vec<Op>,
    /// Per case, how many times its durable chunks changed (so checks reload only what changed).
    versions: BTreeMap<CaseId, u64>,
    appends: BTreeMap<CaseId, u64>,
    counts: CrashCounts,
}

impl Layers {
    fn make_durable(&mut self, ops: Vec<Op>) {
        for op in ops {
            if let Some(c) = op.case() {
                *self.versions.entry(c).or_insert(0) += 1;
            }
            // The same writes in the same order on the same state: they succeed as they did live.
            op.apply(&self.durable)
                .expect("a write that succeeded live replays");
        }
    }
}

/// A [`Store`] that loses what was not flushed when it crashes. See the module documentation.
#[derive(Default)]
pub struct CrashStore {
    layers: Mutex<Layers>,
}

impl CrashStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn layers(&self) -> MutexGuard<'_, Layers> {
        self.layers.lock().expect("crash store lock")
    }

    /// Writes not yet durable.
    pub fn pending(&self) -> usize {
        self.layers().pending.len()
    }

    /// Crash: the first `keep` pending writes (fewer if fewer are pending) become durable, the rest
    /// are lost, and reads see the durable state from now on. Whoever used the store must be
    /// dropped and opened again over it, as after a real crash.
    pub fn crash(&self, keep: usize) {
        let mut l = self.layers();
        let mut pending = std::mem::take(&mut l.pending);
        let keep = keep.min(pending.len());
        l.counts.lost_writes += (pending.len() - keep) as u64;
        pending.truncate(keep);
        l.make_durable(pending);
        l.live = l.durable.clone();
        l.counts.crashes += 1;
    }

    /// A case's chunks as they would be read after a crash now: the durable layer only.
    pub fn durable_chunks(&self, case: &CaseId) -> Option<ChunkLog> {
        self.layers()
            .durable
            .load_chunks(case)
            .expect("memory store reads")
    }

    /// Every case with durable chunks.
    pub fn durable_cases(&self) -> Vec<CaseId> {
        self.layers()
            .durable
            .list_cases()
            .expect("memory store reads")
    }

    /// A metadata value as it would be read after a crash now: the durable layer only.
    pub fn durable_meta(&self, ns: &str, key: &str) -> Option<Vec<u8>> {
        self.layers()
            .durable
            .get_meta(ns, key)
            .expect("memory store reads")
    }

    /// How many times a case's durable chunks have changed.
    pub fn durable_version(&self, case: &CaseId) -> u64 {
        self.layers().versions.get(case).copied().unwrap_or(0)
    }

    /// What the store went through.
    pub fn counts(&self) -> CrashCounts {
        self.layers().counts
    }

    fn write<T>(
        &self,
        op: Op,
        live: impl FnOnce(&MemoryStore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut l = self.layers();
        let result = live(&l.live)?;
        match &op {
            Op::Compact(..) => l.counts.compactions += 1,
            Op::Append(case, _) => {
                let n = l.appends.entry(*case).or_insert(0);
                *n += 1;
                let n = *n;
                l.counts.max_case_appends = l.counts.max_case_appends.max(n);
            }
            _ => {}
        }
        l.pending.push(op);
        Ok(result)
    }
}

impl Store for CrashStore {
    fn append_chunk(&self, case: &CaseId, chunk: &[u8]) -> Result<ChunkSeq, StoreError> {
        self.write(Op::Append(*case, chunk.to_vec()), |s| {
            s.append_chunk(case, chunk)
        })
    }
    fn load_chunks(&self, case: &CaseId) -> Result<Option<ChunkLog>, StoreError> {
        self.layers().live.load_chunks(case)
    }
    fn compact_case(
        &self,
        case: &CaseId,
        snapshot: &[u8],
        through: ChunkSeq,
    ) -> Result<(), StoreError> {
        self.write(Op::Compact(*case, snapshot.to_vec(), through), |s| {
            s.compact_case(case, snapshot, through)
        })
    }
    fn remove_case(&self, case: &CaseId) -> Result<(), StoreError> {
        self.write(Op::Remove(*case), |s| s.remove_case(case))
    }
    fn list_cases(&self) -> Result<Vec<CaseId>, StoreError> {
        self.layers().live.list_cases()
    }
    fn get_meta(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.layers().live.get_meta(ns, key)
    }
    fn put_meta(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write(Op::Put(ns.into(), key.into(), value.to_vec()), |s| {
            s.put_meta(ns, key, value)
        })
    }
    fn delete_meta(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        self.write(Op::Delete(ns.into(), key.into()), |s| {
            s.delete_meta(ns, key)
        })
    }
    fn scan_meta(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.layers().live.scan_meta(ns)
    }
    fn append_log(&self, log: &str, entry: &[u8]) -> Result<u64, StoreError> {
        self.write(Op::AppendLog(log.into(), entry.to_vec()), |s| {
            s.append_log(log, entry)
        })
    }
    fn read_log(&self, log: &str, from: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.layers().live.read_log(log, from)
    }
    fn trim_log(&self, log: &str, through: u64) -> Result<(), StoreError> {
        self.write(Op::TrimLog(log.into(), through), |s| {
            s.trim_log(log, through)
        })
    }
    fn put_blob(
        &self,
        case: &CaseId,
        hash: &polyphony_core::BlobHash,
        content: &[u8],
    ) -> Result<(), StoreError> {
        self.write(Op::PutBlob(*case, *hash, content.to_vec()), |s| {
            s.put_blob(case, hash, content)
        })
    }
    fn get_blob(
        &self,
        case: &CaseId,
        hash: &polyphony_core::BlobHash,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.layers().live.get_blob(case, hash)
    }
    fn has_blob(&self, case: &CaseId, hash: &polyphony_core::BlobHash) -> Result<bool, StoreError> {
        self.layers().live.has_blob(case, hash)
    }
    fn flush(&self) -> Result<(), StoreError> {
        let mut l = self.layers();
        let pending = std::mem::take(&mut l.pending);
        l.make_durable(pending);
        l.counts.flushes += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_what_was_flushed_and_a_prefix_of_the_rest() {
        let s = CrashStore::new();
        let case = CaseId::random();
        s.append_chunk(&case, b"a").unwrap();
        s.flush().unwrap();
        s.append_chunk(&case, b"b").unwrap();
        s.append_chunk(&case, b"c").unwrap();
        assert_eq!(s.load_chunks(&case).unwrap().unwrap().len(), 3);
        assert_eq!(s.durable_chunks(&case).unwrap().len(), 1);
        s.crash(1);
        let after: Vec<Vec<u8>> = s
            .load_chunks(&case)
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        assert_eq!(after, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(s.counts().lost_writes, 1);
    }
}
