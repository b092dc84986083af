//! `pqcc image build` against GNU cpio: the same inputs give the same bytes, the
//! order of the inputs does not matter, compressed modules are stored decompressed,
//! and `cpio -i` extracts exactly the files, modes and directories that went in.

mod common;

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use common::{TempDir, pqcc, run_ok, tool};

/// A fake module: the ELF magic, then `n` bytes of `fill`.
fn module(fill: u8, n: usize) -> Vec<u8> {
    let mut v = b"\x7fELF".to_vec();
    v.resize(4 + n, fill);
    v
}

struct Inputs {
    dir: TempDir,
}

impl Inputs {
    fn new() -> Self {
        let dir = TempDir::new("image-build");
        let p = dir.path();
        let write = |name: &str, data: &[u8], mode: u32| {
            let f = p.join(name);
            fs::write(&f, data).unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(mode)).unwrap();
        };
        write("init", b"\x7fELF fake init", 0o755);
        write(
            "init.toml",
            b"[modules]\nload = [\"/lib/modules/a.ko\", \"/lib/modules/b.ko\", \"/lib/modules/c.ko\"]\n",
            0o644,
        );
        write("workload", b"\x7fELF fake workload", 0o700);
        write("a.ko", &module(1, 5000), 0o644);
        // b: xz-compressed (by the xz command), c: gzip-compressed.
        write("b.ko", &module(2, 3), 0o600);
        run_ok(
            Command::new(tool("xz"))
                .args(["-z", "-f", "-q"])
                .arg(p.join("b.ko")),
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &module(3, 700)).unwrap();
        write("c.ko.gz", &gz.finish().unwrap(), 0o644);
        write("extra.txt", b"extra", 0o644);
        write("tool", b"#!tool", 0o755);
        Self { dir }
    }

    fn p(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }

    fn build(&self, out: &str, reversed: bool, gzip: bool) -> (Vec<u8>, String) {
        let mut files = vec![
            format!("{}:/usr/share/extra.txt", self.p("extra.txt").display()),
            format!("{}:/usr/bin/tool", self.p("tool").display()),
        ];
        let mut modules = vec![self.p("a.ko"), self.p("b.ko.xz"), self.p("c.ko.gz")];
        if reversed {
            files.reverse();
            modules.reverse();
        }
        let mut c = pqcc();
        c.args(["image", "build", "--init"])
            .arg(self.p("init"))
            .arg("--config")
            .arg(self.p("init.toml"))
            .arg("--workload")
            .arg(self.p("workload"))
            .arg("-o")
            .arg(self.p(out));
        for f in &files {
            c.arg("--file").arg(f);
        }
        c.arg("--modules").args(&modules);
        if gzip {
            c.arg("--gzip");
        }
        let o = run_ok(&mut c);
        (
            fs::read(self.p(out)).unwrap(),
            String::from_utf8(o.stdout).unwrap(),
        )
    }
}

#[test]
fn image_build_is_deterministic() {
    let i = Inputs::new();
    let (a, out_a) = i.build("a.img", false, false);
    let (b, out_b) = i.build("b.img", false, false);
    let (c, _) = i.build("c.img", true, false);
    assert_eq!(a, b, "same inputs, different bytes");
    assert_eq!(a, c, "input order changed the image");
    assert_eq!(out_a, out_b);
    // The printed hashes are those of the file.
    let sha256 = out_a
        .lines()
        .find_map(|l| l.strip_prefix("sha256 "))
        .unwrap();
    let sha384 = out_a
        .lines()
        .find_map(|l| l.strip_prefix("sha384 "))
        .unwrap();
    use sha2::Digest;
    assert_eq!(sha256, hex::encode(sha2::Sha256::digest(&a)));
    assert_eq!(sha384, hex::encode(sha2::Sha384::digest(&a)));

    let (g1, _) = i.build("g1.img", false, true);
    let (g2, _) = i.build("g2.img", true, true);
    assert_eq!(g1, g2, "gzip output not deterministic");
    let mut raw = Vec::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(&g1[..])
        .read_to_end(&mut raw)
        .unwrap();
    assert_eq!(raw, a, "gzip image does not hold the plain image");
}

/// (path, kind, mode & 0o7777, contents) of every entry under `root`, sorted.
fn tree(root: &Path) -> Vec<(String, char, u32, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, char, u32, Vec<u8>)>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let meta = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.push((rel, 'd', mode, vec![]));
                walk(root, &p, out);
            } else {
                assert!(meta.is_file(), "{rel}: not a file");
                out.push((rel, 'f', mode, fs::read(&p).unwrap()));
            }
        }
    }
    let mut v = Vec::new();
    walk(root, root, &mut v);
    v.sort();
    v
}

#[test]
fn image_build_extracts_with_gnu_cpio() {
    let cpio = tool("cpio");
    let i = Inputs::new();
    i.build("x.img", false, false);
    let root = i.p("extract");
    fs::create_dir_all(&root).unwrap();
    let out = Command::new(&cpio)
        .args([
            "-i",
            "-d",
            "--no-absolute-filenames",
            "--quiet",
            "--no-preserve-owner",
        ])
        .current_dir(&root)
        .stdin(fs::File::open(i.p("x.img")).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cpio -i failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = tree(&root);
    let f = |p: &str, mode: u32, d: &[u8]| (p.to_owned(), 'f', mode, d.to_vec());
    let d = |p: &str| (p.to_owned(), 'd', 0o755, vec![]);
    let mut want = vec![
        d("dev"),
        d("etc"),
        d("etc/pqcc"),
        f(
            "etc/pqcc/init.toml",
            0o644,
            &fs::read(i.p("init.toml")).unwrap(),
        ),
        d("bin"),
        f("bin/workload", 0o755, b"\x7fELF fake workload"),
        f("init", 0o755, b"\x7fELF fake init"),
        d("lib"),
        d("lib/modules"),
        f("lib/modules/a.ko", 0o644, &module(1, 5000)),
        f("lib/modules/b.ko", 0o644, &module(2, 3)),
        f("lib/modules/c.ko", 0o644, &module(3, 700)),
        d("proc"),
        d("run"),
        d("sys"),
        d("usr"),
        d("usr/bin"),
        f("usr/bin/tool", 0o755, b"#!tool"),
        d("usr/share"),
        f("usr/share/extra.txt", 0o644, b"extra"),
    ];
    want.sort();
    // cpio applies the umask to directories it creates; compare kinds and contents
    // for those, modes for files.
    let strip = |v: Vec<(String, char, u32, Vec<u8>)>| -> Vec<_> {
        v.into_iter()
            .map(|(p, k, m, c)| (p, k, if k == 'd' { 0 } else { m }, c))
            .collect()
    };
    assert_eq!(strip(got), strip(want));

    // GNU cpio's own listing: uid/gid 0, mtime 0 on every entry.
    let out = Command::new(&cpio)
        .args(["-t", "-v", "--quiet", "--numeric-uid-gid"])
        .stdin(fs::File::open(i.p("x.img")).unwrap())
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listing.lines().count(), 20, "{listing}");
    for l in listing.lines() {
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert_eq!((cols[2], cols[3]), ("0", "0"), "owner in `{l}`");
        assert!(l.contains("1970"), "mtime in `{l}`");
    }
}

#[test]
fn image_build_refuses_duplicates() {
    let i = Inputs::new();
    let o = pqcc()
        .args(["image", "build", "--init"])
        .arg(i.p("init"))
        .arg("--config")
        .arg(i.p("init.toml"))
        .arg("--file")
        .arg(format!("{}:/init", i.p("tool").display()))
        .arg("-o")
        .arg(i.p("dup.img"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("twice"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!i.p("dup.img").exists());
}

/// Modules compressed the way kernel builds compress them (`zstd`, and `xz` with
/// CRC32 checks and a 1 MiB dictionary as kbuild's `MODULE_COMPRESS_XZ` does) are
/// stored as the exact original `.ko` bytes, so the guest loads them with a plain
/// `finit_module` whatever the kernel's own decompression support. Damaged or
/// non-module inputs are refused and no image is written.
#[test]
fn image_build_decompresses_zstd_and_xz_modules() {
    let i = Inputs::new();
    let mut e = module(0, 0);
    e.extend((0..40_000u32).map(|n| n.wrapping_mul(2_654_435_761).to_le_bytes()[1]));
    let f = module(7, 9000);
    fs::write(i.p("e.ko"), &e).unwrap();
    fs::write(i.p("f.ko"), &f).unwrap();
    run_ok(
        Command::new(tool("zstd"))
            .args(["-q", "-19", "-f", "-o"])
            .arg(i.p("e.ko.zst"))
            .arg(i.p("e.ko")),
    );
    run_ok(
        Command::new(tool("xz"))
            .args(["-z", "-f", "-q", "--check=crc32", "--lzma2=dict=1MiB", "-k"])
            .arg(i.p("f.ko")),
    );
    let zst = fs::read(i.p("e.ko.zst")).unwrap();
    assert!(zst.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), "a zstd frame");
    assert!(fs::read(i.p("f.ko.xz")).unwrap().starts_with(b"\xfd7zXZ\0"));

    let build = |out: &str, modules: &[&str]| {
        let mut c = pqcc();
        c.args(["image", "build", "--json", "--init"])
            .arg(i.p("init"))
            .arg("--config")
            .arg(i.p("init.toml"))
            .arg("-o")
            .arg(i.p(out))
            .arg("--modules");
        for m in modules {
            c.arg(i.p(m));
        }
        c.output().unwrap()
    };
    let o = build("z.img", &["e.ko.zst", "f.ko.xz"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let files: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(files.contains(&"/lib/modules/e.ko") && files.contains(&"/lib/modules/f.ko"));
    assert!(
        !files
            .iter()
            .any(|f| f.ends_with(".zst") || f.ends_with(".xz")),
        "{files:?}"
    );
    let root = i.p("zx");
    fs::create_dir_all(&root).unwrap();
    let out = Command::new(tool("cpio"))
        .args(["-i", "-d", "--no-absolute-filenames", "--quiet"])
        .current_dir(&root)
        .stdin(fs::File::open(i.p("z.img")).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(fs::read(root.join("lib/modules/e.ko")).unwrap(), e);
    assert_eq!(fs::read(root.join("lib/modules/f.ko")).unwrap(), f);

    // A truncated zstd module: refused, naming the tool and the file; no image.
    fs::write(i.p("bad.ko.zst"), &zst[..zst.len() / 2]).unwrap();
    let o = build("bad.img", &["bad.ko.zst"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("zstd -d") && err.contains("bad.ko.zst"),
        "{err}"
    );
    assert!(!i.p("bad.img").exists());

    // Something that decompresses but is no module.
    fs::write(i.p("text.ko"), b"not a module").unwrap();
    run_ok(
        Command::new(tool("zstd"))
            .args(["-q", "-f", "-o"])
            .arg(i.p("text.ko.zst"))
            .arg(i.p("text.ko")),
    );
    let o = build("text.img", &["text.ko.zst"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("not an ELF object"), "{err}");
}

/// The shared libraries `ldd` (the real loader, in trace mode) resolves for `elf`, as
/// file names; the vDSO and the loader itself left out.
fn ldd_names(elf: &Path) -> std::collections::BTreeSet<String> {
    let o = run_ok(Command::new(tool("ldd")).arg(elf));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| !n.starts_with("linux-vdso") && !n.contains("ld-linux"))
        .map(|n| n.rsplit('/').next().unwrap().to_owned())
        .collect()
}

/// With `[gpu] required = true`, `pqcc image build` follows the NVML helper's
/// `DT_NEEDED` libraries and the NVML library it loads, transitively, and refuses an
/// image that lacks one, naming it. The set it ends up requiring is what the real
/// loader (`ldd`) resolves for the same files.
#[test]
fn image_build_requires_the_gpu_helpers_libraries() {
    let i = Inputs::new();
    // The pqcc binary stands in for the helper (both are dynamically linked Rust
    // programs); the host's libm stands in for libnvidia-ml.so.1 (a fake NVML: an ELF
    // shared library with needs of its own).
    let helper = common::pqcc_bin().to_path_buf();
    let libm = ["/lib/x86_64-linux-gnu/libm.so.6", "/lib64/libm.so.6"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("libm.so.6");
    let interp = ["/lib64/ld-linux-x86-64.so.2"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("the x86-64 loader");
    fs::write(
        i.p("init.toml"),
        "[gpu]\nrequired = true\nhelper = \"/bin/pqcc-nvml-helper\"\n\
         rims = [\"/etc/pqcc/gpu/driver.swidtag\"]\ncollateral = \"/etc/pqcc/gpu/collateral\"\n",
    )
    .unwrap();
    fs::write(i.p("rim"), b"rim").unwrap();
    let mut files = vec![
        format!("{}:/bin/pqcc-nvml-helper", helper.display()),
        format!("{}:{}", interp.display(), interp.display()),
        format!(
            "{}:/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
            libm.display()
        ),
        format!("{}:/etc/pqcc/gpu/driver.swidtag", i.p("rim").display()),
        format!("{}:/etc/pqcc/gpu/collateral/crl.der", i.p("rim").display()),
    ];
    let build = |files: &[String]| {
        let mut c = pqcc();
        c.args(["image", "build", "--init"])
            .arg(i.p("init"))
            .arg("--config")
            .arg(i.p("init.toml"))
            .arg("-o")
            .arg(i.p("gpu.img"));
        for f in files {
            c.arg("--file").arg(f);
        }
        c.output().unwrap()
    };
    let mut required = std::collections::BTreeSet::new();
    loop {
        let o = build(&files);
        if o.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(!i.p("gpu.img").exists(), "an image was written: {err}");
        let name = err
            .split("no shared library ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("no library named: {err}"))
            .to_owned();
        assert!(err.contains("needed by /"), "{err}");
        assert!(
            required.insert(name.clone()) && required.len() < 32,
            "{err}"
        );
        let src = ldd_source(&helper, &libm, &name);
        files.push(format!("{}:/lib/x86_64-linux-gnu/{name}", src.display()));
    }
    let mut want = ldd_names(&helper);
    want.extend(ldd_names(&libm));
    assert_eq!(
        required, want,
        "pqcc asked for other libraries than ldd finds"
    );
}

/// Where `ldd` finds `name` for `helper` or `libm`.
fn ldd_source(helper: &Path, libm: &Path, name: &str) -> PathBuf {
    for elf in [helper, libm] {
        let o = run_ok(Command::new(tool("ldd")).arg(elf));
        for l in String::from_utf8(o.stdout).unwrap().lines() {
            let mut w = l.split_whitespace();
            if w.next() == Some(name) && w.next() == Some("=>") {
                return PathBuf::from(w.next().unwrap());
            }
        }
    }
    panic!("ldd does not resolve {name}");
}
