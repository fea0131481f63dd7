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

pub mod blobs;
mod driver;
pub mod keep;
pub mod transfer;

/// How many attachment streams one connection is served at once.
pub const MAX_ATTACHMENT_STREAMS: usize = driver::MAX_ATTACHMENT_STREAMS;
mod policy;
mod protocol;

use std::collections::HashSet;
use std::sync::Arc;

use automerge::{ActorId, AutoCommit};
use polyphony_core::model::guard;
use polyphony_core::sync::{
    CaseGrant, ErrorCode, Frame, Hello, Refusal, SessionMode, Welcome, FEATURE_ATTACHMENTS,
    FEATURE_COLLEAGUES, FEATURE_CONFIRMS_WIPE, FEATURE_HUB_RECEIPTS, PROTOCOL_VERSION,
};
use polyphony_core::CaseId;
use tracing::warn;

pub(crate) use driver::off_runtime;
pub use driver::{serve, serve_borough, MAX_SEND_BACKLOG};
pub(crate) use protocol::own_access_entries;
pub use protocol::{Batch, Session};

use crate::audit::{Actor, AuditAction, AuditError, AuditEvent, AuditLog};
use crate::registry::{Borough, Device, DeviceStatus, Practitioner, Registry, RegistryError};
use crate::storage::ServerStorage;

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
    /// The most new cases one session may be part-way through sending
    /// ([`crate::ServerConfig::max_new_cases_per_session`]; [`MAX_PROVISIONAL`] by default).
    pub max_new_cases: usize,
    /// Every address the borough's server nodes answer at ([`crate::ServerConfig::advertise`]),
    /// told to devices at enrolment and in each welcome; empty when there is only the one.
    pub advertise: Vec<String>,
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
        self.audit_required(actor, AuditAction::Read, case, detail.into())
    }

    /// Record a write that must be in the audit log before it is stored (a note withheld from
    /// the person's copy, or shown again), and return the ticket covering the record. On an
    /// error the caller stores nothing of the change.
    pub fn audit_write(
        &self,
        actor: Actor,
        case: CaseId,
        detail: impl Into<String>,
    ) -> Result<u64, AuditError> {
        self.audit_required(actor, AuditAction::Write, case, detail.into())
    }

    fn audit_required(
        &self,
        actor: Actor,
        action: AuditAction,
        case: CaseId,
        detail: String,
    ) -> Result<u64, AuditError> {
        // Noted before the write, for its ticket (see GroupCommit::wrote_in).
        let generation = self.storage.group.generation();
        let event = AuditEvent::now(actor, action, Some(case), detail);
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

/// The most offline reads one `Reads` frame may carry (a device sends its outbox in batches).
pub const MAX_READS_PER_FRAME: usize = 1_000;
/// The most new cases one session may be part-way through sending by default (each is held in
/// memory until it is complete and stored; [`Shared::max_new_cases`] is the setting). A device back from a week offline, or one importing a caseload,
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
/// `ServerPolicy::author_allowed`).
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
    let colleagues = match mode {
        SessionMode::Revoking => None,
        SessionMode::Normal => match shared.registry.colleagues_of(practitioner) {
            Ok(list) => Some(list),
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
        features: vec![
            FEATURE_CONFIRMS_WIPE.to_string(),
            FEATURE_COLLEAGUES.to_string(),
            FEATURE_ATTACHMENTS.to_string(),
            FEATURE_HUB_RECEIPTS.to_string(),
        ],
        colleagues,
        servers: shared.advertise.clone(),
    })
}

/// The hub's answer to a borough's `Hello` and `Roster`: the cases of its teams. The borough's
/// teams and devices are claimed for it first ([`claim_roster`]). `device` and `practitioner`
/// carry the borough's id (the link has neither); no team list is sent, and the mode is always
/// normal (a borough is never upload-then-wipe: revoked, it is refused).
pub fn welcome_borough(
    shared: &Shared,
    hello: &Hello,
    borough: &Borough,
) -> Result<(Welcome, Vec<polyphony_core::TeamId>), NotWelcome> {
    if hello.version != PROTOCOL_VERSION {
        let msg = format!(
            "this trust hub speaks protocol {PROTOCOL_VERSION}, the borough server {}: update it",
            hello.version
        );
        return Err(NotWelcome::Version(refusal(
            ErrorCode::UnsupportedVersion,
            msg,
        )));
    }
    let internal = |e: RegistryError| NotWelcome::Internal(format!("trust hub error: {e}"));
    let teams = shared
        .registry
        .borough_teams(&borough.id)
        .map_err(internal)?;
    let cases = shared
        .registry
        .cases_of_teams(&teams)
        .map_err(internal)?
        .into_iter()
        .map(|(case, team)| CaseGrant { case, team })
        .collect();
    let (device, practitioner) = borough_as_peer(borough, teams.clone());
    shared.audit(
        Actor::Borough {
            borough: borough.id,
        },
        AuditAction::Connect,
        None,
        format!(
            "borough link ({}), {} team(s)",
            if hello.live { "live" } else { "one-shot" },
            teams.len()
        ),
    );
    let welcome = Welcome {
        version: PROTOCOL_VERSION,
        device: device.id,
        practitioner: practitioner.id,
        teams: teams.clone(),
        cases,
        mode: SessionMode::Normal,
        audit_head: signed_head(shared),
        features: vec![polyphony_core::sync::FEATURE_SAFEKEEPING.to_string()],
        colleagues: None,
        servers: Vec::new(),
    };
    Ok((welcome, teams))
}

/// Take a borough's roster: its teams and devices are claimed for it on the hub (a team or a
/// device another borough holds is refused, and nothing of the roster is kept). Audited when it
/// is refused: a borough naming another's device is either misconfigured or forging.
pub fn claim_roster(
    shared: &Shared,
    borough: &Borough,
    roster: &polyphony_core::sync::Roster,
) -> Result<(), Refusal> {
    use polyphony_core::sync::{MAX_ROSTER_DEVICES, MAX_ROSTER_TEAMS};
    let refused = |code: ErrorCode, message: String| {
        shared.audit(
            Actor::Borough {
                borough: borough.id,
            },
            AuditAction::Refused,
            None,
            format!("roster refused: {message}"),
        );
        refusal(code, message)
    };
    if roster.teams.len() > MAX_ROSTER_TEAMS || roster.devices.len() > MAX_ROSTER_DEVICES {
        return Err(refused(
            ErrorCode::TooLarge,
            format!(
                "a roster of {} team(s) and {} device(s) is over the hub's limits ({MAX_ROSTER_TEAMS} teams, {MAX_ROSTER_DEVICES} devices)",
                roster.teams.len(),
                roster.devices.len()
            ),
        ));
    }
    let claimed = shared
        .registry
        .claim(&borough.id, &roster.teams, &roster.devices);
    match claimed {
        Ok(_) => Ok(()),
        Err(e @ (RegistryError::Store(_) | RegistryError::Corrupt { .. })) => Err(refusal(
            ErrorCode::Internal,
            format!("the trust hub could not record this borough's roster ({e}): sync again later"),
        )),
        Err(e) => Err(refused(ErrorCode::Unauthorised, e.to_string())),
    }
}

/// A borough in the places a device and its practitioner take in a session (see
/// [`Session::for_borough`]): its id keys what it holds, its teams are the teams it may sync.
fn borough_as_peer(
    borough: &Borough,
    teams: Vec<polyphony_core::TeamId>,
) -> (Device, Practitioner) {
    let at = borough.enrolled_at.unwrap_or(borough.created_at);
    let device = Device {
        id: polyphony_core::DeviceId(borough.id.0),
        name: borough.name.clone(),
        practitioner: polyphony_core::PractitionerId(borough.id.0),
        status: borough.status,
        cert_fingerprint: borough.cert_fingerprint.clone().unwrap_or_default(),
        enrolled_at: at,
        revoked_at: borough.revoked_at,
    };
    let practitioner = Practitioner {
        id: polyphony_core::PractitionerId(borough.id.0),
        name: borough.name.clone(),
        role: polyphony_core::model::StaffRole::Practitioner,
        teams,
        left: Default::default(),
        created_at: borough.created_at,
    };
    (device, practitioner)
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

#[cfg(test)]
mod tests;
