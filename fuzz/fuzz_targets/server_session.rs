//! The server's session fed arbitrary frames from an enrolled device of one team, over a stored
//! fixture (see `polyphony_fuzz::server`). It must never panic; every frame it takes is answered,
//! or the session ends with an error code (a refusal, `Bye` or `Wipe` last, or an end for the
//! driver to close with); and nothing stored breaks a promise: every case valid, the other
//! team's case untouched, no change accepted under another device's actor.

#![no_main]

use libfuzzer_sys::fuzz_target;
use polyphony_core::sync::{Frame, FrameDecoder};
use polyphony_fuzz::server::World;

fuzz_target!(init: polyphony_fuzz::tolerate_caught_automerge_panics(), |data: &[u8]| {
    let mut world = World::new();
    let mut decoder = FrameDecoder::new(1 << 20);
    decoder.push(data);
    while let Ok(Some(frame)) = decoder.next_frame() {
        let go_on = world.session.handle(frame);
        let mut replies = Vec::new();
        while let Some(batch) = world.session.poll_reply() {
            replies.extend(batch.frames);
        }
        if go_on {
            assert!(!replies.is_empty(), "a frame was taken and not answered");
            continue;
        }
        let ends_in_words = matches!(
            replies.last(),
            Some(Frame::Error(_) | Frame::Bye | Frame::Wipe)
        );
        assert!(
            ends_in_words || world.session.ended().is_some(),
            "the session ended without saying why: {replies:?}"
        );
        break;
    }
    world.check();
});
