//! Cases on the server's disk: the store, group commit, and the cache of open cases.
//!
//! **Acknowledged means durable.** A session appends a case's new changes, takes a ticket, and its
//! reply waits for [`GroupCommit::durable`] before it tells the device `Saved`. One flush (sled's
//! flush, which stops at `sync_file_range`, then an fsync of the files) covers every write that
//! finished before it began, so sixty-four devices syncing at once share a handful of fsyncs
//! instead of queueing for sixty-four.
//!
//! **Memory follows use, not size.** Open cases are cached up to a limit; cases no session holds are
//! evicted least-recently-used first. A case held by a session is never evicted, so there is never a
//! second in-memory copy of a case.
//!
//! **A reopen voids what was built on the old engine.** After sled's sticky I/O error (a full
//! disk) the store is reopened ([`ServerStorage::recover`], [`crate::reopen`]): tickets not yet
//! durable are lost for good, open cases are dropped, and a case still held from before is refused.
//!
//! **No runtime here.** Everything in this module is synchronous and blocks on the disk where the
//! disk is slow. Awaiting a flush from async code without holding a thread, and passing
//! announcements on to the sessions, are the I/O driver's ([`crate::driver`]): it adds hooks
//! ([`ServerStorage::on_case_changed`], [`ServerStorage::on_reopened`]) and runs
//! [`GroupCommit::durable`] on the async runtime's blocking pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use automerge::{AutoCommit, ChangeHash};
use polyphony_core::model::schema;
use polyphony_core::store::{ChunkSeq, Store, StoreError};
use polyphony_core::sync::{PeerSync, Prepared};
use polyphony_core::{CaseId, TeamId};

use crate::hooks::Hooks;
use crate::reopen::ReopenableStore;

/// A chunk count after which a case's log is compacted into one snapshot.
const COMPACT_AFTER: u64 = 32;

/// Makes writes durable in batches, and never vouches for a write that a flush did not cover.
///
/// A ticket names one write (or, from [`Self::current_in`], every write so far). The caller
/// notes the store's generation *before* it writes and asks for its ticket *after*: a ticket is
/// handed out only if no reopen came in between, so each ticket belongs to exactly one engine.
/// When the store is reopened ([`ReopenableStore::reopen`]) every ticket issued and not yet
/// covered by a flush is *lost*: its write went into the engine that was dropped, so
/// [`Self::durable`] fails for it for ever, even after later flushes of the new engine succeed.
/// The `Saved` waiting for it becomes a refusal, and the device keeps the change and sends it again.
///
/// [`Self::durable`] blocks until a flush covers the ticket. Async code awaits it through the
/// driver ([`crate::driver::GroupCommitDriver`]), which queues its waiters without holding a thread.
pub struct GroupCommit {
    store: Arc<ReopenableStore>,
    tickets: Mutex<Tickets>,
    /// Held for each flush: one flush at a time, and waiters queue here.
    flusher: Mutex<()>,
}

/// What [`GroupCommit`] has handed out and made durable.
#[derive(Debug, Default)]
struct Tickets {
    /// The last ticket handed out.
    written: u64,
    /// Every ticket up to here is durable, except those in `lost`.
    durable: u64,
    /// The store generation tickets are handed out for.
    generation: u64,
    /// Tickets lost to reopens, as ranges `(after, through]`: issued, not yet durable, when the
    /// engine they were written to was dropped. Grows by one range per reopen.
    lost: Vec<(u64, u64)>,
}

/// The ticket for a write that may have gone into a dropped engine: never durable.
pub const LOST_TICKET: u64 = u64::MAX;

impl GroupCommit {
    /// Group commit over a store.
    pub fn new(store: Arc<ReopenableStore>) -> Self {
        GroupCommit {
            tickets: Mutex::new(Tickets {
                generation: store.generation(),
                // Ticket 1 stands for what the store held when it was opened (see `swapped`).
                written: 1,
                ..Tickets::default()
            }),
            store,
            flusher: Mutex::new(()),
        }
    }

    fn tickets(&self) -> std::sync::MutexGuard<'_, Tickets> {
        // Every update of the counters is a single step, consistent even if a holder panicked.
        self.tickets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store generation to note before a write whose ticket will be asked for.
    pub fn generation(&self) -> u64 {
        self.tickets().generation
    }

    /// Note that a write has completed, begun when the store was at `generation`; the returned
    /// ticket is durable once [`Self::durable`] returns for it. If the store was reopened since,
    /// the write may have gone into the dropped engine: the ticket is [`LOST_TICKET`].
    pub fn wrote_in(&self, generation: u64) -> u64 {
        let mut t = self.tickets();
        if t.generation != generation {
            return LOST_TICKET;
        }
        t.written += 1;
        t.written
    }

    /// A ticket covering every write completed so far, for data read when the store was at
    /// `generation` ([`LOST_TICKET`] if it was reopened since).
    pub fn current_in(&self, generation: u64) -> u64 {
        let t = self.tickets();
        if t.generation != generation {
            return LOST_TICKET;
        }
        t.written
    }

    /// The store's engine was swapped for generation `generation`: every ticket not yet durable
    /// is lost. Called by [`ReopenableStore::reopen`] while no store operation can run.
    fn swapped(&self, generation: u64) {
        let mut t = self.tickets();
        if t.written > t.durable {
            let lost = (t.durable, t.written);
            tracing::warn!(
                tickets = lost.1 - lost.0,
                "writes not yet on disk when the store was reopened: their acknowledgements are refused"
            );
            t.lost.push(lost);
        }
        t.generation = generation;
        // One ticket for what the new engine reads back from its files: written by the old
        // engine, perhaps never fsynced. A `Saved` for a case as read from disk waits for it,
        // that is for a flush of the new engine (and so does one after a restart: ticket 1).
        t.written += 1;
    }

    /// `Some` once the ticket's fate is known: durable, or lost to a reopen. Never blocks.
    pub fn settled(&self, ticket: u64) -> Option<Result<(), StoreError>> {
        let t = self.tickets();
        let lost = ticket == LOST_TICKET
            || t.lost
                .iter()
                .any(|&(after, through)| ticket > after && ticket <= through);
        if lost {
            return Some(Err(StoreError::Io(std::io::Error::other(
                "a disk error came before this change reached the disk, and the server's store was reopened since",
            ))));
        }
        (ticket <= t.durable).then_some(Ok(()))
    }

    /// Block until the write with this ticket (and every one before it) is on disk, flushing the
    /// store if no flush has covered it yet. Fails if the flush fails, and for good if the ticket
    /// was lost to a reopen. Blocks on the disk: async code awaits
    /// [`crate::driver::GroupCommitDriver::durable`] instead.
    pub fn durable(&self, ticket: u64) -> Result<(), StoreError> {
        loop {
            if let Some(settled) = self.settled(ticket) {
                return settled;
            }
            // One flusher at a time; waiters queue here in order and usually find their ticket
            // covered by the flush that ran while they waited. A flusher that panicked left the
            // counters consistent (each update is one step): the next one goes on.
            let _turn = self.flusher.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(settled) = self.settled(ticket) {
                return settled;
            }
            self.flush()?;
        }
    }

    /// Flush the store once, and count as durable every ticket handed out before the flush began.
    /// Called only with the `flusher` lock held.
    fn flush(&self) -> Result<(), StoreError> {
        let (generation, target) = {
            let t = self.tickets();
            (t.generation, t.written)
        };
        let flushed = self.store.flush_generation()?;
        // A flush of another engine than the one the tickets were written to proves nothing
        // about them: credit it only if no reopen came between reading `target` and now.
        let mut t = self.tickets();
        if flushed == generation && t.generation == generation {
            t.durable = t.durable.max(target);
        }
        Ok(())
    }
}

/// A case open in memory.
pub struct ServerCase {
    /// The document.
    pub doc: AutoCommit,
    /// Chunks appended since the last snapshot.
    pub chunks_since_snapshot: u64,
    /// Sequence number of the last chunk.
    pub last_seq: ChunkSeq,
    /// The team the document names, once read (see [`ServerCase::team`]).
    team: Option<TeamId>,
    /// The store generation the document was read in (or first written in, for a new case).
    /// A case of an earlier generation may hold changes the reopened store lacks: it must not
    /// be written to or vouched for ([`ServerStorage::apply`] refuses it).
    generation: Option<u64>,
}

impl ServerCase {
    /// A case opened from `doc`.
    pub fn new(doc: AutoCommit, chunks_since_snapshot: u64, last_seq: ChunkSeq) -> Self {
        ServerCase {
            doc,
            chunks_since_snapshot,
            last_seq,
            team: None,
            generation: None,
        }
    }

    /// The team the document names. Read once and remembered: no device may change it (the
    /// server refuses such changes), and an administrator's move changes the registry, not the
    /// document. Reading it from the document on every message cost about 5% of a reconnect.
    pub fn team(&mut self) -> Option<TeamId> {
        if self.team.is_none() {
            self.team = schema::read_team_id(&self.doc);
        }
        self.team
    }
}

/// A case shared between the sessions that sync it.
pub type SharedCase = Arc<Mutex<ServerCase>>;

/// A change to a case, announced so other connected devices get it live.
#[derive(Debug, Clone, Copy)]
pub struct CaseChanged {
    /// Which case.
    pub case: CaseId,
    /// The connection that made the change (it does not need telling).
    pub origin: u64,
}

/// The server's cases: store, group commit, cache, change announcements.
pub struct ServerStorage {
    /// The store (encrypted at rest with the server's key file).
    pub store: Arc<dyn Store>,
    /// The same store, as the handle that reopens it after a disk error.
    engine: Arc<ReopenableStore>,
    /// Durability.
    pub group: Arc<GroupCommit>,
    cache: Mutex<Cache>,
    /// Told of each change announced (see [`Self::announce`]).
    changes: Hooks<CaseChanged>,
    /// Told of each case the trust hub acknowledged (see [`Self::announce_hub_saved`]).
    hub_saved: Hooks<CaseId>,
    /// Told the store generation after each reopen (see [`Self::recover`]).
    reopened: Hooks<u64>,
    /// One recovery at a time; when the last one was tried.
    recovering: Mutex<Option<Instant>>,
}

/// The shortest time between two reopens: a disk that fails again at once (an I/O error rather
/// than a full disk) must not have every arriving connection close every other one.
const REOPEN_AT_MOST_EVERY: Duration = Duration::from_secs(2);

struct Cache {
    cap: usize,
    /// Each open case, with when it was last used (for least-recently-used eviction and for
    /// closing idle cases) and the store generation it was read in.
    cases: HashMap<CaseId, (SharedCase, Instant, Option<u64>)>,
}

/// Why a case could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored case could not be loaded.
    #[error("stored case {case} could not be loaded: {detail}")]
    Corrupt {
        /// Which case.
        case: CaseId,
        /// Why.
        detail: String,
    },
    /// Changes from a peer were refused by the check they must pass; nothing was stored.
    #[error("changes to case {case} refused: {detail}")]
    Refused {
        /// Which case.
        case: CaseId,
        /// Why.
        detail: String,
    },
}

impl ServerStorage {
    /// Storage over a store, caching at most `cache_cases` open cases. A reopen keeps the store
    /// as it is (see [`ReopenableStore::keeping`]); the server itself uses [`Self::over`].
    pub fn new(store: Arc<dyn Store>, cache_cases: usize) -> Self {
        Self::over(Arc::new(ReopenableStore::keeping(store)), cache_cases)
    }

    /// Storage over a store that can be reopened after a disk error.
    pub fn over(engine: Arc<ReopenableStore>, cache_cases: usize) -> Self {
        ServerStorage {
            group: Arc::new(GroupCommit::new(engine.clone())),
            store: engine.clone(),
            engine,
            cache: Mutex::new(Cache {
                cap: cache_cases.max(16),
                cases: HashMap::new(),
            }),
            changes: Hooks::default(),
            hub_saved: Hooks::default(),
            reopened: Hooks::default(),
            recovering: Mutex::new(None),
        }
    }

    /// Whether a disk error left the store refusing writes until it is reopened.
    pub fn broken(&self) -> bool {
        self.engine.broken()
    }

    /// Call `hook` with the store's generation after every reopen from now on: a sync connection
    /// opened before one holds sync states for documents the store may have lost, and must end.
    /// The hook runs on the thread that reopened the store, and must not block.
    pub fn on_reopened(&self, hook: impl Fn(&u64) + Send + Sync + 'static) {
        self.reopened.add(hook);
    }

    /// After a disk error, once the filesystem has room again, reopen the store: what reached
    /// the disk is read back, the rest of the old engine's writes are gone. Everything built on
    /// the old engine is dropped with it: the group-commit tickets not yet durable are lost (their
    /// `Saved` becomes a refusal), every open case is closed (the next sync reads it from disk),
    /// and the new generation is announced so sync connections end ([`Self::on_reopened`]). The
    /// audit log's chain head is the caller's to refresh
    /// ([`AuditLog::reopened`](crate::audit::AuditLog::reopened)).
    ///
    /// Returns the new generation, or `None` if the store is not broken, the disk still full, or
    /// the last reopen less than 2 s ago (`REOPEN_AT_MOST_EVERY`).
    /// An error means the engine could not be opened again: the store fails everything and
    /// stays broken, and a later call tries again.
    pub fn recover(&self) -> Result<Option<u64>, StoreError> {
        let mut last = self.recovering.lock().unwrap_or_else(|p| p.into_inner());
        let too_soon = last.is_some_and(|at| at.elapsed() < REOPEN_AT_MOST_EVERY);
        if !self.engine.broken() || too_soon || !self.engine.has_space() {
            return Ok(None);
        }
        *last = Some(Instant::now());
        let reopened = self
            .engine
            .reopen(|generation| self.group.swapped(generation));
        // The old engine is gone whether or not the new one opened.
        self.cache.lock().expect("cache lock").cases.clear();
        self.reopened.call(&self.group.generation());
        reopened.map(Some)
    }

    /// Call `hook` with every case the trust hub acknowledges from now on
    /// ([`Self::announce_hub_saved`]), to tell the devices syncing it live. Must not block.
    pub fn on_hub_saved(&self, hook: impl Fn(&CaseId) + Send + Sync + 'static) {
        self.hub_saved.add(hook);
    }

    /// The borough's link recorded that the trust hub holds more of `case` durably.
    pub fn announce_hub_saved(&self, case: CaseId) {
        self.hub_saved.call(&case);
    }

    /// Call `hook` with every change announced from now on ([`Self::announce`]), to tell the
    /// other sessions syncing the case. The hook runs on the announcing session's thread, and
    /// must not block.
    pub fn on_case_changed(&self, hook: impl Fn(&CaseChanged) + Send + Sync + 'static) {
        self.changes.add(hook);
    }

    /// Announce a change, so other connected devices get it live.
    pub fn announce(&self, change: CaseChanged) {
        self.changes.call(&change);
    }

    /// The case, loaded if needed; `None` if the server has never stored it.
    /// A case read before the store was last reopened is read again.
    pub fn case(&self, case: &CaseId) -> Result<Option<SharedCase>, StorageError> {
        let generation = self.group.generation();
        {
            let mut cache = self.cache.lock().expect("cache lock");
            match cache.cases.get_mut(case) {
                // A case whose lock a panic poisoned (in validation, message generation, a save)
                // may hold a document that is behind its own stored chunks: it is dropped and read
                // again from disk, which holds everything acknowledged, so the case stays usable.
                Some(entry) if entry.2 == Some(generation) && !entry.0.is_poisoned() => {
                    entry.1 = Instant::now();
                    return Ok(Some(entry.0.clone()));
                }
                Some(entry) => {
                    if entry.0.is_poisoned() {
                        // The panic may have come between a chunk's append and its ticket
                        // (`apply`), so the disk may hold a write no ticket covers yet: take one
                        // now, so a `Saved` naming what is read back waits for a real flush.
                        let _ = self.group.wrote_in(generation);
                    }
                    cache.cases.remove(case);
                }
                None => {}
            }
        }
        let Some(chunks) = self.store.load_chunks(case)? else {
            return Ok(None);
        };
        let last_seq = chunks.last().map(|c| c.0).unwrap_or(0);
        let count = chunks.len() as u64;
        let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, c)| c).collect();
        let doc = AutoCommit::load(&bytes).map_err(|e| StorageError::Corrupt {
            case: *case,
            detail: e.to_string(),
        })?;
        let mut loaded = ServerCase::new(doc, count, last_seq);
        loaded.generation = Some(generation);
        Ok(Some(self.insert(*case, Arc::new(Mutex::new(loaded)))))
    }

    /// Put a newly created case in the cache (or return the one already there, unless that one
    /// was read before the store was last reopened).
    pub fn insert(&self, case: CaseId, shared: SharedCase) -> SharedCase {
        let generation = shared.lock().expect("case lock").generation;
        let mut cache = self.cache.lock().expect("cache lock");
        let current = Some(self.group.generation());
        if cache.cases.get(&case).is_some_and(|e| e.2 != current) {
            cache.cases.remove(&case);
        }
        let entry = cache
            .cases
            .entry(case)
            .or_insert((shared, Instant::now(), generation))
            .0
            .clone();
        if cache.cases.len() > cache.cap {
            cache.evict();
        }
        entry
    }

    /// Store a prepared sync message's new changes and swap them into the open case, then compact
    /// the case's log if it is due. Returns the group-commit ticket the `Saved` must wait for.
    ///
    /// The order is the point, so one method owns it: **append, then commit, then compact**. A
    /// compaction replaces every chunk through `through` with a snapshot of the document in memory,
    /// so it is safe only once that document holds every one of those chunks. Compacting before
    /// the commit (as an earlier version did) saved a snapshot without the message's changes and
    /// then removed the chunk holding them: acknowledged changes vanished from disk at every 32nd
    /// chunk, and came back only if a device sent them again.
    ///
    /// A failed append leaves the case exactly as it was (the prepared message is dropped, the
    /// document and sync state untouched); a failed compaction loses nothing (the chunks stay).
    ///
    /// A case read before the store was last reopened is refused, untouched: its document may
    /// hold changes the reopened store lacks, and a `Saved` naming its heads would vouch for them.
    pub fn apply(
        &self,
        case: &CaseId,
        c: &mut ServerCase,
        prepared: Prepared,
        peer: &mut PeerSync,
    ) -> Result<u64, StoreError> {
        // Noted before anything is read or written, so the ticket is lost if a reopen comes
        // in between (see GroupCommit).
        let generation = self.group.generation();
        match c.generation {
            Some(g) if g != generation => {
                return Err(StoreError::Io(std::io::Error::other(
                    "the server reopened its store after a disk error while this case was open",
                )))
            }
            Some(_) => {}
            None => c.generation = Some(generation),
        }
        if prepared.new_changes == 0 {
            prepared.commit(&mut c.doc, peer);
            return Ok(self.group.current_in(generation));
        }
        let seq = self.store.append_chunk(case, &prepared.chunk)?;
        prepared.commit(&mut c.doc, peer);
        c.last_seq = seq;
        c.chunks_since_snapshot += 1;
        if c.chunks_since_snapshot >= COMPACT_AFTER {
            self.compact(case, c);
        }
        Ok(self.group.wrote_in(generation))
    }

    /// Store changes that arrived as an encoded chunk (the trust hub's, on a borough's link) in
    /// a case, creating it if the server has never stored it: `check` sees the document before (with its heads)
    /// and after and may refuse (nothing is stored then). The same order as [`Self::apply`]:
    /// append, then swap the new document in, then compact if due. Returns the ticket covering
    /// the write (or every write so far when the chunk held nothing new), and whether it added
    /// anything.
    pub fn apply_chunk(
        &self,
        case: &CaseId,
        chunk: &[u8],
        check: impl FnOnce(&AutoCommit, &[ChangeHash], &mut AutoCommit) -> Result<(), String>,
    ) -> Result<(u64, bool), StorageError> {
        let generation = self.group.generation();
        match self.case(case)? {
            Some(shared) => {
                let mut c = shared.lock().expect("case lock");
                if c.generation.is_some_and(|g| g != generation) {
                    return Err(StorageError::Store(StoreError::Io(std::io::Error::other(
                        "the server reopened its store after a disk error while this case was open",
                    ))));
                }
                self.apply_chunk_to(case, &mut c, chunk, check, generation)
            }
            None => {
                // A case new here is built aside and cached only once its chunk is on disk, as a
                // new case from a device is: nobody else sees it before.
                let mut c = ServerCase::new(AutoCommit::new(), 0, 0);
                let done = self.apply_chunk_to(case, &mut c, chunk, check, generation)?;
                if done.1 {
                    self.insert(*case, Arc::new(Mutex::new(c)));
                }
                Ok(done)
            }
        }
    }

    fn apply_chunk_to(
        &self,
        case: &CaseId,
        c: &mut ServerCase,
        chunk: &[u8],
        check: impl FnOnce(&AutoCommit, &[ChangeHash], &mut AutoCommit) -> Result<(), String>,
        generation: u64,
    ) -> Result<(u64, bool), StorageError> {
        let mut after = c.doc.clone();
        after
            .load_incremental(chunk)
            .map_err(|e| StorageError::Refused {
                case: *case,
                detail: format!("changes that do not load: {e}"),
            })?;
        let before_heads = c.doc.get_heads();
        if after.get_heads() == before_heads {
            return Ok((self.group.current_in(generation), false));
        }
        check(&c.doc, &before_heads, &mut after).map_err(|detail| StorageError::Refused {
            case: *case,
            detail,
        })?;
        let seq = self.store.append_chunk(case, chunk)?;
        c.generation = Some(generation);
        c.doc = after;
        c.last_seq = seq;
        c.chunks_since_snapshot += 1;
        if c.chunks_since_snapshot >= COMPACT_AFTER {
            self.compact(case, c);
        }
        Ok((self.group.wrote_in(generation), true))
    }

    /// Replace the case's log through its last chunk with one snapshot of its document. The
    /// document must hold every stored chunk's changes ([`Self::apply`] calls this only after the
    /// commit). Compaction runs under the case's lock, so no chunk can be appended between the
    /// snapshot and the removal.
    fn compact(&self, case: &CaseId, c: &mut ServerCase) {
        let snapshot = c.doc.save();
        match self.store.compact_case(case, &snapshot, c.last_seq) {
            Ok(()) => c.chunks_since_snapshot = 1,
            Err(e) => {
                tracing::warn!(%case, error = %e, "compaction failed; the log is kept as it is")
            }
        }
    }

    /// How many cases are open in memory.
    pub fn cached(&self) -> usize {
        self.cache.lock().expect("cache lock").cases.len()
    }

    /// Close the open cases no session has used for `idle` (and none holds now), so a server that
    /// was busy this morning does not keep the morning's cases in memory all afternoon. Returns
    /// how many were closed.
    pub fn close_idle(&self, idle: Duration) -> usize {
        let closed = {
            let mut cache = self.cache.lock().expect("cache lock");
            let before = cache.cases.len();
            cache
                .cases
                .retain(|_, (c, used, _)| Arc::strong_count(c) > 1 || used.elapsed() < idle);
            before - cache.cases.len()
        };
        if closed > 0 {
            return_freed_memory();
        }
        closed
    }
}

/// Hand memory freed by closed cases back to the operating system. glibc's allocator keeps freed
/// memory in its arenas for reuse, so without this the resident size stays at its peak.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory at the top of the heaps and arenas; it
    // touches no memory in use and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Cache {
    /// Drop least-recently-used cases that no session holds, down to 90% of capacity.
    fn evict(&mut self) {
        let target = self.cap * 9 / 10;
        let mut idle: Vec<(Instant, CaseId)> = self
            .cases
            .iter()
            .filter(|(_, (c, _, _))| Arc::strong_count(c) == 1)
            .map(|(id, (_, used, _))| (*used, *id))
            .collect();
        idle.sort_unstable();
        let excess = self.cases.len().saturating_sub(target);
        for (_, id) in idle.into_iter().take(excess) {
            self.cases.remove(&id);
        }
    }
}

#[cfg(test)]
pub(crate) mod test_disk;

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::SeqCst;

    use super::test_disk::Disk;
    use super::*;
    use polyphony_core::store::{KeySource, MemoryStore, SledStore};

    fn stored_case(storage: &ServerStorage) -> CaseId {
        let case = CaseId::random();
        let mut doc = AutoCommit::new();
        automerge::transaction::Transactable::put(&mut doc, automerge::ROOT, "k", 1).unwrap();
        storage.store.append_chunk(&case, &doc.save()).unwrap();
        case
    }

    /// Lets every author and document through: these tests are about storage, not policy.
    struct AnyAuthor;
    impl polyphony_core::sync::CasePolicy for AnyAuthor {
        fn author_allowed(&self, _: &automerge::ActorId) -> bool {
            true
        }
        fn check(&self, _: &AutoCommit) -> Result<(), polyphony_core::sync::PolicyRefusal> {
            Ok(())
        }
    }

    /// Sync a device's document into an open server case, as one session does (fresh sync states,
    /// messages both ways until both sides are quiet), applying what arrives through
    /// [`ServerStorage::apply`]. Returns how many messages carried new changes to the server.
    fn sync_session(
        storage: &ServerStorage,
        case: &CaseId,
        c: &mut ServerCase,
        device: &mut AutoCommit,
    ) -> usize {
        use automerge::sync::{Message, SyncDoc};
        let (mut ours, mut theirs) = (PeerSync::default(), automerge::sync::State::new());
        let mut writes = 0;
        for _ in 0..16 {
            let to_server = device.sync().generate_sync_message(&mut theirs);
            if let Some(m) = &to_server {
                let prepared = polyphony_core::sync::prepare(
                    &mut c.doc,
                    &ours,
                    &m.clone().encode(),
                    &AnyAuthor,
                )
                .unwrap();
                writes += usize::from(prepared.new_changes > 0);
                storage.apply(case, c, prepared, &mut ours).unwrap();
            }
            let to_device = ours.generate(&mut c.doc);
            if let Some(m) = &to_device {
                let m = Message::decode(&m.clone().encode()).unwrap();
                device.sync().receive_sync_message(&mut theirs, m).unwrap();
            }
            if to_server.is_none() && to_device.is_none() {
                return writes;
            }
        }
        panic!("the sync did not settle");
    }

    /// Issue 14, finding 8: a panic while a session holds a case's lock (here between the
    /// append and the swap of the document, the worst place) must leave the case usable: the
    /// poisoned case is read again from disk, with the appended change, and takes writes.
    #[test]
    fn a_panic_while_a_case_is_locked_leaves_it_usable_with_everything_stored() {
        let storage = ServerStorage::new(Arc::new(MemoryStore::new()), 16);
        let case = stored_case(&storage);
        let shared = storage.case(&case).unwrap().unwrap();
        // A change a device sent, stored but not yet swapped in when the session panics.
        let mut device = shared.lock().unwrap().doc.fork();
        automerge::transaction::Transactable::put(&mut device, automerge::ROOT, "k2", 2).unwrap();
        device.commit();
        let heads = device.get_heads();
        let held = shared.clone();
        let chunk = device.save_after(&held.lock().unwrap().doc.get_heads());
        let store = storage.store.clone();
        let panicked = std::thread::spawn(move || {
            let _guard = held.lock().unwrap();
            store.append_chunk(&case, &chunk).unwrap();
            panic!("a bug while the case is locked");
        })
        .join();
        assert!(panicked.is_err() && shared.is_poisoned());
        let before_reload = storage.group.current_in(storage.group.generation());
        let again = storage.case(&case).unwrap().unwrap();
        // What is read back includes the appended chunk, for which no ticket was taken before the
        // panic: a `Saved` naming it must wait for a flush newer than every ticket so far.
        assert!(
            storage.group.current_in(storage.group.generation()) > before_reload,
            "the reload of a poisoned case takes a ticket for what it read back"
        );
        assert!(
            !Arc::ptr_eq(&again, &shared),
            "the poisoned case was read again"
        );
        let mut c = again.lock().expect("the case is usable");
        assert!(
            heads.iter().all(|h| c.doc.get_change_by_hash(h).is_some()),
            "the change stored before the panic is in the case read again"
        );
        let mut writer = c.doc.fork();
        automerge::transaction::Transactable::put(&mut writer, automerge::ROOT, "k3", 3).unwrap();
        let mut peer = PeerSync::default();
        let message = {
            use automerge::sync::SyncDoc;
            writer
                .sync()
                .generate_sync_message(&mut automerge::sync::State::new())
                .unwrap()
        };
        let prepared =
            polyphony_core::sync::prepare(&mut c.doc, &peer, &message.encode(), &AnyAuthor)
                .unwrap();
        storage.apply(&case, &mut c, prepared, &mut peer).unwrap();
    }

    /// The lost-changes bug of issue 13, below the network: one case, one chunk per message, far
    /// past several compactions, on a real sled store that is closed and reopened from disk after
    /// every message. Each reopened log must hold every change applied so far.
    #[test]
    fn applied_changes_survive_every_compaction_and_a_reopen_from_disk() {
        use polyphony_core::model::{
            Author, CaseDoc, NewCase, NewMeeting, NoteKind, Participant, Place,
        };
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        KeySource::create_key_file(&key).unwrap();
        let open = || -> Arc<dyn Store> {
            Arc::new(
                SledStore::open(&dir.path().join("db"), KeySource::KeyFile(key.clone())).unwrap(),
            )
        };
        let author = Author {
            practitioner: polyphony_core::PractitionerId::random(),
            practitioner_name: "Sam".into(),
            device: polyphony_core::DeviceId::random(),
        };
        let case = CaseId::random();
        let mut device = CaseDoc::create(
            case,
            TeamId::random(),
            NewCase {
                name: "Jo".into(),
                ..Default::default()
            },
            author,
        )
        .unwrap();
        let meeting = device
            .add_meeting(NewMeeting {
                at: polyphony_core::model::parse_datetime("at", "2026-03-14T10:30").unwrap(),
                place: Place::Home,
                attendees: vec![Participant::Person],
            })
            .unwrap();
        let messages = COMPACT_AFTER as usize * 3 + 5;
        let (mut compactions, mut longest_log) = (0, 0);
        for i in 0..messages {
            if i > 0 {
                device
                    .append_text(&meeting, NoteKind::Notes, &format!("n{i} "))
                    .unwrap();
            }
            // A server opened afresh on the store each time: the case comes from disk, or is new.
            let storage = ServerStorage::new(open(), 16);
            let shared = storage
                .case(&case)
                .unwrap()
                .unwrap_or_else(|| Arc::new(Mutex::new(ServerCase::new(AutoCommit::new(), 0, 0))));
            let mut c = shared.lock().unwrap();
            assert_eq!(
                sync_session(&storage, &case, &mut c, device.automerge_mut()),
                1,
                "message {i}: one stored chunk per sync"
            );
            storage.store.flush().unwrap();
            let log = storage.store.load_chunks(&case).unwrap().unwrap().len();
            if log < longest_log {
                compactions += 1;
            }
            longest_log = log;
            drop(c);
            drop(shared);
            drop(storage);
            // A fresh load from disk holds every change the device made.
            let bytes: Vec<u8> = open()
                .load_chunks(&case)
                .unwrap()
                .unwrap()
                .into_iter()
                .flat_map(|(_, c)| c)
                .collect();
            assert_eq!(
                AutoCommit::load(&bytes).unwrap().get_heads(),
                device.automerge_mut().get_heads(),
                "message {i}: the log reloaded from disk lost changes"
            );
        }
        assert!(
            compactions >= 3,
            "the test crossed {compactions} compactions"
        );
    }

    /// A write of the group-commit kind: note the generation, write, take the ticket.
    fn ticketed_write(storage: &ServerStorage, key: &str) -> u64 {
        let generation = storage.group.generation();
        storage.store.put_meta("test", key, b"value").unwrap();
        storage.group.wrote_in(generation)
    }

    /// Group commit below any runtime: writers on many threads wait at once. Each wait ends only
    /// once a flush that began after its write has finished (never on a flush that was under way
    /// when the write finished, nor before any flush), and the writers share a few flushes.
    #[test]
    fn waiting_writers_share_flushes_and_none_is_told_durable_before_a_flush_covers_it() {
        const WRITERS: u64 = 16;
        let (storage, disk) = Disk::storage();
        let storage = Arc::new(storage);
        let writers: Vec<_> = (0..WRITERS)
            .map(|i| {
                let (storage, disk) = (storage.clone(), disk.clone());
                std::thread::spawn(move || {
                    let (ticket, written) = disk.write(&storage, &format!("w{i}"));
                    storage.group.durable(ticket).unwrap();
                    assert!(
                        disk.flushed_through.load(SeqCst) >= written,
                        "writer {i} was told its write is durable before a flush covered it"
                    );
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let flushes = disk.flushes.load(SeqCst);
        assert!(
            flushes < WRITERS / 2,
            "{flushes} flushes for {WRITERS} writers: none shared"
        );
    }

    /// A flush under way vouches for nothing yet: a write it covers is not durable until it has
    /// finished, and a writer that asks meanwhile waits for that flush instead of starting another.
    #[test]
    fn a_write_is_not_durable_while_the_flush_covering_it_is_under_way() {
        let (storage, disk) = Disk::storage();
        let storage = Arc::new(storage);
        let (first, _) = disk.write(&storage, "first");
        let (second, written) = disk.write(&storage, "second");
        let gate = disk.gate.lock().unwrap();
        let flusher = {
            let storage = storage.clone();
            std::thread::spawn(move || storage.group.durable(first))
        };
        while disk.flushes_begun.load(SeqCst) == 0 {
            std::thread::yield_now();
        }
        assert!(
            storage.group.settled(first).is_none() && storage.group.settled(second).is_none(),
            "a ticket was settled while the flush covering it was still under way"
        );
        // A writer asking while that flush is under way waits for it: it neither returns nor
        // starts a flush of its own.
        let waiter = {
            let storage = storage.clone();
            std::thread::spawn(move || storage.group.durable(second))
        };
        for _ in 0..100 {
            std::thread::yield_now();
        }
        assert!(!waiter.is_finished(), "a writer returned during the flush");
        assert_eq!(disk.flushes_begun.load(SeqCst), 1);
        drop(gate);
        waiter.join().unwrap().unwrap();
        assert!(disk.flushed_through.load(SeqCst) >= written);
        flusher.join().unwrap().unwrap();
        assert_eq!(
            disk.flushes.load(SeqCst),
            1,
            "the second write waited for the flush under way"
        );
    }

    /// The ticket rule of a reopen: a write whose flush failed went into the engine a reopen
    /// drops, so its ticket must never be reported durable, not even once a later flush of the
    /// new engine covers every ticket number up to and past it.
    #[test]
    fn a_ticket_issued_before_a_failed_flush_is_never_durable_after_a_reopen() {
        let (storage, disk) = Disk::storage();
        let saved = ticketed_write(&storage, "saved");
        storage.group.durable(saved).unwrap();

        disk.failing.store(true, SeqCst);
        let generation_before = storage.group.generation();
        let pending = ticketed_write(&storage, "pending");
        assert!(storage.group.durable(pending).is_err());
        assert!(storage.broken(), "a failed flush breaks the store");

        // Space returns; the store is reopened; a new write is made durable.
        disk.failing.store(false, SeqCst);
        assert_eq!(storage.recover().unwrap(), Some(generation_before + 1));
        assert!(!storage.broken());
        // A `Saved` for a case as read back from the new engine (no new changes) waits for the
        // new engine's first flush, and is not mistaken for one of the lost tickets.
        let read_back = storage.group.current_in(storage.group.generation());
        assert!(read_back > pending);
        let later = ticketed_write(&storage, "later");
        assert!(later > read_back);
        storage.group.durable(later).unwrap();
        storage.group.durable(read_back).unwrap();

        let refused = storage.group.durable(pending);
        assert!(
            refused.is_err(),
            "a ticket issued before the failed flush was reported durable after the reopen"
        );
        assert!(refused.unwrap_err().to_string().contains("reopened"));
        // Tickets that were durable before stay so; a ticket asked for after the reopen for a
        // write begun before it is lost at once.
        storage.group.durable(saved).unwrap();
        assert_eq!(storage.group.wrote_in(generation_before), LOST_TICKET);
        assert_eq!(storage.group.current_in(generation_before), LOST_TICKET);
        assert!(storage.group.durable(LOST_TICKET).is_err());
    }

    /// A reopen closes every open case, and a case a session still holds from before it can
    /// neither be written nor vouched for: its document may hold changes the reopened store
    /// lacks. The next read of the case comes from the store, and takes writes again.
    #[test]
    fn a_reopen_drops_the_open_cases_and_a_case_held_across_it_is_refused() {
        use automerge::sync::SyncDoc;
        use polyphony_core::model::{Author, CaseDoc, NewCase, NewMeeting, NoteKind, Place};
        let (storage, disk) = Disk::storage();
        let case = CaseId::random();
        let author = Author {
            practitioner: polyphony_core::PractitionerId::random(),
            practitioner_name: "Sam".into(),
            device: polyphony_core::DeviceId::random(),
        };
        let new_case = NewCase {
            name: "Jo".into(),
            ..Default::default()
        };
        let mut device = CaseDoc::create(case, TeamId::random(), new_case, author).unwrap();
        let meeting = device
            .add_meeting(NewMeeting {
                at: polyphony_core::model::parse_datetime("at", "2026-03-14T10:30").unwrap(),
                place: Place::Home,
                attendees: vec![],
            })
            .unwrap();
        let created = Arc::new(Mutex::new(ServerCase::new(AutoCommit::new(), 0, 0)));
        sync_session(
            &storage,
            &case,
            &mut created.lock().unwrap(),
            device.automerge_mut(),
        );
        storage.insert(case, created);
        storage.store.flush().unwrap();
        let held = storage.case(&case).unwrap().expect("stored");
        assert_eq!(storage.cached(), 1);
        device
            .append_text(&meeting, NoteKind::Notes, "written after the reopen")
            .unwrap();

        disk.failing.store(true, SeqCst);
        assert!(storage.store.flush().is_err());
        disk.failing.store(false, SeqCst);
        let told = Arc::new(Mutex::new(Vec::new()));
        storage.on_reopened({
            let told = told.clone();
            move |generation| told.lock().unwrap().push(*generation)
        });
        let reopened = storage.recover().unwrap().expect("reopened");
        assert_eq!(*told.lock().unwrap(), [reopened], "sessions are told");
        assert_eq!(storage.cached(), 0, "every open case was dropped");

        // The held case refuses the device's message and stays as it was.
        let message = device
            .automerge_mut()
            .sync()
            .generate_sync_message(&mut automerge::sync::State::new())
            .unwrap()
            .encode();
        {
            let mut c = held.lock().unwrap();
            let heads = c.doc.get_heads();
            let prepared = polyphony_core::sync::prepare(
                &mut c.doc,
                &PeerSync::default(),
                &message,
                &AnyAuthor,
            )
            .unwrap();
            let refused = storage.apply(&case, &mut c, prepared, &mut PeerSync::default());
            assert!(refused.is_err(), "a case held across a reopen took a write");
            assert_eq!(c.doc.get_heads(), heads);
        }

        // Read again from the store, the case takes the device's changes and they are durable.
        let fresh = storage.case(&case).unwrap().expect("still stored");
        assert!(
            !Arc::ptr_eq(&fresh, &held),
            "the held case came back from the cache"
        );
        {
            let mut c = fresh.lock().unwrap();
            assert_eq!(
                sync_session(&storage, &case, &mut c, device.automerge_mut()),
                1
            );
            assert_eq!(c.doc.get_heads(), device.automerge_mut().get_heads());
        }
        let ticket = storage.group.current_in(storage.group.generation());
        storage.group.durable(ticket).unwrap();
        assert!(storage.recover().unwrap().is_none(), "nothing broken now");
    }

    #[test]
    fn idle_cases_are_closed_and_reopen_from_disk_but_a_held_case_stays_open() {
        let storage = ServerStorage::new(Arc::new(MemoryStore::default()), 100);
        let (idle, held) = (stored_case(&storage), stored_case(&storage));
        storage.case(&idle).unwrap().expect("stored");
        let holding = storage.case(&held).unwrap().expect("stored");
        assert_eq!(storage.cached(), 2);

        // Used just now: nothing is idle for a minute yet.
        assert_eq!(storage.close_idle(Duration::from_secs(60)), 0);
        assert_eq!(storage.cached(), 2);

        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(storage.close_idle(Duration::from_millis(10)), 1);
        assert_eq!(storage.cached(), 1, "the case a session holds stays open");
        assert!(holding.lock().unwrap().doc.get_heads().len() == 1);

        // The closed case opens again, whole, from disk.
        let reopened = storage.case(&idle).unwrap().expect("still stored");
        assert_eq!(reopened.lock().unwrap().doc.get_heads().len(), 1);
        assert_eq!(storage.cached(), 2);
    }
}
