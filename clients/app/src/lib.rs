//! # polyphony-app
//!
//! The app practitioners use on a home visit: a local web app served by this process to the
//! device's own browser, over the same `polyphony-core` profile the command line uses. All data is
//! on the device, so every screen works with no network; a background task syncs with the borough
//! server whenever it can reach it, live while connected.
//!
//! - [`state`]: the shared state: the profile behind one lock, kept fresh after background syncs.
//! - [`auth`]: only the person who launched the app gets in (launch secret, cookie, CSRF).
//! - [`server`]: the routes, security headers and embedded assets.
//! - [`pages`]: one module per screen, server-rendered HTML in the NHS design system's markup.
//! - [`ecomap`]: the network drawn as a picture (server-rendered SVG).
//! - [`merge`]: three-way merge of meeting texts, so concurrent typing keeps everyone's words.
//! - [`sync_task`]: the background sync (catch up, then stay live; back off when offline).
//! - [`status`]: the sync badge, derived only from real state.
//! - [`html`], [`dates`]: markup building blocks and how times are shown and read.

pub mod auth;
pub mod dates;
pub mod ecomap;
pub mod html;
pub mod loopback;
pub mod merge;
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

/// Serve `profile` on `config.listen` (and the other loopback address, same port) under this
/// launch's own host name, and start the background sync.
pub async fn start(config: Config, profile: Profile) -> Result<Running, AppError> {
    let listeners = loopback::bind(config.listen).await?;
    let addr = listeners[0].local_addr().map_err(|source| AppError::Bind {
        addr: config.listen,
        source,
    })?;
    let background = config.background_sync;
    let app = App::new(config, profile);
    app.gate.bind(addr);
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
