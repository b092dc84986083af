//! `pqcc bench gpu` end to end on FakeCuda (`gpu/fake-cuda`), the fake CUDA driver that
//! stands in for a GPU: the real `pqcc` binary finds the fake as `libcuda.so` on its
//! `LD_LIBRARY_PATH`. This checks the benchmark's own logic (sealing, the alternation
//! of plain and sealed runs under every schedule, the byte checks after every
//! sealed run, the output formats), not any figure: the fake has no timing.
//! Needs libnvrtc on the library path, like the GPU tests; prints why and returns
//! without it.

mod common;
#[path = "../../gpu/tests/fake/mod.rs"]
mod fake;

use std::process::Command;

use common::{TempDir, pqcc};

/// `LD_LIBRARY_PATH` with a directory whose `libcuda.so` is FakeCuda first.
fn with_fake(dir: &TempDir) -> String {
    let lib = fake::build();
    let link = dir.path().join("libcuda.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&lib, &link).unwrap();
    match std::env::var("LD_LIBRARY_PATH") {
        Ok(p) if !p.is_empty() => format!("{}:{p}", dir.path().display()),
        _ => dir.path().display().to_string(),
    }
}

/// `pqcc bench gpu ARGS` on FakeCuda (opted in) with `env` set: (stdout, stderr), after
/// checking that it succeeded.
fn bench_on_fake(ld: &str, args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let mut cmd = pqcc();
    cmd.args(["bench", "gpu"])
        .args(args)
        .env("LD_LIBRARY_PATH", ld)
        .env("PQCC_INSECURE_FAKE_CUDA", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "pqcc bench gpu {args:?} {env:?} failed: {stderr}"
    );
    (stdout, stderr)
}

/// `pqcc bench gpu ARGS` (with `ld` as the library path, if any, and the fake opted in
/// or not) must exit 2 and say `why` on stderr.
fn bench_refused(ld: Option<&str>, opt_in: bool, args: &[&str], why: &str) {
    let mut cmd = pqcc();
    cmd.args(["bench", "gpu"]).args(args);
    if let Some(ld) = ld {
        cmd.env("LD_LIBRARY_PATH", ld);
    }
    if opt_in {
        cmd.env("PQCC_INSECURE_FAKE_CUDA", "1");
    } else {
        cmd.env_remove("PQCC_INSECURE_FAKE_CUDA");
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(why), "{args:?}: {stderr}");
}

#[test]
fn bench_gpu_runs_every_schedule_on_the_fake_device() {
    if let Err(e) = pqcc_gpu::kernel::nvrtc_available() {
        println!("[gpu-bench] skipped: {e}");
        return;
    }
    let dir = TempDir::new("fake-cuda");
    let ld = with_fake(&dir);
    // Without the opt-in the fake is refused: it is no GPU.
    bench_refused(
        Some(&ld),
        false,
        &["--sizes", "1M", "--runs", "1"],
        "the CUDA driver is a test fake",
    );
    let (stdout, stderr) = bench_on_fake(
        &ld,
        &[
            "--sizes",
            "1M,3M",
            "--runs",
            "2",
            "--json",
            "--batch-bytes",
            "2M",
        ],
        &[],
    );
    assert!(
        stderr.contains("WARNING: the device is FakeCuda, a test fake")
            && stderr.contains("device->host round trip (16 bytes, one wait)"),
        "{stderr}"
    );
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    // Default chunk: size / 8, at least 256 KiB.
    for (row, (size, chunk)) in rows
        .iter()
        .zip([(1u64 << 20, 256u64 << 10), (3 << 20, 384 << 10)])
    {
        assert_eq!(row["bench"], "gpu");
        assert_eq!(row["size"], size);
        assert_eq!(row["chunk"], chunk);
        assert!(row["device"].as_str().unwrap().starts_with("FakeCuda"));
        for k in [
            "plain_gbps",
            "sealed_gbps",
            "sealed_kept_gbps",
            "kernel_gbps",
            "ratio",
            "ratio_kept",
            "sealed_resident_gbps",
            "ratio_resident",
            "kernel_resident_gbps",
            "batch_plain_gbps",
            "batch_resident_gbps",
            "ratio_batch",
            "readback_s_p50",
        ] {
            assert!(row[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {row}");
        }
        // 2 MiB of batch: two tensors of either size (at least 2).
        assert_eq!(row["batch_tensors"], 2, "{row}");
        assert_eq!(row["batch_depth"], 3, "the default depth: {row}");
    }
    // The batch depth is 1 to 4.
    for bad in ["0", "5", "x"] {
        bench_refused(
            Some(&ld),
            true,
            &["--batch-depth", bad],
            "expected a number from 1 to 4",
        );
    }
    // The table names every schedule.
    let (table, _) = bench_on_fake(
        &ld,
        &["--sizes", "1M", "--runs", "1", "--batch-bytes", "3M"],
        &[],
    );
    assert!(
        table.contains("sealed GB/s")
            && table.contains("kept GB/s")
            && table.contains("resident GB/s")
            && table.contains("res. kern GB/s")
            && table.contains(" 3x "),
        "{table}"
    );
    println!("[gpu-bench] on FakeCuda:\n{table}");

    // Frames laid out with their ciphertext 4 KiB-aligned, in chunks that are not a
    // multiple of 16: every sealed run still opens the right bytes (the bench checks).
    let (stdout, _) = bench_on_fake(
        &ld,
        &[
            "--sizes",
            "1M",
            "--chunk",
            "200000",
            "--align",
            "4K",
            "--runs",
            "1",
            "--json",
            "--batch-bytes",
            "2M",
        ],
        &[],
    );
    let row: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(row["align"], 4096, "{row}");
    for k in ["ratio", "ratio_kept", "ratio_resident", "ratio_batch"] {
        assert!(row[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {row}");
    }

    // A driver without stream memory operations, and one whose flag write is lost (the
    // second: the first is the trial write): the resident and batch columns stay empty,
    // the rest is measured.
    for (var, value, why) in [
        (
            "PQCC_FAKE_CUDA_NO_STREAM_MEMOPS",
            "1",
            "cuStreamWriteValue32",
        ),
        ("PQCC_FAKE_CUDA_LOSE_FLAG_WRITES", "2", "did not reach VRAM"),
    ] {
        let (stdout, stderr) = bench_on_fake(
            &ld,
            &[
                "--sizes",
                "1M",
                "--runs",
                "1",
                "--json",
                "--batch-bytes",
                "2M",
            ],
            &[(var, value)],
        );
        assert!(
            stderr.contains("the resident schedule failed here") && stderr.contains(why),
            "{var}: {stderr}"
        );
        let row: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        for k in [
            "sealed_resident_gbps",
            "kernel_resident_gbps",
            "ratio_batch",
        ] {
            assert!(row[k].is_null(), "{var}: {k}: {row}");
        }
        for k in ["ratio", "ratio_kept", "kernel_gbps"] {
            assert!(
                row[k].as_f64().is_some_and(|x| x > 0.0),
                "{var}: {k}: {row}"
            );
        }
    }
}

#[test]
fn bench_gpu_without_a_driver_exits_2_and_says_why() {
    if Command::new("sh")
        .args(["-c", "ldconfig -p | grep -q 'libcuda.so'"])
        .status()
        .is_ok_and(|s| s.success())
    {
        println!("[gpu-bench] a CUDA driver is installed: the no-driver case is not checked");
        return;
    }
    bench_refused(
        None,
        false,
        &["--sizes", "1M", "--runs", "1"],
        "needs a CUDA GPU",
    );
}

/// `pqcc bench sealed --gpu` on FakeCuda: the sealed model loaded into VRAM beside the
/// plain load, the bytes checked after every sealed run, one row each (no figure means
/// anything on the fake).
#[test]
fn bench_sealed_gpu_loads_into_vram_on_the_fake_device() {
    if let Err(e) = pqcc_gpu::kernel::nvrtc_available() {
        println!("[gpu-bench] skipped: {e}");
        return;
    }
    let dir = TempDir::new("fake-cuda-sealed");
    let ld = with_fake(&dir);
    let work = TempDir::new("bench-sealed-gpu");
    let out = pqcc()
        .args([
            "bench",
            "sealed",
            "--gpu",
            "--size",
            "3M",
            "--frame-size",
            "256K",
            "--runs",
            "2",
            "--json",
        ])
        .arg("--dir")
        .arg(work.path())
        .env("LD_LIBRARY_PATH", &ld)
        .env("PQCC_INSECURE_FAKE_CUDA", "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("WARNING: the device is FakeCuda"),
        "{stderr}"
    );
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sealed = rows
        .iter()
        .find(|r| r["op"] == "vram-sealed")
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(rows.iter().any(|r| r["op"] == "vram-plain"), "{stdout}");
    assert!(sealed["ratio_to_raw_best"].as_f64().unwrap() > 0.0);
}
