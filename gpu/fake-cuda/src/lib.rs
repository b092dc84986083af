//! **FakeCuda**: a fake of NVIDIA's CUDA driver library (`libcuda.so`), standing in for
//! the GPU that a machine running pqcc-gpu's tests may lack. It is a test tool only.
//!
//! It implements the driver entry points that cudarc calls for `pqcc_gpu::cuda` with
//! the semantics that code relies on, and checks them strictly:
//!
//! - **Streams run lazily.** Work queued on a stream (copies, memsets, kernel launches,
//!   stream-ordered allocations and frees, event waits) runs only when the host forces
//!   it: a stream or event synchronize, a context synchronize, or a cross-stream wait that
//!   such a call resolves. Host code that reads a result, reuses a buffer or frees memory
//!   before waiting for the work that touches it therefore sees stale data or gets an
//!   error every time, not only under an unlucky schedule. In the other order
//!   ([`pqcc_fake_cuda_set_order`]) a wait first runs every other stream to its end, so
//!   work that should have waited for another stream runs too early, every time.
//! - **Memory is checked.** Every device access must lie inside a live allocation
//!   (stream-ordered allocations become live when their stream reaches them, frees take
//!   effect likewise); new device memory is filled with `0xCD`; freeing pinned host
//!   memory that a queued copy still reads is an error. Copies from pageable host memory
//!   are taken at the call, as CUDA does; copies to and from pinned memory at execution.
//! - **Kernels** are the four of `aes_gcm.cu`, recognised by name. Their launch
//!   geometry and parameters (`frame_params`, `tensor_params`) are checked against the
//!   invariants the real kernels rely on; their effect is computed on the CPU with
//!   pqcc-core's AES-256-GCM: `gcm_setup` keeps the key in the context buffer (this
//!   fake's own layout) and zeroes the raw key; `gcm_open_main` opens the frame in place;
//!   `gcm_open_final` writes the verdict (1 verified, 2 mismatch) and zeroes the frame
//!   when the tag failed; `gcm_open_tensor` does both for every frame of a tensor, each
//!   once its arrival flag holds the tensor's generation.
//! - **A resident kernel waits for other streams.** `gcm_open_tensor` is launched before
//!   the copies that deliver its frames; each copy's stream then writes the frame's
//!   arrival flag (`cuStreamWriteValue32`). While the kernel waits for a flag, the fake
//!   runs the operations queued on the other streams one at a time, as a GPU runs them
//!   concurrently (`State::progress_others`): never the kernel's own stream's later
//!   work, never a launch, never past an event wait that the kernel itself must satisfy.
//!   A flag that no queued operation can still write ends the wait as the kernel's
//!   timeout does: status 3 and the frame zeroed. Freeing memory the running kernel uses
//!   is a fault.
//! - **Or the kernels themselves** ([`pqcc_fake_cuda_set_kernels`]): `emu/emu.cpp`
//!   compiles `aes_gcm.cu` unchanged as C++ against `emu/cuda_shim.h` and runs each block's
//!   threads as fibers, `__syncthreads` and shuffles being barriers, so the kernel's own
//!   arithmetic, indexing and barrier structure are checked on a CPU (slowly). The
//!   kernel's `__nanosleep` lets the other streams progress the same way, and its clock
//!   is emulated: one second passes per sleep in which nothing could progress, so a
//!   frame that never arrives times out after about ten such sleeps.
//! - **Errors are sticky**, as on a GPU: the first failure of queued work is reported by
//!   every later synchronising call. [`pqcc_fake_cuda_last_error`] says what it was.
//! - **Host waits are counted** ([`pqcc_fake_cuda_counters`]), so tests can check how
//!   many round trips a tensor costs; so are launches and stream memory writes.
//! - **Confidential-computing mode** ([`pqcc_fake_cuda_set_cc`], or
//!   `PQCC_FAKE_CUDA_CC=on|devtools|off` at `cuInit` / `nvmlInit_v2`): what an H100/H200
//!   driver does with CC on (docs/gpu.md, "Confidential-computing mode"). Registering
//!   host memory (`cuMemHostRegister`) is refused with `CUDA_ERROR_NOT_SUPPORTED`, as the
//!   driver does; page-locked allocations (`cuMemHostAlloc`) still work, and every copy
//!   between host memory (page-locked or pageable) and VRAM is counted as going through
//!   the driver's encrypted bounce buffers; the GPU reaches no host memory directly:
//!   `cuMemHostGetDevicePointer` and `cuStreamWriteValue32` on host memory are refused
//!   with `CUDA_ERROR_NOT_SUPPORTED` (codes chosen here: not confirmed on a CC-on GPU),
//!   and a kernel given a host address fails its launch. With CC off the fake allows the
//!   last two, as a driver with unified addressing does.
//! - **NVML's CC state**: the library also exports `nvmlInit_v2`, `nvmlShutdown`,
//!   `nvmlErrorString` and `nvmlSystemGetConfComputeState` with NVML's ABI, answering
//!   from the CC mode above ([`pqcc_fake_cuda_set_nvml`] makes them fail), so that
//!   pqcc-gpu's detection of CC mode runs against it.
//!
//! pqcc-gpu refuses a device of this driver unless told it is a test
//! (`pqcc_gpu::cuda::insecure_allow_fake_driver`, or `PQCC_INSECURE_FAKE_CUDA=1`).
//!
//! It knows nothing of timing: `cuEventElapsedTime` reports a nominal 1 µs per queued
//! operation between the events. It exposes one device, "FakeCuda", compute capability
//! 9.0, 132 multiprocessors.

// The C entry points are documented by NVIDIA's driver API; this crate's own docs say
// where the fake differs.
// Device addresses are host addresses here: 64-bit targets only.
#![allow(
    unsafe_code,
    non_snake_case,
    missing_docs,
    clippy::missing_safety_doc,
    clippy::cast_possible_truncation
)]
#[cfg(not(target_pointer_width = "64"))]
compile_error!("FakeCuda maps device addresses to host addresses: 64-bit targets only");

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::sync::{Mutex, MutexGuard};

use pqcc_core::aead::{Aes256GcmProvider, RustCryptoAesGcm};

#[cfg(test)]
mod tests;

type CuResult = c_uint;
const SUCCESS: CuResult = 0;
const INVALID_VALUE: CuResult = 1;
const OUT_OF_MEMORY: CuResult = 2;
const NOT_INITIALIZED: CuResult = 3;
const INVALID_DEVICE: CuResult = 101;
const INVALID_IMAGE: CuResult = 200;
const INVALID_HANDLE: CuResult = 400;
const NOT_FOUND: CuResult = 500;
const ILLEGAL_ADDRESS: CuResult = 700;
const LAUNCH_FAILED: CuResult = 719;
/// `CUDA_ERROR_NOT_SUPPORTED`.
const NOT_SUPPORTED: CuResult = 801;

/// Threads per block of `gcm_open_main` (`THREADS` in the kernel source).
const THREADS: u64 = 256;
/// Most threads of `gcm_open_final`.
const FINAL_THREADS: u64 = 1024;
/// Rows of the kernel's part-weight table (`WEIGHT_ROWS`: `log_blk` 8 to 15).
const WEIGHT_ROWS: usize = 8;
/// Words of a key context (`CTX_WORDS`): round keys, H^(2^k), H^i, part weights.
const CTX_WORDS: usize =
    64 + 4 * 64 + 4 * THREADS as usize + 4 * WEIGHT_ROWS * FINAL_THREADS as usize;
/// Inline AAD bytes in `frame_params` (`INLINE_AAD`).
const INLINE_AAD: usize = 272;
/// Bytes of `struct frame_params`: 15 words and the inline AAD.
const PARAMS_LEN: usize = 4 * 15 + INLINE_AAD;
/// Marks a key context written by this fake's `gcm_setup`.
const CTX_MAGIC: &[u8; 8] = b"FAKECTX1";
/// Most frames of one `gcm_open_tensor` launch (`RESIDENT_FRAMES`).
const RESIDENT_FRAMES: usize = 8;
/// Bytes of `struct tensor_params`: `data[8]`, `part_base[9]`, `n_frames`, `gen`,
/// `flag_group`, then eight `frame_params`.
const TENSOR_PARAMS_LEN: usize = 2768;
/// Offset of `tensor_params.f`.
const TENSOR_FRAMES_AT: usize = 8 * RESIDENT_FRAMES + 4 * (RESIDENT_FRAMES + 1) + 12;
/// Words of `gcm_open_tensor`'s counters at the start of `work`: the part counter, per
/// frame the finished parts and the gave-up mark (`STATUS_AT`); the status words follow.
const WORK_WORDS: usize = 1 + 2 * RESIDENT_FRAMES;
/// Words of one set of `gcm_open_tensor`'s scratch (`work` and `next`): counters, then a
/// status word per frame (`SET_WORDS`).
const SET_WORDS: usize = WORK_WORDS + RESIDENT_FRAMES;
/// `CU_STREAM_WRITE_VALUE_DEFAULT`: the write is ordered after the stream's earlier work
/// and its memory writes (a memory barrier).
const WRITE_VALUE_DEFAULT: c_uint = 0;
/// `status` of a frame `gcm_open_tensor` gave up waiting for.
const STATUS_TIMED_OUT: u32 = 3;

/// Counter slots of [`pqcc_fake_cuda_counters`].
const C_STREAM_SYNC: usize = 0;
const C_EVENT_SYNC: usize = 1;
const C_CTX_SYNC: usize = 2;
const C_SYNC_COPY: usize = 3;
const C_ALLOC: usize = 4;
const C_FREE: usize = 5;
const C_LAUNCH: usize = 6;
const C_HOST_ALLOC: usize = 7;
const C_WRITE_VALUE: usize = 8;
/// Frames a resident kernel gave up waiting for (status 3).
const C_TIMED_OUT: usize = 9;
/// Operations queued on streams (copies, memsets, launches, event waits, value writes).
const C_QUEUED: usize = 10;
/// For each `gcm_open_tensor` launch, how many earlier ones had not run yet when it was
/// queued, summed (tensors on the GPU at once).
const C_TENSOR_BEHIND: usize = 11;
/// Copies between host memory and VRAM made in CC mode, which the driver stages through
/// its encrypted bounce buffers.
const C_BOUNCED: usize = 12;
/// Their bytes.
const C_BOUNCED_BYTES: usize = 13;
const COUNTERS: usize = 14;

/// `CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED`.
const HOST_MEMORY_ALREADY_REGISTERED: CuResult = 712;
/// `CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED`.
const HOST_MEMORY_NOT_REGISTERED: CuResult = 713;

/// The GPU's confidential-computing mode ([`pqcc_fake_cuda_set_cc`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
enum Cc {
    #[default]
    Off,
    On,
    /// CC on with the developer tools mode (NVML's `devToolsMode` 1): the same data path.
    DevTools,
}

impl Cc {
    fn on(self) -> bool {
        self != Cc::Off
    }

    /// `PQCC_FAKE_CUDA_CC`: `on` / `1`, `devtools` / `2`, `off` / `0`; anything else
    /// leaves the mode as it is.
    fn from_env() -> Option<Cc> {
        match std::env::var("PQCC_FAKE_CUDA_CC").ok()?.as_str() {
            "on" | "1" => Some(Cc::On),
            "devtools" | "2" => Some(Cc::DevTools),
            "off" | "0" => Some(Cc::Off),
            _ => None,
        }
    }
}

// NVML (`nvml.h`): return codes and the CC state values the fake reports.
const NVML_SUCCESS: c_int = 0;
const NVML_ERROR_UNINITIALIZED: c_int = 1;
const NVML_ERROR_INVALID_ARGUMENT: c_int = 2;
const NVML_ERROR_NOT_SUPPORTED: c_int = 3;
const NVML_ERROR_DRIVER_NOT_LOADED: c_int = 9;
/// `NVML_CC_SYSTEM_ENVIRONMENT_PROD`: what an H100/H200 in a confidential VM reports.
const NVML_CC_ENVIRONMENT_PROD: c_uint = 2;

/// `nvmlConfComputeSystemState_t`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct NvmlConfComputeSystemState {
    pub environment: c_uint,
    pub cc_feature: c_uint,
    pub dev_tools_mode: c_uint,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Device,
    Pinned,
}

struct Alloc {
    /// The memory, 256 bytes longer than asked for: the allocation starts at the first
    /// 256-byte boundary in it, as cudaMalloc's do. Only held (accessed by address).
    /// `None` for host memory registered with `cuMemHostRegister` (the caller's).
    _buf: Option<Box<[u8]>>,
    len: usize,
    kind: Kind,
    live: bool,
    /// Taken from the stream-ordered pool (`cuMemAllocAsync`): the driver refuses stream
    /// memory operations on such memory (`CUDA_ERROR_INVALID_VALUE`, seen on driver 580).
    pool: bool,
}

#[derive(Clone, Copy, Debug)]
enum Kernel {
    Setup,
    Main,
    Final,
    Tensor,
}

impl Kernel {
    /// The kernels by entry name.
    const ALL: [(&'static str, Kernel); 4] = [
        ("gcm_setup", Kernel::Setup),
        ("gcm_open_main", Kernel::Main),
        ("gcm_open_final", Kernel::Final),
        ("gcm_open_tensor", Kernel::Tensor),
    ];
}

struct Launch {
    kernel: Kernel,
    grid: [u32; 3],
    block: [u32; 3],
    /// The arguments by value, as the launch copied them: the pointers in order, and
    /// the struct argument (`frame_params`, or `tensor_params` for `gcm_open_tensor`).
    ptrs: Vec<u64>,
    params: Option<Vec<u8>>,
}

enum Op {
    /// Host (pinned, at `src`, or a snapshot of pageable memory) to device.
    HtoD {
        dst: u64,
        src: Src,
        len: usize,
    },
    /// Device to pinned host memory.
    DtoH {
        dst: usize,
        src: u64,
        len: usize,
    },
    DtoD {
        dst: u64,
        src: u64,
        len: usize,
    },
    Memset {
        dst: u64,
        val: u8,
        len: usize,
    },
    Launch(Launch),
    Wait {
        stream: usize,
        upto: u64,
    },
    Alloc {
        base: u64,
    },
    Free {
        base: u64,
    },
    /// `cuStreamWriteValue32`: a 32-bit word (native endian) to device memory, after the
    /// stream's earlier work.
    WriteValue {
        addr: u64,
        value: u32,
    },
}

enum Src {
    Pinned(usize),
    Snapshot(Vec<u8>),
}

#[derive(Default)]
struct Stream {
    queue: VecDeque<Op>,
    enqueued: u64,
    executed: u64,
    /// An operation of this stream has been taken off the queue and has not finished
    /// (an event wait running what it waits for, a launch): the next one must not run.
    busy: bool,
}

#[derive(Default, Clone, Copy)]
struct Event {
    recorded: Option<(usize, u64)>,
}

#[derive(Default)]
struct State {
    initialised: bool,
    allocs: BTreeMap<u64, Alloc>,
    streams: HashMap<usize, Stream>,
    events: HashMap<usize, Event>,
    /// Per module, the kernels its PTX has entries for.
    modules: HashMap<usize, Vec<&'static str>>,
    functions: HashMap<usize, Kernel>,
    next_handle: usize,
    sticky: Option<(CuResult, String)>,
    counters: [u64; COUNTERS],
    retained: u32,
    /// [`pqcc_fake_cuda_set_order`]: run the other streams first when the host waits.
    others_first: bool,
    /// [`pqcc_fake_cuda_set_kernels`]: run the kernel source itself (emulated).
    emulate: bool,
    /// [`pqcc_fake_cuda_set_multiprocessors`]; 0 means the default, 132.
    multiprocessors: c_int,
    /// [`pqcc_fake_cuda_lose_flag_writes`]: stream value writes still to be lost.
    lose_writes: u32,
    /// [`pqcc_fake_cuda_no_stream_memops`] (or `PQCC_FAKE_CUDA_NO_STREAM_MEMOPS=1` at
    /// `cuInit`): stream value writes are refused, as by a driver without stream memory
    /// operations.
    no_stream_memops: bool,
    /// [`pqcc_fake_cuda_fail_copy`]: host-to-device copies to let through before one
    /// fails.
    fail_copy: Option<u32>,
    /// The device allocations (bases) that the running `gcm_open_tensor` touches: other
    /// streams' work that runs while it waits must not free them.
    kernel_uses: Vec<u64>,
    /// The frames (address, length) the running `gcm_open_tensor` decrypts in place.
    kernel_frames: Vec<(u64, u64)>,
    /// Set while [`State::force`] runs other streams first: `run` stops before a
    /// `gcm_open_tensor` launch.
    hold_resident: bool,
    /// [`pqcc_fake_cuda_set_cc`] (or `PQCC_FAKE_CUDA_CC`): the GPU's CC mode.
    cc: Cc,
    /// [`pqcc_fake_cuda_set_nvml`]: how the fake's NVML answers (0 as it should).
    nvml_fault: c_uint,
    /// `nvmlInit_v2` calls not yet balanced by `nvmlShutdown`.
    nvml_inits: u32,
}

/// The emulator's progress callback: lets queued work progress, nonzero if some did.
type ProgressFn = unsafe extern "C" fn(ctx: *mut c_void) -> c_int;

unsafe extern "C" {
    /// `emu/emu.cpp`: runs kernel 0/1/2/3 of `aes_gcm.cu` over a grid on this thread,
    /// calling `progress(ctx)` (on this thread's stack) whenever a kernel thread sleeps.
    fn pqcc_emu_launch(
        kernel: c_int,
        grid: c_uint,
        block: c_uint,
        ptrs: *const u64,
        params: *const u8,
        progress: Option<ProgressFn>,
        ctx: *mut c_void,
    ) -> c_int;
}

/// What the emulator's progress callback needs: the state (a raw pointer, see
/// [`State::emulated`]) and the stream of the running launch.
struct ProgressCtx {
    state: *mut State,
    except: usize,
}

/// [`ProgressFn`] for `gcm_open_tensor`: one operation of another stream.
unsafe extern "C" fn emu_progress(ctx: *mut c_void) -> c_int {
    // SAFETY: `ctx` is the `ProgressCtx` that `State::emulated` passed for this launch,
    // alive for the whole call; its `state` pointer is the only way the state is used
    // until `pqcc_emu_launch` returns (see the SAFETY comment there), and the emulator
    // calls this on the same thread, with no other reference to the state live.
    let cx = unsafe { &*ctx.cast::<ProgressCtx>() };
    // SAFETY: as above.
    let s = unsafe { &mut *cx.state };
    c_int::from(s.progress_others(cx.except))
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

thread_local! {
    static CURRENT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The primary context's handle (one device, one context).
const PRIMARY_CTX: usize = 0xC0_0000;

fn lock() -> MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on the state: refused before `cuInit`, and with the sticky error once queued
/// work failed (as a GPU reports an earlier fault on every later call).
fn with<F: FnOnce(&mut State) -> CuResult>(f: F) -> CuResult {
    let mut g = lock();
    let Some(s) = g.as_mut() else {
        return NOT_INITIALIZED;
    };
    if !s.initialised {
        return NOT_INITIALIZED;
    }
    if let Some((e, _)) = &s.sticky {
        return *e;
    }
    let r = f(s);
    match (&s.sticky, r) {
        (Some((e, _)), SUCCESS) => *e,
        _ => r,
    }
}

impl State {
    fn handle(&mut self) -> usize {
        self.next_handle += 1;
        0x1000 + 16 * self.next_handle
    }

    fn fail(&mut self, code: CuResult, why: String) {
        if self.sticky.is_none() {
            self.sticky = Some((code, why));
        }
    }

    /// The live allocation of `kind` holding `addr .. addr + len`.
    fn find(&self, addr: u64, len: usize, kind: Kind) -> Result<u64, String> {
        let (&base, a) = self
            .allocs
            .range(..=addr)
            .next_back()
            .ok_or_else(|| format!("{kind:?} address {addr:#x} is in no allocation"))?;
        let end = base + a.len as u64;
        if a.kind != kind {
            let cc = if self.cc.on() && kind == Kind::Device {
                " (in CC mode the GPU cannot reach host memory: the guest's memory is private)"
            } else {
                ""
            };
            return Err(format!(
                "address {addr:#x} is {:?} memory, not {kind:?}{cc}",
                a.kind
            ));
        }
        if !a.live {
            return Err(format!(
                "address {addr:#x}: its allocation is not live (freed, or its stream-ordered \
                 allocation has not run yet)"
            ));
        }
        if addr.checked_add(len as u64).is_none_or(|e| e > end) {
            return Err(format!(
                "{kind:?} range {addr:#x} + {len} runs past its allocation ({base:#x} + {})",
                a.len
            ));
        }
        Ok(base)
    }

    /// In CC mode, a copy of `len` bytes between host memory and VRAM goes through the
    /// driver's encrypted bounce buffers: counted.
    fn bounce(&mut self, len: usize) {
        if self.cc.on() {
            self.counters[C_BOUNCED] += 1;
            self.counters[C_BOUNCED_BYTES] += len as u64;
        }
    }

    fn device(&self, addr: u64, len: usize) -> Result<*mut u8, String> {
        self.find(addr, len, Kind::Device)?;
        Ok(addr as *mut u8)
    }

    fn enqueue(&mut self, stream: usize, op: Op) -> CuResult {
        self.counters[C_QUEUED] += 1;
        let is_tensor = |op: &Op| matches!(op, Op::Launch(l) if matches!(l.kernel, Kernel::Tensor));
        if is_tensor(&op) {
            let waiting = self.streams.values().flat_map(|s| &s.queue);
            self.counters[C_TENSOR_BEHIND] += waiting.filter(|op| is_tensor(op)).count() as u64;
        }
        if stream == 0 {
            // The legacy default stream: pqcc-gpu does not queue work on it; run at once.
            return match self.execute(0, op) {
                Ok(()) => SUCCESS,
                Err((code, why)) => {
                    self.fail(code, why);
                    code
                }
            };
        }
        let Some(s) = self.streams.get_mut(&stream) else {
            return INVALID_HANDLE;
        };
        s.queue.push_back(op);
        s.enqueued += 1;
        SUCCESS
    }

    /// Runs `stream` until `upto` operations have completed; returns whether it got
    /// there. It stops short only while `hold_resident` is set: before a
    /// `gcm_open_tensor` launch, or at an event wait for work behind one.
    fn run(&mut self, stream: usize, upto: u64) -> bool {
        loop {
            let (wait, was_busy) = {
                let Some(s) = self.streams.get_mut(&stream) else {
                    return true;
                };
                if s.executed >= upto {
                    return true;
                }
                let wait = match s.queue.front() {
                    None => return true,
                    Some(Op::Launch(l))
                        if self.hold_resident && matches!(l.kernel, Kernel::Tensor) =>
                    {
                        return false;
                    }
                    Some(&Op::Wait { stream, upto }) => Some((stream, upto)),
                    Some(_) => None,
                };
                (wait, std::mem::replace(&mut s.busy, true))
            };
            // The stream stays busy until its operation ends: nothing else of it runs
            // meanwhile (a launch may let other streams progress, never its own). A wait
            // stays first in the queue until what it waits for has run.
            let done = match wait {
                Some((other, upto)) => self.run(other, upto),
                None => true,
            };
            let op = match self.streams.get_mut(&stream) {
                Some(s) if done => s.queue.pop_front(),
                Some(s) => {
                    s.busy = was_busy;
                    return false;
                }
                None => return done,
            };
            if let Some(op) = op.filter(|op| !matches!(op, Op::Wait { .. }))
                && let Err((code, why)) = self.execute(stream, op)
            {
                self.fail(code, why);
            }
            if let Some(s) = self.streams.get_mut(&stream) {
                s.executed += 1;
                s.busy = was_busy;
            }
        }
    }

    /// Runs ONE operation queued on a stream other than `except`, as a GPU runs other
    /// streams while a kernel of `except` waits; returns whether one ran. A stream's next
    /// operation may run unless the stream is busy (in the middle of an earlier one), it
    /// is a launch (this fake runs one kernel at a time), or it is an event wait whose
    /// stream has not reached the event yet (popping a satisfied wait counts as running
    /// it). Streams are tried in descending handle order (the reverse of creation order),
    /// so the choice is deterministic and streams created after the copy streams (a flag
    /// stream, say) run ahead of them: a flag that does not wait for its copy is then
    /// seen before the copy ran. An operation that fails leaves the usual sticky fault.
    fn progress_others(&mut self, except: usize) -> bool {
        let mut ids: Vec<usize> = self
            .streams
            .keys()
            .copied()
            .filter(|&i| i != except)
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        for id in ids {
            let runnable = self.streams.get(&id).is_some_and(|s| {
                !s.busy
                    && match s.queue.front() {
                        None | Some(Op::Launch(_)) => false,
                        Some(Op::Wait { stream, upto }) => {
                            self.streams.get(stream).is_none_or(|o| o.executed >= *upto)
                        }
                        Some(_) => true,
                    }
            });
            if !runnable {
                continue;
            }
            let Some(op) = self.streams.get_mut(&id).and_then(|s| s.queue.pop_front()) else {
                continue;
            };
            if !matches!(op, Op::Wait { .. })
                && let Err((code, why)) = self.execute(id, op)
            {
                self.fail(code, why);
            }
            if let Some(s) = self.streams.get_mut(&id) {
                s.executed += 1;
            }
            return true;
        }
        false
    }

    /// The host waits for `stream` up to `upto`. Lazy order runs only that (and what it
    /// waits for); others-first order first runs every other stream to its end, as a
    /// device may, so work that should have waited for this stream runs too early.
    ///
    /// A resident `gcm_open_tensor` is not started that way (nor what waits for it): on
    /// a GPU it would run early but keep waiting for frames the host has yet to queue,
    /// while this fake runs a launch to its end and would time it out.
    fn force(&mut self, stream: usize, upto: u64) {
        if self.others_first {
            let ids: Vec<usize> = self
                .streams
                .keys()
                .copied()
                .filter(|&i| i != stream)
                .collect();
            self.hold_resident = true;
            for id in ids {
                let end = self.streams.get(&id).map_or(0, |s| s.enqueued);
                self.run(id, end);
            }
            self.hold_resident = false;
        }
        self.run(stream, upto);
    }

    fn run_all(&mut self) {
        let ids: Vec<usize> = self.streams.keys().copied().collect();
        for id in ids {
            let upto = self.streams.get(&id).map_or(0, |s| s.enqueued);
            self.run(id, upto);
        }
    }

    /// Whether work still queued uses host memory `base .. base + len`: copies from or
    /// into it, or (CC off) stream value writes to it.
    fn pending_reads_of(&self, base: usize, len: usize) -> bool {
        self.streams
            .values()
            .flat_map(|s| &s.queue)
            .any(|op| match op {
                Op::HtoD {
                    src: Src::Pinned(p),
                    len: n,
                    ..
                } => *p < base + len && base < p + n,
                Op::DtoH { dst, len: n, .. } => *dst < base + len && base < dst + n,
                Op::WriteValue { addr, .. } => {
                    (*addr as usize) < base + len && base < *addr as usize + 4
                }
                _ => false,
            })
    }

    /// Executes `op`, queued on `stream` (0: the legacy default stream).
    fn execute(&mut self, stream: usize, op: Op) -> Result<(), (CuResult, String)> {
        let bad = |why: String| (ILLEGAL_ADDRESS, why);
        match op {
            Op::HtoD { dst, src, len } => {
                let d = self.device(dst, len).map_err(bad)?;
                let s = match &src {
                    Src::Pinned(p) => {
                        self.find(*p as u64, len, Kind::Pinned).map_err(bad)?;
                        *p as *const u8
                    }
                    Src::Snapshot(v) => v.as_ptr(),
                };
                // SAFETY: both ranges were checked to lie in live buffers of `len` bytes
                // (the snapshot is exactly `len` bytes); they are distinct allocations.
                unsafe { std::ptr::copy(s, d, len) };
                self.bounce(len);
            }
            Op::DtoH { dst, src, len } => {
                let s = self.device(src, len).map_err(bad)?;
                self.find(dst as u64, len, Kind::Pinned).map_err(bad)?;
                // SAFETY: as above.
                unsafe { std::ptr::copy(s, dst as *mut u8, len) };
                self.bounce(len);
            }
            Op::DtoD { dst, src, len } => {
                let d = self.device(dst, len).map_err(bad)?;
                let s = self.device(src, len).map_err(bad)?;
                // SAFETY: as above; `copy` allows overlap.
                unsafe { std::ptr::copy(s, d, len) };
            }
            Op::Memset { dst, val, len } => {
                let d = self.device(dst, len).map_err(bad)?;
                if let Some(why) = self.tensor_frames_hit(dst, len as u64) {
                    return Err(bad(format!(
                        "memset of {dst:#x} + {len} while {why}: the kernel can write the \
                         frame after it (the host must wait for the kernel's stream first)"
                    )));
                }
                // SAFETY: checked range.
                unsafe { std::ptr::write_bytes(d, val, len) };
            }
            Op::Alloc { base } => match self.allocs.get_mut(&base) {
                Some(a) => a.live = true,
                None => return Err(bad(format!("allocation {base:#x} vanished"))),
            },
            Op::Free { base } if self.kernel_uses.contains(&base) => {
                return Err(bad(format!(
                    "free of {base:#x} while the running gcm_open_tensor uses it (work on \
                     another stream ran while the kernel waited for its frames)"
                )));
            }
            Op::Free { base } => match self.allocs.get(&base) {
                Some(a) if a.live && a.kind == Kind::Device => {
                    self.allocs.remove(&base);
                }
                _ => return Err(bad(format!("free of {base:#x}: not a live allocation"))),
            },
            Op::Launch(l) => self.launch(stream, l).map_err(|why| (LAUNCH_FAILED, why))?,
            Op::Wait { .. } => {}
            Op::WriteValue { addr, value } => {
                // To VRAM, or (CC off: the GPU reaches page-locked host memory through
                // unified addressing) to host memory; `write_value32` refused the latter
                // in CC mode.
                let host = !self.cc.on() && self.find(addr, 4, Kind::Pinned).is_ok();
                let d = if host {
                    addr as *mut u8
                } else {
                    self.device(addr, 4)
                        .map_err(|why| bad(format!("cuStreamWriteValue32 to {addr:#x}: {why}")))?
                };
                // SAFETY: checked range of 4 bytes in a live allocation.
                unsafe { std::ptr::copy_nonoverlapping(value.to_ne_bytes().as_ptr(), d, 4) };
            }
        }
        Ok(())
    }

    /// Checks a launch before it runs, in either mode: the geometry and parameters the
    /// kernel relies on, and that every range it reads or writes lies in a live
    /// allocation. Returns the decoded parameters.
    fn check_launch(&self, l: &Launch) -> Result<Checked, String> {
        let geometry = |grid: [u32; 3], block: [u32; 3], what: &str| {
            if l.grid == grid && l.block == block {
                Ok(())
            } else {
                Err(format!(
                    "{:?} launched with {:?} x {:?}{what}",
                    l.kernel, l.grid, l.block
                ))
            }
        };
        match l.kernel {
            Kernel::Setup => {
                geometry([1, 1, 1], [THREADS as u32, 1, 1], "")?;
                self.device(l.ptrs[0], 32)?;
                self.device(l.ptrs[1], 4 * CTX_WORDS)?;
                Ok(Checked::Setup)
            }
            Kernel::Main => {
                let p = Params::parse(l.params.as_deref())?;
                p.check()?;
                let parts = format!(" for {} parts", p.n_parts);
                geometry([p.n_parts, 1, 1], [THREADS as u32, 1, 1], &parts)?;
                self.device(l.ptrs[0], p.len as usize)?;
                if p.aad_len as usize > INLINE_AAD {
                    self.device(l.ptrs[1], p.aad_len as usize)?;
                }
                self.device(l.ptrs[2], 4 * CTX_WORDS)?;
                self.device(l.ptrs[3], 16 * p.n_parts as usize)?;
                Ok(Checked::Frame(Box::new(p)))
            }
            Kernel::Final => {
                let p = Params::parse(l.params.as_deref())?;
                p.check()?;
                let threads = u64::from(p.n_parts)
                    .next_power_of_two()
                    .clamp(64, FINAL_THREADS);
                let parts = format!(" for {} parts", p.n_parts);
                geometry([1, 1, 1], [threads as u32, 1, 1], &parts)?;
                self.device(l.ptrs[0], 4 * CTX_WORDS)?;
                self.device(l.ptrs[1], 16 * p.n_parts as usize)?;
                self.device(l.ptrs[2] + 4 * u64::from(p.index), 4)?;
                self.device(l.ptrs[3], p.len as usize)?;
                Ok(Checked::Frame(Box::new(p)))
            }
            Kernel::Tensor => {
                let t = TensorParams::parse(l.params.as_deref())?;
                let total = t.total_parts();
                let what = format!(" for {total} parts");
                if l.block != [THREADS as u32, 1, 1]
                    || l.grid[1..] != [1, 1]
                    || l.grid[0] == 0
                    || l.grid[0] > total
                {
                    return Err(format!(
                        "Tensor launched with {:?} x {:?}{what} (wants [1..={total}, 1, 1] x \
                         [{THREADS}, 1, 1])",
                        l.grid, l.block
                    ));
                }
                let [ctx, arrived, work, next, partials] = tensor_ptrs(l)?;
                let range = |what: &str, addr: u64, len: usize| {
                    self.device(addr, len)
                        .map_err(|why| format!("gcm_open_tensor {what}: {why}"))
                };
                range("ctx", ctx, 4 * CTX_WORDS)?;
                for (i, p) in t.f.iter().enumerate() {
                    if p.len > 0 {
                        range(&format!("data[{i}]"), t.data[i], p.len as usize)?;
                    }
                }
                range("arrived", arrived, 4 * t.f.len())?;
                range("work", work, 4 * SET_WORDS)?;
                range("next", next, 4 * SET_WORDS)?;
                if work.abs_diff(next) < 4 * SET_WORDS as u64 {
                    return Err(format!(
                        "gcm_open_tensor: work {work:#x} and next {next:#x} overlap"
                    ));
                }
                range("partials", partials, 16 * total as usize)?;
                // The kernel hands out parts from work[0] and counts them in work[1..]:
                // counters left from an earlier launch make it skip frames. A status
                // word left from an earlier launch could be read back as this one's.
                let words = self.read_words(work, SET_WORDS)?;
                if let Some((k, w)) = words.iter().enumerate().find(|&(_, &w)| w != 0) {
                    return Err(format!(
                        "gcm_open_tensor: work[{k}] is {w:#x} at launch, not 0 (the counters \
                         and status words must be zero at every launch)"
                    ));
                }
                Ok(Checked::Tensor(t))
            }
        }
    }

    /// The `n` words (native endian) at device address `addr`.
    fn read_words(&self, addr: u64, n: usize) -> Result<Vec<u32>, String> {
        let p = self.device(addr, 4 * n)?;
        let mut b = vec![0u8; 4 * n];
        // SAFETY: checked range of `4 * n` bytes.
        unsafe { std::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), 4 * n) };
        Ok(b.chunks_exact(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Writes `words` (native endian) at device address `addr`.
    fn write_words(&mut self, addr: u64, words: &[u32]) -> Result<(), String> {
        let p = self.device(addr, 4 * words.len())?;
        let b: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        // SAFETY: checked range of `4 * words.len()` bytes.
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), p, b.len()) };
        Ok(())
    }

    /// Runs the kernel source itself (`emu/emu.cpp`); [`State::check_launch`] passed.
    /// `stream` is the launch's: `gcm_open_tensor`'s sleeps run other streams' work.
    fn emulated(&mut self, stream: usize, l: &Launch) -> Result<(), String> {
        let kernel: c_int = match l.kernel {
            Kernel::Setup => 0,
            Kernel::Main => 1,
            Kernel::Final => 2,
            Kernel::Tensor => 3,
        };
        let params = l.params.as_deref().map_or(std::ptr::null(), <[u8]>::as_ptr);
        // Only gcm_open_tensor waits for other streams; the other kernels get no callback.
        let mut cx = ProgressCtx {
            state: std::ptr::from_mut(self),
            except: stream,
        };
        let (progress, ctx): (Option<ProgressFn>, *mut c_void) = match l.kernel {
            Kernel::Tensor => (Some(emu_progress), (&raw mut cx).cast::<c_void>()),
            _ => (None, std::ptr::null_mut()),
        };
        // SAFETY: every pointer the kernel dereferences was checked (check_launch) to lie
        // in a live allocation of the size the kernel reads or writes (from the same
        // parameters it gets: `frame_params`, or `tensor_params` of TENSOR_PARAMS_LEN
        // bytes); `ptrs` and `params` outlive the call, which runs on this thread. The
        // callback (gcm_open_tensor only) gets `cx`, which lives on this frame until the
        // call returns, and reaches the state only through `cx.state`, a raw pointer
        // derived from `self` just above: `self` is not used again until the call
        // returns, and the emulator calls the callback on this thread while no kernel
        // code runs, so the `&mut State` the callback makes is the only live reference
        // while it runs. The memory the kernel's pointers address stays put: the
        // operations the callback runs may write it (as copy engines do) but cannot free
        // it (`kernel_uses`, set by `launch`), and none is a launch (the emulator is not
        // reentrant).
        let r = unsafe {
            pqcc_emu_launch(
                kernel,
                l.grid[0],
                l.block[0],
                l.ptrs.as_ptr(),
                params,
                progress,
                ctx,
            )
        };
        match r {
            0 => Ok(()),
            1 => Err(format!(
                "{:?}: the threads of a block did not all reach the same barrier",
                l.kernel
            )),
            2 => Err(format!("{:?}: bad launch geometry", l.kernel)),
            _ => Err(format!("{:?}: emulator out of memory", l.kernel)),
        }
    }

    /// After a kernel that checks tags: a frame whose status word at `status` is not 1
    /// (verified) must have been zeroed by the kernel itself, before any later work on
    /// the stream (or the host, after the verdict) can see its bytes. Returns the status.
    fn failed_frame_zeroed(
        &self,
        kernel: Kernel,
        frame: usize,
        status: u64,
        data: u64,
        len: u32,
    ) -> Result<u32, String> {
        let st = self.device(status, 4)?;
        let mut w = [0u8; 4];
        // SAFETY: checked range of 4 bytes.
        unsafe { std::ptr::copy_nonoverlapping(st, w.as_mut_ptr(), 4) };
        let verdict = u32::from_ne_bytes(w);
        if verdict == 1 || len == 0 {
            return Ok(verdict);
        }
        let d = self.device(data, len as usize)?;
        // SAFETY: checked range of `len` bytes in a live allocation.
        let bytes = unsafe { std::slice::from_raw_parts(d, len as usize) };
        if bytes.iter().any(|&b| b != 0) {
            return Err(format!(
                "{kernel:?}: frame {frame} failed its tag but the kernel left its bytes in VRAM"
            ));
        }
        Ok(verdict)
    }

    /// The stream on which a host-to-device copy into `addr .. addr + len` is queued and
    /// has not run yet, if any.
    fn copy_queued_into(&self, addr: u64, len: u64) -> Option<usize> {
        self.streams.iter().find_map(|(id, st)| {
            st.queue
                .iter()
                .any(|op| {
                    matches!(op, Op::HtoD { dst, len: n, .. }
                        if *n > 0 && addr < dst + *n as u64 && *dst < addr + len)
                })
                .then_some(*id)
        })
    }

    /// Whether `addr .. addr + len` meets a frame that a `gcm_open_tensor` running, or
    /// queued on any stream and not run yet, decrypts in place (it writes plaintext, or
    /// zeros, there); says which.
    fn tensor_frames_hit(&self, addr: u64, len: u64) -> Option<String> {
        let meets = |(d, n): (u64, u64)| n > 0 && addr < d + n && d < addr + len;
        if self.kernel_frames.iter().any(|&f| meets(f)) {
            return Some("the running gcm_open_tensor decrypts there".into());
        }
        self.streams.iter().find_map(|(id, st)| {
            st.queue.iter().find_map(|op| match op {
                Op::Launch(l) if matches!(l.kernel, Kernel::Tensor) => {
                    let t = TensorParams::parse(l.params.as_deref()).ok()?;
                    t.f.iter()
                        .zip(t.data)
                        .any(|(p, d)| meets((d, u64::from(p.len))))
                        .then(|| {
                            format!("a gcm_open_tensor queued on stream {id:#x} decrypts there")
                        })
                }
                _ => None,
            })
        })
    }

    /// Runs launch `l`, queued on `stream`.
    fn launch(&mut self, stream: usize, l: Launch) -> Result<(), String> {
        let checked = self.check_launch(&l)?;
        if let Checked::Tensor(t) = &checked {
            // What the kernel touches must outlive it, whatever other streams run.
            let [ctx, arrived, work, next, partials] = tensor_ptrs(&l)?;
            let mut uses = vec![ctx, arrived, work, next, partials];
            uses.extend(
                t.f.iter()
                    .zip(t.data)
                    .filter(|(p, _)| p.len > 0)
                    .map(|(_, d)| d),
            );
            let bases = uses
                .into_iter()
                .map(|a| self.find(a, 1, Kind::Device))
                .collect::<Result<Vec<u64>, String>>()?;
            self.kernel_uses = bases;
            self.kernel_frames =
                t.f.iter()
                    .zip(t.data)
                    .map(|(p, d)| (d, u64::from(p.len)))
                    .collect();
            let r = if self.emulate {
                self.emulated(stream, &l)
            } else {
                self.tensor_computed(stream, &l, t)
            };
            self.kernel_uses.clear();
            self.kernel_frames.clear();
            r?;
            let [.., work, next, _] = tensor_ptrs(&l)?;
            if let Some((k, w)) = self
                .read_words(next, SET_WORDS)?
                .iter()
                .enumerate()
                .find(|&(_, &w)| w != 0)
            {
                return Err(format!(
                    "gcm_open_tensor left next[{k}] = {w:#x}: the next launch's set must be \
                     zeroed by this one"
                ));
            }
            let status = work + 4 * WORK_WORDS as u64;
            for (f, (p, data)) in t.f.iter().zip(t.data).enumerate() {
                let at = status + 4 * u64::from(p.index);
                if self.failed_frame_zeroed(l.kernel, f, at, data, p.len)? == 3 {
                    self.counters[C_TIMED_OUT] += 1;
                }
            }
            return Ok(());
        }
        if self.emulate {
            self.emulated(stream, &l)?;
            if let (Kernel::Final, Checked::Frame(p)) = (l.kernel, &checked) {
                let at = l.ptrs[2] + 4 * u64::from(p.index);
                self.failed_frame_zeroed(l.kernel, 0, at, l.ptrs[3], p.len)?;
            }
            return Ok(());
        }
        match (l.kernel, checked) {
            (Kernel::Setup, _) => {
                let k = self.device(l.ptrs[0], 32)?;
                let c = self.device(l.ptrs[1], 4 * CTX_WORDS)?;
                // SAFETY: checked ranges in distinct allocations.
                unsafe {
                    std::ptr::write_bytes(c, 0, 4 * CTX_WORDS);
                    std::ptr::copy_nonoverlapping(CTX_MAGIC.as_ptr(), c, 8);
                    std::ptr::copy_nonoverlapping(k, c.add(8), 32);
                    std::ptr::write_bytes(k, 0, 32);
                }
                Ok(())
            }
            (Kernel::Main, Checked::Frame(p)) => {
                let (data, aad_mem, ctx, partials) = (l.ptrs[0], l.ptrs[1], l.ptrs[2], l.ptrs[3]);
                let key = self.key(ctx)?;
                let aad = if p.aad_len as usize <= INLINE_AAD {
                    p.aad_inline[..p.aad_len as usize].to_vec()
                } else {
                    let a = self.device(aad_mem, p.aad_len as usize)?;
                    // SAFETY: checked range.
                    unsafe { std::slice::from_raw_parts(a, p.aad_len as usize) }.to_vec()
                };
                let parts = self.device(partials, 16 * p.n_parts as usize)?;
                let ok = self.open_frame(&key, &p, data, &aad)?;
                // This fake's partials: word 0 carries the tag's outcome to gcm_open_final.
                let word: u32 = if ok { 0x600D } else { 0xBAD };
                // SAFETY: `parts` holds at least 16 bytes (n_parts >= 1).
                unsafe { std::ptr::copy_nonoverlapping(word.to_ne_bytes().as_ptr(), parts, 4) };
                Ok(())
            }
            (Kernel::Final, Checked::Frame(p)) => {
                let (ctx, partials, status, data) = (l.ptrs[0], l.ptrs[1], l.ptrs[2], l.ptrs[3]);
                self.key(ctx)?;
                let parts = self.device(partials, 16 * p.n_parts as usize)?;
                let mut w = [0u8; 4];
                // SAFETY: checked range.
                unsafe { std::ptr::copy_nonoverlapping(parts, w.as_mut_ptr(), 4) };
                let ok = match u32::from_ne_bytes(w) {
                    0x600D => true,
                    0xBAD => false,
                    other => {
                        return Err(format!(
                            "gcm_open_final found partials {other:#x}: gcm_open_main of this \
                             frame has not run on these partials"
                        ));
                    }
                };
                let st = self.device(status + 4 * u64::from(p.index), 4)?;
                let d = self.device(data, p.len as usize)?;
                let verdict: u32 = if ok { 1 } else { 2 };
                // SAFETY: checked ranges.
                unsafe {
                    std::ptr::copy_nonoverlapping(verdict.to_ne_bytes().as_ptr(), st, 4);
                    std::ptr::write_bytes(parts, 0, 4);
                    if !ok {
                        std::ptr::write_bytes(d, 0, p.len as usize);
                    }
                }
                Ok(())
            }
            (k, _) => Err(format!("{k:?}: no frame_params")),
        }
    }

    /// Opens frame `p` in place at `data` (AES-256-GCM with its iv, tag and `aad`);
    /// whether the tag verified.
    fn open_frame(
        &self,
        key: &[u8; 32],
        p: &Params,
        data: u64,
        aad: &[u8],
    ) -> Result<bool, String> {
        let len = p.len as usize;
        let mut empty = [0u8; 0];
        let buf: &mut [u8] = if len == 0 {
            &mut empty
        } else {
            let d = self.device(data, len)?;
            // SAFETY: checked range of `len` bytes in a live allocation, not otherwise
            // referenced while the slice lives.
            unsafe { std::slice::from_raw_parts_mut(d, len) }
        };
        Ok(RustCryptoAesGcm::new(key)
            .open_in_place(&p.iv, aad, buf, &p.tag)
            .is_ok())
    }

    /// `gcm_open_tensor`, computed: frame after frame, waits until its arrival flag holds
    /// `gen`, running other streams' work one operation at a time meanwhile
    /// ([`State::progress_others`]); when none can run, the flag can never change (only
    /// other streams write it, and none can progress while this launch holds `stream`):
    /// the kernel's timeout, status 3 and the frame zeroed. Otherwise opens the frame
    /// (status 1, or 2 and zeroed). Leaves `work` as the real kernel does; the partials
    /// are not written.
    fn tensor_computed(
        &mut self,
        stream: usize,
        l: &Launch,
        t: &TensorParams,
    ) -> Result<(), String> {
        let [ctx, arrived, work, next, _partials] = tensor_ptrs(l)?;
        let status = work + 4 * WORK_WORDS as u64;
        let key = self.key(ctx)?;
        let mut counters = [0u32; WORK_WORDS];
        for (i, p) in t.f.iter().enumerate() {
            let flag = arrived + 4 * t.flag_of(i) as u64;
            let here = loop {
                if self.read_words(flag, 1)?[0] == t.generation {
                    break true;
                }
                if !self.progress_others(stream) {
                    break false;
                }
            };
            if here && let Some(id) = self.copy_queued_into(t.data[i], u64::from(p.len)) {
                return Err(format!(
                    "gcm_open_tensor: frame {i}'s arrival flag holds the generation while a \
                     copy into the frame is still queued on stream {id:#x} (the flag must \
                     follow the copy)"
                ));
            }
            let verdict = if here {
                let aad = &p.aad_inline[..p.aad_len as usize];
                if self.open_frame(&key, p, t.data[i], aad)? {
                    1
                } else {
                    2
                }
            } else {
                STATUS_TIMED_OUT
            };
            if verdict != 1 && p.len > 0 {
                let d = self.device(t.data[i], p.len as usize)?;
                // SAFETY: checked range.
                unsafe { std::ptr::write_bytes(d, 0, p.len as usize) };
            }
            self.write_words(status + 4 * u64::from(p.index), &[verdict])?;
            counters[1 + i] = p.n_parts;
            counters[1 + RESIDENT_FRAMES + i] = u32::from(!here);
        }
        // Every part handed out once, then one more fetch per block that finds none.
        counters[0] = t.total_parts() + l.grid[0];
        self.write_words(work, &counters)?;
        self.write_words(next, &[0; SET_WORDS])
    }

    fn key(&self, ctx: u64) -> Result<[u8; 32], String> {
        let c = self.device(ctx, 4 * CTX_WORDS)?;
        let mut head = [0u8; 40];
        // SAFETY: checked range of at least 40 bytes.
        unsafe { std::ptr::copy_nonoverlapping(c, head.as_mut_ptr(), 40) };
        if &head[..8] != CTX_MAGIC {
            return Err("key context not set up by gcm_setup (or wiped)".into());
        }
        let mut k = [0u8; 32];
        k.copy_from_slice(&head[8..40]);
        Ok(k)
    }
}

/// `struct frame_params`, decoded.
struct Params {
    iv: [u8; 12],
    len: u32,
    aad_len: u32,
    n_blocks: u32,
    zpad: u32,
    seg: u32,
    log_blk: u32,
    n_parts: u32,
    index: u32,
    tag: [u8; 16],
    aad_inline: [u8; INLINE_AAD],
}

impl Params {
    fn parse(b: Option<&[u8]>) -> Result<Self, String> {
        let b = b.ok_or("no frame_params")?;
        let w = |i: usize| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
        let mut iv = [0u8; 12];
        iv.copy_from_slice(&b[..12]);
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&b[44..60]);
        let mut aad_inline = [0u8; INLINE_AAD];
        aad_inline.copy_from_slice(&b[60..60 + INLINE_AAD]);
        Ok(Self {
            iv,
            len: w(3),
            aad_len: w(4),
            n_blocks: w(5),
            zpad: w(6),
            seg: w(7),
            log_blk: w(8),
            n_parts: w(9),
            index: w(10),
            tag,
            aad_inline,
        })
    }

    /// The work split the real kernels depend on (see `FrameParams::new`).
    fn check(&self) -> Result<(), String> {
        let n = u64::from(self.len).div_ceil(16) + u64::from(self.aad_len).div_ceil(16) + 1;
        let per = THREADS * u64::from(self.seg);
        let problems = [
            (self.aad_len > 4096, "aad_len over 4096"),
            (
                u64::from(self.n_blocks) != n,
                "n_blocks is not the GHASH block count",
            ),
            (!self.seg.is_power_of_two(), "seg is not a power of two"),
            (
                1u64.checked_shl(self.log_blk) != Some(per),
                "log_blk is not log2(THREADS * seg)",
            ),
            (
                self.seg > 128,
                "seg over 128 (log_blk beyond the part-weight table)",
            ),
            (
                u64::from(self.n_parts) != n.div_ceil(per),
                "n_parts is not ceil(n_blocks / (THREADS * seg))",
            ),
            (
                u64::from(self.n_parts) * per - n != u64::from(self.zpad),
                "zpad does not pad to n_parts * THREADS * seg",
            ),
            (
                u64::from(self.n_parts) > FINAL_THREADS,
                "more partials than gcm_open_final reduces",
            ),
        ];
        match problems.iter().find(|(bad, _)| *bad) {
            Some((_, why)) => Err(format!("frame_params: {why}")),
            None => Ok(()),
        }
    }
}

/// What [`State::check_launch`] decoded from a launch's struct argument.
enum Checked {
    Setup,
    Frame(Box<Params>),
    Tensor(TensorParams),
}

/// `gcm_open_tensor`'s pointer arguments: ctx, arrived, work, next, partials.
fn tensor_ptrs(l: &Launch) -> Result<[u64; 5], String> {
    <[u64; 5]>::try_from(l.ptrs.as_slice())
        .map_err(|_| format!("gcm_open_tensor: {} pointer arguments, not 5", l.ptrs.len()))
}

/// `struct tensor_params`, decoded: the used frames only.
struct TensorParams {
    data: [u64; RESIDENT_FRAMES],
    part_base: [u32; RESIDENT_FRAMES + 1],
    /// `gen`: the value of a frame's arrival flag once it is in VRAM.
    generation: u32,
    /// `flag_group`: 0, or k: frame f waits for the flag of the last frame on its
    /// stream (frames go to k streams in turn).
    flag_group: u32,
    /// `f[..n_frames]`.
    f: Vec<Params>,
}

impl TensorParams {
    /// Decodes and checks what `gcm_open_tensor` relies on: 1 to 8 frames, the parts'
    /// prefix sums, each frame's work split (as for the per-frame kernels), inline AAD
    /// only, distinct status slots.
    fn parse(b: Option<&[u8]>) -> Result<Self, String> {
        let b = b.ok_or("no tensor_params")?;
        if b.len() != TENSOR_PARAMS_LEN {
            return Err(format!(
                "tensor_params is {} bytes, not {TENSOR_PARAMS_LEN}",
                b.len()
            ));
        }
        let w = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let data: [u64; RESIDENT_FRAMES] = std::array::from_fn(|i| {
            let mut q = [0u8; 8];
            q.copy_from_slice(&b[8 * i..8 * i + 8]);
            u64::from_le_bytes(q)
        });
        let part_base: [u32; RESIDENT_FRAMES + 1] =
            std::array::from_fn(|i| w(8 * RESIDENT_FRAMES + 4 * i));
        let n_frames = w(8 * RESIDENT_FRAMES + 4 * (RESIDENT_FRAMES + 1));
        let generation = w(8 * RESIDENT_FRAMES + 4 * (RESIDENT_FRAMES + 1) + 4);
        let flag_group = w(8 * RESIDENT_FRAMES + 4 * (RESIDENT_FRAMES + 1) + 8);
        if flag_group as usize > RESIDENT_FRAMES {
            return Err(format!(
                "tensor_params: flag_group is {flag_group}, not 0..={RESIDENT_FRAMES}"
            ));
        }
        if !(1..=RESIDENT_FRAMES as u32).contains(&n_frames) {
            return Err(format!(
                "tensor_params: n_frames is {n_frames}, not 1..={RESIDENT_FRAMES}"
            ));
        }
        if part_base[0] != 0 {
            return Err(format!(
                "tensor_params: part_base[0] is {}, not 0",
                part_base[0]
            ));
        }
        let mut f = Vec::with_capacity(n_frames as usize);
        for i in 0..n_frames as usize {
            let at = TENSOR_FRAMES_AT + PARAMS_LEN * i;
            let p = Params::parse(Some(&b[at..at + PARAMS_LEN]))?;
            p.check()
                .map_err(|why| format!("tensor_params.f[{i}]: {why}"))?;
            if p.aad_len as usize > INLINE_AAD {
                return Err(format!(
                    "tensor_params.f[{i}]: aad_len {} over INLINE_AAD ({INLINE_AAD}): \
                     gcm_open_tensor reads only the inline AAD",
                    p.aad_len
                ));
            }
            if u64::from(part_base[i + 1]) != u64::from(part_base[i]) + u64::from(p.n_parts) {
                return Err(format!(
                    "tensor_params: part_base[{}] is {}, not part_base[{i}] + f[{i}].n_parts \
                     = {} + {}",
                    i + 1,
                    part_base[i + 1],
                    part_base[i],
                    p.n_parts
                ));
            }
            if p.index as usize >= RESIDENT_FRAMES {
                return Err(format!(
                    "tensor_params.f[{i}]: status index {} past the set's {RESIDENT_FRAMES} \
                     status words",
                    p.index
                ));
            }
            if let Some(j) = f.iter().position(|q: &Params| q.index == p.index) {
                return Err(format!(
                    "tensor_params: f[{j}] and f[{i}] share status index {}",
                    p.index
                ));
            }
            f.push(p);
        }
        Ok(Self {
            data,
            part_base,
            generation,
            flag_group,
            f,
        })
    }

    /// The frame whose arrival flag frame `i` waits for (as `gcm_open_tensor` computes
    /// it): itself, or with grouped flags the last frame on its stream.
    fn flag_of(&self, i: usize) -> usize {
        match self.flag_group as usize {
            0 => i,
            k => i + (self.f.len() - 1 - i) / k * k,
        }
    }

    /// Parts of all frames: `part_base[n_frames]`.
    fn total_parts(&self) -> u32 {
        self.part_base[self.f.len()]
    }
}

// ---- The driver API (the subset cudarc uses for pqcc-gpu) ----

#[unsafe(no_mangle)]
pub extern "C" fn cuInit(_flags: c_uint) -> CuResult {
    let mut g = lock();
    let s = g.get_or_insert_with(State::default);
    s.initialised = true;
    // The controls a test may need in another process (`pqcc bench gpu`).
    if std::env::var_os("PQCC_FAKE_CUDA_NO_STREAM_MEMOPS").is_some_and(|v| v == "1") {
        s.no_stream_memops = true;
    }
    if let Some(n) = std::env::var("PQCC_FAKE_CUDA_LOSE_FLAG_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        s.lose_writes = n;
    }
    if let Some(cc) = Cc::from_env() {
        s.cc = cc;
    }
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDriverGetVersion(v: *mut c_int) -> CuResult {
    // SAFETY: the caller passes a valid out-pointer (driver API contract).
    unsafe { *v = 13000 };
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetCount(n: *mut c_int) -> CuResult {
    with(|_| {
        // SAFETY: valid out-pointer.
        unsafe { *n = 1 };
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGet(d: *mut c_int, ordinal: c_int) -> CuResult {
    with(|_| {
        if ordinal != 0 {
            return INVALID_DEVICE;
        }
        // SAFETY: valid out-pointer.
        unsafe { *d = 0 };
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetAttribute(
    v: *mut c_int,
    attrib: c_int,
    dev: c_int,
) -> CuResult {
    with(|s| {
        if dev != 0 {
            return INVALID_DEVICE;
        }
        let x = match attrib {
            16 if s.multiprocessors > 0 => s.multiprocessors, // MULTIPROCESSOR_COUNT
            16 => 132,
            75 => 9,    // COMPUTE_CAPABILITY_MAJOR
            76 => 0,    // COMPUTE_CAPABILITY_MINOR
            115 => 1,   // MEMORY_POOLS_SUPPORTED
            1 => 1024,  // MAX_THREADS_PER_BLOCK
            8 => 49152, // MAX_SHARED_MEMORY_PER_BLOCK
            10 => 32,   // WARP_SIZE
            _ => 0,
        };
        // SAFETY: valid out-pointer.
        unsafe { *v = x };
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: c_int) -> CuResult {
    with(|_| {
        if dev != 0 {
            return INVALID_DEVICE;
        }
        let n = b"FakeCuda (no GPU: a test fake)\0";
        let len = usize::try_from(len).unwrap_or(0).min(n.len());
        if len == 0 {
            return INVALID_VALUE;
        }
        // SAFETY: the caller's buffer holds `len` bytes; the copy ends in a NUL.
        unsafe {
            std::ptr::copy_nonoverlapping(n.as_ptr().cast::<c_char>(), name, len);
            *name.add(len - 1) = 0;
        }
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: c_int) -> CuResult {
    with(|_| {
        if dev != 0 {
            return INVALID_DEVICE;
        }
        // SAFETY: valid out-pointer.
        unsafe { *bytes = 80 << 30 };
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(ctx: *mut *mut c_void, dev: c_int) -> CuResult {
    with(|s| {
        if dev != 0 {
            return INVALID_DEVICE;
        }
        s.retained += 1;
        // SAFETY: valid out-pointer.
        unsafe { *ctx = PRIMARY_CTX as *mut c_void };
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxRelease_v2(_dev: c_int) -> CuResult {
    with(|s| {
        s.retained = s.retained.saturating_sub(1);
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetCurrent(ctx: *mut *mut c_void) -> CuResult {
    // SAFETY: valid out-pointer.
    unsafe { *ctx = CURRENT.get() as *mut c_void };
    SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSetCurrent(ctx: *mut c_void) -> CuResult {
    let c = ctx as usize;
    if c != 0 && c != PRIMARY_CTX {
        return INVALID_HANDLE;
    }
    CURRENT.set(c);
    SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSynchronize() -> CuResult {
    with(|s| {
        s.counters[C_CTX_SYNC] += 1;
        s.run_all();
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoadData(m: *mut *mut c_void, image: *const c_void) -> CuResult {
    with(|s| {
        // SAFETY: the image is PTX text, NUL-terminated (cuModuleLoadData's contract).
        let ptx = unsafe { CStr::from_ptr(image.cast::<c_char>()) }.to_string_lossy();
        let has = |entry: &str| ptx.contains(&format!(".entry {entry}("));
        for entry in ["gcm_setup", "gcm_open_main", "gcm_open_final"] {
            if !has(entry) {
                s.fail(INVALID_IMAGE, format!("PTX has no entry {entry}"));
                return INVALID_IMAGE;
            }
        }
        let entries = Kernel::ALL
            .iter()
            .map(|&(name, _)| name)
            .filter(|name| has(name))
            .collect();
        let h = s.handle();
        s.modules.insert(h, entries);
        // SAFETY: valid out-pointer.
        unsafe { *m = h as *mut c_void };
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuModuleUnload(m: *mut c_void) -> CuResult {
    with(|s| match s.modules.remove(&(m as usize)) {
        Some(_) => SUCCESS,
        None => INVALID_HANDLE,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleGetFunction(
    f: *mut *mut c_void,
    m: *mut c_void,
    name: *const c_char,
) -> CuResult {
    with(|s| {
        let Some(entries) = s.modules.get(&(m as usize)) else {
            return INVALID_HANDLE;
        };
        // SAFETY: NUL-terminated name (driver API contract).
        let name = unsafe { CStr::from_ptr(name) }.to_bytes();
        // A kernel of aes_gcm.cu that this module's PTX has an entry for.
        let Some(k) = Kernel::ALL
            .iter()
            .find(|(n, _)| n.as_bytes() == name && entries.contains(n))
            .map(|&(_, k)| k)
        else {
            return NOT_FOUND;
        };
        let h = s.handle();
        s.functions.insert(h, k);
        // SAFETY: valid out-pointer.
        unsafe { *f = h as *mut c_void };
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamCreate(st: *mut *mut c_void, _flags: c_uint) -> CuResult {
    with(|s| {
        let h = s.handle();
        s.streams.insert(h, Stream::default());
        // SAFETY: valid out-pointer.
        unsafe { *st = h as *mut c_void };
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamDestroy_v2(st: *mut c_void) -> CuResult {
    // Destroying a stream lets its queued work finish first (as CUDA does).
    let mut g = lock();
    let Some(s) = g.as_mut() else {
        return NOT_INITIALIZED;
    };
    let id = st as usize;
    let upto = s.streams.get(&id).map_or(0, |x| x.enqueued);
    s.run(id, upto);
    match s.streams.remove(&id) {
        Some(_) => SUCCESS,
        None => INVALID_HANDLE,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamSynchronize(st: *mut c_void) -> CuResult {
    with(|s| {
        let id = st as usize;
        s.counters[C_STREAM_SYNC] += 1;
        if id == 0 {
            return SUCCESS;
        }
        let Some(upto) = s.streams.get(&id).map(|x| x.enqueued) else {
            return INVALID_HANDLE;
        };
        s.force(id, upto);
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamWaitEvent(st: *mut c_void, ev: *mut c_void, _flags: c_uint) -> CuResult {
    with(|s| {
        let Some(e) = s.events.get(&(ev as usize)).copied() else {
            return INVALID_HANDLE;
        };
        match e.recorded {
            // Waiting for an event never recorded waits for nothing.
            None => SUCCESS,
            Some((stream, upto)) => s.enqueue(st as usize, Op::Wait { stream, upto }),
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventCreate(ev: *mut *mut c_void, _flags: c_uint) -> CuResult {
    with(|s| {
        let h = s.handle();
        s.events.insert(h, Event::default());
        // SAFETY: valid out-pointer.
        unsafe { *ev = h as *mut c_void };
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventDestroy_v2(ev: *mut c_void) -> CuResult {
    let mut g = lock();
    let Some(s) = g.as_mut() else {
        return NOT_INITIALIZED;
    };
    match s.events.remove(&(ev as usize)) {
        Some(_) => SUCCESS,
        None => INVALID_HANDLE,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventRecord(ev: *mut c_void, st: *mut c_void) -> CuResult {
    with(|s| {
        let id = st as usize;
        let Some(upto) = s.streams.get(&id).map(|x| x.enqueued) else {
            return INVALID_HANDLE;
        };
        s.counters[C_QUEUED] += 1;
        match s.events.get_mut(&(ev as usize)) {
            Some(e) => {
                e.recorded = Some((id, upto));
                SUCCESS
            }
            None => INVALID_HANDLE,
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventRecordWithFlags(ev: *mut c_void, st: *mut c_void, _f: c_uint) -> CuResult {
    cuEventRecord(ev, st)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventSynchronize(ev: *mut c_void) -> CuResult {
    with(|s| {
        let Some(e) = s.events.get(&(ev as usize)).copied() else {
            return INVALID_HANDLE;
        };
        s.counters[C_EVENT_SYNC] += 1;
        if let Some((stream, upto)) = e.recorded {
            s.force(stream, upto);
        }
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventQuery(ev: *mut c_void) -> CuResult {
    with(|s| {
        let Some(e) = s.events.get(&(ev as usize)).copied() else {
            return INVALID_HANDLE;
        };
        match e.recorded {
            Some((stream, upto)) if s.streams.get(&stream).is_some_and(|x| x.executed < upto) => {
                600 // CUDA_ERROR_NOT_READY
            }
            _ => SUCCESS,
        }
    })
}

fn elapsed(ms: *mut f32, start: *mut c_void, end: *mut c_void) -> CuResult {
    with(|s| {
        let (Some(a), Some(b)) = (
            s.events.get(&(start as usize)).and_then(|e| e.recorded),
            s.events.get(&(end as usize)).and_then(|e| e.recorded),
        ) else {
            return INVALID_HANDLE;
        };
        s.run(a.0, a.1);
        s.run(b.0, b.1);
        // SAFETY: valid out-pointer. Nominal: 1 µs per operation between the events.
        unsafe { *ms = (b.1.saturating_sub(a.1).max(1)) as f32 / 1000.0 };
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventElapsedTime(
    ms: *mut f32,
    start: *mut c_void,
    end: *mut c_void,
) -> CuResult {
    elapsed(ms, start, end)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventElapsedTime_v2(
    ms: *mut f32,
    start: *mut c_void,
    end: *mut c_void,
) -> CuResult {
    elapsed(ms, start, end)
}

fn new_alloc(s: &mut State, len: usize, kind: Kind, live: bool, pool: bool) -> u64 {
    let len = len.max(1);
    let buf = vec![0xCDu8; len + 256].into_boxed_slice();
    let base = (buf.as_ptr() as u64).next_multiple_of(256);
    s.allocs.insert(
        base,
        Alloc {
            _buf: Some(buf),
            len,
            kind,
            live,
            pool,
        },
    );
    base
}

/// `cuMemAllocAsync` (`pool`: from the stream-ordered pool, queued on `st`) or
/// `cuMemAlloc` (at once, outside the pool).
///
/// # Safety
/// `dptr` is a valid out-pointer.
unsafe fn alloc_device(dptr: *mut u64, len: usize, st: *mut c_void, pool: bool) -> CuResult {
    with(|s| {
        if len == 0 {
            return INVALID_VALUE;
        }
        if len > 16 << 30 {
            return OUT_OF_MEMORY;
        }
        s.counters[C_ALLOC] += 1;
        let live = st.is_null();
        let base = new_alloc(s, len, Kind::Device, live, pool);
        if !live {
            let r = s.enqueue(st as usize, Op::Alloc { base });
            if r != SUCCESS {
                s.allocs.remove(&base);
                return r;
            }
        }
        // SAFETY: valid out-pointer.
        unsafe { *dptr = base };
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocAsync(dptr: *mut u64, len: usize, st: *mut c_void) -> CuResult {
    // SAFETY: forwarded out-pointer.
    unsafe { alloc_device(dptr, len, st, true) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut u64, len: usize) -> CuResult {
    // SAFETY: forwarded out-pointer.
    unsafe { alloc_device(dptr, len, std::ptr::null_mut(), false) }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemFreeAsync(dptr: u64, st: *mut c_void) -> CuResult {
    with(|s| {
        s.counters[C_FREE] += 1;
        s.enqueue(st as usize, Op::Free { base: dptr })
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemFree_v2(dptr: u64) -> CuResult {
    with(|s| {
        s.counters[C_FREE] += 1;
        // cuMemFree waits for the work already queued.
        s.run_all();
        s.enqueue(0, Op::Free { base: dptr })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemHostAlloc(
    pp: *mut *mut c_void,
    len: usize,
    _flags: c_uint,
) -> CuResult {
    with(|s| {
        if len == 0 {
            return INVALID_VALUE;
        }
        s.counters[C_HOST_ALLOC] += 1;
        // Page-locked allocation synchronises the device, as the driver's does (work
        // queued so far runs first: a resident kernel waiting for frames that are not
        // queued yet gives up, as it does on a GPU after its timeout).
        s.run_all();
        let base = new_alloc(s, len, Kind::Pinned, true, false);
        // SAFETY: valid out-pointer.
        unsafe { *pp = base as *mut c_void };
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemFreeHost(p: *mut c_void) -> CuResult {
    with(|s| {
        let base = p as u64;
        // Not registered memory: that is the caller's, released by cuMemHostUnregister.
        let Some(len) = s
            .allocs
            .get(&base)
            .filter(|a| a.kind == Kind::Pinned && a._buf.is_some())
            .map(|a| a.len)
        else {
            return INVALID_VALUE;
        };
        if s.pending_reads_of(base as usize, len) {
            s.fail(
                ILLEGAL_ADDRESS,
                format!("pinned buffer {base:#x} freed while a queued copy still uses it"),
            );
            return ILLEGAL_ADDRESS;
        }
        // Then it waits for the device, as the driver's does (see cuMemHostAlloc). The
        // check above comes first: pqcc-gpu zeroizes pinned memory before freeing it, so
        // a copy still queued from it would read zeros even though the driver waits.
        s.run_all();
        s.allocs.remove(&base);
        SUCCESS
    })
}

/// `cuMemHostRegister`: page-locks the caller's `p .. p + len` for copies (as pinned
/// memory). In CC mode the driver refuses it: `CUDA_ERROR_NOT_SUPPORTED`, as measured
/// on an H200 with CC on (docs/gpu.md, "Confidential-computing mode").
fn host_register(p: *mut c_void, len: usize) -> CuResult {
    with(|s| {
        if s.cc.on() {
            return NOT_SUPPORTED;
        }
        let base = p as u64;
        if p.is_null() || len == 0 {
            return INVALID_VALUE;
        }
        let end = base.saturating_add(len as u64);
        let overlaps = s
            .allocs
            .range(..end)
            .next_back()
            .is_some_and(|(&b, a)| b + a.len as u64 > base);
        if overlaps {
            return HOST_MEMORY_ALREADY_REGISTERED;
        }
        s.allocs.insert(
            base,
            Alloc {
                _buf: None,
                len,
                kind: Kind::Pinned,
                live: true,
                pool: false,
            },
        );
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemHostRegister_v2(p: *mut c_void, len: usize, _flags: c_uint) -> CuResult {
    host_register(p, len)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemHostRegister(p: *mut c_void, len: usize, _flags: c_uint) -> CuResult {
    host_register(p, len)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemHostUnregister(p: *mut c_void) -> CuResult {
    with(|s| {
        let base = p as u64;
        let Some(len) = s
            .allocs
            .get(&base)
            .filter(|a| a.kind == Kind::Pinned && a._buf.is_none())
            .map(|a| a.len)
        else {
            return HOST_MEMORY_NOT_REGISTERED;
        };
        if s.pending_reads_of(base as usize, len) {
            s.fail(
                ILLEGAL_ADDRESS,
                format!("host memory {base:#x} unregistered while a queued copy still uses it"),
            );
            return ILLEGAL_ADDRESS;
        }
        s.allocs.remove(&base);
        SUCCESS
    })
}

/// `cuMemHostGetDevicePointer`: the device address of page-locked host memory. CC off:
/// the same address (unified addressing). CC on: refused, `CUDA_ERROR_NOT_SUPPORTED` (the
/// GPU cannot reach the guest's private memory; the code is this fake's choice).
fn host_device_pointer(dptr: *mut u64, p: *mut c_void) -> CuResult {
    with(|s| {
        if s.cc.on() {
            return NOT_SUPPORTED;
        }
        if dptr.is_null() || s.find(p as u64, 1, Kind::Pinned).is_err() {
            return INVALID_VALUE;
        }
        // SAFETY: checked non-null out-pointer (driver API contract).
        unsafe { *dptr = p as u64 };
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemHostGetDevicePointer_v2(
    dptr: *mut u64,
    p: *mut c_void,
    _flags: c_uint,
) -> CuResult {
    host_device_pointer(dptr, p)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemHostGetDevicePointer(
    dptr: *mut u64,
    p: *mut c_void,
    _flags: c_uint,
) -> CuResult {
    host_device_pointer(dptr, p)
}

fn htod(s: &mut State, dst: u64, src: *const c_void, len: usize, st: usize) -> CuResult {
    if len == 0 {
        return SUCCESS;
    }
    match s.fail_copy {
        Some(0) => {
            s.fail_copy = None;
            return INVALID_VALUE;
        }
        Some(k) => s.fail_copy = Some(k - 1),
        None => {}
    }
    let pinned = s.find(src as u64, len, Kind::Pinned).is_ok();
    let src = if pinned && st != 0 {
        Src::Pinned(src as usize)
    } else {
        // Pageable memory is read at the call, as the driver stages it.
        // SAFETY: the caller's source holds `len` bytes (driver API contract).
        Src::Snapshot(unsafe { std::slice::from_raw_parts(src.cast::<u8>(), len) }.to_vec())
    };
    s.enqueue(st, Op::HtoD { dst, src, len })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemcpyHtoDAsync_v2(
    dst: u64,
    src: *const c_void,
    len: usize,
    st: *mut c_void,
) -> CuResult {
    with(|s| htod(s, dst, src, len, st as usize))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemcpyHtoD_v2(dst: u64, src: *const c_void, len: usize) -> CuResult {
    with(|s| {
        s.counters[C_SYNC_COPY] += 1;
        htod(s, dst, src, len, 0)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemcpyDtoHAsync_v2(
    dst: *mut c_void,
    src: u64,
    len: usize,
    st: *mut c_void,
) -> CuResult {
    with(|s| {
        if len == 0 {
            return SUCCESS;
        }
        if s.find(dst as u64, len, Kind::Pinned).is_err() {
            // To pageable memory the copy is synchronous: the work before it runs first.
            let id = st as usize;
            let upto = s.streams.get(&id).map_or(0, |x| x.enqueued);
            s.force(id, upto);
            return dtoh_now(s, dst, src, len);
        }
        s.enqueue(
            st as usize,
            Op::DtoH {
                dst: dst as usize,
                src,
                len,
            },
        )
    })
}

fn dtoh_now(s: &mut State, dst: *mut c_void, src: u64, len: usize) -> CuResult {
    match s.device(src, len) {
        Ok(p) => {
            // SAFETY: checked device range; the caller's buffer holds `len` bytes.
            unsafe { std::ptr::copy(p, dst.cast::<u8>(), len) };
            s.bounce(len);
            SUCCESS
        }
        Err(why) => {
            s.fail(ILLEGAL_ADDRESS, why);
            ILLEGAL_ADDRESS
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemcpyDtoH_v2(dst: *mut c_void, src: u64, len: usize) -> CuResult {
    with(|s| {
        s.counters[C_SYNC_COPY] += 1;
        if len == 0 {
            return SUCCESS;
        }
        dtoh_now(s, dst, src, len)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemcpyDtoDAsync_v2(
    dst: u64,
    src: u64,
    len: usize,
    st: *mut c_void,
) -> CuResult {
    with(|s| {
        if len == 0 {
            return SUCCESS;
        }
        s.enqueue(st as usize, Op::DtoD { dst, src, len })
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD8Async(dst: u64, val: u8, len: usize, st: *mut c_void) -> CuResult {
    with(|s| {
        if len == 0 {
            return SUCCESS;
        }
        s.enqueue(st as usize, Op::Memset { dst, val, len })
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD8_v2(dst: u64, val: u8, len: usize) -> CuResult {
    with(|s| s.enqueue(0, Op::Memset { dst, val, len }))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLaunchKernel(
    f: *mut c_void,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    _shared: c_uint,
    st: *mut c_void,
    params: *mut *mut c_void,
    _extra: *mut *mut c_void,
) -> CuResult {
    with(|s| {
        let Some(&kernel) = s.functions.get(&(f as usize)) else {
            return INVALID_HANDLE;
        };
        if params.is_null() {
            return INVALID_VALUE;
        }
        // Argument layout per kernel: (pointer args before the struct argument, the
        // struct's size (0: none), pointer args after it).
        let (before, struct_len, after) = match kernel {
            Kernel::Setup => (2, 0, 0),
            Kernel::Main => (3, PARAMS_LEN, 1),
            Kernel::Final => (1, PARAMS_LEN, 3),
            Kernel::Tensor => (1, TENSOR_PARAMS_LEN, 4),
        };
        let arg = |i: usize| -> *const u8 {
            // SAFETY: `params` holds one pointer per kernel argument (launch contract).
            unsafe { *params.add(i) }.cast::<u8>()
        };
        let ptr_at = |i: usize| -> u64 {
            let mut b = [0u8; 8];
            // SAFETY: each pointer argument is a 64-bit device address.
            unsafe { std::ptr::copy_nonoverlapping(arg(i), b.as_mut_ptr(), 8) };
            u64::from_ne_bytes(b)
        };
        let mut ptrs: Vec<u64> = (0..before).map(ptr_at).collect();
        let mut p = None;
        if struct_len > 0 {
            let mut b = vec![0u8; struct_len];
            // SAFETY: the struct argument is `struct frame_params` (PARAMS_LEN bytes) or
            // `struct tensor_params` (TENSOR_PARAMS_LEN), as the kernel declares it.
            unsafe { std::ptr::copy_nonoverlapping(arg(before), b.as_mut_ptr(), struct_len) };
            p = Some(b);
            ptrs.extend((before + 1..before + 1 + after).map(ptr_at));
        }
        s.counters[C_LAUNCH] += 1;
        s.enqueue(
            st as usize,
            Op::Launch(Launch {
                kernel,
                grid: [gx, gy, gz],
                block: [bx, by, bz],
                ptrs,
                params: p,
            }),
        )
    })
}

fn write_value32(st: *mut c_void, addr: u64, value: u32, flags: c_uint) -> CuResult {
    with(|s| {
        // Only the default: ordered after the stream's earlier writes (a memory barrier),
        // which the arrival flags of gcm_open_tensor rely on.
        if s.no_stream_memops {
            return NOT_SUPPORTED;
        }
        if flags != WRITE_VALUE_DEFAULT || !addr.is_multiple_of(4) {
            return INVALID_VALUE;
        }
        // In CC mode the GPU cannot write the guest's (private) host memory: a flag or
        // verdict the GPU would write there directly is refused. (The code is this fake's
        // choice; what a CC-on driver returns here has not been seen.)
        if s.cc.on() && s.find(addr, 4, Kind::Pinned).is_ok() {
            return NOT_SUPPORTED;
        }
        // As the driver: not to memory of the stream-ordered pool.
        if s.allocs
            .range(..=addr)
            .next_back()
            .is_some_and(|(_, a)| a.pool)
        {
            return INVALID_VALUE;
        }
        s.counters[C_WRITE_VALUE] += 1;
        if s.lose_writes > 0 {
            s.lose_writes -= 1;
            return SUCCESS;
        }
        s.enqueue(st as usize, Op::WriteValue { addr, value })
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamWriteValue32_v2(
    st: *mut c_void,
    addr: u64,
    value: u32,
    flags: c_uint,
) -> CuResult {
    write_value32(st, addr, value, flags)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamWriteValue32(
    st: *mut c_void,
    addr: u64,
    value: u32,
    flags: c_uint,
) -> CuResult {
    write_value32(st, addr, value, flags)
}

fn error_text(e: CuResult) -> &'static CStr {
    match e {
        SUCCESS => c"no error",
        INVALID_VALUE => c"invalid argument",
        OUT_OF_MEMORY => c"out of memory",
        NOT_INITIALIZED => c"initialization error",
        INVALID_DEVICE => c"invalid device ordinal",
        INVALID_IMAGE => c"device kernel image is invalid",
        INVALID_HANDLE => c"invalid resource handle",
        NOT_FOUND => c"named symbol not found",
        600 => c"device not ready",
        NOT_SUPPORTED => c"operation not supported",
        ILLEGAL_ADDRESS => c"an illegal memory access was encountered (FakeCuda)",
        LAUNCH_FAILED => c"unspecified launch failure (FakeCuda)",
        _ => c"unknown error (FakeCuda)",
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorString(e: CuResult, out: *mut *const c_char) -> CuResult {
    // SAFETY: valid out-pointer; the string is static.
    unsafe { *out = error_text(e).as_ptr() };
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorName(e: CuResult, out: *mut *const c_char) -> CuResult {
    // SAFETY: as above.
    unsafe { cuGetErrorString(e, out) }
}

// ---- NVML's confidential-computing state (the subset pqcc-gpu reads) ----

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit_v2() -> c_int {
    let mut g = lock();
    let s = g.get_or_insert_with(State::default);
    if let Some(cc) = Cc::from_env() {
        s.cc = cc;
    }
    if s.nvml_fault == 1 {
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    s.nvml_inits += 1;
    NVML_SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlShutdown() -> c_int {
    let mut g = lock();
    match g.as_mut() {
        Some(s) if s.nvml_inits > 0 => {
            s.nvml_inits -= 1;
            NVML_SUCCESS
        }
        _ => NVML_ERROR_UNINITIALIZED,
    }
}

/// `nvmlSystemGetConfComputeState`: `ccFeature` 1 (and `environment` PROD) in CC mode,
/// with `devToolsMode` 1 in the developer tools mode; 0 everywhere with CC off.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetConfComputeState(
    state: *mut NvmlConfComputeSystemState,
) -> c_int {
    let g = lock();
    let Some(s) = g.as_ref().filter(|s| s.nvml_inits > 0) else {
        return NVML_ERROR_UNINITIALIZED;
    };
    if state.is_null() {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    let answer = match (s.nvml_fault, s.cc) {
        (2, _) => return NVML_ERROR_NOT_SUPPORTED,
        // A value NVML does not define.
        (3, _) => NvmlConfComputeSystemState {
            environment: NVML_CC_ENVIRONMENT_PROD,
            cc_feature: 7,
            dev_tools_mode: 0,
        },
        (_, Cc::Off) => NvmlConfComputeSystemState::default(),
        (_, cc) => NvmlConfComputeSystemState {
            environment: NVML_CC_ENVIRONMENT_PROD,
            cc_feature: 1,
            dev_tools_mode: c_uint::from(cc == Cc::DevTools),
        },
    };
    // SAFETY: checked non-null; the caller's struct has this layout (nvml.h).
    unsafe { *state = answer };
    NVML_SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlErrorString(r: c_int) -> *const c_char {
    match r {
        NVML_SUCCESS => c"Success",
        NVML_ERROR_UNINITIALIZED => c"Uninitialized",
        NVML_ERROR_INVALID_ARGUMENT => c"Invalid Argument",
        NVML_ERROR_NOT_SUPPORTED => c"Not Supported",
        NVML_ERROR_DRIVER_NOT_LOADED => c"Driver Not Loaded",
        _ => c"Unknown Error (FakeCuda)",
    }
    .as_ptr()
}

// ---- For the tests ----

/// Copies the host-side counters into `out` (at most `n`): stream synchronizes, event
/// synchronizes, context synchronizes, synchronous copies, device allocations, device
/// frees, kernel launches, pinned allocations, stream memory writes
/// (`cuStreamWriteValue32`), frames a resident kernel gave up waiting for, driver
/// calls that queue work on a stream (operations of any kind, and event records),
/// `gcm_open_tensor` launches queued while an earlier one had not run yet, and in CC mode
/// the copies between host memory and VRAM (through the driver's bounce buffers) and
/// their bytes. Returns how many there are.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pqcc_fake_cuda_counters(out: *mut u64, n: usize) -> usize {
    let g = lock();
    if let Some(s) = g.as_ref() {
        for (i, c) in s.counters.iter().enumerate().take(n) {
            // SAFETY: the caller's buffer holds `n` counters.
            unsafe { *out.add(i) = *c };
        }
    }
    COUNTERS
}

/// Writes the first failure of queued work (NUL-terminated, cut to `len`) into `buf`;
/// returns its error code, 0 when nothing failed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pqcc_fake_cuda_last_error(buf: *mut c_char, len: usize) -> CuResult {
    let g = lock();
    let Some((code, why)) = g.as_ref().and_then(|s| s.sticky.clone()) else {
        return SUCCESS;
    };
    if len > 0 {
        let n = why.len().min(len - 1);
        // SAFETY: the caller's buffer holds `len` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(why.as_ptr().cast::<c_char>(), buf, n);
            *buf.add(n) = 0;
        }
    }
    code
}

/// Changes a setting of the fake (also before `cuInit`).
fn configure(f: impl FnOnce(&mut State)) {
    f(lock().get_or_insert_with(State::default));
}

/// Chooses the order queued work runs in when the host waits: 0 (the default) runs only
/// the stream waited for and what it waits for, as late as possible; 1 first runs every
/// other stream to its end. A missing "wait for" between streams shows as stale data
/// in order 0 when the reader does not wait, and in order 1 when a writer runs too early.
/// In order 1 a `gcm_open_tensor` launch (and what waits for it) is not started early:
/// it runs when the host waits for its own stream, or for work behind it.
#[unsafe(no_mangle)]
pub extern "C" fn pqcc_fake_cuda_set_order(order: c_uint) -> CuResult {
    configure(|s| s.others_first = order == 1);
    SUCCESS
}

/// Chooses how kernels run: 0 (the default) computes their effect with pqcc-core's
/// AES-256-GCM (fast); 1 runs the kernel source itself, `aes_gcm.cu` compiled as C++,
/// with the threads of a block as fibers (slow: for small inputs). Switch only between
/// tensors: the two keep different key contexts and partials.
#[unsafe(no_mangle)]
pub extern "C" fn pqcc_fake_cuda_set_kernels(mode: c_uint) -> CuResult {
    configure(|s| s.emulate = mode == 1);
    SUCCESS
}

/// Sets the multiprocessor count reported to backends created afterwards (0: 132, an
/// H100's). pqcc-gpu sizes each frame's grid from it: with few, even small frames get
/// several blocks' worth of work per thread (`seg` > 1), the kernel's Horner steps.
#[unsafe(no_mangle)]
pub extern "C" fn pqcc_fake_cuda_set_multiprocessors(n: c_uint) -> CuResult {
    configure(|s| s.multiprocessors = c_int::try_from(n).unwrap_or(0));
    SUCCESS
}

/// Fault injection: the next `n` stream value writes (`cuStreamWriteValue32`) are
/// accepted and then lost, as if the device never carried them out. A resident kernel
/// waiting for such a flag reaches its timeout.
#[unsafe(no_mangle)]
pub extern "C" fn pqcc_fake_cuda_lose_flag_writes(n: c_uint) -> CuResult {
    configure(|s| s.lose_writes = n);
    SUCCESS
}

/// A driver without stream memory operations: with `on` = 1, every stream value write
/// (`cuStreamWriteValue32`) is refused with `CUDA_ERROR_NOT_SUPPORTED`; 0 restores them.
#[unsafe(no_mangle)]
pub extern "C" fn pqcc_fake_cuda_no_stream_memops(on: c_uint) -> CuResult {
    configure(|s| s.no_stream_memops = on != 0);
    SUCCESS
}

/// Fault injection: after `n` more host-to-device copies, the next one fails at the call
/// (`CUDA_ERROR_INVALID_VALUE`, not sticky), as a driver refuses a copy. `u32::MAX`
/// cancels.
#[unsafe(no_mangle)]
pub extern "C" fn pqcc_fake_cuda_fail_copy(n: c_uint) -> CuResult {
    configure(|s| s.fail_copy = (n != u32::MAX).then_some(n));
    SUCCESS
}

/// The GPU's confidential-computing mode: 0 off (the default), 1 on, 2 on with the
/// developer tools mode. What it changes: see the crate documentation. Switch only
/// between tests (no allocation or queued work of another mode around).
#[unsafe(no_mangle)]
pub extern "C" fn pqcc_fake_cuda_set_cc(mode: c_uint) -> CuResult {
    configure(|s| {
        s.cc = match mode {
            0 => Cc::Off,
            2 => Cc::DevTools,
            _ => Cc::On,
        }
    });
    SUCCESS
}

/// How the fake's NVML answers: 0 as it should; 1 `nvmlInit_v2` fails
/// (`NVML_ERROR_DRIVER_NOT_LOADED`); 2 `nvmlSystemGetConfComputeState` fails
/// (`NVML_ERROR_NOT_SUPPORTED`, as a driver older than the CC releases might); 3 it
/// reports a `ccFeature` value NVML does not define.
#[unsafe(no_mangle)]
pub extern "C" fn pqcc_fake_cuda_set_nvml(fault: c_uint) -> CuResult {
    configure(|s| s.nvml_fault = fault);
    SUCCESS
}

/// Allocations still live (device and pinned): a test's leak check.
#[unsafe(no_mangle)]
pub extern "C" fn pqcc_fake_cuda_live_allocations() -> usize {
    lock()
        .as_ref()
        .map_or(0, |s| s.allocs.values().filter(|a| a.live).count())
}
