//! `pqcc bench sealed`: sealing and opening a sealed model against the raw AEAD on the
//! same bytes, on one core and on all cores, in one run.
//!
//! A Hugging Face-layout model of `--size` bytes (shards of F16 tensors of random
//! bytes, an index, a config) is generated in a work directory and read once so every
//! timed run starts from a warm page cache. Then, `--runs` times each (best and median
//! reported), with 1 thread and with every core:
//!
//! - **raw AEAD**: AES-256-GCM (AWS-LC, the provider pqcc-sealed uses) sealing and
//!   opening the same number of bytes in frames of `--frame-size`, in memory: the anchor;
//! - **seal**: `pqcc_sealed::seal_dir` (SHA3-256 of every file, then every frame);
//! - **open**: `SealedModel::open` + `load_tensors` (every tensor into host memory).
//!
//! The ratio open / raw open is the figure the format is judged by (goal ≥ 0.9). Seal
//! includes a SHA3-256 pass over the input (the content ids), so it is bounded by
//! SHA3's rate, not AES-GCM's. Rates are GB/s (10^9 B/s) of plaintext.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context;
use clap::Args;
use pqcc_core::{
    aead::{Aes256GcmProvider, TAG_LEN},
    secret::Secret,
    wire::DType,
};
use pqcc_sealed::{SealOptions, SealedModel, aead::AwsLcAesGcm, safetensors::encode, seal_dir};
use rayon::prelude::*;
use serde_json::json;

use super::{gbps, human_size, parse_size};

/// Arguments of `pqcc bench sealed`.
#[derive(Debug, Args)]
pub struct SealedArgs {
    /// Total size of the generated model's tensors (K, M, G suffixes).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub size: usize,
    /// Plaintext bytes per frame.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub frame_size: usize,
    /// Timed runs of each measurement; best and median are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Working directory (the model and its sealed copies; about 3× SIZE of disk)
    /// [default: a new directory under $TMPDIR or /tmp].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Also load the model into GPU memory: the sealed model opened in VRAM
    /// (`pqcc_gpu::sealed::load_sealed`) against the same safetensors read into pinned
    /// memory and copied plain, alternately (needs a CUDA GPU).
    #[arg(long)]
    pub gpu: bool,
    /// The GPU, with --gpu.
    #[arg(long, default_value_t = 0)]
    pub device: usize,
    /// One JSON object per line on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

struct Row {
    op: &'static str,
    threads: usize,
    best: f64,
    median: f64,
}

fn best_median(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

/// Runs the benchmark.
pub fn run(a: &SealedArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.runs >= 1, "--runs must be at least 1");
    anyhow::ensure!(a.size >= 1 << 20, "--size must be at least 1M");
    let fs_u32 = u32::try_from(a.frame_size)
        .ok()
        .filter(|f| {
            (pqcc_core::sealed::MIN_FRAME_SIZE..=pqcc_core::sealed::MAX_FRAME_SIZE).contains(f)
        })
        .context("--frame-size must be between 4K and 16M")?;
    let (dir, _guard) = match &a.dir {
        Some(d) => (d.clone(), None),
        None => {
            let d = std::env::temp_dir().join(format!("pqcc-bench-sealed-{}", std::process::id()));
            (d.clone(), Some(Cleanup(d)))
        }
    };
    let src = dir.join("model");
    let _ = fs::remove_dir_all(&src);
    fs::create_dir_all(&src).with_context(|| format!("{}: cannot create", src.display()))?;
    let tensors = generate(&src, a.size)?;
    let total = tensors as u64;
    warm(&src)?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let dek = Secret::new([0x5a; 32]);
    let mut rows = Vec::new();
    let mut thread_counts = vec![1];
    if cores > 1 {
        thread_counts.push(cores);
    }
    for &threads in &thread_counts {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .context("thread pool")?;
        let (mut rs, mut ro, mut rr, mut ss, mut so) = (vec![], vec![], vec![], vec![], vec![]);
        for run in 0..a.runs {
            let (s, o) = pool.install(|| raw_aead(total, a.frame_size));
            rs.push(s);
            ro.push(o);
            let out = dir.join(format!("sealed-{threads}-{run}"));
            let _ = fs::remove_dir_all(&out);
            let mut opts = SealOptions::new("bench/model@v1");
            opts.frame_size = fs_u32;
            opts.progress = false;
            opts.salt = Some([7; 32]);
            let t = Instant::now();
            pool.install(|| seal_dir(&src, &out, &dek, &opts))?;
            ss.push(t.elapsed().as_secs_f64());
            warm(&out)?;
            rr.push(pool.install(|| read_aead(&out, a.frame_size))?);
            // Timed: open and load; the tensors are dropped (and zeroized) afterwards.
            let t = Instant::now();
            let loaded = pool.install(|| -> anyhow::Result<_> {
                let m = SealedModel::open(&out, &dek, Some("bench/model@v1"))?;
                Ok(m.load_tensors()?)
            })?;
            so.push(t.elapsed().as_secs_f64());
            anyhow::ensure!(!loaded.is_empty(), "nothing loaded");
            drop(loaded);
            fs::remove_dir_all(&out).ok();
        }
        for (op, v) in [
            ("raw-seal", rs),
            ("raw-open", ro),
            ("read+aead", rr),
            ("seal", ss),
            ("open", so),
        ] {
            let (best, median) = best_median(v);
            rows.push(Row {
                op,
                threads,
                best,
                median,
            });
        }
    }
    if a.gpu {
        let (plain, sealed) = gpu_rows(a, &src, &dir, &dek, fs_u32)?;
        for (op, v) in [("vram-plain", plain), ("vram-sealed", sealed)] {
            let (best, median) = best_median(v);
            rows.push(Row {
                op,
                threads: cores,
                best,
                median,
            });
        }
    }
    let rate = |r: &Row| gbps(total, r.best);
    let find = |op: &str, t: usize| rows.iter().find(|r| r.op == op && r.threads == t);
    if a.json {
        for r in &rows {
            let anchor = match r.op {
                "seal" => find("raw-seal", r.threads),
                "open" => find("raw-open", r.threads),
                "vram-sealed" => find("vram-plain", r.threads),
                _ => None,
            };
            println!(
                "{}",
                json!({
                    "ok": true,
                    "op": r.op,
                    "threads": r.threads,
                    "bytes": total,
                    "frame_size": a.frame_size,
                    "best_s": r.best,
                    "median_s": r.median,
                    "gbps_best": rate(r),
                    "gbps_median": gbps(total, r.median),
                    "ratio_to_raw_best": anchor.map(|x| x.best / r.best),
                    "ratio_to_raw_median": anchor.map(|x| x.median / r.median),
                    "ratio_to_read_aead_best": (r.op == "open")
                        .then(|| find("read+aead", r.threads).map(|x| x.best / r.best))
                        .flatten(),
                })
            );
        }
    } else {
        println!(
            "sealed model of {} of tensors, {} frames, {} runs; rates in GB/s of plaintext (best / median)",
            human_size(a.size),
            human_size(a.frame_size),
            a.runs
        );
        println!(
            "{:<9} {:>7} {:>15} {:>19} {:>19}",
            "op", "threads", "GB/s", "÷ raw AEAD", "÷ read+aead"
        );
        for r in &rows {
            let anchor = match r.op {
                "seal" => find("raw-seal", r.threads),
                "open" => find("raw-open", r.threads),
                "vram-sealed" => find("vram-plain", r.threads),
                _ => None,
            };
            let ratio = anchor.map_or(String::from("anchor"), |x| {
                format!("{:.2} / {:.2}", x.best / r.best, x.median / r.median)
            });
            let ratio2 = match (r.op, find("read+aead", r.threads)) {
                ("open", Some(x)) => format!("{:.2} / {:.2}", x.best / r.best, x.median / r.median),
                _ => String::new(),
            };
            println!(
                "{:<9} {:>7} {:>7.2} / {:<6.2} {:>19} {:>19}",
                r.op,
                r.threads,
                rate(r),
                gbps(total, r.median),
                ratio,
                ratio2
            );
        }
    }
    Ok(())
}

/// Seconds to seal and to open `total` bytes in `frame`-byte frames with AWS-LC in the
/// current thread pool (each worker on its own buffer, as the sealed loader does).
fn raw_aead(total: u64, frame: usize) -> (f64, f64) {
    let frames = usize::try_from(total.div_ceil(frame as u64)).unwrap_or(usize::MAX);
    let aead = AwsLcAesGcm::new(&[0x42; 32]);
    let mut bufs: Vec<Vec<u8>> = (0..frames)
        .map(|i| vec![i.to_le_bytes()[0]; frame])
        .collect();
    let mut tags = vec![[0u8; TAG_LEN]; frames];
    let nonce = |i: usize| {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&(i as u64).to_be_bytes());
        n
    };
    let t = Instant::now();
    bufs.par_iter_mut()
        .zip(tags.par_iter_mut())
        .enumerate()
        .for_each(|(i, (b, tag))| {
            *tag = aead.seal_in_place(&nonce(i), b"aad", b).expect("seal");
        });
    let seal = t.elapsed().as_secs_f64();
    let t = Instant::now();
    bufs.par_iter_mut()
        .zip(tags.par_iter())
        .enumerate()
        .for_each(|(i, (b, tag))| {
            aead.open_in_place(&nonce(i), b"aad", b, tag).expect("open");
        });
    (seal, t.elapsed().as_secs_f64())
}

/// Seconds per run of loading the model into VRAM: plain (each tensor read from its
/// safetensors file into pinned memory and copied to a new device buffer in frame-size
/// pieces) and sealed (`load_sealed` on a fresh backend), alternately, `--runs` times.
/// Every sealed run's tensors are checked against the plaintext.
fn gpu_rows(
    a: &SealedArgs,
    src: &Path,
    dir: &Path,
    dek: &Secret<32>,
    frame_size: u32,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    use pqcc_gpu::{Backend, cuda::CudaBackend};
    use std::os::unix::fs::FileExt;
    pqcc_gpu::cuda::cuda_available().context("pqcc bench sealed --gpu needs a CUDA GPU")?;
    let out = dir.join("sealed-gpu");
    let _ = fs::remove_dir_all(&out);
    let mut opts = SealOptions::new("bench/model@v1");
    opts.frame_size = frame_size;
    opts.progress = false;
    seal_dir(src, &out, dek, &opts)?;
    warm(&out)?;
    let model = SealedModel::open(&out, dek, Some("bench/model@v1"))?;
    let mut plain_backend = CudaBackend::new(a.device, 4)?;
    let info = plain_backend.device_info();
    if info.name.starts_with(pqcc_gpu::cuda::FAKE_DEVICE_PREFIX) {
        eprintln!(
            "WARNING: the device is FakeCuda, a test fake running on the CPU: these figures \
             measure nothing about a GPU"
        );
    }
    eprintln!("pqcc bench sealed --gpu: {}", info.name);
    // The plain side's work list: every tensor of every shard.
    let mut work = Vec::new();
    let mut biggest = 0usize;
    for e in fs::read_dir(src)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            let f = fs::File::open(&p)?;
            let len = f.metadata()?.len();
            let h = pqcc_sealed::safetensors::read_header(&f, &p.display().to_string(), len)?;
            let base = h.raw.len() as u64;
            for t in &h.tensors {
                let n = usize::try_from(t.end - t.begin)?;
                biggest = biggest.max(n);
                work.push((p.clone(), base + t.begin, n, t.name.clone()));
            }
        }
    }
    let mut pinned = plain_backend.alloc_pinned(biggest.max(1))?;
    let (mut plain, mut sealed) = (Vec::new(), Vec::new());
    for _ in 0..a.runs {
        let t = Instant::now();
        let mut dsts = Vec::new();
        for (p, off, n, _) in &work {
            let f = fs::File::open(p)?;
            f.read_exact_at(&mut pinned.as_mut_slice()[..*n], *off)?;
            let d = plain_backend.alloc_zeroed(*n)?;
            plain_backend.time_plain_copy(&pinned, *n, d, a.frame_size)?;
            dsts.push(d);
        }
        plain.push(t.elapsed().as_secs_f64());
        for d in dsts {
            plain_backend.free(d)?;
        }

        let b = CudaBackend::new(a.device, 4)?;
        let t = Instant::now();
        let mut vram =
            pqcc_gpu::sealed::load_sealed(b, &model, pqcc_gpu::cuda::OpenSchedule::default())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        sealed.push(t.elapsed().as_secs_f64());
        // The first tensor's bytes, checked outside the timing.
        if let Some(t0) = vram.tensors().first().cloned()
            && let Some(h) = t0.buffer
        {
            let got = vram.backend().download(h)?;
            let (p, off, n, _) = work
                .iter()
                .find(|w| w.3 == t0.name)
                .context("a sealed tensor the model does not have")?;
            let mut want = vec![0u8; *n];
            fs::File::open(p)?.read_exact_at(&mut want, *off)?;
            anyhow::ensure!(
                got == want,
                "{}: VRAM bytes differ from the plaintext",
                t0.name
            );
        }
        vram.free()?;
    }
    Ok((plain, sealed))
}

/// Seconds to read every safetensors file of the sealed directory `dir` in frames of
/// `frame` bytes into fresh buffers and run AES-256-GCM over each (no format, no
/// checks): the least any opener of a file must do, the second anchor for `open`.
fn read_aead(dir: &Path, frame: usize) -> anyhow::Result<f64> {
    use std::os::unix::fs::FileExt;
    let mut jobs = Vec::new();
    let mut files = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.to_string_lossy().ends_with(".safetensors.sealed") {
            let f = fs::File::open(&p)?;
            let len = f.metadata()?.len();
            let fi = files.len();
            files.push(f);
            let mut off = 0;
            while off < len {
                let n = (len - off).min(frame as u64 + TAG_LEN as u64);
                jobs.push((fi, off, usize::try_from(n)?));
                off += n;
            }
        }
    }
    let aead = AwsLcAesGcm::new(&[0x24; 32]);
    let t = Instant::now();
    let bufs: Vec<Vec<u8>> = jobs
        .par_iter()
        .enumerate()
        .map(|(i, &(fi, off, n))| {
            let mut b = vec![0u8; n];
            files[fi].read_exact_at(&mut b, off).expect("read");
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&(i as u64).to_be_bytes());
            aead.seal_in_place(&nonce, b"aad", &mut b[..n.saturating_sub(TAG_LEN)])
                .expect("aead");
            b
        })
        .collect();
    let s = t.elapsed().as_secs_f64();
    drop(bufs);
    Ok(s)
}

/// Writes a model of about `size` bytes of tensors: shards of at most 64 MiB, each of
/// F16 tensors of 8 MiB (the last smaller). Returns the tensor bytes written.
fn generate(dir: &Path, size: usize) -> anyhow::Result<usize> {
    const SHARD: usize = 64 << 20;
    const TENSOR: usize = 8 << 20;
    let shards = size.div_ceil(SHARD);
    let mut left = size;
    let mut seed = 1u64;
    let mut map = serde_json::Map::new();
    for s in 0..shards {
        let name = format!("model-{:05}-of-{:05}.safetensors", s + 1, shards);
        let mut here = left.min(SHARD);
        left -= here;
        let mut data = Vec::new();
        let mut ts = Vec::new();
        let mut i = 0;
        while here > 0 {
            let n = here.min(TENSOR) & !1;
            if n == 0 {
                break;
            }
            here -= n;
            data.push(noise(n, seed));
            seed += 1;
            ts.push(format!("model.layers.{s}.w{i}.weight"));
            i += 1;
        }
        let shapes: Vec<[u64; 1]> = data.iter().map(|d| [d.len() as u64 / 2]).collect();
        let parts: Vec<(&str, DType, &[u64], &[u8])> = ts
            .iter()
            .zip(&data)
            .zip(&shapes)
            .map(|((n, d), s)| (n.as_str(), DType::F16, &s[..], d.as_slice()))
            .collect();
        let bytes = encode(&parts, None).map_err(|e| anyhow::anyhow!(e))?;
        fs::write(dir.join(&name), bytes)?;
        for t in ts {
            map.insert(t, serde_json::Value::String(name.clone()));
        }
    }
    fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_vec(&json!({"metadata": {"total_size": size}, "weight_map": map}))?,
    )?;
    fs::write(dir.join("config.json"), br#"{"model_type":"llama"}"#)?;
    Ok(size - left)
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Reads every file under `dir` once (into the page cache).
fn warm(dir: &Path) -> anyhow::Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            warm(&p)?;
        } else {
            let _ = fs::read(&p)?;
        }
    }
    Ok(())
}

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
