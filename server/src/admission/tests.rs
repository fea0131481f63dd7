//! The admission rules, with no sockets: certificates issued by a CA made for the test, handed to
//! [`admit`] as the listener hands it a peer's.

use std::sync::Arc;

use polyphony_core::identity::{cert_fingerprint, BoroughCa, DeviceKey};
use polyphony_core::store::{MemoryStore, Store};
use polyphony_core::{DeviceId, TeamId};

use super::*;
use crate::audit::AuditLog;
use crate::registry::Registry;
use crate::storage::ServerStorage;

/// A server over an in-memory store with team North, Sam in it, and Sam's enrolled laptop.
struct Fixture {
    store: Arc<dyn Store>,
    shared: Shared,
    ca: BoroughCa,
    north: TeamId,
    /// The laptop's certificate, the one issued to it.
    cert: CertificateDer<'static>,
    device: Device,
    practitioner: Practitioner,
}

/// A certificate naming `device`, from the fixture's CA, for a fresh key.
fn issue(ca: &BoroughCa, device: DeviceId) -> CertificateDer<'static> {
    let key = DeviceKey::generate().expect("key");
    let csr = key.csr_der("laptop").expect("csr");
    ca.issue_device_cert(&device.to_string(), &csr, time::Duration::days(365))
        .expect("certificate")
}

/// The fixture, with devices allowed `revoking_limit` to upload before wiping.
fn fixture_with(revoking_limit: time::Duration) -> Fixture {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let registry = Arc::new(Registry::new(store.clone()));
    let ca = BoroughCa::generate("Test borough").expect("ca");
    let north = registry.add_team("North").expect("team").id;
    let sam = registry
        .add_practitioner("Sam", north)
        .expect("practitioner");
    let code = registry
        .create_enrolment(sam.id, ca.fingerprint(), time::Duration::hours(1))
        .expect("code");
    let id = DeviceId::random();
    let cert = issue(&ca, id);
    let (device, practitioner) = registry
        .redeem_enrolment(code.token(), id, "laptop", cert_fingerprint(&cert))
        .expect("enrolled");
    let shared = Shared {
        storage: Arc::new(ServerStorage::new(store.clone(), 16)),
        registry,
        audit: Arc::new(AuditLog::open(store.clone()).expect("audit")),
        max_frame: polyphony_core::sync::DEFAULT_MAX_FRAME,
        revoking_limit,
        moved_upload_limit: time::Duration::days(14),
        max_new_cases: crate::session::MAX_PROVISIONAL,
        advertise: Vec::new(),
        ca: None,
        limits: Default::default(),
    };
    Fixture {
        store,
        shared,
        ca,
        north,
        cert,
        device,
        practitioner,
    }
}

fn fixture() -> Fixture {
    fixture_with(time::Duration::days(14))
}

impl Fixture {
    fn admit(&self, cert: &CertificateDer<'_>) -> Result<(Device, Practitioner), Refused> {
        admit(&self.shared, Some(cert))
    }

    /// The last audit record: its actor, action and detail.
    fn last_audit(&self) -> Option<(Actor, AuditAction, String)> {
        let entries = self.shared.audit.entries(None).expect("audit");
        entries.last().map(|r| {
            (
                r.event.actor.clone(),
                r.event.action,
                r.event.detail.clone(),
            )
        })
    }

    fn audited(&self) -> usize {
        self.shared.audit.entries(None).expect("audit").len()
    }
}

#[test]
fn an_enrolled_device_with_its_certificate_is_admitted_as_it_stands() {
    let f = fixture();
    let before = f.audited();
    let (device, practitioner) = f.admit(&f.cert).expect("admitted");
    assert_eq!(device, f.device);
    assert_eq!(practitioner, f.practitioner);
    assert_eq!(
        f.audited(),
        before,
        "an admission is audited by the session, not here"
    );
}

#[test]
fn a_connection_without_a_certificate_is_told_to_enrol() {
    let f = fixture();
    let before = f.audited();
    assert_eq!(
        admit(&f.shared, None),
        Err((
            ErrorCode::Unauthorised,
            "no device certificate: enrol this device first".to_string()
        ))
    );
    assert_eq!(f.audited(), before);
}

#[test]
fn an_unknown_device_is_refused_and_audited() {
    let f = fixture();
    // Issued by the borough CA, for a device this server never enrolled.
    let stranger = issue(&f.ca, DeviceId::random());
    let unknown = Err((
        ErrorCode::Unauthorised,
        "this device is not enrolled with this server".to_string(),
    ));
    assert_eq!(f.admit(&stranger), unknown);
    assert_eq!(
        f.last_audit(),
        Some((
            Actor::Server,
            AuditAction::Refused,
            "a certificate for an unknown device".to_string()
        ))
    );
    // Bytes that are no certificate at all get the same answer.
    assert_eq!(admit(&f.shared, Some(b"not a certificate")), unknown);
}

#[test]
fn another_certificate_naming_an_enrolled_device_is_refused_and_audited() {
    let f = fixture();
    let copy = issue(&f.ca, f.device.id);
    assert_eq!(
        f.admit(&copy),
        Err((
            ErrorCode::Unauthorised,
            "this certificate is not the one issued to this device: enrol again".to_string()
        ))
    );
    assert_eq!(
        f.last_audit(),
        Some((
            device_actor(&f.device),
            AuditAction::Refused,
            "certificate does not match the enrolled one".to_string()
        ))
    );
}

#[test]
fn a_revoked_device_is_refused_and_audited() {
    let f = fixture();
    f.shared
        .registry
        .set_device_status(&f.device.id, DeviceStatus::Revoked)
        .expect("revoked");
    assert_eq!(
        f.admit(&f.cert),
        Err((
            ErrorCode::Revoked,
            "this device was revoked by your administrator: its data stays safe on the server; ask for a new enrolment".to_string()
        ))
    );
    assert_eq!(
        f.last_audit(),
        Some((
            device_actor(&f.device),
            AuditAction::Refused,
            "revoked device tried to connect".to_string()
        ))
    );
}

#[test]
fn a_device_being_revoked_is_admitted_to_upload_until_its_time_runs_out() {
    let f = fixture();
    f.shared
        .registry
        .set_device_status(&f.device.id, DeviceStatus::Revoking)
        .expect("revoking");
    let (device, _) = f.admit(&f.cert).expect("admitted to upload");
    assert_eq!(device.status, DeviceStatus::Revoking);

    let f = fixture_with(time::Duration::ZERO);
    f.shared
        .registry
        .set_device_status(&f.device.id, DeviceStatus::Revoking)
        .expect("revoking");
    let (code, _) = f.admit(&f.cert).expect_err("its time ran out");
    assert_eq!(code, ErrorCode::Revoked);
    let now = f.shared.registry.device(&f.device.id).expect("read");
    assert_eq!(now.map(|d| d.status), Some(DeviceStatus::Revoked));
}

#[test]
fn a_practitioner_removed_from_a_team_is_admitted_without_it() {
    let f = fixture();
    f.shared
        .registry
        .remove_practitioner_from_team(&f.practitioner.id, f.north)
        .expect("removed");
    // Admitted as the registry has the practitioner now: the session grants no North case.
    let (_, practitioner) = f.admit(&f.cert).expect("admitted");
    assert!(practitioner.teams.is_empty(), "{practitioner:?}");
    assert!(f.practitioner.teams.contains(&f.north));
}

#[test]
fn a_device_whose_practitioner_is_gone_is_refused() {
    let f = fixture();
    f.store
        .delete_meta("registry.practitioners", &f.practitioner.id.to_string())
        .expect("deleted");
    assert_eq!(
        f.admit(&f.cert),
        Err((
            ErrorCode::Unauthorised,
            "this device's practitioner is no longer registered".to_string()
        ))
    );
}
