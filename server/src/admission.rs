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
use crate::registry::{Device, DeviceStatus, Practitioner};
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
