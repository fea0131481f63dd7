//! Tests of the safety and crisis plan: items in their sections, in whose words, agreed in which
//! meeting; every change keeping what it replaced; the review date and its history; entries in
//! error and on the wrong person's record; concurrent writers on two devices; validation.

use automerge::transaction::Transactable;
use automerge::{ObjType, ReadDoc, ROOT};
use proptest::prelude::*;

use super::tests::{author, maria_with_ana};
use super::*;
use crate::EntryId;

fn at(s: &str) -> Instant {
    parse_datetime("at", s).unwrap()
}

fn reload(case: &mut CaseDoc) -> CaseView {
    let bytes = case.save();
    let again = CaseDoc::load(&bytes, None).expect("a valid record reloads");
    again.view()
}

#[test]
fn items_are_kept_in_their_sections_in_whose_words_with_every_earlier_version() {
    let sam = author("Sam");
    let (mut case, ana) = maria_with_ana(&sam);
    let meeting = case
        .add_meeting(NewMeeting {
            at: at("2026-03-14T10:00"),
            place: Place::Home,
            attendees: vec![Participant::Person, Participant::Member(ana)],
        })
        .unwrap();
    let cat = case
        .add_plan_item(
            PlanSection::Preferences,
            "Ana looks after the cat",
            Participant::Person,
            Some(meeting),
        )
        .unwrap();
    let signs = case
        .add_plan_item(
            PlanSection::EarlySigns,
            "She stops answering the phone",
            Participant::Member(ana),
            None,
        )
        .unwrap();
    case.revise_plan_item(
        &cat,
        "Ana, or else the neighbour at no. 4, looks after the cat",
        Participant::Person,
        Some(meeting),
    )
    .unwrap();
    case.set_plan_review(parse_date("r", "2026-04-14").unwrap())
        .unwrap();
    case.set_plan_review(parse_date("r", "2026-05-01").unwrap())
        .unwrap();
    validate_document(case.automerge()).unwrap();

    let plan = reload(&mut case).crisis_plan;
    let ids: Vec<EntryId> = plan.items.iter().map(|i| i.meta.id).collect();
    assert_eq!(ids, [signs, cat], "in the order of the sections");
    let cat_item = &plan.items[1];
    let now = cat_item.current.as_ref().unwrap();
    assert!(now.text.contains("neighbour at no. 4"));
    assert!(now.words_of.is(Participant::Person));
    assert_eq!(now.meeting, Some(meeting));
    assert_eq!(now.by.as_ref().unwrap().practitioner_name, "Sam");
    assert_eq!(
        cat_item.earlier.len(),
        1,
        "the change shows what it replaced"
    );
    assert_eq!(cat_item.earlier[0].text, "Ana looks after the cat");
    let signs_item = &plan.items[0];
    assert!(signs_item
        .current
        .as_ref()
        .unwrap()
        .words_of
        .is(Participant::Member(ana)));
    assert_eq!(plan.review_on.as_deref(), Some("2026-05-01"));
    assert_eq!(plan.reviews.len(), 2, "the earlier review date stays");
}

#[test]
fn bad_items_are_refused_and_nothing_is_written() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let heads = case.automerge_mut().get_heads();
    let stranger = EntryId::random();
    for (text, words, meeting, wanted) in [
        ("   ", Participant::Person, None, "required"),
        (
            "Walks",
            Participant::Member(stranger),
            None,
            "network member",
        ),
        ("Walks", Participant::Person, Some(stranger), "meeting"),
    ] {
        let e = case
            .add_plan_item(PlanSection::WhatHelps, text, words, meeting)
            .unwrap_err()
            .to_string();
        assert!(e.contains(wanted), "{e}");
    }
    let long = "x".repeat(MAX_LONG + 1);
    assert!(case
        .add_plan_item(PlanSection::WhatHelps, &long, Participant::Person, None)
        .is_err());
    assert!(case
        .revise_plan_item(&stranger, "Walks", Participant::Person, None)
        .unwrap_err()
        .to_string()
        .contains("crisis plan item"));
    assert_eq!(case.automerge_mut().get_heads(), heads);
}

#[test]
fn an_item_in_error_stays_readable_and_one_on_the_wrong_record_is_withheld() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let mistaken = case
        .add_plan_item(
            PlanSection::WhoToCall,
            "Call Tom",
            Participant::Person,
            None,
        )
        .unwrap();
    let wrong = case
        .add_plan_item(
            PlanSection::WhoToCall,
            "Call Zofia's brother",
            Participant::Person,
            None,
        )
        .unwrap();
    case.mark_error(&mistaken, ErrorKind::Mistake, "Tom is not her friend")
        .unwrap();
    case.mark_error(&wrong, ErrorKind::WrongPerson, "Zofia's plan")
        .unwrap();
    assert!(case
        .revise_plan_item(&mistaken, "Call Tim", Participant::Person, None)
        .is_err());
    let plan = reload(&mut case).crisis_plan;
    let m = plan.items.iter().find(|i| i.meta.id == mistaken).unwrap();
    assert!(m.meta.entered_in_error.is_some());
    assert_eq!(m.current.as_ref().unwrap().text, "Call Tom");
    let w = plan.items.iter().find(|i| i.meta.id == wrong).unwrap();
    assert!(w.meta.withheld());
    assert!(w.current.is_none() && w.earlier.is_empty());
    let json = serde_json::to_string(&case.view()).unwrap();
    assert!(!json.contains("Zofia's brother"));
}

/// Two devices start the plan of a case made before schema 3 (no `crisis_plan` map) at once,
/// and change one item at once: every item and every version is kept.
#[test]
fn two_devices_writing_the_plan_at_once_lose_nothing() {
    let sam = author("Sam");
    let kit = author("Kit");
    let (mut case, _) = maria_with_ana(&sam);
    case.automerge_mut()
        .delete(ROOT, keys::CRISIS_PLAN)
        .unwrap();
    case.automerge_mut().commit();
    let mut other = CaseDoc::load(&case.save(), Some(kit)).unwrap();
    let a = case
        .add_plan_item(PlanSection::WhatHelps, "Walks", Participant::Person, None)
        .unwrap();
    let b = other
        .add_plan_item(PlanSection::WhatHelps, "Music", Participant::Person, None)
        .unwrap();
    case.automerge_mut().merge(other.automerge_mut()).unwrap();
    let mut other = CaseDoc::load(&case.save(), Some(author("Kit"))).unwrap();
    case.revise_plan_item(&a, "Long walks", Participant::Person, None)
        .unwrap();
    other
        .revise_plan_item(&a, "Walks by the river", Participant::Person, None)
        .unwrap();
    case.automerge_mut().merge(other.automerge_mut()).unwrap();
    validate_document(case.automerge()).unwrap();
    let plan = reload(&mut case).crisis_plan;
    assert!(plan.items.iter().any(|i| i.meta.id == b));
    let walks = plan.items.iter().find(|i| i.meta.id == a).unwrap();
    let mut texts: Vec<&str> = walks.earlier.iter().map(|v| v.text.as_str()).collect();
    texts.push(&walks.current.as_ref().unwrap().text);
    for t in ["Walks", "Long walks", "Walks by the river"] {
        assert!(texts.contains(&t), "{texts:?}");
    }
}

#[test]
fn plan_fields_are_validated() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let item = case
        .add_plan_item(PlanSection::WhatHelps, "Walks", Participant::Person, None)
        .unwrap();
    case.set_plan_review(parse_date("r", "2026-04-14").unwrap())
        .unwrap();
    let broken = |f: &dyn Fn(&mut automerge::AutoCommit, &automerge::ObjId, &automerge::ObjId)| {
        let mut d = case.automerge().clone();
        let plan = d.get(ROOT, keys::CRISIS_PLAN).unwrap().unwrap().1;
        let items = d.get(&plan, keys::ITEMS).unwrap().unwrap().1;
        let e = d.get(&items, item.to_string()).unwrap().unwrap().1;
        f(&mut d, &plan, &e);
        d.commit();
        validate_document(&d).unwrap_err().to_string()
    };
    let e = broken(&|d, _, e| {
        d.put(e, keys::SECTION, "horoscope").unwrap();
    });
    assert!(e.contains("unknown value 'horoscope'"), "{e}");
    let e = broken(&|d, _, e| {
        let versions = d.get(e, keys::VERSIONS).unwrap().unwrap().1;
        let v = d.get(&versions, 0).unwrap().unwrap().1;
        d.put(&v, keys::WORDS_OF, "the cat").unwrap();
    });
    assert!(e.contains("is not a participant"), "{e}");
    let e = broken(&|d, _, e| {
        let versions = d.get(e, keys::VERSIONS).unwrap().unwrap().1;
        let v = d.get(&versions, 0).unwrap().unwrap().1;
        d.put(&v, keys::TEXT, "").unwrap();
    });
    assert!(e.contains("must not be empty"), "{e}");
    let e = broken(&|d, plan, _| {
        let reviews = d.get(plan, keys::REVIEWS).unwrap().unwrap().1;
        let r = d.get(&reviews, 0).unwrap().unwrap().1;
        d.put(&r, keys::ON, "next spring").unwrap();
    });
    assert!(e.contains("is not a YYYY-MM-DD date"), "{e}");
    let e = broken(&|d, plan, _| {
        d.put_object(plan, "notes", ObjType::Text).unwrap();
    });
    assert!(e.contains("is not part of a case record"), "{e}");
}

/// Two devices set a plan's first review date at once, on a new case and on an older one whose
/// plan map a review date made: both dates are kept (the history shows both), two devices then
/// add the first items of the older case at once and both are kept, and none of this is listed
/// as a conflict for a person to resolve (nothing is hidden, nothing to pick).
#[test]
fn review_dates_and_first_items_set_at_once_are_all_kept_and_no_conflict_is_shown() {
    for older in [false, true] {
        let sam = author("Sam");
        let (mut case, _) = maria_with_ana(&sam);
        if older {
            case.automerge_mut()
                .delete(ROOT, keys::CRISIS_PLAN)
                .unwrap();
            case.automerge_mut().commit();
        }
        let mut other = CaseDoc::load(&case.save(), Some(author("Kit"))).unwrap();
        case.set_plan_review(parse_date("r", "2026-04-01").unwrap())
            .unwrap();
        other
            .set_plan_review(parse_date("r", "2026-04-02").unwrap())
            .unwrap();
        case.automerge_mut().merge(other.automerge_mut()).unwrap();
        let mut other = CaseDoc::load(&case.save(), Some(author("Kit"))).unwrap();
        let a = case
            .add_plan_item(PlanSection::WhatHelps, "Walks", Participant::Person, None)
            .unwrap();
        let b = other
            .add_plan_item(PlanSection::WhatHelps, "Music", Participant::Person, None)
            .unwrap();
        case.automerge_mut().merge(other.automerge_mut()).unwrap();
        validate_document(case.automerge()).unwrap();
        let v = reload(&mut case);
        let ons: Vec<&str> = v
            .crisis_plan
            .reviews
            .iter()
            .filter_map(|r| r.on.as_deref())
            .collect();
        assert!(
            ons.contains(&"2026-04-01") && ons.contains(&"2026-04-02"),
            "older {older}: {ons:?}"
        );
        let ids: Vec<EntryId> = v.crisis_plan.items.iter().map(|i| i.meta.id).collect();
        assert!(ids.contains(&a) && ids.contains(&b), "older {older}");
        assert!(v.conflicts.is_empty(), "older {older}: {:?}", v.conflicts);
        // Each item can still be changed, whichever map it is in.
        case.revise_plan_item(&a, "Long walks", Participant::Person, None)
            .unwrap();
        case.revise_plan_item(&b, "Loud music", Participant::Person, None)
            .unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Two devices add and change items, merging now and then: after every step, every version
    /// either wrote is in the merged plan (current or earlier), each item's current words are
    /// its newest, the record validates, and it reloads from its bytes as it was.
    #[test]
    fn no_version_of_the_plan_is_ever_lost(steps in prop::collection::vec(
        (0usize..2, 0usize..4, 0usize..PlanSection::ALL.len(), any::<bool>()), 1..24)) {
        let sam = author("Sam");
        let (mut a, _) = maria_with_ana(&sam);
        let mut b = CaseDoc::load(&a.save(), Some(author("Kit"))).unwrap();
        let mut written: Vec<String> = Vec::new();
        let mut ids: Vec<EntryId> = Vec::new();
        for (n, (who, pick, section, merge)) in steps.into_iter().enumerate() {
            let text = format!("words {n}");
            let doc = if who == 0 { &mut a } else { &mut b };
            let known: Vec<EntryId> = doc.view().crisis_plan.items.iter().map(|i| i.meta.id).collect();
            match known.get(pick) {
                Some(id) => doc
                    .revise_plan_item(id, &text, Participant::Person, None)
                    .unwrap(),
                None => ids.push(
                    doc.add_plan_item(PlanSection::ALL[section], &text, Participant::Person, None)
                        .unwrap(),
                ),
            }
            written.push(text);
            if merge {
                a.automerge_mut().merge(b.automerge_mut()).unwrap();
                b.automerge_mut().merge(a.automerge_mut()).unwrap();
            }
        }
        a.automerge_mut().merge(b.automerge_mut()).unwrap();
        validate_document(a.automerge()).unwrap();
        let plan = reload(&mut a).crisis_plan;
        prop_assert_eq!(plan.items.len(), ids.len());
        let mut seen: Vec<String> = Vec::new();
        for i in &plan.items {
            seen.extend(i.earlier.iter().map(|v| v.text.clone()));
            seen.push(i.current.as_ref().unwrap().text.clone());
        }
        seen.sort();
        written.sort();
        prop_assert_eq!(seen, written);
    }
}

/// The newest version stands by its instant, not by the text of its time: "…:00.2Z" is before
/// "…:00.25Z" though it sorts after it as text (times are shown with as few fraction digits as
/// they need). Found as a test that failed one run in four, when two versions fell so.
#[test]
fn the_newest_version_is_found_by_its_instant_not_its_text() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let item = case
        .add_plan_item(PlanSection::WhatHelps, "first", Participant::Person, None)
        .unwrap();
    case.revise_plan_item(&item, "second", Participant::Person, None)
        .unwrap();
    let d = case.automerge_mut();
    let plan = d.get(ROOT, keys::CRISIS_PLAN).unwrap().unwrap().1;
    let items = d.get(&plan, keys::ITEMS).unwrap().unwrap().1;
    let e = d.get(&items, item.to_string()).unwrap().unwrap().1;
    let versions = d.get(&e, keys::VERSIONS).unwrap().unwrap().1;
    let base = 1_767_225_600_000i64; // 2026-01-01T00:00:00Z
    for (i, ms) in [(0usize, base + 200), (1, base + 250)] {
        let v = d.get(&versions, i).unwrap().unwrap().1;
        d.put(&v, keys::AT, automerge::ScalarValue::Timestamp(ms))
            .unwrap();
    }
    d.commit();
    let plan = case.view().crisis_plan;
    assert_eq!(plan.items[0].current.as_ref().unwrap().text, "second");
    assert_eq!(plan.items[0].earlier[0].text, "first");
}
