//! The app's pages: each module holds the handlers of one screen and the functions that render it.
//!
//! Every page is server-rendered HTML in the NHS design system's markup and every form posts
//! without JavaScript; the page script only adds live typing and a self-updating sync badge.
//! What is shared between pages lives here: the page context (session, flash, sync badge), form
//! data, how participants are named, and the error page.

pub mod case;
pub mod caseload;
pub mod conflicts;
pub mod decision;
pub mod enrol;
pub mod entry;
pub mod exports;
pub mod files;
pub mod meeting;
pub mod network;
pub mod network_copy;
pub mod plan;
pub mod referrals;
pub mod safety;
pub mod today;

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use polyphony_core::model::view::{AuthorView, CaseView};
use polyphony_core::model::{ErrorKind, ModelError, Participant, StaffMember, Stored};
use polyphony_core::profile::ProfileError;
use polyphony_core::sync::Colleague;
use polyphony_core::{CaseId, EntryId};

use crate::auth::SessionCtx;
use crate::html::{self, esc, esc_multiline, FieldError};
use crate::state::App;

/// What a handler failed with.
#[derive(Debug)]
pub enum PageError {
    /// No such page, case or entry.
    NotFound(String),
    /// The profile failed.
    Profile(ProfileError),
    /// This device cannot make what was asked for (the PDF copy without its fonts).
    Unavailable(String),
}

impl From<ProfileError> for PageError {
    fn from(e: ProfileError) -> Self {
        match e {
            ProfileError::UnknownCase(_) | ProfileError::UnknownEntry { .. } => {
                PageError::NotFound(e.to_string())
            }
            ProfileError::Model(ModelError::UnknownEntry { .. }) => {
                PageError::NotFound(e.to_string())
            }
            other => PageError::Profile(other),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            PageError::NotFound(m) => (StatusCode::NOT_FOUND, "Page not found", m.clone()),
            PageError::Unavailable(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "This cannot be made on this device",
                m.clone(),
            ),
            PageError::Profile(e @ ProfileError::MovedAway { .. }) => (
                StatusCode::CONFLICT,
                "This case is now with another team",
                e.to_string(),
            ),
            PageError::Profile(e @ ProfileError::BeingRevoked) => (
                StatusCode::CONFLICT,
                "This device is being revoked",
                e.to_string(),
            ),
            PageError::Profile(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sorry, there is a problem",
                e.to_string(),
            ),
        };
        let body = format!(
            r#"<!DOCTYPE html><html lang="en-GB"><head><meta charset="utf-8"><title>{t} - Polyphony</title><link rel="stylesheet" href="/assets/nhsuk-frontend.min.css"><link rel="stylesheet" href="/assets/app.css"></head><body><div class="nhsuk-width-container"><main class="nhsuk-main-wrapper" id="maincontent"><h1>{t}</h1><p>{m}</p><p>Your saved work is safe on this device.</p><p><a href="/">Go to your caseload</a></p></main></div></body></html>"#,
            t = esc(title),
            m = esc(&message)
        );
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

/// A handler's result.
pub type PageResult = Result<Response, PageError>;

/// A posted form, with repeated names kept (checkboxes).
#[derive(Debug, Clone, Default)]
pub struct FormData(pub Vec<(String, String)>);

impl From<Vec<(String, String)>> for FormData {
    /// The posted fields, with each NHS date input's boxes (`X-day`, `X-month`, `X-year` and
    /// `X-time`, see [`crate::html::DateInput`]) folded into one value `X`: `YYYY-MM-DD`, with
    /// `THH:MM` when a time was given; empty when every box was left empty. The model then checks
    /// it as it checks any typed date.
    fn from(mut fields: Vec<(String, String)>) -> Self {
        let value = |fields: &[(String, String)], k: &str| {
            fields
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.trim().to_string())
        };
        let groups: Vec<String> = fields
            .iter()
            .filter_map(|(k, _)| k.strip_suffix("-day").map(str::to_string))
            .collect();
        for g in groups {
            let (Some(day), Some(month), Some(year)) = (
                value(&fields, &format!("{g}-day")),
                value(&fields, &format!("{g}-month")),
                value(&fields, &format!("{g}-year")),
            ) else {
                continue;
            };
            let time = value(&fields, &format!("{g}-time")).unwrap_or_default();
            let folded = if [&day, &month, &year, &time].iter().all(|v| v.is_empty()) {
                String::new()
            } else {
                let mut d = format!("{year:0>4}-{month:0>2}-{day:0>2}");
                if !time.is_empty() {
                    d.push('T');
                    d.push_str(&clock(&time));
                }
                d
            };
            fields.push((g, folded));
        }
        FormData(fields)
    }
}

/// A typed clock time as HH:MM: "9:30", "09.30" and "0930" all read as 09:30.
fn clock(typed: &str) -> String {
    let digits: String = typed.chars().filter(char::is_ascii_digit).collect();
    match (typed.split_once([':', '.']), digits.len()) {
        (Some((h, m)), _) => format!("{:0>2}:{:0>2}", h.trim(), m.trim()),
        (None, 3 | 4) => {
            let (h, m) = digits.split_at(digits.len() - 2);
            format!("{h:0>2}:{m}")
        }
        _ => typed.to_string(),
    }
}

impl FormData {
    /// The first value of a field, or "".
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// The first value of a field, trimmed, or `None` when empty.
    pub fn opt(&self, name: &str) -> Option<&str> {
        Some(self.get(name).trim()).filter(|v| !v.is_empty())
    }

    /// Every value of a field.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// Parse a case id from a path.
pub fn case_id(s: &str) -> Result<CaseId, PageError> {
    s.parse()
        .map_err(|_| PageError::NotFound(format!("there is no case '{s}' on this device")))
}

/// Parse an entry id from a path.
pub fn entry_id(s: &str) -> Result<EntryId, PageError> {
    s.parse()
        .map_err(|_| PageError::NotFound(format!("there is no entry '{s}' in this case")))
}

/// A form error from a failed change: the core's message, beside the field it concerns.
pub fn field_error(field: &str, e: &ProfileError) -> FieldError {
    FieldError::new(field, e.to_string())
}

/// Everything a page needs to be drawn around its content.
pub struct PageParts<'a> {
    /// Title.
    pub title: &'a str,
    /// Back link.
    pub back: Option<(&'a str, &'a str)>,
    /// Content HTML.
    pub content: String,
    /// Whether the page shows form errors.
    pub has_errors: bool,
    /// Extra `<body>` class.
    pub body_class: &'a str,
}

/// A form page about one case: the error summary, `heading` (HTML, already escaped), the form
/// posting `inner` to `/case/<id>/<action>`, and a link back to the case.
#[allow(clippy::too_many_arguments)]
pub async fn case_form_page(
    app: &App,
    session: &SessionCtx,
    case: &str,
    title: &str,
    heading: &str,
    action: &str,
    inner: &str,
    errors: &[FieldError],
) -> Response {
    let form = html::post_form(&format!("/case/{case}/{action}"), &session.csrf, inner);
    case_page_around(app, session, case, title, heading, &form, errors).await
}

/// [`case_form_page`] for a form that can carry a file.
#[allow(clippy::too_many_arguments)]
pub async fn case_file_form_page(
    app: &App,
    session: &SessionCtx,
    case: &str,
    title: &str,
    heading: &str,
    action: &str,
    inner: &str,
    errors: &[FieldError],
) -> Response {
    let form = html::post_file_form(&format!("/case/{case}/{action}"), &session.csrf, inner);
    case_page_around(app, session, case, title, heading, &form, errors).await
}

/// A case's form page around its form: the error summary, the heading, the form, and the way
/// back to the case.
async fn case_page_around(
    app: &App,
    session: &SessionCtx,
    case: &str,
    title: &str,
    heading: &str,
    form: &str,
    errors: &[FieldError],
) -> Response {
    let content = format!(
        r#"<div class="nhsuk-grid-row"><div class="nhsuk-grid-column-two-thirds">{}{}{}</div></div>"#,
        html::error_summary(errors),
        heading,
        form
    );
    let back = format!("/case/{case}");
    render(
        app,
        session,
        PageParts {
            title,
            back: Some((&back, "Back to the case")),
            content,
            has_errors: !errors.is_empty(),
            body_class: "",
        },
    )
    .await
}

/// Render a page with the sync badge and the session's flash message.
pub async fn render(app: &App, session: &SessionCtx, parts: PageParts<'_>) -> Response {
    let overview = app.overview().await;
    let mut names = HashMap::new();
    for c in overview
        .cases
        .iter()
        .filter(|c| c.stale || c.refused.is_some())
    {
        if let Ok(v) = app.peek(c.case).await {
            names.insert(c.case, v.person.name);
        }
    }
    let badge = format!(
        "{}{}",
        overview.badge_html(&names, &app.config.zone),
        crate::status::app_stopped_templates()
    );
    let flash = app.gate.take_flash(&session.id);
    let page = html::page(
        &html::Shell {
            title: parts.title,
            status: &badge,
            back: parts.back,
            flash: flash.as_deref(),
            has_errors: parts.has_errors,
            csrf: &session.csrf,
            body_class: parts.body_class,
        },
        &parts.content,
    );
    let status = if parts.has_errors {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (status, Html(page)).into_response()
}

/// After a change: a flash message and a redirect (post/redirect/get).
pub fn done(app: &App, session: &SessionCtx, message: &str, to: &str) -> Response {
    app.gate.set_flash(&session.id, message);
    Redirect::to(to).into_response()
}

/// The shared app handle every handler receives.
pub type AppState = Arc<App>;

/// The person's name as they like to be called.
pub fn person_name(v: &CaseView) -> String {
    v.person
        .preferred_name
        .clone()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| v.person.name.clone())
}

fn author_names(v: &CaseView) -> HashMap<String, String> {
    let mut m = HashMap::new();
    let mut add = |a: &Option<AuthorView>| {
        if let Some(a) = a {
            m.entry(a.practitioner.clone())
                .or_insert_with(|| a.practitioner_name.clone());
        }
    };
    add(&v.created_by);
    for x in &v.network {
        add(&x.meta.created_by);
    }
    for x in &v.meetings {
        add(&x.meta.created_by);
    }
    for x in &v.decisions {
        add(&x.meta.created_by);
    }
    // Staff a meeting noted from the team list, who may never have written to the case.
    for x in v.meetings.iter().filter(|x| !x.meta.withheld()) {
        for st in &x.staff {
            m.entry(st.practitioner.to_string())
                .or_insert_with(|| st.name.clone());
        }
    }
    for c in &v.care_team {
        m.insert(c.practitioner.to_string(), c.name.clone());
    }
    m
}

/// How a network member recorded on the wrong person's record is named wherever they took part:
/// their name is another person's information, and an empty name would read as nobody.
pub const REMOVED_PARTICIPANT: &str = "someone removed from this record";

/// Who a participant is, in words; one a newer version wrote, as written.
pub fn participant_name(v: &CaseView, who: &Stored<Participant>) -> String {
    match who.known() {
        Some(Participant::Person) => person_name(v),
        Some(Participant::Member(id)) => v
            .network
            .iter()
            .find(|m| m.meta.id == id)
            .map(|m| {
                if m.meta.withheld() {
                    REMOVED_PARTICIPANT.to_string()
                } else {
                    format!("{} ({})", m.name, m.relationship)
                }
            })
            .unwrap_or_else(|| "a network member".into()),
        Some(Participant::Practitioner(id)) => author_names(v)
            .get(&id.to_string())
            .cloned()
            .unwrap_or_else(|| "a practitioner".into()),
        None => who.to_string(),
    }
}

/// Participants in the order people expect: the person, then their network, then
/// practitioners, each by name.
pub fn in_order(v: &CaseView, who: &[Stored<Participant>]) -> Vec<Stored<Participant>> {
    let mut k: Vec<(u8, String, Stored<Participant>)> = who
        .iter()
        .map(|p| {
            let rank = match p.known() {
                Some(Participant::Person) => 0,
                Some(Participant::Member(_)) => 1,
                _ => 2,
            };
            (rank, participant_name(v, p), p.clone())
        })
        .collect();
    k.sort();
    k.into_iter().map(|(_, _, p)| p).collect()
}

/// The members of staff a case's forms can name: the practitioner using this device, and the
/// colleagues of the case's team from the team list the server last sent (with their roles).
#[derive(Debug, Clone, Default)]
pub struct Staff {
    /// The practitioner using this device: (id, name).
    pub me: Option<(String, String)>,
    /// The colleagues of the case's team.
    pub colleagues: Vec<Colleague>,
}

impl Staff {
    /// Those whose role this version knows, as a meeting notes them.
    pub fn members(&self) -> Vec<StaffMember> {
        self.colleagues
            .iter()
            .filter_map(Colleague::staff_member)
            .collect()
    }

    /// The member of staff `who` is, if they are on the team list with a known role.
    pub fn member(&self, who: Participant) -> Option<StaffMember> {
        self.members()
            .into_iter()
            .find(|s| who == Participant::Practitioner(s.practitioner))
    }

    /// A colleague's role, as a person reads it, if they are on the team list.
    fn role_label(&self, id: &str) -> Option<String> {
        self.colleagues
            .iter()
            .find(|c| c.practitioner.to_string() == id)
            .map(|c| c.role.label())
    }
}

/// The staff the forms of case `v` can name.
pub async fn staff(app: &App, v: &CaseView) -> Staff {
    let profile = app.profile().await;
    let me = profile
        .enrolment()
        .map(|e| (e.practitioner.to_string(), e.practitioner_name.clone()));
    let colleagues = v
        .team_id
        .parse()
        .ok()
        .and_then(|team| {
            profile
                .colleagues_in(team)
                .inspect_err(|e| tracing::warn!(error = %e, "could not read the team list"))
                .ok()
        })
        .unwrap_or_default();
    Staff { me, colleagues }
}

/// Everyone who can take part in a meeting or a decision: the person, current network members,
/// the care team, the colleagues of the case's team and the practitioner using this device, each
/// member of staff with their role. `(key, label)`.
pub fn participants(v: &CaseView, staff: &Staff) -> Vec<(String, String)> {
    let mut out = vec![(
        Participant::Person.key(),
        format!("{} (the person)", person_name(v)),
    )];
    for m in v
        .network
        .iter()
        .filter(|m| m.meta.entered_in_error.is_none() && m.left.is_none())
    {
        out.push((
            Participant::Member(m.meta.id).key(),
            format!("{} ({})", m.name, m.relationship),
        ));
    }
    // The care team first (their role there), then the team list, then the user.
    let mut practitioners: Vec<(String, String, String)> = v
        .care_team
        .iter()
        .filter(|c| c.meta.entered_in_error.is_none() && c.end.is_none())
        .map(|c| {
            let id = c.practitioner.to_string();
            let role = staff.role_label(&id).unwrap_or_else(|| {
                c.role
                    .known()
                    .map_or_else(|| c.role.to_string(), |r| r.staff_role().label().into())
            });
            (id, c.name.clone(), role)
        })
        .collect();
    practitioners.extend(
        staff
            .colleagues
            .iter()
            .map(|c| (c.practitioner.to_string(), c.name.clone(), c.role.label())),
    );
    if let Some((id, name)) = &staff.me {
        practitioners.push((id.clone(), name.clone(), "practitioner".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for (id, name, role) in practitioners {
        if seen.insert(id.clone()) {
            out.push((format!("practitioner:{id}"), format!("{name} ({role})")));
        }
    }
    out
}

/// "by NAME on DATE" for an attribution.
pub fn by_line(app: &App, by: &Option<AuthorView>, at: &Option<String>) -> String {
    let who = by
        .as_ref()
        .map(|a| a.practitioner_name.clone())
        .unwrap_or_else(|| "someone".into());
    match at {
        Some(t) => format!("{who}, {}", crate::dates::long_stored(t, &app.config.zone)),
        None => who,
    }
}

/// "NAME on DATE at TIME UK time" for an attribution.
pub fn by_on(app: &App, by: &Option<AuthorView>, at: &Option<String>) -> String {
    let who = by
        .as_ref()
        .map(|a| a.practitioner_name.clone())
        .unwrap_or_else(|| "someone".into());
    match at {
        Some(t) => format!(
            "{who} on {}",
            crate::dates::long_stored(t, &app.config.zone)
        ),
        None => who,
    }
}

/// The tombstone of an entry whose content is withheld (recorded on the wrong person's record, or
/// marked with a kind a newer version of the app wrote): what kind of entry it was, who marked
/// it, when and why, and nothing of what it said. `what` is "A meeting", "A decision"...
pub fn removed_note(
    app: &App,
    what: &str,
    mark: &polyphony_core::model::view::ErrorMark,
) -> String {
    let why = if mark.kind.is(ErrorKind::WrongPerson) {
        "because it was recorded on the wrong person’s record".to_string()
    } else {
        format!(
            "because it was marked “{}” by a newer version of Polyphony, which this version cannot show: update the app to see more",
            mark.kind
        )
    };
    format!(
        r#"<div class="app-removed"><p class="app-removed__note"><strong class="nhsuk-tag nhsuk-tag--grey">Removed from this record</strong> {}</p></div>"#,
        esc(format!(
            "{what} was removed from this record {why}. Marked by {}: {}",
            by_on(app, &mark.by, &mark.at),
            mark.reason
        ))
    )
}

/// An entry marked entered in error: struck through but readable, with who, when and why.
pub fn in_error_note(app: &App, mark: &polyphony_core::model::view::ErrorMark) -> String {
    format!(
        r#"<p class="app-in-error__note"><strong class="nhsuk-tag nhsuk-tag--red">Entered in error</strong> {}: “{}”</p>"#,
        esc(by_line(app, &mark.by, &mark.at)),
        esc(&mark.reason)
    )
}

/// Beside an entry marked as written wrongly: the way to say it was on the wrong person's record
/// after all (the model allows widening a mistake, never narrowing).
pub fn wrong_person_link(case: &str, id: &str, what: &str) -> String {
    format!(
        r#"<p class="nhsuk-body-s"><a href="/case/{}/entry/{}/error">Was it recorded on the wrong person’s record?<span class="nhsuk-u-visually-hidden"> ({})</span></a></p>"#,
        esc(case),
        esc(id),
        esc(what)
    )
}

/// The practitioner using this device, as `(id, name)`.
pub async fn me(app: &App) -> Option<(String, String)> {
    app.profile()
        .await
        .enrolment()
        .map(|e| (e.practitioner.to_string(), e.practitioner_name.clone()))
}

/// The conflicts banner shown on every page of a case that has any.
pub fn conflicts_banner(view: &CaseView) -> String {
    let n = view.conflicts.len();
    if n == 0 {
        return String::new();
    }
    let what = if n == 1 {
        "1 detail has two different values".to_string()
    } else {
        format!("{n} details have different values")
    };
    format!(
        r#"<div class="nhsuk-notification-banner" role="region" aria-labelledby="conflicts-title" id="conflicts-banner"><div class="nhsuk-notification-banner__header"><h2 class="nhsuk-notification-banner__title" id="conflicts-title">Important</h2></div><div class="nhsuk-notification-banner__content"><p class="nhsuk-notification-banner__heading">{what}, written on different devices at the same time.</p><p class="nhsuk-body">Nothing was lost: both are kept until someone chooses. <a class="nhsuk-notification-banner__link" href="/case/{id}/conflicts">Choose which to keep</a></p></div></div>"#,
        id = esc(&view.case_id)
    )
}

/// Show multi-line text, or a muted "Nothing written yet".
pub fn text_or_none(t: &str) -> String {
    if t.trim().is_empty() {
        r#"<p class="app-muted">Nothing written yet.</p>"#.into()
    } else {
        format!(r#"<p class="app-text">{}</p>"#, esc_multiline(t))
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
        let mut multipart = axum::extract::Multipart::from_request(req, state)
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
                None => {
                    let text = field
                        .text()
                        .await
                        .map_err(|e| bad(format!("The form could not be read: {e}")))?;
                    fields.push((name, text));
                }
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
    pub fn letter(&self) -> Option<polyphony_core::profile::AttachFile<'_>> {
        self.file("letter")
            .map(|(file_name, content)| polyphony_core::profile::AttachFile {
                kind: polyphony_core::model::AttachmentKind::ReferralLetter,
                title: "",
                file_name,
                content,
                meeting: None,
            })
    }
}
