//! [`ClientSession`]: the device's side of a sync, as a state machine.
//!
//! The shell feeds it frames and local changes; it answers with [`Action`]s. Documents live outside
//! the session (in the device profile, which the app also edits), reached through [`DocSet`].
//!
//! Life of a session: send `Hello`; on `Welcome`, start every case the device holds or may read;
//! trade automerge sync messages per case, all cases at once (no round trip per case in series);
//! record every `Saved` as an acknowledgement; when every case is idle, a one-shot session sends
//! `Done` and ends on `Bye` (or, for a device being revoked, on `Wipe`: it wipes what the server
//! holds, answers `Wiped` naming any case it had to keep, and ends on `Bye`); a live session stays
//! open and pushes local changes as they happen.

use std::collections::{BTreeMap, BTreeSet};

use automerge::sync::State;
use automerge::{ActorId, AutoCommit, ChangeHash};

use super::frame::*;
use super::peer::{prepare, CasePolicy, PeerSync, PolicyRefusal};
use crate::CaseId;

/// Where the session finds the documents it syncs.
pub trait DocSet {
    /// Every case held locally.
    fn cases(&self) -> Vec<CaseId>;
    /// A case's document, if held.
    fn doc(&mut self, case: &CaseId) -> Option<&mut AutoCommit>;
    /// Start holding a case first seen from the server (an empty document to sync into).
    fn insert(&mut self, case: CaseId, doc: AutoCommit);
    /// The server, holding everything this device uploaded, told it to wipe: remove every case
    /// whose changes the server has acknowledged, durably, and forget the enrolment if no case is
    /// left. Returns the cases kept because they hold changes the server does not have (never
    /// wiped: they are uploaded by a later session). An error ends the session unconfirmed, and
    /// the server keeps the device able to upload.
    fn wipe(&mut self) -> Result<Vec<CaseId>, String>;
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write this frame to the server.
    Send(Frame),
    /// Append these new changes (received from the server) to the case's stored log.
    Persist {
        /// The case.
        case: CaseId,
        /// Encoded changes.
        chunk: Vec<u8>,
    },
    /// The server holds these heads durably: record them as acknowledged.
    Acknowledged {
        /// The case.
        case: CaseId,
        /// Heads the server holds (only those known here).
        heads: Vec<ChangeHash>,
    },
    /// The borough's trust hub holds these heads of the case durably ("also on the trust hub"):
    /// record them beside the borough's acknowledgement. Not an answer to anything.
    AlsoOnHub {
        /// The case.
        case: CaseId,
        /// Heads the hub holds (only those known here).
        heads: Vec<ChangeHash>,
    },
    /// The server refused this case (or the server sent something invalid for it).
    Refused {
        /// The case.
        case: CaseId,
        /// Why.
        refusal: Refusal,
    },
    /// The case moved to a team this device is not in; everything it had was uploaded.
    Moved {
        /// The case.
        case: CaseId,
    },
    /// The server told this device that the case is no longer its team's (it moved away, or the
    /// practitioner left its team): the device still uploads what it holds, but must add nothing
    /// more (the server refuses changes made after this). Record it durably before going on.
    ToldMoved {
        /// The case.
        case: CaseId,
    },
    /// The cases the server's welcome granted in full: any of them this device was told had
    /// moved away is its team's again.
    Granted {
        /// The cases.
        cases: Vec<CaseId>,
    },
    /// Offline reads up to this index are in the server's audit log.
    ReadsSaved {
        /// Highest index stored.
        through: u64,
    },
    /// How far the first full sync has come.
    Progress {
        /// Cases settled (idle or refused).
        settled: usize,
        /// Cases in the session.
        total: usize,
    },
    /// The server's team list (at the welcome, and again in a live session when it changes):
    /// keep it, replacing the one kept before.
    Colleagues(Vec<Colleague>),
    /// Whether the server is revoking this device (said at every welcome). While it is, the device
    /// takes no new entries: what it holds is uploaded, then wiped.
    RevocationOrdered(bool),
    /// The device was revoked and [`DocSet::wipe`] has wiped it, keeping these cases (they hold
    /// changes the server does not have).
    Wiped {
        /// Cases kept.
        kept: Vec<CaseId>,
        /// The server has already marked the device revoked (a server older than the wipe
        /// confirmation does so at `Done`): the kept cases can no longer be uploaded from here.
        revoked: bool,
    },
    /// The session is over; close the connection with this code.
    Close {
        /// Close code.
        code: ErrorCode,
        /// Why, for the user.
        message: String,
    },
}

/// The most sync messages one case may send in one session without its document changing. Two
/// peers normally settle a case in a handful of exchanges; automerge's protocol can ping-pong forever if a message is ever lost
/// (automerge issues #772 and #1284), so a case that has not settled by here is stopped for this
/// session with a clear message. Its changes stay on the device and are counted as unsynced, and the
/// next session (with fresh sync states) tries again.
pub const MAX_MESSAGES_PER_CASE: usize = 128;

#[derive(Debug, Default)]
struct CaseSync {
    peer: PeerSync,
    /// Messages sent since the document last changed.
    sent: usize,
    heads_at_last_change: Vec<ChangeHash>,
    outstanding: usize,
    idle: bool,
    refused: bool,
    moved: bool,
    unknown_upstream: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitWelcome,
    Syncing,
    DoneSent,
    /// Wiped and told the server so; waiting for its `Bye`.
    WipedSent,
    Closed,
}

/// The client's policy for what the server sends: the record's shape and its own case id. Authors
/// are the server's business (it checked them on the way in).
struct ClientPolicy(CaseId);

impl CasePolicy for ClientPolicy {
    fn author_allowed(&self, _: &ActorId) -> bool {
        true
    }
    fn check(&self, doc: &AutoCommit) -> Result<(), PolicyRefusal> {
        match crate::model::schema::read_case_id(doc) {
            Some(id) if id == self.0 => Ok(()),
            _ => Err(PolicyRefusal::WrongCase),
        }
    }
}

/// A device's sync session.
#[derive(Debug)]
pub struct ClientSession {
    hello: Hello,
    phase: Phase,
    mode: SessionMode,
    cases: BTreeMap<CaseId, CaseSync>,
    reads: Vec<OfflineRead>,
    reads_outstanding: bool,
    /// The reads went out in this session (once: the server acknowledges them all).
    reads_sent: bool,
    welcome: Option<Welcome>,
    last_progress: (usize, usize),
}

impl ClientSession {
    /// A session that will upload `reads` (offline accesses) and resume from `states` (the sync
    /// states saved after the last session, so unchanged cases cost one small message each).
    pub fn new(live: bool, reads: Vec<OfflineRead>, states: BTreeMap<CaseId, State>) -> Self {
        let cases = states
            .into_iter()
            .map(|(c, state)| {
                (
                    c,
                    CaseSync {
                        peer: PeerSync::from_state(state),
                        ..Default::default()
                    },
                )
            })
            .collect();
        ClientSession {
            hello: Hello {
                version: PROTOCOL_VERSION,
                software: format!("polyphony/{}", env!("CARGO_PKG_VERSION")),
                live,
                features: vec![
                    FEATURE_CONFIRMS_WIPE.to_string(),
                    FEATURE_COLLEAGUES.to_string(),
                    FEATURE_HUB_RECEIPTS.to_string(),
                ],
            },
            phase: Phase::AwaitWelcome,
            mode: SessionMode::Normal,
            cases,
            reads,
            reads_outstanding: false,
            reads_sent: false,
            welcome: None,
            last_progress: (usize::MAX, 0),
        }
    }

    /// The first frame to send.
    pub fn start(&mut self) -> Vec<Action> {
        vec![Action::Send(Frame::Hello(self.hello.clone()))]
    }

    /// What the server said about us, once it has.
    pub fn welcome(&self) -> Option<&Welcome> {
        self.welcome.as_ref()
    }

    /// True once the first full sync is complete (every case idle or refused).
    pub fn settled(&self) -> bool {
        self.phase != Phase::AwaitWelcome
            && !self.reads_outstanding
            && (self.reads_sent || self.reads.is_empty())
            && self
                .cases
                .values()
                .all(|c| c.refused || (c.idle && c.outstanding == 0))
    }

    /// The sync states to save for next time.
    pub fn states(&self) -> impl Iterator<Item = (&CaseId, &State)> {
        self.cases
            .iter()
            .filter(|(_, c)| !c.refused)
            .map(|(id, c)| (id, &c.peer.state))
    }

    /// Cases the server refused in this session.
    pub fn refused(&self) -> Vec<CaseId> {
        self.cases
            .iter()
            .filter(|(_, c)| c.refused)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Handle a frame from the server.
    pub fn handle(&mut self, frame: Frame, docs: &mut dyn DocSet) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase == Phase::Closed {
            return out;
        }
        match (self.phase, frame) {
            (Phase::AwaitWelcome, Frame::Welcome(w)) => self.on_welcome(w, docs, &mut out),
            (Phase::AwaitWelcome, Frame::Error(r)) | (_, Frame::Error(r)) => {
                self.phase = Phase::Closed;
                out.push(Action::Close {
                    code: r.code,
                    message: r.message,
                });
                return out;
            }
            (Phase::AwaitWelcome, f) => {
                return self.fail(
                    ErrorCode::Malformed,
                    format!("expected welcome, got {}", f.kind()),
                )
            }
            (_, Frame::Sync { case, message }) => self.on_sync(case, &message, docs, &mut out),
            (_, Frame::Saved { case, heads }) => {
                let Some(c) = self.cases.get_mut(&case) else {
                    return self.fail(ErrorCode::Malformed, "saved for a case never synced".into());
                };
                if c.outstanding == 0 {
                    return self.fail(ErrorCode::Malformed, "saved without a request".into());
                }
                c.outstanding -= 1;
                if let Some(doc) = docs.doc(&case) {
                    // Only whether each head is known here matters: ask for the metadata, which
                    // costs nothing, not the encoded change.
                    let known: Vec<ChangeHash> = heads
                        .into_iter()
                        .filter(|h| doc.get_change_meta_by_hash(h).is_some())
                        .collect();
                    out.push(Action::Acknowledged { case, heads: known });
                }
                self.kick(case, docs, &mut out);
            }
            (_, Frame::HubSaved { case, heads }) => {
                // Only a case held here, and only heads known here; a case never synced is not
                // the server's to name.
                if let Some(doc) = docs.doc(&case).filter(|_| self.cases.contains_key(&case)) {
                    let known: Vec<ChangeHash> = heads
                        .into_iter()
                        .filter(|h| doc.get_change_meta_by_hash(h).is_some())
                        .collect();
                    out.push(Action::AlsoOnHub { case, heads: known });
                }
            }
            (_, Frame::CaseRefused { case, refusal }) => {
                let Some(c) = self.cases.get_mut(&case) else {
                    return self.fail(
                        ErrorCode::Malformed,
                        "refusal for a case never synced".into(),
                    );
                };
                c.outstanding = c.outstanding.saturating_sub(1);
                if refusal.code == ErrorCode::Moved && !c.moved {
                    // Keep uploading, receive nothing: the server keeps our changes (those made
                    // before now; nothing more may be added, so the host records it first).
                    c.moved = true;
                    c.peer.state.set_read_only(true);
                    out.push(Action::ToldMoved { case });
                    self.kick(case, docs, &mut out);
                } else if !c.refused {
                    // Reported once: a reply to another message of the case still in flight may
                    // bring the same refusal again.
                    c.refused = true;
                    out.push(Action::Refused { case, refusal });
                }
            }
            (Phase::Syncing | Phase::DoneSent, Frame::Colleagues(list)) => {
                out.push(Action::Colleagues(list));
            }
            (_, Frame::ReadsSaved { through }) => {
                self.reads_outstanding = false;
                self.reads.retain(|r| r.seq > through);
                out.push(Action::ReadsSaved { through });
            }
            (Phase::DoneSent, Frame::Bye) => {
                self.phase = Phase::Closed;
                self.finish_moved(&mut out);
                out.push(Action::Close {
                    code: ErrorCode::Done,
                    message: "sync complete".into(),
                });
                return out;
            }
            (Phase::DoneSent, Frame::Wipe) if self.mode == SessionMode::Revoking => {
                return self.on_wipe(docs);
            }
            (Phase::WipedSent, Frame::Bye) => {
                self.phase = Phase::Closed;
                out.push(Action::Close {
                    code: ErrorCode::Revoked,
                    message: "this device was revoked by your administrator: what it held is on the borough server".into(),
                });
                return out;
            }
            (_, f) => {
                return self.fail(
                    ErrorCode::Malformed,
                    format!("unexpected {} frame", f.kind()),
                )
            }
        }
        self.progress(&mut out);
        self.maybe_done(&mut out);
        out
    }

    /// The user changed a case while connected: push it now (live sync).
    pub fn local_change(&mut self, case: CaseId, docs: &mut dyn DocSet) -> Vec<Action> {
        let mut out = Vec::new();
        if matches!(self.phase, Phase::AwaitWelcome | Phase::Closed) {
            return out;
        }
        if !self.cases.contains_key(&case) {
            let mut c = CaseSync::default();
            if self.mode == SessionMode::Revoking {
                c.peer.state.set_read_only(true);
            }
            self.cases.insert(case, c);
        }
        self.kick(case, docs, &mut out);
        out
    }

    fn fail(&mut self, code: ErrorCode, message: String) -> Vec<Action> {
        self.phase = Phase::Closed;
        let refusal = Refusal {
            code,
            message: message.clone(),
        };
        vec![
            Action::Send(Frame::Error(refusal)),
            Action::Close { code, message },
        ]
    }

    /// Wipe as the server asked, and tell it what was kept: until the device confirms a wipe that
    /// kept nothing, the server keeps it able to upload (a change made while the last upload ran
    /// is never stranded on a device that can no longer connect).
    fn on_wipe(&mut self, docs: &mut dyn DocSet) -> Vec<Action> {
        let confirms = self
            .welcome
            .as_ref()
            .is_some_and(|w| w.has(FEATURE_CONFIRMS_WIPE));
        match docs.wipe() {
            Ok(kept) if confirms => {
                self.phase = Phase::WipedSent;
                vec![
                    Action::Wiped {
                        kept: kept.clone(),
                        revoked: false,
                    },
                    Action::Send(Frame::Wiped(Wiped { kept })),
                ]
            }
            Ok(kept) => {
                // An older server revoked this device at its `Done` and closes now.
                self.phase = Phase::Closed;
                vec![
                    Action::Wiped {
                        kept,
                        revoked: true,
                    },
                    Action::Close {
                        code: ErrorCode::Revoked,
                        message: "this device was revoked by your administrator".into(),
                    },
                ]
            }
            Err(e) => self.fail(
                ErrorCode::Internal,
                format!("this device could not wipe its records ({e}); they stay on it, encrypted"),
            ),
        }
    }

    fn on_welcome(&mut self, w: Welcome, docs: &mut dyn DocSet, out: &mut Vec<Action>) {
        if w.version != PROTOCOL_VERSION {
            out.extend(self.fail(
                ErrorCode::UnsupportedVersion,
                format!(
                    "server speaks protocol {}, this app {}: update the app",
                    w.version, PROTOCOL_VERSION
                ),
            ));
            return;
        }
        self.phase = Phase::Syncing;
        self.mode = w.mode;
        out.push(Action::RevocationOrdered(
            self.mode == SessionMode::Revoking,
        ));
        if let Some(list) = &w.colleagues {
            out.push(Action::Colleagues(list.clone()));
        }
        let local: BTreeSet<CaseId> = docs.cases().into_iter().collect();
        let granted: BTreeSet<CaseId> = w.cases.iter().map(|g| g.case).collect();
        out.push(Action::Granted {
            cases: granted.iter().copied().collect(),
        });
        // Saved states for cases we no longer hold are dropped; granted cases we lack start empty.
        self.cases
            .retain(|c, _| local.contains(c) || granted.contains(c));
        for case in local.iter().chain(granted.iter()) {
            if !local.contains(case) {
                if self.mode == SessionMode::Revoking {
                    continue;
                }
                docs.insert(*case, AutoCommit::new());
            }
            let c = self.cases.entry(*case).or_default();
            c.unknown_upstream = !granted.contains(case);
            if self.mode == SessionMode::Revoking {
                c.peer.state.set_read_only(true);
            }
        }
        self.welcome = Some(w);
        let cases: Vec<CaseId> = self.cases.keys().copied().collect();
        for case in cases {
            self.kick(case, docs, out);
        }
        self.send_reads_once_uploaded(out);
    }

    fn on_sync(
        &mut self,
        case: CaseId,
        message: &[u8],
        docs: &mut dyn DocSet,
        out: &mut Vec<Action>,
    ) {
        if !self.cases.contains_key(&case) {
            // A case pushed live that this device may read but did not hold yet.
            if self.mode == SessionMode::Revoking {
                return;
            }
            docs.insert(case, AutoCommit::new());
            self.cases.insert(case, CaseSync::default());
        }
        let Some(doc) = docs.doc(&case) else { return };
        let c = self.cases.get_mut(&case).expect("inserted above");
        if c.refused {
            return;
        }
        match prepare(doc, &c.peer, message, &ClientPolicy(case)) {
            Ok(mut p) => {
                let chunk = std::mem::take(&mut p.chunk);
                p.commit(doc, &mut c.peer);
                if !chunk.is_empty() {
                    out.push(Action::Persist { case, chunk });
                }
            }
            Err(e) => {
                c.refused = true;
                out.push(Action::Refused {
                    case,
                    refusal: Refusal {
                        code: ErrorCode::InvalidChange,
                        message: format!("the server sent data this app cannot accept ({e}); nothing was changed"),
                    },
                });
                return;
            }
        }
        self.kick(case, docs, out);
    }

    /// Send whatever this side has to say about a case; mark it idle if nothing.
    fn kick(&mut self, case: CaseId, docs: &mut dyn DocSet, out: &mut Vec<Action>) {
        let Some(c) = self.cases.get_mut(&case) else {
            return;
        };
        if c.refused {
            return;
        }
        let Some(doc) = docs.doc(&case) else { return };
        let heads = doc.get_heads();
        if heads != c.heads_at_last_change {
            // The document moved on (a local edit, or changes received): that is progress.
            c.heads_at_last_change = heads;
            c.sent = 0;
        }
        match c.peer.generate(doc) {
            Some(_) if c.sent >= MAX_MESSAGES_PER_CASE => {
                c.refused = true;
                out.push(Action::Refused {
                    case,
                    refusal: Refusal {
                        code: ErrorCode::Internal,
                        message: format!(
                            "the sync of this case did not settle after {MAX_MESSAGES_PER_CASE} exchanges without progress; \
                             its changes are safe on this device and the next sync will try again"
                        ),
                    },
                });
            }
            Some(msg) => {
                c.sent += 1;
                c.outstanding += 1;
                c.idle = false;
                out.push(Action::Send(Frame::Sync {
                    case,
                    message: msg.encode(),
                }));
            }
            None => c.idle = c.outstanding == 0,
        }
    }

    fn progress(&mut self, out: &mut Vec<Action>) {
        let total = self.cases.len();
        let settled = self
            .cases
            .values()
            .filter(|c| c.refused || (c.idle && c.outstanding == 0))
            .count();
        if (settled, total) != self.last_progress {
            self.last_progress = (settled, total);
            out.push(Action::Progress { settled, total });
        }
    }

    /// Send the offline reads once every case has been uploaded (or refused): a read of a case
    /// this device opened offline is only recorded once the server holds the case (before, the
    /// server drops it as a read of a case the device may not read, and the person's access list
    /// would never show it).
    fn send_reads_once_uploaded(&mut self, out: &mut Vec<Action>) {
        let uploaded = self
            .cases
            .values()
            .all(|c| c.refused || (c.idle && c.outstanding == 0));
        if self.phase == Phase::Syncing && uploaded && !self.reads_sent && !self.reads.is_empty() {
            self.reads_sent = true;
            self.reads_outstanding = true;
            out.push(Action::Send(Frame::Reads(self.reads.clone())));
        }
    }

    fn maybe_done(&mut self, out: &mut Vec<Action>) {
        self.send_reads_once_uploaded(out);
        // A device being revoked ends even a live session once its upload is done: it is told to
        // wipe there, not left connected and unable to write until its time limit runs out.
        let ends = !self.hello.live || self.mode == SessionMode::Revoking;
        if self.phase == Phase::Syncing && ends && self.settled() {
            self.phase = Phase::DoneSent;
            out.push(Action::Send(Frame::Done));
        }
    }

    fn finish_moved(&self, out: &mut Vec<Action>) {
        for (case, c) in &self.cases {
            if c.moved && !c.refused {
                out.push(Action::Moved { case: *case });
            }
        }
    }
}
