//! What the fuzz targets share: the case every `client_session` input starts from, and the
//! session driver, so the seed generator (`examples/seed_corpus.rs`) and the target agree.
//!
//! The fixture case is stored in `fixtures/case.automerge` rather than built at start-up because a
//! case built now would have new hashes every run, and the seed corpus (sync messages about that
//! very case) would no longer fit it.

pub mod server;

use std::collections::BTreeMap;

use automerge::AutoCommit;
use polyphony_core::sync::{
    Action, CaseGrant, ClientSession, DocSet, Frame, SessionMode, Welcome, PROTOCOL_VERSION,
};
use polyphony_core::{CaseId, DeviceId, PractitionerId, TeamId};

/// The fixture case, saved.
pub const FIXTURE: &[u8] = include_bytes!("../fixtures/case.automerge");

/// The fixture case, loaded. Loaded once and cloned: loading costs more than cloning, and the
/// fuzzer starts thousands of sessions.
pub fn fixture_doc() -> AutoCommit {
    static LOADED: std::sync::OnceLock<AutoCommit> = std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| AutoCommit::load(FIXTURE).expect("the fixture loads"))
        .clone()
}

/// A case the server offers that the device does not hold yet (so the session inserts it).
pub const NEW_CASE: CaseId = CaseId(uuid_from_u128(0x0f0f_0000_4000_8000_0000_0000_0000_0002));

const fn uuid_from_u128(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(n)
}

/// The device's documents during a fuzzed session.
#[derive(Default)]
pub struct Docs(pub BTreeMap<CaseId, AutoCommit>);

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

/// The welcome every fuzzed session starts with: the fixture case and one new case granted.
pub fn welcome(fixture: CaseId) -> Frame {
    let team = TeamId(uuid_from_u128(0x7ea3));
    Frame::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        device: DeviceId(uuid_from_u128(0xde71ce)),
        practitioner: PractitionerId(uuid_from_u128(0x5a3)),
        teams: vec![team],
        cases: vec![
            CaseGrant {
                case: fixture,
                team,
            },
            CaseGrant {
                case: NEW_CASE,
                team,
            },
        ],
        mode: SessionMode::Normal,
        audit_head: None,
        features: Vec::new(),
        colleagues: None,
        servers: Vec::new(),
    })
}

/// A device session over the fixture, after the welcome: feed it frames, and it records what it
/// persisted (as the device's store would) and what it sent.
pub struct Device {
    /// The documents.
    pub docs: Docs,
    /// The session.
    pub session: ClientSession,
    /// What the store would hold per case: the fixture's save, then every persisted chunk.
    pub stored: BTreeMap<CaseId, Vec<u8>>,
    /// Frames the device sent.
    pub sent: Vec<Frame>,
}

impl Device {
    /// The device holding the fixture, welcomed.
    pub fn start() -> Device {
        Self::start_from(fixture_doc(), FIXTURE)
    }

    /// The device holding `saved` (a case's full save), welcomed.
    pub fn start_with(saved: &[u8]) -> Device {
        Self::start_from(AutoCommit::load(saved).expect("the fixture loads"), saved)
    }

    fn start_from(doc: AutoCommit, saved: &[u8]) -> Device {
        let fixture =
            polyphony_core::model::schema::read_case_id(&doc).expect("the fixture is a case");
        let mut docs = Docs::default();
        docs.0.insert(fixture, doc);
        let mut device = Device {
            docs,
            session: ClientSession::new(false, vec![], BTreeMap::new()),
            stored: BTreeMap::from([(fixture, saved.to_vec())]),
            sent: Vec::new(),
        };
        let hello = device.session.start();
        device.apply(hello);
        let welcomed = device.session.handle(welcome(fixture), &mut device.docs);
        device.apply(welcomed);
        device
    }

    /// Hand a frame to the session.
    pub fn receive(&mut self, frame: Frame) {
        let actions = self.session.handle(frame, &mut self.docs);
        self.apply(actions);
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send(f) => self.sent.push(f),
                Action::Persist { case, chunk } => self
                    .stored
                    .entry(case)
                    .or_default()
                    .extend_from_slice(&chunk),
                _ => {}
            }
        }
    }
}

/// Let a panic inside automerge unwind to the `catch_unwind` Polyphony puts around automerge's
/// decoding (see `polyphony_core::sync::prepare`), instead of aborting on the spot as
/// libfuzzer-sys's panic hook does for every panic. A panic in Polyphony's own code still aborts,
/// and so does an automerge panic that Polyphony fails to catch: it unwinds out of the target,
/// where libfuzzer-sys aborts. Call it from the target's `init`.
pub fn tolerate_caught_automerge_panics() {
    let abort = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let upstream = info.location().is_some_and(|l| {
            ["/automerge-", "/hexane-"]
                .iter()
                .any(|c| l.file().contains(c))
        });
        if !upstream {
            abort(info);
        }
    }));
}
