//! Bad input on the wire: malformed and oversized frames close that connection with an error code,
//! and the server keeps serving everyone else.

use anyhow::Result;
use polyphony_core::identity::{self, DeviceKey};
use polyphony_core::model::NewCase;
use polyphony_core::profile::Enrolment;
use polyphony_core::sync::{ErrorCode, Frame, Hello};
use polyphony_e2e::TestServer;

/// Connect as an enrolled device and send raw bytes on a stream; returns the close code.
async fn send_raw(server: &TestServer, e: &Enrolment, bytes: Vec<u8>) -> Result<Option<ErrorCode>> {
    let key = DeviceKey::from_pem(&e.key_pem)?;
    let ca = rustls_pki_types::CertificateDer::from(hex::decode(&e.ca)?);
    let cert = rustls_pki_types::CertificateDer::from(hex::decode(&e.certificate)?);
    let cfg = identity::client_config(&ca, vec![cert], key.private_key_der())?;
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let conn = ep
        .connect_with(cfg, server.addr(), identity::SERVER_NAME)?
        .await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&bytes).await?;
    let mut buf = vec![0u8; 4096];
    // Read until the server closes us.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Ok(Some(_)) = recv.read(&mut buf).await {}
    })
    .await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn.closed()).await;
    let code = match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c)) => {
            ErrorCode::from_u16(c.error_code.into_inner() as u16)
        }
        _ => None,
    };
    ep.close(0u32.into(), b"");
    Ok(code)
}

fn hello() -> Vec<u8> {
    Frame::Hello(Hello {
        version: 1,
        software: "attacker".into(),
        live: false,
        features: Vec::new(),
    })
    .to_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_close_only_that_connection() -> Result<()> {
    let server = TestServer::start().await?;
    server.team("North").await?;
    server.practitioner("Sam", "North").await?;
    server.practitioner("Kit", "North").await?;
    let mut good = server.device("Sam").await?;
    let attacker = server.device("Kit").await?;
    let e = attacker.profile.enrolment().unwrap().clone();

    // A frame claiming to be 1 GiB.
    let mut oversized = hello();
    oversized.extend_from_slice(&(1u32 << 30).to_be_bytes());
    oversized.extend_from_slice(&[3; 64]);
    assert_eq!(
        send_raw(&server, &e, oversized).await?,
        Some(ErrorCode::Oversized)
    );

    // An unknown frame type.
    let mut unknown = hello();
    unknown.extend_from_slice(&[0, 0, 0, 2, 0xee, 0]);
    assert_eq!(
        send_raw(&server, &e, unknown).await?,
        Some(ErrorCode::Malformed)
    );

    // Garbage instead of a hello.
    assert_eq!(
        send_raw(&server, &e, vec![0, 0, 0, 3, 1, b'{', b'x']).await?,
        Some(ErrorCode::Malformed)
    );

    // A sync frame whose automerge message is garbage: that case is refused, the session goes on.
    // (covered in sync.rs); here: the server still serves others.
    let case = good.profile.create_case(
        NewCase {
            name: "Maria".into(),
            ..Default::default()
        },
        None,
    )?;
    good.sync().await?;
    assert_eq!(
        good.profile.unsynced(case)?,
        0,
        "the server kept serving other devices"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_a_certificate_from_another_ca_is_refused() -> Result<()> {
    let server = TestServer::start().await?;
    server.team("North").await?;
    server.practitioner("Sam", "North").await?;
    let real = server.device("Sam").await?;
    let real_ca =
        rustls_pki_types::CertificateDer::from(hex::decode(&real.profile.enrolment().unwrap().ca)?);
    // A whole other borough: its own CA and device. The device trusts OUR server (so the only thing
    // wrong is its own certificate).
    let other_ca = identity::BoroughCa::generate("Elsewhere")?;
    let key = DeviceKey::generate()?;
    let device = polyphony_core::DeviceId::random().to_string();
    let cert =
        other_ca.issue_device_cert(&device, &key.csr_der("stolen")?, time::Duration::days(1))?;
    let cfg = identity::client_config(&real_ca, vec![cert], key.private_key_der())?;
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let refused = match ep
        .connect_with(cfg, server.addr(), identity::SERVER_NAME)?
        .await
    {
        Err(_) => true,
        Ok(conn) => match conn.open_bi().await {
            Err(_) => true,
            Ok((mut s, mut r)) => {
                let _ = s.write_all(&hello()).await;
                let mut buf = [0u8; 16];
                !matches!(r.read(&mut buf).await, Ok(Some(_)))
            }
        },
    };
    assert!(
        refused,
        "a certificate from another CA never gets a session"
    );
    Ok(())
}
