//! What joining the trust hub gave this borough server, kept sealed in its store.

use polyphony_core::identity::{DeviceKey, EnrolmentCode};
use polyphony_core::store::{Store, StoreError};
use polyphony_core::BoroughId;
use serde::{Deserialize, Serialize};

use super::keep::RecoveryKey;

/// Store namespace of the membership.
const NS_HUB: &str = "hub";
const KEY_MEMBERSHIP: &str = "membership";

/// This borough's membership of the trust hub.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubMembership {
    /// The borough's id on the hub (in its link certificate).
    pub borough: BoroughId,
    /// The name the hub knows it by.
    pub name: String,
    /// Where the hub listens (host:port).
    pub hub: String,
    /// The hub's CA certificate, hex DER: the link trusts only a hub it certified.
    pub hub_ca: String,
    /// The borough's link certificate, hex DER.
    pub certificate: String,
    /// The link's private key, PEM. Sealed with the rest of the store; never leaves the borough.
    pub key_pem: String,
    /// When it joined (RFC 3339).
    pub joined_at: String,
    /// The key its copy kept on the hub is sealed under ([`super::keep`]), as text. Absent for a
    /// borough that joined before safekeeping: it joins again to have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_key: Option<String>,
}

impl HubMembership {
    /// The recovery key, if it has one that reads.
    pub fn recovery_key(&self) -> Option<RecoveryKey> {
        RecoveryKey::parse(self.recovery_key.as_deref()?).ok()
    }
}

impl std::fmt::Debug for HubMembership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("HubMembership")
            .field("borough", &self.borough)
            .field("name", &self.name)
            .field("hub", &self.hub)
            .field("joined_at", &self.joined_at)
            .finish_non_exhaustive()
    }
}

/// The membership, if this borough joined a hub.
pub fn load(store: &dyn Store) -> Result<Option<HubMembership>, StoreError> {
    let Some(bytes) = store.get_meta(NS_HUB, KEY_MEMBERSHIP)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Engine(format!("the stored hub membership is unreadable: {e}")))
}

/// Keep the membership (replacing one kept before), durably.
pub fn save(store: &dyn Store, membership: &HubMembership) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(membership).expect("the membership serialises");
    store.put_meta(NS_HUB, KEY_MEMBERSHIP, &bytes)?;
    store.flush()
}

/// Join the trust hub at `hub` with the one-time `code` its administrator issued for this
/// borough: a new link key is made here (it never leaves this server), and the hub, verified by
/// the CA fingerprint the code carries, certifies it. The borough's copy on the hub will be
/// sealed under `recovery`. What to keep is returned; nothing is stored here (the caller hands it
/// to the running server, or to the store, through administration).
pub async fn join(
    hub: &str,
    code: &str,
    name: &str,
    recovery: &RecoveryKey,
) -> Result<HubMembership, String> {
    let code: EnrolmentCode = code
        .trim()
        .parse()
        .map_err(|e| format!("the code is not one the trust hub issues: {e}"))?;
    let key = DeviceKey::generate().map_err(|e| format!("could not make a link key: {e}"))?;
    let enrolled = polyphony_core::net::enrol_borough(hub, &code, name, &key)
        .await
        .map_err(|e| format!("the trust hub at {hub} did not enrol this borough: {e}"))?;
    let joined_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| e.to_string())?;
    Ok(HubMembership {
        borough: enrolled.borough,
        name: enrolled.name,
        hub: hub.to_string(),
        hub_ca: enrolled.ca,
        certificate: enrolled.certificate,
        key_pem: key.to_pem(),
        joined_at,
        recovery_key: Some(recovery.to_text()),
    })
}
