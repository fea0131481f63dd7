//! Attachments on streams of their own ([`polyphony_core::net::blobs`] is the device's side).
//!
//! Each stream carries one attachment. The device may move an attachment only of a case it may
//! sync (checked against the registry at the start, so a revocation refuses the next one at once),
//! and only one the case's record names: the server keeps no bytes a record does not name, and
//! sends none a record does not name. Bytes are checked against their address before they are
//! kept, sealed in the store beside the case, and acknowledged (`BlobSaved`) only once they are on
//! disk (the group commit's flush). Every upload is audited as a write; every download as an
//! access, recorded on disk before the first byte leaves.

use std::sync::Arc;

use polyphony_core::net::blobs::Receiving;
use polyphony_core::net::{FramedStream, StreamError};
use polyphony_core::sync::{ErrorCode, Frame, Refusal, SessionMode, BLOB_CHUNK_BYTES};
use polyphony_core::{BlobHash, CaseId};
use tracing::warn;

use super::{refusal, Session, Shared};
use crate::audit::{Actor, AuditAction};
use crate::driver::CoreDriver;
use crate::registry::{Device, DeviceStatus, Practitioner};

/// The most frames an attachment stream may carry in one frame: a chunk and its header.
pub const BLOB_STREAM_MAX_FRAME: usize = BLOB_CHUNK_BYTES + 64;

/// How long an upload may pause between two chunks, or a download wait for the device to take
/// the next one, before it is refused (the device tries again at its next sync).
pub const CHUNK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A duration as the refusal says it: "10 minutes", "5 seconds".
fn minutes_or_seconds(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match (s % 60, s / 60) {
        (0, 1) => "1 minute".into(),
        (0, m) if m > 0 => format!("{m} minutes"),
        (_, _) if s == 1 => "1 second".into(),
        _ => format!("{s} seconds"),
    }
}

/// Take room in memory for a file of `size` bytes (two copies, whole MiB; the room is
/// [`crate::ServerConfig::attachment_memory_mib`], over every connection), waiting while others
/// hold it.
async fn room_for(
    shared: &Shared,
    device: polyphony_core::DeviceId,
    size: u64,
) -> Result<Room, Refusal> {
    let mib = size.div_ceil(1 << 20).max(1) * 2;
    // At most 40 (a 20 MiB file, twice), and each room holds at least that: it never waits for
    // room that cannot be.
    let mib = u32::try_from(mib.min(40)).unwrap_or(40);
    let busy = || {
        refusal(
            ErrorCode::Busy,
            "the server is busy moving other files: this one is tried again at the next sync",
        )
    };
    // The device's share first, then the server's room: a device at its share waits without
    // holding any of the room others need.
    // How long a file waits for room before it is refused as "busy" (the device tries again at
    // its next sync; the app, after a while): `attachment_room_wait_secs`.
    let wait = shared.limits.room_wait;
    let take = |s: Arc<tokio::sync::Semaphore>| async move {
        match tokio::time::timeout(wait, s.acquire_many_owned(mib)).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(refusal(
                ErrorCode::ShuttingDown,
                "the server is shutting down",
            )),
            Err(_) => Err(busy()),
        }
    };
    let own = take(shared.limits.device_room(device)).await?;
    let all = take(shared.limits.attachment_room.clone()).await?;
    Ok(Room {
        _own: own,
        _all: all,
    })
}

/// Room taken for one file: given back when the transfer ends, however it ends.
struct Room {
    _own: tokio::sync::OwnedSemaphorePermit,
    _all: tokio::sync::OwnedSemaphorePermit,
}

/// Write one frame, refusing a device that does not take it within [`CHUNK_WAIT`].
async fn write_within(stream: &mut FramedStream, frame: Frame) -> Result<(), Refusal> {
    match tokio::time::timeout(CHUNK_WAIT, stream.write_frames(&[frame])).await {
        Ok(r) => r.map_err(stream_error),
        Err(_) => Err(refusal(
            ErrorCode::Malformed,
            "the device stopped taking the attachment: it is fetched again at the next sync",
        )),
    }
}

/// Serve one attachment stream whose first frame was `first`.
pub async fn serve(
    shared: Arc<Shared>,
    driver: Arc<CoreDriver>,
    conn_id: u64,
    device: Device,
    practitioner: Practitioner,
    stream: FramedStream,
    first: Frame,
) {
    let actor = Actor::Device {
        device: device.id,
        practitioner: practitioner.id,
    };
    let mode = if device.status == DeviceStatus::Revoking {
        SessionMode::Revoking
    } else {
        SessionMode::Normal
    };
    let device_id = device.id;
    let session = Session::new(shared.clone(), conn_id, device, practitioner, mode);
    serve_as(shared, driver, session, actor, device_id, stream, first).await;
}

/// Serve one attachment stream of a borough's link on the trust hub, whose first frame was
/// `first`: the borough moves the files of its own teams' cases (and uploads those of a case
/// transferred away, within the moved-case window), as its session may sync them. Unlike a
/// device, it is sent a file on the wrong person's record too: a borough keeps every byte its
/// records name.
pub async fn serve_borough(
    shared: Arc<Shared>,
    driver: Arc<CoreDriver>,
    conn_id: u64,
    borough: &crate::registry::Borough,
    stream: FramedStream,
    first: Frame,
) {
    let teams = match shared.registry.borough_teams(&borough.id) {
        Ok(t) => t,
        Err(e) => {
            warn!(error = %e, "cannot read a borough's teams for an attachment");
            return;
        }
    };
    let session = Session::for_borough(shared.clone(), conn_id, borough, teams);
    let actor = Actor::Borough {
        borough: borough.id,
    };
    let room = super::borough_as_peer(borough, Vec::new()).0.id;
    serve_as(shared, driver, session, actor, room, stream, first).await;
}

/// Serve one attachment stream for `session`'s peer (`room`: whose share of the memory for
/// files it takes).
async fn serve_as(
    shared: Arc<Shared>,
    driver: Arc<CoreDriver>,
    session: Session,
    actor: Actor,
    device_id: polyphony_core::DeviceId,
    mut stream: FramedStream,
    first: Frame,
) {
    let moving = async {
        match first {
            Frame::BlobOffer { case, hash, size } => {
                receive(
                    &shared,
                    &driver,
                    session,
                    &actor,
                    &mut stream,
                    (device_id, case, hash),
                    size,
                )
                .await
            }
            Frame::BlobWant { case, hash } => {
                send(
                    &shared,
                    &driver,
                    session,
                    &actor,
                    &mut stream,
                    (device_id, case, hash),
                )
                .await
            }
            other => Err(refusal(
                ErrorCode::Malformed,
                format!(
                    "an attachment stream starts with an offer or a want, not {}",
                    other.kind()
                ),
            )),
        }
    };
    // However slow the device, a file's room is given back within the deadline
    // (`attachment_file_deadline_secs`: 10 minutes unless configured otherwise).
    let deadline = shared.limits.file_deadline;
    let outcome = match tokio::time::timeout(deadline, moving).await {
        Ok(r) => r,
        Err(_) => Err(refusal(
            ErrorCode::Malformed,
            format!(
                "the attachment took longer than {} to move: it is tried again at the next sync",
                minutes_or_seconds(deadline)
            ),
        )),
    };
    if let Err(r) = outcome {
        shared.audit(
            actor,
            AuditAction::Refused,
            None,
            format!("attachment refused: {}", r.message),
        );
        let _ = stream.write_frames(&[Frame::Error(r)]).await;
    }
    let _ = stream.send.finish();
    // Let the device read the last frame before the stream is dropped.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), stream.send.stopped()).await;
}

/// The size the case's record gives the attachment at `hash` (the server holds the case, and its
/// record names the address), or why not.
fn named(
    shared: &Shared,
    case: &CaseId,
    hash: &BlobHash,
    shown_only: bool,
) -> Result<Vec<u64>, Refusal> {
    let held = shared
        .storage
        .case(case)
        .map_err(|e| refusal(ErrorCode::Internal, format!("server error: {e}")))?;
    let Some(held) = held else {
        return Err(refusal(
            ErrorCode::NotAvailable,
            "the server does not hold this case yet: sync its record first",
        ));
    };
    let held = held.lock().unwrap_or_else(|p| p.into_inner());
    let sizes = polyphony_core::model::attachments::declared_sizes(&held.doc, hash, shown_only);
    if sizes.is_empty() {
        return Err(refusal(
            ErrorCode::NotAvailable,
            if shown_only {
                format!("the case's record names no attachment {hash} that may be sent (one recorded on another person's record is withheld)")
            } else {
                format!("the case's record names no attachment {hash}: sync the record first")
            },
        ));
    }
    Ok(sizes)
}

fn stream_error(e: StreamError) -> Refusal {
    refusal(ErrorCode::Malformed, format!("attachment stream: {e}"))
}

#[allow(clippy::too_many_arguments)]
async fn receive(
    shared: &Arc<Shared>,
    driver: &CoreDriver,
    mut session: Session,
    actor: &Actor,
    stream: &mut FramedStream,
    (device, case, hash): (polyphony_core::DeviceId, CaseId, BlobHash),
    size: u64,
) -> Result<(), Refusal> {
    session.attachment_access(&case, true)?;
    // A size over the bound is refused at once, before anything else is looked up.
    let mut receiving = Receiving::new(hash, size).map_err(|m| refusal(ErrorCode::TooLarge, m))?;
    let declared = named(shared, &case, &hash, false)?;
    if !declared.contains(&size) {
        return Err(refusal(
            ErrorCode::InvalidChange,
            format!(
                "the record gives this attachment other sizes ({declared:?} bytes), not {size}"
            ),
        ));
    }
    let store = shared.storage.store.clone();
    let (c, h) = (case, hash);
    let held = tokio::task::spawn_blocking(move || store.has_blob(&c, &h))
        .await
        .map_err(|e| refusal(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| refusal(ErrorCode::StorageFailed, e.to_string()))?;
    if !held {
        let _room = room_for(shared, device, size).await?;
        receiving.reserve();
        let _ = stream.write_frames(&[Frame::BlobWant { case, hash }]).await;
        loop {
            let next = tokio::time::timeout(CHUNK_WAIT, stream.read_frame())
                .await
                .map_err(|_| {
                    refusal(
                        ErrorCode::Malformed,
                        "the attachment stopped arriving: it stays on your device; sync again",
                    )
                })?;
            match next.map_err(stream_error)? {
                Some(Frame::BlobChunk(bytes)) => {
                    if receiving
                        .take(&bytes)
                        .map_err(|m| refusal(ErrorCode::Malformed, m))?
                    {
                        break;
                    }
                }
                Some(other) => {
                    return Err(refusal(
                        ErrorCode::Malformed,
                        format!("expected the attachment's bytes, got {}", other.kind()),
                    ))
                }
                None => {
                    return Err(refusal(
                        ErrorCode::Malformed,
                        "the attachment ended before its announced size",
                    ))
                }
            }
        }
        let content = receiving
            .finish()
            .map_err(|m| refusal(ErrorCode::InvalidChange, m))?;
        // Access again before keeping: a revocation while the bytes were arriving stands.
        session.attachment_access(&case, true)?;
        let store = shared.storage.store.clone();
        let group = shared.storage.group.clone();
        let ticket = tokio::task::spawn_blocking(move || {
            let generation = group.generation();
            store
                .put_blob(&case, &hash, &content)
                .map(|()| group.wrote_in(generation))
        })
        .await
        .map_err(|e| refusal(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| {
            refusal(
                ErrorCode::StorageFailed,
                format!("could not keep the attachment: {e}"),
            )
        })?;
        driver.durable(ticket).await.map_err(|e| {
            refusal(
                ErrorCode::StorageFailed,
                format!("the attachment did not reach the server's disk ({e}): it stays on your device; sync again"),
            )
        })?;
        shared.audit(
            actor.clone(),
            AuditAction::Write,
            Some(case),
            format!("attachment {hash} received ({size} bytes)"),
        );
    } else {
        // Held already, perhaps only just written by another upload of the same file whose flush
        // has not happened yet: acknowledged only after a flush that covers it.
        let group = shared.storage.group.clone();
        let ticket = group.wrote_in(group.generation());
        driver.durable(ticket).await.map_err(|e| {
            refusal(
                ErrorCode::StorageFailed,
                format!("the attachment is not yet on the server's disk ({e}): it stays on your device; sync again"),
            )
        })?;
    }
    write_within(stream, Frame::BlobSaved { case, hash }).await
}

async fn send(
    shared: &Arc<Shared>,
    driver: &CoreDriver,
    mut session: Session,
    actor: &Actor,
    stream: &mut FramedStream,
    (device, case, hash): (polyphony_core::DeviceId, CaseId, BlobHash),
) -> Result<(), Refusal> {
    session.attachment_access(&case, false)?;
    let declared = named(shared, &case, &hash, !session.relays())?;
    let largest = declared.iter().copied().max().unwrap_or(0);
    let _room = room_for(shared, device, largest).await?;
    let store = shared.storage.store.clone();
    let content = tokio::task::spawn_blocking(move || store.get_blob(&case, &hash))
        .await
        .map_err(|e| refusal(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| refusal(ErrorCode::StorageFailed, e.to_string()))?
        .ok_or_else(|| {
            refusal(
                ErrorCode::NotAvailable,
                "the server does not hold this attachment yet: the device that attached it has not uploaded it",
            )
        })?;
    // The access is recorded on disk before the first byte leaves.
    let ticket = shared
        .audit_access(actor.clone(), case, format!("attachment {hash} sent"))
        .map_err(|e| {
            refusal(
                ErrorCode::StorageFailed,
                format!("the server could not record this access in its audit log ({e}): try again later"),
            )
        })?;
    driver.durable(ticket).await.map_err(|e| {
        warn!(error = %e, "audit record of an attachment access not durable");
        refusal(
            ErrorCode::StorageFailed,
            "the server could not record this access in its audit log: try again later",
        )
    })?;
    write_within(
        stream,
        Frame::BlobOffer {
            case,
            hash,
            size: content.len() as u64,
        },
    )
    .await?;
    for chunk in content.chunks(BLOB_CHUNK_BYTES) {
        write_within(stream, Frame::BlobChunk(chunk.to_vec())).await?;
    }
    Ok(())
}
