//! A subject-access export: everything the record holds about the person, in a form a machine can
//! read (JSON) and in a form the person can read (the HTML copy).
//!
//! The JSON is the whole [`CaseView`] (its shape is the CLI's documented `--json` shape, see
//! `docs/JSON.md`), with nothing filtered: who wrote each entry, on which device and when, every
//! consent, read-back, position and status change, entries marked entered in error with who marked
//! them and why, and the conflicts still to resolve. Around it go the accesses the server audited,
//! a table naming every participant key, and an index of the entries in error, so a reader need
//! not know the record's internals to make sense of it.

use serde_json::{json, Map, Value};

use super::{Access, Names};
use crate::model::view::{CaseView, EntryMeta};
use crate::model::{Participant, Stored};

/// The name of the JSON format, for whoever reads it later.
pub const FORMAT: &str = "polyphony.subject-access";
/// Its version.
pub const FORMAT_VERSION: u32 = 1;

/// Everything held about the person, machine-readable.
pub fn json(view: &CaseView, accesses: &[Access]) -> Value {
    let accesses = &super::access::without_withheld_names(view, accesses);
    // Notes two practitioners withheld from the person: listed as withheld, without their words
    // or the reason.
    let mut redacted = view.clone();
    crate::model::team_notes::redact_for_person(&mut redacted);
    let view = &redacted;
    let names = Names::of(view);
    let mut out = Map::new();
    out.insert("format".into(), json!(FORMAT));
    out.insert("format_version".into(), json!(FORMAT_VERSION));
    out.insert(
        "about".into(),
        json!(
            "Everything this Open Dialogue record holds about the person: their details, each \
             referral (who referred them, why in the referrer's words, how urgent) and the episode \
             of care it opened, their network, the care team, every meeting's notes and reflections, every decision with \
             each participant's position, the letters and documents attached (listed here: the \
             files themselves are held by the team beside the record and given to the person \
             with this export when they ask for them), who wrote each entry (practitioner and \
             device) and when, entries marked entered in error (kept, with who marked them, when and why), values \
             still in conflict, and who has accessed the record according to the server's audit."
        ),
    );
    if let Ok(Value::Object(record)) = serde_json::to_value(view) {
        out.insert("record".into(), Value::Object(record));
    }
    out.insert(
        "accesses_known".into(),
        json!(if accesses.is_empty() {
            "none: the export was made without the server's audit (the device had not synced)"
        } else {
            "from the server's audit log"
        }),
    );
    out.insert("accesses".into(), json!(accesses));
    out.insert(
        "participants".into(),
        Value::Object(participants(view, &names)),
    );
    out.insert("entries_in_error".into(), json!(in_error(view)));
    out.insert("withheld_from_person".into(), json!(withheld(view)));
    out.insert("attachments".into(), json!(attachments(view)));
    Value::Object(out)
}

/// The readable form of the subject-access export: the person's copy.
pub fn html(view: &CaseView, accesses: &[Access]) -> String {
    super::person_copy::html(view, accesses)
}

/// The notes withheld from the person: what kind, when written, who asked and who agreed, when.
fn withheld(view: &CaseView) -> Vec<Value> {
    view.team_notes
        .iter()
        .filter(|n| n.withheld_from_person())
        .map(|n| {
            let w = n.in_force().expect("withheld means a request in force");
            json!({
                "id": n.meta.id,
                "kind": n.kind,
                "written_at": n.meta.created_at,
                "asked_by": w.by.as_ref().map(|a| &a.practitioner_name),
                "asked_at": w.at,
                "confirmed_by": w.confirmed_by.as_ref().map(|a| &a.practitioner_name),
                "confirmed_at": w.confirmed_at,
            })
        })
        .collect()
}

fn participants(view: &CaseView, names: &Names) -> Map<String, Value> {
    let mut who = vec![Stored::Known(Participant::Person)];
    who.extend(
        view.network
            .iter()
            .map(|m| Stored::Known(Participant::Member(m.meta.id))),
    );
    let practitioner = |id: &str| match id.parse() {
        Ok(id) => Stored::Known(Participant::Practitioner(id)),
        Err(_) => Stored::Unknown(format!("practitioner:{id}")),
    };
    for a in super::authors(view) {
        who.push(practitioner(&a.practitioner));
    }
    who.extend(
        view.care_team
            .iter()
            .map(|c| practitioner(&c.practitioner.to_string())),
    );
    who.into_iter()
        .map(|p| (p.to_string(), json!(names.describe(&p))))
        .collect()
}

fn in_error(view: &CaseView) -> Vec<Value> {
    let mut out = Vec::new();
    let mut add = |kind: &str, label: &str, m: &EntryMeta| {
        if let Some(e) = &m.entered_in_error {
            out.push(json!({
                "kind": kind,
                "id": m.id,
                "entry": label,
                "reason": e.reason,
                "marked_by": e.by,
                "marked_at": e.at,
            }));
        }
    };
    for m in &view.network {
        add("network member", &m.name, &m.meta);
    }
    for c in &view.care_team {
        add("care team membership", &c.name, &c.meta);
    }
    for m in &view.meetings {
        add("meeting", m.at.as_deref().unwrap_or(""), &m.meta);
    }
    for d in &view.decisions {
        add("decision", &d.text, &d.meta);
        for a in &d.actions {
            add("action", &a.text, &a.meta);
        }
    }
    for a in &view.attachments {
        add("attachment", &a.title, &a.meta);
    }
    for r in &view.referrals {
        add("referral", &r.reason, &r.meta);
    }
    out
}

/// The letters and documents attached to the record: what each is, its file, who attached it
/// and when. Their bytes are kept beside the record, not in this JSON: the team gives the person
/// the files themselves (`polyphony attachment save`, or the case page) when they ask.
fn attachments(view: &CaseView) -> Vec<Value> {
    view.attachments
        .iter()
        .filter(|a| !a.meta.withheld())
        .map(|a| {
            json!({
                "id": a.meta.id,
                "kind": a.kind,
                "title": a.title,
                "file_name": a.file_name,
                "media_type": a.media_type,
                "size_bytes": a.size,
                "sha256": a.sha256,
                "meeting": a.meeting,
                "attached_by": a.meta.created_by,
                "attached_at": a.meta.created_at,
                "entered_in_error": a.meta.entered_in_error.is_some(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testcase::{accesses, rich_case};

    #[test]
    fn export_subject_access_holds_everything_with_authorship() {
        let rich = rich_case();
        let j = json(&rich.view, &accesses());
        assert_eq!(j["format"], FORMAT);
        // The whole view, losslessly.
        let back: CaseView = serde_json::from_value(j["record"].clone()).unwrap();
        assert_eq!(back, rich.view);
        assert_eq!(j["accesses"].as_array().unwrap().len(), 2);
        let errors = j["entries_in_error"].as_array().unwrap();
        assert_eq!(errors.len(), 3);
        assert!(errors
            .iter()
            .any(|e| e["reason"] == "Recorded on the wrong case"
                && e["marked_by"]["practitioner_name"] == "Kit Byrne"));
        let ana = format!("member:{}", rich.ana);
        assert_eq!(j["participants"][&ana], "Ana Lopez (sister)");
        // Who wrote the second meeting, and on which device.
        let second = rich.second_meeting.to_string();
        let m = j["record"]["meetings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == second.as_str())
            .unwrap();
        assert_eq!(m["created_by"]["practitioner_name"], "Kit Byrne");
        assert!(m["created_by"]["device"].as_str().unwrap().len() == 36);
        let none = json(&rich.view, &[]);
        assert!(none["accesses_known"].as_str().unwrap().starts_with("none"));
        assert!(html(&rich.view, &[]).contains("What was decided"));
    }
}
