//! Who is who on a Polyphony network: keys, certificates, the borough CA and enrolment codes.
//!
//! Clinical records move only between parties that can prove who they are, so identity is carried by
//! certificates and never by network addresses (QUIC connections migrate between addresses, and a
//! laptop on a clinic's Wi-Fi has no stable one). The pieces:
//!
//! - [`BoroughCa`]: each borough server runs its own small certificate authority. It issues the
//!   server's certificate (always carrying the fixed name [`SERVER_NAME`]) and one certificate per
//!   enrolled device, with the device id inside, so the server learns *which device* is syncing from
//!   the TLS handshake alone.
//! - [`DeviceKey`]: a device makes its own key pair and sends only a certificate signing request; the
//!   private key never leaves the device.
//! - Borough links: the trust hub runs a [`BoroughCa`] of its own, and each borough server connects
//!   to it as a client with a link certificate ([`BoroughCa::issue_borough_cert`]) for a
//!   [`DeviceKey`] of the borough's. That certificate names a borough ([`BOROUGH_URI_PREFIX`]) and
//!   never a device, so [`peer_name_from_cert`] tells the two kinds of peer apart and
//!   [`device_id_from_cert`] refuses a borough.
//! - [`EnrolmentCode`]: a one-time code the administrator gives a practitioner. It carries a secret
//!   token (proving the device was invited) and the fingerprint of the borough CA (so the device can
//!   check it is talking to the right server before it has any certificate: no blind trust on first
//!   use).
//! - [`server_config`], [`client_config`], [`enrol_client_config`]: the QUIC/TLS configurations that
//!   put the above to work. TLS 1.3 only, the ring crypto provider passed explicitly to every config,
//!   ALPN on both sides: [`ALPN_SYNC`] for mutual-TLS sync, [`ALPN_ENROL`] for a device that has no
//!   certificate yet.
//!
//! The enrolment *protocol* (what the device and the server say to each other on an [`ALPN_ENROL`]
//! connection) lives with the network layer; this module only supplies the cryptographic parts.

mod anchor;
mod ca;
mod device;
mod enrolment;
mod error;
mod tls;

pub use anchor::AuditHead;
pub use ca::BoroughCa;
pub use device::{
    cert_fingerprint, device_id_from_cert, peer_name_from_cert, DeviceKey, PeerName,
    BOROUGH_URI_PREFIX, DEVICE_URI_PREFIX,
};
pub use enrolment::{hash_enrolment_token, EnrolmentCode, ENROLMENT_TOKEN_LEN};
pub use error::IdentityError;
pub use tls::{
    client_config, enrol_client_config, negotiated_alpn, peer_device_cert, peer_device_id,
    server_config, CLIENT_KEEP_ALIVE, IDLE_TIMEOUT, MAX_CONCURRENT_BIDI_STREAMS,
};

/// ALPN protocol of a sync connection: the device presents its certificate (mutual TLS) and syncs
/// cases.
pub const ALPN_SYNC: &[u8] = b"polyphony/1";

/// ALPN protocol of an enrolment connection: a device without a certificate yet presents an
/// enrolment token and a certificate signing request, and receives its certificate.
pub const ALPN_ENROL: &[u8] = b"polyphony-enrol/1";

/// The TLS server name every borough server certificate carries, whatever its addresses.
///
/// Clients connect with this name (`endpoint.connect(addr, SERVER_NAME)`), so a server can move to a
/// new address or be reached through a tunnel without reissuing anything: the borough CA, not DNS,
/// says who the server is.
pub const SERVER_NAME: &str = "borough.polyphony";
