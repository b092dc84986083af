//! Golden bytes for every v1 message, maximum sizes, and strict-decoding refusals.
#![allow(clippy::cast_possible_truncation)] // test fixtures index small tables

use pqcc_core::{
    Error,
    wire::{
        self, ACCEPT_MAX_LEN, Accept, Bytes, CHALLENGE_MAX_LEN, Challenge, DType, Evidence,
        FRAME_HEADER_MAX_LEN, FrameHeader, Grant, HELLO_MAX_LEN, Hello, MAX_EVIDENCE_LEN,
        MAX_GRANT_NAME_LEN, MAX_GRANTS, MAX_RANK, MAX_TENSOR_NAME_LEN, Message, Platform,
        REJECT_MAX_LEN, Reject, RejectReason, TensorMetadata,
    },
};

/// Encodes into a buffer pre-filled with 0xa5 so an unwritten byte would show.
fn enc(m: &Message<'_>) -> Vec<u8> {
    let mut buf = vec![0xa5u8; HELLO_MAX_LEN + 16];
    let n = m.encode(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn golden_challenge() {
    let m = Message::Challenge(Challenge {
        nonce_b: [0x11; 32],
    });
    let mut expect = vec![
        0x01, // version 1
        0x00, // message type 0 = Challenge
    ];
    expect.extend([0x11; 32]); // nonce_b, 32 raw bytes
    assert_eq!(enc(&m), expect);
    assert_eq!(wire::decode_message(&expect).unwrap(), m);
}

#[test]
fn golden_hello() {
    let ek = [0x22u8; 1184];
    let m = Message::Hello(Hello {
        nonce_g: [0x44; 32],
        kem_ek: Bytes(&ek),
        evidence: Evidence {
            platform: Platform::SevSnp,
            data: Bytes(&[0x33, 0x34, 0x35]),
        },
    });
    let mut expect = vec![
        0x01, // version 1
        0x01, // message type 1 = Hello
    ];
    expect.extend([0x44; 32]); // nonce_g
    expect.extend([0xa0, 0x09]); // kem_ek length 1184 as varint
    expect.extend(ek); // kem_ek
    expect.push(0x01); // platform 1 = SevSnp (0 = InsecureNone, 2 = Tdx)
    expect.push(0x03); // evidence length 3
    expect.extend([0x33, 0x34, 0x35]); // evidence bytes
    assert_eq!(enc(&m), expect);
    assert_eq!(wire::decode_message(&expect).unwrap(), m);
}

#[test]
fn golden_accept() {
    let ct = [0x55u8; 1088];
    let sig = [0x66u8; 3309];
    let mut grants = heapless::Vec::new();
    grants
        .push(Grant {
            stream: 7,
            name: "dek",
            len: 300,
        })
        .unwrap();
    let m = Message::Accept(Accept {
        kem_ct: Bytes(&ct),
        grants,
        signature: Bytes(&sig),
    });
    let mut expect = vec![
        0x01, // version 1
        0x02, // message type 2 = Accept
        0xc0, 0x08, // kem_ct length 1088
    ];
    expect.extend(ct);
    expect.push(0x01); // one grant
    expect.push(0x07); // grant.stream 7
    expect.extend([0x03, b'd', b'e', b'k']); // grant.name "dek"
    expect.extend([0xac, 0x02]); // grant.len 300
    expect.extend([0xed, 0x19]); // signature length 3309
    expect.extend(sig);
    assert_eq!(enc(&m), expect);
    assert_eq!(wire::decode_message(&expect).unwrap(), m);
}

#[test]
fn golden_reject() {
    // Pins the frozen order of RejectReason too.
    let reasons = [
        RejectReason::Evidence,
        RejectReason::Policy,
        RejectReason::Replay,
        RejectReason::Malformed,
        RejectReason::Version,
        RejectReason::Timeout,
        RejectReason::Internal,
    ];
    for (i, r) in reasons.into_iter().enumerate() {
        let m = Message::Reject(Reject { reason: r });
        // version 1, message type 3 = Reject, reason index
        let expect = vec![0x01, 0x03, i as u8];
        assert_eq!(enc(&m), expect);
        assert_eq!(wire::decode_message(&expect).unwrap(), m);
    }
}

fn sample_header() -> FrameHeader<'static> {
    FrameHeader {
        version: 1,
        stream: 2,
        epoch: 0,
        seq: 300,
        flags: wire::FLAG_FINAL,
        chunk_len: 24,
        offset: 0,
        meta: TensorMetadata::new(9, "w.0", DType::F32, &[2, 3]).unwrap(),
    }
}

#[test]
fn golden_frame_header() {
    let h = sample_header();
    let expect = vec![
        0x01, // version 1
        0x02, // stream 2
        0x00, // epoch 0
        0xac, 0x02, // seq 300
        0x01, // flags FINAL
        0x18, // chunk_len 24
        0x00, // offset 0
        0x09, // meta.id 9
        0x03, b'w', b'.', b'0', // meta.name "w.0"
        0x0c, // meta.dtype 12 = F32
        0x02, 0x02, 0x03, // meta.shape [2, 3]
        0x18, // meta.total_len 24
    ];
    let mut buf = [0xa5u8; FRAME_HEADER_MAX_LEN];
    let n = h.encode(&mut buf).unwrap();
    assert_eq!(buf[..n], expect[..]);
    let mut frame = expect.clone();
    frame.extend([0u8; 40]);
    let (d, len) = FrameHeader::decode(&frame).unwrap();
    assert_eq!((d, len), (h, expect.len()));
}

#[test]
fn dtype_order_is_frozen() {
    use DType::*;
    let all = [
        Bytes, Bool, U8, I8, U16, I16, U32, I32, U64, I64, F16, BF16, F32, F64, F8E4M3, F8E5M2,
    ];
    for (i, d) in all.into_iter().enumerate() {
        let mut b = [0u8; 4];
        let n = postcard::to_slice(&d, &mut b).unwrap().len();
        assert_eq!(&b[..n], &[i as u8]);
    }
}

#[test]
fn maximum_sizes_are_exact() {
    assert_eq!(
        enc(&Message::Challenge(Challenge {
            nonce_b: [0xff; 32]
        }))
        .len(),
        CHALLENGE_MAX_LEN
    );
    let ek = [0u8; 1184];
    let ev = vec![0u8; MAX_EVIDENCE_LEN];
    let hello = Message::Hello(Hello {
        nonce_g: [0; 32],
        kem_ek: Bytes(&ek),
        evidence: Evidence {
            platform: Platform::Tdx,
            data: Bytes(&ev),
        },
    });
    assert_eq!(enc(&hello).len(), HELLO_MAX_LEN);
    let name = "n".repeat(MAX_GRANT_NAME_LEN);
    let mut grants = heapless::Vec::new();
    for _ in 0..MAX_GRANTS {
        grants
            .push(Grant {
                stream: u32::MAX,
                name: &name,
                len: u32::MAX,
            })
            .unwrap();
    }
    let ct = [0u8; 1088];
    let sig = [0u8; 3309];
    let accept = Message::Accept(Accept {
        kem_ct: Bytes(&ct),
        grants,
        signature: Bytes(&sig),
    });
    assert_eq!(enc(&accept).len(), ACCEPT_MAX_LEN);
    assert_eq!(
        enc(&Message::Reject(Reject {
            reason: RejectReason::Internal
        }))
        .len(),
        REJECT_MAX_LEN
    );

    // The largest header any field values can produce (not necessarily consistent).
    let tname = "t".repeat(MAX_TENSOR_NAME_LEN);
    let h = FrameHeader {
        version: 1,
        stream: u32::MAX,
        epoch: u32::MAX,
        seq: u64::MAX,
        flags: 1,
        chunk_len: u32::MAX,
        offset: u64::MAX,
        meta: TensorMetadata {
            id: u64::MAX,
            name: &tname,
            dtype: DType::F8E5M2,
            shape: heapless::Vec::from_slice(&[u64::MAX; MAX_RANK]).unwrap(),
            total_len: u64::MAX,
        },
    };
    let mut b = vec![0u8; 1024];
    assert_eq!(
        postcard::to_slice(&h, &mut b).unwrap().len(),
        FRAME_HEADER_MAX_LEN
    );
}

#[test]
fn strict_decoding_refusals() {
    let reject = [0x01, 0x03, 0x01];
    assert!(wire::decode_message(&reject).is_ok());
    // Empty input, unknown version.
    assert_eq!(wire::decode_message(&[]), Err(Error::Truncated));
    assert_eq!(
        wire::decode_message(&[0x02, 0x03, 0x01]),
        Err(Error::UnknownVersion(2))
    );
    assert_eq!(wire::decode_message(&[0x00]), Err(Error::UnknownVersion(0)));
    // Trailing bytes.
    assert_eq!(
        wire::decode_message(&[0x01, 0x03, 0x01, 0x00]),
        Err(Error::TrailingBytes)
    );
    // Truncated.
    assert_eq!(wire::decode_message(&[0x01, 0x03]), Err(Error::Truncated));
    assert_eq!(
        wire::decode_message(&[0x01, 0x00, 0x11]),
        Err(Error::Truncated)
    );
    // Unknown message type and unknown enum variant.
    assert_eq!(wire::decode_message(&[0x01, 0x04]), Err(Error::Malformed));
    assert_eq!(
        wire::decode_message(&[0x01, 0x03, 0x07]),
        Err(Error::Malformed)
    );
    // Non-canonical varints: message type 3 and reason 1 padded with a continuation byte.
    assert_eq!(
        wire::decode_message(&[0x01, 0x83, 0x00, 0x01]),
        Err(Error::NonCanonical)
    );
    assert_eq!(
        wire::decode_message(&[0x01, 0x03, 0x81, 0x00]),
        Err(Error::NonCanonical)
    );
    // Oversize input.
    assert_eq!(
        wire::decode_message(&vec![1u8; HELLO_MAX_LEN + 1]),
        Err(Error::Oversize)
    );
    // A Challenge with extra bytes is over its own maximum (checked as trailing bytes).
    let mut ch = vec![0x01, 0x00];
    ch.extend([0u8; 33]);
    assert_eq!(wire::decode_message(&ch), Err(Error::TrailingBytes));
}

#[test]
fn field_bounds_refused() {
    // Hello with a short ML-KEM key.
    let mut h = vec![0x01, 0x01];
    h.extend([0u8; 32]);
    h.extend([0x03, 1, 2, 3]); // kem_ek of 3 bytes
    h.extend([0x00, 0x00]);
    assert_eq!(wire::decode_message(&h), Err(Error::InvalidKey));
    // Hello with evidence over the maximum.
    let ek = [0u8; 1184];
    let ev = vec![0u8; MAX_EVIDENCE_LEN + 1];
    let m = Message::Hello(Hello {
        nonce_g: [0; 32],
        kem_ek: Bytes(&ek),
        evidence: Evidence {
            platform: Platform::Tdx,
            data: Bytes(&ev),
        },
    });
    let mut buf = vec![0u8; HELLO_MAX_LEN + 64];
    assert_eq!(m.encode(&mut buf), Err(Error::Oversize));
    let n = postcard::to_slice(&(1u8, &m), &mut buf).unwrap().len();
    assert_eq!(wire::decode_message(&buf[..n]), Err(Error::Oversize));
    // A grant name that is not UTF-8.
    let ct = [0u8; 1088];
    let mut a = vec![0x01, 0x02, 0xc0, 0x08];
    a.extend(ct);
    a.extend([0x01, 0x00, 0x02, 0xff, 0xfe, 0x00]);
    a.extend([0xed, 0x19]);
    a.extend([0u8; 3309]);
    assert_eq!(wire::decode_message(&a), Err(Error::Malformed));
    // Too many grants (17).
    let mut a = vec![0x01, 0x02, 0xc0, 0x08];
    a.extend(ct);
    a.push(17);
    for _ in 0..17 {
        a.extend([0x00, 0x00, 0x00]);
    }
    a.extend([0xed, 0x19]);
    a.extend([0u8; 3309]);
    assert_eq!(wire::decode_message(&a), Err(Error::Malformed));
    // Encoding refuses too small a buffer.
    let mut small = [0u8; 10];
    assert_eq!(
        Message::Challenge(Challenge { nonce_b: [0; 32] }).encode(&mut small),
        Err(Error::BufferTooSmall)
    );
}

#[test]
fn frame_header_refusals() {
    let h = sample_header();
    let mut buf = [0u8; 256];
    let n = h.encode(&mut buf).unwrap();
    let good = buf[..n].to_vec();
    // Unknown version.
    let mut b = good.clone();
    b[0] = 9;
    assert_eq!(
        FrameHeader::decode(&b).unwrap_err(),
        Error::UnknownVersion(9)
    );
    // Unknown flag bit.
    let mut b = good.clone();
    b[5] = 0x03;
    assert_eq!(FrameHeader::decode(&b).unwrap_err(), Error::Malformed);
    // FINAL missing although the chunk reaches the end.
    let mut b = good.clone();
    b[5] = 0x00;
    assert_eq!(FrameHeader::decode(&b).unwrap_err(), Error::Malformed);
    // total_len inconsistent with shape × dtype.
    let mut b = good.clone();
    *b.last_mut().unwrap() = 25;
    assert_eq!(FrameHeader::decode(&b).unwrap_err(), Error::Malformed);
    // Non-canonical seq (300 padded to three bytes).
    let mut b = good[..3].to_vec();
    b.extend([0xac, 0x82, 0x00]);
    b.extend(&good[5..]);
    assert_eq!(FrameHeader::decode(&b).unwrap_err(), Error::NonCanonical);
    // Truncated.
    assert_eq!(
        FrameHeader::decode(&good[..6]).unwrap_err(),
        Error::Truncated
    );
    // Tensor name over the maximum (hand-built, bypassing the encoder's check).
    let long = "x".repeat(MAX_TENSOR_NAME_LEN + 1);
    let mut hh = sample_header();
    hh.meta.name = &long;
    let mut big = [0u8; 512];
    let n = postcard::to_slice(&hh, &mut big).unwrap().len();
    assert_eq!(FrameHeader::decode(&big[..n]).unwrap_err(), Error::Oversize);
    // Metadata constructor refuses overflow and rank > 8.
    assert_eq!(
        TensorMetadata::new(0, "a", DType::F64, &[u64::MAX, 2]).unwrap_err(),
        Error::InvalidArgument
    );
    assert_eq!(
        TensorMetadata::new(0, "a", DType::U8, &[1; 9]).unwrap_err(),
        Error::InvalidArgument
    );
}

#[test]
fn hand_written_header_encoder_matches_postcard() {
    // The per-frame encoder is hand-written for speed; postcard is the reference format.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let names: Vec<String> = (0..=MAX_TENSOR_NAME_LEN)
        .map(|n| "é".repeat(n / 2) + &"a".repeat(n % 2))
        .collect();
    for i in 0..20_000 {
        // Values of every varint length: shift a random word by a random amount.
        let mut v = || {
            let r = next();
            r >> (next() % 64)
        };
        let rank = (v() % (MAX_RANK as u64 + 1)) as usize;
        let shape: Vec<u64> = (0..rank).map(|_| v()).collect();
        let name = &names[i % names.len()];
        let h = FrameHeader {
            version: v() as u8,
            stream: v() as u32,
            epoch: v() as u32,
            seq: v(),
            flags: v() as u8,
            chunk_len: v() as u32,
            offset: v(),
            meta: TensorMetadata {
                id: v(),
                name: if name.len() <= MAX_TENSOR_NAME_LEN {
                    name
                } else {
                    "x"
                },
                dtype: [DType::Bytes, DType::F32, DType::F8E5M2, DType::BF16][i % 4],
                shape: heapless::Vec::from_slice(&shape).unwrap(),
                total_len: v(),
            },
        };
        let mut a = [0xa5u8; FRAME_HEADER_MAX_LEN];
        let mut b = [0x5au8; FRAME_HEADER_MAX_LEN];
        let na = h.fields().emit(&h.meta, &mut a).unwrap();
        let nb = postcard::to_slice(&h, &mut b).unwrap().len();
        assert_eq!(a[..na], b[..nb], "header {h:?}");
        // Too small a buffer is an error, never a panic or a short write.
        assert_eq!(
            h.fields().emit(&h.meta, &mut a[..na - 1]),
            Err(Error::BufferTooSmall)
        );
    }
}
