//! A device's own key, and reading a peer's identity (a device, or a borough on its link to the
//! trust hub) back out of its certificate.
//!
//! The device makes its key pair itself and only ever sends a certificate signing request (CSR): the
//! borough server signs the public half and never sees the private half, so a compromised server
//! cannot impersonate a device it enrolled in the past. The caller keeps the key's PEM inside its
//! encrypted store. A borough server's link key for the trust hub is a [`DeviceKey`] too, made and
//! kept the same way: only the certificate it gets differs.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use std::fmt;
use x509_parser::extensions::GeneralName;

use super::IdentityError;

/// The URI subject alternative name of a device certificate is this prefix followed by the device id.
///
/// A URI (rather than a DNS name) keeps device ids out of the DNS namespace, so a device certificate
/// can never be mistaken for a certificate of a host.
pub const DEVICE_URI_PREFIX: &str = "urn:polyphony:device:";

/// The URI subject alternative name of a borough's link certificate (issued by the trust hub's CA)
/// is this prefix followed by the borough's id.
///
/// A different prefix from [`DEVICE_URI_PREFIX`], so a borough's link certificate can never be read
/// as a device's, nor a device's as a borough's: [`peer_name_from_cert`] finds exactly one of the two.
pub const BOROUGH_URI_PREFIX: &str = "urn:polyphony:borough:";

/// The longest device id a certificate may carry (the X.509 upper bound for a common name).
const MAX_DEVICE_ID_LEN: usize = 64;

/// A device's private key, from which it requests its certificate.
///
/// Made once per device at enrolment; the certificate the borough CA returns is only usable with
/// this key, so the caller must store it (as PEM, inside the encrypted store) next to the certificate.
pub struct DeviceKey {
    key: KeyPair,
}

impl DeviceKey {
    /// Make a new key (ECDSA P-256, which every TLS stack and phone keystore supports).
    pub fn generate() -> Result<Self, IdentityError> {
        Ok(Self {
            key: KeyPair::generate()?,
        })
    }

    /// A certificate signing request for this key, DER-encoded, to send to the borough server.
    ///
    /// `device_name` is a label for the administrator (such as "Anna's laptop"); the borough CA does
    /// not copy it into the certificate, which names the device by the id the server assigns.
    pub fn csr_der(&self, device_name: &str) -> Result<Vec<u8>, IdentityError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, device_name);
        params.distinguished_name = dn;
        let csr = params.serialize_request(&self.key)?;
        Ok(csr.der().to_vec())
    }

    /// The key as PKCS#8 PEM, for the caller's encrypted store. Treat it as a secret.
    pub fn to_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Read a key stored with [`DeviceKey::to_pem`].
    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        let key = KeyPair::from_pem(pem).map_err(|e| IdentityError::BadDeviceKey(e.to_string()))?;
        Ok(Self { key })
    }

    /// The private key in the form rustls takes, for [`super::client_config`].
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    /// Whether `cert` was issued for this key, to catch a certificate stored with the wrong key
    /// before it fails obscurely in a handshake.
    pub fn matches_certificate(&self, cert: &CertificateDer<'_>) -> Result<bool, IdentityError> {
        Ok(subject_public_key_info(cert)? == self.key.subject_public_key_info())
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKey")
            .field("algorithm", self.key.algorithm())
            .finish_non_exhaustive()
    }
}

/// Who a certificate names: a device, or a borough on its link to the trust hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerName {
    /// A device certificate (from [`super::BoroughCa::issue_device_cert`]): the device id.
    Device(String),
    /// A borough's link certificate (from [`super::BoroughCa::issue_borough_cert`]): the borough's
    /// id, a lowercase hyphenated UUID as [`crate::BoroughId`] displays it.
    Borough(String),
}

/// Who a certificate issued by a Polyphony CA names: exactly one device or exactly one borough.
///
/// A certificate naming neither fails with [`IdentityError::NoPeerName`]; one naming two (two
/// devices, two boroughs, or a device and a borough) is refused, since which to believe would be a
/// guess. This only *reads* the certificate: it does not check who signed it. Call it on a
/// certificate that TLS has already verified, such as the one from [`super::peer_device_cert`].
pub fn peer_name_from_cert(cert: &CertificateDer<'_>) -> Result<PeerName, IdentityError> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    let san = x509
        .subject_alternative_name()
        .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    let mut names = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => polyphony_name(uri),
            _ => None,
        });
    let name = names.next().ok_or(IdentityError::NoPeerName)?;
    if let Some(other) = names.next() {
        let what = match (&name, &other) {
            (PeerName::Device(_), PeerName::Device(_)) => "it names more than one device",
            (PeerName::Borough(_), PeerName::Borough(_)) => "it names more than one borough",
            _ => "it names both a device and a borough",
        };
        return Err(IdentityError::BadCertificate(what.into()));
    }
    let (id, kind) = match &name {
        PeerName::Device(id) => {
            validate_device_id(id).map_err(|_| {
                IdentityError::BadCertificate(format!("its device id '{id}' is malformed"))
            })?;
            (id, "device id")
        }
        PeerName::Borough(id) => {
            validate_borough_id(id)?;
            (id, "borough id")
        }
    };
    // The issuer writes the id into the common name too; a disagreement means the certificate was
    // not made by a Polyphony CA, and which of the two to believe would be a guess.
    for cn in x509.subject().iter_common_name() {
        let cn = cn
            .as_str()
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        if cn != id {
            return Err(IdentityError::BadCertificate(format!(
                "its subject name '{cn}' disagrees with its {kind} '{id}'"
            )));
        }
    }
    Ok(name)
}

/// The device id inside a device certificate issued by a borough CA.
///
/// A borough's link certificate is refused ([`IdentityError::BoroughNotDevice`]), as is a
/// certificate that names a borough beside a device: a borough may never sync as a device. This
/// only *reads* the certificate: it does not check who signed it. Call it on a certificate that TLS
/// has already verified, such as the one from [`super::peer_device_cert`].
pub fn device_id_from_cert(cert: &CertificateDer<'_>) -> Result<String, IdentityError> {
    match peer_name_from_cert(cert) {
        Ok(PeerName::Device(id)) => Ok(id),
        Ok(PeerName::Borough(_)) => Err(IdentityError::BoroughNotDevice),
        Err(IdentityError::NoPeerName) => Err(IdentityError::NoDeviceId),
        Err(e) => Err(e),
    }
}

/// The Polyphony name a URI subject alternative name carries, if it carries one.
fn polyphony_name(uri: &str) -> Option<PeerName> {
    if let Some(id) = uri.strip_prefix(DEVICE_URI_PREFIX) {
        Some(PeerName::Device(id.to_string()))
    } else {
        uri.strip_prefix(BOROUGH_URI_PREFIX)
            .map(|id| PeerName::Borough(id.to_string()))
    }
}

/// Check that a borough id read from a certificate is a UUID in the one spelling
/// [`crate::BoroughId`] displays, so one borough cannot appear under two spellings in the hub's
/// records.
fn validate_borough_id(id: &str) -> Result<(), IdentityError> {
    let canonical = id
        .parse::<crate::BoroughId>()
        .is_ok_and(|parsed| parsed.to_string() == id);
    if canonical {
        Ok(())
    } else {
        Err(IdentityError::BadCertificate(format!(
            "its borough id '{id}' is malformed"
        )))
    }
}

/// SHA-256 of a certificate's DER encoding: how enrolment codes and logs name a certificate.
pub fn cert_fingerprint(cert: &CertificateDer<'_>) -> [u8; 32] {
    Sha256::digest(cert.as_ref()).into()
}

/// Check that a device id can be carried in a certificate and read back unchanged.
///
/// Lowercase only, so one device cannot appear under two spellings in access lists and audit logs.
pub(crate) fn validate_device_id(id: &str) -> Result<(), IdentityError> {
    let well_formed = !id.is_empty()
        && id.len() <= MAX_DEVICE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if well_formed {
        Ok(())
    } else {
        Err(IdentityError::BadDeviceId(id.to_string()))
    }
}

/// The DER SubjectPublicKeyInfo of a certificate, to compare keys with certificates.
pub(crate) fn subject_public_key_info(cert: &CertificateDer<'_>) -> Result<Vec<u8>, IdentityError> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    Ok(x509.public_key().raw.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_key_round_trips_through_pem() {
        let key = DeviceKey::generate().expect("key");
        let again = DeviceKey::from_pem(&key.to_pem()).expect("read back");
        assert_eq!(key.private_key_der(), again.private_key_der());
    }

    #[test]
    fn damaged_device_key_pem_is_refused() {
        let err = DeviceKey::from_pem(
            "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
        )
        .expect_err("garbage");
        assert!(matches!(err, IdentityError::BadDeviceKey(_)), "{err}");
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let key = DeviceKey::generate().expect("key");
        let shown = format!("{key:?}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
    }

    #[test]
    fn device_ids_are_checked() {
        for good in ["a", "0f8e2b1c-0000-4000-8000-000000000001", "laptop-2"] {
            validate_device_id(good).expect(good);
        }
        let too_long = "a".repeat(65);
        for bad in [
            "",
            "-a",
            "a-",
            "Laptop",
            "a b",
            "a/b",
            "é",
            too_long.as_str(),
        ] {
            assert!(
                matches!(validate_device_id(bad), Err(IdentityError::BadDeviceId(_))),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn certificate_without_device_id_is_reported() {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["example.org".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let err = device_id_from_cert(cert.der()).expect_err("no id");
        assert!(matches!(err, IdentityError::NoDeviceId), "{err}");
    }

    #[test]
    fn certificate_whose_name_disagrees_with_its_device_id_is_refused() {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "someone-else");
        params.subject_alt_names = vec![rcgen::SanType::URI(
            format!("{DEVICE_URI_PREFIX}laptop-1")
                .try_into()
                .expect("ia5"),
        )];
        let cert = params.self_signed(&key).expect("cert");
        let err = device_id_from_cert(cert.der()).expect_err("disagreement");
        assert!(matches!(err, IdentityError::BadCertificate(_)), "{err}");
    }

    /// A self-signed certificate with these URI names, its common name the first name's id.
    fn cert_naming(uris: &[String]) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        let first = uris
            .first()
            .and_then(|u| u.rsplit(':').next())
            .unwrap_or("");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, first);
        params.subject_alt_names = uris
            .iter()
            .map(|u| rcgen::SanType::URI(u.clone().try_into().expect("ia5")))
            .collect();
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn certificate_naming_a_device_and_a_borough_is_refused() {
        let borough = crate::BoroughId::random();
        for uris in [
            vec![
                format!("{DEVICE_URI_PREFIX}laptop-1"),
                format!("{BOROUGH_URI_PREFIX}{borough}"),
            ],
            vec![
                format!("{BOROUGH_URI_PREFIX}{borough}"),
                format!("{DEVICE_URI_PREFIX}laptop-1"),
            ],
        ] {
            let cert = cert_naming(&uris);
            let err = peer_name_from_cert(&cert).expect_err("two kinds of name");
            assert!(
                matches!(&err, IdentityError::BadCertificate(m) if m.contains("both")),
                "{err}"
            );
            let err = device_id_from_cert(&cert).expect_err("not only a device");
            assert!(matches!(err, IdentityError::BadCertificate(_)), "{err}");
        }
    }

    #[test]
    fn certificate_naming_two_boroughs_is_refused() {
        let cert = cert_naming(&[
            format!("{BOROUGH_URI_PREFIX}{}", crate::BoroughId::random()),
            format!("{BOROUGH_URI_PREFIX}{}", crate::BoroughId::random()),
        ]);
        let err = peer_name_from_cert(&cert).expect_err("two boroughs");
        assert!(matches!(err, IdentityError::BadCertificate(_)), "{err}");
    }

    #[test]
    fn borough_id_in_another_spelling_is_refused() {
        let id = crate::BoroughId::random().to_string();
        for spelling in [id.to_uppercase(), id.replace('-', ""), "camden".to_string()] {
            let cert = cert_naming(&[format!("{BOROUGH_URI_PREFIX}{spelling}")]);
            let err = peer_name_from_cert(&cert).expect_err(&spelling);
            assert!(matches!(err, IdentityError::BadCertificate(_)), "{err}");
        }
        let cert = cert_naming(&[format!("{BOROUGH_URI_PREFIX}{id}")]);
        assert_eq!(
            peer_name_from_cert(&cert).expect("canonical"),
            PeerName::Borough(id)
        );
    }

    #[test]
    fn certificate_naming_nobody_has_no_peer_name() {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["example.org".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let err = peer_name_from_cert(cert.der()).expect_err("no name");
        assert!(matches!(err, IdentityError::NoPeerName), "{err}");
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let err = device_id_from_cert(&CertificateDer::from(vec![0x30, 0x03, 0x01]))
            .expect_err("garbage");
        assert!(matches!(err, IdentityError::BadCertificate(_)), "{err}");
    }
}
