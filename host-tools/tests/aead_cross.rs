//! Cross-test of the two AES-256-GCM providers on the same bytes: random keys, nonces,
//! AAD and messages of lengths 0..70000 (with the block and SIMD-stride edges), equal
//! ciphertext and tag, each opening the other's output, and tampering refused by both.
//! Set `PQCC_TEST_SEED` to replay a run; the seed is printed.

use pqcc_core::{
    Error,
    aead::{Aes256GcmProvider, KEY_LEN, NONCE_LEN, RustCryptoAesGcm, TAG_LEN},
};
use pqcc_tools::{aead::AwsLcAesGcm, rng::OsRng};
use rand_core::TryRng;

/// SplitMix64: a small deterministic generator for test inputs (not for keys in use).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("below n")
    }

    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        self.fill(&mut a);
        a
    }
}

fn seed() -> u64 {
    match std::env::var("PQCC_TEST_SEED") {
        Ok(s) => s.parse().expect("PQCC_TEST_SEED must be a u64"),
        Err(_) => OsRng.try_next_u64().expect("OS RNG"),
    }
}

/// Lengths around every 16-byte block boundary up to 1 KiB, around the strides of the
/// SIMD code paths (6, 8, 16 and 32 blocks), and at the top of the range.
fn edge_lengths() -> Vec<usize> {
    let mut v: Vec<usize> = (0..=80).collect();
    for base in (96..=1024).step_by(16) {
        v.extend([base - 1, base, base + 1]);
    }
    for base in [1536, 2048, 3072, 4096, 8192, 16384, 32768, 65536] {
        v.extend([
            base - 17,
            base - 16,
            base - 1,
            base,
            base + 1,
            base + 15,
            base + 16,
        ]);
    }
    v.extend([69_983, 69_998, 69_999]);
    v.sort_unstable();
    v.dedup();
    v
}

/// Flips one bit of `buf` at a random position.
fn flip(rng: &mut SplitMix, buf: &mut [u8]) {
    let i = rng.below(buf.len());
    buf[i] ^= 1 << rng.below(8);
}

/// (ciphertext, tag, AAD, nonce) with one of them altered.
type Tampered = (Vec<u8>, [u8; TAG_LEN], Vec<u8>, [u8; NONCE_LEN]);

fn check_case(rng: &mut SplitMix, len: usize, aad_len: usize) {
    let key: [u8; KEY_LEN] = rng.array();
    let nonce: [u8; NONCE_LEN] = rng.array();
    let mut aad = vec![0u8; aad_len];
    rng.fill(&mut aad);
    let mut pt = vec![0u8; len];
    rng.fill(&mut pt);
    let rc = RustCryptoAesGcm::new(&key);
    let aws = AwsLcAesGcm::new(&key);

    let mut ct_rc = pt.clone();
    let tag_rc = rc.seal_in_place(&nonce, &aad, &mut ct_rc).unwrap();
    let mut ct_aws = pt.clone();
    let tag_aws = aws.seal_in_place(&nonce, &aad, &mut ct_aws).unwrap();
    assert_eq!(
        ct_rc, ct_aws,
        "ciphertext differs: len {len}, aad {aad_len}"
    );
    assert_eq!(tag_rc, tag_aws, "tag differs: len {len}, aad {aad_len}");
    if len >= 16 {
        // (Shorter ciphertexts may equal their plaintext by chance.)
        assert_ne!(ct_rc, pt);
    }

    // Each opens the other's output.
    let mut buf = ct_rc.clone();
    aws.open_in_place(&nonce, &aad, &mut buf, &tag_rc).unwrap();
    assert_eq!(buf, pt);
    let mut buf = ct_aws.clone();
    rc.open_in_place(&nonce, &aad, &mut buf, &tag_aws).unwrap();
    assert_eq!(buf, pt);

    // Tampering with the ciphertext, the tag, the AAD or the nonce is refused by both;
    // the aws-lc provider leaves zeros, neither leaves the plaintext.
    let mut tampered: Vec<Tampered> = Vec::new();
    if len > 0 {
        let mut c = ct_rc.clone();
        flip(rng, &mut c);
        tampered.push((c, tag_rc, aad.clone(), nonce));
    }
    let mut t = tag_rc;
    flip(rng, &mut t);
    tampered.push((ct_rc.clone(), t, aad.clone(), nonce));
    if aad_len > 0 {
        let mut a = aad.clone();
        flip(rng, &mut a);
        tampered.push((ct_rc.clone(), tag_rc, a, nonce));
    }
    let mut a = aad.clone();
    a.push(0);
    tampered.push((ct_rc.clone(), tag_rc, a, nonce));
    let mut n = nonce;
    flip(rng, &mut n);
    tampered.push((ct_rc.clone(), tag_rc, aad.clone(), n));
    if len > 0 {
        // Truncated ciphertext.
        tampered.push((ct_rc[..len - 1].to_vec(), tag_rc, aad.clone(), nonce));
    }
    for (c, t, a, n) in tampered {
        let mut b = c.clone();
        assert_eq!(
            aws.open_in_place(&n, &a, &mut b, &t),
            Err(Error::Decrypt),
            "aws-lc accepted a tampered input: len {len}, aad {aad_len}"
        );
        assert!(
            b.iter().all(|&x| x == 0),
            "aws-lc left bytes after a failed open"
        );
        let mut b = c.clone();
        assert_eq!(
            rc.open_in_place(&n, &a, &mut b, &t),
            Err(Error::Decrypt),
            "rustcrypto accepted a tampered input: len {len}, aad {aad_len}"
        );
        if len > 16 {
            assert_ne!(
                b[..],
                pt[..b.len()],
                "rustcrypto left plaintext after a failed open"
            );
        }
    }
}

#[test]
fn providers_agree_on_edge_lengths() {
    let s = seed();
    println!("PQCC_TEST_SEED={s}");
    let mut rng = SplitMix(s);
    let lengths = edge_lengths();
    let aad_lengths = [0usize, 1, 13, 15, 16, 17, 31, 32, 33, 64, 255, 256, 1000];
    let mut cases = 0;
    for &len in &lengths {
        let aad_len = aad_lengths[rng.below(aad_lengths.len())];
        check_case(&mut rng, len, aad_len);
        cases += 1;
    }
    for &aad_len in &aad_lengths {
        for len in [0, 1, 16, 17, 4096] {
            check_case(&mut rng, len, aad_len);
            cases += 1;
        }
    }
    println!("edge cases: {cases} (lengths {} distinct)", lengths.len());
}

#[test]
fn providers_agree_on_random_inputs() {
    let s = seed();
    println!("PQCC_TEST_SEED={s}");
    let mut rng = SplitMix(s);
    let n = 300;
    for _ in 0..n {
        let len = rng.below(70_000);
        let aad_len = rng.below(600);
        check_case(&mut rng, len, aad_len);
    }
    println!("random cases: {n}");
}

#[test]
fn providers_agree_through_the_channel() {
    use pqcc_core::{
        channel::{DEFAULT_WINDOW_WORDS, Limits, MAX_CHUNK_LEN},
        pair::establish_channel,
        sign::SigningKey,
        wire::{DType, FRAME_HEADER_MAX_LEN, TensorMetadata},
    };
    // A frame sealed by a channel on one provider opens on the other: the session keys
    // come from one handshake, then each side is rebuilt on the other provider with the
    // same keys by running the handshake with a recorded randomness stream.
    struct Replay<'a>(&'a [u8], usize);
    impl TryRng for Replay<'_> {
        type Error = core::convert::Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            let mut b = [0u8; 4];
            self.try_fill_bytes(&mut b)?;
            Ok(u32::from_le_bytes(b))
        }
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            let mut b = [0u8; 8];
            self.try_fill_bytes(&mut b)?;
            Ok(u64::from_le_bytes(b))
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
            let end = self.1 + dst.len();
            dst.copy_from_slice(&self.0[self.1..end]);
            self.1 = end;
            Ok(())
        }
    }
    impl rand_core::TryCryptoRng for Replay<'_> {}

    let mut stream = vec![0u8; 64 * 1024];
    OsRng.try_fill_bytes(&mut stream).unwrap();
    let broker = SigningKey::generate(&mut OsRng.unwrap_err());
    let now = 1_700_000_000;
    let (mut a_rc, _) = establish_channel::<RustCryptoAesGcm, DEFAULT_WINDOW_WORDS, _>(
        &broker,
        &[],
        Limits::default(),
        now,
        &mut Replay(&stream, 0),
    )
    .unwrap();
    let (mut a_aws, mut b_aws) = establish_channel::<AwsLcAesGcm, DEFAULT_WINDOW_WORDS, _>(
        &broker,
        &[],
        Limits::default(),
        now,
        &mut Replay(&stream, 0),
    )
    .unwrap();
    assert_eq!(a_rc.session_id(), a_aws.session_id());
    let mut rng = SplitMix(seed());
    for len in [0usize, 1, 4096, 70_001, MAX_CHUNK_LEN as usize] {
        let meta = TensorMetadata::new(7, "t", DType::U8, &[len as u64]).unwrap();
        let mut pt = vec![0u8; len];
        rng.fill(&mut pt);
        let mut hdr = [0u8; FRAME_HEADER_MAX_LEN];
        let mut c1 = pt.clone();
        let (h1, t1) = a_rc
            .tx
            .seal_chunk_in_place(now, 3, &meta, 0, &mut c1, &mut hdr)
            .unwrap();
        let f1 = [&hdr[..h1], &c1[..], &t1[..]].concat();
        let mut c2 = pt.clone();
        let (h2, t2) = a_aws
            .tx
            .seal_chunk_in_place(now, 3, &meta, 0, &mut c2, &mut hdr)
            .unwrap();
        let f2 = [&hdr[..h2], &c2[..], &t2[..]].concat();
        assert_eq!(f1, f2, "frames differ between providers (len {len})");
        // The rustcrypto sender's frame opens on the aws-lc receiver.
        let mut f = f1;
        let opened = b_aws.rx.open_in_place(now, &mut f).unwrap();
        assert_eq!(opened.plaintext, &pt[..]);
    }
}
