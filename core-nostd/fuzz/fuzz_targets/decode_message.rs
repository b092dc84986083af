//! Handshake message decoding: never panics; whatever decodes re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pqcc_core::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = wire::decode_message(data) {
        let mut out = vec![0u8; wire::MESSAGE_MAX_LEN];
        let n = m
            .encode(&mut out)
            .expect("a decoded message must re-encode");
        assert_eq!(
            &out[..n],
            data,
            "decoding accepted a non-canonical encoding"
        );
    }
});
