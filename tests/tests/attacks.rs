//! Issue 9, attacks: what a stolen, expired or revoked identity, a replayed or guessed enrolment
//! code, a huge document and a flood of connections get from the borough server (nothing), and
//! what a stolen laptop or a copied backup shows (no record text). Each test prints one `FIGURES`
//! line (run with `--nocapture`).
//!
//! Covered elsewhere, not repeated here: another CA's certificate and malformed or oversized
//! frames (`bad_input.rs`); another team's case by guessed id, a forged automerge actor, a change
//! that breaks the record's shape and a revoked device (`sync.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ReadDoc, ROOT};
use polyphony_core::identity::{self, DeviceKey, EnrolmentCode};
use polyphony_core::model::{self, NewCase, PersonField};
use polyphony_core::net::NetError;
use polyphony_core::profile::Profile;
use polyphony_core::store::StoreError;
use polyphony_core::sync::ErrorCode;
use polyphony_core::{CaseId, DeviceId};
use polyphony_e2e::{
    audit_details, raw_sync, report_figures, Impairment, LossyRelay, RawIdentity, TestDevice,
    TestServer, PASSPHRASE,
};
use polyphony_server::admin::AdminRequest;
use time::OffsetDateTime;

/// A server with team North and practitioners Sam and Kit.
async fn north() -> Result<TestServer> {
    north_with(|_| {}).await
}

async fn north_with(
    adjust: impl FnOnce(&mut polyphony_server::ServerConfig),
) -> Result<TestServer> {
    let server = TestServer::start_with(adjust).await?;
    server.team("North").await?;
    server.practitioner("Sam", "North").await?;
    server.practitioner("Kit", "North").await?;
    Ok(server)
}

/// The code's one-time token.
fn token(code: &str) -> Result<Vec<u8>> {
    Ok(code.parse::<EnrolmentCode>()?.token().to_vec())
}

/// The refusal code a failed session ended with, if the server gave one.
fn refusal(err: &anyhow::Error) -> Option<ErrorCode> {
    let net = err.downcast_ref::<NetError>().or_else(|| match err
        .downcast_ref::<polyphony_core::profile::ProfileError>(
    ) {
        Some(polyphony_core::profile::ProfileError::Net(n)) => Some(n),
        _ => None,
    });
    match net {
        Some(NetError::Refused { code, .. }) => Some(*code),
        _ => None,
    }
}

// ---- Certificates --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused_though_the_device_is_enrolled() -> Result<()> {
    let mut server = north().await?;
    // Two devices registered the way enrolment does it, with certificates from the borough CA:
    // one expired yesterday, one (the control) valid today.
    let codes = [server.code("Sam").await?, server.code("Sam").await?];
    let ids: Vec<RawIdentity> = server
        .offline(|o| {
            let now = OffsetDateTime::now_utc();
            let windows = [
                (
                    now - time::Duration::days(400),
                    now - time::Duration::days(1),
                ),
                (now - time::Duration::days(1), now + time::Duration::days(1)),
            ];
            let mut ids = Vec::new();
            for (code, (from, to)) in codes.iter().zip(windows) {
                let key = DeviceKey::generate()?;
                let device = DeviceId::random();
                let cert = o.ca.issue_device_cert_with_validity(
                    &device.to_string(),
                    &key.csr_der("laptop")?,
                    from,
                    to,
                )?;
                o.registry.redeem_enrolment(
                    &token(code)?,
                    device,
                    "laptop",
                    identity::cert_fingerprint(&cert),
                )?;
                ids.push(RawIdentity {
                    ca: o.ca.cert_der().to_vec(),
                    cert: cert.to_vec(),
                    key,
                });
            }
            o.store.flush()?;
            Ok(ids)
        })
        .await?;
    let (expired, valid) = (&ids[0], &ids[1]);
    let control = raw_sync(server.addr(), valid, BTreeMap::new()).await;
    ensure!(
        control.is_ok(),
        "control: the valid certificate syncs: {control:?}",
        control = control.err()
    );
    let err = raw_sync(server.addr(), expired, BTreeMap::new())
        .await
        .err()
        .ok_or_else(|| anyhow!("an expired certificate got a session"))?;
    report_figures(
        "expired_certificate",
        &[
            ("attempts", 1),
            ("sessions_granted", 0),
            ("control_sessions", 1),
        ],
    );
    eprintln!("expired certificate refused: {err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_revoked_at_once_gets_nothing_writes_nothing_and_keeps_its_work() -> Result<()> {
    let server = north().await?;
    let mut lost = server.device("Sam").await?;
    let mut other = server.device("Kit").await?;
    let (case, meeting) = lost.case_with_meeting("Maria")?;
    lost.sync().await?;
    other.sync().await?;
    // The laptop is reported stolen: revoked at once, no upload first.
    lost.note(case, meeting, "written on the stolen laptop")?;
    server
        .admin(AdminRequest::Revoke {
            device: lost.profile.device().to_string(),
            now: true,
        })
        .await?;
    other.note(case, meeting, "written after the theft")?;
    other.sync().await?;
    let err = lost
        .sync()
        .await
        .err()
        .ok_or_else(|| anyhow!("a revoked device synced"))?;
    ensure!(refusal(&err) == Some(ErrorCode::Revoked), "{err}");
    // It received nothing new, and the server took nothing from it.
    ensure!(!lost.peek(case)?.meetings[0]
        .notes
        .contains("after the theft"));
    other.sync().await?;
    ensure!(!other.peek(case)?.meetings[0]
        .notes
        .contains("stolen laptop"));
    // Its unsynced work is still on it (an administrator can recover it with the passphrase).
    ensure!(lost.profile.unsynced(case)? > 0);
    report_figures(
        "revoked_at_once",
        &[
            ("attempts", 1),
            ("changes_accepted", 0),
            ("changes_sent", 0),
        ],
    );
    Ok(())
}

// ---- Enrolment codes ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_codes_work_once_expire_and_cannot_be_guessed() -> Result<()> {
    /// Codes guessed (right CA fingerprint, random token).
    const GUESSES: u64 = 20;
    let server = north().await?;
    let devices = |v: serde_json::Value| v.as_array().map(Vec::len).unwrap_or(0);
    let code = server.code("Sam").await?;
    let dir = tempfile::tempdir()?;
    let mut first = Profile::open(&dir.path().join("a"), PASSPHRASE)?;
    first
        .enrol(&server.addr().to_string(), &code, "laptop")
        .await?;
    let enrolled = devices(server.admin(AdminRequest::Devices).await?);

    // The same code again, from another device: refused, nothing registered.
    let mut replay = Profile::open(&dir.path().join("b"), PASSPHRASE)?;
    let err = replay
        .enrol(&server.addr().to_string(), &code, "attacker")
        .await
        .err()
        .ok_or_else(|| anyhow!("a code worked twice"))?;
    ensure!(err.to_string().contains("already used"), "{err}");
    let err = anyhow::Error::from(err);
    ensure!(refusal(&err) == Some(ErrorCode::BadEnrolment), "{err}");

    // Guessed codes: the CA fingerprint is no secret, the token is.
    let fingerprint = server.handle().ca_fingerprint();
    let mut refused = 0;
    for i in 0..GUESSES {
        let guess = EnrolmentCode::new(fingerprint).to_string();
        let mut p = Profile::open(&dir.path().join(format!("g{i}")), PASSPHRASE)?;
        match p
            .enrol(&server.addr().to_string(), &guess, "attacker")
            .await
        {
            Err(e) if e.to_string().contains("not known") => refused += 1,
            other => return Err(anyhow!("guess {i}: {:?}", other.map(|_| ()))),
        }
    }
    ensure!(refused == GUESSES);
    ensure!(devices(server.admin(AdminRequest::Devices).await?) == enrolled);

    // A code past its lifetime (issued offline with one second to live).
    let mut server = server;
    let stale = server
        .offline(|o| {
            let sam = o.registry.practitioner_by("Sam")?;
            let code = o.registry.create_enrolment(
                sam.id,
                o.ca.fingerprint(),
                time::Duration::seconds(1),
            )?;
            o.store.flush()?;
            Ok(code.to_string())
        })
        .await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut late = Profile::open(&dir.path().join("late"), PASSPHRASE)?;
    let err = late
        .enrol(&server.addr().to_string(), &stale, "laptop")
        .await
        .err()
        .ok_or_else(|| anyhow!("an expired code worked"))?;
    ensure!(err.to_string().contains("expired"), "{err}");
    report_figures(
        "enrolment_codes",
        &[
            ("replays", 1),
            ("guesses", GUESSES),
            ("expired_codes", 1),
            ("devices_enrolled_by_attacks", 0),
        ],
    );
    Ok(())
}

// ---- Huge documents -------------------------------------------------------------------------------

/// `n` characters of lowercase text that compress about as badly as typing does.
fn prose(n: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let c = (x % 27) as u8;
            if c == 26 {
                ' '
            } else {
                (b'a' + c) as char
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_documents_hit_the_limits_and_the_server_keeps_serving() -> Result<()> {
    /// A note twice the per-field limit (200,000 characters).
    const OVERSIZED_NOTE: usize = 400_000;
    /// The server's frame limit in this test (the default is 32 MiB).
    const MAX_FRAME: usize = 512 << 10;
    /// Meetings of 150,000 characters each (under the per-field limit) in a case too big for
    /// one frame.
    const BIG_MEETINGS: usize = 8;
    let server = north_with(|c| c.max_frame = MAX_FRAME).await?;
    let mut attacker = server.device("Sam").await?;
    let mut other = server.device("Kit").await?;
    let (case, meeting) = attacker.case_with_meeting("Maria")?;
    attacker.sync().await?;
    other.sync().await?;
    let before = other.peek(case)?;

    // One note far over its limit, written straight into the document.
    let mut doc = attacker.profile.document(case)?;
    doc.set_actor(model::actor_for_device(&attacker.profile.device()));
    let meetings = doc
        .get(ROOT, "meetings")?
        .ok_or_else(|| anyhow!("meetings"))?
        .1;
    let entry = doc
        .get(&meetings, meeting.to_string())?
        .ok_or_else(|| anyhow!("meeting"))?
        .1;
    let notes = doc.get(&entry, "notes")?.ok_or_else(|| anyhow!("notes"))?.1;
    doc.splice_text(&notes, 0, 0, &prose(OVERSIZED_NOTE / 4, 1))?;
    doc.commit();
    doc.splice_text(&notes, 0, 0, &prose(OVERSIZED_NOTE * 3 / 4, 2))?;
    doc.commit();
    let id = RawIdentity::of(attacker.profile.enrolment().expect("enrolled"))?;
    let host = raw_sync(server.addr(), &id, BTreeMap::from([(case, doc)])).await?;
    ensure!(
        host.refused == vec![(case, ErrorCode::InvalidChange)],
        "{:?}",
        host.refused
    );
    other.sync().await?;
    ensure!(other.peek(case)? == before, "the stored case is unchanged");

    // A case within every field limit but too big for a frame: that connection is closed, the
    // case stays on the device, and the server serves others.
    let (big, _) = attacker.case_with_meeting("Big")?;
    for i in 0..BIG_MEETINGS {
        attacker.profile.edit(big, |d| {
            let m = d.add_meeting(polyphony_core::model::NewMeeting {
                at: model::parse_datetime("at", "2026-03-14T10:30")?,
                place: polyphony_core::model::Place::Home,
                attendees: vec![polyphony_core::model::Participant::Person],
            })?;
            d.append_text(
                &m,
                polyphony_core::model::NoteKind::Notes,
                &prose(150_000, 10 + i as u64),
            )
        })?;
    }
    let err = attacker
        .sync()
        .await
        .err()
        .ok_or_else(|| anyhow!("a frame over the limit was accepted"))?;
    eprintln!("big case: {err}");
    ensure!(
        attacker.profile.unsynced(big)? > 0,
        "the big case is kept on the device"
    );
    let t = std::time::Instant::now();
    other.sync().await?;
    let other_ms = t.elapsed().as_millis() as u64;
    ensure!(!other.profile.case_ids()?.contains(&big));
    report_figures(
        "huge_documents",
        &[
            ("oversized_field_chars", OVERSIZED_NOTE as u64),
            ("big_case_bytes", (BIG_MEETINGS * 150_000) as u64),
            ("refused", 2),
            ("other_device_sync_ms_after", other_ms),
            ("stored_cases_changed", 0),
        ],
    );
    Ok(())
}

// ---- Floods -------------------------------------------------------------------------------------

/// A session opened as `id` that got its welcome, held open until dropped.
struct HeldSession {
    _endpoint: quinn::Endpoint,
    _conn: quinn::Connection,
    _stream: polyphony_core::net::FramedStream,
}

impl HeldSession {
    /// Close the connection and wait until the close is on its way.
    async fn close(self) {
        self._conn.close(0u32.into(), b"done");
        self._endpoint.wait_idle().await;
    }
}

/// Open a sync session and wait for the server's welcome; `Err` if refused.
async fn hold_session(addr: std::net::SocketAddr, id: &RawIdentity) -> Result<HeldSession> {
    use polyphony_core::sync::{Frame, Hello, PROTOCOL_VERSION};
    let (endpoint, conn) =
        polyphony_core::net::connect(&addr.to_string(), &id.ca, &id.cert, &id.key).await?;
    let (send, recv) = conn.open_bi().await?;
    let mut stream = polyphony_core::net::FramedStream::new(send, recv);
    stream
        .write_frames(&[Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            software: "flood".into(),
            live: true,
            features: Vec::new(),
        })])
        .await?;
    match stream.read_frame().await? {
        Some(Frame::Welcome(_)) => Ok(HeldSession {
            _endpoint: endpoint,
            _conn: conn,
            _stream: stream,
        }),
        other => Err(anyhow!("no welcome: {:?}", other.map(|f| f.kind()))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_is_held_to_the_limit_and_the_server_stays_up() -> Result<()> {
    /// The server's connection limit in this test (the default is 1,024).
    const LIMIT: usize = 8;
    /// Sessions an enrolled attacker tries to hold open at once.
    const FLOOD: usize = 40;
    /// Datagrams of random bytes thrown at the port.
    const GARBAGE: usize = 5_000;
    let server = north_with(|c| c.max_connections = LIMIT).await?;
    let attacker = server.device("Sam").await?;
    let mut honest = server.device("Kit").await?;
    honest.case_with_meeting("Maria")?;
    let id = RawIdentity::of(attacker.profile.enrolment().expect("enrolled"))?;

    // Enrolled attacker: as many live sessions as it can get, all at once.
    let tasks: Vec<_> = (0..FLOOD)
        .map(|_| {
            let id = RawIdentity {
                ca: id.ca.clone(),
                cert: id.cert.clone(),
                key: DeviceKey::from_pem(&attacker.profile.enrolment().expect("e").key_pem)
                    .expect("key"),
            };
            let addr = server.addr();
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(30), hold_session(addr, &id)).await
            })
        })
        .collect();
    let mut held = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t.await? {
            Ok(Ok(s)) => held.push(s),
            _ => refused += 1,
        }
    }
    ensure!(held.len() + refused == FLOOD);
    // One device holds at most its own share (issue 14, finding 8), never the server's limit: a
    // connection past it closes the device's oldest.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_device = polyphony_server::limits::MAX_CONNECTIONS_PER_DEVICE;
    let open = held
        .iter()
        .filter(|s| s._conn.close_reason().is_none())
        .count();
    ensure!(
        open <= per_device,
        "{open} sessions held open by one device, over its limit of {per_device}"
    );
    // So while the attacker holds all it can, an honest device still syncs. (Before the
    // per-device limit, the attacker held all 8 slots and the honest device was turned away.)
    let during = honest.sync().await;
    ensure!(
        during.is_ok(),
        "an honest device was turned away during one device's flood: {:?}",
        during.err()
    );
    let honest_turned_away = 0u64;
    // The attacker lets go (closing, so the slots free at once rather than at the idle timeout).
    let closing: Vec<_> = held.into_iter().map(|s| tokio::spawn(s.close())).collect();
    for c in closing {
        c.await?;
    }

    // Garbage at the port.
    let garbage = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..GARBAGE {
        let len = 1 + i % 1_400;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = garbage.send_to(&bytes, server.addr());
    }

    // Afterwards the server serves everyone again, as soon as the attacker's connections are
    // closed on its side (a moment; bounded here at a minute).
    let mut back = false;
    for _ in 0..240 {
        if honest.sync().await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ensure!(back, "the server is up for others after the floods");
    report_figures(
        "connection_flood",
        &[
            ("limit", LIMIT as u64),
            ("authenticated_attempts", FLOOD as u64),
            ("sessions_granted", held_len(FLOOD, refused)),
            ("sessions_still_open", open as u64),
            ("refused", refused as u64),
            ("honest_turned_away_while_full", honest_turned_away),
            ("garbage_datagrams", GARBAGE as u64),
            ("server_crashes", 0),
        ],
    );
    Ok(())
}

/// Handshakes that never complete hold connection slots until they time out: an attacker who
/// needs no certificate at all (the client certificate comes at the end of the handshake) can
/// keep honest devices out for as long as it keeps sending. The test records how long; see
/// docs/RELIABILITY.md, "Known gaps".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_handshakes_lock_honest_devices_out_until_they_time_out() -> Result<()> {
    /// The server's connection limit in this test (the default is 1,024).
    const LIMIT: usize = 8;
    /// Handshakes started through a relay that drops every reply, so they never complete.
    const HALF_OPEN: usize = 3 * LIMIT;
    let server = north_with(|c| c.max_connections = LIMIT).await?;
    let attacker = server.device("Sam").await?;
    let mut honest = server.device("Kit").await?;
    honest.case_with_meeting("Maria")?;
    let id = RawIdentity::of(attacker.profile.enrolment().expect("enrolled"))?;
    // Half-open handshakes: the server never hears back.
    let relay = LossyRelay::start(server.addr(), Impairment::black_hole()).await?;
    let half_open: Vec<_> = (0..HALF_OPEN)
        .map(|_| {
            let id = RawIdentity {
                ca: id.ca.clone(),
                cert: id.cert.clone(),
                key: DeviceKey::from_pem(&attacker.profile.enrolment().expect("e").key_pem)
                    .expect("key"),
            };
            let addr = relay.addr();
            tokio::spawn(async move { hold_session(addr, &id).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = std::time::Instant::now();
    let during_half_open = tokio::time::timeout(Duration::from_secs(60), honest.sync()).await;
    let half_open_ms = t.elapsed().as_millis() as u64;
    let half_open_ok = matches!(during_half_open, Ok(Ok(_)));
    eprintln!(
        "honest device during {HALF_OPEN} half-open handshakes: {} after {half_open_ms} ms",
        match &during_half_open {
            Ok(Ok(_)) => "synced".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer".into(),
        }
    );
    // The attacker goes silent (no close, no error: a host that simply stops answering): how
    // long until the server lets honest devices in again?
    relay.go_silent();
    for t in half_open {
        t.abort();
    }
    let mut locked_out_ms = half_open_ms;
    if !half_open_ok {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if honest.sync().await.is_ok() || t.elapsed() > Duration::from_secs(90) {
                break;
            }
        }
        locked_out_ms = t.elapsed().as_millis() as u64;
    }
    eprintln!("honest devices locked out for {locked_out_ms} ms");
    drop(relay);

    honest.sync().await?;
    report_figures(
        "half_open_handshakes",
        &[
            ("limit", LIMIT as u64),
            ("half_open_handshakes", HALF_OPEN as u64),
            ("honest_synced_during_half_open", u64::from(half_open_ok)),
            ("honest_locked_out_ms", locked_out_ms),
            ("server_crashes", 0),
        ],
    );
    Ok(())
}

fn held_len(flood: usize, refused: usize) -> u64 {
    (flood - refused) as u64
}

// ---- At rest -----------------------------------------------------------------------------------

/// Every file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            files_under(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// Copy a directory as an operator's file-level backup would (sockets skipped).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// What [`grep`] found: each needle seen in the clear with its file, and how many files and
/// bytes it read.
struct Grep {
    found: Vec<(String, std::path::PathBuf)>,
    files: u64,
    bytes: u64,
}

/// Search every file under `dirs` for each needle, as bytes.
fn grep(dirs: &[&Path], needles: &[&str]) -> Result<Grep> {
    let mut files = Vec::new();
    for d in dirs {
        files_under(d, &mut files)?;
    }
    let (mut found, mut bytes) = (Vec::new(), 0u64);
    for f in &files {
        let data = std::fs::read(f)?;
        bytes += data.len() as u64;
        for n in needles {
            if data.windows(n.len()).any(|w| w == n.as_bytes()) {
                found.push((n.to_string(), f.clone()));
            }
        }
    }
    Ok(Grep {
        found,
        files: files.len() as u64,
        bytes,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_record_text_in_the_clear_on_devices_the_server_or_its_backups() -> Result<()> {
    const NAME: &str = "Zebulon Quartermaine";
    const NOTE: &str = "hears voices at night";
    const MEMBER: &str = "Philomena Ashgrove";
    const DECISION: &str = "try the allotment group";
    const PREFERRED: &str = "Quartermaine-Zeb";
    let needles = [NAME, NOTE, MEMBER, DECISION, PREFERRED, "9434765919"];
    let mut server = north().await?;
    let mut a = server.device("Sam").await?;
    let mut b = server.device("Kit").await?;
    let case = a.profile.create_case(
        NewCase {
            name: NAME.into(),
            nhs_number: Some("943 476 5919".into()),
            ..Default::default()
        },
        None,
    )?;
    let meeting = a.profile.edit(case, |d| {
        d.add_meeting(polyphony_core::model::NewMeeting {
            at: model::parse_datetime("at", "2026-03-14T10:30")?,
            place: polyphony_core::model::Place::Home,
            attendees: vec![polyphony_core::model::Participant::Person],
        })
    })?;
    a.note(case, meeting, NOTE)?;
    a.profile.edit(case, |d| {
        d.add_member(polyphony_core::model::NewMember {
            name: MEMBER.into(),
            relationship: "aunt".into(),
            ..Default::default()
        })
    })?;
    a.profile.edit(case, |d| {
        d.propose_decision(DECISION, polyphony_core::model::Participant::Person)
    })?;
    a.profile.edit(case, |d| {
        d.set_person(PersonField::PreferredName, Some(PREFERRED))
    })?;
    let _ = a.profile.view(case, "show")?; // a read, queued for the audit log
    a.sync().await?;
    b.sync().await?;
    ensure!(b.peek(case)?.person.name == NAME);

    // The grep can see clear text: the case's stored changes, unsealed, show the needles (all
    // but the ones in the first full save, which automerge compresses; they are searched for
    // anyway).
    let control = tempfile::tempdir()?;
    let chunks =
        polyphony_core::store::Store::load_chunks(&**a.profile.store(), &case)?.expect("held");
    let plain: Vec<u8> = chunks.into_iter().flat_map(|(_, c)| c).collect();
    std::fs::write(control.path().join("plain"), &plain)?;
    let seen = grep(&[control.path()], &needles)?.found;
    let detectable: Vec<&str> = needles
        .iter()
        .copied()
        .filter(|n| seen.iter().any(|(s, _)| s == n))
        .collect();
    for n in [NOTE, MEMBER, DECISION, PREFERRED] {
        ensure!(
            detectable.contains(&n),
            "control: '{n}' not visible in {seen:?}"
        );
    }

    // A hot copy of the server's data directory, and one after a clean shutdown.
    let data = server.config.data_dir.clone();
    let backups = tempfile::tempdir()?;
    copy_dir(&data, &backups.path().join("hot"))?;
    server.restart().await?;
    copy_dir(&data, &backups.path().join("cold"))?;
    let (a_home, b_home) = (a.home(), b.home());
    let Grep {
        found,
        files,
        bytes,
    } = grep(&[&a_home, &b_home, &data, backups.path()], &needles)?;
    ensure!(found.is_empty(), "record text in the clear: {found:?}");

    // A wrong passphrase opens nothing; the right one still opens everything.
    drop(a.profile);
    let wrong = Profile::open(&a_home, "Tr0ub4dor&3");
    ensure!(
        matches!(
            wrong,
            Err(polyphony_core::profile::ProfileError::Store(
                StoreError::WrongPassphrase
            ))
        ),
        "a wrong passphrase: {:?}",
        wrong.err()
    );
    let mut a = TestDevice {
        dir: a.dir,
        profile: Profile::open(&a_home, PASSPHRASE)?,
    };
    ensure!(a.peek(case)?.person.name == NAME);
    // A copy of the server's store without its key file opens nothing either.
    let other_key = backups.path().join("another.key");
    polyphony_core::store::KeySource::create_key_file(&other_key)?;
    let stolen = polyphony_core::store::SledStore::open(
        &backups.path().join("cold").join("db"),
        polyphony_core::store::KeySource::KeyFile(other_key),
    );
    ensure!(
        matches!(stolen, Err(StoreError::WrongPassphrase)),
        "{:?}",
        stolen.err()
    );
    report_figures(
        "at_rest",
        &[
            ("needles", needles.len() as u64),
            ("needles_visible_to_the_control", detectable.len() as u64),
            ("files_scanned", files),
            ("bytes_scanned", bytes),
            ("needles_found_in_the_clear", 0),
            ("wrong_passphrase_opens", 0),
        ],
    );
    Ok(())
}

// ---- A chunk that makes automerge panic ------------------------------------------------------------

/// 154 bytes the `document_load` fuzz target found: an automerge bundle chunk whose delta column
/// ends inside a number. automerge 0.12 (hexane 1.0.0-alpha.5) unwraps the decoding error and
/// panics.
const PANIC_CHUNK: &[u8] = include_bytes!("data/automerge-bundle-panic.bin");

/// After the welcome, send `frames` and collect what the server answers until it closes.
async fn after_welcome(
    addr: std::net::SocketAddr,
    id: &RawIdentity,
    frames: &[polyphony_core::sync::Frame],
) -> Result<Vec<polyphony_core::sync::Frame>> {
    let session = hold_session(addr, id).await?;
    let mut stream = session._stream;
    stream.write_frames(frames).await?;
    let mut replies = Vec::new();
    // Until the server answers the last frame (or closes, or goes quiet).
    while let Ok(Ok(Some(f))) =
        tokio::time::timeout(Duration::from_secs(5), stream.read_frame()).await
    {
        let answered = matches!(
            f,
            polyphony_core::sync::Frame::Saved { .. }
                | polyphony_core::sync::Frame::CaseRefused { .. }
        );
        replies.push(f);
        if answered {
            break;
        }
    }
    Ok(replies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_makes_automerge_panic_is_refused_and_the_case_stays_available() -> Result<()>
{
    use automerge::sync::{Message, MessageVersion};
    use polyphony_core::sync::Frame;
    let server = north().await?;
    let mut attacker = server.device("Sam").await?;
    let mut other = server.device("Kit").await?;
    let (case, meeting) = attacker.case_with_meeting("Maria")?;
    attacker.sync().await?;
    other.sync().await?;
    let message = Message {
        heads: vec![],
        need: vec![],
        have: vec![],
        changes: vec![PANIC_CHUNK.to_vec()].into(),
        flags: None,
        version: MessageVersion::V1,
    }
    .encode();
    let id = RawIdentity::of(attacker.profile.enrolment().expect("enrolled"))?;
    let replies = after_welcome(server.addr(), &id, &[Frame::Sync { case, message }]).await?;
    ensure!(
        replies.iter().any(|f| matches!(
            f,
            Frame::CaseRefused { refusal, .. } if refusal.code == ErrorCode::InvalidChange
        )),
        "the chunk is refused as an invalid change: {:?}",
        replies.iter().map(|f| f.kind()).collect::<Vec<_>>()
    );
    // The case is still there for everyone, and still takes writes.
    attacker.note(case, meeting, "after the attack")?;
    let report = attacker.sync().await?;
    ensure!(report.refused.is_empty(), "{:?}", report.refused);
    let report = other.sync().await?;
    ensure!(report.refused.is_empty(), "{:?}", report.refused);
    ensure!(other.peek(case)?.meetings[0]
        .notes
        .contains("after the attack"));
    report_figures(
        "automerge_panic_chunk",
        &[
            ("attempts", 1),
            ("server_tasks_crashed", 0),
            ("cases_made_unavailable", 0),
        ],
    );
    Ok(())
}

/// Issue 14, finding 1: a team device sends one change that deletes every top-level key of a case.
/// Before the fix validation was skipped for a document with no keys, so the change was stored and
/// pushed, and every team device then failed to open its whole caseload ("document is empty").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_empties_the_record_is_refused_and_the_team_keeps_its_caseload() -> Result<()>
{
    let server = north().await?;
    let mut attacker = server.device("Sam").await?;
    let mut colleague = server.device("Kit").await?;
    let (case, meeting) = attacker.case_with_meeting("Maria")?;
    attacker.note(case, meeting, "Maria spoke first.")?;
    attacker.sync().await?;
    colleague.sync().await?;

    let chunks = polyphony_core::store::Store::load_chunks(&**attacker.profile.store(), &case)?
        .ok_or_else(|| anyhow!("case held"))?;
    let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, c)| c).collect();
    let mut emptied = automerge::AutoCommit::load(&bytes)?
        .with_actor(model::actor_for_device(&attacker.profile.device()));
    let keys: Vec<String> = emptied.keys(ROOT).collect();
    ensure!(!keys.is_empty());
    for k in &keys {
        emptied.delete(ROOT, k.as_str())?;
    }
    emptied.commit();
    let id = RawIdentity::of(attacker.profile.enrolment().expect("enrolled"))?;
    let host = raw_sync(server.addr(), &id, BTreeMap::from([(case, emptied)])).await?;
    ensure!(
        host.refused
            .iter()
            .any(|(c, code)| *c == case && *code == ErrorCode::InvalidChange),
        "the emptying change is refused as invalid: refused {:?}",
        host.refused
    );

    // The colleague's next sync works and the whole caseload still opens, with the note.
    let report = colleague.sync().await?;
    ensure!(report.refused.is_empty(), "{:?}", report.refused);
    let caseload = colleague.profile.cases()?;
    ensure!(
        caseload.len() == 1 && caseload[0].name == "Maria",
        "{caseload:?}"
    );
    ensure!(colleague.peek(case)?.meetings[0]
        .notes
        .contains("Maria spoke first."));
    // A device that never had the case gets it whole.
    let mut fresh = server.device("Kit").await?;
    fresh.sync().await?;
    ensure!(fresh.peek(case)?.person.name == "Maria");
    report_figures(
        "emptying_change",
        &[("attempts", 1), ("accepted", 0), ("caseloads_broken", 0)],
    );
    Ok(())
}

// ---- Writes bound to their device (issue 14, findings 2 and 3) -----------------------------------

/// The case as `device` stored it, as a bare automerge document writing with `actor`.
fn stored_doc(device: &TestDevice, case: CaseId, actor: automerge::ActorId) -> Result<AutoCommit> {
    let chunks = polyphony_core::store::Store::load_chunks(&**device.profile.store(), &case)?
        .ok_or_else(|| anyhow!("case not held"))?;
    let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, c)| c).collect();
    Ok(AutoCommit::load(&bytes)?.with_actor(actor))
}

/// The object at a path from the root: map keys, or list indexes ("0") inside a list.
fn obj_at(doc: &AutoCommit, path: &[&str]) -> Result<automerge::ObjId> {
    let mut obj = ROOT;
    for key in path {
        let found = match (doc.object_type(&obj), key.parse::<usize>()) {
            (Ok(automerge::ObjType::List), Ok(i)) => doc.get(&obj, i)?,
            _ => doc.get(&obj, *key)?,
        };
        obj = found.ok_or_else(|| anyhow!("no {key} in {path:?}"))?.1;
    }
    Ok(obj)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_write_as_a_colleague_nor_take_their_sequence_numbers() -> Result<()> {
    let server = north().await?;
    let mut attacker = server.device("Sam").await?;
    let mut colleague = server.device("Kit").await?;
    let (case, meeting) = attacker.case_with_meeting("Maria")?;
    attacker.sync().await?;
    colleague.sync().await?;
    let sam = attacker.profile.author()?;
    let kit = colleague.profile.author()?;
    // Kit writes on a home visit, offline: the next change of Kit's device is this one.
    colleague.note(case, meeting, "Maria asked to slow the medication down.")?;
    let id = RawIdentity::of(attacker.profile.enrolment().expect("enrolled"))?;

    // Each forgery: who the change's stamps name, and the automerge actor it is written with.
    let forgeries = [
        (
            "Kit's device actor and Kit's name",
            kit.clone(),
            kit.actor(),
        ),
        (
            "Sam's actor, Kit named as the practitioner",
            model::Author {
                device: sam.device,
                ..kit.clone()
            },
            sam.actor(),
        ),
        (
            "Sam's actor and practitioner under another name",
            model::Author {
                practitioner_name: "Dr A. Consultant".into(),
                ..sam.clone()
            },
            sam.actor(),
        ),
        (
            "Sam's actor, Kit's device named",
            model::Author {
                device: kit.device,
                ..sam.clone()
            },
            sam.actor(),
        ),
    ];
    let mut refused = 0u64;
    for (what, author, actor) in &forgeries {
        let doc = stored_doc(&attacker, case, actor.clone())?;
        let mut forged = model::CaseDoc::from_automerge(doc, Some(author.clone()))?;
        forged.automerge_mut().set_actor(actor.clone());
        forged.propose_decision(
            "Stop the medication at once",
            model::Participant::Practitioner(author.practitioner),
        )?;
        let host = raw_sync(
            server.addr(),
            &id,
            BTreeMap::from([(case, forged.into_automerge())]),
        )
        .await?;
        ensure!(
            host.refused == vec![(case, ErrorCode::ForgedAuthor)],
            "{what}: the forged change was not refused as forged: refused {:?}, acked {:?}",
            host.refused,
            host.acked
        );
        refused += 1;
    }

    // Right actor and stamps, but a commit message (which the app reads to show who wrote a
    // change) naming Kit.
    {
        let mut doc = stored_doc(&attacker, case, sam.actor())?;
        let person = obj_at(&doc, &["person"])?;
        doc.put(&person, "preferred_name", "Mari")?;
        let note = serde_json::json!({
            "practitioner": kit.practitioner,
            "practitioner_name": kit.practitioner_name,
            "device": kit.device,
            "what": "set preferred name",
        });
        doc.commit_with(
            automerge::transaction::CommitOptions::default().with_message(note.to_string()),
        );
        let host = raw_sync(server.addr(), &id, BTreeMap::from([(case, doc)])).await?;
        ensure!(
            host.refused == vec![(case, ErrorCode::ForgedAuthor)],
            "a change whose message names Kit was not refused: {:?}",
            host.refused
        );
        refused += 1;
    }
    // Kit's offline work syncs (a change taking Kit's next sequence number would have made it
    // unsyncable for good), and no forged decision reached anyone.
    let report = colleague.sync().await?;
    ensure!(report.refused.is_empty(), "{:?}", report.refused);
    let mut fresh = server.device("Kit").await?;
    fresh.sync().await?;
    let view = fresh.peek(case)?;
    ensure!(view.meetings[0].notes.contains("slow the medication"));
    ensure!(
        view.decisions.is_empty(),
        "a forged decision was stored: {:?}",
        view.decisions
    );
    // The control: Sam writing as Sam is accepted, and shown as Sam's.
    attacker.profile.edit(case, |d| {
        d.propose_decision(
            "Meet again on Friday",
            model::Participant::Practitioner(sam.practitioner),
        )
    })?;
    let report = attacker.sync().await?;
    ensure!(report.refused.is_empty(), "{:?}", report.refused);
    fresh.sync().await?;
    ensure!(fresh.peek(case)?.decisions.len() == 1);
    let log = server
        .admin(AdminRequest::Audit {
            case: Some(case),
            verify: false,
        })
        .await?
        .to_string();
    ensure!(
        log.contains("writes only as itself") && log.contains("not an enrolled device"),
        "the audit records each forgery: {log}"
    );
    ensure!(
        log.contains(&format!("actor {}", sam.actor().to_hex_string())),
        "the audit names the actor that wrote: {log}"
    );
    report_figures(
        "impersonation",
        &[
            ("attempts", forgeries.len() as u64 + 1),
            ("refused", refused),
            ("colleague_work_stranded", 0),
        ],
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_removes_a_clinical_entry_is_refused_and_text_edits_stay_allowed(
) -> Result<()> {
    use model::{
        CareRole, ConsentState, NewMeeting, NewMember, NoteKind, Participant, Place,
        ReadbackResponse, Stance,
    };
    let server = north().await?;
    let mut sam = server.device("Sam").await?;
    let mut kit = server.device("Kit").await?;
    let (case, meeting) = sam.case_with_meeting("Maria")?;
    let me = sam.profile.author()?;
    let (member, care, decision, action, wrong) = sam.profile.edit(case, |d| {
        let member = d.add_member(NewMember {
            name: "Ana".into(),
            relationship: "sister".into(),
            role: None,
            phone: None,
            email: None,
            invited_by: None,
            joined: None,
        })?;
        d.record_consent(&member, ConsentState::Given, None)?;
        let care = d.add_care_team(
            me.practitioner,
            &me.practitioner_name,
            CareRole::Practitioner,
            None,
        )?;
        d.record_readback(
            &meeting,
            Participant::Person,
            ReadbackResponse::Confirmed,
            None,
        )?;
        let decision = d.propose_decision("Meet weekly at home", Participant::Person)?;
        d.record_position(&decision, Participant::Person, Stance::Agree, Some("yes"))?;
        let action = d.add_action(
            &decision,
            "Book the visits",
            Participant::Practitioner(me.practitioner),
            None,
        )?;
        let wrong = d.add_meeting(NewMeeting {
            at: model::parse_datetime("at", "2026-03-15T10:30")?,
            place: Place::Home,
            attendees: vec![Participant::Person],
        })?;
        d.mark_entered_in_error(&wrong, "written wrongly")?;
        // Schema 2's own mark, beside the first.
        d.mark_error(
            &wrong,
            model::ErrorKind::WrongPerson,
            "on the wrong person's case",
        )?;
        d.append_text(
            &meeting,
            NoteKind::Notes,
            "Maria spoke first. Ana listened.",
        )?;
        Ok((member, care, decision, action, wrong))
    })?;
    sam.sync().await?;
    kit.sync().await?;
    let before = serde_json::to_string(&kit.peek(case)?)?;
    let id = RawIdentity::of(sam.profile.enrolment().expect("enrolled"))?;
    let (m, mb, c, dc, ac, w) = (
        meeting.to_string(),
        member.to_string(),
        care.to_string(),
        decision.to_string(),
        action.to_string(),
        wrong.to_string(),
    );
    // Each removal: the object holding the entry, and the key (or list index) removed from it.
    let removals: Vec<(&str, Vec<&str>, Option<&str>)> = vec![
        ("a network member", vec!["network"], Some(&mb)),
        ("a consent event", vec!["network", &mb, "consent"], None),
        ("a care-team membership", vec!["care_team"], Some(&c)),
        ("a meeting", vec!["meetings"], Some(&m)),
        (
            "a read-back",
            vec!["meetings", &m, "readback"],
            Some("person"),
        ),
        ("a decision", vec!["decisions"], Some(&dc)),
        (
            "a position",
            vec!["decisions", &dc, "position_history", "person"],
            None,
        ),
        ("an action", vec!["decisions", &dc, "actions"], Some(&ac)),
        (
            "an entered-in-error mark",
            vec!["meetings", &w],
            Some("entered_in_error"),
        ),
        (
            "a wrong-person mark",
            vec!["meetings", &w],
            Some("wrong_person"),
        ),
    ];
    let mut refused = 0u64;
    for (what, path, key) in &removals {
        let mut doc = stored_doc(&sam, case, me.actor())?;
        let obj = obj_at(&doc, path)?;
        match key {
            Some(k) => doc.delete(&obj, *k)?,
            None => doc.delete(&obj, 0)?,
        }
        doc.commit();
        let host = raw_sync(server.addr(), &id, BTreeMap::from([(case, doc)])).await?;
        ensure!(
            host.refused == vec![(case, ErrorCode::InvalidChange)],
            "removing {what} was not refused: refused {:?}, acked {:?}",
            host.refused,
            host.acked
        );
        refused += 1;
    }
    // Writing into a record someone recorded (the person's position, the read-back, the
    // consent event), or into an author stamp, alters their words: refused too.
    let edits: Vec<(&str, Vec<&str>, &str, &str)> = vec![
        (
            "a position's stance",
            vec!["decisions", &dc, "position_history", "person", "0"],
            "stance",
            "disagree",
        ),
        (
            "a read-back's response",
            vec!["meetings", &m, "readback", "person"],
            "response",
            "added_words",
        ),
        (
            "who recorded a position",
            vec![
                "decisions",
                &dc,
                "position_history",
                "person",
                "0",
                "recorded_by",
            ],
            "practitioner_name",
            "Someone Else",
        ),
    ];
    for (what, path, key, value) in &edits {
        let mut doc = stored_doc(&sam, case, me.actor())?;
        let obj = obj_at(&doc, path)?;
        doc.put(&obj, *key, *value)?;
        doc.commit();
        let host = raw_sync(server.addr(), &id, BTreeMap::from([(case, doc)])).await?;
        ensure!(
            host.refused.len() == 1 && host.refused[0].0 == case,
            "editing {what} in place was not refused: refused {:?}",
            host.refused
        );
        refused += 1;
    }
    // Replacing an object with an empty one removes what it held just the same.
    let mut doc = stored_doc(&sam, case, me.actor())?;
    let m_obj = obj_at(&doc, &["meetings", &m])?;
    doc.put_object(&m_obj, "readback", automerge::ObjType::Map)?;
    doc.commit();
    let host = raw_sync(server.addr(), &id, BTreeMap::from([(case, doc)])).await?;
    ensure!(
        host.refused == vec![(case, ErrorCode::InvalidChange)],
        "replacing the read-backs with an empty map was not refused: {:?}",
        host.refused
    );
    refused += 1;
    kit.sync().await?;
    ensure!(
        serde_json::to_string(&kit.peek(case)?)? == before,
        "the stored case is unchanged"
    );

    // Allowed: an edit inside the notes (a diff that deletes words) and a newer position
    // after the person's earlier one; the earlier text stays in the history.
    let heads_before = sam.profile.document(case)?.get_heads();
    sam.profile.edit(case, |d| {
        d.edit_text(
            &meeting,
            NoteKind::Notes,
            "Maria spoke first. Ana spoke next.",
        )?;
        d.record_position(&decision, Participant::Person, Stance::Unsure, None)
    })?;
    let report = sam.sync().await?;
    ensure!(report.refused.is_empty(), "{:?}", report.refused);
    let mut fresh = server.device("Kit").await?;
    fresh.sync().await?;
    let view = fresh.peek(case)?;
    ensure!(view
        .meetings
        .iter()
        .any(|x| x.notes == "Maria spoke first. Ana spoke next."));
    let person = &view.decisions[0].positions[0];
    ensure!(
        person.stance.is(polyphony_core::model::Stance::Unsure)
            && person.earlier.len() == 1
            && person.earlier[0]
                .stance
                .is(polyphony_core::model::Stance::Agree),
        "the earlier position is kept: {person:?}"
    );
    let mut history = fresh.profile.document(case)?.fork_at(&heads_before)?;
    let notes = obj_at(&history, &["meetings", &m, "notes"])?;
    ensure!(history.text(&notes)?.contains("Ana listened."));
    history.commit();
    report_figures(
        "append_only",
        &[
            ("removals_and_edits_tried", removals.len() as u64 + 4),
            ("refused", refused),
            ("allowed_edits_accepted", 2),
        ],
    );
    Ok(())
}

// ---- Revocation reaches a connected device (issue 14, finding 5) ---------------------------------

type Events =
    tokio::sync::mpsc::UnboundedReceiver<(polyphony_core::sync::Action, Option<AutoCommit>)>;

/// Whether the live session has been given a copy of `case` holding every head in `heads`
/// (draining what it was given so far into `got`).
fn live_holds(
    events: &mut Events,
    got: &mut bool,
    case: CaseId,
    heads: &[automerge::ChangeHash],
) -> bool {
    while let Ok((action, doc)) = events.try_recv() {
        if let (polyphony_core::sync::Action::Persist { case: c, .. }, Some(doc)) = (action, doc) {
            if c == case && heads.iter().all(|h| doc.get_change_by_hash(h).is_some()) {
                *got = true;
            }
        }
    }
    *got
}

/// A live session for `device`, and the channel of what it is given.
fn live_session(
    server: &TestServer,
    device: &TestDevice,
) -> (
    tokio::task::JoinHandle<Result<(ErrorCode, polyphony_e2e::TestHost)>>,
    Events,
) {
    let e = device.profile.enrolment().expect("enrolled").clone();
    let (tx, events) = tokio::sync::mpsc::unbounded_channel();
    let host = polyphony_e2e::TestHost {
        events: Some(tx),
        ..Default::default()
    };
    let addr = server.addr();
    (
        tokio::spawn(async move { polyphony_e2e::run_session(addr, &e, host, true).await }),
        events,
    )
}

/// Wait (up to `limit`) until `cond` holds.
async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_now_closes_a_connected_devices_live_session_at_once() -> Result<()> {
    let server = north().await?;
    let mut writer = server.device("Kit").await?;
    let stolen = server.device("Sam").await?;
    let (case, meeting) = writer.case_with_meeting("Maria")?;
    writer.sync().await?;
    let (live, mut events) = live_session(&server, &stolen);
    let mut got = false;
    let heads = writer.profile.document(case)?.get_heads();
    ensure!(
        eventually(Duration::from_secs(30), || live_holds(
            &mut events,
            &mut got,
            case,
            &heads
        ))
        .await,
        "the live session never received the case"
    );

    let revoked_at = std::time::Instant::now();
    server
        .admin(AdminRequest::Revoke {
            device: stolen.profile.device().to_string(),
            now: true,
        })
        .await?;
    ensure!(
        eventually(Duration::from_secs(5), || live.is_finished()).await,
        "the revoked device's live connection was still open 5 s after `revoke --now`"
    );
    let closed_in = revoked_at.elapsed();
    let end = live.await?;
    let code = match &end {
        Ok((code, _)) => Some(*code),
        Err(e) => refusal(e),
    };
    ensure!(
        code == Some(ErrorCode::Revoked),
        "the live session ended without saying the device was revoked: {end:?}",
        end = end.as_ref().map(|(c, _)| *c)
    );
    // A note written after the revocation reaches no copy the stolen device was given.
    writer.note(
        case,
        meeting,
        "Written after the laptop was reported stolen.",
    )?;
    writer.sync().await?;
    let after = writer.profile.document(case)?.get_heads();
    let mut got_after = false;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        !live_holds(&mut events, &mut got_after, case, &after),
        "the revoked device received a note written after its revocation"
    );
    let log = server
        .admin(AdminRequest::Audit {
            case: None,
            verify: false,
        })
        .await?
        .to_string();
    ensure!(log.contains("live session closed"), "{log}");
    report_figures(
        "revoke_now_live",
        &[
            ("live_sessions", 1),
            ("closed_within_ms", closed_in.as_millis() as u64),
            ("pushed_after_revocation", 0),
        ],
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_practitioner_removed_from_a_team_loses_its_cases_on_every_device_at_once() -> Result<()>
{
    let server = north().await?;
    let mut writer = server.device("Kit").await?;
    let laptop = server.device("Sam").await?;
    let mut phone = server.device("Sam").await?;
    let (case, meeting) = writer.case_with_meeting("Maria")?;
    writer.sync().await?;
    phone.sync().await?;
    let (live, mut events) = live_session(&server, &laptop);
    let mut got = false;
    let heads = writer.profile.document(case)?.get_heads();
    ensure!(
        eventually(Duration::from_secs(30), || live_holds(
            &mut events,
            &mut got,
            case,
            &heads
        ))
        .await,
        "the live session never received the case"
    );

    // On a home visit, before leaving, Sam opened a new case on the phone, not yet synced.
    let (opened_offline, _) = phone.case_with_meeting("Opened on the last visit")?;
    // Sam leaves team North: no device of Sam's gets North's cases from now on.
    server
        .admin(AdminRequest::PractitionerRemove {
            practitioner: "Sam".into(),
            team: Some("North".into()),
            now: false,
        })
        .await?;
    writer.note(case, meeting, "Written after Sam left the team.")?;
    writer.sync().await?;
    let after = writer.profile.document(case)?.get_heads();
    let mut got_after = false;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(
        !live_holds(&mut events, &mut got_after, case, &after),
        "a device of a practitioner who left the team still received the team's case live"
    );
    // Sam's phone, which only read the case, is told it is no longer available and drops its
    // copy (it had written nothing the server lacks); it received nothing new first.
    let report = phone.sync().await?;
    ensure!(
        report.moved.contains(&case.to_string()),
        "the phone was not told the case is no longer available: {report:?}"
    );
    // The case opened offline before Sam left is uploaded, not stranded, and reaches the team.
    ensure!(
        report.refused.is_empty(),
        "the phone's work from before Sam left was refused: {report:?}"
    );
    writer.sync().await?;
    ensure!(writer.peek(opened_offline)?.person.name == "Opened on the last visit");
    ensure!(
        !phone.profile.case_ids()?.contains(&case),
        "the phone kept its copy of a team case after Sam left the team"
    );

    // Sam leaves the trust: every device of Sam's is revoked, the live one closed at once.
    server
        .admin(AdminRequest::PractitionerRemove {
            practitioner: "Sam".into(),
            team: None,
            now: true,
        })
        .await?;
    ensure!(
        eventually(Duration::from_secs(5), || live.is_finished()).await,
        "the live session of a removed practitioner stayed open"
    );
    let err = phone
        .sync()
        .await
        .err()
        .ok_or_else(|| anyhow!("a removed practitioner's device still synced"))?;
    ensure!(refusal(&err) == Some(ErrorCode::Revoked), "{err:#}");
    report_figures(
        "practitioner_removed",
        &[
            ("devices", 2),
            ("pushed_after_removal", 0),
            ("synced_after_removal", 0),
        ],
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_left_revoking_past_its_time_limit_is_refused_and_keeps_its_work() -> Result<()> {
    /// The time a revoking device has to upload, in this test (the default is 14 days).
    const LIMIT_SECS: u64 = 8;
    let server = north_with(|c| c.revoking_limit_secs = LIMIT_SECS).await?;
    let mut prompt = server.device("Sam").await?;
    let mut late = server.device("Kit").await?;
    let (case, meeting) = prompt.case_with_meeting("Maria")?;
    prompt.sync().await?;
    late.sync().await?;
    prompt.note(case, meeting, "Uploaded in time.")?;
    late.note(case, meeting, "Kept on the device that came back too late.")?;
    for d in [&prompt, &late] {
        server
            .admin(AdminRequest::Revoke {
                device: d.profile.device().to_string(),
                now: false,
            })
            .await?;
    }
    // Within the limit: the device uploads, then is told to wipe.
    let report = prompt.sync().await?;
    ensure!(report.wiped, "{report:?}");
    // Past it: refused as revoked, uploading nothing; its words stay on it.
    tokio::time::sleep(Duration::from_secs(LIMIT_SECS + 1)).await;
    let err = late
        .sync()
        .await
        .err()
        .ok_or_else(|| anyhow!("a device past its revoking limit still synced"))?;
    ensure!(refusal(&err) == Some(ErrorCode::Revoked), "{err:#}");
    ensure!(late.peek(case)?.meetings[0]
        .notes
        .contains("came back too late"));
    let mut fresh = server.device("Jo").await.or(server.device("Kit").await)?;
    fresh.sync().await?;
    let notes = fresh.peek(case)?.meetings[0].notes.clone();
    ensure!(
        notes.contains("Uploaded in time.") && !notes.contains("too late"),
        "{notes}"
    );
    let log = server
        .admin(AdminRequest::Audit {
            case: None,
            verify: false,
        })
        .await?
        .to_string();
    ensure!(log.contains("time allowed to upload"), "{log}");
    report_figures(
        "revoking_limit",
        &[
            ("limit_secs", LIMIT_SECS),
            ("in_time_wiped", 1),
            ("late_refused", 1),
        ],
    );
    Ok(())
}

/// The status the server's registry gives a device ("active", "revoking", "revoked").
async fn device_status(server: &TestServer, device: DeviceId) -> Result<String> {
    let devices = server.admin(AdminRequest::Devices).await?;
    let d = devices
        .as_array()
        .and_then(|all| all.iter().find(|d| d["device"]["id"] == device.to_string()))
        .ok_or_else(|| anyhow!("device {device} not listed: {devices}"))?;
    Ok(d["device"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// One sync of `dev`'s profile over QUIC, driven frame by frame, in which `note` is saved the
/// moment the server's `Wipe` arrives: after the device said `Done` (everything uploaded) and
/// before it wipes. That is the app's race (an edit begun before the device was told it is
/// being revoked, saved while its last upload runs), so the flag that refuses new entries is
/// cleared around the edit, as it was not yet set when that edit began.
async fn sync_writing_before_the_wipe(
    server: &TestServer,
    dev: &mut polyphony_e2e::TestDevice,
    case: CaseId,
    meeting: polyphony_core::EntryId,
    note: &str,
) -> Result<polyphony_core::profile::SyncReport> {
    use polyphony_core::sync::Frame;
    let e = dev
        .profile
        .enrolment()
        .cloned()
        .ok_or_else(|| anyhow!("not enrolled"))?;
    let (endpoint, conn) = polyphony_e2e::connect_as(server.addr(), &e).await?;
    let (send, recv) = conn.open_bi().await?;
    let mut stream = polyphony_core::net::FramedStream::new(send, recv);
    let mut sync = dev.profile.begin_sync()?;
    let out = sync
        .start(&mut dev.profile)
        .map_err(|e| anyhow!("start: {e}"))?;
    stream.write_frames(&out.frames).await?;
    let mut wrote = false;
    let ended = loop {
        let frame = match stream.read_frame().await {
            Ok(Some(f)) => f,
            Ok(None) => break Err(NetError::Local("the server ended the session".into())),
            Err(e) => break Err(NetError::Local(e.to_string())),
        };
        if matches!(frame, Frame::Wipe) && !wrote {
            let store = dev.profile.store().clone();
            polyphony_core::profile::DeviceBooks::new(&*store).note_revocation(false)?;
            dev.note(case, meeting, note)?;
            polyphony_core::profile::DeviceBooks::new(&*store).note_revocation(true)?;
            wrote = true;
        }
        let out = sync
            .handle(&mut dev.profile, frame)
            .map_err(|e| anyhow!("device: {e}"))?;
        if !out.frames.is_empty() {
            stream.write_frames(&out.frames).await?;
        }
        if let Some(close) = out.close {
            break Ok(close);
        }
    };
    endpoint.close(0u32.into(), b"");
    ensure!(wrote, "the server never sent Wipe");
    Ok(sync.finish(&mut dev.profile, ended)?)
}

/// Found by the long simulation run (seed 109): a device being revoked that saved words while
/// its last upload-then-wipe session ran kept them for good, because the server marked it
/// revoked at its `Done` and it could never connect again. Now a device told it is being revoked
/// takes no new entries, and the server keeps it able to upload until it confirms a wipe that
/// kept nothing: the words reach the server at its next sync, then it is revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_writes_during_its_last_upload_is_revoked_only_once_its_words_are_on_the_server(
) -> Result<()> {
    let server = north().await?;
    let mut sam = server.device("Sam").await?;
    let (case, meeting) = sam.case_with_meeting("Maria")?;
    sam.note(case, meeting, "Uploaded before the revocation.")?;
    sam.sync().await?;
    let device = sam.profile.device();
    server
        .admin(AdminRequest::Revoke {
            device: device.to_string(),
            now: false,
        })
        .await?;
    let late = "Saved while the last upload ran.";
    let report = sync_writing_before_the_wipe(&server, &mut sam, case, meeting, late).await?;
    ensure!(
        report.wiped && report.kept_unsynced == vec![case.to_string()],
        "the case holding the late words is kept: {report:?}"
    );
    ensure!(
        sam.profile.enrolment().is_some(),
        "a device that kept unsynced words stays enrolled to upload them"
    );
    let status = device_status(&server, device).await?;
    ensure!(
        status == "revoking",
        "the server must keep the device able to upload (status {status})"
    );
    // Told it is being revoked, the device takes no new entry, and says why.
    let refused = sam
        .note(case, meeting, "One more line.")
        .err()
        .ok_or_else(|| anyhow!("a device being revoked took a new entry"))?;
    ensure!(
        format!("{refused:#}").contains("revoking this device"),
        "{refused:#}"
    );
    // Its next sync uploads the words; the wipe keeps nothing; then it is revoked.
    let report = sam.sync().await?;
    ensure!(
        report.wiped && report.kept_unsynced.is_empty(),
        "{report:?}"
    );
    ensure!(sam.profile.enrolment().is_none(), "wiped whole");
    ensure!(sam.profile.case_ids()?.is_empty(), "no case left on it");
    let status = device_status(&server, device).await?;
    ensure!(status == "revoked", "status {status}");
    let err = sam
        .sync()
        .await
        .err()
        .ok_or_else(|| anyhow!("a wiped device synced"))?;
    ensure!(format!("{err:#}").contains("not enrolled"), "{err:#}");
    let mut kit = server.device("Kit").await?;
    kit.sync().await?;
    let notes = kit.peek(case)?.meetings[0].notes.clone();
    ensure!(
        notes.contains("Uploaded before") && notes.contains(late) && !notes.contains("One more"),
        "{notes}"
    );
    let log = server
        .admin(AdminRequest::Audit {
            case: None,
            verify: false,
        })
        .await?
        .to_string();
    ensure!(log.contains("wiped all but 1 case"), "{log}");
    ensure!(log.contains("device wiped; now refused"), "{log}");
    report_figures(
        "revoking_with_words_saved_during_the_last_upload",
        &[("sessions_to_revoked", 2), ("late_words_uploaded", 1)],
    );
    Ok(())
}

/// A client older than the wipe confirmation (its hello names no features) is revoked at its
/// `Done`, as before: it is sent `Wipe` and `Bye`, and refused afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_older_than_the_wipe_confirmation_is_revoked_at_its_done() -> Result<()> {
    use polyphony_core::sync::{Frame, Hello, PROTOCOL_VERSION};
    let server = north().await?;
    let sam = server.device("Sam").await?;
    let device = sam.profile.device();
    let e = sam
        .profile
        .enrolment()
        .cloned()
        .ok_or_else(|| anyhow!("enrolled"))?;
    server
        .admin(AdminRequest::Revoke {
            device: device.to_string(),
            now: false,
        })
        .await?;
    let (endpoint, conn) = polyphony_e2e::connect_as(server.addr(), &e).await?;
    let (send, recv) = conn.open_bi().await?;
    let mut stream = polyphony_core::net::FramedStream::new(send, recv);
    stream
        .write_frames(&[
            Frame::Hello(Hello {
                version: PROTOCOL_VERSION,
                software: "polyphony/0.0.9".into(),
                live: false,
                features: Vec::new(),
            }),
            Frame::Done,
        ])
        .await?;
    let mut replies = Vec::new();
    while let Ok(Ok(Some(f))) =
        tokio::time::timeout(Duration::from_secs(5), stream.read_frame()).await
    {
        replies.push(f.kind());
    }
    endpoint.close(0u32.into(), b"");
    ensure!(
        replies == ["welcome", "wipe", "bye"],
        "an old client is told to wipe and the session ends: {replies:?}"
    );
    let status = device_status(&server, device).await?;
    ensure!(status == "revoked", "status {status}");
    Ok(())
}

// ---- Offline reads and access lists (issue 14, finding 7) ----------------------------------------

/// After the welcome, send `frames` and collect the answers until `last` matches one (or the
/// server closes, or goes quiet for 5 s).
async fn exchange(
    addr: std::net::SocketAddr,
    id: &RawIdentity,
    frames: &[polyphony_core::sync::Frame],
    mut last: impl FnMut(&polyphony_core::sync::Frame) -> bool,
) -> Result<Vec<polyphony_core::sync::Frame>> {
    let session = hold_session(addr, id).await?;
    let mut stream = session._stream;
    stream.write_frames(frames).await?;
    let mut replies = Vec::new();
    while let Ok(Ok(Some(f))) =
        tokio::time::timeout(Duration::from_secs(5), stream.read_frame()).await
    {
        let done = last(&f);
        replies.push(f);
        if done {
            break;
        }
    }
    Ok(replies)
}

/// The offline-read records of one case in the audit log, as their outbox numbers.
async fn offline_reads_of(server: &TestServer, case: CaseId) -> Result<Vec<String>> {
    let log = server
        .admin(AdminRequest::Audit {
            case: Some(case),
            verify: false,
        })
        .await?;
    audit_details(&log, "offline_read")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_reads_are_checked_recorded_once_and_bounded_and_access_lists_rate_limited(
) -> Result<()> {
    use polyphony_core::sync::{Frame, OfflineRead};
    let server = north().await?;
    server.team("South").await?;
    server.practitioner("Jo", "South").await?;
    let mut sam = server.device("Sam").await?;
    let mut jo = server.device("Jo").await?;
    let (mine, _) = sam.case_with_meeting("Maria")?;
    let (theirs, _) = jo.case_with_meeting("Other borough team's person")?;
    sam.sync().await?;
    jo.sync().await?;
    let id = RawIdentity::of(sam.profile.enrolment().expect("enrolled"))?;
    let fmt = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .expect("time")
    };
    let now = OffsetDateTime::now_utc();
    let read = |case, at: OffsetDateTime, seq| OfflineRead {
        case,
        at: fmt(at),
        what: "case show".into(),
        seq,
    };
    let reads_saved = |f: &Frame| matches!(f, Frame::ReadsSaved { .. } | Frame::Error(_));
    let first = vec![
        read(mine, now - time::Duration::minutes(5), 1),
        read(theirs, now - time::Duration::minutes(4), 2),
        read(mine, now + time::Duration::days(1), 3),
        read(mine, now - time::Duration::days(3650), 4),
        read(mine, now - time::Duration::minutes(1), 5),
    ];
    let replies = exchange(server.addr(), &id, &[Frame::Reads(first)], reads_saved).await?;
    ensure!(
        replies
            .iter()
            .any(|f| matches!(f, Frame::ReadsSaved { through: 5 })),
        "{replies:?}"
    );
    // The device did not hear the answer and sends its outbox again, with one new read.
    let again = vec![
        read(mine, now - time::Duration::minutes(5), 1),
        read(mine, now - time::Duration::minutes(1), 5),
        read(mine, now, 6),
    ];
    let replies = exchange(server.addr(), &id, &[Frame::Reads(again)], reads_saved).await?;
    ensure!(
        replies
            .iter()
            .any(|f| matches!(f, Frame::ReadsSaved { through: 6 })),
        "{replies:?}"
    );
    let recorded = offline_reads_of(&server, mine).await?;
    ensure!(
        recorded.len() == 3
            && ["#1)", "#5)", "#6)"]
                .iter()
                .all(|n| recorded.iter().any(|d| d.contains(n))),
        "exactly the three good reads are in the audit log, once each: {recorded:?}"
    );
    ensure!(
        offline_reads_of(&server, theirs).await?.is_empty(),
        "a read of another team's case was recorded in that case's access list"
    );

    // Past the per-frame bound: refused whole, nothing recorded.
    let flood: Vec<OfflineRead> = (0..=polyphony_server::session::MAX_READS_PER_FRAME as u64)
        .map(|i| read(mine, now, 100 + i))
        .collect();
    let replies = exchange(server.addr(), &id, &[Frame::Reads(flood)], reads_saved).await?;
    ensure!(
        replies
            .iter()
            .any(|f| matches!(f, Frame::Error(r) if r.code == ErrorCode::TooLarge)),
        "{replies:?}"
    );
    ensure!(offline_reads_of(&server, mine).await?.len() == 3);

    // Access lists: the second request straight after the first is turned away.
    let ask = Frame::AccessLogRequest { case: mine };
    let replies = exchange(server.addr(), &id, &[ask.clone(), ask], |f| {
        matches!(f, Frame::CaseRefused { .. })
    })
    .await?;
    ensure!(
        replies.iter().any(|f| matches!(f, Frame::AccessLog { .. }))
            && replies.iter().any(
                |f| matches!(f, Frame::CaseRefused { refusal, .. } if refusal.code == ErrorCode::Busy)
            ),
        "{:?}",
        replies.iter().map(|f| f.kind()).collect::<Vec<_>>()
    );
    report_figures(
        "offline_reads",
        &[
            (
                "reads_sent",
                8 + polyphony_server::session::MAX_READS_PER_FRAME as u64 + 1,
            ),
            ("recorded", 3),
            ("dropped_bad", 3),
            ("duplicates_dropped", 2),
        ],
    );
    Ok(())
}

// ---- A moved case (issue 14, finding 4) ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_case_takes_uploads_from_its_old_team_only_for_a_bounded_time() -> Result<()> {
    /// The time a device the case moved away from has to upload, in this test (default 14 days).
    const LIMIT_SECS: u64 = 8;
    let server = north_with(|c| c.moved_upload_limit_secs = LIMIT_SECS).await?;
    server.team("South").await?;
    server.practitioner("Jo", "South").await?;
    let mut prompt = server.device("Sam").await?;
    let mut late = server.device("Kit").await?;
    let mut reader = server.device("Sam").await?;
    let (case, meeting) = prompt.case_with_meeting("Maria")?;
    prompt.sync().await?;
    late.sync().await?;
    reader.sync().await?;
    prompt.note(case, meeting, "Written before the move, uploaded in time.")?;
    late.note(case, meeting, "Written before the move, uploaded too late.")?;
    server
        .admin(AdminRequest::CaseMove {
            case,
            team: "South".into(),
        })
        .await?;
    // In time: uploaded, and the device drops its copy; a device that only read it drops it too.
    let report = prompt.sync().await?;
    ensure!(report.moved == vec![case.to_string()], "{report:?}");
    let report = reader.sync().await?;
    ensure!(report.moved == vec![case.to_string()], "{report:?}");
    ensure!(!reader.profile.case_ids()?.contains(&case));
    // Too late: the case is not available; the device keeps its words.
    tokio::time::sleep(Duration::from_secs(LIMIT_SECS + 1)).await;
    let report = late.sync().await?;
    ensure!(
        report.refused.iter().any(|(c, _)| *c == case.to_string()),
        "{report:?}"
    );
    ensure!(late.peek(case)?.meetings[0].notes.contains("too late"));
    let mut south = server.device("Jo").await?;
    south.sync().await?;
    let notes = south.peek(case)?.meetings[0].notes.clone();
    ensure!(
        notes.contains("uploaded in time") && !notes.contains("too late"),
        "{notes}"
    );
    report_figures(
        "moved_upload_limit",
        &[
            ("limit_secs", LIMIT_SECS),
            ("in_time", 1),
            ("late_refused", 1),
            ("readers_dropped", 1),
        ],
    );
    Ok(())
}

/// Run `device`'s sync until the server tells it `case` moved, then cut the connection (a train
/// into a tunnel): the device has been told, and has uploaded nothing of that case.
async fn sync_cut_once_told(
    addr: std::net::SocketAddr,
    device: &mut TestDevice,
    case: CaseId,
) -> Result<()> {
    use polyphony_core::sync::Frame;
    let e = device
        .profile
        .enrolment()
        .cloned()
        .ok_or_else(|| anyhow!("not enrolled"))?;
    let (endpoint, conn) = polyphony_e2e::connect_as(addr, &e).await?;
    let (send, recv) = conn.open_bi().await?;
    let mut stream = polyphony_core::net::FramedStream::new(send, recv);
    let mut sync = device.profile.begin_sync()?;
    let out = sync.start(&mut device.profile).map_err(|e| anyhow!(e))?;
    stream.write_frames(&out.frames).await?;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), stream.read_frame())
            .await??
            .ok_or_else(|| anyhow!("the server closed before telling the device"))?;
        let told = matches!(
            &frame,
            Frame::CaseRefused { case: c, refusal } if *c == case && refusal.code == ErrorCode::Moved
        );
        let out = sync
            .handle(&mut device.profile, frame)
            .map_err(|e| anyhow!(e))?;
        if told {
            break;
        }
        ensure!(
            out.close.is_none(),
            "the session ended before the device was told"
        );
        stream.write_frames(&out.frames).await?;
    }
    conn.close(0u32.into(), b"cut");
    endpoint.close(0u32.into(), b"cut");
    let ended = sync.finish(
        &mut device.profile,
        Err(NetError::Lost("cut by the test".into())),
    );
    ensure!(ended.is_err(), "{ended:?}");
    Ok(())
}

/// Issue 14, finding 4, change by change: a device the case moved away from may upload what it
/// wrote before it was told (offline across the move included), and nothing dated after; an
/// honest device, once told, refuses new words itself, across a restart. A device that backdates
/// is not stopped (docs/SECURITY.md): the test shows that too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_told_its_case_moved_uploads_only_what_it_wrote_before_it_was_told() -> Result<()>
{
    use polyphony_core::profile::ProfileError;
    let server = north().await?;
    server.team("South").await?;
    server.practitioner("Jo", "South").await?;
    let mut laptop = server.device("Sam").await?;
    let mut tablet = server.device("Sam").await?;
    let mut kit = server.device("Kit").await?;
    let (case, meeting) = laptop.case_with_meeting("Maria")?;
    laptop.sync().await?;
    tablet.sync().await?;
    kit.sync().await?;
    laptop.note(case, meeting, "Laptop, before the move. ")?;
    tablet.note(case, meeting, "Tablet, before it was told. ")?;
    kit.note(case, meeting, "Kit, before the move. ")?;
    server
        .admin(AdminRequest::CaseMove {
            case,
            team: "South".into(),
        })
        .await?;
    // Offline across the move: the laptop does not know, and its words after it are good faith.
    laptop.note(case, meeting, "Laptop, after the move, not yet told. ")?;
    let report = laptop.sync().await?;
    ensure!(
        report.moved == vec![case.to_string()] && report.refused.is_empty(),
        "{report:?}"
    );

    // An honest profile, told and then cut off before it uploaded: it refuses new words itself,
    // with a reason, and still after a restart; what it wrote before uploads at the next sync.
    sync_cut_once_told(server.addr(), &mut tablet, case).await?;
    let mut honest_refusals = 0u64;
    for reopen in [false, true] {
        if reopen {
            let TestDevice { dir, profile } = tablet;
            let home = profile.home().to_path_buf();
            drop(profile);
            tablet = TestDevice {
                dir,
                profile: Profile::open(&home, PASSPHRASE)?,
            };
        }
        let err = tablet
            .note(case, meeting, "Tablet, after it was told. ")
            .err()
            .ok_or_else(|| anyhow!("a told device took an edit (reopened: {reopen})"))?;
        ensure!(
            matches!(
                err.downcast_ref::<ProfileError>(),
                Some(ProfileError::MovedAway { .. })
            ) && err.to_string().contains("now with another team"),
            "{err}"
        );
        honest_refusals += 1;
    }
    ensure!(tablet.peek(case)?.meetings[0]
        .notes
        .contains("Tablet, before it was told."));
    let report = tablet.sync().await?;
    ensure!(
        report.moved == vec![case.to_string()] && report.refused.is_empty(),
        "{report:?}"
    );

    // A modified client on Kit's device (its own identity and actor, stamps right): told, then
    // writing on.
    let kit_actor = kit.profile.author()?.actor();
    let mut copy = stored_doc(&kit, case, kit_actor.clone())?;
    let report = kit.sync().await?;
    ensure!(report.moved == vec![case.to_string()], "{report:?}");
    let told = OffsetDateTime::now_utc();
    let ms = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
    let dated = |doc: &mut AutoCommit, value: &str, time: Option<i64>| -> Result<()> {
        let person = obj_at(doc, &["person"])?;
        doc.put(&person, "preferred_name", value)?;
        let mut options = automerge::transaction::CommitOptions::default();
        if let Some(t) = time {
            options = options.with_time(t);
        }
        doc.commit_with(options);
        Ok(())
    };
    let id = RawIdentity::of(kit.profile.enrolment().expect("enrolled"))?;
    // Dated before it was told, then an hour after: the whole message is refused, nothing stored.
    let mut backdated = copy.fork().with_actor(kit_actor.clone());
    dated(
        &mut backdated,
        "Mari",
        Some(ms(told - time::Duration::minutes(5))),
    )?;
    let mut late = backdated.fork().with_actor(kit_actor.clone());
    dated(&mut late, "Maz", Some(ms(told + time::Duration::hours(1))))?;
    let host = raw_sync(server.addr(), &id, BTreeMap::from([(case, late)])).await?;
    ensure!(
        host.refused == vec![(case, ErrorCode::InvalidChange)],
        "a change dated after the device was told: refused {:?}, acked {:?}",
        host.refused,
        host.acked
    );
    // A change with no time cannot show it came first.
    let mut undated = copy.fork().with_actor(kit_actor.clone());
    dated(&mut undated, "Mo", None)?;
    let host = raw_sync(server.addr(), &id, BTreeMap::from([(case, undated)])).await?;
    ensure!(
        host.refused == vec![(case, ErrorCode::InvalidChange)],
        "an undated change: refused {:?}",
        host.refused
    );
    let mut jo = server.device("Jo").await?;
    jo.sync().await?;
    let person = jo.peek(case)?.person;
    ensure!(person.preferred_name.is_none(), "{person:?}");
    // What is not stopped: the backdated change alone is the device's word, and accepted.
    let host = raw_sync(server.addr(), &id, BTreeMap::from([(case, backdated)])).await?;
    ensure!(host.refused.is_empty(), "{:?}", host.refused);
    jo.sync().await?;
    let view = jo.peek(case)?;
    ensure!(
        view.person.preferred_name.as_deref() == Some("Mari"),
        "{:?}",
        view.person
    );
    let notes = &view.meetings[0].notes;
    for written in [
        "Laptop, before the move.",
        "Laptop, after the move, not yet told.",
        "Tablet, before it was told.",
        "Kit, before the move.",
    ] {
        ensure!(notes.contains(written), "{written:?} missing: {notes}");
    }
    ensure!(!notes.contains("after it was told"), "{notes}");
    // The refusals are in the audit log, each with its reason.
    let log = server
        .admin(AdminRequest::Audit {
            case: Some(case),
            verify: false,
        })
        .await?;
    let refused = audit_details(&log, "refused")?;
    ensure!(
        refused
            .iter()
            .any(|d| d.contains("after this device was told"))
            && refused.iter().any(|d| d.contains("carries no time")),
        "{refused:?}"
    );
    report_figures(
        "moved_only_before_told",
        &[
            ("notes_offline_across_the_move_accepted", 2),
            ("honest_edits_refused_after_told", honest_refusals),
            ("dated_after_told_refused", 1),
            ("undated_refused", 1),
            ("backdated_accepted", 1),
        ],
    );
    Ok(())
}

// ---- Need to know (issue 14, finding 6) ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_by_a_colleague_outside_the_care_team_is_shown_as_such_in_the_access_list(
) -> Result<()> {
    let server = north().await?;
    let mut sam = server.device("Sam").await?;
    let mut sams_phone = server.device("Sam").await?;
    let mut kit = server.device("Kit").await?;
    let (case, _) = sam.case_with_meeting("Maria")?;
    let me = sam.profile.author()?;
    sam.profile.edit(case, |d| {
        d.add_care_team(
            me.practitioner,
            &me.practitioner_name,
            model::CareRole::Practitioner,
            None,
        )
    })?;
    sam.sync().await?;
    sams_phone.sync().await?;
    // Kit covers for Sam: the team's rule lets Kit's device sync the case.
    kit.sync().await?;
    ensure!(kit.peek(case)?.person.name == "Maria");
    let log = server
        .admin(AdminRequest::Audit {
            case: Some(case),
            verify: false,
        })
        .await?;
    let reads: Vec<(String, String)> = log
        .as_array()
        .ok_or_else(|| anyhow!("a list"))?
        .iter()
        .filter(|r| r["event"]["action"] == "read")
        .map(|r| {
            (
                r["event"]["actor"]["practitioner"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                r["event"]["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let kit_id = kit.profile.author()?.practitioner.to_string();
    let sam_id = me.practitioner.to_string();
    let outside = "not in this person's care team";
    ensure!(
        reads
            .iter()
            .any(|(p, d)| *p == kit_id && d.contains(outside)),
        "Kit's read is recorded as a read from outside the care team: {reads:?}"
    );
    ensure!(
        reads
            .iter()
            .any(|(p, d)| *p == sam_id && !d.contains(outside)),
        "Sam's phone's read is an ordinary care-team read: {reads:?}"
    );
    // And the person's access list, as a device receives it, says so.
    let id = RawIdentity::of(sam.profile.enrolment().expect("enrolled"))?;
    let replies = exchange(
        server.addr(),
        &id,
        &[polyphony_core::sync::Frame::AccessLogRequest { case }],
        |f| matches!(f, polyphony_core::sync::Frame::AccessLog { .. }),
    )
    .await?;
    let listed = replies.iter().find_map(|f| match f {
        polyphony_core::sync::Frame::AccessLog { entries, .. } => Some(entries.clone()),
        _ => None,
    });
    let listed = listed.ok_or_else(|| anyhow!("no access list: {replies:?}"))?;
    ensure!(
        listed
            .iter()
            .any(|e| e.who == "Kit" && e.what.contains(outside)),
        "{listed:?}"
    );
    report_figures("need_to_know", &[("reads_outside_care_team_marked", 1)]);
    Ok(())
}

// ---- The audit log anchored outside the server (issue 14, finding 11) ---------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_copy_of_the_audit_log_is_caught_by_heads_kept_outside_the_server() -> Result<()> {
    let mut server = north().await?;
    let mut sam = server.device("Sam").await?;
    let (case, meeting) = sam.case_with_meeting("Maria")?;
    sam.sync().await?;
    let old = tempfile::tempdir()?;
    let old_copy = old.path().join("data");
    server.stopped(|d| copy_dir(d, &old_copy)).await?;
    // Work after the copy: reads and writes the audit log records.
    for i in 0..3 {
        sam.note(case, meeting, &format!("After the backup, {i}. "))?;
        let report = sam.sync().await?;
        ensure!(report.audit_warning.is_none(), "{report:?}");
    }
    let kept = sam
        .profile
        .audit_head()?
        .ok_or_else(|| anyhow!("the device kept no audit head"))?;
    let exported: polyphony_core::identity::AuditHead =
        serde_json::from_value(server.admin(AdminRequest::AuditHead).await?)?;
    ensure!(exported.records >= kept.records, "{exported:?} {kept:?}");
    server
        .admin(AdminRequest::AuditAnchors {
            anchors: vec![exported.clone(), kept.clone()],
        })
        .await
        .map_err(|e| anyhow!("the live log fails its own anchors: {e}"))?;

    // The server's data directory is replaced by the older copy (a restore from an old backup).
    server
        .stopped(|d| {
            std::fs::remove_dir_all(d)?;
            copy_dir(&old_copy, d)
        })
        .await?;
    // The hash chain alone cannot tell: the older copy is a valid chain.
    server
        .admin(AdminRequest::Audit {
            case: None,
            verify: true,
        })
        .await?;
    for anchor in [&exported, &kept] {
        let err = server
            .admin(AdminRequest::AuditAnchors {
                anchors: vec![anchor.clone()],
            })
            .await
            .err()
            .ok_or_else(|| {
                anyhow!(
                    "an older copy passed an anchor of {} records",
                    anchor.records
                )
            })?;
        ensure!(err.to_string().contains("lost from its end"), "{err}");
    }
    // And the device says so at its next sync.
    let report = sam.sync().await?;
    let warning = report
        .audit_warning
        .ok_or_else(|| anyhow!("the device did not notice the audit log went back"))?;
    ensure!(warning.contains("fewer than"), "{warning}");
    // The older copy grows past the device's newest head (a colleague works on): the device
    // now takes the longer head without a warning, but the heads it kept before still catch it.
    let mut kit = server.device("Kit").await?;
    let mut rounds = 0;
    while serde_json::from_value::<polyphony_core::identity::AuditHead>(
        server.admin(AdminRequest::AuditHead).await?,
    )?
    .records
        <= kept.records
    {
        kit.sync().await?;
        rounds += 1;
        ensure!(rounds < 200, "the restored log did not grow");
    }
    let report = sam.sync().await?;
    ensure!(report.audit_warning.is_none(), "{report:?}");
    let history = sam.profile.audit_history()?;
    ensure!(
        history.contains(&kept),
        "the replaced head is kept: {history:?}"
    );
    let err = server
        .admin(AdminRequest::AuditAnchors { anchors: history })
        .await
        .err()
        .ok_or_else(|| anyhow!("the grown older copy passed the device's kept heads"))?;
    ensure!(err.to_string().contains("another"), "{err}");
    // A forged anchor (not signed by this borough's CA) is refused.
    let mut forged = exported.clone();
    forged.records += 1000;
    let err = server
        .admin(AdminRequest::AuditAnchors {
            anchors: vec![forged],
        })
        .await
        .err()
        .ok_or_else(|| anyhow!("a forged anchor was taken"))?;
    ensure!(err.to_string().contains("not signed"), "{err}");
    report_figures(
        "audit_anchor",
        &[
            ("older_copies_restored", 1),
            ("anchors_failed", 3),
            ("device_warned", 1),
            ("restored_log_grown_past_the_device_head", 1),
        ],
    );
    Ok(())
}

/// What a live session was given so far (drained from its events): each case's document as it
/// last stood after data arrived, the cases refused (with the refusal), the cases acknowledged.
#[derive(Default)]
struct LiveSeen {
    given: BTreeMap<CaseId, AutoCommit>,
    refused: BTreeMap<CaseId, polyphony_core::sync::Refusal>,
    acked: std::collections::BTreeSet<CaseId>,
}

impl LiveSeen {
    fn drain(&mut self, events: &mut Events) {
        use polyphony_core::sync::Action;
        while let Ok((action, doc)) = events.try_recv() {
            match (action, doc) {
                (Action::Persist { case, .. }, Some(doc)) => {
                    self.given.insert(case, doc);
                }
                (Action::Refused { case, refusal }, _) => {
                    self.refused.insert(case, refusal);
                }
                (Action::Acknowledged { case, .. }, _) => {
                    self.acked.insert(case);
                }
                _ => {}
            }
        }
    }
}

/// The reads of `case` by `device` in the audit log: records of case data sent to it.
async fn reads_by(server: &TestServer, case: CaseId, device: &TestDevice) -> Result<usize> {
    let me = device.profile.device().to_string();
    let log = server
        .admin(AdminRequest::Audit {
            case: Some(case),
            verify: false,
        })
        .await?;
    Ok(log
        .as_array()
        .ok_or_else(|| anyhow!("audit is a list"))?
        .iter()
        .filter(|r| {
            r["event"]["action"] == "read"
                && r["event"]["actor"]["device"] == me.as_str()
                && r["event"]["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("case data"))
        })
        .count())
}

/// While the audit log refuses records, no case data and no access list leaves the server: a
/// device's sync gets a per-case refusal that says why and receives nothing; a live session is
/// refused a case it asks for, and ended in the same words when a colleague's change to a case it
/// holds would be pushed; an access list is refused; offline reads are refused whole (kept on the
/// device). Writes go on. Once the log takes records again, the same devices receive everything,
/// and each read is in the audit log once (issue 14, finding 11: before, the data went out with
/// no record of the access).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_the_audit_log_cannot_record_sends_nothing_and_is_served_once_it_can() -> Result<()>
{
    use polyphony_core::sync::{Frame, OfflineRead};
    use polyphony_e2e::{DiskFault, DiskSwitch, FaultyStore};
    /// Cases written before the fault.
    const CASES: usize = 3;
    let switch = DiskSwitch::default();
    let control = switch.clone();
    let server =
        TestServer::start_with_store(move |store| FaultyStore::wrap(store, control)).await?;
    server.team("North").await?;
    for p in ["Sam", "Kit", "Lee"] {
        server.practitioner(p, "North").await?;
    }
    let mut sam = server.device("Sam").await?;
    let mut kit = server.device("Kit").await?;
    let mut lee = server.device("Lee").await?;
    let mut cases = Vec::new();
    for i in 0..CASES {
        cases.push(sam.case_with_meeting(&format!("Person {i}"))?);
    }
    sam.sync().await?;
    // Lee's app holds every case, and keeps a live session open: it has nothing to receive, so
    // it has read nothing in this session yet.
    lee.sync().await?;
    let e = lee.profile.enrolment().expect("enrolled").clone();
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let mut host = polyphony_e2e::TestHost {
        events: Some(tx),
        ..Default::default()
    };
    for (case, _) in &cases {
        host.docs.insert(*case, lee.profile.document(*case)?);
    }
    let addr = server.addr();
    let live = tokio::spawn(async move { polyphony_e2e::run_session(addr, &e, host, true).await });
    let mut seen = LiveSeen::default();
    ensure!(
        eventually(Duration::from_secs(30), || {
            seen.drain(&mut events);
            cases.iter().all(|(c, _)| seen.acked.contains(c))
        })
        .await,
        "the live session did not settle"
    );

    switch.set(DiskFault::AuditFails);
    // Kit's first sync: each case refused in words that say why, and no data of any.
    let report = kit.sync().await?;
    for (case, _) in &cases {
        let held = kit.profile.case_ids()?.contains(case)
            && !kit.profile.document(*case)?.get_heads().is_empty();
        ensure!(
            !held,
            "Kit received case {case} while the audit log could not record the read"
        );
    }
    ensure!(
        report.refused.len() == CASES,
        "every case refused: {report:?}"
    );
    for (case, why) in &report.refused {
        ensure!(
            why.contains("could not record this access in its audit log")
                && why.contains("sent nothing"),
            "case {case}: unclear refusal: {why}"
        );
    }
    // An access list is refused too: its request is an access.
    let first = cases[0].0;
    let err = kit
        .profile
        .fetch_accesses(first)
        .await
        .err()
        .ok_or_else(|| anyhow!("an access list was sent while the audit log refused records"))?;
    ensure!(err.to_string().contains("audit log"), "{err}");
    // Offline reads are refused whole, and stay on the device to be sent again.
    let id = RawIdentity::of(kit.profile.enrolment().expect("enrolled"))?;
    let at = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("time");
    let reads: Vec<OfflineRead> = (1..=2)
        .map(|seq| OfflineRead {
            case: first,
            at: at.clone(),
            what: "case show".into(),
            seq,
        })
        .collect();
    let answered = |f: &Frame| matches!(f, Frame::ReadsSaved { .. } | Frame::Error(_));
    let replies = exchange(addr, &id, &[Frame::Reads(reads.clone())], answered).await?;
    ensure!(
        replies.iter().any(|f| matches!(f, Frame::Error(r)
            if r.code == ErrorCode::StorageFailed && r.message.contains("read offline")))
            && !replies
                .iter()
                .any(|f| matches!(f, Frame::ReadsSaved { .. })),
        "offline reads during the fault: {replies:?}"
    );

    // Writes go on. Sam opens a case: the live session asks for it and is refused it.
    let (opened, _) = sam.case_with_meeting("Opened while the audit log refuses records")?;
    let report = sam.sync().await?;
    ensure!(report.refused.is_empty(), "{report:?}");
    ensure!(!sam.profile.acknowledged_heads(opened)?.is_empty());
    ensure!(
        eventually(Duration::from_secs(30), || {
            seen.drain(&mut events);
            seen.refused.contains_key(&opened)
        })
        .await,
        "the live session was not refused the case opened during the fault"
    );
    let why = &seen.refused[&opened];
    ensure!(
        why.code == ErrorCode::StorageFailed && why.message.contains("audit log"),
        "{why:?}"
    );
    // Sam writes to a case Lee holds: pushing it would be Lee's first read of it in this
    // session, which cannot be recorded. The live session ends in words that say why.
    let (noted, meeting) = cases[1];
    sam.note(
        noted,
        meeting,
        "Written while the audit log refuses records.",
    )?;
    let report = sam.sync().await?;
    ensure!(report.refused.is_empty(), "{report:?}");
    let ended = tokio::time::timeout(Duration::from_secs(30), live)
        .await
        .map_err(|_| anyhow!("the live session went on after a push it could not audit"))??;
    let why = match ended {
        Ok((code, _)) => format!("ended normally ({code:?})"),
        Err(e) => e.to_string(),
    };
    ensure!(
        why.contains("could not record an access in its audit log"),
        "the live session ended unclearly: {why}"
    );
    seen.drain(&mut events);
    let note_heads = sam.profile.document(noted)?.get_heads();
    ensure!(
        !seen.given.contains_key(&opened)
            && !seen
                .given
                .get(&noted)
                .is_some_and(|d| note_heads.iter().all(|h| d.get_change_by_hash(h).is_some())),
        "the live session received case data during the fault"
    );
    ensure!(reads_by(&server, first, &kit).await? == 0);

    // The log takes records again: the same devices receive everything, each read recorded once.
    switch.set(DiskFault::None);
    let report = kit.sync().await?;
    ensure!(report.refused.is_empty(), "after the fault: {report:?}");
    let all: Vec<CaseId> = cases.iter().map(|(c, _)| *c).chain([opened]).collect();
    for case in &all {
        let name = kit.peek(*case)?.person.name;
        ensure!(
            name.starts_with("Person") || name.starts_with("Opened"),
            "case {case} not received after the fault: {name:?}"
        );
        ensure!(
            reads_by(&server, *case, &kit).await? == 1,
            "case {case}: Kit's read is not in the audit log once"
        );
    }
    // Access lists are limited to one every 2 s per device.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let list = kit.profile.fetch_accesses(first).await?;
    ensure!(
        list.entries.iter().any(|a| a.who == "Kit"),
        "Kit's read is not in the access list: {list:?}"
    );
    let replies = exchange(addr, &id, &[Frame::Reads(reads)], answered).await?;
    ensure!(
        replies
            .iter()
            .any(|f| matches!(f, Frame::ReadsSaved { through: 2 })),
        "{replies:?}"
    );
    ensure!(offline_reads_of(&server, first).await?.len() == 2);
    lee.sync().await?;
    ensure!(lee.peek(noted)?.meetings[0]
        .notes
        .contains("audit log refuses"));
    ensure!(reads_by(&server, opened, &lee).await? == 1);
    report_figures(
        "unaudited_reads",
        &[
            ("case_syncs_refused", CASES as u64 + 1),
            ("access_lists_refused", 1),
            ("offline_read_frames_refused", 1),
            ("live_sessions_ended", 1),
            ("case_data_sent_unaudited", 0),
            ("audit_writes_refused", switch.refused()),
        ],
    );
    Ok(())
}

// ---- Resource limits per device (issue 14, finding 8) --------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_sends_and_never_reads_is_held_back_not_buffered() -> Result<()> {
    use polyphony_core::sync::Frame;
    /// Frames the device tries to send without reading one reply (each asks for a reply).
    const MOST: usize = 400_000;
    const BATCH: usize = 2_000;
    let server = north().await?;
    let mut sam = server.device("Sam").await?;
    let mut kit = server.device("Kit").await?;
    let (case, _) = sam.case_with_meeting("Maria")?;
    sam.sync().await?;
    let id = RawIdentity::of(sam.profile.enrolment().expect("enrolled"))?;
    let session = hold_session(server.addr(), &id).await?;
    let mut stream = session._stream;
    let batch = vec![Frame::AccessLogRequest { case }; BATCH];
    let mut written = 0;
    let mut held_back = false;
    while written < MOST {
        match tokio::time::timeout(Duration::from_secs(5), stream.write_frames(&batch)).await {
            Ok(r) => {
                r?;
                written += BATCH;
            }
            Err(_) => {
                held_back = true;
                break;
            }
        }
    }
    ensure!(
        held_back,
        "the server took all {written} frames from a device that read none of its replies: it buffered them"
    );
    // Meanwhile the server serves everyone else.
    let report = kit.sync().await?;
    ensure!(report.refused.is_empty(), "{report:?}");
    report_figures(
        "send_backlog",
        &[
            ("frames_taken_before_held_back", written as u64),
            (
                "backlog_limit_batches",
                polyphony_server::session::MAX_SEND_BACKLOG as u64,
            ),
        ],
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_cases_in_one_session_and_enrolment_attempts_per_address_are_bounded() -> Result<()> {
    let server = north().await?;
    let mut sam = server.device("Sam").await?;
    // Half-sent new cases: many case ids, each with a first message that holds nothing yet.
    let id = RawIdentity::of(sam.profile.enrolment().expect("enrolled"))?;
    let empty = {
        use automerge::sync::SyncDoc;
        let mut doc = AutoCommit::new();
        let message = doc
            .sync()
            .generate_sync_message(&mut automerge::sync::State::new())
            .ok_or_else(|| anyhow!("a first message"))?
            .encode();
        message
    };
    let limit = polyphony_server::session::MAX_PROVISIONAL;
    let frames: Vec<polyphony_core::sync::Frame> = (0..limit + 10)
        .map(|_| polyphony_core::sync::Frame::Sync {
            case: CaseId::random(),
            message: empty.clone(),
        })
        .collect();
    let total = frames.len();
    let mut answers = 0;
    let replies = exchange(server.addr(), &id, &frames, |f| {
        if matches!(
            f,
            polyphony_core::sync::Frame::Saved { .. }
                | polyphony_core::sync::Frame::CaseRefused { .. }
        ) {
            answers += 1;
        }
        answers == total
    })
    .await?;
    let busy = replies
        .iter()
        .filter(|f| matches!(f, polyphony_core::sync::Frame::CaseRefused { refusal, .. } if refusal.code == ErrorCode::Busy))
        .count();
    ensure!(
        busy == 10,
        "{busy} of {total} new cases refused as too many (want 10)"
    );
    // The device's real work still syncs.
    sam.case_with_meeting("Maria")?;
    let report = sam.sync().await?;
    ensure!(report.refused.is_empty(), "{report:?}");

    // Enrolment attempts from one address: past the limit, refused without reading them; the
    // audit log gets a record at the 1st, 2nd, 4th... failure and refusal, not one per attempt.
    let before = server
        .admin(AdminRequest::Audit {
            case: None,
            verify: false,
        })
        .await?
        .as_array()
        .map_or(0, Vec::len);
    let attempts = polyphony_server::limits::MAX_ENROLMENTS_PER_WINDOW as usize + 30;
    let mut refused_for_rate = 0;
    let dir = tempfile::tempdir()?;
    let mut p = Profile::open(&dir.path().join("p"), PASSPHRASE)?;
    for _ in 0..attempts {
        let code = EnrolmentCode::new(server.handle().ca_fingerprint()).to_string();
        if let Err(e) = p.enrol(&server.addr().to_string(), &code, "laptop").await {
            if e.to_string().contains("too many enrolment attempts") {
                refused_for_rate += 1;
            }
        }
    }
    let after = server
        .admin(AdminRequest::Audit {
            case: None,
            verify: false,
        })
        .await?
        .as_array()
        .map_or(0, Vec::len);
    ensure!(
        refused_for_rate >= 30,
        "{refused_for_rate} refused for their rate"
    );
    // Failures and rate refusals are each audited at counts 1, 2, 4, 8...: a handful of
    // records, each with the count so far.
    ensure!(
        (2..=16).contains(&(after - before)),
        "{attempts} bad enrolment attempts grew the audit log by {} records",
        after - before
    );
    report_figures(
        "per_device_limits",
        &[
            ("new_cases_tried", total as u64),
            ("new_cases_refused_busy", busy as u64),
            ("enrolment_attempts", attempts as u64),
            ("enrolments_refused_for_rate", refused_for_rate as u64),
            ("audit_records_added", (after - before) as u64),
        ],
    );
    Ok(())
}

/// A note withheld from the person's copy must be in the audit log: while the log refuses
/// records, the second practitioner's confirmation is refused (nothing of it stored, the note
/// still in the person's copy on the server), and once the log takes records again the same
/// change is stored and audited once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withholding_the_audit_log_cannot_record_is_not_stored() -> Result<()> {
    use polyphony_core::model::TeamNoteKind;
    use polyphony_e2e::{DiskFault, DiskSwitch, FaultyStore};
    let switch = DiskSwitch::default();
    let control = switch.clone();
    let server =
        TestServer::start_with_store(move |store| FaultyStore::wrap(store, control)).await?;
    server.team("North").await?;
    for p in ["Sam", "Kit"] {
        server.practitioner(p, "North").await?;
    }
    let mut sam = server.device("Sam").await?;
    let mut kit = server.device("Kit").await?;
    let (case, _) = sam.case_with_meeting("Person W")?;
    let note = sam.profile.edit(case, |d| {
        d.add_team_note(TeamNoteKind::Safeguarding, "Concern")
    })?;
    sam.profile
        .edit(case, |d| d.request_withholding(&note, "Reason"))?;
    sam.sync().await?;
    kit.sync().await?;
    kit.profile.edit(case, |d| d.confirm_withholding(&note))?;

    switch.set(DiskFault::AuditFails);
    let report = kit.sync().await?;
    ensure!(
        report
            .refused
            .iter()
            .any(|(c, why)| *c == case.to_string() && why.contains("audit log")),
        "{report:?}"
    );
    switch.set(DiskFault::None);
    sam.sync().await?;
    ensure!(
        !sam.peek(case)?.team_notes[0].withheld_from_person(),
        "the server stored a withholding its audit log did not record"
    );
    let report = kit.sync().await?;
    ensure!(report.refused.is_empty(), "{report:?}");
    sam.sync().await?;
    ensure!(sam.peek(case)?.team_notes[0].withheld_from_person());
    let log = server
        .admin(AdminRequest::Audit {
            case: Some(case),
            verify: false,
        })
        .await?;
    let lines = log
        .as_array()
        .ok_or_else(|| anyhow!("audit is a list"))?
        .iter()
        .filter(|r| {
            r["event"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("withheld from the person's copy"))
        })
        .count();
    ensure!(lines == 1, "{lines} audit lines for one withholding");
    Ok(())
}
