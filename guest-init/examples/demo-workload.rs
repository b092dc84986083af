//! The demo's workload: a character bigram language model whose weights are sealed
//! with the model owner's key, which only the broker releases.
//!
//! In the guest (no arguments): reads the key from `$PQCC_SECRETS_DIR/model-key`, the
//! vocabulary, config and sealed weights from the verified model at `$MODEL_PATH`,
//! opens the weights (AES-256-GCM; a wrong key or a changed byte is refused), and
//! generates text from the config's prompt. It prints what it did, never the key.
//!
//! On the model owner's machine:
//! - `demo-workload train CORPUS MODEL_DIR` counts character bigrams of CORPUS over
//!   MODEL_DIR/vocab.txt into MODEL_DIR/weights.bin;
//! - `demo-workload seal KEY_FILE IN OUT` seals IN with the 32-byte key in KEY_FILE.

use std::path::Path;
use std::process::exit;

use pqcc_core::aead::{Aes256GcmProvider, NONCE_LEN, RustCryptoAesGcm, TAG_LEN};
use zeroize::Zeroizing;

const AAD: &[u8] = b"pqcc-demo/char-bigram/v1";
const GENERATE: usize = 240;

fn die(msg: &str) -> ! {
    eprintln!("demo-workload: {msg}");
    exit(3)
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| die(&format!("{}: {e}", p.display())))
}

fn vocab(model: &Path) -> Vec<u8> {
    let text = String::from_utf8(read(&model.join("vocab.txt")))
        .unwrap_or_else(|_| die("vocab.txt is not UTF-8"));
    let v: Vec<u8> = text
        .lines()
        .map(|l| match l {
            "SPACE" => b' ',
            "\\\\" => b'\\',
            _ if l.len() == 1 => l.as_bytes()[0],
            _ => die(&format!("vocab.txt: bad entry `{l}`")),
        })
        .collect();
    if v.is_empty() || v.len() > 256 {
        die("vocab.txt: 1..=256 entries");
    }
    v
}

fn key(path: &Path) -> Zeroizing<[u8; 32]> {
    let bytes = Zeroizing::new(read(path));
    let mut k = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        die(&format!("{}: expected a 32-byte key", path.display()));
    }
    k.copy_from_slice(&bytes);
    k
}

fn train(corpus: &Path, model: &Path) {
    let v = vocab(model);
    let n = v.len();
    let index = |c: u8| v.iter().position(|&x| x == c);
    let text = read(corpus);
    let mut counts = vec![0u32; n * n];
    let mut prev: Option<usize> = None;
    for &c in &text {
        let c = if c == b'\n' { b' ' } else { c };
        let Some(i) = index(c) else { continue };
        if let Some(p) = prev {
            counts[p * n + i] = counts[p * n + i].saturating_add(1);
        }
        prev = Some(i);
    }
    let bytes: Vec<u8> = counts.iter().flat_map(|c| c.to_le_bytes()).collect();
    std::fs::write(model.join("weights.bin"), bytes).unwrap_or_else(|e| die(&e.to_string()));
    println!("trained {n}×{n} bigram counts on {} bytes", text.len());
}

fn seal(key_file: &Path, input: &Path, output: &Path) {
    let k = key(key_file);
    let mut buf = read(input);
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).unwrap_or_else(|e| die(&format!("getrandom: {e}")));
    let tag = RustCryptoAesGcm::new(&k)
        .seal_in_place(&nonce, AAD, &mut buf)
        .unwrap_or_else(|e| die(&format!("seal: {e}")));
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    out.extend_from_slice(&tag);
    std::fs::write(output, out).unwrap_or_else(|e| die(&e.to_string()));
}

/// xorshift64*: the sampler is seeded, so a run is reproducible.
fn next(x: &mut u64) -> u64 {
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn run() {
    let model = std::env::var("MODEL_PATH").unwrap_or_else(|_| die("MODEL_PATH is not set"));
    let model = Path::new(&model);
    let secrets = std::env::var("PQCC_SECRETS_DIR")
        .unwrap_or_else(|_| die("no secrets were released to this guest (PQCC_SECRETS_DIR unset)"));
    let k = key(&Path::new(&secrets).join("model-key"));
    let v = vocab(model);
    let n = v.len();
    let config = String::from_utf8(read(&model.join("config.json")))
        .unwrap_or_else(|_| die("config.json is not UTF-8"));
    let prompt = config
        .split("\"prompt\": \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or("Alice ");
    let sealed = read(&model.join("weights.sealed"));
    if sealed.len() != NONCE_LEN + n * n * 4 + TAG_LEN {
        die("weights.sealed: wrong size for the vocabulary");
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut w = Zeroizing::new(ct.to_vec());
    let nonce: [u8; NONCE_LEN] = nonce.try_into().unwrap_or_else(|_| die("nonce"));
    let tag: [u8; TAG_LEN] = tag.try_into().unwrap_or_else(|_| die("tag"));
    if RustCryptoAesGcm::new(&k)
        .open_in_place(&nonce, AAD, &mut w, &tag)
        .is_err()
    {
        die("weights.sealed does not open with the released key (wrong key or changed weights)");
    }
    drop(k);
    println!(
        "demo-workload: weights opened with the released model-key ({} bytes, {n}×{n} bigrams)",
        w.len()
    );
    let counts: Vec<u32> = w
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut out = prompt.as_bytes().to_vec();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut cur = out
        .last()
        .and_then(|&c| v.iter().position(|&x| x == c))
        .unwrap_or(0);
    for _ in 0..GENERATE {
        let row = &counts[cur * n..(cur + 1) * n];
        let total: u64 = row.iter().map(|&c| u64::from(c)).sum();
        if total == 0 {
            break;
        }
        let mut pick = next(&mut state) % total;
        let mut nxt = 0;
        for (i, &c) in row.iter().enumerate() {
            if pick < u64::from(c) {
                nxt = i;
                break;
            }
            pick -= u64::from(c);
        }
        out.push(v[nxt]);
        cur = nxt;
    }
    println!(
        "demo-workload: prompt {prompt:?} → {:?}",
        String::from_utf8_lossy(&out)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        None => run(),
        Some("train") if args.len() == 4 => train(Path::new(&args[2]), Path::new(&args[3])),
        Some("seal") if args.len() == 5 => seal(
            Path::new(&args[2]),
            Path::new(&args[3]),
            Path::new(&args[4]),
        ),
        _ => die("usage: demo-workload | train CORPUS MODEL_DIR | seal KEY IN OUT"),
    }
}
