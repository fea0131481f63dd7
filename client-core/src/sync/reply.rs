//! The answering peer's step: after a device's sync message is applied (and stored), answer it
//! with the peer's next sync message, if it has one, and a `Saved` naming the heads it now holds.
//!
//! The server builds every answer here, and so does every in-memory peer the tests and the fuzz
//! corpus run against, so no second copy of the server's half of the protocol can drift from it.
//! What must happen between applying and answering (the write to disk, the audit record of the
//! read) is the caller's: a `Saved` leaves only once what it names is durable.

use automerge::sync::Message;
use automerge::{AutoCommit, ChangeHash};

use super::{prepare, ApplyError, CasePolicy, Frame, PeerSync};
use crate::CaseId;

/// The answer to one applied sync message: the next message (if any) and the heads to
/// acknowledge.
#[derive(Debug)]
pub struct Reply {
    message: Option<Message>,
    heads: Vec<ChangeHash>,
}

impl Reply {
    /// The answer of a peer that shares the case both ways: what the device lacks, and every head
    /// the peer holds.
    pub fn full(doc: &mut AutoCommit, peer: &mut PeerSync) -> Reply {
        let message = peer.generate(doc);
        Reply {
            message,
            heads: doc.get_heads(),
        }
    }

    /// The answer to a device that may only upload to the case: no changes go back, and the heads
    /// acknowledged are the device's own (all of them now held here), never the peer's, which may
    /// cover colleagues' changes the device will never receive. Acknowledging those would leave a
    /// device unable to tell that all its own work was kept.
    pub fn upload_only(doc: &mut AutoCommit, peer: &mut PeerSync) -> Reply {
        let mut message = peer.generate(doc);
        if let Some(m) = message.as_mut() {
            m.changes = automerge::sync::ChunkList::empty();
        }
        let heads = peer
            .state
            .their_heads
            .clone()
            .filter(|h| h.iter().all(|x| doc.get_change_by_hash(x).is_some()))
            .unwrap_or_default();
        Reply { message, heads }
    }

    /// Whether the answer carries case data (changes) to the device: a read, to be audited
    /// before it leaves.
    pub fn sends_changes(&self) -> bool {
        self.message.as_ref().is_some_and(|m| !m.changes.is_empty())
    }

    /// The heads the `Saved` names.
    pub fn heads(&self) -> &[ChangeHash] {
        &self.heads
    }

    /// The frames to send, in order: the sync message (if any), then `Saved`.
    pub fn into_frames(self, case: CaseId) -> Vec<Frame> {
        let mut frames: Vec<Frame> = self
            .message
            .map(|m| Frame::Sync {
                case,
                message: m.encode(),
            })
            .into_iter()
            .collect();
        frames.push(Frame::Saved {
            case,
            heads: self.heads,
        });
        frames
    }
}

/// Take in a device's message and answer it, for a peer that keeps its documents in memory (no
/// disk to wait for): apply on a copy under `policy`, commit, then [`Reply::full`]. A refused
/// message leaves `doc` and `peer` as they were.
pub fn answer(
    case: CaseId,
    doc: &mut AutoCommit,
    peer: &mut PeerSync,
    message: &[u8],
    policy: &dyn CasePolicy,
) -> Result<Vec<Frame>, ApplyError> {
    prepare(doc, peer, message, policy)?.commit(doc, peer);
    Ok(Reply::full(doc, peer).into_frames(case))
}

#[cfg(test)]
mod tests {
    use automerge::sync::{State, SyncDoc};
    use automerge::transaction::Transactable;
    use automerge::ROOT;

    use super::*;

    struct Anyone;
    impl CasePolicy for Anyone {
        fn author_allowed(&self, _: &automerge::ActorId) -> bool {
            true
        }
        fn check(&self, _: &AutoCommit) -> Result<(), crate::sync::PolicyRefusal> {
            Ok(())
        }
    }

    fn doc_with(text: &str) -> AutoCommit {
        let mut d = AutoCommit::new();
        d.put(ROOT, "note", text).expect("put");
        d
    }

    #[test]
    fn an_upload_only_answer_sends_no_changes_and_acknowledges_only_the_devices_heads() {
        let mut server = doc_with("colleague's words");
        let mut device = AutoCommit::new();
        let (mut device_state, mut server_peer) = (State::new(), PeerSync::default());
        // The device's first message: it has nothing yet, and asks.
        let first = device
            .sync()
            .generate_sync_message(&mut device_state)
            .expect("a first message");
        server
            .sync()
            .receive_sync_message(&mut server_peer.state, first)
            .expect("applies");

        let full = Reply::full(&mut server.clone(), &mut server_peer.clone());
        assert!(
            full.sends_changes(),
            "a full answer carries what the device lacks"
        );
        assert_eq!(full.heads(), server.get_heads().as_slice());

        let upload_only = Reply::upload_only(&mut server, &mut server_peer);
        assert!(!upload_only.sends_changes());
        assert!(
            upload_only.heads().is_empty(),
            "the device holds nothing the server has: nothing of the server's is acknowledged"
        );
        let frames = upload_only.into_frames(CaseId(uuid::Uuid::nil()));
        assert!(matches!(frames.last(), Some(Frame::Saved { heads, .. }) if heads.is_empty()));
    }

    #[test]
    fn answer_applies_then_replies_with_saved_last() {
        let case = CaseId::random();
        let author = crate::model::Author {
            practitioner: crate::PractitionerId::random(),
            practitioner_name: "Sam".into(),
            device: crate::DeviceId::random(),
        };
        let new = crate::model::NewCase {
            name: "Alex".into(),
            ..Default::default()
        };
        let mut device = crate::model::CaseDoc::create(case, crate::TeamId::random(), new, author)
            .expect("a case")
            .into_automerge();
        let mut server = AutoCommit::new();
        let (mut device_state, mut server_peer) = (State::new(), PeerSync::default());
        let mut saved = None;
        for _ in 0..8 {
            let Some(m) = device.sync().generate_sync_message(&mut device_state) else {
                break;
            };
            let frames = answer(case, &mut server, &mut server_peer, &m.encode(), &Anyone)
                .expect("accepted");
            assert!(matches!(frames.last(), Some(Frame::Saved { .. })));
            for f in frames {
                match f {
                    Frame::Sync { message, .. } => {
                        let m = Message::decode(&message).expect("decodes");
                        device
                            .sync()
                            .receive_sync_message(&mut device_state, m)
                            .expect("applies");
                    }
                    Frame::Saved { heads, .. } => saved = Some(heads),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(saved, Some(device.get_heads()));
        assert_eq!(server.get_heads(), device.get_heads());
    }
}
