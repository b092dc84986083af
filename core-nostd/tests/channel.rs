//! Channel frames: tampering, direction, sessions, replay simulation, chunking,
#![allow(clippy::cast_possible_truncation)] // test fixtures index small tables
//! expiry, rekey and u64 edges.

use pqcc_core::{
    Error,
    aead::{Aes256GcmProvider, RustCryptoAesGcm},
    channel::{EncryptedFrame, Limits, MAX_CHUNK_LEN, Opener, Sealer, Session, TensorAssembler},
    pair::establish_channel,
    replay::MAX_SEQ,
    secret::Secret,
    selftest::InsecureTestRng,
    sign::SigningKey,
    wire::{DType, FLAG_FINAL, FRAME_HEADER_MAX_LEN, FrameHeader, TensorMetadata},
};

const NOW: u64 = 1_700_000_000;

fn pair(seed: u8, limits: Limits) -> (Session, Session) {
    let mut rng = InsecureTestRng::new([seed; 32]);
    let key = SigningKey::from_seed(&Secret::new([0xb0; 32]));
    establish_channel(&key, &[], limits, NOW, &mut rng).unwrap()
}

fn meta(len: u64) -> TensorMetadata<'static> {
    TensorMetadata::new(42, "layer.0.weight", DType::U8, &[len]).unwrap()
}

fn seal(s: &mut Session, m: &TensorMetadata<'_>, offset: u64, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0xa5u8; FRAME_HEADER_MAX_LEN + data.len() + 16];
    let n = s.tx.seal_chunk(NOW, 3, m, offset, data, &mut out).unwrap();
    out.truncate(n);
    out
}

fn header_len(frame: &[u8]) -> usize {
    FrameHeader::decode(frame).unwrap().1
}

/// Re-encodes the frame's header after `edit`, keeping ciphertext and tag.
fn reheader(frame: &[u8], edit: impl FnOnce(&mut FrameHeader<'_>)) -> Vec<u8> {
    let (mut h, n) = FrameHeader::decode(frame).unwrap();
    edit(&mut h);
    let mut buf = [0u8; FRAME_HEADER_MAX_LEN];
    let m = postcard::to_slice(&h, &mut buf).unwrap().len();
    let mut out = buf[..m].to_vec();
    out.extend_from_slice(&frame[n..]);
    out
}

fn open(s: &mut Session, frame: &[u8]) -> Result<Vec<u8>, Error> {
    let mut f = frame.to_vec();
    let r =
        s.rx.open_in_place(NOW, &mut f)
            .map(|o| o.plaintext.to_vec());
    if r.is_err() {
        // No plaintext may remain in the buffer after a refused frame.
        let hl = FrameHeader::decode(frame).map(|(_, n)| n).unwrap_or(0);
        let plain = b"secret tensor bytes: 0123456789";
        assert!(!f[hl..].windows(8).any(|w| plain.windows(8).any(|p| p == w)));
    }
    r
}

#[test]
fn every_tamper_fails_with_the_right_error() {
    let (mut g, mut h) = pair(1, Limits::default());
    let data = b"secret tensor bytes: 0123456789";
    let m = meta(data.len() as u64);
    let f = seal(&mut g, &m, 0, data);
    let hl = header_len(&f);
    let view = EncryptedFrame::parse(&f).unwrap();
    assert_eq!((view.aad.len(), view.ciphertext.len()), (hl, data.len()));
    assert_eq!(view.header.meta, m);
    assert_ne!(view.ciphertext, data, "the ciphertext is not the plaintext");

    // A ciphertext bit, the tag.
    let mut x = f.clone();
    x[hl + 3] ^= 0x10;
    assert_eq!(open(&mut h, &x), Err(Error::Decrypt));
    let mut x = f.clone();
    *x.last_mut().unwrap() ^= 0x80;
    assert_eq!(open(&mut h, &x), Err(Error::Decrypt));
    // Each header field, re-encoded canonically so only authentication can catch it.
    let cases: Vec<(&str, Vec<u8>, Error)> = vec![
        ("stream", reheader(&f, |h| h.stream = 4), Error::Decrypt),
        ("seq", reheader(&f, |h| h.seq = 1), Error::Decrypt),
        ("meta.id", reheader(&f, |h| h.meta.id = 43), Error::Decrypt),
        (
            "meta.name",
            reheader(&f, |h| h.meta.name = "layer.1.weight"),
            Error::Decrypt,
        ),
        (
            "meta.dtype+shape",
            reheader(&f, |h| {
                h.meta.dtype = DType::I8;
            }),
            Error::Decrypt,
        ),
        (
            "meta.shape",
            reheader(&f, |h| {
                h.meta.shape = heapless::Vec::from_slice(&[1, 31]).unwrap();
            }),
            Error::Decrypt,
        ),
        (
            "epoch",
            reheader(&f, |h| h.epoch = 1),
            Error::EpochMismatch {
                expected: 0,
                got: 1,
            },
        ),
        (
            "version",
            reheader(&f, |h| h.version = 2),
            Error::UnknownVersion(2),
        ),
        ("flags", reheader(&f, |h| h.flags = 0), Error::Malformed),
        (
            "flags unknown",
            reheader(&f, |h| h.flags = FLAG_FINAL | 4),
            Error::Malformed,
        ),
        ("offset", reheader(&f, |h| h.offset = 1), Error::Malformed),
        (
            "chunk_len",
            reheader(&f, |h| {
                h.chunk_len -= 1;
                h.meta.shape = heapless::Vec::from_slice(&[30]).unwrap();
                h.meta.total_len = 30;
            }),
            Error::TrailingBytes,
        ),
    ];
    for (what, frame, want) in cases {
        assert_eq!(open(&mut h, &frame), Err(want), "{what}");
    }
    // Truncation of the frame body, and extra bytes after it.
    assert_eq!(open(&mut h, &f[..f.len() - 1]), Err(Error::Truncated));
    assert_eq!(open(&mut h, &f[..hl + 10]), Err(Error::Truncated));
    let mut longer = f.clone();
    longer.push(0);
    assert_eq!(open(&mut h, &longer), Err(Error::TrailingBytes));
    // None of the refusals consumed seq 0: the genuine frame still opens, once.
    assert_eq!(open(&mut h, &f).unwrap(), data);
    assert_eq!(open(&mut h, &f), Err(Error::Replay { seq: 0 }));
}

#[test]
fn direction_and_session_separation() {
    let (mut g, mut h) = pair(1, Limits::default());
    let (mut g2, mut h2) = pair(2, Limits::default());
    let data = b"secret tensor bytes: 0123456789";
    let m = meta(data.len() as u64);
    let f = seal(&mut g, &m, 0, data);
    // The sender opening its own frame.
    assert_eq!(open(&mut g, &f), Err(Error::Decrypt));
    // Another session's receivers.
    assert_eq!(open(&mut h2, &f), Err(Error::Decrypt));
    assert_eq!(open(&mut g2, &f), Err(Error::Decrypt));
    // Reflection: the responder's frame back to the responder.
    let back = seal(&mut h, &m, 0, data);
    assert_eq!(open(&mut h, &back), Err(Error::Decrypt));
    assert_eq!(open(&mut g, &back).unwrap(), data);
    assert_eq!(open(&mut h, &f).unwrap(), data);
    let _ = &mut g2;
}

#[test]
fn seeded_simulation_of_loss_reordering_and_duplication() {
    // 4 words = a 256-frame window.
    let (mut g, mut h) = pair(7, Limits::default());
    let m = meta(16);
    let frames: Vec<Vec<u8>> = (0..4000u64)
        .map(|i| {
            let mut d = [0u8; 16];
            d[..8].copy_from_slice(&i.to_be_bytes());
            seal(&mut g, &m, 0, &d)
        })
        .collect();
    // The "network": a seeded xorshift drops 10 %, duplicates 10 %, and delays frames by
    // up to 400 positions (some beyond the 256-frame window).
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut delivery: Vec<(u64, usize)> = Vec::new();
    for i in 0..frames.len() {
        let r = next() % 100;
        if r < 10 {
            continue;
        }
        let delay = if next() % 5 == 0 { next() % 400 } else { 0 };
        delivery.push((i as u64 * 4 + delay * 4, i));
        if r < 20 {
            let delay2 = next() % 400;
            delivery.push((i as u64 * 4 + delay2 * 4 + 1, i));
        }
    }
    delivery.sort();
    let (mut ok, mut dup, mut old) = (0, 0, 0);
    let mut accepted = vec![false; frames.len()];
    let mut highest: Option<u64> = None;
    for (_, i) in delivery {
        let seq = i as u64;
        let expect = if highest.is_some_and(|hi| seq + 256 <= hi) {
            Err(Error::TooOld { seq })
        } else if accepted[i] {
            Err(Error::Replay { seq })
        } else {
            Ok(())
        };
        match (open(&mut h, &frames[i]), expect) {
            (Ok(p), Ok(())) => {
                assert_eq!(p[..8], seq.to_be_bytes());
                accepted[i] = true;
                highest = Some(highest.map_or(seq, |hi| hi.max(seq)));
                ok += 1;
            }
            (Err(Error::Replay { seq: s }), Err(Error::Replay { .. })) if s == seq => dup += 1,
            (Err(Error::TooOld { seq: s }), Err(Error::TooOld { .. })) if s == seq => old += 1,
            (got, want) => panic!("seq {seq}: got {got:?}, model says {want:?}"),
        }
    }
    println!("simulation: {ok} accepted, {dup} duplicates refused, {old} too old refused");
    assert!(ok > 3000 && dup > 100 && old > 50, "{ok} {dup} {old}");
}

#[test]
fn chunked_tensor_and_reassembly_rules() {
    let (mut g, mut h) = pair(3, Limits::default());
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let m = TensorMetadata::new(5, "big", DType::U16, &[5000]).unwrap();
    let other = TensorMetadata::new(6, "other", DType::U8, &[3000]).unwrap();
    let chunks: Vec<Vec<u8>> = data
        .chunks(3000)
        .enumerate()
        .map(|(i, c)| seal(&mut g, &m, i as u64 * 3000, c))
        .collect();
    assert_eq!(chunks.len(), 4);
    assert!(FrameHeader::decode(&chunks[3]).unwrap().0.is_final());
    assert!(!FrameHeader::decode(&chunks[2]).unwrap().0.is_final());
    let spliced = seal(&mut g, &other, 0, &data[..3000]);

    // In order: complete and identical.
    let mut asm = TensorAssembler::<4>::new();
    let mut out = Vec::new();
    for c in &chunks {
        let mut f = c.clone();
        let o = h.rx.open_in_place(NOW, &mut f).unwrap();
        let pos = asm.accept(&o.header).unwrap();
        assert_eq!(pos.offset as usize, out.len());
        out.extend_from_slice(o.plaintext);
    }
    assert_eq!(out, data);
    asm.finish_stream(3).unwrap();

    // Each violation, on a fresh receiver and assembler.
    type Case = (&'static str, Vec<usize>, Error);
    let cases: Vec<Case> = vec![
        ("reordered", vec![0, 2], Error::ChunkOutOfOrder),
        (
            "gap (lost middle chunk)",
            vec![0, 1, 3],
            Error::ChunkOutOfOrder,
        ),
        ("starts mid-tensor", vec![1], Error::ChunkOutOfOrder),
        ("spliced other tensor", vec![0, 99], Error::TensorTruncated),
        (
            "repeated chunk (replay)",
            vec![0, 0],
            Error::Replay { seq: 0 },
        ),
    ];
    for (what, order, want) in cases {
        let (mut g, mut h) = pair(3, Limits::default());
        // Re-create identical frames for this fresh pair (same RNG seed → same keys).
        let frames: Vec<Vec<u8>> = data
            .chunks(3000)
            .enumerate()
            .map(|(i, c)| seal(&mut g, &m, i as u64 * 3000, c))
            .collect();
        let spl = seal(&mut g, &other, 0, &data[..3000]);
        assert_eq!(spl, spliced);
        let mut asm = TensorAssembler::<4>::new();
        let mut err = None;
        for i in order {
            let mut f = if i == 99 {
                spl.clone()
            } else {
                frames[i].clone()
            };
            match h.rx.open_in_place(NOW, &mut f) {
                Ok(o) => {
                    if let Err(e) = asm.accept(&o.header) {
                        err = Some(e);
                        break;
                    }
                }
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert_eq!(err, Some(want), "{what}");
    }
    // Truncation: the stream ends before FINAL.
    let (mut g, mut h) = pair(3, Limits::default());
    let f0 = seal(&mut g, &m, 0, &data[..3000]);
    let mut asm = TensorAssembler::<4>::new();
    let mut f = f0.clone();
    let o = h.rx.open_in_place(NOW, &mut f).unwrap();
    asm.accept(&o.header).unwrap();
    assert!(asm.in_progress(3));
    assert_eq!(asm.finish_stream(3), Err(Error::TensorTruncated));
    // Too many streams in progress at once.
    let (mut g, mut h) = pair(4, Limits::default());
    let mut asm = TensorAssembler::<1>::new();
    for (stream, want) in [(0u32, Ok(())), (1u32, Err(Error::TooManyStreams))] {
        let mut out = vec![0u8; 4096];
        let n =
            g.tx.seal_chunk(NOW, stream, &m, 0, &data[..100], &mut out)
                .unwrap();
        let o = h.rx.open_in_place(NOW, &mut out[..n]).unwrap();
        assert_eq!(asm.accept(&o.header).map(|_| ()), want);
    }
}

#[test]
fn expiry_frame_limit_and_rekey() {
    let limits = Limits {
        max_frames: 3,
        ttl_secs: 60,
    };
    let (mut g, mut h) = pair(5, limits);
    let m = meta(4);
    let mut buf = [0u8; 256];
    assert!(g.is_valid(NOW));
    assert_eq!(g.ttl_remaining(NOW + 10), 50);
    // Expiry by time, on both sides.
    assert_eq!(
        g.tx.seal_chunk(NOW + 60, 0, &m, 0, b"abcd", &mut buf),
        Err(Error::KeyExpired)
    );
    let n =
        g.tx.seal_chunk(NOW + 59, 0, &m, 0, b"abcd", &mut buf)
            .unwrap();
    let mut f = buf[..n].to_vec();
    assert_eq!(
        h.rx.open_in_place(NOW + 60, &mut f).err(),
        Some(Error::KeyExpired)
    );
    assert!(!g.is_valid(NOW + 60));
    h.rx.open_in_place(NOW + 59, &mut f).unwrap();
    // Frame count: 3 per epoch.
    for _ in 0..2 {
        let n = g.tx.seal_chunk(NOW, 0, &m, 0, b"abcd", &mut buf).unwrap();
        h.rx.open_in_place(NOW, &mut buf[..n]).unwrap();
    }
    assert_eq!(
        g.tx.seal_chunk(NOW, 0, &m, 0, b"abcd", &mut buf),
        Err(Error::FrameLimit)
    );
    // Explicit rekey on both sides: new epoch, seq restarts, old-epoch frames refused.
    let n = {
        let (mut g2, _) = pair(5, limits);
        g2.tx.seal_chunk(NOW, 0, &m, 0, b"abcd", &mut buf).unwrap()
    };
    let old_epoch_frame = buf[..n].to_vec();
    g.tx.rekey(NOW + 100).unwrap();
    h.rx.rekey(NOW + 100).unwrap();
    assert_eq!((g.tx.epoch(), g.tx.next_seq()), (1, 0));
    let n =
        g.tx.seal_chunk(NOW + 100, 0, &m, 0, b"efgh", &mut buf)
            .unwrap();
    assert_eq!(
        h.rx.open_in_place(NOW + 100, &mut buf[..n])
            .unwrap()
            .plaintext,
        b"efgh"
    );
    let mut f = old_epoch_frame.clone();
    assert_eq!(
        h.rx.open_in_place(NOW + 100, &mut f).err(),
        Some(Error::EpochMismatch {
            expected: 1,
            got: 0
        })
    );
    // A rekey on one side only: the frames no longer open.
    g.tx.rekey(NOW + 100).unwrap();
    let n =
        g.tx.seal_chunk(NOW + 100, 0, &m, 0, b"ijkl", &mut buf)
            .unwrap();
    assert_eq!(
        h.rx.open_in_place(NOW + 100, &mut buf[..n]).err(),
        Some(Error::EpochMismatch {
            expected: 1,
            got: 2
        })
    );
}

#[test]
fn sequence_number_edges() {
    // Build one direction by hand so frames can carry any seq.
    let key = Secret::new([9u8; 32]);
    let prefix = [1, 2, 3, 4];
    let limits = Limits {
        max_frames: u64::MAX,
        ttl_secs: 10,
    };
    let mut rx: Opener = Opener::new(&key, prefix, limits, NOW);
    let aead = RustCryptoAesGcm::new(key.expose());
    let m = meta(4);
    let frame_at = |seq: u64| {
        let h = FrameHeader {
            version: 1,
            stream: 0,
            epoch: 0,
            seq,
            flags: FLAG_FINAL,
            chunk_len: 4,
            offset: 0,
            meta: m.clone(),
        };
        let mut buf = [0u8; FRAME_HEADER_MAX_LEN];
        let n = h.encode(&mut buf).unwrap();
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&prefix);
        nonce[4..].copy_from_slice(&seq.to_be_bytes());
        let mut body = *b"wxyz";
        let tag = aead.seal_in_place(&nonce, &buf[..n], &mut body).unwrap();
        let mut f = buf[..n].to_vec();
        f.extend(body);
        f.extend(tag);
        f
    };
    let mut f = frame_at(u64::MAX);
    assert_eq!(
        rx.open_in_place(NOW, &mut f).err(),
        Some(Error::TooOld { seq: u64::MAX })
    );
    let mut f = frame_at(MAX_SEQ);
    assert_eq!(rx.open_in_place(NOW, &mut f).unwrap().plaintext, b"wxyz");
    let mut f = frame_at(MAX_SEQ);
    assert_eq!(
        rx.open_in_place(NOW, &mut f).err(),
        Some(Error::Replay { seq: MAX_SEQ })
    );
    let mut f = frame_at(MAX_SEQ - 1);
    rx.open_in_place(NOW, &mut f).unwrap();
    let mut f = frame_at(0);
    assert_eq!(
        rx.open_in_place(NOW, &mut f).err(),
        Some(Error::TooOld { seq: 0 })
    );
    // A sender whose frame limit is u64::MAX still stops before MAX_SEQ would wrap:
    // its limit is capped at MAX_SEQ frames (checked, not reached here).
    let mut tx: Sealer = Sealer::new(&key, prefix, limits, NOW);
    let mut out = [0u8; 256];
    tx.seal_chunk(NOW, 0, &m, 0, b"wxyz", &mut out).unwrap();
    assert_eq!(tx.next_seq(), 1);
    // Oversize chunks and bad arguments are refused before anything is sealed.
    let big = TensorMetadata::new(1, "big", DType::U8, &[u64::from(MAX_CHUNK_LEN) + 1]).unwrap();
    let mut chunk = vec![0u8; MAX_CHUNK_LEN as usize + 1];
    let mut hdr = [0u8; FRAME_HEADER_MAX_LEN];
    assert_eq!(
        tx.seal_chunk_in_place(NOW, 0, &big, 0, &mut chunk, &mut hdr)
            .err(),
        Some(Error::Oversize)
    );
    assert_eq!(
        tx.seal_chunk(NOW, 0, &m, 2, b"wxyz", &mut out).err(),
        Some(Error::InvalidArgument)
    );
    assert_eq!(
        tx.seal_chunk(NOW, 0, &m, 0, b"wxyz", &mut out[..20]).err(),
        Some(Error::BufferTooSmall)
    );
    assert_eq!(
        tx.next_seq(),
        1,
        "refused seals must not consume a sequence number"
    );
}
