//! The case record: one automerge document per person.
//!
//! A case holds the person, the network they chose, the care team, the timeline of the episode, the
//! meetings (with notes and reflections as automerge Text, so two practitioners typing offline both
//! keep their words) and the decisions (with every participant's position, disagreement included).
//!
//! Three rules shape this module:
//! - **Every change is attributable.** [`CaseDoc`] writes each user action as one automerge change
//!   whose actor is the device and whose message names the practitioner; entries also carry
//!   `created_by`/`created_at` so attribution survives export.
//! - **Nothing clinical is hard-deleted.** There is no delete in the API: entries are marked
//!   [`EnteredInError`](view::ErrorMark) with who, when and why, and stay readable; network members
//!   leave, they are not removed.
//! - **Conflicts are shown, not hidden.** Where two devices set the same field concurrently automerge
//!   keeps both values; [`CaseDoc::conflicts`] lists them with their authors and
//!   [`CaseDoc::resolve`] records the user's pick as a change of its own.
//!
//! [`schema::validate_document`] checks the whole document shape, so the server can refuse malformed
//! documents from a buggy or hostile client before it stores anything.

pub mod attachments;
mod conflicts;
mod doc;
mod figures;
pub mod guard;
pub mod keys;
pub mod local_time;
pub mod plan;
mod read;
pub mod readback;
pub mod referrals;
pub mod schema;
pub mod team_notes;
pub mod timeline;
mod types;
pub mod view;
pub mod work;

#[cfg(test)]
mod attachments_tests;
#[cfg(test)]
mod evolution_tests;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod referrals_tests;
#[cfg(test)]
mod staff_tests;
#[cfg(test)]
mod team_notes_tests;
#[cfg(test)]
mod tests;

pub use attachments::{AttachmentView, NewAttachment, MAX_ATTACHMENT_BYTES};
pub use conflicts::{Conflict, ConflictValue};
pub use doc::{CaseDoc, NewCase, NewMeeting, NewMember};
pub use figures::CaseFigures;
pub use local_time::LocalZone;
pub use plan::{CrisisPlanView, PlanItemView, PlanReviewView, PlanVersionView};
pub use referrals::{Episode, NewReferral, ReferralView};
pub use schema::{validate_document, SchemaError};
pub use team_notes::{TeamNoteView, WithholdingView};
pub use timeline::{short, EventKind, Names, Timeline, TimelineEvent};
pub use types::*;
pub use view::CaseView;

/// What can go wrong when reading or changing a case, in words a practitioner can act on.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The NHS number is malformed or fails its check digit.
    #[error("'{input}' is not a valid NHS number: {reason}")]
    InvalidNhsNumber {
        /// What was typed.
        input: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A date or time did not parse or is impossible.
    #[error("'{input}' is not a valid {field}: use {expected}")]
    InvalidDate {
        /// The field being set.
        field: &'static str,
        /// What was typed.
        input: String,
        /// The expected form.
        expected: &'static str,
    },
    /// A local time that did not happen, or happened twice, where the clocks change.
    #[error("'{input}' is not a valid {field}: {reason}")]
    LocalTime {
        /// The field being set.
        field: &'static str,
        /// What was typed.
        input: String,
        /// What is wrong and what to type instead.
        reason: String,
    },
    /// A time zone name the bundled database does not know.
    #[error("'{0}' is not a time zone this app knows: use an IANA name such as Europe/London")]
    UnknownTimeZone(String),
    /// A value outside a fixed list.
    #[error("'{value}' is not a valid {field}: choose one of {allowed}")]
    InvalidChoice {
        /// The field being set.
        field: &'static str,
        /// What was given.
        value: String,
        /// The allowed values.
        allowed: String,
    },
    /// A required field was empty.
    #[error("{field} is required and cannot be empty")]
    Required {
        /// The field.
        field: &'static str,
    },
    /// A value is too long to be a plausible entry.
    #[error("{field} is too long ({len} characters; at most {max})")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No entry with that id in this case.
    #[error("there is no {kind} {id} in this case (list them with `case show`)")]
    UnknownEntry {
        /// What was looked for.
        kind: &'static str,
        /// The id given.
        id: String,
    },
    /// The entry was marked entered in error and can no longer be changed.
    #[error("{kind} {id} was marked entered in error and can no longer be changed; add a new one instead")]
    EntryInError {
        /// What kind of entry.
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// The entry is already marked entered in error.
    #[error("entry {id} is already marked entered in error")]
    AlreadyInError {
        /// Its id.
        id: String,
    },
    /// A meeting in the future cannot have been held (or missed) yet.
    #[error("the meeting is on {at}, which has not come yet: it can only be planned or cancelled")]
    MeetingNotYet {
        /// When it is, in words.
        at: String,
    },
    /// A decision can only be agreed when the person agreed.
    #[error(
        "a decision is agreed only when the person themself agrees: record their position first"
    )]
    PersonHasNotAgreed,
    /// A decision taken by the team while the person disagrees needs their recorded position
    /// and a reason.
    #[error("{0}")]
    TeamDecision(&'static str),
    /// Withholding a note from the person's copy was asked or confirmed out of turn.
    #[error("{0}")]
    Withholding(&'static str),
    /// A file cannot be attached (its kind, or its size).
    #[error("{0}")]
    Attachment(String),
    /// A referral or a closure cannot be recorded as given.
    #[error("{0}")]
    Referral(String),
    /// The member has already left the network.
    #[error("network member {id} already left on {left}")]
    AlreadyLeft {
        /// Member id.
        id: String,
        /// When they left.
        left: String,
    },
    /// No conflict at that field.
    #[error("there is no conflict at '{field}' (list them with `conflicts`)")]
    NoConflict {
        /// The field path.
        field: String,
    },
    /// The pick is not one of the listed values.
    #[error("choice {pick} is out of range: '{field}' has {count} values (1 to {count})")]
    PickOutOfRange {
        /// The field path.
        field: String,
        /// What was picked.
        pick: usize,
        /// How many values there are.
        count: usize,
    },
    /// A write was attempted without an author (read-only use, e.g. on the server).
    #[error("this case was opened read-only: no practitioner is set to sign changes")]
    NoAuthor,
    /// The document does not have the shape of a case record.
    #[error("the document is not a valid case record: {0}")]
    Schema(#[from] SchemaError),
    /// The bytes are not an automerge document.
    #[error("the case data could not be read: {0}")]
    Corrupt(String),
    /// automerge refused an operation (a bug, reported rather than hidden).
    #[error("internal record error: {0}")]
    Automerge(#[from] automerge::AutomergeError),
}

/// Whether `bytes` are automerge chunks of the kinds Polyphony stores and sends: whole documents,
/// changes and compressed changes, each complete.
///
/// automerge's sync never sends the fourth kind, bundles, and automerge 0.12 decodes them with
/// code that panics or asks for gigabytes on malformed input (both found by fuzzing; one 209-byte
/// chunk made it allocate 2 GiB). Bytes from a peer or a file are screened with this before
/// automerge parses them, so such a chunk is refused unread.
pub(crate) fn only_document_and_change_chunks(bytes: &[u8]) -> bool {
    const DOCUMENT_CHANGE_OR_COMPRESSED: std::ops::RangeInclusive<u8> = 0..=2;
    split_chunks(bytes).is_some_and(|chunks| {
        chunks
            .iter()
            .all(|(kind, _)| DOCUMENT_CHANGE_OR_COMPRESSED.contains(kind))
    })
}

/// The automerge chunks `bytes` holds, each with its kind (0 document, 1 change, 2 compressed
/// change, 3 bundle), read from the headers alone; `None` if a header is malformed or a chunk
/// runs past the end.
pub(crate) fn split_chunks(mut bytes: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
    let mut chunks = Vec::new();
    while !bytes.is_empty() {
        // Header: magic (4 bytes), checksum (4), kind (1), body length (unsigned LEB128).
        if bytes.len() < 9 || bytes[..4] != MAGIC {
            return None;
        }
        let (len, at) = read_uleb128(bytes, 9)?;
        let end = usize::try_from(len).ok().and_then(|l| at.checked_add(l))?;
        chunks.push((bytes[8], bytes.get(..end)?));
        bytes = bytes.get(end..)?;
    }
    Some(chunks)
}

/// The unsigned LEB128 number at `bytes[at..]` and the position after it, or `None` if the bytes
/// end inside it or it does not fit in 64 bits.
pub(crate) fn read_uleb128(bytes: &[u8], mut at: usize) -> Option<(u64, usize)> {
    let (mut value, mut shift) = (0u64, 0u32);
    loop {
        let &b = bytes.get(at)?;
        if shift > 63 {
            return None;
        }
        value |= u64::from(b & 0x7f) << shift;
        at += 1;
        if b & 0x80 == 0 {
            return Some((value, at));
        }
        shift += 7;
    }
}

/// The length limit on short fields (names, relationships, phone numbers).
pub const MAX_SHORT: usize = 500;
/// The length limit on long texts (a meeting's notes, a decision's text).
pub const MAX_LONG: usize = 200_000;
