//! NVIDIA GPU evidence verification against Set A (../shared/data/nvidia-gpu): the
//! 2023 sample report and chain with the test driver and VBIOS RIMs, at a pinned time
//! inside the RIM certificates' validity; then one tampering at a time.
// The robustness loop's PRNG truncates its output on purpose.
#![allow(clippy::cast_possible_truncation)]

use std::path::PathBuf;

use pqcc_verify::nvidia::{
    self, Collateral, GpuEvidence, GpuPolicy, Outcome, Report, RevocationPolicy, Rim,
};

/// Inside every Set A certificate's validity (the RIM signer expired 2025-06-26).
const NOW: u64 = 1_690_000_000;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/nvidia-gpu")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(data(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

struct SetA {
    evidence: GpuEvidence,
    nonce: [u8; 32],
    driver: Vec<u8>,
    vbios: Vec<u8>,
}

fn set_a() -> SetA {
    let report =
        GpuEvidence::report_from_hex(&read("v2023_initial/attestationReport.txt")).unwrap();
    let evidence =
        GpuEvidence::from_report_and_pem(&report, &read("v2023_initial/gpuAkCertChain.txt"))
            .unwrap();
    let mut nonce = [0u8; 32];
    nonce.copy_from_slice(&evidence.request[4..36]);
    SetA {
        evidence,
        nonce,
        driver: read("Driver_RIM_test_no_gpu.swidtag"),
        vbios: read("1010_0200_882_96005E0001_test_no_gpu.swidtag"),
    }
}

fn rims(driver: &[u8], vbios: &[u8]) -> Vec<Rim> {
    vec![
        Rim {
            source: "driver".into(),
            bytes: driver.to_vec(),
        },
        Rim {
            source: "vbios".into(),
            bytes: vbios.to_vec(),
        },
    ]
}

fn no_revocation() -> GpuPolicy {
    GpuPolicy {
        revocation: RevocationPolicy::InsecureSkip,
        ..GpuPolicy::default()
    }
}

fn run(a: &SetA) -> Report {
    nvidia::verify(
        &a.evidence,
        &rims(&a.driver, &a.vbios),
        &no_revocation(),
        &a.nonce,
        NOW,
        None,
    )
}

#[test]
fn set_a_verifies_fully() {
    let a = set_a();
    let r = run(&a);
    println!("{r}");
    assert!(r.all_passed(), "{r}");
    for name in nvidia::CHECK_NAMES {
        let c = r.check(name).unwrap();
        let want = if name == "revocation" {
            Outcome::Skipped
        } else {
            Outcome::Pass
        };
        assert_eq!(c.outcome, want, "{name}: {}", c.detail);
    }
    assert_eq!(r.driver_version.as_deref(), Some("545.00"));
    assert_eq!(r.vbios_version.as_deref(), Some("96.00.5e.00.01"));
    assert!(
        r.check("measurements")
            .unwrap()
            .detail
            .contains("33 active indices"),
        "{r}"
    );
}

/// Asserts that `name` failed (and says which checks failed, for the log).
fn assert_fails(r: &Report, name: &str) {
    let c = r.check(name).unwrap();
    assert_eq!(c.outcome, Outcome::Fail, "{name} should fail:\n{r}");
    assert!(!r.all_passed());
}

fn response_offset_of_block(a: &SetA, index: u8) -> usize {
    // 8-byte response header, then 51-byte blocks (4-byte header, 3-byte DMTF header).
    let mut pos = 8;
    loop {
        let blk = &a.evidence.response[pos..];
        let size = usize::from(u16::from_le_bytes([blk[2], blk[3]]));
        if blk[0] == index {
            return pos + 7;
        }
        pos += 4 + size;
    }
}

#[test]
fn tampered_measurement_fails_signature() {
    let mut a = set_a();
    let off = response_offset_of_block(&a, 8); // RIM index 7 (driver, active)
    a.evidence.response[off] ^= 1;
    let r = run(&a);
    assert_fails(&r, "signature");
    assert_fails(&r, "measurements");
    assert_eq!(r.check("structure").unwrap().outcome, Outcome::Pass);
    assert!(
        r.check("measurements")
            .unwrap()
            .detail
            .contains("7 (driver)"),
        "{r}"
    );
}

#[test]
fn wrong_expected_nonce_fails_nonce() {
    let mut a = set_a();
    a.nonce[0] ^= 0x80;
    let r = run(&a);
    assert_fails(&r, "nonce");
    assert_eq!(r.failed(), vec!["nonce"], "{r}");
}

#[test]
fn tampered_request_nonce_fails_nonce_and_signature() {
    let mut a = set_a();
    a.evidence.request[10] ^= 1;
    let r = run(&a);
    assert_fails(&r, "nonce");
    assert_fails(&r, "signature");
}

#[test]
fn tampered_signature_byte_fails_signature() {
    for pos in [1usize, 40, 95] {
        let mut a = set_a();
        let n = a.evidence.response.len();
        a.evidence.response[n - 96 + pos] ^= 0x01;
        let r = run(&a);
        assert_eq!(r.failed(), vec!["signature"], "{r}");
    }
}

#[test]
fn tampered_opaque_data_fails_signature() {
    let mut a = set_a();
    // Flip a byte inside the MSRSCNT opaque value (length unchanged).
    let n = a.evidence.response.len();
    a.evidence.response[n - 96 - 20] ^= 0x04;
    let r = run(&a);
    assert_fails(&r, "signature");
}

#[test]
fn tampered_chain_certificate_fails_device_chain() {
    for i in 1..5 {
        let mut a = set_a();
        // A byte in the signature value at the end of certificate i.
        let l = a.evidence.certs[i].len();
        a.evidence.certs[i][l - 3] ^= 0x01;
        let r = run(&a);
        assert_fails(&r, "device-chain");
        assert_eq!(r.check("signature").unwrap().outcome, Outcome::Pass, "{r}");
    }
}

#[test]
fn swapped_chain_order_fails_device_chain() {
    let mut a = set_a();
    a.evidence.certs.swap(1, 2);
    assert_fails(&run(&a), "device-chain");
}

#[test]
fn chain_with_foreign_root_fails_device_chain() {
    let mut a = set_a();
    // Put the RIM root where the device root belongs.
    let rim_root = nvidia::roots::rim_root().unwrap();
    a.evidence.certs[4] = rim_root.der;
    assert_fails(&run(&a), "device-chain");
}

#[test]
fn device_chain_checked_at_the_callers_time() {
    let a = set_a();
    // Before the GH100 Identity certificate's notBefore (2022-01-12).
    let r = nvidia::verify(
        &a.evidence,
        &rims(&a.driver, &a.vbios),
        &no_revocation(),
        &a.nonce,
        1_600_000_000,
        None,
    );
    assert_fails(&r, "device-chain");
    // After the RIM signer expired (2025-06-26): the RIMs no longer verify.
    let r = nvidia::verify(
        &a.evidence,
        &rims(&a.driver, &a.vbios),
        &no_revocation(),
        &a.nonce,
        1_800_000_000,
        None,
    );
    assert_fails(&r, "rim-signature");
    assert!(
        r.check("rim-signature").unwrap().detail.contains("expired"),
        "{r}"
    );
}

fn replace_once(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let s = std::str::from_utf8(bytes).unwrap();
    assert_eq!(s.matches(from).count(), 1, "{from}");
    s.replacen(from, to, 1).into_bytes()
}

#[test]
fn tampered_rim_digest_fails_rim_signature() {
    let mut a = set_a();
    a.driver = replace_once(
        &a.driver,
        "0e0ee161b59bf124ce6b6dca6efa7616d28077862c0e57dca7d5efd63d00eeed4851922941e846a38c464cbedbc168d9",
        "1e0ee161b59bf124ce6b6dca6efa7616d28077862c0e57dca7d5efd63d00eeed4851922941e846a38c464cbedbc168d9",
    );
    let r = run(&a);
    assert_fails(&r, "rim-signature");
    assert!(
        r.check("rim-signature")
            .unwrap()
            .detail
            .contains("digest mismatch"),
        "{r}"
    );
    // Nothing from an unverified RIM is used.
    assert!(
        r.check("measurements")
            .unwrap()
            .detail
            .contains("not evaluated"),
        "{r}"
    );
}

#[test]
fn tampered_rim_version_fails_rim_signature() {
    let mut a = set_a();
    a.vbios = replace_once(
        &a.vbios,
        "colloquialVersion=\"96.00.5E.00.01\"",
        "colloquialVersion=\"96.00.5E.00.02\"",
    );
    let r = run(&a);
    assert_fails(&r, "rim-signature");
    assert_fails(&r, "rim-version");
}

#[test]
fn tampered_rim_signature_value_fails_rim_signature() {
    let mut a = set_a();
    a.driver = replace_once(
        &a.driver,
        "<ds:SignatureValue>/Bgn",
        "<ds:SignatureValue>/Bgm",
    );
    let r = run(&a);
    assert_fails(&r, "rim-signature");
    assert!(
        r.check("rim-signature")
            .unwrap()
            .detail
            .contains("SignatureValue"),
        "{r}"
    );
}

#[test]
fn rim_for_another_version_fails_rim_version() {
    let a = set_a();
    // Two driver RIMs, no VBIOS RIM: both verify, the version check names the gap.
    let r = nvidia::verify(
        &a.evidence,
        &rims(&a.driver, &a.driver),
        &no_revocation(),
        &a.nonce,
        NOW,
        None,
    );
    assert_eq!(r.check("rim-signature").unwrap().outcome, Outcome::Pass);
    assert_fails(&r, "rim-version");
    // Only one RIM.
    let one = vec![Rim {
        source: "driver".into(),
        bytes: a.driver.clone(),
    }];
    let r = nvidia::verify(&a.evidence, &one, &no_revocation(), &a.nonce, NOW, None);
    assert_fails(&r, "rim-version");
}

#[test]
fn production_vbios_rim_of_the_same_version_fails_measurements() {
    let a = set_a();
    let prod = read("1010_0200_882_96005E0001_PROD.swidtag");
    let r = nvidia::verify(
        &a.evidence,
        &rims(&a.driver, &prod),
        &no_revocation(),
        &a.nonce,
        NOW,
        None,
    );
    assert_eq!(
        r.check("rim-signature").unwrap().outcome,
        Outcome::Pass,
        "{r}"
    );
    assert_eq!(
        r.check("rim-version").unwrap().outcome,
        Outcome::Pass,
        "{r}"
    );
    assert_fails(&r, "measurements");
}

#[test]
fn revocation_required_without_bundle_fails_revocation() {
    let a = set_a();
    let r = nvidia::verify(
        &a.evidence,
        &rims(&a.driver, &a.vbios),
        &GpuPolicy::default(),
        &a.nonce,
        NOW,
        None,
    );
    assert_eq!(r.failed(), vec!["revocation"], "{r}");
    // An empty bundle has no status for any certificate.
    let empty = Collateral::default();
    let r = nvidia::verify(
        &a.evidence,
        &rims(&a.driver, &a.vbios),
        &GpuPolicy::default(),
        &a.nonce,
        NOW,
        Some(&empty),
    );
    assert_eq!(r.failed(), vec!["revocation"], "{r}");
    assert!(
        r.check("revocation")
            .unwrap()
            .detail
            .contains("no fresh CRL or OCSP status"),
        "{r}"
    );
}

#[test]
fn policy_requiring_report_fwid_fails_fwid() {
    let a = set_a();
    let p = GpuPolicy {
        require_report_fwid: true,
        ..no_revocation()
    };
    let r = nvidia::verify(
        &a.evidence,
        &rims(&a.driver, &a.vbios),
        &p,
        &a.nonce,
        NOW,
        None,
    );
    assert_eq!(r.failed(), vec!["fwid"], "{r}");
}

#[test]
fn structure_rejects_trailing_bytes_unknown_opaque_and_bad_codes() {
    let a = set_a();
    let mut t = set_a();
    t.evidence.response.push(0);
    assert_fails(&run(&t), "structure");
    // Unknown opaque type: the first TLV is VBIOS_VERSION (type 6); make it 99.
    let mut t = set_a();
    let n = t.evidence.response.len();
    let opaque_len = 354;
    let first_tlv = n - 96 - opaque_len;
    assert_eq!(t.evidence.response[first_tlv], 6);
    t.evidence.response[first_tlv] = 99;
    let r = run(&t);
    assert_fails(&r, "structure");
    assert!(
        r.check("structure")
            .unwrap()
            .detail
            .contains("unknown opaque-data type 99"),
        "{r}"
    );
    for (i, v) in [(0usize, 0x12u8), (1, 0x61), (4, 63)] {
        let mut t = set_a();
        t.evidence.response[i] = v;
        assert_fails(&run(&t), "structure");
    }
    let mut t = set_a();
    t.evidence.request[1] = 0xE1;
    assert_fails(&run(&t), "structure");
    let mut t = set_a();
    t.evidence.certs.pop();
    assert_fails(&run(&t), "structure");
    assert!(run(&a).all_passed());
}

#[test]
fn blob_round_trip_and_strictness() {
    let a = set_a();
    let blob = a.evidence.to_blob().unwrap();
    assert_eq!(&blob[..5], b"PQGE\x01");
    assert_eq!(GpuEvidence::from_blob(&blob).unwrap(), a.evidence);
    let mut longer = blob.clone();
    longer.push(0);
    assert!(GpuEvidence::from_blob(&longer).is_err());
    for cut in [0, 4, 5, 7, 44, 48, blob.len() - 1] {
        assert!(GpuEvidence::from_blob(&blob[..cut]).is_err(), "cut {cut}");
    }
    let mut bad = blob.clone();
    bad[4] = 2;
    assert!(GpuEvidence::from_blob(&bad).is_err());
}

/// A small deterministic generator (xorshift) for the robustness loop.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn garbage_never_panics() {
    let a = set_a();
    let blob = a.evidence.to_blob().unwrap();
    let rim_list = rims(&a.driver, &a.vbios);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..120 {
        // Mutate a few bytes of the blob, or truncate it, or random bytes.
        let mut b = blob.clone();
        match i % 3 {
            0 => {
                for _ in 0..1 + rng.next() % 4 {
                    let p = (rng.next() as usize) % b.len();
                    b[p] = rng.next() as u8;
                }
            }
            1 => b.truncate((rng.next() as usize) % b.len()),
            _ => b = (0..(rng.next() % 600)).map(|_| rng.next() as u8).collect(),
        }
        if let Ok(ev) = GpuEvidence::from_blob(&b) {
            let r = nvidia::verify(&ev, &rim_list, &no_revocation(), &a.nonce, NOW, None);
            if b != blob {
                let _ = r.all_passed();
            }
        }
        // Direct SPDM parsing of mutated responses.
        let mut resp = a.evidence.response.clone();
        let p = (rng.next() as usize) % resp.len();
        resp[p] ^= 1 + (rng.next() % 255) as u8;
        let ev = GpuEvidence {
            response: resp,
            ..a.evidence.clone()
        };
        let r = nvidia::verify(&ev, &rim_list, &no_revocation(), &a.nonce, NOW, None);
        if r.all_passed() {
            // Only a change the signature does not cover could pass: none exists.
            panic!("mutated response at {p} verified:\n{r}");
        }
    }
    // Mutated RIM XML: every byte position class, never a panic, never a pass.
    for _ in 0..60 {
        let mut x = a.driver.clone();
        let p = (rng.next() as usize) % x.len();
        x[p] = b"<>&\"' =/:x\n\x00\xff"[(rng.next() % 13) as usize];
        let r = nvidia::verify(
            &a.evidence,
            &rims(&x, &a.vbios),
            &no_revocation(),
            &a.nonce,
            NOW,
            None,
        );
        if x != a.driver {
            assert!(
                !r.all_passed() || whitespace_only_change(&a.driver, &x),
                "RIM mutated at {p} verified"
            );
        }
    }
}

/// A change the enveloped signature legitimately does not cover: whitespace inside
/// a start tag or a base64 certificate/signature value.
fn whitespace_only_change(a: &[u8], b: &[u8]) -> bool {
    let strip = |v: &[u8]| -> Vec<u8> {
        v.iter()
            .copied()
            .filter(|c| !c.is_ascii_whitespace())
            .collect()
    };
    strip(a) == strip(b)
}

#[test]
fn reused_verifier_gives_the_same_results() {
    let a = set_a();
    let mut v = nvidia::GpuVerifier::new();
    let run_v = |v: &mut nvidia::GpuVerifier, a: &SetA, now: u64| {
        v.verify(
            &a.evidence,
            &rims(&a.driver, &a.vbios),
            &no_revocation(),
            &a.nonce,
            now,
            None,
        )
    };
    // Warm it up, then every tampering must still fail exactly as with a fresh one.
    assert!(run_v(&mut v, &a, NOW).all_passed());
    assert_eq!(run_v(&mut v, &a, NOW), run(&a));
    let mut t = set_a();
    let n = t.evidence.response.len();
    t.evidence.response[n - 10] ^= 1;
    assert_eq!(run_v(&mut v, &t, NOW), run(&t));
    for i in 0..5 {
        let mut t = set_a();
        let l = t.evidence.certs[i].len();
        t.evidence.certs[i][l - 3] ^= 1;
        let r = run_v(&mut v, &t, NOW);
        assert_eq!(r, run(&t));
        assert_eq!(
            r.check("device-chain").unwrap().outcome,
            Outcome::Fail,
            "{r}"
        );
    }
    let mut t = set_a();
    t.driver = replace_once(&t.driver, "0e0ee161", "0e0ee162");
    assert_eq!(run_v(&mut v, &t, NOW), run(&t));
    // A RIM verified (and cached) at NOW is not reused after its signer expired.
    let r = run_v(&mut v, &a, 1_800_000_000);
    assert_eq!(
        r.check("rim-signature").unwrap().outcome,
        Outcome::Fail,
        "{r}"
    );
    assert!(run_v(&mut v, &a, NOW).all_passed());
}

fn run_with(v: &mut nvidia::GpuVerifier, a: &SetA, now: u64) -> Report {
    v.verify(
        &a.evidence,
        &rims(&a.driver, &a.vbios),
        &no_revocation(),
        &a.nonce,
        now,
        None,
    )
}

/// A verifier that has verified Set A, so the leaf and BROM certificate signatures,
/// the CA signatures and both RIMs are remembered.
fn warm() -> nvidia::GpuVerifier {
    let a = set_a();
    let mut v = nvidia::GpuVerifier::new();
    assert!(run_with(&mut v, &a, NOW).all_passed());
    // leaf ← BROM and BROM ← Provisioner ICA.
    assert_eq!(v.device_memo_len(), 2);
    assert!(run_with(&mut v, &a, NOW).all_passed());
    assert_eq!(v.device_memo_len(), 2);
    v
}

#[test]
fn warm_verifier_fails_a_tampered_leaf_or_brom_certificate() {
    let mut v = warm();
    for i in 0..2 {
        // A byte of the serial number (inside the signed TBS) and a byte of the
        // signature value: both still parse, neither may hit the memo.
        for at in [15, usize::MAX] {
            let mut t = set_a();
            let l = t.evidence.certs[i].len();
            let at = at.min(l - 3);
            t.evidence.certs[i][at] ^= 0x01;
            let r = run_with(&mut v, &t, NOW);
            assert_fails(&r, "device-chain");
            assert!(
                r.check("device-chain").unwrap().detail.contains("invalid"),
                "{r}"
            );
            assert_eq!(r, run(&t), "warm and fresh differ");
        }
    }
    // Still remembered and still passing.
    assert!(run_with(&mut v, &set_a(), NOW).all_passed());
}

#[test]
fn warm_verifier_fails_a_tampered_report_signature() {
    let mut v = warm();
    let mut t = set_a();
    let n = t.evidence.response.len();
    t.evidence.response[n - 10] ^= 0x01;
    let r = run_with(&mut v, &t, NOW);
    assert_fails(&r, "signature");
    assert_eq!(r, run(&t));
    // A different expected nonce fails too.
    let mut t = set_a();
    t.nonce[0] ^= 1;
    assert_fails(&run_with(&mut v, &t, NOW), "nonce");
}

#[test]
fn warm_verifier_checks_validity_every_call() {
    let mut v = warm();
    let a = set_a();
    // Before the device chain's notBefore: the remembered signatures do not help.
    let r = run_with(&mut v, &a, 1_600_000_000);
    assert_fails(&r, "device-chain");
    assert!(
        r.check("device-chain")
            .unwrap()
            .detail
            .contains("not valid before"),
        "{r}"
    );
    // After the RIM signer expired: the remembered RIMs are not reused.
    let r = run_with(&mut v, &a, 1_800_000_000);
    assert_fails(&r, "rim-signature");
    assert!(run_with(&mut v, &a, NOW).all_passed());
}

#[test]
fn device_memo_capacity_is_respected() {
    // Capacity 0: nothing device-specific is remembered, results unchanged.
    let a = set_a();
    let mut v = nvidia::GpuVerifier::with_device_capacity(0);
    assert_eq!(v.device_memo_capacity(), 0);
    assert!(run_with(&mut v, &a, NOW).all_passed());
    assert!(run_with(&mut v, &a, NOW).all_passed());
    assert_eq!(v.device_memo_len(), 0);

    // The cache itself: every genuine issuer/subject pair of Set A (device chain and
    // both RIM chains), into a cache of 2.
    let mut pairs = Vec::new();
    let dev: Vec<_> = a
        .evidence
        .certs
        .iter()
        .map(|d| nvidia::x509::Cert::from_der(d).unwrap())
        .collect();
    for w in dev.windows(2) {
        pairs.push((w[0].clone(), w[1].clone()));
    }
    for rim in [&a.driver, &a.vbios] {
        let chain = nvidia::rim::embedded_certificates(rim).unwrap();
        for w in chain.windows(2) {
            pairs.push((w[0].clone(), w[1].clone()));
        }
    }
    assert!(pairs.len() >= 5, "{}", pairs.len());
    let mut c = nvidia::x509::SigCache::with_capacity(2);
    for (i, (cert, issuer)) in pairs.iter().enumerate() {
        c.check(cert, issuer).unwrap();
        assert_eq!(c.len(), (i + 1).min(2));
    }
    for (cert, issuer) in &pairs {
        c.check(cert, issuer).unwrap();
        assert!(c.len() <= 2);
    }
    // A wrong issuer is refused, memo or not, and not remembered.
    let before = c.len();
    assert!(c.check(&pairs[0].0, &pairs[2].1).is_err());
    assert_eq!(c.len(), before);
}

#[test]
fn parallel_and_sequential_give_the_same_results() {
    let a = set_a();
    let mut t = set_a();
    t.driver = replace_once(&t.driver, "0e0ee161", "0e0ee162");
    let mut u = set_a();
    u.vbios = replace_once(&u.vbios, "96.00.5E.00.01", "96.00.5E.00.02");
    for x in [&a, &t, &u] {
        let mut p = nvidia::GpuVerifier::new().parallel(true);
        let mut s = nvidia::GpuVerifier::new().parallel(false);
        let (rp, rs) = (run_with(&mut p, x, NOW), run_with(&mut s, x, NOW));
        assert_eq!(rp, rs);
        assert_eq!(rp, run(x));
    }
    assert!(run(&a).all_passed());
    assert!(!run(&t).all_passed());
}
