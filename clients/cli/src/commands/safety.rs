//! `polyphony safety`: the team's home-visit safety notes (lone working) and safeguarding
//! concerns. Both are in the person's copy, like everything else, unless one practitioner asks,
//! with the reason, and a second confirms that a note is withheld from it; the subject-access
//! export then lists it as withheld.

use clap::Subcommand;
use polyphony_core::model::TeamNoteKind;
use polyphony_core::profile::Profile;

use super::{changed, created, find_case, find_entry};
use crate::failure::Failure;

/// `safety` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum SafetyCommand {
    /// Write a note; prints its id.
    Add {
        /// Case id (a unique prefix is enough).
        case: String,
        /// home_visit_safety or safeguarding.
        #[arg(long)]
        kind: TeamNoteKind,
        /// What it says.
        text: String,
    },
    /// Ask for a note to be withheld from the person's copy (a second practitioner confirms).
    Withhold {
        /// Case id (a unique prefix is enough).
        case: String,
        /// The note's id (a unique prefix is enough).
        note: String,
        /// Why it must not be in the person's copy.
        #[arg(long)]
        reason: String,
    },
    /// Lift a withholding: the note is in the person's copy again.
    Lift {
        /// Case id (a unique prefix is enough).
        case: String,
        /// The note's id (a unique prefix is enough).
        note: String,
        /// Why it can be in the copy again.
        #[arg(long)]
        reason: String,
    },
    /// Confirm, as a second practitioner, that a note is withheld from the person's copy.
    Confirm {
        /// Case id (a unique prefix is enough).
        case: String,
        /// The note's id (a unique prefix is enough).
        note: String,
    },
}

impl SafetyCommand {
    /// Carry out the command.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        match self {
            SafetyCommand::Add { case, kind, text } => {
                let case = find_case(profile, &case)?;
                let id = profile.edit(case, |doc| doc.add_team_note(kind, &text))?;
                created(
                    id,
                    format!(
                        "{} written; it is in the person's copy unless two practitioners withhold it",
                        kind.label()
                    ),
                );
            }
            SafetyCommand::Withhold { case, note, reason } => {
                let case = find_case(profile, &case)?;
                let note = find_entry(profile, case, &note)?;
                profile.edit(case, |doc| doc.request_withholding(&note, &reason))?;
                changed("asked; the note stays in the person's copy until a second practitioner confirms (`polyphony safety confirm`)");
            }
            SafetyCommand::Lift { case, note, reason } => {
                let case = find_case(profile, &case)?;
                let note = find_entry(profile, case, &note)?;
                profile.edit(case, |doc| doc.lift_withholding(&note, &reason))?;
                changed("lifted: the note is in the person's copy again");
            }
            SafetyCommand::Confirm { case, note } => {
                let case = find_case(profile, &case)?;
                let note = find_entry(profile, case, &note)?;
                profile.edit(case, |doc| doc.confirm_withholding(&note))?;
                changed("confirmed: the note is withheld from the person's copy, and listed there as withheld");
            }
        }
        Ok(())
    }
}
