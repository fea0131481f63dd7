//! Seeded ids and a stepped clock, for the deterministic simulation test.
//!
//! Every id in Polyphony is random and every change carries the time it was made, so two runs of
//! the same history produce different change hashes, and automerge's sync messages (Bloom filters
//! over those hashes) differ with them: a seed could not replay its history. The simulation test
//! (`tests/tests/simulation.rs`) calls [`seed_this_thread`] so that, on its thread only, ids come
//! from a generator seeded by the run's seed and the record's clock starts at a fixed instant and
//! advances one second per reading. Nothing else changes: every other thread, and every program
//! that never calls it, draws ids from the operating system and reads the real clock.

use std::cell::RefCell;

/// 2026-01-01T00:00:00Z in milliseconds: where a seeded clock starts.
const SEEDED_EPOCH_MS: i64 = 1_767_225_600_000;

struct Source {
    /// splitmix64 state.
    state: u64,
    /// The next reading of the clock, in milliseconds since the Unix epoch.
    clock_ms: i64,
}

impl Source {
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

thread_local! {
    static SOURCE: RefCell<Option<Source>> = const { RefCell::new(None) };
}

/// From now on, on this thread, draw ids from a generator seeded with `seed` and read the record's
/// clock from a fixed start. For the simulation test only.
pub fn seed_this_thread(seed: u64) {
    SOURCE.with(|s| {
        *s.borrow_mut() = Some(Source {
            state: seed,
            clock_ms: SEEDED_EPOCH_MS,
        })
    });
}

/// Back to random ids and the real clock on this thread.
pub fn unseed_this_thread() {
    SOURCE.with(|s| *s.borrow_mut() = None);
}

/// A new random (version 4) UUID: seeded on a seeded thread, from the operating system otherwise.
pub(crate) fn random_uuid() -> uuid::Uuid {
    let seeded = SOURCE.with(|s| {
        s.borrow_mut().as_mut().map(|src| {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&src.next().to_le_bytes());
            bytes[8..].copy_from_slice(&src.next().to_le_bytes());
            uuid::Builder::from_random_bytes(bytes).into_uuid()
        })
    });
    seeded.unwrap_or_else(uuid::Uuid::new_v4)
}

/// The seeded clock's next reading (milliseconds since the Unix epoch), or `None` on a thread
/// that reads the real clock.
pub(crate) fn seeded_now_ms() -> Option<i64> {
    SOURCE.with(|s| {
        s.borrow_mut().as_mut().map(|src| {
            let t = src.clock_ms;
            src.clock_ms += 1_000;
            t
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_thread_repeats_its_ids_and_an_unseeded_one_does_not() {
        seed_this_thread(7);
        let a: Vec<uuid::Uuid> = (0..3).map(|_| random_uuid()).collect();
        let t = seeded_now_ms();
        seed_this_thread(7);
        let b: Vec<uuid::Uuid> = (0..3).map(|_| random_uuid()).collect();
        assert_eq!(a, b);
        assert_eq!(seeded_now_ms(), t);
        assert_eq!(a[0].get_version_num(), 4);
        unseed_this_thread();
        assert_eq!(seeded_now_ms(), None);
        assert_ne!(random_uuid(), random_uuid());
    }
}
