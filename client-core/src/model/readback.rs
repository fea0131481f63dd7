//! What changed in a meeting's notes after they were read back.
//!
//! At the end of an Open Dialogue meeting the notes are read aloud and each participant confirms
//! them or adds their words. Each answer records the version of the document they heard (its heads,
//! schema 2). Notes can still be edited afterwards (a typo, a line remembered on the way home), but
//! a copy must never present later words as confirmed: every insertion or deletion made after the
//! first read-back is listed with who made it and when, and every copy shows it as "added after the
//! meeting".
//!
//! Finding them needs the document's history. The common case (notes untouched since the read-back)
//! costs one historical read per text; only when a text differs is the history walked, and only
//! changes that touched the meeting's texts are compared.

use automerge::{AutoCommit, ChangeHash, ObjId, ReadDoc};
use serde::{Deserialize, Serialize};

use super::read::{from_ms, map_at};
use super::types::*;

/// One change to a meeting's texts made after the read-back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaterChange {
    /// Which text: `notes`, `reflections` or `agreed`.
    pub part: NoteKind,
    /// Who changed it.
    pub by: Option<AuthorView>,
    /// When (RFC 3339).
    pub at: Option<String>,
    /// Words added, each run as it reads now.
    pub added: Vec<String>,
    /// Words taken out, each run as it read before.
    pub removed: Vec<String>,
}

/// Parse a stored `heard` value (space-separated hex change hashes).
pub(super) fn parse_heads(s: &str) -> Option<Vec<ChangeHash>> {
    if !super::schema::is_heads(s) {
        return None;
    }
    s.split(' ').map(|h| h.parse().ok()).collect()
}

/// Store heads as a `heard` value.
pub(super) fn format_heads(heads: &[ChangeHash]) -> String {
    heads
        .iter()
        .map(|h| h.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The changes to meeting `m`'s texts that are not in the version `heard`, oldest first.
pub(super) fn changes_after(doc: &AutoCommit, m: &ObjId, heard: &[ChangeHash]) -> Vec<LaterChange> {
    let texts: Vec<(NoteKind, ObjId)> = NoteKind::ALL
        .iter()
        .filter_map(|k| Some((*k, map_at(doc, m, k.as_str())?)))
        .collect();
    let changed: Vec<&(NoteKind, ObjId)> = texts
        .iter()
        .filter(|(_, t)| doc.text_at(t, heard).ok() != doc.text(t).ok())
        .collect();
    if changed.is_empty() {
        return vec![];
    }
    // Listing changes needs `&mut` (automerge closes any open transaction first); a clone keeps
    // the view a pure read, and is paid only when a text changed after its read-back.
    let mut full = doc.clone();
    let mut out = Vec::new();
    for change in full.get_changes(heard) {
        let ops = change.decode().operations;
        for (kind, t) in &changed {
            let id = t.to_string();
            let touches = ops.iter().any(|op| match &op.obj {
                automerge::legacy::ObjectId::Id(o) => o.to_string() == id,
                automerge::legacy::ObjectId::Root => false,
            });
            if !touches {
                continue;
            }
            let before = doc.text_at(t, change.deps()).unwrap_or_default();
            let after = doc.text_at(t, &[change.hash()]).unwrap_or_default();
            let (added, removed) = runs(&before, &after);
            if added.is_empty() && removed.is_empty() {
                continue;
            }
            out.push(LaterChange {
                part: *kind,
                by: super::read::change_author(doc, &change),
                at: Some(format_instant(from_ms(change.timestamp()))),
                added,
                removed,
            });
        }
    }
    out
}

/// The runs of text inserted and deleted between two versions.
fn runs(before: &str, after: &str) -> (Vec<String>, Vec<String>) {
    (
        join_runs(before, after, similar::ChangeTag::Insert),
        join_runs(before, after, similar::ChangeTag::Delete),
    )
}

/// Runs of inserted or deleted words (`want`), each joined: the diff yields one word (or space)
/// at a time. Words, not characters: a character diff of "Work is hard" against "Remembered on
/// the way home" finds the letters they share and reports "Remembe", "ed", "e w"... which no
/// reader of a copy can follow. A space both versions share does not end a run, so a sentence
/// added reads as one.
fn join_runs(before: &str, after: &str, want: similar::ChangeTag) -> Vec<String> {
    let diff = similar::TextDiff::from_words(before, after);
    let mut out = Vec::new();
    let mut run = String::new();
    let mut space = String::new();
    for op in diff.ops() {
        for change in diff.iter_changes(op) {
            let value = change.value();
            if change.tag() == want {
                run.push_str(&std::mem::take(&mut space));
                run.push_str(value);
            } else if change.tag() == similar::ChangeTag::Equal && !run.is_empty() {
                if value.trim().is_empty() {
                    space.push_str(value);
                } else {
                    space.clear();
                    out.push(std::mem::take(&mut run));
                }
            }
        }
    }
    if !run.is_empty() {
        out.push(run);
    }
    out.into_iter()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect()
}
