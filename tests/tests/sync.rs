//! Issue 5 acceptance: offline edits meet, durably, with access control, over real QUIC on loopback.

use std::collections::BTreeMap;

use anyhow::Result;
use automerge::transaction::Transactable;
use automerge::{ReadDoc, ROOT};
use polyphony_core::model::{
    self, CaseDoc, NewCase, NewMeeting, NewMember, NoteKind, Participant, PersonField, Place,
    Stance, Stored,
};
use polyphony_core::net;
use polyphony_core::profile::Enrolment;
use polyphony_core::sync::{Action, ClientSession, ErrorCode};
use polyphony_core::{CaseId, DeviceId, PractitionerId, TeamId};
use polyphony_e2e::{connect_as, run_session, TestDevice, TestHost, TestServer};

async fn two_practitioners() -> Result<(TestServer, TestDevice, TestDevice)> {
    let server = TestServer::start().await?;
    server.team("North").await?;
    server.practitioner("Sam", "North").await?;
    server.practitioner("Kit", "North").await?;
    let a = server.device("Sam").await?;
    let b = server.device("Kit").await?;
    Ok((server, a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_edit_the_same_case_offline_and_both_keep_both_edits() -> Result<()> {
    let (_server, mut a, mut b) = two_practitioners().await?;
    let case = a.profile.create_case(
        NewCase {
            name: "Maria Lopez".into(),
            ..Default::default()
        },
        None,
    )?;
    let ana = a.profile.edit(case, |d| {
        d.add_member(NewMember {
            name: "Ana".into(),
            relationship: "sister".into(),
            ..Default::default()
        })
    })?;
    let at = model::parse_datetime("at", "2026-03-14T10:30")?;
    let meeting = a.profile.edit(case, |d| {
        d.add_meeting(NewMeeting {
            at,
            place: Place::Home,
            attendees: vec![Participant::Person, Participant::Member(ana)],
        })
    })?;
    let decision = a.profile.edit(case, |d| {
        d.propose_decision("Try a walking group", Participant::Person)
    })?;
    a.sync().await?;
    b.sync().await?;
    assert_eq!(
        b.profile.case_ids()?,
        vec![case],
        "the team's second device receives the case"
    );

    // Offline: the same note, the same decision, different fields.
    a.profile.edit(case, |d| {
        d.append_text(&meeting, NoteKind::Notes, "Maria slept better.")
    })?;
    b.profile.edit(case, |d| {
        d.append_text(&meeting, NoteKind::Notes, "Ana will visit on Sundays.")
    })?;
    a.profile.edit(case, |d| {
        d.record_position(
            &decision,
            Participant::Person,
            Stance::Agree,
            Some("I'd like that"),
        )
    })?;
    b.profile.edit(case, |d| {
        d.record_position(
            &decision,
            Participant::Member(ana),
            Stance::Disagree,
            Some("Too soon"),
        )
    })?;
    a.profile.edit(case, |d| {
        d.set_person(PersonField::PreferredName, Some("Mari"))
    })?;
    b.profile.edit(case, |d| {
        d.set_person(PersonField::Pronouns, Some("she/her"))
    })?;
    assert!(a.profile.unsynced(case)? > 0 && b.profile.unsynced(case)? > 0);

    a.sync().await?;
    b.sync().await?;
    a.sync().await?;
    let va = a.profile.view(case, "test")?;
    let vb = b.profile.view(case, "test")?;
    assert_eq!(va, vb, "both devices end with identical documents");
    let notes = &va.meetings[0].notes;
    assert!(
        notes.contains("Maria slept better.") && notes.contains("Ana will visit on Sundays."),
        "{notes}"
    );
    let positions = &va.decisions[0].positions;
    assert_eq!(positions.len(), 2, "both positions kept");
    assert!(positions
        .iter()
        .any(|p| p.stance.is(Stance::Disagree) && p.words.as_deref() == Some("Too soon")));
    assert_eq!(va.person.preferred_name.as_deref(), Some("Mari"));
    assert_eq!(va.person.pronouns.as_deref(), Some("she/her"));
    assert_eq!(a.profile.unsynced(case)?, 0, "everything acknowledged");
    assert_eq!(b.profile.unsynced(case)?, 0, "everything acknowledged");
    Ok(())
}

/// Run a one-shot session as `device` with these documents.
async fn raw_sync(
    server: &TestServer,
    device: &TestDevice,
    docs: BTreeMap<CaseId, automerge::AutoCommit>,
) -> Result<TestHost> {
    raw_sync_as(server, device.profile.enrolment().expect("enrolled"), docs).await
}

async fn raw_sync_as(
    server: &TestServer,
    e: &Enrolment,
    docs: BTreeMap<CaseId, automerge::AutoCommit>,
) -> Result<TestHost> {
    let host = TestHost {
        docs,
        ..Default::default()
    };
    Ok(run_session(server.addr(), e, host, false).await?.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_team_gets_no_trace_and_forged_or_invalid_changes_change_nothing() -> Result<()> {
    let (server, mut a, mut b) = two_practitioners().await?;
    server.team("South").await?;
    server.practitioner("Jo", "South").await?;
    let mut c = server.device("Jo").await?;
    let case = a.profile.create_case(
        NewCase {
            name: "Maria Lopez".into(),
            ..Default::default()
        },
        None,
    )?;
    a.sync().await?;

    // Another team's device: nothing listed, nothing received.
    c.sync().await?;
    assert!(
        c.profile.case_ids()?.is_empty(),
        "another team's device gets no trace of the case"
    );

    // Even with the id guessed, it cannot read or write it.
    let south = c.profile.enrolment().unwrap().teams[0].id;
    let jo = polyphony_core::model::Author {
        practitioner: c.profile.enrolment().unwrap().practitioner,
        practitioner_name: "Jo".into(),
        device: c.profile.device(),
    };
    let fake = CaseDoc::create(
        case,
        south,
        NewCase {
            name: "Guess".into(),
            ..Default::default()
        },
        jo,
    )?;
    let host = raw_sync(&server, &c, BTreeMap::from([(case, fake.into_automerge())])).await?;
    assert_eq!(host.refused, vec![(case, ErrorCode::NotAvailable)]);

    // A change authored by an actor that is no enrolled device is refused.
    b.sync().await?;
    let before = {
        let v = b.profile.view(case, "test")?;
        serde_json::to_string(&v)?
    };
    let mut forged_doc = a.profile_doc(case)?;
    let forger = model::Author {
        practitioner: PractitionerId::random(),
        practitioner_name: "Mallory".into(),
        device: DeviceId::random(),
    };
    let mut forged = CaseDoc::from_automerge(forged_doc.clone(), Some(forger))?;
    forged.set_person(PersonField::Name, Some("Someone else"))?;
    let host = raw_sync(
        &server,
        &a,
        BTreeMap::from([(case, forged.into_automerge())]),
    )
    .await?;
    assert_eq!(host.refused, vec![(case, ErrorCode::ForgedAuthor)]);

    // A change that breaks the record's shape is refused.
    forged_doc.set_actor(model::actor_for_device(&a.profile.device()));
    let person = forged_doc.get(ROOT, "person")?.unwrap().1;
    forged_doc.put(&person, "nhs_number", "1234567890")?;
    forged_doc.commit();
    let host = raw_sync(&server, &a, BTreeMap::from([(case, forged_doc)])).await?;
    assert_eq!(host.refused, vec![(case, ErrorCode::InvalidChange)]);

    // And a device cannot move a case to its other team either.
    let mut moved = a.profile_doc(case)?;
    moved.set_actor(model::actor_for_device(&a.profile.device()));
    moved.put(ROOT, "team_id", TeamId::random().to_string())?;
    moved.commit();
    let host = raw_sync(&server, &a, BTreeMap::from([(case, moved)])).await?;
    assert_eq!(host.refused, vec![(case, ErrorCode::InvalidChange)]);

    // The stored case is unchanged: a fresh sync of the other device sees the same record.
    b.sync().await?;
    let after = serde_json::to_string(&b.profile.view(case, "test")?)?;
    assert_eq!(before, after, "the stored case is unchanged");

    // The audit log recorded the writes, the reads and every refusal for this case, and its chain
    // verifies.
    use polyphony_server::admin::AdminRequest;
    let log = server
        .admin(AdminRequest::Audit {
            case: Some(case),
            verify: false,
        })
        .await?;
    let text = log.to_string();
    for action in ["write", "read", "refused"] {
        assert!(
            text.contains(&format!("\"{action}\"")),
            "audit has no {action} for the case: {text}"
        );
    }
    assert!(
        text.contains("not an enrolled device"),
        "the forged change is in the audit log"
    );
    assert!(
        text.contains("is not available to this device"),
        "the other team's attempt is in the audit log"
    );
    let verified = server
        .admin(AdminRequest::Audit {
            case: None,
            verify: true,
        })
        .await?;
    assert!(verified["entries"].as_u64().unwrap_or(0) > 5, "{verified}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_uploads_first_then_wipes_then_is_refused() -> Result<()> {
    let (server, mut a, mut b) = two_practitioners().await?;
    let case = a.profile.create_case(
        NewCase {
            name: "Maria Lopez".into(),
            ..Default::default()
        },
        None,
    )?;
    a.sync().await?;
    // Offline work on the device about to be revoked.
    a.profile.edit(case, |d| {
        d.set_person(PersonField::Pronouns, Some("she/her"))
    })?;
    let device = a.profile.device().to_string();
    let old_identity = a.profile.enrolment().unwrap().clone();
    server
        .admin(polyphony_server::admin::AdminRequest::Revoke {
            device: device.clone(),
            now: false,
        })
        .await?;
    let report = a.sync().await?;
    assert!(report.wiped, "the device is told to wipe");
    assert!(
        report.kept_unsynced.is_empty(),
        "nothing unsynced was left to keep"
    );
    assert!(
        a.profile.case_ids()?.is_empty(),
        "the local store was wiped"
    );
    b.sync().await?;
    assert_eq!(
        b.profile.view(case, "test")?.person.pronouns.as_deref(),
        Some("she/her"),
        "its last work reached the team"
    );
    // From then on it is refused, even with a copy of its old certificate and key.
    let err = raw_sync_as(&server, &old_identity, BTreeMap::new())
        .await
        .err()
        .expect("refused");
    let refused = err.downcast_ref::<polyphony_core::net::NetError>();
    assert!(
        matches!(
            refused,
            Some(polyphony_core::net::NetError::Refused {
                code: ErrorCode::Revoked,
                ..
            })
        ),
        "{err}"
    );
    Ok(())
}

trait ProfileDoc {
    fn profile_doc(&mut self, case: CaseId) -> Result<automerge::AutoCommit>;
}

impl ProfileDoc for TestDevice {
    fn profile_doc(&mut self, case: CaseId) -> Result<automerge::AutoCommit> {
        let chunks = polyphony_core::store::Store::load_chunks(&**self.profile.store(), &case)?
            .expect("case held");
        let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, c)| c).collect();
        Ok(automerge::AutoCommit::load(&bytes)?)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_case_to_another_team_never_strands_a_devices_notes() -> Result<()> {
    let (server, mut a, _b) = two_practitioners().await?;
    server.team("South").await?;
    server.practitioner("Jo", "South").await?;
    let mut c = server.device("Jo").await?;
    let case = a.profile.create_case(
        NewCase {
            name: "Maria Lopez".into(),
            ..Default::default()
        },
        None,
    )?;
    let at = model::parse_datetime("at", "2026-03-14T10:30")?;
    let meeting = a.profile.edit(case, |d| {
        d.add_meeting(NewMeeting {
            at,
            place: Place::Home,
            attendees: vec![],
        })
    })?;
    a.sync().await?;

    // Offline, Sam writes notes; meanwhile the case moves to South.
    a.profile.edit(case, |d| {
        d.append_text(&meeting, NoteKind::Notes, "Written on the home visit.")
    })?;
    server
        .admin(polyphony_server::admin::AdminRequest::CaseMove {
            case,
            team: "South".into(),
        })
        .await?;
    let report = a.sync().await?;
    assert_eq!(
        report.moved,
        vec![case.to_string()],
        "the device is told the case moved"
    );
    assert!(report.kept_unsynced.is_empty());
    assert!(
        a.profile.case_ids()?.is_empty(),
        "the local copy goes only once everything is on the server"
    );

    // The new team has the notes written after the move.
    c.sync().await?;
    let v = c.profile.view(case, "test")?;
    assert!(
        v.meetings[0].notes.contains("Written on the home visit."),
        "the notes were not stranded"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_both_are_connected_a_change_reaches_the_other_device_without_a_manual_sync(
) -> Result<()> {
    let (server, mut a, mut b) = two_practitioners().await?;
    let case = a.profile.create_case(
        NewCase {
            name: "Maria Lopez".into(),
            ..Default::default()
        },
        None,
    )?;
    let at = model::parse_datetime("at", "2026-03-14T10:30")?;
    let meeting = a.profile.edit(case, |d| {
        d.add_meeting(NewMeeting {
            at,
            place: Place::Home,
            attendees: vec![],
        })
    })?;
    a.sync().await?;
    b.sync().await?;

    // Kit's device holds a live session open.
    let e = b.profile.enrolment().unwrap().clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let host = TestHost {
        docs: BTreeMap::from([(case, b.profile.document(case)?)]),
        events: Some(tx),
        ..Default::default()
    };
    let addr = server.addr();
    let live = tokio::spawn(async move { run_session(addr, &e, host, true).await });
    // Wait until its first full sync has settled.
    let settled = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some((action, _)) = rx.recv().await {
            if matches!(action, Action::Progress { settled, total } if settled == total) {
                return true;
            }
        }
        false
    })
    .await?;
    assert!(settled);

    // Sam types and syncs; Kit's open session receives it with no action of Kit's.
    a.profile.edit(case, |d| {
        d.append_text(&meeting, NoteKind::Notes, "typed while both were online")
    })?;
    a.sync().await?;
    let pushed = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some((action, doc)) = rx.recv().await {
            let (Action::Persist { case: c, .. }, Some(doc)) = (action, doc) else {
                continue;
            };
            let v = CaseDoc::from_automerge(doc, None).expect("valid").view();
            if c == case && v.meetings[0].notes.contains("typed while both were online") {
                return true;
            }
        }
        false
    })
    .await?;
    assert!(pushed, "the change was pushed live to the connected device");
    live.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_laptop_that_changes_network_mid_sync_carries_on() -> Result<()> {
    let (server, mut a, _b) = two_practitioners().await?;
    let mut docs = BTreeMap::new();
    for i in 0..150 {
        let case = a.profile.create_case(
            NewCase {
                name: format!("Person {i}"),
                ..Default::default()
            },
            None,
        )?;
        docs.insert(case, a.profile.document(case)?);
    }
    let e = a.profile.enrolment().unwrap().clone();
    let (ep, conn) = connect_as(server.addr(), &e).await?;
    let before = ep.local_addr()?;
    let addr = server.addr().to_string();
    let total = docs.len();
    let sync = tokio::spawn(async move {
        let mut host = TestHost {
            docs,
            ..Default::default()
        };
        let mut session = ClientSession::new(false, vec![], BTreeMap::new());
        let end = net::drive(&addr, &conn, &mut session, &mut host, None).await;
        (end, host)
    });
    // Mid-sync, the laptop moves to another network: a new socket, a new address.
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    assert!(
        !sync.is_finished(),
        "the move must happen mid-sync for this test to mean anything"
    );
    ep.rebind(std::net::UdpSocket::bind("127.0.0.1:0")?)?;
    let after = ep.local_addr()?;
    assert_ne!(before.port(), after.port(), "the device's address changed");
    let (end, host) = sync.await?;
    let (code, _) = end?;
    assert_eq!(
        code,
        ErrorCode::Done,
        "the sync finished on the new address"
    );
    let mut acked = host.acked.clone();
    acked.sort();
    acked.dedup();
    assert_eq!(acked.len(), total, "every case was acknowledged");
    assert!(host.refused.is_empty());
    Ok(())
}

/// The schema-evolution rule end to end: a device on the next schema (this one plus one) writes fields, values
/// and a mark kind this version has never seen; this server checks and keeps the change, a
/// colleague's device on this version syncs the case, shows it, edits it, and its edit reaches
/// the server with the newer fields untouched. (DEVELOPERS.md, "Changing the record's shape".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_from_the_next_schema_syncs_shows_and_keeps_what_this_version_does_not_know(
) -> Result<()> {
    let (server, mut newer, mut colleague) = two_practitioners().await?;
    let (case, meeting) = newer.case_with_meeting("Maria")?;
    newer.sync().await?;

    // What the next version's device writes, under its own actor.
    let chunks = polyphony_core::store::Store::load_chunks(&**newer.profile.store(), &case)?
        .ok_or_else(|| anyhow::anyhow!("case held"))?;
    let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, c)| c).collect();
    let mut doc = automerge::AutoCommit::load(&bytes)?
        .with_actor(model::actor_for_device(&newer.profile.device()));
    doc.put(ROOT, "schema_version", model::schema::SCHEMA_VERSION + 1)?;
    let plan = doc.put_object(ROOT, "care_budget", automerge::ObjType::Map)?;
    doc.put(&plan, "weekly", "Twelve pounds for the bus")?;
    let meetings = doc.get(ROOT, "meetings")?.expect("meetings").1;
    let m = doc
        .get(&meetings, meeting.to_string().as_str())?
        .expect("meeting")
        .1;
    doc.put(&m, "tea_served", true)?;
    doc.put(&m, "state", "rescheduled")?;
    doc.commit();
    let id = polyphony_e2e::RawIdentity::of(newer.profile.enrolment().expect("enrolled"))?;
    let host = polyphony_e2e::raw_sync(server.addr(), &id, BTreeMap::from([(case, doc)])).await?;
    assert!(host.refused.is_empty(), "refused: {:?}", host.refused);
    assert!(host.acked.contains(&case), "the server acknowledged it");

    // This version's device syncs it, shows it, and edits it.
    let report = colleague.sync().await?;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let v = colleague.peek(case)?;
    assert_eq!(
        v.meetings[0].state,
        Stored::Unknown("rescheduled".into()),
        "a new value is shown as written"
    );
    colleague.profile.edit(case, |d| {
        d.append_text(&meeting, NoteKind::Notes, "Kit's words, on this version.")
    })?;
    let report = colleague.sync().await?;
    assert!(report.refused.is_empty(), "{:?}", report.refused);

    // A fresh device gets everything from the server: both versions' words, nothing lost.
    let mut fresh = server.device("Sam").await?;
    fresh.sync().await?;
    let chunks = polyphony_core::store::Store::load_chunks(&**fresh.profile.store(), &case)?
        .ok_or_else(|| anyhow::anyhow!("case held"))?;
    let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, c)| c).collect();
    let all = automerge::AutoCommit::load(&bytes)?;
    let plan = all
        .get(ROOT, "care_budget")?
        .expect("the newer field is kept")
        .1;
    assert_eq!(
        all.get(&plan, "weekly")?.expect("its value").0.to_string(),
        "\"Twelve pounds for the bus\""
    );
    assert_eq!(
        model::schema::schema_version(&all).unwrap(),
        Some(model::schema::SCHEMA_VERSION + 1)
    );
    assert!(fresh.peek(case)?.meetings[0]
        .notes
        .contains("Kit's words, on this version."));
    Ok(())
}
