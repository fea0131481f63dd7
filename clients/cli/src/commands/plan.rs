//! `polyphony plan`: the safety and crisis plan, written with the person. Each item is in one
//! section, in someone's own words (the person's, a network member's, or a practitioner's),
//! agreed in a meeting if given; a change keeps what it replaced. The review date, once it has
//! come, is on the morning list (`polyphony today`).

use clap::{Args, Subcommand};
use polyphony_core::model::{Participant, PlanSection};
use polyphony_core::profile::Profile;

use super::{changed, created, date, find_case, find_entry, participant, read_case};
use crate::failure::Failure;
use crate::output;

/// `plan` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum PlanCommand {
    /// Add an item to the plan; prints its id.
    Add(ItemArgs),
    /// Change an item's words (what they replace stays in the plan's history).
    Change {
        /// Case id (a unique prefix is enough).
        case: String,
        /// The item's id (a unique prefix is enough).
        item: String,
        #[command(flatten)]
        words: Words,
    },
    /// Set the date the plan is next to be reviewed by, YYYY-MM-DD.
    Review {
        /// Case id (a unique prefix is enough).
        case: String,
        /// The date.
        #[arg(long, value_name = "YYYY-MM-DD")]
        on: String,
    },
    /// Show the plan, every earlier version included.
    Show {
        /// Case id (a unique prefix is enough).
        case: String,
        /// Print JSON (the `crisis_plan` of `case show --json`, in docs/JSON.md).
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `plan add`.
#[derive(Debug, Args)]
pub(crate) struct ItemArgs {
    /// Case id (a unique prefix is enough).
    case: String,
    /// early_signs, what_helps, what_does_not_help, who_to_call, who_not_to_call,
    /// preferences, practical_matters or out_of_hours.
    #[arg(long)]
    section: PlanSection,
    #[command(flatten)]
    words: Words,
}

/// The words of an item and whose they are.
#[derive(Debug, Args)]
pub(crate) struct Words {
    /// The words, as they were said.
    text: String,
    /// Whose words: `person`, a network member's name or id, `me`, or a colleague's name.
    #[arg(long, value_name = "WHO", default_value = "person")]
    words_of: String,
    /// The meeting it was agreed in (its id; a unique prefix is enough).
    #[arg(long, value_name = "MEETING")]
    meeting: Option<String>,
}

impl Words {
    fn resolve(
        &self,
        profile: &mut Profile,
        case: polyphony_core::CaseId,
    ) -> Result<(Participant, Option<polyphony_core::EntryId>), Failure> {
        let who = participant(profile, case, &self.words_of)?;
        let meeting = self
            .meeting
            .as_deref()
            .map(|m| find_entry(profile, case, m))
            .transpose()?;
        Ok((who, meeting))
    }
}

impl PlanCommand {
    /// Carry out the command.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        match self {
            PlanCommand::Add(a) => {
                let case = find_case(profile, &a.case)?;
                let (who, meeting) = a.words.resolve(profile, case)?;
                let id = profile.edit(case, |doc| {
                    doc.add_plan_item(a.section, &a.words.text, who, meeting)
                })?;
                created(
                    id,
                    format!("added to the crisis plan ({})", a.section.heading()),
                );
            }
            PlanCommand::Change { case, item, words } => {
                let case = find_case(profile, &case)?;
                let item = find_entry(profile, case, &item)?;
                let (who, meeting) = words.resolve(profile, case)?;
                profile.edit(case, |doc| {
                    doc.revise_plan_item(&item, &words.text, who, meeting)
                })?;
                changed("changed the item; what it said before stays in the plan");
            }
            PlanCommand::Review { case, on } => {
                let case = find_case(profile, &case)?;
                let on = date("review date", Some(&on))?.expect("given");
                profile.edit(case, |doc| doc.set_plan_review(on))?;
                changed(format!("the crisis plan is to be reviewed by {on}"));
            }
            PlanCommand::Show { case, json } => {
                let view = read_case(profile, &case, "crisis plan")?;
                if json {
                    return output::json(&view.crisis_plan);
                }
                output::case::print_plan(&view);
            }
        }
        Ok(())
    }
}
