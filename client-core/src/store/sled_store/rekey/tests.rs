//! Tests of re-keying: old stores upgraded, passphrases changed, and what a crash or a full disk at
//! each step leaves behind. Old stores come from two places: the committed fixture
//! (`client-core/fixtures/profile-format1`, written by the code before key wrapping) and
//! [`old_store`], which writes format 1 through the test-only writer so a store of any shape can be
//! made (a test below checks that writer against the fixture).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::super::tests::{
    child_command_in, child_stderr, contains, dump_trees, fast, passphrase, raw_db, read_all_files,
    KillOnDrop, SECRET,
};
use super::seam::{self, Fault};
use super::*;
use crate::profile::Profile;
use crate::store::crypto::derive_key;
use crate::store::sled_store::header::{self, KdfHeader};
use crate::store::sled_store::{
    FORMAT_WRAPPED, HEADER_KDF, HEADER_SEQ_BASE, HEADER_STORE_ID, HEADER_WRAPPED_KEY, STORE_ID_LEN,
    TREE_HEADER,
};
use crate::store::{KdfParams, SealKey, SledStore, Store};
use crate::CaseId;

const PW: &str = "correct horse battery";

/// Every value of a store, unsealed: `(tree, key) -> plaintext` (log heads as stored).
type Contents = BTreeMap<(String, Vec<u8>), Vec<u8>>;

fn contents(store: &SledStore) -> Contents {
    let mut all = Contents::new();
    for (name, tag) in VALUE_TREES {
        let tree = store.db.open_tree(name).unwrap();
        for item in tree.iter() {
            let (k, v) = item.unwrap();
            let plain = match tag {
                None => v.to_vec(),
                Some(tag) => store.unseal(tag, &k, &v, || name.to_string()).unwrap(),
            };
            all.insert((name.to_string(), k.to_vec()), plain);
        }
    }
    all
}

/// An old (format 1) passphrase store at `dir`, holding every kind of value: chunks of two cases
/// (one large enough to be a sled blob file, both before and after compaction), a compacted log, a removed case, meta values, logs
/// with a trimmed entry. Returns its contents and the highest sequence number it handed out.
fn old_store(dir: &Path) -> (Contents, u64) {
    seam::with(Fault::KeepFormat1, || {
        let store = SledStore::open_with(dir, passphrase(PW), fast()).unwrap();
        assert_eq!(store.keys.format, FORMAT_DIRECT);
        let (maria, jo, removed) = (CaseId::random(), CaseId::random(), CaseId::random());
        store.append_chunk(&maria, SECRET.as_bytes()).unwrap();
        store
            .append_chunk(&maria, SECRET.repeat(5_000).as_bytes())
            .unwrap();
        let through = store.append_chunk(&maria, b"third").unwrap();
        store.append_chunk(&maria, b"after the snapshot").unwrap();
        store
            .compact_case(&maria, b"snapshot of the first three", through)
            .unwrap();
        store.append_chunk(&jo, b"Jo's first chunk").unwrap();
        // Large enough that sled keeps it in a blob file of its own, a separate copy path.
        store
            .append_chunk(&jo, SECRET.repeat(5_000).as_bytes())
            .unwrap();
        let highest = store.append_chunk(&removed, b"gone").unwrap();
        store.remove_case(&removed).unwrap();
        store.put_meta("sync", "note", SECRET.as_bytes()).unwrap();
        store.put_meta("profile", "device", b"device id").unwrap();
        for entry in [&b"read 0"[..], b"read 1", SECRET.as_bytes()] {
            store.append_log("reads", entry).unwrap();
        }
        store.trim_log("reads", 0).unwrap();
        store.append_log("audit", SECRET.as_bytes()).unwrap();
        store.flush().unwrap();
        (contents(&store), highest)
    })
}

/// What the header on disk says, read without a key: format, argon2id parameters, and whether a
/// wrapped key is there.
fn header_on_disk(dir: &Path) -> (Option<u8>, Option<KdfParams>, bool) {
    assert!(dir.exists(), "{} exists", dir.display());
    let db = raw_db(dir);
    let format = header::format_of(&db).unwrap();
    let tree = db.open_tree(TREE_HEADER).unwrap();
    let params = tree
        .get(HEADER_KDF)
        .unwrap()
        .and_then(|k| KdfHeader::decode(&k))
        .and_then(|k| k.params());
    let wrapped = tree.get(HEADER_WRAPPED_KEY).unwrap().is_some();
    (format, params, wrapped)
}

fn siblings(dir: &Path) -> (PathBuf, PathBuf) {
    let paths = Paths::of(dir).unwrap();
    (paths.building, paths.retired)
}

fn assert_no_leftovers(dir: &Path) {
    let (building, retired) = siblings(dir);
    assert!(!building.exists(), "{} left behind", building.display());
    assert!(!retired.exists(), "{} left behind", retired.display());
}

/// Copy a directory tree (the fixture, or a store before a child process crashes in it).
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn fixture_copy() -> (TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("profile");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/profile-format1"),
        &home,
    );
    (tmp, home)
}

const FIXTURE_PASSPHRASE: &str = "an old profile passphrase";
/// The highest sequence number the fixture's store handed out (its removed case's chunk).
const FIXTURE_HIGHEST_SEQ: u64 = 2_000_044;

#[test]
fn an_old_store_is_upgraded_when_opened_and_keeps_every_value() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let (before, highest) = old_store(&dir);
    assert_eq!(
        header_on_disk(&dir),
        (Some(FORMAT_DIRECT), Some(fast().kdf), false)
    );

    let store = SledStore::open_with(&dir, passphrase(PW), fast()).unwrap();
    assert_eq!(store.upgrade_pending(), None);
    assert_eq!(store.keys.format, FORMAT_WRAPPED);
    assert_eq!(contents(&store), before);
    drop(store);
    assert_no_leftovers(&dir);
    assert_eq!(
        header_on_disk(&dir),
        (Some(FORMAT_WRAPPED), Some(fast().kdf), true)
    );

    // After a reopen, everything is still there, and numbering goes on past the old store's.
    let store = SledStore::open_with(&dir, passphrase(PW), fast()).unwrap();
    assert_eq!(contents(&store), before);
    assert!(store.append_chunk(&CaseId::random(), b"new").unwrap() > highest);
    assert_eq!(store.append_log("reads", b"next").unwrap(), 3);
}

#[test]
fn the_fixture_profile_from_before_key_wrapping_opens_upgraded_to_todays_parameters() {
    let (_tmp, home) = fixture_copy();
    let store_dir = home.join("store");
    assert_eq!(header_on_disk(&store_dir).0, Some(FORMAT_DIRECT));
    let maria: CaseId = "c4c16efe-85a7-4488-b8f5-c5d3f1ca9341".parse().unwrap();
    let jo: CaseId = "4740f12c-1d30-4196-b08d-fcd96bb8abd0".parse().unwrap();

    let check = |profile: &mut Profile| {
        let mut ids = profile.case_ids().unwrap();
        ids.sort();
        let mut expected = vec![maria, jo];
        expected.sort();
        assert_eq!(ids, expected);
        let view = profile.lookup(maria).unwrap();
        assert_eq!(view.person.name, "Maria Fixture-Lindqvist");
        assert_eq!(view.person.pronouns.as_deref(), Some("she/her 39"));
        assert_eq!(
            view.meetings[0].notes,
            "Maria said the garden helps her sleep"
        );
        assert_eq!(
            profile.lookup(jo).unwrap().person.name,
            "Jo Fixture-Abernathy"
        );
        assert_eq!(profile.status().unwrap().unsent_reads, 2);
        assert_eq!(profile.author().unwrap().practitioner_name, "Sam Okafor");
    };
    {
        // The production path: Profile::open, today's parameters.
        let mut profile = Profile::open(&home, FIXTURE_PASSPHRASE).unwrap();
        assert_eq!(profile.upgrade_pending(), None);
        check(&mut profile);
    }
    assert_no_leftovers(&store_dir);
    assert_eq!(
        header_on_disk(&store_dir),
        (Some(FORMAT_WRAPPED), Some(KdfParams::RECOMMENDED), true)
    );
    let mut profile = Profile::open(&home, FIXTURE_PASSPHRASE).unwrap();
    check(&mut profile);
    assert!(
        profile
            .store()
            .append_chunk(&CaseId::random(), b"new")
            .unwrap()
            > FIXTURE_HIGHEST_SEQ,
        "a sequence number of the removed case would be handed out again"
    );
}

#[test]
fn the_test_only_format1_writer_writes_what_the_old_code_wrote() {
    let (_tmp, home) = fixture_copy();
    let tmp = tempfile::tempdir().unwrap();
    old_store(&tmp.path().join("store"));
    let fields = |dir: &Path| -> BTreeMap<Vec<u8>, usize> {
        let db = raw_db(dir);
        let tree = db.open_tree(TREE_HEADER).unwrap();
        tree.iter()
            .map(|item| {
                let (k, v) = item.unwrap();
                (k.to_vec(), v.len())
            })
            .collect()
    };
    // Same fields, same lengths (the format byte, the KDF encoding, the verifier's size).
    assert_eq!(
        fields(&home.join("store")),
        fields(&tmp.path().join("store"))
    );
    let trees = |dir: &Path| -> BTreeSet<Vec<u8>> {
        raw_db(dir)
            .tree_names()
            .iter()
            .map(|n| n.to_vec())
            .collect()
    };
    // The attachments' tree came later than the format-1 code: today's writer makes it, empty.
    let mut written = trees(&tmp.path().join("store"));
    assert!(written.remove(TREE_BLOBS.as_bytes()));
    assert!(raw_db(&tmp.path().join("store"))
        .open_tree(TREE_BLOBS)
        .unwrap()
        .is_empty());
    assert_eq!(trees(&home.join("store")), written);
}

#[test]
fn the_upgrade_draws_a_new_data_key_and_the_old_key_opens_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    old_store(&dir);
    // The old data key, as anyone with a copy of the old store and the passphrase gets it.
    let (old_key, old_store_id) = {
        let db = raw_db(&dir);
        let header = db.open_tree(TREE_HEADER).unwrap();
        let Some(KdfHeader::Argon2id { salt, params }) =
            KdfHeader::decode(&header.get(HEADER_KDF).unwrap().unwrap())
        else {
            panic!("a passphrase store")
        };
        let id: [u8; STORE_ID_LEN] = header
            .get(HEADER_STORE_ID)
            .unwrap()
            .unwrap()
            .as_ref()
            .try_into()
            .unwrap();
        (derive_key(PW, &salt, params).unwrap(), id)
    };
    let store = SledStore::open_with(&dir, passphrase(PW), fast()).unwrap();
    assert!(
        !store.keys.data_key.same_as(&old_key),
        "the upgrade kept the old data key: a copy of the old store still guesses it at the old cost"
    );
    let new_store_id = store.keys.store_id;
    assert_ne!(new_store_id, old_store_id);
    drop(store);
    let db = raw_db(&dir);
    let mut tried = 0;
    for (name, tag) in VALUE_TREES {
        let Some(tag) = tag else { continue };
        for item in db.open_tree(name).unwrap().iter() {
            let (k, v) = item.unwrap();
            tried += 1;
            for id in [&old_store_id, &new_store_id] {
                assert!(
                    old_key.open(&value_aad(id, tag, &k), &v).is_err(),
                    "a value in {name} still opens with the old key"
                );
            }
        }
    }
    assert!(tried > 5, "{tried} values checked");
}

#[test]
fn a_wrong_passphrase_is_refused_on_both_formats_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    old_store(&old);
    let new = tmp.path().join("new");
    {
        let store = SledStore::open_with(&new, passphrase(PW), fast()).unwrap();
        store
            .append_chunk(&CaseId::random(), SECRET.as_bytes())
            .unwrap();
        store.flush().unwrap();
    }
    for dir in [&old, &new] {
        let format = header_on_disk(dir).0;
        let before = dump_trees(dir);
        for wrong in [
            passphrase("correct horse batterx"),
            passphrase(""),
            KeySource::Raw(SealKey::generate()),
        ] {
            let err = SledStore::open_with(dir, wrong, fast()).unwrap_err();
            assert!(matches!(err, StoreError::WrongPassphrase), "{err:?}");
            assert_eq!(
                err.to_string(),
                "the passphrase does not open this store (check it and try again)"
            );
        }
        let err =
            SledStore::change_key(dir, passphrase("nope"), passphrase("new"), fast()).unwrap_err();
        assert!(matches!(err, StoreError::WrongPassphrase), "{err:?}");
        assert!(
            dump_trees(dir) == before,
            "a refused open changed the store"
        );
        assert_eq!(header_on_disk(dir).0, format, "nor its format");
        assert_no_leftovers(dir);
    }
}

#[test]
fn a_full_disk_at_any_step_leaves_the_old_store_open_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let (before, _) = old_store(&base);
    for step in Step::ALL {
        let dir = tmp.path().join(format!("{step:?}"));
        copy_dir(&base, &dir);
        let store = seam::with(Fault::DiskFull(step), || {
            SledStore::open_with(&dir, passphrase(PW), fast())
        })
        .unwrap_or_else(|e| panic!("disk full at {step:?}: the store did not open: {e}"));
        assert_eq!(contents(&store), before, "disk full at {step:?}");
        if step == Step::Remove {
            // The switch was done: the store is upgraded; only the old copy is left to remove.
            assert_eq!(store.upgrade_pending(), None);
            assert_eq!(store.keys.format, FORMAT_WRAPPED);
            drop(store);
            assert!(siblings(&dir).1.exists());
        } else {
            let pending = store
                .upgrade_pending()
                .expect("the store says it is not upgraded");
            assert!(
                pending.contains("No space left on device")
                    && pending.contains("free some space")
                    && pending.contains("tried again the next time"),
                "{pending}"
            );
            assert_eq!(store.keys.format, FORMAT_DIRECT);
            // Still usable as it is.
            store.put_meta("sync", "while full", b"kept").unwrap();
            store.flush().unwrap();
            drop(store);
            assert_eq!(header_on_disk(&dir).0, Some(FORMAT_DIRECT), "at {step:?}");
            assert_no_leftovers(&dir);
        }
        // With space again, the next open upgrades it, and everything is there.
        let store = SledStore::open_with(&dir, passphrase(PW), fast()).unwrap();
        assert_eq!(store.upgrade_pending(), None);
        assert_eq!(store.keys.format, FORMAT_WRAPPED);
        let mut after = contents(&store);
        after.retain(|(tree, key), _| !(tree == TREE_META && key.ends_with(b"while full")));
        assert_eq!(after, before, "after a full disk at {step:?}");
        drop(store);
        assert_no_leftovers(&dir);
    }
}

// ---- Crashes ---------------------------------------------------------------------------------
//
// A crash is a child process (this test binary, running `rekey_crash_child`) that aborts right
// after a step: no destructor runs, sled flushes nothing more, as when the process is killed.

const CRASH_DIR: &str = "POLYPHONY_REKEY_CRASH_DIR";
const CRASH_STEP: &str = "POLYPHONY_REKEY_CRASH_STEP";

#[test]
fn rekey_crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR).map(PathBuf::from) else {
        return;
    };
    let step = std::env::var(CRASH_STEP).unwrap();
    let step = *Step::ALL.iter().find(|s| format!("{s:?}") == step).unwrap();
    let opened = seam::with(Fault::AbortAfter(step), || {
        SledStore::open_with(&dir, passphrase(PW), fast())
    });
    // Reached only if the seam did not fire.
    writeln!(
        std::io::stdout().lock(),
        "no crash at {step:?}: {:?}",
        opened.map(|s| s.upgrade_pending().map(str::to_owned))
    )
    .unwrap();
}

#[test]
fn a_crash_after_any_step_leaves_a_store_that_opens_with_every_value() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let (before, highest) = old_store(&base);
    for step in Step::ALL {
        let dir = tmp.path().join(format!("{step:?}"));
        copy_dir(&base, &dir);
        let mut child = KillOnDrop(
            child_command_in(module_path!(), "rekey_crash_child")
                .env(CRASH_DIR, &dir)
                .env(CRASH_STEP, format!("{step:?}"))
                .spawn()
                .unwrap(),
        );
        let status = child.0.wait().unwrap();
        let stderr = child_stderr(&mut child.0);
        assert!(
            !status.success() && stderr.contains(&format!("aborting after step {step:?}")),
            "the child did not crash at {step:?} ({status}):\n{stderr}"
        );

        // What the crash left: the old store in place until the switch, the new one from it.
        let (building, retired) = siblings(&dir);
        let expected_format = match step {
            Step::Create | Step::Copy | Step::Header | Step::Sync => Some(FORMAT_DIRECT),
            Step::Retire => None,
            Step::Switch | Step::Remove => Some(FORMAT_WRAPPED),
        };
        match expected_format {
            Some(format) => assert_eq!(header_on_disk(&dir).0, Some(format), "at {step:?}"),
            None => assert!(!dir.exists() && retired.exists() && building.exists()),
        }
        assert!(
            SledStore::exists(&dir),
            "at {step:?} the store looks missing"
        );

        let store = SledStore::open_with(&dir, passphrase(PW), fast())
            .unwrap_or_else(|e| panic!("after a crash at {step:?} the store does not open: {e}"));
        assert_eq!(contents(&store), before, "after a crash at {step:?}");
        assert_eq!(store.keys.format, FORMAT_WRAPPED, "upgraded after {step:?}");
        assert!(store.append_chunk(&CaseId::random(), b"x").unwrap() > highest);
        drop(store);
        assert_no_leftovers(&dir);
    }
}

#[test]
fn no_record_text_in_any_file_after_an_upgrade() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    old_store(&dir);
    drop(SledStore::open_with(&dir, passphrase(PW), fast()).unwrap());
    // Everything beside the store too: a copy left behind would count.
    let files = read_all_files(tmp.path());
    assert!(files
        .keys()
        .any(|p| p.parent().is_some_and(|d| d.ends_with("blobs"))));
    for needle in [SECRET, "garden helps", "Maria", "Jo's first", "snapshot of"] {
        for (file, bytes) in &files {
            assert!(
                !contains(bytes, needle.as_bytes()),
                "{needle:?} in clear in {}",
                file.display()
            );
        }
    }
}

#[test]
fn change_key_changes_the_passphrase_and_the_data_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let (before, _) = old_store(&dir);
    let old_key = {
        let store = SledStore::open_with(&dir, passphrase(PW), fast()).unwrap();
        store.keys.data_key.clone()
    };

    // Interrupted by a full disk: the current passphrase still opens everything.
    let err = seam::with(Fault::DiskFull(Step::Copy), || {
        SledStore::change_key(&dir, passphrase(PW), passphrase("new words"), fast())
    })
    .unwrap_err();
    assert!(matches!(err, StoreError::Io(_)), "{err:?}");
    assert_no_leftovers(&dir);
    assert_eq!(
        contents(&SledStore::open_with(&dir, passphrase(PW), fast()).unwrap()),
        before
    );

    SledStore::change_key(&dir, passphrase(PW), passphrase("new words"), fast()).unwrap();
    assert_no_leftovers(&dir);
    assert!(matches!(
        SledStore::open_with(&dir, passphrase(PW), fast()),
        Err(StoreError::WrongPassphrase)
    ));
    let store = SledStore::open_with(&dir, passphrase("new words"), fast()).unwrap();
    assert_eq!(contents(&store), before);
    assert!(!store.keys.data_key.same_as(&old_key));
}

#[test]
fn a_profile_passphrase_change_keeps_every_record() {
    let (_tmp, home) = fixture_copy();
    Profile::change_passphrase(&home, FIXTURE_PASSPHRASE, "a brand new passphrase").unwrap();
    assert!(matches!(
        Profile::open(&home, FIXTURE_PASSPHRASE),
        Err(crate::profile::ProfileError::Store(
            StoreError::WrongPassphrase
        ))
    ));
    let mut profile = Profile::open(&home, "a brand new passphrase").unwrap();
    let maria: CaseId = "c4c16efe-85a7-4488-b8f5-c5d3f1ca9341".parse().unwrap();
    assert_eq!(
        profile.lookup(maria).unwrap().meetings[0].notes,
        "Maria said the garden helps her sleep"
    );
    assert!(Profile::exists(&home));
}

#[test]
fn a_wrapped_store_with_weaker_parameters_than_asked_for_is_rekeyed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let (first_key, before) = {
        let store = SledStore::open_with(&dir, passphrase(PW), fast()).unwrap();
        store.put_meta("sync", "k", SECRET.as_bytes()).unwrap();
        store.flush().unwrap();
        (store.keys.data_key.clone(), contents(&store))
    };
    let stronger = SledOptions {
        kdf: KdfParams {
            memory_kib: 128,
            ..fast().kdf
        },
        ..fast()
    };
    let store = SledStore::open_with(&dir, passphrase(PW), stronger.clone()).unwrap();
    assert!(!store.keys.data_key.same_as(&first_key));
    assert_eq!(contents(&store), before);
    drop(store);
    assert_eq!(header_on_disk(&dir).1, Some(stronger.kdf));
    // Opened again with the weaker options, it stays as strong as it is.
    drop(SledStore::open_with(&dir, passphrase(PW), fast()).unwrap());
    assert_eq!(header_on_disk(&dir).1, Some(stronger.kdf));
}

#[test]
fn key_file_stores_of_format1_open_as_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let key = KeySource::create_key_file(&tmp.path().join("server.key")).unwrap();
    let KeySource::KeyFile(key_path) = &key else {
        unreachable!()
    };
    let key_path = key_path.clone();
    let before = seam::with(Fault::KeepFormat1, || {
        let store = SledStore::open(&dir, key).unwrap();
        store.append_chunk(&CaseId::random(), b"chunk").unwrap();
        store.flush().unwrap();
        contents(&store)
    });
    let store = SledStore::open(&dir, KeySource::KeyFile(key_path)).unwrap();
    assert_eq!(store.upgrade_pending(), None);
    assert_eq!(contents(&store), before);
    drop(store);
    assert_eq!(header_on_disk(&dir).0, Some(FORMAT_DIRECT));
}

#[test]
fn a_set_aside_store_beside_an_old_format_store_is_neither_removed_nor_upgraded() {
    // Not something a re-key leaves: an older Polyphony made a new store while the real one was
    // set aside. Both are kept for someone to look at.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    old_store(&dir);
    let (_, retired) = siblings(&dir);
    old_store(&retired);
    let store = SledStore::open_with(&dir, passphrase(PW), fast()).unwrap();
    assert!(store.upgrade_pending().unwrap().contains("ask for support"));
    assert_eq!(store.keys.format, FORMAT_DIRECT);
    drop(store);
    assert!(retired.exists());
}

#[test]
fn an_empty_store_beside_a_set_aside_one_is_not_replaced_by_a_new_store() {
    // What a re-key would leave if its copy were switched in before being made durable: `store`
    // without a header, the real records in `store.retired`. A new empty store there would make
    // the set-aside one look like an old copy to tidy away.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let (_, retired) = siblings(&dir);
    let (before, _) = old_store(&retired);
    drop(raw_db(&dir));
    let err = SledStore::open_with(&dir, passphrase(PW), fast()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { detail, .. } if detail.contains("ask for support")),
        "{err:?}"
    );
    assert!(retired.exists(), "the set-aside store is kept");
    let store = seam::with(Fault::KeepFormat1, || {
        SledStore::open_with(&retired, passphrase(PW), fast()).unwrap()
    });
    assert_eq!(contents(&store), before);
}

#[test]
fn seq_base_is_recorded_in_the_header() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let (_, highest) = old_store(&dir);
    drop(SledStore::open_with(&dir, passphrase(PW), fast()).unwrap());
    let db = raw_db(&dir);
    let base = db
        .open_tree(TREE_HEADER)
        .unwrap()
        .get(HEADER_SEQ_BASE)
        .unwrap()
        .unwrap();
    assert!(u64::from_be_bytes(base.as_ref().try_into().unwrap()) > highest);
}
