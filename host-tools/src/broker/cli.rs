//! `pqcc broker …` subcommands.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::policy::Policy;
use super::serve::{Broker, Listen};

/// `pqcc broker` subcommands.
#[derive(Debug, Subcommand)]
pub enum BrokerCommand {
    /// Serve guests: answer v1 handshakes, check evidence and claims against the
    /// policy, release secrets inside the channel, log every decision. `SIGHUP`
    /// reloads the policy file (with its RIMs and collateral); a policy that does not
    /// load is refused and the previous one stays in force.
    Serve(ServeArgs),
    /// Parse and check a broker policy; print its rules.
    Check(CheckArgs),
}

/// `pqcc broker serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The broker's ML-DSA-65 secret key (`pqcc keygen --alg ml-dsa-65`); guests hold
    /// its public key in their measured config.
    #[arg(long, value_name = "BROKER.key")]
    pub key: PathBuf,
    /// The policy (`docs/broker.md`).
    #[arg(long, value_name = "broker.toml")]
    pub policy: PathBuf,
    /// `unix:PATH` or `tcp:IP:PORT`.
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// The hash-chained audit log every decision is appended to.
    #[arg(long, value_name = "LOG")]
    pub audit_log: PathBuf,
    /// Where generated data-encryption keys are kept (default: `broker-state` beside
    /// the policy file).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Exit after this many connections (for scripts and tests).
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u64>,
    /// One line per accepted connection on stderr (refusals are always printed).
    #[arg(long, short)]
    pub verbose: bool,
}

/// `pqcc broker check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The policy file.
    #[arg(value_name = "broker.toml")]
    pub policy: PathBuf,
}

/// Runs a `pqcc broker` subcommand.
pub fn run(c: BrokerCommand) -> Result<()> {
    match c {
        BrokerCommand::Serve(a) => serve(a),
        BrokerCommand::Check(a) => {
            let p = Policy::load(&a.policy)?;
            println!(
                "ok: {} rule(s), {} secret(s), handshake timeout {} s, {} concurrent",
                p.rules.len(),
                p.secrets.len(),
                p.handshake_timeout_s,
                p.max_concurrent
            );
            for r in &p.rules {
                let models: Vec<String> = r.models.iter().map(|m| m.to_string()).collect();
                println!(
                    "rule `{}`: platform {}, gpu {:?}, models [{}] → secrets [{}]",
                    r.name,
                    r.platform.name(),
                    r.gpu,
                    models.join(", "),
                    r.secrets.join(", ")
                );
                if let Some(nv) = &r.nvidia {
                    let insecure = nv.insecure_settings();
                    if !insecure.is_empty() {
                        println!(
                            "rule `{}`: INSECURE GPU verification: {}",
                            r.name,
                            insecure.join(", ")
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

fn serve(a: ServeArgs) -> Result<()> {
    let listen = Listen::parse(&a.listen)?;
    let policy = Policy::load(&a.policy)?;
    let sk = crate::keys::read_secret_key(&a.key)?;
    let key = sk
        .signing_key()
        .with_context(|| format!("{}: not an ML-DSA-65 secret key", a.key.display()))?;
    drop(sk);
    let state_dir = a.state_dir.unwrap_or_else(|| {
        a.policy
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("broker-state")
    });
    let mut broker = Broker::new(key, policy, &a.audit_log, &state_dir)?;
    broker.verbose = a.verbose;
    let broker = Arc::new(broker);
    reload_on_sighup(Arc::clone(&broker), a.policy)?;
    broker.serve(&listen, a.max_connections)
}

/// Reloads the policy at `path` on every `SIGHUP`, on a thread of its own, and says
/// on stderr what came of it (the audit log records it too).
fn reload_on_sighup(broker: Arc<Broker>, path: PathBuf) -> Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .context("installing the SIGHUP handler")?;
    std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                match broker.reload_policy(&path) {
                    Ok(n) => eprintln!(
                        "broker: SIGHUP: policy reloaded from {}: {n} rule(s)",
                        path.display()
                    ),
                    Err(e) => eprintln!(
                        "broker: SIGHUP: policy reload refused, the previous policy stays \
                         in force: {e:#}"
                    ),
                }
            }
        })
        .context("starting the SIGHUP thread")?;
    Ok(())
}
