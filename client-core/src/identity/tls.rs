//! QUIC/TLS configurations for the borough server, enrolled devices and enrolling devices, and
//! reading a device's identity off an established connection.
//!
//! Every configuration is built with the ring provider passed explicitly (the plain rustls builders
//! panic when two providers are compiled in), TLS 1.3 only, and ALPN on both sides, so a sync client
//! that reaches an enrolment-only endpoint (or the reverse) fails at the handshake rather than later.
//!
//! Three kinds of connection exist:
//!
//! - server ([`server_config`]): verifies device certificates against the borough CA, but lets a
//!   client come *without* a certificate, because an enrolling device has none yet. A client that
//!   presents a certificate the CA did not issue, or an expired one, is refused by TLS. Refusing a
//!   certificate-less client on [`ALPN_SYNC`] is the application's job: it calls [`peer_device_id`],
//!   which fails for such a connection;
//! - sync client ([`client_config`]): trusts the borough CA alone, never the system roots, and
//!   presents the device certificate;
//! - enrolment client ([`enrol_client_config`]): has only the CA fingerprint from the enrolment code
//!   and checks the server with it.
//!
//! Under TLS 1.3 a client finishes its side of the handshake before the server has checked the
//! client certificate, so a refused device may see `connect()` succeed and the refusal only at its
//! first stream operation (sometimes only as "connection lost"): callers should read
//! `Connection::close_reason()` to explain it.

use quinn::crypto::rustls::{HandshakeData, QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{
    cert_fingerprint, device_id_from_cert, IdentityError, ALPN_ENROL, ALPN_SYNC, SERVER_NAME,
};

/// A connection with no traffic for this long is closed. Long enough to ride out a lost packet or a
/// Wi-Fi handover, short enough that the server frees a vanished device's state within a minute.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Clients send a keep-alive this often, so an open sync connection outlives [`IDLE_TIMEOUT`] (and
/// NAT bindings) while nothing changes. Servers send none: keeping a connection is the client's call.
pub const CLIENT_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// How many bidirectional streams either side may have open at once. Sync runs one stream per case
/// in flight, and concurrency across cases is what makes a full sync fast; quinn's default of 100
/// would throttle a device that holds many cases.
pub const MAX_CONCURRENT_BIDI_STREAMS: u32 = 256;

/// The crypto provider of every configuration here, passed explicitly rather than taken from a
/// process default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A trust store holding the borough CA alone.
fn borough_roots(ca: &CertificateDer<'_>) -> Result<Arc<RootCertStore>, IdentityError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone().into_owned())?;
    Ok(Arc::new(roots))
}

/// Transport settings shared by both sides; see the constants for why each value.
fn transport(keep_alive: Option<Duration>) -> Arc<TransportConfig> {
    let mut transport = TransportConfig::default();
    // 30 000 ms is far below the variable-length integer bound, so this cannot fail.
    transport.max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(
        IDLE_TIMEOUT.as_millis() as u32,
    ))));
    transport.keep_alive_interval(keep_alive);
    transport.max_concurrent_bidi_streams(VarInt::from_u32(MAX_CONCURRENT_BIDI_STREAMS));
    Arc::new(transport)
}

/// The borough server's QUIC configuration.
///
/// `ca` is the borough CA certificate; `chain` and `key` come from
/// [`super::BoroughCa::issue_server_cert`] (keep the CA certificate in the chain: enrolling devices
/// need it to check the enrolment code's fingerprint). Accepts both [`ALPN_SYNC`] and [`ALPN_ENROL`];
/// see the module docs for who may connect without a certificate.
pub fn server_config(
    ca: &CertificateDer<'_>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<quinn::ServerConfig, IdentityError> {
    let provider = provider();
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(borough_roots(ca)?, provider.clone())
            .allow_unauthenticated()
            .build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN_SYNC.to_vec(), ALPN_ENROL.to_vec()];
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    config.transport_config(transport(None));
    Ok(config)
}

/// An enrolled device's QUIC configuration for [`ALPN_SYNC`].
///
/// Trusts only the borough CA `ca` for the server, and presents `device_chain` (the device
/// certificate from [`super::BoroughCa::issue_device_cert`]) with `device_key`
/// ([`super::DeviceKey::private_key_der`]). Connect with [`SERVER_NAME`] or one of the server's
/// extra names.
pub fn client_config(
    ca: &CertificateDer<'_>,
    device_chain: Vec<CertificateDer<'static>>,
    device_key: PrivateKeyDer<'static>,
) -> Result<quinn::ClientConfig, IdentityError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(borough_roots(ca)?)
        .with_client_auth_cert(device_chain, device_key)?;
    tls.alpn_protocols = vec![ALPN_SYNC.to_vec()];
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    config.transport_config(transport(Some(CLIENT_KEEP_ALIVE)));
    Ok(config)
}

/// An enrolling device's QUIC configuration for [`ALPN_ENROL`]: no client certificate, and the
/// server checked against the CA fingerprint from the enrolment code.
///
/// The server is accepted only if its chain contains a certificate whose SHA-256 is
/// `ca_fingerprint` and its own certificate verifies under that CA for [`SERVER_NAME`], whatever
/// name or address was dialled.
pub fn enrol_client_config(ca_fingerprint: [u8; 32]) -> Result<quinn::ClientConfig, IdentityError> {
    let provider = provider();
    let verifier = PinnedCaVerifier {
        ca_fingerprint,
        provider: provider.clone(),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_ENROL.to_vec()];
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    config.transport_config(transport(Some(CLIENT_KEEP_ALIVE)));
    Ok(config)
}

/// The certificate the peer (a device) presented, or `None` for a connection without one (an
/// enrolling device). TLS has already verified it against the borough CA.
pub fn peer_device_cert(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.into_iter().next()
}

/// The device id of the peer's certificate; fails with [`IdentityError::NoDeviceCertificate`] on a
/// connection without one. The server calls this on every [`ALPN_SYNC`] connection and closes the
/// connection if it fails.
pub fn peer_device_id(conn: &quinn::Connection) -> Result<String, IdentityError> {
    let cert = peer_device_cert(conn).ok_or(IdentityError::NoDeviceCertificate)?;
    device_id_from_cert(&cert)
}

/// The ALPN protocol the handshake settled on ([`ALPN_SYNC`] or [`ALPN_ENROL`]), telling the server
/// which protocol to speak on the connection.
pub fn negotiated_alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    let data = conn.handshake_data()?;
    data.downcast::<HandshakeData>().ok()?.protocol
}

/// Accepts a server whose CA matches the fingerprint from an enrolment code.
///
/// Finding the CA by fingerprint only says which CA the server *claims*; the server certificate must
/// still chain to it, name [`SERVER_NAME`] and be in date, which the standard WebPKI verifier checks
/// with that CA as its only root. Handshake signatures are the provider's to check.
#[derive(Debug)]
struct PinnedCaVerifier {
    ca_fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl PinnedCaVerifier {
    /// A certificate error that carries our explanation through rustls and quinn to the user.
    fn refusal(error: IdentityError) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Explained(
            error,
        )))))
    }
}

/// An error whose `Debug` is its message.
///
/// rustls renders a custom certificate error with `{:?}`, and quinn passes on only that text, so
/// without this the user would read `CaFingerprintMismatch` instead of what to do about it.
struct Explained(IdentityError);

impl fmt::Debug for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Explained {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|cert| cert_fingerprint(cert) == self.ca_fingerprint)
        else {
            return Err(Self::refusal(if intermediates.is_empty() {
                IdentityError::CaNotPresented
            } else {
                IdentityError::CaFingerprintMismatch
            }));
        };
        let roots = borough_roots(ca).map_err(|e| rustls::Error::General(e.to_string()))?;
        let delegate = WebPkiServerVerifier::builder_with_provider(roots, self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let others: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|cert| cert.as_ref() != ca.as_ref())
            .cloned()
            .collect();
        let name =
            ServerName::try_from(SERVER_NAME).map_err(|e| rustls::Error::General(e.to_string()))?;
        delegate.verify_server_cert(end_entity, &others, &name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests;
