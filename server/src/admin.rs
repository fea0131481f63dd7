//! Administration: teams, practitioners, enrolment codes, revocation, case moves and the audit log,
//! while the server is serving or when it is not.
//!
//! sled locks its files, so while the server runs no second process can open the store. The running
//! server therefore serves administration itself, on a Unix socket in its data directory
//! ([`crate::ServerConfig::admin_socket_path`], mode 0600, and peers must run as the same user):
//! one JSON [`AdminRequest`] per line in, one JSON [`AdminResponse`] per line out. When the server is
//! not running, the `polyphony-server` command opens the store itself and calls the same
//! [`Admin::handle`], so both paths run the same code.
//!
//! Every change made here is written to the audit log (actor [`Actor::Admin`]) and flushed before
//! success is reported. Listings are not audited: they show who works where, never case content.
//! The trust hub's figures do read case content, and record each case they read
//! ([`AdminRequest::Figures`]).
//!
//! The socket ([`serve_admin`], [`AdminSocket`], and the client side, [`request`]) is an I/O driver
//! of its own, like the listener, in a submodule: the only part of administration that uses tokio;
//! [`Admin::handle`] and the rest of this module do not.

mod figures;
mod hub;
mod socket;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use polyphony_core::ids::BadId;
use polyphony_core::model::StaffRole;
use polyphony_core::{CaseId, DeviceId, PractitionerId, TeamId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::audit::{Actor, AuditAction, AuditError, AuditEvent, AuditLog};
use crate::registry::{rfc3339, Device, DeviceStatus, Practitioner, Registry, RegistryError, Team};

pub use figures::{BoroughFigures, FiguresBy, TeamFigures, TrustFigures, READ_FOR_FIGURES};
pub use hub::{BoroughView, HubStatus, IssuedBoroughCode};
pub use socket::{request, serve_admin, AdminSocket, MAX_REQUEST_LINE};

/// What can go wrong in administration.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No server is listening on the admin socket (the file is absent, or left over from a server
    /// that stopped). The caller may open the store directly instead.
    #[error("no Polyphony server is running with the admin socket {}", path.display())]
    NotRunning {
        /// The socket path tried.
        path: PathBuf,
    },
    /// The socket is there but cannot be used (permissions, a path too long for a socket).
    #[error("cannot use the admin socket {}: {source}; run this command as the user that runs the server", path.display())]
    Unreachable {
        /// The socket path.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The exchange with the server failed part-way.
    #[error(
        "the admin connection to the server failed: {0}; check the server's log and try again"
    )]
    Io(#[from] io::Error),
    /// The server's answer could not be understood.
    #[error("the server gave an answer this command cannot read ({0}): are the server and this command the same version?")]
    Protocol(String),
    /// The registry refused the change or could not be read.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The audit log could not be read or written.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// An id given as text is not well formed.
    #[error("{0}")]
    BadId(String),
    /// A value given as text is not one the request takes (a role).
    #[error("{0}")]
    BadValue(String),
    /// The request is not for a server in this role (a device's enrolment on the trust hub, a
    /// borough's on a borough server).
    #[error("{0}")]
    WrongRole(String),
    /// The store could not be read or written.
    #[error("the server's store: {0}")]
    Store(#[from] polyphony_core::store::StoreError),
    /// A change was made but could not be written to the audit log.
    #[error("{done}, but it could not be recorded in the audit log: {source}. Check the server's disk and log")]
    NotAudited {
        /// What was done.
        done: String,
        /// Why the audit record failed.
        source: AuditError,
    },
}

fn parse_role(role: &str) -> Result<StaffRole, AdminError> {
    role.parse()
        .map_err(|e: polyphony_core::model::ModelError| AdminError::BadValue(e.to_string()))
}

/// One administration request: one line of JSON on the admin socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    /// Add a team. Answers with the [`Team`].
    TeamAdd {
        /// Its name, unique ignoring case.
        name: String,
    },
    /// List the teams. Answers with `[Team]`.
    Teams,
    /// Add a practitioner to a team. Answers with a [`PractitionerView`].
    PractitionerAdd {
        /// Their name.
        name: String,
        /// The team's name or id.
        team: String,
        /// Their role (practitioner when none is given).
        #[serde(default)]
        role: Option<String>,
    },
    /// Take a practitioner out of one team (their devices lose that team's cases at once), or,
    /// with no team, out of every team with every device of theirs revoked. Answers with a
    /// [`PractitionerView`].
    PractitionerRemove {
        /// Their name or id.
        practitioner: String,
        /// The team's name or id; none for every team and every device.
        #[serde(default)]
        team: Option<String>,
        /// With no team: refuse their devices at once instead of letting them upload first.
        #[serde(default)]
        now: bool,
    },
    /// Set what a practitioner is: practitioner, peer support worker, psychiatrist or
    /// administrator. Their teams' devices receive it with the team list. Answers with a
    /// [`PractitionerView`].
    PractitionerRole {
        /// Their name or id.
        practitioner: String,
        /// The role (checked by the server, so every client gets the same message).
        role: String,
    },
    /// List the practitioners. Answers with `[PractitionerView]`.
    Practitioners,
    /// Issue an enrolment code for a practitioner's new device. Answers with an [`IssuedCode`].
    Enrol {
        /// The practitioner's name or id.
        practitioner: String,
    },
    /// Revoke a device. Answers with a [`DeviceView`].
    Revoke {
        /// The device's id, as text (checked by the server, so every client gets the same message).
        device: String,
        /// Refuse it at once, instead of letting it upload what it holds and then wipe.
        #[serde(default)]
        now: bool,
    },
    /// List the devices. Answers with `[DeviceView]`.
    Devices,
    /// Read or verify the audit log. Answers with `[AuditRecord]`, or a [`crate::audit::VerifyReport`]
    /// when `verify` is set (an error naming the first bad entry if the chain is broken).
    Audit {
        /// Only the records about this case.
        #[serde(default)]
        case: Option<CaseId>,
        /// Verify the whole chain instead of listing records.
        #[serde(default)]
        verify: bool,
    },
    /// The audit log's head now, signed by the borough CA, to keep somewhere the server's disk is
    /// not (see [`polyphony_core::identity::AuditHead`]). Answers with the head.
    AuditHead,
    /// Verify the whole chain, and that it still holds each anchored head (exported earlier, or
    /// kept by a device): a log cut short or an older copy fails. Answers with a
    /// [`crate::audit::VerifyReport`], or an error naming the first anchor it does not hold.
    AuditAnchors {
        /// Heads signed by this borough's CA.
        anchors: Vec<polyphony_core::identity::AuditHead>,
    },
    /// Move a case to another team. Answers with a [`CaseMoved`].
    CaseMove {
        /// The case.
        case: CaseId,
        /// The team's name or id.
        team: String,
    },
    /// On a borough server that joined the trust hub: hand a case over to another borough's
    /// team (the person moved). Kept until the link carries it to the hub, at once if it is up.
    /// Answers with the [`crate::hub_link::transfer::PendingTransfer`].
    CaseTransfer {
        /// The case: one of this borough's own teams'.
        case: CaseId,
        /// The receiving borough, by its name on the hub (or its id).
        borough: String,
        /// The receiving team, by name (or id).
        team: String,
    },
    /// On the trust hub: add a borough. Answers with a [`BoroughView`].
    BoroughAdd {
        /// Its name, unique ignoring case.
        name: String,
    },
    /// On the trust hub: list the boroughs. Answers with `[BoroughView]`.
    Boroughs,
    /// On the trust hub: issue a one-time code for a borough server to join. Answers with an
    /// [`IssuedBoroughCode`].
    BoroughEnrol {
        /// The borough's name or id.
        borough: String,
    },
    /// On the trust hub: revoke a borough, at once (its live link is closed; its cases stay on
    /// the hub). Answers with a [`BoroughView`].
    BoroughRevoke {
        /// The borough's name or id.
        borough: String,
    },
    /// On a borough server: keep what joining the trust hub gave it (the `polyphony-server hub
    /// join` command did the exchange); the link starts at once. Answers with a [`HubStatus`].
    HubJoined {
        /// The membership.
        membership: crate::hub_link::HubMembership,
    },
    /// On a borough server: whether it joined a hub, the link's state, and how many of its
    /// cases the hub holds every change of. Answers with a [`HubStatus`].
    HubStatus,
    /// On the trust hub: the fidelity figures of each borough, and of each of its teams, over
    /// the cases the hub holds, with the same definitions as a device's. Reads every such case,
    /// and records each read in the audit log. Answers with a [`TrustFigures`].
    Figures {
        /// Per borough only, or per team too (the default).
        #[serde(default)]
        by: FiguresBy,
    },
}

impl AdminRequest {
    /// Whether the request changes anything (and so is audited and flushed): the trust-wide
    /// figures change no record, but write an audit record for each case they read.
    pub fn changes_anything(&self) -> bool {
        self.for_a_borough_server()
            || matches!(
                self,
                AdminRequest::BoroughAdd { .. }
                    | AdminRequest::BoroughEnrol { .. }
                    | AdminRequest::BoroughRevoke { .. }
                    | AdminRequest::HubJoined { .. }
                    | AdminRequest::Figures { .. }
            )
    }

    /// Whether the request changes a borough server's own teams, practitioners, devices or case
    /// ownership: refused on the trust hub, whose teams and cases are its boroughs'.
    pub fn for_a_borough_server(&self) -> bool {
        matches!(
            self,
            AdminRequest::TeamAdd { .. }
                | AdminRequest::PractitionerAdd { .. }
                | AdminRequest::PractitionerRemove { .. }
                | AdminRequest::PractitionerRole { .. }
                | AdminRequest::Enrol { .. }
                | AdminRequest::Revoke { .. }
                | AdminRequest::CaseMove { .. }
                | AdminRequest::CaseTransfer { .. }
        )
    }
}

/// The answer to one request: one line of JSON on the admin socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AdminResponse {
    /// Done; `value` is what the request's documentation says it answers with.
    Ok {
        /// The result.
        value: serde_json::Value,
    },
    /// Refused or failed; `message` says why and what to do, in one line.
    Err {
        /// Why.
        message: String,
    },
}

/// A team named in an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamRef {
    /// Its id.
    pub id: TeamId,
    /// Its name.
    pub name: String,
}

/// A practitioner with their teams' names, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PractitionerView {
    /// Their id.
    pub id: PractitionerId,
    /// Their name.
    pub name: String,
    /// Their role.
    pub role: StaffRole,
    /// Their teams.
    pub teams: Vec<TeamRef>,
    /// When they were added (RFC 3339).
    pub created_at: String,
}

/// A device with its practitioner's name, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceView {
    /// The device.
    pub device: Device,
    /// Its practitioner's name.
    pub practitioner_name: String,
}

/// A new enrolment code. The code is shown this once: the server keeps only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCode {
    /// The code to give the practitioner.
    pub code: String,
    /// Who it enrols a device for.
    pub practitioner: PractitionerId,
    /// Their name.
    pub practitioner_name: String,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
}

/// A case that moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseMoved {
    /// The case.
    pub case: CaseId,
    /// The team it belonged to.
    pub from: TeamRef,
    /// The team it belongs to now.
    pub to: TeamRef,
}

/// The administration logic, over the server's registry and audit log.
pub struct Admin {
    registry: Arc<Registry>,
    audit: Arc<AuditLog>,
    ca_fingerprint: [u8; 32],
    enrolment_ttl: time::Duration,
    ca: Option<Arc<polyphony_core::identity::BoroughCa>>,
    role: crate::config::ServerRole,
    storage: Option<Arc<crate::storage::ServerStorage>>,
    link: Option<Arc<crate::hub_link::LinkStatus>>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// Administration over `registry` and `audit`. Codes it issues name the borough CA with
    /// `ca_fingerprint` and are valid for `enrolment_ttl`.
    pub fn new(
        registry: Arc<Registry>,
        audit: Arc<AuditLog>,
        ca_fingerprint: [u8; 32],
        enrolment_ttl: time::Duration,
    ) -> Self {
        Self {
            registry,
            audit,
            ca_fingerprint,
            enrolment_ttl,
            ca: None,
            role: crate::config::ServerRole::Borough,
            storage: None,
            link: None,
        }
    }

    /// Administration for a server in `role`: a hub takes borough requests and refuses device
    /// enrolment; a borough server the reverse.
    pub fn with_role(mut self, role: crate::config::ServerRole) -> Self {
        self.role = role;
        self
    }

    /// The server's cases, for the hub requests that read or keep something in the store.
    pub fn with_storage(mut self, storage: Arc<crate::storage::ServerStorage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// The running link to the trust hub, to report on and to start once joined.
    pub fn with_link(mut self, link: Arc<crate::hub_link::LinkStatus>) -> Self {
        self.link = Some(link);
        self
    }

    /// Let the administrator export the audit head signed by the borough CA
    /// ([`AdminRequest::AuditHead`]).
    pub fn with_ca(mut self, ca: Arc<polyphony_core::identity::BoroughCa>) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Carry out one request. Blocks on the store: call it from `spawn_blocking` in async code.
    pub fn handle(&self, req: AdminRequest) -> AdminResponse {
        let changes = req.changes_anything();
        let result = self.run(req).and_then(|value| {
            if changes {
                self.registry.flush()?;
            }
            Ok(value)
        });
        match result {
            Ok(value) => AdminResponse::Ok { value },
            Err(e) => {
                tracing::info!(error = %e, "admin request refused");
                AdminResponse::Err {
                    message: e.to_string(),
                }
            }
        }
    }

    fn run(&self, req: AdminRequest) -> Result<serde_json::Value, AdminError> {
        let borough_only = req.for_a_borough_server();
        if borough_only && self.role == crate::config::ServerRole::Hub {
            // A hub's teams and cases are its boroughs': changing them here would send a
            // borough's case to another (moving a case between boroughs is a transfer, with its
            // own safeguards) or break a borough's link.
            return Err(AdminError::WrongRole(
                "this is the trust hub: teams, practitioners, devices and case moves are managed on each borough server (a borough joins with `borough enrol`)".into(),
            ));
        }
        match req {
            AdminRequest::TeamAdd { name } => self.team_add(&name),
            AdminRequest::Teams => json(&self.registry.teams()?),
            AdminRequest::PractitionerAdd { name, team, role } => {
                self.practitioner_add(&name, &team, role.as_deref())
            }
            AdminRequest::PractitionerRemove {
                practitioner,
                team,
                now,
            } => self.practitioner_remove(&practitioner, team.as_deref(), now),
            AdminRequest::PractitionerRole { practitioner, role } => {
                self.practitioner_role(&practitioner, &role)
            }
            AdminRequest::Practitioners => self.practitioners(),
            AdminRequest::Enrol { practitioner } => self.enrol(&practitioner),
            AdminRequest::Revoke { device, now } => self.revoke(&device, now),
            AdminRequest::Devices => self.devices(),
            AdminRequest::Audit { case, verify } => {
                if verify {
                    json(&self.audit.verify()?)
                } else {
                    json(&self.audit.entries(case)?)
                }
            }
            AdminRequest::AuditHead => self.audit_head(),
            AdminRequest::AuditAnchors { anchors } => self.audit_anchors(&anchors),
            AdminRequest::CaseMove { case, team } => self.case_move(case, &team),
            AdminRequest::CaseTransfer {
                case,
                borough,
                team,
            } => self.case_transfer(case, &borough, &team),
            AdminRequest::BoroughAdd { name } => self.borough_add(&name),
            AdminRequest::Boroughs => self.boroughs(),
            AdminRequest::BoroughEnrol { borough } => self.borough_enrol(&borough),
            AdminRequest::BoroughRevoke { borough } => self.borough_revoke(&borough),
            AdminRequest::HubJoined { membership } => self.hub_joined(membership),
            AdminRequest::HubStatus => self.hub_status(),
            AdminRequest::Figures { by } => self.figures(by),
        }
    }

    fn team_add(&self, name: &str) -> Result<serde_json::Value, AdminError> {
        let team = self.registry.add_team(name)?;
        self.audit(
            AuditAction::TeamAdded,
            None,
            format!("team {} '{}'", team.id, team.name),
            || format!("team '{}' was added", team.name),
        )?;
        json(&team)
    }

    fn practitioner_add(
        &self,
        name: &str,
        team: &str,
        role: Option<&str>,
    ) -> Result<serde_json::Value, AdminError> {
        let role = role.map(parse_role).transpose()?;
        let r = &self.registry;
        let team = r.team(team)?;
        let mut p = r.add_practitioner(name, team.id)?;
        if let Some(role) = role {
            p = r.set_practitioner_role(&p.id, role)?;
        }
        self.audit(
            AuditAction::PractitionerAdded,
            None,
            format!(
                "practitioner {} '{}' in team {}, role {}",
                p.id, p.name, team.id, p.role
            ),
            || format!("practitioner '{}' was added", p.name),
        )?;
        json(&self.practitioner_view(&p, &[team])?)
    }

    fn practitioner_role(
        &self,
        practitioner: &str,
        role: &str,
    ) -> Result<serde_json::Value, AdminError> {
        let role = parse_role(role)?;
        let r = &self.registry;
        let before = r.practitioner_by(practitioner)?;
        let p = r.set_practitioner_role(&before.id, role)?;
        self.audit(
            AuditAction::PractitionerRoleSet,
            None,
            format!(
                "practitioner {} role {} (was {})",
                p.id, p.role, before.role
            ),
            || format!("practitioner '{}' is now a {}", p.name, p.role.label()),
        )?;
        json(&self.practitioner_view(&p, &[])?)
    }

    /// Out of one team, or, with none, out of every team with their devices revoked.
    fn practitioner_remove(
        &self,
        practitioner: &str,
        team: Option<&str>,
        now: bool,
    ) -> Result<serde_json::Value, AdminError> {
        let r = &self.registry;
        let p = r.practitioner_by(practitioner)?;
        let teams = r.teams()?;
        let p = match team {
            Some(team) => self.remove_from_team(&p, team)?,
            None => self.remove_from_every_team(&p, now)?,
        };
        json(&self.practitioner_view(&p, &teams)?)
    }

    /// Take `p` out of `team`; answers with them as they are after.
    fn remove_from_team(&self, p: &Practitioner, team: &str) -> Result<Practitioner, AdminError> {
        let r = &self.registry;
        let team = r.team(team)?;
        let after = r.remove_practitioner_from_team(&p.id, team.id)?;
        self.audit(
            AuditAction::PractitionerRemoved,
            None,
            format!("practitioner {} left team {}", p.id, team.id),
            || format!("'{}' left team '{}'", p.name, team.name),
        )?;
        Ok(after)
    }

    /// Take `p` out of every team and revoke their devices (at once with `now`); answers with them
    /// as they are after.
    fn remove_from_every_team(
        &self,
        p: &Practitioner,
        now: bool,
    ) -> Result<Practitioner, AdminError> {
        let r = &self.registry;
        let mut after = p.clone();
        for t in &p.teams {
            after = r.remove_practitioner_from_team(&p.id, *t)?;
        }
        let target = if now {
            DeviceStatus::Revoked
        } else {
            DeviceStatus::Revoking
        };
        let mut revoked = Vec::new();
        for d in r.practitioner_devices(&p.id)? {
            if d.status == DeviceStatus::Active || (now && d.status == DeviceStatus::Revoking) {
                r.set_device_status(&d.id, target)?;
                revoked.push(d.id.to_string());
            }
        }
        self.audit(
            AuditAction::PractitionerRemoved,
            None,
            format!(
                "practitioner {} removed from every team; devices {} ({})",
                p.id,
                if now { "revoked at once" } else { "revoking" },
                revoked.join(", ")
            ),
            || format!("'{}' was removed from every team", p.name),
        )?;
        Ok(after)
    }

    fn practitioners(&self) -> Result<serde_json::Value, AdminError> {
        let r = &self.registry;
        let teams = r.teams()?;
        let views = r
            .practitioners()?
            .iter()
            .map(|p| self.practitioner_view(p, &teams))
            .collect::<Result<Vec<_>, _>>()?;
        json(&views)
    }

    fn enrol(&self, practitioner: &str) -> Result<serde_json::Value, AdminError> {
        let r = &self.registry;
        let p = r.practitioner_by(practitioner)?;
        let code = r.create_enrolment(p.id, self.ca_fingerprint, self.enrolment_ttl)?;
        let expires_at = r
            .enrolment(&code.token_hash())?
            .map(|e| e.expires_at)
            .unwrap_or_else(|| OffsetDateTime::now_utc() + self.enrolment_ttl);
        self.audit(
            AuditAction::EnrolmentIssued,
            None,
            format!(
                "for practitioner {}, valid until {}",
                p.id,
                rfc3339(expires_at)
            ),
            || format!("an enrolment code for '{}' was issued", p.name),
        )?;
        json(&IssuedCode {
            code: code.to_string(),
            practitioner: p.id,
            practitioner_name: p.name,
            expires_at: rfc3339(expires_at),
        })
    }

    fn revoke(&self, device: &str, now: bool) -> Result<serde_json::Value, AdminError> {
        let r = &self.registry;
        let device: DeviceId = device.parse().map_err(|e: BadId| {
            AdminError::BadId(format!(
                "{e}: list the devices and their ids with `polyphony-server devices`"
            ))
        })?;
        let before = r
            .device(&device)?
            .ok_or(RegistryError::DeviceNotFound(device))?;
        let target = if now {
            DeviceStatus::Revoked
        } else {
            DeviceStatus::Revoking
        };
        // Revoking a device again is not an error (a script may retry); asking for a gentle
        // revocation of one already refused outright changes nothing.
        let after = if before.status == DeviceStatus::Revoked {
            before.clone()
        } else {
            r.set_device_status(&device, target)?
        };
        if after.status != before.status {
            let detail = match after.status {
                DeviceStatus::Revoked => format!("device {device} revoked at once"),
                _ => format!(
                    "device {device}: revocation ordered; it may upload what it holds, then is told to wipe"
                ),
            };
            self.audit(AuditAction::Revoke, None, detail, || {
                format!("device {device} is now {}", after.status)
            })?;
        }
        json(&self.device_view(after)?)
    }

    fn devices(&self) -> Result<serde_json::Value, AdminError> {
        let views = self
            .registry
            .devices()?
            .into_iter()
            .map(|d| self.device_view(d))
            .collect::<Result<Vec<_>, _>>()?;
        json(&views)
    }

    fn audit_head(&self) -> Result<serde_json::Value, AdminError> {
        let ca = self.ca.as_ref().ok_or_else(|| {
            AdminError::Protocol("this command has no borough CA to sign with".into())
        })?;
        let (records, hash) = self.audit.head()?;
        let head = polyphony_core::identity::AuditHead::sign(
            ca,
            records,
            &hash,
            &rfc3339(OffsetDateTime::now_utc()),
        )
        .map_err(|e| AdminError::Protocol(e.to_string()))?;
        json(&head)
    }

    fn audit_anchors(
        &self,
        anchors: &[polyphony_core::identity::AuditHead],
    ) -> Result<serde_json::Value, AdminError> {
        let ca = self.ca.as_ref().ok_or_else(|| {
            AdminError::Protocol("this command has no borough CA to check with".into())
        })?;
        let report = self.audit.verify()?;
        for a in anchors {
            a.verify(ca.cert_der()).map_err(|e| {
                AdminError::Protocol(format!(
                    "anchor of {} records (signed {}): {e}",
                    a.records, a.at
                ))
            })?;
        }
        let pairs: Vec<(u64, String)> = anchors
            .iter()
            .map(|a| (a.records, a.hash.clone()))
            .collect();
        self.audit.holds_all(&pairs)?;
        json(&report)
    }

    fn case_move(&self, case: CaseId, team: &str) -> Result<serde_json::Value, AdminError> {
        let r = &self.registry;
        let to = r.team(team)?;
        if let Some(now) = r.case_team(&case)? {
            if r.team_by_id(&now)?.is_some_and(|t| t.borough.is_some()) {
                return Err(AdminError::BadValue(format!(
                    "case {case} was transferred to another borough: only that borough can hand it back, through the trust hub"
                )));
            }
        }
        let from_id = r.move_case(case, to.id)?;
        let from = r
            .team_by_id(&from_id)?
            .ok_or(RegistryError::TeamIdUnknown(from_id))?;
        if from.id != to.id {
            self.audit(
                AuditAction::CaseMoved,
                Some(case),
                format!("from team {} to team {}", from.id, to.id),
                || format!("case {case} moved to '{}'", to.name),
            )?;
            // A borough in a trust hub tells it, so its registry (its grants, its figures)
            // follows.
            if let Some(storage) = self.storage.as_deref() {
                if crate::hub_link::membership::load(&*storage.store)?.is_some() {
                    crate::hub_link::transfer::note_move(&*storage.store, case, to.id)?;
                    if let Some(link) = &self.link {
                        link.transfer_asked();
                    }
                }
            }
        }
        json(&CaseMoved {
            case,
            from: team_ref(&from),
            to: team_ref(&to),
        })
    }

    /// Record an administrator's change; `done` says what was done, for the error if the record
    /// cannot be written (the change has happened by then, and the administrator must know).
    fn audit(
        &self,
        action: AuditAction,
        case: Option<CaseId>,
        detail: String,
        done: impl FnOnce() -> String,
    ) -> Result<(), AdminError> {
        self.audit
            .record(AuditEvent::now(Actor::Admin, action, case, detail))
            .map(|_| ())
            .map_err(|source| AdminError::NotAudited {
                done: done(),
                source,
            })
    }

    fn practitioner_view(
        &self,
        p: &Practitioner,
        known: &[Team],
    ) -> Result<PractitionerView, AdminError> {
        let mut teams = Vec::with_capacity(p.teams.len());
        for id in &p.teams {
            let name = match known.iter().find(|t| t.id == *id) {
                Some(t) => t.name.clone(),
                None => self
                    .registry
                    .team_by_id(id)?
                    .map_or_else(|| "(unknown team)".to_string(), |t| t.name),
            };
            teams.push(TeamRef { id: *id, name });
        }
        Ok(PractitionerView {
            id: p.id,
            name: p.name.clone(),
            role: p.role,
            teams,
            created_at: rfc3339(p.created_at),
        })
    }

    fn device_view(&self, device: Device) -> Result<DeviceView, AdminError> {
        let practitioner_name = self
            .registry
            .practitioner(&device.practitioner)?
            .map_or_else(|| "(unknown practitioner)".to_string(), |p| p.name);
        Ok(DeviceView {
            device,
            practitioner_name,
        })
    }
}

fn team_ref(team: &Team) -> TeamRef {
    TeamRef {
        id: team.id,
        name: team.name.clone(),
    }
}

fn json<T: Serialize>(value: &T) -> Result<serde_json::Value, AdminError> {
    serde_json::to_value(value).map_err(|e| AdminError::Protocol(e.to_string()))
}

#[cfg(test)]
mod tests;
