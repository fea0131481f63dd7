//! Background sync: keeps the device in step with the borough server whenever it can be reached,
//! and never gets in the way of work when it cannot.
//!
//! Each round, when the device is enrolled:
//! 1. **Catch up** with a one-shot session (`ClientSession::new(false, ..)`): upload everything,
//!    receive what the team wrote, ending in a clean "sync complete". Its progress is what the
//!    badge shows as "Syncing: 3 of 12 cases".
//! 2. **Stay live** with a live session (`ClientSession::new(true, ..)`): every edit made in the app
//!    is pushed as it is saved (through the `local` channel of [`net::drive`]), and the server pushes
//!    what other devices write, so two practitioners with the same meeting open see each other's
//!    typing arrive.
//!
//! When the server cannot be reached, the round fails, the link shows "Offline" with the reason, and
//! the next attempt waits with exponential backoff (capped by `--retry-max-seconds`); an edit or a
//! "try now" wakes it early. A live link that stops acknowledging pushed changes is dropped after a
//! few seconds, so "Connected" is not shown for a server that went away silently.
//!
//! This runs on client-core's public API (`net::connect`, `net::drive`, `ClientSession`, the store)
//! rather than `Profile::sync`, which holds the profile for the whole sync and has no live mode.
//! It keeps the same records the profile keeps (acknowledged heads, sync states, the offline-read
//! outbox, the cases the server said moved away) through the same [`DeviceBooks`], so
//! `Profile::unsynced`, `Profile::edit` and the command line agree with it. When
//! the server says a case moved or the device is revoked, the profile's own sync is run so the core
//! decides what to remove.

use std::sync::Arc;
use std::time::Duration;

use automerge::AutoCommit;
use polyphony_core::identity::DeviceKey;
use polyphony_core::net::{self, SessionHost};
use polyphony_core::profile::{DeviceBooks, Enrolment};
use polyphony_core::store::{Store, StoreError};
use polyphony_core::sync::{Action, ClientSession, DocSet, ErrorCode};
use polyphony_core::CaseId;
use tokio::sync::{mpsc, Notify};
use tracing::{info, warn};

use crate::state::App;
use crate::status::{lock, Link};

/// A live link that leaves a pushed change unacknowledged this long is treated as lost.
const STALL_AFTER: Duration = Duration::from_secs(10);

/// The running background sync.
pub struct SyncHandle {
    stop: Arc<Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SyncHandle {
    /// Stop the background sync (work is saved as it is made, so stopping loses nothing).
    pub fn stop(mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Start the background sync.
///
/// It runs on a thread of its own with a single-threaded runtime, so a long first sync (loading
/// and merging many documents, flushing the store) never competes with the pages for one of the
/// main runtime's two workers on a small laptop.
pub fn spawn(app: Arc<App>) -> SyncHandle {
    let stop = Arc::new(Notify::new());
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("polyphony-sync".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    warn!(error = %e, "cannot start the background sync");
                    return;
                }
            };
            rt.block_on(async move {
                tokio::select! {
                    _ = run(app) => {}
                    _ = stop2.notified() => {}
                }
            });
        })
        .ok();
    SyncHandle { stop, thread }
}

async fn run(app: Arc<App>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let enrolment = app.profile().await.enrolment().cloned();
        let Some(e) = enrolment else {
            app.sync.set_link(Link::NotEnrolled);
            app.sync.poke.notified().await;
            continue;
        };
        // After a failure the badge keeps saying "Offline" while retrying: "Connecting" would
        // suggest the work is on its way when it is not.
        if !matches!(app.sync.snapshot().link, Link::Offline { .. }) {
            app.sync.set_link(Link::Connecting);
        }
        match round(&app, &e).await {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(reason) => {
                info!(%reason, "borough server not reachable; working offline");
                app.sync.set_link(Link::Offline { reason });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = app.sync.poke.notified() => {}
        }
        backoff = (backoff * 2).min(app.config.retry_max);
    }
}

struct Identity {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: DeviceKey,
}

fn identity(e: &Enrolment) -> Result<Identity, String> {
    let bad = |x: String| format!("this device's enrolment is damaged ({x}): enrol it again");
    Ok(Identity {
        ca: hex::decode(&e.ca).map_err(|x| bad(x.to_string()))?,
        cert: hex::decode(&e.certificate).map_err(|x| bad(x.to_string()))?,
        key: DeviceKey::from_pem(&e.key_pem).map_err(|x| bad(x.to_string()))?,
    })
}

async fn connect(
    e: &Enrolment,
    id: &Identity,
) -> Result<(quinn::Endpoint, quinn::Connection), String> {
    // The one connect timeout (`net::CONNECT_TIMEOUT`), as the CLI and the profile's sync have:
    // no answer in time is `NetError::Unreachable`, which says the work is saved here.
    net::connect(&e.server, &id.ca, &id.cert, &id.key)
        .await
        .map_err(|err| err.to_string())
}

async fn round(app: &Arc<App>, e: &Enrolment) -> Result<(), String> {
    let id = identity(e)?;
    let store = app.store().clone();

    // 1. Catch up.
    let (endpoint, conn) = connect(e, &id).await?;
    let mut session = new_session(&*store, false);
    let mut host = LiveHost::new(app.clone(), false);
    app.sync.set_link(Link::Syncing {
        settled: 0,
        total: 0,
    });
    let outcome = net::drive(&e.server, &conn, &mut session, &mut host, None).await;
    endpoint.close(0u32.into(), b"");
    if let Some(kept) = host.wiped.take() {
        // The session wiped the store (DocSet::wipe): the profile reads it again. A case kept
        // for a file only this device holds uploads it now, so the next round can wipe it.
        app.profile_changed();
        let takes_files = session
            .welcome()
            .is_some_and(|w| w.has(polyphony_core::sync::FEATURE_ATTACHMENTS));
        if takes_files && !kept.1 && !kept.0.is_empty() {
            upload_kept_files(&store, e, &id, &kept.0).await;
        }
        return Err(wiped_message(&kept));
    }
    save_states(&*store, &session);
    let _ = store.flush();
    let (code, message) = outcome.map_err(|x| x.to_string())?;
    if !host.moved.is_empty() {
        // Moved cases: let the core decide what to remove, with its own sync.
        let report = app.profile().await.sync(&mut |_| {}).await;
        app.profile_changed();
        return report.map(|_| ()).map_err(|x| x.to_string());
    }
    if code != ErrorCode::Done {
        return Err(format!("the server ended the sync: {message}"));
    }
    let takes_files = session
        .welcome()
        .is_some_and(|w| w.has(polyphony_core::sync::FEATURE_ATTACHMENTS));
    app.sync.synced_now();
    info!("caught up with the borough server; going live");

    // 2. Stay live.
    let (endpoint, conn) = connect(e, &id).await?;
    let (tx, rx) = mpsc::channel(1024);
    *lock(&app.sync.local) = Some(tx);
    *lock(&app.sync.awaiting_since) = None;
    let mut session = new_session(&*store, true);
    let mut host = LiveHost::new(app.clone(), true);
    app.sync.set_link(Link::Live);
    let outcome = tokio::select! {
        r = net::drive(&e.server, &conn, &mut session, &mut host, Some(rx)) => r.map_err(|x| x.to_string()),
        why = stalled(app) => Err(why),
        () = move_files(app, &e.server, &conn, takes_files) => unreachable!("moving files never ends"),
    };
    *lock(&app.sync.local) = None;
    endpoint.close(0u32.into(), b"");
    if let Some(kept) = host.wiped.take() {
        // Revocation ordered while live: the live session uploaded, then wiped.
        app.profile_changed();
        return Err(wiped_message(&kept));
    }
    save_states(&*store, &session);
    let _ = store.flush();
    match outcome {
        Ok((_, message)) => Err(format!("the server closed the live link: {message}")),
        Err(x) => Err(x),
    }
}

/// How long the app waits before trying again the files of a case that could not all move (the
/// device that attached one may not have uploaded it yet).
const FILES_RETRY: Duration = Duration::from_secs(10);

/// Move attachments' files on the live connection, beside the session, without holding the
/// profile: first every case's, then every two seconds those of the cases changed here or by the
/// server since, and every [`FILES_RETRY`] those of cases with files left to move. Never ends
/// (the session's end ends it); a failure is logged, and the files are tried again.
async fn move_files(app: &Arc<App>, addr: &str, conn: &quinn::Connection, takes_files: bool) {
    if !takes_files {
        return std::future::pending().await;
    }
    let store = app.store().clone();
    let mut cases: std::collections::BTreeSet<CaseId> =
        store.list_cases().unwrap_or_default().into_iter().collect();
    // Cases with files left to move, each with when to try again and the wait after that
    // (doubling to ten minutes: a file its device has not uploaded may take a day).
    let mut left: std::collections::BTreeMap<CaseId, (tokio::time::Instant, Duration)> =
        Default::default();
    loop {
        if !cases.is_empty() {
            let books = DeviceBooks::new(&*store);
            let fetching = !books.being_revoked().unwrap_or(true);
            match books.blob_work(cases.iter().copied(), fetching) {
                Ok(work) if !work.is_empty() => {
                    // What could not move (every case, when the connection failed) is tried again
                    // after a while, less often each time; a case with nothing left leaves the list.
                    let pending: std::collections::BTreeSet<CaseId> =
                        match polyphony_core::profile::move_blobs(&*store, addr, conn, work).await {
                            Ok(report) => {
                                for why in &report.failed {
                                    info!(%why, "an attachment could not move yet; tried again");
                                }
                                report.failed_cases.into_iter().collect()
                            }
                            Err(e) => {
                                warn!(error = %e, "attachments could not move; tried again later");
                                cases.clone()
                            }
                        };
                    let now = tokio::time::Instant::now();
                    for case in &cases {
                        app.touch(*case);
                        if pending.contains(case) {
                            let wait = left.get(case).map_or(FILES_RETRY, |(_, w)| {
                                (*w * 2).min(Duration::from_secs(600))
                            });
                            left.insert(*case, (now + wait, wait));
                        } else {
                            left.remove(case);
                        }
                    }
                }
                Ok(_) => {
                    for case in &cases {
                        left.remove(case);
                    }
                }
                Err(e) => warn!(error = %e, "could not list the attachments to move"),
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        cases = lock(&app.sync.files_due).drain().collect();
        let now = tokio::time::Instant::now();
        cases.extend(
            left.iter()
                .filter(|(_, (at, _))| *at <= now)
                .map(|(c, _)| *c),
        );
    }
}

/// A device being revoked: upload the files only it holds of the cases its wipe kept, on a
/// connection of its own (best effort; the next round tries again).
async fn upload_kept_files(store: &Arc<dyn Store>, e: &Enrolment, id: &Identity, kept: &[CaseId]) {
    let Ok((endpoint, conn)) = connect(e, id).await else {
        return;
    };
    let books = DeviceBooks::new(&**store);
    if let Ok(work) = books.blob_work(kept.iter().copied(), false) {
        if !work.is_empty() {
            if let Err(err) =
                polyphony_core::profile::move_blobs(&**store, &e.server, &conn, work).await
            {
                warn!(error = %err, "could not upload the files of the cases kept for them");
            }
        }
    }
    conn.close(0u32.into(), b"");
    endpoint.wait_idle().await;
}

/// What the badge says once a session wiped this device.
fn wiped_message((kept, revoked): &(Vec<CaseId>, bool)) -> String {
    if *revoked && !kept.is_empty() {
        format!(
            "this device was revoked by the borough: {} case(s) with changes the borough server does not have are kept on it, but it can no longer upload them: ask your administrator",
            kept.len()
        )
    } else if kept.is_empty() {
        "this device was revoked by the borough: its records are on the borough server and its enrolment was removed".into()
    } else {
        format!(
            "your administrator is revoking this device: {} case(s) with changes not yet on the borough server are kept and will be uploaded at the next sync",
            kept.len()
        )
    }
}

/// Resolves when a pushed change has waited too long for the server's acknowledgement.
async fn stalled(app: &Arc<App>) -> String {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let since = *lock(&app.sync.awaiting_since);
        if since.is_some_and(|s| s.elapsed() > STALL_AFTER) {
            warn!("the borough server stopped acknowledging changes; treating it as unreachable");
            return "the borough server stopped answering; your work is saved on this device and will sync later".into();
        }
    }
}

/// A session over what the device's books hold: its unsent reads, and each case's sync state
/// (unreadable books start the session afresh: slower, never wrong).
fn new_session(store: &dyn Store, live: bool) -> ClientSession {
    let books = DeviceBooks::new(store);
    ClientSession::new(
        live,
        books.offline_reads().unwrap_or_default(),
        books.sync_states().unwrap_or_default(),
    )
}

fn save_states(store: &dyn Store, session: &ClientSession) {
    let books = DeviceBooks::new(store);
    for (case, state) in session.states() {
        if let Err(e) = books.save_sync_state(case, state) {
            warn!(error = %e, "could not save a sync state (the next sync will take longer)");
        }
    }
}

/// A case's document as the store holds it, with its log's length; None if it is not held or
/// cannot be read (the session then leaves it alone).
fn load_doc(store: &dyn Store, case: &CaseId) -> Option<(AutoCommit, usize)> {
    DeviceBooks::new(store).load_doc(case).ok().flatten()
}

/// The documents a session syncs, kept apart from the profile's: loaded from the store, merged
/// with the store again when the app changed the case, and persisted to the store as changes
/// arrive. Each case's log is compacted by the profile's own rule
/// ([`DeviceBooks::compact_when_due`]), so a case open for a day of live pushes does not grow a log
/// of thousands of chunks.
struct LiveHost {
    app: Arc<App>,
    store: Arc<dyn Store>,
    docs: std::collections::HashMap<CaseId, AutoCommit>,
    /// Chunks in each case's log since its last snapshot (as far as this session knows).
    chunks: std::collections::HashMap<CaseId, usize>,
    live: bool,
    /// Set once the session wiped the store: the cases kept, and whether the server had already
    /// revoked the device (so they can no longer be uploaded from it).
    wiped: Option<(Vec<CaseId>, bool)>,
    moved: Vec<CaseId>,
}

impl LiveHost {
    fn new(app: Arc<App>, live: bool) -> Self {
        let store = app.store().clone();
        lock(&app.sync.dirty).clear();
        LiveHost {
            app,
            store,
            docs: Default::default(),
            chunks: Default::default(),
            live,
            wiped: None,
            moved: Vec::new(),
        }
    }
}

impl DocSet for LiveHost {
    fn cases(&self) -> Vec<CaseId> {
        let mut c: std::collections::BTreeSet<CaseId> = self
            .store
            .list_cases()
            .unwrap_or_default()
            .into_iter()
            .collect();
        c.extend(self.docs.keys().copied());
        c.into_iter().collect()
    }

    fn doc(&mut self, case: &CaseId) -> Option<&mut AutoCommit> {
        let changed_here = lock(&self.app.sync.dirty).remove(case);
        if !self.docs.contains_key(case) {
            let (doc, count) = load_doc(&*self.store, case)?;
            self.docs.insert(*case, doc);
            self.chunks.insert(*case, count);
        } else if changed_here {
            // The app saved an edit: take it in. Merging only adds changes, so nothing this
            // session applied (and may not have persisted yet) is lost.
            if let Some((mut fresh, count)) = load_doc(&*self.store, case) {
                self.chunks.insert(*case, count);
                if let Some(doc) = self.docs.get_mut(case) {
                    if let Err(e) = doc.merge(&mut fresh) {
                        warn!(error = %e, %case, "could not take in a local edit for sync");
                    }
                }
            }
        }
        self.docs.get_mut(case)
    }

    fn insert(&mut self, case: CaseId, doc: AutoCommit) {
        self.docs.insert(case, doc);
    }

    fn wipe(&mut self) -> Result<Vec<CaseId>, String> {
        let kept = DeviceBooks::new(&*self.store)
            .wipe_acknowledged()
            .map_err(|e| e.to_string())?;
        self.docs.retain(|c, _| kept.contains(c));
        // The pages' profile reads the wiped store again before anything else is shown.
        self.app.profile_changed();
        Ok(kept)
    }
}

impl SessionHost for LiveHost {
    fn act(&mut self, action: &Action) -> Result<(), StoreError> {
        let books = DeviceBooks::new(&*self.store);
        books.record(action)?;
        match action {
            Action::Persist { case, .. } => {
                // What the server sent is on this device's disk before the session goes on.
                self.store.flush()?;
                let count = self.chunks.entry(*case).or_insert(0);
                *count = books.compact_when_due(case, *count + 1);
                self.app.remote_change(*case);
                // Its record may name a file this device does not hold yet.
                lock(&self.app.sync.files_due).insert(*case);
            }
            Action::Acknowledged { case, .. } => {
                *lock(&self.app.sync.awaiting_since) = None;
                lock(&self.app.sync.state).refused.remove(case);
                // Open pages of the case refresh their sync tags.
                self.app.touch(*case);
            }
            // Open pages of the case refresh their "also on the trust hub".
            Action::AlsoOnHub { case, .. } => self.app.touch(*case),
            Action::Refused { case, refusal } => {
                lock(&self.app.sync.state)
                    .refused
                    .insert(*case, refusal.message.clone());
            }
            Action::Moved { case } => self.moved.push(*case),
            // Recorded first (above): from now on the app refuses edits to the case.
            Action::ToldMoved { case } => self.app.touch(*case),
            Action::Progress { settled, total } => {
                if self.live {
                    if settled == total {
                        self.app.sync.synced_now();
                    }
                } else {
                    self.app.sync.set_link(Link::Syncing {
                        settled: *settled,
                        total: *total,
                    });
                }
            }
            Action::Wiped { kept, revoked } => self.wiped = Some((kept.clone(), *revoked)),
            Action::Granted { .. }
            | Action::ReadsSaved { .. }
            | Action::RevocationOrdered(_)
            | Action::Colleagues(_)
            | Action::Send(_)
            | Action::Close { .. } => {}
        }
        Ok(())
    }
}
