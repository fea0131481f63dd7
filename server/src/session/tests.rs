//! The session driven directly, as the simulation does, with no sockets and no runtime: the
//! access rules (another team's case, a case created for another team, another device's actor,
//! the provisional-case and offline-read limits, a revoked device, a change of access during the
//! handshake) and the rule for a case that moved away from a device (only what it wrote before it
//! was told).

use automerge::sync::{Message, State, SyncDoc};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{AutoCommit, ReadDoc, ROOT};
use polyphony_core::model::{Author, CaseDoc, NewCase, PersonField, StaffRole};
use polyphony_core::store::{MemoryStore, Store};
use polyphony_core::sync::Hello;
use polyphony_core::TeamId;

use super::*;

/// A server over an in-memory store with teams North and South, and one device of Sam (North).
struct Fixture {
    shared: Arc<Shared>,
    device: Device,
    practitioner: Practitioner,
    north: TeamId,
    south: TeamId,
}

fn fixture() -> Fixture {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let registry = Arc::new(Registry::new(store.clone()));
    let north = registry.add_team("North").expect("team").id;
    let south = registry.add_team("South").expect("team").id;
    let sam = registry
        .add_practitioner("Sam", north)
        .expect("practitioner");
    let code = registry
        .create_enrolment(sam.id, [1; 32], time::Duration::hours(1))
        .expect("code");
    let (device, practitioner) = registry
        .redeem_enrolment(
            code.token(),
            polyphony_core::DeviceId::random(),
            "laptop",
            [2; 32],
        )
        .expect("enrolled");
    let shared = Arc::new(Shared {
        storage: Arc::new(ServerStorage::new(store.clone(), 16)),
        registry,
        audit: Arc::new(AuditLog::open(store).expect("audit")),
        max_frame: polyphony_core::sync::DEFAULT_MAX_FRAME,
        revoking_limit: time::Duration::days(14),
        moved_upload_limit: time::Duration::days(14),
        max_new_cases: crate::session::MAX_PROVISIONAL,
        advertise: Vec::new(),
        ca: None,
        limits: Default::default(),
    });
    Fixture {
        shared,
        device,
        practitioner,
        north,
        south,
    }
}

/// One session of the device, and its side of the sync state.
struct Device1 {
    session: Session,
    state: State,
}

impl Fixture {
    fn author(&self) -> Author {
        Author {
            practitioner: self.practitioner.id,
            practitioner_name: self.practitioner.name.clone(),
            device: self.device.id,
        }
    }

    fn connect(&self) -> Device1 {
        let session = Session::new(
            self.shared.clone(),
            1,
            self.device.clone(),
            self.practitioner.clone(),
            SessionMode::Normal,
        );
        Device1 {
            session,
            state: State::new(),
        }
    }
}

impl Device1 {
    /// Send the device's next sync message for `case` and take in what comes back; the frames.
    fn exchange(&mut self, case: CaseId, doc: &mut AutoCommit) -> Vec<Frame> {
        let Some(message) = doc.sync().generate_sync_message(&mut self.state) else {
            return Vec::new();
        };
        assert!(self.session.handle(Frame::Sync {
            case,
            message: message.encode(),
        }));
        let mut frames = Vec::new();
        while let Some(batch) = self.session.poll_reply() {
            for f in batch.frames {
                if matches!(&f, Frame::CaseRefused { refusal, .. } if refusal.code == ErrorCode::Moved)
                {
                    // As the device's session does: upload only, from now on.
                    self.state.set_read_only(true);
                }
                if let Frame::Sync { message, .. } = &f {
                    let m = Message::decode(message).expect("a sync message");
                    doc.sync()
                        .receive_sync_message(&mut self.state, m)
                        .expect("applies");
                }
                frames.push(f);
            }
        }
        frames
    }

    /// Send `message` (encoded) for `case` as it is, and the frames that come back.
    fn send(&mut self, case: CaseId, message: Vec<u8>) -> Vec<Frame> {
        assert!(self.session.handle(Frame::Sync { case, message }));
        let mut frames = Vec::new();
        while let Some(batch) = self.session.poll_reply() {
            frames.extend(batch.frames);
        }
        frames
    }

    /// Exchange until the device has nothing more to send, or the server refuses (other than
    /// telling it the case moved).
    fn settle(&mut self, case: CaseId, doc: &mut AutoCommit) -> Vec<Frame> {
        let mut all = Vec::new();
        for _ in 0..16 {
            let frames = self.exchange(case, doc);
            if frames.is_empty() {
                return all;
            }
            let refused = frames.iter().any(|f| {
                matches!(f, Frame::CaseRefused { refusal, .. } if refusal.code != ErrorCode::Moved)
            });
            all.extend(frames);
            if refused {
                return all;
            }
        }
        panic!("the sync did not settle: {all:?}");
    }
}

/// The refusals among `frames`, and whether the device was told the case moved.
fn refusals(frames: &[Frame]) -> (bool, Vec<(ErrorCode, String)>) {
    let all: Vec<(ErrorCode, String)> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::CaseRefused { refusal, .. } => Some((refusal.code, refusal.message.clone())),
            _ => None,
        })
        .collect();
    let told = all.iter().any(|(c, _)| *c == ErrorCode::Moved);
    (
        told,
        all.into_iter()
            .filter(|(c, _)| *c != ErrorCode::Moved)
            .collect(),
    )
}

/// A change to the person's preferred name, dated `time` (ms since 1970; 0: none).
fn dated_change(doc: &mut AutoCommit, value: &str, time: i64) -> automerge::ChangeHash {
    let person = match doc.get(ROOT, "person").expect("read") {
        Some((_, id)) => id,
        None => panic!("no person"),
    };
    doc.put(&person, "preferred_name", value).expect("put");
    let options = if time == 0 {
        CommitOptions::default()
    } else {
        CommitOptions::default().with_time(time)
    };
    doc.commit_with(options).expect("a change")
}

fn ms(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn stored(f: &Fixture, case: CaseId, hash: &automerge::ChangeHash) -> bool {
    let c = f.shared.storage.case(&case).expect("read").expect("stored");
    let c = c.lock().expect("case lock");
    c.doc.get_change_by_hash(hash).is_some()
}

#[test]
fn a_moved_case_takes_only_what_the_device_wrote_before_it_was_told() {
    let f = fixture();
    let case = CaseId::random();
    let mut doc = CaseDoc::create(
        case,
        f.north,
        NewCase {
            name: "Maria".into(),
            ..Default::default()
        },
        f.author(),
    )
    .expect("case")
    .into_automerge();
    let mut first = f.connect();
    let frames = first.settle(case, &mut doc);
    assert_eq!(refusals(&frames), (false, vec![]), "{frames:?}");

    // Offline: a note before the move, and one after it (the device does not know yet).
    let mut cd = CaseDoc::from_automerge(doc, Some(f.author())).expect("doc");
    cd.set_person(PersonField::Pronouns, Some("she/her"))
        .expect("edit");
    f.shared.registry.move_case(case, f.south).expect("moved");
    cd.set_person(PersonField::Phone, Some("020 7946 0000"))
        .expect("edit");
    let mut doc = cd.into_automerge();
    let honest = doc.get_heads();

    // Told: nothing is applied with the telling, and when is recorded.
    let mut second = f.connect();
    let frames = second.exchange(case, &mut doc);
    assert_eq!(refusals(&frames), (true, vec![]), "{frames:?}");
    let told = f
        .shared
        .registry
        .told_moved(&f.device.id, &case)
        .expect("read")
        .expect("recorded when told");
    assert!(!stored(&f, case, &honest[0]));

    // A modified client writes on, dated after it was told (past the clock allowance): the
    // whole message, its earlier work included, is refused and nothing of it stored.
    let mut forged = doc.fork().with_actor(f.author().actor());
    let late = dated_change(&mut forged, "Maz", ms(told + MOVED_CLOCK_SKEW) + 1_000);
    let frames = second.settle(case, &mut forged);
    let (_, refused) = refusals(&frames);
    assert!(
        matches!(refused.as_slice(), [(ErrorCode::InvalidChange, m)] if m.contains("after this device was told")),
        "{refused:?}"
    );
    assert!(!stored(&f, case, &late) && !stored(&f, case, &honest[0]));

    // A change with no time at all cannot show it came first.
    let mut undated = doc.fork().with_actor(f.author().actor());
    let zero = dated_change(&mut undated, "Mo", 0);
    let frames = f.connect().settle(case, &mut undated);
    let (told_again, refused) = refusals(&frames);
    assert!(
        told_again
            && matches!(refused.as_slice(), [(ErrorCode::InvalidChange, m)] if m.contains("no time")),
        "{refused:?}"
    );
    assert!(!stored(&f, case, &zero));

    // Its honest work, written before it was told (after the move included), is accepted in a
    // later session; being told again does not move the boundary.
    let frames = f.connect().settle(case, &mut doc);
    assert_eq!(refusals(&frames), (true, vec![]), "{frames:?}");
    assert!(frames.iter().any(|fr| matches!(fr, Frame::Saved { .. })));
    assert!(honest.iter().all(|h| stored(&f, case, h)));
    assert_eq!(
        f.shared
            .registry
            .told_moved(&f.device.id, &case)
            .expect("read"),
        Some(told)
    );

    // What is not stopped: a change backdated to before the telling is the device's word.
    let mut backdated = doc.fork().with_actor(f.author().actor());
    let early = dated_change(&mut backdated, "Mari", ms(told) - 60_000);
    let frames = f.connect().settle(case, &mut backdated);
    assert_eq!(refusals(&frames), (true, vec![]), "{frames:?}");
    assert!(stored(&f, case, &early));

    // Moved back: the welcome grants it in full again, and the record is forgotten.
    f.shared
        .registry
        .move_case(case, f.north)
        .expect("moved back");
    let hello = Hello {
        version: PROTOCOL_VERSION,
        software: "test".into(),
        live: false,
        features: Vec::new(),
    };
    welcome(&f.shared, &hello, &f.device, &f.practitioner).expect("welcome");
    assert_eq!(
        f.shared
            .registry
            .told_moved(&f.device.id, &case)
            .expect("read"),
        None
    );
}

/// A new case for `team`, written by `author`, as the device's automerge document.
fn new_case(team: TeamId, author: Author) -> (CaseId, AutoCommit) {
    let case = CaseId::random();
    let doc = CaseDoc::create(
        case,
        team,
        NewCase {
            name: "Alex".into(),
            ..Default::default()
        },
        author,
    )
    .expect("case")
    .into_automerge();
    (case, doc)
}

fn only_refusal(frames: &[Frame]) -> (ErrorCode, String) {
    let (_, refused) = refusals(frames);
    match refused.as_slice() {
        [one] => one.clone(),
        other => panic!("expected one refusal, got {other:?} in {frames:?}"),
    }
}

#[test]
fn another_teams_case_is_not_available_and_nothing_of_it_is_sent() {
    let f = fixture();
    // A case of South, stored by a South practitioner's device (here: written and stored as
    // the server would, through a session of that device).
    let kim = f
        .shared
        .registry
        .add_practitioner("Kim", f.south)
        .expect("practitioner");
    let code = f
        .shared
        .registry
        .create_enrolment(kim.id, [3; 32], time::Duration::hours(1))
        .expect("code");
    let (kims_device, kim) = f
        .shared
        .registry
        .redeem_enrolment(
            code.token(),
            polyphony_core::DeviceId::random(),
            "tablet",
            [4; 32],
        )
        .expect("enrolled");
    let kim_author = Author {
        practitioner: kim.id,
        practitioner_name: kim.name.clone(),
        device: kims_device.id,
    };
    let (case, mut south_doc) = new_case(f.south, kim_author);
    let mut kims = Device1 {
        session: Session::new(f.shared.clone(), 2, kims_device, kim, SessionMode::Normal),
        state: State::new(),
    };
    let frames = kims.settle(case, &mut south_doc);
    assert_eq!(refusals(&frames), (false, vec![]), "{frames:?}");

    // Sam's device asks for it, with nothing of its own: refused, not a byte of it sent.
    let mut empty = AutoCommit::new();
    let frames = f.connect().exchange(case, &mut empty);
    assert_eq!(
        only_refusal(&frames),
        (
            ErrorCode::NotAvailable,
            format!("case {case} is not available to this device")
        )
    );
    assert!(!frames
        .iter()
        .any(|fr| matches!(fr, Frame::Sync { .. } | Frame::Saved { .. })));
    assert!(empty.get_heads().is_empty());

    // Nor can Sam take the id by creating a North case under it: the same answer.
    let mut taken = CaseDoc::create(
        case,
        f.north,
        NewCase {
            name: "Someone else".into(),
            ..Default::default()
        },
        f.author(),
    )
    .expect("case")
    .into_automerge();
    let frames = f.connect().settle(case, &mut taken);
    assert_eq!(only_refusal(&frames).0, ErrorCode::NotAvailable);
    assert_eq!(
        f.shared.registry.case_team(&case).expect("read"),
        Some(f.south)
    );
}

#[test]
fn a_device_cannot_create_a_case_for_a_team_not_its_own() {
    let f = fixture();
    let (case, mut doc) = new_case(f.south, f.author());
    let frames = f.connect().settle(case, &mut doc);
    let (code, message) = only_refusal(&frames);
    assert_eq!(code, ErrorCode::InvalidChange);
    assert!(message.contains("one of your own teams"), "{message}");
    assert_eq!(f.shared.registry.case_team(&case).expect("read"), None);
    assert!(f.shared.storage.case(&case).expect("read").is_none());
}

#[test]
fn a_change_under_another_devices_actor_is_refused_and_nothing_stored() {
    let f = fixture();
    let (case, mut doc) = new_case(f.north, f.author());
    let mut sam = f.connect();
    assert_eq!(refusals(&sam.settle(case, &mut doc)), (false, vec![]));

    // The same practitioner's name, another device's actor: a device writes only as itself.
    let other = Author {
        device: polyphony_core::DeviceId::random(),
        ..f.author()
    };
    let mut forged = doc.fork().with_actor(other.actor());
    let hash = dated_change(&mut forged, "Al", ms(time::OffsetDateTime::now_utc()));
    let frames = sam.settle(case, &mut forged);
    let (code, message) = only_refusal(&frames);
    assert_eq!(code, ErrorCode::ForgedAuthor, "{frames:?}");
    // The actor rule, not the stamp rule (which shares the code): the change has no stamp.
    assert!(message.contains("is authored by"), "{message}");
    assert!(!stored(&f, case, &hash));
}

#[test]
fn new_cases_past_the_provisional_limit_wait_for_the_next_session() {
    let f = fixture();
    let mut sam = f.connect();
    // A device's first message for a case it holds carries no changes: each leaves a
    // provisional document in the session until its changes arrive.
    let mut first_messages = Vec::new();
    for _ in 0..=MAX_PROVISIONAL {
        let (case, mut doc) = new_case(f.north, f.author());
        let mut state = State::new();
        let m = doc
            .sync()
            .generate_sync_message(&mut state)
            .expect("a first message");
        assert!(m.changes.is_empty());
        first_messages.push((case, m.encode()));
    }
    let (last, last_message) = first_messages.pop().expect("one more than the limit");
    for (case, message) in first_messages {
        assert!(sam.session.handle(Frame::Sync { case, message }));
        let batch = sam.session.poll_reply().expect("answered");
        assert!(
            matches!(batch.frames.last(), Some(Frame::Saved { case: c, .. }) if *c == case),
            "{batch:?}"
        );
    }
    assert!(sam.session.handle(Frame::Sync {
        case: last,
        message: last_message.clone(),
    }));
    let batch = sam.session.poll_reply().expect("answered");
    assert_eq!(only_refusal(&batch.frames).0, ErrorCode::Busy);
    // The next session takes it.
    let mut next = f.connect();
    assert!(next.session.handle(Frame::Sync {
        case: last,
        message: last_message,
    }));
    let batch = next.session.poll_reply().expect("answered");
    assert!(
        matches!(batch.frames.last(), Some(Frame::Saved { .. })),
        "{batch:?}"
    );
}

#[test]
fn a_revoked_device_is_ended_at_its_next_frame_and_sent_nothing() {
    let f = fixture();
    let (case, mut doc) = new_case(f.north, f.author());
    let mut sam = f.connect();
    let mut state = State::new();
    let message = doc
        .sync()
        .generate_sync_message(&mut state)
        .expect("a message")
        .encode();
    f.shared
        .registry
        .set_device_status(&f.device.id, DeviceStatus::Revoked)
        .expect("revoked");
    assert!(!sam.session.handle(Frame::Sync { case, message }));
    assert_eq!(sam.session.poll_reply(), None);
    assert!(matches!(
        sam.session.ended(),
        Some((ErrorCode::Revoked, m)) if m.contains("revoked")
    ));
}

#[test]
fn offline_reads_past_the_frame_limit_end_the_session_too_large_and_none_is_recorded() {
    let f = fixture();
    let (case, mut doc) = new_case(f.north, f.author());
    let mut sam = f.connect();
    assert_eq!(refusals(&sam.settle(case, &mut doc)), (false, vec![]));
    let read = |seq| polyphony_core::sync::OfflineRead {
        case,
        at: crate::registry::rfc3339(time::OffsetDateTime::now_utc()),
        what: "case show".into(),
        seq,
    };
    // At the limit: recorded and acknowledged.
    let reads: Vec<_> = (1..=MAX_READS_PER_FRAME as u64).map(read).collect();
    assert!(sam.session.handle(Frame::Reads(reads)));
    let batch = sam.session.poll_reply().expect("answered");
    assert_eq!(
        batch.frames,
        vec![Frame::ReadsSaved {
            through: MAX_READS_PER_FRAME as u64
        }]
    );
    // One past it: the session ends with TooLarge, and nothing more is recorded.
    let recorded = |f: &Fixture| {
        f.shared
            .audit
            .entries(Some(case))
            .expect("audit")
            .iter()
            .filter(|r| r.event.action == AuditAction::OfflineRead)
            .count()
    };
    assert_eq!(recorded(&f), MAX_READS_PER_FRAME);
    let start = MAX_READS_PER_FRAME as u64 + 1;
    let reads: Vec<_> = (start..=start + MAX_READS_PER_FRAME as u64)
        .map(read)
        .collect();
    assert!(!sam.session.handle(Frame::Reads(reads)));
    let batch = sam.session.poll_reply().expect("answered");
    assert!(
        matches!(batch.frames.as_slice(), [Frame::Error(r)] if r.code == ErrorCode::TooLarge),
        "{batch:?}"
    );
    assert_eq!(recorded(&f), MAX_READS_PER_FRAME);
}

/// A message carrying only `change` (of `doc`), saying the sender's heads are `heads`.
fn only_change(
    doc: &mut AutoCommit,
    change: &automerge::ChangeHash,
    heads: Vec<automerge::ChangeHash>,
) -> Vec<u8> {
    let bytes = doc
        .get_change_by_hash(change)
        .expect("the sender holds it")
        .raw_bytes()
        .to_vec();
    Message {
        heads,
        need: Vec::new(),
        have: Vec::new(),
        changes: vec![bytes].into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    }
    .encode()
}

/// A device's honest change X, and on top of it a change Y under another device's actor (a
/// modified client, or a bug in one).
fn honest_then_forged(
    f: &Fixture,
    doc: &mut AutoCommit,
) -> (automerge::ChangeHash, automerge::ChangeHash) {
    let now = ms(time::OffsetDateTime::now_utc());
    let x = dated_change(doc, "Al", now);
    let other = Author {
        device: polyphony_core::DeviceId::random(),
        ..f.author()
    };
    let mut forged = doc.fork().with_actor(other.actor());
    let y = dated_change(&mut forged, "Ali", now);
    doc.merge(&mut forged).expect("merge");
    (x, y)
}

fn shared_doc_has_no_queue(f: &Fixture, case: CaseId) -> bool {
    let c = f.shared.storage.case(&case).expect("read").expect("stored");
    let c = c.lock().expect("case lock");
    c.doc.get_missing_deps(&[]).is_empty()
}

#[test]
fn a_change_left_waiting_in_one_session_does_not_ride_in_with_the_next() {
    let f = fixture();
    let (case, mut doc) = new_case(f.north, f.author());
    assert_eq!(
        refusals(&f.connect().settle(case, &mut doc)),
        (false, vec![])
    );
    let (x, y) = honest_then_forged(&f, &mut doc);

    // Y alone, as if the device believed the server held X: it waits, unchecked and unstored,
    // and the answer asks for X.
    let mut first = f.connect();
    let frames = first.send(case, only_change(&mut doc, &y, vec![y]));
    assert_eq!(refusals(&frames), (false, vec![]), "{frames:?}");
    assert!(
        matches!(frames.last(), Some(Frame::Saved { .. })),
        "{frames:?}"
    );
    let asked = frames.iter().any(|fr| match fr {
        Frame::Sync { message, .. } => Message::decode(message).is_ok_and(|m| m.need.contains(&x)),
        _ => false,
    });
    assert!(asked, "the answer asks for X: {frames:?}");
    assert!(!stored(&f, case, &x) && !stored(&f, case, &y));
    assert!(
        shared_doc_has_no_queue(&f, case),
        "Y waits in the session, not in the document every session of the case shares"
    );
    drop(first);

    // The next session uploads X honestly: taken, and Y does not come in with it (an earlier
    // version kept Y queued in the shared document, where X released it, and the whole upload
    // was refused for Y's author).
    let frames = f.connect().send(case, only_change(&mut doc, &x, vec![x]));
    assert_eq!(refusals(&frames), (false, vec![]), "{frames:?}");
    assert!(stored(&f, case, &x) && !stored(&f, case, &y));
}

#[test]
fn a_change_that_waited_is_checked_against_its_sender_when_its_dependency_arrives() {
    let f = fixture();
    let (case, mut doc) = new_case(f.north, f.author());
    let mut sam = f.connect();
    assert_eq!(refusals(&sam.settle(case, &mut doc)), (false, vec![]));
    let (x, y) = honest_then_forged(&f, &mut doc);
    let frames = sam.send(case, only_change(&mut doc, &y, vec![y]));
    assert_eq!(refusals(&frames), (false, vec![]), "{frames:?}");
    // X arrives in the same session: Y applies with it, is found under another device's actor,
    // and the message is refused; nothing of either is stored.
    let frames = sam.send(case, only_change(&mut doc, &x, vec![y]));
    let (code, message) = only_refusal(&frames);
    assert_eq!(code, ErrorCode::ForgedAuthor, "{message}");
    assert!(!stored(&f, case, &x) && !stored(&f, case, &y));
    assert!(shared_doc_has_no_queue(&f, case));
}

#[test]
fn a_bloom_filter_automerge_would_panic_on_is_refused_and_the_case_still_syncs() {
    let f = fixture();
    let (case, mut doc) = new_case(f.north, f.author());
    let mut sam = f.connect();
    assert_eq!(refusals(&sam.settle(case, &mut doc)), (false, vec![]));
    // One entry, zero bits per entry: automerge 0.12 parses it, and divides by zero when it
    // next answers; on the server that was under the case's lock (found by fuzzing).
    let message = Message {
        heads: doc.get_heads(),
        need: Vec::new(),
        have: vec![automerge::sync::Have {
            last_sync: Vec::new(),
            bloom: automerge::sync::BloomFilter::try_from(&[1u8, 0, 7][..]).expect("parses"),
        }],
        changes: Vec::<Vec<u8>>::new().into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    };
    let frames = sam.send(case, message.encode());
    let (code, text) = only_refusal(&frames);
    assert_eq!(code, ErrorCode::InvalidChange);
    assert!(text.contains("Bloom filter"), "{text}");
    // The case is not lost to anyone: a new change syncs in the next session.
    let hash = dated_change(&mut doc, "Al", ms(time::OffsetDateTime::now_utc()));
    let frames = f.connect().settle(case, &mut doc);
    assert_eq!(refusals(&frames), (false, vec![]), "{frames:?}");
    assert!(stored(&f, case, &hash));
}

#[test]
fn changes_waiting_past_two_frames_in_one_session_are_refused_busy() {
    let mut f = fixture();
    // A small frame bound, so that two frames' worth is a few changes.
    Arc::get_mut(&mut f.shared)
        .expect("not shared yet")
        .max_frame = 4_096;
    let mut sam = f.connect();
    let mut waited = 0usize;
    let mut refused = None;
    for _ in 0..64 {
        let (case, mut doc) = new_case(f.north, f.author());
        assert_eq!(refusals(&sam.settle(case, &mut doc)), (false, vec![]));
        let (_, y) = honest_then_forged(&f, &mut doc);
        let message = only_change(&mut doc, &y, vec![y]);
        let frames = sam.send(case, message);
        match refusals(&frames).1.as_slice() {
            [] => waited += 1,
            [(code, text)] => {
                refused = Some((*code, text.clone()));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let (code, text) = refused.expect("refused before 64 cases each left a change waiting");
    assert_eq!(code, ErrorCode::Busy);
    assert!(text.contains("8192 bytes"), "{text}");
    assert!(waited >= 1, "one change waiting is well within the bound");
}

/// Sam's device as the listener admitted it, then revoked while its connection was still in the
/// handshake (before the session began): the session is given the device as it was admitted.
#[test]
fn a_revocation_during_the_handshake_ends_the_session_at_its_first_frame() {
    let f = fixture();
    let (case, mut doc) = new_case(f.north, f.author());
    // Admitted: `f.device` and `f.practitioner` are the records the listener read.
    f.shared
        .registry
        .set_device_status(&f.device.id, DeviceStatus::Revoked)
        .expect("revoked");
    let mut sam = f.connect();
    let message = doc
        .sync()
        .generate_sync_message(&mut State::new())
        .expect("a message")
        .encode();
    assert!(!sam.session.handle(Frame::Sync { case, message }));
    assert_eq!(sam.session.poll_reply(), None);
    assert!(matches!(
        sam.session.ended(),
        Some((ErrorCode::Revoked, m)) if m.contains("revoked")
    ));
    assert!(f.shared.storage.case(&case).expect("read").is_none());
}

/// Sam admitted as a member of North, then removed from North during the handshake: the session
/// does not send his device a North case on the strength of the admission's records.
#[test]
fn a_team_removal_during_the_handshake_holds_from_the_first_frame() {
    let f = fixture();
    // A North case Sam's device never held, stored through a session of Kim's (North) device.
    let kim = f
        .shared
        .registry
        .add_practitioner("Kim", f.north)
        .expect("practitioner");
    let code = f
        .shared
        .registry
        .create_enrolment(kim.id, [3; 32], time::Duration::hours(1))
        .expect("code");
    let (kims_device, kim) = f
        .shared
        .registry
        .redeem_enrolment(
            code.token(),
            polyphony_core::DeviceId::random(),
            "tablet",
            [4; 32],
        )
        .expect("enrolled");
    let kim_author = Author {
        practitioner: kim.id,
        practitioner_name: kim.name.clone(),
        device: kims_device.id,
    };
    let (case, mut north_doc) = new_case(f.north, kim_author);
    let mut kims = Device1 {
        session: Session::new(f.shared.clone(), 2, kims_device, kim, SessionMode::Normal),
        state: State::new(),
    };
    assert_eq!(
        refusals(&kims.settle(case, &mut north_doc)),
        (false, vec![])
    );

    // Admitted: `f.practitioner` is the record the listener read, with North in it.
    f.shared
        .registry
        .remove_practitioner_from_team(&f.practitioner.id, f.north)
        .expect("removed");
    let mut empty = AutoCommit::new();
    let frames = f.connect().exchange(case, &mut empty);
    assert_eq!(
        only_refusal(&frames),
        (
            ErrorCode::NotAvailable,
            format!("case {case} is not available to this device")
        )
    );
    assert!(!frames.iter().any(|fr| matches!(fr, Frame::Sync { .. })));
    assert!(empty.get_heads().is_empty());
}

/// The welcome carries the team list of the device's teams, with roles; in a live session of a
/// device that takes new lists, a role set, a colleague added and a colleague who leaves the
/// team each send the whole new list once (no write to wait for), another team's change sends
/// nothing, and a device that did not announce the feature is sent no frame it cannot read.
#[test]
fn the_team_list_is_welcomed_and_sent_again_live_when_it_changes() {
    let f = fixture();
    let hello = Hello {
        version: polyphony_core::sync::PROTOCOL_VERSION,
        software: "test".into(),
        live: true,
        features: vec![polyphony_core::sync::FEATURE_COLLEAGUES.into()],
    };
    let registry = &f.shared.registry;
    let jo = registry.add_practitioner("Jo", f.north).expect("Jo");
    registry.add_practitioner("Sol", f.south).expect("Sol");
    let welcome = welcome(&f.shared, &hello, &f.device, &f.practitioner).expect("welcome");
    let listed = welcome.colleagues.clone().expect("a team list");
    let names: Vec<&str> = listed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["Jo", "Sam"], "North only, by name");
    assert!(listed.iter().all(|c| c.teams == [f.north]));

    let mut live = f.connect();
    live.session = live.session.sending_colleagues(welcome.colleagues.clone());
    let mut old = f.connect();
    assert!(live.session.check_access());
    assert!(old.session.check_access());
    let sent = |d: &mut Device1| -> Vec<Vec<(String, String)>> {
        assert!(d.session.check_access());
        let mut lists = Vec::new();
        while let Some(batch) = d.session.poll_reply() {
            assert_eq!(batch.ticket, 0, "a team list waits for no write");
            for fr in batch.frames {
                match fr {
                    Frame::Colleagues(list) => lists.push(
                        list.into_iter()
                            .map(|c| (c.name, c.role.to_string()))
                            .collect(),
                    ),
                    other => panic!("unexpected {}", other.kind()),
                }
            }
        }
        lists
    };
    assert!(sent(&mut live).is_empty(), "nothing changed yet");

    registry
        .set_practitioner_role(&jo.id, StaffRole::PeerSupport)
        .expect("role");
    assert_eq!(
        sent(&mut live),
        [vec![
            ("Jo".to_string(), "peer_support".to_string()),
            ("Sam".to_string(), "practitioner".to_string())
        ]]
    );
    assert!(sent(&mut live).is_empty(), "sent once");

    let kit = registry.add_practitioner("Kit", f.south).expect("Kit");
    assert!(sent(&mut live).is_empty(), "another team's change");
    registry
        .add_practitioner_to_team(&kit.id, f.north)
        .expect("joined");
    assert_eq!(sent(&mut live)[0].len(), 3, "Kit joined North");
    registry
        .remove_practitioner_from_team(&jo.id, f.north)
        .expect("left");
    let lists = sent(&mut live);
    assert!(!lists[0].iter().any(|(n, _)| n == "Jo"), "Jo left North");

    assert!(sent(&mut old).is_empty(), "a device without the feature");
}

/// A second device of the team enrolled for a new practitioner of North.
fn colleague(f: &Fixture, name: &str, seed: u8) -> (Device, Practitioner, Author) {
    let p = f
        .shared
        .registry
        .add_practitioner(name, f.north)
        .expect("practitioner");
    let code = f
        .shared
        .registry
        .create_enrolment(p.id, [seed; 32], time::Duration::hours(1))
        .expect("code");
    let (device, p) = f
        .shared
        .registry
        .redeem_enrolment(
            code.token(),
            polyphony_core::DeviceId::random(),
            "tablet",
            [seed + 1; 32],
        )
        .expect("enrolled");
    let author = Author {
        practitioner: p.id,
        practitioner_name: p.name.clone(),
        device: device.id,
    };
    (device, p, author)
}

/// A note withheld from the person's copy is audited when the server receives the second
/// practitioner's confirmation (who asked, who confirmed; never the words), and only then: the
/// request alone, and the note itself, are ordinary writes.
#[test]
fn a_note_withheld_from_the_person_is_audited_when_confirmed() {
    let f = fixture();
    let (case, mut doc) = new_case(f.north, f.author());
    let mut sams = CaseDoc::load(&doc.save(), Some(f.author())).expect("loads");
    let note = sams
        .add_team_note(
            polyphony_core::model::TeamNoteKind::Safeguarding,
            "Concern words",
        )
        .expect("note");
    sams.request_withholding(&note, "The reason")
        .expect("asked");
    let mut doc = sams.into_automerge();
    let mut sam = f.connect();
    assert_eq!(refusals(&sam.settle(case, &mut doc)), (false, vec![]));
    let withheld_lines = |f: &Fixture| -> Vec<String> {
        f.shared
            .audit
            .entries(Some(case))
            .expect("entries")
            .into_iter()
            .map(|r| r.event.detail)
            .filter(|d| d.contains("withheld from the person's copy"))
            .collect()
    };
    assert!(withheld_lines(&f).is_empty(), "asked is not withheld");

    let (kims_device, kim, kim_author) = colleague(&f, "Kim", 5);
    let mut kims_doc = CaseDoc::load(&doc.save(), Some(kim_author)).expect("loads");
    kims_doc.confirm_withholding(&note).expect("confirmed");
    let mut kims_doc = kims_doc.into_automerge();
    let mut kims = Device1 {
        session: Session::new(f.shared.clone(), 2, kims_device, kim, SessionMode::Normal),
        state: State::new(),
    };
    assert_eq!(refusals(&kims.settle(case, &mut kims_doc)), (false, vec![]));
    let lines = withheld_lines(&f);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(&note.to_string()));
    assert!(lines[0].contains("asked by Sam") && lines[0].contains("confirmed by Kim"));
    assert!(!lines[0].contains("Concern words") && !lines[0].contains("The reason"));
    // Syncing again withholds nothing new, so audits nothing new.
    assert_eq!(refusals(&kims.settle(case, &mut kims_doc)), (false, vec![]));
    assert_eq!(withheld_lines(&f).len(), 1);
}

// ------------------------------------------------------------ a borough's link on the trust hub

/// The trust hub's side: boroughs Ashby (team "North", devices of Ana and Ben) and Brent (its
/// own "North", a device of Cy), each enrolled, with its roster claimed.
struct Hub {
    f: Fixture,
    ashby: crate::registry::Borough,
    brent: crate::registry::Borough,
    ashby_north: TeamId,
    brent_north: TeamId,
    ana: Author,
    ben: Author,
    cy: Author,
}

fn hub() -> Hub {
    use polyphony_core::sync::{RosterDevice, TeamInfo};
    let f = fixture();
    let r = &f.shared.registry;
    let mut enrolled = Vec::new();
    for (name, fingerprint) in [("Ashby", [7u8; 32]), ("Brent", [8u8; 32])] {
        let b = r.add_borough(name).expect("borough");
        let code = r
            .create_borough_enrolment(b.id, [1; 32], time::Duration::hours(1))
            .expect("code");
        enrolled.push(
            r.redeem_borough_enrolment(code.token(), fingerprint)
                .expect("enrolled"),
        );
    }
    let brent = enrolled.pop().expect("two");
    let ashby = enrolled.pop().expect("two");
    let author = |name: &str| Author {
        practitioner: polyphony_core::PractitionerId::random(),
        practitioner_name: name.into(),
        device: polyphony_core::DeviceId::random(),
    };
    let (ana, ben, cy) = (author("Ana"), author("Ben"), author("Cy"));
    let (ashby_north, brent_north) = (TeamId::random(), TeamId::random());
    let on_roster = |a: &Author| RosterDevice {
        device: a.device,
        practitioner: a.practitioner,
        practitioner_name: a.practitioner_name.clone(),
    };
    let north = |id| TeamInfo {
        id,
        name: "North".into(),
    };
    r.claim_teams(&ashby.id, &[north(ashby_north)])
        .expect("teams");
    r.claim_roster(&ashby.id, &[on_roster(&ana), on_roster(&ben)])
        .expect("roster");
    r.claim_teams(&brent.id, &[north(brent_north)])
        .expect("teams");
    r.claim_roster(&brent.id, &[on_roster(&cy)])
        .expect("roster");
    Hub {
        f,
        ashby,
        brent,
        ashby_north,
        brent_north,
        ana,
        ben,
        cy,
    }
}

impl Hub {
    fn link(&self, borough: &crate::registry::Borough, conn: u64) -> Device1 {
        let teams = self
            .f
            .shared
            .registry
            .borough_teams(&borough.id)
            .expect("teams");
        Device1 {
            session: Session::for_borough(self.f.shared.clone(), conn, borough, teams),
            state: State::new(),
        }
    }
}

/// `author` adds a meeting to `doc`, writing with their own device's actor.
fn meeting_by(doc: &mut AutoCommit, author: &Author) -> automerge::ChangeHash {
    let mut d = CaseDoc::from_automerge(doc.clone(), Some(author.clone())).expect("case");
    d.automerge_mut().set_actor(author.actor());
    d.add_meeting(polyphony_core::model::NewMeeting {
        at: polyphony_core::model::parse_datetime("at", "2026-03-14T10:30").expect("time"),
        place: polyphony_core::model::Place::Home,
        attendees: vec![polyphony_core::model::Participant::Person],
    })
    .expect("meeting");
    let mut written = d.into_automerge();
    doc.merge(&mut written).expect("merge");
    written.get_heads()[0]
}

#[test]
fn a_boroughs_link_relays_every_device_of_its_roster_each_as_itself() {
    let h = hub();
    let (case, mut doc) = new_case(h.ashby_north, h.ana.clone());
    let ana_wrote = doc.get_heads()[0];
    let ben_wrote = meeting_by(&mut doc, &h.ben);
    let mut link = h.link(&h.ashby, 5);
    let frames = link.settle(case, &mut doc);
    assert_eq!(refusals(&frames).1, vec![], "{frames:?}");
    assert!(stored(&h.f, case, &ana_wrote) && stored(&h.f, case, &ben_wrote));
    assert_eq!(
        h.f.shared.registry.case_team(&case).expect("read"),
        Some(h.ashby_north)
    );
    // The hub's audit names the borough as who wrote and who was sent the case.
    let records = h.f.shared.audit.entries(Some(case)).expect("audit");
    assert!(records.iter().any(|r| r.event.action == AuditAction::Write
        && r.event.actor
            == Actor::Borough {
                borough: h.ashby.id
            }));
}

#[test]
fn a_link_may_not_relay_a_change_by_a_device_not_on_its_roster() {
    let h = hub();
    // Brent's device, and a device on no roster, writing into a case of Ashby's team.
    for stranger in [
        h.cy.clone(),
        Author {
            device: polyphony_core::DeviceId::random(),
            ..h.ana.clone()
        },
    ] {
        let (case, mut doc) = new_case(h.ashby_north, stranger);
        let mut link = h.link(&h.ashby, 5);
        let frames = link.settle(case, &mut doc);
        let (code, message) = only_refusal(&frames);
        assert_eq!(code, ErrorCode::ForgedAuthor, "{message}");
        assert_eq!(h.f.shared.registry.case_team(&case).expect("read"), None);
        assert!(h.f.shared.storage.case(&case).expect("read").is_none());
    }
}

#[test]
fn a_relayed_change_stamped_with_another_roster_devices_name_is_refused() {
    let h = hub();
    let (case, mut doc) = new_case(h.ashby_north, h.ana.clone());
    let mut link = h.link(&h.ashby, 5);
    assert_eq!(refusals(&link.settle(case, &mut doc)).1, vec![]);
    // Ben's device writes a meeting stamped as Ana's.
    let forged = Author {
        device: h.ben.device,
        ..h.ana.clone()
    };
    let mut d = CaseDoc::from_automerge(doc.clone(), Some(forged)).expect("case");
    d.automerge_mut().set_actor(h.ben.actor());
    d.propose_decision("Forged", polyphony_core::model::Participant::Person)
        .expect("decision");
    let mut written = d.into_automerge();
    let forged_head = written.get_heads()[0];
    doc.merge(&mut written).expect("merge");
    let (code, message) = only_refusal(&link.settle(case, &mut doc));
    assert_eq!(code, ErrorCode::ForgedAuthor, "{message}");
    assert!(message.contains("writes only as itself"), "{message}");
    assert!(!stored(&h.f, case, &forged_head));
}

#[test]
fn a_link_gets_only_its_boroughs_cases_and_ends_at_once_when_revoked() {
    let h = hub();
    let (brents, mut doc) = new_case(h.brent_north, h.cy.clone());
    let mut brent = h.link(&h.brent, 6);
    assert_eq!(refusals(&brent.settle(brents, &mut doc)).1, vec![]);
    // Ashby asks for Brent's case by its id: not available, nothing of it sent.
    let mut ashby = h.link(&h.ashby, 5);
    let mut empty = AutoCommit::new();
    let frames = ashby.exchange(brents, &mut empty);
    assert!(
        !frames.iter().any(|f| matches!(f, Frame::Sync { .. })),
        "{frames:?}"
    );
    assert_eq!(only_refusal(&frames).0, ErrorCode::NotAvailable);
    // A new case for Brent's team through Ashby's link is refused too (not its team's), and
    // nothing of it kept.
    let (case, mut doc) = new_case(h.brent_north, h.ana.clone());
    let (code, message) = only_refusal(&ashby.settle(case, &mut doc));
    assert_eq!(code, ErrorCode::InvalidChange, "{message}");
    assert!(h.f.shared.storage.case(&case).expect("read").is_none());
    // Revoked: the live link ends at its next look, with the reason.
    h.f.shared
        .registry
        .set_borough_status(&h.ashby.id, DeviceStatus::Revoked)
        .expect("revoked");
    assert!(!ashby.session.check_access());
    assert_eq!(
        ashby.session.ended().map(|(code, _)| *code),
        Some(ErrorCode::Revoked)
    );
    assert!(brent.session.check_access());
}

#[test]
fn a_roster_at_its_limits_is_taken_and_one_past_either_refused_with_nothing_kept() {
    use polyphony_core::sync::{
        Roster, RosterDevice, TeamInfo, MAX_ROSTER_DEVICES, MAX_ROSTER_TEAMS,
    };
    let h = hub();
    let teams = |n: usize| -> Vec<TeamInfo> {
        (0..n)
            .map(|i| TeamInfo {
                id: TeamId::random(),
                name: format!("Team {i}"),
            })
            .collect()
    };
    let at_limit = Roster {
        teams: teams(MAX_ROSTER_TEAMS),
        devices: vec![],
    };
    claim_roster(&h.f.shared, &h.brent, &at_limit).expect("at the limit");
    let over = Roster {
        teams: teams(MAX_ROSTER_TEAMS + 1),
        devices: vec![],
    };
    let refused = claim_roster(&h.f.shared, &h.ashby, &over).expect_err("one team too many");
    assert_eq!(refused.code, ErrorCode::TooLarge, "{refused:?}");
    let device = RosterDevice {
        device: polyphony_core::DeviceId::random(),
        practitioner: polyphony_core::PractitionerId::random(),
        practitioner_name: "Ana".into(),
    };
    let over = Roster {
        teams: vec![],
        devices: vec![device.clone(); MAX_ROSTER_DEVICES + 1],
    };
    let refused = claim_roster(&h.f.shared, &h.ashby, &over).expect_err("one device too many");
    assert_eq!(refused.code, ErrorCode::TooLarge, "{refused:?}");
    let r = &h.f.shared.registry;
    assert_eq!(
        r.borough_teams(&h.ashby.id).expect("teams"),
        vec![h.ashby_north]
    );
    assert_eq!(r.roster_entry(&device.device).expect("read"), None);
    assert_eq!(
        r.borough_teams(&h.brent.id).expect("teams").len(),
        MAX_ROSTER_TEAMS + 1
    );
}

#[test]
fn a_borough_joining_again_ends_the_link_made_with_its_old_certificate() {
    let h = hub();
    let mut old = h.link(&h.ashby, 5);
    assert!(old.session.check_access());
    let r = &h.f.shared.registry;
    let code = r
        .create_borough_enrolment(h.ashby.id, [1; 32], time::Duration::hours(1))
        .expect("code");
    let again = r
        .redeem_borough_enrolment(code.token(), [9; 32])
        .expect("joined again");
    assert!(!old.session.check_access());
    assert_eq!(
        old.session.ended().map(|(code, _)| *code),
        Some(ErrorCode::Unauthorised)
    );
    // The link with the new certificate goes on.
    let mut new = h.link(&again, 6);
    assert!(new.session.check_access());
}

#[test]
fn a_roster_naming_another_boroughs_practitioner_is_refused_with_nothing_of_it_kept() {
    use polyphony_core::sync::{Roster, RosterDevice, TeamInfo};
    let h = hub();
    let new_team = TeamInfo {
        id: TeamId::random(),
        name: "South".into(),
    };
    // Ashby names a device of its own as Brent's practitioner Cy: it could then write in Cy's
    // name. Refused, and the team it announced with it is not kept either.
    let roster = Roster {
        teams: vec![new_team.clone()],
        devices: vec![RosterDevice {
            device: polyphony_core::DeviceId::random(),
            practitioner: h.cy.practitioner,
            practitioner_name: h.cy.practitioner_name.clone(),
        }],
    };
    let refused = claim_roster(&h.f.shared, &h.ashby, &roster).expect_err("another's practitioner");
    assert_eq!(refused.code, ErrorCode::Unauthorised, "{refused:?}");
    assert!(
        refused.message.contains(&h.cy.practitioner.to_string()),
        "{refused:?}"
    );
    let r = &h.f.shared.registry;
    assert_eq!(
        r.borough_teams(&h.ashby.id).expect("teams"),
        vec![h.ashby_north]
    );
    assert_eq!(
        r.roster_entry(&roster.devices[0].device).expect("read"),
        None
    );
    // Its own practitioner on a new device is taken.
    let own = Roster {
        teams: vec![new_team],
        devices: vec![RosterDevice {
            device: polyphony_core::DeviceId::random(),
            practitioner: h.ana.practitioner,
            practitioner_name: h.ana.practitioner_name.clone(),
        }],
    };
    claim_roster(&h.f.shared, &h.ashby, &own).expect("its own");
    assert_eq!(r.borough_teams(&h.ashby.id).expect("teams").len(), 2);
}

#[test]
fn a_device_taking_hub_receipts_hears_what_the_trust_hub_holds_after_saved_and_live() {
    let f = fixture();
    let (case, mut doc) = new_case(f.north, f.author());
    let mut plain = f.connect();
    plain.settle(case, &mut doc);
    let heads = doc.get_heads();
    // Nothing from the hub yet: no receipt, even for a device that takes them.
    let mut device = Device1 {
        session: Session::new(
            f.shared.clone(),
            3,
            f.device.clone(),
            f.practitioner.clone(),
            SessionMode::Normal,
        )
        .sending_hub_receipts(true),
        state: State::new(),
    };
    let frames = device.settle(case, &mut doc);
    assert!(
        !frames.iter().any(|x| matches!(x, Frame::HubSaved { .. })),
        "{frames:?}"
    );
    // The link heard the hub acknowledge the case: the next `Saved` is followed by it.
    crate::hub_link::set_acked_heads(&*f.shared.storage.store, &case, &heads).expect("kept");
    dated_change(&mut doc, "Al", 0);
    let frames = device.settle(case, &mut doc);
    let saved_at = frames.iter().position(|x| matches!(x, Frame::Saved { .. }));
    let receipt_at = frames.iter().position(
        |x| matches!(x, Frame::HubSaved { case: c, heads: h } if *c == case && *h == heads),
    );
    assert!(saved_at.is_some() && receipt_at > saved_at, "{frames:?}");
    // And live, when the hub acknowledges more.
    device.session.hub_saved(case);
    let live: Vec<Frame> = std::iter::from_fn(|| device.session.poll_reply())
        .flat_map(|b| b.frames)
        .collect();
    assert!(
        matches!(live.as_slice(), [Frame::HubSaved { .. }]),
        "{live:?}"
    );
    // A device that did not announce the feature is never sent the frame.
    let frames = plain.settle(case, &mut doc);
    plain.session.hub_saved(case);
    let later: Vec<Frame> = std::iter::from_fn(|| plain.session.poll_reply())
        .flat_map(|b| b.frames)
        .collect();
    assert!(
        !frames
            .iter()
            .chain(&later)
            .any(|x| matches!(x, Frame::HubSaved { .. })),
        "{frames:?} {later:?}"
    );
}

/// Ashby asks the hub to hand `case` to Brent's team "North", with one access of its own.
fn transfer_to_brent(h: &Hub, case: CaseId) -> Result<polyphony_core::sync::Transferred, Refusal> {
    let req = polyphony_core::sync::TransferCase {
        case,
        borough: "brent".into(),
        team: "north".into(),
        access: vec![polyphony_core::export::Access {
            at: "2026-12-07T10:00:00Z".into(),
            who: "Ana".into(),
            device: None,
            what: "read".into(),
            kind: None,
        }],
    };
    super::transfer::transfer(&h.f.shared, &h.ashby, &req).map(|(t, _)| t)
}

#[test]
fn a_transfer_moves_the_case_once_answers_again_and_refuses_what_is_not_the_senders() {
    let h = hub();
    let (case, mut doc) = new_case(h.ashby_north, h.ana.clone());
    let mut ashby = h.link(&h.ashby, 5);
    assert_eq!(refusals(&ashby.settle(case, &mut doc)).1, vec![]);
    // Brent's live link was welcomed before: the transfer ends it, to be granted the case.
    let hello = Hello {
        version: PROTOCOL_VERSION,
        software: "test".into(),
        live: true,
        features: Vec::new(),
    };
    let (welcome, _) = welcome_borough(&h.f.shared, &hello, &h.brent).expect("welcome");
    assert!(welcome.cases.is_empty());
    let mut brent = h.link(&h.brent, 6);
    brent.session = Session::for_borough(h.f.shared.clone(), 6, &h.brent, vec![h.brent_north])
        .granting(Vec::new());
    assert!(brent.session.check_access());

    let done = transfer_to_brent(&h, case).expect("transferred");
    assert_eq!((done.borough, done.team.id), (h.brent.id, h.brent_north));
    let registry = &h.f.shared.registry;
    assert_eq!(
        registry.case_team(&case).expect("read"),
        Some(h.brent_north)
    );
    assert!(!brent.session.check_access());
    assert_eq!(
        brent.session.ended().map(|(c, _)| *c),
        Some(ErrorCode::Done)
    );
    let (welcome, _) = welcome_borough(&h.f.shared, &hello, &h.brent).expect("welcome");
    assert_eq!(
        welcome
            .cases
            .iter()
            .map(|g| (g.case, g.team))
            .collect::<Vec<_>>(),
        vec![(case, h.brent_north)]
    );
    // Asked again (the first answer lost): the same answer, nothing carried twice.
    assert_eq!(transfer_to_brent(&h, case).expect("again"), done);
    // Brent moves it on between its own teams; Ashby asking again still hears it went, and
    // where it is now.
    let brent_south = TeamId::random();
    registry
        .claim_teams(
            &h.brent.id,
            &[polyphony_core::sync::TeamInfo {
                id: brent_south,
                name: "South".into(),
            }],
        )
        .expect("a second team");
    let req = polyphony_core::sync::TransferCase {
        case,
        borough: "Brent".into(),
        team: "South".into(),
        access: Vec::new(),
    };
    super::transfer::transfer(&h.f.shared, &h.brent, &req).expect("moved within Brent");
    let again = transfer_to_brent(&h, case).expect("answered again");
    assert_eq!((again.borough, again.team.id), (h.brent.id, brent_south));
    let history = super::transfer::history(&h.f.shared, &h.brent, case).expect("history");
    assert_eq!(history.access.len(), 1);
    assert_eq!(history.access[0].who, "Ana (the Ashby borough)");
    // Ashby gets no history of a case that is not its own any more.
    assert_eq!(
        super::transfer::history(&h.f.shared, &h.ashby, case)
            .unwrap_err()
            .code,
        ErrorCode::NotAvailable
    );
    // Brent's own case, an unknown team, an unknown borough, the sender itself: refused.
    let (brents, mut doc) = new_case(h.brent_north, h.cy.clone());
    let mut brent = h.link(&h.brent, 7);
    assert_eq!(refusals(&brent.settle(brents, &mut doc)).1, vec![]);
    assert_eq!(
        transfer_to_brent(&h, brents).unwrap_err().code,
        ErrorCode::NotAvailable
    );
    let (own, mut doc) = new_case(h.ashby_north, h.ana.clone());
    assert_eq!(refusals(&ashby.settle(own, &mut doc)).1, vec![]);
    for (borough, team, code) in [
        ("Brent", "East", ErrorCode::NotAvailable),
        ("Camden", "North", ErrorCode::NotAvailable),
        ("Ashby", "South", ErrorCode::NotAvailable),
    ] {
        let req = polyphony_core::sync::TransferCase {
            case: own,
            borough: borough.into(),
            team: team.into(),
            access: Vec::new(),
        };
        let refused = super::transfer::transfer(&h.f.shared, &h.ashby, &req);
        assert_eq!(
            refused.map(|_| ()).unwrap_err().code,
            code,
            "{borough}/{team}"
        );
        assert_eq!(registry.case_team(&own).expect("read"), Some(h.ashby_north));
    }
    // The sender itself as the receiver: the hub's registry follows a move between its own
    // teams (here to the team it is in already: answered, nothing moved); never a case that is
    // not the sender's, one transferred away included.
    let within = |case| {
        super::transfer::transfer(
            &h.f.shared,
            &h.ashby,
            &polyphony_core::sync::TransferCase {
                case,
                borough: h.ashby.id.to_string(),
                team: "North".into(),
                access: Vec::new(),
            },
        )
    };
    let (same, _) = within(own).expect("answered");
    assert_eq!((same.borough, same.team.id), (h.ashby.id, h.ashby_north));
    // A real move, to another of Ashby's teams: the hub's registry follows, and audits it; a
    // move naming Brent's team (by its id), with Ashby as the receiver, is refused.
    let ashby_south = TeamId::random();
    registry
        .claim_teams(
            &h.ashby.id,
            &[polyphony_core::sync::TeamInfo {
                id: ashby_south,
                name: "South".into(),
            }],
        )
        .expect("a second team");
    let to = |team: String| {
        super::transfer::transfer(
            &h.f.shared,
            &h.ashby,
            &polyphony_core::sync::TransferCase {
                case: own,
                borough: "Ashby".into(),
                team,
                access: Vec::new(),
            },
        )
    };
    assert_eq!(
        to(h.brent_north.to_string()).unwrap_err().code,
        ErrorCode::NotAvailable
    );
    let (moved, _) = to("south".into()).expect("followed");
    assert_eq!(moved.team.id, ashby_south);
    assert_eq!(registry.case_team(&own).expect("read"), Some(ashby_south));
    let records = h.f.shared.audit.entries(Some(own)).expect("audit");
    assert!(records
        .iter()
        .any(|r| r.event.detail.starts_with("moved within the Ashby borough")));
    assert_eq!(within(brents).unwrap_err().code, ErrorCode::NotAvailable);
    assert_eq!(within(case).unwrap_err().code, ErrorCode::NotAvailable);
    assert_eq!(registry.case_team(&case).expect("read"), Some(brent_south));
}

#[test]
fn a_case_transferred_away_takes_relayed_work_dated_after_the_link_was_told() {
    let h = hub();
    let (case, mut doc) = new_case(h.ashby_north, h.ana.clone());
    let mut ashby = h.link(&h.ashby, 5);
    assert_eq!(refusals(&ashby.settle(case, &mut doc)).1, vec![]);
    transfer_to_brent(&h, case).expect("transferred");
    // The link hears first; Ana's device hears only when it next syncs with Ashby, and wrote
    // on in good faith until then (Ashby held it to its own boundary): dated well past the
    // link's telling and the clock allowance, the hub takes it from the link all the same.
    let mut ashby = h.link(&h.ashby, 8);
    let frames = ashby.exchange(case, &mut doc);
    assert_eq!(refusals(&frames), (true, vec![]), "{frames:?}");
    let told =
        h.f.shared
            .registry
            .told_moved(&borough_as_peer(&h.ashby, Vec::new()).0.id, &case)
            .expect("read")
            .expect("the link was told");
    let mut later = doc.fork().with_actor(h.ana.actor());
    let late = dated_change(
        &mut later,
        "Ani",
        ms(told + MOVED_CLOCK_SKEW + time::Duration::hours(1)),
    );
    let frames = ashby.settle(case, &mut later);
    assert_eq!(refusals(&frames).1, vec![], "{frames:?}");
    assert!(stored(&h.f, case, &late));
    // Past the moved-case window, the link is refused: the case is Brent's.
    let mut short = h.link(&h.ashby, 9);
    let shared = Shared {
        moved_upload_limit: time::Duration::ZERO,
        storage: h.f.shared.storage.clone(),
        registry: h.f.shared.registry.clone(),
        audit: h.f.shared.audit.clone(),
        max_frame: h.f.shared.max_frame,
        revoking_limit: h.f.shared.revoking_limit,
        max_new_cases: h.f.shared.max_new_cases,
        advertise: Vec::new(),
        ca: None,
        limits: h.f.shared.limits.clone(),
    };
    short.session = Session::for_borough(Arc::new(shared), 9, &h.ashby, vec![h.ashby_north]);
    let mut more = later.fork().with_actor(h.ana.actor());
    let refused_change = dated_change(&mut more, "Anya", ms(told));
    let frames = short.settle(case, &mut more);
    assert_eq!(
        only_refusal(&frames).0,
        ErrorCode::NotAvailable,
        "{frames:?}"
    );
    assert!(!stored(&h.f, case, &refused_change));
}

#[test]
fn a_transfers_access_list_at_its_bound_is_kept_and_one_past_it_refused() {
    use super::transfer::MAX_CARRIED_ACCESS;
    let h = hub();
    let list = |n: usize| -> Vec<polyphony_core::export::Access> {
        (0..n)
            .map(|i| polyphony_core::export::Access {
                at: format!("2026-12-07T10:00:00.{i:09}Z"),
                who: "Ana".into(),
                device: None,
                what: "read".into(),
                kind: None,
            })
            .collect()
    };
    let mut link = h.link(&h.ashby, 5);
    let mut send = |access| {
        let (case, mut doc) = new_case(h.ashby_north, h.ana.clone());
        assert_eq!(refusals(&link.settle(case, &mut doc)).1, vec![]);
        let req = polyphony_core::sync::TransferCase {
            case,
            borough: "Brent".into(),
            team: "North".into(),
            access,
        };
        (case, super::transfer::transfer(&h.f.shared, &h.ashby, &req))
    };
    let (at_bound, done) = send(list(MAX_CARRIED_ACCESS));
    done.expect("at the bound: transferred");
    let history = super::transfer::history(&h.f.shared, &h.brent, at_bound).expect("history");
    assert_eq!(history.access.len(), MAX_CARRIED_ACCESS);
    let (past, refused) = send(list(MAX_CARRIED_ACCESS + 1));
    assert_eq!(refused.map(|_| ()).unwrap_err().code, ErrorCode::TooLarge);
    assert_eq!(
        h.f.shared.registry.case_team(&past).expect("read"),
        Some(h.ashby_north),
        "refused: nothing moved"
    );
}
