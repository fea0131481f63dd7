//! Sealing values at rest, and the keys that seal them.
//!
//! Every value the store writes (chunks, meta values, log entries) passes through [`SealKey::seal`]
//! first, so a stolen laptop or a copied backup shows nothing but ciphertext. The cipher is
//! XChaCha20-Poly1305: its 24-byte nonce is large enough to draw at random for every value without
//! any risk of reuse, which spares the store a persistent nonce counter that a crash could roll back.
//!
//! The associated data (AAD) given to `seal` names where the value lives (tree and key). It is not
//! stored, but authenticated: a value copied or moved to another key, another case or another store
//! no longer opens, so an attacker with write access to the files cannot shuffle sealed records
//! between people.
//!
//! Two keys are involved (key wrapping, store format 2). Values are sealed under the store's *data
//! key*: 32 random bytes drawn when the store is made (or re-keyed), never derived from anything.
//! The data key is kept in the store's header *wrapped* (sealed, [`SealKey::wrap`]) under a
//! *key-encryption key* from a [`KeySource`]: a practitioner's passphrase (stretched with argon2id,
//! so a stolen store resists guessing), a key file (for the borough server, which starts
//! unattended), or a raw key (tests and in-memory use). Because the data key does not depend on the
//! passphrase, the passphrase or its argon2id cost can change by writing a new header, and a store
//! made with weaker parameters can be moved to a new data key without anyone typing anything new.
//! (Format 1 stores, made before key wrapping, sealed values directly under the key from the
//! source; see `sled_store/rekey.rs` for how they are upgraded.)

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::Zeroize;

use super::StoreError;

/// Length of a [`SealKey`] in bytes.
pub const KEY_LEN: usize = 32;

/// Length of the random nonce prepended to every sealed value.
const NONCE_LEN: usize = 24;

/// Length of the Poly1305 tag appended by the cipher.
const TAG_LEN: usize = 16;

/// Length of the argon2id salt kept in a store's header.
pub(crate) const SALT_LEN: usize = 16;

/// A 256-bit key that seals and opens stored values. The bytes are wiped from memory when the key
/// is dropped (each clone wipes its own copy), and `Debug` never prints them.
#[derive(Clone)]
pub struct SealKey {
    bytes: [u8; KEY_LEN],
}

impl SealKey {
    /// Use the given bytes as a key. Prefer [`SealKey::generate`] or a [`KeySource`]: a key typed
    /// into code is not secret.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self { bytes }
    }

    /// A fresh random key from the operating system's CSPRNG (through `rand`'s thread generator,
    /// which is seeded from it and cryptographically secure).
    pub fn generate() -> Self {
        let mut key = Self {
            bytes: [0; KEY_LEN],
        };
        rand::rng().fill_bytes(&mut key.bytes);
        key
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        let key: &Key = (&self.bytes).into();
        XChaCha20Poly1305::new(key)
    }

    /// Encrypt and authenticate `plaintext`, binding it to `aad` (the value's location). Returns
    /// `nonce (24 bytes) ++ ciphertext ++ tag (16 bytes)`.
    ///
    /// # Panics
    /// Only if `plaintext` is longer than the cipher's limit (about 256 GiB), which no stored value
    /// can reach.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let nonce_ref: &XNonce = (&nonce).into();
        let ciphertext = self
            .cipher()
            .encrypt(
                nonce_ref,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            // The only failure is a message beyond 2^38 bytes; callers pass store values, which are
            // far below that. Returning a Result would push an impossible error onto every caller.
            .expect("XChaCha20-Poly1305 refuses only messages over 256 GiB");
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Check and decrypt a value made by [`SealKey::seal`] with the same key and the same `aad`.
    ///
    /// Any mismatch (another key, another location, a flipped bit, a truncated value) is
    /// [`StoreError::Corrupt`]; callers that know what they were reading replace the generic `what`,
    /// and the store maps a failing verifier to [`StoreError::WrongPassphrase`].
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(StoreError::Corrupt {
                what: "a sealed value".into(),
                detail: format!(
                    "{} bytes is too short to be sealed (at least {} expected)",
                    sealed.len(),
                    NONCE_LEN + TAG_LEN
                ),
            });
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: &XNonce = nonce.try_into().map_err(|_| StoreError::Corrupt {
            what: "a sealed value".into(),
            detail: "malformed nonce".into(),
        })?;
        self.cipher()
            .decrypt(
                nonce,
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| StoreError::Corrupt {
                what: "a sealed value".into(),
                detail: "authentication failed (altered, moved, or sealed with another key)".into(),
            })
    }
}

impl SealKey {
    /// Seal `key` under this key (key wrapping): the result can sit in a store's header, and only
    /// this key, with the same `aad`, gets `key` back ([`SealKey::unwrap`]).
    pub(crate) fn wrap(&self, aad: &[u8], key: &SealKey) -> Vec<u8> {
        self.seal(aad, &key.bytes)
    }

    /// Recover a key sealed by [`SealKey::wrap`]. Any mismatch is [`StoreError::Corrupt`], as for
    /// [`SealKey::open`]: the caller decides whether that means a wrong passphrase.
    pub(crate) fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<SealKey, StoreError> {
        let mut plain = self.open(aad, wrapped)?;
        let result = <[u8; KEY_LEN]>::try_from(plain.as_slice())
            .map(|bytes| SealKey { bytes })
            .map_err(|_| StoreError::Corrupt {
                what: "the wrapped store key".into(),
                detail: format!("{} bytes instead of {KEY_LEN}", plain.len()),
            });
        plain.zeroize();
        result
    }

    /// Whether two keys are the same, in constant time (tests use it to show a re-key drew a new
    /// key; nothing decides access by it).
    #[cfg(test)]
    pub(crate) fn same_as(&self, other: &SealKey) -> bool {
        self.bytes
            .iter()
            .zip(other.bytes.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl Drop for SealKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

/// How expensive it is to turn a passphrase into a key (argon2id). The parameters are written into
/// a store's header when it is created (or re-keyed) and read back on every later open; a store
/// whose parameters are weaker than the ones asked for is re-keyed when it is next unlocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Number of passes over the memory.
    pub iterations: u32,
    /// Degree of parallelism (lanes).
    pub parallelism: u32,
}

impl KdfParams {
    /// The parameters every new store uses: 64 MiB, 3 passes, 4 lanes, the second recommended
    /// option of RFC 9106 (argon2id where memory is constrained). Measured on the 2-core
    /// development machine, with other builds running: 0.20 s per unlock, against 0.04 s for the
    /// 19 MiB, 2-pass parameters used before (OWASP's minimum); a guess at a stolen device's
    /// passphrase costs 64 MiB and five times the work. A passphrase store made with weaker
    /// parameters (before this change, or before key wrapping) is re-keyed the first time it is
    /// opened with the right passphrase: a new data key, wrapped under these parameters (see
    /// `docs/SECURITY.md` for the unlock time measured with them).
    pub const RECOMMENDED: KdfParams = KdfParams {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 4,
    };

    /// **Test only.** Almost free to compute, so test suites can create many passphrase stores.
    /// A store created with these falls to a guessing attack in no time; never use them for a store
    /// that will hold real records (opening such a store logs a warning).
    pub const INSECURE_FAST_FOR_TESTS: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    // Bounds for values read back from a header: a damaged or hostile header must not make the
    // device allocate gigabytes or spin for minutes before refusing the passphrase.
    const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
    const MAX_ITERATIONS: u32 = 64;
    const MAX_PARALLELISM: u32 = 64;

    /// Whether these parameters are weaker than [`KdfParams::RECOMMENDED`].
    pub fn is_weaker_than_recommended(&self) -> bool {
        self.is_weaker_than(&Self::RECOMMENDED)
    }

    /// Whether these parameters cost a guesser less than `other` in memory or in passes. (Lanes
    /// are not counted: they spread the work over cores, they do not add to it.)
    pub fn is_weaker_than(&self, other: &KdfParams) -> bool {
        self.memory_kib < other.memory_kib || self.iterations < other.iterations
    }

    fn to_argon2(self) -> Result<argon2::Params, String> {
        if self.memory_kib > Self::MAX_MEMORY_KIB
            || self.iterations > Self::MAX_ITERATIONS
            || self.parallelism > Self::MAX_PARALLELISM
        {
            return Err(format!("argon2 parameters out of range: {self:?}"));
        }
        argon2::Params::new(
            self.memory_kib,
            self.iterations,
            self.parallelism,
            Some(KEY_LEN),
        )
        .map_err(|e| format!("argon2 parameters {self:?} rejected: {e}"))
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::RECOMMENDED
    }
}

/// Derive a key from a passphrase with argon2id. `params` errors are returned as text for the caller
/// to classify: from a header they mean damage, from options they mean a caller mistake.
pub(crate) fn derive_key(
    passphrase: &str,
    salt: &[u8],
    params: KdfParams,
) -> Result<SealKey, String> {
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params.to_argon2()?,
    );
    // Derive straight into the key so no stray copy of it is left on the stack.
    let mut key = SealKey {
        bytes: [0; KEY_LEN],
    };
    argon
        .hash_password_into(passphrase.as_bytes(), salt, &mut key.bytes)
        .map_err(|e| format!("argon2 failed: {e}"))?;
    Ok(key)
}

/// A fresh random salt for a new store.
pub(crate) fn random_salt() -> [u8; SALT_LEN] {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    salt
}

/// Where the key that unlocks a store comes from. It wraps the store's data key (in stores made
/// before key wrapping, it was the data key itself).
///
/// The passphrase is wiped from memory when the `KeySource` is dropped.
pub enum KeySource {
    /// A practitioner's passphrase, stretched with argon2id and a random salt kept in the store's
    /// header. Judging whether a passphrase is strong enough is the caller's job.
    Passphrase(String),
    /// A file holding exactly 32 random bytes (see [`KeySource::create_key_file`]); for the borough
    /// server, which must start without anyone typing a passphrase.
    KeyFile(PathBuf),
    /// A key already in memory (tests, or a key unwrapped elsewhere).
    Raw(SealKey),
}

impl KeySource {
    /// Write a new key file of 32 random bytes at `path`, readable only by its owner (0600), unless a
    /// file is already there (an existing key is never overwritten: that would lose the store it
    /// opens). Returns a [`KeySource::KeyFile`] for `path`. A file that already exists is checked, so
    /// a malformed one is reported here rather than at the first open.
    pub fn create_key_file(path: &Path) -> Result<KeySource, StoreError> {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(path) {
            Ok(mut file) => {
                let key = SealKey::generate();
                file.write_all(&key.bytes).map_err(|e| {
                    StoreError::KeyFile(format!("could not write {}: {e}", path.display()))
                })?;
                // The key file is the only way into the store: it must survive a power cut as
                // surely as the data it opens.
                file.sync_all().map_err(|e| {
                    StoreError::KeyFile(format!("could not sync {}: {e}", path.display()))
                })?;
                sync_parent_dir(path)?;
                tracing::info!(path = %path.display(), "created a new store key file");
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                read_key_file(path)?;
            }
            Err(e) => {
                return Err(StoreError::KeyFile(format!(
                    "could not create {}: {e}",
                    path.display()
                )))
            }
        }
        Ok(KeySource::KeyFile(path.to_path_buf()))
    }

    /// Short name of the kind of source, for logs (never the secret itself).
    pub(crate) fn kind_name(&self) -> &'static str {
        match self {
            KeySource::Passphrase(_) => "passphrase",
            KeySource::KeyFile(_) => "key file",
            KeySource::Raw(_) => "raw key",
        }
    }
}

impl Drop for KeySource {
    fn drop(&mut self) {
        if let KeySource::Passphrase(passphrase) = self {
            passphrase.zeroize();
        }
    }
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Passphrase(_) => f.write_str("Passphrase(<redacted>)"),
            KeySource::KeyFile(path) => f.debug_tuple("KeyFile").field(path).finish(),
            KeySource::Raw(_) => f.write_str("Raw(<redacted>)"),
        }
    }
}

/// Read a key file: exactly [`KEY_LEN`] bytes, nothing else.
pub(crate) fn read_key_file(path: &Path) -> Result<SealKey, StoreError> {
    let mut file = fs::File::open(path).map_err(|e| {
        StoreError::KeyFile(format!(
            "could not open {}: {e} (create one with `create_key_file`, or restore it from backup)",
            path.display()
        ))
    })?;
    #[cfg(unix)]
    if let Ok(meta) = file.metadata() {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "the store key file is readable by other users; restrict it with chmod 600"
            );
        }
    }
    // Read one byte past the expected length so an over-long file is caught too.
    let mut buf = Vec::with_capacity(KEY_LEN + 1);
    let read = (&mut file)
        .take(KEY_LEN as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| StoreError::KeyFile(format!("could not read {}: {e}", path.display())));
    let result = match read {
        Err(e) => Err(e),
        Ok(_) if buf.len() != KEY_LEN => Err(StoreError::KeyFile(format!(
            "{} is not a Polyphony key file: it must hold exactly {KEY_LEN} bytes",
            path.display()
        ))),
        Ok(_) => {
            let mut bytes = [0u8; KEY_LEN];
            bytes.copy_from_slice(&buf);
            let key = SealKey::from_bytes(bytes);
            bytes.zeroize();
            Ok(key)
        }
    };
    buf.zeroize();
    result
}

/// fsync the directory holding `path`, so a newly created entry survives a power cut.
fn sync_parent_dir(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| {
                StoreError::KeyFile(format!("could not sync {}: {e}", parent.display()))
            })?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips_and_nonces_differ() {
        let key = SealKey::generate();
        let a = key.seal(b"here", b"Maria said the garden helps");
        let b = key.seal(b"here", b"Maria said the garden helps");
        assert_ne!(a, b, "every seal draws a fresh nonce");
        assert_eq!(
            key.open(b"here", &a).unwrap(),
            b"Maria said the garden helps"
        );
        assert_eq!(key.open(b"here", &key.seal(b"here", b"")).unwrap(), b"");
    }

    #[test]
    fn open_refuses_other_location_other_key_and_damage() {
        let key = SealKey::generate();
        let sealed = key.seal(b"case-a/1", b"text");
        assert!(matches!(
            key.open(b"case-b/1", &sealed),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            SealKey::generate().open(b"case-a/1", &sealed),
            Err(StoreError::Corrupt { .. })
        ));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            key.open(b"case-a/1", &flipped),
            Err(StoreError::Corrupt { .. })
        ));
        for len in [0, 1, NONCE_LEN, NONCE_LEN + TAG_LEN - 1] {
            assert!(matches!(
                key.open(b"case-a/1", &sealed[..len]),
                Err(StoreError::Corrupt { .. })
            ));
        }
    }

    #[test]
    fn passphrase_derivation_is_deterministic_per_salt() {
        let p = KdfParams::INSECURE_FAST_FOR_TESTS;
        let salt = random_salt();
        let k1 = derive_key("correct horse", &salt, p).unwrap();
        let k2 = derive_key("correct horse", &salt, p).unwrap();
        let k3 = derive_key("correct horse", &random_salt(), p).unwrap();
        assert_eq!(k1.bytes, k2.bytes);
        assert_ne!(k1.bytes, k3.bytes);
        let hostile = KdfParams {
            memory_kib: u32::MAX,
            ..p
        };
        assert!(derive_key("x", &salt, hostile).is_err());
    }

    #[test]
    fn a_wrapped_key_unwraps_only_with_its_key_and_aad() {
        let (kek, dek) = (SealKey::generate(), SealKey::generate());
        let wrapped = kek.wrap(b"store-1", &dek);
        assert!(
            !contains_bytes(&wrapped, &dek.bytes),
            "the key is not in clear"
        );
        assert!(kek.unwrap(b"store-1", &wrapped).unwrap().same_as(&dek));
        assert!(matches!(
            kek.unwrap(b"store-2", &wrapped),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            SealKey::generate().unwrap(b"store-1", &wrapped),
            Err(StoreError::Corrupt { .. })
        ));
        // Something sealed that is not a key is refused, not truncated or padded.
        let not_a_key = kek.seal(b"store-1", &[1; KEY_LEN - 1]);
        assert!(matches!(
            kek.unwrap(b"store-1", &not_a_key),
            Err(StoreError::Corrupt { .. })
        ));
    }

    fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn debug_never_prints_secrets() {
        let key = SealKey::from_bytes([7; KEY_LEN]);
        assert_eq!(format!("{key:?}"), "SealKey(<redacted>)");
        let source = KeySource::Passphrase("hunter2".into());
        assert!(!format!("{source:?}").contains("hunter2"));
    }

    #[test]
    fn key_file_is_created_private_reused_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        KeySource::create_key_file(&path).unwrap();
        let first = read_key_file(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A second call keeps the existing key.
        KeySource::create_key_file(&path).unwrap();
        assert_eq!(read_key_file(&path).unwrap().bytes, first.bytes);

        let short = dir.path().join("short.key");
        fs::write(&short, [1u8; 31]).unwrap();
        assert!(matches!(read_key_file(&short), Err(StoreError::KeyFile(_))));
        assert!(matches!(
            KeySource::create_key_file(&short),
            Err(StoreError::KeyFile(_))
        ));
        let long = dir.path().join("long.key");
        fs::write(&long, [1u8; 33]).unwrap();
        assert!(matches!(read_key_file(&long), Err(StoreError::KeyFile(_))));
        assert!(matches!(
            read_key_file(&dir.path().join("missing.key")),
            Err(StoreError::KeyFile(_))
        ));
    }
}
