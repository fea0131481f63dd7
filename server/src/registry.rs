//! Who may sync what: teams, practitioners, devices, enrolment codes, and which team owns each case.
//!
//! The borough server decides every access from this registry: a device is known by the fingerprint
//! of its certificate, belongs to a practitioner, who belongs to teams, which own cases. It lives in
//! the same sealed store as the cases (meta namespaces, JSON values), so it is encrypted at rest and
//! flushed with them, and there is no second database to back up or keep consistent.
//!
//! Keys are ids only (team, practitioner, device and case ids, certificate fingerprints, hashes of
//! enrolment tokens), never names or clinical text: keys are stored in the clear.
//!
//! On a trust hub the same registry also knows the boroughs, the teams each borough claims and
//! each borough's devices (in `registry/boroughs.rs`); teams then carry their borough.
//!
//! One server process owns the store, so a mutex in [`Registry`] is enough to make each
//! check-then-write atomic (two devices redeeming the same enrolment code at once, two
//! administrators adding the same team). Reads take no lock: each value is read whole.
//!
//! Changes that touch several keys are ordered so that a crash between two writes leaves something
//! safe: an enrolment code is marked used before the device is registered (a crash wastes a code but
//! can never let it enrol twice), and a case's team index is written before its owner record and
//! cleaned after it, and always checked against it (a stale index entry is ignored, a missing one
//! cannot happen).

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use polyphony_core::identity::{hash_enrolment_token, EnrolmentCode};
use polyphony_core::model::{StaffRole, Stored};
use polyphony_core::store::{Store, StoreError};
use polyphony_core::sync::Colleague;
use polyphony_core::{BoroughId, CaseId, DeviceId, PractitionerId, TeamId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::hooks::Hooks;

mod boroughs;

pub use boroughs::{Borough, PendingBoroughEnrolment, RosterEntry};

/// The longest name accepted for a team, practitioner, device or borough, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// Meta namespaces of the registry. Keys in them are ids, never names.
mod ns {
    use polyphony_core::{DeviceId, TeamId};

    /// Team id → [`super::Team`].
    pub(super) const TEAMS: &str = "registry.teams";
    /// Practitioner id → [`super::Practitioner`].
    pub(super) const PRACTITIONERS: &str = "registry.practitioners";
    /// Device id → [`super::Device`].
    pub(super) const DEVICES: &str = "registry.devices";
    /// Certificate fingerprint (hex) → device id: finds the device of a connection quickly.
    pub(super) const DEVICE_CERTS: &str = "registry.device-certs";
    /// Token hash (hex) → [`super::PendingEnrolment`].
    pub(super) const ENROLMENTS: &str = "registry.enrolments";
    /// Case id → [`super::CaseOwner`]: the truth about which team owns a case.
    pub(super) const CASES: &str = "registry.cases";
    /// Device id → the highest offline-read outbox index recorded (duplicates are dropped).
    pub(super) const READS_THROUGH: &str = "registry.reads-through";
    /// On a hub: borough id → [`super::Borough`].
    pub(super) const BOROUGHS: &str = "registry.boroughs";
    /// On a hub: link certificate fingerprint (hex) → borough id: finds the borough of a link.
    pub(super) const BOROUGH_CERTS: &str = "registry.borough-certs";
    /// On a hub: token hash (hex) → [`super::PendingBoroughEnrolment`].
    pub(super) const BOROUGH_ENROLMENTS: &str = "registry.borough-enrolments";
    /// On a hub: device id → [`super::RosterEntry`], the borough whose device it is.
    pub(super) const ROSTER: &str = "registry.roster";
    /// On a hub: practitioner id → the borough whose practitioner they are (a practitioner id
    /// claimed by one borough's roster is refused in another's).
    pub(super) const ROSTER_PRACTITIONERS: &str = "registry.roster-practitioners";

    /// Case id → the accesses that came with a case transferred here from other boroughs
    /// (JSON list of `export::Access`), shown first in the person's access list.
    pub(super) const CARRIED_ACCESS: &str = "registry.carried-access";

    /// Index of the cases of one team (case id → nothing), so a device's cases are found without
    /// reading every case in the borough.
    pub(super) fn team_cases(team: &TeamId) -> String {
        format!("registry.team-cases.{team}")
    }

    /// Cases a device has synced (case id → when first synced).
    pub(super) fn held(device: &DeviceId) -> String {
        format!("registry.held.{device}")
    }

    /// Cases a device was told are no longer its team's (case id → when it was first told).
    pub(super) fn told_moved(device: &DeviceId) -> String {
        format!("registry.told-moved.{device}")
    }
}

/// What can go wrong in the registry, in words an administrator (or a device's user) can act on.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The store refused a read or a write.
    #[error("the registry could not be read or written: {0}")]
    Store(#[from] StoreError),
    /// A stored registry value could not be decoded.
    #[error(
        "the registry entry {what} is damaged ({detail}); restore the server's data from a backup"
    )]
    Corrupt {
        /// Which entry.
        what: String,
        /// What the decoder said.
        detail: String,
    },
    /// A name was empty (or only spaces).
    #[error("a {what} needs a name: give one that is not empty")]
    EmptyName {
        /// What was being named.
        what: &'static str,
    },
    /// A practitioner was to be added under an id another already has.
    #[error("the practitioner id {id} is {existing}'s already")]
    PractitionerIdTaken {
        /// The id.
        id: PractitionerId,
        /// Whose it is.
        existing: String,
    },
    /// A name was too long or held control characters (line breaks, tabs).
    #[error("the {what} name is not usable: {reason}")]
    BadName {
        /// What was being named.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A team with this name (ignoring case) exists already.
    #[error("there is already a team called '{existing}' (id {id}): choose another name, or use that team")]
    TeamExists {
        /// The existing team's name as stored.
        existing: String,
        /// Its id.
        id: TeamId,
    },
    /// No team has this name or id.
    #[error("no team is called '{given}'; known teams: {known}")]
    TeamNotFound {
        /// What was asked for.
        given: String,
        /// The known teams' names, or "none yet (add one with `team add`)".
        known: String,
    },
    /// No practitioner has this name or id.
    #[error(
        "no practitioner is called '{given}': list them with `polyphony-server practitioners`"
    )]
    PractitionerNotFound {
        /// What was asked for.
        given: String,
    },
    /// Several practitioners share this name.
    #[error("more than one practitioner is called '{given}' ({ids}): use the id instead")]
    PractitionerAmbiguous {
        /// The name asked for.
        given: String,
        /// Their ids, comma-separated.
        ids: String,
    },
    /// No device has this id.
    #[error("no device has the id {0}: list them with `polyphony-server devices`")]
    DeviceNotFound(DeviceId),
    /// The enrolment code is not one this server issued (or it was mistyped in a way the checksum
    /// did not catch).
    #[error("this enrolment code is not known to this server: check it is for this borough, or ask your administrator for a new code")]
    EnrolmentUnknown,
    /// The enrolment code was used before.
    #[error("this enrolment code was already used (on {used_at}); each code enrols once: ask your administrator for a new code")]
    EnrolmentUsed {
        /// When it was used (RFC 3339).
        used_at: String,
    },
    /// The enrolment code expired.
    #[error("this enrolment code expired on {expired_at}: ask your administrator for a new code")]
    EnrolmentExpired {
        /// When it expired (RFC 3339).
        expired_at: String,
    },
    /// An enrolment code must stay valid for some time.
    #[error("an enrolment code must be valid for a positive time (asked for {0}): set enrolment_ttl_hours to 1 or more")]
    BadTtl(time::Duration),
    /// The device id is enrolled already (a device makes a new id whenever it enrols).
    #[error("device {0} is already enrolled: reset the device's profile and enrol it again, which gives it a new id")]
    DeviceAlreadyEnrolled(DeviceId),
    /// Another device already uses this certificate.
    #[error("another device ({0}) already uses this certificate: the device must make a new key and enrol again")]
    CertificateInUse(DeviceId),
    /// A revoked device cannot come back.
    #[error(
        "device {0} is revoked, which cannot be undone: enrol the device again with a new code"
    )]
    DeviceRevoked(DeviceId),
    /// The case belongs to another team already.
    #[error("case {case} already belongs to team {team}: move it with `polyphony-server case move` if that is intended")]
    CaseInAnotherTeam {
        /// The case.
        case: CaseId,
        /// The team that owns it.
        team: TeamId,
    },
    /// The case has never been registered with any team.
    #[error("case {0} is not known to this server: it is registered when a device first syncs it")]
    CaseNotRegistered(CaseId),
    /// A team id that no team has.
    #[error("no team has the id {0}: list them with `polyphony-server teams`")]
    TeamIdUnknown(TeamId),
    /// A borough with this name (ignoring case) exists already on the hub.
    #[error("there is already a borough called '{existing}' (id {id}): choose another name, or give that borough a new enrolment code")]
    BoroughExists {
        /// The existing borough's name as stored.
        existing: String,
        /// Its id.
        id: BoroughId,
    },
    /// No borough has this name or id.
    #[error("no borough on this hub is called '{given}' or has that id: check the name against the hub's list of boroughs")]
    BoroughNotFound {
        /// What was asked for.
        given: String,
    },
    /// A revoked borough cannot come back.
    #[error("borough {0} is revoked, which cannot be undone: it can neither enrol nor link again (to replace a borough server's certificate, give the borough a new enrolment code instead of revoking it)")]
    BoroughRevoked(BoroughId),
    /// A borough is active or revoked; [`DeviceStatus::Revoking`] is for devices only.
    #[error("a borough cannot be set to {0}: a borough is either active or revoked")]
    BadBoroughStatus(DeviceStatus),
    /// Another borough already uses this link certificate.
    #[error("borough {0} already uses this certificate: the borough server must make a new link key and enrol again")]
    BoroughCertificateInUse(BoroughId),
    /// A borough claimed a team the hub knows as another borough's, or as the hub's own.
    #[error(
        "the team '{name}' ({team}) is already on this hub as {}, and a team belongs to one borough: check that this borough server was not restored from another borough's data, and that the team was not added to the hub by hand",
        owner.map_or_else(|| "a team of no borough".to_string(), |b| format!("a team of borough {b}"))
    )]
    TeamOfAnotherBorough {
        /// The team claimed.
        team: TeamId,
        /// The name the claiming borough gave it.
        name: String,
        /// The borough whose team it is on the hub (None: the hub's own team).
        owner: Option<BoroughId>,
    },
    /// Two teams of one borough would share a name (ignoring case).
    #[error("borough {borough} would have two teams called '{name}' ({first} and {second}): a borough's team names are unique ignoring case; rename one on the borough server")]
    BoroughTeamsShareName {
        /// The borough.
        borough: BoroughId,
        /// The shared name.
        name: String,
        /// One of the teams.
        first: TeamId,
        /// The other.
        second: TeamId,
    },
    /// A borough claimed a device on another borough's roster.
    #[error("device {device} is on the roster of borough {owner} already, and a device belongs to one borough: check that this borough server was not restored from another borough's data")]
    DeviceOfAnotherBorough {
        /// The device claimed.
        device: DeviceId,
        /// The borough whose device it is.
        owner: BoroughId,
    },
    /// A borough's roster named a practitioner another borough's roster names.
    #[error("practitioner {practitioner} is on the roster of borough {owner} already, and a practitioner's record belongs to one borough: check that this borough server was not restored from another borough's data")]
    PractitionerOfAnotherBorough {
        /// The practitioner claimed.
        practitioner: PractitionerId,
        /// The borough whose practitioner they are.
        owner: BoroughId,
    },
    /// A borough's list named one team or device twice, differently.
    #[error("the borough's list names {what} {id} twice, with different details: its server's registry needs checking before it links again")]
    ClaimedTwice {
        /// "team" or "device".
        what: &'static str,
        /// Its id.
        id: String,
    },
}

/// A team of practitioners. Every case belongs to exactly one team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    /// Its id.
    pub id: TeamId,
    /// Its name, unique in its borough ignoring case.
    pub name: String,
    /// On a trust hub, the borough whose team it is (two boroughs may each have a team of the same
    /// name). None for a borough server's own teams (and for teams stored before boroughs
    /// existed); Some on a borough server for another borough's team it transferred a case to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub borough: Option<BoroughId>,
    /// When it was added.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A practitioner registered on this server, who may enrol devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Practitioner {
    /// Their id.
    pub id: PractitionerId,
    /// Their name (two practitioners may share one).
    pub name: String,
    /// What they are (practitioner, peer support worker, psychiatrist, administrator), as the
    /// administrator set it; every device of their teams receives it with the team list.
    /// Practitioners registered before roles read as practitioners.
    #[serde(default = "default_role")]
    pub role: StaffRole,
    /// The teams they work in: their devices may sync these teams' cases.
    pub teams: Vec<TeamId>,
    /// Teams they left, with when (RFC 3339): their devices may still upload to those teams'
    /// cases they hold, for a bounded time after ([`crate::ServerConfig::moved_upload_limit`]).
    #[serde(default)]
    pub left: std::collections::BTreeMap<TeamId, String>,
    /// When they were added.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

fn default_role() -> StaffRole {
    StaffRole::Practitioner
}

/// Where a device is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Enrolled and allowed to sync.
    Active,
    /// Revocation ordered: the device may upload what it has not yet uploaded, then is told to wipe.
    Revoking,
    /// Refused outright.
    Revoked,
}

impl fmt::Display for DeviceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceStatus::Active => "active",
            DeviceStatus::Revoking => "revoking",
            DeviceStatus::Revoked => "revoked",
        })
    }
}

/// An enrolled device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The id the device chose (also in its certificate).
    pub id: DeviceId,
    /// The name its user gave it, for the administrator's list.
    pub name: String,
    /// Whose device it is.
    pub practitioner: PractitionerId,
    /// Whether it may sync.
    pub status: DeviceStatus,
    /// SHA-256 of its certificate (DER), hex.
    pub cert_fingerprint: String,
    /// When it enrolled.
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
    /// When it was last moved to [`DeviceStatus::Revoking`] or [`DeviceStatus::Revoked`].
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub revoked_at: Option<OffsetDateTime>,
}

/// An enrolment code the server issued. Only the hash of its token is kept, so a copy of the server's
/// data cannot be used to enrol a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEnrolment {
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// Who the code enrols a device for.
    pub practitioner: PractitionerId,
    /// When it was issued.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stops being accepted.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When it was used, if it was.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub used_at: Option<OffsetDateTime>,
    /// The device it enrolled, if it was used.
    #[serde(default)]
    pub used_by: Option<DeviceId>,
}

/// Which team owns a case (stored under the case id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CaseOwner {
    team: TeamId,
    #[serde(with = "time::serde::rfc3339")]
    since: OffsetDateTime,
}

/// The registry over a store. Cheap to share behind an `Arc`; every method is safe to call from
/// many threads.
pub struct Registry {
    store: Arc<dyn Store>,
    /// Serialises every check-then-write, so no two of them interleave.
    writes: Mutex<()>,
    /// Bumped by every change of who may sync what (a device's status, a practitioner's teams),
    /// so live sessions re-check their access at once instead of at their next connection.
    access: AtomicU64,
    /// Told the new [`Self::access`] after each change (see [`Registry::on_access_changed`]).
    access_hooks: Hooks<u64>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// The registry kept in `store`. Nothing is read until a method needs it.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            writes: Mutex::new(()),
            access: AtomicU64::new(0),
            access_hooks: Hooks::default(),
        }
    }

    /// Call `hook` with the new [`Registry::access_epoch`] after every change of access from now
    /// on, so the I/O driver wakes the live sessions. The hook runs on the thread that made the
    /// change, with the registry's write lock held: it must not block.
    pub fn on_access_changed(&self, hook: impl Fn(&u64) + Send + Sync + 'static) {
        self.access_hooks.add(hook);
    }

    /// How many changes of access this registry has made since it was opened: a session that saw
    /// another number re-reads its device and practitioner.
    pub fn access_epoch(&self) -> u64 {
        self.access.load(Ordering::SeqCst)
    }

    /// Count a change of access (made under the write lock, so epochs reach the hooks in order)
    /// and tell the hooks.
    fn access_changed(&self) {
        let epoch = self.access.fetch_add(1, Ordering::SeqCst) + 1;
        self.access_hooks.call(&epoch);
    }

    // ----- teams -----

    /// Add a team. Names are unique ignoring case (among the teams of no borough: on a hub, each
    /// borough's names are its own), and must not be empty.
    pub fn add_team(&self, name: &str) -> Result<Team, RegistryError> {
        self.add_team_as(TeamId::random(), name)
    }

    /// Add a team under a given id: one that exists elsewhere already (another server's team,
    /// a fixture whose records name it). As [`Registry::add_team`] otherwise.
    pub fn add_team_as(&self, id: TeamId, name: &str) -> Result<Team, RegistryError> {
        let name = clean_name("team", name)?;
        let _w = self.lock();
        if let Some(existing) = self.team_by_id(&id)? {
            return Err(RegistryError::TeamExists {
                existing: existing.name,
                id,
            });
        }
        let wanted = name_key(&name);
        if let Some(existing) = self
            .teams()?
            .into_iter()
            .find(|t| t.borough.is_none() && name_key(&t.name) == wanted)
        {
            return Err(RegistryError::TeamExists {
                existing: existing.name,
                id: existing.id,
            });
        }
        let team = Team {
            id,
            name,
            borough: None,
            created_at: now(),
        };
        self.put(ns::TEAMS, &team.id.to_string(), &team)?;
        tracing::info!(team = %team.id, "team added");
        Ok(team)
    }

    /// Every store namespace the registry writes to now: what a copy of the registry must hold
    /// to rebuild it (a borough's copy kept on the trust hub). The per-team and per-device
    /// namespaces are named from the teams and devices registered.
    pub fn namespaces(&self) -> Result<Vec<String>, RegistryError> {
        let mut all: Vec<String> = [
            ns::TEAMS,
            ns::PRACTITIONERS,
            ns::DEVICES,
            ns::DEVICE_CERTS,
            ns::ENROLMENTS,
            ns::CASES,
            ns::READS_THROUGH,
            ns::BOROUGHS,
            ns::BOROUGH_CERTS,
            ns::BOROUGH_ENROLMENTS,
            ns::ROSTER,
            ns::ROSTER_PRACTITIONERS,
            ns::CARRIED_ACCESS,
        ]
        .iter()
        .map(|n| n.to_string())
        .collect();
        for team in self.teams()? {
            all.push(ns::team_cases(&team.id));
        }
        for device in self.devices()? {
            all.push(ns::held(&device.id));
            all.push(ns::told_moved(&device.id));
        }
        Ok(all)
    }

    /// Whether `name` is a namespace of the registry (see [`Registry::namespaces`]).
    pub fn is_namespace(name: &str) -> bool {
        name.starts_with("registry.")
    }

    /// Register another borough's team (`team`, of `borough`), to which a case of this borough
    /// was transferred through the trust hub: the case is then that team's here, and this
    /// borough's devices lose it as they lose a case moved to another of its teams. Kept as it
    /// is if registered already.
    pub fn add_foreign_team(
        &self,
        team: &polyphony_core::sync::TeamInfo,
        borough: BoroughId,
    ) -> Result<Team, RegistryError> {
        let _w = self.lock();
        if let Some(existing) = self.team_by_id(&team.id)? {
            return Ok(existing);
        }
        let t = Team {
            id: team.id,
            name: clean_name("team", &team.name)?,
            borough: Some(borough),
            created_at: now(),
        };
        self.put(ns::TEAMS, &t.id.to_string(), &t)?;
        Ok(t)
    }

    /// Other boroughs' teams this borough transferred a case to ([`Registry::add_foreign_team`]).
    pub fn foreign_teams(&self) -> Result<HashSet<TeamId>, RegistryError> {
        Ok(self
            .teams()?
            .into_iter()
            .filter(|t| t.borough.is_some())
            .map(|t| t.id)
            .collect())
    }

    /// The accesses that came with `case` from the boroughs it was transferred from, oldest
    /// first (none for a case that never was).
    pub fn carried_access(
        &self,
        case: &CaseId,
    ) -> Result<Vec<polyphony_core::export::Access>, RegistryError> {
        Ok(self
            .get(ns::CARRIED_ACCESS, &case.to_string())?
            .unwrap_or_default())
    }

    /// Keep the accesses that came with `case` (replacing those kept before).
    pub fn set_carried_access(
        &self,
        case: &CaseId,
        access: &[polyphony_core::export::Access],
    ) -> Result<(), RegistryError> {
        self.put(ns::CARRIED_ACCESS, &case.to_string(), &access.to_vec())
    }

    /// Every team, by name.
    pub fn teams(&self) -> Result<Vec<Team>, RegistryError> {
        let mut teams: Vec<Team> = self.scan(ns::TEAMS)?;
        teams.sort_by_key(|t| name_key(&t.name));
        Ok(teams)
    }

    /// The team with this id, if any.
    pub fn team_by_id(&self, id: &TeamId) -> Result<Option<Team>, RegistryError> {
        self.get(ns::TEAMS, &id.to_string())
    }

    /// The team named `name_or_id` (its id, or its name ignoring case). The error lists the known
    /// teams, so a mistyped name is easy to correct.
    /// Only this server's own teams: another borough's team a case was transferred to is not
    /// one an administrator here adds practitioners to or moves cases to.
    pub fn team(&self, name_or_id: &str) -> Result<Team, RegistryError> {
        let given = name_or_id.trim();
        let teams: Vec<Team> = self
            .teams()?
            .into_iter()
            .filter(|t| t.borough.is_none())
            .collect();
        if let Ok(id) = given.parse::<TeamId>() {
            if let Some(team) = teams.iter().find(|t| t.id == id) {
                return Ok(team.clone());
            }
        }
        let wanted = name_key(given);
        if let Some(team) = teams.iter().find(|t| name_key(&t.name) == wanted) {
            return Ok(team.clone());
        }
        let known = if teams.is_empty() {
            "none yet (add one with `polyphony-server team add NAME`)".to_string()
        } else {
            teams
                .iter()
                .map(|t| format!("'{}'", t.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(RegistryError::TeamNotFound {
            given: given.to_string(),
            known,
        })
    }

    // ----- practitioners -----

    /// Add a practitioner to the registry, in one team to begin with.
    pub fn add_practitioner(
        &self,
        name: &str,
        team: TeamId,
    ) -> Result<Practitioner, RegistryError> {
        self.add_practitioner_as(PractitionerId::random(), name, team)
    }

    /// Add a practitioner under a given id (one whose records exist elsewhere already), as
    /// [`Registry::add_practitioner`] otherwise.
    pub fn add_practitioner_as(
        &self,
        id: PractitionerId,
        name: &str,
        team: TeamId,
    ) -> Result<Practitioner, RegistryError> {
        let name = clean_name("practitioner", name)?;
        let _w = self.lock();
        self.require_team(&team)?;
        if let Some(existing) = self.practitioner(&id)? {
            return Err(RegistryError::PractitionerIdTaken {
                id,
                existing: existing.name,
            });
        }
        let practitioner = Practitioner {
            id,
            name,
            role: StaffRole::Practitioner,
            teams: vec![team],
            left: Default::default(),
            created_at: now(),
        };
        self.put(
            ns::PRACTITIONERS,
            &practitioner.id.to_string(),
            &practitioner,
        )?;
        tracing::info!(practitioner = %practitioner.id, %team, "practitioner added");
        // The team list changed: connected devices of the team receive the new one.
        self.access_changed();
        Ok(practitioner)
    }

    /// The practitioner with this id, or the error naming it.
    fn existing_practitioner(&self, id: &PractitionerId) -> Result<Practitioner, RegistryError> {
        self.practitioner(id)?
            .ok_or_else(|| RegistryError::PractitionerNotFound {
                given: id.to_string(),
            })
    }

    /// Add a practitioner to another team. Adding them to a team they are in already changes nothing.
    pub fn add_practitioner_to_team(
        &self,
        practitioner: &PractitionerId,
        team: TeamId,
    ) -> Result<Practitioner, RegistryError> {
        let _w = self.lock();
        self.require_team(&team)?;
        let mut p = self.existing_practitioner(practitioner)?;
        if !p.teams.contains(&team) {
            p.teams.push(team);
            p.left.remove(&team);
            self.put(ns::PRACTITIONERS, &p.id.to_string(), &p)?;
            tracing::info!(practitioner = %p.id, %team, "practitioner joined a team");
            self.access_changed();
        }
        Ok(p)
    }

    /// A practitioner leaves a team: from now on none of their devices may read or write the
    /// team's cases (a device still holding one may upload what it wrote, as after a move, and is
    /// then told the case is not available). Live sessions learn of it at once.
    pub fn remove_practitioner_from_team(
        &self,
        practitioner: &PractitionerId,
        team: TeamId,
    ) -> Result<Practitioner, RegistryError> {
        let _w = self.lock();
        self.require_team(&team)?;
        let mut p = self.existing_practitioner(practitioner)?;
        if p.teams.contains(&team) {
            p.teams.retain(|t| *t != team);
            p.left.insert(team, rfc3339(now()));
            self.put(ns::PRACTITIONERS, &p.id.to_string(), &p)?;
            tracing::info!(practitioner = %p.id, %team, "practitioner left a team");
            self.access_changed();
        }
        Ok(p)
    }

    /// Set what a practitioner is. Live sessions of their teams' devices receive the new team
    /// list at once.
    pub fn set_practitioner_role(
        &self,
        practitioner: &PractitionerId,
        role: StaffRole,
    ) -> Result<Practitioner, RegistryError> {
        let _w = self.lock();
        let mut p = self.existing_practitioner(practitioner)?;
        if p.role != role {
            p.role = role;
            self.put(ns::PRACTITIONERS, &p.id.to_string(), &p)?;
            tracing::info!(practitioner = %p.id, %role, "practitioner's role set");
            self.access_changed();
        }
        Ok(p)
    }

    /// The team list a device of `practitioner` receives: everyone who works in one of their
    /// teams (themselves included), with their role and the teams they share, by name.
    pub fn colleagues_of(
        &self,
        practitioner: &Practitioner,
    ) -> Result<Vec<Colleague>, RegistryError> {
        let mut list: Vec<Colleague> = self
            .practitioners()?
            .into_iter()
            .filter_map(|p| {
                let teams: Vec<TeamId> = p
                    .teams
                    .iter()
                    .filter(|t| practitioner.teams.contains(t))
                    .copied()
                    .collect();
                (!teams.is_empty()).then_some(Colleague {
                    practitioner: p.id,
                    name: p.name,
                    role: Stored::Known(p.role),
                    teams,
                })
            })
            .collect();
        list.sort_by(|a, b| {
            (name_key(&a.name), a.practitioner).cmp(&(name_key(&b.name), b.practitioner))
        });
        Ok(list)
    }

    /// The devices of one practitioner, whatever their status.
    pub fn practitioner_devices(
        &self,
        practitioner: &PractitionerId,
    ) -> Result<Vec<Device>, RegistryError> {
        Ok(self
            .devices()?
            .into_iter()
            .filter(|d| d.practitioner == *practitioner)
            .collect())
    }

    /// Every practitioner, by name.
    pub fn practitioners(&self) -> Result<Vec<Practitioner>, RegistryError> {
        let mut all: Vec<Practitioner> = self.scan(ns::PRACTITIONERS)?;
        all.sort_by_key(|p| name_key(&p.name));
        Ok(all)
    }

    /// The practitioner with this id, if any.
    pub fn practitioner(&self, id: &PractitionerId) -> Result<Option<Practitioner>, RegistryError> {
        self.get(ns::PRACTITIONERS, &id.to_string())
    }

    /// The practitioner named `name_or_id` (their id, or their name ignoring case). A name shared by
    /// several practitioners is refused, listing their ids.
    pub fn practitioner_by(&self, name_or_id: &str) -> Result<Practitioner, RegistryError> {
        let given = name_or_id.trim();
        if let Ok(id) = given.parse::<PractitionerId>() {
            if let Some(p) = self.practitioner(&id)? {
                return Ok(p);
            }
        }
        let wanted = name_key(given);
        let mut matching: Vec<Practitioner> = self
            .practitioners()?
            .into_iter()
            .filter(|p| name_key(&p.name) == wanted)
            .collect();
        match matching.len() {
            0 => Err(RegistryError::PractitionerNotFound {
                given: given.to_string(),
            }),
            1 => Ok(matching.remove(0)),
            _ => Err(RegistryError::PractitionerAmbiguous {
                given: given.to_string(),
                ids: matching
                    .iter()
                    .map(|p| p.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    // ----- enrolment -----

    /// Issue a one-time enrolment code for a practitioner's new device, valid for `ttl`.
    ///
    /// Only the hash of the code's token is stored: the returned code must be shown to the
    /// administrator now, as it cannot be shown again.
    pub fn create_enrolment(
        &self,
        practitioner: PractitionerId,
        ca_fingerprint: [u8; 32],
        ttl: time::Duration,
    ) -> Result<EnrolmentCode, RegistryError> {
        let (created_at, expires_at) = code_lifetime(ttl)?;
        if self.practitioner(&practitioner)?.is_none() {
            return Err(RegistryError::PractitionerNotFound {
                given: practitioner.to_string(),
            });
        }
        let code = EnrolmentCode::new(ca_fingerprint);
        let pending = PendingEnrolment {
            token_hash: hex::encode(code.token_hash()),
            practitioner,
            created_at,
            expires_at,
            used_at: None,
            used_by: None,
        };
        self.put(ns::ENROLMENTS, &pending.token_hash, &pending)?;
        tracing::info!(%practitioner, expires_at = %rfc3339(pending.expires_at), "enrolment code issued");
        Ok(code)
    }

    /// The enrolment issued with this token hash (see [`EnrolmentCode::token_hash`]), if any.
    pub fn enrolment(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<PendingEnrolment>, RegistryError> {
        self.get(ns::ENROLMENTS, &hex::encode(token_hash))
    }

    /// Check, without using it, that `token` would enrol `device`: the code is known, unused and
    /// unexpired, and the device id is new. The server calls this before it signs a certificate, so
    /// a bad code is refused cheaply; [`Registry::redeem_enrolment`] checks everything again.
    pub fn check_enrolment(
        &self,
        token: &[u8],
        device: &DeviceId,
    ) -> Result<(PendingEnrolment, Practitioner), RegistryError> {
        self.check_enrolment_at(token, device, now())
    }

    fn check_enrolment_at(
        &self,
        token: &[u8],
        device: &DeviceId,
        at: OffsetDateTime,
    ) -> Result<(PendingEnrolment, Practitioner), RegistryError> {
        let pending = self
            .get::<PendingEnrolment>(ns::ENROLMENTS, &token_key(token))?
            .ok_or(RegistryError::EnrolmentUnknown)?;
        check_code_usable(pending.used_at, pending.expires_at, at)?;
        if self.device(device)?.is_some() {
            return Err(RegistryError::DeviceAlreadyEnrolled(*device));
        }
        let practitioner = self.practitioner(&pending.practitioner)?.ok_or_else(|| {
            RegistryError::PractitionerNotFound {
                given: pending.practitioner.to_string(),
            }
        })?;
        Ok((pending, practitioner))
    }

    /// Use an enrolment code: register `device` (with the certificate the server has just issued it)
    /// for the code's practitioner, and mark the code used.
    ///
    /// A code enrols one device only: of two concurrent redeems of the same code exactly one
    /// succeeds. Unknown, used and expired codes, a device id already enrolled and a certificate
    /// already in use are each refused with their own error.
    pub fn redeem_enrolment(
        &self,
        token: &[u8],
        device: DeviceId,
        device_name: &str,
        cert_fingerprint: [u8; 32],
    ) -> Result<(Device, Practitioner), RegistryError> {
        self.redeem_enrolment_at(token, device, device_name, cert_fingerprint, now())
    }

    fn redeem_enrolment_at(
        &self,
        token: &[u8],
        device: DeviceId,
        device_name: &str,
        cert_fingerprint: [u8; 32],
        at: OffsetDateTime,
    ) -> Result<(Device, Practitioner), RegistryError> {
        let device_name = clean_name("device", device_name)?;
        let fingerprint = hex::encode(cert_fingerprint);
        let _w = self.lock();
        let (mut pending, practitioner) = self.check_enrolment_at(token, &device, at)?;
        if let Some(other) = self.get::<DeviceId>(ns::DEVICE_CERTS, &fingerprint)? {
            return Err(RegistryError::CertificateInUse(other));
        }
        // The code first: a crash after this wastes the code but can never let it enrol twice.
        pending.used_at = Some(at);
        pending.used_by = Some(device);
        self.put(ns::ENROLMENTS, &pending.token_hash, &pending)?;
        self.put(ns::DEVICE_CERTS, &fingerprint, &device)?;
        let record = Device {
            id: device,
            name: device_name,
            practitioner: practitioner.id,
            status: DeviceStatus::Active,
            cert_fingerprint: fingerprint,
            enrolled_at: at,
            revoked_at: None,
        };
        self.put(ns::DEVICES, &device.to_string(), &record)?;
        tracing::info!(%device, practitioner = %practitioner.id, "device enrolled");
        Ok((record, practitioner))
    }

    // ----- devices -----

    /// The device with this id, if any.
    pub fn device(&self, id: &DeviceId) -> Result<Option<Device>, RegistryError> {
        self.get(ns::DEVICES, &id.to_string())
    }

    /// Every device, oldest enrolment first.
    pub fn devices(&self) -> Result<Vec<Device>, RegistryError> {
        let mut all: Vec<Device> = self.scan(ns::DEVICES)?;
        all.sort_by_key(|d| d.enrolled_at);
        Ok(all)
    }

    /// The device holding the certificate with this SHA-256 fingerprint (of its DER), if any: how a
    /// connection is matched to a device.
    pub fn device_by_cert(&self, fingerprint: &[u8; 32]) -> Result<Option<Device>, RegistryError> {
        let hex_fp = hex::encode(fingerprint);
        let Some(id) = self.get::<DeviceId>(ns::DEVICE_CERTS, &hex_fp)? else {
            return Ok(None);
        };
        // Trust the device record, not the index alone.
        Ok(self.device(&id)?.filter(|d| d.cert_fingerprint == hex_fp))
    }

    /// Change a device's status, recording when a revocation was ordered or completed. Setting the
    /// status it has already changes nothing; a revoked device cannot be made active again.
    pub fn set_device_status(
        &self,
        id: &DeviceId,
        status: DeviceStatus,
    ) -> Result<Device, RegistryError> {
        let _w = self.lock();
        let mut device = self.device(id)?.ok_or(RegistryError::DeviceNotFound(*id))?;
        if device.status == status {
            return Ok(device);
        }
        if device.status == DeviceStatus::Revoked {
            return Err(RegistryError::DeviceRevoked(*id));
        }
        device.status = status;
        device.revoked_at = match status {
            DeviceStatus::Active => None,
            DeviceStatus::Revoking | DeviceStatus::Revoked => Some(now()),
        };
        self.put(ns::DEVICES, &id.to_string(), &device)?;
        tracing::info!(device = %id, %status, "device status changed");
        self.access_changed();
        Ok(device)
    }

    /// The devices of every practitioner in `team` (whatever their status): the devices to tell when
    /// one of the team's cases changes.
    pub fn team_devices(&self, team: &TeamId) -> Result<Vec<Device>, RegistryError> {
        let members: HashSet<PractitionerId> = self
            .practitioners()?
            .into_iter()
            .filter(|p| p.teams.contains(team))
            .map(|p| p.id)
            .collect();
        Ok(self
            .devices()?
            .into_iter()
            .filter(|d| members.contains(&d.practitioner))
            .collect())
    }

    // ----- cases -----

    /// The team that owns a case, if the case is registered.
    pub fn case_team(&self, case: &CaseId) -> Result<Option<TeamId>, RegistryError> {
        Ok(self
            .get::<CaseOwner>(ns::CASES, &case.to_string())?
            .map(|o| o.team))
    }

    /// Since when the case's team has owned it (its registration, or its last move).
    pub fn case_since(&self, case: &CaseId) -> Result<Option<OffsetDateTime>, RegistryError> {
        Ok(self
            .get::<CaseOwner>(ns::CASES, &case.to_string())?
            .map(|o| o.since))
    }

    /// The highest offline-read outbox index of `device` already in the audit log (none yet: a
    /// device's outbox counts from 0).
    pub fn reads_through(&self, device: &DeviceId) -> Result<Option<u64>, RegistryError> {
        self.get::<u64>(ns::READS_THROUGH, &device.to_string())
    }

    /// Note that `device`'s offline reads through `seq` are in the audit log.
    pub fn set_reads_through(&self, device: &DeviceId, seq: u64) -> Result<(), RegistryError> {
        self.put(ns::READS_THROUGH, &device.to_string(), &seq)
    }

    /// Register a new case with its team (when a device first uploads it). Registering it again with
    /// the same team changes nothing; with another team it is refused.
    pub fn register_case(&self, case: CaseId, team: TeamId) -> Result<(), RegistryError> {
        let _w = self.lock();
        match self.case_team(&case)? {
            Some(owner) if owner == team => return Ok(()),
            Some(owner) => return Err(RegistryError::CaseInAnotherTeam { case, team: owner }),
            None => {}
        }
        self.require_team(&team)?;
        self.store
            .put_meta(&ns::team_cases(&team), &case.to_string(), &[])?;
        self.put(
            ns::CASES,
            &case.to_string(),
            &CaseOwner { team, since: now() },
        )?;
        tracing::info!(%case, %team, "case registered");
        Ok(())
    }

    /// Move a case to another team; returns the team it belonged to. Moving it to its own team
    /// changes nothing.
    pub fn move_case(&self, case: CaseId, team: TeamId) -> Result<TeamId, RegistryError> {
        let _w = self.lock();
        let from = self
            .case_team(&case)?
            .ok_or(RegistryError::CaseNotRegistered(case))?;
        if from == team {
            return Ok(from);
        }
        self.require_team(&team)?;
        // Index of the new team, then the owner, then clean the old index: every crash point leaves
        // the index a superset of the truth, and readers check the truth.
        self.store
            .put_meta(&ns::team_cases(&team), &case.to_string(), &[])?;
        self.put(
            ns::CASES,
            &case.to_string(),
            &CaseOwner { team, since: now() },
        )?;
        self.store
            .delete_meta(&ns::team_cases(&from), &case.to_string())?;
        tracing::info!(%case, %from, to = %team, "case moved");
        self.access_changed();
        Ok(from)
    }

    /// Every case of every team this server knows, with its team: on a borough server, every case
    /// it holds for its teams.
    pub fn cases(&self) -> Result<Vec<(CaseId, TeamId)>, RegistryError> {
        let teams: Vec<TeamId> = self.teams()?.into_iter().map(|t| t.id).collect();
        self.cases_of_teams(&teams)
    }

    /// Every case owned by one of `teams`, with its team: what a device of a practitioner in those
    /// teams may sync.
    pub fn cases_of_teams(&self, teams: &[TeamId]) -> Result<Vec<(CaseId, TeamId)>, RegistryError> {
        let mut out = Vec::new();
        for team in teams {
            let index = ns::team_cases(team);
            for (key, _) in self.store.scan_meta(&index)? {
                let case: CaseId = key.parse().map_err(|e: polyphony_core::ids::BadId| {
                    RegistryError::Corrupt {
                        what: format!("{index}/{key}"),
                        detail: e.to_string(),
                    }
                })?;
                if self.case_team(&case)? == Some(*team) {
                    out.push((case, *team));
                }
            }
        }
        Ok(out)
    }

    /// Record that `device` has synced `case`, so it may still upload its changes to the case after
    /// the case moves to a team the device is not in.
    pub fn mark_held(&self, device: &DeviceId, case: &CaseId) -> Result<(), RegistryError> {
        let key = case.to_string();
        let held_ns = ns::held(device);
        if self.store.get_meta(&held_ns, &key)?.is_none() {
            self.put(&held_ns, &key, &rfc3339(now()))?;
        }
        Ok(())
    }

    /// Whether `device` has ever synced `case`.
    pub fn held(&self, device: &DeviceId, case: &CaseId) -> Result<bool, RegistryError> {
        Ok(self
            .store
            .get_meta(&ns::held(device), &case.to_string())?
            .is_some())
    }

    /// When `device` was first told that `case` is no longer its team's (it moved away, or the
    /// practitioner left its team), if it was since it last had the case in full.
    pub fn told_moved(
        &self,
        device: &DeviceId,
        case: &CaseId,
    ) -> Result<Option<OffsetDateTime>, RegistryError> {
        let key = case.to_string();
        let told_ns = ns::told_moved(device);
        let Some(at) = self.get::<String>(&told_ns, &key)? else {
            return Ok(None);
        };
        OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
            .map(Some)
            .map_err(|e| RegistryError::Corrupt {
                what: format!("{told_ns}/{key}"),
                detail: e.to_string(),
            })
    }

    /// Record that `device` is being told now that `case` is no longer its team's, unless it was
    /// told before: the first telling stands (a device may upload only what it wrote before it),
    /// however many sessions tell it again. Returns when it was first told.
    pub fn note_told_moved(
        &self,
        device: &DeviceId,
        case: &CaseId,
    ) -> Result<OffsetDateTime, RegistryError> {
        let _w = self.lock();
        if let Some(at) = self.told_moved(device, case)? {
            return Ok(at);
        }
        let at = now();
        self.put(&ns::told_moved(device), &case.to_string(), &rfc3339(at))?;
        Ok(at)
    }

    /// `device` was welcomed with these cases in full (a case that moved away came back, or its
    /// practitioner rejoined the team): forget that it was told they moved away, as the device
    /// itself does on the same welcome. Returns how many records were removed.
    pub fn forget_told_moved(
        &self,
        device: &DeviceId,
        granted: &HashSet<CaseId>,
    ) -> Result<usize, RegistryError> {
        let _w = self.lock();
        let told_ns = ns::told_moved(device);
        let mut removed = 0;
        for (key, _) in self.store.scan_meta(&told_ns)? {
            if key.parse::<CaseId>().is_ok_and(|c| granted.contains(&c)) {
                self.store.delete_meta(&told_ns, &key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    // ----- storage -----

    /// Make every write so far durable (see [`Store::flush`]). The administration commands call this
    /// before they report success; the sync path relies on the server's group commit instead.
    pub fn flush(&self) -> Result<(), RegistryError> {
        self.store.flush()?;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The mutex guards no data of its own (the store does), and every change is ordered to be
        // safe if interrupted, so a panic in another holder leaves nothing to repair.
        self.writes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn require_team(&self, team: &TeamId) -> Result<Team, RegistryError> {
        self.team_by_id(team)?
            .ok_or(RegistryError::TeamIdUnknown(*team))
    }

    fn get<T: DeserializeOwned>(&self, ns: &str, key: &str) -> Result<Option<T>, RegistryError> {
        self.store
            .get_meta(ns, key)?
            .map(|bytes| decode(ns, key, &bytes))
            .transpose()
    }

    fn put<T: Serialize>(&self, ns: &str, key: &str, value: &T) -> Result<(), RegistryError> {
        let bytes = serde_json::to_vec(value).map_err(|e| RegistryError::Corrupt {
            what: format!("{ns}/{key}"),
            detail: format!("could not be encoded: {e}"),
        })?;
        self.store.put_meta(ns, key, &bytes)?;
        Ok(())
    }

    fn scan<T: DeserializeOwned>(&self, ns: &str) -> Result<Vec<T>, RegistryError> {
        self.store
            .scan_meta(ns)?
            .into_iter()
            .map(|(key, bytes)| decode(ns, &key, &bytes))
            .collect()
    }
}

fn decode<T: DeserializeOwned>(ns: &str, key: &str, bytes: &[u8]) -> Result<T, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Corrupt {
        what: format!("{ns}/{key}"),
        detail: e.to_string(),
    })
}

/// A name as it will be stored: trimmed, not empty, not too long, and with no control characters
/// (which would break the administrator's listings).
fn clean_name(what: &'static str, name: &str) -> Result<String, RegistryError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(RegistryError::EmptyName { what });
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(RegistryError::BadName {
            what,
            reason: format!("it is longer than {MAX_NAME_CHARS} characters"),
        });
    }
    if name.chars().any(char::is_control) {
        return Err(RegistryError::BadName {
            what,
            reason: "it contains a line break, tab or other control character".into(),
        });
    }
    Ok(name.to_string())
}

/// Where an enrolment code's record is kept: the hash of its token (hex), never the token.
fn token_key(token: &[u8]) -> String {
    hex::encode(hash_enrolment_token(token))
}

/// When a code issued now, valid for `ttl`, is issued and stops being accepted.
fn code_lifetime(ttl: time::Duration) -> Result<(OffsetDateTime, OffsetDateTime), RegistryError> {
    if !ttl.is_positive() {
        return Err(RegistryError::BadTtl(ttl));
    }
    let created_at = now();
    Ok((created_at, created_at.saturating_add(ttl)))
}

/// Refuse a code that was used before or has expired at `at`.
fn check_code_usable(
    used_at: Option<OffsetDateTime>,
    expires_at: OffsetDateTime,
    at: OffsetDateTime,
) -> Result<(), RegistryError> {
    if let Some(used_at) = used_at {
        return Err(RegistryError::EnrolmentUsed {
            used_at: rfc3339(used_at),
        });
    }
    if at >= expires_at {
        return Err(RegistryError::EnrolmentExpired {
            expired_at: rfc3339(expires_at),
        });
    }
    Ok(())
}

/// A name as compared for uniqueness and lookup: names that differ only in case are the same.
fn name_key(name: &str) -> String {
    name.to_lowercase()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A time as RFC 3339 text, for messages and the audit log.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests;
