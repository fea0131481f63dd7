//! A case's timeline: its milestones and every dated event, oldest first, built once here for
//! every reader (the CLI's `case timeline`, its `--json`, the app's case page), so that they
//! cannot differ on what happened. Entries marked entered in error stay on it, flagged, beside
//! the event of their marking; an entry recorded on the wrong person's record appears only as its
//! removal.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;

use super::referrals::Episode;
use super::types::{MeetingState, Participant, Stored};
use super::view::{AuthorView, CaseView, EntryMeta, TimelineView};
use super::Instant;
use crate::EntryId;

/// What kind of event (the JSON's `kind`, see docs/JSON.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The referral milestone.
    Referral,
    /// The first contact milestone.
    FirstContact,
    /// The first network meeting milestone.
    FirstNetworkMeeting,
    /// The closure of the episode.
    Closure,
    /// The case was opened.
    CaseOpened,
    /// A network member joined.
    MemberJoined,
    /// A network member left.
    MemberLeft,
    /// A member's consent to receive the record was recorded.
    Consent,
    /// A practitioner joined the care team.
    CareTeamJoined,
    /// A practitioner left the care team.
    CareTeamLeft,
    /// A meeting (held, planned, cancelled or not attended).
    Meeting,
    /// A decision's status changed (its proposal included).
    Decision,
    /// An action was agreed.
    Action,
    /// An entry was marked entered in error (or removed as another person's).
    EnteredInError,
}

/// How every copy and screen names a member recorded on the wrong person's record.
pub const REMOVED: &str = "someone removed from this record";

/// The first 8 characters of an id, as people read it: enough to tell entries apart on screen,
/// and accepted back wherever an id is asked for.
pub fn short(id: impl std::fmt::Display) -> String {
    let id = id.to_string();
    id.get(..8).unwrap_or(&id).to_string()
}

/// Display names for the participants and practitioner ids a case mentions.
pub struct Names<'a> {
    view: &'a CaseView,
    practitioners: HashMap<String, &'a str>,
}

impl<'a> Names<'a> {
    /// The names `view` mentions.
    pub fn new(view: &'a CaseView) -> Self {
        let mut practitioners = HashMap::new();
        let mut learn = |a: &'a Option<AuthorView>| {
            if let Some(a) = a {
                practitioners.insert(a.practitioner.clone(), a.practitioner_name.as_str());
            }
        };
        learn(&view.created_by);
        for m in &view.network {
            learn(&m.meta.created_by);
        }
        for m in &view.meetings {
            learn(&m.meta.created_by);
        }
        for d in &view.decisions {
            learn(&d.meta.created_by);
            for p in &d.positions {
                learn(&p.recorded_by);
            }
        }
        // Staff noted at a meeting from the team list (schema 3): a colleague ticked as present
        // need never have written to the case. Their care-team name, below, comes first.
        for m in view.meetings.iter().filter(|m| !m.meta.withheld()) {
            for s in &m.staff {
                practitioners.insert(s.practitioner.to_string(), s.name.as_str());
            }
        }
        for c in &view.care_team {
            practitioners.insert(c.practitioner.to_string(), c.name.as_str());
        }
        Names {
            view,
            practitioners,
        }
    }

    /// Participants as names: the person first, then their network, then practitioners.
    pub fn all(&self, who: &[Stored<Participant>]) -> Vec<String> {
        let rank = |p: &Stored<Participant>| match p.known() {
            Some(Participant::Person) => 0,
            Some(Participant::Member(_)) => 1,
            _ => 2,
        };
        let mut sorted: Vec<&Stored<Participant>> = who.iter().collect();
        sorted.sort_by_key(|p| rank(p));
        sorted.into_iter().map(|p| self.of(p)).collect()
    }

    /// A participant as a name; one written by a newer version, as written.
    pub fn of(&self, who: &Stored<Participant>) -> String {
        match who.known() {
            Some(p) => self.participant(p),
            None => who.to_string(),
        }
    }

    /// The person, a network member or a practitioner as a name.
    pub fn participant(&self, who: Participant) -> String {
        match who {
            Participant::Person => format!("{} (the person)", self.view.person.name),
            Participant::Member(id) => match self.view.network.iter().find(|m| m.meta.id == id) {
                Some(m) if m.meta.withheld() => REMOVED.into(),
                Some(m) => m.name.clone(),
                None => format!("network member {}", short(id)),
            },
            Participant::Practitioner(id) => match self.practitioners.get(&id.to_string()) {
                Some(name) => (*name).to_string(),
                None => format!("practitioner {}", short(id)),
            },
        }
    }
}

/// One thing that happened in a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEvent {
    /// When (RFC 3339, or YYYY-MM-DD for events recorded by date).
    pub at: String,
    /// What kind of event.
    pub kind: EventKind,
    /// The entry it concerns, if any.
    pub entry_id: Option<EntryId>,
    /// What happened, in words.
    pub text: String,
    /// Who recorded it (practitioner name), when known.
    pub by: Option<String>,
    /// True when the entry was later marked entered in error.
    pub entered_in_error: bool,
}

/// A case's milestones and every dated event, oldest first: what `case timeline` prints (and
/// `--json` writes) and the app's case page shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// Case id.
    pub case_id: String,
    /// The milestones of the episode, as in `CaseView.timeline`.
    pub milestones: TimelineView,
    /// Every dated event, oldest first.
    pub events: Vec<TimelineEvent>,
}

fn sort_key(at: &str) -> (i128, String) {
    let parsed = Instant::parse(at, &Rfc3339)
        .ok()
        .or_else(|| Instant::parse(&format!("{at}T00:00:00Z"), &Rfc3339).ok());
    (
        parsed
            .map(|t| t.unix_timestamp_nanos())
            .unwrap_or(i128::MAX),
        at.to_string(),
    )
}

impl Timeline {
    /// Gather the events of a case.
    pub fn from_view(view: &CaseView) -> Timeline {
        let mut events = Events(Vec::new());
        events.milestones(view);
        events.referrals(view);
        events.network(view);
        events.care_team(view);
        events.meetings(view, &Names::new(view));
        events.decisions(view);
        events.errors(view);
        let mut events = events.0;
        events.sort_by_cached_key(|e| sort_key(&e.at));
        Timeline {
            case_id: view.case_id.clone(),
            milestones: view.timeline.clone(),
            events,
        }
    }
}

/// The events gathered so far, one kind of entry at a time.
struct Events(Vec<TimelineEvent>);

impl Events {
    /// An event, when it has a time.
    fn push(
        &mut self,
        at: Option<&String>,
        kind: EventKind,
        meta: Option<&EntryMeta>,
        text: String,
        by: Option<&Option<AuthorView>>,
    ) {
        let Some(at) = at else { return };
        self.0.push(TimelineEvent {
            at: at.clone(),
            kind,
            entry_id: meta.map(|m| m.id),
            text,
            by: by
                .and_then(|b| b.as_ref())
                .map(|a| a.practitioner_name.clone()),
            entered_in_error: meta.is_some_and(|m| m.entered_in_error.is_some()),
        });
    }

    fn milestones(&mut self, view: &CaseView) {
        let t = &view.timeline;
        // A milestone a recorded referral also gives (the referral that opened the case, the
        // closure of an episode) is that referral's event below, not a second one here.
        let recorded = |at: &Option<String>, of: fn(&Episode) -> Option<&String>| {
            at.is_some()
                && view
                    .episodes
                    .iter()
                    .filter(|e| e.referral.is_some())
                    .any(|e| of(e) == at.as_ref())
        };
        for (kind, v, text) in [
            (EventKind::Referral, &t.referral, "referral"),
            (EventKind::FirstContact, &t.first_contact, "first contact"),
            (
                EventKind::FirstNetworkMeeting,
                &t.first_network_meeting,
                "first network meeting",
            ),
            (EventKind::Closure, &t.closure, "closure of the episode"),
        ] {
            let given = match kind {
                EventKind::Referral => recorded(v, |e| Some(&e.received_at)),
                EventKind::Closure => recorded(v, |e| e.closed_at.as_ref()),
                _ => false,
            };
            if !given {
                self.push(v.as_ref(), kind, None, text.to_string(), None);
            }
        }
        self.push(
            view.created_at.as_ref(),
            EventKind::CaseOpened,
            None,
            format!("case opened for {}", view.person.name),
            Some(&view.created_by),
        );
    }

    /// Each recorded referral, and the closure of the episode it opened. A referral in error
    /// stays, flagged; one on the wrong person's record appears only as its removal.
    fn referrals(&mut self, view: &CaseView) {
        for r in view.referrals.iter().filter(|r| !r.meta.withheld()) {
            let episode = view.episodes.iter().find(|e| e.referral == Some(r.meta.id));
            let number = episode
                .map(|e| format!(", episode {}", e.number))
                .unwrap_or_default();
            let from = match &r.referrer {
                Some(who) => format!("{} ({who})", r.source.label()),
                None => r.source.label(),
            };
            let text = format!(
                "referral received from {from}, {}{number}",
                r.urgency.label().to_lowercase()
            );
            let by = Some(&r.meta.created_by);
            self.push(
                r.received_at.as_ref(),
                EventKind::Referral,
                Some(&r.meta),
                text,
                by,
            );
            if let Some(e) = episode {
                let text = format!("closure of episode {}", e.number);
                self.push(
                    e.closed_at.as_ref(),
                    EventKind::Closure,
                    Some(&r.meta),
                    text,
                    None,
                );
            }
        }
    }

    /// Members joining, leaving and their consent. An entry recorded on the wrong person's
    /// record appears only as its removal (see [`Events::errors`]), here and below.
    fn network(&mut self, view: &CaseView) {
        for m in view.network.iter().filter(|m| !m.meta.withheld()) {
            let joined = format!("{} ({}) joined the network", m.name, m.relationship);
            let by = Some(&m.meta.created_by);
            self.push(
                m.joined.as_ref(),
                EventKind::MemberJoined,
                Some(&m.meta),
                joined,
                by,
            );
            let left = format!("{} left the network", m.name);
            self.push(
                m.left.as_ref(),
                EventKind::MemberLeft,
                Some(&m.meta),
                left,
                None,
            );
            for c in &m.consent {
                let text = format!("consent for {} to receive the record: {}", m.name, c.state);
                let by = Some(&c.recorded_by);
                self.push(c.date.as_ref(), EventKind::Consent, Some(&m.meta), text, by);
            }
        }
    }

    fn care_team(&mut self, view: &CaseView) {
        for c in view.care_team.iter().filter(|c| !c.meta.withheld()) {
            let start = format!("{} joined the care team ({})", c.name, c.role);
            let by = Some(&c.meta.created_by);
            self.push(
                c.start.as_ref(),
                EventKind::CareTeamJoined,
                Some(&c.meta),
                start,
                by,
            );
            let end = format!("{} left the care team", c.name);
            self.push(
                c.end.as_ref(),
                EventKind::CareTeamLeft,
                Some(&c.meta),
                end,
                None,
            );
        }
    }

    fn meetings(&mut self, view: &CaseView, names: &Names<'_>) {
        for m in view.meetings.iter().filter(|m| !m.meta.withheld()) {
            let who = names.all(&m.attendees);
            let state = if m.state.is(MeetingState::Held) {
                String::new()
            } else {
                format!(" ({})", m.state.to_string().replace('_', " "))
            };
            let text = format!("meeting at {} with {}{state}", m.place, who.join(", "));
            let by = Some(&m.meta.created_by);
            self.push(m.at.as_ref(), EventKind::Meeting, Some(&m.meta), text, by);
        }
    }

    fn decisions(&mut self, view: &CaseView) {
        for d in view.decisions.iter().filter(|d| !d.meta.withheld()) {
            for h in &d.status_history {
                let text = format!("decision {}: \"{}\"", h.status, d.text);
                self.push(
                    h.at.as_ref(),
                    EventKind::Decision,
                    Some(&d.meta),
                    text,
                    Some(&h.by),
                );
            }
            for a in d.actions.iter().filter(|a| !a.meta.withheld()) {
                let text = format!("action: {}", a.text);
                let by = Some(&a.meta.created_by);
                let at = a.meta.created_at.as_ref();
                self.push(at, EventKind::Action, Some(&a.meta), text, by);
            }
        }
    }

    /// Every marking in error, of every kind of entry.
    fn errors(&mut self, view: &CaseView) {
        let all_meta = view
            .network
            .iter()
            .map(|m| &m.meta)
            .chain(view.care_team.iter().map(|c| &c.meta))
            .chain(view.meetings.iter().map(|m| &m.meta))
            .chain(view.decisions.iter().map(|d| &d.meta))
            .chain(
                view.decisions
                    .iter()
                    .flat_map(|d| d.actions.iter().map(|a| &a.meta)),
            );
        for meta in all_meta {
            let Some(e) = &meta.entered_in_error else {
                continue;
            };
            let id = short(meta.id);
            let text = if e.is_mistake() {
                format!("entry {id} marked entered in error: {}", e.reason)
            } else {
                format!(
                    "entry {id} removed: recorded on the wrong person's record: {}",
                    e.reason
                )
            };
            self.push(
                e.at.as_ref(),
                EventKind::EnteredInError,
                Some(meta),
                text,
                Some(&e.by),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_datetime;
    use crate::model::tests::{author, maria_with_ana};
    use crate::model::{ErrorKind, NewMeeting, NewMember, Participant, Place};

    #[test]
    fn entries_in_error_stay_flagged_and_another_persons_appear_only_as_their_removal() {
        let (mut case, ana) = maria_with_ana(&author("Sam"));
        let bo = case
            .add_member(NewMember {
                name: "Bo Wrongcase".into(),
                relationship: "friend".into(),
                ..Default::default()
            })
            .unwrap();
        let mistaken = case
            .add_meeting(NewMeeting {
                at: parse_datetime("a", "2026-03-14T20:00").unwrap(),
                place: Place::Home,
                attendees: vec![Participant::Person, Participant::Member(ana)],
            })
            .unwrap();
        case.add_meeting(NewMeeting {
            at: parse_datetime("a", "2026-03-15T10:00").unwrap(),
            place: Place::Clinic,
            attendees: vec![Participant::Person, Participant::Member(bo)],
        })
        .unwrap();
        case.mark_error(&mistaken, ErrorKind::Mistake, "wrong day")
            .unwrap();
        case.mark_error(&bo, ErrorKind::WrongPerson, "another person's friend")
            .unwrap();
        let t = Timeline::from_view(&case.view());

        let kinds: Vec<EventKind> = t.events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds.first(), Some(&EventKind::Referral), "oldest first");
        let meeting = |id: &EntryId| {
            t.events
                .iter()
                .find(|e| e.kind == EventKind::Meeting && e.entry_id.as_ref() == Some(id))
        };
        let mistaken = meeting(&mistaken).expect("a meeting in error stays");
        assert!(mistaken.entered_in_error);
        assert!(t.events.iter().any(|e| e.kind == EventKind::EnteredInError
            && e.text.contains("marked entered in error: wrong day")));
        // Bo's name is another person's information: not in any event, and the meeting they were
        // at names "someone removed from this record".
        assert!(t.events.iter().all(|e| !e.text.contains("Wrongcase")));
        assert!(t
            .events
            .iter()
            .any(|e| e.kind == EventKind::Meeting && e.text.contains(REMOVED)));
        assert!(t.events.iter().any(|e| e.kind == EventKind::EnteredInError
            && e.text.contains("recorded on the wrong person's record")));
        // The JSON names kinds as docs/JSON.md does.
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["events"][0]["kind"], "referral");
        assert_eq!(
            serde_json::to_value(EventKind::FirstNetworkMeeting).unwrap(),
            "first_network_meeting"
        );
    }
}
