//! A device's own key, and reading a device's identity back out of its certificate.
//!
//! The device makes its key pair itself and only ever sends a certificate signing request (CSR): the
//! borough server signs the public half and never sees the private half, so a compromised server
//! cannot impersonate a device it enrolled in the past. The caller keeps the key's PEM inside its
//! encrypted store.

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

/// The device id inside a device certificate issued by a borough CA.
///
/// This only *reads* the certificate: it does not check who signed it. Call it on a certificate
/// that TLS has already verified, such as the one from [`super::peer_device_cert`].
pub fn device_id_from_cert(cert: &CertificateDer<'_>) -> Result<String, IdentityError> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    let san = x509
        .subject_alternative_name()
        .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    let mut ids = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => uri.strip_prefix(DEVICE_URI_PREFIX),
            _ => None,
        });
    let id = ids.next().ok_or(IdentityError::NoDeviceId)?;
    if ids.next().is_some() {
        return Err(IdentityError::BadCertificate(
            "it names more than one device".into(),
        ));
    }
    validate_device_id(id)
        .map_err(|_| IdentityError::BadCertificate(format!("its device id '{id}' is malformed")))?;
    // The issuer writes the id into the common name too; a disagreement means the certificate was
    // not made by a borough CA, and which of the two to believe would be a guess.
    for cn in x509.subject().iter_common_name() {
        let cn = cn
            .as_str()
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        if cn != id {
            return Err(IdentityError::BadCertificate(format!(
                "its subject name '{cn}' disagrees with its device id '{id}'"
            )));
        }
    }
    Ok(id.to_string())
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

    #[test]
    fn garbage_is_not_a_certificate() {
        let err = device_id_from_cert(&CertificateDer::from(vec![0x30, 0x03, 0x01]))
            .expect_err("garbage");
        assert!(matches!(err, IdentityError::BadCertificate(_)), "{err}");
    }
}
