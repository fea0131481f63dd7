//! # polyphony-core
//!
//! The library every Polyphony client embeds, and the borough server too: the server is just another
//! peer that keeps every case it serves.
//!
//! - [`model`]: the case record, one automerge document per person, with a typed API, validation of the
//!   whole document shape, and conflicts surfaced rather than silently resolved.
//! - [`store`]: the local store (a storage trait; sled and in-memory engines), encrypted at rest.
//! - [`sync`]: the sync protocol as a sans-IO state machine and its wire frames.
//! - [`net`]: the QUIC shell that moves the protocol's bytes (quinn + rustls, mutual TLS).
//! - [`identity`]: keys, certificates, the borough CA and enrolment codes.
//! - [`profile`]: a practitioner's device profile, tying the above together for the CLI and the app.
//! - [`determinism`]: seeded ids and clock for the deterministic simulation test.

pub mod determinism;
pub mod export;
pub mod identity;
pub mod ids;
pub mod model;
pub mod net;
pub mod profile;
pub mod store;
pub mod sync;

pub use ids::{BlobHash, BoroughId, CaseId, DeviceId, EntryId, PractitionerId, TeamId};
