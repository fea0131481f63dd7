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
use super::view::CaseView;
use crate::EntryId;

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
}

fn parse(t: &Option<String>) -> Option<Instant> {
    t.as_deref()
        .and_then(|s| Instant::parse(s, &time::format_description::well_known::Rfc3339).ok())
}

impl CaseFigures {
    /// Compute the figures from a view of the case.
    pub fn from_view(v: &CaseView) -> CaseFigures {
        // A member whose entry is marked entered in error (a mistake, or someone recorded on the
        // wrong person's record) is no part of this person's network: their presence counts for
        // nothing, as every other entry in error.
        let not_network: Vec<EntryId> = v
            .network
            .iter()
            .filter(|m| m.meta.entered_in_error.is_some())
            .map(|m| m.meta.id)
            .collect();
        let network_at = |m: &crate::model::view::MeetingView| {
            m.attendees
                .iter()
                .filter(|a| matches!(a.known(), Some(Participant::Member(id)) if !not_network.contains(&id)))
                .count()
        };
        let meetings: Vec<_> = v
            .meetings
            .iter()
            .filter(|m| m.meta.entered_in_error.is_none() && m.held())
            .filter(|m| m.person_present || network_at(m) > 0)
            .collect();
        let n = meetings.len();
        let share = |count: usize| (n > 0).then(|| count as f64 / n as f64);

        let first_meeting = meetings.iter().filter_map(|m| parse(&m.at)).min();
        let hours = match (parse(&v.timeline.referral), first_meeting) {
            (Some(r), Some(m)) => Some((m - r).whole_seconds() as f64 / 3600.0),
            _ => None,
        };

        let staff_at = |m: &crate::model::view::MeetingView| -> Vec<Option<StaffRole>> {
            m.attendees
                .iter()
                .filter_map(|a| match a.known() {
                    Some(Participant::Practitioner(id)) => Some(v.role_at(m, id)),
                    _ => None,
                })
                .collect()
        };
        let clinical = |m: &&crate::model::view::MeetingView| {
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

        let pair: Vec<Stored<Participant>> = v
            .care_team
            .iter()
            .filter(|c| c.meta.entered_in_error.is_none() && c.role.is(CareRole::Practitioner))
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

        let members: usize = meetings.iter().map(|m| network_at(m)).sum();

        CaseFigures {
            case_id: v.case_id.clone(),
            hours_referral_to_first_meeting: hours,
            meetings: n,
            share_two_or_more_practitioners: share(two_or_more),
            share_with_original_pair: with_pair,
            share_with_peer_support: share(with_peer),
            network_members_per_meeting: (n > 0).then(|| members as f64 / n as f64),
        }
    }
}

impl CaseDoc {
    /// The fidelity figures of this case.
    pub fn figures(&self) -> CaseFigures {
        CaseFigures::from_view(&self.view())
    }
}
