//! The session's protocol: what the server answers to each frame a device sends and to each
//! change another session announces, with the access rules inside. No sockets, no runtime: the
//! connection driver ([`super::driver`]) feeds it frames and sends the [`Batch`]es it queues; the
//! simulation and the unit tests drive it directly.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use automerge::AutoCommit;
use polyphony_core::export::access::AccessKind;
use polyphony_core::model::{schema, team_notes, Author};
use polyphony_core::sync::{
    prepare, ApplyError, Colleague, ErrorCode, Frame, PeerSync, Prepared, Reply, SessionMode, Wiped,
};
use polyphony_core::{BoroughId, CaseId, TeamId};
use tracing::{debug, info, warn};

use super::policy::{Access, ServerPolicy, Writers};
use super::{
    not_audited, refusal, relationship, to_the_second, written_by, Shared, MAX_READS_PER_FRAME,
    NOT_SENT_CASE, READ_CLOCK_SKEW,
};
use crate::audit::{Actor, AuditAction, AuditError, AuditEvent};
use crate::registry::{Borough, Device, DeviceStatus, Practitioner, RegistryError};
use crate::storage::{CaseChanged, ServerCase};

/// Frames to send to the device once the group commit has made `ticket` durable (0: at once).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The group-commit ticket the frames wait for.
    pub ticket: u64,
    /// The frames, in order.
    pub frames: Vec<Frame>,
}

/// One device's session: handles each frame it sends and each change other sessions announce,
/// and queues its replies, each with the group-commit ticket it must wait for
/// ([`Session::poll_reply`]). [`super::serve`] drives it over QUIC; the deterministic simulation
/// test and the unit tests drive it directly, with no sockets and no runtime.
pub struct Session {
    shared: Arc<Shared>,
    conn_id: u64,
    device: Device,
    practitioner: Practitioner,
    mode: SessionMode,
    actor: Actor,
    states: HashMap<CaseId, PeerSync>,
    provisional: HashMap<CaseId, AutoCommit>,
    told_moved: HashSet<CaseId>,
    read_audited: HashSet<CaseId>,
    /// Messages received per case since its document last changed (a bound against sync loops).
    exchanges: HashMap<CaseId, (usize, Vec<automerge::ChangeHash>)>,
    /// This device and its practitioner as the registry knows them (see [`ServerPolicy::me`]).
    author: Author,
    /// The registry's access epoch this session last read its device and practitioner at; none
    /// until its first [`Session::check_access`]. The device and practitioner it is given were
    /// read at admission, before the handshake, at an epoch it does not know: a revocation or a
    /// team removal that landed in between must not pass for one already seen, so the first check
    /// reads them again.
    epoch: Option<u64>,
    /// Why the session ended because its access changed: the connection is closed with this.
    ended: Option<(ErrorCode, String)>,
    /// The device answers `Wipe` with `Wiped` (it announced
    /// [`FEATURE_CONFIRMS_WIPE`](polyphony_core::sync::FEATURE_CONFIRMS_WIPE)).
    confirms_wipe: bool,
    /// `Wipe` was sent; only `Wiped` may follow.
    wipe_sent: bool,
    /// The team list the device last received, if it takes new ones in a live session (it
    /// announced [`FEATURE_COLLEAGUES`](polyphony_core::sync::FEATURE_COLLEAGUES)).
    colleagues_sent: Option<Vec<Colleague>>,
    /// The borough whose link this is, on the trust hub (see [`Session::for_borough`]); none for
    /// a device.
    relay: Option<BoroughId>,
    /// On the trust hub, the cases a borough's link was granted at its welcome, and those it
    /// created since, less those that left its teams: when, at a change of access, its teams
    /// hold others (a case transferred to it, or back to it), the session ends so the link
    /// reconnects and is granted them.
    granted: Option<HashSet<CaseId>>,
    /// The device announced
    /// [`FEATURE_HUB_RECEIPTS`](polyphony_core::sync::FEATURE_HUB_RECEIPTS): it is told which
    /// heads of its cases the trust hub holds ([`Session::hub_saved`]).
    hub_receipts: bool,
    replies: VecDeque<Batch>,
}

impl Session {
    /// A session for a welcomed device (`mode` as [`super::welcome`] decided). Its replies wait in the
    /// session until taken with [`Session::poll_reply`].
    ///
    /// `device` and `practitioner` are trusted only until the session's first
    /// [`Session::check_access`] (at its first frame or push, or when the driver calls it): that
    /// check reads both from the registry again, so a change of access made between the
    /// caller's reading them and now (a revocation during the handshake) takes effect.
    pub fn new(
        shared: Arc<Shared>,
        conn_id: u64,
        device: Device,
        practitioner: Practitioner,
        mode: SessionMode,
    ) -> Session {
        let actor = Actor::Device {
            device: device.id,
            practitioner: practitioner.id,
        };
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
            epoch: None,
            ended: None,
            confirms_wipe: false,
            wipe_sent: false,
            colleagues_sent: None,
            relay: None,
            granted: None,
            hub_receipts: false,
            replies: VecDeque::new(),
        }
    }

    /// A session for a borough server's link on the trust hub, once [`super::welcome_borough`]
    /// welcomed it. The borough stands where a device and its practitioner stand in a device's
    /// session: its id keys the cases it holds (as a device's id does), and `teams`, its teams
    /// on the hub, are the teams whose cases it may sync (as a practitioner's are). What differs:
    /// the changes it sends may be written by any device on its roster, each as that device
    /// ([`Writers::Roster`]); its access is re-read from its borough record (revoked: the link
    /// ends at once, never upload-then-wipe); it sends no offline reads and gets no team list.
    pub fn for_borough(
        shared: Arc<Shared>,
        conn_id: u64,
        borough: &Borough,
        teams: Vec<TeamId>,
    ) -> Session {
        let (device, practitioner) = super::borough_as_peer(borough, teams);
        let mut session = Session::new(shared, conn_id, device, practitioner, SessionMode::Normal);
        session.actor = Actor::Borough {
            borough: borough.id,
        };
        session.relay = Some(borough.id);
        session
    }

    /// The next batch of frames to send, in order: send each only once
    /// [`GroupCommit::durable`](crate::storage::GroupCommit::durable) has returned for its
    /// ticket (0 needs no wait). None when nothing is waiting.
    pub fn poll_reply(&mut self) -> Option<Batch> {
        self.replies.pop_front()
    }

    /// Queue a batch of frames for the device, to leave once `ticket` is durable.
    fn reply(&mut self, (ticket, frames): (u64, Vec<Frame>)) {
        self.replies.push_back(Batch { ticket, frames });
    }

    /// The team list the welcome sent, for a device that announced
    /// [`FEATURE_COLLEAGUES`](polyphony_core::sync::FEATURE_COLLEAGUES): when an administrator
    /// changes it (a role, a member joining or leaving a team), the session sends the new one.
    pub fn sending_colleagues(mut self, sent: Option<Vec<Colleague>>) -> Session {
        self.colleagues_sent = sent;
        self
    }

    /// Whether this is a borough's link on the trust hub (it relays its devices' changes).
    pub fn relays(&self) -> bool {
        self.relay.is_some()
    }

    /// The cases a borough's link's welcome granted (see `granted`).
    pub fn granting(mut self, cases: impl IntoIterator<Item = CaseId>) -> Session {
        self.granted = Some(cases.into_iter().collect());
        self
    }

    /// Whether the device announced
    /// [`FEATURE_HUB_RECEIPTS`](polyphony_core::sync::FEATURE_HUB_RECEIPTS) in its hello.
    pub fn sending_hub_receipts(mut self, yes: bool) -> Session {
        self.hub_receipts = yes;
        self
    }

    /// What this borough's trust hub holds of `case`, for a device that takes hub receipts and
    /// syncs the case in full: the hub's heads as the link last heard them (after the hub's
    /// fsync), or nothing when the hub never acknowledged the case (or there is no hub).
    fn hub_receipt(&self, case: CaseId) -> Option<Frame> {
        if !self.hub_receipts || self.relay.is_some() {
            return None;
        }
        let heads = crate::hub_link::acked_heads(&*self.shared.storage.store, &case)
            .inspect_err(|e| warn!(%case, error = %e, "could not read what the trust hub holds"))
            .ok()
            .flatten()?;
        Some(Frame::HubSaved { case, heads })
    }

    /// The borough's link heard the trust hub acknowledge more of `case`: a device syncing it in
    /// full (and that takes hub receipts) is told at once.
    pub fn hub_saved(&mut self, case: CaseId) {
        if !self.states.contains_key(&case) || !self.check_access() {
            return;
        }
        if !matches!(self.access(&case), Access::Full(_)) {
            return;
        }
        if let Some(frame) = self.hub_receipt(case) {
            self.reply((0, vec![frame]));
        }
    }

    /// Whether the device announced
    /// [`FEATURE_CONFIRMS_WIPE`](polyphony_core::sync::FEATURE_CONFIRMS_WIPE) in its hello: if it did, a device
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
    /// look (always at the first: see [`Session::new`]), or if the device is being revoked (whose
    /// time limit runs without any change).
    /// Returns false once the session must end: the device was revoked ("revoke now" reaches a
    /// connected device at once), or its revocation was ordered (it reconnects to upload, then
    /// wipe). A practitioner who left a team keeps the session for their other teams.
    pub fn check_access(&mut self) -> bool {
        if self.ended.is_some() {
            return false;
        }
        let epoch = self.shared.registry.access_epoch();
        if self.epoch == Some(epoch) && self.mode == SessionMode::Normal {
            return true;
        }
        self.epoch = Some(epoch);
        if let Some(borough) = self.relay {
            return self.check_borough_access(borough);
        }
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
        self.send_colleagues_if_changed();
        true
    }

    /// [`Session::check_access`] for a borough's link: it ends once the borough is revoked, or its
    /// record cannot be read; its teams are read again (a team it announced since).
    fn check_borough_access(&mut self, borough: BoroughId) -> bool {
        let record = self.shared.registry.borough(&borough);
        let teams = self.shared.registry.borough_teams(&borough);
        let unreadable = |e: RegistryError| {
            Some((
                ErrorCode::Internal,
                format!("the trust hub could not read its registry ({e}): sync again later"),
            ))
        };
        let end = match (record, teams) {
            (Ok(Some(b)), _) if b.status == DeviceStatus::Revoked => Some((
                ErrorCode::Revoked,
                "this borough server was revoked by the trust hub's administrator, for good: its cases stay safe on the hub; a replacement server joins with a new code for this borough, never after a revocation".to_string(),
            )),
            // Joined again with a new certificate: a link made with the old one (a stolen key,
            // a server replaced) ends now.
            (Ok(Some(b)), _)
                if b.cert_fingerprint.as_deref() != Some(self.device.cert_fingerprint.as_str()) =>
            {
                Some((
                    ErrorCode::Unauthorised,
                    "this borough's certificate was replaced (it joined the trust hub again): this link ends; the link with the new certificate goes on".to_string(),
                ))
            }
            (Ok(Some(_)), Ok(teams)) => {
                // Its teams' cases now: one it was not granted (transferred to it, or back to
                // it) ends the session, to be granted at the next; one that left (transferred
                // away) is forgotten, so that its coming back is seen.
                let more = match &mut self.granted {
                    Some(granted) => self.shared.registry.cases_of_teams(&teams).map(|now| {
                        let now: HashSet<CaseId> = now.into_iter().map(|(c, _)| c).collect();
                        let more = !now.is_subset(granted);
                        *granted = now;
                        more
                    }),
                    None => Ok(false),
                };
                self.practitioner.teams = teams;
                match more {
                    Ok(false) => None,
                    Ok(true) => Some((
                        ErrorCode::Done,
                        "a case was transferred to this borough: the link reconnects to be granted it".to_string(),
                    )),
                    Err(e) => unreadable(e),
                }
            }
            (Ok(None), _) => Some((
                ErrorCode::Unauthorised,
                "this borough server is no longer known to the trust hub".to_string(),
            )),
            (Err(e), _) | (Ok(Some(_)), Err(e)) => unreadable(e),
        };
        let Some((code, message)) = end else {
            return true;
        };
        self.shared.audit(
            self.actor.clone(),
            AuditAction::Refused,
            None,
            format!("borough link closed: its access changed ({message})"),
        );
        self.ended = Some((code, message));
        false
    }

    /// Who read a case, for its audit record: a device (and whether its practitioner is in the
    /// person's care team), or a borough's link.
    fn reader(&self, doc: &AutoCommit) -> String {
        match self.relay {
            Some(_) => format!("the {} borough server", self.practitioner.name),
            None => format!("device{}", relationship(doc, &self.practitioner)),
        }
    }

    /// A device that takes team lists in a live session receives the new one when it changed
    /// (it leaves once everything before it has, with no write of its own to wait for).
    fn send_colleagues_if_changed(&mut self) {
        if self.mode != SessionMode::Normal {
            return;
        }
        let Some(sent) = &self.colleagues_sent else {
            return;
        };
        match self.shared.registry.colleagues_of(&self.practitioner) {
            Ok(list) if &list != sent => {
                self.colleagues_sent = Some(list.clone());
                self.reply((0, vec![Frame::Colleagues(list)]));
            }
            Ok(_) => {}
            // The next change or session sends it; the list is a convenience, not the record.
            Err(e) => warn!(error = %e, "could not read the team list to send"),
        }
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
                self.reply((ticket, frames));
                true
            }
            Frame::Reads(reads) if self.relay.is_none() => self.offline_reads(reads),
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
                    self.reply((0, vec![refused]));
                    return true;
                }
                // The request is audited (in `access_log`) before its answer leaves.
                let (ticket, frame) = self.access_log(case);
                self.reply((ticket, vec![frame]));
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
                self.reply((
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
                self.reply((
                    self.shared.storage.group.wrote_in(generation),
                    vec![Frame::Wipe, Frame::Bye],
                ));
                false
            }
            Frame::Done => {
                self.reply((0, vec![Frame::Bye]));
                false
            }
            other => {
                self.reply((
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
            self.reply((
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
        self.reply((
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
            self.reply((0, vec![Frame::Error(refusal(ErrorCode::TooLarge, msg))]));
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
        self.reply((
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
        self.reply((
            0,
            vec![Frame::Error(refusal(ErrorCode::StorageFailed, msg))],
        ));
        false
    }

    /// May this device move an attachment of `case` (upload: send its bytes; else fetch them)?
    /// The same rules as the case's record: fetching needs the case in full, uploading is taken
    /// also where the record takes uploads only (a case that moved away, a device being revoked).
    /// Reads the registry again first, so a revocation refuses the next attachment at once.
    pub fn attachment_access(
        &mut self,
        case: &CaseId,
        upload: bool,
    ) -> Result<(), polyphony_core::sync::Refusal> {
        if !self.check_access() {
            let (code, message) = self
                .ended
                .clone()
                .unwrap_or((ErrorCode::Unauthorised, "access ended".into()));
            return Err(refusal(code, message));
        }
        match self.access(case) {
            Access::Full(_) => Ok(()),
            Access::UploadOnly(_) if upload => Ok(()),
            Access::New => Err(refusal(
                ErrorCode::NotAvailable,
                "the server does not hold this case yet: sync its record first",
            )),
            _ => Err(refusal(
                ErrorCode::NotAvailable,
                "this case is not available to this device",
            )),
        }
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
    /// A `Saved` is followed by what the trust hub holds of the case, for a device that takes
    /// hub receipts.
    fn sync(&mut self, case: CaseId, message: &[u8]) -> (u64, Vec<Frame>) {
        let (ticket, mut frames) = self.sync_inner(case, message);
        if frames.iter().any(|f| matches!(f, Frame::Saved { .. })) {
            frames.extend(self.hub_receipt(case));
        }
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
        match access {
            Access::NotAvailable => {
                return self.refuse_case(
                    case,
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
                return self.refuse_case(
                    case,
                    ErrorCode::Internal,
                    format!("the server could not read its registry ({e}); your changes are still on your device: sync again later"),
                )
            }
        };
        let team = match access {
            Access::Full(t) | Access::UploadOnly(t) => Some(t),
            _ => None,
        };
        let my_teams = self.teams_for_new_cases();
        let me = self.author.clone();
        let registry = self.shared.registry.clone();
        let writers = match self.relay {
            Some(borough) => Writers::Roster {
                borough,
                registry: &registry,
            },
            None => Writers::Own(&me),
        };
        let policy = ServerPolicy {
            case,
            team,
            my_teams: &my_teams,
            writers,
            told_moved,
        };
        let stored = match team {
            Some(_) => match self.shared.storage.case(&case) {
                Ok(c) => c,
                Err(e) => {
                    return self.refuse_case(
                        case,
                        ErrorCode::Internal,
                        format!("the server could not read this case: {e}"),
                    )
                }
            },
            None => None,
        };
        let upload_only = matches!(access, Access::UploadOnly(_));
        match stored {
            Some(stored) => self.sync_stored_case(case, &stored, message, &policy, upload_only),
            None => self.sync_new_case(case, message, &policy),
        }
    }

    /// The teams a new case may be created for: the practitioner's, and those they left within
    /// the upload window (a case opened offline before leaving, or before a removal with every
    /// device revoked, is uploaded, not stranded on the laptop).
    fn teams_for_new_cases(&self) -> Vec<TeamId> {
        let mut teams = self.practitioner.teams.clone();
        for t in self.practitioner.left.keys().copied() {
            if !teams.contains(&t) && self.left_within_window(t) {
                teams.push(t);
            }
        }
        teams
    }

    /// A case the server has not stored: synced into a provisional document for this session
    /// until its first change arrives, then registered for its team, stored, and announced.
    fn sync_new_case(
        &mut self,
        case: CaseId,
        message: &[u8],
        policy: &ServerPolicy<'_>,
    ) -> (u64, Vec<Frame>) {
        let most = self.shared.max_new_cases;
        if !self.provisional.contains_key(&case) && self.provisional.len() >= most {
            return self.refuse_case(
                case,
                ErrorCode::Busy,
                format!(
                    "more than {most} new cases are on their way in this session: the rest sync next time"
                ),
            );
        }
        let mut peer = self.states.entry(case).or_default().clone();
        let doc = self.provisional.entry(case).or_default();
        let prepared = match prepare(doc, &peer, message, policy) {
            Ok(p) => p,
            Err(e) => return self.refuse_apply(case, e),
        };
        if let Some(msg) = self.too_much_waiting(case, &prepared) {
            return self.refuse_case(case, ErrorCode::Busy, msg);
        }
        if prepared.new_changes == 0 {
            let doc = self.provisional.entry(case).or_default();
            prepared.commit(doc, &mut peer);
            let frames = Reply::full(doc, &mut peer).into_frames(case);
            self.states.insert(case, peer);
            return (0, frames);
        }
        let Some(doc_team) = prepared.doc.as_ref().and_then(schema::read_team_id) else {
            return self.refuse_case(
                case,
                ErrorCode::InvalidChange,
                "the case has no team".into(),
            );
        };
        match self.shared.registry.register_case(case, doc_team) {
            Ok(()) => {
                // A borough's link made it: granted to this session as if in its welcome.
                if let Some(granted) = &mut self.granted {
                    granted.insert(case);
                }
            }
            Err(e @ RegistryError::CaseInAnotherTeam { .. }) => {
                debug!(error = %e, "case id taken");
                return self.refuse_case(
                    case,
                    ErrorCode::NotAvailable,
                    format!("case {case} is not available to this device"),
                );
            }
            // A full or failing disk is not "not available": say what happened.
            Err(e) => {
                return self.refuse_case(
                    case,
                    ErrorCode::StorageFailed,
                    format!(
                        "the server could not save this case ({e}); it is still on your device"
                    ),
                )
            }
        }
        let actors = written_by(&prepared.actors);
        let mut sc = ServerCase::new(AutoCommit::new(), 0, 0);
        let ticket = match self
            .shared
            .storage
            .apply(&case, &mut sc, prepared, &mut peer)
        {
            Ok(t) => t,
            Err(e) => {
                return self.refuse_case(
                    case,
                    ErrorCode::StorageFailed,
                    format!(
                        "the server could not save this case ({e}); it is still on your device"
                    ),
                )
            }
        };
        self.provisional.remove(&case);
        let stored = self
            .shared
            .storage
            .insert(case, Arc::new(std::sync::Mutex::new(sc)));
        let ticket = ticket.max(self.written(case, format!("case created, written by {actors}")));
        let frames = {
            let mut c = stored.lock().expect("case lock");
            Reply::full(&mut c.doc, &mut peer).into_frames(case)
        };
        self.states.insert(case, peer);
        self.shared.storage.announce(CaseChanged {
            case,
            origin: self.conn_id,
        });
        (ticket, frames)
    }

    /// A case the server holds: the message applied under the case's lock, stored, audited
    /// (writes best-effort, reads before the data leaves), and answered.
    fn sync_stored_case(
        &mut self,
        case: CaseId,
        stored: &crate::storage::SharedCase,
        message: &[u8],
        policy: &ServerPolicy<'_>,
        upload_only: bool,
    ) -> (u64, Vec<Frame>) {
        let mut peer = self.states.entry(case).or_default().clone();
        let mut c = stored.lock().expect("case lock");
        // The document's own team field must not change in a device's hands. (After an
        // administrator moves a case, the registry, not this field, decides who may sync it.)
        let policy = ServerPolicy {
            team: c.team(),
            ..*policy
        };
        let prepared = match prepare(&mut c.doc, &peer, message, &policy) {
            Ok(p) => p,
            Err(e) => {
                drop(c);
                return self.refuse_apply(case, e);
            }
        };
        if let Some(msg) = self.too_much_waiting(case, &prepared) {
            // The refusal is audited: not under the case's lock.
            drop(c);
            return self.refuse_case(case, ErrorCode::Busy, msg);
        }
        let new_changes = prepared.new_changes;
        let actors = written_by(&prepared.actors);
        // A note withheld from the person's copy, or shown again, is in the audit log before
        // the change is stored; if it cannot be recorded, nothing of the change is stored.
        let mut withholding_ticket = 0;
        let mut withholding_audited = false;
        if let Some(new_doc) = prepared.doc.as_ref() {
            for line in team_notes::withholding_changes(&c.doc, new_doc) {
                withholding_audited = true;
                match self.shared.audit_write(self.actor.clone(), case, line) {
                    Ok(t) => withholding_ticket = withholding_ticket.max(t),
                    Err(e) => {
                        drop(c);
                        return self.refuse_case(
                            case,
                            ErrorCode::StorageFailed,
                            format!("the server could not record in its audit log that a note is withheld from the person's copy, or shown again ({e}), so it stored nothing of your changes; they are still on your device: sync again later"),
                        );
                    }
                }
            }
        }
        // With no new changes the ticket covers every write so far: the heads may include other
        // sessions' writes, claimed only once those are durable too.
        let mut ticket = match self
            .shared
            .storage
            .apply(&case, &mut c, prepared, &mut peer)
        {
            Ok(t) => t,
            Err(e) => {
                drop(c);
                if withholding_audited {
                    // The audit log said what these changes do to withholding; it says too that
                    // they were not stored (they come again when the device syncs again).
                    self.shared.audit(
                        self.actor.clone(),
                        AuditAction::Refused,
                        Some(case),
                        format!(
                            "the withholding changes recorded just before were not stored: {e}"
                        ),
                    );
                }
                return self.refuse_case(case, ErrorCode::StorageFailed, format!("the server could not save your changes ({e}); they are still on your device: sync again later"));
            }
        };
        // Upload-only, the device receives nothing, and only its own heads are acknowledged
        // (see Reply::upload_only).
        let reply = if upload_only {
            Reply::upload_only(&mut c.doc, &mut peer)
        } else {
            Reply::full(&mut c.doc, &mut peer)
        };
        let reader = self.reader(&c.doc);
        drop(c);
        ticket = ticket.max(withholding_ticket);
        let mut unaudited = None;
        if reply.sends_changes() && !self.read_audited.contains(&case) {
            // The read is in the audit log before the data leaves: the reply waits for this
            // record's flush as well as for the case's, and without the record it is not sent.
            match self.shared.audit_access(
                self.actor.clone(),
                case,
                format!("case data sent to {reader}"),
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
            let detail = format!("{new_changes} changes accepted, written by {actors}");
            ticket = ticket.max(self.written(case, detail));
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
        self.states.insert(case, peer);
        (ticket, reply.into_frames(case))
    }

    /// A write of this device is stored: the device holds the case (see [`Access`]), and the
    /// write is audited. The record is best-effort (the change itself names its author), but the
    /// returned ticket covers it, so the acknowledgement waits for its flush too.
    fn written(&self, case: CaseId, detail: String) -> u64 {
        let _ = self.shared.registry.mark_held(&self.device.id, &case);
        // Noted before the write, for its ticket (see GroupCommit::wrote_in).
        let generation = self.shared.storage.group.generation();
        self.shared
            .audit(self.actor.clone(), AuditAction::Write, Some(case), detail);
        self.shared.storage.group.wrote_in(generation)
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
    /// disk: it is the boundary of what the device may still upload (see `ServerPolicy`'s
    /// [`CasePolicy::time_allowed`](polyphony_core::sync::CasePolicy::time_allowed)). Nothing of
    /// the message it answers is applied.
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
            // A borough's link relays what its devices wrote; the borough held each device to
            // when that device was told (a device told after the link wrote in good faith in
            // between), so the hub bounds the link only by the moved-case window.
            Access::UploadOnly(_) if self.relay.is_some() => Ok(None),
            Access::UploadOnly(_) => self.shared.registry.told_moved(&self.device.id, case),
            _ => Ok(None),
        }
    }

    /// Why the message is refused, if keeping its changes that wait for a dependency would leave
    /// this session holding more than two frames' worth of waiting changes across all its cases
    /// (one case alone is bounded by `prepare`, at [`polyphony_core::sync::MAX_WAITING_BYTES`]). A bound on the session,
    /// not the case, so that a device cannot make the server hold a frame's worth for each case of
    /// its caseload. Two, as for one case: a message can wait while the next is on its way.
    fn too_much_waiting(&self, case: CaseId, prepared: &Prepared) -> Option<String> {
        let here = prepared.peer.waiting.bytes();
        if here == 0 {
            return None;
        }
        let elsewhere: usize = self
            .states
            .iter()
            .filter(|(c, _)| **c != case)
            .map(|(_, p)| p.waiting.bytes())
            .sum();
        let bound = 2 * self.shared.max_frame;
        if here + elsewhere <= bound {
            return None;
        }
        let msg = format!(
            "more than {bound} bytes of changes sent in this session are waiting for changes \
             they depend on; nothing of this message was kept: sync again to send them from the \
             start"
        );
        info!(%case, device = %self.device.id, "{msg}");
        Some(msg)
    }

    fn refuse_apply(&self, case: CaseId, e: ApplyError) -> (u64, Vec<Frame>) {
        let code = match e {
            ApplyError::Forged(_) | ApplyError::Impersonates(_) => ErrorCode::ForgedAuthor,
            _ => ErrorCode::InvalidChange,
        };
        let msg = match (&e, self.relay) {
            (ApplyError::Forged(actor), Some(_)) => format!(
                "change refused: a change is authored by {actor}, which is no device on this borough's roster (a device enrolled since the link connected is sent with the link's next roster); the case on the hub is unchanged"
            ),
            _ => format!("change refused: {e}; the case on the server is unchanged"),
        };
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
        let entries = match access_entries(&self.shared, case) {
            Ok(e) => e,
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
        let (message, reader) = {
            let mut c = shared_case.lock().expect("case lock");
            let reader = self.reader(&c.doc);
            let peer = self.states.entry(change.case).or_default();
            (peer.generate(&mut c.doc), reader)
        };
        if let Some(m) = message {
            let mut ticket = self.shared.storage.group.current_in(generation);
            if !m.changes.is_empty() && !self.read_audited.contains(&change.case) {
                // Audited before sent: the push waits for this record's flush too, and without
                // the record it is not sent.
                match self.shared.audit_access(
                    self.actor.clone(),
                    change.case,
                    format!("case data pushed live to {reader}"),
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
            self.reply((
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

/// A case's access list, oldest first, as its devices are shown it: what came with it from the
/// boroughs it was transferred from, then this server's audit records of it.
pub(crate) fn access_entries(
    shared: &Shared,
    case: CaseId,
) -> Result<Vec<polyphony_core::export::Access>, String> {
    let mut entries = shared
        .registry
        .carried_access(&case)
        .map_err(|e| e.to_string())?;
    entries.extend(own_access_entries(shared, case)?);
    // Oldest first across both (a case transferred back has entries from here before and after
    // those that came with it).
    entries.sort_by_cached_key(|a| {
        time::OffsetDateTime::parse(&a.at, &time::format_description::well_known::Rfc3339).ok()
    });
    Ok(entries)
}

/// A case's access list from this server's audit records alone, oldest first.
pub(crate) fn own_access_entries(
    shared: &Shared,
    case: CaseId,
) -> Result<Vec<polyphony_core::export::Access>, String> {
    let records = shared
        .audit
        .entries(Some(case))
        .map_err(|e| e.to_string())?;
    let mut entries = Vec::new();
    let mut names: HashMap<polyphony_core::PractitionerId, String> = HashMap::new();
    entries.extend(
        records
            .into_iter()
            .filter(|r| shown_in_access_log(r.event.action))
            .map(|r| {
                let (who, device) = who_acted(shared, &r.event.actor, &mut names);
                let (what, kind) = what_was_done(&r.event);
                polyphony_core::export::Access {
                    at: r.event.at,
                    who,
                    device,
                    what,
                    kind,
                }
            }),
    );
    Ok(entries)
}

/// Who an access-log entry names, and their device's id if a device did it. A practitioner's
/// name is looked up once per log (`names`), their id shown if the registry has no name.
fn who_acted(
    shared: &Shared,
    actor: &Actor,
    names: &mut HashMap<polyphony_core::PractitionerId, String>,
) -> (String, Option<String>) {
    match actor {
        Actor::Device {
            device,
            practitioner,
        } => {
            let name = names.entry(*practitioner).or_insert_with(|| {
                shared
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
        Actor::Borough { borough } => (
            shared
                .registry
                .borough(borough)
                .ok()
                .flatten()
                .map(|b| format!("the {} borough server", b.name))
                .unwrap_or_else(|| format!("borough server {borough}")),
            None,
        ),
        Actor::Hub => ("the trust hub".to_string(), None),
    }
}

/// Whether the person's access log shows an audit record of this kind: reads, writes and moves of
/// their case, not the server's housekeeping.
fn shown_in_access_log(action: AuditAction) -> bool {
    matches!(
        action,
        AuditAction::Read | AuditAction::Write | AuditAction::OfflineRead | AuditAction::CaseMoved
    )
}

/// What an access-log entry says was done, and its kind.
fn what_was_done(event: &AuditEvent) -> (String, Option<AccessKind>) {
    // A device records every read, connected or not: the record does not say
    // which, so a read is "on their device", never "offline".
    match event.action {
        AuditAction::Read => (
            format!("read ({})", event.detail),
            Some(AccessKind::SentToDevice),
        ),
        AuditAction::Write => (
            format!("wrote ({})", event.detail),
            Some(AccessKind::Changed),
        ),
        AuditAction::OfflineRead => {
            let purpose = crate::audit::device_read_purpose(&event.detail);
            (
                format!("read on their device ({purpose})"),
                Some(AccessKind::OnDevice {
                    purpose: purpose.to_string(),
                    not_yet_sent: false,
                }),
            )
        }
        AuditAction::CaseMoved => (
            format!("case moved ({})", event.detail),
            Some(AccessKind::Moved),
        ),
        _ => (event.detail.clone(), None),
    }
}
