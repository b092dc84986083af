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
