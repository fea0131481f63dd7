//! A store's header: which format it is in, how its data key is obtained, and the check that a
//! key opens it.
//!
//! Two formats exist, and this version reads both:
//!
//! - **Format 1** (before key wrapping): the key from the [`KeySource`] *is* the data key. For a
//!   passphrase that means `argon2id(passphrase, salt, params)` seals every value, so the cost of
//!   guessing the passphrase is fixed for the store's life, and changing it would mean re-sealing
//!   everything. Fields: `format` = 1, `store_id`, `kdf`, `verifier` (a known constant sealed
//!   under the data key, bound to the `kdf` field).
//! - **Format 2** (key wrapping): the data key is 32 random bytes; the key from the source is a
//!   key-encryption key that *wraps* it. Fields: `format` = 2, `store_id`, `kdf` (how the
//!   key-encryption key is obtained), `wrapped_key` (the data key sealed under the key-encryption
//!   key, bound to `store_id` and `kdf`), `seq_base` (added to sled's id generator: see
//!   [`Unlocked::seq_base`]) and `verifier` (the constant sealed under the data key, bound to
//!   `seq_base`).
//!
//! Every header is written in one sled batch, so a crash leaves a whole header or none. Unlocking
//! only reads: a wrong passphrase changes nothing.

use super::{
    engine_error, FORMAT_DIRECT, FORMAT_WRAPPED, HEADER_FORMAT, HEADER_KDF, HEADER_SEQ_BASE,
    HEADER_STORE_ID, HEADER_VERIFIER, HEADER_WRAPPED_KEY, STORE_ID_LEN, TAG_VERIFIER, TAG_WRAP,
    TREE_CHUNKS, TREE_HEADER, TREE_LOGS, TREE_LOG_HEADS, TREE_META, VERIFIER_PLAINTEXT,
};
use crate::store::crypto::{derive_key, random_salt, read_key_file, SALT_LEN};
use crate::store::{KdfParams, KeySource, SealKey, StoreError};

/// How the key from a [`KeySource`] is obtained, as recorded in the header (field `kdf`). In format
/// 1 that key is the data key; in format 2 it is the key-encryption key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::store) enum KdfHeader {
    /// The key is supplied whole (a key file or a raw key).
    SuppliedKey,
    /// The key is derived from a passphrase with argon2id.
    Argon2id {
        salt: [u8; SALT_LEN],
        params: KdfParams,
    },
}

impl KdfHeader {
    pub(super) fn encode(&self) -> Vec<u8> {
        match self {
            KdfHeader::SuppliedKey => vec![0],
            KdfHeader::Argon2id { salt, params } => {
                let mut out = vec![1];
                out.extend_from_slice(salt);
                out.extend_from_slice(&params.memory_kib.to_be_bytes());
                out.extend_from_slice(&params.iterations.to_be_bytes());
                out.extend_from_slice(&params.parallelism.to_be_bytes());
                out
            }
        }
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<KdfHeader> {
        match bytes.split_first()? {
            (0, []) => Some(KdfHeader::SuppliedKey),
            (1, rest) if rest.len() == SALT_LEN + 12 => {
                let (salt, costs) = rest.split_at(SALT_LEN);
                let word = |i: usize| -> Option<u32> {
                    Some(u32::from_be_bytes(
                        costs.get(i * 4..i * 4 + 4)?.try_into().ok()?,
                    ))
                };
                Some(KdfHeader::Argon2id {
                    salt: salt.try_into().ok()?,
                    params: KdfParams {
                        memory_kib: word(0)?,
                        iterations: word(1)?,
                        parallelism: word(2)?,
                    },
                })
            }
            _ => None,
        }
    }

    /// The argon2id parameters, for a passphrase store.
    pub(super) fn params(&self) -> Option<KdfParams> {
        match self {
            KdfHeader::SuppliedKey => None,
            KdfHeader::Argon2id { params, .. } => Some(*params),
        }
    }
}

/// What an unlocked store needs to read and write its values.
pub(in crate::store) struct Unlocked {
    /// [`FORMAT_DIRECT`] or [`FORMAT_WRAPPED`].
    pub(in crate::store) format: u8,
    /// Random per store (and per re-key); part of every value's associated data.
    pub(in crate::store) store_id: [u8; STORE_ID_LEN],
    /// The key every value is sealed with.
    pub(in crate::store) data_key: SealKey,
    /// Added to sled's id generator to make a chunk's sequence number. A re-keyed store is a new
    /// sled database whose generator starts again at 0, but sequence numbers must keep growing
    /// across the re-key (sync states remember "through chunk 41", even of removed cases), so the
    /// new store starts past every number the old one handed out. 0 for a store never re-keyed.
    pub(in crate::store) seq_base: u64,
    /// How the source's key is obtained.
    pub(in crate::store) kdf: KdfHeader,
}

/// Whether the header has been written (a store that crashed on its first open has none).
pub(super) fn present(db: &sled::Db) -> Result<bool, StoreError> {
    let exists = db
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == TREE_HEADER.as_bytes());
    Ok(exists
        && db
            .open_tree(TREE_HEADER)
            .and_then(|h| h.contains_key(HEADER_VERIFIER))
            .map_err(engine_error)?)
}

/// The format a store's header declares, read without any key; `None` if it has no header.
#[cfg(test)]
pub(super) fn format_of(db: &sled::Db) -> Result<Option<u8>, StoreError> {
    if !present(db)? {
        return Ok(None);
    }
    let format = db
        .open_tree(TREE_HEADER)
        .and_then(|h| h.get(HEADER_FORMAT))
        .map_err(engine_error)?;
    Ok(format.and_then(|f| f.first().copied()))
}

/// Check `source` against an existing store's header and return its keys. Reads only.
///
/// A wrong passphrase, another key file, or a source of the wrong kind is
/// [`StoreError::WrongPassphrase`] in both formats; a damaged header is [`StoreError::Corrupt`].
pub(super) fn unlock(db: &sled::Db, source: &KeySource) -> Result<Unlocked, StoreError> {
    let header = db.open_tree(TREE_HEADER).map_err(engine_error)?;
    unlock_fields(
        |name| Ok(header.get(name).map_err(engine_error)?.map(|v| v.to_vec())),
        source,
    )
}

/// [`unlock`] for any engine: `get` reads one header field by name. Reads only.
pub(in crate::store) fn unlock_fields(
    get: impl Fn(&[u8]) -> Result<Option<Vec<u8>>, StoreError>,
    source: &KeySource,
) -> Result<Unlocked, StoreError> {
    let field = |name: &[u8]| -> Result<Vec<u8>, StoreError> {
        get(name)?.ok_or_else(|| damaged(&format!("{} is missing", String::from_utf8_lossy(name))))
    };
    let format = match field(HEADER_FORMAT)?.as_slice() {
        [FORMAT_DIRECT] => FORMAT_DIRECT,
        [FORMAT_WRAPPED] => FORMAT_WRAPPED,
        other => {
            return Err(StoreError::Engine(format!(
                "this store has format {other:?}, but this version of Polyphony reads formats \
                 {FORMAT_DIRECT} and {FORMAT_WRAPPED}; update Polyphony to open it"
            )))
        }
    };
    let store_id: [u8; STORE_ID_LEN] = field(HEADER_STORE_ID)?
        .as_slice()
        .try_into()
        .map_err(|_| damaged("store id has the wrong length"))?;
    let kdf_bytes = field(HEADER_KDF)?;
    let kdf = KdfHeader::decode(&kdf_bytes).ok_or_else(|| damaged("unreadable KDF parameters"))?;
    let verifier = field(HEADER_VERIFIER)?;
    let source_key = key_from_source(source, kdf)?;

    let (data_key, seq_base, verifier_aad) = if format == FORMAT_DIRECT {
        (source_key, 0, verifier_aad_direct(&store_id, &kdf_bytes))
    } else {
        // An AEAD cannot tell a wrong key from a damaged wrapped key; the wrong passphrase is by
        // far the likelier, and the message for it tells the user what to do.
        let data_key = source_key
            .unwrap(
                &wrap_aad(&store_id, &kdf_bytes),
                &field(HEADER_WRAPPED_KEY)?,
            )
            .map_err(|_| {
                tracing::info!("the key given does not unwrap this store's data key");
                StoreError::WrongPassphrase
            })?;
        let seq_base = u64::from_be_bytes(
            field(HEADER_SEQ_BASE)?
                .as_slice()
                .try_into()
                .map_err(|_| damaged("seq_base has the wrong length"))?,
        );
        (
            data_key,
            seq_base,
            verifier_aad_wrapped(&store_id, seq_base),
        )
    };
    match data_key.open(&verifier_aad, &verifier) {
        Ok(plain) if plain == VERIFIER_PLAINTEXT => Ok(Unlocked {
            format,
            store_id,
            data_key,
            seq_base,
            kdf,
        }),
        // In format 2 the key-encryption key was right (it unwrapped), so a failing verifier means
        // the header was altered, not that the passphrase was wrong.
        _ if format == FORMAT_WRAPPED => Err(damaged(
            "the data key does not match the store's verifier (the header was altered)",
        )),
        _ => {
            tracing::info!("the key given does not open this store");
            Err(StoreError::WrongPassphrase)
        }
    }
}

/// The key `source` gives for a header recorded as `kdf`.
fn key_from_source(source: &KeySource, kdf: KdfHeader) -> Result<SealKey, StoreError> {
    match (source, kdf) {
        (KeySource::Passphrase(passphrase), KdfHeader::Argon2id { salt, params }) => {
            if params.is_weaker_than_recommended() {
                tracing::warn!(
                    ?params,
                    "this store's passphrase is stretched with parameters weaker than today's (a store made by an older version, or for tests)"
                );
            }
            derive_key(passphrase, &salt, params).map_err(|detail| damaged(&detail))
        }
        (KeySource::KeyFile(path), KdfHeader::SuppliedKey) => read_key_file(path),
        (KeySource::Raw(key), KdfHeader::SuppliedKey) => Ok(key.clone()),
        (source, kdf) => {
            tracing::warn!(
                given = source.kind_name(),
                expected = match kdf {
                    KdfHeader::SuppliedKey => "key file or raw key",
                    KdfHeader::Argon2id { .. } => "passphrase",
                },
                "the store was created with another kind of key"
            );
            Err(StoreError::WrongPassphrase)
        }
    }
}

/// A header's fields, name and value, in the order they are written.
pub(in crate::store) type HeaderFields = Vec<(&'static [u8], Vec<u8>)>;

/// The header of a store about to be written (a new store, or the new copy made by a re-key): a
/// fresh random data key, wrapped under the key-encryption key from a [`KeySource`].
pub(in crate::store) struct NewHeader {
    unlocked: Unlocked,
    key_encryption_key: SealKey,
}

impl NewHeader {
    /// Draw a store id and a data key, and obtain the key-encryption key from `source` (argon2id
    /// with `params` and a new salt, for a passphrase). `seq_base`: see [`Unlocked::seq_base`].
    pub(in crate::store) fn new(
        source: &KeySource,
        params: KdfParams,
        seq_base: u64,
    ) -> Result<NewHeader, StoreError> {
        let (kdf, key_encryption_key) = match source {
            KeySource::Passphrase(passphrase) => {
                let salt = random_salt();
                let key = derive_key(passphrase, &salt, params).map_err(|detail| {
                    StoreError::InvalidRequest(format!("cannot make a store key: {detail}"))
                })?;
                (KdfHeader::Argon2id { salt, params }, key)
            }
            KeySource::KeyFile(path) => (KdfHeader::SuppliedKey, read_key_file(path)?),
            KeySource::Raw(key) => (KdfHeader::SuppliedKey, key.clone()),
        };
        Ok(NewHeader {
            unlocked: Unlocked {
                format: FORMAT_WRAPPED,
                store_id: rand::random(),
                data_key: SealKey::generate(),
                seq_base,
                kdf,
            },
            key_encryption_key,
        })
    }

    /// The keys the store will be unlocked with once this header is written.
    pub(super) fn unlocked(&self) -> &Unlocked {
        &self.unlocked
    }

    /// Write the header in one batch, creating every tree first so that a later open never has
    /// to create one before the key is checked. Not flushed: the caller decides when.
    pub(super) fn write(self, db: &sled::Db) -> Result<Unlocked, StoreError> {
        let mut batch = sled::Batch::default();
        let (unlocked, fields) = self.into_fields();
        for (name, value) in fields {
            batch.insert(name, value);
        }
        write_batch(db, batch)?;
        Ok(unlocked)
    }

    /// The header's fields, name and value, for an engine to write all at once (or none), and
    /// the keys the store is unlocked with once they are written.
    pub(in crate::store) fn into_fields(self) -> (Unlocked, HeaderFields) {
        let u = &self.unlocked;
        let kdf_bytes = u.kdf.encode();
        let wrapped = self
            .key_encryption_key
            .wrap(&wrap_aad(&u.store_id, &kdf_bytes), &u.data_key);
        let verifier = u.data_key.seal(
            &verifier_aad_wrapped(&u.store_id, u.seq_base),
            VERIFIER_PLAINTEXT,
        );
        let fields = vec![
            (HEADER_FORMAT, vec![FORMAT_WRAPPED]),
            (HEADER_STORE_ID, u.store_id.to_vec()),
            (HEADER_KDF, kdf_bytes),
            (HEADER_WRAPPED_KEY, wrapped),
            (HEADER_SEQ_BASE, u.seq_base.to_be_bytes().to_vec()),
            (HEADER_VERIFIER, verifier),
        ];
        (self.unlocked, fields)
    }
}

/// **Test only.** Write a format-1 header, as stores were made before key wrapping: the source's
/// key is the data key. Tests use it to make old stores of any size; the committed fixture
/// (`client-core/fixtures/profile-format1`) shows it matches what the old code wrote.
#[cfg(test)]
pub(super) fn write_format1(
    db: &sled::Db,
    source: &KeySource,
    params: KdfParams,
) -> Result<Unlocked, StoreError> {
    let NewHeader {
        key_encryption_key,
        unlocked,
    } = NewHeader::new(source, params, 0)?;
    let kdf_bytes = unlocked.kdf.encode();
    let verifier = key_encryption_key.seal(
        &verifier_aad_direct(&unlocked.store_id, &kdf_bytes),
        VERIFIER_PLAINTEXT,
    );
    let mut batch = sled::Batch::default();
    batch.insert(HEADER_FORMAT, &[FORMAT_DIRECT]);
    batch.insert(HEADER_STORE_ID, &unlocked.store_id);
    batch.insert(HEADER_KDF, kdf_bytes);
    batch.insert(HEADER_VERIFIER, verifier);
    write_batch(db, batch)?;
    Ok(Unlocked {
        format: FORMAT_DIRECT,
        data_key: key_encryption_key,
        ..unlocked
    })
}

fn write_batch(db: &sled::Db, batch: sled::Batch) -> Result<(), StoreError> {
    for name in [TREE_CHUNKS, TREE_META, TREE_LOGS, TREE_LOG_HEADS] {
        db.open_tree(name).map_err(engine_error)?;
    }
    db.open_tree(TREE_HEADER)
        .and_then(|header| header.apply_batch(batch))
        .map_err(engine_error)
}

fn damaged(detail: &str) -> StoreError {
    StoreError::Corrupt {
        what: "the store header".into(),
        detail: detail.into(),
    }
}

/// Format 1: binding the KDF parameters means a header edited to other parameters fails the check.
fn verifier_aad_direct(store_id: &[u8; STORE_ID_LEN], kdf_bytes: &[u8]) -> Vec<u8> {
    let mut aad = store_id.to_vec();
    aad.push(TAG_VERIFIER);
    aad.extend_from_slice(kdf_bytes);
    aad
}

/// Format 2: the verifier proves the unwrapped key is this store's, and pins `seq_base` (an
/// edited `seq_base` would hand out sequence numbers twice).
fn verifier_aad_wrapped(store_id: &[u8; STORE_ID_LEN], seq_base: u64) -> Vec<u8> {
    let mut aad = store_id.to_vec();
    aad.push(TAG_VERIFIER);
    aad.push(FORMAT_WRAPPED);
    aad.extend_from_slice(&seq_base.to_be_bytes());
    aad
}

/// The wrapped key is bound to its store and to how its key-encryption key is derived: a wrapped
/// key copied into another store's header, or a header edited to cheaper parameters, does not
/// unwrap.
fn wrap_aad(store_id: &[u8; STORE_ID_LEN], kdf_bytes: &[u8]) -> Vec<u8> {
    let mut aad = store_id.to_vec();
    aad.push(TAG_WRAP);
    aad.extend_from_slice(kdf_bytes);
    aad
}
