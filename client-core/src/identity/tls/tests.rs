//! Real QUIC handshakes on 127.0.0.1: who gets in, who is refused, and how each side sees it.

use super::*;
use crate::identity::{BoroughCa, DeviceKey};
use anyhow::Context;
use quinn::Endpoint;
use std::net::SocketAddr;
use time::OffsetDateTime;
use tokio::sync::mpsc;

/// Each test is bounded, so a handshake that hangs fails the test instead of the whole run.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// What the test server saw of one incoming connection.
#[derive(Debug)]
enum ServerSaw {
    /// The handshake completed: the ALPN and the device id read from the peer certificate.
    Accepted {
        alpn: Option<Vec<u8>>,
        device_id: Result<String, String>,
    },
    /// TLS refused the client during the handshake.
    Refused(String),
}

/// A borough server on a free loopback port that answers each stream with the device id it read
/// from the peer certificate (or "no certificate"), and reports each connection on a channel.
struct TestServer {
    addr: SocketAddr,
    saw: mpsc::UnboundedReceiver<ServerSaw>,
    _endpoint: Endpoint,
}

impl TestServer {
    fn start(ca: &BoroughCa) -> anyhow::Result<Self> {
        let (chain, key) = ca.issue_server_cert(&["localhost", "127.0.0.1"])?;
        Self::start_with(ca.cert_der(), chain, key)
    }

    fn start_with(
        ca: &CertificateDer<'_>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> anyhow::Result<Self> {
        let config = server_config(ca, chain, key)?;
        let endpoint = Endpoint::server(config, "127.0.0.1:0".parse()?)?;
        let addr = endpoint.local_addr()?;
        let (tx, saw) = mpsc::unbounded_channel();
        let accepting = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let conn = match incoming.await {
                        Ok(conn) => conn,
                        Err(e) => {
                            let _ = tx.send(ServerSaw::Refused(e.to_string()));
                            return;
                        }
                    };
                    let device_id = peer_device_id(&conn).map_err(|e| e.to_string());
                    let _ = tx.send(ServerSaw::Accepted {
                        alpn: negotiated_alpn(&conn),
                        device_id: device_id.clone(),
                    });
                    let Ok((mut send, mut recv)) = conn.accept_bi().await else {
                        return;
                    };
                    if recv.read_to_end(1024).await.is_err() {
                        return;
                    }
                    let reply = device_id.unwrap_or_else(|_| "no certificate".into());
                    let _ = send.write_all(reply.as_bytes()).await;
                    let _ = send.finish();
                    conn.closed().await;
                });
            }
        });
        Ok(Self {
            addr,
            saw,
            _endpoint: endpoint,
        })
    }

    async fn next_saw(&mut self) -> anyhow::Result<ServerSaw> {
        self.saw.recv().await.context("server stopped")
    }
}

/// Where a client learnt that it was refused.
#[derive(Debug)]
enum Refusal {
    /// `connect().await` failed: the client itself refused the server, or the server refused the
    /// client before the client's handshake completed.
    AtConnect(String),
    /// The handshake looked complete to the client, and the refusal showed at the first stream
    /// operation (the usual case for a refused client certificate under TLS 1.3).
    AtFirstStreamOp(String),
}

impl Refusal {
    /// What the client was told, wherever it learnt it.
    fn message(&self) -> &str {
        match self {
            Self::AtConnect(m) | Self::AtFirstStreamOp(m) => m,
        }
    }
}

/// Connect, send "hello" on a new bidirectional stream and read the whole reply.
async fn exchange(config: quinn::ClientConfig, addr: SocketAddr) -> Result<Vec<u8>, Refusal> {
    let endpoint = Endpoint::client("127.0.0.1:0".parse().expect("literal address"))
        .map_err(|e| Refusal::AtConnect(e.to_string()))?;
    let conn = endpoint
        .connect_with(config, addr, SERVER_NAME)
        .map_err(|e| Refusal::AtConnect(e.to_string()))?
        .await
        .map_err(|e| Refusal::AtConnect(e.to_string()))?;
    let at_stream = |e: String| {
        // The stream error can be a bare "connection lost"; the close reason says why.
        let reason = conn
            .close_reason()
            .map(|r| r.to_string())
            .unwrap_or_default();
        Refusal::AtFirstStreamOp(format!("{e} (close reason: {reason})"))
    };
    let result = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(b"hello").await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        recv.read_to_end(1024).await.map_err(|e| e.to_string())
    }
    .await
    .map_err(at_stream);
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    result
}

/// A device key and a certificate from `ca` for `device_id`, valid for a day.
fn enrolled_device(ca: &BoroughCa, device_id: &str) -> anyhow::Result<quinn::ClientConfig> {
    let key = DeviceKey::generate()?;
    let cert = ca.issue_device_cert(
        device_id,
        &key.csr_der("test laptop")?,
        time::Duration::days(1),
    )?;
    Ok(client_config(
        ca.cert_der(),
        vec![cert],
        key.private_key_der(),
    )?)
}

async fn with_timeout<T>(test: impl std::future::Future<Output = anyhow::Result<T>>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out")
        .expect("test failed")
}

#[tokio::test]
async fn enrolled_device_syncs_and_server_reads_its_device_id() {
    with_timeout(async {
        let ca = BoroughCa::generate("Camden")?;
        let mut server = TestServer::start(&ca)?;
        let device_id = "0f8e2b1c-5a1d-4a57-9d1e-3c2b1a000001";
        let config = enrolled_device(&ca, device_id)?;

        let reply = exchange(config, server.addr)
            .await
            .map_err(|r| anyhow::anyhow!("refused: {r:?}"))?;
        assert_eq!(reply, device_id.as_bytes(), "server echoes the id it read");
        match server.next_saw().await? {
            ServerSaw::Accepted {
                alpn,
                device_id: id,
            } => {
                assert_eq!(alpn.as_deref(), Some(ALPN_SYNC));
                assert_eq!(id.as_deref(), Ok(device_id));
            }
            other => panic!("server refused an enrolled device: {other:?}"),
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn device_with_certificate_from_another_ca_is_refused() {
    with_timeout(async {
        let ca = BoroughCa::generate("Camden")?;
        let other = BoroughCa::generate("Islington")?;
        let mut server = TestServer::start(&ca)?;
        // The device trusts the right server, but its own certificate comes from another borough.
        let key = DeviceKey::generate()?;
        let cert = other.issue_device_cert(
            "stray-laptop",
            &key.csr_der("stray")?,
            time::Duration::days(1),
        )?;
        let config = client_config(ca.cert_der(), vec![cert], key.private_key_der())?;

        // Under TLS 1.3 the client usually learns of its refusal only at its first stream
        // operation, through the connection's close reason; either way it must fail.
        let refusal = exchange(config, server.addr)
            .await
            .expect_err("must be refused");
        eprintln!("client saw: {refusal:?}");
        assert!(refusal.message().contains("UnknownIssuer"), "{refusal:?}");
        match server.next_saw().await? {
            ServerSaw::Refused(reason) => {
                assert!(reason.contains("UnknownIssuer"), "{reason}")
            }
            other => panic!("server let a foreign device in: {other:?}"),
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn expired_device_certificate_is_refused() {
    with_timeout(async {
        let ca = BoroughCa::generate("Camden")?;
        let mut server = TestServer::start(&ca)?;
        let key = DeviceKey::generate()?;
        let now = OffsetDateTime::now_utc();
        let cert = ca.issue_device_cert_with_validity(
            "old-laptop",
            &key.csr_der("old")?,
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        )?;
        let config = client_config(ca.cert_der(), vec![cert], key.private_key_der())?;

        let refusal = exchange(config, server.addr)
            .await
            .expect_err("must be refused");
        eprintln!("client saw: {refusal:?}");
        assert!(refusal.message().contains("expired"), "{refusal:?}");
        match server.next_saw().await? {
            ServerSaw::Refused(reason) => assert!(reason.contains("expired"), "{reason}"),
            other => panic!("server let an expired device in: {other:?}"),
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn sync_client_refuses_a_server_of_another_borough() {
    with_timeout(async {
        let ca = BoroughCa::generate("Camden")?;
        let impostor = BoroughCa::generate("Camden")?;
        let (chain, key) = impostor.issue_server_cert(&[])?;
        let server = TestServer::start_with(impostor.cert_der(), chain, key)?;
        let config = enrolled_device(&ca, "laptop-1")?;

        // The client checks the server during its own handshake, so this fails at connect. (Both
        // CAs carry the same name, so rustls reports a bad signature rather than an unknown issuer.)
        match exchange(config, server.addr).await {
            Err(Refusal::AtConnect(reason)) => {
                assert!(reason.contains("invalid peer certificate"), "{reason}")
            }
            other => panic!("device accepted an impostor server: {other:?}"),
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn enrolment_client_with_right_fingerprint_connects_without_certificate() {
    with_timeout(async {
        let ca = BoroughCa::generate("Camden")?;
        let mut server = TestServer::start(&ca)?;
        let config = enrol_client_config(ca.fingerprint())?;

        let reply = exchange(config, server.addr)
            .await
            .map_err(|r| anyhow::anyhow!("refused: {r:?}"))?;
        assert_eq!(reply, b"no certificate");
        match server.next_saw().await? {
            ServerSaw::Accepted { alpn, device_id } => {
                assert_eq!(alpn.as_deref(), Some(ALPN_ENROL));
                // What the server's sync handler relies on to turn such a client away.
                let err = device_id.expect_err("no certificate, no device id");
                assert!(err.contains("enrol this device"), "{err}");
            }
            other => panic!("server refused an enrolling device: {other:?}"),
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn enrolment_client_with_wrong_fingerprint_is_refused() {
    with_timeout(async {
        let ca = BoroughCa::generate("Camden")?;
        let other = BoroughCa::generate("Islington")?;
        let server = TestServer::start(&ca)?;
        let config = enrol_client_config(other.fingerprint())?;

        match exchange(config, server.addr).await {
            Err(Refusal::AtConnect(reason)) => {
                assert!(
                    reason.contains("does not match the enrolment code"),
                    "{reason}"
                )
            }
            other => panic!("enrolling device trusted the wrong server: {other:?}"),
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn enrolment_client_refuses_a_server_that_hides_its_ca() {
    with_timeout(async {
        let ca = BoroughCa::generate("Camden")?;
        let (mut chain, key) = ca.issue_server_cert(&[])?;
        chain.truncate(1);
        let server = TestServer::start_with(ca.cert_der(), chain, key)?;
        let config = enrol_client_config(ca.fingerprint())?;

        match exchange(config, server.addr).await {
            Err(Refusal::AtConnect(reason)) => {
                assert!(reason.contains("did not present"), "{reason}")
            }
            other => panic!("enrolling device trusted an unchecked server: {other:?}"),
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn enrolment_client_refuses_a_device_certificate_posing_as_the_server() {
    with_timeout(async {
        // The right CA signed it, but for a device: it lacks the server name and server purpose.
        let ca = BoroughCa::generate("Camden")?;
        let key = DeviceKey::generate()?;
        let cert = ca.issue_device_cert("laptop-1", &key.csr_der("x")?, time::Duration::days(1))?;
        let chain = vec![cert, ca.cert_der().clone()];
        let server = TestServer::start_with(ca.cert_der(), chain, key.private_key_der())?;
        let config = enrol_client_config(ca.fingerprint())?;

        let refusal = exchange(config, server.addr)
            .await
            .expect_err("a device certificate is not a server certificate");
        assert!(matches!(refusal, Refusal::AtConnect(_)), "{refusal:?}");
        Ok(())
    })
    .await;
}
