//! Builds FakeCuda (`gpu/fake-cuda`), the fake CUDA driver the tests use in place of a
//! GPU. Shared by `gpu/tests/fake_gpu.rs` and `tests/tests/gpu_bench.rs`.

use std::path::PathBuf;
use std::process::Command;

/// The workspace manifest, found from this crate's or the tests crate's directory.
fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml")
}

/// Builds the fake (cargo) and returns the path of its shared library.
pub fn build() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "-p", "pqcc-fake-cuda", "--message-format=json"])
        .arg("--manifest-path")
        .arg(manifest())
        .output()
        .expect("running cargo build -p pqcc-fake-cuda");
    assert!(
        out.status.success(),
        "building FakeCuda failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact"
            && v["target"]["name"] == "pqcc_fake_cuda"
            && let Some(f) = v["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".so"))
        {
            return PathBuf::from(f);
        }
    }
    panic!("cargo build -p pqcc-fake-cuda named no shared library");
}
