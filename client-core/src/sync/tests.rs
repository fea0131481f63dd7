//! The session tested without sockets: two devices and a minimal in-test server peer trade frames
//! in memory. Also: arbitrary frames never panic the session nor corrupt a document.

use std::collections::{BTreeMap, HashMap};

use automerge::sync::{State, SyncDoc};
use automerge::{ActorId, AutoCommit};
use proptest::prelude::*;

use super::*;
use crate::model::{self, CaseDoc, NewCase, NewMeeting, NoteKind, Participant, Place};
use crate::{CaseId, DeviceId, PractitionerId, TeamId};

#[derive(Default)]
struct Docs(BTreeMap<CaseId, AutoCommit>);

impl DocSet for Docs {
    fn cases(&self) -> Vec<CaseId> {
        self.0.keys().copied().collect()
    }
    fn doc(&mut self, case: &CaseId) -> Option<&mut AutoCommit> {
        self.0.get_mut(case)
    }
    fn insert(&mut self, case: CaseId, doc: AutoCommit) {
        self.0.insert(case, doc);
    }
    fn wipe(&mut self) -> Result<Vec<CaseId>, String> {
        self.0.clear();
        Ok(Vec::new())
    }
}

struct AnyAuthor;
impl CasePolicy for AnyAuthor {
    fn author_allowed(&self, _: &ActorId) -> bool {
        true
    }
    fn check(&self, _: &AutoCommit) -> Result<(), crate::sync::PolicyRefusal> {
        Ok(())
    }
}

/// The least a server does: apply, reply, say Saved with its heads.
#[derive(Default)]
struct PeerServer {
    docs: HashMap<CaseId, AutoCommit>,
    states: HashMap<(usize, CaseId), PeerSync>,
}

impl PeerServer {
    fn handle(&mut self, client: usize, frame: Frame) -> Vec<Frame> {
        match frame {
            Frame::Hello(_) => vec![Frame::Welcome(Welcome {
                version: PROTOCOL_VERSION,
                device: DeviceId::random(),
                practitioner: PractitionerId::random(),
                teams: vec![],
                cases: self
                    .docs
                    .keys()
                    .map(|c| CaseGrant {
                        case: *c,
                        team: TeamId::random(),
                    })
                    .collect(),
                mode: SessionMode::Normal,
                audit_head: None,
                features: Vec::new(),
                colleagues: None,
                servers: Vec::new(),
            })],
            Frame::Sync { case, message } => {
                let doc = self.docs.entry(case).or_default();
                let state = self.states.entry((client, case)).or_default();
                answer(case, doc, state, &message, &AnyAuthor).expect("valid message")
            }
            Frame::Done => vec![Frame::Bye],
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Run a one-shot sync of `docs` against `server`; returns the acknowledged heads per case.
fn sync(
    client: usize,
    docs: &mut Docs,
    server: &mut PeerServer,
) -> HashMap<CaseId, Vec<automerge::ChangeHash>> {
    let mut session = ClientSession::new(false, vec![], BTreeMap::new());
    let mut acked = HashMap::new();
    let mut inbox: Vec<Frame> = Vec::new();
    let mut actions = session.start();
    for _ in 0..10_000 {
        for a in actions.drain(..) {
            match a {
                Action::Send(f) => inbox.extend(server.handle(client, f)),
                Action::Acknowledged { case, heads } => {
                    acked.insert(case, heads);
                }
                Action::Close { code, .. } => {
                    assert_eq!(code, ErrorCode::Done);
                    return acked;
                }
                Action::Refused { refusal, .. } => panic!("refused: {refusal:?}"),
                _ => {}
            }
        }
        let Some(f) = (!inbox.is_empty()).then(|| inbox.remove(0)) else {
            panic!("stalled")
        };
        actions = session.handle(f, docs);
    }
    panic!("sync did not finish")
}

fn author(name: &str) -> model::Author {
    model::Author {
        practitioner: PractitionerId::random(),
        practitioner_name: name.into(),
        device: DeviceId::random(),
    }
}

#[test]
fn two_devices_edit_offline_and_both_keep_their_words() {
    let (sam, kit) = (author("Sam"), author("Kit"));
    let case = CaseId::random();
    let mut first = CaseDoc::create(
        case,
        TeamId::random(),
        NewCase {
            name: "Maria".into(),
            ..Default::default()
        },
        sam.clone(),
    )
    .unwrap();
    let meeting = first
        .add_meeting(NewMeeting {
            at: model::parse_datetime("a", "2026-03-14T10:00").unwrap(),
            place: Place::Home,
            attendees: vec![Participant::Person],
        })
        .unwrap();
    let mut server = PeerServer::default();
    let mut a = Docs::default();
    a.0.insert(case, first.into_automerge());
    sync(0, &mut a, &mut server);
    let mut b = Docs::default();
    sync(1, &mut b, &mut server);
    assert!(
        b.0.contains_key(&case),
        "the second device received the case"
    );

    // Both write in the same note offline.
    let edit = |docs: &mut Docs, who: &model::Author, text: &str| {
        let doc = docs.0.remove(&case).unwrap();
        let mut cd = CaseDoc::from_automerge(doc, Some(who.clone())).unwrap();
        cd.append_text(&meeting, NoteKind::Notes, text).unwrap();
        docs.0.insert(case, cd.into_automerge());
    };
    edit(&mut a, &sam, "Sam's words");
    edit(&mut b, &kit, "Kit's words");
    sync(0, &mut a, &mut server);
    let acked_b = sync(1, &mut b, &mut server);
    sync(0, &mut a, &mut server);
    let (da, db) = (a.0.get_mut(&case).unwrap(), b.0.get_mut(&case).unwrap());
    assert_eq!(da.get_heads(), db.get_heads());
    let notes = CaseDoc::from_automerge(da.clone(), None)
        .unwrap()
        .view()
        .meetings[0]
        .notes
        .clone();
    assert!(
        notes.contains("Sam's words") && notes.contains("Kit's words"),
        "{notes}"
    );
    // Everything B made is acknowledged: nothing unsynced.
    let known: Vec<_> = acked_b[&case].clone();
    assert!(
        db.get_changes(&known).is_empty(),
        "all of B's changes are acknowledged"
    );
}

#[test]
fn many_cases_sync_concurrently_in_one_session() {
    let sam = author("Sam");
    let mut a = Docs::default();
    for i in 0..50 {
        let case = CaseId::random();
        let doc = CaseDoc::create(
            case,
            TeamId::random(),
            NewCase {
                name: format!("P{i}"),
                ..Default::default()
            },
            sam.clone(),
        )
        .unwrap();
        a.0.insert(case, doc.into_automerge());
    }
    let mut server = PeerServer::default();
    let mut session = ClientSession::new(false, vec![], BTreeMap::new());
    let _ = session.start();
    let welcome = server.handle(
        0,
        Frame::Hello(Hello {
            version: 1,
            software: "t".into(),
            live: false,
            features: Vec::new(),
        }),
    );
    let actions = session.handle(welcome.into_iter().next().unwrap(), &mut a);
    let first_syncs = actions
        .iter()
        .filter(|a| matches!(a, Action::Send(Frame::Sync { .. })))
        .count();
    assert_eq!(
        first_syncs, 50,
        "every case starts at once, not one round trip after another"
    );
}

/// A welcome granting no case, in `mode`, from a server that does (or, older, does not) take the
/// wipe confirmation.
fn empty_welcome(mode: SessionMode, confirms_wipe: bool) -> Frame {
    Frame::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        device: DeviceId::random(),
        practitioner: PractitionerId::random(),
        teams: vec![],
        cases: vec![],
        mode,
        audit_head: None,
        features: if confirms_wipe {
            vec![FEATURE_CONFIRMS_WIPE.to_string()]
        } else {
            Vec::new()
        },
        colleagues: None,
        servers: Vec::new(),
    })
}

/// A device set whose wipe keeps what it is told to (as a profile keeps a case with changes the
/// server lacks).
struct Keeping {
    docs: Docs,
    keep: Vec<CaseId>,
    wiped: usize,
}

impl DocSet for Keeping {
    fn cases(&self) -> Vec<CaseId> {
        self.docs.cases()
    }
    fn doc(&mut self, case: &CaseId) -> Option<&mut AutoCommit> {
        self.docs.doc(case)
    }
    fn insert(&mut self, case: CaseId, doc: AutoCommit) {
        self.docs.insert(case, doc);
    }
    fn wipe(&mut self) -> Result<Vec<CaseId>, String> {
        self.wiped += 1;
        Ok(self.keep.clone())
    }
}

#[test]
fn a_device_being_revoked_is_told_so_wipes_and_says_what_it_kept() {
    let kept = CaseId::random();
    let mut docs = Keeping {
        docs: Docs::default(),
        keep: vec![kept],
        wiped: 0,
    };
    let mut session = ClientSession::new(false, vec![], BTreeMap::new());
    let hello = session.start();
    assert!(
        matches!(&hello[..], [Action::Send(Frame::Hello(h))] if h.has(FEATURE_CONFIRMS_WIPE)),
        "the hello announces the wipe confirmation: {hello:?}"
    );
    let out = session.handle(empty_welcome(SessionMode::Revoking, true), &mut docs);
    assert!(out.contains(&Action::RevocationOrdered(true)), "{out:?}");
    assert!(out.contains(&Action::Send(Frame::Done)), "{out:?}");
    let out = session.handle(Frame::Wipe, &mut docs);
    assert_eq!(docs.wiped, 1);
    assert_eq!(
        out,
        vec![
            Action::Wiped {
                kept: vec![kept],
                revoked: false,
            },
            Action::Send(Frame::Wiped(Wiped { kept: vec![kept] })),
        ]
    );
    let out = session.handle(Frame::Bye, &mut docs);
    assert!(
        matches!(
            &out[..],
            [Action::Close {
                code: ErrorCode::Revoked,
                ..
            }]
        ),
        "{out:?}"
    );
}

#[test]
fn a_frame_out_of_order_closes_the_session_cleanly() {
    let mut docs = Docs::default();
    let mut session = ClientSession::new(false, vec![], BTreeMap::new());
    let _ = session.start();
    let actions = session.handle(Frame::Bye, &mut docs);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Close {
            code: ErrorCode::Malformed,
            ..
        }
    )));
    assert!(
        session.handle(Frame::Bye, &mut docs).is_empty(),
        "a closed session ignores the rest"
    );
}

#[test]
fn a_server_sending_an_invalid_document_is_refused_and_nothing_changes() {
    let sam = author("Sam");
    let case = CaseId::random();
    let mut docs = Docs::default();
    let mut session = ClientSession::new(false, vec![], BTreeMap::new());
    let _ = session.start();
    let welcome = Welcome {
        version: 1,
        device: DeviceId::random(),
        practitioner: PractitionerId::random(),
        teams: vec![],
        cases: vec![CaseGrant {
            case,
            team: TeamId::random(),
        }],
        mode: SessionMode::Normal,
        audit_head: None,
        features: Vec::new(),
        colleagues: None,
        servers: Vec::new(),
    };
    let _ = session.handle(Frame::Welcome(welcome), &mut docs);
    // A hostile server sends a document that is not a case record.
    let mut bad = AutoCommit::new();
    automerge::transaction::Transactable::put(&mut bad, automerge::ROOT, "junk", 1).unwrap();
    bad.commit();
    let mut st = State::new();
    let msg = bad.sync().generate_sync_message(&mut st).unwrap();
    // First exchange: the server's heads; then the changes.
    let mut client_state = State::new();
    let empty = docs.0.get_mut(&case).unwrap().clone();
    let mut e = empty.clone();
    let req = e.sync().generate_sync_message(&mut client_state).unwrap();
    bad.sync().receive_sync_message(&mut st, req).unwrap();
    let with_changes = bad.sync().generate_sync_message(&mut st).unwrap_or(msg);
    let actions = session.handle(
        Frame::Sync {
            case,
            message: with_changes.encode(),
        },
        &mut docs,
    );
    let _ = sam;
    assert!(
        actions.iter().any(|a| matches!(a, Action::Refused { .. })),
        "{actions:?}"
    );
    assert!(
        actions.iter().all(|a| !matches!(a, Action::Persist { .. })),
        "nothing invalid is persisted"
    );
    assert!(
        docs.0.get_mut(&case).unwrap().get_heads().is_empty(),
        "the local copy is unchanged"
    );
}

#[test]
fn a_peer_that_never_lets_a_case_settle_cannot_loop_the_session_forever() {
    let sam = author("Sam");
    let case = CaseId::random();
    let doc = CaseDoc::create(
        case,
        TeamId::random(),
        NewCase {
            name: "Maria".into(),
            ..Default::default()
        },
        sam,
    )
    .unwrap();
    let mut docs = Docs::default();
    docs.0.insert(case, doc.into_automerge());
    let mut session = ClientSession::new(false, vec![], BTreeMap::new());
    let _ = session.start();
    let welcome = Welcome {
        version: 1,
        device: DeviceId::random(),
        practitioner: PractitionerId::random(),
        teams: vec![],
        cases: vec![],
        mode: SessionMode::Normal,
        audit_head: None,
        features: Vec::new(),
        colleagues: None,
        servers: Vec::new(),
    };
    let mut actions = session.handle(Frame::Welcome(welcome), &mut docs);
    let mut exchanges = 0;
    let mut n: u64 = 0;
    loop {
        let sent = actions
            .iter()
            .any(|a| matches!(a, Action::Send(Frame::Sync { .. })));
        if let Some(Action::Refused { refusal, .. }) =
            actions.iter().find(|a| matches!(a, Action::Refused { .. }))
        {
            assert!(
                refusal.message.contains("did not settle"),
                "{}",
                refusal.message
            );
            break;
        }
        assert!(sent, "the session stopped without saying why: {actions:?}");
        exchanges += 1;
        assert!(
            exchanges <= MAX_MESSAGES_PER_CASE + 1,
            "the session kept looping"
        );
        // A hostile or broken peer: always claims heads the device has never seen, never sends them.
        n += 1;
        let mut fake = [0u8; 32];
        fake[..8].copy_from_slice(&n.to_be_bytes());
        let msg = automerge::sync::Message {
            heads: vec![automerge::ChangeHash(fake)],
            need: vec![],
            have: vec![],
            changes: automerge::sync::ChunkList::empty(),
            flags: None,
            version: automerge::sync::MessageVersion::V1,
        };
        let mut next = session.handle(
            Frame::Sync {
                case,
                message: msg.encode(),
            },
            &mut docs,
        );
        next.extend(session.handle(
            Frame::Saved {
                case,
                heads: vec![],
            },
            &mut docs,
        ));
        actions = next;
    }
    assert!(session.refused().contains(&case));
    assert!(
        docs.0.get_mut(&case).unwrap().get_heads().len() == 1,
        "the local case is untouched"
    );
}

fn arb_frame(case: CaseId) -> impl Strategy<Value = Frame> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..200)
            .prop_map(move |message| Frame::Sync { case, message }),
        proptest::collection::vec(any::<[u8; 32]>(), 0..3).prop_map(move |hs| Frame::Saved {
            case,
            heads: hs.into_iter().map(automerge::ChangeHash).collect()
        }),
        Just(Frame::Bye),
        Just(Frame::Wipe),
        Just(Frame::Done),
        any::<u64>().prop_map(|through| Frame::ReadsSaved { through }),
        Just(Frame::CaseRefused {
            case,
            refusal: Refusal {
                code: ErrorCode::Moved,
                message: "m".into()
            }
        }),
        proptest::collection::vec(any::<u8>(), 0..100)
            .prop_map(|b| { Frame::decode_body(&b).unwrap_or(Frame::Done) }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Arbitrary frames after a welcome never panic the session and never alter a stored case
    /// except through a valid sync (which random bytes never are).
    #[test]
    fn arbitrary_frames_never_panic_or_corrupt(frames in proptest::collection::vec(arb_frame(CaseId(uuid::Uuid::from_u128(7))), 0..30)) {
        let case = CaseId(uuid::Uuid::from_u128(7));
        let sam = author("Sam");
        let doc = CaseDoc::create(case, TeamId::random(), NewCase { name: "Maria".into(), ..Default::default() }, sam).unwrap();
        let mut docs = Docs::default();
        docs.0.insert(case, doc.into_automerge());
        let before = docs.0.get_mut(&case).unwrap().get_heads();
        let mut session = ClientSession::new(false, vec![], BTreeMap::new());
        let _ = session.start();
        let welcome = Welcome { version: 1, device: DeviceId::random(), practitioner: PractitionerId::random(), teams: vec![], cases: vec![], mode: SessionMode::Normal, audit_head: None, features: vec![], colleagues: None, servers: Vec::new() };
        let _ = session.handle(Frame::Welcome(welcome), &mut docs);
        for f in frames {
            for a in session.handle(f, &mut docs) {
                prop_assert!(!matches!(a, Action::Persist { .. }), "random bytes are never persisted");
            }
        }
        let d = docs.0.get_mut(&case).unwrap();
        prop_assert_eq!(d.get_heads(), before);
        prop_assert!(model::validate_document(d).is_ok());
    }
}

/// A server older than the wipe confirmation revokes the device at its `Done`: the device wipes
/// what the server holds, keeps the rest, and does not promise to upload it later.
#[test]
fn a_server_older_than_the_wipe_confirmation_gets_no_wiped_and_the_device_knows_it_is_revoked() {
    let kept = CaseId::random();
    let mut docs = Keeping {
        docs: Docs::default(),
        keep: vec![kept],
        wiped: 0,
    };
    let mut session = ClientSession::new(false, vec![], BTreeMap::new());
    session.start();
    session.handle(empty_welcome(SessionMode::Revoking, false), &mut docs);
    let out = session.handle(Frame::Wipe, &mut docs);
    assert_eq!(docs.wiped, 1);
    assert!(
        matches!(&out[..], [Action::Wiped { kept: k, revoked: true }, Action::Close { code: ErrorCode::Revoked, .. }] if *k == vec![kept]),
        "{out:?}"
    );
}

/// A live session (the app stays connected) whose device is being revoked still ends once its
/// upload is done, so it is told to wipe there and then (before, a live session never said
/// `Done`, and the device sat connected, unable to write, until its time limit ran out).
#[test]
fn a_live_session_of_a_device_being_revoked_ends_with_done_once_uploaded() {
    let mut docs = Docs::default();
    let mut session = ClientSession::new(true, vec![], BTreeMap::new());
    session.start();
    let welcome = |mode| empty_welcome(mode, true);
    let out = session.handle(welcome(SessionMode::Revoking), &mut docs);
    assert!(out.contains(&Action::Send(Frame::Done)), "{out:?}");
    let mut normal = ClientSession::new(true, vec![], BTreeMap::new());
    normal.start();
    let out = normal.handle(welcome(SessionMode::Normal), &mut docs);
    assert!(
        !out.contains(&Action::Send(Frame::Done)),
        "a live session otherwise stays open: {out:?}"
    );
}

/// The hello announces that the device takes team lists; the welcome's list and a later live
/// one each become an action to keep it; a welcome without one (an older server) keeps what
/// the device had (no action); a list before the welcome is a broken server.
#[test]
fn team_lists_from_the_welcome_and_a_live_session_are_kept() {
    let colleague = |name: &str| Colleague {
        practitioner: PractitionerId::random(),
        name: name.into(),
        role: model::Stored::Known(model::StaffRole::PeerSupport),
        teams: vec![],
    };
    let mut docs = Docs::default();
    let mut session = ClientSession::new(true, vec![], BTreeMap::new());
    let hello = session.start();
    assert!(
        matches!(&hello[..], [Action::Send(Frame::Hello(h))] if h.has(FEATURE_COLLEAGUES)),
        "{hello:?}"
    );
    let first = vec![colleague("Jo")];
    let Frame::Welcome(mut welcome) = empty_welcome(SessionMode::Normal, true) else {
        unreachable!()
    };
    welcome.colleagues = Some(first.clone());
    let out = session.handle(Frame::Welcome(welcome), &mut docs);
    assert!(out.contains(&Action::Colleagues(first)), "{out:?}");
    let second = vec![colleague("Jo"), colleague("Kit")];
    let out = session.handle(Frame::Colleagues(second.clone()), &mut docs);
    assert_eq!(out, vec![Action::Colleagues(second)]);

    let mut older = ClientSession::new(false, vec![], BTreeMap::new());
    older.start();
    let out = older.handle(empty_welcome(SessionMode::Normal, true), &mut docs);
    assert!(
        !out.iter().any(|a| matches!(a, Action::Colleagues(_))),
        "{out:?}"
    );

    let mut early = ClientSession::new(true, vec![], BTreeMap::new());
    early.start();
    let out = early.handle(Frame::Colleagues(vec![colleague("Jo")]), &mut docs);
    assert!(
        out.iter().any(|a| matches!(
            a,
            Action::Close {
                code: ErrorCode::Malformed,
                ..
            }
        )),
        "{out:?}"
    );
}
