//! Who looked at or changed the person's record, when, and why: the access list in words the
//! person reads, and the words a device records so that the list can say it.
//!
//! Accesses reach a copy from two places. The borough server's audit log records what it saw: the
//! record sent to a practitioner's device, changes saved to it, the case moving team. And every
//! device records each time its user opens the case, and why (the page or command: "case page",
//! "export pdf", a network copy given to a named member), in its reads log; the log is uploaded at
//! the next sync into the server's audit. A device records every read, connected or not, so a
//! read says "on their device", never "offline": the record does not carry which it was.
//!
//! [`Purpose`] is the one place that writes and reads what a device records, so the words a copy
//! shows cannot drift from what the device wrote. [`sentence`] turns one access into a sentence.

use serde::{Deserialize, Serialize};

use super::{plain, Access, Names};
use crate::model::view::CaseView;

/// What kind of access the audit recorded. Servers before this field was added sent only their
/// own wording (`Access::what`); the copy then says no more than who used the record and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AccessKind {
    /// The team's server sent the record to a practitioner's device, so they could work with it.
    SentToDevice,
    /// Changes were saved to the record.
    Changed,
    /// A practitioner opened the record on their device, for `purpose` (what the device
    /// recorded: see [`Purpose`]).
    OnDevice {
        /// What the device recorded.
        purpose: String,
        /// Still only on this device: not yet in the server's audit.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        not_yet_sent: bool,
    },
    /// The record moved to another team.
    Moved,
}

/// A file made from the record: it leaves the encrypted store, so it is recorded, with its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// The person's copy as a PDF.
    Pdf,
    /// The person's copy as a web page.
    Html,
    /// Everything held about the person, machine-readable (subject access).
    Json,
    /// The record for the trust's electronic record.
    Fhir,
    /// The team's fidelity figures, which count this case.
    Figures,
}

impl ExportKind {
    /// Every kind, for tests and listings.
    pub const ALL: [ExportKind; 5] = [
        ExportKind::Pdf,
        ExportKind::Html,
        ExportKind::Json,
        ExportKind::Fhir,
        ExportKind::Figures,
    ];

    /// What a device records for this export (its reads log, then the server's audit).
    pub fn purpose(self) -> &'static str {
        match self {
            ExportKind::Pdf => "export pdf",
            ExportKind::Html => "export html",
            ExportKind::Json => "export json",
            ExportKind::Fhir => "export fhir",
            ExportKind::Figures => "export figures",
        }
    }

    /// What the file is, in a file name a person recognises ("record copy").
    pub fn file_label(self) -> &'static str {
        match self {
            ExportKind::Pdf | ExportKind::Html => "record copy",
            ExportKind::Json => "everything held",
            ExportKind::Fhir => "for the trust record",
            ExportKind::Figures => "team figures",
        }
    }

    /// The file name's extension.
    pub fn extension(self) -> &'static str {
        match self {
            ExportKind::Pdf => "pdf",
            ExportKind::Html => "html",
            ExportKind::Json => "json",
            ExportKind::Fhir => "fhir.json",
            ExportKind::Figures => "csv",
        }
    }

    /// What the file holds, for the person's access list.
    fn words(self) -> &'static str {
        match self {
            ExportKind::Pdf => "a PDF file of your copy of the record",
            ExportKind::Html => "a web page file of your copy of the record",
            ExportKind::Json => "a file of everything held about you, for computers to read",
            ExportKind::Fhir => "a file of your record for the NHS trust's health record system",
            ExportKind::Figures => "a file of the team's figures",
        }
    }
}

/// Why a device opened the record, as it recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose<'a> {
    /// A file was made from the record.
    Export(ExportKind),
    /// The network copy was given to a member of the person's network.
    Gave {
        /// The member's id.
        member: &'a str,
        /// Their name when the copy was made.
        name: &'a str,
    },
    /// Anything else: a page or command (e.g. "case page", "meeting read-back").
    Looked(&'a str),
}

const GAVE: &str = "network copy given to member:";

impl<'a> Purpose<'a> {
    /// What a device records when it gives the network copy to a member: their id and their name,
    /// so the audit names them even if the record later changes.
    pub fn gave(member: &str, name: &str) -> String {
        format!("{GAVE}{member} ({name})")
    }

    /// Read what a device recorded. Words written before exports were recorded by kind ("export
    /// person's copy") are read too.
    pub fn parse(recorded: &'a str) -> Purpose<'a> {
        if let Some(rest) = recorded.strip_prefix(GAVE) {
            let (member, name) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = name.trim().trim_start_matches('(').trim_end_matches(')');
            return Purpose::Gave { member, name };
        }
        let export = match recorded {
            "export person's copy (pdf)" => Some(ExportKind::Pdf),
            "export person's copy" => Some(ExportKind::Html),
            "export subject access" => Some(ExportKind::Json),
            other => ExportKind::ALL.into_iter().find(|k| k.purpose() == other),
        };
        match export {
            Some(k) => Purpose::Export(k),
            None => Purpose::Looked(recorded),
        }
    }
}

// What every screen and copy calls a network member whose entry was recorded on the wrong
// person's record: their name is another person's information.
pub(crate) use crate::model::timeline::REMOVED;

/// The accesses as a copy may show them: a network copy given to a member whose entry was later
/// marked as recorded on the wrong person's record no longer names them (the audit recorded the
/// name at the time; the copy must not repeat it).
pub(crate) fn without_withheld_names(view: &CaseView, accesses: &[Access]) -> Vec<Access> {
    let withheld: Vec<String> = view
        .network
        .iter()
        .filter(|m| m.meta.withheld())
        .map(|m| m.meta.id.to_string())
        .collect();
    let fix = |s: &mut String| {
        let replaced = match Purpose::parse(s) {
            Purpose::Gave { member, .. } if withheld.iter().any(|w| w == member) => {
                Some(Purpose::gave(member, REMOVED))
            }
            _ => None,
        };
        if let Some(r) = replaced {
            *s = r;
        }
    };
    accesses
        .iter()
        .cloned()
        .map(|mut a| {
            fix(&mut a.what);
            if let Some(AccessKind::OnDevice { purpose, .. }) = &mut a.kind {
                fix(purpose);
            }
            a
        })
        .collect()
}

/// Why someone opens a page or runs a command, as the person would put it.
fn why(looked: &str) -> String {
    let words = match looked {
        "case page" | "case show" => "to read it",
        "meeting" => "to read a meeting's notes",
        "record meeting" => "to write up a meeting",
        "meeting read-back" => "to read a meeting's notes back with the people who were there",
        "decision" | "propose decision" => "to work on a decision",
        "network member" | "add network member" => "to update who is in your network",
        "person details" => "to update your details",
        "conflicts" => "to settle two entries that said different things",
        "entered in error" => "to mark something written by mistake",
        "network copy" => "to make a copy for someone in your network",
        other if other.starts_with("edit meeting") => "to write up a meeting",
        other => return format!("(they noted: {other})"),
    };
    words.to_string()
}

/// Who someone is to the person, as the person would say it: "your brother".
fn yours(relationship: &str) -> String {
    let r = relationship.trim();
    let r = r
        .strip_prefix("my ")
        .or_else(|| r.strip_prefix("My "))
        .unwrap_or(r);
    format!("your {r}")
}

/// One access as a sentence addressed to the person: who, what, when (UK time), and why.
pub(crate) fn sentence(a: &Access, names: &Names) -> String {
    let when = plain::datetime(&a.at);
    let who = &a.who;
    let Some(kind) = &a.kind else {
        return format!("{who} used your record on {when}.");
    };
    match kind {
        AccessKind::SentToDevice => {
            format!("Your record was sent to {who}'s device on {when}, so they could work with it.")
        }
        AccessKind::Changed => format!("{who} added to or changed your record on {when}."),
        AccessKind::Moved => format!("Your record moved to another team on {when}."),
        AccessKind::OnDevice {
            purpose,
            not_yet_sent,
        } => {
            let said = match Purpose::parse(purpose) {
                Purpose::Gave { member, name } => {
                    let to = match member.parse().ok().and_then(|id| names.member(id)) {
                        Some((name, "")) => name.to_string(),
                        Some((name, rel)) => format!("{name} ({})", yours(rel)),
                        None if name.is_empty() => "someone in your network".to_string(),
                        None => name.to_string(),
                    };
                    format!("{who} gave a copy of your record to {to} on {when}.")
                }
                Purpose::Export(ExportKind::Figures) => format!(
                    "{who} counted your record in the team's figures (how the team works, not \
                     what is written about you) on {when}."
                ),
                Purpose::Export(k) => format!(
                    "{who} made {} on {when}. A file like this is not protected by the app.",
                    k.words()
                ),
                Purpose::Looked(p) => {
                    format!(
                        "{who} looked at your record on their device on {when}, {}.",
                        why(p)
                    )
                }
            };
            if *not_yet_sent {
                format!("{said} (Noted on this device; not yet sent to the team's server.)")
            } else {
                said
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testcase::rich_case;

    fn on_device(at: &str, purpose: &str) -> Access {
        Access {
            at: at.into(),
            who: "Sam Okafor".into(),
            device: Some("d".into()),
            what: format!("read on their device ({purpose})"),
            kind: Some(AccessKind::OnDevice {
                purpose: purpose.into(),
                not_yet_sent: false,
            }),
        }
    }

    #[test]
    fn export_access_a_disclosure_names_the_member_and_who_they_are() {
        let rich = rich_case();
        let names = Names::of(&rich.view);
        let gave = on_device(
            "2026-03-03T10:30:00Z",
            &Purpose::gave(&rich.ana.to_string(), "Ana Lopez"),
        );
        assert_eq!(
            sentence(&gave, &names),
            "Sam Okafor gave a copy of your record to Ana Lopez (your sister) on 3 March 2026 \
             at 10:30 UK time."
        );
    }

    #[test]
    fn export_access_reads_as_plain_words_not_jargon() {
        let names = Names::of(&rich_case().view);
        let mut list = vec![
            on_device("2026-03-15T09:12:00Z", "case page"),
            on_device("2026-03-15T09:13:00Z", "export pdf"),
            on_device("2026-03-15T09:14:00Z", "export person's copy"),
        ];
        list.push(Access {
            kind: Some(AccessKind::Changed),
            what: "wrote (1 changes accepted, written by d)".into(),
            ..list[0].clone()
        });
        list.push(Access {
            kind: Some(AccessKind::SentToDevice),
            ..list[0].clone()
        });
        let all: Vec<String> = list.iter().map(|a| sentence(a, &names)).collect();
        for s in &all {
            for jargon in ["changes accepted", "outbox", "#", "offline", "export"] {
                assert!(!s.contains(jargon), "{jargon:?} in {s:?}");
            }
            assert!(s.contains("UK time"), "{s}");
        }
        assert_eq!(
            all[0],
            "Sam Okafor looked at your record on their device on 15 March 2026 at 09:12 UK \
             time, to read it."
        );
        assert!(all[1].starts_with("Sam Okafor made a PDF file of your copy of the record on"));
        assert!(all[2].contains("a web page file"));
        assert_eq!(
            all[3],
            "Sam Okafor added to or changed your record on 15 March 2026 at 09:12 UK time."
        );
    }

    #[test]
    fn export_access_purposes_round_trip() {
        for k in ExportKind::ALL {
            assert_eq!(Purpose::parse(k.purpose()), Purpose::Export(k));
        }
        let gave = Purpose::gave("m-1", "Daniel Kowalczyk");
        assert_eq!(
            Purpose::parse(&gave),
            Purpose::Gave {
                member: "m-1",
                name: "Daniel Kowalczyk"
            }
        );
        assert_eq!(Purpose::parse("case page"), Purpose::Looked("case page"));
    }
}
