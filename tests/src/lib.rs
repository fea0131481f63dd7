//! The end-to-end test harness: a real borough server on loopback and real device profiles.
//!
//! Every end-to-end test starts from here instead of copying set-up: [`TestServer::start`] runs a
//! server in-process on a free port with its own data directory; [`TestServer::device`] enrols a
//! new device for a practitioner through the real enrolment exchange.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use polyphony_core::profile::Profile;
use polyphony_server::admin::{self, AdminRequest, AdminResponse};
use polyphony_server::{Server, ServerConfig, ServerHandle};
use tempfile::TempDir;

/// A server running in this process.
pub struct TestServer {
    /// Its data directory.
    pub dir: TempDir,
    /// Its configuration.
    pub config: ServerConfig,
    handle: Option<ServerHandle>,
}

/// Install a test tracing subscriber once (logs shown with RUST_LOG).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

impl TestServer {
    /// Start a fresh server on a free loopback port.
    pub async fn start() -> Result<TestServer> {
        init_logs();
        let dir = tempfile::tempdir()?;
        let config = ServerConfig {
            data_dir: dir.path().join("data"),
            listen: "127.0.0.1:0".parse()?,
            ..ServerConfig::default()
        };
        let handle = Server::start(config.clone()).await?;
        let mut config = config;
        config.listen = handle.local_addr();
        Ok(TestServer {
            dir,
            config,
            handle: Some(handle),
        })
    }

    /// Where devices reach it.
    pub fn addr(&self) -> SocketAddr {
        self.config.listen
    }

    /// The running server.
    pub fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().expect("server running")
    }

    /// Stop and start again on the same port and data.
    pub async fn restart(&mut self) -> Result<()> {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
        self.handle = Some(Server::start(self.config.clone()).await?);
        Ok(())
    }

    /// Send an admin request through the running server's admin socket.
    pub async fn admin(&self, req: AdminRequest) -> Result<serde_json::Value> {
        match admin::request(&self.config.admin_socket_path(), &req).await? {
            AdminResponse::Ok { value } => Ok(value),
            AdminResponse::Err { message } => Err(anyhow!("admin refused: {message}")),
        }
    }

    /// Create a team; returns its name.
    pub async fn team(&self, name: &str) -> Result<String> {
        self.admin(AdminRequest::TeamAdd { name: name.into() })
            .await?;
        Ok(name.to_string())
    }

    /// Register a practitioner in a team.
    pub async fn practitioner(&self, name: &str, team: &str) -> Result<()> {
        self.admin(AdminRequest::PractitionerAdd {
            name: name.into(),
            team: team.into(),
        })
        .await?;
        Ok(())
    }

    /// A fresh one-time enrolment code for a practitioner.
    pub async fn code(&self, practitioner: &str) -> Result<String> {
        let v = self
            .admin(AdminRequest::Enrol {
                practitioner: practitioner.into(),
            })
            .await?;
        code_from(&v)
    }

    /// Enrol a new device for a practitioner.
    pub async fn device(&self, practitioner: &str) -> Result<TestDevice> {
        let code = self.code(practitioner).await?;
        let dir = tempfile::tempdir()?;
        let mut profile = Profile::open(&dir.path().join("home"), "correct horse battery staple")?;
        profile
            .enrol(
                &self.addr().to_string(),
                &code,
                &format!("{practitioner}'s laptop"),
            )
            .await
            .context("enrolment")?;
        Ok(TestDevice { dir, profile })
    }
}

/// The path of a workspace binary (built by `cargo build --workspace --bins` before the tests).
pub fn bin_path(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("test binary path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (the README's test command does)",
        path.display()
    );
    path
}

/// A free UDP port on loopback (bound and released; good enough for tests).
pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a free port");
    s.local_addr().expect("local addr").port()
}

/// A server running as a separate process (so tests can SIGKILL it).
pub struct ServerProcess {
    /// Its data directory.
    pub data: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Option<std::process::Child>,
}

impl ServerProcess {
    /// Start `polyphony-server serve` on `addr` with `data`, and wait until it answers.
    pub async fn start(data: PathBuf, addr: SocketAddr) -> Result<ServerProcess> {
        let child = std::process::Command::new(bin_path("polyphony-server"))
            .arg("--data")
            .arg(&data)
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(match std::env::var_os("POLYPHONY_SERVER_LOG") {
                Some(path) => std::process::Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)?,
                ),
                None => std::process::Stdio::null(),
            })
            .spawn()?;
        let p = ServerProcess {
            data,
            addr,
            child: Some(child),
        };
        p.wait_ready().await?;
        Ok(p)
    }

    async fn wait_ready(&self) -> Result<()> {
        let config = ServerConfig {
            data_dir: self.data.clone(),
            ..ServerConfig::default()
        };
        for _ in 0..300 {
            if admin::request(&config.admin_socket_path(), &AdminRequest::Teams)
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Err(anyhow!("the server process did not come up"))
    }

    /// Send an admin request.
    pub async fn admin(&self, req: AdminRequest) -> Result<serde_json::Value> {
        let config = ServerConfig {
            data_dir: self.data.clone(),
            ..ServerConfig::default()
        };
        match admin::request(&config.admin_socket_path(), &req).await? {
            AdminResponse::Ok { value } => Ok(value),
            AdminResponse::Err { message } => Err(anyhow!("admin refused: {message}")),
        }
    }

    /// Enrol a device for a practitioner.
    pub async fn device(&self, practitioner: &str) -> Result<TestDevice> {
        let code = code_from(
            &self
                .admin(AdminRequest::Enrol {
                    practitioner: practitioner.into(),
                })
                .await?,
        )?;
        let dir = tempfile::tempdir()?;
        let mut profile = Profile::open(&dir.path().join("home"), "correct horse battery staple")?;
        profile
            .enrol(&self.addr.to_string(), &code, "laptop")
            .await?;
        Ok(TestDevice { dir, profile })
    }

    /// SIGKILL the server: no shutdown, no flush.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The code string from an admin `Enrol` answer (a bare string or an object with `code`).
pub fn code_from(v: &serde_json::Value) -> Result<String> {
    v.as_str()
        .map(str::to_string)
        .or_else(|| v.get("code").and_then(|c| c.as_str()).map(str::to_string))
        .ok_or_else(|| anyhow!("no code in {v}"))
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Dropping the handle aborts nothing by itself; the runtime ends its tasks at test end.
    }
}

/// An enrolled device.
pub struct TestDevice {
    /// Its home directory.
    pub dir: TempDir,
    /// Its profile.
    pub profile: Profile,
}

impl TestDevice {
    /// Sync, failing the test on any error.
    pub async fn sync(&mut self) -> Result<polyphony_core::profile::SyncReport> {
        Ok(self.profile.sync(&mut |_| {}).await?)
    }

    /// Where its store lives.
    pub fn home(&self) -> PathBuf {
        self.profile.home().to_path_buf()
    }
}

/// A session host for tests that drive raw sessions: holds documents in memory, records what the
/// server refused and acknowledged, and forwards every action (with the case's document as it
/// then stands) to `events` if set.
#[derive(Default)]
pub struct TestHost {
    /// The documents offered to the server.
    pub docs: std::collections::BTreeMap<polyphony_core::CaseId, automerge::AutoCommit>,
    /// Cases refused, with the code.
    pub refused: Vec<(polyphony_core::CaseId, polyphony_core::sync::ErrorCode)>,
    /// Cases acknowledged (one entry per `Saved`).
    pub acked: Vec<polyphony_core::CaseId>,
    /// Where to forward actions, if anywhere.
    pub events: Option<tokio::sync::mpsc::UnboundedSender<(Action, Option<automerge::AutoCommit>)>>,
}

use polyphony_core::sync::Action;

impl polyphony_core::sync::DocSet for TestHost {
    fn cases(&self) -> Vec<polyphony_core::CaseId> {
        self.docs.keys().copied().collect()
    }
    fn doc(&mut self, case: &polyphony_core::CaseId) -> Option<&mut automerge::AutoCommit> {
        self.docs.get_mut(case)
    }
    fn insert(&mut self, case: polyphony_core::CaseId, doc: automerge::AutoCommit) {
        self.docs.insert(case, doc);
    }
}

impl polyphony_core::net::SessionHost for TestHost {
    fn act(&mut self, action: &Action) -> std::result::Result<(), String> {
        let case = match action {
            Action::Refused { case, refusal } => {
                self.refused.push((*case, refusal.code));
                Some(*case)
            }
            Action::Acknowledged { case, .. } => {
                self.acked.push(*case);
                Some(*case)
            }
            Action::Persist { case, .. } | Action::Moved { case } => Some(*case),
            _ => None,
        };
        if let Some(tx) = &self.events {
            let doc = case.and_then(|c| self.docs.get(&c).cloned());
            let _ = tx.send((action.clone(), doc));
        }
        Ok(())
    }
}

/// Connect to a server with an enrolled device's identity (which may have been wiped since: an
/// attacker's copy).
pub async fn connect_as(
    addr: SocketAddr,
    e: &polyphony_core::profile::Enrolment,
) -> Result<(quinn::Endpoint, quinn::Connection)> {
    let key = polyphony_core::identity::DeviceKey::from_pem(&e.key_pem)?;
    Ok(polyphony_core::net::connect(
        &addr.to_string(),
        &hex::decode(&e.ca)?,
        &hex::decode(&e.certificate)?,
        &key,
    )
    .await?)
}

/// Run one session (one-shot or live) as `e` with `host`'s documents until it ends.
pub async fn run_session(
    addr: SocketAddr,
    e: &polyphony_core::profile::Enrolment,
    mut host: TestHost,
    live: bool,
) -> Result<(polyphony_core::sync::ErrorCode, TestHost)> {
    let (ep, conn) = connect_as(addr, e).await?;
    let mut session = polyphony_core::sync::ClientSession::new(live, vec![], Default::default());
    let end =
        polyphony_core::net::drive(&addr.to_string(), &conn, &mut session, &mut host, None).await;
    ep.close(0u32.into(), b"");
    let (code, _) = end?;
    Ok((code, host))
}
