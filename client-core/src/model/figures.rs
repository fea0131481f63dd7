//! Figures computed from a case: what an Open Dialogue team watches for fidelity to the model.
//!
//! - Immediate help: hours from referral to the first network meeting (the aim is within 24 hours).
//! - Psychological continuity: the share of meetings with two or more practitioners, and with the
//!   original pair (the first two practitioners of the care team).
//! - Peer support: the share of meetings a peer support worker attended.
//!
//! A member of staff counts in the role the meeting noted for them (schema 3, from the server's
//! team list); for a meeting recorded before, in their care-team role; failing both, as a
//! practitioner (all staff were recorded as practitioners then). Practitioners and psychiatrists
//! count as practitioners; peer support workers count on their own; administrators, and roles a
//! newer version added, in neither.
//! - Social network perspective: network members per meeting.
//!
//! Only meetings that were held with the person or their network count: entries marked entered in
//! error (members included: one recorded on the wrong person's record was at no meeting of this
//! person's), planned, cancelled and missed meetings, and practitioners meeting on their own are
//! left out of every figure.

use serde::{Deserialize, Serialize};

use super::doc::CaseDoc;
use super::types::*;
use super::view::{CaseView, MeetingView};
use super::LocalZone;

/// The fidelity figures of one case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseFigures {
    /// Case id.
    pub case_id: String,
    /// Hours from referral to the first network meeting, if both are known.
    pub hours_referral_to_first_meeting: Option<f64>,
    /// Network meetings held (not in error; with the person or a member of their network).
    pub meetings: usize,
    /// Share (0 to 1) of meetings with two or more practitioners present.
    pub share_two_or_more_practitioners: Option<f64>,
    /// Share (0 to 1) of meetings attended by both of the original pair.
    pub share_with_original_pair: Option<f64>,
    /// Share (0 to 1) of meetings a peer support worker attended.
    #[serde(default)]
    pub share_with_peer_support: Option<f64>,
    /// Mean number of network members present per meeting.
    pub network_members_per_meeting: Option<f64>,
    /// The same figures for each episode of care (schema 4), oldest first. The figures above
    /// count the whole case; a case never re-referred has one episode, and its figures are the
    /// same.
    #[serde(default)]
    pub episodes: Vec<EpisodeFigures>,
}

fn parse(t: &Option<String>) -> Option<Instant> {
    t.as_deref()
        .and_then(|s| Instant::parse(s, &time::format_description::well_known::Rfc3339).ok())
}

/// The fidelity figures of one episode of a case (schema 4: a re-referral opens a new episode,
/// and each is counted on its own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeFigures {
    /// The episode's number on the case, from 1.
    pub number: usize,
    /// When its referral came in (RFC 3339).
    pub received_at: String,
    /// Its urgency, if recorded.
    pub urgency: Option<Stored<Urgency>>,
    /// Hours from the referral to the first network meeting, once it is held.
    pub hours_referral_to_first_meeting: Option<f64>,
    /// Whether the first meeting was held by its due time (by the urgency; 24 hours when none
    /// is recorded), once it is held.
    pub first_meeting_in_time: Option<bool>,
    /// Network meetings held in the episode.
    pub meetings: usize,
    /// Share (0 to 1) of its meetings with two or more practitioners present.
    pub share_two_or_more_practitioners: Option<f64>,
    /// Share (0 to 1) of its meetings attended by both of the original pair.
    pub share_with_original_pair: Option<f64>,
    /// Share (0 to 1) of its meetings a peer support worker attended.
    pub share_with_peer_support: Option<f64>,
    /// Mean number of network members present per meeting in it.
    pub network_members_per_meeting: Option<f64>,
}

/// The meetings every figure counts: held (not planned, cancelled or missed), not in error, and
/// with the person or a member of their network who is part of it (a member in error was at no
/// meeting of this person's).
pub(super) fn network_meetings(v: &CaseView) -> Vec<&MeetingView> {
    v.meetings
        .iter()
        .filter(|m| m.meta.entered_in_error.is_none() && m.held())
        .filter(|m| m.person_present || network_at(v, m) > 0)
        .collect()
}

/// Members of the network present at a meeting, leaving out members in error.
fn network_at(v: &CaseView, m: &MeetingView) -> usize {
    m.attendees
        .iter()
        .filter(|a| match a.known() {
            Some(Participant::Member(id)) => !v
                .network
                .iter()
                .any(|n| n.meta.id == id && n.meta.entered_in_error.is_some()),
            _ => false,
        })
        .count()
}

/// The figures every scope shares (a case, an episode), over some of the case's network meetings.
struct Shares {
    meetings: usize,
    two_or_more: Option<f64>,
    with_pair: Option<f64>,
    with_peer: Option<f64>,
    members: Option<f64>,
}

/// The shares over `meetings`; for an episode, `began` is the UK date it began: its original
/// pair is the first two practitioners of the care team still in it then.
fn shares(v: &CaseView, meetings: &[&MeetingView], began: Option<Date>) -> Shares {
    let n = meetings.len();
    let share = |count: usize| (n > 0).then(|| count as f64 / n as f64);
    let staff_at = |m: &MeetingView| -> Vec<Option<StaffRole>> {
        m.attendees
            .iter()
            .filter_map(|a| match a.known() {
                Some(Participant::Practitioner(id)) => Some(v.role_at(m, id)),
                _ => None,
            })
            .collect()
    };
    let clinical = |m: &MeetingView| {
        staff_at(m)
            .iter()
            .filter(|r| r.is_some_and(StaffRole::is_clinical))
            .count()
    };
    let two_or_more = meetings.iter().filter(|m| clinical(m) >= 2).count();
    let with_peer = meetings
        .iter()
        .filter(|m| staff_at(m).contains(&Some(StaffRole::PeerSupport)))
        .count();

    // In the team when the episode began: not gone before. (A membership's start date is
    // often recorded after the fact, so it does not exclude anyone; the order they were added
    // in picks the pair.)
    let during = |c: &&super::view::CareTeamView| match began {
        None => true,
        Some(from) => c
            .end
            .as_deref()
            .and_then(|d| parse_date("date", d).ok())
            .is_none_or(|end| end >= from),
    };
    let pair: Vec<Stored<Participant>> = v
        .care_team
        .iter()
        .filter(|c| c.meta.entered_in_error.is_none() && c.role.is(CareRole::Practitioner))
        .filter(during)
        .take(2)
        .map(|c| match c.practitioner.known() {
            Some(id) => Stored::Known(Participant::Practitioner(id)),
            None => Stored::Missing,
        })
        .collect();
    let with_pair = if pair.len() == 2 {
        share(
            meetings
                .iter()
                .filter(|m| pair.iter().all(|p| m.attendees.contains(p)))
                .count(),
        )
    } else {
        None
    };
    let members: usize = meetings.iter().map(|m| network_at(v, m)).sum();
    Shares {
        meetings: n,
        two_or_more: share(two_or_more),
        with_pair,
        with_peer: share(with_peer),
        members: (n > 0).then(|| members as f64 / n as f64),
    }
}

impl CaseFigures {
    /// Compute the figures from a view of the case.
    pub fn from_view(v: &CaseView) -> CaseFigures {
        let meetings = network_meetings(v);
        let first_meeting = meetings.iter().filter_map(|m| parse(&m.at)).min();
        let hours = match (parse(&v.timeline.referral), first_meeting) {
            (Some(r), Some(m)) => Some((m - r).whole_seconds() as f64 / 3600.0),
            _ => None,
        };
        let all = shares(v, &meetings, None);
        let episodes = v
            .episodes
            .iter()
            .map(|e| {
                let mine: Vec<&MeetingView> = meetings
                    .iter()
                    .copied()
                    .filter(|m| parse(&m.at).is_some_and(|at| e.holds(at)))
                    .collect();
                let began = e.received().map(|t| LocalZone::uk().date(t));
                let s = shares(v, &mine, began);
                EpisodeFigures {
                    number: e.number,
                    received_at: e.received_at.clone(),
                    urgency: e.urgency.clone(),
                    hours_referral_to_first_meeting: e.hours_to_first_meeting(),
                    first_meeting_in_time: e.met_in_time(),
                    meetings: s.meetings,
                    share_two_or_more_practitioners: s.two_or_more,
                    share_with_original_pair: s.with_pair,
                    share_with_peer_support: s.with_peer,
                    network_members_per_meeting: s.members,
                }
            })
            .collect();
        CaseFigures {
            case_id: v.case_id.clone(),
            hours_referral_to_first_meeting: hours,
            meetings: all.meetings,
            share_two_or_more_practitioners: all.two_or_more,
            share_with_original_pair: all.with_pair,
            share_with_peer_support: all.with_peer,
            network_members_per_meeting: all.members,
            episodes,
        }
    }
}

impl CaseDoc {
    /// The fidelity figures of this case.
    pub fn figures(&self) -> CaseFigures {
        CaseFigures::from_view(&self.view())
    }
}
