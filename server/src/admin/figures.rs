//! On the trust hub: the fidelity figures of every borough and of each of its teams, with the
//! same definitions as a device's `figures` ([`CaseFigures::from_view`] per case, gathered by
//! [`figures::team_table`]), so a team's row on the hub and on its own devices agree.
//!
//! Computing them reads every case the hub holds for a borough's teams: an access to each
//! person's record. Each case read is recorded in the audit log (actor
//! [`Admin`](crate::audit::Actor::Admin), action [`AuditAction::Read`], against the case, detail
//! [`READ_FOR_FIGURES`]) before the figures are answered; if a record cannot be written the
//! request fails and no figures leave. What leaves is counts and shares per case
//! (labelled with the case's id, never the person's name) and their summaries.
//!
//! A case the hub cannot read (its stored changes do not load, or it is not a valid case record)
//! is named in the answer and left out of the figures; it does not fail the whole request.
//! Cases of a team that belongs to no borough (the hub's own, if it has any) are not counted.

use std::panic::{self, AssertUnwindSafe};

use polyphony_core::export::figures::{self, Row};
use polyphony_core::export::ExportError;
use polyphony_core::model::{CaseDoc, CaseFigures};
use polyphony_core::{BoroughId, CaseId, TeamId};
use serde::{Deserialize, Serialize};

use super::{json, Admin, AdminError};
use crate::audit::AuditAction;
use crate::registry::Team;

/// Why each case read for the figures is recorded in the audit log (the detail of its record).
pub const READ_FOR_FIGURES: &str = "read for the trust-wide figures (counts per case id, per team and per borough leave the hub; no names)";

/// How finely [`AdminRequest::Figures`](super::AdminRequest::Figures) breaks the figures down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FiguresBy {
    /// Each borough's rows over all its teams' cases, only.
    Borough,
    /// Each borough's rows, and each of its teams' rows.
    #[default]
    Team,
}

/// The trust-wide figures: per borough, and per team when asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrustFigures {
    /// How finely they were asked for.
    pub by: FiguresBy,
    /// Every borough the hub knows (revoked ones included: their cases stay on the hub), in the
    /// order they were added.
    pub boroughs: Vec<BoroughFigures>,
    /// Cases of a borough's team that the hub could not read, left out of every figure.
    pub unreadable: Vec<CaseId>,
}

/// One borough's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoroughFigures {
    /// The borough's id.
    pub id: BoroughId,
    /// Its name on the hub.
    pub name: String,
    /// [`figures::team_table`] over all its teams' cases together: one row per episode, then the
    /// mean and median rows (their scope says "team", as on a device; here they summarise the
    /// borough).
    pub rows: Vec<Row>,
    /// Each of its teams' figures, by name (empty when asked [`FiguresBy::Borough`]).
    pub teams: Vec<TeamFigures>,
}

/// One team's figures, as its own devices compute them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamFigures {
    /// The team's id.
    pub id: TeamId,
    /// Its name, as its borough last announced it.
    pub name: String,
    /// [`figures::team_table`] over the team's cases.
    pub rows: Vec<Row>,
}

/// The columns the CSV leads with, before the device's own.
const CSV_LEAD: [&str; 2] = ["borough", "team"];

impl TrustFigures {
    /// One CSV: the columns `borough,team` (team empty on a borough's own rows), then exactly
    /// the columns of a device's figures CSV.
    pub fn to_csv(&self) -> Result<String, ExportError> {
        let mut rows: Vec<(Vec<String>, &Row)> = Vec::new();
        for b in &self.boroughs {
            rows.extend(
                b.rows
                    .iter()
                    .map(|r| (vec![b.name.clone(), String::new()], r)),
            );
            for t in &b.teams {
                rows.extend(
                    t.rows
                        .iter()
                        .map(|r| (vec![b.name.clone(), t.name.clone()], r)),
                );
            }
        }
        figures::to_csv_led(&CSV_LEAD, rows)
    }

    /// As text for a terminal: a heading line per borough (and per team), each followed by its
    /// table; then the cases that could not be read, if any.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for b in &self.boroughs {
            out.push_str(&format!("Borough {} ({}): all its teams\n", b.name, b.id));
            out.push_str(&figures::render_table_of(&b.rows, "Borough"));
            for t in &b.teams {
                out.push_str(&format!("\nTeam {} ({}), {}\n", t.name, t.id, b.name));
                out.push_str(&figures::render_table(&t.rows));
            }
            out.push('\n');
        }
        if !self.unreadable.is_empty() {
            out.push_str(&format!(
                "{} case(s) could not be read and are left out (see the server's log):\n",
                self.unreadable.len()
            ));
            for case in &self.unreadable {
                out.push_str(&format!("  {case}\n"));
            }
        }
        out
    }
}

/// A case read for the figures, and what it gave.
struct Read {
    case: CaseId,
    team: TeamId,
    figures: CaseFigures,
}

impl Admin {
    /// The trust-wide figures (see the module's documentation).
    pub(super) fn figures(&self, by: FiguresBy) -> Result<serde_json::Value, AdminError> {
        self.hub_only("computing the trust-wide figures")?;
        let teams = self.registry.teams()?;
        let mut answer = TrustFigures {
            by,
            boroughs: Vec::new(),
            unreadable: Vec::new(),
        };
        let mut read = Vec::new();
        for b in self.registry.boroughs()? {
            let mine: Vec<&Team> = teams.iter().filter(|t| t.borough == Some(b.id)).collect();
            let ids: Vec<TeamId> = mine.iter().map(|t| t.id).collect();
            let first = read.len();
            self.read_cases(&ids, &mut read, &mut answer.unreadable)?;
            let of_borough = &read[first..];
            let team_figures = match by {
                FiguresBy::Borough => Vec::new(),
                FiguresBy::Team => mine
                    .iter()
                    .map(|t| TeamFigures {
                        id: t.id,
                        name: t.name.clone(),
                        rows: table(of_borough.iter().filter(|r| r.team == t.id)),
                    })
                    .collect(),
            };
            answer.boroughs.push(BoroughFigures {
                id: b.id,
                name: b.name,
                rows: table(of_borough.iter()),
                teams: team_figures,
            });
        }
        self.audit_reads(&read)?;
        json(&answer)
    }

    /// Read each case of `teams` (in case-id order) into `read`, or its id into
    /// `unreadable` if it cannot be.
    fn read_cases(
        &self,
        teams: &[TeamId],
        read: &mut Vec<Read>,
        unreadable: &mut Vec<CaseId>,
    ) -> Result<(), AdminError> {
        let storage = self.storage()?;
        let mut cases = self.registry.cases_of_teams(teams)?;
        cases.sort();
        for (case, team) in cases {
            match case_figures(storage, &case) {
                Ok(mut figures) => {
                    // The row's label is the id the hub knows the case by, whatever the
                    // document says: a document can hold anything, a person's name included.
                    figures.case_id = case.to_string();
                    read.push(Read {
                        case,
                        team,
                        figures,
                    });
                }
                Err(why) => {
                    tracing::warn!(%case, %team, error = %why, "case left out of the trust-wide figures: it cannot be read");
                    unreadable.push(case);
                }
            }
        }
        Ok(())
    }

    /// Record each case read in the audit log; the first that cannot be recorded fails the
    /// request, so no figures leave from a read the log does not show.
    fn audit_reads(&self, read: &[Read]) -> Result<(), AdminError> {
        for r in read {
            self.audit(
                AuditAction::Read,
                Some(r.case),
                READ_FOR_FIGURES.to_string(),
                || {
                    format!(
                        "case {} was read for the trust-wide figures (no figures are shown, so none leave the hub)",
                        r.case
                    )
                },
            )?;
        }
        Ok(())
    }
}

/// The rows of a device's figures table over the cases in `read`.
fn table<'a>(read: impl Iterator<Item = &'a Read>) -> Vec<Row> {
    let figures: Vec<CaseFigures> = read.map(|r| r.figures.clone()).collect();
    figures::team_table(&figures)
}

/// The figures of one stored case, as a device computes them. An error says why it cannot be
/// read.
fn case_figures(
    storage: &crate::storage::ServerStorage,
    case: &CaseId,
) -> Result<CaseFigures, String> {
    // automerge can panic on damaged bytes (see `CaseDoc::load`); no lock is held while the case
    // loads, so a panic leaves nothing half-done, and one damaged case must not end the request.
    let loaded = panic::catch_unwind(AssertUnwindSafe(|| storage.case(case)))
        .map_err(|_| "its stored changes made the document library panic".to_string())?
        .map_err(|e| e.to_string())?;
    // The registry names the case (a borough's link registers it as its first changes are
    // stored), so its absence from the store is a store that lost it, not a case to skip.
    let shared =
        loaded.ok_or_else(|| "the registry names it but the store holds none of it".to_string())?;
    // Copied out, so a sync waiting for the case waits no longer than the copy.
    let doc = shared
        .lock()
        .map_err(|_| "it was being written when a sync failed; try again".to_string())?
        .doc
        .clone();
    let doc = CaseDoc::from_automerge(doc, None)
        .map_err(|e| format!("it is not a valid case record: {e}"))?;
    Ok(CaseFigures::from_view(&doc.view()))
}
