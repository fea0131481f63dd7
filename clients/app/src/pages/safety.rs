//! The team's safety notes on the case page: home-visit safety notes and safeguarding concerns,
//! in the person's copy like everything else, unless one practitioner asks, with the reason, and
//! a second confirms that a note is withheld from it (the copy then lists it as withheld).

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::{Extension, Form};
use polyphony_core::model::view::CaseView;
use polyphony_core::model::{CaseDoc, ModelError, TeamNoteKind, TeamNoteView};
use polyphony_core::EntryId;

use super::{
    by_line, case_id, done, entry_id, in_error_note, removed_note, AppState, FormData, PageResult,
};
use crate::auth::SessionCtx;
use crate::html::{self, esc, esc_multiline, Choices};
use crate::state::App;

/// The section of the case page: each note, where its withholding stands, the forms to ask for
/// it or confirm it, and the form to write a note.
pub fn section(app: &App, v: &CaseView, me: Option<&str>, csrf: &str) -> String {
    let mut s = String::from(r#"<h2 id="safety-notes">Notes about safety</h2>"#);
    let _ = write!(
        s,
        r#"<p class="nhsuk-body-s">These are in {}'s copy, like everything else, unless two practitioners agree to withhold one (the copy then says so).</p>"#,
        esc(&v.person.name)
    );
    if v.team_notes.is_empty() {
        s.push_str("<p>No safety notes yet.</p>");
    } else {
        s.push_str(r#"<ul class="nhsuk-list">"#);
        for n in &v.team_notes {
            s.push_str(&note_line(app, v, n, me, csrf));
        }
        s.push_str("</ul>");
    }
    let kinds: Vec<(String, String)> = TeamNoteKind::ALL
        .iter()
        .map(|k| (k.as_str().to_string(), k.label().to_string()))
        .collect();
    let inner = format!(
        "{}{}{}",
        Choices {
            id: "note-kind",
            name: "kind",
            legend: "Write a safety note",
            options: &kinds,
            checked: &[TeamNoteKind::HomeVisitSafety.as_str().to_string()],
            multiple: false,
            inline: false,
            hint: None,
        }
        .render(&[]),
        html::TextArea {
            id: "note-text",
            name: "text",
            label: "What the team needs to know",
            value: "",
            hint: None,
            rows: 3,
            attrs: r#"spellcheck="true""#,
        }
        .render(&[]),
        html::secondary_button("Save the note")
    );
    s.push_str(&html::post_form(
        &format!("/case/{}/notes", v.case_id),
        csrf,
        &inner,
    ));
    s
}

fn note_line(app: &App, v: &CaseView, n: &TeamNoteView, me: Option<&str>, csrf: &str) -> String {
    let kind = n.kind.label();
    if let Some(mark) = n
        .meta
        .entered_in_error
        .as_ref()
        .filter(|_| n.meta.withheld())
    {
        return format!("<li>{}</li>", removed_note(app, "A safety note", mark));
    }
    let text = if n.withheld_from_person() {
        // Not at a glance on a page that may be open in a meeting with the person.
        format!(
            r#"<details class="nhsuk-details"><summary class="nhsuk-details__summary"><span class="nhsuk-details__summary-text">Withheld from {}'s copy: show the words</span></summary><div class="nhsuk-details__text">{}</div></details>"#,
            esc(&v.person.name),
            esc_multiline(&n.text)
        )
    } else {
        esc_multiline(&n.text)
    };
    let body = format!(
        r#"<strong>{}</strong>: {text} <span class="nhsuk-body-s">({})</span>"#,
        esc(&kind),
        esc(by_line(app, &n.meta.created_by, &n.meta.created_at))
    );
    if let Some(mark) = &n.meta.entered_in_error {
        return format!(
            r#"<li class="app-in-error"><s>{body}</s>{}</li>"#,
            in_error_note(app, mark)
        );
    }
    let base = format!("/case/{}/note/{}", v.case_id, n.meta.id);
    let reason_form = |label: &str, action: &str, button: &str| {
        let inner = format!(
            "{}{}",
            html::Input::text(&format!("{action}-{}", n.meta.id), "reason", label, "").render(&[]),
            html::secondary_button(button)
        );
        html::post_form(&format!("{base}/{action}"), csrf, &inner)
    };
    let state = if let Some(w) = n.in_force() {
        format!(
            r#"<p class="nhsuk-body-s app-flag">Withheld from {}'s copy: asked by {} ({}), confirmed by {}.</p>{}"#,
            esc(&v.person.name),
            esc(by_line(app, &w.by, &w.at)),
            esc(&w.reason),
            esc(by_line(app, &w.confirmed_by, &w.confirmed_at)),
            reason_form(
                "Why it can be in the copy again",
                "lift",
                "Lift: show it in the copy again"
            )
        )
    } else if let Some(w) = n.pending() {
        let asked = format!(
            "Withholding asked by {} ({}). It stays in the copy until a second practitioner confirms.",
            by_line(app, &w.by, &w.at),
            w.reason
        );
        if w.by.as_ref().map(|a| a.practitioner.as_str()) == me {
            format!(r#"<p class="nhsuk-body-s">{}</p>"#, esc(asked))
        } else {
            format!(
                r#"<p class="nhsuk-body-s">{}</p>{}"#,
                esc(asked),
                html::post_form(
                    &format!("{base}/confirm"),
                    csrf,
                    &html::secondary_button("Confirm: withhold it")
                )
            )
        }
    } else {
        reason_form(
            &format!("Why it must not be in {}'s copy", v.person.name),
            "withhold",
            "Ask to withhold it",
        )
    };
    format!(
        r#"<li>{body}{state}<p class="nhsuk-body-s"><a href="/case/{}/entry/{}/error">Mark as entered in error<span class="nhsuk-u-visually-hidden"> ({})</span></a></p></li>"#,
        esc(&v.case_id),
        esc(n.meta.id),
        esc(&kind)
    )
}

/// `POST /case/:id/notes`: write a note.
pub async fn create(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let form = FormData::from(form);
    let back = format!("/case/{case}#safety-notes");
    let Ok(kind) = form.get("kind").parse::<TeamNoteKind>() else {
        return Ok(done(
            &app,
            &session,
            "Choose what kind of note it is",
            &back,
        ));
    };
    let message = match app
        .edit(case, |d| d.add_team_note(kind, form.get("text")))
        .await
    {
        Ok(_) => format!("{} saved", kind.label()),
        Err(e) => format!("The note was not saved: {e}"),
    };
    Ok(done(&app, &session, &message, &back))
}

/// One step of a note's withholding (ask, lift, confirm), then back to the notes with what
/// became of it: `done` when the step was taken, `not` and why when it was refused.
async fn note_step(
    app: &AppState,
    session: &SessionCtx,
    (id, nid): (String, String),
    step: impl FnOnce(&mut CaseDoc, &EntryId) -> Result<(), ModelError>,
    done_words: &str,
    not: &str,
) -> PageResult {
    let case = case_id(&id)?;
    let note = entry_id(&nid)?;
    let message = match app.edit(case, |d| step(d, &note)).await {
        Ok(()) => done_words.to_string(),
        Err(e) => format!("{not}: {e}"),
    };
    Ok(done(
        app,
        session,
        &message,
        &format!("/case/{case}#safety-notes"),
    ))
}

/// `POST /case/:id/note/:nid/withhold`: ask, with the reason.
pub async fn withhold(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(ids): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let form = FormData::from(form);
    note_step(
        &app,
        &session,
        ids,
        |d, note| d.request_withholding(note, form.get("reason")),
        "Asked: a second practitioner confirms before it is withheld",
        "Not asked",
    )
    .await
}

/// `POST /case/:id/note/:nid/lift`: show the note in the person's copy again, saying why.
pub async fn lift(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(ids): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let form = FormData::from(form);
    note_step(
        &app,
        &session,
        ids,
        |d, note| d.lift_withholding(note, form.get("reason")),
        "Lifted: the note is in the person's copy again",
        "Not lifted",
    )
    .await
}

/// `POST /case/:id/note/:nid/confirm`: confirm, as a second practitioner.
pub async fn confirm(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(ids): Path<(String, String)>,
) -> PageResult {
    note_step(
        &app,
        &session,
        ids,
        |d, note| d.confirm_withholding(note),
        "Confirmed: the note is withheld from the person's copy",
        "Not confirmed",
    )
    .await
}
