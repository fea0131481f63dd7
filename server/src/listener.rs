//! The QUIC endpoint: accepts devices, enrols new ones, hands enrolled ones to a sync session, and
//! shuts down gracefully.
//!
//! One UDP port serves both kinds of connection, told apart by ALPN: enrolment (no client
//! certificate yet; the device proves itself with a one-time code) and sync (mutual TLS with a
//! certificate the borough CA issued). A device is identified by its certificate, never by its
//! address, so QUIC connection migration (a laptop changing network mid-sync) just works.
//! Connections beyond the limit are refused before the handshake, so a flood costs little.
//!
//! An I/O driver: this module, with the enrolment exchange and the session's connection driver it
//! hands connections to, is where the server meets tokio and quinn; storage and the registry are
//! awaited through [`CoreDriver`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use polyphony_core::identity::{self, BoroughCa, ALPN_ENROL, ALPN_SYNC};
use polyphony_core::sync::ErrorCode;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

use crate::admin::{self, Admin};
use crate::admission::{self, device_actor, Admitted};
use crate::audit::AuditAction;
use crate::config::{ServerConfig, ServerRole};
use crate::data_dir::{self, StartError};
use crate::driver::CoreDriver;
use crate::enrolment;
use crate::limits::DeviceSlot;
use crate::registry::Device;
use crate::session::{self, Shared};
use crate::storage::ServerStorage;

/// The borough server.
pub struct Server;

/// A running server.
pub struct ServerHandle {
    addr: SocketAddr,
    ca_fingerprint: [u8; 32],
    shutdown: watch::Sender<bool>,
    accept: JoinHandle<()>,
    admin: JoinHandle<()>,
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
}

impl Server {
    /// Open (or create) the data directory and start serving.
    pub async fn start(config: ServerConfig) -> Result<ServerHandle, StartError> {
        // Off the runtime: opening may wait (a standby node waits for the database's writer
        // lock until the active node stops).
        let opening = config.clone();
        let opened = tokio::task::spawn_blocking(move || data_dir::open(&opening))
            .await
            .map_err(|e| {
                StartError::Store(polyphony_core::store::StoreError::Engine(e.to_string()))
            })??;
        Self::start_opened(config, opened).await
    }

    /// Start serving over a store the caller opened (see [`data_dir::open_store`]). A test seam: the
    /// fault tests wrap the real store in one that fails on demand (a full disk).
    pub async fn start_with_store(
        config: ServerConfig,
        store: Arc<dyn polyphony_core::store::Store>,
    ) -> Result<ServerHandle, StartError> {
        let opened = data_dir::open_with_store(&config, store)?;
        Self::start_opened(config, opened).await
    }

    async fn start_opened(
        config: ServerConfig,
        opened: data_dir::Opened,
    ) -> Result<ServerHandle, StartError> {
        let (endpoint, addr) = bind_endpoint(&config, &opened)?;
        let storage = Arc::new(ServerStorage::over(
            opened.engine.clone(),
            config.cache_cases,
        ));
        let driver = CoreDriver::attach(&storage, &opened.registry);
        let ca = Arc::new(opened.ca);
        let shared = Arc::new(Shared {
            ca: Some(ca.clone()),
            limits: Arc::new(crate::limits::Limits::for_attachments(
                config.attachment_memory_mib,
                std::time::Duration::from_secs(config.attachment_room_wait_secs),
                std::time::Duration::from_secs(config.attachment_file_deadline_secs),
            )),
            storage,
            registry: opened.registry.clone(),
            audit: opened.audit.clone(),
            max_frame: config.max_frame,
            revoking_limit: config.revoking_limit(),
            moved_upload_limit: config.moved_upload_limit(),
            max_new_cases: config.max_new_cases_per_session.max(1),
            advertise: config.advertise.clone(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let link = crate::hub_link::LinkStatus::new();
        let admin = Admin::new(
            opened.registry,
            opened.audit,
            ca.fingerprint(),
            config.enrolment_ttl(),
        )
        .with_ca(ca.clone())
        .with_role(config.role)
        .with_storage(shared.storage.clone())
        .with_link(link.clone());
        let admin = start_admin(&config, admin, shutdown_rx.clone()).await?;
        if config.role == ServerRole::Borough {
            tokio::spawn(crate::hub_link::run(
                shared.clone(),
                driver.clone(),
                link,
                crate::hub_link::LinkTimes {
                    retry_max: Duration::from_secs(config.hub_retry_max_secs.max(1)),
                    keep_every: Duration::from_secs(config.hub_keep_every_secs.max(1)),
                },
                shutdown_rx.clone(),
            ));
        }
        spawn_chores(&shared, &config, &shutdown_rx);
        let ca_fingerprint = ca.fingerprint();
        let accept = tokio::spawn(accept_loop(
            endpoint.clone(),
            shared.clone(),
            driver,
            ca,
            config.max_connections,
            config.role,
            shutdown_rx,
        ));
        info!(%addr, role = %config.role, "listening");
        Ok(ServerHandle {
            addr,
            ca_fingerprint,
            shutdown,
            accept,
            admin,
            shared,
            endpoint,
        })
    }
}

/// The QUIC endpoint on the configured address and the address it got: TLS with a server
/// certificate the borough CA issues now (for the configured extra names too), stateless resets
/// keyed by the server's stable secret.
fn bind_endpoint(
    config: &ServerConfig,
    opened: &data_dir::Opened,
) -> Result<(quinn::Endpoint, SocketAddr), StartError> {
    let names: Vec<&str> = config
        .extra_server_names
        .iter()
        .map(String::as_str)
        .collect();
    let (chain, key) = opened.ca.issue_server_cert(&names)?;
    let quic = identity::server_config(opened.ca.cert_der(), chain, key)?;
    let secret = data_dir::reset_secret(&*opened.store)?;
    let port = |source| StartError::Socket {
        what: format!("cannot listen on {}", config.listen),
        source,
    };
    let socket = std::net::UdpSocket::bind(config.listen).map_err(port)?;
    let endpoint = quinn::Endpoint::new(
        endpoint_config(&secret),
        Some(quic),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(port)?;
    let addr = endpoint.local_addr().map_err(port)?;
    Ok((endpoint, addr))
}

/// Stateless resets keyed by the server's stable secret, and connection ids that carry a checksum
/// keyed by the same secret, so a restarted server recognises its predecessor's connections and
/// can reset them.
fn endpoint_config(secret: &[u8]) -> quinn::EndpointConfig {
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let cid_key = u64::from_be_bytes(secret[..8].try_into().expect("32-byte secret"));
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
    endpoint_config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    endpoint_config
}

/// Bind the admin socket and serve administration on it until shutdown. Bound before the server
/// is started, so an admin request sent right after start finds the socket.
async fn start_admin(
    config: &ServerConfig,
    admin: Admin,
    stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, StartError> {
    let admin = Arc::new(admin);
    let admin_socket = admin::AdminSocket::bind(config.admin_socket_path())
        .await
        .map_err(|source| StartError::Socket {
            what: format!(
                "cannot open the admin socket {}",
                config.admin_socket_path().display()
            ),
            source,
        })?;
    Ok(tokio::spawn(async move {
        if let Err(e) = admin_socket.serve(admin, stop).await {
            warn!(error = %e, "admin socket stopped");
        }
    }))
}

/// The server's chores, until `stop`: closing idle cases, and reopening the store after a disk
/// error.
fn spawn_chores(shared: &Arc<Shared>, config: &ServerConfig, stop: &watch::Receiver<bool>) {
    tokio::spawn(close_idle_cases(
        shared.clone(),
        Duration::from_secs(config.cache_idle_secs),
        stop.clone(),
    ));
    tokio::spawn(recover_from_disk_errors(shared.clone(), stop.clone()));
}

impl ServerHandle {
    /// Where the server listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether another node took over the database this server shares (PostgreSQL) while it
    /// had lost the database: it writes nothing more and must stop.
    pub fn deposed(&self) -> bool {
        self.shared.storage.store.deposed()
    }

    /// The borough CA's fingerprint (what enrolment codes carry).
    pub fn ca_fingerprint(&self) -> [u8; 32] {
        self.ca_fingerprint
    }

    /// How many cases are open in memory.
    pub fn cached_cases(&self) -> usize {
        self.shared.storage.cached()
    }

    /// Stop accepting, close connections, flush, and wait for every task to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.endpoint.close(
            (ErrorCode::ShuttingDown as u32).into(),
            b"the server is shutting down: sync again shortly",
        );
        let _ = tokio::time::timeout(Duration::from_secs(10), self.endpoint.wait_idle()).await;
        let _ = self.accept.await;
        let _ = self.admin.await;
        let store = self.shared.storage.store.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || store.flush()).await {
            warn!(error = %e, "final flush failed");
        }
        info!("borough server stopped");
    }
}

/// Now and then, close the cases no device has synced for `idle` (see
/// [`ServerStorage::close_idle`](crate::storage::ServerStorage::close_idle)).
async fn close_idle_cases(shared: Arc<Shared>, idle: Duration, mut stop: watch::Receiver<bool>) {
    let every = (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let storage = shared.storage.clone();
        if let Ok(closed) = tokio::task::spawn_blocking(move || storage.close_idle(idle)).await {
            if closed > 0 {
                debug!(closed, open = shared.storage.cached(), "closed idle cases");
            }
        }
    }
}

/// How often a server whose store is broken by a disk error checks whether it can reopen it,
/// when no connection arrives to make it check sooner.
const RECOVERY_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Now and then, reopen the store if a disk error broke it and there is space again (see
/// [`recover`]). Connections check on arrival too, so this matters for a server with only live
/// sessions, whose writes would otherwise be refused until someone reconnects.
async fn recover_from_disk_errors(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RECOVERY_CHECK_EVERY) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        recover(&shared).await;
    }
}

/// sled 0.34 keeps its first I/O error: after a full disk the store refuses every write until it
/// is reopened. Once there is space, reopen it ([`ServerStorage::recover`]), refresh the audit
/// log's chain head, and let every sync connection end (see [`serve_until_reopened`]): they hold
/// sync states built on what the old engine held.
async fn recover(shared: &Shared) {
    if !shared.storage.broken() {
        return;
    }
    let storage = shared.storage.clone();
    let outcome = tokio::task::spawn_blocking(move || storage.recover()).await;
    match outcome {
        Ok(Ok(None)) => return,
        Ok(Ok(Some(generation))) => info!(
            generation,
            "reopened the store after a disk error: writes are taken again; sync connections were closed so devices sync afresh"
        ),
        Ok(Err(e)) => warn!(error = %e, "could not reopen the store after a disk error; trying again later"),
        Err(e) => {
            warn!(error = %e, "the reopen task failed");
            return;
        }
    }
    // The old engine is gone either way.
    shared.audit.reopened();
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    driver: Arc<CoreDriver>,
    ca: Arc<BoroughCa>,
    max_connections: usize,
    role: ServerRole,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(max_connections));
    let ids = AtomicU64::new(1);
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i { Some(i) => i, None => break },
            _ = shutdown.changed() => break,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            warn!(remote = %incoming.remote_address(), "connection limit reached: refusing");
            incoming.refuse();
            continue;
        };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let (shared, driver, ca) = (shared.clone(), driver.clone(), ca.clone());
        let span = tracing::info_span!("connection", id, remote = %incoming.remote_address());
        tokio::spawn(
            async move {
                let _permit = permit;
                match incoming.await {
                    Ok(conn) => handle(shared, driver, ca, conn, id, role).await,
                    Err(e) => info!(error = %e, "handshake failed"),
                }
            }
            .instrument(span),
        );
    }
}

fn close(conn: &quinn::Connection, code: ErrorCode, message: &str) {
    conn.close((code as u32).into(), message.as_bytes());
}

/// A connection, by its ALPN: an enrolment, or a sync (a device's, or a borough's link).
async fn handle(
    shared: Arc<Shared>,
    driver: Arc<CoreDriver>,
    ca: Arc<BoroughCa>,
    conn: quinn::Connection,
    id: u64,
    role: ServerRole,
) {
    // A device arriving after a full disk was cleared should find the server taking writes.
    recover(&shared).await;
    let alpn = identity::negotiated_alpn(&conn);
    if alpn.as_deref() == Some(ALPN_ENROL) {
        enrolment::serve(shared, driver, ca, conn, role).await;
    } else if alpn.as_deref() == Some(ALPN_SYNC) {
        sync(shared, driver, conn, id, role).await;
    } else {
        close(&conn, ErrorCode::UnsupportedVersion, "unknown protocol");
    }
}

/// A sync connection: the peer behind it is checked by its certificate
/// ([`admission::admit_peer`]: a device on a borough server, a borough on the trust hub), takes
/// one of its connection slots, and is served until the session ends.
async fn sync(
    shared: Arc<Shared>,
    driver: Arc<CoreDriver>,
    conn: quinn::Connection,
    id: u64,
    role: ServerRole,
) {
    let cert = identity::peer_device_cert(&conn);
    match admission::admit_peer(&shared, role, cert.as_deref()) {
        Ok(Admitted::Device(device, practitioner)) => {
            let _slot = take_device_slot(&shared, &conn, &device);
            let serve = session::serve(
                shared,
                driver.clone(),
                conn.clone(),
                id,
                device,
                practitioner,
            );
            serve_until_reopened(&driver, &conn, serve).await;
        }
        Ok(Admitted::Borough(borough)) => {
            // A borough's links take slots as a device's connections do: a newer one past the
            // limit closes the oldest (a borough restarted while its old connection lingers).
            let slot = polyphony_core::DeviceId(borough.id.0);
            let closer = closer(
                &conn,
                "this borough opened a newer link: this one is closed",
            );
            let (_slot, _) = shared.limits.open_device(slot, closer);
            let serve = session::serve_borough(shared, driver.clone(), conn.clone(), id, borough);
            serve_until_reopened(&driver, &conn, serve).await;
        }
        Err((code, message)) => close(&conn, code, &message),
    }
}

/// What closes `conn` as busy, with `why`, when a newer connection takes its slot.
fn closer(conn: &quinn::Connection, why: &'static str) -> Box<dyn Fn() + Send + Sync> {
    let conn = conn.clone();
    Box::new(move || close(&conn, ErrorCode::Busy, why))
}

/// One of the device's connection slots, held for as long as the session: a device holds at most
/// [`MAX_CONNECTIONS_PER_DEVICE`](crate::limits::MAX_CONNECTIONS_PER_DEVICE), and a new
/// connection past it closes its oldest (audited).
fn take_device_slot(shared: &Shared, conn: &quinn::Connection, device: &Device) -> DeviceSlot {
    let closer = closer(
        conn,
        "this device opened a newer connection: this one is closed",
    );
    let (slot, superseded) = shared.limits.open_device(device.id, closer);
    if superseded > 0 {
        shared.audit(
            device_actor(device),
            AuditAction::Refused,
            None,
            format!(
                "{superseded} older connection(s) of the device closed: it may hold {}",
                crate::limits::MAX_CONNECTIONS_PER_DEVICE
            ),
        );
    }
    slot
}

/// Serve a session (`serve`) until it ends, or until the store is reopened after a disk error:
/// the session's sync states describe documents the reopened store may not hold. The device (or
/// borough) reconnects and syncs afresh, sending what the server lacks.
async fn serve_until_reopened(
    driver: &CoreDriver,
    conn: &quinn::Connection,
    serve: impl std::future::Future<Output = ()>,
) {
    let mut reopened = driver.reopened();
    tokio::pin!(serve);
    tokio::select! {
        () = &mut serve => {}
        Ok(()) = reopened.changed() => {
            close(
                conn,
                ErrorCode::StorageFailed,
                "the server reopened its store after a disk error: nothing it acknowledged was lost; sync again",
            );
            serve.await;
        }
    }
}
