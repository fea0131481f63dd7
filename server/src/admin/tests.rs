use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use polyphony_core::identity::EnrolmentCode;
use polyphony_core::store::MemoryStore;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::socket::{read_line_bounded, Line};
use super::*;
use crate::audit::{AuditRecord, VerifyReport};

const CA: [u8; 32] = [9; 32];

fn admin() -> (Arc<Registry>, Arc<AuditLog>, Admin) {
    let store = Arc::new(MemoryStore::new());
    let registry = Arc::new(Registry::new(store.clone()));
    let audit = Arc::new(AuditLog::open(store).expect("audit"));
    let admin = Admin::new(
        registry.clone(),
        audit.clone(),
        CA,
        time::Duration::hours(72),
    );
    (registry, audit, admin)
}

fn ok<T: serde::de::DeserializeOwned>(response: AdminResponse) -> T {
    match response {
        AdminResponse::Ok { value } => serde_json::from_value(value).expect("decodes"),
        AdminResponse::Err { message } => panic!("refused: {message}"),
    }
}

fn refused(response: AdminResponse) -> String {
    match response {
        AdminResponse::Err { message } => message,
        AdminResponse::Ok { value } => panic!("expected a refusal, got {value}"),
    }
}

fn actions(audit: &AuditLog) -> Vec<AuditAction> {
    audit
        .entries(None)
        .expect("entries")
        .into_iter()
        .map(|r| r.event.action)
        .collect()
}

#[test]
fn every_change_is_audited_and_listings_are_not() {
    let (registry, audit, admin) = admin();
    let team: Team = ok(admin.handle(AdminRequest::TeamAdd {
        name: "North".into(),
    }));
    let ana: PractitionerView = ok(admin.handle(AdminRequest::PractitionerAdd {
        name: "Ana Silva".into(),
        team: "north".into(),
        role: None,
    }));
    assert_eq!(
        ana.teams,
        [TeamRef {
            id: team.id,
            name: "North".into()
        }]
    );
    let issued: IssuedCode = ok(admin.handle(AdminRequest::Enrol {
        practitioner: "Ana Silva".into(),
    }));
    let teams: Vec<Team> = ok(admin.handle(AdminRequest::Teams));
    assert_eq!(teams.len(), 1);
    assert_eq!(teams[0], team);
    let listed: Vec<PractitionerView> = ok(admin.handle(AdminRequest::Practitioners));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0], ana);

    // The code is a real code for this borough's CA, and enrols a device once.
    let code: EnrolmentCode = issued.code.parse().expect("parses");
    assert_eq!(code.ca_fingerprint(), CA);
    assert_eq!(issued.practitioner, ana.id);
    let laptop = DeviceId::random();
    registry
        .redeem_enrolment(code.token(), laptop, "Laptop", [1; 32])
        .expect("redeem");

    let devices: Vec<DeviceView> = ok(admin.handle(AdminRequest::Devices));
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].practitioner_name, "Ana Silva");

    assert_eq!(
        actions(&audit),
        [
            AuditAction::TeamAdded,
            AuditAction::PractitionerAdded,
            AuditAction::EnrolmentIssued
        ]
    );
    assert!(audit
        .entries(None)
        .expect("entries")
        .iter()
        .all(|r| r.event.actor == Actor::Admin));
}

#[test]
fn revoking_gently_then_at_once() {
    let (registry, audit, admin) = admin();
    let team = registry.add_team("North").expect("team");
    let p = registry.add_practitioner("Ana", team.id).expect("p");
    let code = registry
        .create_enrolment(p.id, CA, time::Duration::hours(1))
        .expect("code");
    let laptop = DeviceId::random();
    registry
        .redeem_enrolment(code.token(), laptop, "Laptop", [1; 32])
        .expect("enrol");

    let gentle: DeviceView = ok(admin.handle(AdminRequest::Revoke {
        device: laptop.to_string(),
        now: false,
    }));
    assert_eq!(gentle.device.status, DeviceStatus::Revoking);
    let again: DeviceView = ok(admin.handle(AdminRequest::Revoke {
        device: laptop.to_string(),
        now: false,
    }));
    assert_eq!(again.device.status, DeviceStatus::Revoking);
    let hard: DeviceView = ok(admin.handle(AdminRequest::Revoke {
        device: laptop.to_string(),
        now: true,
    }));
    assert_eq!(hard.device.status, DeviceStatus::Revoked);
    let after: DeviceView = ok(admin.handle(AdminRequest::Revoke {
        device: laptop.to_string(),
        now: false,
    }));
    assert_eq!(after.device.status, DeviceStatus::Revoked);
    // Only the two real changes are audited.
    assert_eq!(actions(&audit), [AuditAction::Revoke, AuditAction::Revoke]);

    let message = refused(admin.handle(AdminRequest::Revoke {
        device: DeviceId::random().to_string(),
        now: true,
    }));
    assert!(message.contains("no device has the id"), "{message}");
    let message = refused(admin.handle(AdminRequest::Revoke {
        device: "laptop".into(),
        now: true,
    }));
    assert!(message.contains("polyphony-server devices"), "{message}");
}

#[test]
fn moving_a_case_is_audited_against_the_case() {
    let (registry, audit, admin) = admin();
    let north = registry.add_team("North").expect("team");
    let south = registry.add_team("South").expect("team");
    let case = CaseId::random();
    registry.register_case(case, north.id).expect("register");
    let moved: CaseMoved = ok(admin.handle(AdminRequest::CaseMove {
        case,
        team: "South".into(),
    }));
    assert_eq!((moved.from.id, moved.to.id), (north.id, south.id));
    assert_eq!(registry.case_team(&case).expect("read"), Some(south.id));

    let about: Vec<AuditRecord> = ok(admin.handle(AdminRequest::Audit {
        case: Some(case),
        verify: false,
    }));
    assert_eq!(about.len(), 1);
    assert_eq!(about[0].event.action, AuditAction::CaseMoved);
    let report: VerifyReport = ok(admin.handle(AdminRequest::Audit {
        case: None,
        verify: true,
    }));
    assert_eq!(report.entries, 1);
    assert_eq!(actions(&audit).len(), 1);

    let message = refused(admin.handle(AdminRequest::CaseMove {
        case,
        team: "East".into(),
    }));
    assert!(
        message.contains("'North'") && message.contains("'South'"),
        "{message}"
    );
}

#[test]
fn refusals_say_what_to_do() {
    let (_, audit, admin) = admin();
    let message = refused(admin.handle(AdminRequest::PractitionerAdd {
        name: "Ana".into(),
        team: "Nowhere".into(),
        role: None,
    }));
    assert!(message.contains("team add"), "{message}");
    let message = refused(admin.handle(AdminRequest::Enrol {
        practitioner: "Nobody".into(),
    }));
    assert!(
        message.contains("polyphony-server practitioners"),
        "{message}"
    );
    let message = refused(admin.handle(AdminRequest::TeamAdd { name: " ".into() }));
    assert!(message.contains("needs a name"), "{message}");
    assert!(actions(&audit).is_empty());
}

#[test]
fn requests_have_a_stable_json_form() {
    let line = r#"{"request":"revoke","device":"0f8e6a3c-1a6b-4f55-9a4e-1c2d3e4f5a6b","now":true}"#;
    let req: AdminRequest = serde_json::from_str(line).expect("parses");
    assert!(matches!(req, AdminRequest::Revoke { now: true, .. }));
    let req: AdminRequest = serde_json::from_str(r#"{"request":"audit"}"#).expect("defaults");
    assert_eq!(
        req,
        AdminRequest::Audit {
            case: None,
            verify: false
        }
    );
    let back = serde_json::to_string(&AdminRequest::Teams).expect("encodes");
    assert_eq!(back, r#"{"request":"teams"}"#);
}

// ----- the socket -----

/// A server on a socket in a fresh directory, and a way to stop it.
struct Serving {
    dir: tempfile::TempDir,
    path: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

async fn serving() -> Serving {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("admin.sock");
    let (_, _, admin) = admin();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(serve_admin(path.clone(), Arc::new(admin), stopped));
    for _ in 0..200 {
        if path.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Serving {
        dir,
        path,
        stop,
        task,
    }
}

impl Serving {
    async fn stop(self) -> tempfile::TempDir {
        self.stop.send(true).expect("still serving");
        self.task.await.expect("joins").expect("served cleanly");
        assert!(
            !self.path.exists(),
            "the socket file is removed on the way out"
        );
        self.dir
    }
}

/// Send raw bytes and read every answer line until the server closes or `lines` have come.
async fn raw_exchange(path: &Path, bytes: &[u8], lines: usize) -> Vec<AdminResponse> {
    let stream = UnixStream::connect(path).await.expect("connect");
    let (read, mut write) = stream.into_split();
    // Written alongside the reading: the server may close before it has read everything (an
    // overlong line), and the write then fails, which is what the test wants to see handled.
    let bytes = bytes.to_vec();
    let _writer = tokio::spawn(async move {
        let _ = write.write_all(&bytes).await;
        write
    });
    let mut reader = BufReader::new(read);
    let mut out = Vec::new();
    while out.len() < lines {
        let mut line = String::new();
        if reader.read_line(&mut line).await.expect("read") == 0 {
            break;
        }
        out.push(serde_json::from_str(&line).expect("a response per line"));
    }
    out
}

#[tokio::test]
async fn requests_go_through_the_socket() {
    let s = serving().await;
    let mode = std::fs::metadata(&s.path)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let team: Team = ok(request(
        &s.path,
        &AdminRequest::TeamAdd {
            name: "North".into(),
        },
    )
    .await
    .expect("answer"));
    let teams: Vec<Team> = ok(request(&s.path, &AdminRequest::Teams)
        .await
        .expect("answer"));
    assert_eq!(teams, [team]);
    s.stop().await;
}

#[tokio::test]
async fn bad_lines_get_an_error_and_the_connection_goes_on() {
    let s = serving().await;
    let answers = raw_exchange(
        &s.path,
        b"{not json\n{\"request\":\"launch\"}\n{\"request\":\"teams\"}\n",
        3,
    )
    .await;
    assert_eq!(answers.len(), 3);
    assert!(refused(answers[0].clone()).contains("not a valid admin request"));
    assert!(refused(answers[1].clone()).contains("not a valid admin request"));
    let teams: Vec<Team> = ok(answers[2].clone());
    assert!(teams.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn an_overlong_line_is_refused_and_the_connection_closed() {
    let s = serving().await;
    let mut huge = vec![b'x'; MAX_REQUEST_LINE + 10];
    huge.push(b'\n');
    let answers = raw_exchange(&s.path, &huge, 2).await;
    assert_eq!(answers.len(), 1);
    assert!(refused(answers[0].clone()).contains("longer than"));
    // The server is still serving others.
    let teams: Vec<Team> = ok(request(&s.path, &AdminRequest::Teams)
        .await
        .expect("answer"));
    assert!(teams.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn a_missing_or_stale_socket_means_not_running_and_a_stale_one_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("admin.sock");
    assert!(matches!(
        request(&path, &AdminRequest::Teams).await,
        Err(AdminError::NotRunning { .. })
    ));
    // A socket file left behind by a server that died.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(path.exists());
    assert!(matches!(
        request(&path, &AdminRequest::Teams).await,
        Err(AdminError::NotRunning { .. })
    ));

    let (_, _, admin) = admin();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(serve_admin(path.clone(), Arc::new(admin), stopped));
    let mut answered = false;
    for _ in 0..200 {
        if let Ok(AdminResponse::Ok { .. }) = request(&path, &AdminRequest::Teams).await {
            answered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(answered, "the stale socket was replaced");
    stop.send(true).expect("serving");
    task.await.expect("joins").expect("clean");
}

#[tokio::test]
async fn a_live_socket_or_a_plain_file_is_never_taken_over() {
    let s = serving().await;
    let (_, _, second) = admin();
    let (_keep, never) = tokio::sync::watch::channel(false);
    let err = serve_admin(s.path.clone(), Arc::new(second), never.clone())
        .await
        .expect_err("a server is already there");
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    let dir = s.stop().await;

    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"keep me").expect("write");
    let (_, _, third) = admin();
    let err = serve_admin(file.clone(), Arc::new(third), never)
        .await
        .expect_err("not a socket");
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&file).expect("kept"), b"keep me");
}

#[tokio::test]
async fn shutdown_closes_idle_connections() {
    let s = serving().await;
    let mut idle = UnixStream::connect(&s.path).await.expect("connect");
    s.stop().await;
    let mut rest = Vec::new();
    // Closed (a clean end or a reset, either will do), promptly, with nothing said.
    let _closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        idle.read_to_end(&mut rest),
    )
    .await
    .expect("closed promptly");
    assert!(rest.is_empty());
}

#[tokio::test]
async fn lines_are_read_within_their_bound() {
    let mut input: &[u8] = b"one\ntwo";
    let mut reader = BufReader::new(&mut input);
    let mut buf = Vec::new();
    assert_eq!(
        read_line_bounded(&mut reader, &mut buf, 10)
            .await
            .expect("read"),
        Line::Complete
    );
    assert_eq!(buf, b"one");
    assert_eq!(
        read_line_bounded(&mut reader, &mut buf, 10)
            .await
            .expect("read"),
        Line::Complete
    );
    assert_eq!(buf, b"two");
    assert_eq!(
        read_line_bounded(&mut reader, &mut buf, 10)
            .await
            .expect("read"),
        Line::Eof
    );
    let mut long: &[u8] = b"0123456789ab\n";
    let mut reader = BufReader::with_capacity(4, &mut long);
    assert_eq!(
        read_line_bounded(&mut reader, &mut buf, 10)
            .await
            .expect("read"),
        Line::TooLong
    );
}

#[tokio::test]
async fn serving_stops_when_the_shutdown_sender_goes_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("admin.sock");
    let (_, _, admin) = admin();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(serve_admin(path.clone(), Arc::new(admin), stopped));
    drop(stop);
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .expect("stopped promptly")
        .expect("joins")
        .expect("clean");
    assert!(!path.exists());
}

#[tokio::test]
async fn a_bound_socket_queues_requests_until_it_is_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = AdminSocket::bind(dir.path().join("admin.sock"))
        .await
        .expect("bind");
    let path = socket.path().to_path_buf();
    // Sent before anything serves the socket: it must not be taken for "not running".
    let early = tokio::spawn({
        let path = path.clone();
        async move { request(&path, &AdminRequest::Teams).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let (_, _, admin) = admin();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let serving = tokio::spawn(socket.serve(Arc::new(admin), stopped));
    let teams: Vec<Team> = ok(early.await.expect("joins").expect("answered"));
    assert!(teams.is_empty());
    stop.send(true).expect("serving");
    serving.await.expect("joins").expect("clean");
    assert!(!path.exists());
}

/// A role is set when a practitioner is added or later, audited each time (only when it
/// changes), listed, and an unknown role is refused with the allowed ones, changing nothing.
#[test]
fn roles_are_set_audited_listed_and_checked() {
    let (registry, audit, admin) = admin();
    let _: Team = ok(admin.handle(AdminRequest::TeamAdd {
        name: "North".into(),
    }));
    let jo: PractitionerView = ok(admin.handle(AdminRequest::PractitionerAdd {
        name: "Jo Peer".into(),
        team: "North".into(),
        role: Some("peer-support".into()),
    }));
    assert_eq!(jo.role, StaffRole::PeerSupport);
    let before = actions(&audit).len();
    let message = refused(admin.handle(AdminRequest::PractitionerRole {
        practitioner: "Jo Peer".into(),
        role: "wizard".into(),
    }));
    assert!(message.contains("peer_support, psychiatrist"), "{message}");
    assert_eq!(actions(&audit).len(), before, "a refusal is not a change");
    let message = refused(admin.handle(AdminRequest::PractitionerAdd {
        name: "Kit".into(),
        team: "North".into(),
        role: Some("wizard".into()),
    }));
    assert!(message.contains("staff role"), "{message}");
    assert!(
        registry.practitioner_by("Kit").is_err(),
        "nobody added with a bad role"
    );
    let epoch = registry.access_epoch();
    let now: PractitionerView = ok(admin.handle(AdminRequest::PractitionerRole {
        practitioner: "Jo Peer".into(),
        role: "psychiatrist".into(),
    }));
    assert_eq!(now.role, StaffRole::Psychiatrist);
    assert!(registry.access_epoch() > epoch, "live sessions hear of it");
    assert_eq!(
        actions(&audit).last(),
        Some(&AuditAction::PractitionerRoleSet)
    );
    let listed: Vec<PractitionerView> = ok(admin.handle(AdminRequest::Practitioners));
    assert_eq!(listed[0].role, StaffRole::Psychiatrist);
}

// ----- the trust hub's figures -----

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use polyphony_core::export::figures::{team_table, Row, RowScope};
use polyphony_core::model::{
    parse_datetime, Author, CareRole, CaseDoc, CaseFigures, NewCase, NewMeeting, Participant, Place,
};
use polyphony_core::store::{ChunkLog, ChunkSeq, Store, StoreError};
use polyphony_core::sync::TeamInfo;
use polyphony_core::{BlobHash, BoroughId};

use crate::config::ServerRole;
use crate::storage::ServerStorage;

/// A memory store whose logs (the audit log's) refuse appends while `refusing` is on, as a full
/// disk would.
#[derive(Default)]
struct AuditDisk {
    inner: MemoryStore,
    refusing: AtomicBool,
}

impl Store for AuditDisk {
    fn append_chunk(&self, case: &CaseId, chunk: &[u8]) -> Result<ChunkSeq, StoreError> {
        self.inner.append_chunk(case, chunk)
    }
    fn load_chunks(&self, case: &CaseId) -> Result<Option<ChunkLog>, StoreError> {
        self.inner.load_chunks(case)
    }
    fn compact_case(&self, case: &CaseId, s: &[u8], t: ChunkSeq) -> Result<(), StoreError> {
        self.inner.compact_case(case, s, t)
    }
    fn remove_case(&self, case: &CaseId) -> Result<(), StoreError> {
        self.inner.remove_case(case)
    }
    fn list_cases(&self) -> Result<Vec<CaseId>, StoreError> {
        self.inner.list_cases()
    }
    fn get_meta(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_meta(ns, key)
    }
    fn put_meta(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.inner.put_meta(ns, key, value)
    }
    fn delete_meta(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        self.inner.delete_meta(ns, key)
    }
    fn scan_meta(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.scan_meta(ns)
    }
    fn append_log(&self, log: &str, entry: &[u8]) -> Result<u64, StoreError> {
        if self.refusing.load(SeqCst) {
            return Err(StoreError::Io(io::Error::other("no space left on device")));
        }
        self.inner.append_log(log, entry)
    }
    fn read_log(&self, log: &str, from: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.read_log(log, from)
    }
    fn trim_log(&self, log: &str, through: u64) -> Result<(), StoreError> {
        self.inner.trim_log(log, through)
    }
    fn put_blob(&self, case: &CaseId, hash: &BlobHash, content: &[u8]) -> Result<(), StoreError> {
        self.inner.put_blob(case, hash, content)
    }
    fn get_blob(&self, case: &CaseId, hash: &BlobHash) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_blob(case, hash)
    }
    fn has_blob(&self, case: &CaseId, hash: &BlobHash) -> Result<bool, StoreError> {
        self.inner.has_blob(case, hash)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
}

/// A trust hub's administration over one store: its registry, audit log and cases.
struct Hub {
    disk: Arc<AuditDisk>,
    registry: Arc<Registry>,
    audit: Arc<AuditLog>,
    storage: Arc<ServerStorage>,
    admin: Admin,
}

fn hub_admin(role: ServerRole) -> Hub {
    let disk = Arc::new(AuditDisk::default());
    let registry = Arc::new(Registry::new(disk.clone()));
    let audit = Arc::new(AuditLog::open(disk.clone()).expect("audit"));
    let storage = Arc::new(ServerStorage::new(disk.clone(), 16));
    let admin = Admin::new(
        registry.clone(),
        audit.clone(),
        CA,
        time::Duration::hours(72),
    )
    .with_role(role)
    .with_storage(storage.clone());
    Hub {
        disk,
        registry,
        audit,
        storage,
        admin,
    }
}

fn writer(name: &str) -> Author {
    Author {
        practitioner: PractitionerId::random(),
        practitioner_name: name.into(),
        device: DeviceId::random(),
    }
}

fn at(s: &str) -> polyphony_core::model::Instant {
    parse_datetime("at", s).expect("test time")
}

/// A case of `team` for `person`, referred at 09:00, with one meeting per entry of `meetings`
/// (its time, and whether the second practitioner came too), written as its borough's link
/// would store it on the hub. The document names `named` as its case id (the case's own, unless
/// a test says otherwise). Returns the document, as a device would hold it.
fn stored_case(
    hub: &Hub,
    case: CaseId,
    named: CaseId,
    team: TeamId,
    person: &str,
    meetings: &[(&str, bool)],
) -> CaseDoc {
    let sam = writer("Sam Okafor");
    let kit = writer("Kit Byrne");
    let mut doc = CaseDoc::create(
        named,
        team,
        NewCase {
            name: person.into(),
            referral: Some(at("2026-03-02T09:00")),
            ..Default::default()
        },
        sam.clone(),
    )
    .expect("case");
    doc.add_care_team(
        sam.practitioner,
        &sam.practitioner_name,
        CareRole::Practitioner,
        None,
    )
    .expect("sam");
    doc.add_care_team(
        kit.practitioner,
        &kit.practitioner_name,
        CareRole::Practitioner,
        None,
    )
    .expect("kit");
    for (when, pair) in meetings {
        let mut attendees = vec![
            Participant::Person,
            Participant::Practitioner(sam.practitioner),
        ];
        if *pair {
            attendees.push(Participant::Practitioner(kit.practitioner));
        }
        doc.add_meeting(NewMeeting {
            at: at(when),
            place: Place::Home,
            attendees,
        })
        .expect("meeting");
    }
    hub.registry.register_case(case, team).expect("register");
    hub.storage
        .apply_chunk(&case, &doc.save(), |_, _, _| Ok(()))
        .expect("stored");
    doc
}

/// Two boroughs: North with teams Crisis and Home Treatment, South with team Early Help.
struct Trust {
    north: BoroughId,
    south: BoroughId,
    crisis: TeamId,
    home: TeamId,
    early: TeamId,
}

fn two_boroughs(hub: &Hub) -> Trust {
    let north = hub.registry.add_borough("North").expect("north").id;
    let south = hub.registry.add_borough("South").expect("south").id;
    let info = |name: &str| TeamInfo {
        id: TeamId::random(),
        name: name.into(),
    };
    let (crisis, home, early) = (info("Crisis"), info("Home Treatment"), info("Early Help"));
    let trust = Trust {
        north,
        south,
        crisis: crisis.id,
        home: home.id,
        early: early.id,
    };
    hub.registry
        .claim_teams(&north, &[crisis, home])
        .expect("north's teams");
    hub.registry
        .claim_teams(&south, &[early])
        .expect("south's teams");
    trust
}

/// The rows a device of the team would show over these documents (in case-id order, as the hub
/// lists them).
fn as_devices_count(mut docs: Vec<(CaseId, &CaseDoc)>) -> Vec<Row> {
    docs.sort_by_key(|(case, _)| *case);
    let figures: Vec<CaseFigures> = docs
        .iter()
        .map(|(_, d)| CaseFigures::from_view(&d.view()))
        .collect();
    team_table(&figures)
}

fn figures_of(hub: &Hub, by: FiguresBy) -> TrustFigures {
    ok(hub.admin.handle(AdminRequest::Figures { by }))
}

/// Each team's rows are a device's rows over that team's cases, and each borough's are over all
/// its teams' cases together; the rows carry case ids, never the person's name.
#[test]
fn trust_figures_are_a_devices_figures_per_team_and_per_borough() {
    let hub = hub_admin(ServerRole::Hub);
    let t = two_boroughs(&hub);
    let (c1, c2, c3, c4) = (
        CaseId::random(),
        CaseId::random(),
        CaseId::random(),
        CaseId::random(),
    );
    let d1 = stored_case(
        &hub,
        c1,
        c1,
        t.crisis,
        "Maria Lindqvist",
        &[("2026-03-02T15:00", true), ("2026-03-05T10:00", true)],
    );
    let d2 = stored_case(
        &hub,
        c2,
        c2,
        t.crisis,
        "Jon Berg",
        &[("2026-03-04T09:00", false)],
    );
    let d3 = stored_case(
        &hub,
        c3,
        c3,
        t.home,
        "Ada Obi",
        &[("2026-03-02T12:00", true), ("2026-03-03T12:00", false)],
    );
    let d4 = stored_case(&hub, c4, c4, t.early, "Lee Chan", &[]);

    let figures = figures_of(&hub, FiguresBy::Team);
    assert_eq!(figures.by, FiguresBy::Team);
    assert!(figures.unreadable.is_empty());
    let names: Vec<(&str, BoroughId)> = figures
        .boroughs
        .iter()
        .map(|b| (b.name.as_str(), b.id))
        .collect();
    assert_eq!(names, [("North", t.north), ("South", t.south)]);
    let north = &figures.boroughs[0];
    let teams: Vec<(&str, TeamId)> = north
        .teams
        .iter()
        .map(|t| (t.name.as_str(), t.id))
        .collect();
    assert_eq!(teams, [("Crisis", t.crisis), ("Home Treatment", t.home)]);
    assert_eq!(
        north.teams[0].rows,
        as_devices_count(vec![(c1, &d1), (c2, &d2)])
    );
    assert_eq!(north.teams[1].rows, as_devices_count(vec![(c3, &d3)]));
    assert_eq!(
        north.rows,
        as_devices_count(vec![(c1, &d1), (c2, &d2), (c3, &d3)]),
        "the borough's rows cover both its teams' cases"
    );
    let mean = north
        .rows
        .iter()
        .find(|r| r.scope == RowScope::TeamMean)
        .expect("a mean row");
    assert_eq!(mean.cases, 3);
    assert_eq!(mean.meetings, Some(5.0 / 3.0));
    let south = &figures.boroughs[1];
    assert_eq!(south.teams.len(), 1);
    assert_eq!(south.teams[0].rows, as_devices_count(vec![(c4, &d4)]));
    assert_eq!(south.rows, south.teams[0].rows);

    let text = serde_json::to_string(&figures).expect("encodes");
    for person in ["Maria", "Jon Berg", "Ada Obi", "Lee Chan", "Sam Okafor"] {
        assert!(!text.contains(person), "{person} is named in {text}");
    }

    let by_borough = figures_of(&hub, FiguresBy::Borough);
    assert_eq!(by_borough.boroughs[0].rows, north.rows);
    assert!(by_borough.boroughs.iter().all(|b| b.teams.is_empty()));
}

/// Whatever id a document holds, its row is labelled with the id the hub knows the case by: a
/// document can hold anything, a name included.
#[test]
fn trust_figures_label_rows_with_the_hubs_case_id() {
    let hub = hub_admin(ServerRole::Hub);
    let t = two_boroughs(&hub);
    let case = CaseId::random();
    let other = CaseId::random();
    stored_case(
        &hub,
        case,
        other,
        t.early,
        "Lee Chan",
        &[("2026-03-02T10:00", true)],
    );
    let figures = figures_of(&hub, FiguresBy::Team);
    let rows = &figures.boroughs[1].teams[0].rows;
    assert_eq!(rows[0].scope, RowScope::Case);
    assert_eq!(rows[0].label, case.to_string());
}

/// Every case read is recorded, against the case, by the administrator, saying why.
#[test]
fn trust_figures_record_one_read_per_case() {
    let hub = hub_admin(ServerRole::Hub);
    let t = two_boroughs(&hub);
    let mut cases = Vec::new();
    for (team, person) in [(t.crisis, "A"), (t.home, "B"), (t.early, "C")] {
        let case = CaseId::random();
        stored_case(
            &hub,
            case,
            case,
            team,
            person,
            &[("2026-03-02T10:00", true)],
        );
        cases.push(case);
    }
    let before = hub.audit.entries(None).expect("entries").len();
    figures_of(&hub, FiguresBy::Borough);
    let records = hub.audit.entries(None).expect("entries");
    let reads: Vec<_> = records[before..].iter().map(|r| &r.event).collect();
    assert_eq!(reads.len(), 3, "one record per case: {reads:?}");
    for e in &reads {
        assert_eq!(e.actor, Actor::Admin);
        assert_eq!(e.action, AuditAction::Read);
        assert_eq!(e.detail, READ_FOR_FIGURES);
    }
    let mut read: Vec<CaseId> = reads.iter().filter_map(|e| e.case).collect();
    read.sort();
    cases.sort();
    assert_eq!(read, cases);
}

/// A read that cannot be recorded fails the request, saying so, with no figures.
#[test]
fn trust_figures_are_refused_when_a_read_cannot_be_recorded() {
    let hub = hub_admin(ServerRole::Hub);
    let t = two_boroughs(&hub);
    let case = CaseId::random();
    stored_case(
        &hub,
        case,
        case,
        t.crisis,
        "A",
        &[("2026-03-02T10:00", true)],
    );
    hub.disk.refusing.store(true, SeqCst);
    let message = refused(hub.admin.handle(AdminRequest::Figures {
        by: FiguresBy::Team,
    }));
    assert!(
        message.contains("could not be recorded in the audit log")
            && message.contains(&case.to_string())
            && message.contains("no figures are shown"),
        "{message}"
    );
}

/// A case whose stored bytes do not load is named, and the rest are counted.
#[test]
fn trust_figures_name_an_unreadable_case_and_count_the_rest() {
    let hub = hub_admin(ServerRole::Hub);
    let t = two_boroughs(&hub);
    let good = CaseId::random();
    let d = stored_case(
        &hub,
        good,
        good,
        t.crisis,
        "A",
        &[("2026-03-02T10:00", true)],
    );
    let damaged = CaseId::random();
    hub.registry
        .register_case(damaged, t.crisis)
        .expect("register");
    hub.disk
        .append_chunk(&damaged, b"not an automerge document")
        .expect("stored");
    let lost = CaseId::random();
    hub.registry.register_case(lost, t.early).expect("register");

    let figures = figures_of(&hub, FiguresBy::Team);
    let mut unreadable = figures.unreadable.clone();
    unreadable.sort();
    let mut expected = vec![damaged, lost];
    expected.sort();
    assert_eq!(unreadable, expected);
    assert_eq!(
        figures.boroughs[0].teams[0].rows,
        as_devices_count(vec![(good, &d)])
    );
    let reads: Vec<Option<CaseId>> = hub
        .audit
        .entries(None)
        .expect("entries")
        .into_iter()
        .filter(|r| r.event.action == AuditAction::Read)
        .map(|r| r.event.case)
        .collect();
    assert_eq!(
        reads,
        [Some(good)],
        "only the case read is recorded as read"
    );
    assert!(figures.render().contains(&damaged.to_string()));
}

/// A borough server has no boroughs to count: it refuses, pointing at the hub.
#[test]
fn trust_figures_are_refused_on_a_borough_server() {
    let borough = hub_admin(ServerRole::Borough);
    let message = refused(borough.admin.handle(AdminRequest::Figures {
        by: FiguresBy::Team,
    }));
    assert!(
        message.contains("trust-wide figures") && message.contains("this is a borough server"),
        "{message}"
    );
    assert!(actions(&borough.audit).is_empty());
}

/// The CSV leads with the borough and the team (empty on a borough's rows), then a device's
/// columns; the request's JSON form defaults to per team.
#[test]
fn trust_figures_as_csv_and_json() {
    let hub = hub_admin(ServerRole::Hub);
    let t = two_boroughs(&hub);
    let case = CaseId::random();
    stored_case(
        &hub,
        case,
        case,
        t.early,
        "A",
        &[("2026-03-02T10:00", true)],
    );
    let figures = figures_of(&hub, FiguresBy::Team);
    let csv = figures.to_csv().expect("csv");
    let lines: Vec<&str> = csv.lines().collect();
    let device = polyphony_core::export::figures::to_csv(&figures.boroughs[1].rows).expect("csv");
    let device_header = device.lines().next().expect("header");
    assert_eq!(lines[0], format!("borough,team,{device_header}"));
    assert!(lines[1].starts_with("North,,team_mean,"), "{csv}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("South,,case,{case},"))),
        "{csv}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("South,Early Help,case,{case},"))),
        "{csv}"
    );

    let req: AdminRequest = serde_json::from_str(r#"{"request":"figures"}"#).expect("parses");
    assert_eq!(
        req,
        AdminRequest::Figures {
            by: FiguresBy::Team
        }
    );
    let req: AdminRequest =
        serde_json::from_str(r#"{"request":"figures","by":"borough"}"#).expect("parses");
    assert_eq!(
        req,
        AdminRequest::Figures {
            by: FiguresBy::Borough
        }
    );
    assert!(
        req.changes_anything(),
        "it writes audit records, so it is flushed"
    );
}

#[test]
fn joining_another_hub_forgets_the_old_hubs_receipts_and_joining_the_same_one_keeps_them() {
    use crate::hub_link::{acked_heads, set_acked_heads, HubMembership};
    let b = hub_admin(ServerRole::Borough);
    let membership = |hub_ca: &str| HubMembership {
        borough: polyphony_core::BoroughId::random(),
        name: "Brent".into(),
        hub: "127.0.0.1:4500".into(),
        hub_ca: hub_ca.into(),
        certificate: "00".into(),
        key_pem: String::new(),
        joined_at: "2026-12-07T20:00:00Z".into(),
        recovery_key: None,
    };
    let first = membership("aa");
    let joined = |m: &HubMembership| {
        b.admin.handle(AdminRequest::HubJoined {
            membership: m.clone(),
        })
    };
    assert!(matches!(joined(&first), AdminResponse::Ok { .. }));
    let case = CaseId::random();
    let heads = vec![automerge::ChangeHash([3; 32])];
    set_acked_heads(&*b.storage.store, &case, &heads).expect("kept");
    // The same hub and borough (a new certificate): what the hub acknowledged still stands.
    let renewed = HubMembership {
        certificate: "01".into(),
        ..first.clone()
    };
    assert!(matches!(joined(&renewed), AdminResponse::Ok { .. }));
    assert_eq!(
        acked_heads(&*b.storage.store, &case).expect("read"),
        Some(heads)
    );
    // Another hub: its receipts vouch for nothing here.
    assert!(matches!(
        joined(&membership("bb")),
        AdminResponse::Ok { .. }
    ));
    assert_eq!(acked_heads(&*b.storage.store, &case).expect("read"), None);
}
