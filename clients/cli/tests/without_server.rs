//! What the command does with no borough server at all: a fresh device, a device that is not
//! enrolled, bad arguments, a wrong or missing passphrase, and a server that cannot be reached.

mod common;

use common::Device;
use polyphony_core::identity::EnrolmentCode;

#[test]
fn a_fresh_device_reports_an_honest_empty_status() {
    let d = Device::new();
    let s = d.status();
    assert_eq!(s["server"], serde_json::Value::Null);
    assert_eq!(s["practitioner"], serde_json::Value::Null);
    assert_eq!(s["last_successful_sync"], serde_json::Value::Null);
    assert_eq!(s["unsynced_changes"], 0);
    assert_eq!(s["not_on_hub"], serde_json::Value::Null);
    assert_eq!(s["cases"].as_array().map(Vec::len), Some(0));
    let human = d.ok(&["status"]);
    assert!(human.contains("nobody yet"), "{human}");
    assert!(!human.contains("synced:"), "{human}");
    assert!(!human.contains("trust hub"), "{human}");
    assert_eq!(d.json(&["case", "list"]), serde_json::json!([]));
}

#[test]
fn case_work_before_enrolment_says_to_enrol_first() {
    let d = Device::new();
    let err = d.fails(1, &["case", "new", "--name", "Jo Bloggs"]);
    assert!(err.contains("polyphony enrol"), "{err}");
    let err = d.fails(1, &["sync"]);
    assert!(err.contains("not enrolled"), "{err}");
    assert_eq!(d.status()["cases"].as_array().map(Vec::len), Some(0));
}

#[test]
fn an_unknown_case_is_a_user_error() {
    let d = Device::new();
    let err = d.fails(1, &["case", "show", "0f8e2a4c"]);
    assert!(err.contains("no case matches '0f8e2a4c'"), "{err}");
    d.fails(1, &["note", "append", "0f8e", "abcd", "words"]);
}

#[test]
fn a_wrong_passphrase_is_refused_and_changes_nothing() {
    let d = Device::new();
    let before = d.status();
    let out = d
        .cmd()
        .env("POLYPHONY_PASSPHRASE", "not the passphrase")
        .args(["status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: the passphrase does not open"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(d.status(), before);
}

#[test]
fn without_a_terminal_the_passphrase_must_come_from_the_environment() {
    let d = Device::new();
    let out = d
        .cmd()
        .env_remove("POLYPHONY_PASSPHRASE")
        .args(["status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("POLYPHONY_PASSPHRASE"), "{stderr}");
    assert!(
        !d.home().join("store").exists(),
        "no profile is made without a passphrase"
    );
}

#[test]
fn a_new_profile_needs_a_passphrase_of_some_length() {
    let d = Device::new();
    let out = d
        .cmd()
        .env("POLYPHONY_PASSPHRASE", "short")
        .args(["status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 8 characters"));
    assert!(!d.home().join("store").exists());
}

#[test]
fn bad_arguments_get_one_line_and_exit_1() {
    let d = Device::new();
    let err = d.fails(
        1,
        &[
            "meeting",
            "add",
            "abcd",
            "--at",
            "2026-03-14T10:30",
            "--place",
            "garden",
        ],
    );
    assert!(err.contains("home, clinic, online, phone"), "{err}");
    let err = d.fails(1, &["case", "new"]);
    assert!(err.contains("--name"), "{err}");
    let err = d.fails(
        1,
        &["decision", "position", "abcd", "efgh", "--person", "maybe"],
    );
    assert!(err.contains("agree, disagree, unsure"), "{err}");
    d.fails(1, &["no-such-command"]);
}

#[test]
fn help_and_version_succeed() {
    let d = Device::new();
    let help = d.ok(&["--help"]);
    assert!(help.contains("Exit codes"), "{help}");
    assert!(d.ok(&["case", "new", "--help"]).contains("--nhs-number"));
    assert!(d.ok(&["--version"]).starts_with("polyphony "));
}

#[test]
fn a_mistyped_enrolment_code_is_caught_before_the_network() {
    let d = Device::new();
    let err = d.fails(1, &["enrol", "127.0.0.1:9", "qpzr-y9x8-gf2t"]);
    assert!(err.contains("code"), "{err}");
    assert_eq!(d.status()["server"], serde_json::Value::Null);
}

#[test]
fn an_unreachable_server_at_enrolment_exits_2() {
    let d = Device::new();
    let code = EnrolmentCode::new([7; 32]).to_string();
    let port = common::free_udp_port();
    let err = d.fails(2, &["enrol", &format!("127.0.0.1:{port}"), &code]);
    assert!(err.contains("cannot reach"), "{err}");
    assert_eq!(d.status()["server"], serde_json::Value::Null);
}

#[test]
fn today_on_a_fresh_device_lists_nothing_and_refuses_an_unknown_order() {
    let d = Device::new();
    assert_eq!(d.json(&["today"]), serde_json::json!([]));
    assert_eq!(
        d.json(&["today", "--mine", "--sort", "person"]),
        serde_json::json!([])
    );
    let out = d.cmd().args(["today"]).output().unwrap();
    assert!(out.status.success());
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout when nothing is due"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing is overdue or due today"));
    let err = d.fails(1, &["today", "--sort", "age"]);
    assert!(err.contains("due, person, kind"), "{err}");
}
