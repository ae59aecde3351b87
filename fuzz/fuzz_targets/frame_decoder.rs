//! Feeds arbitrary bytes to the frame decoder. Invariants: never panics; a decoded frame
//! consumes at most the input and at most `HEADER_LEN + MAX_FRAME` bytes; re-encoding a decoded
//! message yields a frame that decodes to the same message.
#![no_main]

use granary_protocol::{
    Message,
    frame::{FrameHeader, HEADER_LEN, MAX_FRAME},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(head) = data.first_chunk::<HEADER_LEN>() {
        let _ = FrameHeader::decode(head, MAX_FRAME);
    }
    if let Ok(Some((msg, used))) = Message::decode_frame(data) {
        assert!(used <= data.len());
        assert!(used <= HEADER_LEN + MAX_FRAME as usize);
        let again = msg.to_frame().expect("a decoded message re-encodes");
        let (back, n) = Message::decode_frame(&again)
            .expect("re-encoded frame decodes")
            .expect("complete");
        assert_eq!(back, msg);
        assert_eq!(n, again.len());
    }
});
