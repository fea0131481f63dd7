//! Tests of the team's safety notes: shown by default, withheld from the person's copy only when
//! one practitioner asks with a reason and a second confirms; out-of-turn requests refused and
//! nothing written; concurrency; validation.

use automerge::transaction::Transactable;
use automerge::{ReadDoc, ROOT};

use super::tests::{author, maria_with_ana};
use super::*;

fn as_author(case: &mut CaseDoc, a: &Author) -> CaseDoc {
    CaseDoc::load(&case.save(), Some(a.clone())).unwrap()
}

#[test]
fn a_note_is_withheld_only_when_a_second_practitioner_confirms_the_reason() {
    let sam = author("Sam");
    let kit = author("Kit");
    let (mut case, _) = maria_with_ana(&sam);
    let note = case
        .add_team_note(
            TeamNoteKind::HomeVisitSafety,
            "Dog at the address: visit in pairs",
        )
        .unwrap();
    let concern = case
        .add_team_note(TeamNoteKind::Safeguarding, "Concern raised by the school")
        .unwrap();
    let v = case.view();
    assert_eq!(v.team_notes.len(), 2);
    assert!(
        v.team_notes.iter().all(|n| !n.withheld_from_person()),
        "shown by default"
    );

    let heads = case.automerge_mut().get_heads();
    let e = case.confirm_withholding(&concern).unwrap_err().to_string();
    assert!(e.contains("ask first"), "{e}");
    let e = case
        .request_withholding(&concern, "  ")
        .unwrap_err()
        .to_string();
    assert!(e.contains("required"), "{e}");
    assert_eq!(case.automerge_mut().get_heads(), heads, "nothing written");

    case.request_withholding(&concern, "Telling her now would put her at risk")
        .unwrap();
    let e = case.confirm_withholding(&concern).unwrap_err().to_string();
    assert!(e.contains("second practitioner"), "{e}");
    let e = case
        .request_withholding(&concern, "again")
        .unwrap_err()
        .to_string();
    assert!(e.contains("already"), "{e}");
    let v = case.view();
    let asked = v.team_notes.iter().find(|n| n.meta.id == concern).unwrap();
    assert!(!asked.withheld_from_person(), "asked is not withheld");
    assert!(withheld_ids_of(&case).is_empty());

    let mut kits = as_author(&mut case, &kit);
    kits.confirm_withholding(&concern).unwrap();
    validate_document(kits.automerge()).unwrap();
    let v = CaseDoc::load(&kits.save(), None).unwrap().view();
    let withheld = v.team_notes.iter().find(|n| n.meta.id == concern).unwrap();
    assert!(withheld.withheld_from_person());
    let w = withheld.in_force().unwrap();
    assert_eq!(w.reason, "Telling her now would put her at risk");
    assert_eq!(w.by.as_ref().unwrap().practitioner_name, "Sam");
    assert_eq!(w.confirmed_by.as_ref().unwrap().practitioner_name, "Kit");
    assert_eq!(withheld_ids_of(&kits), [concern].into_iter().collect());
    let e = kits.confirm_withholding(&concern).unwrap_err().to_string();
    assert!(e.contains("already"), "{e}");
    assert!(!v
        .team_notes
        .iter()
        .find(|n| n.meta.id == note)
        .unwrap()
        .withheld_from_person());
}

fn withheld_ids_of(case: &CaseDoc) -> std::collections::BTreeSet<crate::EntryId> {
    team_notes::withheld_ids(case.automerge())
}

/// A confirmation stamped by the practitioner who asked (a device that bypassed the check) is no
/// confirmation: the note stays shown, and a real second practitioner can still confirm.
#[test]
fn a_confirmation_by_the_one_who_asked_withholds_nothing() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let note = case
        .add_team_note(TeamNoteKind::Safeguarding, "Concern")
        .unwrap();
    case.request_withholding(&note, "Reason").unwrap();
    let request = case.view().team_notes[0].withholding[0].id.clone();
    let list = {
        let d = case.automerge_mut();
        let notes = d.get(ROOT, keys::TEAM_NOTES).unwrap().unwrap().1;
        let n = d.get(&notes, note.to_string()).unwrap().unwrap().1;
        d.get(&n, keys::WITHHOLDING).unwrap().unwrap().1
    };
    let d = case.automerge_mut();
    let at = d.length(&list);
    let ev = d.insert_object(&list, at, automerge::ObjType::Map).unwrap();
    d.put(&ev, keys::EVENT, "confirm").unwrap();
    d.put(&ev, keys::REQUEST, request.as_str()).unwrap();
    let by = d
        .put_object(&ev, keys::BY, automerge::ObjType::Map)
        .unwrap();
    d.put(&by, keys::PRACTITIONER, sam.practitioner.to_string())
        .unwrap();
    d.put(&by, keys::PRACTITIONER_NAME, "Sam").unwrap();
    d.put(&by, keys::DEVICE, sam.device.to_string()).unwrap();
    d.put(&ev, keys::AT, automerge::ScalarValue::Timestamp(0))
        .unwrap();
    d.commit();
    validate_document(case.automerge()).unwrap();
    assert!(!case.view().team_notes[0].withheld_from_person());
    assert!(withheld_ids_of(&case).is_empty());
    let mut kits = as_author(&mut case, &author("Kit"));
    kits.confirm_withholding(&note).unwrap();
    assert!(kits.view().team_notes[0].withheld_from_person());
}

/// Sam asks; Kit's phone, offline since before, asks too with its own reason; Kit confirms
/// Sam's request on the laptop. However the merge falls, the note stays withheld under the
/// request that was confirmed (Sam's, with Sam's reason), Kit's stays pending, nothing is a
/// conflict; then a lift shows it again, and it can be asked for again.
#[test]
fn a_confirmation_is_bound_to_its_request_and_a_withholding_can_be_lifted() {
    let sam = author("Sam");
    let kit = author("Kit");
    let (mut case, _) = maria_with_ana(&sam);
    let note = case
        .add_team_note(TeamNoteKind::Safeguarding, "Concern")
        .unwrap();
    let mut phone = as_author(&mut case, &kit);
    case.request_withholding(&note, "Sam's reason").unwrap();
    phone.request_withholding(&note, "Kit's reason").unwrap();
    let kits_laptop = Author {
        device: crate::DeviceId::random(),
        ..kit.clone()
    };
    let mut laptop = as_author(&mut case, &kits_laptop);
    laptop.confirm_withholding(&note).unwrap();
    for order in [0, 1] {
        let (mut a, mut b) = (laptop.clone(), phone.clone());
        if order == 1 {
            std::mem::swap(&mut a, &mut b);
        }
        a.automerge_mut().merge(b.automerge_mut()).unwrap();
        validate_document(a.automerge()).unwrap();
        let v = a.view();
        let n = &v.team_notes[0];
        assert!(n.withheld_from_person(), "order {order}");
        assert_eq!(n.in_force().unwrap().reason, "Sam's reason");
        assert_eq!(n.pending().unwrap().reason, "Kit's reason");
        assert!(v.conflicts.is_empty(), "{:?}", v.conflicts);
    }
    let mut merged = laptop.clone();
    merged.automerge_mut().merge(phone.automerge_mut()).unwrap();
    merged
        .lift_withholding(&note, "The strategy meeting was held")
        .unwrap();
    let v = merged.view();
    assert!(!v.team_notes[0].withheld_from_person());
    let lifted = v.team_notes[0]
        .withholding
        .iter()
        .find(|w| w.lifted_by.is_some())
        .unwrap();
    assert_eq!(lifted.lift_reason, "The strategy meeting was held");
    assert!(
        merged.lift_withholding(&note, "again").is_err(),
        "nothing to lift"
    );
    // Kit's request is still pending: Sam can confirm it.
    let mut sams = as_author(&mut merged, &sam);
    sams.confirm_withholding(&note).unwrap();
    assert_eq!(
        sams.view().team_notes[0].in_force().unwrap().reason,
        "Kit's reason"
    );

    // The record as the person may read it: no words, no reasons, no pending request.
    let mut person = sams.view();
    team_notes::redact_for_person(&mut person);
    let json = serde_json::to_string(&person).unwrap();
    for secret in [
        "Concern",
        "Sam's reason",
        "Kit's reason",
        "strategy meeting",
    ] {
        assert!(!json.contains(secret), "{secret} reached the person");
    }
}

/// The server's audit lines: one for a note newly withheld, one when it is shown again; none
/// for a request alone; never the words or a reason.
#[test]
fn withholding_changes_name_who_and_never_the_words() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let note = case
        .add_team_note(TeamNoteKind::Safeguarding, "Concern words")
        .unwrap();
    let before = case.automerge().clone();
    case.request_withholding(&note, "The reason").unwrap();
    assert!(team_notes::withholding_changes(&before, case.automerge()).is_empty());
    let asked = case.automerge().clone();
    let mut kits = as_author(&mut case, &author("Kit"));
    kits.confirm_withholding(&note).unwrap();
    let lines = team_notes::withholding_changes(&asked, kits.automerge());
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("withheld") && lines[0].contains("asked by Sam"));
    assert!(lines[0].contains("confirmed by Kit"));
    let withheld = kits.automerge().clone();
    kits.lift_withholding(&note, "Lift reason").unwrap();
    let lines = team_notes::withholding_changes(&withheld, kits.automerge());
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("back in the person's copy"));
    for l in lines {
        assert!(!l.contains("Concern words") && !l.contains("reason"));
    }
}

/// A lift and a new withholding in one sync (the note withheld before and after) are both in the
/// audit lines: the request in force changed, and one was lifted.
#[test]
fn a_lift_and_a_new_withholding_in_one_sync_are_both_audited() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let note = case
        .add_team_note(TeamNoteKind::Safeguarding, "Concern words")
        .unwrap();
    // Sam and Dee ask at once, offline.
    let mut dees = as_author(&mut case, &author("Dee"));
    case.request_withholding(&note, "Sam's reason").unwrap();
    dees.request_withholding(&note, "Dee's reason").unwrap();
    case.automerge_mut().merge(dees.automerge_mut()).unwrap();
    // Kit confirms one of them: withheld.
    let mut kits = as_author(&mut case, &author("Kit"));
    kits.confirm_withholding(&note).unwrap();
    let withheld = kits.automerge().clone();
    assert!(team_notes::withheld_ids(&withheld).contains(&note));
    let first = kits
        .view()
        .team_notes
        .into_iter()
        .find(|n| n.meta.id == note)
        .and_then(|n| n.in_force().cloned())
        .unwrap();
    let other = if first.by.as_ref().unwrap().practitioner_name == "Sam" {
        "Dee"
    } else {
        "Sam"
    };
    // Cal lifts it and confirms the other, and syncs both at once.
    let mut cals = as_author(&mut kits, &author("Cal"));
    cals.lift_withholding(&note, "Lift reason").unwrap();
    cals.confirm_withholding(&note).unwrap();
    assert!(team_notes::withheld_ids(cals.automerge()).contains(&note));
    let lines = team_notes::withholding_changes(&withheld, cals.automerge());
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains(&first.id) && lines[0].contains("lifted by Cal"),
        "{lines:?}"
    );
    assert!(
        lines[0].contains("another withholding is in force"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains(&format!("asked by {other}")) && lines[1].contains("confirmed by Cal"),
        "{lines:?}"
    );
    for l in lines {
        assert!(!l.contains("Concern words") && !l.contains("reason"));
    }
}

#[test]
fn notes_in_error_and_on_the_wrong_record_follow_the_record_rules() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let wrong = case
        .add_team_note(TeamNoteKind::Safeguarding, "About Zofia's partner")
        .unwrap();
    case.mark_error(&wrong, ErrorKind::WrongPerson, "Zofia's record")
        .unwrap();
    assert!(case.request_withholding(&wrong, "x").is_err());
    let json = serde_json::to_string(&case.view()).unwrap();
    assert!(!json.contains("Zofia's partner"));
    let bad = |f: &dyn Fn(&mut automerge::AutoCommit)| {
        let mut d = case.automerge().clone();
        f(&mut d);
        d.commit();
        validate_document(&d).unwrap_err().to_string()
    };
    let e = bad(&|d| {
        let notes = d.get(ROOT, keys::TEAM_NOTES).unwrap().unwrap().1;
        let n = d.get(&notes, wrong.to_string()).unwrap().unwrap().1;
        d.put(&n, keys::KIND, "gossip").unwrap();
    });
    assert!(e.contains("unknown value 'gossip'"), "{e}");
    let e = bad(&|d| {
        let notes = d.get(ROOT, keys::TEAM_NOTES).unwrap().unwrap().1;
        let n = d.get(&notes, wrong.to_string()).unwrap().unwrap().1;
        let list = d.get(&n, keys::WITHHOLDING).unwrap().unwrap().1;
        let ev = d.insert_object(&list, 0, automerge::ObjType::Map).unwrap();
        d.put(&ev, keys::EVENT, "ask").unwrap();
    });
    assert!(
        e.contains("is missing"),
        "an ask without its id and reason: {e}"
    );
}

/// The bounds of what a note and its withholding hold: the note and each reason at the longest
/// field allowed are taken, one character more is refused and writes nothing.
#[test]
fn notes_and_reasons_at_the_limit_are_taken_and_one_more_is_refused() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let at_limit = "x".repeat(MAX_LONG);
    let over = "x".repeat(MAX_LONG + 1);
    let heads = case.automerge_mut().get_heads();
    assert!(case
        .add_team_note(TeamNoteKind::Safeguarding, &over)
        .is_err());
    assert_eq!(case.automerge_mut().get_heads(), heads);
    let note = case
        .add_team_note(TeamNoteKind::Safeguarding, &at_limit)
        .unwrap();
    let heads = case.automerge_mut().get_heads();
    assert!(case.request_withholding(&note, &over).is_err());
    assert_eq!(case.automerge_mut().get_heads(), heads);
    case.request_withholding(&note, &at_limit).unwrap();
    let mut kits = as_author(&mut case, &author("Kit"));
    kits.confirm_withholding(&note).unwrap();
    assert!(kits.lift_withholding(&note, &over).is_err());
    kits.lift_withholding(&note, &at_limit).unwrap();
    validate_document(kits.automerge()).unwrap();
}

/// A note's kind and words, once written, stay as written: a colleague's device cannot put other
/// words under the author's name (the server's history rule); nor can a plan item change section.
#[test]
fn a_notes_words_and_a_plan_items_section_are_written_once() {
    use automerge::ScalarValue;
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let note = case
        .add_team_note(TeamNoteKind::Safeguarding, "Sam's words")
        .unwrap();
    let item = case
        .add_plan_item(
            PlanSection::WhatHelps,
            "A walk by the river",
            Participant::Person,
            None,
        )
        .unwrap();
    let made = case.automerge().clone();
    let rewrite = |coll: &[&str], id: crate::EntryId, key: &str, value: ScalarValue| {
        let mut before = made.clone();
        let mut after = made.clone();
        let mut obj = ROOT;
        for step in coll {
            obj = after.get(&obj, *step).unwrap().unwrap().1;
        }
        let e = after.get(&obj, id.to_string()).unwrap().unwrap().1;
        after.put(&e, key, value).unwrap();
        after.commit();
        let ops = super::tests::new_ops(&mut before, &mut after);
        guard::written_once_kept(&before, &after, &ops)
    };
    let e = rewrite(&[keys::TEAM_NOTES], note, keys::TEXT, "other words".into()).unwrap_err();
    assert!(e.contains("team_notes") && e.contains("text"), "{e}");
    assert!(rewrite(
        &[keys::TEAM_NOTES],
        note,
        keys::KIND,
        "home_visit_safety".into()
    )
    .is_err());
    let e = rewrite(
        &[keys::CRISIS_PLAN, keys::ITEMS],
        item,
        keys::SECTION,
        "early_signs".into(),
    )
    .unwrap_err();
    assert!(e.contains("section"), "{e}");
    // Withholding and revising, as the app does them, pass.
    let mut before = made.clone();
    case.request_withholding(&note, "The reason").unwrap();
    case.revise_plan_item(
        &item,
        "A walk by the river, with Ana",
        Participant::Person,
        None,
    )
    .unwrap();
    let mut after = case.automerge().clone();
    let ops = super::tests::new_ops(&mut before, &mut after);
    guard::written_once_kept(&before, &after, &ops).unwrap();
}
