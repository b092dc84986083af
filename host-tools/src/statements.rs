//! Signed statements on the command line: `pqcc sign`, `pqcc verify`, `pqcc info` and
//! `pqcc policy check` (usage and exit codes in `docs/cli.md`).
//!
//! The envelopes are exactly [`pqcc_core::statement::sign`]'s output (binary postcard,
//! ML-DSA-65 over every field, context `pqcc/v1/<kind>`), written atomically: a
//! temporary file, fsync, rename (or link without `--force`).
//!
//! ## What `pqcc verify` checks, and what it trusts
//! - The envelope is read bounded ([`SIGNED_MAX_LEN`]) and decoded strictly; anything
//!   malformed (truncated, oversized, trailing bytes, unknown version, kind or
//!   algorithm) is an error (exit 2) and, with `--audit-log`, an `invalid` record.
//! - The signer's key comes **only** from the `--trust` files (ML-DSA-65 public keys).
//!   The envelope names a signer id; an id no trusted key hashes to is
//!   `unknown-signer`, a signature that does not verify is `bad-signature` (exit 1).
//! - Driver modules and eBPF objects: the artifact's actual bytes are always hashed
//!   (SHA3-256, one streaming read) and compared with the signed hash and length; no
//!   `--artifact` is `no-artifact` (exit 1), never a pass. eBPF objects with `--policy`
//!   go through the ordered [`LoadPolicy`] read from TOML ([`PolicyFile`]).
//! - Memory reports: the verifier's own `--nonce`, `--workload`, `--platform`,
//!   `--pin ID=HEX` hashes and `--max-validity`, against the system clock
//!   ([`MemoryPolicy`]); the report's own claims set none of them.
//! - Model manifests: signature and trust, and the root hash if `--root-hash` is given.
//!   The archive's content is the dm-verity tree's business (`pqcc model verify`, the
//!   guest's dm-verity target), not this command's.
//!
//! `pqcc info` decodes strictly but verifies nothing, and says so on every output.

pub mod regions;

use std::{
    fmt::Write as _,
    fs::File,
    io::Read as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, anyhow, bail};
use clap::{
    Args, Subcommand, ValueEnum,
    builder::{PossibleValuesParser, TypedValueParser as _},
};
use pqcc_core::{
    Error as CoreError,
    attest::{Attester, RegionSpec, Schedule},
    error::ErrorKind,
    hash,
    policy::{
        Action, Artifact, BpfLoad, Decision, DenyReason, DriverPolicy, LoadPolicy, MemoryPolicy,
        PinnedRegion, Rule, check_artifact,
    },
    secret::ct_eq,
    sign::{SignerId, SigningKey, VerifyingKey},
    statement::{
        self, AnyStatement, BpfProgType, BpfProgram, DriverModule, Envelope, Kind, MemoryReport,
        ModelManifest, SIGNED_MAX_LEN, Statement, VerityHash,
    },
    wire::{Bytes, Platform},
};
use serde_json::{Map, Value, json};

use crate::{audit, hashing, keys, rng::OsRng};

/// Default envelope file suffix: `FILE.pqsig`.
pub const ENVELOPE_SUFFIX: &str = "pqsig";
/// Largest policy file `pqcc` reads.
pub const MAX_POLICY_LEN: u64 = 1 << 20;
/// Mode of envelope files (they are public).
const ENVELOPE_MODE: u32 = 0o644;

/// The answer of a command that says yes or no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Valid / allowed / clean (exit 0).
    Pass,
    /// Invalid / denied / findings (exit 1); the reason is already on stdout.
    Fail,
}

// ---------------------------------------------------------------------------------
// Arguments

/// `pqcc sign …`.
#[derive(Debug, Subcommand)]
pub enum SignCommand {
    /// Sign a kernel driver module: its SHA3-256 and length, name and version.
    Driver(SignDriverArgs),
    /// Sign an eBPF object: its SHA3-256 and length, name, program type, attach point
    /// and author (what `pqc-bpf sign` does, with a key you keep).
    Bpf(SignBpfArgs),
    /// Measure memory regions (files, devices, `/proc/<pid>/mem` ranges) and sign a
    /// report answering a verifier's nonce.
    MemoryReport(SignMemoryArgs),
    /// Sign a model archive's dm-verity identity (name@revision:roothash).
    Model(SignModelArgs),
}

/// Options every `pqcc sign` kind takes.
#[derive(Debug, Args)]
pub struct SignOutput {
    /// ML-DSA-65 secret key file (`pqcc keygen --alg ml-dsa-65`).
    #[arg(long, value_name = "PATH")]
    pub key: PathBuf,
    /// Envelope file to write (default: FILE.pqsig).
    #[arg(
        short = 'o',
        long = "output",
        visible_alias = "out",
        value_name = "OUT"
    )]
    pub output: Option<PathBuf>,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `pqcc sign driver`.
#[derive(Debug, Args)]
pub struct SignDriverArgs {
    /// The module file (e.g. nvidia.ko).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Key, output file and output format.
    #[command(flatten)]
    pub out: SignOutput,
    /// Module name (default: FILE's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Module version.
    #[arg(long = "version", value_name = "VERSION", default_value = "")]
    pub module_version: String,
}

/// `pqcc sign bpf`.
#[derive(Debug, Args)]
pub struct SignBpfArgs {
    /// The eBPF object file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Key, output file and output format.
    #[command(flatten)]
    pub out: SignOutput,
    /// Program name (default: FILE's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Program type it must be loaded as.
    #[arg(long, visible_alias = "type", value_name = "TYPE", value_parser = prog_type_parser())]
    pub prog_type: BpfProgType,
    /// Where it attaches (kernel function, tracepoint, …).
    #[arg(long, default_value = "")]
    pub attach_point: String,
    /// Who wrote it (informational; who signed it is the key's did).
    #[arg(long, default_value = "")]
    pub author: String,
}

/// `pqcc sign memory-report`.
#[derive(Debug, Args)]
pub struct SignMemoryArgs {
    /// A file to measure whole, as a region whose id is its file name (optional; OUT
    /// is then required).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Key, output file and output format.
    #[command(flatten)]
    pub out: SignOutput,
    /// The workload the regions belong to.
    #[arg(long, value_name = "ID")]
    pub workload: String,
    /// The TEE platform this runs on.
    #[arg(long, value_enum)]
    pub platform: PlatformArg,
    /// The verifier's challenge (64 hex).
    #[arg(long, value_name = "HEX", value_parser = parse_hash)]
    pub nonce: [u8; 32],
    /// Seconds the report stays valid.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub ttl: u64,
    /// A region: `ID=PATH[@OFFSET+LEN][:PROT]`, e.g. `text=/proc/42/mem@0x400000+4096:r-x`
    /// or `weights=/models/w.bin` (whole file, `r--`). Repeatable.
    #[arg(long = "region", value_name = "SPEC", value_parser = regions::RegionArg::parse)]
    pub regions: Vec<regions::RegionArg>,
}

/// `pqcc sign model`.
#[derive(Debug, Args)]
pub struct SignModelArgs {
    /// The model archive (its length is the data size unless --data-size is given).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Key, output file and output format.
    #[command(flatten)]
    pub out: SignOutput,
    /// Model name.
    #[arg(long)]
    pub name: String,
    /// Model revision.
    #[arg(long)]
    pub revision: String,
    /// dm-verity root hash (SHA-256, 64 hex), as `veritysetup format` prints it.
    #[arg(
        long,
        value_name = "HEX",
        value_parser = parse_hash,
        required_unless_present = "verity",
        conflicts_with = "verity"
    )]
    pub root_hash: Option<[u8; 32]>,
    /// The archive's dm-verity hash file (with superblock, as `pqcc model build` or
    /// `veritysetup format` write it): FILE is checked block by block against it, and
    /// the root hash, salt and data size are taken from it; a --salt or --data-size
    /// given as well must agree.
    #[arg(long, value_name = "HASHFILE")]
    pub verity: Option<PathBuf>,
    /// dm-verity salt (hex; `-` for an empty salt). With --root-hash it is required
    /// unless FILE has a hash file (FILE.verity) or build stamp (FILE.stamp) beside it,
    /// whose salt is then used; one given as well must agree with it.
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    pub salt: Option<HexBytes>,
    /// Data device length in bytes (default: FILE's length, or the tree's with --verity).
    #[arg(long, value_name = "N")]
    pub data_size: Option<u64>,
    /// dm-verity data block size.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub data_block_size: u32,
    /// dm-verity hash block size.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub hash_block_size: u32,
}

/// The dm-verity identity `pqcc sign model` signs: from the flags, or from a hash
/// file that FILE was checked against.
struct ModelVerity {
    root_hash: [u8; 32],
    salt: Vec<u8>,
    data_size: u64,
}

impl SignModelArgs {
    fn model_verity(&self) -> anyhow::Result<ModelVerity> {
        let Some(hash_file) = &self.verity else {
            let root_hash = self
                .root_hash
                .ok_or_else(|| anyhow!("give --root-hash or --verity"))?;
            let data_size = match self.data_size {
                Some(n) => n,
                None => std::fs::metadata(&self.file)
                    .with_context(|| format!("stat {}", self.file.display()))?
                    .len(),
            };
            return Ok(ModelVerity {
                root_hash,
                salt: self.salt_for_root_hash()?,
                data_size,
            });
        };
        if self.data_block_size != 4096 || self.hash_block_size != 4096 {
            bail!("--verity: model archives use 4096-byte data and hash blocks");
        }
        let (finding, tree) = crate::model::verify::read_tree(&self.file, hash_file)?;
        if !matches!(finding, crate::model::verify::Finding::Ok { .. }) {
            bail!(
                "refusing to sign {}: it does not match its hash file {}: {finding}",
                self.file.display(),
                hash_file.display()
            );
        }
        let data_size = tree
            .data_blocks
            .checked_mul(4096)
            .ok_or_else(|| anyhow!("{}: data block count overflows", hash_file.display()))?;
        if let Some(n) = self.data_size
            && n != data_size
        {
            bail!("--data-size {n} disagrees with the hash file, which covers {data_size} bytes");
        }
        if let Some(s) = &self.salt
            && s.0 != tree.salt.as_bytes()
        {
            bail!(
                "--salt {} disagrees with the hash file's salt {}",
                hex::encode(&s.0),
                hex::encode(tree.salt.as_bytes())
            );
        }
        eprintln!(
            "checked {} against {}: {finding}, root hash {}",
            self.file.display(),
            hash_file.display(),
            hex::encode(tree.root)
        );
        Ok(ModelVerity {
            root_hash: tree.root,
            salt: tree.salt.as_bytes().to_vec(),
            data_size,
        })
    }
}

impl SignModelArgs {
    /// The salt to sign with `--root-hash`: the salt is part of the archive's identity
    /// (the guest opens the archive with it), so it is never assumed. It is --salt,
    /// checked against the archive's hash file or build stamp when FILE has one, or
    /// else the salt those give.
    fn salt_for_root_hash(&self) -> anyhow::Result<Vec<u8>> {
        let archive = crate::model::verify::archive_salt(&self.file, None)?;
        match (&self.salt, archive) {
            (Some(given), Some((have, from))) if given.0 != have => bail!(
                "--salt {} disagrees with the salt of {}, {} (from {from}); refusing to sign \
                 a manifest the archive does not match",
                hex_or_empty(&given.0),
                self.file.display(),
                hex_or_empty(&have)
            ),
            (Some(given), _) => Ok(given.0.clone()),
            (None, Some((have, from))) => {
                eprintln!("salt {} (from {from})", hex_or_empty(&have));
                Ok(have)
            }
            (None, None) => bail!(
                "{}: the dm-verity salt is part of the signed manifest, and there is no hash \
                 file or build stamp beside it ({}, {}) to read it from: give --salt HEX (`-` \
                 for an empty salt; `pqcc model build` uses {}) or --verity HASHFILE",
                self.file.display(),
                crate::model::verify::beside_path(&self.file, ".verity").display(),
                crate::model::verify::beside_path(&self.file, ".stamp").display(),
                crate::model::DEFAULT_SALT
            ),
        }
    }
}

/// `hex`, or `(empty)` for no bytes.
fn hex_or_empty(b: &[u8]) -> String {
    if b.is_empty() {
        "(empty)".into()
    } else {
        hex::encode(b)
    }
}

/// Bytes given in hex on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HexBytes(pub Vec<u8>);

/// A TEE platform on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlatformArg {
    /// No TEE (insecure; for tests).
    None,
    /// AMD SEV-SNP (`snp` is read too).
    #[value(name = "sev-snp", alias = "snp")]
    SevSnp,
    /// Intel TDX.
    Tdx,
}

impl From<PlatformArg> for Platform {
    fn from(p: PlatformArg) -> Self {
        match p {
            PlatformArg::None => Platform::InsecureNone,
            PlatformArg::SevSnp => Platform::SevSnp,
            PlatformArg::Tdx => Platform::Tdx,
        }
    }
}

/// A statement kind on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Driver module.
    #[value(alias = "driver-module")]
    Driver,
    /// eBPF program.
    #[value(alias = "bpf-program")]
    Bpf,
    /// Memory report.
    MemoryReport,
    /// Model manifest.
    #[value(alias = "model-manifest")]
    Model,
}

impl From<KindArg> for Kind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Driver => Kind::DriverModule,
            KindArg::Bpf => Kind::BpfProgram,
            KindArg::MemoryReport => Kind::MemoryReport,
            KindArg::Model => Kind::ModelManifest,
        }
    }
}

/// `pqcc verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The signed envelope (FILE.pqsig).
    #[arg(value_name = "ENVELOPE")]
    pub envelope: PathBuf,
    /// An ML-DSA-65 public key file to trust. One file per flag: repeat `--trust` for
    /// several keys (so that `--trust KEY ENVELOPE` leaves ENVELOPE alone). These are
    /// the only keys verification uses.
    #[arg(long, value_name = "PUB", required = true)]
    pub trust: Vec<PathBuf>,
    /// The artifact the statement is about (driver module, eBPF object): its actual
    /// bytes are hashed and compared. Without it a driver or eBPF statement is denied.
    #[arg(long, value_name = "FILE")]
    pub artifact: Option<PathBuf>,
    /// The kind ENVELOPE must be (any otherwise).
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// eBPF load policy (TOML, see `docs/cli.md`); without it, any trusted signer is
    /// admitted.
    #[arg(long, value_name = "POLICY.toml")]
    pub policy: Option<PathBuf>,
    /// eBPF: the program type the loader will load it as (default: the signed one).
    #[arg(long, value_name = "TYPE", value_parser = prog_type_parser())]
    pub load_as: Option<BpfProgType>,
    /// Driver / eBPF without --policy: cap on the artifact's actual length in bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_size: Option<u64>,
    /// Append one record per decision to this hash-chained audit log.
    #[arg(long, value_name = "LOG")]
    pub audit_log: Option<PathBuf>,
    /// Who asks, for the audit log (default: $USER).
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
    /// Memory report: the challenge you sent (64 hex).
    #[arg(long, value_name = "HEX", value_parser = parse_hash)]
    pub nonce: Option<[u8; 32]>,
    /// Memory report: a region's expected SHA3-256, ID=HEX (repeatable). Every pinned
    /// region must be reported, and nothing else.
    #[arg(long = "pin", value_name = "ID=HEX", value_parser = parse_pin)]
    pub pins: Vec<(String, [u8; 32])>,
    /// Memory report: the workload it must be about.
    #[arg(long, value_name = "ID")]
    pub workload: Option<String>,
    /// Memory report: the platform it must come from.
    #[arg(long, value_enum)]
    pub platform: Option<PlatformArg>,
    /// Memory report: the longest validity (expires_at - issued_at) accepted.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub max_validity: u64,
    /// Model manifest: the dm-verity root hash it must name (64 hex).
    #[arg(long, value_name = "HEX", value_parser = parse_hash)]
    pub root_hash: Option<[u8; 32]>,
    /// Model manifest: the dm-verity salt it must name (hex; `-` for an empty salt).
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    pub salt: Option<HexBytes>,
    /// Model manifest: the archive it must describe. ARCHIVE is checked block by block
    /// against its hash file (ARCHIVE.verity, or --verity), and the manifest's root
    /// hash, salt, data size and block sizes must be the tree's.
    #[arg(long, value_name = "ARCHIVE")]
    pub archive: Option<PathBuf>,
    /// Model manifest: the hash file of --archive [default: ARCHIVE.verity].
    #[arg(long, value_name = "HASHFILE", requires = "archive")]
    pub verity: Option<PathBuf>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `pqcc info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The signed envelope.
    #[arg(value_name = "ENVELOPE")]
    pub envelope: PathBuf,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `pqcc policy …`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Parse an eBPF load policy and list what a reviewer should look at: exit 0 when
    /// clean, 1 with findings, 2 when it does not parse.
    Check(PolicyCheckArgs),
}

/// `pqcc policy check`.
#[derive(Debug, Args)]
pub struct PolicyCheckArgs {
    /// The policy file (TOML).
    #[arg(value_name = "POLICY.toml")]
    pub policy: PathBuf,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

fn prog_type_parser() -> impl clap::builder::TypedValueParser<Value = BpfProgType> {
    PossibleValuesParser::new(BpfProgType::ALL.map(BpfProgType::name))
        .map(|s| BpfProgType::from_name(&s).unwrap_or(BpfProgType::Unknown))
}

fn parse_hex(s: &str) -> Result<HexBytes, String> {
    if s == "-" {
        return Ok(HexBytes(Vec::new()));
    }
    hex::decode(s)
        .map(HexBytes)
        .map_err(|e| format!("not hex: {e}"))
}

/// Parses 64 hex digits.
fn parse_hash(s: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| "expected 64 hex digits".to_string())?;
    Ok(out)
}

fn parse_pin(s: &str) -> Result<(String, [u8; 32]), String> {
    let (id, h) = s
        .split_once('=')
        .ok_or_else(|| "expected ID=HEX".to_string())?;
    if id.is_empty() {
        return Err("the region id is empty".into());
    }
    Ok((id.to_owned(), parse_hash(h)?))
}

// ---------------------------------------------------------------------------------
// Helpers

fn now_secs() -> anyhow::Result<u64> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs())
}

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86400;
    let rem = secs % 86400;
    // Civil date from a day count (days since 1970-01-01), by 400-year eras of
    // 146097 days, with years starting on 1 March so the leap day is last.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Reads at most `max` bytes of `path`; `Ok(None)` when it is longer.
fn read_bounded(path: &Path, max: u64) -> anyhow::Result<Option<Vec<u8>>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok((buf.len() as u64 <= max).then_some(buf))
}

fn default_output(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".");
    s.push(ENVELOPE_SUFFIX);
    PathBuf::from(s)
}

fn file_stem(file: &Path) -> anyhow::Result<String> {
    file.file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .with_context(|| format!("{}: no usable file name; give --name", file.display()))
}

fn signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let sk = keys::read_secret_key(path)?;
    sk.signing_key()
        .with_context(|| format!("{}: --key needs an ML-DSA-65 secret key", path.display()))
}

fn hexs(b: &[u8]) -> String {
    hex::encode(b)
}

fn prot_str(p: statement::Protection) -> String {
    format!("{p:?}")
}

// ---------------------------------------------------------------------------------
// sign

/// Runs `pqcc sign KIND …`: writes the envelope and prints what was signed.
pub fn sign(cmd: &SignCommand) -> anyhow::Result<()> {
    let now = now_secs()?;
    let mut buf = vec![0u8; SIGNED_MAX_LEN];
    let mut rng = OsRng.unwrap_err();
    let (out, file, len, fields) = match cmd {
        SignCommand::Driver(a) => {
            let key = signing_key(&a.out.key)?;
            let (sha3_256, size) = hashing::sha3_256_file(&a.file)?;
            let name = match &a.name {
                Some(n) => n.clone(),
                None => file_stem(&a.file)?,
            };
            let body = DriverModule {
                name: &name,
                version: &a.module_version,
                sha3_256,
                size,
            };
            let len = statement::sign(&body, &key, now, &mut rng, &mut buf)
                .map_err(|e| anyhow!("signing the driver statement: {e}"))?;
            (&a.out, Some(a.file.as_path()), len, driver_json(&body))
        }
        SignCommand::Bpf(a) => {
            let key = signing_key(&a.out.key)?;
            let (sha3_256, size) = hashing::sha3_256_file(&a.file)?;
            let name = match &a.name {
                Some(n) => n.clone(),
                None => file_stem(&a.file)?,
            };
            let body = BpfProgram {
                name: &name,
                prog_type: a.prog_type,
                attach_point: &a.attach_point,
                author: &a.author,
                sha3_256,
                size,
            };
            let len = statement::sign(&body, &key, now, &mut rng, &mut buf)
                .map_err(|e| anyhow!("signing the eBPF statement: {e}"))?;
            (&a.out, Some(a.file.as_path()), len, bpf_json(&body))
        }
        SignCommand::MemoryReport(a) => {
            if a.out.output.is_none() && a.file.is_none() {
                bail!("give -o OUT (there is no FILE to name the envelope after)");
            }
            let key = signing_key(&a.out.key)?;
            let mut args = Vec::new();
            if let Some(f) = &a.file {
                let id = f
                    .file_name()
                    .and_then(|s| s.to_str())
                    .with_context(|| format!("{}: no usable file name", f.display()))?;
                args.push(regions::RegionArg {
                    id: id.to_owned(),
                    path: f.clone(),
                    range: None,
                    protection: statement::Protection::READ,
                });
            }
            args.extend(a.regions.iter().cloned());
            if args.is_empty() {
                bail!("a memory report needs at least one region (FILE or --region)");
            }
            let (mut source, owned) = regions::FileRegions::open(&args)?;
            let specs: Vec<RegionSpec<'_>> = owned.iter().map(regions::Region::spec).collect();
            let schedule = Schedule {
                interval: a.ttl,
                validity: a.ttl,
            };
            let mut att = Attester::new(
                &key,
                &a.workload,
                a.platform.into(),
                &specs,
                schedule,
                now,
            )
            .map_err(|e| {
                anyhow!(
                    "memory report settings: {e} (workload 1..=128 bytes, 1..=32 regions with \
                     unique ids of 1..=64 bytes, --ttl > 0)"
                )
            })?;
            let done = att
                .attest(&mut source, now, &a.nonce, &mut rng, &mut buf)
                .map_err(|e| anyhow!("measuring regions: {e}"))?;
            // Show what was signed: decode our own output (cannot fail on it).
            let env = Envelope::decode(&buf[..done.len])
                .map_err(|e| anyhow!("re-reading the report: {e}"))?;
            let body = MemoryReport::decode(env.body)
                .map_err(|e| anyhow!("re-reading the report: {e}"))?;
            (&a.out, a.file.as_deref(), done.len, memory_json(&body))
        }
        SignCommand::Model(a) => {
            // The archive is checked first: the secret key is read only to sign.
            let v = a.model_verity()?;
            let key = signing_key(&a.out.key)?;
            let body = ModelManifest {
                name: &a.name,
                revision: &a.revision,
                root_hash: Bytes(&v.root_hash),
                salt: Bytes(&v.salt),
                data_size: v.data_size,
                hash_algorithm: VerityHash::Sha256,
                data_block_size: a.data_block_size,
                hash_block_size: a.hash_block_size,
            };
            body.validate().map_err(|e| {
                anyhow!(
                    "model manifest: {e} (name 1..=128 bytes, revision 1..=64, salt ≤ 256 \
                     bytes, block sizes powers of two in 512..=65536, data size a multiple of \
                     the data block size)"
                )
            })?;
            let len = statement::sign(&body, &key, now, &mut rng, &mut buf)
                .map_err(|e| anyhow!("signing the model manifest: {e}"))?;
            (&a.out, Some(a.file.as_path()), len, model_json(&body))
        }
    };
    let env = &buf[..len];
    let path = match (&out.output, file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => default_output(f),
        (None, None) => bail!("give -o OUT"),
    };
    keys::write_file_atomic(&path, env, ENVELOPE_MODE, out.force)?;
    let decoded = Envelope::decode(env).map_err(|e| anyhow!("re-reading the envelope: {e}"))?;
    eprintln!("wrote {} ({len} bytes)", path.display());
    if out.json {
        let mut m = Map::new();
        m.insert("ok".into(), true.into());
        m.extend(envelope_json(&decoded));
        m.insert("envelope".into(), path.display().to_string().into());
        m.insert("envelope_bytes".into(), len.into());
        m.insert("statement".into(), fields);
        println!("{}", Value::Object(m));
    } else {
        let mut s = String::new();
        match file {
            Some(f) => writeln!(s, "signed {} -> {}", f.display(), path.display())?,
            None => writeln!(s, "signed -> {}", path.display())?,
        }
        write_envelope_text(&mut s, &decoded)?;
        write_fields_text(&mut s, &fields, "  ")?;
        print!("{s}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// JSON and text views of statements

fn driver_json(b: &DriverModule<'_>) -> Value {
    json!({
        "name": b.name,
        "version": b.version,
        "sha3_256": hexs(&b.sha3_256),
        "size": b.size,
    })
}

fn bpf_json(b: &BpfProgram<'_>) -> Value {
    json!({
        "name": b.name,
        "prog_type": b.prog_type.name(),
        "attach_point": b.attach_point,
        "author": b.author,
        "sha3_256": hexs(&b.sha3_256),
        "size": b.size,
    })
}

fn memory_json(b: &MemoryReport<'_>) -> Value {
    let regions: Vec<Value> = b
        .regions
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "address": format!("{:#x}", r.address),
                "size": r.size,
                "protection": prot_str(r.protection),
                "sha3_256": hexs(&r.sha3_256),
            })
        })
        .collect();
    json!({
        "workload": b.workload,
        "platform": b.platform.name(),
        "issued_at": b.issued_at,
        "expires_at": b.expires_at,
        "nonce": hexs(&b.nonce),
        "regions": regions,
    })
}

fn model_json(b: &ModelManifest<'_>) -> Value {
    json!({
        "identity": b.to_string(),
        "name": b.name,
        "revision": b.revision,
        "root_hash": hexs(b.root_hash.0),
        "salt": hexs(b.salt.0),
        "data_size": b.data_size,
        "hash_algorithm": b.hash_algorithm.name(),
        "data_block_size": b.data_block_size,
        "hash_block_size": b.hash_block_size,
    })
}

fn any_json(s: &AnyStatement<'_>) -> Value {
    match s {
        AnyStatement::DriverModule(b) => driver_json(b),
        AnyStatement::BpfProgram(b) => bpf_json(b),
        AnyStatement::MemoryReport(b) => memory_json(b),
        AnyStatement::ModelManifest(b) => model_json(b),
        _ => Value::Null,
    }
}

fn envelope_json(e: &Envelope<'_>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("kind".into(), e.kind.name().into());
    m.insert("algorithm".into(), e.algorithm.name().into());
    m.insert("signer".into(), e.signer.to_string().into());
    m.insert("signed_at".into(), e.signed_at.into());
    m.insert("signed_at_utc".into(), rfc3339(e.signed_at).into());
    m
}

fn write_envelope_text(s: &mut String, e: &Envelope<'_>) -> std::fmt::Result {
    writeln!(s, "  kind:         {}", e.kind)?;
    writeln!(s, "  algorithm:    {}", e.algorithm.name())?;
    writeln!(s, "  signer:       {}", e.signer)?;
    writeln!(
        s,
        "  signed_at:    {} ({})",
        e.signed_at,
        rfc3339(e.signed_at)
    )
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn write_fields_text(s: &mut String, fields: &Value, indent: &str) -> std::fmt::Result {
    let Some(m) = fields.as_object() else {
        return Ok(());
    };
    for (k, v) in m {
        match v {
            Value::Array(items) => {
                writeln!(s, "{indent}{k}: {}", items.len())?;
                for (i, it) in items.iter().enumerate() {
                    let parts: Vec<String> = it
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .map(|(k, v)| format!("{k}={}", scalar(v)))
                                .collect()
                        })
                        .unwrap_or_default();
                    writeln!(s, "{indent}  [{i}] {}", parts.join(" "))?;
                }
            }
            v => writeln!(s, "{indent}{:<13} {}", format!("{k}:"), scalar(v))?,
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// info

/// The marker every `pqcc info` output carries.
pub const NOT_VERIFIED: &str = "NOT VERIFIED";

/// Runs `pqcc info`: decodes an envelope strictly and prints its fields, marked
/// [`NOT_VERIFIED`]. A malformed envelope is an error.
pub fn info(a: &InfoArgs) -> anyhow::Result<()> {
    let bytes = read_envelope_file(&a.envelope)?
        .map_err(|why| anyhow!("{}: {why}", a.envelope.display()))?;
    let env = Envelope::decode(&bytes).map_err(|e| {
        anyhow!(
            "{}: not a valid pqcc signed statement: {}",
            a.envelope.display(),
            describe_decode_error(e)
        )
    })?;
    let body = env.body_unverified().map_err(|e| {
        anyhow!(
            "{}: the {} body does not decode: {}",
            a.envelope.display(),
            env.kind,
            describe_decode_error(e)
        )
    })?;
    let fields = any_json(&body);
    let warning = "NOT VERIFIED: these are the envelope's claims; no signature, signer or \
                   artifact has been checked (use pqcc verify)";
    if a.json {
        let mut m = Map::new();
        // The command did its job (printing); `verified` says nothing was checked.
        m.insert("ok".into(), true.into());
        m.insert("verified".into(), false.into());
        m.insert("warning".into(), warning.into());
        m.extend(envelope_json(&env));
        m.insert("envelope_bytes".into(), bytes.len().into());
        m.insert(
            "envelope_sha3_256".into(),
            hexs(&hash::sha3_256(&[&bytes])).into(),
        );
        m.insert("statement".into(), fields);
        println!("{}", Value::Object(m));
    } else {
        let mut s = String::new();
        writeln!(s, "{warning}")?;
        writeln!(s, "{} ({} bytes)", a.envelope.display(), bytes.len())?;
        write_envelope_text(&mut s, &env)?;
        writeln!(s, "  statement ({NOT_VERIFIED}):")?;
        write_fields_text(&mut s, &fields, "    ")?;
        print!("{s}");
    }
    Ok(())
}

/// Reads an envelope file, refusing one longer than any envelope can be. The outer
/// error is I/O; the inner one says why the bytes cannot be an envelope.
fn read_envelope_file(path: &Path) -> anyhow::Result<Result<Vec<u8>, String>> {
    Ok(read_bounded(path, SIGNED_MAX_LEN as u64)?.ok_or_else(|| {
        format!("over {SIGNED_MAX_LEN} bytes, the largest pqcc signed statement: not an envelope")
    }))
}

fn describe_decode_error(e: CoreError) -> String {
    match e {
        CoreError::Truncated => "truncated: it ends before the envelope is complete".into(),
        CoreError::TrailingBytes => "trailing bytes after the envelope".into(),
        CoreError::Oversize => "over the size limit of its kind".into(),
        CoreError::UnknownVersion(v) => format!("unknown envelope version {v} (expected 1)"),
        CoreError::UnsupportedAlgorithm(a) => {
            format!("signature algorithm id {a} is not ML-DSA-65 (id 0), the only one accepted")
        }
        CoreError::InvalidKey => "the signature field is not 3309 bytes".into(),
        CoreError::NonCanonical => "non-canonical encoding".into(),
        CoreError::Malformed => "malformed (bad field encoding, kind or bounds)".into(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------
// Policy files

/// An eBPF load policy read from TOML (schema in `docs/cli.md`):
///
/// ```toml
/// version = 1                 # optional; only 1 exists
/// default = "deny"            # "deny" (default) or "allow": when no rule matches
///
/// [[rule]]                    # tried in order, first match wins
/// program_types = ["kprobe", "tracepoint"]   # or ["*"] for all 13; [] matches nothing
/// signers = ["did:pqaid:<64 hex>"]           # [] admits no signed program
/// require_signature = true    # optional, default true
/// max_size = 1048576          # optional cap on the bytecode's actual length
/// action = "allow"            # "allow" or "deny"
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    /// The rules, in file order.
    pub rules: Vec<PolicyRule>,
    /// What happens when no rule matches.
    pub default: Action,
}

/// One `[[rule]]` of a [`PolicyFile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    /// See [`Rule::program_types`].
    pub program_types: Vec<BpfProgType>,
    /// See [`Rule::signers`].
    pub signers: Vec<SignerId>,
    /// See [`Rule::require_signature`].
    pub require_signature: bool,
    /// See [`Rule::max_size`].
    pub max_size: Option<u64>,
    /// See [`Rule::action`].
    pub action: Action,
}

impl PolicyFile {
    /// Parses a policy strictly: unknown keys, unknown program types, malformed dids,
    /// negative sizes and wrong types are errors naming the rule and the key.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let table: toml::Table = toml::from_str(text).map_err(|e| anyhow!("{e}"))?;
        let mut default = Action::Deny;
        let mut rules = Vec::new();
        for (k, v) in &table {
            match k.as_str() {
                "version" => match v.as_integer() {
                    Some(1) => {}
                    _ => bail!("`version` must be 1"),
                },
                "default" => default = parse_action(v).context("`default`")?,
                "rule" => {
                    let arr = v
                        .as_array()
                        .context("`rule` must be an array of tables ([[rule]])")?;
                    for (i, r) in arr.iter().enumerate() {
                        let t = r
                            .as_table()
                            .with_context(|| format!("rule {i}: must be a table ([[rule]])"))?;
                        rules.push(parse_rule(t).with_context(|| format!("rule {i}"))?);
                    }
                }
                other => bail!(
                    "unknown key `{other}` (expected `version`, `default` and [[rule]] tables)"
                ),
            }
        }
        Ok(Self { rules, default })
    }

    /// Reads and parses a policy file (at most [`MAX_POLICY_LEN`] bytes, UTF-8).
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let bytes = read_bounded(path, MAX_POLICY_LEN)?.with_context(|| {
            format!(
                "{}: over {MAX_POLICY_LEN} bytes: not a policy file",
                path.display()
            )
        })?;
        let text =
            String::from_utf8(bytes).map_err(|_| anyhow!("{}: not UTF-8 text", path.display()))?;
        Self::parse(&text).with_context(|| format!("policy {}", path.display()))
    }

    /// The core rules, borrowing from `self`.
    pub fn rules(&self) -> Vec<Rule<'_>> {
        self.rules
            .iter()
            .map(|r| Rule {
                program_types: &r.program_types,
                signers: &r.signers,
                require_signature: r.require_signature,
                max_size: r.max_size,
                action: r.action,
            })
            .collect()
    }
}

fn parse_action(v: &toml::Value) -> anyhow::Result<Action> {
    match v.as_str() {
        Some("allow") => Ok(Action::Allow),
        Some("deny") => Ok(Action::Deny),
        _ => bail!("must be \"allow\" or \"deny\""),
    }
}

fn parse_rule(t: &toml::Table) -> anyhow::Result<PolicyRule> {
    let mut program_types = None;
    let mut signers = None;
    let mut require_signature = true;
    let mut max_size = None;
    let mut action = None;
    for (k, v) in t {
        match k.as_str() {
            "program_types" => {
                let arr = v.as_array().context("`program_types` must be an array")?;
                let mut out = Vec::new();
                for x in arr {
                    let s = x.as_str().context("`program_types` holds strings")?;
                    if s == "*" {
                        out.extend(BpfProgType::ALL);
                        continue;
                    }
                    let t = BpfProgType::from_name(s).with_context(|| {
                        format!(
                            "unknown program type `{s}` (one of {}, or \"*\")",
                            BpfProgType::ALL.map(BpfProgType::name).join(", ")
                        )
                    })?;
                    out.push(t);
                }
                program_types = Some(out);
            }
            "signers" => {
                let arr = v.as_array().context("`signers` must be an array")?;
                let mut out = Vec::new();
                for x in arr {
                    let s = x.as_str().context("`signers` holds did:pqaid strings")?;
                    out.push(SignerId::parse(s).map_err(|_| {
                        anyhow!("`{s}` is not did:pqaid:<64 hex> (see pqcc id KEY.pub)")
                    })?);
                }
                signers = Some(out);
            }
            "require_signature" => {
                require_signature = v
                    .as_bool()
                    .context("`require_signature` must be true or false")?
            }
            "max_size" => {
                let n = v.as_integer().context("`max_size` must be an integer")?;
                max_size = Some(u64::try_from(n).map_err(|_| anyhow!("`max_size` is negative"))?);
            }
            "action" => action = Some(parse_action(v).context("`action`")?),
            other => bail!(
                "unknown key `{other}` (expected program_types, signers, require_signature, \
                 max_size, action)"
            ),
        }
    }
    Ok(PolicyRule {
        program_types: program_types.context("`program_types` is required")?,
        signers: signers.context("`signers` is required (an empty list admits nobody)")?,
        require_signature,
        max_size,
        action: action.context("`action` is required")?,
    })
}

fn lint_code(l: &pqcc_core::policy::Lint) -> (&'static str, Option<usize>) {
    use pqcc_core::policy::Lint;
    match *l {
        Lint::EmptyProgramTypes { rule } => ("empty-program-types", Some(rule)),
        Lint::UnreachableRule { rule } => ("unreachable-rule", Some(rule)),
        Lint::EmptySignerSet { rule } => ("empty-signer-set", Some(rule)),
        Lint::UnsignedAllowed { rule } => ("unsigned-allowed", Some(rule)),
        Lint::DefaultAllow => ("default-allow", None),
        _ => ("finding", None),
    }
}

/// Runs `pqcc policy check`: parse errors are `Err` (exit 2); findings are
/// [`Outcome::Fail`].
pub fn policy_check(a: &PolicyCheckArgs) -> anyhow::Result<Outcome> {
    let pf = PolicyFile::read(&a.policy)?;
    let rules = pf.rules();
    let policy = LoadPolicy {
        rules: &rules,
        default: pf.default,
    };
    let findings: Vec<_> = policy.lint().collect();
    let default = match pf.default {
        Action::Allow => "allow",
        Action::Deny => "deny",
    };
    if a.json {
        let list: Vec<Value> = findings
            .iter()
            .map(|l| {
                let (code, rule) = lint_code(l);
                json!({"code": code, "rule": rule, "message": l.to_string()})
            })
            .collect();
        println!(
            "{}",
            json!({
                "ok": findings.is_empty(),
                "policy": a.policy.display().to_string(),
                "rules": pf.rules.len(),
                "default": default,
                "clean": findings.is_empty(),
                "findings": list,
            })
        );
    } else {
        for l in &findings {
            let (code, _) = lint_code(l);
            println!("{}: {l} [{code}]", a.policy.display());
        }
        println!(
            "{}: {} rules, default {default}: {}",
            a.policy.display(),
            pf.rules.len(),
            match findings.len() {
                0 => "clean".to_string(),
                1 => "1 finding".to_string(),
                n => format!("{n} findings"),
            }
        );
    }
    Ok(if findings.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Fail
    })
}

// ---------------------------------------------------------------------------------
// verify

/// What `pqcc verify` concluded.
#[derive(Debug)]
struct Verdict {
    kind: Option<Kind>,
    decision: audit::Decision,
    /// Short token (`allowed`, `no-artifact`, `bad-signature`, …).
    reason: &'static str,
    detail: String,
    /// The verified signer (only when the signature verified).
    signer: Option<SignerId>,
    /// The signer id the envelope claims.
    claimed: Option<SignerId>,
    statement: Option<Value>,
    /// Exit 2: the envelope is malformed (still recorded as `invalid`).
    malformed: bool,
}

impl Verdict {
    fn malformed(kind: Option<Kind>, reason: &'static str, detail: String) -> Self {
        Self {
            kind,
            decision: audit::Decision::Invalid,
            reason,
            detail,
            signer: None,
            claimed: None,
            statement: None,
            malformed: true,
        }
    }

    fn passed(&self) -> bool {
        matches!(
            self.decision,
            audit::Decision::Allow | audit::Decision::Valid
        )
    }
}

fn deny_token(r: &DenyReason) -> &'static str {
    match r {
        DenyReason::NoArtifact => "no-artifact",
        DenyReason::SizeMismatch { .. } => "size-mismatch",
        DenyReason::HashMismatch => "hash-mismatch",
        DenyReason::TooLarge { .. } => "too-large",
        DenyReason::SignerNotAllowed => "signer-not-allowed",
        DenyReason::Unsigned => "unsigned",
        DenyReason::ProgTypeMismatch { .. } => "prog-type-mismatch",
        DenyReason::NoRuleMatched => "no-rule-matched",
        DenyReason::RuleDenied { .. } => "rule-denied",
        DenyReason::NonceMismatch => "nonce-mismatch",
        DenyReason::NotYetValid => "not-yet-valid",
        DenyReason::Expired => "expired",
        DenyReason::ValidityTooLong => "validity-too-long",
        DenyReason::WorkloadMismatch => "workload-mismatch",
        DenyReason::PlatformMismatch => "platform-mismatch",
        DenyReason::NothingPinned => "nothing-pinned",
        DenyReason::UnpinnedRegion { .. } => "unpinned-region",
        DenyReason::Drift { .. } => "drift",
        DenyReason::MissingRegion { .. } => "missing-region",
        _ => "denied",
    }
}

fn load_trust(paths: &[PathBuf]) -> anyhow::Result<Vec<VerifyingKey>> {
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let pk = keys::read_public_key(p)?;
        let vk = pk.verifying_key().with_context(|| {
            format!(
                "{}: --trust takes ML-DSA-65 public keys (PATH.pub from pqcc keygen --alg \
                 ml-dsa-65)",
                p.display()
            )
        })?;
        out.push(vk);
    }
    Ok(out)
}

/// Checks that the options given apply to `kind`.
fn check_options(a: &VerifyArgs, kind: Kind) -> anyhow::Result<()> {
    let mut wrong = Vec::new();
    let artifact_kind = matches!(kind, Kind::DriverModule | Kind::BpfProgram);
    if a.artifact.is_some() && !artifact_kind {
        wrong.push("--artifact");
    }
    if a.max_size.is_some() && !artifact_kind {
        wrong.push("--max-size");
    }
    if kind != Kind::BpfProgram {
        if a.policy.is_some() {
            wrong.push("--policy");
        }
        if a.load_as.is_some() {
            wrong.push("--load-as");
        }
    } else if a.policy.is_some() && a.max_size.is_some() {
        wrong.push("--max-size (with --policy, the rules' max_size applies)");
    }
    if kind != Kind::MemoryReport
        && (a.nonce.is_some() || !a.pins.is_empty() || a.workload.is_some() || a.platform.is_some())
    {
        wrong.push("--nonce/--pin/--workload/--platform");
    }
    if kind != Kind::ModelManifest {
        for (given, flag) in [
            (a.root_hash.is_some(), "--root-hash"),
            (a.salt.is_some(), "--salt"),
            (a.archive.is_some(), "--archive"),
        ] {
            if given {
                wrong.push(flag);
            }
        }
    }
    if !wrong.is_empty() {
        bail!(
            "{}: {} does not apply to a {kind} statement",
            a.envelope.display(),
            wrong.join(", ")
        );
    }
    if kind == Kind::MemoryReport
        && (a.nonce.is_none() || a.workload.is_none() || a.platform.is_none())
    {
        bail!(
            "verifying a memory report needs --nonce (the challenge you sent), --workload and \
             --platform, and the expected hashes as --pin ID=HEX"
        );
    }
    Ok(())
}

/// Verification failed before any policy: a token and words.
fn verify_error(e: CoreError, claimed: SignerId, trusted: usize) -> Verdict {
    let (reason, detail, malformed) = match e {
        CoreError::UnknownSigner => (
            "unknown-signer",
            format!("signer {claimed} is not one of the {trusted} trusted keys"),
            false,
        ),
        CoreError::BadSignature => (
            "bad-signature",
            format!("the ML-DSA-65 signature does not verify with {claimed}'s key"),
            false,
        ),
        other if other.kind() == ErrorKind::MalformedInput => {
            ("malformed-envelope", describe_decode_error(other), true)
        }
        other => ("invalid", other.to_string(), false),
    };
    Verdict {
        kind: None,
        decision: audit::Decision::Invalid,
        reason,
        detail,
        signer: None,
        claimed: Some(claimed),
        statement: None,
        malformed,
    }
}

fn decided(
    kind: Kind,
    d: Decision,
    signer: SignerId,
    statement: Value,
    allow_detail: String,
) -> Verdict {
    let (decision, reason, detail) = match d {
        Decision::Allow => (audit::Decision::Allow, "allowed", allow_detail),
        Decision::Deny(r) => (audit::Decision::Deny, deny_token(&r), r.to_string()),
    };
    Verdict {
        kind: Some(kind),
        decision,
        reason,
        detail,
        signer: Some(signer),
        claimed: Some(signer),
        statement: Some(statement),
        malformed: false,
    }
}

fn decide(
    a: &VerifyArgs,
    trust: &[VerifyingKey],
    policy: Option<&PolicyFile>,
    bytes: &[u8],
    artifact: Option<&Artifact>,
    now: u64,
) -> anyhow::Result<Verdict> {
    let env = match Envelope::decode(bytes) {
        Ok(e) => e,
        Err(e) => {
            return Ok(Verdict::malformed(
                None,
                "malformed-envelope",
                format!(
                    "not a valid pqcc signed statement: {}",
                    describe_decode_error(e)
                ),
            ));
        }
    };
    let kind = env.kind;
    if let Some(k) = a.kind
        && Kind::from(k) != kind
    {
        let want = Kind::from(k);
        return Ok(Verdict::malformed(
            Some(kind),
            "wrong-kind",
            format!("a {kind} statement where a {want} statement was required"),
        ));
    }
    check_options(a, kind)?;
    let claimed = env.signer;
    let ids: Vec<SignerId> = trust.iter().map(VerifyingKey::signer_id).collect();
    let fail = |e| {
        let mut v = verify_error(e, claimed, trust.len());
        v.kind = Some(kind);
        v
    };
    Ok(match kind {
        Kind::DriverModule => match statement::verify::<DriverModule<'_>, _>(bytes, trust) {
            Err(e) => fail(e),
            Ok(v) => {
                let d = DriverPolicy {
                    signers: &ids,
                    max_size: a.max_size,
                }
                .check(&v, artifact);
                let b = v.body();
                decided(
                    kind,
                    d,
                    v.signer(),
                    driver_json(b),
                    format!(
                        "driver module {}{}{} signed by a trusted key; the artifact's SHA3-256 \
                         and length match",
                        b.name,
                        if b.version.is_empty() { "" } else { " " },
                        b.version
                    ),
                )
            }
        },
        Kind::BpfProgram => match statement::verify::<BpfProgram<'_>, _>(bytes, trust) {
            Err(e) => fail(e),
            Ok(v) => {
                let b = *v.body();
                let load_as = a.load_as.unwrap_or(b.prog_type);
                let d = match policy {
                    Some(pf) => {
                        let rules = pf.rules();
                        LoadPolicy {
                            rules: &rules,
                            default: pf.default,
                        }
                        .evaluate(&BpfLoad {
                            prog_type: load_as,
                            statement: Some(&v),
                            bytecode: artifact,
                        })
                    }
                    None if load_as != b.prog_type => {
                        Decision::Deny(DenyReason::ProgTypeMismatch {
                            signed: b.prog_type,
                            loading: load_as,
                        })
                    }
                    // The signer verified against the trust set: the DriverPolicy-style
                    // check left is the artifact's bytes.
                    None => check_artifact(&b, artifact, a.max_size),
                };
                decided(
                    kind,
                    d,
                    v.signer(),
                    bpf_json(&b),
                    format!(
                        "eBPF program {} ({}) signed by a trusted key; the bytecode's SHA3-256 \
                         and length match{}",
                        b.name,
                        b.prog_type,
                        if policy.is_some() {
                            "; the load policy allows it"
                        } else {
                            ""
                        }
                    ),
                )
            }
        },
        Kind::MemoryReport => match statement::verify::<MemoryReport<'_>, _>(bytes, trust) {
            Err(e) => fail(e),
            Ok(v) => {
                let pinned: Vec<PinnedRegion<'_>> = a
                    .pins
                    .iter()
                    .map(|(id, h)| PinnedRegion { id, sha3_256: *h })
                    .collect();
                let (Some(nonce), Some(workload), Some(platform)) =
                    (a.nonce, a.workload.as_deref(), a.platform)
                else {
                    bail!("verifying a memory report needs --nonce, --workload and --platform");
                };
                let d = MemoryPolicy {
                    signers: &ids,
                    workload,
                    platform: platform.into(),
                    pinned: &pinned,
                    max_validity: a.max_validity,
                }
                .check(&v, &nonce, now);
                let b = v.body();
                decided(
                    kind,
                    d,
                    v.signer(),
                    memory_json(b),
                    format!(
                        "memory report for {} answers the challenge, is fresh until {} and \
                         every pinned region matches",
                        b.workload,
                        rfc3339(b.expires_at)
                    ),
                )
            }
        },
        Kind::ModelManifest => match statement::verify::<ModelManifest<'_>, _>(bytes, trust) {
            Err(e) => fail(e),
            Ok(v) => {
                let b = v.body();
                let mut verdict = decided(
                    kind,
                    Decision::Allow,
                    v.signer(),
                    model_json(b),
                    format!("model manifest {b} signed by a trusted key"),
                );
                verdict.decision = audit::Decision::Valid;
                verdict.reason = "valid";
                if let Some((reason, detail)) = model_mismatch(a, b)? {
                    verdict.decision = audit::Decision::Invalid;
                    verdict.reason = reason;
                    verdict.detail = detail;
                }
                verdict
            }
        },
        other => Verdict::malformed(
            Some(other),
            "unsupported-kind",
            format!("this pqcc cannot check {other} statements"),
        ),
    })
}

/// The first way a verified model manifest differs from what `pqcc verify` was told
/// to expect (--root-hash, --salt, --archive): a reason token and words. `Err`: the
/// archive or its hash file cannot be read.
fn model_mismatch(
    a: &VerifyArgs,
    b: &ModelManifest<'_>,
) -> anyhow::Result<Option<(&'static str, String)>> {
    if let Some(want) = &a.root_hash
        && !ct_eq(want, b.root_hash.0)
    {
        return Ok(Some((
            "root-hash-mismatch",
            format!(
                "the signed root hash {} is not the expected {}",
                hexs(b.root_hash.0),
                hexs(want)
            ),
        )));
    }
    if let Some(want) = &a.salt
        && want.0 != b.salt.0
    {
        return Ok(Some((
            "salt-mismatch",
            format!(
                "the signed salt {} is not the expected {}",
                hex_or_empty(b.salt.0),
                hex_or_empty(&want.0)
            ),
        )));
    }
    let Some(archive) = &a.archive else {
        return Ok(None);
    };
    let hash_file = a
        .verity
        .clone()
        .unwrap_or_else(|| crate::model::verify::beside_path(archive, ".verity"));
    let (finding, tree) = crate::model::verify::read_tree(archive, &hash_file)?;
    if !matches!(finding, crate::model::verify::Finding::Ok { .. }) {
        return Ok(Some((
            "archive-mismatch",
            format!(
                "{} does not match its hash file {}: {finding}",
                archive.display(),
                hash_file.display()
            ),
        )));
    }
    let what = archive.display();
    if !ct_eq(&tree.root, b.root_hash.0) {
        return Ok(Some((
            "root-hash-mismatch",
            format!(
                "the signed root hash {} is not {what}'s {}",
                hexs(b.root_hash.0),
                hexs(&tree.root)
            ),
        )));
    }
    if tree.salt.as_bytes() != b.salt.0 {
        return Ok(Some((
            "salt-mismatch",
            format!(
                "the signed salt {} is not {what}'s {} (its hash file's superblock)",
                hex_or_empty(b.salt.0),
                hex_or_empty(tree.salt.as_bytes())
            ),
        )));
    }
    let data_size = tree.data_blocks.saturating_mul(4096);
    if b.data_size != data_size || b.data_block_size != 4096 || b.hash_block_size != 4096 {
        return Ok(Some((
            "geometry-mismatch",
            format!(
                "the signed data size {} and block sizes {}/{} are not {what}'s {data_size} \
                 and 4096/4096",
                b.data_size, b.data_block_size, b.hash_block_size
            ),
        )));
    }
    Ok(None)
}

/// Runs `pqcc verify`. `Err` is a usage, I/O or malformed-envelope error (exit 2; a
/// malformed envelope is still recorded in the audit log); [`Outcome::Fail`] is
/// invalid or denied (exit 1), with the reason on stdout.
pub fn verify(a: &VerifyArgs) -> anyhow::Result<Outcome> {
    let trust = load_trust(&a.trust)?;
    let policy = a.policy.as_deref().map(PolicyFile::read).transpose()?;
    // Open the log first: a log that cannot be written is found before any decision.
    let mut log = a
        .audit_log
        .as_deref()
        .map(audit::AuditLog::open)
        .transpose()?;
    let actor = match &a.actor {
        Some(s) => s.clone(),
        None => std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
    };
    let artifact = a
        .artifact
        .as_deref()
        .map(|p| hashing::sha3_256_file(p).map(|(sha3_256, len)| Artifact { sha3_256, len }))
        .transpose()?;
    let now = now_secs()?;
    let (verdict, envelope_hash) = match read_envelope_file(&a.envelope)? {
        Err(why) => (
            Verdict::malformed(None, "malformed-envelope", why),
            None::<[u8; 32]>,
        ),
        Ok(bytes) => (
            decide(a, &trust, policy.as_ref(), &bytes, artifact.as_ref(), now)?,
            Some(hash::sha3_256(&[&bytes])),
        ),
    };
    // The record names the artifact's hash when one was given, else the envelope's.
    let recorded = artifact
        .map(|x| x.sha3_256)
        .or(envelope_hash)
        .unwrap_or([0; 32]);
    if let Some(log) = &mut log {
        log.append(&audit::Record {
            time: now,
            kind: verdict.kind.map_or("verify", Kind::name).into(),
            decision: verdict.decision,
            reason: format!("{}: {}", verdict.reason, verdict.detail),
            signer: verdict.signer,
            artifact_sha3_256: recorded,
            actor,
        })?;
    }
    if verdict.malformed {
        bail!("{}: {}", a.envelope.display(), verdict.detail);
    }
    if a.json {
        let mut m = Map::new();
        m.insert("ok".into(), verdict.passed().into());
        m.insert("valid".into(), verdict.passed().into());
        m.insert("decision".into(), verdict.decision.as_str().into());
        m.insert("reason".into(), verdict.reason.into());
        m.insert("detail".into(), verdict.detail.clone().into());
        m.insert("kind".into(), verdict.kind.map(Kind::name).into());
        m.insert(
            "signer".into(),
            verdict.signer.map(|s| s.to_string()).into(),
        );
        m.insert(
            "claimed_signer".into(),
            verdict.claimed.map(|s| s.to_string()).into(),
        );
        m.insert(
            "artifact_sha3_256".into(),
            artifact.map(|x| hexs(&x.sha3_256)).into(),
        );
        m.insert(
            "statement".into(),
            verdict.statement.clone().unwrap_or(Value::Null),
        );
        println!("{}", Value::Object(m));
    } else {
        let kind = verdict.kind.map_or("statement", Kind::name);
        match verdict.decision {
            audit::Decision::Allow | audit::Decision::Valid => {
                println!("{}: {kind}: {}", verdict.decision.as_str(), verdict.detail)
            }
            _ => println!(
                "{} ({}): {kind}: {}",
                verdict.decision.as_str(),
                verdict.reason,
                verdict.detail
            ),
        }
        if let Some(s) = verdict.signer {
            println!("  signer:   {s}");
        }
        if let Some(x) = &artifact {
            println!(
                "  artifact: sha3-256 {} ({} bytes)",
                hexs(&x.sha3_256),
                x.len
            );
        }
    }
    Ok(if verdict.passed() {
        Outcome::Pass
    } else {
        Outcome::Fail
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_764_068_598), "2025-11-25T11:03:18Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn policy_parse_is_strict() {
        let did = format!("did:pqaid:{}", "ab".repeat(32));
        let p = PolicyFile::parse(&format!(
            "default = \"allow\"\n[[rule]]\nprogram_types = [\"xdp\"]\nsigners = [\"{did}\"]\n\
             max_size = 10\naction = \"allow\"\n[[rule]]\nprogram_types = [\"*\"]\nsigners = []\n\
             require_signature = false\naction = \"deny\"\n"
        ))
        .unwrap();
        assert_eq!(p.default, Action::Allow);
        assert_eq!(p.rules.len(), 2);
        assert_eq!(p.rules[0].program_types, vec![BpfProgType::Xdp]);
        assert_eq!(p.rules[0].max_size, Some(10));
        assert!(p.rules[0].require_signature);
        assert_eq!(p.rules[1].program_types.len(), 13);
        for bad in [
            "default = \"maybe\"",
            "version = 2",
            "other = 1",
            "[[rule]]\nprogram_types = [\"kprob\"]\nsigners = []\naction = \"allow\"",
            "[[rule]]\nprogram_types = []\nsigners = [\"did:pqaid:00\"]\naction = \"allow\"",
            "[[rule]]\nprogram_types = []\naction = \"allow\"",
            "[[rule]]\nprogram_types = []\nsigners = []\naction = \"allow\"\nmax_size = -1",
            "[[rule]]\nprogram_types = []\nsigners = []\naction = \"allow\"\nextra = 1",
            "[[rule]]\nprogram_types = []\nsigners = []",
            "not toml ===",
        ] {
            assert!(PolicyFile::parse(bad).is_err(), "{bad}");
        }
    }
}
