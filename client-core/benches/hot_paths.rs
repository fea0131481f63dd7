//! Micro-benchmarks of the sync hot paths, on one care-record-shaped case (the shape of
//! `polyphony-load`'s caseload: a person, 5 members, 3 meetings with ~1.5 KB of notes each, 3
//! decisions with positions; 27 changes).
//!
//! - `frame`: encoding and decoding a `Sync` frame that carries a whole case.
//! - `sync_step`: what one side does per message: the whole `prepare` (apply on a copy, check,
//!   encode the new changes for the store), and its parts, to see which dominates.
//! - `store`: appending a case's changes to the encrypted sled store, and one flush.
//! - `view`: building the case's view (what every screen and copy is made from), as recorded, and
//!   with notes changed after a read-back (which walks the history since the read-back).
//! - `unlock`: opening a passphrase store (argon2id, unwrapping the data key, the verifier) with
//!   today's parameters and with those used before df16133, and the one-off re-key of a store of
//!   1,000 care records (what upgrading an old profile, or changing its passphrase, costs).
//!
//! Run with `cargo bench -p polyphony-core --bench hot_paths` (`-- unlock` for that group alone).

// Benchmark code: a failure is a broken benchmark, not a user's problem.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use automerge::sync::{Message, State, SyncDoc};
use automerge::{ActorId, AutoCommit};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use polyphony_core::model::{
    validate_document, Author, CaseDoc, NewCase, NewMeeting, NewMember, NoteKind, Participant,
    Place, ReadbackResponse, Stance,
};
use polyphony_core::store::{KdfParams, KeySource, SealKey, SledOptions, SledStore, Store};
use polyphony_core::sync::{prepare, CasePolicy, Frame, FrameDecoder, PeerSync, DEFAULT_MAX_FRAME};
use polyphony_core::{CaseId, DeviceId, PractitionerId, TeamId};

const NOTE: &str = "Maria said the nights have been the hardest part; she wakes around three and the \
thoughts start again. Her mother described feeling shut out since the admission and wants to \
understand what happened in those weeks. Ana said she is worried but did not want to speak over her \
sister, and asked that we slow down. We talked about what a good week would look like. ";

fn care_record() -> AutoCommit {
    let author = Author {
        practitioner: PractitionerId::random(),
        practitioner_name: "Sam Adebayo".into(),
        device: DeviceId::random(),
    };
    let mut doc = CaseDoc::create(
        CaseId::random(),
        TeamId::random(),
        NewCase {
            name: "Maria Lopez".into(),
            ..Default::default()
        },
        author,
    )
    .expect("create");
    let members: Vec<_> = (0..5)
        .map(|i| {
            doc.add_member(NewMember {
                name: format!("Member {i}"),
                relationship: "sister".into(),
                ..Default::default()
            })
            .expect("member")
        })
        .collect();
    for week in 0..3 {
        let m = doc
            .add_meeting(NewMeeting {
                at: time::macros::datetime!(2026-01-12 10:00 UTC) + time::Duration::weeks(week),
                place: Place::Home,
                attendees: vec![Participant::Person, Participant::Member(members[0])],
            })
            .expect("meeting");
        for _ in 0..3 {
            doc.append_text(&m, NoteKind::Notes, &NOTE.repeat(2)[..500])
                .expect("notes");
        }
    }
    for member in members.iter().take(3) {
        let d = doc
            .propose_decision("Try a weekly walking group", Participant::Person)
            .expect("decision");
        doc.record_position(
            &d,
            Participant::Person,
            Stance::Agree,
            Some("I'd like that"),
        )
        .expect("position");
        doc.record_position(
            &d,
            Participant::Member(*member),
            Stance::Unsure,
            Some("Not yet"),
        )
        .expect("position");
    }
    doc.into_automerge()
}

/// The first message a device sends for a new case to a server that has nothing.
fn first_message(doc: &mut AutoCommit) -> Vec<u8> {
    // The server's opening message (its empty heads), so the device's reply carries every change.
    let mut empty = AutoCommit::new();
    let mut server_state = State::new();
    let hello = empty
        .sync()
        .generate_sync_message(&mut server_state)
        .expect("opening message");
    let mut state = State::new();
    doc.sync()
        .receive_sync_message(&mut state, hello)
        .expect("receive");
    doc.sync()
        .generate_sync_message(&mut state)
        .expect("changes")
        .encode()
}

struct AnyAuthor;
impl CasePolicy for AnyAuthor {
    fn author_allowed(&self, _: &ActorId) -> bool {
        true
    }
    fn check(&self, _: &AutoCommit) -> Result<(), polyphony_core::sync::PolicyRefusal> {
        Ok(())
    }
}

fn frame(c: &mut Criterion) {
    let mut doc = care_record();
    let message = first_message(&mut doc);
    let frame = Frame::Sync {
        case: CaseId::random(),
        message,
    };
    let mut bytes = Vec::new();
    frame.encode(&mut bytes);
    let mut g = c.benchmark_group("frame");
    g.throughput(criterion::Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode_sync_whole_case", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(bytes.len());
            black_box(&frame).encode(&mut out);
            out
        })
    });
    g.bench_function("decode_sync_whole_case", |b| {
        b.iter(|| {
            let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
            dec.push(black_box(&bytes));
            dec.next_frame().expect("valid").expect("whole")
        })
    });
    g.finish();
}

fn sync_step(c: &mut Criterion) {
    let mut doc = care_record();
    let message = first_message(&mut doc);
    let mut g = c.benchmark_group("sync_step");
    g.bench_function("prepare_new_case", |b| {
        b.iter_batched(
            AutoCommit::new,
            |mut empty| {
                prepare(&mut empty, &PeerSync::default(), &message, &AnyAuthor).expect("ok")
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("receive_only", |b| {
        b.iter_batched(
            AutoCommit::new,
            |mut empty| {
                let m = Message::decode(&message).expect("decode");
                empty
                    .sync()
                    .receive_sync_message(&mut State::new(), m)
                    .expect("receive");
                empty
            },
            BatchSize::SmallInput,
        )
    });
    let mut full = AutoCommit::new();
    full.sync()
        .receive_sync_message(
            &mut State::new(),
            Message::decode(&message).expect("decode"),
        )
        .expect("receive");
    g.bench_function("get_changes_all", |b| {
        b.iter_batched(
            || full.clone(),
            |mut d| d.get_changes(&[]).len(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("get_changes_meta_all", |b| {
        b.iter_batched(
            || full.clone(),
            |mut d| d.get_changes_meta(&[]).len(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("validate_document", |b| {
        b.iter(|| validate_document(black_box(&full)).expect("valid"))
    });
    g.bench_function("save_after_nothing", |b| {
        b.iter_batched(
            || full.clone(),
            |mut d| d.save_after(&[]),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("clone_case", |b| b.iter(|| black_box(&full).clone()));
    g.bench_function("generate_whole_case_message", |b| {
        b.iter_batched(
            || (full.clone(), State::new()),
            |(mut d, mut s)| {
                let mut empty = AutoCommit::new();
                let hello = empty
                    .sync()
                    .generate_sync_message(&mut State::new())
                    .expect("hello");
                d.sync().receive_sync_message(&mut s, hello).expect("rx");
                d.sync()
                    .generate_sync_message(&mut s)
                    .expect("msg")
                    .encode()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn view(c: &mut Criterion) {
    let mut g = c.benchmark_group("view");
    let plain = CaseDoc::from_automerge(care_record(), None).expect("valid");
    g.bench_function("view_case", |b| b.iter(|| black_box(&plain).view()));
    // The last meeting read back, then its notes edited 20 times: every view lists the changes.
    let author = Author {
        practitioner: PractitionerId::random(),
        practitioner_name: "Kit Byrne".into(),
        device: DeviceId::random(),
    };
    let mut changed = CaseDoc::from_automerge(care_record(), Some(author)).expect("valid");
    let last = changed.view().meetings.last().expect("a meeting").meta.id;
    changed
        .record_readback(
            &last,
            Participant::Person,
            ReadbackResponse::Confirmed,
            None,
        )
        .expect("read-back");
    for i in 0..20 {
        changed
            .append_text(
                &last,
                NoteKind::Notes,
                &format!("Remembered later, line {i}."),
            )
            .expect("notes");
    }
    assert_eq!(
        changed
            .view()
            .meetings
            .last()
            .unwrap()
            .changed_after_readback
            .len(),
        20
    );
    g.bench_function("view_case_20_changes_after_readback", |b| {
        b.iter(|| black_box(&changed).view())
    });
    g.finish();
}

fn store(c: &mut Criterion) {
    let mut doc = care_record();
    let chunk = doc.save();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(dir.path(), KeySource::Raw(SealKey::generate())).expect("open");
    let mut g = c.benchmark_group("store");
    g.throughput(criterion::Throughput::Bytes(chunk.len() as u64));
    g.bench_function("append_chunk_new_case", |b| {
        b.iter(|| {
            store
                .append_chunk(&CaseId::random(), &chunk)
                .expect("append")
        })
    });
    g.bench_function("append_chunk_and_flush", |b| {
        b.iter(|| {
            store
                .append_chunk(&CaseId::random(), &chunk)
                .expect("append");
            store.flush().expect("flush")
        })
    });
    g.finish();
}

/// The parameters every passphrase store was made with before df16133 (for comparison only).
const BEFORE_DF16133: KdfParams = KdfParams {
    memory_kib: 19 * 1024,
    iterations: 2,
    parallelism: 1,
};

fn unlock(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group("unlock");
    g.sample_size(10);
    for (name, kdf) in [
        ("open_recommended", KdfParams::RECOMMENDED),
        ("open_before_df16133", BEFORE_DF16133),
    ] {
        let path = dir.path().join(name);
        let options = SledOptions {
            kdf,
            ..SledOptions::default()
        };
        let passphrase = || KeySource::Passphrase("correct horse battery staple".into());
        drop(SledStore::open_with(&path, passphrase(), options.clone()).expect("create"));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut spent = std::time::Duration::ZERO;
                for _ in 0..iters {
                    let started = std::time::Instant::now();
                    let store =
                        SledStore::open_with(&path, passphrase(), options.clone()).expect("unlock");
                    spent += started.elapsed();
                    // Closing is not unlocking: sled's shutdown stays out of the measurement.
                    drop(store);
                }
                spent
            })
        });
    }

    // The one-off re-key of a profile of 1,000 care records (each a whole saved case), back and
    // forth between two passphrases: two derivations and every value re-sealed, fsynced, switched.
    let mut doc = care_record();
    let chunk = doc.save();
    let path = dir.path().join("rekey");
    let store = SledStore::open(&path, KeySource::Passphrase("one".into())).expect("create");
    for _ in 0..1_000 {
        store
            .append_chunk(&CaseId::random(), &chunk)
            .expect("append");
    }
    store.flush().expect("flush");
    drop(store);
    let mut current = "one";
    g.throughput(criterion::Throughput::Bytes(1_000 * chunk.len() as u64));
    g.bench_function("rekey_1000_records", |b| {
        b.iter(|| {
            let next = if current == "one" { "two" } else { "one" };
            SledStore::change_key(
                &path,
                KeySource::Passphrase(current.into()),
                KeySource::Passphrase(next.into()),
                SledOptions::default(),
            )
            .expect("rekey");
            current = next;
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = frame, sync_step, view, store, unlock
}
criterion_main!(benches);
