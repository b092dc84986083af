//! Offline revocation (CRLs and OCSP responses from a bundle) on a test PKI of our own
//! (`tests/data/revocation/gen.sh`: P-384 root -> intermediate -> leaf, CRLs by the
//! root, OCSP responses for the leaf signed by the intermediate), since NVIDIA's
//! responders cannot be asked for Set A's certificates any more.

use pqcc_verify::nvidia::revocation::{Collateral, check_chain, ocsp_response_status};
use pqcc_verify::nvidia::x509::Cert;

fn file(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/revocation/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn now() -> u64 {
    String::from_utf8(file("now.txt"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn chain() -> Vec<Cert> {
    ["leaf.der", "int.der", "root.der"]
        .iter()
        .map(|n| Cert::from_der(&file(n)).unwrap())
        .collect()
}

fn bundle(crls: &[&str], ocsp: &[&str]) -> Collateral {
    Collateral {
        crls: crls.iter().map(|n| (n.to_string(), file(n))).collect(),
        ocsp: ocsp.iter().map(|n| (n.to_string(), file(n))).collect(),
    }
}

const DAY: u64 = 86_400;

#[test]
fn fresh_good_statuses_pass() {
    let c = bundle(&["root-good.crl"], &["leaf-good.ocsp"]);
    let s = check_chain("test", &chain(), 0, &c, now(), 7 * DAY).unwrap();
    assert!(
        s.contains("Test Leaf: OCSP good") && s.contains("Test Intermediate: not in CRL"),
        "{s}"
    );
    assert!(ocsp_response_status(&file("leaf-good.ocsp")).is_ok());
}

#[test]
fn missing_status_fails() {
    let e = check_chain(
        "test",
        &chain(),
        0,
        &bundle(&["root-good.crl"], &[]),
        now(),
        7 * DAY,
    )
    .unwrap_err();
    assert!(
        e.contains("no fresh CRL or OCSP status for Test Leaf"),
        "{e}"
    );
    let e = check_chain(
        "test",
        &chain(),
        0,
        &bundle(&[], &["leaf-good.ocsp"]),
        now(),
        7 * DAY,
    )
    .unwrap_err();
    assert!(e.contains("Test Intermediate"), "{e}");
    // Starting at 1 (as for a device chain's leaf) needs only the intermediate.
    check_chain(
        "test",
        &chain(),
        1,
        &bundle(&["root-good.crl"], &[]),
        now(),
        7 * DAY,
    )
    .unwrap();
}

#[test]
fn revoked_by_crl_or_ocsp_fails() {
    let e = check_chain(
        "test",
        &chain(),
        0,
        &bundle(&["root-revoked.crl"], &["leaf-good.ocsp"]),
        now(),
        7 * DAY,
    )
    .unwrap_err();
    assert!(
        e.contains("Test Intermediate revoked") && e.contains("listed in CRL"),
        "{e}"
    );
    let e = check_chain(
        "test",
        &chain(),
        0,
        &bundle(&["root-good.crl"], &["leaf-revoked.ocsp"]),
        now(),
        7 * DAY,
    )
    .unwrap_err();
    assert!(
        e.contains("Test Leaf revoked") && e.contains("OCSP says revoked"),
        "{e}"
    );
    // A good and a revoked status together: revoked wins.
    let e = check_chain(
        "test",
        &chain(),
        0,
        &bundle(&["root-good.crl", "root-revoked.crl"], &["leaf-good.ocsp"]),
        now(),
        7 * DAY,
    )
    .unwrap_err();
    assert!(e.contains("revoked"), "{e}");
}

#[test]
fn stale_or_future_statuses_fail() {
    let c = bundle(&["root-good.crl"], &["leaf-good.ocsp"]);
    // Older than the policy's maximum age.
    let e = check_chain("test", &chain(), 0, &c, now() + 2 * DAY, DAY).unwrap_err();
    assert!(e.contains("older than"), "{e}");
    // Past nextUpdate (30 days) even with a generous maximum age.
    let e = check_chain("test", &chain(), 0, &c, now() + 31 * DAY, 365 * DAY).unwrap_err();
    assert!(e.contains("nextUpdate"), "{e}");
    // Issued after "now".
    let e = check_chain("test", &chain(), 0, &c, now() - DAY, 7 * DAY).unwrap_err();
    assert!(e.contains("future"), "{e}");
}

#[test]
fn forged_statuses_fail() {
    // A byte of the OCSP signature (at the end of the BasicOCSPResponse's BIT STRING,
    // before the embedded responder certificate): flip inside the signature value.
    let mut ocsp = file("leaf-good.ocsp");
    let int = file("int.der");
    let sig_end = ocsp.len() - int.len() - 4; // [0] { SEQUENCE OF { cert } } headers
    ocsp[sig_end - 5] ^= 1;
    let c = Collateral {
        crls: vec![("root-good.crl".into(), file("root-good.crl"))],
        ocsp: vec![("forged.ocsp".into(), ocsp)],
    };
    let e = check_chain("test", &chain(), 0, &c, now(), 7 * DAY).unwrap_err();
    assert!(
        e.contains("forged.ocsp") && (e.contains("signature") || e.contains("parse")),
        "{e}"
    );
    // A CRL byte.
    let mut crl = file("root-good.crl");
    let n = crl.len();
    crl[n - 3] ^= 1;
    let c = Collateral {
        crls: vec![("forged.crl".into(), crl)],
        ocsp: vec![("leaf-good.ocsp".into(), file("leaf-good.ocsp"))],
    };
    let e = check_chain("test", &chain(), 0, &c, now(), 7 * DAY).unwrap_err();
    assert!(e.contains("forged.crl"), "{e}");
    // Garbage in the bundle is an error, not ignored.
    let c = Collateral {
        crls: vec![("junk.crl".into(), b"junk".to_vec())],
        ocsp: vec![],
    };
    let e = check_chain("test", &chain(), 0, &c, now(), 7 * DAY).unwrap_err();
    assert!(e.contains("junk.crl"), "{e}");
}

#[test]
fn load_dir_reads_crl_and_ocsp_subdirectories() {
    let d = std::env::temp_dir().join(format!("pqcc-revocation-{}", std::process::id()));
    std::fs::create_dir_all(d.join("crl")).unwrap();
    std::fs::create_dir_all(d.join("ocsp")).unwrap();
    std::fs::write(d.join("crl/a.crl"), file("root-good.crl")).unwrap();
    std::fs::write(d.join("ocsp/b.der"), file("leaf-good.ocsp")).unwrap();
    let c = Collateral::load_dir(&d).unwrap();
    std::fs::remove_dir_all(&d).unwrap();
    assert_eq!((c.crls.len(), c.ocsp.len()), (1, 1));
    check_chain("test", &chain(), 0, &c, now(), 7 * DAY).unwrap();
}
