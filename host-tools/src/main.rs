//! The `pqcc` command.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand, ValueEnum};
use pqcc_tools::bench::{self, channel::Provider, parse_size};
use pqcc_tools::{audit, keys, statements};

/// pqcc host tools.
#[derive(Debug, Parser)]
#[command(
    name = "pqcc",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("PQCC_COMMIT"), ")"),
    about
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The key broker: attested key release to guests (`docs/broker.md`).
    #[command(subcommand)]
    Broker(pqcc_tools::broker::cli::BrokerCommand),
    /// Generate a key pair: the secret key file PATH (mode 0600) and PATH.pub.
    Keygen(KeygenArgs),
    /// Print a key's identity: `did:pqaid:<hex>` for ML-DSA-65, a SHA3-256
    /// fingerprint for ML-KEM-768. Takes a public or a secret key file.
    Id(IdArgs),
    /// The hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Model archives: reproducible tar + dm-verity (`docs/model-archives.md`).
    #[command(subcommand)]
    Model(pqcc_tools::model::cli::ModelCommand),
    /// Guest images: a deterministic initramfs for pqcc-init (`docs/guest.md`).
    #[command(subcommand)]
    Image(pqcc_tools::image::cli::ImageCommand),
    /// Build the QEMU command line for a guest and run it (`docs/guest.md`): exit 0
    /// workload succeeded, 1 guest refused or workload failed, 2 usage, I/O or QEMU
    /// error.
    Launch(Box<pqcc_tools::launch::cli::LaunchArgs>),
    /// Sign a driver module, eBPF object, memory report or model manifest into an
    /// ML-DSA-65 envelope (FILE.pqsig) (`docs/cli.md`).
    #[command(subcommand)]
    Sign(statements::SignCommand),
    /// Verify an envelope against trusted keys only, check the artifact's actual bytes
    /// and apply policy: exit 0 valid/allowed, 1 invalid/denied, 2 usage, I/O or
    /// malformed envelope.
    Verify(Box<statements::VerifyArgs>),
    /// Print an envelope's fields without verifying anything (marked NOT VERIFIED).
    Info(statements::InfoArgs),
    /// eBPF load policies.
    #[command(subcommand)]
    Policy(statements::PolicyCommand),
    /// TEE evidence: verify SEV-SNP reports and TDX quotes offline (`docs/evidence.md`).
    #[command(subcommand)]
    Evidence(pqcc_tools::evidence_cli::EvidenceCommand),
    /// NVIDIA GPU attestation: offline verification, collateral download
    /// (`docs/gpu-attestation.md`).
    #[command(subcommand)]
    Gpu(pqcc_tools::gpu_cli::GpuCommand),
}

/// Exit status 1: the command ran and its answer is "no" (verification failed or
/// denied). The result is already on stdout; `main` prints nothing more.
#[derive(Debug)]
struct Failed;

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("verification failed")
    }
}

impl std::error::Error for Failed {}

/// Exit 0 for [`statements::Outcome::Pass`], 1 ([`Failed`]) for `Fail`.
fn outcome(o: statements::Outcome) -> anyhow::Result<()> {
    match o {
        statements::Outcome::Pass => Ok(()),
        statements::Outcome::Fail => Err(Failed.into()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AlgArg {
    /// ML-DSA-65 (FIPS 204) signing key.
    #[value(name = "ml-dsa-65")]
    MlDsa65,
    /// ML-KEM-768 (FIPS 203) key encapsulation key.
    #[value(name = "ml-kem-768")]
    MlKem768,
}

#[derive(Debug, Args)]
struct KeygenArgs {
    /// Algorithm.
    #[arg(long, value_enum)]
    alg: AlgArg,
    /// Secret key file to write; the public key goes to PATH.pub.
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// Replace PATH and PATH.pub if they exist.
    #[arg(long)]
    force: bool,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct IdArgs {
    /// A public key file (PATH.pub) or a secret key file.
    #[arg(value_name = "KEYFILE")]
    path: PathBuf,
    /// One JSON object on stdout, with the raw public key as `public_key_hex`.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check a log's hash chain: exit 0 with the record count when intact, exit 1
    /// naming the first bad line, exit 2 on I/O errors.
    Verify(AuditVerifyArgs),
}

#[derive(Debug, Args)]
struct AuditVerifyArgs {
    /// The audit log file.
    #[arg(value_name = "LOG")]
    log: PathBuf,
    /// A head hash printed by an earlier check (64 hex): it must still be in the log,
    /// which finds records cut off the end.
    #[arg(long, value_name = "HEX", value_parser = parse_hash)]
    anchor: Option<[u8; 32]>,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Seal/open throughput of tensor frames through a real channel, against the raw
    /// AEAD provider and `openssl speed -evp aes-256-gcm`. Rates are GB/s (10^9 B/s).
    Channel(ChannelArgs),
    /// Cost of a full v1 handshake (ML-KEM-768 + ML-DSA-65) and of its parts.
    Handshake(HandshakeArgs),
    /// The key broker on loopback: handshake round trip, the broker's decision time,
    /// and handshakes per second with concurrent clients (count- and time-bounded).
    Broker(BrokerBenchArgs),
    /// Streaming SHA3-256 + ML-DSA-65 sign and verify of a large artifact (16 MiB by
    /// default) against pqc-gpu-driver 0.1.0's DriverAttester/DriverAttestationVerifier
    /// in the same run, with a real DriverModule envelope.
    Sign(SignBenchArgs),
    /// Building a model archive against GNU tar + `veritysetup format` on the same
    /// generated tree, with a byte-for-byte comparison.
    Model(bench::model::ModelArgs),
    /// Sealing and opening a sealed model (`pqcc model seal`) against the raw AES-256-GCM
    /// on the same bytes, on one core and on all cores.
    Sealed(bench::sealed::SealedArgs),
    /// Sealed frames opened in VRAM (AES-256-GCM kernel) against plain pinned
    /// host→device copies, 1 MiB to 1 GiB, with the kernel's own throughput (`docs/gpu.md`).
    Gpu(bench::gpu::GpuArgs),
    /// Full offline verification of NVIDIA GPU evidence (Set A) against NVIDIA's
    /// nv-local-gpu-verifier 2.7.3 on the same files in the same run.
    GpuVerify(GpuVerifyBenchArgs),
}

#[derive(Debug, Args)]
struct GpuVerifyBenchArgs {
    /// Directory with Set A (`v2023_initial/` and the `*_test_no_gpu.swidtag` RIMs).
    #[arg(long, value_name = "DIR", default_value_os_t = bench::gpu_verify::Options::default_data())]
    data: PathBuf,
    /// Timed verifications per side (the baseline runs at most 200).
    #[arg(long, default_value_t = 100)]
    iterations: usize,
    /// Python with nv-local-gpu-verifier==2.7.3 (default: target/nv-verifier-venv/bin/python
    /// when it exists, else python3).
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// The baseline script.
    #[arg(long, value_name = "PATH", default_value_os_t = bench::gpu_verify::Options::default_script())]
    baseline_script: PathBuf,
    /// Skip the baseline.
    #[arg(long)]
    no_baseline: bool,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProviderArg {
    /// RustCrypto `aes-gcm` (pqcc-core's no_std default).
    Rustcrypto,
    /// AWS-LC through aws-lc-rs.
    AwsLc,
    /// Both.
    Both,
}

#[derive(Debug, Args)]
struct ChannelArgs {
    /// One JSON object per line on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// AEAD provider(s) to measure.
    #[arg(long, value_enum, default_value_t = ProviderArg::Both)]
    provider: ProviderArg,
    /// Tensor sizes in bytes, comma-separated (K, M, G suffixes allowed).
    #[arg(long, value_delimiter = ',', value_parser = parse_size,
          default_value = "4096,1048576,67108864")]
    sizes: Vec<usize>,
    /// Thread count for the all-cores run (default: available cores); 1 thread is
    /// always measured too.
    #[arg(long)]
    threads: Option<usize>,
    /// Timed seconds per measurement, after warm-up (openssl gets it rounded up).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Skip the `openssl speed` reference.
    #[arg(long)]
    no_openssl: bool,
    /// Skip the per-frame fixed-cost measurements.
    #[arg(long)]
    no_overhead: bool,
}

#[derive(Debug, Args)]
struct SignBenchArgs {
    /// One JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// The artifact to sign (default: a temporary file of --size random bytes).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Size of the generated artifact (K, M, G suffixes allowed).
    #[arg(long, value_parser = parse_size, default_value = "16M")]
    size: usize,
    /// Timed runs of each operation per round, after one warm-up.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Rounds alternating pqcc and the baseline; medians of the pooled samples are
    /// reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Python with pqc-gpu-driver==0.1.0 installed (default: target/bench-venv/bin/python
    /// when it exists, else python3).
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// The baseline script.
    #[arg(long, value_name = "PATH", default_value_os_t = bench::sign::Options::default_script())]
    baseline_script: PathBuf,
    /// Skip the Python baseline.
    #[arg(long)]
    no_baseline: bool,
}

#[derive(Debug, Args)]
struct HandshakeArgs {
    /// One JSON object per line on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Timed iterations of each measurement.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Skip timing the parts (keygen, encaps, decaps, sign, verify).
    #[arg(long)]
    no_parts: bool,
}

#[derive(Debug, Args)]
struct BrokerBenchArgs {
    /// One JSON object per line on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Sequential handshakes for the latency figures.
    #[arg(long, default_value_t = 100)]
    iterations: usize,
    /// Concurrent clients in the load run.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// At most this many handshakes in the load run.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// At most this many seconds of load.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
}

/// Exit status: 0 valid/allowed, 1 verification failed or denied ([`Failed`]), 2 usage
/// or I/O error (clap exits 2 on usage errors by itself).
fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Failed>() => ExitCode::from(1),
        Err(e) => {
            eprintln!("pqcc: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen(a) => keygen(&a),
        Command::Id(a) => id(&a),
        Command::Audit(AuditCommand::Verify(a)) => audit_verify(&a),
        // Prints its own results and errors; exits 0, 1 (mismatch) or 2 (error).
        Command::Model(c) => std::process::exit(pqcc_tools::model::cli::run(c)),
        Command::Image(c) => pqcc_tools::image::cli::run(c),
        Command::Broker(c) => pqcc_tools::broker::cli::run(c),
        // Prints its own results and errors; exits 0, 1 or 2.
        Command::Launch(a) => std::process::exit(pqcc_tools::launch::cli::run(*a)),
        // Prints its own results and errors; exits 0, 1 (not valid) or 2 (error).
        Command::Evidence(c) => std::process::exit(pqcc_tools::evidence_cli::run(c)),
        // Prints its own results and errors; exits 0, 1 (a check failed) or 2 (error).
        Command::Gpu(c) => std::process::exit(pqcc_tools::gpu_cli::run(c)),
        Command::Sign(c) => statements::sign(&c),
        Command::Verify(a) => outcome(statements::verify(&a)?),
        Command::Info(a) => statements::info(&a),
        Command::Policy(statements::PolicyCommand::Check(a)) => {
            outcome(statements::policy_check(&a)?)
        }
        Command::Bench(BenchCommand::Model(a)) => bench::model::run(&a),
        Command::Bench(BenchCommand::Sealed(a)) => bench::sealed::run(&a),
        Command::Bench(BenchCommand::Gpu(a)) => bench::gpu::run(&a),
        Command::Bench(BenchCommand::GpuVerify(a)) => {
            bench::gpu_verify::run(&bench::gpu_verify::Options {
                data: a.data,
                iterations: a.iterations,
                python: a.python,
                script: a.baseline_script,
                baseline: !a.no_baseline,
                json: a.json,
            })
        }
        Command::Bench(BenchCommand::Sign(a)) => bench::sign::run(&bench::sign::Options {
            file: a.file,
            size: a.size,
            runs: a.runs,
            rounds: a.rounds,
            python: a.python,
            script: a.baseline_script,
            baseline: !a.no_baseline,
            json: a.json,
        }),
        Command::Bench(BenchCommand::Channel(a)) => {
            if !(a.seconds.is_finite() && a.seconds > 0.0) {
                anyhow::bail!("--seconds must be a positive number");
            }
            if a.sizes.is_empty() {
                anyhow::bail!("--sizes needs at least one size");
            }
            let threads = match a.threads {
                Some(0) => anyhow::bail!("--threads must be at least 1"),
                Some(n) => n,
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            };
            let providers = match a.provider {
                ProviderArg::Rustcrypto => vec![Provider::RustCrypto],
                ProviderArg::AwsLc => vec![Provider::AwsLc],
                ProviderArg::Both => vec![Provider::RustCrypto, Provider::AwsLc],
            };
            bench::channel::run(&bench::channel::Options {
                providers,
                sizes: a.sizes,
                threads,
                seconds: a.seconds,
                openssl: !a.no_openssl,
                overhead: !a.no_overhead,
                json: a.json,
            })
        }
        Command::Bench(BenchCommand::Broker(a)) => bench::broker::run(&bench::broker::Options {
            iterations: a.iterations,
            clients: a.clients,
            count: a.count,
            seconds: a.seconds,
            json: a.json,
        }),
        Command::Bench(BenchCommand::Handshake(a)) => {
            bench::handshake::run(&bench::handshake::Options {
                iterations: a.iterations,
                parts: !a.no_parts,
                json: a.json,
            })
        }
    }
}

fn keygen(a: &KeygenArgs) -> anyhow::Result<()> {
    let alg = match a.alg {
        AlgArg::MlDsa65 => keys::Alg::MlDsa65,
        AlgArg::MlKem768 => keys::Alg::MlKem768,
    };
    let g = keys::keygen(alg, &a.out, a.force)?;
    eprintln!(
        "wrote {} (secret, mode 0600) and {}",
        g.secret_path.display(),
        g.public_path.display()
    );
    if a.json {
        let mut m = serde_json::Map::new();
        m.insert("ok".into(), true.into());
        m.extend(keys::identity_json(g.alg, &g.identity));
        m.insert(
            "secret_key".into(),
            g.secret_path.display().to_string().into(),
        );
        m.insert(
            "public_key".into(),
            g.public_path.display().to_string().into(),
        );
        println!("{}", serde_json::Value::Object(m));
    } else {
        println!("{}", keys::identity_line(&g.identity));
    }
    Ok(())
}

fn id(a: &IdArgs) -> anyhow::Result<()> {
    let (kind, pk) = match keys::read_any_key(&a.path)? {
        keys::AnyKey::Secret(sk) => (keys::FileKind::Secret, sk.public_key()),
        keys::AnyKey::Public(pk) => (keys::FileKind::Public, pk),
    };
    let identity = pk.identity();
    if a.json {
        let mut m = serde_json::Map::new();
        m.insert("ok".into(), true.into());
        m.extend(keys::identity_json(pk.alg(), &identity));
        m.insert("file".into(), kind.name().into());
        // The raw public key, e.g. for a guest's init.toml `broker.public_key`.
        m.insert("public_key_hex".into(), hex::encode(pk.as_bytes()).into());
        println!("{}", serde_json::Value::Object(m));
    } else {
        println!("{}", keys::identity_line(&identity));
    }
    Ok(())
}

fn audit_verify(a: &AuditVerifyArgs) -> anyhow::Result<()> {
    // The writer's anchor file (LOG.head), when present, is checked too: it finds a
    // tail cut by someone who did not also rewrite it.
    let (result, anchor_file) = audit::verify_file_with_anchor_file(&a.log, a.anchor.as_ref())?;
    if let Some(h) = anchor_file
        && !a.json
    {
        eprintln!(
            "pqcc: audit verify: also checked the anchor file {} (record {}, head {})",
            audit::anchor_path(&a.log).display(),
            h.records,
            hex_lower(&h.head)
        );
    }
    match result {
        Ok(intact) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ok": true,
                        "valid": true,
                        "records": intact.records,
                        "head_sha3_256": hex_lower(&intact.head),
                    })
                );
            } else {
                println!(
                    "valid: {} records, head {}",
                    intact.records,
                    hex_lower(&intact.head)
                );
            }
            Ok(())
        }
        Err(bad) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ok": false,
                        "valid": false,
                        "line": bad.line,
                        "reason": bad.damage.to_string(),
                    })
                );
            } else {
                println!("invalid: {bad}");
            }
            Err(Failed.into())
        }
    }
}

fn parse_hash(s: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("expected 64 hex digits".into());
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .map_err(|_| "expected 64 hex digits".to_string())?;
    }
    Ok(out)
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every option of the CLI that takes several values after one flag (`num_args =
    /// 1..`): `pqcc COMMAND --flag`.
    fn multi_value_options() -> Vec<(String, String, bool)> {
        fn walk(c: &clap::Command, path: &str, out: &mut Vec<(String, String, bool)>) {
            let has_positional = c.get_positionals().next().is_some();
            for a in c.get_arguments().filter(|a| !a.is_positional()) {
                if a.get_num_args().is_some_and(|n| n.max_values() > 1) {
                    let flag = a.get_long().unwrap_or_else(|| a.get_id().as_str());
                    out.push((path.to_owned(), format!("--{flag}"), has_positional));
                }
            }
            for s in c.get_subcommands() {
                walk(s, &format!("{path} {}", s.get_name()), out);
            }
        }
        let mut c = Cli::command();
        c.build();
        let mut out = Vec::new();
        walk(&c, "pqcc", &mut out);
        out
    }

    /// Issue 29: `pqcc verify --trust KEY ENVELOPE` fed ENVELOPE to `--trust`. An option
    /// that takes several values swallows the positionals after it, so none may sit in
    /// a command with positionals, and the ones that exist (on commands without any)
    /// are the known two, kept for the `--modules A.ko B.ko` and `--rim A B` their
    /// users write. Every other repeatable flag takes one value per occurrence.
    #[test]
    fn no_multi_value_option_beside_a_positional() {
        let found = multi_value_options();
        let beside: Vec<_> = found.iter().filter(|(_, _, p)| *p).collect();
        assert!(
            beside.is_empty(),
            "options that would swallow a positional: {beside:?}"
        );
        let names: Vec<String> = found.iter().map(|(c, f, _)| format!("{c} {f}")).collect();
        assert_eq!(
            names,
            ["pqcc image build --modules", "pqcc gpu verify --rim"],
            "a new multi-value option: prefer one value per flag"
        );
    }
}
