// Test arithmetic on small known sizes.
#![allow(clippy::cast_possible_truncation)]

use super::*;
use crate::aead::RustCryptoAesGcm;

fn dek(b: u8) -> Secret<32> {
    Secret::new([b; 32])
}

fn preamble() -> Preamble {
    Preamble {
        kind: FileKind::Safetensors,
        frame_size: 4096,
        key_id: [0x11; 32],
        salt: [0x22; 32],
        content_id: [0x33; 32],
        tensor_count: 2,
        table_len: 100,
        data_len: 5000,
        frame_count: 4,
    }
}

#[test]
fn preamble_golden_bytes_and_round_trip() {
    let p = preamble();
    let b = p.emit();
    // magic
    assert_eq!(&b[0..8], b"PQCCSEAL");
    // version 1, LE
    assert_eq!(&b[8..10], &[1, 0]);
    // kind safetensors, flags 0
    assert_eq!(&b[10..12], &[1, 0]);
    // frame size 4096 LE
    assert_eq!(&b[12..16], &[0x00, 0x10, 0, 0]);
    assert_eq!(&b[16..48], &[0x11; 32]);
    assert_eq!(&b[48..80], &[0x22; 32]);
    assert_eq!(&b[80..112], &[0x33; 32]);
    // tensor count 2, reserved
    assert_eq!(&b[112..120], &[2, 0, 0, 0, 0, 0, 0, 0]);
    // table length 100
    assert_eq!(&b[120..128], &[100, 0, 0, 0, 0, 0, 0, 0]);
    // data length 5000 = 0x1388
    assert_eq!(&b[128..136], &[0x88, 0x13, 0, 0, 0, 0, 0, 0]);
    // frame count 4
    assert_eq!(&b[136..144], &[4, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&b[144..160], &[0; 16]);
    assert_eq!(Preamble::parse(&b), Ok(p));
}

#[test]
fn preamble_refusals() {
    let b = preamble().emit();
    assert_eq!(Preamble::parse(&b[..159]), Err(Error::Truncated));
    let mut m = b;
    m[0] ^= 1;
    assert_eq!(Preamble::parse(&m), Err(Error::Malformed));
    let mut m = b;
    m[8] = 2;
    assert_eq!(Preamble::parse(&m), Err(Error::UnknownVersion(2)));
    for at in [10usize, 11, 117, 150] {
        let mut m = b;
        m[at] = 7;
        assert!(Preamble::parse(&m).is_err(), "byte {at}");
    }
    let mut p = preamble();
    p.frame_size = 100;
    assert_eq!(Preamble::parse(&p.emit()), Err(Error::Malformed));
    p = preamble();
    p.frame_count = 2; // table (1 frame) + 2 tensors need at least 3
    assert_eq!(Preamble::parse(&p.emit()), Err(Error::Malformed));
    p = preamble();
    p.kind = FileKind::Blob;
    assert_eq!(Preamble::parse(&p.emit()), Err(Error::Malformed));
    p.tensor_count = 0;
    p.table_len = 0;
    p.frame_count = 2;
    assert!(Preamble::parse(&p.emit()).is_ok());
}

#[test]
fn paths_and_model_ids() {
    for ok in ["config.json", "a/b.safetensors", "x"] {
        check_path(ok).unwrap();
    }
    for bad in [
        "",
        "/abs",
        "a//b",
        "a/./b",
        "../x",
        "a/..",
        "a\\b",
        "nul\0",
        MANIFEST_PATH,
    ] {
        assert_eq!(check_path(bad), Err(Error::InvalidArgument), "{bad:?}");
    }
    check_model_id("org/model@v1").unwrap();
    for bad in ["model", "@v1", "model@", "a@b\n"] {
        assert!(check_model_id(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn keys_separate_every_input() {
    let salt = [7u8; 32];
    let k = ModelKey::derive(&dek(1), &salt, "m@1").unwrap();
    let pre = preamble().emit();
    let base = k.file_key("a", &pre).unwrap();
    let other = [
        ModelKey::derive(&dek(2), &salt, "m@1")
            .unwrap()
            .file_key("a", &pre)
            .unwrap(),
        ModelKey::derive(&dek(1), &[8; 32], "m@1")
            .unwrap()
            .file_key("a", &pre)
            .unwrap(),
        ModelKey::derive(&dek(1), &salt, "m@2")
            .unwrap()
            .file_key("a", &pre)
            .unwrap(),
        k.file_key("b", &pre).unwrap(),
        k.file_key("a", &{
            let mut p = pre;
            p[100] ^= 1;
            p
        })
        .unwrap(),
    ];
    for o in &other {
        assert!(!o.key().ct_eq(base.key()));
    }
    assert_ne!(
        k.content_id("a", &[0; 32]).unwrap(),
        k.content_id("a", &[1; 32]).unwrap()
    );
    assert_ne!(
        k.content_id("a", &[0; 32]).unwrap(),
        k.content_id("b", &[0; 32]).unwrap()
    );
    assert_ne!(key_id(&dek(1)), key_id(&dek(2)));
    // Debug never shows key bytes.
    let mut s = heapless::String::<64>::new();
    core::fmt::write(&mut s, format_args!("{k:?} {base:?}")).unwrap();
    assert_eq!(s.as_str(), "ModelKey(<redacted>) FileKey(<redacted>)");
}

#[test]
fn key_derivation_golden() {
    // Pins the labels and the length prefixes: SHA3-256("pqcc/v1/sealed/key-id" ‖ 32×0x01).
    assert_eq!(
        key_id(&dek(1)),
        hash::sha3_256(&[b"pqcc/v1/sealed/key-id", &[1u8; 32]])
    );
    let k = ModelKey::derive(&dek(1), &[2; 32], "m@1").unwrap();
    let mut mk = [0u8; 32];
    hash::shake256(
        &[
            b"pqcc/v1/sealed/model",
            &[1u8; 32],
            &[2u8; 32],
            &[0, 0, 0, 3],
            b"m@1",
        ],
        &mut mk,
    );
    assert_eq!(k.0.expose(), &mk);
}

fn run(name: &str, len: u64, first_seq: u64) -> FrameRun<'_> {
    FrameRun {
        meta: TensorMetadata::new(1, name, DType::U8, &[len]).unwrap(),
        first_seq,
        frame_size: 4096,
    }
}

#[test]
fn frames_round_trip_and_refuse_moves() {
    let mk = ModelKey::derive(&dek(1), &[2; 32], "m@1").unwrap();
    let fk = mk.file_key("f", &preamble().emit()).unwrap();
    let c = FileCipher::<RustCryptoAesGcm>::new(&fk);
    let r = run("t", 5000, 3);
    assert_eq!(r.frames(), 2);
    assert_eq!(r.chunk(0), Ok((0, 4096)));
    assert_eq!(r.chunk(1), Ok((4096, 904)));
    assert!(r.chunk(2).is_err());
    let plain: [u8; 5000] = core::array::from_fn(|i| (i * 7) as u8);
    let mut frames = [[0xa5u8; 4096 + 128]; 2];
    let mut lens = [0usize; 2];
    for i in 0..2u64 {
        let (off, cl) = r.chunk(i).unwrap();
        let pt = &plain[off as usize..off as usize + cl as usize];
        lens[i as usize] = c
            .seal_frame_from(&r, i, pt, &mut frames[i as usize])
            .unwrap();
        assert_eq!(lens[i as usize], r.frame_len(i).unwrap());
    }
    assert_eq!(
        r.sealed_len().unwrap(),
        (lens[0] + lens[1]) as u64,
        "sealed_len sums the frames"
    );
    assert_eq!(
        (lens[0], lens[1]),
        (4096 + 16, 904 + 16),
        "no header on disk"
    );
    // The AAD: the last frame's header carries FINAL, the first's does not.
    let mut hb = [0u8; FRAME_HEADER_MAX_LEN];
    let n = r.header(0, &mut hb).unwrap();
    let (h0, _) = crate::wire::FrameHeader::decode(&hb[..n]).unwrap();
    assert!(!h0.is_final());
    assert_eq!((h0.seq, h0.meta.name, h0.offset), (3, "t", 0));
    let n = r.header(1, &mut hb).unwrap();
    let (h1, _) = crate::wire::FrameHeader::decode(&hb[..n]).unwrap();
    assert!(h1.is_final());
    assert_eq!((h1.seq, h1.offset, h1.chunk_len), (4, 4096, 904));
    // Plaintext nowhere in the frame.
    assert!(!frames[0].windows(16).any(|w| w == &plain[..16]));

    let mut f1 = frames[1];
    let pt = c.open_frame(&r, 1, &mut f1[..lens[1]]).unwrap();
    assert_eq!(pt, &plain[4096..]);

    // Frame 1 presented as frame 0 (the length check), frame 0 as a frame of
    // another tensor of the same length, or at another place in the file, or as a
    // tensor of another shape: the AAD or nonce differs, so the tag fails.
    let mut f1 = frames[1];
    assert_eq!(
        c.open_frame(&r, 0, &mut f1[..lens[1]]),
        Err(Error::Truncated)
    );
    let wrong = [
        run("u", 5000, 3),
        run("t", 5000, 4),
        FrameRun {
            meta: TensorMetadata::new(1, "t", DType::U8, &[50, 100]).unwrap(),
            first_seq: 3,
            frame_size: 4096,
        },
        FrameRun {
            meta: TensorMetadata::new(1, "t", DType::I8, &[5000]).unwrap(),
            first_seq: 3,
            frame_size: 4096,
        },
        FrameRun {
            meta: TensorMetadata::new(2, "t", DType::U8, &[5000]).unwrap(),
            first_seq: 3,
            frame_size: 4096,
        },
    ];
    for w in &wrong {
        let mut f0 = frames[0];
        assert_eq!(
            c.open_frame(w, 0, &mut f0[..lens[0]]),
            Err(Error::Decrypt),
            "{w:?}"
        );
        assert!(f0[..4096].iter().all(|&b| b == 0));
    }
    // Truncated and extended frames.
    let mut f0 = frames[0];
    assert_eq!(
        c.open_frame(&r, 0, &mut f0[..lens[0] - 1]),
        Err(Error::Truncated)
    );
    let mut f0 = frames[0];
    assert_eq!(
        c.open_frame(&r, 0, &mut f0[..lens[0] + 1]),
        Err(Error::TrailingBytes)
    );
    // A changed ciphertext byte: the tag fails and the buffer is zeroed.
    let mut f0 = frames[0];
    f0[100] ^= 1;
    assert_eq!(c.open_frame(&r, 0, &mut f0[..lens[0]]), Err(Error::Decrypt));
    assert!(f0[..4096].iter().all(|&b| b == 0));
    // Another file's key.
    let other = FileCipher::<RustCryptoAesGcm>::new(&mk.file_key("g", &preamble().emit()).unwrap());
    let mut f0 = frames[0];
    assert_eq!(
        other.open_frame(&r, 0, &mut f0[..lens[0]]),
        Err(Error::Decrypt)
    );
}

#[test]
fn empty_tensor_is_one_final_frame() {
    let r = run("e", 0, 0);
    assert_eq!(r.frames(), 1);
    assert_eq!(r.chunk(0), Ok((0, 0)));
    let fk = ModelKey::derive(&dek(1), &[2; 32], "m@1")
        .unwrap()
        .file_key("f", &preamble().emit())
        .unwrap();
    let c = FileCipher::<RustCryptoAesGcm>::new(&fk);
    let mut f = [0u8; 128];
    let n = c.seal_frame_from(&r, 0, &[], &mut f).unwrap();
    assert_eq!(n, TAG_LEN);
    let mut hb = [0u8; FRAME_HEADER_MAX_LEN];
    let hl = r.header(0, &mut hb).unwrap();
    let (h, _) = crate::wire::FrameHeader::decode(&hb[..hl]).unwrap();
    assert!(h.is_final());
    assert_eq!(c.open_frame(&r, 0, &mut f[..n]).unwrap().len(), 0);
}

#[test]
fn varints_are_canonical() {
    assert_eq!(Reader::new(&[0x7f]).varint(), Ok(127));
    assert_eq!(Reader::new(&[0x80, 0x01]).varint(), Ok(128));
    assert_eq!(
        Reader::new(&[0x80, 0x00]).varint(),
        Err(Error::NonCanonical)
    );
    assert_eq!(Reader::new(&[0x80]).varint(), Err(Error::Truncated));
    let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert_eq!(Reader::new(&max).varint(), Ok(u64::MAX));
    let over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
    assert_eq!(Reader::new(&over).varint(), Err(Error::Malformed));
}

fn entry<'a>(name: &'a str, shape: &[u64], off: u64) -> TensorEntry<'a> {
    TensorEntry {
        name,
        dtype: DType::F32,
        shape: heapless::Vec::from_slice(shape).unwrap(),
        data_offset: off,
    }
}

#[test]
fn table_round_trip_and_refusals() {
    let es = [entry("a", &[2, 3], 0), entry("b", &[4], 24)];
    let mut buf = [0xa5u8; 256];
    let n = Table::emit(b"HDR", es.iter(), &mut buf).unwrap();
    // Golden: header length 3, "HDR", count 2, "a": len 1, 'a', F32 = 12, rank 2, 2, 3,
    // offset 0; "b": len 1, 'b', 12, rank 1, 4, offset 24.
    assert_eq!(
        &buf[..n],
        &[
            3, b'H', b'D', b'R', 2, 1, b'a', 12, 2, 2, 3, 0, 1, b'b', 12, 1, 4, 24
        ]
    );
    let t = Table::parse(&buf[..n], 2).unwrap();
    assert_eq!(t.original_header, b"HDR");
    assert_eq!(t.data_len(), 40);
    let got: heapless::Vec<TensorEntry<'_>, 4> = t.entries().map(|e| e.unwrap()).collect();
    assert_eq!(&got[..], &es[..]);
    assert_eq!(got[0].len(), 24);

    assert_eq!(Table::parse(&buf[..n], 3).err(), Some(Error::Malformed));
    assert_eq!(Table::parse(&buf[..n - 1], 2).err(), Some(Error::Truncated));
    let mut long = buf;
    long[n] = 0;
    assert_eq!(
        Table::parse(&long[..n + 1], 2).err(),
        Some(Error::TrailingBytes)
    );
    // A hole between tensors.
    let es = [entry("a", &[2, 3], 0), entry("b", &[4], 28)];
    let mut b2 = [0u8; 256];
    let n = Table::emit(b"", es.iter(), &mut b2).unwrap();
    assert_eq!(Table::parse(&b2[..n], 2).err(), Some(Error::Malformed));
    // An unknown dtype.
    let es = [entry("a", &[1], 0)];
    let mut b3 = [0u8; 256];
    let n = Table::emit(b"", es.iter(), &mut b3).unwrap();
    b3[4] = 99;
    assert_eq!(Table::parse(&b3[..n], 1).err(), Some(Error::Malformed));
}

#[test]
fn manifest_round_trip_and_order() {
    let e = |path, len| ManifestEntry {
        path,
        kind: FileKind::Blob,
        len,
        content_id: [9; 32],
    };
    let es = [e("config.json", 10), e("model.safetensors", 20)];
    let mut buf = [0u8; 512];
    let n = Manifest::emit("m@1", es.iter(), &mut buf).unwrap();
    let m = Manifest::parse(&buf[..n]).unwrap();
    assert_eq!(m.model_id, "m@1");
    assert_eq!(m.count(), 2);
    let got: heapless::Vec<ManifestEntry<'_>, 4> = m.entries().map(|e| e.unwrap()).collect();
    assert_eq!(&got[..], &es[..]);
    // Out of order, or twice.
    for es in [
        [e("model.safetensors", 20), e("config.json", 10)],
        [e("config.json", 10), e("config.json", 10)],
    ] {
        let mut b2 = [0u8; 512];
        let n = Manifest::emit("m@1", es.iter(), &mut b2).unwrap();
        assert_eq!(Manifest::parse(&b2[..n]).err(), Some(Error::Malformed));
    }
    // A path that escapes the directory.
    let es = [e("../x", 1)];
    let mut b3 = [0u8; 512];
    let n = Manifest::emit("m@1", es.iter(), &mut b3).unwrap();
    assert_eq!(Manifest::parse(&b3[..n]).err(), Some(Error::Malformed));
}
