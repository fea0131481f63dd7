//! `polyphony sync` and `polyphony status`: what this device has not yet sent, and sending it.
//!
//! Sync never risks local work: whatever happens on the network, every change made here stays
//! saved, and `status` tells exactly how many changes per case the server has not confirmed.

use std::time::{Duration, Instant};

use clap::Args;
use polyphony_core::profile::{Profile, SyncProgress};

use super::block_on;
use crate::failure::Failure;
use crate::output;

/// How long a sync runs before progress lines start, so short syncs print only their summary.
const QUIET_START: Duration = Duration::from_secs(1);

/// Arguments of `sync`.
#[derive(Debug, Args)]
pub(crate) struct SyncArgs {
    /// Print the sync report as JSON (shape in docs/JSON.md).
    #[arg(long)]
    json: bool,
    /// A progress line for every case settled, even on a short sync (by default they start
    /// after a second).
    #[arg(long)]
    progress: bool,
}

impl SyncArgs {
    /// Sync with the borough server.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        let started = Instant::now();
        let mut last_shown: Option<SyncProgress> = None;
        let mut progress = |p: SyncProgress| {
            let due = self.progress || started.elapsed() >= QUIET_START;
            if due && p.settled > 0 && last_shown.is_none_or(|l| l.settled != p.settled) {
                eprintln!("synced {}/{} cases", p.settled, p.total);
                last_shown = Some(p);
            }
        };
        let report = block_on(profile.sync(&mut progress))??;
        output::status::print_sync_report(&report);
        if self.json {
            output::json(&report)?;
        }
        if report.wiped && !report.kept_unsynced.is_empty() && profile.enrolment().is_none() {
            return Err(Failure::Sync(format!(
                "the borough server has revoked this device: {} case(s) with changes it does not have are kept on this device (listed above), but it can no longer upload them: ask your administrator",
                report.kept_unsynced.len()
            )));
        }
        if report.wiped && !report.kept_unsynced.is_empty() {
            return Err(Failure::Sync(format!(
                "your administrator is revoking this device: it was wiped except for {} case(s) with changes the server does not have yet (listed above); run `polyphony sync` again to upload them",
                report.kept_unsynced.len()
            )));
        }
        if report.wiped {
            return Err(Failure::Sync(
                "the borough server has revoked this device: ask your administrator to enrol it again"
                    .into(),
            ));
        }
        if !report.refused.is_empty() {
            return Err(Failure::Sync(format!(
                "the server refused {} case(s) (listed above); that work stays saved on this device",
                report.refused.len()
            )));
        }
        Ok(())
    }
}

/// Arguments of `status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Print JSON (shape in docs/JSON.md).
    #[arg(long)]
    json: bool,
}

impl StatusArgs {
    /// Show where this device stands.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        let status = profile.status()?;
        if self.json {
            return output::json(&status);
        }
        output::status::print_status(&status);
        Ok(())
    }
}
