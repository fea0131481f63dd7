//! On the trust hub: a case handed over from one borough to another (the person moved).
//!
//! The sending borough asks on a stream beside its link (`Transfer`, with the case's access list
//! as its devices would be shown it). The hub checks the case is one of that borough's teams',
//! and the receiving team one of the named borough's, moves the case to it in its registry (so
//! the receiving borough's link is granted it from its next session, and the sending borough's
//! link may only upload to it, within the moved-case window), keeps the access list to hand to
//! the receiving borough (`HistoryWant`), and records the transfer in its audit log, naming both
//! boroughs. It answers `Transferred` only once all of that is durable. Asked again for a case
//! it already moved from that borough to that team, it answers the same: a borough that lost
//! the first answer (a crash) hears it again.
//!
//! A borough names itself as the receiver when it moved a case between its own teams: the hub's
//! registry follows the borough's (`move_within`), so that its grants and its trust-wide figures
//! name the team the borough does.

use std::sync::Arc;

use polyphony_core::export::Access as AccessEntry;
use polyphony_core::net::FramedStream;
use polyphony_core::sync::{
    CaseHistory, ErrorCode, Frame, Refusal, TeamInfo, TransferCase, Transferred,
};
use polyphony_core::{BoroughId, CaseId, TeamId};
use serde::{Deserialize, Serialize};

use super::{off_runtime, refusal, Shared};
use crate::audit::{Actor, AuditAction};
use crate::driver::CoreDriver;
use crate::registry::{Borough, DeviceStatus, RegistryError, Team};

/// Store namespace: case id → [`Carried`], what came with a case from the boroughs it left.
const NS_CARRIED: &str = "transfers.carried";

/// The most access entries one transfer may carry, and the hub keeps for a case over all its
/// transfers (far above any case's list; the frame limit bounds a request too).
pub const MAX_CARRIED_ACCESS: usize = 200_000;

/// What the hub keeps of a case's transfers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Carried {
    /// The last transfer: from which borough, to which team (a repeated request is answered
    /// from this).
    last: Option<(BoroughId, TeamId)>,
    /// Every access carried, oldest first, each with the borough it happened on (also named in
    /// its `who`).
    access: Vec<(BoroughId, AccessEntry)>,
}

fn carried(shared: &Shared, case: &CaseId) -> Result<Carried, String> {
    match shared
        .storage
        .store
        .get_meta(NS_CARRIED, &case.to_string())
        .map_err(|e| e.to_string())?
    {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
        None => Ok(Carried::default()),
    }
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    refusal(
        ErrorCode::Internal,
        format!("the trust hub could not read or write its registry ({e}); try again later"),
    )
}

fn not_available(case: &CaseId) -> Refusal {
    refusal(
        ErrorCode::NotAvailable,
        format!("case {case} is not available to this borough"),
    )
}

/// Carry out `from`'s request; the answer, and the ticket to wait for before it leaves.
pub fn transfer(
    shared: &Shared,
    from: &Borough,
    req: &TransferCase,
) -> Result<(Transferred, u64), Refusal> {
    let registry = &shared.registry;
    let to = match registry.borough_by(&req.borough) {
        Ok(b) => b,
        Err(RegistryError::Store(e)) => return Err(internal(e)),
        Err(e) => return Err(refusal(ErrorCode::NotAvailable, e.to_string())),
    };
    if to.id == from.id {
        return move_within(shared, from, req);
    }
    if to.status == DeviceStatus::Revoked {
        return Err(refusal(
            ErrorCode::NotAvailable,
            format!("the {} borough was revoked: no case goes to it", to.name),
        ));
    }
    let team = team_of(shared, &to, &req.team)?;
    let answer = answer(req.case, &to, &team);
    let generation = shared.storage.group.generation();
    let owner = registry.case_team(&req.case).map_err(internal)?;
    let mine = registry.borough_teams(&from.id).map_err(internal)?;
    let mut kept = carried(shared, &req.case).map_err(internal)?;
    match owner {
        Some(owner) if mine.contains(&owner) => {}
        // Done before: answered again (its first answer may have been lost with the borough),
        // naming the team that holds it now if the receiving borough moved it on between its
        // own teams since.
        Some(owner)
            if kept
                .last
                .is_some_and(|(f, t)| f == from.id && same_borough(shared, t, owner)) =>
        {
            // Only to a request naming the borough that holds it (never another borough's name
            // beside its team).
            let now = registry
                .team_by_id(&owner)
                .map_err(internal)?
                .filter(|t| t.borough == Some(to.id))
                .ok_or_else(|| not_available(&req.case))?;
            let answer = self::answer(req.case, &to, &now);
            return Ok((answer, shared.storage.group.current_in(generation)));
        }
        _ => return Err(not_available(&req.case)),
    }
    if req.access.len() > MAX_CARRIED_ACCESS {
        return Err(refusal(
            ErrorCode::TooLarge,
            format!(
                "an access list of {} entries (at most {MAX_CARRIED_ACCESS})",
                req.access.len()
            ),
        ));
    }
    let from_team = owner.expect("checked above");
    kept.last = Some((from.id, team.id));
    // Each entry once: a request repeated after a crash, or a case that comes back and leaves
    // again, carries entries the hub holds already. (Looked up by their serialised form: a
    // list of this size compared entry by entry would hold a thread for minutes.)
    let key = |e: &(BoroughId, AccessEntry)| serde_json::to_string(e).unwrap_or_default();
    let mut held: std::collections::HashSet<String> = kept.access.iter().map(key).collect();
    for mut a in req.access.iter().cloned() {
        a.who = format!("{} (the {} borough)", a.who, from.name);
        let entry = (from.id, a);
        if held.insert(key(&entry)) {
            kept.access.push(entry);
        }
    }
    // The list kept for a case is bounded too, not only each request's.
    if kept.access.len() > MAX_CARRIED_ACCESS {
        return Err(refusal(
            ErrorCode::TooLarge,
            format!(
                "the case's access list from the boroughs it was in would reach {} entries (at most {MAX_CARRIED_ACCESS})",
                kept.access.len()
            ),
        ));
    }
    let bytes = serde_json::to_vec(&kept).map_err(internal)?;
    // The carried list first, then the move: a crash between leaves the case where it was, and
    // the borough's repeated request writes the list again.
    shared
        .storage
        .store
        .put_meta(NS_CARRIED, &req.case.to_string(), &bytes)
        .map_err(internal)?;
    registry.move_case(req.case, team.id).map_err(internal)?;
    shared.audit(
        Actor::Borough { borough: from.id },
        AuditAction::CaseMoved,
        Some(req.case),
        format!(
            "transferred from the {} borough (team {from_team}) to the {} borough (team {} '{}'); {} access record(s) carried with it",
            from.name,
            to.name,
            team.id,
            team.name,
            req.access.len()
        ),
    );
    Ok((answer, shared.storage.group.wrote_in(generation)))
}

/// Whether teams `a` and `b` are one borough's (on the hub, each team names its borough).
fn same_borough(shared: &Shared, a: TeamId, b: TeamId) -> bool {
    let borough = |t| {
        shared
            .registry
            .team_by_id(&t)
            .ok()
            .flatten()
            .and_then(|t| t.borough)
    };
    a == b || borough(a).is_some_and(|x| Some(x) == borough(b))
}

/// The answer: `case` is `team`'s, of `borough`, now.
fn answer(case: CaseId, borough: &Borough, team: &Team) -> Transferred {
    Transferred {
        case,
        borough: borough.id,
        borough_name: borough.name.clone(),
        team: TeamInfo {
            id: team.id,
            name: team.name.clone(),
        },
    }
}

/// `borough`'s team named `given` (its id, or its name ignoring case).
fn team_of(shared: &Shared, borough: &Borough, given: &str) -> Result<Team, Refusal> {
    let given = given.trim();
    for id in shared
        .registry
        .borough_teams(&borough.id)
        .map_err(internal)?
    {
        let Some(t) = shared.registry.team_by_id(&id).map_err(internal)? else {
            continue;
        };
        if t.id.to_string() == given || t.name.eq_ignore_ascii_case(given) {
            return Ok(t);
        }
    }
    Err(refusal(
        ErrorCode::NotAvailable,
        format!(
            "the {} borough has no team '{given}' (its teams are those its link announced)",
            borough.name
        ),
    ))
}

/// A case a borough moved between its own teams (its registry is the truth about its cases):
/// the hub's registry follows, so its grants and trust-wide figures name the team the borough
/// does. Nothing leaves the borough; asked again, answered the same.
fn move_within(
    shared: &Shared,
    borough: &Borough,
    req: &TransferCase,
) -> Result<(Transferred, u64), Refusal> {
    let registry = &shared.registry;
    let team = team_of(shared, borough, &req.team)?;
    let answer = answer(req.case, borough, &team);
    let generation = shared.storage.group.generation();
    let mine = registry.borough_teams(&borough.id).map_err(internal)?;
    let owner = match registry.case_team(&req.case).map_err(internal)? {
        Some(owner) if mine.contains(&owner) => owner,
        _ => return Err(not_available(&req.case)),
    };
    if owner == team.id {
        return Ok((answer, shared.storage.group.current_in(generation)));
    }
    registry.move_case(req.case, team.id).map_err(internal)?;
    shared.audit(
        Actor::Borough {
            borough: borough.id,
        },
        AuditAction::CaseMoved,
        Some(req.case),
        format!(
            "moved within the {} borough, from team {owner} to team {} '{}', as its registry says",
            borough.name, team.id, team.name
        ),
    );
    Ok((answer, shared.storage.group.wrote_in(generation)))
}

/// What came with `case` from the boroughs it left, for `borough`, whose team holds it now
/// (without what happened on `borough` itself).
pub fn history(shared: &Shared, borough: &Borough, case: CaseId) -> Result<CaseHistory, Refusal> {
    let owner = shared.registry.case_team(&case).map_err(internal)?;
    let mine = shared
        .registry
        .borough_teams(&borough.id)
        .map_err(internal)?;
    if !owner.is_some_and(|t| mine.contains(&t)) {
        return Err(not_available(&case));
    }
    // What happened on the asking borough itself it holds in its own log (a case transferred
    // back): only the others'.
    Ok(CaseHistory {
        case,
        access: carried(shared, &case)
            .map_err(internal)?
            .access
            .into_iter()
            .filter(|(on, _)| *on != borough.id)
            .map(|(_, a)| a)
            .collect(),
    })
}

/// Serve one transfer stream of `borough`'s link whose first frame was read: `Transfer` or
/// `HistoryWant`, each answered (after what it wrote is durable), until the stream ends.
pub async fn serve(
    shared: Arc<Shared>,
    driver: Arc<CoreDriver>,
    borough: BoroughId,
    mut stream: FramedStream,
    first: Frame,
) {
    let mut next = Some(first);
    while let Some(frame) = super::keep::next_frame(&mut next, &mut stream).await {
        // Read again for each request: a borough revoked since its link connected is refused.
        let me = match shared.registry.borough(&borough) {
            Ok(Some(b)) if b.status != DeviceStatus::Revoked => b,
            _ => break,
        };
        let answer = off_runtime(|| {
            match frame {
            Frame::Transfer(req) => {
                transfer(&shared, &me, &req).map(|(t, ticket)| (Frame::Transferred(t), ticket))
            }
            Frame::HistoryWant { case } => history(&shared, &me, case).and_then(|h| {
                // The person's access list leaves the hub: recorded first, and sent once durable.
                let ticket = shared
                    .audit_access(
                        Actor::Borough { borough },
                        case,
                        format!(
                            "the case's access list from the boroughs it came from ({} entries) sent to the borough it was transferred to",
                            h.access.len()
                        ),
                    )
                    .map_err(|e| {
                        refusal(
                            ErrorCode::StorageFailed,
                            format!("the trust hub could not record this access ({e}); ask again"),
                        )
                    })?;
                Ok((Frame::History(h), ticket))
            }),
            other => Err(refusal(
                ErrorCode::Malformed,
                format!("a transfer stream carries transfers, not {}", other.kind()),
            )),
        }
        });
        let frame = match answer {
            Ok((frame, ticket)) => match driver.durable(ticket).await {
                Ok(()) => frame,
                Err(e) => Frame::Error(refusal(
                    ErrorCode::StorageFailed,
                    format!("the trust hub could not make the transfer durable ({e}); ask again"),
                )),
            },
            Err(r) => {
                shared.audit(
                    Actor::Borough { borough },
                    AuditAction::Refused,
                    None,
                    format!("a transfer request refused: {}", r.message),
                );
                Frame::Error(r)
            }
        };
        if stream.write_frames(&[frame]).await.is_err() {
            return;
        }
    }
    let _ = stream.send.finish();
}
