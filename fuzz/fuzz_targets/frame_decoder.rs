//! The frame decoder on arbitrary bytes, pushed in pieces of arbitrary size: it must never panic
//! nor allocate past its limit, and every frame it accepts must encode back to a frame that
//! decodes to the same thing.

#![no_main]

use libfuzzer_sys::fuzz_target;
use polyphony_core::sync::{Frame, FrameDecoder};

/// The decoder's limit here: small, so length prefixes near it are reached.
const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&step, bytes)) = data.split_first() else {
        return;
    };
    let mut decoder = FrameDecoder::new(MAX);
    for piece in bytes.chunks(1 + step as usize) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let again = Frame::decode_body(&frame.to_bytes()[4..]).expect("re-decodes");
                    assert_eq!(again, frame, "a frame must survive encode then decode");
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(decoder.pending() <= bytes.len());
    }
});
