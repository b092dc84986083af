//! `pqcc evidence verify` through the real binary with the shared SNP and TDX samples
//! at pinned times: valid evidence (exit 0, text and JSON with `tcb_status`), failures
//! with a named reason (exit 1), usage and I/O errors (exit 2), never a panic.

use std::process::{Command, Output};

use serde_json::Value;

const PQCC: &str = env!("CARGO_BIN_EXE_pqcc");

mod common;
use common::TempDir;

/// Inside every SNP certificate's window (2025-01-01).
const SNP_AT: &str = "1735689600";
/// min(nextUpdate) − 1 of the TDX sample collateral.
const TDX_AT: &str = "1752919234";

fn data(p: &str) -> String {
    format!("{}/../../shared/data/{p}", env!("CARGO_MANIFEST_DIR"))
}

fn pqcc(args: &[&str]) -> Output {
    Command::new(PQCC).args(args).output().unwrap()
}

#[track_caller]
fn expect(o: &Output, code: i32) -> (String, String) {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit {:?}, expected {code}\nstdout:\n{out}\nstderr:\n{err}",
        o.status
    );
    assert!(!err.contains("panicked"), "{err}");
    (out, err)
}

fn json(s: &str) -> Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn snp_args<'a>(report: &'a str, at: &'a str) -> Vec<&'a str> {
    vec![
        "evidence",
        "verify",
        "--platform",
        "snp",
        "--report",
        report,
        "--at",
        at,
    ]
}

#[test]
fn snp_milan_report_is_valid() {
    let report = data("sev-snp/report_milan.bin");
    let vcek = data("sev-snp/vcek_milan.der");
    let chain = data("sev-snp/cert_chain_milan");
    let mut args = snp_args(&report, SNP_AT);
    args.extend(["--vcek", &vcek, "--chain", &chain]);
    let (out, _) = expect(&pqcc(&args), 0);
    assert!(out.contains("result: valid"), "{out}");
    assert!(out.contains("tcb_status: MeetsPolicyMinimum"), "{out}");
    assert!(out.contains("measurement: 7a1e5c266c0108db"), "{out}");
    assert!(out.contains("NOT CHECKED"), "{out}");

    // JSON, with the report data checked, and without --chain (built-in ASK).
    let rd = &std::fs::read(&report).unwrap()[0x50..0x90];
    let rd = hex::encode(rd);
    let mut args = snp_args(&report, SNP_AT);
    args.extend(["--vcek", &vcek, "--expect-report-data", &rd, "--json"]);
    let (out, _) = expect(&pqcc(&args), 0);
    let v = json(&out);
    assert_eq!(v["valid"], true);
    assert_eq!(v["platform"], "snp");
    assert_eq!(v["tcb_status"], "MeetsPolicyMinimum");
    assert_eq!(v["report_data"], rd);
    assert_eq!(v["report_data_checked"], true);
    assert_eq!(v["measurements"]["reported_tcb"]["microcode"], 115);
}

#[test]
fn snp_failures_are_named_and_exit_1() {
    let report = data("sev-snp/report_milan.bin");
    let vcek = data("sev-snp/vcek_milan.der");
    let d = TempDir::new("evidence-snp");

    // A flipped byte in the signed part.
    let mut r = std::fs::read(&report).unwrap();
    r[0x95] ^= 1;
    let bad = d.file("flipped.bin", &r);
    let mut args = snp_args(&bad, SNP_AT);
    args.extend(["--vcek", &vcek, "--json"]);
    let (out, _) = expect(&pqcc(&args), 1);
    let v = json(&out);
    assert_eq!(v["valid"], false);
    assert_eq!(v["error_kind"], "ReportSignatureInvalid");
    assert!(v["tcb_status"].is_null());

    // After the VCEK's notAfter.
    let mut args = snp_args(&report, "1901474624");
    args.extend(["--vcek", &vcek]);
    let (out, _) = expect(&pqcc(&args), 1);
    assert!(
        out.contains("VCEK certificate not valid at 1901474624"),
        "{out}"
    );

    // Another product's chain.
    let genoa = d.file(
        "genoa.pem",
        &[
            std::fs::read(data("sev-snp/ask_genoa.pem")).unwrap(),
            std::fs::read(data("sev-snp/ark_genoa.pem")).unwrap(),
        ]
        .concat(),
    );
    let mut args = snp_args(&report, SNP_AT);
    args.extend(["--vcek", &vcek, "--chain", &genoa]);
    let (out, _) = expect(&pqcc(&args), 1);
    assert!(out.contains("error_kind: ChainBroken"), "{out}");

    // Wrong expected report data.
    let mut args = snp_args(&report, SNP_AT);
    let zeros = "00".repeat(64);
    args.extend(["--vcek", &vcek, "--expect-report-data", &zeros]);
    let (out, _) = expect(&pqcc(&args), 1);
    assert!(out.contains("report data is not the expected"), "{out}");

    // No VCEK anywhere.
    let (out, _) = expect(&pqcc(&snp_args(&report, SNP_AT)), 1);
    assert!(out.contains("VCEK certificate missing"), "{out}");

    // A policy with a TCB minimum above the report.
    let pol = d.file("p.toml", b"platform = \"snp\"\ninsecure_any_measurement = true\n[snp]\nmin_tcb = { microcode = 200 }\n");
    let mut args = snp_args(&report, SNP_AT);
    args.extend(["--vcek", &vcek, "--policy", &pol]);
    let (out, _) = expect(&pqcc(&args), 1);
    assert!(
        out.contains("microcode 115 is below the policy minimum 200"),
        "{out}"
    );
}

#[test]
fn tdx_quote_is_up_to_date() {
    let quote = data("tdx/tdx_quote");
    let coll = data("tdx/tdx_quote_collateral.json");
    let args = [
        "evidence",
        "verify",
        "--platform",
        "tdx",
        "--quote",
        &quote,
        "--collateral",
        &coll,
        "--at",
        TDX_AT,
        "--json",
    ];
    let (out, _) = expect(&pqcc(&args), 0);
    let v = json(&out);
    assert_eq!(v["tcb_status"], "UpToDate");
    assert_eq!(v["platform"], "tdx");
    assert!(
        v["measurements"]["mrtd"]
            .as_str()
            .unwrap()
            .starts_with("91eb2b44")
    );
    assert_eq!(v["measurements"]["rtmr3"], "00".repeat(48));

    // One second later a CRL has expired.
    let args = [
        "evidence",
        "verify",
        "--platform",
        "tdx",
        "--quote",
        &quote,
        "--collateral",
        &coll,
        "--at",
        "1752919235",
    ];
    let (out, _) = expect(&pqcc(&args), 1);
    assert!(out.contains("CrlExpired"), "{out}");

    // A flipped byte of the TD report.
    let d = TempDir::new("evidence-tdx");
    let mut q = std::fs::read(&quote).unwrap();
    q[300] ^= 0x40;
    let bad = d.file("q", &q);
    let args = [
        "evidence",
        "verify",
        "--platform",
        "tdx",
        "--quote",
        &bad,
        "--collateral",
        &coll,
        "--at",
        TDX_AT,
    ];
    let (out, _) = expect(&pqcc(&args), 1);
    assert!(out.contains("error_kind: TdxQuoteRejected"), "{out}");
}

#[test]
fn usage_and_io_errors_exit_2() {
    let report = data("sev-snp/report_milan.bin");
    let quote = data("tdx/tdx_quote");
    let coll = data("tdx/tdx_quote_collateral.json");
    // Missing file.
    let (_, err) = expect(&pqcc(&snp_args("/nonexistent/report", SNP_AT)), 2);
    assert!(err.contains("/nonexistent/report"), "{err}");
    // TDX without collateral; SNP with a TDX flag; both inputs.
    expect(
        &pqcc(&["evidence", "verify", "--platform", "tdx", "--quote", &quote]),
        2,
    );
    let mut a = snp_args(&report, SNP_AT);
    a.extend(["--collateral", &coll]);
    expect(&pqcc(&a), 2);
    let mut a = snp_args(&report, SNP_AT);
    a.extend(["--evidence", &report]);
    expect(&pqcc(&a), 2);
    // Bad hex, bad platform, malformed collateral, policy for the other platform.
    let mut a = snp_args(&report, SNP_AT);
    a.extend(["--expect-report-data", "zz"]);
    expect(&pqcc(&a), 2);
    expect(
        &pqcc(&[
            "evidence",
            "verify",
            "--platform",
            "sgx",
            "--report",
            &report,
        ]),
        2,
    );
    let d = TempDir::new("evidence-usage");
    let junk = d.file("c.json", b"{\"not\": 1}");
    let args = [
        "evidence",
        "verify",
        "--platform",
        "tdx",
        "--quote",
        &quote,
        "--collateral",
        &junk,
    ];
    let (_, err) = expect(&pqcc(&args), 2);
    assert!(err.contains("TDX collateral malformed"), "{err}");
    let pol = d.file("p.toml", b"platform = \"tdx\"\n");
    let mut a = snp_args(&report, SNP_AT);
    a.extend(["--policy", &pol]);
    expect(&pqcc(&a), 2);
}

#[test]
fn garbage_evidence_is_a_named_failure_not_a_crash() {
    let d = TempDir::new("evidence-garbage");
    let vcek = data("sev-snp/vcek_milan.der");
    let coll = data("tdx/tdx_quote_collateral.json");
    for (i, len) in [0usize, 1, 100, 1184, 1200, 5000].into_iter().enumerate() {
        let blob: Vec<u8> = (0..len).map(|j| (j * 31 + i).to_le_bytes()[0]).collect();
        let f = d.file(&format!("g{i}"), &blob);
        let mut a = snp_args(&f, SNP_AT);
        a.extend(["--vcek", &vcek]);
        let (out, _) = expect(&pqcc(&a), 1);
        assert!(out.contains("result: invalid"), "{out}");
        let a = [
            "evidence",
            "verify",
            "--platform",
            "tdx",
            "--quote",
            &f,
            "--collateral",
            &coll,
            "--at",
            TDX_AT,
        ];
        let (out, _) = expect(&pqcc(&a), 1);
        assert!(out.contains("result: invalid"), "{out}");
    }
}
