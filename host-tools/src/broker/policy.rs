//! The broker's policy file (`broker.toml`): which guests get which secrets.
//!
//! ```toml
//! handshake_timeout_s = 10   # a handshake not finished in this time is dropped
//! idle_timeout_s = 600       # a connection whose guest never says READY is dropped
//! max_concurrent = 64        # connections served at once; as many more may wait
//! max_per_peer = 16          # connections (served or waiting) from one TCP address
//!
//! [secrets.model-key]        # a secret read from a file (relative to this file)
//! file = "model.key"
//! [secrets.session-dek]      # a data-encryption key the broker generates once and
//! generate = 32              # keeps (mode 0600, in --state-dir)
//!
//! [[rule]]                   # rules are tried in order; the first match wins
//! name = "demo"
//! platform = "none"          # none | sev-snp | tdx
//! insecure_no_tee = true     # required with platform = "none"
//! models = ["tiny@r1:<64 hex root hash>"]
//! gpu = "none"               # none | required
//! secrets = ["model-key", "session-dek"]
//!
//! [[rule]]                   # a TEE rule: the evidence is verified with pqcc-verify
//! name = "prod-snp"
//! platform = "sev-snp"
//! models = ["tiny@r1:<64 hex root hash>"]
//! secrets = ["model-key"]
//! [rule.tee]                 # pqcc_verify::tee::TeePolicy (docs/evidence.md)
//! platform = "snp"
//! snp = { min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }, measurements = ["<96 hex>"] }
//! # tdx_collateral = "collateral.json"   # TDX rules: the DCAP collateral (required)
//! # snp_vcek = "vcek.der", snp_chain = "ask_ark.pem"  # SNP reports without a cert table
//! # snp_crl = "amd-genoa.crl"  # AMD's CRL for the VCEK chain (snp.require_crl = true)
//!
//! [[rule]]                   # a rule that also needs every NVIDIA GPU attested
//! name = "prod-snp-h100"
//! platform = "sev-snp"
//! models = ["tiny@r1:<64 hex root hash>"]
//! gpu = "required"
//! secrets = ["model-key"]
//! [rule.tee]
//! platform = "snp"
//! snp = { min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }, measurements = ["<96 hex>"] }
//! [rule.nvidia]              # pqcc_verify::nvidia (docs/gpu-attestation.md)
//! rims = ["driver.swidtag", "vbios.swidtag"]   # driver and VBIOS RIMs
//! collateral = "nvidia-collateral"             # CRL/OCSP bundle directory
//! revocation_max_age_s = 604800                # default 7 days
//! # insecure_skip_revocation = true            # instead of collateral (test data)
//! # require_report_fwid = false
//! # insecure_now = 1690000000                  # judge certificates at this time
//! # insecure_nonce = "<64 hex>"                # expect this GPU nonce, not the handshake's
//! ```
//!
//! Nothing is admitted by default: a guest that no rule matches is rejected, a rule
//! must name at least one model and one secret, and `platform = "none"` is refused
//! unless the rule also says `insecure_no_tee = true`. Every secret a rule names must be
//! defined. Unknown keys anywhere are errors. A `gpu = "required"` rule needs a
//! `[rule.nvidia]` table and no other rule may have one; its RIMs and collateral are
//! read when the policy loads (`SIGHUP` reloads it, `docs/broker.md`).
//!
//! Everything is checked when the policy loads, not when a guest first needs it: every
//! measurement is the right number of hex digits (a TDX set pins MRTD, RTMR1 and RTMR2,
//! none of them all zero: RTMR1 holds the kernel and RTMR2 the initrd with the measured
//! `init.toml`, so a rule without them admits a host-made initramfs), a TEE rule lists
//! measurements, every secret file exists, is a regular file that group and others
//! cannot read, and is 1 B to 1 MiB, and no collateral is already past its date.
//!
//! **Insecure settings** ([`Rule::insecure`]: a `none` rule, `insecure_any_measurement`,
//! `insecure_allow_debug`, a TDX rule accepting `Revoked`, the GPU `insecure_*` keys)
//! load only when the operator says `--allow-insecure` ([`Policy::load`]); they are then
//! printed at start and named in every audit record of a release they allowed. A secret
//! that a `none` rule can release is never released by a TEE rule too: that would hand
//! a TEE-only secret to any process that claims to be a guest.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use pqcc_core::wire::{MAX_GRANT_NAME_LEN, MAX_GRANTS, Platform};
use pqcc_verify::nvidia::{self, GpuPolicy, RevocationPolicy, Rim};
use pqcc_verify::tee::{Collateral, TcbStatus, TeePlatform, TeePolicy, tdx::TdxCollateral};
use serde::Deserialize;
use zeroize::Zeroizing;

/// Default for [`Policy::handshake_timeout_s`].
pub const DEFAULT_HANDSHAKE_TIMEOUT_S: u64 = 10;
/// Default for [`Policy::idle_timeout_s`].
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 600;
/// Default for [`Policy::max_concurrent`].
pub const DEFAULT_MAX_CONCURRENT: usize = 64;
/// Default for [`Policy::max_per_peer`].
pub const DEFAULT_MAX_PER_PEER: usize = 16;
/// Largest secret the broker sends (bytes).
pub const MAX_SECRET_LEN: usize = 1 << 20;

/// A parsed, checked policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Seconds a guest has from connecting to finishing the handshake.
    pub handshake_timeout_s: u64,
    /// Seconds a connection may stay silent before the guest's READY (a VM booting).
    pub idle_timeout_s: u64,
    /// Connections served at once; as many more may wait for a place, and a connection
    /// beyond those is closed at once.
    pub max_concurrent: usize,
    /// Connections (served or waiting) from one TCP peer address (Unix sockets: not
    /// applied), so that one address cannot take every place.
    pub max_per_peer: usize,
    /// The secrets, by name.
    pub secrets: BTreeMap<String, SecretSource>,
    /// The rules, in order.
    pub rules: Vec<Rule>,
}

/// What [`Policy::load`] accepts beyond a secure policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Accept the insecure settings ([`Rule::insecure`]): `--allow-insecure`.
    pub allow_insecure: bool,
}

/// Where a secret's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file, read at each release (absolute path).
    File(PathBuf),
    /// A key of this many bytes, generated by the broker on first use and kept in its
    /// state directory.
    Generate(usize),
}

/// Whether a GPU must be attested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuRequirement {
    /// No GPU evidence is needed (any that is sent is ignored).
    None,
    /// GPU evidence must be present and verify.
    Required,
}

/// A model identity `name@revision:roothash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelId {
    /// Model name.
    pub name: String,
    /// Revision.
    pub revision: String,
    /// dm-verity root hash.
    pub root_hash: [u8; 32],
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}:{}",
            self.name,
            self.revision,
            hex::encode(self.root_hash)
        )
    }
}

impl ModelId {
    /// Parses `name@revision:hex`.
    pub fn parse(s: &str) -> Result<Self> {
        let (name, rest) = s
            .split_once('@')
            .with_context(|| format!("model `{s}`: expected NAME@REVISION:ROOTHASH"))?;
        let (revision, hash) = rest
            .rsplit_once(':')
            .with_context(|| format!("model `{s}`: expected NAME@REVISION:ROOTHASH"))?;
        if name.is_empty() || revision.is_empty() {
            bail!("model `{s}`: empty name or revision");
        }
        let bytes = hex::decode(hash)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .with_context(|| format!("model `{s}`: root hash must be 64 hex digits"))?;
        Ok(Self {
            name: name.to_string(),
            revision: revision.to_string(),
            root_hash: bytes,
        })
    }
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its name (for the audit log).
    pub name: String,
    /// The platform it admits.
    pub platform: Platform,
    /// The models it admits.
    pub models: Vec<ModelId>,
    /// GPU requirement.
    pub gpu: GpuRequirement,
    /// Secrets released on a match, in order (the grant streams are 1, 2, …).
    pub secrets: Vec<String>,
    /// For TDX and SEV-SNP rules: what the evidence must satisfy, and the collateral
    /// its verification needs.
    pub tee: Option<TeeRule>,
    /// For `gpu = "required"` rules: how GPU evidence is verified.
    pub nvidia: Option<NvidiaRule>,
    /// The insecure settings of this rule, by the name the policy file gives them
    /// (empty for a production rule); see [`Policy::load`].
    pub insecure: Vec<String>,
}

/// A GPU rule's verification inputs (`[rule.nvidia]`).
#[derive(Clone)]
pub struct NvidiaRule {
    /// Driver and VBIOS RIMs, read when the policy loads.
    pub rims: Vec<Rim>,
    /// Revocation and FWID handling.
    pub policy: GpuPolicy,
    /// The offline CRL/OCSP bundle (absent only with `insecure_skip_revocation`).
    pub collateral: Option<nvidia::Collateral>,
    /// Judge certificates at this Unix time instead of the broker's clock (recorded
    /// test evidence whose certificates have expired). Insecure.
    pub insecure_now: Option<u64>,
    /// Expect this nonce in every GPU report instead of the handshake's GPU nonce
    /// (recorded evidence with a fixed nonce). Insecure: it admits replayed reports.
    pub insecure_nonce: Option<[u8; 32]>,
}

impl fmt::Debug for NvidiaRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rims: Vec<String> = self
            .rims
            .iter()
            .map(|r| format!("{} ({} B)", r.source, r.bytes.len()))
            .collect();
        f.debug_struct("NvidiaRule")
            .field("rims", &rims)
            .field("policy", &self.policy)
            .field("collateral", &self.collateral.is_some())
            .field("insecure_now", &self.insecure_now)
            .field("insecure_nonce", &self.insecure_nonce.is_some())
            .finish()
    }
}

impl NvidiaRule {
    /// The insecure settings this rule has, by name (empty for a production rule).
    pub fn insecure_settings(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.policy.revocation == RevocationPolicy::InsecureSkip {
            v.push("insecure_skip_revocation");
        }
        if self.insecure_now.is_some() {
            v.push("insecure_now");
        }
        if self.insecure_nonce.is_some() {
            v.push("insecure_nonce");
        }
        v
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNvidia {
    rims: Vec<PathBuf>,
    collateral: Option<PathBuf>,
    revocation_max_age_s: Option<u64>,
    #[serde(default)]
    insecure_skip_revocation: bool,
    #[serde(default)]
    require_report_fwid: bool,
    insecure_now: Option<u64>,
    insecure_nonce: Option<String>,
}

/// Default `revocation_max_age_s` of a `[rule.nvidia]` table: 7 days.
pub const DEFAULT_GPU_REVOCATION_MAX_AGE_S: u64 = 7 * 24 * 3600;

/// A TEE rule's verification inputs.
#[derive(Debug, Clone)]
pub struct TeeRule {
    /// The requirements (platform, TCB, measurements, debug).
    pub policy: TeePolicy,
    /// VCEK / chain / DCAP collateral, loaded when the policy is.
    pub collateral: Collateral,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    handshake_timeout_s: Option<u64>,
    idle_timeout_s: Option<u64>,
    max_concurrent: Option<usize>,
    max_per_peer: Option<usize>,
    #[serde(default)]
    secrets: BTreeMap<String, RawSecret>,
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    file: Option<PathBuf>,
    generate: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    platform: String,
    #[serde(default)]
    insecure_no_tee: bool,
    models: Vec<String>,
    gpu: Option<String>,
    secrets: Vec<String>,
    tee: Option<TeePolicy>,
    nvidia: Option<RawNvidia>,
    tdx_collateral: Option<PathBuf>,
    snp_vcek: Option<PathBuf>,
    snp_chain: Option<PathBuf>,
    snp_crl: Option<PathBuf>,
}

/// Parses a platform name as written in policies and configs.
pub fn parse_platform(s: &str) -> Option<Platform> {
    Some(match s {
        "none" => Platform::InsecureNone,
        "sev-snp" | "snp" => Platform::SevSnp,
        "tdx" => Platform::Tdx,
        _ => return None,
    })
}

fn check_secret_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_GRANT_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        || name.starts_with('.')
    {
        bail!(
            "secret name `{name}`: use 1–{MAX_GRANT_NAME_LEN} of [A-Za-z0-9._-], not starting with `.`"
        );
    }
    Ok(())
}

fn nvidia_rule(n: &str, nv: RawNvidia, resolve: &dyn Fn(&Path) -> PathBuf) -> Result<NvidiaRule> {
    if nv.rims.is_empty() {
        bail!("[rule.nvidia] rims is empty: no reference values to compare with");
    }
    let mut rims = Vec::with_capacity(nv.rims.len());
    for p in &nv.rims {
        let p = resolve(p);
        let bytes = std::fs::read(&p).with_context(|| format!("RIM {}", p.display()))?;
        rims.push(Rim {
            source: p.display().to_string(),
            bytes,
        });
    }
    let (revocation, collateral) = match (nv.insecure_skip_revocation, nv.collateral) {
        (true, None) => {
            if nv.revocation_max_age_s.is_some() {
                bail!("revocation_max_age_s has no meaning with insecure_skip_revocation");
            }
            (RevocationPolicy::InsecureSkip, None)
        }
        (true, Some(_)) => bail!("give collateral or insecure_skip_revocation, not both"),
        (false, None) => bail!(
            "[rule.nvidia] needs collateral (a CRL/OCSP bundle directory) or \
             insecure_skip_revocation = true"
        ),
        (false, Some(dir)) => {
            let dir = resolve(&dir);
            if !dir.is_dir() {
                bail!("collateral {}: not a directory", dir.display());
            }
            let c = nvidia::Collateral::load_dir(&dir)
                .map_err(|e| anyhow::anyhow!("collateral {}: {e}", dir.display()))?;
            if c.is_empty() {
                bail!(
                    "collateral {}: holds no CRL or OCSP response",
                    dir.display()
                );
            }
            let age = nv
                .revocation_max_age_s
                .unwrap_or(DEFAULT_GPU_REVOCATION_MAX_AGE_S);
            if age == 0 {
                bail!("revocation_max_age_s must be at least 1");
            }
            (RevocationPolicy::Require { max_age_secs: age }, Some(c))
        }
    };
    let insecure_nonce = nv
        .insecure_nonce
        .map(|h| {
            hex::decode(&h)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .with_context(|| format!("rule `{n}`: insecure_nonce must be 64 hex digits"))
        })
        .transpose()?;
    Ok(NvidiaRule {
        rims,
        policy: GpuPolicy {
            revocation,
            require_report_fwid: nv.require_report_fwid,
        },
        collateral,
        insecure_now: nv.insecure_now,
        insecure_nonce,
    })
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Largest policy file read.
pub const MAX_POLICY_LEN: usize = 1 << 20;

/// `HEX` of exactly `len` bytes, not all zero unless `zero_ok`; the error names the rule
/// and the field.
fn check_hex(n: &str, field: &str, hex_str: &str, len: usize, zero_ok: bool) -> Result<()> {
    if hex_str.starts_with("firmware-only:") {
        bail!(
            "rule `{n}`: {field} is labelled firmware-only: `pqcc image measure --profile snp` \
             without --kernel covers OVMF alone, so it admits any kernel, initrd and command \
             line (and any init.toml); measure with --kernel, --initrd and --cmdline"
        );
    }
    let bytes = hex::decode(hex_str).ok().filter(|b| b.len() == len);
    let Some(bytes) = bytes else {
        bail!(
            "rule `{n}`: {field} `{hex_str}` is not {} hex digits ({len} bytes)",
            2 * len
        );
    };
    if !zero_ok && bytes.iter().all(|&b| b == 0) {
        bail!(
            "rule `{n}`: {field} is all zero: that is the value of a register nothing was \
             measured into, which any host can reproduce"
        );
    }
    Ok(())
}

/// Checks a `[rule.tee]` table when the policy loads; returns its insecure settings.
fn check_tee(n: &str, t: &TeePolicy) -> Result<Vec<String>> {
    let mut insecure = Vec::new();
    if t.insecure_allow_debug {
        insecure
            .push("insecure_allow_debug (a debug guest's memory is readable by the host)".into());
    }
    if t.insecure_any_measurement {
        insecure.push("insecure_any_measurement (any guest image is admitted)".into());
    }
    match t.platform {
        TeePlatform::Tdx => {
            let tdx = &t.tdx;
            if tdx.accepted_tcb_status.is_empty() {
                bail!("rule `{n}`: [rule.tee.tdx] accepted_tcb_status is empty: no TD would pass");
            }
            if tdx.accepted_tcb_status.contains(&TcbStatus::Revoked) {
                insecure.push(
                    "accepted_tcb_status includes Revoked (a platform whose TCB Intel revoked)"
                        .into(),
                );
            }
            if tdx.measurements.is_empty() && !t.insecure_any_measurement {
                bail!(
                    "rule `{n}`: [rule.tee.tdx] lists no measurements (MRTD, RTMR1, RTMR2 from \
                     `pqcc image measure --profile tdx`)"
                );
            }
            for (i, m) in tdx.measurements.iter().enumerate() {
                let f = |what: &str| format!("tdx.measurements[{i}].{what}");
                check_hex(n, &f("mrtd"), &m.mrtd, 48, false)?;
                for (what, v) in [("rtmr1", &m.rtmr1), ("rtmr2", &m.rtmr2)] {
                    let Some(v) = v else {
                        bail!(
                            "rule `{n}`: {} is missing: a TDX rule pins MRTD, RTMR1 (the \
                             kernel) and RTMR2 (command line and initrd, where the measured \
                             init.toml lives); without it a host boots the genuine kernel with \
                             an initramfs of its own and gets the rule's secrets",
                            f(what)
                        );
                    };
                    check_hex(n, &f(what), v, 48, false)?;
                }
                for (what, v) in [("rtmr0", &m.rtmr0), ("rtmr3", &m.rtmr3)] {
                    if let Some(v) = v {
                        check_hex(n, &f(what), v, 48, true)?;
                    }
                }
            }
        }
        TeePlatform::Snp => {
            let snp = &t.snp;
            if snp.measurements.is_empty() && !t.insecure_any_measurement {
                bail!(
                    "rule `{n}`: [rule.tee.snp] lists no measurements (`pqcc image measure \
                     --profile snp --kernel … --initrd … --cmdline …`)"
                );
            }
            for (i, m) in snp.measurements.iter().enumerate() {
                check_hex(n, &format!("snp.measurements[{i}]"), m, 48, false)?;
            }
            if let Some(h) = &snp.host_data {
                check_hex(n, "snp.host_data", h, 32, true)?;
            }
        }
    }
    Ok(insecure)
}

/// Reads the policy file at `path`: a regular file (symlinks followed) that group and
/// others cannot write or read, at most [`MAX_POLICY_LEN`] bytes. The policy decides
/// who gets which secret, so it is kept as a key file is.
pub fn read_policy_file(path: &Path) -> Result<Vec<u8>> {
    let buf = read_private_file(path, "broker policy", MAX_POLICY_LEN)?;
    Ok(buf.to_vec())
}

/// Reads a secret file as the broker releases it: a regular file (symlinks followed,
/// as Kubernetes mounts secrets), not accessible by group or others, 1 byte to
/// [`MAX_SECRET_LEN`] bytes.
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let buf = read_private_file(path, "secret file", MAX_SECRET_LEN)?;
    if buf.is_empty() {
        bail!("secret file {} is empty", path.display());
    }
    Ok(buf)
}

fn read_private_file(path: &Path, what: &str, max: usize) -> Result<Zeroizing<Vec<u8>>> {
    use std::io::Read;
    let (f, mode) = crate::keys::open_regular_file(path, &format!("a {what}"))?;
    if mode & 0o077 != 0 {
        bail!(
            "{what} {} has mode {mode:04o}, which lets group or others access it; refusing \
             to use it (chmod 600 it)",
            path.display()
        );
    }
    let mut buf = Zeroizing::new(Vec::new());
    f.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    if buf.len() > max {
        bail!("{what} {} is over {max} bytes", path.display());
    }
    Ok(buf)
}

impl Policy {
    /// Reads and checks the policy at `path` ([`read_policy_file`], then
    /// [`Policy::from_file_bytes`]).
    pub fn load(path: &Path, opts: LoadOptions) -> Result<Self> {
        let bytes = read_policy_file(path)?;
        Self::from_file_bytes(path, &bytes, opts)
    }

    /// Checks `bytes`, the contents of the policy file at `path` (relative paths in it
    /// are resolved against its folder): [`Policy::parse`], then the files it names
    /// ([`Policy::check_files`]), the dates of its collateral at the current time
    /// ([`Policy::check_dates`]), and its insecure settings against `opts`.
    pub fn from_file_bytes(path: &Path, bytes: &[u8], opts: LoadOptions) -> Result<Self> {
        let text = std::str::from_utf8(bytes)
            .with_context(|| format!("broker policy {}: not UTF-8", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let loaded = Self::parse(text, base).and_then(|p| {
            p.check_files()?;
            p.check_dates(now_unix())?;
            p.check_insecure(opts)?;
            Ok(p)
        });
        loaded.with_context(|| format!("broker policy {}", path.display()))
    }

    /// Every insecure setting of every rule, as `rule `NAME`: SETTING`.
    pub fn insecure_settings(&self) -> Vec<String> {
        self.rules
            .iter()
            .flat_map(|r| r.insecure.iter().map(|i| format!("rule `{}`: {i}", r.name)))
            .collect()
    }

    /// Refuses a policy with insecure settings unless `opts.allow_insecure`.
    pub fn check_insecure(&self, opts: LoadOptions) -> Result<()> {
        let list = self.insecure_settings();
        if !list.is_empty() && !opts.allow_insecure {
            bail!(
                "{} insecure setting(s), refused without --allow-insecure:\n  {}",
                list.len(),
                list.join("\n  ")
            );
        }
        Ok(())
    }

    /// Checks that every secret file exists and would be released as it is now: a
    /// regular file (symlinks followed), not accessible by group or others, 1 byte to
    /// [`MAX_SECRET_LEN`] long ([`read_secret_file`]).
    pub fn check_files(&self) -> Result<()> {
        for (name, src) in &self.secrets {
            if let SecretSource::File(p) = src {
                read_secret_file(p).with_context(|| format!("secrets.{name}"))?;
            }
        }
        Ok(())
    }

    /// Refuses collateral that is already past its date at `now` (Unix seconds): a
    /// TDX rule's DCAP collateral (TCB info and QE identity `nextUpdate`) and a GPU
    /// rule's CRLs and OCSP responses (`nextUpdate`, and `revocation_max_age_s`; a rule
    /// with `insecure_now` is judged at that time). Such a rule could admit nobody.
    pub fn check_dates(&self, now: u64) -> Result<()> {
        for r in &self.rules {
            let n = &r.name;
            if let Some(tdx) = r.tee.as_ref().and_then(|t| t.collateral.tdx.as_ref()) {
                let next = tdx.next_update();
                if next < now {
                    bail!(
                        "rule `{n}`: tdx_collateral expired at {} (nextUpdate of its TCB info \
                         or QE identity; now is {}): fetch fresh collateral",
                        crate::statements::rfc3339(next),
                        crate::statements::rfc3339(now)
                    );
                }
            }
            if let Some(nv) = &r.nvidia
                && let (Some(c), RevocationPolicy::Require { max_age_secs }) =
                    (&nv.collateral, nv.policy.revocation)
            {
                let at = nv.insecure_now.unwrap_or(now);
                let stale = c.stale_entries(at, max_age_secs);
                if !stale.is_empty() {
                    bail!(
                        "rule `{n}`: [rule.nvidia] collateral is out of date at {}: {}",
                        crate::statements::rfc3339(at),
                        stale.join("; ")
                    );
                }
            }
        }
        Ok(())
    }

    /// Parses policy text; relative secret files are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let handshake_timeout_s = raw
            .handshake_timeout_s
            .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT_S);
        if !(1..=300).contains(&handshake_timeout_s) {
            bail!("handshake_timeout_s must be 1..=300");
        }
        let idle_timeout_s = raw.idle_timeout_s.unwrap_or(DEFAULT_IDLE_TIMEOUT_S);
        if !(1..=86_400).contains(&idle_timeout_s) {
            bail!("idle_timeout_s must be 1..=86400");
        }
        let max_concurrent = raw.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT);
        if !(1..=4096).contains(&max_concurrent) {
            bail!("max_concurrent must be 1..=4096");
        }
        let max_per_peer = raw
            .max_per_peer
            .unwrap_or(DEFAULT_MAX_PER_PEER)
            .min(max_concurrent);
        if max_per_peer == 0 {
            bail!("max_per_peer must be at least 1");
        }
        let mut secrets = BTreeMap::new();
        for (name, s) in raw.secrets {
            check_secret_name(&name)?;
            let src = match (s.file, s.generate) {
                (Some(f), None) => {
                    SecretSource::File(if f.is_absolute() { f } else { base.join(f) })
                }
                (None, Some(n)) if (16..=4096).contains(&n) => SecretSource::Generate(n),
                (None, Some(_)) => bail!("secrets.{name}.generate must be 16..=4096 bytes"),
                _ => bail!("secrets.{name}: give exactly one of `file` or `generate`"),
            };
            secrets.insert(name, src);
        }
        if raw.rules.is_empty() {
            bail!("no [[rule]]: this policy would admit nobody");
        }
        let mut rules = Vec::with_capacity(raw.rules.len());
        for r in raw.rules {
            let n = &r.name;
            if n.is_empty() {
                bail!("a rule has an empty name");
            }
            let platform = parse_platform(&r.platform).with_context(|| {
                format!(
                    "rule `{n}`: platform `{}`: expected none, sev-snp or tdx",
                    r.platform
                )
            })?;
            if platform == Platform::InsecureNone && !r.insecure_no_tee {
                bail!(
                    "rule `{n}`: platform \"none\" has no TEE evidence at all; it is only \
                     accepted with `insecure_no_tee = true` in the same rule"
                );
            }
            if platform != Platform::InsecureNone && r.insecure_no_tee {
                bail!("rule `{n}`: insecure_no_tee only applies to platform \"none\"");
            }
            let read = |p: &Option<PathBuf>, what: &str| -> Result<Option<Vec<u8>>> {
                p.as_ref()
                    .map(|p| {
                        let p = if p.is_absolute() {
                            p.clone()
                        } else {
                            base.join(p)
                        };
                        std::fs::read(&p)
                            .with_context(|| format!("rule `{n}`: {what} {}", p.display()))
                    })
                    .transpose()
            };
            let mut insecure = Vec::new();
            if platform == Platform::InsecureNone {
                insecure.push(
                    "platform \"none\" (insecure_no_tee: no TEE evidence at all)".to_string(),
                );
            }
            if let Some(t) = &r.tee {
                insecure.extend(check_tee(n, t)?);
            }
            let tee = match (platform, r.tee) {
                (Platform::InsecureNone, None) => None,
                (Platform::InsecureNone, Some(_)) => {
                    bail!("rule `{n}`: a [rule.tee] table needs platform sev-snp or tdx")
                }
                (_, None) => bail!(
                    "rule `{n}`: platform \"{}\" needs a [rule.tee] table (measurements, TCB)",
                    r.platform
                ),
                (p, Some(policy)) => {
                    let want = if p == Platform::Tdx {
                        TeePlatform::Tdx
                    } else {
                        TeePlatform::Snp
                    };
                    if policy.platform != want {
                        bail!("rule `{n}`: [rule.tee] platform differs from the rule's");
                    }
                    let tdx = match read(&r.tdx_collateral, "tdx_collateral")? {
                        Some(b) => Some(
                            TdxCollateral::from_json(&b)
                                .map_err(|e| anyhow::anyhow!("rule `{n}`: tdx_collateral: {e}"))?,
                        ),
                        None if want == TeePlatform::Tdx => {
                            bail!(
                                "rule `{n}`: a TDX rule needs tdx_collateral (DCAP collateral JSON)"
                            )
                        }
                        None => None,
                    };
                    Some(TeeRule {
                        policy,
                        collateral: Collateral {
                            snp_vcek: read(&r.snp_vcek, "snp_vcek")?,
                            snp_chain: read(&r.snp_chain, "snp_chain")?,
                            snp_crl: read(&r.snp_crl, "snp_crl")?,
                            tdx,
                        },
                    })
                }
            };
            if r.models.is_empty() {
                bail!("rule `{n}`: `models` is empty: the rule would admit no model");
            }
            let models = r
                .models
                .iter()
                .map(|m| ModelId::parse(m))
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("rule `{n}`"))?;
            let gpu = match r.gpu.as_deref() {
                None | Some("none") => GpuRequirement::None,
                Some("required") => GpuRequirement::Required,
                Some(o) => bail!("rule `{n}`: gpu `{o}`: expected none or required"),
            };
            let resolve = |p: &Path| {
                if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    base.join(p)
                }
            };
            let nvidia = match (gpu, r.nvidia) {
                (GpuRequirement::None, None) => None,
                (GpuRequirement::None, Some(_)) => {
                    bail!("rule `{n}`: a [rule.nvidia] table needs gpu = \"required\"")
                }
                (GpuRequirement::Required, None) => bail!(
                    "rule `{n}`: gpu = \"required\" needs a [rule.nvidia] table (RIMs, revocation)"
                ),
                (GpuRequirement::Required, Some(nv)) => {
                    Some(nvidia_rule(n, nv, &resolve).with_context(|| format!("rule `{n}`"))?)
                }
            };
            if r.secrets.is_empty() {
                bail!("rule `{n}`: `secrets` is empty");
            }
            if r.secrets.len() > MAX_GRANTS {
                bail!("rule `{n}`: at most {MAX_GRANTS} secrets");
            }
            for s in &r.secrets {
                if !secrets.contains_key(s) {
                    bail!("rule `{n}`: secret `{s}` is not defined under [secrets]");
                }
                if r.secrets.iter().filter(|x| *x == s).count() > 1 {
                    bail!("rule `{n}`: secret `{s}` listed twice");
                }
            }
            if let Some(nv) = &nvidia {
                insecure.extend(nv.insecure_settings().iter().map(|s| s.to_string()));
            }
            rules.push(Rule {
                name: r.name,
                platform,
                models,
                gpu,
                secrets: r.secrets,
                tee,
                nvidia,
                insecure,
            });
        }
        // A secret that a `none` rule releases to anything that asks is no TEE secret.
        for none in rules
            .iter()
            .filter(|r| r.platform == Platform::InsecureNone)
        {
            for tee in rules
                .iter()
                .filter(|r| r.platform != Platform::InsecureNone)
            {
                if let Some(s) = none.secrets.iter().find(|s| tee.secrets.contains(s)) {
                    bail!(
                        "secret `{s}` is released by the platform \"none\" rule `{}` and by \
                         the TEE rule `{}`: a process that only claims to be a guest would \
                         get it; give the TEE rule its own secrets (this is refused even \
                         with --allow-insecure)",
                        none.name,
                        tee.name
                    );
                }
            }
        }
        Ok(Self {
            handshake_timeout_s,
            idle_timeout_s,
            max_concurrent,
            max_per_peer,
            secrets,
            rules,
        })
    }

    /// The first rule admitting `platform` and the model `root_hash` (name and
    /// revision must match too), or `None`.
    pub fn find(
        &self,
        platform: Platform,
        name: &str,
        revision: &str,
        root_hash: &[u8; 32],
    ) -> Option<&Rule> {
        self.rules.iter().find(|r| {
            r.platform == platform
                && r.models.iter().any(|m| {
                    m.name == name
                        && m.revision == revision
                        && pqcc_core::secret::ct_eq(&m.root_hash, root_hash)
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0101010101010101010101010101010101010101010101010101010101010101";

    fn ok(text: &str) -> Policy {
        Policy::parse(text, Path::new("/base")).unwrap()
    }

    fn err(text: &str) -> String {
        format!("{:#}", Policy::parse(text, Path::new("/base")).unwrap_err())
    }

    fn rule(extra: &str) -> String {
        format!(
            "[secrets.k]\nfile = \"k.bin\"\n[[rule]]\nname = \"r\"\nplatform = \"none\"\n\
             models = [\"m@1:{H}\"]\nsecrets = [\"k\"]\n{extra}"
        )
    }

    /// A TDX rule pins the values `pqcc image measure --profile tdx` predicts.
    #[test]
    fn tdx_rule_pins_mrtd_rtmr1_rtmr2() {
        let coll = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/tdx/tdx_quote_collateral.json");
        let (m, r1, r2) = ("aa".repeat(48), "bb".repeat(48), "cc".repeat(48));
        let text = format!(
            "[secrets.k]\nfile = \"k.bin\"\n[[rule]]\nname = \"r\"\nplatform = \"tdx\"\n\
             models = [\"m@1:{H}\"]\nsecrets = [\"k\"]\ntdx_collateral = \"{}\"\n\
             [rule.tee]\nplatform = \"tdx\"\n[[rule.tee.tdx.measurements]]\n\
             mrtd = \"{m}\"\nrtmr1 = \"{r1}\"\nrtmr2 = \"{r2}\"\n",
            coll.display()
        );
        let p = ok(&text);
        let tee = p.rules[0].tee.as_ref().unwrap();
        let want = &tee.policy.tdx.measurements[0];
        assert_eq!(want.mrtd, m);
        assert_eq!(want.rtmr1.as_deref(), Some(r1.as_str()));
        assert_eq!(want.rtmr2.as_deref(), Some(r2.as_str()));
        assert!(want.rtmr0.is_none(), "RTMR0 left out is not checked");
        assert!(err(&text.replace("rtmr2", "rtmr9")).contains("rtmr9"));
    }

    fn tdx_rule(measurements: &str) -> String {
        let coll = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/tdx/tdx_quote_collateral.json");
        format!(
            "[secrets.k]\nfile = \"k.bin\"\n[[rule]]\nname = \"r\"\nplatform = \"tdx\"\n\
             models = [\"m@1:{H}\"]\nsecrets = [\"k\"]\ntdx_collateral = \"{}\"\n\
             [rule.tee]\nplatform = \"tdx\"\n{measurements}",
            coll.display()
        )
    }

    fn tdx_set(mrtd: &str, rtmr1: &str, rtmr2: &str) -> String {
        format!(
            "[[rule.tee.tdx.measurements]]\nmrtd = \"{mrtd}\"\nrtmr1 = \"{rtmr1}\"\n\
             rtmr2 = \"{rtmr2}\"\n"
        )
    }

    /// Issue 29: a TDX rule that leaves out RTMR1 or RTMR2, or pins one at zero, would
    /// admit a host-made initramfs; bad hex and an empty list fail at load.
    #[test]
    fn tdx_rules_must_pin_the_kernel_and_the_initramfs() {
        let (m, r1, r2, z) = (
            "aa".repeat(48),
            "bb".repeat(48),
            "cc".repeat(48),
            "00".repeat(48),
        );
        ok(&tdx_rule(&tdx_set(&m, &r1, &r2)));
        let no_rtmr2 = format!("[[rule.tee.tdx.measurements]]\nmrtd = \"{m}\"\nrtmr1 = \"{r1}\"\n");
        assert!(err(&tdx_rule(&no_rtmr2)).contains("rtmr2 is missing"));
        let mrtd_only = format!("[[rule.tee.tdx.measurements]]\nmrtd = \"{m}\"\n");
        assert!(err(&tdx_rule(&mrtd_only)).contains("rtmr1 is missing"));
        assert!(err(&tdx_rule(&tdx_set(&m, &r1, &z))).contains("rtmr2 is all zero"));
        assert!(err(&tdx_rule(&tdx_set(&m, &z, &r2))).contains("rtmr1 is all zero"));
        assert!(err(&tdx_rule(&tdx_set(&z, &r1, &r2))).contains("mrtd is all zero"));
        let e = err(&tdx_rule(&tdx_set(&m[..94], &r1, &r2)));
        assert!(e.contains("mrtd") && e.contains("96 hex digits"), "{e}");
        assert!(err(&tdx_rule(&tdx_set(&m, &r1, &r2.replace('c', "g")))).contains("rtmr2"));
        assert!(err(&tdx_rule("")).contains("lists no measurements"));
        // RTMR0 and RTMR3, when pinned, are checked as hex too (zero allowed).
        let with_r3 = tdx_set(&m, &r1, &r2) + &format!("rtmr3 = \"{z}\"\n");
        ok(&tdx_rule(&with_r3));
        assert!(err(&tdx_rule(&(tdx_set(&m, &r1, &r2) + "rtmr0 = \"xy\"\n"))).contains("rtmr0"));
        // Accepting a revoked TCB is an insecure setting.
        let revoked = tdx_set(&m, &r1, &r2).replace(
            "[[rule.tee.tdx.measurements]]",
            "[rule.tee.tdx]\naccepted_tcb_status = [\"UpToDate\", \"Revoked\"]\n\
             [[rule.tee.tdx.measurements]]",
        );
        let p = ok(&tdx_rule(&revoked));
        assert!(
            p.rules[0].insecure[0].contains("Revoked"),
            "{:?}",
            p.rules[0].insecure
        );
        assert!(p.check_insecure(LoadOptions::default()).is_err());
        assert!(
            p.check_insecure(LoadOptions {
                allow_insecure: true
            })
            .is_ok()
        );
    }

    /// The DCAP collateral's dates are judged when the policy loads.
    #[test]
    fn expired_tdx_collateral_fails_at_load() {
        let (m, r1, r2) = ("aa".repeat(48), "bb".repeat(48), "cc".repeat(48));
        let p = ok(&tdx_rule(&tdx_set(&m, &r1, &r2)));
        // The pinned time of ../shared/data/tdx (its README): still inside the window.
        p.check_dates(1_752_919_234).unwrap();
        let e = format!("{:#}", p.check_dates(1_800_000_000).unwrap_err());
        assert!(e.contains("tdx_collateral expired at 2025-"), "{e}");
    }

    fn snp_rule(tee: &str) -> String {
        format!(
            "[secrets.k]\nfile = \"k.bin\"\n[[rule]]\nname = \"s\"\nplatform = \"sev-snp\"\n\
             models = [\"m@1:{H}\"]\nsecrets = [\"k\"]\n[rule.tee]\nplatform = \"snp\"\n{tee}"
        )
    }

    #[test]
    fn snp_measurements_are_checked_at_load() {
        let m = "ab".repeat(48);
        ok(&snp_rule(&format!(
            "snp = {{ min_tcb = {{ bootloader = 3, snp = 8, microcode = 115 }}, measurements = [\"{m}\"] }}"
        )));
        assert!(
            err(&snp_rule(
                "snp = { min_tcb = { bootloader = 3, snp = 8, microcode = 115 } }"
            ))
            .contains("lists no measurements")
        );
        // No TCB floor: refused (pqcc_verify requires one per accepted product).
        assert!(err(&snp_rule("")).contains("min_tcb"));
        let e = err(&snp_rule(
            "snp = { min_tcb = { bootloader = 3, snp = 8, microcode = 115 }, measurements = [\"abcd\"] }",
        ));
        assert!(
            e.contains("snp.measurements[0]") && e.contains("96 hex"),
            "{e}"
        );
        // What `pqcc image measure --profile snp` prints without --kernel.
        let e = err(&snp_rule(&format!(
            "snp = {{ min_tcb = {{ bootloader = 3, snp = 8, microcode = 115 }}, measurements = [\"firmware-only:{m}\"] }}"
        )));
        assert!(
            e.contains("firmware-only") && e.contains("any kernel"),
            "{e}"
        );
        let e = err(&snp_rule(&format!(
            "snp = {{ min_tcb = {{ bootloader = 3, snp = 8, microcode = 115 }}, measurements = [\"{m}\"], host_data = \"00\" }}"
        )));
        assert!(e.contains("host_data"), "{e}");
        // Insecure settings are named, and refused unless allowed.
        let p = ok(&snp_rule(
            "insecure_any_measurement = true\ninsecure_allow_debug = true\n\
             snp = { min_tcb = { bootloader = 3, snp = 8, microcode = 115 } }\n",
        ));
        let list = p.insecure_settings();
        assert_eq!(list.len(), 2, "{list:?}");
        assert!(
            list[0].starts_with("rule `s`: insecure_allow_debug"),
            "{list:?}"
        );
        assert!(
            list[1].starts_with("rule `s`: insecure_any_measurement"),
            "{list:?}"
        );
        let e = format!(
            "{:#}",
            p.check_insecure(LoadOptions::default()).unwrap_err()
        );
        assert!(
            e.contains("--allow-insecure") && e.contains("insecure_allow_debug"),
            "{e}"
        );
    }

    #[test]
    fn a_none_rule_is_insecure_and_never_shares_a_secret_with_a_tee_rule() {
        let p = ok(&rule("insecure_no_tee = true"));
        assert_eq!(p.insecure_settings().len(), 1);
        assert!(p.insecure_settings()[0].contains("platform \"none\""));
        assert!(p.check_insecure(LoadOptions::default()).is_err());
        let m = "ab".repeat(48);
        let both = format!(
            "{}\n[[rule]]\nname = \"tee\"\nplatform = \"sev-snp\"\nmodels = [\"m@1:{H}\"]\n\
             secrets = [\"k\"]\n[rule.tee]\nplatform = \"snp\"\nsnp = {{ min_tcb = {{ bootloader = 3, snp = 8, microcode = 115 }}, measurements = [\"{m}\"] }}\n",
            rule("insecure_no_tee = true")
        );
        let e = err(&both);
        assert!(
            e.contains("secret `k`") && e.contains("`r`") && e.contains("`tee`"),
            "{e}"
        );
        // With its own secret, the TEE rule loads beside the none rule.
        let apart = both
            .replace(
                "secrets = [\"k\"]\n[rule.tee]",
                "secrets = [\"t\"]\n[rule.tee]",
            )
            .replace(
                "[[rule]]\nname = \"r\"",
                "[secrets.t]\ngenerate = 32\n[[rule]]\nname = \"r\"",
            );
        ok(&apart);
    }

    #[test]
    fn secret_and_policy_files_are_checked_at_load() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pqcc-policy-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let text = rule("insecure_no_tee = true");
        let policy = dir.join("broker.toml");
        std::fs::write(&policy, &text).unwrap();
        let chmod = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        let allow = LoadOptions {
            allow_insecure: true,
        };
        let load = || format!("{:#}", Policy::load(&policy, allow).unwrap_err());
        // The policy file itself: group/other access refused.
        chmod(&policy, 0o644);
        assert!(load().contains("mode 0644"), "{}", load());
        chmod(&policy, 0o600);
        // The secret file: missing, empty, readable by others, a directory.
        let e = load();
        assert!(e.contains("secrets.k") && e.contains("k.bin"), "{e}");
        let k = dir.join("k.bin");
        std::fs::write(&k, b"").unwrap();
        chmod(&k, 0o600);
        assert!(load().contains("is empty"), "{}", load());
        std::fs::write(&k, b"secret").unwrap();
        chmod(&k, 0o640);
        assert!(load().contains("mode 0640"), "{}", load());
        chmod(&k, 0o600);
        Policy::load(&policy, allow).unwrap();
        // Insecure settings need the option.
        assert!(
            format!(
                "{:#}",
                Policy::load(&policy, LoadOptions::default()).unwrap_err()
            )
            .contains("--allow-insecure")
        );
        // A symlink (as Kubernetes mounts secrets) to a private file is followed.
        std::fs::rename(&k, dir.join("real.bin")).unwrap();
        std::os::unix::fs::symlink("real.bin", &k).unwrap();
        Policy::load(&policy, allow).unwrap();
        chmod(&dir.join("real.bin"), 0o644);
        assert!(load().contains("mode 0644"), "{}", load());
        std::fs::remove_file(&k).unwrap();
        std::fs::create_dir(&k).unwrap();
        assert!(load().contains("not a regular file"), "{}", load());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn max_per_peer_defaults_and_is_capped() {
        let p = ok(&rule("insecure_no_tee = true"));
        assert_eq!(p.max_per_peer, DEFAULT_MAX_PER_PEER);
        let p = ok(&format!(
            "max_concurrent = 4\n{}",
            rule("insecure_no_tee = true")
        ));
        assert_eq!(p.max_per_peer, 4);
        assert!(
            err(&format!(
                "max_per_peer = 0\n{}",
                rule("insecure_no_tee = true")
            ))
            .contains("max_per_peer")
        );
    }

    #[test]
    fn parses_and_finds() {
        let p = ok(&rule("insecure_no_tee = true"));
        assert_eq!(
            p.secrets["k"],
            SecretSource::File(PathBuf::from("/base/k.bin"))
        );
        assert_eq!(p.handshake_timeout_s, DEFAULT_HANDSHAKE_TIMEOUT_S);
        assert!(p.find(Platform::InsecureNone, "m", "1", &[1; 32]).is_some());
        assert!(p.find(Platform::InsecureNone, "m", "1", &[2; 32]).is_none());
        assert!(p.find(Platform::InsecureNone, "m", "2", &[1; 32]).is_none());
        assert!(p.find(Platform::Tdx, "m", "1", &[1; 32]).is_none());
    }

    fn set_a(name: &str) -> String {
        format!(
            "{}/../../shared/data/nvidia-gpu/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    #[test]
    fn nvidia_rules() {
        let rims = format!(
            "rims = [\"{}\", \"{}\"]",
            set_a("Driver_RIM_test_no_gpu.swidtag"),
            set_a("1010_0200_882_96005E0001_test_no_gpu.swidtag")
        );
        let gpu = |extra: &str| {
            rule(&format!(
                "insecure_no_tee = true\ngpu = \"required\"\n[rule.nvidia]\n{rims}\n{extra}"
            ))
        };
        let p = ok(&gpu("insecure_skip_revocation = true"));
        let nv = p.rules[0].nvidia.as_ref().unwrap();
        assert_eq!(nv.rims.len(), 2);
        assert_eq!(nv.insecure_settings(), ["insecure_skip_revocation"]);
        let p = ok(&gpu(&format!(
            "insecure_skip_revocation = true\ninsecure_now = 1690000000\ninsecure_nonce = \"{}\"",
            "ab".repeat(32)
        )));
        let nv = p.rules[0].nvidia.as_ref().unwrap();
        assert_eq!(nv.insecure_nonce, Some([0xab; 32]));
        assert_eq!(nv.insecure_now, Some(1_690_000_000));
        assert_eq!(nv.insecure_settings().len(), 3);
        assert!(err(&gpu("")).contains("needs collateral"));
        assert!(
            err(&gpu(
                "insecure_skip_revocation = true\ninsecure_nonce = \"ab\""
            ))
            .contains("64 hex")
        );
        assert!(err(&gpu("collateral = \"/nonexistent/c\"")).contains("not a directory"));
        let empty = std::env::temp_dir().join(format!("pqcc-empty-coll-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        assert!(
            err(&gpu(&format!("collateral = \"{}\"", empty.display())))
                .contains("holds no CRL or OCSP")
        );
        let _ = std::fs::remove_dir(&empty);
        assert!(
            err(&gpu(
                "insecure_skip_revocation = true\nrevocation_max_age_s = 5"
            ))
            .contains("no meaning")
        );
        assert!(err(&gpu("insecure_skip_revocation = true\nbogus = 1")).contains("bogus"));
        let missing = gpu("insecure_skip_revocation = true").replace("Driver_RIM", "No_RIM");
        assert!(err(&missing).contains("No_RIM"));
    }

    #[test]
    fn refusals() {
        assert!(err(&rule("")).contains("insecure_no_tee = true"));
        assert!(err("").contains("admit nobody"));
        assert!(err(&rule("insecure_no_tee = true\nbogus = 1")).contains("bogus"));
        assert!(
            err(&rule("insecure_no_tee = true").replace("[\"k\"]", "[\"x\"]"))
                .contains("not defined")
        );
        assert!(err(&rule("insecure_no_tee = true").replace("[\"k\"]", "[]")).contains("empty"));
        assert!(
            err(&rule("insecure_no_tee = true").replace(&format!("[\"m@1:{H}\"]"), "[]"))
                .contains("admit no model")
        );
        assert!(err(&rule("insecure_no_tee = true").replace(H, "abcd")).contains("64 hex"));
        assert!(err(&rule("insecure_no_tee = true\ngpu = \"maybe\"")).contains("gpu"));
        assert!(err(&rule("insecure_no_tee = true\ngpu = \"required\"")).contains("[rule.nvidia]"));
        assert!(
            err(&rule(
                "insecure_no_tee = true\n[rule.nvidia]\nrims = [\"d.xml\"]\ninsecure_skip_revocation = true"
            ))
            .contains("needs gpu = \"required\"")
        );
        assert!(
            err(&rule("insecure_no_tee = true").replace("file = \"k.bin\"", "generate = 8"))
                .contains("16..=4096")
        );
        assert!(
            err(&rule("insecure_no_tee = true").replace("[secrets.k]", "[secrets.\"../k\"]"))
                .contains("secret name")
        );
        assert!(
            err(&format!(
                "handshake_timeout_s = 0\n{}",
                rule("insecure_no_tee = true")
            ))
            .contains("handshake_timeout_s")
        );
    }
}
