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
//! - [`figures`]: the team's fidelity figures as a table (CLI and app) and as CSV.
//!
//! Nothing is left out because it was entered in error: such entries are exported marked as such
//! (FHIR's own `entered-in-error` status, or struck through with who marked them, when and why).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::view::{AuthorView, CaseView};

pub mod fhir;
pub mod figures;
pub mod person_copy;
mod plain;
pub mod subject_access;

/// One access to the record, as the borough server's audit log recorded it.
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
    /// What was done, e.g. "case show", "export".
    pub what: String,
}

/// What can go wrong while exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Writing the CSV table failed (a bug: it writes to memory).
    #[error("the figures could not be written as CSV: {0}")]
    Csv(#[from] csv::Error),
}

/// Who a participant key (`person`, `member:<id>`, `practitioner:<id>`) names, for display.
///
/// Built once per case from the network, the care team and every attribution in the record, so a
/// practitioner who wrote something but has since left the care team is still named.
#[derive(Debug, Clone, Default)]
pub(crate) struct Names {
    person: String,
    members: BTreeMap<String, (String, String)>,
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
            names
                .members
                .insert(m.meta.id.clone(), (m.name.clone(), m.relationship.clone()));
        }
        for a in authors(view) {
            names
                .practitioners
                .entry(a.practitioner.clone())
                .or_insert_with(|| a.practitioner_name.clone());
        }
        // The care team's own record of a name wins over what a device signed with.
        for c in &view.care_team {
            names
                .practitioners
                .insert(c.practitioner.clone(), c.name.clone());
        }
        names
    }

    /// The name to show for a participant key.
    pub(crate) fn name(&self, participant: &str) -> String {
        if participant == "person" {
            return self.person.clone();
        }
        if let Some(id) = participant.strip_prefix("member:") {
            return self
                .members
                .get(id)
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| format!("someone no longer in the record ({id})"));
        }
        if let Some(id) = participant.strip_prefix("practitioner:") {
            return self
                .practitioners
                .get(id)
                .cloned()
                .unwrap_or_else(|| format!("a practitioner ({id})"));
        }
        participant.to_string()
    }

    /// The name with who they are to the person, e.g. "Ana (sister)".
    pub(crate) fn describe(&self, participant: &str) -> String {
        if participant == "person" {
            return self.person.clone();
        }
        if let Some(id) = participant.strip_prefix("member:") {
            if let Some((n, rel)) = self.members.get(id) {
                return format!("{n} ({rel})");
            }
        }
        if participant.starts_with("practitioner:") {
            return format!("{} (practitioner)", self.name(participant));
        }
        self.name(participant)
    }

    /// Participant keys in the order people read them: the person, then their network, then the
    /// practitioners, each by name (stored order is by id, which means nothing to a reader).
    pub(crate) fn in_reading_order<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Vec<&'k str> {
        let mut v: Vec<&str> = keys.into_iter().collect();
        v.sort_by_key(|k| {
            let rank = match *k {
                "person" => 0,
                k if k.starts_with("member:") => 1,
                _ => 2,
            };
            (rank, self.name(k), k.to_string())
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
mod tests;
