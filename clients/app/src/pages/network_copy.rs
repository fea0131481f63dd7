//! The network copy: the case in plain language, read-only and printable, to give to the person
//! and the people they chose. In Open Dialogue the record is written with the network, not about
//! them, so they get the same words the practitioners have: who is in the network, what was said in
//! each meeting, the reflections, and every decision with everyone's position in their own words.
//!
//! It leaves out what is only for the service (device names, internal ids). Entries marked entered
//! in error stay, struck through and labelled, so the copy never silently differs from the record.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::Extension;
use polyphony_core::model::view::CaseView;

use super::case::text_or_none;
use super::{case_id, participant_name, person_name, render, AppState, PageParts, PageResult};
use crate::auth::SessionCtx;
use crate::dates;
use crate::html::{esc, esc_multiline};
use crate::state::App;

fn corrected(
    app: &App,
    mark: &Option<polyphony_core::model::view::ErrorMark>,
    body: String,
) -> String {
    match mark {
        Some(m) => format!(
            r#"<div class="app-in-error"><p class="app-in-error__note">This was written by mistake and corrected{}: {}</p><s>{body}</s></div>"#,
            m.at.as_deref()
                .map(|t| format!(" on {}", dates::long_stored(t, &app.config.zone)))
                .unwrap_or_default(),
            esc(&m.reason)
        ),
        None => body,
    }
}

/// The copy's content.
pub fn render_copy(app: &App, v: &CaseView) -> String {
    let offset = &app.config.zone;
    let name = person_name(v);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<h1>What we have written with {n}</h1><p class="nhsuk-lede-text">This is a copy of {n}’s record of care with the mental health team, written in meetings with {n} and the people {n} chose. It is yours to keep. If anything in it is wrong, or missing, tell us and we will add your words.</p><p class="app-print-hint nhsuk-body-s">To print it, use your browser’s Print command (Ctrl+P, or Cmd+P on a Mac).</p>"#,
        n = esc(&name)
    );

    s.push_str("<h2>The people in the network</h2>");
    let members: Vec<_> = v.network.iter().collect();
    if members.is_empty() {
        s.push_str("<p>No one has been added yet.</p>");
    } else {
        s.push_str(r#"<ul class="nhsuk-list nhsuk-list--bullet">"#);
        for m in members {
            let left = m
                .left
                .as_deref()
                .map(|l| format!(", until {}", dates::long_date(l)))
                .unwrap_or_default();
            let body = format!("{} ({}){}", esc(&m.name), esc(&m.relationship), esc(&left));
            let _ = write!(
                s,
                "<li>{}</li>",
                corrected(app, &m.meta.entered_in_error, body)
            );
        }
        s.push_str("</ul>");
    }
    let workers: Vec<String> = v
        .care_team
        .iter()
        .filter(|c| c.meta.entered_in_error.is_none() && c.end.is_none())
        .map(|c| c.name.clone())
        .collect();
    if !workers.is_empty() {
        let _ = write!(s, "<p>From the team: {}.</p>", esc(&workers.join(", ")));
    }

    s.push_str("<h2>Meetings</h2>");
    if v.meetings.is_empty() {
        s.push_str("<p>No meetings yet.</p>");
    }
    for m in &v.meetings {
        let when =
            m.at.as_deref()
                .map(|t| dates::long_stored(t, offset))
                .unwrap_or_else(|| "Date not recorded".into());
        let who: Vec<String> = super::in_order(v, &m.attendees)
            .iter()
            .map(|a| participant_name(v, a))
            .collect();
        let mut body = format!(
            "<h3>{}</h3><p>Who was there: {}.</p><h4>What was said</h4>{}<h4>What the team reflected</h4>{}<h4>What was agreed</h4>{}",
            esc(&when),
            esc(&if who.is_empty() { "not recorded".to_string() } else { who.join(", ") }),
            text_or_none(&m.notes),
            text_or_none(&m.reflections),
            text_or_none(&m.agreed),
        );
        let added: Vec<String> = m
            .readback
            .iter()
            .filter_map(|r| {
                r.words.as_ref().map(|w| {
                    format!(
                        "<li>{} added: “{}”</li>",
                        esc(&participant_name(v, &r.participant)),
                        esc_multiline(w)
                    )
                })
            })
            .collect();
        if !added.is_empty() {
            let _ = write!(body, "<h4>Words people added when the notes were read back</h4><ul class=\"nhsuk-list\">{}</ul>", added.join(""));
        }
        if let Some(t) = &m.next_meeting {
            let _ = write!(
                body,
                "<p>Next meeting: {}.</p>",
                esc(&dates::long_stored(t, offset))
            );
        }
        s.push_str(&corrected(app, &m.meta.entered_in_error, body));
    }

    s.push_str("<h2>Decisions</h2>");
    if v.decisions.is_empty() {
        s.push_str("<p>No decisions yet.</p>");
    }
    for d in &v.decisions {
        let status = match d.status.as_str() {
            "proposed" => "still being talked about",
            "agreed" => "agreed",
            "revisited" => "being looked at again",
            "withdrawn" => "no longer going ahead",
            other => other,
        };
        let mut body = format!("<h3>{}</h3><p>This is {}.</p>", esc(&d.text), esc(status));
        if !d.positions.is_empty() {
            body.push_str(r#"<ul class="nhsuk-list">"#);
            for p in &d.positions {
                let stance = match p.stance.as_str() {
                    "agree" => "agrees",
                    "disagree" => "does not agree",
                    _ => "is not sure yet",
                };
                let words = p
                    .words
                    .as_deref()
                    .map(|w| format!(": “{}”", esc_multiline(w)))
                    .unwrap_or_default();
                let _ = write!(
                    body,
                    "<li>{} {}{}</li>",
                    esc(&participant_name(v, &p.participant)),
                    stance,
                    words
                );
            }
            body.push_str("</ul>");
        }
        let actions: Vec<String> = d
            .actions
            .iter()
            .filter(|a| a.meta.entered_in_error.is_none())
            .map(|a| {
                let who = a
                    .owner
                    .as_deref()
                    .map(|o| participant_name(v, o))
                    .unwrap_or_else(|| "someone".into());
                let due = a
                    .due
                    .as_deref()
                    .map(|x| format!(" by {}", dates::long_date(x)))
                    .unwrap_or_default();
                format!(
                    "<li>{} ({}{}){}</li>",
                    esc(&a.text),
                    esc(&who),
                    esc(&due),
                    if a.done { " (done)" } else { "" }
                )
            })
            .collect();
        if !actions.is_empty() {
            let _ = write!(
                body,
                "<p>What happens next:</p><ul class=\"nhsuk-list nhsuk-list--bullet\">{}</ul>",
                actions.join("")
            );
        }
        s.push_str(&corrected(app, &d.meta.entered_in_error, body));
    }
    let _ = write!(
        s,
        r#"<p class="nhsuk-body-s app-muted">Printed {}.</p>"#,
        esc(&dates::long(time::OffsetDateTime::now_utc(), offset))
    );
    s
}

/// `GET /case/:id/network-copy`.
pub async fn show(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
) -> PageResult {
    let case = case_id(&id)?;
    let v = app.profile().await.view(case, "network copy")?;
    let content = render_copy(&app, &v);
    let back = format!("/case/{case}");
    Ok(render(
        &app,
        &session,
        PageParts {
            title: &format!("Network copy for {}", person_name(&v)),
            back: Some((&back, "Back to the case")),
            content,
            has_errors: false,
            body_class: "app-network-copy",
        },
    )
    .await)
}
