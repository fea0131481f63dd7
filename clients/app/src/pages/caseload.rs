//! The caseload: the practitioner's cases with the next meeting, unsynced changes and conflicts
//! at a glance.

use std::fmt::Write as _;

use axum::extract::State;
use axum::response::{IntoResponse, Redirect};
use axum::Extension;
use polyphony_core::model::work::WorkItem;
use polyphony_core::profile::CaseSummary;

use super::{render, AppState, PageParts, PageResult};
use crate::auth::SessionCtx;
use crate::dates;
use crate::html::{esc, tag};
use crate::state::App;
use crate::status::SyncOverview;

/// `GET /`: the caseload, or the enrolment page on a device not yet enrolled.
pub async fn show(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
) -> PageResult {
    let (enrolled, cases, due) = {
        let mut p = app.profile().await;
        // The count is a help, not the page: a list that cannot be made is said, not fatal.
        let due = p
            .due_work(
                time::OffsetDateTime::now_utc(),
                &app.config.zone,
                app.config.unsynced_warning,
            )
            .map_err(|e| e.to_string());
        (p.enrolment().is_some(), p.cases()?, due)
    };
    if !enrolled && cases.is_empty() {
        return Ok(Redirect::to("/enrol").into_response());
    }
    let overview = app.overview().await;
    let content = render_caseload(&app, &cases, &overview, enrolled).replacen(
        "</h1>",
        &format!("</h1>{}", needs_attention(&due)),
        1,
    );
    Ok(render(
        &app,
        &session,
        PageParts {
            title: "Your caseload",
            back: None,
            content,
            has_errors: false,
            body_class: "",
        },
    )
    .await)
}

/// The caseload table.
pub fn render_caseload(
    app: &App,
    cases: &[CaseSummary],
    overview: &SyncOverview,
    enrolled: bool,
) -> String {
    let mut s = String::from(r#"<h1>Your caseload</h1>"#);
    if enrolled {
        s.push_str(r#"<a class="nhsuk-button" href="/cases/new" draggable="false" role="button" data-module="nhsuk-button">Open a new case</a>"#);
    }
    s.push_str(r#"<form method="get" action="/sync-now" class="app-inline-form"><button class="nhsuk-button nhsuk-button--secondary" type="submit">Sync now</button></form><p><a href="/figures">Team figures</a></p>"#);
    if cases.is_empty() {
        s.push_str(r#"<p>There are no cases on this device yet. Open a new case, or sync to receive your team's cases.</p>"#);
        return s;
    }
    s.push_str(r#"<table class="nhsuk-table" id="caseload"><caption class="nhsuk-table__caption">Cases on this device</caption><thead class="nhsuk-table__head"><tr><th scope="col">Person</th><th scope="col">Next meeting</th><th scope="col">Last meeting</th><th scope="col">First meeting</th><th scope="col">Sync</th><th scope="col">Conflicts</th></tr></thead><tbody class="nhsuk-table__body">"#);
    let offset = &app.config.zone;
    for c in cases {
        let sync = c
            .case_id
            .parse()
            .ok()
            .and_then(|id| overview.case(&id))
            .map(|l| l.tag())
            .unwrap_or_default();
        let conflicts = match c.conflicts {
            0 => "None".to_string(),
            1 => tag("1 to choose", "red"),
            n => tag(&format!("{n} to choose"), "red"),
        };
        let when = |t: &Option<String>| {
            t.as_deref()
                .map(|t| esc(dates::long_stored(t, offset)))
                .unwrap_or_else(|| "Not planned".into())
        };
        let _ = write!(
            s,
            r#"<tr class="nhsuk-table__row" data-case="{id}"><td class="nhsuk-table__cell"><a href="/case/{id}">{name}</a></td><td class="nhsuk-table__cell">{next}</td><td class="nhsuk-table__cell">{last}</td><td class="nhsuk-table__cell" data-first-meeting>{first}</td><td class="nhsuk-table__cell" data-sync>{sync}</td><td class="nhsuk-table__cell">{conflicts}</td></tr>"#,
            id = esc(&c.case_id),
            name = esc(&c.name),
            next = when(&c.next_meeting),
            last = if c.last_meeting.is_some() {
                when(&c.last_meeting)
            } else {
                "None yet".into()
            },
            first = first_meeting(c, offset),
        );
    }
    s.push_str("</tbody></table>");
    s
}

/// The first network meeting of the case's open episode while none is held: the time left, or
/// flagged past due; the urgency beside it. Once held, when; for an episode closed with none,
/// that.
fn first_meeting(c: &CaseSummary, zone: &polyphony_core::model::LocalZone) -> String {
    let Some(due) = c.first_meeting_due.as_deref().and_then(|d| {
        time::OffsetDateTime::parse(d, &time::format_description::well_known::Rfc3339).ok()
    }) else {
        return match (&c.first_meeting, c.episode_closed) {
            (Some(t), _) => format!("Held {}", esc(dates::long_stored(t, zone))),
            (None, true) => "None held: the episode is closed".into(),
            // A case that could not be opened: nothing can be said.
            (None, false) => "Not known".into(),
        };
    };
    let (left, past) =
        polyphony_core::model::referrals::time_left(due, time::OffsetDateTime::now_utc());
    let urgency = c
        .urgency
        .as_deref()
        .map(|u| format!(", {}", esc(u.to_lowercase())))
        .unwrap_or_default();
    let by = esc(dates::long_stored(
        c.first_meeting_due.as_deref().unwrap_or_default(),
        zone,
    ));
    if past {
        format!(
            "{} {}{urgency}<br><span class=\"nhsuk-body-s\">Due by {by}</span>",
            tag("Past due", "red"),
            esc(left)
        )
    } else {
        format!(
            "{}{urgency}<br><span class=\"nhsuk-body-s\">Due by {by}</span>",
            esc(left)
        )
    }
}

/// The link to the morning list ([`super::today`]), with how much is waiting and how much of it
/// is the practitioner's; or, when the list could not be made, why.
pub fn needs_attention(due: &Result<Vec<WorkItem>, String>) -> String {
    let due = match due {
        Ok(due) => due,
        Err(e) => {
            return format!(
                r#"<div class="nhsuk-warning-callout" id="needs-attention"><h2 class="nhsuk-warning-callout__label"><span role="text"><span class="nhsuk-u-visually-hidden">Important: </span>Needs attention</span></h2><p>The list of what needs attention could not be made: {}</p></div>"#,
                esc(e)
            )
        }
    };
    let mine = due.iter().filter(|i| i.mine).count();
    let words = match (due.len(), mine) {
        (0, _) => "Nothing is overdue or due today".to_string(),
        (1, 1) => "1 thing needs attention, and it is yours".to_string(),
        (1, _) => "1 thing needs attention".to_string(),
        (n, m) => format!("{n} things need attention, {m} of them yours"),
    };
    format!(
        r#"<div class="nhsuk-inset-text" id="needs-attention"><span class="nhsuk-u-visually-hidden">Information: </span><p>{} <a href="/today">See what needs attention</a></p></div>"#,
        esc(words)
    )
}

/// `GET /sync-now`: try to reach the server now. A GET because it changes nothing in the record
/// and must work from any page; it only wakes the background sync.
pub async fn sync_now(State(app): State<AppState>) -> impl IntoResponse {
    app.sync.try_now();
    Redirect::to("/")
}

#[cfg(test)]
mod tests {
    use super::needs_attention;

    /// A list that cannot be made is said on the caseload, which is shown all the same.
    #[test]
    fn a_list_that_cannot_be_made_is_said_not_fatal() {
        let html = needs_attention(&Err("the store <failed>".into()));
        assert!(html.contains(
            "The list of what needs attention could not be made: the store &lt;failed&gt;"
        ));
        assert!(needs_attention(&Ok(vec![])).contains("Nothing is overdue or due today"));
    }
}
