//! On a trust hub: the boroughs, the teams each borough claims, and each borough's devices.
//!
//! A borough server enrols with the hub as a device enrols with a borough (a one-time code whose
//! token is stored only as a hash), and then links with the certificate it was given. Each link
//! begins with the borough's roster: its teams, which the hub records as the borough's (a team
//! belongs to one borough), and every device ever enrolled on it, which the hub records so that it
//! can check every change the borough relays was written by one of the borough's own devices (a
//! device belongs to one borough too).
//!
//! A borough's claims are all-or-nothing: every team and device is checked before anything is
//! written, so a refused roster leaves the hub as it was. The same crash ordering as for devices
//! holds: a code is marked used before the certificate is recorded, and a replaced certificate's
//! index entry is removed only after the borough's record names the new one (lookups trust the
//! record, so a stale index entry finds nothing).

use std::collections::{BTreeMap, HashMap};

use polyphony_core::identity::EnrolmentCode;
use polyphony_core::sync::{RosterDevice, TeamInfo};
use polyphony_core::{BoroughId, DeviceId, PractitionerId, TeamId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    check_code_usable, clean_name, code_lifetime, name_key, now, ns, rfc3339, token_key,
    DeviceStatus, Registry, RegistryError, Team,
};

/// A borough server the hub knows: added by the hub's administrator, then enrolled with a code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Borough {
    /// Its id, chosen by the hub (also in its link certificate).
    pub id: BoroughId,
    /// The name the hub's administrator gave it, unique on the hub ignoring case.
    pub name: String,
    /// [`DeviceStatus::Active`] or [`DeviceStatus::Revoked`] (final); never
    /// [`DeviceStatus::Revoking`].
    pub status: DeviceStatus,
    /// SHA-256 of its link certificate (DER), hex; None until it enrols.
    pub cert_fingerprint: Option<String>,
    /// When it was added.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last enrolled (a rebuilt borough server enrols again), if it has.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub enrolled_at: Option<OffsetDateTime>,
    /// When it was revoked, if it was.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub revoked_at: Option<OffsetDateTime>,
}

/// An enrolment code the hub issued for a borough server. Only the hash of its token is kept, so a
/// copy of the hub's data cannot be used to enrol a borough.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingBoroughEnrolment {
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// The borough the code enrols.
    pub borough: BoroughId,
    /// When it was issued.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stops being accepted.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When it was used, if it was.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub used_at: Option<OffsetDateTime>,
}

/// A device on a borough's roster, as the hub keeps it (stored under the device id): whose device
/// it is, and who writes with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    /// The borough whose device it is (a device belongs to one borough).
    pub borough: BoroughId,
    /// Its practitioner, as the borough last said.
    pub practitioner: PractitionerId,
    /// Their name, as the device stamps it on what it writes.
    pub practitioner_name: String,
    /// When the hub first heard of the device.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
}

impl Registry {
    // ----- boroughs -----

    /// Add a borough to the hub, not yet enrolled. Names are unique ignoring case (revoked
    /// boroughs' names included), and must not be empty.
    pub fn add_borough(&self, name: &str) -> Result<Borough, RegistryError> {
        let name = clean_name("borough", name)?;
        let _w = self.lock();
        let wanted = name_key(&name);
        if let Some(existing) = self
            .boroughs()?
            .into_iter()
            .find(|b| name_key(&b.name) == wanted)
        {
            return Err(RegistryError::BoroughExists {
                existing: existing.name,
                id: existing.id,
            });
        }
        let borough = Borough {
            id: BoroughId::random(),
            name,
            status: DeviceStatus::Active,
            cert_fingerprint: None,
            created_at: now(),
            enrolled_at: None,
            revoked_at: None,
        };
        self.put(ns::BOROUGHS, &borough.id.to_string(), &borough)?;
        tracing::info!(borough = %borough.id, "borough added");
        Ok(borough)
    }

    /// Every borough, oldest first.
    pub fn boroughs(&self) -> Result<Vec<Borough>, RegistryError> {
        let mut all: Vec<Borough> = self.scan(ns::BOROUGHS)?;
        all.sort_by_key(|b| b.created_at);
        Ok(all)
    }

    /// The borough with this id, if any.
    pub fn borough(&self, id: &BoroughId) -> Result<Option<Borough>, RegistryError> {
        self.get(ns::BOROUGHS, &id.to_string())
    }

    /// The borough named `name_or_id` (its id, or its name ignoring case).
    pub fn borough_by(&self, name_or_id: &str) -> Result<Borough, RegistryError> {
        let given = name_or_id.trim();
        if let Ok(id) = given.parse::<BoroughId>() {
            if let Some(borough) = self.borough(&id)? {
                return Ok(borough);
            }
        }
        let wanted = name_key(given);
        self.boroughs()?
            .into_iter()
            .find(|b| name_key(&b.name) == wanted)
            .ok_or_else(|| RegistryError::BoroughNotFound {
                given: given.to_string(),
            })
    }

    /// The ids of the teams the hub holds for `borough`, by name.
    pub fn borough_teams(&self, borough: &BoroughId) -> Result<Vec<TeamId>, RegistryError> {
        Ok(self
            .teams()?
            .into_iter()
            .filter(|t| t.borough == Some(*borough))
            .map(|t| t.id)
            .collect())
    }

    /// The borough with this id, or the error naming it.
    fn existing_borough(&self, id: &BoroughId) -> Result<Borough, RegistryError> {
        self.borough(id)?
            .ok_or_else(|| RegistryError::BoroughNotFound {
                given: id.to_string(),
            })
    }

    /// The borough with this id, refused if it is unknown or revoked: the only boroughs that may
    /// enrol, link or claim anything.
    fn live_borough(&self, id: &BoroughId) -> Result<Borough, RegistryError> {
        let borough = self.existing_borough(id)?;
        if borough.status == DeviceStatus::Revoked {
            return Err(RegistryError::BoroughRevoked(*id));
        }
        Ok(borough)
    }

    /// Change a borough's status, recording when it was revoked. Setting the status it has already
    /// changes nothing; revocation is final; [`DeviceStatus::Revoking`] is refused (a borough has
    /// nothing of its own to upload before it goes). Live links learn of it at once.
    pub fn set_borough_status(
        &self,
        id: &BoroughId,
        status: DeviceStatus,
    ) -> Result<Borough, RegistryError> {
        if status == DeviceStatus::Revoking {
            return Err(RegistryError::BadBoroughStatus(status));
        }
        let _w = self.lock();
        let mut borough = self.existing_borough(id)?;
        if borough.status == status {
            return Ok(borough);
        }
        if borough.status == DeviceStatus::Revoked {
            return Err(RegistryError::BoroughRevoked(*id));
        }
        // Active to revoked is the only change left.
        borough.status = status;
        borough.revoked_at = Some(now());
        self.put(ns::BOROUGHS, &id.to_string(), &borough)?;
        tracing::info!(borough = %id, %status, "borough status changed");
        self.access_changed();
        Ok(borough)
    }

    // ----- borough enrolment -----

    /// Issue a one-time enrolment code for a borough server, valid for `ttl`. A borough enrolled
    /// already may be given one (a rebuilt borough server enrols again, and its new certificate
    /// replaces the old); a revoked borough may not.
    ///
    /// Only the hash of the code's token is stored: the returned code must be shown to the
    /// administrator now, as it cannot be shown again.
    pub fn create_borough_enrolment(
        &self,
        borough: BoroughId,
        ca_fingerprint: [u8; 32],
        ttl: time::Duration,
    ) -> Result<EnrolmentCode, RegistryError> {
        let (created_at, expires_at) = code_lifetime(ttl)?;
        self.live_borough(&borough)?;
        let code = EnrolmentCode::new(ca_fingerprint);
        let pending = PendingBoroughEnrolment {
            token_hash: hex::encode(code.token_hash()),
            borough,
            created_at,
            expires_at,
            used_at: None,
        };
        self.put(ns::BOROUGH_ENROLMENTS, &pending.token_hash, &pending)?;
        tracing::info!(%borough, expires_at = %rfc3339(expires_at), "borough enrolment code issued");
        Ok(code)
    }

    /// Check, without using it, that `token` would enrol a borough: the code is known, unused and
    /// unexpired, and its borough is not revoked. The hub calls this before it signs a
    /// certificate; [`Registry::redeem_borough_enrolment`] checks everything again.
    pub fn check_borough_enrolment(
        &self,
        token: &[u8],
    ) -> Result<(PendingBoroughEnrolment, Borough), RegistryError> {
        self.check_borough_enrolment_at(token, now())
    }

    fn check_borough_enrolment_at(
        &self,
        token: &[u8],
        at: OffsetDateTime,
    ) -> Result<(PendingBoroughEnrolment, Borough), RegistryError> {
        let pending = self
            .get::<PendingBoroughEnrolment>(ns::BOROUGH_ENROLMENTS, &token_key(token))?
            .ok_or(RegistryError::EnrolmentUnknown)?;
        check_code_usable(pending.used_at, pending.expires_at, at)?;
        let borough = self.live_borough(&pending.borough)?;
        Ok((pending, borough))
    }

    /// Use a borough's enrolment code: record the link certificate the hub has just issued the
    /// borough server, and mark the code used. A certificate the borough had before is replaced
    /// (a live link made with it ends).
    ///
    /// A code enrols once: of two concurrent redeems of the same code exactly one succeeds.
    pub fn redeem_borough_enrolment(
        &self,
        token: &[u8],
        cert_fingerprint: [u8; 32],
    ) -> Result<Borough, RegistryError> {
        self.redeem_borough_enrolment_at(token, cert_fingerprint, now())
    }

    pub(super) fn redeem_borough_enrolment_at(
        &self,
        token: &[u8],
        cert_fingerprint: [u8; 32],
        at: OffsetDateTime,
    ) -> Result<Borough, RegistryError> {
        let fingerprint = hex::encode(cert_fingerprint);
        let _w = self.lock();
        let (mut pending, mut borough) = self.check_borough_enrolment_at(token, at)?;
        if let Some(other) = self.get::<BoroughId>(ns::BOROUGH_CERTS, &fingerprint)? {
            if other != borough.id {
                return Err(RegistryError::BoroughCertificateInUse(other));
            }
        }
        if let Some(device) = self.get::<DeviceId>(ns::DEVICE_CERTS, &fingerprint)? {
            return Err(RegistryError::CertificateInUse(device));
        }
        // The code first: a crash after this wastes the code but can never let it enrol twice.
        pending.used_at = Some(at);
        self.put(ns::BOROUGH_ENROLMENTS, &pending.token_hash, &pending)?;
        // Then the new index entry, the record, and only then the old entry's removal: at every
        // crash point the index is a superset of the truth, and lookups check the record.
        self.put(ns::BOROUGH_CERTS, &fingerprint, &borough.id)?;
        let replaced = borough
            .cert_fingerprint
            .replace(fingerprint.clone())
            .filter(|old| *old != fingerprint);
        borough.status = DeviceStatus::Active;
        borough.enrolled_at = Some(at);
        self.put(ns::BOROUGHS, &borough.id.to_string(), &borough)?;
        if let Some(old) = replaced {
            self.store.delete_meta(ns::BOROUGH_CERTS, &old)?;
            tracing::info!(borough = %borough.id, "borough enrolled again: its old certificate is refused from now on");
            self.access_changed();
        } else {
            tracing::info!(borough = %borough.id, "borough enrolled");
        }
        Ok(borough)
    }

    /// The borough holding the link certificate with this SHA-256 fingerprint (of its DER), if any:
    /// how a link is matched to a borough. The caller checks its status.
    pub fn borough_by_cert(
        &self,
        fingerprint: &[u8; 32],
    ) -> Result<Option<Borough>, RegistryError> {
        let hex_fp = hex::encode(fingerprint);
        let Some(id) = self.get::<BoroughId>(ns::BOROUGH_CERTS, &hex_fp)? else {
            return Ok(None);
        };
        // Trust the borough's record, not the index alone.
        Ok(self
            .borough(&id)?
            .filter(|b| b.cert_fingerprint.as_deref() == Some(hex_fp.as_str())))
    }

    // ----- what a borough claims -----

    /// Record `teams` as `borough`'s: a team new to the hub is added as the borough's, one of the
    /// borough's own that the borough renamed is renamed. Teams the hub holds for the borough and
    /// the list leaves out are kept. Returns the ids of all the borough's teams afterwards.
    ///
    /// All or nothing: a team the hub holds for another borough (or for no borough), or two of the
    /// borough's teams ending up with one name, refuses the whole list before anything is written.
    pub fn claim_teams(
        &self,
        borough: &BoroughId,
        teams: &[TeamInfo],
    ) -> Result<Vec<TeamId>, RegistryError> {
        self.claim(borough, teams, &[])
    }

    /// Record `devices` as `borough`'s (see [`Registry::claim`]).
    pub fn claim_roster(
        &self,
        borough: &BoroughId,
        devices: &[RosterDevice],
    ) -> Result<(), RegistryError> {
        self.claim(borough, &[], devices).map(|_| ())
    }

    /// Record a borough's roster, its teams and its devices, as one: everything is checked before
    /// anything is written, under one lock, so a refused roster leaves nothing of itself (not its
    /// teams either). Teams as [`Registry::claim_teams`] says. A device new to the hub is recorded
    /// from now; one already the borough's keeps when the hub first heard of it and takes the
    /// practitioner the borough names now. Devices the list leaves out are kept (a revoked
    /// device's old changes are still relayed). A device, or a practitioner, belongs to one
    /// borough: one another borough claimed refuses the whole roster (else a borough could name
    /// its own device as another borough's practitioner, and write in their name). Returns the
    /// ids of all the borough's teams afterwards.
    pub fn claim(
        &self,
        borough: &BoroughId,
        teams: &[TeamInfo],
        devices: &[RosterDevice],
    ) -> Result<Vec<TeamId>, RegistryError> {
        let _w = self.lock();
        self.live_borough(borough)?;
        let team_writes = self.plan_teams(borough, teams)?;
        let (device_writes, practitioner_writes) = self.plan_roster(borough, devices)?;
        for team in &team_writes {
            self.put(ns::TEAMS, &team.id.to_string(), team)?;
            tracing::info!(%borough, team = %team.id, "borough's team recorded");
        }
        for practitioner in practitioner_writes {
            self.put(ns::ROSTER_PRACTITIONERS, &practitioner.to_string(), borough)?;
        }
        for (device, entry) in device_writes {
            self.put(ns::ROSTER, &device.to_string(), &entry)?;
            tracing::info!(%borough, %device, "borough's device recorded");
        }
        if !team_writes.is_empty() {
            self.access_changed();
        }
        self.borough_teams(borough)
    }

    /// The teams to write for a claim of `teams` by `borough`, checked (see
    /// [`Registry::claim_teams`]); nothing written.
    fn plan_teams(
        &self,
        borough: &BoroughId,
        teams: &[TeamInfo],
    ) -> Result<Vec<Team>, RegistryError> {
        let stored: HashMap<TeamId, Team> = self
            .scan::<Team>(ns::TEAMS)?
            .into_iter()
            .map(|t| (t.id, t))
            .collect();
        // The borough's teams as they will be: stored ones, with the claimed names over them.
        let mut after: BTreeMap<TeamId, String> = stored
            .values()
            .filter(|t| t.borough == Some(*borough))
            .map(|t| (t.id, t.name.clone()))
            .collect();
        let mut claimed: HashMap<TeamId, String> = HashMap::new();
        for info in teams {
            let name = clean_name("team", &info.name)?;
            if let Some(owner) = stored.get(&info.id).map(|t| t.borough) {
                if owner != Some(*borough) {
                    return Err(RegistryError::TeamOfAnotherBorough {
                        team: info.id,
                        name,
                        owner,
                    });
                }
            }
            if claimed
                .insert(info.id, name.clone())
                .is_some_and(|earlier| earlier != name)
            {
                return Err(RegistryError::ClaimedTwice {
                    what: "team",
                    id: info.id.to_string(),
                });
            }
            after.insert(info.id, name);
        }
        let mut names: HashMap<String, TeamId> = HashMap::new();
        for (id, name) in &after {
            if let Some(first) = names.insert(name_key(name), *id) {
                return Err(RegistryError::BoroughTeamsShareName {
                    borough: *borough,
                    name: name.clone(),
                    first,
                    second: *id,
                });
            }
        }
        let mut writes = Vec::new();
        for (id, name) in claimed {
            match stored.get(&id) {
                Some(team) if team.name == name => {}
                Some(team) => writes.push(Team {
                    name,
                    ..team.clone()
                }),
                None => writes.push(Team {
                    id,
                    name,
                    borough: Some(*borough),
                    created_at: now(),
                }),
            }
        }
        Ok(writes)
    }

    /// The roster entries and practitioner claims to write for a claim of `devices` by
    /// `borough`, checked (see [`Registry::claim`]); nothing written.
    #[allow(clippy::type_complexity)]
    fn plan_roster(
        &self,
        borough: &BoroughId,
        devices: &[RosterDevice],
    ) -> Result<(Vec<(DeviceId, RosterEntry)>, Vec<PractitionerId>), RegistryError> {
        let since = now();
        // Device → (the entry as it will be, whether it differs from the stored one).
        let mut after: HashMap<DeviceId, (RosterEntry, bool)> = HashMap::new();
        let mut practitioners: HashMap<PractitionerId, bool> = HashMap::new();
        for claim in devices {
            let practitioner_name = clean_name("practitioner", &claim.practitioner_name)?;
            let stored = self.roster_entry(&claim.device)?;
            if let Some(owner) = stored.as_ref().map(|e| e.borough) {
                if owner != *borough {
                    return Err(RegistryError::DeviceOfAnotherBorough {
                        device: claim.device,
                        owner,
                    });
                }
            }
            if let std::collections::hash_map::Entry::Vacant(v) =
                practitioners.entry(claim.practitioner)
            {
                let owner: Option<BoroughId> =
                    self.get(ns::ROSTER_PRACTITIONERS, &claim.practitioner.to_string())?;
                match owner {
                    Some(owner) if owner != *borough => {
                        return Err(RegistryError::PractitionerOfAnotherBorough {
                            practitioner: claim.practitioner,
                            owner,
                        })
                    }
                    Some(_) => {
                        v.insert(false);
                    }
                    None => {
                        v.insert(true);
                    }
                }
            }
            let entry = RosterEntry {
                borough: *borough,
                practitioner: claim.practitioner,
                practitioner_name,
                since: stored.as_ref().map_or(since, |e| e.since),
            };
            let changed = stored.as_ref() != Some(&entry);
            if let Some((earlier, _)) = after.insert(claim.device, (entry.clone(), changed)) {
                if earlier != entry {
                    return Err(RegistryError::ClaimedTwice {
                        what: "device",
                        id: claim.device.to_string(),
                    });
                }
            }
        }
        let devices = after
            .into_iter()
            .filter(|(_, (_, changed))| *changed)
            .map(|(device, (entry, _))| (device, entry))
            .collect();
        let practitioners = practitioners
            .into_iter()
            .filter(|(_, new)| *new)
            .map(|(p, _)| p)
            .collect();
        Ok((devices, practitioners))
    }

    /// The roster entry of `device`: the borough whose device it is, and its practitioner.
    pub fn roster_entry(&self, device: &DeviceId) -> Result<Option<RosterEntry>, RegistryError> {
        self.get(ns::ROSTER, &device.to_string())
    }
}
