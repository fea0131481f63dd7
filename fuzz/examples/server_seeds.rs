//! Writes the seed corpus of the `server_session` target: conversations a device of North has
//! with the real server session over the committed fixture (`fixtures/case.automerge`, which
//! `seed_corpus` writes; this one only reads it, so the other targets' seeds stay as they are).
//!
//! Run from `fuzz/`: `cargo run --example server_seeds`.

use std::path::Path;

use automerge::sync::{Message, State, SyncDoc};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{AutoCommit, ReadDoc, ROOT};
use polyphony_core::model::actor_for_device;
use polyphony_core::sync::{Frame, OfflineRead};
use polyphony_core::CaseId;
use polyphony_fuzz::server::{World, DEVICE, SOUTH_CASE};

/// Send `frame` to the session, take its answers into `doc`; the frame's bytes.
fn send(world: &mut World, doc: &mut AutoCommit, state: &mut State, frame: Frame) -> Vec<u8> {
    let mut bytes = Vec::new();
    frame.encode(&mut bytes);
    world.session.handle(frame);
    while let Some(batch) = world.session.poll_reply() {
        for f in batch.frames {
            if let Frame::Sync { message, .. } = f {
                let m = Message::decode(&message).expect("a sync message");
                doc.sync().receive_sync_message(state, m).expect("applies");
            }
        }
    }
    bytes
}

/// Sync `doc` as `case` until the device has nothing more to say; every frame it sent.
fn sync(world: &mut World, case: CaseId, doc: &mut AutoCommit) -> Vec<u8> {
    let mut state = State::new();
    let mut stream = Vec::new();
    for _ in 0..16 {
        let Some(m) = doc.sync().generate_sync_message(&mut state) else {
            break;
        };
        let frame = Frame::Sync {
            case,
            message: m.encode(),
        };
        stream.extend(send(world, doc, &mut state, frame));
    }
    stream
}

/// The device's own change to the person's preferred name, under its actor.
fn own_change(doc: &mut AutoCommit, name: &str) {
    let person = match doc.get(ROOT, "person").expect("read") {
        Some((_, id)) => id,
        None => panic!("the fixture has a person"),
    };
    doc.put(&person, "preferred_name", name).expect("put");
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    doc.commit_with(CommitOptions::default().with_time(now));
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/server_session");
    std::fs::create_dir_all(&dir).expect("corpus directory");
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).expect("seed");

    // The device holds the fixture and writes to it.
    let mut world = World::new();
    let fixture = world.fixture;
    let mut doc = polyphony_fuzz::fixture_doc().with_actor(actor_for_device(&DEVICE));
    own_change(&mut doc, "Mari");
    let mut stream = sync(&mut world, fixture, &mut doc);
    world.check();
    let mut stored = world.stored(&fixture).expect("stored");
    assert_eq!(
        stored.get_heads(),
        doc.get_heads(),
        "the server took the device's own change"
    );
    write("own-change", &stream);

    // Then reads it made offline, its access list, a look at the other team's case, and done.
    let mut state = State::new();
    let mut empty = AutoCommit::new();
    let read = Frame::Reads(vec![OfflineRead {
        case: fixture,
        at: "2026-03-14T10:30:00Z".into(),
        what: "case show".into(),
        seq: 1,
    }]);
    stream.extend(send(&mut world, &mut empty, &mut state, read));
    let list = Frame::AccessLogRequest { case: fixture };
    stream.extend(send(&mut world, &mut empty, &mut state, list));
    stream.extend(sync(&mut world, SOUTH_CASE, &mut AutoCommit::new()));
    stream.extend(send(&mut world, &mut empty, &mut state, Frame::Done));
    world.check();
    write("a-whole-session", &stream);

    // A device that holds nothing yet: it receives the fixture.
    let mut world = World::new();
    let mut received = AutoCommit::new();
    write("first-sync", &sync(&mut world, fixture, &mut received));
    assert_eq!(
        received.get_heads(),
        polyphony_fuzz::fixture_doc().get_heads(),
        "the device received the fixture"
    );
    println!("wrote the server_session seeds under {}", dir.display());
}
