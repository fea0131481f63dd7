//! Work that is due: what a practitioner opens in the morning, read from a case as it stands.
//!
//! Three things come due on a case: an action whose date has come (overdue, or due today), a
//! planned meeting whose time has passed with no outcome recorded (someone has to say whether it
//! took place before it counts for anything), and a review of the crisis plan (not recorded yet:
//! see [`reviews_due`]). The fourth line of the morning list, changes left only on this device
//! for too long, is the device's business, not the record's: the profile adds it
//! (`Profile::due_work`).
//!
//! Everything here is a pure function of a [`CaseView`], the UK date today and the instant now,
//! so the boundaries (midnight, the clocks changing) are tested without a clock. "Today" is the
//! date on the UK calendar ([`LocalZone::date`](super::LocalZone::date)): between midnight and
//! 01:00 in summer it is already the next day here while UTC is still on the last one, and an
//! action due "yesterday" must not wait an hour more to show as overdue.
//!
//! Nothing withheld ever appears (an entry recorded on the wrong person's record, or marked with
//! a kind a newer schema wrote), and nothing entered in error: it was a mistake, not work.

use serde::{Deserialize, Serialize};

use super::view::{ActionView, CaseView, DecisionView, MeetingView};
use super::{
    parse_date, Date, DecisionStatus, Instant, LocalZone, MeetingState, Participant, Stored,
};
use crate::{EntryId, PractitionerId};

/// What kind of work an item is. Serialised snake_case (`overdue`, `due_today`,
/// `awaits_outcome`, `unsynced`); a later version may add kinds, so readers of the JSON should
/// show an unknown one as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkKind {
    /// An action not done whose due date was before today.
    Overdue,
    /// An action not done that is due today.
    DueToday,
    /// A planned meeting whose time has passed, with no outcome recorded.
    AwaitsOutcome,
    /// Changes on this device the server has not acknowledged for longer than the warning.
    Unsynced,
}

impl WorkKind {
    /// The kind in words, as every screen shows it.
    pub fn words(self) -> &'static str {
        match self {
            WorkKind::Overdue => "Overdue",
            WorkKind::DueToday => "Due today",
            WorkKind::AwaitsOutcome => "Awaits outcome",
            WorkKind::Unsynced => "Not synced",
        }
    }
}

/// One line of the morning list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkItem {
    /// The case.
    pub case_id: String,
    /// The person's name.
    pub person: String,
    /// What kind of work.
    pub kind: WorkKind,
    /// The action or meeting (none for unsynced changes, which are the whole case's).
    pub entry: Option<EntryId>,
    /// The decision an action belongs to (its page is where the action is done).
    pub decision: Option<EntryId>,
    /// What is to be done, in the record's words (the action's text; for a meeting or unsynced
    /// changes, a sentence saying what is waiting).
    pub text: String,
    /// An action's due date (YYYY-MM-DD, a UK calendar date).
    pub due: Option<String>,
    /// A meeting's time, or since when changes have waited (RFC 3339, UTC).
    pub at: Option<String>,
    /// Whole UK calendar days since it came due: 0 for due today, 1 for due yesterday; for a
    /// meeting, days since its date; for unsynced changes, days since they were first made.
    pub days_overdue: i64,
    /// Who owns the action (none for meetings and unsynced changes).
    pub owner: Option<Stored<Participant>>,
    /// The owner as a name, as the case names them (see [`Names`](super::Names)).
    pub owner_name: Option<String>,
    /// Whether it is the given practitioner's: they own the action, or attended, were invited
    /// to or recorded the meeting; unsynced changes on their own device are always theirs.
    pub mine: bool,
}

/// How the morning list is sorted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkOrder {
    /// Most overdue first (the default).
    #[default]
    Due,
    /// By the person's name.
    Person,
    /// By kind: overdue, due today, awaiting an outcome, unsynced.
    Kind,
}

impl std::str::FromStr for WorkOrder {
    type Err = super::ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "due" => Ok(WorkOrder::Due),
            "person" => Ok(WorkOrder::Person),
            "kind" => Ok(WorkOrder::Kind),
            other => Err(super::ModelError::InvalidChoice {
                field: "sort",
                value: other.to_string(),
                allowed: "due, person, kind".into(),
            }),
        }
    }
}

/// Sort `items` in `order`; ties fall back to most overdue, then person, kind, text and id, so the
/// list reads the same on every device.
pub fn sort_work(items: &mut [WorkItem], order: WorkOrder) {
    let tail = |a: &WorkItem, b: &WorkItem| {
        b.days_overdue
            .cmp(&a.days_overdue)
            .then_with(|| a.person.cmp(&b.person))
            .then_with(|| a.kind.cmp(&b.kind))
            .then_with(|| a.text.cmp(&b.text))
            .then_with(|| a.case_id.cmp(&b.case_id))
            .then_with(|| a.entry.cmp(&b.entry))
    };
    items.sort_by(|a, b| match order {
        WorkOrder::Due => tail(a, b),
        WorkOrder::Person => a.person.cmp(&b.person).then_with(|| tail(a, b)),
        WorkOrder::Kind => a.kind.cmp(&b.kind).then_with(|| tail(a, b)),
    });
}

/// The work due on one case at `now`: actions overdue or due today, and meetings awaiting an
/// outcome (reviews due: [`reviews_due`]). Days are counted on the calendar of `zone` (UK time
/// unless the device chose another); `me` is the practitioner whose work is "mine". Unsorted:
/// see [`sort_work`].
pub fn due_work(
    view: &CaseView,
    me: Option<PractitionerId>,
    zone: &LocalZone,
    now: Instant,
) -> Vec<WorkItem> {
    let today = zone.date(now);
    let mut items: Vec<WorkItem> = view
        .decisions
        .iter()
        .filter(|d| d.meta.entered_in_error.is_none())
        // A withdrawn decision is no longer pursued, and nor are its actions.
        .filter(|d| !d.status.is(DecisionStatus::Withdrawn))
        .flat_map(|d| d.actions.iter().map(move |a| (d, a)))
        .filter_map(|(d, a)| action_item(view, d, a, me, today))
        .collect();
    items.extend(
        view.meetings
            .iter()
            .filter(|m| m.meta.entered_in_error.is_none() && m.awaits_outcome(now))
            .map(|m| meeting_item(view, m, me, zone, today)),
    );
    items.extend(reviews_due(view, today));
    items
}

/// The crisis plan's review, when due. Issue 17 part 1 (the safety and crisis plan, with its
/// review date) is not in the record yet, so there is nothing to read and nothing is listed:
/// when the plan lands, its review date is read here (and a `review_due` kind added).
pub fn reviews_due(_view: &CaseView, _today: Date) -> Vec<WorkItem> {
    Vec::new()
}

fn action_item(
    view: &CaseView,
    decision: &DecisionView,
    a: &ActionView,
    me: Option<PractitionerId>,
    today: Date,
) -> Option<WorkItem> {
    if a.done || a.meta.entered_in_error.is_some() {
        return None;
    }
    // A date that does not parse is not a date this code can call due; the case page shows it.
    let due = parse_date("due", a.due.as_deref()?).ok()?;
    let days = (today - due).whole_days();
    let kind = match days {
        d if d > 0 => WorkKind::Overdue,
        0 => WorkKind::DueToday,
        _ => return None,
    };
    let mine = me.is_some_and(|me| {
        a.owner
            .as_ref()
            .is_some_and(|o| o.is(Participant::Practitioner(me)))
    });
    Some(WorkItem {
        case_id: view.case_id.clone(),
        person: view.person.name.clone(),
        kind,
        entry: Some(a.meta.id),
        decision: Some(decision.meta.id),
        text: a.text.clone(),
        due: a.due.clone(),
        at: None,
        days_overdue: days,
        owner: a.owner.clone(),
        owner_name: a.owner.as_ref().map(|o| super::Names::new(view).of(o)),
        mine,
    })
}

fn meeting_item(
    view: &CaseView,
    m: &MeetingView,
    me: Option<PractitionerId>,
    zone: &LocalZone,
    today: Date,
) -> WorkItem {
    let day =
        m.at.as_deref()
            .and_then(stored_instant)
            .map(|t| zone.date(t));
    let mine = me.is_some_and(|me| {
        m.attendees
            .iter()
            .any(|p| p.is(Participant::Practitioner(me)))
            || m.meta
                .created_by
                .as_ref()
                .is_some_and(|a| a.practitioner == me.to_string())
    });
    WorkItem {
        case_id: view.case_id.clone(),
        person: view.person.name.clone(),
        kind: WorkKind::AwaitsOutcome,
        entry: Some(m.meta.id),
        decision: None,
        text: "Say whether the planned meeting took place".into(),
        due: None,
        at: m.at.clone(),
        days_overdue: day.map_or(0, |d| (today - d).whole_days().max(0)),
        owner: None,
        owner_name: None,
        mine,
    }
}

impl MeetingView {
    /// A meeting still planned whose time has passed (at or before `now`): someone has to say
    /// whether it took place before it counts for anything. A meeting without a time is taken as
    /// past (nothing is waiting for it to come); a state a newer schema wrote is not planned.
    pub fn awaits_outcome(&self, now: Instant) -> bool {
        self.state.is(MeetingState::Planned)
            && self
                .at
                .as_deref()
                .and_then(stored_instant)
                .is_none_or(|t| t <= now)
    }
}

fn stored_instant(t: &str) -> Option<Instant> {
    Instant::parse(t, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
#[path = "work_tests.rs"]
mod tests;
