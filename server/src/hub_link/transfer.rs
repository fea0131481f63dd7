//! Handing a case over to another borough through the trust hub (the person moved), the
//! borough's side.
//!
//! Sending: an administrator asks (`polyphony-server case transfer`); the request is kept here
//! until the link carries it to the hub with the case's access list, on a stream beside its
//! session ([`crate::session::transfer`] is the hub's side). Once the hub answers, the case is
//! registered here to the receiving borough's team, and this borough's devices lose it exactly
//! as they lose a case moved to another of its teams: each uploads what it wrote before it was
//! told, within the moved-case window, and drops its copy. Their late work still reaches the
//! receiving borough: this borough's link uploads it to the hub, which takes it from the link
//! within the same window. The borough server keeps its own copy (no device of its can read it).
//!
//! Receiving: the hub grants the case to the receiving borough's link at its next session; the
//! link stores it for the team the hub names (never the team the record was created for), then
//! fetches who saw or changed it on the boroughs it came from, which its access list shows first.

use std::sync::Arc;
use std::time::Duration;

use polyphony_core::net::FramedStream;
use polyphony_core::store::Store;
use polyphony_core::sync::{ErrorCode, Frame, TransferCase, Transferred, DEFAULT_MAX_FRAME};
use polyphony_core::CaseId;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::audit::{Actor, AuditAction};
use crate::driver::CoreDriver;
use crate::registry::Registry;
use crate::session::{off_runtime, Shared};

/// Store namespace: case id → a [`PendingTransfer`].
const NS_TRANSFERS: &str = "hub.transfers";

/// Store namespace: case id → nothing: a case transferred here whose history from the
/// boroughs it came from is still to fetch.
pub(super) const NS_HISTORY_WANTED: &str = "hub.history-wanted";

/// Store namespace: case id → the team (id) this borough moved it to between its own teams,
/// for the hub's registry to follow.
const NS_MOVES: &str = "hub.moves";

/// Note that `case` moved to `team`, one of this borough's own: the link tells the hub (at once
/// if it is up).
pub fn note_move(
    store: &dyn Store,
    case: CaseId,
    team: polyphony_core::TeamId,
) -> Result<(), polyphony_core::store::StoreError> {
    store.put_meta(NS_MOVES, &case.to_string(), team.to_string().as_bytes())
}

/// How long one request to the hub may take before the link gives up on it for now.
const ANSWER_WAIT: Duration = Duration::from_secs(60);

/// A transfer an administrator asked for, until the hub confirms it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTransfer {
    /// The case.
    pub case: CaseId,
    /// The receiving borough, as the administrator named it.
    pub borough: String,
    /// The receiving team, as the administrator named it.
    pub team: String,
    /// When it was asked for (RFC 3339).
    pub requested_at: String,
    /// Why the hub refused it for good, if it did (no such borough or team, not this
    /// borough's case): it is not asked again; ask anew. A refusal for now (the hub's disk) is
    /// not kept here: the link asks again.
    pub refused: Option<String>,
}

/// Keep an administrator's request to hand `case` to `team` of `borough`, replacing an earlier
/// one for the case. Refused unless the case is one of this borough's own teams'.
pub fn request(
    store: &dyn Store,
    registry: &Registry,
    case: CaseId,
    borough: &str,
    team: &str,
) -> Result<PendingTransfer, String> {
    let owner = registry
        .case_team(&case)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("case {case} is not registered on this borough server"))?;
    let own = registry
        .team_by_id(&owner)
        .map_err(|e| e.to_string())?
        .is_some_and(|t| t.borough.is_none());
    if !own {
        return Err(format!(
            "case {case} was transferred to another borough already"
        ));
    }
    if borough.trim().is_empty() || team.trim().is_empty() {
        return Err("name the receiving borough and its team".to_string());
    }
    if let Some(m) = super::membership::load(store).map_err(|e| e.to_string())? {
        let given = borough.trim();
        if given.eq_ignore_ascii_case(&m.name) || given == m.borough.to_string() {
            return Err(format!(
                "the {} borough is this one: a case moves between its own teams with `polyphony-server case move`",
                m.name
            ));
        }
    }
    let pending = PendingTransfer {
        case,
        borough: borough.trim().to_string(),
        team: team.trim().to_string(),
        requested_at: crate::registry::rfc3339(time::OffsetDateTime::now_utc()),
        refused: None,
    };
    let bytes = serde_json::to_vec(&pending).map_err(|e| e.to_string())?;
    store
        .put_meta(NS_TRANSFERS, &case.to_string(), &bytes)
        .map_err(|e| e.to_string())?;
    Ok(pending)
}

/// Every transfer asked for and not yet confirmed by the hub (refused ones included).
pub fn pending(store: &dyn Store) -> Result<Vec<PendingTransfer>, String> {
    store
        .scan_meta(NS_TRANSFERS)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| e.to_string()))
        .collect()
}

/// The hub moved the case: register it here to the receiving team, as a case moved away.
fn done(shared: &Shared, t: &Transferred) -> Result<(), String> {
    let registry = &shared.registry;
    registry
        .add_foreign_team(&t.team, t.borough)
        .map_err(|e| e.to_string())?;
    let from = registry
        .move_case(t.case, t.team.id)
        .map_err(|e| e.to_string())?;
    if from != t.team.id {
        shared.audit(
            Actor::Hub,
            AuditAction::CaseMoved,
            Some(t.case),
            format!(
                "transferred through the trust hub from team {from} to the {} borough's team '{}' ({}); this borough's devices upload what they wrote before they are told, then drop their copies",
                t.borough_name, t.team.name, t.team.id
            ),
        );
    }
    shared
        .storage
        .store
        .delete_meta(NS_TRANSFERS, &t.case.to_string())
        .map_err(|e| e.to_string())?;
    info!(case = %t.case, borough = %t.borough_name, team = %t.team.name, "case transferred");
    Ok(())
}

fn refused(shared: &Shared, mut p: PendingTransfer, why: String) {
    warn!(case = %p.case, error = %why, "the trust hub refused a transfer");
    shared.audit(
        Actor::Hub,
        AuditAction::Refused,
        Some(p.case),
        format!(
            "the trust hub refused the transfer to the {} borough's team '{}': {why}",
            p.borough, p.team
        ),
    );
    p.refused = Some(why);
    if let Ok(bytes) = serde_json::to_vec(&p) {
        let _ = shared
            .storage
            .store
            .put_meta(NS_TRANSFERS, &p.case.to_string(), &bytes);
    }
}

/// Ask the hub over `conn` for every transfer pending (not refused), and fetch the history of
/// every case transferred here that still lacks it. Errors end the round; it runs again later.
pub(super) async fn run_round(
    shared: &Arc<Shared>,
    driver: &CoreDriver,
    conn: &quinn::Connection,
) -> Result<(), String> {
    let asks: Vec<PendingTransfer> = off_runtime(|| pending(&*shared.storage.store))?
        .into_iter()
        .filter(|p| p.refused.is_none())
        .collect();
    let wanted: Vec<CaseId> = off_runtime(|| shared.storage.store.scan_meta(NS_HISTORY_WANTED))
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|(k, _)| k.parse().ok())
        .collect();
    let moves: Vec<(CaseId, String)> = off_runtime(|| shared.storage.store.scan_meta(NS_MOVES))
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|(k, v)| Some((k.parse().ok()?, String::from_utf8(v).ok()?)))
        .collect();
    if asks.is_empty() && wanted.is_empty() && moves.is_empty() {
        return Ok(());
    }
    let me = off_runtime(|| super::membership::load(&*shared.storage.store))
        .map_err(|e| e.to_string())?
        .ok_or("this borough has left the trust hub")?
        .borough;
    let (send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let mut stream = FramedStream::with_limit(send, recv, DEFAULT_MAX_FRAME);
    // What could not be done now, said at the end: one item does not hold up the others.
    let mut later: Vec<String> = Vec::new();
    for p in asks {
        // This server's own records of the case only: what came with it from elsewhere the hub
        // holds already.
        let access = off_runtime(|| crate::session::own_access_entries(shared, p.case))?;
        // What was read for the list is durable before it leaves, as any data leaving is.
        driver
            .durable(
                shared
                    .storage
                    .group
                    .current_in(shared.storage.group.generation()),
            )
            .await
            .map_err(|e| e.to_string())?;
        let req = TransferCase {
            case: p.case,
            borough: p.borough.clone(),
            team: p.team.clone(),
            access,
        };
        match ask(&mut stream, Frame::Transfer(req)).await? {
            Frame::Transferred(t) if t.case == p.case => off_runtime(|| done(shared, &t))?,
            // The hub will not do it (no such borough or team, not this borough's case, too
            // large): kept as refused, for the administrator to see and ask anew.
            Frame::Error(r) if final_refusal(r.code) => {
                off_runtime(|| refused(shared, p, r.message))
            }
            // The hub could not do it now (its disk, its registry): asked again later; the
            // round goes on with the others.
            Frame::Error(r) => later.push(format!(
                "the trust hub could not carry out the transfer of case {} now: {}",
                p.case, r.message
            )),
            other => return Err(format!("the trust hub answered {}", other.kind())),
        }
    }
    for (case, team) in moves {
        let forget = || {
            off_runtime(|| {
                let store = &shared.storage.store;
                // Only if it did not move again meanwhile.
                if store.get_meta(NS_MOVES, &case.to_string())?.as_deref() == Some(team.as_bytes())
                {
                    store.delete_meta(NS_MOVES, &case.to_string())?;
                }
                Ok::<_, polyphony_core::store::StoreError>(())
            })
            .map_err(|e| e.to_string())
        };
        // Sent only while this borough's registry still says so (the case may have left it, or
        // come back to another team, since the note).
        let still = off_runtime(|| {
            let registry = &shared.registry;
            let Ok(team_id) = team.parse::<polyphony_core::TeamId>() else {
                return Ok(false);
            };
            Ok::<_, crate::registry::RegistryError>(
                registry.case_team(&case)? == Some(team_id)
                    && registry
                        .team_by_id(&team_id)?
                        .is_some_and(|t| t.borough.is_none()),
            )
        })
        .map_err(|e| e.to_string())?;
        if !still {
            forget()?;
            continue;
        }
        // The borough itself as the receiver: the hub's registry follows its move.
        let req = TransferCase {
            case,
            borough: me.to_string(),
            team: team.clone(),
            access: Vec::new(),
        };
        match ask(&mut stream, Frame::Transfer(req)).await? {
            Frame::Transferred(_) => forget()?,
            // Refused as it stands (not a change the hub takes): forgotten, and said.
            Frame::Error(r) if matches!(r.code, ErrorCode::InvalidChange | ErrorCode::TooLarge) => {
                warn!(%case, error = %r.message, "the trust hub did not follow a move of a case between this borough's teams");
                forget()?;
            }
            // Not yet (the hub has not heard of the team, or of the case): asked again while
            // the borough's registry still says so.
            Frame::Error(r) => later.push(format!(
                "the trust hub did not follow the move of case {case} yet: {}",
                r.message
            )),
            other => return Err(format!("the trust hub answered {}", other.kind())),
        }
    }
    for case in wanted {
        match ask(&mut stream, Frame::HistoryWant { case }).await? {
            Frame::History(h) if h.case == case => off_runtime(|| {
                shared
                    .registry
                    .set_carried_access(&case, &h.access)
                    .map_err(|e| e.to_string())?;
                shared.audit(
                    Actor::Hub,
                    AuditAction::CaseMoved,
                    Some(case),
                    format!(
                        "transferred here through the trust hub; {} access record(s) from the boroughs it came from kept with it",
                        h.access.len()
                    ),
                );
                shared
                    .storage
                    .store
                    .delete_meta(NS_HISTORY_WANTED, &case.to_string())
                    .map_err(|e| e.to_string())
            })?,
            // Not this borough's case (any more): nothing to fetch.
            Frame::Error(r) if r.code == ErrorCode::NotAvailable => {
                warn!(%case, error = %r.message, "the trust hub sent no history for a case");
                off_runtime(|| {
                    shared
                        .storage
                        .store
                        .delete_meta(NS_HISTORY_WANTED, &case.to_string())
                })
                .map_err(|e| e.to_string())?;
            }
            Frame::Error(r) => later.push(format!(
                "the trust hub could not send the history of case {case} now: {}",
                r.message
            )),
            other => return Err(format!("the trust hub answered {}", other.kind())),
        }
    }
    let _ = stream.send.finish();
    match later.is_empty() {
        true => Ok(()),
        false => Err(later.join("; ")),
    }
}

/// Whether the hub's refusal of a transfer stands (asking again would get the same answer).
fn final_refusal(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotAvailable | ErrorCode::InvalidChange | ErrorCode::TooLarge
    )
}

async fn ask(stream: &mut FramedStream, frame: Frame) -> Result<Frame, String> {
    let exchange = async {
        stream
            .write_frames(&[frame])
            .await
            .map_err(|e| e.to_string())?;
        stream
            .read_frame()
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the trust hub closed the stream".to_string())
    };
    tokio::time::timeout(ANSWER_WAIT, exchange)
        .await
        .map_err(|_| "the trust hub did not answer within a minute".to_string())?
}
