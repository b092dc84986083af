//! The AES-256-GCM kernel: CUDA C source compiled at run time by NVRTC.
//!
//! The source is `src/kernel/aes_gcm.cu` (its header comment describes the algorithm).
//! NVRTC turns it into PTX for the device's compute capability; the driver JIT-compiles
//! the PTX when the module loads. NVRTC needs no GPU, so [`compile_ptx`] also runs on a
//! CPU-only machine with `libnvrtc` on the library path (`scripts/test.sh` fetches it).

use cudarc::nvrtc::{CompileOptions, Ptx};

use crate::GpuError;

/// The CUDA C source of the kernels.
pub const SOURCE: &str = include_str!("kernel/aes_gcm.cu");

/// Threads per block of `gcm_open_main` (`THREADS` in the source).
pub const THREADS: u32 = 256;
/// Threads of `gcm_open_final`, the most partials one frame may produce.
pub const FINAL_THREADS: u32 = 1024;
/// Words of a device key context (`CTX_WORDS`): round keys and H^(2^k).
pub const CTX_WORDS: usize = 64 + 4 * 64;
/// Longest AAD (frame header) the opener stages per frame.
pub const MAX_AAD: usize = 4096;

/// Whether NVRTC can be loaded; `Err` says why not.
pub fn nvrtc_available() -> Result<(), GpuError> {
    // SAFETY: `is_culib_present` only tries to dlopen the library by its known names.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(GpuError::Unavailable(
            "libnvrtc not found on the library path (LD_LIBRARY_PATH)".into(),
        ))
    }
}

/// Compiles [`SOURCE`] to PTX for `compute_<major><minor>`.
pub fn compile_ptx(major: u32, minor: u32) -> Result<Ptx, GpuError> {
    nvrtc_available()?;
    let opts = CompileOptions {
        options: vec![
            format!("--gpu-architecture=compute_{major}{minor}"),
            "--std=c++17".into(),
        ],
        name: Some("aes_gcm.cu".into()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(SOURCE, opts).map_err(|e| GpuError::Compile(e.to_string()))
}
