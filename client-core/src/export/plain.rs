//! Dates and words as a person reads them: "14 March 2026 at 10:30 UK time", not
//! `2026-03-14T09:30:00Z`.
//!
//! The record stores UTC; every copy shows UK local time at the offset in force on that date (see
//! `model::local_time`), and says so, so the person's copy, the PDF and the FHIR narrative agree
//! with the screen the practitioner typed it on.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::model::local_time::date_words;
use crate::model::readback::LaterChange;
use crate::model::view::{ErrorMark, MeetingView};
use crate::model::LocalZone;
use crate::model::{
    CareRole, DecisionStatus, MeetingState, NoteKind, Place, PositionView, Stance, Stored,
};

/// "14 March 2026" from an RFC 3339 timestamp (its UK date) or a YYYY-MM-DD date; the input
/// itself if neither.
pub(crate) fn date(s: &str) -> String {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return LocalZone::uk().long_date(t);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    match time::Date::parse(s, &fmt) {
        Ok(d) => date_words(d),
        Err(_) => s.to_string(),
    }
}

/// "14 March 2026 at 10:30 UK time" from an RFC 3339 timestamp; falls back to [`date`].
pub(crate) fn datetime(s: &str) -> String {
    match OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => {
            let uk = LocalZone::uk();
            format!("{} {}", uk.long(t), uk.label())
        }
        Err(_) => date(s),
    }
}

/// [`date`] of an optional value, or "date not recorded".
pub(crate) fn date_or(s: &Option<String>) -> String {
    s.as_deref()
        .map(date)
        .unwrap_or_else(|| "date not recorded".into())
}

/// [`datetime`] of an optional value, or "time not recorded".
pub(crate) fn datetime_or(s: &Option<String>) -> String {
    s.as_deref()
        .map(datetime)
        .unwrap_or_else(|| "time not recorded".into())
}

/// How a stance reads: "agrees", "disagrees", "is not sure yet".
pub(crate) fn stance(s: &Stored<Stance>) -> String {
    words(s, |k| match k {
        Stance::Agree => "agrees",
        Stance::Disagree => "disagrees",
        Stance::Unsure => "is not sure yet",
    })
}

/// How a part in the care team reads to the person: the continuing pair as such.
pub(crate) fn care_role(s: &Stored<CareRole>) -> String {
    words(s, |k| match k {
        CareRole::Practitioner => "one of your two practitioners, who stay with you throughout",
        CareRole::PeerSupport => "peer support worker",
        CareRole::Psychiatrist => "psychiatrist",
    })
}

/// How a decision's status reads.
pub(crate) fn decision_status(s: &Stored<DecisionStatus>) -> String {
    words(s, |k| match k {
        DecisionStatus::Proposed => "suggested, still being talked about",
        DecisionStatus::Agreed => "agreed",
        DecisionStatus::Revisited => "being looked at again",
        DecisionStatus::Withdrawn => "no longer going ahead",
        DecisionStatus::TeamDecided => "decided by the team without the person's agreement",
    })
}

/// How a change of a decision's status reads, as the start of a sentence.
pub(crate) fn status_event(s: &Stored<DecisionStatus>) -> String {
    words(s, |k| match k {
        DecisionStatus::Proposed => "Suggested",
        DecisionStatus::Agreed => "Agreed",
        DecisionStatus::Revisited => "Opened again",
        DecisionStatus::Withdrawn => "Dropped",
        DecisionStatus::TeamDecided => "Decided by the team while the person disagrees",
    })
}

/// How a meeting place reads.
pub(crate) fn place(s: &Stored<Place>) -> String {
    words(s, |k| match k {
        Place::Home => "at home",
        Place::Clinic => "at the clinic",
        Place::Online => "by video",
        Place::Phone => "by phone",
    })
}

/// A stance as it was taken, for a history: "agreed", "disagreed", "was unsure".
pub(crate) fn stance_taken(s: &Stored<Stance>) -> String {
    words(s, |k| match k {
        Stance::Agree => "agreed",
        Stance::Disagree => "disagreed",
        Stance::Unsure => "was unsure",
    })
}

/// A known value in plain words; one written by a newer version, as written.
fn words<T: Copy + PartialEq + std::fmt::Display>(
    s: &Stored<T>,
    plain: impl Fn(T) -> &'static str,
) -> String {
    match s.known() {
        Some(k) => plain(k).to_string(),
        None => s.to_string(),
    }
}

/// How a participant's view changed, when it did: "first was unsure (3 March 2026), then agreed
/// (10 March 2026)". `None` when they have only ever taken one stance.
pub(crate) fn stance_history(p: &PositionView) -> Option<String> {
    if p.earlier.is_empty() {
        return None;
    }
    let step = |x: &PositionView| format!("{} ({})", stance_taken(&x.stance), date_or(&x.at));
    let mut steps: Vec<String> = p.earlier.iter().map(step).collect();
    steps.push(step(p));
    Some(format!("first {}", steps.join(", then ")))
}

/// What a meeting's state means, as a heading: "What we talked about on 14 March 2026" for a
/// held meeting, and plain words for the others.
pub(crate) fn meeting_heading(m: &MeetingView) -> String {
    let day = date_or(&m.at);
    match m.state.known() {
        Some(MeetingState::Held) => format!("What we talked about on {day}"),
        Some(MeetingState::Planned) => format!("Meeting planned for {day}"),
        Some(MeetingState::Cancelled) => format!("The meeting on {day} was cancelled"),
        Some(MeetingState::DidNotAttend) => format!("The meeting on {day} did not take place"),
        None => format!(
            "Meeting on {day} ({})",
            m.state.to_string().replace('_', " ")
        ),
    }
}

/// The line every copy shows for a change made to a meeting's texts after its read-back.
pub(crate) fn later_change(c: &LaterChange) -> String {
    let by =
        c.by.as_ref()
            .map(|a| a.practitioner_name.as_str())
            .unwrap_or("someone unknown");
    let part = match c.part {
        NoteKind::Notes => "the notes",
        NoteKind::Reflections => "the reflections",
        NoteKind::Agreed => "what was agreed",
    };
    let mut what = Vec::new();
    if !c.added.is_empty() {
        what.push(format!("added \"{}\"", c.added.join("\", \"")));
    }
    if !c.removed.is_empty() {
        what.push(format!("took out \"{}\"", c.removed.join("\", \"")));
    }
    format!(
        "Changed after the meeting, not read back: {by} {} in {part} on {}.",
        what.join(" and "),
        datetime_or(&c.at)
    )
}

/// The note every copy shows for an entry marked in error. A mistake stays readable, struck
/// through; an entry recorded on the wrong person's record is a tombstone: what kind of entry it
/// was, who removed it, when and why, and none of its content.
pub(crate) fn error_note(mark: &ErrorMark, what: &str) -> String {
    let by = mark
        .by
        .as_ref()
        .map(|a| a.practitioner_name.as_str())
        .unwrap_or("someone unknown");
    let when = datetime_or(&mark.at);
    if mark.is_mistake() {
        format!(
            "This {what} was entered in error: {} ({by}, {when}). It is kept so you can see the record was corrected.",
            mark.reason
        )
    } else {
        format!(
            "A {what} was removed from this record because it was written on the wrong person's record. {by} removed it on {when}: {}",
            mark.reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_dates_read_as_words() {
        assert_eq!(
            datetime("2026-03-14T10:30:00Z"),
            "14 March 2026 at 10:30 UK time"
        );
        // In summer the UK clock is an hour ahead of the stored UTC time, and its date may be
        // the next day.
        assert_eq!(
            datetime("2026-06-14T09:30:00Z"),
            "14 June 2026 at 10:30 UK time"
        );
        assert_eq!(date("2026-06-30T23:30:00Z"), "1 July 2026");
        assert_eq!(date("2026-03-14T10:30:00.123Z"), "14 March 2026");
        assert_eq!(date("2026-12-01"), "1 December 2026");
        assert_eq!(date("sometime"), "sometime");
        assert_eq!(date_or(&None), "date not recorded");
    }
}
