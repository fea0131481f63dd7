//! The app's shared state: the device profile behind one lock, the launch gate, the background
//! sync's link, and the bookkeeping that keeps what the pages show in step with the store.
//!
//! The profile is not built to be shared between threads, so it lives behind a tokio mutex and
//! handlers hold the lock only for one profile call. The background sync does not take that lock
//! at all: it works on the store directly (which is thread-safe) and bumps a generation counter
//! when it stores changes from the server. The next handler to take the lock sees the counter moved
//! and reopens the profile over the same store, which drops the profile's in-memory copies of the
//! documents, so nothing shown is ever older than what is on disk.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use polyphony_core::model::LocalZone;
use polyphony_core::model::{CaseDoc, CaseView, ModelError};
use polyphony_core::profile::{Profile, ProfileError};
use polyphony_core::store::Store;
use polyphony_core::CaseId;
use time::OffsetDateTime;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use crate::auth::Gate;
use crate::status::SyncShared;
use crate::status::{CaseSyncLine, SyncOverview};

/// The store namespace where the app keeps its own small records. Earlier versions noted each
/// case's "unsynced since" time here; it is now read from the changes themselves
/// (`Profile::unsynced_since`).
pub const NS_APP: &str = "app";

/// How the app was started.
#[derive(Debug, Clone)]
pub struct Config {
    /// The profile's home directory.
    pub home: PathBuf,
    /// Where to listen (always a loopback address). Port 0: the port of this profile's last run
    /// (see [`crate::address`]), or a free one the first time.
    pub listen: SocketAddr,
    /// Forget the last run's port and name and pick new ones (a tab open from before cannot
    /// reach the app then).
    pub new_port: bool,
    /// Warn when a case's changes have been only on this device for longer than this.
    pub unsynced_warning: time::Duration,
    /// The time zone times are shown and read in (UK time unless set otherwise).
    pub zone: LocalZone,
    /// The longest wait between attempts to reach the server.
    pub retry_max: std::time::Duration,
    /// The name this device enrols under.
    pub device_name: String,
    /// Start the background sync (off in tests that need a quiet profile).
    pub background_sync: bool,
    /// The folder holding the Noto fonts the PDF copy is set in (None: Debian's
    /// fonts-noto-core folder, [`polyphony_core::export::person_copy::SYSTEM_FONT_DIR`]).
    pub font_dir: Option<PathBuf>,
}

impl Config {
    /// Defaults for a profile in `home`: a free loopback port, a two-hour warning, UK time.
    pub fn new(home: PathBuf) -> Self {
        Config {
            home,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            new_port: false,
            unsynced_warning: time::Duration::minutes(
                polyphony_core::model::work::DEFAULT_UNSYNCED_WARNING_MINUTES,
            ),
            zone: LocalZone::uk(),
            retry_max: std::time::Duration::from_secs(30),
            device_name: "Polyphony app".into(),
            background_sync: true,
            font_dir: None,
        }
    }
}

struct ProfileSlot {
    profile: Profile,
    seen: u64,
}

/// Everything the handlers and the background sync share.
pub struct App {
    /// How the app was started.
    pub config: Config,
    /// The launch secret and sessions.
    pub gate: Arc<Gate>,
    /// The background sync's link to the server.
    pub sync: SyncShared,
    /// Form tokens: each change applied once (see [`crate::once`]).
    pub forms: Arc<crate::once::Forms>,
    store: Arc<dyn Store>,
    profile: Mutex<ProfileSlot>,
    remote_gen: AtomicU64,
    case_gens: std::sync::Mutex<HashMap<CaseId, u64>>,
}

impl App {
    /// Share a profile with the handlers.
    pub fn new(config: Config, profile: Profile) -> Arc<App> {
        Self::with_gate(config, profile, Gate::new())
    }

    /// Share a profile, with a given launch gate (tests use a known secret).
    pub fn with_gate(config: Config, profile: Profile, gate: Gate) -> Arc<App> {
        let store = profile.store().clone();
        let gate = Arc::new(gate);
        Arc::new(App {
            config,
            forms: Arc::new(crate::once::Forms::new(store.clone(), gate.clone())),
            gate,
            sync: SyncShared::default(),
            store,
            profile: Mutex::new(ProfileSlot { profile, seen: 0 }),
            remote_gen: AtomicU64::new(0),
            case_gens: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The profile's store (for the background sync, which must not wait on the profile lock).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The profile, locked, and fresh: reopened if the background sync stored changes since the
    /// last time it was used.
    pub async fn profile(&self) -> MappedMutexGuard<'_, Profile> {
        let mut slot = self.profile.lock().await;
        let now = self.remote_gen.load(Ordering::SeqCst);
        if slot.seen != now {
            match Profile::from_store(&self.config.home, self.store.clone()) {
                Ok(p) => {
                    slot.profile = p;
                    slot.seen = now;
                }
                Err(e) => tracing::warn!(error = %e, "could not reopen the profile after a sync"),
            }
        }
        MutexGuard::map(slot, |s| &mut s.profile)
    }

    /// Change a case; the change is on disk when this returns, and pushed live if connected.
    pub async fn edit<R>(
        &self,
        case: CaseId,
        f: impl FnOnce(&mut CaseDoc) -> Result<R, ModelError>,
    ) -> Result<R, ProfileError> {
        let r = self.profile().await.edit(case, f)?;
        self.local_change(case);
        Ok(r)
    }

    /// A change was made on this device (an edit, a new case).
    pub fn local_change(&self, case: CaseId) {
        self.bump(case);
        self.sync.local_change(case);
    }

    /// The background sync stored changes from the server for `case`.
    pub fn remote_change(&self, case: CaseId) {
        self.bump(case);
        self.remote_gen.fetch_add(1, Ordering::SeqCst);
    }

    /// The profile must be reopened (after the core's own sync changed the store).
    pub fn profile_changed(&self) {
        self.remote_gen.fetch_add(1, Ordering::SeqCst);
    }

    /// Something about `case` changed that open pages should show (a new acknowledgement).
    pub fn touch(&self, case: CaseId) {
        self.bump(case);
    }

    fn bump(&self, case: CaseId) {
        *self
            .case_gens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(case)
            .or_default() += 1;
    }

    /// A counter that moves whenever `case` changes here or arrives changed from the server; live
    /// views poll it to know when to fetch the case again.
    pub fn case_gen(&self, case: CaseId) -> u64 {
        self.case_gens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&case)
            .copied()
            .unwrap_or(0)
    }

    /// A case for a live refresh of a page that is already open, and for naming people and cases
    /// in messages.
    ///
    /// Not audited (`Profile::lookup`): the page was audited when it was opened with
    /// `Profile::view`, and recording a read for every refresh would fill the access log with
    /// noise.
    pub async fn peek(&self, case: CaseId) -> Result<CaseView, ProfileError> {
        self.profile().await.lookup(case)
    }

    /// Where sync stands, from real state only: per-case unacknowledged changes (counted by the
    /// core against the heads the server acknowledged) and changes not yet on the trust hub (the
    /// same count against the hub's heads, when the borough has a hub), the link, the last
    /// completed sync.
    pub async fn overview(&self) -> SyncOverview {
        let link = self.sync.snapshot();
        let mut lines = Vec::new();
        let mut error = None;
        {
            let mut p = self.profile().await;
            match p.case_ids() {
                Ok(ids) => {
                    for case in ids {
                        match p
                            .unsynced(case)
                            .and_then(|n| Ok((n, p.unsynced_since(case)?, p.not_on_hub(case)?)))
                        {
                            Ok((n, since, not_on_hub)) => lines.push((case, n, since, not_on_hub)),
                            Err(e) => error = Some(e.to_string()),
                        }
                    }
                }
                Err(e) => error = Some(e.to_string()),
            }
        }
        let now = OffsetDateTime::now_utc();
        let mut cases = Vec::new();
        for (case, unsynced, since, not_on_hub) in lines {
            let stale = since.is_some_and(|s| now - s > self.config.unsynced_warning);
            cases.push(CaseSyncLine {
                case,
                unsynced,
                not_on_hub,
                since,
                stale,
                refused: link.refused.get(&case).cloned(),
            });
        }
        SyncOverview {
            unsynced_total: cases.iter().map(|c| c.unsynced).sum(),
            // Counted only if every case was (a total with a case missing claims nothing), and
            // only of cases: with none held there is nothing to say about a hub.
            not_on_hub_total: if cases.is_empty() {
                None
            } else {
                cases.iter().map(|c| c.not_on_hub).sum()
            },
            cases,
            link,
            warning_after: self.config.unsynced_warning,
            now,
            error,
        }
    }
}
