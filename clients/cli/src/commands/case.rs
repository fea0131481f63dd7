//! `polyphony case`: open a case, list the caseload, read a case, its timeline and its figures.

use clap::{Args, Subcommand};
use polyphony_core::model::{CaseFigures, NewCase, Timeline, TimelineField};
use polyphony_core::profile::Profile;

use super::{changed, created, datetime, find_case, read_case};
use crate::failure::Failure;
use crate::output;

/// `case` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum CaseCommand {
    /// Open a case for a person; prints the new case id.
    New(NewArgs),
    /// The cases on this device, with unsynced changes and conflicts.
    List(JsonArg),
    /// The whole case: person, network, care team, meetings, decisions.
    Show(ShowArgs),
    /// The episode's milestones and everything that happened, in order.
    Timeline(ShowArgs),
    /// Fidelity figures: time to first meeting, continuity of the pair, network at meetings.
    Figures(ShowArgs),
    /// Record a milestone of the episode: referral, first_contact, first_network_meeting, closure.
    Milestone(MilestoneArgs),
}

/// Arguments of `case new`.
#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// The person's full name.
    #[arg(long)]
    name: String,
    /// NHS number: 10 digits, spaces allowed (checked).
    #[arg(long, value_name = "N")]
    nhs_number: Option<String>,
    /// Date of birth, YYYY-MM-DD.
    #[arg(long, value_name = "YYYY-MM-DD")]
    dob: Option<String>,
    /// When the referral came in, YYYY-MM-DDTHH:MM (default: now).
    #[arg(long, value_name = "WHEN")]
    referral: Option<String>,
    /// The team that owns the case, if you are in several (name or id).
    #[arg(long)]
    team: Option<String>,
}

/// Just `--json`.
#[derive(Debug, Args)]
pub(crate) struct JsonArg {
    /// Print JSON (shape in docs/JSON.md).
    #[arg(long)]
    json: bool,
}

/// A case to read.
#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// Case id (a unique prefix is enough).
    case: String,
    /// Print JSON (shape in docs/JSON.md).
    #[arg(long)]
    json: bool,
}

/// Arguments of `case milestone`.
#[derive(Debug, Args)]
pub(crate) struct MilestoneArgs {
    /// Case id (a unique prefix is enough).
    case: String,
    /// referral, first_contact, first_network_meeting or closure.
    milestone: TimelineField,
    /// When, YYYY-MM-DDTHH:MM.
    when: String,
}

impl CaseCommand {
    /// Carry out the command.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        match self {
            CaseCommand::New(a) => {
                let referral = a
                    .referral
                    .as_deref()
                    .map(|r| datetime("referral time", r))
                    .transpose()?;
                let new = NewCase {
                    name: a.name,
                    nhs_number: a.nhs_number,
                    date_of_birth: a.dob,
                    referral,
                };
                let name = new.name.trim().to_string();
                let case = profile.create_case(new, a.team.as_deref())?;
                created(case, format!("opened a case for {name}"));
                Ok(())
            }
            CaseCommand::List(a) => {
                let cases = profile.cases()?;
                if a.json {
                    return output::json(&cases);
                }
                output::status::print_caseload(&cases);
                Ok(())
            }
            CaseCommand::Show(a) => {
                let view = read_case(profile, &a.case, "case show")?;
                if a.json {
                    return output::json(&view);
                }
                output::case::print_case(&view);
                Ok(())
            }
            CaseCommand::Timeline(a) => {
                let view = read_case(profile, &a.case, "case timeline")?;
                let timeline = Timeline::from_view(&view);
                if a.json {
                    return output::json(&timeline);
                }
                output::case::print_timeline(&view, &timeline);
                Ok(())
            }
            CaseCommand::Figures(a) => {
                let view = read_case(profile, &a.case, "case figures")?;
                let figures = CaseFigures::from_view(&view);
                if a.json {
                    return output::json(&figures);
                }
                output::case::print_figures(&view, &figures);
                Ok(())
            }
            CaseCommand::Milestone(a) => {
                let case = find_case(profile, &a.case)?;
                let at = datetime("milestone time", &a.when)?;
                profile.edit(case, |doc| doc.set_timeline(a.milestone, at))?;
                changed(format!(
                    "recorded {} at {}",
                    a.milestone,
                    output::when_instant(at)
                ));
                Ok(())
            }
        }
    }
}
