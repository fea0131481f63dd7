//! The team's safety notes (schema 3): a home-visit safety note (lone working) and a
//! safeguarding concern. Both are shown to the person, like everything else in the record.
//! Withholding one from the person's copy takes a recorded reason from one practitioner and the
//! confirmation of a second: until a different practitioner confirms, the note stays in every
//! copy. The server audits each withholding it receives (see [`withheld_ids`]), and the
//! subject-access export lists every withheld note as withheld. Nothing else in the record can
//! be withheld from the person.
//!
//! In the document: `team_notes` at the root, entries keyed by id, each with `kind`, `text` and,
//! once asked, `withholding` (`reason`, `by`, `at`) and, once confirmed, `withholding_confirmed`
//! (`by`, `at`): beside the request, not inside it, since a record stamped by one practitioner is
//! never written into by another (`guard::records_kept`). A case
//! created by schema 3 has the map from the start; an older case gets it with its first note,
//! and every concurrent map is read.

use std::collections::BTreeSet;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, ReadDoc, Value, ROOT};
use serde::{Deserialize, Serialize};

use super::doc::CaseDoc;
use super::read::{author, get_str, instant, map_at, ts};
use super::schema::keys;
use super::types::*;
use super::view::EntryMeta;
use super::ModelError;
use crate::EntryId;

/// A request to withhold a note from the person's copy, and its confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithholdingView {
    /// Why, in the words of who asked.
    pub reason: String,
    /// Who asked.
    pub by: Option<AuthorView>,
    /// When (RFC 3339).
    pub at: Option<String>,
    /// The second practitioner who confirmed, if one has.
    pub confirmed_by: Option<AuthorView>,
    /// When they confirmed (RFC 3339).
    pub confirmed_at: Option<String>,
}

impl WithholdingView {
    /// Confirmed by a practitioner other than the one who asked: only then is the note withheld.
    pub fn in_force(&self) -> bool {
        match (&self.by, &self.confirmed_by) {
            (Some(asked), Some(confirmed)) => asked.practitioner != confirmed.practitioner,
            _ => false,
        }
    }
}

/// A safety note or a safeguarding concern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamNoteView {
    /// Attribution.
    #[serde(flatten)]
    pub meta: EntryMeta,
    /// Which kind of note.
    pub kind: Stored<TeamNoteKind>,
    /// What it says.
    pub text: String,
    /// The request to withhold it from the person's copy, if one was made.
    pub withholding: Option<WithholdingView>,
}

impl TeamNoteView {
    /// Withheld from the person's copy (asked, with a reason, and confirmed by a second
    /// practitioner).
    pub fn withheld_from_person(&self) -> bool {
        self.withholding
            .as_ref()
            .is_some_and(WithholdingView::in_force)
    }
}

impl CaseDoc {
    /// Write a safety note or a safeguarding concern. Returns its id.
    pub fn add_team_note(&mut self, kind: TeamNoteKind, text: &str) -> Result<EntryId, ModelError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ModelError::Required { field: "note" });
        }
        super::doc::check_long("note", text)?;
        let id = EntryId::random();
        self.write(
            &format!("add {}", kind.as_str().replace('_', " ")),
            |d, a, t| {
                let notes = match map_at(d, &ROOT, keys::TEAM_NOTES) {
                    Some(n) => n,
                    None => d.put_object(ROOT, keys::TEAM_NOTES, ObjType::Map)?,
                };
                let e = super::doc::new_entry(d, &notes, &id, a, t)?;
                d.put(&e, keys::KIND, kind.as_str())?;
                d.put(&e, keys::TEXT, text)?;
                Ok(id)
            },
        )
    }

    /// Ask for a note to be withheld from the person's copy, saying why. It stays in every copy
    /// until a second practitioner confirms ([`CaseDoc::confirm_withholding`]).
    pub fn request_withholding(&mut self, note: &EntryId, reason: &str) -> Result<(), ModelError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(ModelError::Required {
                field: "reason for withholding",
            });
        }
        super::doc::check_long("reason for withholding", reason)?;
        let e = self.live_team_note(note)?;
        if map_at(&self.doc, &e, keys::WITHHOLDING).is_some() {
            return Err(ModelError::Withholding(
                "withholding this note has been asked for already: a second practitioner confirms it",
            ));
        }
        self.write(
            "ask to withhold a note from the person's copy",
            |d, a, t| {
                let w = d.put_object(&e, keys::WITHHOLDING, ObjType::Map)?;
                d.put(&w, keys::REASON, reason)?;
                super::doc::stamp(d, &w, keys::BY, keys::AT, a, t)?;
                Ok(())
            },
        )
    }

    /// Confirm, as a second practitioner, that a note is withheld from the person's copy.
    pub fn confirm_withholding(&mut self, note: &EntryId) -> Result<(), ModelError> {
        let e = self.live_team_note(note)?;
        let Some(w) = map_at(&self.doc, &e, keys::WITHHOLDING) else {
            return Err(ModelError::Withholding(
                "nobody has asked for this note to be withheld: ask first, with the reason",
            ));
        };
        if map_at(&self.doc, &e, keys::WITHHOLDING_CONFIRMED).is_some() {
            return Err(ModelError::Withholding(
                "the withholding is confirmed already",
            ));
        }
        let me = self.author().ok_or(ModelError::NoAuthor)?.practitioner;
        let asked = author(&self.doc, &w, keys::BY).map(|a| a.practitioner);
        if asked.as_deref() == Some(me.to_string().as_str()) {
            return Err(ModelError::Withholding(
                "a second practitioner must confirm: you asked for it to be withheld",
            ));
        }
        self.write(
            "confirm withholding a note from the person's copy",
            |d, a, t| {
                let c = d.put_object(&e, keys::WITHHOLDING_CONFIRMED, ObjType::Map)?;
                super::doc::stamp(d, &c, keys::BY, keys::AT, a, t)?;
                Ok(())
            },
        )
    }

    fn live_team_note(&self, note: &EntryId) -> Result<ObjId, ModelError> {
        let e = note_maps(&self.doc)
            .into_iter()
            .find_map(|m| map_at(&self.doc, &m, &note.to_string()))
            .ok_or_else(|| ModelError::UnknownEntry {
                kind: "note",
                id: note.to_string(),
            })?;
        if self.in_error(&e) {
            return Err(ModelError::EntryInError {
                kind: "note",
                id: note.to_string(),
            });
        }
        Ok(e)
    }
}

/// Every concurrent `team_notes` map.
pub(super) fn note_maps(d: &impl ReadDoc) -> Vec<ObjId> {
    d.get_all(ROOT, keys::TEAM_NOTES)
        .unwrap_or_default()
        .into_iter()
        .filter(|(v, _)| matches!(v, Value::Object(ObjType::Map)))
        .map(|(_, id)| id)
        .collect()
}

fn withholding(d: &impl ReadDoc, e: &ObjId) -> Option<WithholdingView> {
    let w = map_at(d, e, keys::WITHHOLDING)?;
    let c = map_at(d, e, keys::WITHHOLDING_CONFIRMED);
    Some(WithholdingView {
        reason: get_str(d, &w, keys::REASON).unwrap_or_default(),
        by: author(d, &w, keys::BY),
        at: ts(d, &w, keys::AT),
        confirmed_by: c.as_ref().and_then(|c| author(d, c, keys::BY)),
        confirmed_at: c.as_ref().and_then(|c| ts(d, c, keys::AT)),
    })
}

/// The notes as the document holds them (before withholding), oldest first.
pub(super) fn team_notes(d: &impl ReadDoc) -> Vec<TeamNoteView> {
    let mut out: Vec<TeamNoteView> = Vec::new();
    for m in note_maps(d) {
        for k in d.keys(&m) {
            let (Ok(id), Some(e)) = (k.parse::<EntryId>(), map_at(d, &m, &k)) else {
                continue;
            };
            if out.iter().any(|n| n.meta.id == id) {
                continue;
            }
            out.push(TeamNoteView {
                meta: super::view::meta(d, id, &e),
                kind: Stored::read(get_str(d, &e, keys::KIND)),
                text: get_str(d, &e, keys::TEXT).unwrap_or_default(),
                withholding: withholding(d, &e),
            });
        }
    }
    out.sort_by_key(|n| (instant(&n.meta.created_at), n.meta.id));
    out
}

/// The notes withheld from the person's copy (asked and confirmed by two practitioners): the
/// server compares these before and after a device's changes, and audits each new one.
pub fn withheld_ids(d: &AutoCommit) -> BTreeSet<EntryId> {
    withheld_notes(d).into_iter().map(|n| n.meta.id).collect()
}

/// The notes withheld from the person's copy, with who asked and who confirmed.
pub fn withheld_notes(d: &AutoCommit) -> Vec<TeamNoteView> {
    team_notes(d)
        .into_iter()
        .filter(TeamNoteView::withheld_from_person)
        .collect()
}

/// The audit line for a note newly withheld: which note, what kind, who asked and who
/// confirmed (never its words or the reason: the audit log holds no clinical text).
pub fn withheld_audit_line(n: &TeamNoteView) -> String {
    let who = |a: &Option<AuthorView>| {
        a.as_ref()
            .map(|a| format!("{} ({})", a.practitioner_name, a.practitioner))
            .unwrap_or_else(|| "unknown".into())
    };
    let w = n.withholding.as_ref();
    format!(
        "note {} ({}) withheld from the person's copy: asked by {}, confirmed by {}",
        n.meta.id,
        n.kind,
        who(&w.and_then(|w| w.by.clone())),
        who(&w.and_then(|w| w.confirmed_by.clone()))
    )
}

/// A note on the wrong person's record (or with a mark this version cannot read): nothing of it.
pub(super) fn withhold(notes: &mut [TeamNoteView], ids: &mut Vec<String>) {
    for n in notes.iter_mut().filter(|n| n.meta.withheld()) {
        ids.push(n.meta.id.to_string());
        n.text.clear();
        n.kind = Stored::Missing;
        n.withholding = None;
    }
}

/// The record as the person may read it: a note withheld from them (asked with a reason and
/// confirmed by a second practitioner) keeps its place, kind, dates and who asked and confirmed,
/// but not its words nor the reason. Every copy made for the person goes through this.
pub fn redact_for_person(view: &mut super::view::CaseView) {
    for n in view
        .team_notes
        .iter_mut()
        .filter(|n| n.withheld_from_person())
    {
        n.text.clear();
        if let Some(w) = n.withholding.as_mut() {
            w.reason.clear();
        }
    }
}
