//! The command against a real borough server on loopback: a full offline day synced and seen on
//! a second device, concurrent edits that meet, bad input that changes nothing, and a server that
//! cannot be reached.

mod common;

use common::{Device, Server};
use serde_json::Value;

/// One practitioner in team North, with a device enrolled through `polyphony enrol`.
fn server_and_device() -> (Server, Device) {
    let server = Server::start();
    server.practitioner("Alex Carer", "North");
    let device = server.device("Alex Carer");
    (server, device)
}

/// A case with the person, a network member and a meeting: (case, member, meeting).
fn case_with_a_meeting(d: &Device) -> (String, String, String) {
    let case = d.ok(&[
        "case",
        "new",
        "--name",
        "Jo Bloggs",
        "--nhs-number",
        "999 100 0003",
    ]);
    let sam = d.ok(&[
        "network",
        "add",
        &case,
        "--name",
        "Sam Smith",
        "--relationship",
        "my brother",
        "--role",
        "family",
    ]);
    let meeting = d.ok(&[
        "meeting",
        "add",
        &case,
        "--at",
        "2026-03-14T10:30",
        "--place",
        "home",
        "--attendee",
        "person",
        "--attendee",
        &sam,
    ]);
    (case, sam, meeting)
}

fn count(v: &Value) -> usize {
    v.as_array().map(Vec::len).unwrap_or(0)
}

#[test]
fn a_full_offline_day_syncs_and_a_second_device_sees_everything() {
    let (mut server, alex) = server_and_device();
    server.practitioner("Blake Carer", "North");

    // The day is worked with no signal at all.
    server.stop();
    let case = alex.ok(&[
        "case",
        "new",
        "--name",
        "Jo Bloggs",
        "--nhs-number",
        "999 100 0003",
        "--dob",
        "1990-02-28",
    ]);
    assert_eq!(case.lines().count(), 1, "only the id on stdout: {case}");
    alex.ok(&["care-team", "add", &case]);
    let sam = alex.ok(&[
        "network",
        "add",
        &case,
        "--name",
        "Sam Smith",
        "--relationship",
        "my brother",
        "--role",
        "family",
        "--phone",
        "07700 900000",
    ]);
    let pat = alex.ok(&[
        "network",
        "add",
        &case,
        "--name",
        "Pat Jones",
        "--relationship",
        "neighbour",
        "--role",
        "friend",
    ]);
    let meeting = alex.ok(&[
        "meeting",
        "add",
        &case,
        "--at",
        "2026-03-14T10:30",
        "--place",
        "home",
        "--attendee",
        "person",
        "--attendee",
        "me",
        "--attendee",
        "Sam",
    ]);
    alex.ok(&[
        "note",
        "append",
        &case,
        &meeting,
        "Jo described the week since the crisis.",
    ]);
    alex.ok(&[
        "note",
        "append",
        &case,
        &meeting,
        "Sam is worried about Jo's sleep.",
    ]);
    alex.ok(&[
        "reflection",
        "append",
        &case,
        &meeting,
        "We wondered what helps Jo rest.",
    ]);
    alex.ok(&[
        "readback",
        &case,
        &meeting,
        "--person",
        "added",
        "--words",
        "I slept on Friday",
    ]);
    alex.ok(&[
        "readback",
        &case,
        &meeting,
        "--member",
        &sam[..8],
        "confirmed",
    ]);
    let decision = alex.ok(&[
        "decision",
        "propose",
        &case,
        "Jo stays at Sam's this week",
        "--by",
        "person",
    ]);
    alex.ok(&[
        "decision",
        "position",
        &case,
        &decision,
        "--person",
        "agree",
        "--words",
        "I feel safer there",
    ]);
    alex.ok(&[
        "decision",
        "position",
        &case,
        &decision,
        "--member",
        "Sam Smith",
        "unsure",
        "--words",
        "Happy to, worried about work",
    ]);
    alex.ok(&[
        "decision", "position", &case, &decision, "--member", &pat, "disagree",
    ]);
    alex.ok(&[
        "decision",
        "status",
        &case,
        &decision,
        "agreed",
        "--note",
        "Jo agreed; Pat's worry noted",
    ]);
    let action = alex.ok(&[
        "decision",
        "action",
        &case,
        &decision,
        "Call the GP about sleep",
        "--owner",
        "me",
        "--due",
        "2026-03-17",
    ]);
    assert!(!action.is_empty());

    let offline = alex.status();
    assert!(
        offline["unsynced_changes"].as_u64().unwrap() > 10,
        "{offline}"
    );
    assert!(alex.ok(&["status"]).contains("NOT SYNCED"));

    // Back in signal.
    server.restart();
    let out = alex.cmd().args(["sync"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("sync finished"));
    let synced = alex.status();
    assert_eq!(synced["unsynced_changes"], 0, "{synced}");
    assert_ne!(synced["last_successful_sync"], Value::Null);
    assert_eq!(synced["last_sync"]["ok"], true);
    // A borough with no trust hub sends no hub receipt: nothing is said about a hub.
    assert_eq!(synced["not_on_hub"], Value::Null, "{synced}");
    assert_eq!(synced["cases"][0]["not_on_hub"], Value::Null, "{synced}");
    let human = alex.ok(&["status"]);
    assert!(human.contains("all 1 case(s) synced"), "{human}");
    assert!(!human.contains("trust hub"), "{human}");

    // A colleague's device in the same team sees everything.
    let blake = server.device("Blake Carer");
    let report = blake.json(&["sync"]);
    assert_eq!(count(&report["refused"]), 0, "{report}");
    let theirs = blake.show(&case);
    let ours = alex.show(&case);
    assert_eq!(theirs, ours, "both devices hold the same record");
    assert_eq!(theirs["person"]["nhs_number"], "9991000003");
    assert_eq!(count(&theirs["network"]), 2);
    let m = &theirs["meetings"][0];
    assert_eq!(m["place"], "home");
    assert_eq!(count(&m["attendees"]), 3);
    assert!(m["notes"]
        .as_str()
        .unwrap()
        .contains("worried about Jo's sleep"));
    assert_eq!(count(&m["readback"]), 2);
    let d = &theirs["decisions"][0];
    assert_eq!(d["status"], "agreed");
    assert_eq!(count(&d["positions"]), 3);
    let sam_position = d["positions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["participant"] == format!("member:{sam}"))
        .expect("Sam's position");
    assert_eq!(sam_position["stance"], "unsure");
    assert_eq!(sam_position["words"], "Happy to, worried about work");
    assert_eq!(count(&d["actions"]), 1);
    let human = blake.ok(&["case", "show", &case[..8]]);
    assert!(
        human.contains("Sam Smith: unsure - \"Happy to, worried about work\""),
        "{human}"
    );
    assert_eq!(count(&blake.json(&["case", "list"])), 1);
}

#[test]
fn bad_input_gets_one_line_and_changes_nothing() {
    let (_server, d) = server_and_device();
    let (case, _sam, meeting) = case_with_a_meeting(&d);
    let before = d.show(&case);
    let unsynced = d.status()["unsynced_changes"].clone();

    let err = d.fails(1, &["case", "show", "ffffffff"]);
    assert!(err.contains("no case matches"), "{err}");
    let err = d.fails(1, &["person", "set", &case, "nhs_number", "999 100 0004"]);
    assert!(err.contains("not a valid NHS number"), "{err}");
    let err = d.fails(
        1,
        &["case", "new", "--name", "Kim", "--nhs-number", "12345"],
    );
    assert!(err.contains("10 digits"), "{err}");
    let err = d.fails(
        1,
        &[
            "meeting",
            "add",
            &case,
            "--at",
            "14/03/2026 10:30",
            "--place",
            "home",
        ],
    );
    assert!(err.contains("YYYY-MM-DDTHH:MM"), "{err}");
    let err = d.fails(1, &["case", "new", "--name", "Kim", "--dob", "1990-02-30"]);
    assert!(err.contains("date of birth"), "{err}");
    let err = d.fails(
        1,
        &[
            "meeting",
            "add",
            &case,
            "--at",
            "2026-03-15T10:00",
            "--place",
            "home",
            "--attendee",
            "Nobody",
        ],
    );
    assert!(err.contains("'Nobody'"), "{err}");
    let err = d.fails(1, &["note", "append", &case, "abcdef12", "words"]);
    assert!(err.contains("no entry matches"), "{err}");
    let err = d.fails(1, &["decision", "status", &case, &meeting, "agreed"]);
    assert!(err.contains("decision"), "{err}");
    let err = d.fails(1, &["decision", "done", &case, &meeting]);
    assert!(err.contains("not an action"), "{err}");
    let err = d.fails(1, &["resolve", &case, "person.name", "--pick", "1"]);
    assert!(err.contains("no conflict"), "{err}");
    let out = d
        .cmd()
        .env("POLYPHONY_PASSPHRASE", "wrong passphrase")
        .args(["person", "set", &case, "pronouns", "they/them"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    assert_eq!(d.show(&case), before, "the record did not change");
    assert_eq!(d.status()["unsynced_changes"], unsynced);
    assert_eq!(count(&d.json(&["case", "list"])), 1, "no case was opened");
}

#[test]
fn an_unreachable_server_keeps_the_work_and_says_so() {
    let (mut server, d) = server_and_device();
    server.stop();
    let (case, _, meeting) = case_with_a_meeting(&d);
    d.ok(&[
        "note",
        "append",
        &case,
        &meeting,
        "Written on the train with no signal.",
    ]);

    let err = d.fails(2, &["sync"]);
    assert!(err.contains("saved on this device"), "{err}");
    let status = d.status();
    assert!(status["unsynced_changes"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(status["last_sync"]["ok"], false);
    assert_eq!(status["last_successful_sync"], Value::Null);
    let human = d.ok(&["status"]);
    assert!(human.contains("NOT SYNCED"), "{human}");
    assert!(human.contains("FAILED"), "{human}");
    assert!(d.show(&case)["meetings"][0]["notes"]
        .as_str()
        .unwrap()
        .contains("no signal"));

    server.restart();
    d.ok(&["sync"]);
    assert_eq!(d.status()["unsynced_changes"], 0);
}

#[test]
fn edits_made_offline_on_two_devices_both_survive() {
    let (server, alex) = server_and_device();
    server.practitioner("Blake Carer", "North");
    let blake = server.device("Blake Carer");
    let (case, _, meeting) = case_with_a_meeting(&alex);
    alex.ok(&[
        "note",
        "append",
        &case,
        &meeting,
        "Jo spoke about her mother.",
    ]);
    alex.ok(&["sync"]);
    blake.ok(&["sync"]);

    // Offline on both: Alex corrects a word in the editor, Blake adds a paragraph, and both
    // set the person's pronouns differently.
    let edited = alex
        .cmd()
        .env("EDITOR", "sed -i s/mother/grandmother/")
        .args(["note", "edit", &case, &meeting])
        .output()
        .unwrap();
    assert!(
        edited.status.success(),
        "{}",
        String::from_utf8_lossy(&edited.stderr)
    );
    blake.ok(&[
        "note",
        "append",
        &case,
        &meeting,
        "Blake: Sam arrived late.",
    ]);
    alex.ok(&["person", "set", &case, "pronouns", "she/her"]);
    blake.ok(&["person", "set", &case, "pronouns", "they/them"]);

    alex.ok(&["sync"]);
    blake.ok(&["sync"]);
    alex.ok(&["sync"]);

    let notes = alex.show(&case)["meetings"][0]["notes"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(notes.contains("grandmother"), "{notes}");
    assert!(notes.contains("Sam arrived late"), "{notes}");
    assert_eq!(blake.show(&case)["meetings"][0]["notes"], notes.as_str());

    // The pronouns conflict is shown, not hidden, and settled by a pick that syncs.
    let conflicts = alex.json(&["conflicts", &case]);
    assert_eq!(count(&conflicts), 1, "{conflicts}");
    assert_eq!(conflicts[0]["field"], "person.pronouns");
    assert_eq!(count(&conflicts[0]["values"]), 2);
    assert!(alex.ok(&["case", "show", &case]).contains("!! CONFLICTS"));
    let picked = conflicts[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["value"] == "they/them")
        .expect("Blake's value is listed")["pick"]
        .to_string();
    alex.ok(&["resolve", &case, "person.pronouns", "--pick", &picked]);
    alex.ok(&["sync"]);
    blake.ok(&["sync"]);
    for d in [&alex, &blake] {
        let v = d.show(&case);
        assert_eq!(count(&v["conflicts"]), 0, "{v}");
        assert_eq!(v["person"]["pronouns"], "they/them");
    }
}

#[test]
fn entries_in_error_stay_visible_with_their_mark() {
    let (_server, d) = server_and_device();
    let (case, sam, _) = case_with_a_meeting(&d);
    d.ok(&["error", &case, &sam, "--reason", "added to the wrong case"]);
    let v = d.show(&case);
    let mark = &v["network"][0]["entered_in_error"];
    assert_eq!(mark["reason"], "added to the wrong case");
    assert_eq!(mark["by"]["practitioner_name"], "Alex Carer");
    let human = d.ok(&["case", "show", &case]);
    assert!(human.contains("Sam Smith"), "{human}");
    assert!(
        human.contains("[ENTERED IN ERROR: added to the wrong case, by Alex Carer,"),
        "{human}"
    );
    let err = d.fails(1, &["network", "leave", &case, &sam]);
    assert!(err.contains("entered in error"), "{err}");
}

/// A meeting recorded on the wrong person's record: `error --wrong-person` withholds its words
/// from `case show`, its JSON and every export; a tombstone says who removed it, when and why.
#[test]
fn a_meeting_on_the_wrong_persons_record_is_withheld_everywhere() {
    let (_server, d) = server_and_device();
    let (case, _sam, meeting) = case_with_a_meeting(&d);
    d.ok(&[
        "note",
        "append",
        &case,
        &meeting,
        "Zofia's sister called about the flat",
    ]);
    d.ok(&[
        "error",
        &case,
        &meeting,
        "--wrong-person",
        "--reason",
        "This was Zofia's meeting",
    ]);
    let human = d.ok(&["case", "show", &case]);
    assert!(
        human.contains("[REMOVED: RECORDED ON THE WRONG PERSON'S RECORD, content withheld: This was Zofia's meeting, by Alex Carer,"),
        "{human}"
    );
    let mut copies = vec![human, d.show(&case).to_string()];
    for format in ["html", "json", "fhir"] {
        copies.push(d.ok(&["export", &case, "--format", format]));
    }
    copies.push(d.ok(&["case", "timeline", &case]));
    for copy in &copies {
        assert!(!copy.contains("sister called about the flat"), "{copy}");
    }
    assert!(copies
        .last()
        .unwrap()
        .contains("removed: recorded on the wrong person's record: This was Zofia's meeting"));
    // A meeting is planned, held or cancelled, not marked in error for it.
    let next = d.ok(&[
        "meeting",
        "add",
        &case,
        "--at",
        "2099-06-01T10:00",
        "--place",
        "clinic",
        "--attendee",
        "person",
    ]);
    assert_eq!(d.show(&case)["meetings"][1]["state"], "planned");
    let err = d.fails(1, &["meeting", "state", &case, &next, "held"]);
    assert!(err.contains("has not come yet"), "{err}");
    d.ok(&["meeting", "state", &case, &next, "cancelled"]);
    assert_eq!(d.show(&case)["meetings"][1]["state"], "cancelled");
}

#[test]
fn sync_shows_progress_per_case_and_a_summary() {
    let (_server, d) = server_and_device();
    for name in ["Jo Bloggs", "Kim Lee", "Ray Ortiz"] {
        d.ok(&["case", "new", "--name", name]);
    }
    let out = d
        .cmd()
        .args(["sync", "--progress", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("synced 3/3 cases"), "{stderr}");
    assert!(
        stderr.contains("sync finished: 3 case(s), 0 refused"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("the report alone on stdout");
    assert_eq!(report["cases"], 3);
    assert_eq!(report["unsynced_changes"], 0);
    assert_eq!(report["wiped"], false);
}

#[test]
fn an_enrolment_code_enrols_one_device_only() {
    let server = Server::start();
    server.practitioner("Alex Carer", "North");
    let code = server.code("Alex Carer");
    let first = Device::new();
    first.ok(&["enrol", &server.addr.to_string(), &code]);
    let err = first.fails(1, &["enrol", &server.addr.to_string(), &code]);
    assert!(err.contains("already enrolled"), "{err}");
    let second = Device::new();
    let err = second.fails(1, &["enrol", &server.addr.to_string(), &code]);
    assert!(err.contains("already used"), "{err}");
    assert_eq!(second.status()["server"], Value::Null);
}

#[test]
fn exports_carry_the_record_and_who_accessed_it() {
    let (_server, d) = server_and_device();
    let (case, _sam, _meeting) = case_with_a_meeting(&d);
    d.ok(&["sync"]);
    d.ok(&["case", "show", &case]);

    // FHIR: a Bundle whose Patient carries the case's person.
    let fhir: Value = serde_json::from_str(&d.ok(&["export", &case, "--format", "fhir"])).unwrap();
    assert_eq!(fhir["resourceType"], "Bundle");
    let kinds: Vec<&str> = fhir["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    for kind in [
        "Patient",
        "RelatedPerson",
        "Encounter",
        "Composition",
        "Provenance",
        "AuditEvent",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }

    // The person's copy lists the accesses from the server's audit log.
    let html = d.ok(&["export", &case, "--format", "html"]);
    assert!(html.contains("Jo Bloggs"), "the person's copy names them");
    assert!(
        html.contains("Alex Carer"),
        "the access list names who read or wrote the record"
    );

    // PDF to a file, set in the fonts from --font-dir; without them, one clear line and no file.
    let pdf = d.home().join("copy.pdf");
    let fonts = polyphony_e2e::pdf_fonts();
    let nowhere = d.home().join("no-fonts");
    let said = d.fails(
        1,
        &[
            "export",
            &case,
            "--format",
            "pdf",
            "--font-dir",
            nowhere.to_str().unwrap(),
            "--out",
            pdf.to_str().unwrap(),
        ],
    );
    assert!(
        said.contains("NotoSans-Regular.ttf") && said.contains("scripts/pdf-fonts.sh"),
        "{said}"
    );
    assert!(!pdf.exists(), "no copy is written without its fonts");
    d.ok(&[
        "export",
        &case,
        "--format",
        "pdf",
        "--font-dir",
        fonts.to_str().unwrap(),
        "--out",
        pdf.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&pdf).unwrap().starts_with(b"%PDF"));

    // Subject access: everything, machine-readable.
    let sar: Value = serde_json::from_str(&d.ok(&["export", &case, "--format", "json"])).unwrap();
    assert!(sar.to_string().contains("Jo Bloggs"));

    // Team figures as CSV: a row for the case.
    let csv = d.ok(&["figures", "--csv"]);
    assert!(csv.lines().count() >= 2, "{csv}");
}

/// Issue 15, parts 3 and 8: `export CASE --format network --for MEMBER` is refused, naming the
/// member and where their consent stands, until it is given; given, the copy is written under a
/// name a person recognises, the command says the file is not encrypted, and after a sync the
/// person's copy says who gave it to whom and when. Withdrawn again, it is refused again.
#[test]
fn the_network_copy_is_for_a_member_whose_consent_is_given() {
    let (_server, d) = server_and_device();
    // The case is opened on the device and never synced before the copy is given: its first
    // sync uploads the case before the reads, so the disclosure is still recorded.
    let (case, _sam, _meeting) = case_with_a_meeting(&d);
    let network = |who: &str| -> Vec<String> {
        ["export", &case, "--format", "network", "--for", who]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let args = network("Sam Smith");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = d.fails(1, &args);
    assert!(
        refused.contains("Sam Smith") && refused.contains("not recorded"),
        "{refused}"
    );
    let no_member = d.fails(1, &["export", &case, "--format", "network"]);
    assert!(no_member.contains("--for MEMBER"), "{no_member}");

    d.ok(&["network", "consent", &case, "Sam Smith", "given"]);
    let html = d.ok(&["export", &case, "--format", "network", "--for", "Sam"]);
    assert!(
        html.contains("What we have written with Jo Bloggs"),
        "{html}"
    );
    assert!(html.contains("made for Sam Smith (my brother)"), "{html}");

    // Into a folder: a name a person recognises, and a plain word that it is not encrypted.
    let folder = d.home().join("copies");
    std::fs::create_dir_all(&folder).unwrap();
    let out = d
        .cmd()
        .args([
            "export",
            &case,
            "--format",
            "network",
            "--for",
            "Sam Smith",
            "--out",
            folder.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("not encrypted"), "{said}");
    let files: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1);
    assert!(
        files[0].starts_with("Jo Bloggs - copy for Sam Smith - 20") && files[0].ends_with(".html"),
        "{files:?}"
    );

    // After a sync, the disclosure is in the person's access list, in plain words.
    d.ok(&["sync"]);
    let copy = d.ok(&["export", &case, "--format", "html"]);
    assert!(
        copy.contains("Alex Carer gave a copy of your record to Sam Smith (your brother) on "),
        "{copy}"
    );
    for jargon in ["changes accepted", "outbox", "while offline"] {
        assert!(!copy.contains(jargon), "{jargon} in the person's copy");
    }

    d.ok(&["network", "consent", &case, "Sam Smith", "revoked"]);
    let refused = d.fails(1, &args);
    assert!(refused.contains("withdrawn"), "{refused}");
}

/// Issue 15, part 1: the time zone is the profile's setting, UK time unless chosen: a device set
/// to New York reads and shows New York time, and an unknown zone is refused.
#[test]
fn the_time_zone_is_a_profile_setting() {
    let (_server, d) = server_and_device();
    assert!(d.ok(&["time-zone"]).contains("UK time (Europe/London)"));
    let err = d.fails(1, &["time-zone", "Europe/Atlantis"]);
    assert!(err.contains("Europe/Atlantis"), "{err}");
    d.ok(&["time-zone", "America/New_York"]);
    let case = d.ok(&["case", "new", "--name", "Jo Bloggs"]);
    d.ok(&[
        "meeting",
        "add",
        &case,
        "--at",
        "2026-06-14T10:30",
        "--place",
        "home",
        "--attendee",
        "person",
    ]);
    // 10:30 in New York in June is 14:30 UTC, and it is shown as typed, saying which zone.
    assert_eq!(d.show(&case)["meetings"][0]["at"], "2026-06-14T14:30:00Z");
    let human = d.ok(&["case", "show", &case]);
    assert!(
        human.contains("2026-06-14 10:30 America/New_York time"),
        "{human}"
    );
    d.ok(&["time-zone", "Europe/London"]);
    let human = d.ok(&["case", "show", &case]);
    assert!(human.contains("2026-06-14 15:30 UK time"), "{human}");
}

/// Issue 15, part 1: `--at` without an offset is UK time, on a device whose own zone is UTC;
/// both 2026 clock changes and the hour after midnight in summer; explicit offsets still work.
#[test]
fn times_are_typed_and_shown_in_uk_time_across_both_clock_changes() {
    let (_server, d) = server_and_device();
    let case = d.ok(&["case", "new", "--name", "Jo Bloggs"]);
    let add = |at: &str| {
        vec![
            "meeting".to_string(),
            "add".to_string(),
            case.clone(),
            "--at".to_string(),
            at.to_string(),
            "--place".to_string(),
            "home".to_string(),
            "--attendee".to_string(),
            "person".to_string(),
        ]
    };
    let run = |at: &str| {
        let args = add(at);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        d.ok(&args)
    };
    let refuse = |at: &str| {
        let args = add(at);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        d.fails(1, &args)
    };
    run("2026-06-14T10:30"); // BST
    run("2026-03-29T00:30"); // GMT, just before the clocks go forward
    run("2026-03-29T02:30"); // BST, just after
    run("2026-07-01T00:30"); // after midnight in summer: still 30 June in UTC
    run("2026-10-25T01:30+01:00"); // the first 01:30 when the clocks go back
    run("2026-10-25T01:30+00:00"); // the second
    run("2026-11-01T10:30Z");
    let skipped = refuse("2026-03-29T01:30");
    assert!(skipped.contains("did not happen"), "{skipped}");
    let twice = refuse("2026-10-25T01:30");
    assert!(
        twice.contains("happened twice") && twice.contains("2026-10-25T01:30+01:00"),
        "{twice}"
    );
    let mut stored: Vec<String> = d.show(&case)["meetings"]
        .as_array()
        .expect("meetings")
        .iter()
        .map(|m| m["at"].as_str().unwrap_or_default().to_string())
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        [
            "2026-03-29T00:30:00Z",
            "2026-03-29T01:30:00Z",
            "2026-06-14T09:30:00Z",
            "2026-06-30T23:30:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:30:00Z",
            "2026-11-01T10:30:00Z",
        ],
        "stored as UTC instants at the offset of their own date"
    );
    let shown = d.ok(&["case", "show", &case]);
    for clock in [
        "2026-06-14 10:30 UK time",
        "2026-03-29 00:30 UK time",
        "2026-03-29 02:30 UK time",
        "2026-07-01 00:30 UK time",
        "2026-10-25 01:30 UK time",
        "2026-11-01 10:30 UK time",
    ] {
        assert!(shown.contains(clock), "{clock} not in:\n{shown}");
    }
}

/// `today`: open actions past their date, most overdue first, with `--mine` and `--sort`; an
/// action done or not yet due is not listed. Dates far in the past and future, so the test does
/// not depend on the day it runs.
#[test]
fn today_lists_overdue_actions_most_overdue_first_and_filters_mine() {
    let (_server, d) = server_and_device();
    let jo = d.ok(&["case", "new", "--name", "Jo Bloggs"]);
    let ann = d.ok(&["case", "new", "--name", "Ann <Example>"]);
    let action = |case: &str, text: &str, owner: &str, due: &str| {
        let decision = d.ok(&["decision", "propose", case, "Meet weekly", "--by", "person"]);
        d.ok(&[
            "decision", "action", case, &decision, text, "--owner", owner, "--due", due,
        ])
    };
    let mine = action(&jo, "Call the GP", "me", "2020-01-01");
    let persons = action(&ann, "Bring the letter", "person", "2020-03-01");
    let done = action(&jo, "Done already", "me", "2019-01-01");
    d.ok(&["decision", "done", &jo, &done]);
    action(&jo, "Not yet", "me", "2099-01-01");

    let all = d.json(&["today"]);
    let texts: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["Call the GP", "Bring the letter"], "{all}");
    assert_eq!(all[0]["kind"], "overdue");
    assert_eq!(all[0]["entry"], mine);
    assert_eq!(all[0]["due"], "2020-01-01");
    assert_eq!(all[0]["mine"], true);
    assert_eq!(all[0]["owner_name"], "Alex Carer");
    assert_eq!(all[1]["entry"], persons);
    assert_eq!(all[1]["mine"], false);
    assert_eq!(all[1]["owner"], "person");
    assert!(all[0]["days_overdue"].as_i64() > all[1]["days_overdue"].as_i64());

    let by_person = d.json(&["today", "--sort", "person"]);
    assert_eq!(by_person[0]["person"], "Ann <Example>");
    let only_mine = d.json(&["today", "--mine"]);
    assert_eq!(count(&only_mine), 1, "{only_mine}");
    assert_eq!(only_mine[0]["entry"], mine);

    let human = d.ok(&["today"]);
    assert!(
        human.contains("Overdue") && human.contains("due 2020-01-01"),
        "{human}"
    );
    assert!(human.contains("Call the GP (Alex Carer)"), "{human}");
}

/// `today` lists a planned meeting whose time has passed as awaiting its outcome, and, past the
/// warning, the changes only on this device; after a sync the changes are gone from the list.
/// Text from the record is printed on one line, and a negative warning is refused.
#[test]
fn today_lists_a_meeting_awaiting_its_outcome_and_changes_not_synced() {
    let (_server, d) = server_and_device();
    let jo = d.ok(&["case", "new", "--name", "Jo Bloggs"]);
    let meeting = d.ok(&[
        "meeting",
        "add",
        &jo,
        "--at",
        "2020-03-14T10:30",
        "--place",
        "home",
        "--attendee",
        "person",
    ]);
    d.ok(&["meeting", "state", &jo, &meeting, "planned"]);
    let decision = d.ok(&["decision", "propose", &jo, "Meet weekly", "--by", "person"]);
    d.ok(&[
        "decision",
        "action",
        &jo,
        &decision,
        "Call\nthe GP",
        "--owner",
        "me",
        "--due",
        "2020-01-01",
    ]);
    let all = d.json(&["today", "--unsynced-warning-minutes", "0"]);
    let kinds: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"awaits_outcome"), "{all}");
    assert!(kinds.contains(&"unsynced"), "{all}");
    let waiting = all
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "awaits_outcome")
        .unwrap();
    assert_eq!(waiting["entry"], meeting);
    assert_eq!(waiting["mine"], true, "recorded by me");
    let unsynced = all
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "unsynced")
        .unwrap();
    assert_eq!(unsynced["mine"], true);
    assert!(unsynced["at"].is_string());

    let out = d
        .cmd()
        .args(["today", "--unsynced-warning-minutes", "0"])
        .output()
        .unwrap();
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(human.contains("Awaits outcome"), "{human}");
    assert!(human.contains("Not synced"), "{human}");
    assert!(human.contains("Call\\nthe GP"), "one line per row: {human}");

    d.ok(&["sync"]);
    let after = d.json(&["today", "--unsynced-warning-minutes", "0"]);
    assert!(
        after
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["kind"] != "unsynced"),
        "{after}"
    );
    let err = d.fails(1, &["today", "--unsynced-warning-minutes=-5"]);
    assert!(err.contains("-5"), "{err}");
}

/// The team list reaches the device through sync: colleagues are ticked present by name and
/// noted with their roles, a colleague joins the care team in their role, the figures count a
/// peer support worker apart from practitioners, a decision the team takes while the person
/// disagrees keeps her position and says why, and a role the administrator changes reaches the
/// device at its next sync.
#[test]
fn the_team_list_from_the_server_names_colleagues_and_their_roles() {
    let server = Server::start();
    server.practitioner("Alex Carer", "North");
    server.admin(&[
        "practitioner",
        "add",
        "Jo Peer",
        "--team",
        "North",
        "--role",
        "peer_support",
    ]);
    server.admin(&[
        "practitioner",
        "add",
        "Ade Bello",
        "--team",
        "North",
        "--role",
        "psychiatrist",
    ]);
    server.admin(&["team", "add", "South"]);
    server.admin(&["practitioner", "add", "Sol Other", "--team", "South"]);
    let alex = server.device("Alex Carer");
    assert_eq!(count(&alex.json(&["team"])), 0, "nothing before a sync");
    alex.ok(&["sync"]);
    let team = alex.json(&["team"]);
    let role_of = |team: &Value, name: &str| {
        team.as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["role"].as_str().unwrap().to_string())
    };
    assert_eq!(role_of(&team, "Jo Peer").as_deref(), Some("peer_support"));
    assert_eq!(role_of(&team, "Ade Bello").as_deref(), Some("psychiatrist"));
    assert_eq!(
        role_of(&team, "Alex Carer").as_deref(),
        Some("practitioner")
    );
    assert_eq!(
        role_of(&team, "Sol Other"),
        None,
        "another team's staff are not listed"
    );
    assert!(alex
        .ok(&["team"])
        .contains("Jo Peer, peer support worker: North"));

    let (case, _, _) = case_with_a_meeting(&alex);
    alex.ok(&["care-team", "add", &case]);
    let ade = alex.ok(&["care-team", "add", &case, "--colleague", "Ade"]);
    let visit = alex.ok(&[
        "meeting",
        "add",
        &case,
        "--at",
        "2026-03-15T10:30",
        "--place",
        "home",
        "--attendee",
        "person",
        "--attendee",
        "me",
        "--attendee",
        "Jo Peer",
    ]);
    alex.ok(&["meeting", "attend", &case, &visit, "Ade Bello"]);
    let shown = alex.show(&case);
    let care = shown["care_team"].as_array().unwrap();
    let ade_entry = care
        .iter()
        .find(|c| c["id"] == ade)
        .expect("Ade is in the care team");
    assert_eq!(ade_entry["role"], "psychiatrist");
    let meeting = shown["meetings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == visit)
        .unwrap();
    let staff: Vec<(String, String)> = meeting["staff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().into(),
                s["role"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        staff.contains(&("Jo Peer".into(), "peer_support".into())),
        "{staff:?}"
    );
    assert!(
        staff.contains(&("Ade Bello".into(), "psychiatrist".into())),
        "{staff:?}"
    );
    let text = alex.ok(&["case", "show", &case]);
    assert!(text.contains("Jo Peer (peer support worker)"), "{text}");
    assert!(text.contains("Ade Bello (psychiatrist)"), "{text}");
    let figures = alex.json(&["case", "figures", &case]);
    assert_eq!(figures["share_with_peer_support"], 0.5);
    assert_eq!(figures["share_two_or_more_practitioners"], 0.5);

    let decision = alex.ok(&[
        "decision",
        "propose",
        &case,
        "Ask for a Mental Health Act assessment",
        "--by",
        "me",
    ]);
    let refused = alex.fails(1, &["decision", "status", &case, &decision, "team_decided"]);
    assert!(refused.contains("position first"), "{refused}");
    alex.ok(&[
        "decision",
        "position",
        &case,
        &decision,
        "--person",
        "disagree",
        "--words",
        "I will not go to hospital",
    ]);
    let refused = alex.fails(1, &["decision", "status", &case, &decision, "team_decided"]);
    assert!(refused.contains("say why"), "{refused}");
    alex.ok(&[
        "decision",
        "status",
        &case,
        &decision,
        "team_decided",
        "--note",
        "Risk to life tonight, said openly in the meeting",
    ]);
    let shown = alex.show(&case);
    let d = shown["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == decision)
        .unwrap();
    assert_eq!(d["status"], "team_decided");
    assert_eq!(d["positions"][0]["stance"], "disagree");

    // The administrator changes a role: the device has it after its next sync.
    server.admin(&["practitioner", "role", "Jo Peer", "practitioner"]);
    assert_eq!(
        role_of(&alex.json(&["team"]), "Jo Peer").as_deref(),
        Some("peer_support"),
        "not before the sync"
    );
    alex.ok(&["sync"]);
    assert_eq!(
        role_of(&alex.json(&["team"]), "Jo Peer").as_deref(),
        Some("practitioner")
    );
    let refused = server.admin_fails(&["practitioner", "role", "Jo Peer", "wizard"]);
    assert!(refused.contains("staff role"), "{refused}");
}

/// The crisis plan from the command line: items in the person's and a network member's words,
/// one agreed at a meeting, a change that keeps what it replaced, a review date that puts the
/// review on the morning list once it has come; a colleague's device sees it all after a sync;
/// bad input changes nothing.
#[test]
fn the_crisis_plan_is_written_changed_reviewed_and_shared() {
    let (server, alex) = server_and_device();
    let (case, sam, meeting) = case_with_a_meeting(&alex);
    let cat = alex.ok(&[
        "plan",
        "add",
        &case,
        "--section",
        "preferences",
        "--meeting",
        &meeting,
        "Sam looks after the cat",
    ]);
    alex.ok(&[
        "plan",
        "add",
        &case,
        "--section",
        "early_signs",
        "--words-of",
        &sam,
        "Jo stops answering the phone",
    ]);
    alex.ok(&[
        "plan",
        "change",
        &case,
        &cat,
        "--meeting",
        &meeting,
        "Sam, or the neighbour at no. 4, looks after the cat",
    ]);
    let refused = alex.fails(
        1,
        &["plan", "add", &case, "--section", "horoscope", "Stars"],
    );
    assert!(refused.contains("crisis plan section"), "{refused}");
    let refused = alex.fails(1, &["plan", "add", &case, "--section", "what_helps", "  "]);
    assert!(refused.contains("required"), "{refused}");
    alex.ok(&["plan", "review", &case, "--on", "2026-01-05"]);
    let plan = alex.json(&["plan", "show", &case]);
    assert_eq!(count(&plan["items"]), 2);
    assert_eq!(plan["review_on"], "2026-01-05");
    let item = plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == cat)
        .unwrap();
    assert_eq!(item["section"], "preferences");
    assert_eq!(item["current"]["words_of"], "person");
    assert_eq!(item["current"]["meeting"], meeting);
    assert_eq!(item["earlier"][0]["text"], "Sam looks after the cat");
    let text = alex.ok(&["case", "show", &case]);
    assert!(
        text.contains("Preferences if in crisis: Sam, or the neighbour"),
        "{text}"
    );
    assert!(
        text.contains("replaced: \"Sam looks after the cat\""),
        "{text}"
    );
    assert!(text.contains("in the words of Sam Smith"), "{text}");
    let today = alex.json(&["today"]);
    let review = today
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "review_due")
        .expect("the review is due");
    assert_eq!(review["due"], "2026-01-05");

    alex.ok(&["sync"]);
    server.practitioner("Blake Carer", "North");
    let blake = server.device("Blake Carer");
    blake.ok(&["sync"]);
    let seen = blake.json(&["plan", "show", &case]);
    assert_eq!(seen["items"], plan["items"]);
}

/// Safety notes from the command line: shown to the person by default; withholding one needs a
/// reason from one practitioner and the confirmation of a second (the same practitioner cannot
/// confirm their own request), and then the person's copy and the subject-access export list it
/// as withheld, without its words.
#[test]
fn a_safety_note_is_withheld_only_with_a_second_practitioners_confirmation() {
    let (server, alex) = server_and_device();
    let (case, _, _) = case_with_a_meeting(&alex);
    alex.ok(&[
        "safety",
        "add",
        &case,
        "--kind",
        "home_visit_safety",
        "Large dog at the address: visit in pairs",
    ]);
    let concern = alex.ok(&[
        "safety",
        "add",
        &case,
        "--kind",
        "safeguarding",
        "Concern raised by the school nurse",
    ]);
    let refused = alex.fails(1, &["safety", "confirm", &case, &concern]);
    assert!(refused.contains("ask first"), "{refused}");
    alex.ok(&[
        "safety",
        "withhold",
        &case,
        &concern,
        "--reason",
        "Strategy meeting first",
    ]);
    let refused = alex.fails(1, &["safety", "confirm", &case, &concern]);
    assert!(refused.contains("second practitioner"), "{refused}");
    let copy = alex.ok(&["export", &case, "--format", "html"]);
    assert!(
        copy.contains("Concern raised by the school nurse"),
        "asked is not withheld"
    );
    alex.ok(&["sync"]);

    server.practitioner("Blake Carer", "North");
    let blake = server.device("Blake Carer");
    blake.ok(&["sync"]);
    blake.ok(&["safety", "confirm", &case, &concern]);
    let copy = blake.ok(&["export", &case, "--format", "html"]);
    assert!(copy.contains("Large dog at the address"));
    assert!(!copy.contains("Concern raised by the school nurse"));
    assert!(!copy.contains("Strategy meeting first"));
    assert!(copy.contains("is withheld from this copy"));
    let sar: Value =
        serde_json::from_str(&blake.ok(&["export", &case, "--format", "json"])).unwrap();
    assert_eq!(count(&sar["withheld_from_person"]), 1);
    assert!(!sar.to_string().contains("school nurse"));
    assert!(
        !sar.to_string().contains("Strategy meeting first"),
        "nor the reason"
    );
    let text = blake.ok(&["case", "show", &case]);
    assert!(text.contains("WITHHELD from the person's copy"), "{text}");
    blake.ok(&["sync"]);
    let audit = server.admin(&["audit", "--case", &case]);
    assert!(audit.contains("withheld from the person's copy"), "{audit}");
    // Lifted, with the reason: in the copy again, and audited so.
    blake.ok(&[
        "safety",
        "lift",
        &case,
        &concern,
        "--reason",
        "The meeting was held",
    ]);
    let copy = blake.ok(&["export", &case, "--format", "html"]);
    assert!(copy.contains("Concern raised by the school nurse"));
    blake.ok(&["sync"]);
    let audit = server.admin(&["audit", "--case", &case]);
    assert!(audit.contains("back in the person's copy"), "{audit}");
}

/// Issue 17, part 4: a letter attached on one device syncs to the server and reaches a second
/// device, which writes out the same bytes; a kind of file that cannot be attached is refused
/// with the list of what can, and nothing is written.
#[test]
fn an_attached_letter_reaches_a_second_device_as_it_was_attached() {
    let (server, alex) = server_and_device();
    server.practitioner("Blake Carer", "North");
    let (case, _, meeting) = case_with_a_meeting(&alex);
    let dir = tempfile::tempdir().unwrap();
    let letter = dir.path().join("GP letter.PDF");
    let bytes: Vec<u8> = (0..1_500_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(&letter, &bytes).unwrap();
    let exe = dir.path().join("setup.exe");
    std::fs::write(&exe, b"MZ").unwrap();

    let refused = alex.fails(
        1,
        &[
            "attachment",
            "add",
            &case,
            exe.to_str().unwrap(),
            "--kind",
            "other",
        ],
    );
    assert!(
        refused.contains("not a kind of file") && refused.contains("pdf"),
        "{refused}"
    );
    let id = alex.ok(&[
        "attachment",
        "add",
        &case,
        letter.to_str().unwrap(),
        "--kind",
        "gp_letter",
        "--title",
        "Letter from Dr Shah",
        "--meeting",
        &meeting,
    ]);
    let listed = alex.ok(&["attachment", "list", &case]);
    assert!(
        listed.contains("GP letter: Letter from Dr Shah"),
        "{listed}"
    );
    assert!(listed.contains("on this device only"), "{listed}");
    let listed: Value = alex.json(&["attachment", "list", &case]);
    assert_eq!(count(&listed), 1, "the refused file wrote nothing");
    alex.ok(&["sync"]);
    let listed: Value = alex.json(&["attachment", "list", &case]);
    assert_eq!(listed[0]["state"], "saved");

    let blake = server.device("Blake Carer");
    blake.ok(&["sync"]);
    let out = dir.path().join("opened.pdf");
    blake.ok(&[
        "attachment",
        "save",
        &case,
        id.trim(),
        "--to",
        out.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    // An existing file is not overwritten.
    let again = blake.fails(
        1,
        &[
            "attachment",
            "save",
            &case,
            id.trim(),
            "--to",
            out.to_str().unwrap(),
        ],
    );
    assert!(again.contains("cannot write"), "{again}");
}

#[test]
fn a_referral_opens_a_case_with_its_letter_and_a_re_referral_opens_a_second_episode() {
    let (server, alex) = server_and_device();
    server.practitioner("Blake Carer", "North");
    let dir = tempfile::tempdir().unwrap();
    let letter = dir.path().join("referral.pdf");
    std::fs::write(&letter, b"%PDF-1.4 a referral letter").unwrap();

    // Something missing: refused with one line, and no case is opened.
    let refused = alex.fails(
        1,
        &[
            "case",
            "new",
            "--name",
            "Jo Bloggs",
            "--referral",
            "2026-03-14T08:00",
            "--source",
            "gp",
            "--reason",
            "Not sleeping, hearing voices",
            "--urgency",
            "emergency",
            "--letter",
            letter.to_str().unwrap(),
        ],
    );
    assert!(refused.contains("referrer"), "{refused}");
    let usage = alex.fails(1, &["case", "new", "--name", "Jo", "--source", "gp"]);
    assert!(
        usage.contains("--reason"),
        "--source needs --reason and --urgency: {usage}"
    );
    let cases: Value = alex.json(&["case", "list"]);
    assert_eq!(count(&cases), 0, "nothing was opened");

    let case = alex.ok(&[
        "case",
        "new",
        "--name",
        "Jo Bloggs",
        "--referral",
        "2026-03-14T08:00",
        "--source",
        "gp",
        "--referrer",
        "Dr Shah, Elm Street Surgery",
        "--reason",
        "Not sleeping for four nights, hearing her late mother's voice",
        "--urgency",
        "emergency",
        "--letter",
        letter.to_str().unwrap(),
    ]);
    // The caseload flags a first meeting past due, and the morning list asks for it.
    let list = alex.ok(&["case", "list"]);
    assert!(list.contains("FIRST MEETING DUE"), "{list}");
    assert!(
        list.contains("PAST DUE") && list.contains("emergency (4 hours)"),
        "{list}"
    );
    let today = alex.ok(&["today"]);
    assert!(today.contains("Hold the first network meeting"), "{today}");
    let listed = alex.ok(&["referral", "list", &case]);
    assert!(
        listed.contains("Emergency (4 hours) (GP: Dr Shah, Elm Street Surgery)"),
        "{listed}"
    );
    assert!(
        listed.contains("reason: \"Not sleeping for four nights"),
        "{listed}"
    );
    assert!(listed.contains("letter: "), "{listed}");
    assert!(listed.contains("FIRST MEETING PAST DUE"), "{listed}");
    let files: Value = alex.json(&["attachment", "list", &case]);
    assert_eq!(files[0]["kind"], "referral_letter");

    // Met (late), closed, and referred again by the person themselves: a second episode, the
    // network still there.
    let sam = alex.ok(&[
        "network",
        "add",
        &case,
        "--name",
        "Sam Smith",
        "--relationship",
        "my brother",
    ]);
    alex.ok(&[
        "meeting",
        "add",
        &case,
        "--at",
        "2026-03-14T18:00",
        "--place",
        "home",
        "--attendee",
        "person",
        "--attendee",
        &sam,
    ]);
    alex.ok(&["case", "milestone", &case, "closure", "2026-05-01T12:00"]);
    let again = alex.ok(&[
        "referral",
        "add",
        &case,
        "--received",
        "2026-09-02T21:00",
        "--source",
        "self",
        "--reason",
        "The voices are back and I can't sleep",
        "--urgency",
        "urgent",
    ]);
    assert!(!again.is_empty());
    // A date without its time is refused (it would read as midnight).
    let no_time = alex.fails(
        1,
        &[
            "referral",
            "add",
            &case,
            "--received",
            "2026-09-03",
            "--source",
            "self",
            "--reason",
            "Again",
            "--urgency",
            "urgent",
        ],
    );
    assert!(no_time.contains("has no time"), "{no_time}");
    // A second referral an hour after one: recorded, and pointed out with the command that undoes
    // it if it is the same one.
    let twice = alex
        .cmd()
        .args([
            "referral",
            "add",
            &case,
            "--received",
            "2026-09-02T22:00",
            "--source",
            "family",
            "--referrer",
            "Sam Smith",
            "--reason",
            "The voices are back",
            "--urgency",
            "urgent",
        ])
        .output()
        .unwrap();
    assert!(twice.status.success());
    let said = String::from_utf8_lossy(&twice.stderr);
    assert!(
        said.contains("another referral came in at 2026-09-02 21:00")
            && said.contains("polyphony error")
            && said.contains("--reason"),
        "{said}"
    );
    let twice_id = String::from_utf8_lossy(&twice.stdout).trim().to_string();
    alex.ok(&["error", &case, &twice_id, "--reason", "Recorded twice"]);
    // The self-referral's letter came later: attached to it and named as its letter.
    let later = dir.path().join("self-referral.pdf");
    std::fs::write(&later, b"%PDF-1.4 written by Jo").unwrap();
    alex.ok(&["referral", "letter", &case, &again, later.to_str().unwrap()]);
    let refused = alex.fails(
        1,
        &["referral", "letter", &case, &again, later.to_str().unwrap()],
    );
    assert!(refused.contains("already names its letter"), "{refused}");
    let refs: Value = alex.json(&["referral", "list", &case]);
    assert_eq!(
        count(&refs["referrals"]),
        3,
        "the one logged twice stays, in error"
    );
    assert_eq!(count(&refs["episodes"]), 2);
    assert_eq!(refs["episodes"][0]["meetings"], 1);
    assert_eq!(refs["episodes"][1]["urgency"], "urgent");
    assert!(
        refs["referrals"][1]["letter"].is_string(),
        "the later letter is named"
    );
    let figures: Value = alex.json(&["case", "figures", &case]);
    assert_eq!(figures["episodes"][0]["first_meeting_in_time"], false);
    assert_eq!(
        figures["episodes"][0]["hours_referral_to_first_meeting"],
        10.0
    );
    let shown = alex.ok(&["case", "show", &case]);
    assert!(shown.contains("episode 2 from"), "{shown}");

    // A second device of the team gets both referrals and the letter.
    alex.ok(&["sync"]);
    let blake = server.device("Blake Carer");
    blake.ok(&["sync"]);
    let refs: Value = blake.json(&["referral", "list", &case]);
    assert_eq!(count(&refs["referrals"]), 3);
    let letter_id = refs["referrals"][0]["letter"].as_str().unwrap().to_string();
    let out = dir.path().join("opened.pdf");
    blake.ok(&[
        "attachment",
        "save",
        &case,
        &letter_id,
        "--to",
        out.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), b"%PDF-1.4 a referral letter");
}
