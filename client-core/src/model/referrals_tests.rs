//! Tests of referrals and episodes: recorded with what the issue asks (and refused, nothing
//! written, when something is missing), the first meeting due by urgency and shown as due or past
//! due, a re-referral opening a new episode with figures of its own while the network and history
//! carry over, closures kept per episode, a case from before referrals read as one episode,
//! entries in error opening nothing, concurrent referrals both kept, the server's history rule,
//! and random histories checked after every step.

use automerge::transaction::Transactable;
use automerge::{ReadDoc, ScalarValue, ROOT};
use proptest::prelude::*;

use super::referrals::time_left;
use super::schema::SCHEMA_VERSION;
use super::tests::{author, maria_with_ana};
use super::work::{first_meeting_due, WorkKind};
use super::*;
use crate::EntryId;

fn at(s: &str) -> Instant {
    parse_datetime("at", s).unwrap()
}

fn gp(received: &str, urgency: Urgency) -> NewReferral {
    NewReferral {
        received_at: at(received),
        source: ReferralSource::Gp,
        referrer: Some("Dr Shah, Elm Street Surgery".into()),
        reason: "Maria has not slept for four nights and hears her late mother's voice".into(),
        urgency,
        letter: None,
    }
}

fn meet(case: &mut CaseDoc, when: &str, ana: EntryId) -> EntryId {
    meet_at(case, at(when), ana)
}

fn meet_at(case: &mut CaseDoc, when: Instant, ana: EntryId) -> EntryId {
    case.add_meeting(NewMeeting {
        at: when,
        place: Place::Home,
        attendees: vec![Participant::Person, Participant::Member(ana)],
    })
    .unwrap()
}

fn reload(case: &mut CaseDoc) -> CaseView {
    CaseDoc::load(&case.save(), None).unwrap().view()
}

#[test]
fn a_referral_is_recorded_in_full_and_opens_the_first_episode() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let letter = case
        .add_attachment(&NewAttachment {
            kind: AttachmentKind::ReferralLetter,
            title: "Referral from Dr Shah".into(),
            file_name: "referral.pdf".into(),
            size: 10,
            hash: crate::BlobHash::of(b"0123456789"),
            meeting: None,
        })
        .unwrap();
    let mut r = gp("2026-03-13T21:30", Urgency::Urgent);
    r.letter = Some(letter);
    let id = case.add_referral(&r).unwrap();
    let v = reload(&mut case);
    assert_eq!(v.referrals.len(), 1);
    let got = &v.referrals[0];
    assert_eq!(got.meta.id, id);
    assert_eq!(got.received_at.as_deref(), Some("2026-03-13T21:30:00Z"));
    assert_eq!(got.source, Stored::Known(ReferralSource::Gp));
    assert_eq!(got.referrer.as_deref(), Some("Dr Shah, Elm Street Surgery"));
    assert!(got.reason.starts_with("Maria has not slept"));
    assert_eq!(got.urgency, Stored::Known(Urgency::Urgent));
    assert_eq!(got.letter, Some(letter));
    assert_eq!(
        got.meta.created_by.as_ref().unwrap().practitioner_name,
        "Sam"
    );
    // The referral that opened the case: the milestone older versions read moves to it, and
    // there is one episode, due 24 hours after it came in.
    assert_eq!(v.timeline.referral.as_deref(), Some("2026-03-13T21:30:00Z"));
    assert_eq!(v.episodes.len(), 1);
    let e = &v.episodes[0];
    assert_eq!(e.referral, Some(id));
    assert_eq!(e.first_meeting_due, "2026-03-14T21:30:00Z");
    assert!(e.open());
    validate_document(case.automerge()).unwrap();
    assert_eq!(schema::schema_version(case.automerge()).unwrap(), Some(4));
}

#[test]
fn a_referral_missing_what_it_needs_is_refused_and_nothing_is_written() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let before = case.save();
    let mut no_reason = gp("2026-03-13T21:30", Urgency::Urgent);
    no_reason.reason = "  ".into();
    let mut no_referrer = gp("2026-03-13T21:30", Urgency::Urgent);
    no_referrer.referrer = None;
    let mut future = gp("2026-03-13T21:30", Urgency::Urgent);
    future.received_at = time::OffsetDateTime::now_utc() + time::Duration::hours(2);
    let mut no_letter = gp("2026-03-13T21:30", Urgency::Urgent);
    no_letter.letter = Some(EntryId::random());
    let mut long = gp("2026-03-13T21:30", Urgency::Urgent);
    long.referrer = Some("x".repeat(MAX_SHORT + 1));
    for (bad, says) in [
        (no_reason, "reason for the referral is required"),
        (no_referrer, "referrer"),
        (future, "cannot be received in the future"),
        (no_letter, "attachment"),
        (long, "referrer is too long"),
    ] {
        let e = case.add_referral(&bad).unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
    }
    assert_eq!(case.save(), before, "nothing was written");
    // A self-referral needs no referrer.
    let mut own = gp("2026-03-13T21:30", Urgency::Routine);
    own.source = ReferralSource::SelfReferral;
    own.referrer = None;
    case.add_referral(&own).unwrap();
    assert_eq!(reload(&mut case).referrals[0].referrer, None);
}

#[test]
fn the_first_meeting_is_due_by_urgency_and_shown_as_time_left_or_past_due() {
    let sam = author("Sam");
    for (urgency, due) in [
        (Urgency::Emergency, "2026-03-14T12:00:00Z"),
        (Urgency::Urgent, "2026-03-15T08:00:00Z"),
        (Urgency::Routine, "2026-04-11T08:00:00Z"),
    ] {
        let (mut case, ana) = maria_with_ana(&sam);
        case.add_referral(&gp("2026-03-14T08:00", urgency)).unwrap();
        let v = case.view();
        assert_eq!(v.episodes[0].first_meeting_due, due, "{urgency}");
        // On the morning list at once: the practice aims to meet within a day.
        let zone = LocalZone::uk();
        let received = at("2026-03-14T08:00");
        let item = first_meeting_due(&v, Some(sam.practitioner), &zone, received).unwrap();
        assert_eq!(item.days_overdue, 0);
        assert!(item.text.contains("left"), "{}", item.text);
        let soon = at(due) - time::Duration::minutes(90);
        let item = first_meeting_due(&v, Some(sam.practitioner), &zone, soon).unwrap();
        assert_eq!(item.kind, WorkKind::FirstMeeting);
        assert!(
            item.text.contains("1 hour 30 minutes left"),
            "{}",
            item.text
        );
        assert!(item.mine, "Sam is in the care team");
        let late = at(due) + time::Duration::hours(50);
        let item = first_meeting_due(&v, None, &zone, late).unwrap();
        assert!(
            item.text.contains("2 days 2 hours past due"),
            "{}",
            item.text
        );
        assert_eq!(item.days_overdue, 2);
        // Once a network meeting is held, nothing is awaited.
        meet(&mut case, "2026-03-14T11:00", ana);
        let v = case.view();
        assert!(first_meeting_due(&v, None, &zone, late).is_none());
        assert_eq!(v.episodes[0].met_in_time(), Some(true));
        assert_eq!(v.episodes[0].hours_to_first_meeting(), Some(3.0));
    }
}

#[test]
fn time_left_reads_as_a_person_says_it() {
    let due = at("2026-03-14T12:00");
    for (now, words, past) in [
        ("2026-03-14T11:59", "1 minute left", false),
        ("2026-03-14T10:00", "2 hours left", false),
        ("2026-03-13T09:00", "1 day 3 hours left", false),
        ("2026-03-14T12:00", "0 minutes left", false),
        ("2026-03-14T12:01", "1 minute past due", true),
        ("2026-03-16T12:00", "2 days past due", true),
    ] {
        assert_eq!(time_left(due, at(now)), (words.to_string(), past), "{now}");
    }
}

#[test]
fn a_re_referral_opens_a_new_episode_with_its_own_figures_and_the_network_carries_over() {
    let sam = author("Sam");
    let (mut case, ana) = maria_with_ana(&sam);
    let first = case
        .add_referral(&gp("2026-03-14T08:00", Urgency::Urgent))
        .unwrap();
    meet(&mut case, "2026-03-14T20:00", ana);
    meet(&mut case, "2026-03-20T10:00", ana);
    case.set_timeline(TimelineField::Closure, at("2026-05-01T12:00"))
        .unwrap();
    assert!(!case.view().episodes[0].open());
    let mut again = gp("2026-09-02T09:00", Urgency::Emergency);
    again.source = ReferralSource::EmergencyDepartment;
    again.referrer = Some("Liaison team, St Mary's A&E".into());
    let second = case.add_referral(&again).unwrap();
    let v = reload(&mut case);
    assert_eq!(v.episodes.len(), 2);
    let (one, two) = (&v.episodes[0], &v.episodes[1]);
    assert_eq!((one.referral, two.referral), (Some(first), Some(second)));
    assert_eq!(one.closed_at.as_deref(), Some("2026-05-01T11:00:00Z"));
    assert_eq!(one.meetings, 2);
    assert!(two.open() && two.first_meeting.is_none());
    assert_eq!(two.first_meeting_due, "2026-09-02T12:00:00Z");
    // The milestone of the first referral stays where it was: it is not this one.
    assert_eq!(v.timeline.referral.as_deref(), Some("2026-03-14T08:00:00Z"));
    // The network and history carry over: Ana is still there, every meeting is still there.
    assert!(v.network.iter().any(|m| m.meta.id == ana));
    assert_eq!(v.meetings.len(), 2);

    meet(&mut case, "2026-09-02T15:00", ana);
    case.set_timeline(TimelineField::Closure, at("2026-10-01T12:00"))
        .unwrap();
    let v = reload(&mut case);
    // Each episode keeps its own closure: closing the second did not overwrite the first.
    assert_eq!(
        v.episodes[0].closed_at.as_deref(),
        Some("2026-05-01T11:00:00Z")
    );
    assert_eq!(
        v.episodes[1].closed_at.as_deref(),
        Some("2026-10-01T11:00:00Z")
    );
    let f = case.figures();
    assert_eq!(f.episodes.len(), 2);
    assert_eq!(f.episodes[0].meetings, 2);
    assert_eq!(f.episodes[0].hours_referral_to_first_meeting, Some(12.0));
    assert_eq!(f.episodes[0].first_meeting_in_time, Some(true));
    assert_eq!(f.episodes[1].meetings, 1);
    assert_eq!(f.episodes[1].hours_referral_to_first_meeting, Some(6.0));
    assert_eq!(
        f.episodes[1].first_meeting_in_time,
        Some(false),
        "an emergency is due in 4 hours"
    );
    assert_eq!(f.meetings, 3, "the case's own figures count every episode");
    // The timeline tells each referral and each closure once.
    let t = Timeline::from_view(&v);
    let referrals: Vec<_> = t
        .events
        .iter()
        .filter(|e| e.kind == timeline::EventKind::Referral)
        .collect();
    assert_eq!(referrals.len(), 2, "{referrals:?}");
    assert!(referrals[1]
        .text
        .contains("A&E (Liaison team, St Mary's A&E)"));
    assert!(referrals[1].text.contains("episode 2"));
    let closures = t
        .events
        .iter()
        .filter(|e| e.kind == timeline::EventKind::Closure)
        .count();
    assert_eq!(closures, 2);
}

/// A case from before referrals were recorded (its referral only a milestone, met, closed) and
/// then re-referred: the old episode stands from the milestone, the new one from the referral.
#[test]
fn a_case_from_before_referrals_is_one_episode_and_a_re_referral_adds_a_second() {
    let sam = author("Sam");
    let (mut case, ana) = maria_with_ana(&sam);
    meet(&mut case, "2026-03-14T11:00", ana);
    case.set_timeline(TimelineField::Closure, at("2026-04-01T12:00"))
        .unwrap();
    let v = case.view();
    assert_eq!(v.episodes.len(), 1);
    assert_eq!(v.episodes[0].referral, None);
    assert_eq!(v.episodes[0].first_meeting_due, "2026-03-15T08:00:00Z");
    let id = case
        .add_referral(&gp("2026-08-01T10:00", Urgency::Urgent))
        .unwrap();
    meet(&mut case, "2026-08-01T18:00", ana);
    case.set_timeline(TimelineField::Closure, at("2026-09-01T12:00"))
        .unwrap();
    let v = reload(&mut case);
    assert_eq!(v.episodes.len(), 2);
    assert_eq!(v.episodes[0].referral, None);
    assert_eq!(v.timeline.referral.as_deref(), Some("2026-03-14T08:00:00Z"));
    assert_eq!(
        v.episodes[0].closed_at.as_deref(),
        Some("2026-04-01T11:00:00Z"),
        "the old episode's closure is not overwritten by the new one's"
    );
    assert_eq!(v.episodes[1].referral, Some(id));
    assert_eq!(
        v.episodes[1].closed_at.as_deref(),
        Some("2026-09-01T11:00:00Z")
    );
    assert_eq!((v.episodes[0].meetings, v.episodes[1].meetings), (1, 1));
}

#[test]
fn a_closure_before_the_referral_is_refused() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    case.add_referral(&gp("2026-03-14T08:00", Urgency::Urgent))
        .unwrap();
    let e = case
        .set_timeline(TimelineField::Closure, at("2026-03-01T08:00"))
        .unwrap_err();
    assert!(e.to_string().contains("before the referral"), "{e}");
}

#[test]
fn a_referral_in_error_opens_nothing_and_one_on_the_wrong_record_shows_nothing() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let first = case
        .add_referral(&gp("2026-03-14T08:00", Urgency::Urgent))
        .unwrap();
    let wrong = case
        .add_referral(&gp("2026-06-14T08:00", Urgency::Emergency))
        .unwrap();
    case.mark_error(&wrong, ErrorKind::WrongPerson, "Another Maria's referral")
        .unwrap();
    let v = reload(&mut case);
    assert_eq!(v.episodes.len(), 1, "a referral in error opens no episode");
    let w = v.referrals.iter().find(|r| r.meta.id == wrong).unwrap();
    assert!(w.meta.withheld());
    assert!(w.reason.is_empty() && w.referrer.is_none() && w.received_at.is_none());
    let json = serde_json::to_string(&v).unwrap();
    assert!(!json.contains("2026-06-14"), "nothing of it shows");
    case.mark_entered_in_error(&first, "Recorded twice")
        .unwrap();
    let v = case.view();
    assert!(
        v.referrals[0].reason.starts_with("Maria"),
        "a mistake stays readable"
    );
    assert_eq!(
        v.episodes.len(),
        1,
        "the case still has its milestone's episode"
    );
    assert_eq!(v.episodes[0].referral, None);
}

/// Two devices, apart, each record a referral on a case from before schema 4 (no `referrals`
/// map): both make the map, and both referrals are read.
#[test]
fn referrals_recorded_apart_on_an_older_case_are_both_kept() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let d = case.automerge_mut();
    d.delete(ROOT, keys::REFERRALS).unwrap();
    d.put(ROOT, keys::SCHEMA_VERSION, 3u64).unwrap();
    d.commit();
    let mut a = CaseDoc::load(&case.save(), Some(author("Sam"))).unwrap();
    let mut b = CaseDoc::load(&case.save(), Some(author("Kit"))).unwrap();
    a.add_referral(&gp("2026-03-14T08:00", Urgency::Urgent))
        .unwrap();
    b.add_referral(&gp("2026-07-14T08:00", Urgency::Routine))
        .unwrap();
    a.automerge_mut().merge(b.automerge_mut()).unwrap();
    validate_document(a.automerge()).unwrap();
    let v = reload(&mut a);
    assert_eq!(v.referrals.len(), 2);
    assert!(v.conflicts.is_empty(), "{:?}", v.conflicts);
}

#[test]
fn the_validator_checks_a_referral_and_a_newer_version_may_add_values() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let id = case
        .add_referral(&gp("2026-03-14T08:00", Urgency::Urgent))
        .unwrap();
    let bad = |key: &str, value: ScalarValue, newer: bool| {
        let mut d = case.automerge().clone();
        if newer {
            d.put(ROOT, keys::SCHEMA_VERSION, SCHEMA_VERSION + 1)
                .unwrap();
        }
        let map = d.get(ROOT, keys::REFERRALS).unwrap().unwrap().1;
        let e = d.get(&map, id.to_string()).unwrap().unwrap().1;
        d.put(&e, key, value).unwrap();
        d.commit();
        validate_document(&d)
    };
    assert!(bad(keys::URGENCY, "whenever".into(), false).is_err());
    assert!(bad(keys::SOURCE, "pharmacy".into(), false).is_err());
    assert!(bad(keys::RECEIVED_AT, "yesterday".into(), false).is_err());
    assert!(bad(keys::LETTER, "not an id".into(), false).is_err());
    assert!(bad("triage_score", 3.into(), false).is_err());
    // A newer version may add an urgency, a source or a field, and it is shown as written.
    assert!(bad(keys::URGENCY, "within_72_hours".into(), true).is_ok());
    assert!(bad(keys::SOURCE, "pharmacy".into(), true).is_ok());
    assert!(bad("triage_score", 3.into(), true).is_ok());
    // What this version knows it still checks in a newer record.
    assert!(bad(keys::RECEIVED_AT, "yesterday".into(), true).is_err());
}

#[test]
fn what_a_referral_says_stays_as_written_on_the_servers_history_rule() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let id = case
        .add_referral(&gp("2026-03-14T08:00", Urgency::Urgent))
        .unwrap();
    let made = case.automerge().clone();
    for (key, value) in [
        (keys::REASON, ScalarValue::Str("Something else".into())),
        (keys::REFERRER, ScalarValue::Str("Someone else".into())),
        (keys::URGENCY, ScalarValue::Str("routine".into())),
        (keys::SOURCE, ScalarValue::Str("self".into())),
        (keys::RECEIVED_AT, ScalarValue::Timestamp(0)),
    ] {
        let mut before = made.clone();
        let mut after = made.clone();
        let map = after.get(ROOT, keys::REFERRALS).unwrap().unwrap().1;
        let e = after.get(&map, id.to_string()).unwrap().unwrap().1;
        after.put(&e, key, value).unwrap();
        after.commit();
        let ops = super::tests::new_ops(&mut before, &mut after);
        let e = guard::written_once_kept(&before, &after, &ops).unwrap_err();
        assert!(e.contains(key), "{e}");
    }
    // Closing the episode later is a new field, and allowed.
    let mut before = case.automerge().clone();
    case.set_timeline(TimelineField::Closure, at("2026-05-01T08:00"))
        .unwrap();
    let mut after = case.automerge().clone();
    let ops = super::tests::new_ops(&mut before, &mut after);
    guard::written_once_kept(&before, &after, &ops).unwrap();
}

#[derive(Debug, Clone)]
enum Step {
    Refer(u32, usize),
    Meet(u32, bool),
    Close(u32),
    Error(usize),
    Merge,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u32..40, 0usize..3).prop_map(|(h, u)| Step::Refer(h, u)),
        (0u32..40, any::<bool>()).prop_map(|(h, held)| Step::Meet(h, held)),
        (0u32..40).prop_map(Step::Close),
        (0usize..4).prop_map(Step::Error),
        Just(Step::Merge),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Two devices record referrals, meetings, closures and mistakes in any order, merging now
    /// and then. After every step, on each device: the record validates; episodes run in order
    /// and never overlap; every network meeting held is in exactly one episode (the episodes'
    /// meetings add up to the case's); each episode's first meeting is its earliest; an open
    /// episode is only ever the last; every referral written is still there (in error or not);
    /// and the record reloads from its bytes to the same view.
    #[test]
    fn episodes_always_partition_the_meetings_and_no_referral_is_lost(
        steps in prop::collection::vec((0usize..2, step()), 1..28)
    ) {
        let sam = author("Sam");
        let (mut a, ana) = maria_with_ana(&sam);
        let mut b = CaseDoc::load(&a.save(), Some(author("Kit"))).unwrap();
        let base = at("2026-03-14T08:00");
        let mut written: Vec<EntryId> = Vec::new();
        for (who, s) in steps {
            let doc = if who == 0 { &mut a } else { &mut b };
            let t = |h: u32| base + time::Duration::hours(h as i64 * 6);
            match s {
                Step::Refer(h, u) => {
                    let r = NewReferral { received_at: t(h), urgency: Urgency::ALL[u], ..gp("2026-03-14T08:00", Urgency::Urgent) };
                    written.push(doc.add_referral(&r).unwrap());
                }
                Step::Meet(h, held) => {
                    let m = meet_at(doc, t(h), ana);
                    if !held {
                        doc.mark_entered_in_error(&m, "not held").unwrap();
                    }
                }
                Step::Close(h) => {
                    // Refused only when before the episode's referral; nothing written then.
                    let before = doc.save();
                    if doc.set_timeline(TimelineField::Closure, t(h)).is_err() {
                        prop_assert_eq!(doc.save(), before);
                    }
                }
                Step::Error(i) => {
                    let live: Vec<EntryId> = doc.view().referrals.iter()
                        .filter(|r| r.meta.entered_in_error.is_none()).map(|r| r.meta.id).collect();
                    if let Some(id) = live.get(i) {
                        doc.mark_entered_in_error(id, "recorded twice").unwrap();
                    }
                }
                Step::Merge => {
                    a.automerge_mut().merge(b.automerge_mut()).unwrap();
                    b.automerge_mut().merge(a.automerge_mut()).unwrap();
                }
            }
            for doc in [&mut a, &mut b] {
                validate_document(doc.automerge()).unwrap();
                let v = doc.view();
                let eps = &v.episodes;
                prop_assert!(!eps.is_empty());
                for (i, e) in eps.iter().enumerate() {
                    prop_assert_eq!(e.number, i + 1);
                    if let Some(next) = eps.get(i + 1) {
                        prop_assert!(instant(&Some(e.received_at.clone())) <= instant(&Some(next.received_at.clone())));
                        prop_assert!(!e.open(), "only the last episode may be open");
                    }
                }
                let held: Vec<Instant> = super::figures::network_meetings(&v)
                    .iter().filter_map(|m| instant(&m.at)).collect();
                for m in &held {
                    prop_assert_eq!(eps.iter().filter(|e| e.holds(*m)).count(), 1);
                }
                prop_assert_eq!(eps.iter().map(|e| e.meetings).sum::<usize>(), held.len());
                for e in eps {
                    let earliest = held.iter().filter(|m| e.holds(**m)).min().map(|m| format_instant(*m));
                    prop_assert_eq!(&e.first_meeting, &earliest);
                    // A closure closes only the episode it falls in.
                    if let Some(c) = instant(&e.closed_at) {
                        prop_assert!(e.holds(c) && Some(c) >= instant(&Some(e.received_at.clone())));
                    }
                }
                let f = doc.figures();
                prop_assert_eq!(f.episodes.iter().map(|e| e.meetings).sum::<usize>(), f.meetings);
                prop_assert_eq!(reload(doc), v);
            }
        }
        a.automerge_mut().merge(b.automerge_mut()).unwrap();
        let ids: Vec<EntryId> = a.view().referrals.iter().map(|r| r.meta.id).collect();
        for id in written {
            prop_assert!(ids.contains(&id));
        }
    }
}

fn instant(t: &Option<String>) -> Option<Instant> {
    t.as_deref()
        .and_then(|s| Instant::parse(s, &time::format_description::well_known::Rfc3339).ok())
}

/// A schema-4 case is made with its `referrals` map, so devices add to one map.
#[test]
fn a_case_is_made_with_its_referrals_map() {
    let sam = author("Sam");
    let (case, _) = maria_with_ana(&sam);
    assert_eq!(
        case.automerge()
            .get_all(ROOT, keys::REFERRALS)
            .unwrap()
            .len(),
        1
    );
}

/// A referral may say it came in up to 10 minutes ahead of this device's clock (clocks differ),
/// and no more: at 9 minutes it is taken, at 11 refused with nothing written.
#[test]
fn a_referral_up_to_the_clock_skew_ahead_is_taken_and_past_it_refused() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let mut soon = gp("2026-03-14T08:00", Urgency::Urgent);
    soon.received_at = time::OffsetDateTime::now_utc() + time::Duration::minutes(9);
    case.add_referral(&soon).unwrap();
    let before = case.save();
    let mut later = soon.clone();
    later.received_at = time::OffsetDateTime::now_utc() + time::Duration::minutes(11);
    assert!(case.add_referral(&later).is_err());
    assert_eq!(case.save(), before);
}

/// Device A records an emergency re-referral at 14:00 while device B, which has not seen it,
/// closes the case at 15:00. Merged, B's closure closes the episode B saw; the new episode stays
/// open and its first meeting is still awaited (an emergency must not read as closed).
#[test]
fn a_closure_made_apart_from_a_re_referral_does_not_close_the_new_episode() {
    let sam = author("Sam");
    let (mut a, ana) = maria_with_ana(&sam);
    a.add_referral(&gp("2026-03-14T08:00", Urgency::Urgent))
        .unwrap();
    meet(&mut a, "2026-03-14T12:00", ana);
    let mut b = CaseDoc::load(&a.save(), Some(author("Kit"))).unwrap();
    a.add_referral(&gp("2026-06-01T14:00", Urgency::Emergency))
        .unwrap();
    b.set_timeline(TimelineField::Closure, at("2026-06-01T15:00"))
        .unwrap();
    a.automerge_mut().merge(b.automerge_mut()).unwrap();
    validate_document(a.automerge()).unwrap();
    let v = reload(&mut a);
    assert_eq!(v.episodes.len(), 2);
    assert!(v.episodes[1].open(), "{:?}", v.episodes[1]);
    assert!(v.episodes[1].awaiting_first_meeting().is_some());
    assert!(
        !v.episodes[0].open(),
        "the first ended with the re-referral"
    );
}

/// A device that knows no episodes closes a case whose only episode a referral opened: the
/// timeline's closure closes it. Once re-referred, that closure is kept on the first referral.
#[test]
fn an_older_devices_closure_closes_the_only_episode_and_is_kept_when_re_referred() {
    let sam = author("Sam");
    let (mut case, ana) = maria_with_ana(&sam);
    case.add_referral(&gp("2026-03-14T08:00", Urgency::Urgent))
        .unwrap();
    meet(&mut case, "2026-03-14T12:00", ana);
    // What schema 3 does: the timeline's closure only.
    let d = case.automerge_mut();
    let tl = d.get(ROOT, keys::TIMELINE).unwrap().unwrap().1;
    d.put(&tl, "closure", ScalarValue::Timestamp(1_777_000_000_000))
        .unwrap();
    d.commit();
    let closed = case.view().episodes[0].closed_at.clone();
    assert!(closed.is_some(), "the only episode is closed");
    case.add_referral(&gp("2026-09-01T10:00", Urgency::Routine))
        .unwrap();
    let v = reload(&mut case);
    assert_eq!(v.episodes[0].closed_at, closed, "kept on its referral");
    assert!(v.episodes[1].open());
    // Closing the first episode again later (a corrected date) leaves the timeline alone: the
    // open second episode is the one older devices should not see as closed.
    let before = v.timeline.closure.clone();
    case.set_timeline(TimelineField::Closure, at("2026-04-30T12:00"))
        .unwrap();
    let v = case.view();
    assert_eq!(v.timeline.closure, before);
    assert_eq!(
        v.episodes[0].closed_at.as_deref(),
        Some("2026-04-30T11:00:00Z")
    );
}

/// A referral recorded on the wrong person's record takes its letter with it: nothing of the
/// other person's letter shows.
#[test]
fn a_referral_on_the_wrong_record_withholds_its_letter_too() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let letter = case
        .add_attachment(&NewAttachment {
            kind: AttachmentKind::ReferralLetter,
            title: "Referral for another Maria".into(),
            file_name: "other.pdf".into(),
            size: 5,
            hash: crate::BlobHash::of(b"other"),
            meeting: None,
        })
        .unwrap();
    let mut r = gp("2026-03-14T08:00", Urgency::Urgent);
    r.letter = Some(letter);
    let id = case.add_referral(&r).unwrap();
    case.mark_error(&id, ErrorKind::WrongPerson, "Another Maria's referral")
        .unwrap();
    let v = reload(&mut case);
    let a = v.attachments.iter().find(|a| a.meta.id == letter).unwrap();
    assert!(a.meta.withheld(), "the letter went with the referral");
    let json = serde_json::to_string(&v).unwrap();
    assert!(!json.contains("another Maria") && !json.contains("other.pdf"));
    validate_document(case.automerge()).unwrap();
}

/// A letter that follows a telephone referral is named once; a second is refused, and the
/// server's history rule refuses a change that rewrites it, but keeps two devices' names made
/// apart (a conflict the team sees).
#[test]
fn a_referrals_letter_is_named_once() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let id = case
        .add_referral(&gp("2026-03-14T08:00", Urgency::Urgent))
        .unwrap();
    let file = |name: &str| NewAttachment {
        kind: AttachmentKind::ReferralLetter,
        title: name.into(),
        file_name: format!("{name}.pdf"),
        size: 3,
        hash: crate::BlobHash::of(name.as_bytes()),
        meeting: None,
    };
    let one = case.add_attachment(&file("one")).unwrap();
    let two = case.add_attachment(&file("two")).unwrap();
    let mut apart = CaseDoc::load(&case.save(), Some(author("Kit"))).unwrap();
    let mut before = case.automerge().clone();
    case.set_referral_letter(&id, &one).unwrap();
    let mut after = case.automerge().clone();
    let ops = super::tests::new_ops(&mut before, &mut after);
    guard::written_once_kept(&before, &after, &ops).unwrap();
    assert_eq!(case.view().referrals[0].letter, Some(one));
    let e = case.set_referral_letter(&id, &two).unwrap_err();
    assert!(e.to_string().contains("already names its letter"), "{e}");
    // A rewrite by a bad device: refused by the server.
    let mut before = case.automerge().clone();
    let mut after = before.clone();
    let map = after.get(ROOT, keys::REFERRALS).unwrap().unwrap().1;
    let e = after.get(&map, id.to_string()).unwrap().unwrap().1;
    after.put(&e, keys::LETTER, two.to_string()).unwrap();
    after.commit();
    let ops = super::tests::new_ops(&mut before, &mut after);
    assert!(guard::written_once_kept(&before, &after, &ops).is_err());
    // Named apart on another device: both kept.
    apart.set_referral_letter(&id, &two).unwrap();
    let mut before = case.automerge().clone();
    let mut after = before.clone();
    after.merge(apart.automerge_mut()).unwrap();
    let ops = super::tests::new_ops(&mut before, &mut after);
    guard::written_once_kept(&before, &after, &ops).unwrap();
    assert_eq!(after.get_all(&e, keys::LETTER).unwrap().len(), 2);
}

/// A case with no referral recorded (its referral only the timeline's milestone) is listed from
/// the UK day its first meeting is due (24 hours, the practice's aim); a recorded referral at
/// once, but never before it came in.
#[test]
fn the_morning_list_takes_a_recorded_referral_at_once_and_a_milestone_from_its_due_day() {
    let sam = author("Sam");
    let zone = LocalZone::uk();
    let (case, _) = maria_with_ana(&sam);
    let v = case.view();
    assert_eq!(v.episodes[0].first_meeting_due, "2026-03-15T08:00:00Z");
    assert!(first_meeting_due(&v, None, &zone, at("2026-03-14T23:59")).is_none());
    assert!(first_meeting_due(&v, None, &zone, at("2026-03-15T00:00")).is_some());
    let (mut case, _) = maria_with_ana(&sam);
    case.add_referral(&gp("2026-03-14T08:00", Urgency::Routine))
        .unwrap();
    let v = case.view();
    assert!(first_meeting_due(&v, None, &zone, at("2026-03-14T07:59")).is_none());
    assert!(first_meeting_due(&v, None, &zone, at("2026-03-14T08:00")).is_some());
}

/// Each episode's "original pair" is the first two practitioners in the care team during it: a
/// re-referral months on, met by a new pair, is not scored against the pair who left.
#[test]
fn each_episodes_original_pair_is_the_pair_of_its_time() {
    let sam = author("Sam");
    let (mut case, ana) = maria_with_ana(&sam);
    let sams = case.view().care_team[0].meta.id;
    let kit = crate::PractitionerId::random();
    let kits = case
        .add_care_team(
            kit,
            "Kit",
            CareRole::Practitioner,
            Some(parse_date("d", "2026-03-14").unwrap()),
        )
        .unwrap();
    case.add_referral(&gp("2026-03-14T08:00", Urgency::Urgent))
        .unwrap();
    let with = |case: &mut CaseDoc, when: &str, staff: &[crate::PractitionerId]| {
        let mut who = vec![Participant::Person, Participant::Member(ana)];
        who.extend(staff.iter().map(|p| Participant::Practitioner(*p)));
        case.add_meeting(NewMeeting {
            at: at(when),
            place: Place::Home,
            attendees: who,
        })
        .unwrap();
    };
    with(&mut case, "2026-03-14T12:00", &[sam.practitioner, kit]);
    case.set_timeline(TimelineField::Closure, at("2026-04-01T12:00"))
        .unwrap();
    case.end_care_team(&sams, Some(parse_date("d", "2026-04-01").unwrap()))
        .unwrap();
    case.end_care_team(&kits, Some(parse_date("d", "2026-04-01").unwrap()))
        .unwrap();
    let (lee, max) = (
        crate::PractitionerId::random(),
        crate::PractitionerId::random(),
    );
    for (p, name) in [(lee, "Lee"), (max, "Max")] {
        case.add_care_team(
            p,
            name,
            CareRole::Practitioner,
            Some(parse_date("d", "2026-09-01").unwrap()),
        )
        .unwrap();
    }
    case.add_referral(&gp("2026-09-01T09:00", Urgency::Urgent))
        .unwrap();
    with(&mut case, "2026-09-01T15:00", &[lee, max]);
    let f = case.figures();
    assert_eq!(f.episodes.len(), 2);
    assert_eq!(f.episodes[0].share_with_original_pair, Some(1.0));
    assert_eq!(
        f.episodes[1].share_with_original_pair,
        Some(1.0),
        "Lee and Max"
    );
    assert_eq!(
        f.share_with_original_pair,
        Some(0.5),
        "the case's own: Sam and Kit"
    );
}

/// Two referrals within a day of each other are asked about as perhaps the same one (two
/// practitioners logging one call); a day and a minute apart, or one in error, are not.
#[test]
fn a_referral_within_a_day_of_another_is_pointed_out() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let first = case
        .add_referral(&gp("2026-03-14T08:00", Urgency::Urgent))
        .unwrap();
    let again = case
        .add_referral(&gp("2026-03-15T08:00", Urgency::Urgent))
        .unwrap();
    let later = case
        .add_referral(&gp("2026-03-16T08:01", Urgency::Urgent))
        .unwrap();
    let v = case.view();
    assert_eq!(v.referral_near(again).map(|r| r.meta.id), Some(first));
    assert_eq!(
        v.referral_near(later).map(|r| r.meta.id),
        None,
        "24 h 1 min apart"
    );
    case.mark_entered_in_error(&first, "Recorded twice")
        .unwrap();
    assert_eq!(case.view().referral_near(again).map(|r| r.meta.id), None);
}

/// Marking a referral as another person's takes only its own referral letter: a document of this
/// person's named as its letter (refused now, but a newer or bad device could have written it)
/// stays; a document already another referral's letter cannot be named again.
#[test]
fn a_wrong_person_referral_never_takes_the_persons_own_document() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let doc = |kind, name: &str| NewAttachment {
        kind,
        title: name.into(),
        file_name: format!("{name}.pdf"),
        size: 4,
        hash: crate::BlobHash::of(name.as_bytes()),
        meeting: None,
    };
    let gp = case
        .add_attachment(&doc(AttachmentKind::GpLetter, "Maria's GP letter"))
        .unwrap();
    let letter = case
        .add_attachment(&doc(AttachmentKind::ReferralLetter, "referral"))
        .unwrap();
    let mut first = gp_referral("2026-03-14T08:00");
    first.letter = Some(letter);
    case.add_referral(&first).unwrap();
    // The same letter for a second referral: refused, nothing written.
    let before = case.save();
    let mut second = gp_referral("2026-06-14T08:00");
    second.letter = Some(letter);
    let e = case.add_referral(&second).unwrap_err();
    assert!(
        e.to_string().contains("already another referral's letter"),
        "{e}"
    );
    assert_eq!(case.save(), before);
    // Maria's GP letter named as a wrong referral's letter (as a bad device could): marking the
    // referral as another person's leaves the GP letter hers.
    let mut wrong = gp_referral("2026-07-14T08:00");
    wrong.letter = Some(gp);
    let wrong = case.add_referral(&wrong).unwrap();
    case.mark_error(&wrong, ErrorKind::WrongPerson, "Another person's referral")
        .unwrap();
    let v = case.view();
    let kept = v.attachments.iter().find(|a| a.meta.id == gp).unwrap();
    assert!(!kept.meta.withheld(), "the person's own document stays");
    let named = v.attachments.iter().find(|a| a.meta.id == letter).unwrap();
    assert!(!named.meta.withheld(), "another referral's letter stays");
}

/// A closed episode's closure may be corrected, never taken away: the server's history rule
/// refuses a change that deletes it.
#[test]
fn a_closure_is_never_deleted_on_the_servers_history_rule() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let id = case.add_referral(&gp_referral("2026-03-14T08:00")).unwrap();
    case.set_timeline(TimelineField::Closure, at("2026-04-01T12:00"))
        .unwrap();
    let mut before = case.automerge().clone();
    let mut after = before.clone();
    let map = after.get(ROOT, keys::REFERRALS).unwrap().unwrap().1;
    let e = after.get(&map, id.to_string()).unwrap().unwrap().1;
    after.delete(&e, keys::CLOSED_AT).unwrap();
    after.commit();
    let ops = super::tests::new_ops(&mut before, &mut after);
    let refused = guard::written_once_kept(&before, &after, &ops).unwrap_err();
    assert!(
        refused.contains("deletes") && refused.contains("closed_at"),
        "{refused}"
    );
    // A corrected date is a change the rule takes.
    let mut before = case.automerge().clone();
    case.set_timeline(TimelineField::Closure, at("2026-04-02T12:00"))
        .unwrap();
    let mut after = case.automerge().clone();
    let ops = super::tests::new_ops(&mut before, &mut after);
    guard::written_once_kept(&before, &after, &ops).unwrap();
}

fn gp_referral(received: &str) -> NewReferral {
    gp(received, Urgency::Urgent)
}
