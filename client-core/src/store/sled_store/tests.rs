//! Tests of the sled engine beyond the shared conformance suite: what is on disk, keys, tampering,
//! locking and crashes. Kept in their own file because the crash and lock tests need child processes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use tempfile::TempDir;

use super::*;
use crate::store::crypto::SALT_LEN;
use crate::store::SealKey;

pub(super) fn fast() -> SledOptions {
    SledOptions {
        kdf: KdfParams::INSECURE_FAST_FOR_TESTS,
        ..SledOptions::default()
    }
}

pub(super) fn passphrase(p: &str) -> KeySource {
    KeySource::Passphrase(p.to_owned())
}

/// A new passphrase store in a fresh temporary directory (cheap KDF: these tests create many).
fn fresh() -> (TempDir, SledStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open_with(&dir.path().join("store"), passphrase("pw"), fast())
        .expect("create store");
    (dir, store)
}

super::super::conformance::conformance_tests!(fresh());

pub(super) const SECRET: &str = "Maria said the garden helps her sleep";

/// Every file under `dir`, with its bytes.
pub(super) fn read_all_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.clone(), fs::read(&path).unwrap());
            }
        }
    }
    files
}

pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn raw_files_hold_no_record_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let case = CaseId::random();
    {
        let store = SledStore::open_with(&path, passphrase("pw"), fast()).unwrap();
        store.append_chunk(&case, SECRET.as_bytes()).unwrap();
        // Large enough that sled keeps it as a separate blob file.
        store
            .append_chunk(&case, SECRET.repeat(5_000).as_bytes())
            .unwrap();
        store.put_meta("sync", "note", SECRET.as_bytes()).unwrap();
        store.append_log("audit", SECRET.as_bytes()).unwrap();
        store.flush().unwrap();
    }
    let files = read_all_files(&path);
    assert!(
        files.keys().any(|p| p.ends_with("db")),
        "sled's files are there"
    );
    assert!(
        files
            .keys()
            .any(|p| p.parent().is_some_and(|d| d.ends_with("blobs"))),
        "the big chunk went to a blob file, which must be checked too"
    );
    for needle in [SECRET, "Maria said", "garden helps", "her sleep", "Maria"] {
        for (file, bytes) in &files {
            assert!(
                !contains(bytes, needle.as_bytes()),
                "{needle:?} found in clear in {}",
                file.display()
            );
        }
    }
    // The search itself works: the same text in a plain file is found.
    assert!(contains(
        format!("xx{SECRET}yy").as_bytes(),
        "garden helps".as_bytes()
    ));
    // And the store still reads it back.
    let store = SledStore::open(&path, passphrase("pw")).unwrap();
    assert_eq!(
        store.load_chunks(&case).unwrap().unwrap()[0].1,
        SECRET.as_bytes()
    );
}

#[test]
fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let case = CaseId::random();
    let seq = {
        let store = SledStore::open_with(&path, passphrase("pw"), fast()).unwrap();
        let seq = store.append_chunk(&case, b"chunk").unwrap();
        store.put_meta("sync", "k", b"v").unwrap();
        store.append_log("outbox", b"e0").unwrap();
        store.flush().unwrap();
        seq
    };
    let store = SledStore::open(&path, passphrase("pw")).unwrap();
    assert_eq!(
        store.load_chunks(&case).unwrap().unwrap(),
        vec![(seq, b"chunk".to_vec())]
    );
    assert_eq!(store.get_meta("sync", "k").unwrap().unwrap(), b"v");
    assert_eq!(store.append_log("outbox", b"e1").unwrap(), 1);
    assert!(store.append_chunk(&case, b"next").unwrap() > seq);
}

#[test]
fn wrong_passphrase_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let case = CaseId::random();
    {
        // The real parameters, so the production path is exercised at least once.
        let store = SledStore::open(&path, passphrase("correct horse")).unwrap();
        store.append_chunk(&case, SECRET.as_bytes()).unwrap();
        store.put_meta("sync", "k", b"v").unwrap();
        store.flush().unwrap();
    }
    // sled does its own housekeeping when it opens (recovery, a snapshot file), so compare what is
    // stored rather than the files' bytes: every tree, key and value must be unchanged.
    let before = dump_trees(&path);
    for wrong in [
        passphrase("correct horsf"),
        passphrase(""),
        KeySource::Raw(SealKey::generate()),
    ] {
        assert!(matches!(
            SledStore::open(&path, wrong),
            Err(StoreError::WrongPassphrase)
        ));
    }
    assert!(
        dump_trees(&path) == before,
        "a refused open must leave every stored value as it was"
    );
    let store = SledStore::open(&path, passphrase("correct horse")).unwrap();
    assert_eq!(
        store.load_chunks(&case).unwrap().unwrap()[0].1,
        SECRET.as_bytes()
    );
    assert_eq!(store.get_meta("sync", "k").unwrap().unwrap(), b"v");
}

#[test]
fn key_file_stores_open_only_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let key_path = dir.path().join("store.key");
    let other_key = dir.path().join("other.key");
    {
        let store = SledStore::open(&path, KeySource::create_key_file(&key_path).unwrap()).unwrap();
        store.put_meta("identity", "device", b"cert").unwrap();
        store.flush().unwrap();
    }
    KeySource::create_key_file(&other_key).unwrap();
    assert!(matches!(
        SledStore::open(&path, KeySource::KeyFile(other_key)),
        Err(StoreError::WrongPassphrase)
    ));
    assert!(matches!(
        SledStore::open(&path, passphrase("pw")),
        Err(StoreError::WrongPassphrase)
    ));
    assert!(matches!(
        SledStore::open(&path, KeySource::KeyFile(dir.path().join("missing.key"))),
        Err(StoreError::KeyFile(_))
    ));
    let store = SledStore::open(&path, KeySource::KeyFile(key_path)).unwrap();
    assert_eq!(
        store.get_meta("identity", "device").unwrap().unwrap(),
        b"cert"
    );
}

/// A raw sled handle to a store's files, as an attacker with disk access would have. Waits for the
/// lock like [`SledStore::open`] does, since sled releases it a moment after a store is dropped.
pub(super) fn raw_db(path: &Path) -> sled::Db {
    open_waiting_for_lock(path, &sled::Config::new().path(path)).expect("raw sled handle")
}

/// Run `edit` on a raw sled handle to the store's files.
pub(super) fn edit_raw(path: &Path, edit: impl FnOnce(&sled::Db)) {
    let db = raw_db(path);
    edit(&db);
    db.flush().unwrap();
}

/// Every key and value of every tree, read through a raw sled handle.
pub(super) fn dump_trees(path: &Path) -> BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>> {
    let db = raw_db(path);
    let mut all = BTreeMap::new();
    for name in db.tree_names() {
        for item in db.open_tree(&name).unwrap().iter() {
            let (k, v) = item.unwrap();
            all.insert((name.to_vec(), k.to_vec()), v.to_vec());
        }
    }
    all
}

#[test]
fn tampered_values_read_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let key = SealKey::generate();
    let case = CaseId::random();
    {
        let store = SledStore::open(&path, KeySource::Raw(key.clone())).unwrap();
        store.append_chunk(&case, SECRET.as_bytes()).unwrap();
        store.put_meta("sync", "k", SECRET.as_bytes()).unwrap();
        store.append_log("audit", SECRET.as_bytes()).unwrap();
        store.flush().unwrap();
    }
    edit_raw(&path, |db| {
        for name in [TREE_CHUNKS, TREE_META, TREE_LOGS] {
            let tree = db.open_tree(name).unwrap();
            let (k, v) = tree.iter().next().unwrap().unwrap();
            let mut v = v.to_vec();
            let middle = v.len() / 2;
            v[middle] ^= 0x40;
            tree.insert(k, v).unwrap();
        }
    });
    let store = SledStore::open(&path, KeySource::Raw(key)).unwrap();
    assert!(matches!(
        store.load_chunks(&case),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store.get_meta("sync", "k"),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store.scan_meta("sync"),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store.read_log("audit", 0),
        Err(StoreError::Corrupt { .. })
    ));
    // The error names what was damaged, never what it said.
    let message = store.load_chunks(&case).unwrap_err().to_string();
    assert!(message.contains(&case.to_string()) && !message.contains("Maria"));
}

#[test]
fn values_moved_to_another_key_read_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let key = SealKey::generate();
    let (maria, other) = (CaseId::random(), CaseId::random());
    {
        let store = SledStore::open(&path, KeySource::Raw(key.clone())).unwrap();
        store.append_chunk(&maria, SECRET.as_bytes()).unwrap();
        store.append_chunk(&other, b"other").unwrap();
        store.put_meta("sync", "maria", SECRET.as_bytes()).unwrap();
        store.flush().unwrap();
    }
    edit_raw(&path, |db| {
        let chunks = db.open_tree(TREE_CHUNKS).unwrap();
        let sealed = chunks
            .scan_prefix(maria.0.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .1;
        // Graft Maria's chunk into the other case's log, and her meta value under another key.
        chunks
            .insert(chunk_key(&other, u64::MAX - 1), sealed)
            .unwrap();
        let meta = db.open_tree(TREE_META).unwrap();
        let value = meta.get(meta_key("sync", "maria")).unwrap().unwrap();
        meta.insert(meta_key("sync", "someone-else"), value)
            .unwrap();
    });
    let store = SledStore::open(&path, KeySource::Raw(key)).unwrap();
    assert!(matches!(
        store.load_chunks(&other),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store.get_meta("sync", "someone-else"),
        Err(StoreError::Corrupt { .. })
    ));
    // Untouched values still read.
    assert_eq!(
        store.load_chunks(&maria).unwrap().unwrap()[0].1,
        SECRET.as_bytes()
    );
}

#[test]
fn tampered_header_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    drop(SledStore::open_with(&path, passphrase("pw"), fast()).unwrap());
    // Editing the recorded KDF cost changes the derived key, and the verifier is bound to it.
    edit_raw(&path, |db| {
        let header = db.open_tree(TREE_HEADER).unwrap();
        let mut kdf = header.get(HEADER_KDF).unwrap().unwrap().to_vec();
        // The low byte of the memory cost (layout: kind, salt, memory, iterations, lanes).
        let memory_low = 1 + SALT_LEN + 3;
        kdf[memory_low] ^= 1;
        header.insert(HEADER_KDF, kdf).unwrap();
    });
    assert!(matches!(
        SledStore::open(&path, passphrase("pw")),
        Err(StoreError::WrongPassphrase)
    ));
    edit_raw(&path, |db| {
        db.open_tree(TREE_HEADER)
            .unwrap()
            .insert(HEADER_KDF, &[9u8][..])
            .unwrap();
    });
    assert!(matches!(
        SledStore::open(&path, passphrase("pw")),
        Err(StoreError::Corrupt { .. })
    ));

    // A lowered seq_base would hand sequence numbers out twice: the verifier pins it.
    let path = dir.path().join("other");
    drop(SledStore::open_with(&path, passphrase("pw"), fast()).unwrap());
    edit_raw(&path, |db| {
        db.open_tree(TREE_HEADER)
            .unwrap()
            .insert(HEADER_SEQ_BASE, &7u64.to_be_bytes())
            .unwrap();
    });
    let err = SledStore::open_with(&path, passphrase("pw"), fast()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    // The wrapped key of another store does not unwrap here, even under the same passphrase.
    let third = dir.path().join("third");
    drop(SledStore::open_with(&third, passphrase("pw"), fast()).unwrap());
    let (kdf, wrapped) = {
        let db = raw_db(&third);
        let header = db.open_tree(TREE_HEADER).unwrap();
        (
            header.get(HEADER_KDF).unwrap().unwrap(),
            header.get(HEADER_WRAPPED_KEY).unwrap().unwrap(),
        )
    };
    let fourth = dir.path().join("fourth");
    drop(SledStore::open_with(&fourth, passphrase("pw"), fast()).unwrap());
    edit_raw(&fourth, |db| {
        let header = db.open_tree(TREE_HEADER).unwrap();
        header.insert(HEADER_KDF, kdf).unwrap();
        header.insert(HEADER_WRAPPED_KEY, wrapped).unwrap();
    });
    assert!(matches!(
        SledStore::open_with(&fourth, passphrase("pw"), fast()),
        Err(StoreError::WrongPassphrase)
    ));
}

#[test]
fn a_snapshot_sled_left_unfinished_does_not_stop_the_store_opening() {
    // sled 0.34.7 writes snapshots as `snap.<lsn>.generating` and renames them when done, but reads
    // any `snap.*` but `*.in___motion` as one: a power cut between the two left a store that never
    // opened again ("sled found corruption at None"), every record intact.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let case = CaseId::random();
    {
        let store = SledStore::open_with(&path, passphrase("pw"), fast()).unwrap();
        store.append_chunk(&case, SECRET.as_bytes()).unwrap();
        store.flush().unwrap();
    }
    // Empty (the power went before its data was durable), and partial, both sorting last.
    let empty = path.join("snap.FFFFFFFFFFFFFFFE.generating");
    fs::write(&empty, b"").unwrap();
    let partial = path.join("snap.FFFFFFFFFFFFFFFF.generating");
    fs::write(&partial, [7u8; 40]).unwrap();
    let store = SledStore::open_with(&path, passphrase("pw"), fast())
        .unwrap_or_else(|e| panic!("the store does not open: {e}"));
    assert_eq!(
        store.load_chunks(&case).unwrap().unwrap()[0].1,
        SECRET.as_bytes()
    );
    assert!(!empty.exists() && !partial.exists());
    // A store held open elsewhere is not touched: its own snapshot may be in the making.
    let theirs = path.join("snap.FFFFFFFFFFFFFFFF.generating");
    fs::write(&theirs, b"").unwrap();
    assert!(matches!(
        SledStore::open_with(&path, passphrase("pw"), fast()),
        Err(StoreError::Locked { .. })
    ));
    assert!(theirs.exists());
}

#[test]
fn concurrent_appends_and_flushes_lose_nothing() {
    let (_dir, store) = fresh();
    let store = std::sync::Arc::new(store);
    let case = CaseId::random();
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..25u8)
                    .map(|i| {
                        let seq = store.append_chunk(&case, &[t, i]).unwrap();
                        store.append_log("audit", &[t, i]).unwrap();
                        store.flush().unwrap();
                        (seq, vec![t, i])
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut written: Vec<(u64, Vec<u8>)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    written.sort();
    assert_eq!(store.load_chunks(&case).unwrap().unwrap(), written);
    let indices: Vec<u64> = store
        .read_log("audit", 0)
        .unwrap()
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert_eq!(indices, (0..100).collect::<Vec<u64>>());
}

#[test]
fn second_open_in_this_process_is_locked() {
    let (dir, store) = fresh();
    let path = dir.path().join("store");
    let err = SledStore::open_with(&path, passphrase("pw"), fast()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert!(err
        .to_string()
        .contains("in use by another Polyphony process"));
    drop(store);
    // The lock goes with the store.
    SledStore::open_with(&path, passphrase("pw"), fast()).unwrap();
}

// ---- Child processes -------------------------------------------------------------------------
//
// The lock and crash tests need a second process. Rather than a separate binary, the test binary
// re-runs itself selecting one `#[test]` function, which does its work only when its environment
// variable is set; in a normal run it returns at once.

const LOCK_CHILD_DIR: &str = "POLYPHONY_LOCK_CHILD_DIR";
const CRASH_CHILD_DIR: &str = "POLYPHONY_CRASH_CHILD_DIR";
const CRASH_CHILD_START: &str = "POLYPHONY_CRASH_CHILD_START";

/// This test binary, asked to run only the test `name` of this module, with its output uncaptured.
fn child_command(name: &str) -> Command {
    child_command_in(module_path!(), name)
}

/// This test binary, asked to run only the test `name` of the module `module` (its
/// `module_path!()`), with its output uncaptured.
pub(super) fn child_command_in(module: &str, name: &str) -> Command {
    let module = module.split_once("::").map_or(module, |(_, rest)| rest);
    let mut cmd = Command::new(std::env::current_exe().expect("path of the test binary"));
    cmd.args([
        &format!("{module}::{name}"),
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Kills the child if the test fails before it does, so no writer outlives the test.
pub(super) struct KillOnDrop(pub(super) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(super) fn child_stderr(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut text);
    }
    text
}

#[test]
fn lock_child() {
    let Some(path) = std::env::var_os(LOCK_CHILD_DIR) else {
        return;
    };
    let outcome = match SledStore::open_with(Path::new(&path), passphrase("pw"), fast()) {
        Err(StoreError::Locked { .. }) => "locked".to_string(),
        Ok(_) => "opened".to_string(),
        Err(e) => format!("error {e}"),
    };
    // Straight to the process's stdout: libtest does not capture it.
    writeln!(std::io::stdout().lock(), "outcome: {outcome}").unwrap();
}

#[test]
fn second_process_is_locked() {
    let (dir, store) = fresh();
    let path = dir.path().join("store");
    let output = child_command("lock_child")
        .env(LOCK_CHILD_DIR, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("outcome: locked"),
        "child said: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    drop(store);
}

/// The case the crash child writes to.
const CRASH_CASE: CaseId = CaseId(uuid::Uuid::from_u128(
    0x5ca1ab1e_0000_4000_8000_00000000c0de,
));

/// The chunk the crash child writes at step `i`: self-describing (it starts with its step), so the
/// parent can check even chunks whose acknowledgement it never saw. Some are big enough to become
/// sled blob files, whose durability is a separate code path.
fn crash_payload(i: u64) -> Vec<u8> {
    let len = if i % 7 == 3 {
        150_000
    } else {
        64 + (i as usize * 131) % 2_000
    };
    let mut chunk = format!("chunk {i}:").into_bytes();
    chunk.extend((0..len).map(|j| (i as usize).wrapping_mul(31).wrapping_add(j) as u8));
    chunk
}

fn crash_step_of(chunk: &[u8]) -> Option<u64> {
    let text = chunk.strip_prefix(b"chunk ")?;
    let end = text.iter().position(|&b| b == b':')?;
    std::str::from_utf8(&text[..end]).ok()?.parse().ok()
}

#[test]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os(CRASH_CHILD_DIR).map(PathBuf::from) else {
        return;
    };
    let start: u64 = std::env::var(CRASH_CHILD_START)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let store = SledStore::open(
        &dir.join("store"),
        KeySource::KeyFile(dir.join("store.key")),
    )
    .expect("the crash child opens the store");
    let mut out = std::io::stdout().lock();
    // Bounded, in case the parent dies without killing us.
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in start..start + 100_000 {
        if Instant::now() > deadline {
            break;
        }
        let seq = store.append_chunk(&CRASH_CASE, &crash_payload(i)).unwrap();
        let index = store.append_log("audit", &i.to_be_bytes()).unwrap();
        store.flush().unwrap();
        // Only now is the step acknowledged.
        writeln!(out, "saved {seq} {i} {index}").unwrap();
        out.flush().unwrap();
    }
}

/// One acknowledged step: chunk `seq` holds `crash_payload(step)`, log entry `index` holds `step`.
struct Saved {
    seq: u64,
    step: u64,
    index: u64,
}

fn parse_saved(line: &str) -> Option<Saved> {
    let mut words = line.strip_prefix("saved ")?.split_whitespace();
    let mut next = || words.next()?.parse().ok();
    Some(Saved {
        seq: next()?,
        step: next()?,
        index: next()?,
    })
}

#[test]
fn crash_during_writes_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("store.key");
    KeySource::create_key_file(&key_path).unwrap();
    let mut saved: Vec<Saved> = Vec::new();
    let mut rng = rand::rng();
    let started = Instant::now();
    // Each round restarts the writer on the store the previous kill left behind, so damage would
    // accumulate; 8 rounds take a few seconds in a debug build.
    const ROUNDS: u64 = 8;

    for round in 0..ROUNDS {
        let mut child = KillOnDrop(
            child_command("crash_child_writer")
                .env(CRASH_CHILD_DIR, dir.path())
                .env(
                    CRASH_CHILD_START,
                    OsString::from((round * 1_000_000).to_string()),
                )
                .spawn()
                .expect("start the crash child"),
        );
        let mut lines = BufReader::new(child.0.stdout.take().unwrap());
        let wanted = rng.random_range(1..=25);
        let mut seen = 0;
        let mut line = String::new();
        while seen < wanted {
            line.clear();
            if lines.read_line(&mut line).unwrap() == 0 {
                panic!(
                    "crash child exited early in round {round}:\n{}",
                    child_stderr(&mut child.0)
                );
            }
            if let Some(s) = parse_saved(&line) {
                saved.push(s);
                seen += 1;
            }
        }
        // Let it get somewhere into its next write, then pull the plug.
        std::thread::sleep(Duration::from_micros(rng.random_range(0..3_000)));
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        // Whatever it printed before dying was acknowledged too; a torn last line was not.
        let mut rest = String::new();
        lines.read_to_string(&mut rest).unwrap();
        saved.extend(
            rest.split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .filter_map(parse_saved),
        );

        let store = SledStore::open(
            dir.path().join("store").as_path(),
            KeySource::KeyFile(key_path.clone()),
        )
        .unwrap_or_else(|e| panic!("store does not reopen after SIGKILL in round {round}: {e}"));
        let chunks: BTreeMap<u64, Vec<u8>> = store
            .load_chunks(&CRASH_CASE)
            .unwrap()
            .expect("the case survives")
            .into_iter()
            .collect();
        let log: BTreeMap<u64, Vec<u8>> = store.read_log("audit", 0).unwrap().into_iter().collect();
        for s in &saved {
            assert_eq!(
                chunks.get(&s.seq),
                Some(&crash_payload(s.step)),
                "acknowledged chunk {} (step {}) lost or altered in round {round}",
                s.seq,
                s.step
            );
            assert_eq!(
                log.get(&s.index).map(Vec::as_slice),
                Some(&s.step.to_be_bytes()[..]),
                "acknowledged log entry {} lost in round {round}",
                s.index
            );
        }
        // Unacknowledged writes may or may not have landed, but never as garbage.
        for chunk in chunks.values() {
            let step = crash_step_of(chunk).expect("a chunk the child wrote");
            assert_eq!(chunk, &crash_payload(step));
        }
        drop(store);
    }
    assert!(!saved.is_empty());
    eprintln!(
        "crash test: {} acknowledged steps over {ROUNDS} rounds in {:?}",
        saved.len(),
        started.elapsed()
    );
}
