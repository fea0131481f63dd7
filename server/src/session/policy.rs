//! Which cases a device may sync, and what changes it may send: [`Access`] per case in a
//! session, and [`ServerPolicy`], the checks on each message's new changes.

use automerge::{ActorId, AutoCommit};
use polyphony_core::model::guard::{self, NewOps};
use polyphony_core::model::{schema, Author};
use polyphony_core::sync::{ApplyError, CasePolicy, PolicyRefusal};
use polyphony_core::{BoroughId, CaseId, TeamId};

use crate::registry::Registry;

use super::{to_the_second, MOVED_CLOCK_SKEW};

/// How this device may treat one case in this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Read and write.
    Full(TeamId),
    /// Upload only (case moved away, or device being revoked).
    UploadOnly(TeamId),
    /// Not registered yet: the device may create it for one of its teams.
    New,
    /// Not for this device.
    NotAvailable,
}

/// The policy for changes arriving from this device for one case.
pub(super) struct ServerPolicy<'a> {
    pub(super) case: CaseId,
    /// The team the stored document names (None for a case not stored yet).
    pub(super) team: Option<TeamId>,
    pub(super) my_teams: &'a [TeamId],
    /// Who may have written the new changes: the sending device alone, or, for a borough's link
    /// at the trust hub, the devices of its roster.
    pub(super) writers: Writers<'a>,
    /// When this device was first told the case is no longer its team's, for an upload-only case
    /// (see [`ServerPolicy::time_allowed`]); none for a case it may write in full.
    pub(super) told_moved: Option<time::OffsetDateTime>,
}

/// Who may have written the changes a session sends.
#[derive(Clone, Copy)]
pub(super) enum Writers<'a> {
    /// A device: the sending device and its practitioner, as the registry knows them, are the
    /// only author its new changes may have and the only name they may write.
    Own(&'a Author),
    /// A borough's link at the trust hub: each change by a device the borough enrolled (its
    /// roster, which a device of another borough can never be on), written as that device.
    Roster {
        /// The borough.
        borough: BoroughId,
        /// Where its roster is.
        registry: &'a Registry,
    },
}

impl Writers<'_> {
    /// The author `actor` is, if it may have written changes this session sends.
    fn author(&self, actor: &ActorId) -> Option<Author> {
        match self {
            Writers::Own(me) => (me.actor() == *actor).then(|| (*me).clone()),
            Writers::Roster { borough, registry } => {
                let device = polyphony_core::model::device_for_actor(actor)?;
                let entry = registry.roster_entry(&device).ok().flatten()?;
                (entry.borough == *borough).then_some(Author {
                    practitioner: entry.practitioner,
                    practitioner_name: entry.practitioner_name,
                    device,
                })
            }
        }
    }
}

impl CasePolicy for ServerPolicy<'_> {
    /// A device writes only as itself: its own actor, never a colleague's (which would let it
    /// write in their name, and by taking their next sequence number make their offline work
    /// unsyncable). Every change the server already holds is not new, so a device that received
    /// colleagues' changes from the server still syncs; pushes carry only durable changes, so a
    /// device never holds a colleague's change the server could lose.
    ///
    /// A borough's link relays its devices' changes: each must be by a device on its roster.
    fn author_allowed(&self, actor: &ActorId) -> bool {
        self.writers.author(actor).is_some()
    }
    /// On a case that moved away from this device (or whose team its practitioner left), only
    /// what it wrote before it was first told, with [`MOVED_CLOCK_SKEW`] for its clock. Not the
    /// instant of the move: a device offline then wrote on in good faith, and those notes are
    /// clinical work that must not be stranded. The time is the device's own word: this stops a
    /// device adding to the case after it knows better, not one that backdates what it writes
    /// (docs/SECURITY.md). A change with no time (0) cannot show it came first, and the app
    /// always dates its changes: refused.
    fn time_allowed(&self, _: &ActorId, time: i64) -> Result<(), PolicyRefusal> {
        let Some(told) = self.told_moved else {
            return Ok(());
        };
        let told_at = to_the_second(told);
        if time == 0 {
            return Err(PolicyRefusal::Undated { told_at });
        }
        let latest = told + MOVED_CLOCK_SKEW;
        let made = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(time) * 1_000_000);
        match made {
            Ok(made) if made <= latest => Ok(()),
            made => Err(PolicyRefusal::MadeAfterTold {
                made: made
                    .map(to_the_second)
                    .unwrap_or_else(|_| format!("{time} ms after 1970")),
                told_at,
                skew_minutes: MOVED_CLOCK_SKEW.whole_minutes(),
            }),
        }
    }
    fn check_step(
        &self,
        before: &AutoCommit,
        after: &AutoCommit,
        new: &NewOps,
    ) -> Result<(), ApplyError> {
        guard::nothing_removed(before, after).map_err(ApplyError::Removes)?;
        guard::records_kept(after, new).map_err(ApplyError::Removes)?;
        guard::written_once_kept(before, after, new).map_err(ApplyError::Removes)?;
        match self.writers {
            Writers::Own(me) => guard::stamps_are_own(after, new, me),
            roster => guard::stamps_match_authors(after, new, &|actor| roster.author(actor)),
        }
        .map_err(ApplyError::Impersonates)
    }
    fn check(&self, doc: &AutoCommit) -> Result<(), PolicyRefusal> {
        if schema::read_case_id(doc) != Some(self.case) {
            return Err(PolicyRefusal::WrongCase);
        }
        let team = schema::read_team_id(doc).ok_or(PolicyRefusal::NoTeam)?;
        match self.team {
            Some(t) if t != team => Err(PolicyRefusal::TeamChanged),
            None if !self.my_teams.contains(&team) => Err(PolicyRefusal::NotOwnTeam),
            _ => Ok(()),
        }
    }
}
