//! The CPU fallback: real channel frames, the Wycheproof vectors, and refusals.

mod common;

use common::*;
use pqcc_core::{Error, channel::Limits, secret::Secret};
use pqcc_gpu::{Backend, GpuError, MemoryBackend, cpu::CpuOpener, cpu::open_raw, next_epoch_key};

fn opener(key: &[u8; 32]) -> CpuOpener<MemoryBackend> {
    CpuOpener::new(
        MemoryBackend::new(),
        &Secret::new(*key),
        PREFIX,
        Limits::default(),
        NOW,
    )
}

#[test]
fn wycheproof_aes256_gcm_through_the_cpu_fallback() {
    let (vectors, skipped) = wycheproof_aes256_gcm();
    assert!(vectors.len() > 50, "too few vectors: {}", vectors.len());
    let (mut valid, mut invalid) = (0, 0);
    for v in &vectors {
        let key = Secret::new(v.key.as_slice().try_into().unwrap());
        let iv: [u8; 12] = v.iv.as_slice().try_into().unwrap();
        let tag: [u8; 16] = v.tag.as_slice().try_into().unwrap();
        match open_raw(&key, &iv, &v.aad, &v.ct, &tag) {
            Ok(pt) => {
                assert!(v.valid, "tcId {} opened but is invalid", v.id);
                assert_eq!(pt, v.msg, "tcId {}", v.id);
                valid += 1;
            }
            Err(e) => {
                assert!(!v.valid, "tcId {} refused: {e}", v.id);
                assert_eq!(e, GpuError::TagMismatch { frame: 0 });
                invalid += 1;
            }
        }
    }
    println!(
        "[wycheproof cpu] {valid} valid, {invalid} invalid, {skipped} skipped (not AES-256/96-bit IV/128-bit tag)"
    );
}

#[test]
fn opens_chunked_tensors_and_refuses_replay() {
    let mut rng = Rng(0x1234_5678);
    let key = rng.key();
    let mut s = sealer(&key);
    let mut o = opener(&key);
    for (id, (len, chunk)) in [
        (0usize, 1usize),
        (1, 1),
        (1000, 64),
        (70_000, 4096),
        (100_003, 10_000),
    ]
    .into_iter()
    .enumerate()
    {
        let data = rng.bytes(len);
        let frames = seal_tensor(&mut s, id as u64, &data, chunk);
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let h = o.open_tensor(NOW, &refs).unwrap();
        assert_eq!(o.backend().download(h).unwrap(), data);
        // The same frames again: the replay window refuses the first one.
        let e = o.open_tensor(NOW, &refs).unwrap_err();
        assert!(
            matches!(
                e,
                GpuError::Channel {
                    frame: 0,
                    error: Error::Replay { .. }
                }
            ),
            "{e}"
        );
    }
}

#[test]
fn tamper_truncation_and_reordering_are_refused_without_committing() {
    let mut rng = Rng(99);
    let key = rng.key();
    let mut s = sealer(&key);
    let mut o = opener(&key);
    let data = rng.bytes(10_000);
    let frames = seal_tensor(&mut s, 1, &data, 3000);
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();

    let mut bad = frames.clone();
    let last = bad[2].len() - 20;
    bad[2][last] ^= 1;
    let bad_refs: Vec<&[u8]> = bad.iter().map(Vec::as_slice).collect();
    assert_eq!(
        o.open_tensor(NOW, &bad_refs).unwrap_err(),
        GpuError::TagMismatch { frame: 2 }
    );

    let e = o.open_tensor(NOW, &refs[..3]).unwrap_err();
    assert!(
        matches!(
            e,
            GpuError::Channel {
                error: Error::TensorTruncated,
                ..
            }
        ),
        "{e}"
    );
    let swapped = [refs[1], refs[0], refs[2], refs[3]];
    assert!(o.open_tensor(NOW, &swapped).is_err());

    // Nothing was committed: the genuine frames still open.
    let h = o.open_tensor(NOW, &refs).unwrap();
    assert_eq!(o.backend().download(h).unwrap(), data);
}

#[test]
fn rekey_follows_the_channel() {
    let mut rng = Rng(5);
    let key = rng.key();
    let mut s = sealer(&key);
    let mut o = opener(&key);
    s.rekey(NOW).unwrap();
    let next = next_epoch_key(&Secret::new(key), 1);
    o.rekey(NOW, &next).unwrap();
    let data = rng.bytes(5000);
    let frames = seal_tensor(&mut s, 3, &data, 1024);
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let h = o.open_tensor(NOW, &refs).unwrap();
    assert_eq!(o.backend().download(h).unwrap(), data);
}
