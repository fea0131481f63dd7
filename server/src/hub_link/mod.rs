//! A borough server's link to the trust hub: the borough is a client of the hub, running the
//! same sync session a device runs (client-core's [`ClientSession`]) over the borough's own store.
//!
//! - [`membership`]: what joining the hub gave the borough (its id there, its link certificate
//!   and key, the hub's CA and address), kept sealed in the borough's store; [`join`] does the
//!   enrolment exchange with the one-time code the hub's administrator issued.
//! - `host` (private): the session's documents. They are private copies of the borough's
//!   cases, never the open cases devices sync: the session commits what the hub sends into a
//!   document before the borough stores it, and a device must never be sent or acknowledged a
//!   change the borough's disk does not hold.
//! - [`LinkCore`]: one link session without sockets or a clock: frames and announcements in,
//!   frames out with the borough's group-commit ticket to wait for before they leave. The
//!   driver and the simulation test both run it.
//! - `driver` (private): the link's task: connect, send the borough's roster (its teams and
//!   every device it enrolled, so the hub can check who wrote what it relays), sync every case,
//!   push each change a device makes, reconnect with backoff when the hub cannot be reached.
//!   Case data leaves only once the audit record of its going is on disk, as for a device.
//!
//! What "saved" means at each hop: a device's change is acknowledged by the borough after the
//! borough's fsync, as always; the hub's `Saved` for the link, after the hub's fsync, is recorded
//! per case ([`acked_heads`]), and `polyphony-server hub status` counts the cases whose every
//! change the hub holds.
//!
//! [`ClientSession`]: polyphony_core::sync::ClientSession

mod driver;
pub mod files;
mod host;
pub mod keep;
mod link;
pub mod membership;
pub mod transfer;

pub use driver::{run, LinkState, LinkStatus, LinkTimes};
pub use keep::{restore, RecoveryKey, Restored, Safekeeping};
pub use link::{Batch, LinkCore, LinkError};
pub use membership::{join, HubMembership};

use std::collections::HashMap;

use automerge::ChangeHash;
use polyphony_core::store::{Store, StoreError};
use polyphony_core::sync::{Roster, RosterDevice, TeamInfo};
use polyphony_core::CaseId;

use crate::registry::{Registry, RegistryError};

/// The connection id the link's own writes are announced with, so the link does not send the
/// hub back what it just received from it. The listener numbers connections from 1.
pub const LINK_ORIGIN: u64 = 0;

/// Store namespace: case id → the heads the hub last said it holds durably (those known here).
/// Public so a test can read it from a store's durable state alone; read it with [`acked_heads`].
pub const NS_ACKED: &str = "hub.acked";

/// The heads of `case` the hub last acknowledged (after its fsync), if it ever did.
pub fn acked_heads(
    store: &dyn Store,
    case: &CaseId,
) -> Result<Option<Vec<ChangeHash>>, StoreError> {
    Ok(store
        .get_meta(NS_ACKED, &case.to_string())?
        .map(|b| polyphony_core::sync::decode_heads(&b)))
}

/// Record that the hub holds `heads` of `case` durably.
pub(crate) fn set_acked_heads(
    store: &dyn Store,
    case: &CaseId,
    heads: &[ChangeHash],
) -> Result<(), StoreError> {
    store.put_meta(
        NS_ACKED,
        &case.to_string(),
        &polyphony_core::sync::encode_heads(heads),
    )
}

/// Forget every acknowledgement of a hub: this borough joined another hub (or the same one as
/// another borough), whose `Saved` are the only ones that count from now on.
pub fn forget_acked(store: &dyn Store) -> Result<(), StoreError> {
    for (key, _) in store.scan_meta(NS_ACKED)? {
        store.delete_meta(NS_ACKED, &key)?;
    }
    Ok(())
}

/// Whether the hub holds every change of a document whose heads are `ours`: each of our heads is
/// one the hub acknowledged.
pub fn on_hub(ours: &[ChangeHash], acked: Option<&[ChangeHash]>) -> bool {
    acked.is_some_and(|acked| ours.iter().all(|h| acked.contains(h)))
}

/// The borough's roster for the hub: its teams, and every device it ever enrolled (whatever its
/// status: a revoked device's old changes are still relayed) with its practitioner's name.
fn roster_of(registry: &Registry) -> Result<Roster, RegistryError> {
    let teams = registry
        .teams()?
        .into_iter()
        .filter(|t| t.borough.is_none())
        .map(|t| TeamInfo {
            id: t.id,
            name: t.name,
        })
        .collect();
    let names: HashMap<_, _> = registry
        .practitioners()?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    let devices = registry
        .devices()?
        .into_iter()
        .filter_map(|d| {
            Some(RosterDevice {
                device: d.id,
                practitioner: d.practitioner,
                practitioner_name: names.get(&d.practitioner)?.clone(),
            })
        })
        .collect();
    Ok(Roster { teams, devices })
}
