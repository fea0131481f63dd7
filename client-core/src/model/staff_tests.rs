//! Tests of what schema 3 added for the team: the staff a meeting notes with their roles, the
//! figures that use those roles, and the decision a team takes while the person disagrees.

use automerge::transaction::Transactable;
use automerge::{ObjType, ReadDoc, ROOT};
use proptest::prelude::*;

use super::tests::{author, maria_with_ana};
use super::*;
use crate::PractitionerId;

fn staff(name: &str, role: StaffRole) -> StaffMember {
    StaffMember {
        practitioner: PractitionerId::random(),
        name: name.into(),
        role,
    }
}

fn at(s: &str) -> Instant {
    parse_datetime("at", s).unwrap()
}

fn meeting(attendees: Vec<Participant>) -> NewMeeting {
    NewMeeting {
        at: at("2026-03-14T20:00"),
        place: Place::Home,
        attendees,
    }
}

fn p(s: &StaffMember) -> Participant {
    Participant::Practitioner(s.practitioner)
}

#[test]
fn a_meeting_notes_each_staff_attendee_with_their_role_and_only_attendees() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let jo = staff("Jo", StaffRole::PeerSupport);
    let absent = staff("Lee", StaffRole::Psychiatrist);
    let m = case
        .add_meeting_with(
            meeting(vec![Participant::Person, p(&jo)]),
            &[jo.clone(), absent.clone()],
        )
        .unwrap();
    validate_document(case.automerge()).unwrap();
    let v = case.view();
    let shown = v.meetings.iter().find(|x| x.meta.id == m).unwrap();
    assert_eq!(shown.staff.len(), 1, "only attendees are noted");
    assert_eq!(shown.staff[0].name, "Jo");
    assert!(shown.staff[0].role.is(StaffRole::PeerSupport));
    assert!(Names::new(&v).participant(p(&jo)).contains("Jo"));

    // Ticked later: present, with their role; unticked: absent, their role still noted.
    case.set_staff_attendance(&m, &absent, true).unwrap();
    case.set_staff_attendance(&m, &jo, false).unwrap();
    let v = CaseDoc::load(&case.save(), None).unwrap().view();
    let shown = v.meetings.iter().find(|x| x.meta.id == m).unwrap();
    assert!(shown.attendees.contains(&Stored::Known(p(&absent))));
    assert!(!shown.attendees.contains(&Stored::Known(p(&jo))));
    assert_eq!(shown.staff.len(), 2);

    // A name that is not one is refused, and nothing is written.
    let heads = case.automerge_mut().get_heads();
    let nameless = StaffMember {
        name: "  ".into(),
        ..staff("x", StaffRole::Practitioner)
    };
    assert!(case.set_staff_attendance(&m, &nameless, true).is_err());
    assert_eq!(case.automerge_mut().get_heads(), heads);
}

/// Two devices noting staff on a meeting recorded before schema 3 (which has no `staff` map)
/// each make one: both are read, nobody's note is lost.
#[test]
fn staff_noted_at_once_on_two_devices_are_all_shown() {
    let sam = author("Sam");
    let kit = author("Kit");
    let (mut case, _) = maria_with_ana(&sam);
    let m = case
        .add_meeting(meeting(vec![Participant::Person]))
        .unwrap();
    // As schema 2 wrote it: no staff map.
    let mobj = {
        let d = case.automerge_mut();
        let meetings = d.get(ROOT, keys::MEETINGS).unwrap().unwrap().1;
        d.get(&meetings, m.to_string()).unwrap().unwrap().1
    };
    case.automerge_mut().delete(&mobj, keys::STAFF).unwrap();
    case.automerge_mut().commit();
    let mut other = CaseDoc::load(&case.save(), Some(kit.clone())).unwrap();
    let jo = staff("Jo", StaffRole::PeerSupport);
    let ade = staff("Ade", StaffRole::Psychiatrist);
    case.set_staff_attendance(&m, &jo, true).unwrap();
    other.set_staff_attendance(&m, &ade, true).unwrap();
    case.automerge_mut().merge(other.automerge_mut()).unwrap();
    validate_document(case.automerge()).unwrap();
    let v = case.view();
    let shown = v.meetings.iter().find(|x| x.meta.id == m).unwrap();
    let names: Vec<&str> = shown.staff.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"Jo") && names.contains(&"Ade"), "{names:?}");
    assert_eq!(shown.attendees.len(), 3);
    assert!(v.conflicts.is_empty(), "nothing to pick: {:?}", v.conflicts);
}

/// Ticking someone again later keeps the role the meeting noted for them: Jo was there as a
/// peer support worker in March, whatever the team list says in June.
#[test]
fn a_role_noted_at_a_meeting_is_kept_when_attendance_is_changed_later() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let jo = staff("Jo", StaffRole::PeerSupport);
    let m = case
        .add_meeting_with(meeting(vec![p(&jo)]), std::slice::from_ref(&jo))
        .unwrap();
    let later = StaffMember {
        role: StaffRole::Practitioner,
        ..jo.clone()
    };
    case.set_staff_attendance(&m, &later, false).unwrap();
    case.set_staff_attendance(&m, &later, true).unwrap();
    let v = case.view();
    let shown = v.meetings.iter().find(|x| x.meta.id == m).unwrap();
    assert_eq!(shown.staff.len(), 1);
    assert!(shown.staff[0].role.is(StaffRole::PeerSupport));
}

#[test]
fn staff_notes_are_validated() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let jo = staff("Jo", StaffRole::PeerSupport);
    let m = case
        .add_meeting_with(meeting(vec![p(&jo)]), std::slice::from_ref(&jo))
        .unwrap();
    let list = {
        let d = case.automerge_mut();
        let meetings = d.get(ROOT, keys::MEETINGS).unwrap().unwrap().1;
        let mo = d.get(&meetings, m.to_string()).unwrap().unwrap().1;
        d.get(&mo, keys::STAFF).unwrap().unwrap().1
    };
    let bad = |f: &dyn Fn(&mut automerge::AutoCommit)| {
        let mut d = case.automerge().clone();
        f(&mut d);
        d.commit();
        validate_document(&d).unwrap_err().to_string()
    };
    let jo_key = jo.practitioner.to_string();
    let e = bad(&|d| {
        let s = d.get(&list, jo_key.as_str()).unwrap().unwrap().1;
        d.put(&s, keys::ROLE, "wizard").unwrap();
    });
    assert!(e.contains("unknown value 'wizard'"), "{e}");
    let e = bad(&|d| {
        let s = d.put_object(&list, "not-an-id", ObjType::Map).unwrap();
        d.put(&s, keys::NAME, "X").unwrap();
        d.put(&s, keys::ROLE, "practitioner").unwrap();
    });
    assert!(e.contains("is not a practitioner id"), "{e}");
    let e = bad(&|d| {
        let s = d.get(&list, jo_key.as_str()).unwrap().unwrap().1;
        d.put(&s, keys::NAME, "").unwrap();
    });
    assert!(e.contains("must not be empty"), "{e}");
    let e = bad(&|d| {
        let s = d.get(&list, jo_key.as_str()).unwrap().unwrap().1;
        d.put(&s, "phone", "07700").unwrap();
    });
    assert!(e.contains("is not part of a case record"), "{e}");
}

#[test]
fn figures_count_staff_in_their_roles() {
    let sam = author("Sam");
    let (mut case, ana) = maria_with_ana(&sam);
    let me = Participant::Practitioner(sam.practitioner);
    let jo = staff("Jo", StaffRole::PeerSupport);
    let ade = staff("Ade", StaffRole::Psychiatrist);
    let admin = staff("Pat", StaffRole::Administrator);
    let kit = staff("Kit", StaffRole::Practitioner);
    let everyone = [jo.clone(), ade.clone(), admin.clone(), kit.clone()];
    let add = |case: &mut CaseDoc, who: Vec<Participant>| {
        case.add_meeting_with(meeting(who), &everyone).unwrap();
    };
    // Sam and a peer support worker: one practitioner, with peer support.
    add(&mut case, vec![Participant::Person, me, p(&jo)]);
    // Sam and a psychiatrist: two practitioners.
    add(&mut case, vec![Participant::Person, me, p(&ade)]);
    // Sam and an administrator: one practitioner.
    add(&mut case, vec![Participant::Member(ana), me, p(&admin)]);
    // Sam and Kit, noted as a practitioner: two.
    add(&mut case, vec![Participant::Person, me, p(&kit)]);
    let f = case.figures();
    assert_eq!(f.meetings, 4);
    assert_eq!(f.share_two_or_more_practitioners, Some(0.5));
    assert_eq!(f.share_with_peer_support, Some(0.25));

    // A meeting with no roles noted (recorded before schema 3) counts a colleague in their
    // care-team role, and anyone else as a practitioner, as before.
    let lee = PractitionerId::random();
    case.add_care_team(lee, "Lee", CareRole::PeerSupport, None)
        .unwrap();
    let unnamed = PractitionerId::random();
    case.add_meeting(meeting(vec![
        Participant::Person,
        me,
        Participant::Practitioner(lee),
    ]))
    .unwrap();
    case.add_meeting(meeting(vec![
        Participant::Person,
        me,
        Participant::Practitioner(unnamed),
    ]))
    .unwrap();
    let f = case.figures();
    assert_eq!(f.meetings, 6);
    assert_eq!(f.share_two_or_more_practitioners, Some(3.0 / 6.0));
    assert_eq!(f.share_with_peer_support, Some(2.0 / 6.0));
}

#[test]
fn a_team_decision_needs_the_persons_disagreement_and_a_reason_and_keeps_every_position() {
    let sam = author("Sam");
    let (mut case, ana) = maria_with_ana(&sam);
    let d = case
        .propose_decision(
            "Ask for a Mental Health Act assessment",
            Participant::Practitioner(sam.practitioner),
        )
        .unwrap();
    let why = Some("Risk to life tonight, said openly in the meeting");
    let err = |case: &mut CaseDoc, note| {
        case.set_decision_status(&d, DecisionStatus::TeamDecided, note)
            .unwrap_err()
            .to_string()
    };
    assert!(err(&mut case, why).contains("person's position first"));
    case.record_position(&d, Participant::Person, Stance::Agree, Some("Fine"))
        .unwrap();
    assert!(err(&mut case, why).contains("record it as agreed"));
    case.record_position(
        &d,
        Participant::Person,
        Stance::Disagree,
        Some("I will not go"),
    )
    .unwrap();
    case.record_position(&d, Participant::Member(ana), Stance::Unsure, None)
        .unwrap();
    assert!(err(&mut case, None).contains("say why"));
    assert!(err(&mut case, Some("   ")).contains("say why"));
    case.set_decision_status(&d, DecisionStatus::TeamDecided, why)
        .unwrap();

    let v = CaseDoc::load(&case.save(), None).unwrap().view();
    let shown = v.decisions.iter().find(|x| x.meta.id == d).unwrap();
    assert!(shown.status.is(DecisionStatus::TeamDecided));
    assert!(!shown.agreed_without_person);
    assert_eq!(shown.positions.len(), 2, "every position stays");
    let person = shown
        .positions
        .iter()
        .find(|x| x.participant.is(Participant::Person))
        .unwrap();
    assert!(person.stance.is(Stance::Disagree));
    assert_eq!(person.earlier.len(), 1);
    let last = shown.status_history.last().unwrap();
    assert!(last.status.is(DecisionStatus::TeamDecided));
    assert_eq!(last.note.as_deref(), why);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever mix of staff attends whatever meetings, the figures count exactly the roles
    /// noted: a meeting has two or more practitioners when practitioners and psychiatrists
    /// number two or more, and peer support when a peer support worker is there.
    #[test]
    fn figures_match_the_roles_noted(meetings in prop::collection::vec(
        prop::collection::vec(0usize..4, 0..5), 1..8)) {
        let sam = author("Sam");
        let (mut case, _) = maria_with_ana(&sam);
        let pool: Vec<StaffMember> = StaffRole::ALL
            .iter()
            .map(|r| staff(r.as_str(), *r))
            .collect();
        let (mut two, mut peer) = (0, 0);
        for who in &meetings {
            let mut present: Vec<&StaffMember> = who.iter().map(|i| &pool[*i]).collect();
            present.sort_by_key(|s| s.practitioner);
            present.dedup_by_key(|s| s.practitioner);
            // Written out here rather than through `StaffRole::is_clinical`, so the test does
            // not agree with the code by construction.
            let clinical = present
                .iter()
                .filter(|s| matches!(s.role, StaffRole::Practitioner | StaffRole::Psychiatrist))
                .count();
            two += usize::from(clinical >= 2);
            peer += usize::from(present.iter().any(|s| s.role == StaffRole::PeerSupport));
            let mut attendees = vec![Participant::Person];
            attendees.extend(present.iter().map(|s| p(s)));
            case.add_meeting_with(meeting(attendees), &pool).unwrap();
        }
        let f = CaseDoc::load(&case.save(), None).unwrap().figures();
        let n = meetings.len() as f64;
        prop_assert_eq!(f.meetings, meetings.len());
        prop_assert_eq!(f.share_two_or_more_practitioners, Some(two as f64 / n));
        prop_assert_eq!(f.share_with_peer_support, Some(peer as f64 / n));
    }
}

/// A staff name at the longest short field is noted; one character more is refused and nothing
/// is written.
#[test]
fn a_staff_name_at_the_limit_is_noted_and_one_more_is_refused() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let long = staff(&"n".repeat(MAX_SHORT), StaffRole::PeerSupport);
    let longer = staff(&"n".repeat(MAX_SHORT + 1), StaffRole::PeerSupport);
    let heads = case.automerge_mut().get_heads();
    assert!(case
        .add_meeting_with(meeting(vec![p(&longer)]), std::slice::from_ref(&longer))
        .is_err());
    assert_eq!(case.automerge_mut().get_heads(), heads);
    let m = case
        .add_meeting_with(meeting(vec![p(&long)]), std::slice::from_ref(&long))
        .unwrap();
    validate_document(case.automerge()).unwrap();
    assert!(case.set_staff_attendance(&m, &longer, true).is_err());
}
