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
    /// Seal a Hugging Face-layout model directory with a data-encryption key: every
    /// tensor and file encrypted with AES-256-GCM in frames (`docs/sealed-models.md`).
    Seal(SealArgs),
    /// Unseal a sealed model directory back to the original files, byte for byte.
    Unseal(UnsealArgs),
}

/// Arguments of `pqcc model seal`.
#[derive(Debug, Args)]
pub struct SealArgs {
    /// The model directory (or a Hugging Face cache snapshot, or `ORG/NAME[@REV]` as for
    /// `pqcc model build`).
    pub source: String,
    /// The data-encryption key file: 32 raw bytes or 64 hex digits.
    #[arg(long, value_name = "KEYFILE")]
    pub key: PathBuf,
    /// The sealed directory to create (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// The salt in hex (64 digits); makes the output byte-reproducible [default: random].
    #[arg(long)]
    pub salt: Option<String>,
    /// Model name [default: ORG/NAME for Hugging Face sources, else the directory's name].
    #[arg(long)]
    pub name: Option<String>,
    /// Revision [default: the snapshot's commit, else `local`].
    #[arg(long)]
    pub revision: Option<String>,
    /// Plaintext bytes per frame (4096 to 16777216) [default: 1048576].
    #[arg(long)]
    pub frame_size: Option<u32>,
    /// Print a JSON object instead of the line.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pqcc model unseal`.
#[derive(Debug, Args)]
pub struct UnsealArgs {
    /// The sealed model directory.
    pub sealed: PathBuf,
    /// The data-encryption key file.
    #[arg(long, value_name = "KEYFILE")]
    pub key: PathBuf,
    /// The directory to create with the original files (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// The model must be this name@revision.
    #[arg(long, value_name = "NAME@REVISION")]
    pub expect_model: Option<String>,
    /// Print a JSON object instead of the line.
    #[arg(long)]
    pub json: bool,
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
    /// Seal the model with this data-encryption key first (as `pqcc model seal`) and
    /// archive the sealed directory: the archive and its verity tree cover ciphertext.
    #[arg(long, value_name = "KEYFILE")]
    pub seal_key: Option<PathBuf>,
    /// The sealing salt in hex, with --seal-key (byte-reproducible) [default: random].
    #[arg(long, requires = "seal_key")]
    pub seal_salt: Option<String>,
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

/// A staging directory removed when dropped.
struct StagedDir(PathBuf);

impl Drop for StagedDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
        ModelCommand::Seal(a) => run_seal(a),
        ModelCommand::Unseal(a) => run_unseal(a),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pqcc: error: {e:#}");
            match e.downcast_ref::<pqcc_sealed::Error>() {
                Some(s) if s.is_refusal() => EXIT_MISMATCH,
                _ => EXIT_ERROR,
            }
        }
    }
}

fn parse_salt32(hex_text: &str, what: &str) -> anyhow::Result<[u8; 32]> {
    let mut s = [0u8; 32];
    pqcc_core::wire::hex_decode(hex_text, &mut s)
        .map_err(|_| anyhow::anyhow!("{what}: 64 hex digits expected"))?;
    Ok(s)
}

fn run_seal(a: SealArgs) -> anyhow::Result<i32> {
    let dek = pqcc_sealed::read_key_file(&a.key)?;
    let salt = a
        .salt
        .as_deref()
        .map(|s| parse_salt32(s, "--salt"))
        .transpose()?;
    let src = source::resolve(&a.source)?;
    let name = a.name.unwrap_or_else(|| src.name.clone());
    let revision = a.revision.unwrap_or_else(|| src.revision.clone());
    let mut opts = pqcc_sealed::SealOptions::new(&format!("{name}@{revision}"));
    opts.salt = salt;
    if let Some(fs) = a.frame_size {
        opts.frame_size = fs;
    }
    let s = pqcc_sealed::seal_dir(&src.dir, &a.out, &dek, &opts)?;
    if a.json {
        println!(
            "{}",
            json!({
                "model": s.model_id,
                "out": s.out.display().to_string(),
                "key_id": s.key_id,
                "salt": s.salt,
                "files": s.files,
                "tensors": s.tensors,
                "plain_bytes": s.plain_bytes,
                "sealed_bytes": s.sealed_bytes,
            })
        );
    } else {
        println!("{} {}", s.model_id, s.out.display());
    }
    Ok(EXIT_OK)
}

fn run_unseal(a: UnsealArgs) -> anyhow::Result<i32> {
    let dek = pqcc_sealed::read_key_file(&a.key)?;
    if let Some(want) = &a.expect_model {
        // Checked before anything is written.
        pqcc_sealed::SealedModel::open(&a.sealed, &dek, Some(want))?;
    }
    let s = pqcc_sealed::unseal_dir(&a.sealed, &dek, &a.out, true)?;
    if a.json {
        println!(
            "{}",
            json!({
                "model": s.model_id,
                "out": s.out.display().to_string(),
                "files": s.files,
                "bytes": s.bytes,
            })
        );
    } else {
        println!("{} {}", s.model_id, s.out.display());
    }
    Ok(EXIT_OK)
}

fn run_build(a: BuildArgs) -> anyhow::Result<i32> {
    // Read the key first: a bad key fails before any work.
    let key = a
        .key
        .as_deref()
        .map(super::manifest::read_signing_key)
        .transpose()
        .context("--key")?;
    let dek = a
        .seal_key
        .as_deref()
        .map(pqcc_sealed::read_key_file)
        .transpose()?;
    let seal_salt = a
        .seal_salt
        .as_deref()
        .map(|s| parse_salt32(s, "--seal-salt"))
        .transpose()?;
    let mut src = source::resolve(&a.source)?;
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
    // --seal-key: seal into a staging directory beside the archive, archive that.
    let _staged = match &dek {
        Some(dek) => {
            std::fs::create_dir_all(&opts.out_dir)
                .with_context(|| format!("{}: cannot create", opts.out_dir.display()))?;
            let staged = StagedDir(opts.out_dir.join(format!(
                ".{}-{}.sealing-{}",
                opts.name.replace('/', "--"),
                opts.revision,
                std::process::id()
            )));
            let mut so = pqcc_sealed::SealOptions::new(&format!("{}@{}", opts.name, opts.revision));
            so.salt = seal_salt;
            let s = pqcc_sealed::seal_dir(&src.dir, &staged.0, dek, &so)?;
            eprintln!(
                "pqcc: sealed {} files ({} tensors) for {} under key id {}",
                s.files, s.tensors, s.model_id, s.key_id
            );
            src.dir = staged.0.clone();
            src.links = super::scan::Links::Refuse;
            Some(staged)
        }
        None => None,
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
