//! Pieces of the deterministic simulation test (`tests/tests/simulation.rs`).

mod store;

pub use store::{CrashCounts, CrashStore};
