//! The workload end to end on a tiny trained model: trained into a Hugging Face
//! directory (two shards), sealed with `pqcc_sealed::seal_dir`, then loaded sealed and
//! plain through the same builder: the same logits and the same text for the same
//! seed; a wrong key, a flipped byte in any sealed file, another model id and a
//! broken config are refused with one-line errors and no panic. The binary is run the
//! way pqcc-init runs it (environment only) and with `--plain`.

use std::path::{Path, PathBuf};
use std::process::Command;

use pqcc_core::secret::Secret;
use pqcc_workload::{Error, Source, TrainOptions, load_plain, load_sealed};

const MODEL_ID: &str = "tiny-llama@t1";
const CORPUS: &[u8] = include_bytes!("../../demo/corpus.txt");

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("pqcc-workload-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A model small enough to train in a second in a debug build.
fn tiny() -> TrainOptions {
    TrainOptions {
        steps: 12,
        shards: 2,
        hidden: 32,
        heads: 4,
        kv_heads: 2,
        intermediate: 48,
        context: 32,
        batch: 2,
        ..Default::default()
    }
}

fn dek(b: u8) -> Secret<32> {
    Secret::new([b; 32])
}

/// Trains the tiny model into `<name>/plain` and seals it into `<name>/sealed`.
fn trained_and_sealed(name: &str) -> (PathBuf, PathBuf) {
    let root = tmp(name);
    std::fs::create_dir_all(&root).unwrap();
    let plain = root.join("plain");
    let s = pqcc_workload::train(CORPUS, &plain, &tiny()).unwrap();
    assert!(s.final_loss < s.first_loss, "{s:?}");
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
    ] {
        assert!(plain.join(f).is_file(), "{f} missing: {:?}", s.files);
    }
    let sealed = root.join("sealed");
    let mut opts = pqcc_sealed::SealOptions::new(MODEL_ID);
    opts.salt = Some([9; 32]);
    opts.progress = false;
    pqcc_sealed::seal_dir(&plain, &sealed, &dek(1), &opts).unwrap();
    (plain, sealed)
}

#[test]
fn sealed_and_plain_give_the_same_model_and_text() {
    let (plain, sealed) = trained_and_sealed("same");
    let p = load_plain(&plain).unwrap();
    let s = load_sealed(&sealed, &dek(1), Some(MODEL_ID)).unwrap();
    assert_eq!(
        s.info.source,
        Source::Sealed {
            dir: sealed.clone(),
            model_id: MODEL_ID.into()
        }
    );
    // 2 layers: embeddings, 9 per layer, the final norm, lm_head.
    assert_eq!((p.info.tensors, s.info.tensors), (21, 21));
    assert_eq!(p.info.bytes, s.info.bytes);
    assert_eq!(p.info.dtypes, ["F32"]);

    let ids: Vec<u32> = b"Alice was ".iter().map(|&b| u32::from(b)).collect();
    let (lp, ls) = (p.next_logits(&ids).unwrap(), s.next_logits(&ids).unwrap());
    assert_eq!(lp.len(), 257);
    assert!(lp.iter().zip(&ls).all(|(a, b)| a.to_bits() == b.to_bits()));

    // Longer than the context (32): the cache restarts on the way.
    for seed in [0, 1, 42] {
        let (tp, sp) = p.generate("Alice was ", 80, seed).unwrap();
        let (ts, ss) = s.generate("Alice was ", 80, seed).unwrap();
        assert_eq!(tp, ts, "seed {seed}");
        assert_eq!((sp.prompt_tokens, sp.tokens), (ss.prompt_tokens, ss.tokens));
        assert!(!ts.is_empty());
        // Reproducible.
        assert_eq!(s.generate("Alice was ", 80, seed).unwrap().0, ts);
    }
    let (mut p, mut s) = (p, s);
    p.sampling = candle_transformers::generation::Sampling::ArgMax;
    s.sampling = candle_transformers::generation::Sampling::ArgMax;
    assert_eq!(
        p.generate("The rabbit", 40, 0).unwrap().0,
        s.generate("The rabbit", 40, 7).unwrap().0
    );
    // Without an expected id the manifest's is taken.
    let any = load_sealed(&sealed, &dek(1), None).unwrap();
    assert!(matches!(any.info.source, Source::Sealed { ref model_id, .. } if model_id == MODEL_ID));
}

fn refused(r: pqcc_workload::Result<pqcc_workload::Model>) -> Error {
    match r {
        Ok(_) => panic!("loaded"),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "not one line: {msg}");
            assert!(
                !msg.contains(&hex::encode([2u8; 32])),
                "the key is in the message: {msg}"
            );
            e
        }
    }
}

#[test]
fn wrong_key_other_model_and_flipped_bytes_are_refused() {
    let (_plain, sealed) = trained_and_sealed("refuse");
    let e = refused(load_sealed(&sealed, &dek(2), Some(MODEL_ID)));
    assert!(e.is_refusal(), "{e}");
    assert!(e.to_string().contains("wrong key"), "{e}");

    let e = refused(load_sealed(&sealed, &dek(1), Some("tiny-llama@t2")));
    assert!(e.is_refusal(), "{e}");
    assert!(e.to_string().contains("expected tiny-llama@t2"), "{e}");

    for f in [
        "model-00001-of-00002.safetensors.sealed",
        "model-00002-of-00002.safetensors.sealed",
        "config.json.sealed",
        "tokenizer.json.sealed",
        "model.safetensors.index.json.sealed",
        "pqcc-manifest.sealed",
    ] {
        let path = sealed.join(f);
        let orig = std::fs::read(&path).unwrap();
        for at in [orig.len() / 2, orig.len() - 1] {
            let mut b = orig.clone();
            b[at] ^= 0x01;
            std::fs::write(&path, &b).unwrap();
            let e = refused(load_sealed(&sealed, &dek(1), Some(MODEL_ID)));
            assert!(e.is_refusal(), "{f}@{at}: {e}");
        }
        std::fs::write(&path, &orig).unwrap();
    }
    // Restored: opens again.
    load_sealed(&sealed, &dek(1), Some(MODEL_ID)).unwrap();
}

#[test]
fn a_config_that_does_not_fit_the_weights_is_an_error_not_a_panic() {
    let (plain, _sealed) = trained_and_sealed("config");
    let cfg = std::fs::read_to_string(plain.join("config.json")).unwrap();
    for (from, to, want) in [
        (
            "\"num_hidden_layers\": 2",
            "\"num_hidden_layers\": 3",
            "tensor model.layers.2.input_layernorm.weight: missing",
        ),
        (
            "\"intermediate_size\": 48",
            "\"intermediate_size\": 64",
            "model.layers.0.mlp.gate_proj.weight: shape [48, 32], where config.json implies [64, 32]",
        ),
        (
            "\"model_type\": \"llama\"",
            "\"model_type\": \"gpt2\"",
            "model_type \"gpt2\"",
        ),
        (
            "\"num_key_value_heads\": 2",
            "\"num_key_value_heads\": 3",
            "do not fit",
        ),
    ] {
        assert!(cfg.contains(from), "{from}");
        std::fs::write(plain.join("config.json"), cfg.replace(from, to)).unwrap();
        let e = refused(load_plain(&plain));
        assert!(e.to_string().contains(want), "{from}: {e}");
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pqcc-workload"))
}

fn lines(out: &[u8], prefix: &str) -> Vec<String> {
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_binary_in_guest_mode_and_plain_mode() {
    let root = tmp("bin");
    std::fs::create_dir_all(&root).unwrap();
    let corpus = root.join("corpus.txt");
    std::fs::write(&corpus, CORPUS).unwrap();
    let plain = root.join("plain");
    let out = bin()
        .args(["train", corpus.to_str().unwrap(), plain.to_str().unwrap()])
        .args(["--shards", "2", "--steps", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("pqcc-workload: trained a Llama"), "{t}");
    assert!(t.contains("model-00002-of-00002.safetensors"), "{t}");

    let sealed = root.join("sealed");
    let mut opts = pqcc_sealed::SealOptions::new("alice-llama@v1");
    opts.progress = false;
    pqcc_sealed::seal_dir(&plain, &sealed, &dek(5), &opts).unwrap();
    let secrets = root.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("model-key"), [5u8; 32]).unwrap();
    std::fs::write(secrets.join("wrong-key"), [6u8; 32]).unwrap();
    for k in ["model-key", "wrong-key"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(secrets.join(k), std::fs::Permissions::from_mode(0o400)).unwrap();
    }

    // As pqcc-init starts it: no arguments, a cleared environment.
    let guest = |secrets: &Path, model_commit: &str| {
        bin()
            .env_clear()
            .env("MODEL_PATH", &sealed)
            .env("PQCC_SECRETS_DIR", secrets)
            .env("MODEL_NAME", "alice-llama")
            .env("MODEL_COMMIT", model_commit)
            .output()
            .unwrap()
    };
    let out = guest(&secrets, "v1");
    assert!(out.status.success(), "{out:?}");
    let got = lines(&out.stdout, "pqcc-workload: ");
    assert!(
        got[0]
            .starts_with("pqcc-workload: weights opened with the released model-key (21 tensors, "),
        "{got:?}"
    );
    assert!(
        got.contains(&"pqcc-workload: prompt \"Alice was \"".to_owned()),
        "{got:?}"
    );
    let text = got
        .iter()
        .find(|l| l.starts_with("pqcc-workload: text \"Alice was "))
        .expect("a text line")
        .clone();
    assert!(
        got.iter()
            .any(|l| l.contains(" tokens in ") && l.contains(" tokens/s; prompt: 10 tokens")),
        "{got:?}"
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The same text from the plain directory.
    let out = bin()
        .args(["run", "--plain", plain.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(lines(&out.stdout, "pqcc-workload: ").contains(&text));

    // A wrong key, another revision, no secrets: one FATAL line, exit 1, no text.
    let wrong = root.join("wrong");
    std::fs::create_dir_all(&wrong).unwrap();
    std::fs::copy(secrets.join("wrong-key"), wrong.join("model-key")).unwrap();
    for (out, want) in [
        (guest(&wrong, "v1"), "wrong key"),
        (guest(&secrets, "v2"), "expected alice-llama@v2"),
        (
            bin()
                .env_clear()
                .env("MODEL_PATH", &sealed)
                .output()
                .unwrap(),
            "no secrets were released",
        ),
    ] {
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(lines(&out.stdout, "pqcc-workload: text").is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("pqcc-workload: FATAL "), "{err}");
        assert!(err.contains(want), "{want}: {err}");
        assert!(!err.contains(&hex::encode([6u8; 32])), "{err}");
    }
}
