//! Loading a case from arbitrary bytes (a damaged store, a hostile peer's document) through
//! `CaseDoc::load`, which validates the record's shape: it must never panic, and a document that
//! passes must be readable in full.

#![no_main]

use libfuzzer_sys::fuzz_target;
use polyphony_core::model::CaseDoc;

fuzz_target!(init: polyphony_fuzz::tolerate_caught_automerge_panics(), |data: &[u8]| {
    if let Ok(case) = CaseDoc::load(data, None) {
        let _ = case.view();
        let _ = case.conflicts();
        let _ = case.case_id();
    }
});
