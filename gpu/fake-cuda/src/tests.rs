//! FakeCuda's own checks of `gcm_open_tensor` and `cuStreamWriteValue32`, in both kernel
//! modes, through the driver entry points (pqcc-gpu's tests drive the rest).

use super::*;

/// The fake's state is one per process: the tests take turns, each from a fresh state.
static TURN: Mutex<()> = Mutex::new(());

fn fresh(emulate: bool) -> MutexGuard<'static, ()> {
    let g = TURN.lock().unwrap_or_else(|e| e.into_inner());
    *lock() = Some(State::default());
    assert_eq!(cuInit(0), SUCCESS);
    assert_eq!(pqcc_fake_cuda_set_kernels(u32::from(emulate)), SUCCESS);
    g
}

fn last_error() -> (CuResult, String) {
    lock()
        .as_ref()
        .and_then(|s| s.sticky.clone())
        .unwrap_or((SUCCESS, String::new()))
}

fn alloc(len: usize) -> u64 {
    let mut p = 0u64;
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { cuMemAlloc_v2(&raw mut p, len) }, SUCCESS);
    p
}

fn upload(dst: u64, b: &[u8]) {
    assert_eq!(cuMemcpyHtoD_v2(dst, b.as_ptr().cast(), b.len()), SUCCESS);
}

fn download(src: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    assert_eq!(cuMemcpyDtoH_v2(v.as_mut_ptr().cast(), src, len), SUCCESS);
    v
}

fn words(src: u64, n: usize) -> Vec<u32> {
    download(src, 4 * n)
        .chunks_exact(4)
        .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn stream() -> *mut c_void {
    let mut s = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { cuStreamCreate(&raw mut s, 0) }, SUCCESS);
    s
}

fn event() -> *mut c_void {
    let mut e = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { cuEventCreate(&raw mut e, 0) }, SUCCESS);
    e
}

fn function(name: &CStr) -> *mut c_void {
    let ptx = c".entry gcm_setup( .entry gcm_open_main( .entry gcm_open_final( \
                .entry gcm_open_tensor(";
    let (mut m, mut f) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: valid out-pointers, NUL-terminated strings.
    unsafe {
        assert_eq!(cuModuleLoadData(&raw mut m, ptx.as_ptr().cast()), SUCCESS);
        assert_eq!(cuModuleGetFunction(&raw mut f, m, name.as_ptr()), SUCCESS);
    }
    f
}

/// Launches `f` with the given argument bytes (each argument's value).
fn launch(f: *mut c_void, grid: u32, block: u32, st: *mut c_void, args: &[&[u8]]) -> CuResult {
    let mut ptrs: Vec<*mut c_void> = args.iter().map(|a| a.as_ptr().cast_mut().cast()).collect();
    // SAFETY: one pointer per kernel argument, each to the argument's bytes.
    unsafe {
        cuLaunchKernel(
            f,
            grid,
            1,
            1,
            block,
            1,
            1,
            0,
            st,
            ptrs.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    }
}

/// A key context made by `gcm_setup` (in the current mode) from `key`.
fn setup(key: &[u8; 32]) -> u64 {
    let raw = alloc(32);
    let ctx = alloc(4 * CTX_WORDS);
    upload(raw, key);
    let (r, c) = (raw.to_ne_bytes(), ctx.to_ne_bytes());
    let f = function(c"gcm_setup");
    assert_eq!(
        launch(f, 1, THREADS as u32, std::ptr::null_mut(), &[&r, &c]),
        SUCCESS
    );
    ctx
}

/// One sealed frame: its ciphertext and `frame_params` (seg 1).
struct Frame {
    ct: Vec<u8>,
    plain: Vec<u8>,
    params: [u8; PARAMS_LEN],
    n_parts: u32,
}

fn frame(key: &[u8; 32], i: u8, len: usize, aad_len: usize, index: u32, tamper: bool) -> Frame {
    let plain: Vec<u8> = (0..len).map(|k| (k as u8).wrapping_mul(31) ^ i).collect();
    let aad: Vec<u8> = (0..aad_len).map(|k| k as u8 ^ 0x5A).collect();
    let iv = [i; 12];
    let mut ct = plain.clone();
    let tag = RustCryptoAesGcm::new(key)
        .seal_in_place(&iv, &aad, &mut ct)
        .unwrap();
    if tamper {
        ct[0] ^= 1;
    }
    let n = len.div_ceil(16) + aad_len.div_ceil(16) + 1;
    let n_parts = n.div_ceil(THREADS as usize);
    let w = |v: usize| (v as u32).to_le_bytes();
    let mut p = [0u8; PARAMS_LEN];
    p[..12].copy_from_slice(&iv);
    for (k, v) in [
        len,
        aad_len,
        n,
        n_parts * 256 - n,
        1,
        8,
        n_parts,
        index as usize,
    ]
    .into_iter()
    .enumerate()
    {
        p[12 + 4 * k..16 + 4 * k].copy_from_slice(&w(v));
    }
    p[44..60].copy_from_slice(&tag);
    p[60..60 + aad_len].copy_from_slice(&aad);
    Frame {
        ct,
        plain,
        params: p,
        n_parts: n_parts as u32,
    }
}

fn tensor_params(frames: &[Frame], data: &[u64], generation: u32) -> Vec<u8> {
    let mut b = vec![0u8; TENSOR_PARAMS_LEN];
    let mut base = 0u32;
    for (i, (f, d)) in frames.iter().zip(data).enumerate() {
        b[8 * i..8 * i + 8].copy_from_slice(&d.to_le_bytes());
        base += f.n_parts;
        b[64 + 4 * (i + 1)..68 + 4 * (i + 1)].copy_from_slice(&base.to_le_bytes());
        let at = TENSOR_FRAMES_AT + PARAMS_LEN * i;
        b[at..at + PARAMS_LEN].copy_from_slice(&f.params);
    }
    b[100..104].copy_from_slice(&(frames.len() as u32).to_le_bytes());
    b[104..108].copy_from_slice(&generation.to_le_bytes());
    b
}

/// The kernel's buffers and streams for one tensor.
struct Tensor {
    ctx: u64,
    data: Vec<u64>,
    arrived: u64,
    /// The launch's set (SET_WORDS): counters, then status words.
    work: u64,
    /// The set the kernel zeroes for the next launch.
    next: u64,
    partials: u64,
    /// `work + 4 * WORK_WORDS`.
    status: u64,
    s0: *mut c_void,
    copy: [*mut c_void; 2],
    tp: Vec<u8>,
    total: u32,
}

const GEN: u32 = 7;

fn tensor(key: &[u8; 32], frames: &[Frame]) -> Tensor {
    let ctx = setup(key);
    let data: Vec<u64> = frames.iter().map(|f| alloc(f.ct.len().max(1))).collect();
    let tp = tensor_params(frames, &data, GEN);
    let total = frames.iter().map(|f| f.n_parts).sum();
    let arrived = alloc(4 * RESIDENT_FRAMES);
    upload(arrived, &[0u8; 4 * RESIDENT_FRAMES]);
    let work = alloc(4 * SET_WORDS);
    let next = alloc(4 * SET_WORDS);
    // What an earlier launch left: the kernel must zero it.
    upload(next, &[0xA5u8; 4 * SET_WORDS]);
    Tensor {
        ctx,
        data,
        arrived,
        work,
        next,
        partials: alloc(16 * total as usize),
        status: work + 4 * WORK_WORDS as u64,
        s0: stream(),
        copy: [stream(), stream()],
        tp,
        total,
    }
}

impl Tensor {
    /// Queues on s0 the zeroing of the launch's set (counters and status words), then
    /// the kernel over `grid` blocks.
    fn launch(&self, grid: u32) -> CuResult {
        assert_eq!(
            cuMemsetD8Async(self.work, 0, 4 * SET_WORDS, self.s0),
            SUCCESS
        );
        self.launch_only(grid)
    }

    /// Queues the kernel over `grid` blocks on s0.
    fn launch_only(&self, grid: u32) -> CuResult {
        let f = function(c"gcm_open_tensor");
        let a = |p: u64| p.to_ne_bytes();
        let (c, ar, w, x, p) = (
            a(self.ctx),
            a(self.arrived),
            a(self.work),
            a(self.next),
            a(self.partials),
        );
        launch(f, grid, 256, self.s0, &[&c, &self.tp, &ar, &w, &x, &p])
    }

    /// Queues frame `i`'s copy and then its flag on copy stream `i % 2`.
    fn deliver(&self, frames: &[Frame], i: usize) {
        let s = self.copy[i % 2];
        let ct = &frames[i].ct;
        if !ct.is_empty() {
            assert_eq!(
                cuMemcpyHtoDAsync_v2(self.data[i], ct.as_ptr().cast(), ct.len(), s),
                SUCCESS
            );
        }
        assert_eq!(
            cuStreamWriteValue32_v2(s, self.arrived + 4 * i as u64, GEN, 0),
            SUCCESS
        );
    }

    /// s0 waits for the copy streams, then the host for s0.
    fn finish(&self) -> CuResult {
        for s in self.copy {
            let e = event();
            assert_eq!(cuEventRecord(e, s), SUCCESS);
            assert_eq!(cuStreamWaitEvent(self.s0, e, 0), SUCCESS);
        }
        cuStreamSynchronize(self.s0)
    }
}

fn both_modes(f: impl Fn(bool)) {
    for emulate in [false, true] {
        f(emulate);
    }
}

#[test]
fn tensor_opens_frames_delivered_by_other_streams() {
    both_modes(|emulate| {
        let _t = fresh(emulate);
        let key = [0x42u8; 32];
        let frames = [
            frame(&key, 1, 100, 13, 2, false),
            frame(&key, 2, 5000, 269, 0, true),
            frame(&key, 3, 0, 16, 1, false),
            frame(&key, 4, 70_000, 0, 3, false),
        ];
        let t = tensor(&key, &frames);
        assert_eq!(t.launch(t.total), SUCCESS);
        for i in 0..frames.len() {
            t.deliver(&frames, i);
        }
        assert_eq!(t.finish(), SUCCESS, "{emulate}: {:?}", last_error());
        let st = words(t.status, 4);
        // Status slots by frame_params.index: frame 1 (tampered) is index 0.
        assert_eq!(st, [2, 1, 1, 1], "emulated: {emulate}");
        assert_eq!(download(t.data[0], 100), frames[0].plain);
        assert_eq!(download(t.data[1], 5000), vec![0u8; 5000]);
        assert_eq!(download(t.data[3], 70_000), frames[3].plain);
        let w = words(t.work, WORK_WORDS);
        assert_eq!(
            w[0],
            t.total + t.total,
            "every block fetched once past the end"
        );
        assert_eq!(&w[1..5], &[1, 2, 1, 18]);
        assert!(w[9..WORK_WORDS].iter().all(|&x| x == 0));
        assert_eq!(
            words(t.next, SET_WORDS),
            vec![0; SET_WORDS],
            "next set zeroed"
        );
        let c = lock().as_ref().unwrap().counters[C_WRITE_VALUE];
        assert_eq!(c, 4);
        assert_eq!(last_error().0, SUCCESS);
    });
}

#[test]
fn a_frame_that_never_arrives_times_out() {
    both_modes(|emulate| {
        let _t = fresh(emulate);
        let key = [7u8; 32];
        let frames = [
            frame(&key, 1, 300, 5, 0, false),
            frame(&key, 2, 40, 5, 1, false),
            frame(&key, 3, 50, 5, 2, false),
        ];
        let t = tensor(&key, &frames);
        assert_eq!(t.launch(1), SUCCESS);
        t.deliver(&frames, 0);
        // Frame 1's bytes arrive but its flag is never written; frame 2's flag is
        // written on a stream that first waits for s0 to finish the kernel: deadlock on
        // a GPU, resolved by the kernel's timeout.
        let s = t.copy[1];
        let ct = &frames[1].ct;
        assert_eq!(
            cuMemcpyHtoDAsync_v2(t.data[1], ct.as_ptr().cast(), ct.len(), s),
            SUCCESS
        );
        let after_kernel = event();
        assert_eq!(cuEventRecord(after_kernel, t.s0), SUCCESS);
        let late = stream();
        assert_eq!(cuStreamWaitEvent(late, after_kernel, 0), SUCCESS);
        assert_eq!(
            cuStreamWriteValue32_v2(late, t.arrived + 8, GEN, 0),
            SUCCESS
        );
        assert_eq!(t.finish(), SUCCESS, "{emulate}: {:?}", last_error());
        assert_eq!(words(t.status, 3), [1, 3, 3], "emulated: {emulate}");
        assert_eq!(download(t.data[0], 300), frames[0].plain);
        assert_eq!(download(t.data[1], 40), vec![0u8; 40]);
        let w = words(t.work, WORK_WORDS);
        assert_eq!(&w[9..12], &[0, 1, 1]);
        // The late flag is written after the kernel.
        assert_eq!(cuStreamSynchronize(late), SUCCESS);
        assert_eq!(words(t.arrived, 3), [GEN, 0, GEN]);
    });
}

#[test]
fn others_first_does_not_start_the_resident_kernel_early() {
    both_modes(|emulate| {
        let _t = fresh(emulate);
        assert_eq!(pqcc_fake_cuda_set_order(1), SUCCESS);
        let key = [9u8; 32];
        let frames = [
            frame(&key, 1, 64, 5, 0, false),
            frame(&key, 2, 64, 5, 1, false),
        ];
        let t = tensor(&key, &frames);
        assert_eq!(t.launch(2), SUCCESS);
        t.deliver(&frames, 0);
        // The host waits for copy stream 0 before queuing frame 1 (as a staging slot's
        // reuse does): the kernel must still be waiting, not timed out.
        let e = event();
        assert_eq!(cuEventRecord(e, t.copy[0]), SUCCESS);
        assert_eq!(cuEventSynchronize(e), SUCCESS);
        t.deliver(&frames, 1);
        assert_eq!(t.finish(), SUCCESS);
        assert_eq!(words(t.status, 2), [1, 1], "emulated: {emulate}");
        assert_eq!(pqcc_fake_cuda_set_order(0), SUCCESS);
    });
}

#[test]
fn write_value_checks() {
    let _t = fresh(false);
    let s = stream();
    let p = alloc(16);
    assert_eq!(cuStreamWriteValue32_v2(s, p, 1, 1), INVALID_VALUE);
    assert_eq!(cuStreamWriteValue32(s, p + 2, 1, 0), INVALID_VALUE);
    assert_eq!(cuStreamWriteValue32(s, p + 12, 0xABCD, 0), SUCCESS);
    // Nothing runs before the host waits.
    assert_ne!(words(p + 12, 1), [0xABCD]);
    assert_eq!(cuStreamSynchronize(s), SUCCESS);
    assert_eq!(words(p + 12, 1), [0xABCD]);
    // The legacy default stream runs it at once.
    assert_eq!(
        cuStreamWriteValue32_v2(std::ptr::null_mut(), p, 5, 0),
        SUCCESS
    );
    assert_eq!(words(p, 1), [5]);
    assert_eq!(cuStreamWriteValue32(s, p + 14, 1, 0), INVALID_VALUE);
    assert_eq!(cuStreamWriteValue32(s, p + 16, 1, 0), SUCCESS);
    assert_eq!(cuStreamSynchronize(s), ILLEGAL_ADDRESS);
    assert!(
        last_error().1.contains("cuStreamWriteValue32"),
        "{:?}",
        last_error()
    );
}

#[test]
fn tensor_launch_checks() {
    let key = [3u8; 32];
    let expect = |emulate: bool, change: &dyn Fn(&mut Tensor) -> u32, why: &str| {
        let _t = fresh(emulate);
        let frames = [
            frame(&key, 1, 5000, 5, 0, false),
            frame(&key, 2, 64, 5, 1, false),
        ];
        let mut t = tensor(&key, &frames);
        let grid = change(&mut t);
        assert_eq!(t.launch(grid), SUCCESS);
        for i in 0..2 {
            t.deliver(&frames, i);
        }
        assert_eq!(t.finish(), LAUNCH_FAILED, "{why}");
        let e = last_error().1;
        assert!(e.contains(why), "{e}");
    };
    for emulate in [false, true] {
        expect(emulate, &|t| t.total + 1, "Tensor launched with");
        expect(emulate, &|_| 0, "Tensor launched with");
        expect(
            emulate,
            &|t| {
                t.tp[64 + 8] += 1;
                t.total
            },
            "part_base[2]",
        );
        expect(
            emulate,
            &|t| {
                t.tp[100] = 9;
                t.total
            },
            "n_frames is 9",
        );
        expect(
            emulate,
            &|t| {
                let at = TENSOR_FRAMES_AT + PARAMS_LEN + 40;
                t.tp[at] = 0;
                t.total
            },
            "share status index 0",
        );
        expect(
            emulate,
            &|t| {
                let at = TENSOR_FRAMES_AT + PARAMS_LEN + 12;
                t.tp[at] = 65;
                t.total
            },
            "tensor_params.f[1]: frame_params",
        );
        expect(
            emulate,
            &|t| {
                t.data[1] = t.data[0] + 4990;
                t.tp[8..16].copy_from_slice(&t.data[1].to_le_bytes());
                t.total
            },
            "data[1]",
        );
        expect(
            emulate,
            &|t| {
                t.tp[TENSOR_FRAMES_AT + PARAMS_LEN + 40] = 8;
                t.total
            },
            "status index 8 past the set",
        );
        expect(
            emulate,
            &|t| {
                t.next = t.work;
                t.total
            },
            "overlap",
        );
    }
    // A counter, then a status word, left from an earlier launch.
    for (word, why) in [(2, "work[2] is 0x1"), (WORK_WORDS, "work[17] is 0x1")] {
        let _t = fresh(false);
        let frames = [frame(&key, 1, 64, 5, 0, false)];
        let t = tensor(&key, &frames);
        assert_eq!(cuMemsetD8Async(t.work, 0, 4 * SET_WORDS, t.s0), SUCCESS);
        let at = t.work + 4 * word as u64;
        assert_eq!(cuMemsetD8Async(at, 1, 1, t.s0), SUCCESS);
        assert_eq!(t.launch_only(1), SUCCESS);
        t.deliver(&frames, 0);
        assert_eq!(t.finish(), LAUNCH_FAILED);
        assert!(last_error().1.contains(why), "{:?}", last_error());
    }
}

#[test]
fn freeing_what_the_waiting_kernel_uses_is_a_fault() {
    both_modes(|emulate| {
        let _t = fresh(emulate);
        let key = [5u8; 32];
        let frames = [frame(&key, 1, 64, 5, 0, false)];
        let t = tensor(&key, &frames);
        assert_eq!(t.launch(1), SUCCESS);
        assert_eq!(cuMemFreeAsync(t.data[0], t.copy[0]), SUCCESS);
        t.deliver(&frames, 0);
        assert_eq!(t.finish(), ILLEGAL_ADDRESS);
        let e = last_error().1;
        assert!(
            e.contains("while the running gcm_open_tensor uses it"),
            "{e}"
        );
    });
}

fn pinned(len: usize) -> u64 {
    let mut p = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { cuMemHostAlloc(&raw mut p, len, 0) }, SUCCESS);
    p as u64
}

fn counter(i: usize) -> u64 {
    lock().as_ref().map_or(0, |s| s.counters[i])
}

/// CC off and on (and on with developer tools): host memory registration, the device
/// address of host memory, the GPU writing a flag into host memory, a kernel given a host
/// address, and which copies go through the bounce buffers.
#[test]
fn cc_mode_refuses_what_the_gpu_cannot_reach() {
    for cc in [0, 1, 2] {
        let _t = fresh(false);
        assert_eq!(pqcc_fake_cuda_set_cc(cc), SUCCESS);
        let on = cc != 0;
        let s = stream();
        let d = alloc(256);
        let h = pinned(256);
        // cuMemHostRegister: refused in CC mode, as by the driver.
        let mut mine = vec![7u8; 4096];
        let p = mine.as_mut_ptr().cast::<c_void>();
        if on {
            assert_eq!(cuMemHostRegister_v2(p, mine.len(), 0), NOT_SUPPORTED);
            assert_eq!(cuMemHostRegister(p, mine.len(), 2), NOT_SUPPORTED);
            assert_eq!(cuMemHostUnregister(p), HOST_MEMORY_NOT_REGISTERED);
        } else {
            assert_eq!(cuMemHostRegister_v2(p, mine.len(), 0), SUCCESS);
            assert_eq!(
                cuMemHostRegister_v2(p.wrapping_add(100), 16, 0),
                HOST_MEMORY_ALREADY_REGISTERED
            );
            // A copy from registered memory reads it when it runs, as from pinned memory.
            assert_eq!(cuMemcpyHtoDAsync_v2(d, p, 64, s), SUCCESS);
            mine[0] = 9;
            assert_eq!(cuStreamSynchronize(s), SUCCESS);
            assert_eq!(download(d, 2), [9, 7]);
            assert_eq!(cuMemFreeHost(p), INVALID_VALUE, "not the driver's to free");
            assert_eq!(cuMemHostUnregister(p), SUCCESS);
            assert_eq!(cuMemHostUnregister(p), HOST_MEMORY_NOT_REGISTERED);
        }
        // The device address of page-locked memory: none in CC mode.
        let mut dp = 0u64;
        let r = cuMemHostGetDevicePointer_v2(&raw mut dp, h as *mut c_void, 0);
        if on {
            assert_eq!(r, NOT_SUPPORTED);
        } else {
            assert_eq!((r, dp), (SUCCESS, h));
        }
        let r = cuMemHostGetDevicePointer(&raw mut dp, d as *mut c_void, 0);
        assert_eq!(r, if on { NOT_SUPPORTED } else { INVALID_VALUE });
        // The GPU writing a flag (or a verdict) into host memory: refused in CC mode.
        let r = cuStreamWriteValue32_v2(s, h + 8, 0xF1A6, 0);
        if on {
            assert_eq!(r, NOT_SUPPORTED);
        } else {
            assert_eq!(r, SUCCESS);
            assert_eq!(cuStreamSynchronize(s), SUCCESS);
            // SAFETY: `h` is a live pinned allocation of 256 bytes.
            let w = unsafe { std::ptr::read_unaligned((h + 8) as *const u32) };
            assert_eq!(w, 0xF1A6);
        }
        // To VRAM, flags work either way.
        assert_eq!(cuStreamWriteValue32_v2(s, d + 8, 5, 0), SUCCESS);
        assert_eq!(cuStreamSynchronize(s), SUCCESS);
        assert_eq!(words(d + 8, 1), [5]);
        // Copies between host memory and VRAM: through the bounce buffers in CC mode.
        let (n0, b0) = (counter(C_BOUNCED), counter(C_BOUNCED_BYTES));
        assert_eq!(cuMemcpyHtoDAsync_v2(d, h as *const c_void, 64, s), SUCCESS);
        upload(d + 64, &[1u8; 16]);
        assert_eq!(cuMemcpyDtoHAsync_v2(h as *mut c_void, d, 32, s), SUCCESS);
        assert_eq!(cuMemcpyDtoDAsync_v2(d + 128, d, 64, s), SUCCESS);
        assert_eq!(cuStreamSynchronize(s), SUCCESS);
        assert_eq!(download(d, 8).len(), 8);
        let bounced = (counter(C_BOUNCED) - n0, counter(C_BOUNCED_BYTES) - b0);
        assert_eq!(bounced, if on { (4, 64 + 16 + 32 + 8) } else { (0, 0) });
        assert_eq!(cuMemFreeHost(h as *mut c_void), SUCCESS);
        assert_eq!(last_error().0, SUCCESS);
        // A kernel given a host address fails its launch; CC mode says why.
        let h = pinned(4 * CTX_WORDS);
        let (r, c) = (h.to_ne_bytes(), d.to_ne_bytes());
        assert_eq!(
            launch(function(c"gcm_setup"), 1, THREADS as u32, s, &[&r, &c]),
            SUCCESS
        );
        assert_eq!(cuStreamSynchronize(s), LAUNCH_FAILED);
        let why = last_error().1;
        assert!(why.contains("Pinned memory, not Device"), "{why}");
        assert_eq!(why.contains("CC mode"), on, "{why}");
    }
}

/// NVML's CC state: what the mode says, only between `nvmlInit_v2` and `nvmlShutdown`,
/// and the faults of [`pqcc_fake_cuda_set_nvml`].
#[test]
fn nvml_reports_the_cc_mode() {
    let _t = fresh(false);
    let state = || {
        let mut st = NvmlConfComputeSystemState::default();
        // SAFETY: valid out-pointer.
        let r = unsafe { nvmlSystemGetConfComputeState(&raw mut st) };
        (r, st.environment, st.cc_feature, st.dev_tools_mode)
    };
    assert_eq!(state().0, NVML_ERROR_UNINITIALIZED);
    assert_eq!(nvmlShutdown(), NVML_ERROR_UNINITIALIZED);
    for (cc, want) in [(0, (0, 0, 0)), (1, (2, 1, 0)), (2, (2, 1, 1))] {
        assert_eq!(pqcc_fake_cuda_set_cc(cc), SUCCESS);
        assert_eq!(nvmlInit_v2(), NVML_SUCCESS);
        let (r, e, f, d) = state();
        assert_eq!((r, (e, f, d)), (NVML_SUCCESS, want), "cc {cc}");
        assert_eq!(nvmlShutdown(), NVML_SUCCESS);
    }
    assert_eq!(nvmlInit_v2(), NVML_SUCCESS);
    // SAFETY: a null pointer is refused before it is written.
    let r = unsafe { nvmlSystemGetConfComputeState(std::ptr::null_mut()) };
    assert_eq!(r, NVML_ERROR_INVALID_ARGUMENT);
    assert_eq!(pqcc_fake_cuda_set_nvml(2), SUCCESS);
    assert_eq!(state().0, NVML_ERROR_NOT_SUPPORTED);
    assert_eq!(pqcc_fake_cuda_set_nvml(3), SUCCESS);
    assert_eq!(state().2, 7);
    assert_eq!(nvmlShutdown(), NVML_SUCCESS);
    assert_eq!(pqcc_fake_cuda_set_nvml(1), SUCCESS);
    assert_eq!(nvmlInit_v2(), NVML_ERROR_DRIVER_NOT_LOADED);
    assert_eq!(state().0, NVML_ERROR_UNINITIALIZED);
    // SAFETY: NVML's error strings are static NUL-terminated strings.
    let text = unsafe { CStr::from_ptr(nvmlErrorString(NVML_ERROR_NOT_SUPPORTED)) };
    assert_eq!(text, c"Not Supported");
}
