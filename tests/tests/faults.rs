//! Issue 9, faults: the server and the devices under a bad network, SIGKILL, a full disk and weeks
//! offline. Each test counts what it injected and what it verified, prints one `FIGURES` line
//! (run with `--nocapture` to see them; `docs/RELIABILITY.md` tables them) and asserts that nothing
//! acknowledged was lost. Loop counts are constants at the top of each test: they bound the time
//! the suite takes in CI, not what the code can take.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use automerge::ChangeHash;
use polyphony_core::model::{validate_document, CaseDoc, NoteKind, PersonField};
use polyphony_core::profile::{Profile, SyncProgress};
use polyphony_core::{CaseId, EntryId};
use polyphony_e2e::{
    free_udp_port, report_figures, DiskFault, DiskSwitch, FaultyStore, Impairment, LossyRelay,
    ServerProcess, SmallDisk, TestDevice, TestServer, PASSPHRASE, SYNC_TIMEOUT,
};
use polyphony_server::admin::AdminRequest;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

/// Every case both devices hold must be identical on both, and fully acknowledged.
async fn assert_converged(a: &mut TestDevice, b: &mut TestDevice) -> Result<usize> {
    let ca: BTreeSet<CaseId> = a.profile.case_ids()?.into_iter().collect();
    let cb: BTreeSet<CaseId> = b.profile.case_ids()?.into_iter().collect();
    ensure!(ca == cb, "the devices hold different cases");
    for case in &ca {
        let (mut da, mut db) = (a.profile.document(*case)?, b.profile.document(*case)?);
        let (mut ha, mut hb) = (da.get_heads(), db.get_heads());
        ha.sort();
        hb.sort();
        ensure!(ha == hb, "case {case}: the devices did not converge");
        ensure!(
            a.peek(*case)? == b.peek(*case)?,
            "case {case}: views differ"
        );
        ensure!(
            a.profile.unsynced(*case)? == 0,
            "case {case}: unsynced on a"
        );
        ensure!(
            b.profile.unsynced(*case)? == 0,
            "case {case}: unsynced on b"
        );
    }
    Ok(ca.len())
}

/// Count the notes in `markers` that `device` holds; every one must be there.
fn assert_notes(device: &mut TestDevice, markers: &BTreeMap<CaseId, Vec<String>>) -> Result<u64> {
    let mut found = 0;
    for (case, words) in markers {
        let notes = device.peek(*case)?.meetings[0].notes.clone();
        for w in words {
            ensure!(notes.contains(w.as_str()), "case {case}: note '{w}' lost");
            found += 1;
        }
    }
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_over_a_lossy_network_complete_and_converge() -> Result<()> {
    /// Cases each of the two devices opens.
    const CASES_PER_DEVICE: usize = 20;
    /// Rounds of offline edits followed by a sync of both devices (each sync takes seconds
    /// through the relay: QUIC backs off on every loss).
    const ROUNDS: usize = 2;
    /// Cases each device edits per round (its own and, from the second round, the other's).
    const EDITS_PER_ROUND: usize = 8;
    /// Attempts a sync gets before the test fails (QUIC should rarely need a second).
    const ATTEMPTS: usize = 5;
    let impairment = Impairment {
        loss: 0.20,
        duplicate: 0.05,
        max_delay: Duration::from_millis(200),
        seed: 0x5eed_0009,
        black_hole_replies: false,
    };

    let server = TestServer::start().await?;
    server.team("North").await?;
    server.practitioner("Sam", "North").await?;
    server.practitioner("Kit", "North").await?;
    let relay = LossyRelay::start(server.addr(), impairment).await?;
    let mut a = server.device_at("Sam", relay.addr()).await?;
    let mut b = server.device_at("Kit", relay.addr()).await?;

    let mut meetings: Vec<(CaseId, EntryId)> = Vec::new();
    for i in 0..CASES_PER_DEVICE {
        meetings.push(a.case_with_meeting(&format!("Person A{i}"))?);
        meetings.push(b.case_with_meeting(&format!("Person B{i}"))?);
    }
    let mut markers: BTreeMap<CaseId, Vec<String>> = BTreeMap::new();
    let (mut syncs, mut lost_attempts) = (0u64, 0u64);
    for round in 0..ROUNDS {
        for (who, device) in [("a", &mut a), ("b", &mut b)] {
            let held: BTreeSet<CaseId> = device.profile.case_ids()?.into_iter().collect();
            let mine = meetings.iter().filter(|(c, _)| held.contains(c));
            for (case, meeting) in mine.skip(round * 3).take(EDITS_PER_ROUND) {
                let word = format!("{who}-round{round}-{case}");
                device.note(*case, *meeting, &word)?;
                markers.entry(*case).or_default().push(word);
            }
        }
        for device in [&mut a, &mut b] {
            let (report, failed) = device.sync_retrying(ATTEMPTS).await?;
            ensure!(report.refused.is_empty(), "refused: {:?}", report.refused);
            syncs += 1;
            lost_attempts += failed as u64;
        }
    }
    // One more pass each, so both have everything the other uploaded last.
    for device in [&mut a, &mut b] {
        let (_, failed) = device.sync_retrying(ATTEMPTS).await?;
        syncs += 1;
        lost_attempts += failed as u64;
    }
    let cases = assert_converged(&mut a, &mut b).await?;
    ensure!(cases == 2 * CASES_PER_DEVICE, "{cases} cases converged");
    let verified = assert_notes(&mut a, &markers)? + assert_notes(&mut b, &markers)?;
    let counts = relay.counts();
    ensure!(counts.dropped > 0 && counts.duplicated > 0 && counts.reordered > 0);
    report_figures(
        "lossy_network",
        &[
            ("datagrams", counts.datagrams),
            ("dropped", counts.dropped),
            ("duplicated", counts.duplicated),
            ("reordered", counts.reordered),
            ("faults_injected", counts.faults()),
            ("syncs_completed", syncs),
            ("sync_attempts_lost", lost_attempts),
            ("cases_converged", cases as u64),
            ("changes_verified", verified),
            ("changes_lost", 0),
        ],
    );
    Ok(())
}

/// A seeded RNG; `POLYPHONY_FAULT_SEED` replays a run (the seed is printed either way).
fn rng(test: &str) -> StdRng {
    let seed = std::env::var("POLYPHONY_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("{test}: seed {seed} (set POLYPHONY_FAULT_SEED={seed} to replay)");
    StdRng::seed_from_u64(seed)
}

/// How many of a device's changes to a case the server has acknowledged.
fn acknowledged_changes(device: &mut TestDevice, case: CaseId) -> Result<u64> {
    let acked = device.profile.acknowledged_heads(case)?;
    let mut doc = device.profile.document(case)?;
    let all = doc.get_changes(&[]).len();
    let known: Vec<_> = acked
        .into_iter()
        .filter(|h| doc.get_change_by_hash(h).is_some())
        .collect();
    let after = if known.is_empty() {
        all
    } else {
        doc.get_changes(&known).len()
    };
    Ok((all - after) as u64)
}

/// Every change `writer` saw acknowledged is in `reader`'s copy (which it got from the server);
/// returns how many changes that covers.
fn assert_acknowledged_present(writer: &mut TestDevice, reader: &mut TestDevice) -> Result<u64> {
    let mut verified = 0;
    let held: BTreeSet<CaseId> = reader.profile.case_ids()?.into_iter().collect();
    for case in writer.profile.case_ids()? {
        let acked = writer.profile.acknowledged_heads(case)?;
        if acked.is_empty() {
            continue;
        }
        ensure!(
            held.contains(&case),
            "case {case} was acknowledged but the server lost it"
        );
        let mut doc = reader.profile.document(case)?;
        for h in &acked {
            ensure!(
                doc.get_change_by_hash(h).is_some(),
                "case {case}: acknowledged change {h} lost"
            );
        }
        verified += acknowledged_changes(writer, case)?;
    }
    Ok(verified)
}

/// A sync running in a task: gives the device back, with the sync's outcome.
type SyncTask = tokio::task::JoinHandle<(TestDevice, Result<(), String>)>;

/// Sync `device` in a task, publishing its progress (cases settled) so the test can strike at a
/// chosen point.
fn spawn_sync(mut device: TestDevice) -> (SyncTask, watch::Receiver<usize>) {
    let (tx, rx) = watch::channel(0usize);
    let task = tokio::spawn(async move {
        let mut progress = move |p: SyncProgress| {
            let _ = tx.send(p.settled);
        };
        let r = tokio::time::timeout(SYNC_TIMEOUT, device.profile.sync(&mut progress)).await;
        let r = match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        };
        (device, r)
    });
    (task, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_at_random_points_keeps_every_acknowledged_change() -> Result<()> {
    /// SIGKILL-and-restart rounds, each during the syncs of two devices.
    const ROUNDS: usize = 10;
    /// Cases each of the two writing devices opens.
    const CASES_PER_WRITER: usize = 30;
    /// Notes each writer adds per round, on cases it holds.
    const EDITS_PER_ROUND: usize = 20;
    let mut rng = rng("server_kill_loop");
    let data = tempfile::tempdir()?;
    let addr = format!("127.0.0.1:{}", free_udp_port()).parse()?;
    let mut server = ServerProcess::start(data.path().join("server"), addr).await?;
    server
        .admin(AdminRequest::TeamAdd {
            name: "North".into(),
        })
        .await?;
    for p in ["Sam", "Kit", "Jo"] {
        server
            .admin(AdminRequest::PractitionerAdd {
                name: p.into(),
                team: "North".into(),
                role: None,
            })
            .await?;
    }
    let mut a = server.device("Sam").await?;
    let mut c = server.device("Kit").await?;
    let mut reader = server.device("Jo").await?;
    let mut meetings: BTreeMap<CaseId, EntryId> = BTreeMap::new();
    for i in 0..CASES_PER_WRITER {
        let (case, m) = a.case_with_meeting(&format!("Person A{i}"))?;
        meetings.insert(case, m);
        let (case, m) = c.case_with_meeting(&format!("Person C{i}"))?;
        meetings.insert(case, m);
    }

    let (mut kills, mut interrupted, mut completed, mut verified) = (0u64, 0u64, 0u64, 0u64);
    let mut notes = 0u64;
    for round in 0..ROUNDS {
        for (who, device) in [("a", &mut a), ("c", &mut c)] {
            let held = device.profile.case_ids()?;
            for _ in 0..EDITS_PER_ROUND {
                let case = held[rng.random_range(0..held.len())];
                device.note(case, meetings[&case], &format!("{who} r{round} n{notes}"))?;
                notes += 1;
            }
        }
        let (ta, mut progress) = spawn_sync(a);
        let (tc, _) = spawn_sync(c);
        // Strike at a random point: after a random delay, or once a random share of the first
        // device's cases have settled (so some rounds kill with acknowledgements in flight).
        if rng.random_bool(0.5) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..600))).await;
        } else {
            let target = rng.random_range(1..=meetings.len());
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                progress.wait_for(|settled| *settled >= target),
            )
            .await;
        }
        server.kill();
        kills += 1;
        server = ServerProcess::start(data.path().join("server"), addr).await?;
        let ((back_a, ra), (back_c, rc)) = (ta.await?, tc.await?);
        (a, c) = (back_a, back_c);
        for outcome in [ra, rc] {
            match outcome {
                Ok(()) => completed += 1,
                Err(_) => interrupted += 1,
            }
        }
        // After the restart, a third device gets from the server everything either writer saw
        // acknowledged.
        reader.sync_retrying(3).await?;
        completed += 1;
        verified += assert_acknowledged_present(&mut a, &mut reader)?;
        verified += assert_acknowledged_present(&mut c, &mut reader)?;
    }

    // The writers' last syncs may have been cut by the last kill: let them finish, so every case
    // opened is acknowledged (and so must be in the store after the kill below).
    for device in [&mut a, &mut c] {
        device.sync_retrying(3).await?;
        completed += 1;
    }
    // Once more without warning, then open the store offline: it opens cleanly, every case in
    // it loads and is a valid record, and the audit chain is unbroken.
    server.kill();
    kills += 1;
    let opened = polyphony_server::data_dir::open(&server.config())?;
    let stored = opened.store.list_cases()?;
    for case in &stored {
        let chunks = opened.store.load_chunks(case)?.unwrap_or_default();
        let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, c)| c).collect();
        let doc = automerge::AutoCommit::load(&bytes)?;
        validate_document(&doc)?;
    }
    let audit = opened.audit.verify()?;
    drop(opened);
    server = ServerProcess::start(data.path().join("server"), addr).await?;

    // Then everyone converges and every note is everywhere.
    for _ in 0..2 {
        for device in [&mut a, &mut c, &mut reader] {
            device.sync_retrying(3).await?;
            completed += 1;
        }
    }
    let cases = assert_converged(&mut a, &mut reader).await?;
    assert_converged(&mut c, &mut reader).await?;
    ensure!(
        cases == meetings.len() && stored.len() == meetings.len(),
        "{} cases opened, {cases} converged, {} in the store opened offline after the last kill",
        meetings.len(),
        stored.len()
    );
    let final_acked: u64 = {
        let mut n = 0;
        for case in meetings.keys() {
            n += acknowledged_changes(&mut reader, *case)?;
        }
        n
    };
    drop(server);
    report_figures(
        "server_kill_loop",
        &[
            ("sigkills", kills),
            ("syncs_interrupted", interrupted),
            ("syncs_completed", completed),
            ("acknowledged_changes_checked_after_restarts", verified),
            ("notes_written", notes),
            ("changes_on_server_at_end", final_acked),
            ("cases_reloaded_offline", stored.len() as u64),
            ("audit_records_verified", audit.entries),
            ("changes_lost", 0),
        ],
    );
    Ok(())
}

// ---- A device killed mid-save and mid-sync ----------------------------------------------------
//
// The device must be a separate process to be SIGKILLed. Rather than a separate binary, this test
// binary re-runs itself selecting `client_child`, which works only when its environment says so
// (in a normal run it returns at once), as the store's own crash tests do.

const CHILD_HOME: &str = "POLYPHONY_CLIENT_CHILD_HOME";
const CHILD_MODE: &str = "POLYPHONY_CLIENT_CHILD_MODE";
const CHILD_START: &str = "POLYPHONY_CLIENT_CHILD_START";

/// The device process: edits its cases (printing `saved CASE STEP HEADS` once each edit is on
/// disk) and, in `sync` mode, syncs after every few edits (printing `syncing` first).
#[test]
fn client_child() {
    let Some(home) = std::env::var_os(CHILD_HOME).map(std::path::PathBuf::from) else {
        return;
    };
    let sync_mode = std::env::var(CHILD_MODE).as_deref() == Ok("sync");
    let start: u64 = std::env::var(CHILD_START)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut profile = Profile::open(&home, PASSPHRASE).expect("the child opens the profile");
    let cases = profile.case_ids().expect("cases");
    let mut out = std::io::stdout().lock();
    // Bounded, in case the parent dies without killing us.
    let deadline = Instant::now() + Duration::from_secs(30);
    for step in start..start + 100_000 {
        if Instant::now() > deadline {
            break;
        }
        let case = cases[step as usize % cases.len()];
        let doc = profile.document(case).expect("document");
        let view = CaseDoc::from_automerge(doc, None).expect("case").view();
        let meeting: EntryId = view.meetings[0].meta.id;
        let mut heads = profile
            .edit(case, |d| {
                d.append_text(&meeting, NoteKind::Notes, &format!("child step {step}."))?;
                Ok(d.heads())
            })
            .expect("edit");
        heads.sort();
        let heads: Vec<String> = heads.iter().map(|h| h.to_string()).collect();
        // Only now, with the edit on disk, is it "saved".
        writeln!(out, "saved {case} {step} {}", heads.join(",")).expect("stdout");
        out.flush().expect("stdout");
        if sync_mode && step % 3 == 2 {
            writeln!(out, "syncing").expect("stdout");
            out.flush().expect("stdout");
            let _ = runtime.block_on(profile.sync(&mut |_| {}));
            writeln!(out, "synced").expect("stdout");
        }
    }
}

/// One edit the child reported saved.
struct ChildSaved {
    case: CaseId,
    step: u64,
    heads: Vec<ChangeHash>,
}

fn parse_child_saved(line: &str) -> Option<ChildSaved> {
    let mut words = line.strip_prefix("saved ")?.split_whitespace();
    let case = words.next()?.parse().ok()?;
    let step = words.next()?.parse().ok()?;
    let heads = words
        .next()?
        .split(',')
        .map(|h| h.parse().ok())
        .collect::<Option<Vec<ChangeHash>>>()?;
    Some(ChildSaved { case, step, heads })
}

/// Kills the child if the test fails first, so no device outlives the test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_killed_mid_save_or_mid_sync_keeps_its_work_and_converges() -> Result<()> {
    /// Kill rounds; even rounds kill while editing, odd rounds while syncing (about a second each).
    const ROUNDS: u64 = 12;
    /// Cases on the device.
    const CASES: usize = 6;
    let mut rng = rng("client_kill_loop");
    let server = TestServer::start().await?;
    server.team("North").await?;
    server.practitioner("Sam", "North").await?;
    server.practitioner("Kit", "North").await?;
    let mut device = server.device("Sam").await?;
    let mut reader = server.device("Kit").await?;
    for i in 0..CASES {
        device.case_with_meeting(&format!("Person {i}"))?;
    }
    device.sync().await?;
    let home = device.home();

    let (mut kills, mut verified, mut syncs_started, mut completed) = (0u64, 0u64, 0u64, 0u64);
    let mut unsynced_after_kill = 0u64;
    for round in 0..ROUNDS {
        let mid_sync = round % 2 == 1;
        // Hand the store to the child: the profile must be closed here first (sled locks it).
        let TestDevice { dir, profile } = device;
        drop(profile);
        let mut child = KillOnDrop(
            Command::new(std::env::current_exe()?)
                .args(["client_child", "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_HOME, &home)
                .env(CHILD_MODE, if mid_sync { "sync" } else { "save" })
                .env(CHILD_START, (round * 1_000_000).to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?,
        );
        let mut lines = BufReader::new(child.0.stdout.take().expect("piped"));
        let mut saved: Vec<ChildSaved> = Vec::new();
        let wanted = rng.random_range(1..=20);
        let mut line = String::new();
        loop {
            line.clear();
            ensure!(
                lines.read_line(&mut line)? > 0,
                "the child exited early in round {round}"
            );
            if let Some(s) = parse_child_saved(&line) {
                saved.push(s);
            }
            if mid_sync && line.starts_with("syncing") {
                syncs_started += 1;
                // Somewhere inside the sync: connecting, trading messages, persisting.
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
                break;
            }
            if !mid_sync && saved.len() >= wanted {
                // Somewhere inside the next edit's write.
                std::thread::sleep(Duration::from_micros(rng.random_range(0..3_000)));
                break;
            }
        }
        child.0.kill()?;
        child.0.wait()?;
        kills += 1;
        // Whatever it printed before dying was saved too; a torn last line was not.
        let mut rest = String::new();
        lines.read_to_string(&mut rest)?;
        saved.extend(
            rest.split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .filter_map(parse_child_saved),
        );

        // The store reopens, with every saved edit in it.
        let profile = Profile::open(&home, PASSPHRASE)?;
        device = TestDevice { dir, profile };
        for s in &saved {
            let mut doc = device.profile.document(s.case)?;
            for h in &s.heads {
                ensure!(
                    doc.get_change_by_hash(h).is_some(),
                    "round {round}: step {} saved but lost after SIGKILL",
                    s.step
                );
            }
            let notes = device.peek(s.case)?.meetings[0].notes.clone();
            ensure!(notes.contains(&format!("child step {}.", s.step)));
            verified += 1;
        }
        for case in device.profile.case_ids()? {
            unsynced_after_kill += device.profile.unsynced(case)? as u64;
        }
        // And the next sync converges.
        device.sync().await?;
        reader.sync().await?;
        completed += 2;
        assert_converged(&mut device, &mut reader).await?;
    }
    report_figures(
        "client_kill_loop",
        &[
            ("sigkills", kills),
            ("killed_mid_sync", syncs_started),
            ("saved_edits_verified_after_kill", verified),
            ("unsynced_changes_kept_across_kills", unsynced_after_kill),
            ("syncs_completed", completed),
            ("changes_lost", 0),
        ],
    );
    Ok(())
}

// ---- Weeks offline ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_offline_for_weeks_converges_with_a_server_that_moved_on() -> Result<()> {
    /// Cases both devices hold before one goes away.
    const SHARED_CASES: usize = 10;
    /// Edits the device makes while away (notes, and now and then a field both sides set).
    const AWAY_EDITS: usize = 300;
    /// Edits the rest of the team makes meanwhile, synced as they go.
    const TEAM_EDITS: usize = 300;
    /// How often the team syncs while the device is away.
    const TEAM_SYNC_EVERY: usize = 15;
    /// Cases each side opens while apart.
    const NEW_CASES_EACH: usize = 3;
    let mut rng = rng("weeks_offline");
    let server = TestServer::start().await?;
    server.team("North").await?;
    server.practitioner("Sam", "North").await?;
    server.practitioner("Kit", "North").await?;
    let mut away = server.device("Sam").await?;
    let mut team = server.device("Kit").await?;
    let mut meetings: BTreeMap<CaseId, EntryId> = BTreeMap::new();
    for i in 0..SHARED_CASES {
        let (case, m) = team.case_with_meeting(&format!("Person {i}"))?;
        meetings.insert(case, m);
    }
    team.sync().await?;
    away.sync().await?;
    let shared: Vec<CaseId> = meetings.keys().copied().collect();

    // Apart: the device edits offline; the team edits, opens cases and syncs every so often.
    let mut markers: BTreeMap<CaseId, Vec<String>> = BTreeMap::new();
    let mut away_cases = shared.clone();
    for i in 0..NEW_CASES_EACH {
        let (case, m) = away.case_with_meeting(&format!("Opened away {i}"))?;
        meetings.insert(case, m);
        away_cases.push(case);
    }
    for i in 0..AWAY_EDITS {
        let case = away_cases[rng.random_range(0..away_cases.len())];
        if i % 25 == 0 {
            away.profile.edit(case, |d| {
                d.set_person(PersonField::PreferredName, Some(&format!("Away {i}")))
            })?;
        } else {
            let word = format!("away-{i}");
            away.note(case, meetings[&case], &word)?;
            markers.entry(case).or_default().push(word);
        }
    }
    let mut team_cases = shared.clone();
    let mut team_syncs = 0;
    for i in 0..TEAM_EDITS {
        if i % (TEAM_EDITS / NEW_CASES_EACH) == 0 {
            let (case, m) = team.case_with_meeting(&format!("Opened meanwhile {i}"))?;
            meetings.insert(case, m);
            team_cases.push(case);
        }
        let case = team_cases[rng.random_range(0..team_cases.len())];
        if i % 25 == 0 {
            team.profile.edit(case, |d| {
                d.set_person(PersonField::PreferredName, Some(&format!("Team {i}")))
            })?;
        } else {
            let word = format!("team-{i}");
            team.note(case, meetings[&case], &word)?;
            markers.entry(case).or_default().push(word);
        }
        if i % TEAM_SYNC_EVERY == TEAM_SYNC_EVERY - 1 {
            step("team", team.sync()).await?;
            team_syncs += 1;
        }
    }
    step("team", team.sync()).await?;

    // Back: one sync uploads everything and brings everything down.
    let unsynced_before = {
        let mut n = 0;
        for case in &away_cases {
            n += away.profile.unsynced(*case)?;
        }
        n
    };
    let t = Instant::now();
    let report = step("away", away.sync()).await?;
    let back_ms = t.elapsed().as_millis() as u64;
    ensure!(report.refused.is_empty(), "{:?}", report.refused);
    ensure!(
        report.unsynced_changes == 0,
        "everything uploaded in one sync"
    );
    step("team", team.sync()).await?;
    let cases = assert_converged(&mut away, &mut team).await?;
    ensure!(cases == meetings.len());
    let verified = assert_notes(&mut away, &markers)? + assert_notes(&mut team, &markers)?;
    // Both devices set the preferred name while apart: the conflict is shown, not resolved
    // silently.
    let conflicts: usize = shared
        .iter()
        .map(|c| away.peek(*c).map(|v| v.conflicts.len()))
        .sum::<Result<usize, _>>()?;
    report_figures(
        "weeks_offline",
        &[
            ("away_edits", AWAY_EDITS as u64),
            ("team_edits", TEAM_EDITS as u64),
            ("team_syncs_meanwhile", team_syncs + 1),
            ("unsynced_changes_on_return", unsynced_before as u64),
            ("sync_on_return_ms", back_ms),
            ("cases_converged", cases as u64),
            ("notes_verified_on_both", verified),
            ("conflicts_shown", conflicts as u64),
            ("changes_lost", 0),
        ],
    );
    Ok(())
}

// ---- A full disk on the server ------------------------------------------------------------------

/// The changes of `case` on `device` that its acknowledged heads do not cover.
fn unacknowledged(device: &mut TestDevice, case: CaseId) -> Result<BTreeSet<ChangeHash>> {
    let acked = device.profile.acknowledged_heads(case)?;
    let mut doc = device.profile.document(case)?;
    let known: Vec<ChangeHash> = acked
        .into_iter()
        .filter(|h| doc.get_change_by_hash(h).is_some())
        .collect();
    Ok(doc.get_changes(&known).iter().map(|c| c.hash()).collect())
}

/// Run one step of a test on loopback, failing (rather than hanging) if it takes a minute.
async fn step<T, E: Into<anyhow::Error>>(
    what: &str,
    f: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> Result<T> {
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .map_err(|_| anyhow::anyhow!("{what}: no answer within a minute"))?
        .map_err(Into::into);
    eprintln!("[{what}] {:?}", t.elapsed());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_acknowledges_nothing_and_recovers() -> Result<()> {
    /// Cases opened before the disk fills.
    const CASES: usize = 5;
    let switch = DiskSwitch::default();
    let control = switch.clone();
    let mut server =
        TestServer::start_with_store(move |store| FaultyStore::wrap(store, control)).await?;
    server.team("North").await?;
    for p in ["Sam", "Kit", "Jo"] {
        server.practitioner(p, "North").await?;
    }
    let mut writer = server.device("Sam").await?;
    let mut reader = server.device("Kit").await?;
    let late_code = server.code("Jo").await?;
    let mut meetings = BTreeMap::new();
    for i in 0..CASES {
        let (case, m) = writer.case_with_meeting(&format!("Person {i}"))?;
        meetings.insert(case, m);
    }
    step("writer", writer.sync()).await?;
    let original: BTreeSet<CaseId> = meetings.keys().copied().collect();

    let (mut refusals, mut reader_syncs, mut refused_enrolments) = (0u64, 0u64, 0u64);
    let mut reader_refusals = 0u64;
    for fault in [DiskFault::WritesFail, DiskFault::FlushFails] {
        switch.set(fault);
        let acked_before: BTreeMap<CaseId, Vec<ChangeHash>> = meetings
            .keys()
            .map(|c| Ok((*c, writer.profile.acknowledged_heads(*c)?)))
            .collect::<Result<_>>()?;
        for (case, m) in &meetings {
            writer.note(
                *case,
                *m,
                &format!("written while the disk is full ({fault:?})"),
            )?;
        }
        let (fresh, _) =
            writer.case_with_meeting(&format!("Opened while the disk is full ({fault:?})"))?;

        // Every write is refused, in words that say why; nothing is acknowledged.
        let report = step("writer", writer.sync()).await?;
        ensure!(
            report.refused.len() > CASES,
            "{fault:?}: expected every case refused, got {:?}",
            report.refused
        );
        for (case, why) in &report.refused {
            ensure!(
                why.contains("could not save"),
                "{fault:?}: case {case} refused with an unclear reason: {why}"
            );
        }
        refusals += report.refused.len() as u64;
        for (case, before) in &acked_before {
            ensure!(
                &writer.profile.acknowledged_heads(*case)? == before,
                "{fault:?}: case {case}: a change the server could not store was acknowledged"
            );
        }
        ensure!(writer.profile.acknowledged_heads(fresh)?.is_empty());
        ensure!(
            report.unsynced_changes > 0,
            "the unsynced work stays on the device"
        );

        // Reads wait: the server cannot make the record of a read durable, so another device
        // receives no case data (issue 14, finding 11), each case refused in words that fit a
        // reader, and is told nothing is safe that the server never stored.
        let unsaved: BTreeSet<ChangeHash> = meetings
            .keys()
            .map(|c| unacknowledged(&mut writer, *c))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        let before: BTreeMap<CaseId, Vec<ChangeHash>> = reader
            .profile
            .case_ids()?
            .into_iter()
            .map(|c| Ok((c, reader.profile.document(c)?.get_heads())))
            .collect::<Result<_>>()?;
        let read = step("reader", reader.sync()).await?;
        reader_syncs += 1;
        for case in &original {
            let heads = match reader.profile.case_ids()?.contains(case) {
                true => reader.profile.document(*case)?.get_heads(),
                false => Vec::new(),
            };
            ensure!(
                before.get(case).cloned().unwrap_or_default() == heads,
                "{fault:?}: case {case} reached the reader while the server could not record the read"
            );
            let mut doc = reader.profile.document(*case).ok();
            let pending = unacknowledged(&mut reader, *case).unwrap_or_default();
            for h in &unsaved {
                if doc
                    .as_mut()
                    .is_some_and(|d| d.get_change_by_hash(h).is_some())
                {
                    ensure!(
                        pending.contains(h),
                        "{fault:?}: the reader was told a change is safe that the server never stored"
                    );
                }
            }
        }
        ensure!(
            read.refused.len() >= original.len(),
            "{fault:?}: every case refused to the reader: {read:?}"
        );
        for (case, why) in &read.refused {
            ensure!(
                why.contains("sent nothing of this case") && !why.contains("your changes"),
                "{fault:?}: case {case} refused to the reader in unclear words: {why}"
            );
        }
        reader_refusals += read.refused.len() as u64;

        // A new device cannot enrol (the server cannot record it), and is told so.
        let dir = tempfile::tempdir()?;
        let mut profile = Profile::open(&dir.path().join("home"), PASSPHRASE)?;
        if fault == DiskFault::WritesFail {
            let err = profile
                .enrol(&server.addr().to_string(), &late_code, "Jo's laptop")
                .await
                .err()
                .ok_or_else(|| anyhow::anyhow!("{fault:?}: a device enrolled on a full disk"))?;
            ensure!(
                err.to_string().contains("could not"),
                "unclear enrolment refusal: {err}"
            );
            refused_enrolments += 1;
        }
        meetings.insert(fresh, writer.peek(fresh)?.meetings[0].meta.id);
    }

    // Space returns: the same sync goes through, the code still works, everyone converges.
    switch.set(DiskFault::None);
    let report = step("writer", writer.sync()).await?;
    ensure!(
        report.refused.is_empty(),
        "after recovery: {:?}",
        report.refused
    );
    ensure!(report.unsynced_changes == 0);
    step("reader", reader.sync()).await?;
    step("writer", writer.sync()).await?;
    assert_converged(&mut writer, &mut reader).await?;
    let dir = tempfile::tempdir()?;
    let mut profile = Profile::open(&dir.path().join("home"), PASSPHRASE)?;
    profile
        .enrol(&server.addr().to_string(), &late_code, "Jo's laptop")
        .await?;
    let mut late = TestDevice { dir, profile };

    // And what was acknowledged after recovery is on disk: restarted over the plain store, the
    // server gives a new device all of it.
    server.restart().await?;
    step("late", late.sync()).await?;
    let verified = assert_acknowledged_present(&mut writer, &mut late)?;
    ensure!(late.profile.case_ids()?.len() == meetings.len());
    report_figures(
        "disk_full",
        &[
            ("faults", 2),
            ("store_operations_refused", switch.refused()),
            ("case_syncs_refused", refusals),
            ("reader_syncs_during_fault", reader_syncs),
            ("reader_case_refusals", reader_refusals),
            ("enrolments_refused", refused_enrolments),
            ("acknowledged_changes_verified_after_restart", verified),
            ("changes_lost", 0),
        ],
    );
    Ok(())
}

/// The server's store on a real 8 MiB filesystem that the test fills, then frees. While it is
/// full the server must refuse writes in clear words, acknowledge nothing it did not store, send
/// no case data whose read it cannot record, and tell a new device it cannot be enrolled. Once space returns the *same
/// process* must take the writes (sled 0.34 keeps its first I/O error, so the server reopens its
/// store: see `server/src/reopen.rs`), end the sync connections opened before the reopen with a
/// clear error, and enrol the device. Then a SIGKILL (nothing flushed on the way down) and a
/// restart must find every change that was acknowledged. Says SKIPPED where the machine cannot
/// mount a filesystem for the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_full_filesystem_refuses_writes_then_the_running_server_takes_them_once_space_returns(
) -> Result<()> {
    /// Cases written before the disk fills.
    const CASES: usize = 5;
    let data = tempfile::tempdir()?;
    let server_dir = data.path().join("server");
    let skip = |why: &str| {
        eprintln!("SKIPPED: {why}");
        report_figures("real_full_disk", &[("skipped", 1)]);
        Ok(())
    };
    let Some(disk) = SmallDisk::mount(&server_dir.join("db"), 8 << 20)? else {
        return skip("this machine cannot mount a small filesystem for the test (needs root or user namespaces, and unshare)");
    };
    let addr = format!("127.0.0.1:{}", free_udp_port()).parse()?;
    let mut server = match ServerProcess::start_via(&disk.prefix(), server_dir.clone(), addr).await
    {
        Ok(s) => s,
        // The mount worked but entering its namespace did not (a sandbox that allows one and
        // not the other): this machine cannot run the test.
        Err(e) => {
            return skip(&format!(
                "cannot start the server on the small filesystem: {e}"
            ))
        }
    };
    let pid = server.pid();
    server
        .admin(AdminRequest::TeamAdd {
            name: "North".into(),
        })
        .await?;
    for p in ["Sam", "Kit", "Jo", "Lee"] {
        server
            .admin(AdminRequest::PractitionerAdd {
                name: p.into(),
                team: "North".into(),
                role: None,
            })
            .await?;
    }
    let mut writer = server.device("Sam").await?;
    let mut reader = server.device("Kit").await?;
    let watcher = server.device("Lee").await?;
    let late_code = polyphony_e2e::code_from(
        &server
            .admin(AdminRequest::Enrol {
                practitioner: "Jo".into(),
            })
            .await?,
    )?;
    let mut meetings = Vec::new();
    for i in 0..CASES {
        meetings.push(writer.case_with_meeting(&format!("Person {i}"))?);
    }
    step("writer", writer.sync()).await?;
    let acked_before: Vec<Vec<ChangeHash>> = meetings
        .iter()
        .map(|(c, _)| writer.profile.acknowledged_heads(*c))
        .collect::<Result<_, _>>()?;

    // A device holds a live session open across the whole fault.
    let e = watcher.profile.enrolment().expect("enrolled").clone();
    let live = tokio::spawn(async move {
        polyphony_e2e::run_session(addr, &e, polyphony_e2e::TestHost::default(), true).await
    });

    disk.fill()?;
    for (case, meeting) in &meetings {
        writer.note(*case, *meeting, &"Written on a full disk. ".repeat(40))?;
    }
    let report = step("writer", writer.sync()).await?;
    ensure!(
        report.refused.len() == CASES,
        "every write refused: {:?}",
        report.refused
    );
    for (case, why) in &report.refused {
        ensure!(
            why.contains("could not save") && why.contains("No space left"),
            "case {case}: unclear refusal: {why}"
        );
    }
    for ((case, _), before) in meetings.iter().zip(&acked_before) {
        ensure!(
            &writer.profile.acknowledged_heads(*case)? == before,
            "case {case}: acknowledged on a full disk"
        );
    }
    // Reads wait: the server cannot record a read on a full disk, so another device receives
    // no case data (issue 14, finding 11), each case refused in words that say why.
    let read = step("reader", reader.sync()).await?;
    for (case, _) in &meetings {
        let received = reader.profile.case_ids()?.contains(case)
            && !reader.profile.document(*case)?.get_heads().is_empty();
        ensure!(
            !received,
            "case {case} reached the reader on a full disk, where its read cannot be recorded"
        );
    }
    ensure!(read.refused.len() == CASES, "reader: {read:?}");
    for (case, why) in &read.refused {
        ensure!(
            why.contains("sent nothing of this case"),
            "case {case}: unclear refusal to the reader: {why}"
        );
    }
    let reader_refusals = read.refused.len() as u64;
    // A new device is told the server cannot record it.
    let dir = tempfile::tempdir()?;
    let mut profile = Profile::open(&dir.path().join("home"), PASSPHRASE)?;
    let refused = step(
        "enrol",
        profile.enrol(&server.addr.to_string(), &late_code, "Jo's laptop"),
    )
    .await
    .err()
    .ok_or_else(|| anyhow::anyhow!("a device enrolled on a full disk"))?;
    ensure!(
        refused.to_string().contains("could not save the enrolment"),
        "unclear enrolment refusal: {refused}"
    );
    // The server does not reopen its store while the disk is still full: the live session is
    // still open.
    ensure!(
        !live.is_finished(),
        "the live session ended during the fault"
    );

    // Space returns. The same process takes the same writes at the next sync.
    disk.free()?;
    let freed = Instant::now();
    let again = step("writer", writer.sync()).await?;
    let recovery_ms = freed.elapsed().as_millis() as u64;
    ensure!(
        again.refused.is_empty() && again.unsynced_changes == 0,
        "the running server still refuses writes after space returned: {:?}",
        again.refused
    );
    ensure!(
        server.running() && server.pid() == pid,
        "the server process was restarted"
    );
    for ((case, _), before) in meetings.iter().zip(&acked_before) {
        ensure!(
            &writer.profile.acknowledged_heads(*case)? != before,
            "case {case}: the note written on the full disk is not acknowledged after recovery"
        );
    }
    // The live session, opened before the reopen, was ended in words that say why.
    let ended = tokio::time::timeout(Duration::from_secs(30), live)
        .await
        .map_err(|_| anyhow::anyhow!("the live session was not ended by the reopen"))??;
    let why = match ended {
        Ok((code, _)) => format!("ended normally ({code:?})"),
        Err(e) => e.to_string(),
    };
    ensure!(
        why.contains("reopened its store after a disk error"),
        "the live session ended unclearly: {why}"
    );
    // The enrolment refused during the fault works now.
    step(
        "enrol",
        profile.enrol(&server.addr.to_string(), &late_code, "Jo's laptop"),
    )
    .await?;
    let mut late = TestDevice { dir, profile };
    let read = step("reader", reader.sync()).await?;
    ensure!(read.refused.is_empty(), "reader after the fault: {read:?}");
    for (case, _) in &meetings {
        ensure!(reader.peek(*case)?.person.name.starts_with("Person"));
    }
    assert_converged(&mut writer, &mut reader).await?;

    // Everything acknowledged is on disk: a SIGKILL (nothing flushed on the way down) and a
    // restart, and a device that never synced before receives all of it.
    server.kill();
    let server = ServerProcess::start_via(&disk.prefix(), server_dir.clone(), addr).await?;
    step("late", late.sync()).await?;
    let verified = assert_acknowledged_present(&mut writer, &mut late)?;
    ensure!(late.profile.case_ids()?.len() == CASES);
    drop(server);
    report_figures(
        "real_full_disk",
        &[
            ("writes_refused", CASES as u64 + 1),
            ("reader_case_refusals", reader_refusals),
            ("recovered_without_restart", 1),
            ("recovery_sync_ms", recovery_ms),
            ("live_sessions_ended_by_reopen", 1),
            ("acknowledged_changes_verified_after_kill", verified),
            ("changes_lost", 0),
        ],
    );
    Ok(())
}
