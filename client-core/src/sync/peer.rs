//! Applying a peer's sync message safely: on a copy, checked, then committed.
//!
//! Both sides use this. The message is applied to a clone of the document; the new changes' authors
//! and the resulting document are checked; only then may the caller persist the new changes and swap
//! the clone in. A refused message leaves the document and the sync state exactly as they were, and a
//! failed write to disk can be handled by simply dropping the [`Prepared`] value.

use automerge::sync::{Message, State, SyncDoc};
use automerge::{ActorId, AutoCommit, ChangeHash};

use crate::model::guard::NewOps;
use crate::model::{validate_document, SchemaError};

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
    /// The result breaks a rule of the caller's policy (case id or team changed, too large).
    #[error("{0}")]
    Policy(String),
    /// The changes remove something the record held (the server's append-only rule).
    #[error("{0}")]
    Removes(String),
    /// The changes write a name or device into the record that is not the sender's.
    #[error("{0}")]
    Impersonates(String),
    /// A change says it was made at a time the policy does not accept (the server's rule for a
    /// case that moved away from the sender: only what it wrote before it was told).
    #[error("{0}")]
    MadeTooLate(String),
}

/// What a side checks before accepting changes.
pub trait CasePolicy {
    /// May changes by this actor be accepted?
    fn author_allowed(&self, actor: &ActorId) -> bool;
    /// May a new change by `actor` that says it was made at `time` be accepted? `time` is in
    /// milliseconds since the Unix epoch, written by the device that made the change (its clock,
    /// or anything a modified client chose), and 0 when the change carries none. Asked of every
    /// new change, beside [`CasePolicy::author_allowed`]. Any time by default.
    fn time_allowed(&self, actor: &ActorId, time: i64) -> Result<(), String> {
        let _ = (actor, time);
        Ok(())
    }
    /// Extra checks on the resulting (already shape-validated) document.
    fn check(&self, doc: &AutoCommit) -> Result<(), String>;
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

/// A message applied to a copy, ready to commit.
pub struct Prepared {
    /// The new document, if the message carried new changes (or changes automerge queued until
    /// their dependencies arrive).
    pub doc: Option<AutoCommit>,
    /// The sync state after the message.
    pub state: State,
    /// The new changes, encoded for appending to the store (empty if none).
    pub chunk: Vec<u8>,
    /// How many new changes.
    pub new_changes: usize,
    /// The new changes' actors (for audit and attribution).
    pub actors: Vec<ActorId>,
}

impl Prepared {
    /// Swap the prepared document and state in.
    pub fn commit(self, doc: &mut AutoCommit, state: &mut State) {
        if let Some(d) = self.doc {
            *doc = d;
        }
        *state = self.state;
    }
}

/// Let automerge take in a peer's message, turning a panic inside automerge into a refusal.
///
/// automerge 0.12 decodes some malformed chunks by unwrapping (hexane 1.0.0-alpha.5 panics on a
/// bundle whose column ends inside a number; found by fuzzing `document_load`). A peer's bytes must
/// never take a session down, and on the server never poison the lock of a case every session
/// shares (which left the whole team unable to sync until a restart). The document given is the
/// copy being prepared, or one with no changes to apply, so nothing half-applied survives.
fn receive(doc: &mut AutoCommit, state: &mut State, msg: Message) -> Result<(), ApplyError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        doc.sync().receive_sync_message(state, msg)
    }))
    .map_err(|_| ApplyError::Decode("automerge could not decode the changes".into()))?
    .map_err(|e| ApplyError::Automerge(e.to_string()))
}

/// Apply `message` to a copy of `doc`, check it, and return what to commit.
pub fn prepare(
    doc: &mut AutoCommit,
    state: &State,
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
    let mut state = state.clone();
    if msg.changes.is_empty() {
        // No changes: only the sync state moves, the document cannot.
        receive(doc, &mut state, msg)?;
        return Ok(Prepared {
            doc: None,
            state,
            chunk: Vec::new(),
            new_changes: 0,
            actors: Vec::new(),
        });
    }
    let old_heads = doc.get_heads();
    // Changes an earlier message left waiting for a dependency (see below) apply with this one,
    // and are not in this message's chunks.
    let had_queued = !doc.get_missing_deps(&[]).is_empty();
    // The message's own chunks, as the peer's automerge encoded them (a compressed whole document
    // on a first sync, change chunks after). See below for when they are what the store keeps.
    let raw: Vec<u8> = msg.changes.iter().flatten().copied().collect();
    let mut copy = doc.clone();
    receive(&mut copy, &mut state, msg)?;
    // Only each new change's author, time and hash are needed: the metadata, not the encoded
    // changes.
    let mut ops = NewOps::default();
    let new: Vec<(ActorId, ChangeHash, i64)> = copy
        .get_changes_meta(&old_heads)
        .into_iter()
        .map(|c| {
            ops.add(c.actor.clone().into_owned(), c.start_op, c.max_op);
            ops.add_message(c.message.as_deref().map(str::to_string));
            (c.actor.into_owned(), c.hash, c.timestamp)
        })
        .collect();
    if new.is_empty() {
        // The message's changes may all wait on a dependency the peer has not sent (it skipped it
        // on a Bloom filter false positive). automerge queues them and asks for the dependency;
        // keep that queue, or the peer, which believes it sent them, never sends them again and
        // the two sides ask each other forever. Queued changes are checked when they apply.
        let queued = !copy.get_missing_deps(&[]).is_empty();
        return Ok(Prepared {
            doc: queued.then_some(copy),
            state,
            chunk: Vec::new(),
            new_changes: 0,
            actors: Vec::new(),
        });
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
    // With nothing left waiting for a dependency, every change in the message is now either applied
    // (and checked above) or was already held (and checked when it arrived), so the message's
    // chunks hold exactly checked changes: store them as they are. `AutoCommit::load` reads any
    // sequence of document and change chunks, duplicates included. Re-encoding with `save_after`
    // costs more than applying (about 3 ms for a care record) and writes an uncompressed chunk
    // about 5 times larger. Changes still waiting must never reach the disk unchecked, and changes
    // queued by an earlier message apply now but are not in this message's chunks: in either case
    // the new changes are encoded instead.
    let chunk = if !had_queued && copy.get_missing_deps(&[]).is_empty() {
        raw
    } else {
        copy.save_after(&old_heads)
    };
    Ok(Prepared {
        doc: Some(copy),
        state,
        chunk,
        new_changes: new.len(),
        actors,
    })
}
