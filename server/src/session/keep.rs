//! On the trust hub: keeping each borough's sealed copy (its CA, registry and audit log, sealed
//! under a recovery key the hub never sees), and handing it back to a rebuilt borough.
//!
//! A borough sends `Keep` parts on streams beside its link's session; each is answered with
//! `Kept` once it is durable here. The hub orders and bounds the parts by the numbers they carry
//! in the clear and cannot read what they hold. Per borough, in the store namespace
//! `keep.<borough>`:
//! - registry parts, `r.<generation>.<part>`: a generation becomes the kept one once its last part
//!   arrives with every part before it; the generations before it are then dropped (a borough's
//!   registry copy is replaced whole, never merged);
//! - audit parts, `a.<first record>`: appended in order; a part that does not start where the
//!   kept records end is not kept (the answer says where they end, and the borough sends from
//!   there), except one starting at record 0, which begins the copy again (the borough joined
//!   again with a new recovery key).

use std::sync::Arc;

use polyphony_core::net::FramedStream;
use polyphony_core::store::{Store, StoreError};
use polyphony_core::sync::{ErrorCode, Frame, KeepPart, Kept, Shelf};
use polyphony_core::BoroughId;
use tracing::warn;

use super::{refusal, Shared};
use crate::audit::{Actor, AuditAction};
use crate::driver::CoreDriver;

/// The most parts one registry generation may have; a borough's registry is a few megabytes
/// sealed in parts of [`PART_BYTES`], so this is far above any.
pub const MAX_REGISTRY_PARTS: u64 = 1_024;

/// The most audit records one part may hold.
pub const MAX_AUDIT_RECORDS_PER_PART: u64 = 10_000;

/// The plaintext bytes a borough puts in one part (below the link's frame limit once sealed).
pub const PART_BYTES: usize = 4 * 1024 * 1024;

const KEY_REGISTRY: &str = "m.registry";
const KEY_AUDIT: &str = "m.audit";

/// The store namespace of one borough's kept copy: what the hub holds of it.
fn ns(borough: &BoroughId) -> String {
    format!("keep.{borough}")
}

/// The namespace of its registry parts (apart from its audit parts, so that replacing a
/// registry generation reads no audit part).
fn registry_ns(borough: &BoroughId) -> String {
    format!("keep.{borough}.registry")
}

/// The namespace of its audit parts.
fn audit_ns(borough: &BoroughId) -> String {
    format!("keep.{borough}.audit")
}

fn registry_key(generation: u64, part: u64) -> String {
    format!("r.{generation:020}.{part:08}")
}

fn number(store: &dyn Store, ns: &str, key: &str) -> Result<Option<u64>, StoreError> {
    Ok(store
        .get_meta(ns, key)?
        .and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok()))
}

/// What the hub holds of `borough`'s copy.
pub fn kept(store: &dyn Store, borough: &BoroughId) -> Result<Kept, StoreError> {
    let ns = ns(borough);
    Ok(Kept {
        registry: number(store, &ns, KEY_REGISTRY)?,
        audit_through: number(store, &ns, KEY_AUDIT)?.unwrap_or(0),
    })
}

/// Why a part is not kept: the stream is closed with this.
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    /// The part breaks a bound or the order.
    #[error("{0}")]
    Bad(String),
    /// The hub's store failed.
    #[error("the trust hub could not keep it: {0}")]
    Store(#[from] StoreError),
}

/// Store one part of `borough`'s copy (not yet durable: the caller waits for the store's next
/// flush before it answers). What the hub holds afterwards is returned.
pub fn keep(store: &dyn Store, borough: &BoroughId, part: &KeepPart) -> Result<Kept, KeepError> {
    let ns = ns(borough);
    match part.shelf {
        Shelf::Registry => {
            let parts = registry_ns(borough);
            let (generation, index) = (part.first, part.count);
            if index >= MAX_REGISTRY_PARTS {
                return Err(KeepError::Bad(format!(
                    "a registry copy of more than {MAX_REGISTRY_PARTS} parts"
                )));
            }
            if index == 0 {
                // A new generation begins: an unfinished one before it will never finish.
                let complete = number(store, &ns, KEY_REGISTRY)?;
                drop_generations(store, &parts, |g| Some(g) != complete && g != generation)?;
            }
            store.put_meta(&parts, &registry_key(generation, index), &part.sealed)?;
            if part.last {
                for i in 0..index {
                    if store
                        .get_meta(&parts, &registry_key(generation, i))?
                        .is_none()
                    {
                        return Err(KeepError::Bad(format!(
                            "registry generation {generation} ended at part {index} without part {i}"
                        )));
                    }
                }
                store.put_meta(&ns, KEY_REGISTRY, generation.to_string().as_bytes())?;
                drop_generations(store, &parts, |g| g != generation)?;
            }
        }
        Shelf::Audit => {
            let parts = audit_ns(borough);
            if part.count == 0 || part.count > MAX_AUDIT_RECORDS_PER_PART {
                return Err(KeepError::Bad(format!(
                    "an audit part of {} records (1 to {MAX_AUDIT_RECORDS_PER_PART})",
                    part.count
                )));
            }
            let through = number(store, &ns, KEY_AUDIT)?.unwrap_or(0);
            if part.first == 0 && through > 0 {
                // Begun again (a new recovery key, or the borough's own log put back from an
                // older copy): the old parts are of another key or another history.
                for (key, _) in store.scan_meta(&parts)? {
                    store.delete_meta(&parts, &key)?;
                }
            } else if part.first != through {
                // Not where the kept records end: not kept; the answer says where they end.
                return Ok(kept(store, borough)?);
            }
            let end = part.first.checked_add(part.count).ok_or_else(|| {
                KeepError::Bad("an audit part past the last record number".into())
            })?;
            let mut value = part.count.to_be_bytes().to_vec();
            value.extend_from_slice(&part.sealed);
            store.put_meta(&parts, &format!("a.{:020}", part.first), &value)?;
            store.put_meta(&ns, KEY_AUDIT, end.to_string().as_bytes())?;
        }
    }
    Ok(kept(store, borough)?)
}

/// Delete the registry parts of every generation `drop` says.
fn drop_generations(
    store: &dyn Store,
    parts: &str,
    drop: impl Fn(u64) -> bool,
) -> Result<(), StoreError> {
    // Keys only would do; the store reads values too, but these are the registry's parts alone
    // (a few megabytes), never the audit log's.
    for (key, _) in store.scan_meta(parts)? {
        if registry_generation(&key).is_some_and(&drop) {
            store.delete_meta(parts, &key)?;
        }
    }
    Ok(())
}

fn registry_generation(key: &str) -> Option<u64> {
    key.strip_prefix("r.")?.split('.').next()?.parse().ok()
}

/// Every part of `borough`'s copy, in order (the kept registry generation's parts, then the
/// audit parts), and what they add up to.
pub fn fetch(store: &dyn Store, borough: &BoroughId) -> Result<(Vec<KeepPart>, Kept), StoreError> {
    let marks = kept(store, borough)?;
    let mut registry = Vec::new();
    let mut entries = store.scan_meta(&registry_ns(borough))?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, value) in entries {
        let Some(rest) = key.strip_prefix("r.") else {
            continue;
        };
        let mut it = rest.split('.');
        let (Some(Ok(g)), Some(Ok(i))) = (
            it.next().map(str::parse::<u64>),
            it.next().map(str::parse::<u64>),
        ) else {
            continue;
        };
        if Some(g) == marks.registry {
            registry.push(KeepPart {
                shelf: Shelf::Registry,
                first: g,
                count: i,
                last: false,
                sealed: value,
            });
        }
    }
    if let Some(last) = registry.last_mut() {
        last.last = true;
    }
    let mut entries = store.scan_meta(&audit_ns(borough))?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, value) in entries {
        let Some(first) = key.strip_prefix("a.").and_then(|f| f.parse().ok()) else {
            continue;
        };
        if value.len() <= 8 {
            continue;
        }
        let count = u64::from_be_bytes(value[..8].try_into().expect("8 bytes"));
        registry.push(KeepPart {
            shelf: Shelf::Audit,
            first,
            count,
            last: true,
            sealed: value[8..].to_vec(),
        });
    }
    Ok((registry, marks))
}

/// Serve one safekeeping stream of `borough`'s link whose first frame was read: `Keep` parts,
/// each answered with `Kept` once durable; or `KeepFetch`, answered with every part and `Kept`.
pub async fn serve(
    shared: Arc<Shared>,
    driver: Arc<CoreDriver>,
    borough: BoroughId,
    mut stream: FramedStream,
    first: Frame,
) {
    let actor = Actor::Borough { borough };
    let mut next = Some(first);
    while let Some(frame) = next_frame(&mut next, &mut stream).await {
        let answer = match frame {
            Frame::Keep(part) => {
                let kept = super::off_runtime(|| {
                    let generation = shared.storage.group.generation();
                    let kept = keep(&*shared.storage.store, &borough, &part)?;
                    Ok::<_, KeepError>((kept, shared.storage.group.wrote_in(generation)))
                });
                match kept {
                    Ok((kept, ticket)) => match driver.durable(ticket).await {
                        Ok(()) => vec![Frame::Kept(kept)],
                        Err(e) => vec![fail(ErrorCode::StorageFailed, e.to_string())],
                    },
                    Err(KeepError::Bad(why)) => {
                        shared.audit(
                            actor.clone(),
                            AuditAction::Refused,
                            None,
                            format!("a part of the borough's kept copy refused: {why}"),
                        );
                        vec![fail(ErrorCode::Malformed, why)]
                    }
                    Err(e) => vec![fail(ErrorCode::StorageFailed, e.to_string())],
                }
            }
            Frame::KeepFetch => {
                match super::off_runtime(|| fetch(&*shared.storage.store, &borough)) {
                    Ok((parts, kept)) => {
                        shared.audit(
                            actor.clone(),
                            AuditAction::Restored,
                            None,
                            format!(
                                "the borough fetched its kept copy to restore: {} part(s), registry generation {}, {} audit record(s)",
                                parts.len(),
                                kept.registry.map_or_else(|| "none".to_string(), |g| g.to_string()),
                                kept.audit_through
                            ),
                        );
                        let mut frames: Vec<Frame> = parts.into_iter().map(Frame::Keep).collect();
                        frames.push(Frame::Kept(kept));
                        frames
                    }
                    Err(e) => vec![fail(ErrorCode::StorageFailed, e.to_string())],
                }
            }
            other => vec![fail(
                ErrorCode::Malformed,
                format!(
                    "a safekeeping stream carries keep parts, not {}",
                    other.kind()
                ),
            )],
        };
        let ends = matches!(answer.last(), Some(Frame::Error(_)));
        for frame in answer {
            if stream.write_frames(&[frame]).await.is_err() {
                return;
            }
        }
        if ends {
            warn!(%borough, "a safekeeping stream ended on an error");
            break;
        }
    }
    let _ = stream.send.finish();
}

/// The first frame of a stream beside a borough's link (already read), then each next one; None
/// when the stream ends or breaks.
pub(super) async fn next_frame(
    first: &mut Option<Frame>,
    stream: &mut FramedStream,
) -> Option<Frame> {
    match first.take() {
        Some(f) => Some(f),
        None => stream.read_frame().await.ok().flatten(),
    }
}

fn fail(code: ErrorCode, message: String) -> Frame {
    Frame::Error(refusal(code, message))
}

#[cfg(test)]
mod tests {
    use polyphony_core::store::MemoryStore;

    use super::*;

    fn part(shelf: Shelf, first: u64, count: u64, last: bool, byte: u8) -> KeepPart {
        KeepPart {
            shelf,
            first,
            count,
            last,
            sealed: vec![byte; 8],
        }
    }

    #[test]
    fn a_registry_generation_is_kept_whole_and_replaces_the_one_before() {
        let store = MemoryStore::new();
        let b = BoroughId::random();
        keep(&store, &b, &part(Shelf::Registry, 5, 0, false, 1)).unwrap();
        let k = keep(&store, &b, &part(Shelf::Registry, 5, 1, true, 2)).unwrap();
        assert_eq!(k.registry, Some(5));
        // A newer generation, unfinished: the kept one is still 5, and fetched whole.
        let k = keep(&store, &b, &part(Shelf::Registry, 9, 0, false, 3)).unwrap();
        assert_eq!(k.registry, Some(5));
        let (parts, _) = fetch(&store, &b).unwrap();
        assert_eq!(
            parts
                .iter()
                .map(|p| (p.first, p.count, p.last))
                .collect::<Vec<_>>(),
            vec![(5, 0, false), (5, 1, true)]
        );
        // It ends: 9 replaces 5, whose parts are gone.
        let k = keep(&store, &b, &part(Shelf::Registry, 9, 1, true, 4)).unwrap();
        assert_eq!(k.registry, Some(9));
        let (parts, _) = fetch(&store, &b).unwrap();
        assert_eq!(
            parts.iter().map(|p| p.sealed[0]).collect::<Vec<_>>(),
            vec![3, 4]
        );
    }

    #[test]
    fn a_registry_generation_missing_a_part_is_refused_and_the_kept_one_stays() {
        let store = MemoryStore::new();
        let b = BoroughId::random();
        keep(&store, &b, &part(Shelf::Registry, 1, 0, true, 1)).unwrap();
        keep(&store, &b, &part(Shelf::Registry, 2, 0, false, 2)).unwrap();
        let e = keep(&store, &b, &part(Shelf::Registry, 2, 2, true, 3)).unwrap_err();
        assert!(e.to_string().contains("without part 1"), "{e}");
        assert_eq!(kept(&store, &b).unwrap().registry, Some(1));
        let e = keep(
            &store,
            &b,
            &part(Shelf::Registry, 3, MAX_REGISTRY_PARTS, true, 3),
        );
        assert!(e.is_err(), "past the parts bound");
    }

    #[test]
    fn audit_parts_append_in_order_only_and_begin_again_from_zero() {
        let store = MemoryStore::new();
        let b = BoroughId::random();
        assert_eq!(
            keep(&store, &b, &part(Shelf::Audit, 0, 10, true, 1))
                .unwrap()
                .audit_through,
            10
        );
        // A gap, or a repeat, is not kept: the answer says where the kept records end.
        assert_eq!(
            keep(&store, &b, &part(Shelf::Audit, 12, 3, true, 2))
                .unwrap()
                .audit_through,
            10
        );
        assert_eq!(
            keep(&store, &b, &part(Shelf::Audit, 5, 3, true, 2))
                .unwrap()
                .audit_through,
            10
        );
        assert_eq!(
            keep(&store, &b, &part(Shelf::Audit, 10, 3, true, 3))
                .unwrap()
                .audit_through,
            13
        );
        assert!(keep(&store, &b, &part(Shelf::Audit, 13, 0, true, 3)).is_err());
        assert!(keep(
            &store,
            &b,
            &part(Shelf::Audit, 13, MAX_AUDIT_RECORDS_PER_PART + 1, true, 3)
        )
        .is_err());
        let (parts, marks) = fetch(&store, &b).unwrap();
        assert_eq!(
            parts.iter().map(|p| (p.first, p.count)).collect::<Vec<_>>(),
            vec![(0, 10), (10, 3)]
        );
        assert_eq!(marks.audit_through, 13);
        // From zero again: the copy begins again.
        keep(&store, &b, &part(Shelf::Audit, 0, 2, true, 9)).unwrap();
        let (parts, marks) = fetch(&store, &b).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].sealed[0], 9);
        assert_eq!(marks.audit_through, 2);
    }

    #[test]
    fn one_boroughs_copy_is_not_anothers() {
        let store = MemoryStore::new();
        let (a, b) = (BoroughId::random(), BoroughId::random());
        keep(&store, &a, &part(Shelf::Audit, 0, 1, true, 1)).unwrap();
        keep(&store, &a, &part(Shelf::Registry, 1, 0, true, 1)).unwrap();
        let (parts, marks) = fetch(&store, &b).unwrap();
        assert!(parts.is_empty());
        assert_eq!(marks, Kept::default());
    }
}
