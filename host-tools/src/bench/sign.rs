//! `pqcc bench sign`: signing and verifying a large artifact (a 16 MiB driver module by
//! default), against pqc-gpu-driver 0.1.0's `DriverAttester` /
//! `DriverAttestationVerifier` in the same run.
//!
//! What pqcc does here, as `pqcc sign driver` and `pqcc verify --artifact` do:
//! - `sign`: read the file once in 1 MiB chunks and hash it ([`crate::hashing`]; from
//!   2 MiB on, a second thread takes over the reading once a read is as slow as a
//!   device), then
//!   sign a [`DriverModule`] statement into a real envelope ([`statement::sign`],
//!   ML-DSA-65, context `pqcc/v1/driver-module`).
//! - `verify`: parse the public key into a one-key trust store, verify the envelope
//!   ([`statement::verify`]: strict decoding, trust lookup, ML-DSA-65), read and hash
//!   the file again and let [`DriverPolicy`] compare hash and length in constant time.
//!
//! The command-line tools add reading the key files and the envelope file and the
//! atomic write of the envelope, which the bench leaves out (microseconds).
//!
//! **A design option, measured but not adopted:** plain SHA3-256 is one sequential
//! sponge, so one file's hash runs on one core however many there are. The bench also
//! times a *chunked* SHA3-256 ([`chunked_sha3_256_file`]: 1 MiB leaves hashed on all
//! cores, then a root over the leaf hashes), to show what a statement format that
//! carried such a root instead of the plain file hash would cost. No pqcc format uses
//! it; adopting it is a decision for the signed-statement format.
//!
//! The baseline runs `host-tools/bench/pqc_gpu_driver_baseline.py` (see its docstring)
//! with a Python that has `pqc-gpu-driver==0.1.0` installed: by default
//! `target/bench-venv/bin/python` when it exists, else `python3`. Both sides read the
//! same file from the page cache. pqcc and the baseline take turns (`--rounds` rounds
//! of `--runs` runs each) and the medians of the pooled samples are reported, as
//! wall-clock time and as CPU time (each side's whole process, so a reading thread
//! would count),
//! so a change in the machine's load during the run favours neither side. The
//! baseline is also timed once on bytes already in memory (its library calls alone),
//! and the ratio against that is printed too.
//!
//! Measured on the development machine (2 vCPUs of an AMD EPYC, Zen 4, load average
//! at most 1.5), 16 MiB: pqcc sign 27.3–27.7 ms and verify 26.7–26.8 ms, the baseline
//! 36.1–36.4 ms each: 1.33–1.34x for sign + verify, wall and CPU alike. Both are bound
//! by SHA3-256; the baseline's is OpenSSL's assembly Keccak, pqcc's the AVX-512
//! permutation in `hashing.rs` (about 25.6 ms per 16 MiB in memory). docs/cli.md has
//! the table.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};
use pqcc_core::{
    policy::{Artifact, Decision, DriverPolicy},
    sign::{SigningKey, VerifyingKey},
    statement::{self, DriverModule, Kind},
};
use rand_core::TryRng as _;
use serde_json::{Value, json};

use super::{Stats, human_size, process_cpu_time};
use crate::{
    hashing::{self, Backend},
    rng::OsRng,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The artifact to sign; `None` makes a temporary file of `size` random bytes.
    pub file: Option<PathBuf>,
    /// Size of the generated artifact.
    pub size: usize,
    /// Timed runs of each operation per round (after one warm-up).
    pub runs: usize,
    /// Rounds, alternating pqcc and the baseline.
    pub rounds: usize,
    /// Python interpreter for the baseline (`None`: the default, see the module docs).
    pub python: Option<PathBuf>,
    /// The baseline script.
    pub script: PathBuf,
    /// Whether to run the baseline.
    pub baseline: bool,
    /// One JSON object on stdout instead of text.
    pub json: bool,
}

impl Options {
    /// The baseline script shipped in this repository.
    pub fn default_script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/pqc_gpu_driver_baseline.py")
    }
}

/// Label of a chunked-hash leaf (design option only, see the module docs).
const LEAF_LABEL: &[u8] = b"pqcc/v1/bench-chunked/leaf";
/// Label of a chunked-hash root (design option only, see the module docs).
const ROOT_LABEL: &[u8] = b"pqcc/v1/bench-chunked/root";

/// The chunked SHA3-256 design option: leaf i = SHA3-256(LEAF_LABEL ‖ u64be(i) ‖
/// chunk i) over [`hashing::CHUNK`]-sized chunks, root = SHA3-256(ROOT_LABEL ‖
/// u64be(length) ‖ leaf 0 ‖ leaf 1 ‖ …). `threads` workers each read their chunks with
/// `pread` into one reused buffer. **Not a pqcc format**; measured only.
pub fn chunked_sha3_256_file(path: &Path, threads: usize) -> anyhow::Result<([u8; 32], u64)> {
    use std::os::unix::fs::FileExt as _;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("fstat {}", path.display()))?
        .len();
    let chunk = hashing::CHUNK as u64;
    let n = usize::try_from(len.div_ceil(chunk)).context("file too large")?;
    let threads = threads.clamp(1, n.max(1));
    let mut leaves = vec![[0u8; 32]; n];
    std::thread::scope(|s| -> anyhow::Result<()> {
        let mut workers = Vec::new();
        for w in 0..threads {
            let file = &file;
            workers.push(s.spawn(move || -> anyhow::Result<Vec<(usize, [u8; 32])>> {
                let mut buf = vec![0u8; hashing::CHUNK];
                let mut out = Vec::new();
                for i in (w..n).step_by(threads) {
                    let off = i as u64 * chunk;
                    let this = usize::try_from((len - off).min(chunk)).unwrap_or(hashing::CHUNK);
                    file.read_exact_at(&mut buf[..this], off)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let mut h = hashing::StreamingSha3::new();
                    h.update(LEAF_LABEL);
                    h.update(&(i as u64).to_be_bytes());
                    h.update(&buf[..this]);
                    out.push((i, h.finish().0));
                }
                Ok(out)
            }));
        }
        for wk in workers {
            let part = wk
                .join()
                .map_err(|_| anyhow::anyhow!("hashing thread panicked"))??;
            for (i, h) in part {
                leaves[i] = h;
            }
        }
        Ok(())
    })?;
    let mut root = hashing::StreamingSha3::new();
    root.update(ROOT_LABEL);
    root.update(&len.to_be_bytes());
    for l in &leaves {
        root.update(l);
    }
    Ok((root.finish().0, len))
}

/// Median of a set of samples, in ms.
#[derive(Debug, Clone, Copy)]
struct Ms {
    median: f64,
}

fn time_ms(runs: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Ms> {
    f()?; // warm-up (and the page cache)
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let s = Stats::of(&mut v);
    Ok(Ms { median: s.p50 })
}

/// A temporary file removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn make_artifact(size: usize) -> anyhow::Result<TempFile> {
    let mut name = [0u8; 8];
    OsRng
        .try_fill_bytes(&mut name)
        .context("getrandom for a file name")?;
    let path = std::env::temp_dir().join(format!("pqcc-bench-sign-{}.ko", hex::encode(name)));
    let tf = TempFile(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tf.0)
        .with_context(|| format!("creating {}", tf.0.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len());
        OsRng
            .try_fill_bytes(&mut buf[..n])
            .context("getrandom for the artifact")?;
        f.write_all(&buf[..n])
            .with_context(|| format!("writing {}", tf.0.display()))?;
        left -= n;
    }
    f.sync_all()
        .with_context(|| format!("fsync {}", tf.0.display()))?;
    Ok(tf)
}

fn default_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

fn run_script(
    python: &Path,
    script: &Path,
    file: &Path,
    runs: usize,
    extra: &[&str],
) -> Result<Value, String> {
    let out = Command::new(python)
        .arg(script)
        .arg(file)
        .arg("--runs")
        .arg(runs.to_string())
        .args(extra)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{} {} exited with {}: {}",
            python.display(),
            script.display(),
            out.status,
            err.trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("baseline printed bad JSON: {e}"))
}

/// Wall-clock and CPU-time samples of one operation, in ms, pooled over rounds.
#[derive(Debug, Default, Clone)]
struct Samples {
    wall: Vec<f64>,
    cpu: Vec<f64>,
}

impl Samples {
    fn push(&mut self, wall: f64, cpu: Option<f64>) {
        self.wall.push(wall);
        if let Some(c) = cpu {
            self.cpu.push(c);
        }
    }

    fn extend_from(&mut self, v: &Value, wall_key: &str, cpu_key: &str) {
        let nums = |k: &str| -> Vec<f64> {
            v.get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default()
        };
        self.wall.extend(nums(wall_key));
        self.cpu.extend(nums(cpu_key));
    }

    fn median(&self) -> f64 {
        Stats::of(&mut self.wall.clone()).p50
    }

    fn cpu_median(&self) -> f64 {
        if self.cpu.is_empty() {
            f64::NAN
        } else {
            Stats::of(&mut self.cpu.clone()).p50
        }
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the benchmark and prints the results.
///
/// Timing alternates between pqcc and the baseline in `rounds` rounds of `runs` runs
/// each, and reports medians of the pooled samples, so that a change in the machine's
/// load during the run does not favour one side. Both wall-clock and CPU time are
/// reported (each side's process); on a shared machine the CPU
/// figures are the ones to compare.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    if opts.runs == 0 || opts.rounds == 0 {
        bail!("--runs and --rounds must be at least 1");
    }
    let _temp;
    let file = match &opts.file {
        Some(p) => p.clone(),
        None => {
            eprintln!("writing a {} random artifact ...", human_size(opts.size));
            _temp = make_artifact(opts.size)?;
            _temp.0.clone()
        }
    };
    let size = std::fs::metadata(&file)
        .with_context(|| format!("stat {}", file.display()))?
        .len();
    let backend = Backend::detect();
    eprintln!(
        "timing {} ({size} bytes), SHA3-256 backend {}, {} rounds of {} runs ...",
        file.display(),
        backend.name(),
        opts.rounds,
        opts.runs
    );

    let sk = SigningKey::generate(&mut OsRng.unwrap_err());
    let pk_bytes = *sk.public_key();

    // The parts, for the record.
    let hash = time_ms(opts.runs, || hashing::sha3_256_file(&file).map(|_| ()))?;
    // Read, then hash, in turn on this thread (no reading thread).
    let read_then_hash = |backend: Backend| -> anyhow::Result<()> {
        let mut f =
            std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
        hashing::sha3_256_reader_with(&mut f, backend)
            .with_context(|| format!("reading {}", file.display()))?;
        Ok(())
    };
    let sequential = time_ms(opts.runs, || read_then_hash(backend))?;
    // Always reading on a second thread (what `sha3_256_file` moves to for slow reads).
    let threaded = time_ms(opts.runs, || {
        let f =
            std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
        hashing::sha3_256_reader_overlapped(f, backend)
            .with_context(|| format!("reading {}", file.display()))?;
        Ok(())
    })?;
    let hash_in_memory = {
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        time_ms(opts.runs, || {
            let mut h = hashing::StreamingSha3::with_backend(backend);
            h.update(&bytes);
            std::hint::black_box(h.finish());
            Ok(())
        })?
    };
    let portable = time_ms(opts.runs.min(5), || read_then_hash(Backend::Portable))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunked = time_ms(opts.runs, || {
        chunked_sha3_256_file(&file, threads).map(|_| ())
    })?;

    // sign: hash the file, sign a DriverModule statement into an envelope.
    let sign_once = || -> anyhow::Result<Vec<u8>> {
        let (sha3_256, size) = hashing::sha3_256_file(&file)?;
        let body = DriverModule {
            name: "bench",
            version: "0",
            sha3_256,
            size,
        };
        let mut env = vec![0u8; Kind::DriverModule.max_len()];
        let n = statement::sign(&body, &sk, 0, &mut OsRng.unwrap_err(), &mut env)
            .map_err(|e| anyhow::anyhow!("signing the driver statement: {e}"))?;
        env.truncate(n);
        Ok(env)
    };
    // verify: verify the envelope against a one-key trust store, hash the file again
    // and check it against the statement.
    let verify_once = |env: &[u8]| -> anyhow::Result<()> {
        let vk =
            VerifyingKey::from_bytes(&pk_bytes).map_err(|e| anyhow::anyhow!("public key: {e}"))?;
        let trust = [vk];
        let v = statement::verify::<DriverModule<'_>, _>(env, &trust)
            .map_err(|e| anyhow::anyhow!("verifying the driver statement: {e}"))?;
        let (sha3_256, len) = hashing::sha3_256_file(&file)?;
        let signers = [trust[0].signer_id()];
        let policy = DriverPolicy {
            signers: &signers,
            max_size: None,
        };
        match policy.check(&v, Some(&Artifact { sha3_256, len })) {
            Decision::Allow => Ok(()),
            Decision::Deny(r) => bail!("driver policy: {r}"),
        }
    };
    let env = sign_once()?; // warm-up
    verify_once(&env)?;

    let python = opts.python.clone().unwrap_or_else(default_python);
    let (mut sign, mut verify) = (Samples::default(), Samples::default());
    let (mut b_sign, mut b_verify) = (Samples::default(), Samples::default());
    let mut baseline_meta: Result<Value, String> = if opts.baseline {
        Err("not run".into())
    } else {
        Err("skipped (--no-baseline)".into())
    };
    for round in 0..opts.rounds {
        for _ in 0..opts.runs {
            let c = process_cpu_time();
            let t = Instant::now();
            let env = sign_once()?;
            sign.push(
                ms(t.elapsed()),
                c.zip(process_cpu_time()).map(|(a, b)| ms(b - a)),
            );
            let c = process_cpu_time();
            let t = Instant::now();
            verify_once(&env)?;
            verify.push(
                ms(t.elapsed()),
                c.zip(process_cpu_time()).map(|(a, b)| ms(b - a)),
            );
        }
        if opts.baseline && (round == 0 || baseline_meta.is_ok()) {
            eprintln!(
                "round {}: pqc-gpu-driver baseline with {} ...",
                round + 1,
                python.display()
            );
            baseline_meta = run_script(&python, &opts.script, &file, opts.runs, &[]);
            if let Ok(v) = &baseline_meta {
                b_sign.extend_from(v, "sign_samples_ms", "sign_cpu_samples_ms");
                b_verify.extend_from(v, "verify_samples_ms", "verify_cpu_samples_ms");
            }
        }
    }
    // The baseline's library calls alone, on bytes already in memory, once.
    let in_memory = match &baseline_meta {
        Ok(_) => run_script(&python, &opts.script, &file, opts.runs, &["--no-read"]).ok(),
        Err(_) => None,
    };

    let statement_note = "pqcc signs and verifies a real DriverModule envelope (ML-DSA-65, \
                          context pqcc/v1/driver-module) and checks the file's bytes against it";
    let ours_wall = sign.median() + verify.median();
    let ours_cpu = sign.cpu_median() + verify.cpu_median();
    let base_wall = b_sign.median() + b_verify.median();
    let base_cpu = b_sign.cpu_median() + b_verify.cpu_median();
    let mem_wall = in_memory
        .as_ref()
        .map_or(f64::NAN, |v| num(v, "sign_ms") + num(v, "verify_ms"));

    if opts.json {
        let mut o = json!({
            "ok": true,
            "bench": "sign",
            "file": file.display().to_string(),
            "bytes": size,
            "rounds": opts.rounds,
            "runs_per_round": opts.runs,
            "sha3_backend": backend.name(),
            "statement": "driver-module envelope",
            "note": statement_note,
            "pqcc": {
                "hash_ms": hash.median,
                "hash_reading_thread_ms": threaded.median,
                "hash_sequential_ms": sequential.median,
                "hash_in_memory_ms": hash_in_memory.median,
                "hash_portable_ms": portable.median,
                "design_option_chunked_hash_ms": chunked.median,
                "design_option_chunked_threads": threads,
                "sign_ms": sign.median(),
                "verify_ms": verify.median(),
                "sign_cpu_ms": sign.cpu_median(),
                "verify_cpu_ms": verify.cpu_median(),
            },
        });
        match &baseline_meta {
            Ok(meta) => {
                let mut b = json!({
                    "package": meta["package"],
                    "backend": meta["backend"],
                    "algorithm_label": meta["algorithm"],
                    "python": meta["python"],
                    "sign_ms": b_sign.median(),
                    "verify_ms": b_verify.median(),
                    "sign_cpu_ms": b_sign.cpu_median(),
                    "verify_cpu_ms": b_verify.cpu_median(),
                });
                if let Some(m) = &in_memory {
                    b["in_memory_sign_ms"] = m["sign_ms"].clone();
                    b["in_memory_verify_ms"] = m["verify_ms"].clone();
                }
                o["baseline"] = b;
                o["ratio"] = json!({
                    "sign": b_sign.median() / sign.median(),
                    "verify": b_verify.median() / verify.median(),
                    "sign_plus_verify": base_wall / ours_wall,
                    "sign_plus_verify_cpu": base_cpu / ours_cpu,
                    "sign_plus_verify_vs_in_memory": mem_wall / ours_wall,
                });
            }
            Err(why) => {
                o["baseline"] = Value::Null;
                o["baseline_unavailable"] = why.clone().into();
            }
        }
        println!("{o}");
        return Ok(());
    }

    println!(
        "pqcc bench sign: {} artifact, {} rounds x {} runs, medians in ms (wall / CPU)",
        human_size(usize::try_from(size).unwrap_or(usize::MAX)),
        opts.rounds,
        opts.runs
    );
    println!("NOTE: {statement_note}.");
    println!(
        "  pqcc SHA3-256 of the file, {:<8} as signed  {:>8.2}",
        backend.name(),
        hash.median
    );
    println!(
        "  pqcc SHA3-256 of the file, reading thread       {:>8.2}",
        threaded.median
    );
    println!(
        "  pqcc SHA3-256 of the file, read then hash      {:>8.2}",
        sequential.median
    );
    println!(
        "  pqcc SHA3-256 of bytes in memory (no read)      {:>8.2}",
        hash_in_memory.median
    );
    println!(
        "  pqcc SHA3-256 of the file, portable             {:>8.2}",
        portable.median
    );
    println!(
        "  design option, not a pqcc format: chunked SHA3-256 on {threads} threads {:>8.2}",
        chunked.median
    );
    println!(
        "  pqcc sign   (read + hash + ML-DSA-65 sign)      {:>8.2} / {:.2}",
        sign.median(),
        sign.cpu_median()
    );
    println!(
        "  pqcc verify (read + hash + ML-DSA-65 verify)    {:>8.2} / {:.2}",
        verify.median(),
        verify.cpu_median()
    );
    match &baseline_meta {
        Ok(meta) => {
            println!(
                "  baseline {} (backend {}, labelled {}), python {}:",
                meta["package"].as_str().unwrap_or("?"),
                meta["backend"].as_str().unwrap_or("?"),
                meta["algorithm"].as_str().unwrap_or("?"),
                meta["python"].as_str().unwrap_or("?"),
            );
            println!(
                "    sign   (read + hash + attest)                 {:>8.2} / {:.2}",
                b_sign.median(),
                b_sign.cpu_median()
            );
            println!(
                "    verify (read + verify)                        {:>8.2} / {:.2}",
                b_verify.median(),
                b_verify.cpu_median()
            );
            if let Some(m) = &in_memory {
                println!(
                    "    sign / verify on bytes already in memory      {:>8.2} / {:.2} (wall)",
                    num(m, "sign_ms"),
                    num(m, "verify_ms")
                );
            }
            println!(
                "  speed-up (baseline / pqcc): sign {:.2}x, verify {:.2}x, sign+verify {:.2}x \
                 wall, {:.2}x CPU; sign+verify against the baseline on bytes in memory {:.2}x",
                b_sign.median() / sign.median(),
                b_verify.median() / verify.median(),
                base_wall / ours_wall,
                base_cpu / ours_cpu,
                mem_wall / ours_wall
            );
        }
        Err(why) => println!("  baseline: not run: {why}"),
    }
    Ok(())
}

fn num(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_option_is_thread_count_independent_and_not_the_plain_hash() {
        let f = make_artifact(2 * hashing::CHUNK + 77).unwrap();
        let one = chunked_sha3_256_file(&f.0, 1).unwrap();
        assert_eq!(one.1, 2 * hashing::CHUNK as u64 + 77);
        for t in [2, 3, 8] {
            assert_eq!(chunked_sha3_256_file(&f.0, t).unwrap(), one);
        }
        assert_ne!(hashing::sha3_256_file(&f.0).unwrap().0, one.0);
        let empty = make_artifact(0).unwrap();
        assert_eq!(chunked_sha3_256_file(&empty.0, 4).unwrap().1, 0);
    }

    #[test]
    fn runs_without_baseline() {
        run(&Options {
            file: None,
            size: 4096,
            runs: 1,
            rounds: 1,
            python: None,
            script: Options::default_script(),
            baseline: false,
            json: true,
        })
        .unwrap();
        assert!(
            run(&Options {
                file: None,
                size: 1,
                runs: 0,
                rounds: 1,
                python: None,
                script: Options::default_script(),
                baseline: false,
                json: false,
            })
            .is_err()
        );
    }
}
