//! `pqcc-init`: the PID 1 of pqcc's guest initramfs.
//!
//! [`boot`] runs the stages below in order and fails closed: the first error prints
//! exactly one line `pqcc-init: FATAL <stage>: <reason>` on the console, syncs, and
//! powers the VM off. There is no shell and no "continue anyway"; the workload is only
//! started after every earlier stage succeeded (each stage returns a value the next
//! one needs, so a failed stage cannot be skipped).
//!
//! 1. **mount** — proc, sys, devtmpfs, /run (tmpfs), configfs and securityfs when the
//!    kernel has them.
//! 2. **config** — `/etc/pqcc/init.toml` from the initramfs ([`config`]). The initramfs
//!    is measured, so this file is trusted; nothing read later from disks is.
//! 3. **modules** — `finit_module` on the listed files, in the listed order.
//! 4. **disks** — the model's data and hash disks by virtio serial ([`disks`]).
//! 5. **verity** — a read-only dm-verity device over them through device-mapper
//!    ioctls ([`dm`]), root hash and salt from the config only; then, by default, one
//!    full read of the device so a corrupt block stops the boot before the workload.
//! 6. **view** — indexes the verified tar ([`tarindex`]) and serves it as read-only
//!    files at [`MODEL_MOUNT`] through FUSE ([`fuse`]); each read goes to the verity
//!    device, nothing is copied into RAM.
//! 7. **attest** — TEE evidence and the broker ([`Attestation`], [`BrokerAttestation`]):
//!    the v1 handshake with evidence bound to it ([`broker`], [`platform`]), the
//!    broker's signature checked against the key in the config, the granted secrets
//!    received over the channel and written to `/run/pqcc/secrets` (mode 0400) for the
//!    workload. Without a broker only the insecure `none` platform passes. With
//!    `[gpu] required = true` the **gpu** gate runs inside this stage ([`gpu_gate`]):
//!    NVML helper started and a GPU awaited before the broker connection, every GPU's
//!    report collected for the handshake's GPU nonce and verified locally, sent in the
//!    Hello, and the GPUs' CC ready state set only after the broker's Accept; its
//!    failures print `FATAL gpu`.
//! 8. **workload** — started with `MODEL_NAME`, `MODEL_COMMIT`, `MODEL_VERITY_HASH`,
//!    `MODEL_PATH` (the file view) and `MODEL_DEVICE` (the verified block device,
//!    `/dev/dm-N`) in its environment, supervised until it ends ([`workload`]); its
//!    status goes to the console.
//!
//! Each stage logs its duration: `pqcc-init: [  3.412s] modules: ... (612.3 ms)`.

pub mod broker;
pub mod config;
pub mod disks;
pub mod dm;
pub mod fuse;
pub mod gpu_gate;
pub mod nvml_helper;
pub mod platform;
pub mod sys;
pub mod tarindex;
pub mod tee;
pub mod workload;

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use config::{Config, Platform};

/// Where the config lives in the initramfs.
pub const CONFIG_PATH: &str = "/etc/pqcc/init.toml";
/// The device-mapper name of the model.
pub const DM_NAME: &str = "pqcc-model";
/// Where the model's files appear (read-only), given to the workload as `MODEL_PATH`.
pub const MODEL_MOUNT: &str = "/model";

/// The boot stages, in order; a FATAL line names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Mounting the pseudo filesystems.
    Mount,
    /// Reading and checking `init.toml`.
    Config,
    /// Loading kernel modules.
    Modules,
    /// Finding the model disks.
    Disks,
    /// Opening the model through dm-verity.
    Verity,
    /// Indexing the verified tar and mounting it as read-only files.
    View,
    /// TEE evidence and broker (a seam in this build).
    Attest,
    /// The GPU gate (part of attestation, reported under its own name).
    Gpu,
    /// Starting and supervising the workload.
    Workload,
}

impl Stage {
    /// The stage's name as printed.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mount => "mount",
            Self::Config => "config",
            Self::Modules => "modules",
            Self::Disks => "disks",
            Self::Verity => "verity",
            Self::View => "view",
            Self::Attest => "attest",
            Self::Gpu => "gpu",
            Self::Workload => "workload",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed stage and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    /// Which stage.
    pub stage: Stage,
    /// One line of reason (newlines are flattened when printed).
    pub reason: String,
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason: String = self
            .reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        write!(f, "pqcc-init: FATAL {}: {}", self.stage, reason)
    }
}

impl std::error::Error for Fatal {}

trait Context<T> {
    fn stage(self, stage: Stage) -> Result<T, Fatal>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn stage(self, stage: Stage) -> Result<T, Fatal> {
        self.map_err(|e| Fatal {
            stage,
            reason: e.to_string(),
        })
    }
}

fn fatal<T>(stage: Stage, reason: impl Into<String>) -> Result<T, Fatal> {
    Err(Fatal {
        stage,
        reason: reason.into(),
    })
}

/// Writes one log line to the console (stderr, which the kernel opened on
/// /dev/console for PID 1), prefixed with the time since boot.
pub fn log(msg: &str) {
    let t = sys::since_boot();
    let line = format!(
        "pqcc-init: [{:4}.{:03}s] {msg}\n",
        t.as_secs(),
        t.subsec_millis()
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// The opened, verified model as the later stages see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedModel {
    /// The dm-verity device node, `/dev/dm-N`.
    pub device: String,
    /// Its length in bytes.
    pub len: u64,
}

/// What the attestation stage hands on to the workload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Extra environment for the workload (later: session material from the broker).
    pub env: Vec<(String, String)>,
}

/// The seam between dm-verity and the workload: TEE evidence, the GPU gate, the
/// broker handshake, secrets. An error here is `FATAL attest` or `FATAL gpu`.
pub trait Attestation {
    /// Runs after the model is open and checked, before the workload starts.
    fn attest(&mut self, config: &Config, model: &OpenedModel) -> Result<Grants, Fatal>;
}

/// The GPU gate between its first step and the handshake: the NVML connection, the
/// GPUs it saw, and what the local verification needs.
pub struct GpuGate<'a> {
    /// NVML (the helper in the guest; a fake in tests).
    pub nvml: &'a mut dyn gpu_gate::Nvml,
    /// From [`gpu_gate::wait_for_gpus`].
    pub gpus: gpu_gate::Gpus,
    /// RIMs, policy, collateral, time.
    pub check: &'a gpu_gate::LocalCheck,
    /// Tests only, never set from a config: ask the GPUs for, and verify against, this
    /// nonce instead of the handshake's, so recorded evidence with a fixed nonce (there
    /// is no GPU to sign a fresh one) can go through the whole flow. A broker refuses
    /// such evidence unless its rule says `insecure_nonce` too.
    pub insecure_nonce_override: Option<[u8; 32]>,
}

fn load_collateral(dir: &str) -> Result<pqcc_verify::nvidia::Collateral, String> {
    if !Path::new(dir).is_dir() {
        return Err(format!("revocation bundle {dir}: not a directory"));
    }
    let c = pqcc_verify::nvidia::Collateral::load_dir(Path::new(dir))
        .map_err(|e| format!("revocation bundle {dir}: {e}"))?;
    if c.is_empty() {
        return Err(format!(
            "revocation bundle {dir}: holds no CRL or OCSP response"
        ));
    }
    Ok(c)
}

/// Reads the RIM files and the revocation bundle a `[gpu]` config names and builds
/// the local verification's inputs at time `now`.
pub fn gpu_local_check(g: &config::Gpu, now: u64) -> Result<gpu_gate::LocalCheck, String> {
    use pqcc_verify::nvidia::{GpuPolicy, RevocationPolicy, Rim};
    let mut rims = Vec::with_capacity(g.rims.len());
    for path in &g.rims {
        let bytes = std::fs::read(path).map_err(|e| format!("RIM {path}: {e}"))?;
        rims.push(Rim {
            source: path.clone(),
            bytes,
        });
    }
    let (revocation, collateral) = match &g.revocation {
        // The broker checks revocation on the same evidence before anything is released.
        config::GpuRevocation::Broker => (RevocationPolicy::InsecureSkip, None),
        config::GpuRevocation::Require {
            collateral,
            max_age_s,
        } => (
            RevocationPolicy::Require {
                max_age_secs: *max_age_s,
            },
            Some(load_collateral(collateral)?),
        ),
    };
    Ok(gpu_gate::LocalCheck {
        policy: GpuPolicy {
            revocation,
            require_report_fwid: g.require_report_fwid,
        },
        rims,
        collateral,
        now,
    })
}

/// The handshake on an open `link` and, when `gpu` is given, the GPU gate's steps 2
/// and 3 around it: evidence for the handshake's GPU nonce, verified locally, in the
/// Hello; after the broker's Accept (its signature checked) and the secrets, the CC
/// ready state. A failure of the gate's own steps is `FATAL gpu`, anything else
/// (including the broker refusing the GPU evidence) `FATAL attest`.
pub fn attest_over(
    link: &mut dyn broker::Link,
    config: &Config,
    broker_public_key: &[u8],
    platform: &mut dyn platform::Platform,
    gpu: Option<GpuGate<'_>>,
    wait_until: Instant,
    timeout: Duration,
) -> Result<broker::Released, Fatal> {
    let claims = pqcc_core::bundle::Claims {
        model_name: &config.model.name,
        model_revision: &config.model.revision,
        model_root_hash: config.model.root_hash,
    };
    let Some(g) = gpu else {
        return broker::handshake(
            link,
            broker_public_key,
            claims,
            platform,
            wait_until,
            timeout,
        )
        .stage(Stage::Attest);
    };
    let nvml = g.nvml;
    let mut verified = None;
    let mut gpu_failed = None;
    let mut collect = |nonce: &[u8; 32]| -> Result<Vec<u8>, String> {
        if g.insecure_nonce_override.is_some() {
            log("gpu: INSECURE: GPU nonce overridden (tests only)");
        }
        let nonce = g.insecure_nonce_override.as_ref().unwrap_or(nonce);
        let r = gpu_gate::collect(&mut *nvml, g.gpus, nonce, g.check)
            .and_then(|v| v.list_bytes().map(|b| (v, b)));
        match r {
            Ok((v, bytes)) => {
                verified = Some(v);
                Ok(bytes)
            }
            Err(e) => {
                gpu_failed = Some(e.clone());
                Err(e)
            }
        }
    };
    let released = broker::handshake_with_gpu(
        link,
        broker_public_key,
        claims,
        platform,
        Some(&mut collect),
        wait_until,
        timeout,
    );
    let released = match released {
        Ok(r) => r,
        Err(e) => {
            if let Some(g) = gpu_failed {
                return fatal(Stage::Gpu, g);
            }
            return fatal(Stage::Attest, e);
        }
    };
    let Some(v) = verified else {
        return fatal(Stage::Gpu, "no GPU evidence was collected");
    };
    let n = v.blobs.len();
    gpu_gate::set_ready(nvml, v).stage(Stage::Gpu)?;
    log(&format!(
        "gpu: {n} GPU(s) verified here and by the broker; CC ready state set"
    ));
    Ok(released)
}

/// The attestation of this build: evidence from a [`platform::Platform`]
/// ([`platform::InsecureNone`], or [`platform::Tee`] for TDX and SEV-SNP),
/// the v1 handshake with the configured broker ([`broker`]), and the released secrets
/// written to [`broker::SECRETS_DIR`] for the workload (`PQCC_SECRETS_DIR`).
///
/// Without a `[broker]` section only `platform.required = "none"` (with
/// `insecure_no_tee = true`) gets through, releasing nothing; TDX and SNP always need a
/// broker, since evidence nobody checks is worth nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct BrokerAttestation;

impl Attestation for BrokerAttestation {
    fn attest(&mut self, config: &Config, model: &OpenedModel) -> Result<Grants, Fatal> {
        self.attest_inner(config, model)
    }
}

impl BrokerAttestation {
    fn attest_inner(&mut self, config: &Config, _model: &OpenedModel) -> Result<Grants, Fatal> {
        let mut platform: Box<dyn platform::Platform> = match config.platform {
            Platform::InsecureNone => Box::new(platform::InsecureNone),
            Platform::Tdx => Box::new(platform::Tee(tee::TeeKind::Tdx)),
            Platform::Snp => Box::new(platform::Tee(tee::TeeKind::Snp)),
        };
        let Some(b) = &config.broker else {
            if config.gpu.is_some() {
                return fatal(Stage::Gpu, "the GPU gate needs a [broker]");
            }
            if config.platform == Platform::InsecureNone {
                log("attest: INSECURE: no TEE, no broker (platform.insecure_no_tee)");
                return Ok(Grants::default());
            }
            return fatal(
                Stage::Attest,
                "a TEE platform needs a [broker] to check its evidence",
            );
        };
        // GPU gate, step 1, before the broker connection: the helper, the local
        // verifier's inputs, and a GPU within gpu.wait_ms.
        let mut gpu = match &config.gpu {
            None => None,
            Some(g) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let check = gpu_local_check(g, now).stage(Stage::Gpu)?;
                let mut nvml = nvml_helper::HelperNvml::spawn(
                    Path::new(&g.helper),
                    &g.nvml_library,
                    Duration::from_millis(g.call_timeout_ms),
                )
                .stage(Stage::Gpu)?;
                let gpus = gpu_gate::wait_for_gpus(
                    &mut nvml,
                    gpu_gate::Wait {
                        timeout: Duration::from_millis(g.wait_ms),
                        poll: Duration::from_millis(250),
                    },
                )
                .stage(Stage::Gpu)?;
                log(&format!("gpu: {} GPU(s) present", gpus.count));
                Some((nvml, gpus, check))
            }
        };
        if config.platform == Platform::InsecureNone {
            log("attest: INSECURE: no TEE evidence (platform.insecure_no_tee); asking the broker");
        }
        let wait_until = Instant::now() + Duration::from_millis(b.wait_ms);
        broker::wait_for_entropy(wait_until).stage(Stage::Attest)?;
        let mut link = broker::open(&b.transport, wait_until).stage(Stage::Attest)?;
        let released = attest_over(
            link.as_mut(),
            config,
            &b.public_key,
            platform.as_mut(),
            gpu.as_mut().map(|(nvml, gpus, check)| GpuGate {
                nvml,
                gpus: *gpus,
                check,
                insecure_nonce_override: None,
            }),
            wait_until,
            Duration::from_millis(b.timeout_ms),
        )?;
        drop(gpu);
        drop(link);
        let names: Vec<String> = released
            .secrets
            .iter()
            .map(|s| format!("{} ({} B)", s.name, s.bytes.len()))
            .collect();
        log(&format!(
            "attest: channel up: broker signature verified, session {}, round trip {}",
            config::to_hex(&released.session_id[..8]),
            ms(released.round_trip)
        ));
        log(&format!(
            "attest: secrets received: {}",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ));
        broker::install(released.secrets, Path::new(broker::SECRETS_DIR)).stage(Stage::Attest)?;
        Ok(Grants {
            env: vec![("PQCC_SECRETS_DIR".into(), broker::SECRETS_DIR.into())],
        })
    }
}

/// What happened, for [`boot`] to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// How the workload ended.
    pub exit: workload::Exit,
    /// Whether the config asked for QEMU's exit port.
    pub qemu_debug_exit: bool,
}

fn timed<T>(stage: Stage, f: impl FnOnce() -> Result<(T, String), Fatal>) -> Result<T, Fatal> {
    let start = Instant::now();
    let (v, what) = f()?;
    log(&format!("{stage}: {what} ({})", ms(start.elapsed())));
    Ok(v)
}

/// Reads the config file, bounded.
fn read_config(path: &Path) -> Result<Config, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    f.take(config::MAX_CONFIG_LEN as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    config::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads the whole verified device once; dm-verity fails the read of any block
/// whose hash does not chain up to the root. Returns the byte count. What was read
/// is dropped from the page cache as it goes, so a large model does not stay in RAM.
fn read_all(device: &str, len: u64) -> Result<u64, String> {
    let mut f = std::fs::File::open(device).map_err(|e| format!("{device}: {e}"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                sys::drop_cached(&f, done, n as u64);
                done += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{device}: read at byte {done}: {e}")),
        }
    }
    if done != len {
        return Err(format!("{device}: read {done} bytes, expected {len}"));
    }
    Ok(done)
}

/// Runs stages 1–8 and returns how the workload ended. Does not power off; [`boot`]
/// does. Only meaningful as PID 1 in a guest.
pub fn run(attestation: &mut dyn Attestation) -> Result<Outcome, Fatal> {
    timed(Stage::Mount, || {
        for m in sys::BASE_MOUNTS {
            sys::mount(m).stage(Stage::Mount)?;
        }
        let fs = std::fs::read_to_string("/proc/filesystems").stage(Stage::Mount)?;
        let mut names = vec!["proc", "sys", "dev", "run"];
        for m in sys::OPTIONAL_MOUNTS {
            if sys::has_filesystem(&fs, m.fstype) {
                sys::mount(m).stage(Stage::Mount)?;
                names.push(m.fstype);
            }
        }
        Ok(((), names.join(" ")))
    })?;

    let cfg = timed(Stage::Config, || {
        let cfg = read_config(Path::new(CONFIG_PATH)).stage(Stage::Config)?;
        let what = format!(
            "{}@{}:{}",
            cfg.model.name,
            cfg.model.revision,
            config::to_hex(&cfg.model.root_hash)
        );
        Ok((cfg, what))
    })?;

    timed(Stage::Modules, || {
        let (mut new, mut had) = (0, 0);
        for m in &cfg.modules {
            match sys::load_module(Path::new(m)).stage(Stage::Modules)? {
                sys::Loaded::Loaded => new += 1,
                sys::Loaded::AlreadyThere => had += 1,
            }
        }
        Ok(((), format!("{new} loaded, {had} already present")))
    })?;

    let (data, hash) = timed(Stage::Disks, || {
        let wait = Duration::from_millis(cfg.disk_wait_ms);
        let sys_block = Path::new("/sys/block");
        let data = disks::wait_for(sys_block, &cfg.model.data_serial, wait).stage(Stage::Disks)?;
        let hash = disks::wait_for(sys_block, &cfg.model.hash_serial, wait).stage(Stage::Disks)?;
        let need = cfg.model.data_blocks * 8;
        if data.sectors < need {
            return fatal(
                Stage::Disks,
                format!(
                    "data disk {} has {} sectors, the model needs {need}",
                    data.name, data.sectors
                ),
            );
        }
        if hash.sectors <= cfg.model.hash_start_block * 8 {
            return fatal(
                Stage::Disks,
                format!("hash disk {} is too small", hash.name),
            );
        }
        let what = format!("data {} hash {}", data.name, hash.name);
        Ok(((data, hash), what))
    })?;

    let model = timed(Stage::Verity, || {
        let table = dm::VerityTable {
            data_dev: data.dev_path(),
            hash_dev: hash.dev_path(),
            data_blocks: cfg.model.data_blocks,
            hash_start_block: cfg.model.hash_start_block,
            root_hash: cfg.model.root_hash,
            salt: cfg.model.salt.clone(),
        };
        let ctl = dm::Control::open().stage(Stage::Verity)?;
        let minor = ctl.create_verity(DM_NAME, &table).stage(Stage::Verity)?;
        let model = OpenedModel {
            device: format!("/dev/dm-{minor}"),
            len: cfg.model.data_blocks * 4096,
        };
        let read = read_all(&model.device, model.len).stage(Stage::Verity)?;
        let what = format!("{} open, {read} bytes read and verified", model.device);
        Ok((model, what))
    })?;

    timed(Stage::View, || {
        let dev = std::fs::File::open(&model.device)
            .map_err(|e| format!("{}: {e}", model.device))
            .stage(Stage::View)?;
        let index = tarindex::Index::build(&dev, model.len).stage(Stage::View)?;
        let conn = fuse::mount(MODEL_MOUNT).stage(Stage::View)?;
        let what = format!(
            "{} files, {} entries at {MODEL_MOUNT}",
            index.files(),
            index.nodes.len()
        );
        let server = fuse::Server::new(std::sync::Arc::new(index), dev, conn);
        std::thread::Builder::new()
            .name("fuse".into())
            .spawn(move || {
                if let Err(e) = server.serve() {
                    // The workload may be running: it must not go on with a dead
                    // view. One FATAL line, power off.
                    let f = Fatal {
                        stage: Stage::View,
                        reason: format!("file server: {e}"),
                    };
                    let _ = writeln!(std::io::stderr(), "{f}");
                    halt(None);
                }
            })
            .stage(Stage::View)?;
        Ok(((), what))
    })?;

    let grants = timed(Stage::Attest, || {
        let g = attestation.attest(&cfg, &model)?;
        Ok((g, "done".to_owned()))
    })?;

    let mut env = vec![
        ("MODEL_NAME".to_owned(), cfg.model.name.clone()),
        ("MODEL_COMMIT".to_owned(), cfg.model.revision.clone()),
        (
            "MODEL_VERITY_HASH".to_owned(),
            config::to_hex(&cfg.model.root_hash),
        ),
        ("MODEL_DEVICE".to_owned(), model.device.clone()),
        ("MODEL_PATH".to_owned(), MODEL_MOUNT.to_owned()),
    ];
    env.extend(grants.env);
    log(&format!("workload: exec {}", cfg.workload.command));
    let start = Instant::now();
    let exit = workload::run(workload::command(&cfg.workload, &env))
        .map_err(|e| format!("{}: {e}", cfg.workload.command))
        .stage(Stage::Workload)?;
    log(&format!("workload: {exit} after {}", ms(start.elapsed())));
    Ok(Outcome {
        exit,
        qemu_debug_exit: cfg.qemu_debug_exit,
    })
}

/// Codes written to QEMU's `isa-debug-exit` port (QEMU exits with `code * 2 + 1`).
pub mod exit_code {
    /// The workload exited with status 0.
    pub const WORKLOAD_OK: u8 = 0;
    /// The workload exited with another status.
    pub const WORKLOAD_FAILED: u8 = 1;
    /// A signal killed the workload.
    pub const WORKLOAD_SIGNALED: u8 = 2;
}

/// The whole of PID 1: runs [`run`], reports, syncs and powers off. Never returns
/// while it is PID 1; elsewhere (where power-off is refused) it exits.
pub fn boot(attestation: &mut dyn Attestation) -> ! {
    // A panic is a failure of whatever stage was running; report it the same way.
    std::panic::set_hook(Box::new(|info| {
        let reason = match info.payload().downcast_ref::<&str>() {
            Some(s) => (*s).to_owned(),
            None => match info.payload().downcast_ref::<String>() {
                Some(s) => s.clone(),
                None => "panic".to_owned(),
            },
        };
        let where_ = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let _ = writeln!(
            std::io::stderr(),
            "pqcc-init: FATAL panic: {reason}{where_}"
        );
        halt(None);
    }));
    match run(attestation) {
        Ok(o) => {
            if let Some(kb) = peak_rss_kb() {
                log(&format!("pqcc-init peak RSS {kb} kB"));
            }
            log(&format!("workload {}; powering off", o.exit));
            let code = match o.exit {
                workload::Exit::Code(0) => exit_code::WORKLOAD_OK,
                workload::Exit::Code(_) => exit_code::WORKLOAD_FAILED,
                workload::Exit::Signal(_) => exit_code::WORKLOAD_SIGNALED,
            };
            halt(o.qemu_debug_exit.then_some(code))
        }
        Err(f) => {
            let _ = writeln!(std::io::stderr(), "{f}");
            halt(None)
        }
    }
}

/// pqcc-init's own peak resident set (`VmHWM` of /proc/self/status), in kB.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn halt(qemu_code: Option<u8>) -> ! {
    sys::sync();
    if let Some(code) = qemu_code {
        // Best effort: QEMU exits here; on failure the power-off below still happens.
        let _ = sys::qemu_debug_exit(code);
    }
    let e = sys::power_off();
    let _ = writeln!(std::io::stderr(), "pqcc-init: power-off refused: {e}");
    std::process::exit(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_is_one_line() {
        let f = Fatal {
            stage: Stage::Config,
            reason: "bad\nthing\r".into(),
        };
        assert_eq!(f.to_string(), "pqcc-init: FATAL config: bad thing ");
        assert!(!f.to_string().contains('\n'));
    }

    #[test]
    fn stage_names() {
        let all = [
            Stage::Mount,
            Stage::Config,
            Stage::Modules,
            Stage::Disks,
            Stage::Verity,
            Stage::View,
            Stage::Attest,
            Stage::Gpu,
            Stage::Workload,
        ];
        let names: Vec<_> = all.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "mount", "config", "modules", "disks", "verity", "view", "attest", "gpu",
                "workload"
            ]
        );
    }

    #[test]
    fn no_broker_refuses_real_platforms() {
        let mut cfg = config::parse(include_str!("../tests/data/init.toml")).unwrap();
        let m = OpenedModel {
            device: "/dev/dm-0".into(),
            len: 4096,
        };
        assert_eq!(BrokerAttestation.attest(&cfg, &m), Ok(Grants::default()));
        cfg.platform = Platform::Tdx;
        assert!(BrokerAttestation.attest(&cfg, &m).is_err());
        cfg.platform = Platform::Snp;
        assert!(BrokerAttestation.attest(&cfg, &m).is_err());
    }

    #[test]
    fn config_file_errors_name_the_path() {
        let e = read_config(Path::new("/nonexistent/init.toml")).unwrap_err();
        assert!(e.starts_with("/nonexistent/init.toml: "), "{e}");
    }
}
