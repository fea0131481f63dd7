//! Issue 13: the app's live sync crosses the device's compaction threshold and reloads from disk.
//!
//! The app's background sync stores every change the server pushes as a chunk of its own. Before
//! this test it never compacted: a case open all day grew a log of a chunk per push, and every
//! load replayed them all. It now follows the profile's rule (`DeviceBooks::compact_when_due`). Here a
//! colleague writes 40 notes, each pushed live to the app (40 received chunks, past
//! `COMPACT_AFTER` = 32); the app is shut down, its store reopened from disk, and the case must be
//! compacted and hold every note.

use std::sync::Arc;
use std::time::Duration;

use polyphony_app::status::Link;
use polyphony_app::{App, Config};
use polyphony_core::profile::{Profile, COMPACT_AFTER};
use polyphony_core::CaseId;
use polyphony_e2e::{TestDevice, TestServer, PASSPHRASE};

async fn notes(app: &Arc<App>, case: CaseId) -> String {
    app.peek(case)
        .await
        .ok()
        .and_then(|v| v.meetings.first().map(|m| m.notes.clone()))
        .unwrap_or_default()
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < end {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_live_sync_compacts_what_it_receives_and_reopens_with_every_note() {
    const NOTES: usize = COMPACT_AFTER + 8;
    let server = TestServer::start().await.unwrap();
    server.team("North").await.unwrap();
    server.practitioner("Sam", "North").await.unwrap();
    server.practitioner("Kit", "North").await.unwrap();
    let mut kit = server.device("Kit").await.unwrap();
    let (case, meeting) = kit.case_with_meeting("Jo Bloggs").unwrap();
    kit.sync().await.unwrap();

    let TestDevice { dir: _dir, profile } = server.device("Sam").await.unwrap();
    let home = profile.home().to_path_buf();
    let config = Config {
        retry_max: Duration::from_secs(1),
        ..Config::new(home.clone())
    };
    let running = polyphony_app::start(config, profile).await.unwrap();
    let app = running.app.clone();
    wait_until("the live link", || async {
        app.sync.snapshot().link == Link::Live
    })
    .await;
    wait_until("the case on the app", || async {
        app.peek(case).await.is_ok()
    })
    .await;

    let mut written = Vec::new();
    for i in 0..NOTES {
        let text = format!("Kit's note {i:03}. ");
        kit.note(case, meeting, &text).unwrap();
        kit.sync().await.unwrap();
        // Each note arrives as its own push (one received chunk) before the next is written.
        wait_until(&format!("note {i} on the app"), || async {
            notes(&app, case).await.contains(&text)
        })
        .await;
        written.push(text);
    }
    drop(app);
    running.shutdown().await;

    let mut again = Profile::open(&home, PASSPHRASE).expect("the app's store reopens");
    let log = again.store().load_chunks(&case).unwrap().unwrap().len();
    assert!(
        log < COMPACT_AFTER,
        "{NOTES} received chunks and the log was never compacted ({log} chunks)"
    );
    let held = again.lookup(case).unwrap().meetings[0].notes.clone();
    let missing: Vec<&String> = written
        .iter()
        .filter(|n| !held.contains(n.as_str()))
        .collect();
    assert!(missing.is_empty(), "missing after a reopen: {missing:?}");
    eprintln!(
        "FIGURES thresholds_app_live_compaction received_pushes={NOTES} log_after_reopen={log} notes_checked={}",
        written.len()
    );
}
