use polyphony_core::store::MemoryStore;

use super::*;

fn device_actor() -> Actor {
    Actor::Device {
        device: DeviceId::random(),
        practitioner: PractitionerId::random(),
    }
}

/// A log of `n` records over a fresh store, and the store.
fn log_with(n: u64) -> (Arc<MemoryStore>, AuditLog) {
    let store = Arc::new(MemoryStore::new());
    let log = AuditLog::open(store.clone()).expect("open");
    for i in 0..n {
        let seq = log
            .record(AuditEvent::now(
                device_actor(),
                AuditAction::Read,
                Some(CaseId::random()),
                format!("sent {i} changes"),
            ))
            .expect("record");
        assert_eq!(seq, i);
    }
    (store, log)
}

fn raw(store: &MemoryStore) -> Vec<(u64, Vec<u8>)> {
    store.read_log(AUDIT_LOG, 0).expect("read")
}

fn bad_seq(result: Result<VerifyReport, AuditError>) -> (u64, Tamper) {
    match result {
        Err(AuditError::Tampered { seq, problem }) => (seq, problem),
        other => panic!("expected a verification failure, got {other:?}"),
    }
}

#[test]
fn records_chain_and_verify() {
    let (store, log) = log_with(5);
    let report = log.verify().expect("intact");
    assert_eq!(report.entries, 5);
    let entries = log.entries(None).expect("entries");
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[0].prev, "0".repeat(64));
    for pair in entries.windows(2) {
        assert_eq!(pair[1].prev, pair[0].hash);
        assert_eq!(pair[1].seq, pair[0].seq + 1);
    }
    assert_eq!(report.head, entries[4].hash);
    assert_eq!(verify_records(raw(&store)).expect("pure"), report);
}

#[test]
fn an_empty_log_verifies() {
    let report = verify_records(Vec::new()).expect("empty");
    assert_eq!(report.entries, 0);
    assert_eq!(report.head, "0".repeat(64));
}

#[test]
fn an_edited_detail_is_detected_at_its_entry() {
    let (store, _) = log_with(4);
    let mut records = raw(&store);
    let text = String::from_utf8(records[2].1.clone()).expect("utf8");
    records[2].1 = text
        .replace("sent 2 changes", "sent 9 changes")
        .into_bytes();
    assert_eq!(bad_seq(verify_records(records)), (2, Tamper::Altered));
}

#[test]
fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
    let (store, _) = log_with(4);
    let mut records = raw(&store);
    let mut record: AuditRecord = serde_json::from_slice(&records[1].1).expect("parse");
    record.event.detail = "nothing happened".into();
    let mut prev = [0u8; 32];
    hex::decode_to_slice(&record.prev, &mut prev).expect("hex");
    record.hash = hex::encode(hash_record(&prev, &record).expect("hash"));
    records[1].1 = serde_json::to_vec(&record).expect("encode");
    assert_eq!(bad_seq(verify_records(records)), (2, Tamper::BrokenChain));
}

#[test]
fn a_deleted_entry_is_detected() {
    let (store, _) = log_with(5);
    // As the store would return it: a gap in the positions.
    let mut records = raw(&store);
    records.remove(2);
    assert_eq!(
        bad_seq(verify_records(records.clone())),
        (2, Tamper::Missing { found: 3 })
    );
    // Renumbered as if the log had been rebuilt without it.
    let renumbered: Vec<_> = records
        .into_iter()
        .enumerate()
        .map(|(i, (_, bytes))| (i as u64, bytes))
        .collect();
    assert_eq!(
        bad_seq(verify_records(renumbered)),
        (2, Tamper::Missing { found: 3 })
    );
}

#[test]
fn a_deleted_first_entry_is_detected() {
    let (store, _) = log_with(3);
    let renumbered: Vec<_> = raw(&store)
        .into_iter()
        .skip(1)
        .enumerate()
        .map(|(i, (_, bytes))| (i as u64, bytes))
        .collect();
    assert_eq!(
        bad_seq(verify_records(renumbered)),
        (0, Tamper::Missing { found: 1 })
    );
}

#[test]
fn reordered_entries_are_detected() {
    let (store, _) = log_with(5);
    let mut records = raw(&store);
    // Swap the contents of positions 1 and 3, keeping the positions.
    let (a, b) = (records[1].1.clone(), records[3].1.clone());
    records[1].1 = b;
    records[3].1 = a;
    assert_eq!(
        bad_seq(verify_records(records)),
        (1, Tamper::Missing { found: 3 })
    );
}

#[test]
fn reordered_entries_with_rewritten_numbers_are_detected() {
    let (store, _) = log_with(4);
    let mut records = raw(&store);
    let mut one: AuditRecord = serde_json::from_slice(&records[1].1).expect("parse");
    let mut two: AuditRecord = serde_json::from_slice(&records[2].1).expect("parse");
    std::mem::swap(&mut one.seq, &mut two.seq);
    records[1].1 = serde_json::to_vec(&two).expect("encode");
    records[2].1 = serde_json::to_vec(&one).expect("encode");
    assert_eq!(bad_seq(verify_records(records)).0, 1);
}

#[test]
fn garbage_and_added_fields_are_detected() {
    let (store, _) = log_with(3);
    let mut records = raw(&store);
    records[1].1 = b"not a record".to_vec();
    assert!(matches!(
        bad_seq(verify_records(records)),
        (1, Tamper::Unreadable(_))
    ));

    let mut records = raw(&store);
    let text = String::from_utf8(records[0].1.clone()).expect("utf8");
    records[0].1 = text.replacen('{', "{\"note\":\"added\",", 1).into_bytes();
    assert!(matches!(
        bad_seq(verify_records(records)),
        (0, Tamper::Unreadable(_))
    ));
}

#[test]
fn the_verification_error_names_the_entry_and_what_to_do() {
    let err = AuditError::Tampered {
        seq: 41,
        problem: Tamper::Altered,
    };
    let message = err.to_string();
    assert!(message.contains("entry 41"), "{message}");
    assert!(message.contains("information governance"), "{message}");
}

#[test]
fn reopening_continues_the_chain() {
    let (store, log) = log_with(3);
    drop(log);
    let log = AuditLog::open(store.clone()).expect("reopen");
    assert_eq!(
        log.record(AuditEvent::now(
            Actor::Admin,
            AuditAction::TeamAdded,
            None,
            "North"
        ))
        .expect("record"),
        3
    );
    assert_eq!(log.verify().expect("intact").entries, 4);
}

#[test]
fn reopening_a_long_log_uses_and_distrusts_the_hint() {
    let (store, log) = log_with(HEAD_HINT_EVERY + 3);
    drop(log);
    assert_eq!(
        store.get_meta(HEAD_NS, HEAD_KEY).expect("read"),
        Some(HEAD_HINT_EVERY.to_string().into_bytes())
    );
    let log = AuditLog::open(store.clone()).expect("reopen");
    assert_eq!(
        log.record(AuditEvent::now(
            Actor::Server,
            AuditAction::Connect,
            None,
            ""
        ))
        .expect("record"),
        HEAD_HINT_EVERY + 3
    );
    drop(log);
    // A hint beyond the end of the log is ignored.
    store
        .put_meta(HEAD_NS, HEAD_KEY, b"999999")
        .expect("bad hint");
    let log = AuditLog::open(store.clone()).expect("reopen");
    assert_eq!(
        log.record(AuditEvent::now(
            Actor::Server,
            AuditAction::Connect,
            None,
            ""
        ))
        .expect("record"),
        HEAD_HINT_EVERY + 4
    );
    assert_eq!(log.verify().expect("intact").entries, HEAD_HINT_EVERY + 5);
}

#[test]
fn concurrent_records_form_one_chain() {
    let (store, log) = log_with(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..25 {
                    log.record(AuditEvent::now(
                        device_actor(),
                        AuditAction::Write,
                        None,
                        "accepted 1 change",
                    ))
                    .expect("record");
                }
            });
        }
    });
    assert_eq!(log.verify().expect("intact").entries, 100);
    assert_eq!(raw(&store).len(), 100);
}

#[test]
fn entries_filter_by_case() {
    let (_, log) = log_with(3);
    let case = CaseId::random();
    log.record(AuditEvent::now(
        device_actor(),
        AuditAction::Write,
        Some(case),
        "accepted 2 changes",
    ))
    .expect("record");
    let about = log.entries(Some(case)).expect("entries");
    assert_eq!(about.len(), 1);
    assert_eq!(about[0].seq, 3);
    assert_eq!(about[0].event.action, AuditAction::Write);
}

#[test]
fn an_offline_read_keeps_the_device_time_and_records_the_upload_time() {
    let (_, log) = log_with(0);
    let (device, practitioner, case) = (
        DeviceId::random(),
        PractitionerId::random(),
        CaseId::random(),
    );
    let read = OfflineRead {
        case,
        at: "2026-01-02T03:04:05Z".into(),
        what: "case show".into(),
        seq: 7,
    };
    log.record(AuditEvent::offline_read(device, practitioner, &read))
        .expect("record");
    let record = &log.entries(Some(case)).expect("entries")[0];
    assert_eq!(record.event.at, "2026-01-02T03:04:05Z");
    assert_ne!(record.recorded_at, record.event.at);
    assert_eq!(record.event.action, AuditAction::OfflineRead);
    assert!(record.event.detail.contains("case show"));
    // The person's copy is told what the device read it for, without the outbox number.
    assert_eq!(device_read_purpose(&record.event.detail), "case show");

    let odd = OfflineRead {
        at: "yesterday".into(),
        what: "x".repeat(MAX_DEVICE_TEXT * 4),
        ..read
    };
    let event = AuditEvent::offline_read(device, practitioner, &odd);
    assert!(OffsetDateTime::parse(&event.at, &Rfc3339).is_ok());
    assert!(event.detail.contains("unreadable time"));
    assert!(event.detail.chars().count() < MAX_DEVICE_TEXT + 200);
}

#[test]
fn a_damaged_last_record_is_refused_on_open() {
    let store = Arc::new(MemoryStore::new());
    store.append_log(AUDIT_LOG, b"garbage").expect("append");
    assert!(matches!(
        AuditLog::open(store),
        Err(AuditError::Tampered { seq: 0, .. })
    ));
}

#[test]
fn the_chain_continues_after_a_restart_on_the_disk_store() {
    use polyphony_core::store::{KeySource, SledStore};
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("server.key");
    KeySource::create_key_file(&key_file).expect("key");
    let open = || -> Arc<dyn Store> {
        Arc::new(
            SledStore::open(&dir.path().join("db"), KeySource::KeyFile(key_file.clone()))
                .expect("open"),
        )
    };
    {
        let store = open();
        let log = AuditLog::open(store.clone()).expect("open log");
        for _ in 0..3 {
            log.record(AuditEvent::now(
                Actor::Admin,
                AuditAction::TeamAdded,
                None,
                "North",
            ))
            .expect("record");
        }
        store.flush().expect("flush");
    }
    let log = AuditLog::open(open()).expect("reopen log");
    assert_eq!(
        log.record(AuditEvent::now(
            Actor::Server,
            AuditAction::Connect,
            None,
            ""
        ))
        .expect("record"),
        3
    );
    assert_eq!(log.verify().expect("intact").entries, 4);
}

/// A case's records come from its index, and the index survives what can leave it short: a log
/// written before the index existed, and an index entry lost after the last index hint. The log
/// goes past the hint interval ([`HEAD_HINT_EVERY`]) three times, and is reopened each time.
#[test]
fn a_cases_records_come_from_its_index_past_the_hint_and_after_losing_index_entries() {
    let store = Arc::new(MemoryStore::new());
    let cases = [CaseId::random(), CaseId::random(), CaseId::random()];
    let total = 3 * HEAD_HINT_EVERY + 17;
    let expected = |c: usize| (0..total).filter(|i| (*i as usize) % 3 == c).count();
    {
        let log = AuditLog::open(store.clone()).expect("open");
        for i in 0..total {
            log.record(AuditEvent::now(
                device_actor(),
                AuditAction::Read,
                Some(cases[i as usize % 3]),
                format!("read {i}"),
            ))
            .expect("record");
            // And records about no case, which no index holds.
            log.record(AuditEvent::now(
                Actor::Admin,
                AuditAction::TeamAdded,
                None,
                "team",
            ))
            .expect("record");
        }
        for (c, case) in cases.iter().enumerate() {
            let got = log.entries(Some(*case)).expect("entries");
            assert_eq!(got.len(), expected(c));
            assert!(got.windows(2).all(|w| w[0].seq < w[1].seq), "oldest first");
            assert!(got.iter().all(|r| r.event.case == Some(*case)));
        }
    }
    // A crash lost the index entries of the last records (written after the last hint), and of
    // one whole case (as a log from before the index): reopening indexes them again.
    let last: Vec<String> = store
        .scan_meta(&case_index(&cases[0]))
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    store
        .delete_meta(&case_index(&cases[0]), last.last().unwrap())
        .unwrap();
    for (k, _) in store.scan_meta(&case_index(&cases[1])).unwrap() {
        store.delete_meta(&case_index(&cases[1]), &k).unwrap();
    }
    let reopened = AuditLog::open(store.clone()).expect("reopen");
    assert_eq!(
        reopened.entries(Some(cases[0])).unwrap().len(),
        expected(0),
        "an index entry lost after the last hint is found again"
    );
    // The whole-case loss lies before the hint: the index says it is complete. Only a log that
    // never had an index (no hint at all) is indexed from the start.
    store.delete_meta(HEAD_NS, INDEXED_KEY).unwrap();
    let rebuilt = AuditLog::open(store.clone()).expect("reopen without a hint");
    assert_eq!(rebuilt.entries(Some(cases[1])).unwrap().len(), expected(1));
    assert_eq!(rebuilt.entries(Some(cases[2])).unwrap().len(), expected(2));
    assert_eq!(rebuilt.entries(None).unwrap().len() as u64, 2 * total);
    rebuilt.verify().expect("the chain is intact");
}
