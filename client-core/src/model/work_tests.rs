//! The morning list's rules, at their boundaries: UK midnight, the clocks changing, and every way
//! an entry stops being work (done, entered in error, withheld, a state a newer schema wrote).

use proptest::prelude::*;

use super::*;
use crate::model::view::{
    AuthorView, CareTeamView, EntryMeta, ErrorMark, PersonView, TimelineView,
};
use crate::model::ErrorKind;

fn utc(s: &str) -> Instant {
    Instant::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
}

fn meta() -> EntryMeta {
    EntryMeta {
        id: EntryId::random(),
        created_at: None,
        created_by: None,
        entered_in_error: None,
    }
}

fn mark(kind: ErrorKind) -> Option<ErrorMark> {
    Some(ErrorMark {
        kind: Stored::Known(kind),
        reason: "test".into(),
        by: None,
        at: None,
    })
}

fn case() -> CaseView {
    CaseView {
        case_id: crate::CaseId::random().to_string(),
        team_id: String::new(),
        created_at: None,
        created_by: None,
        person: PersonView {
            name: "Ana Example".into(),
            ..PersonView::default()
        },
        network: vec![],
        care_team: vec![],
        timeline: TimelineView::default(),
        meetings: vec![],
        decisions: vec![],
        conflicts: vec![],
        crisis_plan: Default::default(),
        team_notes: vec![],
        attachments: vec![],
        referrals: vec![],
        episodes: vec![],
    }
}

fn action(text: &str, due: &str, owner: Option<Participant>) -> ActionView {
    ActionView {
        meta: meta(),
        text: text.into(),
        owner: owner.map(Stored::Known),
        due: Some(due.into()),
        done: false,
    }
}

fn decision(actions: Vec<ActionView>) -> DecisionView {
    DecisionView {
        meta: meta(),
        text: "A decision".into(),
        proposed_by: None,
        status: Stored::Known(DecisionStatus::Agreed),
        status_history: vec![],
        positions: vec![],
        actions,
        agreed_without_person: false,
    }
}

fn meeting(at: &str, state: Stored<MeetingState>) -> MeetingView {
    MeetingView {
        meta: meta(),
        at: Some(at.into()),
        place: Stored::Missing,
        attendees: vec![],
        notes: String::new(),
        reflections: String::new(),
        agreed: String::new(),
        next_meeting: None,
        readback: vec![],
        state,
        person_present: false,
        changed_after_readback: vec![],
        staff: vec![],
    }
}

fn with_actions(actions: Vec<ActionView>) -> CaseView {
    let mut v = case();
    v.decisions.push(decision(actions));
    v
}

/// The kinds listed for the case at `now`, by action text.
fn kinds(v: &CaseView, now: &str) -> Vec<(String, WorkKind, i64)> {
    let mut items = due_work(v, None, &LocalZone::uk(), utc(now));
    sort_work(&mut items, WorkOrder::Due);
    items
        .into_iter()
        .map(|i| (i.text, i.kind, i.days_overdue))
        .collect()
}

#[test]
fn yesterday_is_overdue_today_is_due_today_and_tomorrow_is_not_listed() {
    let v = with_actions(vec![
        action("call GP", "2026-01-14", None),
        action("write letter", "2026-01-15", None),
        action("book room", "2026-01-16", None),
    ]);
    assert_eq!(
        kinds(&v, "2026-01-15T09:00:00Z"),
        vec![
            ("call GP".to_string(), WorkKind::Overdue, 1),
            ("write letter".to_string(), WorkKind::DueToday, 0),
        ]
    );
}

#[test]
fn in_summer_an_action_due_yesterday_is_overdue_from_uk_midnight_not_utc_midnight() {
    let v = with_actions(vec![action("call GP", "2026-07-01", None)]);
    // 23:59 UK time on 1 July: still due today.
    assert_eq!(
        kinds(&v, "2026-07-01T22:59:00Z"),
        vec![("call GP".to_string(), WorkKind::DueToday, 0)]
    );
    // 00:30 UK time on 2 July, while UTC is still on 1 July: overdue.
    assert_eq!(
        kinds(&v, "2026-07-01T23:30:00Z"),
        vec![("call GP".to_string(), WorkKind::Overdue, 1)]
    );
}

#[test]
fn in_winter_uk_midnight_is_utc_midnight() {
    let v = with_actions(vec![action("call GP", "2026-12-01", None)]);
    assert_eq!(
        kinds(&v, "2026-12-01T23:59:00Z"),
        vec![("call GP".to_string(), WorkKind::DueToday, 0)]
    );
    assert_eq!(
        kinds(&v, "2026-12-02T00:00:00Z"),
        vec![("call GP".to_string(), WorkKind::Overdue, 1)]
    );
}

#[test]
fn days_overdue_are_calendar_days_across_the_clocks_going_forward_and_back() {
    // The day the clocks go forward (29 March 2026) has 23 hours, the day they go back (25
    // October 2026) 25: neither counts as more or less than one day.
    let spring = with_actions(vec![action("call GP", "2026-03-28", None)]);
    assert_eq!(
        kinds(&spring, "2026-03-29T23:30:00Z"),
        vec![("call GP".to_string(), WorkKind::Overdue, 2)]
    );
    // 00:30 BST on 30 March is 23:30 UTC on 29 March.
    assert_eq!(
        kinds(&spring, "2026-03-29T22:59:00Z"),
        vec![("call GP".to_string(), WorkKind::Overdue, 1)]
    );
    let autumn = with_actions(vec![action("call GP", "2026-10-25", None)]);
    // 23:30 GMT on 25 October (after the clocks went back): still due today.
    assert_eq!(
        kinds(&autumn, "2026-10-25T23:30:00Z"),
        vec![("call GP".to_string(), WorkKind::DueToday, 0)]
    );
    // 23:30 UTC on 24 October is 00:30 BST on 25 October: due today, not tomorrow.
    assert_eq!(
        kinds(&autumn, "2026-10-24T23:30:00Z"),
        vec![("call GP".to_string(), WorkKind::DueToday, 0)]
    );
}

#[test]
fn done_actions_actions_in_error_and_undated_actions_are_not_listed_and_a_garbled_date_is_listed_as_unreadable(
) {
    let mut done = action("done", "2026-01-01", None);
    done.done = true;
    let mut mistake = action("mistake", "2026-01-01", None);
    mistake.meta.entered_in_error = mark(ErrorKind::Mistake);
    let mut undated = action("undated", "2026-01-01", None);
    undated.due = None;
    let mut garbled = action("garbled", "2026-01-01", None);
    garbled.due = Some("soon".into());
    let v = with_actions(vec![
        done,
        mistake,
        undated,
        garbled,
        action("still", "2026-01-01", None),
    ]);
    assert_eq!(
        kinds(&v, "2026-01-15T09:00:00Z"),
        vec![
            ("still".to_string(), WorkKind::Overdue, 14),
            ("garbled".to_string(), WorkKind::DueToday, 0),
        ]
    );
    let items = due_work(&v, None, &LocalZone::uk(), utc("2026-01-15T09:00:00Z"));
    let garbled = items.iter().find(|i| i.text == "garbled").unwrap();
    assert!(garbled.due_unreadable);
    assert_eq!(garbled.due.as_deref(), Some("soon"));
    assert_eq!(garbled.kind_words(), "Due date unreadable");
    assert!(garbled.flags().contains(&"due date could not be read"));
}

#[test]
fn actions_inside_a_decision_in_error_or_withheld_are_not_listed_and_a_withdrawn_ones_are_marked() {
    let mut v = case();
    let mut mistaken = decision(vec![action("of a mistake", "2026-01-01", None)]);
    mistaken.meta.entered_in_error = mark(ErrorKind::Mistake);
    let mut withdrawn = decision(vec![action("of a withdrawn one", "2026-01-01", None)]);
    withdrawn.status = Stored::Known(DecisionStatus::Withdrawn);
    v.decisions = vec![mistaken, withdrawn];
    // A decision recorded on the wrong person's record, as the view gives it: its content empty,
    // its mark kept. Even an action left in it by a mistake here must not show.
    let mut wrong = decision(vec![action("another person's", "2026-01-01", None)]);
    wrong.meta.entered_in_error = mark(ErrorKind::WrongPerson);
    v.decisions.push(wrong);
    let items = due_work(&v, None, &LocalZone::uk(), utc("2026-01-15T09:00:00Z"));
    let listed: Vec<(&str, bool)> = items
        .iter()
        .map(|i| (i.text.as_str(), i.decision_withdrawn))
        .collect();
    assert_eq!(listed, vec![("of a withdrawn one", true)]);
    assert!(items[0].flags().contains(&"decision withdrawn"));
}

/// The field path the case's conflicts name an action's field by.
fn action_field(d: &DecisionView, a: &ActionView, key: &str) -> String {
    format!("decisions.{}.actions.{}.{key}", d.meta.id, a.meta.id)
}

fn conflict(field: String, values: &[&str]) -> super::super::Conflict {
    super::super::Conflict {
        field,
        values: values
            .iter()
            .enumerate()
            .map(|(i, v)| super::super::ConflictValue {
                pick: i + 1,
                value: (*v).into(),
                author: None,
                at: None,
            })
            .collect(),
    }
}

#[test]
fn an_action_whose_done_or_due_conflicts_is_open_due_on_the_earliest_date_and_says_so() {
    let mut done = action("done on one device", "2026-01-10", None);
    done.done = true;
    let dated = action("two dates", "2026-01-20", None);
    let plain = action("plain", "2026-01-20", None);
    let mut v = with_actions(vec![done, dated, plain]);
    let d = &v.decisions[0];
    v.conflicts = vec![
        conflict(action_field(d, &d.actions[0], "done"), &["yes", "no"]),
        conflict(
            action_field(d, &d.actions[1], "due"),
            &["2026-01-20", "2026-01-12", "(cleared)"],
        ),
    ];
    let items = due_work(&v, None, &LocalZone::uk(), utc("2026-01-15T09:00:00Z"));
    let listed: Vec<(&str, Option<&str>, bool)> = items
        .iter()
        .map(|i| (i.text.as_str(), i.due.as_deref(), i.conflict))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("done on one device", Some("2026-01-10"), true),
            ("two dates", Some("2026-01-12"), true),
        ]
    );
    assert_eq!(items[1].days_overdue, 3);
    assert!(items[0].flags().contains(&"values conflict"));
}

#[test]
fn an_action_withheld_inside_a_live_decision_is_not_listed() {
    let mut withheld = action("another person's", "2026-01-01", None);
    withheld.meta.entered_in_error = Some(ErrorMark {
        kind: Stored::Unknown("newer_kind".into()),
        reason: String::new(),
        by: None,
        at: None,
    });
    assert!(withheld.meta.withheld());
    let v = with_actions(vec![withheld]);
    assert_eq!(kinds(&v, "2026-01-15T09:00:00Z"), vec![]);
}

#[test]
fn a_planned_meeting_awaits_its_outcome_once_its_time_has_passed() {
    let mut v = case();
    v.meetings = vec![
        meeting("2026-01-14T10:00:00Z", Stored::Known(MeetingState::Planned)),
        meeting("2026-01-15T10:00:00Z", Stored::Known(MeetingState::Planned)),
        meeting("2026-01-16T10:00:00Z", Stored::Known(MeetingState::Planned)),
        meeting("2026-01-13T10:00:00Z", Stored::Known(MeetingState::Held)),
        meeting(
            "2026-01-13T10:00:00Z",
            Stored::Known(MeetingState::Cancelled),
        ),
        meeting(
            "2026-01-13T10:00:00Z",
            Stored::Known(MeetingState::DidNotAttend),
        ),
        // A state a newer schema wrote is not "planned": this code cannot say it waits.
        meeting("2026-01-13T10:00:00Z", Stored::Unknown("postponed".into())),
    ];
    let days: Vec<(WorkKind, i64)> = kinds(&v, "2026-01-15T10:00:00Z")
        .into_iter()
        .map(|(_, k, d)| (k, d))
        .collect();
    assert_eq!(
        days,
        vec![(WorkKind::AwaitsOutcome, 1), (WorkKind::AwaitsOutcome, 0)],
        "yesterday's and the one at this very minute; not tomorrow's, nor any with an outcome"
    );
}

#[test]
fn a_meeting_in_error_or_withheld_does_not_await_an_outcome() {
    let mut v = case();
    let mut mistake = meeting("2026-01-14T10:00:00Z", Stored::Known(MeetingState::Planned));
    mistake.meta.entered_in_error = mark(ErrorKind::Mistake);
    // Withheld, as the view gives it: no time, the state kept.
    let mut wrong = meeting("2026-01-14T10:00:00Z", Stored::Known(MeetingState::Planned));
    wrong.at = None;
    wrong.meta.entered_in_error = mark(ErrorKind::WrongPerson);
    assert!(!mistake.awaits_outcome(utc("2026-01-15T10:00:00Z")));
    assert!(!wrong.awaits_outcome(utc("2026-01-15T10:00:00Z")));
    v.meetings = vec![mistake, wrong];
    assert_eq!(kinds(&v, "2026-01-15T10:00:00Z"), vec![]);
}

fn team_member(p: PractitionerId, end: Option<&str>) -> CareTeamView {
    CareTeamView {
        meta: meta(),
        practitioner: Stored::Known(p),
        name: "Someone".into(),
        role: Stored::Known(crate::model::CareRole::Practitioner),
        start: None,
        end: end.map(str::to_string),
    }
}

/// Which of the case's items are mine, by text (meetings by their time).
fn mine_of(v: &CaseView, me: PractitionerId) -> Vec<String> {
    let mut items = due_work(v, Some(me), &LocalZone::uk(), utc("2026-01-15T09:00:00Z"));
    sort_work(&mut items, WorkOrder::Due);
    items
        .into_iter()
        .filter(|i| i.mine)
        .map(|i| i.at.unwrap_or(i.text))
        .collect()
}

#[test]
fn an_action_is_mine_if_i_own_it_or_its_owner_is_not_in_the_current_team_and_i_am() {
    let me = PractitionerId::random();
    let colleague = PractitionerId::random();
    let left = PractitionerId::random();
    let actions = || {
        vec![
            action("a mine", "2026-01-01", Some(Participant::Practitioner(me))),
            action(
                "b colleague's",
                "2026-01-02",
                Some(Participant::Practitioner(colleague)),
            ),
            action("c the person's", "2026-01-03", Some(Participant::Person)),
            action(
                "d a member's",
                "2026-01-04",
                Some(Participant::Member(EntryId::random())),
            ),
            action("e nobody's", "2026-01-05", None),
            action(
                "f left",
                "2026-01-06",
                Some(Participant::Practitioner(left)),
            ),
        ]
    };
    let mut v = with_actions(actions());
    let mut in_error = team_member(colleague, None);
    in_error.meta.entered_in_error = mark(ErrorKind::Mistake);
    v.care_team = vec![
        team_member(me, None),
        team_member(colleague, None),
        team_member(left, Some("2026-01-01")),
    ];
    assert_eq!(
        mine_of(&v, me),
        [
            "a mine",
            "c the person's",
            "d a member's",
            "e nobody's",
            "f left"
        ],
        "mine, and every one whose owner is not in the current team"
    );
    // Not in the current team myself (ended, or entered in error): only what I own.
    v.care_team = vec![
        team_member(me, Some("2026-01-01")),
        team_member(colleague, None),
    ];
    assert_eq!(mine_of(&v, me), ["a mine"]);
    let mut me_in_error = team_member(me, None);
    me_in_error.meta.entered_in_error = mark(ErrorKind::Mistake);
    v.care_team = vec![me_in_error, team_member(colleague, None)];
    assert_eq!(mine_of(&v, me), ["a mine"]);
    // A colleague whose membership was entered in error is not in the team: theirs is mine.
    v.care_team = vec![team_member(me, None), in_error];
    assert_eq!(
        mine_of(&v, me),
        [
            "a mine",
            "b colleague's",
            "c the person's",
            "d a member's",
            "e nobody's",
            "f left"
        ]
    );
    // Without a practitioner nothing is anyone's.
    let nobody = due_work(&v, None, &LocalZone::uk(), utc("2026-01-15T09:00:00Z"));
    assert!(nobody.iter().all(|i| !i.mine));
}

#[test]
fn a_meeting_is_mine_if_i_attended_or_recorded_it_or_no_one_in_the_current_team_attends_and_i_am_in_it(
) {
    let me = PractitionerId::random();
    let colleague = PractitionerId::random();
    let left = PractitionerId::random();
    let planned = |at: &str| meeting(at, Stored::Known(MeetingState::Planned));
    let mut attended = planned("2026-01-02T10:00:00Z");
    attended.attendees = vec![
        Stored::Known(Participant::Practitioner(me)),
        Stored::Known(Participant::Practitioner(colleague)),
    ];
    let mut recorded = planned("2026-01-03T10:00:00Z");
    recorded.attendees = vec![Stored::Known(Participant::Practitioner(colleague))];
    recorded.meta.created_by = Some(AuthorView {
        practitioner: me.to_string(),
        practitioner_name: "Me".into(),
        device: String::new(),
    });
    let mut theirs = planned("2026-01-04T10:00:00Z");
    theirs.attendees = vec![Stored::Known(Participant::Practitioner(colleague))];
    // Created by a colleague, with nobody attending: a meeting of the team's, so mine.
    let mut no_one = planned("2026-01-05T10:00:00Z");
    no_one.meta.created_by = Some(AuthorView {
        practitioner: colleague.to_string(),
        practitioner_name: "Kim".into(),
        device: String::new(),
    });
    let mut only_the_network = planned("2026-01-06T10:00:00Z");
    only_the_network.attendees = vec![
        Stored::Known(Participant::Person),
        Stored::Known(Participant::Practitioner(left)),
    ];
    let mut v = case();
    v.meetings = vec![attended, recorded, theirs, no_one, only_the_network];
    v.care_team = vec![
        team_member(me, None),
        team_member(colleague, None),
        team_member(left, Some("2026-01-01")),
    ];
    assert_eq!(
        mine_of(&v, me),
        [
            "2026-01-02T10:00:00Z",
            "2026-01-03T10:00:00Z",
            "2026-01-05T10:00:00Z",
            "2026-01-06T10:00:00Z"
        ]
    );
    // Not in the team: only the ones I attended or recorded.
    v.care_team = vec![team_member(colleague, None)];
    assert_eq!(
        mine_of(&v, me),
        ["2026-01-02T10:00:00Z", "2026-01-03T10:00:00Z"]
    );
}

#[test]
fn sorting_by_person_ignores_letter_case_and_breaks_ties_by_case() {
    let mut a = with_actions(vec![action("a", "2026-01-10", None)]);
    a.person.name = "ben".into();
    let mut b = with_actions(vec![action("b", "2026-01-12", None)]);
    b.person.name = "Anna".into();
    let mut c = with_actions(vec![action("c", "2026-01-14", None)]);
    c.person.name = "Ben".into();
    let now = utc("2026-01-15T09:00:00Z");
    let mut items = due_work(&a, None, &LocalZone::uk(), now);
    items.extend(due_work(&b, None, &LocalZone::uk(), now));
    items.extend(due_work(&c, None, &LocalZone::uk(), now));
    sort_work(&mut items, WorkOrder::Person);
    let people: Vec<&str> = items.iter().map(|i| i.person.as_str()).collect();
    assert_eq!(people, ["Anna", "Ben", "ben"]);
    // Two people of the same name: by case id, not by how overdue.
    for i in &mut items {
        i.person = "Same".into();
    }
    sort_work(&mut items, WorkOrder::Person);
    let mut ids: Vec<String> = items.iter().map(|i| i.case_id.clone()).collect();
    let listed = ids.clone();
    ids.sort();
    assert_eq!(listed, ids);
}

#[test]
fn an_item_says_where_it_is_and_its_kind_serialises_snake_case() {
    let v = with_actions(vec![action("call GP", "2026-01-15", None)]);
    let items = due_work(&v, None, &LocalZone::uk(), utc("2026-01-15T09:00:00Z"));
    let item = &items[0];
    assert_eq!(item.case_id, v.case_id);
    assert_eq!(item.person, "Ana Example");
    assert_eq!(item.entry, Some(v.decisions[0].actions[0].meta.id));
    assert_eq!(item.decision, Some(v.decisions[0].meta.id));
    assert_eq!(item.due.as_deref(), Some("2026-01-15"));
    let json = serde_json::to_value(item).unwrap();
    assert_eq!(json["kind"], "due_today");
    assert_eq!(
        serde_json::to_value(WorkKind::AwaitsOutcome).unwrap(),
        "awaits_outcome"
    );
}

#[test]
fn sorting_by_due_person_and_kind() {
    let mut a = with_actions(vec![
        action("a1", "2026-01-10", None),
        action("a2", "2026-01-15", None),
    ]);
    a.person.name = "Zoe".into();
    let mut b = with_actions(vec![action("b1", "2026-01-12", None)]);
    b.person.name = "Ben".into();
    let now = utc("2026-01-15T09:00:00Z");
    let mut items = due_work(&a, None, &LocalZone::uk(), now);
    items.extend(due_work(&b, None, &LocalZone::uk(), now));
    let texts = |items: &[WorkItem]| items.iter().map(|i| i.text.clone()).collect::<Vec<_>>();
    sort_work(&mut items, WorkOrder::Due);
    assert_eq!(texts(&items), ["a1", "b1", "a2"]);
    sort_work(&mut items, WorkOrder::Person);
    assert_eq!(texts(&items), ["b1", "a1", "a2"]);
    sort_work(&mut items, WorkOrder::Kind);
    assert_eq!(texts(&items), ["a1", "b1", "a2"]);
    assert_eq!("person".parse::<WorkOrder>().unwrap(), WorkOrder::Person);
    assert!("age".parse::<WorkOrder>().is_err());
}

/// The plan's review is listed from its date on (UK calendar), with the days since, as the
/// care team's work; the newest review date set counts; a date that does not read is listed.
#[test]
fn the_crisis_plan_review_is_listed_once_its_date_has_come() {
    let me = PractitionerId::random();
    let mut v = case();
    assert!(reviews_due(&v, Some(me), utc("2026-01-15T09:00:00Z").date()).is_empty());
    v.crisis_plan.review_on = Some("2026-01-15".into());
    // 23:30 UTC on the 14th is still the 14th in winter: not yet.
    let items = due_work(&v, Some(me), &LocalZone::uk(), utc("2026-01-14T23:30:00Z"));
    assert!(!items.iter().any(|i| i.kind == WorkKind::ReviewDue));
    let items = due_work(&v, Some(me), &LocalZone::uk(), utc("2026-01-17T09:00:00Z"));
    let review = items
        .iter()
        .find(|i| i.kind == WorkKind::ReviewDue)
        .expect("the review is due");
    assert_eq!(review.days_overdue, 2);
    assert_eq!(review.due.as_deref(), Some("2026-01-15"));
    assert!(!review.shows_case_text());
    assert_eq!(review.kind_words(), "Review due");
    // In summer, 23:30 UTC on the 14th is 00:30 on the 15th in the UK: due already.
    v.crisis_plan.review_on = Some("2026-07-15".into());
    let items = due_work(&v, Some(me), &LocalZone::uk(), utc("2026-07-14T23:30:00Z"));
    let review = items.iter().find(|i| i.kind == WorkKind::ReviewDue);
    assert_eq!(
        review.map(|r| r.days_overdue),
        Some(0),
        "due on the UK date"
    );
    v.crisis_plan.review_on = Some("in the spring".into());
    let r = reviews_due(&v, Some(me), utc("2026-01-17T09:00:00Z").date());
    assert!(r[0].due_unreadable, "listed, not dropped");
}

proptest! {
    /// For any due date and any instant, an open action is listed exactly when its date is on or
    /// before the UK date then, as overdue exactly when before, with the days between.
    #[test]
    fn listed_exactly_when_due_on_the_uk_calendar(
        due_day in 0i64..800,
        now_secs in 0i64..(800 * 86_400),
    ) {
        let base = utc("2026-01-01T00:00:00Z");
        let due = (base + time::Duration::days(due_day)).date();
        let now = base + time::Duration::seconds(now_secs);
        let today = LocalZone::uk().date(now);
        let v = with_actions(vec![action("x", &crate::model::format_date(due), None)]);
        let items = due_work(&v, None, &LocalZone::uk(), now);
        prop_assert_eq!(items.len(), usize::from(due <= today));
        if let Some(i) = items.first() {
            prop_assert_eq!(i.kind == WorkKind::Overdue, due < today);
            prop_assert_eq!(i.days_overdue, (today - due).whole_days());
        }
    }
}
