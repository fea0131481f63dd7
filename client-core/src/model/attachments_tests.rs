//! Tests of attachments in the record: described with their address, refused when the file's
//! kind or size is wrong (nothing written), kept when marked in error, withheld whole when on the
//! wrong person's record, merged across devices, and validated by form.

use automerge::transaction::Transactable;
use automerge::{ObjType, ReadDoc, ScalarValue, ROOT};

use super::attachments::{media_type_for, referenced_blobs};
use super::tests::{author, maria_with_ana};
use super::*;
use crate::BlobHash;

fn letter(bytes: &[u8], meeting: Option<crate::EntryId>) -> NewAttachment {
    NewAttachment {
        kind: AttachmentKind::ReferralLetter,
        title: "Referral from Dr Shah".into(),
        file_name: "Referral.PDF".into(),
        size: bytes.len() as u64,
        hash: BlobHash::of(bytes),
        meeting,
    }
}

#[test]
fn an_attachment_is_described_in_the_record_with_its_address() {
    let sam = author("Sam");
    let (mut case, ana) = maria_with_ana(&sam);
    let meeting = case
        .add_meeting(NewMeeting {
            at: parse_datetime("at", "2026-03-14T10:00").unwrap(),
            place: Place::Home,
            attendees: vec![Participant::Person, Participant::Member(ana)],
        })
        .unwrap();
    let id = case
        .add_attachment(&letter(b"%PDF-1.7 referral", Some(meeting)))
        .unwrap();
    let v = case.view();
    assert_eq!(v.attachments.len(), 1);
    let a = &v.attachments[0];
    assert_eq!(a.meta.id, id);
    assert_eq!(a.kind, Stored::Known(AttachmentKind::ReferralLetter));
    assert_eq!(a.title, "Referral from Dr Shah");
    assert_eq!(a.file_name, "Referral.PDF");
    assert_eq!(a.media_type, "application/pdf");
    assert_eq!(a.size, 17);
    assert_eq!(a.sha256, Some(BlobHash::of(b"%PDF-1.7 referral")));
    assert_eq!(a.meeting, Some(meeting));
    assert_eq!(
        a.meta
            .created_by
            .as_ref()
            .map(|b| b.practitioner_name.as_str()),
        Some("Sam")
    );
    assert_eq!(
        referenced_blobs(case.automerge()),
        vec![BlobHash::of(b"%PDF-1.7 referral")]
    );
    // Reloaded from its bytes, it reads the same.
    let again = CaseDoc::load(&case.save(), None).unwrap();
    assert_eq!(again.view().attachments, v.attachments);
}

#[test]
fn a_file_of_the_wrong_kind_or_size_is_refused_and_nothing_written() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let heads = case.automerge_mut().get_heads();
    let refuse =
        |case: &mut CaseDoc, new: NewAttachment| case.add_attachment(&new).unwrap_err().to_string();
    let mut exe = letter(b"MZ", None);
    exe.file_name = "setup.exe".into();
    let e = refuse(&mut case, exe);
    assert!(e.contains("not a kind of file") && e.contains("pdf"), "{e}");
    let mut empty = letter(b"", None);
    empty.size = 0;
    assert!(refuse(&mut case, empty).contains("empty"));
    let mut big = letter(b"x", None);
    big.size = MAX_ATTACHMENT_BYTES + 1;
    let e = refuse(&mut case, big);
    assert!(e.contains("at most 20 MB"), "{e}");
    let mut untitled = letter(b"x", None);
    untitled.title = "  ".into();
    assert!(refuse(&mut case, untitled).contains("required"));
    let mut nowhere = letter(b"x", None);
    nowhere.meeting = Some(crate::EntryId::random());
    assert!(refuse(&mut case, nowhere).contains("no meeting"));
    assert_eq!(case.automerge_mut().get_heads(), heads, "nothing written");
    // Exactly the limit is taken.
    let mut limit = letter(b"x", None);
    limit.size = MAX_ATTACHMENT_BYTES;
    case.add_attachment(&limit).unwrap();
}

#[test]
fn media_types_come_from_the_name_whatever_its_case() {
    assert_eq!(media_type_for("scan.JPG").unwrap(), "image/jpeg");
    assert_eq!(
        media_type_for("letter.docx").unwrap(),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    );
    assert!(media_type_for("noending").is_err());
    assert!(media_type_for("archive.zip").is_err());
}

#[test]
fn marked_in_error_it_stays_and_its_bytes_are_still_named() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let id = case.add_attachment(&letter(b"gp letter", None)).unwrap();
    case.mark_entered_in_error(&id, "attached to the wrong case section")
        .unwrap();
    let v = case.view();
    let a = &v.attachments[0];
    assert!(a.meta.entered_in_error.is_some());
    assert_eq!(a.title, "Referral from Dr Shah", "a mistake stays readable");
    assert_eq!(
        referenced_blobs(case.automerge()),
        vec![BlobHash::of(b"gp letter")],
        "its bytes are kept and fetched: nothing is deleted"
    );
}

#[test]
fn on_the_wrong_persons_record_nothing_of_it_is_shown() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let id = case.add_attachment(&letter(b"someone else", None)).unwrap();
    case.mark_error(&id, ErrorKind::WrongPerson, "another person's letter")
        .unwrap();
    let v = case.view();
    let a = &v.attachments[0];
    assert!(a.meta.withheld());
    assert!(a.title.is_empty() && a.file_name.is_empty() && a.sha256.is_none());
    assert_eq!(a.size, 0);
}

#[test]
fn two_devices_attaching_at_once_keep_both_with_no_conflict_to_choose() {
    let sam = author("Sam");
    let kit = author("Kit");
    let (mut case, _) = maria_with_ana(&sam);
    // A case made before attachments existed: the map is made by each device's first one.
    case.automerge_mut()
        .delete(ROOT, keys::ATTACHMENTS)
        .unwrap();
    let mut kits = CaseDoc::load(&case.save(), Some(kit)).unwrap();
    case.add_attachment(&letter(b"one", None)).unwrap();
    kits.add_attachment(&letter(b"two", None)).unwrap();
    case.automerge_mut().merge(kits.automerge_mut()).unwrap();
    let v = case.view();
    assert_eq!(v.attachments.len(), 2, "both kept");
    assert!(
        v.conflicts
            .iter()
            .all(|c| !c.field.starts_with("attachments")),
        "{:?}",
        v.conflicts
    );
    let mut blobs = referenced_blobs(case.automerge());
    blobs.sort();
    let mut want = vec![BlobHash::of(b"one"), BlobHash::of(b"two")];
    want.sort();
    assert_eq!(blobs, want);
}

#[test]
fn a_malformed_description_is_refused_by_the_validator() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let id = case.add_attachment(&letter(b"x", None)).unwrap();
    for (key, bad, why) in [
        (keys::SHA256, ScalarValue::Str("ABC".into()), "SHA-256"),
        (keys::SIZE, ScalarValue::Uint(0), "more than 0"),
        (keys::SIZE, ScalarValue::Str("12".into()), "wrong type"),
        (
            keys::MEDIA_TYPE,
            ScalarValue::Str("pdf".into()),
            "media type",
        ),
    ] {
        let mut d = case.automerge_mut().clone();
        let map = d.get(ROOT, keys::ATTACHMENTS).unwrap().unwrap().1;
        let e = d.get(&map, id.to_string()).unwrap().unwrap().1;
        d.put(&e, key, bad).unwrap();
        let err = validate_document(&d).unwrap_err().to_string();
        assert!(err.contains(why), "{key}: {err}");
    }
    // A newer version's media type (any well-formed one) is not refused.
    let mut d = case.automerge_mut().clone();
    let map = d.get(ROOT, keys::ATTACHMENTS).unwrap().unwrap().1;
    let e = d.get(&map, id.to_string()).unwrap().unwrap().1;
    d.put(&e, keys::MEDIA_TYPE, "model/stl").unwrap();
    validate_document(&d).unwrap();
    // Nor a list where a map belongs refused silently: it is reported.
    let mut d = case.automerge_mut().clone();
    d.put_object(ROOT, keys::ATTACHMENTS, ObjType::List)
        .unwrap();
    assert!(validate_document(&d).is_err());
}

#[test]
fn rewriting_or_deleting_what_an_attachment_says_is_refused_by_the_servers_history_rule() {
    let sam = author("Sam");
    let (mut case, _) = maria_with_ana(&sam);
    let id = case
        .add_attachment(&letter(b"the real letter", None))
        .unwrap();
    let made = case.automerge().clone();
    for (key, value) in [
        (
            keys::SHA256,
            ScalarValue::Str(BlobHash::of(b"other").to_string().into()),
        ),
        (keys::SIZE, ScalarValue::Uint(5)),
        (keys::MEDIA_TYPE, ScalarValue::Str("image/png".into())),
        (keys::FILE_NAME, ScalarValue::Str("other.png".into())),
    ] {
        let mut before = made.clone();
        let mut after = made.clone();
        let map = after.get(ROOT, keys::ATTACHMENTS).unwrap().unwrap().1;
        let e = after.get(&map, id.to_string()).unwrap().unwrap().1;
        after.put(&e, key, value).unwrap();
        after.commit();
        let ops = super::tests::new_ops(&mut before, &mut after);
        let e = guard::written_once_kept(&before, &after, &ops).unwrap_err();
        assert!(e.contains(key) && e.contains("entered in error"), "{e}");
    }
    // Nor may a change delete them.
    for key in [keys::SHA256, keys::SIZE, keys::MEDIA_TYPE, keys::FILE_NAME] {
        let mut before = made.clone();
        let mut after = made.clone();
        let map = after.get(ROOT, keys::ATTACHMENTS).unwrap().unwrap().1;
        let e = after.get(&map, id.to_string()).unwrap().unwrap().1;
        after.delete(&e, key).unwrap();
        after.commit();
        let ops = super::tests::new_ops(&mut before, &mut after);
        let e = guard::written_once_kept(&before, &after, &ops).unwrap_err();
        assert!(e.contains(key) && e.contains("deletes"), "{e}");
    }
    // Nor its title, kind or meeting: what it was attached as stays as written.
    for (key, value) in [
        (keys::TITLE, ScalarValue::Str("Another title".into())),
        (keys::KIND, ScalarValue::Str("other".into())),
    ] {
        let mut before = made.clone();
        let mut after = made.clone();
        let map = after.get(ROOT, keys::ATTACHMENTS).unwrap().unwrap().1;
        let e = after.get(&map, id.to_string()).unwrap().unwrap().1;
        after.put(&e, key, value).unwrap();
        after.commit();
        let ops = super::tests::new_ops(&mut before, &mut after);
        assert!(
            guard::written_once_kept(&before, &after, &ops).is_err(),
            "{key}"
        );
    }
    // The change that makes an attachment writes it all.
    let mut before = case.automerge().clone();
    case.add_attachment(&letter(b"a second", None)).unwrap();
    let mut after = case.automerge().clone();
    let ops = super::tests::new_ops(&mut before, &mut after);
    guard::written_once_kept(&before, &after, &ops).unwrap();
}
