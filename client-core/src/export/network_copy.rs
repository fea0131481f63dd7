//! The network copy: the case in plain language, for one named member of the person's network.
//!
//! In Open Dialogue the record is written with the network, not about them, so the people the
//! person chose get the same words the practitioners have: who is in the network, what was said in
//! each meeting, the reflections, and every decision with everyone's position in their own words.
//! It leaves out what is only for the service (contact details, device names, internal ids), and
//! the referrals: who referred the person and why, in the referrer's words, are the person's own
//! to share (their copy holds them).
//! Entries marked entered in error stay, struck through and explained, so the copy never silently
//! differs from the record.
//!
//! A copy goes to a *named* member, and only if the person's consent for that member to receive
//! the record is given (see [`crate::model::view::MemberView::consent_words`]): "withdrawn" and
//! "not recorded" are refused with a [`NetworkCopyError`] that names the member and the state.
//! Giving it is a disclosure: the caller records [`NetworkCopy::purpose`] as a read (who gave it
//! is the device and its practitioner, when is the read's time), which reaches the server's
//! audit and the person's access list ([`super::access`]). `Profile::give_network_copy` does both.
//!
//! Like every export, this is a pure function of the [`CaseView`]: the app and the CLI render the
//! same copy.

use super::access::Purpose;
use super::person_copy::{Layout, Style};
use super::{file_name, plain, Names};
use crate::model::view::{CaseView, ConsentStanding, MemberView};
use crate::model::{Date, Instant, LocalZone, Participant, Stance, Stored};
use crate::EntryId;

/// Why a network copy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkCopyError {
    /// No member of this network has that id.
    #[error("no one in this person's network has the id '{0}': the network copy is for a member of their network")]
    NotInNetwork(String),
    /// The member was added by mistake.
    #[error("{0} was marked as entered in error (added to this network by mistake), so they cannot be given a copy of the record")]
    EnteredInError(String),
    /// The person's consent for this member to receive the record is not given.
    #[error("{name} cannot be given a copy of the record: their consent to receive it is {state}. Only a member whose consent is given may have the network copy; if the person agrees, record it first (`network consent` or the member's page)")]
    NoConsent {
        /// The member's name.
        name: String,
        /// Where their consent stands: "withdrawn" or "not recorded".
        state: &'static str,
    },
}

/// Who a copy is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// Their member id.
    pub id: EntryId,
    /// Their name.
    pub name: String,
    /// Who they are to the person, in the person's words.
    pub relationship: String,
}

/// The network copy for one member, laid out once and rendered as a page or a fragment.
#[derive(Debug, Clone)]
pub struct NetworkCopy {
    /// Who it is for.
    pub recipient: Recipient,
    person: String,
    layout: Layout,
}

impl NetworkCopy {
    /// The copy as one self-contained HTML page (inline CSS, no scripts, prints cleanly).
    pub fn html(&self) -> String {
        super::person_copy::html_page(&self.layout)
    }

    /// The copy's content as an HTML fragment, for a page that has its own frame (the app).
    pub fn body_html(&self) -> String {
        super::person_copy::html_body(&self.layout)
    }

    /// What the device records when it gives this copy: to whom, by id and name.
    pub fn purpose(&self) -> String {
        Purpose::gave(&self.recipient.id.to_string(), &self.recipient.name)
    }

    /// A file name a person recognises: `Maria Lopez - copy for Ana Lopez - 2026-03-14.html`.
    pub fn file_name(&self, date: Date) -> String {
        file_name(
            &self.person,
            &format!("copy for {}", self.recipient.name),
            date,
            "html",
        )
    }
}

/// Check that `member` may receive the record: in the network, not entered in error, and the
/// person's consent for them given.
pub fn recipient(view: &CaseView, member: &str) -> Result<Recipient, NetworkCopyError> {
    let m: &MemberView = view
        .network
        .iter()
        .find(|m| m.meta.id.to_string() == member.trim())
        .ok_or_else(|| NetworkCopyError::NotInNetwork(member.to_string()))?;
    if m.meta.entered_in_error.is_some() {
        return Err(NetworkCopyError::EnteredInError(m.name.clone()));
    }
    match m.consent() {
        ConsentStanding::Given => Ok(Recipient {
            id: m.meta.id,
            name: m.name.clone(),
            relationship: m.relationship.clone(),
        }),
        state => Err(NetworkCopyError::NoConsent {
            name: m.name.clone(),
            state: state.words(),
        }),
    }
}

/// The network copy of `view` for `member` (a member id), made at `made`; refused unless the
/// person's consent for that member to receive the record is given.
pub fn for_member(
    view: &CaseView,
    member: &str,
    made: Instant,
) -> Result<NetworkCopy, NetworkCopyError> {
    let recipient = recipient(view, member)?;
    let names = Names::of(view);
    let mut l = Layout {
        title: format!("What we have written with {}", names.person()),
        ..Default::default()
    };
    l.push(Style::Title, l.title.clone(), false);
    let n = names.person();
    l.push(
        Style::Body,
        format!(
            "This is a copy of {n}'s record of care with the mental health team, written in \
             meetings with {n} and the people {n} chose. It was made for {} ({}) on {}, because \
             {n} agreed that they may have it. It is yours to keep: please keep it safe, as it is \
             no longer protected by the team's systems. If anything in it is wrong, or missing, \
             tell us and we will add your words.",
            recipient.name,
            recipient.relationship,
            LocalZone::uk().long_date(made)
        ),
        false,
    );
    network(&mut l, view);
    super::person_copy::crisis_plan(&mut l, view, &names, "The safety and crisis plan");
    meetings(&mut l, view, &names);
    decisions(&mut l, view, &names);
    Ok(NetworkCopy {
        recipient,
        person: view.person.name.clone(),
        layout: l,
    })
}

/// A participant as the network copy names them: members with who they are to the person,
/// practitioners by name.
fn name_of(names: &Names, who: &Stored<Participant>) -> String {
    if matches!(who.known(), Some(Participant::Member(_))) {
        names.describe(who)
    } else {
        names.name(who)
    }
}

fn network(l: &mut Layout, v: &CaseView) {
    l.push(Style::Heading, "The people in the network", false);
    if v.network.is_empty() {
        l.push(Style::Body, "No one has been added yet.", false);
    }
    for m in &v.network {
        if l.withheld(&m.meta, "person in the network") {
            continue;
        }
        let struck = m.meta.entered_in_error.is_some();
        let until = m
            .left
            .as_deref()
            .map(|d| format!(", until {}", plain::date(d)))
            .unwrap_or_default();
        l.push(
            Style::Body,
            format!("{} ({}){until}", m.name, m.relationship),
            struck,
        );
        l.error(&m.meta.entered_in_error, "person's place in the network");
    }
    let workers: Vec<&str> = v
        .care_team
        .iter()
        .filter(|c| c.meta.entered_in_error.is_none() && c.end.is_none())
        .map(|c| c.name.as_str())
        .collect();
    if !workers.is_empty() {
        l.push(
            Style::Body,
            format!("From the team: {}.", workers.join(", ")),
            false,
        );
    }
}

fn meetings(l: &mut Layout, v: &CaseView, names: &Names) {
    l.push(Style::Heading, "Meetings", false);
    if v.meetings.is_empty() {
        l.push(Style::Body, "No meetings yet.", false);
    }
    for m in &v.meetings {
        if l.withheld(&m.meta, "meeting") {
            continue;
        }
        let struck = m.meta.entered_in_error.is_some();
        l.push(Style::Subheading, plain::datetime_or(&m.at), struck);
        if !m.held() {
            l.push(
                Style::Body,
                format!("{}.", plain::meeting_heading(m)),
                struck,
            );
        }
        let who: Vec<String> = names
            .in_reading_order(&m.attendees)
            .into_iter()
            .map(|a| name_of(names, a))
            .collect();
        l.push(
            Style::Body,
            format!(
                "Who was there: {}.",
                if who.is_empty() {
                    "not recorded".to_string()
                } else {
                    who.join(", ")
                }
            ),
            struck,
        );
        if m.held() && !m.person_present {
            l.push(
                Style::Body,
                format!("{} was not present.", names.person()),
                struck,
            );
        }
        for (label, text) in [
            ("What was said:", &m.notes),
            ("What the team reflected:", &m.reflections),
            ("What was agreed:", &m.agreed),
        ] {
            l.labelled(Style::Body, label, "", struck);
            if text.trim().is_empty() {
                l.push(Style::Small, "Nothing written yet.", struck);
            } else {
                l.push(Style::Quote, text.trim_end(), struck);
            }
        }
        for c in &m.changed_after_readback {
            l.push(Style::Error, plain::later_change(c), false);
        }
        for r in &m.readback {
            if let Some(w) = &r.words {
                l.push(
                    Style::Body,
                    format!(
                        "When the notes were read back, {} added: “{w}”",
                        name_of(names, &r.participant)
                    ),
                    struck,
                );
            }
        }
        if let Some(t) = &m.next_meeting {
            l.push(
                Style::Body,
                format!("Next meeting: {}.", plain::datetime(t)),
                struck,
            );
        }
        l.error(&m.meta.entered_in_error, "meeting");
    }
}

fn decisions(l: &mut Layout, v: &CaseView, names: &Names) {
    l.push(Style::Heading, "Decisions", false);
    if v.decisions.is_empty() {
        l.push(Style::Body, "No decisions yet.", false);
    }
    for d in &v.decisions {
        if l.withheld(&d.meta, "decision") {
            continue;
        }
        let struck = d.meta.entered_in_error.is_some();
        l.push(Style::Subheading, d.text.clone(), struck);
        l.push(
            Style::Body,
            format!("This is {}.", plain::decision_status(&d.status)),
            struck,
        );
        for p in &d.positions {
            let stance = match p.stance.known() {
                Some(Stance::Agree) => "agrees".to_string(),
                Some(Stance::Disagree) => "does not agree".to_string(),
                Some(Stance::Unsure) => "is not sure yet".to_string(),
                // A stance a newer version records, as it wrote it.
                None => p.stance.to_string(),
            };
            let words = p
                .words
                .as_deref()
                .map(|w| format!(": “{w}”"))
                .unwrap_or_default();
            l.push(
                Style::Body,
                format!("{} {stance}{words}", name_of(names, &p.participant)),
                struck,
            );
            if let Some(history) = plain::stance_history(p) {
                l.push(
                    Style::Body,
                    format!("{} {history}.", name_of(names, &p.participant)),
                    struck,
                );
            }
        }
        for a in d
            .actions
            .iter()
            .filter(|a| a.meta.entered_in_error.is_none())
        {
            let who = a
                .owner
                .as_ref()
                .map(|o| name_of(names, o))
                .unwrap_or_else(|| "someone".into());
            let due = a
                .due
                .as_deref()
                .map(|x| format!(" by {}", plain::date(x)))
                .unwrap_or_default();
            let done = if a.done { " (done)" } else { "" };
            l.labelled(
                Style::Body,
                "What happens next:",
                format!("{} ({who}{due}){done}", a.text),
                struck,
            );
        }
        l.error(&d.meta.entered_in_error, "decision");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testcase::{author, rich_case};
    use crate::model::{parse_date, parse_datetime, CaseDoc, ConsentState, NewCase, NewMember};
    use crate::EntryId;

    fn now() -> Instant {
        parse_datetime("made", "2026-03-21T12:00").unwrap()
    }

    /// Maria's case with her brother Daniel in the network, his consent never recorded.
    fn daniel() -> (CaseDoc, EntryId) {
        let mut doc = CaseDoc::create(
            crate::CaseId::random(),
            crate::TeamId::random(),
            NewCase {
                name: "Maria Lindqvist".into(),
                nhs_number: None,
                date_of_birth: None,
                referral: None,
            },
            author("Sam Okafor"),
        )
        .unwrap();
        let dan = doc
            .add_member(NewMember {
                name: "Daniel Kowalczyk".into(),
                relationship: "brother".into(),
                ..Default::default()
            })
            .unwrap();
        (doc, dan)
    }

    #[test]
    fn export_network_copy_is_refused_without_consent_naming_the_member_and_state() {
        let rich = rich_case();
        // Tom's consent was given, then withdrawn.
        let err = for_member(&rich.view, &rich.tom.to_string(), now()).unwrap_err();
        assert_eq!(
            err,
            NetworkCopyError::NoConsent {
                name: "Tom Reid".into(),
                state: "withdrawn"
            }
        );
        let said = err.to_string();
        assert!(
            said.contains("Tom Reid") && said.contains("withdrawn"),
            "{said}"
        );
        // Never asked: "not recorded".
        let (doc, dan) = daniel();
        let err = for_member(&doc.view(), &dan.to_string(), now()).unwrap_err();
        let said = err.to_string();
        assert!(
            said.starts_with("Daniel Kowalczyk cannot be given a copy")
                && said.contains("consent to receive it is not recorded"),
            "{said}"
        );
        // Entered in error, and not in the network at all.
        assert!(matches!(
            for_member(&rich.view, &rich.wrong_member.to_string(), now()),
            Err(NetworkCopyError::EnteredInError(_))
        ));
        assert!(matches!(
            for_member(&rich.view, "nobody", now()),
            Err(NetworkCopyError::NotInNetwork(_))
        ));
    }

    #[test]
    fn export_network_copy_for_a_member_with_consent_holds_what_the_network_shares() {
        let rich = rich_case();
        let copy = for_member(&rich.view, &rich.ana.to_string(), now()).unwrap();
        assert_eq!(copy.recipient.name, "Ana Lopez");
        let h = copy.html();
        for want in [
            "What we have written with María",
            "made for Ana Lopez (sister) on 21 March 2026",
            "Ana Lopez (sister) is not sure yet: “Maybe, if I go with her”",
            "Ana Lopez (sister) first disagreed",
            "María talked about not sleeping since February.",
            "Kit: I noticed how much Ana carries.",
            "When the notes were read back, Ana Lopez (sister) added: “She walks every morning with me.”",
            "14 March 2026 at 10:30 UK time",
        ] {
            assert!(h.contains(&want.replace('\'', "&#39;")), "missing {want:?}");
        }
        // Only what the network shares: no contact details, no NHS number, no ids.
        for absent in ["07700 900456", "9991000003", &rich.ana.to_string()] {
            assert!(!h.contains(absent), "{absent} in the copy");
        }
        // Recorded on the wrong person's record: a tombstone, none of its words.
        assert!(!h.contains(crate::export::testcase::WITHHELD_NOTES));
        assert!(h.contains("written on the wrong person&#39;s record"));
        assert!(h.contains("María was not present."));
        assert!(!copy.body_html().contains("<html"));
        assert!(copy.purpose().contains(&rich.ana.to_string()));
        assert_eq!(
            copy.file_name(parse_date("d", "2026-03-21").unwrap()),
            "Maria Lopez - copy for Ana Lopez - 2026-03-21.html"
        );
    }

    #[test]
    fn export_network_copy_given_then_refused_once_consent_is_withdrawn() {
        let (mut doc, dan) = daniel();
        doc.record_consent(&dan, ConsentState::Given, None).unwrap();
        assert!(for_member(&doc.view(), &dan.to_string(), now()).is_ok());
        doc.record_consent(&dan, ConsentState::Revoked, None)
            .unwrap();
        let err = for_member(&doc.view(), &dan.to_string(), now()).unwrap_err();
        assert_eq!(
            err,
            NetworkCopyError::NoConsent {
                name: "Daniel Kowalczyk".into(),
                state: "withdrawn"
            }
        );
    }
}
