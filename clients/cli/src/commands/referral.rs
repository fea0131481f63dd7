//! `polyphony referral`: the referrals of a case. The referral that brought the person to the
//! team is given with `case new` (or recorded here later); a re-referral of someone the team has
//! met before is recorded here and opens a new episode on the same case, so their network and
//! history carry over while the figures count each episode on its own. The first meeting is due
//! by the referral's urgency (emergency 4 hours, urgent 24, routine 4 weeks): the caseload shows
//! the time left, and the morning list (`polyphony today`) flags it when due or past due.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use polyphony_core::model::attachments::{check_size, human_size};
use polyphony_core::model::referrals::time_left;
use polyphony_core::model::{
    short, AttachmentKind, CaseView, NewReferral, ReferralSource, Urgency,
};
use polyphony_core::profile::{AttachFile, Profile};

use super::{created, datetime, find_case, find_entry, read_case};
use crate::failure::Failure;
use crate::output::{self, Page};

/// `referral` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ReferralCommand {
    /// Record a referral (a re-referral opens a new episode); prints its id.
    Add {
        /// Case id (a unique prefix is enough).
        case: String,
        #[command(flatten)]
        referral: ReferralArgs,
    },
    /// Attach the letter of a referral recorded without one (a letter that followed a telephone
    /// referral); prints the attachment's id.
    Letter {
        /// Case id (a unique prefix is enough).
        case: String,
        /// The referral's id (a unique prefix is enough).
        referral: String,
        /// The letter (PDF, image or office document; at most 20 MB).
        file: PathBuf,
    },
    /// The case's referrals and the episodes they opened, with the first meeting's due time.
    List {
        /// Case id (a unique prefix is enough).
        case: String,
        /// Print JSON (shape in docs/JSON.md).
        #[arg(long)]
        json: bool,
    },
}

/// What a referral says, as `referral add` and `case new` take it.
#[derive(Debug, Args)]
pub(crate) struct ReferralArgs {
    /// When it came in, YYYY-MM-DDTHH:MM (UK time).
    #[arg(long, value_name = "WHEN")]
    received: String,
    /// Where it came from: self, family, gp, emergency_department (A&E) or other_team.
    #[arg(long)]
    source: ReferralSource,
    /// Who referred: their name and role or service (not needed for a self-referral).
    #[arg(long)]
    referrer: Option<String>,
    /// Why, in the referrer's words.
    #[arg(long)]
    reason: String,
    /// emergency (first meeting within 4 hours), urgent (24 hours) or routine (4 weeks).
    #[arg(long)]
    urgency: Urgency,
    /// The referral letter (PDF, image or office document; at most 20 MB): attached to the case
    /// as its referral letter.
    #[arg(long, value_name = "FILE", conflicts_with = "letter_id")]
    letter: Option<PathBuf>,
    /// A referral letter already attached to the case (its id; a unique prefix is enough).
    #[arg(long, value_name = "ID")]
    letter_id: Option<String>,
}

/// A letter read from disk, to attach with the referral.
pub(crate) struct Letter {
    file_name: String,
    content: Vec<u8>,
}

impl Letter {
    /// Read a letter from disk, its size checked before it is read into memory.
    pub(crate) fn read(path: &std::path::Path) -> Result<Letter, Failure> {
        let size = std::fs::metadata(path)
            .map_err(|e| Failure::user(format!("cannot read {}: {e}", path.display())))?
            .len();
        check_size(size)?;
        let content = std::fs::read(path)
            .map_err(|e| Failure::user(format!("cannot read {}: {e}", path.display())))?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Letter { file_name, content })
    }

    /// The file to attach, as the profile takes it.
    pub(crate) fn file(&self) -> AttachFile<'_> {
        AttachFile {
            kind: AttachmentKind::ReferralLetter,
            title: "",
            file_name: &self.file_name,
            content: &self.content,
            meeting: None,
        }
    }
}

impl ReferralArgs {
    /// The referral (its letter, if already attached, found on `case`) and the letter file to
    /// attach, read and checked before anything is written.
    pub(crate) fn read(
        self,
        profile: &mut Profile,
        case: Option<polyphony_core::CaseId>,
    ) -> Result<(NewReferral, Option<Letter>), Failure> {
        let letter_id = match (self.letter_id, case) {
            (Some(id), Some(case)) => Some(find_entry(profile, case, &id)?),
            (Some(_), None) => {
                return Err(Failure::user(
                    "a new case has no attachments yet: give the letter's file with --letter",
                ))
            }
            (None, _) => None,
        };
        let letter = self.letter.as_deref().map(Letter::read).transpose()?;
        let referral = NewReferral {
            received_at: received_at(&self.received)?,
            source: self.source,
            referrer: self.referrer,
            reason: self.reason,
            urgency: self.urgency,
            letter: letter_id,
        };
        Ok((referral, letter))
    }
}

/// When a referral came in: a date and a time (a date alone would read as midnight, and an
/// emergency referral made at 15:00 would be past due at once).
pub(crate) fn received_at(given: &str) -> Result<polyphony_core::model::Instant, Failure> {
    if !given.contains(':') {
        return Err(Failure::user(format!(
            "'{given}' has no time: give when the referral came in as YYYY-MM-DDTHH:MM (UK time)"
        )));
    }
    datetime("referral time", given)
}

impl ReferralCommand {
    /// Carry out the command.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        match self {
            ReferralCommand::Add { case, referral } => {
                let case = find_case(profile, &case)?;
                let (referral, letter) = referral.read(profile, Some(case))?;
                let urgency = referral.urgency;
                let id = profile.refer(case, referral, letter.as_ref().map(Letter::file))?;
                let view = profile.lookup(case)?;
                created(id, recorded(&view, id, urgency, letter.as_ref()));
                Ok(())
            }
            ReferralCommand::Letter {
                case,
                referral,
                file,
            } => {
                let case = find_case(profile, &case)?;
                let referral = find_entry(profile, case, &referral)?;
                let letter = Letter::read(&file)?;
                let id = profile.add_referral_letter(case, referral, letter.file())?;
                created(
                    id,
                    format!(
                        "referral letter attached ({}): on this device only until the next `polyphony sync`",
                        human_size(letter.content.len() as u64)
                    ),
                );
                Ok(())
            }
            ReferralCommand::List { case, json } => {
                let view = read_case(profile, &case, "referrals")?;
                if json {
                    return output::json(&serde_json::json!({
                        "referrals": view.referrals,
                        "episodes": view.episodes,
                    }));
                }
                let mut page = Page::default();
                print(&mut page, &view, 0);
                page.print();
                Ok(())
            }
        }
    }
}

/// What `referral add` and `case new` say once a referral is recorded: its episode and when the
/// first meeting is due.
pub(crate) fn recorded(
    view: &CaseView,
    id: polyphony_core::EntryId,
    urgency: Urgency,
    letter: Option<&Letter>,
) -> String {
    let episode = view.episodes.iter().find(|e| e.referral == Some(id));
    let mut words = format!("{} referral recorded", urgency.label());
    if let Some(e) = episode {
        words.push_str(&format!(", episode {}", e.number));
        if e.awaiting_first_meeting().is_some() {
            words.push_str(&format!(
                "; first network meeting due by {}",
                output::when(&e.first_meeting_due)
            ));
        }
    }
    if let Some(l) = letter {
        words.push_str(&format!(
            "; letter attached ({}): on this device only until the next `polyphony sync`",
            human_size(l.content.len() as u64)
        ));
    }
    if let Some(near) = view.referral_near(id) {
        words.push_str(&format!(
            "\nanother referral came in at {} ({}): if this is the same one, mark this one \
             entered in error (`polyphony error {} {} --reason \"Recorded twice\"`), or it opens \
             an episode of its own",
            output::when_opt(near.received_at.as_deref()),
            near.source.label(),
            short(&view.case_id),
            short(id)
        ));
    }
    words
}

/// The referrals and episodes of a case, for people.
pub(crate) fn print(page: &mut Page, view: &CaseView, indent: usize) {
    let now = time::OffsetDateTime::now_utc();
    if view.referrals.is_empty() {
        page.line(
            indent,
            "no referral recorded (the case's referral time is its milestone)",
        );
    }
    for r in &view.referrals {
        if r.meta.withheld() {
            page.line(
                indent,
                format!(
                    "{}  [recorded on the wrong person's record: withheld]",
                    short(r.meta.id)
                ),
            );
            continue;
        }
        let error = if r.meta.entered_in_error.is_some() {
            "  [entered in error]"
        } else {
            ""
        };
        let from = match &r.referrer {
            Some(who) => format!("{}: {who}", r.source.label()),
            None => r.source.label(),
        };
        page.line(
            indent,
            format!(
                "{}  {}, {} ({from}){error}",
                short(r.meta.id),
                output::when_opt(r.received_at.as_deref()),
                r.urgency.label(),
            ),
        );
        page.line(indent + 2, format!("reason: \"{}\"", r.reason));
        if let Some(l) = r.letter {
            let title = view
                .attachments
                .iter()
                .find(|a| a.meta.id == l)
                .map(|a| a.title.clone())
                .unwrap_or_default();
            page.line(indent + 2, format!("letter: {} {title}", short(l)));
        }
    }
    for e in &view.episodes {
        let state = if let Some(due) = e.awaiting_first_meeting() {
            let (left, past) = time_left(due, now);
            let due = output::when(&e.first_meeting_due);
            if past {
                format!("FIRST MEETING PAST DUE: {left} (due {due})")
            } else {
                format!("first meeting due {due}: {left}")
            }
        } else if let Some(first) = &e.first_meeting {
            let in_time = match e.met_in_time() {
                Some(true) => "in time",
                _ => "late",
            };
            format!(
                "first meeting {} ({in_time}), {} meeting(s)",
                output::when(first),
                e.meetings
            )
        } else if e.closed_at.is_none() && e.ended_by_referral_at.is_some() {
            "no network meeting before the next referral".to_string()
        } else {
            "closed with no network meeting".to_string()
        };
        let end = match (&e.closed_at, &e.ended_by_referral_at) {
            (Some(c), _) => format!(", closed {}", output::when(c)),
            (None, Some(_)) => ", ended by the next referral".to_string(),
            (None, None) => String::new(),
        };
        page.line(
            indent,
            format!(
                "episode {} from {}: {state}{end}",
                e.number,
                output::when(&e.received_at)
            ),
        );
    }
}
