//! Boroughs and the trust hub (issue 18), as real server processes on loopback: a borough's
//! devices' work reaches the hub through the borough's link; the hub keeps it across a SIGKILL;
//! a borough sees only its own teams' cases; a revoked borough is refused; the hub down for a
//! while, or the borough killed during its link's sync, loses nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, Result};
use automerge::ChangeHash;
use polyphony_core::model::schema::validate_document;
use polyphony_core::sync::{ClientSession, ErrorCode, Frame, Hello, Roster, PROTOCOL_VERSION};
use polyphony_core::CaseId;
use polyphony_e2e::federation::{
    connect_as_borough, hub_status, join, loopback, start_borough, start_hub, wait_kept,
    wait_on_hub,
};
use polyphony_e2e::{report_figures, ServerProcess, TestDevice};
use polyphony_server::admin::AdminRequest;
use polyphony_server::storage::ServerStorage;

/// How long the link may take to catch up in these tests (debug build, two cores).
const CATCH_UP: Duration = Duration::from_secs(90);

/// Every case each device holds, with the heads it holds: after a sync, what the borough
/// acknowledged to it.
fn heads_of(devices: &mut [&mut TestDevice]) -> Result<BTreeMap<CaseId, Vec<ChangeHash>>> {
    let mut all: BTreeMap<CaseId, Vec<ChangeHash>> = BTreeMap::new();
    for d in devices.iter_mut() {
        for case in d.profile.case_ids()? {
            let mut doc = d.profile.document(case)?;
            all.entry(case).or_default().extend(doc.get_heads());
        }
    }
    Ok(all)
}

/// Open a killed server's store and check it holds every change named in `heads`, and that
/// each of those documents validates. Returns how many cases it holds in all.
fn holds(server: &ServerProcess, heads: &BTreeMap<CaseId, Vec<ChangeHash>>) -> Result<usize> {
    let opened = polyphony_server::data_dir::open(&server.config())?;
    let storage = ServerStorage::new(opened.store.clone(), 16);
    for (case, hs) in heads {
        let stored = storage
            .case(case)?
            .ok_or_else(|| anyhow!("case {case} is not on {}", server.data.display()))?;
        let mut c = stored.lock().expect("case lock");
        for h in hs {
            if c.doc.get_change_by_hash(h).is_none() {
                return Err(anyhow!(
                    "case {case}: change {h} is not on {}",
                    server.data.display()
                ));
            }
        }
        validate_document(&c.doc).map_err(|e| anyhow!("case {case} does not validate: {e}"))?;
    }
    Ok(opened.registry.cases()?.len())
}

/// The heads the borough recorded the hub as holding, per case, read from its store (stopped).
fn acked_by_hub(borough: &ServerProcess) -> Result<BTreeMap<CaseId, Vec<ChangeHash>>> {
    let opened = polyphony_server::data_dir::open(&borough.config())?;
    let mut acked = BTreeMap::new();
    for (case, _) in opened.registry.cases()? {
        if let Some(h) = polyphony_server::hub_link::acked_heads(&*opened.store, &case)? {
            acked.insert(case, h);
        }
    }
    Ok(acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boroughs_offline_edits_reach_the_hub_and_survive_a_hub_kill() -> Result<()> {
    polyphony_e2e::init_logs();
    let dir = tempfile::tempdir()?;
    let mut hub = start_hub(&dir.path().join("hub"), loopback()).await?;
    let mut north = start_borough(
        &dir.path().join("north"),
        loopback(),
        "North",
        &["Ana", "Ben"],
    )
    .await?;
    let mut ana = north.device("Ana").await?;
    let mut ben = north.device("Ben").await?;
    // Written offline, before the borough has even joined the hub.
    let mut meetings = Vec::new();
    for i in 0..6 {
        meetings.push(ana.case_with_meeting(&format!("Person A{i}"))?);
        meetings.push(ben.case_with_meeting(&format!("Person B{i}"))?);
    }
    ana.sync().await?;
    ben.sync().await?;
    join(&hub, "North", &north).await?;
    // One case synced 40 times, each time with a new note: past the hub's compaction of a
    // case's log (every 32 chunks) while the link relays.
    let (long_case, long_meeting) = meetings[0];
    for round in 0..40 {
        ana.note(long_case, long_meeting, &format!("round {round}. "))?;
        ana.sync().await?;
    }
    ben.sync().await?;
    let status = wait_on_hub(&north, CATCH_UP).await?;
    assert_eq!(status.cases, 12, "{status:?}");
    let heads = heads_of(&mut [&mut ana, &mut ben])?;
    hub.kill();
    north.kill();
    // Everything the devices hold (what the borough acknowledged to them) is on the hub's disk,
    // and so is everything the hub acknowledged to the borough.
    assert_eq!(holds(&hub, &heads)?, 12);
    let acked = acked_by_hub(&north)?;
    assert_eq!(acked.len(), 12);
    holds(&hub, &acked)?;
    let long = {
        let opened = polyphony_server::data_dir::open(&hub.config())?;
        let storage = ServerStorage::new(opened.store.clone(), 4);
        let stored = storage.case(&long_case)?.expect("on the hub");
        let doc = stored.lock().expect("lock").doc.clone();
        polyphony_core::model::CaseDoc::from_automerge(doc, None)?.view()
    };
    let notes = &long.meetings[0].notes;
    assert!(
        notes.contains("round 0. ") && notes.contains("round 39. "),
        "{notes}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_borough_gets_only_its_own_teams_cases_through_the_hub() -> Result<()> {
    polyphony_e2e::init_logs();
    let dir = tempfile::tempdir()?;
    let hub = start_hub(&dir.path().join("hub"), loopback()).await?;
    let a = start_borough(&dir.path().join("a"), loopback(), "North", &["Ana"]).await?;
    // Both boroughs call their team "North": team names are the borough's own.
    let b = start_borough(&dir.path().join("b"), loopback(), "North", &["Bo"]).await?;
    join(&hub, "Ashby", &a).await?;
    let b_link = join(&hub, "Brent", &b).await?;
    let mut ana = a.device("Ana").await?;
    let mut bo = b.device("Bo").await?;
    let (a_case, _) = ana.case_with_meeting("Person of Ashby")?;
    let (b_case, _) = bo.case_with_meeting("Person of Brent")?;
    ana.sync().await?;
    bo.sync().await?;
    wait_on_hub(&a, CATCH_UP).await?;
    let status = wait_on_hub(&b, CATCH_UP).await?;
    // Brent holds its own case only: the hub granted it nothing of Ashby's.
    assert_eq!(status.cases, 1);
    bo.sync().await?;
    assert_eq!(bo.profile.case_ids()?, vec![b_case]);

    // Brent's own link certificate, asking the hub for Ashby's case by id: not available, and
    // nothing of it sent.
    let (ep, conn) = connect_as_borough(&hub, &b_link).await?;
    let (send, recv) = conn.open_bi().await?;
    let mut stream = polyphony_core::net::FramedStream::new(send, recv);
    let hello = Hello {
        version: PROTOCOL_VERSION,
        software: "test".into(),
        live: false,
        features: vec![],
    };
    let roster = Roster {
        teams: vec![],
        devices: vec![],
    };
    let mut empty = automerge::AutoCommit::new();
    let mut state = automerge::sync::State::new();
    let ask = automerge::sync::SyncDoc::generate_sync_message(&empty.sync(), &mut state)
        .expect("a first message")
        .encode();
    stream
        .write_frames(&[
            Frame::Hello(hello),
            Frame::Roster(roster),
            Frame::Sync {
                case: a_case,
                message: ask,
            },
        ])
        .await?;
    let mut refused = None;
    while let Some(f) = tokio::time::timeout(Duration::from_secs(20), stream.read_frame()).await?? {
        match f {
            Frame::Welcome(w) => {
                assert!(w.cases.iter().all(|g| g.case != a_case), "{w:?}");
                assert!(w.cases.iter().any(|g| g.case == b_case), "{w:?}");
            }
            Frame::CaseRefused { case, refusal } => {
                assert_eq!(case, a_case);
                refused = Some(refusal);
                break;
            }
            Frame::Sync { case, .. } => {
                panic!("the hub sent data of case {case} to another borough")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let refusal = refused.expect("refused");
    assert_eq!(refusal.code, ErrorCode::NotAvailable, "{refusal:?}");
    ep.close(0u32.into(), b"");

    // Ana's device certificate at the hub: refused at the handshake (the hub's CA did not issue
    // it), whichever CA the device is told to trust.
    let e = ana.profile.enrolment().expect("enrolled").clone();
    let device_key = polyphony_core::identity::DeviceKey::from_pem(&e.key_pem)?;
    let as_device = polyphony_core::net::connect(
        &hub.addr.to_string(),
        &hex::decode(&b_link.hub_ca)?,
        &hex::decode(&e.certificate)?,
        &device_key,
    )
    .await;
    let refused_device = match as_device {
        Err(e) => e.to_string(),
        Ok((_ep, conn)) => {
            let mut session = ClientSession::new(false, vec![], Default::default());
            let mut host = polyphony_e2e::TestHost::default();
            match polyphony_core::net::drive(
                &hub.addr.to_string(),
                &conn,
                &mut session,
                &mut host,
                None,
            )
            .await
            {
                Err(e) => e.to_string(),
                Ok(end) => panic!("a device of a borough synced with the hub: {end:?}"),
            }
        }
    };
    assert!(
        refused_device.contains("handshake") || refused_device.contains("refused"),
        "{refused_device}"
    );
    // Ana's device at Brent's borough server directly: its certificate is not Brent's CA's.
    let direct = polyphony_core::net::connect(
        &b.addr.to_string(),
        &hex::decode(&e.ca)?,
        &hex::decode(&e.certificate)?,
        &device_key,
    )
    .await;
    assert!(
        direct.is_err(),
        "a device of Ashby connected to Brent's server"
    );
    // Ana's device asking its own borough for Brent's case by id gets nothing of it: Ashby does
    // not hold it, and the hub never sent it there.
    let mut host = polyphony_e2e::TestHost::default();
    host.docs.insert(b_case, automerge::AutoCommit::new());
    let (_, host) = polyphony_e2e::run_session(a.addr, &e, host, false).await?;
    let mut asked = host.docs.get(&b_case).cloned().unwrap_or_default();
    assert!(
        asked.get_heads().is_empty(),
        "Ashby sent changes of Brent's case"
    );
    // A borough's code works once.
    let code = polyphony_e2e::code_from(
        &hub.admin(AdminRequest::BoroughEnrol {
            borough: "Brent".into(),
        })
        .await?,
    )?;
    polyphony_server::hub_link::join(
        &hub.addr.to_string(),
        &code,
        "Brent",
        &polyphony_server::hub_link::RecoveryKey::generate(),
    )
    .await
    .map_err(|e| anyhow!(e))?;
    let again = polyphony_server::hub_link::join(
        &hub.addr.to_string(),
        &code,
        "Brent",
        &polyphony_server::hub_link::RecoveryKey::generate(),
    )
    .await;
    let err = again.expect_err("a used code");
    assert!(
        err.contains("already used") || err.contains("used"),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_borough_is_refused_and_its_live_link_closed() -> Result<()> {
    polyphony_e2e::init_logs();
    let dir = tempfile::tempdir()?;
    let hub = start_hub(&dir.path().join("hub"), loopback()).await?;
    let b = start_borough(&dir.path().join("b"), loopback(), "North", &["Bo"]).await?;
    let b_link = join(&hub, "Brent", &b).await?;
    let mut bo = b.device("Bo").await?;
    let (case, meeting) = bo.case_with_meeting("Person")?;
    bo.sync().await?;
    wait_on_hub(&b, CATCH_UP).await?;
    hub.admin(AdminRequest::BoroughRevoke {
        borough: "Brent".into(),
    })
    .await?;
    let start = std::time::Instant::now();
    let status = loop {
        let s = hub_status(&b).await?;
        let link = s.link.clone().expect("running");
        if !link.connected
            && link
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("revoked"))
        {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "still linked: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    report_figures(
        "a_revoked_borough_is_refused_and_its_live_link_closed",
        &[("ms_to_close_the_link", start.elapsed().as_millis() as u64)],
    );
    // The borough keeps serving its devices: a new note is saved on the borough.
    bo.note(case, meeting, "after the revocation")?;
    let report = bo.sync().await?;
    assert!(report.refused.is_empty(), "{report:?}");
    // And its link stays refused (it waits long before trying again: each try is a refusal in
    // the hub's log).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = hub_status(&b).await?;
    assert!(!later.link.expect("running").connected);
    assert_eq!(later.not_on_hub, 1, "{status:?}");
    // A new connection with its certificate is refused as revoked (the link itself waits long
    // between tries now: each is a refusal in the hub's log).
    let (ep, conn) = connect_as_borough(&hub, &b_link).await?;
    let mut session = ClientSession::new(false, vec![], Default::default());
    let mut host = polyphony_e2e::TestHost::default();
    let outcome =
        polyphony_core::net::drive(&hub.addr.to_string(), &conn, &mut session, &mut host, None)
            .await;
    ep.close(0u32.into(), b"");
    match outcome {
        Err(polyphony_core::net::NetError::Refused { code, .. }) => {
            assert_eq!(code, ErrorCode::Revoked)
        }
        other => panic!("a revoked borough's link was not refused: {other:?}"),
    }
    // The hub's log names the live link's end and the refused try.
    let log = hub
        .admin(AdminRequest::Audit {
            case: None,
            verify: false,
        })
        .await?;
    let refused = polyphony_e2e::audit_details(&log, "refused")?;
    assert!(
        refused
            .iter()
            .any(|d| d.contains("borough link closed") && d.contains("revoked")),
        "{refused:?}"
    );
    assert!(
        refused
            .iter()
            .any(|d| d.contains("revoked borough tried to connect")),
        "{refused:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_down_for_a_while_loses_nothing_and_the_link_catches_up() -> Result<()> {
    polyphony_e2e::init_logs();
    let dir = tempfile::tempdir()?;
    let hub_addr = loopback();
    let mut hub = start_hub(&dir.path().join("hub"), hub_addr).await?;
    let mut b = start_borough(&dir.path().join("b"), loopback(), "North", &["Bo"]).await?;
    join(&hub, "Brent", &b).await?;
    let mut bo = b.device("Bo").await?;
    let (case, meeting) = bo.case_with_meeting("Person")?;
    bo.sync().await?;
    wait_on_hub(&b, CATCH_UP).await?;
    // The device hears it, at its next sync: saved on the borough, and also on the trust hub.
    bo.sync().await?;
    let status = bo.profile.status()?;
    assert_eq!(
        (status.unsynced_changes, status.not_on_hub),
        (0, Some(0)),
        "{status:?}"
    );
    hub.kill();
    // Five rounds of work while the hub is down: every one saved on the borough.
    let mut others = Vec::new();
    for round in 0..5 {
        bo.note(case, meeting, &format!("while the hub is down {round}. "))?;
        others.push(bo.case_with_meeting(&format!("New person {round}"))?.0);
        let report = bo.sync().await?;
        assert!(report.refused.is_empty(), "{report:?}");
    }
    let down = hub_status(&b).await?;
    // (The link may not have noticed yet that the hub is gone: a dead peer is found by QUIC's
    // idle timeout. What matters is that nothing waits on it.)
    assert_eq!(down.not_on_hub, 6, "{down:?}");
    // The device says so too: everything saved on the borough, not all of it on the hub.
    let status = bo.profile.status()?;
    assert_eq!(status.unsynced_changes, 0, "{status:?}");
    assert!(status.not_on_hub.is_some_and(|n| n > 0), "{status:?}");
    let hub = start_hub(&dir.path().join("hub"), hub_addr).await?;
    let back = wait_on_hub(&b, CATCH_UP).await?;
    assert_eq!(back.cases, 6);
    bo.sync().await?;
    let status = bo.profile.status()?;
    assert_eq!(status.not_on_hub, Some(0), "{status:?}");
    let heads = heads_of(&mut [&mut bo])?;
    let mut hub = hub;
    hub.kill();
    b.kill();
    assert_eq!(holds(&hub, &heads)?, 6);
    holds(&hub, &acked_by_hub(&b)?)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_borough_killed_during_link_sync_restarts_and_loses_nothing() -> Result<()> {
    const CASES: usize = 80;
    polyphony_e2e::init_logs();
    let dir = tempfile::tempdir()?;
    let hub = start_hub(&dir.path().join("hub"), loopback()).await?;
    let b_addr = loopback();
    let mut b = start_borough(&dir.path().join("b"), b_addr, "North", &["Bo"]).await?;
    let mut bo = b.device("Bo").await?;
    // More cases than the link keeps copies of at once (hub_link's COPIES, 64).
    for i in 0..CASES {
        let (case, meeting) = bo.case_with_meeting(&format!("Person {i}"))?;
        bo.note(case, meeting, "first visit")?;
    }
    bo.sync().await?;
    join(&hub, "Brent", &b).await?;
    // Killed while its link sends its caseload, at a few points, each restart resuming. The
    // count of cases not yet on the hub at each kill shows where the link was.
    let mut kills = 0;
    let mut not_on_hub_at_kills = Vec::new();
    for wait_ms in [150u64, 400, 900] {
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        let s = hub_status(&b).await?;
        b.kill();
        kills += 1;
        not_on_hub_at_kills.push(s.not_on_hub);
        b = ServerProcess::start(b.data.clone(), b_addr).await?;
        if s.not_on_hub == 0 {
            break;
        }
    }
    eprintln!("cases not yet on the hub at each kill: {not_on_hub_at_kills:?}");
    assert!(
        not_on_hub_at_kills.iter().any(|n| *n > 0),
        "every kill came after the link had finished: {not_on_hub_at_kills:?}"
    );
    let status = wait_on_hub(&b, CATCH_UP).await?;
    assert_eq!(status.cases, CASES);
    report_figures(
        "a_borough_killed_during_link_sync_restarts_and_loses_nothing",
        &[("kills", kills)],
    );
    let heads = heads_of(&mut [&mut bo])?;
    let mut hub = hub;
    hub.kill();
    b.kill();
    assert_eq!(holds(&hub, &heads)?, CASES);
    holds(&hub, &acked_by_hub(&b)?)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_cases_past_the_hubs_limit_per_session_all_arrive_in_later_sessions() -> Result<()> {
    polyphony_e2e::init_logs();
    let dir = tempfile::tempdir()?;
    let mut hub = polyphony_e2e::federation::start_configured(
        &dir.path().join("hub"),
        loopback(),
        "role = \"hub\"\nmax_new_cases_per_session = 8\n",
    )
    .await?;
    let mut b = start_borough(&dir.path().join("b"), loopback(), "North", &["Bo"]).await?;
    let mut bo = b.device("Bo").await?;
    for i in 0..20 {
        bo.case_with_meeting(&format!("Person {i}"))?;
    }
    bo.sync().await?;
    join(&hub, "Brent", &b).await?;
    let status = wait_on_hub(&b, CATCH_UP).await?;
    assert_eq!(status.cases, 20);
    let sessions = status.link.expect("running").sessions;
    // Eight at most in each session: the first took 8 and was refused the rest as busy.
    assert!(sessions >= 3, "{sessions} link session(s)");
    report_figures(
        "new_cases_past_the_hubs_limit_per_session_all_arrive_in_later_sessions",
        &[("link_sessions", sessions)],
    );
    let heads = heads_of(&mut [&mut bo])?;
    hub.kill();
    b.kill();
    assert_eq!(holds(&hub, &heads)?, 20);
    Ok(())
}

/// Attach a referral letter of `len` bytes to `case` on `device`: its entry and its bytes.
fn attach_letter(
    device: &mut TestDevice,
    case: CaseId,
    len: usize,
) -> Result<(polyphony_core::EntryId, Vec<u8>)> {
    let letter: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let id = device.profile.attach(
        case,
        polyphony_core::profile::AttachFile {
            kind: polyphony_core::model::AttachmentKind::ReferralLetter,
            title: "Referral from Dr Shah",
            file_name: "referral.pdf",
            content: &letter,
            meeting: None,
        },
    )?;
    Ok((id, letter))
}

/// Run `polyphony-server --data DATA hub restore HUB CODE --recovery-key KEY`; its output.
fn restore_cli(
    data: &std::path::Path,
    hub: std::net::SocketAddr,
    code: &str,
    key: &std::path::Path,
) -> Result<std::process::Output> {
    Ok(
        std::process::Command::new(polyphony_e2e::bin_path("polyphony-server"))
            .arg("--data")
            .arg(data)
            .args(["hub", "restore", &hub.to_string(), code, "--name", "North"])
            .arg("--recovery-key")
            .arg(key)
            .output()?,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_borough_rebuilt_empty_is_restored_from_the_hub() -> Result<()> {
    polyphony_e2e::init_logs();
    let dir = tempfile::tempdir()?;
    let (hub_dir, north_dir) = (dir.path().join("hub"), dir.path().join("north"));
    let (hub_addr, north_addr) = (loopback(), loopback());
    let mut hub = start_hub(&hub_dir, hub_addr).await?;
    let mut north = start_borough(&north_dir, north_addr, "North", &["Ana", "Ben"]).await?;
    let mut ana = north.device("Ana").await?;
    let mut ben = north.device("Ben").await?;
    let (case, meeting) = ana.case_with_meeting("Person R")?;
    ana.note(case, meeting, "before the borough was lost. ")?;
    let (letter_id, letter) = attach_letter(&mut ana, case, 50_000)?;
    ana.sync().await?;
    // Ben's device reads the case: a record in the person's access list.
    ben.sync().await?;
    let membership = join(&hub, "North", &north).await?;
    wait_on_hub(&north, CATCH_UP).await?;
    let kept = wait_kept(&north, CATCH_UP).await?;
    let before = kept.safekeeping.expect("kept").audit_records_kept;
    let key_file = dir.path().join("north.recovery");
    std::fs::write(&key_file, membership.recovery_key.clone().expect("a key"))?;

    // The hub cannot read what it keeps: no name, no key, no record in the clear.
    hub.kill();
    {
        let opened = polyphony_server::data_dir::open(&hub.config())?;
        let mut copy = Vec::new();
        for shelf in ["registry", "audit"] {
            let parts = opened
                .store
                .scan_meta(&format!("keep.{}.{shelf}", membership.borough))?;
            assert!(!parts.is_empty(), "no {shelf} part kept");
            copy.extend(parts);
        }
        for (key, value) in &copy {
            let text = String::from_utf8_lossy(value);
            for plain in ["Ana", "PRIVATE KEY", "registry.", "\"seq\""] {
                assert!(!text.contains(plain), "{key} holds {plain:?} in the clear");
            }
        }
    }
    // While the hub is down, a note the hub never receives: saved on the borough only.
    ana.note(case, meeting, "only ever on the old borough server. ")?;
    assert!(ana.sync().await?.refused.is_empty());
    // The borough server is lost with its disk.
    north.kill();
    std::fs::remove_dir_all(&north_dir)?;
    let hub = start_hub(&hub_dir, hub_addr).await?;

    // The wrong key opens nothing, and nothing is written (the code is spent).
    let code = || async {
        polyphony_e2e::code_from(
            &hub.admin(AdminRequest::BoroughEnrol {
                borough: "North".into(),
            })
            .await?,
        )
    };
    let wrong = dir.path().join("wrong.recovery");
    std::fs::write(
        &wrong,
        polyphony_server::hub_link::RecoveryKey::generate().to_text(),
    )?;
    let out = restore_cli(&north_dir, hub_addr, &code().await?, &wrong)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("does not open with this recovery key"),
        "{stderr}"
    );
    // The right key rebuilds it.
    let out = restore_cli(&north_dir, hub_addr, &code().await?, &key_file)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        membership.borough.to_string()
    );
    // A second restore into a directory that now holds a borough is refused.
    let again = restore_cli(&north_dir, hub_addr, &code().await?, &key_file)?;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds a borough server's data")
    );

    // Started again at its address, the link brings its cases back from the hub.
    let north = polyphony_e2e::federation::start_configured(
        &north_dir,
        north_addr,
        polyphony_e2e::federation::BOROUGH_SETTINGS,
    )
    .await?;
    let back = wait_on_hub(&north, CATCH_UP).await?;
    assert_eq!(back.cases, 1, "{back:?}");
    // The devices sync as before, without enrolling again, and Ana's device sends the note the
    // hub never had. Its saved sync state describes the old server, which held that note: its
    // first sync may stop the case as "did not settle" (automerge's sync can loop on a peer
    // that lost changes), and the next, with fresh states, completes. Nothing else is refused.
    let report = ana.sync().await?;
    let stalled = report
        .refused
        .iter()
        .all(|(c, why)| *c == case.to_string() && why.contains("did not settle"));
    assert!(stalled, "{report:?}");
    if !report.refused.is_empty() {
        let report = ana.sync().await?;
        assert!(report.refused.is_empty(), "{report:?}");
    }
    // Ben's device, which held the letter, is not asked for it again; a new device of his
    // fetches it from the rebuilt borough, which fetched it from the hub.
    ben.sync().await?;
    let mut ben2 = north.device("Ben").await?;
    let start = std::time::Instant::now();
    loop {
        if ben2.sync().await?.attachments.received == 1 {
            break;
        }
        assert!(start.elapsed() < CATCH_UP, "the letter is not back");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (_, bytes) = ben2.profile.open_attachment(case, letter_id)?;
    assert_eq!(bytes.as_deref(), Some(&letter[..]));
    let notes = ben.peek(case)?.meetings[0].notes.clone();
    assert!(
        notes.contains("before the borough was lost. ")
            && notes.contains("only ever on the old borough server. "),
        "{notes}"
    );
    // The audit log goes on from the kept one: the chain verifies across the rebuild, the
    // person's access list still shows Ben's device's read from before it, and the restore is
    // recorded.
    let verified: polyphony_server::audit::VerifyReport = serde_json::from_value(
        north
            .admin(AdminRequest::Audit {
                case: None,
                verify: true,
            })
            .await?,
    )?;
    assert!(verified.entries > before, "{verified:?}");
    let log: Vec<polyphony_server::audit::AuditRecord> = serde_json::from_value(
        north
            .admin(AdminRequest::Audit {
                case: Some(case),
                verify: false,
            })
            .await?,
    )?;
    let ben_practitioner = ben.profile.enrolment().expect("enrolled").practitioner;
    assert!(
        log.iter().any(|r| r.seq < before
            && r.event.action == polyphony_server::audit::AuditAction::Read
            && matches!(r.event.actor, polyphony_server::audit::Actor::Device { practitioner, .. } if practitioner == ben_practitioner)),
        "{log:#?}"
    );
    let all: Vec<polyphony_server::audit::AuditRecord> = serde_json::from_value(
        north
            .admin(AdminRequest::Audit {
                case: None,
                verify: false,
            })
            .await?,
    )?;
    assert!(all.iter().any(
        |r| r.event.action == polyphony_server::audit::AuditAction::Restored && r.seq == before
    ));
    Ok(())
}

/// Poll `check` every 200 ms until it holds, at most [`CATCH_UP`].
async fn until<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = std::time::Instant::now();
    while !check().await? {
        if start.elapsed() > CATCH_UP {
            return Err(anyhow!("{what}: not within {CATCH_UP:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_with_unsynced_work_on_the_old_teams_device_loses_nothing() -> Result<()> {
    use polyphony_core::model::{Participant, PlanSection, Stance};
    polyphony_e2e::init_logs();
    let dir = tempfile::tempdir()?;
    let hub_addr = loopback();
    let hub_dir = dir.path().join("hub");
    let mut hub = start_hub(&hub_dir, hub_addr).await?;
    let north = start_borough(&dir.path().join("north"), loopback(), "North", &["Ana"]).await?;
    let south = start_borough(&dir.path().join("south"), loopback(), "West", &["Sol"]).await?;
    join(&hub, "North", &north).await?;
    join(&hub, "South", &south).await?;
    let mut ana = north.device("Ana").await?;
    let mut sol = south.device("Sol").await?;
    // The whole history: notes, a decision with the person's position, the crisis plan.
    let (case, meeting) = ana.case_with_meeting("Person T")?;
    ana.note(case, meeting, "written in North. ")?;
    ana.profile.edit(case, |d| {
        let decision = d.propose_decision("Stay with her sister", Participant::Person)?;
        d.record_position(&decision, Participant::Person, Stance::Agree, Some("yes"))?;
        d.add_plan_item(
            PlanSection::WhatHelps,
            "a walk by the canal",
            Participant::Person,
            Some(meeting),
        )
    })?;
    // A referral letter of over one chunk: the file goes with the record.
    let (letter_id, letter) = attach_letter(
        &mut ana,
        case,
        polyphony_core::sync::BLOB_CHUNK_BYTES + 4_321,
    )?;
    ana.sync().await?;
    wait_on_hub(&north, CATCH_UP).await?;
    // Before South may see it: a case of another borough is not available to it.
    sol.sync().await?;
    assert!(sol.profile.case_ids()?.is_empty());

    // A second case goes to South and straight back, unchanged there: North has it again.
    let (quiet, _) = ana.case_with_meeting("Person Q")?;
    ana.sync().await?;
    wait_on_hub(&north, CATCH_UP).await?;
    for (from, to, team) in [(&north, "South", "West"), (&south, "North", "North")] {
        from.admin(AdminRequest::CaseTransfer {
            case: quiet,
            borough: to.into(),
            team: team.into(),
        })
        .await?;
        until("the quiet case transferred", || async {
            Ok(hub_status(from).await?.transfers.is_empty())
        })
        .await?;
        // The receiving borough records the case as its own (North: "transferred back").
        let (receiving, words) = if to == "South" {
            (&south, "transferred here")
        } else {
            (&north, "transferred back here")
        };
        until(
            "the quiet case registered on the receiving borough",
            || async {
                let log = receiving
                    .admin(AdminRequest::Audit {
                        case: Some(quiet),
                        verify: false,
                    })
                    .await?;
                Ok(polyphony_e2e::audit_details(&log, "case_moved")?
                    .iter()
                    .any(|d| d.starts_with(words)))
            },
        )
        .await?;
    }
    ana.sync().await?;
    assert!(
        ana.profile.case_ids()?.contains(&quiet),
        "the quiet case is North's again"
    );

    // On a home visit, offline: three notes the borough has not seen.
    for i in 0..3 {
        ana.note(case, meeting, &format!("offline before the transfer {i}. "))?;
    }
    // The person moves. The transfer is asked for while the hub is down: it waits, and goes
    // once the hub is back.
    hub.kill();
    north
        .admin(AdminRequest::CaseTransfer {
            case,
            borough: "South".into(),
            team: "West".into(),
        })
        .await?;
    assert_eq!(hub_status(&north).await?.transfers.len(), 1);
    let _hub = start_hub(&hub_dir, hub_addr).await?;
    until("the transfer confirmed", || async {
        Ok(hub_status(&north).await?.transfers.is_empty())
    })
    .await?;
    // The receiving borough's link is granted the case and stores it.
    until("the case on South", || async {
        let s = hub_status(&south).await?;
        Ok(s.cases == 1 && s.not_on_hub == 0)
    })
    .await?;
    // Its file too: through North's link to the hub, and from there to South's, whose device
    // fetches it (tried until South's link has fetched it).
    let start = std::time::Instant::now();
    loop {
        let report = sol.sync().await?;
        if report.attachments.received == 1 {
            break;
        }
        assert!(
            start.elapsed() < CATCH_UP,
            "the letter did not reach South: {:?}",
            report.attachments
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (_, bytes) = sol.profile.open_attachment(case, letter_id)?;
    assert_eq!(bytes.as_deref(), Some(&letter[..]));
    let view = sol.peek(case)?;
    assert!(view.meetings[0].notes.contains("written in North. "));
    assert_eq!(view.decisions[0].positions.len(), 1);
    assert_eq!(view.crisis_plan.items.len(), 1);

    // A new device of Ana's changes North's roster, so its link reconnects and syncs every
    // case: the hub tells the link the case moved. Ana's first device has not heard yet, and
    // writes on in good faith: North holds it to when it is told, and the hub takes it from
    // the link for all that (the borough enforced each device's own boundary).
    let mut again = north.device("Ana").await?;
    until("the hub tells North's link the case moved", || async {
        let log: Vec<polyphony_server::audit::AuditRecord> = serde_json::from_value(
            _hub.admin(AdminRequest::Audit {
                case: Some(case),
                verify: false,
            })
            .await?,
        )?;
        Ok(log
            .iter()
            .any(|r| r.event.detail.starts_with("device told the case moved")))
    })
    .await?;
    ana.note(
        case,
        meeting,
        "after the transfer, before this device heard. ",
    )?;
    // Ana's device is told at its next sync, uploads what it wrote before, and drops the case.
    let report = ana.sync().await?;
    assert_eq!(report.moved, vec![case.to_string()], "{report:?}");
    assert!(report.kept_unsynced.is_empty(), "{report:?}");
    assert!(!ana.profile.case_ids()?.contains(&case));
    // Those notes reach South: through North, its link and the hub.
    let start = std::time::Instant::now();
    loop {
        sol.sync().await?;
        let notes = sol.peek(case)?.meetings[0].notes.clone();
        if (0..3).all(|i| notes.contains(&format!("offline before the transfer {i}. ")))
            && notes.contains("after the transfer, before this device heard. ")
        {
            break;
        }
        assert!(
            start.elapsed() < CATCH_UP,
            "the offline notes are not on South: {notes}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // South's team writes on; the hub takes it from South's link.
    sol.note(case, meeting, "written in South. ")?;
    assert!(sol.sync().await?.refused.is_empty());
    wait_on_hub(&south, CATCH_UP).await?;
    // The person's access list on South shows both boroughs.
    let list = sol.profile.fetch_accesses(case).await?;
    assert!(
        list.entries
            .iter()
            .any(|a| a.who.contains("Ana") && a.who.contains("the North borough")),
        "{:#?}",
        list.entries
    );
    assert!(
        list.entries.iter().any(|a| a.who == "Sol"),
        "{:#?}",
        list.entries
    );
    // North's team cannot have it back: Ana's new device gets nothing.
    again.sync().await?;
    assert!(!again.profile.case_ids()?.contains(&case));

    // The person comes back: South hands the case to North again, and North's team has it
    // with what South wrote; its list shows South's accesses, and North's own once.
    south
        .admin(AdminRequest::CaseTransfer {
            case,
            borough: "North".into(),
            team: "North".into(),
        })
        .await?;
    until("the case back on North", || async {
        Ok(hub_status(&south).await?.transfers.is_empty()
            && hub_status(&north).await?.not_on_hub == 0)
    })
    .await?;
    // North registers it as its own again at its link's next welcome, and stores South's
    // changes as they arrive: the device may be sent the case before them, and gets them at a
    // later sync.
    let start = std::time::Instant::now();
    loop {
        again.sync().await?;
        let back = again.profile.case_ids()?.contains(&case)
            && again.peek(case)?.meetings[0]
                .notes
                .contains("written in South. ");
        if back {
            break;
        }
        assert!(
            start.elapsed() < CATCH_UP,
            "the case is not back on North with South's note"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let list = again.profile.fetch_accesses(case).await?;
    assert!(
        list.entries
            .iter()
            .any(|a| a.who.contains("Sol") && a.who.contains("the South borough")),
        "{:#?}",
        list.entries
    );
    assert!(
        !list
            .entries
            .iter()
            .any(|a| a.who.contains("the North borough")),
        "{:#?}",
        list.entries
    );
    Ok(())
}
