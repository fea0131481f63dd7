//! The commands, one module per part of the record. Each module holds its clap arguments beside
//! the code that carries them out, and each command is a few calls into the profile: find the case
//! and entries the user named, make the change (saved before the call returns), print the result.

pub(crate) mod attachment;
pub(crate) mod care_team;
pub(crate) mod case;
pub(crate) mod corrections;
pub(crate) mod decision;
pub(crate) mod enrol;
pub(crate) mod export;
pub(crate) mod meeting;
pub(crate) mod network;
pub(crate) mod notes;
pub(crate) mod person;
pub(crate) mod plan;
pub(crate) mod referral;
pub(crate) mod safety;
pub(crate) mod sync;
pub(crate) mod team;
pub(crate) mod today;

use polyphony_core::model::{parse_date, CaseView, Date, Instant, Participant};
use polyphony_core::profile::Profile;
use polyphony_core::{CaseId, EntryId};

use crate::failure::Failure;
use crate::participant;

/// The case the user named (a full id or a unique prefix of at least four characters).
pub(crate) fn find_case(profile: &Profile, given: &str) -> Result<CaseId, Failure> {
    Ok(profile.find_case(given)?)
}

/// The case the user named, read to be shown: the read goes into the person's access log.
pub(crate) fn read_case(
    profile: &mut Profile,
    given: &str,
    what: &str,
) -> Result<CaseView, Failure> {
    let case = find_case(profile, given)?;
    Ok(profile.view(case, what)?)
}

/// An entry of the case the user named (a full id or a unique prefix).
pub(crate) fn find_entry(
    profile: &mut Profile,
    case: CaseId,
    given: &str,
) -> Result<EntryId, Failure> {
    Ok(profile.find_entry(case, given)?)
}

/// The case as it stands, to resolve what the user typed against it. Not shown to the user, so
/// not recorded as a read.
pub(crate) fn current(profile: &mut Profile, case: CaseId) -> Result<CaseView, Failure> {
    Ok(profile.lookup(case)?)
}

/// Resolve participants the user named (see [`participant::resolve`]).
pub(crate) fn participants(
    profile: &mut Profile,
    case: CaseId,
    given: &[String],
) -> Result<Vec<Participant>, Failure> {
    if given.is_empty() {
        return Ok(vec![]);
    }
    let me = profile.author()?.practitioner;
    let view = current(profile, case)?;
    let colleagues = colleagues_of(profile, &view)?;
    given
        .iter()
        .map(|g| participant::resolve(&view, &colleagues, me, g))
        .collect()
}

/// The colleagues of the case's team, from the team list the server last sent.
pub(crate) fn colleagues_of(
    profile: &Profile,
    view: &CaseView,
) -> Result<Vec<polyphony_core::sync::Colleague>, Failure> {
    Ok(match view.team_id.parse() {
        Ok(team) => profile.colleagues_in(team)?,
        Err(_) => Vec::new(),
    })
}

/// Resolve one participant.
pub(crate) fn participant(
    profile: &mut Profile,
    case: CaseId,
    given: &str,
) -> Result<Participant, Failure> {
    let mut one = participants(profile, case, &[given.to_string()])?;
    Ok(one.remove(0))
}

/// A network member the user named, by name or id.
pub(crate) fn member(profile: &mut Profile, case: CaseId, given: &str) -> Result<EntryId, Failure> {
    match participant(profile, case, given)? {
        Participant::Member(id) => Ok(id),
        other => Err(Failure::user(format!(
            "'{given}' is {other}, not a member of the network: give a member's name or id"
        ))),
    }
}

/// An optional date argument, YYYY-MM-DD.
pub(crate) fn date(field: &'static str, given: Option<&str>) -> Result<Option<Date>, Failure> {
    Ok(given.map(|g| parse_date(field, g)).transpose()?)
}

/// A date and time argument, YYYY-MM-DDTHH:MM in the device's zone (UK time unless the profile
/// chose another), or RFC 3339 with an offset.
pub(crate) fn datetime(field: &'static str, given: &str) -> Result<Instant, Failure> {
    Ok(crate::output::zone().parse(field, given)?)
}

/// Something was created: its id alone on stdout (so scripts can capture it), words on stderr.
pub(crate) fn created(id: impl std::fmt::Display, what: impl std::fmt::Display) {
    crate::output::emit(&format!("{id}\n"));
    eprintln!("{what}");
}

/// Something was changed: say so on stderr, keeping stdout for data.
pub(crate) fn changed(what: impl std::fmt::Display) {
    eprintln!("{what}");
}

/// Run the async part of a command (enrolment, sync) to completion.
pub(crate) fn block_on<F: std::future::Future>(fut: F) -> Result<F::Output, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::user(format!("cannot start the network runtime: {e}")))?;
    Ok(runtime.block_on(fut))
}
