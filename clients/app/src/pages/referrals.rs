//! Referrals and episodes on the case page: each referral (when it came in, from where and whom,
//! the reason in the referrer's words, its urgency and letter), each episode with its first
//! meeting's due time (the time left, or flagged past due); the page to record a referral (a
//! re-referral opens a new episode), and the form to attach the letter of a referral recorded
//! without one. The same fields open a case with its referral ([`super::case`]'s new-case
//! form). The forms carry the letter, so they are sent as `multipart/form-data`.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use polyphony_core::model::referrals::time_left;
use polyphony_core::model::view::CaseView;
use polyphony_core::model::{NewReferral, ReferralSource, Urgency, MAX_ATTACHMENT_BYTES};

use super::{
    by_line, case_id, done, entry_id, in_error_note, removed_note, AppState, FormData, PageResult,
    Posted,
};
use crate::auth::SessionCtx;
use crate::dates;
use crate::html::{esc, esc_multiline, tag, Choices, DateInput, FieldError, Input, TextArea};
use crate::state::App;

/// The section of the case page.
pub fn section(app: &App, v: &CaseView, csrf: &str) -> String {
    let mut s = String::from(r#"<h2 id="referrals">Referrals and episodes</h2>"#);
    s.push_str(&episodes(app, v));
    if v.referrals.is_empty() {
        s.push_str("<p>No referral recorded yet: the episode starts at the referral time on the timeline.</p>");
    } else {
        s.push_str(r#"<ul class="nhsuk-list app-entries">"#);
        for r in &v.referrals {
            s.push_str(&referral_item(app, v, r, csrf));
        }
        s.push_str("</ul>");
    }
    let _ = write!(
        s,
        r#"<p><a class="nhsuk-button nhsuk-button--secondary" href="/case/{}/referrals/new" role="button" draggable="false" id="record-referral">Record a referral</a></p>"#,
        esc(&v.case_id)
    );
    s
}

/// Each episode: when it started, and its first meeting (held in time or late, or due: the time
/// left, or past due).
fn episodes(app: &App, v: &CaseView) -> String {
    let zone = &app.config.zone;
    let now = time::OffsetDateTime::now_utc();
    let mut s = String::from(r#"<ul class="nhsuk-list" id="episodes">"#);
    for e in &v.episodes {
        let state = if let Some(due) = e.awaiting_first_meeting() {
            let (left, past) = time_left(due, now);
            let due = dates::long_stored(&e.first_meeting_due, zone);
            if past {
                format!(
                    "{} First network meeting was due by {}: {}",
                    tag("First meeting past due", "red"),
                    esc(due),
                    esc(left)
                )
            } else {
                format!(
                    "{} First network meeting due by {}: {}",
                    tag("First meeting due", "orange"),
                    esc(due),
                    esc(left)
                )
            }
        } else if let Some(first) = &e.first_meeting {
            let by = if e.urgency.is_some() {
                "its urgency asked"
            } else {
                "the team's aim of 24 hours"
            };
            let in_time = if e.met_in_time() == Some(true) {
                format!("within the time {by}")
            } else {
                format!("later than {by}")
            };
            format!(
                "First network meeting {}, {in_time}; {} meeting{} held",
                esc(dates::long_stored(first, zone)),
                e.meetings,
                if e.meetings == 1 { "" } else { "s" }
            )
        } else if e.ended_by_referral_at.is_some() && e.closed_at.is_none() {
            "No network meeting was held before the next referral".to_string()
        } else {
            "Closed with no network meeting held".to_string()
        };
        let end = match (&e.closed_at, &e.ended_by_referral_at) {
            (Some(c), _) => format!(" Closed {}.", esc(dates::long_stored(c, zone))),
            (None, Some(_)) => " Ended by the next referral.".to_string(),
            (None, None) => String::new(),
        };
        let urgency = e
            .urgency
            .as_ref()
            .map(|u| format!(", {}", esc(u.label().to_lowercase())))
            .unwrap_or_default();
        let _ = write!(
            s,
            r#"<li data-episode="{n}"><strong>Episode {n}</strong> from {start}{urgency}. {state}.{end}</li>"#,
            n = e.number,
            start = esc(dates::long_stored(&e.received_at, zone)),
        );
    }
    s.push_str("</ul>");
    s
}

fn referral_item(
    app: &App,
    v: &CaseView,
    r: &polyphony_core::model::ReferralView,
    csrf: &str,
) -> String {
    if r.meta.withheld() {
        return match &r.meta.entered_in_error {
            Some(mark) => format!("<li>{}</li>", removed_note(app, "A referral", mark)),
            None => String::new(),
        };
    }
    let from = match &r.referrer {
        Some(who) => format!("{}: {}", esc(r.source.label()), esc(who)),
        None => esc(r.source.label()),
    };
    let letter = r
        .letter
        .and_then(|l| v.attachments.iter().find(|a| a.meta.id == l))
        .filter(|a| !a.meta.withheld())
        .map(|a| {
            format!(
                r#"<p>Letter: <a href="/case/{}/attachment/{}">{}</a> ({})</p>"#,
                esc(&v.case_id),
                a.meta.id,
                esc(&a.title),
                esc(&a.file_name)
            )
        })
        .unwrap_or_default();
    let (class, note) = match &r.meta.entered_in_error {
        Some(mark) => (" app-in-error", in_error_note(app, mark)),
        None => (
            "",
            format!(
                r#"<p><a href="/case/{}/entry/{}/error" class="nhsuk-body-s">Mark this referral as entered in error</a></p>{}"#,
                esc(&v.case_id),
                r.meta.id,
                if r.letter.is_none() {
                    letter_form(v, r.meta.id, csrf)
                } else {
                    String::new()
                }
            ),
        ),
    };
    format!(
        r#"<li class="app-entry{class}" id="referral-{id}"><p><strong>{when}</strong>, {urgency}, from {from}</p><blockquote class="app-quote">{reason}</blockquote>{letter}<p class="nhsuk-body-s">Recorded by {by}</p>{note}</li>"#,
        id = r.meta.id,
        when = esc(r
            .received_at
            .as_deref()
            .map(|t| dates::long_stored(t, &app.config.zone))
            .unwrap_or_default()),
        urgency = esc(r.urgency.label()),
        reason = esc_multiline(&r.reason),
        by = esc(by_line(app, &r.meta.created_by, &r.meta.created_at)),
    )
}

/// The referral's fields (received at, source, referrer, reason, urgency, letter), for the
/// new-case form and the case page's.
pub fn fields(form: &FormData, errors: &[FieldError]) -> String {
    let sources: Vec<(String, String)> = ReferralSource::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), s.label().to_string()))
        .collect();
    let urgencies: Vec<(String, String)> = Urgency::ALL
        .iter()
        .map(|u| (u.as_str().to_string(), u.label().to_string()))
        .collect();
    let checked =
        |name: &str| -> Vec<String> { form.opt(name).map(str::to_string).into_iter().collect() };
    let mut s = DateInput {
        id: "received_at",
        name: "received_at",
        legend: "When the referral came in",
        value: form.get("received_at"),
        with_time: true,
    }
    .render(errors);
    s.push_str(
        &Choices {
            id: "source",
            name: "source",
            legend: "Where it came from",
            options: &sources,
            checked: &checked("source"),
            multiple: false,
            inline: false,
            hint: None,
        }
        .render(errors),
    );
    s.push_str(
        &Input {
            hint: Some("Their name and role or service, for example Dr Shah, Elm Street Surgery. Not needed when the person referred themselves."),
            ..Input::text("referrer", "referrer", "Who referred", form.get("referrer"))
        }
        .render(errors),
    );
    s.push_str(
        &TextArea {
            id: "reason",
            name: "reason",
            label: "The reason, in the referrer's words",
            value: form.get("reason"),
            hint: Some("As they wrote or said it: the person will read it in their copy."),
            rows: 4,
            attrs: "",
        }
        .render(errors),
    );
    s.push_str(
        &Choices {
            id: "urgency",
            name: "urgency",
            legend: "How urgent",
            options: &urgencies,
            checked: &checked("urgency"),
            multiple: false,
            inline: false,
            hint: Some("The first network meeting is due within this time of the referral."),
        }
        .render(errors),
    );
    let _ = write!(
        s,
        r#"<div class="nhsuk-form-group"><label class="nhsuk-label" for="letter">The referral letter (optional)</label><div class="nhsuk-hint" id="letter-hint">A PDF, a photo or scan, or an office document, at most {max} MB. It is attached to the case as its referral letter.</div><input class="nhsuk-file-upload" id="letter" name="letter" type="file" aria-describedby="letter-hint"></div>"#,
        max = MAX_ATTACHMENT_BYTES >> 20,
    );
    s
}

/// The form to attach the letter of a referral recorded without one (a letter that followed a
/// telephone referral).
fn letter_form(v: &CaseView, referral: polyphony_core::EntryId, csrf: &str) -> String {
    let id = format!("letter-{referral}");
    crate::html::post_file_form(
        &format!("/case/{}/referral/{referral}/letter", v.case_id),
        csrf,
        &format!(
            r#"<div class="nhsuk-form-group"><label class="nhsuk-label" for="{id}">Attach its letter (a PDF, a photo or scan, or an office document, at most {max} MB)</label><input class="nhsuk-file-upload" id="{id}" name="letter" type="file"></div>{button}"#,
            max = MAX_ATTACHMENT_BYTES >> 20,
            button = crate::html::secondary_button("Attach the letter"),
        ),
    )
}

/// `GET /case/:id/referrals/new`: the page to record a referral.
pub async fn new_form(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
) -> PageResult {
    let case = case_id(&id)?;
    let v = app.profile().await.view(case, "referral form")?;
    Ok(new_page(&app, &session, &v, &FormData::default(), &[]).await)
}

async fn new_page(
    app: &App,
    session: &SessionCtx,
    v: &CaseView,
    form: &FormData,
    errors: &[FieldError],
) -> Response {
    let heading = format!(
        r#"<span class="nhsuk-caption-l">{}</span><h1>Record a referral</h1><p>A referral of someone the team has met before opens a new episode of care: their network and their record carry on, and the figures count each episode on its own.</p>"#,
        esc(&v.person.name)
    );
    let inner = format!(
        "{}{}",
        fields(form, errors),
        crate::html::button("Record the referral")
    );
    super::case_file_form_page(
        app,
        session,
        &v.case_id,
        "Record a referral",
        &heading,
        "referrals",
        &inner,
        errors,
    )
    .await
}

/// The referral the form describes, or what is missing, by field. Model checks (a referrer,
/// lengths, a time in the future) come back from the profile.
pub fn read(form: &FormData, app: &App) -> Result<NewReferral, Vec<FieldError>> {
    let mut errors = Vec::new();
    let received = match form.opt("received_at") {
        None => {
            errors.push(FieldError::new(
                "received_at",
                "Enter when the referral came in",
            ));
            None
        }
        // A date alone would read as midnight: an emergency referral made at 15:00 would be
        // past due at once.
        Some(t) if !t.contains('T') => {
            errors.push(FieldError::new(
                "received_at",
                "Enter the time the referral came in, as well as the date",
            ));
            None
        }
        Some(t) => match dates::parse_input(t, &app.config.zone) {
            Ok(at) => Some(at),
            Err(e) => {
                errors.push(FieldError::new("received_at", e.to_string()));
                None
            }
        },
    };
    let source = form.get("source").parse::<ReferralSource>().ok();
    if source.is_none() {
        errors.push(FieldError::new(
            "source",
            "Choose where the referral came from",
        ));
    }
    let urgency = form.get("urgency").parse::<Urgency>().ok();
    if urgency.is_none() {
        errors.push(FieldError::new(
            "urgency",
            "Choose how urgent the referral is",
        ));
    }
    if form.opt("reason").is_none() {
        errors.push(FieldError::new(
            "reason",
            "Enter the reason for the referral, in the referrer's words",
        ));
    }
    match (received, source, urgency) {
        (Some(received_at), Some(source), Some(urgency)) if errors.is_empty() => Ok(NewReferral {
            received_at,
            source,
            referrer: form.opt("referrer").map(str::to_string),
            reason: form.get("reason").to_string(),
            urgency,
            letter: None,
        }),
        _ => Err(errors),
    }
}

/// The field a refusal from the model is about.
pub fn field_of(e: &polyphony_core::profile::ProfileError) -> &'static str {
    let words = e.to_string();
    if words.contains("referrer") {
        "referrer"
    } else if words.contains("reason") {
        "reason"
    } else if words.contains("future") || words.contains("received") {
        "received_at"
    } else {
        "letter"
    }
}

/// `POST /case/:id/referrals`: record a referral (and its letter). What is missing or wrong is
/// said beside its field, with what was typed kept, and nothing is written.
pub async fn create(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
    posted: Posted,
) -> PageResult {
    let case = case_id(&id)?;
    let errors = match read(&posted.form, &app) {
        Ok(referral) => {
            let result = app.profile().await.refer(case, referral, posted.letter());
            match result {
                Ok(id) => {
                    app.local_change(case);
                    let near = app.profile().await.lookup(case).ok().and_then(|v| {
                        v.referral_near(id).map(|n| {
                            n.received_at
                                .as_deref()
                                .map(|t| dates::long_stored(t, &app.config.zone))
                                .unwrap_or_default()
                        })
                    });
                    // Said, and taken to the new referral, whose "mark entered in error" is the
                    // way to undo a call logged twice.
                    let (message, to) = match near {
                        Some(when) => (
                            format!(
                                "Referral recorded. Another referral came in on {when}: if this is the same one, mark this one as entered in error, or it opens an episode of its own"
                            ),
                            format!("/case/{case}#referral-{id}"),
                        ),
                        None => (
                            "Referral recorded".to_string(),
                            format!("/case/{case}#referrals"),
                        ),
                    };
                    return Ok(done(&app, &session, &message, &to));
                }
                Err(e) => vec![super::field_error(field_of(&e), &e)],
            }
        }
        Err(errors) => errors,
    };
    let v = app.profile().await.view(case, "referral form")?;
    Ok(new_page(&app, &session, &v, &posted.form, &errors).await)
}

/// `POST /case/:id/referral/:rid/letter`: attach the letter of a referral recorded without one.
pub async fn letter(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, rid)): Path<(String, String)>,
    posted: Posted,
) -> PageResult {
    let case = case_id(&id)?;
    let referral = entry_id(&rid)?;
    let back = format!("/case/{case}#referral-{referral}");
    let Some(file) = posted.letter() else {
        return Ok(done(&app, &session, "Choose the letter to attach", &back));
    };
    let message = match app
        .profile()
        .await
        .add_referral_letter(case, referral, file)
    {
        Ok(_) => {
            app.local_change(case);
            "The referral's letter was attached: it is sent to the borough server at the next sync"
                .to_string()
        }
        Err(e) => format!("The letter was not attached: {e}"),
    };
    Ok(done(&app, &session, &message, &back))
}
