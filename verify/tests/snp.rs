//! SEV-SNP verification against the real Milan report in `../shared/data/sev-snp`
//! (virtee/sev test data: report, VCEK, ASK ‖ ARK), at pinned times.

// Test PRNG and base64 helpers truncate on purpose.
#![allow(clippy::cast_possible_truncation)]

use std::path::PathBuf;

use pqcc_verify::tee::{
    self, CertRole, Collateral, Measurements, TcbStatus, TeeError, TeePlatform, TeePolicy,
    snp::{self, REPORT_LEN, SIGNED_LEN, SnpTcb},
};

/// 2025-01-01T00:00:00Z: inside every certificate's window (VCEK 2023-04-03 .. 2030-04-03).
const NOW: u64 = 1_735_689_600;
/// VCEK notBefore / notAfter (Apr 3 19:23:43 2023 / 2030 GMT).
const VCEK_NOT_BEFORE: u64 = 1_680_549_823;
const VCEK_NOT_AFTER: u64 = 1_901_474_623;
const MEASUREMENT: &str = "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f";

fn data(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/sev-snp")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn report() -> Vec<u8> {
    data("report_milan.bin")
}

fn report_data(r: &[u8]) -> [u8; 64] {
    r[0x50..0x90].try_into().unwrap()
}

fn collateral() -> Collateral {
    Collateral {
        snp_vcek: Some(data("vcek_milan.der")),
        snp_chain: Some(data("cert_chain_milan")),
        snp_crl: None,
        tdx: None,
    }
}

/// PEM → DER (test helper; the crate's own PEM path is exercised by `collateral()`).
fn pem_to_der(pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(pem).unwrap();
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for c in b64.bytes().filter(|&c| c != b'=') {
        acc = (acc << 6) | alphabet.iter().position(|&a| a == c).unwrap() as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn policy() -> TeePolicy {
    TeePolicy::report_only(TeePlatform::Snp)
}

fn check(
    evidence: &[u8],
    policy: &TeePolicy,
    coll: &Collateral,
    rd: &[u8; 64],
    now: u64,
) -> Result<tee::VerifiedTee, TeeError> {
    tee::verify(TeePlatform::Snp, evidence, policy, coll, rd, now)
}

fn ok(evidence: &[u8], coll: &Collateral) -> Result<tee::VerifiedTee, TeeError> {
    check(evidence, &policy(), coll, &report_data(&report()), NOW)
}

#[test]
fn milan_report_verifies() {
    let r = report();
    let v = ok(&r, &collateral()).expect("Milan report verifies");
    assert_eq!(v.platform, TeePlatform::Snp);
    assert_eq!(v.tcb_status, TcbStatus::MeetsPolicyMinimum);
    assert!(!v.debug);
    assert_eq!(v.report_data, report_data(&r));
    let Measurements::Snp {
        measurement,
        policy,
        vmpl,
        reported_tcb,
        ..
    } = v.measurements
    else {
        panic!("not SNP measurements")
    };
    assert_eq!(hex::encode(measurement), MEASUREMENT);
    assert_eq!(policy, 0x30000);
    assert_eq!(vmpl, 0);
    assert_eq!(
        reported_tcb,
        SnpTcb {
            fmc: 0,
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 0x73
        }
    );
}

#[test]
fn verifies_at_the_window_edges_and_not_outside() {
    let r = report();
    let rd = report_data(&r);
    for now in [VCEK_NOT_BEFORE, VCEK_NOT_AFTER] {
        check(&r, &policy(), &collateral(), &rd, now).expect("inside window");
    }
    for now in [VCEK_NOT_BEFORE - 1, VCEK_NOT_AFTER + 1] {
        match check(&r, &policy(), &collateral(), &rd, now) {
            Err(TeeError::CertificateNotValidAt {
                role: CertRole::Vcek,
                not_before,
                not_after,
                ..
            }) => {
                assert_eq!((not_before, not_after), (VCEK_NOT_BEFORE, VCEK_NOT_AFTER));
            }
            other => panic!("now={now}: {other:?}"),
        }
    }
    // Past the ARK's own notAfter (2045-10-22): the root is reported.
    let e = check(&r, &policy(), &collateral(), &rd, 2_400_000_000).unwrap_err();
    assert!(
        matches!(
            e,
            TeeError::CertificateNotValidAt {
                role: CertRole::Ark,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("ARK certificate not valid at 2400000000"),
        "{e}"
    );
}

#[test]
fn certificate_table_in_the_evidence_is_enough() {
    let vcek = data("vcek_milan.der");
    let ask = pem_to_der(&data("ask_milan.pem"));
    let ark = pem_to_der(&data("ark_milan.pem"));
    let mut ev = report();
    ev.extend(snp::build_cert_table(Some(&vcek), Some(&ask), Some(&ark)));
    ok(&ev, &Collateral::default()).expect("extended report with VCEK, ASK, ARK");

    // VCEK only: the built-in ASK is used (and still checked against the pinned ARK).
    let mut ev = report();
    ev.extend(snp::build_cert_table(Some(&vcek), None, None));
    ok(&ev, &Collateral::default()).expect("VCEK only");

    // No VCEK anywhere.
    assert_eq!(
        ok(&report(), &Collateral::default()).unwrap_err(),
        TeeError::MissingCertificate(CertRole::Vcek)
    );
}

#[test]
fn every_flipped_byte_of_the_report_fails() {
    // All 1184 bytes: the signed region [0, 0x2A0) and the signature area.
    let coll = collateral();
    let good = report();
    let rd = report_data(&good);
    let mut by_reason = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..REPORT_LEN {
        let mut r = good.clone();
        r[i] ^= 0xff;
        // The expected report data stays the original: a flip inside report data must
        // not get through either.
        let e = check(&r, &policy(), &coll, &rd, NOW)
            .err()
            .unwrap_or_else(|| panic!("flipped byte {i:#x} verified"));
        let name = format!("{e:?}");
        *by_reason
            .entry(name.split(['(', ' ']).next().unwrap().to_string())
            .or_default() += 1;
    }
    // Most flips land in signed fields that only the signature protects.
    let sig = by_reason
        .get("ReportSignatureInvalid")
        .copied()
        .unwrap_or(0);
    assert!(sig > SIGNED_LEN - 16, "{by_reason:?}");
    println!("flipped-byte outcomes: {by_reason:?}");
}

#[test]
fn wrong_report_data_fails() {
    let r = report();
    let mut rd = report_data(&r);
    rd[63] ^= 1;
    assert_eq!(
        check(&r, &policy(), &collateral(), &rd, NOW).unwrap_err(),
        TeeError::ReportDataMismatch
    );
}

#[test]
fn wrong_chains_fail() {
    let r = report();
    let genoa = [data("ask_genoa.pem"), data("ark_genoa.pem")].concat();
    let coll = |chain: Vec<u8>| Collateral {
        snp_vcek: Some(data("vcek_milan.der")),
        snp_chain: Some(chain),
        snp_crl: None,
        tdx: None,
    };
    // Another product's ASK/ARK.
    assert_eq!(
        ok(&r, &coll(genoa)).unwrap_err(),
        TeeError::ChainBroken(CertRole::Ask)
    );

    // An ARK with the pinned subject but other bytes (a forged root).
    let mut ark = pem_to_der(&data("ark_milan.pem"));
    let n = ark.len();
    ark[n - 10] ^= 1;
    let ask = pem_to_der(&data("ask_milan.pem"));
    assert_eq!(
        ok(&r, &coll([ask.clone(), ark].concat())).unwrap_err(),
        TeeError::UntrustedRoot
    );

    // An ASK whose signature does not verify under the ARK.
    let mut bad_ask = ask.clone();
    let n = bad_ask.len();
    bad_ask[n - 10] ^= 1;
    assert_eq!(
        ok(&r, &coll(bad_ask)).unwrap_err(),
        TeeError::CertificateSignatureInvalid(CertRole::Ask)
    );

    // The ASK given as VCEK: its key is RSA and it is issued by the ARK.
    let c = Collateral {
        snp_vcek: Some(ask.clone()),
        snp_chain: None,
        snp_crl: None,
        tdx: None,
    };
    assert!(matches!(
        ok(&r, &c).unwrap_err(),
        TeeError::UnknownProduct(_)
    ));

    // A VCEK with a changed byte inside its signed part.
    let mut vcek = data("vcek_milan.der");
    vcek[600] ^= 1;
    let c = Collateral {
        snp_vcek: Some(vcek),
        snp_chain: None,
        snp_crl: None,
        tdx: None,
    };
    let e = ok(&r, &c).unwrap_err();
    assert!(
        matches!(
            e,
            TeeError::CertificateSignatureInvalid(CertRole::Vcek)
                | TeeError::CertificateMalformed {
                    role: CertRole::Vcek,
                    ..
                }
        ),
        "{e:?}"
    );
    // A VCEK with a changed signature.
    let mut vcek = data("vcek_milan.der");
    let n = vcek.len();
    vcek[n - 5] ^= 1;
    let c = Collateral {
        snp_vcek: Some(vcek),
        snp_chain: None,
        snp_crl: None,
        tdx: None,
    };
    assert_eq!(
        ok(&r, &c).unwrap_err(),
        TeeError::CertificateSignatureInvalid(CertRole::Vcek)
    );
}

/// A complete rule for the Milan sample: Milan named, its exact TCB as the minimum.
const MILAN_FLOOR: &str = "min_tcb = { bootloader = 3, snp = 8, microcode = 115 }\n";

/// `[snp]` for the Milan sample with `extra` lines appended to the table.
fn milan_rule(extra: &str) -> String {
    format!(
        "platform = \"snp\"\n[snp]\nproducts = [\"Milan\"]\n{MILAN_FLOOR}measurements = [\"{MEASUREMENT}\"]\n{extra}"
    )
}

fn with(toml: &str) -> TeePolicy {
    TeePolicy::from_toml(toml).unwrap_or_else(|e| panic!("policy parses: {e}\n{toml}"))
}

#[test]
fn policy_is_applied() {
    let r = report();
    let rd = report_data(&r);
    let coll = collateral();

    let p = with(&milan_rule(""));
    let v = check(&r, &p, &coll, &rd, NOW).expect("exact minimum and measurement");
    assert_eq!(v.snp_product, Some(snp::Product::Milan));

    let p = with(&format!(
        "platform = \"sev-snp\"\n[snp]\nproducts = [\"milan\"]\nmeasurements = [\"{MEASUREMENT}\"]\nmin_tcb = {{ snp = 9 }}\n"
    ));
    assert_eq!(
        check(&r, &p, &coll, &rd, NOW).unwrap_err(),
        TeeError::TcbBelowMinimum {
            component: "snp",
            reported: 8,
            minimum: 9
        }
    );

    let other = "00".repeat(48);
    let p = with(&format!(
        "platform = \"snp\"\n[snp]\nproducts = [\"Milan\"]\n{MILAN_FLOOR}measurements = [\"{other}\"]\n"
    ));
    assert_eq!(
        check(&r, &p, &coll, &rd, NOW).unwrap_err(),
        TeeError::MeasurementNotAllowed("SNP measurement")
    );

    let p = with(&format!(
        "platform = \"snp\"\n[snp]\nproducts = [\"Milan\"]\n{MILAN_FLOOR}"
    ));
    assert_eq!(
        check(&r, &p, &coll, &rd, NOW).unwrap_err(),
        TeeError::NoMeasurementPolicy
    );

    let p = with(&milan_rule(&format!(
        "host_data = \"{}\"\n",
        "11".repeat(32)
    )));
    assert_eq!(
        check(&r, &p, &coll, &rd, NOW).unwrap_err(),
        TeeError::MeasurementNotAllowed("HOST_DATA")
    );

    let p = with("platform = \"tdx\"\ninsecure_any_measurement = true\n");
    assert_eq!(
        check(&r, &p, &coll, &rd, NOW).unwrap_err(),
        TeeError::PlatformMismatch {
            policy: TeePlatform::Tdx,
            evidence: TeePlatform::Snp
        }
    );

    assert!(matches!(
        TeePolicy::from_toml("platform = \"snp\"\nunknown = 1\n"),
        Err(TeeError::PolicyInvalid(_))
    ));
    assert!(matches!(
        TeePolicy::from_toml(&milan_rule("unknown = 1\n")),
        Err(TeeError::PolicyInvalid(_))
    ));
    assert!(matches!(
        TeePolicy::from_toml("platform = \"sgx\"\n"),
        Err(TeeError::PolicyInvalid(_))
    ));
    let p = with(&format!(
        "platform = \"snp\"\n[snp]\nproducts = [\"Milan\"]\n{MILAN_FLOOR}measurements = [\"zz\"]\n"
    ));
    assert!(matches!(
        check(&r, &p, &coll, &rd, NOW),
        Err(TeeError::PolicyInvalid(_))
    ));
    assert!(
        !with(&milan_rule("")).insecure_allow_debug,
        "debug is refused by default"
    );
}

/// Issue 29: `min_tcb` has no silent zero default. A policy read from TOML (the
/// broker's `[rule.tee]` included) must state a minimum for every product it accepts;
/// a policy built in code without one is refused by `verify` itself.
#[test]
fn min_tcb_is_required() {
    let r = report();
    let rd = report_data(&r);
    let coll = collateral();
    let err = |toml: &str| match TeePolicy::from_toml(toml) {
        Err(TeeError::PolicyInvalid(m)) => m,
        other => panic!("{toml}: {other:?}"),
    };

    // No minimum at all: refused, naming the key.
    let m = err(&format!(
        "platform = \"snp\"\n[snp]\nproducts = [\"Milan\"]\nmeasurements = [\"{MEASUREMENT}\"]\n"
    ));
    assert!(m.contains("snp.min_tcb is missing"), "{m}");
    assert!(m.contains("Milan"), "{m}");
    // The default products need one each.
    let m = err("platform = \"snp\"\ninsecure_any_measurement = true\n");
    assert!(m.contains("for Genoa") && m.contains("for Turin"), "{m}");
    // An explicit all-zero minimum is no minimum.
    let m = err(&format!(
        "platform = \"snp\"\n[snp]\nproducts = [\"Milan\"]\nmin_tcb = {{}}\nmeasurements = [\"{MEASUREMENT}\"]\n"
    ));
    assert!(m.contains("all zero"), "{m}");
    // No product accepted.
    let m = err(&format!(
        "platform = \"snp\"\n[snp]\nproducts = []\n{MILAN_FLOOR}"
    ));
    assert!(m.contains("snp.products is empty"), "{m}");
    // A per-product minimum for a product that is not accepted is a mistake.
    let m = err(&milan_rule(
        "[snp.product_min_tcb]\nTurin = { fmc = 1, bootloader = 1, snp = 1, microcode = 1 }\n",
    ));
    assert!(m.contains("names Turin"), "{m}");
    // A per-product minimum satisfies the requirement.
    let p = with(&format!(
        "platform = \"snp\"\n[snp]\nproducts = [\"Milan\"]\nmeasurements = [\"{MEASUREMENT}\"]\n\
         [snp.product_min_tcb]\nMilan = {{ bootloader = 3, snp = 8, microcode = 115 }}\n"
    ));
    check(&r, &p, &coll, &rd, NOW).expect("per-product minimum met");
    // TDX policies are not affected.
    with("platform = \"tdx\"\ninsecure_any_measurement = true\n");

    // Inside a larger document, as the broker reads `[rule.tee]`.
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Rule {
        tee: TeePolicy,
    }
    let doc = "[tee]\nplatform = \"snp\"\ninsecure_any_measurement = true\n[tee.snp]\nproducts = [\"Milan\"]\n";
    let e = toml::from_str::<Rule>(doc)
        .err()
        .expect("a rule without min_tcb");
    assert!(e.to_string().contains("snp.min_tcb is missing"), "{e}");

    // Built in code, mutated after the fact: verify refuses rather than guess.
    let mut p = TeePolicy::report_only(TeePlatform::Snp);
    p.snp.min_tcb = None;
    assert!(!p.problems().is_empty());
    match check(&r, &p, &coll, &rd, NOW) {
        Err(TeeError::PolicyInvalid(m)) => assert!(m.contains("no minimum TCB for Milan"), "{m}"),
        other => panic!("{other:?}"),
    }
    // report_only states its zero minimum explicitly and still verifies.
    assert_eq!(
        TeePolicy::report_only(TeePlatform::Snp).snp.min_tcb,
        Some(SnpTcb::default())
    );
    ok(&r, &coll).expect("report_only");
}

/// Issue 29: a rule names the products it accepts; Milan is refused unless named
/// (docs/evidence.md: the 2026 software-only VCEK seed extraction on Milan).
#[test]
fn products_and_per_product_floors() {
    let r = report();
    let rd = report_data(&r);
    let coll = collateral();
    // Default products (Genoa, Turin): the Milan report is refused after its TCB passed.
    let p = with(&format!(
        "platform = \"snp\"\n[snp]\n{MILAN_FLOOR}measurements = [\"{MEASUREMENT}\"]\n"
    ));
    assert_eq!(p.snp.products, [snp::Product::Genoa, snp::Product::Turin]);
    let e = check(&r, &p, &coll, &rd, NOW).unwrap_err();
    assert_eq!(e, TeeError::ProductNotAllowed(snp::Product::Milan));
    assert!(e.to_string().contains("Milan must be named"), "{e}");
    let p = with(&format!(
        "platform = \"snp\"\n[snp]\nproducts = [\"Genoa\"]\n{MILAN_FLOOR}measurements = [\"{MEASUREMENT}\"]\n"
    ));
    assert_eq!(
        check(&r, &p, &coll, &rd, NOW).unwrap_err(),
        TeeError::ProductNotAllowed(snp::Product::Milan)
    );
    // Named: accepted.
    check(&r, &with(&milan_rule("")), &coll, &rd, NOW).expect("Milan named");
    // A per-product floor overrides min_tcb for that product.
    let p = with(&milan_rule(
        "[snp.product_min_tcb]\nMilan = { bootloader = 3, snp = 8, microcode = 116 }\n",
    ));
    assert_eq!(
        p.snp.tcb_floor(snp::Product::Milan).map(|t| t.microcode),
        Some(116)
    );
    assert_eq!(
        check(&r, &p, &coll, &rd, NOW).unwrap_err(),
        TeeError::TcbBelowMinimum {
            component: "microcode",
            reported: 115,
            minimum: 116
        }
    );
    match TeePolicy::from_toml(&format!(
        "platform = \"snp\"\n[snp]\nproducts = [\"Rome\"]\n{MILAN_FLOOR}"
    )) {
        Err(TeeError::PolicyInvalid(m)) => assert!(m.contains("Rome"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// Issue 29: the guest policy is chosen by the host; the bits a rule cares about are
/// checked against it. End to end with the real report (guest policy 0x30000: ABI 0.0,
/// SMT allowed, reserved bit 17; nothing else), then value by value.
#[test]
fn guest_policy_bits_are_checked_against_the_rule() {
    use snp::guest_policy as gp;
    let r = report();
    let rd = report_data(&r);
    let coll = collateral();
    const REAL: u64 = 0x30000;
    assert_eq!(snp::Report::parse(&r).unwrap().policy, REAL);

    // Defaults accept the real report.
    check(&r, &with(&milan_rule("")), &coll, &rd, NOW).expect("defaults");
    // Each requirement the real report does not meet is refused, naming the bit.
    for (extra, bit) in [
        ("allow_smt = false", "SMT (bit 16)"),
        ("require_single_socket = true", "SINGLE_SOCKET (bit 20)"),
        ("require_aes_256_xts = true", "MEM_AES_256_XTS (bit 22)"),
        ("require_rapl_disabled = true", "RAPL_DIS (bit 23)"),
        (
            "require_ciphertext_hiding = true",
            "CIPHERTEXT_HIDING (bit 24)",
        ),
        (
            "require_page_swap_disabled = true",
            "PAGE_SWAP_DISABLE (bit 25)",
        ),
    ] {
        let p = with(&milan_rule(&format!("{extra}\n")));
        match check(&r, &p, &coll, &rd, NOW) {
            Err(e @ TeeError::GuestPolicyRefused(why)) => {
                assert!(why.starts_with(bit), "{extra}: {why}");
                assert!(e.to_string().contains(bit), "{e}");
            }
            other => panic!("{extra}: {other:?}"),
        }
    }
    let p = with(&milan_rule("min_abi = { major = 0, minor = 1 }\n"));
    assert_eq!(
        check(&r, &p, &coll, &rd, NOW).unwrap_err(),
        TeeError::GuestPolicyAbiBelowMinimum {
            reported: (0, 0),
            minimum: (0, 1)
        }
    );
    check(
        &r,
        &with(&milan_rule("min_abi = { major = 0, minor = 0 }\n")),
        &coll,
        &rd,
        NOW,
    )
    .expect("ABI 0.0 meets 0.0");

    // Values the host could have chosen (no signed sample has them), against the rule.
    let base = with(&milan_rule(""));
    let gpol = |p: &TeePolicy, v: u64| snp::check_guest_policy(p, v);
    gpol(&base, REAL).expect("real value");
    let refused = |p: &TeePolicy, v: u64| match gpol(p, v) {
        Err(TeeError::GuestPolicyRefused(why)) => why,
        other => panic!("{v:#x}: {other:?}"),
    };
    assert!(refused(&base, REAL | gp::MIGRATE_MA).starts_with("MIGRATE_MA (bit 18)"));
    gpol(
        &with(&milan_rule("allow_migrate_ma = true\n")),
        REAL | gp::MIGRATE_MA,
    )
    .expect("allowed by the rule");
    assert!(refused(&base, REAL | gp::CXL_ALLOW).starts_with("CXL_ALLOW (bit 21)"));
    gpol(
        &with(&milan_rule("allow_cxl = true\n")),
        REAL | gp::CXL_ALLOW,
    )
    .expect("allowed");
    assert_eq!(
        gpol(&base, REAL | gp::DEBUG),
        Err(TeeError::DebugNotAllowed)
    );
    assert!(refused(&base, REAL | 1 << 26).starts_with("reserved bits 26-63"));
    assert!(refused(&base, REAL | 1 << 63).starts_with("reserved bits 26-63"));
    let strict = with(&milan_rule(
        "allow_smt = false\nrequire_single_socket = true\nrequire_aes_256_xts = true\n\
         require_rapl_disabled = true\nrequire_ciphertext_hiding = true\n\
         require_page_swap_disabled = true\nmin_abi = { major = 1, minor = 51 }\n",
    ));
    let all = gp::RESERVED_MBO
        | gp::SINGLE_SOCKET
        | gp::MEM_AES_256_XTS
        | gp::RAPL_DIS
        | gp::CIPHERTEXT_HIDING
        | gp::PAGE_SWAP_DISABLE;
    gpol(&strict, all | 0x0133).expect("ABI 1.51 and every required bit");
    gpol(&strict, all | 0x0137).expect("ABI 1.55");
    assert_eq!(
        gpol(&strict, all | 0x0132),
        Err(TeeError::GuestPolicyAbiBelowMinimum {
            reported: (1, 50),
            minimum: (1, 51)
        })
    );
    assert!(matches!(
        gpol(&strict, all | 0x00FF),
        Err(TeeError::GuestPolicyAbiBelowMinimum { .. })
    ));
    for bit in [
        gp::SINGLE_SOCKET,
        gp::MEM_AES_256_XTS,
        gp::RAPL_DIS,
        gp::CIPHERTEXT_HIDING,
        gp::PAGE_SWAP_DISABLE,
    ] {
        assert!(matches!(
            gpol(&strict, (all & !bit) | 0x0137),
            Err(TeeError::GuestPolicyRefused(_))
        ));
    }
    assert!(refused(&strict, all | gp::SMT | 0x0137).starts_with("SMT (bit 16)"));
    // report_only reports whatever the host chose, but never a debug guest.
    let ro = TeePolicy::report_only(TeePlatform::Snp);
    gpol(&ro, REAL | gp::MIGRATE_MA | gp::CXL_ALLOW).expect("report_only");
    assert_eq!(gpol(&ro, REAL | gp::DEBUG), Err(TeeError::DebugNotAllowed));
}

/// CPUID family/model of v3+ reports → product (the `sev` crate's table).
#[test]
fn cpuid_names_the_product() {
    use snp::Product;
    assert_eq!(Product::from_cpuid(0x19, 0x01), Some(Product::Milan));
    assert_eq!(Product::from_cpuid(0x19, 0x11), Some(Product::Genoa));
    assert_eq!(Product::from_cpuid(0x19, 0xA0), Some(Product::Genoa));
    assert_eq!(Product::from_cpuid(0x1A, 0x02), Some(Product::Turin));
    assert_eq!(Product::from_cpuid(0x17, 0x31), None);
    assert_eq!(Product::from_cpuid(0x1A, 0x50), None);
    // A v2 report has no CPUID fields.
    assert_eq!(snp::Report::parse(&report()).unwrap().cpuid, None);
}

#[test]
fn debug_bit_is_read_from_the_signed_policy() {
    // A flipped DEBUG bit (policy bit 19) breaks the signature: the bit cannot be
    // cleared by the host. (No signed debug report is available to test the refusal
    // path end to end; `DebugNotAllowed` follows the signature check in the code.)
    let mut r = report();
    r[0x08 + 2] |= 0x08;
    assert_eq!(
        ok(&r, &collateral()).unwrap_err(),
        TeeError::ReportSignatureInvalid
    );
}

#[test]
fn strict_report_parsing() {
    let good = report();
    let parse = |b: &[u8]| snp::Report::parse(b).map(|_| ()).unwrap_err();
    assert_eq!(
        parse(&good[..REPORT_LEN - 1]),
        TeeError::SnpReportMalformed("length is not 0x4A0")
    );
    let mut r = good.clone();
    r[0] = 1;
    assert_eq!(parse(&r), TeeError::SnpReportVersion(1));
    let mut r = good.clone();
    r[0] = 6;
    assert_eq!(parse(&r), TeeError::SnpReportVersion(6));
    let mut r = good.clone();
    r[0x34] = 2;
    assert_eq!(parse(&r), TeeError::SnpSignatureAlgorithm(2));
    let mut r = good.clone();
    r[0x48] = 1 << 2; // SIGNING_KEY = VLEK
    assert_eq!(parse(&r), TeeError::SnpSigningKey(1));
    let mut r = good.clone();
    r[0x48] = 0b10; // MASK_CHIP_KEY
    assert_eq!(parse(&r), TeeError::SnpSigningKey(0));
    let mut r = good.clone();
    r[0x2A0 + 50] = 1;
    assert_eq!(
        parse(&r),
        TeeError::SnpReportMalformed("signature R has high bytes set")
    );
    let mut r = good.clone();
    r[0x400] = 1;
    assert_eq!(
        parse(&r),
        TeeError::SnpReportMalformed("signature reserved bytes not zero")
    );
}

#[test]
fn certificate_table_faults_are_named() {
    let vcek = data("vcek_milan.der");
    let table = snp::build_cert_table(Some(&vcek), None, None);
    let parse = |t: &[u8]| snp::CertTable::parse(t).map(|_| ()).unwrap_err();
    // No terminator: one entry of an unknown GUID pointing at its own first byte.
    let mut t = vec![0x11u8; 16];
    t.extend_from_slice(&0u32.to_le_bytes());
    t.extend_from_slice(&1u32.to_le_bytes());
    assert_eq!(
        parse(&t),
        TeeError::SnpCertTableMalformed("no terminating entry")
    );
    // Entry beyond the table.
    let mut t = table.clone();
    t[20] = 0xff;
    assert_eq!(
        parse(&t),
        TeeError::SnpCertTableMalformed("entry out of bounds")
    );
    // Zero length.
    let mut t = table.clone();
    t[20..24].fill(0);
    assert_eq!(
        parse(&t),
        TeeError::SnpCertTableMalformed("empty certificate")
    );
    // Duplicate VCEK.
    let t = snp::build_cert_table(Some(&vcek), None, None);
    let mut dup = t[..24].to_vec();
    dup.extend_from_slice(&t[..24]);
    let off = 72u32;
    dup[16..20].copy_from_slice(&off.to_le_bytes());
    dup[40..44].copy_from_slice(&off.to_le_bytes());
    dup.extend_from_slice(&[0; 24]);
    dup.extend_from_slice(&vcek);
    assert_eq!(
        parse(&dup),
        TeeError::SnpCertTableMalformed("duplicate entry")
    );
    // Certificate pointing into the entries.
    let mut t = table.clone();
    t[16..20].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(
        parse(&t),
        TeeError::SnpCertTableMalformed("certificate overlaps the table")
    );
}

#[test]
fn pinned_roots_are_amds_published_certificates() {
    // The compiled-in ARKs/ASKs are byte-identical to AMD's KDS certificates in the
    // shared evidence samples, and their fingerprints are what the code pins.
    for (root, name) in snp::chain::PINNED.iter().zip(["milan", "genoa", "turin"]) {
        assert_eq!(
            root.ark,
            pem_to_der(&data(&format!("ark_{name}.pem"))).as_slice(),
            "{name} ARK"
        );
        assert_eq!(
            root.ask,
            pem_to_der(&data(&format!("ask_{name}.pem"))).as_slice(),
            "{name} ASK"
        );
        use sha2::Digest;
        assert_eq!(hex::encode(sha2::Sha256::digest(root.ark)), root.ark_sha256);
    }
}

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_and_truncated_inputs_never_panic() {
    let vcek = data("vcek_milan.der");
    let ask = pem_to_der(&data("ask_milan.pem"));
    let mut full = report();
    full.extend(snp::build_cert_table(Some(&vcek), Some(&ask), None));
    let none = Collateral::default();
    let rd = [0u8; 64];
    // Every truncation of a full extended report.
    for n in 0..=full.len() {
        let _ = check(&full[..n], &policy(), &none, &rd, NOW);
    }
    // Random mutations of the certificate table and certificates (1–8 bytes each).
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let mut ev = full.clone();
        for _ in 0..1 + rng.next() % 8 {
            let i = REPORT_LEN + (rng.next() as usize) % (ev.len() - REPORT_LEN);
            ev[i] = rng.next() as u8;
        }
        let _ = check(&ev, &policy(), &none, &rd, NOW);
    }
    // Random bytes as report, table and collateral.
    for _ in 0..2000 {
        let len = (rng.next() % 4096) as usize;
        let blob: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let coll = Collateral {
            snp_vcek: Some(blob.iter().rev().copied().collect()),
            snp_chain: Some(blob.clone()),
            snp_crl: None,
            tdx: None,
        };
        let _ = check(&blob, &policy(), &coll, &rd, NOW);
        let mut ev = report();
        ev.extend_from_slice(&blob);
        let _ = check(&ev, &policy(), &none, &rd, NOW);
    }
}
