//! The shape of a case document, and its validation.
//!
//! The server runs [`validate_document`] on the result of every incoming change before it stores
//! anything, so a buggy or hostile client cannot plant a record that other devices fail to read.
//! Validation checks every value automerge holds for a field, including the losers of a concurrent
//! write (a bad value must not hide behind a good one and reappear when a user picks it).
//!
//! What is checked is the shape: which keys exist, their types, fixed vocabularies, date and NHS
//! number formats, and length limits. Rules that two valid concurrent changes could break when
//! merged (such as "agreed only when the person agreed") are enforced at write time by
//! [`CaseDoc`](super::CaseDoc) and reported by the view, never by refusing a merge: refusing a merge
//! would strand one practitioner's words.

use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::rc::Rc;

use super::types::*;
use super::{MAX_LONG, MAX_SHORT};
use crate::{CaseId, TeamId};

pub use super::keys;

/// The version of the document layout this code writes and knows in full, stored at the root.
/// Every change this code makes raises the document's version to it, so a device that knows less
/// can tell it is reading a newer record (see "Changing the record's shape" in DEVELOPERS.md).
///
/// - 1: the first layout.
/// - 2: a `wrong_person` mark beside `entered_in_error` (it withholds the entry's content), a
///   `kind` an error mark may carry (for kinds a later version adds), a meeting's
///   `state`, the version of the notes each read-back heard (`heard`), and a position's
///   `earlier` stances.
/// - 3: a meeting's `staff` (for each member of staff present, their name and role as the
///   server's team list had them), the care role `psychiatrist`, the decision status
///   `team_decided` (taken by the team while the person disagrees, every position kept), and the
///   safety and crisis plan (`crisis_plan`: items by section, each with every version of its
///   words, and the review dates), and the team's safety notes (`team_notes`: home-visit
///   safety notes and safeguarding concerns, each withheld from the person's copy only when
///   one practitioner asked with a reason and a second confirmed), and the letters and documents
///   attached to the case (`attachments`: what each is, its file's name, type, size and SHA-256,
///   the meeting it belongs to; the bytes are kept beside the document, never in it).
/// - 4: the referrals (`referrals`: when each came in, its source, referrer, reason in the
///   referrer's words, urgency, letter, and when the episode it opened was closed); a
///   re-referral opens a new episode on the same case.
pub const SCHEMA_VERSION: u64 = 4;

/// Why a document is not a valid case record: each problem with the path where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// Every problem found, as (path, what is wrong).
    pub problems: Vec<(String, String)>,
}

impl SchemaError {
    /// A single problem.
    pub fn single(path: &str, what: &str) -> Self {
        SchemaError {
            problems: vec![(path.to_string(), what.to_string())],
        }
    }
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self
            .problems
            .iter()
            .take(5)
            .map(|(p, w)| format!("{p} {w}"))
            .collect();
        write!(f, "{}", shown.join("; "))?;
        if self.problems.len() > 5 {
            write!(f, " (and {} more)", self.problems.len() - 5)?;
        }
        Ok(())
    }
}

impl std::error::Error for SchemaError {}

/// Read the case id from a document, if it has a valid one.
pub fn read_case_id(d: &impl ReadDoc) -> Option<CaseId> {
    super::read::get_str(d, &ROOT, keys::CASE_ID)?.parse().ok()
}

/// Read the team id from a document, if it has a valid one.
pub fn read_team_id(d: &impl ReadDoc) -> Option<TeamId> {
    super::read::get_str(d, &ROOT, keys::TEAM_ID)?.parse().ok()
}

/// Check that a document has the shape of a case record. An empty document is not a case.
pub fn validate_document(d: &impl ReadDoc) -> Result<(), SchemaError> {
    let mut v = Validator {
        d,
        problems: Vec::new(),
        maps: HashMap::new(),
        newer: false,
    };
    v.root();
    if v.problems.is_empty() {
        Ok(())
    } else {
        Err(SchemaError {
            problems: v.problems,
        })
    }
}

/// What a field must hold.
#[derive(Clone, Copy)]
enum Kind {
    /// A string of at most this many characters; `required` means it must not be empty.
    Str { max: usize, required: bool },
    /// A value from a vocabulary, checked by the function.
    Choice(fn(&str) -> bool),
    /// YYYY-MM-DD.
    Date,
    /// A timestamp.
    Timestamp,
    /// A valid NHS number.
    Nhs,
    /// A UUID string.
    Uuid,
    /// A participant key.
    Participant,
    /// A boolean.
    Bool,
    /// The version of the record a read-back heard: change hashes (see [`is_heads`]).
    Heads,
    /// An automerge Text object of at most MAX_LONG characters.
    Text,
    /// A media type (`type/subtype`), at most MAX_SHORT characters.
    MediaType,
    /// A size in bytes: a positive integer.
    Size,
    /// A SHA-256, as 64 lowercase hex digits.
    Sha256,
}

const SHORT: Kind = Kind::Str {
    max: MAX_SHORT,
    required: false,
};
const SHORT_REQ: Kind = Kind::Str {
    max: MAX_SHORT,
    required: true,
};
const LONG_REQ: Kind = Kind::Str {
    max: MAX_LONG,
    required: true,
};
const LONG: Kind = Kind::Str {
    max: MAX_LONG,
    required: false,
};

fn is<T: std::str::FromStr>(s: &str) -> bool {
    s.parse::<T>().is_ok()
}

/// A map object's fields, each with every concurrent value.
type Fields = BTreeMap<String, Vec<(Value<'static>, ObjId)>>;

struct Validator<'a, D: ReadDoc> {
    d: &'a D,
    problems: Vec<(String, String)>,
    /// Each map object's fields, read once. Looking a key up in automerge seeks through the
    /// object's ops; reading the map in one pass instead took validation of a care record from
    /// 1.35 ms to 0.25 ms (`cargo bench -p polyphony-core --bench hot_paths`).
    maps: HashMap<ObjId, Rc<Fields>>,
    /// The document was written by a newer schema than this code's: keys and vocabulary values
    /// this code does not know are kept and accepted (they are valid for the newer version), and
    /// everything it does know is still checked. See "Changing the record's shape" in
    /// DEVELOPERS.md.
    newer: bool,
}

impl<D: ReadDoc> Validator<'_, D> {
    fn bad(&mut self, path: &str, what: impl Into<String>) {
        // Bound the report: a hostile document could have millions of problems.
        if self.problems.len() < 100 {
            self.problems.push((path.to_string(), what.into()));
        }
    }

    /// A map's fields, every concurrent value of each: one pass over the map, then remembered.
    fn fields(&mut self, obj: &ObjId) -> Rc<Fields> {
        if let Some(f) = self.maps.get(obj) {
            return f.clone();
        }
        let mut fields = Fields::new();
        for item in self.d.map_range(obj, ..) {
            let values = if item.conflict {
                self.d
                    .get_all(obj, item.key.as_ref())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(v, id)| (v.into_owned(), id))
                    .collect()
            } else {
                let id = item.id();
                vec![(item.value.into_value(), id)]
            };
            fields.insert(item.key.into_owned(), values);
        }
        let fields = Rc::new(fields);
        self.maps.insert(obj.clone(), fields.clone());
        fields
    }

    /// Every value at a key (all concurrent values).
    fn all(&mut self, obj: &ObjId, key: &str) -> Vec<(Value<'static>, ObjId)> {
        self.fields(obj).get(key).cloned().unwrap_or_default()
    }

    /// The keys of a map.
    fn key_list(&mut self, obj: &ObjId) -> Vec<String> {
        self.fields(obj).keys().cloned().collect()
    }

    /// Check the keys of a map: required keys present, no unknown keys.
    fn keys(&mut self, obj: &ObjId, path: &str, required: &[&str], optional: &[&str]) {
        let fields = self.fields(obj);
        for k in required {
            if !fields.contains_key(*k) {
                self.bad(&format!("{path}.{k}"), "is missing");
            }
        }
        for k in fields.keys() {
            if required.contains(&k.as_str()) || optional.contains(&k.as_str()) {
                continue;
            }
            if !self.newer {
                self.bad(&format!("{path}.{k}"), "is not part of a case record");
                continue;
            }
            // A newer version's field: kept unread, but bounded like any long field, so a record
            // cannot be swollen through a key this version does not know.
            for (value, id) in self.all(obj, k) {
                let len = match value {
                    Value::Scalar(s) => match s.as_ref() {
                        ScalarValue::Str(v) => v.chars().count(),
                        ScalarValue::Bytes(b) => b.len(),
                        _ => 0,
                    },
                    Value::Object(ObjType::Text) => self.d.length(&id),
                    Value::Object(_) => 0,
                };
                if len > MAX_LONG {
                    self.bad(
                        &format!("{path}.{k}"),
                        format!("is too long ({len}, at most {MAX_LONG})"),
                    );
                }
            }
        }
    }

    /// Check a scalar (or text) field, in every concurrent value.
    fn field(&mut self, obj: &ObjId, path: &str, key: &str, kind: Kind) {
        let p = format!("{path}.{key}");
        for (value, id) in self.all(obj, key) {
            match (kind, value) {
                (Kind::Text, Value::Object(ObjType::Text)) => {
                    let len = self.d.length(&id);
                    if len > MAX_LONG {
                        self.bad(&p, format!("is too long ({len} characters)"));
                    }
                }
                (Kind::Text, _) => self.bad(&p, "must be text"),
                (_, Value::Object(_)) => self.bad(&p, "must be a value, not an object"),
                (_, Value::Scalar(s)) => self.scalar(&p, kind, s.as_ref()),
            }
        }
    }

    fn scalar(&mut self, p: &str, kind: Kind, s: &ScalarValue) {
        match (kind, s) {
            // A cleared optional field is stored as null.
            (
                Kind::Str {
                    required: false, ..
                },
                ScalarValue::Null,
            ) => {}
            (Kind::Date | Kind::Nhs, ScalarValue::Null) => {}
            (Kind::Str { max, required }, ScalarValue::Str(v)) => {
                let len = v.chars().count();
                if required && v.trim().is_empty() {
                    self.bad(p, "must not be empty");
                } else if len > max {
                    self.bad(p, format!("is too long ({len} characters, at most {max})"));
                }
            }
            (Kind::Heads, ScalarValue::Str(v)) => {
                if !is_heads(v) {
                    self.bad(p, "is not a version of the record (change hashes)");
                }
            }
            (Kind::Choice(_), ScalarValue::Str(v))
                if self.newer && v.chars().count() > MAX_SHORT =>
            {
                self.bad(p, format!("is too long (at most {MAX_SHORT} characters)"));
            }
            (Kind::Choice(ok), ScalarValue::Str(v)) => {
                // A newer schema may add values to a vocabulary; shown as written.
                if !ok(v) && !self.newer {
                    self.bad(p, format!("has an unknown value '{}'", truncate(v)));
                }
            }
            (Kind::Date, ScalarValue::Str(v)) => {
                if parse_date("date", v).is_err() {
                    self.bad(p, format!("is not a YYYY-MM-DD date ('{}')", truncate(v)));
                }
            }
            (Kind::Nhs, ScalarValue::Str(v)) => {
                if let Err(e) = validate_nhs_number(v) {
                    self.bad(p, e.to_string());
                }
            }
            (Kind::Uuid, ScalarValue::Str(v)) => {
                if uuid::Uuid::parse_str(v).is_err() {
                    self.bad(p, "is not an id");
                }
            }
            // The kinds of participant (the person, a network member, a practitioner) are closed,
            // even to a newer schema: who took part in a meeting or a decision is what the access
            // rules and the wrong-person withholding read, so a new kind needs a new field, not a
            // new spelling here. (Vocabulary values, by contrast, are open to a newer schema.)
            (Kind::Participant, ScalarValue::Str(v)) => {
                if v.parse::<Participant>().is_err() {
                    self.bad(p, "is not a participant");
                }
            }
            (Kind::MediaType, ScalarValue::Str(v)) => {
                let ok = v.chars().count() <= MAX_SHORT
                    && v.split_once('/').is_some_and(|(t, s)| {
                        let token = |x: &str| {
                            !x.is_empty()
                                && x.bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
                        };
                        token(t) && token(s)
                    });
                if !ok {
                    self.bad(p, format!("is not a media type ('{}')", truncate(v)));
                }
            }
            (Kind::Size, ScalarValue::Uint(n)) if *n > 0 => {}
            (Kind::Size, ScalarValue::Int(n)) if *n > 0 => {}
            (Kind::Size, ScalarValue::Uint(_) | ScalarValue::Int(_)) => {
                self.bad(p, "must be more than 0 bytes")
            }
            (Kind::Sha256, ScalarValue::Str(v)) => {
                if v.parse::<crate::BlobHash>().is_err() {
                    self.bad(p, "is not a SHA-256 (64 lowercase hex digits)");
                }
            }
            (Kind::Timestamp, ScalarValue::Timestamp(_)) => {}
            (Kind::Bool, ScalarValue::Boolean(_)) => {}
            _ => self.bad(p, "has the wrong type"),
        }
    }

    /// Every map value under `key` (all concurrent ones), checked by `f`.
    fn maps(
        &mut self,
        obj: &ObjId,
        path: &str,
        key: &str,
        mut f: impl FnMut(&mut Self, &ObjId, &str),
    ) {
        let p = format!("{path}.{key}");
        for (value, id) in self.all(obj, key) {
            match value {
                Value::Object(ObjType::Map) => f(self, &id, &p),
                _ => self.bad(&p, "must be a map"),
            }
        }
    }

    /// A map of entries keyed by id: each key must be a UUID and each value a map checked by `f`.
    fn collection(
        &mut self,
        obj: &ObjId,
        path: &str,
        key: &str,
        key_ok: fn(&str) -> bool,
        f: fn(&mut Self, &ObjId, &str),
    ) {
        self.maps(obj, path, key, |v, coll, p| {
            for k in v.key_list(coll) {
                let ep = format!("{p}.{k}");
                if !key_ok(&k) {
                    v.bad(&ep, "has a malformed key");
                    continue;
                }
                v.maps(coll, p, &k, |v, e, _| f(v, e, &ep));
            }
        });
    }

    /// A list of maps, each checked by `f`.
    fn list_of_maps(&mut self, obj: &ObjId, path: &str, key: &str, f: fn(&mut Self, &ObjId, &str)) {
        let p = format!("{path}.{key}");
        for (value, id) in self.all(obj, key) {
            if !matches!(value, Value::Object(ObjType::List)) {
                self.bad(&p, "must be a list");
                continue;
            }
            for i in 0..self.d.length(&id) {
                let ip = format!("{p}[{i}]");
                match self.d.get(&id, i) {
                    Ok(Some((Value::Object(ObjType::Map), e))) => f(self, &e, &ip),
                    _ => self.bad(&ip, "must be a map"),
                }
            }
        }
    }

    fn author(&mut self, obj: &ObjId, path: &str) {
        self.keys(
            obj,
            path,
            &[keys::PRACTITIONER, keys::PRACTITIONER_NAME, keys::DEVICE],
            &[],
        );
        self.field(obj, path, keys::PRACTITIONER, Kind::Uuid);
        self.field(obj, path, keys::PRACTITIONER_NAME, SHORT);
        self.field(obj, path, keys::DEVICE, Kind::Uuid);
    }

    /// `created_by`/`created_at` and the optional error mark that every entry has.
    fn entry_common(&mut self, e: &ObjId, path: &str) {
        self.maps(e, path, keys::CREATED_BY, |v, a, p| v.author(a, p));
        self.field(e, path, keys::CREATED_AT, Kind::Timestamp);
        self.maps(e, path, keys::ENTERED_IN_ERROR, |v, m, p| {
            v.keys(m, p, &[keys::REASON, keys::BY, keys::AT], &[keys::KIND]);
            v.field(m, p, keys::KIND, Kind::Choice(is::<ErrorKind>));
            v.error_mark(m, p);
        });
        // Schema 2: a mark of its own, so an entry first marked a mistake can be marked again as
        // on the wrong person's record without touching the first mark.
        self.maps(e, path, keys::WRONG_PERSON, |v, m, p| {
            v.keys(m, p, &[keys::REASON, keys::BY, keys::AT], &[]);
            v.error_mark(m, p);
        });
    }

    fn error_mark(&mut self, m: &ObjId, p: &str) {
        self.field(m, p, keys::REASON, LONG_REQ);
        self.field(m, p, keys::AT, Kind::Timestamp);
        self.maps(m, p, keys::BY, |v, a, p| v.author(a, p));
    }

    fn root(&mut self) {
        let r = ROOT;
        if self.fields(&r).is_empty() {
            self.bad("document", "is empty");
            return;
        }
        match schema_version(self.d) {
            // Devices one version apart keep syncing; two apart, the older one must be updated
            // first (and a hostile device cannot claim a far-future version to escape checks
            // for good).
            Ok(Some(version)) if version > SCHEMA_VERSION + 1 => self.bad(
                "case.schema_version",
                format!(
                    "is {version}: this record was written by a version of Polyphony two or more \
                     ahead of this one (which knows {SCHEMA_VERSION}); update this device or server"
                ),
            ),
            Ok(Some(version)) => self.newer = version > SCHEMA_VERSION,
            Ok(None) => {}
            Err(e) => self.problems.extend(e.problems),
        }
        self.keys(
            &r,
            "case",
            &[
                keys::SCHEMA_VERSION,
                keys::CASE_ID,
                keys::TEAM_ID,
                keys::CREATED_AT,
                keys::CREATED_BY,
                keys::ACTORS,
                keys::PERSON,
                keys::NETWORK,
                keys::CARE_TEAM,
                keys::TIMELINE,
                keys::MEETINGS,
                keys::DECISIONS,
            ],
            &[
                keys::CRISIS_PLAN,
                keys::TEAM_NOTES,
                keys::ATTACHMENTS,
                keys::REFERRALS,
            ],
        );
        self.field(&r, "case", keys::CASE_ID, Kind::Uuid);
        self.field(&r, "case", keys::TEAM_ID, Kind::Uuid);
        self.field(&r, "case", keys::CREATED_AT, Kind::Timestamp);
        self.maps(&r, "case", keys::CREATED_BY, |v, a, p| v.author(a, p));
        self.collection(
            &r,
            "case",
            keys::ACTORS,
            |k| hex::decode(k).is_ok_and(|b| b.len() == 16),
            |v, a, p| v.author(a, p),
        );
        self.maps(&r, "case", keys::PERSON, |v, person, p| {
            let optional: Vec<&str> = PersonField::ALL
                .iter()
                .filter(|f| **f != PersonField::Name)
                .map(|f| f.as_str())
                .collect();
            v.keys(person, p, &[PersonField::Name.as_str()], &optional);
            for f in PersonField::ALL {
                let kind = match f {
                    PersonField::Name => SHORT_REQ,
                    PersonField::NhsNumber => Kind::Nhs,
                    PersonField::DateOfBirth => Kind::Date,
                    _ => SHORT,
                };
                v.field(person, p, f.as_str(), kind);
            }
        });
        self.maps(&r, "case", keys::TIMELINE, |v, tl, p| {
            let all: Vec<&str> = TimelineField::ALL.iter().map(|f| f.as_str()).collect();
            v.keys(tl, p, &[], &all);
            for f in &all {
                v.field(tl, p, f, Kind::Timestamp);
            }
        });
        self.collection(&r, "case", keys::NETWORK, is::<uuid::Uuid>, Self::member);
        self.collection(
            &r,
            "case",
            keys::CARE_TEAM,
            is::<uuid::Uuid>,
            Self::care_team,
        );
        self.collection(&r, "case", keys::MEETINGS, is::<uuid::Uuid>, Self::meeting);
        self.collection(
            &r,
            "case",
            keys::DECISIONS,
            is::<uuid::Uuid>,
            Self::decision,
        );
        self.collection(
            &r,
            "case",
            keys::TEAM_NOTES,
            is::<uuid::Uuid>,
            Self::team_note,
        );
        self.collection(
            &r,
            "case",
            keys::ATTACHMENTS,
            is::<uuid::Uuid>,
            Self::attachment,
        );
        self.collection(
            &r,
            "case",
            keys::REFERRALS,
            is::<uuid::Uuid>,
            Self::referral,
        );
        self.maps(&r, "case", keys::CRISIS_PLAN, |v, plan, p| {
            v.keys(plan, p, &[], &[keys::ITEMS, keys::REVIEWS]);
            v.collection(plan, p, keys::ITEMS, is::<uuid::Uuid>, Self::plan_item);
            v.list_of_maps(plan, p, keys::REVIEWS, |v, r, p| {
                v.keys(r, p, &[keys::ON, keys::BY, keys::AT], &[]);
                v.field(r, p, keys::ON, Kind::Date);
                v.field(r, p, keys::AT, Kind::Timestamp);
                v.maps(r, p, keys::BY, |v, a, p| v.author(a, p));
            });
        });
    }

    /// An attached file's description (schema 3). Its type and size are checked for their form,
    /// not against this version's lists: a newer version may take more kinds of file, or larger
    /// ones.
    fn attachment(&mut self, e: &ObjId, p: &str) {
        self.keys(
            e,
            p,
            &[
                keys::KIND,
                keys::TITLE,
                keys::FILE_NAME,
                keys::MEDIA_TYPE,
                keys::SIZE,
                keys::SHA256,
                keys::CREATED_AT,
                keys::CREATED_BY,
            ],
            &[keys::MEETING, keys::ENTERED_IN_ERROR, keys::WRONG_PERSON],
        );
        self.entry_common(e, p);
        self.field(e, p, keys::KIND, Kind::Choice(is::<AttachmentKind>));
        self.field(e, p, keys::TITLE, SHORT_REQ);
        self.field(e, p, keys::FILE_NAME, SHORT_REQ);
        self.field(e, p, keys::MEDIA_TYPE, Kind::MediaType);
        self.field(e, p, keys::SIZE, Kind::Size);
        self.field(e, p, keys::SHA256, Kind::Sha256);
        self.field(e, p, keys::MEETING, Kind::Uuid);
    }

    /// A referral (schema 4). The referrer is not required here (a self-referral has none, and a
    /// newer version may add sources); the writer asks for it where it is needed.
    fn referral(&mut self, e: &ObjId, p: &str) {
        self.keys(
            e,
            p,
            &[
                keys::RECEIVED_AT,
                keys::SOURCE,
                keys::REASON,
                keys::URGENCY,
                keys::CREATED_AT,
                keys::CREATED_BY,
            ],
            &[
                keys::REFERRER,
                keys::LETTER,
                keys::CLOSED_AT,
                keys::ENTERED_IN_ERROR,
                keys::WRONG_PERSON,
            ],
        );
        self.entry_common(e, p);
        self.field(e, p, keys::RECEIVED_AT, Kind::Timestamp);
        self.field(e, p, keys::SOURCE, Kind::Choice(is::<ReferralSource>));
        self.field(e, p, keys::REFERRER, SHORT);
        self.field(e, p, keys::REASON, LONG_REQ);
        self.field(e, p, keys::URGENCY, Kind::Choice(is::<Urgency>));
        self.field(e, p, keys::LETTER, Kind::Uuid);
        self.field(e, p, keys::CLOSED_AT, Kind::Timestamp);
    }

    /// A safety note or safeguarding concern (schema 3), with its withholding events.
    fn team_note(&mut self, e: &ObjId, p: &str) {
        self.keys(
            e,
            p,
            &[keys::KIND, keys::TEXT, keys::CREATED_AT, keys::CREATED_BY],
            &[
                keys::WITHHOLDING,
                keys::ENTERED_IN_ERROR,
                keys::WRONG_PERSON,
            ],
        );
        self.entry_common(e, p);
        self.field(e, p, keys::KIND, Kind::Choice(is::<TeamNoteKind>));
        self.field(e, p, keys::TEXT, LONG_REQ);
        self.list_of_maps(e, p, keys::WITHHOLDING, |v, ev, p| {
            v.keys(
                ev,
                p,
                &[keys::EVENT, keys::BY, keys::AT],
                &[keys::ID, keys::REQUEST, keys::REASON],
            );
            v.field(ev, p, keys::EVENT, Kind::Choice(is::<WithholdingEvent>));
            v.field(ev, p, keys::ID, Kind::Uuid);
            v.field(ev, p, keys::REQUEST, Kind::Uuid);
            v.field(ev, p, keys::REASON, LONG);
            v.field(ev, p, keys::AT, Kind::Timestamp);
            v.maps(ev, p, keys::BY, |v, a, p| v.author(a, p));
            // What each event needs to mean anything: an ask its id and reason, a confirmation
            // or a lift the request it answers (a lift its reason too).
            let has = |v: &mut Self, k: &str| !v.all(ev, k).is_empty();
            let needs: &[&str] = match super::read::get_str(v.d, ev, keys::EVENT).as_deref() {
                Some("ask") => &[keys::ID, keys::REASON],
                Some("confirm") => &[keys::REQUEST],
                Some("lift") => &[keys::REQUEST, keys::REASON],
                _ => &[],
            };
            for k in needs {
                if !has(v, k) {
                    v.bad(&format!("{p}.{k}"), "is missing");
                }
            }
        });
    }

    /// An item of the crisis plan (schema 3): its section and every version of its words.
    fn plan_item(&mut self, e: &ObjId, p: &str) {
        self.keys(
            e,
            p,
            &[
                keys::SECTION,
                keys::VERSIONS,
                keys::CREATED_AT,
                keys::CREATED_BY,
            ],
            &[keys::ENTERED_IN_ERROR, keys::WRONG_PERSON],
        );
        self.entry_common(e, p);
        self.field(e, p, keys::SECTION, Kind::Choice(is::<PlanSection>));
        for (value, list) in self.all(e, keys::VERSIONS) {
            if matches!(value, Value::Object(ObjType::List)) && self.d.length(&list) == 0 {
                self.bad(
                    &format!("{p}.{}", keys::VERSIONS),
                    "must hold at least one version",
                );
            }
        }
        self.list_of_maps(e, p, keys::VERSIONS, |v, x, p| {
            v.keys(
                x,
                p,
                &[keys::TEXT, keys::WORDS_OF, keys::BY, keys::AT],
                &[keys::MEETING],
            );
            v.field(x, p, keys::TEXT, LONG_REQ);
            v.field(x, p, keys::WORDS_OF, Kind::Participant);
            v.field(x, p, keys::MEETING, Kind::Uuid);
            v.field(x, p, keys::AT, Kind::Timestamp);
            v.maps(x, p, keys::BY, |v, a, p| v.author(a, p));
        });
    }

    fn member(&mut self, m: &ObjId, p: &str) {
        self.keys(
            m,
            p,
            &[
                keys::NAME,
                "relationship",
                keys::ROLE,
                keys::INVITED_BY,
                keys::JOINED,
                keys::CONSENT,
                keys::CREATED_AT,
                keys::CREATED_BY,
            ],
            &[
                "phone",
                "email",
                keys::LEFT,
                keys::ENTERED_IN_ERROR,
                keys::WRONG_PERSON,
            ],
        );
        self.entry_common(m, p);
        self.field(m, p, keys::NAME, SHORT_REQ);
        self.field(m, p, "relationship", SHORT_REQ);
        self.field(m, p, keys::ROLE, Kind::Choice(is::<Role>));
        self.field(m, p, "phone", SHORT);
        self.field(m, p, "email", SHORT);
        self.field(m, p, keys::INVITED_BY, Kind::Participant);
        self.field(m, p, keys::JOINED, Kind::Date);
        self.field(m, p, keys::LEFT, Kind::Date);
        self.list_of_maps(m, p, keys::CONSENT, |v, c, p| {
            v.keys(
                c,
                p,
                &[keys::STATE, keys::DATE, keys::RECORDED_BY, keys::AT],
                &[],
            );
            v.field(c, p, keys::STATE, Kind::Choice(is::<ConsentState>));
            v.field(c, p, keys::DATE, Kind::Date);
            v.field(c, p, keys::AT, Kind::Timestamp);
            v.maps(c, p, keys::RECORDED_BY, |v, a, p| v.author(a, p));
        });
    }

    fn care_team(&mut self, e: &ObjId, p: &str) {
        self.keys(
            e,
            p,
            &[
                keys::PRACTITIONER,
                keys::NAME,
                keys::ROLE,
                keys::START,
                keys::CREATED_AT,
                keys::CREATED_BY,
            ],
            &[keys::END, keys::ENTERED_IN_ERROR, keys::WRONG_PERSON],
        );
        self.entry_common(e, p);
        self.field(e, p, keys::PRACTITIONER, Kind::Uuid);
        self.field(e, p, keys::NAME, SHORT_REQ);
        self.field(e, p, keys::ROLE, Kind::Choice(is::<CareRole>));
        self.field(e, p, keys::START, Kind::Date);
        self.field(e, p, keys::END, Kind::Date);
    }

    fn meeting(&mut self, m: &ObjId, p: &str) {
        self.keys(
            m,
            p,
            &[
                keys::AT,
                keys::PLACE,
                keys::ATTENDEES,
                "notes",
                "reflections",
                "agreed",
                keys::READBACK,
                keys::CREATED_AT,
                keys::CREATED_BY,
            ],
            &[
                keys::NEXT_MEETING,
                keys::ENTERED_IN_ERROR,
                keys::WRONG_PERSON,
                keys::STATE,
                keys::STAFF,
            ],
        );
        self.entry_common(m, p);
        self.maps(m, p, keys::STAFF, |v, staff, p| {
            for k in v.key_list(staff) {
                if uuid::Uuid::parse_str(&k).is_err() {
                    v.bad(&format!("{p}.{k}"), "is not a practitioner id");
                }
                v.maps(staff, p, &k, |v, s, p| {
                    v.keys(s, p, &[keys::NAME, keys::ROLE], &[]);
                    v.field(s, p, keys::NAME, SHORT_REQ);
                    v.field(s, p, keys::ROLE, Kind::Choice(is::<StaffRole>));
                });
            }
        });
        self.field(m, p, keys::STATE, Kind::Choice(is::<MeetingState>));
        self.field(m, p, keys::AT, Kind::Timestamp);
        self.field(m, p, keys::NEXT_MEETING, Kind::Timestamp);
        self.field(m, p, keys::PLACE, Kind::Choice(is::<Place>));
        for kind in NoteKind::ALL {
            self.field(m, p, kind.as_str(), Kind::Text);
        }
        self.maps(m, p, keys::ATTENDEES, |v, att, p| {
            for k in v.key_list(att) {
                if k.parse::<Participant>().is_err() {
                    v.bad(&format!("{p}.{k}"), "is not a participant");
                }
                v.field(att, p, &k, Kind::Bool);
            }
        });
        self.maps(m, p, keys::READBACK, |v, rb, p| {
            for k in v.key_list(rb) {
                if k.parse::<Participant>().is_err() {
                    v.bad(&format!("{p}.{k}"), "is not a participant");
                }
                v.maps(rb, p, &k, |v, r, p| {
                    v.keys(
                        r,
                        p,
                        &[keys::RESPONSE, keys::RECORDED_BY, keys::AT],
                        &[keys::WORDS, keys::HEARD],
                    );
                    v.field(r, p, keys::HEARD, Kind::Heads);
                    v.field(r, p, keys::RESPONSE, Kind::Choice(is::<ReadbackResponse>));
                    v.field(r, p, keys::WORDS, LONG);
                    v.field(r, p, keys::AT, Kind::Timestamp);
                    v.maps(r, p, keys::RECORDED_BY, |v, a, p| v.author(a, p));
                });
            }
        });
    }

    /// A participant's stance on a decision: in `positions` (schema 1, one per participant) or
    /// appended to their list in `position_history` (schema 2).
    fn position(&mut self, x: &ObjId, p: &str) {
        self.keys(
            x,
            p,
            &[keys::STANCE, keys::RECORDED_BY, keys::AT],
            &[keys::WORDS],
        );
        self.field(x, p, keys::STANCE, Kind::Choice(is::<Stance>));
        self.field(x, p, keys::WORDS, LONG);
        self.field(x, p, keys::AT, Kind::Timestamp);
        self.maps(x, p, keys::RECORDED_BY, |v, a, p| v.author(a, p));
    }

    fn decision(&mut self, e: &ObjId, p: &str) {
        self.keys(
            e,
            p,
            &[
                keys::TEXT,
                keys::PROPOSED_BY,
                keys::STATUS,
                keys::STATUS_HISTORY,
                keys::POSITIONS,
                keys::ACTIONS,
                keys::CREATED_AT,
                keys::CREATED_BY,
            ],
            &[
                keys::ENTERED_IN_ERROR,
                keys::WRONG_PERSON,
                keys::POSITION_HISTORY,
            ],
        );
        self.entry_common(e, p);
        self.maps(e, p, keys::POSITION_HISTORY, |v, hist, p| {
            for k in v.key_list(hist) {
                if k.parse::<Participant>().is_err() {
                    v.bad(&format!("{p}.{k}"), "is not a participant");
                }
                v.list_of_maps(hist, p, &k, Self::position);
            }
        });
        self.field(e, p, keys::TEXT, LONG_REQ);
        self.field(e, p, keys::PROPOSED_BY, Kind::Participant);
        self.field(e, p, keys::STATUS, Kind::Choice(is::<DecisionStatus>));
        self.list_of_maps(e, p, keys::STATUS_HISTORY, |v, h, p| {
            v.keys(h, p, &[keys::STATUS, keys::BY, keys::AT], &[keys::NOTE]);
            v.field(h, p, keys::STATUS, Kind::Choice(is::<DecisionStatus>));
            v.field(h, p, keys::NOTE, LONG);
            v.field(h, p, keys::AT, Kind::Timestamp);
            v.maps(h, p, keys::BY, |v, a, p| v.author(a, p));
        });
        self.maps(e, p, keys::POSITIONS, |v, pos, p| {
            for k in v.key_list(pos) {
                if k.parse::<Participant>().is_err() {
                    v.bad(&format!("{p}.{k}"), "is not a participant");
                }
                v.maps(pos, p, &k, Self::position);
            }
        });
        self.collection(e, p, keys::ACTIONS, is::<uuid::Uuid>, |v, a, p| {
            v.keys(
                a,
                p,
                &[
                    keys::TEXT,
                    keys::OWNER,
                    keys::DONE,
                    keys::CREATED_AT,
                    keys::CREATED_BY,
                ],
                &[keys::DUE, keys::ENTERED_IN_ERROR, keys::WRONG_PERSON],
            );
            v.entry_common(a, p);
            v.field(a, p, keys::TEXT, SHORT_REQ);
            v.field(a, p, keys::OWNER, Kind::Participant);
            v.field(a, p, keys::DUE, Kind::Date);
            v.field(a, p, keys::DONE, Kind::Bool);
        });
    }
}

/// The schema version a document declares: the highest of its concurrent values (two devices
/// may raise it at once). `Err` when a value is not a whole number from 1.
pub fn schema_version(d: &impl ReadDoc) -> Result<Option<u64>, SchemaError> {
    let bad = || {
        SchemaError::single(
            "case.schema_version",
            "is not a schema version (a whole number from 1)",
        )
    };
    let mut highest = None;
    for (value, _) in d.get_all(ROOT, keys::SCHEMA_VERSION).unwrap_or_default() {
        let v = match value {
            Value::Scalar(s) => match s.as_ref() {
                ScalarValue::Uint(v) if *v >= 1 => *v,
                ScalarValue::Int(v) if *v >= 1 => *v as u64,
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        };
        highest = highest.max(Some(v));
    }
    Ok(highest)
}

/// The version of the notes a participant heard at the read-back: the document's heads then, as
/// hex change hashes separated by spaces (at most 64: more concurrent heads than devices in a
/// care team is not a real read-back).
pub(crate) fn is_heads(s: &str) -> bool {
    let hashes: Vec<&str> = s.split(' ').collect();
    !s.is_empty()
        && hashes.len() <= 64
        && hashes
            .iter()
            .all(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}
