//! The server's data directory: created on first run with its key file (owner-only), the
//! encrypted store in it, and what lives in the store beside the cases (the borough CA, the
//! registry, the audit log, the secret behind QUIC stateless resets).

use std::path::Path;
use std::sync::Arc;

use polyphony_core::identity::{BoroughCa, IdentityError};
use polyphony_core::store::{KeySource, PgStore, SledStore, Store, StoreError};

use crate::audit::{AuditError, AuditLog};
use crate::config::{ServerConfig, StoreEngine, POSTGRES_URL_ENV};
use crate::registry::Registry;
use crate::reopen::ReopenableStore;

/// Everything the server keeps on disk, opened.
pub struct Opened {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The same store, as the handle that reopens it after a disk error.
    pub engine: Arc<ReopenableStore>,
    /// The registry.
    pub registry: Arc<Registry>,
    /// The audit log.
    pub audit: Arc<AuditLog>,
    /// The borough CA.
    pub ca: BoroughCa,
}

const NS_SERVER: &str = "server";

/// The mark (in the server's namespace) of a restore from the trust hub not finished: the
/// server does not start on such a directory, and `hub restore` goes on from it.
pub const RESTORING: &str = "restore-in-progress";

/// Why the server could not open its data or start serving, in words for whoever runs it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The encrypted store (or its key file) could not be opened or written.
    #[error("the store: {0}")]
    Store(#[from] StoreError),
    /// The borough CA or the server's certificate could not be made or read.
    #[error("the borough certificates: {0}")]
    Identity(#[from] IdentityError),
    /// The audit log could not be opened.
    #[error("the audit log: {0}")]
    Audit(#[from] AuditError),
    /// A restore from the trust hub stopped part-way in this data directory.
    #[error("a restore from the trust hub did not finish in this data directory: run `polyphony-server hub restore` again (with a new code from the hub) before starting the server")]
    Unfinished,
    /// `store = "postgres"` without a connection string.
    #[error("store = \"postgres\" needs a connection string: set postgres_url in the configuration file, or the environment variable {POSTGRES_URL_ENV}")]
    NoPostgresUrl,
    /// A socket (the QUIC port, the admin socket) could not be opened.
    #[error("{what}: {source}")]
    Socket {
        /// Which, and where.
        what: String,
        /// What the system said.
        source: std::io::Error,
    },
}

/// Open (creating on first run) the server's data directory: key file, encrypted store, CA. The
/// store can be reopened after a disk error (sled's sticky error; see [`crate::reopen`]).
pub fn open(config: &ServerConfig) -> Result<Opened, StartError> {
    open_with_engine(config, Arc::new(open_reopenable(config)?))
}

/// Open (creating on first run) the data directory's key file and encrypted store: sled in the
/// data directory, or the PostgreSQL schema the configuration names.
/// On PostgreSQL it does not wait for a node serving from the same database
/// ([`StoreError::Locked`]): what opens it here is an offline command, not a standby.
pub fn open_store(config: &ServerConfig) -> Result<Arc<dyn Store>, StartError> {
    let key = prepare_data_dir(config)?;
    engine_opener(config, key, Waiting::No)?()
}

/// The encrypted store as [`open_store`] opens it, behind a handle that opens it the same way
/// again after a disk error (sled's files are checked for free space first; PostgreSQL keeps its
/// own disk, so a reopen there only makes a new connection pool).
pub fn open_reopenable(config: &ServerConfig) -> Result<ReopenableStore, StartError> {
    reopenable(config, Waiting::AsStandby)
}

/// Whether opening a PostgreSQL store waits while another node serves from it.
#[derive(Clone, Copy)]
enum Waiting {
    /// A node starting to serve: it is the standby until that node stops.
    AsStandby,
    /// An offline command: refused at once ([`StoreError::Locked`]).
    No,
}

fn reopenable(config: &ServerConfig, waiting: Waiting) -> Result<ReopenableStore, StartError> {
    let key = prepare_data_dir(config)?;
    let open = engine_opener(config, key, waiting)?;
    let dir = match config.store {
        StoreEngine::Sled => Some(config.db_dir()),
        StoreEngine::Postgres => None,
    };
    Ok(ReopenableStore::open_in(dir, move || {
        open().map_err(|e| match e {
            StartError::Store(e) => e,
            other => StoreError::Engine(other.to_string()),
        })
    })?)
}

type EngineOpener = Box<dyn Fn() -> Result<Arc<dyn Store>, StartError> + Send + Sync>;

/// How to open the configured engine (again), with the key file at `key`.
fn engine_opener(
    config: &ServerConfig,
    key: std::path::PathBuf,
    waiting: Waiting,
) -> Result<EngineOpener, StartError> {
    match config.store {
        StoreEngine::Sled => {
            let dir = config.db_dir();
            Ok(Box::new(move || {
                Ok(
                    Arc::new(SledStore::open(&dir, KeySource::KeyFile(key.clone()))?)
                        as Arc<dyn Store>,
                )
            }))
        }
        StoreEngine::Postgres => {
            let options = config.postgres_options().ok_or(StartError::NoPostgresUrl)?;
            // A reopen (after an error the store reported as the disk's) keeps the store it
            // opened first: the layers above still drop what they built on it (group-commit
            // tickets, open cases), but the node keeps its writer lock, which closing the store
            // would hand to a standby, and does not wait for it again.
            let opened: Arc<std::sync::OnceLock<Arc<dyn Store>>> = Arc::default();
            Ok(Box::new(move || {
                if let Some(store) = opened.get() {
                    return Ok(store.clone());
                }
                let store = PgStore::open(&options, KeySource::KeyFile(key.clone()))?;
                // One node writes at a time; another started on the same database is the
                // standby, and waits here until the active node dies or stops.
                let schema = options.schema.clone();
                match waiting {
                    Waiting::AsStandby => store.become_writer(move || {
                        tracing::warn!(
                            %schema,
                            "another server node is serving from this PostgreSQL database: this node waits as the standby and serves once that node stops"
                        );
                    })?,
                    Waiting::No => store.become_writer_now()?,
                }
                let store: Arc<dyn Store> = Arc::new(store);
                Ok(opened.get_or_init(|| store).clone())
            }))
        }
    }
}

/// [`open`] for an administrator's offline command (no server running on this data directory):
/// on PostgreSQL, refused at once ([`StoreError::Locked`]) if another node serves from the same
/// database, instead of waiting as its standby.
pub fn open_offline(config: &ServerConfig) -> Result<Opened, StartError> {
    open_with_engine(config, Arc::new(reopenable(config, Waiting::No)?))
}

/// Create the data directory and its key file if missing; returns the key file's path.
fn prepare_data_dir(config: &ServerConfig) -> Result<std::path::PathBuf, StartError> {
    create_dir(&config.data_dir)?;
    restrict(&config.data_dir);
    let key = config.key_file();
    KeySource::create_key_file(&key)?;
    Ok(key)
}

/// Everything else the server keeps (CA, registry, audit log) over an already-open store. The
/// fault tests pass a store that fails on demand, to see the server refuse writes when the disk is
/// full; a reopen keeps that store as it is ([`ReopenableStore::keeping`]). The server itself
/// always goes through [`open`].
pub fn open_with_store(config: &ServerConfig, store: Arc<dyn Store>) -> Result<Opened, StartError> {
    open_with_engine(config, Arc::new(ReopenableStore::keeping(store)))
}

fn open_with_engine(
    config: &ServerConfig,
    engine: Arc<ReopenableStore>,
) -> Result<Opened, StartError> {
    let store: Arc<dyn Store> = engine.clone();
    create_dir(&config.data_dir)?;
    if store.get_meta(NS_SERVER, RESTORING)?.is_some() {
        return Err(StartError::Unfinished);
    }
    let ca = match (
        store.get_meta(NS_SERVER, "ca_cert")?,
        store.get_meta(NS_SERVER, "ca_key")?,
    ) {
        (Some(cert), Some(key)) => BoroughCa::from_pem(
            &String::from_utf8_lossy(&cert),
            &String::from_utf8_lossy(&key),
        )?,
        _ => {
            let ca = BoroughCa::generate("Polyphony borough")?;
            let (cert, key) = ca.to_pem();
            store.put_meta(NS_SERVER, "ca_cert", cert.as_bytes())?;
            store.put_meta(NS_SERVER, "ca_key", key.as_bytes())?;
            store.flush()?;
            tracing::info!("created a new borough certificate authority");
            ca
        }
    };
    let registry = Arc::new(Registry::new(store.clone()));
    let audit = Arc::new(AuditLog::open(store.clone())?);
    Ok(Opened {
        store,
        engine,
        registry,
        audit,
        ca,
    })
}

/// The secret behind the server's QUIC stateless-reset tokens, created on first run. Kept stable
/// across restarts so that after a crash the restarted server can tell devices at once that their
/// old connection is gone, instead of leaving them to wait for an idle timeout.
pub fn reset_secret(store: &dyn Store) -> Result<Vec<u8>, StartError> {
    if let Some(s) = store.get_meta(NS_SERVER, "reset_secret")? {
        return Ok(s);
    }
    let mut secret = vec![0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
    store.put_meta(NS_SERVER, "reset_secret", &secret)?;
    store.flush()?;
    Ok(secret)
}

fn create_dir(path: &Path) -> Result<(), StartError> {
    std::fs::create_dir_all(path).map_err(|source| StartError::DataDir {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(unix)]
fn restrict(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

#[cfg(not(unix))]
fn restrict(_: &Path) {}
