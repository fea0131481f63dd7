//! `polyphony export` and `polyphony figures`: the record for the trust's system (FHIR), the
//! person's own copy (HTML, PDF), a subject-access export (JSON), and the team's fidelity figures.
//!
//! `--format network --for MEMBER` is the copy for one member of the person's network, refused
//! unless that member's consent to receive the record is given; giving it is recorded as a
//! disclosure. Every export is recorded with its kind, and says plainly that the file it makes is
//! not encrypted. `--out DIR` names the file for a person to recognise
//! (`Maria Lindqvist - record copy - 2026-03-14.pdf`).
//!
//! The person's copy lists who has accessed the record. That list comes from the borough server's
//! audit log, fetched now if the server can be reached; otherwise the last one fetched is used and
//! the export says when it dates from (or that none is available).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use polyphony_core::export::access::ExportKind;
use polyphony_core::export::{self, figures};
use polyphony_core::model::{CaseFigures, Date};
use polyphony_core::profile::Profile;
use polyphony_core::CaseId;

use super::{block_on, find_case};
use crate::failure::Failure;
use crate::output;

/// What to export.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// A FHIR R4 Bundle (JSON) for the trust's electronic record.
    Fhir,
    /// The person's copy, readable and printable (HTML).
    Html,
    /// The person's copy as a PDF.
    Pdf,
    /// Everything held about the person, machine-readable (subject access).
    Json,
    /// The copy for one member of the person's network (HTML): needs --for MEMBER, whose consent
    /// to receive the record must be given.
    Network,
}

impl Format {
    /// The kind of file, for the record of the export and its name (the network copy is a
    /// disclosure, recorded and named with its member).
    fn kind(self) -> Option<ExportKind> {
        match self {
            Format::Fhir => Some(ExportKind::Fhir),
            Format::Html => Some(ExportKind::Html),
            Format::Pdf => Some(ExportKind::Pdf),
            Format::Json => Some(ExportKind::Json),
            Format::Network => None,
        }
    }
}

/// Arguments of `export`.
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The case (id or unique prefix).
    case: String,
    /// What to produce.
    #[arg(long, value_enum)]
    format: Format,
    /// For `--format network`: the member of the network the copy is for (their name or id; a
    /// unique prefix is enough).
    #[arg(long = "for", value_name = "MEMBER")]
    for_member: Option<String>,
    /// Write to this file instead of standard output (required for PDF on a terminal); given a
    /// folder, the file goes in it under a name a person recognises.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Do not contact the server for the latest access list.
    #[arg(long)]
    offline: bool,
    /// The folder holding the Noto fonts a PDF is set in (scripts/pdf-fonts.sh fetches them);
    /// by default Debian's fonts-noto-core folder, /usr/share/fonts/truetype/noto.
    #[arg(long, env = "POLYPHONY_FONT_DIR")]
    font_dir: Option<PathBuf>,
}

impl ExportArgs {
    /// Produce the export.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        let case = find_case(profile, &self.case)?;
        let Some(kind) = self.format.kind() else {
            return self.network_copy(profile, case);
        };
        if self.for_member.is_some() {
            return Err(Failure::user(
                "--for names the member a network copy is for: use it with --format network",
            ));
        }
        // Before anything else: without its fonts a PDF cannot be made, and saying so first
        // spares the wait for the server.
        let fonts = match kind {
            ExportKind::Pdf => Some(
                export::person_copy::Fonts::locate(self.font_dir.as_deref())
                    .map_err(|e| Failure::user(e.to_string()))?,
            ),
            _ => None,
        };
        if !self.offline && profile.enrolment().is_some() {
            if let Err(e) = block_on(profile.fetch_accesses(case))? {
                eprintln!("note: could not fetch the latest access list from the server ({e})");
            }
        }
        let accesses = profile.accesses(case)?;
        match &accesses {
            Some(list) => eprintln!(
                "access list as fetched from the server at {}",
                list.fetched_at
            ),
            None => eprintln!(
                "note: no access list is available yet (sync while online, then export again)"
            ),
        }
        let entries = accesses.map(|a| a.entries).unwrap_or_default();
        let view = profile.export_view(case, kind)?;
        let bytes = match kind {
            ExportKind::Fhir => pretty(&export::fhir::bundle(&view, &entries))?,
            ExportKind::Json => pretty(&export::subject_access::json(&view, &entries))?,
            ExportKind::Pdf => match &fonts {
                Some(fonts) => export::person_copy::pdf(&view, &entries, fonts)
                    .map_err(|e| Failure::user(e.to_string()))?,
                None => return Err(Failure::user("the PDF fonts were not loaded (a bug)")),
            },
            ExportKind::Html | ExportKind::Figures => {
                export::person_copy::html(&view, &entries).into_bytes()
            }
        };
        let name = export::export_file_name(&view, kind, today());
        write_out(self.out, &name, kind == ExportKind::Pdf, &bytes)
    }

    /// The copy for one member of the network: refused (before anything is fetched or written)
    /// unless their consent is given; giving it is recorded as a disclosure.
    fn network_copy(self, profile: &mut Profile, case: CaseId) -> Result<(), Failure> {
        let Some(given) = &self.for_member else {
            return Err(Failure::user(
                "the network copy is for one member of the network: add --for MEMBER (their name or id)",
            ));
        };
        let member = super::member(profile, case, given)?;
        let copy = profile.give_network_copy(case, &member.to_string())?;
        let name = copy.file_name(today());
        write_out(self.out, &name, false, copy.html().as_bytes())?;
        eprintln!(
            "giving this copy to {} is recorded in the person's list of who has seen their record",
            copy.recipient.name
        );
        Ok(())
    }
}

/// Write an export where the user asked: a file, a folder (under `name`), or standard output;
/// and say plainly that what is written is not encrypted.
fn write_out(out: Option<PathBuf>, name: &str, binary: bool, bytes: &[u8]) -> Result<(), Failure> {
    let path = match out {
        Some(dir) if dir.is_dir() => Some(dir.join(name)),
        other => other,
    };
    match path {
        Some(path) => {
            std::fs::write(&path, bytes)
                .map_err(|e| Failure::user(format!("could not write {}: {e}", path.display())))?;
            eprintln!("wrote {}", path.display());
        }
        None => {
            if binary && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                return Err(Failure::user(format!(
                    "a PDF is not for the terminal: add --out \"{name}\" (or --out FOLDER)"
                )));
            }
            std::io::stdout()
                .write_all(bytes)
                .map_err(|e| Failure::user(format!("could not write the export: {e}")))?;
        }
    }
    eprintln!("{}", export::NOT_ENCRYPTED);
    Ok(())
}

/// Today's date in the UK, for file names.
fn today() -> Date {
    crate::output::zone().date(time::OffsetDateTime::now_utc())
}

fn pretty(v: &serde_json::Value) -> Result<Vec<u8>, Failure> {
    serde_json::to_vec_pretty(v).map_err(|e| Failure::user(format!("could not write JSON: {e}")))
}

/// Arguments of `figures`.
#[derive(Debug, Args)]
pub(crate) struct FiguresArgs {
    /// CSV instead of a table.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl FiguresArgs {
    /// The team's fidelity figures over every case on this device.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        // A table on the screen is a look; CSV or JSON is a file made from every case, recorded
        // as an export on each.
        let leaves = self.csv || self.json;
        let mut all = Vec::new();
        for case in profile.case_ids()? {
            let view = if leaves {
                profile.export_view(case, ExportKind::Figures)?
            } else {
                profile.lookup(case)?
            };
            all.push(CaseFigures::from_view(&view));
        }
        let rows = figures::team_table(&all);
        if self.json {
            return output::json(&rows);
        }
        let text = if self.csv {
            figures::to_csv(&rows)
                .map_err(|e| Failure::user(format!("could not write CSV: {e}")))?
        } else {
            figures::render_table(&rows)
        };
        print!("{text}");
        if leaves {
            eprintln!("{}", export::NOT_ENCRYPTED);
        }
        Ok(())
    }
}
