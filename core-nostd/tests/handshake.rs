//! Two peers completing the v1 handshake in memory, and every way it must fail.
#![allow(clippy::cast_possible_truncation)] // test fixtures index small tables

use pqcc_core::{
    Error,
    channel::{Limits, Session},
    handshake::{Initiator, Responder, write_reject},
    secret::Secret,
    selftest::InsecureTestRng,
    sign::SigningKey,
    wire::{
        self, ACCEPT_MAX_LEN, Bytes, CHALLENGE_MAX_LEN, DType, Evidence, Grant, HELLO_MAX_LEN,
        Message, Platform, RejectReason, TensorMetadata,
    },
};

fn broker() -> SigningKey {
    SigningKey::from_seed(&Secret::new([0xb0; 32]))
}

/// Everything both sides send in one run, for tampering.
struct Run {
    challenge: Vec<u8>,
    hello: Vec<u8>,
    accept: Vec<u8>,
}

fn run_once(seed: u8) -> (Run, pqcc_core::handshake::SessionKeys) {
    let mut rng = InsecureTestRng::new([seed; 32]);
    let key = broker();
    let mut ch = vec![0u8; CHALLENGE_MAX_LEN];
    let (resp, n) = Responder::start(&mut rng, &mut ch).unwrap();
    ch.truncate(n);
    let init = Initiator::new(key.public_key()).unwrap();
    let aw = init.handle_challenge(&ch, &mut rng).unwrap();
    let bind = *aw.binding();
    let mut hello = vec![0u8; HELLO_MAX_LEN];
    let (aw, n) = aw
        .write_hello(
            Evidence {
                platform: Platform::InsecureNone,
                data: Bytes(&bind.0),
            },
            &mut hello,
        )
        .unwrap();
    hello.truncate(n);
    let v = resp.handle_hello(&hello).unwrap();
    assert!(v.binding().matches(v.evidence().data.0));
    let grants = [Grant {
        stream: 1,
        name: "model-dek",
        len: 32,
    }];
    let mut acc = vec![0u8; ACCEPT_MAX_LEN];
    let (rkeys, n) = v.accept(&key, &grants, &mut rng, &mut acc).unwrap();
    acc.truncate(n);
    let (ikeys, got) = aw.handle_response(&acc).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name, "model-dek");
    drop(got);
    assert_eq!(ikeys.session_id, rkeys.session_id);
    assert!(ikeys.i2r_key.ct_eq(&rkeys.i2r_key));
    assert!(ikeys.r2i_key.ct_eq(&rkeys.r2i_key));
    assert!(!ikeys.i2r_key.ct_eq(&ikeys.r2i_key));
    assert_ne!(ikeys.i2r_prefix, ikeys.r2i_prefix);
    assert!(ikeys.export(b"x").ct_eq(&rkeys.export(b"x")));
    assert!(!ikeys.export(b"x").ct_eq(&rkeys.export(b"y")));
    (
        Run {
            challenge: ch,
            hello,
            accept: acc,
        },
        ikeys,
    )
}

/// Replays the guest side of `run` against a (possibly tampered) Accept.
fn guest_against(run: &Run, accept: &[u8], trusted: &[u8]) -> Result<(), Error> {
    // Reconstruct the guest's state by re-running it with the same RNG stream.
    let mut rng = InsecureTestRng::new([1; 32]);
    let mut ch = vec![0u8; CHALLENGE_MAX_LEN];
    let _ = Responder::start(&mut rng, &mut ch).unwrap(); // keeps the RNG stream aligned
    let aw = Initiator::new(trusted)?.handle_challenge(&run.challenge, &mut rng)?;
    let bind = *aw.binding();
    let mut hello = vec![0u8; HELLO_MAX_LEN];
    let (aw, n) = aw.write_hello(
        Evidence {
            platform: Platform::InsecureNone,
            data: Bytes(&bind.0),
        },
        &mut hello,
    )?;
    assert_eq!(&hello[..n], &run.hello[..], "guest replay diverged");
    aw.handle_response(accept).map(|_| ())
}

#[test]
fn peers_complete_and_talk() {
    let (_, ikeys) = run_once(1);
    let mut rng = InsecureTestRng::new([2; 32]);
    let key = broker();
    let (mut g, mut h): (Session, Session) =
        pqcc_core::pair::establish_channel(&key, &[], Limits::default(), 10, &mut rng).unwrap();
    assert_eq!(g.session_id(), h.session_id());
    assert_ne!(g.session_id(), &ikeys.session_id);
    let meta = TensorMetadata::new(1, "x", DType::U8, &[5]).unwrap();
    let mut f = [0u8; 128];
    let n = h.tx.seal_chunk(10, 0, &meta, 0, b"hello", &mut f).unwrap();
    assert_eq!(
        g.rx.open_in_place(10, &mut f[..n]).unwrap().plaintext,
        b"hello"
    );
}

#[test]
fn untouched_run_verifies_in_replay() {
    let (run, _) = run_once(1);
    guest_against(&run, &run.accept, broker().public_key()).unwrap();
}

#[test]
fn every_accept_byte_is_authenticated() {
    let (run, _) = run_once(1);
    let pk = broker();
    // Flip one bit in: kem_ct, the grant list, the signature; each must fail.
    let sig_start = run.accept.len() - 3309;
    for &i in &[
        4usize,
        500,
        1091,
        1093,
        1095,
        sig_start,
        sig_start + 1000,
        run.accept.len() - 1,
    ] {
        let mut a = run.accept.clone();
        a[i] ^= 0x01;
        let e = guest_against(&run, &a, pk.public_key()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::BadSignature | Error::Malformed | Error::NonCanonical
            ),
            "byte {i}: {e:?}"
        );
    }
}

#[test]
fn wrong_broker_key_is_refused() {
    let (run, _) = run_once(1);
    let other = SigningKey::from_seed(&Secret::new([0xee; 32]));
    assert_eq!(
        guest_against(&run, &run.accept, other.public_key()),
        Err(Error::BadSignature)
    );
}

#[test]
fn accept_from_another_handshake_is_refused() {
    let (run1, _) = run_once(1);
    let (run2, _) = run_once(3);
    assert_eq!(
        guest_against(&run1, &run2.accept, broker().public_key()),
        Err(Error::BadSignature)
    );
}

#[test]
fn reject_and_wrong_messages() {
    let (run, _) = run_once(1);
    let mut r = [0u8; 8];
    let n = write_reject(RejectReason::Policy, &mut r).unwrap();
    assert_eq!(
        guest_against(&run, &r[..n], broker().public_key()),
        Err(Error::Rejected(RejectReason::Policy))
    );
    assert_eq!(
        guest_against(&run, &run.challenge, broker().public_key()),
        Err(Error::UnexpectedMessage)
    );
    // A responder fed a Challenge instead of a Hello.
    let mut rng = InsecureTestRng::new([5; 32]);
    let mut ch = [0u8; CHALLENGE_MAX_LEN];
    let (resp, _) = Responder::start(&mut rng, &mut ch).unwrap();
    assert_eq!(
        resp.handle_hello(&run.challenge).err(),
        Some(Error::UnexpectedMessage)
    );
    // An initiator fed a Reject instead of a Challenge.
    let init = Initiator::new(broker().public_key()).unwrap();
    assert_eq!(
        init.handle_challenge(&r[..n], &mut rng).err(),
        Some(Error::UnexpectedMessage)
    );
    assert_eq!(Initiator::new(&[0u8; 10]).err(), Some(Error::InvalidKey));
}

#[test]
fn relayed_or_replayed_hello_fails_the_binding() {
    // The Hello of run 1, presented to a fresh responder with a new challenge: it decodes,
    // but the binding value the responder computes differs from the evidence's report data.
    let (run, _) = run_once(1);
    let mut rng = InsecureTestRng::new([77; 32]);
    let mut ch = [0u8; CHALLENGE_MAX_LEN];
    let (resp, _) = Responder::start(&mut rng, &mut ch).unwrap();
    let v = resp.handle_hello(&run.hello).unwrap();
    assert!(!v.binding().matches(v.evidence().data.0));
    // A man in the middle swapping the ML-KEM key in the Hello changes the binding too.
    let mut rng = InsecureTestRng::new([1; 32]);
    let mut ch2 = [0u8; CHALLENGE_MAX_LEN];
    let (resp, _) = Responder::start(&mut rng, &mut ch2).unwrap();
    assert_eq!(&ch2[..], &run.challenge[..]);
    let mut h = run.hello.clone();
    h[40] ^= 1; // inside kem_ek
    match resp.handle_hello(&h) {
        Ok(v) => assert!(!v.binding().matches(v.evidence().data.0)),
        Err(e) => assert_eq!(e, Error::InvalidKey),
    }
}

#[test]
fn malformed_hellos_never_panic() {
    let (run, _) = run_once(1);
    let mut x: u32 = 12345;
    for _ in 0..3000 {
        let mut rng = InsecureTestRng::new([1; 32]);
        let mut ch = [0u8; CHALLENGE_MAX_LEN];
        let (resp, _) = Responder::start(&mut rng, &mut ch).unwrap();
        let mut h = run.hello.clone();
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let i = (x as usize >> 3) % h.len();
        h[i] ^= (x >> 24) as u8 | 1;
        if x.is_multiple_of(7) {
            h.truncate(i);
        }
        let _ = resp.handle_hello(&h);
        let _ = wire::decode_message(&h);
    }
    assert!(matches!(
        wire::decode_message(&run.hello),
        Ok(Message::Hello(_))
    ));
}

#[test]
fn gpu_nonce_is_derived_from_the_binding_value() {
    // SHA3-256("pqcc/v1/gpu-nonce" ‖ 64 × 0x11), computed independently (Python hashlib).
    let b = pqcc_core::handshake::BindingValue([0x11; 64]);
    assert_eq!(
        hex::encode(b.gpu_nonce()),
        "f7e6959db9de85b3bde358423273087438d34d9fde08c4a0f2cc0782c48ec2ed"
    );
    // Both sides compute the same nonce; another handshake gets another one.
    let mut rng = InsecureTestRng::new([3; 32]);
    let key = broker();
    let mut ch = vec![0u8; CHALLENGE_MAX_LEN];
    let (resp, n) = Responder::start(&mut rng, &mut ch).unwrap();
    let aw = Initiator::new(key.public_key())
        .unwrap()
        .handle_challenge(&ch[..n], &mut rng)
        .unwrap();
    let bind = *aw.binding();
    let mut hello = vec![0u8; HELLO_MAX_LEN];
    let (_, hn) = aw
        .write_hello(
            Evidence {
                platform: Platform::InsecureNone,
                data: Bytes(&bind.0),
            },
            &mut hello,
        )
        .unwrap();
    let v = resp.handle_hello(&hello[..hn]).unwrap();
    assert_eq!(v.binding().gpu_nonce(), bind.gpu_nonce());
    let (_, other) = run_once(1);
    drop(other);
    let mut rng = InsecureTestRng::new([4; 32]);
    let (_, n) = Responder::start(&mut rng, &mut ch).unwrap();
    let aw2 = Initiator::new(key.public_key())
        .unwrap()
        .handle_challenge(&ch[..n], &mut rng)
        .unwrap();
    assert_ne!(aw2.binding().gpu_nonce(), bind.gpu_nonce());
}

/// GPU evidence swapped in the Hello on the way (a relayed report from another GPU):
/// the broker may even accept what it received, but the transcript it signs is not the
/// guest's, so the guest refuses the Accept.
#[test]
fn swapped_gpu_evidence_fails_the_handshake() {
    use pqcc_core::bundle::{Claims, EvidenceBundle, GpuEvidenceList};
    let mut rng = InsecureTestRng::new([5; 32]);
    let key = broker();
    let mut ch = vec![0u8; CHALLENGE_MAX_LEN];
    let (resp, n) = Responder::start(&mut rng, &mut ch).unwrap();
    let aw = Initiator::new(key.public_key())
        .unwrap()
        .handle_challenge(&ch[..n], &mut rng)
        .unwrap();
    let bind = *aw.binding();
    let claims = Claims {
        model_name: "tiny",
        model_revision: "r1",
        model_root_hash: [7; 32],
    };
    let bundle_with = |gpu_blob: &[u8]| {
        let mut list = vec![0u8; 64];
        let ln = GpuEvidenceList::new(&[gpu_blob])
            .unwrap()
            .encode(&mut list)
            .unwrap();
        list.truncate(ln);
        let mut out = vec![0u8; 256];
        let bn = EvidenceBundle::new(claims, &bind.0, Some(&list))
            .encode(&mut out)
            .unwrap();
        out.truncate(bn);
        out
    };
    let mine = bundle_with(b"GPU-A evidence");
    let theirs = bundle_with(b"GPU-B evidence");
    assert_eq!(mine.len(), theirs.len());
    let mut hello = vec![0u8; HELLO_MAX_LEN];
    let (aw, hn) = aw
        .write_hello(
            Evidence {
                platform: Platform::InsecureNone,
                data: Bytes(&mine),
            },
            &mut hello,
        )
        .unwrap();
    hello.truncate(hn);
    // The host swaps the GPU blob inside the bundle (same length, so it still decodes).
    let at = hello
        .windows(mine.len())
        .position(|w| w == mine.as_slice())
        .unwrap();
    let mut swapped = hello.clone();
    swapped[at..at + mine.len()].copy_from_slice(&theirs);
    let v = resp.handle_hello(&swapped).unwrap();
    let got = EvidenceBundle::decode(v.evidence().data.0).unwrap();
    let list = GpuEvidenceList::decode(got.gpu.unwrap().0).unwrap();
    assert_eq!(list.blobs[0].0, b"GPU-B evidence");
    // The TEE binding alone does not see the swap…
    assert!(v.binding().matches(got.tee.0));
    let mut acc = vec![0u8; ACCEPT_MAX_LEN];
    let (_, an) = v.accept(&key, &[], &mut rng, &mut acc).unwrap();
    // …the transcript does.
    assert_eq!(
        aw.handle_response(&acc[..an]).err(),
        Some(Error::BadSignature)
    );
}
