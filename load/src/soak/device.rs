//! A device in the soak is the real `polyphony` command, one process per operation, each with its
//! own home: so a SIGKILL lands on exactly what a practitioner's laptop runs, in the middle of a
//! save or a sync, with nothing of the device surviving in this process.
//!
//! The soak never runs two commands on one home at once (sled locks its files), and opens a home
//! in this process only between commands, to check it.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use polyphony_core::CaseId;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::caseload::Seed;

/// The passphrase of every soak device's profile.
pub const PASSPHRASE: &str = "soak passphrase, not a secret";

/// A case every device writes into: its id and the meeting whose notes they append to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedCase {
    /// The case.
    pub case: CaseId,
    /// The meeting all devices write notes into (so their appends meet in one text).
    pub meeting: polyphony_core::EntryId,
}

/// One device: a home directory the `polyphony` command runs in.
pub struct CliDevice {
    /// Its number in the soak (0-based).
    pub index: usize,
    /// Its home (`polyphony --home`).
    pub home: PathBuf,
    cli: PathBuf,
    /// This device's share of the schedule: which operation next, whether and when to kill it.
    pub seed: Seed,
    /// Every note a `note append` reported saved (exit 0), by case: its token, e.g. `[d1n42]`.
    pub saved: BTreeMap<CaseId, Vec<String>>,
    notes: u64,
    estimate: [Duration; 2],
}

/// What the soak asks a device to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `polyphony note append CASE MEETING TOKEN`.
    Note(SharedCase),
    /// `polyphony sync`.
    Sync,
}

/// How one command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this code (0: done; 2 for sync: the server could not be reached).
    Exited(i32, String),
    /// The soak's scheduled SIGKILL landed while it ran.
    Killed,
    /// SIGKILLed because the server had just been killed (a sync would wait out the idle timeout).
    KilledAtServerKill,
}

impl CliDevice {
    /// A device whose home is `home`, not yet enrolled.
    pub fn new(index: usize, home: PathBuf, cli: PathBuf, seed: u64) -> Self {
        CliDevice {
            index,
            home,
            cli,
            seed: Seed::new(seed ^ (index as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D)),
            saved: BTreeMap::new(),
            notes: 0,
            estimate: [Duration::from_millis(150), Duration::from_millis(300)],
        }
    }

    fn command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.cli);
        c.arg("--home")
            .arg(&self.home)
            .env("POLYPHONY_PASSPHRASE", PASSPHRASE)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Run a set-up command to its end and return its standard output (failing on any error).
    pub async fn setup(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command()
            .args(args)
            .output()
            .await
            .with_context(|| format!("running {}", self.cli.display()))?;
        if !out.status.success() {
            bail!(
                "device {}: `polyphony {}` failed ({}): {}",
                self.index,
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The next note's token, unique in the soak: `[d<device>n<number>]`.
    pub fn next_token(&mut self) -> String {
        self.notes += 1;
        format!("[d{}n{}]", self.index, self.notes)
    }

    /// A SIGKILL delay for `op`, drawn uniformly over how long that command usually runs, so kills
    /// land at every stage of it (opening the store, writing, connecting, mid-transfer).
    pub fn kill_delay(&mut self, op: &Op) -> Duration {
        let est = self.estimate[usize::from(*op == Op::Sync)];
        let span = (est.as_micros() as u64 * 5 / 4).max(1);
        Duration::from_micros(self.seed.next_u64() % span)
    }

    /// Run `op` as a `polyphony` process. `kill_after`: SIGKILL it after this long if it is still
    /// running. A sync still running when `server_killed` turns true is SIGKILLed at once too.
    /// A `note append` that exits 0 is recorded in [`Self::saved`].
    pub async fn run(
        &mut self,
        op: Op,
        token: &str,
        kill_after: Option<Duration>,
        server_killed: &mut watch::Receiver<bool>,
    ) -> Result<Ended> {
        let mut cmd = self.command();
        match &op {
            Op::Note(c) => cmd.args([
                "note",
                "append",
                &c.case.to_string(),
                &c.meeting.to_string(),
                token,
            ]),
            Op::Sync => cmd.arg("sync"),
        };
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.cli.display()))?;
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let read_stderr = tokio::spawn(async move {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s).await;
            s
        });
        let far = Duration::from_secs(24 * 3600);
        let server_gone = async {
            // The guard `wait_for` returns is not `Send`: drop it here.
            let _ = server_killed.wait_for(|k| *k).await.is_ok();
        };
        let (status, cause) = tokio::select! {
            s = child.wait() => (Some(s?), None),
            _ = tokio::time::sleep(kill_after.unwrap_or(far)), if kill_after.is_some() => {
                (None, Some(Ended::Killed))
            }
            _ = server_gone, if op == Op::Sync => (None, Some(Ended::KilledAtServerKill)),
        };
        let status = match status {
            Some(s) => s,
            None => {
                let _ = child.start_kill();
                child.wait().await?
            }
        };
        let err = read_stderr.await.unwrap_or_default();
        // A kill that arrived after the process had already exited is no kill: go by the status.
        let ended = match (status.signal(), cause) {
            (Some(9), Some(cause)) => cause,
            (Some(sig), _) => bail!(
                "device {}: polyphony died of signal {sig} the soak did not send: {err}",
                self.index
            ),
            (None, _) => Ended::Exited(status.code().unwrap_or(-1), err),
        };
        if let Ended::Exited(0, _) = ended {
            let slot = &mut self.estimate[usize::from(op == Op::Sync)];
            *slot = (*slot * 7 + started.elapsed()) / 8;
            if let Op::Note(c) = op {
                self.saved
                    .entry(c.case)
                    .or_default()
                    .push(token.to_string());
            }
        }
        Ok(ended)
    }

    /// Where the profile lives.
    pub fn home(&self) -> &Path {
        &self.home
    }
}
