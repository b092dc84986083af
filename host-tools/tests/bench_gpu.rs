//! `pqcc bench gpu`: refuses with exit 2 and the reason where no CUDA GPU is usable; with
//! one, a 1 MiB run completes (the benchmark checks the opened bytes itself).

use std::process::Command;

#[test]
fn bench_gpu_runs_or_says_why_not() {
    let out = Command::new(env!("CARGO_BIN_EXE_pqcc"))
        .args(["bench", "gpu", "--sizes", "1M", "--runs", "1", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    match pqcc_gpu::cuda::cuda_available() {
        Err(why) => {
            println!("[bench gpu] no GPU here ({why}): checking the refusal");
            assert_eq!(out.status.code(), Some(2), "{stderr}");
            assert!(stderr.contains("needs a CUDA GPU"), "{stderr}");
        }
        Ok(()) => {
            assert_eq!(out.status.code(), Some(0), "{stderr}");
            let line = String::from_utf8_lossy(&out.stdout);
            let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
            assert_eq!(v["size"], 1 << 20);
            assert!(v["ratio"].as_f64().unwrap() > 0.0);
        }
    }
}
