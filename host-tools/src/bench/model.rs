//! `pqcc bench model`: building a model archive with pqcc against the recipe it
//! replaces (GNU tar with the reproducible flags, the 4 KiB padding, `veritysetup
//! format`), on the same generated tree, in the same run, with a byte-for-byte
//! comparison of the archive, the hash file and the root hash.
//!
//! Two pairs are timed, `--runs` times each (best and median reported), after one
//! untimed read of the tree so both sides start from a warm page cache (and a `sync`
//! before every timed run so neither pays for the other's writeback):
//!
//! - **as shipped**: `pqcc model build` (its outputs fsync'd before they are renamed)
//!   against the recipe followed by `sync` of its two outputs (equally durable);
//! - **no fsync**: both sides leave their outputs in the page cache.

use std::{
    fs::{self, File},
    io::{BufWriter, Read, Write},
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;

use super::{human_size, parse_size};
use crate::model::{
    DEFAULT_SALT, DEFAULT_UUID,
    build::{self, Outcome},
    source,
};

/// The recipe, as in `../shared/data/repro-tar/cocoon_tar.sh`: `$1` the model
/// directory, `$2` the output archive.
pub const RECIPE: &str = r#"set -euo pipefail
MODEL_DIR=$1; OUT=$2
LC_ALL=C tar -cf "$OUT.tmp" -C "$MODEL_DIR" . \
    --sort=name --format=posix \
    --pax-option='exthdr.name=%d/PaxHeaders/%f' \
    --pax-option='delete=atime,delete=ctime' \
    --clamp-mtime --mtime="@0" \
    --numeric-owner --owner=0 --group=0 \
    --mode='go+u,go-w'
FILE_SIZE=$(stat --format=%s "$OUT.tmp")
dd if=/dev/zero bs=1 count="$((4096 - FILE_SIZE % 4096))" >>"$OUT.tmp" 2>/dev/null
mv "$OUT.tmp" "$OUT"
rm -f "$OUT.verity" "$OUT.hash"
veritysetup format --uuid=645ac31f-7610-42e1-8434-9d733699eac0 --salt=00010203040506070809101a1b1c1d1e1f \
    "$OUT" "$OUT.verity" --root-hash-file="$OUT.hash" > /dev/null
if [ "${3:-}" = sync ]; then sync "$OUT" "$OUT.verity"; fi
"#;

/// Arguments of `pqcc bench model`.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Total size of the generated model's files (K, M, G suffixes).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub size: usize,
    /// Timed runs of each side; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Working directory (the tree and both outputs; about 3× SIZE of disk)
    /// [default: a new directory under $TMPDIR or /tmp].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Skip the fsync'd pair.
    #[arg(long)]
    pub no_durable: bool,
    /// One JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Fills `path` with `len` pseudo-random (incompressible) bytes from `seed`.
fn random_file(path: &Path, len: usize, seed: u64) -> anyhow::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for c in buf.chunks_exact_mut(8) {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            c.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = left.min(buf.len());
        w.write_all(&buf[..n])?;
        left -= n;
    }
    w.flush()?;
    Ok(())
}

/// A model-shaped tree: a config, a tokenizer, four weight shards that add up to
/// `size` (less the small files), in a subfolder too.
pub fn generate_tree(root: &Path, size: usize) -> anyhow::Result<()> {
    fs::create_dir_all(root.join("tokenizer"))?;
    fs::write(
        root.join("config.json"),
        b"{\"architectures\":[\"Bench\"],\"hidden_size\":4096}\n",
    )?;
    random_file(&root.join("tokenizer/tokenizer.json"), 4099, 7)?;
    let shards = 4;
    let per = size.saturating_sub(4099 + 64) / shards;
    for i in 0..shards {
        let name = format!("model-{:05}-of-{shards:05}.safetensors", i + 1);
        random_file(&root.join(name), per + i, 1000 + i as u64)?;
    }
    Ok(())
}

fn sync_all() {
    let _ = Command::new("sync").status();
}

fn files_equal(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

struct Pair {
    label: &'static str,
    pqcc: f64,
    recipe: f64,
    pqcc_median: f64,
    recipe_median: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the benchmark.
pub fn run(a: &ModelArgs) -> anyhow::Result<()> {
    for tool in ["tar", "veritysetup"] {
        if Command::new(tool).arg("--version").output().is_err() {
            bail!("`{tool}` is not installed (apt-get install tar cryptsetup-bin)");
        }
    }
    let runs = a.runs.max(1);
    let base = match &a.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("pqcc-bench-model-{}", std::process::id())),
    };
    fs::create_dir_all(&base).with_context(|| format!("{}: cannot create", base.display()))?;
    let tree = base.join("tree");
    let _ = fs::remove_dir_all(&tree);
    eprintln!(
        "generating a {} tree in {}",
        human_size(a.size),
        tree.display()
    );
    generate_tree(&tree, a.size)?;
    // Warm the page cache for both sides: one untimed read of the whole tree.
    let _ = Command::new("tar")
        .args(["-cf", "/dev/null", "-C"])
        .arg(&tree)
        .arg(".")
        .status();
    for e in fs::read_dir(&tree)? {
        let p = e?.path();
        if p.is_file() {
            let mut f = File::open(&p)?;
            std::io::copy(&mut f, &mut std::io::sink())?;
        }
    }
    let src = source::resolve(tree.to_str().context("non-UTF-8 temp dir")?)?;
    let recipe_out = base.join("recipe");
    let pqcc_out = base.join("pqcc");
    let salt = pqcc_core::verity::Salt::from_hex(DEFAULT_SALT)?;
    let uuid = pqcc_core::verity::parse_uuid(DEFAULT_UUID)?;

    let mut pairs = Vec::new();
    let variants: &[(&'static str, bool)] = if a.no_durable {
        &[("no fsync", false)]
    } else {
        &[("no fsync", false), ("as shipped (fsync)", true)]
    };
    let mut identical = true;
    let mut root_hex = String::new();
    let mut archive_len = 0;
    for &(label, durable) in variants {
        let (mut all_p, mut all_r) = (Vec::new(), Vec::new());
        for run in 0..runs {
            // The recipe.
            let _ = fs::remove_dir_all(&recipe_out);
            fs::create_dir_all(&recipe_out)?;
            let ref_tar = recipe_out.join("model.tar");
            sync_all();
            let t = Instant::now();
            let st = Command::new("bash")
                .arg("-c")
                .arg(RECIPE)
                .arg("recipe")
                .arg(&tree)
                .arg(&ref_tar)
                .arg(if durable { "sync" } else { "" })
                .status()
                .context("running the recipe")?;
            let recipe_s = t.elapsed().as_secs_f64();
            if !st.success() {
                bail!("the recipe failed ({st})");
            }
            // pqcc, into an empty directory (no cache).
            let _ = fs::remove_dir_all(&pqcc_out);
            sync_all();
            let opts = build::Options {
                out_dir: pqcc_out.clone(),
                name: "bench".into(),
                revision: "1".into(),
                salt,
                uuid,
                expected: None,
                progress: false,
                durable,
            };
            let t = Instant::now();
            let out = match build::build(&src, &opts)? {
                Outcome::Done(o) => o,
                Outcome::Mismatch { .. } => bail!("internal error: unexpected mismatch"),
            };
            let pqcc_s = t.elapsed().as_secs_f64();
            // Same bytes?
            let ref_root = fs::read_to_string(recipe_out.join("model.tar.hash"))?;
            root_hex = hex::encode(out.root_hash);
            let same = ref_root.trim() == root_hex
                && files_equal(&ref_tar, &out.archive)?
                && files_equal(&recipe_out.join("model.tar.verity"), &out.verity)?;
            identical &= same;
            archive_len = fs::metadata(&out.archive)?.len();
            eprintln!(
                "{label} run {}: recipe {recipe_s:.3} s, pqcc {pqcc_s:.3} s, {}",
                run + 1,
                if same {
                    "identical bytes"
                } else {
                    "DIFFERENT BYTES"
                }
            );
            all_p.push(pqcc_s);
            all_r.push(recipe_s);
        }
        pairs.push(Pair {
            label,
            pqcc_median: median(&mut all_p),
            recipe_median: median(&mut all_r),
            pqcc: all_p[0],
            recipe: all_r[0],
        });
    }
    let _ = fs::remove_dir_all(&recipe_out);
    let _ = fs::remove_dir_all(&pqcc_out);
    if a.dir.is_none() {
        let _ = fs::remove_dir_all(&base);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if a.json {
        for p in &pairs {
            println!(
                "{}",
                json!({
                    "ok": true,
                    "bench": "model",
                    "variant": p.label,
                    "size": a.size,
                    "archive_len": archive_len,
                    "cores": cores,
                    "runs": runs,
                    "recipe_s": p.recipe,
                    "pqcc_s": p.pqcc,
                    "speedup": p.recipe / p.pqcc,
                    "recipe_median_s": p.recipe_median,
                    "pqcc_median_s": p.pqcc_median,
                    "speedup_median": p.recipe_median / p.pqcc_median,
                    "identical": identical,
                    "root_hash": root_hex,
                })
            );
        }
    } else {
        println!(
            "model archive of {} ({archive_len} B), {cores} cores, {runs} runs (best, median)",
            human_size(a.size)
        );
        println!(
            "{:<20} {:>10} {:>10} {:>8} {:>10} {:>10} {:>8}",
            "variant", "recipe", "pqcc", "speedup", "recipe", "pqcc", "speedup"
        );
        for p in &pairs {
            println!(
                "{:<20} {:>9.3}s {:>9.3}s {:>7.2}x {:>9.3}s {:>9.3}s {:>7.2}x",
                p.label,
                p.recipe,
                p.pqcc,
                p.recipe / p.pqcc,
                p.recipe_median,
                p.pqcc_median,
                p.recipe_median / p.pqcc_median
            );
        }
        println!(
            "bytes: {} (root hash {root_hex})",
            if identical { "identical" } else { "DIFFERENT" }
        );
    }
    if !identical {
        bail!("pqcc's archive differs from the recipe's");
    }
    Ok(())
}
