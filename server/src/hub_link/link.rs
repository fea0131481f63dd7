//! One link session as a state machine with no sockets and no clock (as quinn-proto is QUIC's):
//! frames from the hub and the borough's announcements in; frames to send, and the group-commit
//! ticket that must be durable before they leave, out. The driver (tokio, QUIC) waits for the
//! ticket and writes the frames; the simulation test moves them itself, so both run this code.
//!
//! Why a ticket comes with every batch: a frame must never carry to the hub a change the
//! borough's disk could still lose (the hub would hold, and acknowledge, what the borough does
//! not), nor leave before the audit record of the case's data going. The core notes the group
//! commit's generation before it reads any case for the batch, so the ticket covers every write
//! made before (a device's change is announced before its flush), what the batch stored, and the
//! audit record.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use polyphony_core::net::{carry_out_local, Outgoing};
use polyphony_core::store::StoreError;
use polyphony_core::sync::{Action, ClientSession, DocSet, ErrorCode, Frame, Refusal, Roster};
use polyphony_core::CaseId;

use super::host::BoroughHost;
use super::roster_of;
use crate::audit::{Actor, AuditError};
use crate::registry::RegistryError;
use crate::session::Shared;

/// Why a link session must end on the borough's side.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The borough's registry could not be read for the roster.
    #[error("could not read the borough's roster: {0}")]
    Roster(#[from] RegistryError),
    /// What the hub sent could not be stored (or was refused by the history checks).
    #[error(
        "this borough could not store what the trust hub sent ({0}); nothing it held was changed"
    )]
    Store(#[from] StoreError),
    /// The record of case data going to the hub could not be written.
    #[error("could not record in the audit log that case data goes to the trust hub, so none was sent ({0})")]
    Audit(#[from] AuditError),
}

/// What to send to the hub, once `ticket` is durable on the borough.
#[derive(Debug, Default)]
pub struct Batch {
    /// Frames to write, in order, as one write.
    pub frames: Vec<Frame>,
    /// The session is over: after writing `frames`, close the link with this code.
    pub close: Option<(ErrorCode, String)>,
    /// The borough's group-commit ticket to wait for before writing `frames`.
    pub ticket: u64,
}

/// One link session: the borough's [`ClientSession`] with the hub over private copies of its
/// cases ([`BoroughHost`]).
pub struct LinkCore {
    shared: Arc<Shared>,
    session: ClientSession,
    host: BoroughHost,
    roster: Roster,
    /// Cases whose going to the hub is in the audit log for this session.
    audited: HashSet<CaseId>,
}

impl LinkCore {
    /// A new session, and its first frames: `Hello`, then the borough's roster.
    pub fn new(shared: Arc<Shared>) -> Result<(LinkCore, Batch), LinkError> {
        let generation = shared.storage.group.generation();
        let roster = roster_of(&shared.registry)?;
        let mut core = LinkCore {
            host: BoroughHost::new(shared.clone()),
            shared,
            session: ClientSession::new(true, Vec::new(), BTreeMap::new()),
            roster: roster.clone(),
            audited: HashSet::new(),
        };
        let mut first = core.session.start();
        first.push(Action::Send(Frame::Roster(roster)));
        let send = core.carry_out(first, generation)?;
        Ok((core, send))
    }

    /// The hub sent `frame`.
    pub fn handle(&mut self, frame: Frame) -> Result<Batch, LinkError> {
        let generation = self.shared.storage.group.generation();
        if let Frame::Welcome(w) = &frame {
            self.host
                .adopt(w.cases.iter().map(|g| (g.case, g.team)).collect());
        }
        let actions = self.session.handle(frame, &mut self.host);
        self.carry_out(actions, generation)
    }

    /// A device (not the link) changed `case` on the borough: the private copy is stale, and the
    /// change goes to the hub.
    pub fn local_change(&mut self, case: CaseId) -> Result<Batch, LinkError> {
        let generation = self.shared.storage.group.generation();
        self.host.forget(&case);
        let actions = self.session.local_change(case, &mut self.host);
        self.carry_out(actions, generation)
    }

    /// Announcements were missed: every copy is stale, and every case is offered again.
    pub fn all_changed(&mut self) -> Result<Batch, LinkError> {
        let generation = self.shared.storage.group.generation();
        self.host.forget_all();
        let mut actions = Vec::new();
        for case in self.host.cases() {
            actions.extend(self.session.local_change(case, &mut self.host));
        }
        self.carry_out(actions, generation)
    }

    /// Whether the hub welcomed this session.
    pub fn welcomed(&self) -> bool {
        self.session.welcome().is_some()
    }

    /// Whether the hub said in its welcome that it keeps a borough's sealed copy
    /// ([`polyphony_core::sync::FEATURE_SAFEKEEPING`]).
    pub fn hub_keeps_copies(&self) -> bool {
        self.session
            .welcome()
            .is_some_and(|w| w.has(polyphony_core::sync::FEATURE_SAFEKEEPING))
    }

    /// The cases the hub's changes were stored for since last asked.
    pub fn take_stored(&mut self) -> Vec<CaseId> {
        std::mem::take(&mut self.host.stored)
    }

    /// Every case the link syncs.
    pub fn cases(&self) -> Vec<CaseId> {
        polyphony_core::sync::DocSet::cases(&self.host)
    }

    /// Whether a case created on another borough was stored since last asked (its history from
    /// there is to fetch now).
    pub fn take_history_wanted(&mut self) -> bool {
        std::mem::take(&mut self.host.history_wanted)
    }

    /// Whether every case is in step with the hub (or refused).
    pub fn settled(&self) -> bool {
        self.session.settled()
    }

    /// Cases the hub refused in this session, with why.
    pub fn refused(&self) -> &[(CaseId, Refusal)] {
        &self.host.refused
    }

    /// Whether the borough's roster changed since this session sent it (a device enrolled): a
    /// new session sends the new one, so the hub takes that device's changes.
    pub fn roster_changed(&self) -> bool {
        roster_of(&self.shared.registry).is_ok_and(|now| now != self.roster)
    }

    /// Do what the session asked: store and record first, then audit each case's data going to
    /// the hub (the first time in this session it carries changes). The ticket covers those
    /// records, what was stored, and every write made before `generation` was noted (before the
    /// session read any case for these actions).
    fn carry_out(&mut self, actions: Vec<Action>, generation: u64) -> Result<Batch, LinkError> {
        self.host.ticket = 0;
        let Outgoing { frames, close } = carry_out_local(&mut self.host, actions)?;
        let mut ticket = self
            .host
            .ticket
            .max(self.shared.storage.group.current_in(generation));
        for frame in &frames {
            let Frame::Sync { case, message } = frame else {
                continue;
            };
            if self.audited.contains(case) || !carries_changes(message) {
                continue;
            }
            let read =
                self.shared
                    .audit_access(Actor::Hub, *case, "case data sent to the trust hub")?;
            ticket = ticket.max(read);
            self.audited.insert(*case);
        }
        Ok(Batch {
            frames,
            close,
            ticket,
        })
    }
}

/// Whether an encoded sync message carries changes (else it is only heads and a Bloom filter).
fn carries_changes(message: &[u8]) -> bool {
    automerge::sync::Message::decode(message).map_or(true, |m| !m.changes.is_empty())
}
