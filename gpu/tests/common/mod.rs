//! Helpers shared by the pqcc-gpu tests: sealing tensors with the real channel, the
//! Wycheproof file, a deterministic RNG, and (`cases`) the opener tests that run on the
//! real driver and on FakeCuda.
#![allow(dead_code)]

pub mod cases;

use std::path::PathBuf;

use pqcc_core::{
    channel::{Limits, Sealer},
    secret::Secret,
    wire::{DType, FRAME_HEADER_MAX_LEN, TensorMetadata},
};

pub const NOW: u64 = 1_800_000_000;
pub const PREFIX: [u8; 4] = [0xa1, 0xb2, 0xc3, 0xd4];

/// xorshift64*: deterministic test data (not cryptographic).
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next().to_le_bytes()[4]).collect()
    }
    pub fn key(&mut self) -> [u8; 32] {
        let mut k = [0u8; 32];
        k.copy_from_slice(&self.bytes(32));
        k
    }
}

/// Seals `data` as one tensor in chunks of `chunk` bytes; returns the frames.
pub fn seal_tensor(sealer: &mut Sealer, id: u64, data: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let meta = TensorMetadata::new(id, "layer.weight", DType::U8, &[data.len() as u64]).unwrap();
    let mut frames = Vec::new();
    let mut off = 0usize;
    loop {
        let end = (off + chunk).min(data.len());
        let mut out = vec![0u8; FRAME_HEADER_MAX_LEN + (end - off) + 16];
        let n = sealer
            .seal_chunk(NOW, 7, &meta, off as u64, &data[off..end], &mut out)
            .unwrap();
        out.truncate(n);
        frames.push(out);
        off = end;
        if off >= data.len() {
            break;
        }
    }
    frames
}

pub fn sealer(key: &[u8; 32]) -> Sealer {
    Sealer::new(&Secret::new(*key), PREFIX, Limits::default(), NOW)
}

/// `../shared/data` from the repository root, or `$PQCC_SHARED_DATA`.
pub fn shared_data() -> PathBuf {
    match std::env::var_os("PQCC_SHARED_DATA") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
    }
}

pub struct Vector {
    pub id: u64,
    pub key: Vec<u8>,
    pub iv: Vec<u8>,
    pub aad: Vec<u8>,
    pub msg: Vec<u8>,
    pub ct: Vec<u8>,
    pub tag: Vec<u8>,
    pub valid: bool,
}

/// The Wycheproof AES-GCM vectors pqcc's AES-256-GCM speaks (256-bit key, 96-bit IV,
/// 128-bit tag), and the number of vectors skipped for other parameters.
pub fn wycheproof_aes256_gcm() -> (Vec<Vector>, usize) {
    let path = shared_data().join("wycheproof/aes_gcm_test.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let (mut out, mut skipped) = (Vec::new(), 0);
    for g in v["testGroups"].as_array().unwrap() {
        let ok = g["keySize"] == 256 && g["ivSize"] == 96 && g["tagSize"] == 128;
        for t in g["tests"].as_array().unwrap() {
            if !ok {
                skipped += 1;
                continue;
            }
            let h = |k: &str| hex::decode(t[k].as_str().unwrap()).unwrap();
            let result = t["result"].as_str().unwrap();
            assert_ne!(
                result, "acceptable",
                "no 'acceptable' AES-GCM vectors expected"
            );
            out.push(Vector {
                id: t["tcId"].as_u64().unwrap(),
                key: h("key"),
                iv: h("iv"),
                aad: h("aad"),
                msg: h("msg"),
                ct: h("ct"),
                tag: h("tag"),
                valid: result == "valid",
            });
        }
    }
    (out, skipped)
}
