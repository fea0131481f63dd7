//! `polyphony today`: the morning list. Actions overdue or due today, planned meetings whose time
//! has passed with no outcome recorded, and cases whose changes have waited on this device longer
//! than the warning, across every case here (`Profile::due_work`).

use clap::Args;
use polyphony_core::model::work::{sort_work, WorkOrder};
use polyphony_core::profile::Profile;

use crate::failure::Failure;
use crate::output;

/// Arguments of `today`.
#[derive(Debug, Args)]
pub(crate) struct TodayArgs {
    /// Only your work: actions you own, meetings you attended, were invited to or recorded, and
    /// this device's unsynced changes.
    #[arg(long)]
    mine: bool,
    /// Sort by `due` (most overdue first), `person` or `kind`.
    #[arg(long, value_name = "ORDER", default_value = "due")]
    sort: WorkOrder,
    /// List a case whose changes have been only on this device for longer than this.
    #[arg(long, value_name = "MINUTES", default_value_t = 120)]
    unsynced_warning_minutes: i64,
    /// Print JSON (shape in docs/JSON.md).
    #[arg(long)]
    json: bool,
}

impl TodayArgs {
    /// Show what is due.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        let now = time::OffsetDateTime::now_utc();
        let warning = time::Duration::minutes(self.unsynced_warning_minutes.max(0));
        let mut items = profile.due_work(now, warning)?;
        if self.mine {
            items.retain(|i| i.mine);
        }
        sort_work(&mut items, self.sort);
        if self.json {
            return output::json(&items);
        }
        output::today::print_today(&items, self.mine);
        Ok(())
    }
}
