//! `pqcc bench gpu-verify`: a full offline verification of NVIDIA GPU evidence (Set A
//! of `../shared/data/nvidia-gpu`: the 2023 H100 sample report and chain, the test
//! driver and VBIOS RIMs) with [`pqcc_verify::nvidia::verify`], against NVIDIA's own
//! verifier (nv-local-gpu-verifier 2.7.3, Python) on the same files in the same run.
//!
//! pqcc's timing covers everything `verify` does from bytes already in memory:
//! parsing the SPDM exchange and the five certificates, the nonce, the report
//! signature, the device chain to the pinned root, both RIMs (XML parsing, C14N 1.1,
//! SHA-384 digest, ECDSA signature, embedded chain to the pinned RIM root), versions
//! and golden measurements. Revocation is skipped by policy (`InsecureSkip`).
//!
//! A second pqcc figure ("warm") reuses one [`nvidia::GpuVerifier`], as a broker
//! verifying many GPUs does: signatures of the shared CA certificates and whole RIM
//! verifications are remembered; the report signature and the device-specific leaf
//! and BROM certificates are verified every time. The baseline has no such mode.
//!
//! The baseline (`host-tools/bench/nv_gpu_verifier_baseline.py`) times NVIDIA's
//! `cc_admin.attest()` in process on the same files, with its OCSP calls stubbed to
//! "good" and the RIMs given as files, i.e. its network calls stubbed the way pqcc
//! skips revocation. Both judge certificates at the same pinned time.
//!
//! pqcc's ECDSA backend is AWS-LC when pqcc-tools is built with its default
//! `aws-lc-gpu` feature, RustCrypto's `p384` (as in the guest) with
//! `--no-default-features`; the output names it.
//!
//! Python: `--python`, else `target/nv-verifier-venv/bin/python` when it exists, else
//! `python3`. Make the venv with
//! `python3 -m venv target/nv-verifier-venv && target/nv-verifier-venv/bin/pip install nv-local-gpu-verifier==2.7.3`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use pqcc_verify::nvidia::{self, GpuEvidence, GpuPolicy, RevocationPolicy, Rim};
use serde_json::{Value, json};

use super::{Stats, thread_cpu_time};

/// Inside every Set A certificate's validity.
pub const SET_A_TIME: u64 = 1_690_000_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Directory holding Set A.
    pub data: PathBuf,
    /// Timed verifications per side.
    pub iterations: usize,
    /// Python for the baseline (`None`: the default, see the module docs).
    pub python: Option<PathBuf>,
    /// The baseline script.
    pub script: PathBuf,
    /// Whether to run the baseline.
    pub baseline: bool,
    /// One JSON object instead of text.
    pub json: bool,
}

impl Options {
    /// `../shared/data/nvidia-gpu` next to the repository.
    pub fn default_data() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/nvidia-gpu")
    }
    /// The baseline script shipped in this repository.
    pub fn default_script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/nv_gpu_verifier_baseline.py")
    }
}

fn default_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/nv-verifier-venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

const REPORT: &str = "v2023_initial/attestationReport.txt";
const CHAIN: &str = "v2023_initial/gpuAkCertChain.txt";
const DRIVER_RIM: &str = "Driver_RIM_test_no_gpu.swidtag";
const VBIOS_RIM: &str = "1010_0200_882_96005E0001_test_no_gpu.swidtag";

/// Runs the benchmark and prints the figures.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    if opts.iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    let read = |n: &str| {
        let p = opts.data.join(n);
        std::fs::read(&p).with_context(|| format!("read {}", p.display()))
    };
    let report = GpuEvidence::report_from_hex(&read(REPORT)?)?;
    let evidence = GpuEvidence::from_report_and_pem(&report, &read(CHAIN)?)?;
    let nonce: [u8; 32] = evidence
        .request
        .get(4..36)
        .and_then(|n| n.try_into().ok())
        .context("request too short")?;
    let rims = vec![
        Rim {
            source: DRIVER_RIM.into(),
            bytes: read(DRIVER_RIM)?,
        },
        Rim {
            source: VBIOS_RIM.into(),
            bytes: read(VBIOS_RIM)?,
        },
    ];
    let policy = GpuPolicy {
        revocation: RevocationPolicy::InsecureSkip,
        ..GpuPolicy::default()
    };
    let once = || nvidia::verify(&evidence, &rims, &policy, &nonce, SET_A_TIME, None);
    let first = once();
    if !first.all_passed() {
        bail!("Set A does not verify:\n{first}");
    }
    eprintln!("pqcc: {} verifications …", opts.iterations);
    for _ in 0..(opts.iterations / 10).clamp(2, 10) {
        std::hint::black_box(once());
    }
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..opts.iterations {
        let c = thread_cpu_time();
        let t = Instant::now();
        let r = std::hint::black_box(once());
        wall.push(t.elapsed().as_secs_f64() * 1e3);
        if let (Some(c0), Some(c1)) = (c, thread_cpu_time()) {
            cpu.push((c1 - c0).as_secs_f64() * 1e3);
        }
        if !r.all_passed() {
            bail!("verification failed during the benchmark");
        }
    }
    let ours_wall = Stats::of(&mut wall);
    let ours_cpu = Stats::of(&mut cpu);

    // Warm: one GpuVerifier reused, as a broker verifying many GPUs would (CA
    // certificates above the device-specific ones and RIM verifications cached; the
    // report signature, leaf and BROM certificates are verified every time).
    let mut verifier = nvidia::GpuVerifier::new();
    let (mut wall_w, mut cpu_w) = (Vec::new(), Vec::new());
    for i in 0..opts.iterations + 2 {
        let c = thread_cpu_time();
        let t = Instant::now();
        let r = std::hint::black_box(
            verifier.verify(&evidence, &rims, &policy, &nonce, SET_A_TIME, None),
        );
        if i >= 2 {
            wall_w.push(t.elapsed().as_secs_f64() * 1e3);
            if let (Some(c0), Some(c1)) = (c, thread_cpu_time()) {
                cpu_w.push((c1 - c0).as_secs_f64() * 1e3);
            }
        }
        if !r.all_passed() {
            bail!("verification failed during the benchmark");
        }
    }
    let warm_wall = Stats::of(&mut wall_w);
    let warm_cpu = Stats::of(&mut cpu_w);

    let mut base: Option<(Stats, Stats, Value)> = None;
    let mut base_err = None;
    if opts.baseline {
        let python = opts.python.clone().unwrap_or_else(default_python);
        eprintln!("baseline: {} {} …", python.display(), opts.script.display());
        match run_baseline(&python, opts, &hex::encode(nonce)) {
            Ok(v) => {
                let nums = |k: &str| -> Vec<f64> {
                    v[k].as_array()
                        .map(|a| a.iter().filter_map(Value::as_f64).collect())
                        .unwrap_or_default()
                };
                let (mut w, mut c) = (nums("wall_ms"), nums("cpu_ms"));
                base = Some((Stats::of(&mut w), Stats::of(&mut c), v));
            }
            Err(e) => base_err = Some(e),
        }
    }
    let ratio = |b: &Stats, o: &Stats| if o.p50 > 0.0 { b.p50 / o.p50 } else { 0.0 };
    if opts.json {
        let stats = |s: &Stats| json!({"n": s.n, "mean": s.mean, "p50": s.p50, "p90": s.p90, "min": s.min, "max": s.max});
        let mut out = json!({
            "bench": "gpu-verify",
            "ecdsa_backend": nvidia::x509::ECDSA_BACKEND,
            "data": "Set A (v2023_initial + test_no_gpu RIMs)",
            "at": SET_A_TIME,
            "pqcc": {"wall_ms": stats(&ours_wall), "cpu_ms": stats(&ours_cpu)},
            "pqcc_warm": {"wall_ms": stats(&warm_wall), "cpu_ms": stats(&warm_cpu)},
        });
        if let Some((w, c, v)) = &base {
            out["baseline"] = json!({
                "verifier": v["verifier"], "python": v["python"],
                "wall_ms": stats(w), "cpu_ms": stats(c),
            });
            out["speedup_wall_p50"] = json!(ratio(w, &ours_wall));
            out["speedup_cpu_p50"] = json!(ratio(c, &ours_cpu));
            out["speedup_warm_wall_p50"] = json!(ratio(w, &warm_wall));
            out["speedup_warm_cpu_p50"] = json!(ratio(c, &warm_cpu));
        }
        if let Some(e) = &base_err {
            out["baseline_error"] = json!(e);
        }
        println!("{out}");
    } else {
        println!(
            "gpu-verify: full offline verification of Set A at {SET_A_TIME} (revocation skipped on both sides)"
        );
        println!(
            "  pqcc ECDSA P-384 backend: {}",
            nvidia::x509::ECDSA_BACKEND
        );
        println!(
            "  pqcc      wall p50 {:8.3} ms (p90 {:.3}, min {:.3})   cpu p50 {:8.3} ms   n={}",
            ours_wall.p50, ours_wall.p90, ours_wall.min, ours_cpu.p50, ours_wall.n
        );
        println!(
            "  pqcc warm wall p50 {:8.3} ms (p90 {:.3}, min {:.3})   cpu p50 {:8.3} ms   n={}  (GpuVerifier reused)",
            warm_wall.p50, warm_wall.p90, warm_wall.min, warm_cpu.p50, warm_wall.n
        );
        if let Some((w, c, v)) = &base {
            println!(
                "  {} (Python {})",
                v["verifier"].as_str().unwrap_or("?"),
                v["python"].as_str().unwrap_or("?")
            );
            println!(
                "  baseline  wall p50 {:8.3} ms (p90 {:.3}, min {:.3})   cpu p50 {:8.3} ms   n={}",
                w.p50, w.p90, w.min, c.p50, w.n
            );
            println!(
                "  speed-up  {:.1}x wall, {:.1}x cpu (p50 ratio, every signature checked)",
                ratio(w, &ours_wall),
                ratio(c, &ours_cpu)
            );
            println!(
                "  speed-up  {:.1}x wall, {:.1}x cpu (p50 ratio, warm GpuVerifier)",
                ratio(w, &warm_wall),
                ratio(c, &warm_cpu)
            );
        }
        if let Some(e) = &base_err {
            println!("  baseline not run: {e}");
        }
    }
    Ok(())
}

fn run_baseline(python: &Path, opts: &Options, nonce: &str) -> Result<Value, String> {
    // NVIDIA's verifier writes `verifier.log` into its working directory: run it in
    // the temporary directory, with absolute paths.
    // `absolute`, not `canonicalize`: a venv's python is a symlink that must stay one.
    let abs = |p: &Path| std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()));
    let data = abs(&opts.data)?;
    let script = abs(&opts.script)?;
    let d = |n: &str| data.join(n);
    let python = if python.components().count() > 1 {
        abs(python)?
    } else {
        python.to_path_buf()
    };
    let out = Command::new(&python)
        .current_dir(std::env::temp_dir())
        .arg(&script)
        .arg("--report")
        .arg(d(REPORT))
        .arg("--chain")
        .arg(d(CHAIN))
        .arg("--driver-rim")
        .arg(d(DRIVER_RIM))
        .arg("--vbios-rim")
        .arg(d(VBIOS_RIM))
        .arg("--nonce")
        .arg(nonce)
        .arg("--at")
        .arg(SET_A_TIME.to_string())
        .arg("--runs")
        .arg(opts.iterations.min(200).to_string())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} exited with {}: {} {}",
            opts.script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("baseline printed bad JSON: {e}"))
}
