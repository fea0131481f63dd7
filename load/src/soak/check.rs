//! The soak's checks, run while nothing is writing: the server's store opened offline right after
//! its SIGKILL (before the restart, so nothing a device sends later can hide a loss), and each
//! device's profile opened in this process between its commands.
//!
//! What must hold: every change a device recorded as acknowledged is in the server's store (its
//! acknowledged heads are changes there; a change is there only with all its ancestors), and every
//! note a `note append` reported saved is in that device's profile.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result};
use automerge::AutoCommit;
use polyphony_core::model::CaseDoc;
use polyphony_core::profile::Profile;
use polyphony_core::CaseId;
use polyphony_server::ServerConfig;

use super::device::{CliDevice, SharedCase, PASSPHRASE};

/// Every case in the server's store, loaded as the restarted server would load it.
pub struct ServerSnapshot {
    /// The documents, by case.
    pub docs: BTreeMap<CaseId, AutoCommit>,
    /// The sequence number of each case's first stored chunk: it moves when a compaction replaced
    /// the log's head with a snapshot.
    pub first_seq: BTreeMap<CaseId, u64>,
}

/// What one check found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Checked {
    /// Acknowledged heads looked up in the server's store.
    pub heads: u64,
    /// Changes those heads cover (themselves and every ancestor) in the server's document.
    pub changes: u64,
    /// Saved notes looked up in their device's profile.
    pub notes: u64,
    /// Of those, missing: must stay 0.
    pub lost: u64,
}

impl std::ops::AddAssign for Checked {
    fn add_assign(&mut self, o: Checked) {
        self.heads += o.heads;
        self.changes += o.changes;
        self.notes += o.notes;
        self.lost += o.lost;
    }
}

/// Open the server's store (the server must be down) and load every case from its chunks.
pub fn server_snapshot(data: &Path) -> Result<ServerSnapshot> {
    let config = ServerConfig {
        data_dir: data.to_path_buf(),
        ..ServerConfig::default()
    };
    let store = polyphony_server::data_dir::open_store(&config)
        .context("opening the killed server's store offline")?;
    let mut snap = ServerSnapshot {
        docs: BTreeMap::new(),
        first_seq: BTreeMap::new(),
    };
    for case in store.list_cases()? {
        let chunks = store.load_chunks(&case)?.unwrap_or_default();
        if let Some((seq, _)) = chunks.first() {
            snap.first_seq.insert(case, *seq);
        }
        let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, c)| c).collect();
        let doc = AutoCommit::load(&bytes)
            .with_context(|| format!("case {case} does not load from the server's store"))?;
        snap.docs.insert(case, doc);
    }
    Ok(snap)
}

/// Open a device's profile (no command may be running on it) and check its saved notes, and, given
/// the server's store, its acknowledged heads. Missing items are printed and counted as lost.
pub fn device(
    dev: &CliDevice,
    cases: &[SharedCase],
    server: Option<&mut ServerSnapshot>,
) -> Result<(Checked, BTreeMap<CaseId, u64>)> {
    let mut profile = Profile::open(dev.home(), PASSPHRASE).with_context(|| {
        format!(
            "device {}'s profile does not open after a SIGKILL",
            dev.index
        )
    })?;
    let mut checked = Checked::default();
    if let Some(server) = server {
        checked += acknowledged(&profile, dev.index, cases, server)?;
    }
    for c in cases {
        checked += saved_notes(&mut profile, dev, c)?;
    }
    let mut first_seq = BTreeMap::new();
    for c in cases {
        if let Some((seq, _)) = profile
            .store()
            .load_chunks(&c.case)?
            .and_then(|l| l.into_iter().next())
        {
            first_seq.insert(c.case, seq);
        }
    }
    Ok((checked, first_seq))
}

fn acknowledged(
    profile: &Profile,
    index: usize,
    cases: &[SharedCase],
    server: &mut ServerSnapshot,
) -> Result<Checked> {
    let mut checked = Checked::default();
    for c in cases {
        let heads = profile.acknowledged_heads(c.case)?;
        if heads.is_empty() {
            continue;
        }
        checked.heads += heads.len() as u64;
        let Some(doc) = server.docs.get_mut(&c.case) else {
            eprintln!(
                "LOST: device {index} holds {} acknowledged head(s) of case {} and the server's store has no such case",
                heads.len(),
                c.case
            );
            checked.lost += heads.len() as u64;
            continue;
        };
        let mut all_there = true;
        for h in &heads {
            if doc.get_change_by_hash(h).is_none() {
                eprintln!(
                    "LOST: device {index}: acknowledged change {h} of case {} is not in the server's store",
                    c.case
                );
                checked.lost += 1;
                all_there = false;
            }
        }
        if all_there {
            let total = doc.get_changes_meta(&[]).len();
            let newer = doc.get_changes_meta(&heads).len();
            checked.changes += (total - newer) as u64;
        }
    }
    Ok(checked)
}

fn saved_notes(profile: &mut Profile, dev: &CliDevice, c: &SharedCase) -> Result<Checked> {
    let mut checked = Checked::default();
    let Some(tokens) = dev.saved.get(&c.case) else {
        return Ok(checked);
    };
    let doc = profile.document(c.case)?;
    let notes = meeting_notes(doc, c)?;
    let present = tokens_in(&notes);
    for t in tokens {
        checked.notes += 1;
        if !present.contains(t.as_str()) {
            eprintln!(
                "LOST: device {}: note {t} was reported saved (exit 0) and is not in its profile (case {})",
                dev.index, c.case
            );
            checked.lost += 1;
        }
    }
    Ok(checked)
}

/// The notes text of the shared meeting in a case's document.
pub fn meeting_notes(doc: AutoCommit, c: &SharedCase) -> Result<String> {
    let view = CaseDoc::from_automerge(doc, None)?.view();
    Ok(view
        .meetings
        .into_iter()
        .find(|m| m.meta.id == c.meeting)
        .map(|m| m.notes)
        .unwrap_or_default())
}

/// Every `[...]` token in a text. Appends made concurrently on two devices may meet on one line,
/// so tokens are found by their brackets, not by lines.
pub fn tokens_in(text: &str) -> HashSet<&str> {
    let mut out = HashSet::new();
    let mut rest = text;
    while let Some(start) = rest.find('[') {
        let Some(len) = rest[start..].find(']') else {
            break;
        };
        out.insert(&rest[start..start + len + 1]);
        rest = &rest[start + len + 1..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::tokens_in;

    #[test]
    fn tokens_are_found_even_when_concurrent_appends_share_a_line() {
        let t = tokens_in("[d0n1]\n[d1n1][d0n2]\n[d2n10]");
        assert_eq!(t.len(), 4);
        assert!(t.contains("[d1n1]") && t.contains("[d2n10]"));
        assert!(!t.contains("[d2n1]"));
    }
}
