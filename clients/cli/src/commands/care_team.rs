//! `polyphony care-team`: the practitioners (and peer support workers) working with the person.

use clap::{Args, Subcommand};
use polyphony_core::model::{CareRole, Participant, StaffRole};
use polyphony_core::profile::Profile;
use polyphony_core::{CaseId, PractitionerId};

use super::{changed, colleagues_of, created, current, date, find_case, find_entry};
use crate::failure::Failure;
use crate::participant;

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
    /// A colleague of the case's team, by name (see `polyphony team`): their role comes from
    /// the team list (default: you).
    #[arg(long, value_name = "NAME", conflicts_with = "practitioner")]
    colleague: Option<String>,
    /// Another practitioner's id, for someone not on the team list.
    #[arg(long, value_name = "ID", requires = "practitioner_name")]
    practitioner: Option<String>,
    /// Their name as it should appear in the record (default: the team list's, or your
    /// registered name).
    #[arg(long, value_name = "NAME")]
    practitioner_name: Option<String>,
    /// practitioner (one of the continuing pair), peer_support or psychiatrist (default: their
    /// role on the team list, else practitioner).
    #[arg(long)]
    role: Option<CareRole>,
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
                let (practitioner, name, role) = who_joins(profile, case, &a)?;
                let start = date("start date", a.start.as_deref())?;
                let id = profile.edit(case, |doc| {
                    doc.add_care_team(practitioner, &name, role, start)
                })?;
                created(
                    id,
                    format!("added {name} to the care team ({})", role.label()),
                );
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

/// Who `care-team add` adds, by what name and in what part: a colleague from the team list
/// (their role there, unless `--role`), a practitioner by id, or the user themself (their role
/// on the team list when it has one).
fn who_joins(
    profile: &mut Profile,
    case: CaseId,
    a: &AddArgs,
) -> Result<(PractitionerId, String, CareRole), Failure> {
    let me = profile.author()?;
    let view = current(profile, case)?;
    let colleagues = colleagues_of(profile, &view)?;
    let (practitioner, listed_name) = match (&a.colleague, &a.practitioner) {
        (Some(given), _) => {
            let p = participant::resolve(&view, &colleagues, me.practitioner, given)?;
            let Participant::Practitioner(id) = p else {
                return Err(Failure::user(format!(
                    "'{given}' is not a colleague on this device's team list (see `polyphony team`)"
                )));
            };
            let name = colleagues
                .iter()
                .find(|c| c.practitioner == id)
                .map(|c| c.name.clone());
            (id, name)
        }
        (None, Some(p)) => (p.parse().map_err(|e| Failure::user(format!("{e}")))?, None),
        (None, None) => (me.practitioner, Some(me.practitioner_name.clone())),
    };
    let name = a.practitioner_name.clone().or(listed_name).ok_or_else(|| {
        Failure::user("give --practitioner-name for someone not on the team list")
    })?;
    let listed = colleagues.iter().find(|c| c.practitioner == practitioner);
    let role = match (a.role, listed.map(|c| c.role.known())) {
        (Some(role), _) => role,
        (None, Some(Some(StaffRole::Administrator))) => {
            return Err(Failure::user(format!(
                "{name} is an administrator on the team list, not part of a care team: give --role to add them anyway"
            )))
        }
        (None, Some(Some(listed))) => listed.care_role().unwrap_or(CareRole::Practitioner),
        (None, Some(None)) => {
            return Err(Failure::user(format!(
                "{name}'s role on the team list ({}) is one this version does not know: give --role",
                listed.map(|c| c.role.to_string()).unwrap_or_default()
            )))
        }
        (None, None) => CareRole::Practitioner,
    };
    let already = view.care_team.iter().any(|c| {
        c.practitioner.is(practitioner) && c.end.is_none() && c.meta.entered_in_error.is_none()
    });
    if already {
        return Err(Failure::user(format!("{name} is in the care team already")));
    }
    Ok((practitioner, name, role))
}
