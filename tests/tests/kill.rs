//! The server is killed (SIGKILL) during a sync of many cases; after restart every change the device
//! saw acknowledged is there, and a second sync converges.

use std::time::Duration;

use anyhow::Result;
use polyphony_core::model::{self, NewCase, NewMeeting, NoteKind, Participant, Place};
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
            })
            .await?;
    }
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

    let mut kills = 0;
    let t0 = std::time::Instant::now();
    let mut acknowledged_seen = 0;
    for round in 0..3u64 {
        // Kill the server at a different point in each round, and bring it straight back: the device
        // learns at once (stateless reset) that its connection is gone.
        let sync = tokio::spawn(async move {
            let r = a.profile.sync(&mut |_| {}).await;
            (a, r)
        });
        tokio::time::sleep(Duration::from_millis(40 + round * 60)).await;
        server.kill();
        eprintln!("[{:?}] killed", t0.elapsed());
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
                    "case {case}: acknowledged change {h} lost after SIGKILL"
                );
            }
        }
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
