//! Power cuts during the upgrade of a profile made before key wrapping (issue 14, finding 10).
//!
//! The profile is a copy of the committed format-1 fixture (`client-core/fixtures/profile-format1`)
//! on a [`PowerFs`], made durable. Opening it upgrades it: every record re-sealed under a new data
//! key in a store built beside the old one, fsynced, switched in by renames, the old one removed
//! (`client-core/src/store/sled_store/rekey.rs`). The test counts the filesystem operations of one
//! uncut upgrade (writes, fsyncs, creates, renames, removals: [`PowerFs::cut_before_mutation`]),
//! then, for each of them in turn, starts the upgrade again on a fresh copy and cuts the power
//! just before that operation. After each cut the power comes back and the profile must open with
//! the passphrase, hold every record of the fixture, be upgraded, and have nothing left beside it.
//!
//! The process-abort tests in client-core keep whatever the kernel was given; a power cut keeps
//! only what was fsynced, so this is the test of the upgrade's fsyncs and of their order. It runs
//! under both metadata models: names durable at once (LazyFS's), and names durable only once their
//! directory is fsynced (POSIX's worst case).
//!
//! Each attempt runs in a child process (this test binary, running `rekey_power_child`): a store
//! closed on a dead disk panics in sled (see `power_loss.rs`), and a real power cut ends the process
//! anyway. `POLYPHONY_REKEY_CUT_STRIDE=n` cuts at every n-th operation only (default 1).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use polyphony_core::profile::Profile;
use polyphony_core::store::{KdfParams, KeySource, SledOptions, SledStore};
use polyphony_core::CaseId;
use polyphony_e2e::{report_figures, Metadata, PowerFs};

const FIXTURE_PASSPHRASE: &str = "an old profile passphrase";
const MARIA: &str = "c4c16efe-85a7-4488-b8f5-c5d3f1ca9341";
const JO: &str = "4740f12c-1d30-4196-b08d-fcd96bb8abd0";
const CHILD_HOME: &str = "POLYPHONY_REKEY_POWER_HOME";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../client-core/fixtures/profile-format1")
}

/// The new key-encryption key at the test cost: the old derivation (19 MiB) is the fixture's own.
fn open_store(home: &Path) -> Result<SledStore, polyphony_core::store::StoreError> {
    SledStore::open_with(
        &home.join("store"),
        KeySource::Passphrase(FIXTURE_PASSPHRASE.into()),
        SledOptions {
            kdf: KdfParams::INSECURE_FAST_FOR_TESTS,
            ..SledOptions::default()
        },
    )
}

/// Copy a directory tree and fsync every file and directory of it, and its entry in `to`'s
/// parent: the profile exists durably before the power is touched.
fn copy_durably(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_durably(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
            std::fs::File::open(&target)?.sync_all()?;
        }
    }
    std::fs::File::open(to)?.sync_all()?;
    let parent = to.parent().ok_or_else(|| anyhow!("no parent"))?;
    std::fs::File::open(parent)?.sync_all()?;
    Ok(())
}

/// Every record of the fixture, read through the profile.
fn check_fixture(home: &Path, store: SledStore) -> Result<()> {
    let mut profile = Profile::from_store(home, Arc::new(store))?;
    let maria: CaseId = MARIA.parse()?;
    let jo: CaseId = JO.parse()?;
    let mut ids = profile.case_ids()?;
    ids.sort();
    let mut expected = vec![maria, jo];
    expected.sort();
    ensure!(ids == expected, "cases {ids:?}");
    let view = profile.lookup(maria)?;
    ensure!(view.person.name == "Maria Fixture-Lindqvist");
    ensure!(view.person.pronouns.as_deref() == Some("she/her 39"));
    ensure!(
        view.meetings.first().map(|m| m.notes.as_str())
            == Some("Maria said the garden helps her sleep")
    );
    ensure!(profile.lookup(jo)?.person.name == "Jo Fixture-Abernathy");
    ensure!(profile.status()?.unsent_reads == 2, "the two reads");
    ensure!(profile.author()?.practitioner_name == "Sam Okafor");
    Ok(())
}

/// What a cut left next to the store, seen once the power is back.
fn left_behind(home: &Path) -> &'static str {
    let has = |name: &str| home.join(name).exists();
    match (has("store"), has("store.rekeying"), has("store.retired")) {
        (true, false, false) => "store",
        (true, true, false) => "store + store.rekeying",
        (false, true, true) => "store.retired + store.rekeying",
        (true, false, true) => "store + store.retired",
        (false, false, true) => "store.retired",
        _ => "other",
    }
}

/// Wait until no sled instance holds `store/db` (sled's threads let go a moment after a drop), so
/// a lingering write of the last store cannot be the operation the next cut counts.
fn wait_until_closed(home: &Path) {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::File::open(home.join("store/db")) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    // SAFETY: flock on a descriptor this function owns.
    while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The upgrade attempt, in a child process. Prints how it ended, if it did.
#[test]
fn rekey_power_child() {
    let Some(home) = std::env::var_os(CHILD_HOME).map(PathBuf::from) else {
        return;
    };
    let outcome = match open_store(&home) {
        Ok(store) => format!("opened, upgrade pending: {:?}", store.upgrade_pending()),
        Err(e) => format!("error: {e}"),
    };
    writeln!(std::io::stdout().lock(), "child: {outcome}").ok();
}

/// How long a child may go on after the power was cut before it is taken for dead. A real power
/// cut ends the process; under PowerFs it lives on against a disk that fails every call, and sled
/// can then wait for ever in `flush` on a write its I/O thread could not make (seen: the child
/// parked in `make_stable`, every sled thread idle). What it does then cannot matter: only what
/// the disk kept does, which is what the reopen checks.
const AFTER_THE_CUT: Duration = Duration::from_secs(5);

/// Run the upgrade in a child process. `cut` says whether the power has been cut: from then on
/// the child is given [`AFTER_THE_CUT`] and then killed, as the power cut would have. Without a
/// cut, a child that does not finish within a minute has hung, which is a failure.
fn child(home: &Path, cut: &dyn Fn() -> bool) -> Result<std::process::Output> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "rekey_power_child",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_HOME, home)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut cut_at: Option<Instant> = None;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(child.wait_with_output()?);
        }
        if cut_at.is_none() && cut() {
            cut_at = Some(Instant::now());
        }
        if cut_at.is_some_and(|at| at.elapsed() > AFTER_THE_CUT) {
            let _ = child.kill();
            return Ok(child.wait_with_output()?);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output()?;
            bail!(
                "the upgrade hung after the power cut:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run(metadata: Metadata, name: &str) -> Result<()> {
    let stride: u64 = std::env::var("POLYPHONY_REKEY_CUT_STRIDE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let scratch = tempfile::tempdir()?;
    let mnt = scratch.path().join("mnt");
    std::fs::create_dir_all(&mnt)?;
    let fs = match PowerFs::mount_with(&mnt, metadata) {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED: {name} not run: {why}");
            report_figures(name, &[("skipped", 1)]);
            return Ok(());
        }
    };
    let started = Instant::now();

    // One upgrade without a cut, to count its operations (the child's, sled's closing included).
    let probe = mnt.join("probe");
    copy_durably(&fixture(), &probe)?;
    let before = fs.counts().mutations;
    let output = child(&probe, &|| false)?;
    let operations = fs.counts().mutations - before;
    ensure!(
        String::from_utf8_lossy(&output.stdout).contains("child: opened, upgrade pending: None"),
        "the uncut upgrade did not complete: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(operations > 10, "{operations} operations counted");
    check_fixture(&probe, open_store(&probe)?)?;
    wait_until_closed(&probe);

    let mut states: BTreeMap<&str, u64> = BTreeMap::new();
    let mut cuts = 0;
    let mut k = 0;
    while k <= operations + 2 {
        let home = mnt.join(format!("cut{k}"));
        copy_durably(&fixture(), &home)?;
        let cuts_before = fs.counts().cuts;
        fs.cut_before_mutation(Some(k));
        let output = child(&home, &|| fs.counts().cuts > cuts_before)?;
        fs.cut_before_mutation(None);
        if fs.counts().cuts == cuts_before {
            // The upgrade finished first: cut now, after it.
            fs.cut();
        }
        fs.power_on();
        cuts += 1;
        let state = left_behind(&home);
        *states.entry(state).or_default() += 1;

        let store = open_store(&home).with_context(|| {
            format!(
                "power cut before operation {k} of {operations} ({metadata:?}), leaving {state}: \
                 the profile does not open\nchild: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
        ensure!(
            store.upgrade_pending().is_none(),
            "cut before operation {k}: still not upgraded: {:?}",
            store.upgrade_pending()
        );
        check_fixture(&home, store).with_context(|| {
            format!(
                "power cut before operation {k} of {operations} ({metadata:?}), leaving {state}"
            )
        })?;
        wait_until_closed(&home);
        ensure!(
            left_behind(&home) == "store",
            "cut before operation {k}: {} left after the reopen",
            left_behind(&home)
        );
        // The reopened store is the upgraded one: a second open has nothing left to do.
        let again = open_store(&home)?;
        ensure!(again.upgrade_pending().is_none());
        drop(again);
        wait_until_closed(&home);
        k += stride;
    }
    let counts = fs.counts();
    eprintln!("{name}: {metadata:?}, {operations} operations per upgrade, states after the cuts: {states:?}");
    let state = |s: &str| states.get(s).copied().unwrap_or(0);
    report_figures(
        name,
        &[
            ("operations_per_upgrade", operations),
            ("cuts", cuts),
            ("left_store_only", state("store")),
            ("left_store_and_rekeying", state("store + store.rekeying")),
            (
                "left_retired_and_rekeying",
                state("store.retired + store.rekeying"),
            ),
            ("left_store_and_retired", state("store + store.retired")),
            ("files_reverted", counts.files_reverted),
            ("dirs_reverted", counts.dirs_reverted),
            ("lost", 0),
            ("secs", started.elapsed().as_secs()),
        ],
    );
    drop(fs);
    Ok(())
}

#[test]
fn a_power_cut_before_any_operation_of_an_upgrade_loses_nothing() -> Result<()> {
    run(Metadata::Immediate, "rekey_power_loss")
}

#[test]
fn a_power_cut_during_an_upgrade_loses_nothing_when_only_fsynced_names_survive() -> Result<()> {
    run(Metadata::OnDirectoryFsync, "rekey_power_loss_strict_dirs")
}

/// The trigger itself: the chosen operation is not served, the one before it is.
#[test]
fn powerfs_cuts_just_before_the_chosen_operation() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let mnt = scratch.path().join("mnt");
    std::fs::create_dir_all(&mnt)?;
    let fs = match PowerFs::mount(&mnt) {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED: powerfs trigger test not run: {why}");
            return Ok(());
        }
    };
    let path = mnt.join("f");
    let mut file = std::fs::File::create(&path)?;
    file.write_all(b"durable")?;
    file.sync_all()?;
    // Operation 0 (a write) is served, operation 1 (its fsync) is where the power goes.
    fs.cut_before_mutation(Some(1));
    file.write_all(b" and lost")?;
    ensure!(file.sync_all().is_err(), "the fsync after the cut failed");
    ensure!(fs.counts().cuts == 1);
    drop(file);
    fs.power_on();
    ensure!(std::fs::read(&path)? == b"durable");
    Ok(())
}
