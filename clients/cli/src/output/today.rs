//! `today`, for people: one line per piece of work, most overdue first unless sorted otherwise,
//! dates and times in the device's zone and labelled so.

use polyphony_core::model::work::{WorkItem, WorkKind};

use super::{short, when, Page};

fn days(i: &WorkItem) -> String {
    match (i.kind, i.days_overdue) {
        (WorkKind::DueToday, _) => "today".into(),
        (_, 0) => "today".into(),
        (_, 1) => "1 day".into(),
        (_, n) => format!("{n} days"),
    }
}

fn when_due(i: &WorkItem) -> String {
    match (&i.due, &i.at) {
        (Some(_), _) if i.due_unreadable => "due ?".into(),
        (Some(d), _) => format!("due {d}"),
        (None, Some(t)) if i.kind == WorkKind::Unsynced => format!("since {}", when(t)),
        (None, Some(t)) if i.kind == WorkKind::FirstMeeting => format!("due {}", when(t)),
        (None, Some(t)) => format!("planned {}", when(t)),
        (None, None) => "-".into(),
    }
}

/// Text from the record on one line: newlines, tabs and other control characters escaped.
fn one_line(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).collect::<String>()
}

/// What is printed after the text: the owner, then anything else to know.
fn extra(i: &WorkItem) -> String {
    let mut s = i
        .owner_name
        .as_deref()
        .map(|o| format!(" ({})", one_line(o)))
        .unwrap_or_default();
    if i.due_unreadable {
        if let Some(d) = &i.due {
            s.push_str(&format!(" [due date could not be read: {}]", one_line(d)));
        }
    }
    if i.conflict {
        s.push_str(" [values conflict: see `polyphony conflicts`]");
    }
    if i.decision_withdrawn {
        s.push_str(" (decision withdrawn)");
    }
    s
}

/// `today`.
pub(crate) fn print_today(items: &[WorkItem], mine: bool) {
    if items.is_empty() {
        let whose = if mine { "of yours " } else { "" };
        eprintln!("nothing {whose}is overdue or due today on this device");
        return;
    }
    let width = |f: &dyn Fn(&WorkItem) -> usize, min: usize| {
        items.iter().map(f).max().unwrap_or(min).max(min)
    };
    let person = |i: &WorkItem| {
        if i.person.is_empty() {
            "-".to_string()
        } else {
            one_line(&i.person)
        }
    };
    let pw = width(&|i| person(i).chars().count(), 6);
    let kw = width(&|i| i.kind_words().len(), 4);
    let ww = width(&|i| when_due(i).chars().count(), 4);
    let mut page = Page::default();
    page.line(
        0,
        format!(
            "{:<8}  {:<pw$}  {:<kw$}  {:<7}  {:<ww$}  {:<8}  {:<4}  WHAT (OWNER)",
            "CASE", "PERSON", "KIND", "LATE", "WHEN", "ENTRY", "MINE"
        ),
    );
    for i in items {
        let owner = extra(i);
        page.line(
            0,
            format!(
                "{:<8}  {:<pw$}  {:<kw$}  {:<7}  {:<ww$}  {:<8}  {:<4}  {}{owner}",
                short(&i.case_id),
                person(i),
                i.kind_words(),
                days(i),
                when_due(i),
                i.entry.map(short).unwrap_or_else(|| "-".into()),
                if i.mine { "yes" } else { "" },
                one_line(&i.text),
            ),
        );
    }
    page.print();
}
