//! Where this device's profile lives and how it is unlocked.
//!
//! The profile is an encrypted store; the passphrase is asked for at the terminal (twice, the first
//! time, so a typo cannot lock a practitioner out of their own notes) or taken from
//! `POLYPHONY_PASSPHRASE` for scripts and tests. It is never accepted as a command-line argument,
//! where it would end up in shell history and in every `ps` listing.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use polyphony_core::profile::Profile;

use crate::failure::Failure;

/// The environment variable scripts use to give the passphrase.
pub(crate) const PASSPHRASE_VAR: &str = "POLYPHONY_PASSPHRASE";

/// The shortest passphrase accepted for a new profile: the store holds clinical records.
const MIN_PASSPHRASE: usize = 8;

/// Open the profile in `home` (or the platform's data directory), asking for the passphrase.
pub(crate) fn open(home: Option<PathBuf>) -> Result<Profile, Failure> {
    let home = match home {
        Some(h) => h,
        None => default_home()?,
    };
    // Not `home/store` alone: an upgrade interrupted between its renames leaves the store set
    // aside for a moment, and this is not a new profile to choose a passphrase for.
    let is_new = !Profile::exists(&home);
    let passphrase = passphrase(&home, is_new)?;
    Ok(Profile::open(&home, &passphrase)?)
}

fn default_home() -> Result<PathBuf, Failure> {
    polyphony_core::profile::default_home().ok_or_else(|| {
            Failure::user(
                "cannot find a data directory for this user: give one with --home DIR or POLYPHONY_HOME",
            )
        })
}

fn passphrase(home: &Path, is_new: bool) -> Result<String, Failure> {
    let given = match std::env::var(PASSPHRASE_VAR) {
        Ok(p) => p,
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(Failure::user(format!("{PASSPHRASE_VAR} is not valid text")))
        }
        Err(std::env::VarError::NotPresent) => prompt(home, is_new)?,
    };
    if given.is_empty() {
        return Err(Failure::user("the passphrase cannot be empty"));
    }
    if is_new && given.chars().count() < MIN_PASSPHRASE {
        return Err(Failure::user(format!(
            "choose a passphrase of at least {MIN_PASSPHRASE} characters for this device's records"
        )));
    }
    Ok(given)
}

fn prompt(home: &Path, is_new: bool) -> Result<String, Failure> {
    if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
        return Err(Failure::user(format!(
            "no passphrase: run in a terminal to be asked for it, or set {PASSPHRASE_VAR}"
        )));
    }
    let read = |question: &str| {
        rpassword::prompt_password(question).map_err(|e| {
            Failure::user(format!(
                "could not read the passphrase ({e}): run in a terminal or set {PASSPHRASE_VAR}"
            ))
        })
    };
    if !is_new {
        return read("Passphrase: ");
    }
    eprintln!(
        "Setting up a new profile in {}. Choose a passphrase: it encrypts the records on this device and cannot be recovered.",
        home.display()
    );
    let first = read("New passphrase: ")?;
    let again = read("Same passphrase again: ")?;
    if first != again {
        return Err(Failure::user(
            "the two passphrases differ: nothing was set up, run the command again",
        ));
    }
    Ok(first)
}
