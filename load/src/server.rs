//! The server under test: a `polyphony-server` child process (the default, so its memory is its own
//! and readable from `/proc`), the server in this process, or one already running elsewhere on this
//! machine. Administration (teams, practitioners, enrolment codes) goes through the admin socket in
//! every case, as an administrator's would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use polyphony_server::admin::{self, AdminRequest, AdminResponse};
use polyphony_server::{Server, ServerConfig, ServerHandle};

use crate::device::Device;

/// How to reach (or start) the server.
#[derive(Debug, Clone)]
pub enum ServerSpec {
    /// Start `polyphony-server serve` from this binary, with a fresh data directory.
    Child {
        /// The server binary.
        bin: PathBuf,
    },
    /// Start the server inside the load generator.
    InProcess,
    /// A server already running: its address and data directory (for the admin socket), and its
    /// process id if memory should be read.
    Existing {
        /// Where devices reach it.
        addr: SocketAddr,
        /// Its data directory.
        data: PathBuf,
        /// Its process, for memory figures.
        pid: Option<u32>,
    },
}

/// The environment variable that puts a child server on PostgreSQL (its connection string).
pub const POSTGRES_ENV: &str = "POLYPHONY_LOAD_POSTGRES";

/// A server the workloads can use.
pub struct BenchServer {
    /// Where devices reach it.
    pub addr: SocketAddr,
    /// Its data directory.
    pub data: PathBuf,
    spec: ServerSpec,
    child: Option<Child>,
    handle: Option<ServerHandle>,
    _dir: Option<tempfile::TempDir>,
}

impl BenchServer {
    /// Start (or attach to) a server as `spec` says, on a free loopback port, with `cache_cases`
    /// open cases kept in memory (the server's default when `None`).
    pub async fn start(spec: ServerSpec, cache_cases: Option<usize>) -> Result<BenchServer> {
        match spec {
            ServerSpec::Existing { addr, ref data, .. } => Ok(BenchServer {
                addr,
                data: data.clone(),
                spec: spec.clone(),
                child: None,
                handle: None,
                _dir: None,
            }),
            ServerSpec::InProcess => {
                let dir = tempfile::tempdir()?;
                let mut config = ServerConfig {
                    data_dir: dir.path().join("data"),
                    listen: "127.0.0.1:0".parse()?,
                    ..ServerConfig::default()
                };
                if let Some(c) = cache_cases {
                    config.cache_cases = c;
                }
                let handle = Server::start(config.clone()).await?;
                Ok(BenchServer {
                    addr: handle.local_addr(),
                    data: config.data_dir,
                    spec,
                    child: None,
                    handle: Some(handle),
                    _dir: Some(dir),
                })
            }
            ServerSpec::Child { .. } => {
                let dir = tempfile::tempdir()?;
                let data = dir.path().join("data");
                std::fs::create_dir_all(&data)?;
                let mut toml = String::new();
                if let Some(c) = cache_cases {
                    toml.push_str(&format!("cache_cases = {c}\n"));
                }
                // POLYPHONY_LOAD_POSTGRES=URL: the server keeps its data in PostgreSQL, in a
                // schema of its own (left in the database afterwards, for inspection).
                if let Ok(url) = std::env::var(POSTGRES_ENV) {
                    toml.push_str(&format!(
                        "store = \"postgres\"\npostgres_url = {url:?}\npostgres_schema = \"bench_{}\"\n",
                        uuid::Uuid::new_v4().simple()
                    ));
                }
                if !toml.is_empty() {
                    std::fs::write(data.join(polyphony_server::config::CONFIG_FILE_NAME), toml)?;
                }
                let port = free_udp_port()?;
                let mut s = BenchServer {
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    data,
                    spec,
                    child: None,
                    handle: None,
                    _dir: Some(dir),
                };
                s.spawn().await?;
                Ok(s)
            }
        }
    }

    async fn spawn(&mut self) -> Result<()> {
        let ServerSpec::Child { bin } = &self.spec else {
            bail!("only a child server can be (re)started");
        };
        let _ = std::fs::remove_file(self.config().admin_socket_path());
        let child = Command::new(bin)
            .arg("--data")
            .arg(&self.data)
            .arg("serve")
            .arg("--listen")
            .arg(self.addr.to_string())
            .env(
                "RUST_LOG",
                std::env::var("POLYPHONY_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        self.child = Some(child);
        for _ in 0..400 {
            if admin::request(self.config().admin_socket_path(), &AdminRequest::Teams)
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!("the server process exited before it came up ({status})");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("the server process did not come up")
    }

    /// SIGKILL a child server: no shutdown, no flush, as a power cut or the OOM killer would.
    /// Returns once the process is gone (its files unlocked), so its data can be opened offline.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start a child server again on the same data directory and address (after [`Self::kill`]).
    pub async fn start_again(&mut self) -> Result<()> {
        self.kill();
        self.spawn().await
    }

    /// Stop a child server gracefully (SIGTERM) and start it again on the same data: its memory is
    /// then what an idle server holding this data needs.
    pub async fn restart(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            let _ = tokio::task::spawn_blocking(move || child.wait()).await?;
        }
        self.spawn().await
    }

    fn config(&self) -> ServerConfig {
        ServerConfig {
            data_dir: self.data.clone(),
            ..ServerConfig::default()
        }
    }

    /// The server's process id, if its memory can be read (not for the in-process server, whose
    /// memory is mixed with the devices').
    pub fn pid(&self) -> Option<u32> {
        match &self.spec {
            ServerSpec::Existing { pid, .. } => *pid,
            _ => self.child.as_ref().map(Child::id),
        }
    }

    /// Bytes on disk under the data directory's store.
    pub fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.data.join("db"))
    }

    /// Send an admin request.
    pub async fn admin(&self, req: AdminRequest) -> Result<serde_json::Value> {
        match admin::request(self.config().admin_socket_path(), &req).await? {
            AdminResponse::Ok { value } => Ok(value),
            AdminResponse::Err { message } => Err(anyhow!("admin refused: {message}")),
        }
    }

    /// Add a team and a practitioner in it.
    pub async fn practitioner(&self, name: &str, team: &str) -> Result<()> {
        self.admin(AdminRequest::TeamAdd { name: team.into() })
            .await
            .ok();
        self.admin(AdminRequest::PractitionerAdd {
            name: name.into(),
            team: team.into(),
            role: None,
        })
        .await?;
        Ok(())
    }

    /// A one-time enrolment code for a practitioner's new device.
    pub async fn code(&self, practitioner: &str) -> Result<String> {
        let v = self
            .admin(AdminRequest::Enrol {
                practitioner: practitioner.into(),
            })
            .await?;
        v.get("code")
            .and_then(|c| c.as_str())
            .or_else(|| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no code in {v}"))
    }

    /// Enrol a new device for a practitioner, through a one-time code.
    pub async fn device(&self, practitioner: &str) -> Result<Device> {
        let code = self.code(practitioner).await?;
        Device::enrol(
            &self.addr.to_string(),
            &code,
            &format!("{practitioner}'s laptop"),
        )
        .await
    }

    /// Stop the server.
    pub async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn terminate(child: &Child) {
    // SIGTERM through the shell's kill, to avoid a libc dependency for one call.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
}

/// A free UDP port on loopback.
pub fn free_udp_port() -> Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

/// Bytes allocated on disk (as `du` counts them) for the files under a directory.
pub fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// The default server binary: `polyphony-server` beside this executable.
pub fn default_server_bin() -> PathBuf {
    let mut p = std::env::current_exe().unwrap_or_default();
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join("polyphony-server")
}
