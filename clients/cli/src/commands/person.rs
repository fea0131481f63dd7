//! `polyphony person`: the person's own details, set or cleared after the case is opened.

use clap::Subcommand;
use polyphony_core::model::PersonField;
use polyphony_core::profile::Profile;

use super::{changed, find_case};
use crate::failure::Failure;

/// `person` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum PersonCommand {
    /// Set a detail: name, preferred_name, pronouns, date_of_birth, nhs_number, phone, email,
    /// address, contact_preference.
    Set {
        /// Case id (a unique prefix is enough).
        case: String,
        /// Which detail.
        field: PersonField,
        /// The new value.
        value: String,
    },
    /// Clear a detail (the name cannot be cleared).
    Clear {
        /// Case id (a unique prefix is enough).
        case: String,
        /// Which detail.
        field: PersonField,
    },
}

impl PersonCommand {
    /// Carry out the command.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        let (case, field, value) = match self {
            PersonCommand::Set { case, field, value } => (case, field, Some(value)),
            PersonCommand::Clear { case, field } => (case, field, None),
        };
        let case = find_case(profile, &case)?;
        profile.edit(case, |doc| doc.set_person(field, value.as_deref()))?;
        match value {
            Some(_) => changed(format!("set the person's {field}")),
            None => changed(format!("cleared the person's {field}")),
        }
        Ok(())
    }
}
