//! `pqcc launch`. Exit status: see [`super::run`] (0 workload succeeded, 1 the guest
//! refused or the workload failed, 2 usage, I/O or QEMU error); `--dry-run` exits 0
//! after printing the command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::{Accel, Broker, ModelSpec, Options, ProfileName, build, check_kvm, profile, run};

/// `pqcc launch`.
#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// The platform: none (no TEE, tests), tdx or sev-snp (also read as snp).
    #[arg(long, value_enum)]
    pub profile: ProfileName,
    /// Use this profile file instead of the built-in qemu/PROFILE.args.
    #[arg(long, value_name = "FILE")]
    pub profile_file: Option<PathBuf>,
    /// Pass a GPU through with VFIO (PCI address, repeatable).
    #[arg(long = "gpu", value_name = "PCI_ADDR")]
    pub gpus: Vec<String>,
    /// Accelerator [default: the profile's first: tcg for none, kvm for tdx/snp].
    #[arg(long, value_enum)]
    pub accel: Option<Accel>,
    /// The guest kernel (bzImage or an ELF vmlinux with PVH).
    #[arg(long, value_name = "FILE")]
    pub kernel: PathBuf,
    /// The initramfs from `pqcc image build`.
    #[arg(long, value_name = "FILE")]
    pub initrd: PathBuf,
    /// The model: NAME@REV:ROOTHASH (as `pqcc model build` prints it).
    #[arg(long, value_name = "NAME@REV:HASH")]
    pub model: String,
    /// The `pqcc model build` output directory holding NAME@REV.tar and .tar.verity.
    #[arg(long, value_name = "DIR")]
    pub model_dir: PathBuf,
    /// Serial of the data disk [default: model.data_serial of the initramfs's
    /// init.toml, else pqcc-data].
    #[arg(long, value_name = "SERIAL")]
    pub data_serial: Option<String>,
    /// Serial of the hash disk [default: model.hash_serial of the initramfs's
    /// init.toml, else pqcc-hash].
    #[arg(long, value_name = "SERIAL")]
    pub hash_serial: Option<String>,
    /// The broker transport: unix:PATH, tcp:HOST:PORT (a virtio console port that
    /// QEMU connects to the broker) or vsock:GUEST_CID:PORT (vhost-vsock).
    #[arg(long, value_name = "SPEC")]
    pub broker: Option<String>,
    /// Firmware image (OVMF/TDVF), required by tdx and snp.
    #[arg(long, value_name = "FILE")]
    pub firmware: Option<PathBuf>,
    /// Change a profile setting (an @default of the profile: MEMORY, CPUS, APPEND, …).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub sets: Vec<String>,
    /// The QEMU binary.
    #[arg(long, value_name = "PATH", default_value = "qemu-system-x86_64")]
    pub qemu: String,
    /// Also write the serial console to FILE.
    #[arg(long, value_name = "FILE")]
    pub console: Option<PathBuf>,
    /// Kill QEMU after SECS seconds (exit 2).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Print the command line, one argument per line (the program first), and exit 0.
    #[arg(long)]
    pub dry_run: bool,
    /// One JSON object on stdout: the result (the console then goes to stderr), or
    /// with --dry-run the program and arguments.
    #[arg(long)]
    pub json: bool,
}

/// Runs `pqcc launch`; prints its own errors. Returns the exit status.
pub fn run(a: LaunchArgs) -> i32 {
    match launch(a) {
        Ok(code) => i32::from(code),
        Err(e) => {
            eprintln!("pqcc: error: {e:#}");
            2
        }
    }
}

fn launch(a: LaunchArgs) -> anyhow::Result<u8> {
    let (profile_text, profile_origin) = match &a.profile_file {
        Some(p) => (
            std::fs::read_to_string(p)
                .with_context(|| format!("--profile-file {}", p.display()))?,
            p.display().to_string(),
        ),
        None => (
            a.profile.builtin().to_owned(),
            format!("qemu/{} (built in)", a.profile.file_name()),
        ),
    };
    let timeout = match a.timeout {
        None => None,
        Some(t) if t.is_finite() && t > 0.0 => Some(Duration::from_secs_f64(t)),
        Some(t) => anyhow::bail!("--timeout {t}: must be a positive number of seconds"),
    };
    let opts = Options {
        profile: a.profile,
        profile_text,
        profile_origin,
        qemu: a.qemu,
        kernel: a.kernel,
        initrd: a.initrd,
        model: ModelSpec::parse(&a.model)?,
        model_dir: a.model_dir,
        data_serial: a.data_serial,
        hash_serial: a.hash_serial,
        gpus: a.gpus,
        accel: a.accel,
        firmware: a.firmware,
        broker: a.broker.as_deref().map(Broker::parse).transpose()?,
        sets: a
            .sets
            .iter()
            .map(|s| profile::parse_set(s))
            .collect::<anyhow::Result<_>>()?,
    };
    let l = build(&opts)?;
    for w in &l.warnings {
        eprintln!("pqcc: warning: {w}");
    }
    if a.dry_run {
        if a.json {
            println!(
                "{}",
                serde_json::json!({ "ok": true, "program": l.program, "args": l.args })
            );
        } else {
            println!("{}", l.program);
            for arg in &l.args {
                println!("{arg}");
            }
        }
        return Ok(0);
    }
    if l.accel == Accel::Kvm {
        check_kvm()?;
    }
    let r = run::run(
        &l,
        &run::RunOptions {
            console: a.console,
            timeout,
            console_to_stderr: a.json,
        },
    )?;
    let v = run::verdict(l.debug_exit, r.end, r.report.as_ref());
    let qemu_status = match r.end {
        run::QemuEnd::Status(s) => serde_json::json!(s),
        run::QemuEnd::Signal(s) => serde_json::json!(format!("signal {s}")),
        run::QemuEnd::TimedOut => serde_json::json!("timeout"),
    };
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "ok": v.exit == 0,
                "exit": v.exit,
                "summary": v.summary,
                "workload_status": v.workload_status,
                "fatal_stage": v.fatal_stage,
                "qemu_status": qemu_status,
                "wall_s": r.wall.as_secs_f64(),
            })
        );
    }
    eprintln!(
        "pqcc: launch: {} (QEMU status {qemu_status}, {:.2} s)",
        v.summary,
        r.wall.as_secs_f64()
    );
    Ok(v.exit)
}
