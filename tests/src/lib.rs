//! The end-to-end test harness: a real borough server on loopback and real device profiles.
//!
//! Every end-to-end test starts from here instead of copying set-up: [`TestServer::start`] runs a
//! server in-process on a free port with its own data directory; [`TestServer::device`] enrols a
//! new device for a practitioner through the real enrolment exchange.
//!
//! For the fault and attack suites (issue 9) it also offers the faults themselves: a lossy UDP
//! relay ([`LossyRelay`]), a store that fails on demand ([`FaultyStore`]), a real small
//! filesystem ([`SmallDisk`]), the server as a process to SIGKILL ([`ServerProcess`]), and raw
//! sessions with hand-made identities and documents ([`raw_sync`]). For the power-loss test
//! (issue 13) a filesystem that forgets what nobody fsynced ([`PowerFs`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use polyphony_core::model::{
    self, CaseDoc, CaseView, NewCase, NewMeeting, NoteKind, Participant, Place,
};
use polyphony_core::profile::Profile;
use polyphony_core::store::pg_store::testing::TestSchema;
use polyphony_core::store::Store;
use polyphony_core::{CaseId, EntryId};
use polyphony_server::admin::{self, AdminRequest, AdminResponse};
use polyphony_server::config::StoreEngine;
use polyphony_server::data_dir;
use polyphony_server::{Server, ServerConfig, ServerHandle};
use tempfile::TempDir;

mod disk;
pub mod federation;
pub mod powerfs;
mod relay;
pub mod sim;

pub use disk::{DiskFault, DiskSwitch, FaultyStore, SmallDisk};
pub use powerfs::{Metadata, PowerCounts, PowerFs};
pub use relay::{Impairment, LossyRelay, RelayCounts};

/// A server running in this process.
pub struct TestServer {
    /// Its data directory.
    pub dir: TempDir,
    /// Its configuration.
    pub config: ServerConfig,
    handle: Option<ServerHandle>,
    /// Its PostgreSQL schema, dropped after the server (last field), when it runs on PostgreSQL.
    _schema: Option<TestSchema>,
}

/// The environment variable that puts the end-to-end servers on PostgreSQL:
/// `POLYPHONY_TEST_ENGINE=postgres` (with `POLYPHONY_TEST_PG` naming the cluster). Unset or
/// `sled`, they run on sled. `scripts/test` runs the sync, kill and acknowledgement suites once
/// on each engine.
pub const ENGINE_ENV: &str = "POLYPHONY_TEST_ENGINE";

/// Whether the end-to-end servers run on PostgreSQL in this test run ([`ENGINE_ENV`]). Any
/// other value than `sled`, `postgres` or nothing stops the test: a misspelt engine must not
/// quietly test sled twice.
pub fn on_postgres() -> bool {
    match std::env::var(ENGINE_ENV).as_deref() {
        Err(_) | Ok("") | Ok("sled") => false,
        Ok("postgres") => true,
        Ok(other) => panic!("{ENGINE_ENV}={other}: expected sled or postgres"),
    }
}

/// Put `config` on PostgreSQL in a schema of its own when the run asks for it
/// ([`on_postgres`]); the schema lives as long as what is returned.
pub fn engine_for_test(config: &mut ServerConfig) -> Option<TestSchema> {
    if !on_postgres() {
        return None;
    }
    let schema = TestSchema::new();
    config.store = StoreEngine::Postgres;
    config.postgres_url = Some(schema.options.url.clone());
    config.postgres_schema = schema.options.schema.clone();
    config.postgres_pool = schema.options.pool_size;
    Some(schema)
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
        Self::start_with(|_| {}).await
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
            role: None,
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
        self.device_at(practitioner, self.addr()).await
    }

    /// Enrol a new device that reaches the server at `addr` (a [`LossyRelay`] in front of it, say):
    /// the enrolment records that address, so every later sync goes through it too.
    pub async fn device_at(&self, practitioner: &str, addr: SocketAddr) -> Result<TestDevice> {
        let code = self.code(practitioner).await?;
        let dir = tempfile::tempdir()?;
        let mut profile = Profile::open(&dir.path().join("home"), PASSPHRASE)?;
        profile
            .enrol(
                &addr.to_string(),
                &code,
                &format!("{practitioner}'s laptop"),
            )
            .await
            .context("enrolment")?;
        Ok(TestDevice { dir, profile })
    }

    /// Start a fresh server whose configuration the test adjusts first (a low connection limit, a
    /// small frame limit, a short enrolment lifetime).
    pub async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Result<TestServer> {
        Self::start_inner(adjust, None::<fn(Arc<dyn Store>) -> Arc<dyn Store>>).await
    }

    /// Start a fresh server over its real store wrapped by `wrap` (a [`FaultyStore`], to fill the
    /// disk on demand). [`TestServer::restart`] reopens the plain store.
    pub async fn start_with_store(
        wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
    ) -> Result<TestServer> {
        Self::start_inner(|_| {}, Some(wrap)).await
    }

    async fn start_inner(
        adjust: impl FnOnce(&mut ServerConfig),
        wrap: Option<impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>>,
    ) -> Result<TestServer> {
        init_logs();
        let dir = tempfile::tempdir()?;
        let mut config = ServerConfig {
            data_dir: dir.path().join("data"),
            listen: "127.0.0.1:0".parse()?,
            ..ServerConfig::default()
        };
        let schema = engine_for_test(&mut config);
        adjust(&mut config);
        let handle = match wrap {
            Some(wrap) => {
                let store = data_dir::open_store(&config)?;
                Server::start_with_store(config.clone(), wrap(store)).await?
            }
            None => Server::start(config.clone()).await?,
        };
        config.listen = handle.local_addr();
        Ok(TestServer {
            dir,
            config,
            handle: Some(handle),
            _schema: schema,
        })
    }

    /// Stop the server, run `f` over its data directory (to copy it, or put an older copy in its
    /// place, as a restore from backup would), then start it again on the same port.
    pub async fn stopped<R>(&mut self, f: impl FnOnce(&std::path::Path) -> Result<R>) -> Result<R> {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let out = f(&self.config.data_dir);
        self.handle = Some(Server::start(self.config.clone()).await?);
        out
    }

    /// Stop the server, run `f` over its data opened offline (its CA, registry and store, as an
    /// administrator's offline command would), then start it again on the same port.
    pub async fn offline<R>(
        &mut self,
        f: impl FnOnce(&data_dir::Opened) -> Result<R>,
    ) -> Result<R> {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
        // A session task may still hold the store for a moment after shutdown returns.
        let mut opened = data_dir::open(&self.config);
        for _ in 0..100 {
            if opened.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            opened = data_dir::open(&self.config);
        }
        let out = f(&opened?);
        self.handle = Some(Server::start(self.config.clone()).await?);
        out
    }
}

/// `n` cases on a device ("Person 0", "Person 1"...), each with a home meeting and a line of
/// notes in it: a caseload to sync, kill a server or a database under, and check.
pub fn cases_with_notes(profile: &mut Profile, n: usize) -> Result<Vec<CaseId>> {
    let mut cases = Vec::with_capacity(n);
    for i in 0..n {
        let case = profile.create_case(
            NewCase {
                name: format!("Person {i}"),
                ..Default::default()
            },
            None,
        )?;
        let at = model::parse_datetime("at", "2026-03-14T10:30")?;
        let meeting = profile.edit(case, |d| {
            d.add_meeting(NewMeeting {
                at,
                place: Place::Home,
                attendees: vec![Participant::Person],
            })
        })?;
        profile.edit(case, |d| {
            d.append_text(&meeting, NoteKind::Notes, &format!("Notes for person {i}."))
        })?;
        cases.push(case);
    }
    Ok(cases)
}

/// Every change `from` holds as acknowledged by the server, for each of `cases`, is in `to`'s
/// copy (panics naming the case, the change and `lost`, what would have lost it). Returns how
/// many of the cases had an acknowledged change.
pub fn assert_acknowledged_reached(
    from: &Profile,
    to: &mut Profile,
    cases: &[CaseId],
    lost: &str,
) -> Result<usize> {
    let mut acknowledged = 0;
    for case in cases {
        let acked = from.acknowledged_heads(*case)?;
        if acked.is_empty() {
            continue;
        }
        acknowledged += 1;
        let mut doc = to.document(*case)?;
        for h in &acked {
            assert!(
                doc.get_change_by_hash(h).is_some(),
                "case {case}: acknowledged change {h} {lost}"
            );
        }
    }
    Ok(acknowledged)
}

/// The passphrase of every test device's store.
pub const PASSPHRASE: &str = "correct horse battery staple";

/// The details of the records of one kind (`offline_read`, `refused`...) in an audit listing as
/// the admin `Audit` request returns it, oldest first.
pub fn audit_details(log: &serde_json::Value, action: &str) -> Result<Vec<String>> {
    Ok(log
        .as_array()
        .ok_or_else(|| anyhow!("the audit listing is not a list: {log}"))?
        .iter()
        .filter(|r| r["event"]["action"] == action)
        .map(|r| {
            r["event"]["detail"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect())
}

/// Print one summary line of what a fault or attack test did, in a form `docs/RELIABILITY.md`
/// gathers its tables from: `FIGURES <test> key=value ...` (run the tests with `--nocapture`).
pub fn report_figures(test: &str, figures: &[(&str, u64)]) {
    let fields: Vec<String> = figures.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!("FIGURES {test} {}", fields.join(" "));
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

fn workspace_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits inside the workspace")
        .to_path_buf()
}

/// Where the tests keep the Noto fonts the person's PDF copy is set in: `POLYPHONY_FONT_DIR`, or
/// `target/fonts/` in this checkout. [`pdf_fonts`] fills it.
pub fn pdf_font_dir() -> PathBuf {
    std::env::var_os("POLYPHONY_FONT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target").join("fonts"))
}

/// [`pdf_font_dir`], filled by `scripts/pdf-fonts.sh` (pinned, checksummed) the first time a test
/// needs it. Panics with the script's own words when the fonts cannot be had.
pub fn pdf_fonts() -> PathBuf {
    static DIR: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let root = workspace_root();
        let dir = pdf_font_dir();
        if polyphony_core::export::person_copy::Fonts::load(&dir).is_ok() {
            return Ok(dir);
        }
        let out = std::process::Command::new("bash")
            .arg(root.join("scripts").join("pdf-fonts.sh"))
            .arg(&dir)
            .output()
            .map_err(|e| format!("could not run scripts/pdf-fonts.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/pdf-fonts.sh failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(dir)
    });
    match dir {
        Ok(d) => d.clone(),
        Err(e) => panic!("the PDF fonts cannot be had, so the PDF copy cannot be checked: {e}"),
    }
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

/// A PostgreSQL cluster of a test's own (`scripts/pg-cluster.sh`), for tests that crash the
/// database itself. Stopped and deleted when dropped.
pub struct PgCluster {
    /// Its directory.
    pub dir: String,
    /// Its connection string.
    pub url: String,
}

impl PgCluster {
    fn script(args: &[&str]) -> Result<String> {
        let out = std::process::Command::new("bash")
            .arg(workspace_root().join("scripts").join("pg-cluster.sh"))
            .args(args)
            .stderr(std::process::Stdio::inherit())
            .output()?;
        if !out.status.success() {
            return Err(anyhow!(
                "scripts/pg-cluster.sh {args:?} failed: {}",
                out.status
            ));
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Make and start a new cluster.
    pub fn start() -> Result<PgCluster> {
        // `export POLYPHONY_TEST_PG='...' POLYPHONY_PG_DIR='...'`
        let line = Self::script(&["start"])?;
        let quoted: Vec<&str> = line.split('\'').collect();
        match quoted.as_slice() {
            [_, url, _, dir, ..] => Ok(PgCluster {
                dir: dir.to_string(),
                url: url.to_string(),
            }),
            _ => Err(anyhow!("unexpected output from pg-cluster.sh: {line}")),
        }
    }

    /// Kill every process of the cluster at once (no checkpoint, its shared memory lost).
    pub fn crash(&self) -> Result<()> {
        Self::script(&["crash", &self.dir]).map(drop)
    }

    /// Start it again after [`PgCluster::crash`]; it recovers from its write-ahead log.
    pub fn restart(&self) -> Result<()> {
        Self::script(&["restart", &self.dir]).map(drop)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Self::script(&["stop", &self.dir]);
    }
}

/// On PostgreSQL runs: give the server process in `data` a configuration file that puts it in a
/// schema of its own, unless it has one already (a restart keeps its schema; a data directory
/// deleted and started again gets a new, empty one, as a new sled store would be). The schema is
/// not dropped: the cluster is thrown away after the run.
fn postgres_config_file(data: &std::path::Path) -> Result<()> {
    let path = data.join(polyphony_server::config::CONFIG_FILE_NAME);
    if path.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(data)?;
    let mut config = ServerConfig::default();
    let schema = engine_for_test(&mut config).expect("on PostgreSQL");
    std::fs::write(
        &path,
        format!(
            "store = \"postgres\"\npostgres_url = {:?}\npostgres_schema = {:?}\npostgres_pool = 8\n",
            schema.options.url, schema.options.schema
        ),
    )?;
    // Kept for the process's life and beyond: the guard must not drop it.
    std::mem::forget(schema);
    Ok(())
}

impl ServerProcess {
    /// Start `polyphony-server serve` on `addr` with `data`, and wait until it answers.
    pub async fn start(data: PathBuf, addr: SocketAddr) -> Result<ServerProcess> {
        Self::start_via(&[], data, addr).await
    }

    /// Like [`ServerProcess::start`], with the binary run through `prefix` (a command that execs
    /// it, such as [`SmallDisk::prefix`], so the process keeps its pid and `kill` still reaches it).
    pub async fn start_via(
        prefix: &[std::ffi::OsString],
        data: PathBuf,
        addr: SocketAddr,
    ) -> Result<ServerProcess> {
        let p = Self::spawn_via(prefix, data, addr)?;
        p.wait_ready().await?;
        Ok(p)
    }

    /// Start `polyphony-server serve` without waiting for it to answer (a standby node answers
    /// only once the active one stops): see [`ServerProcess::wait_ready`].
    pub fn spawn(data: PathBuf, addr: SocketAddr) -> Result<ServerProcess> {
        Self::spawn_via(&[], data, addr)
    }

    fn spawn_via(
        prefix: &[std::ffi::OsString],
        data: PathBuf,
        addr: SocketAddr,
    ) -> Result<ServerProcess> {
        if on_postgres() {
            postgres_config_file(&data)?;
        }
        let mut command = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = std::process::Command::new(program);
                c.args(args).arg(bin_path("polyphony-server"));
                c
            }
            None => std::process::Command::new(bin_path("polyphony-server")),
        };
        let child = command
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
        Ok(ServerProcess {
            data,
            addr,
            child: Some(child),
        })
    }

    /// Wait until the server answers on its admin socket (up to 15 s).
    pub async fn wait_ready(&self) -> Result<()> {
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
        let dir = tempfile::tempdir()?;
        let mut profile = Profile::open(&dir.path().join("home"), PASSPHRASE)?;
        self.enrol(practitioner, &mut profile).await?;
        Ok(TestDevice { dir, profile })
    }

    /// Enrol a profile the test opened itself (its home on a [`PowerFs`], its store wrapped) as a
    /// device of `practitioner`.
    pub async fn enrol(&self, practitioner: &str, profile: &mut Profile) -> Result<()> {
        let code = code_from(
            &self
                .admin(AdminRequest::Enrol {
                    practitioner: practitioner.into(),
                })
                .await?,
        )?;
        profile
            .enrol(&self.addr.to_string(), &code, "laptop")
            .await?;
        Ok(())
    }

    /// Its configuration, as the binary sees it (to open its store offline after a kill).
    pub fn config(&self) -> ServerConfig {
        ServerConfig {
            data_dir: self.data.clone(),
            listen: self.addr,
            ..ServerConfig::default()
        }
    }

    /// The process id, while the process is ours to kill.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the process is still running (it has not exited, nor been killed).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
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

    /// Open a case for `name` with one meeting (at home, the person attending); returns both ids.
    pub fn case_with_meeting(&mut self, name: &str) -> Result<(CaseId, EntryId)> {
        let case = self.profile.create_case(
            NewCase {
                name: name.into(),
                ..Default::default()
            },
            None,
        )?;
        let at = model::parse_datetime("at", "2026-03-14T10:30")?;
        let meeting = self.profile.edit(case, |d| {
            d.add_meeting(NewMeeting {
                at,
                place: Place::Home,
                attendees: vec![Participant::Person],
            })
        })?;
        Ok((case, meeting))
    }

    /// Add `text` to a meeting's notes; on disk when this returns.
    pub fn note(&mut self, case: CaseId, meeting: EntryId, text: &str) -> Result<()> {
        self.profile
            .edit(case, |d| d.append_text(&meeting, NoteKind::Notes, text))?;
        Ok(())
    }

    /// A case as this device holds it, without recording a read in the access log.
    pub fn peek(&mut self, case: CaseId) -> Result<CaseView> {
        let doc = self.profile.document(case)?;
        Ok(CaseDoc::from_automerge(doc, None)?.view())
    }

    /// Sync, trying again when the network loses a sync, at most `attempts` times (each bounded
    /// by [`SYNC_TIMEOUT`]). Returns the report and how many attempts failed.
    pub async fn sync_retrying(
        &mut self,
        attempts: usize,
    ) -> Result<(polyphony_core::profile::SyncReport, usize)> {
        let mut failed = 0;
        loop {
            let outcome = tokio::time::timeout(SYNC_TIMEOUT, self.profile.sync(&mut |_| {})).await;
            let error = match outcome {
                Ok(Ok(report)) => return Ok((report, failed)),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no result within {SYNC_TIMEOUT:?}"),
            };
            failed += 1;
            if failed >= attempts {
                return Err(anyhow!("sync failed {failed} times; last: {error}"));
            }
            eprintln!("sync attempt {failed} lost ({error}); trying again");
        }
    }
}

/// How long one sync may take in a fault test before it counts as lost (generous: a debug build
/// on a shared two-core machine, through a lossy relay).
pub const SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A device identity given piece by piece, for sessions with certificates the server did not
/// issue through a normal enrolment (expired, forged, another borough's).
pub struct RawIdentity {
    /// The CA the device trusts, DER.
    pub ca: Vec<u8>,
    /// The device's certificate, DER.
    pub cert: Vec<u8>,
    /// Its key.
    pub key: polyphony_core::identity::DeviceKey,
}

impl RawIdentity {
    /// The identity an enrolment holds.
    pub fn of(e: &polyphony_core::profile::Enrolment) -> Result<RawIdentity> {
        Ok(RawIdentity {
            ca: hex::decode(&e.ca)?,
            cert: hex::decode(&e.certificate)?,
            key: polyphony_core::identity::DeviceKey::from_pem(&e.key_pem)?,
        })
    }
}

/// The documents of a raw session, and what the server said about them.
#[derive(Default)]
pub struct RawHost {
    /// The documents offered (and received).
    pub docs: std::collections::BTreeMap<CaseId, automerge::AutoCommit>,
    /// Cases refused, with the code.
    pub refused: Vec<(CaseId, polyphony_core::sync::ErrorCode)>,
    /// Cases acknowledged.
    pub acked: Vec<CaseId>,
}

impl polyphony_core::sync::DocSet for RawHost {
    fn cases(&self) -> Vec<CaseId> {
        self.docs.keys().copied().collect()
    }
    fn doc(&mut self, case: &CaseId) -> Option<&mut automerge::AutoCommit> {
        self.docs.get_mut(case)
    }
    fn insert(&mut self, case: CaseId, doc: automerge::AutoCommit) {
        self.docs.insert(case, doc);
    }
    fn wipe(&mut self) -> Result<Vec<polyphony_core::CaseId>, String> {
        self.docs.clear();
        Ok(Vec::new())
    }
}

impl polyphony_core::net::SessionHost for RawHost {
    fn act(
        &mut self,
        action: &polyphony_core::sync::Action,
    ) -> Result<(), polyphony_core::store::StoreError> {
        use polyphony_core::sync::Action;
        match action {
            Action::Refused { case, refusal } => self.refused.push((*case, refusal.code)),
            Action::Acknowledged { case, .. } => self.acked.push(*case),
            _ => {}
        }
        Ok(())
    }
}

/// Run a one-shot sync session against `addr` as `id`, offering `docs` and nothing else (no
/// profile, no store): what an attacker with that identity can do.
pub async fn raw_sync(
    addr: SocketAddr,
    id: &RawIdentity,
    docs: std::collections::BTreeMap<CaseId, automerge::AutoCommit>,
) -> Result<RawHost> {
    use polyphony_core::net;
    let (endpoint, conn) = net::connect(&addr.to_string(), &id.ca, &id.cert, &id.key).await?;
    let mut host = RawHost {
        docs,
        ..RawHost::default()
    };
    let mut session =
        polyphony_core::sync::ClientSession::new(false, vec![], std::collections::BTreeMap::new());
    let outcome = net::drive(&addr.to_string(), &conn, &mut session, &mut host, None).await;
    endpoint.close(0u32.into(), b"");
    outcome?;
    Ok(host)
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
    fn wipe(&mut self) -> Result<Vec<polyphony_core::CaseId>, String> {
        self.docs.clear();
        Ok(Vec::new())
    }
}

impl polyphony_core::net::SessionHost for TestHost {
    fn act(
        &mut self,
        action: &Action,
    ) -> std::result::Result<(), polyphony_core::store::StoreError> {
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
