//! A change is applied once, however often its form is sent.
//!
//! Forms get sent again: the page script keeps a form the app did not answer (the app had
//! stopped) and sends it again when the app is back, and the first sending may have been saved
//! just before the app stopped; people also press a button twice. So every form the app renders
//! carries a one-time token, `_once` ([`crate::html::post_form`]). When a change with a token
//! succeeds (it answers with a redirect, post/redirect/get), the token and the answer are sealed
//! in the store and flushed; the same token sent again is not applied again but gets the same
//! answer, message and all. One change at a time passes through here, so a double press waits
//! for the first to finish rather than racing it.
//!
//! The page script sends forms with `X-Polyphony-Form: 1`; to it, a redirect is answered `204`
//! with the place in `X-Polyphony-Location`, so the script, not `fetch`, follows it (`fetch`
//! would follow it itself and take the page's one-off message with it).
//!
//! Limit: the token is written just after the change, not in the same write, so a kill in the
//! instant between the two (well under a millisecond) lets a resend apply the change twice. Making
//! that atomic needs the token in the case document's own change; a duplicate can be marked
//! entered in error, while a lost change could not be recovered, so the rare duplicate is the
//! side to err on. Tokens are forgotten after [`KEEP_FOR`].

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use polyphony_core::store::Store;
use serde::{Deserialize, Serialize};

use crate::auth::{form_pairs, Gate, SessionCtx, MAX_UPLOAD_BODY};

/// The store namespace of used form tokens.
const NS_ONCE: &str = "app-once";

/// How long a used token is remembered: longer than any tab is left open waiting for the app.
pub const KEEP_FOR: time::Duration = time::Duration::days(14);

/// The header the page script sends its forms with.
pub const FORM_HEADER: &str = "x-polyphony-form";

/// Where a redirect leads, for the page script (see the module doc).
pub const LOCATION_HEADER: &str = "x-polyphony-location";

/// What a form's first sending was answered with.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Answer {
    /// Seconds since the Unix epoch.
    at: i64,
    /// Where it redirected.
    location: String,
    /// The one-off message it left.
    flash: Option<String>,
}

/// Serialises changes that carry a token, so a token is checked and recorded as one step; the
/// store the used tokens are kept in, and the gate whose one-off messages an answer repeats.
pub struct Forms {
    one_at_a_time: tokio::sync::Mutex<()>,
    store: Arc<dyn Store>,
    gate: Arc<Gate>,
}

impl Forms {
    /// Used tokens kept in `store`; messages left through `gate`.
    pub fn new(store: Arc<dyn Store>, gate: Arc<Gate>) -> Forms {
        Forms {
            one_at_a_time: tokio::sync::Mutex::new(()),
            store,
            gate,
        }
    }
}

/// The token a form body carries, if it is one the app could have made (64 hex digits).
fn token_of(body: &[u8]) -> Option<String> {
    form_pairs(body)
        .into_iter()
        .find(|(k, _)| k == "_once")
        .map(|(_, v)| v)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The middleware (inside [`crate::auth::guard`], which has checked the session and CSRF token).
pub async fn once(State(forms): State<Arc<Forms>>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let from_script = req.headers().contains_key(FORM_HEADER);
    let session = req.extensions().get::<SessionCtx>().cloned();
    let (parts, body) = req.into_parts();
    // The guard has bounded the body already (a form with a file may be larger).
    let Ok(bytes) = to_bytes(body, MAX_UPLOAD_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "The request was too large.").into_response();
    };
    let token = match crate::auth::multipart_boundary(&parts.headers) {
        Some(b) => crate::auth::multipart_field(bytes.clone(), &b, "_once")
            .await
            .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())),
        None => token_of(&bytes),
    };
    let req = Request::from_parts(parts, Body::from(bytes));
    let (Some(token), Some(session)) = (token, session) else {
        return for_script(next.run(req).await, from_script);
    };
    let _turn = forms.one_at_a_time.lock().await;
    let store = forms.store.clone();
    if let Some(answer) = recall(store.as_ref(), &token) {
        tracing::info!(path = %req.uri().path(), "a form was sent again: answered as the first time, not applied twice");
        if let Some(flash) = answer.flash {
            forms.gate.set_flash(&session.id, flash);
        }
        return for_script(Redirect::to(&answer.location).into_response(), from_script);
    }
    let res = next.run(req).await;
    if res.status().is_redirection() {
        let location = res
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or("/")
            .to_string();
        let answer = Answer {
            at: time::OffsetDateTime::now_utc().unix_timestamp(),
            location,
            flash: forms.gate.peek_flash(&session.id),
        };
        let recorded =
            tokio::task::spawn_blocking(move || record(store.as_ref(), &token, &answer)).await;
        if !matches!(recorded, Ok(Ok(()))) {
            tracing::warn!("could not record a used form token: sending it again would repeat it");
        }
    }
    for_script(res, from_script)
}

/// To the page script, a redirect is a `204` saying where to go (see the module doc).
fn for_script(mut res: Response, from_script: bool) -> Response {
    if !from_script || !res.status().is_redirection() {
        return res;
    }
    let to = res
        .headers()
        .get(header::LOCATION)
        .cloned()
        .unwrap_or(HeaderValue::from_static("/"));
    *res.status_mut() = StatusCode::NO_CONTENT;
    res.headers_mut().remove(header::LOCATION);
    res.headers_mut().insert(LOCATION_HEADER, to);
    res
}

fn recall(store: &dyn Store, token: &str) -> Option<Answer> {
    let bytes = store.get_meta(NS_ONCE, token).ok()??;
    serde_json::from_slice(&bytes).ok()
}

fn record(
    store: &dyn Store,
    token: &str,
    answer: &Answer,
) -> Result<(), polyphony_core::store::StoreError> {
    let bytes = serde_json::to_vec(answer).unwrap_or_default();
    store.put_meta(NS_ONCE, token, &bytes)?;
    store.flush()
}

/// Forget tokens used more than [`KEEP_FOR`] ago (at start: the list only grows while running).
pub fn forget_old(store: &dyn Store) {
    let cutoff = (time::OffsetDateTime::now_utc() - KEEP_FOR).unix_timestamp();
    let Ok(all) = store.scan_meta(NS_ONCE) else {
        return;
    };
    for (token, bytes) in all {
        let old = serde_json::from_slice::<Answer>(&bytes).map_or(true, |a| a.at < cutoff);
        if old {
            let _ = store.delete_meta(NS_ONCE, &token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polyphony_core::store::MemoryStore;

    #[test]
    fn only_well_formed_tokens_count() {
        let t = "a".repeat(64);
        assert_eq!(token_of(format!("x=1&_once={t}").as_bytes()), Some(t));
        assert_eq!(token_of(b"_once=short"), None);
        assert_eq!(token_of(b"x=1"), None);
    }

    #[test]
    fn old_tokens_are_forgotten_and_recent_ones_kept() {
        let store = MemoryStore::new();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let answer = |at| Answer {
            at,
            location: "/".into(),
            flash: None,
        };
        record(&store, "recent", &answer(now)).unwrap();
        record(&store, "old", &answer(now - KEEP_FOR.whole_seconds() - 60)).unwrap();
        forget_old(&store);
        assert!(recall(&store, "recent").is_some());
        assert!(recall(&store, "old").is_none());
    }
}
