//! The link session's documents: private copies of the borough's cases, and what the session
//! asks the borough to do with what the hub sends.

use std::collections::HashMap;
use std::sync::Arc;

use automerge::AutoCommit;
use polyphony_core::model::{guard, schema, team_notes};
use polyphony_core::net::SessionHost;
use polyphony_core::store::StoreError;
use polyphony_core::sync::{Action, DocSet, Refusal};
use polyphony_core::CaseId;
use tracing::warn;

use super::LINK_ORIGIN;
use crate::audit::{Actor, AuditAction};
use crate::session::Shared;
use crate::storage::CaseChanged;

/// How many private copies the link keeps at once. A copy is one clone of the case's document;
/// one a device changed is dropped and cloned again when next needed.
pub(super) const COPIES: usize = 64;

/// The borough's side of a link session: [`DocSet`] over private copies of its stored cases, and
/// [`SessionHost`] storing what the hub sends (checked by the history rules a device's changes
/// pass) and recording what the hub acknowledged.
pub(super) struct BoroughHost {
    shared: Arc<Shared>,
    /// Private copies, with when each was last lent (for eviction).
    copies: HashMap<CaseId, (AutoCommit, u64)>,
    tick: u64,
    /// The highest group-commit ticket of what was stored from the hub in this batch of actions.
    pub(super) ticket: u64,
    /// Cases the hub refused in this session, with why.
    pub(super) refused: Vec<(CaseId, Refusal)>,
    /// The team the hub's welcome granted each case for: the team a case new here is
    /// registered to (one transferred here names another borough's team in its record).
    pub(super) grants: HashMap<CaseId, polyphony_core::TeamId>,
    /// A case created on another borough was stored here in this session: its history from
    /// there is to fetch.
    pub(super) history_wanted: bool,
    /// Cases the hub's changes were stored for since last asked (their files are looked at).
    pub(super) stored: Vec<CaseId>,
}

impl BoroughHost {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        BoroughHost {
            shared,
            copies: HashMap::new(),
            tick: 0,
            ticket: 0,
            refused: Vec::new(),
            grants: HashMap::new(),
            history_wanted: false,
            stored: Vec::new(),
        }
    }

    /// A device changed `case`: the copy is stale; the next use clones it afresh.
    pub(super) fn forget(&mut self, case: &CaseId) {
        self.copies.remove(case);
    }

    /// Every copy is stale (announcements were missed).
    pub(super) fn forget_all(&mut self) {
        self.copies.clear();
    }

    /// Keep at most [`COPIES`], dropping the least recently lent, never `keep`.
    fn evict(&mut self, keep: &CaseId) {
        while self.copies.len() > COPIES {
            let oldest = self
                .copies
                .iter()
                .filter(|(c, _)| *c != keep)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(c, _)| *c);
            match oldest {
                Some(c) => {
                    self.copies.remove(&c);
                }
                None => break,
            }
        }
    }

    /// Store changes the hub sent for `case`, if they pass what a device's changes must (the
    /// record's shape, the history rules, its own case id, its team field unchanged; a note
    /// withheld from the person's copy, or shown again, is in the audit log first), except who
    /// wrote them (the hub checked that on the way in, against the borough that sent them). The
    /// case must be one of the borough's own teams': as registered here, or, for a case new
    /// here, as the hub granted it (a case transferred here names, in its record, the team that
    /// created it on another borough). A new case is registered once it is on disk; one created
    /// on another borough has its history from there fetched next. Announced so devices
    /// receive them.
    fn persist(&mut self, case: CaseId, chunk: &[u8]) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let registered = shared
            .registry
            .case_team(&case)
            .map_err(|e| StoreError::Engine(e.to_string()))?;
        let own = |team: &polyphony_core::TeamId| {
            shared
                .registry
                .team_by_id(team)
                .map(|t| t.is_some_and(|t| t.borough.is_none()))
        };
        let engine = |e: crate::registry::RegistryError| StoreError::Engine(e.to_string());
        let granted = match self.grants.get(&case) {
            Some(t) if own(t).map_err(engine)? => Some(*t),
            _ => None,
        };
        let owner = match registered {
            Some(t) if own(&t).map_err(engine)? => t,
            // New here, or transferred back to one of its teams: the hub's grant says whose.
            _ => match granted {
                Some(t) => t,
                None => {
                    let why = format!("the trust hub did not grant case {case} to this borough");
                    warn!(%case, "{why}");
                    return Err(StoreError::Engine(why));
                }
            },
        };
        let mut created_elsewhere = false;
        let mut audited = 0;
        let check = |before: &AutoCommit,
                     before_heads: &[automerge::ChangeHash],
                     after: &mut AutoCommit|
         -> Result<(), String> {
            let new = guard::NewOps::between(before_heads, after);
            schema::validate_document(after).map_err(|e| e.to_string())?;
            guard::nothing_removed(before, after)?;
            guard::records_kept(after, &new)?;
            guard::written_once_kept(before, after, &new)?;
            if schema::read_case_id(after) != Some(case) {
                return Err("the document names another case".to_string());
            }
            let now = schema::read_team_id(after).ok_or("the case has no team")?;
            if schema::read_team_id(before).is_some_and(|t| t != now) {
                return Err("the changes would change the case's team".to_string());
            }
            created_elsewhere = !own(&now).map_err(|e| e.to_string())?;
            for line in team_notes::withholding_changes(before, after) {
                let ticket = shared.audit_write(Actor::Hub, case, line).map_err(|e| {
                    format!("could not record a withheld note in the audit log: {e}")
                })?;
                audited = audited.max(ticket);
            }
            Ok(())
        };
        match self.shared.storage.apply_chunk(&case, chunk, check) {
            Ok((ticket, added)) => {
                self.ticket = self.ticket.max(ticket).max(audited);
                // Registered whenever it is stored and not yet registered (also when this chunk
                // added nothing: an earlier one stored it and the registration did not follow).
                let registry = self.shared.registry.clone();
                if let Some(foreign) = registered.filter(|t| *t != owner) {
                    // Transferred back: its own team's again here.
                    registry.move_case(case, owner).map_err(engine)?;
                    self.shared.audit(
                        Actor::Hub,
                        AuditAction::CaseMoved,
                        Some(case),
                        format!("transferred back here through the trust hub, from another borough's team {foreign}"),
                    );
                    self.want_history(&case)?;
                }
                if let Ok(None) = registry.case_team(&case) {
                    if created_elsewhere {
                        // Marked before it is registered: a crash between fetches it anyway.
                        self.want_history(&case)?;
                    }
                    registry.register_case(case, owner).map_err(|e| {
                        StoreError::Engine(format!("could not register case {case}: {e}"))
                    })?;
                }
                if !added {
                    return Ok(());
                }
                self.stored.push(case);
                self.shared.audit(
                    Actor::Hub,
                    AuditAction::Write,
                    Some(case),
                    "changes received from the trust hub stored",
                );
                self.shared.storage.announce(CaseChanged {
                    case,
                    origin: LINK_ORIGIN,
                });
                Ok(())
            }
            Err(crate::storage::StorageError::Store(e)) => Err(e),
            Err(e) => {
                // Nothing of it was stored; the session ends (the copy holds it) and the next
                // one starts from the borough's disk.
                warn!(%case, error = %e, "changes from the trust hub refused");
                self.shared.audit(
                    Actor::Hub,
                    AuditAction::Refused,
                    Some(case),
                    format!("changes from the trust hub refused, nothing stored: {e}"),
                );
                Err(StoreError::Engine(e.to_string()))
            }
        }
    }
}

impl BoroughHost {
    /// The hub's welcome granted `grants`: a case stored here but registered to another
    /// borough's team (transferred back) or not registered at all (a crash between storing and
    /// registering) is its granted team's now, before any change arrives (one transferred back
    /// unchanged brings none).
    pub(super) fn adopt(&mut self, grants: HashMap<CaseId, polyphony_core::TeamId>) {
        for (case, team) in &grants {
            if let Err(e) = self.adopt_one(case, team) {
                warn!(%case, error = %e, "the link could not register a case the hub granted");
            }
        }
        self.grants = grants;
    }

    fn adopt_one(
        &mut self,
        case: &CaseId,
        team: &polyphony_core::TeamId,
    ) -> Result<(), crate::registry::RegistryError> {
        let registry = self.shared.registry.clone();
        let own = |t: &polyphony_core::TeamId| {
            registry
                .team_by_id(t)
                .map(|t| t.is_some_and(|t| t.borough.is_none()))
        };
        if !own(team)? {
            return Ok(());
        }
        match registry.case_team(case)? {
            // Moved here between this borough's teams, and the hub not told (a move before the
            // hub followed moves, or while the link was down): the hub's registry follows.
            Some(now) if now != *team && own(&now)? => {
                super::transfer::note_move(&*self.shared.storage.store, *case, now)?;
            }
            Some(now) if now != *team => {
                self.want_history(case)?;
                registry.move_case(*case, *team)?;
                self.shared.audit(
                    Actor::Hub,
                    AuditAction::CaseMoved,
                    Some(*case),
                    format!("transferred back here through the trust hub, from another borough's team {now}"),
                );
            }
            None if self.shared.storage.case(case).ok().flatten().is_some() => {
                registry.register_case(*case, *team)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Note that `case`'s history from the boroughs it came from is to fetch (durably with what
    /// registers it, so a crash between fetches it anyway).
    fn want_history(&mut self, case: &CaseId) -> Result<(), StoreError> {
        self.shared.storage.store.put_meta(
            super::transfer::NS_HISTORY_WANTED,
            &case.to_string(),
            &[],
        )?;
        self.history_wanted = true;
        Ok(())
    }

    /// Whether the hub acknowledged every change the borough holds of `case` (false when it
    /// cannot be told).
    fn all_on_hub(&self, case: &CaseId) -> bool {
        let Ok(Some(stored)) = self.shared.storage.case(case) else {
            return false;
        };
        let heads = stored.lock().expect("case lock").doc.get_heads();
        let acked = super::acked_heads(&*self.shared.storage.store, case)
            .ok()
            .flatten();
        super::on_hub(&heads, acked.as_deref())
    }
}

impl DocSet for BoroughHost {
    /// The borough's cases; one transferred to another borough only while it holds a change
    /// the hub has not acknowledged (a device's late upload, carried on to the hub).
    fn cases(&self) -> Vec<CaseId> {
        let listed = self.shared.registry.cases().and_then(|cases| {
            let foreign = self.shared.registry.foreign_teams()?;
            Ok(cases
                .into_iter()
                .filter(|(case, team)| !foreign.contains(team) || !self.all_on_hub(case))
                .map(|(c, _)| c)
                .collect())
        });
        listed.unwrap_or_else(|e| {
            warn!(error = %e, "the link could not list the borough's cases");
            Vec::new()
        })
    }

    fn doc(&mut self, case: &CaseId) -> Option<&mut AutoCommit> {
        self.tick += 1;
        let tick = self.tick;
        if !self.copies.contains_key(case) {
            let copy = match self.shared.storage.case(case) {
                Ok(Some(stored)) => stored.lock().expect("case lock").doc.clone(),
                // Granted by the hub, or registered here without its first chunk: an empty
                // document, into which the hub sends the case.
                Ok(None) => AutoCommit::new(),
                Err(e) => {
                    warn!(%case, error = %e, "the link could not read a case");
                    return None;
                }
            };
            self.copies.insert(*case, (copy, tick));
            self.evict(case);
        }
        let entry = self.copies.get_mut(case)?;
        entry.1 = tick;
        Some(&mut entry.0)
    }

    fn insert(&mut self, case: CaseId, doc: AutoCommit) {
        self.tick += 1;
        self.copies.insert(case, (doc, self.tick));
        self.evict(&case);
    }

    fn wipe(&mut self) -> Result<Vec<CaseId>, String> {
        Err("a borough server never wipes its cases on the trust hub's word".to_string())
    }
}

impl SessionHost for BoroughHost {
    fn act(&mut self, action: &Action) -> Result<(), StoreError> {
        match action {
            Action::Persist { case, chunk } => self.persist(*case, chunk),
            Action::Acknowledged { case, heads } => {
                super::set_acked_heads(&*self.shared.storage.store, case, heads)?;
                // Devices syncing the case live hear that it is also on the hub.
                self.shared.storage.announce_hub_saved(*case);
                Ok(())
            }
            Action::Refused { case, refusal } => {
                warn!(%case, message = %refusal.message, "the trust hub refused a case");
                self.refused.push((*case, refusal.clone()));
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
