//! TDX DCAP verification against the real quotes and collateral in
//! `../shared/data/tdx` (dcap-qvl and NEAR samples), at pinned times.

// Test PRNG and base64 helpers truncate on purpose.
#![allow(clippy::cast_possible_truncation)]

use std::path::PathBuf;

use pqcc_verify::tee::{
    self, Collateral, Measurements, TcbStatus, TeeError, TeePlatform, TeePolicy, tdx::TdxCollateral,
};

/// min(nextUpdate) − 1 over TCB info, QE identity and CRLs of the sample collateral
/// (2025-07-19T10:00:34Z).
const NOW: u64 = 1_752_919_234;
/// The latest issue date in the collateral (start of its common window).
const ISSUED: u64 = 1_750_329_147;
/// TCB info issueDate 2025-06-19T10:16:03Z.
const TCB_INFO_ISSUED: u64 = 1_750_328_163;
const MRTD: &str = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7";

fn data(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/tdx")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn collateral_from(name: &str) -> Collateral {
    Collateral {
        tdx: Some(TdxCollateral::from_json(&data(name)).expect("collateral parses")),
        ..Collateral::default()
    }
}

fn collateral() -> Collateral {
    collateral_from("tdx_quote_collateral.json")
}

fn quote() -> Vec<u8> {
    data("tdx_quote")
}

/// v4: 48-byte header, 584-byte TD report whose last 64 bytes are REPORTDATA.
fn report_data(q: &[u8]) -> [u8; 64] {
    q[48 + 584 - 64..48 + 584].try_into().unwrap()
}

fn policy() -> TeePolicy {
    TeePolicy::report_only(TeePlatform::Tdx)
}

fn check(
    q: &[u8],
    policy: &TeePolicy,
    coll: &Collateral,
    rd: &[u8; 64],
    now: u64,
) -> Result<tee::VerifiedTee, TeeError> {
    tee::verify(TeePlatform::Tdx, q, policy, coll, rd, now)
}

#[test]
fn tdx_quote_is_up_to_date() {
    let q = quote();
    let v = check(&q, &policy(), &collateral(), &report_data(&q), NOW).expect("quote verifies");
    assert_eq!(v.platform, TeePlatform::Tdx);
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
    assert!(v.advisory_ids.is_empty());
    assert!(!v.debug);
    assert_eq!(v.report_data, report_data(&q));
    let Measurements::Tdx {
        mrtd,
        rtmr,
        td_attributes,
        ..
    } = v.measurements
    else {
        panic!("not TDX measurements")
    };
    assert_eq!(hex::encode(mrtd), MRTD);
    assert_eq!(td_attributes & 1, 0);
    // Values from the dcap-qvl insta snapshot of this quote.
    assert_eq!(&hex::encode(rtmr[0])[..16], "44c0197b39157fdd");
    // Also at the start of the common window.
    check(&q, &policy(), &collateral(), &report_data(&q), ISSUED).expect("at window start");
}

#[test]
fn time_outside_the_collateral_window_fails() {
    let q = quote();
    let rd = report_data(&q);
    // One second after the first CRL's nextUpdate: dcap-qvl refuses the CRL.
    let e = check(&q, &policy(), &collateral(), &rd, NOW + 1).unwrap_err();
    assert!(matches!(e, TeeError::TdxQuoteRejected(_)), "{e:?}");
    println!("NOW+1: {e}");
    // After the TCB info's nextUpdate: named by this crate.
    let e = check(&q, &policy(), &collateral(), &rd, NOW + 3600).unwrap_err();
    assert!(
        matches!(
            e,
            TeeError::TdxCollateralNotValidAt {
                what: "TCB info",
                ..
            }
        ),
        "{e:?}"
    );
    // Before the TCB info was issued.
    let e = check(&q, &policy(), &collateral(), &rd, TCB_INFO_ISSUED - 1).unwrap_err();
    assert!(
        matches!(
            e,
            TeeError::TdxCollateralNotValidAt {
                what: "TCB info",
                ..
            }
        ),
        "{e:?}"
    );
    // Policy freshness limit.
    let mut p = policy();
    p.max_collateral_age_secs = Some(86_400);
    assert!(matches!(
        check(&q, &p, &collateral(), &rd, NOW).unwrap_err(),
        TeeError::CollateralTooOld { max: 86_400, .. }
    ));
}

#[test]
fn every_flipped_byte_fails() {
    // Every byte of the quote: header and TD report (signed by the attestation key),
    // auth data (signature, attestation key, QE report, QE auth data, PCK chain), and
    // the zero padding the quote service left after it.
    let q = quote();
    let rd = report_data(&q);
    let coll = collateral();
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..q.len() {
        let mut f = q.clone();
        f[i] ^= 0xff;
        let e = check(&f, &policy(), &coll, &rd, NOW)
            .err()
            .unwrap_or_else(|| panic!("flipped byte {i} verified"));
        let name = format!("{e:?}");
        *reasons
            .entry(name.split(['(', ' ']).next().unwrap().to_string())
            .or_default() += 1;
    }
    println!("flipped-byte outcomes: {reasons:?}");
}

#[test]
fn wrong_report_data_fails() {
    let q = quote();
    let mut rd = report_data(&q);
    rd[0] ^= 1;
    assert_eq!(
        check(&q, &policy(), &collateral(), &rd, NOW).unwrap_err(),
        TeeError::ReportDataMismatch
    );
}

#[test]
fn wrong_collateral_and_chain_fail() {
    let q = quote();
    let rd = report_data(&q);
    // Collateral of another platform (FMSPC 20a06f000000), inside its own window.
    let near = collateral_from("near_quote_collateral.json");
    let near_now = 1_759_000_000; // 2025-09-27, inside the NEAR collateral's window
    let e = check(&q, &policy(), &near, &rd, near_now).unwrap_err();
    assert!(matches!(e, TeeError::TdxQuoteRejected(_)), "{e:?}");
    println!("other platform's collateral: {e}");

    // TCB info signed by the wrong chain (the PCK CRL issuer in place of the TCB signer).
    let mut j: serde_json::Value =
        serde_json::from_slice(&data("tdx_quote_collateral.json")).unwrap();
    j["tcb_info_issuer_chain"] = j["pck_crl_issuer_chain"].clone();
    let c = Collateral {
        tdx: Some(TdxCollateral::from_json(j.to_string().as_bytes()).unwrap()),
        ..Collateral::default()
    };
    let e = check(&q, &policy(), &c, &rd, NOW).unwrap_err();
    assert!(matches!(e, TeeError::TdxQuoteRejected(_)), "{e:?}");

    // A tampered TCB info body (signature no longer matches).
    let mut j: serde_json::Value =
        serde_json::from_slice(&data("tdx_quote_collateral.json")).unwrap();
    let t = j["tcb_info"]
        .as_str()
        .unwrap()
        .replacen("UpToDate", "OutOfDate", 1);
    j["tcb_info"] = t.into();
    let c = Collateral {
        tdx: Some(TdxCollateral::from_json(j.to_string().as_bytes()).unwrap()),
        ..Collateral::default()
    };
    assert!(matches!(
        check(&q, &policy(), &c, &rd, NOW).unwrap_err(),
        TeeError::TdxQuoteRejected(_)
    ));

    // No collateral at all.
    assert_eq!(
        check(&q, &policy(), &Collateral::default(), &rd, NOW).unwrap_err(),
        TeeError::MissingCollateral("TDX DCAP collateral")
    );
}

#[test]
fn sgx_quote_is_not_a_td_quote() {
    let q = data("sgx_quote");
    let coll = collateral_from("sgx_quote_collateral.json");
    assert_eq!(
        check(&q, &policy(), &coll, &[0; 64], NOW).unwrap_err(),
        TeeError::NotATdQuote
    );
}

#[test]
fn policy_is_applied() {
    let q = quote();
    let rd = report_data(&q);
    let coll = collateral();
    let with = |toml: &str| TeePolicy::from_toml(toml).expect("policy parses");
    let v = check(&q, &policy(), &coll, &rd, NOW).unwrap();
    let Measurements::Tdx { rtmr, .. } = v.measurements else {
        panic!()
    };
    let r1 = hex::encode(rtmr[1]);
    let r2 = hex::encode(rtmr[2]);

    // What `pqcc image measure --profile tdx` prints: MRTD, RTMR1 and RTMR2 pinned.
    let p = with(&format!(
        "platform = \"tdx\"\n[[tdx.measurements]]\nmrtd = \"{MRTD}\"\nrtmr1 = \"{r1}\"\nrtmr2 = \"{r2}\"\n"
    ));
    check(&q, &p, &coll, &rd, NOW).expect("matching MRTD, RTMR1 and RTMR2");
    let p = with(&format!(
        "platform = \"tdx\"\n[[tdx.measurements]]\nmrtd = \"{MRTD}\"\nrtmr1 = \"{r1}\"\nrtmr2 = \"{}\"\n",
        "11".repeat(48)
    ));
    assert_eq!(
        check(&q, &p, &coll, &rd, NOW).unwrap_err(),
        TeeError::MeasurementNotAllowed("RTMR2")
    );

    let p = with(&format!(
        "platform = \"tdx\"\n[[tdx.measurements]]\nmrtd = \"{MRTD}\"\nrtmr1 = \"{r1}\"\n"
    ));
    check(&q, &p, &coll, &rd, NOW).expect("matching MRTD and RTMR1");

    let p = with(&format!(
        "platform = \"tdx\"\n[[tdx.measurements]]\nmrtd = \"{MRTD}\"\nrtmr1 = \"{}\"\n",
        "00".repeat(48)
    ));
    assert_eq!(
        check(&q, &p, &coll, &rd, NOW).unwrap_err(),
        TeeError::MeasurementNotAllowed("RTMR1")
    );

    let p = with(&format!(
        "platform = \"tdx\"\n[[tdx.measurements]]\nmrtd = \"{}\"\n",
        "00".repeat(48)
    ));
    assert_eq!(
        check(&q, &p, &coll, &rd, NOW).unwrap_err(),
        TeeError::MeasurementNotAllowed("MRTD")
    );

    let p = with("platform = \"tdx\"\n");
    assert_eq!(
        check(&q, &p, &coll, &rd, NOW).unwrap_err(),
        TeeError::NoMeasurementPolicy
    );

    let p = with(
        "platform = \"tdx\"\ninsecure_any_measurement = true\n[tdx]\naccepted_tcb_status = [\"SWHardeningNeeded\"]\n",
    );
    assert_eq!(
        check(&q, &p, &coll, &rd, NOW).unwrap_err(),
        TeeError::TcbStatusNotAccepted(TcbStatus::UpToDate)
    );
}

#[test]
fn debug_attribute_cannot_be_set_by_the_host() {
    // TD_ATTRIBUTES is inside the signed TD report: setting DEBUG breaks the quote.
    let mut q = quote();
    let td_attributes = 48 + 16 + 48 + 48 + 8;
    q[td_attributes] |= 1;
    let e = check(&q, &policy(), &collateral(), &report_data(&q), NOW).unwrap_err();
    assert!(matches!(e, TeeError::TdxQuoteRejected(_)), "{e:?}");
}

#[test]
fn strict_quote_framing() {
    let q = quote();
    let rd = report_data(&q);
    let mut long = q.clone();
    long.push(1);
    assert!(matches!(
        check(&long, &policy(), &collateral(), &rd, NOW).unwrap_err(),
        TeeError::TdxQuoteMalformed(_)
    ));
    let mut padded = q.clone();
    padded.extend_from_slice(&[0; 100]);
    check(&padded, &policy(), &collateral(), &rd, NOW).expect("zero padding is accepted");
    assert!(matches!(
        check(&q[..q.len() - 80], &policy(), &collateral(), &rd, NOW).unwrap_err(),
        TeeError::TdxQuoteMalformed(_)
    ));
    assert!(matches!(
        TdxCollateral::from_json(b"{}"),
        Err(TeeError::TdxCollateralMalformed(_))
    ));
}

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
    let q = quote();
    let coll = collateral();
    let rd = report_data(&q);
    for n in 0..q.len() {
        let _ = check(&q[..n], &policy(), &coll, &rd, NOW);
    }
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for _ in 0..2000 {
        let mut f = q.clone();
        for _ in 0..1 + rng.next() % 8 {
            let i = (rng.next() as usize) % f.len();
            f[i] = rng.next() as u8;
        }
        let _ = check(&f, &policy(), &coll, &rd, NOW);
    }
    for _ in 0..2000 {
        let len = (rng.next() % 6000) as usize;
        let mut blob: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if blob.len() > 8 && rng.next().is_multiple_of(2) {
            blob[..8].copy_from_slice(&q[..8]); // a valid-looking v4 TDX header
        }
        let _ = check(&blob, &policy(), &coll, &rd, NOW);
        let _ = TdxCollateral::from_json(&blob);
    }
}

#[test]
fn near_quote_is_up_to_date_in_its_window() {
    // The second real v4 quote (FMSPC 20a06f000000) with its own collateral, at
    // 2025-09-27T19:06:40Z (its window ends 2025-10-02T07:03:50Z).
    let text = String::from_utf8(data("near_quote_hex.txt")).unwrap();
    let q = hex::decode(text.trim().trim_start_matches("0x")).unwrap();
    let coll = collateral_from("near_quote_collateral.json");
    let rd = report_data(&q);
    let v = check(&q, &policy(), &coll, &rd, 1_759_000_000).expect("NEAR quote verifies");
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
    // And with the other platform's collateral it does not.
    assert!(matches!(
        check(&q, &policy(), &collateral(), &rd, NOW).unwrap_err(),
        TeeError::TdxQuoteRejected(_)
    ));
}
