//! The CUDA backend and the GPU opener.
//!
//! cudarc loads `libcuda` and `libnvrtc` at run time, so this module builds everywhere;
//! [`cuda_available`] says whether it can run here and why not. Every call that reaches
//! the driver goes through a [`CudaBackend`], which is only constructed after that check.
//!
//! Synchronisation is explicit: cudarc's per-buffer event tracking is switched off
//! (it would serialise the streams on the shared destination buffer), every allocation
//! is made on stream 0 and completed before other streams use it, each stream only
//! touches its own scratch buffers and disjoint parts of the destination, and the work
//! of a call has ended before anything is freed or reported: every stream synchronised,
//! or, for the resident kernel, its event, since that kernel ends only after it saw the
//! flag each copy's stream writes after the copy (after an error, every stream,
//! the kernel's included).

use std::{collections::HashMap, sync::Arc};

use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr,
    LaunchConfig, PushKernelArg, result, sys,
};
use pqcc_core::{
    aead::{RustCryptoAesGcm, TAG_LEN},
    channel::{DEFAULT_WINDOW_WORDS, Limits, Opener},
    secret::Secret,
};
use zeroize::Zeroize;

use crate::{
    Backend, BatchError, BufferHandle, DeviceInfo, GpuError,
    kernel::{
        self, CTX_WORDS, FINAL_THREADS, INLINE_AAD, KernelConfig, MAX_AAD, RESIDENT_FRAMES, THREADS,
    },
    plan::{Planner, TensorPlan, commit_all, plan_tensor},
};

fn drv(e: result::DriverError) -> GpuError {
    GpuError::Driver(e.to_string())
}

/// Whether a CUDA driver, at least one device and NVRTC are present; `Err` says which
/// is missing. Call this before [`CudaBackend::new`] in code that should degrade to the
/// CPU fallback (tests print the reason and skip).
pub fn cuda_available() -> Result<(), GpuError> {
    // SAFETY: `is_culib_present` only tries to dlopen libcuda by its known names.
    if !unsafe { sys::is_culib_present() } {
        return Err(GpuError::Unavailable(
            "libcuda (the NVIDIA driver) not found".into(),
        ));
    }
    match CudaContext::device_count() {
        Ok(n) if n > 0 => {}
        Ok(_) => return Err(GpuError::Unavailable("no CUDA device".into())),
        Err(e) => return Err(GpuError::Unavailable(format!("cuInit/device count: {e}"))),
    }
    kernel::nvrtc_available()
}

/// The device name FakeCuda (`gpu/fake-cuda`, a fake driver for tests) reports.
pub const FAKE_DEVICE_PREFIX: &str = "FakeCuda";

static INSECURE_FAKE_DRIVER: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Lets [`CudaBackend`] run on FakeCuda, the fake CUDA driver of pqcc's tests, in this
/// process. Its "VRAM" is host memory, so nothing it opens is protected: tests only.
/// The `pqcc` binary allows it with the environment variable
/// `PQCC_INSECURE_FAKE_CUDA=1`. Without either, a backend on FakeCuda is refused.
pub fn insecure_allow_fake_driver() {
    INSECURE_FAKE_DRIVER.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn fake_driver_allowed() -> bool {
    INSECURE_FAKE_DRIVER.load(std::sync::atomic::Ordering::Relaxed)
        || std::env::var_os("PQCC_INSECURE_FAKE_CUDA").is_some_and(|v| v == "1")
}

/// The file name NVML is loaded by ([`CcState::detect`]).
pub const NVML_LIBRARY: &str = "libnvidia-ml.so.1";

/// The GPUs' confidential-computing (CC) mode, as NVML reports it
/// (`nvmlSystemGetConfComputeState`, one state for the whole system: NVIDIA supports CC
/// only with every GPU of the machine in CC mode). docs/gpu.md, "Confidential-computing
/// mode", says what the mode changes and where that is from.
///
/// With CC on, the GPU cannot reach the confidential VM's memory: the driver refuses to
/// register host memory (`cuMemHostRegister`), serves page-locked allocations
/// (`cuMemHostAlloc`) from the guest's private memory and moves every copy between host
/// memory and VRAM through encrypted bounce buffers, and host memory the GPU would read
/// or write directly (mapped memory, flags or verdicts written by the GPU) is not
/// available. [`CudaBackend`] detects the state when it is created
/// ([`CudaBackend::cc_state`]); the opener runs only the schedules the state allows
/// ([`CcState::allows`]). An unknown state is treated as on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CcState {
    /// `ccFeature` 0: CC off.
    Off,
    /// `ccFeature` 1: CC on.
    On {
        /// `devToolsMode` 1: CC on in the developer-tools mode (same data path).
        dev_tools: bool,
        /// NVML's `environment`: 0 unavailable, 1 simulation, 2 production.
        environment: u32,
    },
    /// NVML could not be loaded, failed, or answered something it does not define (the
    /// text says which): treated as on, so that nothing relies on what CC mode refuses.
    Unknown(String),
}

/// `nvmlConfComputeSystemState_t` (nvml.h).
#[repr(C)]
#[derive(Debug, Default)]
struct NvmlCcSystemState {
    environment: std::ffi::c_uint,
    cc_feature: std::ffi::c_uint,
    dev_tools_mode: std::ffi::c_uint,
}

/// NVML's name for a return code (the ones its CC calls are documented to return).
fn nvml_error(r: std::ffi::c_int) -> String {
    let name = match r {
        1 => "NVML_ERROR_UNINITIALIZED",
        2 => "NVML_ERROR_INVALID_ARGUMENT",
        3 => "NVML_ERROR_NOT_SUPPORTED",
        9 => "NVML_ERROR_DRIVER_NOT_LOADED",
        12 => "NVML_ERROR_LIBRARY_NOT_FOUND",
        13 => "NVML_ERROR_FUNCTION_NOT_FOUND",
        999 => "NVML_ERROR_UNKNOWN",
        _ => "an NVML error",
    };
    format!("{name} ({r})")
}

/// Asks the NVML in `lib` for the CC state: `nvmlInit_v2`,
/// `nvmlSystemGetConfComputeState`, `nvmlShutdown`. Anything but a defined answer is
/// [`CcState::Unknown`].
fn query_nvml(lib: &libloading::Library) -> CcState {
    type Call = unsafe extern "C" fn() -> std::ffi::c_int;
    type GetState = unsafe extern "C" fn(*mut NvmlCcSystemState) -> std::ffi::c_int;
    // SAFETY: the symbols have these signatures in nvml.h (and in FakeCuda).
    let (init, shutdown, get) = match unsafe {
        (
            lib.get::<Call>(b"nvmlInit_v2\0"),
            lib.get::<Call>(b"nvmlShutdown\0"),
            lib.get::<GetState>(b"nvmlSystemGetConfComputeState\0"),
        )
    } {
        (Ok(i), Ok(s), Ok(g)) => (i, s, g),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return CcState::Unknown(format!(
                "NVML lacks a function of the CC state query (a driver before R535?): {e}"
            ));
        }
    };
    // SAFETY: nvmlInit_v2 takes no arguments; NVML counts its initialisations.
    let r = unsafe { init() };
    if r != 0 {
        return CcState::Unknown(format!("nvmlInit_v2 failed: {}", nvml_error(r)));
    }
    let mut st = NvmlCcSystemState::default();
    // SAFETY: `st` is a writable nvmlConfComputeSystemState_t; NVML is initialised.
    let r = unsafe { get(&raw mut st) };
    // SAFETY: balances the successful nvmlInit_v2 above.
    unsafe { shutdown() };
    if r != 0 {
        return CcState::Unknown(format!(
            "nvmlSystemGetConfComputeState failed: {}",
            nvml_error(r)
        ));
    }
    match st.cc_feature {
        0 => CcState::Off,
        1 => CcState::On {
            dev_tools: st.dev_tools_mode != 0,
            environment: st.environment,
        },
        v => CcState::Unknown(format!(
            "nvmlSystemGetConfComputeState reported ccFeature {v}, which NVML does not define"
        )),
    }
}

impl CcState {
    /// Asks NVML ([`NVML_LIBRARY`], loaded at run time; the process's NVML
    /// initialisation is balanced before this returns). No NVML, or an error:
    /// [`CcState::Unknown`].
    pub fn detect() -> Self {
        Self::from_nvml_library(NVML_LIBRARY)
    }

    /// [`CcState::detect`] with NVML loaded from `library`: a file name the dynamic
    /// loader searches for, or a path.
    pub fn from_nvml_library(library: impl AsRef<std::ffi::OsStr>) -> Self {
        let library = library.as_ref();
        // SAFETY: loading NVML runs its initialisers, as any user of the driver does; the
        // library is only used through the calls of `query_nvml`, and dropped after.
        match unsafe { libloading::Library::new(library) } {
            Ok(lib) => query_nvml(&lib),
            Err(e) => CcState::Unknown(format!("NVML ({}) not loaded: {e}", library.display())),
        }
    }

    /// Whether CC mode is known to be off.
    pub fn is_off(&self) -> bool {
        *self == CcState::Off
    }

    /// Whether [`GpuOpener`] runs `schedule` in this state; `Err`
    /// ([`GpuError::Unavailable`]) says why not. With CC off, every schedule. With CC on
    /// or unknown: never one that needs the GPU to reach host memory directly or host
    /// memory registered (CC mode refuses both; none of the current schedules does), and
    /// one that needs stream memory operations (`Resident`) only when `unverified` is set
    /// ([`GpuOpener::allow_unverified_in_cc_mode`]): NVIDIA does not document them for CC
    /// mode and they have not been run on a CC-on GPU here. `PerTensor` and `Persistent`,
    /// the default, need nothing beyond what CC mode documents as working.
    pub fn allows(&self, schedule: OpenSchedule, unverified: bool) -> Result<(), GpuError> {
        let state = match self {
            CcState::Off => return Ok(()),
            CcState::On { .. } => "confidential-computing mode is on".to_string(),
            CcState::Unknown(why) => format!(
                "the confidential-computing state is unknown ({why}), so it is treated as on"
            ),
        };
        let n = schedule.needs();
        if n.gpu_access_to_host_memory || n.host_memory_registration {
            return Err(GpuError::Unavailable(format!(
                "the {schedule:?} schedule needs the GPU to reach host memory directly, which \
                 a GPU in confidential-computing mode cannot: {state}"
            )));
        }
        if n.stream_memory_operations && !unverified {
            return Err(GpuError::Unavailable(format!(
                "the {schedule:?} schedule is not used in confidential-computing mode: {state}; \
                 it needs stream memory operations (cuStreamWriteValue32) beside the encrypted \
                 copies, which NVIDIA does not document for CC mode and which have not run on a \
                 CC-on GPU here (GpuOpener::allow_unverified_in_cc_mode tries it anyway)"
            )));
        }
        Ok(())
    }
}

/// Page-locked host memory: the source of asynchronous host→device copies. Zeroized
/// before it is freed.
pub struct PinnedBuffer {
    ptr: *mut u8,
    len: usize,
    ctx: Arc<CudaContext>,
}

impl std::fmt::Debug for PinnedBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedBuffer")
            .field("len", &self.len)
            .finish()
    }
}

impl PinnedBuffer {
    fn new(ctx: &Arc<CudaContext>, len: usize) -> Result<Self, GpuError> {
        ctx.bind_to_thread().map_err(drv)?;
        let len = len.max(1);
        // SAFETY: plain page-locked allocation (flags 0: cached, not write-combined);
        // the pointer is checked for null and owned by the returned value.
        let ptr = unsafe { result::malloc_host(len, 0) }
            .map_err(drv)?
            .cast::<u8>();
        if ptr.is_null() {
            return Err(GpuError::Driver("cuMemHostAlloc returned null".into()));
        }
        // SAFETY: `ptr` points to `len` writable bytes that nothing else references.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        Ok(Self {
            ptr,
            len,
            ctx: ctx.clone(),
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty (never: allocations are at least one byte).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes. Do not call while a copy from this buffer is in flight (the owner's
    /// methods synchronise before they return).
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is a live allocation of `len` bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The bytes, writable (same rule as [`PinnedBuffer::as_slice`]).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        self.as_mut_slice().zeroize();
        let _ = self.ctx.bind_to_thread();
        // SAFETY: `ptr` came from `malloc_host` and is freed exactly once, here.
        let _ = unsafe { result::free_host(self.ptr.cast()) };
    }
}

/// Queues on `s` the write of `value` to the u32 at device address `addr`, after
/// everything queued on `s` before it (with the memory barrier that makes the preceding
/// copies visible first).
fn write_flag(s: &CudaStream, addr: u64, value: u32) -> Result<(), GpuError> {
    let flags = sys::CUstreamWriteValue_flags::CU_STREAM_WRITE_VALUE_DEFAULT as u32;
    // SAFETY: `addr` is a u32 in a live device allocation (the opener's `arrived` words).
    unsafe { sys::cuStreamWriteValue32_v2(s.cu_stream(), addr, value, flags) }
        .result()
        .map_err(drv)
}

/// Per-frame parameters of the kernels (`struct frame_params` in the source).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct FrameParams {
    iv: [u32; 3],
    len: u32,
    aad_len: u32,
    n_blocks: u32,
    zpad: u32,
    seg: u32,
    log_blk: u32,
    n_parts: u32,
    index: u32,
    tag: [u32; 4],
    aad_inline: [u32; INLINE_AAD / 4],
}

impl Default for FrameParams {
    fn default() -> Self {
        Self {
            iv: [0; 3],
            len: 0,
            aad_len: 0,
            n_blocks: 0,
            zpad: 0,
            seg: 0,
            log_blk: 0,
            n_parts: 0,
            index: 0,
            tag: [0; 4],
            aad_inline: [0; INLINE_AAD / 4],
        }
    }
}

// SAFETY: `FrameParams` is `repr(C)`, made of `u32`s only, and matches the layout of
// `struct frame_params` in `aes_gcm.cu` (15 + INLINE_AAD/4 consecutive 32-bit words).
unsafe impl DeviceRepr for FrameParams {}

fn le_words<const N: usize>(b: &[u8]) -> [u32; N] {
    let mut w = [0u32; N];
    for (i, c) in b.chunks_exact(4).take(N).enumerate() {
        w[i] = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    w
}

impl FrameParams {
    /// Work split for one frame: `seg` virtual blocks per thread (a power of two up to
    /// 64), the largest that keeps the grid at `grid_target` blocks or more, and never
    /// more than FINAL_THREADS partials.
    fn new(
        iv: &[u8; 12],
        len: usize,
        aad: &[u8],
        tag: &[u8; TAG_LEN],
        index: u32,
        grid_target: u32,
    ) -> Result<Self, GpuError> {
        let len32 = u32::try_from(len).map_err(|_| GpuError::InvalidArgument("frame too long"))?;
        if len > 256 << 20 {
            return Err(GpuError::InvalidArgument("frame longer than 256 MiB"));
        }
        let aad_len = aad.len();
        if aad_len > MAX_AAD {
            return Err(GpuError::InvalidArgument("AAD longer than 4096 bytes"));
        }
        let n = len.div_ceil(16) as u64 + aad_len.div_ceil(16) as u64 + 1;
        let target = u64::from(grid_target.max(1));
        let t = u64::from(THREADS);
        let mut seg = 1u64;
        while seg < 64 && n / (t * seg * 2) >= target {
            seg *= 2;
        }
        while n.div_ceil(t * seg) > u64::from(FINAL_THREADS) {
            seg *= 2;
        }
        let parts = n.div_ceil(t * seg);
        let zpad = parts * t * seg - n;
        let log_blk = (t * seg).trailing_zeros();
        // The part weights cover log_blk up to WEIGHT_LB0 + WEIGHT_ROWS - 1 (frames of at
        // most 256 MiB stay within it).
        if log_blk.saturating_sub(kernel::WEIGHT_LB0) as usize >= kernel::WEIGHT_ROWS {
            return Err(GpuError::InvalidArgument("frame too long"));
        }
        let small =
            |v: u64| u32::try_from(v).map_err(|_| GpuError::InvalidArgument("frame too long"));
        Ok(Self {
            iv: le_words::<3>(iv),
            len: len32,
            aad_len: small(aad_len as u64)?,
            n_blocks: small(n)?,
            zpad: small(zpad)?,
            seg: small(seg)?,
            log_blk,
            n_parts: small(parts)?,
            index,
            tag: le_words::<4>(tag),
            aad_inline: if aad_len <= INLINE_AAD {
                let mut b = [0u8; INLINE_AAD];
                b[..aad_len].copy_from_slice(aad);
                le_words::<{ INLINE_AAD / 4 }>(&b)
            } else {
                [0; INLINE_AAD / 4]
            },
        })
    }
}

/// Parameters of `gcm_open_tensor` (`struct tensor_params` in the source): up to
/// [`RESIDENT_FRAMES`] frames of one tensor in a single launch.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct TensorParams {
    data: [u64; RESIDENT_FRAMES],
    part_base: [u32; RESIDENT_FRAMES + 1],
    n_frames: u32,
    generation: u32,
    /// 0: every frame has its flag; k > 0: the frames go to k streams in turn and only
    /// each stream's last frame has a flag, which the stream's other frames wait for.
    flag_group: u32,
    f: [FrameParams; RESIDENT_FRAMES],
}

// The layout of `struct tensor_params`: 2768 bytes, `f` at offset 112.
const _: () = assert!(std::mem::size_of::<TensorParams>() == 2768);
const _: () = assert!(std::mem::offset_of!(TensorParams, f) == 112);

// SAFETY: `TensorParams` is `repr(C)`, made of `u64`s and `u32`s without padding, and
// matches `struct tensor_params` in `aes_gcm.cu`.
unsafe impl DeviceRepr for TensorParams {}

/// Words of `gcm_open_tensor`'s counters: the next part, then per frame the finished
/// parts, then per frame whether a part gave up waiting (`STATUS_AT` in the source).
const WORK_WORDS: usize = 1 + 2 * RESIDENT_FRAMES;

/// Words of one set of `gcm_open_tensor`'s scratch: the counters, then one status word
/// per frame (`SET_WORDS`).
const SET_WORDS: usize = WORK_WORDS + RESIDENT_FRAMES;

/// The largest tensor [`OpenSchedule::Resident`] opens with its one resident kernel;
/// larger ones (where per-frame launches already keep up with PCIe) take the
/// `Persistent` path.
pub const RESIDENT_MAX_LEN: usize = 64 << 20;

/// Whether [`OpenSchedule::Resident`] opens a tensor of `frames` channel frames and
/// `total_len` bytes with its resident kernel (other tensors take the `Persistent` path).
pub fn resident_applies(frames: usize, total_len: usize) -> bool {
    (1..=RESIDENT_FRAMES).contains(&frames) && total_len <= RESIDENT_MAX_LEN
}

/// Reads the first `n` status words copied back into `host`: 1 verified, 3 never arrived
/// (resident kernel), anything else a failed tag.
fn verdicts_ok(host: &[u8], n: usize) -> Result<(), GpuError> {
    let words = host.chunks_exact(4);
    if words.len() < n {
        return Err(GpuError::InvalidArgument("status buffer too small"));
    }
    for (frame, w) in words.take(n).enumerate() {
        match u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) {
            1 => {}
            3 => return Err(GpuError::NotArrived { frame }),
            _ => return Err(GpuError::TagMismatch { frame }),
        }
    }
    Ok(())
}

/// Device memory from `cuMemAlloc`, outside the stream-ordered pool that the backend's
/// other allocations (`CudaSlice`, `cuMemAllocAsync`) come from: the driver refuses
/// stream memory operations (`cuStreamWriteValue32`) on pool memory with
/// `CUDA_ERROR_INVALID_VALUE` (seen on H100 and H200, driver 580). Freed on drop.
struct PlainAlloc {
    ctx: Arc<CudaContext>,
    /// The device address.
    ptr: u64,
}

impl PlainAlloc {
    fn new(ctx: &Arc<CudaContext>, bytes: usize) -> Result<Self, GpuError> {
        ctx.bind_to_thread().map_err(drv)?;
        // SAFETY: a plain allocation of `bytes` (> 0) in the bound context; the contents
        // are unspecified until the caller zeroes them.
        let ptr = unsafe { result::malloc_sync(bytes.max(1)) }.map_err(drv)?;
        Ok(Self {
            ctx: ctx.clone(),
            ptr,
        })
    }
}

impl Drop for PlainAlloc {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: `ptr` came from `malloc_sync` and is freed exactly once, here; the
        // opener's streams are idle when its resident scratch is dropped.
        let _ = unsafe { result::free_sync(self.ptr) };
    }
}

/// The resident kernel's lanes: the most tensors a batch can have on the GPU at once
/// ([`GpuOpener::set_batch_depth`]).
pub const RESIDENT_LANES: usize = 4;

/// In a batch, tensors whose frames are all at most this long share one arrival flag per
/// stream (written after the stream's last frame) instead of one per frame. On an H100
/// this brought batches of 1 MiB tensors in 128 KiB frames to 0.94 of plain (0.81 with a
/// flag per frame, at depth 4), left 256 KiB and 512 KiB frames as they were, and cost
/// 2 MiB frames (0.94 → 0.88: the kernel starts on a stream's frames only once all of
/// them arrived).
pub const GROUPED_FLAGS_MAX_FRAME: usize = 256 << 10;

/// Tensors a batch keeps on the GPU at once by default ([`GpuOpener::set_batch_depth`]).
pub const DEFAULT_BATCH_DEPTH: usize = 3;

/// One of the resident kernel's [`RESIDENT_LANES`] lanes. Tensors take the lanes
/// in turn, lane `l` with part `l` of the flags and of the host copy of the verdicts, so
/// that a tensor's kernel can start while those of the tensors before it (on other
/// lanes) are still finishing.
struct Lane {
    /// The lane's kernel stream (apart from the copy streams, so that the copies use
    /// every backend stream, as the other schedules' and plain copies do).
    stream: Arc<CudaStream>,
    /// Two sets of [`SET_WORDS`] words (the kernel's counters, then the frames' status
    /// words). A launch uses one, which must be all zero, and zeroes the other for the
    /// next launch on this lane.
    sets: CudaSlice<u32>,
    /// The set the next launch uses.
    set: usize,
    /// Whether that set is known to be zero: false until a launch has completed without
    /// error (then the next launch zeroes both sets on the lane's stream first).
    clean: bool,
    /// The kernel's partial GHASH sums, 4 words per part.
    partials: CudaSlice<u32>,
}

/// The opener's scratch for [`OpenSchedule::Resident`].
struct Resident {
    /// The kernel's lanes ([`RESIDENT_LANES`]).
    lanes: Vec<Lane>,
    /// One word per frame and lane, written with the tensor's generation by the copy
    /// stream after the frame's copy. Tensors take the lanes in turn, so that a tensor's
    /// flags never overwrite those of one still on the GPU. Outside the pool (see
    /// [`PlainAlloc`]).
    arrived: PlainAlloc,
    /// The pinned host copy of the status words, one part per lane as `arrived`.
    host: PinnedBuffer,
    /// Per lane, recorded on its stream after the copy of the verdicts.
    done: Vec<CudaEvent>,
    /// The lane the next tensor takes.
    lane: usize,
    /// Where the arrival flags of batch tensors are written, each after waiting for its
    /// frame's copy (an event on the copy stream), so that the copy streams carry
    /// nothing but copies and events.
    flags: Arc<CudaStream>,
    /// The value the last tensor's `arrived` words take; never 0 (the words start zeroed).
    generation: u32,
}

impl Resident {
    /// After an error: a launch may not have run to its end, so every lane's next
    /// launch zeroes both its sets first.
    fn dirty(&mut self) {
        for l in &mut self.lanes {
            l.clean = false;
        }
    }

    /// Waits for both lanes' streams.
    fn sync_lanes(&self) -> Result<(), GpuError> {
        for l in &self.lanes {
            l.stream.synchronize().map_err(drv)?;
        }
        self.flags.synchronize().map_err(drv)
    }

    /// The device address of lane `lane`'s `arrived` flags.
    fn arrived_at(&self, lane: usize) -> u64 {
        self.arrived.ptr + (4 * RESIDENT_FRAMES * lane) as u64
    }

    /// The first `n` status words of lane `lane`'s part of the host copy.
    fn verdicts(&self, lane: usize, n: usize) -> Result<&[u8], GpuError> {
        let at = 4 * RESIDENT_FRAMES * lane;
        self.host
            .as_slice()
            .get(at..at + 4 * n.min(RESIDENT_FRAMES))
            .ok_or(GpuError::InvalidArgument("status buffer too small"))
    }
}

/// Tensors of a batch on the GPU, oldest first: index in the batch, queued state, and
/// destination (device address, length).
type OnGpu = std::collections::VecDeque<(usize, Queued, (u64, usize))>;

/// A tensor queued for the resident kernel, its verdicts not read yet.
struct Queued {
    plan: TensorPlan,
    /// Its lane (kernel stream, part of the flags and of the host copy).
    lane: usize,
}

struct Kernels {
    _module: Arc<CudaModule>,
    setup: CudaFunction,
    main: CudaFunction,
    fin: CudaFunction,
    tensor: CudaFunction,
}

struct DevBuf {
    slice: CudaSlice<u8>,
    len: usize,
}

/// Scratch of one stream: the frame's AAD, the GHASH partials, and the staging buffer
/// (with the event after its last copy) for frames that arrive in pageable memory.
struct Slot {
    aad: CudaSlice<u8>,
    partials: CudaSlice<u32>,
    staging: Option<PinnedBuffer>,
    copied: CudaEvent,
}

/// How [`GpuOpener`] schedules a tensor's work on the GPU and gets the tag verdicts (one
/// status word per frame) back to the host.
///
/// All read the verdicts with a copy from VRAM that the driver carries out (in CC mode
/// over its encrypted path); none lets the GPU write verdicts into host memory, which the
/// host could change. They differ in fixed cost per tensor and per frame, which is what
/// limits small tensors (docs/gpu.md, "Small tensors").
///
/// The GPU tests run every opener case under all three and `pqcc bench gpu` times all
/// three in one run. On an H100 (docs/gpu.md, "Measurements") all three are correct;
/// `Persistent`, the default, is faster than `PerTensor` at every size and needs nothing
/// of the driver beyond copies and launches; `Resident` is the fastest for tensors it
/// takes (up to 1.4× `PerTensor` at 1–4 MiB) and is what batches use, but it needs
/// stream memory operations and keeps the SMs busy while it waits for copies, so it is
/// chosen explicitly.
///
/// In confidential-computing mode, or when that mode is unknown, the opener runs only
/// the schedules [`CcState::allows`]: `PerTensor` and `Persistent`. A schedule it does not
/// allow stays set but refuses every tensor with [`GpuError::Unavailable`] before anything
/// is queued (the destination zeroed, nothing committed); there is no silent fallback.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OpenSchedule {
    /// Two kernel launches per frame, each after its frame's copy on the same stream. A
    /// status buffer allocated and zeroed for every tensor, the host waiting after each;
    /// after the frames the host waits for every stream, copies the words back
    /// synchronously and frees the buffer: 3 + (streams) host waits per tensor.
    PerTensor,
    /// Two kernel launches per frame as in `PerTensor`, with a status buffer kept by the
    /// opener (grown when a tensor has more frames) and a pinned host copy of it. Zeroing
    /// is queued on stream 0 and the other streams wait for it on the device; at the end
    /// stream 0 waits for the others (events), the words are copied into the pinned copy
    /// on stream 0, and the host waits once.
    #[default]
    Persistent,
    /// One kernel per tensor, launched on a stream of its own (one of [`RESIDENT_LANES`],
    /// which tensors take in turn) right after the first copy is queued, that stays
    /// resident while the copies run. The copies go on the backend's streams as in the
    /// other schedules; after each, its stream writes a flag in VRAM
    /// (`cuStreamWriteValue32`, ordered after the copy). The kernel's blocks wait for the
    /// flag of the frame they work on, open it, and the block that finishes a frame checks
    /// its tag. No launch per frame and no memset per tensor (the kernel zeroes its
    /// scratch for the next launch); the kernel's stream copies the verdicts into a pinned
    /// host copy and records an event, and the host waits once, for that event only: the
    /// kernel ends only after every frame's flag, so after every copy. All frame headers
    /// are checked before anything is queued. In a batch
    /// ([`GpuOpener::open_tensors_pinned`]) several tensors are on the GPU at once
    /// ([`GpuOpener::set_batch_depth`]), their kernels on different lanes: the next ones
    /// are copied and start while this one finishes.
    ///
    /// For tensors of at most [`RESIDENT_FRAMES`] frames and [`RESIDENT_MAX_LEN`] bytes
    /// with headers short enough to travel in the launch; any other tensor takes the
    /// `Persistent` path. A frame whose copy never arrives (a failure while queueing) ends
    /// the wait after 10 s: [`GpuError::NotArrived`].
    Resident,
}

/// What an [`OpenSchedule`] needs of the driver beyond device memory, copies between
/// VRAM and host memory (page-locked from `cuMemHostAlloc`, or pageable), kernel
/// launches and events, which every schedule uses and CC mode supports. [`CcState::allows`]
/// decides from this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleNeeds {
    /// Stream memory operations (`cuStreamWriteValue32`) on device memory.
    pub stream_memory_operations: bool,
    /// The GPU reads or writes host memory itself (mapped, zero-copy memory; a flag or a
    /// verdict the GPU writes to the host): refused in CC mode.
    pub gpu_access_to_host_memory: bool,
    /// Host memory registered with `cuMemHostRegister`: refused in CC mode.
    pub host_memory_registration: bool,
}

impl OpenSchedule {
    /// Every schedule.
    pub const ALL: [OpenSchedule; 3] = [
        OpenSchedule::PerTensor,
        OpenSchedule::Persistent,
        OpenSchedule::Resident,
    ];

    /// What the schedule needs of the driver ([`ScheduleNeeds`]). No schedule lets the
    /// GPU write verdicts or flags into host memory: the verdicts come back as a copy
    /// from VRAM that the driver makes, and `Resident`'s arrival flags are in VRAM.
    pub const fn needs(self) -> ScheduleNeeds {
        let none = ScheduleNeeds {
            stream_memory_operations: false,
            gpu_access_to_host_memory: false,
            host_memory_registration: false,
        };
        match self {
            OpenSchedule::PerTensor | OpenSchedule::Persistent => none,
            OpenSchedule::Resident => ScheduleNeeds {
                stream_memory_operations: true,
                ..none
            },
        }
    }
}

/// The opener's kept status words ([`OpenSchedule::Persistent`]).
struct Verdicts {
    dev: CudaSlice<u32>,
    host: PinnedBuffer,
    /// Frames the buffers hold.
    cap: usize,
    /// Recorded on stream 0 after the zeroing; the other streams wait for it.
    zeroed: CudaEvent,
    /// One per stream after the first, recorded after its last frame; stream 0 waits
    /// for them before the copy back.
    done: Vec<CudaEvent>,
}

/// The CUDA device: memory, streams and the compiled kernels.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    streams: Vec<Arc<CudaStream>>,
    k: Kernels,
    buffers: HashMap<u64, DevBuf>,
    next: u64,
    info: DeviceInfo,
    /// Thread blocks a frame's grid aims for (SMs × blocks per SM).
    grid_target: u32,
    /// The GPU's confidential-computing mode, detected at creation.
    cc: CcState,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("device", &self.info.name)
            .field("streams", &self.streams.len())
            .field("buffers", &self.buffers.len())
            .field("cc", &self.cc)
            .finish()
    }
}

impl CudaBackend {
    /// Opens device `ordinal` with `streams` streams (at least 1), compiles the kernel
    /// for its compute capability and detects the confidential-computing mode
    /// ([`CcState::detect`]; on FakeCuda, the fake's own NVML answer).
    pub fn new(ordinal: usize, streams: usize) -> Result<Self, GpuError> {
        Self::with_config(ordinal, streams, KernelConfig::default())
    }

    /// [`CudaBackend::new`] with a kernel configuration other than the default.
    pub fn with_config(
        ordinal: usize,
        streams: usize,
        cfg: KernelConfig,
    ) -> Result<Self, GpuError> {
        cuda_available()?;
        if cfg.blocks_per_sm == 0 {
            return Err(GpuError::InvalidArgument(
                "blocks_per_sm must be at least 1",
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(drv)?;
        // SAFETY: turned off before any buffer exists; this module synchronises streams
        // itself (see the module documentation).
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx.compute_capability().map_err(drv)?;
        let sms = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(drv)?;
        let name = ctx.name().map_err(drv)?;
        if name.starts_with(FAKE_DEVICE_PREFIX) && !fake_driver_allowed() {
            return Err(GpuError::Unavailable(format!(
                "the CUDA driver is a test fake (device \"{name}\"): its memory is host \
                 memory, so nothing opened there is protected; refused (tests allow it with \
                 PQCC_INSECURE_FAKE_CUDA=1)"
            )));
        }
        let cc = if name.starts_with(FAKE_DEVICE_PREFIX) {
            // FakeCuda (allowed above, tests only) answers NVML's CC query itself.
            // SAFETY: `culib` is the driver library cudarc loaded (it is loaded: a context
            // exists); only the NVML functions `query_nvml` names are looked up in it.
            query_nvml(unsafe { sys::culib() })
        } else {
            CcState::detect()
        };
        let info = DeviceInfo {
            name,
            total_memory: ctx.total_mem().map_err(drv)? as u64,
            compute_capability: Some((major as u32, minor as u32)),
            multiprocessors: sms as u32,
        };
        let grid_target = (sms as u32).max(1) * cfg.blocks_per_sm;
        let ptx = kernel::compile_ptx_with(major as u32, minor as u32, &cfg)?;
        let module = ctx.load_module(ptx).map_err(drv)?;
        let f = |n: &str| module.load_function(n).map_err(drv);
        let k = Kernels {
            setup: f("gcm_setup")?,
            main: f("gcm_open_main")?,
            fin: f("gcm_open_final")?,
            tensor: f("gcm_open_tensor")?,
            _module: module.clone(),
        };
        let mut s = Vec::new();
        for _ in 0..streams.max(1) {
            s.push(ctx.new_stream().map_err(drv)?);
        }
        Ok(Self {
            ctx,
            streams: s,
            k,
            buffers: HashMap::new(),
            next: 0,
            info,
            grid_target,
            cc,
        })
    }

    /// The GPU's confidential-computing mode, as detected when the backend was created.
    pub fn cc_state(&self) -> &CcState {
        &self.cc
    }

    /// The number of streams.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Page-locked host memory of `len` bytes (zeroed).
    pub fn alloc_pinned(&self, len: usize) -> Result<PinnedBuffer, GpuError> {
        PinnedBuffer::new(&self.ctx, len)
    }

    fn s0(&self) -> &Arc<CudaStream> {
        &self.streams[0]
    }

    fn sync_all(&self) -> Result<(), GpuError> {
        for s in &self.streams {
            s.synchronize().map_err(drv)?;
        }
        Ok(())
    }

    /// Allocates on stream 0 and waits, so any stream may use the memory at once.
    fn alloc_raw<T: DeviceRepr>(&self, len: usize) -> Result<CudaSlice<T>, GpuError> {
        // SAFETY: the contents are unspecified; every caller writes before reading or
        // zeroes the memory first.
        let s = unsafe { self.s0().alloc::<T>(len.max(1)) }.map_err(drv)?;
        self.s0().synchronize().map_err(drv)?;
        Ok(s)
    }

    fn ptr<T>(&self, s: &CudaSlice<T>) -> u64 {
        // Event tracking is off, so the returned guard does nothing.
        s.device_ptr(self.s0()).0
    }

    fn buf(&self, h: BufferHandle) -> Result<&DevBuf, GpuError> {
        self.buffers.get(&h.0).ok_or(GpuError::UnknownBuffer(h.0))
    }

    fn insert(&mut self, slice: CudaSlice<u8>, len: usize) -> BufferHandle {
        self.next += 1;
        self.buffers.insert(self.next, DevBuf { slice, len });
        BufferHandle(self.next)
    }

    fn zero_device(&self, ptr: u64, len: usize) -> Result<(), GpuError> {
        // SAFETY: `ptr..ptr+len` lies inside a live allocation of this context.
        unsafe { result::memset_d8_async(ptr, 0, len, self.s0().cu_stream()) }.map_err(drv)?;
        self.s0().synchronize().map_err(drv)
    }

    /// Uploads a frame key: the key goes through a pinned buffer that is zeroized after
    /// the copy, is expanded on the GPU (round keys, H and its powers), and the raw key
    /// is zeroed in VRAM. `key` is consumed and zeroized on return.
    pub fn upload_key(&mut self, key: Secret<32>) -> Result<DeviceKey, GpuError> {
        let mut pinned = self.alloc_pinned(32)?;
        pinned.as_mut_slice()[..32].copy_from_slice(key.expose());
        drop(key);
        let raw = self.alloc_raw::<u32>(8)?;
        let ctx_buf = self.alloc_raw::<u32>(CTX_WORDS)?;
        let (raw_p, ctx_p) = (self.ptr(&raw), self.ptr(&ctx_buf));
        let s = self.s0().clone();
        let r = (|| {
            // SAFETY: `raw` holds 32 bytes; `pinned` stays alive until the synchronize below.
            unsafe { result::memcpy_htod_async(raw_p, &pinned.as_slice()[..32], s.cu_stream()) }
                .map_err(drv)?;
            let cfg = LaunchConfig {
                grid_dim: (1, 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut b = s.launch_builder(&self.k.setup);
            b.arg(&raw_p).arg(&ctx_p);
            // SAFETY: gcm_setup(u32 *key, u32 *ctx): 8 and CTX_WORDS words, both allocated above.
            unsafe { b.launch(cfg) }.map_err(drv)?;
            s.synchronize().map_err(drv)
        })();
        drop(pinned);
        // gcm_setup zeroes the raw key itself; zero it again in case the launch failed.
        let z = self.zero_device(raw_p, 32);
        r?;
        z?;
        Ok(DeviceKey { ctx: ctx_buf })
    }

    /// Opens one AES-256-GCM message with a 96-bit nonce on the GPU into `dst` (at least
    /// `ct.len()` bytes). On a tag mismatch the first `ct.len()` bytes of `dst` are
    /// zeroed by the GPU and the result is [`GpuError::TagMismatch`]. Used for the
    /// Wycheproof vectors and for opening sealed chunks that are not channel frames.
    pub fn open_raw_into(
        &mut self,
        key: &DeviceKey,
        iv: &[u8; 12],
        aad: &[u8],
        ct: &[u8],
        tag: &[u8; TAG_LEN],
        dst: BufferHandle,
    ) -> Result<(), GpuError> {
        let d = self.buf(dst)?;
        if d.len < ct.len() {
            return Err(GpuError::InvalidArgument(
                "destination shorter than the ciphertext",
            ));
        }
        let dst_p = self.ptr(&d.slice);
        let p = FrameParams::new(iv, ct.len(), aad, tag, 0, self.grid_target)?;
        let aad_d = self.alloc_raw::<u8>(MAX_AAD)?;
        let parts = self.alloc_raw::<u32>(4 * FINAL_THREADS as usize)?;
        let status = self.alloc_raw::<u32>(1)?;
        let (aad_p, parts_p, status_p) = (self.ptr(&aad_d), self.ptr(&parts), self.ptr(&status));
        let s = self.s0().clone();
        // SAFETY: synchronous copies of ciphertext (not secret) into allocations of at
        // least that size (checked above: `d.len >= ct.len()`, `aad.len() <= MAX_AAD`).
        unsafe {
            result::memset_d8_async(status_p, 0, 4, s.cu_stream()).map_err(drv)?;
            s.synchronize().map_err(drv)?;
            if !ct.is_empty() {
                result::memcpy_htod_sync(dst_p, ct).map_err(drv)?;
            }
            if aad.len() > INLINE_AAD {
                result::memcpy_htod_sync(aad_p, aad).map_err(drv)?;
            }
        }
        self.launch_open(&s, key, dst_p, aad_p, parts_p, status_p, &p)?;
        s.synchronize().map_err(drv)?;
        let mut st = [0u32; 1];
        // SAFETY: `status` holds one u32; the stream has completed.
        unsafe { result::memcpy_dtoh_sync(&mut st, status_p) }.map_err(drv)?;
        if st[0] == 1 {
            Ok(())
        } else {
            Err(GpuError::TagMismatch { frame: 0 })
        }
    }

    /// Enqueues the two kernels for one frame on `s`: decrypt + GHASH partials, then the
    /// tag check into `status[p.index]`, which zeroes the frame unless the tag verified.
    #[allow(clippy::too_many_arguments)]
    fn launch_open(
        &self,
        s: &CudaStream,
        key: &DeviceKey,
        data: u64,
        aad: u64,
        partials: u64,
        status: u64,
        p: &FrameParams,
    ) -> Result<(), GpuError> {
        let ctx_p = self.ptr(&key.ctx);
        let mut b = s.launch_builder(&self.k.main);
        b.arg(&data).arg(&aad).arg(&ctx_p).arg(p).arg(&partials);
        let cfg = LaunchConfig {
            grid_dim: (p.n_parts, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: gcm_open_main(u8 *data, const u8 *aad, const u32 *ctx, frame_params,
        // u32 *partials): `data` holds p.len bytes, `aad` MAX_AAD >= p.aad_len, `ctx`
        // CTX_WORDS, `partials` 4 * FINAL_THREADS >= 4 * p.n_parts words.
        unsafe { b.launch(cfg) }.map_err(drv)?;
        let mut b = s.launch_builder(&self.k.fin);
        b.arg(&ctx_p).arg(p).arg(&partials).arg(&status).arg(&data);
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (p.n_parts.next_power_of_two().clamp(64, FINAL_THREADS), 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: gcm_open_final(const u32 *ctx, frame_params, const u32 *partials,
        // u32 *status, u8 *data): status has more than p.index entries (callers allocate
        // one per frame); `data` is the frame's p.len bytes, as for gcm_open_main.
        unsafe { b.launch(cfg) }.map_err(drv)?;
        Ok(())
    }

    /// Times plain host→device copies of the first `len` bytes of `src` into `dst` in
    /// `chunk`-byte pieces spread over the streams (the same split the opener uses),
    /// without decryption: the anchor of `pqcc bench gpu`. Returns seconds of wall time (enqueue to completion).
    pub fn time_plain_copy(
        &self,
        src: &PinnedBuffer,
        len: usize,
        dst: BufferHandle,
        chunk: usize,
    ) -> Result<f64, GpuError> {
        self.time_plain_copies(src, len, &[dst], chunk)
    }

    /// [`CudaBackend::time_plain_copy`] for a batch: bytes `j * len .. (j + 1) * len` of
    /// `src` into `dsts[j]`, each in `chunk`-byte pieces spread over the streams, all
    /// queued before one wait for every stream: the anchor of the batch figures of
    /// `pqcc bench gpu`. Returns seconds of wall time.
    pub fn time_plain_copies(
        &self,
        src: &PinnedBuffer,
        len: usize,
        dsts: &[BufferHandle],
        chunk: usize,
    ) -> Result<f64, GpuError> {
        if chunk == 0 {
            return Err(GpuError::InvalidArgument("empty chunk"));
        }
        let mut jobs = Vec::with_capacity(dsts.len());
        for (j, dst) in dsts.iter().enumerate() {
            let d = self.buf(*dst)?;
            let from = src
                .as_slice()
                .get(j * len..(j + 1) * len)
                .ok_or(GpuError::InvalidArgument("source shorter than the batch"))?;
            if d.len < len {
                return Err(GpuError::InvalidArgument("destination too short"));
            }
            jobs.push((from, self.ptr(&d.slice)));
        }
        let t = std::time::Instant::now();
        let queued = jobs.iter().try_for_each(|&(from, dst_p)| {
            for (i, c) in from.chunks(chunk).enumerate() {
                let s = &self.streams[i % self.streams.len()];
                // SAFETY: `c` lies in pinned memory alive until the wait below (also
                // after an error); the destination range lies inside the destination
                // (length checked above).
                unsafe { result::memcpy_htod_async(dst_p + (i * chunk) as u64, c, s.cu_stream()) }
                    .map_err(drv)?;
            }
            Ok(())
        });
        let synced = self.sync_all();
        queued?;
        synced?;
        Ok(t.elapsed().as_secs_f64())
    }

    /// Times the device→host round trip every opened tensor ends with: a copy of 16
    /// bytes from VRAM into pinned memory on one stream and the host's wait for it.
    /// Returns the median of `iterations` runs in seconds. What the verdicts' way back
    /// costs at least, whatever the kernel does (`pqcc bench gpu` reports it).
    pub fn time_readback(&self, iterations: usize) -> Result<f64, GpuError> {
        let dev = self.alloc_raw::<u32>(4)?;
        let mut host = self.alloc_pinned(16)?;
        let dev_p = self.ptr(&dev);
        // Never copy back whatever an earlier allocation left there.
        self.zero_device(dev_p, 16)?;
        let s = self.s0().clone();
        let mut times = Vec::with_capacity(iterations.max(1));
        for _ in 0..iterations.max(1) {
            let t = std::time::Instant::now();
            // SAFETY: `host` is pinned, 16 bytes, alive until the synchronize below (also
            // on error); `dev` holds 16 bytes.
            let queued = unsafe {
                result::memcpy_dtoh_async(&mut host.as_mut_slice()[..16], dev_p, s.cu_stream())
            }
            .map_err(drv);
            let synced = s.synchronize().map_err(drv);
            queued?;
            synced?;
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        let _ = self.sync_all();
        let s = self.s0().clone();
        for b in self.buffers.values() {
            let p = b.slice.device_ptr(&s).0;
            // SAFETY: zeroing a live allocation of this context before it is freed.
            let _ = unsafe { result::memset_d8_async(p, 0, b.len.max(1), s.cu_stream()) };
        }
        let _ = s.synchronize();
    }
}

impl Backend for CudaBackend {
    fn device_info(&self) -> DeviceInfo {
        self.info.clone()
    }

    fn upload(&mut self, bytes: &[u8]) -> Result<BufferHandle, GpuError> {
        let slice = self.alloc_raw::<u8>(bytes.len())?;
        let mut pinned = self.alloc_pinned(bytes.len())?;
        pinned.as_mut_slice()[..bytes.len()].copy_from_slice(bytes);
        // SAFETY: `slice` holds at least bytes.len() bytes; synchronous copy.
        unsafe { result::memcpy_htod_sync(self.ptr(&slice), &pinned.as_slice()[..bytes.len()]) }
            .map_err(drv)?;
        Ok(self.insert(slice, bytes.len()))
    }

    fn alloc_zeroed(&mut self, len: usize) -> Result<BufferHandle, GpuError> {
        let slice = self.alloc_raw::<u8>(len)?;
        self.zero_device(self.ptr(&slice), len.max(1))?;
        Ok(self.insert(slice, len))
    }

    fn download(&mut self, handle: BufferHandle) -> Result<Vec<u8>, GpuError> {
        self.sync_all()?;
        let d = self.buf(handle)?;
        let mut out = vec![0u8; d.len];
        if d.len > 0 {
            // SAFETY: `out` has exactly the buffer's length; all streams are idle.
            unsafe { result::memcpy_dtoh_sync(&mut out, self.ptr(&d.slice)) }.map_err(drv)?;
        }
        Ok(out)
    }

    fn len_of(&self, handle: BufferHandle) -> Result<usize, GpuError> {
        Ok(self.buf(handle)?.len)
    }

    fn free(&mut self, handle: BufferHandle) -> Result<(), GpuError> {
        self.sync_all()?;
        let d = self
            .buffers
            .remove(&handle.0)
            .ok_or(GpuError::UnknownBuffer(handle.0))?;
        self.zero_device(self.ptr(&d.slice), d.len.max(1))?;
        drop(d);
        self.s0().synchronize().map_err(drv)
    }
}

/// A frame key expanded in VRAM (round keys, H and H^(2^k)). The host keeps no copy.
pub struct DeviceKey {
    ctx: CudaSlice<u32>,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceKey(<in VRAM>)")
    }
}

impl DeviceKey {
    /// Zeroes the key context in VRAM (also done on drop of the opener that owns it).
    fn wipe(&self, b: &CudaBackend) -> Result<(), GpuError> {
        b.zero_device(b.ptr(&self.ctx), CTX_WORDS * 4)
    }
}

/// Opens tensors of one channel direction in VRAM.
///
/// The host side runs `pqcc_core`'s [`Opener`] for its header, freshness and replay
/// checks only (its own AEAD is built over an all-zero key and never used); the frame
/// key lives in a [`DeviceKey`].
pub struct GpuOpener<const W: usize = DEFAULT_WINDOW_WORDS> {
    backend: CudaBackend,
    key: DeviceKey,
    channel: Opener<RustCryptoAesGcm, W>,
    slots: Vec<Slot>,
    schedule: OpenSchedule,
    batch_depth: usize,
    verdicts: Option<Verdicts>,
    resident: Option<Resident>,
    /// [`GpuOpener::allow_unverified_in_cc_mode`].
    unverified_in_cc: bool,
}

impl<const W: usize> std::fmt::Debug for GpuOpener<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuOpener")
            .field("backend", &self.backend)
            .field("key", &self.key)
            .field("epoch", &self.channel.epoch())
            .field("schedule", &self.schedule)
            .finish()
    }
}

impl<const W: usize> GpuOpener<W> {
    /// An opener for the direction with frame `key` and nonce `prefix` (from
    /// `pqcc_core::handshake::SessionKeys`). The key is uploaded to the GPU and the
    /// host copy zeroized.
    pub fn new(
        mut backend: CudaBackend,
        key: Secret<32>,
        prefix: [u8; 4],
        limits: Limits,
        now: u64,
    ) -> Result<Self, GpuError> {
        let key = backend.upload_key(key)?;
        let mut slots = Vec::new();
        for _ in 0..backend.stream_count() {
            slots.push(Slot {
                aad: backend.alloc_raw::<u8>(MAX_AAD)?,
                partials: backend.alloc_raw::<u32>(4 * FINAL_THREADS as usize)?,
                staging: None,
                copied: backend.ctx.new_event(None).map_err(drv)?,
            });
        }
        let placeholder = Secret::new([0u8; 32]);
        Ok(Self {
            channel: Opener::new(&placeholder, prefix, limits, now),
            backend,
            key,
            slots,
            schedule: OpenSchedule::default(),
            batch_depth: DEFAULT_BATCH_DEPTH,
            verdicts: None,
            resident: None,
            unverified_in_cc: false,
        })
    }

    /// How tensors are scheduled on the GPU ([`OpenSchedule`]); the default is `Persistent`.
    /// A schedule the confidential-computing state does not allow
    /// ([`GpuOpener::schedule_allowed`]) is kept, and then every tensor fails with
    /// [`GpuError::Unavailable`] before anything is queued.
    pub fn set_schedule(&mut self, schedule: OpenSchedule) {
        self.schedule = schedule;
    }

    /// Whether `schedule` runs here: [`CcState::allows`] for the backend's CC state.
    pub fn schedule_allowed(&self, schedule: OpenSchedule) -> Result<(), GpuError> {
        self.backend.cc.allows(schedule, self.unverified_in_cc)
    }

    /// The GPU's confidential-computing mode ([`CudaBackend::cc_state`]).
    pub fn cc_state(&self) -> &CcState {
        self.backend.cc_state()
    }

    /// Lets schedules that were never run on a GPU in CC mode (`Resident`: stream memory
    /// operations) run when CC is on or unknown: for trying them on such a GPU. Their
    /// failures there fail closed like any other (the destination zeroed, nothing
    /// committed); a flag that never arrives costs the resident kernel's 10 s timeout.
    /// Schedules CC mode refuses outright stay refused. Off by default.
    pub fn allow_unverified_in_cc_mode(&mut self, allow: bool) {
        self.unverified_in_cc = allow;
    }

    /// The current [`OpenSchedule`].
    pub fn schedule(&self) -> OpenSchedule {
        self.schedule
    }

    /// How many tensors [`GpuOpener::open_tensors_pinned`] keeps on the GPU at once under
    /// [`OpenSchedule::Resident`]: 1 to [`RESIDENT_LANES`] (clamped), by default
    /// [`DEFAULT_BATCH_DEPTH`]. Deeper batches hide more of each tensor's tail and of the
    /// host's turnaround; the key-lifetime check may then pass that many tensors' frames
    /// beyond its limit (see `open_tensors_pinned`).
    pub fn set_batch_depth(&mut self, depth: usize) {
        self.batch_depth = depth.clamp(1, RESIDENT_LANES);
    }

    /// The current batch depth ([`GpuOpener::set_batch_depth`]).
    pub fn batch_depth(&self) -> usize {
        self.batch_depth
    }

    /// The backend the tensors land in.
    pub fn backend(&mut self) -> &mut CudaBackend {
        &mut self.backend
    }

    /// The backend, shared.
    pub fn backend_ref(&self) -> &CudaBackend {
        &self.backend
    }

    /// The current key epoch.
    pub fn epoch(&self) -> u32 {
        self.channel.epoch()
    }

    /// Moves to the next epoch with `next_key` ([`crate::next_epoch_key`] of the
    /// current key); the old key context is zeroed in VRAM.
    pub fn rekey(&mut self, now: u64, next_key: Secret<32>) -> Result<(), GpuError> {
        let new = self.backend.upload_key(next_key)?;
        self.channel
            .rekey(now)
            .map_err(|error| GpuError::Channel { frame: 0, error })?;
        let old = std::mem::replace(&mut self.key, new);
        old.wipe(&self.backend)
    }

    /// Switches to another frame key and nonce prefix at epoch 0 with a fresh replay
    /// window (the next file of a sealed model, or a new channel): waits for all queued
    /// work, uploads `key`, and zeroes the old key context in VRAM.
    pub fn reset_key(
        &mut self,
        now: u64,
        key: Secret<32>,
        prefix: [u8; 4],
        limits: Limits,
    ) -> Result<(), GpuError> {
        self.backend.sync_all()?;
        if let Some(r) = &self.resident {
            r.sync_lanes()?;
        }
        let new = self.backend.upload_key(key)?;
        let old = std::mem::replace(&mut self.key, new);
        let placeholder = Secret::new([0u8; 32]);
        self.channel = Opener::new(&placeholder, prefix, limits, now);
        old.wipe(&self.backend)
    }

    /// Opens the frames of one tensor (all chunks, in order, FINAL last; in pageable
    /// memory, staged through pinned buffers) into a new device buffer of the tensor's
    /// length. All frames verify or none is accepted.
    pub fn open_tensor(&mut self, now: u64, frames: &[&[u8]]) -> Result<BufferHandle, GpuError> {
        let plan = plan_tensor(&self.channel, now, frames.iter().copied())?;
        let dst = self.alloc_dst(plan.total_len)?;
        match self.run(now, frames, false, dst) {
            Ok(()) => Ok(dst),
            Err(e) => {
                self.backend.free(dst)?;
                Err(e)
            }
        }
    }

    /// Like [`GpuOpener::open_tensor`] into an existing buffer (at least the tensor's
    /// length). On any failure after the checks the buffer is zeroed in VRAM.
    pub fn open_tensor_into(
        &mut self,
        now: u64,
        frames: &[&[u8]],
        dst: BufferHandle,
    ) -> Result<(), GpuError> {
        self.run(now, frames, false, dst)
    }

    /// Like [`GpuOpener::open_tensor_into`] for frames that already lie in pinned memory
    /// (`ranges` of `src`, e.g. a receive buffer): they are copied to VRAM directly.
    pub fn open_tensor_pinned(
        &mut self,
        now: u64,
        src: &PinnedBuffer,
        ranges: &[std::ops::Range<usize>],
        dst: BufferHandle,
    ) -> Result<(), GpuError> {
        let frames = frames_in(src, ranges)?;
        self.run(now, &frames, true, dst)
    }

    fn alloc_dst(&mut self, len: usize) -> Result<BufferHandle, GpuError> {
        let slice = self.backend.alloc_raw::<u8>(len)?;
        Ok(self.backend.insert(slice, len))
    }

    fn run(
        &mut self,
        now: u64,
        frames: &[&[u8]],
        pinned: bool,
        dst: BufferHandle,
    ) -> Result<(), GpuError> {
        let d = self.backend.buf(dst)?;
        let (dst_p, dst_len) = (self.backend.ptr(&d.slice), d.len);
        let r = self.enqueue_and_wait(now, frames, pinned, dst_p, dst_len);
        let r = r.and_then(|plan| commit_all(&mut self.channel, &plan));
        if r.is_err() {
            // Every stream idle, the resident kernel's too: nothing may write the
            // destination after it is zeroed.
            let _ = self.idle_all();
            self.backend.zero_device(dst_p, dst_len.max(1))?;
        }
        r
    }

    /// Checks each frame on the host and, as soon as it passed, enqueues its copies and
    /// kernels, so host checks overlap the GPU work of earlier frames. Nothing is
    /// committed here; on error the caller zeroes the destination.
    fn enqueue_and_wait(
        &mut self,
        now: u64,
        frames: &[&[u8]],
        pinned: bool,
        dst_p: u64,
        dst_len: usize,
    ) -> Result<TensorPlan, GpuError> {
        // Before anything is queued: a schedule the CC state does not allow.
        self.schedule_allowed(self.schedule)?;
        match self.schedule {
            OpenSchedule::PerTensor => {}
            OpenSchedule::Persistent => {
                return self.enqueue_and_wait_kept(now, frames, pinned, dst_p, dst_len);
            }
            OpenSchedule::Resident => {
                return self.enqueue_and_wait_resident(now, frames, pinned, dst_p, dst_len);
            }
        }
        let n = frames.len();
        let status = self.backend.alloc_raw::<u32>(n)?;
        let status_p = self.backend.ptr(&status);
        let r = self
            .backend
            .zero_device(status_p, 4 * n.max(1))
            .and_then(|()| self.enqueue(now, frames, pinned, dst_p, dst_len, status_p));
        // Every stream must be idle before anything is read back or freed, also after an
        // error midway (`status` is freed in stream 0's order only).
        let synced = self.backend.sync_all();
        let plan = r?;
        synced?;
        let mut st = vec![0u32; n];
        // SAFETY: `status` holds n u32; all streams are idle.
        unsafe { result::memcpy_dtoh_sync(&mut st, status_p) }.map_err(drv)?;
        drop(status);
        match st.iter().position(|&v| v != 1) {
            Some(frame) => Err(GpuError::TagMismatch { frame }),
            None => Ok(plan),
        }
    }

    /// [`GpuOpener::enqueue_and_wait`] with the kept status words
    /// ([`OpenSchedule::Persistent`]): no allocation, and one host wait.
    fn enqueue_and_wait_kept(
        &mut self,
        now: u64,
        frames: &[&[u8]],
        pinned: bool,
        dst_p: u64,
        dst_len: usize,
    ) -> Result<TensorPlan, GpuError> {
        let n = frames.len().max(1);
        self.ensure_verdicts(n)?;
        let status_p = self.backend.ptr(&self.verdicts()?.dev);
        let s0 = self.backend.s0().clone();
        let r = self
            .zero_verdicts(&s0, status_p, n)
            .and_then(|()| self.enqueue(now, frames, pinned, dst_p, dst_len, status_p))
            .and_then(|plan| {
                self.fetch_verdicts(&s0, status_p, n)?;
                Ok(plan)
            });
        // On success stream 0 joined every other stream before the copy back, so its
        // completion means all streams are idle; after an error, wait for each.
        let synced = match &r {
            Ok(_) => s0.synchronize().map_err(drv),
            Err(_) => self.backend.sync_all(),
        };
        let plan = r?;
        synced?;
        self.kept_verdicts(frames.len())?;
        Ok(plan)
    }

    /// Reads the first `n` kept verdicts (copied back, stream 0 completed): 1 verified,
    /// 3 never arrived (resident kernel), anything else a failed tag.
    fn kept_verdicts(&self, n: usize) -> Result<(), GpuError> {
        verdicts_ok(self.verdicts()?.host.as_slice(), n)
    }

    /// [`GpuOpener::enqueue_and_wait`] with one resident kernel ([`OpenSchedule::Resident`]);
    /// tensors it does not take go the `Persistent` way.
    fn enqueue_and_wait_resident(
        &mut self,
        now: u64,
        frames: &[&[u8]],
        pinned: bool,
        dst_p: u64,
        dst_len: usize,
    ) -> Result<TensorPlan, GpuError> {
        match self.queue_tensor(now, frames, pinned, dst_p, dst_len, false)? {
            Some(q) => self.wait_queued(q),
            None => self.enqueue_and_wait_kept(now, frames, pinned, dst_p, dst_len),
        }
    }

    /// Checks every header of a tensor, then queues it for the resident kernel: the
    /// copies and flags, the launch, the copy back of the verdicts and an event.
    /// `Ok(None)`, with nothing queued, for a tensor the kernel does not take. After an
    /// error, this tensor's kernel (if launched) is released; the caller waits for every
    /// stream before it zeroes the destination. Tensors queued earlier are not affected.
    /// `batch`: two things that pay when tensors follow each other and not for one
    /// tensor alone. The arrival flags are written on the opener's flag stream, each after
    /// waiting for its copy's event, instead of on the copy stream: a flag write there
    /// holds back the next copy (the write waits for the copy to end, the next copy for
    /// the write), while the extra event costs a single tensor more than it saves. And
    /// when every frame is at most [`GROUPED_FLAGS_MAX_FRAME`] bytes, only each stream's
    /// last frame of the tensor gets a flag, which the stream's other frames wait for:
    /// fewer operations, while the kernel starts on a stream's frames only once all have
    /// arrived.
    fn queue_tensor(
        &mut self,
        now: u64,
        frames: &[&[u8]],
        pinned: bool,
        dst_p: u64,
        dst_len: usize,
        batch: bool,
    ) -> Result<Option<Queued>, GpuError> {
        self.schedule_allowed(OpenSchedule::Resident)?;
        // Too many frames for one launch: not worth checking the headers here.
        if frames.len() > RESIDENT_FRAMES {
            return Ok(None);
        }
        // Every header is checked before anything is queued: the kernel is launched
        // right after the first copy is queued and must know all frames.
        let plan = plan_tensor(&self.channel, now, frames.iter().copied())?;
        if plan.total_len > dst_len {
            return Err(GpuError::InvalidArgument(
                "destination shorter than the tensor",
            ));
        }
        let Some((mut tp, parts)) = self.tensor_params(&plan, frames, dst_p)? else {
            return Ok(None);
        };
        self.ensure_resident()?;
        tp.generation = self.next_gen()?;
        if batch
            && parts
                .iter()
                .all(|(_, ct)| ct.len() <= GROUPED_FLAGS_MAX_FRAME)
        {
            tp.flag_group = u32::try_from(self.slots.len())
                .map_err(|_| GpuError::InvalidArgument("too many streams"))?;
        }
        let res = self.resident_mut()?;
        let lane = res.lane;
        res.lane = (lane + 1) % RESIDENT_LANES;
        let ks = res.lanes[lane].stream.clone();
        let mut launched = false;
        let at = Placement { lane, batch };
        let r = self.queue_resident(&ks, &parts, pinned, &tp, at, &mut launched);
        if let Err(e) = r {
            if launched {
                self.release_resident(lane, tp.generation, parts.len());
            }
            self.resident_mut()?.dirty();
            return Err(e);
        }
        Ok(Some(Queued { plan, lane }))
    }

    /// Waits for a queued tensor (its event, after the kernel and the copy of its
    /// verdicts) and checks its verdicts; returns its plan, to be committed. The kernel
    /// ends only after it saw every frame's flag, each written after its frame's copy,
    /// so the event also means every copy of the tensor ended. A verdict other than 1
    /// leaves that open: the caller then waits for every stream before it zeroes the
    /// destination.
    fn wait_queued(&mut self, q: Queued) -> Result<TensorPlan, GpuError> {
        let res = self.resident()?;
        let n = q.plan.frames.len();
        let r = res.done[q.lane]
            .synchronize()
            .map_err(drv)
            .and_then(|()| verdicts_ok(res.verdicts(q.lane, n)?, n));
        if r.is_err() {
            // The kernel zeroed the other scratch set only if it ran to its end; after
            // an error, the next launch zeroes both first.
            self.resident_mut()?.dirty();
        }
        r.map(|()| q.plan)
    }

    /// [`GpuOpener::wait_queued`], then the commit of the tensor's frames.
    fn finish_queued(&mut self, q: Queued) -> Result<(), GpuError> {
        let plan = self.wait_queued(q)?;
        commit_all(&mut self.channel, &plan)
    }

    /// Opens several tensors whose frames lie in pinned memory, in order, each into its
    /// own destination: `tensors[t]` is (the ranges of `src` holding tensor `t`'s
    /// frames, its destination), as for [`GpuOpener::open_tensor_pinned`]. The
    /// destinations must be distinct.
    ///
    /// With [`OpenSchedule::Resident`], up to [`GpuOpener::set_batch_depth`] tensors
    /// the resident kernel takes are on the GPU at once: the tensors after `t` are queued
    /// (their headers checked, their copies, flags and kernels queued, each kernel on a
    /// lane of its own) before the host waits for tensor `t`'s verdicts, so their copies
    /// run while tensor `t`'s kernel finishes and the host takes its verdicts. Nothing
    /// changes for security: each tensor is committed, in order, only after all its
    /// verdicts were read; the replay window refuses at commit a frame that a tensor
    /// still on the GPU delivered already. (The key-lifetime check counts committed
    /// frames, so it can pass up to batch-depth tensors' frames beyond its limit instead
    /// of one.) Other tensors, and every tensor under the other schedules, are opened one
    /// after the other as by `open_tensor_pinned`.
    ///
    /// On failure, the tensors before the one named were opened and committed; the one
    /// named and every one it had started on after it are zeroed in VRAM and not
    /// committed; the later ones are untouched.
    pub fn open_tensors_pinned(
        &mut self,
        now: u64,
        src: &PinnedBuffer,
        tensors: &[(&[std::ops::Range<usize>], BufferHandle)],
    ) -> Result<(), BatchError> {
        let fail = |tensor, error| BatchError { tensor, error };
        for (t, (_, d)) in tensors.iter().enumerate() {
            if tensors[..t].iter().any(|(_, e)| e == d) {
                return Err(fail(
                    t,
                    GpuError::InvalidArgument("a destination appears twice in the batch"),
                ));
            }
        }
        if self.schedule != OpenSchedule::Resident {
            for (t, (ranges, dst)) in tensors.iter().enumerate() {
                self.open_tensor_pinned(now, src, ranges, *dst)
                    .map_err(|e| fail(t, e))?;
            }
            return Ok(());
        }
        let mut on_gpu = OnGpu::new();
        for (t, (ranges, dst)) in tensors.iter().enumerate() {
            if on_gpu.len() >= self.batch_depth
                && let Some((k, q, d)) = on_gpu.pop_front()
                && let Err(e) = self.finish_queued(q)
            {
                return Err(self.abandon(fail(k, e), d, on_gpu, None));
            }
            let queued = frames_in(src, ranges).and_then(|frames| {
                let d = self.backend.buf(*dst)?;
                let d = (self.backend.ptr(&d.slice), d.len);
                Ok((self.queue_tensor(now, &frames, true, d.0, d.1, true)?, d))
            });
            match queued {
                Ok((Some(q), d)) => on_gpu.push_back((t, q, d)),
                Ok((None, _)) => {
                    self.drain(&mut on_gpu)
                        .map_err(|(e, d, rest)| self.abandon(e, d, rest, None))?;
                    self.open_tensor_pinned(now, src, ranges, *dst)
                        .map_err(|e| fail(t, e))?;
                }
                Err(e) => {
                    // Earlier tensors are still delivered if they verify.
                    let this = self
                        .backend
                        .buf(*dst)
                        .map(|d| (self.backend.ptr(&d.slice), d.len));
                    return Err(match self.drain(&mut on_gpu) {
                        Err((first, d, rest)) => self.abandon(first, d, rest, this.ok()),
                        Ok(()) => {
                            let _ = self.idle_all();
                            if let Ok((p, len)) = this {
                                let _ = self.backend.zero_device(p, len.max(1));
                            }
                            fail(t, e)
                        }
                    });
                }
            }
        }
        self.drain(&mut on_gpu)
            .map_err(|(e, d, rest)| self.abandon(e, d, rest, None))
    }

    /// Finishes the tensors on the GPU in order; on the first failure, returns it with
    /// that tensor's destination and the tensors still on the GPU.
    fn drain(&mut self, on_gpu: &mut OnGpu) -> Result<(), (BatchError, (u64, usize), OnGpu)> {
        while let Some((k, q, d)) = on_gpu.pop_front() {
            if let Err(error) = self.finish_queued(q) {
                return Err((BatchError { tensor: k, error }, d, std::mem::take(on_gpu)));
            }
        }
        Ok(())
    }

    /// After tensor `e.tensor` failed: waits for every stream, then zeroes its
    /// destination `d`, those of the tensors still on the GPU (not committed), and
    /// `also`. Returns `e`.
    fn abandon(
        &mut self,
        e: BatchError,
        d: (u64, usize),
        rest: OnGpu,
        also: Option<(u64, usize)>,
    ) -> BatchError {
        let _ = self.idle_all();
        let dsts = std::iter::once(d)
            .chain(rest.into_iter().map(|(_, _, d)| d))
            .chain(also);
        for (p, len) in dsts {
            let _ = self.backend.zero_device(p, len.max(1));
        }
        if let Ok(res) = self.resident_mut() {
            res.dirty();
        }
        e
    }

    /// Waits for every backend stream and the resident kernel's streams.
    fn idle_all(&self) -> Result<(), GpuError> {
        let copies = self.backend.sync_all();
        match &self.resident {
            Some(r) => copies.and(r.sync_lanes()),
            None => copies,
        }
    }

    /// The resident kernel's parameters for the frames of `plan` landing at `dst_p`, and
    /// each frame's header and ciphertext; `None` when the kernel does not take the
    /// tensor (too many frames or bytes, or a header too long to travel in the launch).
    fn tensor_params<'a>(
        &self,
        plan: &TensorPlan,
        frames: &[&'a [u8]],
        dst_p: u64,
    ) -> Result<Option<(TensorParams, Vec<FrameParts<'a>>)>, GpuError> {
        let n = plan.frames.len();
        let takes = resident_applies(n, plan.total_len)
            && frames.len() == n
            && plan.frames.iter().all(|f| f.header_len <= INLINE_AAD);
        if !takes {
            return Ok(None);
        }
        // At most RESIDENT_FRAMES frames here.
        let small =
            |v: usize| u32::try_from(v).map_err(|_| GpuError::InvalidArgument("too many frames"));
        let mut tp = TensorParams {
            data: [0; RESIDENT_FRAMES],
            part_base: [0; RESIDENT_FRAMES + 1],
            n_frames: small(n)?,
            generation: 0,
            flag_group: 0,
            f: [FrameParams::default(); RESIDENT_FRAMES],
        };
        let mut parts = Vec::with_capacity(n);
        for (i, (f, frame)) in plan.frames.iter().zip(frames).enumerate() {
            let (aad, ct) = f.parts(frame)?;
            let p = FrameParams::new(
                f.nonce(),
                ct.len(),
                aad,
                &f.tag,
                small(i)?,
                self.backend.grid_target,
            )?;
            tp.data[i] = dst_p + f.offset as u64;
            tp.part_base[i + 1] = tp.part_base[i] + p.n_parts;
            tp.f[i] = p;
            parts.push((aad, ct));
        }
        Ok(Some((tp, parts)))
    }

    /// Makes the resident kernel's scratch exist (all streams are idle). The first time,
    /// it also checks that the driver carries out the flag writes the kernel waits for,
    /// so that a driver without them fails here, before a kernel waits in vain.
    fn ensure_resident(&mut self) -> Result<(), GpuError> {
        if self.resident.is_some() {
            return Ok(());
        }
        let words = RESIDENT_FRAMES * RESIDENT_LANES;
        let arrived = PlainAlloc::new(&self.backend.ctx, 4 * words)?;
        let arrived_p = arrived.ptr;
        self.backend.zero_device(arrived_p, 4 * words)?;
        let s0 = self.backend.s0();
        write_flag(s0, arrived_p, 0)
            .and_then(|()| s0.synchronize().map_err(drv))
            .map_err(|e| {
                GpuError::Unavailable(format!(
                    "the resident schedule needs stream memory operations \
                     (cuStreamWriteValue32), which failed here: {e}"
                ))
            })?;
        let ctx = &self.backend.ctx;
        let event = || {
            ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))
                .map_err(drv)
        };
        let lane = || -> Result<Lane, GpuError> {
            let sets = self.backend.alloc_raw::<u32>(2 * SET_WORDS)?;
            // Zero now, so that no lane's first launch needs a memset.
            self.backend
                .zero_device(self.backend.ptr(&sets), 8 * SET_WORDS)?;
            Ok(Lane {
                stream: ctx.new_stream().map_err(drv)?,
                sets,
                set: 0,
                clean: true,
                partials: self
                    .backend
                    .alloc_raw::<u32>(4 * RESIDENT_FRAMES * FINAL_THREADS as usize)?,
            })
        };
        self.resident = Some(Resident {
            lanes: (0..RESIDENT_LANES)
                .map(|_| lane())
                .collect::<Result<_, _>>()?,
            arrived,
            host: PinnedBuffer::new(ctx, 4 * words)?,
            done: (0..RESIDENT_LANES)
                .map(|_| event())
                .collect::<Result<_, _>>()?,
            lane: 0,
            flags: ctx.new_stream().map_err(drv)?,
            generation: 0,
        });
        Ok(())
    }

    /// The next value of the `arrived` flags. When it wraps, the flags are zeroed first
    /// (after every stream is idle: a tensor may still be on the GPU), so an old flag
    /// never matches.
    fn next_gen(&mut self) -> Result<u32, GpuError> {
        let r = self
            .resident
            .as_mut()
            .ok_or(GpuError::InvalidArgument("resident scratch missing"))?;
        r.generation = r.generation.wrapping_add(1);
        if r.generation == 0 {
            r.generation = 1;
            let p = r.arrived.ptr;
            self.idle_all()?;
            self.backend
                .zero_device(p, 4 * RESIDENT_FRAMES * RESIDENT_LANES)?;
        }
        Ok(self.resident()?.generation)
    }

    /// Queues everything of one resident tensor: each frame's copy on the backend's
    /// streams in turn (and its staging slot), as the other schedules do, each followed
    /// by the write of its flag (in lane `at.lane`'s part) on the same stream, or for a
    /// batch (`at.batch`) on the flag stream after waiting for the copy; the kernel on
    /// `ks` right after the first frame's copy is queued (so that the copy does not wait
    /// for the launch); then the copy of the status words back into lane `lane`'s part of
    /// the pinned host copy and the lane's event, on `ks`. `launched` tells whether the
    /// kernel was queued.
    fn queue_resident(
        &mut self,
        ks: &CudaStream,
        parts: &[FrameParts<'_>],
        pinned: bool,
        tp: &TensorParams,
        at: Placement,
        launched: &mut bool,
    ) -> Result<(), GpuError> {
        let Placement { lane, batch } = at;
        if !pinned {
            // Before the launch: allocating or freeing page-locked memory synchronises
            // the device, which would wait for a kernel that waits for this tensor's
            // later frames (until it gives up, after RESIDENT_TIMEOUT_NS).
            self.reserve_staging(parts)?;
        }
        let arrived_p = self.resident()?.arrived_at(lane);
        let mut status_p = 0;
        for (i, (aad, ct)) in parts.iter().enumerate() {
            let k = i % self.slots.len();
            let s = self.backend.streams[k].clone();
            let aad_p = self.backend.ptr(&self.slots[k].aad);
            // SAFETY: tp.data[i] holds the frame's ciphertext length (checked against the
            // destination); the sources outlive the copies (the kernel, which the caller
            // waits for, waits for every copy; after an error the caller synchronises
            // every stream). Headers are inline here (checked), so the AAD is not copied.
            unsafe { self.copy_frame(&s, k, pinned, aad, ct, tp.data[i], aad_p) }?;
            // With grouped flags only the stream's last frame of the tensor has one.
            let group = tp.flag_group as usize;
            if group == 0 || i + group >= parts.len() {
                let flag_p = arrived_p + 4 * i as u64;
                if batch {
                    // After the copy, on the flag stream (staged copies already recorded
                    // the slot's event).
                    if pinned {
                        self.slots[k].copied.record(&s).map_err(drv)?;
                    }
                    let fs = self.resident()?.flags.clone();
                    fs.wait(&self.slots[k].copied).map_err(drv)?;
                    write_flag(&fs, flag_p, tp.generation)?;
                } else {
                    write_flag(&s, flag_p, tp.generation)?;
                }
            }
            if i == 0 {
                status_p = self.launch_resident(ks, tp, arrived_p, lane)?;
                *launched = true;
            }
        }
        if !*launched {
            return Err(GpuError::InvalidArgument("a tensor without frames"));
        }
        self.fetch_resident(ks, status_p, tp.n_frames as usize, lane)
    }

    /// Queues on `ks` the copy of the `n` status words at `status_p` (a launch's set)
    /// into lane `lane`'s part of the pinned host copy, then records the lane's event.
    fn fetch_resident(
        &mut self,
        ks: &CudaStream,
        status_p: u64,
        n: usize,
        lane: usize,
    ) -> Result<(), GpuError> {
        let res = self.resident_mut()?;
        let at = 4 * RESIDENT_FRAMES * lane;
        let host = res
            .host
            .as_mut_slice()
            .get_mut(at..at + 4 * n)
            .ok_or(GpuError::InvalidArgument("status buffer too small"))?;
        // SAFETY: `host` is pinned, 4n bytes, and not read or written again until the
        // lane's event (recorded next) has completed: the caller waits for it before it
        // reads the verdicts, and the lane is not used again before that; the set holds
        // RESIDENT_FRAMES >= n status words.
        unsafe { result::memcpy_dtoh_async(host, status_p, ks.cu_stream()) }.map_err(drv)?;
        res.done[lane].record(ks).map_err(drv)
    }

    /// Queues, on lane `lane`'s stream `ks`, the resident kernel over all frames of `tp`
    /// with the lane's current set of scratch words (zeroing both its sets first unless
    /// its last launch completed), and moves the lane on to its other set. Returns the
    /// address of the launch's status words.
    fn launch_resident(
        &mut self,
        ks: &CudaStream,
        tp: &TensorParams,
        arrived_p: u64,
        lane: usize,
    ) -> Result<u64, GpuError> {
        let ctx_p = self.backend.ptr(&self.key.ctx);
        let r = self
            .resident
            .as_mut()
            .and_then(|r| r.lanes.get_mut(lane))
            .ok_or(GpuError::InvalidArgument("resident scratch missing"))?;
        let (sets_p, parts_p) = (self.backend.ptr(&r.sets), self.backend.ptr(&r.partials));
        if !r.clean {
            // SAFETY: `sets` holds 2 * SET_WORDS words; only this lane's kernels use
            // them, and the lane's stream orders this after its previous kernel.
            unsafe { result::memset_d8_async(sets_p, 0, 8 * SET_WORDS, ks.cu_stream()) }
                .map_err(drv)?;
            r.clean = true;
        }
        let work_p = sets_p + 4 * (r.set * SET_WORDS) as u64;
        let next_p = sets_p + 4 * ((r.set ^ 1) * SET_WORDS) as u64;
        // Whatever happens to this launch, the next one uses the other set.
        r.set ^= 1;
        let n = tp.n_frames as usize;
        let total = tp.part_base[n];
        let mut b = ks.launch_builder(&self.backend.k.tensor);
        b.arg(&ctx_p)
            .arg(tp)
            .arg(&arrived_p)
            .arg(&work_p)
            .arg(&next_p)
            .arg(&parts_p);
        let cfg = LaunchConfig {
            grid_dim: (total.clamp(1, self.backend.grid_target.max(1)), 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: gcm_open_tensor(const u32 *ctx, tensor_params, const u32 *arrived,
        // u32 *work, u32 *next, u32 *partials): `ctx` holds CTX_WORDS, `arrived`
        // RESIDENT_FRAMES, `work` and `next` SET_WORDS each (distinct halves of `sets`;
        // `work` is zero: zeroed by the previous launch, or just above), `partials`
        // 4 * FINAL_THREADS per frame (each frame has at most FINAL_THREADS parts); frame
        // indices are below n <= RESIDENT_FRAMES; every `tp.data[i]` lies in the
        // destination, checked against its length by the caller.
        unsafe { b.launch(cfg) }.map_err(drv)?;
        Ok(work_p + 4 * WORK_WORDS as u64)
    }

    /// After an error with the resident kernel running: writes every frame's flag on
    /// stream 0 (a copy stream), so that the kernel ends (it fails the frames whose data
    /// is not there; one whose copy on another stream is still in flight may be read
    /// early and fail too, which is harmless: the call fails, and the caller zeroes the
    /// destination once every stream is idle). Errors are ignored: the caller reports the
    /// first one, and the kernel's wait ends by itself after its timeout.
    fn release_resident(&self, lane: usize, generation: u32, n: usize) {
        let Ok(r) = self.resident() else { return };
        let arrived_p = r.arrived_at(lane);
        let s = self.backend.s0();
        for i in 0..n {
            let _ = write_flag(s, arrived_p + 4 * i as u64, generation);
        }
    }

    /// The kept status buffers (made by [`GpuOpener::ensure_verdicts`]).
    fn verdicts(&self) -> Result<&Verdicts, GpuError> {
        self.verdicts
            .as_ref()
            .ok_or(GpuError::InvalidArgument("status buffer missing"))
    }

    /// The resident kernel's scratch (made by [`GpuOpener::ensure_resident`]).
    fn resident(&self) -> Result<&Resident, GpuError> {
        self.resident
            .as_ref()
            .ok_or(GpuError::InvalidArgument("resident scratch missing"))
    }

    /// [`GpuOpener::resident`], mutable.
    fn resident_mut(&mut self) -> Result<&mut Resident, GpuError> {
        self.resident
            .as_mut()
            .ok_or(GpuError::InvalidArgument("resident scratch missing"))
    }

    /// Makes the kept status buffers hold at least `n` frames (all streams are idle).
    fn ensure_verdicts(&mut self, n: usize) -> Result<(), GpuError> {
        if self.verdicts.as_ref().is_some_and(|v| v.cap >= n) {
            return Ok(());
        }
        let cap = n.max(64).next_power_of_two();
        let event = || {
            let flags = sys::CUevent_flags::CU_EVENT_DISABLE_TIMING;
            self.backend.ctx.new_event(Some(flags)).map_err(drv)
        };
        let zeroed = event()?;
        let done = (1..self.backend.streams.len())
            .map(|_| event())
            .collect::<Result<Vec<_>, _>>()?;
        self.verdicts = None;
        self.verdicts = Some(Verdicts {
            dev: self.backend.alloc_raw::<u32>(cap)?,
            host: self.backend.alloc_pinned(4 * cap)?,
            cap,
            zeroed,
            done,
        });
        Ok(())
    }

    /// Queues the zeroing of `n` status words on stream 0 and makes the other streams
    /// wait for it on the device before anything queued on them later.
    fn zero_verdicts(&self, s0: &CudaStream, status_p: u64, n: usize) -> Result<(), GpuError> {
        let v = self.verdicts()?;
        // SAFETY: the kept buffer holds `cap >= n` words; the previous tensor's readback
        // was waited for, so nothing else uses it.
        unsafe { result::memset_d8_async(status_p, 0, 4 * n, s0.cu_stream()) }.map_err(drv)?;
        v.zeroed.record(s0).map_err(drv)?;
        for s in &self.backend.streams[1..] {
            s.wait(&v.zeroed).map_err(drv)?;
        }
        Ok(())
    }

    /// Makes stream 0 wait for every other stream, then queues the copy of `n` status
    /// words into the pinned host copy (read after stream 0 completes).
    fn fetch_verdicts(&mut self, s0: &CudaStream, status_p: u64, n: usize) -> Result<(), GpuError> {
        let v = self
            .verdicts
            .as_mut()
            .ok_or(GpuError::InvalidArgument("status buffer missing"))?;
        for (s, done) in self.backend.streams[1..].iter().zip(&v.done) {
            done.record(s).map_err(drv)?;
            s0.wait(done).map_err(drv)?;
        }
        let host = v
            .host
            .as_mut_slice()
            .get_mut(..4 * n)
            .ok_or(GpuError::InvalidArgument("status buffer too small"))?;
        // SAFETY: `host` is pinned, 4n bytes, and not touched until stream 0 completes
        // (the caller synchronises it before reading); the source holds `cap >= n` words.
        unsafe { result::memcpy_dtoh_async(host, status_p, s0.cu_stream()) }.map_err(drv)
    }

    /// The enqueueing half of [`GpuOpener::enqueue_and_wait`].
    fn enqueue(
        &mut self,
        now: u64,
        frames: &[&[u8]],
        pinned: bool,
        dst_p: u64,
        dst_len: usize,
        status_p: u64,
    ) -> Result<TensorPlan, GpuError> {
        let grid = self.backend.grid_target;
        let mut planner = Planner::new();
        for (i, frame) in frames.iter().enumerate() {
            let (f, total) = planner.push(&self.channel, now, frame)?;
            if total > dst_len {
                return Err(GpuError::InvalidArgument(
                    "destination shorter than the tensor",
                ));
            }
            let (aad, ct) = f.parts(frame)?;
            let index =
                u32::try_from(i).map_err(|_| GpuError::InvalidArgument("too many frames"))?;
            let p = FrameParams::new(f.nonce(), ct.len(), aad, &f.tag, index, grid)?;
            let data_p = dst_p + f.offset as u64;
            let k = i % self.slots.len();
            let s = self.backend.streams[k].clone();
            let (aad_p, parts_p) = (
                self.backend.ptr(&self.slots[k].aad),
                self.backend.ptr(&self.slots[k].partials),
            );
            // SAFETY: the destinations were checked (offset + len <= total <= dst_len);
            // the caller synchronises every stream before the sources are released.
            unsafe { self.copy_frame(&s, k, pinned, aad, ct, data_p, aad_p) }?;
            self.backend
                .launch_open(&s, &self.key, data_p, aad_p, parts_p, status_p, &p)?;
        }
        planner.finish()
    }

    /// Grows the staging buffers now to what `copy_frame` will need for `parts` (frame i
    /// takes slot i mod slots), so that no page-locked memory is allocated or freed while
    /// the frames are queued.
    fn reserve_staging(&mut self, parts: &[FrameParts<'_>]) -> Result<(), GpuError> {
        let n = self.slots.len();
        for k in 0..n {
            let need = parts
                .iter()
                .skip(k)
                .step_by(n)
                .map(|(_, ct)| ct.len())
                .max();
            if let Some(need) = need {
                self.grow_staging(k, MAX_AAD + need)?;
            }
        }
        Ok(())
    }

    /// Makes slot `k`'s staging buffer hold at least `need` bytes: a smaller one is
    /// replaced once its previous copy is done.
    fn grow_staging(&mut self, k: usize, need: usize) -> Result<&mut PinnedBuffer, GpuError> {
        let slot = &mut self.slots[k];
        if slot.staging.as_ref().is_none_or(|b| b.len() < need) {
            slot.copied.synchronize().map_err(drv)?;
            slot.staging = None;
            slot.staging = Some(PinnedBuffer::new(&self.backend.ctx, need)?);
        }
        slot.staging
            .as_mut()
            .ok_or(GpuError::InvalidArgument("staging buffer missing"))
    }

    /// Queues the copy of one frame's ciphertext to `data_p` (and its AAD to `aad_p`
    /// when it is too long to travel in the launch parameters) on `s`. Frames in
    /// pageable memory go through the staging buffer of slot `k`, after waiting for that
    /// buffer's previous copy; frames in pinned memory are copied directly.
    ///
    /// # Safety
    ///
    /// `data_p` must hold `ct.len()` bytes and `aad_p` `MAX_AAD`; with `pinned`, `ct` and
    /// `aad` must lie in pinned memory that outlives the copies (the caller synchronises
    /// `s` before releasing it).
    #[allow(clippy::too_many_arguments)]
    unsafe fn copy_frame(
        &mut self,
        s: &CudaStream,
        k: usize,
        pinned: bool,
        aad: &[u8],
        ct: &[u8],
        data_p: u64,
        aad_p: u64,
    ) -> Result<(), GpuError> {
        let long_aad = aad.len() > INLINE_AAD;
        if pinned {
            // SAFETY: the caller's contract.
            unsafe {
                if long_aad {
                    result::memcpy_htod_async(aad_p, aad, s.cu_stream()).map_err(drv)?;
                }
                if !ct.is_empty() {
                    result::memcpy_htod_async(data_p, ct, s.cu_stream()).map_err(drv)?;
                }
            }
            return Ok(());
        }
        // Wait until the previous copy out of this slot's staging buffer is done.
        self.slots[k].copied.synchronize().map_err(drv)?;
        let buf = self.grow_staging(k, MAX_AAD + ct.len())?.as_mut_slice();
        if long_aad {
            buf[..aad.len()].copy_from_slice(aad);
        }
        buf[MAX_AAD..MAX_AAD + ct.len()].copy_from_slice(ct);
        // SAFETY: the caller's contract for the destinations; the staging buffer is not
        // written again before `copied` (recorded right after these copies) has completed.
        unsafe {
            if long_aad {
                result::memcpy_htod_async(aad_p, &buf[..aad.len()], s.cu_stream()).map_err(drv)?;
            }
            if !ct.is_empty() {
                result::memcpy_htod_async(data_p, &buf[MAX_AAD..MAX_AAD + ct.len()], s.cu_stream())
                    .map_err(drv)?;
            }
        }
        self.slots[k].copied.record(s).map_err(drv)
    }

    /// Kernel-only timing for `pqcc bench gpu`: the frames of `src` (pinned, `ranges`)
    /// are copied to VRAM once, then opened in place `iterations` times (each time from
    /// a pristine device copy, restored outside the timed region), timed with device
    /// events around the decryption and tag kernels of all frames. Checks that every
    /// frame verified. Returns seconds per iteration (median). Does not touch the replay
    /// window (nothing is delivered).
    pub fn time_kernels(
        &mut self,
        now: u64,
        src: &PinnedBuffer,
        ranges: &[std::ops::Range<usize>],
        iterations: usize,
    ) -> Result<f64, GpuError> {
        // The per-frame kernels of `PerTensor` and `Persistent`.
        self.schedule_allowed(OpenSchedule::PerTensor)?;
        let frames = frames_in(src, ranges)?;
        let plan = plan_tensor(&self.channel, now, frames.iter().copied())?;
        let total = plan.total_len;
        let n = plan.frames.len();
        let pristine = self.backend.alloc_raw::<u8>(total)?;
        let work = self.backend.alloc_raw::<u8>(total)?;
        let status = self.backend.alloc_raw::<u32>(n)?;
        let aad_all = self.backend.alloc_raw::<u8>(n * MAX_AAD)?;
        let b = self.backend.ptr(&pristine);
        let w = self.backend.ptr(&work);
        let s = self.backend.ptr(&status);
        let a = self.backend.ptr(&aad_all);
        let r = self.time_kernels_inner(&plan, &frames, [b, w, s, a], iterations);
        // Idle every stream before the scratch buffers are wiped and freed, also after an
        // error midway (their frees are ordered on stream 0 only).
        let synced = self.backend.sync_all();
        let wiped = self.backend.zero_device(w, total.max(1));
        drop((pristine, work, status, aad_all));
        let t = r?;
        synced?;
        wiped?;
        Ok(t)
    }

    /// The timed loop of [`GpuOpener::time_kernels`]; `bufs` = device pointers of the
    /// pristine ciphertext, the work copy, the status words and the AAD area.
    fn time_kernels_inner(
        &mut self,
        plan: &TensorPlan,
        frames: &[&[u8]],
        bufs: [u64; 4],
        iterations: usize,
    ) -> Result<f64, GpuError> {
        let [pr_p, wk_p, status_p, aad_all_p] = bufs;
        let (total, n) = (plan.total_len, plan.frames.len());
        let sms = self.backend.grid_target;
        let mut params = Vec::with_capacity(n);
        for (i, (f, frame)) in plan.frames.iter().zip(frames).enumerate() {
            let (aad, ct) = f.parts(frame)?;
            let index =
                u32::try_from(i).map_err(|_| GpuError::InvalidArgument("too many frames"))?;
            params.push(FrameParams::new(
                f.nonce(),
                ct.len(),
                aad,
                &f.tag,
                index,
                sms,
            )?);
            // SAFETY: synchronous copies of ciphertext and headers into allocations sized
            // by the plan (offset + len <= total) and n * MAX_AAD (aad <= MAX_AAD).
            unsafe {
                if !ct.is_empty() {
                    result::memcpy_htod_sync(pr_p + f.offset as u64, ct).map_err(drv)?;
                }
                if aad.len() > INLINE_AAD {
                    result::memcpy_htod_sync(aad_all_p + (i * MAX_AAD) as u64, aad).map_err(drv)?;
                }
            }
        }
        let s0 = self.backend.s0().clone();
        let mut times = Vec::with_capacity(iterations);
        for _ in 0..iterations.max(1) {
            // SAFETY: device-to-device copy between two allocations of `total` bytes.
            unsafe {
                result::memcpy_dtod_async(wk_p, pr_p, total, s0.cu_stream()).map_err(drv)?;
                result::memset_d8_async(status_p, 0, 4 * n, s0.cu_stream()).map_err(drv)?;
            }
            s0.synchronize().map_err(drv)?;
            let start = s0
                .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv)?;
            for (i, (f, p)) in plan.frames.iter().zip(&params).enumerate() {
                let s = &self.backend.streams[i % self.slots.len()];
                s.wait(&start).map_err(drv)?;
                let parts_p = self.backend.ptr(&self.slots[i % self.slots.len()].partials);
                let aad_p = aad_all_p + (i * MAX_AAD) as u64;
                self.backend.launch_open(
                    s,
                    &self.key,
                    wk_p + f.offset as u64,
                    aad_p,
                    parts_p,
                    status_p,
                    p,
                )?;
            }
            for s in &self.backend.streams[1..] {
                s0.join(s).map_err(drv)?;
            }
            let end = s0
                .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv)?;
            let ms = start.elapsed_ms(&end).map_err(drv)?;
            times.push(f64::from(ms) / 1e3);
            let mut st = vec![0u32; n];
            // SAFETY: `status` holds n u32; s0 joined every stream and `end` completed.
            unsafe { result::memcpy_dtoh_sync(&mut st, status_p) }.map_err(drv)?;
            if let Some(frame) = st.iter().position(|&v| v != 1) {
                return Err(GpuError::TagMismatch { frame });
            }
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }

    /// Kernel-only timing of [`OpenSchedule::Resident`]'s kernel for `pqcc bench gpu`, as
    /// [`GpuOpener::time_kernels`] does for the per-frame kernels: every frame's flag is
    /// written before the launch, so the one `gcm_open_tensor` launch is timed (device
    /// events around it) with all frames already in VRAM: what the kernel adds after the
    /// last copy, at most. Checks that every frame verified. `None` for tensors the
    /// kernel does not take. Does not touch the replay window.
    pub fn time_resident_kernel(
        &mut self,
        now: u64,
        src: &PinnedBuffer,
        ranges: &[std::ops::Range<usize>],
        iterations: usize,
    ) -> Result<Option<f64>, GpuError> {
        self.schedule_allowed(OpenSchedule::Resident)?;
        let frames = frames_in(src, ranges)?;
        let plan = plan_tensor(&self.channel, now, frames.iter().copied())?;
        let total = plan.total_len;
        let pristine = self.backend.alloc_raw::<u8>(total)?;
        let work = self.backend.alloc_raw::<u8>(total)?;
        let (pr_p, wk_p) = (self.backend.ptr(&pristine), self.backend.ptr(&work));
        let r = self.time_resident_inner(&plan, &frames, pr_p, wk_p, iterations);
        // Idle every stream (the kernel's too) before the buffers are wiped and freed.
        let mut synced = self.backend.sync_all();
        if let Some(res) = self.resident.as_mut() {
            synced = synced.and(res.sync_lanes());
            res.lanes[0].clean &= r.is_ok();
        }
        let wiped = self.backend.zero_device(wk_p, total.max(1));
        drop((pristine, work));
        let t = r?;
        synced?;
        wiped?;
        Ok(t)
    }

    /// The timed loop of [`GpuOpener::time_resident_kernel`] over the pristine
    /// ciphertext at `pr_p`, opened in the work copy at `wk_p`.
    fn time_resident_inner(
        &mut self,
        plan: &TensorPlan,
        frames: &[&[u8]],
        pr_p: u64,
        wk_p: u64,
        iterations: usize,
    ) -> Result<Option<f64>, GpuError> {
        let Some((mut tp, parts)) = self.tensor_params(plan, frames, wk_p)? else {
            return Ok(None);
        };
        for (f, (_, ct)) in plan.frames.iter().zip(&parts) {
            if !ct.is_empty() {
                // SAFETY: synchronous copy into an allocation of plan.total_len bytes
                // (offset + len <= total).
                unsafe { result::memcpy_htod_sync(pr_p + f.offset as u64, ct) }.map_err(drv)?;
            }
        }
        self.ensure_resident()?;
        let ks = self.resident()?.lanes[0].stream.clone();
        let arrived_p = self.resident()?.arrived_at(0);
        let (total, n) = (plan.total_len, parts.len());
        let mut times = Vec::with_capacity(iterations);
        for _ in 0..iterations.max(1) {
            tp.generation = self.next_gen()?;
            // SAFETY: device-to-device copy between two allocations of `total` bytes.
            unsafe { result::memcpy_dtod_async(wk_p, pr_p, total, ks.cu_stream()) }.map_err(drv)?;
            for i in 0..n {
                write_flag(&ks, arrived_p + 4 * i as u64, tp.generation)?;
            }
            let start = ks
                .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv)?;
            let status_p = self.launch_resident(&ks, &tp, arrived_p, 0)?;
            let end = ks
                .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv)?;
            self.fetch_resident(&ks, status_p, n, 0)?;
            ks.synchronize().map_err(drv)?;
            times.push(f64::from(start.elapsed_ms(&end).map_err(drv)?) / 1e3);
            verdicts_ok(self.resident()?.verdicts(0, n)?, n)?;
        }
        times.sort_by(f64::total_cmp);
        Ok(Some(times[times.len() / 2]))
    }
}

/// A frame's header (the AAD) and ciphertext.
type FrameParts<'a> = (&'a [u8], &'a [u8]);

/// Where a resident tensor's work goes: its lane, and whether it is part of a batch (its
/// flags then go to the flag stream; see `GpuOpener::queue_tensor`).
#[derive(Debug, Clone, Copy)]
struct Placement {
    lane: usize,
    batch: bool,
}

/// The frames at `ranges` of the pinned buffer `src`.
fn frames_in<'a>(
    src: &'a PinnedBuffer,
    ranges: &[std::ops::Range<usize>],
) -> Result<Vec<&'a [u8]>, GpuError> {
    let all = src.as_slice();
    ranges
        .iter()
        .map(|r| {
            all.get(r.clone()).ok_or(GpuError::InvalidArgument(
                "frame range outside the pinned buffer",
            ))
        })
        .collect()
}

impl<const W: usize> Drop for GpuOpener<W> {
    fn drop(&mut self) {
        let _ = self.backend.sync_all();
        if let Some(r) = &self.resident {
            let _ = r.sync_lanes();
        }
        let _ = self.key.wipe(&self.backend);
    }
}
