//! The background sync against a real borough server process: two practitioners' apps see each
//! other's edits arrive live; when the server dies without a word (SIGKILL), the app says it is
//! offline and counts what is only on the device; when the server is back, everything goes up and
//! reaches the other device. No browser here: the pages only show what these states say.
//!
//! Needs the server binary: `cargo build --workspace --bins` first (the README's test command).

// Test code: its helpers unwrap, as the tests do (the workspace forbids unwrap outside tests).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use polyphony_app::status::Link;
use polyphony_app::{App, Config, Running};
use polyphony_core::model::{NewCase, NewMeeting, NoteKind, Place};
use polyphony_core::CaseId;
use polyphony_e2e::{free_udp_port, ServerProcess, TestDevice};
use polyphony_server::admin::AdminRequest;

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < end {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

async fn app_for(device: TestDevice) -> (Running, tempfile::TempDir) {
    let TestDevice { dir, profile } = device;
    let config = Config {
        retry_max: Duration::from_secs(1),
        ..Config::new(profile.home().to_path_buf())
    };
    (polyphony_app::start(config, profile).await.unwrap(), dir)
}

fn link(app: &Arc<App>) -> Link {
    app.sync.snapshot().link
}

async fn notes(app: &Arc<App>, case: CaseId) -> Option<String> {
    app.peek(case)
        .await
        .ok()
        .and_then(|v| v.meetings.first().map(|m| m.notes.clone()))
}

/// A borough server process with team North, and the apps of its two practitioners, Robin and
/// Kim, both live. The temporary directories live as long as this.
struct TwoApps {
    server: ServerProcess,
    /// Where it listens, and where its data is (to start it again there).
    addr: SocketAddr,
    data: tempfile::TempDir,
    robin: Running,
    kim: Running,
    _dirs: [tempfile::TempDir; 2],
}

async fn two_live_apps() -> TwoApps {
    let data = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let server = ServerProcess::start(data.path().join("srv"), addr)
        .await
        .unwrap();
    server
        .admin(AdminRequest::TeamAdd {
            name: "North".into(),
        })
        .await
        .unwrap();
    for name in ["Robin Lee", "Kim Ode"] {
        server
            .admin(AdminRequest::PractitionerAdd {
                name: name.into(),
                team: "North".into(),
                role: None,
            })
            .await
            .unwrap();
    }
    let (robin, rd) = app_for(server.device("Robin Lee").await.unwrap()).await;
    let (kim, kd) = app_for(server.device("Kim Ode").await.unwrap()).await;
    for app in [&robin.app, &kim.app] {
        wait_until("the live link", Duration::from_secs(60), || async {
            link(app) == Link::Live
        })
        .await;
    }
    TwoApps {
        server,
        addr,
        data,
        robin,
        kim,
        _dirs: [rd, kd],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apps_sync_live_and_recover_from_a_dead_server() {
    let TwoApps {
        mut server,
        addr,
        data,
        robin,
        kim,
        _dirs,
    } = two_live_apps().await;
    let (a, b) = (robin.app.clone(), kim.app.clone());

    // Robin opens a case and a meeting: it reaches Kim with no sync button pressed.
    let case = a
        .profile()
        .await
        .create_case(
            NewCase {
                name: "Alex Smith".into(),
                ..Default::default()
            },
            None,
        )
        .unwrap();
    a.local_change(case);
    let meeting = a
        .edit(case, |d| {
            d.add_meeting(NewMeeting {
                at: time::OffsetDateTime::now_utc(),
                place: Place::Home,
                attendees: vec![],
            })
        })
        .await
        .unwrap();
    a.edit(case, |d| {
        d.edit_text(&meeting, NoteKind::Notes, "Robin: nights are hard.")
    })
    .await
    .unwrap();
    wait_until(
        "Robin's notes on Kim's device",
        Duration::from_secs(30),
        || async { notes(&b, case).await.as_deref() == Some("Robin: nights are hard.") },
    )
    .await;
    // And back: Kim's words reach Robin.
    b.edit(case, |d| {
        d.edit_text(
            &meeting,
            NoteKind::Notes,
            "Robin: nights are hard.\nKim: Sam stays over.",
        )
    })
    .await
    .unwrap();
    wait_until(
        "Kim's notes on Robin's device",
        Duration::from_secs(30),
        || async {
            notes(&a, case)
                .await
                .is_some_and(|n| n.ends_with("Kim: Sam stays over."))
        },
    )
    .await;
    wait_until(
        "everything acknowledged",
        Duration::from_secs(30),
        || async { a.overview().await.unsynced_total == 0 },
    )
    .await;
    assert_eq!(
        a.overview().await.saved_words(),
        "All saved on the borough server"
    );

    // The server dies without a word. Robin keeps writing.
    server.kill();
    a.edit(case, |d| {
        d.edit_text(
            &meeting,
            NoteKind::Notes,
            "Robin: nights are hard.\nKim: Sam stays over.\nRobin, offline: Alex smiled.",
        )
    })
    .await
    .unwrap();
    let o = a.overview().await;
    assert!(o.unsynced_total > 0);
    assert!(
        o.saved_words().ends_with("only on this device"),
        "{}",
        o.saved_words()
    );
    wait_until(
        "Robin's app to say offline",
        Duration::from_secs(40),
        || async { matches!(link(&a), Link::Offline { .. }) },
    )
    .await;
    assert!(
        a.overview().await.unsynced_total > 0,
        "still only on this device"
    );

    // The server comes back on the same address: Robin's offline words go up and reach Kim.
    let _server = ServerProcess::start(data.path().join("srv"), addr)
        .await
        .unwrap();
    wait_until(
        "Robin's offline work acknowledged",
        Duration::from_secs(60),
        || async { a.overview().await.unsynced_total == 0 },
    )
    .await;
    wait_until(
        "Robin's offline words on Kim's device",
        Duration::from_secs(60),
        || async {
            notes(&b, case)
                .await
                .is_some_and(|n| n.ends_with("Alex smiled."))
        },
    )
    .await;
    assert!(a.sync.snapshot().last_synced_at.is_some());
    robin.shutdown().await;
    kim.shutdown().await;
}

/// Issue 17, part 4: attachments' files move with the app's background sync, beside its live
/// session: a letter attached in one app reaches the other (checked against its address) and is
/// "saved on the server" on the first, with no sync pressed and no command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attached_files_move_with_the_apps_background_sync() {
    use polyphony_core::profile::BlobState;
    let two = two_live_apps().await;
    let (a, b) = (two.robin.app.clone(), two.kim.app.clone());
    let case = a
        .profile()
        .await
        .create_case(
            NewCase {
                name: "Alex Smith".into(),
                ..Default::default()
            },
            None,
        )
        .unwrap();
    a.local_change(case);
    let letter: Vec<u8> = (0..1_300_000u32).map(|i| (i % 199) as u8).collect();
    let hash = polyphony_core::BlobHash::of(&letter);
    a.profile()
        .await
        .attach(
            case,
            polyphony_core::profile::AttachFile {
                kind: polyphony_core::model::AttachmentKind::GpLetter,
                title: "Letter from the GP",
                file_name: "gp.pdf",
                content: &letter,
                meeting: None,
            },
        )
        .unwrap();
    a.local_change(case);
    wait_until(
        "the letter saved on the server",
        Duration::from_secs(30),
        || async { a.profile().await.blob_state(case, &hash).ok() == Some(BlobState::Saved) },
    )
    .await;
    wait_until(
        "the letter on Kim's device",
        Duration::from_secs(30),
        || async { b.profile().await.blob_state(case, &hash).ok() == Some(BlobState::Saved) },
    )
    .await;
    let id = b.peek(case).await.unwrap().attachments[0].meta.id;
    let (_, bytes) = b.profile().await.open_attachment(case, id).unwrap();
    assert_eq!(bytes, Some(letter));
}
