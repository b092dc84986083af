//! A guest reading arbitrary bytes as the broker's answer: never panics, never derives keys.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pqcc_core::{
    handshake::{Initiator, Responder},
    secret::Secret,
    selftest::InsecureTestRng,
    sign::SigningKey,
    wire::{Bytes, CHALLENGE_MAX_LEN, Evidence, HELLO_MAX_LEN, Platform},
};

fuzz_target!(|data: &[u8]| {
    let mut rng = InsecureTestRng::new([1; 32]);
    let key = SigningKey::from_seed(&Secret::new([2; 32]));
    let mut ch = [0u8; CHALLENGE_MAX_LEN];
    let (_resp, n) = Responder::start(&mut rng, &mut ch).unwrap();
    let aw = Initiator::new(key.public_key())
        .unwrap()
        .handle_challenge(&ch[..n], &mut rng)
        .unwrap();
    let b = *aw.binding();
    let mut hello = vec![0u8; HELLO_MAX_LEN];
    let (aw, _) = aw
        .write_hello(
            Evidence {
                platform: Platform::InsecureNone,
                data: Bytes(&b.0),
            },
            &mut hello,
        )
        .unwrap();
    assert!(aw.handle_response(data).is_err());
});
