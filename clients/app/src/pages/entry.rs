//! "Entered in error": nothing clinical is deleted. An entry can be wrong in two ways, and the
//! practitioner says which:
//!
//! - written wrongly (a mistake): it stays in the record struck through but readable, with who
//!   marked it, when and why;
//! - recorded on the wrong person's record: what it says is another person's information, so its
//!   content is withheld from every screen, copy and export (the model's view carries none of it)
//!   and a tombstone says what kind of entry was removed, by whom, when and why. Before marking, the
//!   app offers to write it again on the right person's case, as a new entry by the practitioner
//!   doing the move, which says it was moved from another record without naming that person.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Form};
use polyphony_core::model::view::{CaseView, DecisionView, MeetingView, MemberView};
use polyphony_core::model::{
    CaseDoc, DecisionStatus, ErrorKind, LocalZone, MeetingState, ModelError, NewMeeting, NewMember,
    NoteKind, Participant, Place,
};
use polyphony_core::{CaseId, EntryId};

use super::{
    by_on, case_id, done, entry_id, field_error, removed_note, render, AppState, FormData,
    PageError, PageParts, PageResult,
};
use crate::auth::SessionCtx;
use crate::dates;
use crate::html::{self, error_summary, esc, esc_multiline, Choices, FieldError};
use crate::state::App;

/// An entry found in a case: what it is in words, where to go back to, its kind for a
/// tombstone, and the content that can be written again on another case.
struct Found {
    what: String,
    back: String,
    kind_words: &'static str,
    content: Option<Content>,
    mark: Option<polyphony_core::model::view::ErrorMark>,
}

/// The content of an entry that can be re-recorded on the right person's case.
enum Content {
    Meeting(Box<MeetingView>),
    Decision(Box<DecisionView>),
    Member(Box<MemberView>),
}

/// What an entry id names in a case.
fn describe(v: &CaseView, id: &str, zone: &LocalZone) -> Option<Found> {
    let case = &v.case_id;
    let id: EntryId = id.parse().ok()?;
    if let Some(m) = v.network.iter().find(|m| m.meta.id == id) {
        return Some(Found {
            what: format!("network member {} ({})", m.name, m.relationship),
            back: format!("/case/{case}#network"),
            kind_words: "A network member",
            content: Some(Content::Member(Box::new(m.clone()))),
            mark: m.meta.entered_in_error.clone(),
        });
    }
    if let Some(c) = v.care_team.iter().find(|c| c.meta.id == id) {
        return Some(Found {
            what: format!("care team membership of {}", c.name),
            back: format!("/case/{case}#care-team"),
            kind_words: "A care team membership",
            content: None,
            mark: c.meta.entered_in_error.clone(),
        });
    }
    if let Some(m) = v.meetings.iter().find(|m| m.meta.id == id) {
        return Some(Found {
            what: match m.at.as_deref() {
                Some(t) => format!("the meeting on {}", dates::long_stored(t, zone)),
                None => "the meeting".into(),
            },
            back: format!("/case/{case}/meeting/{id}"),
            kind_words: "A meeting",
            content: Some(Content::Meeting(Box::new(m.clone()))),
            mark: m.meta.entered_in_error.clone(),
        });
    }
    if let Some(n) = v.team_notes.iter().find(|n| n.meta.id == id) {
        return Some(Found {
            what: format!("the {}", n.kind.label().to_lowercase()),
            back: format!("/case/{case}#safety-notes"),
            kind_words: "A safety note",
            content: None,
            mark: n.meta.entered_in_error.clone(),
        });
    }
    if let Some(a) = v.attachments.iter().find(|a| a.meta.id == id) {
        return Some(Found {
            what: format!("the {} “{}”", a.kind.label().to_lowercase(), a.title),
            back: format!("/case/{case}#attachments"),
            kind_words: "A letter or document",
            content: None,
            mark: a.meta.entered_in_error.clone(),
        });
    }
    if let Some(r) = v.referrals.iter().find(|r| r.meta.id == id) {
        return Some(Found {
            what: match r.received_at.as_deref() {
                Some(t) => format!("the referral of {}", dates::long_stored(t, zone)),
                None => "a referral".into(),
            },
            back: format!("/case/{case}#referrals"),
            kind_words: "A referral",
            content: None,
            mark: r.meta.entered_in_error.clone(),
        });
    }
    if let Some(i) = v.crisis_plan.items.iter().find(|i| i.meta.id == id) {
        return Some(Found {
            what: match &i.current {
                Some(now) => format!("the crisis plan item “{}”", now.text),
                None => "a crisis plan item".into(),
            },
            back: format!("/case/{case}#crisis-plan"),
            kind_words: "A crisis plan item",
            content: None,
            mark: i.meta.entered_in_error.clone(),
        });
    }
    for d in &v.decisions {
        if d.meta.id == id {
            return Some(Found {
                what: format!("the decision “{}”", d.text),
                back: format!("/case/{case}/decision/{id}"),
                kind_words: "A decision",
                content: Some(Content::Decision(Box::new(d.clone()))),
                mark: d.meta.entered_in_error.clone(),
            });
        }
        if let Some(a) = d.actions.iter().find(|a| a.meta.id == id) {
            return Some(Found {
                what: format!("the action “{}”", a.text),
                back: format!("/case/{case}/decision/{}#actions", d.meta.id),
                kind_words: "An action",
                content: None,
                mark: a.meta.entered_in_error.clone(),
            });
        }
    }
    None
}

fn found(v: &CaseView, id: &str, zone: &LocalZone) -> Result<Found, PageError> {
    describe(v, id, zone)
        .ok_or_else(|| PageError::NotFound(format!("there is no entry '{id}' in this case")))
}

/// The two kinds of error, as the practitioner chooses between them. An entry already marked as a
/// mistake can only be found to be on the wrong person's record, never the other way.
fn kind_options(already_mistake: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !already_mistake {
        out.push((
            ErrorKind::Mistake.as_str().to_string(),
            "It was written wrongly (it stays visible in this record, struck through)".to_string(),
        ));
    }
    out.push((
        ErrorKind::WrongPerson.as_str().to_string(),
        "It was recorded on the wrong person’s record (its content is removed from this person’s record and every copy)".to_string(),
    ));
    out
}

async fn page(
    app: &App,
    session: &SessionCtx,
    v: &CaseView,
    id: &str,
    form: &FormData,
    errors: &[FieldError],
) -> Result<Response, PageError> {
    let f = found(v, id, &app.config.zone)?;
    let mut content =
        String::from(r#"<div class="nhsuk-grid-row"><div class="nhsuk-grid-column-two-thirds">"#);
    content.push_str(&error_summary(errors));
    content.push_str(&format!(
        r#"<span class="nhsuk-caption-l">{}</span><h1>Mark as entered in error</h1>"#,
        esc(&v.person.name)
    ));
    match &f.mark {
        Some(mark) if !mark.is_mistake() => {
            content.push_str(&removed_note(app, f.kind_words, mark));
            content.push_str("<p>There is nothing more to mark.</p>");
        }
        mark => {
            let already_mistake = mark.is_some();
            let chosen = if already_mistake {
                vec![ErrorKind::WrongPerson.as_str().to_string()]
            } else {
                vec![form.get("kind").to_string()]
            };
            let intro = if already_mistake {
                format!(
                    "<p>{} is already marked as written wrongly. If it was recorded on the wrong person’s record, its content can be removed from this record and every copy.</p>",
                    esc(capitalised(&f.what))
                )
            } else {
                format!(
                    "<p>You are marking {} as entered in error. Nothing is deleted: your name, the time and the reason are kept with it.</p>",
                    esc(&f.what)
                )
            };
            let inner = format!(
                "{}{}{}",
                Choices {
                    id: "kind",
                    name: "kind",
                    legend: "What went wrong?",
                    options: &kind_options(already_mistake),
                    checked: &chosen,
                    multiple: false,
                    inline: false,
                    hint: None,
                }
                .render(errors),
                html::TextArea {
                    id: "reason",
                    name: "reason",
                    label: "Why is it being marked as entered in error?",
                    value: form.get("reason"),
                    hint: Some(
                        "This is kept with the entry and shown wherever it was. Do not name another person: the reason stays on this person’s record."
                    ),
                    rows: 3,
                    attrs: ""
                }
                .render(errors),
                html::button("Mark as entered in error")
            );
            content.push_str(&intro);
            content.push_str(&html::post_form(
                &format!("/case/{}/entry/{}/error", v.case_id, id),
                &session.csrf,
                &inner,
            ));
        }
    }
    content.push_str("</div></div>");
    Ok(render(
        app,
        session,
        PageParts {
            title: "Mark as entered in error",
            back: Some((&f.back, "Back")),
            content,
            has_errors: !errors.is_empty(),
            body_class: "",
        },
    )
    .await)
}

/// The second step for an entry on the wrong person's record: whose record it belongs on.
async fn move_page(
    app: &App,
    session: &SessionCtx,
    v: &CaseView,
    id: &str,
    form: &FormData,
    errors: &[FieldError],
) -> Result<Response, PageError> {
    let f = found(v, id, &app.config.zone)?;
    let mut options: Vec<(String, String)> = Vec::new();
    if f.content.is_some() {
        let this = v.case_id.as_str();
        let cases = app.profile().await.cases()?;
        for c in cases
            .into_iter()
            .filter(|c| c.case_id != this && !c.team_id.is_empty())
        {
            options.push((c.case_id, format!("Write it on {}’s record", c.name)));
        }
    }
    options.push((
        "none".into(),
        "Do not write it anywhere else: only remove it from this record".into(),
    ));
    let hint = if f.content.is_some() {
        "It is written there as a new entry by you, saying it was moved from another person’s record (without naming them). Consent and read-back answers are not carried over."
    } else {
        "This kind of entry cannot be moved: record it again on the right person’s case."
    };
    let chosen = [form.get("to").to_string()];
    let inner = format!(
        r#"<input type="hidden" name="kind" value="{wp}"><input type="hidden" name="reason" value="{reason}"><input type="hidden" name="step" value="move">{choices}{button}"#,
        wp = ErrorKind::WrongPerson.as_str(),
        reason = esc(form.get("reason")),
        choices = Choices {
            id: "to",
            name: "to",
            legend: "Whose record does it belong on?",
            options: &options,
            checked: &chosen,
            multiple: false,
            inline: false,
            hint: Some(hint),
        }
        .render(errors),
        button = html::button("Remove it from this record"),
    );
    let content = format!(
        r#"<div class="nhsuk-grid-row"><div class="nhsuk-grid-column-two-thirds">{}<span class="nhsuk-caption-l">{}</span><h1>Recorded on the wrong person’s record</h1><p>{} will be removed from {}’s record and from every copy and export. A note stays in its place saying what kind of entry was removed, by you, when and why:</p><div class="nhsuk-inset-text"><p>{}</p></div>{}</div></div>"#,
        error_summary(errors),
        esc(&v.person.name),
        esc(capitalised(&f.what)),
        esc(&v.person.name),
        esc_multiline(form.get("reason")),
        html::post_form(
            &format!("/case/{}/entry/{}/error", v.case_id, id),
            &session.csrf,
            &inner
        )
    );
    Ok(render(
        app,
        session,
        PageParts {
            title: "Recorded on the wrong person’s record",
            back: Some((&f.back, "Back")),
            content,
            has_errors: !errors.is_empty(),
            body_class: "",
        },
    )
    .await)
}

/// `GET /case/:id/entry/:eid/error`.
pub async fn form(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, eid)): Path<(String, String)>,
) -> PageResult {
    let case = case_id(&id)?;
    let v = app.profile().await.view(case, "entered in error")?;
    page(&app, &session, &v, &eid, &FormData::default(), &[]).await
}

/// `POST /case/:id/entry/:eid/error`: mark a mistake at once; for an entry on the wrong person's
/// record, first ask whose record it belongs on, then re-record it there and withhold it here.
pub async fn mark(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, eid)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let entry = entry_id(&eid)?;
    let form = FormData::from(form);
    let v = app.profile().await.view(case, "entered in error")?;
    let f = found(&v, &eid, &app.config.zone)?;
    let mut errors = Vec::new();
    let kind = form.get("kind").parse::<ErrorKind>();
    if kind.is_err() {
        errors.push(FieldError::new(
            "kind",
            "Choose whether it was written wrongly or recorded on the wrong person’s record",
        ));
    }
    let reason = form.opt("reason");
    if reason.is_none() {
        errors.push(FieldError::new(
            "reason",
            "Enter why it is being marked as entered in error",
        ));
    }
    let (Ok(kind), Some(reason), true) = (kind, reason, errors.is_empty()) else {
        return page(&app, &session, &v, &eid, &form, &errors).await;
    };
    if kind == ErrorKind::WrongPerson {
        if form.get("step") != "move" {
            return move_page(&app, &session, &v, &eid, &form, &[]).await;
        }
        let to = form.get("to");
        if to.is_empty() {
            let errors = [FieldError::new("to", "Choose whose record it belongs on")];
            return move_page(&app, &session, &v, &eid, &form, &errors).await;
        }
        if to != "none" {
            let moved = match (to.parse::<CaseId>(), &f.content) {
                (Ok(target), Some(content)) if target != case => {
                    re_record(&app, target, content).await
                }
                _ => Err("choose one of the other cases on this device".to_string()),
            };
            if let Err(e) = moved {
                let errors = [FieldError::new(
                    "to",
                    format!("It was not moved, and nothing was removed: {e}"),
                )];
                return move_page(&app, &session, &v, &eid, &form, &errors).await;
            }
        }
    }
    match app.edit(case, |d| d.mark_error(&entry, kind, reason)).await {
        Ok(()) => {
            let (said, back) = match (kind, form.get("to")) {
                (ErrorKind::Mistake, _) => ("Marked as entered in error".to_string(), f.back),
                (_, "none") => (
                    "Removed from this record".to_string(),
                    format!("/case/{case}"),
                ),
                (_, to) => (
                    "Removed from this record and written on the right person’s record".to_string(),
                    format!("/case/{to}"),
                ),
            };
            Ok(done(&app, &session, &said, &back))
        }
        Err(e) => {
            let errors = [field_error("reason", &e)];
            page(&app, &session, &v, &eid, &form, &errors).await
        }
    }
}

/// Write an entry's content on the right person's case as a new entry by the practitioner
/// using this device. What belongs to the wrong case (its network members, their read-back
/// answers and positions, the consent its person gave) stays behind.
async fn re_record(app: &App, target: CaseId, content: &Content) -> Result<(), String> {
    let me = super::me(app)
        .await
        .map(|(_, name)| name)
        .unwrap_or_else(|| "a practitioner".into());
    let now = dates::long(time::OffsetDateTime::now_utc(), &app.config.zone);
    let first_by = |meta: &polyphony_core::model::view::EntryMeta| {
        format!(
            " It was first recorded by {}.",
            by_on(app, &meta.created_by, &meta.created_at)
        )
    };
    let note = |meta| {
        format!(
            "Moved here by {me} on {now} from another person’s record, where it had been recorded by mistake.{}",
            first_by(meta)
        )
    };
    let result = match content {
        Content::Meeting(m) => {
            let note = format!(
                "{} Who came from the network and the read-back answers were not carried over.",
                note(&m.meta)
            );
            let m = m.as_ref().clone();
            app.edit(target, move |d| copy_meeting(d, &m, &note)).await
        }
        Content::Decision(dec) => {
            let note = note(&dec.meta);
            let dec = dec.as_ref().clone();
            app.edit(target, move |d| copy_decision(d, &dec, &note))
                .await
        }
        Content::Member(m) => {
            let m = m.as_ref().clone();
            app.edit(target, move |d| copy_member(d, &m)).await
        }
    };
    result.map_err(|e| e.to_string())
}

fn copy_meeting(d: &mut CaseDoc, m: &MeetingView, note: &str) -> Result<(), ModelError> {
    let at =
        m.at.as_deref()
            .and_then(dates::parse_stored)
            .ok_or(ModelError::Required {
                field: "meeting time",
            })?;
    // A place a newer version records cannot be written by this one: refused, as typed input is.
    let place: Place = m.place.to_string().parse()?;
    // The person met is the right case's person; practitioners are the same people anywhere.
    // Network members belong to the wrong case and stay there.
    let attendees: Vec<Participant> = m
        .attendees
        .iter()
        .filter_map(|a| a.known())
        .filter(|a| matches!(a, Participant::Person | Participant::Practitioner(_)))
        .collect();
    let id = d.add_meeting(NewMeeting {
        at,
        place,
        attendees,
    })?;
    let notes = if m.notes.trim().is_empty() {
        note.to_string()
    } else {
        format!("{note}\n\n{}", m.notes)
    };
    d.edit_text(&id, NoteKind::Notes, &notes)?;
    for (k, t) in [
        (NoteKind::Reflections, &m.reflections),
        (NoteKind::Agreed, &m.agreed),
    ] {
        if !t.is_empty() {
            d.edit_text(&id, k, t)?;
        }
    }
    if let Some(next) = m.next_meeting.as_deref().and_then(dates::parse_stored) {
        d.set_next_meeting(&id, next)?;
    }
    // A meeting moved as cancelled or missed stays so; one the model made planned or held
    // already says the same as the original.
    if let Some(state) = m.state.known() {
        if matches!(state, MeetingState::Cancelled | MeetingState::DidNotAttend) {
            d.set_meeting_state(&id, state)?;
        }
    }
    Ok(())
}

fn copy_decision(d: &mut CaseDoc, dec: &DecisionView, note: &str) -> Result<(), ModelError> {
    // Proposed by the person or a practitioner stays so; a network member of the wrong case
    // cannot propose anything here, so the proposal is the person's to confirm.
    let by = dec
        .proposed_by
        .as_ref()
        .and_then(|p| p.known())
        .filter(|p| matches!(p, Participant::Person | Participant::Practitioner(_)))
        .unwrap_or(Participant::Person);
    let id = d.propose_decision(&dec.text, by)?;
    d.set_decision_status(&id, DecisionStatus::Proposed, Some(note))
}

fn copy_member(d: &mut CaseDoc, m: &MemberView) -> Result<(), ModelError> {
    // Consent is not carried: it was given (or not) by the other person.
    d.add_member(NewMember {
        name: m.name.clone(),
        relationship: m.relationship.clone(),
        role: m.role.known(),
        phone: m.phone.clone(),
        email: m.email.clone(),
        invited_by: None,
        joined: None,
    })
    .map(|_| ())
}

/// The first letter in capitals.
fn capitalised(words: &str) -> String {
    let mut c = words.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}
