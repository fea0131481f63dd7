//! The server's store behind a handle that can close its engine and open it again.
//!
//! sled 0.34 keeps the first I/O error it meets (a full disk, a failing fsync) and returns it from
//! every later write and flush, even once space returns: only a new `sled::Db` over the same files
//! works again. Reopening is what a restart does, without the restart: whatever reached the files
//! is read back (sled recovers its log as after a crash), and whatever was only in the old
//! instance's memory is gone. That is safe only if nothing built on the old instance outlives it,
//! so this type does the swap and says when it happened, and the layers above act on it:
//!
//! - every operation holds a read lock on the engine for its whole length, and [`reopen`] swaps
//!   under the write lock, so no operation runs across a swap;
//! - a *generation* number counts the engines, bumped under that write lock: whoever built
//!   something on what the store said (a group-commit ticket, an open case) notes the generation
//!   first and treats it as void once the generation moved on
//!   ([`crate::storage::GroupCommit`], [`crate::storage::ServerStorage`]);
//! - [`ReopenableStore::flush_generation`] says which engine a flush made durable, so a flush of
//!   the new engine is never taken as covering writes that went into the old one.
//!
//! The store marks itself *broken* when a write or a flush fails with an I/O error; the server
//! reopens it once there is space again (`crate::listener`). Where this lives: in the server, not
//! in `polyphony-core`, because reopening is safe only together with the server's own rules above;
//! a device reopening its profile would need its own.
//!
//! [`reopen`]: ReopenableStore::reopen

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use polyphony_core::store::{ChunkLog, ChunkSeq, Store, StoreError};
use polyphony_core::CaseId;

/// How the engine is opened (again).
type Opener = Box<dyn Fn() -> Result<Arc<dyn Store>, StoreError> + Send + Sync>;

/// Free space the store's filesystem must have before a reopen is tried after a disk error. A
/// guess, not a promise (the reopened engine may fail again, and is then reopened again later):
/// it keeps a server on a still-full disk from closing every connection for nothing.
pub const MIN_FREE_BYTES_TO_REOPEN: u64 = 1 << 20;

/// A [`Store`] whose engine can be closed and opened again (see the module docs).
pub struct ReopenableStore {
    /// The engine; `None` after a reopen whose open failed (every operation then fails).
    engine: RwLock<Option<Arc<dyn Store>>>,
    /// Counts the engines; changed only under `engine`'s write lock.
    generation: AtomicU64,
    /// A write or flush failed with an I/O error: the engine may refuse everything from now on.
    broken: AtomicBool,
    open: Opener,
    /// Where the engine keeps its files, for the free-space check (`None`: nothing to check).
    dir: Option<PathBuf>,
    /// Tells this store apart from every other in the process (see `Store::flush`).
    id: u64,
}

/// Hands out [`ReopenableStore::id`]s.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl ReopenableStore {
    /// Open the engine with `open`, which a reopen calls again; `dir` is where its files live.
    pub fn open(
        dir: PathBuf,
        open: impl Fn() -> Result<Arc<dyn Store>, StoreError> + Send + Sync + 'static,
    ) -> Result<Self, StoreError> {
        Self::open_in(Some(dir), open)
    }

    /// [`ReopenableStore::open`] for an engine that may keep no files here (`dir: None`: no
    /// free-space check before a reopen).
    pub fn open_in(
        dir: Option<PathBuf>,
        open: impl Fn() -> Result<Arc<dyn Store>, StoreError> + Send + Sync + 'static,
    ) -> Result<Self, StoreError> {
        let engine = open()?;
        Ok(Self::with(engine, Box::new(open), dir))
    }

    /// A store that "reopens" by keeping `engine` as it is. Nothing is lost by such a reopen, but
    /// everything above treats it as a real one: tests use it to drive the reopen path over a
    /// store that fails on demand, and stores given to the server ready-made get it.
    pub fn keeping(engine: Arc<dyn Store>) -> Self {
        let again = engine.clone();
        Self::with(engine, Box::new(move || Ok(again.clone())), None)
    }

    fn with(engine: Arc<dyn Store>, open: Opener, dir: Option<PathBuf>) -> Self {
        ReopenableStore {
            engine: RwLock::new(Some(engine)),
            generation: AtomicU64::new(0),
            broken: AtomicBool::new(false),
            open,
            dir,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Which engine is in use: 0 for the first, one more for each reopen.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Whether a write or a flush failed with an I/O error since the engine was opened.
    pub fn broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    /// Whether the filesystem has room again (at least [`MIN_FREE_BYTES_TO_REOPEN`] free), or
    /// there is no filesystem to ask about.
    pub fn has_space(&self) -> bool {
        match &self.dir {
            None => true,
            Some(dir) => free_bytes(dir).is_none_or(|free| free >= MIN_FREE_BYTES_TO_REOPEN),
        }
    }

    /// Flush the engine; returns the generation of the engine that is now durable.
    pub fn flush_generation(&self) -> Result<u64, StoreError> {
        self.with_engine(Op::Flush, |e| {
            e.flush()?;
            // Read under the read lock `with_engine` holds: no reopen can come in between.
            Ok(self.generation())
        })
    }

    /// Close the engine and open it again. `swapped` runs with the new generation number while
    /// no operation can run (under the write lock), after the old engine is dropped and before the
    /// new one is opened: what it records about "before" and "after" is exact. The generation moves
    /// on even if the open fails (the old engine and its unflushed writes are gone either way);
    /// the store then fails every operation and stays broken until a later reopen works.
    pub fn reopen(&self, swapped: impl FnOnce(u64)) -> Result<u64, StoreError> {
        let mut engine = self.engine.write().unwrap_or_else(|p| p.into_inner());
        // Drop the old engine first: sled holds a lock on its files until it is gone.
        *engine = None;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        swapped(generation);
        let opened = (self.open)()?;
        *engine = Some(opened);
        self.broken.store(false, Ordering::SeqCst);
        Ok(generation)
    }

    fn read(&self) -> RwLockReadGuard<'_, Option<Arc<dyn Store>>> {
        // The guarded value is only replaced whole, so a panic elsewhere leaves it consistent.
        self.engine.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the engine under the read lock. A write's or flush's I/O error marks the store
    /// broken; a flush that succeeds shows the engine takes writes after all.
    fn with_engine<T>(
        &self,
        op: Op,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let engine = self.read();
        let Some(e) = engine.as_ref() else {
            return Err(StoreError::Io(std::io::Error::other(
                "the store is closed after a disk error and could not be opened again yet",
            )));
        };
        if matches!(op, Op::Write) {
            // Under the read lock: the generation of the engine this write goes to.
            self.note_write(self.generation());
        }
        let result = f(&**e);
        match (&result, op) {
            (Err(StoreError::Io(_)), Op::Write | Op::Flush)
                if !self.broken.swap(true, Ordering::SeqCst) =>
            {
                tracing::warn!(
                    "a disk error: the store refuses writes until it is reopened, once there is space"
                );
            }
            (Ok(_), Op::Flush) if self.broken.swap(false, Ordering::SeqCst) => {
                tracing::info!("the store flushed again: the disk error passed without sticking");
            }
            _ => {}
        }
        result
    }
}

/// What an operation does to the engine, for [`ReopenableStore::with_engine`].
#[derive(Clone, Copy)]
enum Op {
    Read,
    Write,
    Flush,
}

impl Store for ReopenableStore {
    fn append_chunk(&self, case: &CaseId, chunk: &[u8]) -> Result<ChunkSeq, StoreError> {
        self.with_engine(Op::Write, |e| e.append_chunk(case, chunk))
    }
    fn load_chunks(&self, case: &CaseId) -> Result<Option<ChunkLog>, StoreError> {
        self.with_engine(Op::Read, |e| e.load_chunks(case))
    }
    fn compact_case(
        &self,
        case: &CaseId,
        snapshot: &[u8],
        through: ChunkSeq,
    ) -> Result<(), StoreError> {
        self.with_engine(Op::Write, |e| e.compact_case(case, snapshot, through))
    }
    fn remove_case(&self, case: &CaseId) -> Result<(), StoreError> {
        self.with_engine(Op::Write, |e| e.remove_case(case))
    }
    fn list_cases(&self) -> Result<Vec<CaseId>, StoreError> {
        self.with_engine(Op::Read, |e| e.list_cases())
    }
    fn get_meta(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_engine(Op::Read, |e| e.get_meta(ns, key))
    }
    fn put_meta(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.with_engine(Op::Write, |e| e.put_meta(ns, key, value))
    }
    fn delete_meta(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        self.with_engine(Op::Write, |e| e.delete_meta(ns, key))
    }
    fn scan_meta(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.with_engine(Op::Read, |e| e.scan_meta(ns))
    }
    fn append_log(&self, log: &str, entry: &[u8]) -> Result<u64, StoreError> {
        self.with_engine(Op::Write, |e| e.append_log(log, entry))
    }
    fn read_log(&self, log: &str, from: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.with_engine(Op::Read, |e| e.read_log(log, from))
    }
    fn trim_log(&self, log: &str, through: u64) -> Result<(), StoreError> {
        self.with_engine(Op::Write, |e| e.trim_log(log, through))
    }
    fn put_blob(
        &self,
        case: &CaseId,
        hash: &polyphony_core::BlobHash,
        content: &[u8],
    ) -> Result<(), StoreError> {
        self.with_engine(Op::Write, |e| e.put_blob(case, hash, content))
    }
    fn get_blob(
        &self,
        case: &CaseId,
        hash: &polyphony_core::BlobHash,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_engine(Op::Read, |e| e.get_blob(case, hash))
    }
    fn has_blob(&self, case: &CaseId, hash: &polyphony_core::BlobHash) -> Result<bool, StoreError> {
        self.with_engine(Op::Read, |e| e.has_blob(case, hash))
    }
    /// Also refuses, without flushing, if this thread wrote to an engine a reopen has dropped
    /// since its last flush: what it wrote is gone, and a flush of the new engine must not say
    /// otherwise. Callers that write and flush on one thread (the admin commands) rely on this;
    /// writes from many threads are vouched for by group-commit tickets instead.
    fn flush(&self) -> Result<(), StoreError> {
        if let Some(written_in) = self.take_first_unflushed_write() {
            if written_in != self.generation() {
                return Err(StoreError::Io(std::io::Error::other(
                    "the server reopened its store after a disk error before these changes reached the disk; they were not saved: try again",
                )));
            }
        }
        self.with_engine(Op::Flush, |e| e.flush())
    }
    fn deposed(&self) -> bool {
        self.with_engine(Op::Read, |e| Ok(e.deposed()))
            .unwrap_or(false)
    }
}

thread_local! {
    /// Per store (by id), the generation this thread first wrote to since it last flushed.
    static FIRST_UNFLUSHED_WRITE: std::cell::RefCell<Vec<(u64, u64)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl ReopenableStore {
    /// Note that this thread writes to generation `generation`, unless it already wrote since
    /// its last flush.
    fn note_write(&self, generation: u64) {
        let key = self.id;
        FIRST_UNFLUSHED_WRITE.with(|w| {
            let mut w = w.borrow_mut();
            if !w.iter().any(|(k, _)| *k == key) {
                w.push((key, generation));
            }
        });
    }

    fn take_first_unflushed_write(&self) -> Option<u64> {
        let key = self.id;
        FIRST_UNFLUSHED_WRITE.with(|w| {
            let mut w = w.borrow_mut();
            let at = w.iter().position(|(k, _)| *k == key)?;
            Some(w.swap_remove(at).1)
        })
    }
}

/// Bytes an unprivileged process may still write on the filesystem holding `dir`, if it can be
/// asked.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `path` is a valid NUL-terminated string and `stat` points to writable memory
        // of the right type; statvfs only writes it, and we read it only when it succeeded.
        let ok = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } == 0;
        if !ok {
            return None;
        }
        // SAFETY: statvfs returned 0, so it filled `stat`.
        let stat = unsafe { stat.assume_init() };
        #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
        Some(stat.f_bavail as u64 * stat.f_frsize as u64)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polyphony_core::store::MemoryStore;

    /// A thread that wrote, then flushes after a reopen dropped the engine it wrote to, is told
    /// its writes were not saved (as an admin command that straddles a reopen must be).
    #[test]
    fn a_flush_after_a_reopen_refuses_the_writes_this_thread_made_before_it() {
        let store = ReopenableStore::keeping(Arc::new(MemoryStore::default()));
        store.put_meta("admin", "before", b"1").unwrap();
        store.flush().unwrap();
        store.put_meta("admin", "straddling", b"2").unwrap();
        assert_eq!(store.reopen(|_| {}).unwrap(), 1);
        let refused = store.flush().unwrap_err();
        assert!(refused.to_string().contains("not saved"), "{refused}");
        // Writes made after the reopen are flushed as usual.
        store.put_meta("admin", "after", b"3").unwrap();
        store.flush().unwrap();
        store.flush().unwrap();
    }
}
