//! `pqcc sign | verify | info | policy check` through the real binary: round trips for
//! every statement kind, a 64 MiB artifact, spoofed signers, modified and stripped
//! artifacts, damaged envelopes (never a panic, always a clear error and the right exit
//! code), eBPF load policies from TOML, the audit log, and `info`'s NOT VERIFIED mark.

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Output},
};

use pqcc_core::{hash::sha3_256, statement::SIGNED_MAX_LEN};
use serde_json::Value;

const PQCC: &str = env!("CARGO_BIN_EXE_pqcc");

mod common;
use common::TempDir;

fn pqcc(args: &[&str]) -> Output {
    Command::new(PQCC).args(args).output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Asserts the exit code (never a signal, never a panic) and returns stdout, stderr.
#[track_caller]
fn expect(o: &Output, code: i32) -> (String, String) {
    let (out, err) = text(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit status {:?}, expected {code}\nstdout:\n{out}\nstderr:\n{err}",
        o.status
    );
    assert!(!err.contains("panicked"), "{err}");
    (out, err)
}

fn json(s: &str) -> Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A fresh ML-DSA-65 key pair `name` / `name.pub` in `d`; returns its did.
fn keygen(d: &TempDir, name: &str) -> String {
    let (out, _) = expect(
        &pqcc(&["keygen", "--alg", "ml-dsa-65", "--out", &d.s(name)]),
        0,
    );
    let did = out.trim().to_string();
    assert!(did.starts_with("did:pqaid:"), "{did}");
    did
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| i.to_le_bytes()[0].wrapping_mul(31).wrapping_add(seed) ^ (i >> 8).to_le_bytes()[0])
        .collect()
}

#[test]
fn version_and_help() {
    let (out, _) = expect(&pqcc(&["--version"]), 0);
    assert!(out.starts_with("pqcc "), "{out}");
    // It names the commit it was built from (issue 29), `unknown` outside a checkout.
    let commit = out
        .trim()
        .strip_suffix(')')
        .and_then(|s| s.split_once("(commit "))
        .map(|(_, c)| c)
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{out}"
    );
    for sub in [
        &["sign", "--help"][..],
        &["sign", "driver", "--help"],
        &["sign", "bpf", "--help"],
        &["sign", "memory-report", "--help"],
        &["sign", "model", "--help"],
        &["verify", "--help"],
        &["info", "--help"],
        &["policy", "check", "--help"],
    ] {
        let (out, _) = expect(&pqcc(sub), 0);
        assert!(out.contains("Usage"), "{sub:?}: {out}");
    }
    // The 13 eBPF program types are offered and nothing else is taken.
    let (out, _) = expect(&pqcc(&["sign", "bpf", "--help"]), 0);
    for t in [
        "kprobe",
        "socket_filter",
        "cgroup_skb",
        "perf_event",
        "sched_cls",
        "unknown",
    ] {
        assert!(out.contains(t), "{t}: {out}");
    }
    expect(
        &pqcc(&["sign", "bpf", "x", "--key", "k", "--prog-type", "kprob"]),
        2,
    );
    expect(&pqcc(&["verify", "x.pqsig"]), 2); // --trust is required
}

#[test]
fn driver_round_trip_and_artifact_checks() {
    let d = TempDir::new("driver");
    let did = keygen(&d, "k");
    let ko = d.file("nvidia.ko", &pattern(10_000, 1));
    let (out, err) = expect(
        &pqcc(&[
            "sign",
            "driver",
            &ko,
            "--key",
            &d.s("k"),
            "--version",
            "550.54.14",
        ]),
        0,
    );
    let env = d.s("nvidia.ko.pqsig");
    assert!(Path::new(&env).is_file(), "{out}{err}");
    assert!(out.contains(&did) && out.contains("driver-module"), "{out}");
    assert!(out.contains(&hex::encode(sha3_256(&[&pattern(10_000, 1)]))));
    // No temporary file left behind.
    let names: Vec<_> = std::fs::read_dir(&d.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    // Refuses to overwrite without --force.
    let (_, err) = expect(&pqcc(&["sign", "driver", &ko, "--key", &d.s("k")]), 2);
    assert!(err.contains("already exists"), "{err}");

    let pubk = d.s("k.pub");
    let (out, _) = expect(
        &pqcc(&["verify", &env, "--trust", &pubk, "--artifact", &ko]),
        0,
    );
    assert!(out.starts_with("allow: driver-module"), "{out}");
    let (out, _) = expect(
        &pqcc(&[
            "verify",
            &env,
            "--trust",
            &pubk,
            "--artifact",
            &ko,
            "--json",
        ]),
        0,
    );
    let v = json(&out);
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["signer"], did.as_str());
    assert_eq!(v["statement"]["name"], "nvidia");
    assert_eq!(v["statement"]["version"], "550.54.14");
    assert_eq!(v["statement"]["size"], 10_000);

    // Stripped: no artifact given.
    let (out, _) = expect(&pqcc(&["verify", &env, "--trust", &pubk]), 1);
    assert!(out.contains("no-artifact"), "{out}");
    // Modified in place (same length).
    let mut m = pattern(10_000, 1);
    m[5000] ^= 1;
    let bad = d.file("modified.ko", &m);
    let (out, _) = expect(
        &pqcc(&["verify", &env, "--trust", &pubk, "--artifact", &bad]),
        1,
    );
    assert!(out.contains("hash-mismatch"), "{out}");
    // Appended to.
    let mut m = pattern(10_000, 1);
    m.push(0);
    let longer = d.file("longer.ko", &m);
    let (out, _) = expect(
        &pqcc(&["verify", &env, "--trust", &pubk, "--artifact", &longer]),
        1,
    );
    assert!(out.contains("size-mismatch"), "{out}");
    // Over a cap on the actual length.
    let (out, _) = expect(
        &pqcc(&[
            "verify",
            &env,
            "--trust",
            &pubk,
            "--artifact",
            &ko,
            "--max-size",
            "9999",
        ]),
        1,
    );
    assert!(out.contains("too-large"), "{out}");
    // Options for other kinds are usage errors.
    let (_, err) = expect(
        &pqcc(&[
            "verify",
            &env,
            "--trust",
            &pubk,
            "--artifact",
            &ko,
            "--root-hash",
            &"00".repeat(32),
        ]),
        2,
    );
    assert!(err.contains("--root-hash does not apply"), "{err}");
    // A missing artifact file is an I/O error naming it.
    let (_, err) = expect(
        &pqcc(&[
            "verify",
            &env,
            "--trust",
            &pubk,
            "--artifact",
            &d.s("nope.ko"),
        ]),
        2,
    );
    assert!(err.contains("nope.ko"), "{err}");
}

#[test]
fn spoofed_signers_are_refused() {
    let d = TempDir::new("spoof");
    keygen(&d, "alice");
    let mallory_did = keygen(&d, "mallory");
    let ko = d.file("m.ko", &pattern(3000, 2));
    expect(
        &pqcc(&[
            "sign",
            "driver",
            &ko,
            "--key",
            &d.s("alice"),
            "-o",
            &d.s("a.pqsig"),
        ]),
        0,
    );
    expect(
        &pqcc(&[
            "sign",
            "driver",
            &ko,
            "--key",
            &d.s("mallory"),
            "-o",
            &d.s("m.pqsig"),
        ]),
        0,
    );
    // Signed by mallory, verifier trusts alice only.
    let (out, _) = expect(
        &pqcc(&[
            "verify",
            &d.s("m.pqsig"),
            "--trust",
            &d.s("alice.pub"),
            "--artifact",
            &ko,
        ]),
        1,
    );
    assert!(
        out.contains("unknown-signer") && out.contains(&mallory_did),
        "{out}"
    );
    // Signed by alice, with mallory's id written into the signer field (a spoofed
    // did): the key the id names did not make the signature.
    let mut a = std::fs::read(d.path("a.pqsig")).unwrap();
    let m = std::fs::read(d.path("m.pqsig")).unwrap();
    // version, kind, algorithm, then the 32-byte signer id.
    a[3..35].copy_from_slice(&m[3..35]);
    let spoof = d.file("spoof.pqsig", &a);
    let (out, _) = expect(
        &pqcc(&[
            "verify",
            &spoof,
            "--trust",
            &d.s("alice.pub"),
            "--trust",
            &d.s("mallory.pub"),
            "--artifact",
            &ko,
        ]),
        1,
    );
    assert!(out.contains("bad-signature"), "{out}");
    // A secret key or an ML-KEM key is no trust anchor.
    let (_, err) = expect(
        &pqcc(&[
            "verify",
            &d.s("a.pqsig"),
            "--trust",
            &d.s("alice"),
            "--artifact",
            &ko,
        ]),
        2,
    );
    assert!(err.contains("alice"), "{err}");
    expect(
        &pqcc(&["keygen", "--alg", "ml-kem-768", "--out", &d.s("kem")]),
        0,
    );
    let (_, err) = expect(
        &pqcc(&[
            "verify",
            &d.s("a.pqsig"),
            "--trust",
            &d.s("kem.pub"),
            "--artifact",
            &ko,
        ]),
        2,
    );
    assert!(err.contains("ML-DSA-65"), "{err}");
}

#[test]
fn large_artifact_round_trip() {
    let d = TempDir::new("large");
    keygen(&d, "k");
    let path = d.path("big.ko");
    {
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = pattern(1 << 20, 7);
        for i in 0..64u8 {
            let mut c = chunk.clone();
            c[0] = i;
            f.write_all(&c).unwrap();
        }
    }
    let p = path.display().to_string();
    let (out, _) = expect(
        &pqcc(&["sign", "driver", &p, "--key", &d.s("k"), "--json"]),
        0,
    );
    assert_eq!(json(&out)["statement"]["size"], 64 << 20);
    let (out, _) = expect(
        &pqcc(&[
            "verify",
            &d.s("big.ko.pqsig"),
            "--trust",
            &d.s("k.pub"),
            "--artifact",
            &p,
        ]),
        0,
    );
    assert!(out.starts_with("allow"), "{out}");
}

fn write_policy(d: &TempDir, name: &str, body: &str) -> String {
    d.file(name, body.as_bytes())
}

#[test]
fn bpf_round_trip_and_load_policies() {
    let d = TempDir::new("bpf");
    let did = keygen(&d, "k");
    let other = keygen(&d, "other");
    let obj = d.file("probe.o", &pattern(2048, 3));
    // pqc-bpf's flags: --name, --type, --author, -o.
    let (out, _) = expect(
        &pqcc(&[
            "sign",
            "bpf",
            &obj,
            "--key",
            &d.s("k"),
            "--name",
            "probe",
            "--type",
            "xdp",
            "--attach-point",
            "eth0",
            "--author",
            "ops",
            "-o",
            &d.s("probe.pqsig"),
        ]),
        0,
    );
    assert!(out.contains("bpf-program") && out.contains("xdp"), "{out}");
    let env = d.s("probe.pqsig");
    let pubk = d.s("k.pub");
    let base = ["verify", env.as_str(), "--trust", pubk.as_str()];
    let run = |extra: &[&str]| pqcc(&[&base[..], extra].concat());

    let (out, _) = expect(&run(&["--artifact", &obj, "--json"]), 0);
    let v = json(&out);
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["statement"]["prog_type"], "xdp");
    assert_eq!(v["statement"]["attach_point"], "eth0");
    assert_eq!(v["statement"]["author"], "ops");
    // Stripped bytecode is not VALID.
    let (out, _) = expect(&run(&[]), 1);
    assert!(out.contains("no-artifact"), "{out}");
    let (out, _) = expect(&run(&["--artifact", &obj, "--load-as", "kprobe"]), 1);
    assert!(out.contains("prog-type-mismatch"), "{out}");

    let allow = write_policy(
        &d,
        "allow.toml",
        &format!(
            "default = \"deny\"\n[[rule]]\nprogram_types = [\"xdp\"]\nsigners = [\"{did}\"]\n\
             max_size = 4096\naction = \"allow\"\n"
        ),
    );
    expect(&run(&["--artifact", &obj, "--policy", &allow]), 0);
    // The policy's signer set, not just the trust store, decides.
    let others = write_policy(
        &d,
        "others.toml",
        &format!(
            "[[rule]]\nprogram_types = [\"*\"]\nsigners = [\"{other}\"]\naction = \"allow\"\n"
        ),
    );
    let (out, _) = expect(&run(&["--artifact", &obj, "--policy", &others]), 1);
    assert!(out.contains("signer-not-allowed"), "{out}");
    // An empty signer set admits nobody.
    let empty = write_policy(
        &d,
        "empty.toml",
        "[[rule]]\nprogram_types = [\"*\"]\nsigners = []\naction = \"allow\"\n",
    );
    let (out, _) = expect(&run(&["--artifact", &obj, "--policy", &empty]), 1);
    assert!(out.contains("signer-not-allowed"), "{out}");
    // No matching rule: the default, deny when not set.
    let kprobe_only = write_policy(
        &d,
        "kprobe.toml",
        &format!(
            "[[rule]]\nprogram_types = [\"kprobe\"]\nsigners = [\"{did}\"]\naction = \"allow\"\n"
        ),
    );
    let (out, _) = expect(&run(&["--artifact", &obj, "--policy", &kprobe_only]), 1);
    assert!(out.contains("no-rule-matched"), "{out}");
    // The cap is on the actual bytes.
    let small = write_policy(
        &d,
        "small.toml",
        &format!(
            "[[rule]]\nprogram_types = [\"xdp\"]\nsigners = [\"{did}\"]\nmax_size = 2047\naction = \"allow\"\n"
        ),
    );
    let (out, _) = expect(&run(&["--artifact", &obj, "--policy", &small]), 1);
    assert!(out.contains("too-large"), "{out}");
    let deny = write_policy(
        &d,
        "deny.toml",
        &format!(
            "default = \"allow\"\n[[rule]]\nprogram_types = [\"xdp\"]\nsigners = [\"{did}\"]\naction = \"deny\"\n"
        ),
    );
    let (out, _) = expect(&run(&["--artifact", &obj, "--policy", &deny]), 1);
    assert!(out.contains("rule-denied"), "{out}");
    // A policy that does not parse is exit 2, naming the file and the problem.
    let broken = write_policy(&d, "broken.toml", "[[rule]]\nprogram_types = [\"xdpp\"]\n");
    let (_, err) = expect(&run(&["--artifact", &obj, "--policy", &broken]), 2);
    assert!(err.contains("broken.toml") && err.contains("xdpp"), "{err}");
}

#[test]
fn damaged_envelopes_give_clear_errors_never_panics() {
    let d = TempDir::new("damage");
    keygen(&d, "k");
    let obj = d.file("p.o", &pattern(500, 4));
    expect(
        &pqcc(&[
            "sign",
            "bpf",
            &obj,
            "--key",
            &d.s("k"),
            "--prog-type",
            "kprobe",
        ]),
        0,
    );
    let good = std::fs::read(d.path("p.o.pqsig")).unwrap();
    let pubk = d.s("k.pub");
    let check = |bytes: &[u8], name: &str| -> Output {
        let p = d.file(name, bytes);
        pqcc(&["verify", &p, "--trust", &pubk, "--artifact", &obj])
    };
    // Truncated anywhere: exit 2 naming the file.
    for cut in [0, 1, 3, 20, 36, 60, good.len() / 2, good.len() - 1] {
        let o = check(&good[..cut], "trunc.pqsig");
        let (_, err) = expect(&o, 2);
        assert!(
            err.contains("trunc.pqsig") && err.contains("error"),
            "{cut}: {err}"
        );
    }
    // Trailing bytes.
    let mut t = good.clone();
    t.push(0);
    let (_, err) = expect(&check(&t, "trail.pqsig"), 2);
    assert!(err.contains("trailing"), "{err}");
    // Oversized: refused without reading it all.
    let big = vec![1u8; SIGNED_MAX_LEN + 1];
    let (_, err) = expect(&check(&big, "big.pqsig"), 2);
    assert!(err.contains("not an envelope"), "{err}");
    let (_, err) = expect(&pqcc(&["info", &d.s("big.pqsig")]), 2);
    assert!(err.contains("not an envelope"), "{err}");
    // Unknown version, unknown algorithm.
    let mut v = good.clone();
    v[0] = 2;
    let (_, err) = expect(&check(&v, "ver.pqsig"), 2);
    assert!(err.contains("version 2"), "{err}");
    let mut v = good.clone();
    v[2] = 1;
    let (_, err) = expect(&check(&v, "alg.pqsig"), 2);
    assert!(err.contains("ML-DSA-65"), "{err}");
    // Bit flips: every header and body byte, and a spread of signature bytes. The
    // signature covers everything, so the answer is never "allow"; a flip inside the
    // signature is always a bad signature (exit 1).
    let sig_start = good.len() - 3309;
    let positions: Vec<usize> = (0..sig_start)
        .chain((sig_start..good.len()).step_by(211))
        .collect();
    for (n, &i) in positions.iter().enumerate() {
        let mut f = good.clone();
        f[i] ^= 1 << (n % 8);
        let o = check(&f, "flip.pqsig");
        let code = o.status.code();
        let (out, err) = text(&o);
        assert!(
            code == Some(1) || code == Some(2),
            "byte {i}: {code:?}\n{out}\n{err}"
        );
        assert!(!err.contains("panicked"), "byte {i}: {err}");
        if code == Some(1) {
            assert!(out.starts_with("invalid ("), "byte {i}: {out}");
        } else {
            assert!(err.starts_with("pqcc: error: "), "byte {i}: {err}");
        }
        if i >= sig_start {
            assert_eq!(code, Some(1), "byte {i}: {out}");
            assert!(out.contains("bad-signature"), "byte {i}: {out}");
        }
    }
    // Wrong kind: a bpf-program envelope where a driver module is required.
    let (_, err) = expect(
        &pqcc(&[
            "verify",
            &d.s("p.o.pqsig"),
            "--kind",
            "driver",
            "--trust",
            &pubk,
            "--artifact",
            &obj,
        ]),
        2,
    );
    assert!(
        err.contains("bpf-program statement where a driver-module statement was required"),
        "{err}"
    );
    expect(
        &pqcc(&[
            "verify",
            &d.s("p.o.pqsig"),
            "--kind",
            "bpf",
            "--trust",
            &pubk,
            "--artifact",
            &obj,
        ]),
        0,
    );
    // A missing envelope file.
    let (_, err) = expect(
        &pqcc(&["verify", &d.s("missing.pqsig"), "--trust", &pubk]),
        2,
    );
    assert!(err.contains("missing.pqsig"), "{err}");
}

#[test]
fn audit_log_records_every_decision() {
    let d = TempDir::new("audit");
    let did = keygen(&d, "k");
    keygen(&d, "other");
    let ko = d.file("a.ko", &pattern(100, 5));
    expect(&pqcc(&["sign", "driver", &ko, "--key", &d.s("k")]), 0);
    let env = d.s("a.ko.pqsig");
    let log = d.s("audit.log");
    let with_log = |extra: &[&str]| -> Output {
        pqcc(
            &[
                &[
                    "verify",
                    env.as_str(),
                    "--audit-log",
                    log.as_str(),
                    "--actor",
                    "ci",
                ][..],
                extra,
            ]
            .concat(),
        )
    };
    expect(&with_log(&["--trust", &d.s("k.pub"), "--artifact", &ko]), 0);
    expect(&with_log(&["--trust", &d.s("k.pub")]), 1);
    expect(
        &with_log(&["--trust", &d.s("other.pub"), "--artifact", &ko]),
        1,
    );
    let garbage = d.file("g.pqsig", b"not an envelope");
    expect(
        &pqcc(&[
            "verify",
            &garbage,
            "--audit-log",
            &log,
            "--trust",
            &d.s("k.pub"),
        ]),
        2,
    );
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(json)
        .collect();
    assert_eq!(lines.len(), 4);
    let sha = hex::encode(sha3_256(&[&pattern(100, 5)]));
    assert_eq!(lines[0]["decision"], "allow");
    assert_eq!(lines[0]["kind"], "driver-module");
    assert_eq!(lines[0]["signer"], did.as_str());
    assert_eq!(lines[0]["artifact_sha3_256"], sha.as_str());
    assert_eq!(lines[0]["actor"], "ci");
    assert_eq!(lines[1]["decision"], "deny");
    assert!(
        lines[1]["reason"]
            .as_str()
            .unwrap()
            .starts_with("no-artifact")
    );
    assert_eq!(lines[2]["decision"], "invalid");
    assert!(
        lines[2]["reason"]
            .as_str()
            .unwrap()
            .starts_with("unknown-signer")
    );
    assert_eq!(lines[2]["signer"], Value::Null);
    assert_eq!(lines[3]["decision"], "invalid");
    assert!(
        lines[3]["reason"]
            .as_str()
            .unwrap()
            .starts_with("malformed-envelope")
    );
    let (out, _) = expect(&pqcc(&["audit", "verify", &log]), 0);
    assert!(out.contains("4 records"), "{out}");
}

#[test]
fn info_is_marked_not_verified() {
    let d = TempDir::new("info");
    let did = keygen(&d, "k");
    let ko = d.file("x.ko", &pattern(64, 6));
    expect(
        &pqcc(&[
            "sign",
            "driver",
            &ko,
            "--key",
            &d.s("k"),
            "--name",
            "xdrv",
            "--version",
            "1.2",
        ]),
        0,
    );
    let env = d.s("x.ko.pqsig");
    let (out, _) = expect(&pqcc(&["info", &env]), 0);
    assert!(out.starts_with("NOT VERIFIED"), "{out}");
    for want in [
        "driver-module",
        "ML-DSA-65",
        did.as_str(),
        "xdrv",
        "1.2",
        "signed_at",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let (out, _) = expect(&pqcc(&["info", &env, "--json"]), 0);
    let v = json(&out);
    assert_eq!(v["verified"], false);
    assert!(v["warning"].as_str().unwrap().starts_with("NOT VERIFIED"));
    assert_eq!(v["signer"], did.as_str());
    assert_eq!(v["statement"]["name"], "xdrv");
    // info never needs a key and never says valid.
    assert!(!out.contains("\"valid\""));
    let bad = d.file("bad.pqsig", &[1, 9, 9]);
    expect(&pqcc(&["info", &bad]), 2);
}

#[test]
fn policy_check_lints() {
    let d = TempDir::new("policy");
    let did = keygen(&d, "k");
    let clean = write_policy(
        &d,
        "clean.toml",
        &format!(
            "version = 1\ndefault = \"deny\"\n[[rule]]\nprogram_types = [\"xdp\"]\nsigners = [\"{did}\"]\naction = \"allow\"\n"
        ),
    );
    let (out, _) = expect(&pqcc(&["policy", "check", &clean]), 0);
    assert!(out.contains("clean"), "{out}");
    let messy = write_policy(
        &d,
        "messy.toml",
        &format!(
            "default = \"allow\"\n\
             [[rule]]\nprogram_types = [\"*\"]\nsigners = [\"{did}\"]\naction = \"allow\"\n\
             [[rule]]\nprogram_types = [\"xdp\"]\nsigners = []\naction = \"allow\"\nrequire_signature = false\n"
        ),
    );
    let (out, _) = expect(&pqcc(&["policy", "check", &messy, "--json"]), 1);
    let v = json(&out);
    let codes: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "unreachable-rule",
            "empty-signer-set",
            "unsigned-allowed",
            "default-allow"
        ]
    );
    let (out, _) = expect(&pqcc(&["policy", "check", &messy]), 1);
    assert!(
        out.contains("rule 1 is unreachable") && out.contains("4 findings"),
        "{out}"
    );
    let broken = write_policy(&d, "broken.toml", "default = \n");
    let (_, err) = expect(&pqcc(&["policy", "check", &broken]), 2);
    assert!(err.contains("broken.toml"), "{err}");
    let bad_did = write_policy(
        &d,
        "baddid.toml",
        "[[rule]]\nprogram_types = [\"xdp\"]\nsigners = [\"did:key:z6Mk\"]\naction = \"allow\"\n",
    );
    let (_, err) = expect(&pqcc(&["policy", "check", &bad_did]), 2);
    assert!(
        err.contains("rule 0") && err.contains("did:key:z6Mk"),
        "{err}"
    );
}

#[test]
fn memory_report_round_trip() {
    let d = TempDir::new("mem");
    keygen(&d, "k");
    let data = pattern(20_000, 8);
    let weights = d.file("weights.bin", &data);
    let nonce = "11".repeat(32);
    let (out, _) = expect(
        &pqcc(&[
            "sign",
            "memory-report",
            "--key",
            &d.s("k"),
            "--workload",
            "llm",
            "--platform",
            "none",
            "--nonce",
            &nonce,
            "--ttl",
            "120",
            "--region",
            &format!("w={weights}"),
            "--region",
            &format!("head={weights}@0x100+1000:r-x"),
            "-o",
            &d.s("r.pqsig"),
            "--json",
        ]),
        0,
    );
    let v = json(&out);
    assert_eq!(v["kind"], "memory-report");
    assert_eq!(v["statement"]["regions"][1]["protection"], "r-x");
    let whole = hex::encode(sha3_256(&[&data]));
    let head = hex::encode(sha3_256(&[&data[0x100..0x100 + 1000]]));
    let env = d.s("r.pqsig");
    let pubk = d.s("k.pub");
    let pin_w = format!("w={whole}");
    let pin_h = format!("head={head}");
    let base = [
        "verify",
        env.as_str(),
        "--trust",
        pubk.as_str(),
        "--workload",
        "llm",
        "--platform",
        "none",
    ];
    let run = |extra: &[&str]| pqcc(&[&base[..], extra].concat());
    let (out, _) = expect(
        &run(&["--nonce", &nonce, "--pin", &pin_w, "--pin", &pin_h]),
        0,
    );
    assert!(out.starts_with("allow: memory-report"), "{out}");
    let (out, _) = expect(
        &run(&[
            "--nonce",
            &"22".repeat(32),
            "--pin",
            &pin_w,
            "--pin",
            &pin_h,
        ]),
        1,
    );
    assert!(out.contains("nonce-mismatch"), "{out}");
    let (out, _) = expect(
        &run(&[
            "--nonce",
            &nonce,
            "--pin",
            &format!("w={head}"),
            "--pin",
            &pin_h,
        ]),
        1,
    );
    assert!(out.contains("drift"), "{out}");
    let (out, _) = expect(&run(&["--nonce", &nonce, "--pin", &pin_w]), 1);
    assert!(out.contains("unpinned-region"), "{out}");
    let (out, _) = expect(
        &run(&[
            "--nonce",
            &nonce,
            "--pin",
            &pin_w,
            "--pin",
            &pin_h,
            "--max-validity",
            "60",
        ]),
        1,
    );
    assert!(out.contains("validity-too-long"), "{out}");
    let (out, _) = expect(&run(&["--nonce", &nonce]), 1);
    assert!(out.contains("nothing-pinned"), "{out}");
    // The verifier's own settings are required, never taken from the report.
    let (_, err) = expect(
        &pqcc(&["verify", &env, "--trust", &pubk, "--pin", &pin_w]),
        2,
    );
    assert!(err.contains("--nonce"), "{err}");
    let (out, _) = expect(
        &pqcc(&[
            "verify",
            &env,
            "--trust",
            &pubk,
            "--workload",
            "llm",
            "--platform",
            "tdx",
            "--nonce",
            &nonce,
            "--pin",
            &pin_w,
            "--pin",
            &pin_h,
        ]),
        1,
    );
    assert!(out.contains("platform-mismatch"), "{out}");
    // A region past the end of its file is an error, not a short hash.
    let (_, err) = expect(
        &pqcc(&[
            "sign",
            "memory-report",
            "--key",
            &d.s("k"),
            "--workload",
            "llm",
            "--platform",
            "none",
            "--nonce",
            &nonce,
            "--region",
            &format!("x={weights}@19000+2000"),
            "-o",
            &d.s("r2.pqsig"),
        ]),
        2,
    );
    assert!(err.contains("region"), "{err}");
    assert!(!d.path("r2.pqsig").exists());
}

#[test]
fn model_manifest_round_trip() {
    let d = TempDir::new("model");
    keygen(&d, "k");
    let archive = d.file("m.tar", &pattern(8192, 9));
    let root = "ab".repeat(32);
    let (out, _) = expect(
        &pqcc(&[
            "sign",
            "model",
            &archive,
            "--key",
            &d.s("k"),
            "--name",
            "llama",
            "--revision",
            "r1",
            "--root-hash",
            &root,
            "--salt",
            "00ff",
            "--json",
        ]),
        0,
    );
    let v = json(&out);
    assert_eq!(v["statement"]["identity"], format!("llama@r1:{root}"));
    assert_eq!(v["statement"]["data_size"], 8192);
    let env = d.s("m.tar.pqsig");
    let pubk = d.s("k.pub");
    let (out, _) = expect(
        &pqcc(&["verify", &env, "--trust", &pubk, "--root-hash", &root]),
        0,
    );
    assert!(out.starts_with("valid: model-manifest"), "{out}");
    let (out, _) = expect(
        &pqcc(&[
            "verify",
            &env,
            "--trust",
            &pubk,
            "--root-hash",
            &"cd".repeat(32),
        ]),
        1,
    );
    assert!(out.contains("root-hash-mismatch"), "{out}");
    expect(
        &pqcc(&["verify", &env, "--trust", &pubk, "--artifact", &archive]),
        2,
    );
    // Data size must be a multiple of the block size.
    let odd = d.file("odd.tar", &pattern(1000, 9));
    let (_, err) = expect(
        &pqcc(&[
            "sign",
            "model",
            &odd,
            "--key",
            &d.s("k"),
            "--name",
            "m",
            "--revision",
            "1",
            "--root-hash",
            &root,
            "--salt",
            "-",
        ]),
        2,
    );
    assert!(err.contains("model manifest"), "{err}");
}
