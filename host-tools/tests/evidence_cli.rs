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
    assert_eq!(v["platform"], "sev-snp");
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

/// A minimal SNP-capable OVMF stand-in (64 KiB): SEV metadata with SEC_MEM, SECRETS,
/// CPUID and KERNEL_HASHES sections and the footer GUID table, as
/// `verify/tests/measure.rs` builds it (whose values sev-snp-measure confirmed).
fn synthetic_ovmf() -> Vec<u8> {
    fn guid_le(s: &str) -> Vec<u8> {
        let b = hex::decode(s.replace('-', "")).unwrap();
        [
            &[b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6]][..],
            &b[8..],
        ]
        .concat()
    }
    let mut img: Vec<u8> = (0..16 * 4096usize)
        .map(|i| ((i * 7 + i / 4096) % 251).to_le_bytes()[0])
        .collect();
    let sections: [[u32; 3]; 4] = [
        [0x80_0000, 0x3000, 1],
        [0x80_3000, 0x1000, 2],
        [0x80_4000, 0x1000, 3],
        [0x80_5000, 0x1000, 0x10],
    ];
    let mut meta = b"ASEV".to_vec();
    for v in [16 + 12 * 4u32, 1, 4]
        .into_iter()
        .chain(sections.iter().flatten().copied())
    {
        meta.extend_from_slice(&v.to_le_bytes());
    }
    img[8192..8192 + meta.len()].copy_from_slice(&meta);
    let entry = |data: Vec<u8>, guid: &str| {
        let mut e = data.clone();
        e.extend_from_slice(&u16::try_from(data.len() + 18).unwrap().to_le_bytes());
        e.extend(guid_le(guid));
        e
    };
    let mut table = entry(
        (16 * 4096u32 - 8192).to_le_bytes().to_vec(),
        "dc886566-984a-4798-a75e-5585a7bf67cc",
    );
    table.extend(entry(
        [0x80_5c00u32.to_le_bytes(), 176u32.to_le_bytes()].concat(),
        "7255371f-3a3b-4b04-927b-1da6efa8d454",
    ));
    table.extend(entry(
        0x80_b004u32.to_le_bytes().to_vec(),
        "00f771de-1a7e-4fcb-890e-68c77e2fb44e",
    ));
    let size = u16::try_from(table.len() + 18).unwrap();
    table.extend_from_slice(&size.to_le_bytes());
    table.extend(guid_le("96b582de-1fb2-45f7-baea-a366c55a082d"));
    let end = img.len() - 32;
    img[end - table.len()..end].copy_from_slice(&table);
    img
}

#[test]
fn image_measure_snp_and_tdx() {
    let d = TempDir::new("measure");
    let ovmf = d.file("ovmf.fd", &synthetic_ovmf());
    let kernel: Vec<u8> = (0..300_000u32)
        .map(|i| (i % 253).to_le_bytes()[0])
        .collect();
    let initrd: Vec<u8> = (0..70_000u32)
        .map(|i| (i % 241).to_le_bytes()[0] ^ 0x5a)
        .collect();
    let (k, i) = (d.file("k", &kernel), d.file("i", &initrd));
    let cmdline = "console=ttyS0 pqcc.config=/etc/pqcc/init.toml";
    let args = [
        "image",
        "measure",
        "--profile",
        "snp",
        "--ovmf",
        &ovmf,
        "--kernel",
        &k,
        "--initrd",
        &i,
        "--cmdline",
        cmdline,
        "--vcpus",
        "3",
        "--vcpu-type",
        "EPYC-Milan",
        "--json",
    ];
    let (out, _) = expect(&pqcc(&args), 0);
    let v = json(&out);
    // sev-snp-measure 0.0.13 on the same inputs.
    assert_eq!(
        v["measurement"],
        "cdcdf42a24a922490502859c6005b25d0025a0c10bb543f25514b95a84cd4ab4ded7abe5ca35db9ed454d1c896c159d3"
    );
    assert_eq!(v["kernel_hashes"], true);
    assert_eq!(
        v["covers"],
        "firmware, kernel, initrd and command line (kernel-hashes table)"
    );
    // Issue 29: without --kernel the digest covers OVMF alone: labelled firmware-only
    // (which a broker rule refuses), with a warning.
    let (out, err) = expect(
        &pqcc(&[
            "image",
            "measure",
            "--profile",
            "snp",
            "--ovmf",
            &ovmf,
            "--json",
        ]),
        0,
    );
    let v = json(&out);
    let m = v["measurement"].as_str().unwrap();
    assert!(m.starts_with("firmware-only:") && m.len() == 14 + 96, "{m}");
    assert_eq!(v["covers"], "firmware only");
    assert!(err.contains("covers the firmware only"), "{err}");
    let (out, _) = expect(
        &pqcc(&["image", "measure", "--profile", "snp", "--ovmf", &ovmf]),
        0,
    );
    assert!(out.starts_with("measurement: firmware-only:"), "{out}");

    // Usage and firmware errors exit 2 with the reason.
    let (_, err) = expect(
        &pqcc(&[
            "image",
            "measure",
            "--profile",
            "snp",
            "--ovmf",
            &ovmf,
            "--vcpu-type",
            "Skylake",
        ]),
        2,
    );
    assert!(err.contains("Skylake"), "{err}");
    let (_, err) = expect(
        &pqcc(&["image", "measure", "--profile", "tdx", "--ovmf", &ovmf]),
        2,
    );
    assert!(err.contains("no TDX (TDVF) metadata"), "{err}");
    let blank = d.file("blank.fd", &[0u8; 8192]);
    let (_, err) = expect(
        &pqcc(&[
            "image",
            "measure",
            "--profile",
            "snp",
            "--ovmf",
            &blank,
            "--kernel",
            &k,
        ]),
        2,
    );
    assert!(err.contains("no SEV metadata"), "{err}");
}

/// A minimal TDVF image (32 KiB): one MR_EXTEND BFV section and one TD_HOB section,
/// the "TDVF" block, and the footer GUID table's TDX metadata entry.
#[allow(clippy::cast_possible_truncation)] // fixture bytes
fn synthetic_tdvf() -> Vec<u8> {
    let guid = |s: &str| {
        let b = hex::decode(s.replace('-', "")).unwrap();
        let mut g = vec![b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6]];
        g.extend_from_slice(&b[8..]);
        g
    };
    let len = 8 * 4096;
    let mut img: Vec<u8> = (0..len).map(|i| (i % 249) as u8).collect();
    let base = (1u64 << 32) - len as u64;
    let mut meta = b"TDVF".to_vec();
    for v in [80u32, 1, 2] {
        meta.extend_from_slice(&v.to_le_bytes());
    }
    for (off, raw, gpa, mem, kind, attr) in [
        (0x4000u32, 0x4000u32, base + 0x4000, 0x4000u64, 0u32, 1u32),
        (0, 0, 0x80_9000, 0x2000, 2, 0),
    ] {
        meta.extend_from_slice(&off.to_le_bytes());
        meta.extend_from_slice(&raw.to_le_bytes());
        meta.extend_from_slice(&gpa.to_le_bytes());
        meta.extend_from_slice(&mem.to_le_bytes());
        meta.extend_from_slice(&kind.to_le_bytes());
        meta.extend_from_slice(&attr.to_le_bytes());
    }
    img[0x1000..0x1000 + meta.len()].copy_from_slice(&meta);
    let mut table = ((len - 0x1000) as u32).to_le_bytes().to_vec();
    table.extend_from_slice(&22u16.to_le_bytes());
    table.extend(guid("e47a6535-984a-4798-865e-4685a7bf8ec2"));
    table.extend_from_slice(&40u16.to_le_bytes());
    table.extend(guid("96b582de-1fb2-45f7-baea-a366c55a082d"));
    img[len - 32 - table.len()..len - 32].copy_from_slice(&table);
    img
}

/// A bzImage stand-in: Linux setup header (protocol 2.15, loaded high) in a PE32+
/// image with one section.
#[allow(clippy::cast_possible_truncation)] // fixture bytes
fn fake_bzimage() -> Vec<u8> {
    let mut k = vec![0u8; 0x3000];
    k[..2].copy_from_slice(b"MZ");
    k[0x3c] = 0x80;
    k[0x80..0x84].copy_from_slice(b"PE\0\0");
    k[0x86] = 1; // one section
    k[0x94] = 160; // SizeOfOptionalHeader
    k[0x98..0x9a].copy_from_slice(&0x20bu16.to_le_bytes());
    k[0x98 + 60..0x98 + 64].copy_from_slice(&0x1000u32.to_le_bytes());
    k[0x98 + 108] = 6; // NumberOfRvaAndSizes
    let sec = 0x98 + 160;
    k[sec + 16..sec + 20].copy_from_slice(&0x2000u32.to_le_bytes());
    k[sec + 20..sec + 24].copy_from_slice(&0x1000u32.to_le_bytes());
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    k[0x211] = 1;
    k[0x236] = 0x7f;
    for (i, b) in k[0x1000..].iter_mut().enumerate() {
        *b = (i % 241) as u8;
    }
    // What a Linux ≥ 6.9 EFI stub holds: EFI_CC_MEASUREMENT_PROTOCOL_GUID.
    k[0x1800..0x1810].copy_from_slice(&[
        0x3d, 0x1a, 0x75, 0x96, 0xf4, 0x72, 0xa6, 0x41, 0xa7, 0x94, 0xed, 0x5d, 0x0e, 0x67, 0xae,
        0x6b,
    ]);
    k
}

#[test]
fn image_measure_tdx_predicts_mrtd_and_rtmrs() {
    use pqcc_verify::tee::measure;
    let d = TempDir::new("measure-tdx");
    let fw = synthetic_tdvf();
    let kernel = fake_bzimage();
    let initrd: Vec<u8> = (0..20_000u32).map(|i| (i % 199) as u8).collect();
    let (ovmf, k, i) = (
        d.file("tdvf.fd", &fw),
        d.file("bzImage", &kernel),
        d.file("initrd", &initrd),
    );
    let cmdline = "console=ttyS0 quiet panic=-1";
    let run = |extra: &[&str], code: i32| {
        let mut a = vec![
            "image",
            "measure",
            "--profile",
            "tdx",
            "--ovmf",
            &ovmf,
            "--kernel",
            &k,
            "--initrd",
            &i,
            "--cmdline",
            cmdline,
        ];
        a.extend_from_slice(extra);
        expect(&pqcc(&a), code)
    };
    let (out, _) = run(&["--json"], 0);
    let v = json(&out);
    let events = measure::tdx_boot_events(&measure::TdxDirectBoot {
        kernel: &kernel,
        initrd: Some(&initrd),
        cmdline: Some(cmdline),
        memory: 16 << 30,
    })
    .unwrap();
    assert_eq!(v["mrtd"], hex::encode(measure::tdx_mrtd(&fw).unwrap()));
    assert_eq!(v["rtmr1"], hex::encode(measure::replay_rtmr(&events, 1)));
    assert_eq!(v["rtmr2"], hex::encode(measure::replay_rtmr(&events, 2)));
    assert_eq!(v["rtmr0"], Value::Null);
    assert_eq!(v["memory"], 16u64 << 30);
    let evs = v["events"].as_array().unwrap();
    assert_eq!(evs.len(), 7);
    assert_eq!(evs[0]["event_type"], "EV_EFI_BOOT_SERVICES_APPLICATION");
    assert_eq!(evs[0]["cc_mr_index"], 2);
    assert_eq!(evs[3]["rtmr"], 2);
    // The printed events replay to the printed registers.
    let replay = |idx: u64| {
        use sha2::Digest;
        evs.iter()
            .filter(|e| e["rtmr"] == idx)
            .fold(vec![0u8; 48], |acc, e| {
                let d = hex::decode(e["digest"].as_str().unwrap()).unwrap();
                sha2::Sha384::digest([acc, d].concat()).to_vec()
            })
    };
    assert_eq!(v["rtmr1"], hex::encode(replay(1)));
    assert_eq!(v["rtmr2"], hex::encode(replay(2)));

    // Text output: one line per register.
    let (text, _) = run(&[], 0);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], format!("mrtd: {}", v["mrtd"].as_str().unwrap()));
    assert!(lines[1].starts_with("rtmr1: ") && lines[2].starts_with("rtmr2: "));

    // Memory below 2.75 GiB moves the initrd (RTMR1), the page order changes MRTD.
    let v2 = json(
        &run(
            &[
                "--json",
                "--memory",
                "1024",
                "--tdx-page-order",
                "per-section",
            ],
            0,
        )
        .0,
    );
    assert_ne!(v2["rtmr1"], v["rtmr1"]);
    assert_eq!(v2["rtmr2"], v["rtmr2"]);
    assert_eq!(v2["memory"], 1u64 << 30);
    assert_eq!(
        v2["mrtd"],
        hex::encode(measure::tdx_mrtd_with(&fw, measure::TdxPageOrder::PerSection).unwrap())
    );
    // Without a kernel: MRTD only.
    let (out, err) = expect(
        &pqcc(&["image", "measure", "--profile", "tdx", "--ovmf", &ovmf]),
        0,
    );
    assert_eq!(out.trim(), format!("mrtd: {}", v["mrtd"].as_str().unwrap()));
    assert!(err.contains("need --kernel"), "{err}");

    // Issue 29: a kernel whose EFI stub does not measure into the CC protocol (before
    // Linux 6.9) leaves the initrd unmeasured on a TD: refused unless insecure.
    let mut old_stub = kernel.clone();
    old_stub[0x1800..0x1810].fill(0);
    let old = d.file("old-bzImage", &old_stub);
    let old_args = [
        "image",
        "measure",
        "--profile",
        "tdx",
        "--ovmf",
        &ovmf,
        "--kernel",
        &old,
        "--initrd",
        &i,
    ];
    let (_, err) = expect(&pqcc(&old_args), 2);
    assert!(
        err.contains("does not measure into the UEFI CC protocol")
            && err.contains("--insecure-unmeasured-initrd"),
        "{err}"
    );
    let mut insecure = old_args.to_vec();
    insecure.push("--insecure-unmeasured-initrd");
    let (out, err) = expect(&pqcc(&insecure), 0);
    assert!(out.starts_with("mrtd: "), "{out}");
    assert!(
        err.contains("INSECURE (--insecure-unmeasured-initrd)"),
        "{err}"
    );

    // Usage errors exit 2 with the reason.
    let (_, err) = run(&["--memory", "12Q"], 2);
    assert!(err.contains("--memory"), "{err}");
    let (_, err) = expect(
        &pqcc(&[
            "image",
            "measure",
            "--profile",
            "tdx",
            "--ovmf",
            &ovmf,
            "--kernel",
            &ovmf,
        ]),
        2,
    );
    assert!(err.contains("kernel image"), "{err}");
    let (_, err) = expect(
        &pqcc(&[
            "image",
            "measure",
            "--profile",
            "tdx",
            "--ovmf",
            &ovmf,
            "--kernel",
            &k,
            "--cmdline",
            "vga=791",
        ]),
        2,
    );
    assert!(err.contains("vga="), "{err}");
}
