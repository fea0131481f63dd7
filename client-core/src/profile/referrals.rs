//! Recording a referral on this device: on a new case (the referral that opens it) or on a case
//! already held (a re-referral, which opens a new episode), with the referral letter attached in
//! the same step. See [`crate::model::referrals`].

use super::attachments::AttachFile;
use super::{Profile, ProfileError};
use crate::model::{AttachmentKind, CaseDoc, NewCase, NewReferral};
use crate::{CaseId, EntryId};

impl Profile {
    /// Record a referral on a case, with its letter if one is given (attached as a referral
    /// letter, and named by the referral). Both are on disk when this returns, or neither is in
    /// the record. Returns the referral's id.
    pub fn refer(
        &mut self,
        case: CaseId,
        referral: NewReferral,
        letter: Option<AttachFile<'_>>,
    ) -> Result<EntryId, ProfileError> {
        // Checked before the letter's bytes are kept: a refused referral leaves no file behind.
        CaseDoc::check_referral(&referral)?;
        let letter = match letter {
            Some(file) => Some(self.keep_bytes(case, &as_letter(file))?),
            None => None,
        };
        self.edit(case, |doc| add(doc, referral, letter.as_ref()))
    }

    /// Open a case with the referral that brought the person to the team (and its letter). The
    /// case is saved with its referral, or not at all. Returns the case and the referral's ids.
    pub fn create_referred_case(
        &mut self,
        new: NewCase,
        team: Option<&str>,
        referral: NewReferral,
        letter: Option<AttachFile<'_>>,
    ) -> Result<(CaseId, EntryId), ProfileError> {
        CaseDoc::check_referral(&referral)?;
        let new = NewCase {
            referral: Some(referral.received_at),
            ..new
        };
        self.create_case_with(new, team, |profile, case, doc| {
            let letter = match letter {
                Some(file) => Some(profile.keep_bytes(case, &as_letter(file))?),
                None => None,
            };
            Ok(add(doc, referral, letter.as_ref())?)
        })
    }
}

impl Profile {
    /// Attach the letter of a referral recorded without one, and name it as its letter: both on
    /// disk when this returns, or neither in the record. Returns the attachment's id.
    pub fn add_referral_letter(
        &mut self,
        case: CaseId,
        referral: EntryId,
        letter: AttachFile<'_>,
    ) -> Result<EntryId, ProfileError> {
        let described = self.keep_bytes(case, &as_letter(letter))?;
        self.edit(case, |doc| {
            let id = doc.add_attachment(&described)?;
            doc.set_referral_letter(&referral, &id)?;
            Ok(id)
        })
    }
}

/// A file given as a referral's letter is a referral letter, titled so when no title is given.
fn as_letter(file: AttachFile<'_>) -> AttachFile<'_> {
    AttachFile {
        kind: AttachmentKind::ReferralLetter,
        meeting: None,
        ..file
    }
}

/// Describe the letter (when there is one) and record the referral naming it: two changes, saved
/// together by the caller.
fn add(
    doc: &mut CaseDoc,
    mut referral: NewReferral,
    letter: Option<&crate::model::NewAttachment>,
) -> Result<EntryId, crate::model::ModelError> {
    // The referral's own checks first, so a refused referral leaves no letter described.
    CaseDoc::check_referral(&referral)?;
    if let Some(l) = letter {
        referral.letter = Some(doc.add_attachment(l)?);
    }
    doc.add_referral(&referral)
}
