//! "Entered in error": nothing clinical is deleted. An entry made by mistake is marked, with the
//! reason, and stays in the record struck through but readable, with who marked it and when.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Form};
use polyphony_core::model::view::CaseView;

use super::{
    case_id, done, entry_id, field_error, render, AppState, FormData, PageError, PageParts,
    PageResult,
};
use crate::auth::SessionCtx;
use crate::html::{self, error_summary, esc, FieldError};
use crate::state::App;

/// What an entry id names in a case, in words, and where to go back to.
fn describe(v: &CaseView, id: &str) -> Option<(String, String)> {
    let case = &v.case_id;
    if let Some(m) = v.network.iter().find(|m| m.meta.id == id) {
        return Some((
            format!("network member {} ({})", m.name, m.relationship),
            format!("/case/{case}#network"),
        ));
    }
    if let Some(c) = v.care_team.iter().find(|c| c.meta.id == id) {
        return Some((
            format!("care team membership of {}", c.name),
            format!("/case/{case}#care-team"),
        ));
    }
    if let Some(m) = v.meetings.iter().find(|m| m.meta.id == id) {
        return Some((
            format!("the meeting at {}", m.at.clone().unwrap_or_default()),
            format!("/case/{case}/meeting/{id}"),
        ));
    }
    for d in &v.decisions {
        if d.meta.id == id {
            return Some((
                format!("the decision “{}”", d.text),
                format!("/case/{case}/decision/{id}"),
            ));
        }
        if let Some(a) = d.actions.iter().find(|a| a.meta.id == id) {
            return Some((
                format!("the action “{}”", a.text),
                format!("/case/{case}/decision/{}#actions", d.meta.id),
            ));
        }
    }
    None
}

async fn page(
    app: &App,
    session: &SessionCtx,
    v: &CaseView,
    id: &str,
    reason: &str,
    errors: &[FieldError],
) -> Result<Response, PageError> {
    let (what, back) = describe(v, id)
        .ok_or_else(|| PageError::NotFound(format!("there is no entry '{id}' in this case")))?;
    let inner = format!(
        "{}{}",
        html::TextArea {
            id: "reason",
            name: "reason",
            label: "Why is it being marked as entered in error?",
            value: reason,
            hint: Some(
                "For example: recorded against the wrong person. This is kept with the entry."
            ),
            rows: 3,
            attrs: ""
        }
        .render(errors),
        html::button("Mark as entered in error")
    );
    let content = format!(
        r#"<div class="nhsuk-grid-row"><div class="nhsuk-grid-column-two-thirds">{}<span class="nhsuk-caption-l">{}</span><h1>Mark as entered in error</h1><p>You are marking {} as entered in error. It will not be deleted: it stays in the record, struck through, with your name, the time and the reason.</p>{}</div></div>"#,
        error_summary(errors),
        esc(&v.person.name),
        esc(&what),
        html::post_form(
            &format!("/case/{}/entry/{}/error", v.case_id, id),
            &session.csrf,
            &inner
        )
    );
    Ok(render(
        app,
        session,
        PageParts {
            title: "Mark as entered in error",
            back: Some((&back, "Back")),
            content,
            has_errors: !errors.is_empty(),
            body_class: "",
        },
    )
    .await)
}

/// `GET /case/:id/entry/:eid/error`.
pub async fn form(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, eid)): Path<(String, String)>,
) -> PageResult {
    let case = case_id(&id)?;
    let v = app.profile().await.view(case, "entered in error")?;
    page(&app, &session, &v, &eid, "", &[]).await
}

/// `POST /case/:id/entry/:eid/error`.
pub async fn mark(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, eid)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let entry = entry_id(&eid)?;
    let form = FormData::from(form);
    let v = app.profile().await.view(case, "entered in error")?;
    let (_, back) = describe(&v, &eid)
        .ok_or_else(|| PageError::NotFound(format!("there is no entry '{eid}' in this case")))?;
    let mut errors = Vec::new();
    match form.opt("reason") {
        None => errors.push(FieldError::new(
            "reason",
            "Enter why it is being marked as entered in error",
        )),
        Some(reason) => match app
            .edit(case, |d| d.mark_entered_in_error(&entry, reason))
            .await
        {
            Ok(()) => return Ok(done(&app, &session, "Marked as entered in error", &back)),
            Err(e) => errors.push(field_error("reason", &e)),
        },
    }
    page(&app, &session, &v, &eid, form.get("reason"), &errors).await
}
