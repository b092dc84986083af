//! `pqcc bench channel`: seal and open throughput of tensor frames.
//!
//! For each AEAD provider, tensor size and thread count this measures:
//! - **channel**: frames through a real session from [`establish_channel`]:
//!   [`Sealer::seal_chunk_in_place`] on one side, [`Opener::open_in_place`] on the
//!   other, one frame per tensor up to [`MAX_CHUNK_LEN`] and larger tensors cut into
//!   chunks of at most that. The frame buffer reserves headroom for the header before
//!   the chunk, so sealing and opening touch the tensor bytes in place only.
//! - **raw**: the same chunks through the provider alone (no header, no AAD, no replay
//!   window), the anchor that shows what the framing costs.
//!
//! Each worker alternately seals a batch of tensors and opens it (about 256 KiB, at
//! least one tensor), timing the two phases separately: `seal` and `open` are bytes
//! over the time of that phase, `seal+open` bytes over both (one side sealing and the
//! other opening on the same core). With several threads, every thread has its own
//! session and buffers and the figures are the sum over threads of each one's rate.
//! One-thread rates are per CPU-second of the thread (as `openssl speed` counts user
//! time), multi-thread rates per wall-clock second (as `openssl speed -multi` does);
//! the JSON output carries both (`gbps_cpu`, `gbps_wall`).
//!
//! The fixed cost per frame (a zero-byte chunk), and the header encode, header decode
//! and replay window steps alone, are measured too, to show where the time goes for
//! small frames.

use std::{
    hint::black_box,
    sync::Barrier,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use pqcc_core::{
    PROTOCOL_VERSION,
    aead::{Aes256GcmProvider, NONCE_LEN, RustCryptoAesGcm, TAG_LEN},
    channel::{DEFAULT_WINDOW_WORDS, Limits, MAX_CHUNK_LEN, Session},
    pair::establish_channel,
    replay::ReplayWindow,
    sign::SigningKey,
    wire::{DType, FLAG_FINAL, FRAME_HEADER_MAX_LEN, FrameHeader, TensorMetadata},
};
use rand_core::Rng as _;

#[cfg(doc)]
use pqcc_core::channel::{Opener, Sealer};

use super::{gbps, human_size, openssl, thread_cpu_time, unix_now};
use crate::{aead::AwsLcAesGcm, rng::OsRng};

/// Which AES-256-GCM implementation to run the channel on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// `pqcc_core::aead::RustCryptoAesGcm`.
    RustCrypto,
    /// [`crate::aead::AwsLcAesGcm`].
    AwsLc,
}

impl Provider {
    /// The provider's report name.
    pub fn name(self) -> &'static str {
        match self {
            Provider::RustCrypto => RustCryptoAesGcm::NAME,
            Provider::AwsLc => AwsLcAesGcm::NAME,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Providers to measure.
    pub providers: Vec<Provider>,
    /// Tensor sizes in bytes.
    pub sizes: Vec<usize>,
    /// The "all cores" thread count (1 is always measured as well).
    pub threads: usize,
    /// Timed seconds per measurement (after warm-up).
    pub seconds: f64,
    /// Whether to run `openssl speed` as the reference.
    pub openssl: bool,
    /// Whether to measure the fixed per-frame costs.
    pub overhead: bool,
    /// One JSON object per line instead of a table.
    pub json: bool,
}

/// Target plaintext per sealed-then-opened batch.
const BATCH_TARGET: usize = 256 * 1024;
/// Headroom reserved before each chunk for its header.
const HEAD: usize = FRAME_HEADER_MAX_LEN;

/// Totals of one worker thread.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    bytes: u64,
    frames: u64,
    /// Thread CPU seconds in each phase (wall seconds where no CPU clock exists).
    seal_s: f64,
    open_s: f64,
    /// Wall-clock seconds in each phase.
    seal_wall: f64,
    open_wall: f64,
}

/// Aggregate over threads: each a sum of per-thread rates.
#[derive(Debug, Clone, Copy, Default)]
struct Rates {
    /// GB/s per CPU-second, summed over threads.
    seal: f64,
    open: f64,
    both: f64,
    /// GB/s of wall-clock time, summed over threads.
    seal_wall: f64,
    open_wall: f64,
    both_wall: f64,
    /// Mean CPU nanoseconds per frame (seal, open), averaged over threads.
    seal_ns: f64,
    open_ns: f64,
    frames: u64,
}

impl Rates {
    fn of(totals: &[Totals]) -> Self {
        let mut r = Rates::default();
        for t in totals {
            r.seal += gbps(t.bytes, t.seal_s);
            r.open += gbps(t.bytes, t.open_s);
            r.both += gbps(t.bytes, t.seal_s + t.open_s);
            r.seal_wall += gbps(t.bytes, t.seal_wall);
            r.open_wall += gbps(t.bytes, t.open_wall);
            r.both_wall += gbps(t.bytes, t.seal_wall + t.open_wall);
            if t.frames > 0 {
                r.seal_ns += t.seal_s * 1e9 / t.frames as f64;
                r.open_ns += t.open_s * 1e9 / t.frames as f64;
            }
            r.frames += t.frames;
        }
        if !totals.is_empty() {
            r.seal_ns /= totals.len() as f64;
            r.open_ns /= totals.len() as f64;
        }
        r
    }
}

/// One frame's buffer: `[headroom | chunk | tag]`.
struct Frame {
    buf: Vec<u8>,
    /// Where the header starts (after sealing).
    start: usize,
    len: usize,
    offset: u64,
    tag: [u8; TAG_LEN],
    nonce: [u8; NONCE_LEN],
}

impl Frame {
    fn body(&mut self) -> &mut [u8] {
        &mut self.buf[HEAD..HEAD + self.len]
    }
}

/// Chunk `(offset, len)` pairs of a tensor of `size` bytes.
fn chunks(size: usize) -> Vec<(u64, usize)> {
    let max = MAX_CHUNK_LEN as usize;
    if size == 0 {
        return vec![(0, 0)];
    }
    (0..size)
        .step_by(max)
        .map(|off| (off as u64, max.min(size - off)))
        .collect()
}

/// Frame buffers for one batch, filled with random bytes.
fn make_frames(size: usize, rng: &mut impl rand_core::Rng) -> Vec<Frame> {
    let tensors = (BATCH_TARGET / size.max(1)).clamp(1, 256);
    let mut frames = Vec::new();
    for _ in 0..tensors {
        for (offset, len) in chunks(size) {
            let mut f = Frame {
                buf: vec![0u8; HEAD + len + TAG_LEN],
                start: HEAD,
                len,
                offset,
                tag: [0; TAG_LEN],
                nonce: [0; NONCE_LEN],
            };
            rng.fill_bytes(f.body());
            frames.push(f);
        }
    }
    frames
}

/// A batch of work that can be sealed and then opened again, repeatedly.
trait Workload {
    fn seal_batch(&mut self) -> anyhow::Result<()>;
    fn open_batch(&mut self) -> anyhow::Result<()>;
    fn batch_bytes(&self) -> u64;
    fn batch_frames(&self) -> u64;
}

/// Frames through a real session.
struct ChannelWork<A: Aes256GcmProvider> {
    sender: Session<A, DEFAULT_WINDOW_WORDS>,
    receiver: Session<A, DEFAULT_WINDOW_WORDS>,
    meta: TensorMetadata<'static>,
    frames: Vec<Frame>,
    size: usize,
}

impl<A: Aes256GcmProvider> ChannelWork<A> {
    fn new(size: usize) -> anyhow::Result<Self> {
        let mut rng = OsRng.unwrap_err();
        let broker = SigningKey::generate(&mut rng);
        let (sender, receiver) = establish_channel::<A, DEFAULT_WINDOW_WORDS, _>(
            &broker,
            &[],
            Limits::default(),
            unix_now(),
            &mut rng,
        )
        .context("handshake")?;
        let meta = TensorMetadata::new(1, "bench/tensor", DType::U8, &[size as u64])
            .context("tensor metadata")?;
        Ok(Self {
            sender,
            receiver,
            meta,
            frames: make_frames(size, &mut rng),
            size,
        })
    }
}

impl<A: Aes256GcmProvider> Workload for ChannelWork<A> {
    fn seal_batch(&mut self) -> anyhow::Result<()> {
        let now = unix_now();
        let mut hdr = [0u8; FRAME_HEADER_MAX_LEN];
        for f in &mut self.frames {
            let (body, tail) = f.buf[HEAD..].split_at_mut(f.len);
            let (hlen, tag) = self
                .sender
                .tx
                .seal_chunk_in_place(now, 0, &self.meta, f.offset, body, &mut hdr)?;
            tail[..TAG_LEN].copy_from_slice(&tag);
            f.start = HEAD - hlen;
            f.buf[f.start..HEAD].copy_from_slice(&hdr[..hlen]);
        }
        Ok(())
    }

    fn open_batch(&mut self) -> anyhow::Result<()> {
        let now = unix_now();
        for f in &mut self.frames {
            let end = HEAD + f.len + TAG_LEN;
            let opened = self
                .receiver
                .rx
                .open_in_place(now, &mut f.buf[f.start..end])?;
            black_box(opened.plaintext.len());
        }
        Ok(())
    }

    fn batch_bytes(&self) -> u64 {
        (self.size * (self.frames.len() / chunks(self.size).len())) as u64
    }

    fn batch_frames(&self) -> u64 {
        self.frames.len() as u64
    }
}

/// The same chunks through the provider alone.
struct RawWork<A: Aes256GcmProvider> {
    aead: A,
    counter: u64,
    frames: Vec<Frame>,
    size: usize,
}

impl<A: Aes256GcmProvider> RawWork<A> {
    fn new(size: usize) -> Self {
        let mut rng = OsRng.unwrap_err();
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        let aead = A::new(&key);
        zeroize::Zeroize::zeroize(&mut key);
        Self {
            aead,
            counter: 0,
            frames: make_frames(size, &mut rng),
            size,
        }
    }
}

impl<A: Aes256GcmProvider> Workload for RawWork<A> {
    fn seal_batch(&mut self) -> anyhow::Result<()> {
        for f in &mut self.frames {
            self.counter += 1;
            f.nonce[4..].copy_from_slice(&self.counter.to_be_bytes());
            let nonce = f.nonce;
            f.tag = self.aead.seal_in_place(&nonce, &[], f.body())?;
        }
        Ok(())
    }

    fn open_batch(&mut self) -> anyhow::Result<()> {
        for f in &mut self.frames {
            let (nonce, tag) = (f.nonce, f.tag);
            self.aead.open_in_place(&nonce, &[], f.body(), &tag)?;
        }
        Ok(())
    }

    fn batch_bytes(&self) -> u64 {
        (self.size * (self.frames.len() / chunks(self.size).len())) as u64
    }

    fn batch_frames(&self) -> u64 {
        self.frames.len() as u64
    }
}

/// Checks one round trip, then warms up for `warm`.
fn warm_up(w: &mut impl Workload, warm: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        w.seal_batch()?;
        w.open_batch()?;
        if start.elapsed() >= warm {
            return Ok(());
        }
    }
}

/// A point in time on both clocks.
#[derive(Clone, Copy)]
struct Stamp {
    wall: Instant,
    cpu: Option<Duration>,
}

impl Stamp {
    fn now() -> Self {
        Self {
            wall: Instant::now(),
            cpu: thread_cpu_time(),
        }
    }

    /// (CPU seconds, wall seconds) since `earlier`; CPU falls back to wall.
    fn since(&self, earlier: &Stamp) -> (f64, f64) {
        let wall = (self.wall - earlier.wall).as_secs_f64();
        let cpu = match (self.cpu, earlier.cpu) {
            (Some(a), Some(b)) => a.saturating_sub(b).as_secs_f64(),
            _ => wall,
        };
        (cpu, wall)
    }
}

/// Seals and opens batches until the thread has used `dur` of CPU time (or four times
/// that of wall time on a very busy machine).
fn timed(w: &mut impl Workload, dur: Duration) -> anyhow::Result<Totals> {
    let mut t = Totals::default();
    let start = Stamp::now();
    loop {
        let (cpu, wall) = Stamp::now().since(&start);
        if cpu >= dur.as_secs_f64() || wall >= 4.0 * dur.as_secs_f64() {
            break;
        }
        let t0 = Stamp::now();
        w.seal_batch()?;
        let t1 = Stamp::now();
        w.open_batch()?;
        let t2 = Stamp::now();
        let (sc, sw) = t1.since(&t0);
        let (oc, ow) = t2.since(&t1);
        t.seal_s += sc;
        t.seal_wall += sw;
        t.open_s += oc;
        t.open_wall += ow;
        t.bytes += w.batch_bytes();
        t.frames += w.batch_frames();
    }
    Ok(t)
}

/// Runs `threads` workers, each with its own workload from `make`, started together.
fn run_threads<W, F>(make: F, threads: usize, dur: Duration) -> anyhow::Result<Rates>
where
    W: Workload,
    F: Fn() -> anyhow::Result<W> + Sync,
{
    let barrier = Barrier::new(threads);
    let warm = (dur / 5).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let results: Vec<anyhow::Result<Totals>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let w = make().and_then(|mut w| warm_up(&mut w, warm).map(|()| w));
                    // Every thread reaches the barrier, even after an error.
                    barrier.wait();
                    timed(&mut w?, dur)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("worker panicked")))
            })
            .collect()
    });
    let totals = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Rates::of(&totals))
}

/// Checks that a channel round trip gives back the plaintext, for one provider.
fn check_roundtrip<A: Aes256GcmProvider>(size: usize) -> anyhow::Result<()> {
    let mut w = ChannelWork::<A>::new(size.min(1 << 20))?;
    let before: Vec<Vec<u8>> = w.frames.iter_mut().map(|f| f.body().to_vec()).collect();
    w.seal_batch()?;
    if w.frames
        .iter_mut()
        .zip(&before)
        .any(|(f, b)| f.len >= 16 && f.body() == &b[..])
    {
        anyhow::bail!("{}: sealing left a chunk unchanged", A::NAME);
    }
    w.open_batch()?;
    if w.frames
        .iter_mut()
        .zip(&before)
        .any(|(f, b)| f.body() != &b[..])
    {
        anyhow::bail!("{}: channel round trip changed the plaintext", A::NAME);
    }
    Ok(())
}

/// One result line.
#[derive(Debug, Clone)]
struct Row {
    op: String,
    provider: Option<&'static str>,
    size: usize,
    threads: usize,
    gbps: f64,
}

struct Report {
    json: bool,
    rows: Vec<Row>,
}

impl Report {
    fn push(&mut self, row: Row, extra: serde_json::Value) {
        if self.json {
            let mut v = serde_json::json!({ "ok": true, "op": row.op });
            if let Some(p) = row.provider {
                v["provider"] = p.into();
            }
            v["size"] = row.size.into();
            v["threads"] = row.threads.into();
            v["gbps"] = round(row.gbps, 4).into();
            if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
                o.extend(e);
            }
            println!("{v}");
        }
        self.rows.push(row);
    }

    fn get(&self, op: &str, provider: Option<&str>, size: usize, threads: usize) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| {
                r.op == op && r.provider == provider && r.size == size && r.threads == threads
            })
            .map(|r| r.gbps)
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// Channel and raw figures for one provider, size and thread count.
fn measure_one<A: Aes256GcmProvider>(
    opts: &Options,
    size: usize,
    threads: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let dur = Duration::from_secs_f64(opts.seconds);
    eprintln!(
        "{:>10}  {:>8}  {} thread(s): channel, then raw …",
        A::NAME,
        human_size(size),
        threads
    );
    let ch = run_threads(|| ChannelWork::<A>::new(size), threads, dur)?;
    let raw = run_threads(|| Ok(RawWork::<A>::new(size)), threads, dur)?;
    for (prefix, r) in [("", ch), ("raw-", raw)] {
        for (op, g, wall, ns) in [
            ("seal", r.seal, r.seal_wall, Some(r.seal_ns)),
            ("open", r.open, r.open_wall, Some(r.open_ns)),
            ("seal+open", r.both, r.both_wall, None),
        ] {
            // One thread: per CPU-second, as `openssl speed` divides by user time.
            // Several: per wall-clock second, as `openssl speed -multi` does.
            let headline = if threads == 1 { g } else { wall };
            let mut extra = serde_json::json!({
                "clock": if threads == 1 { "cpu" } else { "wall" },
                "gbps_cpu": round(g, 4),
                "gbps_wall": round(wall, 4),
                "frames": r.frames,
                "seconds": opts.seconds,
            });
            if let Some(ns) = ns {
                extra["cpu_ns_per_frame"] = round(ns, 1).into();
            }
            report.push(
                Row {
                    op: format!("{prefix}{op}"),
                    provider: Some(A::NAME),
                    size,
                    threads,
                    gbps: headline,
                },
                extra,
            );
        }
    }
    Ok(())
}

/// `openssl speed` figures for one size and process count.
fn measure_openssl(size: usize, threads: usize, secs: u64, report: &mut Report) {
    let mut rates = [0.0f64; 3];
    for (i, mode) in [
        openssl::Mode::Encrypt,
        openssl::Mode::Decrypt,
        openssl::Mode::AeadEncrypt,
    ]
    .into_iter()
    .enumerate()
    {
        eprintln!(
            "   openssl  {:>8}  {threads} process(es): openssl speed -evp aes-256-gcm -bytes {size} -seconds {secs}{}{} …",
            human_size(size),
            if threads > 1 {
                format!(" -multi {threads}")
            } else {
                String::new()
            },
            match mode {
                openssl::Mode::Encrypt => "",
                openssl::Mode::Decrypt => " -decrypt",
                openssl::Mode::AeadEncrypt => " -aead",
            }
        );
        match openssl::speed(mode, size, secs, threads) {
            Ok(bps) => {
                rates[i] = bps / 1e9;
                report.push(
                    Row {
                        op: mode.op().into(),
                        provider: None,
                        size,
                        threads,
                        gbps: rates[i],
                    },
                    serde_json::json!({
                        "seconds": secs,
                        "clock": if threads == 1 { "user-cpu" } else { "wall" },
                    }),
                );
            }
            Err(e) => eprintln!("  failed: {e:#}"),
        }
    }
    if rates[0] > 0.0 && rates[1] > 0.0 {
        report.push(
            Row {
                op: "openssl-seal+open".into(),
                provider: None,
                size,
                threads,
                gbps: 1.0 / (1.0 / rates[0] + 1.0 / rates[1]),
            },
            serde_json::json!({ "derived": "1/(1/seal + 1/open)" }),
        );
    }
}

/// CPU nanoseconds per call of `f` over about `dur`.
fn ns_per_iter(dur: Duration, mut f: impl FnMut(u64) -> anyhow::Result<()>) -> anyhow::Result<f64> {
    // Warm up, then time in batches of 1024 calls.
    for i in 0..10_000 {
        f(i)?;
    }
    let start = Stamp::now();
    let mut n: u64 = 10_000;
    let first = n;
    loop {
        let (cpu, wall) = Stamp::now().since(&start);
        if cpu >= dur.as_secs_f64() || wall >= 4.0 * dur.as_secs_f64() {
            return Ok(cpu * 1e9 / (n - first).max(1) as f64);
        }
        for _ in 0..1024 {
            f(n)?;
            n += 1;
        }
    }
}

/// Per-frame fixed costs (single thread): empty frames and the channel's own steps.
fn measure_overhead(opts: &Options) -> anyhow::Result<()> {
    let dur = Duration::from_secs_f64((opts.seconds / 4.0).clamp(0.2, 1.0));
    eprintln!("overhead: per-frame fixed costs …");
    let mut out = Vec::new();
    for p in &opts.providers {
        let (ch, raw) = match p {
            Provider::RustCrypto => (
                run_threads(|| ChannelWork::<RustCryptoAesGcm>::new(0), 1, dur)?,
                run_threads(|| Ok(RawWork::<RustCryptoAesGcm>::new(0)), 1, dur)?,
            ),
            Provider::AwsLc => (
                run_threads(|| ChannelWork::<AwsLcAesGcm>::new(0), 1, dur)?,
                run_threads(|| Ok(RawWork::<AwsLcAesGcm>::new(0)), 1, dur)?,
            ),
        };
        out.push((
            format!("empty-frame seal ({}, channel)", p.name()),
            ch.seal_ns,
        ));
        out.push((
            format!("empty-frame open ({}, channel)", p.name()),
            ch.open_ns,
        ));
        out.push((format!("empty-frame seal ({}, raw)", p.name()), raw.seal_ns));
        out.push((format!("empty-frame open ({}, raw)", p.name()), raw.open_ns));
    }
    // The channel's own steps for a 4 KiB chunk's header.
    let meta = TensorMetadata::new(1, "bench/tensor", DType::U8, &[4096])?;
    let header = |seq: u64| FrameHeader {
        version: PROTOCOL_VERSION,
        stream: 0,
        epoch: 0,
        seq,
        flags: FLAG_FINAL,
        chunk_len: 4096,
        offset: 0,
        meta: meta.clone(),
    };
    let mut buf = [0u8; FRAME_HEADER_MAX_LEN];
    out.push((
        "header encode (validate + hand-written postcard encoder)".into(),
        ns_per_iter(dur, |seq| {
            black_box(header(seq).encode(black_box(&mut buf))?);
            Ok(())
        })?,
    ));
    let n = header(1 << 20).encode(&mut buf)?;
    let encoded = buf[..n].to_vec();
    out.push((
        format!("header decode ({n} B: postcard + canonical re-encode + validate)"),
        ns_per_iter(dur, |_| {
            black_box(FrameHeader::decode(black_box(&encoded))?);
            Ok(())
        })?,
    ));
    let mut window = ReplayWindow::<DEFAULT_WINDOW_WORDS>::new();
    out.push((
        "replay window check + mark".into(),
        ns_per_iter(dur, |seq| {
            window.check(black_box(seq))?;
            window.mark(seq)?;
            Ok(())
        })?,
    ));
    for (what, ns) in out {
        if opts.json {
            println!(
                "{}",
                serde_json::json!({ "ok": true, "op": "overhead", "what": what, "ns": round(ns, 1) })
            );
        } else {
            report_overhead_line(&what, ns);
        }
    }
    Ok(())
}

fn report_overhead_line(what: &str, ns: f64) {
    println!("  {what:<70} {ns:>9.1} ns");
}

/// Runs the channel benchmark and prints its report.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let mut thread_counts = vec![1];
    if opts.threads > 1 {
        thread_counts.push(opts.threads);
    }
    let mut report = Report {
        json: opts.json,
        rows: Vec::new(),
    };
    let have_openssl = opts.openssl && openssl::available();
    if opts.openssl && !have_openssl {
        eprintln!("openssl not found: no reference figures");
    }
    let secs = Duration::from_secs_f64(opts.seconds.ceil().max(1.0)).as_secs();
    eprintln!(
        "bench channel: sizes {:?}, threads {:?}, {} s per measurement, providers {:?}, reference {}",
        opts.sizes
            .iter()
            .map(|&s| human_size(s))
            .collect::<Vec<_>>(),
        thread_counts,
        opts.seconds,
        opts.providers.iter().map(|p| p.name()).collect::<Vec<_>>(),
        if have_openssl {
            openssl::version().unwrap_or_else(|| "openssl".into())
        } else {
            "none".into()
        }
    );
    for p in &opts.providers {
        for &size in &opts.sizes {
            match p {
                Provider::RustCrypto => check_roundtrip::<RustCryptoAesGcm>(size)?,
                Provider::AwsLc => check_roundtrip::<AwsLcAesGcm>(size)?,
            }
        }
    }
    // Ours and openssl's side by side for each size and thread count, so that a
    // change in the machine's load affects both alike.
    for &size in &opts.sizes {
        for &threads in &thread_counts {
            for p in &opts.providers {
                match p {
                    Provider::RustCrypto => {
                        measure_one::<RustCryptoAesGcm>(opts, size, threads, &mut report)?;
                    }
                    Provider::AwsLc => {
                        measure_one::<AwsLcAesGcm>(opts, size, threads, &mut report)?
                    }
                }
            }
            if have_openssl {
                measure_openssl(size, threads, secs, &mut report);
            }
        }
    }
    if opts.json {
        for p in &opts.providers {
            for &size in &opts.sizes {
                for &threads in &thread_counts {
                    for op in ["seal", "open", "seal+open"] {
                        let vs = format!("openssl-{op}");
                        let ours = report.get(op, Some(p.name()), size, threads);
                        let theirs = report.get(&vs, None, size, threads);
                        if let (Some(a), Some(b)) = (ours, theirs) {
                            println!(
                                "{}",
                                serde_json::json!({
                                    "ok": true,
                                    "op": "ratio", "of": op, "provider": p.name(),
                                    "size": size, "threads": threads, "vs": vs,
                                    "ratio": round(a / b, 3),
                                })
                            );
                        }
                    }
                }
            }
        }
    } else {
        print_table(opts, &thread_counts, &report);
    }
    if opts.overhead {
        if !opts.json {
            println!();
            println!(
                "Fixed CPU cost per frame, 1 thread (header of a 4 KiB chunk; channel steps alone):"
            );
        }
        measure_overhead(opts)?;
    }
    Ok(())
}

fn fmt_opt(v: Option<f64>, width: usize, prec: usize) -> String {
    match v {
        Some(x) => format!("{x:>width$.prec$}"),
        None => format!("{:>width$}", "-"),
    }
}

fn print_table(opts: &Options, thread_counts: &[usize], report: &Report) {
    let names: Vec<&'static str> = opts.providers.iter().map(|p| p.name()).collect();
    println!(
        "AES-256-GCM throughput, GB/s (10^9 B/s). 1 thread: per CPU-second (openssl speed divides by user time);"
    );
    println!(
        "N threads: per wall-clock second, summed over threads (openssl speed -multi uses wall time)."
    );
    println!(
        "channel = real frames through a session, raw = the provider alone; openssl = speed -evp (bulk), ossl-aead = speed -aead."
    );
    let mut head = format!("{:<8} {:>3} {:<10}", "size", "thr", "op");
    for n in &names {
        head += &format!(
            " {:>w$} {:>v$}",
            n,
            format!("{n}-raw"),
            w = n.len().max(7),
            v = n.len() + 4
        );
    }
    head += &format!(" {:>8} {:>9}", "openssl", "ossl-aead");
    for n in &names {
        head += &format!(" {:>w$}", format!("{n}/openssl"), w = n.len() + 8);
    }
    println!("{head}");
    println!("{}", "-".repeat(head.chars().count()));
    for &size in &opts.sizes {
        for &threads in thread_counts {
            for op in ["seal", "open", "seal+open"] {
                let mut line = format!("{:<8} {:>3} {:<10}", human_size(size), threads, op);
                for n in &names {
                    line += &format!(
                        " {} {}",
                        fmt_opt(report.get(op, Some(n), size, threads), 11, 2),
                        fmt_opt(
                            report.get(&format!("raw-{op}"), Some(n), size, threads),
                            11,
                            2
                        )
                    );
                }
                let ossl = report.get(&format!("openssl-{op}"), None, size, threads);
                let aead = if op == "seal" {
                    report.get("openssl-aead-seal", None, size, threads)
                } else {
                    None
                };
                line += &format!(" {} {}", fmt_opt(ossl, 8, 2), fmt_opt(aead, 9, 2));
                for n in &names {
                    let r = match (report.get(op, Some(n), size, threads), ossl) {
                        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                        _ => None,
                    };
                    line += &format!(" {}", fmt_opt(r, n.len() + 8, 2));
                }
                println!("{line}");
            }
        }
    }
    // The spec's goal: one-core seal within 10 % of the fastest AEAD measured here, and
    // at least 1.8x that on all cores.
    if let Some(&all) = thread_counts.last() {
        println!();
        println!(
            "Goal: channel seal on 1 thread >= 0.90 x fastest 1-thread AES-256-GCM seal here; on {all} threads >= 1.8 x it."
        );
        for &size in &opts.sizes {
            let mut fastest: Option<(f64, String)> = None;
            let mut consider = |v: Option<f64>, label: String| {
                if let Some(v) = v
                    && fastest.as_ref().is_none_or(|(f, _)| v > *f)
                {
                    fastest = Some((v, label));
                }
            };
            consider(report.get("openssl-seal", None, size, 1), "openssl".into());
            for n in &names {
                consider(report.get("raw-seal", Some(n), size, 1), format!("{n}-raw"));
            }
            let Some((best, label)) = fastest else {
                continue;
            };
            for n in &names {
                let one = report.get("seal", Some(n), size, 1).unwrap_or(0.0);
                let many = report.get("seal", Some(n), size, all).unwrap_or(0.0);
                println!(
                    "  {:<8} {:<10} 1 thread {:>6.2} = {:>5.3} x {label} ({best:.2}) {}   {all} threads {:>6.2} = {:>5.3} x {}",
                    human_size(size),
                    n,
                    one,
                    one / best,
                    if one / best >= 0.9 { "ok " } else { "MISS" },
                    many,
                    many / best,
                    if all == 1 {
                        "n/a"
                    } else if many / best >= 1.8 {
                        "ok"
                    } else {
                        "MISS"
                    },
                );
            }
        }
    }
}
