//! A case for people to read: `case show`, `case timeline`, `case figures` and `conflicts`.
//!
//! Everything in the record is shown, including entries marked entered in error (with the mark
//! beside them) and the fact that a field has conflicting values: a reader must never see one
//! value without being told there is another.

use polyphony_core::model::view::{AuthorView, DecisionView, EntryMeta, MeetingView};
use polyphony_core::model::{
    CaseFigures, CaseView, EventKind, Names, ReadbackResponse, Stored, Timeline,
};

use super::{day, short, when, when_opt, Page};

/// A read-back answer in words.
fn readback_words(response: &Stored<ReadbackResponse>) -> String {
    match response.known() {
        Some(ReadbackResponse::AddedWords) => "added their words".into(),
        _ => response.to_string(),
    }
}

fn by(a: &Option<AuthorView>) -> String {
    a.as_ref()
        .map(|a| a.practitioner_name.clone())
        .unwrap_or_else(|| "unknown".into())
}

/// The mark an entry in error carries, or nothing.
fn error_mark(meta: &EntryMeta) -> Option<String> {
    meta.entered_in_error.as_ref().map(|e| {
        let what = if e.is_mistake() {
            "ENTERED IN ERROR"
        } else {
            "REMOVED: RECORDED ON THE WRONG PERSON'S RECORD, content withheld"
        };
        format!(
            "[{what}: {}, by {}, {}]",
            e.reason,
            by(&e.by),
            when_opt(e.at.as_deref())
        )
    })
}

fn opt(label: &str, v: &Option<String>) -> Option<String> {
    v.as_ref().map(|v| format!("{label} {v}"))
}

fn conflicts_banner(page: &mut Page, view: &CaseView) {
    if view.conflicts.is_empty() {
        return;
    }
    let fields: Vec<&str> = view.conflicts.iter().map(|c| c.field.as_str()).collect();
    page.line(
        0,
        format!(
            "!! CONFLICTS: {} field(s) hold different values from different devices: {}",
            fields.len(),
            fields.join(", ")
        ),
    );
    page.line(
        0,
        format!(
            "!! see them with `polyphony conflicts {}`, choose with `polyphony resolve`",
            short(&view.case_id)
        ),
    );
}

/// `case show`: the whole case, in sections.
pub(crate) fn print_case(view: &CaseView) {
    let names = Names::new(view);
    let mut page = Page::default();
    page.line(0, format!("{}  (case {})", view.person.name, view.case_id));
    page.line(
        2,
        format!(
            "opened {} by {}",
            when_opt(view.created_at.as_deref()),
            by(&view.created_by)
        ),
    );
    conflicts_banner(&mut page, view);
    person(&mut page, view);
    milestones(&mut page, view);
    page.heading("Referrals and episodes");
    crate::commands::referral::print(&mut page, view, 2);
    network(&mut page, view, &names);
    care_team(&mut page, view);
    crisis_plan(&mut page, view, &names);
    team_notes(&mut page, view);
    page.heading("Meetings");
    if view.meetings.is_empty() {
        page.line(2, "(none yet)");
    }
    for m in &view.meetings {
        meeting(&mut page, view, &names, m);
    }
    page.heading("Decisions");
    if view.decisions.is_empty() {
        page.line(2, "(none yet)");
    }
    for d in &view.decisions {
        decision(&mut page, &names, d);
    }
    if !view.conflicts.is_empty() {
        page.line(0, "");
        conflicts_banner(&mut page, view);
    }
    page.print();
}

fn person(page: &mut Page, view: &CaseView) {
    let p = &view.person;
    page.heading("Person");
    let details = [
        opt("name:", &Some(p.name.clone())),
        opt("preferred name:", &p.preferred_name),
        opt("pronouns:", &p.pronouns),
        opt("date of birth:", &p.date_of_birth),
        opt("NHS number:", &p.nhs_number),
        opt("phone:", &p.phone),
        opt("email:", &p.email),
        opt("address:", &p.address),
        opt("contact preference:", &p.contact_preference),
    ];
    for d in details.into_iter().flatten() {
        page.line(2, d);
    }
}

fn milestones(page: &mut Page, view: &CaseView) {
    page.heading("Timeline");
    let t = &view.timeline;
    for (label, v) in [
        ("referral", &t.referral),
        ("first contact", &t.first_contact),
        ("first network meeting", &t.first_network_meeting),
        ("closure", &t.closure),
    ] {
        if let Some(v) = v {
            page.line(2, format!("{label}: {}", when(v)));
        }
    }
}

fn network(page: &mut Page, view: &CaseView, names: &Names<'_>) {
    page.heading("Network");
    if view.network.is_empty() {
        page.line(2, "(no one yet: add people with `polyphony network add`)");
    }
    for m in &view.network {
        if m.meta.withheld() {
            page.line(2, format!("[{}] someone in the network", short(m.meta.id)));
            page.line(6, error_mark(&m.meta).unwrap_or_default());
            continue;
        }
        let mut line = format!(
            "[{}] {} - {} ({})",
            short(m.meta.id),
            m.name,
            m.relationship,
            m.role
        );
        for extra in [opt("phone", &m.phone), opt("email", &m.email)]
            .into_iter()
            .flatten()
        {
            line.push_str(&format!(", {extra}"));
        }
        page.line(2, line);
        let consent = format!("consent to receive the record: {}", m.consent_words());
        let mut facts = vec![consent.to_string()];
        if let Some(j) = &m.joined {
            facts.push(format!("joined {j}"));
        }
        if let Some(l) = &m.left {
            facts.push(format!("LEFT {l}"));
        }
        if let Some(i) = &m.invited_by {
            facts.push(format!("invited by {}", names.of(i)));
        }
        page.line(6, facts.join("; "));
        if let Some(mark) = error_mark(&m.meta) {
            page.line(6, mark);
        }
    }
}

/// The team's safety notes, each with whether it is withheld from the person's copy.
fn team_notes(page: &mut Page, view: &CaseView) {
    if view.team_notes.is_empty() {
        return;
    }
    page.heading("Safety notes");
    for n in &view.team_notes {
        let kind = n.kind.label();
        page.line(
            2,
            format!(
                "[{}] {kind}: {} ({}, {})",
                short(n.meta.id),
                n.text,
                by(&n.meta.created_by),
                when_opt(n.meta.created_at.as_deref())
            ),
        );
        for w in &n.withholding {
            let state = if w.in_force() {
                format!(
                    "WITHHELD from the person's copy: asked by {} ({}), confirmed by {}",
                    by(&w.by),
                    w.reason,
                    by(&w.confirmed_by)
                )
            } else if w.lifted_by.is_some() {
                format!(
                    "was withheld (asked by {}, {}); lifted by {} ({})",
                    by(&w.by),
                    w.reason,
                    by(&w.lifted_by),
                    w.lift_reason
                )
            } else if w.confirmed() {
                continue;
            } else {
                format!(
                    "withholding asked by {} ({}): in the person's copy until a second practitioner confirms",
                    by(&w.by),
                    w.reason
                )
            };
            page.line(6, state);
        }
        if let Some(mark) = error_mark(&n.meta) {
            page.line(6, mark);
        }
    }
}

/// `plan show`: the plan alone.
pub(crate) fn print_plan(view: &CaseView) {
    let names = Names::new(view);
    let mut page = Page::default();
    page.line(0, format!("{}  (case {})", view.person.name, view.case_id));
    crisis_plan(&mut page, view, &names);
    page.print();
}

/// The plan by section: each item's words, whose they are, the meeting that agreed them, and
/// what they replaced; the review date.
fn crisis_plan(page: &mut Page, view: &CaseView, names: &Names<'_>) {
    let plan = &view.crisis_plan;
    page.heading("Safety and crisis plan");
    match &plan.review_on {
        Some(on) => page.line(2, format!("to be reviewed by {on}")),
        None => page.line(2, "(no review date set: `polyphony plan review`)"),
    }
    if plan.items.is_empty() {
        page.line(2, "(nothing yet: `polyphony plan add`)");
    }
    let meeting_day = |id: &polyphony_core::EntryId| {
        view.meetings
            .iter()
            .find(|m| m.meta.id == *id)
            .map(|m| when_opt(m.at.as_deref()))
            .unwrap_or_else(|| "a meeting".into())
    };
    let version = |v: &polyphony_core::model::PlanVersionView| {
        let agreed = v
            .meeting
            .as_ref()
            .map(|m| format!(", agreed at the meeting of {}", meeting_day(m)))
            .unwrap_or_default();
        format!(
            "in the words of {}{agreed} (written down by {}, {})",
            names.of(&v.words_of),
            by(&v.by),
            when_opt(v.at.as_deref())
        )
    };
    for item in &plan.items {
        let section = item.section.heading();
        match &item.current {
            Some(now) => {
                page.line(
                    2,
                    format!("[{}] {section}: {}", short(item.meta.id), now.text),
                );
                page.line(6, version(now));
            }
            None => page.line(
                2,
                format!("[{}] {section}: (withheld)", short(item.meta.id)),
            ),
        }
        for old in item.earlier.iter().rev() {
            page.line(6, format!("replaced: \"{}\", {}", old.text, version(old)));
        }
        if let Some(mark) = error_mark(&item.meta) {
            page.line(6, mark);
        }
    }
}

fn care_team(page: &mut Page, view: &CaseView) {
    page.heading("Care team");
    if view.care_team.is_empty() {
        page.line(
            2,
            "(no one yet: add yourself with `polyphony care-team add`)",
        );
    }
    for c in &view.care_team {
        let mut line = format!("[{}] {} ({})", short(c.meta.id), c.name, c.role.label());
        if let Some(s) = &c.start {
            line.push_str(&format!(", from {s}"));
        }
        if let Some(e) = &c.end {
            line.push_str(&format!(", until {e}"));
        }
        page.line(2, line);
        if let Some(mark) = error_mark(&c.meta) {
            page.line(6, mark);
        }
    }
}

fn meeting(page: &mut Page, view: &CaseView, names: &Names<'_>, m: &MeetingView) {
    if m.meta.withheld() {
        page.line(2, format!("[{}] a meeting", short(m.meta.id)));
        page.line(6, error_mark(&m.meta).unwrap_or_default());
        return;
    }
    page.line(
        2,
        format!(
            "[{}] {} at {}, {} (recorded by {})",
            short(m.meta.id),
            when_opt(m.at.as_deref()),
            m.place,
            m.state.to_string().replace('_', " ").to_uppercase(),
            by(&m.meta.created_by)
        ),
    );
    if let Some(mark) = error_mark(&m.meta) {
        page.line(6, mark);
    }
    if m.held() && !m.person_present {
        page.line(6, format!("{} was not present", view.person.name));
    }
    let attended = names.all(&m.attendees);
    page.line(
        6,
        format!(
            "present: {}",
            if attended.is_empty() {
                "(not recorded)".to_string()
            } else {
                attended.join(", ")
            }
        ),
    );
    let noted: Vec<String> = m
        .staff_present()
        .map(|s| format!("{} ({})", s.name, s.role.label()))
        .collect();
    if !noted.is_empty() {
        page.line(6, format!("staff: {}", noted.join(", ")));
    }
    for (label, text) in [
        ("Notes", &m.notes),
        ("Reflections", &m.reflections),
        ("Agreed", &m.agreed),
    ] {
        if !text.is_empty() {
            page.line(6, format!("{label}:"));
            page.line(8, text);
        }
    }
    if !m.readback.is_empty() {
        page.line(6, "Read-back:");
        for r in &m.readback {
            let words = r
                .words
                .as_ref()
                .map(|w| format!(" - \"{w}\""))
                .unwrap_or_default();
            page.line(
                8,
                format!(
                    "{}: {}{words}",
                    names.of(&r.participant),
                    readback_words(&r.response)
                ),
            );
        }
    }
    for c in &m.changed_after_readback {
        let mut what = Vec::new();
        if !c.added.is_empty() {
            what.push(format!("added \"{}\"", c.added.join("\", \"")));
        }
        if !c.removed.is_empty() {
            what.push(format!("took out \"{}\"", c.removed.join("\", \"")));
        }
        page.line(
            6,
            format!(
                "!! changed after the read-back, not confirmed: {} {} in {} on {}",
                by(&c.by),
                what.join(" and "),
                c.part,
                when_opt(c.at.as_deref())
            ),
        );
    }
    if let Some(n) = &m.next_meeting {
        page.line(6, format!("next meeting: {}", when(n)));
    }
}

fn decision(page: &mut Page, names: &Names<'_>, d: &DecisionView) {
    if d.meta.withheld() {
        page.line(2, format!("[{}] a decision", short(d.meta.id)));
        page.line(6, error_mark(&d.meta).unwrap_or_default());
        return;
    }
    page.line(
        2,
        format!(
            "[{}] {}: \"{}\"",
            short(d.meta.id),
            d.status.to_string().to_uppercase(),
            d.text
        ),
    );
    if let Some(mark) = error_mark(&d.meta) {
        page.line(6, mark);
    }
    if let Some(p) = &d.proposed_by {
        page.line(
            6,
            format!(
                "proposed by {}, {}",
                names.of(p),
                when_opt(d.meta.created_at.as_deref())
            ),
        );
    }
    if d.agreed_without_person {
        page.line(
            6,
            "!! marked agreed, but the person's current position is not \"agree\": revisit it",
        );
    }
    positions(page, names, d);
    if d.status_history.len() > 1 {
        page.line(6, "history:");
        for h in &d.status_history {
            let note = h
                .note
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            page.line(
                8,
                format!(
                    "{} {} by {}{note}",
                    when_opt(h.at.as_deref()),
                    h.status,
                    by(&h.by)
                ),
            );
        }
    }
    for a in &d.actions {
        let owner = a.owner.as_ref().map(|o| names.of(o)).unwrap_or_default();
        let due = a
            .due
            .as_ref()
            .map(|d| format!(", due {d}"))
            .unwrap_or_default();
        let done = if a.done { "done" } else { "to do" };
        page.line(
            6,
            format!(
                "action [{}] {} ({owner}{due}): {done}",
                short(a.meta.id),
                a.text
            ),
        );
        if let Some(mark) = error_mark(&a.meta) {
            page.line(8, mark);
        }
    }
}

/// Each participant's position on a decision, with the stances they took before.
fn positions(page: &mut Page, names: &Names<'_>, d: &DecisionView) {
    if d.positions.is_empty() {
        page.line(6, "positions: none recorded yet");
    } else {
        page.line(6, "positions:");
    }
    for p in &d.positions {
        let words = p
            .words
            .as_ref()
            .map(|w| format!(" - \"{w}\""))
            .unwrap_or_default();
        let earlier: Vec<String> = p
            .earlier
            .iter()
            .map(|e| {
                format!(
                    "{} ({})",
                    e.stance,
                    e.at.as_deref().map(day).unwrap_or_default()
                )
            })
            .collect();
        let history = if earlier.is_empty() {
            String::new()
        } else {
            format!(" (before: {})", earlier.join(", then "))
        };
        page.line(
            8,
            format!("{}: {}{words}{history}", names.of(&p.participant), p.stance),
        );
    }
}

/// `case timeline`.
pub(crate) fn print_timeline(view: &CaseView, timeline: &Timeline) {
    let mut page = Page::default();
    page.line(0, format!("{}  (case {})", view.person.name, view.case_id));
    conflicts_banner(&mut page, view);
    page.line(0, "");
    for e in &timeline.events {
        let at = if e.at.len() == 10 {
            format!("{}      ", day(&e.at))
        } else {
            when(&e.at)
        };
        let by = e.by.as_ref().map(|b| format!(" ({b})")).unwrap_or_default();
        let struck = if e.entered_in_error && e.kind != EventKind::EnteredInError {
            " [ENTERED IN ERROR]"
        } else {
            ""
        };
        page.line(0, format!("{at}  {}{by}{struck}", e.text));
    }
    page.print();
}

/// `case figures`.
pub(crate) fn print_figures(view: &CaseView, f: &CaseFigures) {
    let mut page = Page::default();
    let share = |s: Option<f64>| {
        s.map(|s| format!("{:.0}%", s * 100.0))
            .unwrap_or_else(|| "-".into())
    };
    page.line(0, format!("{}  (case {})", view.person.name, view.case_id));
    page.line(2, format!("meetings held: {}", f.meetings));
    page.line(
        2,
        format!(
            "hours from referral to first meeting: {}",
            f.hours_referral_to_first_meeting
                .map(|h| format!("{h:.1}"))
                .unwrap_or_else(|| "-".into())
        ),
    );
    page.line(
        2,
        format!(
            "meetings with two or more practitioners: {}",
            share(f.share_two_or_more_practitioners)
        ),
    );
    page.line(
        2,
        format!(
            "meetings with the original pair: {}",
            share(f.share_with_original_pair)
        ),
    );
    page.line(
        2,
        format!(
            "meetings with a peer support worker: {}",
            share(f.share_with_peer_support)
        ),
    );
    page.line(
        2,
        format!(
            "network members per meeting: {}",
            f.network_members_per_meeting
                .map(|n| format!("{n:.1}"))
                .unwrap_or_else(|| "-".into())
        ),
    );
    page.print();
}

/// `conflicts`.
pub(crate) fn print_conflicts(view: &CaseView) {
    let mut page = Page::default();
    if view.conflicts.is_empty() {
        page.line(
            0,
            format!("no conflicts in the case of {}", view.person.name),
        );
        page.print();
        return;
    }
    for c in &view.conflicts {
        page.line(0, &c.field);
        let last = c.values.len();
        for v in &c.values {
            let who = v
                .author
                .as_ref()
                .map(|a| format!("{} on device {}", a.practitioner_name, short(&a.device)))
                .unwrap_or_else(|| "unknown".into());
            let current = if v.pick == last { "  (shown now)" } else { "" };
            page.line(
                2,
                format!(
                    "{}) {}  - {}, {}{current}",
                    v.pick,
                    v.value,
                    who,
                    when_opt(v.at.as_deref())
                ),
            );
        }
        page.line(
            2,
            format!(
                "keep one with: polyphony resolve {} {} --pick N",
                short(&view.case_id),
                c.field
            ),
        );
    }
    page.print();
}
