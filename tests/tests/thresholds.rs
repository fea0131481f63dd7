//! Issue 13, deliverable 3: every limit and periodic action in the code, crossed.
//!
//! The server lost acknowledged changes at its 32nd chunk for as long as no test wrote a 33rd chunk
//! to a case and read the case back from disk. So each test here goes *past* one threshold (a
//! compaction, a cache bound, an idle timer, an exchange bound, a frame or field limit, group
//! commit) and then, wherever the threshold touches storage, reopens the store from disk and checks
//! that every change a device was told is saved is still there. The table in `docs/RELIABILITY.md`
//! ("Every threshold crossed") names the test for each threshold, these and the older ones.
//!
//! Each test prints a `FIGURES thresholds_<name> ...` line (run with `--nocapture`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use automerge::sync::SyncDoc;
use automerge::{AutoCommit, ChangeHash, ReadDoc, ROOT};
use polyphony_core::model::{
    self, validate_document, Author, CaseDoc, ModelError, NewCase, NoteKind, PersonField, MAX_LONG,
    MAX_SHORT,
};
use polyphony_core::net::{FramedStream, SessionHost};
use polyphony_core::profile::{Enrolment, Profile, COMPACT_AFTER};
use polyphony_core::store::{ChunkLog, ChunkSeq, KeySource, SledStore, Store, StoreError};
use polyphony_core::sync::{
    Action, ClientSession, DocSet, ErrorCode, Frame, FrameDecoder, FrameError, Hello,
    DEFAULT_MAX_FRAME, MAX_MESSAGES_PER_CASE, PROTOCOL_VERSION,
};
use polyphony_core::{CaseId, EntryId};
use polyphony_e2e::{connect_as, report_figures, TestDevice, TestServer, PASSPHRASE};
use polyphony_server::driver::GroupCommitDriver;
use polyphony_server::storage::{GroupCommit, ServerStorage};
use polyphony_server::ServerConfig;

// ---- Set-up shared by the tests ----------------------------------------------------------------

/// A server (configured by `adjust`) with one team, North, and these practitioners in it.
async fn north(
    adjust: impl FnOnce(&mut ServerConfig),
    practitioners: &[&str],
) -> Result<TestServer> {
    let server = TestServer::start_with(adjust).await?;
    server.team("North").await?;
    for p in practitioners {
        server.practitioner(p, "North").await?;
    }
    Ok(server)
}

/// Close a device's store and open it again from disk, as after the laptop restarts.
fn reopen(device: &mut TestDevice) -> Result<()> {
    let home = device.home();
    // Swap in a profile over a throwaway store so the sled store is dropped (and unlocked) first.
    let placeholder =
        Profile::from_store(&home, Arc::new(polyphony_core::store::MemoryStore::new()))?;
    drop(std::mem::replace(&mut device.profile, placeholder));
    device.profile = Profile::open(&home, PASSPHRASE).context("reopening the device's store")?;
    Ok(())
}

/// A meeting's notes as a device holds them.
fn notes_of(device: &mut TestDevice, case: CaseId, meeting: EntryId) -> Result<String> {
    let view = device.peek(case)?;
    view.meetings
        .iter()
        .find(|m| m.meta.id == meeting)
        .map(|m| m.notes.clone())
        .ok_or_else(|| anyhow!("meeting {meeting} of case {case} is missing"))
}

/// Every note in `notes` is in the meeting, as `device` holds it.
fn ensure_notes(
    device: &mut TestDevice,
    case: CaseId,
    meeting: EntryId,
    notes: &[String],
    who: &str,
) -> Result<()> {
    let held = notes_of(device, case, meeting)?;
    let missing: Vec<&String> = notes
        .iter()
        .filter(|n| !held.contains(n.as_str()))
        .collect();
    ensure!(
        missing.is_empty(),
        "{who}: {} of {} notes missing from case {case}, first {:?}",
        missing.len(),
        notes.len(),
        missing.first()
    );
    Ok(())
}

/// Every head in `acked` (per case) is in `device`'s copy; returns how many were checked.
fn ensure_acknowledged(
    device: &mut TestDevice,
    acked: &BTreeMap<CaseId, Vec<ChangeHash>>,
) -> Result<u64> {
    let mut checked = 0;
    for (case, heads) in acked {
        let doc = device.profile.document(*case)?;
        for h in heads {
            ensure!(
                doc.get_change_by_hash(h).is_some(),
                "acknowledged change {h} of case {case} is missing"
            );
            checked += 1;
        }
    }
    Ok(checked)
}

/// How many chunks a case's log holds in a store.
fn log_len(store: &dyn Store, case: &CaseId) -> Result<usize> {
    Ok(store.load_chunks(case)?.map_or(0, |l| l.len()))
}

// ---- Compaction on the device, of chunks received from the server ------------------------------

/// `COMPACT_AFTER` in client-core's profile/books.rs counts chunks a device *receives* from the server too
/// (the sync host's `Persist` calls the same `appended`). A reader that syncs after each of a
/// writer's notes stores one received chunk per sync: 40 syncs cross its compaction; its store is
/// reopened from disk half-way and at the end, and must hold every note.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_receiving_a_case_past_its_compaction_reopens_with_every_change() -> Result<()> {
    const ROUNDS: usize = COMPACT_AFTER + 8;
    let server = north(|_| {}, &["Sam", "Kit"]).await?;
    let mut writer = server.device("Sam").await?;
    let mut reader = server.device("Kit").await?;
    let (case, meeting) = writer.case_with_meeting("Jo Bloggs")?;
    writer.sync().await?;
    reader.sync().await?;

    let (mut notes, mut compactions, mut longest, mut reopens) = (Vec::new(), 0u64, 0, 0u64);
    for i in 0..ROUNDS {
        let text = format!("Note {i:03} from the meeting. ");
        writer.note(case, meeting, &text)?;
        writer.sync().await?;
        let report = reader.sync().await?;
        ensure!(report.refused.is_empty(), "round {i}: {report:?}");
        notes.push(text);
        let log = log_len(&**reader.profile.store(), &case)?;
        if log < longest {
            compactions += 1;
            // Straight after the reader's compaction: reopen from disk, then go on syncing.
            reopen(&mut reader)?;
            reopens += 1;
            ensure_notes(
                &mut reader,
                case,
                meeting,
                &notes,
                "reader after compaction",
            )?;
        }
        longest = log_len(&**reader.profile.store(), &case)?;
    }
    ensure!(
        compactions >= 1,
        "the reader's log never compacted (it holds {longest} chunks)"
    );
    reopen(&mut reader)?;
    reopen(&mut writer)?;
    ensure_notes(&mut reader, case, meeting, &notes, "reader reopened")?;
    ensure_notes(&mut writer, case, meeting, &notes, "writer reopened")?;
    ensure!(
        reader.profile.document(case)?.get_heads() == writer.profile.document(case)?.get_heads(),
        "the reopened reader and writer hold different documents"
    );
    ensure!(
        reader.profile.unsynced(case)? == 0,
        "the reader counts unsynced changes"
    );
    report_figures(
        "thresholds_device_receive_compaction",
        &[
            ("received_chunks", ROUNDS as u64 + 1),
            ("compact_after", COMPACT_AFTER as u64),
            ("compactions", compactions),
            ("reopens_from_disk", reopens + 1),
            ("notes_checked", notes.len() as u64 * 2),
        ],
    );
    Ok(())
}

/// Two writers on one device store, as the app has (the profile saving edits, the background sync
/// saving what arrives from the server). The profile compacts its 32nd chunk; a chunk the other
/// writer stored in between must survive that compaction and a reopen from disk.
#[test]
fn a_profile_compaction_keeps_a_chunk_another_writer_stored_in_between() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let home = dir.path().join("home");
    let key = dir.path().join("key");
    KeySource::create_key_file(&key)?;
    let store: Arc<dyn Store> = Arc::new(SledStore::open(
        &home.join("store"),
        KeySource::KeyFile(key.clone()),
    )?);
    let mut profile = offline_profile(&home, store.clone())?;
    let case = profile.create_case(
        NewCase {
            name: "Jo Bloggs".into(),
            ..Default::default()
        },
        None,
    )?;
    let meeting = profile.edit(case, |d| {
        d.add_meeting(model::NewMeeting {
            at: model::parse_datetime("at", "2026-03-14T10:30")?,
            place: model::Place::Home,
            attendees: vec![model::Participant::Person],
        })
    })?;
    // The other writer: a colleague's change, stored straight into the log (as the app's
    // background sync stores a change pushed from the server). The profile's copy in memory does
    // not have it.
    let mut other = CaseDoc::from_automerge(
        profile.document(case)?,
        Some(Author {
            practitioner: polyphony_core::PractitionerId::random(),
            practitioner_name: "Kit".into(),
            device: polyphony_core::DeviceId::random(),
        }),
    )?;
    let before = other.heads();
    other.append_text(&meeting, NoteKind::Notes, "Kit's note, from the server. ")?;
    let colleague = other.automerge_mut().save_after(&before);
    store.append_chunk(&case, &colleague)?;
    store.flush()?;
    let kit_heads = other.heads();

    for i in 0..COMPACT_AFTER + 2 {
        profile.edit(case, |d| {
            d.set_person(PersonField::Pronouns, Some(&format!("p{i}")))
        })?;
    }
    let log = log_len(&*store, &case)?;
    ensure!(
        log < COMPACT_AFTER,
        "the profile's log never compacted ({log} chunks)"
    );
    drop(profile);
    drop(store);
    let store: Arc<dyn Store> = Arc::new(SledStore::open(
        &home.join("store"),
        KeySource::KeyFile(key.clone()),
    )?);
    let mut again = offline_profile(&home, store)?;
    let doc = again.document(case)?;
    for h in &kit_heads {
        ensure!(
            doc.get_change_by_hash(h).is_some(),
            "the profile's compaction dropped the change the other writer stored"
        );
    }
    ensure!(again
        .lookup(case)?
        .person
        .pronouns
        .is_some_and(|p| p == format!("p{}", COMPACT_AFTER + 1)));
    Ok(())
}

/// A profile enrolled on paper over `store` (no server needed for offline work).
fn offline_profile(home: &std::path::Path, store: Arc<dyn Store>) -> Result<Profile> {
    if store.get_meta("profile", "enrolment")?.is_none() {
        let enrolment = Enrolment {
            server: "127.0.0.1:1".into(),
            servers: Vec::new(),
            device_name: "test".into(),
            practitioner: polyphony_core::PractitionerId::random(),
            practitioner_name: "Sam".into(),
            teams: vec![polyphony_core::sync::TeamInfo {
                id: polyphony_core::TeamId::random(),
                name: "North".into(),
            }],
            ca: String::new(),
            certificate: String::new(),
            key_pem: String::new(),
            enrolled_at: "2026-01-01T00:00:00Z".into(),
        };
        store.put_meta("profile", "enrolment", &serde_json::to_vec(&enrolment)?)?;
        store.flush()?;
    }
    Ok(Profile::from_store(home, store)?)
}

// ---- The server's case cache at its floor --------------------------------------------------------

/// `cache_cases` is floored at 16 (`ServerStorage::new`), and eviction drops to 90% of it. Three
/// devices sync 48 cases at once, four rounds, so cases are evicted and reopened from disk between
/// (and during) rounds; the cache never holds more than the bound once the syncs end. After a
/// restart a fresh device must receive every acknowledged change and every note.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_cache_at_its_floor_evicts_and_reopens_cases_and_a_restart_keeps_everything(
) -> Result<()> {
    const FLOOR: usize = 16;
    const PER_DEVICE: usize = 16;
    const ROUNDS: usize = 4;
    let mut server = north(|c| c.cache_cases = 1, &["Sam", "Kit", "Ana", "Lee"]).await?;
    let mut devices = [
        server.device("Sam").await?,
        server.device("Kit").await?,
        server.device("Ana").await?,
    ];
    let mut cases = Vec::new();
    for (d, device) in devices.iter_mut().enumerate() {
        for i in 0..PER_DEVICE {
            cases.push(device.case_with_meeting(&format!("Person {d}-{i}"))?);
        }
    }
    let mut notes: BTreeMap<CaseId, Vec<String>> = BTreeMap::new();
    let mut max_cached = 0;
    for round in 0..ROUNDS {
        if round > 0 {
            // Every device writes to every case it holds (its own, and the others' since round 0).
            for (d, device) in devices.iter_mut().enumerate() {
                for (case, meeting) in &cases {
                    if device.profile.case_ids()?.contains(case) {
                        let text = format!("Round {round} note by device {d}. ");
                        device.note(*case, *meeting, &text)?;
                        notes.entry(*case).or_default().push(text);
                    }
                }
            }
        }
        let [a, b, c] = &mut devices;
        let (ra, rb, rc) = tokio::join!(a.sync(), b.sync(), c.sync());
        for r in [ra?, rb?, rc?] {
            ensure!(r.refused.is_empty(), "round {round}: {r:?}");
        }
        let cached = server.handle().cached_cases();
        max_cached = max_cached.max(cached);
        ensure!(
            cached <= FLOOR,
            "round {round}: {cached} cases open with the cache at its floor of {FLOOR}"
        );
    }
    // One more sync each, so every device has every other's last round acknowledged.
    let mut acked: BTreeMap<CaseId, Vec<ChangeHash>> = BTreeMap::new();
    for device in devices.iter_mut() {
        device.sync().await?;
        for (case, _) in &cases {
            acked
                .entry(*case)
                .or_default()
                .extend(device.profile.acknowledged_heads(*case)?);
        }
    }
    ensure!(
        cases.len() > FLOOR * 2,
        "the test holds more cases than the cache"
    );
    server.restart().await?;
    let mut fresh = server.device("Lee").await?;
    let report = fresh.sync().await?;
    ensure!(report.refused.is_empty(), "{report:?}");
    let checked = ensure_acknowledged(&mut fresh, &acked)?;
    let mut notes_checked = 0;
    for (case, meeting) in &cases {
        let expected = notes.get(case).cloned().unwrap_or_default();
        ensure_notes(
            &mut fresh,
            *case,
            *meeting,
            &expected,
            "fresh device after restart",
        )?;
        notes_checked += expected.len() as u64;
    }
    report_figures(
        "thresholds_cache_floor",
        &[
            ("cache_cases_floor", FLOOR as u64),
            ("cases", cases.len() as u64),
            ("devices_syncing_at_once", 3),
            ("rounds", ROUNDS as u64),
            ("most_cases_open_after_a_round", max_cached as u64),
            ("acknowledged_heads_checked_after_restart", checked),
            ("notes_checked_after_restart", notes_checked),
        ],
    );
    Ok(())
}

/// Below the network: a case a session holds is never evicted (a second copy in memory would
/// compact away the first one's changes), the least recently used idle cases go first, and the
/// cache stays within its floor of 16. Watched through `Weak` references, so the test itself holds
/// nothing but the one case. Then every case reopens from the sled store on disk.
#[test]
fn eviction_keeps_a_held_case_and_drops_the_least_recently_used_down_to_the_floor() -> Result<()> {
    const FLOOR: usize = 16;
    const CASES: usize = 40;
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("key");
    KeySource::create_key_file(&key)?;
    let open = || -> Result<Arc<dyn Store>> {
        Ok(Arc::new(SledStore::open(
            &dir.path().join("db"),
            KeySource::KeyFile(key.clone()),
        )?))
    };
    let store = open()?;
    let mut ids = Vec::new();
    for i in 0..CASES {
        let case = CaseId::random();
        let mut doc = AutoCommit::new();
        automerge::transaction::Transactable::put(&mut doc, ROOT, "n", i as i64)?;
        store.append_chunk(&case, &doc.save())?;
        ids.push(case);
    }
    store.flush()?;
    let storage = ServerStorage::new(store, 1);
    let held = storage.case(&ids[0])?.expect("stored");
    let mut watched: Vec<Weak<Mutex<polyphony_server::storage::ServerCase>>> = Vec::new();
    let mut most = 0;
    for id in &ids[1..] {
        let c = storage.case(id)?.expect("stored");
        watched.push(Arc::downgrade(&c));
        drop(c);
        most = most.max(storage.cached());
        ensure!(storage.cached() <= FLOOR, "{} cases open", storage.cached());
    }
    ensure!(
        Arc::ptr_eq(&storage.case(&ids[0])?.expect("stored"), &held),
        "the held case was evicted and opened a second time"
    );
    let evicted = watched.iter().filter(|w| w.upgrade().is_none()).count();
    ensure!(evicted >= CASES - FLOOR, "only {evicted} cases evicted");
    // The most recently used survive: the last loaded case is still the one in the cache.
    ensure!(
        watched.last().and_then(Weak::upgrade).is_some(),
        "the most recently used case was evicted"
    );
    ensure!(
        watched[0].upgrade().is_none(),
        "the least recently used case was kept"
    );
    drop(held);
    drop(storage);
    let store = open()?;
    for (i, id) in ids.iter().enumerate() {
        let bytes: Vec<u8> = store
            .load_chunks(id)?
            .ok_or_else(|| anyhow!("case {i} is gone from disk"))?
            .into_iter()
            .flat_map(|(_, c)| c)
            .collect();
        let doc = AutoCommit::load(&bytes)?;
        ensure!(doc.get(ROOT, "n")?.is_some(), "case {i} reloaded empty");
    }
    report_figures(
        "thresholds_eviction_unit",
        &[
            ("cases", CASES as u64),
            ("floor", FLOOR as u64),
            ("most_open", most as u64),
            ("evicted", evicted as u64),
        ],
    );
    Ok(())
}

// ---- Idle cases closed and reopened from disk ----------------------------------------------------

/// `cache_idle_secs` (swept every `clamp(idle / 4, 1 s, 30 s)` in listener.rs): with it at 1 s the
/// server closes a case between bursts of syncs, and each burst reopens it from disk. 5 bursts of 9
/// syncs put 45 chunks in one case, so its compaction falls after a reopen. After a restart a fresh
/// device must hold every note.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_cases_are_closed_between_syncs_reopen_from_disk_and_a_restart_keeps_everything(
) -> Result<()> {
    const BURSTS: usize = 5;
    const PER_BURST: usize = 9;
    let mut server = north(|c| c.cache_idle_secs = 1, &["Sam", "Kit", "Lee"]).await?;
    let mut writer = server.device("Sam").await?;
    let mut colleague = server.device("Kit").await?;
    let mut checked_between = 0;
    let (case, meeting) = writer.case_with_meeting("Jo Bloggs")?;
    let (other, other_meeting) = writer.case_with_meeting("Al Smith")?;
    let (mut notes, mut other_notes, mut closes) = (Vec::new(), Vec::new(), 0u64);
    let mut open_after_bursts = 0u64;
    for burst in 0..BURSTS {
        for i in 0..PER_BURST {
            let text = format!("Burst {burst} note {i}. ");
            writer.note(case, meeting, &text)?;
            let report = writer.sync().await?;
            ensure!(
                report.refused.is_empty() && report.unsynced_changes == 0,
                "{report:?}"
            );
            notes.push(text);
        }
        let text = format!("Burst {burst} other note. ");
        writer.note(other, other_meeting, &text)?;
        writer.sync().await?;
        other_notes.push(text);
        open_after_bursts += server.handle().cached_cases() as u64;
        // Wait for the sweep to close both cases (idle 1 s, swept every second).
        let mut waited = 0;
        while server.handle().cached_cases() > 0 {
            ensure!(waited < 50, "idle cases were not closed within 5 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
            waited += 1;
        }
        closes += 1;
        // Both cases are closed: a colleague now receives them from disk alone, before the
        // writer syncs again (the writer's next sync would re-send anything the disk lost).
        let acked_now = BTreeMap::from([
            (case, writer.profile.acknowledged_heads(case)?),
            (other, writer.profile.acknowledged_heads(other)?),
        ]);
        let report = colleague.sync().await?;
        ensure!(report.refused.is_empty(), "{report:?}");
        checked_between += ensure_acknowledged(&mut colleague, &acked_now)
            .with_context(|| format!("burst {burst}, the cases reopened from disk"))?;
        let who = format!("colleague after burst {burst}");
        ensure_notes(&mut colleague, case, meeting, &notes, &who)?;
    }
    ensure!(
        open_after_bursts > 0,
        "no case was ever seen open: nothing was closed"
    );
    ensure!(
        notes.len() > 32,
        "the case crossed the server's compaction (every 32 chunks)"
    );
    let acked = BTreeMap::from([
        (case, writer.profile.acknowledged_heads(case)?),
        (other, writer.profile.acknowledged_heads(other)?),
    ]);
    server.restart().await?;
    let mut reader = server.device("Lee").await?;
    reader.sync().await?;
    let checked = ensure_acknowledged(&mut reader, &acked)?;
    ensure_notes(
        &mut reader,
        case,
        meeting,
        &notes,
        "fresh device after restart",
    )?;
    ensure_notes(
        &mut reader,
        other,
        other_meeting,
        &other_notes,
        "fresh device",
    )?;
    report_figures(
        "thresholds_idle_close",
        &[
            ("cache_idle_secs", 1),
            ("idle_closes_waited_for", closes),
            (
                "acknowledged_heads_checked_from_disk_between",
                checked_between,
            ),
            ("chunks_in_the_busy_case", notes.len() as u64 + 1),
            ("acknowledged_heads_checked_after_restart", checked),
            (
                "notes_checked_after_restart",
                (notes.len() + other_notes.len()) as u64,
            ),
        ],
    );
    Ok(())
}

// ---- A raw session, for the bounds the device's own code never crosses ---------------------------

/// A sync session opened by hand as an enrolled device: hello sent, welcome read.
struct RawSession {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    stream: FramedStream,
}

impl RawSession {
    async fn open(server: &TestServer, e: &Enrolment) -> Result<RawSession> {
        Self::open_at(server.addr(), e).await
    }

    async fn open_at(addr: std::net::SocketAddr, e: &Enrolment) -> Result<RawSession> {
        let (endpoint, conn) = connect_as(addr, e).await?;
        let (send, recv) = conn.open_bi().await?;
        let mut stream = FramedStream::new(send, recv);
        stream
            .write_frames(&[Frame::Hello(Hello {
                version: PROTOCOL_VERSION,
                software: "thresholds test".into(),
                live: false,
                features: Vec::new(),
            })])
            .await?;
        match stream.read_frame().await? {
            Some(Frame::Welcome(_)) => {}
            other => return Err(anyhow!("expected welcome, got {other:?}")),
        }
        Ok(RawSession {
            endpoint,
            conn,
            stream,
        })
    }

    /// Send raw bytes, then read until the server says `Saved` or refuses the case.
    async fn exchange(&mut self, bytes: &[u8]) -> Result<Frame> {
        self.stream.send.write_all(bytes).await?;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(20), self.stream.read_frame())
                .await
                .context("no answer from the server")??
                .ok_or_else(|| anyhow!("the server ended the stream"))?;
            match frame {
                Frame::Sync { .. } => continue,
                f => return Ok(f),
            }
        }
    }

    async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        self.endpoint.wait_idle().await;
    }
}

/// The server's own bound on exchanges without progress (`2 * MAX_MESSAGES_PER_CASE`, server session/protocol.rs):
/// an honest device never gets near it, because the device stops at `MAX_MESSAGES_PER_CASE`. A
/// hostile one sends the same no-news message again and again: exactly 256 are answered `Saved`,
/// the 257th is refused, and the session still serves other cases. After a restart the case is
/// as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_exchange_bound_refuses_the_message_past_it_and_harms_nothing() -> Result<()> {
    let bound = 2 * MAX_MESSAGES_PER_CASE;
    let mut server = north(|_| {}, &["Sam", "Kit"]).await?;
    let mut device = server.device("Sam").await?;
    let (case, meeting) = device.case_with_meeting("Jo Bloggs")?;
    let (other, _) = device.case_with_meeting("Al Smith")?;
    device.note(case, meeting, "Before the flood. ")?;
    device.sync().await?;
    let heads = device.profile.document(case)?.get_heads();

    let e = device.profile.enrolment().expect("enrolled").clone();
    let mut raw = RawSession::open(&server, &e).await?;
    // The first message a fresh sync state sends: heads and a Bloom filter, no changes.
    let mut doc = device.profile.document(case)?;
    let mut state = automerge::sync::State::new();
    let message = doc
        .sync()
        .generate_sync_message(&mut state)
        .ok_or_else(|| anyhow!("no sync message"))?
        .encode();
    let frame = Frame::Sync { case, message }.to_bytes();
    for i in 1..=bound {
        match raw.exchange(&frame).await? {
            Frame::Saved { .. } => {}
            f => {
                return Err(anyhow!(
                    "message {i} of {bound} was not answered Saved: {f:?}"
                ))
            }
        }
    }
    match raw.exchange(&frame).await? {
        Frame::CaseRefused { case: c, refusal } if c == case => ensure!(
            refusal.message.contains("did not settle"),
            "{}",
            refusal.message
        ),
        f => {
            return Err(anyhow!(
                "message {} past the bound was answered {f:?}",
                bound + 1
            ))
        }
    }
    // The same session still serves another case.
    let mut other_doc = device.profile.document(other)?;
    let mut other_state = automerge::sync::State::new();
    let other_message = other_doc
        .sync()
        .generate_sync_message(&mut other_state)
        .ok_or_else(|| anyhow!("no sync message"))?
        .encode();
    let other_frame = Frame::Sync {
        case: other,
        message: other_message,
    }
    .to_bytes();
    ensure!(
        matches!(raw.exchange(&other_frame).await?, Frame::Saved { .. }),
        "the session stopped serving other cases"
    );
    raw.close().await;

    server.restart().await?;
    let report = device.sync().await?;
    ensure!(
        report.refused.is_empty(),
        "a new session syncs the case again: {report:?}"
    );
    let mut reader = server.device("Kit").await?;
    reader.sync().await?;
    ensure!(
        reader.profile.document(case)?.get_heads() == heads,
        "the case changed on the server"
    );
    ensure_notes(
        &mut reader,
        case,
        meeting,
        &["Before the flood. ".into()],
        "reader",
    )?;
    report_figures(
        "thresholds_server_exchange_bound",
        &[
            ("bound", bound as u64),
            ("answered_saved", bound as u64),
            ("refused_at", bound as u64 + 1),
        ],
    );
    Ok(())
}

// ---- The frame limit -------------------------------------------------------------------------

/// The frame limit (`max_frame`, checked by `FrameDecoder` from the length prefix alone): a frame
/// whose body is exactly the limit is read (its garbage sync message refused for that case, the
/// session going on); one byte more closes the connection with `Oversized`. The stored case is
/// unharmed after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_at_the_limit_is_read_one_byte_over_closes_the_connection_and_harms_nothing(
) -> Result<()> {
    const MAX: usize = 64 << 10;
    let mut server = north(|c| c.max_frame = MAX, &["Sam", "Kit"]).await?;
    let mut device = server.device("Sam").await?;
    let (case, meeting) = device.case_with_meeting("Jo Bloggs")?;
    device.note(case, meeting, "Kept whatever arrives. ")?;
    device.sync().await?;
    let heads = device.profile.document(case)?.get_heads();
    let e = device.profile.enrolment().expect("enrolled").clone();

    let overhead = Frame::Sync {
        case,
        message: vec![],
    }
    .to_bytes()
    .len()
        - 4;
    let frame_with_body = |body: usize| {
        Frame::Sync {
            case,
            message: vec![0x5a; body - overhead],
        }
        .to_bytes()
    };
    let at_limit = frame_with_body(MAX);
    ensure!(at_limit.len() == 4 + MAX, "a body of exactly {MAX} bytes");
    let mut raw = RawSession::open(&server, &e).await?;
    match raw.exchange(&at_limit).await? {
        Frame::CaseRefused { case: c, refusal } if c == case => ensure!(
            refusal.code == ErrorCode::InvalidChange,
            "the frame was read and its message refused: {refusal:?}"
        ),
        f => return Err(anyhow!("a frame at the limit was answered {f:?}")),
    }
    // One byte over: the connection is closed, with the reason.
    let over = frame_with_body(MAX + 1);
    let answer = raw.exchange(&over).await;
    ensure!(
        answer.is_err(),
        "a frame over the limit was answered: {answer:?}"
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.conn.closed()).await;
    let code = match raw.conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c)) => {
            ErrorCode::from_u16(c.error_code.into_inner() as u16)
        }
        other => return Err(anyhow!("closed without a reason: {other:?}")),
    };
    ensure!(code == Some(ErrorCode::Oversized), "closed with {code:?}");
    raw.endpoint.close(0u32.into(), b"");

    server.restart().await?;
    let mut reader = server.device("Kit").await?;
    reader.sync().await?;
    ensure!(
        reader.profile.document(case)?.get_heads() == heads,
        "the case changed"
    );
    ensure_notes(
        &mut reader,
        case,
        meeting,
        &["Kept whatever arrives. ".into()],
        "reader",
    )?;
    ensure!(
        device.sync().await?.refused.is_empty(),
        "the device syncs again"
    );
    report_figures(
        "thresholds_frame_limit",
        &[
            ("max_frame", MAX as u64),
            ("read_at", MAX as u64),
            ("closed_at", MAX as u64 + 1),
        ],
    );
    Ok(())
}

/// The decoder's boundary at the default limit (32 MiB): a body of exactly `DEFAULT_MAX_FRAME`
/// decodes; one byte more is refused from the 4-byte prefix alone, before any of the body arrives.
#[test]
fn the_default_frame_limit_reads_exactly_the_limit_and_refuses_one_byte_more_unbuffered() {
    let case = CaseId::random();
    let overhead = Frame::Sync {
        case,
        message: vec![],
    }
    .to_bytes()
    .len()
        - 4;
    let frame = Frame::Sync {
        case,
        message: vec![7; DEFAULT_MAX_FRAME - overhead],
    };
    let bytes = frame.to_bytes();
    assert_eq!(bytes.len(), 4 + DEFAULT_MAX_FRAME);
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    dec.push(&bytes);
    assert_eq!(dec.next_frame(), Ok(Some(frame)));
    assert_eq!(dec.pending(), 0);

    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    dec.push(&((DEFAULT_MAX_FRAME + 1) as u32).to_be_bytes());
    assert_eq!(
        dec.next_frame(),
        Err(FrameError::Oversized {
            len: DEFAULT_MAX_FRAME + 1,
            max: DEFAULT_MAX_FRAME
        }),
        "refused from the prefix, without waiting for the body"
    );
}

// ---- Field limits ------------------------------------------------------------------------------

fn sam() -> Author {
    Author {
        practitioner: polyphony_core::PractitionerId::random(),
        practitioner_name: "Sam".into(),
        device: polyphony_core::DeviceId::random(),
    }
}

fn case_with_meeting() -> Result<(CaseDoc, EntryId)> {
    let mut doc = CaseDoc::create(
        CaseId::random(),
        polyphony_core::TeamId::random(),
        NewCase {
            name: "Jo Bloggs".into(),
            ..Default::default()
        },
        sam(),
    )?;
    let meeting = doc.add_meeting(model::NewMeeting {
        at: model::parse_datetime("at", "2026-03-14T10:30")?,
        place: model::Place::Home,
        attendees: vec![model::Participant::Person],
    })?;
    Ok((doc, meeting))
}

/// `MAX_SHORT` (500 characters) and `MAX_LONG` (200,000) in model/mod.rs, enforced twice: by the
/// editing API (doc.rs, what a device lets a user type) and by `validate_document` (schema.rs,
/// what the server lets a device store). At the limit both accept, also in a script with several
/// bytes a character (the two must count the same units); one character over, the API refuses
/// without leaving a change and validation refuses a document written past it by hand. An
/// at-limit case saves and loads back (loading validates).
#[test]
fn field_limits_accept_exactly_the_limit_and_refuse_one_character_more() -> Result<()> {
    for ch in ['a', 'é', '😀'] {
        let (mut doc, meeting) = case_with_meeting()?;
        let short: String = std::iter::repeat_n(ch, MAX_SHORT).collect();
        doc.set_person(PersonField::Pronouns, Some(&short))
            .with_context(|| format!("{MAX_SHORT} × {ch:?} in a short field"))?;
        let long: String = std::iter::repeat_n(ch, MAX_LONG).collect();
        doc.append_text(&meeting, NoteKind::Notes, &long)
            .with_context(|| format!("{MAX_LONG} × {ch:?} in a note"))?;
        validate_document(doc.automerge())
            .map_err(|e| anyhow!("{ch:?}: a document at every limit failed validation: {e}"))?;
        let reloaded = CaseDoc::load(&doc.save(), None)
            .map_err(|e| anyhow!("{ch:?}: an at-limit case did not load back: {e}"))?;
        let view = reloaded.view();
        ensure!(view.person.pronouns.as_deref() == Some(short.as_str()));
        ensure!(view.meetings[0].notes.chars().count() == MAX_LONG);

        // One over, through the API: refused, nothing changed.
        let heads = doc.heads();
        let over_short: String = std::iter::repeat_n(ch, MAX_SHORT + 1).collect();
        ensure!(matches!(
            doc.set_person(PersonField::Pronouns, Some(&over_short)),
            Err(ModelError::TooLong { len, max: MAX_SHORT, .. }) if len == MAX_SHORT + 1
        ));
        ensure!(matches!(
            doc.append_text(&meeting, NoteKind::Notes, &ch.to_string()),
            Err(ModelError::TooLong { max: MAX_LONG, .. })
        ));
        ensure!(doc.heads() == heads, "a refused write left a change behind");

        // One over, written straight into the document: validation refuses it.
        let mut raw = doc.automerge().clone();
        let person = raw.get(ROOT, "person")?.ok_or_else(|| anyhow!("person"))?.1;
        automerge::transaction::Transactable::put(&mut raw, &person, "pronouns", over_short)?;
        raw.commit();
        ensure!(
            validate_document(&raw).is_err(),
            "{ch:?}: a short field one over its limit validated"
        );
        let mut raw = doc.automerge().clone();
        let meetings = raw
            .get(ROOT, "meetings")?
            .ok_or_else(|| anyhow!("meetings"))?
            .1;
        let entry = raw
            .get(&meetings, meeting.to_string())?
            .ok_or_else(|| anyhow!("meeting"))?
            .1;
        let notes = raw.get(&entry, "notes")?.ok_or_else(|| anyhow!("notes"))?.1;
        automerge::transaction::Transactable::splice_text(&mut raw, &notes, 0, 0, &ch.to_string())?;
        raw.commit();
        ensure!(
            validate_document(&raw).is_err(),
            "{ch:?}: a note one character over its limit validated"
        );
    }
    Ok(())
}

// ---- Group commit ------------------------------------------------------------------------------

/// A store that records, for every change the server writes, which write carried it, and how far
/// the flushes have made those writes durable. Flushes are slowed (20 ms) so writes pile up behind
/// each one, as they do on a busy server's disk.
struct FlushWatch {
    inner: Arc<dyn Store>,
    tracked: Mutex<Tracked>,
    durable: AtomicUsize,
    flushes: AtomicU64,
}

#[derive(Default)]
struct Tracked {
    writes: usize,
    docs: HashMap<CaseId, AutoCommit>,
    written_by: HashMap<ChangeHash, usize>,
}

impl FlushWatch {
    fn new(inner: Arc<dyn Store>) -> Self {
        FlushWatch {
            inner,
            tracked: Mutex::new(Tracked::default()),
            durable: AtomicUsize::new(0),
            flushes: AtomicU64::new(0),
        }
    }

    /// Why acknowledging these heads now would be wrong, if it would.
    fn not_yet_durable(&self, case: &CaseId, heads: &[ChangeHash]) -> Option<String> {
        let t = self.tracked.lock().expect("lock");
        let durable = self.durable.load(Ordering::SeqCst);
        for h in heads {
            match t.written_by.get(h) {
                Some(&w) if w <= durable => {}
                Some(&w) => {
                    return Some(format!(
                        "case {case}: head {h} acknowledged while its write {w} was not flushed (durable through {durable})"
                    ))
                }
                None => return Some(format!("case {case}: head {h} acknowledged, never written")),
            }
        }
        None
    }

    fn record(
        &self,
        case: &CaseId,
        chunk: &[u8],
        write: impl FnOnce() -> Result<ChunkSeq, StoreError>,
    ) -> Result<ChunkSeq, StoreError> {
        let mut t = self.tracked.lock().expect("lock");
        let seq = write()?;
        t.writes += 1;
        let n = t.writes;
        let Tracked {
            docs, written_by, ..
        } = &mut *t;
        let doc = docs.entry(*case).or_default();
        let before = doc.get_heads();
        if doc.load_incremental(chunk).is_ok() {
            for c in doc.get_changes(&before).iter() {
                written_by.entry(c.hash()).or_insert(n);
            }
        }
        Ok(seq)
    }
}

impl Store for FlushWatch {
    fn append_chunk(&self, case: &CaseId, chunk: &[u8]) -> Result<ChunkSeq, StoreError> {
        self.record(case, chunk, || self.inner.append_chunk(case, chunk))
    }
    fn load_chunks(&self, case: &CaseId) -> Result<Option<ChunkLog>, StoreError> {
        self.inner.load_chunks(case)
    }
    fn compact_case(
        &self,
        case: &CaseId,
        snapshot: &[u8],
        through: ChunkSeq,
    ) -> Result<(), StoreError> {
        self.record(case, snapshot, || {
            self.inner
                .compact_case(case, snapshot, through)
                .map(|()| through)
        })
        .map(|_| ())
    }
    fn remove_case(&self, case: &CaseId) -> Result<(), StoreError> {
        self.inner.remove_case(case)
    }
    fn list_cases(&self) -> Result<Vec<CaseId>, StoreError> {
        self.inner.list_cases()
    }
    fn get_meta(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_meta(ns, key)
    }
    fn put_meta(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.inner.put_meta(ns, key, value)
    }
    fn delete_meta(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        self.inner.delete_meta(ns, key)
    }
    fn scan_meta(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.scan_meta(ns)
    }
    fn append_log(&self, log: &str, entry: &[u8]) -> Result<u64, StoreError> {
        self.inner.append_log(log, entry)
    }
    fn read_log(&self, log: &str, from: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.read_log(log, from)
    }
    fn trim_log(&self, log: &str, through: u64) -> Result<(), StoreError> {
        self.inner.trim_log(log, through)
    }
    fn put_blob(
        &self,
        case: &CaseId,
        hash: &polyphony_core::BlobHash,
        content: &[u8],
    ) -> Result<(), StoreError> {
        self.inner.put_blob(case, hash, content)
    }
    fn get_blob(
        &self,
        case: &CaseId,
        hash: &polyphony_core::BlobHash,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_blob(case, hash)
    }
    fn has_blob(&self, case: &CaseId, hash: &polyphony_core::BlobHash) -> Result<bool, StoreError> {
        self.inner.has_blob(case, hash)
    }
    fn flush(&self) -> Result<(), StoreError> {
        let target = self.tracked.lock().expect("lock").writes;
        std::thread::sleep(Duration::from_millis(20));
        self.inner.flush()?;
        self.durable.fetch_max(target, Ordering::SeqCst);
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A device's documents for a raw session, checking each acknowledgement against the disk the
/// moment it arrives.
struct WatchedHost {
    docs: BTreeMap<CaseId, AutoCommit>,
    watch: Arc<FlushWatch>,
    acknowledged: usize,
    violations: Vec<String>,
}

impl DocSet for WatchedHost {
    fn cases(&self) -> Vec<CaseId> {
        self.docs.keys().copied().collect()
    }
    fn doc(&mut self, case: &CaseId) -> Option<&mut AutoCommit> {
        self.docs.get_mut(case)
    }
    fn insert(&mut self, case: CaseId, doc: AutoCommit) {
        self.docs.insert(case, doc);
    }
    fn wipe(&mut self) -> Result<Vec<CaseId>, String> {
        self.docs.clear();
        Ok(Vec::new())
    }
}

impl SessionHost for WatchedHost {
    fn act(&mut self, action: &Action) -> Result<(), polyphony_core::store::StoreError> {
        if let Action::Acknowledged { case, heads } = action {
            self.acknowledged += 1;
            if let Some(v) = self.watch.not_yet_durable(case, heads) {
                self.violations.push(v);
            }
        }
        Ok(())
    }
}

/// Group commit (`GroupCommit` in storage.rs): many sessions writing at once share flushes, and
/// every `Saved` reaches its device only once the write holding its changes is flushed. Eight
/// devices upload three new cases each at the same time over a store whose flushes take 20 ms;
/// each acknowledgement is checked against what the store has flushed the moment it arrives. Then
/// the server restarts and a fresh device must hold every acknowledged change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_shares_flushes_and_acknowledges_nothing_before_its_flush() -> Result<()> {
    const DEVICES: usize = 8;
    const CASES_EACH: usize = 3;
    let mut watch = None;
    let mut server = TestServer::start_with_store(|inner| {
        let w = Arc::new(FlushWatch::new(inner));
        watch = Some(w.clone());
        w
    })
    .await?;
    let watch = watch.expect("wrapped");
    server.team("North").await?;
    let names: Vec<String> = (0..DEVICES).map(|i| format!("P{i}")).collect();
    for n in names.iter().chain(std::iter::once(&"Reader".to_string())) {
        server.practitioner(n, "North").await?;
    }
    let mut hosts = Vec::new();
    let mut expected: BTreeMap<CaseId, Vec<ChangeHash>> = BTreeMap::new();
    for n in &names {
        let mut device = server.device(n).await?;
        let mut docs = BTreeMap::new();
        for i in 0..CASES_EACH {
            let (case, meeting) = device.case_with_meeting(&format!("{n} person {i}"))?;
            device.note(case, meeting, &format!("{n}'s note {i}. "))?;
            let mut doc = device.profile.document(case)?;
            expected.insert(case, doc.get_heads());
            docs.insert(case, doc);
        }
        hosts.push((
            device.profile.enrolment().expect("enrolled").clone(),
            docs,
            device,
        ));
    }
    let flushes_before = watch.flushes.load(Ordering::SeqCst);
    let mut sessions = tokio::task::JoinSet::new();
    let addr = server.addr();
    let mut keep = Vec::new();
    for (e, docs, device) in hosts {
        keep.push(device);
        let watch = watch.clone();
        sessions.spawn(async move {
            let mut host = WatchedHost {
                docs,
                watch,
                acknowledged: 0,
                violations: Vec::new(),
            };
            let (endpoint, conn) = connect_as(addr, &e).await?;
            let mut session = ClientSession::new(false, vec![], BTreeMap::new());
            let end =
                polyphony_core::net::drive(&addr.to_string(), &conn, &mut session, &mut host, None)
                    .await;
            endpoint.close(0u32.into(), b"");
            let (code, message) = end?;
            ensure!(code == ErrorCode::Done, "{code:?}: {message}");
            anyhow::Ok(host)
        });
    }
    let (mut acknowledged, mut violations) = (0, Vec::new());
    while let Some(done) = sessions.join_next().await {
        let host = done??;
        acknowledged += host.acknowledged;
        violations.extend(host.violations);
    }
    let flushes = watch.flushes.load(Ordering::SeqCst) - flushes_before;
    ensure!(
        violations.is_empty(),
        "acknowledged before durable: {violations:#?}"
    );
    ensure!(
        acknowledged >= DEVICES * CASES_EACH,
        "{acknowledged} acknowledgements"
    );
    ensure!(
        (flushes as usize) < acknowledged,
        "{flushes} flushes for {acknowledged} acknowledgements: none shared"
    );
    // The watch holds the server's store open: let go of it before the restart reopens it.
    drop(keep);
    drop(watch);
    server.restart().await?;
    let mut reader = server.device("Reader").await?;
    reader.sync().await?;
    let checked = ensure_acknowledged(&mut reader, &expected)?;
    report_figures(
        "thresholds_group_commit",
        &[
            ("sessions_at_once", DEVICES as u64),
            ("acknowledgements", acknowledged as u64),
            ("flushes", flushes),
            ("acknowledged_before_durable", 0),
            ("heads_checked_after_restart", checked),
        ],
    );
    Ok(())
}

/// `GroupCommit` alone, awaited as the server's tasks await it (`GroupCommitDriver`): 64 writers
/// waiting at once are covered by a handful of flushes, and each one's wait ends only after a
/// flush that began after its write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_covers_64_waiting_writers_with_a_few_flushes() -> Result<()> {
    const WRITERS: usize = 64;
    let watch = Arc::new(FlushWatch::new(Arc::new(
        polyphony_core::store::MemoryStore::new(),
    )));
    let group = Arc::new(GroupCommit::new(Arc::new(
        polyphony_server::reopen::ReopenableStore::keeping(watch.clone()),
    )));
    let durability = Arc::new(GroupCommitDriver::new(group.clone()));
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..WRITERS {
        let (group, durability, watch) = (group.clone(), durability.clone(), watch.clone());
        writers.spawn(async move {
            let case = CaseId::random();
            let mut doc = AutoCommit::new();
            automerge::transaction::Transactable::put(&mut doc, ROOT, "i", i as i64)?;
            // The store's generation is noted before the write, as the server does.
            let generation = group.generation();
            watch.append_chunk(&case, &doc.save())?;
            let ticket = group.wrote_in(generation);
            durability.durable(ticket).await?;
            if let Some(v) = watch.not_yet_durable(&case, &doc.get_heads()) {
                return Err(anyhow!(v));
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    let flushes = watch.flushes.load(Ordering::SeqCst);
    ensure!(
        (flushes as usize) < WRITERS / 4,
        "{flushes} flushes for {WRITERS} writers"
    );
    report_figures(
        "thresholds_group_commit_unit",
        &[("writers", WRITERS as u64), ("flushes", flushes)],
    );
    Ok(())
}

// ---- The offline-read outbox -------------------------------------------------------------------

/// The outbox of reads made offline (profile/books.rs, log `reads`) is trimmed only through the index
/// the server says it stored (`ReadsSaved`). Reads queued across a restart of the device are all
/// sent, the outbox is empty after the sync and stays empty after a reopen from disk, and the
/// server's access log holds every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_reads_are_trimmed_only_once_the_server_saved_them_and_stay_trimmed_after_a_reopen(
) -> Result<()> {
    const READS: usize = 5;
    let server = north(|_| {}, &["Sam"]).await?;
    let mut device = server.device("Sam").await?;
    let (case, _) = device.case_with_meeting("Jo Bloggs")?;
    device.sync().await?;
    for i in 0..READS {
        device.profile.view(case, &format!("offline read {i}"))?;
        if i == 2 {
            reopen(&mut device)?;
        }
    }
    ensure!(device.profile.status()?.unsent_reads == READS, "queued");
    device.sync().await?;
    ensure!(
        device.profile.status()?.unsent_reads == 0,
        "trimmed after ReadsSaved"
    );
    reopen(&mut device)?;
    ensure!(
        device.profile.status()?.unsent_reads == 0,
        "still trimmed after a reopen"
    );
    let log = device.profile.fetch_accesses(case).await?;
    for i in 0..READS {
        let what = format!("offline read {i}");
        ensure!(
            log.entries.iter().any(|e| e.what.contains(&what)),
            "the server's access log lacks {what:?}"
        );
    }
    Ok(())
}

/// The server records each offline read once, by a per-device high-water mark kept in its
/// registry (`reads_through`, server session/protocol.rs `offline_reads`). Across a SIGKILL and a restart of the
/// real server binary: reads it answered `ReadsSaved` for are on disk, and when the device sends
/// them again (it did not hear the answer) with new ones, only the new ones are recorded; after a
/// second kill and restart, the whole outbox sent again records nothing more. Each read is in the
/// audit log exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offline_read_mark_survives_a_server_kill_and_restart_and_each_read_is_recorded_once(
) -> Result<()> {
    use polyphony_core::sync::OfflineRead;
    use polyphony_e2e::{free_udp_port, ServerProcess};
    use polyphony_server::admin::AdminRequest;
    let data = tempfile::tempdir()?;
    let dir = data.path().join("server");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse()?;
    let mut server = ServerProcess::start(dir.clone(), addr).await?;
    server
        .admin(AdminRequest::TeamAdd {
            name: "North".into(),
        })
        .await?;
    server
        .admin(AdminRequest::PractitionerAdd {
            name: "Sam".into(),
            team: "North".into(),
            role: None,
        })
        .await?;
    let mut device = server.device("Sam").await?;
    let (case, _) = device.case_with_meeting("Jo Bloggs")?;
    device.sync().await?;
    let e = device.profile.enrolment().expect("enrolled").clone();
    let at =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?;
    let reads = |seqs: std::ops::RangeInclusive<u64>| {
        Frame::Reads(
            seqs.map(|seq| OfflineRead {
                case,
                at: at.clone(),
                what: format!("read {seq}"),
                seq,
            })
            .collect(),
        )
    };
    let send = |frame: Frame| {
        let e = e.clone();
        async move {
            let mut session = RawSession::open_at(addr, &e).await?;
            let answer = session.exchange(&frame.to_bytes()).await?;
            session.close().await;
            Ok::<Frame, anyhow::Error>(answer)
        }
    };
    let saved = |answer: Frame, through: u64| match answer {
        Frame::ReadsSaved { through: t } if t == through => Ok(()),
        other => Err(anyhow!(
            "expected ReadsSaved through {through}, got {other:?}"
        )),
    };

    saved(send(reads(1..=4)).await?, 4)?;
    // Killed the moment the answer arrived (no shutdown, nothing flushed on the way down).
    server.kill();
    let mut server = ServerProcess::start(dir.clone(), addr).await?;
    saved(send(reads(1..=7)).await?, 7)?;
    server.kill();
    let server = ServerProcess::start(dir, addr).await?;
    saved(send(reads(1..=7)).await?, 7)?;

    let log = server
        .admin(AdminRequest::Audit {
            case: Some(case),
            verify: false,
        })
        .await?;
    let details = polyphony_e2e::audit_details(&log, "offline_read")?;
    for seq in 1..=7 {
        let n = details
            .iter()
            .filter(|d| d.starts_with(&format!("read {seq} (")))
            .count();
        ensure!(
            n == 1,
            "offline read {seq} is in the audit log {n} times: {details:?}"
        );
    }
    ensure!(details.len() == 7, "{details:?}");
    report_figures(
        "thresholds_offline_read_mark_across_restarts",
        &[
            ("reads_sent", 4 + 7 + 7),
            ("server_kills", 2),
            ("recorded", details.len() as u64),
        ],
    );
    Ok(())
}

// ---- The enrolment frame limit -----------------------------------------------------------------

/// Send one enrolment frame to the server's enrolment port (no device certificate yet, as a new
/// device) and return its answer.
async fn enrol_raw(server: &TestServer, frame: &Frame) -> Result<Frame> {
    let cfg = polyphony_core::identity::enrol_client_config(server.handle().ca_fingerprint())?;
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let conn = endpoint
        .connect_with(cfg, server.addr(), polyphony_core::identity::SERVER_NAME)?
        .await?;
    let (send, recv) = conn.open_bi().await?;
    let mut stream = FramedStream::new(send, recv);
    stream.write_frames(std::slice::from_ref(frame)).await?;
    let _ = stream.send.finish();
    let answer = tokio::time::timeout(Duration::from_secs(20), stream.read_frame())
        .await
        .context("no answer to the enrolment")??
        .ok_or_else(|| anyhow!("the server closed the enrolment without an answer"))?;
    conn.close(0u32.into(), b"");
    endpoint.wait_idle().await;
    Ok(answer)
}

/// The enrolment exchange reads frames of at most 64 KiB (`enrolment.rs`, `enrol`): a request of
/// exactly that is read (and refused for its made-up code), one byte more is refused unread as
/// not an enrolment request. Either way a real device enrols afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolment_frame_at_its_64_kib_limit_is_read_and_one_byte_more_is_refused() -> Result<()>
{
    const LIMIT: usize = 64 * 1024;
    let server = north(|_| {}, &["Sam"]).await?;
    let request = |name_len: usize| {
        Frame::Enrol(polyphony_core::sync::EnrolRequest {
            version: PROTOCOL_VERSION,
            token: "not hex".into(),
            device: polyphony_core::DeviceId::random(),
            device_name: "x".repeat(name_len),
            csr: String::new(),
        })
    };
    let overhead = request(0).to_bytes().len() - 4;
    let at_limit = request(LIMIT - overhead);
    ensure!(
        at_limit.to_bytes().len() == 4 + LIMIT,
        "a body of exactly 64 KiB"
    );
    match enrol_raw(&server, &at_limit).await? {
        Frame::Error(r) => ensure!(
            r.code == ErrorCode::BadEnrolment && r.message.contains("malformed"),
            "the request at the limit was read, and its code refused: {r:?}"
        ),
        f => return Err(anyhow!("answered {f:?}")),
    }
    match enrol_raw(&server, &request(LIMIT - overhead + 1)).await? {
        Frame::Error(r) => ensure!(
            r.code == ErrorCode::Malformed,
            "one byte over is refused unread: {r:?}"
        ),
        f => return Err(anyhow!("answered {f:?}")),
    }
    let mut device = server.device("Sam").await?;
    device.case_with_meeting("Jo Bloggs")?;
    ensure!(
        device.sync().await?.refused.is_empty(),
        "a real device enrols and syncs"
    );
    Ok(())
}

// ---- Bounds on what is stored or reported ------------------------------------------------------

/// Validation keeps at most 100 problems (a hostile document could have millions) and shows 5
/// (`schema.rs`, `Validator::bad`, `SchemaError`'s display): 5, 6, 100 and 101 unknown fields.
#[test]
fn the_validation_report_keeps_100_problems_and_shows_5() -> Result<()> {
    let (doc, _) = case_with_meeting()?;
    for (unknown, kept, more) in [
        (5, 5, None),
        (6, 6, Some(1)),
        (100, 100, Some(95)),
        (101, 100, Some(95)),
    ] {
        let mut raw = doc.automerge().clone();
        for i in 0..unknown {
            automerge::transaction::Transactable::put(
                &mut raw,
                ROOT,
                format!("surprise_{i:03}"),
                1,
            )?;
        }
        raw.commit();
        let err = validate_document(&raw)
            .err()
            .ok_or_else(|| anyhow!("{unknown} unknown fields validated"))?;
        ensure!(
            err.problems.len() == kept,
            "{unknown} problems: {} kept",
            err.problems.len()
        );
        let shown = err.to_string();
        match more {
            None => ensure!(!shown.contains("more)"), "{shown}"),
            Some(n) => ensure!(shown.ends_with(&format!("(and {n} more)")), "{shown}"),
        }
    }
    Ok(())
}

/// Names the administrator stores (`registry.rs`, `MAX_NAME_CHARS`): 200 characters are taken and
/// kept across a restart, 201 are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_of_200_characters_is_kept_across_a_restart_and_201_are_refused() -> Result<()> {
    let mut server = TestServer::start_with(|_| {}).await?;
    let longest = "é".repeat(polyphony_server::registry::MAX_NAME_CHARS);
    server.team(&longest).await?;
    ensure!(
        server.team(&format!("{longest}x")).await.is_err(),
        "a name one character over the limit was taken"
    );
    server.restart().await?;
    let teams = server
        .admin(polyphony_server::admin::AdminRequest::Teams)
        .await?;
    ensure!(teams.to_string().contains(&longest), "{teams}");
    Ok(())
}

// ---- Timers of the connection --------------------------------------------------------------------

/// `CONNECT_TIMEOUT` (client-core `net/client.rs`, 8 s): a server address where something takes
/// the datagrams and never answers (a black hole, not a refusal) gives "cannot reach ... no answer"
/// once the timeout has passed, and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_server_that_never_answers_gives_up_at_the_connect_timeout() -> Result<()> {
    let server = north(|_| {}, &["Sam"]).await?;
    let device = server.device("Sam").await?;
    let e = device.profile.enrolment().expect("enrolled").clone();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let started = std::time::Instant::now();
    let err = connect_as(silent.local_addr()?, &e)
        .await
        .err()
        .ok_or_else(|| anyhow!("a black hole answered"))?;
    let took = started.elapsed();
    let timeout = polyphony_core::net::CONNECT_TIMEOUT;
    ensure!(
        took >= timeout && took < timeout + Duration::from_secs(5),
        "gave up after {took:?}, the timeout is {timeout:?}"
    );
    ensure!(err.to_string().contains("no answer"), "{err}");
    report_figures(
        "thresholds_connect_timeout",
        &[
            ("timeout_ms", timeout.as_millis() as u64),
            ("gave_up_ms", took.as_millis() as u64),
        ],
    );
    Ok(())
}

/// `IDLE_TIMEOUT` (30 s) and `CLIENT_KEEP_ALIVE` (5 s) in `identity/tls.rs`: a live session with
/// nothing to say for longer than the idle timeout is kept open by the device's keep-alives, and a
/// change made after the silence still arrives live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_session_silent_past_the_idle_timeout_stays_open_and_still_gets_changes(
) -> Result<()> {
    let server = north(|_| {}, &["Sam", "Kit"]).await?;
    let mut writer = server.device("Sam").await?;
    let listener = server.device("Kit").await?;
    let (case, meeting) = writer.case_with_meeting("Jo Bloggs")?;
    writer.sync().await?;
    let e = listener.profile.enrolment().expect("enrolled").clone();
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let host = polyphony_e2e::TestHost {
        events: Some(tx),
        ..Default::default()
    };
    let addr = server.addr();
    let live = tokio::spawn(async move { polyphony_e2e::run_session(addr, &e, host, true).await });
    let holds =
        |events: &mut tokio::sync::mpsc::UnboundedReceiver<(Action, Option<AutoCommit>)>,
         heads: Vec<ChangeHash>| {
            let mut got = None;
            while let Ok((action, doc)) = events.try_recv() {
                if let (Action::Persist { case: c, .. }, Some(doc)) = (action, doc) {
                    if c == case && heads.iter().all(|h| doc.get_change_by_hash(h).is_some()) {
                        got = Some(());
                    }
                }
            }
            got.is_some()
        };
    let wanted = writer.profile.document(case)?.get_heads();
    let mut waited = 0;
    while !holds(&mut events, wanted.clone()) {
        ensure!(waited < 300, "the live session never received the case");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    let silence = polyphony_core::identity::IDLE_TIMEOUT + Duration::from_secs(5);
    tokio::time::sleep(silence).await;
    ensure!(
        !live.is_finished(),
        "the live session ended during {silence:?} of silence"
    );
    writer.note(case, meeting, "After the silence. ")?;
    writer.sync().await?;
    let wanted = writer.profile.document(case)?.get_heads();
    let mut waited = 0;
    while !holds(&mut events, wanted.clone()) {
        ensure!(
            waited < 100,
            "the change made after the silence did not arrive live"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    live.abort();
    report_figures(
        "thresholds_keep_alive",
        &[
            ("silent_secs", silence.as_secs()),
            ("idle_timeout_secs", 30),
        ],
    );
    Ok(())
}
