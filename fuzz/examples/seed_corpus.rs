//! Writes `fixtures/case.automerge` and the seed corpus under `corpus/<target>/`, all from one
//! freshly made case, so the seeds are about the fixture the targets load. Run it (from `fuzz/`)
//! after a change to the record model or the wire format, then rebuild the targets:
//!
//! ```sh
//! cargo run --example seed_corpus
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use automerge::sync::{State, SyncDoc};
use automerge::{ActorId, AutoCommit, ChangeHash};
use polyphony_core::model::{
    self, Author, CaseDoc, NewCase, NewMeeting, NewMember, NoteKind, Participant, Place, Stance,
};
use polyphony_core::sync::{
    answer, CasePolicy, EnrolRequest, Enrolled, ErrorCode, Frame, Hello, OfflineRead, PeerSync,
    Refusal,
};
use polyphony_core::{CaseId, DeviceId, PractitionerId, TeamId};
use polyphony_fuzz::{welcome, Device, NEW_CASE};

struct Anyone;

impl CasePolicy for Anyone {
    fn author_allowed(&self, _: &ActorId) -> bool {
        true
    }
    fn check(&self, _: &AutoCommit) -> Result<(), polyphony_core::sync::PolicyRefusal> {
        Ok(())
    }
}

fn author(name: &str) -> Author {
    Author {
        practitioner: PractitionerId::random(),
        practitioner_name: name.into(),
        device: DeviceId::random(),
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("corpus");
    let (sam, kit) = (author("Sam"), author("Kit"));
    let team = TeamId::random();

    // The fixture: a small case as a device holds it.
    let mut case = CaseDoc::create(
        CaseId::random(),
        team,
        NewCase {
            name: "Maria Lopez".into(),
            ..Default::default()
        },
        sam.clone(),
    )
    .expect("a case");
    let at = model::parse_datetime("at", "2026-03-14T10:30").expect("a date");
    let meeting = case
        .add_meeting(NewMeeting {
            at,
            place: Place::Home,
            attendees: vec![Participant::Person],
        })
        .expect("a meeting");
    case.append_text(&meeting, NoteKind::Notes, "Maria slept better.")
        .expect("a note");
    let fixture = case.save();
    std::fs::write(root.join("fixtures/case.automerge"), &fixture).expect("write the fixture");
    let fixture_id = case.case_id();

    // The server has moved on: more notes, a member, a decision; and a case the device lacks.
    let mut server_case =
        CaseDoc::from_automerge(case.automerge().clone(), Some(kit.clone())).expect("valid");
    server_case
        .append_text(&meeting, NoteKind::Notes, "Ana will visit on Sundays.")
        .expect("a note");
    let ana = server_case
        .add_member(NewMember {
            name: "Ana".into(),
            relationship: "sister".into(),
            ..Default::default()
        })
        .expect("a member");
    let decision = server_case
        .propose_decision("Try a walking group", Participant::Member(ana))
        .expect("a decision");
    server_case
        .record_position(&decision, Participant::Person, Stance::Agree, Some("yes"))
        .expect("a position");
    let mut other = CaseDoc::create(
        NEW_CASE,
        team,
        NewCase {
            name: "Jo Bloggs".into(),
            ..Default::default()
        },
        kit.clone(),
    )
    .expect("a case");
    let mut server: BTreeMap<CaseId, AutoCommit> = BTreeMap::from([
        (fixture_id, server_case.automerge().clone()),
        (NEW_CASE, other.automerge_mut().clone()),
    ]);
    let mut states: BTreeMap<CaseId, PeerSync> = BTreeMap::new();

    // client_session: everything a server says in a real session, as one stream of frames.
    let mut device = Device::start_with(&fixture);
    let mut stream = Vec::new();
    for _ in 0..200 {
        let sent = std::mem::take(&mut device.sent);
        if sent.is_empty() {
            break;
        }
        for frame in sent {
            let replies = match frame {
                Frame::Sync { case, message } => {
                    let doc = server.entry(case).or_default();
                    let state = states.entry(case).or_default();
                    answer(case, doc, state, &message, &Anyone).expect("a valid message")
                }
                Frame::Done => vec![Frame::Bye],
                _ => vec![],
            };
            for r in replies {
                r.encode(&mut stream);
                device.receive(r);
            }
        }
    }
    let dir = corpus.join("client_session");
    write(&dir, "full-session", &stream);
    let odd = [
        Frame::Saved {
            case: fixture_id,
            heads: vec![ChangeHash([7; 32])],
        },
        Frame::CaseRefused {
            case: fixture_id,
            refusal: Refusal {
                code: ErrorCode::Moved,
                message: "moved".into(),
            },
        },
        Frame::ReadsSaved { through: 3 },
        Frame::Wipe,
        Frame::Bye,
        Frame::Error(Refusal {
            code: ErrorCode::Revoked,
            message: "revoked".into(),
        }),
    ];
    for (i, f) in odd.iter().enumerate() {
        write(&dir, &format!("frame-{i}"), &f.to_bytes());
    }

    // document_load: the fixture, the server's copies, an uncompressed save, a log of chunks,
    // and a valid automerge document that is no case.
    let dir = corpus.join("document_load");
    write(&dir, "fixture", &fixture);
    for (i, doc) in server.values_mut().enumerate() {
        write(&dir, &format!("server-{i}"), &doc.save());
        write(
            &dir,
            &format!("server-{i}-nocompress"),
            &doc.save_nocompress(),
        );
    }
    let mut log = fixture.clone();
    let mut grown = CaseDoc::load(&fixture, Some(sam.clone())).expect("loads");
    let before = grown.heads();
    grown
        .append_text(&meeting, NoteKind::Reflections, "A reflection.")
        .expect("a reflection");
    log.extend(grown.automerge_mut().save_after(&before));
    write(&dir, "log", &log);
    let mut junk = AutoCommit::new();
    automerge::transaction::Transactable::put(&mut junk, automerge::ROOT, "junk", 1).expect("put");
    write(&dir, "not-a-case", &junk.save());

    // frame_decoder: every kind of frame, whole (first byte: piece size 256) and a stream of
    // them fed one byte at a time (first byte 0).
    let dir = corpus.join("frame_decoder");
    let mut sync_state = State::new();
    let message = server
        .get_mut(&fixture_id)
        .expect("held")
        .sync()
        .generate_sync_message(&mut sync_state)
        .expect("a message")
        .encode();
    let frames = vec![
        Frame::Hello(Hello {
            version: 1,
            software: "polyphony/0.1.0".into(),
            live: false,
            features: Vec::new(),
        }),
        welcome(fixture_id),
        Frame::Sync {
            case: fixture_id,
            message,
        },
        Frame::Reads(vec![OfflineRead {
            case: fixture_id,
            at: "2026-03-14T10:30:00Z".into(),
            what: "case show".into(),
            seq: 4,
        }]),
        Frame::Done,
        Frame::Enrol(EnrolRequest {
            version: 1,
            token: "00ff".into(),
            device: DeviceId::random(),
            device_name: "laptop".into(),
            csr: "3082".into(),
        }),
        Frame::Enrolled(Enrolled {
            device: DeviceId::random(),
            practitioner: PractitionerId::random(),
            practitioner_name: "Sam".into(),
            teams: vec![],
            certificate: "30".into(),
            ca: "30".into(),
        }),
    ]
    .into_iter()
    .chain(odd)
    .collect::<Vec<_>>();
    let mut all = vec![0u8];
    for (i, f) in frames.iter().enumerate() {
        let mut seed = vec![255u8];
        f.encode(&mut seed);
        write(&dir, &format!("{}-{i}", f.kind().replace(' ', "-")), &seed);
        f.encode(&mut all);
    }
    write(&dir, "stream-bytewise", &all);
    println!(
        "wrote the fixture and the seed corpus under {}",
        root.display()
    );
}
