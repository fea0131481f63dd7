//! Loading a case from arbitrary bytes (a damaged store, a hostile peer's document): it must
//! never panic, and a document that passes validation must be readable in full.

#![no_main]

use libfuzzer_sys::fuzz_target;
use polyphony_core::model::{validate_document, CaseDoc};

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = automerge::AutoCommit::load(data) else {
        return;
    };
    if validate_document(&doc).is_ok() {
        let case = CaseDoc::from_automerge(doc, None).expect("validated");
        let _ = case.view();
        let _ = case.conflicts();
        let _ = case.case_id();
    }
    let _ = CaseDoc::load(data, None);
});
