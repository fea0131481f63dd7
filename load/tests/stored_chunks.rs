//! `sync::prepare` stores a sync message's own chunks (a compressed whole document on a first sync,
//! change chunks after). This checks the assumption behind that: any sequence of those chunks,
//! overlapping ones included, loads back to the same document as the one that received them.

use automerge::sync::{Message, State, SyncDoc};
use automerge::AutoCommit;
use polyphony_core::model::Author;
use polyphony_core::{CaseId, DeviceId, PractitionerId, TeamId};
use polyphony_load::caseload::{care_record, edit_offline, Seed};

#[test]
fn a_case_stored_as_its_sync_messages_chunks_loads_back_whole() {
    let author = Author {
        practitioner: PractitionerId::random(),
        practitioner_name: "Sam".into(),
        device: DeviceId::random(),
    };
    let mut seed = Seed::new(3);
    let mut device =
        care_record(CaseId::random(), TeamId::random(), &author, &mut seed).expect("record");
    let mut server = AutoCommit::new();
    let (mut sd, mut ss) = (State::new(), State::new());
    let mut raw = Vec::new();
    let mut encoded = Vec::new();
    for round in 0..3 {
        if round > 0 {
            edit_offline(&mut device, &author, &mut seed).expect("edit");
        }
        loop {
            let mut moved = false;
            if let Some(m) = device.sync().generate_sync_message(&mut sd) {
                moved = true;
                let m = Message::decode(&m.encode()).expect("decode");
                raw.extend(m.changes.iter().flatten().copied());
                let before = server.get_heads();
                server
                    .sync()
                    .receive_sync_message(&mut ss, m)
                    .expect("receive");
                encoded.extend(server.save_after(&before));
            }
            if let Some(m) = server.sync().generate_sync_message(&mut ss) {
                moved = true;
                device
                    .sync()
                    .receive_sync_message(&mut sd, m)
                    .expect("receive");
            }
            if !moved {
                break;
            }
        }
    }
    let heads = server.get_heads();
    assert_eq!(
        AutoCommit::load(&raw).expect("raw chunks load").get_heads(),
        heads
    );
    let mut both = encoded.clone();
    both.extend_from_slice(&raw);
    assert_eq!(
        AutoCommit::load(&both)
            .expect("overlapping chunks load")
            .get_heads(),
        heads
    );
    assert!(
        raw.len() < encoded.len(),
        "the message's chunks are the smaller form"
    );
}
