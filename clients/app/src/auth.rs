//! Who may use the app: only the person who launched it, in their own browser.
//!
//! The app listens on loopback, which every local user and every web page the browser opens can
//! reach. So loopback is not trusted on its own:
//! - **Launch secret.** Each launch makes a random secret and opens `/launch?secret=...` in the
//!   browser. Only that URL starts a session; everything else without a session is refused (403).
//!   It starts one session, once, within [`LAUNCH_TTL`] of the app starting: a link left in a
//!   terminal's scrollback, a shell history or a file is of no use to whoever finds it later.
//! - **Session cookie.** The launch swaps the secret for a random session id in an `HttpOnly`,
//!   `SameSite=Strict` cookie, so scripts cannot read it and other sites cannot send it.
//! - **The app's own origin.** Cookies ignore ports, and to a browser every port of `127.0.0.1`
//!   is the same site: served from `127.0.0.1:PORT`, the session cookie went to any server on
//!   another port of `127.0.0.1` the browser visited (which could replay it from outside the
//!   browser), and pages there could send requests that carried it (`SameSite` does not stop a
//!   same-site request). So the app is served at a secret name of its own,
//!   `http://<label>.localhost:PORT/`, with a random 128-bit label, made for the profile's first
//!   run and kept (sealed in its store, with the port) so a tab left open when the app stopped
//!   can reach it again ([`crate::address`]); sessions are not kept. Browsers resolve every
//!   `*.localhost` name to loopback themselves, without DNS, and Chromium counts each one as a
//!   site of its own. The cookie is host-only (no `Domain`), so the browser sends it to that name
//!   alone: never to `127.0.0.1`, `localhost` or another `*.localhost` name on any port. Only who
//!   holds the launch link knows the name. [`crate::loopback`] holds the port on both loopback
//!   addresses, because the browser may try either.
//! - **Host check.** Requests must name the app's host, which also defeats DNS rebinding (a
//!   hostile page pointing its own name at 127.0.0.1).
//! - **Fetch metadata.** Every request must carry `Sec-Fetch-Site` saying it comes from the app's
//!   own pages (`same-origin`) or from the user (`none`: a typed, opened or bookmarked link), and
//!   an `Origin`, when the browser sends one, must be the app's. Browsers send these headers to
//!   `localhost` names and a page cannot forge them, so no page elsewhere can drive the app, even
//!   one that learnt its name. A request without the header is refused: it is a browser too old
//!   to protect the user, or a program, and a program has no cookie to send.
//! - **CSRF token.** Each session has a token; every request that changes anything (any method but
//!   GET and HEAD) must carry it, in the form field `_csrf` or the `X-CSRF-Token` header.
//!
//! Limits: the name is in the browser's history, and programs the same user runs can read the
//! user's files anyway; those are outside what a web app can defend. A browser that does not
//! resolve `*.localhost` names (some older Safari) cannot open the app.
//!
//! The checks live in one middleware, [`guard`], in front of every route, so no handler can forget
//! them.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use serde::Deserialize;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "polyphony_session";

/// How long after the app starts its launch link can let a browser in. The app opens the browser
/// itself at once, so a minute is ample even on a slow machine; after that the link is worthless.
pub const LAUNCH_TTL: Duration = Duration::from_secs(60);

/// Where the gate reads the time: the monotonic clock, or one a test moves on.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The monotonic clock (not the wall clock, which the user or NTP may move).
pub fn system_clock() -> Clock {
    Arc::new(Instant::now)
}

/// Why the launch link did not let this browser in. The messages are shown to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LaunchRefused {
    /// The link's secret is not this launch's (a mistyped link, or one from an earlier run).
    #[error("The secret in this link is wrong or missing: it may be from an earlier time Polyphony was started.")]
    Wrong,
    /// The link was used already: it lets one browser in, once.
    #[error("This launch link has already been used: it lets one browser in, once.")]
    Used,
    /// The link is older than [`LAUNCH_TTL`].
    #[error("This launch link has expired: it works only for a minute after Polyphony starts.")]
    Expired,
}

/// What has become of the launch secret.
struct LaunchState {
    issued: Instant,
    used: bool,
}

/// The largest request body accepted (a meeting's notes can be long).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// The largest body of a form that carries a file (an attachment of at most
/// [`MAX_ATTACHMENT_BYTES`](polyphony_core::model::MAX_ATTACHMENT_BYTES), and the form's fields).
pub const MAX_UPLOAD_BODY: usize = polyphony_core::model::MAX_ATTACHMENT_BYTES as usize + (1 << 20);

/// A fresh random token: 32 bytes as hex.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// A fresh random host label: 16 bytes (128 bits) as hex, a valid DNS label.
fn random_label() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Compare secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Write `contents` (a launch link) to `path` so that only this user can ever read it.
///
/// The file is created afresh with mode 0600 beside `path` and renamed over it: opening `path`
/// itself would keep the mode of a file already there (one a script made with `touch`, or an
/// older run under another umask), and setting the mode afterwards leaves a moment when others
/// can read the secret. The rename also means no reader sees half a link.
pub fn write_secret_file(path: &Path, contents: &str) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        &random_token()[..16]
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// One browser session.
#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    flash: Option<String>,
}

/// What a handler knows about the session it serves.
#[derive(Debug, Clone)]
pub struct SessionCtx {
    /// The session id (the cookie value).
    pub id: String,
    /// The CSRF token to put in forms.
    pub csrf: String,
}

/// The launch secret and the sessions started with it.
pub struct Gate {
    secret: String,
    launch: Mutex<LaunchState>,
    clock: Clock,
    sessions: Mutex<HashMap<String, Session>>,
    label: String,
    origin: OnceLock<Origin>,
}

/// The app's origin once it is bound: `http://<label>.localhost:<port>`.
struct Origin {
    /// What the `Host` header must say.
    host: String,
    /// What the `Origin` header must say, when there is one.
    origin: String,
}

impl Gate {
    /// A gate with a new random launch secret, issued now.
    pub fn new() -> Self {
        Self::with_secret(random_token())
    }

    /// A gate with a known secret (tests).
    pub fn with_secret(secret: String) -> Self {
        Self::with_clock(secret, system_clock())
    }

    /// A gate with a known secret and a clock the caller controls, so a test can go past
    /// [`LAUNCH_TTL`] without waiting for it. The secret is issued at the clock's present time.
    pub fn with_clock(secret: String, clock: Clock) -> Self {
        let issued = clock();
        Gate {
            secret,
            launch: Mutex::new(LaunchState {
                issued,
                used: false,
            }),
            clock,
            sessions: Mutex::new(HashMap::new()),
            label: random_label(),
            origin: OnceLock::new(),
        }
    }

    /// The same gate under `label`, the host label of an earlier run (see [`crate::address`]), so
    /// a tab still open from that run can reach this one. A label this app could not have made
    /// is ignored.
    pub fn with_label(mut self, label: String) -> Self {
        if label.len() == 32 && label.bytes().all(|b| b.is_ascii_hexdigit()) {
            self.label = label.to_ascii_lowercase();
        }
        self
    }

    /// The host label under `.localhost` (to remember it for the next run).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The launch secret (for the launch URL; it is worthless once used or expired).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Serve on `addr`'s port under this launch's host name, and accept only requests that name
    /// it. Set once, when the app is bound.
    pub fn bind(&self, addr: std::net::SocketAddr) {
        let host = match addr.port() {
            80 => format!("{}.localhost", self.label),
            port => format!("{}.localhost:{port}", self.label),
        };
        let _ = self.origin.set(Origin {
            origin: format!("http://{host}"),
            host,
        });
    }

    /// The app's origin (`http://<label>.localhost:<port>`), once bound.
    pub fn origin(&self) -> Option<&str> {
        self.origin.get().map(|o| o.origin.as_str())
    }

    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(bound) = self.origin.get() else {
            return true; // not bound to a socket (in-process tests)
        };
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| h.eq_ignore_ascii_case(&bound.host))
    }

    /// Whether an `Origin` header names the app (unbound, in-process: the host asked for).
    fn origin_allowed(&self, origin: &str, headers: &HeaderMap) -> bool {
        match self.origin.get() {
            Some(bound) => origin.eq_ignore_ascii_case(&bound.origin),
            None => {
                let host = headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default();
                origin == format!("http://{host}")
            }
        }
    }

    /// Start a session if `secret` is the launch secret, unused and younger than [`LAUNCH_TTL`];
    /// returns the new session id. A wrong secret is told apart only after the comparison, so
    /// a guess learns nothing of whether the real link was used.
    pub fn launch(&self, secret: &str) -> Result<String, LaunchRefused> {
        {
            let mut launch = self.launch.lock().unwrap_or_else(|e| e.into_inner());
            if !same_secret(secret, &self.secret) {
                return Err(LaunchRefused::Wrong);
            }
            if launch.used {
                return Err(LaunchRefused::Used);
            }
            if (self.clock)().saturating_duration_since(launch.issued) >= LAUNCH_TTL {
                return Err(LaunchRefused::Expired);
            }
            launch.used = true;
        }
        let id = random_token();
        let s = Session {
            csrf: random_token(),
            flash: None,
        };
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), s);
        Ok(id)
    }

    fn session(&self, id: &str) -> Option<SessionCtx> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        // Look the id up by constant-time comparison of the candidate we hold, not by hashing the
        // attacker's input into a timing side channel: the map is tiny (one browser).
        sessions
            .iter()
            .find(|(k, _)| same_secret(k, id))
            .map(|(k, s)| SessionCtx {
                id: k.clone(),
                csrf: s.csrf.clone(),
            })
    }

    /// Leave a one-off message for the session's next page.
    pub fn set_flash(&self, session: &str, message: impl Into<String>) {
        if let Some(s) = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(session)
        {
            s.flash = Some(message.into());
        }
    }

    /// The session's one-off message, if any, left in place.
    pub fn peek_flash(&self, session: &str) -> Option<String> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(session)
            .and_then(|s| s.flash.clone())
    }

    /// Take the session's one-off message, if any.
    pub fn take_flash(&self, session: &str) -> Option<String> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(session)
            .and_then(|s| s.flash.take())
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// What to do about a refusal: most need the link the app printed; a spent link needs a new one.
const USE_THE_LINK: &str =
    "Open Polyphony with the link it printed when it started on this device.";
const RELAUNCH: &str = "To get a new link, stop Polyphony and start it again on this device: \
everything you saved is kept, and it gives you a new link.";

fn refused(status: StatusCode, why: &str) -> Response {
    refused_with(status, why, USE_THE_LINK)
}

fn refused_with(status: StatusCode, why: &str, advice: &str) -> Response {
    let body = format!(
        "<!DOCTYPE html><html lang=\"en-GB\"><head><meta charset=\"utf-8\"><title>Not allowed - Polyphony</title></head>\
<body><main><h1>You cannot use Polyphony from here</h1><p>{}</p>\
<p>{}</p></main></body></html>",
        polyphony_core::export::escape_html(why),
        polyphony_core::export::escape_html(advice)
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// A text field of a form that carries a file (`multipart/form-data`), read with multer from the
/// buffered body: the CSRF token (`_csrf`) or the one-time token (`_once`). The app's forms put
/// these first, and the reading stops at the field.
pub(crate) async fn multipart_field(
    body: axum::body::Bytes,
    boundary: &str,
    name: &str,
) -> Option<String> {
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    while let Ok(Some(field)) = form.next_field().await {
        if field.name() == Some(name) {
            return field.text().await.ok();
        }
    }
    None
}

/// The boundary of a `multipart/form-data` body, if the request is one.
pub(crate) fn multipart_boundary(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok())
}

/// The CSRF token a form body carries, if any.
fn form_token(body: &[u8]) -> Option<String> {
    form_pairs(body)
        .into_iter()
        .find(|(k, _)| k == "_csrf")
        .map(|(_, v)| v)
}

/// Decode urlencoded pairs by hand: `+` is a space, `%XX` a byte; bad escapes are kept literally.
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    fn decode(s: &[u8]) -> String {
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            match s[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < s.len() => match (hex_val(s[i + 1]), hex_val(s[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                },
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    fn hex_val(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    body.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut it = p.splitn(2, |b| *b == b'=');
            let k = it.next().unwrap_or_default();
            let v = it.next().unwrap_or_default();
            (decode(k), decode(v))
        })
        .collect()
}

/// Why a request does not come from the app's own pages or from the user, if it does not: its
/// `Sec-Fetch-Site` is not `same-origin` or `none`, or is missing, or its `Origin` is another's.
fn from_elsewhere(gate: &Gate, headers: &HeaderMap) -> Option<&'static str> {
    let site = headers
        .get("sec-fetch-site")
        .map(|v| v.to_str().unwrap_or("?"));
    match site {
        Some("same-origin" | "none") => {}
        Some(_) => return Some("This request came from another site or page, so it was refused."),
        None => return Some(
            "This browser did not say where the request came from, so Polyphony cannot tell it \
from another site's. Use a current browser (Chrome, Edge or Firefox).",
        ),
    }
    let origin = headers.get(header::ORIGIN)?;
    let ok = origin
        .to_str()
        .is_ok_and(|o| gate.origin_allowed(o, headers));
    (!ok).then_some("This request came from another site or page, so it was refused.")
}

/// The gate in front of every route: host check, fetch metadata and Origin, session cookie, CSRF
/// token on every change.
pub async fn guard(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    let gate = &*gate;
    if !gate.host_allowed(req.headers()) {
        return refused(
            StatusCode::FORBIDDEN,
            "This request named an address Polyphony does not answer to.",
        );
    }
    if let Some(why) = from_elsewhere(gate, req.headers()) {
        tracing::warn!(why, path = %req.uri().path(), "refused a request from elsewhere");
        return refused(StatusCode::FORBIDDEN, why);
    }
    if req.uri().path() == "/launch" {
        return next.run(req).await;
    }
    let Some(session) =
        cookie_value(req.headers(), SESSION_COOKIE).and_then(|id| gate.session(&id))
    else {
        return refused(
            StatusCode::FORBIDDEN,
            "This browser has not been let in: the link with this launch's secret was not used.",
        );
    };
    if req.method() == Method::GET || req.method() == Method::HEAD {
        let mut req = req;
        req.extensions_mut().insert(session);
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let boundary = multipart_boundary(&parts.headers);
    let limit = if boundary.is_some() {
        MAX_UPLOAD_BODY
    } else {
        MAX_BODY
    };
    let bytes = match to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The request was too large: a file can be at most 20 MB.",
            )
        }
    };
    let header_token = parts
        .headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let token = match (header_token, &boundary) {
        (Some(t), _) => Some(t),
        (None, Some(b)) => multipart_field(bytes.clone(), b, "_csrf").await,
        (None, None) => form_token(&bytes),
    };
    if !token.is_some_and(|t| same_secret(&t, &session.csrf)) {
        return refused(
            StatusCode::FORBIDDEN,
            "This change did not carry the form's security token, so it was refused. Go back, reload the page and try again.",
        );
    }
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(session);
    next.run(req).await
}

/// The launch URL's query.
#[derive(Debug, Deserialize)]
pub struct LaunchQuery {
    secret: Option<String>,
}

/// `GET /launch?secret=...`: swap the launch secret for a session cookie, once.
///
/// A browser that is already in and follows the link again (the user clicked it twice) is sent
/// to its caseload: its cookie, not the spent link, is what lets it in, and no new session is made.
pub async fn launch(
    State(gate): State<Arc<Gate>>,
    Query(q): Query<LaunchQuery>,
    headers: HeaderMap,
) -> Response {
    let id = match gate.launch(q.secret.as_deref().unwrap_or_default()) {
        Ok(id) => id,
        Err(_)
            if cookie_value(&headers, SESSION_COOKIE)
                .and_then(|id| gate.session(&id))
                .is_some() =>
        {
            return (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
        }
        Err(why) => {
            tracing::warn!(%why, "refused a launch link");
            let advice = match why {
                LaunchRefused::Wrong => USE_THE_LINK,
                LaunchRefused::Used | LaunchRefused::Expired => RELAUNCH,
            };
            return refused_with(StatusCode::FORBIDDEN, &why.to_string(), advice);
        }
    };
    // No `Domain`: host-only, so the browser sends it to this launch's own name and nowhere else.
    let cookie = format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict");
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/".to_string()),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }

    /// A clock that stands still until the test moves it.
    fn manual_clock() -> (Clock, Arc<Mutex<Instant>>) {
        let now = Arc::new(Mutex::new(Instant::now()));
        let read = now.clone();
        (Arc::new(move || *read.lock().unwrap()), now)
    }

    #[test]
    fn only_the_launch_secret_starts_a_session() {
        let g = Gate::with_secret("s3cret".into());
        assert_eq!(g.launch("wrong"), Err(LaunchRefused::Wrong));
        let id = g.launch("s3cret").unwrap();
        let s = g.session(&id).unwrap();
        assert_eq!(s.csrf.len(), 64);
        assert!(g.session("not-a-session").is_none());
    }

    #[test]
    fn the_launch_secret_starts_one_session_only() {
        let g = Gate::with_secret("s3cret".into());
        let first = g.launch("s3cret").unwrap();
        assert_eq!(g.launch("s3cret"), Err(LaunchRefused::Used));
        assert_eq!(g.launch("wrong"), Err(LaunchRefused::Wrong));
        // The session it started goes on.
        assert!(g.session(&first).is_some());
        assert_eq!(g.sessions.lock().unwrap().len(), 1);
    }

    #[test]
    fn the_launch_secret_expires_after_the_limit() {
        let (clock, now) = manual_clock();
        let late = Gate::with_clock("s3cret".into(), clock.clone());
        *now.lock().unwrap() += LAUNCH_TTL;
        assert_eq!(late.launch("s3cret"), Err(LaunchRefused::Expired));
        *now.lock().unwrap() += Duration::from_secs(3600);
        assert_eq!(late.launch("s3cret"), Err(LaunchRefused::Expired));
        assert!(late.sessions.lock().unwrap().is_empty());
        // Just inside the limit it still works.
        let on_time = Gate::with_clock("s3cret".into(), clock);
        *now.lock().unwrap() += LAUNCH_TTL - Duration::from_millis(1);
        assert!(on_time.launch("s3cret").is_ok());
    }

    #[test]
    fn form_bodies_decode_with_repeated_names() {
        let pairs = form_pairs(b"_csrf=ab%2Bc&who=person&who=member%3A1&note=two+words&bad=%zz");
        assert_eq!(pairs[0], ("_csrf".into(), "ab+c".into()));
        assert_eq!(pairs[1], ("who".into(), "person".into()));
        assert_eq!(pairs[2], ("who".into(), "member:1".into()));
        assert_eq!(pairs[3], ("note".into(), "two words".into()));
        assert_eq!(pairs[4], ("bad".into(), "%zz".into()));
    }

    #[cfg(unix)]
    #[test]
    fn the_secret_file_is_private_even_over_a_file_others_could_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("launch-url");
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_secret_file(&path, "http://x/launch?secret=1\n").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(format!("{mode:o}"), "600");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "http://x/launch?secret=1\n"
        );
        // Nothing is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A fresh file, too, whatever the process's umask.
        let fresh = dir.path().join("fresh");
        write_secret_file(&fresh, "x").unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(format!("{mode:o}"), "600");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; polyphony_session=xyz; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_value(&h, SESSION_COOKIE).as_deref(), Some("xyz"));
    }
}
