//! The borough's own certificate authority.
//!
//! A borough server is the only party that decides which devices belong to its teams, so it runs its
//! own CA instead of buying certificates: it signs its server certificate and one certificate per
//! enrolled device. Devices trust this CA alone (never the system roots), pinned at enrolment by the
//! fingerprint in the [`super::EnrolmentCode`].
//!
//! The CA may issue only end-entity certificates (path length 0), and every certificate's purpose is
//! fixed by the CA, not by the request: device certificates can authenticate clients only, server
//! certificates servers only, so a device certificate can never stand in for the server.
//!
//! The trust hub runs the same kind of CA. Borough servers connect to it as clients, each with a
//! link certificate ([`BoroughCa::issue_borough_cert`]) made exactly like a device certificate
//! except for the one name it carries: a borough's, never a device's.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber, SignatureAlgorithm,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use std::fmt;
use std::net::IpAddr;
use time::{Duration, OffsetDateTime};

use super::device::{
    subject_public_key_info, validate_device_id, BOROUGH_URI_PREFIX, DEVICE_URI_PREFIX,
};
use super::{cert_fingerprint, IdentityError, SERVER_NAME};

/// Certificates start this long before they are issued, so a peer whose clock runs a little behind
/// does not reject a certificate that is minutes old as "not yet valid".
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::days(1);

/// How long the CA itself is valid. Replacing it means re-enrolling every device, so make it long.
const CA_VALIDITY: Duration = Duration::days(20 * 365);

/// How long a server certificate is valid. The server holds the CA key and can issue itself a new
/// one at every start, so it need not be long.
const SERVER_CERT_VALIDITY: Duration = Duration::days(365);

/// How long a borough's link certificate is valid: as long as the device certificates a borough
/// server issues (`server/src/enrolment.rs`), since it is renewed the same way, by enrolling again.
const BOROUGH_CERT_VALIDITY: Duration = Duration::days(365 * 2);

/// The longest borough name a certificate can carry (the X.509 upper bound for an organisation).
const MAX_BOROUGH_NAME_LEN: usize = 64;

/// Device key types the CA signs: ones that rustls and the ring provider verify, and that are
/// strong enough to need no size check (an RSA key could be too short to verify later).
const ACCEPTED_DEVICE_KEY_ALGORITHMS: [&SignatureAlgorithm; 3] = [
    &rcgen::PKCS_ECDSA_P256_SHA256,
    &rcgen::PKCS_ECDSA_P384_SHA384,
    &rcgen::PKCS_ED25519,
];

/// A borough's certificate authority: its certificate and its signing key.
///
/// Held only by the borough server. Its key is the most sensitive secret of a borough: whoever has it
/// can enrol devices. Store [`BoroughCa::to_pem`]'s key encrypted and backed up.
pub struct BoroughCa {
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl BoroughCa {
    /// Make a new CA for the borough called `borough_name` (shown in certificates, such as "Camden").
    pub fn generate(borough_name: &str) -> Result<Self, IdentityError> {
        let name = borough_name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_BOROUGH_NAME_LEN
            || name.chars().any(char::is_control)
        {
            return Err(IdentityError::BadBoroughName(borough_name.to_string()));
        }
        let key = KeyPair::generate()?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, name);
        dn.push(DnType::CommonName, "Polyphony borough CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - CLOCK_SKEW_ALLOWANCE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate and key as PEM, for the server's (encrypted) storage. The key is a secret.
    pub fn to_pem(&self) -> (String, String) {
        let cert_pem = pem_encode("CERTIFICATE", &self.cert_der);
        (cert_pem, self.issuer.key().serialize_pem())
    }

    /// Read a CA stored with [`BoroughCa::to_pem`], checking that the key belongs to the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, IdentityError> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| IdentityError::BadCaPem(format!("certificate: {e}")))?;
        let key =
            KeyPair::from_pem(key_pem).map_err(|e| IdentityError::BadCaPem(format!("key: {e}")))?;
        let (_, x509) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| IdentityError::BadCaPem(format!("certificate: {e}")))?;
        if !x509.is_ca() {
            return Err(IdentityError::NotACa);
        }
        if subject_public_key_info(&cert_der)? != key.subject_public_key_info() {
            return Err(IdentityError::CaKeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| IdentityError::BadCaPem(format!("certificate: {e}")))?;
        Ok(Self { cert_der, issuer })
    }

    /// The CA certificate: the one trust anchor of the borough's servers and devices.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA's signing key (for [`super::AuditHead::sign`]).
    pub(crate) fn key(&self) -> &KeyPair {
        self.issuer.key()
    }

    /// SHA-256 of the CA certificate, as carried by enrolment codes.
    pub fn fingerprint(&self) -> [u8; 32] {
        cert_fingerprint(&self.cert_der)
    }

    /// Issue the server a fresh key and certificate for [`SERVER_NAME`] plus `extra_names` (DNS names
    /// or IP addresses, for clients that connect by another name).
    ///
    /// Returns the chain (server certificate, then the CA certificate, which enrolling devices need to
    /// check the CA fingerprint) and the new private key.
    pub fn issue_server_cert(
        &self,
        extra_names: &[&str],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), IdentityError> {
        let mut names = vec![SanType::DnsName(SERVER_NAME.try_into()?)];
        for name in extra_names {
            names.push(server_san(name)?);
        }
        let key = KeyPair::generate()?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, SERVER_NAME);
        params.distinguished_name = dn;
        params.subject_alt_names = names;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - CLOCK_SKEW_ALLOWANCE;
        params.not_after = now + SERVER_CERT_VALIDITY;
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer)?;
        let chain = vec![cert.der().clone(), self.cert_der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((chain, key))
    }

    /// Sign a device's certificate request (DER, from [`super::DeviceKey::csr_der`]), valid from now
    /// for `valid_for`. The certificate names `device_id`, which the server reads back with
    /// [`super::device_id_from_cert`] when the device connects.
    pub fn issue_device_cert(
        &self,
        device_id: &str,
        csr_der: &[u8],
        valid_for: Duration,
    ) -> Result<CertificateDer<'static>, IdentityError> {
        if !valid_for.is_positive() {
            return Err(IdentityError::BadValidity);
        }
        let now = OffsetDateTime::now_utc();
        self.issue_device_cert_with_validity(
            device_id,
            csr_der,
            now - CLOCK_SKEW_ALLOWANCE,
            now + valid_for,
        )
    }

    /// Like [`BoroughCa::issue_device_cert`] with an explicit validity window (tests use it to make
    /// expired certificates; an administrator could use it to align renewals).
    ///
    /// Only the public key is taken from the request (after checking the request is signed by the
    /// matching private key). Names, CA powers and purposes the request may ask for are ignored: the
    /// CA alone decides what a device certificate says.
    pub fn issue_device_cert_with_validity(
        &self,
        device_id: &str,
        csr_der: &[u8],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<CertificateDer<'static>, IdentityError> {
        validate_device_id(device_id)?;
        self.issue_client_cert(
            device_id,
            format!("{DEVICE_URI_PREFIX}{device_id}"),
            csr_der,
            not_before,
            not_after,
        )
    }

    /// Sign a borough server's request (DER, from [`super::DeviceKey::csr_der`] on the borough's
    /// link key) for its link to this CA's trust hub, valid from now for two years.
    ///
    /// Made like a device certificate (client authentication only, the key taken from the
    /// request and nothing else) but named `urn:polyphony:borough:<id>` and never as a device, so
    /// [`super::peer_name_from_cert`] reads it back as [`super::PeerName::Borough`] and
    /// [`super::device_id_from_cert`] refuses it.
    pub fn issue_borough_cert(
        &self,
        csr_der: &[u8],
        borough: &crate::BoroughId,
    ) -> Result<CertificateDer<'static>, IdentityError> {
        let now = OffsetDateTime::now_utc();
        self.issue_client_cert(
            &borough.to_string(),
            format!("{BOROUGH_URI_PREFIX}{borough}"),
            csr_der,
            now - CLOCK_SKEW_ALLOWANCE,
            now + BOROUGH_CERT_VALIDITY,
        )
    }

    /// Sign a client certificate (a device's or a borough's) for the key in `csr_der`, named
    /// `common_name` in its subject and `san_uri` as its only alternative name.
    ///
    /// Only the public key is taken from the request (after checking the request is signed by the
    /// matching private key): what a certificate says is the CA's decision alone.
    fn issue_client_cert(
        &self,
        common_name: &str,
        san_uri: String,
        csr_der: &[u8],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<CertificateDer<'static>, IdentityError> {
        if not_after <= not_before {
            return Err(IdentityError::BadValidity);
        }
        let request =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| IdentityError::BadCsr(e.to_string()))?;
        if !ACCEPTED_DEVICE_KEY_ALGORITHMS.contains(&request.public_key.algorithm()) {
            return Err(IdentityError::BadCsr(
                "its key type is not accepted; use ECDSA P-256".into(),
            ));
        }

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(san_uri.try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        // Random, not derived from the key: a device or borough re-enrolled with the same key gets
        // a new serial, so each issued certificate can be told apart (and revoked) on its own.
        params.serial_number = Some(random_serial());

        let signed = CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        }
        .signed_by(&self.issuer)?;
        Ok(signed.der().clone())
    }
}

impl fmt::Debug for BoroughCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoroughCa")
            .field("fingerprint", &hex::encode(self.fingerprint()))
            .finish_non_exhaustive()
    }
}

/// A subject alternative name for a server: an IP address if it parses as one, else a DNS name.
fn server_san(name: &str) -> Result<SanType, IdentityError> {
    let bad = || IdentityError::BadServerName(name.to_string());
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    // Checked with the same rules rustls uses to match names, so a name accepted here can match.
    rustls_pki_types::DnsName::try_from(name).map_err(|_| bad())?;
    Ok(SanType::DnsName(name.try_into().map_err(|_| bad())?))
}

/// A random positive 20-byte serial number (the most RFC 5280 allows).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 20] = rand::random();
    bytes[0] &= 0x7f;
    // A leading zero byte would be dropped by DER and shorten the serial; keep it 20 bytes long.
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// PEM text of one DER object (in the same layout rcgen writes).
fn pem_encode(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der), config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{device_id_from_cert, peer_name_from_cert, DeviceKey, PeerName};
    use crate::BoroughId;
    use rcgen::CertificateParams;
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::{ServerName, UnixTime};
    use std::sync::Arc;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(ca: &CertificateDer<'_>) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned()).expect("CA certificate");
        Arc::new(roots)
    }

    /// Whether rustls would accept `cert` as a device certificate under `ca`.
    fn verifies_as_device(
        ca: &CertificateDer<'_>,
        cert: &CertificateDer<'_>,
    ) -> Result<(), rustls::Error> {
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
                .build()
                .expect("verifier");
        verifier
            .verify_client_cert(cert, &[], UnixTime::now())
            .map(|_| ())
    }

    /// Whether rustls would accept `cert` as the server certificate for `name` under `ca`.
    fn verifies_as_server(
        ca: &CertificateDer<'_>,
        cert: &CertificateDer<'_>,
        name: &str,
    ) -> Result<(), rustls::Error> {
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca), provider())
                .build()
                .expect("verifier");
        let name = ServerName::try_from(name.to_string()).expect("name");
        verifier
            .verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    fn csr() -> (DeviceKey, Vec<u8>) {
        let key = DeviceKey::generate().expect("key");
        let csr = key.csr_der("Anna's laptop").expect("csr");
        (key, csr)
    }

    #[test]
    fn csr_signed_device_cert_carries_the_device_id() {
        let ca = BoroughCa::generate("Camden").expect("ca");
        let (key, csr) = csr();
        let id = "0f8e2b1c-5a1d-4a57-9d1e-3c2b1a000001";
        let cert = ca
            .issue_device_cert(id, &csr, Duration::days(90))
            .expect("cert");
        assert_eq!(device_id_from_cert(&cert).expect("id"), id);
        assert!(
            key.matches_certificate(&cert).expect("parse"),
            "certifies the device's own key"
        );
        assert!(!DeviceKey::generate()
            .expect("key")
            .matches_certificate(&cert)
            .expect("parse"));
        verifies_as_device(ca.cert_der(), &cert).expect("a valid device certificate");
    }

    #[test]
    fn borough_cert_round_trips_as_a_client_certificate_naming_the_borough() {
        let hub = BoroughCa::generate("Polyphony trust hub").expect("ca");
        let key = DeviceKey::generate().expect("link key");
        let csr = key.csr_der("Camden").expect("csr");
        let borough = BoroughId::random();
        let cert = hub.issue_borough_cert(&csr, &borough).expect("cert");

        assert_eq!(
            peer_name_from_cert(&cert).expect("name"),
            PeerName::Borough(borough.to_string())
        );
        assert!(
            key.matches_certificate(&cert).expect("parse"),
            "certifies the borough's own link key"
        );
        let (_, x509) = x509_parser::parse_x509_certificate(&cert).expect("parse");
        assert!(!x509.is_ca());
        let san = x509
            .subject_alternative_name()
            .expect("san")
            .expect("present");
        assert_eq!(san.value.general_names.len(), 1, "only the borough URI");
        let eku = x509.extended_key_usage().expect("eku").expect("present");
        assert!(eku.value.client_auth && !eku.value.server_auth);
        let validity = x509.validity().time_to_expiration().expect("in date");
        assert!(validity > Duration::days(365 * 2 - 1), "{validity}");
        verifies_as_device(hub.cert_der(), &cert).expect("a valid client certificate");
        assert!(verifies_as_server(hub.cert_der(), &cert, SERVER_NAME).is_err());
    }

    #[test]
    fn a_borough_cert_is_never_a_device() {
        let hub = BoroughCa::generate("Polyphony trust hub").expect("ca");
        let (_, csr) = csr();
        let cert = hub
            .issue_borough_cert(&csr, &BoroughId::random())
            .expect("cert");
        let err = device_id_from_cert(&cert).expect_err("a borough is not a device");
        assert!(matches!(err, IdentityError::BoroughNotDevice), "{err}");
    }

    #[test]
    fn a_device_cert_is_never_a_borough() {
        let ca = BoroughCa::generate("Camden").expect("ca");
        let (_, csr) = csr();
        // A device id that is also a well-formed borough id still names a device.
        let id = BoroughId::random().to_string();
        let cert = ca
            .issue_device_cert(&id, &csr, Duration::days(1))
            .expect("cert");
        assert_eq!(
            peer_name_from_cert(&cert).expect("name"),
            PeerName::Device(id)
        );
    }

    #[test]
    fn borough_cert_refuses_a_bad_csr() {
        let hub = BoroughCa::generate("Polyphony trust hub").expect("ca");
        let err = hub
            .issue_borough_cert(b"not a csr", &BoroughId::random())
            .expect_err("garbage");
        assert!(matches!(err, IdentityError::BadCsr(_)), "{err}");
    }

    #[test]
    fn device_cert_grants_nothing_the_csr_asks_for() {
        let ca = BoroughCa::generate("Camden").expect("ca");
        let key = KeyPair::generate().expect("key");
        let mut wish = CertificateParams::new(vec![SERVER_NAME.to_string()]).expect("params");
        wish.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        wish.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let csr = wish.serialize_request(&key).expect("csr");

        let cert = ca
            .issue_device_cert("laptop-1", csr.der(), Duration::days(1))
            .expect("cert");
        let (_, x509) = x509_parser::parse_x509_certificate(&cert).expect("parse");
        assert!(!x509.is_ca());
        let san = x509
            .subject_alternative_name()
            .expect("san")
            .expect("present");
        assert_eq!(san.value.general_names.len(), 1, "only the device URI");
        let eku = x509.extended_key_usage().expect("eku").expect("present");
        assert!(eku.value.client_auth && !eku.value.server_auth);
        assert!(verifies_as_server(ca.cert_der(), &cert, SERVER_NAME).is_err());
    }

    #[test]
    fn server_cert_names_the_fixed_server_name_and_extras() {
        let ca = BoroughCa::generate("Camden").expect("ca");
        let (chain, _key) = ca
            .issue_server_cert(&["sync.camden.example", "127.0.0.1", "::1"])
            .expect("server cert");
        assert_eq!(chain.len(), 2);
        assert_eq!(&chain[1], ca.cert_der(), "chain ends with the CA");
        for name in [SERVER_NAME, "sync.camden.example", "127.0.0.1", "::1"] {
            verifies_as_server(ca.cert_der(), &chain[0], name).expect(name);
        }
        assert!(verifies_as_server(ca.cert_der(), &chain[0], "other.example").is_err());
        // The server's certificate cannot pass for a device's.
        assert!(verifies_as_device(ca.cert_der(), &chain[0]).is_err());
    }

    #[test]
    fn ca_round_trips_through_pem() {
        let ca = BoroughCa::generate("Camden").expect("ca");
        let (cert_pem, key_pem) = ca.to_pem();
        assert!(
            cert_pem.starts_with("-----BEGIN CERTIFICATE-----"),
            "{cert_pem}"
        );
        let again = BoroughCa::from_pem(&cert_pem, &key_pem).expect("read back");
        assert_eq!(again.fingerprint(), ca.fingerprint());
        assert_eq!(again.cert_der(), ca.cert_der());
        // The reloaded CA still issues certificates that chain to the original CA certificate.
        let (_, csr) = csr();
        let cert = again
            .issue_device_cert("laptop-2", &csr, Duration::days(1))
            .expect("cert");
        verifies_as_device(ca.cert_der(), &cert).expect("chains to the original");
    }

    #[test]
    fn from_pem_refuses_a_key_of_another_ca() {
        let ca = BoroughCa::generate("Camden").expect("ca");
        let other = BoroughCa::generate("Islington").expect("ca");
        let (cert_pem, _) = ca.to_pem();
        let (_, other_key) = other.to_pem();
        let err = BoroughCa::from_pem(&cert_pem, &other_key).expect_err("mismatch");
        assert!(matches!(err, IdentityError::CaKeyMismatch), "{err}");
    }

    #[test]
    fn from_pem_refuses_a_certificate_that_is_not_a_ca() {
        let ca = BoroughCa::generate("Camden").expect("ca");
        let (chain, key) = ca.issue_server_cert(&[]).expect("server cert");
        let cert_pem = pem_encode("CERTIFICATE", &chain[0]);
        let key_pem = pem_encode("PRIVATE KEY", key.secret_der());
        let err = BoroughCa::from_pem(&cert_pem, &key_pem).expect_err("not a CA");
        assert!(matches!(err, IdentityError::NotACa), "{err}");
    }

    #[test]
    fn from_pem_refuses_garbage() {
        let err = BoroughCa::from_pem("hello", "world").expect_err("garbage");
        assert!(matches!(err, IdentityError::BadCaPem(_)), "{err}");
    }

    #[test]
    fn tampered_csr_is_refused() {
        let ca = BoroughCa::generate("Camden").expect("ca");
        let (_, mut csr) = csr();
        let last = csr.len() - 1;
        csr[last] ^= 0x01;
        let err = ca
            .issue_device_cert("laptop-1", &csr, Duration::days(1))
            .expect_err("bad signature");
        assert!(matches!(err, IdentityError::BadCsr(_)), "{err}");
        let err = ca
            .issue_device_cert("laptop-1", b"not a csr", Duration::days(1))
            .expect_err("garbage");
        assert!(matches!(err, IdentityError::BadCsr(_)), "{err}");
    }

    #[test]
    fn bad_inputs_are_refused_with_their_own_errors() {
        assert!(matches!(
            BoroughCa::generate("  "),
            Err(IdentityError::BadBoroughName(_))
        ));
        assert!(matches!(
            BoroughCa::generate(&"x".repeat(65)),
            Err(IdentityError::BadBoroughName(_))
        ));
        let ca = BoroughCa::generate("Camden").expect("ca");
        assert!(matches!(
            ca.issue_server_cert(&["not a name"]),
            Err(IdentityError::BadServerName(_))
        ));
        let (_, csr) = csr();
        assert!(matches!(
            ca.issue_device_cert("Laptop 1", &csr, Duration::days(1)),
            Err(IdentityError::BadDeviceId(_))
        ));
        assert!(matches!(
            ca.issue_device_cert("laptop-1", &csr, Duration::ZERO),
            Err(IdentityError::BadValidity)
        ));
        let now = OffsetDateTime::now_utc();
        assert!(matches!(
            ca.issue_device_cert_with_validity("laptop-1", &csr, now, now - Duration::days(1)),
            Err(IdentityError::BadValidity)
        ));
    }

    #[test]
    fn device_serials_differ_for_the_same_key() {
        let ca = BoroughCa::generate("Camden").expect("ca");
        let (_, csr) = csr();
        let serial = |cert: &CertificateDer<'_>| {
            let (_, x509) = x509_parser::parse_x509_certificate(cert).expect("parse");
            x509.raw_serial().to_vec()
        };
        let a = ca
            .issue_device_cert("laptop-1", &csr, Duration::days(1))
            .expect("a");
        let b = ca
            .issue_device_cert("laptop-1", &csr, Duration::days(1))
            .expect("b");
        assert_ne!(serial(&a), serial(&b));
        assert_eq!(serial(&a).len(), 20);
    }
}
