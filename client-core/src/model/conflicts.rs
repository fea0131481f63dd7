//! Conflicts: fields where two devices set different values concurrently.
//!
//! automerge keeps every concurrent value and picks a deterministic winner. Picking silently is what
//! earlier offline health tools did, and practitioners lost each other's corrections that way. Here
//! every such field is listed with each value, who wrote it (practitioner and device, from the change
//! that holds it) and when; the user picks, and the pick is an ordinary attributed change.

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use serde::{Deserialize, Serialize};

use super::doc::CaseDoc;
use super::read::{change_author, from_ms, map_at};
use super::schema::keys;
use super::types::*;
use super::ModelError;

/// A field with more than one current value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// Dotted path of the field, e.g. `person.nhs_number` or `meetings.<id>.place`. Pass it to
    /// [`CaseDoc::resolve`].
    pub field: String,
    /// Every value, numbered from 1 in the order users see; the last is automerge's current winner.
    pub values: Vec<ConflictValue>,
}

/// One of the concurrent values of a field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictValue {
    /// 1-based number to pick it by.
    pub pick: usize,
    /// The value, as shown to users.
    pub value: String,
    /// Who wrote it, when known.
    pub author: Option<AuthorView>,
    /// When it was written (RFC 3339), when known.
    pub at: Option<String>,
}

/// How a scalar is shown to a user.
pub(super) fn display_scalar(s: &ScalarValue) -> String {
    match s {
        ScalarValue::Str(s) => s.to_string(),
        ScalarValue::Timestamp(ms) => format_instant(from_ms(*ms)),
        ScalarValue::Null => "(cleared)".into(),
        ScalarValue::Boolean(b) => if *b { "yes" } else { "no" }.into(),
        other => other.to_string(),
    }
}

impl CaseDoc {
    /// Every field that currently holds concurrent values.
    pub fn conflicts(&self) -> Vec<Conflict> {
        let mut out = Vec::new();
        self.walk(&ROOT, String::new(), &mut out);
        out
    }

    fn walk(&self, obj: &ObjId, path: String, out: &mut Vec<Conflict>) {
        let d = &self.doc;
        for key in d.keys(obj).collect::<Vec<_>>() {
            let field = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            let values = d.get_all(obj, key.as_str()).unwrap_or_default();
            // Two devices raising the schema version at once is bookkeeping, not a choice for a
            // person: the highest value counts.
            // Nor is a position history two devices started at once: the view reads every one of
            // them, so both stances are kept and shown, and there is nothing to choose.
            // Nor are the containers two devices may each have made at once that the view reads
            // all of, merged (schema 3: the crisis plan, its items and reviews, the team's notes,
            // a meeting's staff notes; schema 4: the referrals): nothing in them is hidden, and there is nothing to pick.
            let parent = path.rsplit('.').next().unwrap_or("");
            let merged = values.iter().all(|(v, _)| matches!(v, Value::Object(_)))
                && ((path.is_empty()
                    && (key == keys::CRISIS_PLAN
                        || key == keys::TEAM_NOTES
                        || key == keys::ATTACHMENTS
                        || key == keys::REFERRALS))
                    || (parent == keys::CRISIS_PLAN
                        && (key == keys::ITEMS || key == keys::REVIEWS))
                    || key == keys::STAFF
                    || parent == keys::STAFF
                    || key == keys::WITHHOLDING);
            let bookkeeping = (path.is_empty() && key == keys::SCHEMA_VERSION)
                || key == keys::POSITION_HISTORY
                || path.ends_with(keys::POSITION_HISTORY)
                || merged;
            if values.len() > 1 && !bookkeeping {
                let values = values
                    .iter()
                    .enumerate()
                    .map(|(i, (v, id))| {
                        let (author, at) = self.attribution(id);
                        ConflictValue {
                            pick: i + 1,
                            value: match v {
                                Value::Scalar(s) => display_scalar(s.as_ref()),
                                Value::Object(t) => format!("({t})"),
                            },
                            author,
                            at,
                        }
                    })
                    .collect();
                out.push(Conflict {
                    field: field.clone(),
                    values,
                });
            }
            for (v, id) in values {
                if matches!(v, Value::Object(ObjType::Map)) {
                    self.walk(&id, field.clone(), out);
                }
            }
        }
    }

    /// Who wrote the operation `op`, and when: from the change that contains it.
    fn attribution(&self, op: &ObjId) -> (Option<AuthorView>, Option<String>) {
        let Some(hash) = self.doc.hash_for_opid(op) else {
            return (None, None);
        };
        let Some(change) = self.doc.get_change_by_hash(&hash) else {
            return (None, None);
        };
        let at = Some(format_instant(from_ms(change.timestamp())));
        let author = change_author(&self.doc, &change);
        (author, at)
    }

    /// Resolve a conflict by picking one of its values (1-based, as listed by [`Self::conflicts`]).
    /// The pick is written as a new change by the current author, so the choice is itself recorded.
    pub fn resolve(&mut self, field: &str, pick: usize) -> Result<(), ModelError> {
        let no_conflict = || ModelError::NoConflict {
            field: field.to_string(),
        };
        let (parent_path, key) = match field.rsplit_once('.') {
            Some((p, k)) => (Some(p), k),
            None => (None, field),
        };
        let mut obj = ROOT;
        if let Some(p) = parent_path {
            for part in p.split('.') {
                obj = map_at(&self.doc, &obj, part).ok_or_else(no_conflict)?;
            }
        }
        let values = self.doc.get_all(&obj, key).map_err(|_| no_conflict())?;
        if values.len() < 2 {
            return Err(no_conflict());
        }
        if pick == 0 || pick > values.len() {
            return Err(ModelError::PickOutOfRange {
                field: field.to_string(),
                pick,
                count: values.len(),
            });
        }
        let chosen = match &values[pick - 1].0 {
            Value::Scalar(s) => s.as_ref().clone(),
            Value::Object(_) => {
                return Err(ModelError::NoConflict {
                    field: format!("{field} (an object, not a value)"),
                })
            }
        };
        let key = key.to_string();
        self.write(&format!("resolve conflict at {field}"), |d, _, _| {
            d.put(&obj, key.as_str(), chosen)?;
            Ok(())
        })
    }
}
