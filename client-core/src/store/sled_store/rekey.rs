//! Re-keying a store: every value re-sealed under a new random data key, in a new sled database
//! built beside the old one, then switched in by renaming.
//!
//! Why: a store made before key wrapping (format 1) seals its values under
//! `argon2id(passphrase)` with the parameters of its day. Wrapping that same key under stronger
//! parameters would not help: whoever copied the store earlier can still guess the passphrase at
//! the old cost and read everything, including what is written later. So the upgrade draws a *new*
//! data key, re-seals every value under it, wraps it under today's parameters, and removes the old
//! database. The same machinery changes a passphrase (a new data key, so a leaked old passphrase
//! and an older copy of the store open nothing written since) and lifts a format-2 store whose
//! parameters fall behind the ones asked for.
//!
//! Why beside and not in place: sled has no transaction across trees that could swap every value
//! at once, and an in-place rewrite would leave old ciphertext in sled's log segments until they
//! are reclaimed. Beside, the old database is never written to, and a crash at any instant leaves
//! one of these states, each of which [`recover`] turns back into a single whole store:
//!
//! | on disk after a crash                      | what the next open does                     |
//! |--------------------------------------------|---------------------------------------------|
//! | `store`, maybe a partial `store.rekeying`  | removes `store.rekeying`; `store` is the old store, the upgrade is tried again |
//! | `store.retired` and `store.rekeying`, no `store` | renames `store.retired` back to `store` (rolls back), removes `store.rekeying` |
//! | `store` (new) and `store.retired`          | `store` is whole (it was fsynced before the switch); removes `store.retired` |
//!
//! `store.rekeying` is only ever renamed to `store` after it was flushed, fsynced, closed and its
//! directory fsynced; each rename is followed by an fsync of the parent directory, so a power cut
//! cannot reorder the two renames. The old store is put back rather than the new one rolled
//! forward in the middle state: the old store is untouched and certainly whole, and the upgrade
//! simply runs again.
//!
//! A failure that is not a crash (a full disk above all) undoes the same way at once, and the store
//! opens in its old form: [`super::SledStore::upgrade_pending`] says why, and the next open tries
//! again.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::header::{NewHeader, Unlocked};
#[cfg(unix)]
use super::try_lock_db;
use super::{
    engine_error, open_db, restrict_to_owner, seq_of, sync_dir_tree, value_aad, SledOptions,
    FORMAT_DIRECT, LOCK_PATIENCE, TAG_BLOB, TAG_CHUNK, TAG_LOG, TAG_META, TREE_BLOBS, TREE_CHUNKS,
    TREE_HEADER, TREE_LOGS, TREE_LOG_HEADS, TREE_META,
};
use crate::store::{KeySource, StoreError};

/// The steps of a re-key, in order. Tests stop a re-key after any of them (see `seam`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The new, empty sled database created beside the old one.
    Create,
    /// Every value copied and re-sealed into it (not yet flushed).
    Copy,
    /// Its header written (with the wrapped key) and sled-flushed.
    Header,
    /// It is closed, and every file and directory of it fsynced.
    Sync,
    /// The old store renamed aside (`store` → `store.retired`).
    Retire,
    /// The new store renamed into place (`store.rekeying` → `store`).
    Switch,
    /// The old store removed.
    Remove,
}

impl Step {
    /// Every step, in order.
    #[cfg(test)]
    pub(crate) const ALL: [Step; 7] = [
        Step::Create,
        Step::Copy,
        Step::Header,
        Step::Sync,
        Step::Retire,
        Step::Switch,
        Step::Remove,
    ];
}

/// The directories a re-key of `dir` uses, side by side in `dir`'s parent.
struct Paths {
    dir: PathBuf,
    /// The new store while it is built.
    building: PathBuf,
    /// The old store between the two renames, and until it is removed.
    retired: PathBuf,
}

impl Paths {
    /// `None` for a path without a last component (`/`), beside which nothing can be built.
    fn of(dir: &Path) -> Option<Paths> {
        let name = dir.file_name()?.to_string_lossy().into_owned();
        Some(Paths {
            dir: dir.to_path_buf(),
            building: dir.with_file_name(format!("{name}.rekeying")),
            retired: dir.with_file_name(format!("{name}.retired")),
        })
    }
}

/// Whether a store is at `dir`, or was set aside there by a re-key interrupted between its two
/// renames (the next open puts it back).
pub(super) fn store_exists(dir: &Path) -> bool {
    dir.exists() || Paths::of(dir).is_some_and(|p| p.retired.exists())
}

/// The old store a re-key set aside beside `dir`, if there is one.
pub(super) fn set_aside(dir: &Path) -> Option<PathBuf> {
    Paths::of(dir)
        .map(|p| p.retired)
        .filter(|retired| retired.exists())
}

/// Put a store interrupted in the middle of a re-key back into one piece, before anything opens
/// it (see the table at the top). Needs no key: it only renames and removes directories, and never
/// removes a store that could be the only copy.
pub(super) fn recover(dir: &Path) -> Result<(), StoreError> {
    let Some(paths) = Paths::of(dir) else {
        return Ok(());
    };
    if !paths.dir.exists() && paths.retired.exists() {
        tracing::warn!(
            "a re-key of this store was interrupted between its two renames; putting the old store back"
        );
        fs::rename(&paths.retired, &paths.dir)?;
        sync_parent(&paths.dir)?;
    }
    if paths.building.exists() {
        tracing::info!("removing the unfinished copy left by an interrupted re-key");
        remove_dir(&paths.building)?;
    }
    Ok(())
}

/// Once `dir` holds a re-keyed store (format 2), the old store set aside by the re-key can go; if
/// the removal was interrupted, it is finished here. A format-1 store beside a `retired` one is not
/// something a re-key leaves (an older Polyphony may have made a new store while the old one was
/// set aside), so nothing is removed then, and the store is not upgraded until someone looks.
pub(super) fn tidy_retired(dir: &Path, unlocked: &Unlocked) -> Result<(), String> {
    let Some(paths) = Paths::of(dir) else {
        return Ok(());
    };
    if !paths.retired.exists() {
        return Ok(());
    }
    if unlocked.format == FORMAT_DIRECT {
        return Err(format!(
            "{} holds an older store left by an interrupted upgrade, beside a store in the old \
             format: neither is removed or upgraded; keep both and ask for support",
            paths.retired.display()
        ));
    }
    match remove_dir(&paths.retired) {
        Ok(()) => {
            tracing::info!("removed the old store a re-key had set aside");
            Ok(())
        }
        Err(e) => {
            // Not fatal: the store opens; the old copy goes at the next open.
            tracing::warn!(error = %e, path = %paths.retired.display(), "could not remove the old store set aside by a re-key; will try again at the next open");
            Ok(())
        }
    }
}

/// Why a store should be re-keyed when opened with `source`, if it should.
pub(super) fn due(
    unlocked: &Unlocked,
    source: &KeySource,
    options: &SledOptions,
) -> Option<String> {
    if !matches!(source, KeySource::Passphrase(_)) {
        // A key file or raw key is full strength: nothing to gain from re-sealing (the borough
        // server's store can be large, and stays in the format it was made in).
        return None;
    }
    let params = unlocked.kdf.params()?;
    if unlocked.format == FORMAT_DIRECT {
        Some(format!(
            "the store predates key wrapping (its passphrase derives the data key directly, \
             argon2id {params:?})"
        ))
    } else if params.is_weaker_than(&options.kdf) {
        Some(format!(
            "the store's passphrase is stretched with {params:?}, weaker than {:?}",
            options.kdf
        ))
    } else {
        None
    }
}

/// A re-key that did not happen. `old_db` is the old store still open when the failure came before
/// it had to be closed; otherwise the old store is back in place, closed.
pub(super) struct Failed {
    pub(super) old_db: Option<sled::Db>,
    pub(super) error: StoreError,
}

/// Re-key the store at `dir`, open as `old_db` and unlocked as `old`, under `target`: build the new
/// store beside it, switch it in, remove the old one. On success the new store is at `dir`,
/// closed, and unlocks as the returned [`Unlocked`] (no need to derive its key again).
pub(super) fn rekey(
    dir: &Path,
    old_db: sled::Db,
    old: &Unlocked,
    target: &KeySource,
    options: &SledOptions,
) -> Result<Unlocked, Failed> {
    let Some(paths) = Paths::of(dir) else {
        return Err(Failed {
            old_db: Some(old_db),
            error: StoreError::InvalidRequest(format!(
                "cannot re-key a store at {}: it has no name to build a copy beside",
                dir.display()
            )),
        });
    };
    let started = Instant::now();
    let new = match build(&paths, &old_db, old, target, options) {
        Ok(new) => new,
        Err(error) => {
            return Err(Failed {
                old_db: Some(old_db),
                error,
            })
        }
    };
    switch(&paths, old_db).map_err(|error| Failed {
        old_db: None,
        error,
    })?;
    tracing::info!(elapsed = ?started.elapsed(), "re-keyed the store: new data key, old store set aside until the new one opens");
    Ok(new)
}

/// Build the re-keyed copy in `paths.building`, durable and closed. On any error the partial copy
/// is removed; the old store is never written to.
fn build(
    paths: &Paths,
    old_db: &sled::Db,
    old: &Unlocked,
    target: &KeySource,
    options: &SledOptions,
) -> Result<Unlocked, StoreError> {
    let result = (|| {
        seam::fail_at(Step::Create)?;
        if paths.building.exists() {
            remove_dir(&paths.building)?;
        }
        let new_db = open_db(&paths.building, options)?;
        restrict_to_owner(&paths.building)?;
        seam::crash_after(Step::Create);
        let filled = fill(&new_db, old_db, old, target, options);
        close_db(new_db, &paths.building)?;
        let new = filled?;
        seam::fail_at(Step::Sync)?;
        // sled's flush stops at sync_file_range (no fsync), and closing wrote more: fsync
        // every file and directory of the copy, and its entry in the parent, before anything
        // points at it.
        sync_dir_tree(&paths.building)?;
        sync_parent(&paths.building)?;
        seam::crash_after(Step::Sync);
        Ok(new)
    })();
    if result.is_err() && paths.building.exists() {
        if let Err(e) = remove_dir(&paths.building) {
            tracing::warn!(error = %e, "could not remove the unfinished copy; the next open will");
        }
    }
    result
}

/// Copy and re-seal every value, check the copy, then write the header. The header goes last, so
/// a copy without one was never finished (nothing relies on that: an unfinished copy is removed
/// whatever it holds).
fn fill(
    new_db: &sled::Db,
    old_db: &sled::Db,
    old: &Unlocked,
    target: &KeySource,
    options: &SledOptions,
) -> Result<Unlocked, StoreError> {
    let header = NewHeader::new(target, options.kdf, next_seq(old_db, old)?)?;
    seam::fail_at(Step::Copy)?;
    let copied = copy_values(old_db, old, new_db, header.unlocked())?;
    check_copy(old_db, old, new_db, header.unlocked())?;
    seam::crash_after(Step::Copy);
    seam::fail_at(Step::Header)?;
    let new = header.write(new_db)?;
    new_db.flush().map_err(engine_error)?;
    seam::crash_after(Step::Header);
    tracing::info!(
        values = copied,
        "re-sealed every value under a new data key"
    );
    Ok(new)
}

/// The trees a store keeps its values in, each with the tag of its associated data (`None`: the
/// log heads, which are counters, not sealed).
const VALUE_TREES: [(&str, Option<u8>); 5] = [
    (TREE_CHUNKS, Some(TAG_CHUNK)),
    (TREE_BLOBS, Some(TAG_BLOB)),
    (TREE_META, Some(TAG_META)),
    (TREE_LOGS, Some(TAG_LOG)),
    (TREE_LOG_HEADS, None),
];

fn copy_values(
    old_db: &sled::Db,
    old: &Unlocked,
    new_db: &sled::Db,
    new: &Unlocked,
) -> Result<usize, StoreError> {
    refuse_unknown_trees(old_db)?;
    let mut copied = 0;
    for (name, tag) in VALUE_TREES {
        let from = old_db.open_tree(name).map_err(engine_error)?;
        let to = new_db.open_tree(name).map_err(engine_error)?;
        for item in from.iter() {
            let (key, value) = item.map_err(engine_error)?;
            let value = match tag {
                None => value.to_vec(),
                Some(tag) => {
                    let plain = open_value(old, name, tag, &key, &value)?;
                    new.data_key
                        .seal(&value_aad(&new.store_id, tag, &key), &plain)
                }
            };
            to.insert(key, value).map_err(engine_error)?;
            copied += 1;
        }
    }
    Ok(copied)
}

/// Read the copy back and compare it with the old store, value by value, before it replaces
/// anything: a bug in the copy must cost an upgrade, never a record.
fn check_copy(
    old_db: &sled::Db,
    old: &Unlocked,
    new_db: &sled::Db,
    new: &Unlocked,
) -> Result<(), StoreError> {
    for (name, tag) in VALUE_TREES {
        let from = old_db.open_tree(name).map_err(engine_error)?;
        let to = new_db.open_tree(name).map_err(engine_error)?;
        let mut theirs = to.iter();
        for item in from.iter() {
            let (key, value) = item.map_err(engine_error)?;
            let differs = |detail: &str| {
                StoreError::Engine(format!(
                    "the re-keyed copy of {name} differs from the store ({detail}); the store was \
                     not changed"
                ))
            };
            let (new_key, new_value) = theirs
                .next()
                .ok_or_else(|| differs("a value is missing"))?
                .map_err(engine_error)?;
            if new_key != key {
                return Err(differs("keys differ"));
            }
            let same = match tag {
                None => new_value == value,
                Some(tag) => {
                    open_value(old, name, tag, &key, &value)?
                        == open_value(new, name, tag, &key, &new_value)?
                }
            };
            if !same {
                return Err(differs("a value differs"));
            }
        }
        if theirs.next().is_some() {
            return Err(StoreError::Engine(format!(
                "the re-keyed copy of {name} holds more than the store; the store was not changed"
            )));
        }
    }
    Ok(())
}

fn open_value(
    keys: &Unlocked,
    tree: &str,
    tag: u8,
    key: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, StoreError> {
    keys.data_key
        .open(&value_aad(&keys.store_id, tag, key), sealed)
        .map_err(|e| match e {
            // A value that does not open cannot be carried over: stop, and keep the old store
            // (where it stays exactly as it was) rather than leave it behind.
            StoreError::Corrupt { detail, .. } => StoreError::Corrupt {
                what: format!(
                    "a value in {tree} (key {}), while re-keying",
                    hex::encode(key)
                ),
                detail,
            },
            other => other,
        })
}

/// A tree this version does not know would not be copied: refuse to re-key rather than drop it.
fn refuse_unknown_trees(db: &sled::Db) -> Result<(), StoreError> {
    for name in db.tree_names() {
        let known = name.as_ref() == TREE_HEADER.as_bytes()
            || name.as_ref() == b"__sled__default"
            || VALUE_TREES
                .iter()
                .any(|(t, _)| t.as_bytes() == name.as_ref());
        if !known && !db.open_tree(&name).map_err(engine_error)?.is_empty() {
            return Err(StoreError::Engine(format!(
                "the store holds data in a tree this version does not know ({}); it was not re-keyed",
                String::from_utf8_lossy(&name)
            )));
        }
    }
    Ok(())
}

/// The first sequence number the new store may hand out: past every number the old one handed
/// out, including those of chunks since removed (its generator is asked, which also retires the
/// number it returns), and past every chunk it holds (in case a generator was ever behind).
fn next_seq(old_db: &sled::Db, old: &Unlocked) -> Result<u64, StoreError> {
    let overflow = || StoreError::Engine("sequence numbers are exhausted".into());
    let generated = old
        .seq_base
        .checked_add(old_db.generate_id().map_err(engine_error)?)
        .ok_or_else(overflow)?;
    let mut next = generated.checked_add(1).ok_or_else(overflow)?;
    for key in old_db
        .open_tree(TREE_CHUNKS)
        .map_err(engine_error)?
        .iter()
        .keys()
    {
        let seq = seq_of(&key.map_err(engine_error)?)?;
        next = next.max(seq.checked_add(1).ok_or_else(overflow)?);
    }
    Ok(next)
}

/// Replace the old store by the built copy. On an error before the copy is in place, the old
/// store is put back and the copy removed; after it, the store is re-keyed whatever follows.
fn switch(paths: &Paths, old_db: sled::Db) -> Result<(), StoreError> {
    // sled writes snapshots by path from background threads: the old store must be fully closed
    // before its directory is renamed, or a late snapshot could land in the new store.
    close_db(old_db, &paths.dir).inspect_err(|_| discard_copy(paths))?;

    seam::fail_at(Step::Retire).inspect_err(|_| discard_copy(paths))?;
    fs::rename(&paths.dir, &paths.retired).inspect_err(|_| discard_copy(paths))?;
    sync_parent(&paths.dir).inspect_err(|_| put_back(paths))?;
    seam::crash_after(Step::Retire);

    seam::fail_at(Step::Switch).inspect_err(|_| put_back(paths))?;
    fs::rename(&paths.building, &paths.dir).inspect_err(|_| put_back(paths))?;
    // From here the new store is in place. If this fsync fails, a power cut may bring back the
    // state before the rename, which the next open rolls back: safe either way.
    if let Err(e) = sync_parent(&paths.dir) {
        tracing::warn!(error = %e, "could not fsync the directory after switching the re-keyed store in");
    }
    seam::crash_after(Step::Switch);
    Ok(())
}

/// After a re-key: the new store at `dir` has been opened again from disk, so the old one set
/// aside can go. Until then it stays: if the new store had not opened, the old one would be the
/// only copy (see [`roll_back`]). A failed removal is finished by the next open.
pub(super) fn remove_retired(dir: &Path) {
    let Some(paths) = Paths::of(dir) else {
        return;
    };
    let removed = seam::fail_at(Step::Remove)
        .and_then(|()| remove_dir(&paths.retired).map_err(StoreError::from));
    if let Err(e) = removed {
        tracing::warn!(error = %e, path = %paths.retired.display(), "the old store could not be removed after re-keying; the next open removes it");
    }
    seam::crash_after(Step::Remove);
}

/// The re-keyed store at `dir` did not open again: set it aside (never delete it) and put the old
/// store back in its place. Returns false if the old store could not be put back.
pub(super) fn roll_back(dir: &Path) -> bool {
    let Some(paths) = Paths::of(dir) else {
        return false;
    };
    if !paths.retired.exists() {
        return false;
    }
    let aside = paths.dir.with_extension("rekey-failed");
    let moved = fs::rename(&paths.dir, &aside)
        .and_then(|()| fs::rename(&paths.retired, &paths.dir))
        .and_then(|()| sync_parent(&paths.dir));
    match moved {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "could not put the old store back after the re-keyed one failed to open");
            false
        }
    }
}

/// Undo after the old store was renamed aside: put it back, drop the copy.
fn put_back(paths: &Paths) {
    if !paths.dir.exists() {
        if let Err(e) =
            fs::rename(&paths.retired, &paths.dir).and_then(|()| sync_parent(&paths.dir))
        {
            // The next open's `recover` puts it back; until then the store looks missing.
            tracing::error!(error = %e, "could not put the old store back after a failed re-key; the next open will");
            return;
        }
    }
    discard_copy(paths);
}

fn discard_copy(paths: &Paths) {
    if let Err(e) = remove_dir(&paths.building) {
        tracing::warn!(error = %e, "could not remove the re-keyed copy that was not used; the next open will");
    }
}

/// Drop a sled database and wait until it has really let go of its files: sled's background
/// threads hold them (and its lock) for a moment after the last handle is dropped.
fn close_db(db: sled::Db, dir: &Path) -> Result<(), StoreError> {
    drop(db);
    wait_until_unlocked(dir)
}

/// Wait until no sled instance holds the lock on `dir`'s database file (see `try_lock_db`).
#[cfg(unix)]
fn wait_until_unlocked(dir: &Path) -> Result<(), StoreError> {
    let deadline = Instant::now() + LOCK_PATIENCE * 5;
    loop {
        match try_lock_db(dir) {
            // Dropping the file releases the lock at once.
            Ok(Some(_)) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
            Ok(None) if Instant::now() > deadline => {
                return Err(StoreError::Locked {
                    path: dir.display().to_string(),
                })
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Elsewhere, give sled's threads a moment; a rename that still finds the files open fails, and
/// the re-key is undone and retried at the next open.
#[cfg(not(unix))]
fn wait_until_unlocked(_dir: &Path) -> Result<(), StoreError> {
    std::thread::sleep(LOCK_PATIENCE / 5);
    Ok(())
}

fn remove_dir(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => sync_parent(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// fsync the directory holding `path`, so a rename or removal in it survives a power cut.
fn sync_parent(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs::File::open(parent)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Where tests stop or break a re-key. Compiled out of every build but this crate's tests.
#[cfg(test)]
pub(crate) mod seam {
    use std::cell::Cell;

    use super::Step;
    use crate::store::StoreError;

    /// What happens at the chosen step.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Fault {
        /// The step fails as on a full disk (ENOSPC), instead of running.
        DiskFull(Step),
        /// The process aborts right after the step (no destructor runs, no buffer is flushed):
        /// a crash. Only for a child process.
        AbortAfter(Step),
        /// Stores are made in format 1 and never upgraded, as before key wrapping: tests use it to
        /// make old stores to upgrade.
        KeepFormat1,
    }

    thread_local! {
        static FAULT: Cell<Option<Fault>> = const { Cell::new(None) };
    }

    /// Run `f` with `fault` in force on this thread.
    pub(crate) fn with<R>(fault: Fault, f: impl FnOnce() -> R) -> R {
        struct Reset(Option<Fault>);
        impl Drop for Reset {
            fn drop(&mut self) {
                FAULT.with(|c| c.set(self.0));
            }
        }
        let _reset = Reset(FAULT.with(|c| c.replace(Some(fault))));
        f()
    }

    pub(crate) fn keep_format1() -> bool {
        FAULT.with(|c| c.get()) == Some(Fault::KeepFormat1)
    }

    pub(super) fn fail_at(step: Step) -> Result<(), StoreError> {
        if FAULT.with(|c| c.get()) == Some(Fault::DiskFull(step)) {
            return Err(StoreError::Io(std::io::Error::from_raw_os_error(
                libc::ENOSPC,
            )));
        }
        Ok(())
    }

    pub(super) fn crash_after(step: Step) {
        if FAULT.with(|c| c.get()) == Some(Fault::AbortAfter(step)) {
            eprintln!("re-key seam: aborting after step {step:?}");
            std::process::abort();
        }
    }
}

#[cfg(not(test))]
mod seam {
    use super::Step;
    use crate::store::StoreError;

    pub(crate) fn keep_format1() -> bool {
        false
    }

    #[inline(always)]
    pub(super) fn fail_at(_: Step) -> Result<(), StoreError> {
        Ok(())
    }

    #[inline(always)]
    pub(super) fn crash_after(_: Step) {}
}

pub(super) use seam::keep_format1;

#[cfg(test)]
mod tests;
