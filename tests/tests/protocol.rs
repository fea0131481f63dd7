//! Issue 9, the sync protocol without sockets: the device's `ClientSession` against a server peer
//! that applies messages exactly as the borough server does (`sync::answer`: `prepare`, then commit,
//! then reply and `Saved`), over many random offline histories. Every session must settle in a bounded
//! number of messages, converge, and leave every stored document valid.
//!
//! The automerge sync protocol summarises what each side has with a Bloom filter, which has false
//! positives (roughly one change in two hundred for the small filters a case produces). When a
//! sender wrongly skips a change, the receiver gets its successors first; automerge queues those
//! and asks for the missing dependency. These tests hold the protocol to that.

use std::collections::BTreeMap;

use anyhow::{ensure, Result};
use automerge::sync::{Message, State, SyncDoc};
use automerge::{ActorId, AutoCommit};
use polyphony_core::model::{
    self, validate_document, Author, CaseDoc, NewCase, NewMeeting, NoteKind, Participant, Place,
};
use polyphony_core::sync::{
    answer, prepare, Action, CaseGrant, CasePolicy, ClientSession, DocSet, ErrorCode, Frame,
    PeerSync, SessionMode, Welcome, PROTOCOL_VERSION,
};
use polyphony_core::{CaseId, DeviceId, EntryId, PractitionerId, TeamId};
use polyphony_e2e::report_figures;

/// Accepts any author and any valid document, like the server for a device of the case's team.
struct TeamPolicy;

impl CasePolicy for TeamPolicy {
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

/// A case with one meeting, and the meeting's id.
fn new_case(by: &Author) -> Result<(CaseDoc, EntryId)> {
    let mut doc = CaseDoc::create(
        CaseId::random(),
        TeamId::random(),
        NewCase {
            name: "Maria".into(),
            ..Default::default()
        },
        by.clone(),
    )?;
    let meeting = doc.add_meeting(NewMeeting {
        at: model::parse_datetime("at", "2026-03-14T10:30")?,
        place: Place::Home,
        attendees: vec![Participant::Person],
    })?;
    Ok((doc, meeting))
}

/// `n` notes on a copy of `doc`, signed by `by`.
fn with_notes(
    doc: &AutoCommit,
    by: &Author,
    meeting: EntryId,
    n: usize,
    tag: &str,
) -> Result<AutoCommit> {
    let mut cd = CaseDoc::from_automerge(doc.clone(), Some(by.clone()))?;
    for i in 0..n {
        cd.append_text(&meeting, NoteKind::Notes, &format!("{tag} {i}."))?;
    }
    Ok(cd.into_automerge())
}

#[test]
fn a_change_received_before_its_dependency_makes_the_receiver_ask_for_the_dependency() -> Result<()>
{
    // The server holds a case; a device has two newer changes, X then Y (Y depends on X).
    let sam = author("Sam");
    let (mut server_case, meeting) = new_case(&sam)?;
    let mut server = server_case.automerge_mut().clone();
    let device = with_notes(&server, &sam, meeting, 2, "offline")?;
    let mut dev = device.clone();
    let new = dev.get_changes(&server.get_heads());
    ensure!(new.len() == 2);
    let (x, y) = (new[0].hash(), new[1].hash());

    // The device's message carries only Y, as when a Bloom filter false positive made it believe
    // the server already had X.
    let message = Message {
        heads: vec![y],
        need: vec![],
        have: vec![],
        changes: vec![new[1].raw_bytes().to_vec()].into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    };

    // Plain automerge queues Y and asks for X.
    let mut plain = server.clone();
    let mut plain_state = State::new();
    plain.sync().receive_sync_message(
        &mut plain_state,
        Message::decode(&message.clone().encode())?,
    )?;
    let asked = plain.sync().generate_sync_message(&mut plain_state);
    ensure!(
        asked.is_some_and(|m| m.need.contains(&x)),
        "control: automerge asks for the missing dependency"
    );

    // The server's way of applying a message must do the same, or the device, which believes it
    // sent Y, never sends anything again and the two ask each other forever.
    let mut peer = PeerSync::default();
    let prepared = prepare(&mut server, &peer, &message.encode(), &TeamPolicy)?;
    prepared.commit(&mut server, &mut peer);
    ensure!(
        server.get_missing_deps(&[]).is_empty(),
        "the case's document holds no queue: Y waits beside this peer's sync state, not in a \
         document every session shares"
    );
    let reply = peer
        .generate(&mut server)
        .ok_or_else(|| anyhow::anyhow!("no reply"))?;
    ensure!(
        reply.need.contains(&x),
        "after receiving Y without X, the reply asks for {:?} instead of X ({x}): Y was dropped",
        reply.need
    );
    Ok(())
}

#[test]
fn a_change_that_waited_for_its_dependency_is_stored_when_the_dependency_arrives() -> Result<()> {
    // As above: the server gets Y first (queued), then X. What it appends to the case's log must
    // hold both, or Y lives only in memory and a restart loses it.
    let sam = author("Sam");
    let (mut server_case, meeting) = new_case(&sam)?;
    let mut server = server_case.automerge_mut().clone();
    let mut stored = server.save();
    let mut dev = with_notes(&server, &sam, meeting, 2, "offline")?;
    let new = dev.get_changes(&server.get_heads());
    ensure!(new.len() == 2);
    let (x, y) = (new[0].clone(), new[1].clone());
    let only = |c: &automerge::Change| Message {
        heads: vec![y.hash()],
        need: vec![],
        have: vec![],
        changes: vec![c.raw_bytes().to_vec()].into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    };
    let mut peer = PeerSync::default();
    for change in [&y, &x] {
        let prepared = prepare(&mut server, &peer, &only(change).encode(), &TeamPolicy)?;
        stored.extend_from_slice(&prepared.chunk);
        prepared.commit(&mut server, &mut peer);
    }
    let mut reloaded = AutoCommit::load(&stored)?;
    for change in [&x, &y] {
        ensure!(
            reloaded.get_change_by_hash(&change.hash()).is_some(),
            "change {} is in memory but not in what was stored",
            change.hash()
        );
    }
    Ok(())
}

// ---- Whole sessions over random histories --------------------------------------------------------

/// The device's documents.
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

/// The server's side of one session over documents in memory: a fresh sync state per session,
/// and each message answered by the step the server uses ([`polyphony_core::sync::answer`]).
struct ServerPeer {
    docs: BTreeMap<CaseId, AutoCommit>,
    states: BTreeMap<CaseId, PeerSync>,
}

impl ServerPeer {
    fn handle(&mut self, frame: Frame) -> Result<Vec<Frame>> {
        Ok(match frame {
            Frame::Hello(_) => vec![Frame::Welcome(Welcome {
                version: PROTOCOL_VERSION,
                device: DeviceId::random(),
                practitioner: PractitionerId::random(),
                teams: vec![],
                cases: self
                    .docs
                    .keys()
                    .map(|case| CaseGrant {
                        case: *case,
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
                let state = self.states.entry(case).or_default();
                answer(case, doc, state, &message, &TeamPolicy)?
            }
            Frame::Done => vec![Frame::Bye],
            other => anyhow::bail!("unexpected {}", other.kind()),
        })
    }
}

/// Run one one-shot session; returns how many frames the device handled, or an error if it did
/// not settle within `limit` frames.
fn session(device: &mut Docs, server: &mut ServerPeer, limit: usize) -> Result<usize> {
    server.states.clear();
    let mut session = ClientSession::new(false, vec![], BTreeMap::new());
    let mut inbox = std::collections::VecDeque::new();
    let mut actions = session.start();
    for handled in 0..limit {
        for action in actions.drain(..) {
            match action {
                Action::Send(f) => inbox.extend(server.handle(f)?),
                Action::Close { code, message } => {
                    ensure!(code == ErrorCode::Done, "closed: {message}");
                    return Ok(handled);
                }
                Action::Refused { refusal, .. } => anyhow::bail!("refused: {}", refusal.message),
                _ => {}
            }
        }
        let frame = inbox
            .pop_front()
            .ok_or_else(|| anyhow::anyhow!("the session stalled"))?;
        actions = session.handle(frame, device);
    }
    anyhow::bail!(
        "the session did not settle within {limit} frames: the two sides ask each other forever"
    )
}

#[test]
fn offline_edits_on_both_sides_always_sync_to_completion() -> Result<()> {
    /// Random histories tried. A Bloom false positive needs a few hundred changes to show up,
    /// so this is many small histories rather than a few big ones.
    const HISTORIES: usize = 150;
    /// Frames one session may take (a settled session of a few cases takes a dozen or two).
    const FRAME_LIMIT: usize = 2_000;
    let (sam, kit) = (author("Sam"), author("Kit"));
    let (mut frames, mut changes, mut sessions) = (0usize, 0usize, 0usize);
    for history in 0..HISTORIES {
        // Both start from the same synced cases, then edit offline: the device a few notes in
        // a row (each depending on the last), another device (through the server) a few too.
        let mut device = Docs::default();
        let mut server = ServerPeer {
            docs: BTreeMap::new(),
            states: BTreeMap::new(),
        };
        for c in 0..3 {
            let (mut case, meeting) = new_case(&sam)?;
            let id = case.case_id();
            let base = case.automerge_mut().clone();
            let mine = 1 + (history + c) % 6;
            let theirs = (history / 6 + c) % 4;
            device
                .0
                .insert(id, with_notes(&base, &sam, meeting, mine, "device")?);
            server
                .docs
                .insert(id, with_notes(&base, &kit, meeting, theirs, "server")?);
            changes += mine + theirs;
        }
        frames += session(&mut device, &mut server, FRAME_LIMIT)
            .map_err(|e| e.context(format!("history {history}")))?;
        sessions += 1;
        for (id, doc) in device.0.iter_mut() {
            let s = server.docs.get_mut(id).expect("the server holds it");
            let (mut a, mut b) = (doc.get_heads(), s.get_heads());
            a.sort();
            b.sort();
            ensure!(a == b, "history {history}: case {id} did not converge");
            validate_document(doc)?;
        }
    }
    report_figures(
        "sync_sessions_sans_io",
        &[
            ("sessions", sessions as u64),
            ("changes_synced", changes as u64),
            ("frames_handled", frames as u64),
            ("sessions_stalled", 0),
        ],
    );
    Ok(())
}

/// 154 bytes the `document_load` fuzz target found: automerge 0.12 panics decoding them (a
/// bundle chunk whose delta column ends inside a number).
const PANIC_CHUNK: &[u8] = include_bytes!("data/automerge-bundle-panic.bin");

#[test]
fn a_chunk_that_makes_automerge_panic_is_refused_on_either_side_and_changes_nothing() -> Result<()>
{
    let sam = author("Sam");
    let (mut case, _) = new_case(&sam)?;
    let id = case.case_id();
    let mut doc = case.automerge_mut().clone();
    let before = doc.get_heads();
    let message = Message {
        heads: vec![],
        need: vec![],
        have: vec![],
        changes: vec![PANIC_CHUNK.to_vec()].into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    }
    .encode();

    // As the server applies it.
    ensure!(prepare(&mut doc, &PeerSync::default(), &message, &TeamPolicy).is_err());
    ensure!(doc.get_heads() == before);

    // As a device receives it from a hostile server.
    let mut docs = Docs::default();
    docs.0.insert(id, doc.clone());
    let mut session = ClientSession::new(false, vec![], BTreeMap::new());
    let _ = session.start();
    let _ = session.handle(
        Frame::Welcome(Welcome {
            version: PROTOCOL_VERSION,
            device: DeviceId::random(),
            practitioner: PractitionerId::random(),
            teams: vec![],
            cases: vec![],
            mode: SessionMode::Normal,
            audit_head: None,
            features: Vec::new(),
            colleagues: None,
            servers: Vec::new(),
        }),
        &mut docs,
    );
    let actions = session.handle(Frame::Sync { case: id, message }, &mut docs);
    ensure!(actions.iter().any(|a| matches!(a, Action::Refused { .. })));
    ensure!(actions.iter().all(|a| !matches!(a, Action::Persist { .. })));
    ensure!(docs.0.get_mut(&id).expect("held").get_heads() == before);

    // And as a stored case.
    ensure!(CaseDoc::load(PANIC_CHUNK, None).is_err());
    Ok(())
}
