//! `polyphony today`: the morning list. Actions overdue or due today, planned meetings whose time
//! has passed with no outcome recorded, and cases whose changes have waited on this device longer
//! than the warning, crisis plans due for review, and cases that could not be opened, across
//! every case here (`Profile::due_work`). Printing an action's text is an access to its case: each such case is recorded as
//! read ("needs attention list"), JSON or not.

use clap::Args;
use polyphony_core::model::work::{sort_work, WorkOrder};
use polyphony_core::profile::Profile;

use crate::failure::Failure;
use crate::output;

/// Arguments of `today`.
#[derive(Debug, Args)]
pub(crate) struct TodayArgs {
    /// Only your work: actions you own (or whose owner is not in the case's current care team
    /// when you are), meetings you attended, were invited to or recorded (or with no one of the
    /// current care team attending when you are in it), and this device's unsynced changes and
    /// cases it could not open.
    #[arg(long)]
    mine: bool,
    /// Sort by `due` (most overdue first), `person` or `kind`.
    #[arg(long, value_name = "ORDER", default_value = "due")]
    sort: WorkOrder,
    /// List a case whose changes have been only on this device for longer than this.
    #[arg(
        long,
        value_name = "MINUTES",
        default_value_t = polyphony_core::model::work::DEFAULT_UNSYNCED_WARNING_MINUTES,
        value_parser = clap::value_parser!(i64).range(0..)
    )]
    unsynced_warning_minutes: i64,
    /// Print JSON (shape in docs/JSON.md).
    #[arg(long)]
    json: bool,
}

impl TodayArgs {
    /// Show what is due.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        let now = time::OffsetDateTime::now_utc();
        let warning = time::Duration::minutes(self.unsynced_warning_minutes);
        let zone = output::zone().clone();
        let mut items = profile.due_work(now, &zone, warning)?;
        if self.mine {
            items.retain(|i| i.mine);
        }
        // What is printed is recorded as read before it is printed.
        profile.record_work_reads(&items)?;
        sort_work(&mut items, self.sort);
        if self.json {
            return output::json(&items);
        }
        output::today::print_today(&items, self.mine);
        Ok(())
    }
}
