//! The `pqcc model` subcommands. Results go to stdout, diagnostics to stderr.
//! Exit codes: 0 ok, 1 verification failed, root hash mismatch, or (`build`) an existing
//! `NAME@REV` archive of other content not replaced without `--force`; 2 usage or I/O
//! error.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use pqcc_core::verity::{self, Salt};
use serde_json::json;

use super::{
    DEFAULT_SALT, DEFAULT_UUID,
    build::{self, Conflict, Outcome, Policy},
    scan::{self, Links, Metadata},
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
    /// Archive version-control and download metadata too: `.git` (anywhere) and
    /// `.cache/huggingface/` (at the top). Left out by default, so that the root hash
    /// depends on the model and not on how it was fetched.
    #[arg(long)]
    pub keep_vcs_metadata: bool,
    /// Replace an existing archive of the same NAME@REV even when this build's root
    /// hash differs from it (without it: exit 1, naming both root hashes, nothing
    /// replaced).
    #[arg(long)]
    pub force: bool,
    /// Print a JSON object instead of the line.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pqcc model verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The archive.
    pub archive: PathBuf,
    /// The root hash, or a `name@revision:roothash` identity: then the archive must
    /// also be that name and revision (by its build stamp ARCHIVE.stamp, else its file
    /// name `ORG--NAME@REV.tar`), or the check fails (exit 1, naming what differs).
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
            if e.downcast_ref::<Conflict>().is_some() {
                return EXIT_MISMATCH;
            }
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
    check_snapshot_links(&src)?;
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
                "ok": true,
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

/// For a Hugging Face snapshot, refuses links that lead outside its `blobs/` before
/// the sealing code (which follows links itself) reads anything.
fn check_snapshot_links(src: &source::Source) -> anyhow::Result<()> {
    if src.links == Links::FollowFiles {
        scan::scan(&src.dir, src.links, Metadata::Keep)?;
    }
    Ok(())
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
                "ok": true,
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
    let mut policy = Policy {
        force: a.force,
        metadata: if a.keep_vcs_metadata {
            Metadata::Keep
        } else {
            Metadata::Leave
        },
    };
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
            // The sealing code reads every file and follows links itself: check the
            // source first as the archive would be (links, metadata).
            let pre = scan::scan(&src.dir, src.links, policy.metadata)?;
            if !pre.left_out.is_empty() {
                anyhow::bail!(
                    "{}: holds {} (version-control and download metadata), which --seal-key \
                     would seal into the archive; remove it, or pass --keep-vcs-metadata",
                    src.dir.display(),
                    pre.left_out.join(", ")
                );
            }
            let mut so = pqcc_sealed::SealOptions::new(&format!("{}@{}", opts.name, opts.revision));
            so.salt = seal_salt;
            let s = pqcc_sealed::seal_dir(&src.dir, &staged.0, dek, &so)?;
            eprintln!(
                "pqcc: sealed {} files ({} tensors) for {} under key id {}",
                s.files, s.tensors, s.model_id, s.key_id
            );
            src.dir = staged.0.clone();
            src.links = Links::Refuse;
            // Everything sealed belongs to the sealed model (its manifest lists it).
            policy.metadata = Metadata::Keep;
            Some(staged)
        }
        None => None,
    };
    match build::build_with(&src, &opts, policy)? {
        Outcome::Done(out) => {
            if !out.left_out.is_empty() {
                eprintln!(
                    "pqcc: left out {} (version-control and download metadata; \
                     --keep-vcs-metadata keeps them)",
                    out.left_out.join(", ")
                );
            }
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
                    "ok": true,
                    "name": out.name,
                    "revision": out.revision,
                    "root_hash": hex::encode(out.root_hash),
                    "archive": out.archive.display().to_string(),
                    "verity": out.verity.display().to_string(),
                    "cached": out.cached,
                    "manifest": manifest.map(|p| p.display().to_string()),
                    "left_out": out.left_out,
                });
                println!("{v}");
            } else {
                println!("{}", out.line());
            }
            Ok(EXIT_OK)
        }
        Outcome::Mismatch { expected, actual } => {
            if a.json {
                println!(
                    "{}",
                    json!({
                        "ok": false,
                        "name": opts.name,
                        "revision": opts.revision,
                        "expected_root_hash": hex::encode(expected),
                        "root_hash": hex::encode(actual),
                        "result": "root hash mismatch; no archive was kept",
                    })
                );
            }
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
    // ROOTHASH, or NAME@REV:ROOTHASH: then the archive must be NAME@REV too.
    let (wanted, hash_text) = match a.root.rsplit_once(':') {
        Some((id, h)) => {
            let (name, rev) = id
                .rsplit_once('@')
                .filter(|(n, r)| !n.is_empty() && !r.is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!("{}: expected ROOTHASH or NAME@REV:ROOTHASH", a.root)
                })?;
            (Some((name, rev)), h)
        }
        None => (None, a.root.as_str()),
    };
    let root =
        verity::parse_root_hash(hash_text).map_err(|e| anyhow::anyhow!("{}: {e}", a.root))?;
    let verity_path = a
        .verity
        .clone()
        .unwrap_or_else(|| verify::beside_path(&a.archive, ".verity"));
    let finding = verify::verify(&a.archive, &verity_path, &root)?;
    let content_ok = matches!(finding, Finding::Ok { .. });
    // The name and revision, once the content matched: from the build stamp, else
    // the file name; an identity that cannot be confirmed is not confirmed.
    let identity_problem = match (content_ok, wanted) {
        (true, Some((name, rev))) => match verify::archive_identity(&a.archive)? {
            None => Some(format!(
                "cannot confirm {name}@{rev}: {} has no build stamp ({}) and its file name is                  not NAME@REV.tar; give the bare root hash to check the content only",
                a.archive.display(),
                verify::beside_path(&a.archive, ".stamp").display()
            )),
            Some((have_name, have_rev, from)) => {
                let mut diffs = Vec::new();
                if have_name != name {
                    diffs.push(format!("name differs: {have_name:?}, not {name:?}"));
                }
                if have_rev != rev {
                    diffs.push(format!("revision differs: {have_rev:?}, not {rev:?}"));
                }
                (!diffs.is_empty()).then(|| {
                    format!(
                        "the archive is {have_name}@{have_rev} (from {from}): {}",
                        diffs.join("; ")
                    )
                })
            }
        },
        _ => None,
    };
    let ok = content_ok && identity_problem.is_none();
    if a.json {
        let mut v = json!({
            "archive": a.archive.display().to_string(),
            "root_hash": hex::encode(root),
            "ok": ok,
            "result": identity_problem.clone().unwrap_or_else(|| finding.to_string()),
        });
        if let Some((name, rev)) = wanted {
            v["name"] = name.into();
            v["revision"] = rev.into();
            v["identity_ok"] = (content_ok && identity_problem.is_none()).into();
        }
        println!("{v}");
    } else if ok {
        println!("ok {} {}", hex::encode(root), a.archive.display());
    }
    if ok {
        Ok(EXIT_OK)
    } else {
        match identity_problem {
            Some(p) => eprintln!("pqcc: {}: {p}", a.archive.display()),
            None => eprintln!("pqcc: {}: {finding}", a.archive.display()),
        }
        Ok(EXIT_MISMATCH)
    }
}
