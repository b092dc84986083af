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
/// Rows of the part-weight table (`WEIGHT_ROWS`): one per `log_blk` from 8 to 15, i.e.
/// parts of `THREADS * seg` virtual blocks with `seg` from 1 to 128.
pub const WEIGHT_ROWS: usize = 8;
/// The smallest `log_blk` (`WEIGHT_LB0`: log2 of [`THREADS`]).
pub const WEIGHT_LB0: u32 = THREADS.trailing_zeros();
/// Words of a device key context (`CTX_WORDS`): round keys, H^(2^k), H^i for i < THREADS,
/// and the part weights, [`WEIGHT_ROWS`] × [`FINAL_THREADS`] elements of GF(2^128).
pub const CTX_WORDS: usize =
    64 + 4 * 64 + 4 * THREADS as usize + 4 * WEIGHT_ROWS * FINAL_THREADS as usize;
/// Longest AAD the opener accepts.
pub const MAX_AAD: usize = 4096;
/// AAD up to this length (every channel frame header: `FRAME_HEADER_MAX_LEN` is 269)
/// travels inside the kernel's parameters (`INLINE_AAD` in the source).
pub const INLINE_AAD: usize = 272;
/// Most frames `gcm_open_tensor` (the resident kernel) takes in one launch
/// (`RESIDENT_FRAMES` in the source).
pub const RESIDENT_FRAMES: usize = 8;
const _: () = assert!(pqcc_core::wire::FRAME_HEADER_MAX_LEN <= INLINE_AAD);

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

/// Tuning of the kernel and of the work split (`pqcc bench gpu` exposes both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelConfig {
    /// Blocks of `gcm_open_main` that must fit on one SM at once: caps the registers
    /// per thread (`__launch_bounds__(THREADS, min_blocks)`); more blocks, more spills.
    pub min_blocks_per_sm: u32,
    /// Thread blocks one frame's grid aims for, per SM (the split makes each thread
    /// handle more blocks until the grid is about this many blocks per SM).
    pub blocks_per_sm: u32,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            min_blocks_per_sm: 2,
            blocks_per_sm: 1,
        }
    }
}

/// Compiles [`SOURCE`] to PTX for `compute_<major><minor>`.
pub fn compile_ptx(major: u32, minor: u32) -> Result<Ptx, GpuError> {
    compile_ptx_with(major, minor, &KernelConfig::default())
}

/// Compiles [`SOURCE`] to PTX for `compute_<major><minor>` with `cfg`.
pub fn compile_ptx_with(major: u32, minor: u32, cfg: &KernelConfig) -> Result<Ptx, GpuError> {
    nvrtc_available()?;
    if !(1..=8).contains(&cfg.min_blocks_per_sm) {
        return Err(GpuError::InvalidArgument(
            "min_blocks_per_sm must be 1 to 8",
        ));
    }
    // The same source and options give the same PTX: compile each (architecture,
    // launch bound) once per process, as every opener on a device (and every device of
    // the same kind) would otherwise spend NVRTC's seconds again.
    type Compiled = [((u32, u32, u32), Ptx)];
    type Cache = std::sync::Mutex<Vec<((u32, u32, u32), Ptx)>>;
    static COMPILED: Cache = std::sync::Mutex::new(Vec::new());
    let key = (major, minor, cfg.min_blocks_per_sm);
    let cached = |c: &Compiled| c.iter().find(|(k, _)| *k == key).map(|(_, p)| p.clone());
    if let Some(ptx) = cached(&COMPILED.lock().unwrap_or_else(|e| e.into_inner())) {
        return Ok(ptx);
    }
    let ptx = compile_uncached(major, minor, cfg)?;
    let mut compiled = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
    if cached(&compiled).is_none() {
        compiled.push((key, ptx.clone()));
    }
    Ok(ptx)
}

fn compile_uncached(major: u32, minor: u32, cfg: &KernelConfig) -> Result<Ptx, GpuError> {
    let opts = CompileOptions {
        options: vec![
            format!("--gpu-architecture=compute_{major}{minor}"),
            "--std=c++17".into(),
            format!("-DMIN_BLOCKS={}", cfg.min_blocks_per_sm),
        ],
        name: Some("aes_gcm.cu".into()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(SOURCE, opts).map_err(|e| GpuError::Compile(e.to_string()))
}
