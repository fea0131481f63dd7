//! The one error type of the identity module. Each message says what happened and what the person
//! in front of the screen (an administrator, a practitioner) can do about it, because these errors
//! surface at enrolment and connection time, where a vague "TLS error" leaves people stuck.

/// Everything that can go wrong with keys, certificates, enrolment codes and TLS configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A signature did not verify.
    #[error("{0}")]
    BadSignature(String),
    /// Generating or signing a key or certificate failed inside the certificate library.
    #[error(
        "could not create a key or certificate ({0}); this should not happen: report it with this message"
    )]
    Certificate(#[from] rcgen::Error),

    /// The borough name given for a new CA is not usable.
    #[error(
        "'{0}' is not a usable borough name: give 1 to 64 printable characters, such as 'Camden'"
    )]
    BadBoroughName(String),

    /// An extra server name is neither an IP address nor a valid DNS name.
    #[error("'{0}' is not a usable server name: give a DNS name (such as sync.camden.example) or an IP address")]
    BadServerName(String),

    /// A device id is not something a certificate can carry unambiguously.
    #[error(
        "'{0}' is not a usable device id: use 1 to 64 lowercase letters, digits and inner hyphens, such as a device UUID"
    )]
    BadDeviceId(String),

    /// A requested certificate lifetime is empty or negative.
    #[error("the certificate would never be valid: its end must come after its start")]
    BadValidity,

    /// The stored CA certificate or key could not be read.
    #[error("the stored borough CA could not be read ({0}): restore the CA certificate and key from backup")]
    BadCaPem(String),

    /// The stored CA key does not belong to the stored CA certificate.
    #[error(
        "the stored borough CA key does not belong to the CA certificate: the files were mixed up; restore both from the same backup"
    )]
    CaKeyMismatch,

    /// The certificate given as a CA certificate is not a CA certificate.
    #[error("the stored borough CA certificate is not a CA certificate: restore the right file from backup")]
    NotACa,

    /// The stored device key could not be read.
    #[error("the stored device key could not be read ({0}): this device must be enrolled again")]
    BadDeviceKey(String),

    /// A device's certificate signing request was malformed, badly signed or asked for something
    /// the borough CA does not grant.
    #[error("the device's certificate request was refused ({0}): start the enrolment again on the device")]
    BadCsr(String),

    /// A certificate could not be parsed, or is inconsistent.
    #[error("the certificate could not be read ({0})")]
    BadCertificate(String),

    /// A certificate carries no Polyphony device id.
    #[error(
        "this certificate carries no Polyphony device id: it was not issued to a device by a borough CA; enrol the device"
    )]
    NoDeviceId,

    /// A certificate names neither a Polyphony device nor a borough.
    #[error(
        "this certificate names neither a Polyphony device nor a borough: it was not issued by a Polyphony certificate authority"
    )]
    NoPeerName,

    /// A borough's link certificate was presented where a device's is required.
    #[error(
        "this certificate belongs to a borough server's link to the trust hub, not to a device: a borough cannot sync as a device; enrol the device itself"
    )]
    BoroughNotDevice,

    /// A connection came without a device certificate where one is required.
    #[error(
        "the connection presented no device certificate: only enrolled devices may sync; enrol this device first"
    )]
    NoDeviceCertificate,

    /// An enrolment code was mistyped, cut short or is not an enrolment code.
    #[error("this enrolment code is not valid: {0}")]
    BadEnrolmentCode(String),

    /// The server's CA is not the one named by the enrolment code.
    #[error(
        "the server's certificate authority does not match the enrolment code: this may not be your borough's server; \
         do not continue, and check the code and the server address with your administrator"
    )]
    CaFingerprintMismatch,

    /// The server presented no CA certificate, so the enrolment code's fingerprint cannot be checked.
    #[error(
        "the server did not present its certificate authority, so it cannot be checked against the enrolment code: \
         the server is misconfigured; tell your administrator"
    )]
    CaNotPresented,

    /// Building a TLS configuration failed (for example a key that does not match its certificate).
    #[error("could not set up TLS ({0}): check that the certificate and key belong together")]
    Tls(#[from] rustls::Error),

    /// Building a certificate verifier failed (for example an unusable CA certificate).
    #[error("could not set up certificate checking ({0}): check the borough CA certificate")]
    Verifier(#[from] rustls::server::VerifierBuilderError),

    /// The TLS configuration lacks the cipher suite QUIC needs for its initial packets.
    #[error(
        "the TLS configuration cannot be used for QUIC ({0}); this should not happen: report it"
    )]
    NotQuicCompatible(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}
