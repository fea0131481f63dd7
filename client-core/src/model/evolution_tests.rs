//! Records written by each released schema version, read by this one (and the other way round).

use crate::export::testcase::rich_case;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Writes `fixtures/case-schema1.automerge` with the code of its time (schema 1). Kept so the
/// fixture can be made again from the commit that wrote it; see `fixtures/README.md`.
#[test]
#[ignore = "writes a fixture; run by hand on the commit named in fixtures/README.md"]
fn write_case_schema1_fixture() {
    let mut rich = rich_case();
    let ids = serde_json::json!({
        "case": rich.doc.case_id().to_string(),
        "ana": rich.ana.to_string(),
        "tom": rich.tom.to_string(),
        "first_meeting": rich.first_meeting.to_string(),
        "second_meeting": rich.second_meeting.to_string(),
        "wrong_meeting": rich.wrong_meeting.to_string(),
        "walking": rich.walking.to_string(),
        "withdrawn": rich.withdrawn.to_string(),
        "wrong_decision": rich.wrong_decision.to_string(),
    });
    std::fs::write(fixture("case-schema1.automerge"), rich.doc.save()).unwrap();
    std::fs::write(
        fixture("case-schema1.json"),
        serde_json::to_string_pretty(&ids).unwrap(),
    )
    .unwrap();
}

/// Writes `fixtures/case-schema2.automerge`: the same rich case as schema 2 writes it, with a
/// wrong-person mark, a read-back followed by a later change, a changed position and a planned
/// meeting. See `fixtures/README.md`.
#[test]
#[ignore = "writes a fixture; run by hand on the commit named in fixtures/README.md"]
fn write_case_schema2_fixture() {
    let mut rich = rich_case();
    std::fs::write(fixture("case-schema2.automerge"), rich.doc.save()).unwrap();
}

/// Writes `fixtures/case-schema3.automerge`: the rich case as schema 3 writes it, with what
/// schema 3 added (see [`schema3_additions`]). See `fixtures/README.md`.
#[test]
#[ignore = "writes a fixture; run by hand on the commit named in fixtures/README.md"]
fn write_case_schema3_fixture() {
    let mut rich = rich_case();
    crate::export::testcase::schema3_additions(&mut rich.doc);
    std::fs::write(fixture("case-schema3.automerge"), rich.doc.save()).unwrap();
}

/// Writes `fixtures/case-schema4.automerge`: the rich case as schema 4 writes it, with what
/// schema 3 and schema 4 added (see [`schema4_additions`]). See `fixtures/README.md`.
#[test]
#[ignore = "writes a fixture; run by hand when adding a schema version"]
fn write_case_schema4_fixture() {
    let mut rich = crate::export::testcase::rich_case();
    crate::export::testcase::schema3_additions(&mut rich.doc);
    crate::export::testcase::schema4_additions(&mut rich.doc);
    std::fs::write(fixture("case-schema4.automerge"), rich.doc.save()).unwrap();
}

fn load(name: &str) -> CaseDoc {
    let bytes = std::fs::read(fixture(name)).expect("the fixture is in the repository");
    CaseDoc::load(&bytes, Some(author("Reader")))
        .unwrap_or_else(|e| panic!("{name} no longer loads: {e}"))
}

use super::schema::SCHEMA_VERSION;
use super::*;
use crate::export::testcase::author;
use crate::EntryId;
use automerge::transaction::Transactable;
use automerge::{ObjType, ReadDoc, ROOT};

/// A record written by schema 1 reads in full with this version: every entry, every author, its
/// meetings held, its positions and read-backs, its mistakes still readable.
#[test]
fn a_schema1_record_reads_in_full() {
    let case = load("case-schema1.automerge");
    assert_eq!(schema::schema_version(case.automerge()).unwrap(), Some(1));
    let v = case.view();
    assert_eq!(v.person.name, "Maria Lopez");
    assert_eq!(v.network.len(), 3);
    assert_eq!(v.meetings.len(), 3);
    // Schema 1 recorded only meetings that took place, and every error mark was a mistake.
    assert!(v.meetings.iter().all(|m| m.held()));
    let wrong = v
        .meetings
        .iter()
        .find(|m| m.meta.entered_in_error.is_some())
        .unwrap();
    assert!(!wrong.meta.withheld());
    assert_eq!(wrong.notes, "Notes for another person.");
    let walking = v
        .decisions
        .iter()
        .find(|d| d.text == "Try a walking group on Saturdays")
        .unwrap();
    assert_eq!(walking.positions.len(), 2);
    assert!(walking.positions.iter().all(|p| p.earlier.is_empty()));
    let first = &v.meetings[0];
    assert_eq!(first.readback.len(), 3);
    assert!(first.readback.iter().all(|r| r.heard.is_none()));
    assert!(first.changed_after_readback.is_empty());
}

/// This version edits a schema-1 record without losing anything: the earlier position stays as
/// the first step of the history, and the record says it is now schema 2.
#[test]
fn a_schema1_record_edited_here_keeps_everything_and_becomes_this_schema() {
    let mut case = load("case-schema1.automerge");
    let before = case.view();
    let walking = before
        .decisions
        .iter()
        .find(|d| d.text == "Try a walking group on Saturdays")
        .unwrap();
    let id: EntryId = walking.meta.id;
    case.record_position(&id, Participant::Person, Stance::Unsure, Some("Not now"))
        .unwrap();
    let wrong: EntryId = before
        .meetings
        .iter()
        .find(|m| m.meta.entered_in_error.is_some())
        .unwrap()
        .meta
        .id;
    // A schema-1 mistake can be marked again as the wrong person's record.
    case.mark_error(&wrong, ErrorKind::WrongPerson, "It was Zofia's meeting")
        .unwrap();
    let reloaded = CaseDoc::load(&case.save(), None).unwrap();
    assert_eq!(
        schema::schema_version(reloaded.automerge()).unwrap(),
        Some(SCHEMA_VERSION)
    );
    let after = reloaded.view();
    let person = after
        .decisions
        .iter()
        .find(|d| d.meta.id == walking.meta.id)
        .unwrap()
        .positions
        .iter()
        .find(|p| p.participant.is(Participant::Person))
        .unwrap()
        .clone();
    assert_eq!(person.stance, Stored::Known(Stance::Unsure));
    assert_eq!(person.earlier.len(), 1);
    assert_eq!(person.earlier[0].stance, Stored::Known(Stance::Agree));
    assert_eq!(
        person.earlier[0].words.as_deref(),
        Some("I want to be outside with people")
    );
    assert!(after
        .meetings
        .iter()
        .any(|m| m.meta.id == wrong && m.meta.withheld() && m.notes.is_empty()));
    // Everything else is as it was.
    assert_eq!(after.network, before.network);
    assert_eq!(after.person, before.person);
}

/// The record schema 2 writes, kept byte for byte, still reads as it did when it was written.
#[test]
fn a_schema2_record_reads_in_full() {
    let case = load("case-schema2.automerge");
    assert_eq!(schema::schema_version(case.automerge()).unwrap(), Some(2));
    let v = case.view();
    assert!(v
        .meetings
        .iter()
        .any(|m| m.meta.withheld() && m.notes.is_empty()));
    assert!(v.meetings.iter().any(|m| m.state.is(MeetingState::Planned)));
    assert!(v.meetings.iter().any(|m| m.held() && !m.person_present));
    assert!(v
        .meetings
        .iter()
        .any(|m| !m.changed_after_readback.is_empty()));
    assert!(v
        .decisions
        .iter()
        .flat_map(|d| &d.positions)
        .any(|p| !p.earlier.is_empty()));
}

/// The record schema 3 writes, kept byte for byte, reads as it did when it was written: the
/// staff a meeting noted with their roles, the psychiatrist in the care team, the decision the
/// team took while the person disagreed (her position kept), and the figures that use the roles.
#[test]
fn a_schema3_record_reads_in_full() {
    let case = load("case-schema3.automerge");
    assert_eq!(schema::schema_version(case.automerge()).unwrap(), Some(3));
    let v = case.view();
    let visit = v
        .meetings
        .iter()
        .find(|m| m.staff.len() == 2)
        .expect("the meeting with staff noted");
    let role_of = |name: &str| {
        visit
            .staff
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.role.clone())
    };
    assert_eq!(
        role_of("Jo Peer"),
        Some(Stored::Known(StaffRole::PeerSupport))
    );
    assert_eq!(
        role_of("Dr Ade Bello"),
        Some(Stored::Known(StaffRole::Psychiatrist))
    );
    assert!(v
        .care_team
        .iter()
        .any(|c| c.role.is(CareRole::Psychiatrist) && c.name == "Dr Ade Bello"));
    let assessment = v
        .decisions
        .iter()
        .find(|d| d.status.is(DecisionStatus::TeamDecided))
        .expect("the team's decision");
    let person = assessment
        .positions
        .iter()
        .find(|p| p.participant.is(Participant::Person))
        .expect("the person's position is kept");
    assert!(person.stance.is(Stance::Disagree));
    assert!(!assessment.agreed_without_person);
    let f = case.figures();
    assert!(f.share_with_peer_support.is_some_and(|s| s > 0.0));
    let plan = &v.crisis_plan;
    assert_eq!(plan.items.len(), 2);
    assert_eq!(plan.review_on.as_deref(), Some("2026-06-20"));
    let cat = plan
        .section(PlanSection::Preferences)
        .next()
        .expect("the cat");
    assert!(cat.current.as_ref().unwrap().text.contains("no. 4"));
    assert_eq!(cat.earlier[0].text, "Ana looks after the cat");
    assert_eq!(cat.current.as_ref().unwrap().meeting, Some(visit.meta.id));
    assert_eq!(v.team_notes.len(), 2);
    let withheld: Vec<_> = v
        .team_notes
        .iter()
        .filter(|n| n.withheld_from_person())
        .collect();
    assert_eq!(withheld.len(), 1);
    assert!(withheld[0].kind.is(TeamNoteKind::Safeguarding));
    let signs = plan.section(PlanSection::EarlySigns).next().unwrap();
    assert!(matches!(
        signs.current.as_ref().unwrap().words_of.known(),
        Some(Participant::Member(_))
    ));
}

/// The record schema 4 writes, kept byte for byte: the GP's referral with its letter and the
/// episode it opened, closed; the family's emergency re-referral and the second episode, met in
/// time; everything schema 3 held still there.
#[test]
fn a_schema4_record_reads_in_full() {
    let case = load("case-schema4.automerge");
    assert_eq!(schema::schema_version(case.automerge()).unwrap(), Some(4));
    let v = case.view();
    assert_eq!(v.referrals.len(), 2);
    let gp = &v.referrals[0];
    assert_eq!(gp.source, Stored::Known(ReferralSource::Gp));
    assert_eq!(gp.urgency, Stored::Known(Urgency::Urgent));
    assert_eq!(
        gp.reason,
        crate::export::testcase::FIRST_REFERRAL_REASON,
        "in the referrer's words"
    );
    let letter = v
        .attachments
        .iter()
        .find(|a| Some(a.meta.id) == gp.letter)
        .expect("the letter is an attachment of the case");
    assert!(letter.kind.is(AttachmentKind::ReferralLetter));
    assert_eq!(v.episodes.len(), 2);
    let (one, two) = (&v.episodes[0], &v.episodes[1]);
    assert_eq!(one.referral, Some(gp.meta.id));
    assert!(one.closed_at.is_some() && !one.open());
    assert_eq!(two.referral, Some(v.referrals[1].meta.id));
    assert!(two.urgency.as_ref().unwrap().is(Urgency::Emergency));
    assert_eq!(two.meetings, 1);
    assert_eq!(two.met_in_time(), Some(true));
    assert!(two.open());
    let f = case.figures();
    assert_eq!(f.episodes.len(), 2);
    assert_eq!(
        f.episodes.iter().map(|e| e.meetings).sum::<usize>(),
        f.meetings
    );
    // Schema 3's additions are all still there.
    assert_eq!(v.crisis_plan.items.len(), 2);
    assert_eq!(v.team_notes.len(), 2);
    assert_eq!(v.attachments.len(), 2);
}

/// The newest fixture: the record as this version writes it.
const NEWEST: &str = "case-schema4.automerge";

/// A record written by the next schema (which this code has never seen) is accepted, shown,
/// edited and kept whole: what this version does not know it preserves, what it knows it still
/// checks. This is what lets devices and servers update at different times.
#[test]
fn a_newer_schemas_record_is_kept_shown_and_validated_for_what_is_known() {
    let case = load(NEWEST);
    // Another device, on the next schema, adds a field at the root, a field on a meeting, a new value
    // of a known vocabulary and a new kind of error mark.
    let mut newer = case.automerge().clone();
    newer.set_actor(automerge::ActorId::random());
    newer
        .put(ROOT, "schema_version", SCHEMA_VERSION + 1)
        .unwrap();
    let plan = newer.put_object(ROOT, "care_budget", ObjType::Map).unwrap();
    newer.put(&plan, "weekly", "Twelve pounds").unwrap();
    let meetings = newer.get(ROOT, "meetings").unwrap().unwrap().1;
    // Two meetings shown in full, so what the newer device did to them is what is seen.
    let ids: Vec<String> = case
        .view()
        .meetings
        .iter()
        .filter(|m| !m.meta.withheld())
        .map(|m| m.meta.id.to_string())
        .collect();
    let m = newer.get(&meetings, ids[0].as_str()).unwrap().unwrap().1;
    newer.put(&m, "tea_served", true).unwrap();
    newer.put(&m, "state", "rescheduled").unwrap();
    let m2 = newer.get(&meetings, ids[1].as_str()).unwrap().unwrap().1;
    let mark = newer
        .put_object(&m2, "entered_in_error", ObjType::Map)
        .unwrap();
    newer.put(&mark, "kind", "legal_hold").unwrap();
    newer.put(&mark, "reason", "Held for a court").unwrap();
    newer
        .put(&mark, "at", automerge::ScalarValue::Timestamp(0))
        .unwrap();
    let by = newer.put_object(&mark, "by", ObjType::Map).unwrap();
    for (k, v) in [
        ("practitioner", uuid::Uuid::new_v4().to_string()),
        ("practitioner_name", "Lee".into()),
        ("device", uuid::Uuid::new_v4().to_string()),
    ] {
        newer.put(&by, k, v).unwrap();
    }
    newer.commit();
    let bytes = newer.save();

    // Accepted (the server runs this same validation), and shown.
    let mut here = CaseDoc::load(&bytes, Some(author("Sam"))).expect("a newer record loads");
    let v = here.view();
    let shown = v
        .meetings
        .iter()
        .find(|m| m.meta.id.to_string() == ids[0])
        .unwrap();
    assert_eq!(
        shown.state,
        Stored::Unknown("rescheduled".into()),
        "a new value is shown as written"
    );
    let marked = v
        .meetings
        .iter()
        .find(|m| m.meta.id.to_string() == ids[1])
        .unwrap();
    assert!(
        marked.meta.withheld(),
        "a kind of mark this code does not know withholds the entry rather than risk showing it"
    );

    // Edited here: what this version does not know is still there, and the version stays.
    let member = v.network.iter().find(|m| !m.meta.withheld()).unwrap();
    here.set_member(&member.meta.id, MemberField::Phone, Some("07700 900999"))
        .unwrap();
    let mut after = CaseDoc::load(&here.save(), None).unwrap().into_automerge();
    assert_eq!(
        schema::schema_version(&after).unwrap(),
        Some(SCHEMA_VERSION + 1)
    );
    let plan = after.get(ROOT, "care_budget").unwrap().unwrap().1;
    assert_eq!(
        after.get(&plan, "weekly").unwrap().unwrap().0.as_str(),
        Some("Twelve pounds")
    );
    let meetings = after.get(ROOT, "meetings").unwrap().unwrap().1;
    let m = after.get(&meetings, ids[0].as_str()).unwrap().unwrap().1;
    assert!(after.get(&m, "tea_served").unwrap().is_some());

    // What this version knows is still checked in a newer record: a known field of the wrong
    // type is refused...
    let person = after.get(ROOT, "person").unwrap().unwrap().1;
    after.put(&person, "name", 42).unwrap();
    after.commit();
    assert!(validate_document(&after).is_err());
    // ...so is a newer field swollen past the longest field this version allows...
    let mut swollen = CaseDoc::load(&bytes, None).unwrap().into_automerge();
    swollen
        .put(ROOT, "care_budget_notes", "x".repeat(MAX_LONG + 1))
        .unwrap();
    swollen.commit();
    assert!(validate_document(&swollen)
        .unwrap_err()
        .to_string()
        .contains("care_budget_notes is too long"));
    // ...and a record two versions ahead (or claiming to be far ahead to escape checks).
    let mut far = CaseDoc::load(&bytes, None).unwrap().into_automerge();
    far.put(ROOT, "schema_version", SCHEMA_VERSION + 2).unwrap();
    far.commit();
    assert!(validate_document(&far)
        .unwrap_err()
        .to_string()
        .contains("two or more ahead"));
    // ...and in a record of this version, a key it does not know is still refused.
    let mut same = case.automerge().clone();
    same.put(ROOT, "care_budget", "not yet").unwrap();
    same.commit();
    assert!(validate_document(&same).is_err());
}

/// The bounds schema 2 added, each at its limit and one past: a newer record's vocabulary value
/// (500 characters) and unknown field (200,000), the versions a read-back may name (64), and how
/// far ahead a record may be (one version).
#[test]
fn the_schema_2_bounds_accept_the_limit_and_refuse_one_more() {
    use super::schema::is_heads;
    let case = load(NEWEST);
    let newer = |f: &dyn Fn(&mut automerge::AutoCommit)| {
        let mut d = case.automerge().clone();
        d.put(ROOT, "schema_version", SCHEMA_VERSION + 1).unwrap();
        f(&mut d);
        d.commit();
        validate_document(&d)
    };
    let meeting = |d: &automerge::AutoCommit| {
        let meetings = d.get(ROOT, "meetings").unwrap().unwrap().1;
        let id = d.keys(&meetings).next().unwrap();
        d.get(&meetings, id.as_str()).unwrap().unwrap().1
    };
    for (len, ok) in [(MAX_SHORT, true), (MAX_SHORT + 1, false)] {
        let r = newer(&|d| {
            let m = meeting(d);
            d.put(&m, "state", "é".repeat(len)).unwrap();
        });
        assert_eq!(r.is_ok(), ok, "a {len}-character vocabulary value: {r:?}");
    }
    for (len, ok) in [(MAX_LONG, true), (MAX_LONG + 1, false)] {
        let r = newer(&|d| {
            d.put(ROOT, "care_budget_notes", "😀".repeat(len)).unwrap();
        });
        assert_eq!(r.is_ok(), ok, "a {len}-character unknown field");
    }
    let heads = |n: usize| vec!["ab".repeat(32); n].join(" ");
    assert!(is_heads(&heads(64)));
    assert!(!is_heads(&heads(65)));
    assert!(!is_heads(""));
    for (ahead, ok) in [(1, true), (2, false)] {
        let mut d = case.automerge().clone();
        d.put(ROOT, "schema_version", SCHEMA_VERSION + ahead)
            .unwrap();
        d.commit();
        assert_eq!(
            validate_document(&d).is_ok(),
            ok,
            "{ahead} version(s) ahead"
        );
    }
}

/// The view and timeline JSON (`case show --json`, `case timeline --json`: docs/JSON.md) of each
/// fixture, exactly as the code of 369e3ec wrote them, before the view held typed values: reading
/// participants, stances, statuses and ids as types changes no byte a script reads.
#[test]
fn the_view_json_of_every_fixture_is_as_369e3ec_wrote_it() {
    for name in ["case-schema1", "case-schema2"] {
        let view = load(&format!("{name}.automerge")).view();
        let timeline = crate::model::Timeline::from_view(&view);
        // Fields added since 369e3ec (the JSON may gain fields, never change one): a meeting's
        // `staff`, the case's `crisis_plan`, `team_notes` and `attachments` (schema 3), empty for
        // these records; its `referrals` (schema 4, none) and `episodes` (read from the timeline).
        let mut added_since = serde_json::to_value(&view).unwrap();
        let referrals = added_since.as_object_mut().unwrap().remove("referrals");
        assert_eq!(
            referrals,
            Some(serde_json::json!([])),
            "{name}: no referrals"
        );
        // One episode, from the timeline's referral (schema 4 reads it so).
        let episodes = added_since.as_object_mut().unwrap().remove("episodes");
        let episodes = episodes.as_ref().and_then(|e| e.as_array()).unwrap();
        assert_eq!(episodes.len(), 1, "{name}: one episode");
        assert_eq!(
            episodes[0]["received_at"], added_since["timeline"]["referral"],
            "{name}: the episode starts at the referral milestone"
        );
        let files = added_since.as_object_mut().unwrap().remove("attachments");
        assert_eq!(files, Some(serde_json::json!([])), "{name}: no attachments");
        let notes = added_since.as_object_mut().unwrap().remove("team_notes");
        assert_eq!(notes, Some(serde_json::json!([])), "{name}: no team notes");
        let plan = added_since.as_object_mut().unwrap().remove("crisis_plan");
        assert_eq!(
            plan,
            Some(serde_json::to_value(crate::model::CrisisPlanView::default()).unwrap()),
            "{name}: no plan"
        );
        for m in added_since["meetings"].as_array_mut().unwrap() {
            let staff = m.as_object_mut().unwrap().remove("staff");
            assert_eq!(staff, Some(serde_json::json!([])), "{name}: no staff noted");
        }
        for (what, now) in [
            ("view", added_since),
            ("timeline", serde_json::to_value(&timeline).unwrap()),
        ] {
            let file = format!("{name}.{what}.json");
            let then: serde_json::Value =
                serde_json::from_slice(&std::fs::read(fixture(&file)).unwrap()).unwrap();
            assert_eq!(now, then, "{file}");
        }
        // And the typed view reads its own JSON back unchanged.
        let json = serde_json::to_value(&view).unwrap();
        let again: CaseView = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&again).unwrap(), json, "{name}");
    }
}

/// An author map as every version writes one.
fn put_author(doc: &mut automerge::AutoCommit, at: &automerge::ObjId, key: &str) {
    let by = doc.put_object(at, key, ObjType::Map).unwrap();
    for (k, v) in [
        ("practitioner", uuid::Uuid::new_v4().to_string()),
        ("practitioner_name", "Lee".into()),
        ("device", uuid::Uuid::new_v4().to_string()),
    ] {
        doc.put(&by, k, v).unwrap();
    }
}

/// Empty values a newer schema wrote are not taken for the defaults older records leave out: an
/// empty kind of error mark withholds its entry (it is not a mistake), an empty meeting state is
/// not "held". Both are shown as written (`""`), as before the view was typed.
#[test]
fn a_newer_schemas_empty_values_are_not_read_as_the_defaults_of_missing_ones() {
    let case = load(NEWEST);
    let mut newer = case.automerge().clone();
    newer.set_actor(automerge::ActorId::random());
    newer
        .put(ROOT, "schema_version", SCHEMA_VERSION + 1)
        .unwrap();
    let meetings = newer.get(ROOT, "meetings").unwrap().unwrap().1;
    // Two meetings shown in full, so what the newer device did to them is what is seen.
    let ids: Vec<String> = case
        .view()
        .meetings
        .iter()
        .filter(|m| !m.meta.withheld())
        .map(|m| m.meta.id.to_string())
        .collect();
    let m = newer.get(&meetings, ids[0].as_str()).unwrap().unwrap().1;
    newer.put(&m, "state", "").unwrap();
    let m2 = newer.get(&meetings, ids[1].as_str()).unwrap().unwrap().1;
    let mark = newer
        .put_object(&m2, "entered_in_error", ObjType::Map)
        .unwrap();
    newer.put(&mark, "kind", "").unwrap();
    newer.put(&mark, "reason", "Held for a court").unwrap();
    newer
        .put(&mark, "at", automerge::ScalarValue::Timestamp(0))
        .unwrap();
    put_author(&mut newer, &mark, "by");
    newer.commit();

    let v = CaseDoc::load(&newer.save(), None)
        .expect("a newer record loads")
        .view();
    let find = |id: &str| v.meetings.iter().find(|m| m.meta.id.to_string() == id);
    let unstated = find(&ids[0]).unwrap();
    assert!(!unstated.held(), "an empty state is not 'held'");
    assert_eq!(serde_json::to_value(&unstated.state).unwrap(), "");
    let marked = find(&ids[1]).unwrap();
    assert!(marked.meta.withheld(), "an empty kind is not a mistake");
    assert!(marked.notes.is_empty());
    let mark = serde_json::to_value(&marked.meta.entered_in_error).unwrap();
    assert_eq!(mark["kind"], "");
}

/// Validation reads a stance or a participant the way `str::parse` does (`Agree`, a member's id
/// in capitals), so the view reads them the same way: such a stance is agreement, and such a
/// participant is that member, withheld with them when their entry was on the wrong person's
/// record.
#[test]
fn a_value_spelt_another_way_means_what_validation_took_it_to_mean() {
    let mut case = load(NEWEST);
    let v = case.view();
    let member = v.network.iter().find(|m| !m.meta.withheld()).unwrap();
    let member_id = member.meta.id;
    let decision = v.decisions.iter().find(|d| !d.meta.withheld()).unwrap();
    let decision_id = decision.meta.id.to_string();
    case.mark_error(
        &member_id,
        ErrorKind::WrongPerson,
        "Another person's friend",
    )
    .unwrap();
    let mut doc = case.automerge().clone();
    let decisions = doc.get(ROOT, "decisions").unwrap().unwrap().1;
    let d = doc
        .get(&decisions, decision_id.as_str())
        .unwrap()
        .unwrap()
        .1;
    let positions = match doc.get(&d, "positions").unwrap() {
        Some((_, p)) => p,
        None => doc.put_object(&d, "positions", ObjType::Map).unwrap(),
    };
    for (who, stance, words) in [
        (
            format!("member:{}", member_id.to_string().to_uppercase()),
            "agree",
            "Words of someone on the wrong record",
        ),
        ("person".to_string(), "Agree", "Yes, let's"),
    ] {
        let p = doc
            .put_object(&positions, who.as_str(), ObjType::Map)
            .unwrap();
        doc.put(&p, "stance", stance).unwrap();
        doc.put(&p, "words", words).unwrap();
        doc.put(
            &p,
            "at",
            automerge::ScalarValue::Timestamp(4_102_444_800_000),
        )
        .unwrap();
        put_author(&mut doc, &p, "recorded_by");
    }
    doc.commit();
    validate_document(&doc).expect("both spellings pass validation");

    let v = CaseDoc::load(&doc.save(), None).unwrap().view();
    let d = v
        .decisions
        .iter()
        .find(|d| d.meta.id.to_string() == decision_id)
        .unwrap();
    assert!(
        d.positions
            .iter()
            .all(|p| p.words.as_deref() != Some("Words of someone on the wrong record")),
        "a withheld member's words stay withheld under any spelling of their id"
    );
    let person = d
        .positions
        .iter()
        .find(|p| p.participant.is(Participant::Person))
        .unwrap();
    assert!(person.stance.is(Stance::Agree), "'Agree' is agreement");
}
