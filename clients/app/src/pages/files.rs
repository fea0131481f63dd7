//! Letters and documents attached to a case (a referral letter, a GP letter, a document the
//! person brought): listed on the case page with where each file is (saved on the borough
//! server, on this device only, or not here yet), and opened from there. The file's bytes are
//! kept encrypted beside the case and move at each sync; attaching is `polyphony attachment
//! add` on the command line.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use polyphony_core::model::attachments::human_size;
use polyphony_core::model::view::CaseView;
use polyphony_core::profile::BlobState;
use polyphony_core::EntryId;

use super::{by_line, case_id, entry_id, in_error_note, removed_note, AppState, PageError};
use crate::html::esc;
use crate::state::App;

/// Where each attachment's bytes are, by attachment.
pub type FileStates = HashMap<EntryId, BlobState>;

/// Where each of the case's attachments is, read from the device's store.
pub fn states(
    profile: &polyphony_core::profile::Profile,
    case: polyphony_core::CaseId,
    v: &CaseView,
) -> FileStates {
    v.attachments
        .iter()
        .filter_map(|a| {
            let hash = a.sha256?;
            let state = profile.blob_state(case, &hash).ok()?;
            Some((a.meta.id, state))
        })
        .collect()
}

/// The section of the case page.
pub fn section(app: &App, v: &CaseView, states: &FileStates) -> String {
    let mut s = String::from(r#"<h2 id="attachments">Letters and documents</h2>"#);
    if v.attachments.is_empty() {
        s.push_str("<p>No letters or documents attached yet.</p>");
        return s;
    }
    s.push_str(r#"<ul class="nhsuk-list">"#);
    for a in &v.attachments {
        if a.meta.withheld() {
            if let Some(mark) = &a.meta.entered_in_error {
                let _ = write!(s, "<li>{}</li>", removed_note(app, "document", mark));
            }
            continue;
        }
        let meeting = a
            .meeting
            .and_then(|m| v.meetings.iter().find(|x| x.meta.id == m))
            .map(|m| {
                format!(
                    r#", from the <a href="/case/{}/meeting/{}">meeting on {}</a>"#,
                    esc(&v.case_id),
                    m.meta.id,
                    esc(m
                        .at
                        .as_deref()
                        .map(|t| crate::dates::long_stored(t, &app.config.zone))
                        .unwrap_or_default())
                )
            })
            .unwrap_or_default();
        let state = states.get(&a.meta.id).copied();
        let open = match state {
            Some(BlobState::NotHere) | None => String::new(),
            Some(_) => format!(
                r#" <a href="/case/{}/attachment/{}">Open {}</a>"#,
                esc(&v.case_id),
                a.meta.id,
                esc(&a.file_name)
            ),
        };
        let tag = match state {
            Some(BlobState::Saved) => {
                r#"<strong class="nhsuk-tag nhsuk-tag--green">Saved on the server</strong>"#
            }
            Some(BlobState::OnlyHere) => {
                r#"<strong class="nhsuk-tag nhsuk-tag--yellow">On this device only</strong>"#
            }
            Some(BlobState::NotHere) => {
                r#"<strong class="nhsuk-tag nhsuk-tag--grey">Not on this device yet</strong>"#
            }
            None => "",
        };
        let struck = a.meta.entered_in_error.is_some();
        let mark = if struck {
            String::new()
        } else {
            format!(
                r#" <a href="/case/{}/entry/{}/error" class="nhsuk-body-s">Mark entered in error</a>"#,
                esc(&v.case_id),
                a.meta.id
            )
        };
        let _ = write!(
            s,
            r#"<li id="attachment-{}" class="{}"><strong>{}: {}</strong> ({}, {}){meeting}. {tag}{open}<br><span class="nhsuk-body-s">Attached by {}</span>{mark}{}</li>"#,
            a.meta.id,
            if struck { "app-in-error" } else { "" },
            esc(a.kind.label()),
            esc(&a.title),
            esc(&a.file_name),
            esc(human_size(a.size)),
            esc(by_line(app, &a.meta.created_by, &a.meta.created_at)),
            a.meta
                .entered_in_error
                .as_ref()
                .map(|m| in_error_note(app, m))
                .unwrap_or_default(),
        );
    }
    s.push_str("</ul>");
    s
}

/// `GET /case/:id/attachment/:aid`: the file, as it was attached (recorded as a read).
pub async fn open(
    State(app): State<AppState>,
    Path((id, aid)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let case = case_id(&id)?;
    let aid = entry_id(&aid)?;
    let (a, bytes) = app.profile().await.open_attachment(case, aid)?;
    let Some(bytes) = bytes else {
        return Err(PageError::NotFound(
            "this file is not on this device yet: it is fetched at the next sync".into(),
        ));
    };
    Ok((
        axum::http::StatusCode::OK,
        [
            (axum::http::header::CONTENT_TYPE, a.media_type.clone()),
            (
                axum::http::header::CONTENT_DISPOSITION,
                super::exports::content_disposition(&a.file_name),
            ),
            (
                axum::http::header::X_CONTENT_TYPE_OPTIONS,
                "nosniff".to_string(),
            ),
        ],
        bytes,
    )
        .into_response())
}
