// Offsets of small test files.
#![allow(clippy::cast_possible_truncation)]

//! Sealing, opening and unsealing whole model directories: round trips, byte
//! reproducibility, nonce separation on re-sealing, and every kind of tampering.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use pqcc_core::{secret::Secret, wire::DType};
use pqcc_sealed::{
    Error, MANIFEST_FILE, SealOptions, SealedModel, safetensors::encode, seal_dir, unseal_dir,
};

/// A fresh directory under cargo's per-target temporary folder, removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Self {
        let mut r = [0u8; 6];
        getrandom_fill(&mut r);
        let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "sealed-{tag}-{}-{}",
            std::process::id(),
            hex(&r)
        ));
        fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn getrandom_fill(b: &mut [u8]) {
    // A test-local generator: the clock and a counter through SHA3.
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = N.fetch_add(1, Ordering::Relaxed);
    let h = pqcc_core::hash::sha3_256(&[&t.to_le_bytes(), &n.to_le_bytes()]);
    b.copy_from_slice(&h[..b.len()]);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Deterministic pseudo-random bytes.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(&pqcc_core::hash::sha3_256(&[
            &seed.to_le_bytes(),
            &i.to_le_bytes(),
        ]));
        i += 1;
    }
    out.truncate(n);
    out
}

fn key(b: u8) -> Secret<32> {
    Secret::new([b; 32])
}

/// A sharded Hugging Face-layout model: two shards with an index, config, tokenizer
/// files and a nested file. Tensor sizes cross the 4 KiB frame size used below.
fn hf_model(dir: &Path, seed: u64) {
    fs::create_dir_all(dir.join("extra")).unwrap();
    let a = bytes(seed, 3 * 4096 + 100);
    let b = bytes(seed + 1, 4096 * 2);
    let c = bytes(seed + 2, 4096 * 2);
    let d = bytes(seed + 3, 10);
    let s1 = encode(
        &[
            (
                "model.embed_tokens.weight",
                DType::U8,
                &[3 * 4096 + 100],
                &a,
            ),
            ("model.layers.0.q.weight", DType::F32, &[2048], &b),
            ("model.layers.0.k.weight", DType::F32, &[2048], &c),
        ],
        Some(&[("format", "pt")]),
    )
    .unwrap();
    let s2 = encode(
        &[
            ("lm_head.weight", DType::BF16, &[5], &d),
            ("model.norm.weight", DType::F32, &[0], &[]),
        ],
        None,
    )
    .unwrap();
    fs::write(dir.join("model-00001-of-00002.safetensors"), s1).unwrap();
    fs::write(dir.join("model-00002-of-00002.safetensors"), s2).unwrap();
    let index = serde_json::json!({
        "metadata": {"total_size": 0},
        "weight_map": {
            "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
            "model.layers.0.q.weight": "model-00001-of-00002.safetensors",
            "model.layers.0.k.weight": "model-00001-of-00002.safetensors",
            "lm_head.weight": "model-00002-of-00002.safetensors",
            "model.norm.weight": "model-00002-of-00002.safetensors",
        }
    });
    fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_vec_pretty(&index).unwrap(),
    )
    .unwrap();
    fs::write(dir.join("config.json"), br#"{"model_type":"llama"}"#).unwrap();
    fs::write(dir.join("tokenizer.json"), bytes(seed + 9, 9000)).unwrap();
    fs::write(dir.join("tokenizer_config.json"), b"{}").unwrap();
    fs::write(dir.join("extra/README.md"), b"").unwrap();
}

fn opts(model: &str, salt: u8) -> SealOptions {
    let mut o = SealOptions::new(model);
    o.salt = Some([salt; 32]);
    o.frame_size = 4096;
    o.progress = false;
    o
}

fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Opens and loads everything: the model, every tensor, every file.
fn open_all(dir: &Path, k: &Secret<32>) -> Result<(), Error> {
    let m = SealedModel::open(dir, k, Some("alice/m@v1"))?;
    m.load_tensors()?;
    for f in m.files() {
        m.read_file(&f.path)?;
    }
    Ok(())
}

#[test]
fn sharded_model_round_trips_byte_for_byte() {
    let t = Tmp::new("round");
    let src = t.0.join("m");
    hf_model(&src, 1);
    let out = t.0.join("sealed");
    let s = seal_dir(&src, &out, &key(1), &opts("alice/m@v1", 7)).unwrap();
    assert_eq!((s.files, s.tensors), (7, 5));

    // Nothing of the plaintext appears in the sealed files (a 32-byte window of each
    // tensor and of the tokenizer), and the names are not visible either.
    let sealed = tree(&out);
    let all: Vec<u8> = sealed.values().flatten().copied().collect();
    for needle in [
        &bytes(1, 64)[..32],
        &bytes(2, 64)[..32],
        &bytes(10, 64)[..32],
        b"model.embed_tokens.weight",
        b"model_type",
    ] {
        assert!(
            !all.windows(needle.len()).any(|w| w == needle),
            "plaintext visible in the sealed files"
        );
    }

    let m = SealedModel::open(&out, &key(1), Some("alice/m@v1")).unwrap();
    assert_eq!(m.model_id(), "alice/m@v1");
    let names: Vec<String> = m.tensors().into_iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        [
            "model.embed_tokens.weight",
            "model.layers.0.q.weight",
            "model.layers.0.k.weight",
            "lm_head.weight",
            "model.norm.weight"
        ]
    );
    let ts = m.load_tensors().unwrap();
    assert_eq!(ts["model.layers.0.k.weight"].data(), &bytes(3, 8192)[..]);
    assert_eq!(ts["model.layers.0.k.weight"].shape, [2048]);
    assert_eq!(ts["model.norm.weight"].data(), b"");
    assert_eq!(
        m.read_file("config.json").unwrap().as_slice(),
        br#"{"model_type":"llama"}"#
    );
    assert!(format!("{:?}", ts["lm_head.weight"]).contains("<redacted>"));

    let back = t.0.join("back");
    unseal_dir(&out, &key(1), &back, false).unwrap();
    assert_eq!(tree(&back), tree(&src), "unseal reproduces every file");
}

#[test]
fn same_key_and_salt_give_the_same_bytes_and_a_new_salt_does_not() {
    let t = Tmp::new("repro");
    let src = t.0.join("m");
    hf_model(&src, 2);
    seal_dir(&src, &t.0.join("a"), &key(1), &opts("alice/m@v1", 7)).unwrap();
    seal_dir(&src, &t.0.join("b"), &key(1), &opts("alice/m@v1", 7)).unwrap();
    assert_eq!(tree(&t.0.join("a")), tree(&t.0.join("b")));
    let mut random = opts("alice/m@v1", 0);
    random.salt = None;
    seal_dir(&src, &t.0.join("c"), &key(1), &random).unwrap();
    let (a, c) = (tree(&t.0.join("a")), tree(&t.0.join("c")));
    assert_eq!(a.keys().collect::<Vec<_>>(), c.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert_ne!(v, &c[k], "{k} equal under another salt");
    }
}

#[test]
fn resealing_changed_weights_with_the_same_key_and_salt_never_reuses_a_nonce() {
    let t = Tmp::new("nonce");
    let src = t.0.join("m");
    hf_model(&src, 3);
    seal_dir(&src, &t.0.join("a"), &key(1), &opts("alice/m@v1", 7)).unwrap();
    // Change one byte of one tensor (the last one of the first shard).
    let p = src.join("model-00001-of-00002.safetensors");
    let mut b = fs::read(&p).unwrap();
    let n = b.len();
    b[n - 1] ^= 0x80;
    fs::write(&p, b).unwrap();
    seal_dir(&src, &t.0.join("b"), &key(1), &opts("alice/m@v1", 7)).unwrap();

    let ma = SealedModel::open(&t.0.join("a"), &key(1), None).unwrap();
    let mb = SealedModel::open(&t.0.join("b"), &key(1), None).unwrap();
    let (fa, fb) = (
        ma.file("model-00001-of-00002.safetensors").unwrap(),
        mb.file("model-00001-of-00002.safetensors").unwrap(),
    );
    // The changed file gets another key and prefix: same nonces, different keys.
    assert!(!fa.key().key().ct_eq(fb.key().key()));
    // So even the unchanged tensor's frames, at the same nonces, differ.
    let ra = fs::read(fa.sealed_path()).unwrap();
    let rb = fs::read(fb.sealed_path()).unwrap();
    let la = fa
        .tensor_frames("model.layers.0.q.weight")
        .unwrap()
        .unwrap();
    let lb = fb
        .tensor_frames("model.layers.0.q.weight")
        .unwrap()
        .unwrap();
    assert_eq!(la, lb, "same layout, same headers, same sequence numbers");
    for l in &la {
        let s = l.offset as usize;
        assert_ne!(
            ra[s..s + l.len],
            rb[s..s + l.len],
            "frame {} repeated",
            l.seq
        );
    }
    // The unchanged shard keeps its key and bytes.
    assert_eq!(
        fs::read(t.0.join("a/model-00002-of-00002.safetensors.sealed")).unwrap(),
        fs::read(t.0.join("b/model-00002-of-00002.safetensors.sealed")).unwrap()
    );
}

fn sealed_fixture(t: &Tmp) -> PathBuf {
    let src = t.0.join("m");
    hf_model(&src, 4);
    let out = t.0.join("sealed");
    seal_dir(&src, &out, &key(1), &opts("alice/m@v1", 7)).unwrap();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for (rel, data) in tree(from) {
        let p = to.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
}

#[test]
fn any_changed_byte_is_refused() {
    let t = Tmp::new("flip");
    let out = sealed_fixture(&t);
    open_all(&out, &key(1)).unwrap();
    let work = t.0.join("work");
    copy_dir(&out, &work);
    let mut tried = 0;
    for (rel, orig) in tree(&out) {
        let p = work.join(&rel);
        // Every preamble byte, then a stride through the rest (headers, ciphertext,
        // tags), and the very last byte.
        let positions: Vec<usize> = (0..160)
            .chain((160..orig.len()).step_by(61))
            .chain([orig.len() - 1])
            .collect();
        for at in positions {
            let mut b = orig.clone();
            b[at] ^= 0x01;
            fs::write(&p, &b).unwrap();
            let r = open_all(&work, &key(1));
            assert!(r.is_err(), "{rel} byte {at} changed and still opened");
            tried += 1;
        }
        fs::write(&p, &orig).unwrap();
    }
    open_all(&work, &key(1)).unwrap();
    assert!(tried > 500, "{tried}");
}

fn msg(r: Result<(), Error>) -> String {
    let e = r.expect_err("must be refused");
    assert!(e.is_refusal(), "{e}");
    let m = e.to_string();
    assert!(!m.contains('\n'), "one line: {m}");
    m
}

#[test]
fn wrong_key_is_named_before_anything_is_decrypted() {
    let t = Tmp::new("key");
    let out = sealed_fixture(&t);
    let m = msg(open_all(&out, &key(2)));
    assert!(m.contains("wrong key"), "{m}");
    let m = msg(SealedModel::open(&out, &key(1), Some("alice/m@v2")).map(|_| ()));
    assert!(
        m.contains("sealed for model alice/m@v1, expected alice/m@v2"),
        "{m}"
    );
}

/// Swaps two equal-length byte ranges of a file.
fn swap(path: &Path, a: (u64, usize), b: (u64, usize)) {
    assert_eq!(a.1, b.1);
    let mut d = fs::read(path).unwrap();
    let (x, y) = (a.0 as usize, b.0 as usize);
    let ta = d[x..x + a.1].to_vec();
    let tb = d[y..y + b.1].to_vec();
    d[x..x + a.1].copy_from_slice(&tb);
    d[y..y + b.1].copy_from_slice(&ta);
    fs::write(path, d).unwrap();
}

#[test]
fn frames_and_tensors_moved_within_a_file_are_refused() {
    let t = Tmp::new("move");
    let out = sealed_fixture(&t);
    let m = SealedModel::open(&out, &key(1), None).unwrap();
    let f = m.file("model-00001-of-00002.safetensors").unwrap();
    let emb = f
        .tensor_frames("model.embed_tokens.weight")
        .unwrap()
        .unwrap();
    let q = f.tensor_frames("model.layers.0.q.weight").unwrap().unwrap();
    let k = f.tensor_frames("model.layers.0.k.weight").unwrap().unwrap();
    let path = f.sealed_path().to_path_buf();
    let orig = fs::read(&path).unwrap();

    // Two frames of one tensor reordered (frames 1 and 2 have the same length).
    swap(
        &path,
        (emb[1].offset, emb[1].len),
        (emb[2].offset, emb[2].len),
    );
    let e = msg(open_all(&out, &key(1)));
    assert!(
        e.contains("model.embed_tokens.weight") && e.contains("frame 2: authentication tag"),
        "{e}"
    );
    fs::write(&path, &orig).unwrap();

    // Two tensors of the same dtype and shape swapped whole.
    let span = |v: &[pqcc_sealed::FrameLoc]| (v[0].offset, v.iter().map(|l| l.len).sum::<usize>());
    swap(&path, span(&q), span(&k));
    let e = msg(open_all(&out, &key(1)));
    assert!(e.contains("model.layers.0"), "{e}");
    fs::write(&path, &orig).unwrap();

    // A frame repeated in place of the next one.
    let mut d = orig.clone();
    let (a, b) = (q[0].offset as usize, q[1].offset as usize);
    d.copy_within(a..a + q[0].len, b);
    fs::write(&path, &d).unwrap();
    msg(open_all(&out, &key(1)));
    fs::write(&path, &orig).unwrap();
    open_all(&out, &key(1)).unwrap();
}

#[test]
fn files_from_elsewhere_missing_or_truncated_are_refused() {
    let t = Tmp::new("files");
    let out = sealed_fixture(&t);
    let src = t.0.join("m");
    // Same key, same salt, another model id.
    let other = t.0.join("other");
    seal_dir(&src, &other, &key(1), &opts("alice/m@v2", 7)).unwrap();
    // Same model id, another salt.
    let other_salt = t.0.join("other-salt");
    seal_dir(&src, &other_salt, &key(1), &opts("alice/m@v1", 8)).unwrap();

    let shard = "model-00002-of-00002.safetensors.sealed";
    for (from, what) in [(&other, "another model"), (&other_salt, "another salt")] {
        let w = t.0.join(format!("w-{}", what.replace(' ', "-")));
        copy_dir(&out, &w);
        fs::copy(from.join(shard), w.join(shard)).unwrap();
        let e = msg(open_all(&w, &key(1)));
        assert!(
            e.contains("model-00002-of-00002.safetensors"),
            "{what}: {e}"
        );
    }
    // One shard's file put in the other's place.
    let w = t.0.join("w-renamed");
    copy_dir(&out, &w);
    fs::copy(
        out.join("model-00001-of-00002.safetensors.sealed"),
        w.join(shard),
    )
    .unwrap();
    msg(open_all(&w, &key(1)));
    // A missing shard.
    let w = t.0.join("w-missing");
    copy_dir(&out, &w);
    fs::remove_file(w.join(shard)).unwrap();
    let e = msg(open_all(&w, &key(1)));
    assert!(e.contains("missing"), "{e}");
    // A missing manifest.
    let w = t.0.join("w-nomanifest");
    copy_dir(&out, &w);
    fs::remove_file(w.join(MANIFEST_FILE)).unwrap();
    msg(open_all(&w, &key(1)));
    // Truncated by one byte, and one byte longer.
    for (i, delta) in [-1i64, 1].into_iter().enumerate() {
        let w = t.0.join(format!("w-len{i}"));
        copy_dir(&out, &w);
        let p = w.join("tokenizer.json.sealed");
        let mut d = fs::read(&p).unwrap();
        if delta < 0 {
            d.pop();
        } else {
            d.push(0);
        }
        fs::write(&p, d).unwrap();
        let e = msg(open_all(&w, &key(1)));
        assert!(e.contains("tokenizer.json"), "{e}");
    }
}

#[test]
fn bad_input_is_refused_with_nothing_written() {
    let t = Tmp::new("input");
    let src = t.0.join("m");
    hf_model(&src, 5);
    // An index that names a tensor that is not in its shard.
    let p = src.join("model.safetensors.index.json");
    let idx = fs::read_to_string(&p).unwrap();
    fs::write(&p, idx.replace("lm_head.weight", "lm_head.bias")).unwrap();
    let out = t.0.join("sealed");
    let e = seal_dir(&src, &out, &key(1), &opts("alice/m@v1", 7)).unwrap_err();
    assert!(
        e.is_refusal() && e.to_string().contains("lm_head.bias"),
        "{e}"
    );
    assert!(!out.exists());
    fs::write(
        &p,
        idx.replace("model-00002-of-00002", "model-00003-of-00003"),
    )
    .unwrap();
    let e = seal_dir(&src, &out, &key(1), &opts("alice/m@v1", 7)).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
    fs::write(&p, idx).unwrap();
    // A safetensors file whose offsets leave a hole.
    let bad = src.join("broken.safetensors");
    let mut b = encode(&[("x", DType::U8, &[4], b"abcd")], None).unwrap();
    b.push(0);
    fs::write(&bad, b).unwrap();
    let e = seal_dir(&src, &out, &key(1), &opts("alice/m@v1", 7)).unwrap_err();
    assert!(e.to_string().contains("broken.safetensors"), "{e}");
    assert!(!out.exists());
    // Nothing partial is left beside the output either.
    let left: Vec<_> = fs::read_dir(&t.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["m"], "{left:?}");
    fs::remove_file(&bad).unwrap();
    // An existing output is not overwritten.
    fs::create_dir(&out).unwrap();
    let e = seal_dir(&src, &out, &key(1), &opts("alice/m@v1", 7)).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
}

/// The worked example of `docs/sealed-models.md`: its inputs, and the SHA3-256 of
/// every sealed file (any change to the format shows here first).
#[test]
fn worked_example_of_the_docs_is_pinned() {
    let t = Tmp::new("example");
    let src = t.0.join("m");
    fs::create_dir_all(&src).unwrap();
    let mut st = Vec::new();
    let json = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  "#;
    st.extend_from_slice(&(json.len() as u64).to_le_bytes());
    st.extend_from_slice(json);
    st.extend_from_slice(&1.0f32.to_le_bytes());
    st.extend_from_slice(&2.0f32.to_le_bytes());
    fs::write(src.join("model.safetensors"), &st).unwrap();
    fs::write(src.join("config.json"), b"{\"a\":1}\n").unwrap();
    let dek = Secret::new(core::array::from_fn(|i| i as u8));
    let mut o = opts("demo@v1", 0x11);
    o.frame_size = 4096;
    let out = t.0.join("s");
    seal_dir(&src, &out, &dek, &o).unwrap();
    let sha = |f: &str| {
        hex(&pqcc_core::hash::sha3_256(&[
            &fs::read(out.join(f)).unwrap()
        ]))
    };
    assert_eq!(
        pqcc_sealed::key_id_hex(&dek),
        "1640e1d1e6308fcffc594721d408127daad1ce87e473432f85726e8ab1e6e07a"
    );
    assert_eq!(
        sha("model.safetensors.sealed"),
        "09c183c78b6ae29a4d8464c1962418eb06e9574a4c537820b788cc8c7cb59bb1"
    );
    assert_eq!(
        sha("config.json.sealed"),
        "da9aafe5d4e544b4587af5ecf24715716a32ccda87bc8ee4c528851a0705fdc9"
    );
    assert_eq!(
        sha("pqcc-manifest.sealed"),
        "4748bed50b97d5cfca76de9cca7545203cc31721dfed52e76fd0434e5c0107b1"
    );
    let sealed = fs::read(out.join("model.safetensors.sealed")).unwrap();
    assert_eq!(sealed.len(), 160 + (72 + 16) + (8 + 16));
}
