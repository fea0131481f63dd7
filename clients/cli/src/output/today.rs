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
        (Some(d), _) => format!("due {d}"),
        (None, Some(t)) if i.kind == WorkKind::Unsynced => format!("since {}", when(t)),
        (None, Some(t)) => format!("planned {}", when(t)),
        (None, None) => "-".into(),
    }
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
    let pw = width(&|i| i.person.chars().count(), 6);
    let kw = width(&|i| i.kind.words().len(), 4);
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
        let owner = i
            .owner_name
            .as_deref()
            .map(|o| format!(" ({o})"))
            .unwrap_or_default();
        page.line(
            0,
            format!(
                "{:<8}  {:<pw$}  {:<kw$}  {:<7}  {:<ww$}  {:<8}  {:<4}  {}{owner}",
                short(&i.case_id),
                i.person,
                i.kind.words(),
                days(i),
                when_due(i),
                i.entry.map(short).unwrap_or_else(|| "-".into()),
                if i.mine { "yes" } else { "" },
                i.text,
            ),
        );
    }
    page.print();
}
