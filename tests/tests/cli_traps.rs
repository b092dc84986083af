//! The CLI's traps (outside review, issue 29), each through the real `pqcc` binary:
//! a multi-value flag that swallowed the positional after it, a model manifest signed
//! with a salt its archive does not have, `model verify` that ignored the name and
//! revision it was given, key files behind symlinks, two spellings of one platform and
//! no common JSON success key, hex and PEM samples that were refused, and a launch that
//! only found out in the guest that it had no broker.

mod common;

use std::{
    fs,
    io::Read,
    os::unix::fs::{PermissionsExt, symlink},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{TempDir, pqcc, shared_data};
use serde_json::Value;

/// The recipe's dm-verity salt (`pqcc model build`'s default, 17 bytes).
const DEFAULT_SALT: &str = "00010203040506070809101a1b1c1d1e1f";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `pqcc ARGS`: (exit code, stdout, stderr). Never a panic in the binary.
fn run(args: &[&str]) -> (i32, String, String) {
    output(pqcc().args(args).output().unwrap())
}

fn output(o: Output) -> (i32, String, String) {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    (o.status.code().unwrap_or(-1), out, err)
}

#[track_caller]
fn expect(args: &[&str], code: i32) -> (String, String) {
    let (c, out, err) = run(args);
    assert_eq!(
        c, code,
        "pqcc {args:?}: exit {c}, expected {code}\nstdout:\n{out}\nstderr:\n{err}"
    );
    (out, err)
}

#[track_caller]
fn json(s: &str) -> Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not one JSON object ({e}): {s}"))
}

/// `pqcc keygen --alg ml-dsa-65 --out DIR/NAME`.
fn keygen(dir: &Path, name: &str) -> PathBuf {
    let k = dir.join(name);
    expect(&["keygen", "--alg", "ml-dsa-65", "--out", s(&k)], 0);
    k
}

fn argv(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A small model directory built with `pqcc model build` into `dir/out`: the archive.
fn build_model(dir: &Path) -> (PathBuf, String) {
    let tree = dir.join("tiny");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("config.json"), b"{\"model_type\":\"llama\"}").unwrap();
    fs::write(tree.join("sub/weights.bin"), vec![7u8; 10_000]).unwrap();
    let out = dir.join("out");
    let (line, _) = expect(
        &[
            "model",
            "build",
            s(&tree),
            "--out",
            s(&out),
            "--revision",
            "r1",
        ],
        0,
    );
    let (id, archive) = line.trim().split_once(' ').unwrap();
    let root = id.rsplit_once(':').unwrap().1.to_owned();
    assert_eq!(id, format!("tiny@r1:{root}"));
    (PathBuf::from(archive), root)
}

// ---------------------------------------------------------------------------------
// 1. One value per flag

/// `pqcc verify --trust KEY ENVELOPE`, the order the usage line shows, verifies: the
/// flag takes one key (repeat it for several) and leaves ENVELOPE alone.
#[test]
fn verify_trust_takes_one_value_and_leaves_the_envelope() {
    let d = TempDir::new("trap-trust");
    let k = keygen(d.path(), "k");
    let other = keygen(d.path(), "other");
    let ko = d.path().join("m.ko");
    fs::write(&ko, b"\x7fELF module").unwrap();
    expect(&["sign", "driver", s(&ko), "--key", s(&k)], 0);
    let env = d.path().join("m.ko.pqsig");
    let pubk = format!("{}.pub", s(&k));
    let other_pub = format!("{}.pub", s(&other));

    let (out, _) = expect(
        &["verify", "--trust", &pubk, s(&env), "--artifact", s(&ko)],
        0,
    );
    assert!(out.starts_with("allow"), "{out}");
    // Several keys: the flag repeated, the envelope anywhere.
    expect(
        &[
            "verify",
            "--trust",
            &other_pub,
            "--trust",
            &pubk,
            s(&env),
            "--artifact",
            s(&ko),
        ],
        0,
    );
    // Two values after one --trust: the second is a second positional, a usage error
    // that names it, not a key.
    let (_, err) = expect(&["verify", s(&env), "--trust", &other_pub, &pubk], 2);
    assert!(err.contains("unexpected argument"), "{err}");
}

// ---------------------------------------------------------------------------------
// 2. The salt and the name@revision are part of a model's identity

/// `pqcc sign model --root-hash` signs the archive's own salt (read from its hash
/// file), refuses a --salt that differs from it, and refuses to guess when the archive
/// has no metadata; `pqcc verify --archive` refuses a manifest whose salt is not the
/// archive's.
#[test]
fn sign_model_root_hash_signs_the_archives_salt() {
    let d = TempDir::new("trap-salt");
    let k = keygen(d.path(), "k");
    let pubk = format!("{}.pub", s(&k));
    let (archive, root) = build_model(d.path());
    let sign = |file: &Path, extra: &[&str]| -> Vec<String> {
        let mut a = vec![
            "sign",
            "model",
            s(file),
            "--key",
            s(&k),
            "--name",
            "tiny",
            "--revision",
            "r1",
            "--root-hash",
            &root,
            "--json",
            "--force",
        ];
        a.extend_from_slice(extra);
        a.iter().map(|x| x.to_string()).collect()
    };
    // The salt comes from the archive's hash file.
    let a = sign(&archive, &[]);
    let (out, _) = expect(&argv(&a), 0);
    assert_eq!(json(&out)["statement"]["salt"], DEFAULT_SALT, "{out}");
    let env = format!("{}.pqsig", s(&archive));
    let (out, _) = expect(
        &["verify", &env, "--trust", &pubk, "--archive", s(&archive)],
        0,
    );
    assert!(out.starts_with("valid: model-manifest"), "{out}");

    // A --salt that is not the archive's is refused, naming both.
    let a = sign(&archive, &["--salt", "00ff"]);
    let (_, err) = expect(&argv(&a), 2);
    assert!(err.contains("00ff") && err.contains(DEFAULT_SALT), "{err}");

    // A copy without its hash file: the salt must be given.
    let bare = d.path().join("bare.tar");
    fs::copy(&archive, &bare).unwrap();
    let a = sign(&bare, &[]);
    let (_, err) = expect(&argv(&a), 2);
    assert!(err.contains("--salt"), "{err}");
    // Given as empty: signed as asked, and then refused against the real archive.
    let a = sign(&bare, &["--salt", "-"]);
    let (out, _) = expect(&argv(&a), 0);
    assert_eq!(json(&out)["statement"]["salt"], "", "{out}");
    let env = format!("{}.pqsig", s(&bare));
    let (out, _) = expect(
        &[
            "verify",
            &env,
            "--trust",
            &pubk,
            "--archive",
            s(&archive),
            "--json",
        ],
        1,
    );
    let v = json(&out);
    assert_eq!(v["ok"], false, "{out}");
    assert_eq!(v["reason"], "salt-mismatch", "{out}");
    // --salt alone checks the signed salt too.
    let (out, _) = expect(
        &["verify", &env, "--trust", &pubk, "--salt", DEFAULT_SALT],
        1,
    );
    assert!(out.contains("salt-mismatch"), "{out}");
}

/// `pqcc model verify ARCHIVE NAME@REV:HASH` checks the name and revision as well as
/// the root hash, and says which differs.
#[test]
fn model_verify_checks_name_and_revision() {
    let d = TempDir::new("trap-identity");
    let (archive, root) = build_model(d.path());
    expect(&["model", "verify", s(&archive), &root], 0);
    expect(
        &["model", "verify", s(&archive), &format!("tiny@r1:{root}")],
        0,
    );
    let (_, err) = expect(
        &["model", "verify", s(&archive), &format!("other@r1:{root}")],
        1,
    );
    assert!(err.contains("name") && err.contains("other"), "{err}");
    let (out, err) = expect(
        &[
            "model",
            "verify",
            s(&archive),
            &format!("tiny@v9:{root}"),
            "--json",
        ],
        1,
    );
    assert!(err.contains("revision") && err.contains("v9"), "{err}");
    let v = json(&out);
    assert_eq!(v["ok"], false, "{out}");
    // An archive renamed away from its stamp and name cannot confirm an identity.
    let renamed = d.path().join("renamed.tar");
    fs::copy(&archive, &renamed).unwrap();
    fs::copy(
        format!("{}.verity", s(&archive)),
        format!("{}.verity", s(&renamed)),
    )
    .unwrap();
    expect(&["model", "verify", s(&renamed), &root], 0);
    let (_, err) = expect(
        &["model", "verify", s(&renamed), &format!("tiny@r1:{root}")],
        1,
    );
    assert!(err.contains("cannot confirm"), "{err}");
}

// ---------------------------------------------------------------------------------
// 3. Key files behind symlinks

/// Runs `pqcc ARGS` with a deadline: a FIFO must be refused, not waited on.
fn run_with_deadline(args: &[&str]) -> (i32, String, String) {
    let mut child = pqcc()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut out = String::new();
            let mut err = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (st.code().unwrap_or(-1), out, err);
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("pqcc {args:?} still running after 20 s (blocked on a FIFO?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lays out `dir` as Kubernetes mounts a secret: `..2024_01_01/NAME` holds the file,
/// `..data` links to that folder and `NAME` links to `..data/NAME`. Returns `NAME`.
fn k8s_secret(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
    let real = dir.join("..2024_01_01");
    fs::create_dir_all(&real).unwrap();
    fs::write(real.join(name), bytes).unwrap();
    fs::set_permissions(real.join(name), fs::Permissions::from_mode(mode)).unwrap();
    if fs::symlink_metadata(dir.join("..data")).is_err() {
        symlink("..2024_01_01", dir.join("..data")).unwrap();
    }
    let link = dir.join(name);
    symlink(format!("..data/{name}"), &link).unwrap();
    link
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(s(p)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Secret and public key files and data keys reached through a symlink chain are
/// read; a directory, a FIFO and a file group or others can read are refused (the
/// FIFO without blocking), through a link or not.
#[test]
fn key_files_behind_symlinks() {
    let d = TempDir::new("trap-symlink");
    let k = keygen(d.path(), "k");
    let sk = fs::read(&k).unwrap();
    let pk = fs::read(format!("{}.pub", s(&k))).unwrap();
    let mount = d.path().join("secret");
    fs::create_dir(&mount).unwrap();
    let sk_link = k8s_secret(&mount, "signing.key", &sk, 0o600);
    let pk_link = k8s_secret(&mount, "signing.key.pub", &pk, 0o644);
    let dek_link = k8s_secret(&mount, "model-key", &[9u8; 32], 0o400);

    let (want, _) = expect(&["id", s(&k)], 0);
    let (got, _) = expect(&["id", s(&sk_link)], 0);
    assert_eq!(got, want);
    let (got, _) = expect(&["id", s(&pk_link)], 0);
    assert_eq!(got, want);
    let ko = d.path().join("m.ko");
    fs::write(&ko, b"\x7fELF").unwrap();
    expect(&["sign", "driver", s(&ko), "--key", s(&sk_link)], 0);
    expect(
        &[
            "verify",
            &format!("{}.pqsig", s(&ko)),
            "--trust",
            s(&pk_link),
            "--artifact",
            s(&ko),
        ],
        0,
    );
    let model = d.path().join("model");
    fs::create_dir(&model).unwrap();
    fs::write(model.join("config.json"), b"{}").unwrap();
    expect(
        &[
            "model",
            "seal",
            s(&model),
            "--key",
            s(&dek_link),
            "--out",
            s(&d.path().join("sealed")),
        ],
        0,
    );

    // Refused: a readable-by-others target behind the link.
    let open = d.path().join("open");
    fs::create_dir(&open).unwrap();
    let loose = k8s_secret(&open, "signing.key", &sk, 0o644);
    let (_, err) = expect(&["id", s(&loose)], 2);
    assert!(err.contains("mode 0644"), "{err}");
    let loose_dek = k8s_secret(&open, "model-key", &[9u8; 32], 0o644);
    let (_, err) = expect(
        &[
            "model",
            "seal",
            s(&model),
            "--key",
            s(&loose_dek),
            "--out",
            s(&d.path().join("sealed2")),
        ],
        2,
    );
    assert!(err.contains("mode 0644"), "{err}");
    // A directory, directly and through a link.
    symlink(&mount, d.path().join("dirlink")).unwrap();
    for p in [mount.clone(), d.path().join("dirlink")] {
        let (_, err) = expect(&["id", s(&p)], 2);
        assert!(err.contains("not a regular file"), "{err}");
    }
    // A FIFO, directly and through a link, for every kind of key file.
    let fifo = d.path().join("fifo");
    mkfifo(&fifo);
    symlink(&fifo, d.path().join("fifolink")).unwrap();
    for p in [fifo.clone(), d.path().join("fifolink")] {
        for args in [
            vec!["id", s(&p)],
            vec!["sign", "driver", s(&ko), "--key", s(&p), "--force"],
            vec!["verify", "x.pqsig", "--trust", s(&p)],
            vec!["model", "unseal", "x", "--key", s(&p), "--out", "y"],
        ] {
            let (code, _, err) = run_with_deadline(&args);
            assert_eq!(code, 2, "{args:?}: {err}");
            assert!(err.contains("not a regular file"), "{args:?}: {err}");
        }
    }
}

// ---------------------------------------------------------------------------------
// 4. One platform spelling, one JSON success key

/// `pqcc evidence verify` of an SEV-SNP report with its VCEK, judged at `at`.
fn snp_args<'a>(
    platform: &'a str,
    report: &'a str,
    vcek: &'a str,
    at: &'a str,
    json: bool,
) -> Vec<&'a str> {
    let mut a = vec![
        "evidence",
        "verify",
        "--platform",
        platform,
        "--report",
        report,
        "--vcek",
        vcek,
        "--at",
        at,
    ];
    if json {
        a.push("--json");
    }
    a
}

fn snp_report() -> PathBuf {
    shared_data().join("sev-snp/report_milan.bin")
}

/// Inside every SNP sample certificate's window (2025-01-01).
const SNP_AT: &str = "1735689600";

/// `snp` and `sev-snp` are both accepted wherever a platform is given; `sev-snp` is
/// what is printed.
#[test]
fn platform_is_printed_as_sev_snp_and_read_in_both_spellings() {
    let vcek = shared_data().join("sev-snp/vcek_milan.der");
    for spelling in ["snp", "sev-snp"] {
        let (out, _) = expect(
            &snp_args(spelling, s(&snp_report()), s(&vcek), SNP_AT, true),
            0,
        );
        assert_eq!(json(&out)["platform"], "sev-snp", "{out}");
    }
    let (out, _) = expect(
        &snp_args("snp", s(&snp_report()), s(&vcek), SNP_AT, false),
        0,
    );
    assert!(out.contains("platform: sev-snp\n"), "{out}");

    // sign memory-report takes `snp` too, and prints sev-snp.
    let d = TempDir::new("trap-platform");
    let k = keygen(d.path(), "k");
    let f = d.path().join("weights");
    fs::write(&f, b"w").unwrap();
    for spelling in ["snp", "sev-snp"] {
        let (out, _) = expect(
            &[
                "sign",
                "memory-report",
                s(&f),
                "--key",
                s(&k),
                "--workload",
                "w",
                "--platform",
                spelling,
                "--nonce",
                &"11".repeat(32),
                "--json",
                "--force",
            ],
            0,
        );
        assert_eq!(json(&out)["statement"]["platform"], "sev-snp", "{out}");
    }

    // image measure and launch take `sev-snp` as well as `snp`.
    let (_, err) = expect(
        &[
            "image",
            "measure",
            "--profile",
            "sev-snp",
            "--ovmf",
            s(&d.path().join("missing.fd")),
        ],
        2,
    );
    assert!(err.contains("--ovmf"), "{err}");
    let f = LaunchFixture::new(&d);
    let snp = f.launch(&["--profile", "snp", "--firmware", "OVMF.fd", "--dry-run"]);
    let sev_snp = f.launch(&["--profile", "sev-snp", "--firmware", "OVMF.fd", "--dry-run"]);
    assert_eq!(snp.0, 0, "{}", snp.2);
    assert_eq!(sev_snp.0, 0, "{}", sev_snp.2);
    assert_eq!(snp.1, sev_snp.1);
    // Its messages say sev-snp.
    let (code, _, err) = f.launch(&["--profile", "snp", "--dry-run"]);
    assert_eq!(code, 2);
    assert!(err.contains("profile sev-snp needs --firmware"), "{err}");
}

/// Every `--json` output carries `"ok": true|false` beside its details (and keeps its
/// older success keys).
#[test]
fn every_json_output_has_ok() {
    let d = TempDir::new("trap-ok");
    let p = d.path();
    let has_ok = |out: &str, want: bool| {
        for line in out.lines().filter(|l| !l.trim().is_empty()) {
            let v = json(line);
            assert_eq!(v["ok"], want, "{line}");
        }
    };
    let k = p.join("k");
    let (out, _) = expect(
        &["keygen", "--alg", "ml-dsa-65", "--out", s(&k), "--json"],
        0,
    );
    has_ok(&out, true);
    let (out, _) = expect(&["id", s(&k), "--json"], 0);
    has_ok(&out, true);
    let pubk = format!("{}.pub", s(&k));
    let ko = p.join("m.ko");
    fs::write(&ko, b"\x7fELF").unwrap();
    let (out, _) = expect(&["sign", "driver", s(&ko), "--key", s(&k), "--json"], 0);
    has_ok(&out, true);
    let env = format!("{}.pqsig", s(&ko));
    let (out, _) = expect(&["info", &env, "--json"], 0);
    has_ok(&out, true);
    let log = p.join("audit.log");
    let (out, _) = expect(
        &[
            "verify",
            &env,
            "--trust",
            &pubk,
            "--artifact",
            s(&ko),
            "--audit-log",
            s(&log),
            "--json",
        ],
        0,
    );
    has_ok(&out, true);
    assert_eq!(json(&out)["valid"], true);
    let (out, _) = expect(&["verify", &env, "--trust", &pubk, "--json"], 1);
    has_ok(&out, false);
    let (out, _) = expect(&["audit", "verify", s(&log), "--json"], 0);
    has_ok(&out, true);
    assert_eq!(json(&out)["valid"], true);
    let policy = p.join("policy.toml");
    fs::write(&policy, "default = \"deny\"\n").unwrap();
    let (code, out, _) = run(&["policy", "check", s(&policy), "--json"]);
    has_ok(&out, code == 0);

    // Models.
    let tree = p.join("tiny");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("config.json"), b"{}").unwrap();
    let (out, _) = expect(
        &[
            "model",
            "build",
            s(&tree),
            "--out",
            s(&p.join("out")),
            "--revision",
            "r1",
            "--json",
        ],
        0,
    );
    has_ok(&out, true);
    let v = json(&out);
    let archive = v["archive"].as_str().unwrap().to_owned();
    let root = v["root_hash"].as_str().unwrap().to_owned();
    let (out, _) = expect(&["model", "verify", &archive, &root, "--json"], 0);
    has_ok(&out, true);
    let dek = p.join("dek");
    fs::write(&dek, [3u8; 32]).unwrap();
    fs::set_permissions(&dek, fs::Permissions::from_mode(0o600)).unwrap();
    let sealed = p.join("sealed");
    let (out, _) = expect(
        &[
            "model",
            "seal",
            s(&tree),
            "--key",
            s(&dek),
            "--out",
            s(&sealed),
            "--json",
        ],
        0,
    );
    has_ok(&out, true);
    let (out, _) = expect(
        &[
            "model",
            "unseal",
            s(&sealed),
            "--key",
            s(&dek),
            "--out",
            s(&p.join("plain")),
            "--json",
        ],
        0,
    );
    has_ok(&out, true);

    // Images and launches.
    let init = p.join("init");
    fs::write(&init, b"\x7fELF").unwrap();
    let cfg = p.join("init.toml");
    fs::write(&cfg, "[workload]\ncommand = \"/w\"\n").unwrap();
    let (out, _) = expect(
        &[
            "image",
            "build",
            "--init",
            s(&init),
            "--config",
            s(&cfg),
            "-o",
            s(&p.join("img")),
            "--json",
        ],
        0,
    );
    has_ok(&out, true);
    let f = LaunchFixture::new(&d);
    let (code, out, err) = f.launch(&["--profile", "none", "--dry-run", "--json"]);
    assert_eq!(code, 0, "{err}");
    has_ok(&out, true);

    // Evidence.
    let vcek = shared_data().join("sev-snp/vcek_milan.der");
    let (out, _) = expect(
        &snp_args("snp", s(&snp_report()), s(&vcek), SNP_AT, true),
        0,
    );
    has_ok(&out, true);
    let (out, _) = expect(
        &snp_args("snp", s(&snp_report()), s(&vcek), "1901474624", true),
        1,
    );
    has_ok(&out, false);
    let gpu = shared_data().join("nvidia-gpu");
    let report = gpu.join("v2023_initial/attestationReport.txt");
    let nonce = fs::read_to_string(&report).unwrap().trim()[8..72].to_owned();
    let (out, _) = expect(
        &[
            "gpu",
            "verify",
            "--evidence",
            s(&report),
            "--cert-chain",
            s(&gpu.join("v2023_initial/gpuAkCertChain.txt")),
            "--rim",
            s(&gpu.join("Driver_RIM_test_no_gpu.swidtag")),
            "--rim",
            s(&gpu.join("1010_0200_882_96005E0001_test_no_gpu.swidtag")),
            "--nonce",
            &nonce,
            "--at",
            "1690000000",
            "--insecure-no-revocation",
            "--json",
        ],
        0,
    );
    has_ok(&out, true);
}

// ---------------------------------------------------------------------------------
// 5. Hex samples and PEM certificates

/// The DER certificate `der` as PEM (64-column base64).
fn pem(der: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for c in der.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                b64.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap());
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

/// The shipped hex samples (`sev-snp/report_milan.hex`, `tdx/near_quote_hex.txt`,
/// `tdx/tdx-quote.hex` with its `0x`) and a PEM VCEK are read like their binary forms.
#[test]
fn hex_samples_and_pem_vceks_are_accepted() {
    let data = shared_data();
    let d = TempDir::new("trap-hex");
    let vcek_der = data.join("sev-snp/vcek_milan.der");
    let vcek_pem = d.path().join("vcek.pem");
    fs::write(&vcek_pem, pem(&fs::read(&vcek_der).unwrap())).unwrap();
    let snp = |report: &Path, vcek: &Path| {
        expect(&snp_args("snp", s(report), s(vcek), SNP_AT, true), 0).0
    };
    let want = json(&snp(&snp_report(), &vcek_der));
    for (report, vcek) in [
        (data.join("sev-snp/report_milan.hex"), vcek_der.clone()),
        (snp_report(), vcek_pem.clone()),
        (data.join("sev-snp/report_milan.hex"), vcek_pem.clone()),
    ] {
        let got = json(&snp(&report, &vcek));
        assert_eq!(got["measurements"], want["measurements"]);
        assert_eq!(got["valid"], true);
    }
    // Hex wrapped over lines, with a 0x prefix and CRLFs, reads the same.
    let text = fs::read_to_string(data.join("sev-snp/report_milan.hex")).unwrap();
    let wrapped: String = text
        .trim()
        .as_bytes()
        .chunks(64)
        .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
        .collect();
    let w = d.path().join("wrapped.hex");
    fs::write(&w, format!("0x{wrapped}")).unwrap();
    assert_eq!(json(&snp(&w, &vcek_pem))["valid"], true);
    // Neither hex nor a report: refused with a named reason, not a panic.
    let junk = d.path().join("junk.hex");
    fs::write(&junk, "0x12 zz\n").unwrap();
    let (c, out, err) = run(&snp_args("snp", s(&junk), s(&vcek_pem), SNP_AT, false));
    assert!(c == 1 || c == 2, "{out}{err}");

    // TDX: a hex quote with its collateral verifies; the 0x-prefixed sample parses
    // (it has no collateral, so the verdict is a named failure, exit 1, not a usage
    // error).
    let coll = data.join("tdx/near_quote_collateral.json");
    let (out, _) = expect(
        &[
            "evidence",
            "verify",
            "--platform",
            "tdx",
            "--quote",
            s(&data.join("tdx/near_quote_hex.txt")),
            "--collateral",
            s(&coll),
            "--at",
            NEAR_AT,
            "--json",
        ],
        0,
    );
    assert_eq!(json(&out)["valid"], true, "{out}");
    let (out, _) = expect(
        &[
            "evidence",
            "verify",
            "--platform",
            "tdx",
            "--quote",
            s(&data.join("tdx/tdx-quote.hex")),
            "--collateral",
            s(&coll),
            "--at",
            NEAR_AT,
            "--json",
        ],
        1,
    );
    assert_eq!(json(&out)["valid"], false, "{out}");
}

/// Inside the window of `tdx/near_quote_collateral.json` (2025-10-01).
const NEAR_AT: &str = "1759276800";

// ---------------------------------------------------------------------------------
// 6. A launch without the broker its guest waits for

/// A work directory laid out for `pqcc launch --dry-run` (as `launch_golden.rs`).
struct LaunchFixture {
    dir: PathBuf,
}

const ROOT: &str = "5c0f9a3b28f1d6e4a7b0c2d8e9f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1d3e5f7";

impl LaunchFixture {
    fn new(d: &TempDir) -> Self {
        let p = d.path().join("launch");
        fs::create_dir_all(p.join("models")).unwrap();
        fs::write(p.join("vmlinux"), b"\x7fELF kernel").unwrap();
        fs::write(p.join("initrd.img"), b"070701").unwrap();
        fs::write(p.join("OVMF.fd"), vec![0u8; 4096]).unwrap();
        let m = p.join("models");
        fs::write(m.join("org--tiny@r1.tar"), vec![0u8; 8192]).unwrap();
        fs::write(m.join("org--tiny@r1.tar.verity"), vec![0u8; 8192]).unwrap();
        fs::write(m.join("org--tiny@r1.tar.hash"), ROOT).unwrap();
        Self { dir: p }
    }

    fn launch_with(&self, initrd: &str, extra: &[&str]) -> (i32, String, String) {
        output(
            pqcc()
                .current_dir(&self.dir)
                .arg("launch")
                .args(["--kernel", "vmlinux", "--initrd", initrd])
                .args(["--model", &format!("org/tiny@r1:{ROOT}")])
                .args(["--model-dir", "models"])
                .args(extra)
                .output()
                .unwrap(),
        )
    }

    fn launch(&self, extra: &[&str]) -> (i32, String, String) {
        self.launch_with("initrd.img", extra)
    }

    /// `pqcc image build` of `config` into NAME in the fixture.
    fn image(&self, name: &str, config: &str) {
        fs::write(self.dir.join("init"), b"\x7fELF fake init").unwrap();
        fs::write(self.dir.join(format!("{name}.toml")), config).unwrap();
        let (code, _, err) = output(
            Command::new(common::pqcc_bin())
                .current_dir(&self.dir)
                .args(["image", "build", "--init", "init", "--config"])
                .arg(format!("{name}.toml"))
                .args(["-o", name])
                .output()
                .unwrap(),
        );
        assert_eq!(code, 0, "{err}");
    }
}

/// An initramfs whose init.toml names a broker, launched without `--broker`: a warning
/// on stderr before anything boots (here: before the dry run's command line).
#[test]
fn launch_warns_when_the_guest_expects_a_broker() {
    let d = TempDir::new("trap-broker");
    let f = LaunchFixture::new(&d);
    let base = format!(
        "[model]\nname = \"org/tiny\"\nrevision = \"r1\"\nroot_hash = \"{ROOT}\"\nsalt = \"\"\n\
         data_blocks = 2\ndata_serial = \"pqcc-data\"\nhash_serial = \"pqcc-hash\"\n\n\
         [platform]\nrequired = \"none\"\ninsecure_no_tee = true\n\n\
         [workload]\ncommand = \"/bin/workload\"\n"
    );
    let with_broker = format!(
        "{base}\n[broker]\npublic_key = \"{}\"\ntransport = \"virtio-serial:org.pqcc.broker.0\"\n",
        "ab".repeat(1952)
    );
    f.image("plain.img", &base);
    f.image("broker.img", &with_broker);

    let (code, _, err) = f.launch_with("plain.img", &["--profile", "none", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("broker"), "{err}");
    let (code, _, err) = f.launch_with("broker.img", &["--profile", "none", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning") && err.contains("[broker]") && err.contains("--broker"),
        "{err}"
    );
    let (code, _, err) = f.launch_with(
        "broker.img",
        &[
            "--profile",
            "none",
            "--dry-run",
            "--broker",
            "unix:/tmp/b.sock",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("[broker]"), "{err}");
}
