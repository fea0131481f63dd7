//! `polyphony-load soak`: SIGKILL the server and device processes, again and again, during live
//! multi-device syncs with long histories, and check after every kill that nothing acknowledged
//! or saved was lost. Not part of CI (a full run takes the better part of an hour); a bounded run
//! is in `load/tests/soak.rs`, and the figures of a long run are in `docs/RELIABILITY.md`.
//!
//! The soak runs in rounds. In each round every device (the real `polyphony` command, one process
//! per operation, two practitioners of one team sharing every case) appends notes to the shared
//! meetings and syncs, all at once, for a random while; some of their commands are SIGKILLed at a
//! random moment of their run, and after each such kill the device's profile is opened and every
//! note it reported saved must be in it. Then the server is SIGKILLed while a sync is running; any
//! sync still running is killed too (against a dead server it would wait out the idle timeout).
//! With nothing running, the server's store is opened offline, as the restarted server will load
//! it, and every head any device recorded as acknowledged must be a change in it; then the server
//! is started again on the same data and port. Every case gets a sync from every device in every
//! round, so its history grows by hundreds of syncs and crosses the server's and the devices'
//! compaction threshold (32 chunks) many times; each time the log's first chunk moves is counted.
//!
//! The seed (printed) fixes every choice: which command next, which to kill and how far into it,
//! how long each round runs. The timing of processes does not repeat exactly, so a replay follows
//! the same schedule, not the same interleaving.

pub mod check;
pub mod device;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use polyphony_core::CaseId;
use serde::Serialize;
use tokio::sync::watch;

use crate::caseload::Seed;
use crate::server::{BenchServer, ServerSpec};
use check::{Checked, ServerSnapshot};
use device::{CliDevice, Ended, Op, SharedCase};

/// The soak's settings.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// The `polyphony-server` binary.
    pub server_bin: PathBuf,
    /// The `polyphony` binary (a device).
    pub cli_bin: PathBuf,
    /// Run until the server has been SIGKILLed this often...
    pub server_kills: u64,
    /// ...and device processes this often (kills while the server was up, at a random moment).
    pub device_kills: u64,
    /// Devices (alternately the two practitioners' laptops).
    pub devices: usize,
    /// Cases, each shared by every device.
    pub cases: usize,
    /// Fixes every random choice.
    pub seed: u64,
    /// The longest a round runs before its server kill.
    pub max_round: Duration,
    /// Percent of device commands scheduled for a SIGKILL.
    pub device_kill_percent: u64,
    /// Stop (with the counts so far) after this long, even if the kill targets are not reached.
    pub time_limit: Option<Duration>,
}

/// What a soak did: the figures `docs/RELIABILITY.md` records.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakCounts {
    /// The seed of the schedule.
    pub seed: u64,
    /// Rounds run (one server kill each).
    pub rounds: u64,
    /// SIGKILLs of the server.
    pub server_kills: u64,
    /// Of those, with at least one device's sync process running.
    pub server_kills_mid_sync: u64,
    /// SIGKILLs of device processes at a random moment while the server was up.
    pub device_kills: u64,
    /// Of those, during a `polyphony sync`.
    pub device_kills_mid_sync: u64,
    /// Of those, during a `polyphony note append`.
    pub device_kills_mid_save: u64,
    /// Further SIGKILLs of sync processes left running when the server was killed.
    pub device_kills_at_server_kill: u64,
    /// `polyphony sync` processes started.
    pub syncs_started: u64,
    /// Of those, that finished with everything sent (exit 0).
    pub syncs_completed: u64,
    /// Cut by a device SIGKILL.
    pub syncs_cut_by_device_kill: u64,
    /// Cut by the server's SIGKILL (exit 2, or killed with the server).
    pub syncs_cut_by_server_kill: u64,
    /// Failed otherwise (exit 2 with the server up: it was still starting, say).
    pub syncs_failed: u64,
    /// Notes a `note append` reported saved.
    pub notes_saved: u64,
    /// `note append` processes killed before they reported.
    pub notes_cut: u64,
    /// Acknowledged heads looked up in the server's store after its kills.
    pub acknowledged_heads_checked: u64,
    /// Changes those heads cover, looked up with them.
    pub acknowledged_changes_checked: u64,
    /// Saved notes looked up in their device's profile after a kill.
    pub saved_notes_checked: u64,
    /// Times a case's stored log was seen compacted on the server (first chunk moved).
    pub server_compactions_seen: u64,
    /// The same on the devices.
    pub device_compactions_seen: u64,
    /// Changes in the server's copy of each case at the end (the history's length).
    pub changes_per_case_at_end: Vec<u64>,
    /// At the end, after every device synced: notes checked on every device and on the server.
    pub final_notes_checked: u64,
    /// Acknowledged changes or saved notes missing: must be 0.
    pub lost: u64,
    /// Whether the kill targets were reached (false: stopped by the time limit).
    pub targets_reached: bool,
    /// Wall time.
    pub elapsed_s: u64,
}

impl SoakCounts {
    fn add_checked(&mut self, c: Checked) {
        self.acknowledged_heads_checked += c.heads;
        self.acknowledged_changes_checked += c.changes;
        self.saved_notes_checked += c.notes;
        self.lost += c.lost;
    }

    fn merge(&mut self, o: &SoakCounts) {
        self.device_kills += o.device_kills;
        self.device_kills_mid_sync += o.device_kills_mid_sync;
        self.device_kills_mid_save += o.device_kills_mid_save;
        self.device_kills_at_server_kill += o.device_kills_at_server_kill;
        self.syncs_started += o.syncs_started;
        self.syncs_completed += o.syncs_completed;
        self.syncs_cut_by_device_kill += o.syncs_cut_by_device_kill;
        self.syncs_cut_by_server_kill += o.syncs_cut_by_server_kill;
        self.syncs_failed += o.syncs_failed;
        self.notes_saved += o.notes_saved;
        self.notes_cut += o.notes_cut;
        self.acknowledged_heads_checked += o.acknowledged_heads_checked;
        self.acknowledged_changes_checked += o.acknowledged_changes_checked;
        self.saved_notes_checked += o.saved_notes_checked;
        self.lost += o.lost;
    }

    /// One line for a log: `SOAK key=value ...`.
    pub fn line(&self) -> String {
        let v = serde_json::to_value(self).unwrap_or_default();
        let fields: Vec<String> = v
            .as_object()
            .map(|o| o.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default();
        format!("SOAK {}", fields.join(" "))
    }
}

/// Run the soak. Returns the counts; `lost` above 0 means something acknowledged or saved
/// vanished (each loss was printed to stderr as it was found).
pub async fn run(cfg: &SoakConfig) -> Result<SoakCounts> {
    if cfg.devices < 2 || cfg.cases == 0 {
        bail!("the soak needs at least 2 devices and 1 case");
    }
    for bin in [&cfg.server_bin, &cfg.cli_bin] {
        if !bin.exists() {
            bail!(
                "{} is missing: build it first (`cargo build --release --workspace --bins`)",
                bin.display()
            );
        }
    }
    let started = Instant::now();
    let mut counts = SoakCounts {
        seed: cfg.seed,
        ..SoakCounts::default()
    };
    let mut schedule = Seed::new(cfg.seed);
    let mut server = BenchServer::start(
        ServerSpec::Child {
            bin: cfg.server_bin.clone(),
        },
        None,
    )
    .await?;
    let homes = tempfile::tempdir()?;
    let (mut devices, cases) = set_up(cfg, &server, homes.path()).await?;
    let mut first_seq: BTreeMap<(usize, CaseId), u64> = BTreeMap::new();

    loop {
        let done =
            counts.server_kills >= cfg.server_kills && counts.device_kills >= cfg.device_kills;
        let out_of_time = cfg.time_limit.is_some_and(|t| started.elapsed() >= t);
        if done || out_of_time {
            counts.targets_reached = done;
            break;
        }
        let live =
            Duration::from_millis(schedule.next_u64() % (cfg.max_round.as_millis() as u64).max(1));
        devices = round(cfg, &mut server, devices, &cases, live, &mut counts).await?;

        // Nothing runs now. The store as the restarted server will find it:
        let mut snapshot = tokio::task::block_in_place(|| check::server_snapshot(&server.data))?;
        count_compactions(
            &mut first_seq,
            usize::MAX,
            &snapshot.first_seq,
            &mut counts.server_compactions_seen,
        );
        for dev in &devices {
            let (checked, seqs) = check_device(dev, &cases, Some(&mut snapshot))?;
            counts.add_checked(checked);
            count_compactions(
                &mut first_seq,
                dev.index,
                &seqs,
                &mut counts.device_compactions_seen,
            );
        }
        drop(snapshot);
        restart(&mut server).await?;
        counts.rounds += 1;
        if counts.lost > 0 {
            eprintln!("soak: stopping at the first loss (seed {})", cfg.seed);
            break;
        }
        if counts.rounds.is_multiple_of(25) {
            eprintln!(
                "soak: {:?}: {} server kills, {} device kills, {} syncs completed, {} acknowledged heads checked, lost {}",
                started.elapsed(),
                counts.server_kills,
                counts.device_kills,
                counts.syncs_completed,
                counts.acknowledged_heads_checked,
                counts.lost
            );
        }
    }

    if counts.lost == 0 {
        finish(&mut server, &mut devices, &cases, &mut counts).await?;
    }
    server.stop().await;
    counts.elapsed_s = started.elapsed().as_secs();
    Ok(counts)
}

/// Start the server again on the same data and port. The killed process's files are unlocked as
/// soon as it is reaped, but give a slow machine a few tries.
async fn restart(server: &mut BenchServer) -> Result<()> {
    let mut last = None;
    for _ in 0..5 {
        match server.start_again().await {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last.unwrap_or_else(|| anyhow!("no restart attempted")))
}

fn count_compactions(
    seen: &mut BTreeMap<(usize, CaseId), u64>,
    who: usize,
    now: &BTreeMap<CaseId, u64>,
    count: &mut u64,
) {
    for (case, seq) in now {
        if let Some(before) = seen.insert((who, *case), *seq) {
            if *seq > before {
                *count += 1;
            }
        }
    }
}

/// Check a device's profile (argon2, sled: blocking work, so off the async threads' duty).
fn check_device(
    dev: &CliDevice,
    cases: &[SharedCase],
    snapshot: Option<&mut ServerSnapshot>,
) -> Result<(Checked, BTreeMap<CaseId, u64>)> {
    tokio::task::block_in_place(|| check::device(dev, cases, snapshot))
}

/// Enrol the devices (through the real `polyphony enrol`), open the cases on the first one with a
/// meeting each, and give every device every case.
async fn set_up(
    cfg: &SoakConfig,
    server: &BenchServer,
    homes: &std::path::Path,
) -> Result<(Vec<CliDevice>, Vec<SharedCase>)> {
    let practitioners = ["Sam Carer", "Kit Carer"];
    for p in practitioners {
        server.practitioner(p, "North").await?;
    }
    let addr = server.addr.to_string();
    let mut devices = Vec::new();
    for i in 0..cfg.devices {
        let dev = CliDevice::new(
            i,
            homes.join(format!("device-{i}")),
            cfg.cli_bin.clone(),
            cfg.seed,
        );
        let code = server.code(practitioners[i % 2]).await?;
        dev.setup(&[
            "enrol",
            &addr,
            &code,
            "--device-name",
            &format!("soak device {i}"),
        ])
        .await?;
        devices.push(dev);
    }
    let mut cases = Vec::new();
    for k in 0..cfg.cases {
        let case = devices[0]
            .setup(&["case", "new", "--name", &format!("Soak person {k}")])
            .await?;
        let meeting = devices[0]
            .setup(&[
                "meeting",
                "add",
                &case,
                "--at",
                "2026-03-14T10:30",
                "--place",
                "home",
                "--attendee",
                "person",
            ])
            .await?;
        cases.push(SharedCase {
            case: case.parse().context("case id from `case new`")?,
            meeting: meeting.parse().context("meeting id from `meeting add`")?,
        });
    }
    for dev in &devices {
        dev.setup(&["sync"]).await?;
    }
    Ok((devices, cases))
}

/// Shared by the devices of a round: how many sync processes are running now.
#[derive(Default)]
struct Live {
    syncing: AtomicUsize,
}

/// One round: every device works until the server is killed; returns the devices when all have
/// stopped.
async fn round(
    cfg: &SoakConfig,
    server: &mut BenchServer,
    devices: Vec<CliDevice>,
    cases: &[SharedCase],
    live: Duration,
    counts: &mut SoakCounts,
) -> Result<Vec<CliDevice>> {
    let (killed_tx, killed_rx) = watch::channel(false);
    let shared = Arc::new(Live::default());
    let workers: Vec<_> = devices
        .into_iter()
        .map(|dev| {
            tokio::spawn(work(
                dev,
                cases.to_vec(),
                cfg.device_kill_percent,
                shared.clone(),
                killed_rx.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(live).await;
    // Strike while a sync runs (any device's), waiting at most a few seconds for one.
    let deadline = Instant::now() + Duration::from_secs(5);
    while shared.syncing.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mid_sync = shared.syncing.load(Ordering::SeqCst) > 0;
    server.kill();
    counts.server_kills += 1;
    counts.server_kills_mid_sync += u64::from(mid_sync);
    let _ = killed_tx.send(true);
    let mut back = Vec::new();
    let mut failure = None;
    for w in workers {
        let (dev, c, result) = w.await?;
        counts.merge(&c);
        if let Err(e) = result {
            failure.get_or_insert(e);
        }
        back.push(dev);
    }
    match failure {
        Some(e) => Err(e),
        None => {
            back.sort_by_key(|d| d.index);
            Ok(back)
        }
    }
}

/// A device's part of a round: commands one after another until the server is killed.
async fn work(
    mut dev: CliDevice,
    cases: Vec<SharedCase>,
    kill_percent: u64,
    live: Arc<Live>,
    mut killed: watch::Receiver<bool>,
) -> (CliDevice, SoakCounts, Result<()>) {
    let mut counts = SoakCounts::default();
    let result: Result<()> = async {
        while !*killed.borrow() {
            let op = if dev.seed.next_u64() % 100 < 55 {
                Op::Note(cases[(dev.seed.next_u64() % cases.len() as u64) as usize])
            } else {
                Op::Sync
            };
            let kill_after =
                (dev.seed.next_u64() % 100 < kill_percent).then(|| dev.kill_delay(&op));
            let token = dev.next_token();
            if op == Op::Sync {
                counts.syncs_started += 1;
                live.syncing.fetch_add(1, Ordering::SeqCst);
            }
            let ended = dev.run(op, &token, kill_after, &mut killed).await;
            if op == Op::Sync {
                live.syncing.fetch_sub(1, Ordering::SeqCst);
            }
            let server_down = *killed.borrow();
            match (op, ended?) {
                (Op::Sync, Ended::Exited(0, _)) => counts.syncs_completed += 1,
                (Op::Note(_), Ended::Exited(0, _)) => counts.notes_saved += 1,
                (Op::Sync, Ended::Exited(2, _)) if server_down => {
                    counts.syncs_cut_by_server_kill += 1
                }
                (Op::Sync, Ended::Exited(2, _)) => counts.syncs_failed += 1,
                (_, Ended::Exited(code, err)) => {
                    bail!("device {}: {op:?} exited {code}: {}", dev.index, err.trim())
                }
                (Op::Sync, Ended::KilledAtServerKill) => {
                    counts.syncs_cut_by_server_kill += 1;
                    counts.device_kills_at_server_kill += 1;
                }
                (Op::Note(_), Ended::KilledAtServerKill) => unreachable!("only syncs"),
                (op, Ended::Killed) => {
                    counts.device_kills += 1;
                    if op == Op::Sync {
                        counts.device_kills_mid_sync += 1;
                        counts.syncs_cut_by_device_kill += 1;
                    } else {
                        counts.device_kills_mid_save += 1;
                        counts.notes_cut += 1;
                    }
                    // Right after the kill: the profile opens, and every note it reported saved
                    // is in it.
                    let (checked, _) = check_device(&dev, &cases, None)?;
                    counts.saved_notes_checked += checked.notes;
                    counts.lost += checked.lost;
                }
            }
        }
        Ok(())
    }
    .await;
    (dev, counts, result)
}

/// The end: every device syncs (twice round, so each has what every other sent), then the server
/// is stopped (one last SIGKILL, not counted) and its store opened offline: every saved note of every device must be on every device
/// and in the server's store.
async fn finish(
    server: &mut BenchServer,
    devices: &mut [CliDevice],
    cases: &[SharedCase],
    counts: &mut SoakCounts,
) -> Result<()> {
    let (_never, mut not_killed) = watch::channel(false);
    for _ in 0..2 {
        for dev in devices.iter_mut() {
            let mut tries = 0;
            loop {
                counts.syncs_started += 1;
                match dev.run(Op::Sync, "", None, &mut not_killed).await? {
                    Ended::Exited(0, _) => {
                        counts.syncs_completed += 1;
                        break;
                    }
                    other if tries < 3 => {
                        counts.syncs_failed += 1;
                        tries += 1;
                        eprintln!(
                            "soak: final sync of device {} failed ({other:?}); again",
                            dev.index
                        );
                    }
                    other => bail!("device {}: the final sync failed: {other:?}", dev.index),
                }
            }
        }
    }
    server.kill();
    let mut snapshot = tokio::task::block_in_place(|| check::server_snapshot(&server.data))?;
    let all: Vec<(CaseId, String)> = devices
        .iter()
        .flat_map(|d| {
            d.saved
                .iter()
                .flat_map(|(c, ts)| ts.iter().map(move |t| (*c, t.clone())))
        })
        .collect();
    for c in cases {
        let doc = snapshot
            .docs
            .get_mut(&c.case)
            .ok_or_else(|| anyhow!("case {} is not on the server at the end", c.case))?;
        counts
            .changes_per_case_at_end
            .push(doc.get_changes_meta(&[]).len() as u64);
    }
    for (holder, doc) in final_docs(devices, cases, snapshot).await? {
        for c in cases {
            let Some(d) = doc.get(&c.case) else {
                bail!("at the end, {holder} does not hold case {}", c.case);
            };
            let notes = check::meeting_notes(d.clone(), c)?;
            let present = check::tokens_in(&notes);
            for (case, t) in all.iter().filter(|(case, _)| *case == c.case) {
                counts.final_notes_checked += 1;
                if !present.contains(t.as_str()) {
                    eprintln!("LOST: at the end, {holder} lacks saved note {t} of case {case}");
                    counts.lost += 1;
                }
            }
        }
    }
    Ok(())
}

/// Every case's document as each device and the server hold it at the end.
async fn final_docs(
    devices: &[CliDevice],
    cases: &[SharedCase],
    snapshot: ServerSnapshot,
) -> Result<Vec<(String, BTreeMap<CaseId, automerge::AutoCommit>)>> {
    let mut out = vec![("the server".to_string(), snapshot.docs)];
    for dev in devices {
        let home = dev.home().to_path_buf();
        let ids: Vec<CaseId> = cases.iter().map(|c| c.case).collect();
        let docs = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut p = polyphony_core::profile::Profile::open(&home, device::PASSPHRASE)?;
            let mut docs = BTreeMap::new();
            for id in ids {
                docs.insert(id, p.document(id)?);
            }
            Ok(docs)
        })
        .await??;
        out.push((format!("device {}", dev.index), docs));
    }
    Ok(out)
}
