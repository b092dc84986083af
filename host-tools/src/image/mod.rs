//! Guest initramfs images (`pqcc image build`).
//!
//! An image is a deterministic newc cpio ([`cpio`]) holding:
//!
//! | path in the guest | from |
//! |---|---|
//! | `/init` | `--init` (the static `pqcc-init` binary) |
//! | `/etc/pqcc/init.toml` | `--config` (measured with the image) |
//! | `/bin/workload` or the DST of `--workload SRC:DST` | `--workload` |
//! | `/lib/modules/<NAME>.ko` | each `--modules` file (`.ko`, or `.ko.gz/.xz/.zst` decompressed), or each line of `DIR/modules.list` for `--kernel-release DIR` |
//! | DST | each `--file SRC:DST` |
//!
//! plus `/proc`, `/sys`, `/dev`, `/run` as empty directories. The same inputs give the
//! same bytes (sorted entries, mtime/uid/gid 0, fixed modes, gzip with no name and
//! mtime 0), so the SHA-256 and SHA-384 printed for an image can be recomputed and
//! used to predict launch measurements. The order in which pqcc-init loads modules is
//! the order of `modules.load` in the config, not the order in the archive.

pub mod cli;
pub mod cpio;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256, Sha384};

/// Where the config goes.
pub const CONFIG_DST: &str = "/etc/pqcc/init.toml";
/// Where modules go.
pub const MODULE_DIR: &str = "/lib/modules";
/// Default workload destination.
pub const WORKLOAD_DST: &str = "/bin/workload";

/// What goes into an image.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The `pqcc-init` binary, installed as `/init`.
    pub init: PathBuf,
    /// The `init.toml`.
    pub config: PathBuf,
    /// The workload binary and where it goes.
    pub workload: Option<(PathBuf, String)>,
    /// Kernel modules, installed under `/lib/modules/` by file name.
    pub modules: Vec<PathBuf>,
    /// Other files: source and absolute destination.
    pub files: Vec<(PathBuf, String)>,
    /// Compress with gzip (level 9, no name, mtime 0).
    pub gzip: bool,
}

/// A built image.
#[derive(Debug, Clone)]
pub struct Image {
    /// The image bytes (compressed when asked).
    pub bytes: Vec<u8>,
    /// Paths inside, in archive order.
    pub paths: Vec<String>,
    /// Notes for the operator (e.g. a packed module the config does not load).
    pub warnings: Vec<String>,
}

impl Image {
    /// SHA-256 of the image bytes.
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.bytes).into()
    }

    /// SHA-384 of the image bytes.
    pub fn sha384(&self) -> [u8; 48] {
        Sha384::digest(&self.bytes).into()
    }
}

/// Splits `SRC:DST` at the last `:` followed by `/`.
pub fn split_src_dst(s: &str) -> anyhow::Result<(PathBuf, String)> {
    match s.rfind(":/") {
        Some(i) if i > 0 => Ok((PathBuf::from(&s[..i]), s[i + 1..].to_owned())),
        _ => bail!("{s:?}: expected SRC:/ABSOLUTE/DST"),
    }
}

/// Reads `DIR/modules.list` (as `scripts/guest-kernel.sh` writes it): one module
/// path per line, absolute or relative to DIR; blank lines and `#` comments skipped.
pub fn modules_from_list(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let list = dir.join("modules.list");
    let text = std::fs::read_to_string(&list).with_context(|| format!("{}", list.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| dir.join(l))
        .collect())
}

/// Reads a kernel module for the image: `NAME.ko` as it is; `NAME.ko.gz`,
/// `NAME.ko.xz` and `NAME.ko.zst` decompressed (gzip here, xz and zstd through the
/// `xz` and `zstd` commands) and stored as `NAME.ko`, since the guest kernel may lack
/// in-kernel module decompression (Debian's 6.1 does). Returns the stored name and
/// the bytes.
pub fn module(path: &Path) -> anyhow::Result<(String, Vec<u8>)> {
    use std::io::Read;
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        bail!("{}: no usable file name", path.display());
    };
    let (data, _) = cpio::read_source(path)?;
    let external = |tool: &str| -> anyhow::Result<Vec<u8>> {
        let out = std::process::Command::new(tool)
            .args(["-d", "-c", "-q"])
            .arg(path)
            .output()
            .with_context(|| format!("running `{tool}` to decompress {}", path.display()))?;
        if !out.status.success() {
            bail!(
                "{tool} -d {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    };
    let (stem, plain) = if let Some(stem) = name.strip_suffix(".ko.gz") {
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(&data[..])
            .read_to_end(&mut v)
            .with_context(|| format!("{}: gzip", path.display()))?;
        (stem, v)
    } else if let Some(stem) = name.strip_suffix(".ko.xz") {
        (stem, external("xz")?)
    } else if let Some(stem) = name.strip_suffix(".ko.zst") {
        (stem, external("zstd")?)
    } else if let Some(stem) = name.strip_suffix(".ko") {
        (stem, data)
    } else {
        bail!(
            "{}: not a kernel module (.ko, .ko.gz, .ko.xz, .ko.zst)",
            path.display()
        );
    };
    if !plain.starts_with(b"\x7fELF") {
        bail!("{}: not an ELF object after decompression", path.display());
    }
    Ok((format!("{stem}.ko"), plain))
}

/// Assembles the image.
pub fn build(opts: &Options) -> anyhow::Result<Image> {
    let mut a = cpio::Archive::new();
    let mut warnings = Vec::new();
    for d in ["/proc", "/sys", "/dev", "/run"] {
        a.add_dir(d)?;
    }
    let (init, _) = cpio::read_source(&opts.init)?;
    a.add_file("/init", init, true)?;

    let (config, _) = cpio::read_source(&opts.config)?;
    let config_text = String::from_utf8(config.clone())
        .with_context(|| format!("{}: not UTF-8", opts.config.display()))?;
    a.add_file(CONFIG_DST, config, false)?;

    if let Some((src, dst)) = &opts.workload {
        let (data, _) = cpio::read_source(src)?;
        a.add_file(dst, data, true)?;
    }

    for m in &opts.modules {
        let (name, data) = module(m)?;
        let dst = format!("{MODULE_DIR}/{name}");
        a.add_file(&dst, data, false)?;
        if !config_text.contains(&format!("\"{dst}\"")) {
            warnings.push(format!("{dst} is packed but the config does not load it"));
        }
    }

    for (src, dst) in &opts.files {
        let (data, exec) = cpio::read_source(src)?;
        a.add_file(dst, data, exec)?;
    }

    check_gpu_files(&config_text, &a)?;

    let raw = a.to_bytes();
    let bytes = if opts.gzip {
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::best());
        gz.write_all(&raw)?;
        gz.finish()?
    } else {
        raw
    };
    Ok(Image {
        bytes,
        paths: a.paths().map(|p| format!("/{p}")).collect(),
        warnings,
    })
}

/// When the config requires a GPU (`[gpu] required = true`), the files the gate opens
/// must be in the image: the NVML helper, its ELF interpreter (it is dynamically
/// linked), every RIM and, with `revocation = "require"`, something under the collateral
/// folder. An image without them would only fail at boot (`FATAL gpu`); this refuses to
/// build it, naming the missing path. `libnvidia-ml.so.1` and the helper's other shared
/// libraries are not checked: the helper's error names them at boot
/// (`docs/gpu-attestation.md`, "Packing the gate").
fn check_gpu_files(config_text: &str, a: &cpio::Archive) -> anyhow::Result<()> {
    // A config that does not parse is pqcc-init's to refuse, with its own message.
    let Ok(table) = config_text.parse::<toml::Table>() else {
        return Ok(());
    };
    let Some(gpu) = table.get("gpu").and_then(|g| g.as_table()) else {
        return Ok(());
    };
    if gpu.get("required").and_then(toml::Value::as_bool) != Some(true) {
        return Ok(());
    }
    let missing = |what: &str, p: &str| {
        anyhow::anyhow!(
            "the config requires a GPU, but the image has no {what} {p}: pack it with --file SRC:{p}"
        )
    };
    if let Some(helper) = gpu.get("helper").and_then(toml::Value::as_str) {
        let bytes = a
            .file(helper)
            .ok_or_else(|| missing("NVML helper", helper))?;
        match elf_interpreter(bytes) {
            Ok(Some(interp)) if a.file(&interp).is_none() => {
                return Err(missing(
                    &format!("dynamic loader of {helper} (its PT_INTERP)"),
                    &interp,
                ));
            }
            Ok(_) => {}
            Err(why) => bail!("{helper}: the NVML helper is {why}"),
        }
    }
    for rim in gpu
        .get("rims")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_str)
    {
        if a.file(rim).is_none() {
            return Err(missing("RIM", rim));
        }
    }
    if let Some(dir) = gpu.get("collateral").and_then(toml::Value::as_str) {
        let prefix = format!("{}/", dir.trim_matches('/'));
        if !a.paths().any(|p| p.starts_with(&prefix)) {
            return Err(missing("revocation collateral under", dir));
        }
    }
    Ok(())
}

/// The program interpreter (`PT_INTERP`) of a 64-bit little-endian ELF file, `None`
/// for a static one; `Err` names what is wrong with a file that is not such an ELF.
fn elf_interpreter(b: &[u8]) -> Result<Option<String>, &'static str> {
    const PT_INTERP: u32 = 3;
    let u16_at =
        |o: usize| -> Option<u16> { Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?)) };
    let u32_at =
        |o: usize| -> Option<u32> { Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?)) };
    let u64_at = |o: usize| -> Option<usize> {
        usize::try_from(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?)).ok()
    };
    if b.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err("not a 64-bit little-endian ELF file");
    }
    let bad = "a malformed ELF file";
    let phoff = u64_at(0x20).ok_or(bad)?;
    let phentsize = usize::from(u16_at(0x36).ok_or(bad)?);
    let phnum = usize::from(u16_at(0x38).ok_or(bad)?);
    if phentsize < 0x38 {
        return Err(bad);
    }
    for i in 0..phnum {
        let ph = phentsize
            .checked_mul(i)
            .and_then(|o| o.checked_add(phoff))
            .ok_or(bad)?;
        if u32_at(ph).ok_or(bad)? != PT_INTERP {
            continue;
        }
        let off = u64_at(ph + 0x08).ok_or(bad)?;
        let len = u64_at(ph + 0x20).ok_or(bad)?;
        let raw = b.get(off..off.checked_add(len).ok_or(bad)?).ok_or(bad)?;
        let path = raw.strip_suffix(&[0]).unwrap_or(raw);
        let path = std::str::from_utf8(path).map_err(|_| bad)?;
        return Ok(Some(path.to_owned()));
    }
    Ok(None)
}

/// Writes `bytes` to `out` through a temporary file and a rename.
pub fn write_atomically(out: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_context(|| format!("{}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("{}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn src_dst() {
        let (s, d) = split_src_dst("a/b:c:/x/y").unwrap();
        assert_eq!(s, PathBuf::from("a/b:c"));
        assert_eq!(d, "/x/y");
        assert!(split_src_dst("a/b").is_err());
        assert!(split_src_dst(":/x").is_err());
    }

    #[test]
    fn elf_interpreter_of_real_binaries() {
        // This test binary is dynamically linked by cargo's default (no crt-static).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let interp = elf_interpreter(&me).unwrap();
        assert!(
            interp
                .as_deref()
                .is_some_and(|p| p.starts_with('/') && p.contains("ld-")),
            "{interp:?}"
        );
        assert!(elf_interpreter(b"#!/bin/sh\n").is_err());
        // Cut anywhere: an error or an answer, never a panic.
        for n in (0..me.len().min(8192)).step_by(7) {
            let _ = elf_interpreter(&me[..n]);
        }
    }

    #[test]
    fn gpu_config_needs_its_files_packed() {
        let helper = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let interp = elf_interpreter(&helper).unwrap().unwrap();
        let config = r#"
[gpu]
required = true
helper = "/bin/pqcc-nvml-helper"
rims = ["/etc/pqcc/gpu/driver.swidtag"]
collateral = "/etc/pqcc/gpu/collateral"
"#;
        let mut a = cpio::Archive::new();
        let e = check_gpu_files(config, &a).unwrap_err().to_string();
        assert!(e.contains("no NVML helper /bin/pqcc-nvml-helper"), "{e}");
        a.add_file("/bin/pqcc-nvml-helper", helper, true).unwrap();
        let e = check_gpu_files(config, &a).unwrap_err().to_string();
        assert!(e.contains("dynamic loader") && e.contains(&interp), "{e}");
        a.add_file(&interp, b"loader".to_vec(), true).unwrap();
        let e = check_gpu_files(config, &a).unwrap_err().to_string();
        assert!(e.contains("no RIM /etc/pqcc/gpu/driver.swidtag"), "{e}");
        a.add_file("/etc/pqcc/gpu/driver.swidtag", b"rim".to_vec(), false)
            .unwrap();
        let e = check_gpu_files(config, &a).unwrap_err().to_string();
        assert!(
            e.contains("no revocation collateral under /etc/pqcc/gpu/collateral"),
            "{e}"
        );
        a.add_file("/etc/pqcc/gpu/collateral/crl.der", b"crl".to_vec(), false)
            .unwrap();
        check_gpu_files(config, &a).unwrap();
        // A helper that is not an ELF file is refused.
        let mut b = cpio::Archive::new();
        b.add_file("/bin/pqcc-nvml-helper", b"#!/bin/sh\n".to_vec(), true)
            .unwrap();
        let e = check_gpu_files(config, &b).unwrap_err().to_string();
        assert!(e.contains("not a 64-bit little-endian ELF"), "{e}");
        // No GPU required, or no [gpu]: nothing to check.
        check_gpu_files("[gpu]\nrequired = false\n", &b).unwrap();
        check_gpu_files("", &b).unwrap();
    }

    #[test]
    fn modules_must_be_elf_modules() {
        let dir = std::env::temp_dir().join(format!("pqcc-image-mod-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let w = |n: &str, d: &[u8]| {
            std::fs::write(dir.join(n), d).unwrap();
            dir.join(n)
        };
        let (name, data) = module(&w("x.ko", b"\x7fELFabc")).unwrap();
        assert_eq!((name.as_str(), &data[..]), ("x.ko", &b"\x7fELFabc"[..]));
        assert!(
            module(&w("x.o", b"\x7fELF"))
                .unwrap_err()
                .to_string()
                .contains("not a kernel module")
        );
        assert!(
            module(&w("y.ko", b"text"))
                .unwrap_err()
                .to_string()
                .contains("not an ELF")
        );
        assert!(module(&w("z.ko.gz", b"not gzip")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
