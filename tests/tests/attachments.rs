//! Attachments end to end, on a real server over QUIC: the bytes move on streams of their own,
//! are acknowledged only once on the server's disk, survive a restart, reach a colleague checked
//! against their address, and are refused (with nothing stored) to another team, for a case or
//! an address the record does not name, when they are not the bytes named, when too large, and
//! to a revoked device. A device being revoked uploads an attachment only it holds before its
//! case is wiped.

use anyhow::{ensure, Result};
use polyphony_core::model::{AttachmentKind, MAX_ATTACHMENT_BYTES};
use polyphony_core::net::{self, NetError};
use polyphony_core::profile::{AttachFile, BlobState};
use polyphony_core::sync::{ErrorCode, BLOB_CHUNK_BYTES};
use polyphony_core::{BlobHash, CaseId};
use polyphony_e2e::{audit_details, connect_as, TestDevice, TestServer};
use polyphony_server::admin::AdminRequest;
use polyphony_server::session::MAX_ATTACHMENT_STREAMS;

async fn team_of_two() -> Result<(TestServer, TestDevice, TestDevice)> {
    let server = TestServer::start().await?;
    server.team("North").await?;
    server.practitioner("Sam", "North").await?;
    server.practitioner("Kit", "North").await?;
    let a = server.device("Sam").await?;
    let b = server.device("Kit").await?;
    Ok((server, a, b))
}

/// A file of `len` bytes that differs from every other one made here with another `seed`.
fn file(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn attach(
    d: &mut TestDevice,
    case: CaseId,
    name: &str,
    content: &[u8],
) -> Result<polyphony_core::EntryId> {
    Ok(d.profile.attach(
        case,
        AttachFile {
            kind: AttachmentKind::ReferralLetter,
            title: "Referral from Dr Shah",
            file_name: name,
            content,
            meeting: None,
        },
    )?)
}

fn refused_with(r: Result<impl std::fmt::Debug, NetError>, code: ErrorCode, words: &str) {
    match r {
        Err(NetError::Refused { code: c, message }) => {
            assert_eq!(c, code, "{message}");
            assert!(message.contains(words), "{message}");
        }
        other => panic!("expected a refusal ({code:?}, {words}), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attachment_is_acknowledged_once_on_disk_survives_a_restart_and_reaches_a_colleague(
) -> Result<()> {
    let (mut server, mut sam, mut kit) = team_of_two().await?;
    let (case, _) = sam.case_with_meeting("Maria Lopez")?;
    // Over two chunks, so it crosses chunk boundaries both ways.
    let letter = file(2 * BLOB_CHUNK_BYTES + 12_345, 1);
    let id = attach(&mut sam, case, "referral.pdf", &letter)?;
    let hash = BlobHash::of(&letter);
    assert_eq!(sam.profile.blob_state(case, &hash)?, BlobState::OnlyHere);

    let report = sam.sync().await?;
    assert_eq!(report.attachments.sent, 1, "{:?}", report.attachments);
    assert!(report.attachments.failed.is_empty());
    assert_eq!(sam.profile.blob_state(case, &hash)?, BlobState::Saved);
    // Nothing more to send the next time.
    assert_eq!(sam.sync().await?.attachments.sent, 0);

    // Acknowledged means on disk: the server restarted (its store reopened from disk) has it.
    server.restart().await?;
    let report = kit.sync().await?;
    assert_eq!(report.attachments.received, 1, "{:?}", report.attachments);
    assert_eq!(kit.profile.blob_state(case, &hash)?, BlobState::Saved);
    let (view, bytes) = kit.profile.open_attachment(case, id)?;
    assert_eq!(bytes.as_deref(), Some(&letter[..]));
    assert_eq!(view.file_name, "referral.pdf");
    assert_eq!(view.media_type, "application/pdf");

    // Both moves are in the audit log, with the address and never the content.
    let log = server
        .admin(AdminRequest::Audit {
            case: Some(case),
            verify: false,
        })
        .await?;
    let writes = audit_details(&log, "write")?;
    let reads = audit_details(&log, "read")?;
    ensure!(
        writes
            .iter()
            .any(|d| d.contains(&format!("attachment {hash} received"))),
        "{writes:?}"
    );
    ensure!(
        reads
            .iter()
            .any(|d| d.contains(&format!("attachment {hash} sent"))),
        "{reads:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachment_streams_refuse_what_they_must_and_store_nothing() -> Result<()> {
    let (server, mut sam, kit) = team_of_two().await?;
    server.team("South").await?;
    server.practitioner("Jo", "South").await?;
    let jo = server.device("Jo").await?;
    let addr = server.addr().to_string();
    let (case, _) = sam.case_with_meeting("Maria Lopez")?;
    let letter = file(50_000, 2);
    let hash = BlobHash::of(&letter);
    attach(&mut sam, case, "referral.pdf", &letter)?;
    // The record reaches the server, the bytes not yet: take them off the device's list by
    // syncing the record through a session of its own.
    let e = sam.profile.enrolment().cloned().expect("enrolled");
    {
        let mut host = polyphony_e2e::TestHost::default();
        host.docs.insert(case, sam.profile.document(case)?);
        polyphony_e2e::run_session(server.addr(), &e, host, false).await?;
    }

    let (ep, sams) = connect_as(server.addr(), &e).await?;
    // Bytes that are not the ones the address names.
    let wrong = file(letter.len(), 3);
    refused_with(
        net::blobs::upload(&addr, &sams, case, hash, &wrong).await,
        ErrorCode::InvalidChange,
        "do not hash",
    );
    // An address the record does not name.
    let stray = file(1_000, 4);
    refused_with(
        net::blobs::upload(&addr, &sams, case, BlobHash::of(&stray), &stray).await,
        ErrorCode::NotAvailable,
        "names no attachment",
    );
    // A case the server does not hold.
    refused_with(
        net::blobs::upload(&addr, &sams, CaseId::random(), hash, &letter).await,
        ErrorCode::NotAvailable,
        "does not hold this case",
    );
    // One byte over the bound is refused before any byte is sent.
    let (_ep2, raw) = connect_as(server.addr(), &e).await?;
    {
        let (send, recv) = raw.open_bi().await?;
        let mut s = net::FramedStream::new(send, recv);
        s.write_frames(&[polyphony_core::sync::Frame::BlobOffer {
            case,
            hash,
            size: MAX_ATTACHMENT_BYTES + 1,
        }])
        .await?;
        match s.read_frame().await? {
            Some(polyphony_core::sync::Frame::Error(r)) => {
                assert_eq!(r.code, ErrorCode::TooLarge, "{}", r.message)
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    // Nothing was kept: a colleague is told the server does not hold it yet.
    let k = kit.profile.enrolment().cloned().expect("enrolled");
    let (kep, kits) = connect_as(server.addr(), &k).await?;
    refused_with(
        net::blobs::download(&addr, &kits, case, hash).await,
        ErrorCode::NotAvailable,
        "has not uploaded it",
    );

    // Another team's device, with the case id and the address guessed: refused both ways.
    let j = jo.profile.enrolment().cloned().expect("enrolled");
    let (jep, jos) = connect_as(server.addr(), &j).await?;
    refused_with(
        net::blobs::upload(&addr, &jos, case, hash, &letter).await,
        ErrorCode::NotAvailable,
        "not available",
    );
    sam.sync().await?;
    assert_eq!(sam.profile.blob_state(case, &hash)?, BlobState::Saved);
    refused_with(
        net::blobs::download(&addr, &jos, case, hash).await,
        ErrorCode::NotAvailable,
        "not available",
    );
    // The colleague gets it now, on the connection opened before it arrived.
    assert_eq!(
        net::blobs::download(&addr, &kits, case, hash).await?,
        letter
    );

    // A revoked device is refused at once, on a connection it already had.
    server
        .admin(AdminRequest::Revoke {
            device: kit.profile.device().to_string(),
            now: true,
        })
        .await?;
    let r = net::blobs::download(&addr, &kits, case, hash).await;
    assert!(r.is_err(), "a revoked device got an attachment: {r:?}");
    for ep in [ep, kep, jep] {
        ep.close(0u32.into(), b"");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_attachments_at_once_than_a_connection_is_served_all_arrive() -> Result<()> {
    let (server, mut sam, mut kit) = team_of_two().await?;
    let (case, _) = sam.case_with_meeting("Maria Lopez")?;
    // Past the bound on attachment streams served at once per connection.
    let n = MAX_ATTACHMENT_STREAMS * 2 + 1;
    let files: Vec<Vec<u8>> = (0..n)
        .map(|i| file(BLOB_CHUNK_BYTES / 2 + i, 10 + i as u8))
        .collect();
    for (i, f) in files.iter().enumerate() {
        attach(&mut sam, case, &format!("letter-{i}.pdf"), f)?;
    }
    assert_eq!(sam.sync().await?.attachments.sent, n);
    kit.sync().await?;
    let e = kit.profile.enrolment().cloned().expect("enrolled");
    let addr = server.addr().to_string();
    let (ep, conn) = connect_as(server.addr(), &e).await?;
    // Every download at once, on one connection.
    let downloads: Vec<_> = files
        .iter()
        .map(|f| {
            let (addr, conn) = (addr.clone(), conn.clone());
            let hash = BlobHash::of(f);
            tokio::spawn(async move { net::blobs::download(&addr, &conn, case, hash).await })
        })
        .collect();
    for (f, d) in files.iter().zip(downloads) {
        assert_eq!(&d.await??, f);
    }
    ep.close(0u32.into(), b"");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_being_revoked_uploads_an_attachment_only_it_holds_before_the_wipe() -> Result<()>
{
    let (server, mut sam, mut kit) = team_of_two().await?;
    let (case, _) = sam.case_with_meeting("Maria Lopez")?;
    sam.sync().await?;
    let letter = file(300_000, 7);
    let hash = BlobHash::of(&letter);
    attach(&mut sam, case, "gp-letter.pdf", &letter)?;
    server
        .admin(AdminRequest::Revoke {
            device: sam.profile.device().to_string(),
            now: false,
        })
        .await?;
    let mut last = None;
    for _ in 0..3 {
        match sam.sync().await {
            Ok(r) => last = Some(r),
            Err(_) => break,
        }
        if !sam.profile.case_ids()?.contains(&case) {
            break;
        }
    }
    let last = last.expect("the device synced while being revoked");
    assert!(last.wiped, "{last:?}");
    assert!(
        !sam.profile.case_ids()?.contains(&case),
        "wiped once the attachment was on the server"
    );
    kit.sync().await?;
    assert_eq!(kit.profile.blob_state(case, &hash)?, BlobState::Saved);
    let id = kit.peek(case)?.attachments[0].meta.id;
    assert_eq!(kit.profile.open_attachment(case, id)?.1, Some(letter));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_re_point_an_attachment_at_other_bytes() -> Result<()> {
    use automerge::transaction::Transactable;
    use automerge::ReadDoc;
    let (server, mut sam, kit) = team_of_two().await?;
    let (case, _) = sam.case_with_meeting("Maria Lopez")?;
    let letter = file(10_000, 21);
    let id = attach(&mut sam, case, "referral.pdf", &letter)?;
    sam.sync().await?;
    // Kit's device, modified: re-points Sam's attachment at other bytes.
    let e = kit.profile.enrolment().cloned().expect("enrolled");
    let mut doc = sam.profile.document(case)?;
    doc.set_actor(kit.profile.author()?.actor());
    let map = doc
        .get(automerge::ROOT, "attachments")?
        .expect("attachments")
        .1;
    let entry = doc.get(&map, id.to_string())?.expect("the entry").1;
    doc.put(
        &entry,
        "sha256",
        BlobHash::of(b"something else").to_string(),
    )?;
    doc.commit();
    let mut host = polyphony_e2e::TestHost::default();
    host.docs.insert(case, doc);
    let (_, host) = polyphony_e2e::run_session(server.addr(), &e, host, false).await?;
    assert!(
        host.refused.iter().any(|(c, _)| *c == case),
        "the server took a re-pointed attachment: {:?}",
        host.refused
    );
    // The server still names, and sends, the real letter.
    let mut kit = kit;
    kit.sync().await?;
    let (_, bytes) = kit.profile.open_attachment(case, id)?;
    assert_eq!(bytes, Some(letter));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_file_bytes_at_once_than_the_server_holds_in_memory_all_arrive() -> Result<()> {
    // The least room the server takes (40 MiB: one 20 MiB file, twice), and more bytes than
    // that moving at once, over two connections of four streams each: some wait for room, and
    // every file arrives whole.
    let server = TestServer::start_with(|c| c.attachment_memory_mib = 40).await?;
    server.team("North").await?;
    server.practitioner("Sam", "North").await?;
    server.practitioner("Kit", "North").await?;
    let mut sam = server.device("Sam").await?;
    let kit = server.device("Kit").await?;
    let (case, _) = sam.case_with_meeting("Maria Lopez")?;
    let size = 5 << 20;
    let n = 2 * MAX_ATTACHMENT_STREAMS;
    assert!(n * 2 * size > 40 << 20, "the test goes past the room");
    let files: Vec<Vec<u8>> = (0..n).map(|i| file(size, 40 + i as u8)).collect();
    for (i, f) in files.iter().enumerate() {
        attach(&mut sam, case, &format!("scan-{i}.pdf"), f)?;
    }
    assert_eq!(sam.sync().await?.attachments.sent, n);
    let e = kit.profile.enrolment().cloned().expect("enrolled");
    let addr = server.addr().to_string();
    let mut downloads = Vec::new();
    let mut endpoints = Vec::new();
    for half in files.chunks(MAX_ATTACHMENT_STREAMS) {
        let (ep, conn) = connect_as(server.addr(), &e).await?;
        endpoints.push(ep);
        for f in half {
            let (addr, conn) = (addr.clone(), conn.clone());
            let hash = BlobHash::of(f);
            downloads.push(tokio::spawn(async move {
                net::blobs::download(&addr, &conn, case, hash).await
            }));
        }
    }
    for (f, d) in files.iter().zip(downloads) {
        assert!(d.await?? == *f, "a file arrived changed");
    }
    for ep in endpoints {
        ep.close(0u32.into(), b"");
    }
    Ok(())
}

/// A connection that moves only files (as `polyphony sync` does after the records) keeps taking
/// streams while a slow one moves: the server's wait for the next stream, bounded for a silent
/// peer, does not count the time a file takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_file_does_not_end_a_connection_that_moves_only_files() -> Result<()> {
    use polyphony_core::sync::Frame;
    let (server, mut sam, _kit) = team_of_two().await?;
    let (case, _) = sam.case_with_meeting("Maria Lopez")?;
    let slow = file(2_000, 60);
    let next = file(3_000, 61);
    attach(&mut sam, case, "slow.pdf", &slow)?;
    attach(&mut sam, case, "next.pdf", &next)?;
    // The records only, through a session of their own.
    let e = sam.profile.enrolment().cloned().expect("enrolled");
    let mut host = polyphony_e2e::TestHost::default();
    host.docs.insert(case, sam.profile.document(case)?);
    polyphony_e2e::run_session(server.addr(), &e, host, false).await?;

    let (ep, conn) = connect_as(server.addr(), &e).await?;
    let (send, recv) = conn.open_bi().await?;
    let mut s = net::FramedStream::new(send, recv);
    let hash = BlobHash::of(&slow);
    s.write_frames(&[Frame::BlobOffer {
        case,
        hash,
        size: slow.len() as u64,
    }])
    .await?;
    assert!(matches!(
        s.read_frame().await?,
        Some(Frame::BlobWant { .. })
    ));
    // Longer than the server waits for a quiet connection's next stream, but each pause shorter
    // than it waits between chunks.
    let half = slow.len() / 2;
    tokio::time::sleep(std::time::Duration::from_secs(20)).await;
    s.write_frames(&[Frame::BlobChunk(slow[..half].to_vec())])
        .await?;
    tokio::time::sleep(std::time::Duration::from_secs(20)).await;
    s.write_frames(&[Frame::BlobChunk(slow[half..].to_vec())])
        .await?;
    assert!(matches!(
        s.read_frame().await?,
        Some(Frame::BlobSaved { .. })
    ));
    // The next file, on a new stream of the same connection, is taken.
    net::blobs::upload(
        &server.addr().to_string(),
        &conn,
        case,
        BlobHash::of(&next),
        &next,
    )
    .await?;
    ep.close(0u32.into(), b"");
    Ok(())
}

/// A second entry naming a colleague's file with another size (a bad device's) cannot make the
/// real file unacceptable: the server takes bytes when any entry gives their size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_size_for_the_same_address_does_not_block_the_real_file() -> Result<()> {
    let (server, mut sam, mut kit) = team_of_two().await?;
    let (case, _) = sam.case_with_meeting("Maria Lopez")?;
    let letter = file(40_000, 70);
    let hash = BlobHash::of(&letter);
    attach(&mut sam, case, "referral.pdf", &letter)?;
    let e = sam.profile.enrolment().cloned().expect("enrolled");
    let mut host = polyphony_e2e::TestHost::default();
    host.docs.insert(case, sam.profile.document(case)?);
    polyphony_e2e::run_session(server.addr(), &e, host, false).await?;
    // Kit's device names the same address with a larger size, before Sam's bytes arrive.
    kit.sync().await?;
    kit.profile.edit(case, |d| {
        d.add_attachment(&polyphony_core::model::NewAttachment {
            kind: AttachmentKind::Other,
            title: "the same address, another size".into(),
            file_name: "other.pdf".into(),
            size: letter.len() as u64 + 1,
            hash,
            meeting: None,
        })
    })?;
    kit.sync().await?;
    // Sam's file still goes up, and reaches a colleague whole.
    assert_eq!(sam.sync().await?.attachments.sent, 1);
    assert_eq!(sam.profile.blob_state(case, &hash)?, BlobState::Saved);
    let k = kit.profile.enrolment().cloned().expect("enrolled");
    let (ep, conn) = connect_as(server.addr(), &k).await?;
    assert_eq!(
        net::blobs::download(&server.addr().to_string(), &conn, case, hash).await?,
        letter
    );
    ep.close(0u32.into(), b"");
    Ok(())
}

/// A letter marked as recorded on the wrong person's record keeps its bytes (they are uploaded,
/// never deleted) but goes nowhere new: a colleague's device does not fetch it, and the server
/// refuses to send it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_persons_letter_is_kept_but_sent_to_no_device() -> Result<()> {
    let (server, mut sam, mut kit) = team_of_two().await?;
    let (case, _) = sam.case_with_meeting("Maria Lopez")?;
    let letter = file(20_000, 80);
    let hash = BlobHash::of(&letter);
    let id = attach(&mut sam, case, "someone-else.pdf", &letter)?;
    sam.profile.edit(case, |d| {
        d.mark_error(
            &id,
            polyphony_core::model::ErrorKind::WrongPerson,
            "another person's letter",
        )
    })?;
    let report = sam.sync().await?;
    assert_eq!(
        report.attachments.sent, 1,
        "its bytes still go up: nothing is lost"
    );
    let report = kit.sync().await?;
    assert_eq!(report.attachments.received, 0);
    assert_eq!(kit.profile.blob_state(case, &hash)?, BlobState::NotHere);
    let k = kit.profile.enrolment().cloned().expect("enrolled");
    let (ep, conn) = connect_as(server.addr(), &k).await?;
    refused_with(
        net::blobs::download(&server.addr().to_string(), &conn, case, hash).await,
        ErrorCode::NotAvailable,
        "withheld",
    );
    ep.close(0u32.into(), b"");
    Ok(())
}

/// The room for file bytes and a file's deadline, driven past (here 2 s and 15 s; 30 s and 10
/// minutes unless configured): Sam's 20 MiB upload that stalls after its offer holds the whole
/// room (40 MiB); Kit's file waits the room wait and is refused "busy", with nothing stored; at
/// the file deadline the stalled upload is refused and its room given back, and Kit's next try is
/// taken. After a restart (the store reopened from disk) the server holds Kit's file and nothing
/// of the stalled one, which Sam sends whole at the next sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_past_the_room_wait_is_busy_and_a_stalled_one_past_its_deadline_frees_the_room(
) -> Result<()> {
    use polyphony_core::sync::Frame;
    let mut server = TestServer::start_with(|c| {
        c.attachment_memory_mib = 40;
        c.attachment_room_wait_secs = 2;
        // Well past the longest a file waits for room (twice 2 s), so Kit's busy refusal comes
        // before the stalled upload's room is freed even on a loaded machine.
        c.attachment_file_deadline_secs = 15;
    })
    .await?;
    server.team("North").await?;
    server.practitioner("Sam", "North").await?;
    server.practitioner("Kit", "North").await?;
    let mut sam = server.device("Sam").await?;
    let mut kit = server.device("Kit").await?;
    let (case, _) = sam.case_with_meeting("Maria Lopez")?;
    let big = file(MAX_ATTACHMENT_BYTES as usize, 90);
    attach(&mut sam, case, "scan.pdf", &big)?;
    // The records only, through a session of their own; then Kit has the case.
    let e = sam.profile.enrolment().cloned().expect("enrolled");
    let mut host = polyphony_e2e::TestHost::default();
    host.docs.insert(case, sam.profile.document(case)?);
    polyphony_e2e::run_session(server.addr(), &e, host, false).await?;
    kit.sync().await?;
    let small = file(3_000, 91);
    attach(&mut kit, case, "note.pdf", &small)?;
    let kits = kit.profile.enrolment().cloned().expect("enrolled");
    let mut host = polyphony_e2e::TestHost::default();
    host.docs.insert(case, kit.profile.document(case)?);
    polyphony_e2e::run_session(server.addr(), &kits, host, false).await?;

    // Both connected first: a slow handshake must not eat into the deadline.
    let addr = server.addr().to_string();
    let (kit_ep, kit_conn) = connect_as(server.addr(), &kits).await?;
    let (sam_ep, sam_conn) = connect_as(server.addr(), &e).await?;
    // Sam offers the 20 MiB file and sends nothing more: it holds the whole room.
    let (send, recv) = sam_conn.open_bi().await?;
    let mut stalled = net::FramedStream::new(send, recv);
    let stalled_at = std::time::Instant::now();
    stalled
        .write_frames(&[Frame::BlobOffer {
            case,
            hash: BlobHash::of(&big),
            size: big.len() as u64,
        }])
        .await?;
    assert!(matches!(
        stalled.read_frame().await?,
        Some(Frame::BlobWant { .. })
    ));

    // Kit's file waits for room, past the room wait: busy.
    let asked = std::time::Instant::now();
    let busy = net::blobs::upload(&addr, &kit_conn, case, BlobHash::of(&small), &small).await;
    let waited = asked.elapsed();
    refused_with(busy, ErrorCode::Busy, "busy moving other files");
    assert!(
        waited >= std::time::Duration::from_secs(2),
        "refused after the room wait, not before: {waited:?}"
    );
    // At the file deadline the stalled upload is refused, and its room given back.
    let refused = stalled.read_frame().await;
    let after = stalled_at.elapsed();
    assert!(
        after >= std::time::Duration::from_secs(15),
        "refused at the deadline, not before: {after:?}"
    );
    match refused {
        Ok(Some(Frame::Error(r))) => {
            assert!(
                r.message.contains("took longer than 15 seconds"),
                "{}",
                r.message
            )
        }
        other => panic!("expected the deadline's refusal, got {other:?}"),
    }
    // Nothing of Kit's busy try was stored.
    refused_with(
        net::blobs::download(&addr, &kit_conn, case, BlobHash::of(&small)).await,
        ErrorCode::NotAvailable,
        "does not hold this attachment yet",
    );
    net::blobs::upload(&addr, &kit_conn, case, BlobHash::of(&small), &small).await?;
    kit_ep.close(0u32.into(), b"");
    sam_ep.close(0u32.into(), b"");

    // From disk: Kit's file is there, nothing of the stalled one; Sam's next sync sends it whole.
    server.restart().await?;
    let (ep, conn) = connect_as(server.addr(), &kits).await?;
    assert_eq!(
        net::blobs::download(&addr, &conn, case, BlobHash::of(&small)).await?,
        small
    );
    refused_with(
        net::blobs::download(&addr, &conn, case, BlobHash::of(&big)).await,
        ErrorCode::NotAvailable,
        "does not hold this attachment yet",
    );
    ep.close(0u32.into(), b"");
    let report = sam.sync().await?;
    assert_eq!(report.attachments.sent, 1, "{:?}", report.attachments);
    Ok(())
}
