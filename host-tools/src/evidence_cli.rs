//! `pqcc evidence verify`: check a TDX quote or SEV-SNP report offline, the way the
//! broker does ([`pqcc_verify::tee::verify`]), and print what it proves.
//!
//! Exit status: 0 valid, 1 not valid (the reason on stdout, and in `--json`), 2 usage
//! or I/O error (on stderr).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use pqcc_verify::tee::{
    self, Collateral, Measurements, TeeError, TeePlatform, TeePolicy, VerifiedTee,
    tdx::TdxCollateral,
};
use serde_json::{Value, json};

/// Exit status: valid.
pub const EXIT_VALID: i32 = 0;
/// Exit status: verification failed.
pub const EXIT_INVALID: i32 = 1;
/// Exit status: usage or I/O error.
pub const EXIT_ERROR: i32 = 2;

/// `pqcc evidence …`
#[derive(Debug, Subcommand)]
pub enum EvidenceCommand {
    /// Verify TEE evidence: SEV-SNP report (VCEK → ASK → pinned AMD ARK, signature,
    /// TCB, policy bits) or TDX quote (full DCAP against the pinned Intel root).
    /// Exit 0 valid, 1 not valid, 2 usage or I/O error.
    Verify(VerifyArgs),
}

/// Platform names on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlatformArg {
    /// AMD SEV-SNP (`snp` is read too).
    #[value(name = "sev-snp", alias = "snp")]
    Snp,
    /// Intel TDX.
    #[value(name = "tdx")]
    Tdx,
}

/// Arguments of `pqcc evidence verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The platform that produced the evidence.
    #[arg(long, value_enum)]
    pub platform: PlatformArg,
    /// SNP: the attestation report (0x4A0 bytes), optionally followed by the
    /// extended-report certificate table; binary or hex text (told by content).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// SNP: the VCEK certificate (DER or PEM), when the report file has no certificate
    /// table.
    #[arg(long, value_name = "FILE")]
    pub vcek: Option<PathBuf>,
    /// SNP: the ASK (and optionally ARK), PEM or DER. The ARK must be AMD's pinned one;
    /// without this file the built-in ASK is used.
    #[arg(long, value_name = "FILE")]
    pub chain: Option<PathBuf>,
    /// TDX: the quote (v4 or v5); binary or hex text, `0x` prefix and whitespace
    /// allowed (told by content).
    #[arg(long, value_name = "FILE")]
    pub quote: Option<PathBuf>,
    /// TDX: the DCAP collateral (JSON: PCK CRL and chain, root CA CRL, TCB info, QE
    /// identity, signatures).
    #[arg(long, value_name = "FILE")]
    pub collateral: Option<PathBuf>,
    /// The raw evidence blob a guest sent (`docs/evidence.md`), instead of
    /// --report/--quote; binary or hex text.
    #[arg(long, value_name = "FILE")]
    pub evidence: Option<PathBuf>,
    /// Time to verify at (Unix seconds); default: now.
    #[arg(long, value_name = "UNIX")]
    pub at: Option<u64>,
    /// The report data the evidence must carry (128 hex digits). Without it the report
    /// data is printed but not checked.
    #[arg(long, value_name = "HEX")]
    pub expect_report_data: Option<String>,
    /// A TEE policy (TOML, `docs/evidence.md`): minimum TCB, measurements, freshness.
    /// Without it: any measurement, no SNP TCB minimum, TDX status UpToDate only.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Print JSON (with a `tcb_status` field).
    #[arg(long)]
    pub json: bool,
}

/// Runs an evidence command; returns the exit status.
pub fn run(cmd: EvidenceCommand) -> i32 {
    let r = match cmd {
        EvidenceCommand::Verify(a) => run_verify(&a),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pqcc: error: {e:#}");
            EXIT_ERROR
        }
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{what} {}", path.display()))
}

/// Binary evidence (an SNP report, a TDX quote, an evidence blob) as users have it:
/// the raw bytes, or hex text (AMD's and Intel's samples, `xxd -p`, a log line) with
/// an optional `0x` prefix and any whitespace, line breaks included. The form is told
/// by content: a file of printable ASCII and whitespace only is text and must be hex
/// (a report or quote always holds non-text bytes in its header); anything else is
/// taken as it is.
pub fn decode_binary_or_hex(bytes: Vec<u8>, what: &str) -> anyhow::Result<Vec<u8>> {
    let is_text = !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    if !is_text {
        return Ok(bytes);
    }
    let digits: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let digits = digits
        .strip_prefix(b"0x")
        .or_else(|| digits.strip_prefix(b"0X"))
        .unwrap_or(&digits);
    if let Some(at) = digits.iter().position(|b| !b.is_ascii_hexdigit()) {
        bail!(
            "{what}: a text file, but not hex: character {:?} at hex digit {at} (give the \
             binary, or hex digits with an optional 0x prefix and any whitespace)",
            char::from(digits[at])
        );
    }
    if digits.is_empty() || !digits.len().is_multiple_of(2) {
        bail!(
            "{what}: {} hex digits; the bytes need an even number, at least 2",
            digits.len()
        );
    }
    hex::decode(digits).with_context(|| format!("{what}: hex"))
}

/// One X.509 certificate as users have it: DER, or PEM (one `CERTIFICATE` block,
/// told by its `-----BEGIN` line). Returns the DER.
pub fn decode_certificate(bytes: &[u8], what: &str) -> anyhow::Result<Vec<u8>> {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    if !bytes[start..].starts_with(b"-----BEGIN") {
        return Ok(bytes.to_vec());
    }
    let mut certs = pqcc_verify::nvidia::x509::pem_chain_to_der(&bytes[start..])
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    if certs.len() != 1 {
        bail!(
            "{what}: {} PEM certificates; give the one certificate alone",
            certs.len()
        );
    }
    Ok(certs.remove(0))
}

/// Loads evidence, collateral and policy (errors here are exit 2), verifies (exit 0/1).
fn run_verify(a: &VerifyArgs) -> anyhow::Result<i32> {
    let platform = match a.platform {
        PlatformArg::Snp => TeePlatform::Snp,
        PlatformArg::Tdx => TeePlatform::Tdx,
    };
    let main_file = match (platform, &a.evidence, &a.report, &a.quote) {
        (_, Some(e), None, None) => e,
        (TeePlatform::Snp, None, Some(r), None) => r,
        (TeePlatform::Tdx, None, None, Some(q)) => q,
        (TeePlatform::Snp, ..) => {
            bail!("--platform sev-snp needs exactly one of --report, --evidence")
        }
        (TeePlatform::Tdx, ..) => bail!("--platform tdx needs exactly one of --quote, --evidence"),
    };
    let wrong_flag = match platform {
        TeePlatform::Snp => a.collateral.as_ref().map(|_| "--collateral"),
        TeePlatform::Tdx => a
            .vcek
            .as_ref()
            .map(|_| "--vcek")
            .or(a.chain.as_ref().map(|_| "--chain")),
    };
    if let Some(flag) = wrong_flag {
        bail!("{flag} does not apply to --platform {platform}");
    }
    let evidence = decode_binary_or_hex(
        read(main_file, "evidence")?,
        &format!("evidence {}", main_file.display()),
    )?;
    let mut collateral = Collateral::default();
    if let Some(p) = &a.vcek {
        collateral.snp_vcek = Some(decode_certificate(
            &read(p, "--vcek")?,
            &format!("--vcek {}", p.display()),
        )?);
    }
    if let Some(p) = &a.chain {
        collateral.snp_chain = Some(read(p, "--chain")?);
    }
    if let Some(p) = &a.collateral {
        let j = read(p, "--collateral")?;
        collateral.tdx = Some(
            TdxCollateral::from_json(&j)
                .with_context(|| format!("--collateral {}", p.display()))?,
        );
    } else if platform == TeePlatform::Tdx {
        bail!("--platform tdx needs --collateral");
    }
    let policy = match &a.policy {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("--policy {}", p.display()))?;
            let pol =
                TeePolicy::from_toml(&text).with_context(|| format!("--policy {}", p.display()))?;
            if pol.platform != platform {
                bail!("--policy is for {}, --platform is {platform}", pol.platform);
            }
            pol
        }
        None => TeePolicy::report_only(platform),
    };
    let now = match a.at {
        Some(t) => t,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("system clock before 1970")?
            .as_secs(),
    };
    let (expected, checked) = match &a.expect_report_data {
        Some(h) => {
            let mut rd = [0u8; 64];
            hex::decode_to_slice(h.trim(), &mut rd)
                .map_err(|e| anyhow::anyhow!("--expect-report-data: {e} (want 128 hex digits)"))?;
            (rd, true)
        }
        // Unchecked: compare the report data with itself; a malformed report still
        // fails in verify() with its named reason.
        None => (
            tee::claimed_report_data(platform, &evidence).unwrap_or([0; 64]),
            false,
        ),
    };

    let result = tee::verify(platform, &evidence, &policy, &collateral, &expected, now);
    match &result {
        Ok(v) => print_valid(v, checked, now, a.json),
        Err(e) => print_invalid(platform, e, now, a.json),
    }
    Ok(if result.is_ok() {
        EXIT_VALID
    } else {
        EXIT_INVALID
    })
}

fn measurements_json(m: &Measurements) -> Value {
    match m {
        Measurements::Snp {
            measurement,
            host_data,
            policy,
            vmpl,
            reported_tcb,
            chip_id,
        } => json!({
            "measurement": hex::encode(measurement),
            "host_data": hex::encode(host_data),
            "policy": format!("{policy:#x}"),
            "vmpl": vmpl,
            "reported_tcb": {
                "fmc": reported_tcb.fmc,
                "bootloader": reported_tcb.bootloader,
                "tee": reported_tcb.tee,
                "snp": reported_tcb.snp,
                "microcode": reported_tcb.microcode,
            },
            "chip_id": hex::encode(chip_id),
        }),
        Measurements::Tdx {
            mrtd,
            rtmr,
            mr_config_id,
            mr_owner,
            td_attributes,
            tee_tcb_svn,
        } => json!({
            "mrtd": hex::encode(mrtd),
            "rtmr0": hex::encode(rtmr[0]),
            "rtmr1": hex::encode(rtmr[1]),
            "rtmr2": hex::encode(rtmr[2]),
            "rtmr3": hex::encode(rtmr[3]),
            "mr_config_id": hex::encode(mr_config_id),
            "mr_owner": hex::encode(mr_owner),
            "td_attributes": format!("{td_attributes:#018x}"),
            "tee_tcb_svn": hex::encode(tee_tcb_svn),
        }),
        _ => json!({}),
    }
}

fn print_valid(v: &VerifiedTee, checked: bool, now: u64, as_json: bool) {
    let m = measurements_json(&v.measurements);
    if as_json {
        let out = json!({
            "ok": true,
            "valid": true,
            "platform": v.platform.name(),
            "tcb_status": v.tcb_status.name(),
            "advisory_ids": v.advisory_ids,
            "debug": v.debug,
            "measurements": m,
            "report_data": hex::encode(v.report_data),
            "report_data_checked": checked,
            "at": now,
        });
        println!("{out}");
        return;
    }
    println!("result: valid");
    println!("platform: {}", v.platform);
    println!("tcb_status: {}", v.tcb_status);
    if !v.advisory_ids.is_empty() {
        println!("advisory_ids: {}", v.advisory_ids.join(","));
    }
    println!("debug: {}", v.debug);
    if let Value::Object(fields) = m {
        for (k, val) in fields {
            match val {
                Value::String(s) => println!("{k}: {s}"),
                other => println!("{k}: {other}"),
            }
        }
    }
    println!(
        "report_data: {} ({})",
        hex::encode(v.report_data),
        if checked {
            "matches --expect-report-data"
        } else {
            "NOT CHECKED"
        }
    );
    println!("at: {now}");
}

fn print_invalid(platform: TeePlatform, e: &TeeError, now: u64, as_json: bool) {
    // The variant name, stable for scripts: the Debug form up to its first field.
    let dbg = format!("{e:?}");
    let kind = dbg.split(['(', ' ', '{']).next().unwrap_or("");
    if as_json {
        let out = json!({
            "ok": false,
            "valid": false,
            "platform": platform.name(),
            "tcb_status": Value::Null,
            "error_kind": kind,
            "error": e.to_string(),
            "at": now,
        });
        println!("{out}");
    } else {
        println!("result: invalid");
        println!("platform: {platform}");
        println!("reason: {e}");
        println!("error_kind: {kind}");
    }
}

/// Which launch measurement `pqcc image measure` predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// SEV-SNP launch digest (MEASUREMENT) (`snp` is read too).
    #[value(name = "sev-snp", alias = "snp")]
    Snp,
    /// TDX MRTD, and RTMR1/RTMR2 with `--kernel`.
    #[value(name = "tdx")]
    Tdx,
}

/// TDX: the order of page adds and extends when KVM builds the TD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PageOrderArg {
    /// Add and extend page by page (upstream Linux KVM 6.16+).
    #[value(name = "per-page")]
    PerPage,
    /// Add a whole section, then extend it (older KVM TDX trees).
    #[value(name = "per-section")]
    PerSection,
}

/// `pqcc image measure`: expected launch measurements of a direct kernel boot.
#[derive(Debug, Args)]
pub struct MeasureArgs {
    /// The platform.
    #[arg(long, value_enum)]
    pub profile: ProfileArg,
    /// The OVMF image given to QEMU with `-bios` (SNP: an AmdSev build for --kernel).
    #[arg(long, value_name = "FILE")]
    pub ovmf: PathBuf,
    /// The kernel (`-kernel`); SNP: measured through the kernel-hashes table.
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// The initrd (`-initrd`), e.g. from `pqcc image build`.
    #[arg(long, value_name = "FILE", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line (`-append`).
    #[arg(long, value_name = "TEXT", requires = "kernel")]
    pub cmdline: Option<String>,
    /// Number of vCPUs (SNP: one VMSA page each).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub vcpus: u32,
    /// QEMU CPU model (EPYC, EPYC-v4, EPYC-Rome, EPYC-Milan, EPYC-Genoa, EPYC-Turin, …).
    #[arg(long, value_name = "TYPE", default_value = "EPYC-v4")]
    pub vcpu_type: String,
    /// SEV features of the VMSA (hex; QEMU's default 0x1 = SNP active).
    #[arg(long, value_name = "HEX", default_value = "0x1")]
    pub sev_features: String,
    /// TDX: guest memory as given to QEMU's `-m` (MiB, or with a K/M/G/T suffix); it
    /// decides where QEMU puts the initrd, which QEMU writes into the kernel header
    /// (RTMR1). The `tdx` launch profile's default is 16G.
    #[arg(long, value_name = "SIZE", default_value = "16G")]
    pub memory: String,
    /// TDX: predict the values for a kernel whose EFI stub does not measure the initrd
    /// and command line into RTMR2 (before Linux 6.9). Insecure: such a TD's quote does
    /// not cover the initrd, so a broker rule cannot tell a host-made one apart.
    #[arg(long)]
    pub insecure_unmeasured_initrd: bool,
    /// TDX: page add/extend order of the host's KVM (MRTD).
    #[arg(long, value_enum, value_name = "ORDER", default_value = "per-page")]
    pub tdx_page_order: PageOrderArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `pqcc image measure`; errors are usage or I/O (exit 2).
pub fn run_measure(a: &MeasureArgs) -> anyhow::Result<()> {
    use pqcc_verify::tee::measure;
    let ovmf = read(&a.ovmf, "--ovmf")?;
    match a.profile {
        ProfileArg::Snp => {
            let kernel = a
                .kernel
                .as_deref()
                .map(|p| read(p, "--kernel"))
                .transpose()?;
            let initrd = a
                .initrd
                .as_deref()
                .map(|p| read(p, "--initrd"))
                .transpose()?;
            let vcpu_sig = measure::vcpu_signature(&a.vcpu_type).ok_or_else(|| {
                anyhow::anyhow!("--vcpu-type {:?} is not a known EPYC model", a.vcpu_type)
            })?;
            let sev_features = u64::from_str_radix(a.sev_features.trim_start_matches("0x"), 16)
                .map_err(|e| anyhow::anyhow!("--sev-features: {e}"))?;
            let d = measure::snp_launch_digest(&measure::SnpLaunch {
                ovmf: &ovmf,
                kernel: kernel.as_deref(),
                initrd: initrd.as_deref(),
                cmdline: a.cmdline.as_deref(),
                vcpus: a.vcpus,
                vcpu_sig,
                sev_features,
            })?;
            // Without --kernel the digest covers OVMF alone (no kernel-hashes table):
            // labelled so, and refused as a broker rule's measurement.
            let covers = if kernel.is_some() {
                "firmware, kernel, initrd and command line (kernel-hashes table)"
            } else {
                eprintln!(
                    "pqcc: warning: without --kernel this SEV-SNP digest covers the firmware \
                     only: it admits any kernel, initrd and command line; it is printed as \
                     firmware-only:<hex>, which a broker rule refuses"
                );
                "firmware only"
            };
            let shown = if kernel.is_some() {
                hex::encode(d)
            } else {
                format!("firmware-only:{}", hex::encode(d))
            };
            if a.json {
                let out = json!({
                    "ok": true,
                    "profile": "sev-snp",
                    "measurement": shown,
                    "covers": covers,
                    "vcpus": a.vcpus,
                    "vcpu_type": a.vcpu_type,
                    "vcpu_sig": format!("{vcpu_sig:#x}"),
                    "sev_features": format!("{sev_features:#x}"),
                    "kernel_hashes": kernel.is_some(),
                });
                println!("{out}");
            } else {
                println!("measurement: {shown}");
            }
        }
        ProfileArg::Tdx => measure_tdx(a, &ovmf)?,
    }
    Ok(())
}

/// Parses a QEMU `-m` size: MiB, or a number with a K, M, G or T suffix.
pub fn parse_memory(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => anyhow::bail!("--memory {s:?}: unknown size suffix {c:?}"),
            };
            (&t[..i], shift)
        }
        _ => (t, 20),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("--memory {s:?}: not a size"))?;
    n.checked_mul(1 << shift)
        .filter(|&b| b > 0)
        .ok_or_else(|| anyhow::anyhow!("--memory {s:?}: out of range"))
}

/// `pqcc image measure --profile tdx`: MRTD, and with a kernel the RTMR1/RTMR2 events
/// and their replay.
fn measure_tdx(a: &MeasureArgs, ovmf: &[u8]) -> anyhow::Result<()> {
    use pqcc_verify::tee::measure::{self, TdxPageOrder};
    let order = match a.tdx_page_order {
        PageOrderArg::PerPage => TdxPageOrder::PerPage,
        PageOrderArg::PerSection => TdxPageOrder::PerSection,
    };
    let mrtd = measure::tdx_mrtd_with(ovmf, order)?;
    let memory = parse_memory(&a.memory)?;
    let kernel = a
        .kernel
        .as_deref()
        .map(|p| read(p, "--kernel"))
        .transpose()?;
    let initrd = a
        .initrd
        .as_deref()
        .map(|p| read(p, "--initrd"))
        .transpose()?;
    let events = match &kernel {
        Some(k) => Some(measure::tdx_boot_events(&measure::TdxDirectBoot {
            kernel: k,
            initrd: initrd.as_deref(),
            cmdline: a.cmdline.as_deref(),
            memory,
        })?),
        None => None,
    };
    // After the kernel parsed: does its stub measure the initrd at all?
    if let Some(k) = kernel.as_deref()
        && !measure::tdx::stub_measures_cc(k)
    {
        let version = measure::tdx::bzimage_version(k).unwrap_or("of unknown version");
        let why = format!(
            "kernel {version:?}: its EFI stub does not measure into the UEFI CC protocol \
             (Linux 6.9 and later do), so on a TD the initrd and command line are not \
             measured (RTMR2 stays zero) and the measured init.toml in the initrd proves \
             nothing: a host could boot this kernel with an initramfs of its own"
        );
        if !a.insecure_unmeasured_initrd {
            anyhow::bail!(
                "{why}; use a kernel that measures it (scripts/guest-kernel.sh fetches \
                 Debian's 6.12), or pass --insecure-unmeasured-initrd"
            );
        }
        eprintln!("pqcc: warning: INSECURE (--insecure-unmeasured-initrd): {why}");
    }
    let rtmr = |i| events.as_deref().map(|e| measure::replay_rtmr(e, i));
    let (rtmr1, rtmr2) = (rtmr(1), rtmr(2));
    if a.json {
        let evs: Vec<Value> = events
            .iter()
            .flatten()
            .map(|e| {
                json!({
                    "rtmr": e.rtmr,
                    "cc_mr_index": e.rtmr + 1,
                    "event_type": e.event_type_name(),
                    "event_type_id": e.event_type,
                    "digest": hex::encode(e.digest),
                    "what": e.description,
                })
            })
            .collect();
        let out = json!({
            "ok": true,
            "profile": "tdx",
            "mrtd": hex::encode(mrtd),
            "rtmr0": Value::Null,
            "rtmr1": rtmr1.map(hex::encode),
            "rtmr2": rtmr2.map(hex::encode),
            "memory": memory,
            "tdx_page_order": match order {
                TdxPageOrder::PerPage => "per-page",
                TdxPageOrder::PerSection => "per-section",
            },
            "events": evs,
            "not_predicted": "rtmr0 (TD HOB, OVMF variables, ACPI tables: VMM configuration) and rtmr3 (runtime)",
        });
        println!("{out}");
    } else {
        println!("mrtd: {}", hex::encode(mrtd));
        if let (Some(r1), Some(r2)) = (rtmr1, rtmr2) {
            println!("rtmr1: {}", hex::encode(r1));
            println!("rtmr2: {}", hex::encode(r2));
        } else {
            eprintln!(
                "pqcc: note: RTMR1/RTMR2 need --kernel (and the --initrd/--cmdline of the boot)"
            );
        }
    }
    Ok(())
}
