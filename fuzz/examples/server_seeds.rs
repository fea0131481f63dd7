//! Writes the seed corpus of the `server_session` target: conversations a device of North has
//! with the real server session over the committed fixture (`fixtures/case.automerge`, which
//! `seed_corpus` writes; this one only reads it, so the other targets' seeds stay as they are).
//!
//! Run from `fuzz/`: `cargo run --example server_seeds`.

use std::path::Path;

use automerge::sync::{Message, State, SyncDoc};
use automerge::AutoCommit;
use polyphony_core::model::{Author, CaseDoc, NewCase, NewMeeting, NoteKind, Participant, Place};
use polyphony_core::sync::{Frame, OfflineRead, Wiped};
use polyphony_core::CaseId;
use polyphony_fuzz::server::{World, DEVICE, NORTH, SAM, SOUTH_CASE};

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

/// The device's practitioner, writing on the device.
fn sam() -> Author {
    Author {
        practitioner: SAM,
        practitioner_name: "Sam".into(),
        device: DEVICE,
    }
}

/// The fixture as the device holds it, with a meeting Sam recorded on it (a stamped change).
fn with_own_meeting() -> AutoCommit {
    let mut case =
        CaseDoc::from_automerge(polyphony_fuzz::fixture_doc(), Some(sam())).expect("the fixture");
    let at = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let meeting = case
        .add_meeting(NewMeeting {
            at,
            place: Place::Home,
            attendees: vec![Participant::Person],
        })
        .expect("a meeting");
    case.append_text(&meeting, NoteKind::Notes, "Talked about sleep.")
        .expect("notes");
    case.into_automerge()
}

/// A seed: the mode byte (see `polyphony_fuzz::server`), then the frames.
fn seed(flags: u8, frames: &[u8]) -> Vec<u8> {
    let mut bytes = vec![flags];
    bytes.extend_from_slice(frames);
    bytes
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/server_session");
    std::fs::create_dir_all(&dir).expect("corpus directory");
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).expect("seed");

    // The device records a meeting on the fixture and uploads it.
    let mut world = World::new();
    let fixture = world.fixture;
    let mut doc = with_own_meeting();
    let mut stream = sync(&mut world, fixture, &mut doc);
    world.check();
    let mut stored = world.stored(&fixture).expect("stored");
    assert_eq!(
        stored.get_heads(),
        doc.get_heads(),
        "the server took the device's own meeting"
    );
    write("own-meeting", &seed(0, &stream));

    // Then reads it made offline, its access list, a look at the other team's case, and done.
    let mut state = State::new();
    let mut empty = AutoCommit::new();
    let read = Frame::Reads(vec![OfflineRead {
        case: fixture,
        at: crate_now(),
        what: "case show".into(),
        seq: 1,
    }]);
    stream.extend(send(&mut world, &mut empty, &mut state, read));
    let list = Frame::AccessLogRequest { case: fixture };
    stream.extend(send(&mut world, &mut empty, &mut state, list));
    stream.extend(sync(&mut world, SOUTH_CASE, &mut AutoCommit::new()));
    stream.extend(send(&mut world, &mut empty, &mut state, Frame::Done));
    world.check();
    write("a-whole-session", &seed(0, &stream));

    // A new case for North, opened on the device.
    let mut world = World::new();
    let case = CaseId(uuid::Uuid::from_u128(
        0x0e40_0000_4000_8000_0000_0000_0000_0007,
    ));
    let mut new = CaseDoc::create(
        case,
        NORTH,
        NewCase {
            name: "Alex".into(),
            ..Default::default()
        },
        sam(),
    )
    .expect("a case")
    .into_automerge();
    let stream = sync(&mut world, case, &mut new);
    world.check();
    assert!(world.stored(&case).is_some(), "the new case was stored");
    write("new-case", &seed(0, &stream));

    // A device being revoked (confirming wipes): it uploads, says done, is told to wipe, and says
    // it kept nothing.
    let mut world = World::with_mode(3);
    let mut doc = with_own_meeting();
    let mut stream = sync(&mut world, fixture, &mut doc);
    let (mut state, mut empty) = (State::new(), AutoCommit::new());
    stream.extend(send(&mut world, &mut empty, &mut state, Frame::Done));
    let wiped = Frame::Wiped(Wiped { kept: Vec::new() });
    stream.extend(send(&mut world, &mut empty, &mut state, wiped));
    world.check();
    write("revoked-uploads-then-wipes", &seed(3, &stream));

    // A device that holds nothing yet: it receives the fixture.
    let mut world = World::new();
    let mut received = AutoCommit::new();
    write(
        "first-sync",
        &seed(0, &sync(&mut world, fixture, &mut received)),
    );
    assert_eq!(
        received.get_heads(),
        polyphony_fuzz::fixture_doc().get_heads(),
        "the device received the fixture"
    );
    println!("wrote the server_session seeds under {}", dir.display());
}

/// Now, as a device dates a read (RFC 3339).
fn crate_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}
