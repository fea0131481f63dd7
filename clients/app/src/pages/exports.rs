//! Exports and figures in the app: the case for the trust's record (FHIR), the person's own copy
//! (HTML, PDF), everything held about them (JSON), and the team's fidelity figures (table, CSV).
//!
//! The person's copy lists who has accessed the record, from the borough server's audit log. The
//! app asks the server for the latest list when it can (briefly: a practitioner with no signal
//! should not wait), and otherwise uses the last list it fetched; the copy says which.

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use polyphony_core::export::{self, figures};
use polyphony_core::model::CaseFigures;

use super::{case_id, render, AppState, PageError, PageParts, PageResult};
use crate::auth::SessionCtx;
use crate::html::esc;

/// How long a download waits for the server's latest access list before using the last one.
const ACCESS_FETCH_WAIT: Duration = Duration::from_secs(5);

/// `GET /case/{id}/export/{format}`: a download of the case as `fhir`, `html`, `pdf` or `json`.
pub async fn download(
    State(app): State<AppState>,
    Path((id, format)): Path<(String, String)>,
) -> PageResult {
    let case = case_id(&id)?;
    let mut profile = app.profile().await;
    if profile.enrolment().is_some() {
        // Best effort: a failure leaves the last fetched list in place.
        let _ = tokio::time::timeout(ACCESS_FETCH_WAIT, profile.fetch_accesses(case)).await;
    }
    let accesses = profile
        .accesses(case)?
        .map(|a| a.entries)
        .unwrap_or_default();
    let (content_type, ext, body): (&str, &str, Vec<u8>) = match format.as_str() {
        "fhir" => {
            let v = profile.view(case, "export fhir")?;
            (
                "application/fhir+json",
                "fhir.json",
                json(&export::fhir::bundle(&v, &accesses)),
            )
        }
        "json" => {
            let v = profile.view(case, "export subject access")?;
            (
                "application/json",
                "json",
                json(&export::subject_access::json(&v, &accesses)),
            )
        }
        "html" => {
            let v = profile.view(case, "export person's copy")?;
            (
                "text/html; charset=utf-8",
                "html",
                export::person_copy::html(&v, &accesses).into_bytes(),
            )
        }
        "pdf" => {
            let v = profile.view(case, "export person's copy (pdf)")?;
            (
                "application/pdf",
                "pdf",
                export::person_copy::pdf(&v, &accesses),
            )
        }
        other => {
            return Err(PageError::NotFound(format!(
                "there is no export called '{other}'"
            )))
        }
    };
    Ok(attachment(
        content_type,
        &format!("case-{case}.{ext}"),
        body,
    ))
}

fn json(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

fn attachment(content_type: &str, filename: &str, body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

async fn rows(app: &AppState) -> Result<Vec<figures::Row>, PageError> {
    let mut profile = app.profile().await;
    let mut all = Vec::new();
    for case in profile.case_ids()? {
        all.push(CaseFigures::from_view(&profile.lookup(case)?));
    }
    Ok(figures::team_table(&all))
}

fn cell(v: Option<f64>, percent: bool) -> String {
    match v {
        None => "–".into(),
        Some(x) if percent => format!("{:.0}%", x * 100.0),
        Some(x) => format!("{x:.1}"),
    }
}

/// `GET /figures`: the team's fidelity figures over the cases on this device.
pub async fn show(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
) -> PageResult {
    let rows = rows(&app).await?;
    let mut s = String::from(
        r#"<h1>Team figures</h1><p class="nhsuk-body">How the team's work on this device follows Open Dialogue: help within a day of referral, the same practitioners throughout, and the network at meetings. Entries marked entered in error are left out.</p>"#,
    );
    s.push_str(r#"<table class="nhsuk-table"><caption class="nhsuk-table__caption">Per case, then the team</caption><thead class="nhsuk-table__head"><tr class="nhsuk-table__row"><th scope="col" class="nhsuk-table__header">Case</th><th scope="col" class="nhsuk-table__header">Hours from referral to first meeting</th><th scope="col" class="nhsuk-table__header">First meeting within 24 hours</th><th scope="col" class="nhsuk-table__header">Meetings</th><th scope="col" class="nhsuk-table__header">Two or more practitioners</th><th scope="col" class="nhsuk-table__header">Original pair</th><th scope="col" class="nhsuk-table__header">Network members per meeting</th></tr></thead><tbody class="nhsuk-table__body">"#);
    for r in &rows {
        let _ = write!(
            s,
            r#"<tr class="nhsuk-table__row"><th scope="row" class="nhsuk-table__header">{}</th><td class="nhsuk-table__cell">{}</td><td class="nhsuk-table__cell">{}</td><td class="nhsuk-table__cell">{}</td><td class="nhsuk-table__cell">{}</td><td class="nhsuk-table__cell">{}</td><td class="nhsuk-table__cell">{}</td></tr>"#,
            esc(&r.label),
            cell(r.hours_to_first_meeting, false),
            cell(r.within_24_hours, true),
            cell(r.meetings, false),
            cell(r.two_or_more_practitioners, true),
            cell(r.original_pair, true),
            cell(r.network_members_per_meeting, false),
        );
    }
    s.push_str(
        r#"</tbody></table><p><a href="/figures.csv" download>Download the figures as CSV</a></p>"#,
    );
    Ok(render(
        &app,
        &session,
        PageParts {
            title: "Team figures",
            back: Some(("/", "Back to your caseload")),
            content: s,
            has_errors: false,
            body_class: "",
        },
    )
    .await)
}

/// `GET /figures.csv`: the same figures as CSV.
pub async fn csv(State(app): State<AppState>) -> PageResult {
    let rows = rows(&app).await?;
    let text = figures::to_csv(&rows)
        .map_err(|e| PageError::NotFound(format!("the figures could not be written: {e}")))?;
    Ok(attachment(
        "text/csv; charset=utf-8",
        "team-figures.csv",
        text.into_bytes(),
    ))
}
