//! Attaching files to a case, reading them back, and syncing their bytes with the borough
//! server on streams of their own ([`crate::net::blobs`]).

use serde::{Deserialize, Serialize};

use super::{DeviceBooks, Profile, ProfileError};
use crate::model::attachments::{check_size, media_type_for, referenced_blobs};
use crate::model::{AttachmentKind, AttachmentView, NewAttachment};
use crate::net::{self, NetError};
use crate::store::{Store, StoreError};
use crate::{BlobHash, CaseId, EntryId};

/// Where an attachment's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobState {
    /// On this device, and durable on the borough server.
    Saved,
    /// On this device only: uploaded at the next sync.
    OnlyHere,
    /// Not on this device yet: fetched at the next sync.
    NotHere,
}

impl BlobState {
    /// As a practitioner reads it.
    pub fn label(self) -> &'static str {
        match self {
            BlobState::Saved => "saved on the borough server",
            BlobState::OnlyHere => "on this device only: it is uploaded at the next sync",
            BlobState::NotHere => "not on this device yet: it is fetched at the next sync",
        }
    }
}

/// What a sync did with attachments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobReport {
    /// Attachments uploaded and acknowledged.
    pub sent: usize,
    /// Attachments fetched and kept.
    pub received: usize,
    /// Attachments that could not be moved this time, with why (they are tried again).
    pub failed: Vec<String>,
    /// The cases of those attachments (for a caller that tries them again; not reported).
    #[serde(skip)]
    pub failed_cases: Vec<CaseId>,
}

/// A file as the practitioner gives it.
#[derive(Debug, Clone)]
pub struct AttachFile<'a> {
    /// What it is.
    pub kind: AttachmentKind,
    /// Its title; the file's name when empty.
    pub title: &'a str,
    /// The file's name.
    pub file_name: &'a str,
    /// Its bytes.
    pub content: &'a [u8],
    /// The meeting it belongs to.
    pub meeting: Option<EntryId>,
}

impl Profile {
    /// Attach a file to a case: its bytes kept (sealed) beside the case and its description in
    /// the record, both on disk when this returns. Refused, with nothing written, for a kind of
    /// file or a size that cannot be attached.
    pub fn attach(&mut self, case: CaseId, file: AttachFile<'_>) -> Result<EntryId, ProfileError> {
        let new = self.keep_bytes(case, &file)?;
        self.edit(case, |doc| doc.add_attachment(&new))
    }

    /// Check a file can be attached and keep its bytes (sealed) beside the case; its description,
    /// to write into the record. The bytes come first: the edit that writes the description
    /// flushes, so both are durable together, and a record never names bytes this device lost.
    /// Bytes whose description then fails stay unnamed (and harmless).
    pub(super) fn keep_bytes(
        &mut self,
        case: CaseId,
        file: &AttachFile<'_>,
    ) -> Result<NewAttachment, ProfileError> {
        check_size(file.content.len() as u64)?;
        media_type_for(file.file_name)?;
        let hash = BlobHash::of(file.content);
        let title = if file.title.trim().is_empty() {
            file.file_name
        } else {
            file.title
        };
        let new = NewAttachment {
            kind: file.kind,
            title: title.to_string(),
            file_name: file.file_name.to_string(),
            size: file.content.len() as u64,
            hash,
            meeting: file.meeting,
        };
        self.store.put_blob(&case, &hash, file.content)?;
        Ok(new)
    }

    /// An attachment's description and bytes, for a practitioner to open (recorded as a read of
    /// the case). None for the bytes while they are not on this device yet.
    pub fn open_attachment(
        &mut self,
        case: CaseId,
        id: EntryId,
    ) -> Result<(AttachmentView, Option<Vec<u8>>), ProfileError> {
        let view = self.lookup(case)?;
        let a = view
            .attachments
            .into_iter()
            .find(|a| a.meta.id == id)
            .ok_or_else(|| ProfileError::UnknownEntry {
                case: case.to_string(),
                id: id.to_string(),
            })?;
        let Some(hash) = a.sha256 else {
            // Withheld (another person's), or unreadable: nothing to open.
            return Ok((a, None));
        };
        let bytes = self.store.get_blob(&case, &hash)?;
        if bytes.is_some() {
            self.record_read(case, &format!("attachment {}", a.meta.id))?;
        }
        Ok((a, bytes))
    }

    /// Where an attachment's bytes are.
    pub fn blob_state(&self, case: CaseId, hash: &BlobHash) -> Result<BlobState, ProfileError> {
        Ok(self.books().blob_state(&case, hash)?)
    }

    /// Attachments to move at the next sync: bytes held here the server has not acknowledged
    /// (to upload), and bytes the records name that are not here (to fetch; none while the device
    /// is being revoked: it uploads what it holds and fetches nothing).
    pub fn blob_work(&mut self) -> Result<BlobWork, ProfileError> {
        let mut work = BlobWork::default();
        let fetching = !self.being_revoked()?;
        let store = self.store.clone();
        let books = DeviceBooks::new(&*store);
        for case in self.case_ids()? {
            books.blob_work_in(case, self.load(case)?, fetching, &mut work)?;
        }
        Ok(work)
    }

    /// Move `work` on a connection to a server that takes attachments ([`move_blobs`]).
    pub(super) async fn exchange_blobs(
        &mut self,
        addr: &str,
        conn: &quinn::Connection,
        work: BlobWork,
    ) -> Result<BlobReport, ProfileError> {
        let store = self.store.clone();
        move_blobs(&*store, addr, conn, work).await
    }
}

impl DeviceBooks<'_> {
    /// Where an attachment's bytes are.
    pub fn blob_state(&self, case: &CaseId, hash: &BlobHash) -> Result<BlobState, StoreError> {
        if !self.store().has_blob(case, hash)? {
            return Ok(BlobState::NotHere);
        }
        Ok(if self.blob_saved(case, hash)? {
            BlobState::Saved
        } else {
            BlobState::OnlyHere
        })
    }

    /// Add what `case` (its document `doc`) has to move to `work`.
    pub fn blob_work_in(
        &self,
        case: CaseId,
        doc: &automerge::AutoCommit,
        fetching: bool,
        work: &mut BlobWork,
    ) -> Result<(), StoreError> {
        let shown = crate::model::attachments::shown_blobs(doc);
        for hash in referenced_blobs(doc) {
            match self.blob_state(&case, &hash)? {
                BlobState::Saved => {}
                BlobState::OnlyHere => work.upload.push((case, hash)),
                // Not another person's letter, recorded here by mistake: it goes nowhere new.
                BlobState::NotHere if fetching && shown.contains(&hash) => {
                    work.fetch.push((case, hash))
                }
                BlobState::NotHere => {}
            }
        }
        Ok(())
    }

    /// What these cases have to move, each read from the store (a case that cannot be read is
    /// left out: nothing of it moves, and the next sync tries again).
    pub fn blob_work(
        &self,
        cases: impl IntoIterator<Item = CaseId>,
        fetching: bool,
    ) -> Result<BlobWork, StoreError> {
        let mut work = BlobWork::default();
        for case in cases {
            if let Ok(Some((doc, _))) = self.load_doc(&case) {
                self.blob_work_in(case, &doc, fetching, &mut work)?;
            }
        }
        Ok(work)
    }
}

/// Upload and fetch attachments on a connection to a server that takes them: each upload
/// recorded as saved only once the server says it is durable; each download kept only when it
/// hashes to its address (and then saved: it came from the server). A file that fails is
/// reported and tried again next time; the rest go on, unless the connection is lost. Needs only
/// the store: the app's background sync runs it without holding the profile.
pub async fn move_blobs(
    store: &dyn Store,
    addr: &str,
    conn: &quinn::Connection,
    work: BlobWork,
) -> Result<BlobReport, ProfileError> {
    let books = DeviceBooks::new(store);
    let mut report = BlobReport::default();
    for (case, hash) in work.upload {
        let Some(bytes) = store.get_blob(&case, &hash)? else {
            continue;
        };
        match net::blobs::upload(addr, conn, case, hash, &bytes).await {
            Ok(()) => {
                books.note_blob_saved(&case, &hash)?;
                report.sent += 1;
            }
            Err(e) => fail(&mut report, case, "upload", e)?,
        }
    }
    for (case, hash) in work.fetch {
        match net::blobs::download(addr, conn, case, hash).await {
            Ok(bytes) => {
                store.put_blob(&case, &hash, &bytes)?;
                store.flush()?;
                books.note_blob_saved(&case, &hash)?;
                report.received += 1;
            }
            Err(e) => fail(&mut report, case, "fetch", e)?,
        }
    }
    Ok(report)
}

/// Note a file that could not move; a lost connection ends the exchange (the rest would fail
/// the same way).
fn fail(
    report: &mut BlobReport,
    case: CaseId,
    what: &str,
    e: NetError,
) -> Result<(), ProfileError> {
    if matches!(e, NetError::Lost(_) | NetError::Unreachable { .. }) {
        return Err(e.into());
    }
    report.failed.push(format!(
        "could not {what} an attachment of case {case}: {e}"
    ));
    if !report.failed_cases.contains(&case) {
        report.failed_cases.push(case);
    }
    Ok(())
}

/// Attachments a sync has to move.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobWork {
    /// Held here, not acknowledged by the server.
    pub upload: Vec<(CaseId, BlobHash)>,
    /// Named by a record, not held here.
    pub fetch: Vec<(CaseId, BlobHash)>,
}

impl BlobWork {
    /// Nothing to move.
    pub fn is_empty(&self) -> bool {
        self.upload.is_empty() && self.fetch.is_empty()
    }
}
