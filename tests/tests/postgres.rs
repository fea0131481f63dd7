//! The server on PostgreSQL: the database itself crashes mid-sync (every one of its processes
//! killed at once, so what was only in its shared memory, the write-ahead log not yet written
//! out, is gone) and comes back; every change a device saw acknowledged is still there.
//!
//! This is what the store's flush is for: writes commit asynchronously, and the server tells a
//! device "saved" only after a flush has made the log durable through them. With the flush made
//! that does not wait for the log (as the first version did: a transaction holding only an id
//! commits without waiting), this test lost an acknowledged case in its second round.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use polyphony_core::model;
use polyphony_e2e::{PgCluster, TestServer};
use polyphony_server::config::StoreEngine;

/// How many cases the device has seen settled when the database is killed, per round: during
/// the first upload of 120 cases, then during uploads of 30 edited cases.
const CRASH_AFTER_SETTLED: [usize; 3] = [15, 95, 105];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_crashing_mid_sync_keeps_every_acknowledged_change() -> Result<()> {
    let cluster = PgCluster::start()?;
    let url = cluster.url.clone();
    let mut server = TestServer::start_with(move |c| {
        c.store = StoreEngine::Postgres;
        c.postgres_url = Some(url);
    })
    .await?;
    server.team("North").await?;
    server.practitioner("Sam", "North").await?;
    server.practitioner("Kit", "North").await?;
    let mut a = server.device("Sam").await?;
    let mut b = server.device("Kit").await?;

    let cases = polyphony_e2e::cases_with_notes(&mut a.profile, 120)?;

    let mut acknowledged_seen = 0;
    // Rounds in which the crash cut the sync short (cases refused, or the sync failed): the
    // crash must land mid-sync for the test to mean anything.
    let mut interrupted = 0;
    for (round, threshold) in CRASH_AFTER_SETTLED.into_iter().enumerate() {
        let settled = Arc::new(AtomicUsize::new(0));
        let seen = settled.clone();
        let sync = tokio::spawn(async move {
            let r = a
                .profile
                .sync(&mut |p| seen.store(p.settled, Ordering::SeqCst))
                .await;
            (a, r)
        });
        while settled.load(Ordering::SeqCst) < threshold && !sync.is_finished() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let at_crash = settled.load(Ordering::SeqCst);
        tokio::task::block_in_place(|| cluster.crash())?;
        eprintln!("round {round}: database killed after {at_crash} cases settled");
        let (back, result) = sync.await?;
        a = back;
        if result.as_ref().map_or(true, |r| !r.refused.is_empty()) {
            interrupted += 1;
        }
        match &result {
            Ok(report) => eprintln!(
                "round {round}: the sync ended with {} of {} cases refused ({:?}), {} changes unsynced",
                report.refused.len(),
                report.cases,
                report.refused.first(),
                report.unsynced_changes
            ),
            Err(e) => eprintln!("round {round}: the sync failed: {e}"),
        }
        tokio::task::block_in_place(|| cluster.restart())?;

        // Everything the device saw acknowledged is in the database: a second device gets it.
        // Its first sync may meet the server's pool still finding the database back.
        let mut synced = b.sync().await;
        for _ in 0..20 {
            if synced.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            synced = b.sync().await;
        }
        synced?;
        acknowledged_seen += polyphony_e2e::assert_acknowledged_reached(
            &a.profile,
            &mut b.profile,
            &cases,
            &format!("lost when the database crashed (round {round})"),
        )?;
        for case in cases.iter().take(30) {
            a.profile.edit(*case, |d| {
                d.set_person(model::PersonField::Pronouns, Some(&format!("r{round}")))
            })?;
        }
    }
    assert!(interrupted >= 1, "no crash landed mid-sync");
    assert!(
        acknowledged_seen >= 15,
        "changes were acknowledged before the crashes: {acknowledged_seen}"
    );

    // The device sends what the crashes interrupted; both end with the same cases.
    a.sync().await?;
    b.sync().await?;
    for case in &cases {
        assert_eq!(a.profile.unsynced(*case)?, 0);
        assert_eq!(
            a.profile.view(*case, "test")?,
            b.profile.view(*case, "test")?
        );
    }
    // Everything acknowledged is in the database itself, not only in the server's open cases:
    // the server restarted (nothing in its memory), a new device receives every change.
    server.restart().await?;
    let mut c = server.device("Kit").await?;
    c.sync().await?;
    for case in &cases {
        let mut doc = c.profile.document(*case)?;
        for h in a.profile.acknowledged_heads(*case)? {
            assert!(
                doc.get_change_by_hash(&h).is_some(),
                "case {case}: acknowledged change {h} not in the database"
            );
        }
    }
    Ok(())
}

/// Write a node's configuration: PostgreSQL in `schema`, the shared key file, and both nodes'
/// addresses for devices.
fn node_config(
    data: &std::path::Path,
    schema: &polyphony_core::store::pg_store::testing::TestSchema,
    key_file: &std::path::Path,
    advertise: &[std::net::SocketAddr],
) -> Result<()> {
    std::fs::create_dir_all(data)?;
    let advertise: Vec<String> = advertise
        .iter()
        .map(|a| format!("{:?}", a.to_string()))
        .collect();
    std::fs::write(
        data.join(polyphony_server::config::CONFIG_FILE_NAME),
        format!(
            "store = \"postgres\"\npostgres_url = {:?}\npostgres_schema = {:?}\npostgres_pool = 8\n\
             key_file = {:?}\nadvertise = [{}]\n",
            schema.options.url,
            schema.options.schema,
            key_file.display().to_string(),
            advertise.join(", ")
        ),
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_node_killed_mid_sync_the_standby_serves_and_nothing_acknowledged_is_lost(
) -> Result<()> {
    use polyphony_e2e::{free_udp_port, ServerProcess};
    use polyphony_server::admin::AdminRequest;

    polyphony_e2e::init_logs();
    let schema = polyphony_core::store::pg_store::testing::TestSchema::new();
    let dir = tempfile::tempdir()?;
    let key_file = dir.path().join("borough.key");
    polyphony_core::store::KeySource::create_key_file(&key_file)?;
    let a_addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse()?;
    let b_addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse()?;
    let (a_data, b_data) = (dir.path().join("a"), dir.path().join("b"));
    node_config(&a_data, &schema, &key_file, &[a_addr, b_addr])?;
    node_config(&b_data, &schema, &key_file, &[a_addr, b_addr])?;

    let mut a = ServerProcess::start(a_data, a_addr).await?;
    // B starts while A serves: it waits as the standby and does not answer.
    let b = ServerProcess::spawn(b_data, b_addr)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        b.admin(AdminRequest::Teams).await.is_err(),
        "the standby must not serve while the active node does"
    );
    // An administrator's command on the standby's machine is refused at once (it belongs on
    // the active node), instead of waiting as another standby.
    let offline = std::process::Command::new(polyphony_e2e::bin_path("polyphony-server"))
        .arg("--data")
        .arg(&b.data)
        .arg("teams")
        .output()?;
    let said = String::from_utf8_lossy(&offline.stderr);
    assert!(
        !offline.status.success() && said.contains("another server node serves from it"),
        "an offline command beside a serving node: {said}"
    );

    a.admin(AdminRequest::TeamAdd {
        name: "North".into(),
    })
    .await?;
    for p in ["Sam", "Kit"] {
        a.admin(AdminRequest::PractitionerAdd {
            name: p.into(),
            team: "North".into(),
            role: None,
        })
        .await?;
    }
    // Enrolled through A, the device is told both addresses.
    let mut sam = a.device("Sam").await?;
    let told = sam.profile.enrolment().expect("enrolled").servers.clone();
    assert_eq!(told, vec![a_addr.to_string(), b_addr.to_string()]);

    let cases = polyphony_e2e::cases_with_notes(&mut sam.profile, 80)?;

    // Still, after all that, the standby does not serve.
    assert!(
        b.admin(AdminRequest::Teams).await.is_err(),
        "the standby must not serve while the active node does"
    );

    // A is killed (SIGKILL) part-way through Sam's upload.
    let settled = Arc::new(AtomicUsize::new(0));
    let seen = settled.clone();
    let sync = tokio::spawn(async move {
        let r = sam
            .profile
            .sync(&mut |p| seen.store(p.settled, Ordering::SeqCst))
            .await;
        (sam, r)
    });
    while settled.load(Ordering::SeqCst) < 30 && !sync.is_finished() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let at_kill = settled.load(Ordering::SeqCst);
    a.kill();
    let (back, first) = sync.await?;
    let mut sam = back;
    assert!(
        at_kill < cases.len(),
        "the kill must land mid-sync ({at_kill} settled)"
    );
    eprintln!(
        "A killed after {at_kill} cases settled; the sync: {:?}",
        first
            .as_ref()
            .map(|r| r.refused.len())
            .map_err(|e| e.to_string())
    );

    // B takes over once A's database session is gone.
    b.wait_ready().await?;
    let acked_before: Vec<_> = cases
        .iter()
        .map(|c| sam.profile.acknowledged_heads(*c))
        .collect::<Result<_, _>>()?;

    // Sam's next sync finds A gone and carries on with B, and keeps B first from then on.
    sam.sync().await?;
    assert_eq!(
        sam.profile.enrolment().expect("enrolled").server,
        b_addr.to_string()
    );
    for case in &cases {
        assert_eq!(sam.profile.unsynced(*case)?, 0, "case {case} all sent to B");
    }

    // Everything acknowledged by A before it died, and all the rest, is on B: a device enrolled
    // through B receives it.
    let mut kit = b.device("Kit").await?;
    kit.sync().await?;
    let mut before = 0;
    for (case, acked) in cases.iter().zip(&acked_before) {
        let mut doc = kit.profile.document(*case)?;
        before += usize::from(!acked.is_empty());
        for h in acked {
            assert!(
                doc.get_change_by_hash(h).is_some(),
                "case {case}: change {h} acknowledged by A lost in the failover"
            );
        }
        assert_eq!(
            sam.profile.view(*case, "test")?,
            kit.profile.view(*case, "test")?
        );
    }
    assert!(
        before >= 30,
        "A acknowledged cases before it died: {before}"
    );
    // The audit log the two nodes wrote, one after the other, is one unbroken chain, and holds
    // A's records (the team, the enrolment) as well as B's.
    let verified = b
        .admin(AdminRequest::Audit {
            case: None,
            verify: true,
        })
        .await?;
    let entries = verified["entries"].as_u64().unwrap_or(0);
    let log = b
        .admin(AdminRequest::Audit {
            case: None,
            verify: false,
        })
        .await?;
    assert!(
        !polyphony_e2e::audit_details(&log, "team_added")?.is_empty(),
        "A's records are in the log B serves"
    );
    assert!(
        entries > 10,
        "the chain verifies across the failover: {verified}"
    );
    Ok(())
}
