//! Reading values out of a case document: the typed getters every reader uses (the writer, the
//! validator, the view, the conflict list, the read-back history), and the readings of more than
//! one field that both the writer and the view need (who wrote something, the positions on a
//! decision). Depends on nothing else in the model but its types and keys.

use automerge::{ObjId, ReadDoc, ScalarValue, Value, ROOT};

use super::keys;
use super::types::*;

/// The map or text object under `key`, if there is one.
pub(super) fn map_at(d: &impl ReadDoc, obj: &ObjId, key: &str) -> Option<ObjId> {
    match d.get(obj, key) {
        Ok(Some((Value::Object(_), id))) => Some(id),
        _ => None,
    }
}

/// A string value (the winner, if concurrent values exist).
pub(super) fn get_str(d: &impl ReadDoc, obj: &ObjId, key: &str) -> Option<String> {
    match d.get(obj, key) {
        Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// A timestamp value.
pub(super) fn get_ts(d: &impl ReadDoc, obj: &ObjId, key: &str) -> Option<Instant> {
    match d.get(obj, key) {
        Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
            ScalarValue::Timestamp(ms) => Some(from_ms(*ms)),
            _ => None,
        },
        _ => None,
    }
}

/// A boolean value.
pub(super) fn get_bool(d: &impl ReadDoc, obj: &ObjId, key: &str) -> Option<bool> {
    match d.get(obj, key) {
        Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
            ScalarValue::Boolean(b) => Some(*b),
            _ => None,
        },
        _ => None,
    }
}

/// Milliseconds since 1970, as stored.
pub(super) fn to_ms(t: Instant) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// An instant from milliseconds since 1970 as stored (1970 itself when out of range).
pub(super) fn from_ms(ms: i64) -> Instant {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// An RFC 3339 time as the view holds it, for ordering.
pub(super) fn instant(t: &Option<String>) -> Option<Instant> {
    t.as_deref()
        .and_then(|s| Instant::parse(s, &time::format_description::well_known::Rfc3339).ok())
}

/// A timestamp value as the view shows it (RFC 3339).
pub(super) fn ts(d: &impl ReadDoc, o: &ObjId, k: &str) -> Option<String> {
    get_ts(d, o, k).map(format_instant)
}

/// The author stamp under `k`, if there is one.
pub(super) fn author(d: &impl ReadDoc, o: &ObjId, k: &str) -> Option<AuthorView> {
    let a = map_at(d, o, k)?;
    Some(AuthorView {
        practitioner: get_str(d, &a, keys::PRACTITIONER).unwrap_or_default(),
        practitioner_name: get_str(d, &a, keys::PRACTITIONER_NAME).unwrap_or_default(),
        device: get_str(d, &a, keys::DEVICE).unwrap_or_default(),
    })
}

fn position(d: &impl ReadDoc, participant: &str, x: &ObjId) -> PositionView {
    PositionView {
        participant: Stored::read(Some(participant.to_string())),
        stance: Stored::read(get_str(d, x, keys::STANCE)),
        words: get_str(d, x, keys::WORDS),
        at: ts(d, x, keys::AT),
        recorded_by: author(d, x, keys::RECORDED_BY),
        earlier: vec![],
    }
}

/// Every participant's current position on decision `e`, each with the stances they took before.
///
/// A position recorded by schema 1 sits in `positions`; schema 2 appends each stance to the
/// participant's list in `position_history`. Every concurrent value of the history map and of
/// each list is read, so two devices that started a history at once both count. The current
/// position is the latest by time, then by the order read (the same on every device).
pub(super) fn positions(d: &impl ReadDoc, e: &ObjId) -> Vec<PositionView> {
    // Each stance with the order it was read in: a schema-1 position first, then each history
    // list in order, so two stances in the same millisecond keep the order they were written.
    let mut by_who: std::collections::BTreeMap<String, Vec<(PositionView, usize)>> =
        Default::default();
    let mut order = 0usize;
    let mut add = |who: &str, p: PositionView| {
        order += 1;
        by_who.entry(who.to_string()).or_default().push((p, order));
    };
    if let Some(pos) = map_at(d, e, keys::POSITIONS) {
        for k in d.keys(&pos) {
            if let Some(x) = map_at(d, &pos, &k) {
                add(&k, position(d, &k, &x));
            }
        }
    }
    for hist in all_objects(d, e, keys::POSITION_HISTORY) {
        for k in d.keys(&hist) {
            for list in all_objects(d, &hist, &k) {
                for i in 0..d.length(&list) {
                    if let Ok(Some((automerge::Value::Object(_), x))) = d.get(&list, i) {
                        add(&k, position(d, &k, &x));
                    }
                }
            }
        }
    }
    by_who
        .into_values()
        .filter_map(|mut all| {
            all.sort_by(|(a, i), (b, j)| (instant(&a.at), i).cmp(&(instant(&b.at), j)));
            let mut all: Vec<PositionView> = all.into_iter().map(|(p, _)| p).collect();
            let mut current = all.pop()?;
            current.earlier = all;
            Some(current)
        })
        .collect()
}

/// Every concurrent object at `key` (automerge keeps each device's when two made one at once).
pub(super) fn all_objects(d: &impl ReadDoc, obj: &ObjId, key: &str) -> Vec<ObjId> {
    d.get_all(obj, key)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(v, id)| matches!(v, automerge::Value::Object(_)).then_some(id))
        .collect()
}

/// Who made a change: from its message, or, if the message is missing, from the document's
/// register of devices.
pub(super) fn change_author(doc: &impl ReadDoc, change: &automerge::Change) -> Option<AuthorView> {
    if let Some(n) = change
        .message()
        .and_then(|m| serde_json::from_str::<ChangeNote>(m).ok())
    {
        return Some(AuthorView {
            practitioner: n.practitioner.to_string(),
            practitioner_name: n.practitioner_name,
            device: n.device.to_string(),
        });
    }
    let actors = map_at(doc, &ROOT, keys::ACTORS)?;
    let a = map_at(doc, &actors, &change.actor_id().to_hex_string())?;
    let get = |k| get_str(doc, &a, k).unwrap_or_default();
    Some(AuthorView {
        practitioner: get(keys::PRACTITIONER),
        practitioner_name: get(keys::PRACTITIONER_NAME),
        device: get(keys::DEVICE),
    })
}
