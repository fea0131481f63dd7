//! The lower bound: the same automerge sync, in one process, on one thread, with no network, no
//! disk, no validation and no encryption. Two documents trade sync messages until neither has
//! anything to say. Nothing real can be faster than this, so our times are reported as a ratio to
//! it.

use std::time::{Duration, Instant};

use anyhow::Result;
use automerge::sync::{State, SyncDoc};
use automerge::AutoCommit;

/// Trade sync messages between `a` and `b` until both are idle.
pub fn sync_pair(
    a: &mut AutoCommit,
    sa: &mut State,
    b: &mut AutoCommit,
    sb: &mut State,
) -> Result<()> {
    loop {
        let mut moved = false;
        if let Some(m) = a.sync().generate_sync_message(sa) {
            b.sync().receive_sync_message(sb, m)?;
            moved = true;
        }
        if let Some(m) = b.sync().generate_sync_message(sb) {
            a.sync().receive_sync_message(sa, m)?;
            moved = true;
        }
        if !moved {
            return Ok(());
        }
    }
}

/// A saved sync state as the app keeps it between sessions (encoded, then decoded).
pub fn saved(state: &State) -> State {
    State::decode(&state.encode()).unwrap_or_default()
}

/// What the floor cost: wall time, and CPU time of the one thread that ran it (which, unlike wall
/// time, does not depend on what else the machine is doing).
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    /// Wall time.
    pub wall: Duration,
    /// CPU seconds of the thread.
    pub cpu_s: f64,
}

fn measure(f: impl FnOnce() -> Result<()>) -> Result<Floor> {
    let cpu = crate::memory::thread_cpu_s().unwrap_or(0.0);
    let started = Instant::now();
    f()?;
    Ok(Floor {
        wall: started.elapsed(),
        cpu_s: crate::memory::thread_cpu_s().unwrap_or(0.0) - cpu,
    })
}

/// Workload A's floor: every case from the first device to an empty server document, then from
/// the server to an empty second device.
pub fn first_sync<'a>(docs: impl Iterator<Item = &'a AutoCommit>) -> Result<Floor> {
    let sources: Vec<AutoCommit> = docs.cloned().collect();
    measure(|| {
        for mut a in sources {
            let mut s = AutoCommit::new();
            let mut b = AutoCommit::new();
            sync_pair(&mut a, &mut State::new(), &mut s, &mut State::new())?;
            sync_pair(&mut s, &mut State::new(), &mut b, &mut State::new())?;
        }
        Ok(())
    })
}

/// A device's copy and the server's copy of one case, in sync, with the saved states of both.
pub struct Pair {
    /// The device's document.
    pub device: AutoCommit,
    device_state: State,
    server: AutoCommit,
    server_state: State,
}

impl Pair {
    /// Sync a fresh server copy from `device` and keep the states, as after a first sync.
    pub fn synced(device: &AutoCommit) -> Result<Pair> {
        let mut p = Pair {
            device: device.clone(),
            device_state: State::new(),
            server: AutoCommit::new(),
            server_state: State::new(),
        };
        sync_pair(
            &mut p.device,
            &mut p.device_state,
            &mut p.server,
            &mut p.server_state,
        )?;
        p.device_state = saved(&p.device_state);
        p.server_state = State::new();
        Ok(p)
    }
}

/// Workload B's floor: reconnect every pair (the device with its saved state, the server with a
/// fresh one per session, as ours) and sync until idle.
pub fn reconnect(pairs: &mut [Pair]) -> Result<Floor> {
    measure(|| {
        for p in pairs {
            sync_pair(
                &mut p.device,
                &mut p.device_state,
                &mut p.server,
                &mut p.server_state,
            )?;
        }
        Ok(())
    })
}
