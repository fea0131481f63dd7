//! The behaviour every [`Store`] engine must share, written once and run against each engine.
//!
//! Callers are tested against [`super::MemoryStore`] and run on [`super::SledStore`]; these checks
//! are what makes that substitution honest. Each engine's test module invokes
//! [`conformance_tests!`] with an expression that builds a fresh store.

use super::{Store, StoreError};
use crate::{BlobHash, CaseId};

/// Generate one `#[test]` per conformance check for an engine. `$make` must evaluate to
/// `(guard, store)`: the guard (a temporary directory, or `()`) lives as long as the test.
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::store::conformance::conformance_tests!(@each $make;
            append_then_load_in_order,
            compaction_keeps_later_chunks,
            remove_case_forgets_only_that_case,
            list_cases_lists_every_case_with_chunks,
            meta_scan_in_key_order,
            logs_append_read_trim,
            names_with_nul_are_refused,
            blobs_kept_per_case_and_removed_only_with_it,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let (_guard, store) = $make;
                $crate::store::conformance::$name(&store);
            }
        )*
    };
}
pub(crate) use conformance_tests;

fn chunks_of(store: &dyn Store, case: &CaseId) -> Vec<(u64, Vec<u8>)> {
    store
        .load_chunks(case)
        .expect("load chunks")
        .expect("case is known")
}

pub(crate) fn append_then_load_in_order(store: &dyn Store) {
    let a = CaseId::random();
    let b = CaseId::random();
    assert!(store.load_chunks(&a).unwrap().is_none());

    let a1 = store.append_chunk(&a, b"a1").unwrap();
    let b1 = store.append_chunk(&b, b"b1").unwrap();
    let a2 = store.append_chunk(&a, b"a2").unwrap();
    let a3 = store.append_chunk(&a, b"").unwrap();
    assert!(a1 < b1 && b1 < a2 && a2 < a3, "sequence numbers only grow");

    assert_eq!(
        chunks_of(store, &a),
        vec![(a1, b"a1".to_vec()), (a2, b"a2".to_vec()), (a3, vec![])]
    );
    assert_eq!(chunks_of(store, &b), vec![(b1, b"b1".to_vec())]);
    // A big chunk (a full snapshot of a long record) round-trips too.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let s = store.append_chunk(&b, &big).unwrap();
    assert_eq!(chunks_of(store, &b).last().unwrap(), &(s, big));
    store.flush().unwrap();
}

pub(crate) fn compaction_keeps_later_chunks(store: &dyn Store) {
    let case = CaseId::random();
    let seqs: Vec<u64> = (0..4)
        .map(|i| {
            store
                .append_chunk(&case, format!("c{i}").as_bytes())
                .unwrap()
        })
        .collect();

    store.compact_case(&case, b"snap-1", seqs[1]).unwrap();
    assert_eq!(
        chunks_of(store, &case),
        vec![
            (seqs[1], b"snap-1".to_vec()),
            (seqs[2], b"c2".to_vec()),
            (seqs[3], b"c3".to_vec()),
        ]
    );

    let after = store.append_chunk(&case, b"c4").unwrap();
    assert!(after > seqs[3]);

    // `through` beyond the end: the snapshot becomes the last chunk, and later appends follow it.
    store.compact_case(&case, b"snap-2", after + 1000).unwrap();
    assert_eq!(chunks_of(store, &case), vec![(after, b"snap-2".to_vec())]);
    let next = store.append_chunk(&case, b"c5").unwrap();
    assert!(next > after);
    assert_eq!(
        chunks_of(store, &case),
        vec![(after, b"snap-2".to_vec()), (next, b"c5".to_vec())]
    );

    // Compacting a case the store does not hold must not create it.
    let unknown = CaseId::random();
    assert!(matches!(
        store.compact_case(&unknown, b"x", 5),
        Err(StoreError::InvalidRequest(_))
    ));
    assert!(store.load_chunks(&unknown).unwrap().is_none());
}

pub(crate) fn remove_case_forgets_only_that_case(store: &dyn Store) {
    let gone = CaseId::random();
    let kept = CaseId::random();
    let first = store.append_chunk(&gone, b"g1").unwrap();
    let last = store.append_chunk(&gone, b"g2").unwrap();
    store.append_chunk(&kept, b"k1").unwrap();

    store.remove_case(&gone).unwrap();
    assert!(store.load_chunks(&gone).unwrap().is_none());
    assert_eq!(store.list_cases().unwrap(), vec![kept]);
    assert_eq!(chunks_of(store, &kept).len(), 1);
    // Removing again (or an unknown case) is a no-op.
    store.remove_case(&gone).unwrap();
    store.remove_case(&CaseId::random()).unwrap();

    // A case that comes back starts a new log whose numbers were never used before.
    let again = store.append_chunk(&gone, b"g3").unwrap();
    assert!(again > last && again > first);
    assert_eq!(chunks_of(store, &gone), vec![(again, b"g3".to_vec())]);
}

pub(crate) fn list_cases_lists_every_case_with_chunks(store: &dyn Store) {
    assert!(store.list_cases().unwrap().is_empty());
    let mut cases: Vec<CaseId> = (0..5).map(|_| CaseId::random()).collect();
    for (i, case) in cases.iter().enumerate() {
        for _ in 0..=i {
            store.append_chunk(case, b"x").unwrap();
        }
    }
    cases.sort();
    let mut listed = store.list_cases().unwrap();
    listed.sort();
    assert_eq!(listed, cases);
    // Meta and logs are not cases.
    store.put_meta("sync", "k", b"v").unwrap();
    store.append_log("audit", b"e").unwrap();
    assert_eq!(store.list_cases().unwrap().len(), cases.len());
}

pub(crate) fn meta_scan_in_key_order(store: &dyn Store) {
    assert!(store.get_meta("sync", "missing").unwrap().is_none());
    assert!(store.scan_meta("sync").unwrap().is_empty());

    for key in ["b", "a", "c", "aa", ""] {
        store
            .put_meta("sync", key, format!("v-{key}").as_bytes())
            .unwrap();
    }
    // Neighbouring namespaces must not leak into the scan.
    store.put_meta("syn", "c", b"other").unwrap();
    store.put_meta("sync2", "a", b"other").unwrap();
    store.put_meta("sync", "b", b"v-b-2").unwrap();
    store.delete_meta("sync", "c").unwrap();
    store.delete_meta("sync", "never-set").unwrap();

    assert_eq!(store.get_meta("sync", "b").unwrap().unwrap(), b"v-b-2");
    assert!(store.get_meta("sync", "c").unwrap().is_none());
    let scan = store.scan_meta("sync").unwrap();
    let keys: Vec<&str> = scan.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["", "a", "aa", "b"]);
    assert_eq!(scan[3].1, b"v-b-2");
    assert_eq!(
        store.scan_meta("syn").unwrap(),
        vec![("c".into(), b"other".to_vec())]
    );
    // Keys may hold any text, including a NUL, and still come back intact.
    store.put_meta("ids", "a\0b", b"1").unwrap();
    assert_eq!(store.scan_meta("ids").unwrap()[0].0, "a\0b");
}

pub(crate) fn logs_append_read_trim(store: &dyn Store) {
    assert!(store.read_log("outbox", 0).unwrap().is_empty());
    for i in 0..5u64 {
        assert_eq!(
            store
                .append_log("outbox", format!("e{i}").as_bytes())
                .unwrap(),
            i
        );
    }
    assert_eq!(store.append_log("audit", b"a0").unwrap(), 0);

    let from2 = store.read_log("outbox", 2).unwrap();
    assert_eq!(
        from2,
        vec![
            (2, b"e2".to_vec()),
            (3, b"e3".to_vec()),
            (4, b"e4".to_vec())
        ]
    );

    store.trim_log("outbox", 2).unwrap();
    let left: Vec<u64> = store
        .read_log("outbox", 0)
        .unwrap()
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert_eq!(left, [3, 4]);

    // Trimming everything does not reset the numbering.
    store.trim_log("outbox", u64::MAX).unwrap();
    assert!(store.read_log("outbox", 0).unwrap().is_empty());
    assert_eq!(store.append_log("outbox", b"e5").unwrap(), 5);
    assert_eq!(
        store.read_log("outbox", 0).unwrap(),
        vec![(5, b"e5".to_vec())]
    );
    // The other log is untouched.
    assert_eq!(
        store.read_log("audit", 0).unwrap(),
        vec![(0, b"a0".to_vec())]
    );
}

pub(crate) fn names_with_nul_are_refused(store: &dyn Store) {
    let bad = "sync\0x";
    assert!(matches!(
        store.put_meta(bad, "k", b"v"),
        Err(StoreError::InvalidRequest(_))
    ));
    assert!(matches!(
        store.scan_meta(bad),
        Err(StoreError::InvalidRequest(_))
    ));
    assert!(matches!(
        store.append_log(bad, b"e"),
        Err(StoreError::InvalidRequest(_))
    ));
    assert!(matches!(
        store.read_log(bad, 0),
        Err(StoreError::InvalidRequest(_))
    ));
}

pub(crate) fn blobs_kept_per_case_and_removed_only_with_it(store: &dyn Store) {
    let a = CaseId::random();
    let b = CaseId::random();
    store.append_chunk(&a, b"a1").unwrap();
    store.append_chunk(&b, b"b1").unwrap();
    // As large as an attachment may be (20 MiB), so an engine that cannot hold one fails here.
    let big: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let h = BlobHash::of(&big);
    let small = BlobHash::of(b"letter");
    assert!(!store.has_blob(&a, &h).unwrap());
    assert!(store.get_blob(&a, &h).unwrap().is_none());
    store.put_blob(&a, &h, &big).unwrap();
    store.put_blob(&a, &small, b"letter").unwrap();
    store.put_blob(&b, &small, b"letter").unwrap();
    // Writing the same bytes again changes nothing.
    store.put_blob(&a, &small, b"letter").unwrap();
    store.flush().unwrap();
    assert!(store.has_blob(&a, &h).unwrap());
    assert_eq!(store.get_blob(&a, &h).unwrap().as_deref(), Some(&big[..]));
    assert_eq!(
        store.get_blob(&b, &small).unwrap().as_deref(),
        Some(&b"letter"[..])
    );
    // Kept per case: b does not hold a's big file.
    assert!(!store.has_blob(&b, &h).unwrap());
    // Compaction leaves them alone; removing the case removes its own, and only its own.
    store.compact_case(&a, b"snap", u64::MAX).unwrap();
    assert!(store.has_blob(&a, &h).unwrap());
    store.remove_case(&a).unwrap();
    assert!(!store.has_blob(&a, &h).unwrap());
    assert!(!store.has_blob(&a, &small).unwrap());
    assert!(store.has_blob(&b, &small).unwrap());
}
