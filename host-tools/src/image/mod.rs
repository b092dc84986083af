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
pub mod elf;

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
    if let Some((_, dst)) = &opts.workload {
        warnings.extend(workload_warnings(&a, dst)?);
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

/// When the config requires a GPU (`[gpu] required = true`), the files the gate opens
/// must be in the image: the NVML helper, its ELF interpreter (it is dynamically
/// linked), the shared libraries it needs and the NVML library it loads
/// (`gpu.nvml_library`), with everything those need in turn, every RIM and, with
/// `revocation = "require"`, something under the collateral folder. An image without
/// them would only fail at boot (`FATAL gpu`); this refuses to build it, naming the
/// missing path.
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
        let d = elf::dynamic(bytes)
            .map_err(|why| anyhow::anyhow!("{helper}: the NVML helper is {why}"))?;
        if let Some(interp) = &d.interpreter {
            if a.file(interp).is_none() {
                return Err(missing(
                    &format!("dynamic loader of {helper} (its PT_INTERP)"),
                    interp,
                ));
            }
            let nvml = gpu
                .get("nvml_library")
                .and_then(toml::Value::as_str)
                .unwrap_or("libnvidia-ml.so.1");
            check_libraries(a, helper, &d, interp, nvml)?;
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

/// Where the loader looks after an object's run path when the packed loader's own list
/// cannot be read ([`elf::loader_search_dirs`] finds none: not glibc's loader). There is
/// no `ld.so.cache` in the image, so these are glibc's built-in directories: Debian's
/// multiarch ones and the `lib64` ones of other distributions.
pub const LIBRARY_DIRS: [&str; 6] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Most shared objects followed from one program (a bound on a hostile archive).
const MAX_OBJECTS: usize = 256;

/// Where the loader would find `name` for an object at `object` with run path
/// `runpath`, if it is in the image; `dirs` are the loader's own directories.
fn find_library(
    a: &cpio::Archive,
    name: &str,
    object: &str,
    runpath: &[String],
    dirs: &[String],
) -> Option<String> {
    if name.contains('/') {
        return a.file(name).map(|_| name.to_owned());
    }
    let origin = object.rsplit_once('/').map_or("/", |(d, _)| d);
    runpath
        .iter()
        .map(|p| p.replace("${ORIGIN}", origin).replace("$ORIGIN", origin))
        .chain(dirs.iter().cloned())
        .map(|dir| format!("{}/{name}", dir.trim_end_matches('/')))
        .find(|p| a.file(p).is_some())
}

/// Why a program in the image would not start: something its loader would not find.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    /// `what` (a description naming `name`) is not in the image; the loader's own
    /// directories `dirs` were searched after the run path.
    NotFound {
        what: String,
        name: String,
        dirs: Vec<String>,
    },
    /// The file the loader would take is not a loadable ELF library.
    NotLoadable {
        path: String,
        name: String,
        by: String,
        why: &'static str,
    },
}

impl Problem {
    /// One line for a warning or an error.
    fn describe(&self) -> String {
        match self {
            // A name with a slash is loaded from that path only; a bare one is searched.
            Problem::NotFound { what, name, .. } if name.contains('/') => {
                format!("the image has no {what}: pack it with --file SRC:{name}")
            }
            Problem::NotFound { what, name, dirs } => format!(
                "the image has no {what} (looked in the run path and {}): pack it with \
                 --file SRC:{}/{name}",
                dirs.join(", "),
                dirs.first().map_or("/lib/x86_64-linux-gnu", String::as_str)
            ),
            Problem::NotLoadable {
                path,
                name,
                by,
                why,
            } => format!("{path} ({name}, needed by {by}) is not a loadable library: {why}"),
        }
    }
}

/// Follows `root`'s shared libraries (`DT_NEEDED`), plus the libraries it loads itself
/// (`dlopened`: (name, what it is, why it is needed), resolved as its `dlopen` would),
/// and everything those need
/// in turn, through the image. Returns what the loader would not find, in the order
/// met. The loader itself (`interp`) satisfies a need for its own file name.
fn library_problems(
    a: &cpio::Archive,
    root: &str,
    root_dyn: &elf::Dynamic,
    interp: &str,
    dlopened: &[(&str, &str, &str)],
) -> anyhow::Result<Vec<Problem>> {
    let loader_name = interp.rsplit('/').next().unwrap_or(interp);
    // The packed loader's own directories, or glibc's usual ones when it is not glibc's.
    let dirs: Vec<String> = a
        .file(interp)
        .and_then(elf::loader_search_dirs)
        .unwrap_or_else(|| LIBRARY_DIRS.iter().map(|d| (*d).to_owned()).collect());
    let mut problems = Vec::new();
    // (path in the image, name asked for, who asked), still to read.
    let mut found: Vec<(String, String, String)> = Vec::new();
    for (name, label, why) in dlopened {
        match find_library(a, name, root, &root_dyn.runpath, &dirs) {
            Some(p) => found.push((p, (*name).to_owned(), root.to_owned())),
            None => problems.push(Problem::NotFound {
                what: format!("{label} {name} ({why})"),
                name: (*name).to_owned(),
                dirs: dirs.clone(),
            }),
        }
    }
    let mut queue: Vec<(String, elf::Dynamic)> = vec![(root.to_owned(), root_dyn.clone())];
    let mut seen = std::collections::BTreeSet::from([root.to_owned(), interp.to_owned()]);
    loop {
        for (path, name, by) in found.drain(..) {
            if !seen.insert(path.clone()) {
                continue;
            }
            if seen.len() > MAX_OBJECTS {
                bail!("{root}: more than {MAX_OBJECTS} shared libraries to check");
            }
            match elf::dynamic(a.file(&path).unwrap_or_default()) {
                Ok(d) => queue.push((path, d)),
                Err(why) => problems.push(Problem::NotLoadable {
                    path,
                    name,
                    by,
                    why,
                }),
            }
        }
        let Some((object, d)) = queue.pop() else {
            return Ok(problems);
        };
        for name in &d.needed {
            if name == loader_name {
                continue;
            }
            match find_library(a, name, &object, &d.runpath, &dirs) {
                Some(p) => found.push((p, name.clone(), object.clone())),
                None => problems.push(Problem::NotFound {
                    what: format!("shared library {name} (needed by {object})"),
                    name: name.clone(),
                    dirs: dirs.clone(),
                }),
            }
        }
    }
}

/// Checks that every shared library the helper needs, the NVML library it loads
/// (`nvml`) and everything those need in turn are in the image and are ELF files.
fn check_libraries(
    a: &cpio::Archive,
    helper: &str,
    helper_dyn: &elf::Dynamic,
    interp: &str,
    nvml: &str,
) -> anyhow::Result<()> {
    let problems = library_problems(
        a,
        helper,
        helper_dyn,
        interp,
        &[(
            nvml,
            "NVML library",
            "the helper loads it; gpu.nvml_library",
        )],
    )?;
    match problems.first() {
        None => Ok(()),
        Some(p @ Problem::NotFound { .. }) => {
            bail!("the config requires a GPU, but {}", p.describe())
        }
        Some(p) => bail!("{}", p.describe()),
    }
}

/// Warnings for a workload the guest could not start: a dynamically linked program
/// whose loader or libraries are not in the image, or a script whose interpreter is
/// not (followed one level: an ELF interpreter's libraries are checked too). Warnings,
/// not errors: a workload may find its libraries on the model disk (a run path under
/// `/model`).
fn workload_warnings(a: &cpio::Archive, workload: &str) -> anyhow::Result<Vec<String>> {
    let Some(bytes) = a.file(workload) else {
        return Ok(Vec::new());
    };
    let (program, what) = if let Some(line) = bytes.strip_prefix(b"#!") {
        let line = line.split(|&c| c == b'\n').next().unwrap_or_default();
        let interp = String::from_utf8_lossy(line);
        let Some(interp) = interp.split_whitespace().next() else {
            return Ok(vec![format!(
                "workload {workload}: `#!` without an interpreter"
            )]);
        };
        if a.file(interp).is_none() {
            return Ok(vec![format!(
                "workload {workload}: its interpreter {interp} is not in the image"
            )]);
        }
        (
            interp.to_owned(),
            format!("{interp} (the interpreter of {workload})"),
        )
    } else {
        (workload.to_owned(), format!("workload {workload}"))
    };
    let Ok(d) = elf::dynamic(a.file(&program).unwrap_or_default()) else {
        return Ok(vec![format!(
            "{what} is neither a 64-bit ELF program nor a `#!` script"
        )]);
    };
    let Some(interp) = d.interpreter.clone() else {
        return Ok(Vec::new());
    };
    if a.file(&interp).is_none() {
        return Ok(vec![format!(
            "{what}: its dynamic loader {interp} (PT_INTERP) is not in the image"
        )]);
    }
    Ok(library_problems(a, &program, &d, &interp, &[])?
        .iter()
        .map(|p| format!("{what}: {}", p.describe()))
        .collect())
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
    fn workloads_that_could_not_start_are_warned_about() {
        // This test binary stands in for a dynamically linked workload.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let interp = elf::dynamic(&me).unwrap().interpreter.unwrap();
        let mut a = cpio::Archive::new();
        a.add_file("/bin/work", me.clone(), true).unwrap();
        let w = workload_warnings(&a, "/bin/work").unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("dynamic loader") && w[0].contains(&interp),
            "{w:?}"
        );
        a.add_file(&interp, b"loader".to_vec(), true).unwrap();
        let w = workload_warnings(&a, "/bin/work").unwrap();
        assert!(
            w.iter()
                .any(|l| l.contains("no shared library libc.so.6 (needed by /bin/work)")),
            "{w:?}"
        );
        // A script: its interpreter must be there, and is checked like a program.
        a.add_file(
            "/bin/job",
            b"#!/usr/bin/python3 -u\nprint(1)\n".to_vec(),
            true,
        )
        .unwrap();
        let w = workload_warnings(&a, "/bin/job").unwrap();
        assert_eq!(
            w,
            ["workload /bin/job: its interpreter /usr/bin/python3 is not in the image"]
        );
        a.add_file("/usr/bin/python3", me, true).unwrap();
        let w = workload_warnings(&a, "/bin/job").unwrap();
        assert!(
            w.iter().any(|l| l.starts_with(
                "/usr/bin/python3 (the interpreter of /bin/job): the image has no shared library"
            )),
            "{w:?}"
        );
        a.add_file("/bin/junk", b"MZ".to_vec(), true).unwrap();
        let w = workload_warnings(&a, "/bin/junk").unwrap();
        assert!(w[0].contains("neither a 64-bit ELF program"), "{w:?}");
    }

    #[test]
    fn gpu_config_needs_its_files_packed() {
        // This test binary stands in for the helper: it is dynamically linked too.
        let helper = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let interp = elf::dynamic(&helper).unwrap().interpreter.unwrap();
        let host_lib = |name: &str| {
            LIBRARY_DIRS
                .iter()
                .find_map(|d| std::fs::read(format!("{d}/{name}")).ok())
                .unwrap_or_else(|| panic!("{name} not found on this machine"))
        };
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
        assert!(e.contains("no NVML library libnvidia-ml.so.1"), "{e}");
        // A fake NVML: the host's libm (an ELF shared library that needs libc).
        a.add_file(
            "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
            host_lib("libm.so.6"),
            false,
        )
        .unwrap();
        // Each missing library is named, with who needs it; pack them one by one.
        let mut packed = Vec::new();
        loop {
            let e = check_gpu_files(config, &a).unwrap_err().to_string();
            let Some(rest) = e.split("no shared library ").nth(1) else {
                break;
            };
            let name = rest.split(' ').next().unwrap().to_owned();
            assert!(rest.contains("(needed by /"), "{e}");
            assert!(!packed.contains(&name) && packed.len() < 16, "{e}");
            a.add_file(
                &format!("/lib/x86_64-linux-gnu/{name}"),
                host_lib(&name),
                false,
            )
            .unwrap();
            packed.push(name);
        }
        assert!(packed.iter().any(|n| n == "libc.so.6"), "{packed:?}");
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
        // A library that is not an ELF file is refused.
        let mut c = cpio::Archive::new();
        c.add_file(
            "/bin/pqcc-nvml-helper",
            std::fs::read(std::env::current_exe().unwrap()).unwrap(),
            true,
        )
        .unwrap();
        c.add_file(&interp, b"loader".to_vec(), true).unwrap();
        c.add_file(
            "/opt/nv/libnvidia-ml.so.1",
            b"INPUT(-lnvml)\n".to_vec(),
            false,
        )
        .unwrap();
        let with_path = config.replace(
            "required = true",
            "required = true\nnvml_library = \"/opt/nv/libnvidia-ml.so.1\"",
        );
        let e = check_gpu_files(&with_path, &c).unwrap_err().to_string();
        assert!(
            e.contains("/opt/nv/libnvidia-ml.so.1") && e.contains("not a loadable library"),
            "{e}"
        );
        // Missing at that path: the hint is that path, not a search directory.
        let elsewhere = with_path.replace("/opt/nv/", "/opt/other/");
        let e = check_gpu_files(&elsewhere, &c).unwrap_err().to_string();
        assert!(
            e.ends_with(
                "no NVML library /opt/other/libnvidia-ml.so.1 (the helper loads it; \
                 gpu.nvml_library): pack it with --file SRC:/opt/other/libnvidia-ml.so.1"
            ),
            "{e}"
        );
        // No GPU required, or no [gpu]: nothing to check.
        check_gpu_files("[gpu]\nrequired = false\n", &b).unwrap();
        check_gpu_files("", &b).unwrap();
    }

    #[test]
    fn libraries_are_looked_for_where_the_packed_loader_looks() {
        let helper = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let interp = elf::dynamic(&helper).unwrap().interpreter.unwrap();
        let Ok(loader) = std::fs::read(&interp) else {
            println!("no {interp} on this machine: skipped");
            return;
        };
        let Some(dirs) = elf::loader_search_dirs(&loader) else {
            println!("{interp} lists no search directories: skipped");
            return;
        };
        let config = "[gpu]\nrequired = true\nhelper = \"/bin/h\"\n";
        let nvml = "libnvidia-ml.so.1";
        // An NVML library in a directory of the fixed list that this loader does not
        // search (Debian's loader skips lib64, Fedora's the multiarch directories).
        let elsewhere = LIBRARY_DIRS
            .iter()
            .find(|d| !dirs.iter().any(|x| x == *d))
            .expect("a directory this loader does not search");
        let mut a = cpio::Archive::new();
        a.add_file("/bin/h", helper.clone(), true).unwrap();
        a.add_file(&format!("{elsewhere}/{nvml}"), b"x".to_vec(), false)
            .unwrap();
        // With this machine's loader packed: not found, and the hint is its directories.
        let mut real = a.clone();
        real.add_file(&interp, loader, true).unwrap();
        let e = check_gpu_files(config, &real).unwrap_err().to_string();
        assert!(
            e.contains(&format!("no NVML library {nvml}"))
                && e.contains(&format!("looked in the run path and {}", dirs.join(", ")))
                && e.contains(&format!("--file SRC:{}/{nvml}", dirs[0])),
            "{e}"
        );
        // With a loader that is not glibc's, the fixed list applies and it is found
        // (and then refused as no ELF library).
        a.add_file(&interp, b"loader".to_vec(), true).unwrap();
        let e = check_gpu_files(config, &a).unwrap_err().to_string();
        assert!(e.contains("not a loadable library"), "{e}");
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
