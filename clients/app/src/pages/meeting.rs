//! Meetings: recording one, the meeting page (attendees, place, the notes, reflections and
//! agreements editors), live typing between two practitioners, and the end-of-meeting read-back.
//!
//! Each editor is an ordinary form (it saves without JavaScript). With JavaScript, the page script
//! saves as the practitioner pauses and polls `/case/:id/meeting/:mid/text` for what a colleague
//! typed; it replaces the text only in a field the user is not in the middle of changing. Every save
//! carries the text it started from, and the server merges (see [`crate::merge`]), so two people
//! typing into the same notes both keep their words, live or offline.

use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Json, Response};
use axum::{Extension, Form};
use polyphony_core::model::readback::LaterChange;
use polyphony_core::model::view::{CaseView, ErrorMark, MeetingView, ReadbackView};
use polyphony_core::model::{
    MeetingState, NewMeeting, NoteKind, Participant, Place, ReadbackResponse, Stored,
};
use polyphony_core::EntryId;
use serde::Deserialize;

use super::{
    by_line, by_on, case_id, done, entry_id, field_error, in_error_note, participant_name,
    participants, person_name, removed_note, render, AppState, FormData, PageError, PageParts,
    PageResult,
};
use super::{conflicts_banner, text_or_none};
use crate::auth::SessionCtx;
use crate::dates;
use crate::html::{self, error_summary, esc, tag, Choices, DateInput, FieldError};
use crate::merge::merge3;
use crate::state::App;

fn place_options() -> Vec<(String, String)> {
    Place::ALL
        .iter()
        .map(|p| {
            let label = match p {
                Place::Home => "At home (or where the person chose)",
                Place::Clinic => "In clinic",
                Place::Online => "By video",
                Place::Phone => "By telephone",
            };
            (p.as_str().to_string(), label.to_string())
        })
        .collect()
}

fn kind_label(k: NoteKind) -> &'static str {
    match k {
        NoteKind::Notes => "Notes",
        NoteKind::Reflections => "Reflections",
        NoteKind::Agreed => "What was agreed",
    }
}

fn kind_hint(k: NoteKind) -> &'static str {
    match k {
        NoteKind::Notes => "Written with the network, in their words where you can.",
        NoteKind::Reflections => {
            "What the practitioners said when they reflected aloud in front of the network."
        }
        NoteKind::Agreed => "What everyone agreed, including who will do what.",
    }
}

fn meeting_title(app: &App, m: &MeetingView) -> String {
    let planned = m.state.is(MeetingState::Planned);
    m.at.as_deref()
        .map(|t| dates::long_stored(t, &app.config.zone))
        .map(|when| {
            if planned {
                format!("Meeting planned for {when}")
            } else {
                format!("Meeting on {when}")
            }
        })
        .unwrap_or_else(|| "Meeting".into())
}

/// A meeting still planned whose time has passed: the model's rule
/// ([`MeetingView::awaits_outcome`]), at this instant.
pub fn awaits_outcome(m: &MeetingView) -> bool {
    m.awaits_outcome(time::OffsetDateTime::now_utc())
}

/// Where a meeting stands, in words: "Planned for 10 June 2027 at 14:00 UK time", "Held",
/// "Cancelled", "Did not attend" (a newer version's state is shown as written).
pub fn state_words(app: &App, m: &MeetingView) -> String {
    match m.state.known() {
        Some(MeetingState::Planned) => match m.at.as_deref() {
            Some(t) => format!("Planned for {}", dates::long_stored(t, &app.config.zone)),
            None => "Planned".into(),
        },
        Some(MeetingState::Held) => "Held".into(),
        Some(MeetingState::Cancelled) => "Cancelled".into(),
        Some(MeetingState::DidNotAttend) => "Did not attend".into(),
        None => m.state.to_string().replace('_', " "),
    }
}

/// A meeting's state as a coloured tag.
pub fn state_tag(state: &Stored<MeetingState>) -> String {
    let written = state.to_string();
    let (label, colour) = match state.known() {
        Some(MeetingState::Planned) => ("Planned", "blue"),
        Some(MeetingState::Held) => ("Held", "green"),
        Some(MeetingState::Cancelled) => ("Cancelled", "grey"),
        Some(MeetingState::DidNotAttend) => ("Did not attend", "orange"),
        None => (written.as_str(), "grey"),
    };
    tag(label, colour)
}

/// "Alex was not present." for a meeting held without the person: the practice holds that
/// nothing is discussed behind their back, so every screen says when they were not there.
pub fn not_present(v: &CaseView, m: &MeetingView) -> Option<String> {
    (m.held() && !m.person_present).then(|| format!("{} was not present.", person_name(v)))
}

/// The form that says where a meeting stands, posting to its `state` route. `id` is the radios'
/// id (unique on the page); `back` is where to go afterwards (`case` or the meeting).
pub fn state_form(
    m: &MeetingView,
    case: &str,
    csrf: &str,
    id: &str,
    back: &str,
    errors: &[FieldError],
) -> String {
    let options: Vec<(String, String)> = [
        (MeetingState::Held, "It took place"),
        (MeetingState::Cancelled, "It was cancelled"),
        (
            MeetingState::DidNotAttend,
            "The person did not come and the network did not meet",
        ),
        (MeetingState::Planned, "It is still planned"),
    ]
    .iter()
    .map(|(st, l)| (st.as_str().to_string(), l.to_string()))
    .collect();
    let checked = if awaits_outcome(m) {
        vec![]
    } else {
        vec![m.state.to_string()]
    };
    let legend = if m.state.is(MeetingState::Planned) {
        "Did this meeting take place?"
    } else {
        "Where does this meeting stand?"
    };
    let inner = format!(
        r#"<input type="hidden" name="back" value="{}">{}{}"#,
        esc(back),
        Choices {
            id,
            name: "state",
            legend,
            options: &options,
            checked: &checked,
            multiple: false,
            inline: false,
            hint: Some("Only meetings that took place count in the team’s figures."),
        }
        .render(errors),
        html::secondary_button("Save where the meeting stands"),
    );
    html::post_form(
        &format!("/case/{case}/meeting/{}/state", m.meta.id),
        csrf,
        &inner,
    )
}

/// What was changed in one text after the read-back: every insertion and deletion, with who and
/// when, set apart from the text the participants confirmed.
fn later_changes(app: &App, m: &MeetingView, k: NoteKind) -> String {
    let changes: Vec<&LaterChange> = m
        .changed_after_readback
        .iter()
        .filter(|c| c.part == k)
        .collect();
    if changes.is_empty() {
        return String::new();
    }
    let mut s = format!(
        r#"<div class="nhsuk-inset-text app-later-changes" id="{}-later"><span class="nhsuk-u-visually-hidden">Information: </span><h3 class="nhsuk-heading-xs">Changed after the read-back</h3><p>These words were not read back at the meeting.</p><ul class="nhsuk-list">"#,
        k.as_str()
    );
    for c in changes {
        let who = by_on(app, &c.by, &c.at);
        for w in &c.added {
            let _ = write!(
                s,
                r#"<li>Added after the meeting by {}: <ins>“{}”</ins></li>"#,
                esc(&who),
                html::esc_multiline(w)
            );
        }
        for w in &c.removed {
            let _ = write!(
                s,
                r#"<li>Removed after the meeting by {}: <del>“{}”</del></li>"#,
                esc(&who),
                html::esc_multiline(w)
            );
        }
    }
    s.push_str("</ul></div>");
    s
}

fn find_meeting(v: &CaseView, id: &str) -> Result<MeetingView, PageError> {
    let wanted = id.parse::<EntryId>().ok();
    v.meetings
        .iter()
        .find(|m| Some(m.meta.id) == wanted)
        .cloned()
        .ok_or_else(|| PageError::NotFound(format!("there is no meeting '{id}' in this case")))
}

async fn new_page(
    app: &App,
    session: &SessionCtx,
    v: &CaseView,
    form: &FormData,
    errors: &[FieldError],
) -> Response {
    let staff = super::staff(app, v).await;
    let people = participants(v, &staff);
    let mut inner = String::new();
    inner.push_str(
        &DateInput {
            id: "at",
            name: "at",
            legend: "When did it start?",
            value: form.get("at"),
            with_time: true,
        }
        .render(errors),
    );
    let place = [form.get("place").to_string()];
    inner.push_str(
        &Choices {
            id: "place",
            name: "place",
            legend: "Where?",
            options: &place_options(),
            checked: &place,
            multiple: false,
            inline: false,
            hint: None,
        }
        .render(errors),
    );
    let present = form.all("attendees");
    inner.push_str(
        &Choices {
            id: "attendees",
            name: "attendees",
            legend: "Who came?",
            options: &people,
            checked: &present,
            multiple: true,
            inline: false,
            hint: Some("Select everyone who was there. You can change this later."),
        }
        .render(errors),
    );
    inner.push_str(&html::button("Start the meeting record"));
    let heading = format!(
        r#"<span class="nhsuk-caption-l">{}</span><h1>Record a meeting</h1>"#,
        esc(&v.person.name)
    );
    super::case_form_page(
        app,
        session,
        &v.case_id,
        "Record a meeting",
        &heading,
        "meetings",
        &inner,
        errors,
    )
    .await
}

/// `GET /case/:id/meetings/new`.
pub async fn new_form(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
) -> PageResult {
    let case = case_id(&id)?;
    let v = app.profile().await.view(case, "record meeting")?;
    let now = dates::input_value(time::OffsetDateTime::now_utc(), &app.config.zone);
    let mut defaults = vec![
        ("at".to_string(), now),
        ("place".to_string(), Place::Home.to_string()),
        ("attendees".to_string(), Participant::Person.key()),
    ];
    if let Some((me, _)) = super::me(&app).await {
        defaults.push(("attendees".into(), format!("practitioner:{me}")));
    }
    Ok(new_page(&app, &session, &v, &FormData(defaults), &[]).await)
}

/// `POST /case/:id/meetings`.
pub async fn create(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let form = FormData::from(form);
    let mut errors = Vec::new();
    let at = match dates::parse_input(form.get("at"), &app.config.zone) {
        Ok(at) => Some(at),
        Err(polyphony_core::model::ModelError::LocalTime { reason, .. }) => {
            errors.push(FieldError::new("at", &reason));
            None
        }
        Err(_) => {
            errors.push(FieldError::new(
                "at",
                "Enter when the meeting started, as a date and time (UK time)",
            ));
            None
        }
    };
    let place = form.get("place").parse::<Place>();
    if place.is_err() {
        errors.push(FieldError::new(
            "place",
            "Choose where the meeting took place",
        ));
    }
    let attendees: Result<Vec<Participant>, _> =
        form.all("attendees").iter().map(|a| a.parse()).collect();
    if attendees.is_err() {
        errors.push(FieldError::new(
            "attendees",
            "Choose who came from the list",
        ));
    }
    if let (Some(at), Ok(place), Ok(attendees), true) = (at, place, attendees, errors.is_empty()) {
        // Colleagues from the team list are noted with their roles.
        let v = app.profile().await.lookup(case)?;
        let staff = super::staff(&app, &v).await.members();
        match app
            .edit(case, |d| {
                d.add_meeting_with(
                    NewMeeting {
                        at,
                        place,
                        attendees,
                    },
                    &staff,
                )
            })
            .await
        {
            Ok(mid) => {
                return Ok(done(
                    &app,
                    &session,
                    "Meeting recorded",
                    &format!("/case/{case}/meeting/{mid}"),
                ))
            }
            Err(e) => errors.push(field_error("attendees", &e)),
        }
    }
    let v = app.profile().await.view(case, "record meeting")?;
    Ok(new_page(&app, &session, &v, &form, &errors).await)
}

/// `GET /case/:id/meeting/:mid`.
pub async fn show(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, mid)): Path<(String, String)>,
) -> PageResult {
    meeting_page(&app, &session, &id, &mid, &[]).await
}

async fn meeting_page(
    app: &App,
    session: &SessionCtx,
    id: &str,
    mid: &str,
    errors: &[FieldError],
) -> PageResult {
    let case = case_id(id)?;
    let v = app.profile().await.view(case, "meeting")?;
    let m = find_meeting(&v, mid)?;
    let staff = super::staff(app, &v).await;
    let content = render_meeting(
        app,
        &v,
        &m,
        &staff,
        &session.csrf,
        app.case_gen(case),
        errors,
    );
    let title = meeting_title(app, &m);
    let back = format!("/case/{case}");
    Ok(render(
        app,
        session,
        PageParts {
            title: &title,
            back: Some((&back, "Back to the case")),
            content,
            has_errors: !errors.is_empty(),
            body_class: "",
        },
    )
    .await)
}

/// `POST /case/:id/meeting/:mid/state`: held, cancelled, did not attend, or planned again. The
/// model refuses "held" for a meeting still in the future; the meeting page then shows why.
pub async fn set_state(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, mid)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let meeting = entry_id(&mid)?;
    let form = FormData::from(form);
    let back = if form.get("back") == "case" {
        format!("/case/{case}#meetings")
    } else {
        format!("/case/{case}/meeting/{meeting}#state-heading")
    };
    let errors = match form.get("state").parse::<MeetingState>() {
        Ok(state) => match app
            .edit(case, |d| d.set_meeting_state(&meeting, state))
            .await
        {
            Ok(()) => {
                let said = match state {
                    MeetingState::Held => "Recorded that the meeting took place",
                    MeetingState::Cancelled => "Recorded that the meeting was cancelled",
                    MeetingState::DidNotAttend => "Recorded that the person did not attend",
                    MeetingState::Planned => "The meeting is planned",
                };
                return Ok(done(&app, &session, said, &back));
            }
            Err(e) => vec![field_error("state", &e)],
        },
        Err(_) => vec![FieldError::new(
            "state",
            "Choose whether the meeting took place, was cancelled or the person did not attend",
        )],
    };
    meeting_page(&app, &session, &id, &mid, &errors).await
}

/// The meeting page's content.
pub fn render_meeting(
    app: &App,
    v: &CaseView,
    m: &MeetingView,
    staff: &super::Staff,
    csrf: &str,
    gen: u64,
    errors: &[FieldError],
) -> String {
    let base = format!("/case/{}/meeting/{}", v.case_id, m.meta.id);
    let mut s = error_summary(errors);
    s.push_str(&conflicts_banner(v));
    if let Some(mark) = m
        .meta
        .entered_in_error
        .as_ref()
        .filter(|_| m.meta.withheld())
    {
        // Nothing of what it said: only that a meeting was here, and who removed it, when, why.
        let _ = write!(
            s,
            r#"<span class="nhsuk-caption-l">{}</span><h1>Meeting removed from this record</h1>{}"#,
            esc(&v.person.name),
            removed_note(app, "A meeting", mark)
        );
        return s;
    }
    s.push_str(&meeting_summary(app, v, m));
    if let Some(mark) = &m.meta.entered_in_error {
        s.push_str(&struck_through(app, v, m, mark));
        return s;
    }
    if awaits_outcome(m) {
        let _ = write!(
            s,
            r#"<div class="nhsuk-warning-callout" id="state-heading"><h2 class="nhsuk-warning-callout__label"><span role="text"><span class="nhsuk-u-visually-hidden">Important: </span>Did this meeting take place?</span></h2><p>Its time has passed. Until you say, it does not count as a meeting held.</p>{}</div>"#,
            state_form(m, &v.case_id, csrf, "state", "meeting", errors)
        );
    }
    s.push_str(&attendance_form(v, m, staff, &base, csrf));
    s.push_str(&editors(app, m, &base, csrf, gen));
    if !awaits_outcome(m) {
        s.push_str(r#"<h2 id="state-heading">Where this meeting stands</h2>"#);
        s.push_str(&state_form(m, &v.case_id, csrf, "state", "meeting", errors));
    }
    s.push_str(&next_meeting_form(app, m, &base, csrf));
    s.push_str(&super::files::of_meeting(v, m.meta.id));
    let _ = write!(
        s,
        r#"<h2>At the end of the meeting</h2><p>Go through the notes with everyone and record whether each person confirms them or wants to add their own words.</p><a class="nhsuk-button" href="{base}/readback" role="button" draggable="false">Read back the notes</a>"#
    );
    let _ = write!(
        s,
        r#"<p><a href="/case/{}/entry/{}/error">Mark this meeting as entered in error</a></p>"#,
        esc(&v.case_id),
        esc(m.meta.id)
    );
    s
}

/// The meeting's title, who was not there, and a summary: where it stands, where it was, who
/// recorded it, when the next one is.
fn meeting_summary(app: &App, v: &CaseView, m: &MeetingView) -> String {
    let mut s = format!(
        r#"<span class="nhsuk-caption-l">{}</span><h1>{}</h1>"#,
        esc(&v.person.name),
        esc(meeting_title(app, m))
    );
    if let Some(absent) = not_present(v, m) {
        let _ = write!(
            s,
            r#"<div class="nhsuk-inset-text" id="not-present"><span class="nhsuk-u-visually-hidden">Information: </span><p>{}</p></div>"#,
            esc(&absent)
        );
    }
    let place = place_options()
        .into_iter()
        .find(|(p, _)| *p == m.place.to_string())
        .map(|(_, l)| l)
        .unwrap_or_else(|| m.place.to_string());
    let next = m
        .next_meeting
        .as_deref()
        .map(|t| dates::long_stored(t, &app.config.zone))
        .unwrap_or_else(|| "Not planned yet".into());
    let staff: Vec<String> = m
        .staff_present()
        .map(|st| format!("{} ({})", st.name, st.role.label()))
        .collect();
    let staff = if staff.is_empty() {
        r#"<span class="app-muted">None noted from the team list</span>"#.to_string()
    } else {
        esc(staff.join(", "))
    };
    s.push_str(&html::summary_list(&[
        (
            "Where it stands".into(),
            format!("{} {}", state_tag(&m.state), esc(state_words(app, m))),
        ),
        ("Place".into(), esc(&place)),
        ("Staff present".into(), staff),
        (
            "Recorded by".into(),
            esc(by_line(app, &m.meta.created_by, &m.meta.created_at)),
        ),
        ("Next meeting".into(), esc(&next)),
    ]));
    s
}

/// A meeting marked entered in error: why, then who came and its texts struck through but
/// readable; nothing can be changed.
fn struck_through(app: &App, v: &CaseView, m: &MeetingView, mark: &ErrorMark) -> String {
    let mut s = format!(
        r#"<div class="app-in-error">{}{}<h2>Who came</h2><p><s>{}</s></p>"#,
        in_error_note(app, mark),
        super::wrong_person_link(&v.case_id, &m.meta.id.to_string(), "this meeting"),
        esc(m
            .attendees
            .iter()
            .map(|a| participant_name(v, a))
            .collect::<Vec<_>>()
            .join(", "))
    );
    for (k, t) in [
        (NoteKind::Notes, &m.notes),
        (NoteKind::Reflections, &m.reflections),
        (NoteKind::Agreed, &m.agreed),
    ] {
        let _ = write!(
            s,
            "<h2>{}</h2><s>{}</s>{}",
            kind_label(k),
            text_or_none(t),
            later_changes(app, m, k)
        );
    }
    s.push_str("</div>");
    s
}

/// Who came: everyone who can be recorded as present, ticked if they were.
fn attendance_form(
    v: &CaseView,
    m: &MeetingView,
    staff: &super::Staff,
    base: &str,
    csrf: &str,
) -> String {
    let people = participants(v, staff);
    // Someone recorded as present who is no longer offered (left the network) stays listed.
    let mut options = people.clone();
    for a in &m.attendees {
        let key = a.to_string();
        if !options.iter().any(|(k, _)| *k == key) {
            options.push((key, participant_name(v, a)));
        }
    }
    let present: Vec<String> = m.attendees.iter().map(|a| a.to_string()).collect();
    let inner = format!(
        "{}{}",
        Choices {
            id: "attendees",
            name: "attendees",
            legend: "Who came",
            options: &options,
            checked: &present,
            multiple: true,
            inline: false,
            hint: None,
        }
        .render(&[]),
        html::secondary_button("Save who came")
    );
    format!(
        r#"<h2 id="attendees-heading">Who came</h2>{}"#,
        html::post_form(&format!("{base}/attendance"), csrf, &inner)
    )
}

/// The notes, reflections and agreements editors: each an ordinary form, live with the page
/// script (generation `gen` tells it what it has seen).
fn editors(app: &App, m: &MeetingView, base: &str, csrf: &str, gen: u64) -> String {
    let mut s = format!(
        r#"<div class="app-live" data-live-url="{base}/text" data-gen="{gen}"><p class="app-live__status nhsuk-body-s" id="live-status" aria-live="polite"></p>"#
    );
    for (k, t) in [
        (NoteKind::Notes, &m.notes),
        (NoteKind::Reflections, &m.reflections),
        (NoteKind::Agreed, &m.agreed),
    ] {
        let id = k.as_str();
        let inner = format!(
            r#"<input type="hidden" name="kind" value="{id}"><input type="hidden" name="base" value="{b}" data-base-for="{id}">{area}{btn}"#,
            b = esc(t),
            area = html::TextArea {
                id,
                name: "text",
                label: kind_label(k),
                value: t,
                hint: Some(kind_hint(k)),
                rows: 8,
                attrs: &format!(r#"data-live-kind="{id}" spellcheck="true""#)
            }
            .render(&[]),
            btn = html::secondary_button(&format!("Save {}", kind_label(k).to_lowercase())),
        );
        let _ = write!(
            s,
            r#"<h2 id="{id}-heading">{}</h2>{}{}"#,
            kind_label(k),
            html::post_form(&format!("{base}/text"), csrf, &inner),
            later_changes(app, m, k)
        );
    }
    s.push_str("</div>");
    s
}

/// The form to set when the next meeting is.
fn next_meeting_form(app: &App, m: &MeetingView, base: &str, csrf: &str) -> String {
    let next_value = m
        .next_meeting
        .as_deref()
        .and_then(dates::parse_stored)
        .map(|t| dates::input_value(t, &app.config.zone))
        .unwrap_or_default();
    let inner = format!(
        "{}{}",
        DateInput {
            id: "next_meeting",
            name: "next_meeting",
            legend: "When is the next meeting?",
            value: &next_value,
            with_time: true,
        }
        .render(&[]),
        html::secondary_button("Save next meeting")
    );
    format!(
        r#"<h2 id="next-heading">Next meeting</h2>{}"#,
        html::post_form(&format!("{base}/next"), csrf, &inner)
    )
}

/// `POST /case/:id/meeting/:mid/attendance`: mark each person present or absent as ticked.
pub async fn attendance(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, mid)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let meeting = entry_id(&mid)?;
    let form = FormData::from(form);
    let v = app.profile().await.view(case, "meeting")?;
    let m = find_meeting(&v, &mid)?;
    let staff = super::staff(&app, &v).await;
    let ticked = form.all("attendees");
    let mut everyone: Vec<String> = participants(&v, &staff)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    everyone.extend(m.attendees.iter().map(|a| a.to_string()));
    everyone.sort();
    everyone.dedup();
    for key in everyone {
        let present = ticked.contains(&key);
        if present == m.attendees.iter().any(|a| a.to_string() == key) {
            continue;
        }
        let who: Participant = key
            .parse()
            .map_err(|e: polyphony_core::model::ModelError| PageError::NotFound(e.to_string()))?;
        // A colleague from the team list is noted with their role.
        match staff.member(who) {
            Some(member) => {
                app.edit(case, |d| d.set_staff_attendance(&meeting, &member, present))
                    .await?
            }
            None => {
                app.edit(case, |d| d.set_attendance(&meeting, who, present))
                    .await?
            }
        }
    }
    Ok(done(
        &app,
        &session,
        "Attendance saved",
        &format!("/case/{case}/meeting/{meeting}#attendees-heading"),
    ))
}

/// `POST /case/:id/meeting/:mid/next`.
pub async fn next(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, mid)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let meeting = entry_id(&mid)?;
    let form = FormData::from(form);
    let back = format!("/case/{case}/meeting/{meeting}#next-heading");
    let Ok(at) = dates::parse_input(form.get("next_meeting"), &app.config.zone) else {
        return Ok(done(
            &app,
            &session,
            "Enter the next meeting's date and time (UK time) to save it",
            &back,
        ));
    };
    app.edit(case, |d| d.set_next_meeting(&meeting, at)).await?;
    Ok(done(&app, &session, "Next meeting saved", &back))
}

fn text_of(m: &MeetingView, k: NoteKind) -> &str {
    match k {
        NoteKind::Notes => &m.notes,
        NoteKind::Reflections => &m.reflections,
        NoteKind::Agreed => &m.agreed,
    }
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// `POST /case/:id/meeting/:mid/text`: save one text, merged with whatever arrived meanwhile.
/// Answers JSON to the page script, a redirect to a plain form.
pub async fn save_text(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, mid)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let meeting = entry_id(&mid)?;
    let form = FormData::from(form);
    let kind: NoteKind = form
        .get("kind")
        .parse()
        .map_err(|e: polyphony_core::model::ModelError| PageError::NotFound(e.to_string()))?;
    let base = form.get("base").replace("\r\n", "\n");
    let ours = form.get("text").replace("\r\n", "\n");
    let result = app
        .edit(case, |d| {
            let v = d.view();
            let theirs = v
                .meetings
                .iter()
                .find(|m| m.meta.id == meeting)
                .map(|m| text_of(m, kind).to_string())
                .unwrap_or_default();
            let merged = merge3(&base, &ours, &theirs);
            if merged != theirs {
                d.edit_text(&meeting, kind, &merged)?;
            }
            Ok(merged)
        })
        .await;
    if wants_json(&headers) {
        return Ok(match result {
            Ok(text) => Json(serde_json::json!({
                "ok": true, "gen": app.case_gen(case), "kind": kind.as_str(), "text": text
            }))
            .into_response(),
            Err(e) => (
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                Json(serde_json::json!({ "ok": false, "error": e.to_string() })),
            )
                .into_response(),
        });
    }
    let back = format!("/case/{case}/meeting/{meeting}#{}-heading", kind.as_str());
    match result {
        Ok(_) => Ok(done(
            &app,
            &session,
            &format!("{} saved", kind_label(kind)),
            &back,
        )),
        Err(e) => Ok(done(&app, &session, &format!("Not saved: {e}"), &back)),
    }
}

/// The query of a live poll.
#[derive(Debug, Deserialize)]
pub struct Since {
    since: Option<u64>,
}

/// `GET /case/:id/meeting/:mid/text?since=N`: the meeting's texts, if they changed since `N`.
pub async fn poll_text(
    State(app): State<AppState>,
    Path((id, mid)): Path<(String, String)>,
    Query(q): Query<Since>,
) -> Result<Response, PageError> {
    let case = case_id(&id)?;
    let gen = app.case_gen(case);
    if q.since == Some(gen) {
        return Ok(Json(serde_json::json!({ "gen": gen, "changed": false })).into_response());
    }
    let v = app.peek(case).await?;
    let m = find_meeting(&v, &mid)?;
    let unsynced = app.overview().await.case(&case).map(|c| c.words());
    Ok(Json(serde_json::json!({
        "gen": gen,
        "changed": true,
        "in_error": m.meta.entered_in_error.is_some(),
        "fields": { "notes": m.notes, "reflections": m.reflections, "agreed": m.agreed },
        "case_sync": unsynced,
    }))
    .into_response())
}

/// `GET /case/:id/meeting/:mid/readback`: go through the notes with the network.
pub async fn readback(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, mid)): Path<(String, String)>,
) -> PageResult {
    let case = case_id(&id)?;
    let v = app.profile().await.view(case, "meeting read-back")?;
    let m = find_meeting(&v, &mid)?;
    let content = render_readback(&app, &v, &m, &session.csrf, &[]);
    let back = format!("/case/{case}/meeting/{mid}");
    Ok(render(
        &app,
        &session,
        PageParts {
            title: "Read back the notes",
            back: Some((&back, "Back to the meeting")),
            content,
            has_errors: false,
            body_class: "",
        },
    )
    .await)
}

/// The read-back screen: the notes in large print, then one form per person present.
pub fn render_readback(
    app: &App,
    v: &CaseView,
    m: &MeetingView,
    csrf: &str,
    errors: &[FieldError],
) -> String {
    let base = format!("/case/{}/meeting/{}", v.case_id, m.meta.id);
    let mut s = error_summary(errors);
    if let Some(mark) = m
        .meta
        .entered_in_error
        .as_ref()
        .filter(|_| m.meta.withheld())
    {
        s.push_str(&removed_note(app, "A meeting", mark));
        return s;
    }
    let _ = write!(
        s,
        r#"<span class="nhsuk-caption-l">{}</span><h1>Read back the notes</h1><p>Read the notes aloud, or show this screen. Ask each person whether the notes say what happened, and record their answer. If they want to add something, write it in their own words.</p>"#,
        esc(meeting_title(app, m))
    );
    let _ = write!(
        s,
        r#"<div class="app-readback"><h2>Notes</h2>{}<h2>Reflections</h2>{}<h2>What was agreed</h2>{}</div>"#,
        text_or_none(&m.notes),
        text_or_none(&m.reflections),
        text_or_none(&m.agreed)
    );
    s.push_str("<h2>Each person’s answer</h2>");
    if m.attendees.is_empty() {
        let _ = write!(
            s,
            r#"<p>No one is recorded as present. <a href="{base}#attendees-heading">Record who came</a> first.</p>"#
        );
    }
    for (i, who) in super::in_order(v, &m.attendees).iter().enumerate() {
        s.push_str(&readback_card(app, v, m, i, who, csrf, errors));
    }
    s
}

/// One person present, the `i`th: their answer so far, if any, and the form to record it.
fn readback_card(
    app: &App,
    v: &CaseView,
    m: &MeetingView,
    i: usize,
    who: &Stored<Participant>,
    csrf: &str,
    errors: &[FieldError],
) -> String {
    let name = participant_name(v, who);
    let existing = m.readback.iter().find(|r| &r.participant == who);
    let mut s = format!(
        r#"<div class="nhsuk-card app-readback__person"><div class="nhsuk-card__content"><h3 class="nhsuk-card__heading">{}</h3>"#,
        esc(&name)
    );
    if let Some(r) = existing {
        let answer = if r.response.is(ReadbackResponse::Confirmed) {
            "Confirmed the notes".to_string()
        } else {
            "Added their own words".to_string()
        };
        let _ = write!(
            s,
            r#"<p><strong>{}</strong> <span class="app-muted">(recorded by {})</span></p>"#,
            esc(&answer),
            esc(by_line(app, &r.recorded_by, &r.at))
        );
        if let Some(w) = &r.words {
            let _ = write!(
                s,
                r#"<blockquote class="app-own-words">{}</blockquote>"#,
                html::esc_multiline(w)
            );
        }
    }
    let base = format!("/case/{}/meeting/{}", v.case_id, m.meta.id);
    s.push_str(&html::post_form(
        &format!("{base}/readback"),
        csrf,
        &answer_fields(i, who, &name, existing, errors),
    ));
    s.push_str("</div></div>");
    s
}

/// The fields of the `i`th person's answer: confirms or adds their own words, and the words.
fn answer_fields(
    i: usize,
    who: &Stored<Participant>,
    name: &str,
    existing: Option<&ReadbackView>,
    errors: &[FieldError],
) -> String {
    let rid = format!("response-{i}");
    let wid = format!("words-{i}");
    let options = vec![
        (
            ReadbackResponse::Confirmed.to_string(),
            "Confirms the notes".to_string(),
        ),
        (
            ReadbackResponse::AddedWords.to_string(),
            "Wants to add their own words".to_string(),
        ),
    ];
    let checked = existing
        .map(|r| vec![r.response.to_string()])
        .unwrap_or_default();
    format!(
        r#"<input type="hidden" name="who" value="{}"><input type="hidden" name="index" value="{i}">{}{}{}"#,
        esc(who),
        Choices {
            id: &rid,
            name: "response",
            legend: &format!("What does {name} say?"),
            options: &options,
            checked: &checked,
            multiple: false,
            inline: false,
            hint: None,
        }
        .render(errors),
        html::TextArea {
            id: &wid,
            name: "words",
            label: "Their words (if they add any)",
            value: existing.and_then(|r| r.words.as_deref()).unwrap_or(""),
            hint: None,
            rows: 3,
            attrs: ""
        }
        .render(errors),
        html::secondary_button(&format!("Save {name}’s answer")),
    )
}

/// `POST /case/:id/meeting/:mid/readback`.
pub async fn readback_save(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, mid)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let meeting = entry_id(&mid)?;
    let form = FormData::from(form);
    let i = form.get("index").to_string();
    let mut errors = Vec::new();
    let who: Result<Participant, _> = form.get("who").parse();
    let response: Result<ReadbackResponse, _> = form.get("response").parse();
    match (who, response) {
        (Ok(who), Ok(response)) => {
            let words = form.opt("words");
            match app
                .edit(case, |d| d.record_readback(&meeting, who, response, words))
                .await
            {
                Ok(()) => {
                    let v = app.peek(case).await?;
                    return Ok(done(
                        &app,
                        &session,
                        &format!(
                            "{}’s answer recorded",
                            participant_name(&v, &Stored::Known(who))
                        ),
                        &format!("/case/{case}/meeting/{meeting}/readback"),
                    ));
                }
                Err(e) => errors.push(field_error(&format!("words-{i}"), &e)),
            }
        }
        (_, Err(_)) => errors.push(FieldError::new(
            &format!("response-{i}"),
            "Choose whether they confirm the notes or add their own words",
        )),
        (Err(_), _) => errors.push(FieldError::new(
            &format!("response-{i}"),
            "Choose who is answering",
        )),
    }
    let v = app.profile().await.view(case, "meeting read-back")?;
    let m = find_meeting(&v, &mid)?;
    let content = render_readback(&app, &v, &m, &session.csrf, &errors);
    let back = format!("/case/{case}/meeting/{mid}");
    Ok(render(
        &app,
        &session,
        PageParts {
            title: "Read back the notes",
            back: Some((&back, "Back to the meeting")),
            content,
            has_errors: true,
            body_class: "",
        },
    )
    .await)
}
