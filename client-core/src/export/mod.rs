//! Exports: the record leaving Polyphony, for the trust, for the person, and for the team.
//!
//! A case belongs to the person as much as to the team, and it has to reach the trust's electronic
//! record. Each export here is a pure function of a [`CaseView`] (plus the accesses the server
//! audited, when the device has synced), so the CLI, the app and the server can all produce the
//! same bytes, and tests need no store, no network and no clock.
//!
//! - [`fhir`]: the case as a FHIR R4 `collection` Bundle with UK Core profiles where they exist,
//!   for the trust's record. The mapping is documented in `docs/EXPORTS.md`.
//! - [`person_copy`]: the person's own readable, printable copy of the whole record, in plain
//!   language, as self-contained HTML and as PDF.
//! - [`subject_access`]: everything held about the person, machine-readable (JSON), with the HTML
//!   copy as its readable form.
//! - [`network_copy`]: the copy for one named member of the person's network, refused unless
//!   that member's consent to receive the record is given.
//! - [`figures`]: the team's fidelity figures as a table (CLI and app) and as CSV.
//! - [`access`]: who looked at or changed the record, in words the person reads, and what a
//!   device records when a file leaves it or a copy is given.
//!
//! Every file made here leaves the encrypted store: it is not encrypted, it is recorded (with its
//! kind) in the person's access list, and [`file_name`] names it for a person to recognise.
//!
//! Nothing is left out because it was entered in error: such entries are exported marked as such
//! (FHIR's own `entered-in-error` status, or struck through with who marked them, when and why).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::view::CaseView;
use crate::model::AuthorView;
use crate::model::Date;
use crate::model::{Participant, Stored};
use crate::EntryId;

pub mod access;
pub mod fhir;
pub mod figures;
pub mod network_copy;
pub mod person_copy;
mod plain;
pub mod subject_access;

/// One access to the record, as the borough server's audit log recorded it: what the server
/// sends in an `AccessLog` frame, what the device keeps, and what every copy lists.
///
/// The caller fills these from the server's audit when the device has synced (a device that has
/// never synced passes an empty slice: the exports then say that no accesses are known yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// When (RFC 3339).
    pub at: String,
    /// Who: the practitioner's name as the audit log shows it.
    pub who: String,
    /// The device it was made from (a device id), when known.
    pub device: Option<String>,
    /// What was done, as the server worded it for its own log (e.g. "case show", "export").
    pub what: String,
    /// What kind of access it was, so a copy can say it in plain words (absent from servers
    /// older than the field: the copy then says only who used the record, and when).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<access::AccessKind>,
}

/// What every app and command says when a file is made from the record: plainly, that it is not
/// protected any more.
pub const NOT_ENCRYPTED: &str = "This file is not encrypted: it leaves the protection of \
Polyphony's encrypted store, and anyone who can open the folder it is saved in can read it. Keep \
it somewhere safe, give it only to whom it is for, and delete it when it is no longer needed. \
Making it is recorded in the person's list of who has seen their record.";

/// A file name a person recognises: `Maria Lindqvist - record copy - 2026-03-14.pdf`.
///
/// Safe on every system people open it on: the characters Windows, macOS or Linux refuse or
/// misread in a name (`/ \ : * ? " < > |`, control characters) become spaces, runs of spaces
/// become one, no part starts or ends with a dot or a space, and each part is at most 60
/// characters. Letters outside ASCII (María) are kept: every current system stores them.
pub fn file_name(person: &str, what: &str, date: Date, extension: &str) -> String {
    let person = safe_part(person);
    let person = if person.is_empty() {
        "record".to_string()
    } else {
        person
    };
    format!(
        "{person} - {} - {date}.{}",
        safe_part(what),
        safe_part(extension)
    )
}

fn safe_part(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|') {
                ' '
            } else {
                c
            }
        })
        .collect();
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    let joined: String = words.join(" ").chars().take(60).collect();
    joined
        .trim_matches(|c: char| c == '.' || c.is_whitespace())
        .to_string()
}

/// The file name of an export of this case, made on `date` (the UK date today).
pub fn export_file_name(view: &CaseView, kind: access::ExportKind, date: Date) -> String {
    file_name(&view.person.name, kind.file_label(), date, kind.extension())
}

/// What can go wrong while exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Writing the CSV table failed (a bug: it writes to memory).
    #[error("the figures could not be written as CSV: {0}")]
    Csv(#[from] csv::Error),
    /// The fonts the PDF copy is set in could not be had.
    #[error(transparent)]
    Fonts(#[from] person_copy::FontError),
    /// A font could not be cut down to the glyphs a PDF uses (a damaged font file).
    #[error("the font {font} could not be subset for the PDF ({reason}): fetch the fonts again with scripts/pdf-fonts.sh")]
    FontSubset {
        /// The font file.
        font: &'static str,
        /// What the subsetter said.
        reason: String,
    },
}

/// Who a participant (the person, a network member, a practitioner) is, by name, for display.
///
/// Built once per case from the network, the care team and every attribution in the record, so a
/// practitioner who wrote something but has since left the care team is still named.
#[derive(Debug, Clone, Default)]
pub(crate) struct Names {
    person: String,
    members: BTreeMap<EntryId, (String, String)>,
    practitioners: BTreeMap<String, String>,
}

impl Names {
    pub(crate) fn of(view: &CaseView) -> Names {
        let mut names = Names {
            person: view
                .person
                .preferred_name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| view.person.name.clone()),
            ..Default::default()
        };
        for m in &view.network {
            let (name, relationship) = if m.meta.withheld() {
                (access::REMOVED.to_string(), String::new())
            } else {
                (m.name.clone(), m.relationship.clone())
            };
            names.members.insert(m.meta.id, (name, relationship));
        }
        for a in authors(view) {
            names
                .practitioners
                .entry(a.practitioner.clone())
                .or_insert_with(|| a.practitioner_name.clone());
        }
        // Staff a meeting noted from the team list, who may never have written to the case.
        for m in view.meetings.iter().filter(|m| !m.meta.withheld()) {
            for st in &m.staff {
                names
                    .practitioners
                    .entry(st.practitioner.to_string())
                    .or_insert_with(|| st.name.clone());
            }
        }
        // The care team's own record of a name wins over what a device signed with.
        for c in &view.care_team {
            names
                .practitioners
                .insert(c.practitioner.to_string(), c.name.clone());
        }
        names
    }

    /// The name to show for a participant; one written by a newer version, as written.
    pub(crate) fn name(&self, who: &Stored<Participant>) -> String {
        match who.known() {
            Some(Participant::Person) => self.person.clone(),
            Some(Participant::Member(id)) => self
                .members
                .get(&id)
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| format!("someone no longer in the record ({id})")),
            Some(Participant::Practitioner(id)) => self
                .practitioners
                .get(&id.to_string())
                .cloned()
                .unwrap_or_else(|| format!("a practitioner ({id})")),
            None => who.to_string(),
        }
    }

    /// A network member's name and relationship, by member id, if they are in the record.
    pub(crate) fn member(&self, id: EntryId) -> Option<(&str, &str)> {
        self.members.get(&id).map(|(n, r)| (n.as_str(), r.as_str()))
    }

    /// The name with who they are to the person, e.g. "Ana (sister)".
    pub(crate) fn describe(&self, who: &Stored<Participant>) -> String {
        match who.known() {
            Some(Participant::Member(id)) => match self.members.get(&id) {
                Some((n, rel)) if rel.is_empty() => n.clone(),
                Some((n, rel)) => format!("{n} ({rel})"),
                None => self.name(who),
            },
            Some(Participant::Practitioner(_)) => format!("{} (practitioner)", self.name(who)),
            _ => self.name(who),
        }
    }

    /// As [`Names::describe`], with a member of staff's role at this meeting ("Jo (peer support
    /// worker)") as the meeting noted it, else their care-team part, else "practitioner".
    pub(crate) fn describe_at(
        &self,
        view: &CaseView,
        m: &crate::model::view::MeetingView,
        who: &Stored<Participant>,
    ) -> String {
        match who.known() {
            Some(Participant::Practitioner(id)) => {
                let role = view
                    .role_at(m, id)
                    .map_or("member of staff", crate::model::StaffRole::label);
                format!("{} ({role})", self.name(who))
            }
            _ => self.describe(who),
        }
    }

    /// Participants in the order people read them: the person, then their network, then the
    /// practitioners, each by name (stored order is by id, which means nothing to a reader).
    pub(crate) fn in_reading_order<'k>(
        &self,
        who: impl IntoIterator<Item = &'k Stored<Participant>>,
    ) -> Vec<&'k Stored<Participant>> {
        let mut v: Vec<&Stored<Participant>> = who.into_iter().collect();
        v.sort_by_key(|p| {
            let rank = match p.known() {
                Some(Participant::Person) => 0,
                Some(Participant::Member(_)) => 1,
                _ => 2,
            };
            (rank, self.name(p), p.to_string())
        });
        v
    }

    /// The person's name as shown (their preferred name when they gave one).
    pub(crate) fn person(&self) -> &str {
        &self.person
    }
}

/// Every attribution in the record: who opened the case, created each entry, recorded each
/// consent, read-back, position and status change, and marked anything entered in error.
pub(crate) fn authors(view: &CaseView) -> Vec<&AuthorView> {
    let mut out: Vec<&AuthorView> = Vec::new();
    out.extend(view.created_by.iter());
    for m in &view.network {
        out.extend(m.meta.created_by.iter());
        out.extend(m.meta.entered_in_error.iter().filter_map(|e| e.by.as_ref()));
        out.extend(m.consent.iter().filter_map(|c| c.recorded_by.as_ref()));
    }
    for c in &view.care_team {
        out.extend(c.meta.created_by.iter());
        out.extend(c.meta.entered_in_error.iter().filter_map(|e| e.by.as_ref()));
    }
    for m in &view.meetings {
        out.extend(m.meta.created_by.iter());
        out.extend(m.meta.entered_in_error.iter().filter_map(|e| e.by.as_ref()));
        out.extend(m.readback.iter().filter_map(|r| r.recorded_by.as_ref()));
    }
    for d in &view.decisions {
        out.extend(d.meta.created_by.iter());
        out.extend(d.meta.entered_in_error.iter().filter_map(|e| e.by.as_ref()));
        out.extend(d.positions.iter().filter_map(|p| p.recorded_by.as_ref()));
        out.extend(d.status_history.iter().filter_map(|s| s.by.as_ref()));
        for a in &d.actions {
            out.extend(a.meta.created_by.iter());
            out.extend(a.meta.entered_in_error.iter().filter_map(|e| e.by.as_ref()));
        }
    }
    for c in &view.conflicts {
        out.extend(c.values.iter().filter_map(|v| v.author.as_ref()));
    }
    out
}

#[cfg(test)]
pub(crate) mod testcase;
#[cfg(test)]
pub(crate) mod tests;

/// Escape text for HTML (and XHTML) element content and quoted attribute values: the one escape
/// every page and copy uses, the app's included.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
