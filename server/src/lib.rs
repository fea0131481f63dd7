//! # polyphony-server
//!
//! The borough server: a peer that keeps every case it serves, enforces who may sync what, and
//! audits every access. It embeds `polyphony-core` (the same record model, store and protocol the
//! devices use) and can itself be embedded in another tokio program through [`Server`].
//!
//! - [`registry`]: teams, practitioners, devices, enrolment codes, and which team owns each case.
//! - [`audit`]: the append-only, hash-chained audit log.
//! - [`data_dir`]: the data directory, its key file and store, the CA, registry and audit log in it.
//! - [`storage`]: cases on disk, group commit (one fsync acknowledges many changes), the in-memory
//!   cache of open cases.
//! - [`reopen`]: the store behind a handle that reopens it after a disk error (sled's sticky error).
//! - [`listener`]: the QUIC endpoint, connection limits, graceful shutdown; enrolment of new
//!   devices (a private module beside it).
//! - `admission` (private): whether the device behind a sync connection may start a session, from
//!   its certificate and the registry.
//! - [`session`]: one device's sync session: access control, checked writes, live push; on the
//!   trust hub, the same session serves a borough server's link.
//! - [`hub_link`]: a borough server's link to the trust hub (the borough as the hub's client).
//! - [`admin`]: administration through a local socket while serving, or directly when not.
//! - [`driver`]: storage's and the registry's side in tokio's terms: awaiting durability, and
//!   their changes as channels the sessions await.
//!
//! The core (registry, audit log, storage, reopen, limits, admission, the session's protocol) is
//! synchronous and free of any runtime. Only the I/O drivers touch tokio or quinn: [`listener`]
//! (and the enrolment exchange beside it), the session's connection driver ([`session::serve`]),
//! the admin socket ([`admin::AdminSocket`]), [`driver`], and the `polyphony-server` command's
//! `main`.

pub mod admin;
mod admission;
pub mod audit;
pub mod config;
pub mod data_dir;
pub mod driver;
mod enrolment;
mod hooks;
pub mod hub_link;
pub mod limits;
pub mod listener;
pub mod registry;
pub mod reopen;
pub mod session;
pub mod storage;

pub use config::{ServerConfig, ServerRole};
pub use listener::{Server, ServerHandle};
