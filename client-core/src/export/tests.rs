//! Acceptance tests of the exports against things outside this crate: HL7's FHIR R4 JSON schema,
//! and a real PDF reader (poppler's `pdftotext`).
//!
//! Neither is in the repository. `scripts/export-test-setup.sh` fetches them (the schema from the
//! npm registry into `target/fhir-schema/`, poppler-utils from Debian); these tests run it
//! themselves when something is missing, and fail, never skip, when it cannot be had.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value};

use super::testcase::{accesses, rich_case};
use super::{fhir, person_copy};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("client-core sits inside the workspace")
        .to_path_buf()
}

fn schema_path() -> PathBuf {
    std::env::var_os("FHIR_SCHEMA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target").join("fhir-schema"))
        .join("fhir.schema.json")
}

fn have_pdftotext() -> bool {
    Command::new("pdftotext")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success() || !o.stderr.is_empty())
}

/// What a test needs from the set-up script.
#[derive(Clone, Copy)]
enum Need {
    Schema,
    Pdftotext,
}

/// Run the set-up script (once per test process and need) if what the test needs is missing;
/// panic with the script's own words if it fails.
fn setup(need: Need) {
    static SCHEMA: OnceLock<Result<(), String>> = OnceLock::new();
    static PDFTOTEXT: OnceLock<Result<(), String>> = OnceLock::new();
    let (cell, present, arg) = match need {
        Need::Schema => (&SCHEMA, schema_path().is_file(), "schema"),
        Need::Pdftotext => (&PDFTOTEXT, have_pdftotext(), "pdftotext"),
    };
    let result = cell.get_or_init(|| {
        if present {
            return Ok(());
        }
        let script = workspace().join("scripts").join("export-test-setup.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(arg)
            .output()
            .map_err(|e| format!("could not run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} {arg} failed:\n{}{}",
                script.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("the export tests' set-up failed, so they cannot check the exports: {e}");
    }
}

fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        setup(Need::Schema);
        let path = schema_path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("cannot read the FHIR R4 schema at {}: {e}", path.display())
        });
        let s: Value = serde_json::from_str(&text).expect("the FHIR R4 schema is JSON");
        assert_eq!(
            s["id"],
            "http://hl7.org/fhir/json-schema/4.0",
            "{} is not HL7's FHIR R4 JSON schema",
            path.display()
        );
        s
    })
}

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        jsonschema::draft6::new(schema()).expect("the FHIR R4 schema compiles as draft-06")
    })
}

/// Every schema error in a Bundle. On failure each resource is also checked against its own
/// definition: the Bundle-level errors of a `oneOf` over every resource type say little.
fn schema_errors(bundle: &Value) -> Vec<String> {
    let v = validator();
    if v.is_valid(bundle) {
        return Vec::new();
    }
    let mut out: Vec<String> = v
        .iter_errors(bundle)
        .take(5)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    let definitions = &schema()["definitions"];
    for (i, entry) in bundle["entry"].as_array().into_iter().flatten().enumerate() {
        let kind = entry["resource"]["resourceType"].as_str().unwrap_or("?");
        let one = json!({
            "$schema": "http://json-schema.org/draft-06/schema#",
            "$ref": format!("#/definitions/{kind}"),
            "definitions": definitions,
        });
        let Ok(rv) = jsonschema::draft6::new(&one) else {
            out.push(format!("entry {i}: unknown resourceType {kind}"));
            continue;
        };
        for e in rv.iter_errors(&entry["resource"]).take(5) {
            out.push(format!("entry {i} ({kind}) {}: {e}", e.instance_path()));
        }
    }
    out
}

#[test]
fn export_fhir_bundle_validates_against_the_fhir_r4_schema() {
    let rich = rich_case();
    let bundle = fhir::bundle(&rich.view, &accesses());
    let errors = schema_errors(&bundle);
    assert!(
        errors.is_empty(),
        "the Bundle breaks the FHIR R4 schema:\n{}",
        errors.join("\n")
    );

    // The schema really is checking: an unknown status, an element FHIR does not define and a
    // time without seconds are each refused.
    let breakages: [(&str, &str, Value); 3] = [
        ("Encounter", "status", json!("deleted")),
        ("Patient", "pronouns", json!("she/her")),
        ("Provenance", "recorded", json!("2026-03-14T10:30Z")),
    ];
    for (kind, field, value) in breakages {
        let mut broken = bundle.clone();
        let resource = broken["entry"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|e| e["resource"]["resourceType"] == kind)
            .unwrap();
        resource["resource"][field] = value;
        assert!(
            !validator().is_valid(&broken),
            "the schema let {kind}.{field} through"
        );
    }
    // ...and so is an empty case.
    let empty = crate::model::CaseDoc::create(
        crate::CaseId::random(),
        crate::TeamId::random(),
        crate::model::NewCase {
            name: "Jo".into(),
            ..Default::default()
        },
        super::testcase::author("Sam"),
    )
    .unwrap();
    let errors = schema_errors(&fhir::bundle(&empty.view(), &[]));
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// Every `reference` anywhere in the Bundle.
fn references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                match (k.as_str(), x) {
                    ("reference", Value::String(s)) => out.push(s.clone()),
                    _ => references(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| references(x, out)),
        _ => {}
    }
}

#[test]
fn export_fhir_references_resolve_inside_the_bundle() {
    let rich = rich_case();
    let bundle = fhir::bundle(&rich.view, &accesses());
    let entries = bundle["entry"].as_array().unwrap();
    let full_urls: Vec<&str> = entries
        .iter()
        .map(|e| e["fullUrl"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&str> = full_urls.iter().copied().collect();
    assert_eq!(unique.len(), full_urls.len(), "fullUrls are unique");

    let mut refs = Vec::new();
    references(&bundle, &mut refs);
    assert!(refs.len() > 100, "{}", refs.len());
    for r in &refs {
        assert!(r.starts_with("urn:uuid:"), "{r}");
        assert!(
            unique.contains(r.as_str()),
            "{r} does not resolve inside the Bundle"
        );
    }

    // Round trip: the record's ids come back out.
    let ids = fhir::ids(&bundle).unwrap();
    assert_eq!(ids.case.as_deref(), Some(rich.view.case_id.as_str()));
    let members: BTreeSet<String> = rich
        .view
        .network
        .iter()
        .map(|m| m.meta.id.clone())
        .collect();
    assert_eq!(
        ids.members.iter().cloned().collect::<BTreeSet<_>>(),
        members
    );
    let meetings: BTreeSet<String> = rich
        .view
        .meetings
        .iter()
        .map(|m| m.meta.id.clone())
        .collect();
    assert_eq!(
        ids.meetings.iter().cloned().collect::<BTreeSet<_>>(),
        meetings
    );
    let decisions: BTreeSet<String> = rich
        .view
        .decisions
        .iter()
        .map(|d| d.meta.id.clone())
        .collect();
    assert_eq!(
        ids.decisions.iter().cloned().collect::<BTreeSet<_>>(),
        decisions
    );
    // And through text, as the trust would receive it.
    let text = serde_json::to_string_pretty(&bundle).unwrap();
    let reparsed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(fhir::ids(&reparsed).unwrap(), ids);
}

fn pdf_text(pdf: &[u8]) -> String {
    setup(Need::Pdftotext);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.pdf");
    std::fs::write(&path, pdf).unwrap();
    let out = Command::new("pdftotext")
        .args(["-enc", "UTF-8"])
        .arg(&path)
        .arg("-")
        .output()
        .expect("pdftotext runs");
    assert!(
        out.status.success(),
        "pdftotext could not read the PDF: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn export_person_copy_pdf_turns_into_pages_with_the_text() {
    let rich = rich_case();
    let pdf = person_copy::pdf(&rich.view, &accesses());
    assert!(pdf.starts_with(b"%PDF-"));
    let raw = pdf_text(&pdf);
    let pages = raw.matches('\u{c}').count();
    assert!(pages >= 2, "the copy runs over pages ({pages})");
    let text = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "María's record",
        "Who is in María's network",
        "Ana Lopez, sister",
        "Tom Reid, friend from work",
        "Sam Okafor",
        "Kit Byrne",
        "What we talked about on 14 March 2026",
        "María talked about not sleeping since February.",
        "Ana said <script>alert('x')</script> & worried.",
        "Kit: I noticed how much Ana carries.",
        "She walks every morning with me.",
        "What was decided, and what everyone thought",
        "Ana Lopez (sister) disagrees, and said:",
        "Too soon, she is exhausted",
        "I want to be outside with people",
        "I don't want tablets",
        "was entered in error: Recorded on the wrong case",
        "Notes for another person.",
        "Dr Lee (duty psychiatrist)",
        "9991000003",
    ] {
        assert!(text.contains(want), "the PDF text lacks {want:?}:\n{text}");
    }
    assert!(text.contains(&format!("page 1 of {pages}")), "{text}");
}

#[test]
#[ignore = "writes samples for a person to look at: cargo test -p polyphony-core export_write_samples -- --ignored"]
fn export_write_samples() {
    let rich = rich_case();
    let dir = workspace().join("target").join("export-samples");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("copy.pdf"),
        person_copy::pdf(&rich.view, &accesses()),
    )
    .unwrap();
    std::fs::write(
        dir.join("copy.html"),
        person_copy::html(&rich.view, &accesses()),
    )
    .unwrap();
    let bundle = fhir::bundle(&rich.view, &accesses());
    std::fs::write(
        dir.join("bundle.json"),
        serde_json::to_string_pretty(&bundle).unwrap(),
    )
    .unwrap();
}

/// Issue 15, part 1: every copy shows a summer meeting at the UK clock time it was typed at and
/// says "UK time"; FHIR carries the instant at its UK offset. Before, the copies printed the UTC
/// clock time (09:30 for a 10:30 meeting in June) with no zone.
#[test]
fn export_copies_show_uk_time_and_fhir_carries_the_uk_offset() {
    use crate::model::{
        parse_datetime, CaseDoc, NewCase, NewMeeting, Participant, Place, TimelineField,
    };
    let sam = super::testcase::author("Sam Okafor");
    let mut case = CaseDoc::create(
        crate::CaseId::random(),
        crate::TeamId::random(),
        NewCase {
            name: "Maria Lopez".into(),
            ..Default::default()
        },
        sam,
    )
    .unwrap();
    let summer = parse_datetime("at", "2026-06-14T10:30").unwrap();
    case.add_meeting(NewMeeting {
        at: summer,
        place: Place::Home,
        attendees: vec![Participant::Person],
    })
    .unwrap();
    // First contact after midnight in summer: its UK date is the 2nd, its UTC date the 1st.
    let late = parse_datetime("at", "2026-07-02T00:30").unwrap();
    case.set_timeline(TimelineField::FirstContact, late)
        .unwrap();
    let view = case.view();
    let copy = person_copy::html(&view, &[]);
    assert!(
        copy.contains("on 14 June 2026") && copy.contains("at 10:30 UK time"),
        "{copy}"
    );
    assert!(copy.contains("2 July 2026 at 00:30 UK time"), "{copy}");
    assert!(
        !copy.contains("09:30") && !copy.contains("1 July 2026"),
        "{copy}"
    );
    let subject = super::subject_access::html(&view, &[]);
    assert!(subject.contains("UK time") && !subject.contains("09:30"));
    let bundle = fhir::bundle(&view, &[]);
    let text = bundle.to_string();
    assert!(text.contains("2026-06-14T10:30:00+01:00"), "{text}");
    assert!(!text.contains("2026-06-14T09:30:00Z"), "{text}");
    assert!(text.contains("10:30 UK time"), "the narrative says UK time");
}
