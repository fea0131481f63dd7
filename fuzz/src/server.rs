//! The server's side of a session, for the `server_session` target: a borough server over an
//! in-memory store with two teams, the fixture case stored in North, one case of South, and one
//! enrolled device of a North practitioner, whose session the fuzzer feeds frames.
//!
//! The teams', the practitioner's and the device's ids are fixed, so seeds written by
//! `examples/server_seeds.rs` carry what the server accepts: new cases for North, and changes
//! under the device's actor stamped with its practitioner. The South case is made afresh for each
//! input (its hashes differ; only its id is known).
//!
//! The first byte of an input chooses the session's mode: bit 0, the device is being revoked
//! (upload only, told to wipe at its `Done`); bit 1, it announced that it confirms a wipe; bit 2,
//! the server is the trust hub and the session a borough's link (`Session::for_borough`): North
//! is the borough Brent's team, South another borough's, and Brent's roster holds the device and
//! its practitioner, so the link relays the same changes the device would send (bits 0 and 1 do
//! not apply).

use std::sync::{Arc, Mutex};

use automerge::sync::{State, SyncDoc};
use automerge::{AutoCommit, ChangeHash};
use polyphony_core::model::{actor_for_device, validate_document, Author, CaseDoc, NewCase};
use polyphony_core::store::{MemoryStore, Store};
use polyphony_core::sync::{prepare, CasePolicy, PeerSync, SessionMode, DEFAULT_MAX_FRAME};
use polyphony_core::{CaseId, DeviceId, PractitionerId, TeamId};
use polyphony_server::audit::AuditLog;
use polyphony_server::registry::{DeviceStatus, Registry};
use polyphony_server::session::{Session, Shared};
use polyphony_server::storage::{ServerCase, ServerStorage};

/// The device's team.
pub const NORTH: TeamId = TeamId(crate::uuid_from_u128(
    0x4047_0000_4000_8000_0000_0000_0000_0004,
));

/// The other team.
pub const SOUTH: TeamId = TeamId(crate::uuid_from_u128(
    0x5047_0000_4000_8000_0000_0000_0000_0005,
));

/// The device's practitioner, Sam, of North.
pub const SAM: PractitionerId = PractitionerId(crate::uuid_from_u128(
    0x5a30_0000_4000_8000_0000_0000_0000_0006,
));

/// The enrolled device whose session is fuzzed.
pub const DEVICE: DeviceId = DeviceId(crate::uuid_from_u128(
    0xde71_ce00_4000_8000_0000_0000_0000_0001,
));

/// The case of the other team (South): the device may neither read nor write it.
pub const SOUTH_CASE: CaseId = CaseId(crate::uuid_from_u128(
    0x5007_0000_4000_8000_0000_0000_0000_0003,
));

/// Accepts the fixture as it is (its authors are devices this world never enrolled).
struct Import;

impl CasePolicy for Import {
    fn author_allowed(&self, _: &automerge::ActorId) -> bool {
        true
    }
    fn check(&self, _: &AutoCommit) -> Result<(), polyphony_core::sync::PolicyRefusal> {
        Ok(())
    }
}

/// A server, its stored cases, and the fuzzed device's session.
pub struct World {
    /// The server's store.
    pub store: Arc<dyn Store>,
    /// What the session shares with every other.
    pub shared: Arc<Shared>,
    /// The device's session.
    pub session: Session,
    /// The fixture case's id.
    pub fixture: CaseId,
    /// The South case's heads as stored.
    pub south_heads: Vec<ChangeHash>,
}

impl World {
    /// A fresh world, the device's session just welcomed in normal mode.
    pub fn new() -> World {
        World::with_mode(0)
    }

    /// A fresh world, the session's mode chosen by `flags` (see the module docs).
    pub fn with_mode(flags: u8) -> World {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let registry = Arc::new(Registry::new(store.clone()));
        let hub = flags & 4 == 4;
        let (north, south, peer) = if hub {
            let (north, south, brent) = hub_registry(&registry);
            (north, south, Err(brent))
        } else {
            let north = registry.add_team_as(NORTH, "North").expect("team").id;
            let south = registry.add_team_as(SOUTH, "South").expect("team").id;
            let sam = registry
                .add_practitioner_as(SAM, "Sam", north)
                .expect("practitioner");
            let code = registry
                .create_enrolment(sam.id, [1; 32], time::Duration::hours(1))
                .expect("code");
            let enrolled = registry
                .redeem_enrolment(code.token(), DEVICE, "laptop", [2; 32])
                .expect("enrolled");
            (north, south, Ok(enrolled))
        };
        let shared = Arc::new(Shared {
            storage: Arc::new(ServerStorage::new(store.clone(), 16)),
            registry,
            audit: Arc::new(AuditLog::open(store.clone()).expect("audit")),
            max_frame: DEFAULT_MAX_FRAME,
            revoking_limit: time::Duration::days(14),
            moved_upload_limit: time::Duration::days(14),
            max_new_cases: polyphony_server::session::MAX_PROVISIONAL,
            advertise: Vec::new(),
            ca: None,
            limits: Default::default(),
        });
        let fixture = crate::fixture_doc();
        let fixture_id =
            polyphony_core::model::schema::read_case_id(&fixture).expect("the fixture is a case");
        store_case(&shared, fixture_id, north, fixture);
        let kim = Author {
            practitioner: polyphony_core::PractitionerId::random(),
            practitioner_name: "Kim".into(),
            device: DeviceId::random(),
        };
        let south_doc = CaseDoc::create(
            SOUTH_CASE,
            south,
            NewCase {
                name: "Jo".into(),
                ..Default::default()
            },
            kim,
        )
        .expect("case")
        .into_automerge();
        let south_heads = store_case(&shared, SOUTH_CASE, south, south_doc);
        let session = match peer {
            Err(brent) => {
                let teams = shared.registry.borough_teams(&brent.id).expect("teams");
                Session::for_borough(shared.clone(), 1, &brent, teams)
            }
            Ok((device, practitioner)) => {
                let mode = if flags & 1 == 1 {
                    shared
                        .registry
                        .set_device_status(&DEVICE, DeviceStatus::Revoking)
                        .expect("revoking");
                    SessionMode::Revoking
                } else {
                    SessionMode::Normal
                };
                Session::new(shared.clone(), 1, device, practitioner, mode)
                    .confirming_wipe(flags & 2 == 2)
            }
        };
        World {
            store,
            shared,
            session,
            fixture: fixture_id,
            south_heads,
        }
    }

    /// What the server stores of `case`, if anything.
    pub fn stored(&self, case: &CaseId) -> Option<AutoCommit> {
        let c = self.shared.storage.case(case).expect("storage reads")?;
        let c = c.lock().expect("case lock");
        Some(c.doc.clone())
    }

    /// Every promise of the session over what is stored, read back from the store itself (not
    /// the server's open copies): every stored case registered to North, but the South case to
    /// South; each valid; the South case as it was; every change the server did not start with
    /// written under the device's own actor; nothing registered that is not stored.
    pub fn check(&self) {
        let mine = actor_for_device(&DEVICE);
        let mut start = crate::fixture_doc();
        let started_with: std::collections::HashSet<ChangeHash> =
            start.get_changes(&[]).iter().map(|c| c.hash()).collect();
        for case in self.store.list_cases().expect("the store lists") {
            let team = self
                .shared
                .registry
                .case_team(&case)
                .expect("registry reads");
            let expected = if case == SOUTH_CASE { SOUTH } else { NORTH };
            assert_eq!(team, Some(expected), "case {case} is stored under {team:?}");
            let chunks = self
                .store
                .load_chunks(&case)
                .expect("the store reads")
                .expect("a listed case has a log");
            let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, c)| c).collect();
            let mut doc = AutoCommit::load(&bytes).expect("what was stored loads");
            validate_document(&doc).expect("a stored case stays a valid record");
            if case == SOUTH_CASE {
                let mut heads = doc.get_heads();
                heads.sort();
                let mut before = self.south_heads.clone();
                before.sort();
                assert_eq!(heads, before, "the other team's case changed");
                continue;
            }
            for change in doc.get_changes(&[]) {
                let known = case == self.fixture && started_with.contains(&change.hash());
                assert!(
                    known || *change.actor_id() == mine,
                    "case {case}: a change under another actor was accepted"
                );
            }
        }
        for (case, _) in self
            .shared
            .registry
            .cases_of_teams(&[NORTH, SOUTH])
            .expect("registry reads")
        {
            assert!(
                self.store
                    .load_chunks(&case)
                    .expect("the store reads")
                    .is_some(),
                "case {case} is registered and not stored"
            );
        }
    }
}

/// A hub's registry: North is the borough Brent's team, South the borough Ashby's; Brent's roster
/// holds the device and Sam. Returns the two teams and Brent, enrolled.
fn hub_registry(registry: &Registry) -> (TeamId, TeamId, polyphony_server::registry::Borough) {
    use polyphony_core::sync::{RosterDevice, TeamInfo};
    let mut enrolled = Vec::new();
    for (name, team, fingerprint) in [("Brent", NORTH, [7; 32]), ("Ashby", SOUTH, [8; 32])] {
        let b = registry.add_borough(name).expect("borough");
        let code = registry
            .create_borough_enrolment(b.id, [1; 32], time::Duration::hours(1))
            .expect("code");
        let b = registry
            .redeem_borough_enrolment(code.token(), fingerprint)
            .expect("enrolled");
        let info = TeamInfo {
            id: team,
            name: if team == NORTH { "North" } else { "South" }.into(),
        };
        registry.claim_teams(&b.id, &[info]).expect("teams");
        enrolled.push(b);
    }
    let brent = enrolled.remove(0);
    registry
        .claim_roster(
            &brent.id,
            &[RosterDevice {
                device: DEVICE,
                practitioner: SAM,
                practitioner_name: "Sam".into(),
            }],
        )
        .expect("roster");
    (NORTH, SOUTH, brent)
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

/// Store `doc` as the server stores a new case, registered to `team`; its heads.
fn store_case(shared: &Shared, case: CaseId, team: TeamId, mut doc: AutoCommit) -> Vec<ChangeHash> {
    shared
        .registry
        .register_case(case, team)
        .expect("registered");
    let (mut sender, mut peer) = (State::new(), PeerSync::default());
    let mut sc = ServerCase::new(AutoCommit::new(), 0, 0);
    loop {
        let message = doc.sync().generate_sync_message(&mut sender);
        let Some(m) = message else {
            break;
        };
        let prepared = prepare(&mut sc.doc, &peer, &m.encode(), &Import).expect("applies");
        shared
            .storage
            .apply(&case, &mut sc, prepared, &mut peer)
            .expect("stored");
        if let Some(answer) = peer.generate(&mut sc.doc) {
            doc.sync()
                .receive_sync_message(&mut sender, answer)
                .expect("applies");
        }
    }
    assert_eq!(
        sc.doc.get_heads(),
        doc.get_heads(),
        "the whole case is stored"
    );
    let heads = sc.doc.get_heads();
    shared.storage.insert(case, Arc::new(Mutex::new(sc)));
    heads
}
