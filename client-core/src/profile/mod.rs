//! A practitioner's device profile: the encrypted store, the device's identity and enrolment, and
//! the case work the CLI and the app offer, all offline.
//!
//! Every edit is saved (appended and flushed) before the call returns, so "saved" on screen means
//! on disk. What the borough server has acknowledged is tracked per case, so "unsynced" is exact:
//! it counts the changes the server has not confirmed as durable, never guesses from timestamps.
//! When the borough passes its cases on to a trust hub, the hub's acknowledgement (as the borough
//! relays it) is tracked beside it, counted the same way: "not yet on the trust hub".
//! Reads are audited too: each view of a case made on the device is queued and uploaded with the
//! next sync, so the person's access log is complete.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use automerge::{AutoCommit, ChangeHash};
use serde::{Deserialize, Serialize};

use crate::identity::{DeviceKey, EnrolmentCode};
use crate::model::work::{self, WorkItem, WorkKind, WORK_READ};
use crate::model::{format_instant, CaseDoc, CaseView, MeetingState, ModelError, NewCase};
use crate::model::{Author, LocalZone};
use crate::net::{self, NetError, SessionHost};
use crate::store::{KeySource, SledOptions, SledStore, Store, StoreError};
use crate::sync::{self, Action, ClientSession, DocSet, ErrorCode, OfflineRead, TeamInfo};
use crate::{CaseId, DeviceId, EntryId, PractitionerId, TeamId};

mod attachments;
mod books;
mod colleagues;
mod referrals;

pub use attachments::{move_blobs, AttachFile, BlobReport, BlobState, BlobWork};
use books::{not_covered, write_gate, HUB_REPORTED_KEY, LOG_READS, NS_ACCESSES, NS_MOVED_AWAY};
pub use books::{DeviceBooks, COMPACT_AFTER};

const NS_PROFILE: &str = "profile";
/// The newest signed audit head seen (in [`NS_PROFILE`]).
const AUDIT_HEAD_KEY: &str = "audit_head";
/// The audit heads kept (in [`NS_PROFILE`]).
const AUDIT_HISTORY_KEY: &str = "audit_heads";
/// Set (in [`NS_PROFILE`]) while the server is revoking this device: it takes no new entries.
const REVOKING_KEY: &str = "revoking";
/// Where a practitioner's profile lives when no folder is given: the platform's data folder for
/// Polyphony (on Linux `~/.local/share/polyphony`), the same for the CLI and the app, so both open
/// the one profile. The CLI used to ask for it without the `uk.nhs` qualifier, which names a
/// different folder on macOS: a profile found only there is still used. `None` when the platform
/// has no home folder for this user.
pub fn default_home() -> Option<std::path::PathBuf> {
    let current = directories::ProjectDirs::from("uk.nhs", "Polyphony", "polyphony")?
        .data_dir()
        .to_path_buf();
    let earlier = directories::ProjectDirs::from("", "Polyphony", "polyphony")
        .map(|d| d.data_dir().to_path_buf());
    Some(home_to_use(current, earlier))
}

/// The current folder, unless only the earlier one holds a profile.
fn home_to_use(current: PathBuf, earlier: Option<PathBuf>) -> PathBuf {
    match earlier {
        Some(earlier) if !Profile::exists(&current) && Profile::exists(&earlier) => earlier,
        _ => current,
    }
}

/// The IANA name of the zone this device shows and reads times in (in [`NS_PROFILE`]); absent
/// means Europe/London.
const TIME_ZONE_KEY: &str = "time_zone";
/// How many audit heads a device keeps (about 200 bytes each).
pub const AUDIT_HISTORY_MAX: usize = 512;

/// Who has accessed a case, as last fetched from the borough server's audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessList {
    /// When it was fetched (RFC 3339).
    pub fetched_at: String,
    /// The accesses, oldest first.
    pub entries: Vec<crate::export::Access>,
}

/// What can go wrong with the profile, in words a practitioner can act on.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The store failed (wrong passphrase, disk full, in use...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The record refused the change.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The network failed; local work is safe.
    #[error(transparent)]
    Net(#[from] NetError),
    /// This device is not enrolled yet.
    #[error("this device is not enrolled with a borough server yet: run `polyphony enrol SERVER CODE` with a code from your administrator")]
    NotEnrolled,
    /// This device is enrolled already.
    #[error("this device is already enrolled with {0}")]
    AlreadyEnrolled(String),
    /// The enrolment code is malformed.
    #[error("{0}")]
    BadCode(String),
    /// No case matches.
    #[error("no case matches '{0}' on this device (see `polyphony case list`)")]
    UnknownCase(String),
    /// Several cases match.
    #[error("'{0}' matches more than one case: give more of the id")]
    AmbiguousCase(String),
    /// No entry matches.
    #[error("no entry matches '{id}' in this case (see `polyphony case show {case}`)")]
    UnknownEntry {
        /// What was given.
        id: String,
        /// The case.
        case: String,
    },
    /// A team must be chosen.
    #[error("{0}")]
    Team(String),
    /// The stored profile is damaged.
    #[error("the profile data is damaged: {0}")]
    Corrupt(String),
    /// The administrator is revoking this device: nothing new is written on it.
    #[error("your administrator is revoking this device, so it takes no new entries: what it holds is uploaded at its next sync, then wiped. Write this on another device")]
    BeingRevoked,
    /// The network copy was refused (the member's consent is not given, or they are not in the
    /// network).
    #[error(transparent)]
    NetworkCopy(#[from] crate::export::network_copy::NetworkCopyError),
    /// The server said the case is no longer this device's team's: nothing more can be added.
    #[error("this case is now with another team (it moved, or you left its team: the borough server told this device at {since}), so nothing more can be added to it here: the server accepts from this device only what was written before it was told. What you wrote before then is safe on this device and is uploaded at your next sync; ask the case's new team to record anything new")]
    MovedAway {
        /// The case.
        case: CaseId,
        /// When this device was told (RFC 3339, this device's clock).
        since: String,
    },
}

/// This device's enrolment with a borough server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrolment {
    /// The server's address (host:port): the one it enrolled with, or the one that answered
    /// last; tried first.
    pub server: String,
    /// Every address the borough's server nodes answer at, when it has more than one (told at
    /// enrolment and at each sync, at most [`MAX_SERVER_ADDRESSES`]): tried in turn after
    /// `server` when it does not answer. Absent from enrolments made before the field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// This device's name.
    pub device_name: String,
    /// The practitioner.
    pub practitioner: PractitionerId,
    /// Their name.
    pub practitioner_name: String,
    /// Their teams.
    pub teams: Vec<TeamInfo>,
    /// The borough CA, hex DER.
    pub ca: String,
    /// This device's certificate, hex DER.
    pub certificate: String,
    /// This device's private key (PEM); it never leaves the encrypted store.
    pub key_pem: String,
    /// When (RFC 3339).
    pub enrolled_at: String,
}

/// The most server addresses a device keeps (a borough runs two or three nodes; a longer list
/// from a misconfigured server is cut, never trusted to grow without bound).
pub const MAX_SERVER_ADDRESSES: usize = 8;

/// The longest server address a device keeps (`host:port`).
const MAX_ADDRESS_LEN: usize = 255;

impl Enrolment {
    /// The addresses to try, in order: `server`, then the others it was told, each once.
    pub fn addresses(&self) -> Vec<String> {
        let mut out = vec![self.server.clone()];
        for a in &self.servers {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }
}

/// A server's list of addresses as a device keeps it: blank and overlong entries dropped,
/// duplicates removed, at most [`MAX_SERVER_ADDRESSES`].
fn kept_addresses(told: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in told {
        let a = a.trim();
        if !a.is_empty() && a.len() <= MAX_ADDRESS_LEN && !out.iter().any(|o| o == a) {
            out.push(a.to_string());
        }
        if out.len() == MAX_SERVER_ADDRESSES {
            break;
        }
    }
    out
}

/// One line of the caseload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseSummary {
    /// Case id.
    pub case_id: String,
    /// The person's name.
    pub name: String,
    /// Team id.
    pub team_id: String,
    /// Changes made on this device (or received) that the server has not acknowledged.
    pub unsynced_changes: usize,
    /// Changes the borough's trust hub has not acknowledged, as the borough last said (these
    /// include the `unsynced_changes`: what is not on the borough server is not on the hub
    /// either). None when the borough server has never said it has a hub
    /// ([`DeviceBooks::hub_reported`]), or the case could not be opened.
    #[serde(default)]
    pub not_on_hub: Option<usize>,
    /// Fields with concurrent values to choose between.
    pub conflicts: usize,
    /// The most recent meeting (RFC 3339).
    pub last_meeting: Option<String>,
    /// The next planned meeting (RFC 3339).
    pub next_meeting: Option<String>,
    /// When the first network meeting of the case's open episode is due, while none has been
    /// held (RFC 3339; by the referral's urgency, or 24 hours when none is recorded).
    #[serde(default)]
    pub first_meeting_due: Option<String>,
    /// The urgency of that episode's referral, as a person reads it ("Urgent (24 hours)").
    #[serde(default)]
    pub urgency: Option<String>,
    /// The first network meeting of the case's latest episode, once held (RFC 3339).
    #[serde(default)]
    pub first_meeting: Option<String>,
    /// The case's latest episode is closed.
    #[serde(default)]
    pub episode_closed: bool,
}

/// The outcome of the last sync attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSync {
    /// When it ended (RFC 3339).
    pub at: String,
    /// Whether it completed.
    pub ok: bool,
    /// What happened, in words.
    pub message: String,
}

/// Where this device stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// This device.
    pub device: String,
    /// The server, if enrolled.
    pub server: Option<String>,
    /// The practitioner, if enrolled.
    pub practitioner: Option<String>,
    /// The last sync attempt.
    pub last_sync: Option<LastSync>,
    /// The last sync that completed.
    pub last_successful_sync: Option<String>,
    /// Per case.
    pub cases: Vec<CaseSummary>,
    /// Sum of unsynced changes.
    pub unsynced_changes: usize,
    /// Sum of the cases' changes not yet on the trust hub (as of the last sync); None when the
    /// borough server has never said it has a hub, so nothing is said about one.
    #[serde(default)]
    pub not_on_hub: Option<usize>,
    /// Reads made offline not yet in the server's audit log.
    pub unsent_reads: usize,
}

/// Progress of a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncProgress {
    /// Cases settled.
    pub settled: usize,
    /// Cases in the session.
    pub total: usize,
}

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// Cases in the session.
    pub cases: usize,
    /// Cases the server refused, with why.
    pub refused: Vec<(String, String)>,
    /// Cases that moved to another team (their changes are on the server; the local copy was
    /// removed only if nothing was left unsynced).
    pub moved: Vec<String>,
    /// True if the server revoked this device and the store was wiped.
    pub wiped: bool,
    /// Cases kept despite a wipe or a move because they still had unsynced changes.
    pub kept_unsynced: Vec<String>,
    /// Unsynced changes left after the sync.
    pub unsynced_changes: usize,
    /// The server's audit log is shorter than, or different from, a head it signed earlier
    /// (kept by this device): what to tell the information governance lead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_warning: Option<String>,
    /// What was done with attachments (after the records: their bytes on streams of their own).
    #[serde(default)]
    pub attachments: BlobReport,
}

/// A device profile.
pub struct Profile {
    home: PathBuf,
    store: Arc<dyn Store>,
    device: DeviceId,
    enrolment: Option<Enrolment>,
    docs: HashMap<CaseId, AutoCommit>,
    /// Chunks in each loaded case's log since its last snapshot.
    chunks: HashMap<CaseId, usize>,
    /// Why the store's key upgrade could not run when the profile was opened (see
    /// [`Profile::upgrade_pending`]).
    upgrade_pending: Option<String>,
}

/// Thin a full list of kept audit heads (oldest first) to at most half of
/// [`AUDIT_HISTORY_MAX`], spread evenly over the records they cover: the first and the newest
/// stay, and for each of the evenly spaced points between them, the kept head nearest to it.
///
/// Evenly over the records, not over the list: halving the list instead (every other head)
/// thins the oldest heads again at every thinning, so after a few thousand heads nothing between
/// the first and the last two thousand or so was left (found past the limit by
/// `audit_heads_past_the_history_limit_are_thinned_evenly_and_reopen_from_disk`).
fn thin_evenly(kept: &[crate::identity::AuditHead]) -> Vec<crate::identity::AuditHead> {
    let (Some(first), Some(last)) = (kept.first(), kept.last()) else {
        return Vec::new();
    };
    let points = (AUDIT_HISTORY_MAX / 2) as u128;
    let (start, span) = (first.records, last.records.saturating_sub(first.records));
    let mut keep = vec![false; kept.len()];
    keep[0] = true;
    keep[kept.len() - 1] = true;
    let mut j = 0;
    for i in 1..points - 1 {
        // u128: the product of a record count and a point number cannot overflow.
        let point = start + (span as u128 * i / (points - 1)) as u64;
        while j + 1 < kept.len() && kept[j + 1].records <= point {
            j += 1;
        }
        let after_is_nearer = kept
            .get(j + 1)
            .is_some_and(|next| next.records - point < point.saturating_sub(kept[j].records));
        keep[if after_is_nearer { j + 1 } else { j }] = true;
    }
    kept.iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(h, _)| h.clone())
        .collect()
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn now_string() -> String {
    format_instant(time::OffsetDateTime::now_utc())
}

impl Profile {
    /// Open the profile in `home`, creating it (and this device's id) on first use.
    pub fn open(home: &Path, passphrase: &str) -> Result<Profile, ProfileError> {
        Self::open_with(home, KeySource::Passphrase(passphrase.to_string()))
    }

    /// Open with any key source (a key file, for unattended use).
    ///
    /// A profile made before key wrapping (or with weaker argon2id parameters than today's) is
    /// upgraded on the way: its records re-sealed under a new data key, wrapped under today's
    /// parameters. If the upgrade cannot run (a full disk), the profile opens as it was and
    /// [`Profile::upgrade_pending`] says why; the next open tries again.
    pub fn open_with(home: &Path, key: KeySource) -> Result<Profile, ProfileError> {
        std::fs::create_dir_all(home).map_err(StoreError::Io)?;
        crate::store::make_private(home)?;
        let store = SledStore::open(&Self::store_dir(home), key)?;
        let upgrade_pending = store.upgrade_pending().map(str::to_owned);
        let mut profile = Self::from_store(home, Arc::new(store))?;
        profile.upgrade_pending = upgrade_pending;
        Ok(profile)
    }

    /// Whether a profile has been set up in `home` (so its passphrase is to be asked for, not
    /// chosen).
    pub fn exists(home: &Path) -> bool {
        SledStore::exists(&Self::store_dir(home))
    }

    /// Change the passphrase of the profile in `home`, which must not be open. Every record is
    /// re-sealed under a new data key, wrapped under the new passphrase (so the old passphrase,
    /// even with an older copy of the profile, opens nothing written from now on). If this fails
    /// or is interrupted, the current passphrase still opens the profile, with everything in it.
    pub fn change_passphrase(home: &Path, current: &str, new: &str) -> Result<(), ProfileError> {
        Ok(SledStore::change_key(
            &Self::store_dir(home),
            KeySource::Passphrase(current.to_string()),
            KeySource::Passphrase(new.to_string()),
            SledOptions::default(),
        )?)
    }

    /// Why the store's key upgrade (see [`Profile::open_with`]) could not run when this profile
    /// was opened, if it could not: show it to the practitioner. Nothing is lost meanwhile.
    pub fn upgrade_pending(&self) -> Option<&str> {
        self.upgrade_pending.as_deref()
    }

    fn store_dir(home: &Path) -> PathBuf {
        home.join("store")
    }

    /// A profile over an already-open store (tests, embedding).
    pub fn from_store(home: &Path, store: Arc<dyn Store>) -> Result<Profile, ProfileError> {
        let device = match store.get_meta(NS_PROFILE, "device")? {
            Some(b) => String::from_utf8_lossy(&b)
                .parse()
                .map_err(|e: crate::ids::BadId| ProfileError::Corrupt(e.to_string()))?,
            None => {
                let d = DeviceId::random();
                store.put_meta(NS_PROFILE, "device", d.to_string().as_bytes())?;
                store.flush()?;
                d
            }
        };
        let enrolment = match store.get_meta(NS_PROFILE, "enrolment")? {
            Some(b) => {
                Some(serde_json::from_slice(&b).map_err(|e| ProfileError::Corrupt(e.to_string()))?)
            }
            None => None,
        };
        Ok(Profile {
            home: home.to_path_buf(),
            store,
            device,
            enrolment,
            docs: HashMap::new(),
            chunks: HashMap::new(),
            upgrade_pending: None,
        })
    }

    /// The underlying store (for tools and tests that inspect it).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Where the profile lives.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// This device's id.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// The enrolment, if any.
    pub fn enrolment(&self) -> Option<&Enrolment> {
        self.enrolment.as_ref()
    }

    /// Who signs changes made here.
    pub fn author(&self) -> Result<Author, ProfileError> {
        let e = self.enrolment.as_ref().ok_or(ProfileError::NotEnrolled)?;
        Ok(Author {
            practitioner: e.practitioner,
            practitioner_name: e.practitioner_name.clone(),
            device: self.device,
        })
    }

    /// Enrol this device with a borough server using an administrator's one-time code.
    pub async fn enrol(
        &mut self,
        server: &str,
        code: &str,
        device_name: &str,
    ) -> Result<&Enrolment, ProfileError> {
        if let Some(e) = &self.enrolment {
            return Err(ProfileError::AlreadyEnrolled(e.server.clone()));
        }
        let code: EnrolmentCode = code
            .parse()
            .map_err(|e: crate::identity::IdentityError| ProfileError::BadCode(e.to_string()))?;
        let key = DeviceKey::generate().map_err(NetError::from)?;
        let enrolled = net::enrol(server, &code, self.device, device_name, &key).await?;
        let e = Enrolment {
            server: server.to_string(),
            servers: kept_addresses(&enrolled.servers),
            device_name: device_name.to_string(),
            practitioner: enrolled.practitioner,
            practitioner_name: enrolled.practitioner_name,
            teams: enrolled.teams,
            ca: enrolled.ca,
            certificate: enrolled.certificate,
            key_pem: key.to_pem(),
            enrolled_at: now_string(),
        };
        let bytes = serde_json::to_vec(&e).map_err(|e| ProfileError::Corrupt(e.to_string()))?;
        self.store.put_meta(NS_PROFILE, "enrolment", &bytes)?;
        // A new enrolment starts afresh: a revocation of an earlier one no longer applies, nor
        // what the earlier borough said about a trust hub (this one says so itself if it has one).
        self.store.delete_meta(NS_PROFILE, REVOKING_KEY)?;
        self.store.delete_meta(NS_PROFILE, HUB_REPORTED_KEY)?;
        self.store.flush()?;
        self.enrolment = Some(e);
        Ok(self.enrolment.as_ref().expect("just set"))
    }

    // ------------------------------------------------------------------------------ cases

    /// Every case held on this device.
    pub fn case_ids(&self) -> Result<Vec<CaseId>, ProfileError> {
        Ok(self.store.list_cases()?)
    }

    /// Find a case by its full id or a unique prefix of it.
    pub fn find_case(&self, given: &str) -> Result<CaseId, ProfileError> {
        let g = given.trim().to_ascii_lowercase();
        if let Ok(id) = g.parse::<CaseId>() {
            if self.store.list_cases()?.contains(&id) {
                return Ok(id);
            }
            return Err(ProfileError::UnknownCase(given.to_string()));
        }
        if g.len() < 4 {
            return Err(ProfileError::UnknownCase(given.to_string()));
        }
        let matches: Vec<CaseId> = self
            .store
            .list_cases()?
            .into_iter()
            .filter(|c| c.to_string().starts_with(&g))
            .collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(ProfileError::UnknownCase(given.to_string())),
            _ => Err(ProfileError::AmbiguousCase(given.to_string())),
        }
    }

    /// Find an entry of a case by its full id or a unique prefix.
    pub fn find_entry(&mut self, case: CaseId, given: &str) -> Result<EntryId, ProfileError> {
        let g = given.trim().to_ascii_lowercase();
        let view = self.view_unaudited(case)?;
        let mut ids: BTreeSet<String> = BTreeSet::new();
        ids.extend(view.network.iter().map(|m| m.meta.id.to_string()));
        ids.extend(view.care_team.iter().map(|m| m.meta.id.to_string()));
        ids.extend(view.meetings.iter().map(|m| m.meta.id.to_string()));
        for d in &view.decisions {
            ids.insert(d.meta.id.to_string());
            ids.extend(d.actions.iter().map(|a| a.meta.id.to_string()));
        }
        ids.extend(view.crisis_plan.items.iter().map(|i| i.meta.id.to_string()));
        ids.extend(view.team_notes.iter().map(|n| n.meta.id.to_string()));
        ids.extend(view.attachments.iter().map(|a| a.meta.id.to_string()));
        ids.extend(view.referrals.iter().map(|r| r.meta.id.to_string()));
        let unknown = || ProfileError::UnknownEntry {
            id: given.to_string(),
            case: case.to_string(),
        };
        let matches: Vec<&String> = if g.len() >= 4 {
            ids.iter().filter(|i| i.starts_with(&g)).collect()
        } else {
            vec![]
        };
        match matches.as_slice() {
            [one] => one.parse().map_err(|_| unknown()),
            _ => Err(unknown()),
        }
    }

    fn load(&mut self, case: CaseId) -> Result<&mut AutoCommit, ProfileError> {
        if !self.docs.contains_key(&case) {
            let (doc, chunks) = self
                .books()
                .load_doc(&case)?
                .ok_or_else(|| ProfileError::UnknownCase(case.to_string()))?;
            self.chunks.insert(case, chunks);
            self.docs.insert(case, doc);
        }
        Ok(self.docs.get_mut(&case).expect("loaded above"))
    }

    /// Open a new case. With several teams, `team` (a name or id) says which one owns it.
    pub fn create_case(
        &mut self,
        new: NewCase,
        team: Option<&str>,
    ) -> Result<CaseId, ProfileError> {
        self.create_case_with(new, team, |_, _, _| Ok(()))
            .map(|(case, ())| case)
    }

    /// Open a new case and make `first` changes to it (its referral, say) before anything is
    /// saved: the case is on disk with them, or not at all.
    pub(super) fn create_case_with<R>(
        &mut self,
        new: NewCase,
        team: Option<&str>,
        first: impl FnOnce(&mut Self, CaseId, &mut CaseDoc) -> Result<R, ProfileError>,
    ) -> Result<(CaseId, R), ProfileError> {
        let author = self.author()?;
        let _gate = write_gate();
        if self.being_revoked()? {
            return Err(ProfileError::BeingRevoked);
        }
        let teams = &self
            .enrolment
            .as_ref()
            .ok_or(ProfileError::NotEnrolled)?
            .teams;
        let team: TeamId = match (team, teams.as_slice()) {
            (None, [only]) => only.id,
            (None, []) => {
                return Err(ProfileError::Team(
                    "your practitioner account has no team: ask your administrator".into(),
                ))
            }
            (None, _) => {
                let names: Vec<&str> = teams.iter().map(|t| t.name.as_str()).collect();
                return Err(ProfileError::Team(format!(
                    "you are in several teams: choose one with --team ({})",
                    names.join(", ")
                )));
            }
            (Some(t), _) => teams
                .iter()
                .find(|x| x.name.eq_ignore_ascii_case(t) || x.id.to_string() == t)
                .map(|x| x.id)
                .ok_or_else(|| ProfileError::Team(format!("you are not in a team called '{t}'")))?,
        };
        let case = CaseId::random();
        let mut doc = CaseDoc::create(case, team, new, author)?;
        let made = first(self, case, &mut doc)?;
        let bytes = doc.save();
        self.store.append_chunk(&case, &bytes)?;
        self.store.flush()?;
        self.docs.insert(case, doc.into_automerge());
        Ok((case, made))
    }

    /// Change a case. The change is on disk when this returns; if saving fails, the in-memory copy
    /// is dropped so nothing unsaved is ever shown as saved.
    pub fn edit<R>(
        &mut self,
        case: CaseId,
        f: impl FnOnce(&mut CaseDoc) -> Result<R, ModelError>,
    ) -> Result<R, ProfileError> {
        let author = self.author()?;
        let _gate = write_gate();
        if self.being_revoked()? {
            return Err(ProfileError::BeingRevoked);
        }
        // Read from the store, not kept in memory: the app's background sync records it too.
        if let Some(since) = self.moved_away(case)? {
            return Err(ProfileError::MovedAway { case, since });
        }
        let doc = self.load(case)?.clone();
        let mut cd = CaseDoc::from_automerge(doc, Some(author))?;
        let before = cd.heads();
        let r = f(&mut cd)?;
        let after = cd.heads();
        if before != after {
            let chunk = cd.automerge_mut().save_after(&before);
            let saved = self
                .store
                .append_chunk(&case, &chunk)
                .and_then(|_| self.store.flush());
            if let Err(e) = saved {
                self.docs.remove(&case);
                return Err(e.into());
            }
            self.docs.insert(case, cd.into_automerge());
            self.appended(case);
        }
        Ok(r)
    }

    /// A case for resolving ids and names inside the app (which member is "Ana", which entry an
    /// id prefix means). Not audited, so never use it to show the record to a person: use
    /// [`Profile::view`] for that.
    pub fn lookup(&mut self, case: CaseId) -> Result<CaseView, ProfileError> {
        self.view_unaudited(case)
    }

    /// Count an appended chunk; compact the case's log once it is long (see
    /// [`DeviceBooks::compact_when_due`]).
    fn appended(&mut self, case: CaseId) {
        let books = DeviceBooks::new(&*self.store);
        let count = self.chunks.entry(case).or_insert(0);
        *count = books.compact_when_due(&case, *count + 1);
    }

    /// Since when `case` has had changes written on this device that the server has not
    /// acknowledged (none: nothing of this device's is waiting). Read from the changes
    /// themselves ([`books::unsynced_since_in`]), so it is right however much the server has
    /// acknowledged, and reading it writes nothing.
    pub fn unsynced_since(
        &mut self,
        case: CaseId,
    ) -> Result<Option<crate::model::Instant>, ProfileError> {
        let acked = self.acked(case)?;
        let device = self.device;
        let store = std::sync::Arc::clone(&self.store);
        let books = DeviceBooks::new(&*store);
        let doc = self.load(case)?;
        books::unsynced_since_in(&books, &case, doc, &acked, &device)
    }

    /// The morning list: the work due on every case on this device at `now`, days counted on
    /// the calendar of `zone` (see [`crate::model::work::due_work`]; "mine" is the enrolled
    /// practitioner's); one line for each case whose changes have been only on this device for
    /// longer than `warning`; and one for each case that could not be opened. Sorted most overdue
    /// first. A crisis plan due for review is listed from its review date ([`work::reviews_due`]).
    ///
    /// Reads only, and records nothing: a screen that shows the items' text records the reads
    /// with [`Profile::record_work_reads`] (the caseload's count shows no text, and does not).
    pub fn due_work(
        &mut self,
        now: crate::model::Instant,
        zone: &LocalZone,
        warning: time::Duration,
    ) -> Result<Vec<WorkItem>, ProfileError> {
        let me = self.enrolment.as_ref().map(|e| e.practitioner);
        let mut items = Vec::new();
        for case in self.store.list_cases()? {
            // As in the caseload, a case that cannot be opened must not hide the others' work,
            // nor vanish: it is listed with what went wrong.
            let opened = self.unsynced(case).and_then(|n| {
                let since = self.unsynced_since(case)?;
                Ok((n, since, self.view_unaudited(case)?))
            });
            let (unsynced, since, view) = match opened {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(%case, error = %e, "a case could not be opened for its due work");
                    items.push(WorkItem::of_this_device(
                        case.to_string(),
                        String::new(),
                        WorkKind::Unreadable,
                        format!("This case could not be opened: {e}"),
                    ));
                    continue;
                }
            };
            items.extend(work::due_work(&view, me, zone, now));
            if let Some(since) = since.filter(|s| now - *s > warning) {
                let text = format!(
                    "{} only on this device: sync to send {}",
                    plural(unsynced, "change"),
                    if unsynced == 1 { "it" } else { "them" }
                );
                items.push(WorkItem {
                    at: Some(format_instant(since)),
                    days_overdue: (zone.date(now) - zone.date(since)).whole_days().max(0),
                    ..WorkItem::of_this_device(
                        view.case_id.clone(),
                        view.person.name.clone(),
                        WorkKind::Unsynced,
                        text,
                    )
                });
            }
        }
        work::sort_work(&mut items, work::WorkOrder::Due);
        Ok(items)
    }

    /// Record, as a read of each case, that `items` (as shown) put text from the case on a
    /// screen: one read per case that has an item with the case's own text
    /// ([`WorkItem::shows_case_text`]), with `what` "needs attention list", as
    /// [`Profile::view`] records a read. It reaches the audit and the person's access list at
    /// the next sync.
    pub fn record_work_reads(&mut self, items: &[WorkItem]) -> Result<(), ProfileError> {
        let mut cases: Vec<CaseId> = items
            .iter()
            .filter(|i| i.shows_case_text())
            .filter_map(|i| i.case_id.parse().ok())
            .collect();
        cases.sort();
        cases.dedup();
        for case in cases {
            self.record_read(case, WORK_READ)?;
        }
        Ok(())
    }

    /// This device's sync records ([`DeviceBooks`]).
    pub fn books(&self) -> DeviceBooks<'_> {
        DeviceBooks::new(&*self.store)
    }

    fn view_unaudited(&mut self, case: CaseId) -> Result<CaseView, ProfileError> {
        let doc = self.load(case)?.clone();
        Ok(CaseDoc::from_automerge(doc, None)?.view())
    }

    /// A case, for display. The read is recorded in the access log (uploaded at the next sync).
    pub fn view(&mut self, case: CaseId, what: &str) -> Result<CaseView, ProfileError> {
        let v = self.view_unaudited(case)?;
        self.record_read(case, what)?;
        Ok(v)
    }

    /// A case to export as a file of `kind`. The file leaves the encrypted store, so the export
    /// is recorded with its kind, like a read (see [`crate::export::access`]).
    pub fn export_view(
        &mut self,
        case: CaseId,
        kind: crate::export::access::ExportKind,
    ) -> Result<CaseView, ProfileError> {
        self.view(case, kind.purpose())
    }

    /// The network copy of a case for one member of the person's network (`member`: their id),
    /// refused unless the person's consent for that member to receive the record is given.
    ///
    /// Giving it is a disclosure, recorded in this device's reads log as every read is: who gave
    /// it (this device and its practitioner), to whom (the member's id and name) and when. The
    /// next sync carries it into the server's audit, and so into the person's access list. A
    /// refusal discloses nothing and records nothing.
    pub fn give_network_copy(
        &mut self,
        case: CaseId,
        member: &str,
    ) -> Result<crate::export::network_copy::NetworkCopy, ProfileError> {
        let view = self.view_unaudited(case)?;
        let copy = crate::export::network_copy::for_member(
            &view,
            member,
            time::OffsetDateTime::now_utc(),
        )?;
        self.record_read(case, &copy.purpose())?;
        Ok(copy)
    }

    /// Record that this device's user looked at a case (for the person's access log).
    pub fn record_read(&mut self, case: CaseId, what: &str) -> Result<(), ProfileError> {
        let entry = serde_json::json!({ "case": case, "at": now_string(), "what": what });
        self.store
            .append_log(LOG_READS, entry.to_string().as_bytes())?;
        self.store.flush()?;
        Ok(())
    }

    /// When the server told this device that `case` is no longer its team's, if it did (and has
    /// not granted it again since): such a case is kept until what was written on it is
    /// uploaded, and cannot be edited.
    pub fn moved_away(&self, case: CaseId) -> Result<Option<String>, ProfileError> {
        Ok(self
            .store
            .get_meta(NS_MOVED_AWAY, &case.to_string())?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Changes of a case the server has not acknowledged.
    pub fn unsynced(&mut self, case: CaseId) -> Result<usize, ProfileError> {
        let acked = self.acked(case)?;
        Ok(not_covered(self.load(case)?, &acked))
    }

    /// Changes of a case the borough's trust hub has not acknowledged, as of the last hub receipt
    /// the borough sent (see [`DeviceBooks::not_on_hub`]); None when the borough has never said
    /// it has a hub.
    pub fn not_on_hub(&mut self, case: CaseId) -> Result<Option<usize>, ProfileError> {
        let books = self.books();
        if !books.hub_reported()? {
            return Ok(None);
        }
        let heads = books.hub_acknowledged(&case)?;
        Ok(Some(not_covered(self.load(case)?, &heads)))
    }

    /// The heads the borough server has confirmed as durable for a case (empty if none yet).
    pub fn acknowledged_heads(&self, case: CaseId) -> Result<Vec<ChangeHash>, ProfileError> {
        self.acked(case)
    }

    /// The case's automerge document as held here.
    pub fn document(&mut self, case: CaseId) -> Result<AutoCommit, ProfileError> {
        Ok(self.load(case)?.clone())
    }

    fn acked(&self, case: CaseId) -> Result<Vec<ChangeHash>, ProfileError> {
        Ok(self.books().acknowledged(&case)?)
    }

    /// The caseload, with unsynced changes and conflicts per case.
    pub fn cases(&mut self) -> Result<Vec<CaseSummary>, ProfileError> {
        let mut out = Vec::new();
        for case in self.store.list_cases()? {
            // One case that cannot be opened must not hide the rest of the caseload: it is listed
            // with what went wrong, and the others open as usual.
            let (unsynced, not_on_hub, v) = match self
                .unsynced(case)
                .and_then(|u| Ok((u, self.not_on_hub(case)?, self.view_unaudited(case)?)))
            {
                Ok(opened) => opened,
                Err(e) => {
                    tracing::warn!(%case, error = %e, "a case in the caseload could not be opened");
                    out.push(CaseSummary {
                        case_id: case.to_string(),
                        name: format!("(this case could not be opened: {e})"),
                        team_id: String::new(),
                        unsynced_changes: 0,
                        not_on_hub: None,
                        conflicts: 0,
                        last_meeting: None,
                        next_meeting: None,
                        first_meeting_due: None,
                        urgency: None,
                        first_meeting: None,
                        episode_closed: false,
                    });
                    continue;
                }
            };
            let now = format_instant(time::OffsetDateTime::now_utc());
            // A cancelled or missed meeting is neither the last meeting nor the next one.
            let live: Vec<_> = v
                .meetings
                .iter()
                .filter(|m| m.meta.entered_in_error.is_none())
                .filter(|m| m.held() || m.state.is(MeetingState::Planned))
                .collect();
            let next = live
                .iter()
                .filter_map(|m| m.next_meeting.clone())
                .chain(
                    live.iter()
                        .filter(|m| !m.held())
                        .filter_map(|m| m.at.clone()),
                )
                .filter(|a| *a > now)
                .min();
            let awaited = v
                .episodes
                .last()
                .filter(|e| e.awaiting_first_meeting().is_some());
            out.push(CaseSummary {
                case_id: case.to_string(),
                name: v.person.name.clone(),
                team_id: v.team_id.clone(),
                unsynced_changes: unsynced,
                not_on_hub,
                conflicts: v.conflicts.len(),
                last_meeting: live
                    .iter()
                    .filter(|m| m.held())
                    .filter_map(|m| m.at.clone())
                    .filter(|a| *a <= now)
                    .max(),
                next_meeting: next,
                first_meeting_due: awaited.map(|e| e.first_meeting_due.clone()),
                urgency: awaited.and_then(|e| e.urgency.as_ref()).map(|u| u.label()),
                first_meeting: v.episodes.last().and_then(|e| e.first_meeting.clone()),
                episode_closed: v.episodes.last().is_some_and(|e| e.closed_at.is_some()),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.case_id.cmp(&b.case_id)));
        Ok(out)
    }

    /// Where this device stands: unsynced work per case (and what is not yet on the trust hub,
    /// when the borough has one), the last sync.
    pub fn status(&mut self) -> Result<Status, ProfileError> {
        // Read before the cases: a first hub receipt recorded meanwhile (the app's background
        // sync) then cannot leave a case uncounted in a total that says "on the hub".
        let hub = self.books().hub_reported()?;
        let cases = self.cases()?;
        let not_on_hub = hub.then(|| cases.iter().filter_map(|c| c.not_on_hub).sum());
        let meta = |k: &str| -> Result<Option<Vec<u8>>, ProfileError> {
            Ok(self.store.get_meta(NS_PROFILE, k)?)
        };
        let last_sync = meta("last_sync")?.and_then(|b| serde_json::from_slice(&b).ok());
        let last_ok =
            meta("last_successful_sync")?.map(|b| String::from_utf8_lossy(&b).to_string());
        Ok(Status {
            device: self.device.to_string(),
            server: self.enrolment.as_ref().map(|e| e.server.clone()),
            practitioner: self.enrolment.as_ref().map(|e| e.practitioner_name.clone()),
            last_sync,
            last_successful_sync: last_ok,
            unsynced_changes: cases.iter().map(|c| c.unsynced_changes).sum(),
            not_on_hub,
            unsent_reads: self.store.read_log(LOG_READS, 0)?.len(),
            cases,
        })
    }

    fn offline_reads(&self) -> Result<Vec<OfflineRead>, ProfileError> {
        Ok(self.books().offline_reads()?)
    }

    /// Sync with the borough server: upload what this device has, receive what the team wrote.
    /// Whatever happens, local work stays saved; the outcome is recorded for `status`.
    pub async fn sync(
        &mut self,
        progress: &mut (dyn FnMut(SyncProgress) + Send),
    ) -> Result<SyncReport, ProfileError> {
        let result = self.sync_inner(progress).await;
        self.record_sync(result)
    }

    /// Record a sync's outcome for `status`, and count what is left unsynced.
    fn record_sync(
        &mut self,
        result: Result<SyncReport, ProfileError>,
    ) -> Result<SyncReport, ProfileError> {
        let (ok, message) = match &result {
            Ok(r) if r.refused.is_empty() => (true, format!("synced {}", plural(r.cases, "case"))),
            Ok(r) => (
                false,
                format!("synced, but {} refused", plural(r.refused.len(), "case")),
            ),
            Err(e) => (false, e.to_string()),
        };
        let at = now_string();
        let last = LastSync {
            at: at.clone(),
            ok,
            message,
        };
        if let Ok(b) = serde_json::to_vec(&last) {
            let _ = self.store.put_meta(NS_PROFILE, "last_sync", &b);
        }
        if ok {
            let _ = self
                .store
                .put_meta(NS_PROFILE, "last_successful_sync", at.as_bytes());
        }
        let _ = self.store.flush();
        let mut report = result?;
        if !report.wiped {
            report.unsynced_changes = self.status()?.unsynced_changes;
        }
        Ok(report)
    }

    async fn sync_inner(
        &mut self,
        progress: &mut (dyn FnMut(SyncProgress) + Send),
    ) -> Result<SyncReport, ProfileError> {
        let (e, endpoint, conn) = self.connect().await?;
        let mut sync = self.begin_sync()?;
        let outcome = {
            let mut host = Host {
                profile: self,
                run: &mut sync.run,
                progress,
            };
            net::drive(&e.server, &conn, &mut sync.session, &mut host, None).await
        };
        endpoint.close(0u32.into(), b"");
        let takes_attachments = sync
            .session
            .welcome()
            .is_some_and(|w| w.has(sync::FEATURE_ATTACHMENTS));
        let mut report = sync.end(self, outcome)?;
        // After a wipe too: a case kept for an attachment only here uploads it now.
        if takes_attachments && (!report.wiped || !report.kept_unsynced.is_empty()) {
            report.attachments = self.sync_attachments().await;
        }
        Ok(report)
    }

    /// Move the attachments the records name: a connection of its own, after the records (the
    /// server takes an attachment only for a case it holds, whose record names it). Failures are
    /// reported, not raised: the records synced, and the files are tried again next time.
    async fn sync_attachments(&mut self) -> BlobReport {
        let work = match self.blob_work() {
            Ok(w) if w.is_empty() => return BlobReport::default(),
            Ok(w) => w,
            Err(e) => {
                return BlobReport {
                    failed: vec![format!("could not list the attachments to sync: {e}")],
                    ..BlobReport::default()
                }
            }
        };
        let (e, endpoint, conn) = match self.connect().await {
            Ok(c) => c,
            Err(e) => {
                return BlobReport {
                    failed: vec![format!("attachments not synced: {e}")],
                    ..BlobReport::default()
                }
            }
        };
        let result = self.exchange_blobs(&e.server, &conn, work).await;
        conn.close(0u32.into(), b"");
        endpoint.wait_idle().await;
        result.unwrap_or_else(|e| BlobReport {
            failed: vec![format!("attachments not synced: {e}")],
            ..BlobReport::default()
        })
    }

    /// Begin a sync session that the caller carries over its own transport: the sans-IO form of
    /// [`Profile::sync`], which the deterministic simulation test drives frame by frame. Send the
    /// frames [`ProfileSync::start`] returns, give each frame from the server to
    /// [`ProfileSync::handle`], and end with [`ProfileSync::finish`] (also when the connection
    /// is lost). Persistence, acknowledgements, compaction, moves and wipes are exactly those of
    /// [`Profile::sync`]: both go through the same host.
    pub fn begin_sync(&mut self) -> Result<ProfileSync, ProfileError> {
        let states = self.books().sync_states()?;
        Ok(ProfileSync {
            session: ClientSession::new(false, self.offline_reads()?, states),
            run: SyncRun::default(),
        })
    }

    /// Connect to the borough server with this device's certificate.
    /// Connect to the borough server: its addresses in turn ([`Enrolment::addresses`]), moving
    /// on from one that cannot be reached or drops the handshake, stopping at one that refuses
    /// this device. The enrolment returned names the address that answered, and the profile
    /// keeps it first for next time.
    async fn connect(
        &mut self,
    ) -> Result<(Enrolment, quinn::Endpoint, quinn::Connection), ProfileError> {
        let mut e = self.enrolment.clone().ok_or(ProfileError::NotEnrolled)?;
        let key = DeviceKey::from_pem(&e.key_pem).map_err(NetError::from)?;
        let ca = hex::decode(&e.ca).map_err(|x| ProfileError::Corrupt(x.to_string()))?;
        let cert = hex::decode(&e.certificate).map_err(|x| ProfileError::Corrupt(x.to_string()))?;
        let addresses = e.addresses();
        let mut last = None;
        for (i, addr) in addresses.iter().enumerate() {
            match net::connect(addr, &ca, &cert, &key).await {
                Ok((endpoint, conn)) => {
                    if i > 0 {
                        tracing::info!(%addr, "the first server address did not answer; this one did");
                        e.server = addr.clone();
                        self.save_enrolment(e.clone())?;
                    }
                    return Ok((e, endpoint, conn));
                }
                Err(
                    err @ (NetError::Unreachable { .. }
                    | NetError::BadAddress(_)
                    | NetError::Lost(_)),
                ) if i + 1 < addresses.len() => {
                    tracing::info!(%addr, error = %err, "server address did not answer; trying the next");
                    last = Some(err);
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(last
            .map(ProfileError::from)
            .unwrap_or(ProfileError::NotEnrolled))
    }

    /// Keep a changed enrolment (the address that answered, the list of addresses).
    fn save_enrolment(&mut self, e: Enrolment) -> Result<(), ProfileError> {
        let bytes = serde_json::to_vec(&e).map_err(|x| ProfileError::Corrupt(x.to_string()))?;
        self.store.put_meta(NS_PROFILE, "enrolment", &bytes)?;
        self.store.flush()?;
        self.enrolment = Some(e);
        Ok(())
    }

    /// Keep the server's list of addresses from a welcome, if it told one and it changed.
    fn note_server_addresses(&mut self, told: &[String]) -> Result<(), ProfileError> {
        let kept = kept_addresses(told);
        match &self.enrolment {
            Some(e) if !kept.is_empty() && e.servers != kept => {
                let mut e = e.clone();
                e.servers = kept;
                self.save_enrolment(e)
            }
            _ => Ok(()),
        }
    }

    /// Fetch who has accessed a case from the server's audit log and keep it (encrypted) for the
    /// person's copy. Reads still waiting on this device are listed too.
    pub async fn fetch_accesses(&mut self, case: CaseId) -> Result<AccessList, ProfileError> {
        let (e, endpoint, conn) = self.connect().await?;
        let result = net::fetch_access_log(&e.server, &conn, case).await;
        conn.close(0u32.into(), b"");
        endpoint.close(0u32.into(), b"");
        let list = AccessList {
            fetched_at: now_string(),
            entries: result?,
        };
        let bytes = serde_json::to_vec(&list).map_err(|x| ProfileError::Corrupt(x.to_string()))?;
        self.store
            .put_meta(NS_ACCESSES, &case.to_string(), &bytes)?;
        self.store.flush()?;
        Ok(list)
    }

    /// The accesses last fetched for a case, plus this device's own reads not yet uploaded.
    pub fn accesses(&self, case: CaseId) -> Result<Option<AccessList>, ProfileError> {
        let Some(bytes) = self.store.get_meta(NS_ACCESSES, &case.to_string())? else {
            return Ok(None);
        };
        let mut list: AccessList =
            serde_json::from_slice(&bytes).map_err(|x| ProfileError::Corrupt(x.to_string()))?;
        let who = self
            .enrolment
            .as_ref()
            .map(|e| e.practitioner_name.clone())
            .unwrap_or_default();
        for r in self.offline_reads()?.into_iter().filter(|r| r.case == case) {
            list.entries.push(crate::export::Access {
                at: r.at,
                who: who.clone(),
                device: Some(self.device.to_string()),
                what: format!(
                    "read on this device ({}), not yet sent to the server",
                    r.what
                ),
                kind: Some(crate::export::access::AccessKind::OnDevice {
                    purpose: r.what,
                    not_yet_sent: true,
                }),
            });
        }
        Ok(Some(list))
    }

    /// Keep the newest audit head the server signed (see [`crate::identity::AuditHead`]), and
    /// say so if the one just received is older than, or differs from, the one kept: the server's
    /// log lost records, or an older copy of it was restored. The kept head stays the newer one.
    fn note_audit_head(
        &mut self,
        head: &crate::identity::AuditHead,
    ) -> Result<Option<String>, ProfileError> {
        let Some(e) = &self.enrolment else {
            return Ok(None);
        };
        let ca = hex::decode(&e.ca).unwrap_or_default();
        if let Err(err) = head.verify(&ca) {
            return Ok(Some(format!(
                "the server sent an audit-log head its borough CA did not sign ({err}): tell your administrator"
            )));
        }
        let kept = self.audit_head()?;
        let warning = match &kept {
            Some(k) if k.records > head.records => Some(format!(
                "the server's audit log now holds {} records, fewer than the {} it signed at {}: records were lost from its end, or an older copy was restored; tell your information governance lead",
                head.records, k.records, k.at
            )),
            Some(k) if k.records == head.records && k.hash != head.hash => Some(format!(
                "the server's audit log ends in a different record than the one it signed at {}: the log was replaced; tell your information governance lead",
                k.at
            )),
            _ => None,
        };
        if warning.is_none() {
            let bytes =
                serde_json::to_vec(head).map_err(|e| ProfileError::Corrupt(e.to_string()))?;
            self.store.put_meta(NS_PROFILE, AUDIT_HEAD_KEY, &bytes)?;
            // Keep the earlier heads too: the newest alone is replaced by any longer log, so an
            // older copy that has since grown past it would pass; the heads it replaced still
            // catch it (the device cannot tell, the administrator's check can).
            let mut kept = self.audit_history()?;
            if kept.last().is_none_or(|k| k.records < head.records) {
                kept.push(head.clone());
                if kept.len() > AUDIT_HISTORY_MAX {
                    kept = thin_evenly(&kept);
                }
                let bytes =
                    serde_json::to_vec(&kept).map_err(|e| ProfileError::Corrupt(e.to_string()))?;
                self.store.put_meta(NS_PROFILE, AUDIT_HISTORY_KEY, &bytes)?;
            }
        } else {
            tracing::warn!(warning = ?warning, "audit head went backwards");
        }
        Ok(warning)
    }

    /// The time zone this device shows times in and reads typed times as: Europe/London unless a
    /// practitioner chose another (a team working near a border, a device set up abroad for a
    /// visit). The record itself stores instants, so the choice changes no entry.
    pub fn time_zone(&self) -> Result<LocalZone, ProfileError> {
        match self.store.get_meta(NS_PROFILE, TIME_ZONE_KEY)? {
            Some(name) => Ok(LocalZone::named(&String::from_utf8_lossy(&name))?),
            None => Ok(LocalZone::uk()),
        }
    }

    /// Choose the time zone (an IANA name such as `Europe/London`); an unknown name is refused
    /// and the setting is left as it was.
    pub fn set_time_zone(&mut self, name: &str) -> Result<LocalZone, ProfileError> {
        let zone = LocalZone::named(name.trim())?;
        self.store
            .put_meta(NS_PROFILE, TIME_ZONE_KEY, zone.name().as_bytes())?;
        Ok(zone)
    }

    /// The newest audit-log head the server signed that this device has seen: give it to the
    /// borough's administrator for `polyphony-server audit --verify --anchor FILE`.
    pub fn audit_head(&self) -> Result<Option<crate::identity::AuditHead>, ProfileError> {
        Ok(self
            .store
            .get_meta(NS_PROFILE, AUDIT_HEAD_KEY)?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Every audit-log head this device kept, oldest first (at most [`AUDIT_HISTORY_MAX`], thinned
    /// evenly when full, the first and the newest always kept): the anchors to give the
    /// administrator.
    pub fn audit_history(&self) -> Result<Vec<crate::identity::AuditHead>, ProfileError> {
        Ok(self
            .store
            .get_meta(NS_PROFILE, AUDIT_HISTORY_KEY)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default())
    }

    fn forget_case(&mut self, case: CaseId) -> Result<(), ProfileError> {
        self.books().forget_case(&case)?;
        self.docs.remove(&case);
        Ok(())
    }

    /// True while the server is revoking this device (see [`DeviceBooks::note_revocation`]).
    pub fn being_revoked(&self) -> Result<bool, ProfileError> {
        Ok(self.store.get_meta(NS_PROFILE, REVOKING_KEY)?.is_some())
    }

    /// The server revoked this device: wipe it ([`DeviceBooks::wipe_acknowledged`]), and forget what this
    /// profile held in memory of what went.
    fn wipe(&mut self) -> Result<Vec<CaseId>, ProfileError> {
        let kept = self.books().wipe_acknowledged()?;
        self.docs.retain(|c, _| kept.contains(c));
        if kept.is_empty() {
            self.enrolment = None;
        }
        Ok(kept)
    }
}

/// What a sync session learns that the profile acts on only when it ends.
#[derive(Default)]
struct SyncRun {
    report: SyncReport,
    wipe: bool,
    moved: Vec<CaseId>,
}

/// A sync session begun with [`Profile::begin_sync`], carried by the caller. Pass it the profile
/// that began it.
pub struct ProfileSync {
    session: ClientSession,
    run: SyncRun,
}

impl ProfileSync {
    /// The first frames to send.
    pub fn start(&mut self, profile: &mut Profile) -> Result<net::Outgoing, StoreError> {
        let actions = self.session.start();
        self.carry_out(profile, actions)
    }

    /// Handle a frame from the server: the profile persists what it must, and the result says
    /// what to send and whether the session is over.
    pub fn handle(
        &mut self,
        profile: &mut Profile,
        frame: sync::Frame,
    ) -> Result<net::Outgoing, StoreError> {
        let mut noop = |_: SyncProgress| {};
        let mut host = Host {
            profile,
            run: &mut self.run,
            progress: &mut noop,
        };
        let actions = self.session.handle(frame, &mut host);
        net::carry_out_local(&mut host, actions)
    }

    fn carry_out(
        &mut self,
        profile: &mut Profile,
        actions: Vec<Action>,
    ) -> Result<net::Outgoing, StoreError> {
        let mut noop = |_: SyncProgress| {};
        let mut host = Host {
            profile,
            run: &mut self.run,
            progress: &mut noop,
        };
        net::carry_out_local(&mut host, actions)
    }

    /// End the session: `ended` is how it ended (the close code and message of the session's last
    /// action, or the error that cut it short). Saves sync states, forgets moved cases and wipes a
    /// revoked device as [`Profile::sync`] does, and records the outcome for `status`.
    pub fn finish(
        self,
        profile: &mut Profile,
        ended: Result<(ErrorCode, String), NetError>,
    ) -> Result<SyncReport, ProfileError> {
        let result = self.end(profile, ended);
        profile.record_sync(result)
    }

    fn end(
        self,
        profile: &mut Profile,
        ended: Result<(ErrorCode, String), NetError>,
    ) -> Result<SyncReport, ProfileError> {
        let ProfileSync { session, run } = self;
        let SyncRun {
            mut report,
            wipe,
            moved,
        } = run;
        profile.store.flush()?;
        if let Some(head) = session.welcome().and_then(|w| w.audit_head.clone()) {
            report.audit_warning = profile.note_audit_head(&head)?;
        }
        if let Some(w) = session.welcome() {
            profile.note_server_addresses(&w.servers)?;
        }
        let (code, message) = match ended {
            // Wiped: the server's answer to `Wiped` does not matter (a server older than the
            // confirmation closes without one).
            Err(_) if wipe => (ErrorCode::Revoked, "device revoked".to_string()),
            other => other?,
        };
        let held: BTreeSet<CaseId> = profile.store.list_cases()?.into_iter().collect();
        for (case, state) in session.states() {
            if !held.contains(case) && (wipe || moved.contains(case)) {
                continue; // wiped or moved away: nothing to resume
            }
            profile.books().save_sync_state(case, state)?;
        }
        report.cases = session.states().count() + session.refused().len();
        for case in moved {
            if !held.contains(&case) {
                continue; // wiped already
            }
            if profile.unsynced(case)? == 0 && profile.books().unsent_blobs(&case)?.is_empty() {
                profile.forget_case(case)?;
                report.moved.push(case.to_string());
            } else {
                report.kept_unsynced.push(case.to_string());
            }
        }
        if !wipe && code != ErrorCode::Done {
            return Err(NetError::Refused { code, message }.into());
        }
        profile.store.flush()?;
        Ok(report)
    }
}

/// The profile as the sync shell sees it.
struct Host<'a> {
    profile: &'a mut Profile,
    run: &'a mut SyncRun,
    progress: &'a mut (dyn FnMut(SyncProgress) + Send),
}

impl DocSet for Host<'_> {
    fn cases(&self) -> Vec<CaseId> {
        let mut c: BTreeSet<CaseId> = self
            .profile
            .store
            .list_cases()
            .unwrap_or_default()
            .into_iter()
            .collect();
        c.extend(self.profile.docs.keys().copied());
        c.into_iter().collect()
    }

    fn doc(&mut self, case: &CaseId) -> Option<&mut AutoCommit> {
        if self.profile.docs.contains_key(case) {
            return self.profile.docs.get_mut(case);
        }
        self.profile.load(*case).ok()
    }

    fn insert(&mut self, case: CaseId, doc: AutoCommit) {
        self.profile.docs.insert(case, doc);
    }

    fn wipe(&mut self) -> Result<Vec<CaseId>, String> {
        self.profile.wipe().map_err(|e| e.to_string())
    }
}

impl SessionHost for Host<'_> {
    fn act(&mut self, action: &Action) -> Result<(), StoreError> {
        if let Action::Wiped { kept, .. } = action {
            // Noted before the books forget a revoked device's enrolment: should that write
            // fail, the session still ends as a wipe (see `ProfileSync::end`).
            self.run.wipe = true;
            self.run.report.wiped = true;
            self.run
                .report
                .kept_unsynced
                .extend(kept.iter().map(|c| c.to_string()));
        }
        self.profile.books().record(action)?;
        match action {
            Action::Persist { case, .. } => self.profile.appended(*case),
            Action::Refused { case, refusal } => {
                self.run
                    .report
                    .refused
                    .push((case.to_string(), refusal.message.clone()));
            }
            Action::Moved { case } => self.run.moved.push(*case),
            Action::Progress { settled, total } => (self.progress)(SyncProgress {
                settled: *settled,
                total: *total,
            }),
            Action::Wiped { revoked, .. } => {
                if *revoked {
                    // The books forgot the enrolment; so does the profile in memory.
                    self.profile.enrolment = None;
                }
            }
            Action::Acknowledged { .. }
            | Action::AlsoOnHub { .. }
            | Action::ToldMoved { .. }
            | Action::Granted { .. }
            | Action::ReadsSaved { .. }
            | Action::RevocationOrdered(_)
            | Action::Colleagues(_)
            | Action::Send(_)
            | Action::Close { .. } => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::books::NS_ACKED;
    use super::*;
    use crate::model::{NewCase, Participant, PersonField};
    use crate::store::MemoryStore;

    /// Enrol the device on paper in `store`, trusting the borough CA certificate `ca` (hex DER;
    /// empty: none).
    fn enrol_on_paper(store: &dyn Store, ca: String) {
        let enrolment = Enrolment {
            server: "127.0.0.1:1".into(),
            device_name: "test".into(),
            practitioner: PractitionerId::random(),
            practitioner_name: "Sam".into(),
            teams: vec![TeamInfo {
                id: TeamId::random(),
                name: "North".into(),
            }],
            ca,
            certificate: String::new(),
            key_pem: String::new(),
            enrolled_at: now_string(),
            servers: Vec::new(),
        };
        store
            .put_meta(
                NS_PROFILE,
                "enrolment",
                &serde_json::to_vec(&enrolment).unwrap(),
            )
            .unwrap();
    }

    #[test]
    fn a_servers_address_list_is_kept_bounded_and_an_older_enrolment_still_reads() {
        // Past the bound: blank, overlong and repeated addresses dropped, at most eight kept.
        let mut told: Vec<String> = (0..20).map(|i| format!("node-{i}.nhs.uk:4433")).collect();
        told.insert(0, "  ".into());
        told.insert(1, "x".repeat(MAX_ADDRESS_LEN + 1));
        told.insert(2, "node-0.nhs.uk:4433".into());
        let kept = kept_addresses(&told);
        assert_eq!(kept.len(), MAX_SERVER_ADDRESSES);
        assert_eq!(kept[0], "node-0.nhs.uk:4433");
        assert_eq!(kept[1], "node-1.nhs.uk:4433");
        // The one that answered last first, then the rest, each once.
        let json = serde_json::json!({
            "server": "b:4433", "device_name": "laptop",
            "practitioner": PractitionerId::random(), "practitioner_name": "Sam",
            "teams": [], "ca": "", "certificate": "", "key_pem": "",
            "enrolled_at": "2026-01-01T00:00:00Z"
        });
        // Written before the field: no list, the one address.
        let old: Enrolment = serde_json::from_value(json.clone()).unwrap();
        assert!(old.servers.is_empty());
        assert_eq!(old.addresses(), vec!["b:4433".to_string()]);
        let mut new = old.clone();
        new.servers = vec!["a:4433".into(), "b:4433".into()];
        assert_eq!(
            new.addresses(),
            vec!["b:4433".to_string(), "a:4433".to_string()]
        );
        // And an older device reads an enrolment written with it (unknown fields ignored).
        let written = serde_json::to_value(&new).unwrap();
        assert_eq!(written["servers"][0], "a:4433");
    }

    /// A profile over an in-memory store, enrolled on paper (no server needed for offline work).
    fn offline_profile() -> Profile {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        enrol_on_paper(&*store, String::new());
        Profile::from_store(Path::new("/nonexistent"), store).unwrap()
    }

    /// Open a case for Maria.
    fn maria(p: &mut Profile) -> CaseId {
        let new = NewCase {
            name: "Maria".into(),
            ..Default::default()
        };
        p.create_case(new, None).unwrap()
    }

    /// Past [`AUDIT_HISTORY_MAX`]: a device that saw 3 × 512 + 7 distinct audit heads keeps at
    /// most 512 of them, oldest first, the first and the newest among them, spread over the whole
    /// range of records they cover, and reads them back from disk; a head older than one it kept
    /// still raises the warning, leaving what it kept unchanged.
    ///
    /// The heads are noted over an in-memory store, then the profile's namespace is moved to a
    /// sealed store on disk and the profile reopened from there: a debug build seals about 5 MB/s,
    /// and noting 1,543 heads on disk rewrites the whole history (up to 150 KB) each time, which
    /// took minutes. Every check runs on the profile reopened from disk.
    #[test]
    fn audit_heads_past_the_history_limit_are_thinned_evenly_and_reopen_from_disk() {
        use crate::identity::{AuditHead, BoroughCa};
        const SEEN: usize = 3 * AUDIT_HISTORY_MAX + 7;
        let ca = BoroughCa::generate("Test borough").unwrap();
        let head =
            |records: u64, hash: &str| AuditHead::sign(&ca, records, hash, &now_string()).unwrap();
        let memory: Arc<dyn Store> = Arc::new(MemoryStore::new());
        enrol_on_paper(&*memory, hex::encode(ca.cert_der()));
        let mut p = Profile::from_store(Path::new("/nonexistent"), memory.clone()).unwrap();
        // Uneven steps, as syncs add a varying number of records between two heads.
        let mut records = 0u64;
        let mut seen = Vec::new();
        for i in 0..SEEN as u64 {
            records += 1 + (i * 7) % 5;
            let warning = p.note_audit_head(&head(records, &format!("{records:064x}")));
            assert_eq!(warning.unwrap(), None, "head {i}");
            assert!(p.audit_history().unwrap().len() <= AUDIT_HISTORY_MAX);
            seen.push(records);
        }
        drop(p);
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let key = crate::store::SealKey::generate();
        let open = || Profile::open_with(&home, KeySource::Raw(key.clone())).unwrap();
        let disk = open();
        for (k, v) in memory.scan_meta(NS_PROFILE).unwrap() {
            disk.store.put_meta(NS_PROFILE, &k, &v).unwrap();
        }
        disk.store.flush().unwrap();
        drop(disk);

        let mut p = open();
        let kept = p.audit_history().unwrap();
        let at: Vec<u64> = kept.iter().map(|h| h.records).collect();
        assert!(
            kept.len() <= AUDIT_HISTORY_MAX && kept.len() >= AUDIT_HISTORY_MAX / 4,
            "{} heads kept",
            kept.len()
        );
        let (first, newest) = (seen[0], seen[SEEN - 1]);
        assert_eq!(at.first(), Some(&first), "the first head is kept");
        assert_eq!(at.last(), Some(&newest), "the newest head is kept");
        assert_eq!(p.audit_head().unwrap().map(|h| h.records), Some(newest));
        assert!(at.windows(2).all(|w| w[0] < w[1]), "oldest first: {at:?}");
        for h in &kept {
            assert!(
                seen.contains(&h.records),
                "head {} was never seen",
                h.records
            );
            h.verify(ca.cert_der()).unwrap();
        }
        // Spread over the range: no stretch of it lost. A thinning keeps about 256 heads over
        // the whole range, about span / 256 records apart; none may be 4 times that apart, and
        // each eighth of the range keeps at least 16.
        let span = newest - first;
        let widest = at.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        let fair = span / (AUDIT_HISTORY_MAX as u64 / 2);
        assert!(
            widest <= 4 * fair,
            "a gap of {widest} records between kept heads, {fair} apart on average: {at:?}"
        );
        for eighth in 0..8u64 {
            let from = first + span * eighth / 8;
            let to = first + span * (eighth + 1) / 8;
            let n = at.iter().filter(|&&r| r >= from && r < to).count();
            assert!(
                n >= AUDIT_HISTORY_MAX / 32,
                "{n} heads kept between records {from} and {to}: {at:?}"
            );
        }
        // A head older than one kept warns, and so does one that replaced the newest; neither
        // changes what is kept. A newer head is still taken, on disk.
        let middle = &kept[kept.len() / 2];
        let older = p.note_audit_head(&head(middle.records, &middle.hash));
        assert!(
            older.unwrap().is_some_and(|w| w.contains("fewer than")),
            "no warning for an older head"
        );
        let replaced = p.note_audit_head(&head(newest, &format!("{:064x}", 0xbad)));
        assert!(
            replaced
                .unwrap()
                .is_some_and(|w| w.contains("different record")),
            "no warning for a replaced head"
        );
        assert_eq!(p.audit_history().unwrap(), kept);
        let next = head(newest + 1, &format!("{:064x}", newest + 1));
        assert_eq!(p.note_audit_head(&next).unwrap(), None);
        drop(p);
        let p = open();
        let mut expected = kept;
        expected.push(next);
        assert_eq!(p.audit_history().unwrap(), expected);
        assert_eq!(p.audit_head().unwrap().map(|h| h.records), Some(newest + 1));
    }

    #[test]
    fn a_case_that_cannot_be_opened_does_not_hide_the_rest_of_the_caseload() {
        let mut p = offline_profile();
        let new = |name: &str| NewCase {
            name: name.into(),
            ..Default::default()
        };
        let good = p.create_case(new("Maria"), None).unwrap();
        let bad = p.create_case(new("Jo"), None).unwrap();
        // A stored chunk that is not automerge at all (damage, or a bug in another client).
        p.store()
            .append_chunk(&bad, b"not an automerge chunk")
            .unwrap();
        let mut again = Profile::from_store(Path::new("/nonexistent"), p.store().clone()).unwrap();
        let caseload = again.cases().unwrap();
        assert_eq!(caseload.len(), 2, "{caseload:?}");
        let maria = caseload
            .iter()
            .find(|c| c.case_id == good.to_string())
            .unwrap();
        assert_eq!(maria.name, "Maria");
        let jo = caseload
            .iter()
            .find(|c| c.case_id == bad.to_string())
            .unwrap();
        assert!(jo.name.contains("could not be opened"), "{}", jo.name);
    }

    #[test]
    fn long_case_logs_are_compacted_and_lose_nothing() {
        let mut p = offline_profile();
        let case = maria(&mut p);
        for i in 0..(COMPACT_AFTER * 2 + 5) {
            p.edit(case, |d| {
                d.set_person(PersonField::Pronouns, Some(&format!("p{i}")))
            })
            .unwrap();
        }
        let chunks = p.store().load_chunks(&case).unwrap().unwrap();
        assert!(
            chunks.len() < COMPACT_AFTER,
            "the log was compacted ({} chunks)",
            chunks.len()
        );
        // A fresh profile over the same store reads every edit back.
        let store = p.store().clone();
        let mut again = Profile::from_store(Path::new("/nonexistent"), store).unwrap();
        let v = again.lookup(case).unwrap();
        assert_eq!(
            v.person.pronouns.as_deref(),
            Some(format!("p{}", COMPACT_AFTER * 2 + 4).as_str())
        );
        assert_eq!(
            again.unsynced(case).unwrap(),
            COMPACT_AFTER * 2 + 6,
            "every change still counted as unsynced"
        );
    }

    /// Told a case moved away, the profile refuses new edits to it (the server would refuse
    /// them: it takes only what was written before the device was told), across a reopen,
    /// until a welcome grants the case in full again.
    #[test]
    fn a_case_the_server_said_moved_away_takes_no_new_edits_until_granted_again() {
        let mut p = offline_profile();
        let case = maria(&mut p);
        p.edit(case, |d| {
            d.set_person(PersonField::Pronouns, Some("she/her"))
        })
        .unwrap();
        p.books().note_moved_away(&case).unwrap();
        let refused = |p: &mut Profile| {
            p.edit(case, |d| d.set_person(PersonField::Pronouns, Some("they")))
                .unwrap_err()
        };
        let e = refused(&mut p);
        assert!(matches!(e, ProfileError::MovedAway { .. }), "{e}");
        assert!(e.to_string().contains("another team"), "{e}");
        let mut again = Profile::from_store(Path::new("/nonexistent"), p.store().clone()).unwrap();
        assert!(matches!(
            refused(&mut again),
            ProfileError::MovedAway { .. }
        ));
        // The words written before stay, and still count as unsynced (they upload).
        assert_eq!(
            again.lookup(case).unwrap().person.pronouns.as_deref(),
            Some("she/her")
        );
        assert_eq!(again.unsynced(case).unwrap(), 2);
        again.books().note_granted(&[case]).unwrap();
        again
            .edit(case, |d| d.set_person(PersonField::Pronouns, Some("they")))
            .unwrap();
    }

    #[test]
    fn a_device_being_revoked_takes_no_new_entry_even_after_a_reopen() {
        let mut p = offline_profile();
        let new = || NewCase {
            name: "Maria".into(),
            ..Default::default()
        };
        let case = p.create_case(new(), None).unwrap();
        p.books().note_revocation(true).unwrap();
        let refused = p
            .edit(case, |d| {
                d.set_person(PersonField::Pronouns, Some("she/her"))
            })
            .unwrap_err();
        assert!(matches!(refused, ProfileError::BeingRevoked), "{refused}");
        assert!(matches!(
            p.create_case(new(), None),
            Err(ProfileError::BeingRevoked)
        ));
        let mut again = Profile::from_store(Path::new("/nonexistent"), p.store().clone()).unwrap();
        assert!(matches!(
            again.edit(case, |d| d
                .set_person(PersonField::Pronouns, Some("she/her"))),
            Err(ProfileError::BeingRevoked)
        ));
        // An administrator who changes their mind: the next welcome says so, and work goes on.
        again.books().note_revocation(false).unwrap();
        again
            .edit(case, |d| {
                d.set_person(PersonField::Pronouns, Some("she/her"))
            })
            .unwrap();
    }

    #[test]
    fn a_wipe_keeps_every_case_the_server_lacks_and_the_enrolment_with_them() {
        let mut p = offline_profile();
        let new = |name: &str| NewCase {
            name: name.into(),
            ..Default::default()
        };
        let synced = p.create_case(new("Maria"), None).unwrap();
        let unsynced = p.create_case(new("Jo"), None).unwrap();
        let heads = p.document(synced).unwrap().get_heads();
        p.store()
            .put_meta(NS_ACKED, &synced.to_string(), &sync::encode_heads(&heads))
            .unwrap();
        let kept = p.wipe().unwrap();
        assert_eq!(kept, vec![unsynced]);
        assert_eq!(p.case_ids().unwrap(), vec![unsynced]);
        assert!(
            p.enrolment().is_some(),
            "still enrolled, to upload Jo's case"
        );
        // Once the server acknowledges the rest, the wipe takes everything and the enrolment.
        let heads = p.document(unsynced).unwrap().get_heads();
        p.store()
            .put_meta(NS_ACKED, &unsynced.to_string(), &sync::encode_heads(&heads))
            .unwrap();
        assert!(p.wipe().unwrap().is_empty());
        let again = Profile::from_store(Path::new("/nonexistent"), p.store().clone()).unwrap();
        assert!(again.case_ids().unwrap().is_empty());
        assert!(again.enrolment().is_none());
    }

    /// Issue 16, part 2: the CLI and the app open one profile folder; a profile only in the folder
    /// the CLI used before (without the qualifier, different on macOS) is still found.
    #[test]
    fn one_default_profile_folder_and_an_earlier_one_is_still_found() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("current");
        let earlier = dir.path().join("earlier");
        assert_eq!(home_to_use(current.clone(), Some(earlier.clone())), current);
        std::fs::create_dir_all(earlier.join("store")).unwrap();
        assert!(Profile::exists(&earlier), "a store folder makes a profile");
        assert_eq!(home_to_use(current.clone(), Some(earlier.clone())), earlier);
        std::fs::create_dir_all(current.join("store")).unwrap();
        assert_eq!(home_to_use(current.clone(), Some(earlier)), current);
        let home = default_home().expect("this machine has a home folder");
        assert!(home.ends_with("polyphony"), "{}", home.display());
    }

    /// Issue 15, part 1: the time zone is a profile setting, UK time unless chosen; kept in the
    /// store (so a reopened profile has it); an unknown name is refused and changes nothing.
    #[test]
    fn the_time_zone_is_a_profile_setting_uk_unless_chosen() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        enrol_on_paper(&*store, String::new());
        let mut p = Profile::from_store(Path::new("/nonexistent"), store.clone()).unwrap();
        assert_eq!(p.time_zone().unwrap().name(), "Europe/London");
        assert_eq!(p.time_zone().unwrap().label(), "UK time");
        p.set_time_zone("Europe/Dublin").unwrap();
        let err = p.set_time_zone("Europe/Atlantis").unwrap_err();
        assert!(err.to_string().contains("Europe/Atlantis"), "{err}");
        drop(p);
        let p = Profile::from_store(Path::new("/nonexistent"), store).unwrap();
        assert_eq!(p.time_zone().unwrap().name(), "Europe/Dublin");
    }

    #[test]
    fn a_read_is_recorded_for_the_access_log_and_a_lookup_is_not() {
        let mut p = offline_profile();
        let case = maria(&mut p);
        p.lookup(case).unwrap();
        assert_eq!(p.offline_reads().unwrap().len(), 0);
        p.view(case, "case show").unwrap();
        let reads = p.offline_reads().unwrap();
        assert_eq!(reads.len(), 1);
        assert_eq!(reads[0].case, case);
        assert_eq!(reads[0].what, "case show");
    }

    /// Issue 15, part 3: the network copy is for a named member with consent; giving it is a
    /// disclosure the person's access list names (who, to whom, when), and a refusal records
    /// nothing.
    #[test]
    fn a_network_copy_needs_consent_and_is_recorded_as_a_disclosure() {
        use crate::model::{ConsentState, NewMember};
        let mut p = offline_profile();
        let case = maria(&mut p);
        let dan = p
            .edit(case, |d| {
                d.add_member(NewMember {
                    name: "Daniel Kowalczyk".into(),
                    relationship: "brother".into(),
                    ..Default::default()
                })
            })
            .unwrap();
        let err = p.give_network_copy(case, &dan.to_string()).unwrap_err();
        assert!(err.to_string().contains("not recorded"), "{err}");
        assert!(
            p.offline_reads().unwrap().is_empty(),
            "a refusal discloses nothing"
        );

        p.edit(case, |d| d.record_consent(&dan, ConsentState::Given, None))
            .unwrap();
        let copy = p.give_network_copy(case, &dan.to_string()).unwrap();
        assert_eq!(copy.recipient.name, "Daniel Kowalczyk");
        let reads = p.offline_reads().unwrap();
        assert_eq!(reads.len(), 1);
        assert!(reads[0].what.contains(&dan.to_string()) && reads[0].what.contains("Daniel"));

        // In the person's access list, in plain words, before and after it reaches the server.
        let empty = AccessList {
            fetched_at: now_string(),
            entries: vec![],
        };
        p.store()
            .put_meta(
                NS_ACCESSES,
                &case.to_string(),
                &serde_json::to_vec(&empty).unwrap(),
            )
            .unwrap();
        let entries = p.accesses(case).unwrap().unwrap().entries;
        let html = crate::export::person_copy::html(&p.lookup(case).unwrap(), &entries);
        assert!(
            html.contains("Sam gave a copy of your record to Daniel Kowalczyk (your brother) on "),
            "{html}"
        );
        assert!(html.contains(" UK time."));

        p.edit(case, |d| {
            d.record_consent(&dan, ConsentState::Revoked, None)
        })
        .unwrap();
        assert!(matches!(
            p.give_network_copy(case, &dan.to_string()),
            Err(ProfileError::NetworkCopy(_))
        ));
    }

    /// The time of the newest change in the case (the one just made).
    fn newest_change_time(p: &mut Profile, case: CaseId) -> crate::model::Instant {
        let mut doc = p.document(case).unwrap();
        let heads = doc.get_heads();
        let ms = doc.get_change_by_hash(&heads[0]).unwrap().timestamp();
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap()
    }

    fn acknowledge_all(p: &mut Profile, case: CaseId) {
        let heads = p.document(case).unwrap().get_heads();
        p.store()
            .put_meta(NS_ACKED, &case.to_string(), &sync::encode_heads(&heads))
            .unwrap();
    }

    /// "Unsynced since" is read from the changes not yet acknowledged that this device wrote:
    /// edit, acknowledge, edit again, and it is the second edit's time, not the first's (the
    /// reviewer's Monday and Friday); with part of the changes acknowledged it is the earliest
    /// of the rest; with everything acknowledged it is nothing. Reading it writes nothing, and an
    /// old note in the app's namespace is not what it reads while the changes carry times.
    #[test]
    fn unsynced_since_is_the_earliest_unacknowledged_change_this_device_wrote() {
        // A stepped clock: one second per reading, so each change has its own time.
        crate::determinism::seed_this_thread(7);
        let mut p = offline_profile();
        let case = maria(&mut p);
        let first = newest_change_time(&mut p, case);
        assert_eq!(p.unsynced_since(case).unwrap(), Some(first));
        // An old note, as an earlier version left it, is not read while changes carry times.
        p.store()
            .put_meta(
                "app",
                &format!("unsynced_since:{case}"),
                b"2020-01-01T00:00:00Z",
            )
            .unwrap();
        acknowledge_all(&mut p, case);
        assert_eq!(p.unsynced_since(case).unwrap(), None, "all acknowledged");

        p.edit(case, |d| {
            d.propose_decision("Meet weekly", Participant::Person)
        })
        .unwrap();
        let second = newest_change_time(&mut p, case);
        assert!(second > first);
        assert_eq!(
            p.unsynced_since(case).unwrap(),
            Some(second),
            "since the edit after the acknowledgement, not the first"
        );
        let acked_after_second = p.document(case).unwrap().get_heads();
        p.edit(case, |d| {
            d.propose_decision("Walk daily", Participant::Person)
        })
        .unwrap();
        let third = newest_change_time(&mut p, case);
        assert_eq!(p.unsynced_since(case).unwrap(), Some(second));
        // The server acknowledges the second edit, not the third.
        p.store()
            .put_meta(
                NS_ACKED,
                &case.to_string(),
                &sync::encode_heads(&acked_after_second),
            )
            .unwrap();
        assert_eq!(p.unsynced_since(case).unwrap(), Some(third));

        let zone = LocalZone::uk();
        let now = third + time::Duration::hours(3);
        let items = p
            .due_work(now, &zone, time::Duration::minutes(120))
            .unwrap();
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(items[0].kind, WorkKind::Unsynced);
        assert_eq!(items[0].at, Some(format_instant(third)));
        assert!(items[0].mine && items[0].text.starts_with("1 change only on this device"));
        assert!(p
            .due_work(now, &zone, time::Duration::hours(4))
            .unwrap()
            .is_empty());
        // Reading the list wrote nothing: the old note is as it was, and no read was recorded.
        assert_eq!(
            p.store()
                .get_meta("app", &format!("unsynced_since:{case}"))
                .unwrap()
                .as_deref(),
            Some(&b"2020-01-01T00:00:00Z"[..])
        );
        assert!(p.books().offline_reads().unwrap().is_empty());
        // Forgetting the case leaves no old note behind.
        p.books().forget_case(&case).unwrap();
        assert!(p
            .store()
            .get_meta("app", &format!("unsynced_since:{case}"))
            .unwrap()
            .is_none());
        crate::determinism::unseed_this_thread();
    }

    /// Changes received from another device and not yet acknowledged are that device's to send:
    /// they give this device no "unsynced since".
    #[test]
    fn another_devices_unacknowledged_changes_are_not_this_devices_unsynced_time() {
        let mut p = offline_profile();
        let case = maria(&mut p);
        acknowledge_all(&mut p, case);
        let mut doc = p.document(case).unwrap();
        let other = Author {
            practitioner: crate::PractitionerId::random(),
            practitioner_name: "Kim".into(),
            device: crate::DeviceId::random(),
        };
        let mut theirs = CaseDoc::from_automerge(doc.fork(), Some(other)).unwrap();
        theirs
            .propose_decision("Meet weekly", Participant::Person)
            .unwrap();
        let chunk = theirs.automerge_mut().save_after(&doc.get_heads());
        doc.load_incremental(&chunk).unwrap();
        p.store().append_chunk(&case, &chunk).unwrap();
        drop(p.docs.remove(&case));
        assert_eq!(p.unsynced(case).unwrap(), 1);
        assert_eq!(p.unsynced_since(case).unwrap(), None);
    }

    /// The morning list across cases: an action I own that is overdue, marked mine.
    #[test]
    fn the_morning_list_holds_every_case_s_due_work() {
        let mut p = offline_profile();
        let me = p.author().unwrap().practitioner;
        let case = maria(&mut p);
        let due = time::macros::date!(2026 - 01 - 10);
        let action = p
            .edit(case, |d| {
                let dec = d.propose_decision("Meet weekly", Participant::Person)?;
                d.add_action(
                    &dec,
                    "Book the room",
                    Participant::Practitioner(me),
                    Some(due),
                )
            })
            .unwrap();
        let now = crate::model::parse_datetime("now", "2026-01-15T09:00").unwrap();
        // Everything acknowledged, so only the action is listed.
        let heads = p.document(case).unwrap().get_heads();
        p.store()
            .put_meta(NS_ACKED, &case.to_string(), &sync::encode_heads(&heads))
            .unwrap();
        let items = p
            .due_work(now, &LocalZone::uk(), time::Duration::minutes(120))
            .unwrap();
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(items[0].entry, Some(action));
        assert_eq!(
            (items[0].kind, items[0].days_overdue),
            (WorkKind::Overdue, 5)
        );
        assert_eq!(items[0].person, "Maria");
        assert!(items[0].mine);
    }

    /// A case whose action is due, for the list's tests: everything acknowledged, so no
    /// unsynced line joins it. Returns the case, the decision and the action.
    fn case_with_due_action(p: &mut Profile) -> (CaseId, crate::EntryId, crate::EntryId) {
        let me = p.author().unwrap().practitioner;
        let case = maria(p);
        let (dec, action) = p
            .edit(case, |d| {
                let dec = d.propose_decision("Meet weekly", Participant::Person)?;
                let a = d.add_action(
                    &dec,
                    "Book the room",
                    Participant::Practitioner(me),
                    Some(time::macros::date!(2026 - 01 - 10)),
                )?;
                Ok((dec, a))
            })
            .unwrap();
        acknowledge_all(p, case);
        (case, dec, action)
    }

    fn morning() -> crate::model::Instant {
        crate::model::parse_datetime("now", "2026-01-15T09:00").unwrap()
    }

    /// Showing the list's text from a case is an access: `record_work_reads` records one read
    /// per case with an action listed, as "needs attention list", in the outbox of reads that
    /// goes to the audit; the list itself records nothing, and a line of this code's own words
    /// (unsynced changes) is no access.
    #[test]
    fn showing_an_actions_text_is_recorded_as_a_read_of_its_case() {
        let mut p = offline_profile();
        let (case, _, _) = case_with_due_action(&mut p);
        let items = p
            .due_work(morning(), &LocalZone::uk(), time::Duration::minutes(120))
            .unwrap();
        assert_eq!(items.len(), 1);
        assert!(p.books().offline_reads().unwrap().is_empty());
        p.record_work_reads(&items).unwrap();
        let reads = p.books().offline_reads().unwrap();
        assert_eq!(reads.len(), 1, "{reads:?}");
        assert_eq!((reads[0].case, reads[0].what.as_str()), (case, WORK_READ));
        let unsynced = WorkItem {
            kind: WorkKind::Unsynced,
            entry: None,
            decision: None,
            ..items[0].clone()
        };
        p.record_work_reads(&[unsynced]).unwrap();
        assert_eq!(p.books().offline_reads().unwrap().len(), 1);
    }

    /// A case that cannot be opened does not vanish from the list: it is listed as unreadable,
    /// with the error, and it is mine (it is this device's); the other cases' work stays.
    #[test]
    fn a_case_that_cannot_be_opened_is_listed_with_its_error() {
        let mut p = offline_profile();
        let (good, _, action) = case_with_due_action(&mut p);
        let broken = CaseId::random();
        p.store().append_chunk(&broken, b"not a document").unwrap();
        let items = p
            .due_work(morning(), &LocalZone::uk(), time::Duration::minutes(120))
            .unwrap();
        assert_eq!(items.len(), 2, "{items:?}");
        let bad = items
            .iter()
            .find(|i| i.kind == WorkKind::Unreadable)
            .unwrap();
        assert_eq!(bad.case_id, broken.to_string());
        assert!(bad.mine && bad.text.starts_with("This case could not be opened: "));
        assert!(items
            .iter()
            .any(|i| i.case_id == good.to_string() && i.entry == Some(action)));
    }

    /// End to end, from the case document: a decision marked as recorded on the wrong person's
    /// record takes its action off the list, text and all.
    #[test]
    fn a_decision_on_the_wrong_persons_record_gives_nothing_to_the_list() {
        let mut p = offline_profile();
        let (case, dec, action) = case_with_due_action(&mut p);
        p.edit(case, |d| {
            d.mark_error(&dec, crate::model::ErrorKind::WrongPerson, "not Maria")
        })
        .unwrap();
        acknowledge_all(&mut p, case);
        let items = p
            .due_work(morning(), &LocalZone::uk(), time::Duration::minutes(120))
            .unwrap();
        assert!(items.is_empty(), "{items:?}");
        assert!(!items.iter().any(|i| i.entry == Some(action)));
        p.record_work_reads(&items).unwrap();
        assert!(p.books().offline_reads().unwrap().is_empty());
    }

    /// Record, through the books as a sync session would, that the borough acknowledged `case`
    /// as it is now, and that its trust hub holds it too.
    fn borough_and_hub_hold(p: &mut Profile, case: CaseId) {
        let heads = p.document(case).unwrap().get_heads();
        p.books()
            .record(&Action::Acknowledged {
                case,
                heads: heads.clone(),
            })
            .unwrap();
        p.books()
            .record(&Action::AlsoOnHub { case, heads })
            .unwrap();
    }

    /// Issue 18's second place: a hub receipt for a case's current heads leaves nothing of it
    /// off the hub; an edit after it is one change not yet on the hub (and one unsynced); a case
    /// opened later, with no receipt of its own, has every change off the hub. The profile (its
    /// copy in memory), the books (the store) and `status` count alike, and `--json` says so.
    #[test]
    fn a_hub_receipt_for_the_current_heads_leaves_nothing_off_the_hub_and_an_edit_is_one() {
        let mut p = offline_profile();
        let case = maria(&mut p);
        borough_and_hub_hold(&mut p, case);
        assert_eq!(p.not_on_hub(case).unwrap(), Some(0));
        assert_eq!(p.books().not_on_hub(&case).unwrap(), Some(0));
        let s = p.status().unwrap();
        assert_eq!((s.unsynced_changes, s.not_on_hub), (0, Some(0)));
        assert_eq!(s.cases[0].not_on_hub, Some(0));

        p.edit(case, |d| {
            d.set_person(PersonField::Pronouns, Some("she/her"))
        })
        .unwrap();
        assert_eq!(p.not_on_hub(case).unwrap(), Some(1));
        assert_eq!(p.books().not_on_hub(&case).unwrap(), Some(1));
        let s = p.status().unwrap();
        assert_eq!((s.unsynced_changes, s.not_on_hub), (1, Some(1)));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["not_on_hub"], 1);
        assert_eq!(json["cases"][0]["not_on_hub"], 1);

        // The borough has the edit; the hub does not yet.
        let heads = p.document(case).unwrap().get_heads();
        p.books()
            .record(&Action::Acknowledged { case, heads })
            .unwrap();
        let s = p.status().unwrap();
        assert_eq!((s.unsynced_changes, s.not_on_hub), (0, Some(1)));

        let later = p
            .create_case(
                NewCase {
                    name: "Jo".into(),
                    ..Default::default()
                },
                None,
            )
            .unwrap();
        let all = p.unsynced(later).unwrap();
        assert!(all > 0);
        assert_eq!(p.not_on_hub(later).unwrap(), Some(all));
        assert_eq!(p.status().unwrap().not_on_hub, Some(1 + all));
    }

    /// A borough with no trust hub (or one too old to say) never sends a hub receipt: the device
    /// is told nothing about a hub (null in `--json`), not that its work is off the hub, however
    /// much the borough acknowledged.
    #[test]
    fn a_device_whose_borough_never_sent_a_hub_receipt_is_told_nothing_about_a_hub() {
        let mut p = offline_profile();
        let case = maria(&mut p);
        let heads = p.document(case).unwrap().get_heads();
        p.books()
            .record(&Action::Acknowledged { case, heads })
            .unwrap();
        p.edit(case, |d| {
            d.set_person(PersonField::Pronouns, Some("she/her"))
        })
        .unwrap();
        assert!(!p.books().hub_reported().unwrap());
        assert_eq!(p.not_on_hub(case).unwrap(), None);
        assert_eq!(p.books().not_on_hub(&case).unwrap(), None);
        let s = p.status().unwrap();
        assert_eq!((s.unsynced_changes, s.not_on_hub), (1, None));
        assert_eq!(s.cases[0].not_on_hub, None);
        let json = serde_json::to_value(&s).unwrap();
        assert!(json["not_on_hub"].is_null(), "{json}");
        assert!(json["cases"][0]["not_on_hub"].is_null(), "{json}");
    }

    /// A hub receipt naming a head this device has not received (the hub holds a colleague's
    /// change that has not reached this device yet) counts from what is known here, never
    /// as "everything on the hub"; the profile's first receipt is kept across a reopen.
    #[test]
    fn a_hub_receipt_with_heads_unknown_here_counts_only_what_it_covers() {
        let mut p = offline_profile();
        let case = maria(&mut p);
        let all = p.unsynced(case).unwrap();
        use automerge::transaction::Transactable;
        let mut elsewhere = AutoCommit::new();
        elsewhere.put(automerge::ROOT, "x", 1).unwrap();
        let unknown = elsewhere.get_heads();
        p.books()
            .record(&Action::AlsoOnHub {
                case,
                heads: unknown,
            })
            .unwrap();
        assert_eq!(p.not_on_hub(case).unwrap(), Some(all));
        let mut again = Profile::from_store(Path::new("/nonexistent"), p.store().clone()).unwrap();
        assert_eq!(again.not_on_hub(case).unwrap(), Some(all));
        assert_eq!(again.status().unwrap().not_on_hub, Some(all));
    }
}
