//! The opener tests of `gpu.rs` (`common/cases.rs`) run against **FakeCuda**
//! (`gpu/fake-cuda`), a fake CUDA driver standing in for the GPU that this machine may
//! lack: the host side of `pqcc_gpu::cuda` (work split, kernel parameters, stream and
//! event ordering, staging, the three schedules, error paths, zeroing) runs in every CI
//! run. By default the fake computes the kernels' effects with pqcc-core's AES-256-GCM;
//! `kernel_source_emulated_on_the_cpu` runs the kernel source itself, compiled as C++
//! and emulated (slowly, so on small inputs). Neither says anything about speed or the
//! GPU's memory model: `gpu.rs` on a real device checks those.
//!
//! FakeCuda runs queued work only when the host waits for it, so a missing wait shows
//! up as stale data or an error every time. These tests also count host waits and
//! launches per tensor for each schedule, and lose a resident kernel's arrival flag on
//! purpose. In FakeCuda's confidential-computing mode they check the opener's reading
//! of NVML's CC state and every schedule: opened through the bounce buffers, or refused
//! as documented (docs/gpu.md, "Confidential-computing mode").
//!
//! Needs libnvrtc (the kernel is still compiled to PTX, and the fake checks its entry
//! points); without it every test prints why and returns. The fake library is built
//! with `cargo build -p pqcc-fake-cuda` and loaded by path before cudarc looks for
//! `libcuda.so` (its soname), so cudarc binds to it.

mod common;
mod fake;

use std::ffi::{c_char, c_uint};
use std::sync::{Mutex, MutexGuard, OnceLock};

use common::cases::{self, Device, SCHEDULES};
use common::*;
use pqcc_gpu::{
    Backend, GpuError,
    cuda::{
        CcState, CudaBackend, DEFAULT_BATCH_DEPTH, OpenSchedule, RESIDENT_LANES, cuda_available,
        insecure_allow_fake_driver,
    },
    kernel,
};

/// FakeCuda's state is one per process: the tests take turns.
static TURN: Mutex<()> = Mutex::new(());
static LIB: OnceLock<(libloading::Library, std::path::PathBuf)> = OnceLock::new();

fn turn() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Loads FakeCuda by path (once), before anything asks for `libcuda.so`.
fn fake() -> &'static libloading::Library {
    &LIB.get_or_init(|| {
        let path = fake::build();
        // SAFETY: FakeCuda has no initialisers beyond Rust statics; loading it runs no
        // foreign code.
        let lib = unsafe { libloading::Library::new(&path) }
            .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
        (lib, path)
    })
    .0
}

/// Where FakeCuda's shared library is (loaded by [`fake`]).
fn fake_path() -> &'static std::path::Path {
    fake();
    &LIB.get().expect("loaded above").1
}

struct FakeGpu;

impl FakeGpu {
    fn counters(&self) -> Counters {
        let mut c = [0u64; COUNTERS];
        // SAFETY: the symbol has this signature in gpu/fake-cuda; `c` holds `COUNTERS`.
        unsafe {
            let f: libloading::Symbol<'_, unsafe extern "C" fn(*mut u64, usize) -> usize> =
                fake().get(b"pqcc_fake_cuda_counters").unwrap();
            f(c.as_mut_ptr(), c.len());
        }
        Counters(c)
    }

    /// Calls one of FakeCuda's `u32 -> u32` test controls.
    fn control(&self, name: &[u8], n: u32) {
        // SAFETY: every `pqcc_fake_cuda_*` control called here has this signature in
        // gpu/fake-cuda.
        unsafe {
            let f: libloading::Symbol<'_, extern "C" fn(c_uint) -> c_uint> =
                fake().get(name).unwrap();
            f(n);
        }
    }

    /// FakeCuda's execution order: 0 lazy (the default), 1 the other streams first.
    fn set_order(&self, order: u32) {
        self.control(b"pqcc_fake_cuda_set_order", order);
    }

    /// How FakeCuda runs kernels: 0 computed with pqcc-core, 1 the kernel source emulated.
    fn set_kernels(&self, mode: u32) {
        self.control(b"pqcc_fake_cuda_set_kernels", mode);
    }

    /// The multiprocessor count FakeCuda reports to backends created afterwards (0: 132).
    fn set_multiprocessors(&self, n: u32) {
        self.control(b"pqcc_fake_cuda_set_multiprocessors", n);
    }

    /// Makes FakeCuda lose the next `n` stream value writes (the resident kernel's flags).
    fn lose_flag_writes(&self, n: u32) {
        self.control(b"pqcc_fake_cuda_lose_flag_writes", n);
    }

    /// Runs everything queued on every stream (`cuCtxSynchronize`), as a GPU would by
    /// itself sooner or later: work the host left running after a call shows its effects.
    fn run_everything(&self) {
        // SAFETY: the driver entry point has this signature in gpu/fake-cuda.
        unsafe {
            let f: libloading::Symbol<'_, extern "C" fn() -> c_uint> =
                fake().get(b"cuCtxSynchronize").unwrap();
            f();
        }
    }

    /// Makes FakeCuda a driver without stream memory operations (1) or with them (0).
    fn no_stream_memops(&self, on: u32) {
        self.control(b"pqcc_fake_cuda_no_stream_memops", on);
    }

    /// Makes FakeCuda refuse the host-to-device copy after the next `n`.
    fn fail_copy(&self, n: u32) {
        self.control(b"pqcc_fake_cuda_fail_copy", n);
    }

    /// FakeCuda's confidential-computing mode: 0 off, 1 on, 2 on with developer tools.
    fn set_cc(&self, mode: u32) {
        self.control(b"pqcc_fake_cuda_set_cc", mode);
    }

    /// How FakeCuda's NVML answers: 0 as it should, 1 `nvmlInit_v2` fails, 2 the CC state
    /// query fails, 3 it reports an undefined `ccFeature`.
    fn set_nvml(&self, fault: u32) {
        self.control(b"pqcc_fake_cuda_set_nvml", fault);
    }

    /// FakeCuda's `nvmlShutdown` (its NVML return code).
    fn nvml_shutdown(&self) -> i32 {
        // SAFETY: the NVML entry point has this signature in gpu/fake-cuda.
        unsafe {
            let f: libloading::Symbol<'_, extern "C" fn() -> i32> =
                fake().get(b"nvmlShutdown").unwrap();
            f()
        }
    }

    fn live_allocations(&self) -> usize {
        // SAFETY: as above.
        unsafe {
            let f: libloading::Symbol<'_, extern "C" fn() -> usize> =
                fake().get(b"pqcc_fake_cuda_live_allocations").unwrap();
            f()
        }
    }

    /// Panics with FakeCuda's account of the first failed device operation, if any.
    fn assert_no_fault(&self) {
        let mut buf = [0 as c_char; 512];
        // SAFETY: as above; `buf` holds 512 bytes.
        let code = unsafe {
            let f: libloading::Symbol<'_, unsafe extern "C" fn(*mut c_char, usize) -> c_uint> =
                fake().get(b"pqcc_fake_cuda_last_error").unwrap();
            f(buf.as_mut_ptr(), buf.len())
        };
        if code != 0 {
            // SAFETY: the fake wrote a NUL-terminated string.
            let why = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
            panic!("FakeCuda: device fault {code}: {}", why.to_string_lossy());
        }
    }
}

/// FakeCuda's counters (`pqcc_fake_cuda_counters`).
const COUNTERS: usize = 14;

#[derive(Debug, Clone, Copy)]
struct Counters([u64; COUNTERS]);

impl Counters {
    /// Times the host waited for the device: stream, event and context synchronizes and
    /// synchronous copies.
    fn waits(&self) -> u64 {
        self.0[0] + self.0[1] + self.0[2] + self.0[3]
    }
    fn allocs(&self) -> u64 {
        self.0[4]
    }
    fn frees(&self) -> u64 {
        self.0[5]
    }
    fn launches(&self) -> u64 {
        self.0[6]
    }
    fn flag_writes(&self) -> u64 {
        self.0[8]
    }
    /// Frames a resident kernel gave up waiting for.
    fn timed_out(&self) -> u64 {
        self.0[9]
    }
    /// Driver calls that queue work on a stream (operations and event records).
    fn queued(&self) -> u64 {
        self.0[10]
    }
    /// Per resident kernel queued, the earlier ones that had not run yet, summed.
    fn tensors_behind(&self) -> u64 {
        self.0[11]
    }
    /// Copies between host memory and VRAM through the driver's bounce buffers (CC mode).
    fn bounced(&self) -> u64 {
        self.0[12]
    }
    /// Their bytes.
    fn bounced_bytes(&self) -> u64 {
        self.0[13]
    }
    fn minus(self, before: Counters) -> Counters {
        let mut d = [0u64; COUNTERS];
        for (i, x) in d.iter_mut().enumerate() {
            *x = self.0[i] - before.0[i];
        }
        Counters(d)
    }
}

impl Device for FakeGpu {
    fn tag(&self) -> &'static str {
        "fake-gpu"
    }

    fn backend(&self, test: &str) -> Option<CudaBackend> {
        if let Err(e) = kernel::nvrtc_available() {
            println!("[fake-gpu] {test}: skipped: {e}");
            return None;
        }
        fake();
        cuda_available().expect("FakeCuda loaded, yet cudarc finds no CUDA");
        insecure_allow_fake_driver();
        let b = CudaBackend::new(0, 4).unwrap_or_else(|e| panic!("{e}"));
        let info = b.device_info();
        assert!(
            info.name.starts_with("FakeCuda"),
            "cudarc bound to another driver: {info:?}"
        );
        Some(b)
    }

    fn another(&self) -> CudaBackend {
        CudaBackend::new(0, 2).unwrap()
    }
}

/// Runs `f` in turn with the other tests and checks, after it, that the device saw no
/// fault and that every allocation made meanwhile was freed.
fn checked(f: impl FnOnce(&FakeGpu)) {
    let _t = turn();
    let dev = FakeGpu;
    if kernel::nvrtc_available().is_err() {
        f(&dev);
        return;
    }
    fake();
    let live = dev.live_allocations();
    f(&dev);
    dev.assert_no_fault();
    assert_eq!(
        dev.live_allocations(),
        live,
        "device or pinned memory left allocated"
    );
}

#[test]
fn wycheproof_through_the_opener_host_code() {
    checked(|d| cases::wycheproof(d));
}

/// `case` under each schedule, in turn with the other tests.
fn each_schedule(case: fn(&dyn Device, OpenSchedule)) {
    checked(|d| {
        for schedule in SCHEDULES {
            case(d, schedule);
        }
    });
}

#[test]
fn fake_gpu_matches_cpu_on_random_tensors() {
    each_schedule(cases::cross_check);
}

#[test]
fn sealed_models_open_into_vram() {
    each_schedule(cases::sealed_model);
}

#[test]
fn pinned_frames_open_in_place_of_staging() {
    each_schedule(cases::pinned);
}

#[test]
fn tampered_frames_fail_and_leave_a_zeroed_buffer() {
    each_schedule(cases::tamper);
}

#[test]
fn rekey_follows_the_channel() {
    checked(|d| cases::rekey(d));
}

#[test]
fn a_frame_refused_midway_leaves_a_zeroed_buffer_and_no_commit() {
    each_schedule(cases::refused_midway);
}

/// The opener cases (batches too) again with FakeCuda running the other streams first
/// whenever the host waits: work that is not made to wait for another stream (the kept
/// status words' zeroing, the staging buffers' reuse) runs too early here and fails the
/// cases.
#[test]
fn opener_cases_with_the_other_streams_run_first() {
    checked(|d| {
        if kernel::nvrtc_available().is_err() {
            println!("[fake-gpu] others first: skipped: no libnvrtc");
            return;
        }
        struct Lazy<'a>(&'a FakeGpu);
        impl Drop for Lazy<'_> {
            fn drop(&mut self) {
                self.0.set_order(0);
            }
        }
        d.set_order(1);
        let _lazy = Lazy(d);
        for schedule in SCHEDULES {
            cases::pinned(d, schedule);
            cases::tamper(d, schedule);
            cases::refused_midway(d, schedule);
            cases::batch(d, schedule);
        }
        cases::rekey(d);
        cases::wycheproof(d);
    });
}

/// The kernel source itself (`aes_gcm.cu`, compiled as C++ and run with the threads of
/// each block as fibers) through the opener: Wycheproof, small tensors of every shape
/// class (empty, partial blocks, unaligned chunk offsets on the edge path, many frames,
/// multi-block frames, several blocks per thread) against the CPU fallback, and rekey.
#[test]
fn kernel_source_emulated_on_the_cpu() {
    checked(|d| {
        if kernel::nvrtc_available().is_err() {
            println!("[fake-gpu] emulated kernels: skipped: no libnvrtc");
            return;
        }
        struct Computed<'a>(&'a FakeGpu);
        impl Drop for Computed<'_> {
            fn drop(&mut self) {
                self.0.set_kernels(0);
                self.0.set_multiprocessors(0);
            }
        }
        d.set_kernels(1);
        let _computed = Computed(d);
        let t = std::time::Instant::now();
        cases::wycheproof(d);
        let shapes: &[(usize, usize)] = &[
            (0, 1),
            (1, 1),
            (15, 16),
            (17, 16),
            (4095, 4095),
            (65_539, 65_536),
            (20_000, 1000),
            (7_003, 1000),
            (300_000, 100_000),
        ];
        for schedule in SCHEDULES {
            cases::cross_check_shapes(d, schedule, shapes);
        }
        // A 1 MiB frame has 257 parts: in the resident kernel's tag check one of its 256
        // threads weighs two partials.
        cases::cross_check_shapes(d, OpenSchedule::Resident, &[(1 << 20, 1 << 20)]);
        // Failed tags: each kernel must zero the frame itself (the fake checks after
        // every tag-checking kernel), not leave it to the host.
        for schedule in SCHEDULES {
            cases::tamper_sized(d, schedule, 8192);
        }
        // With 2 multiprocessors each thread takes several blocks of a frame (seg up
        // to 64): the Horner steps between them, and a 1 MiB frame of 4 blocks.
        d.set_multiprocessors(2);
        cases::cross_check_shapes(
            d,
            OpenSchedule::Persistent,
            &[
                (4095, 4095),
                (65_539, 65_536),
                (300_000, 100_000),
                (1 << 20, 1 << 20),
            ],
        );
        cases::rekey(d);
        println!(
            "[fake-gpu] emulated kernels: {:.1} s",
            t.elapsed().as_secs_f64()
        );
    });
}

/// Host waits, allocations and launches per tensor of 4 frames in pinned memory, for
/// each schedule, after a first tensor (which sizes the kept buffers).
#[test]
fn kept_verdicts_wait_once_per_tensor() {
    checked(|dev| {
        let Some(b) = dev.backend("schedule waits") else {
            return;
        };
        let streams = b.stream_count() as u64;
        let mut rng = Rng(0x3a17);
        let key = rng.key();
        let mut s = sealer(&key);
        let mut g = cases::gpu_opener(b, &key);
        let data = rng.bytes(1 << 20);
        let dst = g.backend().alloc_zeroed(data.len()).unwrap();
        let mut per = Vec::new();
        for (id, schedule) in [
            OpenSchedule::PerTensor,
            OpenSchedule::PerTensor,
            OpenSchedule::Persistent,
            OpenSchedule::Persistent,
            OpenSchedule::Persistent,
            OpenSchedule::Resident,
            OpenSchedule::Resident,
        ]
        .into_iter()
        .enumerate()
        {
            let frames = seal_tensor(&mut s, id as u64, &data, 256 << 10);
            let (pinned, ranges) = cases::in_pinned(&mut g, &frames);
            g.set_schedule(schedule);
            let before = dev.counters();
            g.open_tensor_pinned(NOW, &pinned, &ranges, dst).unwrap();
            let d = dev.counters().minus(before);
            assert_eq!(g.backend().download(dst).unwrap(), data);
            println!(
                "[fake-gpu] {schedule:?}, 4 frames: {} host waits, {} allocations, {} frees, \
                 {} launches, {} operations queued",
                d.waits(),
                d.allocs(),
                d.frees(),
                d.launches(),
                d.queued()
            );
            if schedule == OpenSchedule::Resident {
                assert_eq!(d.launches(), 1, "one resident kernel per tensor");
            } else {
                assert_eq!(d.launches(), 8, "two kernels per frame");
            }
            per.push((schedule, d));
        }
        // PerTensor: allocate + wait, zero + wait, one wait per stream, a synchronous copy.
        for (_, d) in &per[..2] {
            assert_eq!(d.waits(), 3 + streams);
            assert_eq!((d.allocs(), d.frees()), (1, 1));
        }
        // Persistent: the first tensor allocates the kept buffers (one wait); then one
        // wait per tensor and no allocation.
        assert_eq!(per[2].1.waits(), 2);
        for (_, d) in &per[3..5] {
            assert_eq!(d.waits(), 1);
            assert_eq!((d.allocs(), d.frees()), (0, 0));
        }
        // Resident: the first tensor allocates the flags (outside the pool: no wait),
        // zeroes them and tries one flag write (a wait each), and allocates each lane's
        // scratch buffers (two per lane, each completed before use) and zeroes its
        // scratch sets (a wait), then waits for the tensor; later tensors wait once and
        // allocate nothing.
        assert_eq!(per[5].1.waits(), 2 + 3 * RESIDENT_LANES as u64 + 1);
        assert_eq!(
            per[5].1.flag_writes(),
            5,
            "the trial write, one flag per frame"
        );
        assert_eq!(per[6].1.flag_writes(), 4, "one arrival flag per frame");
        assert_eq!(per[6].1.waits(), 1);
        assert_eq!((per[6].1.allocs(), per[6].1.frees()), (0, 0));
        // After the first tensor, Resident queues 4 copies, 4 flag writes, the launch,
        // the copy back and the event the host waits for: nothing else (no memset, no
        // event joining streams), also on a lane not used before.
        assert_eq!(per[6].1.queued(), 4 + 4 + 1 + 1 + 1);
        // Persistent queues per frame a copy and two launches, plus the zeroing, the
        // copy back and the events joining the streams.
        assert!(per[4].1.queued() > 3 * 4 + 2);
        g.backend().free(dst).unwrap();
    });
}

/// The kernel-only timings of `pqcc bench gpu` (device events around the kernels of all
/// frames, and around the resident kernel) run and check every verdict.
#[test]
fn kernel_timing_runs_and_checks_verdicts() {
    checked(|dev| {
        let Some(b) = dev.backend("kernel timing") else {
            return;
        };
        let mut rng = Rng(0x7117);
        let key = rng.key();
        let mut s = sealer(&key);
        let mut g = cases::gpu_opener(b, &key);
        let data = rng.bytes(3 << 20);
        let frames = seal_tensor(&mut s, 1, &data, 1 << 20);
        let (mut pinned, ranges) = cases::in_pinned(&mut g, &frames);
        let t = g.time_kernels(NOW, &pinned, &ranges, 3).unwrap();
        assert!(t > 0.0);
        let t = g.time_resident_kernel(NOW, &pinned, &ranges, 3).unwrap();
        assert!(t.is_some_and(|t| t > 0.0), "{t:?}");
        // A flipped tag byte: the timings refuse to report.
        let last = ranges[1].end - 1;
        pinned.as_mut_slice()[last] ^= 1;
        assert_eq!(
            g.time_kernels(NOW, &pinned, &ranges, 3).unwrap_err(),
            pqcc_gpu::GpuError::TagMismatch { frame: 1 }
        );
        assert_eq!(
            g.time_resident_kernel(NOW, &pinned, &ranges, 3)
                .unwrap_err(),
            pqcc_gpu::GpuError::TagMismatch { frame: 1 }
        );
        pinned.as_mut_slice()[last] ^= 1;
        // The resident schedule still opens tensors after the timings, and the timing
        // has no figure for a tensor its kernel does not take (9 frames).
        let dst = g.backend().alloc_zeroed(data.len()).unwrap();
        g.set_schedule(OpenSchedule::Resident);
        g.open_tensor_pinned(NOW, &pinned, &ranges, dst).unwrap();
        assert_eq!(g.backend().download(dst).unwrap(), data);
        let frames = seal_tensor(&mut s, 2, &data, 350 << 10);
        let (pinned, ranges) = cases::in_pinned(&mut g, &frames);
        assert_eq!(ranges.len(), 9);
        assert_eq!(g.time_resident_kernel(NOW, &pinned, &ranges, 3), Ok(None));
        g.backend().free(dst).unwrap();
    });
}

/// A resident fault test, in both kernel modes: an opener on `Resident` delivers a 4 KiB
/// × `n` warm-up tensor; `fault` then arms a fault in FakeCuda and the next tensor (the
/// same bytes) must fail; `check` looks at the error and the counters' change. Then the
/// destination must be zeroed and, nothing having been committed, the tensor must open.
/// The faults are disarmed (and the computed kernels restored) at the end.
fn resident_fault(what: &str, n: usize, fault: fn(&FakeGpu), check: fn(u32, &GpuError, Counters)) {
    with_faults_in_both_kernel_modes(what, |dev, mode, b| {
        let mut rng = Rng(0xf1a6);
        let key = rng.key();
        let mut s = sealer(&key);
        let mut g = cases::gpu_opener_with(b, &key, OpenSchedule::Resident);
        let data = rng.bytes(n * 4096);
        let warm = seal_tensor(&mut s, 1, &data, 4096);
        let warm: Vec<&[u8]> = warm.iter().map(Vec::as_slice).collect();
        let frames = seal_tensor(&mut s, 2, &data, 4096);
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let dst = g.backend().upload(&vec![0xa5; data.len()]).unwrap();
        g.open_tensor_into(NOW, &warm, dst).unwrap();
        let before = dev.counters();
        fault(dev);
        let e = g.open_tensor_into(NOW, &refs, dst).unwrap_err();
        check(mode, &e, dev.counters().minus(before));
        // Whatever the call left queued runs now: it must not write the destination
        // after the call zeroed it.
        dev.run_everything();
        assert!(g.backend().download(dst).unwrap().iter().all(|&x| x == 0));
        g.open_tensor_into(NOW, &refs, dst).unwrap();
        assert_eq!(g.backend().download(dst).unwrap(), data);
        g.backend().free(dst).unwrap();
        println!("[fake-gpu] {what} (kernel mode {mode}): {e}; buffer zeroed, then opened");
    });
}

/// Runs `body` with a fresh backend in each kernel mode (0 computed, 1 the kernel source
/// emulated), then disarms FakeCuda's faults and restores the computed kernels, also
/// after a panic. Skipped without libnvrtc.
fn with_faults_in_both_kernel_modes(what: &str, body: impl Fn(&FakeGpu, u32, CudaBackend)) {
    checked(|dev| {
        if kernel::nvrtc_available().is_err() {
            println!("[fake-gpu] {what}: skipped: no libnvrtc");
            return;
        }
        struct Reset<'a>(&'a FakeGpu);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.set_kernels(0);
                self.0.lose_flag_writes(0);
                self.0.fail_copy(u32::MAX);
            }
        }
        let _reset = Reset(dev);
        for mode in [0, 1] {
            dev.set_kernels(mode);
            let Some(b) = dev.backend(what) else {
                return;
            };
            body(dev, mode, b);
        }
    });
}

/// A frame whose arrival flag never comes (the write lost): the resident kernel gives up
/// after its timeout instead of waiting forever, the call fails with `NotArrived` naming
/// that frame, the destination is zeroed, nothing is committed, and the tensor then opens.
#[test]
fn a_lost_arrival_flag_times_out_and_fails_closed() {
    resident_fault(
        "lost flag",
        3,
        |dev| dev.lose_flag_writes(1),
        |mode, e, d| {
            assert_eq!(*e, GpuError::NotArrived { frame: 0 }, "kernel mode {mode}");
            assert_eq!(d.timed_out(), 1, "kernel mode {mode}");
        },
    );
}

/// A copy refused after the resident kernel was launched (frame 2 of 4): the host still
/// writes every arrival flag, so the kernel ends at once rather than at its timeout (no
/// frame timed out); the call reports the driver's error, the destination is zeroed,
/// nothing is committed, and the tensor then opens.
#[test]
fn a_copy_failing_after_the_resident_launch_releases_the_kernel() {
    resident_fault(
        "failed copy",
        4,
        |dev| dev.fail_copy(2),
        |mode, e, d| {
            assert!(matches!(e, GpuError::Driver(_)), "kernel mode {mode}: {e}");
            assert_eq!(
                d.launches(),
                1,
                "the kernel was launched before the refused copy"
            );
            assert_eq!(
                d.timed_out(),
                0,
                "kernel mode {mode}: the flags were not released"
            );
        },
    );
}

#[test]
fn batches_open_in_order_and_fail_closed() {
    each_schedule(cases::batch);
}

/// Under `Resident`, a batch keeps up to `DEFAULT_BATCH_DEPTH` tensors on the GPU: each
/// tensor's kernel is queued before the host waits for the ones before it, and the host
/// waits once per tensor. Under the other schedules, tensors go one at a time.
#[test]
fn resident_batches_keep_several_tensors_on_the_gpu() {
    checked(|dev| {
        let Some(b) = dev.backend("batch overlap") else {
            return;
        };
        let mut rng = Rng(0x0E1A);
        let key = rng.key();
        let mut s = sealer(&key);
        let mut g = cases::gpu_opener(b, &key);
        struct Computed<'a>(&'a FakeGpu);
        impl Drop for Computed<'_> {
            fn drop(&mut self) {
                self.0.set_kernels(0);
            }
        }
        let _computed = Computed(dev);
        // The last round runs the kernel source itself (smaller tensors: it is slow),
        // where each launch zeroes the scratch set of the one queued behind it.
        let emulate = kernel::nvrtc_available().is_ok();
        for (round, schedule) in [
            OpenSchedule::Resident,
            OpenSchedule::Resident,
            OpenSchedule::Persistent,
            OpenSchedule::Resident,
        ]
        .into_iter()
        .enumerate()
        {
            let len = if round == 3 {
                if !emulate {
                    break;
                }
                // A key set up by the emulated kernel too: a new opener.
                dev.set_kernels(1);
                g = cases::gpu_opener(dev.another(), &key);
                12_000
            } else {
                1 << 18
            };
            let data: Vec<Vec<u8>> = (0..6).map(|_| rng.bytes(len)).collect();
            g.set_schedule(schedule);
            let frames: Vec<Vec<Vec<u8>>> = data
                .iter()
                .enumerate()
                .map(|(i, d)| seal_tensor(&mut s, (10 * round + i) as u64, d, len / 8))
                .collect();
            let all: Vec<Vec<u8>> = frames.iter().flatten().cloned().collect();
            let (pinned, ranges) = cases::in_pinned(&mut g, &all);
            let per: Vec<&[std::ops::Range<usize>]> = ranges.chunks(8).collect();
            let dsts: Vec<_> = data
                .iter()
                .map(|d| g.backend().alloc_zeroed(d.len()).unwrap())
                .collect();
            let batch: Vec<_> = per.iter().copied().zip(dsts.iter().copied()).collect();
            let before = dev.counters();
            g.open_tensors_pinned(NOW, &pinned, &batch).unwrap();
            let d = dev.counters().minus(before);
            for (x, h) in data.iter().zip(&dsts) {
                assert_eq!(&g.backend().download(*h).unwrap(), x);
                g.backend().free(*h).unwrap();
            }
            println!(
                "[fake-gpu] {schedule:?}, batch of 6 tensors of 8 frames: {} host waits, {} \
                 kernels queued behind another, {} operations queued",
                d.waits(),
                d.tensors_behind(),
                d.queued()
            );
            // Tensor i's kernel is queued behind min(i, DEFAULT_BATCH_DEPTH - 1) others.
            let behind = (0..6)
                .map(|i| i.min(DEFAULT_BATCH_DEPTH - 1) as u64)
                .sum::<u64>();
            match (round, schedule) {
                (1, OpenSchedule::Resident) => {
                    assert_eq!(
                        d.tensors_behind(),
                        behind,
                        "each tensor's kernel behind those still on the GPU"
                    );
                    assert_eq!(d.waits(), 6, "one host wait per tensor");
                    // Per tensor: 8 copies; after each of the 4 streams' last frame
                    // only (grouped), an event record on the copy stream, then a wait
                    // for it and the flag write on the flag stream; the launch, the
                    // copy back and the event.
                    assert_eq!(d.queued(), 6 * (8 + 4 * 3 + 3));
                }
                (_, OpenSchedule::Persistent) => assert_eq!(d.tensors_behind(), 0),
                _ => assert_eq!(d.tensors_behind(), behind),
            }
        }
    });
}

/// A driver without stream memory operations: `Resident` fails with `Unavailable` at its
/// trial flag write, before any kernel waits, for single tensors and batches alike; the
/// destination is zeroed, nothing is committed, and the same tensor then opens under
/// another schedule.
#[test]
fn without_stream_memory_operations_resident_is_unavailable() {
    checked(|dev| {
        let Some(b) = dev.backend("no stream memops") else {
            return;
        };
        struct Restore<'a>(&'a FakeGpu);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                self.0.no_stream_memops(0);
            }
        }
        let _restore = Restore(dev);
        dev.no_stream_memops(1);
        let mut rng = Rng(0x5EA);
        let key = rng.key();
        let mut s = sealer(&key);
        let mut g = cases::gpu_opener_with(b, &key, OpenSchedule::Resident);
        let data = rng.bytes(100_000);
        let frames = seal_tensor(&mut s, 1, &data, 30_000);
        let (pinned, ranges) = cases::in_pinned(&mut g, &frames);
        let dst = g.backend().upload(&vec![0x77; data.len()]).unwrap();
        let before = dev.counters();
        let e = g
            .open_tensor_pinned(NOW, &pinned, &ranges, dst)
            .unwrap_err();
        assert!(
            matches!(&e, GpuError::Unavailable(why) if why.contains("cuStreamWriteValue32")),
            "{e}"
        );
        assert_eq!(
            dev.counters().minus(before).launches(),
            0,
            "no kernel launched"
        );
        assert_eq!(g.backend().download(dst).unwrap(), vec![0u8; data.len()]);
        let e = g
            .open_tensors_pinned(NOW, &pinned, &[(&ranges, dst)])
            .unwrap_err();
        assert_eq!(e.tensor, 0);
        assert!(matches!(e.error, GpuError::Unavailable(_)), "{e}");
        g.set_schedule(OpenSchedule::Persistent);
        g.open_tensor_pinned(NOW, &pinned, &ranges, dst).unwrap();
        assert_eq!(g.backend().download(dst).unwrap(), data);
        g.backend().free(dst).unwrap();
    });
}

/// Faults in the middle of a `Resident` batch, in both kernel modes: a copy refused while
/// tensor 2 is queued (its kernel already launched), and tensor 0's first flag lost (its
/// kernel times out while the tensors after it are on the GPU beside it), at every batch
/// depth. The tensors before the failed one are delivered; it, and those after it that
/// were already queued, are zeroed, even after everything left queued has run; the
/// others are untouched; the rest of the batch then opens.
#[test]
fn batch_faults_fail_closed() {
    with_faults_in_both_kernel_modes("batch faults", |dev, mode, b| {
        let mut rng = Rng(0xBADB);
        let key = rng.key();
        let mut s = sealer(&key);
        let mut g = cases::gpu_opener_with(b, &key, OpenSchedule::Resident);
        // 4 tensors of 2 frames: (fault, failed tensor, last tensor zeroed, error), at
        // each batch depth.
        type Fault = (fn(&FakeGpu), usize, usize, fn(&GpuError) -> bool);
        let faults = |depth: usize| -> [Fault; 2] {
            [
                // Tensors 0 and 1 copy 4 frames; tensor 2's first copy passes, its
                // second is refused after its kernel was launched: tensor 3 was never
                // queued.
                (
                    |d| d.fail_copy(5),
                    2,
                    2,
                    |e| matches!(e, GpuError::Driver(_)),
                ),
                // Tensor 0's kernel times out; the tensors after it up to the depth were
                // queued beside it.
                (
                    |d| d.lose_flag_writes(1),
                    0,
                    (depth - 1).min(3),
                    |e| *e == GpuError::NotArrived { frame: 0 },
                ),
            ]
        };
        let marker = vec![0x3Cu8; 6000];
        let rounds = (1..=RESIDENT_LANES).flat_map(|depth| faults(depth).map(|f| (depth, f)));
        for (round, (depth, (fault, failed, zeroed, is))) in rounds.enumerate() {
            g.set_batch_depth(depth);
            let data: Vec<Vec<u8>> = (0..4).map(|_| rng.bytes(6000)).collect();
            // A warm opener: the first use's trial flag write is behind it.
            let warm = seal_tensor(&mut s, 1000 + round as u64, &data[0], 3000);
            let warm: Vec<&[u8]> = warm.iter().map(Vec::as_slice).collect();
            let w = g.backend().alloc_zeroed(6000).unwrap();
            g.open_tensor_into(NOW, &warm, w).unwrap();
            g.backend().free(w).unwrap();
            let all: Vec<Vec<u8>> = data
                .iter()
                .enumerate()
                .flat_map(|(i, d)| seal_tensor(&mut s, (10 * round + i) as u64, d, 3000))
                .collect();
            let (pinned, ranges) = cases::in_pinned(&mut g, &all);
            let dsts: Vec<_> = (0..4)
                .map(|_| g.backend().upload(&marker).unwrap())
                .collect();
            let batch: Vec<_> = ranges.chunks(2).zip(dsts.iter().copied()).collect();
            fault(dev);
            let e = g.open_tensors_pinned(NOW, &pinned, &batch).unwrap_err();
            assert_eq!(e.tensor, failed, "mode {mode}: {e}");
            assert!(is(&e.error), "mode {mode}: {e}");
            dev.run_everything();
            for t in 0..4 {
                let got = g.backend().download(dsts[t]).unwrap();
                let (want, what) = if t < failed {
                    (data[t].clone(), "delivered")
                } else if t <= zeroed {
                    (vec![0u8; 6000], "zeroed")
                } else {
                    (marker.clone(), "untouched")
                };
                assert!(
                    got == want,
                    "mode {mode}, depth {depth}: tensor {t} not {what}"
                );
            }
            g.open_tensors_pinned(NOW, &pinned, &batch[failed..])
                .unwrap();
            for t in 0..4 {
                assert!(
                    g.backend().download(dsts[t]).unwrap() == data[t],
                    "tensor {t}"
                );
                g.backend().free(dsts[t]).unwrap();
            }
            println!(
                "[fake-gpu] batch fault (kernel mode {mode}, depth {depth}): {e}; zeroed, \
                 then opened"
            );
        }
    });
}

/// FakeCuda's confidential-computing mode and NVML answer for one test: restored (CC
/// off, NVML answering, cases without `allow_unverified_in_cc_mode`) when dropped, also
/// after a panic.
struct CcMode<'a>(&'a FakeGpu);

impl<'a> CcMode<'a> {
    fn set(dev: &'a FakeGpu, cc: u32, nvml: u32) -> Self {
        dev.set_cc(cc);
        dev.set_nvml(nvml);
        Self(dev)
    }
}

impl Drop for CcMode<'_> {
    fn drop(&mut self) {
        self.0.set_cc(0);
        self.0.set_nvml(0);
        cases::UNVERIFIED_IN_CC.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// FakeCuda's CC mode, its NVML fault, and a check of the state the opener reads.
type CcSetting = (u32, u32, fn(&CcState) -> bool);

/// The fake's (CC mode, NVML fault) settings of the CC tests, with what the opener must
/// make of them: off, on, on with developer tools, and three unknown states (NVML does not
/// initialise; its CC query fails; it answers an undefined `ccFeature`).
fn cc_settings() -> [CcSetting; 6] {
    [
        (0, 0, |s| *s == CcState::Off),
        (1, 0, |s| {
            *s == CcState::On {
                dev_tools: false,
                environment: 2,
            }
        }),
        (2, 0, |s| {
            *s == CcState::On {
                dev_tools: true,
                environment: 2,
            }
        }),
        (
            0,
            1,
            |s| matches!(s, CcState::Unknown(w) if w.contains("nvmlInit_v2") && w.contains("(9)")),
        ),
        (
            1,
            2,
            |s| matches!(s, CcState::Unknown(w) if w.contains("NVML_ERROR_NOT_SUPPORTED")),
        ),
        (
            1,
            3,
            |s| matches!(s, CcState::Unknown(w) if w.contains("ccFeature 7")),
        ),
    ]
}

/// The opener reads the CC state from NVML: on FakeCuda from the fake itself, and through
/// `CcState::from_nvml_library` from the fake loaded as NVML by path (the code path of
/// the real `libnvidia-ml.so.1`). Every NVML initialisation is balanced. No NVML library
/// at all is an unknown state. Which schedules each state allows.
#[test]
fn the_cc_state_comes_from_nvml() {
    checked(|dev| {
        let Some(_) = dev.backend("cc state") else {
            return;
        };
        for (cc, nvml, expect) in cc_settings() {
            let _mode = CcMode::set(dev, cc, nvml);
            let b = dev.another();
            let state = b.cc_state().clone();
            assert!(expect(&state), "cc {cc}, nvml {nvml}: {state:?}");
            let by_path = CcState::from_nvml_library(fake_path());
            assert_eq!(
                by_path, state,
                "cc {cc}, nvml {nvml}: loaded as NVML by path"
            );
            // Balanced: a further shutdown finds NVML uninitialised.
            assert_eq!(dev.nvml_shutdown(), 1, "NVML_ERROR_UNINITIALIZED");
            for schedule in OpenSchedule::ALL {
                let allowed = state.allows(schedule, false);
                let needs = schedule.needs();
                assert!(!needs.gpu_access_to_host_memory && !needs.host_memory_registration);
                match (&state, schedule) {
                    (CcState::Off, _) | (_, OpenSchedule::PerTensor | OpenSchedule::Persistent) => {
                        assert_eq!(allowed, Ok(()), "{state:?} {schedule:?}");
                    }
                    (_, OpenSchedule::Resident) => {
                        let Err(GpuError::Unavailable(why)) = allowed else {
                            panic!("{state:?}: Resident allowed");
                        };
                        assert!(why.contains("cuStreamWriteValue32"), "{why}");
                        assert_eq!(state.allows(schedule, true), Ok(()));
                    }
                }
            }
            println!("[fake-gpu] cc {cc}, nvml fault {nvml}: {state:?}");
        }
        let none = CcState::from_nvml_library("/nonexistent/libnvidia-ml.so.1");
        assert!(
            matches!(&none, CcState::Unknown(w) if w.contains("not loaded")),
            "{none:?}"
        );
        println!(
            "[fake-gpu] this machine's own NVML: {:?}",
            CcState::detect()
        );
    });
}

/// Every `OpenSchedule` with FakeCuda in CC mode (on, on with developer tools, and on
/// while NVML cannot tell): `PerTensor` and `Persistent` open every case correctly,
/// every copy between host memory and VRAM going through the bounce buffers, the key
/// upload too; `Resident` is refused before anything runs (no launch, no flag write),
/// single tensors, batches and its kernel timing alike, the destination zeroed, nothing
/// committed. Tried anyway (`allow_unverified_in_cc_mode`), `Resident` opens them too
/// on the fake. With CC off nothing is bounced.
#[test]
fn every_schedule_in_cc_mode_opens_or_is_refused() {
    checked(|dev| {
        if kernel::nvrtc_available().is_err() {
            println!("[fake-gpu] cc schedules: skipped: no libnvrtc");
            return;
        }
        let shapes: &[(usize, usize)] = &[
            (0, 1),
            (17, 16),
            (65_539, 65_536),
            (100_000, 1000),
            (7_003, 1000),
            ((1 << 20) + 5, 1 << 18),
            (9 << 20, 4 << 20),
        ];
        // Every case with CC on; the same rule (and the fake's same data path) for the
        // other two states, so fewer cases there (each backend compiles the kernel).
        for (cc, nvml, what) in [(1, 0, "on"), (2, 0, "devtools"), (1, 2, "unknown")] {
            let _mode = CcMode::set(dev, cc, nvml);
            let before = dev.counters();
            let all = what == "on";
            if all {
                cases::wycheproof(dev);
                cases::rekey(dev);
            }
            for schedule in SCHEDULES {
                if schedule == OpenSchedule::Resident {
                    resident_refused_in_cc(dev, what);
                    continue;
                }
                cases::pinned(dev, schedule);
                if all {
                    cases::cross_check_shapes(dev, schedule, shapes);
                    cases::refused_midway(dev, schedule);
                    cases::batch(dev, schedule);
                }
            }
            let d = dev.counters().minus(before);
            assert!(d.bounced() > 0 && d.bounced_bytes() > 6 << 20, "{what}");
            if all {
                assert_eq!(cases::schedules_here(dev), SCHEDULES[..2].to_vec());
            }
            println!(
                "[fake-gpu] CC {what}: PerTensor and Persistent opened every case, Resident \
                 refused; {} copies ({} MiB) through the bounce buffers",
                d.bounced(),
                d.bounced_bytes() >> 20
            );
        }
        // Tried anyway: the fake in CC mode runs the resident kernel like any other.
        let _mode = CcMode::set(dev, 1, 0);
        cases::UNVERIFIED_IN_CC.store(true, std::sync::atomic::Ordering::Relaxed);
        cases::cross_check_shapes(dev, OpenSchedule::Resident, shapes);
        cases::batch(dev, OpenSchedule::Resident);
        drop(_mode);
        // CC off: nothing goes through bounce buffers.
        let before = dev.counters();
        cases::pinned(dev, OpenSchedule::Persistent);
        assert_eq!(dev.counters().minus(before).bounced(), 0);
    });
}

/// `Resident` under a CC state that does not allow it (`what`): refused before anything
/// is queued, for a tensor from pinned memory, one from pageable memory, a batch and the
/// kernel timing; the destinations named zeroed, the others untouched, nothing
/// committed (the frames then open under `Persistent`).
fn resident_refused_in_cc(dev: &FakeGpu, what: &str) {
    let Some(b) = dev.backend("cc resident") else {
        return;
    };
    let mut rng = Rng(0xCC00);
    let key = rng.key();
    let mut s = sealer(&key);
    let mut g = cases::gpu_opener_with(b, &key, OpenSchedule::Resident);
    assert!(!g.cc_state().is_off(), "{what}");
    assert!(g.schedule_allowed(OpenSchedule::Persistent).is_ok());
    let refused = |e: &GpuError| {
        matches!(e, GpuError::Unavailable(why)
            if why.contains("confidential-computing") && why.contains("cuStreamWriteValue32"))
    };
    let data = rng.bytes(100_000);
    let frames = seal_tensor(&mut s, 1, &data, 30_000);
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let (pinned, ranges) = cases::in_pinned(&mut g, &frames);
    let marker = vec![0x77u8; data.len()];
    let dst = g.backend().upload(&marker).unwrap();
    let other = g.backend().upload(&marker).unwrap();
    let before = dev.counters();
    let e = g
        .open_tensor_pinned(NOW, &pinned, &ranges, dst)
        .unwrap_err();
    assert!(refused(&e), "{what}: {e}");
    assert_eq!(g.backend().download(dst).unwrap(), vec![0u8; data.len()]);
    let e = g.open_tensor(NOW, &refs).unwrap_err();
    assert!(refused(&e), "{what}: {e}");
    g.backend().free(dst).unwrap();
    let dst = g.backend().upload(&marker).unwrap();
    let e = g
        .open_tensors_pinned(NOW, &pinned, &[(&ranges, dst), (&ranges, other)])
        .unwrap_err();
    assert_eq!(e.tensor, 0, "{what}");
    assert!(refused(&e.error), "{what}: {e}");
    assert_eq!(g.backend().download(dst).unwrap(), vec![0u8; data.len()]);
    assert_eq!(g.backend().download(other).unwrap(), marker, "untouched");
    let e = g
        .time_resident_kernel(NOW, &pinned, &ranges, 1)
        .unwrap_err();
    assert!(refused(&e), "{what}: {e}");
    let d = dev.counters().minus(before);
    assert_eq!((d.launches(), d.flag_writes()), (0, 0), "{what}");
    // Nothing was committed.
    g.set_schedule(OpenSchedule::Persistent);
    g.open_tensor_pinned(NOW, &pinned, &ranges, dst).unwrap();
    assert_eq!(g.backend().download(dst).unwrap(), data);
    g.backend().free(dst).unwrap();
    g.backend().free(other).unwrap();
    println!("[fake-gpu] CC {what}: Resident refused ({e}); nothing queued or committed");
}

/// A tampered frame (ciphertext or tag), and a wrong key, fail closed in CC mode too:
/// `TagMismatch` naming the frame, the destination zeroed, nothing committed; under
/// every schedule CC mode allows, and under `Resident` tried anyway, also in the emulated
/// kernels (the kernel source itself); and with the state unknown.
#[test]
fn tampered_frames_fail_closed_in_cc_mode() {
    checked(|dev| {
        if kernel::nvrtc_available().is_err() {
            println!("[fake-gpu] cc tamper: skipped: no libnvrtc");
            return;
        }
        struct Computed<'a>(&'a FakeGpu);
        impl Drop for Computed<'_> {
            fn drop(&mut self) {
                self.0.set_kernels(0);
            }
        }
        let _computed = Computed(dev);
        // CC on: the schedules it allows, then `Resident` tried anyway, in both kernel
        // modes.
        let mode = CcMode::set(dev, 1, 0);
        for schedule in [OpenSchedule::PerTensor, OpenSchedule::Persistent] {
            cases::tamper(dev, schedule);
        }
        cases::UNVERIFIED_IN_CC.store(true, std::sync::atomic::Ordering::Relaxed);
        cases::tamper(dev, OpenSchedule::Resident);
        dev.set_kernels(1);
        for schedule in [OpenSchedule::Persistent, OpenSchedule::Resident] {
            cases::tamper_sized(dev, schedule, 8192);
        }
        dev.set_kernels(0);
        drop(mode);
        // The state unknown (NVML does not initialise): the default schedule.
        let _mode = CcMode::set(dev, 1, 1);
        cases::tamper(dev, OpenSchedule::default());
    });
}
