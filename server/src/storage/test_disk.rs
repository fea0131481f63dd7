//! A store for tests of group commit: its flushes can be made to fail, and its writes and flushes
//! are counted.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use polyphony_core::store::{ChunkSeq, MemoryStore, Store, StoreError};
use polyphony_core::CaseId;

use super::ServerStorage;
use crate::reopen::ReopenableStore;

/// A store whose flushes fail while `failing` is on, as a full disk makes sled's fail. Its
/// writes and flushes are counted, and each flush takes `FLUSH_TAKES`, as a disk's does; a test
/// holding `gate` keeps every flush under way until it lets go.
#[derive(Default)]
pub(crate) struct Disk {
    inner: MemoryStore,
    pub(crate) failing: AtomicBool,
    /// Each flush takes this lock before it finishes.
    pub(crate) gate: Mutex<()>,
    /// Writes finished.
    pub(crate) writes: AtomicU64,
    /// Flushes begun.
    pub(crate) flushes_begun: AtomicU64,
    /// Flushes finished.
    pub(crate) flushes: AtomicU64,
    /// How many writes had finished when the last successful flush began: every one of them
    /// is durable.
    pub(crate) flushed_through: AtomicU64,
}

/// How long a [`Disk`] flush takes.
const FLUSH_TAKES: Duration = Duration::from_millis(20);

impl Disk {
    /// Storage over a reopenable store of this kind, and the store.
    pub(crate) fn storage() -> (ServerStorage, Arc<Disk>) {
        let disk = Arc::new(Disk::default());
        let engine = Arc::new(ReopenableStore::keeping(disk.clone()));
        (ServerStorage::over(engine, 16), disk)
    }

    /// A write of the group-commit kind to `storage` (over this disk): note the generation,
    /// write, take the ticket. Returns the ticket, and how many writes had finished once this one
    /// had: a flush that covers this write reports at least that many flushed.
    pub(crate) fn write(&self, storage: &ServerStorage, key: &str) -> (u64, u64) {
        let generation = storage.group.generation();
        storage
            .store
            .put_meta("test", key, b"value")
            .expect("the test disk takes writes");
        let written = self.writes.load(SeqCst);
        (storage.group.wrote_in(generation), written)
    }

    fn wrote<T>(&self, done: Result<T, StoreError>) -> Result<T, StoreError> {
        self.writes.fetch_add(1, SeqCst);
        done
    }
}

impl Store for Disk {
    fn append_chunk(&self, case: &CaseId, chunk: &[u8]) -> Result<ChunkSeq, StoreError> {
        self.wrote(self.inner.append_chunk(case, chunk))
    }
    fn load_chunks(
        &self,
        case: &CaseId,
    ) -> Result<Option<polyphony_core::store::ChunkLog>, StoreError> {
        self.inner.load_chunks(case)
    }
    fn compact_case(&self, case: &CaseId, s: &[u8], t: ChunkSeq) -> Result<(), StoreError> {
        self.inner.compact_case(case, s, t)
    }
    fn remove_case(&self, case: &CaseId) -> Result<(), StoreError> {
        self.inner.remove_case(case)
    }
    fn list_cases(&self) -> Result<Vec<CaseId>, StoreError> {
        self.inner.list_cases()
    }
    fn get_meta(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_meta(ns, key)
    }
    fn put_meta(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.wrote(self.inner.put_meta(ns, key, value))
    }
    fn delete_meta(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        self.inner.delete_meta(ns, key)
    }
    fn scan_meta(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.scan_meta(ns)
    }
    fn append_log(&self, log: &str, entry: &[u8]) -> Result<u64, StoreError> {
        self.inner.append_log(log, entry)
    }
    fn read_log(&self, log: &str, from: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.read_log(log, from)
    }
    fn trim_log(&self, log: &str, through: u64) -> Result<(), StoreError> {
        self.inner.trim_log(log, through)
    }
    fn put_blob(
        &self,
        case: &CaseId,
        hash: &polyphony_core::BlobHash,
        content: &[u8],
    ) -> Result<(), StoreError> {
        self.inner.put_blob(case, hash, content)
    }
    fn get_blob(
        &self,
        case: &CaseId,
        hash: &polyphony_core::BlobHash,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_blob(case, hash)
    }
    fn has_blob(&self, case: &CaseId, hash: &polyphony_core::BlobHash) -> Result<bool, StoreError> {
        self.inner.has_blob(case, hash)
    }
    fn flush(&self) -> Result<(), StoreError> {
        if self.failing.load(SeqCst) {
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "No space left on device (injected)",
            )));
        }
        let began = self.writes.load(SeqCst);
        self.flushes_begun.fetch_add(1, SeqCst);
        std::thread::sleep(FLUSH_TAKES);
        drop(self.gate.lock().unwrap_or_else(|p| p.into_inner()));
        self.inner.flush()?;
        self.flushed_through.fetch_max(began, SeqCst);
        self.flushes.fetch_add(1, SeqCst);
        Ok(())
    }
}
