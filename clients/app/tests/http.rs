//! The app over HTTP, in process: who gets in, CSRF on every change, and the pages a practitioner
//! goes through, rendered from a real profile (in-memory store, enrolled without a server).

// Test code: its helpers unwrap, as the tests do (the workspace forbids unwrap outside tests).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use polyphony_app::auth::{Gate, LAUNCH_TTL};
use polyphony_app::{server, App, Config};
use polyphony_core::model::MeetingState;
use polyphony_core::profile::{Enrolment, Profile};
use polyphony_core::store::{MemoryStore, Store};
use polyphony_core::sync::TeamInfo;
use polyphony_core::{PractitionerId, TeamId};
use tower::ServiceExt;

const SECRET: &str = "launch-secret-for-tests";
const SEC_FETCH_SITE: &str = "sec-fetch-site";

/// A profile enrolled as if by a server: the enrolment record is written where the profile keeps
/// it, with a dead server address (nothing here syncs).
fn enrolled_profile(home: &Path) -> Profile {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let e = Enrolment {
        server: "127.0.0.1:9".into(),
        servers: Vec::new(),
        device_name: "test laptop".into(),
        practitioner: PractitionerId::random(),
        practitioner_name: "Robin Practitioner".into(),
        teams: vec![TeamInfo {
            id: TeamId::random(),
            name: "North".into(),
        }],
        ca: String::new(),
        certificate: String::new(),
        key_pem: String::new(),
        enrolled_at: "2026-01-01T00:00:00Z".into(),
    };
    store
        .put_meta("profile", "enrolment", &serde_json::to_vec(&e).unwrap())
        .unwrap();
    Profile::from_store(home, store).unwrap()
}

/// An app over an enrolled profile that does not sync, behind `gate`, not yet launched.
fn quiet_app(
    unsynced_warning: time::Duration,
    gate: Gate,
) -> (tempfile::TempDir, Arc<App>, Router) {
    let dir = tempfile::tempdir().unwrap();
    let profile = enrolled_profile(dir.path());
    let config = Config {
        background_sync: false,
        unsynced_warning,
        // Filled only by the test that downloads a PDF (polyphony_e2e::pdf_fonts).
        font_dir: Some(polyphony_e2e::pdf_font_dir()),
        ..Config::new(dir.path().to_path_buf())
    };
    let app = App::with_gate(config, profile, gate);
    let router = server::router(app.clone());
    (dir, app, router)
}

fn launch_request(cookie: Option<&str>) -> Request<Body> {
    let mut r = Request::get(format!("/launch?secret={SECRET}")).header(SEC_FETCH_SITE, "none");
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.body(Body::empty()).unwrap()
}

struct Harness {
    _dir: tempfile::TempDir,
    app: Arc<App>,
    router: Router,
    cookie: String,
    csrf: String,
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn location(&self) -> String {
        self.headers
            .get(header::LOCATION)
            .map(|l| l.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

/// Send a request as the app's own page would: the browser marks it `Sec-Fetch-Site:
/// same-origin` unless the test says otherwise.
async fn send(router: &Router, mut req: Request<Body>) -> Reply {
    if !req.headers().contains_key(SEC_FETCH_SITE) {
        req.headers_mut()
            .insert(SEC_FETCH_SITE, "same-origin".parse().unwrap());
    }
    send_bare(router, req).await
}

/// Send a request exactly as given (to test what a request without browser headers gets).
async fn send_bare(router: &Router, req: Request<Body>) -> Reply {
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl Harness {
    async fn new() -> Harness {
        Self::with_warning_after(time::Duration::minutes(120)).await
    }

    async fn with_warning_after(unsynced_warning: time::Duration) -> Harness {
        let (dir, app, router) = quiet_app(unsynced_warning, Gate::with_secret(SECRET.into()));
        let launch = send(&router, launch_request(None)).await;
        assert_eq!(launch.status, StatusCode::SEE_OTHER);
        let cookie = launch.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let mut h = Harness {
            _dir: dir,
            app,
            router,
            cookie,
            csrf: String::new(),
        };
        let page = h.get("/").await;
        let marker = r#"<meta name="csrf-token" content=""#;
        let at = page.body.find(marker).expect("csrf meta") + marker.len();
        h.csrf = page.body[at..at + 64].to_string();
        h
    }

    async fn get(&self, path: &str) -> Reply {
        send(
            &self.router,
            Request::get(path)
                .header(header::COOKIE, &self.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn post(&self, path: &str, pairs: &[(&str, &str)]) -> Reply {
        let mut all = vec![("_csrf", self.csrf.as_str())];
        all.extend_from_slice(pairs);
        self.post_raw(path, form(&all)).await
    }

    async fn post_raw(&self, path: &str, body: String) -> Reply {
        send(
            &self.router,
            Request::post(path)
                .header(header::COOKIE, &self.cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }

    /// Open a case and return its id.
    async fn open_case(&self, name: &str) -> String {
        let r = self.post("/cases", &[("name", name)]).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        r.location().trim_start_matches("/case/").to_string()
    }
}

fn id_after(location: &str, marker: &str) -> String {
    let at = location.find(marker).unwrap() + marker.len();
    location[at..]
        .split(['/', '#', '?'])
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_request_without_the_launch_secret_is_refused() {
    let (_dir, _app, router) = quiet_app(
        time::Duration::minutes(120),
        Gate::with_secret(SECRET.into()),
    );
    let anonymous = send(&router, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(anonymous.status, StatusCode::FORBIDDEN);
    assert!(!anonymous.body.contains("caseload"));
    let assets = send(
        &router,
        Request::get("/assets/app.js").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(assets.status, StatusCode::FORBIDDEN);
    let wrong = send(
        &router,
        Request::get("/launch?secret=guess")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let forged = send(
        &router,
        Request::get("/")
            .header(header::COOKIE, "polyphony_session=forged")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    // The real launch: the cookie is HttpOnly and SameSite=Strict, and it lets the browser in.
    let launch = send(&router, launch_request(None)).await;
    assert_eq!(launch.status, StatusCode::SEE_OTHER);
    let cookie = launch.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let ok = send(
        &router,
        Request::get("/")
            .header(header::COOKIE, cookie.split(';').next().unwrap())
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(ok.body.contains("Your caseload"));
}

#[tokio::test]
async fn the_launch_link_lets_one_browser_in_once() {
    // The harness has followed the link: anyone else who has it now is refused, and told how
    // to get a new one.
    let h = Harness::new().await;
    let again = send(&h.router, launch_request(None)).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);
    assert!(!again.headers.contains_key(header::SET_COOKIE));
    assert!(again.body.contains("already been used"), "{}", again.body);
    assert!(again.body.contains("start it again"), "{}", again.body);
    // The browser already in, following the link again, goes back to its caseload.
    let mine = send(&h.router, launch_request(Some(&h.cookie))).await;
    assert_eq!(mine.status, StatusCode::SEE_OTHER);
    assert_eq!(mine.location(), "/");
    assert!(!mine.headers.contains_key(header::SET_COOKIE));
}

#[tokio::test]
async fn the_launch_link_is_refused_after_the_limit() {
    let now = Arc::new(Mutex::new(Instant::now()));
    let read = now.clone();
    let gate = Gate::with_clock(SECRET.into(), Arc::new(move || *read.lock().unwrap()));
    let (_dir, _app, router) = quiet_app(time::Duration::minutes(120), gate);
    *now.lock().unwrap() += LAUNCH_TTL + Duration::from_millis(1);
    let late = send(&router, launch_request(None)).await;
    assert_eq!(late.status, StatusCode::FORBIDDEN);
    assert!(!late.headers.contains_key(header::SET_COOKIE));
    assert!(late.body.contains("expired"), "{}", late.body);
    assert!(late.body.contains("start it again"), "{}", late.body);
}

#[tokio::test]
async fn a_change_without_the_csrf_token_is_refused() {
    let h = Harness::new().await;
    let missing = h.post_raw("/cases", form(&[("name", "Alex Smith")])).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    let wrong = h
        .post_raw(
            "/cases",
            form(&[("_csrf", &"0".repeat(64)), ("name", "Alex Smith")]),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let cross_site = send(
        &h.router,
        Request::post("/cases")
            .header(header::COOKIE, &h.cookie)
            .header(header::ORIGIN, "http://evil.example")
            .header(header::HOST, "127.0.0.1:1")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form(&[("_csrf", &h.csrf), ("name", "Alex")])))
            .unwrap(),
    )
    .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    assert!(h.app.profile().await.case_ids().unwrap().is_empty());
    // With the token, the same change goes through.
    h.open_case("Alex Smith").await;
    assert_eq!(h.app.profile().await.case_ids().unwrap().len(), 1);
}

#[tokio::test]
async fn requests_naming_another_host_are_refused() {
    let h = Harness::new().await;
    h.app.gate.bind("127.0.0.1:4567".parse().unwrap());
    let origin = h.app.gate.origin().unwrap().to_string();
    let own_host = origin.trim_start_matches("http://").to_string();
    // The app's own name: a fresh 128-bit label under .localhost, with the port.
    let label = own_host.strip_suffix(".localhost:4567").unwrap();
    assert_eq!(label.len(), 32, "{own_host}");
    assert!(label.bytes().all(|b| b.is_ascii_hexdigit()));
    let with_host = |host: &str| {
        Request::get("/")
            .header(header::HOST, host)
            .header(header::COOKIE, &h.cookie)
            .body(Body::empty())
            .unwrap()
    };
    // DNS rebinding, the bare loopback address and other localhost names are all refused.
    for host in [
        "attacker.example:4567",
        "127.0.0.1:4567",
        "localhost:4567",
        "other.localhost:4567",
        &format!("{label}.localhost:4568"),
    ] {
        let r = send(&h.router, with_host(host)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "Host: {host}");
    }
    let own = send(&h.router, with_host(&own_host)).await;
    assert_eq!(own.status, StatusCode::OK);
    // A form posted from the app's own page names the app's origin; any other is refused.
    for (from, expect) in [
        (origin.as_str(), StatusCode::SEE_OTHER),
        ("http://127.0.0.1:4567", StatusCode::FORBIDDEN),
    ] {
        let r = send(
            &h.router,
            Request::post("/cases")
                .header(header::HOST, &own_host)
                .header(header::ORIGIN, from)
                .header(header::COOKIE, &h.cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(form(&[("_csrf", &h.csrf), ("name", "Alex")])))
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, expect, "Origin: {from}");
    }
    // Two launches never share a name.
    let (one, two) = (Gate::new(), Gate::new());
    one.bind("127.0.0.1:4567".parse().unwrap());
    two.bind("127.0.0.1:4567".parse().unwrap());
    assert_ne!(one.origin(), two.origin());
}

#[tokio::test]
async fn a_page_from_another_origin_cannot_use_the_session() {
    let h = Harness::new().await;
    let with_site = |site: &str| {
        Request::get("/")
            .header(header::COOKIE, &h.cookie)
            .header(SEC_FETCH_SITE, site)
            .body(Body::empty())
            .unwrap()
    };
    // Another port on 127.0.0.1 is the same site (ports do not count); any other is cross-site.
    for site in ["same-site", "cross-site"] {
        let r = send(&h.router, with_site(site)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "Sec-Fetch-Site: {site}");
        assert!(!r.body.contains("Your caseload"));
    }
    // The user's own visits and the app's own requests.
    for site in ["none", "same-origin"] {
        let r = send(&h.router, with_site(site)).await;
        assert_eq!(r.status, StatusCode::OK, "Sec-Fetch-Site: {site}");
    }
    // An Origin that is not the app's, even on a GET (a page's fetch), is refused.
    let foreign = send(
        &h.router,
        Request::get("/status.json")
            .header(header::COOKIE, &h.cookie)
            .header(header::ORIGIN, "http://127.0.0.1:8000")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    // A request that says nothing of where it comes from is not trusted either.
    let bare = send_bare(
        &h.router,
        Request::get("/")
            .header(header::COOKIE, &h.cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(bare.status, StatusCode::FORBIDDEN);
    assert!(bare.body.contains("current browser"), "{}", bare.body);
}

#[tokio::test]
async fn every_response_forbids_external_requests_and_caching_of_records() {
    let h = Harness::new().await;
    let page = h.get("/").await;
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(page.headers[header::REFERRER_POLICY], "same-origin");
    // No page loads anything from another host (xmlns names are not requests), and the styles
    // carry no font from one.
    for needle in [r#"src="http"#, r#"href="http"#, "url(http", "//fonts."] {
        assert!(!page.body.contains(needle), "{needle} in page");
    }
    let css = h.get("/assets/nhsuk-frontend.min.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(!css.body.contains("@font-face{") && !css.body.contains("url(http"));
}

#[tokio::test]
async fn a_form_with_mistakes_shows_the_error_summary() {
    let h = Harness::new().await;
    let r = h
        .post("/cases", &[("name", "  "), ("nhs_number", "")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("nhsuk-error-summary"));
    assert!(r.body.contains(r##"href="#name""##));
    assert!(r.body.contains("<title>Error: Open a new case"));
    let bad_nhs = h
        .post("/cases", &[("name", "Alex"), ("nhs_number", "123")])
        .await;
    assert!(
        bad_nhs.body.contains(r##"href="#nhs_number""##),
        "{}",
        bad_nhs.body
    );
}

#[tokio::test]
async fn the_visit_from_case_to_decision() {
    let h = Harness::new().await;
    let case = h.open_case("Alex Smith").await;
    let me = h
        .app
        .profile()
        .await
        .enrolment()
        .unwrap()
        .practitioner
        .to_string();

    // The network.
    let r = h
        .post(
            &format!("/case/{case}/members"),
            &[
                ("name", "Sam Smith"),
                ("relationship", "my sister"),
                ("role", "family"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    h.post(
        &format!("/case/{case}/members"),
        &[
            ("name", "Dr Jo Patel"),
            ("relationship", "GP"),
            ("role", "professional"),
        ],
    )
    .await;
    let v = h.app.peek(case.parse().unwrap()).await.unwrap();
    let sam = v
        .network
        .iter()
        .find(|m| m.name == "Sam Smith")
        .unwrap()
        .meta
        .id;

    // A meeting with Sam and the practitioner.
    let r = h
        .post(
            &format!("/case/{case}/meetings"),
            &[
                ("at", "2026-03-14T10:30"),
                ("place", "home"),
                ("attendees", "person"),
                ("attendees", &format!("member:{sam}")),
                ("attendees", &format!("practitioner:{me}")),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let meeting = id_after(&r.location(), "/meeting/");
    let r = h
        .post(
            &format!("/case/{case}/meeting/{meeting}/text"),
            &[
                ("kind", "notes"),
                ("base", ""),
                ("text", "Alex talked about sleep."),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);

    // The case page: ecomap with a solid line to Sam, a dashed one to the GP.
    let page = h.get(&format!("/case/{case}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page
        .body
        .contains(r#"aria-labelledby="ecomap-title ecomap-desc""#));
    assert!(page
        .body
        .contains("Sam Smith (my sister), came to 1 meeting"));
    assert!(page
        .body
        .contains("Dr Jo Patel (GP), has not come to a meeting yet"));
    assert!(page.body.contains("app-ecomap__line--attended"));
    assert!(page.body.contains("app-ecomap__line--invited"));
    assert!(page.body.contains("The network as a list"));

    // The meeting page has the editors, live.
    let page = h.get(&format!("/case/{case}/meeting/{meeting}")).await;
    assert!(page.body.contains("Alex talked about sleep."));
    assert!(page.body.contains(r#"data-live-kind="notes""#));

    // A decision with two positions, one in disagreement.
    let r = h
        .post(
            &format!("/case/{case}/decisions"),
            &[
                ("text", "Try a week without the night medication"),
                ("proposed_by", "person"),
            ],
        )
        .await;
    let decision = id_after(&r.location(), "/decision/");
    h.post(
        &format!("/case/{case}/decision/{decision}/position"),
        &[
            ("who", "person"),
            ("stance", "agree"),
            ("words", "I want to sleep without feeling foggy"),
        ],
    )
    .await;
    h.post(
        &format!("/case/{case}/decision/{decision}/position"),
        &[
            ("who", &format!("member:{sam}")),
            ("stance", "disagree"),
            ("words", "I'm worried about the nights"),
        ],
    )
    .await;
    let r = h
        .post(
            &format!("/case/{case}/decision/{decision}/status"),
            &[("status", "agreed"), ("note", "")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = h.get(&format!("/case/{case}/decision/{decision}")).await;
    assert!(page.body.contains("I want to sleep without feeling foggy"));
    assert!(page.body.contains("I&#39;m worried about the nights"));
    assert!(page.body.contains(">Agreed<"));

    // The read-back, and the network copy in plain words.
    let r = h
        .post(
            &format!("/case/{case}/meeting/{meeting}/readback"),
            &[
                ("who", &format!("member:{sam}")),
                ("index", "1"),
                ("response", "added_words"),
                ("words", "Alex slept better on Tuesday"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    // Issue 15, part 3: the network copy is for a named member whose consent is given.
    let choose = h.get(&format!("/case/{case}/network-copy")).await;
    assert_eq!(choose.status, StatusCode::OK, "{}", choose.body);
    assert!(choose.body.contains("Sam Smith (my sister)") && choose.body.contains("not recorded"));
    assert!(
        !choose.body.contains(&format!("/network-copy/{sam}")),
        "no copy is offered for a member without consent"
    );
    let copy_of_sam = format!("/case/{case}/network-copy/{sam}");
    let refused = h.get(&copy_of_sam).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.body.contains("Sam Smith cannot be given a copy")
            && refused.body.contains("not recorded"),
        "{}",
        refused.body
    );
    assert!(!refused.body.contains("Alex slept better on Tuesday"));
    // Part 8: the member page says consent is not recorded, not that it was refused.
    let member_page = h.get(&format!("/case/{case}/member/{sam}")).await;
    assert!(
        member_page.body.contains("has not been recorded")
            && !member_page.body.contains("has not given consent"),
        "{}",
        member_page.body
    );
    let consent = format!("/case/{case}/member/{sam}/consent");
    h.post(&consent, &[("state", "given")]).await;
    let choose = h.get(&format!("/case/{case}/network-copy")).await;
    assert!(choose.body.contains(&format!("/network-copy/{sam}")));
    let copy = h.get(&copy_of_sam).await;
    assert_eq!(copy.status, StatusCode::OK, "{}", copy.body);
    assert!(copy.body.contains("What we have written with Alex Smith"));
    assert!(copy.body.contains("made for Sam Smith (my sister)"));
    assert!(copy.body.contains("Sam Smith (my sister) does not agree"));
    assert!(copy.body.contains("Alex slept better on Tuesday"));
    assert!(
        !copy.body.contains(&me),
        "internal ids stay out of the copy"
    );
    h.post(&consent, &[("state", "revoked")]).await;
    let member_page = h.get(&format!("/case/{case}/member/{sam}")).await;
    assert!(member_page.body.contains("has withdrawn consent"));
    let refused = h.get(&copy_of_sam).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains("withdrawn"), "{}", refused.body);

    // Entered in error: struck through, reason shown, still readable.
    let r = h
        .post(
            &format!("/case/{case}/entry/{meeting}/error"),
            &[
                ("kind", "mistake"),
                ("reason", "Recorded against the wrong person"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = h.get(&format!("/case/{case}")).await;
    assert!(page.body.contains("<s><a href="));
    assert!(page.body.contains("Recorded against the wrong person"));
    // The timeline is the model's, as the CLI prints it: the meeting stays on it, tagged, and
    // its marking is an event of its own (the app used to drop it).
    let timeline = page
        .body
        .split(r#"<ol class="app-timeline">"#)
        .nth(1)
        .and_then(|t| t.split("</ol>").next())
        .expect("the case page has a timeline");
    let meeting_row = timeline
        .split("<li>")
        .find(|row| row.contains("Meeting at "))
        .expect("the meeting is on the timeline");
    assert!(
        meeting_row.contains("Entered in error</strong>"),
        "{timeline}"
    );
    assert!(
        timeline.contains("marked entered in error: Recorded against the wrong person"),
        "{timeline}"
    );
    let page = h.get(&format!("/case/{case}/meeting/{meeting}")).await;
    assert!(page.body.contains("Alex talked about sleep."));
    assert!(!page.body.contains(r#"data-live-kind="notes""#));
    // A mistake can still turn out to be on the wrong person's record: only that is offered.
    assert!(page
        .body
        .contains("Was it recorded on the wrong person’s record?"));
    let widen = h.get(&format!("/case/{case}/entry/{meeting}/error")).await;
    assert!(widen.body.contains("is already marked as written wrongly"));
    assert!(!widen.body.contains(r#"value="mistake""#));
}

/// Issue 15, part 1: dates are typed in the NHS date input (day, month, year boxes and a UK time),
/// never the browser's picker; a summer meeting booked in winter is stored at the summer offset
/// and shown at the clock time typed, saying "UK time"; the hour that happens twice when the
/// clocks go back is refused with words that say how to choose. (The app's zone is the default,
/// Europe/London, from the bundled database: this test does not depend on the machine's zone.)
#[tokio::test]
async fn dates_are_typed_day_month_year_and_shown_in_uk_time_across_clock_changes() {
    let h = Harness::new().await;
    let case = h.open_case("Alex Smith").await;
    let form = h.get(&format!("/case/{case}/meetings/new")).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    for part in ["at-day", "at-month", "at-year", "at-time"] {
        assert!(form.body.contains(&format!(r#"name="{part}""#)), "{part}");
    }
    assert!(
        !form.body.contains("datetime-local") && !form.body.contains(r#"type="date""#),
        "no browser date picker"
    );
    let r = h
        .post(
            &format!("/case/{case}/meetings"),
            &[
                ("at-day", "10"),
                ("at-month", "6"),
                ("at-year", "2027"),
                ("at-time", "14:00"),
                ("place", "home"),
                ("attendees", "person"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let meeting = id_after(&r.location(), "/meeting/");
    let v = h.app.peek(case.parse().unwrap()).await.unwrap();
    let stored = v.meetings[0].at.clone().unwrap_or_default();
    assert!(
        stored.starts_with("2027-06-10T13:00:00"),
        "14:00 in June is 13:00 UTC: {stored}"
    );
    let page = h.get(&format!("/case/{case}/meeting/{meeting}")).await;
    assert!(
        page.body.contains("10 June 2027 at 14:00 UK time"),
        "{}",
        page.body
    );
    let twice = h
        .post(
            &format!("/case/{case}/meetings"),
            &[
                ("at-day", "25"),
                ("at-month", "10"),
                ("at-year", "2026"),
                ("at-time", "01:30"),
                ("place", "home"),
                ("attendees", "person"),
            ],
        )
        .await;
    assert_eq!(twice.status, StatusCode::BAD_REQUEST, "{}", twice.body);
    assert!(twice.body.contains("happened twice"), "{}", twice.body);
    let skipped = h
        .post(
            &format!("/case/{case}/meetings"),
            &[
                ("at-day", "29"),
                ("at-month", "3"),
                ("at-year", "2026"),
                ("at-time", "1.30"),
                ("place", "home"),
                ("attendees", "person"),
            ],
        )
        .await;
    assert_eq!(skipped.status, StatusCode::BAD_REQUEST, "{}", skipped.body);
    assert!(skipped.body.contains("did not happen"), "{}", skipped.body);
    let v = h.app.peek(case.parse().unwrap()).await.unwrap();
    assert_eq!(v.meetings.len(), 1, "neither refused meeting was recorded");
}

#[tokio::test]
async fn concurrent_typing_into_the_same_notes_keeps_both() {
    let h = Harness::new().await;
    let case = h.open_case("Alex Smith").await;
    let r = h
        .post(
            &format!("/case/{case}/meetings"),
            &[
                ("at", "2026-03-14T10:30"),
                ("place", "home"),
                ("attendees", "person"),
            ],
        )
        .await;
    let meeting = id_after(&r.location(), "/meeting/");
    let url = format!("/case/{case}/meeting/{meeting}/text");
    let gen_before = h.app.case_gen(case.parse().unwrap());
    h.post(
        &url,
        &[
            ("kind", "notes"),
            ("base", ""),
            ("text", "Sleep is better."),
        ],
    )
    .await;
    // A second editor that started from the empty text: both words are kept.
    h.post(
        &url,
        &[("kind", "notes"), ("base", ""), ("text", "Work is hard.")],
    )
    .await;
    let poll = h.get(&format!("{url}?since={gen_before}")).await;
    let json: serde_json::Value = serde_json::from_str(&poll.body).unwrap();
    let notes = json["fields"]["notes"].as_str().unwrap();
    assert!(
        notes.contains("Sleep is better.") && notes.contains("Work is hard."),
        "{notes}"
    );
    let gen = json["gen"].as_u64().unwrap();
    let unchanged = h.get(&format!("{url}?since={gen}")).await;
    assert!(unchanged.body.contains(r#""changed":false"#));
}

#[tokio::test]
async fn the_sync_badge_never_claims_all_saved_with_changes_only_here() {
    let h = Harness::new().await;
    let empty = h.get("/status.json").await;
    let json: serde_json::Value = serde_json::from_str(&empty.body).unwrap();
    assert_eq!(json["unsynced"], 0);
    h.open_case("Alex Smith").await;
    let s = h.get("/status.json").await;
    let json: serde_json::Value = serde_json::from_str(&s.body).unwrap();
    assert!(json["unsynced"].as_u64().unwrap() > 0);
    let words = json["saved_words"].as_str().unwrap();
    assert!(words.ends_with("only on this device"), "{words}");
    assert!(!json["html"].as_str().unwrap().contains("All saved"));
    let page = h.get("/").await;
    assert!(page.body.contains("only on this device"));
    assert!(!page.body.contains("All saved on the borough server"));
}

impl Harness {
    /// The borough acknowledged `case` as this device holds it now and, with `hub`, said its
    /// trust hub holds it too: recorded through the books, as the background sync records a
    /// session's `Saved` and `HubSaved`.
    async fn borough_saved(&self, case: &str, hub: bool) {
        use polyphony_core::sync::Action;
        let case: polyphony_core::CaseId = case.parse().unwrap();
        let mut p = self.app.profile().await;
        let heads = p.document(case).unwrap().get_heads();
        p.books()
            .record(&Action::Acknowledged {
                case,
                heads: heads.clone(),
            })
            .unwrap();
        if hub {
            p.books()
                .record(&Action::AlsoOnHub { case, heads })
                .unwrap();
        }
    }

    async fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/status.json").await.body).unwrap()
    }
}

/// Issue 18's two places in the app: saved on the borough server, then also on the trust hub,
/// on the badge and the case's tag; nothing about a hub from a borough that never said it has
/// one; and an edit is "not yet on the trust hub" until the hub has it.
#[tokio::test]
async fn the_badge_says_also_on_the_trust_hub_only_when_the_borough_says_the_hub_has_everything() {
    use polyphony_core::model::PersonField;
    let h = Harness::new().await;
    let case = h.open_case("Alex Smith").await;

    h.borough_saved(&case, false).await;
    let json = h.status_json().await;
    assert_eq!(json["saved_words"], "All saved on the borough server");
    assert_eq!(json["hub_words"], serde_json::Value::Null, "{json}");
    assert_eq!(json["not_on_hub"], serde_json::Value::Null, "{json}");
    assert!(!json["html"].as_str().unwrap().contains("trust hub"));
    assert!(!h
        .get(&format!("/case/{case}"))
        .await
        .body
        .contains("trust hub"));

    h.borough_saved(&case, true).await;
    let json = h.status_json().await;
    assert_eq!(json["saved_words"], "All saved on the borough server");
    assert_eq!(json["hub_words"], "Records also on the trust hub", "{json}");
    assert_eq!(json["not_on_hub"], 0);
    assert_eq!(json["cases"][&case]["not_on_hub"], 0);
    assert!(json["html"]
        .as_str()
        .unwrap()
        .contains(r#"id="sync-hub">Records also on the trust hub</strong>"#));
    let page = h.get(&format!("/case/{case}")).await;
    assert!(
        page.body.contains(
            r#"<strong class="nhsuk-tag nhsuk-tag--green">All saved on the borough server; the record also on the trust hub</strong>"#
        ),
        "{}",
        page.body
    );

    h.app
        .profile()
        .await
        .edit(case.parse().unwrap(), |d| {
            d.set_person(PersonField::Pronouns, Some("they/them"))
        })
        .unwrap();
    let json = h.status_json().await;
    assert_eq!(json["saved_words"], "1 change only on this device");
    assert_eq!(json["hub_words"], "1 change not yet on the trust hub");
    assert_eq!(json["not_on_hub"], 1);
    let html = json["html"].as_str().unwrap();
    assert!(!html.contains("Also on the trust hub"), "{html}");
    assert!(!h
        .get(&format!("/case/{case}"))
        .await
        .body
        .contains("also on the trust hub"));

    // On the borough now, not yet on the hub.
    h.borough_saved(&case, false).await;
    let json = h.status_json().await;
    assert_eq!(json["saved_words"], "All saved on the borough server");
    assert_eq!(json["hub_words"], "1 change not yet on the trust hub");
    assert_eq!(
        json["cases"][&case]["words"],
        "All saved on the borough server"
    );
}

#[tokio::test]
async fn changes_left_on_the_device_too_long_raise_a_warning() {
    let h = Harness::new().await;
    h.open_case("Alex Smith").await;
    assert!(!h
        .get("/")
        .await
        .body
        .contains("Notes not yet on the borough server"));

    let h = Harness::with_warning_after(time::Duration::ZERO).await;
    h.open_case("Alex Smith").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let page = h.get("/").await;
    assert!(page.body.contains("Notes not yet on the borough server"));
    assert!(page
        .body
        .contains("Changes to Alex Smith have been only on this device for"));
    let json: serde_json::Value = serde_json::from_str(&h.get("/status.json").await.body).unwrap();
    assert_eq!(json["stale"], 1);
}

#[tokio::test]
async fn the_record_downloads_as_the_persons_copy_fhir_and_subject_access_and_the_figures_show() {
    polyphony_e2e::pdf_fonts();
    let h = Harness::new().await;
    let case = h.open_case("Alex Smith").await;
    h.post(
        &format!("/case/{case}/members"),
        &[
            ("name", "Sam Smith"),
            ("relationship", "my sister"),
            ("role", "family"),
        ],
    )
    .await;

    let page = h.get(&format!("/case/{case}")).await;
    assert!(
        page.body.contains(&format!("/case/{case}/export/pdf")),
        "the case page offers the copies"
    );

    // Issue 15, part 8: the page says plainly that a download is not encrypted, and the
    // footer no longer claims nothing leaves the device.
    assert!(page.body.contains("This file is not encrypted"));
    assert!(!page
        .body
        .contains("Nothing leaves this device any other way"));

    let html = h.get(&format!("/case/{case}/export/html")).await;
    assert_eq!(html.status, StatusCode::OK);
    let disposition = html.headers[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"Alex Smith - record copy - 20")
            && disposition
                .contains(".html\"; filename*=UTF-8''Alex%20Smith%20-%20record%20copy%20-%2020"),
        "{disposition}"
    );
    assert!(html.body.contains("Alex Smith") && html.body.contains("Sam Smith"));

    let pdf = h.get(&format!("/case/{case}/export/pdf")).await;
    assert_eq!(pdf.headers[header::CONTENT_TYPE], "application/pdf");
    assert!(pdf.body.starts_with("%PDF"));

    let fhir: serde_json::Value =
        serde_json::from_str(&h.get(&format!("/case/{case}/export/fhir")).await.body).unwrap();
    assert_eq!(fhir["resourceType"], "Bundle");

    let sar = h.get(&format!("/case/{case}/export/json")).await;
    assert!(sar.body.contains("Sam Smith"));

    assert_eq!(
        h.get(&format!("/case/{case}/export/zip")).await.status,
        StatusCode::NOT_FOUND
    );

    let figures = h.get("/figures").await;
    assert_eq!(figures.status, StatusCode::OK);
    assert!(figures.body.contains("Team figures") && figures.body.contains(&case));
    let csv = h.get("/figures.csv").await;
    assert!(csv.body.lines().count() >= 2, "{}", csv.body);

    // A name outside ASCII reaches the downloads folder whole, through filename*.
    let maria = h.open_case("María Lindqvist").await;
    let pdf = h.get(&format!("/case/{maria}/export/pdf")).await;
    let disposition = pdf.headers[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert!(
        disposition.contains("filename*=UTF-8''Mar%C3%ADa%20Lindqvist%20-%20record%20copy%20-%20")
            && disposition.contains("filename=\"Mar_a Lindqvist - record copy - "),
        "{disposition}"
    );
}

/// A form the page script kept while the app was stopped is sent again when it is back, and the
/// first sending may have been saved already: the same one-time token is applied once, and the
/// second sending is answered as the first was.
#[tokio::test]
async fn a_form_sent_again_is_applied_once() {
    let h = Harness::new().await;
    let case = h.open_case("Alex Smith").await;
    let page = h.get(&format!("/case/{case}/members/new")).await;
    let marker = r#"name="_once" value=""#;
    let at = page
        .body
        .find(marker)
        .expect("a one-time token in the form")
        + marker.len();
    let once = page.body[at..at + 64].to_string();
    let fields = [
        ("_once", once.as_str()),
        ("name", "Sam Smith"),
        ("relationship", "my sister"),
        ("role", "family"),
    ];
    let first = h.post(&format!("/case/{case}/members"), &fields).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
    // Sent again by the page script, which asks to be told where to go rather than redirected.
    let mut all = vec![("_csrf", h.csrf.as_str())];
    all.extend_from_slice(&fields);
    let again = send(
        &h.router,
        Request::post(format!("/case/{case}/members"))
            .header(header::COOKIE, &h.cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("x-polyphony-form", "1")
            .body(Body::from(form(&all)))
            .unwrap(),
    )
    .await;
    assert_eq!(again.status, StatusCode::NO_CONTENT, "{}", again.body);
    assert_eq!(
        again.headers["x-polyphony-location"],
        first.location().as_str()
    );
    let v = h.app.peek(case.parse().unwrap()).await.unwrap();
    let sams = v.network.iter().filter(|m| m.name == "Sam Smith").count();
    assert_eq!(sams, 1, "one member, however often the form was sent");
    // The message the first sending left is shown for the second too.
    let shown = h
        .get(again.headers["x-polyphony-location"].to_str().unwrap())
        .await;
    assert!(
        shown.body.contains("nhsuk-notification-banner--success"),
        "{}",
        shown.body
    );

    // A live save sent again (the same base and text) keeps the words once.
    let r = h
        .post(
            &format!("/case/{case}/meetings"),
            &[
                ("at", "2026-03-14T10:30"),
                ("place", "home"),
                ("attendees", "person"),
            ],
        )
        .await;
    let meeting = id_after(&r.location(), "/meeting/");
    let url = format!("/case/{case}/meeting/{meeting}/text");
    for _ in 0..2 {
        h.post(
            &url,
            &[
                ("kind", "notes"),
                ("base", ""),
                ("text", "Typed as the app stopped."),
            ],
        )
        .await;
    }
    let poll = h.get(&format!("{url}?since=0")).await;
    let json: serde_json::Value = serde_json::from_str(&poll.body).unwrap();
    assert_eq!(json["fields"]["notes"], "Typed as the app stopped.");
}

impl Harness {
    /// Record a meeting and return its id.
    async fn meeting(&self, case: &str, at: &str, attendees: &[&str]) -> String {
        let mut fields = vec![("at", at), ("place", "home")];
        fields.extend(attendees.iter().map(|a| ("attendees", *a)));
        let r = self.post(&format!("/case/{case}/meetings"), &fields).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        id_after(&r.location(), "/meeting/")
    }

    /// Save one of a meeting's texts, replacing what it said.
    async fn write(&self, case: &str, meeting: &str, kind: &str, base: &str, text: &str) {
        let r = self
            .post(
                &format!("/case/{case}/meeting/{meeting}/text"),
                &[("kind", kind), ("base", base), ("text", text)],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    }

    async fn me(&self) -> String {
        let p = self.app.profile().await;
        p.enrolment().unwrap().practitioner.to_string()
    }
}

/// Issue 15, part 2: a meeting recorded on the wrong person's record is re-recorded on the right
/// case, and nothing it said is served by any page of the case it was on; a network member
/// removed the same way is named "someone removed from this record" where they took part.
#[tokio::test]
async fn an_entry_on_the_wrong_persons_record_is_moved_and_withheld_from_every_page() {
    let h = Harness::new().await;
    let alex = h.open_case("Alex Smith").await;
    let jordan = h.open_case("Jordan Lee").await;
    let me = h.me().await;
    let practitioner = format!("practitioner:{me}");
    h.post(
        &format!("/case/{alex}/members"),
        &[
            ("name", "Quentin Zephyr"),
            ("relationship", "neighbour"),
            ("role", "friend"),
        ],
    )
    .await;
    let v = h.app.peek(alex.parse().unwrap()).await.unwrap();
    let quentin = format!("member:{}", v.network[0].meta.id);
    let wrong = h
        .meeting(&alex, "2026-03-14T10:30", &["person", &practitioner])
        .await;
    h.write(
        &alex,
        &wrong,
        "notes",
        "",
        "Jordan spoke about the flat on Kestrel Road.",
    )
    .await;
    h.write(&alex, &wrong, "reflections", "", "Zanzibar reflections.")
        .await;
    h.write(&alex, &wrong, "agreed", "", "Agreed-marker-xyz.")
        .await;
    let kept = h
        .meeting(&alex, "2026-03-15T10:30", &["person", &quentin])
        .await;
    let secret = [
        "Kestrel Road",
        "Zanzibar",
        "Agreed-marker-xyz",
        "Quentin",
        "Zephyr",
    ];

    // The choice, then whose record it belongs on (the other cases on this device).
    let choose = h.get(&format!("/case/{alex}/entry/{wrong}/error")).await;
    assert!(
        choose.body.contains("It was written wrongly"),
        "{}",
        choose.body
    );
    assert!(choose
        .body
        .contains("recorded on the wrong person’s record"));
    let step = h
        .post(
            &format!("/case/{alex}/entry/{wrong}/error"),
            &[
                ("kind", "wrong_person"),
                ("reason", "Belongs to another person"),
            ],
        )
        .await;
    assert_eq!(step.status, StatusCode::OK, "{}", step.body);
    assert!(
        step.body.contains("Write it on Jordan Lee’s record"),
        "{}",
        step.body
    );
    let unchosen = h
        .post(
            &format!("/case/{alex}/entry/{wrong}/error"),
            &[
                ("kind", "wrong_person"),
                ("reason", "Belongs to another person"),
                ("step", "move"),
            ],
        )
        .await;
    assert_eq!(unchosen.status, StatusCode::BAD_REQUEST);
    assert!(unchosen.body.contains("Choose whose record it belongs on"));
    let moved = h
        .post(
            &format!("/case/{alex}/entry/{wrong}/error"),
            &[
                ("kind", "wrong_person"),
                ("reason", "Belongs to another person"),
                ("step", "move"),
                ("to", &jordan),
            ],
        )
        .await;
    assert_eq!(moved.status, StatusCode::SEE_OTHER, "{}", moved.body);
    assert_eq!(moved.location(), format!("/case/{jordan}"));
    let r = h
        .post(
            &format!("/case/{alex}/entry/{}/error", &quentin["member:".len()..]),
            &[
                ("kind", "wrong_person"),
                ("reason", "Not in Alex's network"),
                ("step", "move"),
                ("to", "none"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);

    // On the right case: a new entry by this practitioner, saying it was moved, naming no one.
    let v = h.app.peek(jordan.parse().unwrap()).await.unwrap();
    assert_eq!(v.meetings.len(), 1);
    let there = &v.meetings[0];
    assert!(there.notes.contains("Kestrel Road"), "{}", there.notes);
    assert!(there.notes.contains("Moved here by Robin Practitioner on"));
    assert!(there.notes.contains("from another person’s record"));
    assert!(!there.notes.contains("Alex"), "{}", there.notes);
    assert_eq!(there.reflections, "Zanzibar reflections.");
    assert_eq!(there.agreed, "Agreed-marker-xyz.");
    assert!(there.held() && there.person_present);
    let page = h
        .get(&format!("/case/{jordan}/meeting/{}", there.meta.id))
        .await;
    assert!(page.body.contains("Kestrel Road"));

    // On the wrong case: tombstones, and nothing of what it said, on every page served.
    let mut pages = vec![
        "/".to_string(),
        "/figures".to_string(),
        "/figures.csv".to_string(),
        format!("/case/{alex}"),
        format!("/case/{alex}/meeting/{wrong}"),
        format!("/case/{alex}/meeting/{wrong}/readback"),
        format!("/case/{alex}/meeting/{wrong}/text"),
        format!("/case/{alex}/meeting/{kept}"),
        format!("/case/{alex}/meeting/{kept}/readback"),
        format!("/case/{alex}/entry/{wrong}/error"),
        format!("/case/{alex}/member/{}", &quentin["member:".len()..]),
        format!("/case/{alex}/conflicts"),
        format!("/case/{alex}/network-copy"),
        format!("/case/{alex}/decisions/new"),
        format!("/case/{alex}/meetings/new"),
    ];
    for format in ["html", "json", "fhir"] {
        pages.push(format!("/case/{alex}/export/{format}"));
    }
    for path in &pages {
        let r = h.get(path).await;
        assert!(r.status.is_success(), "{path}: {}", r.status);
        for word in secret {
            assert!(!r.body.contains(word), "{path} shows {word}: {}", r.body);
        }
    }
    let case_page = h.get(&format!("/case/{alex}")).await;
    assert!(
        case_page.body.contains(
            "A meeting was removed from this record because it was recorded on the wrong person’s record. Marked by Robin Practitioner on "
        ),
        "{}",
        case_page.body
    );
    assert!(case_page
        .body
        .contains("UK time: Belongs to another person"));
    assert!(case_page
        .body
        .contains("A network member was removed from this record"));
    assert!(case_page
        .body
        .contains("Present: Alex Smith, someone removed from this record."));
    let meeting_page = h.get(&format!("/case/{alex}/meeting/{wrong}")).await;
    assert!(meeting_page
        .body
        .contains("A meeting was removed from this record"));
    assert!(!meeting_page.body.contains(r#"data-live-kind="notes""#));
    let kept_page = h.get(&format!("/case/{alex}/meeting/{kept}")).await;
    assert!(kept_page.body.contains("someone removed from this record"));
    // Marked once as on the wrong person's record, it cannot be marked again.
    let again = h.get(&format!("/case/{alex}/entry/{wrong}/error")).await;
    assert!(again.body.contains("There is nothing more to mark"));
}

/// Issue 15, part 5: a meeting has a state the practitioner sets; a meeting in the future cannot
/// have been held, and the model's refusal is shown in the error summary; a planned meeting whose
/// time has passed asks whether it took place; a meeting without the person says so.
#[tokio::test]
async fn meetings_are_planned_held_cancelled_or_missed_and_say_who_was_not_there() {
    let h = Harness::new().await;
    let case = h.open_case("Alex Smith").await;
    let me = h.me().await;
    let practitioner = format!("practitioner:{me}");
    let future = h.meeting(&case, "2030-06-10T14:00", &["person"]).await;
    let page = h.get(&format!("/case/{case}/meeting/{future}")).await;
    assert!(
        page.body
            .contains("Planned for 10 June 2030 at 14:00 UK time"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Where this meeting stands"));
    let refused = h
        .post(
            &format!("/case/{case}/meeting/{future}/state"),
            &[("state", "held")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.body.contains("nhsuk-error-summary"));
    assert!(
        refused.body.contains(r##"href="#state""##),
        "{}",
        refused.body
    );
    assert!(
        refused.body.contains("which has not come yet"),
        "{}",
        refused.body
    );
    let cancelled = h
        .post(
            &format!("/case/{case}/meeting/{future}/state"),
            &[("state", "cancelled")],
        )
        .await;
    assert_eq!(
        cancelled.status,
        StatusCode::SEE_OTHER,
        "{}",
        cancelled.body
    );
    let v = h.app.peek(case.parse().unwrap()).await.unwrap();
    assert!(v.meetings[0].state.is(MeetingState::Cancelled));
    let case_page = h.get(&format!("/case/{case}")).await;
    assert!(case_page.body.contains(">Cancelled<"), "{}", case_page.body);
    let caseload = h.get("/").await;
    assert!(
        !caseload.body.contains("10 June 2030"),
        "a cancelled meeting is not the next one: {}",
        caseload.body
    );

    // Past, but still planned: the case page and the meeting page ask what happened.
    let past = h
        .meeting(&case, "2026-03-14T10:30", &["person", &practitioner])
        .await;
    h.post(
        &format!("/case/{case}/meeting/{past}/state"),
        &[("state", "planned")],
    )
    .await;
    let case_page = h.get(&format!("/case/{case}")).await;
    assert!(case_page.body.contains("Did this meeting take place?"));
    let page = h.get(&format!("/case/{case}/meeting/{past}")).await;
    assert!(page.body.contains("Did this meeting take place?"));
    let held = h
        .post(
            &format!("/case/{case}/meeting/{past}/state"),
            &[("state", "held"), ("back", "case")],
        )
        .await;
    assert_eq!(held.status, StatusCode::SEE_OTHER, "{}", held.body);
    assert_eq!(held.location(), format!("/case/{case}#meetings"));
    assert!(!h
        .get(&format!("/case/{case}"))
        .await
        .body
        .contains("Did this meeting take place?"));

    // Held without the person.
    let without = h.meeting(&case, "2026-03-20T09:00", &[&practitioner]).await;
    let page = h.get(&format!("/case/{case}/meeting/{without}")).await;
    assert!(
        page.body.contains("Alex Smith was not present."),
        "{}",
        page.body
    );
    let with = h.get(&format!("/case/{case}/meeting/{past}")).await;
    assert!(!with.body.contains("was not present"));
    assert!(h
        .get(&format!("/case/{case}"))
        .await
        .body
        .contains("Alex Smith was not present."));
}

/// Issue 15, part 5: a participant who changes their position keeps the earlier one.
#[tokio::test]
async fn a_changed_position_shows_the_earlier_one_first() {
    let h = Harness::new().await;
    let case = h.open_case("Alex Smith").await;
    let r = h
        .post(
            &format!("/case/{case}/decisions"),
            &[
                ("text", "Try a week at the day centre"),
                ("proposed_by", "person"),
            ],
        )
        .await;
    let decision = id_after(&r.location(), "/decision/");
    for (stance, words) in [
        ("unsure", "I want to see it first"),
        ("agree", "I liked it"),
    ] {
        let r = h
            .post(
                &format!("/case/{case}/decision/{decision}/position"),
                &[("who", "person"), ("stance", stance), ("words", words)],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    }
    let today = polyphony_core::model::LocalZone::uk().long_date(time::OffsetDateTime::now_utc());
    let page = h.get(&format!("/case/{case}/decision/{decision}")).await;
    assert!(
        page.body.contains(&format!(
            "Changed position: first unsure ({today}), then agreed ({today})."
        )),
        "{}",
        page.body
    );
    assert!(page.body.contains("I want to see it first"));
    assert!(page.body.contains("I liked it"));
}

/// Issue 15, part 4: words written after the read-back are shown apart from the confirmed notes,
/// with who changed them and when.
#[tokio::test]
async fn words_changed_after_the_read_back_are_shown_as_added_after_the_meeting() {
    let h = Harness::new().await;
    let case = h.open_case("Alex Smith").await;
    let meeting = h.meeting(&case, "2026-03-14T10:30", &["person"]).await;
    h.write(
        &case,
        &meeting,
        "notes",
        "",
        "Alex slept well. Work is hard.",
    )
    .await;
    let r = h
        .post(
            &format!("/case/{case}/meeting/{meeting}/readback"),
            &[("who", "person"), ("index", "0"), ("response", "confirmed")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = h.get(&format!("/case/{case}/meeting/{meeting}")).await;
    assert!(!page.body.contains("Changed after the read-back"));
    h.write(
        &case,
        &meeting,
        "notes",
        "Alex slept well. Work is hard.",
        "Alex slept well. Remembered on the way home.",
    )
    .await;
    let page = h.get(&format!("/case/{case}/meeting/{meeting}")).await;
    assert!(
        page.body.contains("Changed after the read-back"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("Added after the meeting by Robin Practitioner on "),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("<ins>“Remembered on the way home.”</ins>"),
        "{}",
        page.body
    );
    assert!(page
        .body
        .contains("Removed after the meeting by Robin Practitioner on "));
    assert!(page.body.contains("Work is hard."));
}

impl Harness {
    /// Add an action (in a decision of its own) to `case`, owned by `owner`, due on `due`; the
    /// decision's id.
    async fn action(&self, case: &str, text: &str, owner: &str, due: time::Date) -> String {
        use polyphony_core::model::Participant;
        let owner: Participant = owner.parse().unwrap();
        let text = text.to_string();
        let decision = self
            .app
            .edit(case.parse().unwrap(), move |d| {
                let dec = d.propose_decision("Meet weekly", Participant::Person)?;
                d.add_action(&dec, &text, owner, Some(due))?;
                Ok(dec)
            })
            .await
            .unwrap();
        decision.to_string()
    }
}

/// Issue 17, part 5: the morning list. Overdue actions, most overdue first, each linking to its
/// decision; sorted by person with a link; "Mine only" as a GET form; every value escaped; the
/// caseload says how much is waiting. Dates far in the past and future, so no day it runs on
/// changes what is listed.
#[tokio::test]
async fn the_needs_attention_page_sorts_filters_mine_and_escapes() {
    let h = Harness::new().await;
    let me = format!("practitioner:{}", h.me().await);
    let zed = h.open_case("Zed <script>alert(1)</script>").await;
    let ann = h.open_case("Ann Example").await;
    let mine = h
        .action(
            &zed,
            "Ring <GP> & confirm",
            &me,
            time::macros::date!(2020 - 01 - 01),
        )
        .await;
    let theirs = h
        .action(
            &ann,
            "Bring the letter",
            "person",
            time::macros::date!(2021 - 01 - 01),
        )
        .await;
    h.action(
        &ann,
        "Not yet due",
        &me,
        time::macros::date!(2099 - 01 - 01),
    )
    .await;

    let page = h.get("/today").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body = &page.body;
    assert!(
        !body.contains("<script>alert"),
        "the person's name is escaped"
    );
    assert!(body.contains("Zed &lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(body.contains(&format!(
        r#"<a href="/case/{zed}/decision/{mine}">Ring &lt;GP&gt; &amp; confirm</a>"#
    )));
    assert!(body.contains(&format!(r#"href="/case/{ann}/decision/{theirs}""#)));
    assert!(!body.contains("Not yet due"));
    assert!(body.contains("Due 1 January 2020"));
    let (z, a) = (
        body.find("Ring &lt;GP").unwrap(),
        body.find("Bring the letter").unwrap(),
    );
    assert!(z < a, "most overdue first");
    assert!(body.contains(r#"<a href="/today?sort=person">person</a>"#));

    let by_person = h.get("/today?sort=person").await.body;
    let (z, a) = (
        by_person.find("Ring &lt;GP").unwrap(),
        by_person.find("Bring the letter").unwrap(),
    );
    assert!(a < z, "Ann before Zed");
    assert!(by_person.contains(r#"<strong aria-current="true">person</strong>"#));
    assert!(by_person.contains(r#"name="sort" value="person""#));

    let only_mine = h.get("/today?mine=1").await.body;
    assert!(only_mine.contains("Ring &lt;GP"));
    assert!(!only_mine.contains("Bring the letter"));
    assert!(only_mine.contains(r#"value="1" checked>"#));
    assert!(only_mine.contains(r#"<a href="/today?sort=kind&amp;mine=1">kind</a>"#));

    let unknown = h.get("/today?sort=%22%3E%3Cscript%3E").await;
    assert_eq!(unknown.status, StatusCode::OK);
    assert!(!unknown.body.contains("\"><script>"));
    assert!(unknown.body.contains(r#"name="sort" value="due""#));

    let caseload = h.get("/").await.body;
    assert!(
        caseload.contains("2 things need attention, 1 of them yours"),
        "{caseload}"
    );
    assert!(caseload.contains(r#"<a href="/today">See what needs attention</a>"#));
}

/// The morning list in the app: a planned meeting whose time has passed is listed as awaiting
/// its outcome, linking to the meeting; past the warning (here: none), the changes only on this
/// device are listed as not synced, since the first of them; reviews are said not to be listed
/// yet. Showing an action's text records a read of its case, as "needs attention list"; the
/// caseload's count records none.
#[tokio::test]
async fn the_needs_attention_page_lists_meetings_awaiting_an_outcome_and_changes_not_synced() {
    let h = Harness::with_warning_after(time::Duration::ZERO).await;
    let me = format!("practitioner:{}", h.me().await);
    let case = h.open_case("Jo Bloggs").await;
    let meeting = h.meeting(&case, "2020-03-14T10:30", &[]).await;
    let r = h
        .post(
            &format!("/case/{case}/meeting/{meeting}/state"),
            &[("state", "planned")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = h.get("/today").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body = &page.body;
    assert!(body.contains(r#"data-kind="awaits_outcome""#), "{body}");
    assert!(body.contains("Awaits outcome"));
    assert!(body.contains(&format!(r#"href="/case/{case}/meeting/{meeting}""#)));
    assert!(body.contains(r#"data-kind="unsynced""#), "{body}");
    assert!(body.contains("Not synced"));
    let reads = |h: &Harness| {
        let app = h.app.clone();
        async move {
            let p = app.profile().await;
            p.books()
                .offline_reads()
                .unwrap()
                .into_iter()
                .filter(|r| r.what == "needs attention list")
                .count()
        }
    };
    assert_eq!(reads(&h).await, 0, "no action text shown: no read");
    h.action(
        &case,
        "Call the GP",
        &me,
        time::macros::date!(2020 - 01 - 01),
    )
    .await;
    let caseload = h.get("/").await.body;
    assert!(caseload.contains("things need attention"), "{caseload}");
    assert_eq!(reads(&h).await, 0, "the caseload's count shows no text");
    assert!(h.get("/today").await.body.contains("Call the GP"));
    assert_eq!(reads(&h).await, 1, "the action's text shown: one read");
}

/// The team list the server sent: a colleague of the case's team is offered on the meeting form
/// with their role, ticked as present and noted in that role, shown on the meeting page; a
/// colleague joins the care team from the case page in the part their role suggests (an
/// administrator is not offered); a colleague of another team is not offered; the figures page
/// counts the peer support worker.
#[tokio::test]
async fn colleagues_from_the_team_list_are_offered_noted_and_counted() {
    use polyphony_core::model::{StaffRole, Stored};
    use polyphony_core::profile::DeviceBooks;
    use polyphony_core::sync::{Action, Colleague};
    let h = Harness::new().await;
    let case = h.open_case("Alex Smith").await;
    let (me, north) = {
        let p = h.app.profile().await;
        let e = p.enrolment().unwrap();
        (e.practitioner, e.teams[0].id)
    };
    let colleague = |name: &str, role: StaffRole, team: TeamId| Colleague {
        practitioner: PractitionerId::random(),
        name: name.into(),
        role: Stored::Known(role),
        teams: vec![team],
    };
    let jo = colleague("Jo Peer", StaffRole::PeerSupport, north);
    let ade = colleague("Ade Bello", StaffRole::Psychiatrist, north);
    let pat = colleague("Pat Admin", StaffRole::Administrator, north);
    let sol = colleague("Sol Elsewhere", StaffRole::Practitioner, TeamId::random());
    let list = vec![jo.clone(), ade.clone(), pat.clone(), sol.clone()];
    DeviceBooks::new(&**h.app.store())
        .record(&Action::Colleagues(list))
        .unwrap();
    h.app.profile_changed();

    let form = h.get(&format!("/case/{case}/meetings/new")).await;
    assert!(
        form.body.contains("Jo Peer (peer support worker)"),
        "{}",
        form.body
    );
    assert!(form.body.contains("Ade Bello (psychiatrist)"));
    assert!(form.body.contains("Robin Practitioner (practitioner)"));
    assert!(
        !form.body.contains("Sol Elsewhere"),
        "another team's colleague"
    );
    let r = h
        .post(
            &format!("/case/{case}/meetings"),
            &[
                ("at", "2026-03-14T10:30"),
                ("place", "home"),
                ("attendees", "person"),
                ("attendees", &format!("practitioner:{me}")),
                ("attendees", &format!("practitioner:{}", jo.practitioner)),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let meeting = id_after(&r.location(), "/meeting/");
    // Ade ticked afterwards on the meeting page.
    let r = h
        .post(
            &format!("/case/{case}/meeting/{meeting}/attendance"),
            &[
                ("attendees", "person"),
                ("attendees", &format!("practitioner:{me}")),
                ("attendees", &format!("practitioner:{}", jo.practitioner)),
                ("attendees", &format!("practitioner:{}", ade.practitioner)),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let v = h.app.peek(case.parse().unwrap()).await.unwrap();
    let m = &v.meetings[0];
    let mut noted: Vec<(String, String)> = m
        .staff_present()
        .map(|s| (s.name.clone(), s.role.to_string()))
        .collect();
    noted.sort();
    assert_eq!(
        noted,
        [
            ("Ade Bello".to_string(), "psychiatrist".to_string()),
            ("Jo Peer".to_string(), "peer_support".to_string())
        ]
    );
    let page = h.get(&format!("/case/{case}/meeting/{meeting}")).await;
    assert!(page.body.contains("Staff present"));
    assert!(page.body.contains("Jo Peer (peer support worker)"));

    // The care team: a colleague in the part their role suggests; no administrator offered.
    let page = h.get(&format!("/case/{case}")).await;
    assert!(page.body.contains("Add a colleague to the care team"));
    assert!(
        !page.body.contains("Pat Admin"),
        "an administrator is not offered"
    );
    let r = h
        .post(
            &format!("/case/{case}/care-team"),
            &[("practitioner", &jo.practitioner.to_string()), ("role", "")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let v = h.app.peek(case.parse().unwrap()).await.unwrap();
    let joined = v.care_team.iter().find(|c| c.name == "Jo Peer").unwrap();
    assert!(joined.role.is(polyphony_core::model::CareRole::PeerSupport));
    let page = h.get(&format!("/case/{case}")).await;
    assert!(page.body.contains("Jo Peer, peer support worker"));
    // Jo again: already in the care team, so nothing is added; an administrator's id posted
    // without a chosen part is refused, as the form does not offer them.
    for who in [&jo.practitioner, &pat.practitioner] {
        let r = h
            .post(
                &format!("/case/{case}/care-team"),
                &[("practitioner", &who.to_string()), ("role", "")],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    }
    assert_eq!(
        h.app
            .peek(case.parse().unwrap())
            .await
            .unwrap()
            .care_team
            .len(),
        1
    );
    // Someone not on the team list is refused, and nothing is written.
    let r = h
        .post(
            &format!("/case/{case}/care-team"),
            &[("practitioner", &sol.practitioner.to_string())],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert_eq!(
        h.app
            .peek(case.parse().unwrap())
            .await
            .unwrap()
            .care_team
            .len(),
        1
    );

    let figures = h.get("/figures").await;
    assert!(figures.body.contains("With a peer support worker"));
    assert!(figures.body.contains("100%"));
}

/// The crisis plan in the app: an item added in the person's words and agreed at a meeting,
/// changed with what it said before kept and shown, an empty item refused with the error
/// summary, a review date that puts the plan on the needs-attention page once it has come, and
/// an item marked in error from its page.
#[tokio::test]
async fn the_crisis_plan_is_written_changed_and_reviewed_in_the_app() {
    let h = Harness::new().await;
    let case = h.open_case("Alex Smith").await;
    let r = h
        .post(
            &format!("/case/{case}/meetings"),
            &[
                ("at", "2026-03-14T10:30"),
                ("place", "home"),
                ("attendees", "person"),
            ],
        )
        .await;
    let meeting = id_after(&r.location(), "/meeting/");
    let page = h.get(&format!("/case/{case}/plan/new")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Preferences if in crisis"));
    assert!(page.body.contains("The meeting of 14 March 2026"));
    let r = h
        .post(
            &format!("/case/{case}/plan"),
            &[
                ("section", "what_helps"),
                ("text", "  "),
                ("words_of", "person"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("nhsuk-error-summary"), "{}", r.body);
    assert!(r.body.contains(r##"href="#plan-text""##));
    let r = h
        .post(
            &format!("/case/{case}/plan"),
            &[
                ("section", "preferences"),
                ("text", "My sister looks after the cat"),
                ("words_of", "person"),
                ("meeting", &meeting),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let v = h.app.peek(case.parse().unwrap()).await.unwrap();
    let item = v.crisis_plan.items[0].meta.id;
    let r = h
        .post(
            &format!("/case/{case}/plan/{item}"),
            &[
                ("text", "My sister, or the neighbour, looks after the cat"),
                ("words_of", "person"),
                ("meeting", &meeting),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = h.get(&format!("/case/{case}")).await;
    let body = &page.body;
    assert!(body.contains(r#"id="crisis-plan""#));
    assert!(body.contains("Preferences if in crisis"));
    assert!(body.contains("My sister, or the neighbour, looks after the cat"));
    assert!(body.contains("What it said before"));
    assert!(body.contains("My sister looks after the cat"));
    assert!(body.contains("In the words of Alex Smith"), "{body}");
    assert!(body.contains("agreed at the meeting of 14 March 2026"));
    assert!(body.contains("No review date set yet."));

    // An impossible date: said beside the date, what was typed kept, nothing saved.
    let r = h
        .post(
            &format!("/case/{case}/plan/review"),
            &[
                ("review_on-day", "31"),
                ("review_on-month", "2"),
                ("review_on-year", "2026"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body.contains(r##"href="#review_on""##));
    assert!(r.body.contains("The review date must be a real date"));
    assert!(r.body.contains(r#"value="31""#), "what was typed is kept");
    assert!(h
        .app
        .peek(case.parse().unwrap())
        .await
        .unwrap()
        .crisis_plan
        .review_on
        .is_none());

    let r = h
        .post(
            &format!("/case/{case}/plan/review"),
            &[
                ("review_on-day", "5"),
                ("review_on-month", "1"),
                ("review_on-year", "2026"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = h.get(&format!("/case/{case}")).await;
    assert!(page.body.contains("To be reviewed by 5 January 2026."));
    let today = h.get("/today").await;
    assert!(
        today.body.contains(r#"data-kind="review_due""#),
        "{}",
        today.body
    );
    assert!(today
        .body
        .contains(&format!(r##"href="/case/{case}#crisis-plan""##)));

    let page = h.get(&format!("/case/{case}/plan/{item}")).await;
    assert!(page.body.contains("Change the words"));
    let r = h
        .post(
            &format!("/case/{case}/entry/{item}/error"),
            &[("kind", "mistake"), ("reason", "Written on the wrong day")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let v = h.app.peek(case.parse().unwrap()).await.unwrap();
    assert!(v.crisis_plan.items[0].meta.entered_in_error.is_some());
    let page = h.get(&format!("/case/{case}")).await;
    assert!(page.body.contains("app-in-error"));
}

/// A decision the team takes in the open while the person disagrees: refused with the reason
/// shown until the person's disagreement and a reason are recorded, then shown as the team's
/// decision with her position kept beside it.
#[tokio::test]
async fn a_team_decision_while_the_person_disagrees_keeps_her_position() {
    let h = Harness::new().await;
    let case = h.open_case("Alex Smith").await;
    let r = h
        .post(
            &format!("/case/{case}/decisions"),
            &[
                ("text", "Ask for a Mental Health Act assessment"),
                ("proposed_by", "person"),
            ],
        )
        .await;
    let decision = id_after(&r.location(), "/decision/");
    let base = format!("/case/{case}/decision/{decision}");
    let page = h.get(&base).await;
    assert!(page
        .body
        .contains("Decided by the team while the person disagrees"));
    let refused = h
        .post(
            &format!("{base}/status"),
            &[("status", "team_decided"), ("note", "Risk tonight")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("position first"), "{}", refused.body);
    let r = h
        .post(
            &format!("{base}/position"),
            &[
                ("who", "person"),
                ("stance", "disagree"),
                ("words", "I will not go to hospital"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let refused = h
        .post(&format!("{base}/status"), &[("status", "team_decided")])
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("say why"), "{}", refused.body);
    let r = h
        .post(
            &format!("{base}/status"),
            &[
                ("status", "team_decided"),
                ("note", "Risk to life tonight, said openly in the meeting"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = h.get(&base).await;
    assert!(page
        .body
        .contains("Decided by the team; the person disagrees"));
    assert!(page.body.contains("I will not go to hospital"));
    assert!(page.body.contains("Risk to life tonight"));
}

/// Safety notes in the app: written, in the person's copy by default; the one who asks to
/// withhold a note cannot confirm it (no button, and a posted confirmation is refused); once a
/// second practitioner's confirmation arrives, the page says it is withheld and the person's
/// copy lists it as withheld without its words.
#[tokio::test]
async fn a_safety_note_is_withheld_in_the_app_only_with_a_second_practitioner() {
    use polyphony_core::model::{Author, CaseDoc};
    use polyphony_core::profile::DeviceBooks;
    use polyphony_core::sync::Action;
    let h = Harness::new().await;
    let case = h.open_case("Alex Smith").await;
    let r = h
        .post(
            &format!("/case/{case}/notes"),
            &[
                ("kind", "safeguarding"),
                ("text", "Concern raised by the school"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = h.get(&format!("/case/{case}")).await;
    assert!(page.body.contains("Concern raised by the school"));
    assert!(page.body.contains("Ask to withhold it"));
    let v = h.app.peek(case.parse().unwrap()).await.unwrap();
    let note = v.team_notes[0].meta.id;
    h.post(
        &format!("/case/{case}/note/{note}/withhold"),
        &[("reason", "Strategy meeting first")],
    )
    .await;
    let page = h.get(&format!("/case/{case}")).await;
    assert!(page.body.contains("Withholding asked by"));
    assert!(
        !page.body.contains("Confirm: withhold it"),
        "not for the one who asked"
    );
    h.post(&format!("/case/{case}/note/{note}/confirm"), &[])
        .await;
    let v = h.app.peek(case.parse().unwrap()).await.unwrap();
    assert!(!v.team_notes[0].withheld_from_person(), "refused");

    // A second practitioner's confirmation arrives, as a sync would store it.
    let case_id: polyphony_core::CaseId = case.parse().unwrap();
    let mut doc = h.app.profile().await.document(case_id).unwrap();
    let before = doc.get_heads();
    let mut theirs = CaseDoc::load(
        &doc.save(),
        Some(Author {
            practitioner: PractitionerId::random(),
            practitioner_name: "Kim Second".into(),
            device: polyphony_core::DeviceId::random(),
        }),
    )
    .unwrap();
    theirs.confirm_withholding(&note).unwrap();
    let chunk = theirs.automerge_mut().save_after(&before);
    DeviceBooks::new(&**h.app.store())
        .record(&Action::Persist {
            case: case_id,
            chunk,
        })
        .unwrap();
    h.app.remote_change(case_id);
    let page = h.get(&format!("/case/{case}")).await;
    assert!(
        page.body.contains("Withheld from Alex Smith"),
        "{}",
        page.body
    );
    let copy = h.get(&format!("/case/{case}/export/html")).await;
    assert!(!copy.body.contains("Concern raised by the school"));
    assert!(copy.body.contains("is withheld from this copy"));
    let json = h.get(&format!("/case/{case}/export/json")).await;
    assert!(!json.body.contains("Concern raised by the school"));
    assert!(
        !json.body.contains("Strategy meeting first"),
        "nor the reason"
    );
    assert!(
        page.body.contains("show the words"),
        "folded away on the case page"
    );
    assert!(page.body.contains("Lift: show it in the copy again"));
    let r = h
        .post(
            &format!("/case/{case}/note/{note}/lift"),
            &[("reason", "The meeting was held")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let copy = h.get(&format!("/case/{case}/export/html")).await;
    assert!(copy.body.contains("Concern raised by the school"));
    // A note can be marked entered in error from its own link.
    let form = h.get(&format!("/case/{case}/entry/{note}/error")).await;
    assert_eq!(form.status, StatusCode::OK);
}

/// Issue 17, part 4: an attached letter is listed on the case page with where its file is, and
/// opens as it was attached (its own type, its own name, not sniffed); an attachment that does
/// not exist is not found.
#[tokio::test]
async fn an_attached_letter_is_listed_on_the_case_page_and_opens_as_attached() {
    let h = Harness::new().await;
    let case = h.open_case("Alex Smith").await;
    let letter = b"%PDF-1.4 a referral letter for Alex (test bytes)".to_vec();
    let id = h
        .app
        .profile()
        .await
        .attach(
            case.parse().unwrap(),
            polyphony_core::profile::AttachFile {
                kind: polyphony_core::model::AttachmentKind::ReferralLetter,
                title: "Referral from Dr Shah",
                file_name: "referral shah.pdf",
                content: &letter,
                meeting: None,
            },
        )
        .unwrap();
    let page = h.get(&format!("/case/{case}")).await;
    assert_eq!(page.status, StatusCode::OK);
    for expected in [
        "Letters and documents",
        "Referral letter: Referral from Dr Shah",
        "referral shah.pdf",
        "On this device only",
        &format!("/case/{case}/attachment/{id}"),
    ] {
        assert!(page.body.contains(expected), "no {expected:?} on the page");
    }
    let file = h.get(&format!("/case/{case}/attachment/{id}")).await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(file.body.as_bytes(), &letter[..]);
    assert_eq!(file.headers[header::CONTENT_TYPE], "application/pdf");
    assert_eq!(file.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(file.headers[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .contains("referral shah.pdf"));
    // Attached to a meeting, it is listed on the meeting's page too.
    let meeting = h.meeting(&case, "2026-03-14T10:30", &["person"]).await;
    let at_meeting = h
        .app
        .profile()
        .await
        .attach(
            case.parse().unwrap(),
            polyphony_core::profile::AttachFile {
                kind: polyphony_core::model::AttachmentKind::PersonsDocument,
                title: "Alex's housing letter",
                file_name: "housing.jpg",
                content: b"\xff\xd8 a photographed letter",
                meeting: Some(meeting.parse().unwrap()),
            },
        )
        .unwrap();
    let page = h.get(&format!("/case/{case}/meeting/{meeting}")).await;
    assert!(page
        .body
        .contains("Letters and documents from this meeting"));
    assert!(page
        .body
        .contains(&format!("/case/{case}#attachment-{at_meeting}")));
    assert!(
        !page.body.contains("Referral from Dr Shah"),
        "only this meeting's"
    );
    let missing = h
        .get(&format!(
            "/case/{case}/attachment/{}",
            polyphony_core::EntryId::random()
        ))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
}

/// A `multipart/form-data` body: `(name, file name, content)` per field.
fn multipart(fields: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----polyphony-test-boundary-7d1f2c";
    let mut body = Vec::new();
    for (name, file, content) in fields {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

impl Harness {
    async fn post_multipart(&self, path: &str, fields: &[(&str, Option<&str>, &[u8])]) -> Reply {
        let (content_type, body) = multipart(fields);
        send(
            &self.router,
            Request::post(path)
                .header(header::COOKIE, &self.cookie)
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }
}

/// Issue 17, part 4: a file is attached from the case page's form (a form that carries a file):
/// kept with its kind and title, applied once however often the form is sent, refused without
/// the form's security token, and refused with a clear message (nothing written) for a kind of
/// file that cannot be attached or no file at all.
#[tokio::test]
async fn a_letter_is_attached_from_the_case_page_once_and_only_with_the_forms_token() {
    let h = Harness::new().await;
    let case = h.open_case("Alex Smith").await;
    let page = h.get(&format!("/case/{case}")).await;
    assert!(page.body.contains(r#"enctype="multipart/form-data""#));
    assert!(page.body.contains(r#"action="/case/"#) && page.body.contains("/attachments\""));
    let letter: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let once = "a".repeat(64);
    let fields =
        |csrf: &str, file: &str, content: &[u8]| -> Vec<(String, Option<String>, Vec<u8>)> {
            vec![
                ("_csrf".into(), None, csrf.as_bytes().to_vec()),
                ("_once".into(), None, once.as_bytes().to_vec()),
                ("kind".into(), None, b"gp_letter".to_vec()),
                ("title".into(), None, b"Letter from the GP".to_vec()),
                ("meeting".into(), None, Vec::new()),
                ("file".into(), Some(file.to_string()), content.to_vec()),
            ]
        };
    let send_form = |f: Vec<(String, Option<String>, Vec<u8>)>| {
        let path = format!("/case/{case}/attachments");
        let h = &h;
        async move {
            let borrowed: Vec<(&str, Option<&str>, &[u8])> = f
                .iter()
                .map(|(n, fl, c)| (n.as_str(), fl.as_deref(), c.as_slice()))
                .collect();
            h.post_multipart(&path, &borrowed).await
        }
    };
    let listed = || async {
        h.app
            .profile()
            .await
            .lookup(case.parse().unwrap())
            .unwrap()
            .attachments
    };

    // Without the form's token: refused, nothing written.
    let r = send_form(fields("not-the-token", "gp.pdf", &letter)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(listed().await.is_empty());

    // With it: attached, and sent again, applied once.
    for _ in 0..2 {
        let r = send_form(fields(&h.csrf.clone(), "gp.pdf", &letter)).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        assert!(r.location().ends_with("#attachments"));
    }
    let files = listed().await;
    assert_eq!(files.len(), 1, "applied once");
    assert_eq!(files[0].title, "Letter from the GP");
    assert_eq!(files[0].file_name, "gp.pdf");
    assert_eq!(files[0].size, letter.len() as u64);
    let page = h.get(&format!("/case/{case}")).await;
    assert!(
        page.body.contains("GP letter attached"),
        "the flash says so"
    );
    assert_eq!(files[0].sha256, Some(polyphony_core::BlobHash::of(&letter)));
    let file = h
        .get(&format!("/case/{case}/attachment/{}", files[0].meta.id))
        .await;
    assert_eq!(file.status, StatusCode::OK);

    // A kind of file that cannot be attached, and no file: said, nothing written.
    let mut exe = fields(&h.csrf.clone(), "setup.exe", b"MZ");
    exe[1].2 = "b".repeat(64).into_bytes();
    let r = send_form(exe).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = h.get(&format!("/case/{case}")).await;
    assert!(
        page.body
            .contains("not a kind of file that can be attached"),
        "the flash says why"
    );
    let mut none = fields(&h.csrf.clone(), "", b"");
    none[1].2 = "c".repeat(64).into_bytes();
    send_form(none).await;
    let page = h.get(&format!("/case/{case}")).await;
    assert!(page.body.contains("Choose the file to attach"));
    assert_eq!(listed().await.len(), 1, "nothing more written");
}

/// Issue 17, part 2: a case is opened with its referral and letter from the new-case form (what
/// is missing is said beside its field, and nothing is opened); the caseload, the case page and
/// the morning list show the first meeting due by urgency, flagged when past due; a re-referral
/// from the case page opens a second episode; a closure before the referral is refused.
#[tokio::test]
async fn a_case_opens_with_its_referral_and_a_re_referral_opens_a_second_episode() {
    let h = Harness::new().await;
    let form = h.get("/cases/new").await;
    for expected in [
        "The referral",
        r#"enctype="multipart/form-data""#,
        "How urgent",
        "Emergency (4 hours)",
        "The reason, in the referrer&#39;s words",
        r#"name="letter""#,
    ] {
        assert!(form.body.contains(expected), "no {expected:?} on the form");
    }
    let letter = b"%PDF-1.4 referral from the GP (test bytes)".to_vec();
    let fields = |once: &str, reason: &str| -> Vec<(String, Option<String>, Vec<u8>)> {
        let mut f: Vec<(String, Option<String>, Vec<u8>)> = [
            ("_csrf", h.csrf.as_str()),
            ("_once", once),
            ("name", "Alex Smith"),
            ("received_at-day", "14"),
            ("received_at-month", "3"),
            ("received_at-year", "2026"),
            ("received_at-time", "08:00"),
            ("source", "gp"),
            ("referrer", "Dr Shah, Elm Street Surgery"),
            ("reason", reason),
            ("urgency", "emergency"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), None, v.as_bytes().to_vec()))
        .collect();
        f.push(("letter".into(), Some("referral.pdf".into()), letter.clone()));
        f
    };
    let send = |f: Vec<(String, Option<String>, Vec<u8>)>, path: String| {
        let h = &h;
        async move {
            let borrowed: Vec<(&str, Option<&str>, &[u8])> = f
                .iter()
                .map(|(n, fl, c)| (n.as_str(), fl.as_deref(), c.as_slice()))
                .collect();
            h.post_multipart(&path, &borrowed).await
        }
    };

    // No reason: the form again, the error beside the field, and no case.
    let r = send(fields(&"a".repeat(64), ""), "/cases".into()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body.contains(r##"href="#reason""##));
    assert!(r.body.contains("Enter the reason for the referral"));
    assert!(h.app.profile().await.cases().unwrap().is_empty());

    let r = send(
        fields(
            &"b".repeat(64),
            "Not sleeping, hearing her late mother's voice",
        ),
        "/cases".into(),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let case = r.location().trim_start_matches("/case/").to_string();
    let view = h.app.profile().await.lookup(case.parse().unwrap()).unwrap();
    assert_eq!(view.referrals.len(), 1);
    let letter_id = view.referrals[0].letter.expect("the letter is named");
    assert!(view
        .attachments
        .iter()
        .any(|a| a.meta.id == letter_id && a.size == letter.len() as u64));

    let page = h.get(&format!("/case/{case}")).await;
    for expected in [
        "Referrals and episodes",
        "Not sleeping, hearing her late mother&#39;s voice",
        "GP: Dr Shah, Elm Street Surgery",
        "Emergency (4 hours)",
        "First meeting past due",
        &format!("/case/{case}/attachment/{letter_id}"),
    ] {
        assert!(
            page.body.contains(expected),
            "no {expected:?} on the case page"
        );
    }
    let caseload = h.get("/").await;
    assert!(caseload.body.contains("data-first-meeting"));
    assert!(caseload.body.contains("Past due"), "the caseload flags it");
    let today = h.get("/today").await;
    assert!(today.body.contains("Hold the first network meeting"));
    assert!(today.body.contains(&format!("/case/{case}/meetings/new")));

    // Met, closed; a closure before the referral is refused; then a re-referral.
    h.meeting(&case, "2026-03-14T18:00", &["person"]).await;
    let r = h
        .post(
            &format!("/case/{case}/timeline"),
            &[("milestone", "closure"), ("at", "2026-03-01T12:00")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = h.get(&format!("/case/{case}")).await;
    assert!(page.body.contains("before the referral came in"), "said");
    h.post(
        &format!("/case/{case}/timeline"),
        &[("milestone", "closure"), ("at", "2026-05-01T12:00")],
    )
    .await;
    let form = h.get(&format!("/case/{case}/referrals/new")).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains(r#"enctype="multipart/form-data""#));
    // A date without its time: said beside the field, what was typed kept, nothing written.
    let r = h
        .post(
            &format!("/case/{case}/referrals"),
            &[
                ("received_at", "2026-09-02"),
                ("source", "self"),
                ("reason", "The voices are back"),
                ("urgency", "urgent"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body.contains(r##"href="#received_at""##));
    assert!(r.body.contains("Enter the time the referral came in"));
    assert!(
        r.body.contains("The voices are back"),
        "what was typed is kept"
    );
    let r = h
        .post(
            &format!("/case/{case}/referrals"),
            &[
                ("received_at", "2026-09-02T21:00"),
                ("source", "self"),
                ("reason", "The voices are back"),
                ("urgency", "urgent"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(r.location().ends_with("#referrals"));
    let page = h.get(&format!("/case/{case}")).await;
    assert!(page.body.contains("Referral recorded"), "the flash says so");
    assert!(
        !page.body.contains("Another referral came in"),
        "months after the first: not asked about"
    );
    assert!(page.body.contains(r#"data-episode="2""#));
    assert!(
        page.body.contains("later than its urgency asked"),
        "episode 1 met late"
    );
    let view = h.app.profile().await.lookup(case.parse().unwrap()).unwrap();
    assert_eq!(view.episodes.len(), 2);
    assert!(view.episodes[0].closed_at.is_some());

    // The self-referral came without a letter: one is attached to it later, from its own form.
    let second = view.referrals[1].meta.id;
    assert!(page
        .body
        .contains(&format!("/case/{case}/referral/{second}/letter")));
    let r = send(
        vec![
            ("_csrf".into(), None, h.csrf.as_bytes().to_vec()),
            ("_once".into(), None, "c".repeat(64).into_bytes()),
            (
                "letter".into(),
                Some("self-referral.pdf".into()),
                b"%PDF-1.4 later".to_vec(),
            ),
        ],
        format!("/case/{case}/referral/{second}/letter"),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let view = h.app.profile().await.lookup(case.parse().unwrap()).unwrap();
    let named = view.referrals[1].letter.expect("the letter is named");
    assert!(view.attachments.iter().any(|a| a.meta.id == named));

    // A second referral an hour after one: said, so it can be marked in error if it is the same.
    let r = h
        .post(
            &format!("/case/{case}/referrals"),
            &[
                ("received_at", "2026-09-02T22:00"),
                ("source", "family"),
                ("referrer", "Sam Smith"),
                ("reason", "The voices are back"),
                ("urgency", "urgent"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(
        r.location().contains("#referral-"),
        "taken to the new referral"
    );
    let page = h.get(&format!("/case/{case}")).await;
    assert!(
        page.body
            .contains("Another referral came in on 2 September 2026 at 21:00 UK time"),
        "asked about"
    );

    // A referral is marked entered in error from its own page, like every entry.
    assert!(page
        .body
        .contains(&format!("/case/{case}/entry/{second}/error")));
    let mark = h.get(&format!("/case/{case}/entry/{second}/error")).await;
    assert_eq!(mark.status, StatusCode::OK, "{}", mark.body);
    assert!(mark.body.contains("the referral of"));
}
