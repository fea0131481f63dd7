//! Keeping the record honest: `error` marks an entry entered in error (it stays, struck through,
//! with who, when and why), `conflicts` shows fields where two devices wrote different values,
//! and `resolve` records the user's pick as a change of its own.

use clap::Args;
use polyphony_core::model::ErrorKind;
use polyphony_core::profile::Profile;

use super::{changed, find_case, find_entry, read_case};
use crate::failure::Failure;
use crate::output;

/// Arguments of `error`.
#[derive(Debug, Args)]
pub(crate) struct EnteredInErrorArgs {
    /// Case id (a unique prefix is enough).
    case: String,
    /// The entry: a network member, care-team membership, meeting, decision or action id.
    entry: String,
    /// Why it was entered in error.
    #[arg(long)]
    reason: String,
    /// It was recorded on the wrong person's record: its content is withheld from every screen,
    /// copy and export of this case (a note says what kind of entry was removed, by whom, when
    /// and why). Record it again on the right person's case.
    #[arg(long)]
    wrong_person: bool,
}

impl EnteredInErrorArgs {
    /// Mark the entry.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        let case = find_case(profile, &self.case)?;
        let entry = find_entry(profile, case, &self.entry)?;
        if self.wrong_person {
            profile.edit(case, |doc| {
                doc.mark_error(&entry, ErrorKind::WrongPerson, &self.reason)
            })?;
            changed(
                "marked as recorded on the wrong person's record: its content is no longer shown \
                 in this case or any copy of it; record it again on the right person's case",
            );
        } else {
            profile.edit(case, |doc| doc.mark_entered_in_error(&entry, &self.reason))?;
            changed("marked entered in error; it stays in the record, shown struck through");
        }
        Ok(())
    }
}

/// Arguments of `conflicts`.
#[derive(Debug, Args)]
pub(crate) struct ConflictsArgs {
    /// Case id (a unique prefix is enough).
    case: String,
    /// Print JSON (shape in docs/JSON.md).
    #[arg(long)]
    json: bool,
}

impl ConflictsArgs {
    /// List the conflicts.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        let view = read_case(profile, &self.case, "conflicts")?;
        if self.json {
            return output::json(&view.conflicts);
        }
        output::case::print_conflicts(&view);
        Ok(())
    }
}

/// Arguments of `resolve`.
#[derive(Debug, Args)]
pub(crate) struct ResolveArgs {
    /// Case id (a unique prefix is enough).
    case: String,
    /// The field, as `conflicts` lists it (e.g. person.nhs_number).
    field: String,
    /// The number of the value to keep, as `conflicts` lists them.
    #[arg(long, value_name = "N")]
    pick: usize,
}

impl ResolveArgs {
    /// Resolve the conflict.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        let case = find_case(profile, &self.case)?;
        profile.edit(case, |doc| doc.resolve(&self.field, self.pick))?;
        changed(format!("kept value {} of {}", self.pick, self.field));
        Ok(())
    }
}
