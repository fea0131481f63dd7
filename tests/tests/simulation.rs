//! Deterministic simulation of the whole sync system (issue 13), as FoundationDB and TigerBeetle
//! test theirs.
//!
//! One process holds the server's real session and storage (`polyphony_server::session::Session`,
//! `ServerStorage`, registry, audit log, admin) and several devices' real profiles driving real
//! `ClientSession`s (`Profile::begin_sync`), each over its own [`CrashStore`]. A seeded scheduler
//! picks every next step: a device edits a case or opens one, a device starts a one-shot sync, the
//! next frame or batch of one connection is delivered (in order per connection; a batch from the
//! server only once `GroupCommit::durable` has returned for its ticket, as the server's writer task
//! waits for it through the driver), a live push, a connection cut mid-way, a group-commit flush, the server crashing and
//! reopening from what was durable, a device crashing and reopening its profile, idle cases
//! closed, a revocation (the device uploads, is told to wipe, wipes, and a new device takes its
//! place), a case moved to another team. The borough server is also linked to a trust hub (issue
//! 18), a second server of its own over its own [`CrashStore`]: the borough's side is the link's
//! real core (`hub_link::LinkCore`, which the link's tokio driver runs), the hub's the real
//! `Session::for_borough` after the hub's real handshake (`claim_roster`, `welcome_borough`). The
//! link's steps: a session started (`Hello`, roster), the next batch up (written only once its
//! ticket is durable on the borough) or down (only once durable on the hub), a borough
//! announcement fed to the core (a device's change pushed to the hub), the hub's own, the link
//! cut, the link looking again at the roster, a hub flush, the hub crashing and reopening from
//! what was durable (the link is cut; a borough crash cuts it too). The server's case cache holds 16 cases and the run opens
//! more, so cases are evicted and reloaded; hot cases take hundreds of chunks, far past both
//! compaction thresholds (32 on each side).
//!
//! After every step it checks, against the durable state only (what a crash now would leave):
//! 1. every head a device recorded as acknowledged is in a fresh load of the server's store;
//! 2. every edit a device reported saved is in a fresh load of its own store (or, if the device
//!    no longer holds the case after a wipe or a move, on the server);
//! 3. (at the end, with faults stopped and every device synced until nothing changes) every
//!    replica of each case has the same heads as the server, and nothing any device holds is
//!    missing from the server;
//! 4. every document loaded for these checks validates;
//! 5. every head the borough recorded as on the hub (its `hub.acked`, read from its durable
//!    store) is in a fresh load of the hub's durable store;
//! 6. every change the hub holds durably is in a fresh load of the borough's durable store (the
//!    hub holds only what the borough sent, and the borough sends only what its disk holds);
//! 7. (at the end, after a fresh link session settled) every case on the borough has the same
//!    heads on the hub, and every hub document validates.
//!
//! Ids and the record's clock are seeded too (`polyphony_core::determinism`), so a seed replays
//! its history exactly: `POLYPHONY_SIM_SEED=<seed>` runs one; `POLYPHONY_SIM_SEEDS=<n>` and
//! `POLYPHONY_SIM_STEPS=<n>` set the budget (defaults are bounded for CI).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use automerge::{AutoCommit, ChangeHash};
use polyphony_core::model::{
    self, validate_document, NewCase, NewMeeting, NoteKind, Participant, PersonField, Place,
};
use polyphony_core::net::{NetError, Outgoing};
use polyphony_core::profile::{Enrolment, Profile, ProfileError, ProfileSync};
use polyphony_core::store::Store;
use polyphony_core::sync::{
    ErrorCode, Frame, FrameDecoder, Hello, TeamInfo, DEFAULT_MAX_FRAME, FEATURE_CONFIRMS_WIPE,
};
use polyphony_core::{BoroughId, CaseId, EntryId, PractitionerId, TeamId};
use polyphony_e2e::sim::CrashStore;
use polyphony_server::admin::{Admin, AdminRequest, AdminResponse};
use polyphony_server::data_dir;
use polyphony_server::driver::CoreDriver;
use polyphony_server::hub_link::{self, LinkCore, LINK_ORIGIN, NS_ACKED};
use polyphony_server::registry::DeviceStatus;
use polyphony_server::session::{self, Session, Shared};
use polyphony_server::storage::{CaseChanged, ServerStorage};
use polyphony_server::ServerConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::broadcast;

/// The server's case cache: the smallest the server allows, so eviction happens.
const CACHE_CASES: usize = 16;
/// Cases opened at the start (more than the cache holds).
const INITIAL_CASES: usize = 18;
/// At most this many cases in a run.
const MAX_CASES: usize = 24;
/// Revocations per run, at most.
const MAX_REVOCATIONS: usize = 2;

/// What a run went through.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    steps: u64,
    edits: u64,
    syncs_completed: u64,
    syncs_cut: u64,
    frames_up: u64,
    batches_down: u64,
    pushes: u64,
    server_crashes: u64,
    device_crashes: u64,
    lost_writes: u64,
    server_compactions: u64,
    device_compactions: u64,
    evictions_seen: u64,
    idle_closed: u64,
    revocations: u64,
    wipes: u64,
    moves: u64,
    acked_heads_checked: u64,
    edits_checked: u64,
    docs_validated: u64,
    cases: u64,
    /// The most chunks appended to one case's log on the server.
    max_server_chunks_appended: u64,
    /// Steps of the hub link (frames up or down, announcements, starts, cuts, hub flushes).
    link_steps: u64,
    /// Link sessions started (the hub welcomed most of them).
    link_sessions: u64,
    hub_crashes: u64,
    hub_compactions: u64,
    /// Heads the borough recorded as on the hub (`hub.acked`), checked on the hub's disk.
    hub_acked_checked: u64,
    /// The most chunks appended to one case's log on the hub.
    max_hub_chunks_appended: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.steps += o.steps;
        self.edits += o.edits;
        self.syncs_completed += o.syncs_completed;
        self.syncs_cut += o.syncs_cut;
        self.frames_up += o.frames_up;
        self.batches_down += o.batches_down;
        self.pushes += o.pushes;
        self.server_crashes += o.server_crashes;
        self.device_crashes += o.device_crashes;
        self.lost_writes += o.lost_writes;
        self.server_compactions += o.server_compactions;
        self.device_compactions += o.device_compactions;
        self.evictions_seen += o.evictions_seen;
        self.idle_closed += o.idle_closed;
        self.revocations += o.revocations;
        self.wipes += o.wipes;
        self.moves += o.moves;
        self.acked_heads_checked += o.acked_heads_checked;
        self.edits_checked += o.edits_checked;
        self.docs_validated += o.docs_validated;
        self.cases += o.cases;
        self.max_server_chunks_appended = self
            .max_server_chunks_appended
            .max(o.max_server_chunks_appended);
        self.link_steps += o.link_steps;
        self.link_sessions += o.link_sessions;
        self.hub_crashes += o.hub_crashes;
        self.hub_compactions += o.hub_compactions;
        self.hub_acked_checked += o.hub_acked_checked;
        self.max_hub_chunks_appended = self.max_hub_chunks_appended.max(o.max_hub_chunks_appended);
    }
}

/// The server: its store, and everything opened over it (dropped and reopened on a crash).
struct SimServer {
    store: Arc<CrashStore>,
    config: ServerConfig,
    shared: Arc<Shared>,
    /// Its announcements of changed cases, as the server's connection driver receives them.
    driver: Arc<CoreDriver>,
    admin: Admin,
}

impl SimServer {
    fn open(store: Arc<CrashStore>, config: ServerConfig) -> SimServer {
        let opened = data_dir::open_with_store(&config, store.clone()).expect("server opens");
        let storage = Arc::new(ServerStorage::new(opened.store.clone(), CACHE_CASES));
        let driver = CoreDriver::attach(&storage, &opened.registry);
        let shared = Arc::new(Shared {
            storage,
            registry: opened.registry.clone(),
            audit: opened.audit.clone(),
            max_frame: DEFAULT_MAX_FRAME,
            revoking_limit: polyphony_server::ServerConfig::default().revoking_limit(),
            moved_upload_limit: polyphony_server::ServerConfig::default().moved_upload_limit(),
            max_new_cases: polyphony_server::session::MAX_PROVISIONAL,
            advertise: Vec::new(),
            ca: None,
            limits: Default::default(),
        });
        let admin = Admin::new(
            opened.registry,
            opened.audit,
            opened.ca.fingerprint(),
            time::Duration::hours(1),
        );
        SimServer {
            store,
            config,
            shared,
            driver,
            admin,
        }
    }

    fn admin(&self, req: AdminRequest) -> serde_json::Value {
        match self.admin.handle(req) {
            AdminResponse::Ok { value } => value,
            AdminResponse::Err { message } => panic!("admin request failed: {message}"),
        }
    }
}

/// One device: its store, its profile over it, and its sync in progress.
struct SimDevice {
    name: String,
    practitioner: usize,
    store: Arc<CrashStore>,
    profile: Profile,
    sync: Option<(ProfileSync, u64)>,
    /// Every edit this device reported saved, by case.
    claims: BTreeMap<CaseId, BTreeSet<ChangeHash>>,
    /// Per case: the durable version and claim count last checked.
    checked: BTreeMap<CaseId, (u64, usize)>,
    /// Revoked (wiped or refused): it syncs no more.
    retired: bool,
}

/// One connection between a device and the server.
struct Conn {
    device: usize,
    /// The server's side, once the device's hello is welcomed.
    session: Option<Session>,
    changes: Option<broadcast::Receiver<CaseChanged>>,
    /// Frames the device wrote that the server has not read yet.
    up: VecDeque<Frame>,
    /// Batches the server's session queued, waiting for its writer.
    down: VecDeque<(u64, Vec<Frame>)>,
    /// The server still reads this connection (it stops after `Done`).
    reading: bool,
}

/// The link between the borough and the hub: the borough's side is the link's real core
/// ([`LinkCore`], which the link's driver runs), the hub's the real session for a borough.
struct SimLink {
    core: LinkCore,
    /// The borough's announcements, as the link's driver receives them.
    changes: broadcast::Receiver<CaseChanged>,
    /// Batches the core returned, in order: each is written (and read by the hub) only once its
    /// ticket is durable on the borough; the last may close the link.
    up: VecDeque<(u64, Vec<Frame>, bool)>,
    /// The hub's side: the borough's `Hello` once read (its `Roster` comes next), then the session.
    hello: Option<Hello>,
    session: Option<Session>,
    hub_changes: Option<broadcast::Receiver<CaseChanged>>,
    /// Batches the hub's session queued, waiting for its writer (released once durable on the hub).
    down: VecDeque<(u64, Vec<Frame>)>,
    /// The hub still reads the link.
    reading: bool,
}

struct Practitioner {
    id: PractitionerId,
    name: String,
    teams: Vec<TeamId>,
}

struct World {
    rng: StdRng,
    home: PathBuf,
    _dir: tempfile::TempDir,
    server: SimServer,
    devices: Vec<SimDevice>,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    teams: Vec<(TeamId, String)>,
    practitioners: Vec<Practitioner>,
    /// Every head any device recorded as acknowledged, by case.
    acked: BTreeMap<CaseId, BTreeSet<ChangeHash>>,
    /// Per case: the server's durable version and acked count last checked.
    server_checked: BTreeMap<CaseId, (u64, usize)>,
    server_docs: BTreeMap<CaseId, (u64, AutoCommit)>,
    revocations: usize,
    counts: Counts,
    /// Set by a deliberate break (see `--break`): none in the real test.
    faults: bool,
    /// The trust hub (a server of its own over its own store) and the borough's id there.
    hub: SimServer,
    borough: BoroughId,
    link: Option<SimLink>,
    next_hub_conn: u64,
    hub_docs: BTreeMap<CaseId, (u64, AutoCommit)>,
    /// Per case: the `hub.acked` bytes and the hub's durable version last checked.
    hub_checked: BTreeMap<CaseId, (Vec<u8>, u64)>,
    /// Per case: the hub's durable version last checked (hub ⊆ borough).
    hub_within: BTreeMap<CaseId, u64>,
}

fn roundtrip(frame: &Frame) -> Frame {
    let mut bytes = Vec::new();
    frame.encode(&mut bytes);
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
    d.push(&bytes);
    d.next_frame()
        .expect("a frame we encoded decodes")
        .expect("whole")
}

/// The hub's administrator adds the borough and the borough joins with the one-time code (the
/// registry's real enrolment, without the QUIC exchange); made durable at once.
fn enrol_borough(hub: &SimServer) -> BoroughId {
    let registry = &hub.shared.registry;
    let b = registry.add_borough("Camden").expect("borough");
    let code = registry
        .create_borough_enrolment(b.id, [0; 32], time::Duration::hours(1))
        .expect("code");
    registry
        .redeem_borough_enrolment(code.token(), [9; 32])
        .expect("enrolled");
    registry.flush().expect("registry flush");
    b.id
}

fn load(chunks: Vec<(u64, Vec<u8>)>) -> Result<AutoCommit, String> {
    let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, c)| c).collect();
    AutoCommit::load(&bytes).map_err(|e| e.to_string())
}

impl World {
    fn new(seed: u64) -> World {
        polyphony_core::determinism::seed_this_thread(seed);
        let dir = tempfile::tempdir().expect("temp dir");
        let config = ServerConfig {
            data_dir: dir.path().join("server"),
            ..ServerConfig::default()
        };
        let server = SimServer::open(Arc::new(CrashStore::new()), config);
        let hub_config = ServerConfig {
            data_dir: dir.path().join("hub"),
            role: polyphony_server::ServerRole::Hub,
            ..ServerConfig::default()
        };
        let hub = SimServer::open(Arc::new(CrashStore::new()), hub_config);
        let borough = enrol_borough(&hub);
        let mut w = World {
            rng: StdRng::seed_from_u64(seed),
            home: dir.path().join("devices"),
            _dir: dir,
            server,
            devices: Vec::new(),
            conns: BTreeMap::new(),
            next_conn: 1,
            teams: Vec::new(),
            practitioners: Vec::new(),
            acked: BTreeMap::new(),
            server_checked: BTreeMap::new(),
            server_docs: BTreeMap::new(),
            revocations: 0,
            counts: Counts::default(),
            faults: true,
            hub,
            borough,
            link: None,
            next_hub_conn: 1,
            hub_docs: BTreeMap::new(),
            hub_checked: BTreeMap::new(),
            hub_within: BTreeMap::new(),
        };
        w.set_up();
        w
    }

    /// Two teams; three practitioners (one in both teams); one device each; the first cases.
    fn set_up(&mut self) {
        for name in ["North", "South"] {
            let v = self
                .server
                .admin(AdminRequest::TeamAdd { name: name.into() });
            let id: TeamId = serde_json::from_value(v["id"].clone()).expect("team id");
            self.teams.push((id, name.to_string()));
        }
        let registry = self.server.shared.registry.clone();
        for (i, name) in ["Ana", "Ben", "Cleo"].iter().enumerate() {
            let p = registry
                .add_practitioner(name, self.teams[0].0)
                .expect("practitioner");
            let p = if i == 2 {
                registry
                    .add_practitioner_to_team(&p.id, self.teams[1].0)
                    .expect("second team")
            } else {
                p
            };
            self.practitioners.push(Practitioner {
                id: p.id,
                name: p.name,
                teams: p.teams,
            });
        }
        registry.flush().expect("registry flush");
        for p in 0..self.practitioners.len() {
            self.add_device(p);
        }
        for i in 0..INITIAL_CASES {
            let d = i % self.devices.len();
            self.create_case(d);
        }
    }

    /// Enrol a new device for practitioner `p`: the registry's real enrolment, then the profile's
    /// enrolment record as `Profile::enrol` writes it (without the QUIC exchange).
    fn add_device(&mut self, p: usize) {
        let n = self.devices.len();
        let name = format!("device-{n}");
        let home = self.home.join(&name);
        let store = Arc::new(CrashStore::new());
        let profile = Profile::from_store(&home, store.clone()).expect("profile");
        let registry = &self.server.shared.registry;
        let pr = &self.practitioners[p];
        let code = registry
            .create_enrolment(pr.id, [0; 32], time::Duration::hours(1))
            .expect("code");
        let fingerprint: [u8; 32] = self.rng.random();
        registry
            .redeem_enrolment(code.token(), profile.device(), &name, fingerprint)
            .expect("redeem");
        registry.flush().expect("registry flush");
        let teams = pr
            .teams
            .iter()
            .map(|t| TeamInfo {
                id: *t,
                name: self
                    .teams
                    .iter()
                    .find(|x| x.0 == *t)
                    .expect("team")
                    .1
                    .clone(),
            })
            .collect();
        let e = Enrolment {
            server: "simulated".into(),
            servers: Vec::new(),
            device_name: name.clone(),
            practitioner: pr.id,
            practitioner_name: pr.name.clone(),
            teams,
            ca: String::new(),
            certificate: String::new(),
            key_pem: String::new(),
            enrolled_at: "2026-01-01T00:00:00Z".into(),
        };
        store
            .put_meta(
                "profile",
                "enrolment",
                &serde_json::to_vec(&e).expect("json"),
            )
            .expect("enrolment");
        store.flush().expect("flush");
        let profile = Profile::from_store(&home, store.clone()).expect("profile");
        self.devices.push(SimDevice {
            name,
            practitioner: p,
            store,
            profile,
            sync: None,
            claims: BTreeMap::new(),
            checked: BTreeMap::new(),
            retired: false,
        });
    }

    fn device_home(&self, d: usize) -> PathBuf {
        self.home.join(&self.devices[d].name)
    }

    fn idle(&self, d: usize) -> bool {
        let dev = &self.devices[d];
        !dev.retired && dev.sync.is_none() && dev.profile.enrolment().is_some()
    }

    fn create_case(&mut self, d: usize) {
        let dev = &mut self.devices[d];
        let teams = &self.practitioners[dev.practitioner].teams;
        let team = teams[self.rng.random_range(0..teams.len())];
        let n = self.counts.cases;
        let created = dev.profile.create_case(
            NewCase {
                name: format!("Person {n}"),
                ..Default::default()
            },
            Some(&team.to_string()),
        );
        let case = match created {
            Ok(case) => case,
            // Told it is being revoked: it takes no new entries (nothing was saved).
            Err(ProfileError::BeingRevoked) => return,
            Err(e) => panic!("case not created: {e}"),
        };
        let heads = dev.profile.document(case).expect("doc").get_heads();
        dev.claims.entry(case).or_default().extend(heads);
        self.counts.cases += 1;
    }

    /// A device edits one of its cases (hot cases more often); the edit counts as saved once
    /// `Profile::edit` returns.
    fn edit(&mut self, d: usize) {
        let cases = self.devices[d].profile.case_ids().expect("cases");
        if cases.is_empty() {
            return;
        }
        let i = if self.rng.random_bool(0.85) {
            self.rng.random_range(0..cases.len().min(3))
        } else {
            self.rng.random_range(0..cases.len())
        };
        let case = cases[i];
        let kind = self.rng.random_range(0..10u32);
        let n = self.counts.edits;
        let dev = &mut self.devices[d];
        let meetings: Vec<EntryId> = match dev.profile.lookup(case) {
            Ok(v) => v.meetings.iter().map(|m| m.meta.id).collect(),
            Err(_) => return,
        };
        let pick = (!meetings.is_empty()).then(|| meetings[n as usize % meetings.len()]);
        let result = dev.profile.edit(case, |doc| {
            match (kind, pick) {
                (0..=3, _) => doc.set_person(PersonField::Pronouns, Some(&format!("p{n}")))?,
                (4..=7, Some(m)) => doc.append_text(&m, NoteKind::Notes, &format!("note {n}. "))?,
                _ => {
                    doc.add_meeting(NewMeeting {
                        at: model::parse_datetime("at", "2026-03-14T10:30")?,
                        place: Place::Home,
                        attendees: vec![Participant::Person],
                    })?;
                }
            }
            Ok(doc.heads())
        });
        if let Ok(heads) = result {
            dev.claims.entry(case).or_default().extend(heads);
            self.counts.edits += 1;
        }
    }

    fn start_sync(&mut self, d: usize) {
        let id = self.next_conn;
        self.next_conn += 1;
        let dev = &mut self.devices[d];
        let mut sync = dev.profile.begin_sync().expect("begin sync");
        let out = sync.start(&mut dev.profile).expect("start");
        dev.sync = Some((sync, id));
        self.conns.insert(
            id,
            Conn {
                device: d,
                session: None,
                changes: None,
                up: out.frames.iter().map(roundtrip).collect(),
                down: VecDeque::new(),
                reading: true,
            },
        );
    }

    /// The device side of a connection ends (closed by the session, cut, or refused).
    fn end_device_side(&mut self, id: u64, ended: Result<(ErrorCode, String), NetError>) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        if let Some(session) = conn.session {
            drop(session);
        }
        let d = conn.device;
        let ok = ended.is_ok();
        let dev = &mut self.devices[d];
        let (sync, _) = dev.sync.take().expect("a sync in progress");
        let report = sync.finish(&mut dev.profile, ended);
        if ok {
            self.counts.syncs_completed += 1;
        } else {
            self.counts.syncs_cut += 1;
        }
        let revoked = self
            .server
            .shared
            .registry
            .device(&self.devices[d].profile.device())
            .ok()
            .flatten()
            .is_some_and(|x| x.status == DeviceStatus::Revoked);
        match report {
            // Wiped whole: it forgot its enrolment. A wipe that kept cases with changes the
            // server lacks leaves the device enrolled, and it syncs again to upload them.
            Ok(r) if r.wiped && self.devices[d].profile.enrolment().is_none() => {
                self.counts.wipes += 1;
                self.retire(d);
            }
            _ if revoked => self.retire(d),
            _ => {}
        }
    }

    fn retire(&mut self, d: usize) {
        if !self.devices[d].retired {
            self.devices[d].retired = true;
            let p = self.devices[d].practitioner;
            self.add_device(p);
        }
    }

    /// The server reads the next frame a device sent.
    fn deliver_up(&mut self, id: u64) {
        let conn = self.conns.get_mut(&id).expect("conn");
        let Some(frame) = conn.up.pop_front() else {
            return;
        };
        self.counts.frames_up += 1;
        if !conn.reading {
            return;
        }
        if let Some(session) = conn.session.as_mut() {
            if !session.handle(frame) {
                conn.reading = false;
                conn.changes = None;
            }
            return;
        }
        // The hello: the listener's admission (by device record), then the session's welcome.
        let shared = self.server.shared.clone();
        let device_id = self.devices[conn.device].profile.device();
        let device = shared.registry.device(&device_id).ok().flatten();
        let Some(device) = device.filter(|x| x.status != DeviceStatus::Revoked) else {
            let msg = "this device was revoked by your administrator".to_string();
            self.end_device_side(
                id,
                Err(NetError::Refused {
                    code: ErrorCode::Revoked,
                    message: msg,
                }),
            );
            return;
        };
        let practitioner = shared
            .registry
            .practitioner(&device.practitioner)
            .expect("registry")
            .expect("practitioner");
        let Frame::Hello(hello) = frame else {
            panic!("the first frame is not a hello");
        };
        let welcome = session::welcome(&shared, &hello, &device, &practitioner).expect("welcomed");
        let mode = welcome.mode;
        conn.down.push_back((0, vec![Frame::Welcome(welcome)]));
        conn.session = Some(
            Session::new(shared.clone(), id, device, practitioner, mode)
                .confirming_wipe(hello.has(FEATURE_CONFIRMS_WIPE)),
        );
        conn.changes = Some(self.server.driver.case_changes());
    }

    fn pull_batches(conn: &mut Conn) {
        let Some(session) = conn.session.as_mut() else {
            return;
        };
        while let Some(b) = session.poll_reply() {
            conn.down.push_back((b.ticket, b.frames));
        }
    }

    /// The server's writer sends the next batch once its ticket is durable; the device handles it.
    fn deliver_down(&mut self, id: u64) {
        let conn = self.conns.get_mut(&id).expect("conn");
        Self::pull_batches(conn);
        let Some((ticket, frames)) = conn.down.pop_front() else {
            return;
        };
        self.server
            .shared
            .storage
            .group
            .durable(ticket)
            .expect("the crash store's flush cannot fail");
        self.counts.batches_down += 1;
        let d = conn.device;
        let mut saved = Vec::new();
        for frame in frames {
            let frame = roundtrip(&frame);
            if let Frame::Saved { case, .. } = &frame {
                saved.push(*case);
            }
            let dev = &mut self.devices[d];
            let (sync, _) = dev.sync.as_mut().expect("sync in progress");
            let out: Result<Outgoing, polyphony_core::store::StoreError> =
                sync.handle(&mut dev.profile, frame);
            match out {
                Err(e) => {
                    self.record_acks(d, &saved);
                    return self.end_device_side(id, Err(NetError::Store(e)));
                }
                Ok(out) => {
                    let conn = self.conns.get_mut(&id).expect("conn");
                    conn.up.extend(out.frames.iter().map(roundtrip));
                    if let Some(close) = out.close {
                        self.record_acks(d, &saved);
                        return self.end_device_side(id, Ok(close));
                    }
                }
            }
        }
        self.record_acks(d, &saved);
    }

    /// What the device recorded as acknowledged after a `Saved` (read back from its profile).
    fn record_acks(&mut self, d: usize, cases: &[CaseId]) {
        for case in cases {
            let heads = self.devices[d]
                .profile
                .acknowledged_heads(*case)
                .expect("acked heads");
            self.acked.entry(*case).or_default().extend(heads);
        }
    }

    fn push(&mut self, id: u64) {
        let conn = self.conns.get_mut(&id).expect("conn");
        let (Some(rx), Some(session)) = (conn.changes.as_mut(), conn.session.as_mut()) else {
            return;
        };
        match rx.try_recv() {
            Ok(c) => session.push(c),
            Err(broadcast::error::TryRecvError::Lagged(_)) => session.push_all(),
            Err(_) => return,
        }
        self.counts.pushes += 1;
    }

    fn cut(&mut self, id: u64) {
        self.end_device_side(
            id,
            Err(NetError::Lost("connection cut by the simulation".into())),
        );
    }

    fn server_crash(&mut self) {
        // The link's core holds the borough's storage: it goes with it.
        self.link_cut();
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.cut(id);
        }
        let store = self.server.store.clone();
        let config = self.server.config.clone();
        let keep = self.rng.random_range(0..=store.pending());
        // Everything built over the store goes: sessions (above), storage, registry, audit.
        let old = std::mem::replace(
            &mut self.server,
            SimServer::open(Arc::new(CrashStore::new()), config.clone()),
        );
        drop(old);
        store.crash(keep);
        self.server = SimServer::open(store, config);
        self.server_docs.clear();
        self.counts.server_crashes += 1;
    }

    fn device_crash(&mut self, d: usize) {
        if let Some((_, id)) = &self.devices[d].sync {
            let id = *id;
            // The server sees the connection go; the device's sync dies with it (no finish).
            if let Some(conn) = self.conns.remove(&id) {
                drop(conn);
                self.counts.syncs_cut += 1;
            }
            self.devices[d].sync = None;
        }
        let home = self.device_home(d);
        let store = self.devices[d].store.clone();
        let keep = self.rng.random_range(0..=store.pending());
        let placeholder =
            Profile::from_store(Path::new("/nonexistent"), Arc::new(CrashStore::new()))
                .expect("placeholder");
        drop(std::mem::replace(&mut self.devices[d].profile, placeholder));
        store.crash(keep);
        self.devices[d].profile = Profile::from_store(&home, store).expect("profile reopens");
        self.counts.device_crashes += 1;
    }

    fn revoke(&mut self, d: usize) {
        let id = self.devices[d].profile.device();
        self.server.admin(AdminRequest::Revoke {
            device: id.to_string(),
            now: false,
        });
        self.revocations += 1;
        self.counts.revocations += 1;
    }

    fn move_case(&mut self) {
        let registry = &self.server.shared.registry;
        let teams: Vec<TeamId> = self.teams.iter().map(|t| t.0).collect();
        let cases = registry.cases_of_teams(&teams).expect("cases");
        if cases.is_empty() {
            return;
        }
        let (case, team) = cases[self.rng.random_range(0..cases.len())];
        let to = self.teams.iter().find(|t| t.0 != team).expect("other team");
        self.server.admin(AdminRequest::CaseMove {
            case,
            team: to.1.clone(),
        });
        self.counts.moves += 1;
    }

    fn server_flush(&mut self) {
        let storage = &self.server.shared.storage;
        // A ticket of its own, so the flush covers every write made so far.
        let ticket = storage.group.wrote_in(storage.group.generation());
        storage.group.durable(ticket).expect("flush");
    }

    /// One step chosen by the seeded generator among those possible now.
    fn step(&mut self) -> String {
        #[derive(Debug)]
        enum S {
            Edit(usize),
            Create(usize),
            Read(usize),
            Start(usize),
            Up(u64),
            Down(u64),
            Push(u64),
            Cut(u64),
            Flush,
            ServerCrash,
            DeviceCrash(usize),
            CloseIdle,
            Revoke(usize),
            Move,
            LinkStart,
            LinkUp,
            LinkDown,
            LinkPush,
            HubPush,
            LinkCut,
            LinkLookAgain,
            HubFlush,
            HubCrash,
        }
        let mut options: Vec<(u32, S)> = Vec::new();
        for d in 0..self.devices.len() {
            if self.idle(d) {
                options.push((300, S::Edit(d)));
                options.push((25, S::Start(d)));
                options.push((5, S::Read(d)));
                if self.counts.cases < MAX_CASES as u64 {
                    options.push((3, S::Create(d)));
                }
            }
            if !self.devices[d].retired && self.faults {
                options.push((2, S::DeviceCrash(d)));
                if self.revocations < MAX_REVOCATIONS && self.idle(d) {
                    options.push((2, S::Revoke(d)));
                }
            }
        }
        for (id, c) in self.conns.iter_mut() {
            Self::pull_batches(c);
            if !c.up.is_empty() {
                options.push((200, S::Up(*id)));
            }
            if !c.down.is_empty() {
                options.push((200, S::Down(*id)));
            }
            if c.changes.as_ref().is_some_and(|r| !r.is_empty()) {
                options.push((40, S::Push(*id)));
            }
            if self.faults {
                options.push((1, S::Cut(*id)));
            }
        }
        options.push((40, S::Flush));
        options.push((10, S::CloseIdle));
        if self.faults {
            options.push((3, S::ServerCrash));
            options.push((2, S::Move));
        }
        // The hub link: modest weights beside the devices' traffic.
        match self.link.as_mut() {
            None => options.push((40, S::LinkStart)),
            Some(link) => {
                Self::link_pull(link);
                if !link.up.is_empty() {
                    options.push((250, S::LinkUp));
                }
                if !link.down.is_empty() {
                    options.push((250, S::LinkDown));
                }
                if !link.changes.is_empty() {
                    options.push((150, S::LinkPush));
                }
                if link.hub_changes.as_ref().is_some_and(|r| !r.is_empty()) {
                    options.push((5, S::HubPush));
                }
                options.push((3, S::LinkLookAgain));
                if self.faults {
                    options.push((1, S::LinkCut));
                }
            }
        }
        options.push((20, S::HubFlush));
        if self.faults {
            options.push((1, S::HubCrash));
        }
        let total: u32 = options.iter().map(|o| o.0).sum();
        let mut pick = self.rng.random_range(0..total);
        let chosen = options
            .into_iter()
            .find(|(w, _)| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .expect("a step")
            .1;
        let what = format!("{chosen:?}");
        let cached = self.server.shared.storage.cached();
        let evicts = matches!(chosen, S::Up(_) | S::Push(_));
        match chosen {
            S::Edit(d) => self.edit(d),
            S::Create(d) => self.create_case(d),
            S::Read(d) => {
                let cases = self.devices[d].profile.case_ids().expect("cases");
                if let Some(c) = cases.first() {
                    let _ = self.devices[d].profile.view(*c, "case show");
                }
            }
            S::Start(d) => self.start_sync(d),
            S::Up(id) => {
                // A few frames at once: the server still handles each on its own.
                for _ in 0..self.rng.random_range(1..=6) {
                    if self.conns.contains_key(&id) {
                        self.deliver_up(id);
                    }
                }
            }
            S::Down(id) => {
                for _ in 0..self.rng.random_range(1..=6) {
                    if self.conns.contains_key(&id) {
                        self.deliver_down(id);
                    }
                }
            }
            S::Push(id) => self.push(id),
            S::Cut(id) => self.cut(id),
            S::Flush => self.server_flush(),
            S::ServerCrash => self.server_crash(),
            S::DeviceCrash(d) => self.device_crash(d),
            S::CloseIdle => {
                self.counts.idle_closed +=
                    self.server.shared.storage.close_idle(Duration::ZERO) as u64
            }
            S::Revoke(d) => self.revoke(d),
            S::Move => self.move_case(),
            S::LinkStart => self.link_start(),
            S::LinkUp => self.link_up(),
            S::LinkDown => self.link_down(),
            S::LinkPush => self.link_push(),
            S::HubPush => self.hub_push(),
            S::LinkCut => self.link_cut(),
            S::LinkLookAgain => self.link_look_again(),
            S::HubFlush => self.hub_flush(),
            S::HubCrash => self.hub_crash(),
        }
        // The link's steps come on top of the budget of `steps`, so the devices and the borough
        // go through as much as they did before the link was simulated.
        if what.starts_with("Link") || what.starts_with("Hub") {
            self.counts.link_steps += 1;
        } else {
            self.counts.steps += 1;
        }
        if evicts && self.server.shared.storage.cached() < cached {
            self.counts.evictions_seen += 1;
        }
        what
    }

    /// The server's durable document for a case, loaded afresh when it changed.
    fn server_doc(&mut self, case: &CaseId) -> Result<Option<&mut AutoCommit>, String> {
        let store = &self.server.store;
        let version = store.durable_version(case);
        let fresh = self
            .server_docs
            .get(case)
            .is_some_and(|(v, _)| *v == version);
        if !fresh {
            let Some(chunks) = store.durable_chunks(case) else {
                self.server_docs.remove(case);
                return Ok(None);
            };
            let doc =
                load(chunks).map_err(|e| format!("the server's case {case} does not load: {e}"))?;
            validate_document(&doc)
                .map_err(|e| format!("the server's case {case} does not validate: {e}"))?;
            self.counts.docs_validated += 1;
            self.server_docs.insert(*case, (version, doc));
        }
        Ok(self.server_docs.get_mut(case).map(|(_, d)| d))
    }

    /// Invariants 1, 2 and 4, against durable state.
    fn check(&mut self) -> Result<(), String> {
        let cases: Vec<CaseId> = self.acked.keys().copied().collect();
        for case in cases {
            let version = self.server.store.durable_version(&case);
            let n = self.acked[&case].len();
            if self.server_checked.get(&case) == Some(&(version, n)) {
                continue;
            }
            let heads: Vec<ChangeHash> = self.acked[&case].iter().copied().collect();
            if heads.is_empty() {
                continue;
            }
            let doc = self.server_doc(&case)?.ok_or_else(|| {
                format!("case {case}: acknowledged, but not in the server's durable store")
            })?;
            for h in &heads {
                if doc.get_change_by_hash(h).is_none() {
                    return Err(format!(
                        "case {case}: head {h} was acknowledged to a device but is not in a fresh load of the server's durable store"
                    ));
                }
            }
            self.counts.acked_heads_checked += heads.len() as u64;
            self.server_checked.insert(case, (version, n));
        }
        for d in 0..self.devices.len() {
            let claims: Vec<(CaseId, Vec<ChangeHash>)> = self.devices[d]
                .claims
                .iter()
                .map(|(c, h)| (*c, h.iter().copied().collect()))
                .collect();
            for (case, hashes) in claims {
                let store = self.devices[d].store.clone();
                let version = store.durable_version(&case);
                if self.devices[d].checked.get(&case) == Some(&(version, hashes.len())) {
                    continue;
                }
                let name = self.devices[d].name.clone();
                match store.durable_chunks(&case) {
                    Some(chunks) => {
                        let mut doc = load(chunks)
                            .map_err(|e| format!("{name}'s case {case} does not load: {e}"))?;
                        validate_document(&doc)
                            .map_err(|e| format!("{name}'s case {case} does not validate: {e}"))?;
                        self.counts.docs_validated += 1;
                        for h in &hashes {
                            if doc.get_change_by_hash(h).is_none() {
                                return Err(format!(
                                    "case {case}: an edit {name} reported saved ({h}) is not in a fresh load of its durable store"
                                ));
                            }
                        }
                    }
                    None => {
                        // Wiped or moved away: what it saved must be on the server.
                        let doc = self.server_doc(&case)?.ok_or_else(|| {
                            format!("case {case}: {name} no longer holds it and the server never had it")
                        })?;
                        for h in &hashes {
                            if doc.get_change_by_hash(h).is_none() {
                                return Err(format!(
                                    "case {case}: {name} dropped the case, but its saved edit {h} is not on the server"
                                ));
                            }
                        }
                    }
                }
                self.counts.edits_checked += hashes.len() as u64;
                self.devices[d]
                    .checked
                    .insert(case, (version, hashes.len()));
            }
        }
        self.check_hub()
    }

    /// Run every open connection to its end, with no faults.
    fn drain(&mut self) -> Result<(), String> {
        let mut guard = 0;
        while let Some((&id, _)) = self.conns.iter().next() {
            guard += 1;
            if guard > 200_000 {
                return Err("connections did not finish".into());
            }
            let c = self.conns.get_mut(&id).expect("conn");
            Self::pull_batches(c);
            if !c.up.is_empty() {
                self.deliver_up(id);
            } else if !c.down.is_empty() {
                self.deliver_down(id);
            } else if c.changes.as_ref().is_some_and(|r| !r.is_empty()) {
                self.push(id);
            } else {
                return Err(format!(
                    "connection {id} of {} stalled: nothing to deliver, the session not over",
                    self.devices[c.device].name
                ));
            }
            self.check()?;
        }
        Ok(())
    }

    /// Stop faults, finish every session, sync every device until nothing changes, and check
    /// that every replica converged (invariant 3).
    fn quiesce(&mut self) -> Result<(), String> {
        self.faults = false;
        self.drain()?;
        let mut last = None;
        for _round in 0..8 {
            for d in 0..self.devices.len() {
                if self.idle(d) {
                    self.start_sync(d);
                    self.drain()?;
                }
            }
            let sig = self.signature();
            if last.as_ref() == Some(&sig) {
                break;
            }
            last = Some(sig);
        }
        self.link_settle()?;
        self.server_flush();
        self.hub_flush();
        self.check()?;
        self.converged()?;
        self.hub_converged()
    }

    fn signature(&mut self) -> Vec<(usize, CaseId, Vec<ChangeHash>)> {
        let mut sig = Vec::new();
        for d in 0..self.devices.len() {
            for case in self.devices[d].profile.case_ids().unwrap_or_default() {
                if let Ok(mut doc) = self.devices[d].profile.document(case) {
                    sig.push((d, case, doc.get_heads()));
                }
            }
        }
        sig
    }

    fn converged(&mut self) -> Result<(), String> {
        let registry = self.server.shared.registry.clone();
        let teams: Vec<TeamId> = self.teams.iter().map(|t| t.0).collect();
        let cases = registry.cases_of_teams(&teams).map_err(|e| e.to_string())?;
        for (case, team) in cases {
            let server_heads = match self.server_doc(&case)? {
                Some(doc) => doc.get_heads(),
                None => return Err(format!("case {case} is registered but not stored")),
            };
            for d in 0..self.devices.len() {
                let dev = &self.devices[d];
                let member = self.practitioners[dev.practitioner].teams.contains(&team);
                let Some(chunks) = dev.store.durable_chunks(&case) else {
                    if member && !dev.retired {
                        return Err(format!(
                            "{} is in case {case}'s team but never got it",
                            dev.name
                        ));
                    }
                    continue;
                };
                let name = dev.name.clone();
                let retired = dev.retired;
                let mut doc = load(chunks)?;
                if member && !retired {
                    if doc.get_heads() != server_heads {
                        return Err(format!(
                            "case {case}: {name} did not converge with the server ({:?} != {:?})",
                            doc.get_heads(),
                            server_heads
                        ));
                    }
                } else {
                    let heads = doc.get_heads();
                    let server = self.server_doc(&case)?.expect("stored");
                    if heads.iter().any(|h| server.get_change_by_hash(h).is_none()) {
                        let held = registry
                            .held(&self.devices[d].profile.device(), &case)
                            .unwrap_or(false);
                        return Err(format!(
                            "case {case}: {name} holds changes the server does not have \
                             (retired: {retired}, in the case's team: {member}, held by it on the server: {held})"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn finish_counts(&mut self) -> Counts {
        let s = self.server.store.counts();
        self.counts.server_compactions = s.compactions;
        self.counts.max_server_chunks_appended = s.max_case_appends;
        self.counts.lost_writes = s.lost_writes;
        let h = self.hub.store.counts();
        self.counts.hub_compactions = h.compactions;
        self.counts.max_hub_chunks_appended = h.max_case_appends;
        self.counts.lost_writes += h.lost_writes;
        self.counts.device_compactions = 0;
        for d in &self.devices {
            let c = d.store.counts();
            self.counts.device_compactions += c.compactions;
            self.counts.lost_writes += c.lost_writes;
        }
        self.counts
    }

    /// A digest of the final state, to see that a seed replays exactly.
    fn digest(&mut self) -> Vec<(CaseId, Vec<ChangeHash>)> {
        let cases = self.server.store.durable_cases();
        let mut out = Vec::new();
        for c in cases {
            if let Ok(Some(doc)) = self.server_doc(&c) {
                out.push((c, doc.get_heads()));
            }
        }
        out
    }
}

/// The hub link (issue 18): the borough's link core and the hub's session, driven step by step.
impl World {
    /// A new link session: the borough subscribes to its announcements, then its core says
    /// `Hello` and sends the roster.
    fn link_start(&mut self) {
        let changes = self.server.driver.case_changes();
        let (core, first) = LinkCore::new(self.server.shared.clone()).expect("the link starts");
        self.link = Some(SimLink {
            core,
            changes,
            up: VecDeque::from([(first.ticket, first.frames, first.close.is_some())]),
            hello: None,
            session: None,
            hub_changes: None,
            down: VecDeque::new(),
            reading: true,
        });
        self.counts.link_sessions += 1;
    }

    /// Both sides of the link go (cut, a crash on either side, or a session over).
    fn link_cut(&mut self) {
        self.link = None;
    }

    /// What the core returned is queued for the link's writer; an error ends the session.
    fn link_queue(&mut self, sent: Result<hub_link::Batch, hub_link::LinkError>) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        match sent {
            Ok(s) => {
                if !s.frames.is_empty() || s.close.is_some() {
                    link.up.push_back((s.ticket, s.frames, s.close.is_some()));
                }
            }
            Err(_) => self.link_cut(),
        }
    }

    /// The link's writer sends the next batch once its ticket is durable on the borough; the hub
    /// reads it, frame by frame.
    fn link_up(&mut self) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let Some((ticket, frames, close)) = link.up.pop_front() else {
            return;
        };
        self.server
            .shared
            .storage
            .group
            .durable(ticket)
            .expect("the crash store's flush cannot fail");
        for frame in frames {
            let frame = roundtrip(&frame);
            let link = self.link.as_mut().expect("link");
            if !link.reading {
                break;
            }
            if let Some(session) = link.session.as_mut() {
                if !session.handle(frame) {
                    link.reading = false;
                    link.hub_changes = None;
                }
                continue;
            }
            match frame {
                Frame::Hello(h) if link.hello.is_none() => link.hello = Some(h),
                Frame::Roster(roster) if link.hello.is_some() => {
                    self.hub_welcome(&roster);
                }
                other => panic!("the link began with {}", other.kind()),
            }
        }
        if close {
            self.link_cut();
        }
    }

    /// The hub's handshake for the borough, as `borough_handshake` does it: claim the roster,
    /// welcome the borough, start its session.
    fn hub_welcome(&mut self, roster: &polyphony_core::sync::Roster) {
        let shared = self.hub.shared.clone();
        let borough = shared
            .registry
            .borough(&self.borough)
            .expect("registry")
            .expect("the borough is enrolled");
        let conn_id = self.next_hub_conn;
        self.next_hub_conn += 1;
        let link = self.link.as_mut().expect("link");
        if let Err(refusal) = session::claim_roster(&shared, &borough, roster) {
            link.down.push_back((0, vec![Frame::Error(refusal)]));
            link.reading = false;
            return;
        }
        let hello = link.hello.take().expect("hello");
        let (welcome, teams) = match session::welcome_borough(&shared, &hello, &borough) {
            Ok(w) => w,
            Err(_) => panic!("the hub did not welcome the borough"),
        };
        let mut session = Session::for_borough(shared.clone(), conn_id, &borough, teams);
        assert!(session.check_access(), "the borough has access");
        link.down.push_back((0, vec![Frame::Welcome(welcome)]));
        link.session = Some(session);
        link.hub_changes = Some(self.hub.driver.case_changes());
    }

    fn link_pull(link: &mut SimLink) {
        if let Some(session) = link.session.as_mut() {
            while let Some(b) = session.poll_reply() {
                link.down.push_back((b.ticket, b.frames));
            }
        }
    }

    /// The hub's writer sends the next batch once its ticket is durable on the hub; the
    /// borough's core handles it.
    fn link_down(&mut self) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        Self::link_pull(link);
        let Some((ticket, frames)) = link.down.pop_front() else {
            return;
        };
        self.hub
            .shared
            .storage
            .group
            .durable(ticket)
            .expect("the crash store's flush cannot fail");
        for frame in frames {
            let frame = roundtrip(&frame);
            let Some(link) = self.link.as_mut() else {
                return;
            };
            let sent = link.core.handle(frame);
            self.link_queue(sent);
        }
    }

    /// The link's driver hears an announcement on the borough: a device's change is pushed.
    fn link_push(&mut self) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let sent = match link.changes.try_recv() {
            Ok(c) if c.origin == LINK_ORIGIN => return,
            Ok(c) => link.core.local_change(c.case),
            Err(broadcast::error::TryRecvError::Lagged(_)) => link.core.all_changed(),
            Err(_) => return,
        };
        self.link_queue(sent);
    }

    /// The hub's session hears the hub's own announcements (its own writes, skipped).
    fn hub_push(&mut self) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let (Some(rx), Some(session)) = (link.hub_changes.as_mut(), link.session.as_mut()) else {
            return;
        };
        match rx.try_recv() {
            Ok(c) => session.push(c),
            Err(broadcast::error::TryRecvError::Lagged(_)) => session.push_all(),
            Err(_) => {}
        }
    }

    /// The link's driver looks again: a roster changed since the session began (a device
    /// enrolled) starts a new session.
    fn link_look_again(&mut self) {
        if self.link.as_ref().is_some_and(|l| l.core.roster_changed()) {
            self.link_cut();
            self.link_start();
        }
    }

    fn hub_flush(&mut self) {
        let storage = &self.hub.shared.storage;
        let ticket = storage.group.wrote_in(storage.group.generation());
        storage.group.durable(ticket).expect("flush");
    }

    /// The hub crashes and reopens from what was durable; the link is cut.
    fn hub_crash(&mut self) {
        self.link_cut();
        let store = self.hub.store.clone();
        let config = self.hub.config.clone();
        let keep = self.rng.random_range(0..=store.pending());
        let old = std::mem::replace(
            &mut self.hub,
            SimServer::open(Arc::new(CrashStore::new()), config.clone()),
        );
        drop(old);
        store.crash(keep);
        self.hub = SimServer::open(store, config);
        self.hub_docs.clear();
        self.counts.hub_crashes += 1;
    }

    /// A fresh session (with the roster as it is now), run without faults until it is settled
    /// and nothing is left to move.
    fn link_settle(&mut self) -> Result<(), String> {
        self.link_cut();
        self.link_start();
        let mut guard = 0;
        loop {
            guard += 1;
            if guard > 200_000 {
                return Err("the link did not settle".into());
            }
            let Some(link) = self.link.as_mut() else {
                return Err("the link ended while settling".into());
            };
            Self::link_pull(link);
            if !link.up.is_empty() {
                self.link_up();
            } else if !link.down.is_empty() {
                self.link_down();
            } else if !link.changes.is_empty() {
                self.link_push();
            } else if link.hub_changes.as_ref().is_some_and(|r| !r.is_empty()) {
                self.hub_push();
            } else if link.core.settled() {
                if let Some((case, r)) = link.core.refused().first() {
                    return Err(format!("the hub refused case {case}: {}", r.message));
                }
                return Ok(());
            } else {
                return Err("the link stalled: nothing to move, not settled".into());
            }
            self.check()?;
        }
    }

    /// The hub's durable document for a case, loaded afresh when it changed.
    fn hub_doc(&mut self, case: &CaseId) -> Result<Option<&mut AutoCommit>, String> {
        let store = &self.hub.store;
        let version = store.durable_version(case);
        if self.hub_docs.get(case).is_none_or(|(v, _)| *v != version) {
            let Some(chunks) = store.durable_chunks(case) else {
                self.hub_docs.remove(case);
                return Ok(None);
            };
            // Validated at the end (`hub_converged`): a load per change of the hub's disk is
            // cheap, a validation each time is not, and only the borough writes what it holds.
            let doc =
                load(chunks).map_err(|e| format!("the hub's case {case} does not load: {e}"))?;
            self.hub_docs.insert(*case, (version, doc));
        }
        Ok(self.hub_docs.get_mut(case).map(|(_, d)| d))
    }

    /// The link's invariants, against durable state on both sides:
    /// 5. every head the borough recorded as on the hub (`hub.acked`) is in a fresh load of the
    ///    hub's store;
    /// 6. everything the hub holds is in a fresh load of the borough's store (the hub holds only
    ///    what the borough sent, and it sends only what its disk holds).
    fn check_hub(&mut self) -> Result<(), String> {
        for case in self.server.store.durable_cases() {
            let Some(bytes) = self.server.store.durable_meta(NS_ACKED, &case.to_string()) else {
                continue;
            };
            let version = self.hub.store.durable_version(&case);
            if self.hub_checked.get(&case) == Some(&(bytes.clone(), version)) {
                continue;
            }
            let heads = polyphony_core::sync::decode_heads(&bytes);
            if heads.is_empty() {
                continue;
            }
            let doc = self.hub_doc(&case)?.ok_or_else(|| {
                format!("case {case}: the borough records it as on the hub, but the hub's disk does not hold it")
            })?;
            for h in &heads {
                if doc.get_change_by_hash(h).is_none() {
                    return Err(format!(
                        "case {case}: head {h} is recorded on the borough as on the hub but is not in a fresh load of the hub's durable store"
                    ));
                }
            }
            self.counts.hub_acked_checked += heads.len() as u64;
            self.hub_checked.insert(case, (bytes, version));
        }
        for case in self.hub.store.durable_cases() {
            // Only the hub gaining something can break this: what is durable on the borough
            // stays so (a crash drops only what was pending).
            let version = self.hub.store.durable_version(&case);
            if self.hub_within.get(&case) == Some(&version) {
                continue;
            }
            let heads = match self.hub_doc(&case)? {
                Some(doc) => doc.get_heads(),
                None => continue,
            };
            let doc = self.server_doc(&case)?.ok_or_else(|| {
                format!("case {case}: on the hub's disk but not on the borough's")
            })?;
            if let Some(h) = heads.iter().find(|h| doc.get_change_by_hash(h).is_none()) {
                return Err(format!(
                    "case {case}: the hub holds {h}, which a fresh load of the borough's durable store does not"
                ));
            }
            self.hub_within.insert(case, version);
        }
        Ok(())
    }

    /// At the end: every case on the borough has the same heads on the hub (invariant 7).
    fn hub_converged(&mut self) -> Result<(), String> {
        let registry = self.server.shared.registry.clone();
        let teams: Vec<TeamId> = self.teams.iter().map(|t| t.0).collect();
        let cases = registry.cases_of_teams(&teams).map_err(|e| e.to_string())?;
        for (case, _) in cases {
            let ours = match self.server_doc(&case)? {
                Some(doc) => doc.get_heads(),
                None => return Err(format!("case {case} is registered but not stored")),
            };
            let theirs = self
                .hub_doc(&case)?
                .ok_or_else(|| format!("case {case} never reached the hub"))?
                .get_heads();
            if ours != theirs {
                return Err(format!(
                    "case {case}: the hub did not converge with the borough ({theirs:?} != {ours:?})"
                ));
            }
        }
        for case in self.hub.store.durable_cases() {
            if let Some(doc) = self.hub_doc(&case)? {
                validate_document(doc)
                    .map_err(|e| format!("the hub's case {case} does not validate: {e}"))?;
                self.counts.docs_validated += 1;
            }
        }
        Ok(())
    }
}

/// Run one seed for `steps` steps, then quiesce. Returns its counts and final digest, or the step
/// and what broke.
/// Each case's heads at the end of a run (to compare two runs of one seed).
type FinalHeads = Vec<(CaseId, Vec<ChangeHash>)>;

fn run(seed: u64, steps: u64) -> Result<(Counts, FinalHeads), (u64, String)> {
    let mut w = World::new(seed);
    let mut last = Vec::new();
    // `steps` counts the devices' and the borough's steps; the link's come on top.
    while w.counts.steps < steps {
        let step = w.counts.steps + w.counts.link_steps;
        let what = w.step();
        last.push(what);
        if last.len() > 8 {
            last.remove(0);
        }
        if let Err(e) = w.check() {
            return Err((step, format!("{e}\n  last steps: {}", last.join(", "))));
        }
    }
    if let Err(e) = w.quiesce() {
        return Err((steps, format!("at the end (quiesce): {e}")));
    }
    let counts = w.finish_counts();
    let digest = w.digest();
    polyphony_core::determinism::unseed_this_thread();
    Ok((counts, digest))
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn random_histories_lose_nothing_and_converge() {
    let steps = env("POLYPHONY_SIM_STEPS").unwrap_or(3_000);
    let seeds: Vec<u64> = match env("POLYPHONY_SIM_SEED") {
        Some(s) => vec![s],
        None => {
            let n = env("POLYPHONY_SIM_SEEDS").unwrap_or(3);
            let first = env("POLYPHONY_SIM_FIRST_SEED").unwrap_or(1);
            (first..first + n).collect()
        }
    };
    let mut total = Counts::default();
    for seed in &seeds {
        eprintln!("simulation seed {seed} ({steps} steps)");
        match run(*seed, steps) {
            Ok((c, _)) => {
                eprintln!("  {c:?}");
                total.add(&c);
            }
            Err((step, what)) => panic!(
                "simulation seed {seed} failed at step {step}: {what}\n  replay: POLYPHONY_SIM_SEED={seed} POLYPHONY_SIM_STEPS={steps} cargo test -p polyphony-e2e --test simulation"
            ),
        }
    }
    eprintln!("simulation total over {} seeds: {total:?}", seeds.len());
    assert!(total.server_compactions > 0, "no server compaction crossed");
    assert!(total.device_compactions > 0, "no device compaction crossed");
    assert!(
        total.server_crashes > 0 && total.device_crashes > 0 && total.hub_crashes > 0,
        "no crash happened"
    );
    assert!(total.hub_acked_checked > 0, "the hub never acknowledged");
}

#[test]
fn a_seed_replays_exactly() {
    let steps = 600;
    let a = run(424_242, steps)
        .map_err(|e| e.1)
        .expect("the run passes");
    let b = run(424_242, steps)
        .map_err(|e| e.1)
        .expect("the replay passes");
    assert_eq!(a.0, b.0, "the same seed went through different steps");
    assert_eq!(a.1, b.1, "the same seed ended with different documents");
}
