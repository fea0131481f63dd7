//! A full disk on demand: a [`Store`] that passes everything to the real one until told to fail.
//!
//! The server promises that a full disk costs availability of writes, never data: it refuses new
//! changes with a clear error, acknowledges nothing it did not store, keeps serving what it holds,
//! and carries on once space returns. A real full filesystem is not always available to a test
//! (mounting one needs privileges), so the fault tests wrap the server's store in this one and
//! flip a [`DiskSwitch`]. Reads always succeed: a full disk still reads.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use polyphony_core::store::{ChunkLog, ChunkSeq, Store, StoreError};
use polyphony_core::CaseId;

/// The fault a [`FaultyStore`] injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFault {
    /// Everything works.
    None,
    /// Every write fails at once, as when the disk is full before the write begins.
    WritesFail,
    /// Writes land in memory but every flush fails, as when the disk fills while buffered data is
    /// being written out: nothing more becomes durable.
    FlushFails,
}

/// Turns a [`FaultyStore`]'s fault on and off, and counts the operations it refused.
#[derive(Clone, Default)]
pub struct DiskSwitch {
    fault: Arc<AtomicU8>,
    refused: Arc<AtomicU64>,
}

impl DiskSwitch {
    /// Inject `fault` from now on.
    pub fn set(&self, fault: DiskFault) {
        let n = match fault {
            DiskFault::None => 0,
            DiskFault::WritesFail => 1,
            DiskFault::FlushFails => 2,
        };
        self.fault.store(n, Ordering::SeqCst);
    }

    /// The fault being injected.
    pub fn get(&self) -> DiskFault {
        match self.fault.load(Ordering::SeqCst) {
            1 => DiskFault::WritesFail,
            2 => DiskFault::FlushFails,
            _ => DiskFault::None,
        }
    }

    /// How many writes and flushes were refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    fn fail_if(&self, fault: DiskFault) -> Result<(), StoreError> {
        if self.get() == fault {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "No space left on device (injected by the fault tests)",
            )));
        }
        Ok(())
    }

    fn write(&self) -> Result<(), StoreError> {
        self.fail_if(DiskFault::WritesFail)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.fail_if(DiskFault::WritesFail)?;
        self.fail_if(DiskFault::FlushFails)
    }
}

/// A store that fails writes while its [`DiskSwitch`] says so.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    switch: DiskSwitch,
}

impl FaultyStore {
    /// Wrap `inner`, controlled by `switch`.
    pub fn wrap(inner: Arc<dyn Store>, switch: DiskSwitch) -> Arc<dyn Store> {
        Arc::new(FaultyStore { inner, switch })
    }
}

impl Store for FaultyStore {
    fn append_chunk(&self, case: &CaseId, chunk: &[u8]) -> Result<ChunkSeq, StoreError> {
        self.switch.write()?;
        self.inner.append_chunk(case, chunk)
    }
    fn load_chunks(&self, case: &CaseId) -> Result<Option<ChunkLog>, StoreError> {
        self.inner.load_chunks(case)
    }
    fn compact_case(
        &self,
        case: &CaseId,
        snapshot: &[u8],
        through: ChunkSeq,
    ) -> Result<(), StoreError> {
        self.switch.write()?;
        self.inner.compact_case(case, snapshot, through)
    }
    fn remove_case(&self, case: &CaseId) -> Result<(), StoreError> {
        self.switch.write()?;
        self.inner.remove_case(case)
    }
    fn list_cases(&self) -> Result<Vec<CaseId>, StoreError> {
        self.inner.list_cases()
    }
    fn get_meta(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_meta(ns, key)
    }
    fn put_meta(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.switch.write()?;
        self.inner.put_meta(ns, key, value)
    }
    fn delete_meta(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        self.switch.write()?;
        self.inner.delete_meta(ns, key)
    }
    fn scan_meta(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.scan_meta(ns)
    }
    fn append_log(&self, log: &str, entry: &[u8]) -> Result<u64, StoreError> {
        self.switch.write()?;
        self.inner.append_log(log, entry)
    }
    fn read_log(&self, log: &str, from: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.read_log(log, from)
    }
    fn trim_log(&self, log: &str, through: u64) -> Result<(), StoreError> {
        self.switch.write()?;
        self.inner.trim_log(log, through)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.switch.flush()?;
        self.inner.flush()
    }
}
