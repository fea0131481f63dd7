//! The safety and crisis plan: its section on the case page (each item in whose words, the
//! meeting that agreed it, what it replaced), the form that adds an item, the item's page where
//! its words are changed (the earlier words stay, listed), and the review date.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Form};
use polyphony_core::model::view::CaseView;
use polyphony_core::model::{parse_date, Participant, PlanItemView, PlanSection, PlanVersionView};
use polyphony_core::EntryId;

use super::{
    by_line, case_id, done, entry_id, field_error, in_error_note, participant_name, participants,
    removed_note, render, AppState, FormData, PageError, PageParts, PageResult,
};
use crate::auth::SessionCtx;
use crate::dates;
use crate::html::{self, error_summary, esc, esc_multiline, DateInput, FieldError};
use crate::state::App;

fn section_options() -> Vec<(String, String)> {
    PlanSection::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), s.heading().to_string()))
        .collect()
}

/// The held meetings an item can say it was agreed in, newest first, and "not agreed in a
/// meeting".
fn meeting_options(app: &App, v: &CaseView) -> Vec<(String, String)> {
    let mut out = vec![(String::new(), "Not agreed in a meeting".to_string())];
    let mut held: Vec<_> = v
        .meetings
        .iter()
        .filter(|m| m.meta.entered_in_error.is_none() && m.held())
        .collect();
    held.reverse();
    out.extend(held.into_iter().map(|m| {
        (
            m.meta.id.to_string(),
            format!(
                "The meeting of {}",
                m.at.as_deref()
                    .map(|t| dates::long_stored(t, &app.config.zone))
                    .unwrap_or_else(|| "an unknown date".into())
            ),
        )
    }));
    out
}

/// "In Alex Smith's words, agreed at the meeting of 14 March 2026 at 10:30 UK time, written down
/// by Robin Lee, 14 March 2026".
fn attribution(app: &App, v: &CaseView, x: &PlanVersionView) -> String {
    let agreed = x
        .meeting
        .and_then(|m| v.meetings.iter().find(|mt| mt.meta.id == m))
        .and_then(|m| m.at.as_deref())
        .map(|t| {
            format!(
                ", agreed at the meeting of {}",
                dates::long_stored(t, &app.config.zone)
            )
        })
        .unwrap_or_default();
    format!(
        "In the words of {}{agreed}; written down by {}",
        participant_name(v, &x.words_of),
        by_line(app, &x.by, &x.at)
    )
}

/// A link to the meeting that agreed the words, if any.
fn meeting_link(v: &CaseView, x: &PlanVersionView) -> String {
    match x.meeting {
        Some(m) if v.meetings.iter().any(|mt| mt.meta.id == m) => format!(
            r#" <a href="/case/{}/meeting/{m}">See the meeting</a>"#,
            esc(&v.case_id)
        ),
        _ => String::new(),
    }
}

fn earlier_list(app: &App, v: &CaseView, item: &PlanItemView) -> String {
    if item.earlier.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        r#"<details class="nhsuk-details"><summary class="nhsuk-details__summary"><span class="nhsuk-details__summary-text">What it said before</span></summary><div class="nhsuk-details__text"><ol class="nhsuk-list">"#,
    );
    for x in item.earlier.iter().rev() {
        let _ = write!(
            s,
            r#"<li><q>{}</q> <span class="nhsuk-body-s">{}</span></li>"#,
            esc_multiline(&x.text),
            esc(attribution(app, v, x))
        );
    }
    s.push_str("</ol></div></details>");
    s
}

/// The plan's section of the case page.
pub fn plan_section(app: &App, v: &CaseView, csrf: &str) -> String {
    let id = esc(&v.case_id);
    let plan = &v.crisis_plan;
    let mut s = String::from(r#"<h2 id="crisis-plan">Safety and crisis plan</h2>"#);
    let review = match &plan.review_on {
        Some(on) => format!("To be reviewed by {}.", dates::long_date(on)),
        None => "No review date set yet.".into(),
    };
    let _ = write!(
        s,
        r#"<p class="nhsuk-body" id="plan-review">{}</p>"#,
        esc(review)
    );
    if plan.reviews.len() > 1 {
        let earlier: Vec<String> = plan.reviews[..plan.reviews.len() - 1]
            .iter()
            .map(|r| {
                format!(
                    "{} (set by {})",
                    r.on.as_deref().map(dates::long_date).unwrap_or_default(),
                    by_line(app, &r.by, &r.at)
                )
            })
            .collect();
        let _ = write!(
            s,
            r#"<p class="nhsuk-body-s">Review dates set before: {}.</p>"#,
            esc(earlier.join("; "))
        );
    }
    if plan.items.is_empty() {
        s.push_str("<p>Nothing is in the plan yet. Write it with the person, in their words.</p>");
    }
    let mut last: Option<String> = None;
    let (shown, removed): (Vec<_>, Vec<_>) = plan
        .items
        .iter()
        .partition(|i| !i.meta.withheld() && i.current.is_some());
    for item in shown {
        let heading = item.section.heading();
        if last.as_ref() != Some(&heading) {
            if last.is_some() {
                s.push_str("</ul>");
            }
            let _ = write!(s, r#"<h3>{}</h3><ul class="nhsuk-list">"#, esc(&heading));
            last = Some(heading);
        }
        s.push_str(&item_line(app, v, item));
    }
    if last.is_some() {
        s.push_str("</ul>");
    }
    // Removed from this record (on the wrong person's record, or in the words of someone who
    // was): listed apart, under no section.
    if !removed.is_empty() {
        s.push_str(r#"<ul class="nhsuk-list">"#);
        for item in removed {
            s.push_str(&item_line(app, v, item));
        }
        s.push_str("</ul>");
    }
    let _ = write!(
        s,
        r#"<p><a href="/case/{id}/plan/new">Add to the crisis plan</a></p>"#
    );
    s.push_str(&review_form(v, csrf));
    s
}

fn item_line(app: &App, v: &CaseView, item: &PlanItemView) -> String {
    let id = esc(&v.case_id);
    let iid = esc(item.meta.id);
    match (&item.meta.entered_in_error, &item.current) {
        (Some(mark), _) if item.meta.withheld() => {
            format!("<li>{}</li>", removed_note(app, "A crisis plan item", mark))
        }
        (_, None) => "<li><p class=\"nhsuk-body-s\">An item of the plan in the words of someone removed from this record.</p></li>".to_string(),
        (Some(mark), Some(now)) => format!(
            r#"<li class="app-in-error"><s>{}</s>{}</li>"#,
            esc_multiline(&now.text),
            in_error_note(app, mark)
        ),
        (None, Some(now)) => format!(
            r#"<li class="app-plan-item"><p class="nhsuk-body nhsuk-u-margin-bottom-1">{}</p><p class="nhsuk-body-s nhsuk-u-margin-bottom-1">{}{}</p>{}<p class="nhsuk-body-s"><a href="/case/{id}/plan/{iid}">Change<span class="nhsuk-u-visually-hidden"> this item</span></a></p></li>"#,
            esc_multiline(&now.text),
            esc(attribution(app, v, now)),
            meeting_link(v, now),
            earlier_list(app, v, item)
        ),
    }
}

fn review_form(v: &CaseView, csrf: &str) -> String {
    let current = v.crisis_plan.review_on.clone().unwrap_or_default();
    html::post_form(
        &format!("/case/{}/plan/review", v.case_id),
        csrf,
        &review_fields(&current, &[]),
    )
}

/// The review date's boxes and the button, with any error beside them.
fn review_fields(value: &str, errors: &[FieldError]) -> String {
    format!(
        "{}{}",
        DateInput {
            id: "review_on",
            name: "review_on",
            legend: "Review the plan by",
            value,
            with_time: false,
        }
        .render(errors),
        html::secondary_button("Save review date")
    )
}

/// The fields shared by the add and change forms: the words, whose they are, the meeting.
fn words_fields(
    app: &App,
    v: &CaseView,
    staff: &super::Staff,
    form: &FormData,
    errors: &[FieldError],
) -> String {
    let mut inner = html::TextArea {
        id: "plan-text",
        name: "text",
        label: "The words, as they were said",
        value: form.get("text"),
        hint: Some("Write it in the person's (or the network member's) own words."),
        rows: 4,
        attrs: r#"spellcheck="true""#,
    }
    .render(errors);
    inner.push_str(&html::select(
        "words_of",
        "words_of",
        "Whose words are these?",
        &participants(v, staff),
        form.get("words_of"),
        errors,
    ));
    inner.push_str(&html::select(
        "plan-meeting",
        "meeting",
        "Agreed in",
        &meeting_options(app, v),
        form.get("meeting"),
        errors,
    ));
    inner
}

/// What the add and change forms posted: the words, whose, the meeting; or the errors.
fn posted_words(
    form: &FormData,
) -> Result<(String, Participant, Option<EntryId>), Vec<FieldError>> {
    let mut errors = Vec::new();
    if form.opt("text").is_none() {
        errors.push(FieldError::new("plan-text", "Enter the words"));
    }
    let who: Option<Participant> = form.get("words_of").parse().ok();
    if who.is_none() {
        errors.push(FieldError::new("words_of", "Choose whose words these are"));
    }
    let meeting = match form.opt("meeting") {
        None => None,
        Some(m) => match m.parse::<EntryId>() {
            Ok(m) => Some(m),
            Err(_) => {
                errors.push(FieldError::new(
                    "plan-meeting",
                    "Choose a meeting from the list",
                ));
                None
            }
        },
    };
    match who {
        Some(who) if errors.is_empty() => Ok((form.get("text").to_string(), who, meeting)),
        _ => Err(errors),
    }
}

async fn new_page(
    app: &App,
    session: &SessionCtx,
    v: &CaseView,
    form: &FormData,
    errors: &[FieldError],
) -> Response {
    let staff = super::staff(app, v).await;
    let mut inner = html::select(
        "plan-section",
        "section",
        "Which part of the plan?",
        &section_options(),
        form.get("section"),
        errors,
    );
    inner.push_str(&words_fields(app, v, &staff, form, errors));
    inner.push_str(&html::button("Add to the plan"));
    let heading = format!(
        r#"<span class="nhsuk-caption-l">{}</span><h1>Add to the crisis plan</h1>"#,
        esc(&v.person.name)
    );
    super::case_form_page(
        app,
        session,
        &v.case_id,
        "Add to the crisis plan",
        &heading,
        "plan",
        &inner,
        errors,
    )
    .await
}

/// `GET /case/:id/plan/new`.
pub async fn new_form(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
) -> PageResult {
    let case = case_id(&id)?;
    let v = app.profile().await.view(case, "crisis plan")?;
    let defaults = FormData(vec![
        ("section".into(), PlanSection::EarlySigns.as_str().into()),
        ("words_of".into(), Participant::Person.key()),
    ]);
    Ok(new_page(&app, &session, &v, &defaults, &[]).await)
}

/// `POST /case/:id/plan`.
pub async fn create(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let form = FormData::from(form);
    let section = form.get("section").parse::<PlanSection>().ok();
    let mut errors = match (posted_words(&form), section) {
        (Ok((text, who, meeting)), Some(section)) => {
            match app
                .edit(case, |d| d.add_plan_item(section, &text, who, meeting))
                .await
            {
                Ok(_) => {
                    return Ok(done(
                        &app,
                        &session,
                        "Added to the crisis plan",
                        &format!("/case/{case}#crisis-plan"),
                    ))
                }
                Err(e) => vec![field_error("plan-text", &e)],
            }
        }
        (Ok(_), None) => Vec::new(),
        (Err(errors), _) => errors,
    };
    if section.is_none() {
        errors.push(FieldError::new("plan-section", "Choose a part of the plan"));
    }
    let v = app.profile().await.view(case, "crisis plan")?;
    Ok(new_page(&app, &session, &v, &form, &errors).await)
}

fn find_item(v: &CaseView, iid: &str) -> Result<PlanItemView, PageError> {
    let wanted = iid.parse::<EntryId>().ok();
    v.crisis_plan
        .items
        .iter()
        .find(|i| Some(i.meta.id) == wanted)
        .cloned()
        .ok_or_else(|| {
            PageError::NotFound(format!("there is no crisis plan item '{iid}' in this case"))
        })
}

async fn item_page(
    app: &App,
    session: &SessionCtx,
    v: &CaseView,
    item: &PlanItemView,
    form: &FormData,
    errors: &[FieldError],
) -> PageResult {
    let heading = item.section.heading();
    let mut s = error_summary(errors);
    let _ = write!(
        s,
        r#"<span class="nhsuk-caption-l">{} · crisis plan</span><h1>{}</h1>"#,
        esc(&v.person.name),
        esc(&heading)
    );
    if let Some(mark) = item
        .meta
        .entered_in_error
        .as_ref()
        .filter(|_| item.meta.withheld())
    {
        s.push_str(&removed_note(app, "A crisis plan item", mark));
    } else if let Some(now) = &item.current {
        let _ = write!(
            s,
            r#"<blockquote class="app-plan-now"><p>{}</p></blockquote><p class="nhsuk-body-s">{}</p>{}"#,
            esc_multiline(&now.text),
            esc(attribution(app, v, now)),
            earlier_list(app, v, item)
        );
        match &item.meta.entered_in_error {
            Some(mark) => s.push_str(&in_error_note(app, mark)),
            None => {
                let staff = super::staff(app, v).await;
                let mut inner = words_fields(app, v, &staff, form, errors);
                inner.push_str(&html::secondary_button("Save the new words"));
                let _ = write!(
                    s,
                    r#"<h2 id="change-heading">Change the words</h2><p>What it says now stays in the plan's history.</p>{}<p><a href="/case/{}/entry/{}/error">Mark this item as entered in error</a></p>"#,
                    html::post_form(
                        &format!("/case/{}/plan/{}", v.case_id, item.meta.id),
                        &session.csrf,
                        &inner
                    ),
                    esc(&v.case_id),
                    esc(item.meta.id)
                );
            }
        }
    }
    let back = format!("/case/{}#crisis-plan", v.case_id);
    Ok(render(
        app,
        session,
        PageParts {
            title: &format!("{heading}: crisis plan"),
            back: Some((&back, "Back to the case")),
            content: s,
            has_errors: !errors.is_empty(),
            body_class: "",
        },
    )
    .await)
}

/// `GET /case/:id/plan/:iid`.
pub async fn show(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, iid)): Path<(String, String)>,
) -> PageResult {
    let case = case_id(&id)?;
    let v = app.profile().await.view(case, "crisis plan")?;
    let item = find_item(&v, &iid)?;
    let now = item.current.clone();
    let defaults = FormData(vec![
        (
            "text".into(),
            now.as_ref().map(|n| n.text.clone()).unwrap_or_default(),
        ),
        (
            "words_of".into(),
            now.as_ref()
                .map(|n| n.words_of.to_string())
                .unwrap_or_else(|| Participant::Person.key()),
        ),
        (
            "meeting".into(),
            now.and_then(|n| n.meeting)
                .map(|m| m.to_string())
                .unwrap_or_default(),
        ),
    ]);
    item_page(&app, &session, &v, &item, &defaults, &[]).await
}

/// `POST /case/:id/plan/:iid`: new words for an item.
pub async fn change(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, iid)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let item_id = entry_id(&iid)?;
    let form = FormData::from(form);
    let errors = match posted_words(&form) {
        Ok((text, who, meeting)) => match app
            .edit(case, |d| d.revise_plan_item(&item_id, &text, who, meeting))
            .await
        {
            Ok(()) => {
                return Ok(done(
                    &app,
                    &session,
                    "The crisis plan was changed; what it said before is kept",
                    &format!("/case/{case}#crisis-plan"),
                ))
            }
            Err(e) => vec![field_error("plan-text", &e)],
        },
        Err(errors) => errors,
    };
    let v = app.profile().await.view(case, "crisis plan")?;
    let item = find_item(&v, &iid)?;
    item_page(&app, &session, &v, &item, &form, &errors).await
}

/// `POST /case/:id/plan/review`: the date the plan is next to be reviewed by.
pub async fn review(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let form = FormData::from(form);
    let back = format!("/case/{case}#crisis-plan");
    let on = match parse_date("review date", form.get("review_on")) {
        Ok(on) => on,
        // Said beside the date, with what was typed kept, on a page of its own.
        Err(_) => {
            let v = app.profile().await.view(case, "crisis plan")?;
            let message = if form.get("review_on").trim().is_empty() {
                "Enter the date to review the plan by, for example 14 3 2026"
            } else {
                "The review date must be a real date, for example 14 3 2026"
            };
            let errors = [FieldError::new("review_on", message)];
            let heading = format!(
                r#"<span class="nhsuk-caption-l">{}</span><h1>When to review the crisis plan</h1>"#,
                esc(&v.person.name)
            );
            return Ok(super::case_form_page(
                &app,
                &session,
                &v.case_id,
                "When to review the crisis plan",
                &heading,
                "plan/review",
                &review_fields(form.get("review_on"), &errors),
                &errors,
            )
            .await);
        }
    };
    app.edit(case, |d| d.set_plan_review(on)).await?;
    Ok(done(&app, &session, "Review date saved", &back))
}
