//! `GET /today`: what needs attention this morning, across the caseload. Actions overdue or due
//! today, planned meetings awaiting an outcome, and cases whose changes have been only on this
//! device for longer than the warning (`Profile::due_work`, the same list `polyphony today`
//! prints), cases whose crisis plan is due for review, and cases that could not be opened.
//!
//! Showing an action's text is an access to its case: each case with an action shown is
//! recorded as read ("needs attention list"), as every other page that shows a case's content.
//!
//! Sorting and the "Mine only" filter are query parameters set by plain links and a GET form:
//! the app's policy allows no inline script, and a bookmark keeps the view it was made on.

use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::Extension;
use polyphony_core::model::work::{sort_work, WorkItem, WorkKind, WorkOrder};
use serde::Deserialize;
use time::OffsetDateTime;

use super::{render, AppState, PageParts, PageResult};
use crate::auth::SessionCtx;
use crate::dates;
use crate::html::{esc, tag};
use crate::state::App;

/// The page's query: `sort` (`due`, `person` or `kind`; anything else is `due`) and `mine`
/// (`1`: only the practitioner's own work).
#[derive(Debug, Default, Deserialize)]
pub struct TodayQuery {
    sort: Option<String>,
    mine: Option<String>,
}

/// `GET /today`.
pub async fn show(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Query(q): Query<TodayQuery>,
) -> PageResult {
    let order: WorkOrder = q
        .sort
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    let mine = q.mine.as_deref() == Some("1");
    let now = OffsetDateTime::now_utc();
    let listed = {
        let mut p = app.profile().await;
        p.due_work(now, &app.config.zone, app.config.unsynced_warning)
            .and_then(|mut items| {
                if mine {
                    items.retain(|i| i.mine);
                }
                // What is shown is recorded as read before it is shown.
                p.record_work_reads(&items)?;
                Ok(items)
            })
    };
    let content = match listed {
        Ok(mut items) => {
            sort_work(&mut items, order);
            render_today(&app, &items, order, mine, now)
        }
        Err(e) => format!(
            r#"<h1>Needs attention</h1><div class="nhsuk-error-summary" id="today-error" tabindex="-1"><h2 class="nhsuk-error-summary__title">The list of what needs attention could not be made</h2><div class="nhsuk-error-summary__body"><p>{}</p></div></div>"#,
            esc(e.to_string())
        ),
    };
    Ok(render(
        &app,
        &session,
        PageParts {
            title: "Needs attention",
            back: Some(("/", "Back to your caseload")),
            content,
            has_errors: false,
            body_class: "",
        },
    )
    .await)
}

const ORDERS: [(WorkOrder, &str, &str); 3] = [
    (WorkOrder::Due, "due", "most overdue"),
    (WorkOrder::Person, "person", "person"),
    (WorkOrder::Kind, "kind", "kind"),
];

/// The page's content: the filter, the sort links and the table.
pub fn render_today(
    app: &App,
    items: &[WorkItem],
    order: WorkOrder,
    mine: bool,
    now: OffsetDateTime,
) -> String {
    let zone = &app.config.zone;
    let mut s = format!(
        r#"<h1>Needs attention</h1><p>Actions overdue or due today, meetings waiting for someone to say whether they took place, crisis plans due for review, and changes only on this device for longer than {warning}. Today is {today} ({label}).</p>"#,
        warning = esc(dates::duration_words(app.config.unsynced_warning)),
        today = esc(zone.long_date(now)),
        label = esc(zone.label()),
    );
    let sort_value = ORDERS
        .iter()
        .find(|(o, _, _)| *o == order)
        .map_or("due", |(_, v, _)| v);
    let _ = write!(
        s,
        r#"<form method="get" action="/today" class="app-inline-form" id="today-filter"><input type="hidden" name="sort" value="{sort}"><div class="nhsuk-form-group"><div class="nhsuk-checkboxes"><div class="nhsuk-checkboxes__item"><input class="nhsuk-checkboxes__input" id="mine" name="mine" type="checkbox" value="1"{checked}><label class="nhsuk-label nhsuk-checkboxes__label" for="mine">Mine only</label></div></div></div><button class="nhsuk-button nhsuk-button--secondary" data-module="nhsuk-button" type="submit">Show</button></form>"#,
        sort = esc(sort_value),
        checked = if mine { " checked" } else { "" },
    );
    s.push_str(r#"<nav aria-label="Sort the list"><p id="today-sort">Sort by: "#);
    for (i, (o, value, words)) in ORDERS.iter().enumerate() {
        if i > 0 {
            s.push_str(" | ");
        }
        if *o == order {
            let _ = write!(s, r#"<strong aria-current="true">{}</strong>"#, esc(words));
        } else {
            let mine_q = if mine { "&amp;mine=1" } else { "" };
            let _ = write!(
                s,
                r#"<a href="/today?sort={value}{mine_q}">{}</a>"#,
                esc(words)
            );
        }
    }
    s.push_str("</p></nav>");
    if items.is_empty() {
        let whose = if mine { " of yours" } else { "" };
        let _ = write!(
            s,
            r#"<p id="today-empty">Nothing{whose} is overdue or due today on this device.</p>"#
        );
        return s;
    }
    s.push_str(r#"<table class="nhsuk-table" id="today"><caption class="nhsuk-table__caption">Work that needs attention</caption><thead class="nhsuk-table__head"><tr><th scope="col">Person</th><th scope="col">Kind</th><th scope="col">What</th><th scope="col">When</th><th scope="col">Owner</th></tr></thead><tbody class="nhsuk-table__body">"#);
    for i in items {
        let _ = write!(
            s,
            r#"<tr class="nhsuk-table__row" data-kind="{kind}" data-mine="{mine}"><td class="nhsuk-table__cell"><a href="/case/{case}">{person}</a></td><td class="nhsuk-table__cell">{tag}</td><td class="nhsuk-table__cell"><a href="{href}">{text}</a>{flags}</td><td class="nhsuk-table__cell">{when}</td><td class="nhsuk-table__cell">{owner}</td></tr>"#,
            kind = kind_value(i.kind),
            mine = i.mine,
            case = esc(&i.case_id),
            person = esc(if i.person.is_empty() {
                &i.case_id
            } else {
                &i.person
            }),
            tag = kind_tag(i),
            href = esc(href(i)),
            text = esc(if i.text.is_empty() {
                "(no text)"
            } else {
                &i.text
            }),
            flags = flags(i),
            when = esc(when(app, i)),
            owner = owner(i),
        );
    }
    s.push_str("</tbody></table>");
    s
}

fn kind_value(k: WorkKind) -> &'static str {
    match k {
        WorkKind::FirstMeeting => "first_meeting",
        WorkKind::Overdue => "overdue",
        WorkKind::DueToday => "due_today",
        WorkKind::AwaitsOutcome => "awaits_outcome",
        WorkKind::ReviewDue => "review_due",
        WorkKind::Unsynced => "unsynced",
        WorkKind::Unreadable => "unreadable",
    }
}

fn kind_tag(i: &WorkItem) -> String {
    let colour = match i.kind {
        // Past its due time, red; due later today, orange.
        WorkKind::FirstMeeting => {
            let due = i.at.as_deref().and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            });
            if due.is_none_or(|d| d < time::OffsetDateTime::now_utc()) {
                "red"
            } else {
                "orange"
            }
        }
        WorkKind::Overdue | WorkKind::Unsynced | WorkKind::Unreadable => "red",
        WorkKind::DueToday => "orange",
        WorkKind::AwaitsOutcome | WorkKind::ReviewDue => "yellow",
    };
    tag(i.kind_words(), colour)
}

/// What else to know about an item: values in conflict (with a link to pick), a withdrawn
/// decision, a due date that did not read.
fn flags(i: &WorkItem) -> String {
    let mut s = String::new();
    if i.conflict {
        let _ = write!(
            s,
            r#"<br><strong class="app-flag">Values conflict:</strong> <a href="/case/{}/conflicts">choose which is right</a>"#,
            esc(&i.case_id)
        );
    }
    if i.decision_withdrawn {
        s.push_str(" <span class=\"app-flag\">(decision withdrawn)</span>");
    }
    if i.due_unreadable {
        s.push_str("<br><span class=\"app-flag\">The due date could not be read.</span>");
    }
    s
}

/// Where the work is done: the action's decision, the meeting, or the case.
fn href(i: &WorkItem) -> String {
    match (i.kind, i.decision, i.entry) {
        (WorkKind::Overdue | WorkKind::DueToday, Some(d), _) => {
            format!("/case/{}/decision/{d}", i.case_id)
        }
        (WorkKind::AwaitsOutcome, _, Some(m)) => format!("/case/{}/meeting/{m}", i.case_id),
        (WorkKind::ReviewDue, _, _) => format!("/case/{}#crisis-plan", i.case_id),
        (WorkKind::FirstMeeting, _, _) => format!("/case/{}/meetings/new", i.case_id),
        _ => format!("/case/{}", i.case_id),
    }
}

fn late(days: i64) -> String {
    match days {
        0 => String::new(),
        1 => " (1 day ago)".into(),
        n => format!(" ({n} days ago)"),
    }
}

fn when(app: &App, i: &WorkItem) -> String {
    let zone = &app.config.zone;
    match (&i.due, &i.at) {
        (Some(d), _) if i.due_unreadable => format!("Due date as written: {d}"),
        (Some(d), _) => format!("Due {}{}", dates::long_date(d), late(i.days_overdue)),
        (None, Some(t)) if i.kind == WorkKind::Unsynced => {
            format!("Since {}", dates::long_stored(t, zone))
        }
        (None, Some(t)) if i.kind == WorkKind::FirstMeeting => {
            format!("Due by {}", dates::long_stored(t, zone))
        }
        (None, Some(t)) => format!(
            "Planned for {}{}",
            dates::long_stored(t, zone),
            late(i.days_overdue)
        ),
        (None, None) => String::new(),
    }
}

fn owner(i: &WorkItem) -> String {
    let name = esc(i.owner_name.as_deref().unwrap_or(""));
    if i.mine {
        format!("{name} {}", tag("Yours", "blue"))
    } else {
        name
    }
}
