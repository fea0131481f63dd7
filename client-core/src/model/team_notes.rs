//! The team's safety notes (schema 3): a home-visit safety note (lone working) and a
//! safeguarding concern. Both are shown to the person, like everything else in the record.
//! Withholding one from the person's copy takes a recorded reason from one practitioner and the
//! confirmation of a second: until a different practitioner confirms that request, the note stays
//! in every copy. Any practitioner may lift a withholding, with the reason, and the note is back
//! in the person's copy. The server audits each withholding and each lifting it receives, before
//! it stores the change (see [`withholding_changes`]); the subject-access export lists every
//! withheld note as withheld. Nothing else in the record can be withheld from the person.
//!
//! In the document: `team_notes` at the root, entries keyed by id, each with `kind`, `text` and
//! `withholding`, a list made with the note to which events are only ever appended: `ask` (with
//! its own `id` and the `reason`), `confirm` and `lift` (each naming the `request` it answers;
//! a lift with its `reason`), each stamped `by` and `at`. A confirmation is bound to the request
//! it confirms, so concurrent requests from two devices can neither undo a withholding nor put a
//! reason nobody confirmed in its place. A case created by schema 3 has the `team_notes` map from
//! the start; an older case gets it with its first note, and every concurrent map is read.

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

/// A request to withhold a note from the person's copy, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithholdingView {
    /// The request's id.
    pub id: String,
    /// Why, in the words of who asked (empty in copies made for the person).
    pub reason: String,
    /// Who asked.
    pub by: Option<AuthorView>,
    /// When (RFC 3339).
    pub at: Option<String>,
    /// The second practitioner who confirmed this request, if one has.
    pub confirmed_by: Option<AuthorView>,
    /// When they confirmed (RFC 3339).
    pub confirmed_at: Option<String>,
    /// Who lifted it, if someone has: the note is in the person's copy again.
    pub lifted_by: Option<AuthorView>,
    /// When (RFC 3339).
    pub lifted_at: Option<String>,
    /// Why it was lifted (empty in copies made for the person).
    pub lift_reason: String,
}

impl WithholdingView {
    /// Confirmed by a practitioner other than the one who asked.
    pub fn confirmed(&self) -> bool {
        match (&self.by, &self.confirmed_by) {
            (Some(asked), Some(confirmed)) => asked.practitioner != confirmed.practitioner,
            _ => false,
        }
    }

    /// Confirmed and not lifted: the note is withheld.
    pub fn in_force(&self) -> bool {
        self.confirmed() && self.lifted_by.is_none()
    }

    /// Asked, not yet confirmed by a second practitioner, not lifted.
    pub fn pending(&self) -> bool {
        !self.confirmed() && self.lifted_by.is_none()
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
    /// Every request to withhold it from the person's copy, oldest first.
    pub withholding: Vec<WithholdingView>,
}

impl TeamNoteView {
    /// Withheld from the person's copy (a request confirmed by a second practitioner, not
    /// lifted).
    pub fn withheld_from_person(&self) -> bool {
        self.withholding.iter().any(WithholdingView::in_force)
    }

    /// The request in force, if any.
    pub fn in_force(&self) -> Option<&WithholdingView> {
        self.withholding.iter().rev().find(|w| w.in_force())
    }

    /// The newest request waiting for a second practitioner, if any.
    pub fn pending(&self) -> Option<&WithholdingView> {
        self.withholding.iter().rev().find(|w| w.pending())
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
                // Made with the note, so every device appends to one list.
                d.put_object(&e, keys::WITHHOLDING, ObjType::List)?;
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
        let (e, view) = self.live_team_note(note)?;
        if view.withheld_from_person() {
            return Err(ModelError::Withholding("this note is withheld already"));
        }
        if view.pending().is_some() {
            return Err(ModelError::Withholding(
                "withholding this note has been asked for already: a second practitioner confirms it",
            ));
        }
        let id = EntryId::random();
        self.append_event(
            &e,
            "ask for a note to be withheld from the person's copy",
            |d, ev| {
                d.put(ev, keys::EVENT, WithholdingEvent::Ask.as_str())?;
                d.put(ev, keys::ID, id.to_string())?;
                d.put(ev, keys::REASON, reason)?;
                Ok(())
            },
        )
    }

    /// Confirm, as a second practitioner, the request to withhold a note from the person's copy.
    pub fn confirm_withholding(&mut self, note: &EntryId) -> Result<(), ModelError> {
        let (e, view) = self.live_team_note(note)?;
        if view.withheld_from_person() {
            return Err(ModelError::Withholding(
                "the withholding is confirmed already",
            ));
        }
        let me = self
            .author()
            .ok_or(ModelError::NoAuthor)?
            .practitioner
            .to_string();
        let pending: Vec<&WithholdingView> =
            view.withholding.iter().filter(|w| w.pending()).collect();
        let Some(request) = pending
            .iter()
            .rev()
            .find(|w| w.by.as_ref().map(|a| &a.practitioner) != Some(&me))
        else {
            return Err(ModelError::Withholding(if pending.is_empty() {
                "nobody has asked for this note to be withheld: ask first, with the reason"
            } else {
                "a second practitioner must confirm: you asked for it to be withheld"
            }));
        };
        let request = request.id.clone();
        self.append_event(
            &e,
            "confirm withholding a note from the person's copy",
            |d, ev| {
                d.put(ev, keys::EVENT, WithholdingEvent::Confirm.as_str())?;
                d.put(ev, keys::REQUEST, request.as_str())?;
                Ok(())
            },
        )
    }

    /// Lift a withholding, saying why: the note is in the person's copy again.
    pub fn lift_withholding(&mut self, note: &EntryId, reason: &str) -> Result<(), ModelError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(ModelError::Required {
                field: "reason for lifting the withholding",
            });
        }
        super::doc::check_long("reason for lifting the withholding", reason)?;
        let (e, view) = self.live_team_note(note)?;
        let Some(request) = view.in_force().map(|w| w.id.clone()) else {
            return Err(ModelError::Withholding("this note is not withheld"));
        };
        self.append_event(
            &e,
            "lift withholding a note from the person's copy",
            |d, ev| {
                d.put(ev, keys::EVENT, WithholdingEvent::Lift.as_str())?;
                d.put(ev, keys::REQUEST, request.as_str())?;
                d.put(ev, keys::REASON, reason)?;
                Ok(())
            },
        )
    }

    fn append_event(
        &mut self,
        note: &ObjId,
        what: &str,
        f: impl FnOnce(&mut AutoCommit, &ObjId) -> Result<(), ModelError>,
    ) -> Result<(), ModelError> {
        self.write(what, |d, a, t| {
            let list = match d.get(note, keys::WITHHOLDING)? {
                Some((Value::Object(ObjType::List), l)) => l,
                _ => d.put_object(note, keys::WITHHOLDING, ObjType::List)?,
            };
            let at = d.length(&list);
            let ev = d.insert_object(&list, at, ObjType::Map)?;
            f(d, &ev)?;
            super::doc::stamp(d, &ev, keys::BY, keys::AT, a, t)?;
            Ok(())
        })
    }

    fn live_team_note(&self, note: &EntryId) -> Result<(ObjId, TeamNoteView), ModelError> {
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
        let view = team_note(&self.doc, *note, &e);
        Ok((e, view))
    }
}

/// Every concurrent `team_notes` map.
pub(crate) fn note_maps(d: &impl ReadDoc) -> Vec<ObjId> {
    d.get_all(ROOT, keys::TEAM_NOTES)
        .unwrap_or_default()
        .into_iter()
        .filter(|(v, _)| matches!(v, Value::Object(ObjType::Map)))
        .map(|(_, id)| id)
        .collect()
}

/// One event of a note's withholding list, as read.
struct Event {
    kind: Stored<WithholdingEvent>,
    id: Option<String>,
    request: Option<String>,
    reason: String,
    by: Option<AuthorView>,
    at: Option<String>,
}

/// Every request of a note, with its confirmation and lifting, from every concurrent list.
fn withholding(d: &impl ReadDoc, e: &ObjId) -> Vec<WithholdingView> {
    let mut events: Vec<Event> = Vec::new();
    for (value, list) in d.get_all(e, keys::WITHHOLDING).unwrap_or_default() {
        if !matches!(value, Value::Object(ObjType::List)) {
            continue;
        }
        for i in 0..d.length(&list) {
            if let Ok(Some((Value::Object(ObjType::Map), ev))) = d.get(&list, i) {
                events.push(Event {
                    kind: Stored::read(get_str(d, &ev, keys::EVENT)),
                    id: get_str(d, &ev, keys::ID),
                    request: get_str(d, &ev, keys::REQUEST),
                    reason: get_str(d, &ev, keys::REASON).unwrap_or_default(),
                    by: author(d, &ev, keys::BY),
                    at: ts(d, &ev, keys::AT),
                });
            }
        }
    }
    events.sort_by_key(|ev| instant(&ev.at));
    let mut out: Vec<WithholdingView> = events
        .iter()
        .filter(|ev| ev.kind.is(WithholdingEvent::Ask))
        .filter_map(|ev| {
            Some(WithholdingView {
                id: ev.id.clone()?,
                reason: ev.reason.clone(),
                by: ev.by.clone(),
                at: ev.at.clone(),
                confirmed_by: None,
                confirmed_at: None,
                lifted_by: None,
                lifted_at: None,
                lift_reason: String::new(),
            })
        })
        .collect();
    for ev in &events {
        let Some(r) = out
            .iter_mut()
            .find(|r| ev.request.as_deref() == Some(r.id.as_str()))
        else {
            continue;
        };
        match ev.kind.known() {
            // The first confirmation by someone other than who asked counts; one by who asked
            // is none.
            Some(WithholdingEvent::Confirm) if !r.confirmed() => {
                let other = match (&r.by, &ev.by) {
                    (Some(a), Some(b)) => a.practitioner != b.practitioner,
                    _ => false,
                };
                if other {
                    r.confirmed_by = ev.by.clone();
                    r.confirmed_at = ev.at.clone();
                }
            }
            Some(WithholdingEvent::Lift) if r.lifted_by.is_none() => {
                r.lifted_by = ev.by.clone();
                r.lifted_at = ev.at.clone();
                r.lift_reason = ev.reason.clone();
            }
            _ => {}
        }
    }
    out
}

fn team_note(d: &impl ReadDoc, id: EntryId, e: &ObjId) -> TeamNoteView {
    TeamNoteView {
        meta: super::view::meta(d, id, e),
        kind: Stored::read(get_str(d, e, keys::KIND)),
        text: get_str(d, e, keys::TEXT).unwrap_or_default(),
        withholding: withholding(d, e),
    }
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
            out.push(team_note(d, id, &e));
        }
    }
    out.sort_by_key(|n| (instant(&n.meta.created_at), n.meta.id));
    out
}

/// The notes withheld from the person's copy.
pub fn withheld_ids(d: &AutoCommit) -> BTreeSet<EntryId> {
    team_notes(d)
        .into_iter()
        .filter(TeamNoteView::withheld_from_person)
        .map(|n| n.meta.id)
        .collect()
}

/// What a device's changes did to withholding, as audit lines: each withholding newly in force
/// (who asked, who confirmed), including one that replaced another in the same changes, and each
/// newly lifted (who lifted it; whether the note is back in the person's copy). Never its words or
/// the reasons: the audit log holds no clinical text. The server records these before it stores
/// the change, and refuses the change if it cannot.
pub fn withholding_changes(before: &AutoCommit, after: &AutoCommit) -> Vec<String> {
    let was: std::collections::BTreeMap<EntryId, TeamNoteView> = team_notes(before)
        .into_iter()
        .map(|n| (n.meta.id, n))
        .collect();
    let who = |a: &Option<AuthorView>| {
        a.as_ref()
            .map(|a| format!("{} ({})", a.practitioner_name, a.practitioner))
            .unwrap_or_else(|| "unknown".into())
    };
    let mut out = Vec::new();
    for n in &team_notes(after) {
        let earlier = was.get(&n.meta.id);
        let lifted_before = |id: &str| {
            earlier.is_some_and(|e| {
                e.withholding
                    .iter()
                    .any(|w| w.id == id && w.lifted_by.is_some())
            })
        };
        for w in n.withholding.iter().filter(|w| w.lifted_by.is_some()) {
            if !lifted_before(&w.id) && w.confirmed() {
                let now = if n.withheld_from_person() {
                    "another withholding is in force"
                } else {
                    "back in the person's copy"
                };
                out.push(format!(
                    "note {} ({}) {now}: withholding {} lifted by {}",
                    n.meta.id,
                    n.kind,
                    w.id,
                    who(&w.lifted_by)
                ));
            }
        }
        let was_in_force = earlier.and_then(|e| e.in_force()).map(|w| w.id.clone());
        if let Some(w) = n.in_force() {
            if was_in_force.as_deref() != Some(w.id.as_str()) {
                out.push(format!(
                    "note {} ({}) withheld from the person's copy: asked by {}, confirmed by {}",
                    n.meta.id,
                    n.kind,
                    who(&w.by),
                    who(&w.confirmed_by)
                ));
            }
        }
    }
    out
}

/// A note on the wrong person's record (or with a mark this version cannot read): nothing of it.
pub(super) fn withhold(notes: &mut [TeamNoteView], ids: &mut Vec<String>) {
    for n in notes.iter_mut().filter(|n| n.meta.withheld()) {
        ids.push(n.meta.id.to_string());
        n.text.clear();
        n.kind = Stored::Missing;
        n.withholding.clear();
    }
}

/// The record as the person may read it: a note withheld from them keeps its place, kind, dates
/// and who asked and confirmed, but not its words, the reason, or the reason of any mark on it;
/// requests still waiting for a second practitioner are not there (nothing is withheld by them);
/// no reason for asking or lifting is; and no conflict names a withheld note. Every copy made for
/// the person goes through this.
pub fn redact_for_person(view: &mut super::view::CaseView) {
    let mut withheld: Vec<String> = Vec::new();
    for n in view.team_notes.iter_mut() {
        if n.withheld_from_person() {
            withheld.push(n.meta.id.to_string());
            n.text.clear();
            if let Some(mark) = n.meta.entered_in_error.as_mut() {
                mark.reason.clear();
            }
        }
        n.withholding.retain(|w| !w.pending());
        for w in n.withholding.iter_mut() {
            w.reason.clear();
            w.lift_reason.clear();
        }
    }
    view.conflicts.retain(|c| {
        !c.field
            .split('.')
            .any(|part| withheld.iter().any(|id| id == part))
    });
}
