//! Administration of the trust hub (boroughs: add, enrol, revoke, list) and of a borough's
//! membership of it (joined, status).

use polyphony_core::BoroughId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{json, Admin, AdminError, TeamRef};
use crate::audit::AuditAction;
use crate::config::ServerRole;
use crate::hub_link::{self, HubMembership, LinkState};
use crate::registry::{rfc3339, Borough, DeviceStatus};

/// A borough as the hub's administrator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoroughView {
    /// The borough.
    pub borough: Borough,
    /// Its teams, as its link last announced them.
    pub teams: Vec<TeamRef>,
    /// How many cases the hub holds for its teams.
    pub cases: usize,
}

/// A new code for a borough server to join the hub, shown this once (the hub keeps its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedBoroughCode {
    /// The code to give the borough's administrator.
    pub code: String,
    /// The borough it is for.
    pub borough: BoroughId,
    /// Its name.
    pub name: String,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
}

/// A borough server's membership of the trust hub, and its link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubStatus {
    /// Whether it joined a hub.
    pub joined: bool,
    /// Its id on the hub.
    pub borough: Option<BoroughId>,
    /// The name the hub knows it by.
    pub name: Option<String>,
    /// The hub's address.
    pub hub: Option<String>,
    /// When it joined (RFC 3339).
    pub joined_at: Option<String>,
    /// The link's state (none when the server is not running: this command opened the store).
    pub link: Option<LinkState>,
    /// How many cases the borough holds.
    pub cases: usize,
    /// How many of them hold a change the hub has not acknowledged (after its fsync) yet.
    pub not_on_hub: usize,
    /// What the hub keeps of this borough to rebuild it from, as the borough last heard (none
    /// when it has not joined).
    #[serde(default)]
    pub safekeeping: Option<hub_link::Safekeeping>,
    /// How many files (attachments) the borough's records name that the hub is not known to
    /// hold (held here and not yet sent; or held on neither side yet).
    #[serde(default)]
    pub files_not_on_hub: usize,
    /// Transfers asked for that the hub has not confirmed (or refused).
    #[serde(default)]
    pub transfers: Vec<hub_link::transfer::PendingTransfer>,
}

impl Admin {
    pub(super) fn hub_only(&self, what: &str) -> Result<(), AdminError> {
        if self.role == ServerRole::Hub {
            return Ok(());
        }
        Err(AdminError::WrongRole(format!(
            "{what} is for the trust hub (`role = \"hub\"` in its configuration); this is a borough server"
        )))
    }

    fn borough_only(&self, what: &str) -> Result<(), AdminError> {
        if self.role == ServerRole::Borough {
            return Ok(());
        }
        Err(AdminError::WrongRole(format!(
            "{what} is for a borough server; this is the trust hub"
        )))
    }

    fn borough_view(&self, borough: Borough) -> Result<BoroughView, AdminError> {
        let ids = self.registry.borough_teams(&borough.id)?;
        let mut teams = Vec::with_capacity(ids.len());
        for id in &ids {
            let name = self
                .registry
                .team_by_id(id)?
                .map_or_else(|| "(unknown team)".to_string(), |t| t.name);
            teams.push(TeamRef { id: *id, name });
        }
        let cases = self.registry.cases_of_teams(&ids)?.len();
        Ok(BoroughView {
            borough,
            teams,
            cases,
        })
    }

    pub(super) fn borough_add(&self, name: &str) -> Result<serde_json::Value, AdminError> {
        self.hub_only("adding a borough")?;
        let borough = self.registry.add_borough(name)?;
        self.audit(
            AuditAction::BoroughAdded,
            None,
            format!("borough {} '{}'", borough.id, borough.name),
            || format!("borough '{}' was added", borough.name),
        )?;
        json(&self.borough_view(borough)?)
    }

    pub(super) fn boroughs(&self) -> Result<serde_json::Value, AdminError> {
        self.hub_only("listing boroughs")?;
        let views = self
            .registry
            .boroughs()?
            .into_iter()
            .map(|b| self.borough_view(b))
            .collect::<Result<Vec<_>, _>>()?;
        json(&views)
    }

    pub(super) fn borough_enrol(&self, borough: &str) -> Result<serde_json::Value, AdminError> {
        self.hub_only("a borough's code to join")?;
        let b = self.registry.borough_by(borough)?;
        let code = self.registry.create_borough_enrolment(
            b.id,
            self.ca_fingerprint,
            self.enrolment_ttl,
        )?;
        let expires_at = OffsetDateTime::now_utc() + self.enrolment_ttl;
        self.audit(
            AuditAction::EnrolmentIssued,
            None,
            format!(
                "for borough {}, valid until about {}",
                b.id,
                rfc3339(expires_at)
            ),
            || format!("a code for borough '{}' was issued", b.name),
        )?;
        json(&IssuedBoroughCode {
            code: code.to_string(),
            borough: b.id,
            name: b.name,
            expires_at: rfc3339(expires_at),
        })
    }

    pub(super) fn borough_revoke(&self, borough: &str) -> Result<serde_json::Value, AdminError> {
        self.hub_only("revoking a borough")?;
        let b = self.registry.borough_by(borough)?;
        let b = self
            .registry
            .set_borough_status(&b.id, DeviceStatus::Revoked)?;
        self.audit(
            AuditAction::Revoke,
            None,
            format!("borough {} '{}' revoked: its link is refused", b.id, b.name),
            || format!("borough '{}' was revoked", b.name),
        )?;
        json(&self.borough_view(b)?)
    }

    pub(super) fn hub_joined(
        &self,
        membership: HubMembership,
    ) -> Result<serde_json::Value, AdminError> {
        self.borough_only("joining the trust hub")?;
        let storage = self.storage()?;
        let before = hub_link::membership::load(&*storage.store)?;
        // Receipts from another hub (or from this one for another borough) vouch for nothing
        // here: forgotten before the new membership is kept, so a device is never told a change
        // is on a hub that does not hold it.
        let same_hub = before
            .as_ref()
            .is_some_and(|b| b.hub_ca == membership.hub_ca && b.borough == membership.borough);
        if !same_hub {
            hub_link::forget_acked(&*storage.store)?;
        }
        // A copy sealed under another key (or kept by another hub) does not open with this
        // membership's key: the whole copy is sent again under it.
        let same_key = same_hub
            && before
                .as_ref()
                .is_some_and(|b| b.recovery_key == membership.recovery_key);
        if !same_key {
            hub_link::keep::forget_kept(&*storage.store)?;
        }
        hub_link::membership::save(&*storage.store, &membership)?;
        let detail = match before {
            Some(b) => format!(
                "joined the trust hub at {} as borough {} '{}' (replacing its membership as {} at {})",
                membership.hub, membership.borough, membership.name, b.borough, b.hub
            ),
            None => format!(
                "joined the trust hub at {} as borough {} '{}'",
                membership.hub, membership.borough, membership.name
            ),
        };
        self.audit(AuditAction::HubJoined, None, detail, || {
            "the borough joined the trust hub".to_string()
        })?;
        if let Some(link) = &self.link {
            link.joined();
        }
        self.hub_status()
    }

    pub(super) fn case_transfer(
        &self,
        case: polyphony_core::CaseId,
        borough: &str,
        team: &str,
    ) -> Result<serde_json::Value, AdminError> {
        self.borough_only("transferring a case to another borough")?;
        let storage = self.storage()?;
        if hub_link::membership::load(&*storage.store)?.is_none() {
            return Err(AdminError::BadValue(
                "this borough server has not joined a trust hub: a case goes to another borough through it (`polyphony-server hub join`)".into(),
            ));
        }
        let pending =
            hub_link::transfer::request(&*storage.store, &self.registry, case, borough, team)
                .map_err(AdminError::BadValue)?;
        self.audit(
            AuditAction::CaseMoved,
            Some(case),
            format!(
                "transfer to the {} borough's team '{}' asked for; it happens when the trust hub confirms it",
                pending.borough, pending.team
            ),
            || format!("the transfer of case {case} was asked for"),
        )?;
        if let Some(link) = &self.link {
            link.transfer_asked();
        }
        json(&pending)
    }

    pub(super) fn hub_status(&self) -> Result<serde_json::Value, AdminError> {
        self.borough_only("the hub link's status")?;
        let storage = self.storage()?;
        let membership = hub_link::membership::load(&*storage.store)?;
        let cases = self.registry.cases()?;
        let mut not_on_hub = 0;
        let mut files_not_on_hub = 0;
        let foreign = self.registry.foreign_teams()?;
        for (case, team) in &cases {
            let Some(stored) = storage
                .case(case)
                .map_err(|e| AdminError::BadValue(e.to_string()))?
            else {
                continue;
            };
            let (heads, files) = {
                let mut c = stored.lock().expect("case lock");
                (
                    c.doc.get_heads(),
                    polyphony_core::model::attachments::referenced_blobs(&c.doc),
                )
            };
            if !foreign.contains(team) {
                files_not_on_hub += hub_link::files::not_on_hub(&*storage.store, case, &files)?;
            }
            let acked = hub_link::acked_heads(&*storage.store, case)?;
            if !hub_link::on_hub(&heads, acked.as_deref()) {
                not_on_hub += 1;
            }
        }
        json(&HubStatus {
            joined: membership.is_some(),
            borough: membership.as_ref().map(|m| m.borough),
            name: membership.as_ref().map(|m| m.name.clone()),
            hub: membership.as_ref().map(|m| m.hub.clone()),
            joined_at: membership.as_ref().map(|m| m.joined_at.clone()),
            link: self.link.as_ref().map(|l| l.state()),
            cases: cases.len(),
            not_on_hub,
            files_not_on_hub,
            safekeeping: match &membership {
                Some(m) => Some(
                    hub_link::keep::safekeeping(&*storage.store, &self.registry, Some(m))
                        .map_err(AdminError::BadValue)?,
                ),
                None => None,
            },
            transfers: hub_link::transfer::pending(&*storage.store)
                .map_err(AdminError::BadValue)?,
        })
    }

    pub(super) fn storage(&self) -> Result<&crate::storage::ServerStorage, AdminError> {
        self.storage.as_deref().ok_or_else(|| {
            AdminError::BadValue("this administration has no access to the server's store".into())
        })
    }
}
