//! Decisions: propose one, record each participant's position in their own words, move its status,
//! and track the actions that follow. Disagreement is recorded, never overwritten: each person's
//! latest position stands beside everyone else's.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Form};
use polyphony_core::model::view::{ActionView, CaseView, DecisionView, PositionView};
use polyphony_core::model::{parse_date, DecisionStatus, Participant, Stance, Stored};
use polyphony_core::EntryId;

use super::conflicts_banner;
use super::{
    by_line, case_id, done, entry_id, field_error, in_error_note, participant_name, participants,
    removed_note, render, AppState, FormData, PageError, PageParts, PageResult,
};
use crate::auth::SessionCtx;
use crate::dates;
use crate::html::{
    self, error_summary, esc, esc_multiline, tag, Choices, DateInput, FieldError, Input,
};
use crate::state::App;

/// A decision's status as a coloured tag.
pub fn status_tag(status: &Stored<DecisionStatus>) -> String {
    let written = status.to_string();
    let (label, colour) = match status.known() {
        Some(DecisionStatus::Proposed) => ("Proposed", "blue"),
        Some(DecisionStatus::Agreed) => ("Agreed", "green"),
        Some(DecisionStatus::Revisited) => ("Being revisited", "yellow"),
        Some(DecisionStatus::Withdrawn) => ("Withdrawn", "grey"),
        Some(DecisionStatus::TeamDecided) => {
            ("Decided by the team; the person disagrees", "orange")
        }
        None => (written.as_str(), "grey"),
    };
    tag(label, colour)
}

fn stance_words(stance: &Stored<Stance>) -> String {
    match stance.known() {
        Some(Stance::Agree) => "Agrees".into(),
        Some(Stance::Disagree) => "Disagrees".into(),
        Some(Stance::Unsure) => "Not sure yet".into(),
        None => stance.to_string(),
    }
}

/// A stance as a past event, for a participant's history: "first unsure, then agreed".
fn stance_then(stance: &Stored<Stance>) -> String {
    match stance.known() {
        Some(Stance::Agree) => "agreed".into(),
        Some(Stance::Disagree) => "disagreed".into(),
        Some(Stance::Unsure) => "unsure".into(),
        None => stance.to_string(),
    }
}

/// A participant who changed their position keeps the earlier ones: "first unsure (3 March
/// 2026), then agreed (10 March 2026)". Empty for someone who has taken one position only.
pub fn position_history(app: &App, p: &PositionView) -> String {
    if p.earlier.is_empty() {
        return String::new();
    }
    let day = |at: &Option<String>| {
        at.as_deref()
            .and_then(dates::parse_stored)
            .map(|t| format!(" ({})", app.config.zone.long_date(t)))
            .unwrap_or_default()
    };
    let steps: Vec<String> = p
        .earlier
        .iter()
        .chain(std::iter::once(p))
        .map(|x| format!("{}{}", stance_then(&x.stance), day(&x.at)))
        .collect();
    let mut s = format!("first {}", steps[0]);
    for step in &steps[1..] {
        s.push_str(", then ");
        s.push_str(step);
    }
    s
}

fn find_decision(v: &CaseView, id: &str) -> Result<DecisionView, PageError> {
    let wanted = id.parse::<EntryId>().ok();
    v.decisions
        .iter()
        .find(|d| Some(d.meta.id) == wanted)
        .cloned()
        .ok_or_else(|| PageError::NotFound(format!("there is no decision '{id}' in this case")))
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
    let mut inner = html::TextArea {
        id: "decision-text",
        name: "text",
        label: "What is being decided?",
        value: form.get("text"),
        hint: Some("Write it so that everyone in the meeting would recognise it."),
        rows: 4,
        attrs: "",
    }
    .render(errors);
    inner.push_str(&html::select(
        "proposed_by",
        "proposed_by",
        "Who proposed it?",
        &people,
        form.get("proposed_by"),
        errors,
    ));
    inner.push_str(&html::button("Propose decision"));
    let heading = format!(
        r#"<span class="nhsuk-caption-l">{}</span><h1>Propose a decision</h1>"#,
        esc(&v.person.name)
    );
    super::case_form_page(
        app,
        session,
        &v.case_id,
        "Propose a decision",
        &heading,
        "decisions",
        &inner,
        errors,
    )
    .await
}

/// `GET /case/:id/decisions/new`.
pub async fn new_form(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
) -> PageResult {
    let case = case_id(&id)?;
    let v = app.profile().await.view(case, "propose decision")?;
    Ok(new_page(
        &app,
        &session,
        &v,
        &FormData(vec![("proposed_by".into(), "person".into())]),
        &[],
    )
    .await)
}

/// `POST /case/:id/decisions`.
pub async fn create(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let form = FormData::from(form);
    let mut errors = Vec::new();
    if form.opt("text").is_none() {
        errors.push(FieldError::new(
            "decision-text",
            "Enter what is being decided",
        ));
    }
    let by: Result<Participant, _> = form.get("proposed_by").parse();
    if by.is_err() {
        errors.push(FieldError::new("proposed_by", "Choose who proposed it"));
    }
    if let (Ok(by), true) = (by, errors.is_empty()) {
        let text = form.get("text").to_string();
        match app.edit(case, |d| d.propose_decision(&text, by)).await {
            Ok(did) => {
                return Ok(done(
                    &app,
                    &session,
                    "Decision proposed. Now record where each person stands.",
                    &format!("/case/{case}/decision/{did}"),
                ))
            }
            Err(e) => errors.push(field_error("decision-text", &e)),
        }
    }
    let v = app.profile().await.view(case, "propose decision")?;
    Ok(new_page(&app, &session, &v, &form, &errors).await)
}

/// `GET /case/:id/decision/:did`.
pub async fn show(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, did)): Path<(String, String)>,
) -> PageResult {
    page(&app, &session, &id, &did, &FormData::default(), &[]).await
}

async fn page(
    app: &App,
    session: &SessionCtx,
    id: &str,
    did: &str,
    form: &FormData,
    errors: &[FieldError],
) -> PageResult {
    let case = case_id(id)?;
    let v = app.profile().await.view(case, "decision")?;
    let d = find_decision(&v, did)?;
    let staff = super::staff(app, &v).await;
    let content = render_decision(app, &v, &d, &staff, &session.csrf, form, errors);
    let back = format!("/case/{case}#decisions");
    Ok(render(
        app,
        session,
        PageParts {
            title: "Decision",
            back: Some((&back, "Back to the case")),
            content,
            has_errors: !errors.is_empty(),
            body_class: "",
        },
    )
    .await)
}

/// The decision page's content.
pub fn render_decision(
    app: &App,
    v: &CaseView,
    d: &DecisionView,
    staff: &super::Staff,
    csrf: &str,
    form: &FormData,
    errors: &[FieldError],
) -> String {
    let base = format!("/case/{}/decision/{}", v.case_id, d.meta.id);
    let mut s = error_summary(errors);
    s.push_str(&conflicts_banner(v));
    if let Some(mark) = d
        .meta
        .entered_in_error
        .as_ref()
        .filter(|_| d.meta.withheld())
    {
        let _ = write!(
            s,
            r#"<span class="nhsuk-caption-l">Decision for {}</span><h1>Decision removed from this record</h1>{}"#,
            esc(&v.person.name),
            removed_note(app, "A decision", mark)
        );
        return s;
    }
    s.push_str(&heading(app, v, d));
    s.push_str(&positions_table(app, v, d));
    // An entry in error can be read, not changed: no forms.
    if d.meta.entered_in_error.is_some() {
        return s;
    }
    let people = participants(v, staff);
    s.push_str(&position_form(&base, csrf, &people, form, errors));
    s.push_str(&status_history(app, d));
    s.push_str(&status_form(d, &base, csrf, form, errors));
    s.push_str(&actions_list(app, v, d, &base, csrf));
    s.push_str(&action_form(&base, csrf, &people, form, errors));
    let _ = write!(
        s,
        r#"<p><a href="/case/{}/entry/{}/error">Mark this decision as entered in error</a></p>"#,
        esc(&v.case_id),
        esc(d.meta.id)
    );
    s
}

/// The decision's words (struck through if in error), its status, who proposed and wrote it, and
/// what to know before going on: that it is in error, or agreed without the person.
fn heading(app: &App, v: &CaseView, d: &DecisionView) -> String {
    let text = if d.meta.entered_in_error.is_some() {
        format!("<s>{}</s>", esc(&d.text))
    } else {
        esc(&d.text)
    };
    let mut s = format!(
        r#"<span class="nhsuk-caption-l">Decision for {}</span><h1 class="app-decision-text">{text}</h1><p>{} <span class="app-muted">Proposed by {}; written by {}</span></p>"#,
        esc(&v.person.name),
        status_tag(&d.status),
        esc(d
            .proposed_by
            .as_ref()
            .map(|p| participant_name(v, p))
            .unwrap_or_else(|| "someone".into())),
        esc(by_line(app, &d.meta.created_by, &d.meta.created_at)),
    );
    if let Some(mark) = &d.meta.entered_in_error {
        s.push_str(&format!(
            r#"<div class="app-in-error">{}{}</div>"#,
            in_error_note(app, mark),
            super::wrong_person_link(&v.case_id, &d.meta.id.to_string(), "this decision")
        ));
    }
    if d.agreed_without_person {
        s.push_str(r#"<div class="nhsuk-card nhsuk-card--warning"><div class="nhsuk-card__content"><h2 class="nhsuk-card__heading">Agreed without the person</h2><p class="nhsuk-card__description">This decision is marked agreed, but the person’s own position is not “agree” (two devices changed it at the same time). Talk with them and record where they stand.</p></div></div>"#);
    }
    s
}

/// Where each person stands: one row per participant, their latest position beside everyone
/// else's, with how it changed.
fn positions_table(app: &App, v: &CaseView, d: &DecisionView) -> String {
    let mut s = String::from(r#"<h2 id="positions">Where each person stands</h2>"#);
    if d.positions.is_empty() {
        s.push_str("<p>No positions recorded yet.</p>");
        return s;
    }
    s.push_str(r#"<table class="nhsuk-table" id="positions-table"><caption class="nhsuk-table__caption nhsuk-u-visually-hidden">Positions</caption><thead class="nhsuk-table__head"><tr><th scope="col">Who</th><th scope="col">Position</th><th scope="col">In their own words</th><th scope="col">Recorded by</th></tr></thead><tbody class="nhsuk-table__body">"#);
    for p in &d.positions {
        let colour = match p.stance.known() {
            Some(Stance::Agree) => "green",
            Some(Stance::Disagree) => "red",
            _ => "yellow",
        };
        let words = p
            .words
            .as_deref()
            .map(|w| format!(r#"<q class="app-own-words">{}</q>"#, esc_multiline(w)))
            .unwrap_or_else(|| r#"<span class="app-muted">No words recorded</span>"#.into());
        let _ = write!(
            s,
            r#"<tr class="nhsuk-table__row"><td class="nhsuk-table__cell">{}</td><td class="nhsuk-table__cell">{}</td><td class="nhsuk-table__cell">{words}{}</td><td class="nhsuk-table__cell">{}</td></tr>"#,
            esc(participant_name(v, &p.participant)),
            tag(&stance_words(&p.stance), colour),
            earlier_positions(app, p),
            esc(by_line(app, &p.recorded_by, &p.at)),
        );
    }
    s.push_str("</tbody></table>");
    s
}

/// The form to record someone's position, in their own words.
fn position_form(
    base: &str,
    csrf: &str,
    people: &[(String, String)],
    form: &FormData,
    errors: &[FieldError],
) -> String {
    let stances: Vec<(String, String)> = Stance::ALL
        .iter()
        .map(|st| (st.as_str().to_string(), stance_words(&Stored::Known(*st))))
        .collect();
    let chosen_stance = [form.get("stance").to_string()];
    let inner = format!(
        "{}{}{}{}",
        html::select(
            "who",
            "who",
            "Whose position?",
            people,
            form.get("who"),
            errors
        ),
        Choices {
            id: "stance",
            name: "stance",
            legend: "Their position",
            options: &stances,
            checked: &chosen_stance,
            multiple: false,
            inline: true,
            hint: None,
        }
        .render(errors),
        html::TextArea {
            id: "words",
            name: "words",
            label: "In their own words",
            value: form.get("words"),
            hint: Some(
                "Write what they said, as they said it. Disagreement is part of the record."
            ),
            rows: 3,
            attrs: ""
        }
        .render(errors),
        html::button("Record position"),
    );
    format!(
        r#"<h3 id="record-position">Record a position</h3>{}"#,
        html::post_form(&format!("{base}/position"), csrf, &inner)
    )
}

/// The status heading and each change of status so far, with who made it and why.
fn status_history(app: &App, d: &DecisionView) -> String {
    let mut s = String::from(r#"<h2 id="status">Status</h2>"#);
    if d.status_history.is_empty() {
        return s;
    }
    s.push_str(r#"<ol class="app-timeline">"#);
    for h in &d.status_history {
        let _ = write!(
            s,
            r#"<li>{} <span class="app-muted">{}</span>{}</li>"#,
            status_tag(&h.status),
            esc(by_line(app, &h.by, &h.at)),
            h.note
                .as_deref()
                .map(|n| format!(": {}", esc(n)))
                .unwrap_or_default()
        );
    }
    s.push_str("</ol>");
    s
}

/// The form to change the status, the current one chosen.
fn status_form(
    d: &DecisionView,
    base: &str,
    csrf: &str,
    form: &FormData,
    errors: &[FieldError],
) -> String {
    let statuses: Vec<(String, String)> = DecisionStatus::ALL
        .iter()
        .map(|st| {
            (
                st.as_str().to_string(),
                match st {
                    DecisionStatus::Proposed => "Proposed",
                    DecisionStatus::Agreed => "Agreed (only when the person agrees)",
                    DecisionStatus::Revisited => "Being revisited",
                    DecisionStatus::Withdrawn => "Withdrawn",
                    DecisionStatus::TeamDecided => {
                        "Decided by the team while the person disagrees (say why below)"
                    }
                }
                .to_string(),
            )
        })
        .collect();
    let chosen = [d.status.to_string()];
    let inner = format!(
        "{}{}{}",
        Choices {
            id: "status-choice",
            name: "status",
            legend: "Change the status",
            options: &statuses,
            checked: &chosen,
            multiple: false,
            inline: false,
            hint: None,
        }
        .render(errors),
        Input::text(
            "status-note",
            "note",
            "Why (needed when the team decides while the person disagrees)",
            form.get("note")
        )
        .render(errors),
        html::secondary_button("Save status"),
    );
    html::post_form(&format!("{base}/status"), csrf, &inner)
}

/// The actions heading and the actions that follow from the decision.
fn actions_list(app: &App, v: &CaseView, d: &DecisionView, base: &str, csrf: &str) -> String {
    let mut s = String::from(r#"<h2 id="actions">Actions</h2>"#);
    if d.actions.is_empty() {
        s.push_str("<p>No actions yet.</p>");
        return s;
    }
    s.push_str(r#"<ul class="nhsuk-list app-entries">"#);
    for a in &d.actions {
        s.push_str(&action_item(app, v, a, base, csrf));
    }
    s.push_str("</ul>");
    s
}

/// One action as a list item: what, who and by when, done or not (with the button to change
/// it); struck through if in error, only a note if withheld.
fn action_item(app: &App, v: &CaseView, a: &ActionView, base: &str, csrf: &str) -> String {
    let owner = a
        .owner
        .as_ref()
        .map(|o| participant_name(v, o))
        .unwrap_or_default();
    let due = a
        .due
        .as_deref()
        .map(|x| format!(", due {}", dates::long_date(x)))
        .unwrap_or_default();
    if let Some(mark) = a
        .meta
        .entered_in_error
        .as_ref()
        .filter(|_| a.meta.withheld())
    {
        return format!("<li>{}</li>", removed_note(app, "An action", mark));
    }
    let line = format!("{} ({}{})", esc(&a.text), esc(&owner), esc(&due));
    if let Some(mark) = &a.meta.entered_in_error {
        return format!(
            r#"<li class="app-in-error"><s>{line}</s>{}</li>"#,
            in_error_note(app, mark)
        );
    }
    let toggle = html::post_form(
        &format!("{base}/action/{}/done", a.meta.id),
        csrf,
        &format!(
            r#"<input type="hidden" name="done" value="{}"><button class="nhsuk-button nhsuk-button--secondary nhsuk-button--small" type="submit">{}<span class="nhsuk-u-visually-hidden">: {}</span></button>"#,
            if a.done { "false" } else { "true" },
            if a.done {
                "Mark as not done"
            } else {
                "Mark as done"
            },
            esc(&a.text)
        ),
    );
    format!(
        r#"<li>{} {line} {toggle}<a class="app-small-link" href="/case/{}/entry/{}/error">Mark as entered in error<span class="nhsuk-u-visually-hidden"> (action: {})</span></a></li>"#,
        if a.done {
            tag("Done", "green")
        } else {
            tag("To do", "white")
        },
        esc(&v.case_id),
        esc(a.meta.id),
        esc(&a.text)
    )
}

/// The form to add an action: what, who, and by when.
fn action_form(
    base: &str,
    csrf: &str,
    people: &[(String, String)],
    form: &FormData,
    errors: &[FieldError],
) -> String {
    let inner = format!(
        "{}{}{}{}",
        Input::text(
            "action-text",
            "text",
            "What needs doing?",
            form.get("action_text")
        )
        .render(errors),
        html::select(
            "owner",
            "owner",
            "Who will do it?",
            people,
            form.get("owner"),
            errors
        ),
        DateInput {
            id: "due",
            name: "due",
            legend: "By when? (optional)",
            value: form.get("due"),
            with_time: false,
        }
        .render(errors),
        html::secondary_button("Add action"),
    );
    format!(
        "<h3>Add an action</h3>{}",
        html::post_form(&format!("{base}/actions"), csrf, &inner)
    )
}

/// Under a participant's current words: how their position changed, and what they said before.
fn earlier_positions(app: &App, p: &PositionView) -> String {
    let history = position_history(app, p);
    if history.is_empty() {
        return String::new();
    }
    let mut s = format!(
        r#"<p class="nhsuk-body-s app-position-history">Changed position: {}.</p>"#,
        esc(&history)
    );
    let said: Vec<String> = p
        .earlier
        .iter()
        .filter_map(|e| {
            let w = e.words.as_deref()?;
            Some(format!(
                r#"<li>Earlier ({}, recorded by {}): <q class="app-own-words">{}</q></li>"#,
                esc(stance_then(&e.stance)),
                esc(by_line(app, &e.recorded_by, &e.at)),
                esc_multiline(w)
            ))
        })
        .collect();
    if !said.is_empty() {
        let _ = write!(
            s,
            r#"<ul class="nhsuk-list nhsuk-body-s">{}</ul>"#,
            said.concat()
        );
    }
    s
}

/// `POST /case/:id/decision/:did/position`.
pub async fn position(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, did)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let decision = entry_id(&did)?;
    let form = FormData::from(form);
    let mut errors = Vec::new();
    let who: Result<Participant, _> = form.get("who").parse();
    let stance: Result<Stance, _> = form.get("stance").parse();
    if who.is_err() {
        errors.push(FieldError::new("who", "Choose whose position this is"));
    }
    if stance.is_err() {
        errors.push(FieldError::new(
            "stance",
            "Choose their position: agrees, disagrees or not sure yet",
        ));
    }
    if let (Ok(who), Ok(stance), true) = (who, stance, errors.is_empty()) {
        let words = form.opt("words");
        match app
            .edit(case, |d| d.record_position(&decision, who, stance, words))
            .await
        {
            Ok(()) => {
                return Ok(done(
                    &app,
                    &session,
                    "Position recorded",
                    &format!("/case/{case}/decision/{decision}#positions"),
                ))
            }
            Err(e) => errors.push(field_error("words", &e)),
        }
    }
    page(&app, &session, &id, &did, &form, &errors).await
}

/// `POST /case/:id/decision/:did/status`.
pub async fn status(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, did)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let decision = entry_id(&did)?;
    let form = FormData::from(form);
    let mut errors = Vec::new();
    match form.get("status").parse::<DecisionStatus>() {
        Ok(st) => {
            let note = form.opt("note");
            match app
                .edit(case, |d| d.set_decision_status(&decision, st, note))
                .await
            {
                Ok(()) => {
                    return Ok(done(
                        &app,
                        &session,
                        "Status saved",
                        &format!("/case/{case}/decision/{decision}#status"),
                    ))
                }
                Err(e) => errors.push(field_error("status-choice", &e)),
            }
        }
        Err(_) => errors.push(FieldError::new("status-choice", "Choose a status")),
    }
    page(&app, &session, &id, &did, &form, &errors).await
}

/// `POST /case/:id/decision/:did/actions`.
pub async fn add_action(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, did)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let decision = entry_id(&did)?;
    let form = FormData::from(form);
    let mut errors = Vec::new();
    let owner: Result<Participant, _> = form.get("owner").parse();
    if form.opt("text").is_none() {
        errors.push(FieldError::new("action-text", "Enter what needs doing"));
    }
    if owner.is_err() {
        errors.push(FieldError::new("owner", "Choose who will do it"));
    }
    let due = match form.opt("due") {
        Some(d) => match parse_date("due date", d) {
            Ok(d) => Some(d),
            Err(e) => {
                errors.push(FieldError::new("due", e.to_string()));
                None
            }
        },
        None => None,
    };
    if let (Ok(owner), true) = (owner, errors.is_empty()) {
        let text = form.get("text").to_string();
        match app
            .edit(case, |d| d.add_action(&decision, &text, owner, due))
            .await
        {
            Ok(_) => {
                return Ok(done(
                    &app,
                    &session,
                    "Action added",
                    &format!("/case/{case}/decision/{decision}#actions"),
                ))
            }
            Err(e) => errors.push(field_error("action-text", &e)),
        }
    }
    let mut shown = form.clone();
    shown
        .0
        .push(("action_text".into(), form.get("text").to_string()));
    page(&app, &session, &id, &did, &shown, &errors).await
}

/// `POST /case/:id/decision/:did/action/:aid/done`.
pub async fn action_done(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, did, aid)): Path<(String, String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let action = entry_id(&aid)?;
    let form = FormData::from(form);
    let is_done = form.get("done") == "true";
    app.edit(case, |d| d.set_action_done(&action, is_done))
        .await?;
    Ok(done(
        &app,
        &session,
        if is_done {
            "Action marked as done"
        } else {
            "Action marked as not done"
        },
        &format!("/case/{case}/decision/{did}#actions"),
    ))
}
