//! The server's session fed arbitrary frames from an enrolled device of one team, over a stored
//! fixture (see `polyphony_fuzz::server`; the input's first byte chooses the session's mode). It
//! must never panic; every frame it takes is answered (a sync message by a `Saved` or a refusal
//! for its case), or the session ends with an error code (a refusal, `Bye` or `Wipe` last, or an
//! end for the driver to close with); and nothing stored breaks a promise: every case valid and
//! its team's, the other team's case untouched, no change accepted under another device's actor.

#![no_main]

use libfuzzer_sys::fuzz_target;
use polyphony_core::sync::{Frame, FrameDecoder};
use polyphony_fuzz::server::World;

fuzz_target!(init: polyphony_fuzz::tolerate_caught_automerge_panics(), |data: &[u8]| {
    let Some((&flags, frames)) = data.split_first() else {
        return;
    };
    let mut world = World::with_mode(flags);
    let mut decoder = FrameDecoder::new(1 << 20);
    decoder.push(frames);
    while let Ok(Some(frame)) = decoder.next_frame() {
        let synced = match &frame {
            Frame::Sync { case, .. } => Some(*case),
            _ => None,
        };
        let go_on = world.session.handle(frame);
        let mut replies = Vec::new();
        while let Some(batch) = world.session.poll_reply() {
            replies.extend(batch.frames);
        }
        if go_on {
            match synced {
                Some(case) => assert!(
                    matches!(
                        replies.last(),
                        Some(Frame::Saved { case: c, .. } | Frame::CaseRefused { case: c, .. }) if *c == case
                    ),
                    "a sync message for {case} was not answered for it: {replies:?}"
                ),
                None => assert!(!replies.is_empty(), "a frame was taken and not answered"),
            }
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
