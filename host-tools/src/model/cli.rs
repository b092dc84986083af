//! The `pqcc model` subcommands. Results go to stdout, diagnostics to stderr.
//! Exit codes: 0 ok, 1 verification failed or root hash mismatch, 2 usage or I/O error.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use pqcc_core::verity::{self, Salt};
use serde_json::json;

use super::{
    DEFAULT_SALT, DEFAULT_UUID,
    build::{self, Outcome},
    source,
    verify::{self, Finding},
};

/// Exit status: success.
pub const EXIT_OK: i32 = 0;
/// Exit status: a verification failed or a root hash differs from the expected one.
pub const EXIT_MISMATCH: i32 = 1;
/// Exit status: a usage or I/O error.
pub const EXIT_ERROR: i32 = 2;

/// `pqcc model …`
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Build a reproducible model archive (tar + dm-verity). Prints one line on
    /// stdout: `name@revision:roothash /abs/path/archive.tar`.
    Build(BuildArgs),
    /// Re-check an archive against its hash file and a root hash.
    Verify(VerifyArgs),
}

/// Arguments of `pqcc model build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// A model directory, a Hugging Face cache snapshot
    /// (…/models--ORG--NAME/snapshots/REV), or `ORG/NAME[@REV]` downloaded from
    /// $HF_ENDPOINT into the Hugging Face cache (the cache only with HF_HUB_OFFLINE=1);
    /// any of them may end in :ROOTHASH, the root hash the build must give.
    pub source: String,
    /// Output directory [default: $XDG_CACHE_HOME/pqcc/models or ~/.cache/pqcc/models].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Model name [default: ORG/NAME for Hugging Face sources, else the directory's name].
    #[arg(long)]
    pub name: Option<String>,
    /// Revision [default: the snapshot's commit, else `local`].
    #[arg(long)]
    pub revision: Option<String>,
    /// dm-verity salt in hex (`-` for none) [default: the recipe's
    /// 00010203040506070809101a1b1c1d1e1f].
    #[arg(long)]
    pub salt: Option<String>,
    /// dm-verity UUID [default: the recipe's 645ac31f-7610-42e1-8434-9d733699eac0].
    #[arg(long)]
    pub uuid: Option<String>,
    /// The root hash the build must give (same as a :ROOTHASH suffix).
    #[arg(long)]
    pub expect: Option<String>,
    /// Sign a ModelManifest with this ML-DSA-65 secret key file (`pqcc keygen`) and
    /// write it beside the archive as ARCHIVE.manifest.
    #[arg(long, value_name = "SIGNING_KEY")]
    pub key: Option<PathBuf>,
    /// Print a JSON object instead of the line.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pqcc model verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The archive.
    pub archive: PathBuf,
    /// The root hash, or a `name@revision:roothash` identity.
    pub root: String,
    /// The hash file [default: ARCHIVE.verity].
    #[arg(long)]
    pub verity: Option<PathBuf>,
    /// Print a JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The default output directory.
pub fn default_out_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("pqcc/models");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/pqcc/models"))
        .unwrap_or_else(|| PathBuf::from("pqcc-models"))
}

/// Runs a `pqcc model` subcommand and returns the exit status.
pub fn run(cmd: ModelCommand) -> i32 {
    let r = match cmd {
        ModelCommand::Build(a) => run_build(a),
        ModelCommand::Verify(a) => run_verify(a),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pqcc: error: {e:#}");
            EXIT_ERROR
        }
    }
}

fn run_build(a: BuildArgs) -> anyhow::Result<i32> {
    // Read the key first: a bad key fails before any work.
    let key = a
        .key
        .as_deref()
        .map(super::manifest::read_signing_key)
        .transpose()
        .context("--key")?;
    let src = source::resolve(&a.source)?;
    let flag_expected = a
        .expect
        .as_deref()
        .map(|h| verity::parse_root_hash(h.rsplit(':').next().unwrap_or(h)))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--expect: {e}"))?;
    let expected = match (src.expected, flag_expected) {
        (Some(a), Some(b)) if a != b => anyhow::bail!("--expect and the :ROOTHASH suffix differ"),
        (a, b) => a.or(b),
    };
    let salt = Salt::from_hex(a.salt.as_deref().unwrap_or(DEFAULT_SALT))
        .map_err(|e| anyhow::anyhow!("--salt: {e}"))?;
    let uuid = verity::parse_uuid(a.uuid.as_deref().unwrap_or(DEFAULT_UUID))
        .map_err(|e| anyhow::anyhow!("--uuid: {e}"))?;
    let opts = build::Options {
        out_dir: a.out.unwrap_or_else(default_out_dir),
        name: a.name.unwrap_or_else(|| src.name.clone()),
        revision: a.revision.unwrap_or_else(|| src.revision.clone()),
        salt,
        uuid,
        expected,
        progress: true,
        durable: true,
    };
    match build::build(&src, &opts)? {
        Outcome::Done(out) => {
            let manifest = match &key {
                Some(k) => {
                    let p = super::manifest::write_signed(&out, &opts.salt, k)?;
                    eprintln!("pqcc: signed ModelManifest {}", p.display());
                    Some(p)
                }
                None => None,
            };
            if a.json {
                let v = json!({
                    "name": out.name,
                    "revision": out.revision,
                    "root_hash": hex::encode(out.root_hash),
                    "archive": out.archive.display().to_string(),
                    "verity": out.verity.display().to_string(),
                    "cached": out.cached,
                    "manifest": manifest.map(|p| p.display().to_string()),
                });
                println!("{v}");
            } else {
                println!("{}", out.line());
            }
            Ok(EXIT_OK)
        }
        Outcome::Mismatch { expected, actual } => {
            eprintln!(
                "pqcc: root hash mismatch for {}@{}\n  expected {}\n  actual   {}\nno archive was kept",
                opts.name,
                opts.revision,
                hex::encode(expected),
                hex::encode(actual)
            );
            Ok(EXIT_MISMATCH)
        }
    }
}

fn run_verify(a: VerifyArgs) -> anyhow::Result<i32> {
    let hash_text = a.root.rsplit(':').next().unwrap_or(&a.root);
    let root =
        verity::parse_root_hash(hash_text).map_err(|e| anyhow::anyhow!("{}: {e}", a.root))?;
    let verity_path = a.verity.unwrap_or_else(|| {
        let mut p = a.archive.clone().into_os_string();
        p.push(".verity");
        PathBuf::from(p)
    });
    let finding = verify::verify(&a.archive, &verity_path, &root)?;
    let ok = matches!(finding, Finding::Ok { .. });
    if a.json {
        println!(
            "{}",
            json!({
                "archive": a.archive.display().to_string(),
                "root_hash": hex::encode(root),
                "ok": ok,
                "result": finding.to_string(),
            })
        );
    } else if ok {
        println!("ok {} {}", hex::encode(root), a.archive.display());
    }
    if ok {
        Ok(EXIT_OK)
    } else {
        eprintln!("pqcc: {}: {finding}", a.archive.display());
        Ok(EXIT_MISMATCH)
    }
}
