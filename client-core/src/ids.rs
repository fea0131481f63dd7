//! Identifiers. Every id is a random UUID rendered as lowercase hex with hyphens, so an id carries no
//! clinical information and cannot be guessed (a device must not be able to learn another team's case
//! ids by enumeration).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The error for a string that is not a well-formed id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{input}' is not a valid {kind} id (expected a UUID such as 0f8e…-…)")]
pub struct BadId {
    /// What kind of id was expected.
    pub kind: &'static str,
    /// The text that was given.
    pub input: String,
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A new random id (seeded only on a thread the simulation test seeded: see
            /// [`crate::determinism`]).
            pub fn random() -> Self {
                Self(crate::determinism::random_uuid())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0.hyphenated())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = BadId;
            fn from_str(s: &str) -> Result<Self, BadId> {
                uuid::Uuid::parse_str(s.trim())
                    .map(Self)
                    .map_err(|_| BadId { kind: $kind, input: s.to_string() })
            }
        }
    };
}

uuid_id!(
    /// A case: one person's record, one automerge document.
    CaseId, "case"
);
uuid_id!(
    /// An entry inside a case (network member, meeting, decision, action, care-team membership...).
    EntryId, "entry"
);
uuid_id!(
    /// An enrolled device (a practitioner's laptop or tablet).
    DeviceId, "device"
);
uuid_id!(
    /// A practitioner registered on a borough server.
    PractitionerId, "practitioner"
);
uuid_id!(
    /// A team of practitioners; every case belongs to exactly one team.
    TeamId, "team"
);
uuid_id!(
    /// A borough server as the trust hub knows it (chosen by the hub when the borough is added).
    BoroughId, "borough"
);

/// The address of an attachment's bytes: the SHA-256 of its content. Stored beside the case's
/// document (never inside it), sealed like every other value, and checked against the content
/// whenever bytes arrive from a peer: bytes that do not hash to their address are refused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobHash(pub [u8; 32]);

impl BlobHash {
    /// The address of `content`.
    pub fn of(content: &[u8]) -> BlobHash {
        use sha2::Digest;
        BlobHash(sha2::Sha256::digest(content).into())
    }

    /// Whether `content` is what this address names.
    pub fn matches(&self, content: &[u8]) -> bool {
        BlobHash::of(content) == *self
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({})", hex::encode(self.0))
    }
}

/// The error for a string that is not an attachment's address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{0}' is not an attachment's address (expected 64 lowercase hex digits, its SHA-256)")]
pub struct BadBlobHash(pub String);

impl FromStr for BlobHash {
    type Err = BadBlobHash;
    fn from_str(s: &str) -> Result<Self, BadBlobHash> {
        let bad = || BadBlobHash(s.to_string());
        let s = s.trim();
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad());
        }
        let bytes = hex::decode(s).map_err(|_| bad())?;
        Ok(BlobHash(bytes.try_into().map_err(|_| bad())?))
    }
}

impl Serialize for BlobHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for BlobHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let id = CaseId::random();
        assert_eq!(id.to_string().parse::<CaseId>().unwrap(), id);
        let err = "not-a-case".parse::<CaseId>().unwrap_err();
        assert!(err.to_string().contains("not a valid case id"));
    }
}
