//! The on-disk [`Store`]: sled 0.34, with every value sealed before it reaches sled.
//!
//! sled is embedded, pure Rust and crash-safe enough for us once its flush is followed by an fsync,
//! but it has had no release since 0.34.7 (2021), so nothing about it leaks past this file:
//! callers see only [`Store`], [`SledStore::open`] and [`SledOptions`].
//!
//! Layout (one sled database per store directory):
//! - tree `polyphony.header`: the format version, a random store id, how the key from the
//!   [`KeySource`] is obtained (kind, argon2id salt and costs), the data key wrapped under that key,
//!   and a *verifier*: a known constant sealed under the data key. Opening checks them before
//!   anything else is touched, so a wrong passphrase is reported as such and changes nothing. The
//!   two formats (1: the passphrase derives the data key; 2: it wraps a random one) are described
//!   in `sled_store/header.rs`; this version makes format 2 and reads both.
//! - tree `polyphony.chunks`: key `case uuid (16 bytes) ++ seq (8 bytes, big-endian)`, so a prefix
//!   scan reads one case's log in order. Sequence numbers come from sled's persistent id generator
//!   (plus the header's `seq_base`), which never hands out a number twice, even across crashes.
//! - tree `polyphony.meta`: key `namespace ++ NUL ++ key`.
//! - tree `polyphony.logs`: key `log name ++ NUL ++ index (8 bytes, big-endian)`; tree
//!   `polyphony.log_heads` holds each log's next index, updated in the same transaction as the entry
//!   so indices never repeat, even after trimming.
//!
//! Every value is sealed with associated data `store id ++ tree tag ++ key`: a value copied to another
//! key, case or store fails its integrity check instead of being read as someone else's record.
//!
//! A passphrase store in format 1, or with argon2id parameters weaker than asked for, is *re-keyed*
//! when it is opened with the right passphrase: every value re-sealed under a new random data key
//! in a new database beside the old one, switched in by renames that a crash at any point leaves
//! recoverable (`sled_store/rekey.rs`). [`SledStore::change_key`] changes a passphrase the same way.
//!
//! Durability: sled's own `flush` uses `sync_file_range` on Linux, which does not empty the disk's
//! write cache (sled #1452, #1351), so [`Store::flush`] follows it with an fsync of every file under
//! the store directory and of the directories themselves. Before sled opens a store, a snapshot
//! file sled left unfinished in a crash is removed: sled would take it for its newest snapshot and
//! refuse to open (`remove_unfinished_snapshots`). Flushes are serialised and grouped: a
//! caller whose writes were covered by a flush that started after them returns without flushing
//! again. sled's `flush_async` is never used: concurrent calls deadlock (sled #1308).

pub(super) mod header;
pub(crate) mod rekey;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use self::header::{NewHeader, Unlocked};
use super::crypto::{KdfParams, KeySource};
use super::{check_name, ChunkLog, ChunkSeq, Store, StoreError};
use crate::{BlobHash, CaseId};

/// Format 1: the key from the [`KeySource`] seals the values directly (stores made before key
/// wrapping; still read, and re-keyed when opened with a passphrase).
const FORMAT_DIRECT: u8 = 1;
/// Format 2: a random data key, wrapped under the key from the [`KeySource`]. What this version
/// makes. A store of a format not listed here is refused with a request to update Polyphony.
pub(super) const FORMAT_WRAPPED: u8 = 2;

const TREE_HEADER: &str = "polyphony.header";
const TREE_CHUNKS: &str = "polyphony.chunks";
const TREE_META: &str = "polyphony.meta";
const TREE_LOGS: &str = "polyphony.logs";
const TREE_LOG_HEADS: &str = "polyphony.log_heads";
const TREE_BLOBS: &str = "polyphony.blobs";

const HEADER_FORMAT: &[u8] = b"format";
const HEADER_STORE_ID: &[u8] = b"store_id";
const HEADER_KDF: &[u8] = b"kdf";
pub(super) const HEADER_VERIFIER: &[u8] = b"verifier";
const HEADER_WRAPPED_KEY: &[u8] = b"wrapped_key";
const HEADER_SEQ_BASE: &[u8] = b"seq_base";
const VERIFIER_PLAINTEXT: &[u8] = b"polyphony store verifier v1";

// One byte per tree in the associated data, so identical keys in two trees still differ.
const TAG_VERIFIER: u8 = b'v';
const TAG_WRAP: u8 = b'w';
pub(super) const TAG_CHUNK: u8 = b'c';
pub(super) const TAG_META: u8 = b'm';
pub(super) const TAG_LOG: u8 = b'l';
pub(super) const TAG_BLOB: u8 = b'b';

const CASE_ID_LEN: usize = 16;
const CASE_LOCK_STRIPES: usize = 16;
pub(super) const STORE_ID_LEN: usize = 16;

/// Tuning for a [`SledStore`]. The defaults suit both a practitioner's laptop and the borough server.
#[derive(Clone, Debug)]
pub struct SledOptions {
    /// Upper bound on sled's page cache, in bytes (default 64 MiB). sled's own default (1 GiB)
    /// would let the borough server hold most of its cases in memory.
    pub cache_capacity_bytes: u64,
    /// Cost of turning a passphrase into a key, used when a passphrase store is *created* or
    /// *re-keyed*: a passphrase store whose recorded parameters are weaker than these (or that
    /// predates key wrapping) is re-keyed under these when opened. Leave at
    /// [`KdfParams::RECOMMENDED`] except in tests.
    pub kdf: KdfParams,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self {
            cache_capacity_bytes: 64 * 1024 * 1024,
            kdf: KdfParams::RECOMMENDED,
        }
    }
}

/// A [`Store`] in a directory on disk, backed by sled, every value sealed with the store's data key.
///
/// Only one process may have a store open at a time (sled locks its files); a second
/// [`SledStore::open`] of the same directory, in this process or another, is
/// [`StoreError::Locked`]. The lock is released when the `SledStore` is dropped.
pub struct SledStore {
    dir: PathBuf,
    db: sled::Db,
    chunks: sled::Tree,
    meta: sled::Tree,
    logs: sled::Tree,
    log_heads: sled::Tree,
    blobs: sled::Tree,
    keys: Unlocked,
    /// Why the store still waits for its re-key, when opening it tried and could not (a full disk).
    upgrade_pending: Option<String>,
    /// Serialise every change to one case's log (append, compaction, removal), striped by case id.
    /// Without it, two appends could draw sequence numbers 3 and 4 but insert 4 first, and a
    /// reader that saw 4 would never look back for 3; and a compaction could re-insert a snapshot
    /// for a case that a concurrent removal had just wiped. Different cases rarely share a stripe.
    case_locks: [Mutex<()>; CASE_LOCK_STRIPES],
    /// Number of `flush` calls so far; each call takes a ticket from it.
    flush_tickets: AtomicU64,
    /// Highest ticket whose writes are known durable. The mutex also serialises the flushes.
    flushed_through: Mutex<u64>,
}

impl SledStore {
    /// Open the store in `dir`, creating it (and the directory) if it does not exist yet, with
    /// default [`SledOptions`].
    ///
    /// A passphrase store made before key wrapping, or with weaker argon2id parameters than the
    /// options ask for, is re-keyed first (see the module documentation); if that fails (a full
    /// disk), the store opens as it was and [`SledStore::upgrade_pending`] says why.
    ///
    /// Errors: [`StoreError::WrongPassphrase`] if `key` does not open an existing store (no stored
    /// value is touched; the key is checked before anything is written), [`StoreError::Locked`] if
    /// another `SledStore`, in this process or another, has it open (after waiting up to a second,
    /// since sled lets go of its lock a moment after a store is dropped), [`StoreError::KeyFile`]
    /// for a missing or malformed key file, [`StoreError::Corrupt`] for a damaged header.
    pub fn open(dir: &Path, key: KeySource) -> Result<SledStore, StoreError> {
        Self::open_with(dir, key, SledOptions::default())
    }

    /// [`SledStore::open`] with explicit options.
    pub fn open_with(
        dir: &Path,
        key: KeySource,
        options: SledOptions,
    ) -> Result<SledStore, StoreError> {
        let span = tracing::info_span!("open_store", path = %dir.display(), key = key.kind_name());
        let _entered = span.enter();

        // Before anything can create a store at `dir`: an interrupted re-key may have set the
        // real one aside.
        rekey::recover(dir)?;
        let dir_existed = dir.exists();
        fs::create_dir_all(dir)?;
        let db = open_db(dir, &options).inspect_err(|e| {
            if matches!(e, StoreError::Locked { .. }) {
                tracing::info!("the store is open elsewhere");
            }
        })?;
        restrict_to_owner(dir)?;

        let keys = if header::present(&db)? {
            header::unlock(&db, &key)?
        } else {
            create(&db, dir, dir_existed, &key, &options)?
        };
        let (db, keys, upgrade_pending) = upgrade_if_due(dir, db, keys, &key, &options)?;
        Self::assemble(dir, db, keys, upgrade_pending)
    }

    /// Re-key the store in `dir` (closed) from `current` to `new`: every value re-sealed under a
    /// new data key wrapped under `new` (argon2id with `options.kdf`, for a passphrase), in a copy
    /// built beside the store and switched in (see the module documentation). This is how a
    /// passphrase is changed. Because the data key is new too, the old passphrase with an older
    /// copy of the store opens nothing written afterwards.
    ///
    /// If it fails or is interrupted, `current` still opens the store, with everything in it.
    /// Errors: those of [`SledStore::open`] for `current`, and [`StoreError::Io`] when the copy
    /// cannot be written (a full disk: the store needs about its own size free).
    pub fn change_key(
        dir: &Path,
        current: KeySource,
        new: KeySource,
        options: SledOptions,
    ) -> Result<(), StoreError> {
        let span = tracing::info_span!("change_store_key", path = %dir.display(), from = current.kind_name(), to = new.kind_name());
        let _entered = span.enter();
        rekey::recover(dir)?;
        if !dir.exists() {
            return Err(StoreError::InvalidRequest(format!(
                "there is no store at {} to change the key of",
                dir.display()
            )));
        }
        let db = open_db(dir, &options)?;
        if !header::present(&db)? {
            return Err(StoreError::InvalidRequest(format!(
                "{} holds no store yet: open it once to create it",
                dir.display()
            )));
        }
        let keys = header::unlock(&db, &current)?;
        rekey::tidy_retired(dir, &keys).map_err(StoreError::Engine)?;
        rekey::rekey(dir, db, &keys, &new, &options).map_err(|failed| failed.error)?;
        // As after an upgrade: the old store goes only once the new one has opened from disk.
        match open_db(dir, &options) {
            Ok(db) => {
                drop(db);
                rekey::remove_retired(dir);
                tracing::info!("the store's key was changed");
                Ok(())
            }
            Err(e) => {
                rekey::roll_back(dir);
                Err(e)
            }
        }
    }

    /// Whether a store exists at `dir` (including one an interrupted re-key set aside, which the
    /// next open puts back). Tells "set up a new profile" from "unlock this one".
    pub fn exists(dir: &Path) -> bool {
        rekey::store_exists(dir)
    }

    /// Why this store is still waiting to be re-keyed (made before key wrapping, or with weaker
    /// argon2id parameters), when opening it tried and could not, e.g. for lack of disk space.
    /// The store works as before meanwhile; the next open tries again.
    pub fn upgrade_pending(&self) -> Option<&str> {
        self.upgrade_pending.as_deref()
    }

    /// The directory this store lives in.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn assemble(
        dir: &Path,
        db: sled::Db,
        keys: Unlocked,
        upgrade_pending: Option<String>,
    ) -> Result<SledStore, StoreError> {
        let open = |name: &str| db.open_tree(name).map_err(engine_error);
        Ok(SledStore {
            chunks: open(TREE_CHUNKS)?,
            meta: open(TREE_META)?,
            logs: open(TREE_LOGS)?,
            log_heads: open(TREE_LOG_HEADS)?,
            blobs: open(TREE_BLOBS)?,
            dir: dir.to_path_buf(),
            db,
            keys,
            upgrade_pending,
            case_locks: Default::default(),
            flush_tickets: AtomicU64::new(0),
            flushed_through: Mutex::new(0),
        })
    }

    fn seal(&self, tag: u8, key: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.keys
            .data_key
            .seal(&value_aad(&self.keys.store_id, tag, key), plaintext)
    }

    /// Open a sealed value, naming what it was in the error (never its content).
    fn unseal(
        &self,
        tag: u8,
        key: &[u8],
        sealed: &[u8],
        what: impl FnOnce() -> String,
    ) -> Result<Vec<u8>, StoreError> {
        self.keys
            .data_key
            .open(&value_aad(&self.keys.store_id, tag, key), sealed)
            .map_err(|e| match e {
                StoreError::Corrupt { detail, .. } => {
                    let what = what();
                    tracing::error!(%what, %detail, "stored value failed its integrity check");
                    StoreError::Corrupt { what, detail }
                }
                other => other,
            })
    }

    fn lock_case(&self, case: &CaseId) -> MutexGuard<'_, ()> {
        // Case ids are random, so any byte of them spreads cases evenly over the stripes.
        let stripe = usize::from(case.0.as_bytes()[CASE_ID_LEN - 1]) % CASE_LOCK_STRIPES;
        // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
        self.case_locks[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keys of a case's chunks with sequence number `<= through`.
    fn chunk_keys_through(
        &self,
        case: &CaseId,
        through: ChunkSeq,
    ) -> Result<Vec<sled::IVec>, StoreError> {
        self.chunks
            .range(chunk_key(case, 0)..=chunk_key(case, through))
            .keys()
            .collect::<Result<_, _>>()
            .map_err(engine_error)
    }

    /// The last sequence number of a case's log, if it has any chunk.
    fn last_seq(&self, case: &CaseId) -> Result<Option<ChunkSeq>, StoreError> {
        match self
            .chunks
            .scan_prefix(case.0.as_bytes())
            .keys()
            .next_back()
        {
            None => Ok(None),
            Some(key) => Ok(Some(seq_of(&key.map_err(engine_error)?)?)),
        }
    }

    /// The next sequence number: sled's persistent generator, past the store's `seq_base`.
    fn next_seq(&self) -> Result<ChunkSeq, StoreError> {
        self.keys
            .seq_base
            .checked_add(self.db.generate_id().map_err(engine_error)?)
            .ok_or_else(|| StoreError::Engine("sequence numbers are exhausted".into()))
    }
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").field("dir", &self.dir).finish()
    }
}

/// Associated data of a stored value: which store, which tree, which key.
pub(super) fn value_aad(store_id: &[u8; STORE_ID_LEN], tag: u8, key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(STORE_ID_LEN + 1 + key.len());
    aad.extend_from_slice(store_id);
    aad.push(tag);
    aad.extend_from_slice(key);
    aad
}

/// sled with our cache size, waiting for a lock a dropped store has not yet let go of.
fn open_db(dir: &Path, options: &SledOptions) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(options.cache_capacity_bytes);
    open_waiting_for_lock(dir, &config)
}

/// Write the header of a new store in `dir` and make it durable.
fn create(
    db: &sled::Db,
    dir: &Path,
    dir_existed: bool,
    key: &KeySource,
    options: &SledOptions,
) -> Result<Unlocked, StoreError> {
    // No header: either a brand-new store, or a first open that crashed before its header was
    // written. Anything else without a header is not ours to overwrite. Nor is a store an
    // interrupted re-key set aside: a re-keyed copy is fsynced before it is switched in, so an
    // empty store in its place means the copy did not survive, and a new empty store would let
    // the set-aside one be tidied away.
    if let Some(retired) = rekey::set_aside(dir) {
        return Err(StoreError::Corrupt {
            what: format!("the store in {}", dir.display()),
            detail: format!(
                "it has no header, beside an older copy set aside by an interrupted upgrade ({}); \
                 nothing was changed or removed: keep both and ask for support",
                retired.display()
            ),
        });
    }
    for name in [TREE_CHUNKS, TREE_META, TREE_LOGS, TREE_LOG_HEADS] {
        let has_tree = db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == name.as_bytes());
        if has_tree && !db.open_tree(name).map_err(engine_error)?.is_empty() {
            return Err(StoreError::Corrupt {
                what: format!("the store header in {}", dir.display()),
                detail: "the store holds data but its header is missing".into(),
            });
        }
    }
    #[cfg(test)]
    let created = if rekey::keep_format1() {
        header::write_format1(db, key, options.kdf)?
    } else {
        NewHeader::new(key, options.kdf, 0)?.write(db)?
    };
    #[cfg(not(test))]
    let created = NewHeader::new(key, options.kdf, 0)?.write(db)?;
    // The header is the only way back into the store: make it durable at once, including the
    // directory entries that point at sled's new files.
    db.flush().map_err(engine_error)?;
    sync_dir_tree(dir)?;
    if !dir_existed {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::File::open(parent)?.sync_all()?;
        }
    }
    tracing::info!("created a new store");
    Ok(created)
}

/// Re-key the store if it is due (see `rekey::due`). Returns the database and keys to use, and
/// why the store still waits for its upgrade if the re-key failed. Only an error that leaves no
/// usable store is returned as an error.
fn upgrade_if_due(
    dir: &Path,
    db: sled::Db,
    keys: Unlocked,
    source: &KeySource,
    options: &SledOptions,
) -> Result<(sled::Db, Unlocked, Option<String>), StoreError> {
    if let Err(why) = rekey::tidy_retired(dir, &keys) {
        tracing::error!("{why}");
        return Ok((db, keys, Some(why)));
    }
    let Some(reason) = rekey::due(&keys, source, options) else {
        return Ok((db, keys, None));
    };
    if rekey::keep_format1() {
        return Ok((db, keys, None));
    }
    tracing::info!(%reason, "re-keying the store under a new data key");
    match rekey::rekey(dir, db, &keys, source, options) {
        Ok(new_keys) => match open_db(dir, options) {
            Ok(db) => {
                // Opened again from disk: only now may the old copy go.
                rekey::remove_retired(dir);
                Ok((db, new_keys, None))
            }
            Err(e) if rekey::roll_back(dir) => {
                let why = format!(
                    "this store's protection could not be upgraded yet ({reason}): the upgraded copy did not open ({e}); the store opened as before, and the upgraded copy was kept aside"
                );
                tracing::error!("{why}");
                Ok((open_db(dir, options)?, keys, Some(why)))
            }
            Err(e) => Err(e),
        },
        Err(failed) => {
            let why = format!(
                "this store's protection could not be upgraded yet ({reason}): {}; it opened as \
                 before, with everything in it, and the upgrade will be tried again the next time \
                 it is opened",
                failed.error
            );
            tracing::warn!("{why}");
            let db = match failed.old_db {
                Some(db) => db,
                None => {
                    // The old store was closed for the switch and has been put back: reopen it,
                    // but never create an empty store in its place.
                    rekey::recover(dir)?;
                    if !dir.exists() {
                        return Err(failed.error);
                    }
                    open_db(dir, options)?
                }
            };
            Ok((db, keys, Some(why)))
        }
    }
}

/// Make the store's directory 0700 and every file in it 0600. sled creates its files with the
/// process's umask (usually 0644): sealed as the values are, who may copy the files is the
/// owner's business only. The binaries also set a umask of 077, so files sled makes later are
/// born private; this fixes stores made before that, and callers that do not.
#[cfg(unix)]
pub(crate) fn restrict_to_owner(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(path: &Path) -> std::io::Result<()> {
        let meta = fs::symlink_metadata(path)?;
        if meta.is_dir() {
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
            for entry in fs::read_dir(path)? {
                walk(&entry?.path())?;
            }
        } else if meta.is_file() {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }
    walk(dir).map_err(StoreError::Io)
}

#[cfg(not(unix))]
pub(crate) fn restrict_to_owner(_: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// Open sled, waiting a moment if its files are locked. sled releases its lock from background
/// threads a few milliseconds *after* the last handle is dropped, so a store closed and reopened in
/// the same process (switching profiles, tests) would otherwise be refused at random. A store truly
/// open elsewhere is still reported as [`StoreError::Locked`], after about a second.
fn open_waiting_for_lock(dir: &Path, config: &sled::Config) -> Result<sled::Db, StoreError> {
    let mut pause = Duration::from_millis(5);
    let mut waited = Duration::ZERO;
    loop {
        remove_unfinished_snapshots(dir)?;
        match config.open().map_err(|e| open_error(dir, e)) {
            Err(StoreError::Locked { .. }) if waited < LOCK_PATIENCE => {
                std::thread::sleep(pause);
                waited += pause;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// How long [`open_waiting_for_lock`] waits for a lock to be released.
const LOCK_PATIENCE: Duration = Duration::from_millis(1000);

/// Take sled's lock on the store in `dir` ourselves: sled locks its `db` file with `flock` (through
/// fs2) on its own open file description, so a new description of the same file gets the lock only
/// once no sled instance, in this process or another, has the file open. `Ok(Some(file))` holds
/// the lock until `file` is dropped; `Ok(None)`: a sled instance holds it. No `db` file (no store
/// yet) is an error of kind `NotFound`.
#[cfg(unix)]
fn try_lock_db(dir: &Path) -> io::Result<Option<fs::File>> {
    use std::os::fd::AsRawFd;
    let file = fs::File::open(dir.join("db"))?;
    // SAFETY: flock on a descriptor owned here; it touches no memory.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(Some(file));
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(None)
    } else {
        Err(e)
    }
}

/// Remove the snapshot files sled started and never finished.
///
/// sled 0.34.7 writes a snapshot (on every open, among other times) as `snap.<lsn>.generating`,
/// fsyncs it and renames it to `snap.<lsn>`; but when it looks for the newest snapshot it skips
/// only names ending in `.in___motion`, not `.generating` (`Config::get_snapshot_files`). A crash
/// or power cut after the file is created and before it is renamed leaves one that sorts last, is
/// read as the newest snapshot and, empty or partial, fails every later open with "sled found
/// corruption" while every record is intact (found by `tests/tests/rekey_power_loss.rs`). Such a
/// file is unfinished by definition, and removing it is what sled's own rename would have made
/// irrelevant. Done only while holding sled's lock, so no running sled is writing it.
fn remove_unfinished_snapshots(dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        let _lock = match try_lock_db(dir) {
            Ok(Some(lock)) => lock,
            // Open elsewhere (sled will say so), or not a store yet: nothing of ours to tidy.
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut removed = false;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("snap.") && name.ends_with(".generating") {
                tracing::warn!(file = %name, "removing a sled snapshot left unfinished by a crash");
                fs::remove_file(entry.path())?;
                removed = true;
            }
        }
        if removed {
            fs::File::open(dir)?.sync_all()?;
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Map an error from opening sled, recognising its lock failure. sled reports it only as an
/// `io::Error` of kind `Other` whose message starts "could not acquire lock".
fn open_error(dir: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StoreError::Locked {
                path: dir.display().to_string(),
            }
        }
        other => engine_error(other),
    }
}

/// Map any other sled error, without exposing sled's types to callers.
fn engine_error(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) => StoreError::Io(io),
        sled::Error::Corruption { at, .. } => StoreError::Corrupt {
            what: "the store's files".into(),
            detail: format!("sled found corruption at {at:?}"),
        },
        other => StoreError::Engine(other.to_string()),
    }
}

fn transaction_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => engine_error(e),
    }
}

/// An attachment's key: its case, then its address (so a case's attachments share a prefix).
pub(super) fn blob_key(case: &CaseId, hash: &BlobHash) -> [u8; CASE_ID_LEN + 32] {
    let mut key = [0u8; CASE_ID_LEN + 32];
    key[..CASE_ID_LEN].copy_from_slice(case.0.as_bytes());
    key[CASE_ID_LEN..].copy_from_slice(&hash.0);
    key
}

pub(super) fn chunk_key(case: &CaseId, seq: ChunkSeq) -> [u8; CASE_ID_LEN + 8] {
    let mut key = [0u8; CASE_ID_LEN + 8];
    key[..CASE_ID_LEN].copy_from_slice(case.0.as_bytes());
    key[CASE_ID_LEN..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn seq_of(key: &[u8]) -> Result<ChunkSeq, StoreError> {
    key.get(CASE_ID_LEN..)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt {
            what: "a chunk key".into(),
            detail: format!("{} bytes instead of {}", key.len(), CASE_ID_LEN + 8),
        })
}

fn case_of(key: &[u8]) -> Result<[u8; CASE_ID_LEN], StoreError> {
    key.get(..CASE_ID_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt {
            what: "a chunk key".into(),
            detail: format!("{} bytes is too short", key.len()),
        })
}

/// The smallest 16-byte string greater than every key starting with `prefix` (big-endian + 1), or
/// `None` if `prefix` is all 0xff.
fn next_prefix(mut prefix: [u8; CASE_ID_LEN]) -> Option<[u8; CASE_ID_LEN]> {
    for byte in prefix.iter_mut().rev() {
        if *byte == u8::MAX {
            *byte = 0;
        } else {
            *byte += 1;
            return Some(prefix);
        }
    }
    None
}

pub(super) fn name_key(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key
}

pub(super) fn meta_key(ns: &str, key: &str) -> Vec<u8> {
    let mut k = name_key(ns);
    k.extend_from_slice(key.as_bytes());
    k
}

pub(super) fn log_key(log: &str, index: u64) -> Vec<u8> {
    let mut k = name_key(log);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn log_index_of(key: &[u8], prefix_len: usize) -> Result<u64, StoreError> {
    key.get(prefix_len..)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt {
            what: "a log key".into(),
            detail: "malformed index".into(),
        })
}

/// fsync every file under `dir` (sled's `db`, `conf`, snapshots, `blobs/`), then the directories,
/// so new files' entries are durable too.
fn sync_dir_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file_type = entry.file_type()?;
        let path = entry.path();
        if file_type.is_dir() {
            sync_dir_tree(&path)?;
        } else if file_type.is_file() {
            // On Linux fsync through a read-only descriptor flushes the file all the same.
            match fs::File::open(&path) {
                Ok(file) => file.sync_all()?,
                // sled replaced the file (a snapshot, a blob) while we walked: its successor is
                // synced by this walk or by sled itself.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    fs::File::open(dir)?.sync_all()
}

impl Store for SledStore {
    fn append_chunk(&self, case: &CaseId, chunk: &[u8]) -> Result<ChunkSeq, StoreError> {
        let _case = self.lock_case(case);
        let seq = self.next_seq()?;
        // sled's id generator survives crashes by skipping ahead; check rather than trust it, since
        // a number going backwards would silently reorder a case's log. (Valid only under the case
        // lock: concurrent appends would otherwise race past each other.)
        if let Some(last) = self.last_seq(case)? {
            if seq <= last {
                return Err(StoreError::Engine(format!(
                    "the sequence counter went backwards ({seq} after {last}); the store may be damaged"
                )));
            }
        }
        let key = chunk_key(case, seq);
        let sealed = self.seal(TAG_CHUNK, &key, chunk);
        self.chunks
            .compare_and_swap(key, None::<&[u8]>, Some(sealed))
            .map_err(engine_error)?
            .map_err(|_| {
                StoreError::Engine(format!(
                    "sequence number {seq} was handed out twice; the store may be damaged"
                ))
            })?;
        Ok(seq)
    }

    fn load_chunks(&self, case: &CaseId) -> Result<Option<ChunkLog>, StoreError> {
        let mut chunks = Vec::new();
        for item in self.chunks.scan_prefix(case.0.as_bytes()) {
            let (key, sealed) = item.map_err(engine_error)?;
            let seq = seq_of(&key)?;
            let chunk = self.unseal(TAG_CHUNK, &key, &sealed, || {
                format!("chunk {seq} of case {case}")
            })?;
            chunks.push((seq, chunk));
        }
        Ok((!chunks.is_empty()).then_some(chunks))
    }

    fn compact_case(
        &self,
        case: &CaseId,
        snapshot: &[u8],
        through: ChunkSeq,
    ) -> Result<(), StoreError> {
        let _case = self.lock_case(case);
        let Some(last) = self.last_seq(case)? else {
            return Err(StoreError::InvalidRequest(format!(
                "cannot compact case {case}: the store holds no chunks for it"
            )));
        };
        let snapshot_key = chunk_key(case, through.min(last));
        // One batch on one tree is atomic in sled: after a crash either every replaced chunk is
        // still there, or the snapshot is and they are gone.
        let mut batch = sled::Batch::default();
        for key in self.chunk_keys_through(case, through)? {
            batch.remove(key);
        }
        // Inserted after the removals, so it wins if it reuses a removed key.
        batch.insert(&snapshot_key, self.seal(TAG_CHUNK, &snapshot_key, snapshot));
        self.chunks.apply_batch(batch).map_err(engine_error)?;
        tracing::debug!(%case, through, "compacted case");
        Ok(())
    }

    fn remove_case(&self, case: &CaseId) -> Result<(), StoreError> {
        let _case = self.lock_case(case);
        // The attachments first: a crash after this leaves the case listed, and removing it
        // again finishes the work (the other order would leave bytes no listed case names).
        let mut blobs = sled::Batch::default();
        for key in self.blobs.scan_prefix(case.0.as_bytes()).keys() {
            blobs.remove(key.map_err(engine_error)?);
        }
        self.blobs.apply_batch(blobs).map_err(engine_error)?;
        let mut batch = sled::Batch::default();
        for key in self.chunk_keys_through(case, ChunkSeq::MAX)? {
            batch.remove(key);
        }
        self.chunks.apply_batch(batch).map_err(engine_error)?;
        tracing::info!(%case, "removed the local copy of a case");
        Ok(())
    }

    fn list_cases(&self) -> Result<Vec<CaseId>, StoreError> {
        // Skip from case to case instead of reading every chunk: after finding one case, jump to
        // the first key past its prefix.
        let mut cases = Vec::new();
        let mut from = [0u8; CASE_ID_LEN];
        loop {
            let Some(item) = self.chunks.range(from..).keys().next() else {
                break;
            };
            let id = case_of(&item.map_err(engine_error)?)?;
            cases.push(CaseId(uuid::Uuid::from_bytes(id)));
            match next_prefix(id) {
                Some(next) => from = next,
                None => break,
            }
        }
        Ok(cases)
    }

    fn get_meta(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_name("namespace", ns)?;
        let k = meta_key(ns, key);
        match self.meta.get(&k).map_err(engine_error)? {
            None => Ok(None),
            Some(sealed) => self
                .unseal(TAG_META, &k, &sealed, || format!("meta value {ns}/{key}"))
                .map(Some),
        }
    }

    fn put_meta(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        check_name("namespace", ns)?;
        let k = meta_key(ns, key);
        let sealed = self.seal(TAG_META, &k, value);
        self.meta.insert(k, sealed).map_err(engine_error)?;
        Ok(())
    }

    fn delete_meta(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        check_name("namespace", ns)?;
        self.meta.remove(meta_key(ns, key)).map_err(engine_error)?;
        Ok(())
    }

    fn scan_meta(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        check_name("namespace", ns)?;
        let prefix = name_key(ns);
        let mut out = Vec::new();
        for item in self.meta.scan_prefix(&prefix) {
            let (k, sealed) = item.map_err(engine_error)?;
            let key =
                String::from_utf8(k[prefix.len()..].to_vec()).map_err(|_| StoreError::Corrupt {
                    what: format!("a meta key in namespace {ns}"),
                    detail: "not valid UTF-8".into(),
                })?;
            let value = self.unseal(TAG_META, &k, &sealed, || format!("meta value {ns}/{key}"))?;
            out.push((key, value));
        }
        Ok(out)
    }

    fn append_log(&self, log: &str, entry: &[u8]) -> Result<u64, StoreError> {
        check_name("log", log)?;
        // A transaction across the entries and the heads: the entry and its log's new head are
        // written together or not at all, and concurrent appends get distinct indices (sled
        // retries a conflicting transaction).
        (&self.logs, &self.log_heads)
            .transaction(|(logs, heads)| {
                let index = match heads.get(log.as_bytes())? {
                    None => 0,
                    Some(head) => <[u8; 8]>::try_from(head.as_ref())
                        .map(u64::from_be_bytes)
                        .map_err(|_| {
                            ConflictableTransactionError::Abort(StoreError::Corrupt {
                                what: format!("the head of log {log}"),
                                detail: "malformed index".into(),
                            })
                        })?,
                };
                let key = log_key(log, index);
                if logs.get(key.as_slice())?.is_some() {
                    // A head behind its entries would overwrite history: refuse instead.
                    return Err(ConflictableTransactionError::Abort(StoreError::Corrupt {
                        what: format!("the head of log {log}"),
                        detail: format!("entry {index} already exists"),
                    }));
                }
                logs.insert(key.as_slice(), self.seal(TAG_LOG, &key, entry))?;
                heads.insert(log.as_bytes(), &(index + 1).to_be_bytes())?;
                Ok(index)
            })
            .map_err(transaction_error)
    }

    fn read_log(&self, log: &str, from: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        check_name("log", log)?;
        let prefix_len = log.len() + 1;
        let mut out = Vec::new();
        for item in self.logs.range(log_key(log, from)..=log_key(log, u64::MAX)) {
            let (k, sealed) = item.map_err(engine_error)?;
            let index = log_index_of(&k, prefix_len)?;
            let entry = self.unseal(TAG_LOG, &k, &sealed, || {
                format!("entry {index} of log {log}")
            })?;
            out.push((index, entry));
        }
        Ok(out)
    }

    fn trim_log(&self, log: &str, through: u64) -> Result<(), StoreError> {
        check_name("log", log)?;
        let mut batch = sled::Batch::default();
        for key in self
            .logs
            .range(log_key(log, 0)..=log_key(log, through))
            .keys()
        {
            batch.remove(key.map_err(engine_error)?);
        }
        self.logs.apply_batch(batch).map_err(engine_error)?;
        Ok(())
    }

    fn put_blob(&self, case: &CaseId, hash: &BlobHash, content: &[u8]) -> Result<(), StoreError> {
        let key = blob_key(case, hash);
        if self.blobs.contains_key(key).map_err(engine_error)? {
            return Ok(());
        }
        let sealed = self.seal(TAG_BLOB, &key, content);
        self.blobs.insert(key, sealed).map_err(engine_error)?;
        Ok(())
    }

    fn get_blob(&self, case: &CaseId, hash: &BlobHash) -> Result<Option<Vec<u8>>, StoreError> {
        let key = blob_key(case, hash);
        match self.blobs.get(key).map_err(engine_error)? {
            None => Ok(None),
            Some(sealed) => self
                .unseal(TAG_BLOB, &key, &sealed, || {
                    format!("attachment {hash} of case {case}")
                })
                .map(Some),
        }
    }

    fn has_blob(&self, case: &CaseId, hash: &BlobHash) -> Result<bool, StoreError> {
        self.blobs
            .contains_key(blob_key(case, hash))
            .map_err(engine_error)
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Group commit: take a ticket, then wait for the flush lock. If a flush that began after our
        // ticket was taken has completed meanwhile, our writes are already durable. Every writer
        // returned before taking its ticket, so a flush that reads the ticket counter first covers
        // every ticket up to what it read.
        let ticket = self.flush_tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut flushed_through = self
            .flushed_through
            .lock()
            // The guarded number is only written after a successful flush: still accurate.
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *flushed_through >= ticket {
            return Ok(());
        }
        let covering = self.flush_tickets.load(Ordering::SeqCst);
        // The blocking flush, never `flush_async` (sled #1308: concurrent async flushes deadlock).
        self.db.flush().map_err(engine_error)?;
        // sled's flush uses sync_file_range on Linux, which leaves data in the disk's write
        // cache (sled #1452): fsync for real before anyone is told "saved".
        sync_dir_tree(&self.dir)?;
        *flushed_through = covering;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
