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

use polyphony_core::model::attachments::referenced_blobs;
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

/// How long an upload may pause between two chunks before it is refused (the device tries again
/// at its next sync).
pub const CHUNK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Take room in memory for a file of `size` bytes (two copies, whole MiB; the room is
/// [`crate::ServerConfig::attachment_memory_mib`], over every connection), waiting while others
/// hold it.
async fn room_for(
    shared: &Shared,
    size: u64,
) -> Result<tokio::sync::OwnedSemaphorePermit, Refusal> {
    let room = &shared.limits.attachment_room;
    let mib = size.div_ceil(1 << 20).max(1) * 2;
    // At most 40 (a 20 MiB file, twice), and the room holds at least that: it never waits for
    // room that cannot be.
    let mib = u32::try_from(mib.min(40)).unwrap_or(40);
    room.clone()
        .acquire_many_owned(mib)
        .await
        .map_err(|_| refusal(ErrorCode::ShuttingDown, "the server is shutting down"))
}

/// Serve one attachment stream whose first frame was `first`.
pub async fn serve(
    shared: Arc<Shared>,
    driver: Arc<CoreDriver>,
    conn_id: u64,
    device: Device,
    practitioner: Practitioner,
    mut stream: FramedStream,
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
    let session = Session::new(shared.clone(), conn_id, device, practitioner, mode);
    let outcome = match first {
        Frame::BlobOffer { case, hash, size } => {
            receive(
                &shared,
                &driver,
                session,
                &actor,
                &mut stream,
                case,
                hash,
                size,
            )
            .await
        }
        Frame::BlobWant { case, hash } => {
            send(&shared, &driver, session, &actor, &mut stream, case, hash).await
        }
        other => Err(refusal(
            ErrorCode::Malformed,
            format!(
                "an attachment stream starts with an offer or a want, not {}",
                other.kind()
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
fn named(shared: &Shared, case: &CaseId, hash: &BlobHash) -> Result<u64, Refusal> {
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
    let view = polyphony_core::model::CaseDoc::from_automerge(held.doc.clone(), None)
        .map(|d| d.view().attachments)
        .unwrap_or_default();
    let declared = view
        .iter()
        .filter(|a| a.sha256.as_ref() == Some(hash))
        .map(|a| a.size)
        .max();
    match declared {
        Some(size) => Ok(size),
        // Named, but only by an entry withheld from the view (another person's): still the
        // record's, so it may move; its size is the bound.
        None if referenced_blobs(&held.doc).contains(hash) => {
            Ok(polyphony_core::model::MAX_ATTACHMENT_BYTES)
        }
        None => Err(refusal(
            ErrorCode::NotAvailable,
            format!("the case's record names no attachment {hash}: sync the record first"),
        )),
    }
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
    case: CaseId,
    hash: BlobHash,
    size: u64,
) -> Result<(), Refusal> {
    session.attachment_access(&case, true)?;
    // A size over the bound is refused at once, before anything else is looked up.
    let mut receiving = Receiving::new(hash, size).map_err(|m| refusal(ErrorCode::TooLarge, m))?;
    let declared = named(shared, &case, &hash)?;
    if declared != size && declared != polyphony_core::model::MAX_ATTACHMENT_BYTES {
        return Err(refusal(
            ErrorCode::InvalidChange,
            format!("the record gives this attachment {declared} bytes, not {size}"),
        ));
    }
    let store = shared.storage.store.clone();
    let (c, h) = (case, hash);
    let held = tokio::task::spawn_blocking(move || store.has_blob(&c, &h))
        .await
        .map_err(|e| refusal(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| refusal(ErrorCode::StorageFailed, e.to_string()))?;
    if !held {
        let _room = room_for(shared, size).await?;
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
    }
    stream
        .write_frames(&[Frame::BlobSaved { case, hash }])
        .await
        .map_err(stream_error)
}

async fn send(
    shared: &Arc<Shared>,
    driver: &CoreDriver,
    mut session: Session,
    actor: &Actor,
    stream: &mut FramedStream,
    case: CaseId,
    hash: BlobHash,
) -> Result<(), Refusal> {
    session.attachment_access(&case, false)?;
    let declared = named(shared, &case, &hash)?;
    let _room = room_for(shared, declared).await?;
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
    stream
        .write_frames(&[Frame::BlobOffer {
            case,
            hash,
            size: content.len() as u64,
        }])
        .await
        .map_err(stream_error)?;
    for chunk in content.chunks(BLOB_CHUNK_BYTES) {
        stream
            .write_frames(&[Frame::BlobChunk(chunk.to_vec())])
            .await
            .map_err(stream_error)?;
    }
    Ok(())
}
