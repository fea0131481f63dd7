//! Applying a peer's sync message safely: on a copy, checked, then committed.
//!
//! Both sides use this. The message is applied to a clone of the document; the new changes' authors
//! and the resulting document are checked; only then may the caller persist the new changes and swap
//! the clone in. A refused message leaves the document and the sync state exactly as they were, and a
//! failed write to disk can be handled by simply dropping the [`Prepared`] value.

use automerge::sync::{Message, State, SyncDoc};
use automerge::{ActorId, AutoCommit, ChangeHash};

use crate::model::guard::NewOps;
use crate::model::{read_uleb128, validate_document, SchemaError};

/// Why a peer's message was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The bytes are not an automerge sync message.
    #[error("not a valid sync message: {0}")]
    Decode(String),
    /// automerge could not apply the changes.
    #[error("the changes could not be applied: {0}")]
    Automerge(String),
    /// A change is authored by an actor the policy does not allow.
    #[error("a change is authored by {0}, which is not an enrolled device of this case's team")]
    Forged(String),
    /// The result is not a valid case record.
    #[error("the change would break the record: {0}")]
    Invalid(#[from] SchemaError),
    /// The result breaks a rule of the caller's policy (case id or team changed).
    #[error("{0}")]
    Policy(PolicyRefusal),
    /// More changes wait for a dependency than may be held for one peer ([`MAX_WAITING_BYTES`]).
    #[error(
        "more than {} MiB of changes are waiting for changes they depend on that were never \
         sent; sync again to send them from the start",
        MAX_WAITING_BYTES >> 20
    )]
    TooMuchWaiting,
    /// The changes remove something the record held (the server's append-only rule).
    #[error("{0}")]
    Removes(String),
    /// The changes write a name or device into the record that is not the sender's.
    #[error("{0}")]
    Impersonates(String),
    /// A change says it was made at a time the policy does not accept (the server's rule for a
    /// case that moved away from the sender: only what it wrote before it was told).
    #[error("{0}")]
    MadeTooLate(PolicyRefusal),
}

/// Why a [`CasePolicy`] refused a document or a change, as a type: callers branch on the variant,
/// never on the words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyRefusal {
    /// The document's case id is not the case being synced.
    #[error("the document's case id does not match the case being synced")]
    WrongCase,
    /// The document has no team.
    #[error("the document has no team")]
    NoTeam,
    /// The document's team is not the one the case is registered to.
    #[error("a device cannot move a case to another team")]
    TeamChanged,
    /// A new case names a team that is not the sender's.
    #[error("a case can only be created for one of your own teams")]
    NotOwnTeam,
    /// A change with no time, to a case that moved away from the sender.
    #[error(
        "a change carries no time, and this case is no longer your team's (this device was told \
         so at {told_at}): only what was written before then can be uploaded to it; the change \
         stays on this device"
    )]
    Undated {
        /// When the device was told (to the second).
        told_at: String,
    },
    /// A change dated after the sender was told its case moved away.
    #[error(
        "a change is dated {made}, after this device was told at {told_at} that this case is no \
         longer its team's (it moved to another team, or you left its team; {skew_minutes} \
         minutes allowed for the device's clock): only what was written before then can be \
         uploaded to it; the change stays on this device"
    )]
    MadeAfterTold {
        /// When the change says it was made.
        made: String,
        /// When the device was told.
        told_at: String,
        /// The allowance for the device's clock.
        skew_minutes: i64,
    },
}

/// What a side checks before accepting changes.
pub trait CasePolicy {
    /// May changes by this actor be accepted?
    fn author_allowed(&self, actor: &ActorId) -> bool;
    /// May a new change by `actor` that says it was made at `time` be accepted? `time` is in
    /// milliseconds since the Unix epoch, written by the device that made the change (its clock,
    /// or anything a modified client chose), and 0 when the change carries none. Asked of every
    /// new change, beside [`CasePolicy::author_allowed`]. Any time by default.
    fn time_allowed(&self, actor: &ActorId, time: i64) -> Result<(), PolicyRefusal> {
        let _ = (actor, time);
        Ok(())
    }
    /// Extra checks on the resulting (already shape-validated) document.
    fn check(&self, doc: &AutoCommit) -> Result<(), PolicyRefusal>;
    /// Checks on the step from `before` to `after` that the new changes (`new`) made: what they
    /// removed, what names they wrote (the server's rules, [`crate::model::guard`]). None by
    /// default: a device accepts its server's history.
    fn check_step(
        &self,
        before: &AutoCommit,
        after: &AutoCommit,
        new: &NewOps,
    ) -> Result<(), ApplyError> {
        let _ = (before, after, new);
        Ok(())
    }
}

/// The most bytes of changes one peer may leave waiting for a dependency, per case. A message
/// can be as large as a frame ([`super::DEFAULT_MAX_FRAME`]); two may wait at once (one sent
/// before the answer to the other arrived).
pub const MAX_WAITING_BYTES: usize = 2 * super::DEFAULT_MAX_FRAME;

/// Changes a peer sent that wait for a change they depend on, held for that peer alone.
///
/// A peer may skip a change the other side lacks (a Bloom filter false positive) and send the
/// changes that depend on it. automerge keeps such changes in a queue inside the document until
/// the dependency arrives. On a server the document is shared by every session of the case, so a
/// queue there was everyone's: one device's queued change, released by a colleague's honest
/// upload, was checked against the colleague's session and refused, and the colleague could not
/// sync until the server dropped the case from memory. So no document here ever holds a queue:
/// the waiting changes are kept beside the peer's sync state, loaded into a copy when the peer's
/// next message arrives, and checked against the peer that sent them when they apply. They live
/// as long as the session; a peer that reconnects sends them again.
#[derive(Clone, Debug, Default)]
pub struct Waiting {
    chunks: Vec<Vec<u8>>,
    bytes: usize,
}

impl Waiting {
    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// How many bytes of changes wait.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Hold `chunks` too (a chunk already held is not held twice), refusing to hold more than
    /// [`MAX_WAITING_BYTES`].
    fn add(&mut self, chunks: impl IntoIterator<Item = Vec<u8>>) -> Result<(), ApplyError> {
        for chunk in chunks {
            if self.chunks.contains(&chunk) {
                continue;
            }
            self.bytes += chunk.len();
            if self.bytes > MAX_WAITING_BYTES {
                return Err(ApplyError::TooMuchWaiting);
            }
            self.chunks.push(chunk);
        }
        Ok(())
    }

    /// A copy of `doc` with the waiting changes loaded: those whose dependencies it now holds
    /// apply, the rest queue in the copy.
    fn loaded_into(&self, doc: &AutoCommit) -> Result<AutoCommit, ApplyError> {
        let mut copy = doc.clone();
        for chunk in &self.chunks {
            guarded(|| copy.load_incremental(chunk))?;
        }
        Ok(copy)
    }
}

/// One peer's side of a case's sync: automerge's sync state, and the changes the peer sent that
/// wait for a dependency ([`Waiting`]).
#[derive(Clone, Debug, Default)]
pub struct PeerSync {
    /// automerge's sync state for this peer.
    pub state: State,
    /// Changes from this peer that wait for a dependency.
    pub waiting: Waiting,
}

impl PeerSync {
    /// A peer starting from a sync state kept from an earlier session, with nothing waiting.
    pub fn from_state(state: State) -> PeerSync {
        PeerSync {
            state,
            waiting: Waiting::default(),
        }
    }

    /// automerge's next message for this peer. With changes from the peer waiting, the message is
    /// made from a copy that holds them queued, so that it asks for what they wait on.
    ///
    /// If any of them would apply to the copy (their dependency reached the document some other
    /// way, through another session), the message is made from the document itself: made from the
    /// copy it would claim changes nobody has checked or stored, and the peer would never send them
    /// again. From the document it asks for the peer's heads, and the peer's next message, changes
    /// or not, releases and checks the waiting ones (see [`prepare`]).
    pub fn generate(&mut self, doc: &mut AutoCommit) -> Option<Message> {
        if self.waiting.is_empty() {
            return doc.sync().generate_sync_message(&mut self.state);
        }
        if let Ok(mut copy) = self.waiting.loaded_into(doc) {
            if copy.get_heads() == doc.get_heads() {
                return copy.sync().generate_sync_message(&mut self.state);
            }
        }
        doc.sync().generate_sync_message(&mut self.state)
    }
}

/// A message applied to a copy, ready to commit.
pub struct Prepared {
    /// The new document, if the message carried new changes. It never holds changes waiting for a
    /// dependency: those are in `peer.waiting`.
    pub doc: Option<AutoCommit>,
    /// The peer's sync state and waiting changes after the message.
    pub peer: PeerSync,
    /// The new changes, encoded for appending to the store (empty if none).
    pub chunk: Vec<u8>,
    /// How many new changes.
    pub new_changes: usize,
    /// The new changes' actors (for audit and attribution).
    pub actors: Vec<ActorId>,
}

impl Prepared {
    /// Swap the prepared document and the peer's state in.
    pub fn commit(self, doc: &mut AutoCommit, peer: &mut PeerSync) {
        if let Some(d) = self.doc {
            *doc = d;
        }
        *peer = self.peer;
    }

    fn unchanged(peer: PeerSync) -> Prepared {
        Prepared {
            doc: None,
            peer,
            chunk: Vec::new(),
            new_changes: 0,
            actors: Vec::new(),
        }
    }
}

/// The most bits per change and probes a Bloom filter in a peer's message may ask for. automerge
/// writes 10 and 7 (a 1% false positive rate); the bound leaves room for a later version's choice.
const MAX_BLOOM_PARAMETER: u64 = 64;

/// The most Bloom filters one message may carry. automerge sends one; each costs a probe of every
/// change the answering side holds, under the case's lock on the server.
const MAX_HAVES: usize = 4;

/// Refuse a message whose Bloom filters automerge would panic on or allocate without bound for
/// when it next answers the peer, or that carries more of them than automerge ever sends.
///
/// automerge 0.12 parses any numbers for a filter's bits per change and probes, and uses them
/// later, outside the decoding: zero bits per change divides by zero, and a huge probe count asks
/// for gigabytes. On a server that answer is made under the case's lock, so one such message took
/// the case from every session until a restart (found by fuzzing `server_session`). The filter's
/// fields are private; its encoding is not.
fn check_blooms(msg: &Message) -> Result<(), ApplyError> {
    if msg.have.len() > MAX_HAVES {
        return Err(ApplyError::Decode(format!(
            "the message carries {} summaries of what the peer holds (Bloom filters); automerge \
             sends one, and at most {MAX_HAVES} are read",
            msg.have.len()
        )));
    }
    for have in &msg.have {
        let bytes = have.bloom.to_bytes();
        if bytes.is_empty() {
            // No entries: automerge never probes an empty filter.
            continue;
        }
        let mut fields = [0u64; 3];
        let mut at = 0;
        for field in &mut fields {
            let Some((value, next)) = read_uleb128(&bytes, at) else {
                return Err(ApplyError::Decode(
                    "a Bloom filter in the message is cut short".into(),
                ));
            };
            (*field, at) = (value, next);
        }
        let [_, bits_per_change, probes] = fields;
        let allowed = 1..=MAX_BLOOM_PARAMETER;
        if !allowed.contains(&bits_per_change) || !allowed.contains(&probes) {
            return Err(ApplyError::Decode(format!(
                "a Bloom filter in the message asks for {bits_per_change} bits per change and \
                 {probes} probes; each must be between 1 and {MAX_BLOOM_PARAMETER}"
            )));
        }
    }
    Ok(())
}

/// Run an automerge step on bytes from a peer, turning a panic inside automerge into a refusal.
///
/// automerge 0.12 decodes some malformed chunks by unwrapping (hexane 1.0.0-alpha.5 panics on a
/// bundle whose column ends inside a number; found by fuzzing `document_load`). A peer's bytes must
/// never take a session down, and on the server never poison the lock of a case every session
/// shares (which left the whole team unable to sync until a restart). The document it runs on is
/// the copy being prepared, or one with no changes to apply, so nothing half-applied survives.
fn guarded<T>(
    step: impl FnOnce() -> Result<T, automerge::AutomergeError>,
) -> Result<T, ApplyError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step))
        .map_err(|_| ApplyError::Decode("automerge could not decode the changes".into()))?
        .map_err(|e| ApplyError::Automerge(e.to_string()))
}

/// Whether every chunk of a message is held, whole, by `copy` after the message was applied, so
/// that the message's own bytes may be stored as they are.
///
/// automerge takes in a message's chunks until one fails to parse and silently drops that one and
/// the rest; stored as they came, such bytes made the whole case unreadable from disk (a strict
/// `AutoCommit::load`) for every device of its team. Each change chunk must be, byte for byte,
/// the change automerge now holds: parsing alone is not enough, since a change's hash leaves out
/// the chunk's checksum, so a copy of a held change with its checksum spoilt parses to a held
/// hash (found in review). A document chunk must stand alone (a whole document loads whole or
/// not at all, and a document that did not load added no change, so nothing is stored).
/// Otherwise the caller encodes the new changes instead. Chunks automerge never decoded are
/// decoded here, so a panic in automerge's decoding is a `false`, not a poisoned lock.
fn every_chunk_applied(chunks: &[Vec<u8>], copy: &mut AutoCommit) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| chunks_held(chunks, copy)))
        .unwrap_or(false)
}

fn chunks_held(chunks: &[Vec<u8>], copy: &mut AutoCommit) -> bool {
    const DOCUMENT: u8 = 0;
    let all: Vec<(u8, &[u8])> = match chunks
        .iter()
        .map(|c| crate::model::split_chunks(c))
        .collect::<Option<Vec<_>>>()
    {
        Some(split) => split.into_iter().flatten().collect(),
        None => return false,
    };
    if let [(DOCUMENT, _)] = all.as_slice() {
        return true;
    }
    all.iter().all(|(kind, bytes)| {
        *kind != DOCUMENT
            && automerge::Change::from_bytes(bytes.to_vec()).is_ok_and(|c| {
                copy.get_change_by_hash(&c.hash())
                    .is_some_and(|held| held.raw_bytes() == *bytes)
            })
    })
}

/// Let automerge take in a peer's message (see [`guarded`]).
fn receive(doc: &mut AutoCommit, state: &mut State, msg: Message) -> Result<(), ApplyError> {
    guarded(|| doc.sync().receive_sync_message(state, msg))
}

/// Apply `message`, from the peer whose side is `peer`, to a copy of `doc`; check it, and return
/// what to commit. Changes the peer sent earlier that waited for a dependency apply with it.
pub fn prepare(
    doc: &mut AutoCommit,
    peer: &PeerSync,
    message: &[u8],
    policy: &dyn CasePolicy,
) -> Result<Prepared, ApplyError> {
    let msg = Message::decode(message).map_err(|e| ApplyError::Decode(e.to_string()))?;
    if !msg
        .changes
        .iter()
        .all(crate::model::only_document_and_change_chunks)
    {
        return Err(ApplyError::Decode(
            "the message carries automerge data of a kind Polyphony never sends".into(),
        ));
    }
    check_blooms(&msg)?;
    let mut next = peer.clone();
    if msg.changes.is_empty() && peer.waiting.is_empty() {
        // No changes, and none waiting: only the sync state moves, the document cannot.
        receive(doc, &mut next.state, msg)?;
        return Ok(Prepared::unchanged(next));
    }
    let old_heads = doc.get_heads();
    // The message's own chunks, as the peer's automerge encoded them (a compressed whole document
    // on a first sync, change chunks after). See below for when they are what the store keeps.
    let chunks: Vec<Vec<u8>> = msg.changes.iter().map(<[u8]>::to_vec).collect();
    let mut copy = peer.waiting.loaded_into(doc)?;
    receive(&mut copy, &mut next.state, msg)?;
    // Changes still waiting for a dependency the peer has not sent (it skipped it on a Bloom
    // filter false positive) are held for the peer, and its next message asks for the
    // dependency (PeerSync::generate). Dropping them would leave the peer, which believes it sent
    // them, never sending them again, and the two sides asking each other forever.
    let still_waiting = !copy.get_missing_deps(&[]).is_empty();
    next.waiting = Waiting::default();
    if still_waiting {
        next.waiting = peer.waiting.clone();
        next.waiting.add(chunks.iter().cloned())?;
    }
    // Only each new change's author, time and hash are needed: the metadata, not the encoded
    // changes.
    let mut ops = NewOps::default();
    let new: Vec<(ActorId, ChangeHash, i64)> = copy
        .get_changes_meta(&old_heads)
        .into_iter()
        .map(|c| {
            ops.add(
                c.actor.clone().into_owned(),
                c.start_op,
                c.max_op,
                c.message.as_deref().map(str::to_string),
            );
            (c.actor.into_owned(), c.hash, c.timestamp)
        })
        .collect();
    if new.is_empty() {
        // Everything in the message waits (or was already held): nothing to check or store yet.
        return Ok(Prepared::unchanged(next));
    }
    let mut actors: Vec<ActorId> = new.iter().map(|(a, _, _)| a.clone()).collect();
    actors.sort();
    actors.dedup();
    if let Some(bad) = actors.iter().find(|a| !policy.author_allowed(a)) {
        return Err(ApplyError::Forged(bad.to_hex_string()));
    }
    for (actor, _, time) in &new {
        policy
            .time_allowed(actor, *time)
            .map_err(ApplyError::MadeTooLate)?;
    }
    // At least one change applied, so the result is a document someone will open: check it
    // whole. (Changes that all wait on a dependency returned above, unchecked and unstored.) An
    // earlier version skipped the check when the root had no keys, meant for a document not yet
    // filled in; one change deleting every top-level key then passed unchecked, was stored and
    // pushed, and every team device failed to open its whole caseload.
    validate_document(&copy)?;
    policy.check(&copy).map_err(ApplyError::Policy)?;
    policy.check_step(doc, &copy, &ops)?;
    // With nothing waiting before or after, every change in the message is now either applied (and
    // checked above) or was already held (and checked when it arrived), so the message's chunks
    // hold exactly checked changes: store them as they are. `AutoCommit::load` reads any sequence
    // of document and change chunks, duplicates included. Re-encoding with `save_after` costs
    // more than applying (about 3 ms for a care record) and writes an uncompressed chunk about 5
    // times larger. Changes still waiting must never reach the disk unchecked, and changes that
    // waited for this message are not in its chunks: in either case the new changes are encoded
    // instead.
    if peer.waiting.is_empty() && !still_waiting && every_chunk_applied(&chunks, &mut copy) {
        return Ok(Prepared {
            doc: Some(copy),
            peer: next,
            chunk: chunks.concat(),
            new_changes: new.len(),
            actors,
        });
    }
    let chunk = copy.save_after(&old_heads);
    // The copy holds the changes still waiting in automerge's queue: the document committed is
    // made without them.
    let doc = if still_waiting {
        let mut clean = doc.clone();
        guarded(|| clean.load_incremental(&chunk))?;
        clean
    } else {
        copy
    };
    Ok(Prepared {
        doc: Some(doc),
        peer: next,
        chunk,
        new_changes: new.len(),
        actors,
    })
}

#[cfg(test)]
mod tests {
    use automerge::sync::{BloomFilter, Have, MessageVersion, SyncDoc};
    use automerge::transaction::Transactable;
    use automerge::ROOT;

    use super::*;

    struct Anyone;
    impl CasePolicy for Anyone {
        fn author_allowed(&self, _: &ActorId) -> bool {
            true
        }
        fn check(&self, _: &AutoCommit) -> Result<(), PolicyRefusal> {
            Ok(())
        }
    }

    /// A message that says only "I have these" with `bloom` as the summary.
    fn having(bloom: &[u8]) -> Vec<u8> {
        Message {
            heads: Vec::new(),
            need: Vec::new(),
            have: vec![Have {
                last_sync: Vec::new(),
                bloom: BloomFilter::try_from(bloom).expect("automerge parses it"),
            }],
            changes: Vec::<Vec<u8>>::new().into(),
            flags: None,
            version: MessageVersion::V1,
        }
        .encode()
    }

    fn doc_with(key: &str) -> AutoCommit {
        let mut d = AutoCommit::new();
        d.put(ROOT, key, 1).expect("put");
        d.commit();
        d
    }

    #[test]
    fn a_bloom_filter_automerge_would_divide_by_zero_on_is_refused() {
        // One entry, zero bits per entry, seven probes: automerge parses it (no bits to read).
        let zero_bits = having(&[1, 0, 7]);
        // Control: automerge alone takes it in, then panics when it next answers the peer.
        let mut plain = doc_with("k");
        let mut state = State::new();
        plain
            .sync()
            .receive_sync_message(&mut state, Message::decode(&zero_bits).expect("decodes"))
            .expect("automerge accepts it");
        let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            plain.sync().generate_sync_message(&mut state)
        }));
        assert!(
            answered.is_err(),
            "control: automerge panics on this filter"
        );

        let mut doc = doc_with("k");
        let refused = prepare(&mut doc, &PeerSync::default(), &zero_bits, &Anyone);
        assert!(
            matches!(&refused, Err(ApplyError::Decode(m)) if m.contains("0 bits per change")),
            "{:?}",
            refused.err()
        );
    }

    #[test]
    fn a_bloom_filter_asking_for_billions_of_probes_is_refused_and_a_normal_one_taken() {
        // 2^32 - 1 probes (LEB128), 10 bits per entry, one entry (two bytes of bits).
        let mut bytes = vec![1, 10, 0xff, 0xff, 0xff, 0xff, 0x0f];
        bytes.extend([0, 0]);
        let mut doc = doc_with("k");
        let refused = prepare(&mut doc, &PeerSync::default(), &having(&bytes), &Anyone);
        assert!(
            matches!(&refused, Err(ApplyError::Decode(m)) if m.contains("4294967295 probes")),
            "{:?}",
            refused.err()
        );
        // The filter automerge itself writes passes, and the answer is made.
        let peer_doc = doc_with("other");
        let mut peer_state = State::new();
        let mut sender = peer_doc.clone();
        let first = sender
            .sync()
            .generate_sync_message(&mut peer_state)
            .expect("a first message");
        let prepared =
            prepare(&mut doc, &PeerSync::default(), &first.encode(), &Anyone).expect("taken");
        let mut peer = PeerSync::default();
        prepared.commit(&mut doc, &mut peer);
        assert!(peer.generate(&mut doc).is_some());
    }

    #[test]
    fn waiting_changes_past_the_bound_are_refused_and_a_chunk_sent_twice_is_held_once() {
        let mut waiting = Waiting::default();
        let chunk = |first: u8, len: usize| {
            let mut c = vec![0u8; len];
            c[0] = first;
            c
        };
        waiting
            .add([chunk(0, 1 << 20), chunk(0, 1 << 20)])
            .expect("held");
        assert_eq!(
            waiting.bytes(),
            1 << 20,
            "the same chunk twice is held once"
        );
        let mut first = 1u8;
        while waiting.bytes() + (1 << 20) <= MAX_WAITING_BYTES {
            waiting
                .add([chunk(first, 1 << 20)])
                .expect("under the bound");
            first += 1;
        }
        assert_eq!(waiting.bytes(), MAX_WAITING_BYTES);
        let over = waiting.add([vec![0xee; 1]]);
        assert!(matches!(&over, Err(ApplyError::TooMuchWaiting)), "{over:?}");
    }

    #[test]
    fn a_change_waits_beside_the_peer_not_in_the_document_and_applies_when_its_dependency_comes() {
        let (mut base, device, x, y) = base_and_two_edits();
        let only = |hash| carrying(vec![raw(&mut device.clone(), &hash)], vec![y]);
        let mut server = base.clone();
        let mut peer = PeerSync::default();
        let waits = prepare(&mut server, &peer, &only(y), &Anyone).expect("taken");
        assert_eq!(waits.new_changes, 0);
        assert!(waits.doc.is_none(), "nothing to commit to the document");
        waits.commit(&mut server, &mut peer);
        assert!(!peer.waiting.is_empty());
        assert!(
            server.get_missing_deps(&[]).is_empty(),
            "no queue in the document"
        );
        let asked = peer.generate(&mut server).expect("an answer");
        assert!(asked.need.contains(&x), "the answer asks for X: {asked:?}");

        // Another peer of the same document knows nothing of Y.
        let mut other = PeerSync::default();
        let theirs = other.generate(&mut server).expect("a first message");
        assert!(!theirs.need.contains(&x));

        let applied = prepare(&mut server, &peer, &only(x), &Anyone).expect("taken");
        assert_eq!(applied.new_changes, 2, "X, and Y that waited for it");
        let chunk = applied.chunk.clone();
        applied.commit(&mut server, &mut peer);
        assert!(peer.waiting.is_empty());
        let mut stored = base.save();
        stored.extend_from_slice(&chunk);
        let mut reloaded = AutoCommit::load(&stored).expect("loads");
        assert!(
            reloaded.get_change_by_hash(&y).is_some() && reloaded.get_change_by_hash(&x).is_some()
        );
    }

    /// A care record, and a device's copy with two edits on it: X, then Y (which depends on X).
    fn base_and_two_edits() -> (AutoCommit, AutoCommit, ChangeHash, ChangeHash) {
        let author = crate::model::Author {
            practitioner: crate::PractitionerId::random(),
            practitioner_name: "Sam".into(),
            device: crate::DeviceId::random(),
        };
        let new = crate::model::NewCase {
            name: "Alex".into(),
            ..Default::default()
        };
        let mut base = crate::model::CaseDoc::create(
            crate::CaseId::random(),
            crate::TeamId::random(),
            new,
            author.clone(),
        )
        .expect("a case")
        .into_automerge();
        let mut device =
            crate::model::CaseDoc::from_automerge(base.fork(), Some(author)).expect("opens");
        let mut edit = |field, value| {
            device.set_person(field, Some(value)).expect("edit");
            device.automerge_mut().get_heads()[0]
        };
        let x = edit(crate::model::PersonField::Pronouns, "they/them");
        let y = edit(crate::model::PersonField::Phone, "020 7946 0000");
        (base, device.into_automerge(), x, y)
    }

    /// A message with `chunks` as its changes, claiming `heads`.
    fn carrying(chunks: Vec<Vec<u8>>, heads: Vec<ChangeHash>) -> Vec<u8> {
        Message {
            heads,
            need: Vec::new(),
            have: Vec::new(),
            changes: chunks.into(),
            flags: None,
            version: MessageVersion::V1,
        }
        .encode()
    }

    fn raw(doc: &mut AutoCommit, hash: &ChangeHash) -> Vec<u8> {
        doc.get_change_by_hash(hash)
            .expect("held")
            .raw_bytes()
            .to_vec()
    }

    #[test]
    fn a_corrupt_chunk_after_a_good_one_is_not_stored_and_the_case_still_loads() {
        let (mut base, mut device, x, _) = base_and_two_edits();
        let good = raw(&mut device, &x);
        // A change chunk's header (magic, a checksum, kind 1, length 4) over a body that is not a
        // change: automerge applies the good chunk and silently drops this one.
        let bad = vec![
            0x85, 0x6f, 0x4a, 0x83, 1, 2, 3, 4, 1, 4, 0xde, 0xad, 0xbe, 0xef,
        ];
        let mut server = base.clone();
        let prepared = prepare(
            &mut server,
            &PeerSync::default(),
            &carrying(vec![good, bad.clone()], vec![x]),
            &Anyone,
        )
        .expect("the good change is taken");
        assert_eq!(prepared.new_changes, 1);
        assert!(
            !prepared.chunk.ends_with(&bad),
            "the corrupt bytes are not stored"
        );
        let mut stored = base.save();
        stored.extend_from_slice(&prepared.chunk);
        let mut reloaded = AutoCommit::load(&stored).expect("the case loads from disk, strictly");
        assert!(reloaded.get_change_by_hash(&x).is_some());
    }

    #[test]
    fn a_held_change_sent_again_with_its_checksum_spoilt_is_not_stored() {
        let (mut base, mut device, x, _) = base_and_two_edits();
        let good = raw(&mut device, &x);
        let mut spoilt = good.clone();
        spoilt[4] ^= 0xff;
        let mut server = base.clone();
        let prepared = prepare(
            &mut server,
            &PeerSync::default(),
            &carrying(vec![good.clone(), spoilt.clone()], vec![x]),
            &Anyone,
        )
        .expect("the good change is taken");
        assert_eq!(prepared.new_changes, 1);
        let mut stored = base.save();
        stored.extend_from_slice(&prepared.chunk);
        let mut reloaded = AutoCommit::load(&stored).expect("the case loads from disk, strictly");
        assert!(reloaded.get_change_by_hash(&x).is_some());
        // An honest message is still stored as it came (no re-encoding on the common path).
        let mut server = base.clone();
        let honest = prepare(
            &mut server,
            &PeerSync::default(),
            &carrying(vec![good.clone()], vec![x]),
            &Anyone,
        )
        .expect("taken");
        assert_eq!(honest.chunk, good, "the message's own bytes");
    }

    #[test]
    fn more_bloom_filters_than_automerge_sends_are_refused() {
        let one = BloomFilter::try_from(&[][..]).expect("an empty filter");
        let message = Message {
            heads: Vec::new(),
            need: Vec::new(),
            have: (0..=MAX_HAVES)
                .map(|_| Have {
                    last_sync: Vec::new(),
                    bloom: one.clone(),
                })
                .collect(),
            changes: Vec::<Vec<u8>>::new().into(),
            flags: None,
            version: MessageVersion::V1,
        };
        let mut doc = doc_with("k");
        let refused = prepare(
            &mut doc,
            &PeerSync::default(),
            &message.clone().encode(),
            &Anyone,
        );
        assert!(
            matches!(&refused, Err(ApplyError::Decode(m)) if m.contains("Bloom filters")),
            "{:?}",
            refused.err()
        );
        let mut at_limit = message;
        at_limit.have.truncate(MAX_HAVES);
        assert!(prepare(&mut doc, &PeerSync::default(), &at_limit.encode(), &Anyone).is_ok());
    }

    #[test]
    fn a_waiting_change_whose_dependency_came_another_way_is_not_claimed_and_is_taken_next() {
        let (base, mut device, x, y) = base_and_two_edits();
        let mut server = base.clone();
        let mut waiting_peer = PeerSync::default();
        prepare(
            &mut server,
            &waiting_peer,
            &carrying(vec![raw(&mut device, &y)], vec![y]),
            &Anyone,
        )
        .expect("taken")
        .commit(&mut server, &mut waiting_peer);
        assert!(!waiting_peer.waiting.is_empty());
        // X reaches the document through another peer (another session of the same device).
        let mut other = PeerSync::default();
        let with_x = prepare(
            &mut server,
            &other,
            &carrying(vec![raw(&mut device, &x)], vec![x]),
            &Anyone,
        )
        .expect("taken");
        with_x.commit(&mut server, &mut other);
        // The waiting peer's answer claims nothing unchecked: its heads are the document's.
        let answer = waiting_peer.generate(&mut server).expect("an answer");
        assert_eq!(answer.heads, server.get_heads(), "Y is not claimed");
        // Its next message, even with no changes, releases Y, checked, to be stored.
        let empty = device
            .sync()
            .generate_sync_message(&mut State::new())
            .expect("a message");
        let empty = Message {
            changes: Vec::<Vec<u8>>::new().into(),
            ..empty
        };
        let released =
            prepare(&mut server, &waiting_peer, &empty.encode(), &Anyone).expect("taken");
        assert_eq!(released.new_changes, 1, "Y, now that X is here");
        let chunk = released.chunk.clone();
        released.commit(&mut server, &mut waiting_peer);
        assert!(waiting_peer.waiting.is_empty());
        assert!(server.get_change_by_hash(&y).is_some());
        let mut stored = base.clone().save();
        stored.extend_from_slice(&raw(&mut device, &x));
        stored.extend_from_slice(&chunk);
        let mut reloaded = AutoCommit::load(&stored).expect("loads");
        assert!(reloaded.get_change_by_hash(&y).is_some());
    }
}
