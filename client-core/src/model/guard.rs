//! What the server checks about the *history* a device's changes make, beyond the shape of the
//! result ([`validate_document`](super::validate_document)): that clinical content only grows, and
//! that every name a change writes into the record is its own.
//!
//! - **Append-only.** A change may add entries, edit text inside them (a diff: every version stays
//!   in the document's history) and change scalar fields, but never remove an object that the
//!   record holds: a network member, a meeting, a decision, an action, a position, a read-back, a
//!   consent event, a care-team membership, an entered-in-error mark, or anything else made of
//!   fields. Only a participant's schema-1 position on a decision and their response to a
//!   read-back may be replaced by a newer one; the earlier one stays in the history, and the key
//!   must still hold one. (Schema 2 appends positions to `position_history` instead, and a new
//!   read-back answer keeps the version first heard.)
//! - **Attribution.** Every author stamp (`practitioner`, `practitioner_name`, `device`) that the
//!   new changes write must name the writing device and its practitioner as the server's registry
//!   knows them, and an `actors` entry the new changes add must be the writer's own.
//!
//! Both are checks on the server (the device trusts its server), and both look only at what the
//! new changes did, so a record that holds older writes made before these rules still syncs.

use std::collections::{HashMap, HashSet};

use automerge::{ActorId, AutoCommit, ObjId, ObjType, ReadDoc, Value, ROOT};

use super::schema::keys;
use super::types::Author;

/// The operations a batch of new changes made: per change, its actor, its operation counters and
/// its commit message.
#[derive(Debug, Clone, Default)]
pub struct NewOps {
    changes: Vec<NewChange>,
}

/// One new change, as [`NewOps`] notes it.
#[derive(Debug, Clone)]
struct NewChange {
    actor: ActorId,
    start_op: u64,
    max_op: u64,
    /// Its commit message, which the app reads to show who wrote it.
    message: Option<String>,
}

impl NewOps {
    /// Note one new change: `start_op..=max_op` by `actor`, with its commit message.
    pub fn add(&mut self, actor: ActorId, start_op: u64, max_op: u64, message: Option<String>) {
        self.changes.push(NewChange {
            actor,
            start_op,
            max_op,
            message,
        });
    }

    /// The changes `after` holds beyond `before_heads` (the heads of the document they were
    /// applied to).
    pub fn between(before_heads: &[automerge::ChangeHash], after: &mut AutoCommit) -> NewOps {
        let mut ops = NewOps::default();
        for c in after.get_changes_meta(before_heads) {
            let message = c.message.as_deref().map(str::to_string);
            ops.add(c.actor.into_owned(), c.start_op, c.max_op, message);
        }
        ops
    }

    /// Did one of the new changes make the operation `id`?
    pub fn made(&self, id: &automerge::ObjId) -> bool {
        self.maker(id).is_some()
    }

    /// The actor of the new change that made the operation `id`, if one did.
    fn maker(&self, id: &automerge::ObjId) -> Option<&ActorId> {
        match id {
            automerge::ObjId::Id(counter, actor, _) => self
                .changes
                .iter()
                .find(|c| &c.actor == actor && (c.start_op..=c.max_op).contains(counter))
                .map(|c| &c.actor),
            automerge::ObjId::Root => None,
        }
    }
}

/// Where an object sits: its path (for messages) and the key its parent sits under.
struct Place {
    path: String,
    parent_key: String,
    parent: ObjId,
    key: Key,
}

#[derive(Clone, PartialEq, Eq)]
enum Key {
    Map(String),
    Seq(usize),
}

/// Every object in the document (conflicting values included), with where it sits.
fn objects(doc: &AutoCommit) -> HashMap<ObjId, Place> {
    let mut out = HashMap::new();
    let mut stack: Vec<(ObjId, String, String)> = vec![(ROOT, String::new(), String::new())];
    while let Some((obj, path, own_key)) = stack.pop() {
        let mut children: Vec<(Key, Vec<(Value<'_>, ObjId)>)> = Vec::new();
        match doc.object_type(&obj) {
            Ok(ObjType::Map) | Ok(ObjType::Table) => {
                for k in doc.keys(&obj) {
                    let values = doc.get_all(&obj, k.as_str()).unwrap_or_default();
                    children.push((Key::Map(k), values));
                }
            }
            Ok(ObjType::List) => {
                for i in 0..doc.length(&obj) {
                    children.push((Key::Seq(i), doc.get_all(&obj, i).unwrap_or_default()));
                }
            }
            // Text is edited in place (splices); its characters are not objects.
            Ok(ObjType::Text) | Err(_) => continue,
        }
        for (key, values) in children {
            let name = match &key {
                Key::Map(k) => k.clone(),
                Key::Seq(i) => format!("[{i}]"),
            };
            let child_path = if path.is_empty() {
                name.clone()
            } else if matches!(key, Key::Seq(_)) {
                format!("{path}{name}")
            } else {
                format!("{path}.{name}")
            };
            for (value, id) in values {
                if let Value::Object(_) = value {
                    out.insert(
                        id.clone(),
                        Place {
                            path: child_path.clone(),
                            parent_key: own_key.clone(),
                            parent: obj.clone(),
                            key: key.clone(),
                        },
                    );
                    stack.push((id, child_path.clone(), name.clone()));
                }
            }
        }
    }
    out
}

/// Collections whose entries, one per participant, a newer one replaces.
const REPLACED_BY_NEWER: [&str; 2] = [keys::POSITIONS, keys::READBACK];

/// Refuse a history step that removes anything the record held (see the module docs). `before`
/// is the document the changes were applied to, `after` the result.
pub fn nothing_removed(before: &AutoCommit, after: &AutoCommit) -> Result<(), String> {
    let old = objects(before);
    let new = objects(after);
    let gone: Vec<&ObjId> = old.keys().filter(|id| !new.contains_key(*id)).collect();
    // A participant's position or read-back replaced by a newer one: the old object, and
    // everything inside it, is excused.
    let replaced: HashSet<&ObjId> = gone
        .iter()
        .copied()
        .filter(|id| {
            let place = &old[*id];
            REPLACED_BY_NEWER.contains(&place.parent_key.as_str())
                && match &place.key {
                    Key::Map(k) => after
                        .get_all(&place.parent, k.as_str())
                        .unwrap_or_default()
                        .iter()
                        .any(|(v, _)| matches!(v, Value::Object(_))),
                    Key::Seq(_) => false,
                }
        })
        .collect();
    let excused = |id: &ObjId| {
        let mut at = id;
        loop {
            if replaced.contains(at) {
                return true;
            }
            match old.get(at) {
                Some(place) => at = &place.parent,
                None => return false,
            }
        }
    };
    let mut removed: Vec<&Place> = gone
        .iter()
        .filter(|id| !excused(id))
        .map(|id| &old[*id])
        .collect();
    // Report the outermost removal, not each field inside it.
    removed.sort_by(|a, b| a.path.len().cmp(&b.path.len()).then(a.path.cmp(&b.path)));
    match removed.first() {
        None => Ok(()),
        Some(p) => Err(format!(
            "the change would remove {} from the record; clinical entries are never deleted: \
             mark an entry entered in error instead",
            p.path
        )),
    }
}

/// Refuse new changes that write an author stamp naming anyone but `me`, or register an actor
/// that is not `me`'s. Only operations the new changes made (`new`) are looked at. A device's
/// session: every new change is the sending device's own (the policy refused any other actor).
pub fn stamps_are_own(after: &AutoCommit, new: &NewOps, me: &Author) -> Result<(), String> {
    stamps_match_authors(after, new, &|_| Some(me.clone()))
}

/// Refuse new changes that write an author stamp naming anyone but the author of the change that
/// wrote it, or register an actor other than their own: `author_of` says who each actor is (none:
/// not an author the caller knows, refused). What a borough relays for many devices is checked
/// this way at the trust hub, each change against the device that made it.
pub fn stamps_match_authors(
    after: &AutoCommit,
    new: &NewOps,
    author_of: &dyn Fn(&ActorId) -> Option<Author>,
) -> Result<(), String> {
    let mut known: HashMap<ActorId, Author> = HashMap::new();
    let mut author = |actor: &ActorId| -> Result<Author, String> {
        if let Some(a) = known.get(actor) {
            return Ok(a.clone());
        }
        let a = author_of(actor).ok_or_else(|| {
            format!(
                "the change was written by actor {}, which is no known device's",
                actor.to_hex_string()
            )
        })?;
        known.insert(actor.clone(), a.clone());
        Ok(a)
    };
    // The change's message names its author for the app's attribution (conflicts, history): it
    // must be the writer too. A change with no message is attributed through the actors map.
    for c in &new.changes {
        let Some(Ok(n)) = c
            .message
            .as_deref()
            .map(serde_json::from_str::<super::types::ChangeNote>)
        else {
            continue;
        };
        let me = author(&c.actor)?;
        if n.practitioner != me.practitioner
            || n.practitioner_name != me.practitioner_name
            || n.device != me.device
        {
            return Err(format!(
                "the change's message names {} ({}) on device {}, but it comes from device {} of {} ({}): a device writes only as itself",
                n.practitioner_name, n.practitioner, n.device, me.device, me.practitioner_name, me.practitioner
            ));
        }
    }
    for (id, place) in objects(after) {
        if place.parent_key == keys::ACTORS {
            if let (Some(maker), Key::Map(k)) = (new.maker(&id), &place.key) {
                let own = author(maker)?.actor().to_hex_string();
                if *k != own {
                    return Err(format!(
                        "the change registers actor {k} in the record, which is not this device's"
                    ));
                }
            }
        }
        let Ok(fields) = field_names(after, &id) else {
            continue;
        };
        let stamp = [keys::PRACTITIONER, keys::PRACTITIONER_NAME, keys::DEVICE];
        if !stamp.iter().all(|k| fields.iter().any(|f| f == k)) {
            continue;
        }
        for key in stamp {
            for (value, op) in after.get_all(&id, key).unwrap_or_default() {
                let Some(maker) = new.maker(&op) else {
                    continue;
                };
                let me = author(maker)?;
                let expected = match key {
                    keys::PRACTITIONER => me.practitioner.to_string(),
                    keys::PRACTITIONER_NAME => me.practitioner_name.clone(),
                    _ => me.device.to_string(),
                };
                let written = match &value {
                    Value::Scalar(s) => match s.as_ref() {
                        automerge::ScalarValue::Str(s) => s.to_string(),
                        other => other.to_string(),
                    },
                    Value::Object(_) => String::from("(an object)"),
                };
                if written != expected {
                    return Err(format!(
                        "{}.{key} says {written:?}, but this change comes from device {} of {} \
                         ({}): a device writes only as itself",
                        place.path, me.device, me.practitioner_name, me.practitioner
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Refuse new changes that write into a record stamped with who recorded it (a position, a
/// read-back, a consent event, a status change, an entered-in-error mark) made by an earlier
/// change: it is that person's words, kept as recorded; a newer position or read-back is a new
/// record. Only the change that made a record may write its fields.
pub fn records_kept(after: &AutoCommit, new: &NewOps) -> Result<(), String> {
    for (id, place) in &objects(after) {
        let Ok(fields) = field_names(after, id) else {
            continue;
        };
        let has = |k: &str| fields.iter().any(|f| f == k);
        // Also an author stamp itself: rewriting one, even to one's own name, takes the words
        // from the person who wrote them.
        let stamped = has(keys::RECORDED_BY)
            || (has(keys::BY) && has(keys::AT))
            || (has(keys::PRACTITIONER) && has(keys::PRACTITIONER_NAME) && has(keys::DEVICE));
        if !stamped || new.made(id) {
            continue;
        }
        for f in &fields {
            if after
                .get_all(id, f.as_str())
                .unwrap_or_default()
                .iter()
                .any(|(_, op)| new.made(op))
            {
                return Err(format!(
                    "the change edits {}.{f}, a record another change made and stamped: it is kept as recorded (record a newer one instead)",
                    place.path
                ));
            }
        }
    }
    Ok(())
}

/// Fields that, once an entry is made, only the change that made it may write: what the record
/// says was written, by whom its stamp names. The app never rewrites them (a correction is an
/// entry marked in error and a new one). An attachment's address, size, type, name, kind, title
/// and meeting (re-pointing it at other bytes would also leave the file it named unreachable: a
/// delete by other means); a safety note's kind and words; a plan item's section (its words have
/// versions of their own).
fn written_once(d: &impl ReadDoc) -> Vec<(&'static str, Vec<ObjId>, &'static [&'static str])> {
    const ATTACHMENT: &[&str] = &[
        keys::SHA256,
        keys::SIZE,
        keys::MEDIA_TYPE,
        keys::FILE_NAME,
        keys::KIND,
        keys::TITLE,
        keys::MEETING,
    ];
    const NOTE: &[&str] = &[keys::KIND, keys::TEXT];
    const PLAN_ITEM: &[&str] = &[keys::SECTION];
    const REFERRAL: &[&str] = &[
        keys::RECEIVED_AT,
        keys::SOURCE,
        keys::REFERRER,
        keys::REASON,
        keys::URGENCY,
    ];
    vec![
        (
            "attachments",
            super::attachments::attachment_maps(d),
            ATTACHMENT,
        ),
        ("team_notes", super::team_notes::note_maps(d), NOTE),
        ("crisis_plan.items", super::plan::plan_items(d), PLAN_ITEM),
        ("referrals", super::referrals::referral_maps(d), REFERRAL),
    ]
}

/// Fields of entries that may be written once after the entry was made (a referral's letter,
/// named when it follows a telephone referral), then stay as written.
fn set_once(d: &impl ReadDoc) -> Vec<(&'static str, Vec<ObjId>, &'static [&'static str])> {
    vec![(
        "referrals",
        super::referrals::referral_maps(d),
        &[keys::LETTER],
    )]
}

/// Every entry of these collection maps, with its key.
fn entries(d: &AutoCommit, maps: &[ObjId]) -> Vec<(String, ObjId)> {
    let mut out = Vec::new();
    for map in maps {
        for key in d.keys(map).collect::<Vec<_>>() {
            for (value, entry) in d.get_all(map, key.as_str()).unwrap_or_default() {
                if matches!(value, Value::Object(ObjType::Map)) {
                    out.push((key.clone(), entry));
                }
            }
        }
    }
    out
}

/// Refuse new changes that rewrite or delete a field written once ([`written_once`]) of an entry
/// an earlier change made.
pub fn written_once_kept(
    before: &AutoCommit,
    after: &AutoCommit,
    new: &NewOps,
) -> Result<(), String> {
    let refuse = |what: &str, path: &str, key: &str, f: &str| {
        format!(
            "the change {what} {path}.{key}.{f}: it is kept as written (mark the entry entered in error and write a new one)"
        )
    };
    // Written once, and never deleted: those, and a closed episode's closure (a correction may
    // rewrite its date; nothing may reopen the episode by taking it away).
    let mut kept = written_once(before);
    kept.push((
        "referrals",
        super::referrals::referral_maps(before),
        &[keys::CLOSED_AT],
    ));
    for (path, maps, fields) in kept {
        for (key, entry) in entries(before, &maps) {
            for f in fields {
                let had = !before.get_all(&entry, *f).unwrap_or_default().is_empty();
                let has = !after.get_all(&entry, *f).unwrap_or_default().is_empty();
                if had && !has {
                    return Err(refuse("deletes", path, &key, f));
                }
            }
        }
    }
    for (path, maps, fields) in written_once(after) {
        for (key, entry) in entries(after, &maps) {
            if new.made(&entry) {
                continue;
            }
            for f in fields {
                if after
                    .get_all(&entry, *f)
                    .unwrap_or_default()
                    .iter()
                    .any(|(_, op)| new.made(op))
                {
                    return Err(refuse("rewrites", path, &key, f));
                }
            }
        }
    }
    // Set once: refused when a value the entry held before is no longer there (overwritten or
    // deleted). Two devices naming a letter at once, apart, both stay (a conflict a person sees).
    for (path, maps, fields) in set_once(before) {
        for (key, entry) in entries(before, &maps) {
            for f in fields {
                let now: Vec<_> = after
                    .get_all(&entry, *f)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(_, op)| op)
                    .collect();
                let gone = before
                    .get_all(&entry, *f)
                    .unwrap_or_default()
                    .into_iter()
                    .any(|(_, op)| !now.contains(&op));
                if gone {
                    return Err(refuse("rewrites", path, &key, f));
                }
            }
        }
    }
    Ok(())
}

fn field_names(doc: &AutoCommit, obj: &ObjId) -> Result<Vec<String>, ()> {
    match doc.object_type(obj) {
        Ok(ObjType::Map) | Ok(ObjType::Table) => Ok(doc.keys(obj).collect()),
        _ => Err(()),
    }
}

/// Whether `practitioner` is in the case's care team now: a membership naming them that has not
/// ended and is not marked entered in error. Any device of the case's team may sync it (cover
/// between colleagues is real), but a read by someone outside the care team is recorded as such
/// in the person's access list.
pub fn in_care_team(doc: &AutoCommit, practitioner: &crate::PractitionerId) -> bool {
    let Ok(Some((Value::Object(_), team))) = doc.get(ROOT, keys::CARE_TEAM) else {
        return false;
    };
    let me = practitioner.to_string();
    doc.keys(&team).any(|k| {
        let Ok(Some((Value::Object(_), entry))) = doc.get(&team, k.as_str()) else {
            return false;
        };
        let names_me = matches!(
            doc.get(&entry, keys::PRACTITIONER),
            Ok(Some((Value::Scalar(s), _))) if s.as_str() == Some(me.as_str())
        );
        let today =
            super::format_date(super::LocalZone::uk().date(time::OffsetDateTime::now_utc()));
        let ended = matches!(
            doc.get(&entry, keys::END),
            Ok(Some((Value::Scalar(s), _))) if s.as_str().is_some_and(|end| end <= today.as_str())
        ) || [keys::ENTERED_IN_ERROR, keys::WRONG_PERSON]
            .iter()
            .any(|k| doc.get(&entry, *k).ok().flatten().is_some());
        names_me && !ended
    })
}
