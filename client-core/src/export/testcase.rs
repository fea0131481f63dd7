//! A rich case for the export tests: every kind of entry, two practitioners writing on their own
//! devices, disagreement in the person's network, entries in error, and text that must be escaped.

use crate::model::view::CaseView;
use crate::model::*;
use crate::{CaseId, DeviceId, EntryId, PractitionerId, TeamId};

/// The ids a test needs to find things in the exports.
pub(crate) struct Rich {
    pub view: CaseView,
    pub ana: EntryId,
    pub tom: EntryId,
    pub wrong_member: EntryId,
    pub first_meeting: EntryId,
    pub second_meeting: EntryId,
    pub wrong_meeting: EntryId,
    pub walking: EntryId,
    pub withdrawn: EntryId,
    pub wrong_decision: EntryId,
    pub planned_meeting: EntryId,
    pub without_person: EntryId,
    /// The document itself, as Kit's device holds it.
    pub doc: CaseDoc,
}

/// The notes of a meeting recorded on the wrong person's record: no copy may contain them.
pub(crate) const WITHHELD_NOTES: &str = "Notes about Zofia Another-Person.";
/// A safeguarding concern two practitioners withheld from the person's copy (schema 3).
pub(crate) const WITHHELD_CONCERN: &str = "Concern about the partner's visits, raised by the GP";
/// Words added to the first meeting's notes after its read-back.
pub(crate) const ADDED_AFTER: &str = "She also mentioned her cat.";

pub(crate) fn author(name: &str) -> Author {
    Author {
        practitioner: PractitionerId::random(),
        practitioner_name: name.to_string(),
        device: DeviceId::random(),
    }
}

fn at(s: &str) -> Instant {
    parse_datetime("at", s).expect("test datetime")
}

pub(crate) fn rich_case() -> Rich {
    let sam = author("Sam Okafor");
    let kit = author("Kit Byrne");
    let mut case = maria(&sam);
    let network = network(&mut case);
    case.add_care_team(sam.practitioner, "Sam Okafor", CareRole::Practitioner, None)
        .unwrap();
    case.add_care_team(kit.practitioner, "Kit Byrne", CareRole::Practitioner, None)
        .unwrap();

    let p_sam = Participant::Practitioner(sam.practitioner);
    let p_kit = Participant::Practitioner(kit.practitioner);
    let first_meeting = first_meeting(&mut case, network.ana, p_sam, p_kit);
    let decisions = decisions(&mut case, &network, p_sam);

    // Kit writes the second meeting and the reflections on their own device.
    let mut kits = CaseDoc::load(&case.save(), Some(kit.clone())).unwrap();
    let kits_meetings = kits_meetings(&mut kits, first_meeting, network.tom, p_kit);
    let later = kits_later_changes(&mut kits, &network, decisions.walking, p_kit);

    Rich {
        view: kits.view(),
        planned_meeting: later.planned_meeting,
        without_person: later.without_person,
        ana: network.ana,
        tom: network.tom,
        wrong_member: network.wrong_member,
        first_meeting,
        second_meeting: kits_meetings.second_meeting,
        wrong_meeting: kits_meetings.wrong_meeting,
        walking: decisions.walking,
        withdrawn: decisions.withdrawn,
        wrong_decision: decisions.wrong_decision,
        doc: kits,
    }
}

/// Maria's case as Sam opens it: who she is, and when the first contacts were.
fn maria(sam: &Author) -> CaseDoc {
    let mut case = CaseDoc::create(
        CaseId::random(),
        TeamId::random(),
        NewCase {
            name: "Maria Lopez".into(),
            nhs_number: Some("9991000003".into()),
            date_of_birth: Some("1990-05-02".into()),
            referral: Some(at("2026-03-13T15:00")),
        },
        sam.clone(),
    )
    .expect("case");
    case.set_person(PersonField::PreferredName, Some("María"))
        .unwrap();
    case.set_person(PersonField::Pronouns, Some("she/her"))
        .unwrap();
    case.set_person(PersonField::Phone, Some("07700 900123"))
        .unwrap();
    case.set_person(PersonField::Address, Some("1 Leaf Street, Hackney, E8 1AA"))
        .unwrap();
    case.set_timeline(TimelineField::FirstContact, at("2026-03-13T17:00"))
        .unwrap();
    case.set_timeline(TimelineField::FirstNetworkMeeting, at("2026-03-14T10:30"))
        .unwrap();
    case
}

/// The members of Maria's network.
struct Network {
    ana: EntryId,
    tom: EntryId,
    /// Added to the wrong person's network, and marked so.
    wrong_member: EntryId,
}

/// Ana and Tom, who consent, and a member entered in error.
fn network(case: &mut CaseDoc) -> Network {
    let ana = case
        .add_member(NewMember {
            name: "Ana Lopez".into(),
            relationship: "sister".into(),
            role: Some(Role::Family),
            phone: Some("07700 900456".into()),
            ..Default::default()
        })
        .unwrap();
    case.record_consent(&ana, ConsentState::Given, None)
        .unwrap();
    let tom = case
        .add_member(NewMember {
            name: "Tom Reid".into(),
            relationship: "friend from work".into(),
            role: Some(Role::Friend),
            ..Default::default()
        })
        .unwrap();
    case.record_consent(&tom, ConsentState::Given, None)
        .unwrap();
    let wrong_member = case
        .add_member(NewMember {
            name: "Anna Lopes".into(),
            relationship: "cousin".into(),
            role: Some(Role::Family),
            ..Default::default()
        })
        .unwrap();
    case.mark_entered_in_error(&wrong_member, "Added to the wrong person's network")
        .unwrap();
    Network {
        ana,
        tom,
        wrong_member,
    }
}

/// The first meeting, at home: notes with text to escape, what was agreed, and its read-back.
fn first_meeting(
    case: &mut CaseDoc,
    ana: EntryId,
    p_sam: Participant,
    p_kit: Participant,
) -> EntryId {
    let first_meeting = case
        .add_meeting(NewMeeting {
            at: at("2026-03-14T10:30"),
            place: Place::Home,
            attendees: vec![Participant::Person, Participant::Member(ana), p_sam, p_kit],
        })
        .unwrap();
    case.append_text(
        &first_meeting,
        NoteKind::Notes,
        "María talked about not sleeping since February.\nAna said <script>alert('x')</script> & worried.",
    )
    .unwrap();
    case.append_text(&first_meeting, NoteKind::Agreed, "We meet again on Monday.")
        .unwrap();
    case.record_readback(
        &first_meeting,
        Participant::Person,
        ReadbackResponse::Confirmed,
        None,
    )
    .unwrap();
    case.record_readback(
        &first_meeting,
        Participant::Member(ana),
        ReadbackResponse::AddedWords,
        Some("She walks every morning with me."),
    )
    .unwrap();
    case.record_readback(&first_meeting, p_sam, ReadbackResponse::Confirmed, None)
        .unwrap();
    first_meeting
}

/// The decisions, one of each ending.
struct Decisions {
    /// Agreed over Ana's disagreement, with an action.
    walking: EntryId,
    withdrawn: EntryId,
    /// Entered in error.
    wrong_decision: EntryId,
}

/// A decision agreed despite disagreement, one withdrawn, and one entered in error.
fn decisions(case: &mut CaseDoc, network: &Network, p_sam: Participant) -> Decisions {
    let walking = case
        .propose_decision("Try a walking group on Saturdays", Participant::Person)
        .unwrap();
    case.record_position(
        &walking,
        Participant::Member(network.ana),
        Stance::Disagree,
        Some("Too soon, she is exhausted"),
    )
    .unwrap();
    case.record_position(
        &walking,
        Participant::Person,
        Stance::Agree,
        Some("I want to be outside with people"),
    )
    .unwrap();
    case.set_decision_status(&walking, DecisionStatus::Agreed, Some("Ana's worry heard"))
        .unwrap();
    case.add_action(
        &walking,
        "Find a group near Hackney",
        p_sam,
        Some(parse_date("due", "2026-03-21").unwrap()),
    )
    .unwrap();
    let withdrawn = case
        .propose_decision("Ask the GP about sleeping tablets", p_sam)
        .unwrap();
    case.record_position(
        &withdrawn,
        Participant::Person,
        Stance::Disagree,
        Some("I don't want tablets"),
    )
    .unwrap();
    case.set_decision_status(&withdrawn, DecisionStatus::Withdrawn, None)
        .unwrap();
    let wrong_decision = case
        .propose_decision("Move in with Tom", Participant::Member(network.tom))
        .unwrap();
    case.mark_entered_in_error(&wrong_decision, "Misheard: nobody proposed this")
        .unwrap();
    Decisions {
        walking,
        withdrawn,
        wrong_decision,
    }
}

/// The meetings Kit writes on their own device.
struct KitsMeetings {
    second_meeting: EntryId,
    /// Recorded on the wrong person's record.
    wrong_meeting: EntryId,
}

/// On Kit's device: reflections on the first meeting, the second meeting, a meeting on the wrong
/// record, and words added to the first meeting after its read-back.
fn kits_meetings(
    kits: &mut CaseDoc,
    first_meeting: EntryId,
    tom: EntryId,
    p_kit: Participant,
) -> KitsMeetings {
    kits.append_text(
        &first_meeting,
        NoteKind::Reflections,
        "Kit: I noticed how much Ana carries.\nSam: I heard hope in María's plan.",
    )
    .unwrap();
    let second_meeting = kits
        .add_meeting(NewMeeting {
            at: at("2026-03-16T18:00"),
            place: Place::Online,
            attendees: vec![Participant::Person, Participant::Member(tom), p_kit],
        })
        .unwrap();
    kits.append_text(
        &second_meeting,
        NoteKind::Notes,
        "A short call; Tom joined.",
    )
    .unwrap();
    let wrong_meeting = kits
        .add_meeting(NewMeeting {
            at: at("2026-03-17T09:00"),
            place: Place::Clinic,
            attendees: vec![Participant::Person, p_kit],
        })
        .unwrap();
    kits.append_text(&wrong_meeting, NoteKind::Notes, WITHHELD_NOTES)
        .unwrap();
    kits.mark_error(
        &wrong_meeting,
        ErrorKind::WrongPerson,
        "Recorded on the wrong case",
    )
    .unwrap();
    // Kit adds a line after the read-back: it must never read as confirmed.
    kits.append_text(&first_meeting, NoteKind::Notes, ADDED_AFTER)
        .unwrap();
    KitsMeetings {
        second_meeting,
        wrong_meeting,
    }
}

/// The meetings Kit books later.
struct LaterMeetings {
    /// Booked for next year.
    planned_meeting: EntryId,
    /// Held without the person.
    without_person: EntryId,
}

/// Later on Kit's device: Ana changes her mind, two more meetings, and Tom leaves the network.
fn kits_later_changes(
    kits: &mut CaseDoc,
    network: &Network,
    walking: EntryId,
    p_kit: Participant,
) -> LaterMeetings {
    // Ana changes her mind about the walking group.
    kits.record_position(
        &walking,
        Participant::Member(network.ana),
        Stance::Unsure,
        Some("Maybe, if I go with her"),
    )
    .unwrap();
    // A meeting booked for next year, and one the practitioners held on their own.
    let planned_meeting = kits
        .add_meeting(NewMeeting {
            at: at("2099-01-05T10:00"),
            place: Place::Clinic,
            attendees: vec![Participant::Person, p_kit],
        })
        .unwrap();
    let without_person = kits
        .add_meeting(NewMeeting {
            at: at("2026-03-18T12:00"),
            place: Place::Online,
            attendees: vec![Participant::Member(network.ana), p_kit],
        })
        .unwrap();
    kits.member_leaves(
        &network.tom,
        Some(parse_date("left", "2026-03-20").unwrap()),
    )
    .unwrap();
    kits.record_consent(
        &network.tom,
        ConsentState::Revoked,
        Some(parse_date("on", "2026-03-20").unwrap()),
    )
    .unwrap();
    LaterMeetings {
        planned_meeting,
        without_person,
    }
}

/// Accesses as the server's audit would report them.
pub(crate) fn accesses() -> Vec<crate::export::Access> {
    vec![
        crate::export::Access {
            at: "2026-03-15T09:12:00Z".into(),
            who: "Sam Okafor".into(),
            device: Some(DeviceId::random().to_string()),
            what: "read on their device (case show)".into(),
            kind: Some(crate::export::access::AccessKind::OnDevice {
                purpose: "case show".into(),
                not_yet_sent: false,
            }),
        },
        crate::export::Access {
            at: "2026-03-18T14:40:00Z".into(),
            who: "Dr Lee (duty psychiatrist)".into(),
            device: None,
            what: "export".into(),
            kind: None,
        },
    ]
}

/// Schema 3's additions to the rich case: a psychiatrist in the care team, a held meeting with
/// a peer support worker and a psychiatrist noted from the team list, and a decision the team
/// took while the person disagreed, and a crisis plan (an item in Maria's words agreed at the
/// visit and changed once, one in her sister's words, a review date), a home-visit safety note,
/// and a safeguarding concern withheld from her copy by two practitioners, the GP's referral
/// letter attached to the case and a letter Maria brought attached to the visit.
pub(crate) fn schema3_additions(doc: &mut CaseDoc) {
    let peer = StaffMember {
        practitioner: "7d1f2c1e-3a4b-4c5d-8e6f-0a1b2c3d4e5f".parse().unwrap(),
        name: "Jo Peer".into(),
        role: StaffRole::PeerSupport,
    };
    let psychiatrist = StaffMember {
        practitioner: "0b8f4a52-9c1d-4e2f-a3b4-c5d6e7f80912".parse().unwrap(),
        name: "Dr Ade Bello".into(),
        role: StaffRole::Psychiatrist,
    };
    doc.add_care_team(
        psychiatrist.practitioner,
        &psychiatrist.name,
        CareRole::Psychiatrist,
        None,
    )
    .unwrap();
    let me = doc
        .author()
        .expect("the rich case has an author")
        .practitioner;
    doc.add_meeting_with(
        NewMeeting {
            at: time::macros::datetime!(2026-03-20 10:00 UTC),
            place: Place::Home,
            attendees: vec![
                Participant::Person,
                Participant::Practitioner(me),
                Participant::Practitioner(peer.practitioner),
                Participant::Practitioner(psychiatrist.practitioner),
            ],
        },
        &[peer, psychiatrist],
    )
    .unwrap();
    let assessment = doc
        .propose_decision(
            "Ask for an assessment under the Mental Health Act",
            Participant::Practitioner(me),
        )
        .unwrap();
    doc.record_position(
        &assessment,
        Participant::Person,
        Stance::Disagree,
        Some("I don't want to go to hospital"),
    )
    .unwrap();
    let visit = doc
        .view()
        .meetings
        .iter()
        .find(|m| !m.staff.is_empty())
        .expect("the visit")
        .meta
        .id;
    let cat = doc
        .add_plan_item(
            PlanSection::Preferences,
            "Ana looks after the cat",
            Participant::Person,
            Some(visit),
        )
        .unwrap();
    doc.revise_plan_item(
        &cat,
        "Ana, or the neighbour at no. 4, looks after the cat",
        Participant::Person,
        Some(visit),
    )
    .unwrap();
    let ana = ana(doc).unwrap_or(Participant::Person);
    doc.add_plan_item(
        PlanSection::EarlySigns,
        "Maria stops answering the phone",
        ana,
        None,
    )
    .unwrap();
    doc.set_plan_review(time::macros::date!(2026 - 06 - 20))
        .unwrap();
    doc.add_team_note(
        TeamNoteKind::HomeVisitSafety,
        "Large dog at the address: visit in pairs, ring first",
    )
    .unwrap();
    let concern = doc
        .add_team_note(TeamNoteKind::Safeguarding, WITHHELD_CONCERN)
        .unwrap();
    doc.request_withholding(
        &concern,
        "Telling Maria before the strategy meeting puts her at risk",
    )
    .unwrap();
    let mut second = CaseDoc::load(&doc.save(), Some(author("Lee Second"))).unwrap();
    second.confirm_withholding(&concern).unwrap();
    doc.automerge_mut().merge(second.automerge_mut()).unwrap();
    doc.set_decision_status(
        &assessment,
        DecisionStatus::TeamDecided,
        Some("Risk to Maria's life tonight; her sister and she were told why, in the meeting"),
    )
    .unwrap();
    doc.add_attachment(&REFERRAL_LETTER.describe(None)).unwrap();
    doc.add_attachment(&PERSONS_DOCUMENT.describe(Some(visit)))
        .unwrap();
}

/// Schema 4's additions to the rich case (after [`schema3_additions`]): the GP's urgent referral
/// that opened the case, with its letter (the attached referral letter); the episode closed on
/// 1 May; Ana's emergency re-referral on 2 September, which opens a second episode; and its first
/// network meeting that night, three hours later.
pub(crate) fn schema4_additions(doc: &mut CaseDoc) {
    let letter = doc
        .view()
        .attachments
        .iter()
        .find(|a| a.title == REFERRAL_LETTER.title)
        .map(|a| a.meta.id);
    doc.add_referral(&NewReferral {
        received_at: at("2026-03-13T15:00"),
        source: ReferralSource::Gp,
        referrer: Some("Dr Shah (GP), Elm Street Surgery".into()),
        reason: FIRST_REFERRAL_REASON.into(),
        urgency: Urgency::Urgent,
        letter,
    })
    .unwrap();
    doc.set_timeline(TimelineField::Closure, at("2026-05-01T12:00"))
        .unwrap();
    doc.add_referral(&NewReferral {
        received_at: at("2026-09-02T21:00"),
        source: ReferralSource::Family,
        referrer: Some("Ana Lopez (sister)".into()),
        reason: "She has stopped eating and will not leave her room; she says the voices are back"
            .into(),
        urgency: Urgency::Emergency,
        letter: None,
    })
    .unwrap();
    let ana = ana(doc).expect("Ana is in the network");
    let me = doc.author().expect("an author").practitioner;
    doc.add_meeting(NewMeeting {
        at: at("2026-09-03T00:00"),
        place: Place::Home,
        attendees: vec![Participant::Person, ana, Participant::Practitioner(me)],
    })
    .unwrap();
}

/// Ana, María's sister, as a participant of the rich case.
fn ana(doc: &CaseDoc) -> Option<Participant> {
    doc.view()
        .network
        .iter()
        .find(|m| m.name == "Ana Lopez" && !m.meta.withheld())
        .map(|m| Participant::Member(m.meta.id))
}

/// The reason the GP gave for the first referral, in the GP's words.
pub(crate) const FIRST_REFERRAL_REASON: &str =
    "Maria has not slept for four nights and hears her late mother's voice; she asked for help";

/// A file of the rich case (schema 3), its bytes with it so tests can store and send them.
pub(crate) struct TestFile {
    pub(crate) kind: AttachmentKind,
    pub(crate) title: &'static str,
    pub(crate) file_name: &'static str,
    pub(crate) bytes: &'static [u8],
}

impl TestFile {
    /// The file as the record describes it.
    pub(crate) fn describe(&self, meeting: Option<crate::EntryId>) -> NewAttachment {
        NewAttachment {
            kind: self.kind,
            title: self.title.into(),
            file_name: self.file_name.into(),
            size: self.bytes.len() as u64,
            hash: crate::BlobHash::of(self.bytes),
            meeting,
        }
    }
}

/// The GP's referral letter, attached to the case.
pub(crate) const REFERRAL_LETTER: TestFile = TestFile {
    kind: AttachmentKind::ReferralLetter,
    title: "Referral from Dr Shah (GP)",
    file_name: "referral-shah.pdf",
    bytes: b"%PDF-1.4 referral letter for Maria Lopez (test bytes)",
};

/// A letter Maria brought to the visit, attached to it.
pub(crate) const PERSONS_DOCUMENT: TestFile = TestFile {
    kind: AttachmentKind::PersonsDocument,
    title: "Maria's letter from the housing office",
    file_name: "housing-letter.jpg",
    bytes: b"\xff\xd8\xff\xe0 housing office letter (test bytes)",
};
