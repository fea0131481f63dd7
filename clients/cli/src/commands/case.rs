//! `polyphony case`: open a case, list the caseload, read a case, its timeline and its figures.

use clap::{Args, Subcommand};
use polyphony_core::model::{
    CaseFigures, NewCase, NewReferral, ReferralSource, Timeline, TimelineField, Urgency,
};
use polyphony_core::profile::Profile;

use super::referral::Letter;
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
    /// When the referral came in, YYYY-MM-DDTHH:MM, UK time (default: now; required, with its
    /// time, when the referral is given with --source).
    #[arg(long, value_name = "WHEN")]
    referral: Option<String>,
    /// The team that owns the case, if you are in several (name or id).
    #[arg(long)]
    team: Option<String>,
    /// Where the referral came from: self, family, gp, emergency_department (A&E) or
    /// other_team. With --reason and --urgency, records the referral with the case.
    #[arg(long, requires_all = ["reason", "urgency", "referral"])]
    source: Option<ReferralSource>,
    /// Who referred: their name and role or service (not needed for a self-referral).
    #[arg(long, requires = "source")]
    referrer: Option<String>,
    /// Why the person was referred, in the referrer's words.
    #[arg(long, requires = "source")]
    reason: Option<String>,
    /// emergency (first meeting within 4 hours), urgent (24 hours) or routine (4 weeks).
    #[arg(long, requires = "source")]
    urgency: Option<Urgency>,
    /// The referral letter (PDF, image or office document; at most 20 MB).
    #[arg(long, value_name = "FILE", requires = "source")]
    letter: Option<std::path::PathBuf>,
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
                let (Some(source), Some(reason), Some(urgency)) = (a.source, a.reason, a.urgency)
                else {
                    let case = profile.create_case(new, a.team.as_deref())?;
                    created(case, format!("opened a case for {name}"));
                    return Ok(());
                };
                let letter = a.letter.as_deref().map(Letter::read).transpose()?;
                let referral = NewReferral {
                    received_at: super::referral::received_at(a.referral.as_deref().unwrap_or(""))?,
                    source,
                    referrer: a.referrer,
                    reason,
                    urgency,
                    letter: None,
                };
                let (case, id) = profile.create_referred_case(
                    new,
                    a.team.as_deref(),
                    referral,
                    letter.as_ref().map(Letter::file),
                )?;
                let view = profile.lookup(case)?;
                created(
                    case,
                    format!(
                        "opened a case for {name}; {}",
                        super::referral::recorded(&view, id, urgency, letter.as_ref())
                    ),
                );
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
