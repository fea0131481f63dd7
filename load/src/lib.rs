//! # polyphony-load
//!
//! The load generator behind `docs/BENCHMARKS.md`: it starts (or targets) a borough server, enrols
//! simulated devices for real, and runs the workloads of issue 8, each against the in-process lower
//! bound on the same documents. The binary `polyphony-load` only parses arguments and prints; the
//! workloads live here so the smoke test can run them small.
//!
//! - [`caseload`]: care-record-shaped documents written through the real record API.
//! - [`device`]: a simulated device (real enrolment, real QUIC sync, cases in memory).
//! - [`server`]: the server under test (child process, in-process, or already running).
//! - [`lower_bound`]: the same sync in one process with no network and no disk.
//! - [`memory`]: resident memory from `/proc`.
//! - [`workload`]: A (first sync), B (reconnect), C (morning), D (memory).
//! - [`soak`]: SIGKILLs of the server and of `polyphony` device processes during live syncs, with
//!   a check after each that nothing acknowledged or saved was lost (run by hand, not in CI).
//!
//! Errors are `anyhow` throughout: this is a measuring tool, and every failure ends the run with its
//! context.

pub mod caseload;
pub mod device;
pub mod lower_bound;
pub mod memory;
pub mod server;
pub mod soak;
pub mod workload;
