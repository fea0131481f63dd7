//! The safety and crisis plan (schema 3), written with the person in the open.
//!
//! The plan is made of items, each in one section after the PRSB crisis-plan standard (early
//! signs, what helps, what does not, who to call and who not to, preferences in a crisis,
//! practical matters, contacts out of hours). An item keeps every version of its words: each
//! version says whose words they are (the person's, a network member's, a practitioner's), who
//! wrote it down and when, and the meeting it was agreed in, so a change always shows what it
//! replaced. The plan has a review date, kept as a history too; the morning list shows the
//! review once it is due.
//!
//! In the document: `crisis_plan` at the root, a map with `items` (entries keyed by id, each with
//! `section` and a list of `versions`) and `reviews` (a list of `{on, by, at}`). A case created by
//! schema 3 has the map from the start; an older case gets it with its first item, so two
//! devices adding the first items of an older case at once may each make one: every concurrent
//! map is read, and nothing either wrote is lost.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, ReadDoc, Value, ROOT};
use serde::{Deserialize, Serialize};

use super::doc::{obj_at, CaseDoc};
use super::read::{author, get_str, instant, map_at, ts};
use super::schema::keys;
use super::types::*;
use super::ModelError;
use crate::EntryId;

/// One version of an item's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanVersionView {
    /// The words.
    pub text: String,
    /// Whose words they are.
    pub words_of: Stored<Participant>,
    /// The meeting they were agreed in, if any.
    pub meeting: Option<EntryId>,
    /// Who wrote them down.
    pub by: Option<AuthorView>,
    /// When (RFC 3339).
    pub at: Option<String>,
}

/// An item of the plan: its words now, and every earlier version, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanItemView {
    /// Attribution.
    #[serde(flatten)]
    pub meta: super::view::EntryMeta,
    /// Which part of the plan.
    pub section: Stored<PlanSection>,
    /// The words as they stand (the newest version).
    pub current: Option<PlanVersionView>,
    /// What they replaced, oldest first.
    pub earlier: Vec<PlanVersionView>,
}

/// A review date set for the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanReviewView {
    /// The date the plan is to be reviewed by (YYYY-MM-DD).
    pub on: Option<String>,
    /// Who set it.
    pub by: Option<AuthorView>,
    /// When (RFC 3339).
    pub at: Option<String>,
}

/// The safety and crisis plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrisisPlanView {
    /// Every item, in the order of the sections, then as written.
    pub items: Vec<PlanItemView>,
    /// The date the plan is next to be reviewed by (the newest review date set), if any.
    pub review_on: Option<String>,
    /// Every review date set, oldest first.
    pub reviews: Vec<PlanReviewView>,
}

impl CrisisPlanView {
    /// The items of one section that are not withheld, as written.
    pub fn section(&self, s: PlanSection) -> impl Iterator<Item = &PlanItemView> {
        self.items.iter().filter(move |i| i.section.is(s))
    }
}

impl CaseDoc {
    /// Add an item to the plan, in `words_of`'s own words, agreed in `meeting` if given.
    /// Returns its id.
    pub fn add_plan_item(
        &mut self,
        section: PlanSection,
        text: &str,
        words_of: Participant,
        meeting: Option<EntryId>,
    ) -> Result<EntryId, ModelError> {
        let text = self.check_plan_words(text, words_of, meeting)?;
        let id = EntryId::random();
        self.write("add to the crisis plan", |d, a, t| {
            let plan = plan_map(d)?;
            let items = match map_at(d, &plan, keys::ITEMS) {
                Some(items) => items,
                None => d.put_object(&plan, keys::ITEMS, ObjType::Map)?,
            };
            let e = super::doc::new_entry(d, &items, &id, a, t)?;
            d.put(&e, keys::SECTION, section.as_str())?;
            let versions = d.put_object(&e, keys::VERSIONS, ObjType::List)?;
            put_version(d, &versions, &text, words_of, meeting, a, t)
        })?;
        Ok(id)
    }

    /// Change an item's words: a new version, after the ones it replaces (which stay).
    pub fn revise_plan_item(
        &mut self,
        item: &EntryId,
        text: &str,
        words_of: Participant,
        meeting: Option<EntryId>,
    ) -> Result<(), ModelError> {
        let text = self.check_plan_words(text, words_of, meeting)?;
        let e = self.live_plan_item(item)?;
        self.write("change the crisis plan", |d, a, t| {
            let versions = obj_at(d, &e, keys::VERSIONS)?;
            put_version(d, &versions, &text, words_of, meeting, a, t)
        })
    }

    /// Set the date the plan is next to be reviewed by (the earlier dates stay in its history).
    pub fn set_plan_review(&mut self, on: Date) -> Result<(), ModelError> {
        self.write("set the crisis plan's review date", |d, a, t| {
            let plan = plan_map(d)?;
            let reviews = match d.get(&plan, keys::REVIEWS)? {
                Some((Value::Object(ObjType::List), l)) => l,
                _ => d.put_object(&plan, keys::REVIEWS, ObjType::List)?,
            };
            let at = d.length(&reviews);
            let r = d.insert_object(&reviews, at, ObjType::Map)?;
            d.put(&r, keys::ON, format_date(on))?;
            super::doc::stamp(d, &r, keys::BY, keys::AT, a, t)?;
            Ok(())
        })
    }

    fn check_plan_words(
        &self,
        text: &str,
        words_of: Participant,
        meeting: Option<EntryId>,
    ) -> Result<String, ModelError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ModelError::Required {
                field: "crisis plan item",
            });
        }
        super::doc::check_long("crisis plan item", text)?;
        self.check_participant(&words_of)?;
        if let Some(m) = meeting {
            self.live_entry(keys::MEETINGS, "meeting", &m)?;
        }
        Ok(text.to_string())
    }

    /// A plan item not marked in error.
    fn live_plan_item(&self, item: &EntryId) -> Result<ObjId, ModelError> {
        let unknown = || ModelError::UnknownEntry {
            kind: "crisis plan item",
            id: item.to_string(),
        };
        let e = plan_items(&self.doc)
            .into_iter()
            .find_map(|items| map_at(&self.doc, &items, &item.to_string()))
            .ok_or_else(unknown)?;
        if self.in_error(&e) {
            return Err(ModelError::EntryInError {
                kind: "crisis plan item",
                id: item.to_string(),
            });
        }
        Ok(e)
    }
}

/// The plan's map, made if the case has none (a case created before schema 3).
fn plan_map(d: &mut AutoCommit) -> Result<ObjId, ModelError> {
    match map_at(d, &ROOT, keys::CRISIS_PLAN) {
        Some(plan) => Ok(plan),
        None => Ok(d.put_object(ROOT, keys::CRISIS_PLAN, ObjType::Map)?),
    }
}

fn put_version(
    d: &mut AutoCommit,
    versions: &ObjId,
    text: &str,
    words_of: Participant,
    meeting: Option<EntryId>,
    a: &Author,
    t: Instant,
) -> Result<(), ModelError> {
    let at = d.length(versions);
    let v = d.insert_object(versions, at, ObjType::Map)?;
    d.put(&v, keys::TEXT, text)?;
    d.put(&v, keys::WORDS_OF, words_of.key())?;
    if let Some(m) = meeting {
        d.put(&v, keys::MEETING, m.to_string())?;
    }
    super::doc::stamp(d, &v, keys::BY, keys::AT, a, t)?;
    Ok(())
}

/// Every `items` map of every concurrent `crisis_plan` map (two devices may each have made one).
pub(crate) fn plan_items(d: &impl ReadDoc) -> Vec<ObjId> {
    every(d, keys::ITEMS, ObjType::Map)
}

/// Every object of type `t` under `key` in every concurrent plan map, winners first.
fn every(d: &impl ReadDoc, key: &str, t: ObjType) -> Vec<ObjId> {
    plan_maps(d)
        .into_iter()
        .flat_map(|plan| {
            let mut all: Vec<ObjId> = d
                .get_all(&plan, key)
                .unwrap_or_default()
                .into_iter()
                .filter(|(v, _)| matches!(v, Value::Object(x) if *x == t))
                .map(|(_, id)| id)
                .collect();
            all.reverse();
            all
        })
        .collect()
}

/// Every concurrent `crisis_plan` map, the winner first.
fn plan_maps(d: &impl ReadDoc) -> Vec<ObjId> {
    let mut all: Vec<ObjId> = d
        .get_all(ROOT, keys::CRISIS_PLAN)
        .unwrap_or_default()
        .into_iter()
        .filter(|(v, _)| matches!(v, Value::Object(ObjType::Map)))
        .map(|(_, id)| id)
        .collect();
    all.reverse();
    all
}

fn list_maps(d: &impl ReadDoc, l: &ObjId) -> Vec<ObjId> {
    (0..d.length(l))
        .filter_map(|i| match d.get(l, i) {
            Ok(Some((Value::Object(ObjType::Map), o))) => Some(o),
            _ => None,
        })
        .collect()
}

fn version(d: &impl ReadDoc, v: &ObjId) -> PlanVersionView {
    PlanVersionView {
        text: get_str(d, v, keys::TEXT).unwrap_or_default(),
        words_of: Stored::read(get_str(d, v, keys::WORDS_OF)),
        meeting: get_str(d, v, keys::MEETING).and_then(|m| m.parse().ok()),
        by: author(d, v, keys::BY),
        at: ts(d, v, keys::AT),
    }
}

/// The plan as the document holds it (before withholding).
pub(super) fn crisis_plan(d: &impl ReadDoc) -> CrisisPlanView {
    let mut items = Vec::new();
    for coll in plan_items(d) {
        for k in d.keys(&coll) {
            let (Ok(id), Some(e)) = (k.parse::<EntryId>(), map_at(d, &coll, &k)) else {
                continue;
            };
            if items.iter().any(|i: &PlanItemView| i.meta.id == id) {
                continue;
            }
            let mut versions: Vec<PlanVersionView> = match d.get(&e, keys::VERSIONS) {
                Ok(Some((Value::Object(ObjType::List), l))) => {
                    list_maps(d, &l).iter().map(|v| version(d, v)).collect()
                }
                _ => Vec::new(),
            };
            // Two devices changing an item at once each append a version: the newest written
            // (by its time, then its place in the list) stands, the others are listed before it.
            // By the instant, not the text: RFC 3339 strings with fewer fraction digits do not
            // sort as their times do ("…34.2Z" after "…34.25Z").
            versions.sort_by_key(|v| instant(&v.at));
            let current = versions.pop();
            items.push(PlanItemView {
                meta: super::view::meta(d, id, &e),
                section: Stored::read(get_str(d, &e, keys::SECTION)),
                current,
                earlier: versions,
            });
        }
    }
    let rank = |i: &PlanItemView| {
        i.section
            .known()
            .and_then(|s| PlanSection::ALL.iter().position(|x| *x == s))
            .unwrap_or(PlanSection::ALL.len())
    };
    items.sort_by_key(|i| (rank(i), instant(&i.meta.created_at), i.meta.id));
    let mut reviews: Vec<PlanReviewView> = every(d, keys::REVIEWS, ObjType::List)
        .iter()
        .flat_map(|l| list_maps(d, l))
        .map(|r| PlanReviewView {
            on: get_str(d, &r, keys::ON),
            by: author(d, &r, keys::BY),
            at: ts(d, &r, keys::AT),
        })
        .collect();
    reviews.sort_by_key(|r| instant(&r.at));
    CrisisPlanView {
        review_on: reviews.last().and_then(|r| r.on.clone()),
        items,
        reviews,
    }
}

/// An item withheld from the record (on the wrong person's record, or of a kind of mark this
/// version cannot read): nothing of its words.
pub(super) fn withhold(plan: &mut CrisisPlanView, ids: &mut Vec<String>) {
    for i in plan.items.iter_mut().filter(|i| i.meta.withheld()) {
        ids.push(i.meta.id.to_string());
        i.current = None;
        i.earlier.clear();
        i.section = Stored::Missing;
    }
    // Last, so where a withheld item stood says nothing of which section it was in.
    plan.items.sort_by_key(|i| i.meta.withheld());
}
