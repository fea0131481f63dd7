//! The server's settings, and where it keeps its files.
//!
//! A fresh machine must be able to run `polyphony-server serve` with no configuration at all, so every
//! setting has a default that works there. An operator who needs something else writes an optional
//! TOML file (`polyphony-server.toml` in the data directory, or any file named with `--config`); flags
//! given to the binary override both. Unknown keys in the file are refused, so a misspelt setting is
//! reported instead of silently ignored.
//!
//! Every path the server uses is derived from [`ServerConfig::data_dir`] here, in one place, so the
//! server and the administration commands can never disagree about where the socket or the store is.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The name of the optional configuration file looked for in the data directory.
pub const CONFIG_FILE_NAME: &str = "polyphony-server.toml";

/// What can go wrong while reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A configuration file named on the command line does not exist or cannot be read.
    #[error(
        "cannot read the configuration file {path}: {source}; check the path given with --config"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or holds a setting the server does not know.
    #[error("the configuration file {path} is not valid: {detail}; fix the line it names (or delete the file to use the defaults)")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said, with the line.
        detail: String,
    },
}

/// Everything the borough server needs to know to run. See the module docs for where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// What this server is: a borough server (its devices sync with it; the default) or the
    /// trust hub (borough servers sync their teams' cases with it; no device connects to it).
    /// `role = "hub"` in the file.
    pub role: ServerRole,
    /// Where the server keeps its store, its key and its admin socket.
    pub data_dir: PathBuf,
    /// The UDP address the QUIC endpoint listens on.
    pub listen: SocketAddr,
    /// How many devices may be connected at once; more are refused with "busy" and retry later.
    pub max_connections: usize,
    /// The largest sync frame accepted from a device, in bytes.
    pub max_frame: usize,
    /// How many cases are kept open in memory between syncs.
    pub cache_cases: usize,
    /// Room for attachments' bytes in memory, in MiB, over every connection: a file moving takes
    /// room for two copies of itself, and waits while the room is taken (at least 40).
    pub attachment_memory_mib: usize,
    /// How long a file waits for room in memory before it is refused as "busy", in seconds
    /// (the device tries it again at its next sync): first for its device's share, then for the
    /// server's room, so up to twice this. At least 1.
    pub attachment_room_wait_secs: u64,
    /// How long one file may take to move, all in, in seconds (20 MiB at 300 kbit/s is about
    /// 10 minutes); past it the transfer is refused and the room it held is free for others. At
    /// least twice the room wait and five seconds more (a file that only waits is busy, not
    /// slow).
    pub attachment_file_deadline_secs: u64,
    /// Open cases no device has synced for this many seconds are closed, giving their memory
    /// back; the next sync of the case opens it again from disk (a couple of milliseconds).
    pub cache_idle_secs: u64,
    /// How long an enrolment code stays valid after it is issued, in hours.
    pub enrolment_ttl_hours: u64,
    /// Extra DNS names or addresses to put in the server certificate, besides the fixed
    /// [`polyphony_core::identity::SERVER_NAME`].
    pub extra_server_names: Vec<String>,
    /// Where the key that seals the store lives, if not `server.key` in the data directory. Keep
    /// it on another volume (or a mounted secret) and a copy of the data directory, a backup or a
    /// stolen disk, does not open.
    pub key_file: Option<PathBuf>,
    /// How long a device being revoked (upload, then wipe) may still connect to upload, in
    /// seconds; after that it is refused as revoked, whatever it still holds.
    pub revoking_limit_secs: u64,
    /// How long a device may still upload, to a case it holds, what it wrote before the case
    /// moved to another team or before its practitioner left the team, in seconds. After that
    /// the case is simply not available to it.
    pub moved_upload_limit_secs: u64,
    /// On a borough server that joined a trust hub: the longest wait, in seconds, between tries
    /// to reach the hub when it cannot be reached (the wait starts at a second and doubles). The
    /// borough serves its devices all the while; the link catches up when the hub is back.
    pub hub_retry_max_secs: u64,
    /// On a borough server that joined a trust hub: how often, in seconds, the live link sends
    /// the hub what changed in the borough's kept copy (its registry, new audit records).
    pub hub_keep_every_secs: u64,
    /// The most new cases one sync session may be part-way through sending at once (each is held
    /// in memory until it is whole and stored). A device sends a few hundred at most; a borough
    /// joining the hub sends its whole caseload, the rest in the link's next sessions.
    pub max_new_cases_per_session: usize,
    /// Where the server keeps cases, registry and audit log: `"sled"` (the default: files in the
    /// data directory, nothing else to install) or `"postgres"` (a PostgreSQL database on this
    /// machine; see `postgres_url`). The key file seals the values in either.
    pub store: StoreEngine,
    /// With `store = "postgres"`: the connection string (`host=/run/postgresql dbname=polyphony
    /// user=polyphony`, or a `postgresql://` URL). The environment variable
    /// `POLYPHONY_POSTGRES_URL`, when set, takes its place, keeping a password out of this file.
    pub postgres_url: Option<String>,
    /// With `store = "postgres"`: the schema that holds the tables (created on first run).
    pub postgres_schema: String,
    /// With `store = "postgres"`: the most database connections the server opens at once.
    pub postgres_pool: usize,
    /// With `store = "postgres"`: a PEM file of the authority that signed the database server's
    /// certificate. With it every connection uses TLS and checks the server's certificate and
    /// name; without it the database must be on this machine (a socket or a loopback address).
    pub postgres_ca_file: Option<PathBuf>,
    /// Every address devices can reach the borough's server nodes at (`host:port`), the same
    /// list on every node, when more than one node serves the borough (an active node and its
    /// standby on one PostgreSQL database). Devices are given it at enrolment and at each sync,
    /// and try each address in turn when one does not answer. Empty (the default): devices keep
    /// the one address they enrolled with.
    pub advertise: Vec<String>,
}

/// The storage engine a server keeps its data in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreEngine {
    /// sled, in the data directory.
    #[default]
    Sled,
    /// A PostgreSQL database.
    Postgres,
}

/// The environment variable that gives the PostgreSQL connection string.
pub const POSTGRES_URL_ENV: &str = "POLYPHONY_POSTGRES_URL";

/// What a `polyphony-server` is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerRole {
    /// A borough server: practitioners' devices enrol and sync with it.
    #[default]
    Borough,
    /// The trust hub: borough servers enrol and sync their teams' cases with it; devices are
    /// refused.
    Hub,
}

impl std::fmt::Display for ServerRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerRole::Borough => "borough server",
            ServerRole::Hub => "trust hub",
        })
    }
}

/// Fourteen days: a laptop handed back at the end of a placement gets a fortnight to upload.
pub const DEFAULT_REVOKING_LIMIT_SECS: u64 = 14 * 24 * 3600;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./polyphony-data"),
            listen: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4433)),
            max_connections: 1024,
            max_frame: polyphony_core::sync::DEFAULT_MAX_FRAME,
            cache_cases: 2000,
            attachment_memory_mib: crate::limits::DEFAULT_ATTACHMENT_MEMORY_MIB,
            attachment_room_wait_secs: crate::limits::DEFAULT_ROOM_WAIT.as_secs(),
            attachment_file_deadline_secs: crate::limits::DEFAULT_FILE_DEADLINE.as_secs(),
            cache_idle_secs: 60,
            enrolment_ttl_hours: 72,
            extra_server_names: Vec::new(),
            key_file: None,
            revoking_limit_secs: DEFAULT_REVOKING_LIMIT_SECS,
            moved_upload_limit_secs: DEFAULT_REVOKING_LIMIT_SECS,
            hub_retry_max_secs: 60,
            hub_keep_every_secs: crate::hub_link::keep::KEEP_EVERY.as_secs(),
            max_new_cases_per_session: crate::session::MAX_PROVISIONAL,
            role: ServerRole::Borough,
            store: StoreEngine::Sled,
            postgres_url: None,
            postgres_schema: "polyphony".into(),
            postgres_pool: 16,
            postgres_ca_file: None,
            advertise: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// Read the configuration the way the binary does.
    ///
    /// `config_file` (from `--config`) must exist if given. Otherwise `polyphony-server.toml` in the
    /// data directory is read if it is there, and the defaults are used if not. `data_dir` (from
    /// `--data`) overrides whatever the file says, so a file can be shared between data directories.
    pub fn load(data_dir: Option<&Path>, config_file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match config_file {
            Some(path) => Self::from_file(path)?,
            None => {
                let dir = data_dir
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| Self::default().data_dir);
                let path = dir.join(CONFIG_FILE_NAME);
                if path.is_file() {
                    Self::from_file(&path)?
                } else {
                    Self::default()
                }
            }
        };
        if let Some(dir) = data_dir {
            config.data_dir = dir.to_path_buf();
        }
        Ok(config)
    }

    /// Read a TOML configuration file; settings it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|detail| ConfigError::Invalid {
            path: path.to_path_buf(),
            detail,
        })
    }

    /// Parse TOML text; the error is the parser's message, naming the line.
    fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// The Unix socket through which administration commands reach the running server.
    pub fn admin_socket_path(&self) -> PathBuf {
        self.data_dir.join("admin.sock")
    }

    /// The file holding the key that seals the store and the borough CA's key.
    pub fn key_file(&self) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("server.key"))
    }

    /// The directory of the on-disk store.
    pub fn db_dir(&self) -> PathBuf {
        self.data_dir.join("db")
    }

    /// With `store = "postgres"`: how to reach the database (`POLYPHONY_POSTGRES_URL` first, then
    /// `postgres_url`); `None` when neither says.
    pub fn postgres_options(&self) -> Option<polyphony_core::store::PgOptions> {
        let url = std::env::var(POSTGRES_URL_ENV)
            .ok()
            .filter(|u| !u.trim().is_empty())
            .or_else(|| self.postgres_url.clone())?;
        Some(polyphony_core::store::PgOptions {
            url,
            schema: self.postgres_schema.clone(),
            pool_size: self.postgres_pool,
            ca_file: self.postgres_ca_file.clone(),
        })
    }

    /// How long a device may stay in the revoking state, as a duration.
    pub fn revoking_limit(&self) -> time::Duration {
        time::Duration::seconds(i64::try_from(self.revoking_limit_secs).unwrap_or(i64::MAX / 2))
    }

    /// How long a device may upload to a case that moved away from it, as a duration.
    pub fn moved_upload_limit(&self) -> time::Duration {
        time::Duration::seconds(i64::try_from(self.moved_upload_limit_secs).unwrap_or(i64::MAX / 2))
    }

    /// How long an enrolment code stays valid, as a duration.
    pub fn enrolment_ttl(&self) -> time::Duration {
        // Clamp absurd values rather than overflow: a code valid for a million years is still valid.
        let max_hours = i64::MAX / 3600;
        let hours = i64::try_from(self.enrolment_ttl_hours).map_or(max_hours, |h| h.min(max_hours));
        time::Duration::hours(hours)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_on_a_fresh_machine() {
        let c = ServerConfig::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:4433");
        assert_eq!(
            c.admin_socket_path(),
            Path::new("./polyphony-data/admin.sock")
        );
        assert_eq!(c.key_file(), Path::new("./polyphony-data/server.key"));
        assert_eq!(c.db_dir(), Path::new("./polyphony-data/db"));
        assert_eq!(c.enrolment_ttl(), time::Duration::hours(72));
        assert_eq!(c.max_frame, polyphony_core::sync::DEFAULT_MAX_FRAME);
    }

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let c = ServerConfig::from_toml(
            "listen = \"0.0.0.0:9000\"\nmax_connections = 5\ncache_idle_secs = 300\n",
        )
        .expect("valid");
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.max_connections, 5);
        assert_eq!(c.cache_idle_secs, 300);
        assert_eq!(c.cache_cases, 2000);
    }

    #[test]
    fn the_role_is_read_from_the_file_and_an_unknown_one_refused() {
        assert_eq!(ServerConfig::default().role, ServerRole::Borough);
        let c = ServerConfig::from_toml("role = \"hub\"\n").expect("valid");
        assert_eq!(c.role, ServerRole::Hub);
        let err = ServerConfig::from_toml("role = \"national\"\n").expect_err("unknown role");
        assert!(err.contains("national"), "{err}");
    }

    #[test]
    fn a_misspelt_setting_is_refused() {
        let err = ServerConfig::from_toml("max_conections = 5\n").expect_err("unknown key");
        assert!(err.contains("max_conections"), "{err}");
    }

    #[test]
    fn the_data_flag_overrides_the_file_and_the_file_is_found_in_the_data_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(CONFIG_FILE_NAME),
            "data_dir = \"/elsewhere\"\ncache_cases = 7\n",
        )
        .expect("write");
        let c = ServerConfig::load(Some(dir.path()), None).expect("load");
        assert_eq!(c.data_dir, dir.path());
        assert_eq!(c.cache_cases, 7);

        let missing = ServerConfig::load(None, Some(&dir.path().join("nope.toml")));
        assert!(matches!(missing, Err(ConfigError::Read { .. })));
    }
}
