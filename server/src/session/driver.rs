//! The connection driver: the handshake over QUIC, the writer task that sends each reply once it
//! is durable, and the loop that feeds the [`Session`] frames, announcements and changes of
//! access. The only part of the session that touches tokio or quinn; what it awaits of storage
//! and the registry comes through [`CoreDriver`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use polyphony_core::net::{write_frames, FrameReader, FramedStream, StreamError};
use polyphony_core::sync::{
    ErrorCode, Frame, FEATURE_COLLEAGUES, FEATURE_CONFIRMS_WIPE, FEATURE_HUB_RECEIPTS,
};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{debug, warn};

use super::{
    blobs, claim_roster, keep, transfer, welcome, welcome_borough, withheld, Batch, NotWelcome,
    Session, Shared,
};
use crate::audit::{Actor, AuditAction};
use crate::driver::CoreDriver;
use crate::registry::{Borough, Device, Practitioner};
use crate::storage::CaseChanged;

/// The most reply batches a session may have waiting for a device that does not read them; past
/// it the server stops reading that device's frames until it catches up (back-pressure, not
/// growth: a device that sends and never reads cannot make the server buffer without end).
pub const MAX_SEND_BACKLOG: usize = 64;

/// Run a session step (validation of a device's changes, sync message generation, a save: work
/// of milliseconds for a large case) off the async runtime's scheduling: on the multi-threaded
/// runtime the worker hands its other tasks to the rest first, so one device's large case does
/// not stall every other connection's I/O on that worker.
pub(crate) fn off_runtime<R>(step: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(step),
        _ => step(),
    }
}

/// Reply batches handed to the connection's writer and not yet written.
#[derive(Debug, Default)]
struct Backlog {
    queued: AtomicUsize,
    drained: tokio::sync::Notify,
}

impl Backlog {
    fn full(&self) -> bool {
        self.queued.load(Ordering::Acquire) >= MAX_SEND_BACKLOG
    }
}

/// Counts one batch as written when dropped (written, refused or dropped with the connection).
struct Taken<'a>(&'a Backlog);

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
        self.0.drained.notify_one();
    }
}

/// Where a session's replies go: the connection writer's channel, counted in a [`Backlog`].
struct Outbox {
    tx: mpsc::UnboundedSender<Batch>,
    backlog: Arc<Backlog>,
}

impl Outbox {
    /// Hand every batch the session queued to the writer, in order.
    fn take_from(&self, session: &mut Session) {
        while let Some(batch) = session.poll_reply() {
            self.backlog.queued.fetch_add(1, Ordering::AcqRel);
            if self.tx.send(batch).is_err() {
                // The writer ended (the connection is gone): nothing more can be sent.
                self.backlog.queued.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// Serve a device's sync connection until it ends.
pub async fn serve(
    shared: Arc<Shared>,
    driver: Arc<CoreDriver>,
    conn: quinn::Connection,
    conn_id: u64,
    device: Device,
    practitioner: Practitioner,
) {
    let actor = Actor::Device {
        device: device.id,
        practitioner: practitioner.id,
    };
    // Subscribed before the session exists, so a change of access from now on wakes it; one made
    // before is seen by the session's first check (see `handshake`).
    let access = driver.access_changes();
    let blobs = BlobStreams {
        peer: BlobPeer {
            shared: shared.clone(),
            driver: driver.clone(),
            conn_id,
            device: device.clone(),
            practitioner: practitioner.clone(),
        },
        permits: Arc::new(tokio::sync::Semaphore::new(MAX_ATTACHMENT_STREAMS)),
        tasks: tokio::task::JoinSet::new(),
        connect_audited: false,
    };
    let (blobs, handshaken) =
        handshake(&shared, &conn, conn_id, device, practitioner, &actor, blobs).await;
    let Some((stream, session)) = handshaken else {
        // No session (a connection for attachments only, or none at all): its attachments
        // finish before it goes.
        blobs.finish().await;
        return;
    };
    // Attachments may go on streams beside the session for as long as it lasts.
    let attachments = tokio::spawn(blobs.accept_while(conn.clone()));
    let wakes = Wakes {
        changes: driver.case_changes(),
        hub_saved: driver.hub_saved(),
        access,
    };
    run_session(
        &shared,
        driver,
        wakes,
        &conn,
        stream,
        session,
        Some(attachments),
        actor,
    )
    .await;
}

/// Serve a borough server's link on the trust hub until it ends: its `Hello`, then its `Roster`
/// (its teams and devices, claimed for it), the `Welcome` granting its teams' cases, then the
/// same session as a device's ([`Session::for_borough`]). A link carries no attachments yet.
pub async fn serve_borough(
    shared: Arc<Shared>,
    driver: Arc<CoreDriver>,
    conn: quinn::Connection,
    conn_id: u64,
    borough: Borough,
) {
    let actor = Actor::Borough {
        borough: borough.id,
    };
    let access = driver.access_changes();
    let Some((stream, session)) =
        borough_handshake(&shared, &driver, &conn, conn_id, &borough).await
    else {
        return;
    };
    let wakes = Wakes {
        changes: driver.case_changes(),
        hub_saved: driver.hub_saved(),
        access,
    };
    // The borough's kept copy, its transfers and its files go on streams beside the session,
    // for as long as it lasts.
    let keeping = tokio::spawn(keep_streams(
        shared.clone(),
        driver.clone(),
        conn.clone(),
        conn_id,
        borough.clone(),
    ));
    run_session(
        &shared,
        driver,
        wakes,
        &conn,
        stream,
        session,
        Some(keeping),
        actor,
    )
    .await;
}

/// Serve the streams a borough opens beside its link's session, one at a time, until the
/// connection ends (the session's end aborts this): its kept copy ([`keep`]) and its transfers
/// ([`transfer`]).
async fn keep_streams(
    shared: Arc<Shared>,
    driver: Arc<CoreDriver>,
    conn: quinn::Connection,
    conn_id: u64,
    borough: Borough,
) {
    let id = borough.id;
    loop {
        let Ok((send, recv)) = conn.accept_bi().await else {
            return;
        };
        let mut stream = FramedStream::with_limit(send, recv, shared.max_frame);
        let first = match tokio::time::timeout(FIRST_FRAME_WAIT, stream.read_frame()).await {
            Ok(Ok(Some(f))) => f,
            _ => continue,
        };
        let (shared, driver) = (shared.clone(), driver.clone());
        match first {
            Frame::Transfer(_) | Frame::HistoryWant { .. } => {
                transfer::serve(shared, driver, id, stream, first).await;
            }
            Frame::BlobOffer { .. } | Frame::BlobWant { .. } => {
                stream.set_limit(blobs::BLOB_STREAM_MAX_FRAME);
                blobs::serve_borough(shared, driver, conn_id, &borough, stream, first).await;
            }
            _ => keep::serve(shared, driver, id, stream, first).await,
        }
    }
}

/// A borough's `Hello` and `Roster`, answered with a `Welcome`: the stream and a session for it,
/// or None when it was refused (the connection is closed with the reason).
async fn borough_handshake(
    shared: &Arc<Shared>,
    driver: &Arc<CoreDriver>,
    conn: &quinn::Connection,
    conn_id: u64,
    borough: &Borough,
) -> Option<(FramedStream, Session)> {
    let first_limit = blobs::BLOB_STREAM_MAX_FRAME.min(shared.max_frame);
    let (send, recv) = match tokio::time::timeout(FIRST_FRAME_WAIT, conn.accept_bi()).await {
        Ok(Ok(s)) => s,
        _ => return None,
    };
    let mut stream = FramedStream::with_limit(send, recv, first_limit);
    let hello = match read_first(conn, &mut stream).await? {
        Frame::Hello(h) => h,
        first @ Frame::KeepFetch => {
            // A rebuilt borough fetching its kept copy, with no session: served, and the
            // connection left for the borough to close once it has read the answer.
            stream.set_limit(shared.max_frame);
            keep::serve(shared.clone(), driver.clone(), borough.id, stream, first).await;
            let _ = tokio::time::timeout(FIRST_FRAME_WAIT, conn.closed()).await;
            return None;
        }
        other => {
            close(
                conn,
                ErrorCode::Malformed,
                &format!("expected hello, got {}", other.kind()),
            );
            return None;
        }
    };
    stream.set_limit(shared.max_frame);
    let roster = match read_first(conn, &mut stream).await? {
        Frame::Roster(r) => r,
        other => {
            let msg = format!(
                "a borough's link sends its roster after hello, not {}",
                other.kind()
            );
            close(conn, ErrorCode::Malformed, &msg);
            return None;
        }
    };
    if let Err(refusal) = claim_roster(shared, borough, &roster) {
        let (code, msg) = (refusal.code, refusal.message.clone());
        let _ = stream.write_frames(&[Frame::Error(refusal)]).await;
        close(conn, code, &msg);
        return None;
    }
    let (welcome, teams) = match welcome_borough(shared, &hello, borough) {
        Ok(w) => w,
        Err(not) => return not_welcome(conn, &mut stream, not).await,
    };
    let granted: Vec<_> = welcome.cases.iter().map(|g| g.case).collect();
    let mut session =
        Session::for_borough(shared.clone(), conn_id, borough, teams).granting(granted);
    if !session.check_access() {
        if let Some((code, message)) = session.ended() {
            close(conn, *code, message);
        }
        return None;
    }
    stream.write_frames(&[Frame::Welcome(welcome)]).await.ok()?;
    Some((stream, session))
}

/// The next frame on a stream, waiting at most [`FIRST_FRAME_WAIT`]; None when the stream ended,
/// went quiet or sent a bad frame (the connection is closed with why).
async fn read_first(conn: &quinn::Connection, stream: &mut FramedStream) -> Option<Frame> {
    match tokio::time::timeout(FIRST_FRAME_WAIT, stream.read_frame()).await {
        Ok(Ok(Some(f))) => Some(f),
        Ok(Ok(None)) => {
            close(
                conn,
                ErrorCode::Malformed,
                "the stream ended before the session began",
            );
            None
        }
        Ok(Err(e)) => {
            close_for(conn, &e);
            None
        }
        Err(_) => {
            close(conn, ErrorCode::Malformed, "no frame within 30 seconds");
            None
        }
    }
}

/// Run a welcomed session over its stream until it ends: the writer sending each reply once it
/// is durable, the loop feeding the session, then the connection's last record in the audit log.
/// `attachments`, the task serving attachment streams beside the session, is stopped when the
/// session ends.
#[allow(clippy::too_many_arguments)]
async fn run_session(
    shared: &Arc<Shared>,
    driver: Arc<CoreDriver>,
    wakes: Wakes,
    conn: &quinn::Connection,
    stream: FramedStream,
    session: Session,
    attachments: Option<tokio::task::JoinHandle<()>>,
    actor: Actor,
) {
    let (send, mut recv) = stream.split();
    let backlog = Arc::new(Backlog::default());
    let (tx, rx) = mpsc::unbounded_channel::<Batch>();
    let writer = tokio::spawn(write_replies(
        driver.clone(),
        conn.clone(),
        send,
        rx,
        backlog.clone(),
    ));
    let out = Outbox { tx, backlog };
    let session = run(shared, wakes, conn, &mut recv, session, &out, &actor).await;
    if let Some((code, message)) = session.ended() {
        // At once: nothing queued for the writer is sent after this.
        close(conn, *code, message);
    }
    drop(session);
    drop(out);
    if let Some(attachments) = attachments {
        attachments.abort();
    }
    let _ = writer.await;
    // Only now: the device reads its last frames (a `Bye`) before its stream is stopped, which it
    // would otherwise see as the connection lost.
    drop(recv);
    shared.audit(actor, AuditAction::Disconnect, None, String::new());
}

/// The device's `Hello`, answered with a `Welcome`; the stream and a session for it, or None when
/// the device was refused (the connection is closed with the reason).
///
/// `device` and `practitioner` were read at admission; the handshake can take a while (up to 30 s
/// for the device to open its stream), so the session checks its access before the `Welcome`
/// leaves: a device revoked in the meantime is refused now, not left syncing.
async fn handshake(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    conn_id: u64,
    device: Device,
    practitioner: Practitioner,
    actor: &Actor,
    mut blobs: BlobStreams,
) -> (BlobStreams, Option<(FramedStream, Session)>) {
    // Streams until the `Hello`: attachment streams are served as they come (a connection may
    // carry only those); the wait for each next stream, and for its first frame, is bounded.
    let first_limit = blobs::BLOB_STREAM_MAX_FRAME.min(shared.max_frame);
    let (mut stream, hello) = loop {
        let Some((mut stream, first)) = next_stream(conn, first_limit, &mut blobs).await else {
            return (blobs, None);
        };
        match first {
            Frame::Hello(h) => break (stream, h),
            first @ (Frame::BlobOffer { .. } | Frame::BlobWant { .. }) => {
                if !blobs.connect_audited {
                    // A connection that moves only attachments gets no `Welcome`: its record in
                    // the audit log says so (each attachment is audited as it moves).
                    shared.audit(
                        actor.clone(),
                        AuditAction::Connect,
                        None,
                        "attachments only".to_string(),
                    );
                    blobs.connect_audited = true;
                }
                stream.set_limit(blobs::BLOB_STREAM_MAX_FRAME);
                blobs.serve(stream, first).await;
            }
            other => {
                let what = other.kind();
                let _ = stream.send.finish();
                close(
                    conn,
                    ErrorCode::Malformed,
                    &format!("expected hello, got {what}"),
                );
                return (blobs, None);
            }
        }
    };
    stream.set_limit(shared.max_frame);
    let handshaken = session_for(
        shared,
        conn,
        conn_id,
        device,
        practitioner,
        actor,
        stream,
        hello,
    )
    .await;
    (blobs, handshaken)
}

/// How long a stream may keep the server waiting for its first frame, and a connection for its
/// next stream before its session: a silent peer holds nothing for longer.
const FIRST_FRAME_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The next stream of a connection and its first frame (read with `limit`), waiting at most
/// [`FIRST_FRAME_WAIT`] for each, not counting the time attachments are moving on the connection
/// (a device sends its files one after another, each once the last is saved, and a large one on
/// a slow link takes minutes); None when the connection ended, went quiet, or sent a bad first
/// frame (then closed with why).
async fn next_stream(
    conn: &quinn::Connection,
    limit: usize,
    blobs: &mut BlobStreams,
) -> Option<(FramedStream, Frame)> {
    let (send, recv) = loop {
        if blobs.tasks.is_empty() {
            match tokio::time::timeout(FIRST_FRAME_WAIT, conn.accept_bi()).await {
                Ok(Ok(s)) => break s,
                _ => return None,
            }
        }
        tokio::select! {
            s = conn.accept_bi() => match s {
                Ok(s) => break s,
                Err(_) => return None,
            },
            // An attachment finished: the quiet time counts from now.
            _ = blobs.tasks.join_next() => {}
        }
    };
    // The first frame is small whatever the stream carries (a hello, an offer, a want).
    let mut stream = FramedStream::with_limit(send, recv, limit);
    match tokio::time::timeout(FIRST_FRAME_WAIT, stream.read_frame()).await {
        Ok(Ok(Some(first))) => Some((stream, first)),
        Ok(Ok(None)) => {
            close(conn, ErrorCode::Malformed, "expected hello, got nothing");
            None
        }
        Ok(Err(e)) => {
            close_for(conn, &e);
            None
        }
        Err(_) => {
            close(
                conn,
                ErrorCode::Malformed,
                "no first frame on a stream within 30 seconds",
            );
            None
        }
    }
}

/// The most attachment streams one connection is served at once; more wait for a place (and
/// QUIC's flow control holds their bytes back), so one device cannot make the server hold more
/// than this many attachments in memory per connection.
pub(super) const MAX_ATTACHMENT_STREAMS: usize = 4;

/// A connection's attachment streams ([`blobs`]): served at most [`MAX_ATTACHMENT_STREAMS`] at
/// once, each on its own task.
struct BlobStreams {
    peer: BlobPeer,
    permits: Arc<tokio::sync::Semaphore>,
    tasks: tokio::task::JoinSet<()>,
    /// The connection's arrival is in the audit log (a session's `Welcome` records its own).
    connect_audited: bool,
}

/// Who an attachment stream is served for: what each stream's task takes with it.
#[derive(Clone)]
struct BlobPeer {
    shared: Arc<Shared>,
    driver: Arc<CoreDriver>,
    conn_id: u64,
    device: Device,
    practitioner: Practitioner,
}

impl BlobPeer {
    /// Serve one attachment stream whose first frame was read ([`blobs::serve`]).
    async fn serve(self, stream: FramedStream, first: Frame) {
        let BlobPeer {
            shared,
            driver,
            conn_id,
            device,
            practitioner,
        } = self;
        blobs::serve(shared, driver, conn_id, device, practitioner, stream, first).await;
    }
}

impl BlobStreams {
    /// Serve an attachment stream whose first frame was read, once a place is free.
    async fn serve(&mut self, stream: FramedStream, first: Frame) {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        let peer = self.peer.clone();
        self.tasks.spawn(async move {
            peer.serve(stream, first).await;
            drop(permit);
        });
        self.reap();
    }

    /// Reap what finished, so a long session does not keep every finished task.
    fn reap(&mut self) {
        while self.tasks.try_join_next().is_some() {}
    }

    /// Serve attachment streams until the connection ends (the session's task aborts this when
    /// the session ends, and the connection closes). Each stream's first frame is read on a task
    /// of its own, with a place taken and a time limit, so a silent stream holds up no other.
    /// A second `Hello` on one connection is refused on its stream.
    async fn accept_while(mut self, conn: quinn::Connection) {
        loop {
            let accepted = tokio::select! {
                s = conn.accept_bi() => s,
                _ = conn.closed() => break,
            };
            let Ok((send, recv)) = accepted else { break };
            let permits = self.permits.clone();
            let peer = self.peer.clone();
            self.tasks.spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return;
                };
                let mut stream = FramedStream::with_limit(send, recv, blobs::BLOB_STREAM_MAX_FRAME);
                let first = match tokio::time::timeout(FIRST_FRAME_WAIT, stream.read_frame()).await
                {
                    Ok(Ok(Some(f))) => f,
                    _ => return,
                };
                match first {
                    Frame::BlobOffer { .. } | Frame::BlobWant { .. } => {
                        peer.serve(stream, first).await;
                    }
                    other => {
                        let message = format!(
                            "a stream beside the session carries an attachment, not {}",
                            other.kind()
                        );
                        let _ = stream
                            .write_frames(&[Frame::Error(super::refusal(
                                ErrorCode::Malformed,
                                message,
                            ))])
                            .await;
                        let _ = stream.send.finish();
                    }
                }
            });
            self.reap();
        }
        self.finish().await;
    }

    /// Wait for every attachment stream being served to end; a connection that moved only
    /// attachments is recorded as gone.
    async fn finish(mut self) {
        while self.tasks.join_next().await.is_some() {}
        if self.connect_audited {
            let actor = Actor::Device {
                device: self.peer.device.id,
                practitioner: self.peer.practitioner.id,
            };
            self.peer
                .shared
                .audit(actor, AuditAction::Disconnect, None, String::new());
        }
    }
}

/// The session for a device's `Hello` on `stream`, its `Welcome` sent; None when the device was
/// refused (the connection is closed with the reason).
#[allow(clippy::too_many_arguments)]
async fn session_for(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    conn_id: u64,
    device: Device,
    practitioner: Practitioner,
    actor: &Actor,
    mut stream: FramedStream,
    hello: polyphony_core::sync::Hello,
) -> Option<(FramedStream, Session)> {
    let welcome = match welcome(shared, &hello, &device, &practitioner) {
        Ok(w) => w,
        Err(not) => return not_welcome(conn, &mut stream, not).await,
    };
    let mut session = Session::new(shared.clone(), conn_id, device, practitioner, welcome.mode)
        .confirming_wipe(hello.has(FEATURE_CONFIRMS_WIPE))
        .sending_hub_receipts(hello.has(FEATURE_HUB_RECEIPTS))
        .sending_colleagues(
            welcome
                .colleagues
                .clone()
                .filter(|_| hello.has(FEATURE_COLLEAGUES)),
        );
    if !session.check_access() {
        if let Some((code, message)) = session.ended() {
            close(conn, *code, message);
        }
        // As a live session closed by a change of access: its connection was audited.
        shared.audit(actor.clone(), AuditAction::Disconnect, None, String::new());
        return None;
    }
    stream.write_frames(&[Frame::Welcome(welcome)]).await.ok()?;
    Some((stream, session))
}

/// A `Hello` not welcomed (a device's or a borough's): the refusal sent when it says something
/// the peer can act on (another protocol version), and the connection closed with why. Always
/// None: no session.
async fn not_welcome<T>(
    conn: &quinn::Connection,
    stream: &mut FramedStream,
    not: NotWelcome,
) -> Option<T> {
    match not {
        NotWelcome::Version(refusal) => {
            let msg = refusal.message.clone();
            let _ = stream.write_frames(&[Frame::Error(refusal)]).await;
            close(conn, ErrorCode::UnsupportedVersion, &msg);
        }
        NotWelcome::Internal(msg) => close(conn, ErrorCode::Internal, &msg),
    }
    None
}

/// The writer: sends each batch once its durability ticket is met, in order; what a failed flush
/// stood for is withheld ([`withheld`]). Ends after `Bye` or an `Error`, or when the connection
/// or the session is gone.
async fn write_replies(
    driver: Arc<CoreDriver>,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut rx: mpsc::UnboundedReceiver<Batch>,
    backlog: Arc<Backlog>,
) {
    while let Some(Batch { ticket, frames }) = rx.recv().await {
        let _taken = Taken(&backlog);
        let (frames, dropped_push) = match driver.durable(ticket).await {
            Ok(()) => (frames, false),
            Err(e) => withheld(frames, &e),
        };
        // The session's last frame: `Bye`, or an `Error` (every one ends the session). The
        // stream is finished and the connection kept until the device has read it and closed,
        // else dropping the connection could discard the frame unread (the device would see a
        // lost connection instead of why).
        let ends = dropped_push
            || frames
                .iter()
                .any(|f| matches!(f, Frame::Bye | Frame::Error(_)));
        if write_frames(&mut send, &frames).await.is_err() {
            return;
        }
        if ends {
            let _ = send.finish();
            // Give the device time to read the last frame; it closes the connection.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), conn.closed()).await;
            return;
        }
    }
}

/// What wakes a session besides its device's frames.
struct Wakes {
    /// Other sessions' announced changes, from the `Welcome` on.
    changes: broadcast::Receiver<CaseChanged>,
    /// Cases the trust hub acknowledged more of (on a borough server that joined one).
    hub_saved: broadcast::Receiver<polyphony_core::CaseId>,
    /// Changes of access, from before the session was created.
    access: watch::Receiver<u64>,
}

/// Feed the session until it ends: the device's frames, other sessions' announcements, changes
/// of access. Returns the session, to read why it ended.
async fn run(
    shared: &Arc<Shared>,
    Wakes {
        mut changes,
        mut hub_saved,
        mut access,
    }: Wakes,
    conn: &quinn::Connection,
    recv: &mut FrameReader,
    mut session: Session,
    out: &Outbox,
    actor: &Actor,
) -> Session {
    'serving: loop {
        // Back-pressure: while the device does not read what it was sent, read nothing more from
        // it and push nothing more (a missed push is made up by push_all after the lag).
        while out.backlog.full() {
            let drained = out.backlog.drained.notified();
            if !out.backlog.full() {
                break;
            }
            tokio::select! {
                () = drained => {}
                _ = conn.closed() => break 'serving,
                // A revocation reaches a device that reads nothing, too.
                changed = access.changed() => {
                    if changed.is_err() || !session.check_access() {
                        break 'serving;
                    }
                }
            }
        }
        let go_on = tokio::select! {
            frame = recv.read_frame() => match frame {
                Ok(Some(f)) => off_runtime(|| session.handle(f)),
                Ok(None) => false,
                Err(e) => {
                    warn!(error = %e, "bad input from device: closing its connection");
                    shared.audit(actor.clone(), AuditAction::Refused, None, format!("connection closed: {e}"));
                    close_for(conn, &e);
                    false
                }
            },
            change = changes.recv() => match change {
                Ok(c) => { off_runtime(|| session.push(c)); true }
                Err(broadcast::error::RecvError::Lagged(_)) => { off_runtime(|| session.push_all()); true }
                Err(broadcast::error::RecvError::Closed) => false,
            },
            // A missed one (lagged) is made up at the device's next `Saved` of the case.
            case = hub_saved.recv() => match case {
                Ok(case) => { off_runtime(|| session.hub_saved(case)); true }
                Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => false,
            },
            // An administrator changed who may sync what: a revoked device's live connection is
            // closed now, not at its next sync.
            changed = access.changed() => changed.is_ok() && session.check_access(),
            _ = conn.closed() => false,
        };
        out.take_from(&mut session);
        if !go_on || session.ended().is_some() {
            break;
        }
    }
    out.take_from(&mut session);
    session
}

fn close(conn: &quinn::Connection, code: ErrorCode, message: &str) {
    conn.close((code as u32).into(), message.as_bytes());
}

fn close_for(conn: &quinn::Connection, e: &StreamError) {
    match e {
        StreamError::Frame(f) => close(conn, f.code(), &f.to_string()),
        other => debug!(error = %other, "stream ended"),
    }
}
