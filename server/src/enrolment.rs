//! Enrolment: a new device proves itself with a one-time code and gets a certificate from the
//! borough CA. Rate-limited per address, audited, and answered only once the registration is
//! durable. The QUIC connection is the listener's; [`register`] is the exchange's decision, with
//! no I/O. The rest is an I/O driver, like the listener: it awaits the device over quinn and the
//! registration's durability through [`CoreDriver`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use polyphony_core::identity::{self, BoroughCa};
use polyphony_core::net::FramedStream;
use polyphony_core::sync::{
    BoroughEnrolRequest, BoroughEnrolled, EnrolRequest, Enrolled, ErrorCode, Frame, Refusal,
    TeamInfo, PROTOCOL_VERSION,
};

use crate::audit::{Actor, AuditAction};
use crate::config::ServerRole;
use crate::driver::CoreDriver;
use crate::limits::Admit;
use crate::registry::RegistryError;
use crate::session::Shared;

/// Serve one enrolment connection: refused at once past the address's rate, else the exchange.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    driver: Arc<CoreDriver>,
    ca: Arc<BoroughCa>,
    conn: quinn::Connection,
    role: ServerRole,
) {
    let source = conn.remote_address().ip();
    if let Admit::TooMany { report } = shared
        .limits
        .enrolment_attempt(source, std::time::Instant::now())
    {
        if let Some(n) = report {
            shared.audit(
                Actor::Server,
                AuditAction::Refused,
                None,
                format!(
                    "{n} enrolment attempts from {source} refused this minute for their rate (over {})",
                    crate::limits::MAX_ENROLMENTS_PER_WINDOW
                ),
            );
        }
        conn.close(
            (ErrorCode::Busy as u32).into(),
            b"too many enrolment attempts from this address: wait a minute and try again",
        );
        return;
    }
    enrol(shared, driver, ca, conn, source, role).await;
}

/// A registry refusal in words for the person enrolling: those about the code and the device say
/// what to do already; anything else (the server's own storage) is the administrator's.
fn for_the_device(e: RegistryError) -> String {
    match e {
        RegistryError::EnrolmentUnknown
        | RegistryError::EnrolmentUsed { .. }
        | RegistryError::EnrolmentExpired { .. }
        | RegistryError::DeviceAlreadyEnrolled(_) => e.to_string(),
        other => {
            format!("the server could not enrol this device ({other}): tell your administrator")
        }
    }
}

/// Check the one-time code, sign the device's CSR, register the device (and audit it): what the
/// device is told it enrolled as, or why not.
///
/// Every reason says what the person enrolling can do about it, so the device shows it as it is
/// (the CLI and the app branch on the refusal's code, never on these words).
fn register(shared: &Shared, ca: &BoroughCa, req: &EnrolRequest) -> Result<Enrolled, String> {
    let token = hex::decode(&req.token).map_err(|_| {
        "the enrolment code is malformed: check it is typed as given, or ask your administrator \
         for a new code"
            .to_string()
    })?;
    let csr = hex::decode(&req.csr).map_err(|_| {
        "the device's certificate request is malformed (a fault in the app, not the code): tell \
         your administrator"
            .to_string()
    })?;
    shared
        .registry
        .check_enrolment(&token, &req.device)
        .map_err(for_the_device)?;
    let cert = ca
        .issue_device_cert(&req.device.to_string(), &csr, time::Duration::days(365 * 2))
        .map_err(|e| {
            format!(
                "the server could not sign this device's certificate ({e}): tell your \
                 administrator"
            )
        })?;
    let fingerprint = identity::cert_fingerprint(&cert);
    let (device, practitioner) = shared
        .registry
        .redeem_enrolment(&token, req.device, &req.device_name, fingerprint)
        .map_err(for_the_device)?;
    let teams = shared.registry.teams().map_err(for_the_device)?;
    let teams = teams
        .into_iter()
        .filter(|t| practitioner.teams.contains(&t.id))
        .map(|t| TeamInfo {
            id: t.id,
            name: t.name,
        })
        .collect();
    shared.audit(
        Actor::Device {
            device: device.id,
            practitioner: practitioner.id,
        },
        AuditAction::Enrol,
        None,
        format!(
            "device '{}' enrolled for {}",
            device.name, practitioner.name
        ),
    );
    Ok(Enrolled {
        device: device.id,
        practitioner: practitioner.id,
        practitioner_name: practitioner.name,
        teams,
        certificate: hex::encode(cert.as_ref()),
        ca: hex::encode(ca.cert_der().as_ref()),
        servers: shared.advertise.clone(),
    })
}

/// Check a borough's one-time code, sign its link key's CSR with the hub's CA, and record its
/// certificate (and audit it): what the borough is told it enrolled as, or why not.
fn register_borough(
    shared: &Shared,
    ca: &BoroughCa,
    req: &BoroughEnrolRequest,
) -> Result<BoroughEnrolled, String> {
    let token = hex::decode(&req.token).map_err(|_| {
        "the code is malformed: check it is typed as given, or ask the trust hub's administrator \
         for a new one"
            .to_string()
    })?;
    let csr = hex::decode(&req.csr)
        .map_err(|_| "the borough's certificate request is malformed".to_string())?;
    let for_the_borough = |e: RegistryError| match e {
        RegistryError::EnrolmentUnknown
        | RegistryError::EnrolmentUsed { .. }
        | RegistryError::EnrolmentExpired { .. } => e.to_string(),
        other => {
            format!("the trust hub could not enrol this borough ({other}): tell its administrator")
        }
    };
    let (_, borough) = shared
        .registry
        .check_borough_enrolment(&token)
        .map_err(for_the_borough)?;
    let cert = ca.issue_borough_cert(&csr, &borough.id).map_err(|e| {
        format!(
            "the trust hub could not sign this borough's certificate ({e}): tell its administrator"
        )
    })?;
    let borough = shared
        .registry
        .redeem_borough_enrolment(&token, identity::cert_fingerprint(&cert))
        .map_err(for_the_borough)?;
    shared.audit(
        Actor::Borough {
            borough: borough.id,
        },
        AuditAction::Enrol,
        None,
        format!(
            "borough '{}' joined (it calls itself '{}')",
            borough.name,
            req.name
                .chars()
                .take(crate::registry::MAX_NAME_CHARS)
                .collect::<String>()
        ),
    );
    Ok(BoroughEnrolled {
        borough: borough.id,
        name: borough.name,
        certificate: hex::encode(cert.as_ref()),
        ca: hex::encode(ca.cert_der().as_ref()),
    })
}

/// A refused enrolment (`what`: a device's or a borough's), unauthenticated: audited at the 1st,
/// 2nd, 4th, 8th... failure of each address per minute, with the count (see crate::limits).
fn refused(shared: &Shared, source: IpAddr, what: &str, msg: String) -> Frame {
    if let Some(n) = shared.limits.enrolment_failed(source) {
        shared.audit(
            Actor::Server,
            AuditAction::Refused,
            None,
            format!(
                "{what} from {source} refused: {msg} ({n} failed from this address this minute)"
            ),
        );
    }
    Frame::Error(Refusal {
        code: ErrorCode::BadEnrolment,
        message: msg,
    })
}

/// The enrolment exchange: check the one-time code, sign the CSR, register the device (on a
/// borough server) or the borough (on the trust hub).
async fn enrol(
    shared: Arc<Shared>,
    driver: Arc<CoreDriver>,
    ca: Arc<BoroughCa>,
    conn: quinn::Connection,
    source: IpAddr,
    role: ServerRole,
) {
    let Ok(Ok((send, recv))) =
        tokio::time::timeout(Duration::from_secs(30), conn.accept_bi()).await
    else {
        return;
    };
    let mut stream = FramedStream::with_limit(send, recv, 64 * 1024);
    let refuse = |code: ErrorCode, message: String| Frame::Error(Refusal { code, message });
    // Noted before the registry is written, for the ticket below (see GroupCommit::wrote_in).
    let generation = shared.storage.group.generation();
    let reply = match (role, stream.read_frame().await) {
        (ServerRole::Borough, Ok(Some(Frame::Enrol(req)))) if req.version == PROTOCOL_VERSION => {
            let result = register(&shared, &ca, &req).map(Frame::Enrolled);
            match result {
                Ok(e) => e,
                Err(msg) => refused(&shared, source, "enrolment", msg),
            }
        }
        (ServerRole::Hub, Ok(Some(Frame::EnrolBorough(req))))
            if req.version == PROTOCOL_VERSION =>
        {
            match register_borough(&shared, &ca, &req) {
                Ok(e) => Frame::BoroughEnrolled(e),
                Err(msg) => refused(&shared, source, "borough enrolment", msg),
            }
        }
        (ServerRole::Borough, Ok(Some(Frame::Enrol(_))))
        | (ServerRole::Hub, Ok(Some(Frame::EnrolBorough(_)))) => refuse(
            ErrorCode::UnsupportedVersion,
            "update the app to enrol with this server".into(),
        ),
        (ServerRole::Hub, Ok(Some(Frame::Enrol(_)))) => refuse(
            ErrorCode::BadEnrolment,
            "this is the trust hub: enrol devices with your borough server".into(),
        ),
        (ServerRole::Borough, Ok(Some(Frame::EnrolBorough(_)))) => refuse(
            ErrorCode::BadEnrolment,
            "this is a borough server, not the trust hub: join the hub at its own address".into(),
        ),
        _ => refuse(ErrorCode::Malformed, "expected an enrolment request".into()),
    };
    // The device must be durably registered before it is told it is enrolled.
    let ticket = shared.storage.group.wrote_in(generation);
    let reply = match driver.durable(ticket).await {
        Ok(()) => reply,
        Err(e) => refuse(
            ErrorCode::StorageFailed,
            format!("the server could not save the enrolment: {e}"),
        ),
    };
    // Either way the device must get to read the answer before the connection goes.
    let _ = stream.write_frames(&[reply]).await;
    let _ = stream.send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await;
}
