//! The device side of the shell: connect, enrol, and drive a [`ClientSession`]. A borough server
//! enrolling with the trust hub is a client here too ([`enrol_borough`]).

use tokio::sync::mpsc;

use super::{explain, resolve, FramedStream, NetError, StreamError};
use crate::identity::{self, DeviceKey, EnrolmentCode};
use crate::store::StoreError;
use crate::sync::{
    Action, BoroughEnrolRequest, BoroughEnrolled, ClientSession, DocSet, EnrolRequest, Enrolled,
    ErrorCode, Frame, PROTOCOL_VERSION,
};
use crate::DeviceId;

/// What the device does with the session's actions: persist, record acknowledgements, report.
pub trait SessionHost: DocSet + Send {
    /// Carry out one action other than `Send` and `Close` (which the shell handles). An error (the
    /// device's store refused a write) ends the session; the work already saved stays saved.
    fn act(&mut self, action: &Action) -> Result<(), StoreError>;
}

/// How long to wait for the server to answer a new connection. Much shorter than the idle timeout:
/// with no signal, a practitioner should hear "cannot reach the server" in seconds, not half a
/// minute (their work is saved either way).
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(8);

/// Wait for a handshake, giving up after [`CONNECT_TIMEOUT`].
async fn handshake(
    addr: &str,
    connecting: quinn::Connecting,
) -> Result<quinn::Connection, NetError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) | Ok(Err(quinn::ConnectionError::TimedOut)) => Err(NetError::Unreachable {
            addr: addr.to_string(),
            detail: "no answer".into(),
        }),
        Ok(Err(e)) => Err(explain(addr, None, e)),
        Ok(Ok(c)) => Ok(c),
    }
}

fn endpoint() -> Result<quinn::Endpoint, NetError> {
    let bind: std::net::SocketAddr = "0.0.0.0:0".parse().expect("valid bind address");
    quinn::Endpoint::client(bind)
        .map_err(|e| NetError::Local(format!("cannot open a UDP socket: {e}")))
}

/// Connect to the borough server as an enrolled device.
pub async fn connect(
    addr: &str,
    ca_der: &[u8],
    cert_der: &[u8],
    key: &DeviceKey,
) -> Result<(quinn::Endpoint, quinn::Connection), NetError> {
    let ca = rustls_pki_types::CertificateDer::from(ca_der.to_vec());
    let cert = rustls_pki_types::CertificateDer::from(cert_der.to_vec());
    let cfg = identity::client_config(&ca, vec![cert], key.private_key_der())?;
    dial(addr, cfg).await
}

/// Open a client endpoint and complete a handshake with the server at `addr`.
async fn dial(
    addr: &str,
    cfg: quinn::ClientConfig,
) -> Result<(quinn::Endpoint, quinn::Connection), NetError> {
    let sock = resolve(addr).await?;
    let ep = endpoint()?;
    let connecting = ep
        .connect_with(cfg, sock, identity::SERVER_NAME)
        .map_err(|e| NetError::Unreachable {
            addr: addr.to_string(),
            detail: e.to_string(),
        })?;
    let conn = handshake(addr, connecting).await?;
    Ok((ep, conn))
}

/// Enrol this device with the server named in `addr`, using an administrator's one-time code. The
/// code carries the CA fingerprint, so the server is verified on first contact.
pub async fn enrol(
    addr: &str,
    code: &EnrolmentCode,
    device: DeviceId,
    device_name: &str,
    key: &DeviceKey,
) -> Result<Enrolled, NetError> {
    let req = EnrolRequest {
        version: PROTOCOL_VERSION,
        token: hex::encode(code.token()),
        device,
        device_name: device_name.to_string(),
        csr: hex::encode(key.csr_der(device_name)?),
    };
    match enrolment_exchange(addr, code, Frame::Enrol(req)).await? {
        Frame::Enrolled(e) => Ok(e),
        f => Err(unexpected(&f)),
    }
}

/// Enrol this borough server with the trust hub at `addr`, using the hub administrator's one-time
/// code; `key` is the borough's link key (a [`DeviceKey`], kept by the borough server as a device
/// keeps its own). Like [`enrol`], the code's CA fingerprint verifies the hub on first contact.
/// Returns the borough's id on the hub, its link certificate and the hub's CA certificate.
pub async fn enrol_borough(
    addr: &str,
    code: &EnrolmentCode,
    name: &str,
    key: &DeviceKey,
) -> Result<BoroughEnrolled, NetError> {
    let req = BoroughEnrolRequest {
        version: PROTOCOL_VERSION,
        token: hex::encode(code.token()),
        name: name.to_string(),
        csr: hex::encode(key.csr_der(name)?),
    };
    match enrolment_exchange(addr, code, Frame::EnrolBorough(req)).await? {
        Frame::BoroughEnrolled(e) => Ok(e),
        f => Err(unexpected(&f)),
    }
}

/// The one exchange of an enrolment connection, for a device or a borough: dial `addr` checking
/// the server against the code's CA fingerprint, send `request`, and return the one frame that
/// answers it. An `Error` answer is the server's refusal, returned as [`NetError::Refused`].
async fn enrolment_exchange(
    addr: &str,
    code: &EnrolmentCode,
    request: Frame,
) -> Result<Frame, NetError> {
    let cfg = identity::enrol_client_config(code.ca_fingerprint())?;
    let (ep, conn) = match dial(addr, cfg).await {
        Err(e @ (NetError::Unreachable { .. } | NetError::BadAddress(_) | NetError::Local(_))) => {
            return Err(e)
        }
        // The secure connection failed: most often the server is not the one the code was made
        // for (its certificate authority is not the one the code names). The words say what to
        // do, as every BadEnrolment reason does.
        Err(other) => {
            return Err(NetError::Refused {
                code: ErrorCode::BadEnrolment,
                message: format!(
                    "{other}: check the server address, or ask your administrator for a new \
                     enrolment code"
                ),
            })
        }
        Ok(c) => c,
    };
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| explain(addr, Some(&conn), e))?;
    let mut s = FramedStream::new(send, recv);
    s.write_frames(&[request])
        .await
        .map_err(|e| explain(addr, Some(&conn), e))?;
    let _ = s.send.finish();
    let reply = s
        .read_frame()
        .await
        .map_err(|e| explain(addr, Some(&conn), e))?;
    let result = match reply {
        Some(Frame::Error(r)) => Err(NetError::Refused {
            code: r.code,
            message: r.message,
        }),
        Some(f) => Ok(f),
        None => Err(explain(
            addr,
            Some(&conn),
            "the server closed the enrolment",
        )),
    };
    conn.close(0u32.into(), b"enrolled");
    ep.wait_idle().await;
    result
}

/// The error for a frame the server should not have sent at this point.
fn unexpected(frame: &Frame) -> NetError {
    NetError::Local(format!("unexpected {} frame from the server", frame.kind()))
}

/// Ask the server who has accessed a case (for the person's copy). Runs its own short session on
/// the connection: hello, welcome, request, answer.
pub async fn fetch_access_log(
    addr: &str,
    conn: &quinn::Connection,
    case: crate::CaseId,
) -> Result<Vec<crate::export::Access>, NetError> {
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| explain(addr, Some(conn), e))?;
    let mut s = FramedStream::new(send, recv);
    let hello = crate::sync::Hello {
        version: PROTOCOL_VERSION,
        software: format!("polyphony/{}", env!("CARGO_PKG_VERSION")),
        live: false,
        features: Vec::new(),
    };
    s.write_frames(&[Frame::Hello(hello), Frame::AccessLogRequest { case }])
        .await
        .map_err(|e| explain(addr, Some(conn), e))?;
    loop {
        match s
            .read_frame()
            .await
            .map_err(|e| explain(addr, Some(conn), e))?
        {
            Some(Frame::Welcome(_)) => continue,
            Some(Frame::AccessLog { case: c, entries }) if c == case => return Ok(entries),
            Some(Frame::CaseRefused { refusal, .. }) | Some(Frame::Error(refusal)) => {
                return Err(NetError::Refused {
                    code: refusal.code,
                    message: refusal.message,
                })
            }
            Some(f) => return Err(unexpected(&f)),
            None => {
                return Err(explain(
                    addr,
                    Some(conn),
                    "the server ended the session early",
                ))
            }
        }
    }
}

/// Run a session on a connection until it ends. Local changes arriving on `local` are pushed live.
/// Returns the close code and message the session ended with.
pub async fn drive(
    addr: &str,
    conn: &quinn::Connection,
    session: &mut ClientSession,
    host: &mut dyn SessionHost,
    mut local: Option<mpsc::Receiver<crate::CaseId>>,
) -> Result<(ErrorCode, String), NetError> {
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| explain(addr, Some(conn), e))?;
    let mut stream = FramedStream::new(send, recv);
    let first = session.start();
    if let Some(end) = carry_out(addr, conn, &mut stream, host, first).await? {
        return Ok(end);
    }
    loop {
        let actions = tokio::select! {
            frame = stream.read_frame() => match frame {
                Ok(Some(f)) => session.handle(f, host),
                Ok(None) => return Err(explain(addr, Some(conn), "the server ended the session early")),
                Err(StreamError::Frame(e)) => {
                    let code = e.code();
                    conn.close((code as u32).into(), e.to_string().as_bytes());
                    return Err(NetError::Protocol(e));
                }
                Err(e) => return Err(explain(addr, Some(conn), e)),
            },
            Some(case) = recv_local(&mut local) => session.local_change(case, host),
        };
        if let Some(end) = carry_out(addr, conn, &mut stream, host, actions).await? {
            return Ok(end);
        }
    }
}

async fn recv_local(local: &mut Option<mpsc::Receiver<crate::CaseId>>) -> Option<crate::CaseId> {
    match local {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// What a batch of a session's actions leaves for the network to do, once the host has carried out
/// the rest ([`carry_out_local`]).
#[derive(Debug, Default, PartialEq)]
pub struct Outgoing {
    /// Frames to write to the server, in order, as one write.
    pub frames: Vec<Frame>,
    /// The session is over: after writing `frames`, close the connection with this code.
    pub close: Option<(ErrorCode, String)>,
}

/// The sans-IO half of carrying out a session's actions: host actions in order (persisting before
/// anything is sent or acknowledged), frames gathered for one write, stopping at `Close`. The QUIC
/// shell ([`drive`]) writes what it returns; the simulation test moves it itself. An error is the
/// host's: the session must end.
pub fn carry_out_local(
    host: &mut dyn SessionHost,
    actions: Vec<Action>,
) -> Result<Outgoing, StoreError> {
    let mut out = Outgoing::default();
    for action in actions {
        match action {
            Action::Send(f) => out.frames.push(f),
            Action::Close { code, message } => {
                out.close = Some((code, message));
                return Ok(out);
            }
            other => host.act(&other)?,
        }
    }
    Ok(out)
}

/// Do what the session asked, in order: host actions first (persisting before anything is sent
/// or acknowledged), frames batched into one write.
async fn carry_out(
    addr: &str,
    conn: &quinn::Connection,
    stream: &mut FramedStream,
    host: &mut dyn SessionHost,
    actions: Vec<Action>,
) -> Result<Option<(ErrorCode, String)>, NetError> {
    let Outgoing { frames, close } = match carry_out_local(host, actions) {
        Ok(out) => out,
        Err(e) => {
            conn.close(
                (ErrorCode::Internal as u32).into(),
                b"device could not store data",
            );
            return Err(NetError::Store(e));
        }
    };
    if let Some((code, message)) = close {
        if !frames.is_empty() {
            let _ = stream.write_frames(&frames).await;
        }
        let _ = stream.send.finish();
        conn.close((code as u32).into(), message.as_bytes());
        return Ok(Some((code, message)));
    }
    if !frames.is_empty() {
        stream
            .write_frames(&frames)
            .await
            .map_err(|e| explain(addr, Some(conn), e))?;
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
