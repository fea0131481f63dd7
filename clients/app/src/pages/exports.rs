//! Exports and figures in the app: the case for the trust's record (FHIR), the person's own copy
//! (HTML, PDF), everything held about them (JSON), and the team's fidelity figures (table, CSV).
//!
//! Every download leaves the encrypted store: it is recorded with its kind in the person's access
//! list, named for a person to recognise (`Maria Lindqvist - record copy - 2026-03-14.pdf`, with
//! `filename*` so a name like María survives), and the pages that offer it say it is not
//! encrypted.
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
use polyphony_core::export::access::ExportKind;
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
    let kind = match format.as_str() {
        "fhir" => ExportKind::Fhir,
        "json" => ExportKind::Json,
        "html" => ExportKind::Html,
        "pdf" => ExportKind::Pdf,
        other => {
            return Err(PageError::NotFound(format!(
                "there is no export called '{other}'"
            )))
        }
    };
    // Before the export is recorded: without its fonts a PDF cannot be made.
    let fonts = match kind {
        ExportKind::Pdf => Some(
            export::person_copy::Fonts::locate(app.config.font_dir.as_deref())
                .map_err(|e| PageError::Unavailable(e.to_string()))?,
        ),
        _ => None,
    };
    let v = profile.export_view(case, kind)?;
    let (content_type, body) = match kind {
        ExportKind::Fhir => (
            "application/fhir+json",
            json(&export::fhir::bundle(&v, &accesses)),
        ),
        ExportKind::Json => (
            "application/json",
            json(&export::subject_access::json(&v, &accesses)),
        ),
        ExportKind::Pdf => {
            let fonts = fonts.ok_or_else(|| {
                PageError::Unavailable("the PDF fonts were not loaded (a bug)".into())
            })?;
            let pdf = export::person_copy::pdf(&v, &accesses, &fonts)
                .map_err(|e| PageError::Unavailable(e.to_string()))?;
            ("application/pdf", pdf)
        }
        ExportKind::Html | ExportKind::Figures => (
            "text/html; charset=utf-8",
            export::person_copy::html(&v, &accesses).into_bytes(),
        ),
    };
    let name = export::export_file_name(&v, kind, app.config.zone.date(now()));
    Ok(attachment(content_type, &name, body))
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn json(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

/// `attachment; filename="..."; filename*=UTF-8''...`: the name as the person will see it in
/// their downloads (RFC 6266), with an ASCII fallback for anything that cannot read `filename*`.
pub fn content_disposition(filename: &str) -> String {
    let fallback: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in filename.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            let _ = write!(encoded, "%{b:02X}");
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

fn attachment(content_type: &str, filename: &str, body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_DISPOSITION, content_disposition(filename)),
        ],
        body,
    )
        .into_response()
}

/// The figures over every case on this device. A file of them (`leaves`) is recorded as an
/// export on each case; the page is not.
async fn rows(app: &AppState, leaves: bool) -> Result<Vec<figures::Row>, PageError> {
    let mut profile = app.profile().await;
    let mut all = Vec::new();
    for case in profile.case_ids()? {
        let view = if leaves {
            profile.export_view(case, ExportKind::Figures)?
        } else {
            profile.lookup(case)?
        };
        all.push(CaseFigures::from_view(&view));
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
    let rows = rows(&app, false).await?;
    let mut s = String::from(
        r#"<h1>Team figures</h1><p class="nhsuk-body">How the team's work on this device follows Open Dialogue: help within a day of referral, the same practitioners throughout, the network at meetings, and peer support. Staff count in the role the meeting noted for them (peer support workers apart from practitioners). Entries marked entered in error are left out.</p>"#,
    );
    s.push_str(r#"<table class="nhsuk-table"><caption class="nhsuk-table__caption">Per case, then the team</caption><thead class="nhsuk-table__head"><tr class="nhsuk-table__row"><th scope="col" class="nhsuk-table__header">Case</th><th scope="col" class="nhsuk-table__header">Hours from referral to first meeting</th><th scope="col" class="nhsuk-table__header">First meeting within 24 hours</th><th scope="col" class="nhsuk-table__header">Meetings</th><th scope="col" class="nhsuk-table__header">Two or more practitioners</th><th scope="col" class="nhsuk-table__header">Original pair</th><th scope="col" class="nhsuk-table__header">Network members per meeting</th><th scope="col" class="nhsuk-table__header">With a peer support worker</th></tr></thead><tbody class="nhsuk-table__body">"#);
    for r in &rows {
        let _ = write!(
            s,
            r#"<tr class="nhsuk-table__row"><th scope="row" class="nhsuk-table__header">{}</th><td class="nhsuk-table__cell">{}</td><td class="nhsuk-table__cell">{}</td><td class="nhsuk-table__cell">{}</td><td class="nhsuk-table__cell">{}</td><td class="nhsuk-table__cell">{}</td><td class="nhsuk-table__cell">{}</td><td class="nhsuk-table__cell">{}</td></tr>"#,
            esc(&r.label),
            cell(r.hours_to_first_meeting, false),
            cell(r.within_24_hours, true),
            cell(r.meetings, false),
            cell(r.two_or_more_practitioners, true),
            cell(r.original_pair, true),
            cell(r.network_members_per_meeting, false),
            cell(r.peer_support, true),
        );
    }
    s.push_str(
        r#"</tbody></table><p><a href="/figures.csv" download>Download the figures as CSV</a></p>"#,
    );
    let _ = write!(
        s,
        r#"<p class="nhsuk-body-s app-export-warning">{}</p>"#,
        esc(export::NOT_ENCRYPTED)
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
    let rows = rows(&app, true).await?;
    let text = figures::to_csv(&rows)
        .map_err(|e| PageError::NotFound(format!("the figures could not be written: {e}")))?;
    let name = export::file_name(
        "Polyphony",
        ExportKind::Figures.file_label(),
        app.config.zone.date(now()),
        ExportKind::Figures.extension(),
    );
    Ok(attachment(
        "text/csv; charset=utf-8",
        &name,
        text.into_bytes(),
    ))
}
