//! Cases on the server's disk: the store, group commit, and the cache of open cases.
//!
//! **Acknowledged means durable.** A session appends a case's new changes, takes a ticket, and waits
//! for [`GroupCommit::durable`] before it tells the device `Saved`. One flush (sled flush plus fsync,
//! see `shared/STACK.md`) covers every write that finished before it began, so sixty-four devices
//! syncing at once share a handful of fsyncs instead of queueing for sixty-four.
//!
//! **Memory follows use, not size.** Open cases are cached up to a limit; cases no session holds are
//! evicted least-recently-used first. A case held by a session is never evicted, so there is never a
//! second in-memory copy of a case.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use automerge::sync::State;
use automerge::AutoCommit;
use polyphony_core::identity::BoroughCa;
use polyphony_core::model::schema;
use polyphony_core::store::{ChunkSeq, KeySource, SledStore, Store, StoreError};
use polyphony_core::sync::Prepared;
use polyphony_core::{CaseId, TeamId};
use tokio::sync::broadcast;

use crate::audit::AuditLog;
use crate::config::ServerConfig;
use crate::registry::Registry;

/// A chunk count after which a case's log is compacted into one snapshot.
const COMPACT_AFTER: u64 = 32;

/// Makes writes durable in batches.
pub struct GroupCommit {
    store: Arc<dyn Store>,
    written: AtomicU64,
    durable: AtomicU64,
    flusher: tokio::sync::Mutex<()>,
}

impl GroupCommit {
    /// Group commit over a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        GroupCommit {
            store,
            written: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            flusher: tokio::sync::Mutex::new(()),
        }
    }

    /// Note that a write has completed; the returned ticket is durable once [`Self::durable`]
    /// returns for it.
    pub fn wrote(&self) -> u64 {
        self.written.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// A ticket covering every write completed so far.
    pub fn current(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// Wait until the write with this ticket (and every one before it) is on disk.
    pub async fn durable(&self, ticket: u64) -> Result<(), StoreError> {
        loop {
            if self.durable.load(Ordering::SeqCst) >= ticket {
                return Ok(());
            }
            // One flusher at a time; waiters queue here in order and usually find their ticket
            // covered by the flush that ran while they waited.
            let _turn = self.flusher.lock().await;
            if self.durable.load(Ordering::SeqCst) >= ticket {
                return Ok(());
            }
            let target = self.written.load(Ordering::SeqCst);
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.flush())
                .await
                .map_err(|e| StoreError::Engine(format!("flush task failed: {e}")))??;
            self.durable.fetch_max(target, Ordering::SeqCst);
        }
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
}

impl ServerCase {
    /// A case opened from `doc`.
    pub fn new(doc: AutoCommit, chunks_since_snapshot: u64, last_seq: ChunkSeq) -> Self {
        ServerCase {
            doc,
            chunks_since_snapshot,
            last_seq,
            team: None,
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
    /// Durability.
    pub group: GroupCommit,
    cache: Mutex<Cache>,
    changes: broadcast::Sender<CaseChanged>,
}

struct Cache {
    cap: usize,
    /// Each open case, with when it was last used (for least-recently-used eviction and for
    /// closing idle cases).
    cases: HashMap<CaseId, (SharedCase, Instant)>,
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
}

impl ServerStorage {
    /// Storage over a store, caching at most `cache_cases` open cases.
    pub fn new(store: Arc<dyn Store>, cache_cases: usize) -> Self {
        let (changes, _) = broadcast::channel(4096);
        ServerStorage {
            group: GroupCommit::new(store.clone()),
            store,
            cache: Mutex::new(Cache {
                cap: cache_cases.max(16),
                cases: HashMap::new(),
            }),
            changes,
        }
    }

    /// Announcements of changed cases.
    pub fn subscribe(&self) -> broadcast::Receiver<CaseChanged> {
        self.changes.subscribe()
    }

    /// Announce a change.
    pub fn announce(&self, change: CaseChanged) {
        let _ = self.changes.send(change);
    }

    /// The case, loaded if needed; `None` if the server has never stored it.
    pub fn case(&self, case: &CaseId) -> Result<Option<SharedCase>, StorageError> {
        {
            let mut cache = self.cache.lock().expect("cache lock");
            if let Some(entry) = cache.cases.get_mut(case) {
                entry.1 = Instant::now();
                return Ok(Some(entry.0.clone()));
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
        let loaded = Arc::new(Mutex::new(ServerCase::new(doc, count, last_seq)));
        Ok(Some(self.insert(*case, loaded)))
    }

    /// Put a newly created case in the cache (or return the one already there).
    pub fn insert(&self, case: CaseId, shared: SharedCase) -> SharedCase {
        let mut cache = self.cache.lock().expect("cache lock");
        let entry = cache
            .cases
            .entry(case)
            .or_insert((shared, Instant::now()))
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
    pub fn apply(
        &self,
        case: &CaseId,
        c: &mut ServerCase,
        prepared: Prepared,
        state: &mut State,
    ) -> Result<u64, StoreError> {
        if prepared.new_changes == 0 {
            prepared.commit(&mut c.doc, state);
            return Ok(self.group.current());
        }
        let seq = self.store.append_chunk(case, &prepared.chunk)?;
        prepared.commit(&mut c.doc, state);
        c.last_seq = seq;
        c.chunks_since_snapshot += 1;
        if c.chunks_since_snapshot >= COMPACT_AFTER {
            self.compact(case, c);
        }
        Ok(self.group.wrote())
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
                .retain(|_, (c, used)| Arc::strong_count(c) > 1 || used.elapsed() < idle);
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
            .filter(|(_, (c, _))| Arc::strong_count(c) == 1)
            .map(|(id, (_, used))| (*used, *id))
            .collect();
        idle.sort_unstable();
        let excess = self.cases.len().saturating_sub(target);
        for (_, id) in idle.into_iter().take(excess) {
            self.cases.remove(&id);
        }
    }
}

/// Everything the server keeps on disk, opened.
pub struct Opened {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The registry.
    pub registry: Arc<Registry>,
    /// The audit log.
    pub audit: Arc<AuditLog>,
    /// The borough CA.
    pub ca: BoroughCa,
}

const NS_SERVER: &str = "server";

/// Open (creating on first run) the server's data directory: key file, encrypted store, CA.
pub fn open(config: &ServerConfig) -> anyhow::Result<Opened> {
    open_with_store(config, open_store(config)?)
}

/// Open (creating on first run) the data directory's key file and encrypted store.
pub fn open_store(config: &ServerConfig) -> anyhow::Result<Arc<dyn Store>> {
    std::fs::create_dir_all(&config.data_dir)?;
    restrict(&config.data_dir);
    let key = config.key_file();
    KeySource::create_key_file(&key)?;
    Ok(Arc::new(SledStore::open(
        &config.db_dir(),
        KeySource::KeyFile(key),
    )?))
}

/// Everything else the server keeps (CA, registry, audit log) over an already-open store. The
/// fault tests pass a store that fails on demand, to see the server refuse writes when the disk is
/// full; the server itself always goes through [`open`].
pub fn open_with_store(config: &ServerConfig, store: Arc<dyn Store>) -> anyhow::Result<Opened> {
    std::fs::create_dir_all(&config.data_dir)?;
    let ca = match (
        store.get_meta(NS_SERVER, "ca_cert")?,
        store.get_meta(NS_SERVER, "ca_key")?,
    ) {
        (Some(cert), Some(key)) => BoroughCa::from_pem(
            &String::from_utf8_lossy(&cert),
            &String::from_utf8_lossy(&key),
        )?,
        _ => {
            let ca = BoroughCa::generate("Polyphony borough")?;
            let (cert, key) = ca.to_pem();
            store.put_meta(NS_SERVER, "ca_cert", cert.as_bytes())?;
            store.put_meta(NS_SERVER, "ca_key", key.as_bytes())?;
            store.flush()?;
            tracing::info!("created a new borough certificate authority");
            ca
        }
    };
    let registry = Arc::new(Registry::new(store.clone()));
    let audit = Arc::new(AuditLog::open(store.clone())?);
    Ok(Opened {
        store,
        registry,
        audit,
        ca,
    })
}

/// The secret behind the server's QUIC stateless-reset tokens, created on first run. Kept stable
/// across restarts so that after a crash the restarted server can tell devices at once that their
/// old connection is gone, instead of leaving them to wait for an idle timeout.
pub fn reset_secret(store: &dyn Store) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = store.get_meta(NS_SERVER, "reset_secret")? {
        return Ok(s);
    }
    let mut secret = vec![0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
    store.put_meta(NS_SERVER, "reset_secret", &secret)?;
    store.flush()?;
    Ok(secret)
}

/// Open the store for an admin command while the server is not running.
pub fn open_offline(
    config: &ServerConfig,
) -> anyhow::Result<(Arc<Registry>, Arc<AuditLog>, [u8; 32])> {
    let o = open(config)?;
    Ok((o.registry, o.audit, o.ca.fingerprint()))
}

#[cfg(unix)]
fn restrict(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

#[cfg(not(unix))]
fn restrict(_: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;
    use polyphony_core::store::MemoryStore;

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
        fn check(&self, _: &AutoCommit) -> Result<(), String> {
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
        let (mut ours, mut theirs) = (State::new(), State::new());
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
            let to_device = c.doc.sync().generate_sync_message(&mut ours);
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
