//! `pqcc gpu verify` and `pqcc gpu fetch-collateral` through the real binary, on Set A
//! (../shared/data/nvidia-gpu) at a pinned time; `fetch-collateral` against a local
//! HTTP server on 127.0.0.1 that plays NVIDIA's OCSP responder and RIM service.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use serde_json::Value;

const PQCC: &str = env!("CARGO_BIN_EXE_pqcc");
const AT: &str = "1690000000";

mod common;
use common::TempDir;

fn data(name: &str) -> String {
    format!(
        "{}/../../shared/data/nvidia-gpu/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn set_a_nonce() -> String {
    let hex = std::fs::read_to_string(data("v2023_initial/attestationReport.txt")).unwrap();
    hex.trim()[8..72].to_string()
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
        "stdout:\n{out}\nstderr:\n{err}"
    );
    (out, err)
}

fn verify_args<'a>(
    nonce: &'a str,
    report: &'a str,
    chain: &'a str,
    driver: &'a str,
    vbios: &'a str,
) -> Vec<&'a str> {
    vec![
        "gpu",
        "verify",
        "--evidence",
        report,
        "--cert-chain",
        chain,
        "--rim",
        driver,
        vbios,
        "--nonce",
        nonce,
        "--at",
        AT,
    ]
}

#[test]
fn set_a_verifies_with_revocation_skipped() {
    let nonce = set_a_nonce();
    let (r, c, d, v) = (
        data("v2023_initial/attestationReport.txt"),
        data("v2023_initial/gpuAkCertChain.txt"),
        data("Driver_RIM_test_no_gpu.swidtag"),
        data("1010_0200_882_96005E0001_test_no_gpu.swidtag"),
    );
    let mut args = verify_args(&nonce, &r, &c, &d, &v);
    args.push("--insecure-no-revocation");
    let (out, _) = expect(&pqcc(&args), 0);
    for check in [
        "structure",
        "nonce",
        "signature",
        "device-chain",
        "fwid",
        "rim-signature",
        "rim-version",
        "measurements",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("PASS") && l.contains(check)),
            "{check}:\n{out}"
        );
    }
    assert!(out.contains("SKIP  revocation"), "{out}");
    assert!(out.contains("GPU evidence VERIFIED"), "{out}");

    args.push("--json");
    let (out, _) = expect(&pqcc(&args), 0);
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["verified"], true);
    assert_eq!(j["checks"].as_array().unwrap().len(), 9);
    assert_eq!(j["driver_version"], "545.00");
    assert_eq!(j["vbios_version"], "96.00.5e.00.01");
}

#[test]
fn failures_exit_1_and_name_the_check() {
    let nonce = set_a_nonce();
    let (r, c, d, v) = (
        data("v2023_initial/attestationReport.txt"),
        data("v2023_initial/gpuAkCertChain.txt"),
        data("Driver_RIM_test_no_gpu.swidtag"),
        data("1010_0200_882_96005E0001_test_no_gpu.swidtag"),
    );
    // Revocation is required by default: no bundle, no pass.
    let (out, _) = expect(&pqcc(&verify_args(&nonce, &r, &c, &d, &v)), 1);
    assert!(
        out.contains("FAIL  revocation") && out.contains("NOT VERIFIED"),
        "{out}"
    );

    // Another nonce.
    let other = format!("{}0", &nonce[..63]);
    let mut args = verify_args(&other, &r, &c, &d, &v);
    args.push("--insecure-no-revocation");
    let (out, _) = expect(&pqcc(&args), 1);
    assert!(out.contains("FAIL  nonce"), "{out}");

    // A RIM with one golden digest changed.
    let t = TempDir::new("gpu-cli");
    let driver = std::fs::read_to_string(&d)
        .unwrap()
        .replacen("0e0ee161", "0e0ee162", 1);
    let bad = t.file("driver.swidtag", driver.as_bytes());
    let mut args = verify_args(&nonce, &r, &c, &bad, &v);
    args.push("--insecure-no-revocation");
    let (out, _) = expect(&pqcc(&args), 1);
    assert!(
        out.contains("FAIL  rim-signature") && out.contains("digest mismatch"),
        "{out}"
    );

    // Too late for the RIM signing certificate.
    let mut args = verify_args(&nonce, &r, &c, &d, &v);
    args.push("--insecure-no-revocation");
    let n = args.len();
    args[n - 2] = "1800000000";
    let (out, _) = expect(&pqcc(&args), 1);
    assert!(
        out.contains("FAIL  rim-signature") && out.contains("expired"),
        "{out}"
    );
}

#[test]
fn evidence_blob_carries_its_chain() {
    let t = TempDir::new("gpu-cli-blob");
    let report = pqcc_verify::nvidia::GpuEvidence::report_from_hex(
        &std::fs::read(data("v2023_initial/attestationReport.txt")).unwrap(),
    )
    .unwrap();
    let ev = pqcc_verify::nvidia::GpuEvidence::from_report_and_pem(
        &report,
        &std::fs::read(data("v2023_initial/gpuAkCertChain.txt")).unwrap(),
    )
    .unwrap();
    let blob = t.file("ev.pqge", &ev.to_blob().unwrap());
    let bin = t.file("report.bin", &report);
    let nonce = set_a_nonce();
    let (d, v) = (
        data("Driver_RIM_test_no_gpu.swidtag"),
        data("1010_0200_882_96005E0001_test_no_gpu.swidtag"),
    );
    let base = [
        "gpu",
        "verify",
        "--rim",
        &d,
        &v,
        "--nonce",
        &nonce,
        "--at",
        AT,
        "--insecure-no-revocation",
    ];
    let mut a = base.to_vec();
    a.extend(["--evidence", &blob]);
    expect(&pqcc(&a), 0);
    // Binary report + PEM chain works too.
    let chain = data("v2023_initial/gpuAkCertChain.txt");
    let mut a = base.to_vec();
    a.extend(["--evidence", &bin, "--cert-chain", &chain]);
    expect(&pqcc(&a), 0);
    // A blob plus --cert-chain is ambiguous: usage error.
    let mut a = base.to_vec();
    a.extend(["--evidence", &blob, "--cert-chain", &chain]);
    let (_, err) = expect(&pqcc(&a), 2);
    assert!(err.contains("carries its own chain"), "{err}");
}

#[test]
fn usage_and_io_errors_exit_2() {
    let nonce = set_a_nonce();
    let d = data("Driver_RIM_test_no_gpu.swidtag");
    let r = data("v2023_initial/attestationReport.txt");
    let c = data("v2023_initial/gpuAkCertChain.txt");
    let (_, err) = expect(
        &pqcc(&[
            "gpu",
            "verify",
            "--evidence",
            "/nonexistent/x",
            "--cert-chain",
            &c,
            "--rim",
            &d,
            "--nonce",
            &nonce,
            "--at",
            AT,
        ]),
        2,
    );
    assert!(err.contains("/nonexistent/x"), "{err}");
    let (_, err) = expect(
        &pqcc(&[
            "gpu",
            "verify",
            "--evidence",
            &r,
            "--cert-chain",
            &c,
            "--rim",
            &d,
            "--nonce",
            "abcd",
            "--at",
            AT,
        ]),
        2,
    );
    assert!(err.contains("--nonce is 2 bytes"), "{err}");
    let (_, err) = expect(
        &pqcc(&[
            "gpu",
            "verify",
            "--evidence",
            &r,
            "--rim",
            &d,
            "--nonce",
            &nonce,
            "--at",
            AT,
        ]),
        2,
    );
    assert!(err.contains("--cert-chain is required"), "{err}");
    // Garbage evidence is an error, never a panic.
    let t = TempDir::new("gpu-cli-garbage");
    let g = t.file("g.txt", b"zz not hex");
    let (_, err) = expect(
        &pqcc(&[
            "gpu",
            "verify",
            "--evidence",
            &g,
            "--cert-chain",
            &c,
            "--rim",
            &d,
            "--nonce",
            &nonce,
            "--at",
            AT,
        ]),
        2,
    );
    assert!(err.contains("not hex"), "{err}");
}

/// A minimal successful OCSPResponse (basic type) whose BasicOCSPResponse is a
/// syntactically valid shell: enough for the fetcher, and rejected by the verifier.
fn dummy_ocsp_response() -> Vec<u8> {
    // BasicOCSPResponse { tbsResponseData SEQUENCE {}, ecdsa-with-SHA384, BIT STRING {} }
    let basic = [
        0x30, 0x11, 0x30, 0x00, 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03,
        0x03, 0x03, 0x01, 0x00,
    ];
    let oid = [
        0x06, 0x09, 0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01,
    ];
    let mut rb = vec![0x30, 0x20];
    rb.extend(oid);
    rb.extend([0x04, 0x13]);
    rb.extend(basic);
    let mut out = vec![0x30, 0x27, 0x0a, 0x01, 0x00, 0xa0, 0x22];
    out.extend(rb);
    out
}

struct Hit {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// Serves HTTP/1.1 on 127.0.0.1 until the test ends; records every request.
fn serve(fail_ocsp: bool) -> (String, Arc<Mutex<Vec<Hit>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(Mutex::new(Vec::new()));
    let h = hits.clone();
    let driver = std::fs::read(data("Driver_RIM_test_no_gpu.swidtag")).unwrap();
    let vbios = std::fs::read(data("1010_0200_882_96005E0001_test_no_gpu.swidtag")).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let path = parts.next().unwrap_or("").to_string();
            let mut len = 0usize;
            loop {
                let mut hl = String::new();
                r.read_line(&mut hl).unwrap();
                if hl.trim().is_empty() {
                    break;
                }
                if let Some(v) = hl.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let (status, ctype, resp): (&str, &str, Vec<u8>) =
                match (method.as_str(), path.as_str()) {
                    ("POST", "/ocsp") if fail_ocsp => {
                        ("500 Internal Server Error", "text/plain", b"down".to_vec())
                    }
                    ("POST", "/ocsp") => {
                        ("200 OK", "application/ocsp-response", dummy_ocsp_response())
                    }
                    ("GET", "/rim/NV_GPU_DRIVER_GH100_545.00") => {
                        ("200 OK", "application/json", rim_json(&driver))
                    }
                    ("GET", "/rim/NV_GPU_VBIOS_1010_0200_882_96005E0001") => {
                        ("200 OK", "application/json", rim_json(&vbios))
                    }
                    _ => ("404 Not Found", "text/plain", b"no".to_vec()),
                };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                resp.len()
            );
            let _ = s.write_all(&resp);
            h.lock().unwrap().push(Hit { method, path, body });
        }
    });
    (base, hits)
}

fn rim_json(xml: &[u8]) -> Vec<u8> {
    use base64ct::{Base64, Encoding};
    serde_json::json!({"id": "x", "rim": Base64::encode_string(xml)})
        .to_string()
        .into_bytes()
}

#[test]
fn fetch_collateral_from_a_local_server() {
    let (base, hits) = serve(false);
    let t = TempDir::new("gpu-fetch");
    let out = t.s("bundle");
    let ocsp = format!("{base}/ocsp");
    let rims = format!("{base}/rim/");
    let r = data("v2023_initial/attestationReport.txt");
    let c = data("v2023_initial/gpuAkCertChain.txt");
    let (stdout, _) = expect(
        &pqcc(&[
            "gpu",
            "fetch-collateral",
            "--out",
            &out,
            "--evidence",
            &r,
            "--cert-chain",
            &c,
            "--fetch-rims",
            "--ocsp-url",
            &ocsp,
            "--rim-service",
            &rims,
            "--json",
        ]),
        0,
    );
    let j: Value = serde_json::from_str(&stdout).unwrap();
    assert!(j["failures"].as_array().unwrap().is_empty(), "{j}");
    {
        let hits = hits.lock().unwrap();
        // Device chain: 3 certificates (not the leaf, not the root); the two RIMs:
        // their own "HCC RIM L4 Signer" certificates and the two CAs they share.
        let posts: Vec<&Hit> = hits.iter().filter(|h| h.method == "POST").collect();
        assert_eq!(
            posts.len(),
            7,
            "{:?}",
            hits.iter().map(|h| &h.path).collect::<Vec<_>>()
        );
        for p in posts {
            // An OCSPRequest: SEQUENCE { tbsRequest SEQUENCE { requestList … } }, SHA-384 CertID.
            assert_eq!(p.body[0], 0x30);
            let sha384_oid = [
                0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
            ];
            assert!(p.body.windows(11).any(|w| w == sha384_oid));
        }
        assert_eq!(hits.iter().filter(|h| h.method == "GET").count(), 2);
    }
    let dir = |s: &str| {
        let mut v: Vec<String> = std::fs::read_dir(t.path("bundle").join(s))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(dir("ocsp").len(), 7);
    assert_eq!(
        dir("rim"),
        vec![
            "NV_GPU_DRIVER_GH100_545.00.swidtag",
            "NV_GPU_VBIOS_1010_0200_882_96005E0001.swidtag"
        ]
    );
    assert_eq!(
        std::fs::read(t.path("bundle/rim/NV_GPU_DRIVER_GH100_545.00.swidtag")).unwrap(),
        std::fs::read(data("Driver_RIM_test_no_gpu.swidtag")).unwrap()
    );
    // Verification reads the bundle offline; these responses are shells, so the
    // revocation check fails and says why.
    let nonce = set_a_nonce();
    let d = t.s("bundle/rim/NV_GPU_DRIVER_GH100_545.00.swidtag");
    let v = t.s("bundle/rim/NV_GPU_VBIOS_1010_0200_882_96005E0001.swidtag");
    let mut args = verify_args(&nonce, &r, &c, &d, &v);
    args.extend(["--collateral", &out]);
    let (o, _) = expect(&pqcc(&args), 1);
    assert!(o.contains("PASS  measurements"), "{o}");
    assert!(
        o.contains("FAIL  revocation") && o.contains("ResponseData"),
        "{o}"
    );
}

#[test]
fn fetch_collateral_reports_server_errors() {
    let (base, _) = serve(true);
    let t = TempDir::new("gpu-fetch-err");
    let out = t.s("bundle");
    let ocsp = format!("{base}/ocsp");
    let c = data("v2023_initial/gpuAkCertChain.txt");
    let (stdout, err) = expect(
        &pqcc(&[
            "gpu",
            "fetch-collateral",
            "--out",
            &out,
            "--cert-chain",
            &c,
            "--ocsp-url",
            &ocsp,
        ]),
        2,
    );
    assert!(stdout.contains("FAILED  OCSP for"), "{stdout}");
    assert!(err.contains("3 download(s) failed"), "{err}");
    assert!(
        std::fs::read_dir(t.path("bundle/ocsp"))
            .unwrap()
            .next()
            .is_none()
    );
}
