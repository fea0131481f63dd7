//! Referrals and episodes on the case page: each referral (when it came in, from where and whom,
//! the reason in the referrer's words, its urgency and letter), each episode with its first
//! meeting's due time (the time left, or flagged past due), and the form to record a referral
//! (a re-referral opens a new episode). The same fields open a case with its referral
//! ([`super::case`]'s new-case form). Both forms carry the letter, so they are sent as
//! `multipart/form-data`.

use std::fmt::Write as _;

use axum::extract::{Multipart, Path, State};
use axum::Extension;
use polyphony_core::model::referrals::time_left;
use polyphony_core::model::view::CaseView;
use polyphony_core::model::{NewReferral, ReferralSource, Urgency, MAX_ATTACHMENT_BYTES};
use polyphony_core::profile::AttachFile;

use super::{by_line, case_id, done, in_error_note, removed_note, AppState, FormData, PageResult};
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
            s.push_str(&referral_item(app, v, r));
        }
        s.push_str("</ul>");
    }
    let _ = write!(
        s,
        r#"<details class="nhsuk-details" id="record-referral"><summary class="nhsuk-details__summary"><span class="nhsuk-details__summary-text">Record a referral (a re-referral opens a new episode)</span></summary><div class="nhsuk-details__text">{}</div></details>"#,
        form(
            &format!("/case/{}/referrals", esc(&v.case_id)),
            csrf,
            &FormData::default(),
            &[],
            "Record the referral"
        )
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
            let in_time = if e.met_in_time() == Some(true) {
                "within the time its urgency asked"
            } else {
                "later than its urgency asked"
            };
            format!(
                "First network meeting {}, {in_time}; {} meeting{} held",
                esc(dates::long_stored(first, zone)),
                e.meetings,
                if e.meetings == 1 { "" } else { "s" }
            )
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

fn referral_item(app: &App, v: &CaseView, r: &polyphony_core::model::ReferralView) -> String {
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
        None => ("", String::new()),
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

/// The form to record a referral on a case (multipart: it may carry the letter).
fn form(action: &str, csrf: &str, form: &FormData, errors: &[FieldError], button: &str) -> String {
    format!(
        r#"<form method="post" action="{action}" enctype="multipart/form-data" novalidate autocomplete="off">{csrf}<input type="hidden" name="_once" value="{once}">{fields}{button}</form>"#,
        csrf = crate::html::csrf_field(csrf),
        once = crate::auth::random_token(),
        fields = fields(form, errors),
        button = crate::html::secondary_button(button),
    )
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

/// A posted form's text fields (folded as every form's are, see [`FormData`]) and the files it
/// carried, whether it came as `multipart/form-data` (a form that can carry a file) or urlencoded
/// (the same form sent by a script, or without a file).
pub struct Posted {
    /// The text fields.
    pub form: FormData,
    /// Each file chosen: its field's name, the file's name and its bytes.
    pub files: Vec<(String, String, Vec<u8>)>,
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for Posted {
    type Rejection = axum::response::Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::response::IntoResponse;
        let multipart = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("multipart/form-data"));
        if !multipart {
            let axum::Form(fields) = axum::Form::<Vec<(String, String)>>::from_request(req, state)
                .await
                .map_err(IntoResponse::into_response)?;
            return Ok(Posted {
                form: FormData::from(fields),
                files: Vec::new(),
            });
        }
        let mut multipart = Multipart::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let bad = |e: String| (axum::http::StatusCode::BAD_REQUEST, e).into_response();
        let mut fields = Vec::new();
        let mut files = Vec::new();
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(bad(format!("The form could not be read: {e}"))),
            };
            let name = field.name().unwrap_or_default().to_string();
            match field.file_name().map(str::to_string) {
                // A file input left empty posts a part with an empty file name: no file.
                Some(file_name) => {
                    let bytes = field
                        .bytes()
                        .await
                        .map_err(|e| bad(format!("The file could not be read: {e}")))?;
                    if !file_name.is_empty() {
                        files.push((name, file_name, bytes.to_vec()));
                    }
                }
                None => fields.push((name, field.text().await.unwrap_or_default())),
            }
        }
        Ok(Posted {
            form: FormData::from(fields),
            files,
        })
    }
}

impl Posted {
    /// The file posted in field `name`: its name and bytes.
    pub fn file(&self, name: &str) -> Option<(&str, &[u8])> {
        self.files
            .iter()
            .find(|(field, _, _)| field == name)
            .map(|(_, file, bytes)| (file.as_str(), bytes.as_slice()))
    }

    /// The `letter` field's file, as a referral letter to attach.
    pub fn letter(&self) -> Option<AttachFile<'_>> {
        self.file("letter").map(|(file_name, content)| AttachFile {
            kind: polyphony_core::model::AttachmentKind::ReferralLetter,
            title: "",
            file_name,
            content,
            meeting: None,
        })
    }
}

/// `POST /case/:id/referrals`: record a referral (and its letter). What is missing is said, and
/// nothing is written.
pub async fn create(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
    posted: Posted,
) -> PageResult {
    let case = case_id(&id)?;
    let back = format!("/case/{case}#referrals");
    let referral = match read(&posted.form, &app) {
        Ok(r) => r,
        Err(errors) => {
            let said: Vec<String> = errors.iter().map(|e| e.message.clone()).collect();
            return Ok(done(
                &app,
                &session,
                &format!("The referral was not recorded: {}", said.join("; ")),
                &back,
            ));
        }
    };
    let result = app.profile().await.refer(case, referral, posted.letter());
    let message = match result {
        Ok(_) => {
            app.local_change(case);
            "Referral recorded".to_string()
        }
        Err(e) => format!("The referral was not recorded: {e}"),
    };
    Ok(done(&app, &session, &message, &back))
}
