//! The launch as a new user meets it, through the real binary: the link it writes to
//! `--url-file` is private to its owner and lets one browser in, once.
//!
//! These start `polyphony-app` itself (a fresh profile, no server) and talk to it over a socket,
//! so they check what `main.rs` does and not only what the library offers.

// Test code: its helpers unwrap, as the tests do (the workspace forbids unwrap outside tests).
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The app, started with `--url-file`, killed (by its own id) when the test ends.
struct AppProcess {
    child: Child,
    _home: Option<tempfile::TempDir>,
}

impl AppProcess {
    fn start(url_file: &Path) -> AppProcess {
        let home = tempfile::tempdir().unwrap();
        let mut app = Self::start_in(home.path(), url_file, &[], Stdio::null());
        app._home = Some(home);
        app
    }

    /// The app on the profile in `home` (kept by the caller, so a test can start it again),
    /// with `extra` arguments and its error output going to `stderr`.
    fn start_in(home: &Path, url_file: &Path, extra: &[&str], stderr: Stdio) -> AppProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_polyphony-app"))
            .arg("--home")
            .arg(home.join("profile"))
            .arg("--no-open")
            .arg("--url-file")
            .arg(url_file)
            .args(extra)
            .env("POLYPHONY_PASSPHRASE", "passphrase for the launch tests")
            .env("RUST_LOG", "polyphony_app=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start polyphony-app");
        AppProcess { child, _home: None }
    }

    /// Stop it as a crash or a kill would: SIGKILL, no clean shutdown.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The launch URL, once the app has written it.
    fn launch_url(&mut self, url_file: &Path) -> String {
        let end = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(s) = std::fs::read_to_string(url_file) {
                if s.contains("/launch?secret=") && s.ends_with('\n') {
                    return s.trim().to_string();
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("polyphony-app exited early: {status}");
            }
            assert!(Instant::now() < end, "polyphony-app wrote no launch URL");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for AppProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a browser's top-level visit gets back: the status line and the headers.
struct Visit {
    status: u16,
    head: String,
    body: String,
}

/// Visit `url` as a browser does when the user opens a link (`Sec-Fetch-Site: none`), with an
/// optional cookie. The app's host name is resolved to loopback as browsers resolve `localhost`
/// names; the request still names it in `Host`.
fn visit(url: &str, cookie: Option<&str>) -> Visit {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let port: u16 = authority.rsplit_once(':').unwrap().1.parse().unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nSec-Fetch-Site: none\r\n{cookie}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Visit {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn session_cookie(v: &Visit) -> Option<String> {
    v.head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .map(|c| c.split(';').next().unwrap().to_string())
}

fn url_file_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("launch-url")
}

#[cfg(unix)]
#[test]
fn the_url_file_is_readable_by_its_owner_only_even_over_an_older_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = url_file_in(&dir);
    // A file left by an older run or a script, readable by everyone: the app must not keep
    // its mode.
    std::fs::write(&file, "stale\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut app = AppProcess::start(&file);
    let url = app.launch_url(&file);
    assert!(url.contains("/launch?secret="), "{url}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(format!("{mode:o}"), "600", "the URL file's mode");
}

#[test]
fn the_launch_link_lets_one_browser_in_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = url_file_in(&dir);
    let mut app = AppProcess::start(&file);
    let url = app.launch_url(&file);
    let first = visit(&url, None);
    assert_eq!(first.status, 303, "{}", first.head);
    let cookie = session_cookie(&first).expect("the first visit sets the session cookie");
    // Anyone else who has the link, later: refused, and told how to get a new one.
    let second = visit(&url, None);
    assert_eq!(second.status, 403, "{}", second.head);
    assert!(session_cookie(&second).is_none());
    assert!(second.body.contains("already been used"), "{}", second.body);
    assert!(second.body.contains("start it again"), "{}", second.body);
    // The browser that is already in, following the link again, just goes back in.
    let again = visit(&url, Some(&cookie));
    assert_eq!(again.status, 303, "{}", again.head);
    assert!(session_cookie(&again).is_none(), "no second session");
}

/// The app's origin (`http://<label>.localhost:<port>`) in a launch URL.
fn origin_of(url: &str) -> &str {
    &url[..url.find("/launch").expect("a launch URL")]
}

/// A tab left open when the app was killed must reach the restarted app: the same port and the
/// same host name (the tab's origin), while the old launch link lets nobody in.
#[test]
fn a_killed_app_comes_back_at_the_same_origin() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("launch-url");
    let mut first = AppProcess::start_in(home.path(), &file, &[], Stdio::null());
    let old = first.launch_url(&file);
    first.kill();
    std::fs::remove_file(&file).unwrap();
    let mut again = AppProcess::start_in(home.path(), &file, &[], Stdio::null());
    let new = again.launch_url(&file);
    assert_eq!(
        origin_of(&new),
        origin_of(&old),
        "the restarted app's origin"
    );
    assert_ne!(new, old, "a new launch secret");
    let stale = visit(&old, None);
    assert_eq!(stale.status, 403, "the last run's link: {}", stale.head);
    assert_eq!(visit(&new, None).status, 303);
}

/// When another program holds the remembered port, the app says so and does not start on another
/// port behind the user's back; `--new-port` moves deliberately.
#[test]
fn a_taken_port_is_said_plainly_not_silently_changed() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("launch-url");
    let mut first = AppProcess::start_in(home.path(), &file, &[], Stdio::null());
    let old = first.launch_url(&file);
    first.kill();
    std::fs::remove_file(&file).unwrap();
    let port: u16 = origin_of(&old).rsplit_once(':').unwrap().1.parse().unwrap();
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("take the port");

    let err_file = home.path().join("stderr");
    let stderr = std::fs::File::create(&err_file).unwrap();
    let mut refused = AppProcess::start_in(home.path(), &file, &[], stderr.into());
    let end = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = refused.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            !file.exists(),
            "the app started elsewhere: {}",
            std::fs::read_to_string(&file).unwrap_or_default()
        );
        assert!(Instant::now() < end, "the app neither started nor stopped");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let said = std::fs::read_to_string(&err_file).unwrap();
    assert!(said.contains(&format!("port {port}")), "{said}");
    assert!(said.contains("in use by another program"), "{said}");
    assert!(said.contains("--new-port"), "{said}");

    let mut moved = AppProcess::start_in(home.path(), &file, &["--new-port"], Stdio::null());
    let new = moved.launch_url(&file);
    assert_ne!(origin_of(&new), origin_of(&old));
}
