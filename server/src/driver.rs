//! The I/O driver of the server's core: what the async connection tasks need from storage and the
//! registry, in tokio's terms.
//!
//! Storage ([`crate::storage`]) and the registry ([`crate::registry`]) are synchronous: group
//! commit blocks on the disk, and changes are told through hooks
//! ([`ServerStorage::on_case_changed`], [`ServerStorage::on_reopened`],
//! [`Registry::on_access_changed`]). This module turns those into what a task can await without
//! stalling the runtime:
//! - [`GroupCommitDriver::durable`]: waiters queue on an async lock, holding no thread, and the one
//!   whose turn it is runs [`GroupCommit::durable`] on tokio's blocking pool;
//! - [`CoreDriver`]: the hooks' events as channels: a broadcast of changed cases (each session
//!   pushes them to its device), and watches of the store's reopens and of changes of access.
//!
//! With the listener, the admin socket, enrolment, the session's connection driver and `main`,
//! this is the only code in the server that touches tokio or quinn.

use std::sync::Arc;

use polyphony_core::store::StoreError;
use polyphony_core::CaseId;
use tokio::sync::{broadcast, watch};

use crate::registry::Registry;
use crate::storage::{CaseChanged, GroupCommit, ServerStorage};

/// How many announced changes a session may fall behind before it is told it lagged (it then
/// pushes every case it syncs, not one by one).
const CHANGES_BACKLOG: usize = 4096;

/// Group commit, awaited: [`GroupCommit::durable`] without holding a runtime thread while waiting.
pub struct GroupCommitDriver {
    group: Arc<GroupCommit>,
    /// Waiters queue here, in order, one at a time going to the blocking pool.
    turn: tokio::sync::Mutex<()>,
}

impl GroupCommitDriver {
    /// Await durability for `group`'s tickets.
    pub fn new(group: Arc<GroupCommit>) -> Self {
        GroupCommitDriver {
            group,
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Wait until the write with this ticket (and every one before it) is on disk: as
    /// [`GroupCommit::durable`], which this runs off the runtime once no flush already covers the
    /// ticket. Fails if the flush fails, and for good if the ticket was lost to a reopen.
    pub async fn durable(&self, ticket: u64) -> Result<(), StoreError> {
        if let Some(settled) = self.group.settled(ticket) {
            return settled;
        }
        // Waiters queue here in order, holding no thread, and usually find their ticket covered
        // by the flush that ran while they waited.
        let _turn = self.turn.lock().await;
        if let Some(settled) = self.group.settled(ticket) {
            return settled;
        }
        let group = self.group.clone();
        tokio::task::spawn_blocking(move || group.durable(ticket))
            .await
            .map_err(|e| StoreError::Engine(format!("flush task failed: {e}")))?
    }
}

/// Storage and the registry as the connection tasks await them: durability, and the changes
/// their hooks tell of, as tokio channels. One per server, attached to its storage and registry.
pub struct CoreDriver {
    group: GroupCommitDriver,
    changes: broadcast::Sender<CaseChanged>,
    /// Cases the trust hub acknowledged more of (a borough's link), for live devices.
    hub_saved: broadcast::Sender<CaseId>,
    reopened: Arc<watch::Sender<u64>>,
    access: Arc<watch::Sender<u64>>,
}

impl CoreDriver {
    /// The driver of `storage` and `registry`: adds the hooks that feed its channels.
    pub fn attach(storage: &ServerStorage, registry: &Registry) -> Arc<Self> {
        let (changes, _) = broadcast::channel(CHANGES_BACKLOG);
        let (hub_saved, _) = broadcast::channel(CHANGES_BACKLOG);
        storage.on_hub_saved({
            let hub_saved = hub_saved.clone();
            move |case| drop(hub_saved.send(*case))
        });
        let reopened = Arc::new(watch::Sender::new(storage.group.generation()));
        let access = Arc::new(watch::Sender::new(registry.access_epoch()));
        storage.on_case_changed({
            let changes = changes.clone();
            // No session listening is no error: nobody needs telling.
            move |change| drop(changes.send(*change))
        });
        storage.on_reopened({
            let reopened = reopened.clone();
            move |generation| {
                reopened.send_replace(*generation);
            }
        });
        registry.on_access_changed({
            let access = access.clone();
            // Epochs arrive in order (the registry calls its hooks under its write lock); the
            // sessions read the epoch itself from the registry, this only wakes them.
            move |epoch| {
                access.send_replace(*epoch);
            }
        });
        // A reopen or an access change between the first reads and the hooks is not missed.
        reopened.send_replace(storage.group.generation());
        access.send_replace(registry.access_epoch());
        Arc::new(CoreDriver {
            group: GroupCommitDriver::new(storage.group.clone()),
            changes,
            hub_saved,
            reopened,
            access,
        })
    }

    /// Wait until the write with this ticket is on disk (see [`GroupCommitDriver::durable`]).
    pub async fn durable(&self, ticket: u64) -> Result<(), StoreError> {
        self.group.durable(ticket).await
    }

    /// Every case the trust hub acknowledged more of, from now on
    /// ([`ServerStorage::announce_hub_saved`]); a receiver that lags misses some (each device
    /// hears again at its next `Saved` of the case).
    pub fn hub_saved(&self) -> broadcast::Receiver<CaseId> {
        self.hub_saved.subscribe()
    }

    /// Every change announced from now on ([`ServerStorage::announce`]). A receiver that falls
    /// more than a few thousand behind is told it lagged, and the changes it missed are gone.
    pub fn case_changes(&self) -> broadcast::Receiver<CaseChanged> {
        self.changes.subscribe()
    }

    /// The store's generation, changed by each reopen after a disk error
    /// ([`ServerStorage::recover`]): a sync connection opened before one holds sync states for
    /// documents the store may have lost, and must end.
    pub fn reopened(&self) -> watch::Receiver<u64> {
        self.reopened.subscribe()
    }

    /// Changed by every change of who may sync what ([`Registry::access_epoch`]).
    pub fn access_changes(&self) -> watch::Receiver<u64> {
        self.access.subscribe()
    }
}

#[cfg(test)]
mod tests;
