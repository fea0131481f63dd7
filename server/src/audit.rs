//! The audit log: who read or changed which case, when, from which device.
//!
//! A person whose record is kept has the right to know who accessed it, and a trust's information
//! governance lead must be able to rely on the answer. So every access is appended to one log in the
//! server's store, and the log is made *tamper-evident*: each record carries the SHA-256 of the
//! record before it, and its own hash over that link and its content. Editing, deleting or
//! reordering a record breaks the chain at that point, and [`AuditLog::verify`] names the first
//! record that no longer fits.
//!
//! Limits worth knowing: the store already seals every entry (AEAD), so changing the log at all
//! needs the server's key; the chain then catches anyone who has the key but not the patience to
//! rewrite every later hash consistently. Cutting records off the *end* leaves a valid shorter
//! chain: compare the head that [`VerifyReport`] gives with one noted earlier to catch that.
//!
//! The log is append-only by construction: nothing here removes or rewrites an entry, and it is
//! never trimmed. [`AuditLog::record`] only appends; durability comes with the caller's next
//! flush of the store (group commit), like every other write.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use polyphony_core::store::{Store, StoreError};
use polyphony_core::sync::OfflineRead;
use polyphony_core::{CaseId, DeviceId, PractitionerId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The name of the store log that holds the audit records.
pub const AUDIT_LOG: &str = "audit";

/// The meta namespace (and key) of a hint to where the log ends, so opening it does not read the
/// whole log. The hint may lag behind the true end (it is written every [`HEAD_HINT_EVERY`] records)
/// but is never trusted beyond that.
const HEAD_NS: &str = "audit";
const HEAD_KEY: &str = "head";
const HEAD_HINT_EVERY: u64 = 256;

/// The meta key (in [`HEAD_NS`]) of how far the per-case index is known to be complete: opening
/// the log indexes every record from there on again (indexing is idempotent), so a record whose
/// index entry a crash or a failed write left out is found.
const INDEXED_KEY: &str = "indexed-through";

/// The meta namespace holding a copy of every record about one case, keyed by its zero-padded
/// sequence number: a case's access list is read from here, not by reading the whole log. The log
/// stays the authority (`verify` reads it); the copies are what the person's access list shows.
fn case_index(case: &CaseId) -> String {
    format!("audit.case.{case}")
}

/// The longest text kept from a device for one record (a detail, a time), in characters: what a
/// device sends is bounded before it is stored for ever.
pub const MAX_DEVICE_TEXT: usize = 1024;

/// What can go wrong with the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store refused a read or a write.
    #[error("the audit log could not be read or written: {0}")]
    Store(#[from] StoreError),
    /// Verification found a record that does not fit the chain.
    #[error("the audit log fails verification at entry {seq}: {problem}. The log was altered or damaged from this entry on: keep a copy of the data directory for investigation and tell your information governance lead")]
    Tampered {
        /// The first entry that does not fit.
        seq: u64,
        /// What is wrong with it.
        problem: Tamper,
    },
    /// The log holds entries this server did not write (a second writer, which must not exist).
    #[error("the audit log is out of step (expected entry {expected}, the store wrote {written}): is another server process using this data directory?")]
    OutOfStep {
        /// The sequence number the record was made for.
        expected: u64,
        /// Where the store put it.
        written: u64,
    },
    /// A record could not be encoded (a bug).
    #[error(
        "an audit record could not be encoded: {0} (this is a bug in Polyphony; please report it)"
    )]
    Encode(String),
    /// The log does not hold a head that was anchored outside the server.
    #[error("the audit log does not match an anchor kept outside the server: {0}. Keep a copy of the data directory for investigation and tell your information governance lead")]
    Anchor(String),
}

/// Why a record failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tamper {
    /// The bytes are not an audit record.
    Unreadable(String),
    /// The entry is not where the chain expects it: one was deleted or the log reordered.
    Missing {
        /// What was found in its place: the position in the store, or the sequence number the
        /// record carries.
        found: u64,
    },
    /// The record's link does not match the hash of the record before it.
    BrokenChain,
    /// The record's content does not match its own hash: it was edited.
    Altered,
}

impl fmt::Display for Tamper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tamper::Unreadable(detail) => write!(f, "it is not a readable audit record ({detail})"),
            Tamper::Missing { found } => write!(
                f,
                "it is missing (entry {found} is in its place): an entry was deleted or the log reordered"
            ),
            Tamper::BrokenChain => f.write_str(
                "it does not link to the entry before it: an entry before it was deleted, replaced or reordered",
            ),
            Tamper::Altered => f.write_str("its content does not match its hash: it was edited"),
        }
    }
}

/// Who did something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// A practitioner's device.
    Device {
        /// The device.
        device: DeviceId,
        /// Whose device it is.
        practitioner: PractitionerId,
    },
    /// An administrator, through the `polyphony-server` command.
    Admin,
    /// The server itself.
    Server,
    /// A borough server, on its link to the trust hub (in the hub's log).
    Borough {
        /// The borough, as the hub knows it.
        borough: polyphony_core::BoroughId,
    },
    /// The trust hub, on a borough server's link to it (in the borough's log): what the link
    /// sent to the hub, and what it stored from it.
    Hub,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Device {
                device,
                practitioner,
            } => write!(f, "device {device} (practitioner {practitioner})"),
            Actor::Admin => f.write_str("admin"),
            Actor::Server => f.write_str("server"),
            Actor::Borough { borough } => write!(f, "borough {borough}"),
            Actor::Hub => f.write_str("trust hub"),
        }
    }
}

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A device connected.
    Connect,
    /// A device disconnected.
    Disconnect,
    /// A connection or a case was refused.
    Refused,
    /// A device enrolled.
    Enrol,
    /// A device's revocation was ordered or carried out.
    Revoke,
    /// A device was told to wipe its cases.
    Wipe,
    /// The server sent a case's data to a device, or (actor [`Actor::Admin`], on the trust hub)
    /// read a case itself to compute the trust-wide figures.
    Read,
    /// The server accepted changes to a case.
    Write,
    /// A device recorded that its user read a case, and reported it at its next sync (`at` is
    /// the device's time). Devices record every read, connected or not: despite the name (kept,
    /// as stored records are hashed with it), it does not mean the device was offline.
    OfflineRead,
    /// A case moved to another team.
    CaseMoved,
    /// A team was added.
    TeamAdded,
    /// A practitioner was added.
    PractitionerAdded,
    /// A practitioner left a team, or was removed with all their devices revoked.
    PractitionerRemoved,
    /// An enrolment code was issued.
    EnrolmentIssued,
    /// A practitioner's role was set.
    PractitionerRoleSet,
    /// On the trust hub: a borough was added.
    BoroughAdded,
    /// On a borough server: it joined the trust hub.
    HubJoined,
    /// On a borough server: it was rebuilt from its copy kept on the trust hub. On the hub: a
    /// borough fetched its kept copy to restore from.
    Restored,
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuditAction::Connect => "connect",
            AuditAction::Disconnect => "disconnect",
            AuditAction::Refused => "refused",
            AuditAction::Enrol => "enrol",
            AuditAction::Revoke => "revoke",
            AuditAction::Wipe => "wipe",
            AuditAction::Read => "read",
            AuditAction::Write => "write",
            AuditAction::OfflineRead => "offline_read",
            AuditAction::CaseMoved => "case_moved",
            AuditAction::TeamAdded => "team_added",
            AuditAction::PractitionerAdded => "practitioner_added",
            AuditAction::PractitionerRemoved => "practitioner_removed",
            AuditAction::EnrolmentIssued => "enrolment_issued",
            AuditAction::BoroughAdded => "borough_added",
            AuditAction::HubJoined => "hub_joined",
            AuditAction::Restored => "restored",
            AuditAction::PractitionerRoleSet => "practitioner_role_set",
        })
    }
}

/// One thing worth auditing. Never put clinical text in `detail`: say what kind of access it was,
/// not what the record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// When it happened (RFC 3339). The server's clock, except for an offline read, where it is the
    /// device's.
    pub at: String,
    /// Who did it.
    pub actor: Actor,
    /// What they did.
    pub action: AuditAction,
    /// To which case, if it concerned one.
    pub case: Option<CaseId>,
    /// Anything else worth knowing (a reason for a refusal, how many changes were accepted).
    pub detail: String,
}

impl AuditEvent {
    /// An event that happens now, by the server's clock.
    pub fn now(
        actor: Actor,
        action: AuditAction,
        case: Option<CaseId>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            at: now_rfc3339(),
            actor,
            action,
            case,
            detail: detail.into(),
        }
    }

    /// An offline read that a device reported. `at` keeps the device's time; the record's
    /// `recorded_at` will say when it reached the server. What the device sent is bounded in length,
    /// and a time that is not RFC 3339 is replaced by the server's, with the original kept in the
    /// detail.
    pub fn offline_read(
        device: DeviceId,
        practitioner: PractitionerId,
        read: &OfflineRead,
    ) -> Self {
        let what = bounded(&read.what);
        let (at, detail) = match OffsetDateTime::parse(&read.at, &Rfc3339) {
            Ok(_) => (read.at.clone(), format!("{what} (device outbox #{})", read.seq)),
            Err(_) => (
                now_rfc3339(),
                format!(
                    "{what} (device outbox #{}; the device gave an unreadable time {:?}, so this is the upload time)",
                    read.seq,
                    bounded(&read.at)
                ),
            ),
        };
        Self {
            at,
            actor: Actor::Device {
                device,
                practitioner,
            },
            action: AuditAction::OfflineRead,
            case: Some(read.case),
            detail,
        }
    }
}

/// What a device said it read a case for ("case page", "export pdf", ...), from the detail
/// [`AuditEvent::offline_read`] wrote: without the device's outbox number, which is for the
/// audit's reader, not the person's.
pub fn device_read_purpose(detail: &str) -> &str {
    detail
        .rfind(" (device outbox #")
        .map_or(detail, |i| &detail[..i])
}

/// An event as stored: numbered, timestamped on arrival, and chained to the record before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Its position in the log, from 0.
    pub seq: u64,
    /// The hash of the record before it, hex (64 zeros for the first).
    pub prev: String,
    /// When the server recorded it (RFC 3339); differs from `event.at` for offline reads.
    pub recorded_at: String,
    /// What happened.
    pub event: AuditEvent,
    /// SHA-256 over the bytes of `prev` and the canonical serialisation of every other field, hex.
    pub hash: String,
}

/// What is hashed: the record without its hash, serialised as compact JSON with the fields in this
/// order (serde_json writes struct fields in declaration order, with no whitespace, which makes
/// this serialisation canonical for a given record).
#[derive(Serialize)]
struct RecordBody<'a> {
    seq: u64,
    prev: &'a str,
    recorded_at: &'a str,
    event: &'a AuditEvent,
}

impl AuditRecord {
    fn body(&self) -> RecordBody<'_> {
        RecordBody {
            seq: self.seq,
            prev: &self.prev,
            recorded_at: &self.recorded_at,
            event: &self.event,
        }
    }
}

/// The result of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// How many records were checked.
    pub entries: u64,
    /// The hash of the last record, hex (64 zeros for an empty log): note it, and a later
    /// verification that reports fewer entries or a head that does not follow from it reveals a
    /// truncated log.
    pub head: String,
}

/// Where the chain ends: what the next record links to.
#[derive(Debug, Clone, Copy)]
struct ChainHead {
    next_seq: u64,
    last_hash: [u8; 32],
    /// A write failed half-way, so the store may hold a record this head does not know: read the
    /// end of the log again before the next record.
    stale: bool,
    /// An index write failed since the last index hint: do not move the hint past it.
    index_gap: bool,
}

/// The audit log over a store. Share it behind an `Arc`; [`AuditLog::record`] may be called from
/// many tasks at once.
pub struct AuditLog {
    store: Arc<dyn Store>,
    head: Mutex<ChainHead>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = self.lock();
        f.debug_struct("AuditLog")
            .field("next_seq", &head.next_seq)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Open the audit log in `store`, finding where its chain ends. Refuses a log whose last record
    /// is unreadable, since nothing could be chained to it.
    pub fn open(store: Arc<dyn Store>) -> Result<Self, AuditError> {
        let head = find_head(&*store)?;
        tracing::debug!(entries = head.next_seq, "audit log opened");
        reindex(&*store, head.next_seq)?;
        Ok(Self {
            store,
            head: Mutex::new(head),
        })
    }

    /// Append an event; returns its sequence number. Records are numbered and chained in the order
    /// the calls take the log's lock. The record is durable after the store's next flush.
    pub fn record(&self, event: AuditEvent) -> Result<u64, AuditError> {
        let mut head = self.lock();
        if head.stale {
            *head = find_head(&*self.store)?;
            // A record the failed write left in the log may have no index entry.
            head.index_gap = true;
        }
        let seq = head.next_seq;
        let mut record = AuditRecord {
            seq,
            prev: hex::encode(head.last_hash),
            recorded_at: now_rfc3339(),
            event,
            hash: String::new(),
        };
        let hash = hash_record(&head.last_hash, &record)?;
        record.hash = hex::encode(hash);
        let bytes = serde_json::to_vec(&record).map_err(|e| AuditError::Encode(e.to_string()))?;
        let written = self.store.append_log(AUDIT_LOG, &bytes).inspect_err(|_| {
            head.stale = true;
        })?;
        if written != seq {
            head.stale = true;
            return Err(AuditError::OutOfStep {
                expected: seq,
                written,
            });
        }
        head.next_seq = seq + 1;
        head.last_hash = hash;
        if let Some(case) = record.event.case {
            if let Err(e) = self
                .store
                .put_meta(&case_index(&case), &format!("{seq:020}"), &bytes)
            {
                tracing::warn!(error = %e, "could not index an audit record; it is found again at the next start");
                head.index_gap = true;
            }
        }
        if seq.is_multiple_of(HEAD_HINT_EVERY) && !head.index_gap {
            if let Err(e) =
                self.store
                    .put_meta(HEAD_NS, INDEXED_KEY, (seq + 1).to_string().as_bytes())
            {
                tracing::warn!(error = %e, "could not note how far the audit index reaches");
            }
        }
        if seq.is_multiple_of(HEAD_HINT_EVERY) {
            // Only a hint: a failure costs a longer read at the next start, nothing more.
            if let Err(e) = self
                .store
                .put_meta(HEAD_NS, HEAD_KEY, seq.to_string().as_bytes())
            {
                tracing::warn!(error = %e, "could not note where the audit log ends");
            }
        }
        Ok(seq)
    }

    /// The store was reopened after a disk error: records written since its last flush may be
    /// gone with the old engine, so find where the chain ends again before the next record
    /// (rather than link it to a record the store no longer holds).
    pub fn reopened(&self) {
        self.lock().stale = true;
    }

    /// Every record, or those about one case, oldest first.
    pub fn entries(&self, case: Option<CaseId>) -> Result<Vec<AuditRecord>, AuditError> {
        match case {
            // One case: its index only, never the whole log (an access list is asked for often).
            Some(case) => self
                .store
                .scan_meta(&case_index(&case))?
                .into_iter()
                .map(|(key, bytes)| {
                    let seq = key.parse::<u64>().map_err(|_| AuditError::Tampered {
                        seq: 0,
                        problem: Tamper::Unreadable(format!(
                            "the audit index of case {case} has a bad key {key:?}"
                        )),
                    })?;
                    parse_record(seq, &bytes)
                })
                .collect(),
            None => self
                .store
                .read_log(AUDIT_LOG, 0)?
                .into_iter()
                .map(|(seq, bytes)| parse_record(seq, &bytes))
                .collect(),
        }
    }

    /// How many records the log holds, and the last one's hash (hex; zeros for an empty log).
    pub fn head(&self) -> Result<(u64, String), AuditError> {
        let mut head = self.lock();
        if head.stale {
            *head = find_head(&*self.store)?;
            head.index_gap = true;
        }
        Ok((head.next_seq, hex::encode(head.last_hash)))
    }

    /// Check that the log still holds, for each anchor `(records, hash)` kept outside the server,
    /// record number `records - 1` with that hash: a log that lost its tail, or an older copy, does
    /// not. Reads the log once.
    pub fn holds_all(&self, anchors: &[(u64, String)]) -> Result<(), AuditError> {
        let log = self.store.read_log(AUDIT_LOG, 0)?;
        for (records, hash) in anchors {
            if *records == 0 {
                continue;
            }
            let seq = records - 1;
            let problem = match log.get(seq as usize) {
                Some((position, bytes)) if *position == seq => {
                    let record = parse_record(seq, bytes)?;
                    if record.hash == *hash {
                        continue;
                    }
                    format!(
                        "record {seq} has hash {}, not the {hash} an anchor signed: the log was replaced by another",
                        record.hash
                    )
                }
                _ => format!(
                    "the log ends before record {seq}, which an anchor signed: records were lost from its end, or an older copy was restored"
                ),
            };
            return Err(AuditError::Anchor(problem));
        }
        Ok(())
    }

    /// Check the whole chain: see [`verify_records`].
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        verify_records(self.store.read_log(AUDIT_LOG, 0)?)
    }

    fn lock(&self) -> MutexGuard<'_, ChainHead> {
        // The head is only updated after a successful append, so it is consistent even if a holder
        // panicked.
        self.head
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Index (again) every record about a case from where the index is known to be complete to the
/// end of the log (`end`), then note that it is complete. The first open of a log written before
/// the index existed indexes it all.
fn reindex(store: &dyn Store, end: u64) -> Result<(), AuditError> {
    let from = store
        .get_meta(HEAD_NS, INDEXED_KEY)?
        .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<u64>().ok())
        .unwrap_or(0);
    if from >= end {
        return Ok(());
    }
    let mut indexed = 0u64;
    for (seq, bytes) in store.read_log(AUDIT_LOG, from)? {
        let record = parse_record(seq, &bytes)?;
        if let Some(case) = record.event.case {
            store.put_meta(&case_index(&case), &format!("{seq:020}"), &bytes)?;
            indexed += 1;
        }
    }
    store.put_meta(HEAD_NS, INDEXED_KEY, end.to_string().as_bytes())?;
    tracing::debug!(from, end, indexed, "audit records indexed by case");
    Ok(())
}

/// Verify a log given as `(position, bytes)` pairs in order, as the store returns them: positions
/// and sequence numbers count up from 0 without gaps, each record links to the hash of the one
/// before (zeros for the first), and each record's hash matches its content. The error names the
/// first record that fails.
pub fn verify_records(
    records: impl IntoIterator<Item = (u64, Vec<u8>)>,
) -> Result<VerifyReport, AuditError> {
    let mut expected: u64 = 0;
    let mut last_hash = [0u8; 32];
    for (position, bytes) in records {
        let fail = |problem| AuditError::Tampered {
            seq: expected,
            problem,
        };
        if position != expected {
            return Err(fail(Tamper::Missing { found: position }));
        }
        let record = parse_record(position, &bytes)?;
        if record.seq != expected {
            return Err(fail(Tamper::Missing { found: record.seq }));
        }
        if record.prev != hex::encode(last_hash) {
            return Err(fail(Tamper::BrokenChain));
        }
        let hash = hash_record(&last_hash, &record)?;
        if record.hash != hex::encode(hash) {
            return Err(fail(Tamper::Altered));
        }
        last_hash = hash;
        expected += 1;
    }
    Ok(VerifyReport {
        entries: expected,
        head: hex::encode(last_hash),
    })
}

/// SHA-256 over the previous hash and the record's canonical body.
fn hash_record(prev: &[u8; 32], record: &AuditRecord) -> Result<[u8; 32], AuditError> {
    let body = serde_json::to_vec(&record.body()).map_err(|e| AuditError::Encode(e.to_string()))?;
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(&body);
    Ok(hasher.finalize().into())
}

fn parse_record(position: u64, bytes: &[u8]) -> Result<AuditRecord, AuditError> {
    serde_json::from_slice(bytes).map_err(|e| AuditError::Tampered {
        seq: position,
        problem: Tamper::Unreadable(e.to_string()),
    })
}

/// Read the end of the log: from the hint if there is one, else from the start.
fn find_head(store: &dyn Store) -> Result<ChainHead, AuditError> {
    let hint = store
        .get_meta(HEAD_NS, HEAD_KEY)?
        .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<u64>().ok())
        .unwrap_or(0);
    let mut tail = store.read_log(AUDIT_LOG, hint)?;
    if tail.is_empty() && hint > 0 {
        // The hint is ahead of the log (its write reached disk and the record's did not): distrust it.
        tail = store.read_log(AUDIT_LOG, 0)?;
    }
    let Some((position, bytes)) = tail.pop() else {
        return Ok(ChainHead {
            next_seq: 0,
            last_hash: [0; 32],
            stale: false,
            index_gap: false,
        });
    };
    let record = parse_record(position, &bytes)?;
    let mut last_hash = [0u8; 32];
    if record.seq != position || hex::decode_to_slice(&record.hash, &mut last_hash).is_err() {
        return Err(AuditError::Tampered {
            seq: position,
            problem: Tamper::Unreadable(
                "the last record's number or hash is malformed; run `polyphony-server audit --verify`"
                    .into(),
            ),
        });
    }
    Ok(ChainHead {
        next_seq: position + 1,
        last_hash,
        stale: false,
        index_gap: false,
    })
}

fn now_rfc3339() -> String {
    crate::registry::rfc3339(OffsetDateTime::now_utc())
}

/// Text from a device, cut to [`MAX_DEVICE_TEXT`] characters.
fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_DEVICE_TEXT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests;
