//! Conflicts: where two devices set the same detail at the same time, both values are kept. This
//! page shows each with who wrote it and when, and records the practitioner's choice as a change of
//! its own.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::{Extension, Form};
use polyphony_core::model::view::CaseView;
use polyphony_core::model::Conflict;

use super::{
    by_line, case_id, done, field_error, render, AppState, FormData, PageParts, PageResult,
};
use crate::auth::SessionCtx;
use crate::dates;
use crate::html::{self, error_summary, esc, FieldError};
use crate::state::App;

/// A conflicting field's path (`person.phone`, `meetings.<id>.place`) in words.
pub fn field_words(v: &CaseView, app: &App, field: &str) -> String {
    let parts: Vec<&str> = field.split('.').collect();
    let human = |k: &str| k.replace('_', " ");
    match parts.as_slice() {
        ["person", f] => format!("{}’s {}", v.person.name, human(f)),
        ["network", id, f] => {
            let who = v
                .network
                .iter()
                .find(|m| m.meta.id.to_string() == *id)
                .map(|m| m.name.clone())
                .unwrap_or_else(|| "a network member".into());
            format!("{}’s {}", who, human(f))
        }
        ["meetings", id, f, ..] => {
            let when = v
                .meetings
                .iter()
                .find(|m| m.meta.id.to_string() == *id)
                .and_then(|m| m.at.clone())
                .map(|t| dates::long_stored(&t, &app.config.zone))
                .unwrap_or_else(|| "a meeting".into());
            format!("The {} of the meeting on {}", human(f), when)
        }
        ["decisions", id, f, ..] => {
            let text = v
                .decisions
                .iter()
                .find(|d| d.meta.id.to_string() == *id)
                .map(|d| d.text.clone())
                .unwrap_or_default();
            format!("The {} of the decision “{}”", human(f), text)
        }
        ["timeline", f] => format!("The timeline’s {}", human(f)),
        _ => field.to_string(),
    }
}

fn render_conflicts(app: &App, v: &CaseView, csrf: &str, errors: &[FieldError]) -> String {
    let mut s = error_summary(errors);
    let _ = write!(
        s,
        r#"<span class="nhsuk-caption-l">{}</span><h1>Choose which value to keep</h1>"#,
        esc(&v.person.name)
    );
    if v.conflicts.is_empty() {
        s.push_str("<p>There is nothing to choose: every detail of this case has one value.</p>");
        return s;
    }
    s.push_str("<p>These details were changed on two devices at the same time. Both values are kept until you choose. Your choice is recorded with your name.</p>");
    for (i, c) in v.conflicts.iter().enumerate() {
        s.push_str(&conflict_form(app, v, c, i, csrf, errors));
    }
    s
}

fn conflict_form(
    app: &App,
    v: &CaseView,
    c: &Conflict,
    i: usize,
    csrf: &str,
    errors: &[FieldError],
) -> String {
    let id = format!("pick-{i}");
    let options: Vec<(String, String)> = c
        .values
        .iter()
        .map(|val| {
            (
                val.pick.to_string(),
                format!(
                    "“{}”, written by {}",
                    val.value,
                    by_line(app, &val.author, &val.at)
                ),
            )
        })
        .collect();
    let inner = format!(
        r#"<input type="hidden" name="field" value="{}"><input type="hidden" name="index" value="{i}">{}{}"#,
        esc(&c.field),
        html::Choices {
            id: &id,
            name: "pick",
            legend: &field_words(v, app, &c.field),
            options: &options,
            checked: &[],
            multiple: false,
            inline: false,
            hint: None,
        }
        .render(errors),
        html::button("Keep this value"),
    );
    format!(
        r#"<div class="nhsuk-card app-conflict"><div class="nhsuk-card__content">{}</div></div>"#,
        html::post_form(&format!("/case/{}/conflicts", v.case_id), csrf, &inner)
    )
}

/// `GET /case/:id/conflicts`.
pub async fn show(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
) -> PageResult {
    let case = case_id(&id)?;
    let v = app.profile().await.view(case, "conflicts")?;
    let content = render_conflicts(&app, &v, &session.csrf, &[]);
    let back = format!("/case/{case}");
    Ok(render(
        &app,
        &session,
        PageParts {
            title: "Choose which value to keep",
            back: Some((&back, "Back to the case")),
            content,
            has_errors: false,
            body_class: "",
        },
    )
    .await)
}

/// `POST /case/:id/conflicts`.
pub async fn resolve(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let form = FormData::from(form);
    let field = form.get("field").to_string();
    let i = form.get("index").to_string();
    let mut errors = Vec::new();
    match form.get("pick").parse::<usize>() {
        Ok(pick) => match app.edit(case, |d| d.resolve(&field, pick)).await {
            Ok(()) => {
                return Ok(done(
                    &app,
                    &session,
                    "Your choice was recorded",
                    &format!("/case/{case}/conflicts"),
                ))
            }
            Err(e) => errors.push(field_error(&format!("pick-{i}"), &e)),
        },
        Err(_) => errors.push(FieldError::new(
            &format!("pick-{i}"),
            "Choose which value to keep",
        )),
    }
    let v = app.profile().await.view(case, "conflicts")?;
    let content = render_conflicts(&app, &v, &session.csrf, &errors);
    let back = format!("/case/{case}");
    Ok(render(
        &app,
        &session,
        PageParts {
            title: "Choose which value to keep",
            back: Some((&back, "Back to the case")),
            content,
            has_errors: true,
            body_class: "",
        },
    )
    .await)
}
