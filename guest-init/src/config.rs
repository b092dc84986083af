//! The measured configuration, `/etc/pqcc/init.toml`.
//!
//! The file travels inside the initramfs, so it is measured with it (by the TEE's
//! launch measurement of the initrd, or the kernel-hashes of SEV-SNP). Everything the
//! guest later trusts about the model — its root hash and salt above all — comes from
//! here and never from the disks. Parsing is strict: unknown keys anywhere are an
//! error, hex fields must have their exact lengths, paths must be absolute.
//!
//! ```toml
//! [model]
//! name = "tiny"
//! revision = "r1"
//! root_hash = "<64 hex digits>"     # SHA-256 verity root
//! salt = "<hex, even length>"        # may be "" for no salt
//! data_blocks = 16                   # 4096-byte blocks of the data disk
//! data_serial = "pqcc-model-data"    # virtio-blk serials of the two disks
//! hash_serial = "pqcc-model-hash"
//!
//! [platform]
//! required = "none"                  # none | tdx | sev-snp (or snp)
//! insecure_no_tee = true             # required with "none"
//!
//! [broker]                           # required for tdx/snp; optional with "none"
//! public_key = "<hex of an ML-DSA-65 public key>"
//! transport = "virtio-serial:org.pqcc.broker.0"  # or virtio-console:/dev/hvcN,
//!                                    # vsock:CID:PORT, tcp:IP:PORT
//! wait_ms = 30000                    # how long the broker may take to answer at all
//! timeout_ms = 30000                 # handshake + secrets once it answered
//!
//! [workload]
//! command = "/bin/workload"
//! args = ["--flag"]
//! env = { RUST_LOG = "info" }
//!
//! [modules]
//! load = ["/lib/modules/virtio_ring.ko", "/lib/modules/virtio.ko"]
//!
//! [gpu]                              # optional; required = true needs a [broker]
//! required = true                    # attest every NVIDIA GPU (docs/gpu-attestation.md)
//! helper = "/bin/pqcc-nvml-helper"   # the dynamically linked NVML helper
//! nvml_library = "libnvidia-ml.so.1" # what the helper loads (default shown)
//! wait_ms = 60000                    # for the driver and a GPU to appear (default)
//! call_timeout_ms = 30000            # per NVML call through the helper (default)
//! rims = ["/etc/pqcc/gpu/driver.swidtag", "/etc/pqcc/gpu/vbios.swidtag"]
//! revocation = "broker"              # broker: the broker checks CRL/OCSP | require:
//! # collateral = "/etc/pqcc/gpu/collateral"   # here too, from this bundle (with require)
//! # revocation_max_age_s = 604800             # (with require)
//! require_report_fwid = false        # default
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// Largest config file read, in bytes.
pub const MAX_CONFIG_LEN: usize = 64 * 1024;
/// Length of an ML-DSA-65 public key in bytes (FIPS 204, Table 2).
pub const ML_DSA_65_PUBLIC_KEY_LEN: usize = 1952;
/// Largest verity salt the kernel accepts, in bytes (`MAX_SALT_SIZE` in dm-verity).
pub const MAX_SALT_LEN: usize = 256;
/// Environment names the init sets itself and the config may not override.
pub const RESERVED_ENV: &[&str] = &[
    "PQCC_SECRETS_DIR",
    "MODEL_NAME",
    "MODEL_COMMIT",
    "MODEL_VERITY_HASH",
    "MODEL_DEVICE",
    "MODEL_PATH",
];

/// A checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The model to open.
    pub model: Model,
    /// The platform the guest must run on.
    pub platform: Platform,
    /// The broker, when one is configured (used by the attestation stage, later).
    pub broker: Option<Broker>,
    /// What to run once everything is checked.
    pub workload: Workload,
    /// Kernel modules to load, in this order.
    pub modules: Vec<String>,
    /// Tell the host the outcome through QEMU's `isa-debug-exit` port (tests only).
    pub qemu_debug_exit: bool,
    /// How long to wait for the model disks to appear, in milliseconds.
    pub disk_wait_ms: u64,
    /// The GPU gate, when `[gpu] required = true`.
    pub gpu: Option<Gpu>,
}

/// The GPU gate's settings (`[gpu]` with `required = true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    /// The NVML helper program (absolute path in the initramfs).
    pub helper: String,
    /// The library the helper loads (a file name for the loader, or a path).
    pub nvml_library: String,
    /// How long the driver and at least one GPU may take to appear, in ms.
    pub wait_ms: u64,
    /// How long one NVML call through the helper may take, in ms.
    pub call_timeout_ms: u64,
    /// The driver and VBIOS RIM files (absolute paths in the initramfs).
    pub rims: Vec<String>,
    /// How the local verification treats certificate revocation.
    pub revocation: GpuRevocation,
    /// Fail a report without the FWID opaque field.
    pub require_report_fwid: bool,
}

/// Revocation in the guest's local GPU verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuRevocation {
    /// Not checked in the guest (it has no network and its clock is the host's); the
    /// broker, which verifies the same evidence before releasing anything, checks it.
    Broker,
    /// Checked here too, against a CRL/OCSP bundle in the initramfs.
    Require {
        /// The bundle's directory.
        collateral: String,
        /// Oldest acceptable status, in seconds.
        max_age_s: u64,
    },
}

/// Default [`Gpu::wait_ms`]: 60 s.
pub const DEFAULT_GPU_WAIT_MS: u64 = 60_000;
/// Default [`Gpu::call_timeout_ms`]: 30 s.
pub const DEFAULT_GPU_CALL_TIMEOUT_MS: u64 = 30_000;
/// Most RIM files.
pub const MAX_GPU_RIMS: usize = 16;

/// The model's identity and where its disks are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// Model name.
    pub name: String,
    /// Revision (a commit or tag), given to the workload as `MODEL_COMMIT`.
    pub revision: String,
    /// The dm-verity root hash (SHA-256).
    pub root_hash: [u8; 32],
    /// The dm-verity salt.
    pub salt: Vec<u8>,
    /// Number of 4096-byte data blocks.
    pub data_blocks: u64,
    /// First block of the hash tree on the hash disk (1 with veritysetup's superblock).
    pub hash_start_block: u64,
    /// virtio-blk serial of the data disk.
    pub data_serial: String,
    /// virtio-blk serial of the hash disk.
    pub hash_serial: String,
}

/// The TEE platform the guest requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// No TEE. Only allowed with `insecure_no_tee = true`; a production broker refuses it.
    InsecureNone,
    /// Intel TDX.
    Tdx,
    /// AMD SEV-SNP.
    Snp,
}

/// Where and who the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// The broker's ML-DSA-65 public key.
    pub public_key: Vec<u8>,
    /// How to reach it.
    pub transport: Transport,
    /// How long to wait for the broker to answer at all (its Challenge), in ms.
    pub wait_ms: u64,
    /// How long the handshake and the secrets may take once the Challenge arrived, in ms.
    pub timeout_ms: u64,
}

/// Default [`Broker::wait_ms`]: 30 s.
pub const DEFAULT_BROKER_WAIT_MS: u64 = 30_000;
/// Default [`Broker::timeout_ms`]: 30 s.
pub const DEFAULT_BROKER_TIMEOUT_MS: u64 = 30_000;

/// A broker transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A named virtio-serial port (`virtio-serial:org.pqcc.broker.0`), found through
    /// `/sys/class/virtio-ports/*/name`; QEMU: `-device virtserialport,name=…` on a
    /// chardev. The default for QEMU guests: a plain byte pipe with no tty layer.
    VirtioSerial(String),
    /// A virtio console port, a tty in the guest (`virtio-console:/dev/hvc1`), used in
    /// raw mode.
    VirtioConsole(String),
    /// vsock (`vsock:CID:PORT`).
    Vsock {
        /// Context id.
        cid: u32,
        /// Port.
        port: u32,
    },
    /// TCP (`tcp:HOST:PORT`).
    Tcp(String),
}

/// The workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Absolute path of the program.
    pub command: String,
    /// Its arguments (after argv\[0\]).
    pub args: Vec<String>,
    /// Extra environment, sorted by name.
    pub env: BTreeMap<String, String>,
}

/// Why a config was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

// The file as written; `parse` turns it into a checked `Config`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    model: RawModel,
    platform: RawPlatform,
    broker: Option<RawBroker>,
    workload: RawWorkload,
    #[serde(default)]
    modules: RawModules,
    #[serde(default)]
    debug: RawDebug,
    gpu: Option<RawGpu>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGpu {
    required: bool,
    helper: Option<String>,
    nvml_library: Option<String>,
    wait_ms: Option<u64>,
    call_timeout_ms: Option<u64>,
    rims: Option<Vec<String>>,
    revocation: Option<String>,
    collateral: Option<String>,
    revocation_max_age_s: Option<u64>,
    require_report_fwid: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    revision: String,
    root_hash: String,
    salt: String,
    data_blocks: u64,
    #[serde(default = "one")]
    hash_start_block: u64,
    data_serial: String,
    hash_serial: String,
}

fn one() -> u64 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlatform {
    required: String,
    #[serde(default)]
    insecure_no_tee: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBroker {
    public_key: String,
    transport: String,
    #[serde(default = "default_broker_wait_ms")]
    wait_ms: u64,
    #[serde(default = "default_broker_timeout_ms")]
    timeout_ms: u64,
}

fn default_broker_wait_ms() -> u64 {
    DEFAULT_BROKER_WAIT_MS
}

fn default_broker_timeout_ms() -> u64 {
    DEFAULT_BROKER_TIMEOUT_MS
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawModules {
    #[serde(default)]
    load: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDebug {
    #[serde(default)]
    qemu_debug_exit: bool,
    #[serde(default)]
    disk_wait_ms: Option<u64>,
}

/// Default wait for the model disks.
pub const DEFAULT_DISK_WAIT_MS: u64 = 10_000;

/// Decodes lowercase or uppercase hex of exactly `len` bytes (`None`: any even length).
pub fn decode_hex(s: &str, len: Option<usize>, what: &str) -> Result<Vec<u8>, ConfigError> {
    if !s.len().is_multiple_of(2) {
        return err(format!("{what}: odd number of hex digits"));
    }
    if let Some(n) = len
        && s.len() != 2 * n
    {
        return err(format!(
            "{what}: expected {} hex digits, got {}",
            2 * n,
            s.len()
        ));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 2);
    for pair in b.chunks_exact(2) {
        let hi = hex_val(pair[0]);
        let lo = hex_val(pair[1]);
        match (hi, lo) {
            (Some(h), Some(l)) => out.push((h << 4) | l),
            _ => return err(format!("{what}: not hex")),
        }
    }
    Ok(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Lowercase hex.
pub fn to_hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(2 * b.len());
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

// A name that is safe to print and to put on a kernel table line: printable ASCII,
// no spaces, bounded.
fn check_token(v: &str, what: &str, max: usize) -> Result<(), ConfigError> {
    if v.is_empty() || v.len() > max {
        return err(format!("{what}: must be 1 to {max} bytes"));
    }
    if !v.bytes().all(|c| c.is_ascii_graphic()) {
        return err(format!("{what}: only printable ASCII without spaces"));
    }
    Ok(())
}

fn check_abs_path(v: &str, what: &str) -> Result<(), ConfigError> {
    check_token(v, what, 4096)?;
    if !v.starts_with('/') || v.split('/').any(|c| c == "..") {
        return err(format!("{what}: must be an absolute path without `..`"));
    }
    Ok(())
}

fn parse_transport(s: &str) -> Result<Transport, ConfigError> {
    let Some((kind, rest)) = s.split_once(':') else {
        return err("broker.transport: expected KIND:ADDRESS");
    };
    match kind {
        "virtio-console" => {
            check_abs_path(rest, "broker.transport")?;
            if !rest.starts_with("/dev/") {
                return err("broker.transport: virtio-console needs a /dev/ path");
            }
            Ok(Transport::VirtioConsole(rest.to_owned()))
        }
        "virtio-serial" => {
            check_token(rest, "broker.transport port name", 128)?;
            Ok(Transport::VirtioSerial(rest.to_owned()))
        }
        "vsock" => {
            let Some((cid, port)) = rest.split_once(':') else {
                return err("broker.transport: expected vsock:CID:PORT");
            };
            let (Ok(cid), Ok(port)) = (cid.parse::<u32>(), port.parse::<u32>()) else {
                return err("broker.transport: vsock CID and PORT must be decimal u32");
            };
            Ok(Transport::Vsock { cid, port })
        }
        "tcp" => {
            let Some((host, port)) = rest.rsplit_once(':') else {
                return err("broker.transport: expected tcp:HOST:PORT");
            };
            check_token(host, "broker.transport host", 253)?;
            if port.parse::<u16>().is_err() {
                return err("broker.transport: tcp PORT must be a decimal u16");
            }
            Ok(Transport::Tcp(rest.to_owned()))
        }
        _ => err(format!("broker.transport: unknown kind `{kind}`")),
    }
}

/// Parses and checks a config file's text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    if text.len() > MAX_CONFIG_LEN {
        return err(format!("larger than {MAX_CONFIG_LEN} bytes"));
    }
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        // toml's messages span several lines; the console gets one.
        ConfigError(
            e.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        )
    })?;

    let m = raw.model;
    check_token(&m.name, "model.name", 255)?;
    check_token(&m.revision, "model.revision", 255)?;
    let root: [u8; 32] = decode_hex(&m.root_hash, Some(32), "model.root_hash")?
        .try_into()
        .map_err(|_| ConfigError("model.root_hash: expected 32 bytes".into()))?;
    let salt = decode_hex(&m.salt, None, "model.salt")?;
    if salt.len() > MAX_SALT_LEN {
        return err(format!("model.salt: longer than {MAX_SALT_LEN} bytes"));
    }
    // The data device's length in 512-byte sectors must fit the kernel's u64 and
    // a table line; a zero-length model is refused.
    if m.data_blocks == 0 || m.data_blocks > (u64::MAX >> 13) {
        return err("model.data_blocks: must be at least 1 and fit 512-byte sectors in u64");
    }
    if m.hash_start_block > (u64::MAX >> 13) {
        return err("model.hash_start_block: too large");
    }
    check_token(&m.data_serial, "model.data_serial", 20)?;
    check_token(&m.hash_serial, "model.hash_serial", 20)?;
    if m.data_serial == m.hash_serial {
        return err("model.data_serial and model.hash_serial must differ");
    }

    let p = raw.platform;
    let platform = match (p.required.as_str(), p.insecure_no_tee) {
        ("none", true) => Platform::InsecureNone,
        ("none", false) => {
            return err("platform.required = \"none\" needs platform.insecure_no_tee = true");
        }
        ("tdx", false) => Platform::Tdx,
        ("snp" | "sev-snp", false) => Platform::Snp,
        ("tdx" | "snp" | "sev-snp", true) => {
            return err("platform.insecure_no_tee is only allowed with required = \"none\"");
        }
        (other, _) => return err(format!("platform.required: unknown platform `{other}`")),
    };

    let broker = match raw.broker {
        None => None,
        Some(b) => Some(Broker {
            public_key: decode_hex(
                &b.public_key,
                Some(ML_DSA_65_PUBLIC_KEY_LEN),
                "broker.public_key",
            )?,
            transport: parse_transport(&b.transport)?,
            wait_ms: match b.wait_ms {
                1..=600_000 => b.wait_ms,
                _ => return err("broker.wait_ms must be 1..=600000"),
            },
            timeout_ms: match b.timeout_ms {
                1..=600_000 => b.timeout_ms,
                _ => return err("broker.timeout_ms must be 1..=600000"),
            },
        }),
    };
    if platform != Platform::InsecureNone && broker.is_none() {
        return err("platform.required = tdx/snp needs a [broker] to check the evidence");
    }

    let w = raw.workload;
    check_abs_path(&w.command, "workload.command")?;
    for a in &w.args {
        if a.contains('\0') {
            return err("workload.args: NUL byte");
        }
    }
    for (k, v) in &w.env {
        if k.is_empty() || !k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
            return err(format!("workload.env: bad name `{k}`"));
        }
        if RESERVED_ENV.contains(&k.as_str()) {
            return err(format!("workload.env: `{k}` is set by pqcc-init"));
        }
        if v.contains('\0') {
            return err(format!("workload.env.{k}: NUL byte"));
        }
    }

    for path in &raw.modules.load {
        check_abs_path(path, "modules.load")?;
        let ok = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
            .iter()
            .any(|s| path.ends_with(s));
        if !ok {
            return err(format!("modules.load: `{path}` is not a kernel module"));
        }
    }

    let gpu = match raw.gpu {
        None => None,
        Some(g) => parse_gpu(g)?,
    };
    if gpu.is_some() && broker.is_none() {
        return err("gpu.required = true needs a [broker] to verify the GPU evidence");
    }

    let disk_wait_ms = raw.debug.disk_wait_ms.unwrap_or(DEFAULT_DISK_WAIT_MS);
    if disk_wait_ms > 600_000 {
        return err("debug.disk_wait_ms: at most 600000");
    }

    Ok(Config {
        model: Model {
            name: m.name,
            revision: m.revision,
            root_hash: root,
            salt,
            data_blocks: m.data_blocks,
            hash_start_block: m.hash_start_block,
            data_serial: m.data_serial,
            hash_serial: m.hash_serial,
        },
        platform,
        broker,
        workload: Workload {
            command: w.command,
            args: w.args,
            env: w.env,
        },
        modules: raw.modules.load,
        qemu_debug_exit: raw.debug.qemu_debug_exit,
        disk_wait_ms,
        gpu,
    })
}

fn parse_gpu(g: RawGpu) -> Result<Option<Gpu>, ConfigError> {
    if !g.required {
        let any = g.helper.is_some()
            || g.nvml_library.is_some()
            || g.wait_ms.is_some()
            || g.call_timeout_ms.is_some()
            || g.rims.is_some()
            || g.revocation.is_some()
            || g.collateral.is_some()
            || g.revocation_max_age_s.is_some()
            || g.require_report_fwid.is_some();
        if any {
            return err("gpu: settings given with required = false (they would not be used)");
        }
        return Ok(None);
    }
    let Some(helper) = g.helper else {
        return err("gpu.required = true needs gpu.helper (the NVML helper program)");
    };
    check_abs_path(&helper, "gpu.helper")?;
    let nvml_library = g
        .nvml_library
        .unwrap_or_else(|| "libnvidia-ml.so.1".to_owned());
    check_token(&nvml_library, "gpu.nvml_library", 4096)?;
    let wait_ms = g.wait_ms.unwrap_or(DEFAULT_GPU_WAIT_MS);
    if !(1..=600_000).contains(&wait_ms) {
        return err("gpu.wait_ms must be 1..=600000");
    }
    let call_timeout_ms = g.call_timeout_ms.unwrap_or(DEFAULT_GPU_CALL_TIMEOUT_MS);
    if !(1..=600_000).contains(&call_timeout_ms) {
        return err("gpu.call_timeout_ms must be 1..=600000");
    }
    let Some(rims) = g.rims else {
        return err("gpu.required = true needs gpu.rims (driver and VBIOS RIM files)");
    };
    if rims.is_empty() || rims.len() > MAX_GPU_RIMS {
        return err(format!("gpu.rims: 1 to {MAX_GPU_RIMS} files"));
    }
    for r in &rims {
        check_abs_path(r, "gpu.rims")?;
    }
    let revocation = match (
        g.revocation.as_deref(),
        g.collateral,
        g.revocation_max_age_s,
    ) {
        (None, _, _) => return err("gpu.required = true needs gpu.revocation (broker or require)"),
        (Some("broker"), None, None) => GpuRevocation::Broker,
        (Some("broker"), _, _) => {
            return err(
                "gpu.collateral and gpu.revocation_max_age_s need revocation = \"require\"",
            );
        }
        (Some("require"), Some(c), Some(age)) => {
            check_abs_path(&c, "gpu.collateral")?;
            if age == 0 {
                return err("gpu.revocation_max_age_s must be at least 1");
            }
            GpuRevocation::Require {
                collateral: c,
                max_age_s: age,
            }
        }
        (Some("require"), _, _) => {
            return err(
                "gpu.revocation = \"require\" needs gpu.collateral and gpu.revocation_max_age_s",
            );
        }
        (Some(o), _, _) => {
            return err(format!("gpu.revocation: `{o}`: expected broker or require"));
        }
    };
    Ok(Some(Gpu {
        helper,
        nvml_library,
        wait_ms,
        call_timeout_ms,
        rims,
        revocation,
        require_report_fwid: g.require_report_fwid.unwrap_or(false),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "4f8a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";

    fn good() -> String {
        format!(
            r#"
[model]
name = "tiny"
revision = "r1"
root_hash = "{ROOT}"
salt = "00010203040506070809101a1b1c1d1e1f"
data_blocks = 16
data_serial = "pqcc-data"
hash_serial = "pqcc-hash"

[platform]
required = "none"
insecure_no_tee = true

[workload]
command = "/bin/workload"
args = ["a", "b"]
env = {{ FOO = "bar" }}

[modules]
load = ["/lib/modules/virtio.ko", "/lib/modules/dm-verity.ko"]

[debug]
qemu_debug_exit = true
"#
        )
    }

    #[test]
    fn parses_good() {
        let c = parse(&good()).unwrap();
        assert_eq!(c.model.name, "tiny");
        assert_eq!(c.model.root_hash[0], 0x4f);
        assert_eq!(c.model.salt.len(), 17);
        assert_eq!(c.model.hash_start_block, 1);
        assert_eq!(c.platform, Platform::InsecureNone);
        assert_eq!(c.workload.args, ["a", "b"]);
        assert_eq!(c.workload.env["FOO"], "bar");
        assert_eq!(c.modules.len(), 2);
        assert!(c.qemu_debug_exit);
        assert_eq!(c.disk_wait_ms, DEFAULT_DISK_WAIT_MS);
        assert!(c.broker.is_none());
    }

    fn refused(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn refuses_unknown_fields() {
        let t = good().replace("data_blocks = 16", "data_blocks = 16\nextra = 1");
        assert!(refused(&t).contains("unknown field"), "{}", refused(&t));
        let t = good() + "\n[other]\nx = 1\n";
        assert!(refused(&t).contains("unknown field"));
    }

    #[test]
    fn refuses_bad_hex() {
        let t = good().replace(ROOT, &ROOT[..62]);
        assert!(refused(&t).contains("model.root_hash"));
        let t = good().replace(ROOT, &ROOT.replace('4', "g"));
        assert!(refused(&t).contains("not hex"));
        let t = good().replace("salt = \"00", "salt = \"0");
        assert!(refused(&t).contains("odd"));
        let long = "00".repeat(257);
        let t = good().replace("00010203040506070809101a1b1c1d1e1f", &long);
        assert!(refused(&t).contains("model.salt"));
        // An empty salt is allowed (veritysetup --salt -).
        let t = good().replace("00010203040506070809101a1b1c1d1e1f", "");
        assert!(parse(&t).unwrap().model.salt.is_empty());
    }

    #[test]
    fn refuses_bad_platform() {
        let t = good().replace("insecure_no_tee = true", "");
        assert!(refused(&t).contains("insecure_no_tee"));
        let t = good().replace("required = \"none\"", "required = \"tdx\"");
        assert!(refused(&t).contains("only allowed"));
        let t = good().replace("required = \"none\"", "required = \"sgx\"");
        assert!(refused(&t).contains("unknown platform"));
        let t = good()
            .replace("required = \"none\"", "required = \"snp\"")
            .replace("insecure_no_tee = true", "");
        assert!(refused(&t).contains("needs a [broker]"));
        let key = "ab".repeat(ML_DSA_65_PUBLIC_KEY_LEN);
        let t =
            format!("{t}\n[broker]\npublic_key = \"{key}\"\ntransport = \"tcp:10.0.2.2:7000\"\n");
        let c = parse(&t).unwrap();
        assert_eq!(c.platform, Platform::Snp);
        // `sev-snp`, as pqcc prints it, is the same platform.
        let sev = t.replace("required = \"snp\"", "required = \"sev-snp\"");
        assert_eq!(parse(&sev).unwrap().platform, Platform::Snp);
        let b = c.broker.unwrap();
        assert_eq!(b.wait_ms, DEFAULT_BROKER_WAIT_MS);
        assert_eq!(b.timeout_ms, DEFAULT_BROKER_TIMEOUT_MS);
        let t = t.replace("tcp:10.0.2.2:7000\"", "tcp:10.0.2.2:7000\"\nwait_ms = 0");
        assert!(refused(&t).contains("wait_ms"));
    }

    #[test]
    fn refuses_bad_workload_and_modules() {
        let t = good().replace("/bin/workload", "bin/workload");
        assert!(refused(&t).contains("absolute"));
        let t = good().replace("FOO = \"bar\"", "MODEL_NAME = \"x\"");
        assert!(refused(&t).contains("set by pqcc-init"));
        let t = good().replace("/lib/modules/virtio.ko", "/lib/modules/virtio.o");
        assert!(refused(&t).contains("not a kernel module"));
        let t = good().replace("/lib/modules/virtio.ko", "/lib/../virtio.ko");
        assert!(refused(&t).contains("absolute"));
    }

    #[test]
    fn refuses_bad_model() {
        let t = good().replace("data_blocks = 16", "data_blocks = 0");
        assert!(refused(&t).contains("data_blocks"));
        let t = good().replace("pqcc-hash", "pqcc-data");
        assert!(refused(&t).contains("differ"));
        let t = good().replace("name = \"tiny\"", "name = \"ti ny\"");
        assert!(refused(&t).contains("model.name"));
        let t = good().replace("data_blocks = 16", "data_blocks = -1");
        assert!(parse(&t).is_err());
        let t = good().replace("[workload]", "[workloads]");
        assert!(parse(&t).is_err());
        assert!(parse("not toml [").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn broker_transport() {
        let key = "ab".repeat(ML_DSA_65_PUBLIC_KEY_LEN);
        let with = |tr: &str| {
            good() + &format!("\n[broker]\npublic_key = \"{key}\"\ntransport = \"{tr}\"\n")
        };
        let c = parse(&with("virtio-console:/dev/hvc1")).unwrap();
        let b = c.broker.unwrap();
        assert_eq!(b.public_key.len(), ML_DSA_65_PUBLIC_KEY_LEN);
        assert_eq!(b.transport, Transport::VirtioConsole("/dev/hvc1".into()));
        assert_eq!(
            parse(&with("vsock:2:5000"))
                .unwrap()
                .broker
                .unwrap()
                .transport,
            Transport::Vsock { cid: 2, port: 5000 }
        );
        assert!(parse(&with("tcp:10.0.0.1:443")).is_ok());
        assert!(parse(&with("tcp:10.0.0.1:99999")).is_err());
        assert!(parse(&with("udp:x:1")).is_err());
        assert!(parse(&with("virtio-console:/tmp/x")).is_err());
        let short = good() + "\n[broker]\npublic_key = \"abcd\"\ntransport = \"vsock:2:1\"\n";
        assert!(refused(&short).contains("broker.public_key"));
    }

    #[test]
    fn gpu_section() {
        let key = "ab".repeat(ML_DSA_65_PUBLIC_KEY_LEN);
        let broker = format!("\n[broker]\npublic_key = \"{key}\"\ntransport = \"vsock:2:5000\"\n");
        let full = "\n[gpu]\nrequired = true\nhelper = \"/bin/pqcc-nvml-helper\"\n\
                    rims = [\"/etc/pqcc/gpu/driver.swidtag\", \"/etc/pqcc/gpu/vbios.swidtag\"]\n\
                    revocation = \"broker\"\n";
        let c = parse(&(good() + &broker + full)).unwrap();
        let g = c.gpu.unwrap();
        assert_eq!(g.helper, "/bin/pqcc-nvml-helper");
        assert_eq!(g.nvml_library, "libnvidia-ml.so.1");
        assert_eq!(g.wait_ms, DEFAULT_GPU_WAIT_MS);
        assert_eq!(g.call_timeout_ms, DEFAULT_GPU_CALL_TIMEOUT_MS);
        assert_eq!(g.rims.len(), 2);
        assert_eq!(g.revocation, GpuRevocation::Broker);
        assert!(!g.require_report_fwid);
        // Without a broker nobody would verify the evidence.
        assert!(refused(&(good() + full)).contains("needs a [broker]"));
        // Each required field, missing.
        let with = |t: String| good() + &broker + &t;
        assert!(
            refused(&with(
                full.replace("helper = \"/bin/pqcc-nvml-helper\"\n", "")
            ))
            .contains("gpu.helper")
        );
        let no_rims = full.replace(
            "rims = [\"/etc/pqcc/gpu/driver.swidtag\", \"/etc/pqcc/gpu/vbios.swidtag\"]\n",
            "",
        );
        assert!(refused(&with(no_rims)).contains("gpu.rims"));
        assert!(
            refused(&with(full.replace("revocation = \"broker\"\n", "")))
                .contains("gpu.revocation")
        );
        assert!(
            refused(&with(full.replace("\"broker\"", "\"maybe\""))).contains("expected broker")
        );
        assert!(
            refused(&with(full.replace("\"broker\"", "\"require\"")))
                .contains("needs gpu.collateral")
        );
        let req = full.replace("\"broker\"", "\"require\"")
            + "collateral = \"/etc/pqcc/gpu/coll\"\nrevocation_max_age_s = 86400\n";
        assert_eq!(
            parse(&with(req)).unwrap().gpu.unwrap().revocation,
            GpuRevocation::Require {
                collateral: "/etc/pqcc/gpu/coll".into(),
                max_age_s: 86400
            }
        );
        assert!(
            refused(&with(full.to_owned() + "collateral = \"/x\"\n")).contains("need revocation")
        );
        assert!(refused(&with(full.replace("/bin/pqcc", "bin/pqcc"))).contains("absolute"));
        assert!(refused(&with(full.to_owned() + "wait_ms = 0\n")).contains("gpu.wait_ms"));
        assert!(refused(&with(full.to_owned() + "bogus = 1\n")).contains("unknown field"));
        assert!(refused(&with("\n[gpu]\nhelper = \"/x\"\n".into())).contains("required"));
        assert!(refused(&with(full.replace("rims = [", "rims = [] #"))).contains("gpu.rims"));
        // required = false: no gate, and no settings that would look like one.
        assert!(
            parse(&with("\n[gpu]\nrequired = false\n".into()))
                .unwrap()
                .gpu
                .is_none()
        );
        assert!(
            refused(&with(full.replace("required = true", "required = false")))
                .contains("required = false")
        );
    }

    #[test]
    fn hex_roundtrip() {
        let b = decode_hex("00ffA0", None, "x").unwrap();
        assert_eq!(b, [0x00, 0xff, 0xa0]);
        assert_eq!(to_hex(&b), "00ffa0");
    }
}
