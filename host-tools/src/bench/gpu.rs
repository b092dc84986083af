//! `pqcc bench gpu`: sealed host→device transfer against the plain copy it replaces.
//!
//! For each size, in one run and on the same device, buffers and chunking:
//! - **plain**: pinned host memory → VRAM with asynchronous copies of `--chunk` bytes
//!   spread over `--streams` streams (no protection: the anchor);
//! - **sealed**: the same bytes sealed as pqcc channel frames (real `Sealer`, fresh
//!   key), lying in pinned memory, opened by [`GpuOpener::open_tensor_pinned`]: host
//!   header/replay checks, ciphertext copies, the in-VRAM AES-256-GCM kernels overlapped
//!   with the copies of the next frames, tag verdicts read back, window committed;
//!   timed once per [`OpenSchedule`]: `PerTensor`, `Persistent` (the default; "kept":
//!   no allocation and one host wait per tensor) and, for the tensors it takes (at most
//!   8 frames and 64 MiB), `Resident` (one resident kernel per tensor that follows the
//!   copies: no launch per frame);
//! - **kernel**: the decryption and tag kernels alone on ciphertext already in VRAM
//!   (device events), i.e. the kernel's own open throughput; **res. kern**: the same for
//!   `Resident`'s one kernel, launched with every frame already arrived (what it can
//!   add after the last copy, at most).
//!
//! - **readback**: once per run, a 16-byte device→host copy and the host's wait for it,
//!   the least that returning a tensor's verdicts costs (printed to stderr, and
//!   `readback_s_p50` in every JSON line).
//!
//! - **batch**: for the sizes `Resident` takes, a batch of tensors of that size (as many
//!   as fit in `--batch-bytes`, 2 to 64), as a model load sees them: plain copies of all
//!   of them into distinct destinations with one wait at the end, against
//!   [`GpuOpener::open_tensors_pinned`] with `Resident` (`--batch-depth` tensors on the
//!   GPU at once, each committed after its verdicts).
//!
//! Plain and sealed runs alternate (plain, sealed, plain, kept, plain, resident, then
//! plain batch, sealed batch), `--runs`
//! times; medians are reported, with the ratio sealed/plain (goal ≥ 0.9). Every sealed
//! run's output is compared with the tensor (untimed). Sealing happens before each sealed
//! run, untimed (every run needs fresh sequence numbers: the replay window refuses the
//! old ones).
//! Rates are GB/s (10^9 B/s) of tensor bytes.

use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use pqcc_core::{
    channel::{Limits, Sealer},
    secret::Secret,
    wire::{DType, FRAME_HEADER_MAX_LEN, TensorMetadata},
};
use pqcc_gpu::{
    Backend, GpuError,
    cuda::{
        CudaBackend, DEFAULT_BATCH_DEPTH, FAKE_DEVICE_PREFIX, GpuOpener, OpenSchedule,
        PinnedBuffer, RESIDENT_LANES, cuda_available, resident_applies,
    },
    kernel::KernelConfig,
};
use serde_json::json;
use zeroize::Zeroize;

use super::{Stats, gbps, human_size, parse_size, unix_now};
use crate::aead::AwsLcAesGcm;

/// Seals with AWS-LC: the sender's side is not what is measured, only prepared.
type BenchSealer = Sealer<AwsLcAesGcm>;

/// Arguments of `pqcc bench gpu`.
#[derive(Debug, Args)]
pub struct GpuArgs {
    /// Tensor sizes, comma-separated (K, M, G suffixes).
    #[arg(long, value_delimiter = ',', value_parser = parse_size,
          default_value = "1M,4M,16M,64M,256M,1G")]
    pub sizes: Vec<usize>,
    /// Frame (chunk) size: the unit of copy/decrypt overlap (at most 16 MiB)
    /// [default: size/8 between 256 KiB and 4 MiB].
    #[arg(long, value_parser = parse_size)]
    pub chunk: Option<usize>,
    /// Kernel tuning: blocks per SM the register allocation must allow (1 to 8).
    #[arg(long, default_value_t = KernelConfig::default().min_blocks_per_sm)]
    pub min_blocks: u32,
    /// Kernel tuning: thread blocks per SM one frame's grid aims for.
    #[arg(long, default_value_t = KernelConfig::default().blocks_per_sm)]
    pub blocks_per_sm: u32,
    /// CUDA streams (frames in flight: while one frame's kernels run, the next one's
    /// copy proceeds; two keep the copy engine busy when the kernel outruns PCIe).
    #[arg(long, default_value_t = 2)]
    pub streams: usize,
    /// Timed runs of each side per size (medians reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    pub device: usize,
    /// One JSON object per line on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Bytes of each batch (2 to 64 tensors of the size); 0: no batch figures.
    #[arg(long, value_parser = parse_size, default_value = "64M")]
    pub batch_bytes: usize,
    /// Place each frame so that its ciphertext starts at a multiple of this many bytes
    /// of the pinned buffer (0: frames packed one after the other).
    #[arg(long, value_parser = parse_size, default_value = "0")]
    pub align: usize,
    /// Tensors of a batch on the GPU at once (1 to 4).
    #[arg(long, default_value_t = DEFAULT_BATCH_DEPTH, value_parser = parse_depth)]
    pub batch_depth: usize,
}

const PREFIX: [u8; 4] = *b"bnch";

/// `--batch-depth`: 1 to [`RESIDENT_LANES`].
fn parse_depth(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=RESIDENT_LANES).contains(&n) => Ok(n),
        _ => Err(format!("expected a number from 1 to {RESIDENT_LANES}")),
    }
}

/// Fills `buf` with fast pseudo-random bytes (tensor contents; not secret).
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for c in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        c.copy_from_slice(&b[..c.len()]);
    }
}

/// How the sealed frames lie in the pinned buffer: `chunk` plaintext bytes per frame, one
/// frame after the other, and with `align > 0` each frame placed so that its ciphertext
/// starts at a multiple of `align` (as a receiver that reads the header first can place
/// it), the header right before it and the tag right after.
#[derive(Debug, Clone, Copy)]
struct Layout {
    chunk: usize,
    align: usize,
}

impl Layout {
    /// Bytes of pinned memory one tensor of `size` bytes takes.
    fn bytes(&self, size: usize) -> usize {
        let frames = size.div_ceil(self.chunk).max(1);
        size + frames * (FRAME_HEADER_MAX_LEN + 16 + self.align)
    }
}

/// Seals `data` as one tensor into `out` (pinned), returning the frame ranges.
fn seal_into(
    sealer: &mut BenchSealer,
    id: u64,
    data: &[u8],
    lay: Layout,
    out: &mut PinnedBuffer,
) -> anyhow::Result<Vec<std::ops::Range<usize>>> {
    seal_into_at(sealer, id, data, lay, out, 0)
}

/// [`seal_into`] from byte `start` of `out` on.
fn seal_into_at(
    sealer: &mut BenchSealer,
    id: u64,
    data: &[u8],
    lay: Layout,
    out: &mut PinnedBuffer,
    start: usize,
) -> anyhow::Result<Vec<std::ops::Range<usize>>> {
    let meta = TensorMetadata::new(id, "bench.tensor", DType::U8, &[data.len() as u64])
        .map_err(|e| anyhow::anyhow!("tensor metadata: {e}"))?;
    let out = out.as_mut_slice();
    let mut ranges = Vec::new();
    let mut at = start;
    let chunk = lay.chunk;
    for (i, c) in data.chunks(chunk).enumerate() {
        let offset = (i * chunk) as u64;
        if lay.align == 0 {
            let n = sealer
                .seal_chunk(unix_now(), 1, &meta, offset, c, &mut out[at..])
                .map_err(|e| anyhow::anyhow!("seal: {e}"))?;
            ranges.push(at..at + n);
            at += n;
            continue;
        }
        // The ciphertext at the first multiple of `align` that leaves room for a header.
        let ct = (at + FRAME_HEADER_MAX_LEN).next_multiple_of(lay.align);
        let end = ct + c.len();
        let body = out
            .get_mut(ct..end + 16)
            .context("the pinned buffer is too small for the layout")?;
        body[..c.len()].copy_from_slice(c);
        let mut header = [0u8; FRAME_HEADER_MAX_LEN];
        let (hlen, tag) = sealer
            .seal_chunk_in_place(
                unix_now(),
                1,
                &meta,
                offset,
                &mut body[..c.len()],
                &mut header,
            )
            .map_err(|e| anyhow::anyhow!("seal: {e}"))?;
        body[c.len()..].copy_from_slice(&tag);
        out[ct - hlen..ct].copy_from_slice(&header[..hlen]);
        ranges.push(ct - hlen..end + 16);
        at = end + 16;
    }
    Ok(ranges)
}

/// Runs the benchmark.
pub fn run(a: &GpuArgs) -> anyhow::Result<()> {
    if a.sizes.is_empty() || a.runs == 0 || a.streams == 0 {
        bail!("--sizes, --runs and --streams must be non-empty / at least 1");
    }
    if a.chunk.is_some_and(|c| c == 0 || c > 16 << 20) {
        bail!("--chunk must be between 1 byte and 16 MiB");
    }
    if a.align > 1 << 20 {
        bail!("--align must be at most 1 MiB");
    }
    cuda_available().context("pqcc bench gpu needs a CUDA GPU")?;
    let cfg = KernelConfig {
        min_blocks_per_sm: a.min_blocks,
        blocks_per_sm: a.blocks_per_sm,
    };
    let backend = CudaBackend::with_config(a.device, a.streams, cfg)?;
    let info = backend.device_info();
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
    let mut sealer: BenchSealer =
        Sealer::new(&Secret::new(key), PREFIX, Limits::default(), unix_now());
    let mut g: GpuOpener = GpuOpener::new(
        backend,
        Secret::new(key),
        PREFIX,
        Limits::default(),
        unix_now(),
    )?;
    key.zeroize();
    g.set_batch_depth(a.batch_depth);
    if info.name.starts_with(FAKE_DEVICE_PREFIX) {
        eprintln!(
            "WARNING: the device is FakeCuda, a test fake running on the CPU: these figures \
             measure nothing about a GPU"
        );
    }
    eprintln!(
        "pqcc bench gpu: {} (sm_{}{}, {} SMs, {:.1} GiB), {} streams, {} runs, batch depth \
         {}, ciphertext alignment {}, kernel {:?}",
        info.name,
        info.compute_capability.map_or(0, |c| c.0),
        info.compute_capability.map_or(0, |c| c.1),
        info.multiprocessors,
        info.total_memory as f64 / (1u64 << 30) as f64,
        a.streams,
        a.runs,
        a.batch_depth,
        if a.align == 0 {
            "none".to_string()
        } else {
            human_size(a.align)
        },
        cfg
    );
    // The floor of what opening adds to one tensor: its verdicts' way back to the host.
    let readback_s = g.backend_ref().time_readback(31)?;
    eprintln!(
        "  device->host round trip (16 bytes, one wait): {:.1} us, which every opened \
         tensor pays after its last copy; plain copies do not",
        readback_s * 1e6
    );
    if !a.json {
        println!(
            "{:>9}  {:>9}  {:>11}  {:>11}  {:>7}  {:>11}  {:>7}  {:>13}  {:>7}  {:>11}  {:>14}  {:>5}  {:>7}",
            "size",
            "chunk",
            "plain GB/s",
            "sealed GB/s",
            "ratio",
            "kept GB/s",
            "ratio",
            "resident GB/s",
            "ratio",
            "kernel GB/s",
            "res. kern GB/s",
            "batch",
            "ratio"
        );
    }
    let mut id = 0u64;
    // Cleared when the driver lacks what `Resident` needs (stream memory operations).
    let mut resident_ok = true;
    for &size in &a.sizes {
        let chunk = a.chunk.unwrap_or((size / 8).clamp(256 << 10, 4 << 20));
        let lay = Layout {
            chunk,
            align: a.align,
        };
        let t0 = Instant::now();
        let mut pinned = g.backend().alloc_pinned(lay.bytes(size))?;
        let mut data = vec![0u8; size];
        fill(&mut data, size as u64 ^ 0x9e37_79b9_7f4a_7c15);
        let dst = g.backend().alloc_zeroed(size)?;

        // Kernel-only throughput on one sealed copy (its frames are never committed).
        id += 1;
        let ranges = seal_into(&mut sealer, id, &data, lay, &mut pinned)?;
        let kernel_s = g.time_kernels(unix_now(), &pinned, &ranges, a.runs.max(3))?;
        let resident_kernel_s = if resident_ok {
            match g.time_resident_kernel(unix_now(), &pinned, &ranges, a.runs.max(3)) {
                Ok(t) => t,
                Err(e) if resident_failed(&e) => {
                    eprintln!("  the resident schedule failed here ({e}): its columns stay empty");
                    resident_ok = false;
                    None
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        // Warm-up of every path with those frames (and one more sealing for each further
        // schedule: the first one committed them).
        g.backend_ref().time_plain_copy(&pinned, size, dst, chunk)?;
        g.open_tensor_pinned(unix_now(), &pinned, &ranges, dst)?;
        id += 1;
        let ranges = seal_into(&mut sealer, id, &data, lay, &mut pinned)?;
        g.set_schedule(OpenSchedule::Persistent);
        g.open_tensor_pinned(unix_now(), &pinned, &ranges, dst)?;
        // The resident kernel only takes small tensors; elsewhere its column is empty.
        let mut resident = resident_ok && resident_applies(ranges.len(), size);
        if resident {
            id += 1;
            let ranges = seal_into(&mut sealer, id, &data, lay, &mut pinned)?;
            g.set_schedule(OpenSchedule::Resident);
            match g.open_tensor_pinned(unix_now(), &pinned, &ranges, dst) {
                Ok(()) => {}
                Err(e) if resident_failed(&e) => {
                    eprintln!("  the resident schedule failed here ({e}): its columns stay empty");
                    resident_ok = false;
                    resident = false;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let schedules: &[OpenSchedule] = if resident {
            &[
                OpenSchedule::PerTensor,
                OpenSchedule::Persistent,
                OpenSchedule::Resident,
            ]
        } else {
            &[OpenSchedule::PerTensor, OpenSchedule::Persistent]
        };

        let (mut plain, mut sealed, mut kept, mut res) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..a.runs {
            for &schedule in schedules {
                let times = match schedule {
                    OpenSchedule::Persistent => &mut kept,
                    OpenSchedule::Resident => &mut res,
                    _ => &mut sealed,
                };
                // The plain side copies the first `size` bytes of the same pinned buffer
                // (before each sealed run, so the destination never already holds the
                // plaintext the spot check below looks for).
                plain.push(time_plain(&g, &pinned, size, dst, chunk)?);
                id += 1;
                let ranges = seal_into(&mut sealer, id, &data, lay, &mut pinned)?;
                g.set_schedule(schedule);
                let t = Instant::now();
                g.open_tensor_pinned(unix_now(), &pinned, &ranges, dst)?;
                times.push(t.elapsed().as_secs_f64());
                // Spot check: each schedule delivered the right bytes.
                if g.backend().download(dst)? != data {
                    bail!("size {size}: the GPU opened wrong bytes ({schedule:?})");
                }
            }
        }
        g.set_schedule(OpenSchedule::default());
        g.backend().free(dst)?;
        drop(pinned);
        let batch = if resident && a.batch_bytes > 0 {
            let n = (a.batch_bytes / size.max(1)).clamp(2, 64);
            Some((
                n,
                time_batch(&mut g, &mut sealer, &mut id, &data, lay, n, a.runs)?,
            ))
        } else {
            None
        };
        eprintln!(
            "  {}: {:.1} s (sealing, copies, checks included)",
            human_size(size),
            t0.elapsed().as_secs_f64()
        );
        let (p, s, k) = (
            Stats::of(&mut plain),
            Stats::of(&mut sealed),
            Stats::of(&mut kept),
        );
        let r = resident.then(|| Stats::of(&mut res));
        let n = size as u64;
        let (pg, sg, keg, kg) = (
            gbps(n, p.p50),
            gbps(n, s.p50),
            gbps(n, k.p50),
            gbps(n, kernel_s),
        );
        let of_plain = |x: f64| if pg > 0.0 { x / pg } else { 0.0 };
        let (ratio, ratio_kept) = (of_plain(sg), of_plain(keg));
        let rg = r.as_ref().map(|r| gbps(n, r.p50));
        let rkg = resident_kernel_s.map(|t| gbps(n, t));
        let (batch_n, batch_plain, batch_sealed) = match &batch {
            Some((k, (p, s))) => {
                let bytes = n * *k as u64;
                (Some(*k), Some(gbps(bytes, p.p50)), Some(gbps(bytes, s.p50)))
            }
            None => (None, None, None),
        };
        let ratio_batch = batch_plain
            .zip(batch_sealed)
            .map(|(p, s)| if p > 0.0 { s / p } else { 0.0 });
        let ratio_resident = rg.map(of_plain);
        if a.json {
            println!(
                "{}",
                json!({
                    "ok": true,
                    "bench": "gpu", "device": info.name, "size": size, "chunk": chunk, "align": a.align,
                    "min_blocks": cfg.min_blocks_per_sm, "blocks_per_sm": cfg.blocks_per_sm,
                    "streams": a.streams, "runs": a.runs,
                    "plain_gbps": pg, "sealed_gbps": sg, "ratio": ratio, "kernel_gbps": kg,
                    "sealed_kept_gbps": keg, "ratio_kept": ratio_kept,
                    "plain_s_p50": p.p50, "sealed_s_p50": s.p50,
                    "sealed_kept_s_p50": k.p50, "kernel_s_p50": kernel_s,
                    "sealed_resident_gbps": rg, "ratio_resident": ratio_resident,
                    "sealed_resident_s_p50": r.as_ref().map(|r| r.p50),
                    "kernel_resident_gbps": rkg, "kernel_resident_s_p50": resident_kernel_s,
                    "batch_tensors": batch_n, "batch_depth": a.batch_depth,
                    "batch_plain_gbps": batch_plain,
                    "batch_resident_gbps": batch_sealed, "ratio_batch": ratio_batch,
                    "readback_s_p50": readback_s,
                })
            );
        } else {
            println!(
                "{:>9}  {:>9}  {:>11.2}  {:>11.2}  {:>6.3}x  {:>11.2}  {:>6.3}x  {:>13}  {:>7}  {:>11.1}  {:>14}  {:>5}  {:>7}",
                human_size(size),
                human_size(chunk),
                pg,
                sg,
                ratio,
                keg,
                ratio_kept,
                rg.map_or("-".into(), |x| format!("{x:.2}")),
                ratio_resident.map_or("-".into(), |x| format!("{x:.3}x")),
                kg,
                rkg.map_or("-".into(), |x| format!("{x:.1}")),
                batch_n.map_or("-".into(), |k| format!("{k}x")),
                ratio_batch.map_or("-".into(), |x| format!("{x:.3}x"))
            );
        }
    }
    Ok(())
}

/// The batch figures for one size: `n` tensors of `data`, each sealed afresh before
/// every sealed run (untimed), opened with `Resident` into `n` destinations; plain copies
/// of the same number of bytes into the same destinations before each. Checks every
/// sealed run's output. Returns the plain and sealed times.
fn time_batch(
    g: &mut GpuOpener,
    sealer: &mut BenchSealer,
    id: &mut u64,
    data: &[u8],
    lay: Layout,
    n: usize,
    runs: usize,
) -> anyhow::Result<(Stats, Stats)> {
    let size = data.len();
    let mut pinned = g.backend().alloc_pinned(n * lay.bytes(size))?;
    let dsts = (0..n)
        .map(|_| g.backend().alloc_zeroed(size))
        .collect::<Result<Vec<_>, _>>()?;
    let r = time_batch_runs(g, sealer, id, data, lay, &mut pinned, &dsts, runs);
    for d in dsts {
        g.backend().free(d)?;
    }
    g.set_schedule(OpenSchedule::default());
    r
}

#[allow(clippy::too_many_arguments)]
fn time_batch_runs(
    g: &mut GpuOpener,
    sealer: &mut BenchSealer,
    id: &mut u64,
    data: &[u8],
    lay: Layout,
    pinned: &mut PinnedBuffer,
    dsts: &[pqcc_gpu::BufferHandle],
    runs: usize,
) -> anyhow::Result<(Stats, Stats)> {
    let size = data.len();
    g.set_schedule(OpenSchedule::Resident);
    let (mut plain, mut sealed) = (Vec::new(), Vec::new());
    // One untimed batch first (the resident kernel's scratch, the staging of the pages).
    for run in 0..=runs {
        // Every tensor sealed one after another into the buffer.
        let mut ranges = Vec::with_capacity(dsts.len());
        let mut at = 0;
        for _ in dsts {
            *id += 1;
            let r = seal_into_at(sealer, *id, data, lay, pinned, at)?;
            at = r.last().map_or(at, |x| x.end);
            ranges.push(r);
        }
        let plain_t = g
            .backend_ref()
            .time_plain_copies(pinned, size, dsts, lay.chunk)?;
        let batch: Vec<_> = ranges
            .iter()
            .map(Vec::as_slice)
            .zip(dsts.iter().copied())
            .collect();
        let t = Instant::now();
        g.open_tensors_pinned(unix_now(), pinned, &batch)
            .map_err(|e| anyhow::anyhow!("batch of {}: {e}", dsts.len()))?;
        let sealed_t = t.elapsed().as_secs_f64();
        for d in dsts {
            if g.backend().download(*d)? != data {
                bail!("size {size}: the GPU opened wrong bytes (batch)");
            }
        }
        if run > 0 {
            plain.push(plain_t);
            sealed.push(sealed_t);
        }
    }
    Ok((Stats::of(&mut plain), Stats::of(&mut sealed)))
}

/// Whether `e` says the resident schedule cannot work on this driver: no stream memory
/// operations, or a kernel that waited 10 s for a flag (the driver does not run the
/// kernel's stream beside the copy streams, or lost the write). Timing it further would
/// only repeat that; the benchmark leaves its columns empty.
fn resident_failed(e: &GpuError) -> bool {
    matches!(e, GpuError::NotArrived { .. } | GpuError::Unavailable(_))
}

fn time_plain(
    g: &GpuOpener,
    pinned: &PinnedBuffer,
    size: usize,
    dst: pqcc_gpu::BufferHandle,
    chunk: usize,
) -> anyhow::Result<f64> {
    Ok(g.backend_ref().time_plain_copy(pinned, size, dst, chunk)?)
}
