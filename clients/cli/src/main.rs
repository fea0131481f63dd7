//! `polyphony`: every piece of Open Dialogue case work from the command line, offline, with a sync
//! to the borough server when there is signal.
//!
//! This file only parses the command line and hands over: [`commands`] carries out each command
//! through `polyphony-core`'s [`Profile`](polyphony_core::profile::Profile), [`output`] prints what
//! comes back (for people, or as the stable JSON documented in `docs/JSON.md`), and [`failure`]
//! turns whatever went wrong into one line on stderr and an exit code scripts can rely on.

mod commands;
mod failure;
mod home;
mod output;
mod participant;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{
    care_team::CareTeamCommand, case::CaseCommand, corrections::ConflictsArgs,
    corrections::EnteredInErrorArgs, corrections::ResolveArgs, decision::DecisionCommand,
    enrol::EnrolArgs, meeting::MeetingCommand, meeting::ReadbackArgs, network::NetworkCommand,
    notes::NoteCommand, person::PersonCommand, sync::StatusArgs, sync::SyncArgs, today::TodayArgs,
};
use crate::failure::Failure;

/// Open Dialogue case records, offline first.
///
/// Every change is saved on this device before the command returns; `polyphony sync` sends it to
/// the borough server when there is signal. Times are entered and shown in UK time (Europe/London).
///
/// Exit codes: 0 success; 1 something to correct (the message says what); 2 the server could not
/// be reached or refused the sync (your work stays saved on this device).
#[derive(Debug, Parser)]
#[command(name = "polyphony", version, propagate_version = true)]
struct Cli {
    /// Where this device's encrypted profile lives (default: the platform's data directory).
    #[arg(long, global = true, env = "POLYPHONY_HOME", value_name = "DIR")]
    home: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

/// Every command; each one's arguments live beside its implementation in [`commands`].
#[derive(Debug, Subcommand)]
enum Command {
    /// Enrol this device with your borough server, using a code from your administrator.
    Enrol(EnrolArgs),
    /// Open, list and read cases.
    #[command(subcommand)]
    Case(CaseCommand),
    /// The person's own details.
    #[command(subcommand)]
    Person(PersonCommand),
    /// The people the person chose: their network.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// The practitioners working with the person.
    #[command(subcommand, name = "care-team")]
    CareTeam(CareTeamCommand),
    /// Who works in your teams and in what role (the team list from the borough server).
    Team(commands::team::TeamArgs),
    /// Network meetings: when, where, who came.
    #[command(subcommand)]
    Meeting(MeetingCommand),
    /// A meeting's notes, written with the network.
    #[command(subcommand)]
    Note(NoteCommand),
    /// The practitioners' reflections, spoken aloud in the meeting.
    #[command(subcommand)]
    Reflection(NoteCommand),
    /// What a meeting agreed, in its own words.
    #[command(subcommand)]
    Agreed(NoteCommand),
    /// Record a participant's answer when the notes are read back at the end of a meeting.
    Readback(ReadbackArgs),
    /// Decisions, with every participant's position in their own words.
    #[command(subcommand)]
    Decision(DecisionCommand),
    /// The safety and crisis plan, written with the person in their own words.
    #[command(subcommand)]
    Plan(commands::plan::PlanCommand),
    /// The team's home-visit safety notes and safeguarding concerns.
    #[command(subcommand)]
    Safety(commands::safety::SafetyCommand),
    /// Letters and documents attached to a case or a meeting.
    #[command(subcommand)]
    Attachment(commands::attachment::AttachmentCommand),
    /// Referrals: the one that opened a case, and re-referrals, each opening a new episode.
    #[command(subcommand)]
    Referral(commands::referral::ReferralCommand),
    /// Mark an entry "entered in error" (it stays in the record, struck through, with why).
    Error(EnteredInErrorArgs),
    /// Fields where two devices wrote different values: see them side by side.
    Conflicts(ConflictsArgs),
    /// Settle a conflict by picking one of its values.
    Resolve(ResolveArgs),
    /// Send this device's work to the borough server and receive the team's.
    Sync(SyncArgs),
    /// What is not yet synced, per case, and how the last sync went.
    Status(StatusArgs),
    /// The morning list: actions overdue or due today, meetings awaiting an outcome and changes
    /// left unsynced too long, across your caseload (dates in UK time).
    Today(TodayArgs),
    /// Export a case: FHIR for the trust's record, the person's own copy (HTML or PDF), or
    /// everything held about them (JSON).
    Export(commands::export::ExportArgs),
    /// The team's fidelity figures over the cases on this device (table, CSV or JSON).
    Figures(commands::export::FiguresArgs),
    /// Show the time zone this device shows and reads times in, or choose another (an IANA name
    /// such as Europe/London, the default).
    TimeZone {
        /// The zone to use from now on; leave out to see the current one.
        name: Option<String>,
    },
    /// The audit-log heads the borough server signed that this device kept (the first, one a
    /// day, and the newest), as a JSON list: give it to your administrator, who checks the
    /// server's log still holds every one (`polyphony-server audit --verify --anchor FILE`).
    AuditHead,
}

fn main() -> ExitCode {
    // Record data, keys and sockets this process creates are its owner's alone.
    polyphony_core::store::private_umask();
    output::init_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return failure::report(Failure::from_clap(e)),
    };
    let outcome = home::open(cli.home).and_then(|mut profile| {
        output::use_zone(profile.time_zone()?);
        dispatch(&mut profile, cli.command)
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => failure::report(f),
    }
}

fn dispatch(
    profile: &mut polyphony_core::profile::Profile,
    command: Command,
) -> Result<(), Failure> {
    use polyphony_core::model::NoteKind;
    match command {
        Command::Enrol(a) => a.run(profile),
        Command::Case(c) => c.run(profile),
        Command::Person(c) => c.run(profile),
        Command::Network(c) => c.run(profile),
        Command::CareTeam(c) => c.run(profile),
        Command::Plan(c) => c.run(profile),
        Command::Safety(c) => c.run(profile),
        Command::Attachment(c) => c.run(profile),
        Command::Referral(c) => c.run(profile),
        Command::Team(a) => a.run(profile),
        Command::Meeting(c) => c.run(profile),
        Command::Note(c) => c.run(profile, NoteKind::Notes),
        Command::Reflection(c) => c.run(profile, NoteKind::Reflections),
        Command::Agreed(c) => c.run(profile, NoteKind::Agreed),
        Command::Readback(a) => a.run(profile),
        Command::Decision(c) => c.run(profile),
        Command::Error(a) => a.run(profile),
        Command::Conflicts(a) => a.run(profile),
        Command::Resolve(a) => a.run(profile),
        Command::Sync(a) => a.run(profile),
        Command::Status(a) => a.run(profile),
        Command::Today(a) => a.run(profile),
        Command::Export(a) => a.run(profile),
        Command::Figures(a) => a.run(profile),
        Command::TimeZone { name } => {
            match name {
                Some(name) => {
                    let zone = profile.set_time_zone(&name)?;
                    commands::changed(format!(
                        "times are now shown and read as {} ({})",
                        zone.label(),
                        zone.name()
                    ));
                }
                None => {
                    let zone = profile.time_zone()?;
                    println!("{} ({})", zone.label(), zone.name());
                }
            }
            Ok(())
        }
        Command::AuditHead => {
            let newest = profile
                .audit_head()
                .map_err(|e| Failure::User(e.to_string()))?
                .ok_or_else(|| {
                    Failure::User(
                        "this device has no audit head yet: run `polyphony sync` first".into(),
                    )
                })?;
            let mut heads = profile
                .audit_history()
                .map_err(|e| Failure::User(e.to_string()))?;
            if !heads.contains(&newest) {
                heads.push(newest);
            }
            let text =
                serde_json::to_string_pretty(&heads).map_err(|e| Failure::User(e.to_string()))?;
            println!("{text}");
            Ok(())
        }
    }
}
