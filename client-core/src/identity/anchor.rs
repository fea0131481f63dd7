//! The audit log's head, signed by the borough CA, for keeping outside the server.
//!
//! The server's audit log is a hash chain, so an edited or deleted record in the middle is found
//! by `audit --verify`. But a chain cut short at the end, or a whole older copy restored from a
//! backup, is still a valid chain. So every welcome carries the current head (the last record's
//! number and hash) signed with the borough CA's key; every device keeps the newest head it saw,
//! and the administrator can export one. `polyphony-server audit --verify --anchor FILE` then
//! checks that the log still holds each anchored record with the same hash: a log that lost its
//! tail, or an older copy, fails.

use rcgen::SigningKey;
use serde::{Deserialize, Serialize};

use super::{BoroughCa, IdentityError};

/// The head of a server's audit log, signed by its borough CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// How many records the log held (the last record is number `records - 1`).
    pub records: u64,
    /// The last record's hash, hex (zeros for an empty log).
    pub hash: String,
    /// When the head was signed (RFC 3339, the server's clock).
    pub at: String,
    /// The borough CA's signature over the three fields above (ECDSA P-256, DER), hex.
    pub signature: String,
}

impl AuditHead {
    fn signed_bytes(records: u64, hash: &str, at: &str) -> Vec<u8> {
        format!("polyphony audit head v1\n{records}\n{hash}\n{at}\n").into_bytes()
    }

    /// Sign a head with the borough CA's key.
    pub fn sign(ca: &BoroughCa, records: u64, hash: &str, at: &str) -> Result<Self, IdentityError> {
        let signature = ca.key().sign(&Self::signed_bytes(records, hash, at))?;
        Ok(Self {
            records,
            hash: hash.to_string(),
            at: at.to_string(),
            signature: hex::encode(signature),
        })
    }

    /// Check the signature against the borough CA certificate (DER).
    pub fn verify(&self, ca_cert_der: &[u8]) -> Result<(), IdentityError> {
        let (_, x509) = x509_parser::parse_x509_certificate(ca_cert_der)
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let public = &x509.public_key().subject_public_key.data;
        let signature = hex::decode(&self.signature)
            .map_err(|_| IdentityError::BadSignature("the signature is not hex".into()))?;
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            public.as_ref(),
        )
        .verify(
            &Self::signed_bytes(self.records, &self.hash, &self.at),
            &signature,
        )
        .map_err(|_| {
            IdentityError::BadSignature("the audit head was not signed by this borough's CA".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_head_verifies_and_any_change_to_it_does_not() {
        let ca = BoroughCa::generate("Camden").unwrap();
        let other = BoroughCa::generate("Camden").unwrap();
        let head = AuditHead::sign(&ca, 42, &"ab".repeat(32), "2026-12-03T10:00:00Z").unwrap();
        head.verify(ca.cert_der()).unwrap();
        assert!(
            head.verify(other.cert_der()).is_err(),
            "another CA's certificate"
        );
        let mut shorter = head.clone();
        shorter.records = 41;
        assert!(
            shorter.verify(ca.cert_der()).is_err(),
            "an edited record count"
        );
        let mut rehashed = head.clone();
        rehashed.hash = "cd".repeat(32);
        assert!(rehashed.verify(ca.cert_der()).is_err(), "an edited hash");
    }
}
