//! Admission: whether the device behind a sync connection may start a session. The rules, with no
//! I/O: the device must be enrolled, present the certificate issued to it, not be revoked (a device
//! past its time to upload before wiping becomes revoked here), and have a registered
//! practitioner. Refusals that say something about the device are audited.
//!
//! The listener (an I/O driver) takes the peer's certificate from the QUIC connection and hands
//! its bytes to [`admit`]; the unit tests call it with certificates issued by a CA of their own,
//! with no sockets.

use polyphony_core::identity;
use polyphony_core::sync::ErrorCode;
use polyphony_core::DeviceId;
use rustls::pki_types::CertificateDer;

use crate::audit::{Actor, AuditAction};
use crate::config::ServerRole;
use crate::registry::{Borough, Device, DeviceStatus, Practitioner};
use crate::session::Shared;

/// Why a connection is refused before its session starts: the code, and what the device is told.
pub(crate) type Refused = (ErrorCode, String);

fn refused(code: ErrorCode, message: &str) -> Refused {
    (code, message.to_string())
}

/// The device whose certificate (DER, as the peer presented it; none if it presented none) is
/// `cert`, and its practitioner, if it may sync: enrolled, with the certificate issued to it
/// ([`enrolled_device`]), and not revoked ([`may_sync`]). Refusals that say something about the
/// device are audited.
pub(crate) fn admit(
    shared: &Shared,
    cert: Option<&[u8]>,
) -> Result<(Device, Practitioner), Refused> {
    let device = enrolled_device(shared, cert)?;
    may_sync(shared, device)
}

/// Who is behind a sync connection, once admitted.
pub(crate) enum Admitted {
    /// A device, on a borough server.
    Device(Device, Practitioner),
    /// A borough server's link, on the trust hub.
    Borough(Borough),
}

/// Admit a sync connection by its certificate, as the server's role allows: devices on a borough
/// server ([`admit`]), borough servers on the trust hub ([`admit_borough`]). A certificate of the
/// other kind is refused, in words that say where it belongs (audited).
pub(crate) fn admit_peer(
    shared: &Shared,
    role: ServerRole,
    cert: Option<&[u8]>,
) -> Result<Admitted, Refused> {
    let name = cert.and_then(|c| identity::peer_name_from_cert(&CertificateDer::from(c)).ok());
    match (role, name) {
        (ServerRole::Hub, Some(identity::PeerName::Borough(_))) => {
            admit_borough(shared, cert).map(Admitted::Borough)
        }
        (ServerRole::Borough, Some(identity::PeerName::Borough(_))) => {
            shared.audit(
                Actor::Server,
                AuditAction::Refused,
                None,
                "a borough server's link certificate at a borough server",
            );
            Err(refused(
                ErrorCode::Unauthorised,
                "this is a borough server, not the trust hub: a borough's link connects to the hub",
            ))
        }
        (ServerRole::Hub, _) => {
            shared.audit(
                Actor::Server,
                AuditAction::Refused,
                None,
                "a device (or no certificate) at the trust hub",
            );
            Err(refused(
                ErrorCode::Unauthorised,
                "this is the trust hub: devices sync with their borough server",
            ))
        }
        (ServerRole::Borough, _) => {
            admit(shared, cert).map(|(device, practitioner)| Admitted::Device(device, practitioner))
        }
    }
}

/// The enrolled borough the certificate names, if the certificate is the one issued to it and
/// the borough is not revoked (a revoked borough is refused, and audited).
pub(crate) fn admit_borough(shared: &Shared, cert: Option<&[u8]>) -> Result<Borough, Refused> {
    let Some(cert) = cert.map(CertificateDer::from) else {
        return Err(refused(
            ErrorCode::Unauthorised,
            "no borough certificate: join the trust hub first",
        ));
    };
    let named = match identity::peer_name_from_cert(&cert) {
        Ok(identity::PeerName::Borough(id)) => id.parse::<polyphony_core::BoroughId>().ok(),
        _ => None,
    };
    let fingerprint = identity::cert_fingerprint(&cert);
    let borough = shared.registry.borough_by_cert(&fingerprint).ok().flatten();
    let Some(borough) = borough.filter(|b| Some(b.id) == named) else {
        shared.audit(
            Actor::Server,
            AuditAction::Refused,
            None,
            "a borough certificate this hub did not issue to an enrolled borough (or one replaced since)",
        );
        return Err(refused(
            ErrorCode::Unauthorised,
            "this borough server is not enrolled with this trust hub (or its certificate was replaced): ask the hub's administrator for a code and join again",
        ));
    };
    if borough.status == DeviceStatus::Revoked {
        shared.audit(
            Actor::Borough {
                borough: borough.id,
            },
            AuditAction::Refused,
            None,
            "revoked borough tried to connect",
        );
        return Err(refused(
            ErrorCode::Revoked,
            "this borough server was revoked by the trust hub's administrator: its cases stay safe on the hub",
        ));
    }
    Ok(borough)
}

/// The enrolled device the certificate names, if the certificate is the one issued to it.
fn enrolled_device(shared: &Shared, cert: Option<&[u8]>) -> Result<Device, Refused> {
    let Some(cert) = cert.map(CertificateDer::from) else {
        return Err(refused(
            ErrorCode::Unauthorised,
            "no device certificate: enrol this device first",
        ));
    };
    let device_id = identity::device_id_from_cert(&cert)
        .ok()
        .and_then(|d| d.parse::<DeviceId>().ok());
    let device = device_id.and_then(|d| shared.registry.device(&d).ok().flatten());
    let Some(device) = device else {
        shared.audit(
            Actor::Server,
            AuditAction::Refused,
            None,
            "a certificate for an unknown device",
        );
        return Err(refused(
            ErrorCode::Unauthorised,
            "this device is not enrolled with this server",
        ));
    };
    if device.cert_fingerprint != hex::encode(identity::cert_fingerprint(&cert)) {
        shared.audit(
            device_actor(&device),
            AuditAction::Refused,
            None,
            "certificate does not match the enrolled one",
        );
        return Err(refused(
            ErrorCode::Unauthorised,
            "this certificate is not the one issued to this device: enrol again",
        ));
    }
    Ok(device)
}

/// The device as it stands now (one past its time to upload before wiping becomes revoked), and
/// its practitioner, unless the device is revoked or its practitioner gone.
fn may_sync(shared: &Shared, device: Device) -> Result<(Device, Practitioner), Refused> {
    let device = shared.expire_revoking(device).map_err(|e| {
        (
            ErrorCode::Internal,
            format!("the server could not read its registry: {e}"),
        )
    })?;
    if device.status == DeviceStatus::Revoked {
        shared.audit(
            device_actor(&device),
            AuditAction::Refused,
            None,
            "revoked device tried to connect",
        );
        return Err(refused(ErrorCode::Revoked, "this device was revoked by your administrator: its data stays safe on the server; ask for a new enrolment"));
    }
    let Ok(Some(practitioner)) = shared.registry.practitioner(&device.practitioner) else {
        return Err(refused(
            ErrorCode::Unauthorised,
            "this device's practitioner is no longer registered",
        ));
    };
    Ok((device, practitioner))
}

/// The device as the actor of what it does, for the audit log.
pub(crate) fn device_actor(device: &Device) -> Actor {
    Actor::Device {
        device: device.id,
        practitioner: device.practitioner,
    }
}

#[cfg(test)]
mod tests;
