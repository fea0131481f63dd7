//! `polyphony network`: the people the person chose to be with them. Members join, change their
//! details, give or withdraw consent, and leave; they are never removed from the record.

use clap::{Args, Subcommand};
use polyphony_core::model::{ConsentState, MemberField, NewMember, Role};
use polyphony_core::profile::Profile;

use super::{changed, created, date, find_case, participant};
use crate::failure::Failure;

/// `network` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum NetworkCommand {
    /// Add someone to the person's network; prints the member id.
    Add(AddArgs),
    /// Someone leaves the network (the record of them stays).
    Leave {
        /// Case id (a unique prefix is enough).
        case: String,
        /// The member: their name or id (a unique prefix is enough).
        member: String,
        /// The date they left, YYYY-MM-DD (default: today).
        #[arg(long, value_name = "YYYY-MM-DD")]
        on: Option<String>,
    },
    /// Change a member's detail: name, relationship, role, phone, email.
    Set {
        /// Case id (a unique prefix is enough).
        case: String,
        /// The member: their name or id (a unique prefix is enough).
        member: String,
        /// Which detail.
        field: MemberField,
        /// The new value (give an empty string to clear phone or email).
        value: String,
    },
    /// Record that the person gave or revoked consent for this member to receive the record.
    Consent {
        /// Case id (a unique prefix is enough).
        case: String,
        /// The member: their name or id (a unique prefix is enough).
        member: String,
        /// given or revoked.
        state: ConsentState,
        /// The date it takes effect, YYYY-MM-DD (default: today).
        #[arg(long, value_name = "YYYY-MM-DD")]
        on: Option<String>,
    },
}

/// Arguments of `network add`.
#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// Case id (a unique prefix is enough).
    case: String,
    /// Their name.
    #[arg(long)]
    name: String,
    /// Their relationship to the person, in the person's words ("my brother", "my neighbour").
    #[arg(long)]
    relationship: String,
    /// family, friend, professional, peer or other (default: other).
    #[arg(long)]
    role: Option<Role>,
    /// Telephone.
    #[arg(long)]
    phone: Option<String>,
    /// Email.
    #[arg(long)]
    email: Option<String>,
    /// Who invited them (default: the person): `person`, `me`, or a member's name or id.
    #[arg(long, value_name = "WHO")]
    invited_by: Option<String>,
    /// The date they joined, YYYY-MM-DD (default: today).
    #[arg(long, value_name = "YYYY-MM-DD")]
    joined: Option<String>,
}

impl NetworkCommand {
    /// Carry out the command.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        match self {
            NetworkCommand::Add(a) => {
                let case = find_case(profile, &a.case)?;
                let invited_by = a
                    .invited_by
                    .as_deref()
                    .map(|w| participant(profile, case, w))
                    .transpose()?;
                let joined = date("joining date", a.joined.as_deref())?;
                let name = a.name.trim().to_string();
                let new = NewMember {
                    name: a.name,
                    relationship: a.relationship,
                    role: a.role,
                    phone: a.phone,
                    email: a.email,
                    invited_by,
                    joined,
                };
                let id = profile.edit(case, |doc| doc.add_member(new))?;
                created(id, format!("added {name} to the network"));
            }
            NetworkCommand::Leave { case, member, on } => {
                let case = find_case(profile, &case)?;
                let member = super::member(profile, case, &member)?;
                let on = date("leaving date", on.as_deref())?;
                profile.edit(case, |doc| doc.member_leaves(&member, on))?;
                changed("recorded that they left the network");
            }
            NetworkCommand::Set {
                case,
                member,
                field,
                value,
            } => {
                let case = find_case(profile, &case)?;
                let member = super::member(profile, case, &member)?;
                profile.edit(case, |doc| doc.set_member(&member, field, Some(&value)))?;
                changed(format!("changed the member's {field}"));
            }
            NetworkCommand::Consent {
                case,
                member,
                state,
                on,
            } => {
                let case = find_case(profile, &case)?;
                let member = super::member(profile, case, &member)?;
                let on = date("consent date", on.as_deref())?;
                profile.edit(case, |doc| doc.record_consent(&member, state, on))?;
                changed(format!("recorded consent {state}"));
            }
        }
        Ok(())
    }
}
