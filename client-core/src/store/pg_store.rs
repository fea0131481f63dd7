//! The PostgreSQL [`Store`], for servers that run on a database NHS IT already operates, replicates
//! and backs up (feature `postgres`; devices never enable it).
//!
//! **What the database sees.** Exactly what sled's files hold: every value is sealed before it
//! leaves this process, with the same key layout and associated data as [`super::SledStore`]
//! (`store id ++ tag ++ key`), under a random data key kept in the `header` table wrapped under
//! the server's key file (format 2 of `sled_store/header.rs`). Case ids, namespace and log names,
//! sequence numbers and attachment addresses are in the clear, as on sled; no record text is.
//! Every server node on one database needs the same key file: another key is refused at open.
//!
//! **Layout** (tables in one schema, created at the first open):
//! - `header (name, value)`: the store's header fields.
//! - `cases (case_id)`: one row per case ever written, locked (`FOR UPDATE`) by every change to
//!   the case's log, so appends to one case are serialised across every connection and node.
//! - `chunks (case_id, seq, data)`, sequence numbers from the sequence `chunk_seq`, drawn **after**
//!   the case's lock is taken and committed with it, so a case's chunks commit in sequence order.
//! - `meta (ns, key, value)`, `logs (log, idx, data)` with `log_heads (log, next_idx)` updated in
//!   the same transaction, `blobs (case_id, hash, data)`.
//!   Names and keys are `bytea`, so key order is byte order, as on sled.
//!
//! **Durability.** Each write is one transaction, committed with the server's own
//! `synchronous_commit` level (`on` if the server says `off`; `statement_timeout` off on the
//! store's connections, since a cancelled wait for a synchronous standby would commit with only a
//! warning): it returns only once the write-ahead log is on disk through its commit (and, with
//! synchronous replication, on the standby's). PostgreSQL groups the log flushes of concurrent
//! commits (group commit across sessions). [`Store::flush`] therefore has nothing left to do.
//! Nothing the server holds in memory can be ahead of the database: a crash of the database
//! loses no write that returned. (An earlier version committed asynchronously and flushed before
//! each acknowledgement; a review found that after a database crash the server's open cases
//! still held changes the database had lost, and a device sending one again was told "saved".)
//! A server running with `fsync = off` is refused at open.
//!
//! **Reaching the database.** On this machine (a Unix socket directory, `localhost`, or a
//! loopback address) without TLS; anywhere else only over TLS, with the server's certificate
//! checked against the authority in [`PgOptions::ca_file`] (rustls, as for QUIC): a plain
//! connection across a network would carry the role's password and the sealed values in the
//! clear, so it is refused before it is tried. The pool's connections are made on
//! demand and replaced when lost; a call while the database is unreachable fails with
//! [`StoreError::Engine`] and the caller's usual refusal.
//!
//! The [`Store`] trait is synchronous, so the store owns a small tokio runtime that runs its
//! queries; a call sends its query there and waits for the answer on a channel. It never enters
//! another runtime, so it may be called from a tokio worker (it blocks that worker as a sled call
//! does: callers keep store calls off the runtime as they do for sled).

use std::future::Future;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use tokio_postgres::{Config, NoTls};

use super::sled_store::header::{self, NewHeader, Unlocked};
use super::sled_store::{
    blob_key, chunk_key, log_key, meta_key, value_aad, HEADER_VERIFIER, TAG_BLOB, TAG_CHUNK,
    TAG_LOG, TAG_META,
};
use super::{check_name, ChunkLog, ChunkSeq, KdfParams, KeySource, Store, StoreError};
use crate::{BlobHash, CaseId};

/// How a [`PgStore`] reaches its database.
#[derive(Clone)]
pub struct PgOptions {
    /// A libpq-style connection string or URL (`host=/run/postgresql dbname=polyphony`,
    /// `postgresql://polyphony@localhost/polyphony`). Its host must be on this machine.
    pub url: String,
    /// The schema that holds the store's tables (created if missing): lower-case letters, digits
    /// and `_`, at most 63 characters. Several stores may share a database in separate schemas.
    pub schema: String,
    /// The most connections the store opens at once.
    pub pool_size: usize,
    /// A PEM file of the certificate authority (or authorities) that signed the database
    /// server's certificate. With it, every connection uses TLS and checks the server's
    /// certificate and name; without it the database must be on this machine.
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for PgOptions {
    /// Without the connection string, which may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl PgOptions {
    /// Options for `url` with the default schema (`polyphony`) and pool size (16).
    pub fn new(url: impl Into<String>) -> PgOptions {
        PgOptions {
            url: url.into(),
            schema: "polyphony".into(),
            pool_size: 16,
            ca_file: None,
        }
    }
}

/// The database's side of every store connection: a session whose node's machine is gone
/// (not only its process) ends within about a minute instead of the system's two hours, and
/// with it the locks it held (a write's share lock on the writer epoch, the writer lock).
const KEEPALIVES: &str = "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 \
     -c tcp_keepalives_count=3 -c tcp_user_timeout=30000";

/// How long a call waits for a pooled connection before it fails.
const POOL_WAIT: Duration = Duration::from_secs(30);
/// How long opening one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The levels of `synchronous_commit` that wait for the write-ahead log to be flushed somewhere.
const DURABLE_LEVELS: &[&str] = &["on", "local", "remote_write", "remote_apply"];

/// A [`Store`] in a PostgreSQL schema (see the module documentation).
pub struct PgStore {
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    shared: Arc<Shared>,
    /// How the store's connections are made (for the writer lock's own connection).
    config: Config,
    tls: Tls,
    schema: String,
}

/// What every query of the store needs: the keys, and whether it is the schema's one writer.
struct Shared {
    keys: Unlocked,
    /// The writer epoch this store holds ([`PgStore::become_writer`]); 0 before it is a writer
    /// (then writes are not fenced).
    epoch: AtomicI64,
    /// Another store became the writer while this one had lost its lock: every write fails.
    deposed: AtomicBool,
    /// The store is taking its lock back after losing its connection.
    retaking: AtomicBool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.schema)
            .finish()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Never block (the store may be dropped on a runtime thread): queries still running are
        // abandoned, and PostgreSQL rolls back any transaction they left open.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PgStore {
    /// Open the store in `options.schema`, creating the schema, its tables and its header on the
    /// first open. Errors: [`StoreError::WrongPassphrase`] if `key` does not open the existing
    /// store, [`StoreError::InvalidRequest`] for a bad schema name or a database that is not on
    /// this machine, [`StoreError::Engine`] when the database cannot be reached or runs without
    /// fsync.
    pub fn open(options: &PgOptions, key: KeySource) -> Result<PgStore, StoreError> {
        check_schema(&options.schema)?;
        let base = Config::from_str(&options.url).map_err(|e| {
            StoreError::InvalidRequest(format!(
                "the PostgreSQL connection string is not valid: {e}"
            ))
        })?;
        let tls = match &options.ca_file {
            Some(_)
                if base
                    .get_hosts()
                    .iter()
                    .any(|h| matches!(h, tokio_postgres::config::Host::Unix(_))) =>
            {
                return Err(StoreError::InvalidRequest(
                    "postgres_ca_file is set but the PostgreSQL host is a socket directory, \
                     where PostgreSQL offers no TLS: give the database's host name, or leave \
                     postgres_ca_file out for a database on this machine"
                        .into(),
                ))
            }
            Some(path) => Tls::Rustls(tls_connector(path)?),
            None => {
                check_local(&base)?;
                Tls::Plain
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("polyphony-pg")
            .enable_all()
            .build()?;
        let schema = options.schema.clone();
        let pool_size = options.pool_size.max(1);
        let opened = wait_on(&runtime, async move {
            let mut config = base.clone();
            if matches!(tls, Tls::Rustls(_)) {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
            }
            let durable_level = check_server(&config, &tls).await?;
            // Every store connection commits durably and looks in its schema first (see the
            // module documentation).
            let mut startup = config.get_options().unwrap_or_default().to_owned();
            startup.push_str(&format!(
                " -c synchronous_commit={durable_level} -c statement_timeout=0 -c lock_timeout=0 \
                 -c idle_in_transaction_session_timeout=60000 {KEEPALIVES} \
                 -c client_min_messages=warning -c search_path={schema}"
            ));
            config.options(startup.trim());
            config.connect_timeout(CONNECT_TIMEOUT);
            // This side notices a database host gone within about a minute too.
            config
                .keepalives(true)
                .keepalives_idle(Duration::from_secs(10))
                .keepalives_interval(Duration::from_secs(5))
                .keepalives_retries(3)
                .tcp_user_timeout(Duration::from_secs(30));
            let manager_config = ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            };
            let manager = match &tls {
                Tls::Plain => Manager::from_config(config.clone(), NoTls, manager_config),
                Tls::Rustls(connector) => {
                    Manager::from_config(config.clone(), connector.clone(), manager_config)
                }
            };
            let pool = Pool::builder(manager)
                .max_size(pool_size)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(POOL_WAIT))
                .create_timeout(Some(CONNECT_TIMEOUT))
                .build()
                .map_err(|e| StoreError::Engine(format!("cannot make the connection pool: {e}")))?;
            create_schema(&pool, &schema).await?;
            let keys = unlock_or_create(&pool, key).await?;
            Ok::<_, StoreError>((pool, keys, durable_level, config, tls))
        });
        let (pool, keys, durable_level, config, tls) = opened?;
        tracing::info!(schema = %options.schema, durable_level, "opened the PostgreSQL store");
        Ok(PgStore {
            runtime: Some(runtime),
            pool,
            shared: Arc::new(Shared {
                keys,
                epoch: AtomicI64::new(0),
                deposed: AtomicBool::new(false),
                retaking: AtomicBool::new(false),
            }),
            config,
            tls,
            schema: options.schema.clone(),
        })
    }

    /// The schema this store lives in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Make this store the one writer of its schema (a server node does, before it serves):
    /// wait while another live store is the writer (calling `waiting` once, then blocking: a
    /// standby node waits here until the active one dies), then take over, fencing out every
    /// write the former writer still has in flight. The lock is PostgreSQL's, held by a
    /// connection of its own, so it goes when this process dies or loses the database; the
    /// store takes it back when the database answers again, unless another node took it
    /// first (then [`Store::deposed`] is true and every write fails).
    pub fn become_writer(&self, waiting: impl FnOnce() + Send + 'static) -> Result<(), StoreError> {
        self.writer(true, waiting)
    }

    /// [`PgStore::become_writer`] without waiting: [`StoreError::Locked`] if another live store
    /// is the writer (an administrator's offline command on a node whose database another node
    /// serves from: the command belongs on that node).
    pub fn become_writer_now(&self) -> Result<(), StoreError> {
        self.writer(false, || {})
    }

    fn writer(
        &self,
        wait: bool,
        waiting: impl FnOnce() + Send + 'static,
    ) -> Result<(), StoreError> {
        let waiting: Box<dyn FnOnce() + Send> = Box::new(waiting);
        let runtime = self
            .runtime
            .as_ref()
            .expect("the runtime is only taken when the store is dropped");
        let (config, shared, tls) = (self.config.clone(), self.shared.clone(), self.tls.clone());
        let held = wait_on(runtime, async move {
            let mut waiting = Some(waiting);
            loop {
                let told = waiting
                    .take()
                    .unwrap_or_else(|| Box::new(|| {}) as Box<dyn FnOnce() + Send>);
                match take_writer_lock(&config, &tls, &shared, wait, None, told).await {
                    Ok(Writer::Taken(client, ended)) => {
                        tokio::spawn(keep_writer_lock(config, tls, shared, ended, client));
                        return Ok(true);
                    }
                    Ok(Writer::Busy | Writer::Deposed) => return Ok(false),
                    // A standby waits through a database restart (its wait's connection ends)
                    // instead of stopping.
                    Err(e @ StoreError::Engine(_)) if wait => {
                        tracing::warn!(error = %e, "the standby's wait for the writer lock was cut; waiting again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        })?;
        if !held {
            return Err(StoreError::Locked {
                path: format!(
                    "PostgreSQL schema {} (another server node serves from it)",
                    self.schema
                ),
            });
        }
        tracing::info!(schema = %self.schema, "this node is the writer of the PostgreSQL store");
        Ok(())
    }

    /// Run `work` with a pooled connection on the store's runtime and wait for its answer.
    fn run<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object, Arc<Shared>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send,
    {
        let pool = self.pool.clone();
        let keys = self.shared.clone();
        let runtime = self
            .runtime
            .as_ref()
            .expect("the runtime is only taken when the store is dropped");
        wait_on(runtime, async move {
            match pool.get().await {
                Ok(client) => work(client, keys).await,
                Err(e) => Err(StoreError::Engine(format!(
                    "cannot reach the PostgreSQL database: {}",
                    with_causes(&e)
                ))),
            }
        })
    }
}

/// How the store's connections are secured.
#[derive(Clone)]
enum Tls {
    /// No TLS: only to a database on this machine ([`check_local`]).
    Plain,
    /// TLS, the server's certificate checked against the configured authority.
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// A TLS connector that trusts only the authorities in the PEM file at `path`.
fn tls_connector(
    path: &std::path::Path,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let bad = |detail: String| {
        StoreError::InvalidRequest(format!(
            "the PostgreSQL CA file {}: {detail}",
            path.display()
        ))
    };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for block in pem::parse_many(&text).map_err(|e| bad(e.to_string()))? {
        if block.tag() == "CERTIFICATE" {
            roots
                .add(rustls_pki_types::CertificateDer::from(
                    block.contents().to_vec(),
                ))
                .map_err(|e| bad(e.to_string()))?;
        }
    }
    if roots.is_empty() {
        return Err(bad("it holds no certificate".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// An error with every cause under it ("error performing TLS handshake: invalid peer
/// certificate: UnknownIssuer"): the driver's own message stops at the first.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// One connection outside the pool, its connection task spawned; the receiver fires when the
/// connection ends.
async fn connect_one(
    config: &Config,
    tls: &Tls,
) -> Result<(tokio_postgres::Client, tokio::sync::oneshot::Receiver<()>), StoreError> {
    let unreachable = |e: tokio_postgres::Error| {
        StoreError::Engine(format!(
            "cannot reach the PostgreSQL database: {}",
            with_causes(&e)
        ))
    };
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    let watch = |connection: std::pin::Pin<
        Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send>,
    >| {
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "a connection to PostgreSQL ended");
            }
            let _ = ended_tx.send(());
        });
    };
    let client = match tls {
        Tls::Plain => {
            let (client, connection) = config.connect(NoTls).await.map_err(unreachable)?;
            watch(Box::pin(connection));
            client
        }
        Tls::Rustls(connector) => {
            let (client, connection) = config
                .connect(connector.clone())
                .await
                .map_err(unreachable)?;
            watch(Box::pin(connection));
            client
        }
    };
    Ok((client, ended))
}

/// Run `work` on the store's runtime and wait for its answer on a channel: never `block_on`,
/// which would refuse to run on a thread that is already driving another runtime's tasks.
fn wait_on<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(work.await);
    });
    rx.recv()
        .map_err(|_| StoreError::Engine("the PostgreSQL query ended without an answer".into()))?
}

/// Open a sealed value, naming what it was in the error (never its content).
fn unseal(
    keys: &Unlocked,
    tag: u8,
    key: &[u8],
    sealed: &[u8],
    what: impl FnOnce() -> String,
) -> Result<Vec<u8>, StoreError> {
    keys.data_key
        .open(&value_aad(&keys.store_id, tag, key), sealed)
        .map_err(|e| match e {
            StoreError::Corrupt { detail, .. } => {
                let what = what();
                tracing::error!(%what, %detail, "stored value failed its integrity check");
                StoreError::Corrupt { what, detail }
            }
            other => other,
        })
}

fn seal(keys: &Unlocked, tag: u8, key: &[u8], plaintext: &[u8]) -> Vec<u8> {
    keys.data_key
        .seal(&value_aad(&keys.store_id, tag, key), plaintext)
}

/// A database error in words a user can act on: a full disk is [`StoreError::Io`] (as on sled),
/// anything else [`StoreError::Engine`] with PostgreSQL's own message.
fn pg_error(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        // Class 53: insufficient resources (disk full, out of memory, too many connections).
        if db.code().code().starts_with("53") {
            return StoreError::Io(std::io::Error::other(format!(
                "PostgreSQL: {} ({})",
                db.message(),
                db.code().code()
            )));
        }
        return StoreError::Engine(format!(
            "PostgreSQL: {} ({})",
            db.message(),
            db.code().code()
        ));
    }
    StoreError::Engine(format!("PostgreSQL: {e}"))
}

fn check_schema(schema: &str) -> Result<(), StoreError> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = schema
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok || schema.len() > 63 || schema.starts_with("pg_") {
        return Err(StoreError::InvalidRequest(format!(
            "the PostgreSQL schema name {schema:?} must be lower-case letters, digits and _, \
             start with a letter or _, not start with pg_, and be at most 63 characters"
        )));
    }
    Ok(())
}

/// Refuse a database that is not on this machine: the driver has no TLS.
fn check_local(config: &Config) -> Result<(), StoreError> {
    let remote = |what: String| {
        StoreError::InvalidRequest(format!(
            "the PostgreSQL host {what} is not on this machine: connecting to it needs TLS \
             (set postgres_ca_file to the authority that signed its certificate)"
        ))
    };
    for host in config.get_hosts() {
        match host {
            tokio_postgres::config::Host::Unix(_) => {}
            tokio_postgres::config::Host::Tcp(name) => {
                let loopback =
                    name == "localhost" || IpAddr::from_str(name).is_ok_and(|ip| ip.is_loopback());
                if !loopback {
                    return Err(remote(name.clone()));
                }
            }
        }
    }
    for addr in config.get_hostaddrs() {
        if !addr.is_loopback() {
            return Err(remote(addr.to_string()));
        }
    }
    Ok(())
}

/// Connect once, outside the pool, to check the server: refuse `fsync = off`, and learn the
/// `synchronous_commit` level a flush should commit with.
async fn check_server(config: &Config, tls: &Tls) -> Result<&'static str, StoreError> {
    let mut config = config.clone();
    config.connect_timeout(CONNECT_TIMEOUT);
    let (client, ended) = connect_one(&config, tls).await?;
    let show = |name: &'static str| {
        let client = &client;
        async move {
            let row = client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .map_err(pg_error)?;
            Ok::<String, StoreError>(row.get(0))
        }
    };
    let fsync = show("fsync").await?;
    let level = show("synchronous_commit").await?;
    drop(client);
    let _ = ended.await;
    if fsync != "on" {
        return Err(StoreError::Engine(
            "the PostgreSQL server runs with fsync = off, so nothing it stores survives a power \
             cut: Polyphony refuses to store records there (set fsync = on)"
                .into(),
        ));
    }
    Ok(DURABLE_LEVELS
        .iter()
        .find(|l| **l == level)
        .copied()
        .unwrap_or("on"))
}

/// Create the schema and its tables if missing, under a lock so that nodes starting together do
/// not race. The lock's key is fixed, so two schemas being created at once also wait for each
/// other: rare, and harmless.
async fn create_schema(pool: &Pool, schema: &str) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(|e| {
        StoreError::Engine(format!(
            "cannot reach the PostgreSQL database: {}",
            with_causes(&e)
        ))
    })?;
    // Made already (every open after the first): nothing to create or alter, so a role that
    // owns the schema but may not create one in the database can open it.
    let made = client
        .query_opt(
            "SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'writer'",
            &[&schema],
        )
        .await
        .map_err(pg_error)?;
    if made.is_some() {
        return Ok(());
    }
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock(7243501981);
         CREATE SCHEMA IF NOT EXISTS {schema};
         SET LOCAL search_path = {schema};
         CREATE TABLE IF NOT EXISTS header (name bytea PRIMARY KEY, value bytea NOT NULL);
         CREATE SEQUENCE IF NOT EXISTS chunk_seq AS bigint START 1;
         CREATE TABLE IF NOT EXISTS cases (case_id bytea PRIMARY KEY);
         CREATE TABLE IF NOT EXISTS chunks (
             case_id bytea NOT NULL, seq bigint NOT NULL, data bytea NOT NULL,
             PRIMARY KEY (case_id, seq));
         CREATE TABLE IF NOT EXISTS meta (
             ns bytea NOT NULL, key bytea NOT NULL, value bytea NOT NULL,
             PRIMARY KEY (ns, key));
         CREATE TABLE IF NOT EXISTS logs (
             log bytea NOT NULL, idx bigint NOT NULL, data bytea NOT NULL,
             PRIMARY KEY (log, idx));
         CREATE TABLE IF NOT EXISTS log_heads (log bytea PRIMARY KEY, next_idx bigint NOT NULL);
         CREATE TABLE IF NOT EXISTS blobs (
             case_id bytea NOT NULL, hash bytea NOT NULL, data bytea NOT NULL,
             PRIMARY KEY (case_id, hash));
         -- The writer epoch: bumped by each store that becomes the writer; every write checks it.
         CREATE TABLE IF NOT EXISTS writer (
             one boolean PRIMARY KEY DEFAULT true CHECK (one), epoch bigint NOT NULL);
         INSERT INTO writer (one, epoch) VALUES (true, 0) ON CONFLICT DO NOTHING;
         -- Sealed bytes do not compress: store them out of line without trying.
         ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL;
         ALTER TABLE chunks ALTER COLUMN data SET STORAGE EXTERNAL;"
    ))
    .await
    .map_err(pg_error)?;
    // The schema and tables must outlive any crash that follows: commit durably.
    tx.batch_execute("SET LOCAL synchronous_commit = on")
        .await
        .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)
}

/// Check `source` against the header, or write a new header (format 2) if there is none.
async fn unlock_or_create(pool: &Pool, source: KeySource) -> Result<Unlocked, StoreError> {
    let mut client = pool.get().await.map_err(|e| {
        StoreError::Engine(format!(
            "cannot reach the PostgreSQL database: {}",
            with_causes(&e)
        ))
    })?;
    let tx = client.transaction().await.map_err(pg_error)?;
    // One node writes the header; another opening at the same moment waits, then reads it.
    tx.execute("LOCK TABLE header IN EXCLUSIVE MODE", &[])
        .await
        .map_err(pg_error)?;
    let rows = tx
        .query("SELECT name, value FROM header", &[])
        .await
        .map_err(pg_error)?;
    let fields: Vec<(Vec<u8>, Vec<u8>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let present = fields.iter().any(|(name, _)| name == HEADER_VERIFIER);
    let unlocked = if present {
        let get = |name: &[u8]| {
            Ok(fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone()))
        };
        // Argon2id (for a passphrase) is slow: never on the runtime's threads.
        let unlocked = tokio::task::block_in_place(|| header::unlock_fields(get, &source))?;
        tx.rollback().await.map_err(pg_error)?;
        return Ok(unlocked);
    } else {
        let new =
            tokio::task::block_in_place(|| NewHeader::new(&source, KdfParams::RECOMMENDED, 0))?;
        let (unlocked, fields) = new.into_fields();
        for (name, value) in fields {
            tx.execute(
                "INSERT INTO header (name, value) VALUES ($1, $2)",
                &[&name, &value],
            )
            .await
            .map_err(pg_error)?;
        }
        unlocked
    };
    tx.batch_execute("SET LOCAL synchronous_commit = on")
        .await
        .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)?;
    tracing::info!("created a new PostgreSQL store");
    Ok(unlocked)
}

/// The refusal of a write by a store that is no longer the writer.
fn fenced() -> StoreError {
    StoreError::Engine(
        "another server node is writing to this database now, so this node has stopped writing: \
         restart it (it waits as the standby until the database is free)"
            .into(),
    )
}

/// Check, inside a write's transaction, that this store is still the writer: the row lock it
/// takes (`FOR SHARE`) makes a new writer's epoch bump wait for this transaction, and this
/// transaction fail once the bump is in. A store that never became the writer is not fenced.
async fn fence(tx: &deadpool_postgres::Transaction<'_>, shared: &Shared) -> Result<(), StoreError> {
    if shared.deposed.load(Ordering::SeqCst) {
        return Err(fenced());
    }
    let epoch = shared.epoch.load(Ordering::SeqCst);
    if epoch == 0 {
        return Ok(());
    }
    let row = one(tx, "SELECT epoch FROM writer FOR SHARE", &[]).await?;
    let now: i64 = row.get(0);
    if now == epoch {
        return Ok(());
    }
    // Another store bumped the epoch: this one is deposed (unless it is taking its own lock
    // back, and the bump was its own).
    if !shared.retaking.load(Ordering::SeqCst) && shared.epoch.load(Ordering::SeqCst) == epoch {
        depose(shared);
    }
    Err(fenced())
}

/// The advisory lock that makes one store the writer of its schema.
const WRITER_LOCK: &str = "SELECT hashtextextended(current_schema() || ':polyphony-writer', 0)";

/// What trying for the writer lock came to.
enum Writer {
    /// This store holds the lock (on this connection, until the receiver fires) and the epoch.
    Taken(tokio_postgres::Client, tokio::sync::oneshot::Receiver<()>),
    /// Another live session holds the lock (only when not waiting for it).
    Busy,
    /// Taking the lock back, the epoch was no longer this store's: another store was the writer
    /// meanwhile, and this one's memory of the cases is out of date.
    Deposed,
}

/// Take the writer lock on a connection of its own (waiting, after calling `waiting`, while
/// another store holds it, unless `wait` is false), then bump the writer epoch: unconditionally
/// when becoming the writer, only if it is still `retaking`'s when taking it back.
async fn take_writer_lock(
    config: &Config,
    tls: &Tls,
    shared: &Shared,
    wait: bool,
    retaking: Option<i64>,
    waiting: impl FnOnce(),
) -> Result<Writer, StoreError> {
    let (mut client, ended) = connect_one(config, tls).await?;
    // The lock lives as long as this session: no timeout of the role's or the database's may
    // end it (or cut the standby's wait short), and keepalives let PostgreSQL notice a node
    // whose machine is gone within about a minute instead of the system's two hours.
    client
        .batch_execute("SET idle_in_transaction_session_timeout = 0")
        .await
        .map_err(pg_error)?;
    // PostgreSQL 14 and 17 and later only.
    let _ = client.batch_execute("SET idle_session_timeout = 0").await;
    let _ = client.batch_execute("SET transaction_timeout = 0").await;
    let key: i64 = client
        .query_one(WRITER_LOCK, &[])
        .await
        .map_err(pg_error)?
        .get(0);
    let got: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await
        .map_err(pg_error)?
        .get(0);
    if !got {
        if !wait {
            return Ok(Writer::Busy);
        }
        waiting();
        client
            .query_one("SELECT pg_advisory_lock($1)", &[&key])
            .await
            .map_err(pg_error)?;
    }
    let tx = client.transaction().await.map_err(pg_error)?;
    // Waits for every write of a former writer still in flight, and fails them from then on.
    let bumped = match retaking {
        None => tx
            .query_opt("UPDATE writer SET epoch = epoch + 1 RETURNING epoch", &[])
            .await
            .map_err(pg_error)?,
        Some(mine) => tx
            .query_opt(
                "UPDATE writer SET epoch = epoch + 1 WHERE epoch = $1 RETURNING epoch",
                &[&mine],
            )
            .await
            .map_err(pg_error)?,
    };
    let Some(row) = bumped else {
        return Ok(Writer::Deposed);
    };
    let epoch: i64 = row.get(0);
    tx.commit().await.map_err(pg_error)?;
    shared.epoch.store(epoch, Ordering::SeqCst);
    Ok(Writer::Taken(client, ended))
}

/// Hold the writer lock: when its connection ends (the database restarted, the network
/// dropped), take it back as soon as the database answers, if the epoch is still this store's.
/// If another store became the writer meanwhile (even one that has stopped since), this one is
/// deposed: every write it tries fails, and its node stops.
async fn keep_writer_lock(
    config: Config,
    tls: Tls,
    shared: Arc<Shared>,
    mut ended: tokio::sync::oneshot::Receiver<()>,
    client: tokio_postgres::Client,
) {
    // The session that holds the lock: kept open for as long as the lock is.
    let mut _holding = client;
    loop {
        let _ = (&mut ended).await;
        tracing::warn!("lost the PostgreSQL writer lock; taking it back");
        let mine = shared.epoch.load(Ordering::SeqCst);
        shared.retaking.store(true, Ordering::SeqCst);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            match take_writer_lock(&config, &tls, &shared, false, Some(mine), || {}).await {
                Ok(Writer::Taken(client, again)) => {
                    tracing::info!("holds the PostgreSQL writer lock again");
                    _holding = client;
                    ended = again;
                    break;
                }
                // This store's own old session may not have ended yet: try again, unless the
                // epoch moved on.
                Ok(Writer::Busy) => {
                    if epoch_now(&config, &tls).await.is_some_and(|e| e != mine) {
                        return depose(&shared);
                    }
                }
                Ok(Writer::Deposed) => return depose(&shared),
                Err(e) => tracing::debug!(error = %e, "the database is not back yet"),
            }
        }
        shared.retaking.store(false, Ordering::SeqCst);
    }
}

/// The writer epoch in the database now, if it can be read.
async fn epoch_now(config: &Config, tls: &Tls) -> Option<i64> {
    let (client, _ended) = connect_one(config, tls).await.ok()?;
    let row = client
        .query_one("SELECT epoch FROM writer", &[])
        .await
        .ok()?;
    Some(row.get(0))
}

fn depose(shared: &Shared) {
    tracing::error!(
        "another server node became the PostgreSQL writer while this one had lost its lock: this node writes nothing more"
    );
    shared.deposed.store(true, Ordering::SeqCst);
}

/// A statement prepared once per connection, run with `params`: the rows it affected.
async fn exec(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let statement = c.prepare_cached(sql).await.map_err(pg_error)?;
    c.execute(&statement, params).await.map_err(pg_error)
}

/// [`exec`] for a query that returns exactly one row.
async fn one(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, StoreError> {
    let statement = c.prepare_cached(sql).await.map_err(pg_error)?;
    c.query_one(&statement, params).await.map_err(pg_error)
}

/// [`exec`] for a query that returns at most one row.
async fn opt(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await.map_err(pg_error)?;
    c.query_opt(&statement, params).await.map_err(pg_error)
}

/// [`exec`] for a query's rows.
async fn rows(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await.map_err(pg_error)?;
    c.query(&statement, params).await.map_err(pg_error)
}

/// A sequence number or index as PostgreSQL's `bigint`: beyond `i64::MAX` means "everything".
fn to_pg(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn from_pg(n: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt {
        what: what.into(),
        detail: format!("negative number {n}"),
    })
}

/// Take a case's lock row for the rest of the transaction (creating it for a new case).
async fn lock_case(tx: &deadpool_postgres::Transaction<'_>, case: &[u8]) -> Result<(), StoreError> {
    exec(
        tx,
        "INSERT INTO cases (case_id) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&case],
    )
    .await?;
    one(
        tx,
        "SELECT 1 FROM cases WHERE case_id = $1 FOR UPDATE",
        &[&case],
    )
    .await?;
    Ok(())
}

async fn last_seq(
    tx: &deadpool_postgres::Transaction<'_>,
    case: &[u8],
) -> Result<Option<u64>, StoreError> {
    let row = one(
        tx,
        "SELECT max(seq) FROM chunks WHERE case_id = $1",
        &[&case],
    )
    .await?;
    row.get::<_, Option<i64>>(0)
        .map(|n| from_pg(n, "a chunk's sequence number"))
        .transpose()
}

fn utf8_key(bytes: Vec<u8>, ns: &str) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|_| StoreError::Corrupt {
        what: format!("a meta key in namespace {ns}"),
        detail: "not valid UTF-8".into(),
    })
}

impl Store for PgStore {
    fn append_chunk(&self, case: &CaseId, chunk: &[u8]) -> Result<ChunkSeq, StoreError> {
        let case = *case;
        let chunk = chunk.to_vec();
        self.run(move |mut client, keys| async move {
            let id = case.0.as_bytes().to_vec();
            let tx = client.transaction().await.map_err(pg_error)?;
            fence(&tx, &keys).await?;
            lock_case(&tx, &id).await?;
            // Drawn under the case's lock and committed with it: a case's chunks commit in
            // sequence order, on every connection and node.
            let seq: i64 = one(&tx, "SELECT nextval('chunk_seq')", &[]).await?
                .get(0);
            let seq = from_pg(seq, "the chunk sequence")?;
            if let Some(last) = last_seq(&tx, &id).await? {
                if seq <= last {
                    return Err(StoreError::Engine(format!(
                        "the sequence counter went backwards ({seq} after {last}); the store may be damaged"
                    )));
                }
            }
            let key = chunk_key(&case, seq);
            let sealed = seal(&keys.keys, TAG_CHUNK, &key, &chunk);
            exec(&tx, "INSERT INTO chunks (case_id, seq, data) VALUES ($1, $2, $3)", &[&id, &to_pg(seq), &sealed]).await?;
            tx.commit().await.map_err(pg_error)?;
            Ok(seq)
        })
    }

    fn load_chunks(&self, case: &CaseId) -> Result<Option<ChunkLog>, StoreError> {
        let case = *case;
        self.run(move |client, keys| async move {
            let rows = rows(
                &client,
                "SELECT seq, data FROM chunks WHERE case_id = $1 ORDER BY seq",
                &[&case.0.as_bytes().as_slice()],
            )
            .await?;
            let mut chunks = Vec::with_capacity(rows.len());
            for row in rows {
                let seq = from_pg(row.get(0), "a chunk's sequence number")?;
                let sealed: &[u8] = row.get(1);
                let chunk = unseal(
                    &keys.keys,
                    TAG_CHUNK,
                    &chunk_key(&case, seq),
                    sealed,
                    || format!("chunk {seq} of case {case}"),
                )?;
                chunks.push((seq, chunk));
            }
            Ok((!chunks.is_empty()).then_some(chunks))
        })
    }

    fn compact_case(
        &self,
        case: &CaseId,
        snapshot: &[u8],
        through: ChunkSeq,
    ) -> Result<(), StoreError> {
        let case = *case;
        let snapshot = snapshot.to_vec();
        self.run(move |mut client, keys| async move {
            let id = case.0.as_bytes().to_vec();
            let tx = client.transaction().await.map_err(pg_error)?;
            fence(&tx, &keys).await?;
            lock_case(&tx, &id).await?;
            let Some(last) = last_seq(&tx, &id).await? else {
                return Err(StoreError::InvalidRequest(format!(
                    "cannot compact case {case}: the store holds no chunks for it"
                )));
            };
            let at = through.min(last);
            exec(
                &tx,
                "DELETE FROM chunks WHERE case_id = $1 AND seq <= $2",
                &[&id, &to_pg(through)],
            )
            .await?;
            let key = chunk_key(&case, at);
            let sealed = seal(&keys.keys, TAG_CHUNK, &key, &snapshot);
            exec(
                &tx,
                "INSERT INTO chunks (case_id, seq, data) VALUES ($1, $2, $3)",
                &[&id, &to_pg(at), &sealed],
            )
            .await?;
            tx.commit().await.map_err(pg_error)?;
            tracing::debug!(%case, through, "compacted case");
            Ok(())
        })
    }

    fn remove_case(&self, case: &CaseId) -> Result<(), StoreError> {
        let case = *case;
        self.run(move |mut client, keys| async move {
            let id = case.0.as_bytes().to_vec();
            let tx = client.transaction().await.map_err(pg_error)?;
            fence(&tx, &keys).await?;
            lock_case(&tx, &id).await?;
            exec(&tx, "DELETE FROM blobs WHERE case_id = $1", &[&id]).await?;
            exec(&tx, "DELETE FROM chunks WHERE case_id = $1", &[&id]).await?;
            tx.commit().await.map_err(pg_error)?;
            tracing::info!(%case, "removed the local copy of a case");
            Ok(())
        })
    }

    fn list_cases(&self) -> Result<Vec<CaseId>, StoreError> {
        self.run(move |client, _| async move {
            let rows = rows(
                &client,
                "SELECT c.case_id FROM cases c
                     WHERE EXISTS (SELECT 1 FROM chunks k WHERE k.case_id = c.case_id)
                     ORDER BY c.case_id",
                &[],
            )
            .await?;
            rows.iter()
                .map(|row| {
                    let id: &[u8] = row.get(0);
                    uuid::Uuid::from_slice(id)
                        .map(CaseId)
                        .map_err(|_| StoreError::Corrupt {
                            what: "a case id".into(),
                            detail: format!("{} bytes instead of 16", id.len()),
                        })
                })
                .collect()
        })
    }

    fn get_meta(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_name("namespace", ns)?;
        let (ns, key) = (ns.to_owned(), key.to_owned());
        self.run(move |client, keys| async move {
            let row = opt(
                &client,
                "SELECT value FROM meta WHERE ns = $1 AND key = $2",
                &[&ns.as_bytes(), &key.as_bytes()],
            )
            .await?;
            match row {
                None => Ok(None),
                Some(row) => unseal(
                    &keys.keys,
                    TAG_META,
                    &meta_key(&ns, &key),
                    row.get(0),
                    || format!("meta value {ns}/{key}"),
                )
                .map(Some),
            }
        })
    }

    fn put_meta(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        check_name("namespace", ns)?;
        let sealed = seal(&self.shared.keys, TAG_META, &meta_key(ns, key), value);
        let (ns, key) = (ns.to_owned(), key.to_owned());
        self.run(move |mut client, keys| async move {
            let tx = client.transaction().await.map_err(pg_error)?;
            fence(&tx, &keys).await?;
            exec(
                &tx,
                "INSERT INTO meta (ns, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (ns, key) DO UPDATE SET value = EXCLUDED.value",
                &[&ns.as_bytes(), &key.as_bytes(), &sealed],
            )
            .await?;
            tx.commit().await.map_err(pg_error)
        })
    }

    fn delete_meta(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        check_name("namespace", ns)?;
        let (ns, key) = (ns.to_owned(), key.to_owned());
        self.run(move |mut client, keys| async move {
            let tx = client.transaction().await.map_err(pg_error)?;
            fence(&tx, &keys).await?;
            exec(
                &tx,
                "DELETE FROM meta WHERE ns = $1 AND key = $2",
                &[&ns.as_bytes(), &key.as_bytes()],
            )
            .await?;
            tx.commit().await.map_err(pg_error)
        })
    }

    fn scan_meta(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        check_name("namespace", ns)?;
        let ns = ns.to_owned();
        self.run(move |client, keys| async move {
            let rows = rows(
                &client,
                "SELECT key, value FROM meta WHERE ns = $1 ORDER BY key",
                &[&ns.as_bytes()],
            )
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let key = utf8_key(row.get(0), &ns)?;
                let value = unseal(
                    &keys.keys,
                    TAG_META,
                    &meta_key(&ns, &key),
                    row.get(1),
                    || format!("meta value {ns}/{key}"),
                )?;
                out.push((key, value));
            }
            Ok(out)
        })
    }

    fn append_log(&self, log: &str, entry: &[u8]) -> Result<u64, StoreError> {
        check_name("log", log)?;
        let log = log.to_owned();
        let entry = entry.to_vec();
        self.run(move |mut client, keys| async move {
            let tx = client.transaction().await.map_err(pg_error)?;
            fence(&tx, &keys).await?;
            // The head row is locked by its update until commit: concurrent appends to one log
            // take distinct indices, and an index is never handed out twice, even after a trim.
            let next: i64 = one(
                &tx,
                "INSERT INTO log_heads (log, next_idx) VALUES ($1, 1)
                     ON CONFLICT (log) DO UPDATE SET next_idx = log_heads.next_idx + 1
                     RETURNING next_idx",
                &[&log.as_bytes()],
            )
            .await?
            .get(0);
            let index = from_pg(next - 1, &format!("the head of log {log}"))?;
            let key = log_key(&log, index);
            let sealed = seal(&keys.keys, TAG_LOG, &key, &entry);
            // A head behind its entries would overwrite history: the primary key refuses it.
            tx.execute(
                &tx.prepare_cached("INSERT INTO logs (log, idx, data) VALUES ($1, $2, $3)")
                    .await
                    .map_err(pg_error)?,
                &[&log.as_bytes(), &to_pg(index), &sealed],
            )
            .await
            .map_err(|e| match e.code() {
                Some(code) if *code == SqlState::UNIQUE_VIOLATION => StoreError::Corrupt {
                    what: format!("the head of log {log}"),
                    detail: format!("entry {index} already exists"),
                },
                _ => pg_error(e),
            })?;
            tx.commit().await.map_err(pg_error)?;
            Ok(index)
        })
    }

    fn read_log(&self, log: &str, from: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        check_name("log", log)?;
        let log = log.to_owned();
        self.run(move |client, keys| async move {
            let rows = rows(
                &client,
                "SELECT idx, data FROM logs WHERE log = $1 AND idx >= $2 ORDER BY idx",
                &[&log.as_bytes(), &to_pg(from)],
            )
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let index = from_pg(row.get(0), "a log index")?;
                let entry = unseal(
                    &keys.keys,
                    TAG_LOG,
                    &log_key(&log, index),
                    row.get(1),
                    || format!("entry {index} of log {log}"),
                )?;
                out.push((index, entry));
            }
            Ok(out)
        })
    }

    fn trim_log(&self, log: &str, through: u64) -> Result<(), StoreError> {
        check_name("log", log)?;
        let log = log.to_owned();
        self.run(move |mut client, keys| async move {
            let tx = client.transaction().await.map_err(pg_error)?;
            fence(&tx, &keys).await?;
            exec(
                &tx,
                "DELETE FROM logs WHERE log = $1 AND idx <= $2",
                &[&log.as_bytes(), &to_pg(through)],
            )
            .await?;
            tx.commit().await.map_err(pg_error)
        })
    }

    fn put_blob(&self, case: &CaseId, hash: &BlobHash, content: &[u8]) -> Result<(), StoreError> {
        let key = blob_key(case, hash);
        if self.has_blob(case, hash)? {
            return Ok(());
        }
        let sealed = seal(&self.shared.keys, TAG_BLOB, &key, content);
        let (case, hash) = (*case, hash.0);
        self.run(move |mut client, keys| async move {
            let tx = client.transaction().await.map_err(pg_error)?;
            fence(&tx, &keys).await?;
            exec(
                &tx,
                "INSERT INTO blobs (case_id, hash, data) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&case.0.as_bytes().as_slice(), &hash.as_slice(), &sealed],
            )
            .await?;
            tx.commit().await.map_err(pg_error)
        })
    }

    fn get_blob(&self, case: &CaseId, hash: &BlobHash) -> Result<Option<Vec<u8>>, StoreError> {
        let (case, hash) = (*case, *hash);
        self.run(move |client, keys| async move {
            let row = opt(
                &client,
                "SELECT data FROM blobs WHERE case_id = $1 AND hash = $2",
                &[&case.0.as_bytes().as_slice(), &hash.0.as_slice()],
            )
            .await?;
            match row {
                None => Ok(None),
                Some(row) => unseal(
                    &keys.keys,
                    TAG_BLOB,
                    &blob_key(&case, &hash),
                    row.get(0),
                    || format!("attachment {hash} of case {case}"),
                )
                .map(Some),
            }
        })
    }

    fn has_blob(&self, case: &CaseId, hash: &BlobHash) -> Result<bool, StoreError> {
        let (case, hash) = (*case, hash.0);
        self.run(move |client, _| async move {
            let row = opt(
                &client,
                "SELECT 1 FROM blobs WHERE case_id = $1 AND hash = $2",
                &[&case.0.as_bytes().as_slice(), &hash.as_slice()],
            )
            .await?;
            Ok(row.is_some())
        })
    }

    /// Whether another node became the writer while this store had lost its lock (see
    /// [`PgStore::become_writer`]): nothing more can be written through it.
    fn deposed(&self) -> bool {
        self.shared.deposed.load(Ordering::SeqCst)
    }

    /// Nothing to do: every write committed durably before it returned.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Throw-away schemas for tests, in the cluster `scripts/pg-cluster.sh` starts (its connection
/// string in `POLYPHONY_TEST_PG`). Public for the server's and end-to-end tests; not for use
/// outside tests.
#[doc(hidden)]
pub mod testing {
    use super::{PgOptions, PgStore};
    use crate::store::{KeySource, SealKey};

    /// The test cluster's connection string. Panics when it is not set: the PostgreSQL tests are
    /// part of the suite, never skipped (`scripts/test` starts the cluster).
    pub fn url() -> String {
        std::env::var("POLYPHONY_TEST_PG").unwrap_or_else(|_| {
            panic!(
                "POLYPHONY_TEST_PG is not set: run the tests with scripts/test, or start a cluster \
                 with `eval \"$(scripts/pg-cluster.sh start)\"` first"
            )
        })
    }

    /// A schema of its own for one test, dropped (with everything in it) when this is dropped.
    #[derive(Debug)]
    pub struct TestSchema {
        /// The options that reach the schema.
        pub options: PgOptions,
    }

    impl TestSchema {
        /// A new, empty schema name in the test cluster.
        pub fn new() -> TestSchema {
            let mut options = PgOptions::new(url());
            options.schema = format!("t_{}", uuid::Uuid::new_v4().simple());
            options.pool_size = 4;
            TestSchema { options }
        }
    }

    impl Default for TestSchema {
        fn default() -> Self {
            TestSchema::new()
        }
    }

    impl Drop for TestSchema {
        fn drop(&mut self) {
            let url = self.options.url.clone();
            let schema = self.options.schema.clone();
            // On a thread of its own: the guard may be dropped on a runtime thread.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                runtime.block_on(async move {
                    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .ok()?;
                    tokio::spawn(connection);
                    client
                        .batch_execute(&format!(
                            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {schema} CASCADE"
                        ))
                        .await
                        .ok()
                })
            })
            .join();
        }
    }

    /// A fresh store in a fresh schema, opened with a random raw key.
    pub fn fresh_store() -> (TestSchema, PgStore) {
        let schema = TestSchema::new();
        let store = PgStore::open(&schema.options, KeySource::Raw(SealKey::generate()))
            .expect("open a PostgreSQL store in the test cluster");
        (schema, store)
    }
}

#[cfg(test)]
mod tests;
