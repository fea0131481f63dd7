//! Work that is due: what a practitioner opens in the morning, read from a case as it stands.
//!
//! Three things come due on a case: an action whose date has come (overdue, or due today), a
//! planned meeting whose time has passed with no outcome recorded (someone has to say whether it
//! took place before it counts for anything), and a review of the crisis plan whose date has
//! come ([`reviews_due`]). The fourth line of the morning list, changes left only on this device
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
//! a kind a newer schema wrote), and nothing entered in error: it was a mistake, not work. What
//! cannot be read for sure is listed, never dropped: an action whose `done` or `due` holds
//! conflicting values is open, due on the earliest of them, and says so ([`WorkItem::conflict`]);
//! an action whose due date does not read is listed with [`WorkItem::due_unreadable`]; the
//! actions of a withdrawn decision are listed with [`WorkItem::decision_withdrawn`] (its page
//! still shows them open).

use serde::{Deserialize, Serialize};

use super::view::{ActionView, CaseView, DecisionView, MeetingView};
use super::{
    parse_date, Date, DecisionStatus, Instant, LocalZone, MeetingState, Participant, Stored,
};
use crate::{EntryId, PractitionerId};

/// How long changes may wait on this device before the list warns of them, in minutes, unless
/// the app or the command line is told otherwise.
pub const DEFAULT_UNSYNCED_WARNING_MINUTES: i64 = 120;

/// What a read is recorded as when a screen shows the list's text from a case
/// (`Profile::record_work_reads`).
pub const WORK_READ: &str = "needs attention list";

/// What kind of work an item is. Serialised snake_case (`first_meeting`, `overdue`, `due_today`,
/// `awaits_outcome`, `review_due`, `unsynced`, `unreadable`); a later version may add kinds, so readers of the
/// JSON should show an unknown one as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkKind {
    /// The first network meeting of an open episode is awaited: none has been held yet (schema
    /// 4: due by the referral's urgency).
    FirstMeeting,
    /// An action not done whose due date was before today.
    Overdue,
    /// An action not done that is due today.
    DueToday,
    /// A planned meeting whose time has passed, with no outcome recorded.
    AwaitsOutcome,
    /// The crisis plan's review date has come.
    ReviewDue,
    /// Changes on this device the server has not acknowledged for longer than the warning.
    Unsynced,
    /// A case on this device that could not be opened: its work cannot be listed, so the case
    /// itself is.
    Unreadable,
}

impl WorkKind {
    /// The kind in words, as every screen shows it.
    pub fn words(self) -> &'static str {
        match self {
            WorkKind::FirstMeeting => "First meeting",
            WorkKind::Overdue => "Overdue",
            WorkKind::DueToday => "Due today",
            WorkKind::AwaitsOutcome => "Awaits outcome",
            WorkKind::ReviewDue => "Review due",
            WorkKind::Unsynced => "Not synced",
            WorkKind::Unreadable => "Could not be opened",
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
    /// Whether it is the given practitioner's. An action: they own it, or its owner is not a
    /// practitioner in the case's current care team (nobody, the person, a network member, a
    /// practitioner who has left) and they are in it. A meeting: they attended, were invited to
    /// or recorded it, or none of its practitioners is in the current care team and they are.
    /// Unsynced changes and a case that cannot be opened are this device's, so always theirs.
    pub mine: bool,
    /// The action's `done` or `due` holds values two devices wrote concurrently: it is listed as
    /// open, due on the earliest of the dates, until someone picks (the case's conflicts page).
    #[serde(default)]
    pub conflict: bool,
    /// The action's decision was withdrawn; the action itself was never marked done.
    #[serde(default)]
    pub decision_withdrawn: bool,
    /// The action's due date could not be read (`due` holds it as written): listed as due today,
    /// since nothing can say it is not.
    #[serde(default)]
    pub due_unreadable: bool,
}

impl WorkItem {
    /// An item about the case as this device holds it, not about one of its entries (work not
    /// synced, a case that cannot be opened): always this device's user's to see to.
    pub fn of_this_device(case_id: String, person: String, kind: WorkKind, text: String) -> Self {
        WorkItem {
            case_id,
            person,
            kind,
            entry: None,
            decision: None,
            text,
            due: None,
            at: None,
            days_overdue: 0,
            owner: None,
            owner_name: None,
            mine: true,
            conflict: false,
            decision_withdrawn: false,
            due_unreadable: false,
        }
    }

    /// Whether showing the item shows something written in the case (an action's text), so
    /// showing it is an access to be recorded. The line of a meeting, unsynced changes or a case
    /// that cannot be opened is this code's own sentence.
    pub fn shows_case_text(&self) -> bool {
        self.decision.is_some()
    }

    /// The kind in words, as screens show it: "Due date unreadable" for an action whose date did
    /// not read, else [`WorkKind::words`].
    pub fn kind_words(&self) -> &'static str {
        if self.due_unreadable {
            "Due date unreadable"
        } else {
            self.kind.words()
        }
    }

    /// What else a reader must know about the item, in words: values in conflict, a withdrawn
    /// decision, a due date that does not read. Empty when nothing.
    pub fn flags(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.conflict {
            out.push("values conflict");
        }
        if self.decision_withdrawn {
            out.push("decision withdrawn");
        }
        if self.due_unreadable {
            out.push("due date could not be read");
        }
        out
    }
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

/// The order of two people's names: ignoring letter case, then as written.
fn by_person(a: &WorkItem, b: &WorkItem) -> std::cmp::Ordering {
    a.person
        .to_lowercase()
        .cmp(&b.person.to_lowercase())
        .then_with(|| a.person.cmp(&b.person))
}

/// Sort `items` in `order`; ties fall back to most overdue, then person (ignoring letter case),
/// case, kind, text and id, so the list reads the same on every device.
pub fn sort_work(items: &mut [WorkItem], order: WorkOrder) {
    let tail = |a: &WorkItem, b: &WorkItem| {
        b.days_overdue
            .cmp(&a.days_overdue)
            .then_with(|| by_person(a, b))
            .then_with(|| a.case_id.cmp(&b.case_id))
            .then_with(|| a.kind.cmp(&b.kind))
            .then_with(|| a.text.cmp(&b.text))
            .then_with(|| a.case_id.cmp(&b.case_id))
            .then_with(|| a.entry.cmp(&b.entry))
    };
    items.sort_by(|a, b| match order {
        WorkOrder::Due => tail(a, b),
        WorkOrder::Person => by_person(a, b)
            .then_with(|| a.case_id.cmp(&b.case_id))
            .then_with(|| tail(a, b)),
        WorkOrder::Kind => a.kind.cmp(&b.kind).then_with(|| tail(a, b)),
    });
}

/// The work due on one case at `now`: actions overdue or due today, and meetings awaiting an
/// outcome, and the crisis plan's review once due ([`reviews_due`]). Days are counted on the calendar of `zone` (UK time
/// unless the device chose another); `me` is the practitioner whose work is "mine". Unsorted:
/// see [`sort_work`].
pub fn due_work(
    view: &CaseView,
    me: Option<PractitionerId>,
    zone: &LocalZone,
    now: Instant,
) -> Vec<WorkItem> {
    let today = zone.date(now);
    let team = current_team(view);
    let mut items: Vec<WorkItem> = view
        .decisions
        .iter()
        .filter(|d| d.meta.entered_in_error.is_none())
        // A withdrawn decision's actions are still listed, marked so: nobody marked them done,
        // and the decision's page still shows them open.
        .flat_map(|d| d.actions.iter().map(move |a| (d, a)))
        .filter_map(|(d, a)| action_item(view, d, a, me, &team, today))
        .collect();
    items.extend(
        view.meetings
            .iter()
            .filter(|m| m.awaits_outcome(now))
            .map(|m| meeting_item(view, m, me, &team, zone, today)),
    );
    items.extend(reviews_due(view, me, today));
    items.extend(first_meeting_due(view, me, zone, now));
    items
}

/// The first network meeting of the case's open episode, from the moment its referral is
/// recorded until a network meeting is held (the practice aims to meet within 24 hours, so it
/// needs attention at once; for a case with no referral recorded, from the UK day it is due):
/// one item, due at the time the urgency sets, saying the time left or how long past due. Mine when I am in the case's current care team, or when nobody is (a new
/// referral often has no care team yet: everyone sees it).
pub fn first_meeting_due(
    view: &CaseView,
    me: Option<PractitionerId>,
    zone: &LocalZone,
    now: Instant,
) -> Option<WorkItem> {
    let episode = view.episodes.last()?;
    let due = episode.awaiting_first_meeting()?;
    let today = zone.date(now);
    let due_day = zone.date(due);
    // A recorded referral starts the clock at once; a case whose referral is only the timeline's
    // milestone (from before referrals were recorded, or opened without one) is listed from the
    // UK day its first meeting is due, as before.
    let received = episode.received();
    let listed = if episode.referral.is_some() {
        received.is_some_and(|r| r <= now)
    } else {
        due_day <= today
    };
    if !listed {
        return None;
    }
    let (left, _) = super::referrals::time_left(due, now);
    let urgency = match episode.urgency.as_ref() {
        Some(u) => format!("{} referral", u.label().to_lowercase()),
        None => "referral".to_string(),
    };
    let team = current_team(view);
    let mut item = WorkItem::of_this_device(
        view.case_id.clone(),
        view.person.name.clone(),
        WorkKind::FirstMeeting,
        format!("Hold the first network meeting ({urgency}): {left}"),
    );
    item.at = Some(episode.first_meeting_due.clone());
    item.days_overdue = (today - due_day).whole_days().max(0);
    item.mine = me.is_some_and(|me| team.is_empty() || team.contains(&me));
    Some(item)
}

/// The practitioners in the case's care team now: entries not entered in error, with no end.
fn current_team(view: &CaseView) -> Vec<PractitionerId> {
    view.care_team
        .iter()
        .filter(|c| c.meta.entered_in_error.is_none() && c.end.is_none())
        .filter_map(|c| c.practitioner.known())
        .collect()
}

/// The values a field of an action holds: every concurrent value when the case's conflicts name
/// it (a cleared one left out), else the one the view shows.
fn field_values(
    view: &CaseView,
    decision: &DecisionView,
    a: &ActionView,
    key: &str,
) -> Option<Vec<String>> {
    let field = format!(
        "{}.{}.{}.{}.{key}",
        super::keys::DECISIONS,
        decision.meta.id,
        super::keys::ACTIONS,
        a.meta.id
    );
    view.conflicts.iter().find(|c| c.field == field).map(|c| {
        c.values
            .iter()
            .filter(|v| v.value != "(cleared)")
            .map(|v| v.value.clone())
            .collect()
    })
}

/// The crisis plan's review, once its date (the newest review date set) is today or past: one
/// item, due on that date. Mine when I am in the case's current care team, or when nobody is.
/// A review date that does not read is listed as due today (nothing can say it is not).
pub fn reviews_due(view: &CaseView, me: Option<PractitionerId>, today: Date) -> Vec<WorkItem> {
    let Some(on) = view.crisis_plan.review_on.as_deref() else {
        return Vec::new();
    };
    let parsed = parse_date("review date", on).ok();
    if parsed.is_some_and(|d| d > today) {
        return Vec::new();
    }
    let team = current_team(view);
    let mut item = WorkItem::of_this_device(
        view.case_id.clone(),
        view.person.name.clone(),
        WorkKind::ReviewDue,
        "Review the crisis plan with the person".into(),
    );
    item.due = Some(on.to_string());
    item.days_overdue = parsed.map_or(0, |d| (today - d).whole_days());
    item.due_unreadable = parsed.is_none();
    item.mine = me.is_some_and(|me| team.is_empty() || team.contains(&me));
    vec![item]
}

fn action_item(
    view: &CaseView,
    decision: &DecisionView,
    a: &ActionView,
    me: Option<PractitionerId>,
    team: &[PractitionerId],
    today: Date,
) -> Option<WorkItem> {
    if a.meta.entered_in_error.is_some() {
        return None;
    }
    let done_conflict = field_values(view, decision, a, super::keys::DONE).is_some();
    let due_values = field_values(view, decision, a, super::keys::DUE);
    let conflict = done_conflict || due_values.is_some();
    // Done only when every device agrees it is.
    if a.done && !conflict {
        return None;
    }
    let dues = due_values.unwrap_or_else(|| a.due.iter().cloned().collect());
    if dues.is_empty() {
        // No date: it never comes due.
        return None;
    }
    let earliest = dues.iter().filter_map(|d| parse_date("due", d).ok()).min();
    let (kind, days, due, due_unreadable) = match earliest {
        Some(due) => {
            let days = (today - due).whole_days();
            let kind = match days {
                d if d > 0 => WorkKind::Overdue,
                0 => WorkKind::DueToday,
                _ => return None,
            };
            (kind, days, super::format_date(due), false)
        }
        // A date that does not read cannot be called not due: listed, and said so.
        None => (WorkKind::DueToday, 0, dues.join(" / "), true),
    };
    let owner_in_team = a.owner.as_ref().is_some_and(
        |o| matches!(o.known(), Some(Participant::Practitioner(p)) if team.contains(&p)),
    );
    let mine = me.is_some_and(|me| {
        a.owner
            .as_ref()
            .is_some_and(|o| o.is(Participant::Practitioner(me)))
            || (!owner_in_team && team.contains(&me))
    });
    Some(WorkItem {
        case_id: view.case_id.clone(),
        person: view.person.name.clone(),
        kind,
        entry: Some(a.meta.id),
        decision: Some(decision.meta.id),
        text: a.text.clone(),
        due: Some(due),
        at: None,
        days_overdue: days,
        owner: a.owner.clone(),
        owner_name: a.owner.as_ref().map(|o| super::Names::new(view).of(o)),
        mine,
        conflict,
        decision_withdrawn: decision.status.is(DecisionStatus::Withdrawn),
        due_unreadable,
    })
}

fn meeting_item(
    view: &CaseView,
    m: &MeetingView,
    me: Option<PractitionerId>,
    team: &[PractitionerId],
    zone: &LocalZone,
    today: Date,
) -> WorkItem {
    let day =
        m.at.as_deref()
            .and_then(stored_instant)
            .map(|t| zone.date(t));
    let team_attends = m
        .attendees
        .iter()
        .any(|p| matches!(p.known(), Some(Participant::Practitioner(p)) if team.contains(&p)));
    let mine = me.is_some_and(|me| {
        m.attendees
            .iter()
            .any(|p| p.is(Participant::Practitioner(me)))
            || m.meta
                .created_by
                .as_ref()
                .is_some_and(|a| a.practitioner == me.to_string())
            || (!team_attends && team.contains(&me))
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
        conflict: false,
        decision_withdrawn: false,
        due_unreadable: false,
    }
}

impl MeetingView {
    /// A meeting still planned whose time has passed (at or before `now`): someone has to say
    /// whether it took place before it counts for anything. A meeting without a time is taken as
    /// past (nothing is waiting for it to come); a state a newer schema wrote is not planned; a
    /// meeting entered in error (or withheld) awaits nothing.
    pub fn awaits_outcome(&self, now: Instant) -> bool {
        self.meta.entered_in_error.is_none()
            && self.state.is(MeetingState::Planned)
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
