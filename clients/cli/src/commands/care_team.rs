//! `polyphony care-team`: the practitioners (and peer support workers) working with the person.

use clap::{Args, Subcommand};
use polyphony_core::model::CareRole;
use polyphony_core::profile::Profile;
use polyphony_core::PractitionerId;

use super::{changed, created, date, find_case, find_entry};
use crate::failure::Failure;

/// `care-team` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum CareTeamCommand {
    /// Add a practitioner to the care team (yourself, unless --practitioner is given); prints the
    /// membership id.
    Add(AddArgs),
    /// A practitioner's part in the care team ends.
    End {
        /// Case id (a unique prefix is enough).
        case: String,
        /// The membership id (a unique prefix is enough).
        membership: String,
        /// The date it ends, YYYY-MM-DD (default: today).
        #[arg(long, value_name = "YYYY-MM-DD")]
        on: Option<String>,
    },
}

/// Arguments of `care-team add`.
#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// Case id (a unique prefix is enough).
    case: String,
    /// Another practitioner's id (default: you).
    #[arg(long, value_name = "ID", requires = "practitioner_name")]
    practitioner: Option<String>,
    /// Their name as it should appear in the record (default: your registered name).
    #[arg(long, value_name = "NAME")]
    practitioner_name: Option<String>,
    /// practitioner or peer_support (default: practitioner).
    #[arg(long, default_value = "practitioner")]
    role: CareRole,
    /// The date they start, YYYY-MM-DD (default: today).
    #[arg(long, value_name = "YYYY-MM-DD")]
    start: Option<String>,
}

impl CareTeamCommand {
    /// Carry out the command.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        match self {
            CareTeamCommand::Add(a) => {
                let case = find_case(profile, &a.case)?;
                let me = profile.author()?;
                let practitioner: PractitionerId = match &a.practitioner {
                    Some(p) => p.parse().map_err(|e| Failure::user(format!("{e}")))?,
                    None => me.practitioner,
                };
                let name = a.practitioner_name.unwrap_or(me.practitioner_name);
                let start = date("start date", a.start.as_deref())?;
                let id = profile.edit(case, |doc| {
                    doc.add_care_team(practitioner, &name, a.role, start)
                })?;
                created(id, format!("added {name} to the care team ({})", a.role));
            }
            CareTeamCommand::End {
                case,
                membership,
                on,
            } => {
                let case = find_case(profile, &case)?;
                let membership = find_entry(profile, case, &membership)?;
                let on = date("end date", on.as_deref())?;
                profile.edit(case, |doc| doc.end_care_team(&membership, on))?;
                changed("recorded the end of their part in the care team");
            }
        }
        Ok(())
    }
}
