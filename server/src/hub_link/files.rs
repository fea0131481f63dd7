//! The files (attachments) of the borough's cases over the link: each file a case's record
//! names goes to the hub if the borough holds it, and comes from the hub if the borough lacks
//! it (a case transferred here, a borough rebuilt), on streams beside the link's session, with
//! client-core's attachment exchange (the hub serves it as for a device: only files of cases
//! the link may sync, checked against their address, acknowledged once on its disk).
//!
//! Which files are on the hub is remembered per case and address, so a file goes once; cases
//! are looked at when they changed (a device's change, or one from the hub) and all of them
//! when a link session begins.

use std::collections::BTreeSet;
use std::sync::Arc;

use polyphony_core::model::attachments::referenced_blobs;
use polyphony_core::{BlobHash, CaseId};
use tracing::warn;

use crate::session::{off_runtime, Shared};

/// Store namespace: `<case>.<address>` → nothing: the hub holds this file of the case.
const NS_FILES_ON_HUB: &str = "hub.files";

fn key(case: &CaseId, hash: &BlobHash) -> String {
    format!("{case}.{hash}")
}

/// How many of `files` (named by `case`'s record) the hub is not known to hold.
pub fn not_on_hub(
    store: &dyn polyphony_core::store::Store,
    case: &CaseId,
    files: &[BlobHash],
) -> Result<usize, polyphony_core::store::StoreError> {
    let mut n = 0;
    for hash in files {
        if store.get_meta(NS_FILES_ON_HUB, &key(case, hash))?.is_none() {
            n += 1;
        }
    }
    Ok(n)
}

/// What a round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Moved {
    /// Files sent to the hub.
    pub sent: usize,
    /// Files fetched from it.
    pub fetched: usize,
    /// Files neither side holds yet (the device that attached one has not uploaded it).
    pub missing: usize,
}

/// The files of `cases` (of this borough's own teams) not known to be on both sides: send
/// each the borough holds, fetch each it lacks. An error ends the round; the cases are looked
/// at again in the next.
pub(super) async fn run_round(
    shared: &Arc<Shared>,
    hub: &str,
    conn: &quinn::Connection,
    cases: &BTreeSet<CaseId>,
) -> Result<Moved, String> {
    let mut moved = Moved::default();
    for case in cases {
        let due = off_runtime(|| due(shared, case))?;
        for (hash, held) in due {
            let store = &shared.storage.store;
            if held {
                let Some(bytes) =
                    off_runtime(|| store.get_blob(case, &hash)).map_err(|e| e.to_string())?
                else {
                    continue;
                };
                polyphony_core::net::blobs::upload(hub, conn, *case, hash, &bytes)
                    .await
                    .map_err(|e| format!("file {hash} of case {case}: {e}"))?;
                moved.sent += 1;
            } else {
                match polyphony_core::net::blobs::download(hub, conn, *case, hash).await {
                    Ok(bytes) => {
                        off_runtime(|| store.put_blob(case, &hash, &bytes))
                            .map_err(|e| e.to_string())?;
                        moved.fetched += 1;
                    }
                    Err(e) => {
                        // The hub lacks it too (or refused it): looked at again later.
                        tracing::debug!(%case, %hash, error = %e, "a file is not on the hub yet");
                        moved.missing += 1;
                        continue;
                    }
                }
            }
            off_runtime(|| store.put_meta(NS_FILES_ON_HUB, &key(case, &hash), &[]))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(moved)
}

/// The files `case`'s record names that are not known to be on the hub, each with whether the
/// borough holds it. For a case transferred to another borough, only those it holds (a device's
/// late upload goes on to the hub, within the moved-case window); none for a case it does not
/// register.
fn due(shared: &Shared, case: &CaseId) -> Result<Vec<(BlobHash, bool)>, String> {
    let own = match shared.registry.case_team(case).map_err(|e| e.to_string())? {
        Some(team) => shared
            .registry
            .team_by_id(&team)
            .map_err(|e| e.to_string())?
            .map(|t| t.borough.is_none()),
        None => None,
    };
    let Some(own) = own else {
        return Ok(Vec::new());
    };
    let Some(stored) = shared.storage.case(case).map_err(|e| e.to_string())? else {
        return Ok(Vec::new());
    };
    let hashes = referenced_blobs(&stored.lock().expect("case lock").doc);
    let store = &shared.storage.store;
    let mut due = Vec::new();
    for hash in hashes {
        if store
            .get_meta(NS_FILES_ON_HUB, &key(case, &hash))
            .map_err(|e| e.to_string())?
            .is_some()
        {
            continue;
        }
        let held = store.has_blob(case, &hash).map_err(|e| e.to_string())?;
        if held || own {
            due.push((hash, held));
        }
    }
    Ok(due)
}

/// Log what a round did, if anything.
pub(super) fn report(moved: Result<Moved, String>) {
    match moved {
        Ok(m) if m == Moved::default() => {}
        Ok(m) => tracing::info!(
            sent = m.sent,
            fetched = m.fetched,
            missing = m.missing,
            "files moved over the trust hub link"
        ),
        Err(e) => warn!(error = %e, "files over the trust hub link: trying again later"),
    }
}

/// The link's file task for one session: looks at the cases sent on `cases` (all of them at
/// the start), a second after the last arrived, until the session ends (it is aborted).
pub(super) async fn task(
    shared: Arc<Shared>,
    hub: String,
    conn: quinn::Connection,
    mut cases: tokio::sync::mpsc::UnboundedReceiver<CaseId>,
) {
    let mut due: BTreeSet<CaseId> = BTreeSet::new();
    loop {
        if due.is_empty() {
            match cases.recv().await {
                Some(c) => {
                    due.insert(c);
                }
                None => return,
            }
        }
        // Gather what else comes in the next second: one round for a burst.
        let gather = tokio::time::sleep(std::time::Duration::from_secs(1));
        tokio::pin!(gather);
        loop {
            tokio::select! {
                c = cases.recv() => match c {
                    Some(c) => { due.insert(c); }
                    None => return,
                },
                () = &mut gather => break,
            }
        }
        let round = run_round(&shared, &hub, &conn, &due).await;
        let failed = round.is_err();
        report(round);
        if failed {
            // Looked at again after a pause, with whatever arrives meanwhile.
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        } else {
            due.clear();
        }
    }
}
