//! Issue 13: acknowledged means kept, past the server's compaction threshold.
//!
//! The defect this guards against: the server compacted a case's log every 32nd chunk with a
//! snapshot taken *before* the message's changes were in its document, and removed the chunk that
//! held them. One practitioner appending a note and syncing 45 times saw "synced" each time, yet a
//! colleague's fresh device received 30 of the 45 notes after a restart. Had the writer been
//! revoked and wiped, or lost, the other 15 were gone for good.
//!
//! So this test leaves no way to hide a loss: the real server binary, one case synced far past
//! several compactions (one chunk per sync), the writing device revoked and wiped (it can never
//! send anything again), the server killed with SIGKILL (nothing flushed on the way down) and
//! restarted, and only then a fresh device of the same team syncs. It must receive every note.

use anyhow::{ensure, Result};
use polyphony_e2e::{free_udp_port, ServerProcess};
use polyphony_server::admin::AdminRequest;

/// Syncs of one case, each one stored chunk: past three of the server's compactions (every 32).
const SYNCS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_synced_past_several_compactions_keeps_every_acknowledged_note_after_wipe_and_restart(
) -> Result<()> {
    polyphony_e2e::init_logs();
    let data = tempfile::tempdir()?;
    let addr = format!("127.0.0.1:{}", free_udp_port()).parse()?;
    let mut server = ServerProcess::start(data.path().join("server"), addr).await?;
    server
        .admin(AdminRequest::TeamAdd {
            name: "North".into(),
        })
        .await?;
    for p in ["Sam", "Kit"] {
        server
            .admin(AdminRequest::PractitionerAdd {
                name: p.into(),
                team: "North".into(),
                role: None,
            })
            .await?;
    }
    let mut writer = server.device("Sam").await?;
    let (case, meeting) = writer.case_with_meeting("Jo Bloggs")?;
    writer.sync().await?;

    let mut notes = Vec::new();
    for i in 0..SYNCS {
        let text = format!("Note {i:03} from the meeting. ");
        writer.note(case, meeting, &text)?;
        let report = writer.sync().await?;
        ensure!(
            report.refused.is_empty() && report.unsynced_changes == 0,
            "sync {i}: {report:?}"
        );
        ensure!(
            writer.profile.unsynced(case)? == 0,
            "sync {i}: the device still counts unsynced changes"
        );
        notes.push(text);
    }
    let acknowledged = writer.profile.acknowledged_heads(case)?;

    // The writer can never send anything again: revoked, it uploads (nothing left), then wipes.
    server
        .admin(AdminRequest::Revoke {
            device: writer.profile.device().to_string(),
            now: false,
        })
        .await?;
    let report = writer.sync().await?;
    ensure!(report.wiped, "the writer was told to wipe: {report:?}");
    ensure!(
        writer.profile.case_ids()?.is_empty(),
        "the writer's copy is gone"
    );

    // Nothing flushed on the way down.
    server.kill();
    let server = ServerProcess::start(data.path().join("server"), addr).await?;

    let mut reader = server.device("Kit").await?;
    let report = reader.sync().await?;
    ensure!(report.refused.is_empty(), "reader: {report:?}");
    let mut doc = reader.profile.document(case)?;
    for head in &acknowledged {
        ensure!(
            doc.get_change_by_hash(head).is_some(),
            "acknowledged head {head} is missing after the restart"
        );
    }
    let view = reader.peek(case)?;
    let meeting = view
        .meetings
        .iter()
        .find(|m| m.meta.id == meeting)
        .ok_or_else(|| anyhow::anyhow!("the meeting is missing"))?;
    let missing: Vec<&String> = notes
        .iter()
        .filter(|n| !meeting.notes.contains(n.as_str()))
        .collect();
    ensure!(
        missing.is_empty(),
        "{} of {SYNCS} acknowledged notes are missing, first: {:?}",
        missing.len(),
        missing.first()
    );
    polyphony_e2e::report_figures(
        "acknowledged_past_compaction",
        &[
            ("syncs", SYNCS as u64),
            ("server_compactions_passed", (SYNCS / 32) as u64),
            ("notes_checked_on_a_fresh_device", notes.len() as u64),
            ("notes_lost", 0),
        ],
    );
    Ok(())
}
