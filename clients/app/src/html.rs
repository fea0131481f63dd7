//! HTML building blocks in the NHS design system's markup: the page shell, form fields with their
//! error states, the error summary, summary lists, tags.
//!
//! Pages are rendered on the server as plain strings so every screen works without JavaScript. The
//! one rule that keeps this safe: **every value that came from a user, a file or the network goes
//! through [`esc`]**. The strict Content-Security-Policy the server sends (no inline scripts or
//! styles) is the second line of defence if an escape is ever missed.

use std::fmt::Write as _;

/// Escape text (or an id, a stored value: anything written as text) for use in HTML content and in
/// double-quoted attribute values: the one escape the exports use too.
pub fn esc(s: impl std::fmt::Display) -> String {
    polyphony_core::export::escape_html(&s.to_string())
}

/// Escape text and keep its line breaks visible (notes are written in paragraphs).
pub fn esc_multiline(s: &str) -> String {
    esc(s).replace('\n', "<br>\n")
}

/// A problem with one field of a form: shown in the error summary (linking to the field) and
/// beside the field itself, as the NHS design system asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The id of the input the message belongs to (the summary links to `#id`).
    pub field: String,
    /// What went wrong and what to do, in plain words.
    pub message: String,
}

impl FieldError {
    /// An error for the field with id `field`.
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// The error summary at the top of a form page. Empty when there is no error.
pub fn error_summary(errors: &[FieldError]) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let mut items = String::new();
    for e in errors {
        let _ = write!(
            items,
            r##"<li><a href="#{}">{}</a></li>"##,
            esc(&e.field),
            esc(&e.message)
        );
    }
    format!(
        r#"<div class="nhsuk-error-summary" data-module="nhsuk-error-summary" tabindex="-1" id="error-summary">
<div role="alert"><h2 class="nhsuk-error-summary__heading">There is a problem</h2>
<div class="nhsuk-error-summary__body"><ul class="nhsuk-list nhsuk-error-summary__list">{items}</ul></div></div></div>"#
    )
}

fn error_for<'a>(errors: &'a [FieldError], id: &str) -> Option<&'a FieldError> {
    errors.iter().find(|e| e.field == id)
}

fn error_message(id: &str, e: &FieldError) -> String {
    format!(
        r#"<span class="nhsuk-error-message" id="{}-error"><span class="nhsuk-u-visually-hidden">Error: </span>{}</span>"#,
        esc(id),
        esc(&e.message)
    )
}

fn hint(id: &str, hint: Option<&str>) -> String {
    match hint {
        Some(h) => format!(
            r#"<div class="nhsuk-hint" id="{}-hint">{}</div>"#,
            esc(id),
            esc(h)
        ),
        None => String::new(),
    }
}

/// A form group's classes: marked when its field has an error.
fn group_class(err: Option<&FieldError>) -> &'static str {
    if err.is_some() {
        "nhsuk-form-group nhsuk-form-group--error"
    } else {
        "nhsuk-form-group"
    }
}

fn described_by(id: &str, hint: Option<&str>, error: Option<&FieldError>) -> String {
    let mut ids = Vec::new();
    if hint.is_some() {
        ids.push(format!("{id}-hint"));
    }
    if error.is_some() {
        ids.push(format!("{id}-error"));
    }
    if ids.is_empty() {
        String::new()
    } else {
        format!(r#" aria-describedby="{}""#, esc(ids.join(" ")))
    }
}

/// The NHS design system's date input: separate Day, Month and Year boxes (and, for a date and
/// time, a Time box in UK time), never the browser's own picker, whose order follows the browser's
/// locale (a US-locale browser shows mm/dd/yyyy, so "12/03/2026" would read as 3 December). The
/// boxes post as `{name}-day`, `{name}-month`, `{name}-year` and `{name}-time`; the pages' form
/// reader folds them back into one `{name}` value (`YYYY-MM-DD` or `YYYY-MM-DDTHH:MM`).
pub struct DateInput<'a> {
    /// The group's id (and the error summary's link target).
    pub id: &'a str,
    /// Form field name.
    pub name: &'a str,
    /// The question, as the fieldset's legend.
    pub legend: &'a str,
    /// Current value: `YYYY-MM-DD`, or `YYYY-MM-DDTHH:MM` with a time.
    pub value: &'a str,
    /// Ask for a time too (UK time, 24-hour clock).
    pub with_time: bool,
}

impl DateInput<'_> {
    /// Render, with its error state if `errors` names it.
    pub fn render(&self, errors: &[FieldError]) -> String {
        let err = error_for(errors, self.id);
        let group = group_class(err);
        let (date, time) = self.value.split_once('T').unwrap_or((self.value, ""));
        let mut parts = date.splitn(3, '-');
        let (year, month, day) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("").trim_start_matches('0'),
            parts.next().unwrap_or("").trim_start_matches('0'),
        );
        let input_class = if err.is_some() {
            "nhsuk-input nhsuk-date-input__input nhsuk-input--error"
        } else {
            "nhsuk-input nhsuk-date-input__input"
        };
        let item = |part: &str, label: &str, width: u8, value: &str| {
            format!(
                r#"<div class="nhsuk-date-input__item"><div class="nhsuk-form-group"><label class="nhsuk-label nhsuk-date-input__label" for="{id}-{part}">{label}</label><input class="{input_class} nhsuk-input--width-{width}" id="{id}-{part}" name="{name}-{part}" type="text" inputmode="numeric" value="{value}"></div></div>"#,
                id = esc(self.id),
                name = esc(self.name),
                value = esc(value),
            )
        };
        let mut items = item("day", "Day", 2, day) + &item("month", "Month", 2, month);
        items.push_str(&item("year", "Year", 4, year));
        let hint = if self.with_time {
            items.push_str(&item("time", "Time (UK time)", 5, time));
            "For example, 14 3 2026, and the time on a 24-hour clock in UK time, for example 14:30"
        } else {
            "For example, 14 3 2026"
        };
        format!(
            r#"<div class="{group}"><fieldset class="nhsuk-fieldset" role="group"{described}><legend class="nhsuk-fieldset__legend nhsuk-label">{legend}</legend>{hint}{error}<div class="nhsuk-date-input" id="{id}">{items}</div></fieldset></div>"#,
            described = described_by(self.id, Some(hint), err),
            legend = esc(self.legend),
            hint = self::hint(self.id, Some(hint)),
            error = err.map(|e| error_message(self.id, e)).unwrap_or_default(),
            id = esc(self.id),
        )
    }
}

/// A text-like input (`type` is text, date, datetime-local, email, tel...).
pub struct Input<'a> {
    /// Element id (and the error summary's link target).
    pub id: &'a str,
    /// Form field name.
    pub name: &'a str,
    /// Visible label.
    pub label: &'a str,
    /// Input type.
    pub kind: &'a str,
    /// Current value.
    pub value: &'a str,
    /// Hint under the label.
    pub hint: Option<&'a str>,
    /// Extra CSS classes for the input (widths).
    pub class: &'a str,
    /// Extra attributes, already escaped (autocomplete, inputmode, required...).
    pub attrs: &'a str,
}

impl<'a> Input<'a> {
    /// A plain text input.
    pub fn text(id: &'a str, name: &'a str, label: &'a str, value: &'a str) -> Self {
        Input {
            id,
            name,
            label,
            kind: "text",
            value,
            hint: None,
            class: "",
            attrs: "",
        }
    }

    /// Render, with its error state if `errors` names it.
    pub fn render(&self, errors: &[FieldError]) -> String {
        let err = error_for(errors, self.id);
        let group = group_class(err);
        let input_class = if err.is_some() {
            format!("nhsuk-input nhsuk-input--error {}", self.class)
        } else {
            format!("nhsuk-input {}", self.class)
        };
        format!(
            r#"<div class="{group}"><label class="nhsuk-label" for="{id}">{label}</label>{hint}{error}<input class="{ic}" id="{id}" name="{name}" type="{kind}" value="{value}"{described}{attrs}></div>"#,
            id = esc(self.id),
            label = esc(self.label),
            hint = hint(self.id, self.hint),
            error = err.map(|e| error_message(self.id, e)).unwrap_or_default(),
            ic = esc(input_class.trim()),
            name = esc(self.name),
            kind = esc(self.kind),
            value = esc(self.value),
            described = described_by(self.id, self.hint, err),
            attrs = if self.attrs.is_empty() {
                String::new()
            } else {
                format!(" {}", self.attrs)
            },
        )
    }
}

/// A textarea.
pub struct TextArea<'a> {
    /// Element id.
    pub id: &'a str,
    /// Form field name.
    pub name: &'a str,
    /// Visible label.
    pub label: &'a str,
    /// Current text.
    pub value: &'a str,
    /// Hint under the label.
    pub hint: Option<&'a str>,
    /// Visible rows.
    pub rows: u32,
    /// Extra attributes, already escaped.
    pub attrs: &'a str,
}

impl TextArea<'_> {
    /// Render, with its error state if `errors` names it.
    pub fn render(&self, errors: &[FieldError]) -> String {
        let id = self.id;
        let err = error_for(errors, id);
        let group = group_class(err);
        let class = if err.is_some() {
            "nhsuk-textarea nhsuk-textarea--error"
        } else {
            "nhsuk-textarea"
        };
        format!(
            r#"<div class="{group}"><label class="nhsuk-label" for="{eid}">{label}</label>{hint}{error}<textarea class="{class}" id="{eid}" name="{name}" rows="{rows}"{described}{extra}>{value}</textarea></div>"#,
            eid = esc(id),
            label = esc(self.label),
            hint = hint(id, self.hint),
            error = err.map(|e| error_message(id, e)).unwrap_or_default(),
            name = esc(self.name),
            rows = self.rows,
            described = described_by(id, self.hint, err),
            extra = if self.attrs.is_empty() {
                String::new()
            } else {
                format!(" {}", self.attrs)
            },
            value = esc(self.value),
        )
    }
}

/// A select with `(value, label)` options.
pub fn select(
    id: &str,
    name: &str,
    label: &str,
    options: &[(String, String)],
    selected: &str,
    errors: &[FieldError],
) -> String {
    let err = error_for(errors, id);
    let group = group_class(err);
    let mut opts = String::new();
    for (v, l) in options {
        let sel = if v == selected { " selected" } else { "" };
        let _ = write!(
            opts,
            r#"<option value="{}"{sel}>{}</option>"#,
            esc(v),
            esc(l)
        );
    }
    format!(
        r#"<div class="{group}"><label class="nhsuk-label" for="{id}">{label}</label>{error}<select class="nhsuk-select{ec}" id="{id}" name="{name}"{described}>{opts}</select></div>"#,
        id = esc(id),
        label = esc(label),
        error = err.map(|e| error_message(id, e)).unwrap_or_default(),
        ec = if err.is_some() {
            " nhsuk-select--error"
        } else {
            ""
        },
        name = esc(name),
        described = described_by(id, None, err),
    )
}

/// Radios or checkboxes in a fieldset with a legend.
pub struct Choices<'a> {
    /// Id prefix; the first item gets this id (the error summary's link target).
    pub id: &'a str,
    /// Field name.
    pub name: &'a str,
    /// The question.
    pub legend: &'a str,
    /// `(value, label)` pairs.
    pub options: &'a [(String, String)],
    /// Values that are checked.
    pub checked: &'a [String],
    /// Checkboxes (several) or radios (one).
    pub multiple: bool,
    /// Lay radios side by side.
    pub inline: bool,
    /// Hint under the legend.
    pub hint: Option<&'a str>,
}

impl Choices<'_> {
    /// Render, with its error state if `errors` names it.
    pub fn render(&self, errors: &[FieldError]) -> String {
        let err = error_for(errors, self.id);
        let (kind, input_type) = if self.multiple {
            ("checkboxes", "checkbox")
        } else {
            ("radios", "radio")
        };
        let mut items = String::new();
        for (i, (v, l)) in self.options.iter().enumerate() {
            let item_id = if i == 0 {
                self.id.to_string()
            } else {
                format!("{}-{}", self.id, i + 1)
            };
            let checked = if self.checked.iter().any(|c| c == v) {
                " checked"
            } else {
                ""
            };
            let _ = write!(
                items,
                r#"<div class="nhsuk-{kind}__item"><input class="nhsuk-{kind}__input" id="{iid}" name="{name}" type="{input_type}" value="{v}"{checked}><label class="nhsuk-label nhsuk-{kind}__label" for="{iid}">{l}</label></div>"#,
                iid = esc(&item_id),
                name = esc(self.name),
                v = esc(v),
                l = esc(l),
            );
        }
        let group = group_class(err);
        let inline = if self.inline {
            format!(" nhsuk-{kind}--inline")
        } else {
            String::new()
        };
        format!(
            r#"<div class="{group}"><fieldset class="nhsuk-fieldset"{described}><legend class="nhsuk-fieldset__legend nhsuk-fieldset__legend--s">{legend}</legend>{hint}{error}<div class="nhsuk-{kind}{inline}">{items}</div></fieldset></div>"#,
            described = described_by(self.id, self.hint, err),
            legend = esc(self.legend),
            hint = hint(self.id, self.hint),
            error = err.map(|e| error_message(self.id, e)).unwrap_or_default(),
        )
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(token: &str) -> String {
    format!(
        r#"<input type="hidden" name="_csrf" value="{}">"#,
        esc(token)
    )
}

/// A form that posts to `action`, with the CSRF field, a one-time token (a resent form is
/// applied once, see [`crate::once`]) and `inner` content.
///
/// `autocomplete="off"`: what is typed here is record text, and browsers otherwise write form
/// fields to their own profile on disk, outside the encrypted store (Chromium keeps them for
/// restoring tabs and for suggesting them again); with it off they keep neither.
pub fn post_form(action: &str, csrf: &str, inner: &str) -> String {
    format!(
        r#"<form method="post" action="{}" novalidate autocomplete="off">{}<input type="hidden" name="_once" value="{}">{}</form>"#,
        esc(action),
        csrf_field(csrf),
        crate::auth::random_token(),
        inner
    )
}

/// A POST form that can carry a file (`multipart/form-data`): as [`post_form`] otherwise. Its
/// tokens come first, so the guards read them before the file.
pub fn post_file_form(action: &str, csrf: &str, inner: &str) -> String {
    post_form(action, csrf, inner).replacen(
        " novalidate",
        r#" enctype="multipart/form-data" novalidate"#,
        1,
    )
}

/// A submit button.
pub fn button(label: &str) -> String {
    format!(
        r#"<button class="nhsuk-button" data-module="nhsuk-button" type="submit">{}</button>"#,
        esc(label)
    )
}

/// A secondary submit button.
pub fn secondary_button(label: &str) -> String {
    format!(
        r#"<button class="nhsuk-button nhsuk-button--secondary" data-module="nhsuk-button" type="submit">{}</button>"#,
        esc(label)
    )
}

/// A summary list from `(key, value_html)` rows; values are already HTML.
pub fn summary_list(rows: &[(String, String)]) -> String {
    let mut out = String::from(r#"<dl class="nhsuk-summary-list">"#);
    for (k, v) in rows {
        let _ = write!(
            out,
            r#"<div class="nhsuk-summary-list__row"><dt class="nhsuk-summary-list__key">{}</dt><dd class="nhsuk-summary-list__value">{}</dd></div>"#,
            esc(k),
            v
        );
    }
    out.push_str("</dl>");
    out
}

/// A tag (status label). `colour` is one of the design system's tag colours or empty for blue.
pub fn tag(text: &str, colour: &str) -> String {
    let class = if colour.is_empty() {
        "nhsuk-tag".to_string()
    } else {
        format!("nhsuk-tag nhsuk-tag--{colour}")
    };
    format!(r#"<strong class="{}">{}</strong>"#, class, esc(text))
}

/// A link.
pub fn link(href: &str, text: &str) -> String {
    format!(r#"<a href="{}">{}</a>"#, esc(href), esc(text))
}

/// The NHS logo as the design system's header shows it.
const NHS_LOGO: &str = r#"<svg class="nhsuk-header__logo" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 200 80" height="40" width="100" focusable="false" role="img" aria-label="NHS"><title>NHS</title><path fill="currentcolor" d="M200 0v80H0V0h200Zm-27.5 5.5c-14.5 0-29 5-29 22 0 10.2 7.7 13.5 14.7 16.3l.7.3c5.4 2 10.1 3.9 10.1 8.4 0 6.5-8.5 7.5-14 7.5s-12.5-1.5-16-3.5L135 70c5.5 2 13.5 3.5 20 3.5 15.5 0 32-4.5 32-22.5 0-19.5-25.5-16.5-25.5-25.5 0-5.5 5.5-6.5 12.5-6.5a35 35 0 0 1 14.5 3l4-13.5c-4.5-2-12-3-20-3Zm-131 2h-22l-14 65H22l9-45h.5l13.5 45h21.5l14-65H64l-9 45h-.5l-13-45Zm63 0h-18l-13 65h17l6-28H117l-5.5 28H129l13.5-65H125L119.5 32h-20l5-24.5Z"/></svg>"#;

/// Everything a page needs besides its content.
pub struct Shell<'a> {
    /// The page title (also the `<title>`, after the service name).
    pub title: &'a str,
    /// The sync status badge, already rendered.
    pub status: &'a str,
    /// A back link: `(href, text)`.
    pub back: Option<(&'a str, &'a str)>,
    /// A one-off success message from the previous action.
    pub flash: Option<&'a str>,
    /// True when the page has form errors (the title then starts "Error: ").
    pub has_errors: bool,
    /// The CSRF token, for the page script's requests.
    pub csrf: &'a str,
    /// Extra class on `<body>` (e.g. for the printable copy).
    pub body_class: &'a str,
}

/// The whole page: skip link, NHS header, sync status, back link, flash, content, footer.
pub fn page(shell: &Shell<'_>, content: &str) -> String {
    let title = if shell.has_errors {
        format!("Error: {} - Polyphony", shell.title)
    } else {
        format!("{} - Polyphony", shell.title)
    };
    let back = shell
        .back
        .map(|(href, text)| {
            format!(
                r#"<a class="nhsuk-back-link" href="{}">{}</a>"#,
                esc(href),
                esc(text)
            )
        })
        .unwrap_or_default();
    let flash = shell
        .flash
        .map(|f| {
            format!(
                r#"<div class="nhsuk-notification-banner nhsuk-notification-banner--success" role="alert" aria-labelledby="flash-title" data-module="nhsuk-notification-banner"><div class="nhsuk-notification-banner__header"><h2 class="nhsuk-notification-banner__title" id="flash-title">Success</h2></div><div class="nhsuk-notification-banner__content"><p class="nhsuk-notification-banner__heading">{}</p></div></div>"#,
                esc(f)
            )
        })
        .unwrap_or_default();
    format!(
        r##"<!DOCTYPE html>
<html lang="en-GB">
<head>
<meta charset="utf-8">
<title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}">
<link rel="icon" href="/assets/images/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/assets/nhsuk-frontend.min.css">
<link rel="stylesheet" href="/assets/app.css">
<script src="/assets/app.js" defer></script>
</head>
<body class="{body_class}">
<a class="nhsuk-skip-link" href="#maincontent">Skip to main content</a>
<header class="nhsuk-header" role="banner">
<div class="nhsuk-header__container nhsuk-width-container">
<div class="nhsuk-header__service">
<a class="nhsuk-header__service-logo" href="/" aria-label="Polyphony caseload">{logo}<span class="nhsuk-header__service-name">Polyphony</span></a>
</div>
</div>
</header>
<div class="nhsuk-width-container">
{status}
{back}
<main class="nhsuk-main-wrapper" id="maincontent">
{flash}
{content}
</main>
</div>
<footer class="nhsuk-footer" role="contentinfo">
<div class="nhsuk-width-container"><div class="nhsuk-footer__meta">
<h2 class="nhsuk-u-visually-hidden">About this app</h2>
<p class="nhsuk-body-s">Polyphony keeps your work encrypted on this device and sends it to the borough server when it can reach it. A copy you download or print (the person’s copy, an export, a network copy) leaves that protection: it is not encrypted, and making it is recorded in the person’s list of who has seen their record.</p>
</div></div>
</footer>
</body>
</html>
"##,
        title = esc(&title),
        csrf = esc(shell.csrf),
        body_class = esc(shell.body_class),
        logo = NHS_LOGO,
        status = shell.status,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_could_open_markup() {
        assert_eq!(
            esc(r#"<script>"a" & 'b'</script>"#),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn a_field_in_error_is_linked_from_the_summary_and_described() {
        let errors = vec![FieldError::new("name", "Enter the person's name")];
        let summary = error_summary(&errors);
        assert!(summary.contains(r##"href="#name""##));
        let field = Input::text("name", "name", "Full name", "").render(&errors);
        assert!(field.contains("nhsuk-form-group--error"));
        assert!(field.contains(r#"aria-describedby="name-error""#));
        assert!(field.contains("Error: </span>Enter the person&#39;s name"));
    }

    #[test]
    fn choices_mark_checked_values_and_give_each_item_an_id() {
        let opts = vec![
            ("a".to_string(), "A".to_string()),
            ("b".to_string(), "B".to_string()),
        ];
        let html = Choices {
            id: "who",
            name: "who",
            legend: "Who?",
            options: &opts,
            checked: &["b".to_string()],
            multiple: true,
            inline: false,
            hint: None,
        }
        .render(&[]);
        assert!(html.contains(r#"id="who" name="who" type="checkbox" value="a">"#));
        assert!(html.contains(r#"id="who-2" name="who" type="checkbox" value="b" checked>"#));
    }
}
