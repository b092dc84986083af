//! The `pqcc` command.

use clap::{Args, Parser, Subcommand, ValueEnum};
use pqcc_tools::bench::{self, channel::Provider, parse_size};

/// pqcc host tools.
#[derive(Debug, Parser)]
#[command(name = "pqcc", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Seal/open throughput of tensor frames through a real channel, against the raw
    /// AEAD provider and `openssl speed -evp aes-256-gcm`. Rates are GB/s (10^9 B/s).
    Channel(ChannelArgs),
    /// Cost of a full v1 handshake (ML-KEM-768 + ML-DSA-65) and of its parts.
    Handshake(HandshakeArgs),
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
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
        Command::Bench(BenchCommand::Handshake(a)) => {
            bench::handshake::run(&bench::handshake::Options {
                iterations: a.iterations,
                parts: !a.no_parts,
                json: a.json,
            })
        }
    }
}
