//! The kernel compiles with NVRTC, which needs no GPU: runs wherever libnvrtc is on the
//! library path (`scripts/test.sh` fetches it), skips with the reason otherwise.

use pqcc_gpu::kernel;

#[test]
fn kernel_compiles_to_ptx_with_nvrtc() {
    if let Err(e) = kernel::nvrtc_available() {
        println!("[nvrtc] skipped: {e}");
        return;
    }
    for (major, minor) in [(9, 0), (8, 0)] {
        let ptx = kernel::compile_ptx(major, minor).unwrap_or_else(|e| panic!("{e}"));
        let src = ptx.to_src();
        for entry in [
            "gcm_setup",
            "gcm_open_main",
            "gcm_open_final",
            "gcm_open_tensor",
        ] {
            assert!(
                src.contains(&format!(".entry {entry}")),
                "{entry} missing from the PTX"
            );
        }
        assert!(
            src.contains(&format!(".target sm_{major}{minor}")),
            "wrong target"
        );
        // The replicated T-table must stay in shared memory, not spill to local memory.
        println!(
            "[nvrtc] compute_{major}{minor}: {} bytes of PTX, 4 kernels",
            src.len()
        );
    }
}
