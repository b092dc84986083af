//! Reading the guest's `init.toml` back out of an initramfs, so `pqcc launch` can
//! compare it with its own arguments before a long boot.
//!
//! Only what `pqcc image build` writes is understood: a newc cpio (`070701`), plain
//! or gzip-compressed. Parsing is bounds-checked throughout; a file that is not such
//! an archive gives `Ok(None)` (the launch goes on with a warning), never a panic.
//! Only the fields compared are read, and unknown keys are ignored: the guest owns
//! the schema and checks it strictly when it boots.

use std::io::Read;

use super::{Broker, ModelSpec, ProfileName};
use anyhow::{Context, bail};

/// Largest initramfs read (the guest kernel would not take much more anyway).
const MAX_IMAGE: u64 = 2 << 30;
/// Largest config (pqcc-init reads at most 64 KiB).
const MAX_CONFIG: usize = 64 << 10;
const CONFIG_PATH: &str = "etc/pqcc/init.toml";

/// The fields of `init.toml` that `pqcc launch` compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestConfig {
    /// `[model]`.
    pub model: GuestModel,
    /// `[platform]`.
    pub platform: GuestPlatform,
    /// `[broker]`: its `transport` (empty when the table has none), or `None` when the
    /// guest has no broker.
    pub broker: Option<String>,
}

/// `[model]` of `init.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestModel {
    /// Model name.
    pub name: String,
    /// Revision.
    pub revision: String,
    /// Root hash, hex.
    pub root_hash: String,
    /// Data disk serial.
    pub data_serial: String,
    /// Hash disk serial.
    pub hash_serial: String,
}

/// `[platform]` of `init.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPlatform {
    /// `none`, `tdx`, or `sev-snp` (also written `snp`).
    pub required: String,
}

/// Finds `/etc/pqcc/init.toml` in a newc archive. `None` when `data` is not a newc
/// archive or does not hold the file.
pub fn find_config(data: &[u8]) -> Option<&[u8]> {
    let hex = |b: &[u8]| -> Option<usize> {
        let s = std::str::from_utf8(b).ok()?;
        usize::from_str_radix(s, 16).ok()
    };
    let pad4 = |n: usize| n.checked_add(3).map(|x| x & !3);
    let mut off = 0usize;
    loop {
        let h = data.get(off..off.checked_add(110)?)?;
        if h.get(..6)? != b"070701" && h.get(..6)? != b"070702" {
            return None;
        }
        let field = |i: usize| hex(h.get(6 + 8 * i..14 + 8 * i)?);
        let size = field(6)?;
        let namesize = field(11)?;
        let name_start = off.checked_add(110)?;
        let name = data.get(name_start..name_start.checked_add(namesize)?)?;
        let name = name.strip_suffix(b"\0")?;
        let data_start = pad4(name_start.checked_add(namesize)?)?;
        let body = data.get(data_start..data_start.checked_add(size)?)?;
        if name == b"TRAILER!!!" {
            return None;
        }
        let n = name.strip_prefix(b"./").unwrap_or(name);
        let n = n.strip_prefix(b"/").unwrap_or(n);
        if n == CONFIG_PATH.as_bytes() {
            return Some(body);
        }
        off = pad4(data_start.checked_add(size)?)?;
    }
}

/// Reads the config from the initramfs at `path`: `Ok(None)` when it is not a
/// (gzip-compressed) newc archive holding `/etc/pqcc/init.toml`; an error when the
/// file cannot be read or the config it holds cannot be parsed.
pub fn read_config(path: &std::path::Path) -> anyhow::Result<Option<GuestConfig>> {
    let f = std::fs::File::open(path).with_context(|| format!("--initrd {}", path.display()))?;
    let mut raw = Vec::new();
    f.take(MAX_IMAGE)
        .read_to_end(&mut raw)
        .with_context(|| format!("--initrd {}", path.display()))?;
    let plain;
    let data = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut v = Vec::new();
        if flate2::read::GzDecoder::new(&raw[..])
            .take(MAX_IMAGE)
            .read_to_end(&mut v)
            .is_err()
        {
            return Ok(None);
        }
        plain = v;
        &plain[..]
    } else {
        &raw[..]
    };
    let Some(text) = find_config(data) else {
        return Ok(None);
    };
    if text.len() > MAX_CONFIG {
        bail!(
            "--initrd {}: /etc/pqcc/init.toml is over 64 KiB",
            path.display()
        );
    }
    let text = std::str::from_utf8(text)
        .with_context(|| format!("--initrd {}: /etc/pqcc/init.toml", path.display()))?;
    let table: toml::Table = toml::from_str(text)
        .with_context(|| format!("--initrd {}: /etc/pqcc/init.toml", path.display()))?;
    let get = |section: &str, key: &str| -> anyhow::Result<String> {
        table
            .get(section)
            .and_then(|s| s.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .with_context(|| {
                format!(
                    "--initrd {}: /etc/pqcc/init.toml has no string {section}.{key}",
                    path.display()
                )
            })
    };
    let cfg = GuestConfig {
        model: GuestModel {
            name: get("model", "name")?,
            revision: get("model", "revision")?,
            root_hash: get("model", "root_hash")?,
            data_serial: get("model", "data_serial")?,
            hash_serial: get("model", "hash_serial")?,
        },
        platform: GuestPlatform {
            required: get("platform", "required")?,
        },
        broker: table.get("broker").map(|b| {
            b.get("transport")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        }),
    };
    Ok(Some(cfg))
}

/// The warning for a guest that will wait for a broker this launch does not connect:
/// its `init.toml` has a `[broker]` and no `--broker` was given, or the transports
/// differ in kind (the guest's `vsock:` against a virtio-serial `--broker`, or the
/// other way round). `None` when the launch gives the guest the way it expects.
pub fn broker_warning(cfg: &GuestConfig, launch: Option<&Broker>) -> Option<String> {
    let transport = cfg.broker.as_deref()?;
    let guest_vsock = transport.starts_with("vsock:");
    let guest_serial =
        transport.starts_with("virtio-serial:") || transport.starts_with("virtio-console:");
    match launch {
        None => Some(format!(
            "the initramfs's init.toml has a [broker] (transport {transport:?}) but no \
             --broker was given: unless this profile connects it some other way, the guest \
             will wait broker.wait_ms (30 s by default) for a broker and then power off; \
             pass --broker unix:PATH, tcp:HOST:PORT or vsock:CID:PORT"
        )),
        Some(Broker::Vsock { .. }) if guest_serial => Some(format!(
            "--broker vsock:… gives the guest a vsock device, but its init.toml's [broker] \
             transport is {transport:?} (a virtio-serial port): the guest will not reach \
             the broker; use --broker unix:PATH or tcp:HOST:PORT"
        )),
        Some(Broker::Unix(_) | Broker::Tcp { .. }) if guest_vsock => Some(format!(
            "--broker gives the guest a virtio-serial port, but its init.toml's [broker] \
             transport is {transport:?}: the guest will not reach the broker; use \
             --broker vsock:CID:PORT"
        )),
        Some(_) => None,
    }
}

/// Compares the guest's config with the launch: the same model (name, revision,
/// root hash), serials and platform. Each difference would end the boot with a FATAL
/// line; here it is an error before QEMU starts.
pub fn check(
    cfg: &GuestConfig,
    profile: ProfileName,
    model: &ModelSpec,
    data_serial: &str,
    hash_serial: &str,
) -> anyhow::Result<()> {
    let m = &cfg.model;
    let mut diffs = Vec::new();
    let mut cmp = |what: &str, guest: &str, launch: &str| {
        if guest != launch {
            diffs.push(format!("{what}: init.toml {guest:?}, launch {launch:?}"));
        }
    };
    cmp("model name", &m.name, &model.name);
    cmp("model revision", &m.revision, &model.revision);
    cmp(
        "root hash",
        &m.root_hash.to_ascii_lowercase(),
        &model.root_hash,
    );
    cmp("data disk serial", &m.data_serial, data_serial);
    cmp("hash disk serial", &m.hash_serial, hash_serial);
    if !profile.matches_guest(&cfg.platform.required) {
        diffs.push(format!(
            "platform: init.toml {:?}, launch {:?}",
            cfg.platform.required,
            profile.as_str()
        ));
    }
    if !diffs.is_empty() {
        bail!(
            "the initramfs's /etc/pqcc/init.toml does not match this launch: {}",
            diffs.join("; ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_config_in_a_pqcc_image() {
        let mut a = crate::image::cpio::Archive::new();
        a.add_dir("/proc").unwrap();
        a.add_file("/init", b"\x7fELF".to_vec(), true).unwrap();
        a.add_file("/etc/pqcc/init.toml", b"x = 1\n".to_vec(), false)
            .unwrap();
        a.add_file("/zz", vec![7; 5], false).unwrap();
        let bytes = a.to_bytes();
        assert_eq!(find_config(&bytes), Some(&b"x = 1\n"[..]));
        // Every truncation is a clean None (or, past the config, the config).
        for n in 0..bytes.len() {
            let r = find_config(&bytes[..n]);
            assert!(r.is_none() || r == Some(&b"x = 1\n"[..]), "{n}");
        }
        assert_eq!(find_config(b"not an archive"), None);
        let mut b = crate::image::cpio::Archive::new();
        b.add_file("/init", b"\x7fELF".to_vec(), true).unwrap();
        assert_eq!(find_config(&b.to_bytes()), None);
    }

    #[test]
    fn warns_about_a_broker_the_launch_does_not_connect() {
        let mut cfg = GuestConfig {
            model: GuestModel {
                name: "m".into(),
                revision: "r".into(),
                root_hash: "ab".repeat(32),
                data_serial: "d".into(),
                hash_serial: "h".into(),
            },
            platform: GuestPlatform {
                required: "none".into(),
            },
            broker: None,
        };
        let unix = Broker::parse("unix:/run/b.sock").unwrap();
        let vsock = Broker::parse("vsock:3:5000").unwrap();
        assert_eq!(broker_warning(&cfg, None), None);
        assert_eq!(broker_warning(&cfg, Some(&unix)), None);
        cfg.broker = Some("virtio-serial:org.pqcc.broker.0".into());
        let w = broker_warning(&cfg, None).unwrap();
        assert!(w.contains("[broker]") && w.contains("no --broker"), "{w}");
        assert_eq!(broker_warning(&cfg, Some(&unix)), None);
        assert!(broker_warning(&cfg, Some(&vsock)).is_some());
        cfg.broker = Some("vsock:2:5000".into());
        assert_eq!(broker_warning(&cfg, Some(&vsock)), None);
        assert!(broker_warning(&cfg, Some(&unix)).is_some());
    }

    #[test]
    fn compares_model_serials_and_platform() {
        let root = "ab".repeat(32);
        let cfg = GuestConfig {
            model: GuestModel {
                name: "org/tiny".into(),
                revision: "r1".into(),
                root_hash: root.to_uppercase(),
                data_serial: "d".into(),
                hash_serial: "h".into(),
            },
            platform: GuestPlatform {
                required: "tdx".into(),
            },
            broker: None,
        };
        let spec = ModelSpec::parse(&format!("org/tiny@r1:{root}")).unwrap();
        check(&cfg, ProfileName::Tdx, &spec, "d", "h").unwrap();
        let e = check(&cfg, ProfileName::Snp, &spec, "d", "x")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("platform: init.toml \"tdx\", launch \"sev-snp\"")
                && e.contains("hash disk serial"),
            "{e}"
        );
        // Both spellings of SEV-SNP in init.toml match the sev-snp launch.
        for required in ["snp", "sev-snp"] {
            let mut c = cfg.clone();
            c.platform.required = required.into();
            check(&c, ProfileName::Snp, &spec, "d", "h").unwrap();
            assert!(check(&c, ProfileName::Tdx, &spec, "d", "h").is_err());
        }
        let other = ModelSpec::parse(&format!("org/tiny@r2:{}", "cd".repeat(32))).unwrap();
        let e = check(&cfg, ProfileName::Tdx, &other, "d", "h")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model revision") && e.contains("root hash"),
            "{e}"
        );
    }
}
