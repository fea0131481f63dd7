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
    let w = withheld.withholding.as_ref().unwrap();
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

/// A confirmation stamped by the practitioner who asked (a device that bypassed the check, or a
/// merge) is no confirmation: the note stays shown.
#[test]
fn a_confirmation_by_the_one_who_asked_withholds_nothing() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let note = case
        .add_team_note(TeamNoteKind::Safeguarding, "Concern")
        .unwrap();
    case.request_withholding(&note, "Reason").unwrap();
    let e = {
        let d = case.automerge_mut();
        let notes = d.get(ROOT, keys::TEAM_NOTES).unwrap().unwrap().1;
        d.get(&notes, note.to_string()).unwrap().unwrap().1
    };
    let d = case.automerge_mut();
    let c = d
        .put_object(&e, keys::WITHHOLDING_CONFIRMED, automerge::ObjType::Map)
        .unwrap();
    let by = d.put_object(&c, keys::BY, automerge::ObjType::Map).unwrap();
    d.put(&by, keys::PRACTITIONER, sam.practitioner.to_string())
        .unwrap();
    d.put(&by, keys::PRACTITIONER_NAME, "Sam").unwrap();
    d.put(&by, keys::DEVICE, sam.device.to_string()).unwrap();
    d.put(&c, keys::AT, automerge::ScalarValue::Timestamp(0))
        .unwrap();
    d.commit();
    validate_document(case.automerge()).unwrap();
    assert!(!case.view().team_notes[0].withheld_from_person());
    assert!(withheld_ids_of(&case).is_empty());
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
        let w = d
            .put_object(&n, keys::WITHHOLDING, automerge::ObjType::Map)
            .unwrap();
        d.put(&w, keys::REASON, "").unwrap();
    });
    assert!(
        e.contains("must not be empty") || e.contains("is missing"),
        "{e}"
    );
}
