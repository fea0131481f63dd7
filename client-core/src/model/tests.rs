//! Tests of the record: convergence and no lost writes under random offline edits, conflicts shown
//! and resolved, entries in error kept, validation.

use std::collections::{BTreeSet, HashSet};

use automerge::transaction::Transactable;
use automerge::{ReadDoc, ROOT};
use proptest::prelude::*;

use super::*;
use crate::{CaseId, DeviceId, EntryId, PractitionerId, TeamId};

pub(crate) fn author(name: &str) -> Author {
    Author {
        practitioner: PractitionerId::random(),
        practitioner_name: name.to_string(),
        device: DeviceId::random(),
    }
}

fn new_case(a: &Author) -> CaseDoc {
    CaseDoc::create(
        CaseId::random(),
        TeamId::random(),
        NewCase {
            name: "Maria Lopez".into(),
            nhs_number: Some("9991000003".into()),
            ..Default::default()
        },
        a.clone(),
    )
    .unwrap()
}

/// A copy of `doc` as another device would hold it after syncing.
fn replica(doc: &mut CaseDoc, a: &Author) -> CaseDoc {
    CaseDoc::load(&doc.save(), Some(a.clone())).unwrap()
}

fn merge(into: &mut CaseDoc, from: &mut CaseDoc) {
    into.automerge_mut().merge(from.automerge_mut()).unwrap();
}

#[test]
fn a_new_case_is_valid_and_attributed() {
    let a = author("Sam");
    let case = new_case(&a);
    validate_document(case.automerge()).unwrap();
    let v = case.view();
    assert_eq!(v.person.name, "Maria Lopez");
    assert_eq!(v.person.nhs_number.as_deref(), Some("9991000003"));
    assert_eq!(v.created_by.unwrap().practitioner_name, "Sam");
    assert!(v.timeline.referral.is_some());
}

#[test]
fn bad_input_is_refused_with_clear_errors_and_changes_nothing() {
    let a = author("Sam");
    let bad_nhs = CaseDoc::create(
        CaseId::random(),
        TeamId::random(),
        NewCase {
            name: "X".into(),
            nhs_number: Some("9991000004".into()),
            ..Default::default()
        },
        a.clone(),
    );
    assert!(matches!(bad_nhs, Err(ModelError::InvalidNhsNumber { .. })));
    assert!(matches!(
        CaseDoc::create(
            CaseId::random(),
            TeamId::random(),
            NewCase::default(),
            a.clone()
        ),
        Err(ModelError::Required { .. })
    ));

    let mut case = new_case(&a);
    let mut before = case.heads();
    before.sort();
    let err = case
        .set_person(PersonField::DateOfBirth, Some("1990-13-01"))
        .unwrap_err();
    assert!(err.to_string().contains("YYYY-MM-DD"), "{err}");
    assert!(case.set_person(PersonField::Name, None).is_err());
    assert!(case
        .set_person(PersonField::NhsNumber, Some("123"))
        .is_err());
    assert!(case
        .add_member(NewMember {
            name: "".into(),
            relationship: "sister".into(),
            ..Default::default()
        })
        .is_err());
    assert!(case
        .append_text(&EntryId::random(), NoteKind::Notes, "hi")
        .is_err());
    let mut after = case.heads();
    after.sort();
    assert_eq!(before, after, "a refused write must leave no change behind");
}

#[test]
fn a_full_meeting_and_decision_read_back() {
    let a = author("Sam");
    let mut case = new_case(&a);
    let sister = case
        .add_member(NewMember {
            name: "Ana".into(),
            relationship: "sister".into(),
            role: Some(Role::Family),
            ..Default::default()
        })
        .unwrap();
    case.record_consent(&sister, ConsentState::Given, None)
        .unwrap();
    let me = Participant::Practitioner(a.practitioner);
    case.add_care_team(a.practitioner, "Sam", CareRole::Practitioner, None)
        .unwrap();
    let at = parse_datetime("at", "2026-03-14T10:30").unwrap();
    let m = case
        .add_meeting(NewMeeting {
            at,
            place: Place::Home,
            attendees: vec![Participant::Person, Participant::Member(sister), me],
        })
        .unwrap();
    case.append_text(&m, NoteKind::Notes, "Maria talked about sleep.")
        .unwrap();
    case.append_text(&m, NoteKind::Reflections, "We noticed hope.")
        .unwrap();
    case.record_readback(
        &m,
        Participant::Member(sister),
        ReadbackResponse::AddedWords,
        Some("She walks daily"),
    )
    .unwrap();
    let d = case
        .propose_decision("Try a walking group", Participant::Person)
        .unwrap();
    assert!(matches!(
        case.set_decision_status(&d, DecisionStatus::Agreed, None),
        Err(ModelError::PersonHasNotAgreed)
    ));
    case.record_position(
        &d,
        Participant::Member(sister),
        Stance::Disagree,
        Some("Too soon"),
    )
    .unwrap();
    case.record_position(&d, Participant::Person, Stance::Agree, None)
        .unwrap();
    case.set_decision_status(&d, DecisionStatus::Agreed, Some("all heard"))
        .unwrap();
    case.add_action(
        &d,
        "Find a group",
        me,
        Some(parse_date("due", "2026-04-01").unwrap()),
    )
    .unwrap();

    let v = case.view();
    validate_document(case.automerge()).unwrap();
    assert!(v.network[0].consent_given);
    let mv = &v.meetings[0];
    assert_eq!(mv.notes, "Maria talked about sleep.");
    assert_eq!(mv.readback[0].words.as_deref(), Some("She walks daily"));
    let dv = &v.decisions[0];
    assert_eq!(dv.status, Stored::Known(DecisionStatus::Agreed));
    assert_eq!(dv.status_history.len(), 2);
    let disagree = dv
        .positions
        .iter()
        .find(|p| p.stance.is(Stance::Disagree))
        .unwrap();
    assert_eq!(
        disagree.words.as_deref(),
        Some("Too soon"),
        "disagreement is kept in their words"
    );
    assert_eq!(dv.actions.len(), 1);
    assert!(!dv.agreed_without_person);
}

#[test]
fn concurrent_field_sets_are_reported_with_authors_and_resolution_is_recorded() {
    let sam = author("Sam");
    let kit = author("Kit");
    let mut a = new_case(&sam);
    let mut b = replica(&mut a, &kit);
    a.set_person(PersonField::PreferredName, Some("Mari"))
        .unwrap();
    b.set_person(PersonField::PreferredName, Some("Ria"))
        .unwrap();
    merge(&mut a, &mut b);
    let conflicts = a.conflicts();
    assert_eq!(conflicts.len(), 1);
    let c = &conflicts[0];
    assert_eq!(c.field, "person.preferred_name");
    let shown: BTreeSet<(String, String)> = c
        .values
        .iter()
        .map(|v| {
            (
                v.value.clone(),
                v.author.as_ref().unwrap().practitioner_name.clone(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        BTreeSet::from([("Mari".into(), "Sam".into()), ("Ria".into(), "Kit".into())])
    );
    assert!(c.values.iter().all(|v| v.at.is_some()));
    assert_eq!(
        a.view().conflicts.len(),
        1,
        "the view carries the conflict too"
    );

    let ria = c.values.iter().find(|v| v.value == "Ria").unwrap().pick;
    let changes_before = a.automerge_mut().get_changes(&[]).len();
    assert!(matches!(
        a.resolve("person.preferred_name", 9),
        Err(ModelError::PickOutOfRange { .. })
    ));
    a.resolve("person.preferred_name", ria).unwrap();
    assert!(a.conflicts().is_empty());
    assert_eq!(a.view().person.preferred_name.as_deref(), Some("Ria"));
    let changes = a.automerge_mut().get_changes(&[]);
    assert_eq!(
        changes.len(),
        changes_before + 1,
        "the pick is a change of its own"
    );
    assert!(changes
        .last()
        .unwrap()
        .message()
        .unwrap()
        .contains("resolve conflict"));
    assert!(matches!(
        a.resolve("person.preferred_name", 1),
        Err(ModelError::NoConflict { .. })
    ));
}

#[test]
fn entered_in_error_keeps_the_entry_readable() {
    let a = author("Sam");
    let mut case = new_case(&a);
    let at = parse_datetime("at", "2026-03-14T10:30").unwrap();
    let m = case
        .add_meeting(NewMeeting {
            at,
            place: Place::Clinic,
            attendees: vec![],
        })
        .unwrap();
    case.append_text(&m, NoteKind::Notes, "Wrong person's notes")
        .unwrap();
    assert!(
        case.mark_entered_in_error(&m, "  ").is_err(),
        "a reason is required"
    );
    case.mark_entered_in_error(&m, "recorded on the wrong case")
        .unwrap();
    let v = case.view();
    let mv = &v.meetings[0];
    assert_eq!(
        mv.notes, "Wrong person's notes",
        "the original stays visible"
    );
    let mark = mv.meta.entered_in_error.as_ref().unwrap();
    assert_eq!(mark.reason, "recorded on the wrong case");
    assert_eq!(mark.by.as_ref().unwrap().practitioner_name, "Sam");
    assert!(mark.at.is_some());
    assert!(matches!(
        case.append_text(&m, NoteKind::Notes, "more"),
        Err(ModelError::EntryInError { .. })
    ));
    assert!(matches!(
        case.mark_entered_in_error(&m, "again"),
        Err(ModelError::AlreadyInError { .. })
    ));
    assert_eq!(
        case.figures().meetings,
        0,
        "entries in error are left out of figures"
    );
}

#[test]
fn validation_refuses_malformed_documents() {
    let a = author("Sam");
    let mut case = new_case(&a);
    let good = case.save();
    // An empty document is not a case.
    assert!(CaseDoc::load(&automerge::AutoCommit::new().save(), None).is_err());
    // Garbage is not a document.
    assert!(matches!(
        CaseDoc::load(b"not automerge", None),
        Err(ModelError::Corrupt(_))
    ));

    let mutate = |f: &dyn Fn(&mut automerge::AutoCommit)| {
        let mut d = automerge::AutoCommit::load(&good).unwrap();
        f(&mut d);
        d.commit();
        validate_document(&d)
    };
    let person = |d: &automerge::AutoCommit| d.get(ROOT, "person").unwrap().unwrap().1;
    assert!(mutate(&|d| {
        let p = person(d);
        d.put(&p, "nhs_number", "1234567890").unwrap();
    })
    .unwrap_err()
    .to_string()
    .contains("nhs_number"));
    assert!(mutate(&|d| {
        d.put(ROOT, "surprise", 1).unwrap();
    })
    .is_err());
    assert!(mutate(&|d| {
        let p = person(d);
        d.put(&p, "name", 42).unwrap();
    })
    .is_err());
    assert!(mutate(&|d| {
        d.delete(ROOT, "meetings").unwrap();
    })
    .is_err());
    assert!(mutate(&|d| {
        let p = person(d);
        d.put(&p, "date_of_birth", "yesterday").unwrap();
    })
    .is_err());
    // A bad value hiding as the loser of a conflict is still found.
    let sam = author("Sam");
    let mut x = CaseDoc::load(&good, Some(sam)).unwrap();
    let mut y = automerge::AutoCommit::load(&good)
        .unwrap()
        .with_actor(automerge::ActorId::random());
    let p = y.get(ROOT, "person").unwrap().unwrap().1;
    y.put(&p, "pronouns", 7).unwrap();
    y.commit();
    x.set_person(PersonField::Pronouns, Some("she/her"))
        .unwrap();
    x.automerge_mut().merge(&mut y).unwrap();
    assert!(validate_document(x.automerge()).is_err());
}

/// Maria's case, referred on 14 March 2026 at 08:00, with `sam` on the care team and her sister
/// Ana in the network (Ana's entry id returned).
pub(crate) fn maria_with_ana(sam: &Author) -> (CaseDoc, EntryId) {
    let mut case = CaseDoc::create(
        CaseId::random(),
        TeamId::random(),
        NewCase {
            name: "Maria".into(),
            referral: Some(parse_datetime("r", "2026-03-14T08:00").unwrap()),
            ..Default::default()
        },
        sam.clone(),
    )
    .unwrap();
    case.add_care_team(sam.practitioner, "Sam", CareRole::Practitioner, None)
        .unwrap();
    let ana = case
        .add_member(NewMember {
            name: "Ana".into(),
            relationship: "sister".into(),
            ..Default::default()
        })
        .unwrap();
    (case, ana)
}

#[test]
fn figures_follow_the_record() {
    let sam = author("Sam");
    let kit = author("Kit");
    let (mut case, ana) = maria_with_ana(&sam);
    case.add_care_team(kit.practitioner, "Kit", CareRole::Practitioner, None)
        .unwrap();
    let ps = Participant::Practitioner(sam.practitioner);
    let pk = Participant::Practitioner(kit.practitioner);
    case.add_meeting(NewMeeting {
        at: parse_datetime("a", "2026-03-14T20:00").unwrap(),
        place: Place::Home,
        attendees: vec![Participant::Person, Participant::Member(ana), ps, pk],
    })
    .unwrap();
    case.add_meeting(NewMeeting {
        at: parse_datetime("a", "2026-03-16T10:00").unwrap(),
        place: Place::Clinic,
        attendees: vec![Participant::Person, ps],
    })
    .unwrap();
    let f = case.figures();
    assert_eq!(f.hours_referral_to_first_meeting, Some(12.0));
    assert_eq!(f.meetings, 2);
    assert_eq!(f.share_two_or_more_practitioners, Some(0.5));
    assert_eq!(f.share_with_original_pair, Some(0.5));
    assert_eq!(f.network_members_per_meeting, Some(0.5));

    // A member recorded on the wrong person's record was at no meeting of Maria's: a meeting
    // with only them and the practitioners is no network meeting, and they count for nobody.
    let bo = case
        .add_member(NewMember {
            name: "Bo".into(),
            relationship: "friend".into(),
            ..Default::default()
        })
        .unwrap();
    case.add_meeting(NewMeeting {
        at: parse_datetime("a", "2026-03-18T10:00").unwrap(),
        place: Place::Clinic,
        attendees: vec![Participant::Member(bo), ps, pk],
    })
    .unwrap();
    let counted = case.figures();
    assert_eq!(
        counted.meetings, 3,
        "while Bo is on the record, Bo's meeting counts"
    );
    assert_eq!(counted.network_members_per_meeting, Some(2.0 / 3.0));
    case.mark_error(&bo, ErrorKind::WrongPerson, "another person's friend")
        .unwrap();
    assert_eq!(case.figures(), f);
    // A member marked entered in error as a plain mistake counts for nothing either.
    case.mark_error(&ana, ErrorKind::Mistake, "not her sister: a neighbour")
        .unwrap();
    let without_ana = case.figures();
    assert_eq!(without_ana.meetings, 2, "the person was at both meetings");
    assert_eq!(without_ana.network_members_per_meeting, Some(0.0));
}

// ------------------------------------------------------------------------------ property test

/// One step of the random offline day.
#[derive(Debug, Clone)]
enum Op {
    /// Replica sets a person field to a fresh value.
    SetField(usize, usize),
    /// Replica appends a token to the shared meeting's notes.
    Append(usize),
    /// Replica prepends a token to the shared meeting's reflections through a whole-text edit.
    EditPrepend(usize),
    /// Replica adds a network member.
    AddMember(usize),
    /// Replica proposes a decision.
    Propose(usize),
    /// Replica records a position on the shared decision.
    Position(usize, usize),
    /// Replica `0` merges in replica `1`'s changes.
    Merge(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, 0..2usize).prop_map(|(r, f)| Op::SetField(r, f)),
        (0..3usize).prop_map(Op::Append),
        (0..3usize).prop_map(Op::EditPrepend),
        (0..3usize).prop_map(Op::AddMember),
        (0..3usize).prop_map(Op::Propose),
        (0..3usize, 0..3usize).prop_map(|(r, s)| Op::Position(r, s)),
        (0..3usize, 0..3usize).prop_map(|(a, b)| Op::Merge(a, b)),
    ]
}

const FIELDS: [PersonField; 2] = [PersonField::PreferredName, PersonField::Pronouns];

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Three devices edit one case offline and merge in random orders: all converge to the same
    /// document, and no edit is lost. Texts and entries must all be present; for a field, the values
    /// left must be exactly the writes that no replica overwrote after seeing them (so concurrent
    /// writes are all still there, as a conflict).
    #[test]
    fn three_replicas_converge_without_lost_writes(
        ops in proptest::collection::vec(op(), 1..40),
        order in Just(()).prop_perturb(|_, mut rng| {
            let mut v = vec![0usize, 1, 2];
            for i in (1..3).rev() { v.swap(i, rng.random_range(0..=i)); }
            v
        }),
    ) {
        let authors: Vec<Author> = ["Sam", "Kit", "Jo"].iter().map(|n| author(n)).collect();
        let mut origin = new_case(&authors[0]);
        let meeting = origin
            .add_meeting(NewMeeting { at: parse_datetime("a", "2026-03-14T10:00").unwrap(), place: Place::Home, attendees: vec![] })
            .unwrap();
        let decision = origin.propose_decision("Shared decision", Participant::Person).unwrap();
        let mut reps: Vec<CaseDoc> = authors.iter().map(|a| replica(&mut origin, a)).collect();

        // Oracle state.
        let mut seen: Vec<HashSet<(usize, String)>> = vec![HashSet::new(); 3];
        let mut superseded: HashSet<(usize, String)> = HashSet::new();
        let mut tokens_notes = Vec::new();
        let mut tokens_refl = Vec::new();
        let mut members = Vec::new();
        let mut decisions = vec![decision];
        let mut n = 0;
        for op in ops {
            n += 1;
            match op {
                Op::SetField(r, f) => {
                    let value = format!("v{n}");
                    reps[r].set_person(FIELDS[f], Some(&value)).unwrap();
                    for w in seen[r].iter().filter(|w| w.0 == f) { superseded.insert(w.clone()); }
                    seen[r].insert((f, value));
                }
                Op::Append(r) => {
                    let t = format!("[n{n}]");
                    reps[r].append_text(&meeting, NoteKind::Notes, &t).unwrap();
                    tokens_notes.push(t);
                }
                Op::EditPrepend(r) => {
                    let t = format!("[e{n}]");
                    let current = reps[r].view().meetings[0].reflections.clone();
                    reps[r].edit_text(&meeting, NoteKind::Reflections, &format!("{t} {current}")).unwrap();
                    tokens_refl.push(t);
                }
                Op::AddMember(r) => {
                    members.push(reps[r].add_member(NewMember { name: format!("m{n}"), relationship: "friend".into(), ..Default::default() }).unwrap());
                }
                Op::Propose(r) => {
                    decisions.push(reps[r].propose_decision(&format!("d{n}"), Participant::Person).unwrap());
                }
                Op::Position(r, s) => {
                    let stance = [Stance::Agree, Stance::Disagree, Stance::Unsure][s];
                    reps[r].record_position(&decision, Participant::Practitioner(authors[r].practitioner), stance, Some(&format!("w{n}"))).unwrap();
                }
                Op::Merge(a, b) if a != b => {
                    let mut other = reps[b].clone();
                    merge(&mut reps[a], &mut other);
                    let s = seen[b].clone();
                    seen[a].extend(s);
                }
                Op::Merge(..) => {}
            }
        }
        // Final merge in a random order, twice round so everyone has everything.
        for _ in 0..2 {
            for w in order.windows(2) {
                let mut other = reps[w[0]].clone();
                merge(&mut reps[w[1]], &mut other);
            }
            let mut last = reps[order[2]].clone();
            merge(&mut reps[order[0]], &mut last);
        }
        let views: Vec<CaseView> = reps.iter().map(|r| r.view()).collect();
        prop_assert_eq!(&views[0], &views[1]);
        prop_assert_eq!(&views[1], &views[2]);
        for r in &reps { validate_document(r.automerge()).unwrap(); }

        let v = &views[0];
        let notes = &v.meetings[0].notes;
        for t in &tokens_notes { prop_assert!(notes.contains(t.as_str()), "lost note {} in {}", t, notes); }
        let refl = &v.meetings[0].reflections;
        for t in &tokens_refl { prop_assert!(refl.contains(t.as_str()), "lost reflection {} in {}", t, refl); }
        let member_ids: HashSet<String> = v.network.iter().map(|m| m.meta.id.to_string()).collect();
        for m in &members { prop_assert!(member_ids.contains(&m.to_string())); }
        let decision_ids: HashSet<String> = v.decisions.iter().map(|d| d.meta.id.to_string()).collect();
        for d in &decisions { prop_assert!(decision_ids.contains(&d.to_string())); }

        // Registers: exactly the surviving writes remain, as the value or as conflict values.
        let all_writes: HashSet<(usize, String)> = seen.iter().flatten().cloned().collect();
        for (f, field) in FIELDS.iter().enumerate() {
            let expected: BTreeSet<String> = all_writes.iter()
                .filter(|w| w.0 == f && !superseded.contains(*w))
                .map(|w| w.1.clone()).collect();
            let person = reps[0].automerge().get(ROOT, "person").unwrap().unwrap().1;
            let present: BTreeSet<String> = reps[0].automerge().get_all(&person, field.as_str()).unwrap()
                .into_iter().map(|(val, _)| val.as_str().unwrap_or_default().to_string()).collect();
            prop_assert_eq!(&present, &expected);
            let listed = v.conflicts.iter().find(|c| c.field == format!("person.{}", field.as_str()));
            prop_assert_eq!(listed.is_some(), expected.len() > 1, "conflicts are listed exactly when there are several values");
        }
    }
}

#[test]
fn marking_done_only_applies_to_actions_and_never_breaks_the_record() {
    let a = author("Sam");
    let mut case = new_case(&a);
    let d = case
        .propose_decision("Walk daily", Participant::Person)
        .unwrap();
    let act = case
        .add_action(&d, "Find a route", Participant::Person, None)
        .unwrap();
    // A decision id is not an action: refused, and the record stays valid.
    assert!(matches!(
        case.set_action_done(&d, true),
        Err(ModelError::UnknownEntry { kind: "action", .. })
    ));
    validate_document(case.automerge()).unwrap();
    case.set_action_done(&act, true).unwrap();
    assert!(case.view().decisions[0].actions[0].done);
    validate_document(case.automerge()).unwrap();
}

// ------------------------------------------------------- the server's history rules (guard.rs)

/// The operations `after` holds that `before` did not.
pub(crate) fn new_ops(before: &mut AutoCommitDoc, after: &mut AutoCommitDoc) -> guard::NewOps {
    guard::NewOps::between(&before.get_heads(), after)
}

type AutoCommitDoc = automerge::AutoCommit;

/// One step of a team's random day, through the record's own API only.
#[derive(Debug, Clone)]
enum Write {
    Member(usize),
    Consent(usize, bool),
    Leaves(usize),
    CareTeam(usize),
    EndCareTeam(usize),
    Meeting(usize),
    Attendance(usize, bool),
    Readback(usize, bool),
    Note(usize),
    EditNote(usize),
    Propose(usize),
    Position(usize, usize),
    Status(usize, usize),
    Action(usize),
    Done(usize, bool),
    InError(usize, usize),
    Field(usize, usize),
    MeetingState(usize, usize),
    Attach(usize),
    Merge(usize, usize),
}

fn write_op() -> impl Strategy<Value = Write> {
    let r = 0..3usize;
    prop_oneof![
        r.clone().prop_map(Write::Member),
        (r.clone(), any::<bool>()).prop_map(|(r, b)| Write::Consent(r, b)),
        r.clone().prop_map(Write::Leaves),
        r.clone().prop_map(Write::CareTeam),
        r.clone().prop_map(Write::EndCareTeam),
        r.clone().prop_map(Write::Meeting),
        (r.clone(), any::<bool>()).prop_map(|(r, b)| Write::Attendance(r, b)),
        (r.clone(), any::<bool>()).prop_map(|(r, b)| Write::Readback(r, b)),
        r.clone().prop_map(Write::Note),
        r.clone().prop_map(Write::EditNote),
        r.clone().prop_map(Write::Propose),
        (r.clone(), 0..3usize).prop_map(|(r, s)| Write::Position(r, s)),
        (r.clone(), 0..3usize).prop_map(|(r, s)| Write::Status(r, s)),
        r.clone().prop_map(Write::Action),
        (r.clone(), any::<bool>()).prop_map(|(r, b)| Write::Done(r, b)),
        (r.clone(), 0..4usize).prop_map(|(r, k)| Write::InError(r, k)),
        (r.clone(), 0..2usize).prop_map(|(r, f)| Write::Field(r, f)),
        (r.clone(), 0..4usize).prop_map(|(r, s)| Write::MeetingState(r, s)),
        r.clone().prop_map(Write::Attach),
        (r.clone(), 0..3usize).prop_map(|(a, b)| Write::Merge(a, b)),
        (r, 0..3usize).prop_map(|(a, b)| Write::Merge(a, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Nothing the app lets a practitioner do, alone or merged with colleagues' concurrent work,
    /// is ever refused by the server's history rules: every write by a replica passes both
    /// `nothing_removed` and `stamps_are_own` for its own author, and every merge passes
    /// `nothing_removed`. (A refusal here would strand a practitioner's words on their device.)
    #[test]
    fn everything_the_app_writes_passes_the_servers_history_rules(
        ops in proptest::collection::vec(write_op(), 1..60),
    ) {
        let authors: Vec<Author> = ["Sam", "Kit", "Jo"].iter().map(|n| author(n)).collect();
        let mut origin = new_case(&authors[0]);
        let meeting = origin
            .add_meeting(NewMeeting { at: parse_datetime("a", "2026-03-14T10:00").unwrap(), place: Place::Home, attendees: vec![Participant::Person] })
            .unwrap();
        let decision = origin.propose_decision("Shared decision", Participant::Person).unwrap();
        let member = origin.add_member(NewMember { name: "Ana".into(), relationship: "sister".into(), ..Default::default() }).unwrap();
        let mut reps: Vec<CaseDoc> = authors.iter().map(|a| replica(&mut origin, a)).collect();
        // Entries each replica knows of (it may only act on what it has).
        let mut known: Vec<Vec<EntryId>> = vec![vec![meeting, decision, member]; 3];
        let mut care: Vec<Vec<EntryId>> = vec![Vec::new(); 3];
        let mut actions: Vec<Vec<EntryId>> = vec![Vec::new(); 3];
        let mut writes = 0u32;
        let n_ops_were_merges_only = ops.iter().all(|o| matches!(o, Write::Merge(..)));
        for (n, op) in ops.into_iter().enumerate() {
            if let Write::Merge(a, b) = op {
                if a == b { continue; }
                let before = reps[a].automerge().clone();
                let mut other = reps[b].clone();
                merge(&mut reps[a], &mut other);
                let after = reps[a].automerge().clone();
                prop_assert!(guard::nothing_removed(&before, &after).is_ok(),
                    "a merge removed something: {:?}", guard::nothing_removed(&before, &after));
                let (k, c, x) = (known[b].clone(), care[b].clone(), actions[b].clone());
                known[a].extend(k); care[a].extend(c); actions[a].extend(x);
                continue;
            }
            let r = match &op {
                Write::Member(r) | Write::Consent(r, _) | Write::Leaves(r) | Write::CareTeam(r)
                | Write::EndCareTeam(r) | Write::Meeting(r) | Write::Attendance(r, _)
                | Write::Readback(r, _) | Write::Note(r) | Write::EditNote(r) | Write::Propose(r)
                | Write::Position(r, _) | Write::Status(r, _) | Write::Action(r) | Write::Done(r, _)
                | Write::InError(r, _) | Write::Field(r, _) | Write::MeetingState(r, _)
                | Write::Attach(r) => *r,
                Write::Merge(..) => unreachable!(),
            };
            let mut before = reps[r].automerge().clone();
            let me = authors[r].clone();
            let doc = &mut reps[r];
            // Refusals by the API itself (already left, already in error, not agreed) are fine:
            // only what it writes is checked.
            let result: Result<(), ModelError> = match op {
                Write::Member(_) => doc.add_member(NewMember { name: format!("m{n}"), relationship: "friend".into(), ..Default::default() }).map(|id| known[r].push(id)),
                Write::Consent(_, given) => doc.record_consent(&member, if given { ConsentState::Given } else { ConsentState::Revoked }, None),
                Write::Leaves(_) => doc.member_leaves(&member, None),
                Write::CareTeam(_) => doc.add_care_team(me.practitioner, &me.practitioner_name, CareRole::Practitioner, None).map(|id| care[r].push(id)),
                Write::EndCareTeam(_) => match care[r].last() { Some(id) => doc.end_care_team(id, None), None => Ok(()) },
                Write::Meeting(_) => doc.add_meeting(NewMeeting { at: parse_datetime("a", "2026-03-15T10:00").unwrap(), place: Place::Clinic, attendees: vec![Participant::Person] }).map(|id| known[r].push(id)),
                Write::Attendance(_, present) => doc.set_attendance(&meeting, Participant::Member(member), present),
                Write::Readback(_, words) => doc.record_readback(&meeting, Participant::Person, if words { ReadbackResponse::AddedWords } else { ReadbackResponse::Confirmed }, words.then_some("and the cat")),
                Write::Note(_) => doc.append_text(&meeting, NoteKind::Notes, &format!(" [n{n}]")),
                Write::EditNote(_) => {
                    let current = doc.view().meetings.iter().find(|m| m.meta.id == meeting).map(|m| m.notes.clone()).unwrap_or_default();
                    doc.edit_text(&meeting, NoteKind::Notes, &current.replacen('[', "(", 1))
                }
                Write::Propose(_) => doc.propose_decision(&format!("d{n}"), Participant::Person).map(|id| known[r].push(id)),
                Write::Position(_, s) => doc.record_position(&decision, Participant::Person, [Stance::Agree, Stance::Disagree, Stance::Unsure][s], Some(&format!("w{n}"))),
                Write::Status(_, s) => doc.set_decision_status(&decision, [DecisionStatus::Agreed, DecisionStatus::Revisited, DecisionStatus::Withdrawn][s], Some("talked it through")),
                Write::Action(_) => doc.add_action(&decision, &format!("a{n}"), Participant::Person, None).map(|id| actions[r].push(id)),
                Write::Done(_, done) => match actions[r].last() { Some(id) => doc.set_action_done(id, done), None => Ok(()) },
                Write::InError(_, k) => {
                    let pool: Vec<EntryId> = known[r].iter().chain(&care[r]).chain(&actions[r]).copied().collect();
                    let id = pool[k % pool.len()];
                    // Odd picks mark the wrong person's record (also over an earlier mistake).
                    let kind = if k % 2 == 1 { ErrorKind::WrongPerson } else { ErrorKind::Mistake };
                    doc.mark_error(&id, kind, "recorded in error")
                }
                Write::MeetingState(_, s) => doc.set_meeting_state(&meeting, MeetingState::ALL[s % MeetingState::ALL.len()]),
                Write::Field(_, f) => doc.set_person(FIELDS[f], Some(&format!("v{n}"))),
                Write::Attach(_) => {
                    let bytes = format!("file {n}");
                    doc.add_attachment(&NewAttachment {
                        kind: AttachmentKind::Letter,
                        title: format!("letter {n}"),
                        file_name: format!("letter-{n}.pdf"),
                        size: bytes.len() as u64,
                        hash: crate::BlobHash::of(bytes.as_bytes()),
                        meeting: Some(meeting),
                    }).map(|id| known[r].push(id))
                }
                Write::Merge(..) => unreachable!(),
            };
            let _ = result;
            let mut after = reps[r].automerge().clone();
            let ops = new_ops(&mut before, &mut after);
            prop_assert!(guard::nothing_removed(&before, &after).is_ok(),
                "{:?} removed something: {:?}", op, guard::nothing_removed(&before, &after));
            prop_assert!(guard::records_kept(&after, &ops).is_ok(),
                "{:?} wrote into a stamped record: {:?}", op, guard::records_kept(&after, &ops));
            prop_assert!(guard::written_once_kept(&before, &after, &ops).is_ok(),
                "{:?} rewrote an attachment: {:?}", op, guard::written_once_kept(&before, &after, &ops));
            prop_assert!(guard::stamps_are_own(&after, &ops, &me).is_ok(),
                "{:?} wrote another's name: {:?}", op, guard::stamps_are_own(&after, &ops, &me));
            writes += 1;
        }
        prop_assert!(writes > 0 || n_ops_were_merges_only);
    }
}

/// The rules themselves refuse what they name (the positive half of the property above).
#[test]
fn the_servers_history_rules_refuse_a_removal_and_a_forged_stamp() {
    let (sam, kit) = (author("Sam"), author("Kit"));
    let mut doc = new_case(&sam);
    let meeting = doc
        .add_meeting(NewMeeting {
            at: parse_datetime("a", "2026-03-14T10:00").unwrap(),
            place: Place::Home,
            attendees: vec![Participant::Person],
        })
        .unwrap();
    let mut before = doc.automerge().clone();
    let mut removed = before.clone();
    let meetings = removed.get(ROOT, "meetings").unwrap().unwrap().1;
    removed.delete(&meetings, meeting.to_string()).unwrap();
    removed.commit();
    let err = guard::nothing_removed(&before, &removed).unwrap_err();
    assert!(err.contains(&format!("meetings.{meeting}")), "{err}");

    let mut forged = CaseDoc::from_automerge(
        before.clone(),
        Some(Author {
            device: sam.device,
            ..kit.clone()
        }),
    )
    .unwrap();
    forged.automerge_mut().set_actor(sam.actor());
    forged
        .propose_decision("Forged", Participant::Person)
        .unwrap();
    let mut after = forged.automerge().clone();
    let ops = new_ops(&mut before, &mut after);
    let err = guard::stamps_are_own(&after, &ops, &sam).unwrap_err();
    assert!(err.contains("writes only as itself"), "{err}");
    // The same change checked against the author it names passes: the rule is about who sends it.
    assert!(guard::stamps_are_own(
        &after,
        &ops,
        &Author {
            device: sam.device,
            ..kit
        }
    )
    .is_ok());
}

/// What a borough relays to the trust hub carries many devices' changes: each is checked against
/// the device that made it, so two colleagues' own writes pass together, a change stamped with a
/// colleague's name is refused, and a change by a device nobody knows is refused.
#[test]
fn relayed_changes_pass_only_when_each_names_the_device_that_made_it() {
    let (sam, kit) = (author("Sam"), author("Kit"));
    let mut doc = new_case(&sam);
    let mut before = doc.automerge().clone();
    let mut kits = CaseDoc::from_automerge(before.clone(), Some(kit.clone())).unwrap();
    kits.propose_decision("Kit's", Participant::Person).unwrap();
    doc.propose_decision("Sam's", Participant::Person).unwrap();
    let mut after = doc.automerge().clone();
    after.merge(kits.automerge_mut()).unwrap();
    let ops = new_ops(&mut before, &mut after);
    let roster = |actor: &automerge::ActorId| {
        [&sam, &kit]
            .into_iter()
            .find(|a| a.actor() == *actor)
            .cloned()
    };
    guard::stamps_match_authors(&after, &ops, &roster).expect("each wrote as themselves");
    // Only Sam known: Kit's change is no known device's.
    let only_sam = |actor: &automerge::ActorId| (sam.actor() == *actor).then(|| sam.clone());
    let err = guard::stamps_match_authors(&after, &ops, &only_sam).unwrap_err();
    assert!(err.contains("no known device"), "{err}");
    // Kit's device writing Sam's name.
    let mut forged = CaseDoc::from_automerge(
        before.clone(),
        Some(Author {
            device: kit.device,
            ..sam.clone()
        }),
    )
    .unwrap();
    forged.automerge_mut().set_actor(kit.actor());
    forged
        .propose_decision("Forged", Participant::Person)
        .unwrap();
    let mut after = forged.automerge().clone();
    let ops = new_ops(&mut before, &mut after);
    let err = guard::stamps_match_authors(&after, &ops, &roster).unwrap_err();
    assert!(err.contains("writes only as itself"), "{err}");
}

/// Issue 15, part 8: one wording of consent for every screen and copy. "Not recorded" (never
/// asked) is not a refusal; consent given then taken back is "withdrawn".
#[test]
fn consent_reads_the_same_everywhere_and_unknown_is_not_a_refusal() {
    let a = author("Sam");
    let mut doc = new_case(&a);
    let member = doc
        .add_member(NewMember {
            name: "Ana".into(),
            relationship: "sister".into(),
            ..Default::default()
        })
        .unwrap();
    let words = |doc: &CaseDoc| doc.view().network[0].consent_words();
    assert_eq!(words(&doc), "not recorded");
    doc.record_consent(&member, ConsentState::Given, None)
        .unwrap();
    assert_eq!(words(&doc), "given");
    doc.record_consent(&member, ConsentState::Revoked, None)
        .unwrap();
    assert_eq!(words(&doc), "withdrawn");
}

/// Issue 15, part 5: two devices recording a participant's first stance at once both keep theirs
/// (one current, one earlier) and leave no conflict that nobody could resolve; a schema-1
/// decision (no history map) does the same when two devices start its history at once.
#[test]
fn concurrent_first_stances_are_both_kept_without_a_conflict() {
    let sam = author("Sam");
    let kit = author("Kit");
    let mut origin = new_case(&sam);
    let d = origin
        .propose_decision("Walking group", Participant::Person)
        .unwrap();
    // A decision as schema 1 made it: no history map yet.
    let old = origin
        .propose_decision("Sleep diary", Participant::Person)
        .unwrap();
    let dec = origin
        .automerge()
        .get(ROOT, "decisions")
        .unwrap()
        .unwrap()
        .1;
    let o = origin
        .automerge()
        .get(&dec, old.to_string().as_str())
        .unwrap()
        .unwrap()
        .1;
    origin
        .automerge_mut()
        .delete(&o, "position_history")
        .unwrap();
    origin.automerge_mut().commit();
    for id in [d, old] {
        let mut a = replica(&mut origin, &sam);
        let mut b = replica(&mut origin, &kit);
        a.record_position(
            &id,
            Participant::Person,
            Stance::Unsure,
            Some("from Sam's tablet"),
        )
        .unwrap();
        b.record_position(
            &id,
            Participant::Person,
            Stance::Agree,
            Some("from Kit's laptop"),
        )
        .unwrap();
        merge(&mut a, &mut b);
        let v = a.view();
        assert!(v.conflicts.is_empty(), "{:?}", v.conflicts);
        let p = &v
            .decisions
            .iter()
            .find(|x| x.meta.id == id)
            .unwrap()
            .positions[0];
        let mut words: Vec<_> = p
            .earlier
            .iter()
            .chain(std::iter::once(p))
            .filter_map(|x| x.words.clone())
            .collect();
        words.sort();
        assert_eq!(words, ["from Kit's laptop", "from Sam's tablet"]);
        validate_document(a.automerge()).unwrap();
    }
}

/// Issue 15, part 4: a read-back records the version heard; words changed afterwards are listed
/// with who and when, and answering again later keeps the first version, so they still show as
/// not read back. A read-back also marks a planned meeting whose time has come as held.
#[test]
fn words_changed_after_the_read_back_stay_marked_even_when_answered_again() {
    let sam = author("Sam");
    let mut case = new_case(&sam);
    let m = case
        .add_meeting(NewMeeting {
            at: parse_datetime("a", "2026-03-14T10:00").unwrap(),
            place: Place::Home,
            attendees: vec![Participant::Person],
        })
        .unwrap();
    case.set_meeting_state(&m, MeetingState::Planned).unwrap();
    case.append_text(&m, NoteKind::Notes, "Jo slept better this week.")
        .unwrap();
    case.record_readback(&m, Participant::Person, ReadbackResponse::Confirmed, None)
        .unwrap();
    let first = case.view().meetings[0].clone();
    assert!(first.held(), "a read-back ends a meeting that took place");
    assert!(first.changed_after_readback.is_empty());
    let heard = first.readback[0].heard.clone().expect("the version heard");

    case.edit_text(
        &m,
        NoteKind::Notes,
        "Jo slept much better this week, and walked daily.",
    )
    .unwrap();
    case.record_readback(&m, Participant::Person, ReadbackResponse::Confirmed, None)
        .unwrap();
    let after = case.view().meetings[0].clone();
    assert_eq!(after.readback[0].heard.as_deref(), Some(heard.as_str()));
    assert_eq!(after.changed_after_readback.len(), 1);
    let c = &after.changed_after_readback[0];
    assert_eq!(c.part, NoteKind::Notes);
    assert_eq!(c.by.as_ref().unwrap().practitioner_name, "Sam");
    assert!(c.added.iter().any(|w| w.contains("walked daily")), "{c:?}");
}

/// Issue 15, part 5: only held meetings with the person or their network count: a cancelled
/// meeting and practitioners meeting on their own are not the first network meeting.
#[test]
fn only_held_network_meetings_count_in_the_figures() {
    let sam = author("Sam");
    let mut case = CaseDoc::create(
        CaseId::random(),
        TeamId::random(),
        NewCase {
            name: "Jo".into(),
            referral: Some(parse_datetime("r", "2026-03-13T08:00").unwrap()),
            ..Default::default()
        },
        sam.clone(),
    )
    .unwrap();
    let me = Participant::Practitioner(sam.practitioner);
    let meeting = |case: &mut CaseDoc, at: &str, who: Vec<Participant>| {
        case.add_meeting(NewMeeting {
            at: parse_datetime("a", at).unwrap(),
            place: Place::Clinic,
            attendees: who,
        })
        .unwrap()
    };
    let cancelled = meeting(&mut case, "2026-03-13T10:00", vec![Participant::Person, me]);
    case.set_meeting_state(&cancelled, MeetingState::Cancelled)
        .unwrap();
    let missed = meeting(&mut case, "2026-03-13T11:00", vec![Participant::Person, me]);
    case.set_meeting_state(&missed, MeetingState::DidNotAttend)
        .unwrap();
    meeting(&mut case, "2026-03-13T13:00", vec![me]);
    meeting(&mut case, "2026-03-14T04:00", vec![Participant::Person, me]);
    let f = case.figures();
    assert_eq!(f.meetings, 1);
    assert_eq!(f.hours_referral_to_first_meeting, Some(20.0));
}

/// A read-back naming a version the record does not hold (forged or damaged) lists nothing as
/// changed after it, rather than calling every word later.
#[test]
fn a_read_back_naming_an_unknown_version_lists_no_later_changes() {
    let sam = author("Sam");
    let mut case = new_case(&sam);
    let m = case
        .add_meeting(NewMeeting {
            at: parse_datetime("a", "2026-03-14T10:00").unwrap(),
            place: Place::Home,
            attendees: vec![Participant::Person],
        })
        .unwrap();
    case.append_text(&m, NoteKind::Notes, "Jo slept better.")
        .unwrap();
    case.record_readback(&m, Participant::Person, ReadbackResponse::Confirmed, None)
        .unwrap();
    case.append_text(&m, NoteKind::Notes, "Added later.")
        .unwrap();
    assert_eq!(case.view().meetings[0].changed_after_readback.len(), 1);
    let d = case.automerge_mut();
    let meetings = d.get(ROOT, "meetings").unwrap().unwrap().1;
    let mo = d.get(&meetings, m.to_string().as_str()).unwrap().unwrap().1;
    let rb = d.get(&mo, "readback").unwrap().unwrap().1;
    let answer = d.get(&rb, "person").unwrap().unwrap().1;
    d.put(&answer, "heard", "ab".repeat(32)).unwrap();
    d.commit();
    validate_document(case.automerge()).unwrap();
    assert!(case.view().meetings[0].changed_after_readback.is_empty());
}

/// Issue 15, part 3: where consent stands is the event written last, the same on every device
/// whichever order concurrent events merged in (the network copy depends on it; on an exact tie a
/// withdrawal wins, which this test cannot force), and a withdrawal backdated to before an earlier
/// consent still withdraws it.
#[test]
fn consent_stands_by_the_event_written_last_the_same_on_every_device() {
    let sam = author("Sam");
    let kit = author("Kit");
    let mut origin = new_case(&sam);
    let ana = origin
        .add_member(NewMember {
            name: "Ana".into(),
            relationship: "sister".into(),
            ..Default::default()
        })
        .unwrap();
    let day = parse_date("d", "2026-03-14").unwrap();
    let mut a = replica(&mut origin, &sam);
    let mut b = replica(&mut origin, &kit);
    a.record_consent(&ana, ConsentState::Given, Some(day))
        .unwrap();
    b.record_consent(&ana, ConsentState::Revoked, Some(day))
        .unwrap();
    // Whichever way they merge, every device says the same.
    let mut ab = a.clone();
    merge(&mut ab, &mut b.clone());
    let mut ba = b.clone();
    merge(&mut ba, &mut a.clone());
    let stands = |c: &CaseDoc| c.view().network[0].consent_given;
    assert_eq!(stands(&ab), stands(&ba));
    // A withdrawal written after a consent withdraws it, even dated before it.
    let mut c = replica(&mut origin, &sam);
    c.record_consent(
        &ana,
        ConsentState::Given,
        Some(parse_date("d", "2026-03-20").unwrap()),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    c.record_consent(
        &ana,
        ConsentState::Revoked,
        Some(parse_date("d", "2026-03-10").unwrap()),
    )
    .unwrap();
    assert!(!stands(&c), "the withdrawal was the person's latest word");
}

/// Issue 15, part 5: a meeting up to 10 minutes ahead of this device's clock counts as now (clocks
/// differ), so it is held; 11 minutes ahead it is still to come: planned, and it cannot be set
/// held or missed until then.
#[test]
fn a_meeting_is_in_the_future_past_ten_minutes_of_clock_skew() {
    let sam = author("Sam");
    let mut case = new_case(&sam);
    let now = time::OffsetDateTime::now_utc();
    let add = |case: &mut CaseDoc, minutes: i64| {
        case.add_meeting(NewMeeting {
            at: now + time::Duration::minutes(minutes),
            place: Place::Home,
            attendees: vec![Participant::Person],
        })
        .unwrap()
    };
    let soon = add(&mut case, 9);
    let later = add(&mut case, 11);
    let state = |case: &CaseDoc, id: &EntryId| {
        case.view()
            .meetings
            .iter()
            .find(|m| m.meta.id == *id)
            .unwrap()
            .state
            .clone()
    };
    assert_eq!(state(&case, &soon), Stored::Known(MeetingState::Held));
    assert_eq!(state(&case, &later), Stored::Known(MeetingState::Planned));
    assert!(matches!(
        case.set_meeting_state(&later, MeetingState::Held),
        Err(ModelError::MeetingNotYet { .. })
    ));
    case.set_meeting_state(&later, MeetingState::Cancelled)
        .unwrap();
    case.set_meeting_state(&soon, MeetingState::DidNotAttend)
        .unwrap();
}

/// Times in the view are ordered as times, not as text: a stance on a whole second (`…:01Z`)
/// comes before one a quarter of a second later (`…:01.25Z`), though as text it sorts after it.
#[test]
fn view_times_order_as_times_not_as_text() {
    let whole = Some("2026-03-14T10:00:01Z".to_string());
    let later = Some("2026-03-14T10:00:01.25Z".to_string());
    assert!(whole > later, "as text, 01Z sorts after 01.25Z: the trap");
    assert!(super::read::instant(&whole) < super::read::instant(&later));
}

/// Two devices mark an action done and not done at once: the conflict names the action's
/// `done` by the path the morning list looks for, and the list shows the action open, saying so.
#[test]
fn a_done_conflict_from_two_devices_keeps_the_action_on_the_morning_list() {
    let a = author("Sam");
    let b = author("Kim");
    let mut case = new_case(&a);
    let d = case
        .propose_decision("Walk daily", Participant::Person)
        .unwrap();
    let due = time::macros::date!(2026 - 01 - 10);
    let act = case
        .add_action(&d, "Find a route", Participant::Person, Some(due))
        .unwrap();
    let mut other = replica(&mut case, &b);
    case.set_action_done(&act, true).unwrap();
    // Done then undone on the other device (a write of the value already there writes nothing).
    other.set_action_done(&act, true).unwrap();
    other.set_action_done(&act, false).unwrap();
    merge(&mut case, &mut other);
    let v = case.view();
    assert!(
        v.conflicts
            .iter()
            .any(|c| c.field == format!("decisions.{d}.actions.{act}.done")),
        "{:?}",
        v.conflicts
    );
    let now = parse_datetime("now", "2026-01-15T09:00").unwrap();
    let items = work::due_work(&v, None, &LocalZone::uk(), now);
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(items[0].conflict && items[0].entry == Some(act));
}
