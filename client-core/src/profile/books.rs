//! What a device keeps about its syncs, in its store beside the cases: the heads the server
//! acknowledged (and, when the borough passes its cases on to a trust hub, the heads the hub
//! holds), the sync state of each case, the outbox of reads made on the device, the cases
//! the server said moved away, the mark that the device is being revoked. Every writer of a
//! device's store that runs a sync session (the profile, and the app's background sync) keeps
//! them through [`DeviceBooks`], so the command line, the app and `Profile::unsynced` read the
//! same records.

use std::collections::{BTreeMap, BTreeSet};

use automerge::sync::State;
use automerge::{AutoCommit, ChangeHash};
use serde::Deserialize;

use super::{now_string, ProfileError, NS_PROFILE, REVOKING_KEY};
use crate::store::{Store, StoreError};
use crate::sync::{self, Action, Colleague, OfflineRead};
use crate::{BlobHash, CaseId};

/// Acknowledged heads per case (the last `Saved`).
pub(super) const NS_ACKED: &str = "acked";
/// Case id → the heads the borough's trust hub holds durably, as the borough last said
/// (`HubSaved`): "also on the trust hub".
pub(super) const NS_HUB_ACKED: &str = "hub_acked";
/// Set (in [`NS_PROFILE`]) once the borough server has sent this device its first hub receipt
/// (`HubSaved`, recorded as [`Action::AlsoOnHub`]): from then on the device knows its borough
/// passes its cases on to a trust hub, so a change the hub has not acknowledged is "not yet on
/// the trust hub". Before it (a borough with no hub, or one too old to say), nothing is said
/// about a hub at all. A profile-wide mark rather than "some case has a receipt", so it
/// outlives the cases it came with (moved away, wiped) and a case opened offline afterwards
/// still counts as not on the hub. A new enrolment clears it: it describes the borough the
/// device was enrolled with.
pub(super) const HUB_REPORTED_KEY: &str = "hub_reported";
/// Each case's automerge sync state, so the next session resumes rather than starts over.
pub(super) const NS_SYNC_STATE: &str = "sync_state";
/// The outbox of reads made on this device, uploaded at the next sync.
pub(super) const LOG_READS: &str = "reads";
/// Who has accessed each case, as last fetched from the server.
pub(super) const NS_ACCESSES: &str = "accesses";
/// Cases the server said are no longer this device's team's (case id → when it said so, RFC 3339,
/// this device's clock): no new edits (see [`ProfileError::MovedAway`]).
pub(super) const NS_MOVED_AWAY: &str = "moved_away";

/// Where earlier versions noted since when each case had changes the server had not acknowledged
/// (key [`unsynced_since_key`], value RFC 3339, this device's clock; first the app's namespace).
/// Nothing writes it now: the time is read from the changes themselves
/// ([`unsynced_since_in`]). The old note is read only for changes of this device that carry no
/// time, and is deleted with the case.
pub(super) const NS_UNSYNCED_SINCE: &str = "app";

/// The key of a case's old "unsynced since" note in [`NS_UNSYNCED_SINCE`], as the app wrote it.
pub(super) fn unsynced_since_key(case: &CaseId) -> String {
    format!("unsynced_since:{case}")
}

/// Attachments the server said are durable on its disk (key [`blob_saved_key`], empty value).
pub(super) const NS_BLOBS_SAVED: &str = "blobs_saved";

/// The key of an attachment in [`NS_BLOBS_SAVED`]: its case, then its address.
fn blob_saved_key(case: &CaseId, hash: &BlobHash) -> String {
    format!("{case}/{hash}")
}

/// The server's team list, as last received (in [`NS_PROFILE`]; JSON).
pub(super) const COLLEAGUES_KEY: &str = "colleagues";

/// After this many appended chunks, a case's log is compacted into one snapshot, so loading a case
/// does not replay years of small saves.
pub const COMPACT_AFTER: usize = 32;

/// One gate for the writers of a device's store in this process: the profile's edits and the
/// wipe (the app's background sync wipes while its pages edit through the profile). An edit
/// checks that the device is not being revoked and writes its change under the gate, and the
/// wipe counts and removes under it, so a change is either counted by the wipe (and its case
/// kept) or refused: never written into a case the wipe has just removed.
static WRITE_GATE: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(super) fn write_gate() -> std::sync::MutexGuard<'static, ()> {
    // A writer that panicked left nothing half-done that the gate protects: the store is the truth.
    WRITE_GATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A device's sync records, over its store.
#[derive(Clone, Copy)]
pub struct DeviceBooks<'a> {
    store: &'a dyn Store,
}

impl<'a> DeviceBooks<'a> {
    /// The store these books are kept in.
    pub(super) fn store(&self) -> &'a dyn Store {
        self.store
    }

    /// The records kept in `store`.
    pub fn new(store: &'a dyn Store) -> Self {
        DeviceBooks { store }
    }

    /// Keep the server's team list, replacing the one kept before.
    pub fn note_colleagues(&self, list: &[Colleague]) -> Result<(), StoreError> {
        let json = serde_json::to_vec(list).expect("a team list serialises");
        self.store.put_meta(NS_PROFILE, COLLEAGUES_KEY, &json)
    }

    /// The server's team list as last received: empty before the first sync with a server that
    /// sends one. A damaged copy reads as empty (the next sync replaces it).
    pub fn colleagues(&self) -> Result<Vec<Colleague>, StoreError> {
        Ok(self
            .store
            .get_meta(NS_PROFILE, COLLEAGUES_KEY)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default())
    }

    /// The sync state saved for each case (a damaged one is left out: that case starts afresh).
    pub fn sync_states(&self) -> Result<BTreeMap<CaseId, State>, StoreError> {
        let mut states = BTreeMap::new();
        for (k, v) in self.store.scan_meta(NS_SYNC_STATE)? {
            if let (Ok(case), Ok(state)) = (k.parse::<CaseId>(), State::decode(&v)) {
                states.insert(case, state);
            }
        }
        Ok(states)
    }

    /// Save a case's sync state for the next session.
    pub fn save_sync_state(&self, case: &CaseId, state: &State) -> Result<(), StoreError> {
        self.store
            .put_meta(NS_SYNC_STATE, &case.to_string(), &state.encode())
    }

    /// The reads made on this device not yet sent to the server, oldest first.
    pub fn offline_reads(&self) -> Result<Vec<OfflineRead>, StoreError> {
        #[derive(Deserialize)]
        struct R {
            case: CaseId,
            at: String,
            what: String,
        }
        Ok(self
            .store
            .read_log(LOG_READS, 0)?
            .into_iter()
            .filter_map(|(seq, b)| {
                let r: R = serde_json::from_slice(&b).ok()?;
                Some(OfflineRead {
                    case: r.case,
                    at: r.at,
                    what: r.what,
                    seq,
                })
            })
            .collect())
    }

    /// The heads of a case the server last acknowledged (none yet: empty).
    pub fn acknowledged(&self, case: &CaseId) -> Result<Vec<ChangeHash>, StoreError> {
        Ok(self
            .store
            .get_meta(NS_ACKED, &case.to_string())?
            .map(|b| sync::decode_heads(&b))
            .unwrap_or_default())
    }

    /// The heads of a case the borough's trust hub holds durably, as the borough last said
    /// (none yet, or a borough with no hub: empty; see [`DeviceBooks::hub_reported`]).
    pub fn hub_acknowledged(&self, case: &CaseId) -> Result<Vec<ChangeHash>, StoreError> {
        Ok(self
            .store
            .get_meta(NS_HUB_ACKED, &case.to_string())?
            .map(|b| sync::decode_heads(&b))
            .unwrap_or_default())
    }

    /// Whether this device's borough server has said that it passes its cases on to a trust hub
    /// (it has sent a hub receipt since this device enrolled; see [`HUB_REPORTED_KEY`]). While
    /// false, nothing may be said about the hub: "not on the trust hub" would be a false alarm
    /// from a borough that has none.
    pub fn hub_reported(&self) -> Result<bool, StoreError> {
        Ok(self.store.get_meta(NS_PROFILE, HUB_REPORTED_KEY)?.is_some())
    }

    /// A case's document as its log in the store holds it, with how many chunks the log has
    /// (for [`DeviceBooks::compact_when_due`]); None when the device does not hold the case.
    pub fn load_doc(&self, case: &CaseId) -> Result<Option<(AutoCommit, usize)>, ProfileError> {
        let Some(chunks) = self.store.load_chunks(case)? else {
            return Ok(None);
        };
        let count = chunks.len();
        let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, c)| c).collect();
        let doc = AutoCommit::load(&bytes)
            .map_err(|e| ProfileError::Corrupt(format!("case {case}: {e}")))?;
        Ok(Some((doc, count)))
    }

    /// The store's part of what a sync session asks of its device, the same for every writer:
    /// keep a received chunk (the caller counts it for compaction), the acknowledged heads, the
    /// cases told moved away or granted again, the reads the server recorded, the revocation
    /// mark, and forget the enrolment of a device the server revoked. Actions with no record
    /// (sending, progress, refusals, the end) change nothing here.
    pub fn record(&self, action: &Action) -> Result<(), StoreError> {
        match action {
            Action::Persist { case, chunk } => self.store.append_chunk(case, chunk).map(|_| ()),
            Action::Acknowledged { case, heads } => {
                self.store
                    .put_meta(NS_ACKED, &case.to_string(), &sync::encode_heads(heads))
            }
            Action::AlsoOnHub { case, heads } => {
                self.store
                    .put_meta(NS_HUB_ACKED, &case.to_string(), &sync::encode_heads(heads))?;
                if !self.hub_reported()? {
                    self.store.put_meta(NS_PROFILE, HUB_REPORTED_KEY, b"1")?;
                }
                Ok(())
            }
            Action::ToldMoved { case } => self.note_moved_away(case),
            Action::Granted { cases } => self.note_granted(cases),
            Action::ReadsSaved { through } => self.store.trim_log(LOG_READS, *through),
            Action::RevocationOrdered(ordered) => self.note_revocation(*ordered),
            Action::Colleagues(list) => self.note_colleagues(list),
            // An older server revoked this device already: its enrolment opens nothing.
            Action::Wiped { revoked: true, .. } => self.forget_enrolment(),
            Action::Wiped { .. }
            | Action::Refused { .. }
            | Action::Moved { .. }
            | Action::Progress { .. }
            | Action::Send(_)
            | Action::Close { .. } => Ok(()),
        }
    }

    /// The compaction rule every writer of a device's store follows (the profile, and the app's
    /// background sync): once `appended` chunks have gone into a case's log since its last snapshot,
    /// replace the log with one snapshot. Returns the count to carry on from (1 after a compaction).
    ///
    /// The snapshot is made from the log as read back from the store, not from a document in memory:
    /// two writers share a device's store (the app saves edits while its background sync saves what
    /// the server sends), so a copy in memory may lack a chunk the other writer stored, and compacting
    /// from it would delete that chunk. Chunks appended after the read are past `through` and kept. A
    /// failed compaction loses nothing (the log stays as it was), so it is only logged, and tried again
    /// at the next append.
    pub fn compact_when_due(&self, case: &CaseId, appended: usize) -> usize {
        if appended < COMPACT_AFTER {
            return appended;
        }
        match self.compact_log(case) {
            Ok(()) => 1,
            Err(e) => {
                tracing::warn!(%case, error = %e, "compaction failed; the log is kept as it is");
                appended
            }
        }
    }

    fn compact_log(&self, case: &CaseId) -> Result<(), ProfileError> {
        let Some(log) = self.store.load_chunks(case)? else {
            return Ok(());
        };
        let Some(&(through, _)) = log.last() else {
            return Ok(());
        };
        let bytes: Vec<u8> = log.into_iter().flat_map(|(_, c)| c).collect();
        let snapshot = AutoCommit::load(&bytes)
            .map_err(|e| ProfileError::Corrupt(format!("case {case}: {e}")))?
            .save();
        Ok(self.store.compact_case(case, &snapshot, through)?)
    }

    /// Note whether the server is revoking this device (told at every welcome), durably, so every
    /// writer of the store (the profile, and the app whose background sync shares it) refuses new
    /// entries from then on. The mark outlives the wipe (a profile still open on the old enrolment
    /// must not write into a wiped store) and is cleared only by a new enrolment.
    pub fn note_revocation(&self, ordered: bool) -> Result<(), StoreError> {
        let _gate = write_gate();
        let noted = self.store.get_meta(NS_PROFILE, REVOKING_KEY)?.is_some();
        if noted == ordered {
            return Ok(());
        }
        if ordered {
            self.store.put_meta(NS_PROFILE, REVOKING_KEY, b"1")?;
        } else {
            self.store.delete_meta(NS_PROFILE, REVOKING_KEY)?;
        }
        self.store.flush()
    }

    /// Whether the server is revoking this device ([`DeviceBooks::note_revocation`]).
    pub fn being_revoked(&self) -> Result<bool, StoreError> {
        Ok(self.store.get_meta(NS_PROFILE, REVOKING_KEY)?.is_some())
    }

    /// A case's changes the server has not acknowledged, counted from the store itself (not from a
    /// copy in memory, which one of the store's two writers may hold stale).
    pub fn unsynced(&self, case: &CaseId) -> Result<usize, ProfileError> {
        let Some((mut doc, _)) = self.load_doc(case)? else {
            return Ok(0);
        };
        Ok(not_covered(&mut doc, &self.acknowledged(case)?))
    }

    /// A case's changes the borough's trust hub has not acknowledged (as of the last hub receipt
    /// the borough sent), counted as [`DeviceBooks::unsynced`] counts over the borough's
    /// acknowledgement: this includes the changes not yet on the borough server either. None
    /// when the borough has never said it has a hub ([`DeviceBooks::hub_reported`]): then there
    /// is nothing to count against, and nothing to tell the practitioner.
    pub fn not_on_hub(&self, case: &CaseId) -> Result<Option<usize>, ProfileError> {
        if !self.hub_reported()? {
            return Ok(None);
        }
        let Some((mut doc, _)) = self.load_doc(case)? else {
            return Ok(Some(0));
        };
        Ok(Some(not_covered(&mut doc, &self.hub_acknowledged(case)?)))
    }

    /// Since when `case` has had changes written on `device` that the server has not
    /// acknowledged, from the case as the store holds it ([`unsynced_since_in`]). Reads only.
    pub fn unsynced_since(
        &self,
        case: &CaseId,
        device: &crate::DeviceId,
    ) -> Result<Option<crate::model::Instant>, ProfileError> {
        let Some((mut doc, _)) = self.load_doc(case)? else {
            return Ok(None);
        };
        let acked = self.acknowledged(case)?;
        unsynced_since_in(self, case, &mut doc, &acked, device)
    }

    /// The server revoked this device and holds everything it acknowledged: remove every case with
    /// nothing left to upload, and the device's enrolment if no case is left. A case with changes the
    /// server does not have, or one that cannot be read, is kept and returned, never wiped: the device
    /// stays enrolled to upload it (the server keeps it able to, until the device confirms a wipe
    /// that kept nothing). Durable when it returns.
    pub fn wipe_acknowledged(&self) -> Result<Vec<CaseId>, ProfileError> {
        let _gate = write_gate();
        let mut kept = Vec::new();
        for case in self.store.list_cases()? {
            match self
                .unsynced(&case)
                .and_then(|n| Ok(n + self.unsent_blobs(&case)?.len()))
            {
                Ok(0) => self.forget_case(&case)?,
                Ok(_) | Err(ProfileError::Corrupt(_)) => kept.push(case),
                Err(e) => return Err(e),
            }
        }
        if kept.is_empty() {
            // The revocation mark stays: nothing more is written here until a new enrolment.
            self.store.delete_meta(NS_PROFILE, "enrolment")?;
            // Nor does the team list: it names the borough's staff.
            self.store.delete_meta(NS_PROFILE, COLLEAGUES_KEY)?;
        }
        self.store.flush()?;
        Ok(kept)
    }

    /// Forget this device's enrolment and the team list (its records, and the mark that it is
    /// being revoked, stay).
    pub fn forget_enrolment(&self) -> Result<(), StoreError> {
        self.store.delete_meta(NS_PROFILE, "enrolment")?;
        self.store.delete_meta(NS_PROFILE, COLLEAGUES_KEY)?;
        self.store.flush()
    }

    /// Remove a case and everything kept about it.
    pub fn forget_case(&self, case: &CaseId) -> Result<(), StoreError> {
        self.store.remove_case(case)?;
        let prefix = format!("{case}/");
        for (key, _) in self.store.scan_meta(NS_BLOBS_SAVED)? {
            if key.starts_with(&prefix) {
                self.store.delete_meta(NS_BLOBS_SAVED, &key)?;
            }
        }
        self.store.delete_meta(NS_ACKED, &case.to_string())?;
        self.store.delete_meta(NS_HUB_ACKED, &case.to_string())?;
        self.store.delete_meta(NS_SYNC_STATE, &case.to_string())?;
        self.store.delete_meta(NS_ACCESSES, &case.to_string())?;
        self.store
            .delete_meta(NS_UNSYNCED_SINCE, &unsynced_since_key(case))?;
        self.store.delete_meta(NS_MOVED_AWAY, &case.to_string())
    }

    /// The server said an attachment's bytes are durable on its disk. Durable here when this
    /// returns.
    pub fn note_blob_saved(&self, case: &CaseId, hash: &BlobHash) -> Result<(), StoreError> {
        self.store
            .put_meta(NS_BLOBS_SAVED, &blob_saved_key(case, hash), b"")?;
        self.store.flush()
    }

    /// Whether the server said an attachment's bytes are durable on its disk.
    pub fn blob_saved(&self, case: &CaseId, hash: &BlobHash) -> Result<bool, StoreError> {
        Ok(self
            .store
            .get_meta(NS_BLOBS_SAVED, &blob_saved_key(case, hash))?
            .is_some())
    }

    /// Attachments of a case whose bytes this device holds and the server has not said it has:
    /// work that exists only here. A case holding any is never wiped or forgotten.
    pub fn unsent_blobs(&self, case: &CaseId) -> Result<Vec<BlobHash>, ProfileError> {
        let Some((doc, _)) = self.load_doc(case)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for hash in crate::model::attachments::referenced_blobs(&doc) {
            if self.store.has_blob(case, &hash)? && !self.blob_saved(case, &hash)? {
                out.push(hash);
            }
        }
        Ok(out)
    }

    /// Record that the server told this device a case is no longer its team's: from now on the
    /// profile refuses edits to it, so an honest device never writes a change the server would
    /// refuse (it takes only what was written before the device was told). Durable when this
    /// returns, before the session goes on. The first telling stands. Every writer of a device's
    /// store that runs a sync session calls this (the profile, and the app's background sync).
    pub fn note_moved_away(&self, case: &CaseId) -> Result<(), StoreError> {
        if self
            .store
            .get_meta(NS_MOVED_AWAY, &case.to_string())?
            .is_none()
        {
            self.store
                .put_meta(NS_MOVED_AWAY, &case.to_string(), now_string().as_bytes())?;
            self.store.flush()?;
        }
        Ok(())
    }

    /// The server's welcome granted these cases in full: any of them that had moved away is this
    /// device's team's again, and may be edited.
    pub fn note_granted(&self, cases: &[CaseId]) -> Result<(), StoreError> {
        let granted: BTreeSet<String> = cases.iter().map(CaseId::to_string).collect();
        let mut removed = false;
        for (key, _) in self.store.scan_meta(NS_MOVED_AWAY)? {
            if granted.contains(&key) {
                self.store.delete_meta(NS_MOVED_AWAY, &key)?;
                removed = true;
            }
        }
        if removed {
            self.store.flush()?;
        }
        Ok(())
    }
}

/// The heads among `heads` that `doc` holds: an acknowledgement may name changes this device
/// has not received yet, and counting from a head unknown here would count everything.
fn known_heads(doc: &mut AutoCommit, heads: &[ChangeHash]) -> Vec<ChangeHash> {
    heads
        .iter()
        .filter(|h| doc.get_change_by_hash(h).is_some())
        .copied()
        .collect()
}

/// How many of `doc`'s changes are not covered by the `heads` a server acknowledged (the borough's
/// `Saved`, or the trust hub's as the borough passed it on): the one count behind "unsynced" and
/// "not yet on the trust hub", for the books and for the profile's copy in memory.
pub(super) fn not_covered(doc: &mut AutoCommit, heads: &[ChangeHash]) -> usize {
    let known = known_heads(doc, heads);
    doc.get_changes(&known).len()
}

/// Since when `doc` has had changes written on `device` that the server has not acknowledged:
/// the earliest time among the changes not covered by the `acked` heads whose actor is the
/// device. Changes other devices wrote are theirs to send, and an acknowledgement of part of the
/// changes leaves the earliest of the rest. A change with no time (none this code writes) falls
/// back on the note an earlier version kept in `books`, if any. Reads only: nothing to clear when
/// the server acknowledges.
pub(super) fn unsynced_since_in(
    books: &DeviceBooks<'_>,
    case: &CaseId,
    doc: &mut AutoCommit,
    acked: &[ChangeHash],
    device: &crate::DeviceId,
) -> Result<Option<crate::model::Instant>, ProfileError> {
    let known = known_heads(doc, acked);
    let actor = crate::model::actor_for_device(device);
    let times: Vec<i64> = doc
        .get_changes(&known)
        .iter()
        .filter(|c| c.actor_id() == &actor)
        .map(|c| c.timestamp())
        .collect();
    if times.is_empty() {
        return Ok(None);
    }
    let earliest = times.iter().filter(|t| **t > 0).min().and_then(|ms| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(*ms) * 1_000_000).ok()
    });
    let untimed = times.iter().any(|t| *t <= 0);
    let noted = if untimed || earliest.is_none() {
        books
            .store
            .get_meta(NS_UNSYNCED_SINCE, &unsynced_since_key(case))?
            .and_then(|b| {
                crate::model::Instant::parse(
                    &String::from_utf8_lossy(&b),
                    &time::format_description::well_known::Rfc3339,
                )
                .ok()
            })
    } else {
        None
    };
    Ok(match (earliest, noted) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}
