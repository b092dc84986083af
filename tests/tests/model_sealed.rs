//! `pqcc model seal`, `pqcc model unseal` and `pqcc model build --seal-key` as a user
//! runs them: output lines, exit codes (0 ok, 1 refused, 2 usage or I/O), one-line
//! reasons, nothing written on failure, no output under its final name after a kill,
//! and the sealed archive checked by GNU tar and `pqcc model verify`.

mod common;

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::{TempDir, pqcc, tool};
use pqcc_core::wire::DType;
use pqcc_sealed::safetensors::encode;

fn pseudo(seed: u8, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(&pqcc_core::hash::sha3_256(&[&[seed], &i.to_le_bytes()]));
        i += 1;
    }
    out.truncate(n);
    out
}

/// A small sharded Hugging Face-layout model.
fn model(dir: &Path, big: usize) {
    fs::create_dir_all(dir).unwrap();
    let a = pseudo(1, big);
    let b = pseudo(2, 4000);
    fs::write(
        dir.join("model-00001-of-00002.safetensors"),
        encode(
            &[("model.embed_tokens.weight", DType::U8, &[big as u64], &a)],
            None,
        )
        .unwrap(),
    )
    .unwrap();
    fs::write(
        dir.join("model-00002-of-00002.safetensors"),
        encode(
            &[("lm_head.weight", DType::F32, &[1000], &b)],
            Some(&[("format", "pt")]),
        )
        .unwrap(),
    )
    .unwrap();
    fs::write(
        dir.join("model.safetensors.index.json"),
        br#"{"metadata":{"total_size":0},"weight_map":{"model.embed_tokens.weight":"model-00001-of-00002.safetensors","lm_head.weight":"model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    fs::write(dir.join("config.json"), br#"{"model_type":"llama"}"#).unwrap();
    fs::write(dir.join("tokenizer.json"), b"{}").unwrap();
}

fn key(dir: &Path, name: &str, byte: u8) -> std::path::PathBuf {
    let p = dir.join(name);
    fs::write(&p, [byte; 32]).unwrap();
    fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    p
}

fn run(c: &mut Command) -> (i32, String, String) {
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

const SALT: &str = "0707070707070707070707070707070707070707070707070707070707070707";

#[test]
fn seal_and_unseal_print_one_line_and_reproduce_the_model() {
    let t = TempDir::new("seal-cli");
    let src = t.path().join("m");
    model(&src, 100_000);
    let k = key(t.path(), "dek", 1);
    let out = t.path().join("sealed");
    let (code, stdout, stderr) = run(pqcc()
        .args(["model", "seal"])
        .arg(&src)
        .arg("--key")
        .arg(&k)
        .arg("--out")
        .arg(&out)
        .args(["--name", "alice/m", "--revision", "v1", "--salt", SALT]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, format!("alice/m@v1 {}\n", out.display()));
    // Piped stderr: no progress bar.
    assert!(!stderr.contains('\r'), "{stderr:?}");

    // --json, and byte-reproducible with the same key and salt.
    let out2 = t.path().join("sealed2");
    let (code, stdout, _) = run(pqcc()
        .args(["model", "seal"])
        .arg(&src)
        .arg("--key")
        .arg(&k)
        .arg("--out")
        .arg(&out2)
        .args([
            "--name",
            "alice/m",
            "--revision",
            "v1",
            "--salt",
            SALT,
            "--json",
        ]));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["model"], "alice/m@v1");
    assert_eq!(v["salt"], SALT);
    assert_eq!(v["files"], 5);
    assert_eq!(v["tensors"], 2);
    assert_eq!(
        v["key_id"].as_str().unwrap(),
        hex::encode(pqcc_core::sealed::key_id(&pqcc_core::secret::Secret::new(
            [1; 32]
        )))
    );
    assert_eq!(files(&out), files(&out2));

    let back = t.path().join("back");
    let (code, stdout, stderr) = run(pqcc()
        .args(["model", "unseal"])
        .arg(&out)
        .arg("--key")
        .arg(&k)
        .arg("--out")
        .arg(&back));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, format!("alice/m@v1 {}\n", back.display()));
    assert_eq!(files(&back), files(&src));
}

#[test]
fn refusals_exit_1_with_one_line_and_write_nothing() {
    let t = TempDir::new("seal-refuse");
    let src = t.path().join("m");
    model(&src, 50_000);
    let k = key(t.path(), "dek", 1);
    let k2 = key(t.path(), "other", 2);
    let sealed = t.path().join("sealed");
    run(pqcc()
        .args(["model", "seal"])
        .arg(&src)
        .arg("--key")
        .arg(&k)
        .arg("--out")
        .arg(&sealed)
        .args(["--name", "alice/m", "--revision", "v1"]));
    let unseal = |dir: &Path, key: &Path, extra: &[&str]| {
        let out = t.path().join("out");
        let r = run(pqcc()
            .args(["model", "unseal"])
            .arg(dir)
            .arg("--key")
            .arg(key)
            .arg("--out")
            .arg(&out)
            .args(extra));
        assert!(!out.exists(), "output written on refusal: {r:?}");
        r
    };
    let one_line = |r: &(i32, String, String), want: &str| {
        assert_eq!(r.0, 1, "{r:?}");
        assert_eq!(r.2.lines().count(), 1, "{r:?}");
        assert!(r.2.contains(want), "expected {want:?}: {r:?}");
    };
    one_line(&unseal(&sealed, &k2, &[]), "wrong key");
    one_line(
        &unseal(&sealed, &k, &["--expect-model", "alice/m@v2"]),
        "sealed for model alice/m@v1, expected alice/m@v2",
    );
    let shard = sealed.join("model-00001-of-00002.safetensors.sealed");
    let orig = fs::read(&shard).unwrap();
    let mut bad = orig.clone();
    bad[orig.len() / 2] ^= 1;
    fs::write(&shard, &bad).unwrap();
    one_line(
        &unseal(&sealed, &k, &[]),
        "model-00001-of-00002.safetensors: tensor \"model.embed_tokens.weight\": frame",
    );
    fs::write(&shard, &orig[..orig.len() - 1]).unwrap();
    one_line(&unseal(&sealed, &k, &[]), "truncated");
    fs::remove_file(&shard).unwrap();
    one_line(&unseal(&sealed, &k, &[]), "missing");
    fs::write(&shard, &orig).unwrap();

    // Input that is not a valid model: exit 1, nothing written.
    fs::write(src.join("bad.safetensors"), b"\x10\0\0\0\0\0\0\0{}").unwrap();
    let out = t.path().join("never");
    let r = run(pqcc()
        .args(["model", "seal"])
        .arg(&src)
        .arg("--key")
        .arg(&k)
        .arg("--out")
        .arg(&out)
        .args(["--name", "alice/m", "--revision", "v1"]));
    one_line(&r, "bad.safetensors");
    assert!(!out.exists());
    fs::remove_file(src.join("bad.safetensors")).unwrap();

    // Usage and I/O errors exit 2: a short key file, an existing output.
    fs::write(t.path().join("short"), [0u8; 31]).unwrap();
    let r = run(pqcc()
        .args(["model", "seal"])
        .arg(&src)
        .arg("--key")
        .arg(t.path().join("short"))
        .arg("--out")
        .arg(&out));
    assert_eq!(r.0, 2, "{r:?}");
    assert!(r.2.contains("32 raw bytes or 64 hex digits"), "{r:?}");
    let r = run(pqcc()
        .args(["model", "seal"])
        .arg(&src)
        .arg("--key")
        .arg(&k)
        .arg("--out")
        .arg(&sealed));
    assert_eq!(r.0, 2, "{r:?}");
    assert!(r.2.contains("already exists"), "{r:?}");
}

#[test]
fn build_with_seal_key_archives_ciphertext_that_tar_and_verify_accept() {
    let t = TempDir::new("seal-build");
    let src = t.path().join("m");
    model(&src, 300_000);
    let k = key(t.path(), "dek", 3);
    let out = t.path().join("archives");
    let build = |dir: &str| {
        run(pqcc()
            .args(["model", "build"])
            .arg(&src)
            .arg("--seal-key")
            .arg(&k)
            .args([
                "--seal-salt",
                SALT,
                "--name",
                "alice/m",
                "--revision",
                "v1",
                "--json",
            ])
            .arg("--out")
            .arg(out.join(dir)))
    };
    let (code, stdout, stderr) = build("a");
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let archive = v["archive"].as_str().unwrap().to_owned();
    let root = v["root_hash"].as_str().unwrap().to_owned();
    // Same key and salt: the same root hash.
    let (_, stdout2, _) = build("b");
    let v2: serde_json::Value = serde_json::from_str(&stdout2).unwrap();
    assert_eq!(v2["root_hash"], v["root_hash"]);
    // No staging directory is left beside the archive.
    let left: Vec<String> = fs::read_dir(out.join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(left.iter().all(|n| !n.contains("sealing")), "{left:?}");

    let (code, _, stderr) = run(pqcc().args(["model", "verify", &archive, &root]));
    assert_eq!(code, 0, "{stderr}");
    // GNU tar sees only sealed files, and what it extracts unseals to the model.
    let listing = Command::new(tool("tar"))
        .args(["-tf", &archive])
        .output()
        .unwrap();
    let names = String::from_utf8(listing.stdout).unwrap();
    assert!(names.contains("./pqcc-manifest.sealed"), "{names}");
    assert!(names.contains("./config.json.sealed"), "{names}");
    assert!(!names.contains("./config.json\n"), "{names}");
    let x = t.path().join("x");
    fs::create_dir(&x).unwrap();
    assert!(
        Command::new(tool("tar"))
            .args(["-xf", &archive, "-C"])
            .arg(&x)
            .status()
            .unwrap()
            .success()
    );
    let back = t.path().join("back");
    let (code, _, stderr) = run(pqcc()
        .args(["model", "unseal"])
        .arg(&x)
        .arg("--key")
        .arg(&k)
        .arg("--out")
        .arg(&back)
        .args(["--expect-model", "alice/m@v1"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(files(&back), files(&src));
}

#[test]
fn a_killed_seal_leaves_nothing_under_the_final_name() {
    let t = TempDir::new("seal-kill");
    let src = t.path().join("m");
    model(&src, 48 << 20);
    let k = key(t.path(), "dek", 4);
    let mut complete = 0;
    for (i, ms) in [5u64, 20, 60, 120, 250, 400, 700, 1500]
        .into_iter()
        .enumerate()
    {
        let out = t.path().join(format!("s{i}"));
        let mut child = pqcc()
            .args(["model", "seal"])
            .arg(&src)
            .arg("--key")
            .arg(&k)
            .arg("--out")
            .arg(&out)
            .args(["--name", "alice/m", "--revision", "v1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if out.exists() {
            // It finished before the kill: then it must be whole.
            assert!(status.success() || out.join("pqcc-manifest.sealed").exists());
            let back = t.path().join(format!("b{i}"));
            let (code, _, stderr) = run(pqcc()
                .args(["model", "unseal"])
                .arg(&out)
                .arg("--key")
                .arg(&k)
                .arg("--out")
                .arg(&back));
            assert_eq!(
                code, 0,
                "a complete-looking output does not unseal: {stderr}"
            );
            complete += 1;
        }
    }
    assert!(
        complete < 8,
        "every run finished before its kill: the test proves nothing"
    );
}

#[test]
fn bench_sealed_reports_every_op_against_its_anchors() {
    let t = TempDir::new("bench-sealed");
    let (code, stdout, stderr) = run(pqcc()
        .args([
            "bench",
            "sealed",
            "--size",
            "2M",
            "--frame-size",
            "64K",
            "--runs",
            "1",
            "--json",
        ])
        .arg("--dir")
        .arg(t.path()));
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for op in ["raw-seal", "raw-open", "read+aead", "seal", "open"] {
        let r = rows
            .iter()
            .find(|r| r["op"] == op && r["threads"] == 1)
            .unwrap_or_else(|| panic!("no {op} row: {stdout}"));
        assert_eq!(r["bytes"], 2 << 20);
        assert!(r["gbps_best"].as_f64().unwrap() > 0.0);
    }
    let open = rows.iter().find(|r| r["op"] == "open").unwrap();
    assert!(open["ratio_to_raw_best"].as_f64().is_some());
    assert!(open["ratio_to_read_aead_best"].as_f64().is_some());
}
