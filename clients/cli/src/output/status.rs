//! The caseload, `status` and the sync summary, for people.
//!
//! `status` never says everything is synced unless every case has no unsynced change: the count
//! comes from what the server acknowledged, not from when the last sync ran.

use polyphony_core::profile::{CaseSummary, Status, SyncReport};
use time::format_description::well_known::Rfc3339;

use super::{short, when, when_opt, Page};

fn caseload(page: &mut Page, cases: &[CaseSummary]) {
    let width = cases
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    page.line(
        0,
        format!(
            "{:<8}  {:<width$}  {:>8}  {:>9}  {:<16}  {:<16}  {}",
            "CASE",
            "NAME",
            "UNSYNCED",
            "CONFLICTS",
            "LAST MEETING",
            "NEXT MEETING",
            "FIRST MEETING DUE"
        ),
    );
    let now = time::OffsetDateTime::now_utc();
    for c in cases {
        page.line(
            0,
            format!(
                "{:<8}  {:<width$}  {:>8}  {:>9}  {:<16}  {:<16}  {}",
                short(&c.case_id),
                c.name,
                c.unsynced_changes,
                c.conflicts,
                when_opt(c.last_meeting.as_deref()),
                when_opt(c.next_meeting.as_deref()),
                first_meeting(c, now),
            ),
        );
    }
}

/// The time left to the first network meeting of the case's open episode, flagged when past due;
/// once held, when; "-" for an episode closed with none.
fn first_meeting(c: &CaseSummary, now: polyphony_core::model::Instant) -> String {
    let Some(due) = c
        .first_meeting_due
        .as_deref()
        .and_then(|d| polyphony_core::model::Instant::parse(d, &Rfc3339).ok())
    else {
        return match &c.first_meeting {
            Some(t) => format!("held {}", super::when(t)),
            None => "-".into(),
        };
    };
    let (left, past) = polyphony_core::model::referrals::time_left(due, now);
    let urgency = c
        .urgency
        .as_deref()
        .map(|u| format!(", {}", u.to_lowercase()))
        .unwrap_or_default();
    if past {
        format!("PAST DUE: {left}{urgency}")
    } else {
        format!("{left}{urgency}")
    }
}

/// `case list`.
pub(crate) fn print_caseload(cases: &[CaseSummary]) {
    if cases.is_empty() {
        eprintln!("no cases on this device yet: open one with `polyphony case new --name NAME`");
        return;
    }
    let mut page = Page::default();
    caseload(&mut page, cases);
    page.print();
}

/// `status`.
pub(crate) fn print_status(s: &Status) {
    let mut page = Page::default();
    page.line(0, format!("device:               {}", s.device));
    match (&s.server, &s.practitioner) {
        (Some(server), Some(who)) => {
            page.line(0, format!("enrolled with:        {server} as {who}"))
        }
        _ => page.line(
            0,
            "enrolled with:        nobody yet (run `polyphony enrol SERVER CODE`)",
        ),
    }
    let last_ok = s
        .last_successful_sync
        .as_deref()
        .map(when)
        .unwrap_or_else(|| "never".into());
    page.line(0, format!("last successful sync: {last_ok}"));
    if let Some(last) = &s.last_sync {
        let outcome = if last.ok { "ok" } else { "FAILED" };
        page.line(
            0,
            format!(
                "last sync attempt:    {} {outcome}: {}",
                when(&last.at),
                last.message
            ),
        );
    }
    if !s.cases.is_empty() {
        page.line(0, "");
        caseload(&mut page, &s.cases);
        page.line(0, "");
    }
    let with_changes = s.cases.iter().filter(|c| c.unsynced_changes > 0).count();
    if s.unsynced_changes > 0 {
        page.line(
            0,
            format!(
                "NOT SYNCED: {} change(s) in {with_changes} case(s) are only on this device: run `polyphony sync` when you have signal",
                s.unsynced_changes
            ),
        );
    } else if s.cases.is_empty() {
        page.line(0, "no cases on this device");
    } else {
        page.line(
            0,
            format!(
                "all {} case(s) synced: the server holds every change made here",
                s.cases.len()
            ),
        );
    }
    if s.unsent_reads > 0 {
        page.line(
            0,
            format!(
                "{} record view(s) made here are not yet in the server's access log (sent with the next sync)",
                s.unsent_reads
            ),
        );
    }
    page.print();
}

/// The summary at the end of `sync` (on stderr: stdout is kept for `--json`).
pub(crate) fn print_sync_report(r: &SyncReport) {
    for (case, reason) in &r.refused {
        eprintln!("refused: case {}: {reason}", short(case));
    }
    for case in &r.moved {
        eprintln!(
            "moved: case {} now belongs to another team and was removed from this device",
            short(case)
        );
    }
    if let Some(w) = &r.audit_warning {
        eprintln!("warning: {w}");
    }
    for case in &r.kept_unsynced {
        eprintln!(
            "kept: case {} still has changes the server has not confirmed, so it stays on this device",
            short(case)
        );
    }
    for why in &r.attachments.failed {
        eprintln!("attachment: {why} (it is tried again at the next sync)");
    }
    if r.attachments.sent + r.attachments.received > 0 {
        eprintln!(
            "attachments: {} sent and saved on the server, {} received",
            r.attachments.sent, r.attachments.received
        );
    }
    let left = if r.unsynced_changes == 0 {
        "nothing left to send".to_string()
    } else {
        format!("{} change(s) still only on this device", r.unsynced_changes)
    };
    eprintln!(
        "sync finished: {} case(s), {} refused, {} moved; {left}",
        r.cases,
        r.refused.len(),
        r.moved.len()
    );
}
