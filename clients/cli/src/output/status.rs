//! The caseload, `status` and the sync summary, for people.
//!
//! `status` never says everything is synced unless every case has no unsynced change: the count
//! comes from what the server acknowledged, not from when the last sync ran.
//!
//! The trust hub is the second place, said after the first and as honestly: "also on the trust
//! hub" only when the hub (as the borough last relayed it) holds every change here, and nothing
//! at all about a hub when the borough has never said it has one.

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
    status_page(s).print();
}

/// What `status` prints, laid out.
fn status_page(s: &Status) -> Page {
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
    if let Some(hub) = hub_line(s) {
        page.line(0, hub);
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
    page
}

/// The second place, after the borough server: the trust hub, as the borough last said
/// (`Status::not_on_hub`). None when the borough has never said it has a hub, and when there is
/// no case; "also on the trust hub" only when every change here is on the borough server and
/// the hub both.
fn hub_line(s: &Status) -> Option<String> {
    let not_on_hub = s.not_on_hub?;
    if s.cases.is_empty() {
        return None;
    }
    if not_on_hub == 0 {
        // A case that could not be opened has no count: nothing is claimed for it.
        let everything = s.unsynced_changes == 0 && s.cases.iter().all(|c| c.not_on_hub == Some(0));
        return everything.then(|| {
            "also on the trust hub: every change to the records on this device is saved there too (as of the last sync); attached files go on to the hub from the borough server, and are not counted here"
                .to_string()
        });
    }
    let cases = s
        .cases
        .iter()
        .filter(|c| c.not_on_hub.is_some_and(|n| n > 0))
        .count();
    let waiting = format!(
        "{not_on_hub} change(s) in {cases} case(s) not yet on the trust hub (as of the last sync)"
    );
    Some(if s.unsynced_changes == 0 {
        format!("{waiting}: the borough server holds them and passes them on; `polyphony sync` later shows when they are there")
    } else {
        waiting
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A status of `cases`, each (unsynced, not on the hub), from a borough that said it has a
    /// hub when `hub` is true.
    fn status(cases: &[(usize, usize)], hub: bool) -> Status {
        let cases: Vec<CaseSummary> = cases
            .iter()
            .enumerate()
            .map(|(i, (unsynced, off_hub))| CaseSummary {
                case_id: format!("{i:08}-0000-4000-8000-000000000000"),
                name: format!("Person {i}"),
                team_id: String::new(),
                unsynced_changes: *unsynced,
                not_on_hub: hub.then_some(*off_hub),
                conflicts: 0,
                last_meeting: None,
                next_meeting: None,
                first_meeting_due: None,
                urgency: None,
                first_meeting: None,
                episode_closed: false,
            })
            .collect();
        Status {
            device: "device".into(),
            server: Some("borough:4433".into()),
            practitioner: Some("Sam".into()),
            last_sync: None,
            last_successful_sync: None,
            unsynced_changes: cases.iter().map(|c| c.unsynced_changes).sum(),
            not_on_hub: hub.then(|| cases.iter().filter_map(|c| c.not_on_hub).sum()),
            unsent_reads: 0,
            cases,
        }
    }

    fn text(s: &Status) -> String {
        status_page(s).0
    }

    #[test]
    fn status_says_also_on_the_trust_hub_only_when_the_hub_holds_everything() {
        let all = text(&status(&[(0, 0), (0, 0)], true));
        assert!(all.contains("all 2 case(s) synced"), "{all}");
        assert!(all.contains("also on the trust hub"), "{all}");
        // The borough first, then the hub.
        assert!(all.find("synced").unwrap() < all.find("trust hub").unwrap());

        let waiting = text(&status(&[(0, 2), (0, 0), (0, 1)], true));
        assert!(waiting.contains("all 3 case(s) synced"), "{waiting}");
        assert!(
            waiting.contains(
                "3 change(s) in 2 case(s) not yet on the trust hub (as of the last sync)"
            ),
            "{waiting}"
        );
        assert!(!waiting.contains("also on the trust hub"), "{waiting}");

        let here = text(&status(&[(1, 1)], true));
        assert!(here.contains("NOT SYNCED"), "{here}");
        assert!(here.contains("1 change(s) in 1 case(s) not yet on the trust hub"));
        assert!(!here.contains("also on the trust hub"), "{here}");

        // The hub cannot vouch for a change not yet on the borough server.
        let odd = text(&status(&[(1, 0)], true));
        assert!(odd.contains("NOT SYNCED"), "{odd}");
        assert!(!odd.contains("trust hub"), "{odd}");
    }

    #[test]
    fn status_says_nothing_about_a_hub_the_borough_never_reported() {
        for s in [
            status(&[(0, 0)], false),
            status(&[(2, 0)], false),
            status(&[], true),
        ] {
            let t = text(&s);
            assert!(!t.contains("hub"), "{t}");
        }
    }
}
