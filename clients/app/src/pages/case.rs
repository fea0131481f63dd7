//! The case page: the person, their network as an ecomap (and as a list), the care team, the
//! timeline, meetings and decisions. Also opening a case, and changing the person's details, the
//! care team and the timeline.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use polyphony_core::model::view::{CaseView, DecisionView, MeetingView};
use polyphony_core::model::Participant;
use polyphony_core::model::{
    CareRole, EventKind, ModelError, NewCase, PersonField, Timeline, TimelineField,
};
use polyphony_core::profile::ProfileError;
use polyphony_core::PractitionerId;

use super::meeting::{awaits_outcome, not_present, state_form, state_tag, state_words};
use super::{
    by_line, case_id, conflicts_banner, done, field_error, in_error_note, participant_name,
    person_name, removed_note, render, AppState, FormData, PageError, PageParts, PageResult,
};
use crate::auth::SessionCtx;
use crate::dates;
use crate::ecomap::{meetings_attended, Ecomap};
use crate::html::{self, error_summary, esc, summary_list, tag, DateInput, FieldError, Input};
use crate::state::App;
use crate::status::CaseSyncLine;

/// `GET /cases/new`.
pub async fn new_form(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
) -> PageResult {
    Ok(new_page(&app, &session, &FormData::default(), &[]).await)
}

async fn new_page(
    app: &App,
    session: &SessionCtx,
    form: &FormData,
    errors: &[FieldError],
) -> Response {
    let teams: Vec<(String, String)> = app
        .profile()
        .await
        .enrolment()
        .map(|e| {
            e.teams
                .iter()
                .map(|t| (t.id.to_string(), t.name.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut inner = String::new();
    inner.push_str(
        &Input {
            attrs: r#"autocomplete="off""#,
            ..Input::text("name", "name", "Full name", form.get("name"))
        }
        .render(errors),
    );
    inner.push_str(
        &Input {
            hint: Some(
                "10 digits, for example 999 123 4567. Leave blank if you do not know it yet.",
            ),
            class: "nhsuk-input--width-10",
            attrs: r#"inputmode="numeric" autocomplete="off" spellcheck="false""#,
            ..Input::text(
                "nhs_number",
                "nhs_number",
                "NHS number (optional)",
                form.get("nhs_number"),
            )
        }
        .render(errors),
    );
    inner.push_str(
        &DateInput {
            id: "date_of_birth",
            name: "date_of_birth",
            legend: "Date of birth (optional)",
            value: form.get("date_of_birth"),
            with_time: false,
        }
        .render(errors),
    );
    if teams.len() > 1 {
        inner.push_str(&html::select(
            "team",
            "team",
            "Team",
            &teams,
            form.get("team"),
            errors,
        ));
    }
    let _ = write!(
        inner,
        r#"<fieldset class="nhsuk-fieldset" id="referral"><legend class="nhsuk-fieldset__legend nhsuk-fieldset__legend--m"><h2 class="nhsuk-fieldset__heading">The referral</h2></legend><div class="nhsuk-hint">The first network meeting is due by its urgency. Leave these empty only if the referral is not to hand yet: it can be recorded on the case page.</div>{}</fieldset>"#,
        super::referrals::fields(form, errors)
    );
    inner.push_str(&html::button("Open case"));
    // Multipart: the referral letter may come with it.
    let content = format!(
        r#"<div class="nhsuk-grid-row"><div class="nhsuk-grid-column-two-thirds">{}<h1>Open a new case</h1><form method="post" action="/cases" enctype="multipart/form-data" novalidate autocomplete="off">{}<input type="hidden" name="_once" value="{}">{}</form></div></div>"#,
        error_summary(errors),
        html::csrf_field(&session.csrf),
        crate::auth::random_token(),
        inner
    );
    render(
        app,
        session,
        PageParts {
            title: "Open a new case",
            back: Some(("/", "Back to your caseload")),
            content,
            has_errors: !errors.is_empty(),
            body_class: "",
        },
    )
    .await
}

/// `POST /cases`.
pub async fn create(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    posted: super::Posted,
) -> PageResult {
    let form = &posted.form;
    let mut errors = Vec::new();
    if form.opt("name").is_none() {
        errors.push(FieldError::new("name", "Enter the person's full name"));
    }
    // The referral, when any of it was given (or a letter chosen): then all of it is needed.
    let referral_given = ["received_at", "source", "urgency", "reason", "referrer"]
        .iter()
        .any(|f| form.opt(f).is_some())
        || posted.file("letter").is_some();
    let referral = if referral_given {
        match super::referrals::read(form, &app) {
            Ok(r) => Some(r),
            Err(mut e) => {
                errors.append(&mut e);
                None
            }
        }
    } else {
        None
    };
    if errors.is_empty() {
        let new = NewCase {
            name: form.get("name").to_string(),
            nhs_number: form.opt("nhs_number").map(str::to_string),
            date_of_birth: form.opt("date_of_birth").map(str::to_string),
            referral: None,
        };
        let result = {
            let mut profile = app.profile().await;
            match referral {
                Some(r) => profile
                    .create_referred_case(new, form.opt("team"), r, posted.letter())
                    .map(|(case, _)| case),
                None => profile.create_case(new, form.opt("team")),
            }
        };
        match result {
            Ok(case) => {
                app.local_change(case);
                return Ok(done(
                    &app,
                    &session,
                    "Case opened",
                    &format!("/case/{case}"),
                ));
            }
            Err(e) => {
                let field = match &e {
                    ProfileError::Model(ModelError::InvalidNhsNumber { .. }) => "nhs_number",
                    ProfileError::Model(
                        ModelError::InvalidDate { .. } | ModelError::LocalTime { .. },
                    ) => "date_of_birth",
                    ProfileError::Team(_) => "team",
                    ProfileError::Model(
                        ModelError::Referral(_)
                        | ModelError::Required { .. }
                        | ModelError::TooLong { .. }
                        | ModelError::Attachment(_),
                    ) => super::referrals::field_of(&e),
                    _ => "name",
                };
                errors.push(field_error(field, &e));
            }
        }
    }
    Ok(new_page(&app, &session, form, &errors).await)
}

/// `GET /case/:id`.
pub async fn show(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
) -> PageResult {
    let case = case_id(&id)?;
    let (view, files) = {
        let mut profile = app.profile().await;
        let view = profile.view(case, "case page")?;
        let files = super::files::states(&profile, case, &view);
        (view, files)
    };
    let staff = super::staff(&app, &view).await;
    let overview = app.overview().await;
    let content = render_case(
        &app,
        &view,
        overview.case(&case),
        &staff,
        &files,
        &session.csrf,
    );
    Ok(render(
        &app,
        &session,
        PageParts {
            title: &view.person.name,
            back: Some(("/", "Back to your caseload")),
            content,
            has_errors: false,
            body_class: "",
        },
    )
    .await)
}

fn opt(s: &Option<String>) -> String {
    s.as_deref()
        .filter(|v| !v.trim().is_empty())
        .map(esc)
        .unwrap_or_else(|| r#"<span class="app-muted">Not recorded</span>"#.into())
}

/// The whole case page's content.
pub fn render_case(
    app: &App,
    v: &CaseView,
    sync: Option<&CaseSyncLine>,
    staff: &super::Staff,
    files: &super::files::FileStates,
    csrf: &str,
) -> String {
    let mut s = String::new();
    s.push_str(&conflicts_banner(v));
    s.push_str(&heading(v, sync));
    s.push_str(&actions_and_copies(v));
    s.push_str(&person_section(v));
    s.push_str(&network_section(app, v));
    s.push_str(&care_team_section(app, v));
    s.push_str(&add_me_to_care_team_form(v, staff.me.as_ref(), csrf));
    s.push_str(&add_colleague_form(v, staff, csrf));
    s.push_str(&super::plan::plan_section(app, v, csrf));
    s.push_str(&super::safety::section(
        app,
        v,
        staff.me.as_ref().map(|(id, _)| id.as_str()),
        csrf,
    ));
    s.push_str(&super::referrals::section(app, v, csrf));
    s.push_str(&super::files::section(app, v, files, csrf));
    s.push_str(&timeline_section(app, v, csrf));
    s.push_str(&meetings_section(app, v, csrf));
    s.push_str(&decisions_section(app, v));
    s
}

/// The person's name (and pronouns) and how the case stands with the server.
fn heading(v: &CaseView, sync: Option<&CaseSyncLine>) -> String {
    let id = esc(&v.case_id);
    let sub: Vec<String> = [v.person.pronouns.clone()]
        .into_iter()
        .flatten()
        .filter(|p| !p.trim().is_empty())
        .collect();
    format!(
        r#"<span class="nhsuk-caption-l">Case</span><h1 class="app-case-heading">{}{}</h1><p id="case-sync" data-case="{id}">{}</p>"#,
        esc(&v.person.name),
        if sub.is_empty() {
            String::new()
        } else {
            format!(
                r#" <span class="app-pronouns">({})</span>"#,
                esc(sub.join(", "))
            )
        },
        sync.map(|l| l.tag()).unwrap_or_default()
    )
}

/// What can be done from here (record a meeting, propose a decision, add to the network) and
/// the copies of the record that can be made, with the warning that they leave the encryption.
fn actions_and_copies(v: &CaseView) -> String {
    let id = esc(&v.case_id);
    format!(
        r#"<ul class="app-actions"><li><a class="nhsuk-button" href="/case/{id}/meetings/new" role="button" draggable="false">Record a meeting</a></li><li><a class="nhsuk-button nhsuk-button--secondary" href="/case/{id}/decisions/new" role="button" draggable="false">Propose a decision</a></li><li><a class="nhsuk-button nhsuk-button--secondary" href="/case/{id}/members/new" role="button" draggable="false">Add someone to the network</a></li><li><a class="nhsuk-button nhsuk-button--secondary" href="/case/{id}/network-copy" role="button" draggable="false">Network copy to print</a></li></ul><h2 class="nhsuk-heading-s">Copies of the record</h2><ul class="nhsuk-list"><li><a href="/case/{id}/export/pdf" download>The person’s copy (PDF)</a></li><li><a href="/case/{id}/export/html" download>The person’s copy (web page)</a></li><li><a href="/case/{id}/export/json" download>Everything held about them (subject access, JSON)</a></li><li><a href="/case/{id}/export/fhir" download>For the trust’s record (FHIR)</a></li></ul><p class="nhsuk-body-s app-export-warning">{not_encrypted}</p>"#,
        not_encrypted = esc(polyphony_core::export::NOT_ENCRYPTED)
    )
}

/// About the person: their details, and the link to change them.
fn person_section(v: &CaseView) -> String {
    let id = esc(&v.case_id);
    let p = &v.person;
    let mut s = format!(r#"<h2 id="person">About {}</h2>"#, esc(person_name(v)));
    s.push_str(&summary_list(&[
        ("Full name".into(), esc(&p.name)),
        ("Preferred name".into(), opt(&p.preferred_name)),
        ("Pronouns".into(), opt(&p.pronouns)),
        (
            "Date of birth".into(),
            p.date_of_birth
                .as_deref()
                .map(|d| esc(dates::long_date(d)))
                .unwrap_or_else(|| opt(&None)),
        ),
        ("NHS number".into(), opt(&p.nhs_number)),
        ("Telephone".into(), opt(&p.phone)),
        ("Email".into(), opt(&p.email)),
        ("Address".into(), opt(&p.address)),
        (
            "How they want to be contacted".into(),
            opt(&p.contact_preference),
        ),
    ]));
    let _ = write!(
        s,
        r#"<p><a href="/case/{id}/person">Change {}’s details</a></p>"#,
        esc(person_name(v))
    );
    s
}

/// The network: picture first, then the same as a table.
fn network_section(app: &App, v: &CaseView) -> String {
    let id = esc(&v.case_id);
    let mut s = String::from(r#"<h2 id="network">Network</h2>"#);
    s.push_str(&Ecomap::from_view(v).svg());
    s.push_str(&network_table(app, v));
    let _ = write!(
        s,
        r#"<p><a href="/case/{id}/members/new">Add someone to the network</a></p>"#
    );
    s
}

/// The care team: who, in what role, since when.
fn care_team_section(app: &App, v: &CaseView) -> String {
    let id = esc(&v.case_id);
    let mut s = String::from(r#"<h2 id="care-team">Care team</h2>"#);
    if v.care_team.is_empty() {
        s.push_str("<p>No one has been added to the care team yet.</p>");
        return s;
    }
    s.push_str(r#"<ul class="nhsuk-list">"#);
    for c in &v.care_team {
        let role = c.role.label();
        let period = match (&c.start, &c.end) {
            (Some(st), Some(en)) => {
                format!("from {} to {}", dates::long_date(st), dates::long_date(en))
            }
            (Some(st), None) => format!("since {}", dates::long_date(st)),
            _ => String::new(),
        };
        let body = format!("{}, {role} {}", esc(&c.name), esc(&period));
        match &c.meta.entered_in_error {
            Some(mark) if c.meta.withheld() => {
                let _ = write!(
                    s,
                    "<li>{}</li>",
                    removed_note(app, "A care team membership", mark)
                );
            }
            Some(mark) => {
                let _ = write!(
                    s,
                    r#"<li class="app-in-error"><s>{body}</s>{}</li>"#,
                    in_error_note(app, mark)
                );
            }
            None => {
                let _ = write!(
                    s,
                    r#"<li>{body} <a class="app-small-link" href="/case/{id}/entry/{eid}/error">Mark as entered in error<span class="nhsuk-u-visually-hidden"> (care team: {name})</span></a></li>"#,
                    eid = esc(c.meta.id),
                    name = esc(&c.name)
                );
            }
        }
    }
    s.push_str("</ul>");
    s
}

/// The button that adds the practitioner using this device to the care team, unless they are
/// already on it (or the device is not enrolled).
fn add_me_to_care_team_form(v: &CaseView, me: Option<&(String, String)>, csrf: &str) -> String {
    let Some((me_id, _)) = me else {
        return String::new();
    };
    let already = v.care_team.iter().any(|c| {
        c.practitioner.to_string() == *me_id && c.end.is_none() && c.meta.entered_in_error.is_none()
    });
    if already {
        return String::new();
    }
    let inner = format!(
        r#"<input type="hidden" name="role" value="{}">{}"#,
        CareRole::Practitioner,
        html::secondary_button("Add me to the care team")
    );
    html::post_form(&format!("/case/{}/care-team", v.case_id), csrf, &inner)
}

/// The form that adds a colleague of the case's team (from the team list the server sent) to
/// the care team, in the part their role suggests unless another is chosen. Administrators are
/// not offered; nor is anyone already in the care team.
fn add_colleague_form(v: &CaseView, staff: &super::Staff, csrf: &str) -> String {
    let in_team = |id: &PractitionerId| {
        v.care_team
            .iter()
            .any(|c| c.practitioner.is(*id) && c.end.is_none() && c.meta.entered_in_error.is_none())
    };
    let mut options = vec![(String::new(), "Choose a colleague".to_string())];
    options.extend(
        staff
            .colleagues
            .iter()
            .filter(|c| !in_team(&c.practitioner))
            .filter(|c| c.role.known().is_some_and(|r| r.care_role().is_some()))
            .map(|c| {
                (
                    c.practitioner.to_string(),
                    format!("{} ({})", c.name, c.role.label()),
                )
            }),
    );
    if options.len() == 1 {
        return String::new();
    }
    let mut roles = vec![(String::new(), "As on the team list".to_string())];
    roles.extend(
        CareRole::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), capitalised(r.label()))),
    );
    let inner = format!(
        "{}{}{}",
        html::select(
            "colleague",
            "practitioner",
            "Add a colleague to the care team",
            &options,
            "",
            &[]
        ),
        html::select(
            "colleague-role",
            "role",
            "Their part in the care team",
            &roles,
            "",
            &[]
        ),
        html::secondary_button("Add to the care team")
    );
    html::post_form(&format!("/case/{}/care-team", v.case_id), csrf, &inner)
}

/// The timeline, and the form to record a milestone on it.
fn timeline_section(app: &App, v: &CaseView, csrf: &str) -> String {
    let mut s = String::from(r#"<h2 id="timeline">Timeline</h2>"#);
    s.push_str(&timeline(app, v));
    let options: Vec<(String, String)> = [
        (TimelineField::FirstContact, "First contact"),
        (TimelineField::FirstNetworkMeeting, "First network meeting"),
        (TimelineField::Closure, "Closure"),
        (TimelineField::Referral, "Referral"),
    ]
    .iter()
    .map(|(f, l)| (f.as_str().to_string(), l.to_string()))
    .collect();
    let inner = format!(
        r#"<div class="app-inline-fields">{}{}</div>{}"#,
        html::select("milestone", "milestone", "Milestone", &options, "", &[]),
        DateInput {
            id: "milestone_at",
            name: "at",
            legend: "Date and time",
            value: "",
            with_time: true,
        }
        .render(&[]),
        html::secondary_button("Record milestone")
    );
    let _ = write!(
        s,
        r#"<details class="nhsuk-details"><summary class="nhsuk-details__summary"><span class="nhsuk-details__summary-text">Record a milestone</span></summary><div class="nhsuk-details__text">{}</div></details>"#,
        html::post_form(&format!("/case/{}/timeline", v.case_id), csrf, &inner)
    );
    s
}

/// The meetings, latest first.
fn meetings_section(app: &App, v: &CaseView, csrf: &str) -> String {
    let mut s = String::from(r#"<h2 id="meetings">Meetings</h2>"#);
    if v.meetings.is_empty() {
        s.push_str("<p>No meetings recorded yet.</p>");
        return s;
    }
    s.push_str(r#"<ul class="nhsuk-list app-entries">"#);
    for m in v.meetings.iter().rev() {
        s.push_str(&meeting_item(app, v, m, csrf));
    }
    s.push_str("</ul>");
    s
}

/// One meeting as a list item: when, where it stands, where, who came. A meeting whose time has
/// passed without an outcome asks for it; one in error is struck through; a withheld one is only
/// a note.
fn meeting_item(app: &App, v: &CaseView, m: &MeetingView, csrf: &str) -> String {
    if let Some(mark) = m
        .meta
        .entered_in_error
        .as_ref()
        .filter(|_| m.meta.withheld())
    {
        return format!("<li>{}</li>", removed_note(app, "A meeting", mark));
    }
    let when = if m.state.is(polyphony_core::model::MeetingState::Planned) {
        state_words(app, m)
    } else {
        m.at.as_deref()
            .map(|t| dates::long_stored(t, &app.config.zone))
            .unwrap_or_else(|| "Date not recorded".into())
    };
    let who: Vec<String> = super::in_order(v, &m.attendees)
        .iter()
        .map(|a| participant_name(v, a))
        .collect();
    let line = format!(
        r#"<a href="/case/{id}/meeting/{mid}">{when}</a> {state}, {place}. {who}{absent}"#,
        id = esc(&v.case_id),
        mid = esc(m.meta.id),
        when = esc(&when),
        state = state_tag(&m.state),
        place = esc(&m.place),
        who = esc(&if who.is_empty() {
            "No one recorded as present.".to_string()
        } else {
            format!("Present: {}.", who.join(", "))
        }),
        absent = not_present(v, m)
            .map(|a| format!(" <strong>{}</strong>", esc(&a)))
            .unwrap_or_default(),
    );
    match &m.meta.entered_in_error {
        None if awaits_outcome(m) => format!(
            r#"<li>{line}<div class="app-meeting-outcome">{}</div></li>"#,
            state_form(
                m,
                &v.case_id,
                csrf,
                &format!("state-{}", m.meta.id),
                "case",
                &[]
            )
        ),
        Some(mark) => format!(
            r#"<li class="app-in-error"><s>{line}</s>{}</li>"#,
            in_error_note(app, mark)
        ),
        None => format!("<li>{line}</li>"),
    }
}

/// The decisions, latest first.
fn decisions_section(app: &App, v: &CaseView) -> String {
    let mut s = String::from(r#"<h2 id="decisions">Decisions</h2>"#);
    if v.decisions.is_empty() {
        s.push_str("<p>No decisions proposed yet.</p>");
        return s;
    }
    s.push_str(r#"<ul class="nhsuk-list app-entries">"#);
    for d in v.decisions.iter().rev() {
        s.push_str(&decision_item(app, v, d));
    }
    s.push_str("</ul>");
    s
}

/// One decision as a list item: its words, its status and how many positions are recorded;
/// struck through if in error, only a note if withheld.
fn decision_item(app: &App, v: &CaseView, d: &DecisionView) -> String {
    if let Some(mark) = d
        .meta
        .entered_in_error
        .as_ref()
        .filter(|_| d.meta.withheld())
    {
        return format!("<li>{}</li>", removed_note(app, "A decision", mark));
    }
    let line = format!(
        r#"<a href="/case/{id}/decision/{did}">{text}</a> {status} <span class="app-muted">{n} {positions}</span>"#,
        id = esc(&v.case_id),
        did = esc(d.meta.id),
        text = esc(&d.text),
        status = super::decision::status_tag(&d.status),
        n = d.positions.len(),
        positions = if d.positions.len() == 1 {
            "position recorded"
        } else {
            "positions recorded"
        },
    );
    match &d.meta.entered_in_error {
        Some(mark) => format!(
            r#"<li class="app-in-error"><s>{line}</s>{}</li>"#,
            in_error_note(app, mark)
        ),
        None => format!("<li>{line}</li>"),
    }
}

fn network_table(app: &App, v: &CaseView) -> String {
    if v.network.is_empty() {
        return "<p>No one has been added to the network yet.</p>".into();
    }
    let id = esc(&v.case_id);
    let mut s = String::from(
        r#"<table class="nhsuk-table" id="network-list"><caption class="nhsuk-table__caption nhsuk-table__caption--s">The network as a list</caption><thead class="nhsuk-table__head"><tr><th scope="col">Name</th><th scope="col">Relationship</th><th scope="col">Role</th><th scope="col">Meetings attended</th><th scope="col">Consent to receive the record</th><th scope="col"><span class="nhsuk-u-visually-hidden">Actions</span></th></tr></thead><tbody class="nhsuk-table__body">"#,
    );
    for m in &v.network {
        if let Some(mark) = m
            .meta
            .entered_in_error
            .as_ref()
            .filter(|_| m.meta.withheld())
        {
            let _ = write!(
                s,
                r#"<tr class="nhsuk-table__row"><td class="nhsuk-table__cell" colspan="6">{}</td></tr>"#,
                removed_note(app, "A network member", mark)
            );
            continue;
        }
        let attended = meetings_attended(v, Participant::Member(m.meta.id));
        let consent = capitalised(m.consent_words());
        let left = m
            .left
            .as_deref()
            .map(|l| format!(" (left on {})", dates::long_date(l)))
            .unwrap_or_default();
        let cells = format!(
            r#"<td class="nhsuk-table__cell">{name}{left}</td><td class="nhsuk-table__cell">{rel}</td><td class="nhsuk-table__cell">{role}</td><td class="nhsuk-table__cell">{attended}</td><td class="nhsuk-table__cell">{consent}</td>"#,
            name = esc(&m.name),
            left = esc(&left),
            rel = esc(&m.relationship),
            role = esc(&m.role),
        );
        match &m.meta.entered_in_error {
            Some(mark) => {
                let _ = write!(
                    s,
                    r#"<tr class="nhsuk-table__row app-in-error">{}<td class="nhsuk-table__cell">{}{}</td></tr>"#,
                    cells
                        .replace(
                            r#"<td class="nhsuk-table__cell">"#,
                            r#"<td class="nhsuk-table__cell"><s>"#
                        )
                        .replace("</td>", "</s></td>"),
                    in_error_note(app, mark),
                    super::wrong_person_link(&v.case_id, &m.meta.id.to_string(), &m.name)
                );
            }
            None => {
                let _ = write!(
                    s,
                    r#"<tr class="nhsuk-table__row">{cells}<td class="nhsuk-table__cell"><a href="/case/{id}/member/{mid}">Change<span class="nhsuk-u-visually-hidden"> {name}</span></a></td></tr>"#,
                    mid = esc(m.meta.id),
                    name = esc(&m.name),
                );
            }
        }
    }
    s.push_str("</tbody></table>");
    s
}

/// The case's timeline as the model builds it for every reader (the CLI prints the same events):
/// entries marked entered in error stay on it, tagged, beside the event of their marking.
fn timeline(app: &App, v: &CaseView) -> String {
    let zone = &app.config.zone;
    let timeline = Timeline::from_view(v);
    if timeline.events.is_empty() {
        return "<p>Nothing on the timeline yet.</p>".into();
    }
    let mut s = String::from(r#"<ol class="app-timeline">"#);
    for e in &timeline.events {
        let when = if e.at.len() == 10 {
            dates::long_date(&e.at)
        } else {
            dates::long_stored(&e.at, zone)
        };
        let mut text = e.text.clone();
        if let Some(first) = text.get(..1) {
            text.replace_range(..1, &first.to_uppercase());
        }
        let by =
            e.by.as_ref()
                .map(|b| format!(" (recorded by {})", esc(b)))
                .unwrap_or_default();
        let in_error = if e.entered_in_error && e.kind != EventKind::EnteredInError {
            format!(" {}", tag("Entered in error", "grey"))
        } else {
            String::new()
        };
        let _ = write!(
            s,
            r#"<li><span class="app-timeline__when">{}</span> {}{by}{in_error}</li>"#,
            esc(&when),
            esc(&text)
        );
    }
    s.push_str("</ol>");
    s
}

/// `POST /case/:id/timeline`.
pub async fn set_timeline(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let form = FormData::from(form);
    let back = format!("/case/{case}#timeline");
    let field: TimelineField = match form.get("milestone").parse() {
        Ok(f) => f,
        Err(_) => return Ok(done(&app, &session, "Choose a milestone to record", &back)),
    };
    let at = match dates::parse_input(form.get("at"), &app.config.zone) {
        Ok(at) => at,
        Err(e) => {
            return Ok(done(
                &app,
                &session,
                &format!("The milestone was not recorded: {e}"),
                &back,
            ))
        }
    };
    let message = match app.edit(case, |d| d.set_timeline(field, at)).await {
        Ok(()) => "Milestone recorded".to_string(),
        // A closure before the referral, say: said, and nothing written.
        Err(ProfileError::Model(e)) => format!("The milestone was not recorded: {e}"),
        Err(e) => return Err(e.into()),
    };
    Ok(done(&app, &session, &message, &back))
}

/// `POST /case/:id/care-team`: add the practitioner using this device, or (with `practitioner`)
/// a colleague from the team list, in the part chosen or else the one their role suggests.
pub async fn add_me_to_care_team(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let form = FormData::from(form);
    let Some((me_id, me_name)) = super::me(&app).await else {
        return Ok(Redirect::to("/enrol").into_response());
    };
    let view = app.profile().await.lookup(case)?;
    let staff = super::staff(&app, &view).await;
    let chosen = form.get("practitioner");
    let (who, name, listed) = if chosen.is_empty() {
        let listed = staff
            .colleagues
            .iter()
            .find(|c| c.practitioner.to_string() == me_id)
            .and_then(|c| c.role.known());
        (me_id, me_name, listed)
    } else {
        let c = staff
            .colleagues
            .iter()
            .find(|c| c.practitioner.to_string() == chosen)
            .ok_or_else(|| {
                PageError::NotFound(
                    "that colleague is not on this device's team list: sync, then try again".into(),
                )
            })?;
        (c.practitioner.to_string(), c.name.clone(), c.role.known())
    };
    let who: PractitionerId = who
        .parse()
        .map_err(|_| PageError::NotFound("the practitioner id is damaged".into()))?;
    let back = format!("/case/{case}#care-team");
    let already = view
        .care_team
        .iter()
        .any(|c| c.practitioner.is(who) && c.end.is_none() && c.meta.entered_in_error.is_none());
    if already {
        return Ok(done(
            &app,
            &session,
            &format!("{name} is in the care team already"),
            &back,
        ));
    }
    let role = match (form.get("role").parse::<CareRole>(), listed) {
        (Ok(role), _) => role,
        (Err(_), Some(listed)) => match listed.care_role() {
            Some(role) => role,
            None => {
                return Ok(done(
                    &app,
                    &session,
                    &format!("{name} is an administrator on the team list, not part of a care team: choose their part to add them anyway"),
                    &back,
                ))
            }
        },
        // Not on the team list with a role this version knows: only as chosen.
        (Err(_), None) if !chosen.is_empty() => {
            return Ok(done(
                &app,
                &session,
                &format!("Choose {name}'s part in the care team"),
                &back,
            ))
        }
        (Err(_), None) => CareRole::Practitioner,
    };
    app.edit(case, |d| d.add_care_team(who, &name, role, None))
        .await?;
    let said = if chosen.is_empty() {
        "You were added to the care team".to_string()
    } else {
        format!("{name} was added to the care team")
    };
    Ok(done(&app, &session, &said, &back))
}

const PERSON_FIELDS: [(PersonField, &str, &str); 9] = [
    (PersonField::Name, "Full name", "text"),
    (PersonField::PreferredName, "Preferred name", "text"),
    (PersonField::Pronouns, "Pronouns", "text"),
    (PersonField::DateOfBirth, "Date of birth", "date"),
    (PersonField::NhsNumber, "NHS number", "text"),
    (PersonField::Phone, "Telephone", "tel"),
    (PersonField::Email, "Email", "email"),
    (PersonField::Address, "Address", "text"),
    (
        PersonField::ContactPreference,
        "How they want to be contacted",
        "text",
    ),
];

fn person_value(v: &CaseView, f: PersonField) -> String {
    let p = &v.person;
    match f {
        PersonField::Name => Some(p.name.clone()),
        PersonField::PreferredName => p.preferred_name.clone(),
        PersonField::Pronouns => p.pronouns.clone(),
        PersonField::DateOfBirth => p.date_of_birth.clone(),
        PersonField::NhsNumber => p.nhs_number.clone(),
        PersonField::Phone => p.phone.clone(),
        PersonField::Email => p.email.clone(),
        PersonField::Address => p.address.clone(),
        PersonField::ContactPreference => p.contact_preference.clone(),
    }
    .unwrap_or_default()
}

async fn person_page(
    app: &App,
    session: &SessionCtx,
    v: &CaseView,
    values: &FormData,
    errors: &[FieldError],
) -> Response {
    let mut inner = String::new();
    for (f, label, kind) in PERSON_FIELDS {
        let value = if values.0.is_empty() {
            person_value(v, f)
        } else {
            values.get(f.as_str()).to_string()
        };
        let field = if kind == "date" {
            DateInput {
                id: f.as_str(),
                name: f.as_str(),
                legend: label,
                value: &value,
                with_time: false,
            }
            .render(errors)
        } else {
            Input {
                kind,
                ..Input::text(f.as_str(), f.as_str(), label, &value)
            }
            .render(errors)
        };
        inner.push_str(&field);
    }
    inner.push_str(&html::button("Save details"));
    let heading = format!(r#"<h1>{}’s details</h1>"#, esc(person_name(v)));
    super::case_form_page(
        app,
        session,
        &v.case_id,
        "Change details",
        &heading,
        "person",
        &inner,
        errors,
    )
    .await
}

/// `GET /case/:id/person`.
pub async fn person_form(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
) -> PageResult {
    let case = case_id(&id)?;
    let v = app.profile().await.view(case, "person details")?;
    Ok(person_page(&app, &session, &v, &FormData::default(), &[]).await)
}

/// `POST /case/:id/person`: save the fields that changed, each as its own attributed change.
pub async fn person_save(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let form = FormData::from(form);
    let v = app.profile().await.view(case, "person details")?;
    let mut errors = Vec::new();
    let mut changed = 0;
    for (f, _, _) in PERSON_FIELDS {
        let new = form.get(f.as_str()).trim().to_string();
        if new == person_value(&v, f).trim() {
            continue;
        }
        let value = (!new.is_empty()).then_some(new.as_str());
        match app.edit(case, |d| d.set_person(f, value)).await {
            Ok(()) => changed += 1,
            Err(e) => errors.push(field_error(f.as_str(), &e)),
        }
    }
    if !errors.is_empty() {
        let v = app.profile().await.view(case, "person details")?;
        return Ok(person_page(&app, &session, &v, &form, &errors).await);
    }
    let msg = if changed == 0 {
        "Nothing was changed"
    } else {
        "Details saved"
    };
    Ok(done(&app, &session, msg, &format!("/case/{case}#person")))
}

/// Who wrote something, for lists.
pub fn written_by(app: &App, meta: &polyphony_core::model::view::EntryMeta) -> String {
    by_line(app, &meta.created_by, &meta.created_at)
}

/// A red tag for an entry that cannot be changed.
pub fn in_error_tag() -> String {
    tag("Entered in error", "red")
}

/// The first letter in capitals ("not recorded" as a table cell: "Not recorded").
fn capitalised(words: &str) -> String {
    let mut c = words.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}
