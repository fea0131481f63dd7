//! `polyphony-server`: run the borough server, and administer it.
//!
//! Thin by design: it parses arguments, builds a [`ServerConfig`], and calls the library. An admin
//! command goes to the running server through its admin socket; when no server is running it opens
//! the store itself and runs the very same [`Admin::handle`]. A command that creates something
//! prints only its id (or code) on stdout, so scripts can capture it; explanations go to stderr.
//! Exit codes: 0 done, 1 refused or mistyped (one line on stderr saying why), 2 the store or the
//! server could not be reached or opened.

mod output;

use std::io::{self, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use polyphony_core::CaseId;
use polyphony_server::admin::{self, Admin, AdminError, AdminRequest, AdminResponse, FiguresBy};
use polyphony_server::{Server, ServerConfig};

/// The Polyphony borough server.
#[derive(Debug, Parser)]
#[command(name = "polyphony-server", version, about, long_about = None)]
struct Cli {
    /// Where the server keeps its data [default: ./polyphony-data].
    #[arg(long, global = true, env = "POLYPHONY_DATA", value_name = "DIR")]
    data: Option<PathBuf>,
    /// A TOML configuration file [default: polyphony-server.toml in the data directory, if there].
    #[arg(long, global = true, env = "POLYPHONY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print results as JSON instead of tables and bare ids.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server until interrupted (Ctrl-C or SIGTERM).
    Serve {
        /// The UDP address to listen on [default: 127.0.0.1:4433].
        #[arg(long, env = "POLYPHONY_LISTEN", value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Manage teams.
    #[command(subcommand)]
    Team(TeamCommand),
    /// List the teams.
    Teams,
    /// Manage practitioners.
    #[command(subcommand)]
    Practitioner(PractitionerCommand),
    /// List the practitioners and their teams.
    Practitioners,
    /// Issue a one-time enrolment code for a practitioner's new device (prints the code).
    Enrol {
        /// The practitioner's name or id.
        practitioner: String,
    },
    /// Revoke a device: it may upload what it holds, then it is told to wipe its cases.
    Revoke {
        /// The device's id (see `devices`).
        device: String,
        /// Refuse the device at once, without letting it upload first.
        #[arg(long)]
        now: bool,
    },
    /// List the enrolled devices.
    Devices,
    /// Show the audit log, or verify its hash chain.
    Audit {
        /// Only the records about this case.
        #[arg(long, value_name = "ID")]
        case: Option<CaseId>,
        /// Verify the whole chain instead of listing records.
        #[arg(long)]
        verify: bool,
        /// With --verify: also check that the log still holds this head, exported earlier with
        /// `audit --head` or kept by a device (`polyphony audit-head`); a log that lost its end,
        /// or an older copy, fails. May be given more than once.
        #[arg(long, value_name = "FILE", requires = "verify")]
        anchor: Vec<PathBuf>,
        /// Print the log's head, signed by the borough CA, to keep away from the server.
        #[arg(long, conflicts_with_all = ["verify", "case"])]
        head: bool,
    },
    /// Manage cases.
    #[command(subcommand)]
    Case(CaseCommand),
    /// On the trust hub: manage the borough servers that sync with it.
    #[command(subcommand)]
    Borough(BoroughCommand),
    /// On the trust hub: list the boroughs, their teams and how many cases the hub holds.
    Boroughs,
    /// On a borough server: join the trust hub, and see the link's state.
    #[command(subcommand)]
    Hub(HubCommand),
    /// On the trust hub: the fidelity figures of each borough and team, as devices compute them.
    /// Reads every case the hub holds for a borough, and records each read in the audit log;
    /// only counts and shares are shown, each case by its id.
    Figures {
        /// Per borough only, or per borough and team.
        #[arg(long, value_enum, default_value_t = By::Team)]
        by: By,
        /// One CSV (columns borough, team, then a device's figures columns) instead of tables.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
    },
}

/// How finely `figures` breaks the figures down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum By {
    /// Each borough over all its teams' cases.
    Borough,
    /// Each borough, and each of its teams.
    Team,
}

impl From<By> for FiguresBy {
    fn from(by: By) -> Self {
        match by {
            By::Borough => FiguresBy::Borough,
            By::Team => FiguresBy::Team,
        }
    }
}

#[derive(Debug, Subcommand)]
enum BoroughCommand {
    /// Add a borough (prints its id).
    Add {
        /// Its name (quote it if it has spaces).
        name: String,
    },
    /// Issue a one-time code for the borough's server to join (prints the code).
    Enrol {
        /// The borough's name or id.
        borough: String,
    },
    /// Revoke a borough at once: its link is refused; its cases stay on the hub.
    Revoke {
        /// The borough's name or id.
        borough: String,
    },
}

#[derive(Debug, Subcommand)]
enum HubCommand {
    /// Join the trust hub with the code its administrator issued for this borough. A new
    /// recovery key is written to FILE: the hub keeps a copy of this borough (its CA, registry
    /// and audit log) sealed under it, to rebuild the borough from if its server is lost. Keep
    /// the file away from this server.
    Join {
        /// The hub's address (host:port).
        hub: String,
        /// The one-time code.
        code: String,
        /// What this borough calls itself, for the hub's log [default: the data directory's name].
        #[arg(long)]
        name: Option<String>,
        /// Where to write the new recovery key (a new file).
        #[arg(long, value_name = "FILE")]
        recovery_key: PathBuf,
    },
    /// Rebuild this (empty) data directory from the copy the trust hub keeps of this borough,
    /// with a new code the hub's administrator issued for it and the recovery key written when
    /// it joined. Then start the server: the link brings back every case of its teams.
    Restore {
        /// The hub's address (host:port).
        hub: String,
        /// The one-time code.
        code: String,
        /// What this borough calls itself, for the hub's log [default: the data directory's name].
        #[arg(long)]
        name: Option<String>,
        /// The recovery key file written by `hub join`.
        #[arg(long, value_name = "FILE")]
        recovery_key: PathBuf,
    },
    /// Whether this borough joined a hub, the link's state, and how many cases hold a change
    /// the hub has not saved yet.
    Status,
}

#[derive(Debug, Subcommand)]
enum TeamCommand {
    /// Add a team (prints its id).
    Add {
        /// Its name (quote it if it has spaces).
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum PractitionerCommand {
    /// Add a practitioner to a team (prints their id).
    Add {
        /// Their name (quote it if it has spaces).
        name: String,
        /// The team's name or id.
        #[arg(long)]
        team: String,
        /// practitioner, peer_support, psychiatrist or administrator [default: practitioner].
        #[arg(long)]
        role: Option<String>,
    },
    /// Set what a practitioner is; their teams' devices receive it at their next sync (a
    /// device connected live, at once).
    Role {
        /// Their name or id.
        practitioner: String,
        /// practitioner, peer_support, psychiatrist or administrator.
        role: String,
    },
    /// Take a practitioner out of a team: their devices lose its cases at once. Without
    /// `--team`, out of every team, and every device of theirs is revoked.
    Remove {
        /// Their name or id.
        practitioner: String,
        /// The team's name or id [default: every team, and revoke their devices].
        #[arg(long)]
        team: Option<String>,
        /// Without --team: refuse their devices at once instead of letting them upload first.
        #[arg(long, conflicts_with = "team")]
        now: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CaseCommand {
    /// Move a case to another team.
    Move {
        /// The case's id.
        case: CaseId,
        /// The team's name or id.
        #[arg(long)]
        team: String,
    },
    /// Hand a case over to another borough's team through the trust hub (the person moved):
    /// its whole history goes; this borough's devices upload what they wrote, then drop it.
    Transfer {
        /// The case's id.
        case: CaseId,
        /// The receiving borough's name (as the hub knows it) or id.
        #[arg(long)]
        borough: String,
        /// The receiving team's name or id.
        #[arg(long)]
        team: String,
    },
}

/// Why the command failed, which decides the exit code.
enum Failure {
    /// Refused or mistyped: exit 1.
    User(String),
    /// The store or the server could not be reached or opened: exit 2.
    Unreachable(String),
}

#[tokio::main]
async fn main() -> ExitCode {
    // Record data, keys and sockets this process creates are its owner's alone.
    polyphony_core::store::private_umask();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap uses exit code 2 for usage errors; here 2 means "cannot reach the store".
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logs();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::User(message)) => {
            eprintln!("polyphony-server: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Unreachable(message)) => {
            eprintln!("polyphony-server: {message}");
            ExitCode::from(2)
        }
    }
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        // Colour codes only for a person at a terminal, not in a service's log file.
        .with_ansi(io::stderr().is_terminal())
        .init();
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let mut config = ServerConfig::load(cli.data.as_deref(), cli.config.as_deref())
        .map_err(|e| Failure::User(e.to_string()))?;
    let format = match cli.command {
        _ if cli.json => output::Format::Json,
        Command::Figures { csv: true, .. } => output::Format::Csv,
        _ => output::Format::Text,
    };
    let req = match cli.command {
        Command::Serve { listen } => {
            if let Some(listen) = listen {
                config.listen = listen;
            }
            return serve(config).await;
        }
        Command::Team(TeamCommand::Add { name }) => AdminRequest::TeamAdd { name },
        Command::Teams => AdminRequest::Teams,
        Command::Practitioner(PractitionerCommand::Add { name, team, role }) => {
            AdminRequest::PractitionerAdd { name, team, role }
        }
        Command::Practitioner(PractitionerCommand::Role { practitioner, role }) => {
            AdminRequest::PractitionerRole { practitioner, role }
        }
        Command::Practitioner(PractitionerCommand::Remove {
            practitioner,
            team,
            now,
        }) => AdminRequest::PractitionerRemove {
            practitioner,
            team,
            now,
        },
        Command::Practitioners => AdminRequest::Practitioners,
        Command::Enrol { practitioner } => AdminRequest::Enrol { practitioner },
        Command::Revoke { device, now } => AdminRequest::Revoke { device, now },
        Command::Devices => AdminRequest::Devices,
        Command::Audit { head: true, .. } => AdminRequest::AuditHead,
        Command::Audit {
            anchor,
            verify: true,
            ..
        } if !anchor.is_empty() => {
            let mut anchors = Vec::new();
            for path in &anchor {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Failure::User(format!("cannot read the anchor {}: {e}", path.display()))
                })?;
                // One head (`audit --head`) or a list of them (`polyphony audit-head`).
                let heads: Vec<polyphony_core::identity::AuditHead> =
                    match serde_json::from_str(&text) {
                        Ok(one) => vec![one],
                        Err(_) => serde_json::from_str(&text).map_err(|e| {
                            Failure::User(format!(
                                "{} is not an audit head or a list of them (from `audit --head` or `polyphony audit-head`): {e}",
                                path.display()
                            ))
                        })?,
                    };
                anchors.extend(heads);
            }
            AdminRequest::AuditAnchors { anchors }
        }
        Command::Audit { case, verify, .. } => AdminRequest::Audit { case, verify },
        Command::Case(CaseCommand::Move { case, team }) => AdminRequest::CaseMove { case, team },
        Command::Case(CaseCommand::Transfer {
            case,
            borough,
            team,
        }) => AdminRequest::CaseTransfer {
            case,
            borough,
            team,
        },
        Command::Borough(BoroughCommand::Add { name }) => AdminRequest::BoroughAdd { name },
        Command::Borough(BoroughCommand::Enrol { borough }) => {
            AdminRequest::BoroughEnrol { borough }
        }
        Command::Borough(BoroughCommand::Revoke { borough }) => {
            AdminRequest::BoroughRevoke { borough }
        }
        Command::Boroughs => AdminRequest::Boroughs,
        Command::Hub(HubCommand::Status) => AdminRequest::HubStatus,
        Command::Figures { by, .. } => AdminRequest::Figures { by: by.into() },
        Command::Hub(HubCommand::Join {
            hub,
            code,
            name,
            recovery_key,
        }) => {
            let name = borough_name(&config, name)?;
            let key = polyphony_server::hub_link::RecoveryKey::generate();
            // Written before the hub is asked: a membership is never kept whose key nobody holds.
            write_new_file(&recovery_key, &format!("{}\n", key.to_text()))?;
            let membership = polyphony_server::hub_link::join(&hub, &code, &name, &key)
                .await
                .map_err(Failure::User)?;
            eprintln!(
                "the recovery key is in {}: keep it away from this server (with the key file's backups, not on this machine); with it and a new code from the hub, `polyphony-server hub restore` rebuilds this borough",
                recovery_key.display()
            );
            AdminRequest::HubJoined { membership }
        }
        Command::Hub(HubCommand::Restore {
            hub,
            code,
            name,
            recovery_key,
        }) => {
            let name = borough_name(&config, name)?;
            let text = std::fs::read_to_string(&recovery_key).map_err(|e| {
                Failure::User(format!("cannot read {}: {e}", recovery_key.display()))
            })?;
            let key =
                polyphony_server::hub_link::RecoveryKey::parse(&text).map_err(Failure::User)?;
            let restored = polyphony_server::hub_link::restore(&config, &hub, &code, &name, key)
                .await
                .map_err(Failure::User)?;
            return output::restored(restored, format)
                .map_err(|e| Failure::User(format!("could not print the result: {e}")));
        }
    };
    let response = match admin::request(config.admin_socket_path(), &req).await {
        Ok(response) => response,
        Err(AdminError::NotRunning { .. }) => offline(config, req.clone()).await?,
        Err(e) => return Err(Failure::Unreachable(e.to_string())),
    };
    match response {
        AdminResponse::Ok { value } => output::show(&req, value, format)
            .or_else(output::ignore_closed_stdout)
            .map_err(|e| Failure::User(format!("could not print the result: {e}"))),
        AdminResponse::Err { message } => Err(Failure::User(message)),
    }
}

/// The name a borough gives itself on the hub: as given, or its data directory's name. Refused
/// on the hub itself.
fn borough_name(config: &ServerConfig, name: Option<String>) -> Result<String, Failure> {
    if config.role != polyphony_server::ServerRole::Borough {
        return Err(Failure::User(
            "this is the trust hub: a borough server joins it, not the reverse".into(),
        ));
    }
    Ok(name.unwrap_or_else(|| {
        config
            .data_dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "borough".to_string())
    }))
}

/// Write `text` to a new file at `path` (owner-only, as every file this process makes); refused
/// if it exists, so a key kept there is never overwritten.
fn write_new_file(path: &std::path::Path, text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Failure::User(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Failure::User(format!("cannot write {}: {e}", path.display())))
}

async fn serve(config: ServerConfig) -> Result<(), Failure> {
    let handle = Server::start(config)
        .await
        .map_err(|e| Failure::Unreachable(format!("the server could not start: {e}")))?;
    let deposed = async {
        while !handle.deposed() {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    };
    tokio::select! {
        stopped = stop_signal() => {
            if let Err(e) = stopped {
                tracing::warn!(error = %e, "cannot wait for a stop signal; stopping now");
            }
        }
        () = deposed => {
            tracing::error!("another server node took over the database: stopping");
            handle.shutdown().await;
            return Err(Failure::Unreachable(
                "another server node took over the PostgreSQL database while this one had lost it; \
                 start this node again to make it the standby".into(),
            ));
        }
    }
    tracing::info!("stopping: finishing syncs and flushing");
    handle.shutdown().await;
    Ok(())
}

/// Wait for Ctrl-C or SIGTERM (what service managers send).
async fn stop_signal() -> io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

/// Carry out a request with the store opened here, since no server holds it.
async fn offline(config: ServerConfig, req: AdminRequest) -> Result<AdminResponse, Failure> {
    if !config.data_dir.exists() {
        // Opening would create a new borough (with its own CA) at a mistyped path.
        return Err(Failure::Unreachable(format!(
            "no server data at {}: check --data, or start the server there once with `polyphony-server --data {} serve`",
            config.data_dir.display(),
            config.data_dir.display()
        )));
    }
    tokio::task::spawn_blocking(move || {
        let opened = polyphony_server::data_dir::open_offline(&config).map_err(|e| {
            Failure::Unreachable(format!(
                "cannot open the server's store at {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let ca = std::sync::Arc::new(opened.ca);
        let storage = std::sync::Arc::new(polyphony_server::storage::ServerStorage::over(
            opened.engine,
            16,
        ));
        let admin = Admin::new(
            opened.registry,
            opened.audit,
            ca.fingerprint(),
            config.enrolment_ttl(),
        )
        .with_ca(ca)
        .with_role(config.role)
        .with_storage(storage);
        Ok(admin.handle(req))
    })
    .await
    .map_err(|e| Failure::Unreachable(format!("the command failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn the_command_line_parses_as_documented() {
        let cli = Cli::try_parse_from([
            "polyphony-server",
            "--data",
            "/srv/polyphony",
            "practitioner",
            "add",
            "Ana Silva",
            "--team",
            "North",
        ])
        .expect("parses");
        assert_eq!(
            cli.data.as_deref(),
            Some(std::path::Path::new("/srv/polyphony"))
        );
        assert!(matches!(
            cli.command,
            Command::Practitioner(PractitionerCommand::Add { ref name, ref team, .. })
                if name == "Ana Silva" && team == "North"
        ));
        let cli = Cli::try_parse_from(["polyphony-server", "audit", "--verify", "--json"])
            .expect("global flags after the command");
        assert!(cli.json);
        assert!(Cli::try_parse_from(["polyphony-server", "audit", "--case", "nope"]).is_err());
    }

    #[test]
    fn figures_are_by_team_unless_asked_by_borough() {
        let cli = Cli::try_parse_from(["polyphony-server", "figures"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Figures {
                by: By::Team,
                csv: false
            }
        ));
        let cli = Cli::try_parse_from(["polyphony-server", "figures", "--by", "borough", "--csv"])
            .expect("parses");
        assert!(matches!(
            cli.command,
            Command::Figures {
                by: By::Borough,
                csv: true
            }
        ));
        assert!(
            Cli::try_parse_from(["polyphony-server", "figures", "--csv", "--json"]).is_err(),
            "one format at a time"
        );
        assert!(Cli::try_parse_from(["polyphony-server", "figures", "--by", "ward"]).is_err());
    }
}
