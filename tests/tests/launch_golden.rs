//! `pqcc launch --dry-run` against golden files (`tests/golden/launch-*.args`), the
//! properties every built-in profile must keep (read-only model drives with serials,
//! no writable disks, no network devices, the TEE objects for tdx/snp), and the
//! refusals (exit 2 with a message naming the problem).
//!
//! Re-bless the golden files after an intended profile change with
//! `PQCC_BLESS_GOLDEN=1 cargo test -p pqcc-tests --test launch_golden`, then review the
//! diff. No QEMU is started here (the boot tests in `boot.rs` run it).

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Output,
};

use common::{TempDir, pqcc};

const ROOT: &str = "5c0f9a3b28f1d6e4a7b0c2d8e9f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1d3e5f7";
const BLESS_ENV: &str = "PQCC_BLESS_GOLDEN";

fn golden_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/golden"))
}

/// A work directory laid out like a real launch: kernel, initramfs, firmware and a
/// `pqcc model build` output directory with the model's files. Paths given to
/// `pqcc launch` are relative to it, so the output does not depend on where it is.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        let p = dir.path();
        fs::write(p.join("vmlinux"), b"\x7fELF kernel").unwrap();
        fs::write(p.join("initrd.img"), b"070701").unwrap();
        fs::write(p.join("OVMF.fd"), vec![0u8; 4096]).unwrap();
        let m = p.join("models");
        fs::create_dir(&m).unwrap();
        fs::write(m.join("org--tiny@r1.tar"), vec![0u8; 8192]).unwrap();
        fs::write(m.join("org--tiny@r1.tar.verity"), vec![0u8; 8192]).unwrap();
        fs::write(m.join("org--tiny@r1.tar.hash"), ROOT).unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `pqcc launch` with the standard inputs plus `extra`, in the fixture.
    fn launch(&self, extra: &[&str]) -> Output {
        let model = format!("org/tiny@r1:{ROOT}");
        pqcc()
            .current_dir(self.path())
            .arg("launch")
            .args(["--kernel", "vmlinux", "--initrd", "initrd.img"])
            .args(["--model", &model, "--model-dir", "models"])
            .args(extra)
            .output()
            .unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Dry run: succeeds, returns the lines.
fn dry(f: &Fixture, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--dry-run"];
    args.extend_from_slice(extra);
    let out = f.launch(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{extra:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout).lines().map(str::to_owned).collect()
}

/// Compares with (or, with PQCC_BLESS_GOLDEN=1, writes) tests/golden/launch-NAME.args.
fn golden(name: &str, lines: &[String]) {
    let path = golden_dir().join(format!("launch-{name}.args"));
    let got = lines.join("\n") + "\n";
    if std::env::var_os(BLESS_ENV).is_some() {
        fs::create_dir_all(golden_dir()).unwrap();
        fs::write(&path, &got).unwrap();
        return;
    }
    let want = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; write it with {BLESS_ENV}=1 and review it",
            path.display()
        )
    });
    assert_eq!(
        got,
        want,
        "{} differs; if the change is intended, re-bless with {BLESS_ENV}=1",
        path.display()
    );
}

/// The value after each occurrence of `flag`.
fn values<'a>(lines: &'a [String], flag: &str) -> Vec<&'a str> {
    lines
        .windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].as_str())
        .collect()
}

/// What every launch must keep, whatever the profile.
fn check_invariants(lines: &[String], data_serial: &str, hash_serial: &str) {
    assert_eq!(lines[0], "qemu-system-x86_64");
    let drives = values(lines, "-drive");
    assert_eq!(drives.len(), 2, "exactly the two model drives: {drives:?}");
    assert!(
        drives[0].starts_with("file=models/org--tiny@r1.tar,")
            && drives[1].starts_with("file=models/org--tiny@r1.tar.verity,"),
        "{drives:?}"
    );
    for d in &drives {
        assert!(d.split(',').any(|o| o == "readonly=on"), "writable: {d}");
        assert!(d.split(',').any(|o| o == "if=none"), "{d}");
    }
    let devices = values(lines, "-device");
    let blk: Vec<_> = devices
        .iter()
        .filter(|d| d.starts_with("virtio-blk-pci,"))
        .collect();
    assert_eq!(blk.len(), 2);
    assert!(blk[0].contains(&format!("drive=pqcc-data,serial={data_serial}")));
    assert!(blk[1].contains(&format!("drive=pqcc-hash,serial={hash_serial}")));
    for l in lines {
        for no in ["-netdev", "-nic", "-net", "-hda", "-cdrom", "-snapshot"] {
            assert_ne!(l, no, "no network or extra disks");
        }
        assert!(!l.contains("virtio-net") && !l.contains("e1000"), "{l}");
    }
    assert_eq!(values(lines, "-kernel"), ["vmlinux"]);
    assert_eq!(values(lines, "-initrd"), ["initrd.img"]);
    assert!(lines.iter().any(|l| l == "-nodefaults"));
}

fn gpu_checks(lines: &[String], gpus: &[&str], iommufd: bool) {
    let devices = values(lines, "-device");
    let vfio: Vec<_> = devices
        .iter()
        .filter(|d| d.starts_with("vfio-pci,"))
        .collect();
    assert_eq!(vfio.len(), gpus.len(), "{vfio:?}");
    for (v, g) in vfio.iter().zip(gpus) {
        assert!(v.contains(&format!("host={g}")), "{v}");
        assert_eq!(v.contains("iommufd=iommufd0"), iommufd, "{v}");
    }
    let objects = values(lines, "-object");
    assert_eq!(
        objects
            .iter()
            .filter(|o| **o == "iommufd,id=iommufd0")
            .count(),
        usize::from(iommufd && !gpus.is_empty()),
        "one iommufd object: {objects:?}"
    );
}

fn broker_unix_checks(lines: &[String], path: &str, reconnect: &str) {
    let devices = values(lines, "-device");
    assert!(
        devices
            .iter()
            .any(|d| d.starts_with("virtio-serial-pci,id=pqcc-vser"))
    );
    assert!(devices.contains(&"virtserialport,chardev=broker,name=org.pqcc.broker.0"));
    assert_eq!(
        values(lines, "-chardev"),
        [format!("socket,id=broker,path={path},{reconnect}")]
    );
}

#[test]
fn none_profile() {
    let f = Fixture::new("launch-none");
    let l = dry(&f, &["--profile", "none"]);
    check_invariants(&l, "pqcc-data", "pqcc-hash");
    assert_eq!(values(&l, "-accel"), ["tcg"]);
    assert!(
        values(&l, "-device").contains(&"isa-debug-exit,iobase=0xf4,iosize=4"),
        "profile none reports through isa-debug-exit"
    );
    assert!(values(&l, "-chardev").is_empty() && !l.iter().any(|a| a.contains("vsock")));
    golden("none", &l);
}

#[test]
fn none_profile_with_gpu_and_broker() {
    let f = Fixture::new("launch-none-gpu");
    let l = dry(
        &f,
        &[
            "--profile",
            "none",
            "--gpu",
            "41:00.0",
            "--broker",
            "unix:/run/pqcc/broker.sock",
        ],
    );
    check_invariants(&l, "pqcc-data", "pqcc-hash");
    gpu_checks(&l, &["0000:41:00.0"], false);
    // The contract with the broker: QEMU connects (client), retrying every second.
    broker_unix_checks(&l, "/run/pqcc/broker.sock", "reconnect=1");
    golden("none-gpu-unix", &l);
}

#[test]
fn none_profile_settings_and_serials() {
    let f = Fixture::new("launch-none-set");
    let l = dry(
        &f,
        &[
            "--profile",
            "none",
            "--accel",
            "kvm",
            "--set",
            "MEMORY=2G",
            "--set",
            "CPUS=2",
            "--data-serial",
            "d0",
            "--hash-serial",
            "h0",
            "--broker",
            "tcp:broker.example:7000",
            "--qemu",
            "/opt/qemu/bin/qemu-system-x86_64",
        ],
    );
    assert_eq!(l[0], "/opt/qemu/bin/qemu-system-x86_64");
    let mut l2 = l.clone();
    l2[0] = "qemu-system-x86_64".into();
    check_invariants(&l2, "d0", "h0");
    assert_eq!(values(&l, "-accel"), ["kvm"]);
    assert_eq!(values(&l, "-m"), ["2G"]);
    assert_eq!(values(&l, "-smp"), ["2"]);
    assert_eq!(
        values(&l, "-chardev"),
        ["socket,id=broker,host=broker.example,port=7000,reconnect=1"]
    );
    golden("none-settings-tcp", &l);
}

#[test]
fn tdx_profile() {
    let f = Fixture::new("launch-tdx");
    let l = dry(&f, &["--profile", "tdx", "--firmware", "OVMF.fd"]);
    check_invariants(&l, "pqcc-data", "pqcc-hash");
    let machine = values(&l, "-machine");
    assert_eq!(machine.len(), 1);
    assert!(machine[0].starts_with("q35,"), "{machine:?}");
    assert!(machine[0].contains("confidential-guest-support=tdx0"));
    assert!(machine[0].contains("kernel-irqchip=split"));
    let objects = values(&l, "-object");
    let tdx: serde_json::Value = serde_json::from_str(objects[0]).expect("tdx-guest as JSON");
    assert_eq!(tdx["qom-type"], "tdx-guest");
    assert_eq!(tdx["id"], "tdx0");
    assert_eq!(tdx["quote-generation-socket"]["type"], "vsock");
    assert_eq!(values(&l, "-bios"), ["OVMF.fd"]);
    assert_eq!(values(&l, "-accel"), ["kvm"]);
    for d in values(&l, "-device") {
        assert!(
            d.contains("iommu_platform=on") && d.contains("disable-legacy=on"),
            "a TDX guest needs virtio with the DMA API: {d}"
        );
    }
    assert!(!l.iter().any(|a| a.contains("isa-debug-exit")));
    golden("tdx", &l);
}

#[test]
fn tdx_profile_with_gpus_and_broker() {
    let f = Fixture::new("launch-tdx-gpu");
    let l = dry(
        &f,
        &[
            "--profile",
            "tdx",
            "--firmware",
            "OVMF.fd",
            "--gpu",
            "0000:41:00.0",
            "--gpu",
            "c1:00.0",
            "--broker",
            "unix:/run/pqcc/broker.sock",
        ],
    );
    check_invariants(&l, "pqcc-data", "pqcc-hash");
    gpu_checks(&l, &["0000:41:00.0", "0000:c1:00.0"], true);
    broker_unix_checks(&l, "/run/pqcc/broker.sock", "reconnect-ms=1000");
    golden("tdx-gpu-unix", &l);
}

#[test]
fn tdx_profile_with_vsock_broker() {
    let f = Fixture::new("launch-tdx-vsock");
    let l = dry(
        &f,
        &[
            "--profile",
            "tdx",
            "--firmware",
            "OVMF.fd",
            "--broker",
            "vsock:7:5000",
        ],
    );
    check_invariants(&l, "pqcc-data", "pqcc-hash");
    assert!(
        values(&l, "-device")
            .iter()
            .any(|d| d.starts_with("vhost-vsock-pci,") && d.contains("guest-cid=7"))
    );
    assert!(values(&l, "-chardev").is_empty());
    golden("tdx-vsock", &l);
}

#[test]
fn snp_profile() {
    let f = Fixture::new("launch-snp");
    let l = dry(&f, &["--profile", "snp", "--firmware", "OVMF.fd"]);
    check_invariants(&l, "pqcc-data", "pqcc-hash");
    let machine = values(&l, "-machine");
    assert!(
        machine[0].starts_with("q35,") && machine[0].contains("confidential-guest-support=sev0")
    );
    let snp: Vec<_> = values(&l, "-object")
        .into_iter()
        .filter(|o| o.starts_with("sev-snp-guest,"))
        .collect();
    assert_eq!(snp.len(), 1);
    let opts: Vec<&str> = snp[0].split(',').collect();
    for want in [
        "id=sev0",
        "kernel-hashes=on",
        "cbitpos=51",
        "reduced-phys-bits=1",
        "policy=0x30000",
    ] {
        assert!(opts.contains(&want), "{want} in {}", snp[0]);
    }
    assert_eq!(values(&l, "-bios"), ["OVMF.fd"]);
    golden("snp", &l);
}

#[test]
fn snp_profile_with_gpu_and_broker() {
    let f = Fixture::new("launch-snp-gpu");
    let l = dry(
        &f,
        &[
            "--profile",
            "snp",
            "--firmware",
            "OVMF.fd",
            "--gpu",
            "41:00.0",
            "--broker",
            "unix:/run/pqcc/broker.sock",
            "--set",
            "CBITPOS=47",
        ],
    );
    check_invariants(&l, "pqcc-data", "pqcc-hash");
    gpu_checks(&l, &["0000:41:00.0"], true);
    broker_unix_checks(&l, "/run/pqcc/broker.sock", "reconnect-ms=1000");
    assert!(l.iter().any(|a| a.contains("cbitpos=47,")));
    golden("snp-gpu-unix", &l);
}

#[test]
fn dry_run_json_and_profile_file() {
    let f = Fixture::new("launch-json");
    let out = f.launch(&["--profile", "none", "--dry-run", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plain = dry(&f, &["--profile", "none"]);
    assert_eq!(v["program"], plain[0]);
    let args: Vec<String> = v["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(args, plain[1..]);

    // A profile file replaces the built-in one.
    fs::write(
        f.path().join("mine.args"),
        "@accel tcg\n@default X 7\n[machine]\n-name\nvm{X}\n[model]\n-drive\n\
         file={DATA},if=none,id=pqcc-data,format=raw,readonly=on\n-device\n\
         virtio-blk-pci,drive=pqcc-data,serial={DATA_SERIAL}\n-drive\n\
         file={HASH},if=none,id=pqcc-hash,format=raw,readonly=on\n-device\n\
         virtio-blk-pci,drive=pqcc-hash,serial={HASH_SERIAL}\n-kernel\n{KERNEL}\n\
         -initrd\n{INITRD}\n-nodefaults\n",
    )
    .unwrap();
    let l = dry(
        &f,
        &[
            "--profile",
            "none",
            "--profile-file",
            "mine.args",
            "--set",
            "X=9",
        ],
    );
    check_invariants(&l, "pqcc-data", "pqcc-hash");
    assert_eq!(values(&l, "-name"), ["vm9"]);
}

/// Exit 2, nothing on stdout, and stderr mentions each of `want`.
fn refused(out: &Output, want: &[&str]) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
    for w in want {
        assert!(err.contains(w), "expected {w:?} in: {err}");
    }
}

#[test]
fn refusals() {
    let f = Fixture::new("launch-refuse");
    let d = |extra: &[&str]| {
        let mut a = vec!["--dry-run"];
        a.extend_from_slice(extra);
        f.launch(&a)
    };
    refused(&d(&["--profile", "tdx"]), &["tdx needs --firmware"]);
    refused(&d(&["--profile", "snp"]), &["snp needs --firmware"]);
    refused(
        &d(&[
            "--profile",
            "tdx",
            "--firmware",
            "OVMF.fd",
            "--accel",
            "tcg",
        ]),
        &["--accel tcg is not possible with profile tdx"],
    );
    refused(
        &d(&["--profile", "tdx", "--firmware", "nope.fd"]),
        &["--firmware nope.fd"],
    );
    refused(&d(&["--profile", "none", "--gpu", "41:00"]), &["--gpu"]);
    refused(
        &d(&[
            "--profile",
            "none",
            "--gpu",
            "41:00.0",
            "--gpu",
            "0000:41:00.0",
        ]),
        &["given twice"],
    );
    refused(
        &d(&["--profile", "none", "--broker", "serial:x"]),
        &["--broker"],
    );
    refused(
        &d(&["--profile", "none", "--set", "KERNEL=x"]),
        &["has no setting KERNEL"],
    );
    refused(
        &d(&["--profile", "none", "--hash-serial", "pqcc-data"]),
        &["must differ"],
    );
    refused(
        &d(&["--profile", "none", "--data-serial", "a,b"]),
        &["--data-serial"],
    );

    // Malformed --model specs.
    for bad in [
        "org/tiny@r1".to_owned(),
        format!("org/tiny:{ROOT}"),
        format!("org/tiny@r1:{}", &ROOT[1..]),
        format!("../tiny@r1:{ROOT}"),
    ] {
        let out = pqcc()
            .current_dir(f.path())
            .args(["launch", "--profile", "none", "--dry-run"])
            .args(["--kernel", "vmlinux", "--initrd", "initrd.img"])
            .args(["--model", &bad, "--model-dir", "models"])
            .output()
            .unwrap();
        refused(&out, &["--model"]);
    }

    // Another build's root hash in the directory.
    let other = "0".repeat(64);
    let out = pqcc()
        .current_dir(f.path())
        .args(["launch", "--profile", "none", "--dry-run"])
        .args(["--kernel", "vmlinux", "--initrd", "initrd.img"])
        .args([
            "--model",
            &format!("org/tiny@r1:{other}"),
            "--model-dir",
            "models",
        ])
        .output()
        .unwrap();
    refused(&out, &["names root hash", "another build"]);

    // A model directory lacking a disk, or with a torn archive.
    let m = f.path().join("models");
    fs::rename(m.join("org--tiny@r1.tar.verity"), m.join("x")).unwrap();
    refused(
        &d(&["--profile", "none"]),
        &["model hash disk", "org--tiny@r1.tar.verity"],
    );
    fs::rename(m.join("x"), m.join("org--tiny@r1.tar.verity")).unwrap();
    fs::write(m.join("org--tiny@r1.tar"), vec![0u8; 5000]).unwrap();
    refused(
        &d(&["--profile", "none"]),
        &["not a whole number of 4096-byte blocks"],
    );
    fs::remove_file(m.join("org--tiny@r1.tar")).unwrap();
    refused(&d(&["--profile", "none"]), &["model data disk"]);
    fs::write(m.join("org--tiny@r1.tar"), vec![0u8; 8192]).unwrap();

    // A comma in a path would split QEMU's option string.
    fs::create_dir(f.path().join("a,b")).unwrap();
    for n in ["org--tiny@r1.tar", "org--tiny@r1.tar.verity"] {
        fs::copy(m.join(n), f.path().join("a,b").join(n)).unwrap();
    }
    let out = pqcc()
        .current_dir(f.path())
        .args(["launch", "--profile", "none", "--dry-run"])
        .args(["--kernel", "vmlinux", "--initrd", "initrd.img"])
        .args([
            "--model",
            &format!("org/tiny@r1:{ROOT}"),
            "--model-dir",
            "a,b",
        ])
        .output()
        .unwrap();
    refused(&out, &["contains ','"]);

    // A bad profile file names the line.
    fs::write(
        f.path().join("bad.args"),
        "@accel tcg\n[machine]\n{NOPE}\n[model]\n",
    )
    .unwrap();
    refused(
        &d(&["--profile", "none", "--profile-file", "bad.args"]),
        &["bad.args", "line 3", "{NOPE}"],
    );
}

#[test]
fn kvm_refused_where_dev_kvm_is_absent() {
    let f = Fixture::new("launch-kvm");
    // Not a dry run: the check runs before QEMU would start. The QEMU named does not
    // exist, so a missed check would still fail, but with another message.
    let out = pqcc()
        .current_dir(f.path())
        .env("PQCC_KVM_DEVICE", f.path().join("no-kvm"))
        .args(["launch", "--profile", "none", "--accel", "kvm"])
        .args(["--kernel", "vmlinux", "--initrd", "initrd.img"])
        .args([
            "--model",
            &format!("org/tiny@r1:{ROOT}"),
            "--model-dir",
            "models",
        ])
        .args(["--qemu", "/nonexistent/qemu"])
        .output()
        .unwrap();
    refused(
        &out,
        &["--accel kvm: cannot open", "no-kvm", "KVM is not usable"],
    );
    // The dry run does not need KVM: it prints a command line for another host.
    let out = pqcc()
        .current_dir(f.path())
        .env("PQCC_KVM_DEVICE", f.path().join("no-kvm"))
        .args([
            "launch",
            "--profile",
            "tdx",
            "--firmware",
            "OVMF.fd",
            "--dry-run",
        ])
        .args(["--kernel", "vmlinux", "--initrd", "initrd.img"])
        .args([
            "--model",
            &format!("org/tiny@r1:{ROOT}"),
            "--model-dir",
            "models",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn qemu_that_cannot_start_is_an_error() {
    let f = Fixture::new("launch-noqemu");
    let out = f.launch(&["--profile", "none", "--qemu", "/nonexistent/qemu"]);
    refused(&out, &["starting /nonexistent/qemu"]);
}

/// An initramfs from `pqcc image build` around `config` (a fake /init), in the fixture.
fn pqcc_image(f: &Fixture, name: &str, config: &str, gzip: bool) {
    let p = f.path();
    fs::write(p.join("init"), b"\x7fELF fake init").unwrap();
    fs::write(p.join(format!("{name}.toml")), config).unwrap();
    let mut c = pqcc();
    c.current_dir(p)
        .args(["image", "build", "--init", "init", "--config"])
        .arg(format!("{name}.toml"))
        .arg("-o")
        .arg(name);
    if gzip {
        c.arg("--gzip");
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn guest_config(name: &str, root: &str, data: &str, hash: &str, platform: &str) -> String {
    format!(
        "[model]\nname = \"{name}\"\nrevision = \"r1\"\nroot_hash = \"{root}\"\nsalt = \"\"\n\
         data_blocks = 2\ndata_serial = \"{data}\"\nhash_serial = \"{hash}\"\n\n\
         [platform]\nrequired = \"{platform}\"\ninsecure_no_tee = true\n\n\
         [workload]\ncommand = \"/bin/workload\"\n"
    )
}

/// The launch reads `/etc/pqcc/init.toml` back out of a pqcc initramfs: the disk
/// serials default to the config's, and a different model, root hash, serial or
/// platform is refused before QEMU starts.
#[test]
fn initrd_config_is_compared_with_the_launch() {
    let f = Fixture::new("launch-initrd");
    let run = |initrd: &str, extra: &[&str]| {
        pqcc()
            .current_dir(f.path())
            .args(["launch", "--dry-run"])
            .args(["--kernel", "vmlinux", "--initrd", initrd])
            .args([
                "--model",
                &format!("org/tiny@r1:{ROOT}"),
                "--model-dir",
                "models",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let good = guest_config("org/tiny", ROOT, "s-data", "s-hash", "none");
    pqcc_image(&f, "good.img", &good, false);
    pqcc_image(&f, "good.img.gz", &good, true);
    for img in ["good.img", "good.img.gz"] {
        let out = run(img, &["--profile", "none"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
        let l: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
        let mut l2 = l.clone();
        // check_invariants expects the fixture's initrd name.
        for a in &mut l2 {
            if a == img {
                *a = "initrd.img".into();
            }
        }
        check_invariants(&l2, "s-data", "s-hash");
    }
    // Serials given that differ from the config's.
    refused(
        &run("good.img", &["--profile", "none", "--hash-serial", "other"]),
        &[
            "does not match this launch",
            "hash disk serial: init.toml \"s-hash\"",
        ],
    );
    // Another platform.
    refused(
        &run("good.img", &["--profile", "tdx", "--firmware", "OVMF.fd"]),
        &["platform: init.toml \"none\", launch \"tdx\""],
    );
    // Another model or root hash in the image.
    let other = guest_config("org/other", &"1".repeat(64), "s-data", "s-hash", "none");
    pqcc_image(&f, "other.img", &other, false);
    refused(
        &run("other.img", &["--profile", "none"]),
        &["model name: init.toml \"org/other\"", "root hash"],
    );
    // A config without the fields the launch compares.
    pqcc_image(&f, "bare.img", "[workload]\ncommand = \"/w\"\n", false);
    refused(
        &run("bare.img", &["--profile", "none"]),
        &["has no string model.name"],
    );
    // Not a pqcc image: a warning, and the launch goes on with the default serials.
    let out = run("initrd.img", &["--profile", "none"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("initrd.img is not a pqcc image"),
        "{}",
        text(&out.stderr)
    );
}
