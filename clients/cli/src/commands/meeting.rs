//! `polyphony meeting`: network meetings, when and where they happened and who came.

use clap::{Args, Subcommand};
use polyphony_core::model::{MeetingState, NewMeeting, Participant, Place, ReadbackResponse};
use polyphony_core::profile::Profile;

use super::{changed, created, datetime, find_case, find_entry, participant, participants};
use crate::failure::Failure;
use crate::output;

/// `meeting` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum MeetingCommand {
    /// Record a meeting; prints the meeting id.
    Add(AddArgs),
    /// Mark people present at a meeting (or absent, with --absent).
    Attend {
        /// Case id (a unique prefix is enough).
        case: String,
        /// Meeting id (a unique prefix is enough).
        meeting: String,
        /// Who: `person`, `me`, a network member's name or id, a colleague's name (see
        /// `polyphony team`), or `practitioner:<id>`.
        #[arg(required = true, value_name = "WHO")]
        who: Vec<String>,
        /// Mark them absent instead.
        #[arg(long)]
        absent: bool,
    },
    /// Say where a meeting stands: held, cancelled, did_not_attend or planned. Only held
    /// meetings with the person or their network count in the figures.
    State {
        /// Case id (a unique prefix is enough).
        case: String,
        /// Meeting id (a unique prefix is enough).
        meeting: String,
        /// planned, held, cancelled or did_not_attend.
        state: MeetingState,
    },
    /// Set when the next meeting is planned.
    Next {
        /// Case id (a unique prefix is enough).
        case: String,
        /// Meeting id (a unique prefix is enough).
        meeting: String,
        /// When, YYYY-MM-DDTHH:MM.
        #[arg(long, value_name = "YYYY-MM-DDTHH:MM")]
        at: String,
    },
}

/// Arguments of `meeting add`.
#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// Case id (a unique prefix is enough).
    case: String,
    /// When it took place, YYYY-MM-DDTHH:MM in UK time (or with an offset, e.g. +01:00).
    #[arg(long, value_name = "YYYY-MM-DDTHH:MM")]
    at: String,
    /// home, clinic, online or phone.
    #[arg(long)]
    place: Place,
    /// Someone who came (repeat for each): `person`, `me`, a network member's name or id, a
    /// colleague's name (see `polyphony team`), or `practitioner:<id>`.
    #[arg(long = "attendee", value_name = "WHO")]
    attendees: Vec<String>,
}

impl MeetingCommand {
    /// Carry out the command.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        match self {
            MeetingCommand::Add(a) => {
                let case = find_case(profile, &a.case)?;
                let at = datetime("meeting time", &a.at)?;
                let attendees = participants(profile, case, &a.attendees)?;
                let count = attendees.len();
                let new = NewMeeting {
                    at,
                    place: a.place,
                    attendees,
                };
                // Colleagues from the team list are noted with their roles.
                let staff = profile.staff_members()?;
                let id = profile.edit(case, |doc| doc.add_meeting_with(new, &staff))?;
                created(
                    id,
                    format!(
                        "recorded the meeting of {} ({}, {count} attending)",
                        output::when_instant(at),
                        a.place
                    ),
                );
            }
            MeetingCommand::Attend {
                case,
                meeting,
                who,
                absent,
            } => {
                let case = find_case(profile, &case)?;
                let meeting = find_entry(profile, case, &meeting)?;
                let who = participants(profile, case, &who)?;
                let staff = profile.staff_members()?;
                profile.edit(case, |doc| {
                    who.iter().try_for_each(|p| {
                        let member = staff
                            .iter()
                            .find(|s| *p == Participant::Practitioner(s.practitioner));
                        match member {
                            Some(s) => doc.set_staff_attendance(&meeting, s, !absent),
                            None => doc.set_attendance(&meeting, *p, !absent),
                        }
                    })
                })?;
                let word = if absent { "absent" } else { "present" };
                changed(format!("marked {} {word}", who.len()));
            }
            MeetingCommand::State {
                case,
                meeting,
                state,
            } => {
                let case = find_case(profile, &case)?;
                let meeting = find_entry(profile, case, &meeting)?;
                profile.edit(case, |doc| doc.set_meeting_state(&meeting, state))?;
                changed(format!(
                    "the meeting is now {}",
                    state.as_str().replace('_', " ")
                ));
            }
            MeetingCommand::Next { case, meeting, at } => {
                let case = find_case(profile, &case)?;
                let meeting = find_entry(profile, case, &meeting)?;
                let at = datetime("next meeting time", &at)?;
                profile.edit(case, |doc| doc.set_next_meeting(&meeting, at))?;
                changed(format!(
                    "next meeting planned for {}",
                    output::when_instant(at)
                ));
            }
        }
        Ok(())
    }
}

/// Arguments of `readback`.
#[derive(Debug, Args)]
pub(crate) struct ReadbackArgs {
    /// Case id (a unique prefix is enough).
    case: String,
    /// Meeting id (a unique prefix is enough).
    meeting: String,
    /// Who answered: `person`, `me`, a network member's name or id, or `practitioner:<id>`.
    #[arg(long, value_name = "WHO", conflicts_with = "person")]
    member: Option<String>,
    /// The person answered (same as `--member person`).
    #[arg(long)]
    person: bool,
    /// confirmed (the notes are right) or added (they added their own words).
    #[arg(value_parser = ["confirmed", "added", "added_words"])]
    response: String,
    /// Their words, as they said them (required with `added`).
    #[arg(long)]
    words: Option<String>,
}

impl ReadbackArgs {
    /// Record the answer.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        let case = find_case(profile, &self.case)?;
        let meeting = find_entry(profile, case, &self.meeting)?;
        let who = match (self.person, self.member.as_deref()) {
            (true, _) => Participant::Person,
            (false, Some(m)) => participant(profile, case, m)?,
            (false, None) => {
                return Err(Failure::user(
                    "say whose answer this is with --member WHO or --person",
                ))
            }
        };
        let response = match self.response.as_str() {
            "confirmed" => ReadbackResponse::Confirmed,
            _ => ReadbackResponse::AddedWords,
        };
        profile.edit(case, |doc| {
            doc.record_readback(&meeting, who, response, self.words.as_deref())
        })?;
        changed(format!("recorded the read-back: {response}"));
        Ok(())
    }
}
