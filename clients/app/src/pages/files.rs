//! Letters and documents attached to a case (a referral letter, a GP letter, a document the
//! person brought): listed on the case page with where each file is (saved on the borough
//! server, on this device only, or not here yet), and opened from there. The file's bytes are
//! kept encrypted beside the case and move at each sync; attaching is `polyphony attachment
//! add` on the command line.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use polyphony_core::model::attachments::{human_size, MEDIA_TYPES};
use polyphony_core::model::view::CaseView;
use polyphony_core::model::{AttachmentKind, MAX_ATTACHMENT_BYTES};
use polyphony_core::profile::{AttachFile, BlobState};
use polyphony_core::EntryId;

use super::{
    by_line, case_id, done, entry_id, in_error_note, removed_note, AppState, PageError, PageResult,
};
use crate::auth::SessionCtx;
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

/// The section of the case page: each file, and the form to attach one.
pub fn section(app: &App, v: &CaseView, states: &FileStates, csrf: &str) -> String {
    let mut s = String::from(r#"<h2 id="attachments">Letters and documents</h2>"#);
    if v.attachments.is_empty() {
        s.push_str("<p>No letters or documents attached yet.</p>");
    } else {
        s.push_str(&list(app, v, states));
    }
    s.push_str(&form(app, v, csrf));
    s
}

/// The form to attach a file: what it is, its title, the meeting it belongs to, the file. Sent
/// as `multipart/form-data`, its tokens first (the guard reads them from there).
fn form(app: &App, v: &CaseView, csrf: &str) -> String {
    let kinds: Vec<(String, String)> = AttachmentKind::ALL
        .iter()
        .map(|k| (k.as_str().to_string(), k.label().to_string()))
        .collect();
    let mut meetings = String::from(r#"<option value="">Not a meeting's</option>"#);
    for m in v
        .meetings
        .iter()
        .filter(|m| m.meta.entered_in_error.is_none())
    {
        let when =
            m.at.as_deref()
                .map(|t| crate::dates::long_stored(t, &app.config.zone))
                .unwrap_or_else(|| "a meeting".into());
        let _ = write!(
            meetings,
            r#"<option value="{}">The meeting on {}</option>"#,
            m.meta.id,
            esc(&when)
        );
    }
    let endings: Vec<&str> = MEDIA_TYPES.iter().map(|(e, _)| *e).collect();
    let accept: Vec<String> = endings.iter().map(|e| format!(".{e}")).collect();
    format!(
        r#"<form method="post" action="/case/{case}/attachments" enctype="multipart/form-data" novalidate autocomplete="off">{csrf}<input type="hidden" name="_once" value="{once}">{kinds}{title}<div class="nhsuk-form-group"><label class="nhsuk-label" for="attachment-meeting">The meeting it belongs to</label><select class="nhsuk-select" id="attachment-meeting" name="meeting">{meetings}</select></div><div class="nhsuk-form-group"><label class="nhsuk-label" for="attachment-file">The file</label><div class="nhsuk-hint" id="attachment-file-hint">A PDF, a photo or scan, or an office document, at most {max} MB. It is kept encrypted on this device and sent to the borough server at the next sync.</div><input class="nhsuk-file-upload" id="attachment-file" name="file" type="file" accept="{accept}" aria-describedby="attachment-file-hint"></div>{button}</form>"#,
        case = esc(&v.case_id),
        csrf = crate::html::csrf_field(csrf),
        once = crate::auth::random_token(),
        kinds = crate::html::Choices {
            id: "attachment-kind",
            name: "kind",
            legend: "Attach a letter or document",
            options: &kinds,
            checked: &[AttachmentKind::ReferralLetter.as_str().to_string()],
            multiple: false,
            inline: false,
            hint: None,
        }
        .render(&[]),
        title = crate::html::Input::text(
            "attachment-title",
            "title",
            "Its title (the file's name if left empty)",
            "",
        )
        .render(&[]),
        max = MAX_ATTACHMENT_BYTES >> 20,
        accept = esc(accept.join(",")),
        button = crate::html::secondary_button("Attach the file"),
    )
}

fn list(app: &App, v: &CaseView, states: &FileStates) -> String {
    let mut s = String::from(r#"<ul class="nhsuk-list">"#);
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

/// The letters and documents of one meeting, on its page: each linked to its place in the case's
/// list (where it is opened, and where its file's state shows). Nothing when there are none.
pub fn of_meeting(v: &CaseView, meeting: EntryId) -> String {
    let files: Vec<_> = v
        .attachments
        .iter()
        .filter(|a| a.meeting == Some(meeting) && !a.meta.withheld())
        .collect();
    if files.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        r#"<h2 id="meeting-attachments">Letters and documents from this meeting</h2><ul class="nhsuk-list">"#,
    );
    for a in files {
        let _ = write!(
            s,
            r#"<li><a href="/case/{}#attachment-{}">{}: {}</a> ({}){}</li>"#,
            esc(&v.case_id),
            a.meta.id,
            esc(a.kind.label()),
            esc(&a.title),
            esc(&a.file_name),
            if a.meta.entered_in_error.is_some() {
                " (entered in error)"
            } else {
                ""
            }
        );
    }
    s.push_str("</ul>");
    s
}

/// `POST /case/:id/attachments`: attach the file the form carries. What is wrong (no file, a
/// kind of file that cannot be attached, too large) is said, and nothing is written.
pub async fn attach(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
    posted: super::Posted,
) -> PageResult {
    let case = case_id(&id)?;
    let back = format!("/case/{case}#attachments");
    let (kind, title, meeting) = (
        posted.form.get("kind"),
        posted.form.get("title"),
        posted.form.get("meeting"),
    );
    let file = posted.file("file");
    let Some((file_name, content)) = file else {
        return Ok(done(&app, &session, "Choose the file to attach", &back));
    };
    let Ok(kind) = kind.parse::<AttachmentKind>() else {
        return Ok(done(&app, &session, "Choose what the file is", &back));
    };
    let meeting = if meeting.trim().is_empty() {
        None
    } else {
        Some(entry_id(meeting)?)
    };
    let result = app.profile().await.attach(
        case,
        AttachFile {
            kind,
            title,
            file_name,
            content,
            meeting,
        },
    );
    let message = match result {
        Ok(_) => {
            app.local_change(case);
            format!(
                "{} attached ({}): it is sent to the borough server at the next sync",
                kind.label(),
                human_size(content.len() as u64)
            )
        }
        Err(e) => format!("The file was not attached: {e}"),
    };
    Ok(done(&app, &session, &message, &back))
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
