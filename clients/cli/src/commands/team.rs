//! `polyphony team`: who works in your teams and in what role, as the borough server's
//! administrator registered them and the last sync brought them. These are the colleagues a
//! meeting's attendees and a case's care team can name (`--attendee "Jo Peer"`,
//! `care-team add --colleague "Jo Peer"`).

use clap::Args;
use polyphony_core::profile::Profile;

use crate::failure::Failure;
use crate::output::{self, Page};

/// Arguments of `team`.
#[derive(Debug, Args)]
pub(crate) struct TeamArgs {
    /// Print JSON (shape in docs/JSON.md).
    #[arg(long)]
    json: bool,
}

impl TeamArgs {
    /// List the team.
    pub(crate) fn run(self, profile: &mut Profile) -> Result<(), Failure> {
        let me = profile.author()?;
        let enrolment = profile.enrolment().cloned();
        let colleagues = profile.colleagues()?;
        if self.json {
            return output::json(&colleagues);
        }
        let mut page = Page::default();
        if colleagues.is_empty() {
            page.line(
                0,
                "no team list yet: it comes from the borough server at the next `polyphony sync`",
            );
        }
        let team_name = |id: &polyphony_core::TeamId| {
            enrolment
                .as_ref()
                .and_then(|e| e.teams.iter().find(|t| t.id == *id))
                .map(|t| t.name.clone())
                .unwrap_or_else(|| polyphony_core::model::short(id).to_string())
        };
        for c in &colleagues {
            let role = c.role.label();
            let you = if c.practitioner == me.practitioner {
                " (you)"
            } else {
                ""
            };
            let teams: Vec<String> = c.teams.iter().map(team_name).collect();
            page.line(0, format!("{}{you}, {role}: {}", c.name, teams.join(", ")));
        }
        page.print();
        Ok(())
    }
}
