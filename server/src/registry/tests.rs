use std::sync::Barrier;

use polyphony_core::store::MemoryStore;
use polyphony_core::sync::{RosterDevice, TeamInfo};

use super::*;

const CA: [u8; 32] = [7; 32];

fn registry() -> Registry {
    Registry::new(Arc::new(MemoryStore::new()))
}

/// A registry with one team and one practitioner in it.
fn with_practitioner() -> (Registry, Team, Practitioner) {
    let r = registry();
    let team = r.add_team("North Recovery").expect("team");
    let p = r
        .add_practitioner("Ana Silva", team.id)
        .expect("practitioner");
    (r, team, p)
}

fn code_for(r: &Registry, p: &Practitioner) -> EnrolmentCode {
    r.create_enrolment(p.id, CA, time::Duration::hours(72))
        .expect("code")
}

#[test]
fn team_names_are_unique_ignoring_case() {
    let r = registry();
    let north = r.add_team("North").expect("first");
    let err = r.add_team("  nORTH ").expect_err("duplicate");
    assert!(
        matches!(&err, RegistryError::TeamExists { id, .. } if *id == north.id),
        "{err}"
    );
    r.add_team("South").expect("another name is fine");
    let names: Vec<_> = r
        .teams()
        .expect("teams")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["North", "South"]);
}

#[test]
fn empty_and_control_character_names_are_refused() {
    let r = registry();
    assert!(matches!(
        r.add_team("   "),
        Err(RegistryError::EmptyName { what: "team" })
    ));
    assert!(matches!(
        r.add_team("North\nSouth"),
        Err(RegistryError::BadName { .. })
    ));
    assert!(matches!(
        r.add_team(&"x".repeat(MAX_NAME_CHARS + 1)),
        Err(RegistryError::BadName { .. })
    ));
}

#[test]
fn a_team_is_found_by_name_or_id_and_the_error_lists_known_teams() {
    let r = registry();
    let err = r.team("North").expect_err("no teams yet");
    assert!(err.to_string().contains("none yet"), "{err}");
    let north = r.add_team("North").expect("team");
    r.add_team("South").expect("team");
    assert_eq!(r.team("north").expect("by name").id, north.id);
    assert_eq!(r.team(&north.id.to_string()).expect("by id").id, north.id);
    let err = r.team("East").expect_err("unknown");
    let message = err.to_string();
    assert!(
        message.contains("'North'") && message.contains("'South'"),
        "{message}"
    );
}

#[test]
fn practitioners_join_teams_and_shared_names_need_the_id() {
    let (r, team, ana) = with_practitioner();
    let south = r.add_team("South").expect("team");
    let ana = r.add_practitioner_to_team(&ana.id, south.id).expect("join");
    assert_eq!(ana.teams, [team.id, south.id]);
    // Joining again is not an error and does not duplicate.
    let again = r
        .add_practitioner_to_team(&ana.id, south.id)
        .expect("again");
    assert_eq!(again.teams.len(), 2);

    assert!(matches!(
        r.add_practitioner("Bo", TeamId::random()),
        Err(RegistryError::TeamIdUnknown(_))
    ));

    assert_eq!(r.practitioner_by("ana silva").expect("by name").id, ana.id);
    let twin = r
        .add_practitioner("Ana Silva", south.id)
        .expect("same name is allowed");
    let err = r.practitioner_by("Ana Silva").expect_err("ambiguous");
    assert!(matches!(err, RegistryError::PractitionerAmbiguous { .. }));
    assert_eq!(
        r.practitioner_by(&twin.id.to_string()).expect("by id").id,
        twin.id
    );
    assert!(matches!(
        r.practitioner_by("Nobody"),
        Err(RegistryError::PractitionerNotFound { .. })
    ));
}

#[test]
fn an_enrolment_code_enrols_one_device_only() {
    let (r, _, ana) = with_practitioner();
    let code = code_for(&r, &ana);
    let stored = r
        .enrolment(&code.token_hash())
        .expect("read")
        .expect("stored");
    assert_eq!(stored.token_hash, hex::encode(code.token_hash()));
    assert!(stored.used_at.is_none());

    let laptop = DeviceId::random();
    let (pending, who) = r.check_enrolment(code.token(), &laptop).expect("valid");
    assert_eq!((pending.practitioner, who.id), (ana.id, ana.id));

    let (device, who) = r
        .redeem_enrolment(code.token(), laptop, "Ana's laptop", [1; 32])
        .expect("redeem");
    assert_eq!(device.practitioner, ana.id);
    assert_eq!(device.status, DeviceStatus::Active);
    assert_eq!(who.name, "Ana Silva");
    assert_eq!(r.device(&laptop).expect("read"), Some(device.clone()));
    assert_eq!(r.device_by_cert(&[1; 32]).expect("read"), Some(device));
    assert_eq!(r.device_by_cert(&[2; 32]).expect("read"), None);

    let used = r
        .enrolment(&code.token_hash())
        .expect("read")
        .expect("kept");
    assert_eq!(used.used_by, Some(laptop));

    let err = r
        .redeem_enrolment(code.token(), DeviceId::random(), "Tablet", [2; 32])
        .expect_err("second use");
    assert!(matches!(err, RegistryError::EnrolmentUsed { .. }), "{err}");
    assert!(matches!(
        r.check_enrolment(code.token(), &DeviceId::random()),
        Err(RegistryError::EnrolmentUsed { .. })
    ));
}

#[test]
fn unknown_and_expired_codes_are_refused_with_their_own_errors() {
    let (r, _, ana) = with_practitioner();
    let never_issued = EnrolmentCode::new(CA);
    let err = r
        .redeem_enrolment(never_issued.token(), DeviceId::random(), "Laptop", [1; 32])
        .expect_err("unknown");
    assert!(matches!(err, RegistryError::EnrolmentUnknown), "{err}");

    let code = code_for(&r, &ana);
    let expires_at = r
        .enrolment(&code.token_hash())
        .expect("read")
        .expect("stored")
        .expires_at;
    let err = r
        .redeem_enrolment_at(
            code.token(),
            DeviceId::random(),
            "Laptop",
            [1; 32],
            expires_at,
        )
        .expect_err("expired");
    assert!(
        matches!(err, RegistryError::EnrolmentExpired { .. }),
        "{err}"
    );
    // A moment before expiry it still works.
    r.redeem_enrolment_at(
        code.token(),
        DeviceId::random(),
        "Laptop",
        [1; 32],
        expires_at - time::Duration::seconds(1),
    )
    .expect("just in time");

    assert!(matches!(
        r.create_enrolment(ana.id, CA, time::Duration::ZERO),
        Err(RegistryError::BadTtl(_))
    ));
    assert!(matches!(
        r.create_enrolment(PractitionerId::random(), CA, time::Duration::hours(1)),
        Err(RegistryError::PractitionerNotFound { .. })
    ));
}

#[test]
fn an_enrolled_device_id_or_certificate_cannot_enrol_again() {
    let (r, _, ana) = with_practitioner();
    let laptop = DeviceId::random();
    r.redeem_enrolment(code_for(&r, &ana).token(), laptop, "Laptop", [1; 32])
        .expect("first");

    let code = code_for(&r, &ana);
    let err = r
        .redeem_enrolment(code.token(), laptop, "Laptop again", [2; 32])
        .expect_err("same device id");
    assert!(
        matches!(err, RegistryError::DeviceAlreadyEnrolled(d) if d == laptop),
        "{err}"
    );
    let err = r
        .redeem_enrolment(code.token(), DeviceId::random(), "Clone", [1; 32])
        .expect_err("same certificate");
    assert!(
        matches!(err, RegistryError::CertificateInUse(d) if d == laptop),
        "{err}"
    );
    // Refusals do not use the code up.
    assert!(r
        .enrolment(&code.token_hash())
        .expect("read")
        .expect("kept")
        .used_at
        .is_none());
}

#[test]
fn of_two_concurrent_redeems_of_one_code_exactly_one_wins() {
    for _ in 0..20 {
        let (r, _, ana) = with_practitioner();
        let code = code_for(&r, &ana);
        let barrier = Barrier::new(2);
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2u8)
                .map(|i| {
                    let (r, code, barrier) = (&r, &code, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        r.redeem_enrolment(code.token(), DeviceId::random(), "Laptop", [i; 32])
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no panic"))
                .collect()
        });
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "{results:?}");
        assert!(results
            .iter()
            .any(|r| matches!(r, Err(RegistryError::EnrolmentUsed { .. }))));
        assert_eq!(r.devices().expect("devices").len(), 1);
    }
}

#[test]
fn revocation_is_recorded_and_cannot_be_undone() {
    let (r, _, ana) = with_practitioner();
    let laptop = DeviceId::random();
    r.redeem_enrolment(code_for(&r, &ana).token(), laptop, "Laptop", [1; 32])
        .expect("enrol");
    let d = r
        .set_device_status(&laptop, DeviceStatus::Revoking)
        .expect("revoking");
    assert_eq!(d.status, DeviceStatus::Revoking);
    assert!(d.revoked_at.is_some());
    let d = r
        .set_device_status(&laptop, DeviceStatus::Revoked)
        .expect("revoked");
    assert_eq!(r.device(&laptop).expect("read"), Some(d.clone()));
    assert_eq!(
        r.set_device_status(&laptop, DeviceStatus::Revoked)
            .expect("same status"),
        d
    );
    assert!(matches!(
        r.set_device_status(&laptop, DeviceStatus::Active),
        Err(RegistryError::DeviceRevoked(_))
    ));
    assert!(matches!(
        r.set_device_status(&DeviceId::random(), DeviceStatus::Revoked),
        Err(RegistryError::DeviceNotFound(_))
    ));
}

#[test]
fn a_case_belongs_to_one_team_and_can_be_moved() {
    let r = registry();
    let north = r.add_team("North").expect("team");
    let south = r.add_team("South").expect("team");
    let case = CaseId::random();
    let other = CaseId::random();

    assert_eq!(r.case_team(&case).expect("read"), None);
    r.register_case(case, north.id).expect("register");
    r.register_case(case, north.id).expect("again, same team");
    let err = r.register_case(case, south.id).expect_err("other team");
    assert!(
        matches!(err, RegistryError::CaseInAnotherTeam { team, .. } if team == north.id),
        "{err}"
    );
    assert!(matches!(
        r.register_case(other, TeamId::random()),
        Err(RegistryError::TeamIdUnknown(_))
    ));
    r.register_case(other, south.id).expect("register other");

    assert_eq!(
        r.cases_of_teams(&[north.id]).expect("list"),
        [(case, north.id)]
    );

    assert_eq!(r.move_case(case, south.id).expect("move"), north.id);
    assert_eq!(r.case_team(&case).expect("read"), Some(south.id));
    assert!(r.cases_of_teams(&[north.id]).expect("list").is_empty());
    let mut both = r.cases_of_teams(&[north.id, south.id]).expect("list");
    both.sort();
    let mut expected = vec![(case, south.id), (other, south.id)];
    expected.sort();
    assert_eq!(both, expected);

    assert!(matches!(
        r.move_case(CaseId::random(), north.id),
        Err(RegistryError::CaseNotRegistered(_))
    ));
    assert!(matches!(
        r.move_case(case, TeamId::random()),
        Err(RegistryError::TeamIdUnknown(_))
    ));
}

#[test]
fn a_stale_team_index_entry_is_ignored() {
    // As if the server crashed during a move, after writing the new owner but before cleaning the
    // old team's index.
    let store = Arc::new(MemoryStore::new());
    let r = Registry::new(store.clone());
    let north = r.add_team("North").expect("team");
    let south = r.add_team("South").expect("team");
    let case = CaseId::random();
    r.register_case(case, south.id).expect("register");
    store
        .put_meta(&ns::team_cases(&north.id), &case.to_string(), &[])
        .expect("stale entry");
    assert!(r.cases_of_teams(&[north.id]).expect("list").is_empty());
}

#[test]
fn held_cases_are_remembered_per_device() {
    let r = registry();
    let (laptop, tablet) = (DeviceId::random(), DeviceId::random());
    let case = CaseId::random();
    assert!(!r.held(&laptop, &case).expect("read"));
    r.mark_held(&laptop, &case).expect("mark");
    r.mark_held(&laptop, &case).expect("mark again");
    assert!(r.held(&laptop, &case).expect("read"));
    assert!(!r.held(&tablet, &case).expect("read"));
}

/// The first telling that a case moved away stands however often the device is told again (it
/// is the boundary of what the device may still upload), per device, until a welcome grants the
/// case in full again.
#[test]
fn the_first_time_a_device_is_told_a_case_moved_stands_until_it_is_granted_again() {
    let r = registry();
    let (laptop, tablet) = (DeviceId::random(), DeviceId::random());
    let (case, other) = (CaseId::random(), CaseId::random());
    assert_eq!(r.told_moved(&laptop, &case).expect("read"), None);
    let first = r.note_told_moved(&laptop, &case).expect("note");
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(r.note_told_moved(&laptop, &case).expect("again"), first);
    assert_eq!(r.told_moved(&laptop, &case).expect("read"), Some(first));
    assert_eq!(r.told_moved(&tablet, &case).expect("read"), None);
    r.note_told_moved(&laptop, &other).expect("note");
    let granted = HashSet::from([case]);
    assert_eq!(r.forget_told_moved(&laptop, &granted).expect("forget"), 1);
    assert_eq!(r.told_moved(&laptop, &case).expect("read"), None);
    assert!(r.told_moved(&laptop, &other).expect("read").is_some());
    assert!(r.note_told_moved(&laptop, &case).expect("told anew") > first);
}

#[test]
fn team_devices_are_the_devices_of_the_team_members() {
    let (r, north, ana) = with_practitioner();
    let south = r.add_team("South").expect("team");
    let bo = r.add_practitioner("Bo", south.id).expect("practitioner");
    let ana_laptop = DeviceId::random();
    let bo_laptop = DeviceId::random();
    r.redeem_enrolment(code_for(&r, &ana).token(), ana_laptop, "Laptop", [1; 32])
        .expect("enrol");
    r.redeem_enrolment(code_for(&r, &bo).token(), bo_laptop, "Laptop", [2; 32])
        .expect("enrol");
    let ids = |team: &TeamId| -> Vec<DeviceId> {
        r.team_devices(team)
            .expect("list")
            .into_iter()
            .map(|d| d.id)
            .collect()
    };
    assert_eq!(ids(&north.id), [ana_laptop]);
    assert_eq!(ids(&south.id), [bo_laptop]);
    r.add_practitioner_to_team(&ana.id, south.id).expect("join");
    assert_eq!(ids(&south.id).len(), 2);
}

#[test]
fn everything_is_kept_in_the_store_and_keys_hold_no_names() {
    let store = Arc::new(MemoryStore::new());
    let (team, p) = {
        let r = Registry::new(store.clone());
        let team = r.add_team("Secret Team Name").expect("team");
        let p = r.add_practitioner("Secret Person", team.id).expect("p");
        (team, p)
    };
    let again = Registry::new(store.clone());
    assert_eq!(again.team("secret team name").expect("team"), team);
    assert_eq!(again.practitioner(&p.id).expect("read"), Some(p));
    for ns in [ns::TEAMS, ns::PRACTITIONERS] {
        for (key, _) in store.scan_meta(ns).expect("scan") {
            assert!(!key.to_lowercase().contains("secret"), "{key}");
        }
    }
}

#[test]
fn a_damaged_value_is_reported_not_panicked_on() {
    let store = Arc::new(MemoryStore::new());
    store
        .put_meta(ns::TEAMS, &TeamId::random().to_string(), b"{not json")
        .expect("put");
    let err = Registry::new(store).teams().expect_err("damaged");
    assert!(matches!(err, RegistryError::Corrupt { .. }), "{err}");
}

#[test]
fn the_registry_survives_a_restart_on_the_disk_store() {
    use polyphony_core::store::{KeySource, SledStore};
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("server.key");
    KeySource::create_key_file(&key_file).expect("key");
    let open = || -> Arc<dyn Store> {
        Arc::new(
            SledStore::open(&dir.path().join("db"), KeySource::KeyFile(key_file.clone()))
                .expect("open"),
        )
    };
    let (team, laptop, case) = {
        let store = open();
        let r = Registry::new(store.clone());
        let team = r.add_team("North").expect("team");
        let p = r.add_practitioner("Ana", team.id).expect("p");
        let laptop = DeviceId::random();
        r.redeem_enrolment(code_for(&r, &p).token(), laptop, "Laptop", [1; 32])
            .expect("enrol");
        let case = CaseId::random();
        r.register_case(case, team.id).expect("case");
        r.mark_held(&laptop, &case).expect("held");
        store.flush().expect("flush");
        (team, laptop, case)
    };
    let r = Registry::new(open());
    assert_eq!(r.team("north").expect("team"), team);
    assert_eq!(
        r.device_by_cert(&[1; 32]).expect("read").map(|d| d.id),
        Some(laptop)
    );
    assert_eq!(
        r.cases_of_teams(&[team.id]).expect("cases"),
        [(case, team.id)]
    );
    assert!(r.held(&laptop, &case).expect("held"));
}

/// A practitioner stored before roles existed (no `role` in the record) reads as a
/// practitioner, and keeps the role set afterwards.
#[test]
fn a_practitioner_stored_before_roles_reads_as_a_practitioner() {
    let (r, team, _) = with_practitioner();
    let id = PractitionerId::random();
    let old = serde_json::json!({
        "id": id,
        "name": "Old Record",
        "teams": [team.id],
        "created_at": "2026-01-01T00:00:00Z",
    });
    r.store
        .put_meta(
            ns::PRACTITIONERS,
            &id.to_string(),
            &serde_json::to_vec(&old).unwrap(),
        )
        .unwrap();
    let p = r.practitioner(&id).unwrap().unwrap();
    assert_eq!(p.role, StaffRole::Practitioner);
    r.set_practitioner_role(&id, StaffRole::PeerSupport)
        .unwrap();
    assert_eq!(
        r.practitioner(&id).unwrap().unwrap().role,
        StaffRole::PeerSupport
    );
}

/// A team stored before boroughs existed (no `borough` in the record) reads as a team of no
/// borough, and a team of no borough is stored without the field (a borough server's records do
/// not change shape).
#[test]
fn a_team_stored_before_boroughs_reads_as_no_boroughs() {
    let r = registry();
    let id = TeamId::random();
    let old = serde_json::json!({
        "id": id,
        "name": "Old Team",
        "created_at": "2026-01-01T00:00:00Z",
    });
    r.store
        .put_meta(
            ns::TEAMS,
            &id.to_string(),
            &serde_json::to_vec(&old).unwrap(),
        )
        .unwrap();
    assert_eq!(r.team_by_id(&id).unwrap().unwrap().borough, None);
    assert!(matches!(
        r.add_team("old team"),
        Err(RegistryError::TeamExists { id: existing, .. }) if existing == id
    ));
    let new = r.add_team("New Team").unwrap();
    let bytes = r
        .store
        .get_meta(ns::TEAMS, &new.id.to_string())
        .unwrap()
        .unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("borough"));
}

// ----- boroughs (on a trust hub) -----

const DAY: time::Duration = time::Duration::hours(24);

fn borough_code(r: &Registry, b: &Borough) -> EnrolmentCode {
    r.create_borough_enrolment(b.id, CA, DAY).expect("code")
}

fn team_info(id: TeamId, name: &str) -> TeamInfo {
    TeamInfo {
        id,
        name: name.into(),
    }
}

fn roster_device(device: DeviceId, practitioner: PractitionerId, name: &str) -> RosterDevice {
    RosterDevice {
        device,
        practitioner,
        practitioner_name: name.into(),
    }
}

#[test]
fn borough_names_are_unique_ignoring_case_and_found_by_name_or_id() {
    let r = registry();
    let camden = r.add_borough("Camden").expect("borough");
    assert_eq!(camden.status, DeviceStatus::Active);
    assert_eq!(camden.cert_fingerprint, None);
    let err = r.add_borough(" cAMDEN ").expect_err("duplicate");
    assert!(
        matches!(&err, RegistryError::BoroughExists { id, .. } if *id == camden.id),
        "{err}"
    );
    assert!(matches!(
        r.add_borough("  "),
        Err(RegistryError::EmptyName { what: "borough" })
    ));
    let islington = r.add_borough("Islington").expect("borough");
    let ids: Vec<_> = r
        .boroughs()
        .expect("list")
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(ids, [camden.id, islington.id]);
    assert_eq!(r.borough(&camden.id).expect("read"), Some(camden.clone()));
    assert_eq!(r.borough_by("camden").expect("by name"), camden);
    assert_eq!(
        r.borough_by(&islington.id.to_string()).expect("by id"),
        islington
    );
    assert!(matches!(
        r.borough_by("Hackney"),
        Err(RegistryError::BoroughNotFound { given }) if given == "Hackney"
    ));
}

#[test]
fn a_borough_code_enrols_once() {
    let r = registry();
    let camden = r.add_borough("Camden").expect("borough");
    let code = borough_code(&r, &camden);
    let (pending, borough) = r.check_borough_enrolment(code.token()).expect("valid");
    assert_eq!(pending.token_hash, hex::encode(code.token_hash()));
    assert_eq!((pending.borough, borough.id), (camden.id, camden.id));
    assert!(pending.used_at.is_none());

    let enrolled = r
        .redeem_borough_enrolment(code.token(), [1; 32])
        .expect("redeem");
    assert_eq!(enrolled.status, DeviceStatus::Active);
    assert_eq!(enrolled.cert_fingerprint, Some(hex::encode([1; 32])));
    assert!(enrolled.enrolled_at.is_some());
    assert_eq!(r.borough_by_cert(&[1; 32]).expect("read"), Some(enrolled));
    assert_eq!(r.borough_by_cert(&[2; 32]).expect("read"), None);

    let err = r
        .redeem_borough_enrolment(code.token(), [2; 32])
        .expect_err("second use");
    assert!(matches!(err, RegistryError::EnrolmentUsed { .. }), "{err}");
    assert!(matches!(
        r.check_borough_enrolment(code.token()),
        Err(RegistryError::EnrolmentUsed { .. })
    ));
    // A device's code is no borough's code, and the other way round.
    assert!(matches!(
        r.redeem_borough_enrolment(EnrolmentCode::new(CA).token(), [3; 32]),
        Err(RegistryError::EnrolmentUnknown)
    ));
    let code = borough_code(&r, &camden);
    assert!(matches!(
        r.check_enrolment(code.token(), &DeviceId::random()),
        Err(RegistryError::EnrolmentUnknown)
    ));
}

#[test]
fn an_expired_borough_code_is_refused() {
    let r = registry();
    let camden = r.add_borough("Camden").expect("borough");
    let code = borough_code(&r, &camden);
    let (pending, _) = r.check_borough_enrolment(code.token()).expect("valid");
    let err = r
        .redeem_borough_enrolment_at(code.token(), [1; 32], pending.expires_at)
        .expect_err("expired");
    assert!(
        matches!(err, RegistryError::EnrolmentExpired { .. }),
        "{err}"
    );
    assert_eq!(r.borough_by_cert(&[1; 32]).expect("read"), None);
    r.redeem_borough_enrolment_at(
        code.token(),
        [1; 32],
        pending.expires_at - time::Duration::seconds(1),
    )
    .expect("just in time");

    assert!(matches!(
        r.create_borough_enrolment(camden.id, CA, time::Duration::ZERO),
        Err(RegistryError::BadTtl(_))
    ));
    assert!(matches!(
        r.create_borough_enrolment(BoroughId::random(), CA, DAY),
        Err(RegistryError::BoroughNotFound { .. })
    ));
}

#[test]
fn a_revoked_borough_gets_no_code_and_cannot_redeem_one_issued_before() {
    let r = registry();
    let camden = r.add_borough("Camden").expect("borough");
    let earlier = borough_code(&r, &camden);
    r.set_borough_status(&camden.id, DeviceStatus::Revoked)
        .expect("revoke");
    let err = r
        .create_borough_enrolment(camden.id, CA, DAY)
        .expect_err("no new code");
    assert!(
        matches!(err, RegistryError::BoroughRevoked(b) if b == camden.id),
        "{err}"
    );
    assert!(matches!(
        r.check_borough_enrolment(earlier.token()),
        Err(RegistryError::BoroughRevoked(_))
    ));
    assert!(matches!(
        r.redeem_borough_enrolment(earlier.token(), [1; 32]),
        Err(RegistryError::BoroughRevoked(_))
    ));
    assert_eq!(r.borough_by_cert(&[1; 32]).expect("read"), None);
    // The refusal did not use the code up: nothing was written for a revoked borough.
    let pending: PendingBoroughEnrolment = r
        .get(ns::BOROUGH_ENROLMENTS, &hex::encode(earlier.token_hash()))
        .expect("read")
        .expect("kept");
    assert!(pending.used_at.is_none());
}

#[test]
fn enrolling_again_replaces_the_certificate_and_ends_the_old_link() {
    let r = registry();
    let camden = r.add_borough("Camden").expect("borough");
    r.redeem_borough_enrolment(borough_code(&r, &camden).token(), [1; 32])
        .expect("first enrolment");
    let before = r.access_epoch();
    // The borough server was rebuilt: it enrols again with a new key.
    let again = r
        .redeem_borough_enrolment(borough_code(&r, &camden).token(), [2; 32])
        .expect("enrols again");
    assert_eq!(again.id, camden.id);
    assert_eq!(r.borough_by_cert(&[2; 32]).expect("read"), Some(again));
    assert_eq!(r.borough_by_cert(&[1; 32]).expect("read"), None);
    assert_eq!(
        r.get::<BoroughId>(ns::BOROUGH_CERTS, &hex::encode([1; 32]))
            .expect("read"),
        None,
        "the old index entry is removed"
    );
    assert!(
        r.access_epoch() > before,
        "a link with the old certificate must end"
    );

    // Another borough cannot take a certificate in use.
    let islington = r.add_borough("Islington").expect("borough");
    let err = r
        .redeem_borough_enrolment(borough_code(&r, &islington).token(), [2; 32])
        .expect_err("certificate in use");
    assert!(
        matches!(err, RegistryError::BoroughCertificateInUse(b) if b == camden.id),
        "{err}"
    );
}

#[test]
fn revoking_a_borough_bumps_the_access_epoch_and_is_final() {
    let r = registry();
    let camden = r.add_borough("Camden").expect("borough");
    r.redeem_borough_enrolment(borough_code(&r, &camden).token(), [1; 32])
        .expect("enrol");
    let seen = Arc::new(AtomicU64::new(0));
    let hook_seen = seen.clone();
    r.on_access_changed(move |epoch| hook_seen.store(*epoch, Ordering::SeqCst));
    let before = r.access_epoch();

    assert!(matches!(
        r.set_borough_status(&camden.id, DeviceStatus::Revoking),
        Err(RegistryError::BadBoroughStatus(DeviceStatus::Revoking))
    ));
    assert_eq!(r.access_epoch(), before);
    let revoked = r
        .set_borough_status(&camden.id, DeviceStatus::Revoked)
        .expect("revoke");
    assert_eq!(revoked.status, DeviceStatus::Revoked);
    assert!(revoked.revoked_at.is_some());
    assert_eq!(r.access_epoch(), before + 1);
    assert_eq!(seen.load(Ordering::SeqCst), before + 1);
    // The link finds the borough, and its status refuses it.
    assert_eq!(
        r.borough_by_cert(&[1; 32]).expect("read").map(|b| b.status),
        Some(DeviceStatus::Revoked)
    );

    assert_eq!(
        r.set_borough_status(&camden.id, DeviceStatus::Revoked)
            .expect("same status"),
        revoked
    );
    let err = r
        .set_borough_status(&camden.id, DeviceStatus::Active)
        .expect_err("final");
    assert!(
        matches!(err, RegistryError::BoroughRevoked(b) if b == camden.id),
        "{err}"
    );
    assert_eq!(r.borough(&camden.id).expect("read"), Some(revoked));
    assert!(matches!(
        r.set_borough_status(&BoroughId::random(), DeviceStatus::Revoked),
        Err(RegistryError::BoroughNotFound { .. })
    ));
}

#[test]
fn two_boroughs_may_each_have_a_team_of_the_same_name() {
    let r = registry();
    let camden = r.add_borough("Camden").expect("borough");
    let islington = r.add_borough("Islington").expect("borough");
    let (c_north, i_north) = (TeamId::random(), TeamId::random());
    assert_eq!(
        r.claim_teams(&camden.id, &[team_info(c_north, "North")])
            .expect("camden"),
        [c_north]
    );
    assert_eq!(
        r.claim_teams(&islington.id, &[team_info(i_north, "north")])
            .expect("islington"),
        [i_north]
    );
    assert_eq!(
        r.team_by_id(&c_north).expect("read").map(|t| t.borough),
        Some(Some(camden.id))
    );
    assert_eq!(r.borough_teams(&islington.id).expect("teams"), [i_north]);
    // The hub's own teams (of no borough) do not clash with a borough's either.
    r.add_team("North").expect("a team of no borough");

    // Within one borough, names stay unique: a new team cannot take a name in use...
    let err = r
        .claim_teams(&camden.id, &[team_info(TeamId::random(), "NORTH")])
        .expect_err("same name in one borough");
    assert!(
        matches!(&err, RegistryError::BoroughTeamsShareName { borough, .. } if *borough == camden.id),
        "{err}"
    );
    // ...but names may be swapped in one roster, as the result is unique.
    let c_south = TeamId::random();
    r.claim_teams(&camden.id, &[team_info(c_south, "South")])
        .expect("another team");
    let before = r.access_epoch();
    let mut teams = r
        .claim_teams(
            &camden.id,
            &[team_info(c_north, "South"), team_info(c_south, "North")],
        )
        .expect("swap");
    teams.sort();
    let mut expected = vec![c_north, c_south];
    expected.sort();
    assert_eq!(teams, expected);
    assert_eq!(
        r.team_by_id(&c_north).expect("read").expect("kept").name,
        "South"
    );
    assert!(r.access_epoch() > before);
    // The same roster again changes nothing.
    let before = r.access_epoch();
    r.claim_teams(
        &camden.id,
        &[team_info(c_north, "South"), team_info(c_south, "North")],
    )
    .expect("again");
    assert_eq!(r.access_epoch(), before);
}

#[test]
fn a_team_of_another_borough_is_refused_with_nothing_written() {
    let r = registry();
    let camden = r.add_borough("Camden").expect("borough");
    let islington = r.add_borough("Islington").expect("borough");
    let c_north = TeamId::random();
    r.claim_teams(&camden.id, &[team_info(c_north, "North")])
        .expect("camden");
    let hubs_own = r.add_team("Hub Team").expect("team");
    let teams_before = r.teams().expect("teams");
    let epoch_before = r.access_epoch();

    let new = TeamId::random();
    let err = r
        .claim_teams(
            &islington.id,
            &[team_info(new, "East"), team_info(c_north, "North")],
        )
        .expect_err("camden's team");
    assert!(
        matches!(&err, RegistryError::TeamOfAnotherBorough { team, owner, .. }
            if *team == c_north && *owner == Some(camden.id)),
        "{err}"
    );
    let err = r
        .claim_teams(
            &islington.id,
            &[team_info(new, "East"), team_info(hubs_own.id, "Hub Team")],
        )
        .expect_err("the hub's own team");
    assert!(
        matches!(&err, RegistryError::TeamOfAnotherBorough { team, owner: None, .. }
            if *team == hubs_own.id),
        "{err}"
    );
    assert!(err.to_string().contains("no borough"), "{err}");
    assert_eq!(r.teams().expect("teams"), teams_before, "nothing written");
    assert!(r.borough_teams(&islington.id).expect("teams").is_empty());
    assert_eq!(r.access_epoch(), epoch_before);

    // A team listed twice under two names is refused too.
    assert!(matches!(
        r.claim_teams(
            &islington.id,
            &[team_info(new, "East"), team_info(new, "West")]
        ),
        Err(RegistryError::ClaimedTwice { what: "team", .. })
    ));
    // A revoked borough claims nothing.
    r.set_borough_status(&islington.id, DeviceStatus::Revoked)
        .expect("revoke");
    assert!(matches!(
        r.claim_teams(&islington.id, &[team_info(new, "East")]),
        Err(RegistryError::BoroughRevoked(_))
    ));
    assert_eq!(r.teams().expect("teams"), teams_before);
}

#[test]
fn a_roster_device_of_another_borough_is_refused_with_nothing_of_the_roster_written() {
    let r = registry();
    let camden = r.add_borough("Camden").expect("borough");
    let islington = r.add_borough("Islington").expect("borough");
    let (ana, bo) = (PractitionerId::random(), PractitionerId::random());
    let camden_laptop = DeviceId::random();
    r.claim_roster(
        &camden.id,
        &[roster_device(camden_laptop, ana, "Ana Silva")],
    )
    .expect("camden");

    let islington_laptop = DeviceId::random();
    let err = r
        .claim_roster(
            &islington.id,
            &[
                roster_device(islington_laptop, bo, "Bo"),
                roster_device(camden_laptop, bo, "Bo"),
            ],
        )
        .expect_err("camden's device");
    assert!(
        matches!(&err, RegistryError::DeviceOfAnotherBorough { device, owner }
            if *device == camden_laptop && *owner == camden.id),
        "{err}"
    );
    assert!(err.to_string().contains("one borough"), "{err}");
    assert_eq!(r.roster_entry(&islington_laptop).expect("read"), None);
    let entry = r.roster_entry(&camden_laptop).expect("read").expect("kept");
    assert_eq!((entry.borough, entry.practitioner), (camden.id, ana));

    // A name that is not usable refuses the whole roster too.
    let err = r
        .claim_roster(
            &islington.id,
            &[
                roster_device(islington_laptop, bo, "Bo"),
                roster_device(DeviceId::random(), bo, &"x".repeat(MAX_NAME_CHARS + 1)),
            ],
        )
        .expect_err("name too long");
    assert!(
        matches!(
            err,
            RegistryError::BadName {
                what: "practitioner",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(r.roster_entry(&islington_laptop).expect("read"), None);
    // As does one device named twice with two practitioners.
    assert!(matches!(
        r.claim_roster(
            &islington.id,
            &[
                roster_device(islington_laptop, bo, "Bo"),
                roster_device(islington_laptop, PractitionerId::random(), "Cy"),
            ],
        ),
        Err(RegistryError::ClaimedTwice { what: "device", .. })
    ));
    assert_eq!(r.roster_entry(&islington_laptop).expect("read"), None);
}

#[test]
fn a_roster_update_keeps_when_the_hub_first_heard_of_a_device() {
    let r = registry();
    let camden = r.add_borough("Camden").expect("borough");
    let (ana, bo) = (PractitionerId::random(), PractitionerId::random());
    let laptop = DeviceId::random();
    r.claim_roster(&camden.id, &[roster_device(laptop, ana, "Ana Silva")])
        .expect("first");
    let first = r.roster_entry(&laptop).expect("read").expect("stored");
    assert_eq!(first.practitioner_name, "Ana Silva");
    std::thread::sleep(std::time::Duration::from_millis(5));

    let tablet = DeviceId::random();
    r.claim_roster(
        &camden.id,
        &[
            roster_device(laptop, bo, " Bo Chen "),
            roster_device(tablet, ana, "Ana Silva"),
        ],
    )
    .expect("update");
    let updated = r.roster_entry(&laptop).expect("read").expect("kept");
    assert_eq!(updated.since, first.since);
    assert_eq!(
        (updated.practitioner, updated.practitioner_name.as_str()),
        (bo, "Bo Chen")
    );
    let new = r.roster_entry(&tablet).expect("read").expect("stored");
    assert!(new.since > first.since);
    // A roster that leaves a device out keeps it (its old changes are still relayed).
    r.claim_roster(&camden.id, &[]).expect("empty");
    assert_eq!(r.roster_entry(&laptop).expect("read"), Some(updated));
}

#[test]
fn boroughs_their_teams_and_rosters_are_all_there_after_a_reload() {
    let store = Arc::new(MemoryStore::new());
    let (camden, code, north, laptop, entry) = {
        let r = Registry::new(store.clone());
        let camden = r.add_borough("Camden").expect("borough");
        let camden = r
            .redeem_borough_enrolment(borough_code(&r, &camden).token(), [1; 32])
            .expect("enrol");
        let code = borough_code(&r, &camden);
        let north = TeamId::random();
        r.claim_teams(&camden.id, &[team_info(north, "North")])
            .expect("teams");
        let laptop = DeviceId::random();
        r.claim_roster(
            &camden.id,
            &[roster_device(laptop, PractitionerId::random(), "Ana Silva")],
        )
        .expect("roster");
        let entry = r.roster_entry(&laptop).expect("read").expect("stored");
        (camden, code, north, laptop, entry)
    };
    let r = Registry::new(store.clone());
    assert_eq!(r.boroughs().expect("list"), std::slice::from_ref(&camden));
    assert_eq!(r.borough_by("CAMDEN").expect("by name"), camden);
    assert_eq!(
        r.borough_by_cert(&[1; 32]).expect("read"),
        Some(camden.clone())
    );
    assert_eq!(r.borough_teams(&camden.id).expect("teams"), [north]);
    assert_eq!(r.roster_entry(&laptop).expect("read"), Some(entry));
    let (pending, _) = r.check_borough_enrolment(code.token()).expect("code kept");
    assert_eq!(pending.borough, camden.id);
    // Keys are ids and hashes, never names.
    for ns in [
        ns::BOROUGHS,
        ns::BOROUGH_CERTS,
        ns::BOROUGH_ENROLMENTS,
        ns::ROSTER,
        ns::TEAMS,
    ] {
        for (key, _) in store.scan_meta(ns).expect("scan") {
            let key = key.to_lowercase();
            assert!(
                !key.contains("camden") && !key.contains("north") && !key.contains("ana"),
                "{ns}/{key}"
            );
        }
    }
}
