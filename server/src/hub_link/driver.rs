//! The link's task: connect to the hub, sync, push, reconnect. The only part of the link that
//! touches tokio or quinn.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use polyphony_core::identity::DeviceKey;
use polyphony_core::net::{self, FramedStream};
use polyphony_core::sync::ErrorCode;
use polyphony_core::CaseId;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch, Notify};
use tracing::{info, warn};

use super::link::{Batch, LinkCore};
use super::membership::{self, HubMembership};
use super::LINK_ORIGIN;
use crate::driver::CoreDriver;
use crate::session::{off_runtime, Shared};

/// How often a live link looks again at the borough's roster (a device enrolled since: the link
/// reconnects with the new one, so the hub takes that device's changes) and at cases the hub
/// refused for now (tried again in a new session).
const LOOK_AGAIN: Duration = Duration::from_secs(5);

/// What the link is doing, for `polyphony-server hub status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    /// Connected to the hub and welcomed now.
    pub connected: bool,
    /// When the link last connected (RFC 3339).
    pub connected_at: Option<String>,
    /// When every case was last in step with the hub (RFC 3339).
    pub settled_at: Option<String>,
    /// Why the link last ended or failed to connect, if it did.
    pub last_error: Option<String>,
    /// How many sessions the link has opened since the server started.
    pub sessions: u64,
    /// Cases the hub refused in the last session, with why (each is tried again in the next).
    pub refused: Vec<RefusedCase>,
}

/// A case the hub refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedCase {
    /// The case.
    pub case: CaseId,
    /// The hub's words.
    pub message: String,
}

/// The link's state, shared with administration, and the signal that the borough joined a hub.
#[derive(Debug, Default)]
pub struct LinkStatus {
    state: Mutex<LinkState>,
    joined: Notify,
    transfer: Notify,
}

impl LinkStatus {
    /// A link that has not run yet.
    pub fn new() -> Arc<Self> {
        Arc::new(LinkStatus::default())
    }

    /// The link's state now.
    pub fn state(&self) -> LinkState {
        self.state.lock().expect("link state lock").clone()
    }

    /// The borough joined a hub (or joined again): the link starts, or reconnects, at once.
    pub fn joined(&self) {
        self.joined.notify_one();
    }

    /// An administrator asked for a case to be transferred: a live link asks the hub at once.
    pub fn transfer_asked(&self) {
        self.transfer.notify_one();
    }

    fn update(&self, f: impl FnOnce(&mut LinkState)) {
        f(&mut self.state.lock().expect("link state lock"));
    }
}

/// How a link session ended.
enum Ended {
    /// The server is stopping.
    Stop,
    /// Reconnect at once (the roster changed; joined again).
    Again,
    /// Reconnect to try again cases the hub refused for now, after a wait that doubles while
    /// every session ends this way (the hub busy or its disk failing: no reason to press it).
    Retry,
    /// It failed (or the hub closed it): wait, then reconnect.
    Failed(String),
    /// The hub refused this borough (revoked, or not enrolled with this certificate): wait long
    /// (the longest retry wait, at least [`REFUSED_WAIT`]) before trying again, or until it
    /// joins again.
    Refused(String),
}

/// The least wait before trying again a hub that refused this borough: each try is a refusal in
/// the hub's audit log, and only a new code (which wakes the link at once) changes the answer.
const REFUSED_WAIT: Duration = Duration::from_secs(600);

/// Whether a case the hub refused may be taken in a later session without anything changing on
/// the borough (the hub busy, its disk failing): the link reconnects to try it. Any other
/// refusal (a change the hub will not take) waits for the case to change.
fn retryable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Busy | ErrorCode::StorageFailed | ErrorCode::Internal
    )
}

/// How a link ended on a network error: refused (the hub will not take this borough) or failed.
fn failed(e: &polyphony_core::net::NetError) -> Ended {
    match e {
        polyphony_core::net::NetError::Refused { code, .. } if refuses_borough(*code) => {
            Ended::Refused(e.to_string())
        }
        // The hub ended the session to grant more (a case transferred here): at once.
        polyphony_core::net::NetError::Refused {
            code: ErrorCode::Done,
            ..
        } => Ended::Again,
        other => Ended::Failed(other.to_string()),
    }
}

/// Whether the hub closing with `code` refuses this borough itself (revoked, or not enrolled
/// with this certificate), rather than ending one session.
fn refuses_borough(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::Revoked | ErrorCode::Unauthorised)
}

fn now() -> Option<String> {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// The link's timings.
#[derive(Debug, Clone, Copy)]
pub struct LinkTimes {
    /// The longest wait between tries to reach the hub.
    pub retry_max: Duration,
    /// How often a live link sends what changed in the borough's kept copy.
    pub keep_every: Duration,
}

/// Run the link until `stop`: nothing while the borough has not joined a hub; then sessions, one
/// after another, waiting between failures from a second, doubling to `times.retry_max`.
pub async fn run(
    shared: Arc<Shared>,
    driver: Arc<CoreDriver>,
    status: Arc<LinkStatus>,
    times: LinkTimes,
    mut stop: watch::Receiver<bool>,
) {
    let retry_max = times.retry_max;
    let first_wait = Duration::from_secs(1).min(retry_max.max(Duration::from_millis(100)));
    let mut wait = first_wait;
    let mut retry_wait = first_wait;
    loop {
        if *stop.borrow() {
            return;
        }
        let membership = match membership::load(&*shared.storage.store) {
            Ok(Some(m)) => m,
            Ok(None) => {
                tokio::select! {
                    () = status.joined.notified() => continue,
                    _ = stop.changed() => continue,
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot read the hub membership");
                status.update(|s| s.last_error = Some(e.to_string()));
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        let (ended, welcomed) = connect_and_sync(
            &shared,
            &driver,
            &status,
            (&membership, times.keep_every),
            &mut stop,
        )
        .await;
        status.update(|s| s.connected = false);
        if welcomed {
            wait = first_wait;
        }
        if welcomed && !matches!(ended, Ended::Retry) {
            retry_wait = first_wait;
        }
        match ended {
            Ended::Stop => return,
            Ended::Again => continue,
            Ended::Retry => {
                tokio::select! {
                    () = tokio::time::sleep(retry_wait) => {}
                    () = status.joined.notified() => {}
                    _ = stop.changed() => {}
                }
                retry_wait = (retry_wait * 2).min(retry_max.max(first_wait));
                continue;
            }
            Ended::Refused(why) => {
                warn!(hub = %membership.hub, error = %why, "the trust hub refused this borough");
                status.update(|s| s.last_error = Some(why));
                tokio::select! {
                    () = tokio::time::sleep(retry_max.max(REFUSED_WAIT)) => {}
                    () = status.joined.notified() => {}
                    _ = stop.changed() => {}
                }
            }
            Ended::Failed(why) => {
                info!(hub = %membership.hub, error = %why, wait_secs = wait.as_secs_f32(), "the trust hub link ended; trying again");
                status.update(|s| s.last_error = Some(why));
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = status.joined.notified() => {}
                    _ = stop.changed() => {}
                }
                wait = (wait * 2).min(retry_max.max(first_wait));
            }
        }
    }
}

/// One session with the hub; whether it was welcomed.
async fn connect_and_sync(
    shared: &Arc<Shared>,
    driver: &Arc<CoreDriver>,
    status: &LinkStatus,
    keep: (&HubMembership, Duration),
    stop: &mut watch::Receiver<bool>,
) -> (Ended, bool) {
    let m = keep.0;
    let identity = (|| {
        let ca = hex::decode(&m.hub_ca).map_err(|e| e.to_string())?;
        let cert = hex::decode(&m.certificate).map_err(|e| e.to_string())?;
        let key = DeviceKey::from_pem(&m.key_pem).map_err(|e| e.to_string())?;
        Ok::<_, String>((ca, cert, key))
    })();
    let (ca, cert, key) = match identity {
        Ok(i) => i,
        Err(e) => {
            return (
                Ended::Failed(format!("the stored hub membership is unusable: {e}")),
                false,
            )
        }
    };
    let connected = tokio::select! {
        c = net::connect(&m.hub, &ca, &cert, &key) => c,
        _ = stop.changed() => return (Ended::Stop, false),
    };
    let (endpoint, conn) = match connected {
        Ok(c) => c,
        Err(e) => return (failed(&e), false),
    };
    status.update(|s| s.sessions += 1);
    let (ended, welcomed) = sync(shared, driver, &conn, keep, status, stop).await;
    conn.close((ErrorCode::Done as u32).into(), b"link closed");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    (ended, welcomed)
}

/// The shell around one link session ([`LinkCore`]): it feeds the core frames and
/// announcements, waits for each batch's ticket, and writes it; how the session ended, and
/// whether it was welcomed.
///
/// Once the hub welcomed it, the session's helper tasks run beside it and end with it: its files
/// ([`super::files`]) and, if the hub keeps copies, the borough's kept copy ([`super::keep`]).
async fn sync(
    shared: &Arc<Shared>,
    driver: &Arc<CoreDriver>,
    conn: &quinn::Connection,
    (membership, keep_every): (&HubMembership, Duration),
    status: &LinkStatus,
    stop: &mut watch::Receiver<bool>,
) -> (Ended, bool) {
    let lost = |e: &dyn std::fmt::Display| failed(&net::explain("the trust hub", Some(conn), e));
    let (send, recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(e) => return (lost(&e), false),
    };
    let mut stream = FramedStream::new(send, recv);
    // Subscribed before the welcome: a device's change from now on is pushed.
    let mut changes = driver.case_changes();
    let (mut core, first) = match off_runtime(|| LinkCore::new(shared.clone())) {
        Ok(c) => c,
        Err(e) => return (Ended::Failed(e.to_string()), false),
    };
    if let Err(e) = write_batch(driver, &mut stream, first).await {
        return (Ended::Failed(e), false);
    }
    let mut look_again = tokio::time::interval(LOOK_AGAIN);
    let mut welcomed = false;
    // Cases whose files to look at, for the session's file task (started once welcomed).
    let (files, files_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut files_rx = Some(files_rx);
    let mut files_task = AbortOnDrop(None);
    let mut keeping = AbortOnDrop(None);
    loop {
        let core_ref = &mut core;
        let next = tokio::select! {
            frame = stream.read_frame() => match frame {
                Ok(Some(f)) => off_runtime(|| core_ref.handle(f)),
                Ok(None) => return (lost(&"the trust hub ended the link"), welcomed),
                Err(e) => return (lost(&e), welcomed),
            },
            change = changes.recv() => match change {
                Ok(c) if c.origin == LINK_ORIGIN => continue,
                Ok(c) => {
                    let _ = files.send(c.case);
                    off_runtime(|| core_ref.local_change(c.case))
                }
                Err(broadcast::error::RecvError::Lagged(_)) => off_runtime(|| core_ref.all_changed()),
                Err(broadcast::error::RecvError::Closed) => return (Ended::Stop, welcomed),
            },
            _ = look_again.tick() => {
                if core.settled() {
                    let refused = core.refused().iter().map(|(case, r)| RefusedCase { case: *case, message: r.message.clone() }).collect();
                    status.update(|s| { s.settled_at = now(); s.refused = refused; });
                    if core.refused().iter().any(|(_, r)| retryable(r.code)) {
                        // Tried again in a new session (a case refused as busy, or one the
                        // hub could not save, goes on once it can). A case refused for what
                        // it holds waits for its next change.
                        return (Ended::Retry, welcomed);
                    }
                }
                if off_runtime(|| core.roster_changed()) {
                    return (Ended::Again, welcomed);
                }
                if welcomed {
                    transfers(shared, driver, conn).await;
                }
                continue;
            }
            () = status.transfer.notified(), if welcomed => {
                transfers(shared, driver, conn).await;
                continue;
            }
            // Joined again (a new certificate): the link reconnects with it now.
            () = status.joined.notified() => return (Ended::Again, welcomed),
            _ = stop.changed() => return (Ended::Stop, welcomed),
        };
        if !welcomed && core.welcomed() {
            welcomed = true;
            if let Some(rx) = files_rx.take() {
                for case in off_runtime(|| core.cases()) {
                    let _ = files.send(case);
                }
                files_task.0 = Some(tokio::spawn(super::files::task(
                    shared.clone(),
                    membership.hub.clone(),
                    conn.clone(),
                    rx,
                )));
            }
            transfers(shared, driver, conn).await;
            if core.hub_keeps_copies() {
                keeping.0 = Some(tokio::spawn(super::keep::keep_while(
                    shared.clone(),
                    driver.clone(),
                    conn.clone(),
                    membership.clone(),
                    keep_every,
                )));
            }
            status.update(|s| {
                s.connected = true;
                s.connected_at = now();
                s.last_error = None;
            });
        }
        let next = match next {
            Ok(n) => n,
            Err(e) => return (Ended::Failed(e.to_string()), welcomed),
        };
        if core.take_history_wanted() {
            transfers(shared, driver, conn).await;
        }
        for case in core.take_stored() {
            let _ = files.send(case);
        }
        match write_batch(driver, &mut stream, next).await {
            Ok(None) => {}
            Ok(Some((code, message))) if refuses_borough(code) => {
                return (
                    Ended::Refused(format!(
                        "the trust hub refused this borough ({code:?}): {message}"
                    )),
                    welcomed,
                )
            }
            // The hub ended the session to grant more (a case transferred here): at once.
            Ok(Some((ErrorCode::Done, _))) => return (Ended::Again, welcomed),
            Ok(Some((code, message))) => {
                return (
                    Ended::Failed(format!(
                        "the trust hub closed the link ({code:?}): {message}"
                    )),
                    welcomed,
                )
            }
            Err(e) => return (Ended::Failed(e), welcomed),
        }
    }
}

/// Carry the transfers an administrator asked for to the hub, and fetch the history of cases
/// transferred here ([`super::transfer`]); a failure is logged and tried again at the next look.
async fn transfers(shared: &Arc<Shared>, driver: &CoreDriver, conn: &quinn::Connection) {
    if let Err(e) = super::transfer::run_round(shared, driver, conn).await {
        warn!(error = %e, "a transfer through the trust hub did not complete; trying again shortly");
    }
}

/// Wait until the batch's ticket is durable (what it read, stored and audited is on the
/// borough's disk), then write it. The core's `Close`, if any, is returned.
async fn write_batch(
    driver: &CoreDriver,
    stream: &mut FramedStream,
    batch: Batch,
) -> Result<Option<(ErrorCode, String)>, String> {
    let Batch {
        frames,
        close,
        ticket,
    } = batch;
    driver.durable(ticket).await.map_err(|e| {
        format!("this borough could not make its records durable ({e}); nothing was sent")
    })?;
    if !frames.is_empty() {
        stream
            .write_frames(&frames)
            .await
            .map_err(|e| format!("the link to the trust hub was lost: {e}"))?;
    }
    if let Some((code, message)) = close {
        let _ = stream.send.finish();
        return Ok(Some((code, message)));
    }
    Ok(None)
}

/// Aborts the task it holds when dropped: a session's helper tasks end with it.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}
