//! Real guest boots under QEMU (TCG): pqcc-init as PID 1 of an initramfs built with
//! `pqcc image build`, a Debian kernel from `scripts/guest-kernel.sh`, and a model
//! built with `pqcc model build` on two read-only virtio disks.
//!
//! Every guest is started by `pqcc launch --profile none` (qemu/none.args, TCG), so
//! the harness is the product's own launcher. The happy path checks what the
//! workload read through the file view (FUSE over dm-verity) against the host's
//! SHA-256 of the same files, the exit status QEMU reports (`isa-debug-exit`) and the
//! one `pqcc launch` derives from it. Each refusal checks exactly one
//! `pqcc-init: FATAL <stage>:` line, that the workload never ran, and that
//! `pqcc launch` exits 1 naming the stage.
//!
//! Needs `qemu-system-x86_64`, `apt-get download` access for the kernel (cached in
//! `target/guest-kernel/`), kmod and xz-utils; `scripts/test.sh` installs them.

mod common;

use std::{
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use common::{Rng, TempDir, pqcc, run_ok, tool};
use sha2::{Digest, Sha256};

const SALT: &str = "00010203040506070809101a1b1c1d1e1f";
const DATA_SERIAL: &str = "pqcc-data";
const HASH_SERIAL: &str = "pqcc-hash";
/// Generous: TCG on a shared machine varies by 30–50 % run to run.
const BOOT_TIMEOUT_S: u32 = 240;

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The kernel folder from `scripts/guest-kernel.sh` (fetched once, then cached).
fn kernel() -> &'static Path {
    static K: OnceLock<PathBuf> = OnceLock::new();
    K.get_or_init(|| {
        let out = run_ok(
            Command::new("bash")
                .arg(repo().join("scripts/guest-kernel.sh"))
                .arg(repo().join("target/guest-kernel")),
        );
        let dir = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("guest-kernel.sh printed its folder")
            .to_owned();
        PathBuf::from(dir)
    })
}

/// The static guest binaries: (pqcc-init, the model-sha256 test workload). The broker
/// link is exercised end to end by `demo.rs` (the real broker through `pqcc launch`).
fn guest_bins() -> &'static (PathBuf, PathBuf) {
    static B: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    B.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "--profile",
                "guest",
                "-p",
                "pqcc-init",
                "--target",
                "x86_64-unknown-linux-gnu",
                "--bin",
                "pqcc-init",
                "--example",
                "model-sha256",
                "--message-format=json",
                "--manifest-path",
            ])
            .arg(repo().join("Cargo.toml"))
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .output()
            .expect("running cargo build for the guest binaries");
        assert!(
            out.status.success(),
            "static build of pqcc-init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (mut init, mut workload) = (None, None);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["reason"] != "compiler-artifact" {
                continue;
            }
            let exe = v["executable"].as_str().map(PathBuf::from);
            match v["target"]["name"].as_str() {
                Some("pqcc-init") => init = exe,
                Some("model-sha256") => workload = exe,
                _ => {}
            }
        }
        (
            init.expect("cargo reported pqcc-init"),
            workload.expect("cargo reported model-sha256"),
        )
    })
}

/// A built model: the archive, its hash file, root hash, and the host's SHA-256 of
/// each file.
struct Model {
    /// The `pqcc model build` output directory.
    dir: PathBuf,
    tar: PathBuf,
    verity: PathBuf,
    root: String,
    blocks: u64,
    files: Vec<(String, usize, String)>,
}

fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        // Under target/ (a static is never dropped, so no TempDir); rebuilt each run.
        let dir = repo().join("target/boot-tests");
        let _ = fs::remove_dir_all(&dir);
        let src = dir.join("tiny");
        fs::create_dir_all(&src).unwrap();
        let mut rng = Rng::new(5);
        let files = [
            ("config.json", b"{\"layers\": 2}\n".to_vec()),
            ("tokenizer/vocab.txt", b"a\nb\nc\n".to_vec()),
            ("weights.bin", rng.bytes(300_000)),
        ];
        fs::create_dir_all(src.join("tokenizer")).unwrap();
        for (n, d) in &files {
            fs::write(src.join(n), d).unwrap();
        }
        let out = run_ok(
            pqcc()
                .args(["model", "build", "--name", "tiny", "--revision", "r1"])
                .arg("--out")
                .arg(dir.join("out"))
                .arg("--json")
                .arg(&src),
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let tar = PathBuf::from(v["archive"].as_str().unwrap());
        let blocks = fs::metadata(&tar).unwrap().len() / 4096;
        Model {
            dir: dir.join("out"),
            verity: PathBuf::from(v["verity"].as_str().unwrap()),
            root: v["root_hash"].as_str().unwrap().to_owned(),
            tar,
            blocks,
            files: files
                .iter()
                .map(|(n, d)| (format!("./{n}"), d.len(), hex::encode(Sha256::digest(d))))
                .collect(),
        }
    })
}

/// The module file names in load order, from the kernel folder's modules.list, as
/// `pqcc image build` installs them (`NAME.ko`: Debian's 6.12 ships `.ko.xz`, which it
/// decompresses).
fn module_names() -> Vec<String> {
    fs::read_to_string(kernel().join("modules.list"))
        .unwrap()
        .lines()
        .map(|l| {
            let name = Path::new(l).file_name().unwrap().to_string_lossy();
            let stem = [".xz", ".zst", ".gz"]
                .iter()
                .find_map(|c| name.strip_suffix(c))
                .unwrap_or(&name);
            stem.to_owned()
        })
        .collect()
}

/// What a test may change in the config.
struct Cfg {
    root: String,
    args: Vec<&'static str>,
    extra_modules: Vec<&'static str>,
    disk_wait_ms: u64,
}

impl Default for Cfg {
    fn default() -> Self {
        Self {
            root: model().root.clone(),
            args: vec![],
            extra_modules: vec![],
            disk_wait_ms: 10_000,
        }
    }
}

fn config_text(c: &Cfg) -> String {
    let mut modules: Vec<String> = module_names()
        .iter()
        .map(|m| format!("\"/lib/modules/{m}\""))
        .collect();
    modules.extend(c.extra_modules.iter().map(|m| format!("\"{m}\"")));
    let args: Vec<String> = c.args.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"[model]
name = "tiny"
revision = "r1"
root_hash = "{root}"
salt = "{SALT}"
data_blocks = {blocks}
data_serial = "{DATA_SERIAL}"
hash_serial = "{HASH_SERIAL}"

[platform]
required = "none"
insecure_no_tee = true

[workload]
command = "/bin/workload"
args = [{args}]
env = {{ TEST_RUN = "1" }}

[modules]
load = [{modules}]

[debug]
qemu_debug_exit = true
disk_wait_ms = {wait}
"#,
        root = c.root,
        blocks = model().blocks,
        args = args.join(", "),
        modules = modules.join(", "),
        wait = c.disk_wait_ms,
    )
}

/// Builds an initramfs around `config` (raw text) in `dir`.
fn image(dir: &Path, config: &str) -> PathBuf {
    image_with(dir, config, &guest_bins().1, &[])
}

/// Builds an initramfs around `config` with `workload` and, besides the kernel
/// folder's modules.list, the modules in `extra`.
fn image_with(dir: &Path, config: &str, workload: &Path, extra: &[PathBuf]) -> PathBuf {
    let init = &guest_bins().0;
    let cfg = dir.join("init.toml");
    fs::write(&cfg, config).unwrap();
    let out = dir.join("initrd.img");
    run_ok(
        pqcc()
            .args(["image", "build", "--init"])
            .arg(init)
            .arg("--config")
            .arg(&cfg)
            .arg("--workload")
            .arg(workload)
            .args(if extra.is_empty() {
                vec![OsString::from("--kernel-release"), kernel().into()]
            } else {
                let mut m = vec![OsString::from("--modules")];
                m.extend(kernel_modules().into_iter().map(OsString::from));
                m.extend(extra.iter().map(OsString::from));
                m
            })
            .arg("-o")
            .arg(&out),
    );
    out
}

/// The module files of the kernel folder's modules.list, in order.
fn kernel_modules() -> Vec<PathBuf> {
    fs::read_to_string(kernel().join("modules.list"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| kernel().join(l.trim()))
        .collect()
}

struct Boot {
    /// The serial console (with QEMU's and pqcc's diagnostics: `pqcc launch --json`
    /// sends the console to stderr).
    console: String,
    /// The exit status of `pqcc launch`: 0 workload OK, 1 refused or failed, 2 error.
    status: i32,
    /// `pqcc launch --json`'s result.
    result: serde_json::Value,
    wall: Duration,
}

impl Boot {
    fn fatal_lines(&self) -> Vec<&str> {
        self.console
            .lines()
            // `pqcc launch`'s own summary line (`pqcc: launch: …`) quotes it.
            .filter(|l| l.contains("pqcc-init: FATAL") && !l.starts_with("pqcc: "))
            .collect()
    }

    fn workload_ran(&self) -> bool {
        self.console.contains("workload: exec") || self.console.contains("model-sha256:")
    }

    /// QEMU's exit status: 0 after a plain power-off, `code * 2 + 1` after
    /// `isa-debug-exit`.
    fn qemu_status(&self) -> i64 {
        self.result["qemu_status"]
            .as_i64()
            .unwrap_or_else(|| panic!("no QEMU status in {}", self.result))
    }

    /// Asserts one FATAL line for `stage`, a power-off, no workload, and that
    /// `pqcc launch` says so (exit 1, the stage in its result).
    fn assert_refused(&self, stage: &str) {
        let f = self.fatal_lines();
        assert_eq!(f.len(), 1, "expected one FATAL line:\n{}", self.console);
        assert!(
            f[0].trim_start()
                .starts_with(&format!("pqcc-init: FATAL {stage}: ")),
            "wrong stage, expected {stage}:\n{}",
            self.console
        );
        assert!(!self.workload_ran(), "workload ran:\n{}", self.console);
        assert_eq!(
            self.qemu_status(),
            0,
            "expected a plain power-off:\n{}",
            self.console
        );
        assert_eq!(self.status, 1, "pqcc launch: {}", self.result);
        assert_eq!(self.result["fatal_stage"], stage, "{}", self.result);
    }
}

/// Boots the kernel with `initrd` and the model in `model_dir` through
/// `pqcc launch --profile none` (TCG), plus `extra` arguments.
fn boot(tag: &str, initrd: &Path, model_dir: &Path, extra: &[&std::ffi::OsStr]) -> Boot {
    boot_as(tag, initrd, model_dir, &model().root, extra)
}

/// [`boot`] with `--model tiny@r1:ROOT`.
fn boot_as(
    tag: &str,
    initrd: &Path,
    model_dir: &Path,
    root: &str,
    extra: &[&std::ffi::OsStr],
) -> Boot {
    // One guest at a time: TCG is CPU-bound and the machines are small.
    static ONE: Mutex<()> = Mutex::new(());
    let _guard = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let mut cmd = pqcc();
    cmd.args(["launch", "--profile", "none", "--json"])
        .arg("--qemu")
        .arg(tool("qemu-system-x86_64"))
        .args(["--timeout", &BOOT_TIMEOUT_S.to_string()])
        .arg("--kernel")
        .arg(kernel().join("vmlinux"))
        .arg("--initrd")
        .arg(initrd)
        .args(["--model", &format!("tiny@r1:{root}")])
        .arg("--model-dir")
        .arg(model_dir)
        .args(extra);
    let start = Instant::now();
    let out = cmd.output().expect("running pqcc launch");
    let wall = start.elapsed();
    let console = String::from_utf8_lossy(&out.stderr).replace('\r', "");
    let status = out.status.code().unwrap_or(-1);
    eprintln!(
        "--- boot {tag}: pqcc launch status {status}, {:.2} s wall ---\n{console}{}",
        wall.as_secs_f64(),
        String::from_utf8_lossy(&out.stdout)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{tag}: pqcc launch printed no JSON result ({e})"));
    assert_ne!(
        result["qemu_status"], "timeout",
        "{tag}: QEMU timed out after {BOOT_TIMEOUT_S} s"
    );
    Boot {
        console,
        status,
        result,
        wall,
    }
}

/// A model directory like `pqcc model build`'s, with `data` and `hash` as its two
/// disks (copies, so a test can damage one).
fn model_dir_with(dir: &Path, data: &Path, hash: &Path) -> PathBuf {
    let out = dir.join("model");
    fs::create_dir_all(&out).unwrap();
    fs::copy(data, out.join("tiny@r1.tar")).unwrap();
    fs::copy(hash, out.join("tiny@r1.tar.verity")).unwrap();
    out
}

#[test]
fn boot_happy_path_workload_reads_verified_model() {
    let m = model();
    let dir = TempDir::new("boot-happy");
    let img = image(dir.path(), &config_text(&Cfg::default()));
    let b = boot("happy", &img, &m.dir, &[]);
    assert!(b.fatal_lines().is_empty(), "{}", b.console);
    for (name, size, sha) in &m.files {
        let want = format!("model-sha256: {name} {size} {sha}");
        assert!(
            b.console.contains(&want),
            "missing `{want}`:\n{}",
            b.console
        );
    }
    assert!(
        b.console
            .contains(&format!("model-sha256: MODEL_VERITY_HASH={}", m.root))
    );
    assert!(b.console.contains("model-sha256: MODEL_COMMIT=r1"));
    assert!(b.console.contains("model-sha256: MODEL_PATH=/model"));
    assert!(
        b.console
            .contains("workload exited with status 0; powering off")
    );
    // isa-debug-exit code 0 (workload OK) → QEMU exits 1 → pqcc launch exits 0.
    assert_eq!(b.qemu_status(), 1, "{}", b.console);
    assert_eq!(b.status, 0, "{}", b.result);
    assert_eq!(b.result["workload_status"], 0);
    // Per-stage timings are logged.
    for s in [
        "mount:", "config:", "modules:", "disks:", "verity:", "view:", "attest:",
    ] {
        assert!(b.console.contains(&format!("] {s}")), "no {s} timing");
    }
    eprintln!(
        "happy path: {:.2} s from QEMU start to power-off",
        b.wall.as_secs_f64()
    );
}

#[test]
fn boot_workload_failure_and_crash_are_reported() {
    let m = model();
    let dir = TempDir::new("boot-status");
    let img = image(
        dir.path(),
        &config_text(&Cfg {
            args: vec!["3"],
            ..Cfg::default()
        }),
    );
    // Nothing listens on this broker socket: QEMU starts anyway (reconnect=1).
    let nobody = format!("unix:{}", dir.path().join("nobody.sock").display());
    let b = boot(
        "exit-3",
        &img,
        &m.dir,
        &["--broker".as_ref(), nobody.as_ref()],
    );
    assert!(
        b.console.contains("workload exited with status 3"),
        "{}",
        b.console
    );
    assert_eq!(b.qemu_status(), 3, "debug-exit code 1 → QEMU status 3");
    assert_eq!(b.status, 1, "{}", b.result);
    assert_eq!(b.result["workload_status"], 3);

    let img = image(
        dir.path(),
        &config_text(&Cfg {
            args: vec!["crash"],
            ..Cfg::default()
        }),
    );
    let b = boot("crash", &img, &m.dir, &[]);
    assert!(
        b.console.contains("workload killed by signal 6"),
        "{}",
        b.console
    );
    assert_eq!(b.qemu_status(), 5, "debug-exit code 2 → QEMU status 5");
    assert_eq!(b.status, 1, "{}", b.result);
    assert!(b.result["workload_status"].is_null(), "{}", b.result);
}

fn flipped_copy(src: &Path, dst: &Path, offset: u64) -> PathBuf {
    let mut d = fs::read(src).unwrap();
    d[usize::try_from(offset).unwrap()] ^= 0x01;
    fs::write(dst, d).unwrap();
    dst.to_path_buf()
}

#[test]
fn boot_refuses_flipped_data_byte() {
    let m = model();
    let dir = TempDir::new("boot-flip-data");
    let len = fs::metadata(&m.tar).unwrap().len();
    let bad = flipped_copy(&m.tar, &dir.path().join("bad.tar"), len / 2 + 7);
    let img = image(dir.path(), &config_text(&Cfg::default()));
    let disks = model_dir_with(dir.path(), &bad, &m.verity);
    let b = boot("flip-data", &img, &disks, &[]);
    b.assert_refused("verity");
    assert!(b.console.contains("Input/output error"), "{}", b.console);
}

#[test]
fn boot_refuses_flipped_hash_byte() {
    let m = model();
    let dir = TempDir::new("boot-flip-hash");
    // Block 0 is veritysetup's superblock (not read by the kernel); the tree starts
    // at block 1.
    let bad = flipped_copy(&m.verity, &dir.path().join("bad.verity"), 4096 + 40);
    let img = image(dir.path(), &config_text(&Cfg::default()));
    let disks = model_dir_with(dir.path(), &m.tar, &bad);
    let b = boot("flip-hash", &img, &disks, &[]);
    b.assert_refused("verity");
}

#[test]
fn boot_refuses_wrong_root_hash() {
    let m = model();
    let dir = TempDir::new("boot-wrong-root");
    let mut root = m.root.clone().into_bytes();
    root[0] = if root[0] == b'0' { b'1' } else { b'0' };
    let cfg = Cfg {
        root: String::from_utf8(root).unwrap(),
        ..Cfg::default()
    };
    let img = image(dir.path(), &config_text(&cfg));
    // `pqcc launch` compares the initramfs's config with --model and the model
    // directory's .hash file; an operator who gets both wrong past it (a directory
    // without the .hash file) still meets the guest's check.
    let disks = model_dir_with(dir.path(), &m.tar, &m.verity);
    let b = boot_as("wrong-root", &img, &disks, &cfg.root, &[]);
    b.assert_refused("verity");
}

#[test]
fn boot_refuses_missing_disk() {
    let m = model();
    let dir = TempDir::new("boot-no-disk");
    let cfg = Cfg {
        disk_wait_ms: 1500,
        ..Cfg::default()
    };
    let img = image(dir.path(), &config_text(&cfg));
    // `pqcc launch` refuses a model directory without the hash disk, so the disk is
    // left out of the profile instead: qemu/none.args without the hash drive.
    let hash_drive = "-drive\nfile={HASH},if=none,id=pqcc-hash,format=raw,readonly=on\n\
                      -device\nvirtio-blk-pci,drive=pqcc-hash,serial={HASH_SERIAL}\n";
    let none = fs::read_to_string(repo().join("qemu/none.args")).unwrap();
    assert!(
        none.contains(hash_drive),
        "qemu/none.args changed its hash drive"
    );
    let profile = dir.path().join("no-hash-disk.args");
    fs::write(&profile, none.replace(hash_drive, "")).unwrap();
    let b = boot(
        "no-hash-disk",
        &img,
        &m.dir,
        &["--profile-file".as_ref(), profile.as_os_str()],
    );
    b.assert_refused("disks");
    assert!(
        b.console
            .contains(&format!("no disk with serial `{HASH_SERIAL}`"))
    );
}

#[test]
fn boot_refuses_missing_module() {
    let m = model();
    let dir = TempDir::new("boot-no-module");
    let cfg = Cfg {
        extra_modules: vec!["/lib/modules/not-there.ko"],
        ..Cfg::default()
    };
    let img = image(dir.path(), &config_text(&cfg));
    let b = boot("missing-module", &img, &m.dir, &[]);
    b.assert_refused("modules");
    assert!(b.console.contains("/lib/modules/not-there.ko"));
}

#[test]
fn boot_refuses_malformed_config() {
    let m = model();
    let dir = TempDir::new("boot-bad-config");
    let text = config_text(&Cfg::default()).replace("[platform]", "[platform]\nunknown = 1");
    let img = image(dir.path(), &text);
    let b = boot("bad-config", &img, &m.dir, &[]);
    b.assert_refused("config");
    assert!(b.console.contains("unknown field"), "{}", b.console);
}
