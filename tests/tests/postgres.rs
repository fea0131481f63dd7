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
use polyphony_core::model::{self, NewCase, NewMeeting, NoteKind, Participant, Place};
use polyphony_e2e::{PgCluster, TestServer};
use polyphony_server::config::StoreEngine;

/// How many cases the device has seen settled when the database is killed, per round: during
/// the first upload of 120 cases, then during uploads of 30 edited cases.
const CRASH_AFTER_SETTLED: [usize; 3] = [15, 95, 105];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_crashing_mid_sync_keeps_every_acknowledged_change() -> Result<()> {
    let cluster = PgCluster::start()?;
    let url = cluster.url.clone();
    let server = TestServer::start_with(move |c| {
        c.store = StoreEngine::Postgres;
        c.postgres_url = Some(url);
    })
    .await?;
    server.team("North").await?;
    server.practitioner("Sam", "North").await?;
    server.practitioner("Kit", "North").await?;
    let mut a = server.device("Sam").await?;
    let mut b = server.device("Kit").await?;

    let mut cases = Vec::new();
    for i in 0..120 {
        let case = a.profile.create_case(
            NewCase {
                name: format!("Person {i}"),
                ..Default::default()
            },
            None,
        )?;
        let at = model::parse_datetime("at", "2026-03-14T10:30")?;
        let m = a.profile.edit(case, |d| {
            d.add_meeting(NewMeeting {
                at,
                place: Place::Home,
                attendees: vec![Participant::Person],
            })
        })?;
        a.profile.edit(case, |d| {
            d.append_text(&m, NoteKind::Notes, &format!("Notes for person {i}."))
        })?;
        cases.push(case);
    }

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
        for case in &cases {
            let acked = a.profile.acknowledged_heads(*case)?;
            if acked.is_empty() {
                continue;
            }
            acknowledged_seen += 1;
            let mut doc = b.profile.document(*case)?;
            for h in &acked {
                assert!(
                    doc.get_change_by_hash(h).is_some(),
                    "round {round}, case {case}: acknowledged change {h} lost when the database crashed"
                );
            }
        }
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
    Ok(())
}
