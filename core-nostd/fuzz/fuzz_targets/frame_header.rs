//! Frame header decoding and frame splitting: never panic; decoded headers re-encode exactly.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pqcc_core::{channel::EncryptedFrame, wire::FrameHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok((h, n)) = FrameHeader::decode(data) {
        let mut out = [0u8; pqcc_core::wire::FRAME_HEADER_MAX_LEN];
        let m = h.encode(&mut out).expect("a decoded header must re-encode");
        assert_eq!(&out[..m], &data[..n]);
    }
    let _ = EncryptedFrame::parse(data);
});
