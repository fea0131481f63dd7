//! What went wrong, as one line on stderr and an exit code a script can branch on.
//!
//! There are only two kinds of failure a user needs to tell apart: something they can correct
//! (exit 1: a mistyped id, a bad date, the wrong passphrase) and the server being out of reach or
//! refusing the sync (exit 2: nothing is lost, try again with signal). Every message is a single
//! line that says what to do; no panics or backtraces reach the user.

use std::fmt;
use std::process::ExitCode;

use polyphony_core::model::ModelError;
use polyphony_core::profile::ProfileError;

/// A command that did not succeed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The user can put it right (exit 1).
    User(String),
    /// The sync could not complete: network, or the server refused (exit 2). Local work is saved.
    Sync(String),
    /// Already printed in full by clap (help, version): exit 0 after printing.
    Shown(clap::Error),
}

impl Failure {
    /// A user error with a message.
    pub(crate) fn user(message: impl Into<String>) -> Failure {
        Failure::User(message.into())
    }

    /// Turn clap's (multi-line) parse error into one line; help and version are not failures.
    pub(crate) fn from_clap(e: clap::Error) -> Failure {
        use clap::error::ErrorKind;
        match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => Failure::Shown(e),
            _ => {
                let rendered = e.render().to_string();
                let mut said = Vec::new();
                let mut command = "polyphony".to_string();
                for line in rendered.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    if let Some(usage) = line.strip_prefix("Usage: ") {
                        // "Usage: polyphony case new [OPTIONS] --name <NAME>" names the command.
                        let words: Vec<&str> = usage
                            .split_whitespace()
                            .take_while(|w| !w.starts_with(['[', '<', '-']))
                            .collect();
                        if !words.is_empty() {
                            command = words.join(" ");
                        }
                    } else if !line.starts_with("For more information") {
                        said.push(line.strip_prefix("error: ").unwrap_or(line));
                    }
                }
                let message = if said.is_empty() {
                    "the command line could not be understood".to_string()
                } else {
                    said.join(" ")
                };
                Failure::User(format!("{message} (see `{command} --help`)"))
            }
        }
    }

    /// The exit code.
    pub(crate) fn code(&self) -> u8 {
        match self {
            Failure::User(_) => 1,
            Failure::Sync(_) => 2,
            Failure::Shown(e)
                if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
            {
                1
            }
            Failure::Shown(_) => 0,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::User(m) | Failure::Sync(m) => f.write_str(m),
            Failure::Shown(e) => write!(f, "{e}"),
        }
    }
}

impl From<ProfileError> for Failure {
    fn from(e: ProfileError) -> Failure {
        match e {
            ProfileError::Net(ref n) if n.says_work_is_kept() => Failure::Sync(e.to_string()),
            ProfileError::Net(_) => {
                Failure::Sync(format!("{e}; your work stays saved on this device"))
            }
            other => Failure::User(other.to_string()),
        }
    }
}

impl From<ModelError> for Failure {
    fn from(e: ModelError) -> Failure {
        Failure::User(e.to_string())
    }
}

/// Print the failure and return its exit code.
pub(crate) fn report(failure: Failure) -> ExitCode {
    match &failure {
        Failure::Shown(e) => {
            // clap prints help to stdout and usage errors to stderr itself.
            let _ = e.print();
        }
        other => {
            let one_line = other
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!("error: {one_line}");
        }
    }
    ExitCode::from(failure.code())
}
