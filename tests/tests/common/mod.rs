//! Helpers shared by the model-archive tests: the shared data folder, the outside
//! tools (GNU tar, veritysetup), the `pqcc` binary, temporary directories, and a
//! seeded generator of random model trees.

#![allow(dead_code)]

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

/// `../shared/data`, which must exist: the tests fail (not skip) without it.
pub fn shared_data() -> PathBuf {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data"));
    assert!(
        p.join("repro-tar/README.md").is_file() && p.join("dm-verity/README.md").is_file(),
        "the shared test data is missing: expected {} (repro-tar/, dm-verity/)",
        p.display()
    );
    p
}

/// The path of an outside tool, failing with a clear message when it is missing.
pub fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{name}` is required by this test and is not installed (CI installs it: \
         apt-get install -y tar cryptsetup-bin)"
    );
}

/// Runs a command, panicking with its stderr when it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A fresh directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory named after `tag`.
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("pqcc-test-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Make everything removable first (tests chmod files to 000).
        fn open_up(p: &Path) {
            if let Ok(rd) = fs::read_dir(p) {
                let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o755));
                for e in rd.flatten() {
                    let path = e.path();
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        open_up(&path);
                    }
                }
            }
        }
        open_up(&self.0);
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs the recipe (`repro-tar/cocoon_tar.sh`, GNU tar + padding + veritysetup) on
/// `dir`, writing `out`, `out.verity`, `out.hash`. Returns the root hash.
pub fn recipe(dir: &Path, out: &Path) -> String {
    tool("tar");
    let vs = tool("veritysetup");
    let script = shared_data().join("repro-tar/cocoon_tar.sh");
    let path = format!(
        "{}:{}",
        vs.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run_ok(
        Command::new("bash")
            .arg(script)
            .arg(dir)
            .arg(out)
            .env("PATH", path),
    );
    fs::read_to_string(format!("{}.hash", out.display()))
        .unwrap()
        .trim()
        .to_owned()
}

/// The `pqcc` binary, built once per test process with the same cargo and target
/// directory as the tests.
pub fn pqcc_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
        let out = Command::new(cargo)
            .args([
                "build",
                "-p",
                "pqcc-tools",
                "--bin",
                "pqcc",
                "--message-format=json",
                "--manifest-path",
            ])
            .arg(manifest)
            .output()
            .expect("running cargo build for the pqcc binary");
        assert!(
            out.status.success(),
            "cargo build -p pqcc-tools failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["reason"] == "compiler-artifact"
                && v["target"]["name"] == "pqcc"
                && let Some(exe) = v["executable"].as_str()
            {
                return PathBuf::from(exe);
            }
        }
        panic!("cargo build did not report the pqcc executable");
    })
}

/// A `pqcc` command with a clean environment for the Hugging Face cache, and
/// `HF_HUB_OFFLINE=1` so that no test reaches a real hub (the tests of downloads remove
/// it and point `HF_ENDPOINT` at their fake endpoint on 127.0.0.1).
pub fn pqcc() -> Command {
    let mut c = Command::new(pqcc_bin());
    c.env_remove("HF_HOME")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_ENDPOINT")
        .env_remove("HF_TOKEN")
        .env("HF_HUB_OFFLINE", "1");
    c
}

/// xorshift64*: a small seeded generator, so every tree can be rebuilt from its seed.
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// Next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// File sizes every random tree contains (the tar and verity block boundaries).
pub const EDGE_SIZES: [usize; 7] = [0, 1, 511, 512, 4095, 4096, 4097];

/// Builds a random model tree under `root` from `seed`: nested directories (some
/// empty), files of every size in [`EDGE_SIZES`] plus random ones, names longer than
/// 100 bytes and paths longer than 255, Unicode names, assorted modes and mtimes.
pub fn random_tree(root: &Path, seed: u64) {
    let mut r = Rng::new(seed);
    fs::create_dir_all(root).unwrap();
    let words = [
        "model",
        "config",
        "tokenizer",
        "weights",
        "a",
        "B",
        "z_last",
        "0first",
        "dir.with.dots",
        "über",
        "模型",
        "ŝ",
        "emoji-🦀",
        "spaces in name",
        "-dash",
        "Ünïcödé",
    ];
    let mut dirs = vec![root.to_path_buf()];
    // Directories: some nested deep, one with a 200-byte name.
    for i in 0..(3 + r.below(5)) {
        let parent = dirs[r.below(dirs.len())].clone();
        let name = match i {
            0 => "d".repeat(120),
            1 => format!("{}-{}", words[r.below(words.len())], "x".repeat(180)),
            _ => format!("{}{}", words[r.below(words.len())], i),
        };
        let d = parent.join(name);
        fs::create_dir_all(&d).unwrap();
        dirs.push(d);
    }
    // An empty directory.
    fs::create_dir_all(root.join(format!("empty{}", r.below(100)))).unwrap();
    // Files: the edge sizes, then random ones.
    let mut sizes: Vec<usize> = EDGE_SIZES.to_vec();
    for _ in 0..(4 + r.below(6)) {
        sizes.push(r.below(300_000));
    }
    for (i, size) in sizes.into_iter().enumerate() {
        let dir = &dirs[r.below(dirs.len())];
        let name = match r.below(6) {
            0 => format!("{}-{i}.bin", "f".repeat(98 + r.below(30))),
            1 => format!("{}{i}", words[r.below(words.len())]),
            _ => format!("file-{size}-{i}.safetensors"),
        };
        let p = dir.join(name);
        fs::write(&p, r.bytes(size)).unwrap();
        let mode = [0o644, 0o600, 0o755, 0o700, 0o444, 0o640][r.below(6)];
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    // A directory with a restrictive mode (still readable by its owner).
    let d = root.join("private");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("secret.txt"), b"s\n").unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
    // Noisy mtimes, as a real checkout has.
    let mtime = 1_600_000_000 + r.next() % 100_000_000;
    run_ok(
        Command::new("find")
            .arg(root)
            .args(["-exec", "touch", "-h", "-d"])
            .arg(format!("@{mtime}"))
            .args(["{}", "+"]),
    );
}
