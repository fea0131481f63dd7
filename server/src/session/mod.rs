//! One device's sync session on the server.
//!
//! Everything a device may do is decided here, per message:
//! - it syncs only the cases of its practitioner's teams; any other case id gets the same answer
//!   whether it exists or not (`NotAvailable`), so ids cannot be probed;
//! - a case it synced before that moved to another team is upload-only: it is told the case moved,
//!   receives nothing, and its changes made before it was first told are accepted and kept
//!   (nothing stranded), for a bounded time; a change dated after that is refused
//!   ([`MOVED_CLOCK_SKEW`]);
//! - a device being revoked is upload-only for everything, then told to wipe, then refused;
//! - new changes must be authored by an enrolled device of the case's team (or the uploader itself),
//!   must keep the record's shape, and may not change the case's id or team;
//! - a `Saved` is sent only after the case's changes are durable (group commit);
//! - case data and access lists leave only once the audit record of that access is durable; a
//!   read the audit log cannot record is refused, not sent (see [`Shared::audit_access`]).
//!
//! Writes of one connection are pipelined: the reader applies messages as they come, and a writer
//! task sends each reply once its group-commit ticket is durable, in order.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use automerge::sync::{State, SyncDoc};
use automerge::{ActorId, AutoCommit};
use polyphony_core::export::access::AccessKind;
use polyphony_core::model::guard::{self, NewOps};
use polyphony_core::model::{schema, Author};
use polyphony_core::net::{write_frames, FramedStream, StreamError};
use polyphony_core::sync::{
    prepare, AccessEntry, ApplyError, CaseGrant, CasePolicy, ErrorCode, Frame, Hello, Refusal,
    SessionMode, Welcome, Wiped, FEATURE_CONFIRMS_WIPE, PROTOCOL_VERSION,
};
use polyphony_core::{CaseId, TeamId};
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info, warn};

use crate::audit::{Actor, AuditAction, AuditError, AuditEvent, AuditLog};
use crate::registry::{Device, DeviceStatus, Practitioner, Registry, RegistryError};
use crate::storage::{CaseChanged, ServerCase, ServerStorage};

/// What every session shares.
pub struct Shared {
    /// Cases on disk.
    pub storage: Arc<ServerStorage>,
    /// Teams, devices, case ownership.
    pub registry: Arc<Registry>,
    /// The audit log.
    pub audit: Arc<AuditLog>,
    /// Frame size limit.
    pub max_frame: usize,
    /// How long a device may stay in the revoking state ([`crate::ServerConfig::revoking_limit`]).
    pub revoking_limit: time::Duration,
    /// How long a device may upload to a case that moved away from it
    /// ([`crate::ServerConfig::moved_upload_limit`]).
    pub moved_upload_limit: time::Duration,
    /// The borough CA, to sign the audit head each welcome carries (none: no head is sent).
    pub ca: Option<Arc<polyphony_core::identity::BoroughCa>>,
    /// Connections per device, enrolment attempts per address.
    pub limits: Arc<crate::limits::Limits>,
}

impl Shared {
    /// A device in the revoking state past [`Shared::revoking_limit`] becomes revoked (and
    /// audited so); any other device is returned as it is.
    pub fn expire_revoking(&self, device: Device) -> Result<Device, RegistryError> {
        let due = device
            .revoked_at
            .is_some_and(|at| at + self.revoking_limit <= time::OffsetDateTime::now_utc());
        if device.status != DeviceStatus::Revoking || !due {
            return Ok(device);
        }
        let device = self
            .registry
            .set_device_status(&device.id, DeviceStatus::Revoked)?;
        self.audit(
            Actor::Device {
                device: device.id,
                practitioner: device.practitioner,
            },
            AuditAction::Revoke,
            None,
            "the time allowed to upload before wiping ran out: device now refused",
        );
        Ok(device)
    }

    /// Record an event that is not an access to a person's record (a connection, a refusal, a
    /// revocation, a write already stored), best-effort: a failure is logged loudly but does not
    /// stop clinical work. An access (case data or an access list leaving for a device) goes
    /// through [`Shared::audit_access`] instead, which the access waits for.
    pub fn audit(
        &self,
        actor: Actor,
        action: AuditAction,
        case: Option<CaseId>,
        detail: impl Into<String>,
    ) {
        let event = AuditEvent::now(actor, action, case, detail.into());
        if let Err(e) = self.audit.record(event) {
            warn!(error = %e, "could not write the audit log");
        }
    }

    /// Record an access to a person's record that is about to leave for a device, and return the
    /// durability ticket covering the record. The record is a precondition of the access: on an
    /// error the caller sends nothing of the case, and the frames it does send wait for the
    /// ticket, so no data leaves before its record is on disk (finding 11).
    pub fn audit_access(
        &self,
        actor: Actor,
        case: CaseId,
        detail: impl Into<String>,
    ) -> Result<u64, AuditError> {
        // Noted before the write, for its ticket (see GroupCommit::wrote_in).
        let generation = self.storage.group.generation();
        let event = AuditEvent::now(actor, AuditAction::Read, Some(case), detail.into());
        self.audit.record(event)?;
        Ok(self.storage.group.wrote_in(generation))
    }
}

/// The answer to a device when the audit log could not record its access to a case: nothing of
/// the case was sent. `sent` says what the device did not get and what to do.
fn not_audited(case: CaseId, e: &AuditError, sent: &str) -> Frame {
    warn!(%case, error = %e, "an access could not be recorded in the audit log: nothing of the case sent");
    Frame::CaseRefused {
        case,
        refusal: refusal(
            ErrorCode::StorageFailed,
            format!(
                "the server could not record this access in its audit log, so it sent {sent} ({e})"
            ),
        ),
    }
}

/// What a device is told when the audit log could not record a read of a case during its sync.
const NOT_SENT_CASE: &str =
    "nothing of this case; your own changes are safe on this device: sync again later";

/// The most reply batches a session may have waiting for a device that does not read them; past
/// it the server stops reading that device's frames until it catches up (back-pressure, not
/// growth: a device that sends and never reads cannot make the server buffer without end).
pub const MAX_SEND_BACKLOG: usize = 64;

/// Run a session step (validation of a device's changes, sync message generation, a save: work
/// of milliseconds for a large case) off the async runtime's scheduling: on the multi-threaded
/// runtime the worker hands its other tasks to the rest first, so one device's large case does
/// not stall every other connection's I/O on that worker.
fn off_runtime<R>(step: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(step),
        _ => step(),
    }
}

/// Reply batches queued for the connection's writer and not yet written.
#[derive(Debug, Default)]
pub struct Backlog {
    queued: AtomicUsize,
    drained: tokio::sync::Notify,
}

/// Counts one batch as written when dropped (written, refused or dropped with the connection).
struct Taken<'a>(&'a Backlog);

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
        self.0.drained.notify_one();
    }
}

/// Where a session's replies go: the connection writer's channel, counted in a [`Backlog`].
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<(u64, Vec<Frame>)>,
    backlog: Arc<Backlog>,
}

impl Outbox {
    fn send(
        &self,
        batch: (u64, Vec<Frame>),
    ) -> Result<(), mpsc::error::SendError<(u64, Vec<Frame>)>> {
        self.backlog.queued.fetch_add(1, Ordering::AcqRel);
        self.tx.send(batch).inspect_err(|_| {
            self.backlog.queued.fetch_sub(1, Ordering::AcqRel);
        })
    }
}

impl From<mpsc::UnboundedSender<(u64, Vec<Frame>)>> for Outbox {
    fn from(tx: mpsc::UnboundedSender<(u64, Vec<Frame>)>) -> Self {
        Outbox {
            tx,
            backlog: Arc::default(),
        }
    }
}

/// The most offline reads one `Reads` frame may carry (a device sends its outbox in batches).
pub const MAX_READS_PER_FRAME: usize = 1_000;
/// The most new cases one session may be part-way through sending (each is held in memory until
/// it is complete and stored). A device back from a week offline, or one importing a caseload,
/// sends a few hundred at once, pipelined; tens of thousands are an attack on memory.
pub const MAX_PROVISIONAL: usize = 1_024;
/// How far a device's clock may be off when it says when it read a case.
pub const READ_CLOCK_SKEW: time::Duration = time::Duration::minutes(10);
/// How far a device's clock may be ahead of the server's when it dates the changes it wrote to a
/// case before it was told the case moved away. A device that was told adds nothing more (its
/// profile refuses new edits), so only a clock running fast, or a change saved in the moment the
/// refusal was on its way, come near the boundary; a change dated later is refused. Generous on
/// purpose: what it lets through is no more than a malicious device could get by backdating
/// (docs/SECURITY.md), and what it refuses is words stranded on the device.
pub const MOVED_CLOCK_SKEW: time::Duration = time::Duration::minutes(10);

/// How this device may treat one case in this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Read and write.
    Full(TeamId),
    /// Upload only (case moved away, or device being revoked).
    UploadOnly(TeamId),
    /// Not registered yet: the device may create it for one of its teams.
    New,
    /// Not for this device.
    NotAvailable,
}

/// The policy for changes arriving from this device for one case.
struct ServerPolicy<'a> {
    case: CaseId,
    /// The team the stored document names (None for a case not stored yet).
    team: Option<TeamId>,
    my_teams: &'a [TeamId],
    /// The sending device and its practitioner, as the registry knows them: the only author its
    /// new changes may have and the only name they may write.
    me: &'a Author,
    /// When this device was first told the case is no longer its team's, for an upload-only case
    /// (see [`ServerPolicy::time_allowed`]); none for a case it may write in full.
    told_moved: Option<time::OffsetDateTime>,
}

impl CasePolicy for ServerPolicy<'_> {
    /// A device writes only as itself: its own actor, never a colleague's (which would let it
    /// write in their name, and by taking their next sequence number make their offline work
    /// unsyncable). Every change the server already holds is not new, so a device that received
    /// colleagues' changes from the server still syncs; pushes carry only durable changes, so a
    /// device never holds a colleague's change the server could lose.
    fn author_allowed(&self, actor: &ActorId) -> bool {
        *actor == self.me.actor()
    }
    /// On a case that moved away from this device (or whose team its practitioner left), only
    /// what it wrote before it was first told, with [`MOVED_CLOCK_SKEW`] for its clock. Not the
    /// instant of the move: a device offline then wrote on in good faith, and those notes are
    /// clinical work that must not be stranded. The time is the device's own word: this stops a
    /// device adding to the case after it knows better, not one that backdates what it writes
    /// (docs/SECURITY.md). A change with no time (0) cannot show it came first, and the app
    /// always dates its changes: refused.
    fn time_allowed(&self, _: &ActorId, time: i64) -> Result<(), String> {
        let Some(told) = self.told_moved else {
            return Ok(());
        };
        let told_at = to_the_second(told);
        if time == 0 {
            return Err(format!(
                "a change carries no time, and this case is no longer your team's (this device was told so at {told_at}): only what was written before then can be uploaded to it; the change stays on this device"
            ));
        }
        let latest = told + MOVED_CLOCK_SKEW;
        let made = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(time) * 1_000_000);
        match made {
            Ok(made) if made <= latest => Ok(()),
            made => Err(format!(
                "a change is dated {}, after this device was told at {told_at} that this case is no longer its team's (it moved to another team, or you left its team; {} minutes allowed for the device's clock): only what was written before then can be uploaded to it; the change stays on this device",
                made.map(to_the_second)
                    .unwrap_or_else(|_| format!("{time} ms after 1970")),
                MOVED_CLOCK_SKEW.whole_minutes()
            )),
        }
    }
    fn check_step(
        &self,
        before: &AutoCommit,
        after: &AutoCommit,
        new: &NewOps,
    ) -> Result<(), ApplyError> {
        guard::nothing_removed(before, after).map_err(ApplyError::Removes)?;
        guard::records_kept(after, new).map_err(ApplyError::Removes)?;
        guard::stamps_are_own(after, new, self.me).map_err(ApplyError::Impersonates)
    }
    fn check(&self, doc: &AutoCommit) -> Result<(), String> {
        if schema::read_case_id(doc) != Some(self.case) {
            return Err("the document's case id does not match the case being synced".into());
        }
        let team = schema::read_team_id(doc).ok_or("the document has no team")?;
        match self.team {
            Some(t) if t != team => Err("a device cannot move a case to another team".into()),
            None if !self.my_teams.contains(&team) => {
                Err("a case can only be created for one of your own teams".into())
            }
            _ => Ok(()),
        }
    }
}

/// One device's session: handles each frame it sends and each change other sessions announce,
/// and sends its replies through `out`, each with the group-commit ticket it must wait for.
/// [`serve`] drives it over QUIC; the deterministic simulation test drives it directly.
pub struct Session {
    shared: Arc<Shared>,
    conn_id: u64,
    device: Device,
    practitioner: Practitioner,
    mode: SessionMode,
    actor: Actor,
    states: HashMap<CaseId, State>,
    provisional: HashMap<CaseId, AutoCommit>,
    told_moved: HashSet<CaseId>,
    read_audited: HashSet<CaseId>,
    /// Messages received per case since its document last changed (a bound against sync loops).
    exchanges: HashMap<CaseId, (usize, Vec<automerge::ChangeHash>)>,
    /// This device and its practitioner as the registry knows them (see [`ServerPolicy::me`]).
    author: Author,
    /// The registry's access epoch this session last read its device and practitioner at.
    epoch: u64,
    /// Why the session ended because its access changed: the connection is closed with this.
    ended: Option<(ErrorCode, String)>,
    /// The device answers `Wipe` with `Wiped` (it announced [`FEATURE_CONFIRMS_WIPE`]).
    confirms_wipe: bool,
    /// `Wipe` was sent; only `Wiped` may follow.
    wipe_sent: bool,
    out: Outbox,
}

/// How a read relates the reader to the person, for the audit and the person's access list:
/// nothing for a member of the care team, else that they read it as cover within the case's
/// team (the access rule: any device of the team may sync its cases; see the README).
fn relationship(doc: &AutoCommit, practitioner: &Practitioner) -> String {
    if guard::in_care_team(doc, &practitioner.id) {
        String::new()
    } else {
        "; the reader is not in this person's care team (cover within the team)".to_string()
    }
}

/// The actors that wrote accepted changes, for the audit (always this device's own: see
/// [`ServerPolicy::author_allowed`]).
fn written_by(actors: &[ActorId]) -> String {
    let hex: Vec<String> = actors
        .iter()
        .map(|a| format!("actor {}", a.to_hex_string()))
        .collect();
    hex.join(", ")
}

/// An instant as RFC 3339 to the second, for messages a person reads.
fn to_the_second(t: time::OffsetDateTime) -> String {
    crate::registry::rfc3339(t.replace_nanosecond(0).unwrap_or(t))
}

fn refusal(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// Serve a device's sync connection until it ends.
pub async fn serve(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    conn_id: u64,
    device: Device,
    practitioner: Practitioner,
) {
    let actor = Actor::Device {
        device: device.id,
        practitioner: practitioner.id,
    };
    let (send, recv) =
        match tokio::time::timeout(std::time::Duration::from_secs(30), conn.accept_bi()).await {
            Ok(Ok(s)) => s,
            _ => return,
        };
    let mut stream = FramedStream::with_limit(send, recv, shared.max_frame);
    let hello = match stream.read_frame().await {
        Ok(Some(Frame::Hello(h))) => h,
        Ok(other) => {
            let what = other.map(|f| f.kind()).unwrap_or("nothing");
            close(
                &conn,
                ErrorCode::Malformed,
                &format!("expected hello, got {what}"),
            );
            return;
        }
        Err(e) => {
            close_for(&conn, &e);
            return;
        }
    };
    let welcome = match welcome(&shared, &hello, &device, &practitioner) {
        Ok(w) => w,
        Err(NotWelcome::Version(refusal)) => {
            let msg = refusal.message.clone();
            let _ = stream.write_frames(&[Frame::Error(refusal)]).await;
            close(&conn, ErrorCode::UnsupportedVersion, &msg);
            return;
        }
        Err(NotWelcome::Internal(msg)) => {
            close(&conn, ErrorCode::Internal, &msg);
            return;
        }
    };
    let mode = welcome.mode;
    if stream
        .write_frames(&[Frame::Welcome(welcome)])
        .await
        .is_err()
    {
        return;
    }

    // The writer: sends each batch of frames once its durability ticket is met, in order.
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<(u64, Vec<Frame>)>();
    let backlog = Arc::new(Backlog::default());
    let out_tx = Outbox {
        tx: out_tx,
        backlog: backlog.clone(),
    };
    let written = backlog.clone();
    let (send, recv) = stream.split();
    let storage = shared.storage.clone();
    let writer_conn = conn.clone();
    let writer = tokio::spawn(async move {
        let mut send = send;
        while let Some((ticket, frames)) = out_rx.recv().await {
            let _taken = Taken(&written);
            let (frames, dropped_push) = match storage.group.durable(ticket).await {
                Ok(()) => (frames, false),
                Err(e) => withheld(frames, &e),
            };
            let ends = dropped_push || frames.iter().any(|f| matches!(f, Frame::Bye));
            if write_frames(&mut send, &frames).await.is_err() {
                return;
            }
            if ends {
                let _ = send.finish();
                // Give the device time to read the last frame; it closes the connection.
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(10), writer_conn.closed())
                        .await;
                return;
            }
        }
    });

    let mut session = Session::new(shared.clone(), conn_id, device, practitioner, mode, out_tx)
        .confirming_wipe(hello.has(FEATURE_CONFIRMS_WIPE));
    let mut changes = shared.storage.subscribe();
    let mut access = shared.registry.access_changes();
    let mut recv = recv;
    'serving: loop {
        // Back-pressure: while the device does not read what it was sent, read nothing more from
        // it and push nothing more (a missed push is made up by push_all after the lag).
        while backlog.queued.load(Ordering::Acquire) >= MAX_SEND_BACKLOG {
            let drained = backlog.drained.notified();
            if backlog.queued.load(Ordering::Acquire) < MAX_SEND_BACKLOG {
                break;
            }
            tokio::select! {
                () = drained => {}
                _ = conn.closed() => break 'serving,
                // A revocation reaches a device that reads nothing, too.
                changed = access.changed() => {
                    if changed.is_err() || !session.check_access() {
                        break 'serving;
                    }
                }
            }
        }
        tokio::select! {
            frame = recv.read_frame() => match frame {
                Ok(Some(f)) => {
                    if !off_runtime(|| session.handle(f)) {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    warn!(error = %e, "bad input from device: closing its connection");
                    session.shared.audit(actor.clone(), AuditAction::Refused, None, format!("connection closed: {e}"));
                    close_for(&conn, &e);
                    break;
                }
            },
            change = changes.recv() => match change {
                Ok(c) => off_runtime(|| session.push(c)),
                Err(broadcast::error::RecvError::Lagged(_)) => off_runtime(|| session.push_all()),
                Err(broadcast::error::RecvError::Closed) => break,
            },
            // An administrator changed who may sync what: a revoked device's live connection is
            // closed now, not at its next sync.
            changed = access.changed() => {
                if changed.is_err() || !session.check_access() {
                    break;
                }
            }
            _ = conn.closed() => break,
        }
        if session.ended().is_some() {
            break;
        }
    }
    if let Some((code, message)) = session.ended() {
        // At once: nothing queued for the writer is sent after this.
        close(&conn, *code, message);
    }
    drop(session);
    let _ = writer.await;
    shared.audit(actor, AuditAction::Disconnect, None, String::new());
}

/// What of a batch may still be sent when its ticket could not be made durable (the flush failed,
/// or a reopen lost it), and whether it was a live push whose data was dropped (the session's sync
/// state counts that push as sent: the caller ends the connection, and the device syncs afresh
/// when it reconnects).
///
/// Nothing whose durability the ticket stood for leaves:
/// - a `Saved` becomes a refusal: nothing is acknowledged that is not on disk;
/// - no case data (`Sync`) leaves, reply or push: the batch's ticket covers the audit record of
///   the read (which the disk may lose, and then the read would leave unaudited) and the
///   colleagues' changes it carries (which the disk may lose, and then the device would hold a
///   change it may not upload: a device writes only as itself). A reply's case is refused by its
///   `Saved`'s refusal; the device leaves that case alone for the rest of the session, so the
///   session's sync state, which counts the data as sent, is not used again;
/// - an access list becomes a refusal (its request's record is not on disk);
/// - `ReadsSaved` becomes a fatal `Error`: the device keeps its offline reads and sends them
///   again (it has no per-read refusal to wait for, and would otherwise wait for ever).
fn withheld(frames: Vec<Frame>, e: &polyphony_core::store::StoreError) -> (Vec<Frame>, bool) {
    warn!(error = %e, "flush failed: acknowledging nothing and sending no case data");
    let push = !frames.iter().any(|f| matches!(f, Frame::Saved { .. }));
    let dropped_push = push && frames.iter().any(|f| matches!(f, Frame::Sync { .. }));
    let refused = |case, what: &str| Frame::CaseRefused {
        case,
        refusal: refusal(
            ErrorCode::StorageFailed,
            format!("the server could not save to its disk, so it {what} ({e})"),
        ),
    };
    let frames = frames
        .into_iter()
        .filter_map(|f| match f {
            Frame::Sync { .. } => None,
            Frame::Saved { case, .. } => Some(refused(
                case,
                "sent nothing of this case and acknowledged nothing; anything you changed is safe on this device: sync again later",
            )),
            Frame::AccessLog { case, .. } => Some(refused(
                case,
                "could not record this access and sent no access list: try again later",
            )),
            Frame::ReadsSaved { .. } => Some(Frame::Error(refusal(
                ErrorCode::StorageFailed,
                format!("the server could not save to its disk the record of what this device read offline; the reads are kept on this device: sync again later ({e})"),
            ))),
            other => Some(other),
        })
        .collect();
    (frames, dropped_push)
}

fn close(conn: &quinn::Connection, code: ErrorCode, message: &str) {
    conn.close((code as u32).into(), message.as_bytes());
}

fn close_for(conn: &quinn::Connection, e: &StreamError) {
    match e {
        StreamError::Frame(f) => close(conn, f.code(), &f.to_string()),
        other => debug!(error = %other, "stream ended"),
    }
}

/// Why a device's `Hello` was not welcomed.
#[derive(Debug, Clone, PartialEq)]
pub enum NotWelcome {
    /// The device speaks another protocol version: send it this refusal, then close.
    Version(Refusal),
    /// The server could not read its registry: close the connection with this message.
    Internal(String),
}

/// The server's answer to a device's `Hello`: the session's mode (a device being revoked only
/// uploads) and the cases it may sync. Records the connection in the audit log.
pub fn welcome(
    shared: &Shared,
    hello: &Hello,
    device: &Device,
    practitioner: &Practitioner,
) -> Result<Welcome, NotWelcome> {
    if hello.version != PROTOCOL_VERSION {
        let msg = format!(
            "this server speaks protocol {PROTOCOL_VERSION}, the device {}: update the app",
            hello.version
        );
        return Err(NotWelcome::Version(refusal(
            ErrorCode::UnsupportedVersion,
            msg,
        )));
    }
    let mode = if device.status == DeviceStatus::Revoking {
        SessionMode::Revoking
    } else {
        SessionMode::Normal
    };
    let grants: Vec<CaseGrant> = match mode {
        SessionMode::Revoking => Vec::new(),
        SessionMode::Normal => match shared.registry.cases_of_teams(&practitioner.teams) {
            Ok(cases) => cases
                .into_iter()
                .map(|(case, team)| CaseGrant { case, team })
                .collect(),
            Err(e) => return Err(NotWelcome::Internal(format!("server error: {e}"))),
        },
    };
    // A case granted in full again (moved back, or the practitioner rejoined its team) is the
    // device's to write: it forgets it was told the case moved away on this welcome, and so
    // does the server. A failure here only leaves the server stricter, so it does not stop the
    // session.
    let granted: HashSet<CaseId> = grants.iter().map(|g| g.case).collect();
    if let Err(e) = shared.registry.forget_told_moved(&device.id, &granted) {
        warn!(error = %e, "could not clear the record of cases that moved away");
    }
    shared.audit(
        Actor::Device {
            device: device.id,
            practitioner: practitioner.id,
        },
        AuditAction::Connect,
        None,
        format!(
            "{} session, {:?}",
            if hello.live { "live" } else { "one-shot" },
            mode
        ),
    );
    Ok(Welcome {
        version: PROTOCOL_VERSION,
        device: device.id,
        practitioner: practitioner.id,
        teams: practitioner.teams.clone(),
        cases: grants,
        mode,
        audit_head: signed_head(shared),
        features: vec![FEATURE_CONFIRMS_WIPE.to_string()],
    })
}

/// The audit log's head as this welcome leaves, signed by the borough CA.
fn signed_head(shared: &Shared) -> Option<polyphony_core::identity::AuditHead> {
    let ca = shared.ca.as_ref()?;
    let (records, hash) = shared
        .audit
        .head()
        .inspect_err(|e| warn!(error = %e, "could not read the audit head"))
        .ok()?;
    let at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .ok()?;
    polyphony_core::identity::AuditHead::sign(ca, records, &hash, &at)
        .inspect_err(|e| warn!(error = %e, "could not sign the audit head"))
        .ok()
}

impl Session {
    /// A session for a welcomed device (`mode` as [`welcome`] decided). Replies leave through
    /// `out` as `(ticket, frames)`: send the frames only once
    /// [`GroupCommit::durable`](crate::storage::GroupCommit::durable) has returned for the ticket
    /// (0 needs no wait), in order.
    pub fn new(
        shared: Arc<Shared>,
        conn_id: u64,
        device: Device,
        practitioner: Practitioner,
        mode: SessionMode,
        out: impl Into<Outbox>,
    ) -> Session {
        let out = out.into();
        let actor = Actor::Device {
            device: device.id,
            practitioner: practitioner.id,
        };
        let epoch = shared.registry.access_epoch();
        let author = Author {
            practitioner: practitioner.id,
            practitioner_name: practitioner.name.clone(),
            device: device.id,
        };
        Session {
            shared,
            conn_id,
            device,
            practitioner,
            mode,
            actor,
            states: HashMap::new(),
            provisional: HashMap::new(),
            told_moved: HashSet::new(),
            read_audited: HashSet::new(),
            exchanges: HashMap::new(),
            author,
            epoch,
            ended: None,
            confirms_wipe: false,
            wipe_sent: false,
            out,
        }
    }

    /// Whether the device announced [`FEATURE_CONFIRMS_WIPE`] in its hello: if it did, a device
    /// being revoked stays able to upload until it answers `Wipe` with a `Wiped` that kept
    /// nothing; if not (a client older than the feature), it is marked revoked at its `Done`.
    pub fn confirming_wipe(mut self, yes: bool) -> Session {
        self.confirms_wipe = yes;
        self
    }

    /// Why the session ended on a change of access, if it did (see [`Session::check_access`]):
    /// the driver closes the connection with this code and message.
    pub fn ended(&self) -> Option<&(ErrorCode, String)> {
        self.ended.as_ref()
    }

    /// Re-read this device and its practitioner if the registry's access changed since the last
    /// look, or if the device is being revoked (whose time limit runs without any change).
    /// Returns false once the session must end: the device was revoked ("revoke now" reaches a
    /// connected device at once), or its revocation was ordered (it reconnects to upload, then
    /// wipe). A practitioner who left a team keeps the session for their other teams.
    pub fn check_access(&mut self) -> bool {
        if self.ended.is_some() {
            return false;
        }
        let epoch = self.shared.registry.access_epoch();
        if epoch == self.epoch && self.mode == SessionMode::Normal {
            return true;
        }
        self.epoch = epoch;
        let device = match self.shared.registry.device(&self.device.id) {
            Ok(Some(d)) => self.shared.expire_revoking(d),
            Ok(None) => Err(RegistryError::DeviceNotFound(self.device.id)),
            Err(e) => Err(e),
        };
        let end = match device {
            Err(e) => Some((
                ErrorCode::Internal,
                format!("the server could not read its registry ({e}): sync again later"),
            )),
            Ok(d) if d.status == DeviceStatus::Revoked => Some((
                ErrorCode::Revoked,
                "this device was revoked by your administrator: its data stays safe on the server; ask for a new enrolment".to_string(),
            )),
            Ok(d) if d.status == DeviceStatus::Revoking && self.mode == SessionMode::Normal => {
                Some((
                    ErrorCode::ShuttingDown,
                    "your administrator is revoking this device: sync again to upload what it holds, then it is wiped".to_string(),
                ))
            }
            Ok(_) => None,
        };
        if let Some((code, message)) = end {
            self.shared.audit(
                self.actor.clone(),
                AuditAction::Refused,
                None,
                format!("live session closed: the device's access changed ({message})"),
            );
            self.ended = Some((code, message));
            return false;
        }
        if let Ok(Some(p)) = self.shared.registry.practitioner(&self.practitioner.id) {
            self.practitioner = p;
        }
        true
    }

    /// Handle one frame from the device; false ends the session (stop reading).
    pub fn handle(&mut self, frame: Frame) -> bool {
        if !self.check_access() {
            return false;
        }
        if self.wipe_sent {
            return self.wiped(frame);
        }
        match frame {
            Frame::Sync { case, message } => {
                let (ticket, frames) = self.sync(case, &message);
                let _ = self.out.send((ticket, frames));
                true
            }
            Frame::Reads(reads) => self.offline_reads(reads),
            Frame::AccessLogRequest { case } => {
                let now = std::time::Instant::now();
                if !self.shared.limits.access_list_allowed(self.device.id, now) {
                    let refused = Frame::CaseRefused {
                        case,
                        refusal: refusal(
                            ErrorCode::Busy,
                            "the access list was asked for again too soon: try again in a moment",
                        ),
                    };
                    let _ = self.out.send((0, vec![refused]));
                    return true;
                }
                // The request is audited (in `access_log`) before its answer leaves.
                let (ticket, frame) = self.access_log(case);
                let _ = self.out.send((ticket, vec![frame]));
                true
            }
            Frame::Done if self.mode == SessionMode::Revoking && self.confirms_wipe => {
                // Not revoked yet: a change made on the device while this upload ran would be
                // stranded on it. The device wipes, then says what it had to keep.
                let generation = self.shared.storage.group.generation();
                self.shared.audit(
                    self.actor.clone(),
                    AuditAction::Wipe,
                    None,
                    "uploads kept; device told to wipe",
                );
                self.wipe_sent = true;
                let _ = self.out.send((
                    self.shared.storage.group.wrote_in(generation),
                    vec![Frame::Wipe],
                ));
                true
            }
            Frame::Done if self.mode == SessionMode::Revoking => {
                // A client older than the wipe confirmation: revoked at its `Done`, as protocol 1
                // first did.
                let generation = self.shared.storage.group.generation();
                if !self.complete_revocation("uploads kept; device told to wipe and now refused") {
                    return false;
                }
                let _ = self.out.send((
                    self.shared.storage.group.wrote_in(generation),
                    vec![Frame::Wipe, Frame::Bye],
                ));
                false
            }
            Frame::Done => {
                let _ = self.out.send((0, vec![Frame::Bye]));
                false
            }
            other => {
                let _ = self.out.send((
                    0,
                    vec![Frame::Error(refusal(
                        ErrorCode::Malformed,
                        format!("unexpected {} frame", other.kind()),
                    ))],
                ));
                false
            }
        }
    }

    /// Record the reads a device made offline, in its audit trail: only for cases it may read,
    /// at most [`MAX_READS_PER_FRAME`] a frame and [`crate::limits::MAX_READS_PER_WINDOW`] an hour per device, with
    /// times neither in the future nor before its enrolment, each outbox index once. Reads that
    /// fail a check are not recorded as reads; one audit record says how many were dropped and
    /// why. Everything up to the frame's highest index is acknowledged, so the device does not
    /// send them again.
    /// After `Wipe`, the device's answer: revoked once it kept nothing; still able to upload (until
    /// the revoking time limit) while it holds changes the server lacks.
    fn wiped(&mut self, frame: Frame) -> bool {
        let Frame::Wiped(Wiped { kept }) = frame else {
            let _ = self.out.send((
                0,
                vec![Frame::Error(refusal(
                    ErrorCode::Malformed,
                    format!("expected wiped after wipe, got {}", frame.kind()),
                ))],
            ));
            return false;
        };
        let generation = self.shared.storage.group.generation();
        if kept.is_empty() {
            if !self.complete_revocation("device wiped; now refused") {
                return false;
            }
        } else {
            let listed: Vec<String> = kept.iter().take(20).map(|c| c.to_string()).collect();
            self.shared.audit(
                self.actor.clone(),
                AuditAction::Wipe,
                None,
                format!(
                    "device wiped all but {} case(s) holding changes not yet uploaded ({}); it may still upload them until its revoking time limit",
                    kept.len(),
                    listed.join(", ")
                ),
            );
        }
        let _ = self.out.send((
            self.shared.storage.group.wrote_in(generation),
            vec![Frame::Bye],
        ));
        false
    }

    /// Mark this device revoked and audit it; false if the registry could not be written.
    fn complete_revocation(&self, detail: &str) -> bool {
        if let Err(e) = self
            .shared
            .registry
            .set_device_status(&self.device.id, DeviceStatus::Revoked)
        {
            warn!(error = %e, "could not complete a revocation");
            return false;
        }
        self.shared.audit(
            self.actor.clone(),
            AuditAction::Wipe,
            None,
            detail.to_string(),
        );
        true
    }

    fn offline_reads(&mut self, reads: Vec<polyphony_core::sync::OfflineRead>) -> bool {
        if reads.len() > MAX_READS_PER_FRAME
            || !self.shared.limits.take_reads(
                self.device.id,
                reads.len(),
                std::time::Instant::now(),
            )
        {
            let msg = format!(
                "too many offline reads ({} in this frame; the limits are {MAX_READS_PER_FRAME} a frame and {} an hour per device): sync again later",
                reads.len(),
                crate::limits::MAX_READS_PER_WINDOW
            );
            self.shared
                .audit(self.actor.clone(), AuditAction::Refused, None, msg.clone());
            let _ = self
                .out
                .send((0, vec![Frame::Error(refusal(ErrorCode::TooLarge, msg))]));
            return false;
        }
        // Noted before the writes, for their ticket (see GroupCommit::wrote_in).
        let generation = self.shared.storage.group.generation();
        let registry = self.shared.registry.clone();
        let mark = match registry.reads_through(&self.device.id) {
            Ok(m) => m,
            Err(e) => return self.reads_not_recorded(None, 0, &e),
        };
        let now = time::OffsetDateTime::now_utc();
        let enrolled = self.device.enrolled_at;
        let mut through = mark.unwrap_or(0);
        let (mut duplicates, mut not_readable, mut bad_time) = (0usize, 0usize, 0usize);
        let mut sorted = reads;
        sorted.sort_by_key(|r| r.seq);
        for r in &sorted {
            let before = through;
            through = through.max(r.seq);
            if mark.is_some_and(|m| r.seq <= m) {
                duplicates += 1;
                continue;
            }
            if matches!(self.access(&r.case), Access::NotAvailable | Access::New) {
                not_readable += 1;
                continue;
            }
            let at =
                time::OffsetDateTime::parse(&r.at, &time::format_description::well_known::Rfc3339);
            if at.is_ok_and(|t| t > now + READ_CLOCK_SKEW || t < enrolled - READ_CLOCK_SKEW) {
                bad_time += 1;
                continue;
            }
            let mut event = AuditEvent::offline_read(self.device.id, self.practitioner.id, r);
            if let Ok(Some(c)) = self.shared.storage.case(&r.case) {
                let c = c.lock().expect("case lock");
                event
                    .detail
                    .push_str(&relationship(&c.doc, &self.practitioner));
            }
            if let Err(e) = self.shared.audit.record(event) {
                return self.reads_not_recorded(mark, before, &e);
            }
        }
        if not_readable + bad_time > 0 {
            self.shared.audit(
                self.actor.clone(),
                AuditAction::Refused,
                None,
                format!(
                    "offline reads not recorded: {not_readable} for cases this device may not read, {bad_time} with a time in the future or before the device enrolled"
                ),
            );
        }
        if duplicates > 0 {
            debug!(duplicates, "offline reads already recorded");
        }
        if !sorted.is_empty() && mark.is_none_or(|m| through > m) {
            if let Err(e) = registry.set_reads_through(&self.device.id, through) {
                return self.reads_not_recorded(None, 0, &e);
            }
        }
        let _ = self.out.send((
            self.shared.storage.group.wrote_in(generation),
            vec![Frame::ReadsSaved { through }],
        ));
        true
    }

    /// Offline reads could not be recorded (the audit log or the registry refused a write): end
    /// the session with a clear error, and no `ReadsSaved`, so the device keeps its reads and sends
    /// them again (without an answer its sync would wait for ever). The reads recorded before the
    /// failure, through outbox index `handled`, are noted as done (best-effort), so a resend
    /// does not record them twice.
    fn reads_not_recorded(
        &mut self,
        mark: Option<u64>,
        handled: u64,
        e: &dyn std::fmt::Display,
    ) -> bool {
        warn!(error = %e, "could not record offline reads: ending the session");
        if handled > mark.unwrap_or(0) {
            let _ = self
                .shared
                .registry
                .set_reads_through(&self.device.id, handled);
        }
        let msg = format!("the server could not record in its audit log what this device read offline; the reads are kept on this device: sync again later ({e})");
        let _ = self.out.send((
            0,
            vec![Frame::Error(refusal(ErrorCode::StorageFailed, msg))],
        ));
        false
    }

    fn access(&self, case: &CaseId) -> Access {
        let registered = match self.shared.registry.case_team(case) {
            Ok(t) => t,
            Err(_) => return Access::NotAvailable,
        };
        let held = || {
            self.shared
                .registry
                .held(&self.device.id, case)
                .unwrap_or(false)
        };
        match registered {
            None => Access::New,
            Some(team) if self.mode == SessionMode::Revoking => {
                // Being revoked gives no more than the device had: a case that left its teams
                // takes uploads only within its window (and up to when it was told), as before.
                let its_team = self.practitioner.teams.contains(&team);
                if its_team || (held() && self.upload_window_open(case, team)) {
                    Access::UploadOnly(team)
                } else {
                    Access::NotAvailable
                }
            }
            Some(team) if self.practitioner.teams.contains(&team) => Access::Full(team),
            Some(team) if held() && self.upload_window_open(case, team) => Access::UploadOnly(team),
            Some(_) => Access::NotAvailable,
        }
    }

    /// When the practitioner left `team`, if they did.
    fn left_at(&self, team: TeamId) -> Option<time::OffsetDateTime> {
        let at = self.practitioner.left.get(&team)?;
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
    }

    /// Whether `start` is within [`Shared::moved_upload_limit`] of now.
    fn within_upload_window(&self, start: Option<time::OffsetDateTime>) -> bool {
        start
            .is_some_and(|at| time::OffsetDateTime::now_utc() < at + self.shared.moved_upload_limit)
    }

    /// Whether the practitioner left `team` within [`Shared::moved_upload_limit`].
    fn left_within_window(&self, team: TeamId) -> bool {
        self.within_upload_window(self.left_at(team))
    }

    /// Whether this device may still upload to a case it holds whose team is not its
    /// practitioner's: within [`Shared::moved_upload_limit`] of the case's move to `team`, or of
    /// the practitioner leaving `team`, whichever is later.
    fn upload_window_open(&self, case: &CaseId, team: TeamId) -> bool {
        let since = self.shared.registry.case_since(case).ok().flatten();
        self.within_upload_window(since.max(self.left_at(team)))
    }

    /// Handle one sync message: returns the durability ticket and the frames to send after it.
    fn sync(&mut self, case: CaseId, message: &[u8]) -> (u64, Vec<Frame>) {
        let (ticket, frames) = self.sync_inner(case, message);
        // Bound the exchanges a case may take without its document changing: a confused or hostile
        // peer must not be able to keep the server ping-ponging (see MAX_MESSAGES_PER_CASE).
        let heads = frames.iter().find_map(|f| match f {
            Frame::Saved { heads, .. } => Some(heads.clone()),
            _ => None,
        });
        let entry = self.exchanges.entry(case).or_default();
        match heads {
            Some(h) if h != entry.1 => *entry = (1, h),
            _ => entry.0 += 1,
        }
        if entry.0 > 2 * polyphony_core::sync::MAX_MESSAGES_PER_CASE {
            let msg = "the sync of this case did not settle; nothing was lost: sync again later"
                .to_string();
            return (
                ticket,
                vec![Frame::CaseRefused {
                    case,
                    refusal: refusal(ErrorCode::Internal, msg),
                }],
            );
        }
        (ticket, frames)
    }

    fn sync_inner(&mut self, case: CaseId, message: &[u8]) -> (u64, Vec<Frame>) {
        let access = self.access(&case);
        let refuse = |s: &Self, code: ErrorCode, msg: String| s.refuse_case(case, code, msg);
        match access {
            Access::NotAvailable => {
                return refuse(
                    self,
                    ErrorCode::NotAvailable,
                    format!("case {case} is not available to this device"),
                );
            }
            Access::UploadOnly(_)
                if self.mode == SessionMode::Normal && !self.told_moved.contains(&case) =>
            {
                return self.tell_moved(case);
            }
            _ => {}
        }
        let told_moved = match self.told_moved_at(&case, access) {
            Ok(at) => at,
            Err(e) => {
                return refuse(
                    self,
                    ErrorCode::Internal,
                    format!("the server could not read its registry ({e}); your changes are still on your device: sync again later"),
                )
            }
        };
        let team = match access {
            Access::Full(t) | Access::UploadOnly(t) => Some(t),
            _ => None,
        };
        let upload_only = matches!(access, Access::UploadOnly(_));
        // The teams a new case may be created for: the practitioner's, and those they left
        // within the upload window (a case opened offline before leaving, or before a removal
        // with every device revoked, is uploaded, not stranded on the laptop).
        let mut my_teams = self.practitioner.teams.clone();
        let left: Vec<TeamId> = self.practitioner.left.keys().copied().collect();
        for t in left {
            if !my_teams.contains(&t) && self.left_within_window(t) {
                my_teams.push(t);
            }
        }
        let me = self.author.clone();
        let policy = ServerPolicy {
            case,
            team,
            my_teams: &my_teams,
            me: &me,
            told_moved,
        };
        let state = self.states.entry(case).or_default().clone();

        let shared_case = match team {
            Some(_) => match self.shared.storage.case(&case) {
                Ok(Some(c)) => Some(c),
                Ok(None) => None,
                Err(e) => {
                    return refuse(
                        self,
                        ErrorCode::Internal,
                        format!("the server could not read this case: {e}"),
                    )
                }
            },
            None => None,
        };

        let Some(shared_case) = shared_case else {
            // A case the server has not stored: sync into a provisional document for this session.
            if !self.provisional.contains_key(&case) && self.provisional.len() >= MAX_PROVISIONAL {
                return refuse(
                    self,
                    ErrorCode::Busy,
                    format!(
                        "more than {MAX_PROVISIONAL} new cases are on their way in this session: the rest sync next time"
                    ),
                );
            }
            let doc = self.provisional.entry(case).or_default();
            let prepared = match prepare(doc, &state, message, &policy) {
                Ok(p) => p,
                Err(e) => return self.refuse_apply(case, e),
            };
            if prepared.new_changes == 0 {
                let mut state = state;
                prepared.commit(doc, &mut state);
                let reply = doc
                    .sync()
                    .generate_sync_message(&mut state)
                    .map(|m| m.encode());
                let heads = doc.get_heads();
                self.states.insert(case, state);
                let mut frames: Vec<Frame> = reply
                    .into_iter()
                    .map(|message| Frame::Sync { case, message })
                    .collect();
                frames.push(Frame::Saved { case, heads });
                return (0, frames);
            }
            let Some(doc_team) = prepared.doc.as_ref().and_then(schema::read_team_id) else {
                return refuse(
                    self,
                    ErrorCode::InvalidChange,
                    "the case has no team".into(),
                );
            };
            match self.shared.registry.register_case(case, doc_team) {
                Ok(()) => {}
                Err(e @ RegistryError::CaseInAnotherTeam { .. }) => {
                    debug!(error = %e, "case id taken");
                    return refuse(
                        self,
                        ErrorCode::NotAvailable,
                        format!("case {case} is not available to this device"),
                    );
                }
                // A full or failing disk is not "not available": say what happened.
                Err(e) => {
                    return refuse(
                        self,
                        ErrorCode::StorageFailed,
                        format!(
                            "the server could not save this case ({e}); it is still on your device"
                        ),
                    )
                }
            }
            let actors = written_by(&prepared.actors);
            let mut sc = ServerCase::new(AutoCommit::new(), 0, 0);
            let mut state = state;
            let ticket = match self
                .shared
                .storage
                .apply(&case, &mut sc, prepared, &mut state)
            {
                Ok(t) => t,
                Err(e) => {
                    return refuse(
                        self,
                        ErrorCode::StorageFailed,
                        format!(
                            "the server could not save this case ({e}); it is still on your device"
                        ),
                    )
                }
            };
            self.provisional.remove(&case);
            let shared_case = self
                .shared
                .storage
                .insert(case, Arc::new(std::sync::Mutex::new(sc)));
            let _ = self.shared.registry.mark_held(&self.device.id, &case);
            // Best-effort, as for any stored write; the acknowledgement waits for its flush.
            let generation = self.shared.storage.group.generation();
            self.shared.audit(
                self.actor.clone(),
                AuditAction::Write,
                Some(case),
                format!("case created, written by {actors}"),
            );
            let ticket = ticket.max(self.shared.storage.group.wrote_in(generation));
            let mut c = shared_case.lock().expect("case lock");
            let reply = c
                .doc
                .sync()
                .generate_sync_message(&mut state)
                .map(|m| m.encode());
            let heads = c.doc.get_heads();
            drop(c);
            self.states.insert(case, state);
            self.shared.storage.announce(CaseChanged {
                case,
                origin: self.conn_id,
            });
            let mut frames: Vec<Frame> = reply
                .into_iter()
                .map(|message| Frame::Sync { case, message })
                .collect();
            frames.push(Frame::Saved { case, heads });
            return (ticket, frames);
        };

        let mut c = shared_case.lock().expect("case lock");
        // The document's own team field must not change in a device's hands. (After an
        // administrator moves a case, the registry, not this field, decides who may sync it.)
        let policy = ServerPolicy {
            team: c.team(),
            ..policy
        };
        let prepared = match prepare(&mut c.doc, &state, message, &policy) {
            Ok(p) => p,
            Err(e) => {
                drop(c);
                return self.refuse_apply(case, e);
            }
        };
        let new_changes = prepared.new_changes;
        let actors = written_by(&prepared.actors);
        let mut state = state;
        // With no new changes the ticket covers every write so far: the heads may include other
        // sessions' writes, claimed only once those are durable too.
        let mut ticket = match self
            .shared
            .storage
            .apply(&case, &mut c, prepared, &mut state)
        {
            Ok(t) => t,
            Err(e) => {
                drop(c);
                return refuse(self, ErrorCode::StorageFailed, format!("the server could not save your changes ({e}); they are still on your device: sync again later"));
            }
        };
        let doc = &mut c.doc;
        let mut reply = doc.sync().generate_sync_message(&mut state);
        if upload_only {
            if let Some(m) = reply.as_mut() {
                m.changes = automerge::sync::ChunkList::empty();
            }
        }
        // Upload-only, the device receives nothing: acknowledge what it holds (its heads, all
        // now stored), not the server's heads, which may cover colleagues' changes it will never
        // have. (Acknowledging those left a device that only read a moved case unable to tell
        // that all its own work was kept, so it never dropped its copy.)
        let heads = if upload_only {
            state
                .their_heads
                .clone()
                .filter(|h| h.iter().all(|x| doc.get_change_by_hash(x).is_some()))
                .unwrap_or_default()
        } else {
            doc.get_heads()
        };
        let relationship = relationship(&c.doc, &self.practitioner);
        drop(c);
        let mut unaudited = None;
        if reply.as_ref().is_some_and(|m| !m.changes.is_empty())
            && !self.read_audited.contains(&case)
        {
            // The read is in the audit log before the data leaves: the reply waits for this
            // record's flush as well as for the case's, and without the record it is not sent.
            match self.shared.audit_access(
                self.actor.clone(),
                case,
                format!("case data sent to device{relationship}"),
            ) {
                Ok(read) => {
                    ticket = ticket.max(read);
                    self.read_audited.insert(case);
                    // A device that received the case holds it: if the case moves away before
                    // the device uploads what it wrote offline, those words are still accepted
                    // (upload-only), not stranded as "not available". Found by the simulation
                    // (tests/tests/simulation.rs).
                    let _ = self.shared.registry.mark_held(&self.device.id, &case);
                }
                Err(e) => unaudited = Some(e),
            }
        }
        if new_changes > 0 {
            let _ = self.shared.registry.mark_held(&self.device.id, &case);
            // A write already stored: its record is best-effort (the change itself names its
            // author), but an acknowledgement waits for the record's flush too.
            let generation = self.shared.storage.group.generation();
            self.shared.audit(
                self.actor.clone(),
                AuditAction::Write,
                Some(case),
                format!("{new_changes} changes accepted, written by {actors}"),
            );
            ticket = ticket.max(self.shared.storage.group.wrote_in(generation));
            self.shared.storage.announce(CaseChanged {
                case,
                origin: self.conn_id,
            });
        }
        if let Some(e) = unaudited {
            // Neither the data nor a `Saved` (the device would take it as leave to sync the
            // case on, and be refused again): the device keeps what it uploaded, unacknowledged,
            // and sends it again next time, when the server finds it already stored. The sync
            // state is not kept either: it counts as sent the data that was withheld.
            return (0, vec![not_audited(case, &e, NOT_SENT_CASE)]);
        }
        self.states.insert(case, state);
        let mut frames: Vec<Frame> = reply
            .map(|m| Frame::Sync {
                case,
                message: m.encode(),
            })
            .into_iter()
            .collect();
        frames.push(Frame::Saved { case, heads });
        (ticket, frames)
    }

    /// Refuse a message for `case`, audited; nothing of it is applied.
    fn refuse_case(&self, case: CaseId, code: ErrorCode, msg: String) -> (u64, Vec<Frame>) {
        self.shared.audit(
            self.actor.clone(),
            AuditAction::Refused,
            Some(case),
            msg.clone(),
        );
        (
            0,
            vec![Frame::CaseRefused {
                case,
                refusal: refusal(code, msg),
            }],
        )
    }

    /// Tell the device, once a session, that `case` moved away from it; it then uploads what it
    /// holds. The first telling is recorded, and the refusal leaves only once that record is on
    /// disk: it is the boundary of what the device may still upload (see
    /// [`ServerPolicy::time_allowed`]). Nothing of the message it answers is applied.
    fn tell_moved(&mut self, case: CaseId) -> (u64, Vec<Frame>) {
        // Noted before the writes, for their ticket (see GroupCommit::wrote_in).
        let generation = self.shared.storage.group.generation();
        let first = match self.shared.registry.note_told_moved(&self.device.id, &case) {
            Ok(at) => at,
            Err(e) => {
                return self.refuse_case(
                    case,
                    ErrorCode::StorageFailed,
                    format!("the server could not record that this case moved ({e}); your changes are still on your device: sync again later"),
                )
            }
        };
        self.told_moved.insert(case);
        self.shared.audit(
            self.actor.clone(),
            AuditAction::CaseMoved,
            Some(case),
            format!(
                "device told the case moved (first told at {}); what it wrote before then is still accepted",
                to_the_second(first)
            ),
        );
        (
            self.shared.storage.group.wrote_in(generation),
            vec![Frame::CaseRefused {
                case,
                refusal: refusal(
                    ErrorCode::Moved,
                    "this case is no longer available to you (it moved to another team, or you left its team): what you wrote before now is kept on the server; nothing more can be added to it",
                ),
            }],
        )
    }

    /// When this device was first told `case` moved away, for an upload-only case: the boundary
    /// of what it may still upload. None for any other case.
    fn told_moved_at(
        &self,
        case: &CaseId,
        access: Access,
    ) -> Result<Option<time::OffsetDateTime>, RegistryError> {
        match access {
            Access::UploadOnly(_) => self.shared.registry.told_moved(&self.device.id, case),
            _ => Ok(None),
        }
    }

    fn refuse_apply(&self, case: CaseId, e: ApplyError) -> (u64, Vec<Frame>) {
        let code = match e {
            ApplyError::Forged(_) | ApplyError::Impersonates(_) => ErrorCode::ForgedAuthor,
            _ => ErrorCode::InvalidChange,
        };
        let msg = format!("change refused: {e}; the case on the server is unchanged");
        info!(%case, device = %self.device.id, "{msg}");
        self.refuse_case(case, code, msg)
    }

    /// Who has accessed a case, for the person's copy of their record, and the ticket to send it
    /// after. Only for a case this device may read; the request itself is audited first, and
    /// without that record nothing is sent.
    fn access_log(&self, case: CaseId) -> (u64, Frame) {
        if !matches!(self.access(&case), Access::Full(_)) {
            let refused = Frame::CaseRefused {
                case,
                refusal: refusal(
                    ErrorCode::NotAvailable,
                    format!("case {case} is not available to this device"),
                ),
            };
            return (0, refused);
        }
        let ticket =
            match self
                .shared
                .audit_access(self.actor.clone(), case, "access log sent to device")
            {
                Ok(t) => t,
                Err(e) => return (0, not_audited(case, &e, "no access list: try again later")),
            };
        let records = match self.shared.audit.entries(Some(case)) {
            Ok(r) => r,
            Err(e) => {
                let refused = Frame::CaseRefused {
                    case,
                    refusal: refusal(
                        ErrorCode::Internal,
                        format!("the audit log could not be read: {e}"),
                    ),
                };
                return (0, refused);
            }
        };
        let mut names: HashMap<polyphony_core::PractitionerId, String> = HashMap::new();
        let entries = records
            .into_iter()
            .filter(|r| {
                matches!(
                    r.event.action,
                    AuditAction::Read
                        | AuditAction::Write
                        | AuditAction::OfflineRead
                        | AuditAction::CaseMoved
                )
            })
            .map(|r| {
                let (who, device) = match &r.event.actor {
                    Actor::Device {
                        device,
                        practitioner,
                    } => {
                        let name = names.entry(*practitioner).or_insert_with(|| {
                            self.shared
                                .registry
                                .practitioner(practitioner)
                                .ok()
                                .flatten()
                                .map(|p| p.name)
                                .unwrap_or_else(|| format!("practitioner {practitioner}"))
                        });
                        (name.clone(), Some(device.to_string()))
                    }
                    Actor::Admin => ("an administrator".to_string(), None),
                    Actor::Server => ("the borough server".to_string(), None),
                };
                // A device records every read, connected or not: the record does not say
                // which, so a read is "on their device", never "offline".
                let (what, kind) = match r.event.action {
                    AuditAction::Read => (
                        format!("read ({})", r.event.detail),
                        Some(AccessKind::SentToDevice),
                    ),
                    AuditAction::Write => (
                        format!("wrote ({})", r.event.detail),
                        Some(AccessKind::Changed),
                    ),
                    AuditAction::OfflineRead => {
                        let purpose = crate::audit::device_read_purpose(&r.event.detail);
                        (
                            format!("read on their device ({purpose})"),
                            Some(AccessKind::OnDevice {
                                purpose: purpose.to_string(),
                                not_yet_sent: false,
                            }),
                        )
                    }
                    AuditAction::CaseMoved => (
                        format!("case moved ({})", r.event.detail),
                        Some(AccessKind::Moved),
                    ),
                    _ => (r.event.detail.clone(), None),
                };
                AccessEntry {
                    at: r.event.at,
                    who,
                    device,
                    what,
                    kind,
                }
            })
            .collect();
        (ticket, Frame::AccessLog { case, entries })
    }

    /// Another connection changed a case: send this device what it lacks (live push).
    pub fn push(&mut self, change: CaseChanged) {
        if change.origin == self.conn_id || self.mode != SessionMode::Normal {
            return;
        }
        if !self.check_access() {
            return;
        }
        if !matches!(self.access(&change.case), Access::Full(_)) {
            return;
        }
        // Noted before the case is read, so a reopen in between gives a lost ticket, never a
        // valid one for a document read from the dropped engine.
        let generation = self.shared.storage.group.generation();
        let Ok(Some(shared_case)) = self.shared.storage.case(&change.case) else {
            return;
        };
        // A push carries a ticket like any reply: the device receives a colleague's change only
        // once it is durable. Were it sent before, a crash could leave the device holding a
        // change the server lost, which it may not upload (a device writes only as itself).
        let state = self.states.entry(change.case).or_default();
        let (message, relationship) = {
            let mut c = shared_case.lock().expect("case lock");
            let m = c.doc.sync().generate_sync_message(state);
            (m, relationship(&c.doc, &self.practitioner))
        };
        if let Some(m) = message {
            let mut ticket = self.shared.storage.group.current_in(generation);
            if !m.changes.is_empty() && !self.read_audited.contains(&change.case) {
                // Audited before sent: the push waits for this record's flush too, and without
                // the record it is not sent.
                match self.shared.audit_access(
                    self.actor.clone(),
                    change.case,
                    format!("case data pushed live{relationship}"),
                ) {
                    Ok(read) => ticket = ticket.max(read),
                    Err(e) => return self.end_unaudited(change.case, &e),
                }
                self.read_audited.insert(change.case);
                let _ = self
                    .shared
                    .registry
                    .mark_held(&self.device.id, &change.case);
            }
            let _ = self.out.send((
                ticket,
                vec![Frame::Sync {
                    case: change.case,
                    message: m.encode(),
                }],
            ));
        }
    }

    /// A live push whose read the audit log could not record: nothing of the case is sent, and the
    /// session ends in words that say why. A push answers no request of the device's, so no
    /// per-case refusal fits (the device may not even know the case yet), and the session's sync
    /// state already counts the withheld data as sent. The device reconnects and syncs afresh:
    /// each case is then refused, or sent with its record, case by case.
    fn end_unaudited(&mut self, case: CaseId, e: &AuditError) {
        warn!(%case, error = %e, "a live push could not be recorded in the audit log: not sent; ending the session");
        self.ended = Some((
            ErrorCode::StorageFailed,
            format!("the server could not record an access in its audit log, so it sent nothing of that case; your own changes are safe on this device: sync again later ({e})"),
        ));
    }

    /// The announcement channel overflowed: offer every case of this session again.
    pub fn push_all(&mut self) {
        let cases: Vec<CaseId> = self.states.keys().copied().collect();
        for case in cases {
            self.push(CaseChanged {
                case,
                origin: u64::MAX,
            });
        }
    }
}

#[cfg(test)]
mod tests;
