//! `polyphony decision`: decisions made with the person and their network, with every
//! participant's position in their own words. Disagreement is recorded, never overwritten, and a
//! decision is agreed only when the person themself agrees.

use clap::{Args, Subcommand};
use polyphony_core::model::{DecisionStatus, Participant, Stance};
use polyphony_core::profile::Profile;

use super::{changed, created, current, date, find_case, find_entry, participant};
use crate::failure::Failure;

/// `decision` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum DecisionCommand {
    /// Propose a decision; prints the decision id.
    Propose {
        /// Case id (a unique prefix is enough).
        case: String,
        /// The decision, in the words used in the meeting.
        text: String,
        /// Who proposed it (default: you): `person`, `me`, a network member's name or id.
        #[arg(long, value_name = "WHO")]
        by: Option<String>,
    },
    /// Record someone's position on a decision: agree, disagree or unsure.
    Position(PositionArgs),
    /// Move a decision on: agreed (only if the person agrees), revisited or withdrawn.
    Status {
        /// Case id (a unique prefix is enough).
        case: String,
        /// Decision id (a unique prefix is enough).
        decision: String,
        /// proposed, agreed (only when the person agrees), revisited, withdrawn, or
        /// team_decided (the team decides openly while the person disagrees: their position
        /// first, and --note saying why).
        status: DecisionStatus,
        /// Why, in a few words (needed for team_decided).
        #[arg(long)]
        note: Option<String>,
    },
    /// Add an action to a decision; prints the action id.
    Action {
        /// Case id (a unique prefix is enough).
        case: String,
        /// Decision id (a unique prefix is enough).
        decision: String,
        /// What is to be done.
        text: String,
        /// Who will do it: `person`, `me`, a network member's name or id, or `practitioner:<id>`.
        #[arg(long, value_name = "WHO")]
        owner: String,
        /// Due date, YYYY-MM-DD.
        #[arg(long, value_name = "YYYY-MM-DD")]
        due: Option<String>,
    },
    /// Mark an action done (or not done again, with --undo).
    Done {
        /// Case id (a unique prefix is enough).
        case: String,
        /// Action id (a unique prefix is enough).
        action: String,
        /// Mark it not done.
        #[arg(long)]
        undo: bool,
    },
}

/// Arguments of `decision position`.
#[derive(Debug, Args)]
pub(crate) struct PositionArgs {
    /// Case id (a unique prefix is enough).
    case: String,
    /// Decision id (a unique prefix is enough).
    decision: String,
    /// Whose position: `person`, `me`, a network member's name or id, or `practitioner:<id>`.
    #[arg(long, value_name = "WHO", conflicts_with = "person")]
    member: Option<String>,
    /// The person's own position (same as `--member person`).
    #[arg(long)]
    person: bool,
    /// agree, disagree or unsure.
    stance: Stance,
    /// Their own words.
    #[arg(long)]
    words: Option<String>,
}

impl DecisionCommand {
    /// Carry out the command.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        match self {
            DecisionCommand::Propose { case, text, by } => {
                let case = find_case(profile, &case)?;
                let by = participant(profile, case, by.as_deref().unwrap_or("me"))?;
                let id = profile.edit(case, |doc| doc.propose_decision(&text, by))?;
                created(
                    id,
                    "proposed the decision; record each position with `decision position`",
                );
            }
            DecisionCommand::Position(a) => {
                let case = find_case(profile, &a.case)?;
                let decision = find_entry(profile, case, &a.decision)?;
                let who = match (a.person, a.member.as_deref()) {
                    (true, _) => Participant::Person,
                    (false, Some(m)) => participant(profile, case, m)?,
                    (false, None) => {
                        return Err(Failure::user(
                            "say whose position this is with --member WHO or --person",
                        ))
                    }
                };
                profile.edit(case, |doc| {
                    doc.record_position(&decision, who, a.stance, a.words.as_deref())
                })?;
                changed(format!("recorded the position: {}", a.stance));
            }
            DecisionCommand::Status {
                case,
                decision,
                status,
                note,
            } => {
                let case = find_case(profile, &case)?;
                let decision = find_entry(profile, case, &decision)?;
                profile.edit(case, |doc| {
                    doc.set_decision_status(&decision, status, note.as_deref())
                })?;
                changed(format!("the decision is now {status}"));
            }
            DecisionCommand::Action {
                case,
                decision,
                text,
                owner,
                due,
            } => {
                let case = find_case(profile, &case)?;
                let decision = find_entry(profile, case, &decision)?;
                let owner = participant(profile, case, &owner)?;
                let due = date("due date", due.as_deref())?;
                let id = profile.edit(case, |doc| doc.add_action(&decision, &text, owner, due))?;
                created(id, "added the action");
            }
            DecisionCommand::Done { case, action, undo } => {
                let case = find_case(profile, &case)?;
                let action = find_entry(profile, case, &action)?;
                // The record's `set_action_done` accepts any entry id and would write `done` onto
                // a meeting or decision, leaving a document that no longer validates: check first.
                let is_action = current(profile, case)?
                    .decisions
                    .iter()
                    .flat_map(|d| &d.actions)
                    .any(|x| x.meta.id == action);
                if !is_action {
                    return Err(Failure::user(format!(
                        "{action} is not an action of this case (see `polyphony case show`)"
                    )));
                }
                profile.edit(case, |doc| doc.set_action_done(&action, !undo))?;
                changed(if undo {
                    "marked the action not done"
                } else {
                    "marked the action done"
                });
            }
        }
        Ok(())
    }
}
