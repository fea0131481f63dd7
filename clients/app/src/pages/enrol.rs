//! Enrolment: the first screen on a new device. The practitioner types the borough server's
//! address and the one-time code their administrator gave them.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect};
use axum::{Extension, Form};

use super::{done, render, AppState, FormData, PageParts, PageResult};
use crate::auth::SessionCtx;
use crate::html::{self, error_summary, FieldError, Input};

/// `GET /enrol`.
pub async fn show(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
) -> PageResult {
    if app.profile().await.enrolment().is_some() {
        return Ok(Redirect::to("/").into_response());
    }
    let name = app.config.device_name.clone();
    Ok(page(&app, &session, "", "", &name, &[]).await)
}

async fn page(
    app: &super::App,
    session: &SessionCtx,
    server: &str,
    code: &str,
    device: &str,
    errors: &[FieldError],
) -> axum::response::Response {
    let mut inner = String::new();
    inner.push_str(&Input {
        hint: Some("For example, borough.example.nhs.uk:4433. Your administrator gives you this with the code."),
        attrs: r#"autocomplete="off" spellcheck="false""#,
        ..Input::text("server", "server", "Borough server address", server)
    }
    .render(errors));
    inner.push_str(
        &Input {
            hint: Some("The one-time code from your administrator. It works once."),
            attrs: r#"autocomplete="off" spellcheck="false""#,
            class: "nhsuk-input--code",
            ..Input::text("code", "code", "Enrolment code", code)
        }
        .render(errors),
    );
    inner.push_str(
        &Input {
            hint: Some("So you can tell your devices apart, for example Work laptop."),
            ..Input::text("device", "device", "Name of this device", device)
        }
        .render(errors),
    );
    inner.push_str(&html::button("Enrol this device"));
    let content = format!(
        r#"<div class="nhsuk-grid-row"><div class="nhsuk-grid-column-two-thirds">{}<h1>Enrol this device</h1><p>Before you can record anything, this device must be enrolled with your borough's server. You need to be online for this step only.</p>{}</div></div>"#,
        error_summary(errors),
        html::post_form("/enrol", &session.csrf, &inner)
    );
    render(
        app,
        session,
        PageParts {
            title: "Enrol this device",
            back: None,
            content,
            has_errors: !errors.is_empty(),
            body_class: "",
        },
    )
    .await
}

/// `POST /enrol`.
pub async fn submit(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let form = FormData::from(form);
    let (server, code, device) = (form.get("server"), form.get("code"), form.get("device"));
    let mut errors = Vec::new();
    if server.trim().is_empty() {
        errors.push(FieldError::new(
            "server",
            "Enter the borough server address",
        ));
    }
    if code.trim().is_empty() {
        errors.push(FieldError::new("code", "Enter the enrolment code"));
    }
    if device.trim().is_empty() {
        errors.push(FieldError::new("device", "Enter a name for this device"));
    }
    if errors.is_empty() {
        let result = {
            let mut p = app.profile().await;
            p.enrol(server.trim(), code.trim(), device.trim())
                .await
                .map(|e| e.practitioner_name.clone())
        };
        match result {
            Ok(name) => {
                app.sync.try_now();
                return Ok(done(
                    &app,
                    &session,
                    &format!("This device is enrolled. Welcome, {name}."),
                    "/",
                ));
            }
            Err(e) => errors.push(FieldError::new("code", e.to_string())),
        }
    }
    Ok(page(&app, &session, server, code, device, &errors).await)
}
