//! Safekeeping, the borough's side: what a rebuilt borough server needs (its CA, its registry, its
//! audit log) is kept on the trust hub, sealed under a **recovery key** made when the borough
//! joins and given to its administrator once; the hub stores the sealed parts and can open none
//! of them (see [`crate::session::keep`] for the hub's side). With the key and a new code from the
//! hub, [`restore`] rebuilds an empty data directory: the same CA (so every device's certificate
//! and pinned fingerprint still hold), the same registry (teams, practitioners, devices, who holds
//! which case), and the audit log as far as the hub holds it, with a record of the restore
//! chained after it. The cases come back over the link once the server starts.
//!
//! What leaves the borough, and when: the registry as a whole (a new generation whenever it
//! differs from the one the hub last kept), and the audit log in order from where the hub's copy
//! ends, checked every [`KEEP_EVERY`] while the link is up. Nothing is sent before it is durable
//! on the borough's disk, so the hub never keeps a record the borough could still lose.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use polyphony_core::net::FramedStream;
use polyphony_core::store::{SealKey, Store, StoreError};
use polyphony_core::sync::{Frame, KeepPart, Kept, Shelf, DEFAULT_MAX_FRAME};
use polyphony_core::BoroughId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::membership::{self, HubMembership};
use crate::audit::{verify_records, Actor, AuditAction, AuditEvent, AUDIT_LOG};
use crate::config::ServerConfig;
use crate::driver::CoreDriver;
use crate::registry::Registry;
use crate::session::keep::{MAX_AUDIT_RECORDS_PER_PART, PART_BYTES};
use crate::session::{off_runtime, Shared};

/// How often a live link looks for registry changes and new audit records to send, by default
/// (`hub_keep_every_secs`).
pub const KEEP_EVERY: Duration = Duration::from_secs(30);

/// The most audit records sent in one round: a long log is sent over several rounds (one after
/// another while there is more), so one round seals and sends a bounded part of it. (The store
/// reads the log from where the hub's copy ends to its end; the first round of a long log reads
/// it whole.)
const AUDIT_RECORDS_PER_ROUND: usize = 100_000;

/// The store namespace of what the hub acknowledged keeping.
const NS_KEEP: &str = "hub.keep";
const KEY_AUDIT: &str = "audit-through";
const KEY_REGISTRY: &str = "registry-digest";
const KEY_REGISTRY_AT: &str = "registry-kept-at";

/// The store namespace of the server's own secrets (its CA; see `data_dir`).
const NS_SERVER: &str = "server";

const RECOVERY_PREFIX: &str = "polyphony-recovery-1-";

/// The key a borough's kept copy is sealed under. Made when the borough joins the hub, shown to
/// its administrator once, kept in the borough's (encrypted) store; never sent to the hub.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryKey([u8; 32]);

impl fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryKey(..)")
    }
}

impl RecoveryKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        RecoveryKey(bytes)
    }

    /// The key as text, to write to a file.
    pub fn to_text(&self) -> String {
        format!("{RECOVERY_PREFIX}{}", hex::encode(self.0))
    }

    /// A key written by [`RecoveryKey::to_text`] (surrounding white space ignored).
    pub fn parse(text: &str) -> Result<Self, String> {
        let hex_part = text.trim().strip_prefix(RECOVERY_PREFIX).ok_or_else(|| {
            format!("not a Polyphony recovery key (it begins with {RECOVERY_PREFIX})")
        })?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes)
            .map_err(|_| "the recovery key is damaged (64 hex digits expected)".to_string())?;
        Ok(RecoveryKey(bytes))
    }

    fn seal_key(&self) -> SealKey {
        SealKey::from_bytes(self.0)
    }
}

/// What a part's seal is bound to: the borough and every number the part carries in the clear,
/// so the hub cannot hand one borough's part to another, or move a part to another place.
fn aad(borough: &BoroughId, shelf: Shelf, first: u64, count: u64, last: bool) -> Vec<u8> {
    let mut aad = b"polyphony kept copy 1".to_vec();
    aad.extend_from_slice(borough.0.as_bytes());
    aad.push(match shelf {
        Shelf::Registry => 0,
        Shelf::Audit => 1,
    });
    aad.extend_from_slice(&first.to_be_bytes());
    aad.extend_from_slice(&count.to_be_bytes());
    aad.push(u8::from(last));
    aad
}

fn seal(
    key: &RecoveryKey,
    borough: &BoroughId,
    (shelf, first, count, last): (Shelf, u64, u64, bool),
    plain: &[u8],
) -> KeepPart {
    KeepPart {
        shelf,
        first,
        count,
        last,
        sealed: key
            .seal_key()
            .seal(&aad(borough, shelf, first, count, last), plain),
    }
}

fn open(key: &RecoveryKey, borough: &BoroughId, part: &KeepPart) -> Result<Vec<u8>, String> {
    key.seal_key()
        .open(
            &aad(borough, part.shelf, part.first, part.count, part.last),
            &part.sealed,
        )
        .map_err(|_| {
            "a part of the kept copy does not open with this recovery key (another borough's key, an older key, or a damaged part)".to_string()
        })
}

/// The registry copy: every entry of the server's own namespace (its CA) and of the registry's.
#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    /// When it was made (RFC 3339).
    made_at: String,
    /// `(namespace, key, value as hex)`, in namespace and key order.
    entries: Vec<(String, String, String)>,
}

fn snapshot_entries(
    store: &dyn Store,
    registry: &Registry,
) -> Result<Vec<(String, String, String)>, String> {
    let mut namespaces = vec![NS_SERVER.to_string()];
    namespaces.extend(registry.namespaces().map_err(|e| e.to_string())?);
    let mut entries = Vec::new();
    for ns in namespaces {
        let mut values = store.scan_meta(&ns).map_err(|e| e.to_string())?;
        values.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in values {
            entries.push((ns.clone(), key, hex::encode(value)));
        }
    }
    Ok(entries)
}

fn digest(entries: &[&(String, String, String)]) -> String {
    let bytes = serde_json::to_vec(entries).expect("entries serialise");
    hex::encode(Sha256::digest(bytes))
}

/// Whether an entry changes with every sync (which cases a device holds, was told moved, the
/// offline reads it reported): what the registry copy may lag behind by
/// [`REGISTRY_LAG`].
fn volatile(ns: &str) -> bool {
    ns.starts_with("registry.held.")
        || ns.starts_with("registry.told-moved.")
        || ns == "registry.reads-through"
}

/// How long the kept registry copy may lag behind entries that change with every sync
/// ([`volatile`]): a copy is several megabytes at a large borough, not sent every
/// [`KEEP_EVERY`] for them. Teams, practitioners, devices, enrolments and case ownership go at
/// once.
pub const REGISTRY_LAG: Duration = Duration::from_secs(15 * 60);

/// The digests of the registry copy, as kept: of what must go at once, then of the whole.
fn digests(entries: &[(String, String, String)]) -> String {
    let core: Vec<_> = entries.iter().filter(|e| !volatile(&e.0)).collect();
    let all: Vec<_> = entries.iter().collect();
    format!("{}:{}", digest(&core), digest(&all))
}

/// Whether a registry copy is due: none kept yet, what must go at once changed, or anything
/// changed and the kept copy is older than [`REGISTRY_LAG`].
fn due_again(kept: Option<&str>, now: &str, kept_at: Option<time::OffsetDateTime>) -> bool {
    let Some(kept) = kept else {
        return true;
    };
    let core = |d: &str| d.split(':').next().map(str::to_string);
    if core(kept) != core(now) {
        return true;
    }
    kept != now
        && kept_at.is_none_or(|at| {
            time::OffsetDateTime::now_utc() - at
                >= time::Duration::try_from(REGISTRY_LAG).unwrap_or(time::Duration::MINUTE)
        })
}

fn mark(store: &dyn Store, key: &str) -> Result<Option<String>, StoreError> {
    Ok(store
        .get_meta(NS_KEEP, key)?
        .map(|b| String::from_utf8_lossy(&b).to_string()))
}

/// Forget what the hub acknowledged keeping: the borough joined again with a new recovery key,
/// and its whole copy is sent again under it.
pub fn forget_kept(store: &dyn Store) -> Result<(), StoreError> {
    for (key, _) in store.scan_meta(NS_KEEP)? {
        store.delete_meta(NS_KEEP, &key)?;
    }
    Ok(())
}

/// What the hub keeps of this borough, as the borough last heard, for `hub status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Safekeeping {
    /// Whether this borough has a recovery key (joined since safekeeping was added).
    pub recovery_key: bool,
    /// When the registry copy the hub keeps was made (RFC 3339), if it keeps one.
    pub registry_kept_at: Option<String>,
    /// Whether the registry changed since that copy (which cases devices hold, what they were
    /// told, the offline reads they reported go within [`REGISTRY_LAG`]; the rest at once).
    pub registry_changed_since: bool,
    /// How many audit records the hub keeps.
    pub audit_records_kept: u64,
    /// How many the borough's log holds.
    pub audit_records: u64,
}

/// What the hub keeps of this borough, as the borough last heard.
pub fn safekeeping(
    store: &dyn Store,
    registry: &Registry,
    membership: Option<&HubMembership>,
) -> Result<Safekeeping, String> {
    let audit_records_kept = mark(store, KEY_AUDIT)
        .map_err(|e| e.to_string())?
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let audit_records = store
        .read_log(AUDIT_LOG, audit_records_kept)
        .map_err(|e| e.to_string())?
        .len() as u64
        + audit_records_kept;
    let kept_digest = mark(store, KEY_REGISTRY).map_err(|e| e.to_string())?;
    let now = digests(&snapshot_entries(store, registry)?);
    Ok(Safekeeping {
        recovery_key: membership.is_some_and(|m| m.recovery_key.is_some()),
        registry_kept_at: mark(store, KEY_REGISTRY_AT).map_err(|e| e.to_string())?,
        registry_changed_since: kept_digest.as_deref() != Some(now.as_str()),
        audit_records_kept,
        audit_records,
    })
}

/// One round's parts, and what the borough records once the hub keeps them.
struct Round {
    parts: Vec<KeepPart>,
    /// The registry copy's digest and time, if this round sends one.
    registry: Option<(String, String)>,
    /// The group-commit ticket covering everything read for the parts.
    ticket: u64,
    /// More audit records wait past this round's.
    more: bool,
}

/// The parts to send now: a new registry generation if it changed since the kept one, and the
/// audit records from where the hub's copy ends.
fn round(
    shared: &Shared,
    key: &RecoveryKey,
    borough: &BoroughId,
    per_round: usize,
) -> Result<Round, String> {
    let store = &*shared.storage.store;
    // Noted before anything is read: the ticket covers every write the parts could hold.
    let generation = shared.storage.group.generation();
    let mut parts = Vec::new();
    let entries = snapshot_entries(store, &shared.registry)?;
    let now_digest = digests(&entries);
    let kept = mark(store, KEY_REGISTRY).map_err(|e| e.to_string())?;
    let kept_at = mark(store, KEY_REGISTRY_AT)
        .map_err(|e| e.to_string())?
        .and_then(|at| {
            time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339).ok()
        });
    let mut registry = None;
    if due_again(kept.as_deref(), &now_digest, kept_at) {
        let made_at = crate::registry::rfc3339(time::OffsetDateTime::now_utc());
        let bytes = serde_json::to_vec(&Snapshot {
            made_at: made_at.clone(),
            entries,
        })
        .map_err(|e| e.to_string())?;
        // A generation number that only grows, even across a rebuild (the hub keeps the newest
        // generation that arrives whole, whatever its number).
        let gen = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
        let chunks: Vec<&[u8]> = bytes.chunks(PART_BYTES).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            parts.push(seal(
                key,
                borough,
                (Shelf::Registry, gen, i as u64, last),
                chunk,
            ));
        }
        registry = Some((now_digest, made_at));
    }
    let from: u64 = mark(store, KEY_AUDIT)
        .map_err(|e| e.to_string())?
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let (held, _) = shared.audit.head().map_err(|e| e.to_string())?;
    // The hub said it keeps more than this log holds (this borough's store was put back from an
    // older copy of its own): the hub's copy is of another history; begin it again from this
    // log, or the kept chain would break where the two part.
    let from = if from > held { 0 } else { from };
    let mut records = store.read_log(AUDIT_LOG, from).map_err(|e| e.to_string())?;
    let more = records.len() > per_round;
    records.truncate(per_round);
    let mut first = from;
    let mut batch: Vec<String> = Vec::new();
    let mut bytes = 0;
    let flush = |batch: &mut Vec<String>, first: &mut u64, parts: &mut Vec<KeepPart>| {
        if batch.is_empty() {
            return;
        }
        let count = batch.len() as u64;
        let plain = serde_json::to_vec(&*batch).expect("records serialise");
        parts.push(seal(
            key,
            borough,
            (Shelf::Audit, *first, count, true),
            &plain,
        ));
        *first += count;
        batch.clear();
    };
    for (_, record) in records {
        let record = String::from_utf8(record).map_err(|_| "an audit record is not UTF-8")?;
        if batch.len() as u64 >= MAX_AUDIT_RECORDS_PER_PART.min(1_000)
            || bytes + record.len() > PART_BYTES
        {
            flush(&mut batch, &mut first, &mut parts);
            bytes = 0;
        }
        bytes += record.len();
        batch.push(record);
    }
    flush(&mut batch, &mut first, &mut parts);
    Ok(Round {
        parts,
        registry,
        ticket: shared.storage.group.current_in(generation),
        more,
    })
}

/// Record what the hub says it keeps.
fn record_kept(store: &dyn Store, kept: &Kept, registry: Option<&(String, String)>) {
    let put = |key: &str, value: &str| {
        if let Err(e) = store.put_meta(NS_KEEP, key, value.as_bytes()) {
            warn!(error = %e, "could not note what the trust hub keeps; it is sent again");
        }
    };
    put(KEY_AUDIT, &kept.audit_through.to_string());
    if let Some((digest, at)) = registry {
        put(KEY_REGISTRY, digest);
        put(KEY_REGISTRY_AT, at);
    }
}

/// Send the borough's copy over `conn` (a welcomed link to a hub that keeps copies) until the
/// connection ends: a round at once, then one every `every` ([`KEEP_EVERY`] by default).
pub(super) async fn keep_while(
    shared: Arc<Shared>,
    driver: Arc<CoreDriver>,
    conn: quinn::Connection,
    membership: HubMembership,
    every: Duration,
) {
    let Some(key) = membership.recovery_key() else {
        info!("this borough has no recovery key (it joined the hub before safekeeping): join again to have its copy kept");
        return;
    };
    loop {
        let more = match send_round(&shared, &driver, &conn, &key, &membership.borough).await {
            Ok(more) => more,
            Err(e) => {
                warn!(error = %e, "the borough's copy could not be sent to the trust hub; trying again");
                false
            }
        };
        if more {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = conn.closed() => return,
        }
    }
}

/// One round: the parts due, each answered by the hub's `Kept`; whether more are due at once.
async fn send_round(
    shared: &Arc<Shared>,
    driver: &CoreDriver,
    conn: &quinn::Connection,
    key: &RecoveryKey,
    borough: &BoroughId,
) -> Result<bool, String> {
    let round = off_runtime(|| round(shared, key, borough, AUDIT_RECORDS_PER_ROUND))?;
    if round.parts.is_empty() {
        return Ok(false);
    }
    driver
        .durable(round.ticket)
        .await
        .map_err(|e| format!("this borough's disk: {e}"))?;
    let (send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let mut stream = FramedStream::with_limit(send, recv, DEFAULT_MAX_FRAME);
    for part in round.parts {
        let registry_done = part.shelf == Shelf::Registry && part.last;
        stream
            .write_frames(&[Frame::Keep(part)])
            .await
            .map_err(|e| e.to_string())?;
        let kept = match stream.read_frame().await.map_err(|e| e.to_string())? {
            Some(Frame::Kept(k)) => k,
            Some(Frame::Error(r)) => return Err(format!("the trust hub refused: {}", r.message)),
            Some(other) => return Err(format!("the trust hub answered {}", other.kind())),
            None => return Err("the trust hub closed the stream".to_string()),
        };
        off_runtime(|| {
            record_kept(
                &*shared.storage.store,
                &kept,
                round.registry.as_ref().filter(|_| registry_done),
            )
        });
    }
    let _ = stream.send.finish();
    Ok(round.more)
}

/// What a restore rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// The borough's id on the hub.
    pub borough: BoroughId,
    /// When the registry copy was made (RFC 3339).
    pub registry_made_at: String,
    /// How many teams, practitioners and devices it holds.
    pub teams: usize,
    /// Practitioners.
    pub practitioners: usize,
    /// Devices.
    pub devices: usize,
    /// How many cases it registers (their records come over the link once the server starts).
    pub cases: usize,
    /// How many audit records were restored.
    pub audit_records: u64,
    /// The last restored record's hash (zeros for none).
    pub audit_head: String,
}

/// Rebuild an empty data directory from the copy the hub keeps: join the hub at `hub` with the
/// one-time `code` its administrator issued for this borough (a new link certificate, the same
/// borough), fetch the copy, open it with `key`, and write the CA, the registry and the audit
/// log, then a record of the restore. Refused, with nothing written, if the data directory
/// already holds a borough, or if any part does not open or the audit chain does not verify.
pub async fn restore(
    config: &ServerConfig,
    hub: &str,
    code: &str,
    name: &str,
    key: RecoveryKey,
) -> Result<Restored, String> {
    let store = crate::data_dir::open_store(config).map_err(|e| e.to_string())?;
    // A restore that stopped part-way (a crash, a full disk) left its mark: this one goes on
    // from where it stopped (what it writes again is the same, and the audit records already
    // written must be the copy's first).
    let begun = store
        .get_meta(NS_SERVER, crate::data_dir::RESTORING)
        .map_err(|e| e.to_string())?;
    let resuming = begun.is_some();
    let empty = store
        .get_meta(NS_SERVER, "ca_cert")
        .map_err(|e| e.to_string())?
        .is_none()
        && store
            .read_log(AUDIT_LOG, 0)
            .map_err(|e| e.to_string())?
            .is_empty()
        && store.list_cases().map_err(|e| e.to_string())?.is_empty();
    if !empty && !resuming {
        return Err(format!(
            "{} already holds a borough server's data: a restore goes into an empty data directory",
            config.data_dir.display()
        ));
    }
    let mut joined = membership::join(hub, code, name, &key).await?;
    joined.recovery_key = Some(key.to_text());
    let (parts, kept) = fetch(hub, &joined).await?;
    let borough = joined.borough;
    // The mark names the registry copy being written: a restore going on from a stopped one
    // writes the same copy, or none (keys only the other copy had would stay).
    let generation = kept.registry.unwrap_or(0).to_string();
    if begun.is_some_and(|b| b != generation.as_bytes()) {
        return Err(
            "the copy on the hub changed since the restore that stopped here began: move this data directory aside and restore into an empty one"
                .into(),
        );
    }
    let mark = || -> Result<(), StoreError> {
        store.put_meta(NS_SERVER, crate::data_dir::RESTORING, generation.as_bytes())?;
        store.flush()
    };
    mark().map_err(|e| format!("could not begin writing the restored data: {e}"))?;
    let (made_at, report) = rebuild(&*store, &key, &borough, &parts, &kept)?;
    let write = || -> Result<(), StoreError> {
        membership::save(&*store, &joined)?;
        store.put_meta(NS_KEEP, KEY_AUDIT, report.entries.to_string().as_bytes())?;
        store.delete_meta(NS_SERVER, crate::data_dir::RESTORING)?;
        store.flush()
    };
    write().map_err(|e| format!("could not write the restored data: {e}"))?;
    // Over the store already open: closing it and opening another would, on PostgreSQL, race
    // its own writer lock's session on the way out (and be refused as another node).
    let opened = crate::data_dir::open_with_store(config, store).map_err(|e| e.to_string())?;
    let restored = Restored {
        borough,
        registry_made_at: made_at.clone(),
        teams: opened.registry.teams().map_err(|e| e.to_string())?.len(),
        practitioners: opened
            .registry
            .practitioners()
            .map_err(|e| e.to_string())?
            .len(),
        devices: opened.registry.devices().map_err(|e| e.to_string())?.len(),
        cases: opened.registry.cases().map_err(|e| e.to_string())?.len(),
        audit_records: report.entries,
        audit_head: report.head.clone(),
    };
    opened
        .audit
        .record(AuditEvent::now(
            Actor::Server,
            AuditAction::Restored,
            None,
            format!(
                "rebuilt from the copy kept on the trust hub at {hub} as borough {borough}: registry of {}, {} audit record(s) through head {}; anything recorded after those on the old server was lost with it",
                made_at, report.entries, report.head
            ),
        ))
        .map_err(|e| e.to_string())?;
    opened.store.flush().map_err(|e| e.to_string())?;
    Ok(restored)
}

/// Open and check every part of a kept copy, then write the registry copy and the audit log into
/// `store` (not flushed). Nothing is written unless every part opens with `key` for `borough`,
/// the registry copy is whole and names only the server's and the registry's namespaces, and
/// the audit chain verifies. When the registry copy was made, and the restored chain's report.
fn rebuild(
    store: &dyn Store,
    key: &RecoveryKey,
    borough: &BoroughId,
    parts: &[KeepPart],
    kept: &Kept,
) -> Result<(String, crate::audit::VerifyReport), String> {
    let mut registry: Vec<u8> = Vec::new();
    let mut records: Vec<String> = Vec::new();
    let mut next_part = 0;
    let mut registry_whole = false;
    for part in parts {
        let plain = open(key, borough, part)?;
        match part.shelf {
            Shelf::Registry => {
                if Some(part.first) != kept.registry || part.count != next_part {
                    return Err("the hub sent the registry copy's parts out of order".into());
                }
                next_part += 1;
                registry.extend_from_slice(&plain);
                registry_whole = part.last;
            }
            Shelf::Audit => {
                if part.first != records.len() as u64 {
                    return Err(format!(
                        "the hub's copy of the audit log has a gap before record {}",
                        part.first
                    ));
                }
                let batch: Vec<String> = serde_json::from_slice(&plain)
                    .map_err(|e| format!("an audit part is unreadable: {e}"))?;
                if batch.len() as u64 != part.count {
                    return Err("an audit part holds another count of records".into());
                }
                records.extend(batch);
            }
        }
    }
    if !registry_whole {
        return Err(
            "the trust hub keeps no whole registry copy for this borough: it cannot be restored from the hub (was its link ever up since it joined with a recovery key?)"
                .into(),
        );
    }
    let snapshot: Snapshot = serde_json::from_slice(&registry)
        .map_err(|e| format!("the registry copy is unreadable: {e}"))?;
    let report = verify_records(
        records
            .iter()
            .enumerate()
            .map(|(i, r)| (i as u64, r.as_bytes().to_vec())),
    )
    .map_err(|e| format!("the kept audit log does not verify: {e}"))?;
    let mut values = Vec::with_capacity(snapshot.entries.len());
    for (ns, _, value) in &snapshot.entries {
        if ns != NS_SERVER && !Registry::is_namespace(ns) {
            return Err(format!(
                "the registry copy names a namespace {ns:?} it may not"
            ));
        }
        values.push(hex::decode(value).map_err(|e| format!("the registry copy is damaged: {e}"))?);
    }
    // Records a restore that stopped part-way wrote already: they must be the copy's first.
    let written = store.read_log(AUDIT_LOG, 0).map_err(|e| e.to_string())?;
    let same = written.len() <= records.len()
        && written
            .iter()
            .zip(&records)
            .all(|((_, w), r)| w.as_slice() == r.as_bytes());
    if !same {
        return Err(
            "the audit log a stopped restore wrote differs from the copy on the hub: move this data directory aside and restore into an empty one"
                .into(),
        );
    }
    let write = || -> Result<(), StoreError> {
        for ((ns, key, _), value) in snapshot.entries.iter().zip(&values) {
            store.put_meta(ns, key, value)?;
        }
        for record in &records[written.len()..] {
            store.append_log(AUDIT_LOG, record.as_bytes())?;
        }
        Ok(())
    };
    write().map_err(|e| format!("could not write the restored data: {e}"))?;
    Ok((snapshot.made_at, report))
}

/// Fetch the borough's kept copy from the hub with its (new) link certificate.
async fn fetch(hub: &str, m: &HubMembership) -> Result<(Vec<KeepPart>, Kept), String> {
    let ca = hex::decode(&m.hub_ca).map_err(|e| e.to_string())?;
    let cert = hex::decode(&m.certificate).map_err(|e| e.to_string())?;
    let key =
        polyphony_core::identity::DeviceKey::from_pem(&m.key_pem).map_err(|e| e.to_string())?;
    let (endpoint, conn) = polyphony_core::net::connect(hub, &ca, &cert, &key)
        .await
        .map_err(|e| format!("cannot reach the trust hub at {hub}: {e}"))?;
    let result = async {
        let (send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let mut stream = FramedStream::with_limit(send, recv, DEFAULT_MAX_FRAME);
        stream
            .write_frames(&[Frame::KeepFetch])
            .await
            .map_err(|e| e.to_string())?;
        let mut parts = Vec::new();
        loop {
            match stream.read_frame().await.map_err(|e| e.to_string())? {
                Some(Frame::Keep(part)) => parts.push(part),
                Some(Frame::Kept(kept)) => return Ok((parts, kept)),
                Some(Frame::Error(r)) => {
                    return Err(format!("the trust hub refused: {}", r.message))
                }
                Some(other) => return Err(format!("the trust hub answered {}", other.kind())),
                None => return Err("the trust hub ended the stream before its answer".into()),
            }
        }
    }
    .await;
    conn.close(0u32.into(), b"fetched");
    endpoint.wait_idle().await;
    result
}

#[cfg(test)]
mod tests {
    use polyphony_core::store::MemoryStore;
    use polyphony_core::CaseId;

    use super::*;
    use crate::audit::AuditLog;
    use crate::session::keep as hub;
    use crate::storage::ServerStorage;

    fn borough_over(store: Arc<dyn Store>) -> Shared {
        Shared {
            storage: Arc::new(ServerStorage::new(store.clone(), 16)),
            registry: Arc::new(Registry::new(store.clone())),
            audit: Arc::new(AuditLog::open(store).expect("audit")),
            max_frame: DEFAULT_MAX_FRAME,
            revoking_limit: time::Duration::days(14),
            moved_upload_limit: time::Duration::days(14),
            max_new_cases: crate::session::MAX_PROVISIONAL,
            advertise: Vec::new(),
            ca: None,
            limits: Default::default(),
        }
    }

    /// Send rounds to a hub's store until nothing is due, as the link does (recording each
    /// `Kept`); how many rounds, and how many registry parts went.
    fn send_all(
        b: &Shared,
        hub_store: &dyn Store,
        key: &RecoveryKey,
        borough: &BoroughId,
        per_round: usize,
    ) -> (usize, usize) {
        let (mut rounds, mut registry_parts) = (0, 0);
        loop {
            let round = round(b, key, borough, per_round).expect("round");
            if round.parts.is_empty() {
                return (rounds, registry_parts);
            }
            rounds += 1;
            for part in &round.parts {
                registry_parts += usize::from(part.shelf == Shelf::Registry);
                let kept = hub::keep(hub_store, borough, part).expect("kept");
                let done = part.shelf == Shelf::Registry && part.last;
                record_kept(
                    &*b.storage.store,
                    &kept,
                    round.registry.as_ref().filter(|_| done),
                );
            }
        }
    }

    #[test]
    fn a_long_audit_log_and_a_large_registry_go_in_parts_and_rounds_and_come_back_whole() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let b = borough_over(store.clone());
        let team = b.registry.add_team("North").unwrap().id;
        // A registry of over 4 MiB (25,000 cases registered, about 250 bytes each as hex): past the
        // plaintext a part holds, so the copy goes in several parts.
        for _ in 0..25_000 {
            b.registry.register_case(CaseId::random(), team).unwrap();
        }
        // 2,500 audit records: past the 1,000 a part holds, and (with 1,200 a round here) past
        // what one round sends.
        for i in 0..2_500 {
            b.audit(
                Actor::Server,
                AuditAction::Read,
                None,
                format!("record {i}"),
            );
        }
        let hub_store = MemoryStore::new();
        let key = RecoveryKey::generate();
        let borough = BoroughId::random();
        let (rounds, registry_parts) = send_all(&b, &hub_store, &key, &borough, 1_200);
        assert!(rounds >= 3, "{rounds} rounds");
        assert!(registry_parts >= 2, "{registry_parts} registry parts");
        let kept = hub::kept(&hub_store, &borough).unwrap();
        assert_eq!(kept.audit_through, 2_500);
        // Nothing changed: nothing is sent again.
        assert_eq!(send_all(&b, &hub_store, &key, &borough, 1_200), (0, 0));
        // Rebuilt into an empty store: the same registry and server entries, the same log.
        let (parts, kept) = hub::fetch(&hub_store, &borough).unwrap();
        let rebuilt = MemoryStore::new();
        let (_, report) = rebuild(&rebuilt, &key, &borough, &parts, &kept).unwrap();
        assert_eq!(report.entries, 2_500);
        for ns in b.registry.namespaces().unwrap() {
            assert_eq!(
                rebuilt.scan_meta(&ns).unwrap(),
                store.scan_meta(&ns).unwrap(),
                "{ns}"
            );
        }
        assert_eq!(
            rebuilt.read_log(AUDIT_LOG, 0).unwrap(),
            store.read_log(AUDIT_LOG, 0).unwrap()
        );
        // Another borough's key, or a part the hub dropped, rebuilds nothing.
        let empty = MemoryStore::new();
        assert!(rebuild(&empty, &RecoveryKey::generate(), &borough, &parts, &kept).is_err());
        let gap: Vec<KeepPart> = parts
            .iter()
            .filter(|p| !(p.shelf == Shelf::Audit && p.first == 1_000))
            .cloned()
            .collect();
        let e = rebuild(&empty, &key, &borough, &gap, &kept).unwrap_err();
        assert!(e.contains("gap before record"), "{e}");
        assert!(empty.scan_meta("registry.teams").unwrap().is_empty());
        assert!(empty.read_log(AUDIT_LOG, 0).unwrap().is_empty());

        // A restore that stopped part-way goes on: the records it wrote are the copy's first.
        let partial = MemoryStore::new();
        for (_, r) in store.read_log(AUDIT_LOG, 0).unwrap().into_iter().take(700) {
            partial.append_log(AUDIT_LOG, &r).unwrap();
        }
        rebuild(&partial, &key, &borough, &parts, &kept).unwrap();
        assert_eq!(
            partial.read_log(AUDIT_LOG, 0).unwrap(),
            store.read_log(AUDIT_LOG, 0).unwrap()
        );
        // One that wrote something else is refused, and nothing more written.
        let other = MemoryStore::new();
        other.append_log(AUDIT_LOG, b"{}").unwrap();
        let e = rebuild(&other, &key, &borough, &parts, &kept).unwrap_err();
        assert!(e.contains("differs from the copy"), "{e}");
        assert_eq!(other.read_log(AUDIT_LOG, 0).unwrap().len(), 1);

        // A device enrolled goes at once; one more case it holds may lag.
        let sam = b.registry.add_practitioner("Sam", team).unwrap();
        let code = b
            .registry
            .create_enrolment(sam.id, [1; 32], time::Duration::hours(1))
            .unwrap();
        let (device, _) = b
            .registry
            .redeem_enrolment(
                code.token(),
                polyphony_core::DeviceId::random(),
                "laptop",
                [2; 32],
            )
            .unwrap();
        let (_, registry_parts) = send_all(&b, &hub_store, &key, &borough, 1_200);
        assert!(registry_parts >= 2, "an enrolment goes at once");
        b.registry.mark_held(&device.id, &CaseId::random()).unwrap();
        assert_eq!(send_all(&b, &hub_store, &key, &borough, 1_200), (0, 0));
        let now = time::OffsetDateTime::now_utc();
        let kept = mark(&*store, KEY_REGISTRY).unwrap().unwrap();
        let entries = snapshot_entries(&*store, &b.registry).unwrap();
        assert!(!due_again(Some(&kept), &digests(&entries), Some(now)));
        assert!(due_again(
            Some(&kept),
            &digests(&entries),
            Some(now - time::Duration::try_from(REGISTRY_LAG).unwrap())
        ));

        // The registry changes: a new generation goes, and replaces the kept one.
        b.registry.add_team("South").unwrap();
        let (_, registry_parts) = send_all(&b, &hub_store, &key, &borough, 1_200);
        assert!(registry_parts >= 2);
        let (parts, kept) = hub::fetch(&hub_store, &borough).unwrap();
        let rebuilt = MemoryStore::new();
        rebuild(&rebuilt, &key, &borough, &parts, &kept).unwrap();
        assert_eq!(rebuilt.scan_meta("registry.teams").unwrap().len(), 2);
    }

    #[test]
    fn a_recovery_key_round_trips_as_text_and_a_damaged_one_is_refused() {
        let key = RecoveryKey::generate();
        assert_eq!(
            RecoveryKey::parse(&format!(" {}\n", key.to_text())),
            Ok(key.clone())
        );
        assert!(RecoveryKey::parse("polyphony-recovery-1-00").is_err());
        assert!(RecoveryKey::parse(&key.to_text().replace("recovery", "enrol")).is_err());
        assert_eq!(format!("{key:?}"), "RecoveryKey(..)");
    }

    #[test]
    fn a_sealed_part_opens_only_with_its_key_for_its_borough_where_it_was_put() {
        let key = RecoveryKey::generate();
        let borough = BoroughId::random();
        let part = seal(&key, &borough, (Shelf::Audit, 10, 2, true), b"two records");
        assert_eq!(open(&key, &borough, &part).unwrap(), b"two records");
        assert!(open(&RecoveryKey::generate(), &borough, &part).is_err());
        assert!(open(&key, &BoroughId::random(), &part).is_err());
        let mut moved = part.clone();
        moved.first = 12;
        assert!(
            open(&key, &borough, &moved).is_err(),
            "moved elsewhere in the log"
        );
        let mut relabelled = part;
        relabelled.shelf = Shelf::Registry;
        assert!(open(&key, &borough, &relabelled).is_err());
    }
}
