//! The wire format: length-prefixed frames on a QUIC stream.
//!
//! A frame is a 4-byte big-endian body length, then the body: one type byte and a payload. The hot
//! path (`Sync`, `Saved`) is plain binary; rare control frames carry JSON, which is easy to extend and
//! to read in a packet capture. The decoder separates "incomplete, read more" (`Ok(None)`) from
//! "invalid, close the connection" (`Err`), and refuses a length over its limit before allocating,
//! so a hostile peer cannot make us buffer gigabytes.
//!
//! The protocol version is carried twice: in the TLS ALPN (`polyphony/1`), so an incompatible peer is
//! refused during the handshake, and in `Hello`, so a mismatch gets a clear message.

use automerge::ChangeHash;
use serde::{Deserialize, Serialize};

use crate::{BlobHash, CaseId, DeviceId, PractitionerId, TeamId};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// The largest frame body accepted by default: big enough for a years-long case sent whole, small
/// enough that a hostile peer cannot exhaust memory.
pub const DEFAULT_MAX_FRAME: usize = 32 * 1024 * 1024;

/// Why a connection or a case was refused. Also used as the QUIC application close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u16)]
pub enum ErrorCode {
    /// The session finished normally.
    Done = 0,
    /// A frame could not be parsed.
    Malformed = 1,
    /// A frame was larger than the limit.
    Oversized = 2,
    /// The peer speaks another protocol version.
    UnsupportedVersion = 3,
    /// The device is not enrolled, or presented no certificate.
    Unauthorised = 4,
    /// The device was revoked.
    Revoked = 5,
    /// The server is shutting down; try again shortly.
    ShuttingDown = 6,
    /// Something failed inside the peer.
    Internal = 7,
    /// The case is not available to this device (it does not exist, or belongs to another team:
    /// the two are indistinguishable on purpose).
    NotAvailable = 8,
    /// The change does not keep the record's shape.
    InvalidChange = 9,
    /// The change was authored by an actor that is not an enrolled device of the team.
    ForgedAuthor = 10,
    /// The server could not store the change (disk full or failing). Nothing was acknowledged.
    StorageFailed = 11,
    /// The case moved to another team; your changes were kept; the local copy can go.
    Moved = 12,
    /// Too many connections; try again shortly.
    Busy = 13,
    /// The document is larger than the server accepts.
    TooLarge = 14,
    /// The enrolment code is unknown, used or expired.
    BadEnrolment = 15,
}

impl ErrorCode {
    /// The code from its number.
    pub fn from_u16(n: u16) -> Option<ErrorCode> {
        use ErrorCode::*;
        [
            Done,
            Malformed,
            Oversized,
            UnsupportedVersion,
            Unauthorised,
            Revoked,
            ShuttingDown,
            Internal,
            NotAvailable,
            InvalidChange,
            ForgedAuthor,
            StorageFailed,
            Moved,
            Busy,
            TooLarge,
            BadEnrolment,
        ]
        .into_iter()
        .find(|c| *c as u16 == n)
    }
}

/// A read of a case made on a device while offline, uploaded so the person's access log is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineRead {
    /// Which case.
    pub case: CaseId,
    /// When it was read (RFC 3339, the device's clock).
    pub at: String,
    /// What was looked at (e.g. "case show", "export").
    pub what: String,
    /// The device's outbox index, so the server can ignore a duplicate upload.
    pub seq: u64,
}

/// The client's first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version.
    pub version: u16,
    /// Client software, for the log.
    pub software: String,
    /// Stay connected after the first full sync and receive live changes.
    pub live: bool,
    /// What this client can do beyond protocol 1 as first released (see [`FEATURE_CONFIRMS_WIPE`]).
    /// Empty, and absent on the wire, for clients older than the field: a server reads a missing
    /// list as empty, and an older server ignores the field, so neither side refuses the other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

impl Hello {
    /// Whether the client announced `feature`.
    pub fn has(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }
}

/// The client answers `Wipe` with `Wiped` once its wipe is done, saying which cases it had to keep
/// because they hold changes the server does not have. A server that sees this feature keeps a
/// device being revoked able to upload until it confirms a complete wipe; for a client without it,
/// the server marks the device revoked when it says `Done`, as protocol 1 first did.
pub const FEATURE_CONFIRMS_WIPE: &str = "confirms-wipe";

/// The client's answer to `Wipe`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Wiped {
    /// Cases kept on the device because they hold changes the server has not acknowledged
    /// (empty: everything was wiped, and the device forgot its enrolment).
    pub kept: Vec<CaseId>,
}

/// The server sends the team list (`Welcome::colleagues`) and, in a live session, a new one
/// (`Frame::Colleagues`) whenever the administrator changes it. A client without this feature
/// is sent no `Colleagues` frame (it would not know the frame type), and reads past the
/// `Welcome` field.
pub const FEATURE_COLLEAGUES: &str = "colleagues";

/// "Also on the trust hub": a device that announces this is sent `HubSaved` for its cases (after
/// each `Saved`, and live when the hub acknowledges the borough's link); a borough server that
/// announces it sends them. Neither side sends the frame to a peer that did not announce it.
pub const FEATURE_HUB_RECEIPTS: &str = "hub-receipts";

/// A member of staff who works in one of the device's teams, as the server's administrator
/// registered them: who can be ticked as present at a meeting, or added to a care team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Colleague {
    /// Their practitioner id.
    pub practitioner: PractitionerId,
    /// Their name.
    pub name: String,
    /// Their role; a role a newer server added is kept as written.
    pub role: crate::model::Stored<crate::model::StaffRole>,
    /// The device's teams they work in.
    pub teams: Vec<TeamId>,
}

impl Colleague {
    /// As a meeting notes a member of staff, if this version knows their role.
    pub fn staff_member(&self) -> Option<crate::model::StaffMember> {
        Some(crate::model::StaffMember {
            practitioner: self.practitioner,
            name: self.name.clone(),
            role: self.role.known()?,
        })
    }
}

/// How the server will treat this device for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionMode {
    /// Read and write the cases of the device's teams.
    Normal,
    /// The device is being revoked: it may upload what it has, receives nothing, and is then told to
    /// wipe its store.
    Revoking,
}

/// A case the device may sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseGrant {
    /// The case.
    pub case: CaseId,
    /// Its team.
    pub team: TeamId,
}

/// The server's answer to `Hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Protocol version.
    pub version: u16,
    /// The device, as the server knows it.
    pub device: DeviceId,
    /// Its practitioner.
    pub practitioner: PractitionerId,
    /// The practitioner's teams.
    pub teams: Vec<TeamId>,
    /// Every case the device may read (empty when revoking).
    pub cases: Vec<CaseGrant>,
    /// Normal or revoking.
    pub mode: SessionMode,
    /// The server's audit-log head, signed by the borough CA: the device keeps the newest it saw,
    /// so a server whose log lost its tail, or an older copy of it, is found out
    /// ([`crate::identity::AuditHead`]). Absent from servers before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_head: Option<crate::identity::AuditHead>,
    /// What this server can do beyond protocol 1 as first released (see
    /// [`FEATURE_CONFIRMS_WIPE`]); empty, and absent on the wire, for servers older than the field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// Everyone in the device's teams, the device's own practitioner included, with their roles
    /// ([`FEATURE_COLLEAGUES`]). Absent from servers before it was added: the device keeps the
    /// list it had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colleagues: Option<Vec<Colleague>>,
    /// Every address the borough's server nodes can be reached at (`host:port`), when it runs
    /// more than one: the device keeps the list and tries each in turn when one does not answer.
    /// Empty, and absent on the wire, from a server with one address or older than the field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
}

impl Welcome {
    /// Whether the server announced `feature`.
    pub fn has(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }
}

/// A refusal, of one case or of the whole connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// What kind of refusal.
    pub code: ErrorCode,
    /// What happened and what to do, for the user.
    pub message: String,
}

/// A device asking to enrol (on an `ALPN_ENROL` connection, without a client certificate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolRequest {
    /// Protocol version.
    pub version: u16,
    /// The one-time token from the enrolment code, hex.
    pub token: String,
    /// The id the device chose for itself (also its automerge actor).
    pub device: DeviceId,
    /// A name for the device, for the administrator's list.
    pub device_name: String,
    /// A certificate signing request for the device's own key (hex DER); the key never leaves it.
    pub csr: String,
}

/// A team, by id and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamInfo {
    /// Team id.
    pub id: TeamId,
    /// Team name.
    pub name: String,
}

/// The server's answer to a successful enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    /// The device id, confirmed.
    pub device: DeviceId,
    /// The practitioner this device belongs to.
    pub practitioner: PractitionerId,
    /// Their name.
    pub practitioner_name: String,
    /// Their teams.
    pub teams: Vec<TeamInfo>,
    /// The device certificate, hex DER.
    pub certificate: String,
    /// The borough CA certificate, hex DER.
    pub ca: String,
    /// Every address the borough's server nodes can be reached at, as in [`Welcome::servers`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
}

/// A borough server asking the trust hub to enrol it (on an `ALPN_ENROL` connection, without a
/// client certificate), with the one-time code the hub's administrator gave for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoroughEnrolRequest {
    /// Protocol version.
    pub version: u16,
    /// The one-time token from the enrolment code, hex.
    pub token: String,
    /// What the borough calls itself, for the hub's log (the hub keeps the name it was added as).
    pub name: String,
    /// A certificate signing request for the borough's link key (hex DER); the key never leaves
    /// the borough server.
    pub csr: String,
}

/// The hub's answer to a successful borough enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoroughEnrolled {
    /// The borough's id on the hub (also in its link certificate).
    pub borough: crate::BoroughId,
    /// The name the hub knows it by.
    pub name: String,
    /// The link certificate, hex DER.
    pub certificate: String,
    /// The hub's CA certificate, hex DER (the trust CA every borough's link is certified by).
    pub ca: String,
}

/// A device enrolled on a borough server, as the borough tells the hub: the changes the borough
/// relays must be written by one of these, each as itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterDevice {
    /// The device (its automerge actor is its id's 16 bytes).
    pub device: DeviceId,
    /// Its practitioner.
    pub practitioner: PractitionerId,
    /// Their name, as the device stamps it on what it writes.
    pub practitioner_name: String,
}

/// The most devices a [`Roster`] may list; the hub refuses a roster with more. Far above any
/// borough's count of devices ever enrolled, and low enough that a roster stays a few megabytes.
pub const MAX_ROSTER_DEVICES: usize = 100_000;

/// The most teams a [`Roster`] may list; the hub refuses a roster with more. Far above any
/// borough's count of teams.
pub const MAX_ROSTER_TEAMS: usize = 10_000;

/// Borough → hub, the frame after `Hello` on a borough's link: its teams (the cases the hub
/// grants it are theirs) and every device ever enrolled on it (whatever its status: a revoked
/// device's old changes are still relayed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// The borough's teams.
    pub teams: Vec<TeamInfo>,
    /// Its devices.
    pub devices: Vec<RosterDevice>,
}

/// The trust hub keeps, for each borough that announces it, a copy of what the borough would need
/// to be rebuilt (its CA, its registry, its audit log), sealed under a recovery key only the
/// borough's administrator holds: the hub stores the bytes and cannot open them. A borough sends
/// its `Keep` parts on streams of their own beside its link's session, only to a hub whose
/// `Welcome` announces this.
pub const FEATURE_SAFEKEEPING: &str = "safekeeping";

/// Which of a borough's kept copies a [`KeepPart`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shelf {
    /// The borough's CA and registry, as a whole: a new generation replaces the last complete
    /// one once all its parts are kept.
    Registry,
    /// The borough's audit log, appended to: each part holds records from `first`, `count` of them.
    Audit,
}

/// One sealed part of a borough's kept copy (borough → hub to keep it; hub → borough when a
/// rebuilt borough fetches it). The numbers are in the clear, so the hub can order and bound
/// the parts; what they hold is sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepPart {
    /// Which copy.
    pub shelf: Shelf,
    /// Registry: the generation. Audit: the first record's number.
    pub first: u64,
    /// Registry: the part's number within its generation, from 0. Audit: how many records.
    pub count: u64,
    /// Registry: the generation's last part. Audit: always true.
    pub last: bool,
    /// The sealed bytes (a nonce and the ciphertext), never empty.
    pub sealed: Vec<u8>,
}

/// Hub → borough: how much of the borough's copy the hub holds durably (after its fsync), in
/// answer to a `Keep`; and the last frame of the answer to `KeepFetch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Kept {
    /// The newest registry generation kept whole, if any.
    pub registry: Option<u64>,
    /// How many audit records are kept (every record before this number).
    pub audit_through: u64,
}

/// Borough → hub on a stream beside the borough's link: hand this case over to another
/// borough's team (the person moved). Answered with `Transferred`, or an `Error` saying why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferCase {
    /// The case: one of the sending borough's teams'.
    pub case: CaseId,
    /// The receiving borough, by its name on the hub (or its id).
    pub borough: String,
    /// The receiving team, by its name (or its id) among that borough's teams.
    pub team: String,
    /// Who has seen or changed the case on the sending borough, oldest first, as its own
    /// devices would be shown it: it goes with the case, so the person's list stays whole.
    pub access: Vec<crate::export::Access>,
}

/// Hub → borough: the case is the receiving team's now (sent again for a transfer repeated, so
/// a borough that lost the first answer hears it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transferred {
    /// The case.
    pub case: CaseId,
    /// The receiving borough.
    pub borough: crate::BoroughId,
    /// Its name on the hub.
    pub borough_name: String,
    /// The receiving team.
    pub team: TeamInfo,
}

/// Hub → receiving borough, in answer to `HistoryWant`: who saw or changed a case transferred
/// to it, on the boroughs it came from, oldest first (empty for a case never transferred).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseHistory {
    /// The case.
    pub case: CaseId,
    /// The accesses, each naming the borough it happened on.
    pub access: Vec<crate::export::Access>,
}

/// One frame of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client → server: opens the session.
    Hello(Hello),
    /// Server → client: who you are and what you may sync.
    Welcome(Welcome),
    /// Either way: an automerge sync message for one case.
    Sync {
        /// The case.
        case: CaseId,
        /// The encoded automerge sync message.
        message: Vec<u8>,
    },
    /// Server → client: exactly one per client `Sync`, sent after the server's reply and only once
    /// everything the server holds for the case is durable on disk. `heads` are the server's heads.
    Saved {
        /// The case.
        case: CaseId,
        /// The server's durable heads.
        heads: Vec<ChangeHash>,
    },
    /// Borough server → device that announced [`FEATURE_HUB_RECEIPTS`]: the trust hub holds
    /// these heads of the case durably (after its fsync), as the borough's link last heard.
    /// Not an answer to anything: the device records it ("also on the trust hub") and goes on.
    HubSaved {
        /// The case.
        case: CaseId,
        /// The heads the hub acknowledged (those the borough knows).
        heads: Vec<ChangeHash>,
    },
    /// Server → client: a client `Sync` for this case was refused; counts as its answer.
    CaseRefused {
        /// The case.
        case: CaseId,
        /// Why.
        refusal: Refusal,
    },
    /// Client → server: offline reads to add to the audit log.
    Reads(Vec<OfflineRead>),
    /// Server → client: the reads up to this outbox index are in the audit log.
    ReadsSaved {
        /// Highest outbox index stored.
        through: u64,
    },
    /// Client → server: every case is idle (the one-shot sync is complete).
    Done,
    /// Server → client: the session may end.
    Bye,
    /// Server → client: this device is revoked; its uploads are safe; wipe the local store.
    Wipe,
    /// Client → server, after `Wipe` (devices that announce [`FEATURE_CONFIRMS_WIPE`]): the wipe is
    /// done, except for these cases, which still hold changes the server does not have and stay
    /// on the device until a later session uploads them.
    Wiped(Wiped),
    /// Either way: a fatal error; the connection closes after it.
    Error(Refusal),
    /// Client → server: send me who has accessed this case (for the person's copy).
    AccessLogRequest {
        /// The case.
        case: CaseId,
    },
    /// Server → client: the case's accesses, oldest first.
    AccessLog {
        /// The case.
        case: CaseId,
        /// The accesses.
        entries: Vec<crate::export::Access>,
    },
    /// Server → client, in a live session of a client that announced [`FEATURE_COLLEAGUES`]:
    /// the team list changed; this is the whole new list.
    Colleagues(Vec<Colleague>),
    /// Device → server on an enrolment connection.
    Enrol(EnrolRequest),
    /// Server → device: enrolment accepted.
    Enrolled(Enrolled),
    /// Borough server → trust hub, the first frame on an enrolment connection (`ALPN_ENROL`,
    /// without a client certificate): enrol me, with the hub's one-time code.
    EnrolBorough(BoroughEnrolRequest),
    /// Trust hub → borough server on the same enrolment connection: enrolment accepted; here is
    /// the borough's id and link certificate. (A refusal is an `Error`.)
    BoroughEnrolled(BoroughEnrolled),
    /// Borough server → trust hub on the borough's link (a sync connection, with the link
    /// certificate), the frame after `Hello`: its teams and devices. The hub refuses a roster over
    /// [`MAX_ROSTER_TEAMS`] or [`MAX_ROSTER_DEVICES`].
    Roster(Roster),
    /// Borough → hub on a stream beside the link: hand a case over to another borough.
    Transfer(TransferCase),
    /// Hub → borough on that stream: the case is the receiving team's now.
    Transferred(Transferred),
    /// Borough → hub on a stream beside the link: send me the history of this case (one
    /// transferred to me) from the boroughs it came from.
    HistoryWant {
        /// The case.
        case: CaseId,
    },
    /// Hub → borough on that stream: the answer.
    History(CaseHistory),
    /// On a stream beside a borough's link: a part of the borough's kept copy
    /// ([`FEATURE_SAFEKEEPING`]). Borough → hub to keep it; hub → borough in answer to `KeepFetch`.
    Keep(KeepPart),
    /// Hub → borough on a safekeeping stream: what the hub holds of the borough's copy, durably.
    Kept(Kept),
    /// Borough → hub, the first frame of a stream on a link connection: send me my kept copy
    /// (a rebuilt borough restoring). Answered with its `Keep` parts, then `Kept`.
    KeepFetch,
    /// On an attachment stream ([`FEATURE_ATTACHMENTS`]): device → server, "I have these bytes
    /// of this case"; server → device, the answer to `BlobWant`, followed by the bytes in
    /// `BlobChunk` frames.
    BlobOffer {
        /// The case the attachment belongs to.
        case: CaseId,
        /// The address of its bytes.
        hash: BlobHash,
        /// How many bytes follow.
        size: u64,
    },
    /// On an attachment stream: device → server, "send me these bytes"; server → device, the
    /// answer to `BlobOffer` when the server does not hold them yet: "send them".
    BlobWant {
        /// The case.
        case: CaseId,
        /// The address of the bytes.
        hash: BlobHash,
    },
    /// On an attachment stream: the next bytes of an offered attachment (at most
    /// [`BLOB_CHUNK_BYTES`]).
    BlobChunk(Vec<u8>),
    /// On an attachment stream, server → device: the bytes are durable on the server's disk (or
    /// were already there). Sent only after they are.
    BlobSaved {
        /// The case.
        case: CaseId,
        /// The address of the bytes.
        hash: BlobHash,
    },
}

/// The server takes attachments on streams of their own: a device opens one stream per
/// attachment and sends `BlobOffer` (to upload) or `BlobWant` (to download) as its first frame.
/// A device asks nothing of a server that did not announce this in its `Welcome`.
pub const FEATURE_ATTACHMENTS: &str = "attachments";

/// The most bytes one `BlobChunk` carries.
pub const BLOB_CHUNK_BYTES: usize = 1024 * 1024;

/// A frame that cannot be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix is over the limit.
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    Oversized {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An unknown frame type.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// The payload is malformed.
    #[error("malformed {kind} frame: {detail}")]
    Malformed {
        /// Frame type name.
        kind: &'static str,
        /// What is wrong.
        detail: String,
    },
}

impl FrameError {
    /// The close code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::Oversized { .. } => ErrorCode::Oversized,
            _ => ErrorCode::Malformed,
        }
    }
}

mod tag {
    pub(super) const HELLO: u8 = 0x01;
    pub(super) const WELCOME: u8 = 0x02;
    pub(super) const SYNC: u8 = 0x03;
    pub(super) const SAVED: u8 = 0x04;
    pub(super) const CASE_REFUSED: u8 = 0x05;
    pub(super) const READS: u8 = 0x06;
    pub(super) const READS_SAVED: u8 = 0x07;
    pub(super) const DONE: u8 = 0x08;
    pub(super) const BYE: u8 = 0x09;
    pub(super) const WIPE: u8 = 0x0a;
    pub(super) const WIPED: u8 = 0x0e;
    pub(super) const COLLEAGUES: u8 = 0x0f;
    pub(super) const ERROR: u8 = 0x0b;
    pub(super) const ACCESS_LOG_REQUEST: u8 = 0x0c;
    pub(super) const ACCESS_LOG: u8 = 0x0d;
    pub(super) const ENROL: u8 = 0x10;
    pub(super) const ENROLLED: u8 = 0x11;
    pub(super) const BLOB_OFFER: u8 = 0x12;
    pub(super) const BLOB_WANT: u8 = 0x13;
    pub(super) const BLOB_CHUNK: u8 = 0x14;
    pub(super) const BLOB_SAVED: u8 = 0x15;
    pub(super) const HUB_SAVED: u8 = 0x19;
    pub(super) const ENROL_BOROUGH: u8 = 0x16;
    pub(super) const BOROUGH_ENROLLED: u8 = 0x17;
    pub(super) const ROSTER: u8 = 0x18;
    pub(super) const KEEP: u8 = 0x1a;
    pub(super) const KEPT: u8 = 0x1b;
    pub(super) const KEEP_FETCH: u8 = 0x1c;
    pub(super) const TRANSFER: u8 = 0x1d;
    pub(super) const TRANSFERRED: u8 = 0x1e;
    pub(super) const HISTORY_WANT: u8 = 0x1f;
    pub(super) const HISTORY: u8 = 0x20;
}

/// A case id, the count of heads (4 bytes) and the heads: `Saved`'s and `HubSaved`'s payload.
fn encode_case_heads(out: &mut Vec<u8>, case: &CaseId, heads: &[ChangeHash]) {
    out.extend_from_slice(case.0.as_bytes());
    out.extend_from_slice(&(heads.len() as u32).to_be_bytes());
    for h in heads {
        out.extend_from_slice(&h.0);
    }
}

/// The case id a payload starts with, and the rest.
fn case_id<'a>(kind: &'static str, p: &'a [u8]) -> Result<(CaseId, &'a [u8]), FrameError> {
    if p.len() < 16 {
        return Err(FrameError::Malformed {
            kind,
            detail: "too short for a case id".into(),
        });
    }
    let (id, rest) = p.split_at(16);
    let id = uuid::Uuid::from_slice(id).map_err(|e| FrameError::Malformed {
        kind,
        detail: e.to_string(),
    })?;
    Ok((CaseId(id), rest))
}

/// The case and heads of a `Saved` or `HubSaved` payload (see [`encode_case_heads`]).
fn case_heads(kind: &'static str, p: &[u8]) -> Result<(CaseId, Vec<ChangeHash>), FrameError> {
    let (case, rest) = case_id(kind, p)?;
    let bad = |d: &str| FrameError::Malformed {
        kind,
        detail: d.to_string(),
    };
    if rest.len() < 4 {
        return Err(bad("missing head count"));
    }
    let (n, hashes) = rest.split_at(4);
    let n = u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize;
    if hashes.len()
        != n.checked_mul(32)
            .ok_or_else(|| bad("head count overflows"))?
    {
        return Err(bad("head count does not match the payload"));
    }
    let heads = hashes
        .chunks_exact(32)
        .map(|h| ChangeHash::try_from(h).map_err(|e| bad(&e.to_string())))
        .collect::<Result<_, _>>()?;
    Ok((case, heads))
}

fn json<T: Serialize>(out: &mut Vec<u8>, v: &T) {
    // Serialising our own plain structs to a Vec cannot fail.
    serde_json::to_writer(out, v).expect("frame payloads serialise");
}

impl Frame {
    /// Append the encoded frame (length prefix included) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        match self {
            Frame::Hello(h) => {
                out.push(tag::HELLO);
                json(out, h);
            }
            Frame::Welcome(w) => {
                out.push(tag::WELCOME);
                json(out, w);
            }
            Frame::Sync { case, message } => {
                out.push(tag::SYNC);
                out.extend_from_slice(case.0.as_bytes());
                out.extend_from_slice(message);
            }
            Frame::Saved { case, heads } => {
                out.push(tag::SAVED);
                encode_case_heads(out, case, heads);
            }
            Frame::HubSaved { case, heads } => {
                out.push(tag::HUB_SAVED);
                encode_case_heads(out, case, heads);
            }
            Frame::CaseRefused { case, refusal } => {
                out.push(tag::CASE_REFUSED);
                out.extend_from_slice(case.0.as_bytes());
                json(out, refusal);
            }
            Frame::Reads(r) => {
                out.push(tag::READS);
                json(out, r);
            }
            Frame::ReadsSaved { through } => {
                out.push(tag::READS_SAVED);
                out.extend_from_slice(&through.to_be_bytes());
            }
            Frame::Done => out.push(tag::DONE),
            Frame::Bye => out.push(tag::BYE),
            Frame::Wipe => out.push(tag::WIPE),
            Frame::Wiped(w) => {
                out.push(tag::WIPED);
                json(out, w);
            }
            Frame::Error(r) => {
                out.push(tag::ERROR);
                json(out, r);
            }
            Frame::AccessLogRequest { case } => {
                out.push(tag::ACCESS_LOG_REQUEST);
                out.extend_from_slice(case.0.as_bytes());
            }
            Frame::AccessLog { case, entries } => {
                out.push(tag::ACCESS_LOG);
                out.extend_from_slice(case.0.as_bytes());
                json(out, entries);
            }
            Frame::Colleagues(c) => {
                out.push(tag::COLLEAGUES);
                json(out, c);
            }
            Frame::Enrol(r) => {
                out.push(tag::ENROL);
                json(out, r);
            }
            Frame::Enrolled(r) => {
                out.push(tag::ENROLLED);
                json(out, r);
            }
            Frame::EnrolBorough(r) => {
                out.push(tag::ENROL_BOROUGH);
                json(out, r);
            }
            Frame::BoroughEnrolled(r) => {
                out.push(tag::BOROUGH_ENROLLED);
                json(out, r);
            }
            Frame::Roster(r) => {
                out.push(tag::ROSTER);
                json(out, r);
            }
            Frame::Keep(k) => {
                out.push(tag::KEEP);
                out.push(match k.shelf {
                    Shelf::Registry => 0,
                    Shelf::Audit => 1,
                });
                out.extend_from_slice(&k.first.to_be_bytes());
                out.extend_from_slice(&k.count.to_be_bytes());
                out.push(u8::from(k.last));
                out.extend_from_slice(&k.sealed);
            }
            Frame::Kept(k) => {
                out.push(tag::KEPT);
                json(out, k);
            }
            Frame::KeepFetch => out.push(tag::KEEP_FETCH),
            Frame::Transfer(t) => {
                out.push(tag::TRANSFER);
                json(out, t);
            }
            Frame::Transferred(t) => {
                out.push(tag::TRANSFERRED);
                json(out, t);
            }
            Frame::HistoryWant { case } => {
                out.push(tag::HISTORY_WANT);
                out.extend_from_slice(case.0.as_bytes());
            }
            Frame::History(h) => {
                out.push(tag::HISTORY);
                json(out, h);
            }
            Frame::BlobOffer { case, hash, size } => {
                out.push(tag::BLOB_OFFER);
                out.extend_from_slice(case.0.as_bytes());
                out.extend_from_slice(&hash.0);
                out.extend_from_slice(&size.to_be_bytes());
            }
            Frame::BlobWant { case, hash } => {
                out.push(tag::BLOB_WANT);
                out.extend_from_slice(case.0.as_bytes());
                out.extend_from_slice(&hash.0);
            }
            Frame::BlobChunk(bytes) => {
                out.push(tag::BLOB_CHUNK);
                out.extend_from_slice(bytes);
            }
            Frame::BlobSaved { case, hash } => {
                out.push(tag::BLOB_SAVED);
                out.extend_from_slice(case.0.as_bytes());
                out.extend_from_slice(&hash.0);
            }
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// The encoded frame as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Decode one frame body (without its length prefix).
    pub fn decode_body(body: &[u8]) -> Result<Frame, FrameError> {
        let (&t, p) = body.split_first().ok_or(FrameError::Malformed {
            kind: "empty",
            detail: "no type byte".into(),
        })?;
        fn from_json<T: for<'de> Deserialize<'de>>(
            kind: &'static str,
            p: &[u8],
        ) -> Result<T, FrameError> {
            serde_json::from_slice(p).map_err(|e| FrameError::Malformed {
                kind,
                detail: e.to_string(),
            })
        }
        fn blob_hash<'a>(
            kind: &'static str,
            p: &'a [u8],
        ) -> Result<(BlobHash, &'a [u8]), FrameError> {
            if p.len() < 32 {
                return Err(FrameError::Malformed {
                    kind,
                    detail: "too short for an attachment's address".into(),
                });
            }
            let (h, rest) = p.split_at(32);
            let h: [u8; 32] = h.try_into().expect("32 bytes split off");
            Ok((BlobHash(h), rest))
        }
        fn empty(kind: &'static str, p: &[u8], f: Frame) -> Result<Frame, FrameError> {
            if p.is_empty() {
                Ok(f)
            } else {
                Err(FrameError::Malformed {
                    kind,
                    detail: "unexpected payload".into(),
                })
            }
        }
        match t {
            tag::HELLO => Ok(Frame::Hello(from_json("hello", p)?)),
            tag::WELCOME => Ok(Frame::Welcome(from_json("welcome", p)?)),
            tag::SYNC => {
                let (case, msg) = case_id("sync", p)?;
                if msg.is_empty() {
                    return Err(FrameError::Malformed {
                        kind: "sync",
                        detail: "no message".into(),
                    });
                }
                Ok(Frame::Sync {
                    case,
                    message: msg.to_vec(),
                })
            }
            tag::SAVED => {
                let (case, heads) = case_heads("saved", p)?;
                Ok(Frame::Saved { case, heads })
            }
            tag::HUB_SAVED => {
                let (case, heads) = case_heads("hub saved", p)?;
                Ok(Frame::HubSaved { case, heads })
            }
            tag::CASE_REFUSED => {
                let (case, rest) = case_id("case refused", p)?;
                Ok(Frame::CaseRefused {
                    case,
                    refusal: from_json("case refused", rest)?,
                })
            }
            tag::READS => Ok(Frame::Reads(from_json("reads", p)?)),
            tag::READS_SAVED => {
                let b: [u8; 8] = p.try_into().map_err(|_| FrameError::Malformed {
                    kind: "reads saved",
                    detail: "expected 8 bytes".into(),
                })?;
                Ok(Frame::ReadsSaved {
                    through: u64::from_be_bytes(b),
                })
            }
            tag::DONE => empty("done", p, Frame::Done),
            tag::BYE => empty("bye", p, Frame::Bye),
            tag::WIPE => empty("wipe", p, Frame::Wipe),
            tag::WIPED => Ok(Frame::Wiped(from_json("wiped", p)?)),
            tag::ERROR => Ok(Frame::Error(from_json("error", p)?)),
            tag::ACCESS_LOG_REQUEST => {
                let (case, rest) = case_id("access log request", p)?;
                empty("access log request", rest, Frame::AccessLogRequest { case })
            }
            tag::ACCESS_LOG => {
                let (case, rest) = case_id("access log", p)?;
                Ok(Frame::AccessLog {
                    case,
                    entries: from_json("access log", rest)?,
                })
            }
            tag::COLLEAGUES => Ok(Frame::Colleagues(from_json("colleagues", p)?)),
            tag::ENROL => Ok(Frame::Enrol(from_json("enrol", p)?)),
            tag::ENROLLED => Ok(Frame::Enrolled(from_json("enrolled", p)?)),
            tag::ENROL_BOROUGH => Ok(Frame::EnrolBorough(from_json("enrol borough", p)?)),
            tag::BOROUGH_ENROLLED => Ok(Frame::BoroughEnrolled(from_json("borough enrolled", p)?)),
            tag::ROSTER => Ok(Frame::Roster(from_json("roster", p)?)),
            tag::KEEP => keep_part(p).map(Frame::Keep),
            tag::KEPT => Ok(Frame::Kept(from_json("kept", p)?)),
            tag::KEEP_FETCH => empty("keep fetch", p, Frame::KeepFetch),
            tag::TRANSFER => Ok(Frame::Transfer(from_json("transfer", p)?)),
            tag::TRANSFERRED => Ok(Frame::Transferred(from_json("transferred", p)?)),
            tag::HISTORY_WANT => {
                let (case, rest) = case_id("history want", p)?;
                empty("history want", rest, Frame::HistoryWant { case })
            }
            tag::HISTORY => Ok(Frame::History(from_json("history", p)?)),
            tag::BLOB_OFFER => {
                let (case, rest) = case_id("blob offer", p)?;
                let (hash, rest) = blob_hash("blob offer", rest)?;
                let size: [u8; 8] = rest.try_into().map_err(|_| FrameError::Malformed {
                    kind: "blob offer",
                    detail: "expected an 8-byte size".into(),
                })?;
                Ok(Frame::BlobOffer {
                    case,
                    hash,
                    size: u64::from_be_bytes(size),
                })
            }
            tag::BLOB_WANT => {
                let (case, rest) = case_id("blob want", p)?;
                let (hash, rest) = blob_hash("blob want", rest)?;
                empty("blob want", rest, Frame::BlobWant { case, hash })
            }
            tag::BLOB_CHUNK => {
                if p.is_empty() || p.len() > BLOB_CHUNK_BYTES {
                    return Err(FrameError::Malformed {
                        kind: "blob chunk",
                        detail: format!("{} bytes (1 to {BLOB_CHUNK_BYTES})", p.len()),
                    });
                }
                Ok(Frame::BlobChunk(p.to_vec()))
            }
            tag::BLOB_SAVED => {
                let (case, rest) = case_id("blob saved", p)?;
                let (hash, rest) = blob_hash("blob saved", rest)?;
                empty("blob saved", rest, Frame::BlobSaved { case, hash })
            }
            other => Err(FrameError::UnknownType(other)),
        }
    }

    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Welcome(_) => "welcome",
            Frame::Sync { .. } => "sync",
            Frame::Saved { .. } => "saved",
            Frame::HubSaved { .. } => "hub saved",
            Frame::CaseRefused { .. } => "case refused",
            Frame::Reads(_) => "reads",
            Frame::ReadsSaved { .. } => "reads saved",
            Frame::Done => "done",
            Frame::Bye => "bye",
            Frame::Wipe => "wipe",
            Frame::Wiped(_) => "wiped",
            Frame::Error(_) => "error",
            Frame::AccessLogRequest { .. } => "access log request",
            Frame::AccessLog { .. } => "access log",
            Frame::Colleagues(_) => "colleagues",
            Frame::Enrol(_) => "enrol",
            Frame::Enrolled(_) => "enrolled",
            Frame::EnrolBorough(_) => "enrol borough",
            Frame::BoroughEnrolled(_) => "borough enrolled",
            Frame::Roster(_) => "roster",
            Frame::Keep(_) => "keep",
            Frame::Kept(_) => "kept",
            Frame::KeepFetch => "keep fetch",
            Frame::Transfer(_) => "transfer",
            Frame::Transferred(_) => "transferred",
            Frame::HistoryWant { .. } => "history want",
            Frame::History(_) => "history",
            Frame::BlobOffer { .. } => "blob offer",
            Frame::BlobWant { .. } => "blob want",
            Frame::BlobChunk(_) => "blob chunk",
            Frame::BlobSaved { .. } => "blob saved",
        }
    }
}

/// A `Keep` payload: the shelf (1 byte), `first` and `count` (8 bytes each), `last` (1 byte),
/// then the sealed bytes.
fn keep_part(p: &[u8]) -> Result<KeepPart, FrameError> {
    let bad = |detail: &str| FrameError::Malformed {
        kind: "keep",
        detail: detail.to_string(),
    };
    if p.len() < 19 {
        return Err(bad("shorter than its 18-byte header and one sealed byte"));
    }
    let shelf = match p[0] {
        0 => Shelf::Registry,
        1 => Shelf::Audit,
        other => return Err(bad(&format!("unknown shelf {other}"))),
    };
    let number = |at: usize| u64::from_be_bytes(p[at..at + 8].try_into().expect("8 bytes"));
    let last = match p[17] {
        0 => false,
        1 => true,
        _ => return Err(bad("the last flag is neither 0 nor 1")),
    };
    Ok(KeepPart {
        shelf,
        first: number(1),
        count: number(9),
        last,
        sealed: p[18..].to_vec(),
    })
}

/// Splits a byte stream into frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    max: usize,
}

impl FrameDecoder {
    /// A decoder that refuses frames over `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max,
        }
    }

    /// Refuse frames over `max` bytes from now on (a stream whose first frame said what it
    /// carries).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Add received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or an error that should close
    /// the connection.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let avail = &self.buf[self.start..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len > self.max {
            return Err(FrameError::Oversized { len, max: self.max });
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let frame = Frame::decode_body(&avail[4..4 + len]);
        self.start += 4 + len;
        if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        frame.map(Some)
    }

    /// Bytes buffered but not yet decoded.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Frame> {
        let case = CaseId::random();
        vec![
            Frame::Hello(Hello {
                version: 1,
                software: "t".into(),
                live: true,
                features: Vec::new(),
            }),
            Frame::Welcome(Welcome {
                version: 1,
                device: DeviceId::random(),
                practitioner: PractitionerId::random(),
                teams: vec![TeamId::random()],
                cases: vec![CaseGrant {
                    case,
                    team: TeamId::random(),
                }],
                mode: SessionMode::Revoking,
                audit_head: None,
                features: Vec::new(),
                colleagues: Some(vec![Colleague {
                    practitioner: PractitionerId::random(),
                    name: "Kit Byrne".into(),
                    role: crate::model::Stored::read(Some("peer_support".into())),
                    teams: vec![TeamId::random()],
                }]),
                servers: vec!["node-a.north.nhs.uk:4433".into(), "10.1.2.3:4433".into()],
            }),
            Frame::BlobOffer {
                case,
                hash: BlobHash::of(b"letter"),
                size: 6,
            },
            Frame::BlobWant {
                case,
                hash: BlobHash::of(b"letter"),
            },
            Frame::BlobChunk(vec![7; BLOB_CHUNK_BYTES]),
            Frame::BlobSaved {
                case,
                hash: BlobHash::of(b"letter"),
            },
            Frame::Colleagues(vec![Colleague {
                practitioner: PractitionerId::random(),
                name: "Dr Ade Bello".into(),
                role: crate::model::Stored::read(Some("a role from later".into())),
                teams: vec![],
            }]),
            Frame::Sync {
                case,
                message: vec![0x42, 1, 2, 3],
            },
            Frame::Saved {
                case,
                heads: vec![ChangeHash([7; 32]), ChangeHash([9; 32])],
            },
            Frame::CaseRefused {
                case,
                refusal: Refusal {
                    code: ErrorCode::NotAvailable,
                    message: "no".into(),
                },
            },
            Frame::Reads(vec![OfflineRead {
                case,
                at: "2026-01-01T00:00:00Z".into(),
                what: "show".into(),
                seq: 4,
            }]),
            Frame::ReadsSaved { through: 99 },
            Frame::Done,
            Frame::Bye,
            Frame::Wipe,
            Frame::Wiped(Wiped { kept: vec![case] }),
            Frame::Error(Refusal {
                code: ErrorCode::Revoked,
                message: "gone".into(),
            }),
            Frame::AccessLogRequest { case },
            Frame::AccessLog {
                case,
                entries: vec![crate::export::Access {
                    at: "2026-01-01T00:00:00Z".into(),
                    who: "Sam".into(),
                    device: None,
                    what: "read".into(),
                    kind: Some(crate::export::access::AccessKind::OnDevice {
                        purpose: "case page".into(),
                        not_yet_sent: false,
                    }),
                }],
            },
            Frame::Enrol(EnrolRequest {
                version: 1,
                token: "00ff".into(),
                device: DeviceId::random(),
                device_name: "Anna's laptop".into(),
                csr: "3082".into(),
            }),
            Frame::Enrolled(Enrolled {
                device: DeviceId::random(),
                practitioner: PractitionerId::random(),
                practitioner_name: "Anna Okafor".into(),
                teams: vec![TeamInfo {
                    id: TeamId::random(),
                    name: "Camden North".into(),
                }],
                certificate: "30".into(),
                ca: "30".into(),
                servers: Vec::new(),
            }),
            Frame::EnrolBorough(BoroughEnrolRequest {
                version: 1,
                token: "00ff".into(),
                name: "Camden".into(),
                csr: "3082".into(),
            }),
            Frame::BoroughEnrolled(BoroughEnrolled {
                borough: crate::BoroughId::random(),
                name: "Camden".into(),
                certificate: "30".into(),
                ca: "30".into(),
            }),
            Frame::Roster(Roster {
                teams: vec![TeamInfo {
                    id: TeamId::random(),
                    name: "Camden North".into(),
                }],
                devices: vec![RosterDevice {
                    device: DeviceId::random(),
                    practitioner: PractitionerId::random(),
                    practitioner_name: "Anna Okafor".into(),
                }],
            }),
            Frame::Keep(KeepPart {
                shelf: Shelf::Audit,
                first: 1_000,
                count: 250,
                last: true,
                sealed: vec![7; 40],
            }),
            Frame::Kept(Kept {
                registry: Some(3),
                audit_through: 1_250,
            }),
            Frame::KeepFetch,
            Frame::Transfer(TransferCase {
                case: CaseId::random(),
                borough: "Brent".into(),
                team: "Brent West".into(),
                access: vec![crate::export::Access {
                    at: "2026-12-07T10:00:00Z".into(),
                    who: "Anna Okafor".into(),
                    device: None,
                    what: "read".into(),
                    kind: None,
                }],
            }),
            Frame::Transferred(Transferred {
                case: CaseId::random(),
                borough: crate::BoroughId::random(),
                borough_name: "Brent".into(),
                team: TeamInfo {
                    id: TeamId::random(),
                    name: "Brent West".into(),
                },
            }),
            Frame::HistoryWant {
                case: CaseId::random(),
            },
            Frame::History(CaseHistory {
                case: CaseId::random(),
                access: Vec::new(),
            }),
        ]
    }

    #[test]
    fn every_frame_has_its_own_tag_and_kind() {
        let frames = samples();
        let tags: std::collections::BTreeSet<u8> = frames.iter().map(|f| f.to_bytes()[4]).collect();
        let kinds: std::collections::BTreeSet<&str> = frames.iter().map(Frame::kind).collect();
        assert_eq!(tags.len(), frames.len(), "two samples share a tag");
        assert_eq!(kinds.len(), frames.len(), "two samples share a kind");
    }

    #[test]
    fn hub_frames_have_their_tags_and_names() {
        let frames = samples();
        let find = |kind: &str| {
            frames
                .iter()
                .find(|f| f.kind() == kind)
                .unwrap_or_else(|| panic!("no {kind} sample"))
                .to_bytes()[4]
        };
        assert_eq!(find("enrol borough"), 0x16);
        assert_eq!(find("borough enrolled"), 0x17);
        assert_eq!(find("roster"), 0x18);
        assert_eq!(find("keep"), 0x1a);
        assert_eq!(find("kept"), 0x1b);
        assert_eq!(find("keep fetch"), 0x1c);
        assert_eq!(find("transfer"), 0x1d);
        assert_eq!(find("transferred"), 0x1e);
        assert_eq!(find("history want"), 0x1f);
        assert_eq!(find("history"), 0x20);
    }

    #[test]
    fn a_keep_part_that_is_cut_short_or_names_no_shelf_is_malformed() {
        let part = Frame::Keep(KeepPart {
            shelf: Shelf::Registry,
            first: 2,
            count: 0,
            last: false,
            sealed: vec![1],
        })
        .to_bytes();
        let body = &part[4..];
        assert!(Frame::decode_body(body).is_ok());
        assert!(Frame::decode_body(&body[..19]).is_err(), "no sealed byte");
        let mut shelf = body.to_vec();
        shelf[1] = 9;
        assert!(Frame::decode_body(&shelf).is_err(), "unknown shelf");
        let mut last = body.to_vec();
        last[18] = 2;
        assert!(Frame::decode_body(&last).is_err(), "a bad last flag");
    }

    #[test]
    fn frames_round_trip_even_split_byte_by_byte() {
        let frames = samples();
        let mut bytes = Vec::new();
        for f in &frames {
            f.encode(&mut bytes);
        }
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut out = Vec::new();
        for b in bytes {
            dec.push(&[b]);
            while let Some(f) = dec.next_frame().unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, frames);
        assert_eq!(dec.pending(), 0);
    }

    #[test]
    fn oversized_frames_are_refused_before_buffering() {
        let mut dec = FrameDecoder::new(1024);
        dec.push(&(10_000_000u32).to_be_bytes());
        assert_eq!(
            dec.next_frame(),
            Err(FrameError::Oversized {
                len: 10_000_000,
                max: 1024
            })
        );
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        for body in [
            vec![],
            vec![0xff],
            vec![tag::HELLO, b'{'],
            vec![tag::SYNC, 1, 2],
            vec![
                tag::SAVED,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                9,
            ],
            vec![tag::DONE, 1],
            vec![tag::READS_SAVED, 1],
            vec![tag::ENROL_BOROUGH, b'{'],
            vec![tag::BOROUGH_ENROLLED],
            vec![tag::ROSTER, b'[', b']'],
        ] {
            assert!(Frame::decode_body(&body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn error_codes_round_trip() {
        for n in 0..20u16 {
            if let Some(c) = ErrorCode::from_u16(n) {
                assert_eq!(c as u16, n);
            }
        }
        assert_eq!(ErrorCode::from_u16(999), None);
    }

    #[test]
    fn attachment_frames_of_the_wrong_length_are_refused() {
        let case = CaseId::random();
        let mut body = vec![tag::BLOB_OFFER];
        body.extend_from_slice(case.0.as_bytes());
        body.extend_from_slice(&[1; 32]);
        body.extend_from_slice(&[0; 7]);
        assert!(Frame::decode_body(&body).is_err(), "a 7-byte size");
        let mut want = vec![tag::BLOB_WANT];
        want.extend_from_slice(case.0.as_bytes());
        want.extend_from_slice(&[1; 31]);
        assert!(Frame::decode_body(&want).is_err(), "a 31-byte address");
        assert!(
            Frame::decode_body(&[tag::BLOB_CHUNK]).is_err(),
            "an empty chunk"
        );
        let mut big = vec![tag::BLOB_CHUNK];
        big.extend(std::iter::repeat_n(0u8, BLOB_CHUNK_BYTES + 1));
        assert!(Frame::decode_body(&big).is_err(), "a chunk over the bound");
    }
}
