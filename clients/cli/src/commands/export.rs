//! `polyphony export` and `polyphony figures`: the record for the trust's system (FHIR), the
//! person's own copy (HTML, PDF), a subject-access export (JSON), and the team's fidelity figures.
//!
//! The person's copy lists who has accessed the record. That list comes from the borough server's
//! audit log, fetched now if the server can be reached; otherwise the last one fetched is used and
//! the export says when it dates from (or that none is available).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use polyphony_core::export::{self, figures};
use polyphony_core::model::CaseFigures;
use polyphony_core::profile::Profile;

use super::{block_on, find_case};
use crate::failure::Failure;
use crate::output;

/// What to export.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// A FHIR R4 Bundle (JSON) for the trust's electronic record.
    Fhir,
    /// The person's copy, readable and printable (HTML).
    Html,
    /// The person's copy as a PDF.
    Pdf,
    /// Everything held about the person, machine-readable (subject access).
    Json,
}

/// Arguments of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The case (id or unique prefix).
    case: String,
    /// What to produce.
    #[arg(long, value_enum)]
    format: Format,
    /// Write to this file instead of standard output (required for PDF on a terminal).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Do not contact the server for the latest access list.
    #[arg(long)]
    offline: bool,
}

impl ExportArgs {
    /// Produce the export.
    pub fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        let case = find_case(profile, &self.case)?;
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
        let view = profile.view(case, &format!("export {:?}", self.format).to_lowercase())?;
        let bytes = match self.format {
            Format::Fhir => pretty(&export::fhir::bundle(&view, &entries))?,
            Format::Json => pretty(&export::subject_access::json(&view, &entries))?,
            Format::Html => export::person_copy::html(&view, &entries).into_bytes(),
            Format::Pdf => export::person_copy::pdf(&view, &entries),
        };
        match self.out {
            Some(path) => {
                std::fs::write(&path, &bytes).map_err(|e| {
                    Failure::user(format!("could not write {}: {e}", path.display()))
                })?;
                eprintln!("wrote {}", path.display());
            }
            None => {
                if matches!(self.format, Format::Pdf)
                    && std::io::IsTerminal::is_terminal(&std::io::stdout())
                {
                    return Err(Failure::user(
                        "a PDF is not for the terminal: add --out FILE.pdf",
                    ));
                }
                std::io::stdout()
                    .write_all(&bytes)
                    .map_err(|e| Failure::user(format!("could not write the export: {e}")))?;
            }
        }
        Ok(())
    }
}

fn pretty(v: &serde_json::Value) -> Result<Vec<u8>, Failure> {
    serde_json::to_vec_pretty(v).map_err(|e| Failure::user(format!("could not write JSON: {e}")))
}

/// Arguments of `figures`.
#[derive(Debug, Args)]
pub struct FiguresArgs {
    /// CSV instead of a table.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl FiguresArgs {
    /// The team's fidelity figures over every case on this device.
    pub fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        let mut all = Vec::new();
        for case in profile.case_ids()? {
            all.push(CaseFigures::from_view(&profile.lookup(case)?));
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
        Ok(())
    }
}
