//! The server is killed (SIGKILL) during a sync of many cases; after restart every change the device
//! saw acknowledged is there, and a second sync converges.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How many cases the device has seen settled when the server is killed, per round. Round 1 kills
/// during the first upload of 120 cases; later rounds, during the upload of 30 edited cases.
const KILL_AFTER_SETTLED: [usize; 3] = [20, 100, 110];

use anyhow::Result;
use polyphony_core::model;
use polyphony_e2e::{free_udp_port, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_sync_keeps_every_acknowledged_change() -> Result<()> {
    polyphony_e2e::init_logs();
    let data = tempfile::tempdir()?;
    let addr = format!("127.0.0.1:{}", free_udp_port()).parse()?;
    let mut server = ServerProcess::start(data.path().join("server"), addr).await?;
    server
        .admin(polyphony_server::admin::AdminRequest::TeamAdd {
            name: "North".into(),
        })
        .await?;
    for p in ["Sam", "Kit"] {
        server
            .admin(polyphony_server::admin::AdminRequest::PractitionerAdd {
                name: p.into(),
                team: "North".into(),
                role: None,
            })
            .await?;
    }
    let mut a = server.device("Sam").await?;
    let mut b = server.device("Kit").await?;

    let cases = polyphony_e2e::cases_with_notes(&mut a.profile, 120)?;

    let mut kills = 0;
    let t0 = std::time::Instant::now();
    let mut acknowledged_seen = 0;
    for round in 0..3u64 {
        // Kill the server mid-sync, at a different point in each round: once the device has seen a
        // given number of cases settled (acknowledged), so the kill lands mid-sync however fast or
        // slow the machine is. The restarted server resets the stale connection at once.
        let settled = Arc::new(AtomicUsize::new(0));
        let seen = settled.clone();
        let sync = tokio::spawn(async move {
            let r = a
                .profile
                .sync(&mut |p| seen.store(p.settled, Ordering::SeqCst))
                .await;
            (a, r)
        });
        let threshold = KILL_AFTER_SETTLED[round as usize];
        while settled.load(Ordering::SeqCst) < threshold && !sync.is_finished() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        server.kill();
        eprintln!(
            "[{:?}] killed after {} cases settled",
            t0.elapsed(),
            settled.load(Ordering::SeqCst)
        );
        kills += 1;
        server = ServerProcess::start(data.path().join("server"), addr).await?;
        eprintln!("[{:?}] restarted", t0.elapsed());
        let (back, _result) = sync.await?;
        eprintln!(
            "[{:?}] sync ended: {:?}",
            t0.elapsed(),
            _result.as_ref().err().map(|e| e.to_string())
        );
        a = back;
        // Everything the device saw acknowledged must be on the restarted server: a fresh second
        // device receives it.
        b.sync().await?;
        eprintln!("[{:?}] b synced", t0.elapsed());
        acknowledged_seen += polyphony_e2e::assert_acknowledged_reached(
            &a.profile,
            &mut b.profile,
            &cases,
            "lost after SIGKILL",
        )?;
        // Edit again so the next round has something new to upload.
        for case in cases.iter().take(30) {
            a.profile.edit(*case, |d| {
                d.set_person(model::PersonField::Pronouns, Some(&format!("r{round}")))
            })?;
        }
    }
    assert_eq!(kills, 3);
    assert!(
        acknowledged_seen > 0,
        "some changes were acknowledged before the kills"
    );

    // A final sync converges: both devices hold the same documents, nothing unsynced.
    a.sync().await?;
    b.sync().await?;
    for case in &cases {
        assert_eq!(a.profile.unsynced(*case)?, 0);
        assert_eq!(
            a.profile.view(*case, "test")?,
            b.profile.view(*case, "test")?
        );
    }
    Ok(())
}
