//! `pqcc launch`: the QEMU command line for a pqcc guest, and running it.
//!
//! The command line comes from a profile ([`profile`]): `qemu/none.args`,
//! `qemu/tdx.args` or `qemu/snp.args`, compiled in and replaceable with
//! `--profile-file`. The tool fills in the kernel, the initramfs, the two model disks
//! of a `pqcc model build` output directory (read-only, with the serials the guest's
//! `init.toml` expects), the GPUs and the broker transport, and checks what it can on
//! the host before QEMU starts:
//!
//! - the model directory holds `NAME@REV.tar` and `NAME@REV.tar.verity` (regular
//!   files, the archive a whole number of 4 KiB blocks) and, when `NAME@REV.tar.hash`
//!   is there, it names the root hash of `--model`;
//! - kernel, initramfs and firmware are regular files; a profile that uses
//!   `{FIRMWARE}` (tdx, snp) refuses to run without `--firmware`;
//! - `--accel` is one the profile accepts, and `kvm` needs a usable `/dev/kvm`;
//! - when the initramfs is a `pqcc image build` image, its `/etc/pqcc/init.toml`
//!   names the same model (name, revision, root hash), the disk serials used (which
//!   default to the config's) and the profile's platform ([`initrd`]).
//!
//! None of these checks is a security boundary: the host is untrusted. The guest
//! checks the model against the root hash in its measured config, and the TEE
//! measures kernel, initramfs and command line. The checks only turn an operator's
//! mistake into a clear error before a long boot.
//!
//! There are no writable disks and no network devices in any built-in profile; the
//! broker is reached over a virtio console port (`unix:`, `tcp:`) or vsock.

pub mod cli;
pub mod initrd;
pub mod profile;
pub mod run;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use profile::Profile;

/// The built-in `none` profile (`qemu/none.args`).
pub const NONE_ARGS: &str = include_str!("../../../qemu/none.args");
/// The built-in `tdx` profile (`qemu/tdx.args`).
pub const TDX_ARGS: &str = include_str!("../../../qemu/tdx.args");
/// The built-in `snp` profile (`qemu/snp.args`).
pub const SNP_ARGS: &str = include_str!("../../../qemu/snp.args");

/// Default virtio-blk serial of the model's data disk.
pub const DEFAULT_DATA_SERIAL: &str = "pqcc-data";
/// Default virtio-blk serial of the model's hash disk.
pub const DEFAULT_HASH_SERIAL: &str = "pqcc-hash";
/// Environment variable naming the KVM device to check for `--accel kvm` (default
/// `/dev/kvm`); tests point it at a missing path.
pub const KVM_DEVICE_ENV: &str = "PQCC_KVM_DEVICE";

/// Which platform the guest runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileName {
    /// No TEE: tests and development.
    None,
    /// Intel TDX.
    Tdx,
    /// AMD SEV-SNP (`sev-snp`, or `snp`: the file is `qemu/snp.args`).
    #[value(name = "sev-snp", alias = "snp")]
    Snp,
}

impl ProfileName {
    /// The compiled-in profile text.
    pub fn builtin(self) -> &'static str {
        match self {
            Self::None => NONE_ARGS,
            Self::Tdx => TDX_ARGS,
            Self::Snp => SNP_ARGS,
        }
    }

    /// `none`, `tdx` or `sev-snp`: the platform's name as pqcc prints it everywhere.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Tdx => "tdx",
            Self::Snp => "sev-snp",
        }
    }

    /// The built-in profile's file under `qemu/`: `none.args`, `tdx.args`, `snp.args`.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::None => "none.args",
            Self::Tdx => "tdx.args",
            Self::Snp => "snp.args",
        }
    }

    /// Whether `platform.required` of a guest's `init.toml` names this platform
    /// (`snp` and `sev-snp` are the same one).
    pub fn matches_guest(self, required: &str) -> bool {
        match self {
            Self::Snp => matches!(required, "snp" | "sev-snp"),
            other => required == other.as_str(),
        }
    }
}

/// A model identity, `name@revision:roothash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// Model name (may contain `/`).
    pub name: String,
    /// Revision.
    pub revision: String,
    /// dm-verity root hash, 64 lowercase hex digits.
    pub root_hash: String,
}

impl ModelSpec {
    /// Parses `name@revision:roothash` (the root hash as 64 hex digits).
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let bad = |why: &str| anyhow::anyhow!("--model {s:?}: {why} (expected NAME@REV:ROOTHASH)");
        let (id, hash) = s.rsplit_once(':').ok_or_else(|| bad("no :ROOTHASH"))?;
        let (name, revision) = id.split_once('@').ok_or_else(|| bad("no @REV"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the root hash must be 64 hex digits"));
        }
        // The same rules as `pqcc model build` applies to file names.
        crate::model::build::stem(name, revision).map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            name: name.to_owned(),
            revision: revision.to_owned(),
            root_hash: hash.to_ascii_lowercase(),
        })
    }

    /// The archive's file name stem in a `pqcc model build` directory.
    pub fn stem(&self) -> String {
        // Checked in `parse`.
        format!("{}@{}", self.name.replace('/', "--"), self.revision)
    }
}

/// How the guest reaches the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
    /// A virtio console port connected to the Unix socket PATH (QEMU is the client).
    Unix(String),
    /// A virtio console port connected to HOST:PORT over TCP (QEMU is the client).
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A vhost-vsock device: the guest gets CID `cid`; the broker listens on the host
    /// at vsock port `port`.
    Vsock {
        /// The guest's CID (3 or more).
        cid: u32,
        /// The broker's vsock port on the host.
        port: u32,
    },
}

impl Broker {
    /// Parses `unix:PATH`, `tcp:HOST:PORT` or `vsock:CID:PORT`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let bad = |why: &str| {
            anyhow::anyhow!("--broker {s:?}: {why} (unix:PATH, tcp:HOST:PORT or vsock:CID:PORT)")
        };
        let (kind, rest) = s.split_once(':').ok_or_else(|| bad("no KIND:"))?;
        match kind {
            "unix" => {
                if rest.is_empty() {
                    return Err(bad("empty path"));
                }
                Ok(Self::Unix(rest.to_owned()))
            }
            "tcp" => {
                let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("no :PORT"))?;
                let host = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                let host_ok = !host.is_empty()
                    && host.len() <= 253
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b));
                if !host_ok {
                    return Err(bad("HOST must be a host name or an address"));
                }
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("PORT must be 1-65535"))?;
                Ok(Self::Tcp {
                    host: host.to_owned(),
                    port,
                })
            }
            "vsock" => {
                let (cid, port) = rest.split_once(':').ok_or_else(|| bad("no :PORT"))?;
                let cid: u32 = cid
                    .parse()
                    .ok()
                    .filter(|c| (3..u32::MAX).contains(c))
                    .ok_or_else(|| bad("CID is the guest's CID: 3 to 4294967294"))?;
                let port: u32 = port.parse().map_err(|_| bad("PORT must be a u32"))?;
                Ok(Self::Vsock { cid, port })
            }
            _ => Err(bad("unknown kind")),
        }
    }

    /// The profile section this transport uses.
    pub fn section(&self) -> &'static str {
        match self {
            Self::Unix(_) => "broker-unix",
            Self::Tcp { .. } => "broker-tcp",
            Self::Vsock { .. } => "broker-vsock",
        }
    }

    fn lookup(&self, name: &str) -> Option<String> {
        match (self, name) {
            (Self::Unix(p), "PATH") => Some(p.clone()),
            (Self::Tcp { host, .. }, "HOST") => Some(host.clone()),
            (Self::Tcp { port, .. }, "PORT") => Some(port.to_string()),
            (Self::Vsock { cid, .. }, "CID") => Some(cid.to_string()),
            (Self::Vsock { port, .. }, "PORT") => Some(port.to_string()),
            _ => None,
        }
    }
}

/// Checks a PCI address, `[DDDD:]BB:DD.F` in hex, and returns it in the full
/// lowercase form `DDDD:BB:DD.F`.
pub fn parse_pci(s: &str) -> anyhow::Result<String> {
    let bad = || anyhow::anyhow!("--gpu {s:?}: expected a PCI address [DDDD:]BB:DD.F");
    let parts: Vec<&str> = s.split(':').collect();
    let (dom, bus, df) = match parts.as_slice() {
        [bus, df] => ("0000", *bus, *df),
        [dom, bus, df] => (*dom, *bus, *df),
        _ => return Err(bad()),
    };
    let (dev, func) = df.split_once('.').ok_or_else(bad)?;
    let hex = |x: &str, n: usize| x.len() == n && x.bytes().all(|b| b.is_ascii_hexdigit());
    let dev_ok = hex(dev, 2) && u8::from_str_radix(dev, 16).is_ok_and(|d| d < 32);
    let func_ok = func.len() == 1 && matches!(func.as_bytes().first(), Some(b'0'..=b'7'));
    if !(hex(dom, 4) && hex(bus, 2) && dev_ok && func_ok) {
        return Err(bad());
    }
    Ok(format!("{dom}:{bus}:{dev}.{func}").to_ascii_lowercase())
}

/// Checks a virtio-blk serial: 1 to 20 printable ASCII bytes without spaces or
/// commas (the guest's `init.toml` has the same limit).
pub fn check_serial(what: &str, s: &str) -> anyhow::Result<()> {
    let ok = !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_graphic() && b != b',');
    if !ok {
        bail!("{what} {s:?}: 1 to 20 printable ASCII characters, no spaces or commas");
    }
    Ok(())
}

/// Accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// Hardware virtualisation (required for TDX and SNP).
    Kvm,
    /// QEMU's emulator.
    Tcg,
}

impl Accel {
    /// `kvm` or `tcg`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

/// What a launch is made of.
#[derive(Debug, Clone)]
pub struct Options {
    /// Profile name.
    pub profile: ProfileName,
    /// Profile text (built-in or from `--profile-file`).
    pub profile_text: String,
    /// Where the profile text came from, for error messages.
    pub profile_origin: String,
    /// The QEMU binary (first line of `--dry-run`).
    pub qemu: String,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Initramfs from `pqcc image build`.
    pub initrd: PathBuf,
    /// The model identity.
    pub model: ModelSpec,
    /// A `pqcc model build` output directory.
    pub model_dir: PathBuf,
    /// Data disk serial (None: the initramfs's `init.toml`, else `pqcc-data`).
    pub data_serial: Option<String>,
    /// Hash disk serial (None: the initramfs's `init.toml`, else `pqcc-hash`).
    pub hash_serial: Option<String>,
    /// GPUs to pass through (PCI addresses as given).
    pub gpus: Vec<String>,
    /// Accelerator (None: the profile's default).
    pub accel: Option<Accel>,
    /// Firmware (OVMF / TDVF).
    pub firmware: Option<PathBuf>,
    /// Broker transport.
    pub broker: Option<Broker>,
    /// `--set NAME=VALUE` overrides of the profile's `@default`s.
    pub sets: Vec<(String, String)>,
}

/// A checked launch: the command line and what it was built from.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The QEMU program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The accelerator chosen.
    pub accel: Accel,
    /// Whether the profile has QEMU's isa-debug-exit device (the workload's outcome
    /// comes back in QEMU's exit status).
    pub debug_exit: bool,
    /// Notes for the operator (stderr).
    pub warnings: Vec<String>,
}

fn path_str<'a>(what: &str, p: &'a Path) -> anyhow::Result<&'a str> {
    p.to_str()
        .with_context(|| format!("{what} {}: not UTF-8", p.display()))
}

fn regular_file(what: &str, p: &Path) -> anyhow::Result<u64> {
    let m = std::fs::metadata(p).with_context(|| format!("{what} {}", p.display()))?;
    if !m.is_file() {
        bail!("{what} {}: not a regular file", p.display());
    }
    Ok(m.len())
}

/// The model's two disks in `dir`: (data, hash). Checks they are there, that the
/// archive is whole 4 KiB blocks and that a `.hash` file, when present, names the
/// expected root hash.
pub fn model_disks(dir: &Path, model: &ModelSpec) -> anyhow::Result<(PathBuf, PathBuf)> {
    let stem = model.stem();
    let data = dir.join(format!("{stem}.tar"));
    let hash = dir.join(format!("{stem}.tar.verity"));
    let hint = "expected the output of `pqcc model build` for this model";
    let len = regular_file("model data disk", &data).with_context(|| hint.to_owned())?;
    if len == 0 || len % 4096 != 0 {
        bail!(
            "model data disk {}: {len} bytes is not a whole number of 4096-byte blocks",
            data.display()
        );
    }
    let hlen = regular_file("model hash disk", &hash).with_context(|| hint.to_owned())?;
    if hlen == 0 {
        bail!("model hash disk {}: empty", hash.display());
    }
    let root_file = dir.join(format!("{stem}.tar.hash"));
    match std::fs::read_to_string(&root_file) {
        Ok(text) => {
            if !text.trim().eq_ignore_ascii_case(&model.root_hash) {
                bail!(
                    "{} names root hash {} but --model says {}: the directory holds another \
                     build of {}@{}",
                    root_file.display(),
                    text.trim(),
                    model.root_hash,
                    model.name,
                    model.revision
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("{}", root_file.display())),
    }
    Ok((data, hash))
}

/// Checks that KVM can be used: the KVM device (`/dev/kvm`, or `$PQCC_KVM_DEVICE`)
/// opens read-write.
pub fn check_kvm() -> anyhow::Result<()> {
    let dev = std::env::var_os(KVM_DEVICE_ENV).unwrap_or_else(|| "/dev/kvm".into());
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev)
        .map(drop)
        .with_context(|| {
            format!(
                "--accel kvm: cannot open {}: KVM is not usable here (profile none runs \
                 with --accel tcg)",
                Path::new(&dev).display()
            )
        })
}

/// Builds the QEMU command line. Does not look at `/dev/kvm` (see [`check_kvm`]), so
/// `--dry-run` works on any machine.
pub fn build(o: &Options) -> anyhow::Result<Launch> {
    let profile =
        Profile::parse(&o.profile_text).with_context(|| format!("profile {}", o.profile_origin))?;
    let pname = o.profile.as_str();

    let accel = match o.accel {
        Some(a) => a,
        None => match profile.accels.first().map(String::as_str) {
            Some("kvm") => Accel::Kvm,
            _ => Accel::Tcg,
        },
    };
    if !profile.accels.iter().any(|a| a == accel.as_str()) {
        bail!(
            "--accel {} is not possible with profile {pname} (it takes: {})",
            accel.as_str(),
            profile.accels.join(", ")
        );
    }

    let mut settings = profile.defaults.clone();
    for (k, v) in &o.sets {
        if !settings.contains_key(k) {
            let known: Vec<&str> = profile.defaults.keys().map(String::as_str).collect();
            bail!(
                "--set {k}: profile {pname} has no setting {k} (it has: {})",
                known.join(", ")
            );
        }
        settings.insert(k.clone(), v.clone());
    }

    let kernel = path_str("--kernel", &o.kernel)?;
    regular_file("--kernel", &o.kernel)?;
    let initrd = path_str("--initrd", &o.initrd)?;
    regular_file("--initrd", &o.initrd)?;

    // The guest's measured config, when the initramfs is one `pqcc image build` made:
    // it gives the serials and must name the same model and platform.
    let mut warnings = Vec::new();
    let guest = initrd::read_config(&o.initrd)?;
    let (data_serial, hash_serial) = match &guest {
        Some(g) => (
            o.data_serial
                .clone()
                .unwrap_or_else(|| g.model.data_serial.clone()),
            o.hash_serial
                .clone()
                .unwrap_or_else(|| g.model.hash_serial.clone()),
        ),
        None => {
            warnings.push(format!(
                "{} is not a pqcc image (no /etc/pqcc/init.toml in a newc cpio): its model, \
                 serials and platform were not compared with this launch",
                o.initrd.display()
            ));
            (
                o.data_serial
                    .clone()
                    .unwrap_or_else(|| DEFAULT_DATA_SERIAL.into()),
                o.hash_serial
                    .clone()
                    .unwrap_or_else(|| DEFAULT_HASH_SERIAL.into()),
            )
        }
    };
    check_serial("--data-serial", &data_serial)?;
    check_serial("--hash-serial", &hash_serial)?;
    if data_serial == hash_serial {
        bail!("--data-serial and --hash-serial must differ");
    }
    if let Some(g) = &guest {
        initrd::check(g, o.profile, &o.model, &data_serial, &hash_serial)?;
        // Said here, before QEMU starts, rather than found by the guest after its
        // broker.wait_ms.
        warnings.extend(initrd::broker_warning(g, o.broker.as_ref()));
    }
    let firmware = match &o.firmware {
        Some(f) => {
            regular_file("--firmware", f)?;
            Some(path_str("--firmware", f)?.to_owned())
        }
        None if profile.uses("FIRMWARE") => {
            bail!("profile {pname} needs --firmware FILE (the OVMF/TDVF image the TEE measures)")
        }
        None => None,
    };
    let (data, hash) = model_disks(&o.model_dir, &o.model)?;
    let data = path_str("model data disk", &data)?.to_owned();
    let hash = path_str("model hash disk", &hash)?.to_owned();

    let mut gpus = Vec::new();
    for g in &o.gpus {
        let g = parse_pci(g)?;
        if gpus.contains(&g) {
            bail!("--gpu {g} given twice");
        }
        gpus.push(g);
    }
    if !gpus.is_empty() && profile.section("gpu").is_none() {
        bail!("profile {pname} has no [gpu] section: it cannot pass a GPU through");
    }
    if let Some(b) = &o.broker
        && profile.section(b.section()).is_none()
    {
        bail!(
            "profile {pname} has no [{}] section: --broker {} is not possible with it",
            b.section(),
            b.section().trim_start_matches("broker-")
        );
    }

    let model_id = format!("{}@{}", o.model.name, o.model.revision);
    let global = |name: &str| -> Option<String> {
        Some(match name {
            "KERNEL" => kernel.to_owned(),
            "INITRD" => initrd.to_owned(),
            "FIRMWARE" => firmware.clone()?,
            "ACCEL" => accel.as_str().to_owned(),
            "DATA" => data.clone(),
            "HASH" => hash.clone(),
            "DATA_SERIAL" => data_serial.clone(),
            "HASH_SERIAL" => hash_serial.clone(),
            "MODEL" => model_id.clone(),
            "ROOT_HASH" => o.model.root_hash.clone(),
            other => settings.get(other)?.clone(),
        })
    };

    let mut args = Vec::new();
    for (section, lines) in &profile.sections {
        // Each instance of a section is the list of its own placeholder values.
        let instances: Vec<Vec<(&str, String)>> = match section.as_str() {
            "machine" | "model" => vec![vec![]],
            "gpus" if !gpus.is_empty() => vec![vec![]],
            "gpu" => gpus
                .iter()
                .enumerate()
                .map(|(i, g)| vec![("GPU", g.clone()), ("N", (i + 1).to_string())])
                .collect(),
            s => match &o.broker {
                Some(b) if b.section() == s => vec![
                    profile::section_names(s)
                        .iter()
                        .filter_map(|n| Some((*n, b.lookup(n)?)))
                        .collect(),
                ],
                _ => vec![],
            },
        };
        for local in &instances {
            for (n, line) in lines {
                let lookup = |name: &str| -> anyhow::Result<String> {
                    local
                        .iter()
                        .find(|(k, _)| *k == name)
                        .map(|(_, v)| v.clone())
                        .or_else(|| global(name))
                        .with_context(|| {
                            format!(
                                "profile {} line {n}: no value for {{{name}}}",
                                o.profile_origin
                            )
                        })
                };
                let arg = profile::fill(line, &lookup)
                    .with_context(|| format!("profile {} line {n}", o.profile_origin))?;
                args.push(arg);
            }
        }
    }
    let debug_exit = args.iter().any(|a| a.starts_with("isa-debug-exit"));
    Ok(Launch {
        program: o.qemu.clone(),
        args,
        accel,
        debug_exit,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_spec() {
        let h = "ab".repeat(32);
        let m = ModelSpec::parse(&format!("org/tiny@r1:{}", h.to_uppercase())).unwrap();
        assert_eq!(
            (m.name.as_str(), m.revision.as_str(), m.root_hash.as_str()),
            ("org/tiny", "r1", h.as_str())
        );
        assert_eq!(m.stem(), "org--tiny@r1");
        for bad in [
            "tiny@r1",
            "tiny:abc",
            &format!("tiny:{h}"),
            &format!("tiny@r1:{}", &h[1..]),
            &format!("tiny@r1:{}g", &h[1..]),
            &format!("../x@r1:{h}"),
            &format!("tiny@r/1:{h}"),
            &format!("@r1:{h}"),
        ] {
            assert!(ModelSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn broker_spec() {
        assert_eq!(
            Broker::parse("unix:/run/b.sock").unwrap(),
            Broker::Unix("/run/b.sock".into())
        );
        assert_eq!(
            Broker::parse("tcp:[::1]:7000").unwrap(),
            Broker::Tcp {
                host: "::1".into(),
                port: 7000
            }
        );
        assert_eq!(
            Broker::parse("vsock:3:5000").unwrap(),
            Broker::Vsock { cid: 3, port: 5000 }
        );
        for bad in [
            "unix:",
            "tcp:host",
            "tcp:host:0",
            "tcp:ho st:1",
            "vsock:2:5000",
            "vsock:3",
            "serial:x",
            "x",
        ] {
            assert!(Broker::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pci_addresses() {
        assert_eq!(parse_pci("41:00.0").unwrap(), "0000:41:00.0");
        assert_eq!(parse_pci("0001:C1:1F.7").unwrap(), "0001:c1:1f.7");
        for bad in [
            "41:00",
            "41:20.0",
            "41:00.8",
            "1:00.0",
            "x:41:00.0",
            "0000:41:00.0,x",
        ] {
            assert!(parse_pci(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn builtin_profiles_parse() {
        for p in [ProfileName::None, ProfileName::Tdx, ProfileName::Snp] {
            Profile::parse(p.builtin()).unwrap_or_else(|e| panic!("{}: {e:#}", p.as_str()));
        }
    }
}
