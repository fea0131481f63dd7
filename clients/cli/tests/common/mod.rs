//! The harness every CLI test uses: a device (a profile in a temporary home, driven through the
//! built `polyphony` binary) and, for tests that need one, a real borough server process on a free
//! loopback port with a team, practitioners and enrolment codes made through its admin commands.

#![allow(dead_code)] // each test file uses its own part of the harness

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

/// The passphrase test devices use.
pub(crate) const PASSPHRASE: &str = "correct horse battery staple";

/// A device: one profile, driven through the `polyphony` binary.
pub(crate) struct Device {
    home: TempDir,
}

impl Default for Device {
    fn default() -> Self {
        Self::new()
    }
}

impl Device {
    /// A device with no profile yet (created by its first command).
    pub(crate) fn new() -> Device {
        Device {
            home: tempfile::tempdir().expect("temporary home"),
        }
    }

    /// Where its profile lives.
    pub(crate) fn home(&self) -> PathBuf {
        self.home.path().join("profile")
    }

    /// `polyphony` with this device's home and passphrase, and nothing from the caller's
    /// environment that could change its behaviour.
    pub(crate) fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("polyphony").expect("the polyphony binary is built");
        c.env("POLYPHONY_HOME", self.home())
            .env("POLYPHONY_PASSPHRASE", PASSPHRASE)
            // A device whose own clock zone is UTC: UK times must not depend on it.
            .env("TZ", "UTC")
            .env_remove("VISUAL")
            .env_remove("EDITOR")
            .env_remove("RUST_LOG")
            .env_remove("POLYPHONY_FONT_DIR")
            .timeout(Duration::from_secs(120));
        c
    }

    /// Run a command that must succeed; its stdout, trimmed.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("run polyphony");
        assert!(
            out.status.success(),
            "`polyphony {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Run a command that must fail with `code`, print nothing on stdout and exactly one
    /// `error: ...` line on stderr; that line.
    pub(crate) fn fails(&self, code: i32, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("run polyphony");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(
            out.status.code(),
            Some(code),
            "`polyphony {}` should exit {code}; stderr: {stderr}",
            args.join(" ")
        );
        assert!(
            out.stdout.is_empty(),
            "a failed command printed on stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
        assert!(
            lines[0].starts_with("error: "),
            "not an error line: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "panic: {stderr}");
        lines[0].to_string()
    }

    /// A command's `--json` output, parsed.
    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// `case show CASE --json`.
    pub(crate) fn show(&self, case: &str) -> Value {
        self.json(&["case", "show", case])
    }

    /// `status --json`.
    pub(crate) fn status(&self) -> Value {
        self.json(&["status"])
    }
}

/// The `polyphony-server` binary, built next to `polyphony` by `cargo build --workspace`.
pub(crate) fn server_binary() -> PathBuf {
    let cli = assert_cmd::cargo::cargo_bin("polyphony");
    let dir = cli.parent().expect("the binary has a directory");
    let server = dir.join(format!("polyphony-server{}", std::env::consts::EXE_SUFFIX));
    assert!(
        server.exists(),
        "{} is missing: run `cargo build --workspace` before these tests",
        server.display()
    );
    server
}

/// A free UDP port on loopback (bound, then released for the server to take).
pub(crate) fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a free port");
    s.local_addr().expect("local address").port()
}

/// A borough server process with its own data directory.
pub(crate) struct Server {
    data: TempDir,
    /// Where devices reach it.
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Server {
    /// Start `polyphony-server serve` on a free loopback port and wait until it takes admin
    /// commands through its socket.
    pub(crate) fn start() -> Server {
        let data = tempfile::tempdir().expect("server data directory");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port())
            .parse()
            .expect("loopback address");
        let mut server = Server {
            data,
            addr,
            child: None,
        };
        server.spawn();
        server
    }

    /// The server's data directory: made by the server itself on first start, so an admin
    /// command can never open the store before the server does.
    fn data_dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    fn spawn(&mut self) {
        let socket = self.data_dir().join("admin.sock");
        // A socket left by a killed server would send admin commands nowhere.
        let _ = std::fs::remove_file(&socket);
        let child = StdCommand::new(server_binary())
            .arg("--data")
            .arg(self.data_dir())
            .arg("serve")
            .arg("--listen")
            .arg(self.addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start polyphony-server");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if socket.exists() && self.admin_output(&["teams"]).status.success() {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("polyphony-server exited at start ({status})");
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "polyphony-server did not come up within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn admin_output(&self, args: &[&str]) -> std::process::Output {
        StdCommand::new(server_binary())
            .arg("--data")
            .arg(self.data_dir())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run polyphony-server")
    }

    /// Run an admin command that must succeed; its stdout, trimmed.
    pub(crate) fn admin(&self, args: &[&str]) -> String {
        let out = self.admin_output(args);
        assert!(
            out.status.success(),
            "`polyphony-server {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Run an admin command that must fail; its stderr.
    pub(crate) fn admin_fails(&self, args: &[&str]) -> String {
        let out = self.admin_output(args);
        assert!(
            !out.status.success(),
            "`polyphony-server {}` succeeded",
            args.join(" ")
        );
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    }

    /// Create a team and a practitioner in it.
    pub(crate) fn practitioner(&self, name: &str, team: &str) {
        let teams = self.admin(&["teams"]);
        if !teams.contains(team) {
            self.admin(&["team", "add", team]);
        }
        self.admin(&["practitioner", "add", name, "--team", team]);
    }

    /// A fresh one-time enrolment code for a practitioner.
    pub(crate) fn code(&self, practitioner: &str) -> String {
        self.admin(&["enrol", practitioner])
    }

    /// A new device enrolled for the practitioner through `polyphony enrol`.
    pub(crate) fn device(&self, practitioner: &str) -> Device {
        let device = Device::new();
        let code = self.code(practitioner);
        device.ok(&[
            "enrol",
            &self.addr.to_string(),
            &code,
            "--device-name",
            &format!("{practitioner}'s laptop"),
        ]);
        device
    }

    /// Stop the server (it can be started again with [`Server::restart`]).
    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the server again on the same port and data.
    pub(crate) fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
