//! The device's sync session fed arbitrary bytes from a "server", after a welcome that grants the
//! fixture case and one case the device does not hold: it must never panic, and never corrupt a
//! case: what the store would hold (the fixture plus every persisted chunk) must load to exactly
//! the document in memory, which must still be a valid case record.

#![no_main]

use automerge::AutoCommit;
use libfuzzer_sys::fuzz_target;
use polyphony_core::model::validate_document;
use polyphony_core::sync::FrameDecoder;
use polyphony_fuzz::Device;

fuzz_target!(init: polyphony_fuzz::tolerate_caught_automerge_panics(), |data: &[u8]| {
    let mut device = Device::start();
    let mut decoder = FrameDecoder::new(1 << 20);
    decoder.push(data);
    while let Ok(Some(frame)) = decoder.next_frame() {
        device.receive(frame);
    }
    for (case, doc) in device.docs.0.iter_mut() {
        let stored = device.stored.get(case).cloned().unwrap_or_default();
        let mut reloaded = AutoCommit::load(&stored).expect("what was stored loads");
        let (mut a, mut b) = (doc.get_heads(), reloaded.get_heads());
        a.sort();
        b.sort();
        assert_eq!(a, b, "case {case}: memory and store disagree");
        if !a.is_empty() {
            validate_document(doc).expect("a stored case stays a valid record");
        }
    }
});
