//! Every parser and state machine fed random and mutated bytes: nothing panics, and
//! nothing but the genuine input is accepted.
#![allow(clippy::cast_possible_truncation)] // PRNG output sliced into bytes and indices

use pqcc_core::{
    channel::{EncryptedFrame, Limits, Session},
    handshake::{Initiator, Responder},
    pair::establish_channel,
    secret::Secret,
    selftest::InsecureTestRng,
    sign::SigningKey,
    wire::{self, CHALLENGE_MAX_LEN, DType, FrameHeader, TensorMetadata},
};

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut v = input.to_vec();
        for _ in 0..=(self.next() % 4) {
            match self.next() % 5 {
                0 if !v.is_empty() => {
                    let i = (self.next() as usize) % v.len();
                    v[i] ^= 1 << (self.next() % 8);
                }
                1 if !v.is_empty() => {
                    let i = (self.next() as usize) % v.len();
                    v.truncate(i);
                }
                2 => {
                    let i = (self.next() as usize) % (v.len() + 1);
                    v.insert(i, self.next() as u8);
                }
                3 if !v.is_empty() => {
                    let i = (self.next() as usize) % v.len();
                    v[i] = [0x00, 0x7f, 0x80, 0xff][(self.next() % 4) as usize];
                }
                _ => {
                    let n = (self.next() % 8) as usize;
                    v.extend((0..n).map(|_| self.next() as u8));
                }
            }
        }
        v
    }
}

#[test]
fn random_bytes_never_panic_any_parser() {
    let mut r = XorShift(0x1234_5678_9abc_def1);
    for _ in 0..50_000 {
        let n = (r.next() % 300) as usize;
        let mut b: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
        if !b.is_empty() && r.next().is_multiple_of(2) {
            b[0] = 1; // get past the version check half the time
        }
        let _ = wire::decode_message(&b);
        let _ = FrameHeader::decode(&b);
        let _ = EncryptedFrame::parse(&b);
    }
}

#[test]
fn mutated_frames_are_refused_and_the_original_still_opens() {
    let mut rng = InsecureTestRng::new([3; 32]);
    let key = SigningKey::from_seed(&Secret::new([0xb0; 32]));
    let (mut g, mut h): (Session, Session) =
        establish_channel(&key, &[], Limits::default(), 100, &mut rng).unwrap();
    let meta = TensorMetadata::new(1, "t", DType::F16, &[3, 5]).unwrap();
    let mut frame = vec![0u8; 512];
    let n =
        g.tx.seal_chunk(100, 0, &meta, 0, &[7u8; 30], &mut frame)
            .unwrap();
    frame.truncate(n);
    let mut r = XorShift(0x0bad_cafe_f00d_d00d);
    let mut refused = 0;
    for _ in 0..20_000 {
        let mut m = r.mutate(&frame);
        if m == frame {
            continue;
        }
        assert!(
            h.rx.open_in_place(100, &mut m).is_err(),
            "a mutated frame opened"
        );
        refused += 1;
    }
    let mut f = frame.clone();
    assert_eq!(
        h.rx.open_in_place(100, &mut f).unwrap().plaintext,
        &[7u8; 30]
    );
    println!("robustness: {refused} mutated frames refused");
}

#[test]
fn mutated_handshake_messages_are_refused() {
    let key = SigningKey::from_seed(&Secret::new([0xb0; 32]));
    let mut r = XorShift(0xfeed_beef_1234_0001);
    // Mutated challenges: refused or (if still a valid challenge) harmless.
    let mut rng = InsecureTestRng::new([4; 32]);
    let mut ch = [0u8; CHALLENGE_MAX_LEN];
    let (_, n) = Responder::start(&mut rng, &mut ch).unwrap();
    for _ in 0..2_000 {
        let m = r.mutate(&ch[..n]);
        let init = Initiator::new(key.public_key()).unwrap();
        if let Ok(st) = init.handle_challenge(&m, &mut rng) {
            // Only a well-formed challenge (32-byte nonce changed) may pass.
            assert_eq!(m.len(), CHALLENGE_MAX_LEN);
            drop(st);
        }
    }
}
