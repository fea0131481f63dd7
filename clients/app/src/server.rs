//! The routes, the security headers every response carries, and the embedded assets.
//!
//! Every route sits behind [`auth::guard`] (session cookie, CSRF on changes, Host check). The
//! Content-Security-Policy allows only this app's own scripts, styles, images and requests, so the
//! page can make no request to any other host: fonts, scripts and styles are all served from here.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};

use crate::auth::{self, SessionCtx};
use crate::pages::{
    case, caseload, conflicts, decision, enrol, entry, exports, files, meeting, network,
    network_copy, plan, referrals, safety, today,
};
use crate::state::App;

/// The policy: this origin only, no inline script or style, no framing, forms post here only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Every route of the app.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        // The launch link needs only the gate, not the app.
        .route("/launch", get(auth::launch).with_state(app.gate.clone()))
        .route("/", get(caseload::show))
        .route("/sync-now", get(caseload::sync_now))
        .route("/today", get(today::show))
        .route("/status.json", get(status_json))
        .route("/enrol", get(enrol::show).post(enrol::submit))
        .route("/cases/new", get(case::new_form))
        .route(
            "/cases",
            post(case::create).layer(axum::extract::DefaultBodyLimit::max(
                crate::auth::MAX_UPLOAD_BODY,
            )),
        )
        .route("/case/{id}/referrals/new", get(referrals::new_form))
        .route(
            "/case/{id}/referrals",
            post(referrals::create).layer(axum::extract::DefaultBodyLimit::max(
                crate::auth::MAX_UPLOAD_BODY,
            )),
        )
        .route(
            "/case/{id}/referral/{rid}/letter",
            post(referrals::letter).layer(axum::extract::DefaultBodyLimit::max(
                crate::auth::MAX_UPLOAD_BODY,
            )),
        )
        .route("/case/{id}", get(case::show))
        .route(
            "/case/{id}/person",
            get(case::person_form).post(case::person_save),
        )
        .route("/case/{id}/care-team", post(case::add_me_to_care_team))
        .route("/case/{id}/notes", post(safety::create))
        .route("/case/{id}/attachment/{aid}", get(files::open))
        .route(
            "/case/{id}/attachments",
            post(files::attach).layer(axum::extract::DefaultBodyLimit::max(
                crate::auth::MAX_UPLOAD_BODY,
            )),
        )
        .route("/case/{id}/note/{nid}/withhold", post(safety::withhold))
        .route("/case/{id}/note/{nid}/confirm", post(safety::confirm))
        .route("/case/{id}/note/{nid}/lift", post(safety::lift))
        .route("/case/{id}/plan/new", get(plan::new_form))
        .route("/case/{id}/plan", post(plan::create))
        .route("/case/{id}/plan/review", post(plan::review))
        .route("/case/{id}/plan/{iid}", get(plan::show).post(plan::change))
        .route("/case/{id}/timeline", post(case::set_timeline))
        .route("/case/{id}/members/new", get(network::new_form))
        .route("/case/{id}/members", post(network::create))
        .route(
            "/case/{id}/member/{mid}",
            get(network::edit_form).post(network::save),
        )
        .route("/case/{id}/member/{mid}/leave", post(network::leave))
        .route("/case/{id}/member/{mid}/consent", post(network::consent))
        .route("/case/{id}/meetings/new", get(meeting::new_form))
        .route("/case/{id}/meetings", post(meeting::create))
        .route("/case/{id}/meeting/{mid}", get(meeting::show))
        .route(
            "/case/{id}/meeting/{mid}/attendance",
            post(meeting::attendance),
        )
        .route("/case/{id}/meeting/{mid}/next", post(meeting::next))
        .route("/case/{id}/meeting/{mid}/state", post(meeting::set_state))
        .route(
            "/case/{id}/meeting/{mid}/text",
            get(meeting::poll_text).post(meeting::save_text),
        )
        .route(
            "/case/{id}/meeting/{mid}/readback",
            get(meeting::readback).post(meeting::readback_save),
        )
        .route("/case/{id}/decisions/new", get(decision::new_form))
        .route("/case/{id}/decisions", post(decision::create))
        .route("/case/{id}/decision/{did}", get(decision::show))
        .route(
            "/case/{id}/decision/{did}/position",
            post(decision::position),
        )
        .route("/case/{id}/decision/{did}/status", post(decision::status))
        .route(
            "/case/{id}/decision/{did}/actions",
            post(decision::add_action),
        )
        .route(
            "/case/{id}/decision/{did}/action/{aid}/done",
            post(decision::action_done),
        )
        .route(
            "/case/{id}/entry/{eid}/error",
            get(entry::form).post(entry::mark),
        )
        .route(
            "/case/{id}/conflicts",
            get(conflicts::show).post(conflicts::resolve),
        )
        .route("/case/{id}/network-copy", get(network_copy::choose))
        .route("/case/{id}/network-copy/{member}", get(network_copy::show))
        .route("/case/{id}/export/{format}", get(exports::download))
        .route("/figures", get(exports::show))
        .route("/figures.csv", get(exports::csv))
        .route("/assets/{*path}", get(asset))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            app.forms.clone(),
            crate::once::once,
        ))
        .layer(middleware::from_fn_with_state(
            app.gate.clone(),
            auth::guard,
        ))
        .layer(middleware::from_fn(security_headers))
        .with_state(app)
}

async fn security_headers(req: Request, next: Next) -> Response {
    let is_asset = req.uri().path().starts_with("/assets/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // "same-origin", not "no-referrer": under "no-referrer" browsers send `Origin: null` on form
    // posts, and the guard checks the Origin. No other origin is ever linked to, so the launch
    // link never leaves the app either way.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    // Clinical pages must not sit in the browser's disk cache; assets may.
    let cache = if is_asset {
        "private, max-age=3600"
    } else {
        "no-store"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    res
}

async fn not_found() -> Response {
    crate::pages::PageError::NotFound("there is no page at this address".into()).into_response()
}

/// `GET /status.json`: the sync badge's data and its rendered HTML, for the page script.
async fn status_json(
    State(app): State<Arc<App>>,
    Extension(session): Extension<SessionCtx>,
) -> Response {
    let overview = app.overview().await;
    let mut names = HashMap::new();
    for c in overview
        .cases
        .iter()
        .filter(|c| c.stale || c.refused.is_some())
    {
        if let Ok(v) = app.peek(c.case).await {
            names.insert(c.case, v.person.name);
        }
    }
    let cases: HashMap<String, serde_json::Value> = overview
        .cases
        .iter()
        .map(|c| {
            (
                c.case.to_string(),
                serde_json::json!({ "unsynced": c.unsynced, "not_on_hub": c.not_on_hub, "stale": c.stale, "words": c.words(), "tag": c.tag() }),
            )
        })
        .collect();
    Json(serde_json::json!({
        "link": overview.link.link,
        "link_words": overview.link_words(),
        "saved_words": overview.saved_words(),
        "hub_words": overview.hub_words(),
        "unsynced": overview.unsynced_total,
        "not_on_hub": overview.not_on_hub_total,
        "last_synced_at": overview.link.last_synced_at.map(polyphony_core::model::format_instant),
        "stale": overview.stale().len(),
        "cases": cases,
        "html": overview.badge_html(&names, &app.config.zone),
        // A tab kept open across a restart of the app is let in again by the new launch link in
        // another tab (the cookie is the origin's); it needs this session's token to send what it
        // kept. Only the app's own pages can read this answer (see `auth`).
        "csrf": session.csrf,
    }))
    .into_response()
}

/// The files the pages load, compiled into the binary so the app needs nothing else on disk.
pub const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "nhsuk-frontend.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/nhsuk/nhsuk-frontend.min.css"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    ),
    (
        "images/favicon.svg",
        "image/svg+xml",
        include_bytes!("../assets/nhsuk/images/favicon.svg"),
    ),
    (
        "images/nhsuk-icon-arrow-down.svg",
        "image/svg+xml",
        include_bytes!("../assets/nhsuk/images/nhsuk-icon-arrow-down.svg"),
    ),
    (
        "images/nhsuk-icon-arrow-up.svg",
        "image/svg+xml",
        include_bytes!("../assets/nhsuk/images/nhsuk-icon-arrow-up.svg"),
    ),
    (
        "images/nhsuk-icon-arrow-up-down.svg",
        "image/svg+xml",
        include_bytes!("../assets/nhsuk/images/nhsuk-icon-arrow-up-down.svg"),
    ),
    (
        "images/nhsuk-icon-cross.svg",
        "image/svg+xml",
        include_bytes!("../assets/nhsuk/images/nhsuk-icon-cross.svg"),
    ),
    (
        "LICENSE-nhsuk-frontend.txt",
        "text/plain; charset=utf-8",
        include_bytes!("../assets/nhsuk/LICENSE"),
    ),
];

async fn asset(axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    match ASSETS.iter().find(|(p, _, _)| *p == path) {
        Some((_, kind, body)) => ([(header::CONTENT_TYPE, *kind)], *body).into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
