//! Letters and documents attached to a case or a meeting (schema 3): a referral letter, a GP
//! letter, a document the person brought.
//!
//! The file's bytes never go inside the automerge document: they are kept beside it, addressed by
//! their SHA-256 ([`crate::BlobHash`]), sealed in the store like every other value, and synced on
//! streams of their own ([`crate::net`]). The document holds what a person reads in a list (what
//! it is, its title, the file's name, type and size, who attached it and when, the meeting it
//! belongs to) and the address, so every device can ask for the bytes and check what it receives.
//!
//! An attachment is never deleted: a wrong one is marked entered in error, and its bytes stay.
//!
//! In the document: `attachments` at the root, entries keyed by id, each with `kind`, `title`,
//! `file_name`, `media_type`, `size` (bytes), `sha256` (64 lowercase hex digits) and an optional
//! `meeting`. A case created by schema 3 has the map from the start; an older case gets it with
//! its first attachment, and every concurrent map is read.

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use serde::{Deserialize, Serialize};

use super::doc::CaseDoc;
use super::read::{get_str, instant, map_at};
use super::schema::keys;
use super::types::*;
use super::view::EntryMeta;
use super::ModelError;
use crate::{BlobHash, EntryId};

/// The largest file that can be attached: 20 MiB. A letter or a photographed document is far
/// smaller; the bound keeps one attachment from filling a laptop or a sync.
pub const MAX_ATTACHMENT_BYTES: u64 = 20 * 1024 * 1024;

/// The kinds of file that can be attached, by the ending of the file's name: documents, images
/// and office files. Anything else is refused with this list, so a practitioner knows what to
/// convert it to.
pub const MEDIA_TYPES: &[(&str, &str)] = &[
    ("pdf", "application/pdf"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("png", "image/png"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("heic", "image/heic"),
    ("tif", "image/tiff"),
    ("tiff", "image/tiff"),
    ("txt", "text/plain"),
    ("rtf", "application/rtf"),
    ("doc", "application/msword"),
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    ("odt", "application/vnd.oasis.opendocument.text"),
    ("xls", "application/vnd.ms-excel"),
    (
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    ("ods", "application/vnd.oasis.opendocument.spreadsheet"),
    ("ppt", "application/vnd.ms-powerpoint"),
    (
        "pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
    ("eml", "message/rfc822"),
    ("msg", "application/vnd.ms-outlook"),
];

/// The media type of a file by its name's ending, or why it cannot be attached.
pub fn media_type_for(file_name: &str) -> Result<&'static str, ModelError> {
    let ending = file_name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    MEDIA_TYPES
        .iter()
        .find(|(e, _)| *e == ending)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let mut endings: Vec<&str> = MEDIA_TYPES.iter().map(|(e, _)| *e).collect();
            endings.dedup();
            ModelError::Attachment(format!(
                "'{file_name}' is not a kind of file that can be attached: attach a document, \
                 an image or an office file (a name ending {})",
                endings.join(", ")
            ))
        })
}

/// A file to attach, described (its bytes are kept by the caller: see [`crate::profile`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAttachment {
    /// What it is.
    pub kind: AttachmentKind,
    /// What a person reads in the list ("Referral letter from Dr Shah").
    pub title: String,
    /// The file's name as it was given.
    pub file_name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The address of its bytes.
    pub hash: BlobHash,
    /// The meeting it belongs to, if any.
    pub meeting: Option<EntryId>,
}

/// An attachment, as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentView {
    /// Attribution (who attached it, when, and any mark of error).
    #[serde(flatten)]
    pub meta: EntryMeta,
    /// What it is.
    pub kind: Stored<AttachmentKind>,
    /// Its title.
    pub title: String,
    /// The file's name.
    pub file_name: String,
    /// The file's media type.
    pub media_type: String,
    /// Its size in bytes (0 when unreadable).
    pub size: u64,
    /// The address of its bytes (None when unreadable, or withheld as another person's).
    pub sha256: Option<BlobHash>,
    /// The meeting it belongs to.
    pub meeting: Option<EntryId>,
}

impl CaseDoc {
    /// Describe an attached file in the record. Returns its id. The caller keeps the bytes beside
    /// the document under `new.hash` (the profile does both at once).
    pub fn add_attachment(&mut self, new: &NewAttachment) -> Result<EntryId, ModelError> {
        let title = new.title.trim();
        if title.is_empty() {
            return Err(ModelError::Required {
                field: "attachment title",
            });
        }
        super::doc::check_short("attachment title", title)?;
        let file_name = new.file_name.trim();
        if file_name.is_empty() {
            return Err(ModelError::Required { field: "file name" });
        }
        super::doc::check_short("file name", file_name)?;
        let media_type = media_type_for(file_name)?;
        check_size(new.size)?;
        if let Some(m) = new.meeting {
            self.live_entry(keys::MEETINGS, "meeting", &m)?;
        }
        let id = EntryId::random();
        let what = format!("attach {}", new.kind.label().to_lowercase());
        self.write(&what, |d, a, t| {
            let map = match map_at(d, &ROOT, keys::ATTACHMENTS) {
                Some(m) => m,
                None => d.put_object(ROOT, keys::ATTACHMENTS, ObjType::Map)?,
            };
            let e = super::doc::new_entry(d, &map, &id, a, t)?;
            d.put(&e, keys::KIND, new.kind.as_str())?;
            d.put(&e, keys::TITLE, title)?;
            d.put(&e, keys::FILE_NAME, file_name)?;
            d.put(&e, keys::MEDIA_TYPE, media_type)?;
            d.put(&e, keys::SIZE, ScalarValue::Uint(new.size))?;
            d.put(&e, keys::SHA256, new.hash.to_string())?;
            if let Some(m) = new.meeting {
                d.put(&e, keys::MEETING, m.to_string())?;
            }
            Ok(id)
        })
    }
}

/// Refuse an empty file, or one over [`MAX_ATTACHMENT_BYTES`], in words a practitioner can act on.
pub fn check_size(size: u64) -> Result<(), ModelError> {
    if size == 0 {
        return Err(ModelError::Attachment(
            "the file is empty: nothing to attach".into(),
        ));
    }
    if size > MAX_ATTACHMENT_BYTES {
        return Err(ModelError::Attachment(format!(
            "the file is {:.1} MB: at most {} MB can be attached (scan at a lower resolution, or \
             split it)",
            size as f64 / (1024.0 * 1024.0),
            MAX_ATTACHMENT_BYTES >> 20
        )));
    }
    Ok(())
}

/// Every concurrent `attachments` map.
pub(crate) fn attachment_maps(d: &impl ReadDoc) -> Vec<ObjId> {
    d.get_all(ROOT, keys::ATTACHMENTS)
        .unwrap_or_default()
        .into_iter()
        .filter(|(v, _)| matches!(v, Value::Object(ObjType::Map)))
        .map(|(_, id)| id)
        .collect()
}

fn size(d: &impl ReadDoc, e: &ObjId) -> u64 {
    match d.get(e, keys::SIZE) {
        Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
            ScalarValue::Uint(n) => *n,
            ScalarValue::Int(n) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        },
        _ => 0,
    }
}

fn attachment(d: &impl ReadDoc, id: EntryId, e: &ObjId) -> AttachmentView {
    AttachmentView {
        meta: super::view::meta(d, id, e),
        kind: Stored::read(get_str(d, e, keys::KIND)),
        title: get_str(d, e, keys::TITLE).unwrap_or_default(),
        file_name: get_str(d, e, keys::FILE_NAME).unwrap_or_default(),
        media_type: get_str(d, e, keys::MEDIA_TYPE).unwrap_or_default(),
        size: size(d, e),
        sha256: get_str(d, e, keys::SHA256).and_then(|h| h.parse().ok()),
        meeting: get_str(d, e, keys::MEETING).and_then(|m| m.parse().ok()),
    }
}

/// The attachments as the document holds them, oldest first.
pub(super) fn attachments(d: &impl ReadDoc) -> Vec<AttachmentView> {
    let mut out: Vec<AttachmentView> = Vec::new();
    for m in attachment_maps(d) {
        for k in d.keys(&m) {
            let (Ok(id), Some(e)) = (k.parse::<EntryId>(), map_at(d, &m, &k)) else {
                continue;
            };
            if out.iter().any(|a| a.meta.id == id) {
                continue;
            }
            out.push(attachment(d, id, &e));
        }
    }
    out.sort_by_key(|a| (instant(&a.meta.created_at), a.meta.id));
    out
}

/// Every attachment entry of every concurrent map with each address it names (every concurrent
/// value): the one walk [`referenced_blobs`] and [`declared_size`] share.
fn named_addresses(d: &impl ReadDoc) -> Vec<(ObjId, BlobHash)> {
    let mut out = Vec::new();
    for m in attachment_maps(d) {
        for k in d.keys(&m) {
            let Some(e) = map_at(d, &m, &k) else { continue };
            for (value, _) in d.get_all(&e, keys::SHA256).unwrap_or_default() {
                if let Value::Scalar(s) = value {
                    if let ScalarValue::Str(h) = s.as_ref() {
                        if let Ok(h) = h.parse::<BlobHash>() {
                            out.push((e.clone(), h));
                        }
                    }
                }
            }
        }
    }
    out
}

/// Every attachment address the document names, entries in error included (their bytes are
/// kept: nothing is deleted). What a peer may ask for, and what a device fetches.
pub fn referenced_blobs(d: &impl ReadDoc) -> Vec<BlobHash> {
    let mut out: Vec<BlobHash> = Vec::new();
    for (_, h) in named_addresses(d) {
        if !out.contains(&h) {
            out.push(h);
        }
    }
    out
}

/// Every size the record gives the attachment at `hash` (one per entry naming it), read from the
/// document without building a view; empty when no entry names it. Entries in error count, and so
/// do entries on the wrong person's record unless `shown_only`: their bytes are kept and may go up
/// to the server, but are sent to no device. Bytes are taken when any entry gives their size: a
/// second entry naming the same address with another size (a bad device's) cannot make the real
/// file unacceptable.
pub fn declared_sizes(d: &impl ReadDoc, hash: &BlobHash, shown_only: bool) -> Vec<u64> {
    named_addresses(d)
        .into_iter()
        .filter(|(e, h)| h == hash && !(shown_only && on_wrong_record(d, e)))
        .map(|(e, _)| size(d, &e))
        .collect()
}

/// Whether an entry is marked as recorded on the wrong person's record.
fn on_wrong_record(d: &impl ReadDoc, e: &ObjId) -> bool {
    map_at(d, e, keys::WRONG_PERSON).is_some()
}

/// The addresses a device fetches: those named by an entry not on the wrong person's record
/// (another person's letter is kept, and goes nowhere new).
pub fn shown_blobs(d: &impl ReadDoc) -> Vec<BlobHash> {
    let mut out: Vec<BlobHash> = Vec::new();
    for (e, h) in named_addresses(d) {
        if !on_wrong_record(d, &e) && !out.contains(&h) {
            out.push(h);
        }
    }
    out
}

/// An attachment on the wrong person's record (or with a mark this version cannot read): nothing
/// of it, not even its address.
pub(super) fn withhold(items: &mut [AttachmentView], ids: &mut Vec<String>) {
    for a in items.iter_mut().filter(|a| a.meta.withheld()) {
        ids.push(a.meta.id.to_string());
        a.kind = Stored::Missing;
        a.title.clear();
        a.file_name.clear();
        a.media_type.clear();
        a.size = 0;
        a.sha256 = None;
        a.meeting = None;
    }
}

/// A size in bytes as a person reads it ("1.4 MB", "880 KB").
pub fn human_size(bytes: u64) -> String {
    if bytes >= 1024 * 1024 {
        format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
    } else if bytes >= 1024 {
        format!("{} KB", bytes.div_ceil(1024))
    } else {
        format!("{bytes} bytes")
    }
}
