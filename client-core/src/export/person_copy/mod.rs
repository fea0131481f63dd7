//! The person's own copy of their record: readable, printable, in plain language.
//!
//! The person has a right to see everything written about them, and in Open Dialogue most of it
//! was written with them in the room. This copy is for reading at a kitchen table, not for a
//! clinical system: headings are questions a person would ask ("Who is in María's network",
//! "What we talked about on 14 March 2026", "What was decided, and what everyone thought"), dates
//! are words, and everyone is named rather than numbered.
//!
//! The content is laid out once, as a list of [`Block`]s, and rendered twice: as self-contained
//! HTML ([`html`]) and as PDF ([`pdf`]). So the two can never say different things.
//!
//! Entries marked entered in error are shown, struck through, followed by who marked them, when
//! and why: hiding them would hide that the record was corrected. An entry recorded on the wrong
//! person's record is the one exception: it is another person's information, so only a note of
//! what kind of entry was removed, by whom, when and why is shown (the view holds nothing more).

mod fonts;
mod html;
mod pdf;

pub use fonts::{FontError, Fonts, SYSTEM_FONT_DIR};

use super::{plain, Access, ExportError, Names};
use crate::model::view::{CaseView, DecisionView, EntryMeta, ErrorMark};
use crate::model::{ConsentState, MeetingState, ReadbackResponse};

/// The person's copy as one self-contained HTML page (inline CSS, no scripts, no external
/// requests), with print styles so it prints cleanly.
pub fn html(view: &CaseView, accesses: &[Access]) -> String {
    html::render(&layout(view, accesses))
}

/// The person's copy as a PDF (A4), set in the Noto `fonts` (subsets embedded), so every name and
/// note prints in its own script, right-to-left ones included, and reads back as the same text.
///
/// Fails only if a font cannot be subset (a damaged font file).
pub fn pdf(view: &CaseView, accesses: &[Access], fonts: &Fonts) -> Result<Vec<u8>, ExportError> {
    pdf::render(&layout(view, accesses), fonts)
}

/// A layout as one self-contained HTML page (for the other copies laid out the same way).
pub(super) fn html_page(l: &Layout) -> String {
    html::render(l)
}

/// A layout's blocks as an HTML fragment, for a page that has its own frame.
pub(super) fn html_body(l: &Layout) -> String {
    html::body(l)
}

/// How a block looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// The document title.
    Title,
    /// A part of the record.
    Heading,
    /// One entry: a meeting, a member, a decision.
    Subheading,
    /// Ordinary text; line breaks are kept.
    Body,
    /// Someone's own words.
    Quote,
    /// Who wrote it and when.
    Small,
    /// An entered-in-error note.
    Error,
}

/// One paragraph of the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block {
    pub style: Style,
    /// A bold lead-in, e.g. "NHS number:".
    pub label: Option<String>,
    pub text: String,
    /// Shown struck through (the entry was marked entered in error).
    pub struck: bool,
}

/// The copy's content, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layout {
    pub title: String,
    pub blocks: Vec<Block>,
}

impl Layout {
    pub(super) fn push(&mut self, style: Style, text: impl Into<String>, struck: bool) {
        self.blocks.push(Block {
            style,
            label: None,
            text: text.into(),
            struck,
        });
    }

    fn field(&mut self, label: &str, value: Option<&str>, struck: bool) {
        if let Some(v) = value.filter(|v| !v.trim().is_empty()) {
            self.blocks.push(Block {
                style: Style::Body,
                label: Some(format!("{label}:")),
                text: v.to_string(),
                struck,
            });
        }
    }

    pub(super) fn labelled(
        &mut self,
        style: Style,
        label: &str,
        text: impl Into<String>,
        struck: bool,
    ) {
        self.blocks.push(Block {
            style,
            label: Some(label.to_string()),
            text: text.into(),
            struck,
        });
    }

    pub(super) fn error(&mut self, mark: &Option<ErrorMark>, what: &str) {
        if let Some(m) = mark {
            self.push(Style::Error, plain::error_note(m, what), false);
        }
    }

    /// For an entry recorded on the wrong person's record: the tombstone, and `true` so the
    /// caller shows nothing else of it (the view holds nothing else).
    pub(crate) fn withheld(&mut self, meta: &EntryMeta, what: &str) -> bool {
        if meta.withheld() {
            self.error(&meta.entered_in_error, what);
        }
        meta.withheld()
    }

    fn written(&mut self, meta: &EntryMeta, struck: bool) {
        if let Some(a) = &meta.created_by {
            self.push(
                Style::Small,
                format!(
                    "Written by {} on {}.",
                    a.practitioner_name,
                    plain::datetime_or(&meta.created_at)
                ),
                struck,
            );
        }
    }
}

fn possessive(name: &str) -> String {
    format!("{name}'s")
}

/// Lay out the whole copy.
pub(crate) fn layout(view: &CaseView, accesses: &[Access]) -> Layout {
    let accesses = &super::access::without_withheld_names(view, accesses);
    // Notes two practitioners withheld from the person: listed, without their words.
    let mut redacted = view.clone();
    crate::model::team_notes::redact_for_person(&mut redacted);
    let view = &redacted;
    let names = Names::of(view);
    let who = names.person().to_string();
    let left_out = if view.team_notes.iter().any(|n| n.withheld_from_person()) {
        "Nothing has been left out, except what two practitioners agreed to withhold for \
         safety, which is listed where it would be."
    } else {
        "Nothing has been left out."
    };
    let mut l = Layout {
        title: format!("{} record", possessive(&who)),
        ..Default::default()
    };
    l.push(Style::Title, l.title.clone(), false);
    l.push(
        Style::Body,
        format!(
            "This is a copy of everything the Open Dialogue team has written down with {who} and the \
             people {who} chose to bring. {left_out} Where something was written by \
             mistake, it has not been deleted: it is crossed out, with who marked it, when and why. \
             Anything written here that was about someone else has been taken out, and a note says \
             so. If anything here is wrong or missing, please tell the team."
        ),
        false,
    );

    about(&mut l, view);
    referrals(&mut l, view);
    network(&mut l, view, &names);
    care_team(&mut l, view);
    crisis_plan(&mut l, view, &names, "Your safety and crisis plan");
    team_notes(&mut l, view);
    attachments(&mut l, view);
    meetings(&mut l, view, &names);
    decisions(&mut l, view, &names);
    conflicts(&mut l, view);
    access_list(&mut l, &names, accesses);
    l
}

fn about(l: &mut Layout, v: &CaseView) {
    let p = &v.person;
    l.push(Style::Heading, format!("About {}", p.name), false);
    l.field("Name", Some(&p.name), false);
    l.field("Likes to be called", p.preferred_name.as_deref(), false);
    l.field("Pronouns", p.pronouns.as_deref(), false);
    l.field(
        "Date of birth",
        p.date_of_birth.as_deref().map(plain::date).as_deref(),
        false,
    );
    l.field("NHS number", p.nhs_number.as_deref(), false);
    l.field("Phone", p.phone.as_deref(), false);
    l.field("Email", p.email.as_deref(), false);
    l.field("Address", p.address.as_deref(), false);
    l.field(
        "How to get in touch",
        p.contact_preference.as_deref(),
        false,
    );
    let tl = &v.timeline;
    let when = |s: &Option<String>| s.as_deref().map(plain::datetime);
    // With referrals recorded, each episode has its own dates under "Your referrals" (a
    // re-referral reopens care, so one "ended" date would mislead). A case whose first episode is
    // from before referrals were recorded keeps these lines: they are that episode's.
    let recorded = v.episodes.first().is_some_and(|e| e.referral.is_some());
    if !recorded {
        l.field("Referred to the team", when(&tl.referral).as_deref(), false);
    }
    l.field("First contact", when(&tl.first_contact).as_deref(), false);
    if !recorded {
        l.field(
            "First network meeting",
            when(&tl.first_network_meeting).as_deref(),
            false,
        );
        l.field(
            "Care with the team ended",
            when(&tl.closure).as_deref(),
            false,
        );
    }
}

/// Each referral, in the referrer's words, and the episode of care it opened: when the first
/// network meeting was (or when it is due), and when care ended.
fn referrals(l: &mut Layout, v: &CaseView) {
    if v.referrals.is_empty() {
        return;
    }
    l.push(Style::Heading, "Your referrals", false);
    l.push(
        Style::Body,
        "Each time you were referred to the team, who referred you and why, in their words. \
         A new referral starts a new episode of care; your network and your record carry on.",
        false,
    );
    if let Some(first) = v.episodes.first().filter(|e| e.referral.is_none()) {
        l.push(
            Style::Subheading,
            format!(
                "Episode 1: referred {}",
                plain::datetime(&first.received_at)
            ),
            false,
        );
        episode_lines(l, first, false);
    }
    for r in &v.referrals {
        if l.withheld(&r.meta, "referral") {
            continue;
        }
        let struck = r.meta.entered_in_error.is_some();
        let episode = v.episodes.iter().find(|e| e.referral == Some(r.meta.id));
        let heading = match episode {
            Some(e) => format!(
                "Episode {}: referred {}",
                e.number,
                plain::datetime_or(&r.received_at)
            ),
            None => format!("Referred {}", plain::datetime_or(&r.received_at)),
        };
        l.push(Style::Subheading, heading, struck);
        let from = match &r.referrer {
            Some(who) => format!("{} ({who})", r.source.label()),
            None => r.source.label(),
        };
        l.labelled(Style::Body, "From:", from, struck);
        l.labelled(Style::Body, "How urgent:", r.urgency.label(), struck);
        l.labelled(
            Style::Body,
            "In their words:",
            format!("\u{201c}{}\u{201d}", r.reason),
            struck,
        );
        if let Some(a) = r
            .letter
            .and_then(|id| v.attachments.iter().find(|a| a.meta.id == id))
            .filter(|a| !a.meta.withheld())
        {
            l.labelled(
                Style::Body,
                "Letter:",
                format!("{} ({})", a.title, a.file_name),
                struck,
            );
        }
        if let Some(e) = episode {
            episode_lines(l, e, struck);
        }
        l.written(&r.meta, struck);
        l.error(&r.meta.entered_in_error, "referral");
    }
}

/// An episode's first network meeting (or when it is due) and when care ended.
fn episode_lines(l: &mut Layout, e: &crate::model::Episode, struck: bool) {
    let first = match (&e.first_meeting, e.open(), &e.ended_by_referral_at) {
        (Some(m), _, _) => plain::datetime(m),
        (None, true, _) => format!("not yet: due by {}", plain::datetime(&e.first_meeting_due)),
        (None, false, Some(_)) => "none was held before the next referral".to_string(),
        (None, false, None) => "none was held".to_string(),
    };
    l.labelled(Style::Body, "First network meeting:", first, struck);
    if let Some(c) = &e.closed_at {
        l.labelled(
            Style::Body,
            "Care with the team ended:",
            plain::datetime(c),
            struck,
        );
    }
}

fn network(l: &mut Layout, v: &CaseView, names: &Names) {
    l.push(
        Style::Heading,
        format!("Who is in {} network", possessive(names.person())),
        false,
    );
    if v.network.is_empty() {
        l.push(Style::Body, "Nobody has been added yet.", false);
    }
    for m in &v.network {
        if l.withheld(&m.meta, "person in the network") {
            continue;
        }
        let struck = m.meta.entered_in_error.is_some();
        l.push(
            Style::Subheading,
            format!("{}, {}", m.name, m.relationship),
            struck,
        );
        let mut since = format!("Part of the network since {}", plain::date_or(&m.joined));
        if let Some(left) = &m.left {
            since.push_str(&format!(", until {}", plain::date(left)));
        }
        since.push('.');
        l.push(Style::Body, since, struck);
        if let Some(by) = &m.invited_by {
            l.push(
                Style::Body,
                format!("Invited by {}.", names.name(by)),
                struck,
            );
        }
        l.field("Phone", m.phone.as_deref(), struck);
        l.field("Email", m.email.as_deref(), struck);
        for c in &m.consent {
            let what = if c.state.is(ConsentState::Given) {
                format!("may receive the record from {}", plain::date_or(&c.date))
            } else {
                format!(
                    "may no longer receive the record from {}",
                    plain::date_or(&c.date)
                )
            };
            l.push(Style::Body, format!("{} {what}.", m.name), struck);
        }
        l.written(&m.meta, struck);
        l.error(&m.meta.entered_in_error, "person's place in the network");
    }
}

fn care_team(l: &mut Layout, v: &CaseView) {
    l.push(Style::Heading, "The team working with you", false);
    if v.care_team.is_empty() {
        l.push(Style::Body, "Nobody has been added yet.", false);
    }
    for c in &v.care_team {
        if l.withheld(&c.meta, "member of the team") {
            continue;
        }
        let struck = c.meta.entered_in_error.is_some();
        let role = plain::care_role(&c.role);
        let mut text = format!("{}, {role}, from {}", c.name, plain::date_or(&c.start));
        if let Some(end) = &c.end {
            text.push_str(&format!(" until {}", plain::date(end)));
        }
        text.push('.');
        l.push(Style::Body, text, struck);
        l.error(&c.meta.entered_in_error, "entry");
    }
}

/// The team's safety notes and safeguarding concerns, shown to the person like everything else;
/// one withheld from them by two practitioners is listed as withheld, with who and when.
fn team_notes(l: &mut Layout, v: &CaseView) {
    if v.team_notes.is_empty() {
        return;
    }
    l.push(Style::Heading, "Notes about safety", false);
    for n in &v.team_notes {
        if l.withheld(&n.meta, "note") {
            continue;
        }
        let kind = n.kind.label();
        if n.withheld_from_person() {
            let w = n.in_force().expect("withheld means a request in force");
            let who = |a: &Option<crate::model::AuthorView>| {
                a.as_ref()
                    .map(|a| a.practitioner_name.clone())
                    .unwrap_or_else(|| "a practitioner".into())
            };
            l.push(
                Style::Error,
                format!(
                    "{kind} written on {} is withheld from this copy: {} asked for it on {}, for a reason recorded in the record, and {} agreed on {}. You can ask the team about it.",
                    plain::datetime_or(&n.meta.created_at),
                    who(&w.by),
                    plain::datetime_or(&w.at),
                    who(&w.confirmed_by),
                    plain::datetime_or(&w.confirmed_at)
                ),
                false,
            );
            continue;
        }
        let struck = n.meta.entered_in_error.is_some();
        l.push(Style::Subheading, kind, struck);
        l.push(Style::Body, n.text.clone(), struck);
        l.written(&n.meta, struck);
        l.error(&n.meta.entered_in_error, "note");
    }
}

/// The letters and documents attached to the record, listed: what each is, its file, who
/// attached it and when. The files themselves are not in the copy: the team gives them to the
/// person when they ask, and the copy says so.
fn attachments(l: &mut Layout, v: &CaseView) {
    if v.attachments.is_empty() {
        return;
    }
    l.push(Style::Heading, "Letters and documents", false);
    l.push(
        Style::Body,
        "These letters and documents are kept with your record. Ask the team for a copy of any of them.",
        false,
    );
    for a in &v.attachments {
        if l.withheld(&a.meta, "document") {
            continue;
        }
        let struck = a.meta.entered_in_error.is_some();
        let meeting = a
            .meeting
            .and_then(|m| v.meetings.iter().find(|x| x.meta.id == m))
            .map(|m| format!(", from the meeting on {}", plain::datetime_or(&m.at)))
            .unwrap_or_default();
        l.push(
            Style::Subheading,
            format!("{}: {}", a.kind.label(), a.title),
            struck,
        );
        l.push(
            Style::Body,
            format!(
                "File {} ({}){meeting}.",
                a.file_name,
                crate::model::attachments::human_size(a.size)
            ),
            struck,
        );
        l.written(&a.meta, struck);
        l.error(&a.meta.entered_in_error, "document");
    }
}

/// The safety and crisis plan, section by section: each item's words, whose they are, the
/// meeting that agreed them and who wrote them down, then what they replaced; the review date.
/// The person's copy and the network copy both hold it.
pub(crate) fn crisis_plan(l: &mut Layout, v: &CaseView, names: &Names, heading: &str) {
    let plan = &v.crisis_plan;
    l.push(Style::Heading, heading, false);
    let review = match &plan.review_on {
        Some(on) => format!(
            "It is to be looked at again together by {}.",
            plain::date(on)
        ),
        None => "No date has been set yet to look at it again together.".to_string(),
    };
    if plan.items.is_empty() {
        l.push(
            Style::Body,
            "Nothing has been written in the plan yet.",
            false,
        );
    }
    let said = |x: &crate::model::PlanVersionView| {
        let agreed = x
            .meeting
            .and_then(|m| v.meetings.iter().find(|mt| mt.meta.id == m))
            .map(|m| format!(", agreed at the meeting on {}", plain::datetime_or(&m.at)))
            .unwrap_or_default();
        let by =
            x.by.as_ref()
                .map(|a| {
                    format!(
                        " Written down by {} on {}.",
                        a.practitioner_name,
                        plain::datetime_or(&x.at)
                    )
                })
                .unwrap_or_default();
        format!("In the words of {}{agreed}.{by}", names.name(&x.words_of))
    };
    let mut last: Option<String> = None;
    for item in &plan.items {
        if l.withheld(&item.meta, "crisis plan item") {
            continue;
        }
        let Some(now) = &item.current else {
            l.push(
                Style::Small,
                "An item of the plan in the words of someone removed from this record.",
                false,
            );
            continue;
        };
        let heading = item.section.heading();
        if last.as_ref() != Some(&heading) {
            l.push(Style::Subheading, heading.clone(), false);
            last = Some(heading);
        }
        let struck = item.meta.entered_in_error.is_some();
        l.push(Style::Quote, now.text.clone(), struck);
        l.push(Style::Small, said(now), struck);
        for old in item.earlier.iter().rev() {
            l.push(
                Style::Small,
                format!("Before, it said: “{}”. {}", old.text, said(old)),
                struck,
            );
        }
        l.error(&item.meta.entered_in_error, "crisis plan item");
    }
    l.push(Style::Body, review, false);
}

fn meetings(l: &mut Layout, v: &CaseView, names: &Names) {
    l.push(Style::Heading, "Our meetings", false);
    if v.meetings.is_empty() {
        l.push(Style::Body, "There have been no meetings yet.", false);
    }
    for m in &v.meetings {
        if l.withheld(&m.meta, "meeting") {
            continue;
        }
        let struck = m.meta.entered_in_error.is_some();
        l.push(Style::Subheading, plain::meeting_heading(m), struck);
        let time =
            m.at.as_deref()
                .map(plain::datetime)
                .and_then(|s| s.split_once(" at ").map(|(_, t)| format!(" at {t}")))
                .unwrap_or_default();
        let present: Vec<String> = names
            .in_reading_order(&m.attendees)
            .into_iter()
            .map(|a| names.describe_at(v, m, a))
            .collect();
        let present = if present.is_empty() {
            "not recorded".to_string()
        } else {
            present.join(", ")
        };
        let line = match m.state.known() {
            Some(MeetingState::Held) => format!(
                "We met {}{time}. Present: {present}.",
                plain::place(&m.place)
            ),
            Some(MeetingState::Planned) => format!(
                "We plan to meet {}{time}. Invited: {present}.",
                plain::place(&m.place)
            ),
            Some(MeetingState::DidNotAttend) => format!(
                "We were to meet {}{time}, and {} did not come.",
                plain::place(&m.place),
                names.person()
            ),
            _ => format!("We were to meet {}{time}.", plain::place(&m.place)),
        };
        l.push(Style::Body, line, struck);
        if m.held() && !m.person_present {
            // Nothing is discussed behind the person's back: a meeting without them says so.
            l.push(
                Style::Body,
                format!("{} was not present.", names.person()),
                struck,
            );
        }
        for (label, text) in [
            ("Notes", &m.notes),
            (
                "Reflections (what the practitioners said aloud about the meeting)",
                &m.reflections,
            ),
            ("What was agreed", &m.agreed),
        ] {
            if !text.trim().is_empty() {
                l.labelled(Style::Body, &format!("{label}:"), "", struck);
                l.push(Style::Quote, text.trim_end(), struck);
            }
        }
        for c in &m.changed_after_readback {
            l.push(Style::Error, plain::later_change(c), false);
        }
        let mut readback: Vec<_> = m.readback.iter().collect();
        let order = names.in_reading_order(readback.iter().map(|r| &r.participant));
        readback.sort_by_key(|r| order.iter().position(|k| **k == r.participant));
        for r in readback {
            let who = names.describe(&r.participant);
            match &r.words {
                Some(w) if !r.response.is(ReadbackResponse::Confirmed) => {
                    l.push(
                        Style::Body,
                        format!("When the notes were read back, {who} added:"),
                        struck,
                    );
                    l.push(Style::Quote, w.clone(), struck);
                }
                _ => l.push(
                    Style::Body,
                    format!("When the notes were read back, {who} said they were right."),
                    struck,
                ),
            }
        }
        if let Some(n) = &m.next_meeting {
            l.push(
                Style::Body,
                format!("Next meeting: {}.", plain::datetime(n)),
                struck,
            );
        }
        l.written(&m.meta, struck);
        l.error(&m.meta.entered_in_error, "meeting");
    }
}

fn decisions(l: &mut Layout, v: &CaseView, names: &Names) {
    l.push(
        Style::Heading,
        "What was decided, and what everyone thought",
        false,
    );
    if v.decisions.is_empty() {
        l.push(Style::Body, "No decisions have been recorded yet.", false);
    }
    for d in &v.decisions {
        if l.withheld(&d.meta, "decision") {
            continue;
        }
        decision(l, d, names);
    }
}

/// One decision: what it is, where it stands, what everyone thought, how its status changed, what
/// is to be done, and who wrote it (all struck through if it is in error).
fn decision(l: &mut Layout, d: &DecisionView, names: &Names) {
    let struck = d.meta.entered_in_error.is_some();
    l.push(Style::Subheading, d.text.clone(), struck);
    let by = d
        .proposed_by
        .as_ref()
        .map(|p| format!("Suggested by {}. ", names.name(p)))
        .unwrap_or_default();
    l.push(
        Style::Body,
        format!(
            "{by}Where it stands: {}.",
            plain::decision_status(&d.status)
        ),
        struck,
    );
    if d.agreed_without_person {
        l.push(
            Style::Error,
            format!(
                "Please note: this is marked agreed, but {} has not said they agree. The team will check with {}.",
                names.person(),
                names.person()
            ),
            false,
        );
    }
    positions(l, d, names, struck);
    for s in &d.status_history {
        let by =
            s.by.as_ref()
                .map(|a| format!(" (written down by {})", a.practitioner_name))
                .unwrap_or_default();
        let note = s
            .note
            .as_ref()
            .map(|n| format!(": {n}"))
            .unwrap_or_default();
        l.push(
            Style::Small,
            format!(
                "{} on {}{by}{note}.",
                plain::status_event(&s.status),
                plain::datetime_or(&s.at)
            ),
            struck,
        );
    }
    actions(l, d, names, struck);
    l.written(&d.meta, struck);
    l.error(&d.meta.entered_in_error, "decision");
}

/// What everyone thought of a decision, in reading order: how their view changed, and their
/// words.
fn positions(l: &mut Layout, d: &DecisionView, names: &Names, struck: bool) {
    if d.positions.is_empty() {
        l.push(Style::Body, "Nobody's view has been recorded yet.", struck);
    }
    let mut positions: Vec<_> = d.positions.iter().collect();
    let order = names.in_reading_order(positions.iter().map(|p| &p.participant));
    positions.sort_by_key(|p| order.iter().position(|k| **k == p.participant));
    for p in positions {
        let who = names.describe(&p.participant);
        if let Some(history) = plain::stance_history(p) {
            l.push(Style::Body, format!("{who} {history}."), struck);
        }
        match &p.words {
            Some(w) => {
                l.push(
                    Style::Body,
                    format!("{who} {}, and said:", plain::stance(&p.stance)),
                    struck,
                );
                l.push(Style::Quote, w.clone(), struck);
            }
            None => l.push(
                Style::Body,
                format!("{who} {}.", plain::stance(&p.stance)),
                struck,
            ),
        }
    }
}

/// What is to be done after a decision: what, who, by when, and whether it is done.
fn actions(l: &mut Layout, d: &DecisionView, names: &Names, struck: bool) {
    for a in &d.actions {
        if l.withheld(&a.meta, "thing to do") {
            continue;
        }
        let a_struck = struck || a.meta.entered_in_error.is_some();
        let owner = a
            .owner
            .as_ref()
            .map(|o| format!(", {}", names.name(o)))
            .unwrap_or_default();
        let due = a
            .due
            .as_deref()
            .map(|d| format!(", by {}", plain::date(d)))
            .unwrap_or_default();
        let done = if a.done { "done" } else { "not done yet" };
        l.labelled(
            Style::Body,
            "To do:",
            format!("{}{owner}{due} ({done}).", a.text),
            a_struck,
        );
        l.error(&a.meta.entered_in_error, "thing to do");
    }
}

fn conflicts(l: &mut Layout, v: &CaseView) {
    if v.conflicts.is_empty() {
        return;
    }
    l.push(Style::Heading, "Things the team still has to check", false);
    l.push(
        Style::Body,
        "Two people wrote different things at the same time here. Both are kept until the team \
         checks with you which is right.",
        false,
    );
    for c in &v.conflicts {
        let field = c
            .field
            .rsplit('.')
            .next()
            .unwrap_or(&c.field)
            .replace('_', " ");
        let values: Vec<String> = c
            .values
            .iter()
            .map(|x| match &x.author {
                Some(a) => format!("\"{}\" ({})", x.value, a.practitioner_name),
                None => format!("\"{}\"", x.value),
            })
            .collect();
        l.labelled(
            Style::Body,
            &format!("{field}:"),
            values.join(" or "),
            false,
        );
    }
}

fn access_list(l: &mut Layout, names: &Names, accesses: &[Access]) {
    l.push(
        Style::Heading,
        format!(
            "Who has looked at or changed {} record, and why",
            possessive(names.person())
        ),
        false,
    );
    if accesses.is_empty() {
        l.push(
            Style::Body,
            "This copy was made without the team server's list of who has looked at the record \
             (the device it was made on had not synced). Ask the team for that list.",
            false,
        );
    }
    for a in accesses {
        l.push(Style::Body, super::access::sentence(a, names), false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testcase::{accesses, rich_case};

    #[test]
    fn export_person_copy_html_is_plain_complete_and_escaped() {
        let rich = rich_case();
        let h = html(&rich.view, &accesses());
        assert!(h.starts_with("<!DOCTYPE html>"));
        for want in [
            "Who is in María&#39;s network",
            "What we talked about on 14 March 2026",
            "What was decided, and what everyone thought",
            "Ana Lopez (sister) is not sure yet, and said:",
            "Maybe, if I go with her",
            "I want to be outside with people",
            "María talked about not sleeping since February.",
            "Kit: I noticed how much Ana carries.",
            "She walks every morning with me.",
            "9991000003",
            "Dr Lee (duty psychiatrist)",
            "Tom Reid may no longer receive the record from 20 March 2026.",
            "Who has looked at or changed María&#39;s record, and why",
            "Sam Okafor looked at your record on their device on 15 March 2026 at 09:12 UK \
             time, to read it.",
        ] {
            assert!(h.contains(want), "missing {want:?}");
        }
        assert!(!h.contains("<script>"), "notes are escaped");
        assert!(h.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; worried"));
        // Self-contained: no external requests of any kind.
        for bad in ["http://", "https://", "src=", "<link", "@import", "url("] {
            assert!(!h.contains(bad), "found {bad:?}");
        }
        assert!(h.contains("@media print"));
        // Words in a right-to-left script read right to left in the browser too.
        assert!(h.contains("<p class=\"quote\" dir=\"auto\">"));
    }

    #[test]
    fn export_person_copy_strikes_entries_in_error_and_says_why() {
        let rich = rich_case();
        let l = layout(&rich.view, &[]);
        let struck: Vec<&Block> = l.blocks.iter().filter(|b| b.struck).collect();
        assert!(struck.iter().any(|b| b.text.contains("Anna Lopes")));
        assert!(struck.iter().any(|b| b.text.contains("Move in with Tom")));
        assert!(!struck.iter().any(|b| b.text.contains("Ana Lopez")));
        let errors: Vec<&Block> = l
            .blocks
            .iter()
            .filter(|b| b.style == Style::Error && !b.text.starts_with("Changed after the meeting"))
            .collect();
        assert_eq!(errors.len(), 3);
        assert!(errors.iter().any(|b| b.text.contains(
            "A meeting was removed from this record because it was written on the wrong person's \
             record. Kit Byrne removed it on"
        ) && b.text.ends_with(": Recorded on the wrong case")));
        let h = html::render(&l);
        assert!(h.contains("<s>Move in with Tom</s>"));
        assert!(
            h.contains("had not synced"),
            "no accesses known is said plainly"
        );
    }
}
