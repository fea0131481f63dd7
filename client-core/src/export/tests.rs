//! Acceptance tests of the exports against things outside this crate: HL7's FHIR R4 JSON schema,
//! and a real PDF reader (poppler's `pdftotext`), reading copies set in the Noto fonts.
//!
//! None of these is in the repository. `scripts/export-test-setup.sh` fetches them (the schema
//! from the npm registry into `target/fhir-schema/`, poppler-utils and the fonts from Debian, the
//! fonts into `target/fonts/`); these tests run it themselves when something is missing, and fail,
//! never skip, when it cannot be had.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value};

use super::person_copy::Fonts;
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

fn font_dir() -> PathBuf {
    std::env::var_os("POLYPHONY_FONT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target").join("fonts"))
}

/// What a test needs from the set-up script.
#[derive(Clone, Copy)]
enum Need {
    Schema,
    Pdftotext,
    Fonts,
}

/// Run the set-up script (once per test process and need) if what the test needs is missing;
/// panic with the script's own words if it fails.
fn setup(need: Need) {
    static SCHEMA: OnceLock<Result<(), String>> = OnceLock::new();
    static PDFTOTEXT: OnceLock<Result<(), String>> = OnceLock::new();
    static FONTS: OnceLock<Result<(), String>> = OnceLock::new();
    let (cell, present, arg) = match need {
        Need::Schema => (&SCHEMA, schema_path().is_file(), "schema"),
        Need::Pdftotext => (&PDFTOTEXT, have_pdftotext(), "pdftotext"),
        Need::Fonts => (&FONTS, Fonts::load(&font_dir()).is_ok(), "fonts"),
    };
    let result = cell.get_or_init(|| {
        if present {
            return Ok(());
        }
        let script = workspace().join("scripts").join("export-test-setup.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(arg)
            .env("POLYPHONY_FONT_DIR", font_dir())
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

/// The Noto fonts, fetched by the set-up script when missing; shared by every PDF test.
pub(crate) fn fonts() -> &'static Fonts {
    static FONTS: OnceLock<Fonts> = OnceLock::new();
    FONTS.get_or_init(|| {
        setup(Need::Fonts);
        Fonts::load(&font_dir()).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// The person's copy of `view` as a PDF, set in the test fonts.
pub(crate) fn copy_pdf(view: &crate::model::view::CaseView) -> Vec<u8> {
    person_copy::pdf(view, &accesses(), fonts()).expect("the PDF copy renders")
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
    // The R4 JSON schema's datatypes do not say `"type": "object"`, so an array where an
    // Identifier (or any datatype) belongs passes it: found when an attachment's identifiers
    // were a list inside a list. Every element of every resource's `identifier` is an object.
    let mut shape = Vec::new();
    for (i, entry) in bundle["entry"].as_array().into_iter().flatten().enumerate() {
        if let Some(ids) = entry["resource"]["identifier"].as_array() {
            if ids.iter().any(|x| !x.is_object()) {
                shape.push(format!(
                    "entry {i}: an identifier is not an Identifier object"
                ));
            }
        }
    }
    let v = validator();
    if v.is_valid(bundle) {
        return shape;
    }
    let mut out: Vec<String> = shape;
    out.extend(
        v.iter_errors(bundle)
            .take(5)
            .map(|e| format!("{}: {e}", e.instance_path())),
    );
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
        .map(|m| m.meta.id.to_string())
        .collect();
    assert_eq!(
        ids.members.iter().cloned().collect::<BTreeSet<_>>(),
        members
    );
    let meetings: BTreeSet<String> = rich
        .view
        .meetings
        .iter()
        .map(|m| m.meta.id.to_string())
        .collect();
    assert_eq!(
        ids.meetings.iter().cloned().collect::<BTreeSet<_>>(),
        meetings
    );
    let decisions: BTreeSet<String> = rich
        .view
        .decisions
        .iter()
        .map(|d| d.meta.id.to_string())
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

pub(crate) fn pdf_text(pdf: &[u8]) -> String {
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
    let pdf = copy_pdf(&rich.view);
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
        "Ana Lopez (sister) first disagreed",
        "then was unsure",
        "Ana Lopez (sister) is not sure yet, and said:",
        "I want to be outside with people",
        "I don't want tablets",
        "was written on the wrong person's record",
        "Recorded on the wrong case",
        "Changed after the meeting, not read back",
        "She also mentioned her cat.",
        "María was not present.",
        "Meeting planned for 5 January 2099",
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
    std::fs::write(dir.join("copy.pdf"), copy_pdf(&rich.view)).unwrap();
    std::fs::write(dir.join("languages.pdf"), copy_pdf(&every_language())).unwrap();
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

/// Every `time` in the Bundle (read-back attesters, positions, status changes) is at its UK
/// offset like the rest, never the stored UTC: with every such time set to a summer instant, each
/// reads 10:30+01:00, none 09:30Z. (Issue 15, part 1.)
#[test]
fn export_fhir_times_of_attesters_and_notes_carry_the_uk_offset() {
    fn times(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    if k == "time" {
                        out.push(x.as_str().unwrap_or_default().to_string());
                    }
                    times(x, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| times(x, out)),
            _ => {}
        }
    }
    let summer = Some("2026-06-14T09:30:00Z".to_string());
    let mut view = rich_case().view;
    for m in &mut view.meetings {
        for r in &mut m.readback {
            r.at = summer.clone();
        }
    }
    for d in &mut view.decisions {
        for p in &mut d.positions {
            p.at = summer.clone();
            for e in &mut p.earlier {
                e.at = summer.clone();
            }
        }
        for st in &mut d.status_history {
            st.at = summer.clone();
        }
    }
    let mut found = Vec::new();
    times(&fhir::bundle(&view, &accesses()), &mut found);
    let summer_times: Vec<&String> = found
        .iter()
        .filter(|t| t.starts_with("2026-06-14"))
        .collect();
    assert!(summer_times.len() >= 3, "{found:?}");
    for t in summer_times {
        assert_eq!(
            t, "2026-06-14T10:30:00+01:00",
            "a FHIR time not at its UK offset"
        );
    }
}

/// An entry recorded on the wrong person's record is another person's information: no copy or
/// export holds any of its words, each shows a tombstone instead. (Issue 15, part 2.)
#[test]
fn export_no_copy_holds_an_entry_recorded_on_the_wrong_persons_record() {
    use super::testcase::WITHHELD_NOTES;
    let rich = rich_case();
    let withheld = ["Zofia", "Another-Person", WITHHELD_NOTES];
    let html = person_copy::html(&rich.view, &accesses());
    // Whitespace as a reader sees it: pdftotext breaks lines where the copy wraps.
    let pdf = pdf_text(&copy_pdf(&rich.view))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let json = super::subject_access::json(&rich.view, &accesses()).to_string();
    let fhir = fhir::bundle(&rich.view, &accesses()).to_string();
    let figures = super::figures::to_csv(&super::figures::team_table(&[
        crate::model::CaseFigures::from_view(&rich.view),
    ]))
    .unwrap();
    for (name, copy) in [
        ("HTML", &html),
        ("PDF", &pdf),
        ("JSON", &json),
        ("FHIR", &fhir),
        ("figures", &figures),
    ] {
        for w in withheld {
            assert!(!copy.contains(w), "the {name} copy holds {w:?}");
        }
    }
    for (name, copy) in [("HTML", &html), ("PDF", &pdf), ("FHIR", &fhir)] {
        assert!(
            copy.contains("written on the wrong person")
                && copy.contains("Recorded on the wrong case"),
            "the {name} copy has no tombstone"
        );
    }
    // The machine-readable copy says what kind of mark it is.
    assert!(json.contains("\"kind\":\"wrong_person\""));
    // Nor is it in the record's own view as any field a client could show.
    assert!(!serde_json::to_string(&rich.view).unwrap().contains("Zofia"));
}

/// Issue 15, part 8: a file leaving the store is named for a person to recognise, with
/// characters every system accepts.
#[test]
fn export_file_names_are_for_people_and_safe_everywhere() {
    use super::access::ExportKind;
    use super::{export_file_name, file_name};
    let day = crate::model::parse_date("d", "2026-03-14").unwrap();
    let rich = rich_case();
    assert_eq!(
        export_file_name(&rich.view, ExportKind::Pdf, day),
        "Maria Lopez - record copy - 2026-03-14.pdf"
    );
    assert_eq!(
        export_file_name(&rich.view, ExportKind::Fhir, day),
        "Maria Lopez - for the trust record - 2026-03-14.fhir.json"
    );
    assert_eq!(
        file_name("María Lindqvist", "record copy", day, "html"),
        "María Lindqvist - record copy - 2026-03-14.html"
    );
    let awkward = file_name(
        " ..Jo/Bloggs: \"Jo\" <x>|y*?\n\t",
        "record copy",
        day,
        "pdf",
    );
    assert_eq!(awkward, "Jo Bloggs Jo x y - record copy - 2026-03-14.pdf");
    for bad in ['/', '\\', ':', '*', '?', '"', '<', '>', '|', '\n'] {
        assert!(!awkward.contains(bad), "{bad:?} in {awkward}");
    }
    assert_eq!(
        file_name("   ", "record copy", day, "pdf"),
        "record - record copy - 2026-03-14.pdf"
    );
    let long = file_name(&"A".repeat(300), "record copy", day, "pdf");
    assert!(long.chars().count() < 100, "{long}");
}

/// What the rich case's PDF copy costs: its size, and the time to render it (averaged over 20).
#[test]
#[ignore = "a measurement, not a check: cargo test -p polyphony-core --lib export_person_copy_pdf_cost -- --ignored --nocapture"]
fn export_person_copy_pdf_cost() {
    let rich = rich_case();
    let runs = 20;
    let start = std::time::Instant::now();
    let mut size = 0;
    for _ in 0..runs {
        size = copy_pdf(&rich.view).len();
    }
    let each = start.elapsed() / runs;
    println!("rich case PDF: {size} bytes, {each:?} each");
}

/// Names and notes in the languages of the boroughs' residents, each as a person's own name, a
/// network member's name and a meeting's notes: (language, person, member, notes).
const LANGUAGES: [(&str, &str, &str, &str); 7] = [
    (
        "Polish",
        "Łucja Żółć-Wąsik",
        "Jędrzej Żółć",
        "Mieszka w Łodzi (Łódź) z mamą; źle śpi, ale chodzi na spacery.",
    ),
    (
        "Romanian",
        "Ștefania Țăranu",
        "Mădălina Țăranu",
        "Își dorește să se întâlnească cu sora ei în fiecare săptămână.",
    ),
    (
        "Somali",
        "Cabdullaahi Xasan Maxamed",
        "Faadumo Cali Xuseen",
        "Waxaan rabaa inaan si fiican u seexdo. Walaashay ayaa i caawisa.",
    ),
    (
        "Bengali",
        "সুমাইয়া রহমান",
        "ফাতেমা রহমান",
        "আমি ভালো ঘুমাতে চাই। আমার বোন প্রতি সপ্তাহে আসে।",
    ),
    (
        "Gujarati",
        "પ્રિયા પટેલ",
        "કૃષ્ણા પટેલ",
        "મને રાત્રે ઊંઘ આવતી નથી. મારી બહેન મદદ કરે છે.",
    ),
    (
        "Urdu",
        "عائشہ خان",
        "زینب خان",
        "مجھے رات کو نیند نہیں آتی۔ میری بہن ہر ہفتے آتی ہے۔",
    ),
    (
        "Arabic",
        "أحمد عبد الله",
        "ليلى حسن",
        "لا أريد الدواء. أختي تزورني كل أسبوع.",
    ),
];

fn case_in(person: &str, member: &str, notes: &str) -> crate::model::view::CaseView {
    use crate::model::{
        parse_datetime, CaseDoc, NewCase, NewMeeting, NewMember, NoteKind, Participant, Place,
    };
    let mut case = CaseDoc::create(
        crate::CaseId::random(),
        crate::TeamId::random(),
        NewCase {
            name: person.into(),
            ..Default::default()
        },
        super::testcase::author("Sam Okafor"),
    )
    .unwrap();
    let m = case
        .add_member(NewMember {
            name: member.into(),
            relationship: "sister".into(),
            ..Default::default()
        })
        .unwrap();
    let meeting = case
        .add_meeting(NewMeeting {
            at: parse_datetime("at", "2026-03-14T10:30").unwrap(),
            place: Place::Home,
            attendees: vec![Participant::Person, Participant::Member(m)],
        })
        .unwrap();
    case.append_text(&meeting, NoteKind::Notes, notes).unwrap();
    case.view()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What `pdftotext` gives for a copy, made comparable: whitespace collapsed, and the bidi
/// embedding marks it puts around right-to-left text (U+202B ... U+202C) taken out.
fn read_back(pdf: &[u8]) -> String {
    let raw: String = pdf_text(pdf)
        .chars()
        .filter(|c| !matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}'))
        .collect();
    one_line(&raw)
}

/// What a reader must give back of `text`, in the order it was written. Left-to-right text must
/// come back whole. Of right-to-left text, `pdftotext` rebuilds the reading order from positions
/// and may move a neutral full stop or comma across the run it ends (it prints
/// "لا أريد الدواء. أختي" as ".أختي ... .لا أريد الدواء"): every stretch between such punctuation
/// must come back whole, letters and words in reading order.
fn must_read(text: &str) -> Vec<String> {
    let rtl = text
        .chars()
        .any(|c| matches!(c, '\u{0590}'..='\u{08FF}' | '\u{FB1D}'..='\u{FEFF}'));
    if !rtl {
        return vec![one_line(text)];
    }
    text.split(['.', ',', ';', ':', '(', ')', '!', '?'])
        .map(one_line)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Issue 15, part 6: the copy given to a person shows their name and their words in their own
/// script, and a PDF reader reads back the same characters (before, everything outside
/// Windows-1252 printed as `?`).
#[test]
fn export_person_copy_pdf_reads_back_every_language() {
    for (language, person, member, notes) in LANGUAGES {
        let pdf = copy_pdf(&case_in(person, member, notes));
        let text = read_back(&pdf);
        for want in [person, member, notes].into_iter().flat_map(must_read) {
            assert!(
                text.contains(&want),
                "{language}: the PDF text lacks {want:?}:\n{text}"
            );
        }
        assert!(!text.contains('?'), "{language}: a `?` in {text}");
        // The name in the heading and the title line, as a reader gets it.
        assert!(
            text.contains(&format!("About {person}")),
            "{language}: {text}"
        );
    }
}

/// One case with notes in every language of [`LANGUAGES`], one paragraph each.
fn every_language() -> crate::model::view::CaseView {
    let mut view = case_in(LANGUAGES[0].1, LANGUAGES[3].2, "");
    view.meetings[0].notes = LANGUAGES.map(|l| l.3).join("\n");
    view
}

/// Only the glyphs used are embedded: a copy in every script at once is a small fraction of the
/// fonts it is set in.
#[test]
fn export_person_copy_pdf_embeds_font_subsets() {
    let pdf = copy_pdf(&every_language());
    let fonts: usize = fonts().files.iter().map(|f| f.data.len()).sum();
    assert!(
        pdf.len() * 10 < fonts,
        "the PDF ({} bytes) should be far smaller than its fonts ({fonts} bytes)",
        pdf.len()
    );
    let raw = String::from_utf8_lossy(&pdf);
    for font in [
        "NotoSans-Regular",
        "NotoSansBengali-Regular",
        "NotoNaskhArabic-Regular",
    ] {
        assert!(
            raw.contains(&format!("+{font}")),
            "{font} is embedded as a subset"
        );
    }
    let text = read_back(&pdf);
    for want in LANGUAGES.into_iter().flat_map(|l| must_read(l.3)) {
        assert!(text.contains(&want), "lacks {want:?}:\n{text}");
    }
}

/// A character no font has (Chinese here) is not silently replaced: the font's box is drawn, and
/// the PDF still says which character it was, so a reader copies the real text.
#[test]
fn export_person_copy_pdf_keeps_characters_no_font_has() {
    let pdf = copy_pdf(&case_in("Wei 伟 Chen", "Ana Lopez", "她说 hello"));
    let text = read_back(&pdf);
    assert!(text.contains("Wei 伟 Chen"), "{text}");
    assert!(text.contains("她说 hello"), "{text}");
}

/// A network member recorded on the wrong person's record: their name, their words in meetings
/// and decisions, and a copy once given to them are in no copy; where they were present, copies
/// say "someone removed from this record". (Issue 15, part 2.)
#[test]
fn export_no_copy_names_a_member_recorded_on_the_wrong_persons_record() {
    use crate::model::ErrorKind;
    let mut rich = rich_case();
    rich.doc
        .mark_error(
            &rich.ana,
            ErrorKind::WrongPerson,
            "Ana is in Zofia's network",
        )
        .unwrap();
    let view = rich.doc.view();
    let mut accesses = accesses();
    accesses.push(crate::export::Access {
        at: "2026-03-19T10:00:00Z".into(),
        who: "Sam Okafor".into(),
        device: None,
        what: super::access::Purpose::gave(&rich.ana.to_string(), "Ana Lopez"),
        kind: Some(super::access::AccessKind::OnDevice {
            purpose: super::access::Purpose::gave(&rich.ana.to_string(), "Ana Lopez"),
            not_yet_sent: false,
        }),
    });
    let html = person_copy::html(&view, &accesses);
    let json = super::subject_access::json(&view, &accesses).to_string();
    let fhir = fhir::bundle(&view, &accesses).to_string();
    for (name, copy) in [("HTML", &html), ("JSON", &json), ("FHIR", &fhir)] {
        for w in [
            "Ana Lopez",
            "She walks every morning with me.",
            "Maybe, if I go with her",
            "Too soon, she is exhausted",
            "07700 900456",
        ] {
            assert!(!copy.contains(w), "the {name} copy holds {w:?}");
        }
    }
    assert!(html.contains("someone removed from this record"));
    assert!(html.contains("gave a copy of your record to someone removed from this record"));
}

/// What schema 3 added reaches every copy: the person's copy names each member of staff in
/// their role at the meeting and the continuing pair as such, and says a decision was taken by
/// the team without the person's agreement, with her words; the FHIR Bundle still validates,
/// carries the roles on the Encounter and the care team, and shows the team's decision as
/// active but not accepted; the subject-access export keeps the reason.
#[test]
fn export_copies_carry_staff_roles_and_the_teams_decision() {
    let mut rich = rich_case();
    super::testcase::schema3_additions(&mut rich.doc);
    let view = rich.doc.view();
    let copy = one_line(&person_copy::html(&view, &accesses()));
    for expected in [
        "Jo Peer (peer support worker)",
        "Dr Ade Bello (psychiatrist)",
        "Dr Ade Bello, psychiatrist",
        "Sam Okafor, one of your two practitioners, who stay with you throughout",
        "decided by the team without the person&#39;s agreement",
        "I don&#39;t want to go to hospital",
        "Your safety and crisis plan",
        "Preferences if in crisis",
        "Ana, or the neighbour at no. 4, looks after the cat",
        "Before, it said: “Ana looks after the cat”",
        "In the words of María",
        "It is to be looked at again together by 20 June 2026.",
        "Letters and documents",
        "Referral letter: Referral from Dr Shah (GP)",
        "File referral-shah.pdf (",
        "Document the person brought: Maria&#39;s letter from the housing office",
        "from the meeting on",
    ] {
        assert!(
            copy.contains(expected),
            "the person's copy lacks {expected:?}: {}",
            &copy[copy.find("Mental Health").unwrap_or(0)..][..600.min(copy.len())]
        );
    }

    let bundle = fhir::bundle(&view, &accesses());
    let errors = schema_errors(&bundle);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let urls: BTreeSet<String> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["fullUrl"].as_str().unwrap().to_string())
        .collect();
    let mut refs = Vec::new();
    references(&bundle, &mut refs);
    for r in &refs {
        assert!(urls.contains(r), "{r} does not resolve inside the Bundle");
    }
    let text = bundle.to_string();
    assert!(
        text.contains(r#"{"text":"peer support worker"}"#),
        "Encounter role"
    );
    assert!(
        text.contains(r#""role":[{"text":"psychiatrist"}]"#),
        "CareTeam role"
    );
    let decision = view
        .decisions
        .iter()
        .find(|d| d.status.is(crate::model::DecisionStatus::TeamDecided))
        .unwrap();
    let goal = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == "Goal" && r.to_string().contains("Mental Health Act"))
        .expect("the decision's Goal");
    assert_eq!(
        goal["lifecycleStatus"], "active",
        "carried out, not accepted"
    );
    assert!(text.contains("Risk to Maria"), "the reason is in the plan");
    assert!(!decision.agreed_without_person);

    let subject = one_line(&super::subject_access::html(&view, &accesses()));
    assert!(
        subject.contains("Risk to Maria"),
        "the reason in the subject-access export"
    );

    // The crisis plan: a CarePlan of its own, category crisis plan, one activity per item.
    let plan = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["category"][0]["text"] == "Crisis plan")
        .expect("the crisis plan's CarePlan");
    assert_eq!(plan["resourceType"], "CarePlan");
    let activities = plan["activity"].as_array().unwrap();
    assert_eq!(activities.len(), 2);
    let cat = activities
        .iter()
        .find(|a| a["detail"]["code"]["text"] == "Preferences if in crisis")
        .unwrap();
    assert!(cat["detail"]["description"]
        .as_str()
        .unwrap()
        .contains("no. 4"));
    assert_eq!(
        cat["progress"].as_array().unwrap().len(),
        2,
        "before and now"
    );
    assert!(plan["note"][0]["text"]
        .as_str()
        .unwrap()
        .contains("20 June 2026"));
    assert!(
        subject.contains("Ana looks after the cat"),
        "every version in the subject-access export"
    );

    // The network copy holds the plan too.
    let ana = view
        .network
        .iter()
        .find(|m| m.name == "Ana Lopez")
        .unwrap()
        .meta
        .id
        .to_string();
    let copy = super::network_copy::for_member(&view, &ana, time::OffsetDateTime::now_utc())
        .expect("Ana's consent is given in the rich case");
    let html = one_line(&copy.html());
    assert!(html.contains("The safety and crisis plan"), "{html}");
    assert!(html.contains("no. 4, looks after the cat"));
    assert!(
        !html.contains("Large dog"),
        "the team's notes are not in a network copy"
    );

    // The team's notes: the safety note in the person's copy; the concern two practitioners
    // withheld is listed as withheld, without its words or the reason, in every copy for the
    // person; the trust's FHIR holds it in full.
    let wanted = super::testcase::WITHHELD_CONCERN;
    assert!(copy_has(&copy_of(&view), "Large dog at the address"));
    for person_facing in [
        copy_of(&view),
        one_line(&super::subject_access::html(&view, &accesses())),
        super::subject_access::json(&view, &accesses()).to_string(),
    ] {
        assert!(!person_facing.contains(wanted), "withheld words leaked");
        assert!(
            !person_facing.contains("strategy meeting"),
            "the reason leaked"
        );
    }
    assert!(copy_of(&view).contains("is withheld from this copy"));
    assert!(copy_of(&view).contains("except what two practitioners agreed to withhold"));
    let sar = super::subject_access::json(&view, &accesses());
    let listed = sar["withheld_from_person"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["kind"], "safeguarding");
    assert_eq!(listed[0]["confirmed_by"], "Lee Second");
    let flags: Vec<&Value> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == "Flag")
        .collect();
    assert_eq!(flags.len(), 2);
    assert!(text.contains(wanted), "the trust's record holds it in full");
}

fn copy_of(view: &crate::model::view::CaseView) -> String {
    one_line(&person_copy::html(view, &accesses()))
}

fn copy_has(copy: &str, words: &str) -> bool {
    copy.contains(words)
}

/// Attachments are listed in every copy made for the person and in the subject-access export
/// (never their bytes), and each is a DocumentReference in the FHIR Bundle, linked to its
/// meeting, addressed by its SHA-256; the Bundle still validates.
#[test]
fn export_copies_list_attachments_and_fhir_references_them() {
    let mut rich = rich_case();
    super::testcase::schema3_additions(&mut rich.doc);
    let view = rich.doc.view();
    let sar = super::subject_access::json(&view, &accesses());
    let listed = sar["attachments"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["file_name"], "referral-shah.pdf");
    assert_eq!(listed[0]["media_type"], "application/pdf");
    assert!(
        listed[1]["meeting"].is_string(),
        "the visit's letter names its meeting"
    );
    let bundle = fhir::bundle(&view, &accesses());
    let errors = schema_errors(&bundle);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let docs: Vec<&serde_json::Value> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == "DocumentReference")
        .collect();
    assert_eq!(docs.len(), 2);
    let referral = docs
        .iter()
        .find(|d| d["description"] == "Referral from Dr Shah (GP)")
        .expect("the referral letter");
    assert_eq!(referral["status"], "current");
    assert_eq!(
        referral["content"][0]["attachment"]["contentType"],
        "application/pdf"
    );
    let hash = crate::BlobHash::of(super::testcase::REFERRAL_LETTER.bytes);
    assert_eq!(
        referral["identifier"][1]["value"],
        format!("urn:sha256:{hash}")
    );
    let visit = docs
        .iter()
        .find(|d| d["type"]["text"] == "Document the person brought")
        .expect("the housing letter");
    assert!(visit["context"]["encounter"][0]["reference"].is_string());
}

/// Issue 17, part 2: the person's copy tells each referral in the referrer's words with the
/// episode it opened; the subject-access export holds them; FHIR has each as a UK Core
/// ServiceRequest (priority by urgency, the letter as supporting information) and the second
/// episode as an EpisodeOfCare its meeting points to, and the Bundle validates.
#[test]
fn export_copies_tell_each_referral_and_fhir_has_them_as_service_requests_and_episodes() {
    let mut rich = rich_case();
    super::testcase::schema3_additions(&mut rich.doc);
    super::testcase::schema4_additions(&mut rich.doc);
    let view = rich.doc.view();
    let copy = one_line(&person_copy::html(&view, &accesses()));
    for expected in [
        "Your referrals",
        "Episode 1: referred",
        "GP (Dr Shah (GP), Elm Street Surgery)",
        "Urgent (24 hours)",
        "Maria has not slept for four nights",
        "Letter:",
        "Referral from Dr Shah (GP) (referral-shah.pdf)",
        "Care with the team ended:",
        "Episode 2: referred",
        "Family (Ana Lopez (sister))",
        "Emergency (4 hours)",
        "she says the voices are back",
    ] {
        assert!(
            copy.contains(expected),
            "the person's copy lacks {expected:?}"
        );
    }
    assert!(
        !copy.contains("Referred to the team:"),
        "with referrals recorded, one referral date would mislead"
    );

    let sar = super::subject_access::json(&view, &accesses());
    assert_eq!(sar["record"]["referrals"].as_array().unwrap().len(), 2);
    assert_eq!(sar["record"]["episodes"].as_array().unwrap().len(), 2);

    let bundle = fhir::bundle(&view, &accesses());
    let errors = schema_errors(&bundle);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let of = |kind: &str| -> Vec<&serde_json::Value> {
        bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .filter(|r| r["resourceType"] == kind)
            .collect()
    };
    let requests = of("ServiceRequest");
    assert_eq!(requests.len(), 2);
    let gp = requests
        .iter()
        .find(|r| r["priority"] == "urgent")
        .expect("the GP's urgent referral");
    assert_eq!(
        gp["meta"]["profile"][0],
        "https://fhir.hl7.org.uk/StructureDefinition/UKCore-ServiceRequest"
    );
    assert_eq!(
        gp["reasonCode"][0]["text"],
        super::testcase::FIRST_REFERRAL_REASON
    );
    assert_eq!(
        gp["requester"]["display"],
        "Dr Shah (GP), Elm Street Surgery"
    );
    assert_eq!(gp["extension"][0]["valueCodeableConcept"]["text"], "GP");
    assert_eq!(gp["status"], "completed");
    let letter = view.referrals[0].letter.unwrap().to_string();
    assert_eq!(
        gp["supportingInfo"][0]["reference"],
        format!("urn:uuid:{letter}")
    );
    let family = requests.iter().find(|r| r["priority"] == "stat").unwrap();
    assert_eq!(family["status"], "completed", "its first meeting was held");
    let episodes = of("EpisodeOfCare");
    assert_eq!(episodes.len(), 2);
    assert_eq!(episodes[0]["status"], "finished");
    assert_eq!(episodes[1]["status"], "active");
    assert_eq!(
        episodes[1]["referralRequest"][0]["reference"],
        format!("urn:uuid:{}", view.referrals[1].meta.id)
    );
    // Each meeting points to the EpisodeOfCare of its time: the night visit of 3 September to
    // the second, every March meeting to the first.
    let second = format!("urn:uuid:{}", episodes[1]["id"].as_str().unwrap());
    for e in of("Encounter") {
        let start = e["period"]["start"].as_str().unwrap_or_default();
        if start.starts_with("2026-03") {
            assert_ne!(e["episodeOfCare"][0]["reference"], second, "{start}");
        }
        if start.starts_with("2026-09-03") {
            assert_eq!(e["episodeOfCare"][0]["reference"], second, "{start}");
        }
    }
    assert!(of("Encounter").iter().any(|e| e["period"]["start"]
        .as_str()
        .unwrap_or_default()
        .starts_with("2026-09-03")));
    // The importer still finds the case by its first EpisodeOfCare.
    let ids = fhir::ids(&bundle).unwrap();
    assert_eq!(ids.case.as_deref(), Some(view.case_id.as_str()));
}

/// A case from before referrals (the rich case: its referral only the milestone) re-referred:
/// the person's copy keeps the first episode from the milestone and tells the new referral as
/// episode 2. A referral recorded on the wrong person's record, with its letter, leaves nothing
/// of the other person in any copy.
#[test]
fn export_copies_keep_an_older_first_episode_and_nothing_of_a_wrong_persons_referral() {
    let mut rich = rich_case();
    let letter = rich
        .doc
        .add_attachment(&crate::model::NewAttachment {
            kind: crate::model::AttachmentKind::ReferralLetter,
            title: "Referral for Jordan Blake".into(),
            file_name: "jordan-blake.pdf".into(),
            size: 6,
            hash: crate::BlobHash::of(b"jordan"),
            meeting: None,
        })
        .unwrap();
    let wrong = rich
        .doc
        .add_referral(&crate::model::NewReferral {
            received_at: crate::model::parse_datetime("at", "2026-09-01T09:00").unwrap(),
            source: crate::model::ReferralSource::OtherTeam,
            referrer: Some("Crisis team".into()),
            reason: "Jordan Blake is not sleeping".into(),
            urgency: crate::model::Urgency::Urgent,
            letter: Some(letter),
        })
        .unwrap();
    rich.doc
        .mark_error(
            &wrong,
            crate::model::ErrorKind::WrongPerson,
            "Another person's referral",
        )
        .unwrap();
    rich.doc
        .add_referral(&crate::model::NewReferral {
            received_at: crate::model::parse_datetime("at", "2026-09-05T10:00").unwrap(),
            source: crate::model::ReferralSource::SelfReferral,
            referrer: None,
            reason: "I need to talk to the team again".into(),
            urgency: crate::model::Urgency::Routine,
            letter: None,
        })
        .unwrap();
    let view = rich.doc.view();
    let copy = one_line(&person_copy::html(&view, &accesses()));
    for expected in [
        "Referred to the team:",
        "Episode 1: referred",
        "Episode 2: referred",
        "I need to talk to the team again",
        "Self-referral",
    ] {
        assert!(
            copy.contains(expected),
            "the person's copy lacks {expected:?}"
        );
    }
    let sar = serde_json::to_string(&super::subject_access::json(&view, &accesses())).unwrap();
    let bundle = serde_json::to_string(&fhir::bundle(&view, &accesses())).unwrap();
    for (what, text) in [("copy", &copy), ("subject access", &sar), ("FHIR", &bundle)] {
        for other in ["Jordan", "jordan-blake"] {
            let at = text.find(other).unwrap_or(0);
            assert!(
                !text.contains(other),
                "the {what} holds {other:?}: {}",
                &text[at.saturating_sub(200)..(at + 100).min(text.len())]
            );
        }
    }
    let errors = schema_errors(&fhir::bundle(&view, &accesses()));
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
