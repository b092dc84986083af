//! `pqcc keygen` and `pqcc id` through the real binary, and the key files they leave
//! read back through the library: modes, atomic no-overwrite, strict parsing,
//! permission refusal, exit codes, and that no secret byte is ever printed.

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Output},
};

use pqcc_core::sign::{SignerId, VerifyingKey};
use pqcc_tools::keys::{self, Alg, KeyIdentity, PublicKey, SecretKey};

const PQCC: &str = env!("CARGO_BIN_EXE_pqcc");

mod common;
use common::TempDir;

fn pqcc(args: &[&str], paths: &[&Path]) -> Output {
    Command::new(PQCC).args(args).args(paths).output().unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn keygen(alg: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["keygen", "--alg", alg];
    args.extend_from_slice(extra);
    args.push("--out");
    pqcc(&args, &[out])
}

#[test]
fn ml_dsa_keygen_and_id() {
    let d = TempDir::new("dsa");
    let k = d.path("signer");
    let out = keygen("ml-dsa-65", &k, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let did = stdout(&out).trim().to_owned();
    assert!(
        did.starts_with("did:pqaid:") && did.len() == 10 + 64,
        "{did}"
    );
    assert_eq!(
        d.names(),
        ["signer", "signer.pub"],
        "no temporary files left"
    );
    assert_eq!(mode(&k), 0o600);
    assert_eq!(std::fs::metadata(&k).unwrap().len(), 12 + 32);
    assert_eq!(
        std::fs::metadata(keys::public_path(&k)).unwrap().len(),
        12 + 1952
    );

    // `pqcc id` on the public and on the secret file.
    let pub_path = keys::public_path(&k);
    for p in [&pub_path, &k] {
        let o = pqcc(&["id"], &[p]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(stdout(&o).trim(), did);
    }
    let o = pqcc(&["id", "--json"], &[&pub_path]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["alg"], "ml-dsa-65");
    assert_eq!(v["did"], did);
    assert_eq!(v["file"], "public");

    // The files through the library: the did is SHA3-256 of the public key, and the
    // secret seed signs what the public key verifies.
    let sk = keys::read_secret_key(&k).unwrap();
    let pk = keys::read_public_key(&pub_path).unwrap();
    assert_eq!(sk.alg(), Alg::MlDsa65);
    let vk = pk.verifying_key().unwrap();
    assert_eq!(vk.signer_id(), SignerId::parse(&did).unwrap());
    let sig = sk
        .signing_key()
        .unwrap()
        .sign(
            b"pqcc/v1/test",
            b"msg",
            &mut pqcc_tools::rng::OsRng.unwrap_err(),
        )
        .unwrap();
    VerifyingKey::from_bytes(pk.as_bytes())
        .unwrap()
        .verify(b"pqcc/v1/test", b"msg", &sig)
        .unwrap();

    // No secret byte on stdout or stderr of either command, in any encoding we use.
    let seed_file = std::fs::read(&k).unwrap();
    let seed_hex = hex::encode(&seed_file[12..]);
    for o in [&out, &o] {
        let all = format!("{}{}", stdout(o), stderr(o));
        assert!(!all.contains(&seed_hex));
        assert!(!all.contains(&seed_hex[..16]));
    }
}

#[test]
fn ml_kem_keygen_and_fingerprint() {
    let d = TempDir::new("kem");
    let k = d.path("kem");
    let out = keygen("ml-kem-768", &k, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["alg"], "ml-kem-768");
    let fp = v["fingerprint_sha3_256"].as_str().unwrap().to_owned();
    assert!(v.get("did").is_none(), "ML-KEM keys have no signer id");
    assert_eq!(mode(&k), 0o600);
    assert_eq!(std::fs::metadata(&k).unwrap().len(), 12 + 64);
    let pub_path = keys::public_path(&k);
    let pub_bytes = std::fs::read(&pub_path).unwrap();
    assert_eq!(pub_bytes.len(), 12 + 1184);
    assert_eq!(
        fp,
        hex::encode(pqcc_core::hash::sha3_256(&[&pub_bytes[12..]]))
    );
    let o = pqcc(&["id"], &[&pub_path]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o).trim(),
        format!("ml-kem-768 sha3-256 fingerprint {fp}")
    );
    // The secret seed derives the same encapsulation key.
    let sk = keys::read_secret_key(&k).unwrap();
    let dk = sk.decapsulation_key().unwrap();
    assert_eq!(dk.encapsulation_key_bytes()[..], pub_bytes[12..]);
    assert!(sk.signing_key().is_err());
}

#[test]
fn refuses_overwrite_without_force() {
    let d = TempDir::new("force");
    let k = d.path("k");
    assert_eq!(keygen("ml-dsa-65", &k, &[]).status.code(), Some(0));
    let before = std::fs::read(&k).unwrap();
    let out = keygen("ml-dsa-65", &k, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"));
    assert_eq!(std::fs::read(&k).unwrap(), before, "left untouched");
    // Only the .pub in the way is enough to refuse, and nothing is written.
    let k2 = d.path("k2");
    std::fs::write(keys::public_path(&k2), b"precious").unwrap();
    assert_eq!(keygen("ml-dsa-65", &k2, &[]).status.code(), Some(2));
    assert!(!k2.exists());
    assert_eq!(std::fs::read(keys::public_path(&k2)).unwrap(), b"precious");
    // A symlink at the target is not followed nor replaced.
    let k3 = d.path("k3");
    std::os::unix::fs::symlink(d.path("elsewhere"), &k3).unwrap();
    assert_eq!(keygen("ml-dsa-65", &k3, &[]).status.code(), Some(2));
    assert!(!d.path("elsewhere").exists());
    // --force replaces both with a new key.
    let out = keygen("ml-dsa-65", &k, &["--force"]);
    assert_eq!(out.status.code(), Some(0));
    assert_ne!(std::fs::read(&k).unwrap(), before);
    assert_eq!(mode(&k), 0o600);
    let names = d.names();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
}

#[test]
fn refuses_group_or_world_accessible_secret() {
    let d = TempDir::new("perm");
    let k = d.path("k");
    assert_eq!(keygen("ml-dsa-65", &k, &[]).status.code(), Some(0));
    for m in [0o640, 0o604, 0o660, 0o644, 0o602] {
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(m)).unwrap();
        let out = pqcc(&["id"], &[&k]);
        assert_eq!(out.status.code(), Some(2), "mode {m:o}");
        let e = stderr(&out);
        assert!(e.contains(&format!("mode 0{m:o}")), "{e}");
        assert!(e.contains("group or others"), "{e}");
        assert!(out.stdout.is_empty());
        assert!(keys::read_secret_key(&k).is_err());
    }
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o400)).unwrap();
    assert_eq!(pqcc(&["id"], &[&k]).status.code(), Some(0));
    // A public key file may be world-readable.
    assert_eq!(mode(&keys::public_path(&k)) & 0o044, 0o044);
}

#[test]
fn strict_parsing_errors_are_clear() {
    let d = TempDir::new("strict");
    let k = d.path("k");
    assert_eq!(keygen("ml-dsa-65", &k, &[]).status.code(), Some(0));
    let pub_bytes = std::fs::read(keys::public_path(&k)).unwrap();
    let bad = d.path("bad.pub");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"hello world, not a key".to_vec(), "bad magic"),
        (pub_bytes[..5].to_vec(), "shorter than the 12-byte header"),
        (
            {
                let mut b = pub_bytes.clone();
                b[8] = 9;
                b
            },
            "unsupported key file format version 9",
        ),
        (
            {
                let mut b = pub_bytes.clone();
                b[9] = 42;
                b
            },
            "unknown key algorithm id 42",
        ),
        (
            {
                let mut b = pub_bytes.clone();
                b[9] = 2; // claims ML-KEM-768 with an ML-DSA-65 length
                b
            },
            "length field says 1952 bytes",
        ),
        (pub_bytes[..pub_bytes.len() - 1].to_vec(), "truncated"),
        (
            {
                let mut b = pub_bytes.clone();
                b.extend_from_slice(b"xx");
                b
            },
            "2 trailing byte(s)",
        ),
    ];
    for (bytes, want) in cases {
        std::fs::write(&bad, &bytes).unwrap();
        let out = pqcc(&["id"], &[&bad]);
        assert_eq!(out.status.code(), Some(2), "{want}");
        assert!(stderr(&out).contains(want), "{want}: {}", stderr(&out));
        assert!(stderr(&out).contains("bad.pub"));
    }
    // A public key file where a secret key is needed, and the reverse.
    let e = keys::read_secret_key(&keys::public_path(&k)).unwrap_err();
    assert!(format!("{e:#}").contains("this is a public key file"));
    let e = keys::read_public_key(&k).unwrap_err();
    assert!(format!("{e:#}").contains("this is a secret key file"));
    // A secret key file with trailing bytes (still 0600).
    let mut sb = std::fs::read(&k).unwrap();
    sb.push(0);
    let k2 = d.path("k2");
    std::fs::write(&k2, &sb).unwrap();
    std::fs::set_permissions(&k2, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = keys::read_secret_key(&k2).unwrap_err();
    assert!(format!("{e:#}").contains("trailing"));
    // A huge file is refused without being read whole.
    std::fs::write(&k2, vec![0u8; 1 << 20]).unwrap();
    assert!(format!("{:#}", keys::read_secret_key(&k2).unwrap_err()).contains("too long"));
    // A directory is not a key file.
    assert_eq!(pqcc(&["id"], &[&d.0]).status.code(), Some(2));
}

#[test]
fn library_roundtrip_and_identity() {
    let d = TempDir::new("lib");
    let k = d.path("lib");
    let g = keys::keygen(Alg::MlDsa65, &k, false).unwrap();
    let sk = keys::read_secret_key(&k).unwrap();
    let pk = keys::read_public_key(&g.public_path).unwrap();
    assert_eq!(sk.public_key(), pk);
    assert_eq!(pk.identity(), g.identity);
    let KeyIdentity::Signer(id) = g.identity else {
        panic!("ML-DSA key without a signer id");
    };
    assert_eq!(id, SignerId::of(pk.as_bytes()));
    assert!(matches!(
        keys::read_any_key(&k).unwrap(),
        keys::AnyKey::Secret(_)
    ));
    assert!(matches!(
        keys::read_any_key(&g.public_path).unwrap(),
        keys::AnyKey::Public(_)
    ));
    // Parse <-> encode is the identity on valid bytes.
    let sb = std::fs::read(&k).unwrap();
    assert_eq!(
        &SecretKey::from_file_bytes(&sb).unwrap().to_file_bytes()[..],
        &sb[..]
    );
    let pb = std::fs::read(&g.public_path).unwrap();
    assert_eq!(PublicKey::from_file_bytes(&pb).unwrap().to_file_bytes(), pb);
    assert!(keys::keygen(Alg::MlKem768, &k, false).is_err());
    keys::keygen(Alg::MlKem768, &k, true).unwrap();
    assert_eq!(keys::read_secret_key(&k).unwrap().alg(), Alg::MlKem768);
}

#[test]
fn usage_errors_and_help() {
    let d = TempDir::new("usage");
    for args in [
        &["keygen", "--alg", "rsa-2048", "--out", "x"][..],
        &["keygen", "--alg", "ml-dsa-65"],
        &["id"],
        &["nonsense"],
    ] {
        let out = Command::new(PQCC)
            .current_dir(&d.0)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    assert!(d.names().is_empty());
    for args in [&["keygen", "--help"][..], &["id", "--help"]] {
        let out = Command::new(PQCC).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(stdout(&out).contains("Usage: pqcc"));
    }
    // A missing file is an I/O error.
    let out = pqcc(&["id"], &[&d.path("missing.pub")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.pub"));
}
