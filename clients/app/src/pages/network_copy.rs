//! The network copy in the app: the case in plain language, read-only and printable, for one named
//! member of the person's network.
//!
//! The copy's words are client-core's ([`polyphony_core::export::network_copy`]), so the app and
//! `polyphony export --format network` give the same copy. A copy goes only to a member whose
//! consent to receive the record is given: the first page lists the network with where each
//! member's consent stands and offers the copy only to those it allows; asking for anyone else's
//! copy is refused with the reason. Showing a member's copy is a disclosure, recorded (who, to
//! whom, when) in the person's access list by `Profile::give_network_copy`.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Extension;
use polyphony_core::export::network_copy::NetworkCopyError;
use polyphony_core::model::view::ConsentStanding;
use polyphony_core::profile::ProfileError;

use super::{case_id, person_name, render, AppState, PageParts, PageResult};
use crate::auth::SessionCtx;
use crate::html::esc;

/// `GET /case/:id/network-copy`: whom the copy can be for.
pub async fn choose(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
) -> PageResult {
    let case = case_id(&id)?;
    // Only names and consent are shown here, not the record: not a read of it.
    let v = app.profile().await.lookup(case)?;
    let name = person_name(&v);
    let mut s = format!(
        r#"<h1>Network copy</h1><p class="nhsuk-body">A copy of what has been written with {n}, in plain words, for one person in {n}’s network to keep. It can be given only to someone {n} has agreed may have the record (their consent is “given”). Each copy given is recorded in {n}’s list of who has seen their record.</p>"#,
        n = esc(&name)
    );
    let members: Vec<_> = v
        .network
        .iter()
        .filter(|m| m.meta.entered_in_error.is_none())
        .collect();
    if members.is_empty() {
        s.push_str(r#"<p class="nhsuk-body">No one has been added to the network yet.</p>"#);
    } else {
        s.push_str(r#"<table class="nhsuk-table"><caption class="nhsuk-table__caption">Who the copy can be for</caption><thead class="nhsuk-table__head"><tr class="nhsuk-table__row"><th scope="col" class="nhsuk-table__header">Name</th><th scope="col" class="nhsuk-table__header">Consent to receive the record</th><th scope="col" class="nhsuk-table__header">Copy</th></tr></thead><tbody class="nhsuk-table__body">"#);
        for m in members {
            let consent = m.consent_words();
            let action = if m.consent() == ConsentStanding::Given {
                format!(
                    r#"<a href="/case/{case}/network-copy/{id}">Make the copy for {n}</a>"#,
                    id = esc(m.meta.id),
                    n = esc(&m.name)
                )
            } else {
                "Not allowed: their consent is not given".to_string()
            };
            let _ = write!(
                s,
                r#"<tr class="nhsuk-table__row"><td class="nhsuk-table__cell">{} ({})</td><td class="nhsuk-table__cell">{}</td><td class="nhsuk-table__cell">{action}</td></tr>"#,
                esc(&m.name),
                esc(&m.relationship),
                esc(consent)
            );
        }
        s.push_str("</tbody></table>");
    }
    let back = format!("/case/{case}");
    Ok(render(
        &app,
        &session,
        PageParts {
            title: &format!("Network copy for {name}"),
            back: Some((&back, "Back to the case")),
            content: s,
            has_errors: false,
            body_class: "",
        },
    )
    .await)
}

/// `GET /case/:id/network-copy/:member`: the copy for one member, or why it cannot be given.
pub async fn show(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, member)): Path<(String, String)>,
) -> PageResult {
    let case = case_id(&id)?;
    let given = app.profile().await.give_network_copy(case, &member);
    let back = format!("/case/{case}/network-copy");
    let (status, title, content, class) = match given {
        Ok(copy) => (
            StatusCode::OK,
            format!("Network copy for {}", copy.recipient.name),
            format!(
                r#"{}<p class="app-print-hint nhsuk-body-s">To print it, use your browser’s Print command (Ctrl+P, or Cmd+P on a Mac). A printed or saved copy is no longer protected by this app.</p>"#,
                copy.body_html()
            ),
            "app-network-copy",
        ),
        Err(ProfileError::NetworkCopy(e)) => {
            let status = match e {
                NetworkCopyError::NotInNetwork(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::FORBIDDEN,
            };
            (
                status,
                "This copy cannot be given".to_string(),
                format!(
                    r#"<h1>This copy cannot be given</h1><div class="nhsuk-warning-callout"><h2 class="nhsuk-warning-callout__label"><span role="text"><span class="nhsuk-u-visually-hidden">Important: </span>Consent</span></h2><p>{}</p></div><p><a href="/case/{case}/network-copy">Back to who the copy can be for</a></p>"#,
                    esc(e.to_string())
                ),
                "",
            )
        }
        Err(other) => return Err(other.into()),
    };
    let page = render(
        &app,
        &session,
        PageParts {
            title: &title,
            back: Some((&back, "Back to who the copy can be for")),
            content,
            has_errors: false,
            body_class: class,
        },
    )
    .await;
    Ok((status, page).into_response())
}
