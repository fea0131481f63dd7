//! # polyphony-app
//!
//! The app practitioners use on a home visit: a local web app served by this process to the
//! device's own browser, over the same `polyphony-core` profile the command line uses. All data is
//! on the device, so every screen works with no network; a background task syncs with the borough
//! server whenever it can reach it, live while connected.
//!
//! - [`state`]: the shared state: the profile behind one lock, kept fresh after background syncs.
//! - [`auth`]: only the person who launched the app gets in (launch secret, cookie, CSRF).
//! - [`once`]: a form sent twice (resent after the app stopped, pressed twice) is applied once.
//! - [`server`]: the routes, security headers and embedded assets.
//! - [`pages`]: one module per screen, server-rendered HTML in the NHS design system's markup.
//! - [`ecomap`]: the network drawn as a picture (server-rendered SVG).
//! - [`merge`]: three-way merge of meeting texts, so concurrent typing keeps everyone's words.
//! - [`sync_task`]: the background sync (catch up, then stay live; back off when offline).
//! - [`status`]: the sync badge, derived only from real state.
//! - [`html`], [`dates`]: markup building blocks and how times are shown and read.

pub mod address;
pub mod auth;
pub mod dates;
pub mod ecomap;
pub mod html;
pub mod loopback;
pub mod merge;
pub mod once;
pub mod pages;
pub mod server;
pub mod state;
pub mod status;
pub mod sync_task;

use std::net::SocketAddr;
use std::sync::Arc;

use polyphony_core::profile::Profile;
use tokio::sync::watch;

pub use state::{App, Config};

/// What can stop the app from starting.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The app only listens on loopback: its pages hold clinical records.
    #[error("refusing to listen on {0}: the app only listens on this device (127.0.0.1 or ::1, with any port)")]
    NotLoopback(SocketAddr),
    /// The port could not be opened.
    #[error("cannot listen on {addr}: {source} (is another copy of the app running?)")]
    Bind {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The port of this profile's last run is taken by another program. The app does not move
    /// to another port on its own: a tab still open from the last run could not follow it.
    #[error("port {port}, where Polyphony ran last time on this profile, is in use by another program ({source}). A tab left open from before can only reach Polyphony on that port. Stop the other program (or another copy of Polyphony) and start again, or start with --new-port to use a new port: an open tab then cannot send what it kept, so copy it first")]
    PortTaken {
        /// The remembered port.
        port: u16,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The launch link could not be written where `--url-file` asked.
    #[error("cannot write the launch link to {path}: {source}")]
    LaunchFile {
        /// Where.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A running app.
pub struct Running {
    /// The shared state.
    pub app: Arc<App>,
    /// Where it listens (also on the other loopback address, with the same port).
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<()>>,
    sync: Option<sync_task::SyncHandle>,
}

impl Running {
    /// The app's origin: `http://<this launch's secret name>.localhost:<port>`.
    pub fn origin(&self) -> String {
        match self.app.gate.origin() {
            Some(o) => o.to_string(),
            None => format!("http://{}", self.addr), // unreachable: start binds the gate
        }
    }

    /// The URL that lets the browser in (carries this launch's secret; works once, for a minute).
    pub fn launch_url(&self) -> String {
        format!("{}/launch?secret={}", self.origin(), self.app.gate.secret())
    }

    /// Write the launch URL to `path`, readable by this user only (for scripts and tests).
    pub fn write_launch_url(&self, path: &std::path::Path) -> Result<(), AppError> {
        auth::write_secret_file(path, &format!("{}\n", self.launch_url())).map_err(|source| {
            AppError::LaunchFile {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// Stop serving and syncing. Every change was saved when it was made, so nothing is lost.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(s) = self.sync.take() {
            let _ = tokio::task::spawn_blocking(move || s.stop()).await;
        }
        for server in self.servers.drain(..) {
            let _ = server.await;
        }
    }
}

/// Serve `profile` on `config.listen` (and the other loopback address, same port) under the
/// app's host name, and start the background sync. Unless told otherwise, the port and the name
/// are those of this profile's last run ([`address`]), so a tab open from then reaches this one.
pub async fn start(config: Config, profile: Profile) -> Result<Running, AppError> {
    let store = profile.store().clone();
    let remembered = (!config.new_port)
        .then(|| address::load(store.as_ref()))
        .flatten();
    let listen = match &remembered {
        Some(r) if config.listen.port() == 0 => SocketAddr::new(config.listen.ip(), r.port),
        _ => config.listen,
    };
    let listeners = match loopback::bind(listen).await {
        Err(AppError::Bind { source, .. })
            if listen != config.listen && source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            return Err(AppError::PortTaken {
                port: listen.port(),
                source,
            })
        }
        other => other?,
    };
    let addr = listeners[0].local_addr().map_err(|source| AppError::Bind {
        addr: listen,
        source,
    })?;
    let background = config.background_sync;
    once::forget_old(store.as_ref());
    let gate = match remembered {
        Some(r) => auth::Gate::new().with_label(r.label),
        None => auth::Gate::new(),
    };
    let app = App::with_gate(config, profile, gate);
    app.gate.bind(addr);
    let here = address::Remembered {
        label: app.gate.label().to_string(),
        port: addr.port(),
    };
    if let Err(e) = address::save(store.as_ref(), &here) {
        tracing::warn!(error = %e, "could not remember the app's address: after a restart, open tabs cannot reach it");
    }
    let router = server::router(app.clone());
    let (shutdown, stopped) = watch::channel(false);
    let servers = listeners
        .into_iter()
        .map(|listener| {
            let router = router.clone();
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                });
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "the app's web server stopped");
                }
            })
        })
        .collect();
    let sync = background.then(|| sync_task::spawn(app.clone()));
    tracing::info!(port = addr.port(), "app listening");
    Ok(Running {
        app,
        addr,
        shutdown,
        servers,
        sync,
    })
}
