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
    answer, BoroughEnrolRequest, BoroughEnrolled, CasePolicy, EnrolRequest, Enrolled, ErrorCode,
    Frame, Hello, OfflineRead, PeerSync, Refusal, Roster, RosterDevice, TeamInfo,
};
use polyphony_core::{BoroughId, CaseId, DeviceId, EntryId, PractitionerId, TeamId};
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

/// The one case everything is made from: the device's copy (saved as the fixture) and the
/// server's copies, which have moved on from it.
struct Fixture {
    /// The device's case, saved: the bytes of `fixtures/case.automerge`.
    bytes: Vec<u8>,
    id: CaseId,
    /// The meeting the notes are written to.
    meeting: EntryId,
    /// Who wrote the device's case.
    sam: Author,
    /// The server's documents: the fixture's case moved on, and a case the device lacks.
    server: BTreeMap<CaseId, AutoCommit>,
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("corpus");
    let mut fixture = fixture(root);
    client_session_seeds(&corpus.join("client_session"), &mut fixture);
    document_load_seeds(&corpus.join("document_load"), &mut fixture);
    frame_decoder_seeds(&corpus.join("frame_decoder"), &mut fixture);
    println!(
        "wrote the fixture and the seed corpus under {}",
        root.display()
    );
}

/// Makes the case, writes it to `fixtures/case.automerge` as a device holds it, then makes the
/// server's copies.
fn fixture(root: &Path) -> Fixture {
    let (sam, kit) = (author("Sam"), author("Kit"));
    let team = TeamId::random();
    let (mut case, meeting) = device_case(team, &sam);
    let bytes = case.save();
    std::fs::write(root.join("fixtures/case.automerge"), &bytes).expect("write the fixture");
    let id = case.case_id();
    let server = server_copies(&case, &meeting, team, &kit);
    Fixture {
        bytes,
        id,
        meeting,
        sam,
        server,
    }
}

/// The fixture: a small case as a device holds it, one meeting with one note.
fn device_case(team: TeamId, sam: &Author) -> (CaseDoc, EntryId) {
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
    (case, meeting)
}

/// The server has moved on: more notes, a member, a decision; and a case the device lacks.
fn server_copies(
    case: &CaseDoc,
    meeting: &EntryId,
    team: TeamId,
    kit: &Author,
) -> BTreeMap<CaseId, AutoCommit> {
    let mut server_case =
        CaseDoc::from_automerge(case.automerge().clone(), Some(kit.clone())).expect("valid");
    server_case
        .append_text(meeting, NoteKind::Notes, "Ana will visit on Sundays.")
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
    BTreeMap::from([
        (case.case_id(), server_case.automerge().clone()),
        (NEW_CASE, other.automerge_mut().clone()),
    ])
}

/// Server frames besides the sync exchange: each is a seed of its own for `client_session`, and
/// they complete `frame_decoder`'s one of every kind.
fn odd_frames(case: CaseId) -> [Frame; 6] {
    [
        Frame::Saved {
            case,
            heads: vec![ChangeHash([7; 32])],
        },
        Frame::CaseRefused {
            case,
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
    ]
}

/// client_session: everything a server says in a real session, as one stream of frames, and
/// the odd frames one by one.
fn client_session_seeds(dir: &Path, fixture: &mut Fixture) {
    write(dir, "full-session", &session_stream(fixture));
    for (i, f) in odd_frames(fixture.id).iter().enumerate() {
        write(dir, &format!("frame-{i}"), &f.to_bytes());
    }
}

/// Runs a device holding the fixture against the server's copies until it has nothing more to
/// send, and returns every frame the server sent it, encoded one after another.
fn session_stream(fixture: &mut Fixture) -> Vec<u8> {
    let server = &mut fixture.server;
    let mut states: BTreeMap<CaseId, PeerSync> = BTreeMap::new();
    let mut device = Device::start_with(&fixture.bytes);
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
    stream
}

/// document_load: the fixture, the server's copies, an uncompressed save, a log of chunks,
/// and a valid automerge document that is no case.
fn document_load_seeds(dir: &Path, fixture: &mut Fixture) {
    write(dir, "fixture", &fixture.bytes);
    for (i, doc) in fixture.server.values_mut().enumerate() {
        write(dir, &format!("server-{i}"), &doc.save());
        write(
            dir,
            &format!("server-{i}-nocompress"),
            &doc.save_nocompress(),
        );
    }
    let mut log = fixture.bytes.clone();
    let mut grown = CaseDoc::load(&fixture.bytes, Some(fixture.sam.clone())).expect("loads");
    let before = grown.heads();
    grown
        .append_text(&fixture.meeting, NoteKind::Reflections, "A reflection.")
        .expect("a reflection");
    log.extend(grown.automerge_mut().save_after(&before));
    write(dir, "log", &log);
    let mut junk = AutoCommit::new();
    automerge::transaction::Transactable::put(&mut junk, automerge::ROOT, "junk", 1).expect("put");
    write(dir, "not-a-case", &junk.save());
}

/// frame_decoder: every kind of frame, whole (first byte: piece size 256) and a stream of
/// them fed one byte at a time (first byte 0).
fn frame_decoder_seeds(dir: &Path, fixture: &mut Fixture) {
    let frames = common_frames(fixture)
        .into_iter()
        .chain(odd_frames(fixture.id))
        .collect::<Vec<_>>();
    let mut all = vec![0u8];
    for (i, f) in frames.iter().enumerate() {
        let mut seed = vec![255u8];
        f.encode(&mut seed);
        write(dir, &format!("{}-{i}", f.kind().replace(' ', "-")), &seed);
        f.encode(&mut all);
    }
    write(dir, "stream-bytewise", &all);
}

/// One of each kind of frame that is not among the odd ones; the sync message is the first one
/// the server's copy of the fixture's case would send.
fn common_frames(fixture: &mut Fixture) -> Vec<Frame> {
    let id = fixture.id;
    let mut sync_state = State::new();
    let message = fixture
        .server
        .get_mut(&id)
        .expect("held")
        .sync()
        .generate_sync_message(&mut sync_state)
        .expect("a message")
        .encode();
    vec![
        Frame::Hello(Hello {
            version: 1,
            software: "polyphony/0.1.0".into(),
            live: false,
            features: Vec::new(),
        }),
        welcome(id),
        Frame::Sync { case: id, message },
        Frame::Reads(vec![OfflineRead {
            case: id,
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
        Frame::EnrolBorough(BoroughEnrolRequest {
            version: 1,
            token: "00ff".into(),
            name: "Camden".into(),
            csr: "3082".into(),
        }),
        Frame::BoroughEnrolled(BoroughEnrolled {
            borough: BoroughId::random(),
            name: "Camden".into(),
            certificate: "30".into(),
            ca: "30".into(),
        }),
        Frame::Roster(Roster {
            teams: vec![TeamInfo {
                id: TeamId::random(),
                name: "Camden North".into(),
            }],
            devices: vec![RosterDevice {
                device: DeviceId::random(),
                practitioner: PractitionerId::random(),
                practitioner_name: "Sam".into(),
            }],
        }),
    ]
}
