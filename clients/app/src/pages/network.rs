//! Adding and changing the people in the person's network. Members are never removed: they leave
//! (and stay in the record), or an entry made by mistake is marked entered in error.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Form};
use polyphony_core::model::view::{CaseView, ConsentStanding, MemberView};
use polyphony_core::model::{ConsentState, MemberField, NewMember, Role};

use super::{
    case_id, done, entry_id, field_error, render, AppState, FormData, PageError, PageParts,
    PageResult,
};
use crate::auth::SessionCtx;
use crate::html::{self, error_summary, esc, Choices, FieldError, Input};
use crate::state::App;

fn role_options() -> Vec<(String, String)> {
    Role::ALL
        .iter()
        .map(|r| {
            let label = match r {
                Role::Family => "Family",
                Role::Friend => "Friend",
                Role::Professional => "Professional (GP, social worker, teacher...)",
                Role::Peer => "Peer supporter",
                Role::Other => "Someone else",
            };
            (r.as_str().to_string(), label.to_string())
        })
        .collect()
}

fn member_fields(form: &FormData, errors: &[FieldError]) -> String {
    let mut s = String::new();
    s.push_str(
        &Input {
            attrs: r#"autocomplete="off""#,
            ..Input::text("member-name", "name", "Name", form.get("name"))
        }
        .render(errors),
    );
    s.push_str(&Input {
        hint: Some("In the person's own words, for example 'my big sister' or 'the neighbour who checks on me'."),
        ..Input::text("relationship", "relationship", "Relationship to the person", form.get("relationship"))
    }
    .render(errors));
    let checked = [form.get("role").to_string()];
    s.push_str(
        &Choices {
            id: "role",
            name: "role",
            legend: "Role",
            options: &role_options(),
            checked: &checked,
            multiple: false,
            inline: false,
            hint: Some("Where they appear on the network picture."),
        }
        .render(errors),
    );
    s.push_str(
        &Input {
            kind: "tel",
            class: "nhsuk-input--width-20",
            attrs: r#"autocomplete="off""#,
            ..Input::text("phone", "phone", "Telephone (optional)", form.get("phone"))
        }
        .render(errors),
    );
    s.push_str(
        &Input {
            kind: "email",
            attrs: r#"autocomplete="off" spellcheck="false""#,
            ..Input::text("email", "email", "Email (optional)", form.get("email"))
        }
        .render(errors),
    );
    s
}

async fn new_page(
    app: &App,
    session: &SessionCtx,
    v: &CaseView,
    form: &FormData,
    errors: &[FieldError],
) -> Response {
    let inner = format!(
        "{}{}",
        member_fields(form, errors),
        html::button("Add to the network")
    );
    let heading = format!(
        r#"<span class="nhsuk-caption-l">{}</span><h1>Add someone to the network</h1><p>Ask the person: who is important to you, and who would you like to be here?</p>"#,
        esc(&v.person.name)
    );
    super::case_form_page(
        app,
        session,
        &v.case_id,
        "Add someone to the network",
        &heading,
        "members",
        &inner,
        errors,
    )
    .await
}

/// `GET /case/:id/members/new`.
pub async fn new_form(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
) -> PageResult {
    let case = case_id(&id)?;
    let v = app.profile().await.view(case, "add network member")?;
    let form = FormData(vec![("role".into(), "family".into())]);
    Ok(new_page(&app, &session, &v, &form, &[]).await)
}

fn check(form: &FormData) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if form.opt("name").is_none() {
        errors.push(FieldError::new("member-name", "Enter their name"));
    }
    if form.opt("relationship").is_none() {
        errors.push(FieldError::new(
            "relationship",
            "Enter their relationship to the person, in the person's words",
        ));
    }
    if form.get("role").parse::<Role>().is_err() {
        errors.push(FieldError::new("role", "Choose their role"));
    }
    errors
}

/// `POST /case/:id/members`.
pub async fn create(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let form = FormData::from(form);
    let mut errors = check(&form);
    if errors.is_empty() {
        let new = NewMember {
            name: form.get("name").to_string(),
            relationship: form.get("relationship").to_string(),
            role: form.get("role").parse().ok(),
            phone: form.opt("phone").map(str::to_string),
            email: form.opt("email").map(str::to_string),
            invited_by: None,
            joined: None,
        };
        let name = new.name.trim().to_string();
        match app.edit(case, |d| d.add_member(new)).await {
            Ok(_) => {
                return Ok(done(
                    &app,
                    &session,
                    &format!("{name} was added to the network"),
                    &format!("/case/{case}#network"),
                ))
            }
            Err(e) => errors.push(field_error("member-name", &e)),
        }
    }
    let v = app.profile().await.view(case, "add network member")?;
    Ok(new_page(&app, &session, &v, &form, &errors).await)
}

fn member_form_values(m: &MemberView) -> FormData {
    FormData(vec![
        ("name".into(), m.name.clone()),
        ("relationship".into(), m.relationship.clone()),
        ("role".into(), m.role.to_string()),
        ("phone".into(), m.phone.clone().unwrap_or_default()),
        ("email".into(), m.email.clone().unwrap_or_default()),
    ])
}

async fn edit_page(
    app: &App,
    session: &SessionCtx,
    v: &CaseView,
    m: &MemberView,
    form: &FormData,
    errors: &[FieldError],
) -> Response {
    let base = format!("/case/{}/member/{}", v.case_id, m.meta.id);
    let back = format!("/case/{}#network", v.case_id);
    if let Some(mark) = m
        .meta
        .entered_in_error
        .as_ref()
        .filter(|_| m.meta.withheld())
    {
        // Nothing of who they were: only that someone was here, and who removed them, when, why.
        let content = format!(
            r#"<span class="nhsuk-caption-l">Network of {}</span><h1>Removed from this record</h1>{}"#,
            esc(&v.person.name),
            super::removed_note(app, "A network member", mark)
        );
        return render(
            app,
            session,
            PageParts {
                title: "Removed from this record",
                back: Some((&back, "Back to the case")),
                content,
                has_errors: false,
                body_class: "",
            },
        )
        .await;
    }
    let inner = format!(
        "{}{}",
        member_fields(form, errors),
        html::button("Save changes")
    );
    let mut content = format!(
        r#"<div class="nhsuk-grid-row"><div class="nhsuk-grid-column-two-thirds">{}<span class="nhsuk-caption-l">Network of {}</span><h1>{}</h1>{}"#,
        error_summary(errors),
        esc(&v.person.name),
        esc(&m.name),
        html::post_form(&base, &session.csrf, &inner)
    );
    content.push_str(&consent_section(m, &base, &session.csrf));
    if m.left.is_none() {
        content.push_str("<h2>Leaving the network</h2><p>They stay in the record; they are no longer invited to meetings.</p>");
        content.push_str(&html::post_form(
            &format!("{base}/leave"),
            &session.csrf,
            &html::secondary_button("Record that they left the network"),
        ));
    }
    content.push_str(&format!(
        r#"<p><a href="/case/{}/entry/{}/error">Mark {} as entered in error</a></p></div></div>"#,
        esc(&v.case_id),
        esc(m.meta.id),
        esc(&m.name)
    ));
    render(
        app,
        session,
        PageParts {
            title: &m.name,
            back: Some((&back, "Back to the case")),
            content,
            has_errors: !errors.is_empty(),
            body_class: "",
        },
    )
    .await
}

/// Where the person's consent for this member to receive the record stands, and the button to
/// record the change of it.
fn consent_section(m: &MemberView, base: &str, csrf: &str) -> String {
    let mut s = String::from("<h2>Consent to receive the record</h2>");
    s.push_str(&format!(
        "<p>{}</p>",
        // The words every screen and copy uses (`MemberView::consent_words`): never recorded is
        // not a refusal.
        match m.consent() {
            ConsentStanding::Given => "The person has given consent for them to receive the record.",
            ConsentStanding::Withdrawn => "The person has withdrawn consent for them to receive the record.",
            ConsentStanding::NotRecorded => "Whether the person consents to them receiving the record has not been recorded. Ask the person.",
        }
    ));
    let inner = if m.consent_given {
        format!(
            r#"<input type="hidden" name="state" value="{}">{}"#,
            ConsentState::Revoked,
            html::secondary_button("Record that consent was withdrawn")
        )
    } else {
        format!(
            r#"<input type="hidden" name="state" value="{}">{}"#,
            ConsentState::Given,
            html::secondary_button("Record that the person gave consent")
        )
    };
    s.push_str(&html::post_form(&format!("{base}/consent"), csrf, &inner));
    s
}

fn find_member(v: &CaseView, id: &str) -> Result<MemberView, PageError> {
    let wanted = id.parse::<polyphony_core::EntryId>().ok();
    v.network
        .iter()
        .find(|m| Some(m.meta.id) == wanted)
        .cloned()
        .ok_or_else(|| {
            PageError::NotFound(format!("there is no network member '{id}' in this case"))
        })
}

/// `GET /case/:id/member/:mid`.
pub async fn edit_form(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, mid)): Path<(String, String)>,
) -> PageResult {
    let case = case_id(&id)?;
    let v = app.profile().await.view(case, "network member")?;
    let m = find_member(&v, &mid)?;
    Ok(edit_page(&app, &session, &v, &m, &member_form_values(&m), &[]).await)
}

/// `POST /case/:id/member/:mid`: save the fields that changed.
pub async fn save(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, mid)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let member = entry_id(&mid)?;
    let form = FormData::from(form);
    let v = app.profile().await.view(case, "network member")?;
    let m = find_member(&v, &mid)?;
    let mut errors = check(&form);
    if errors.is_empty() {
        let old = member_form_values(&m);
        for (field, key, id) in [
            (MemberField::Name, "name", "member-name"),
            (MemberField::Relationship, "relationship", "relationship"),
            (MemberField::Role, "role", "role"),
            (MemberField::Phone, "phone", "phone"),
            (MemberField::Email, "email", "email"),
        ] {
            let new = form.get(key).trim();
            if new == old.get(key).trim() {
                continue;
            }
            let value = (!new.is_empty()).then_some(new);
            if let Err(e) = app
                .edit(case, |d| d.set_member(&member, field, value))
                .await
            {
                errors.push(field_error(id, &e));
            }
        }
    }
    if !errors.is_empty() {
        return Ok(edit_page(&app, &session, &v, &m, &form, &errors).await);
    }
    Ok(done(
        &app,
        &session,
        "Changes saved",
        &format!("/case/{case}#network"),
    ))
}

/// `POST /case/:id/member/:mid/leave`.
pub async fn leave(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, mid)): Path<(String, String)>,
) -> PageResult {
    let case = case_id(&id)?;
    let member = entry_id(&mid)?;
    app.edit(case, |d| d.member_leaves(&member, None)).await?;
    Ok(done(
        &app,
        &session,
        "Recorded that they left the network",
        &format!("/case/{case}#network"),
    ))
}

/// `POST /case/:id/member/:mid/consent`.
pub async fn consent(
    State(app): State<AppState>,
    Extension(session): Extension<SessionCtx>,
    Path((id, mid)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let case = case_id(&id)?;
    let member = entry_id(&mid)?;
    let form = FormData::from(form);
    let state: ConsentState = form
        .get("state")
        .parse()
        .map_err(|e: polyphony_core::model::ModelError| PageError::NotFound(e.to_string()))?;
    app.edit(case, |d| d.record_consent(&member, state, None))
        .await?;
    Ok(done(
        &app,
        &session,
        "Consent recorded",
        &format!("/case/{case}/member/{member}"),
    ))
}
