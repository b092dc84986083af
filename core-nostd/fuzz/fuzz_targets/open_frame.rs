//! Opening arbitrary bytes as a frame: never panics, never succeeds (the fuzzer does not
//! know the key), and never leaves the opener unable to open the genuine next frame.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pqcc_core::{
    channel::{Limits, Opener, Sealer},
    secret::Secret,
    wire::{DType, TensorMetadata},
};

fuzz_target!(|data: &[u8]| {
    let key = Secret::new([7u8; 32]);
    let mut rx: Opener = Opener::new(&key, [1, 2, 3, 4], Limits::default(), 10);
    let mut tx: Sealer = Sealer::new(&key, [1, 2, 3, 4], Limits::default(), 10);
    let mut f = data.to_vec();
    assert!(rx.open_in_place(10, &mut f).is_err());
    let meta = TensorMetadata::new(1, "t", DType::U8, &[4]).unwrap();
    let mut out = [0u8; 512];
    let n = tx.seal_chunk(10, 0, &meta, 0, b"abcd", &mut out).unwrap();
    assert_eq!(
        rx.open_in_place(10, &mut out[..n]).unwrap().plaintext,
        b"abcd"
    );
});
