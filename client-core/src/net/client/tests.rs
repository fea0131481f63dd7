//! The borough's side of its enrolment with the trust hub, over real QUIC on 127.0.0.1.
//!
//! The hub's own side is not in this crate, so a stand-in answers: it replies with whatever frame
//! the test chooses, signing the borough's request with a real [`BoroughCa`] when it accepts, and
//! hands the test what the borough sent.

use super::*;
use crate::identity::{peer_name_from_cert, BoroughCa, PeerName};
use crate::sync::Refusal;
use crate::BoroughId;
use anyhow::Context;
use rustls_pki_types::CertificateDer;
use std::net::SocketAddr;
use std::time::Duration;

/// Each test is bounded, so a hang fails the test instead of the whole run.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A trust hub stand-in on a free loopback port: it takes one enrolment connection, hands the
/// first frame to its `answer` and sends back what that returns.
struct StandInHub {
    addr: String,
    code: EnrolmentCode,
    /// The first frame the hub received.
    received: tokio::task::JoinHandle<anyhow::Result<Frame>>,
}

impl StandInHub {
    fn start(
        answer: impl FnOnce(&BoroughCa, &Frame) -> anyhow::Result<Frame> + Send + 'static,
    ) -> anyhow::Result<Self> {
        let ca = BoroughCa::generate("Polyphony trust hub")?;
        let (chain, key) = ca.issue_server_cert(&["127.0.0.1"])?;
        let config = identity::server_config(ca.cert_der(), chain, key)?;
        let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse::<SocketAddr>()?)?;
        let addr = endpoint.local_addr()?.to_string();
        let code = EnrolmentCode::new(ca.fingerprint());
        let received = tokio::spawn(async move {
            let incoming = endpoint.accept().await.context("no connection")?;
            let conn = incoming.await?;
            let (send, recv) = conn.accept_bi().await?;
            let mut s = FramedStream::new(send, recv);
            let request = s.read_frame().await?.context("no request")?;
            s.write_frames(&[answer(&ca, &request)?]).await?;
            s.send.finish()?;
            conn.closed().await;
            Ok(request)
        });
        Ok(Self {
            addr,
            code,
            received,
        })
    }
}

async fn with_timeout<T>(test: impl std::future::Future<Output = anyhow::Result<T>>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out")
        .expect("test failed")
}

/// The hub's answer when it accepts: the request's key certified for a new borough.
fn accept(ca: &BoroughCa, request: &Frame) -> anyhow::Result<Frame> {
    let Frame::EnrolBorough(req) = request else {
        anyhow::bail!("expected an enrol borough frame, got {}", request.kind());
    };
    let borough = BoroughId::random();
    let cert = ca.issue_borough_cert(&hex::decode(&req.csr)?, &borough)?;
    Ok(Frame::BoroughEnrolled(BoroughEnrolled {
        borough,
        name: req.name.clone(),
        certificate: hex::encode(cert),
        ca: hex::encode(ca.cert_der()),
    }))
}

#[tokio::test]
async fn a_borough_enrols_and_gets_a_certificate_naming_it() {
    with_timeout(async {
        let hub = StandInHub::start(accept)?;
        let key = DeviceKey::generate()?;
        let enrolled = enrol_borough(&hub.addr, &hub.code, "Camden", &key).await?;

        let cert = CertificateDer::from(hex::decode(&enrolled.certificate)?);
        assert_eq!(
            peer_name_from_cert(&cert)?,
            PeerName::Borough(enrolled.borough.to_string())
        );
        assert!(key.matches_certificate(&cert)?, "certifies the link key");
        assert_eq!(enrolled.name, "Camden");

        let token = hex::encode(hub.code.token());
        let Frame::EnrolBorough(req) = hub.received.await?? else {
            anyhow::bail!("accept() answered another frame");
        };
        assert_eq!(req.version, PROTOCOL_VERSION);
        assert_eq!(req.token, token, "the code's token, hex");
        assert_eq!(req.name, "Camden");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_hub_refusal_is_refused_with_its_words() {
    with_timeout(async {
        let hub = StandInHub::start(|_, _| {
            Ok(Frame::Error(Refusal {
                code: ErrorCode::BadEnrolment,
                message: "this code was already used".into(),
            }))
        })?;
        let key = DeviceKey::generate()?;
        let err = enrol_borough(&hub.addr, &hub.code, "Camden", &key)
            .await
            .expect_err("refused");
        assert!(
            matches!(
                &err,
                NetError::Refused { code: ErrorCode::BadEnrolment, message }
                    if message == "this code was already used"
            ),
            "{err}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_device_answer_is_not_a_borough_enrolment() {
    with_timeout(async {
        let hub = StandInHub::start(|_, _| {
            Ok(Frame::Enrolled(Enrolled {
                device: DeviceId::random(),
                practitioner: crate::PractitionerId::random(),
                practitioner_name: "Sam".into(),
                teams: Vec::new(),
                certificate: "30".into(),
                ca: "30".into(),
                servers: Vec::new(),
            }))
        })?;
        let key = DeviceKey::generate()?;
        let err = enrol_borough(&hub.addr, &hub.code, "Camden", &key)
            .await
            .expect_err("a device's answer");
        assert!(
            matches!(&err, NetError::Local(m) if m == "unexpected enrolled frame from the server"),
            "{err}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_hub_other_than_the_codes_is_refused_before_anything_is_sent() {
    with_timeout(async {
        let hub = StandInHub::start(accept)?;
        let other = BoroughCa::generate("Another hub")?;
        let code = EnrolmentCode::new(other.fingerprint());
        let key = DeviceKey::generate()?;
        let err = enrol_borough(&hub.addr, &code, "Camden", &key)
            .await
            .expect_err("wrong hub");
        assert!(
            matches!(
                &err,
                NetError::Refused { code: ErrorCode::BadEnrolment, message }
                    if message.contains("ask your administrator for a new enrolment code")
            ),
            "{err}"
        );
        assert!(hub.received.await?.is_err(), "the hub got no request");
        Ok(())
    })
    .await;
}
