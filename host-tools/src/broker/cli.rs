//! `pqcc broker …` subcommands.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::policy::{LoadOptions, Policy, SecretSource};
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
    /// Load a policy with insecure settings (a `none` rule, `insecure_*` keys, a TDX
    /// rule that accepts `Revoked`); they are printed at start and named in the audit
    /// record of every release they allow. Without it such a policy is refused.
    #[arg(long)]
    pub allow_insecure: bool,
}

/// `pqcc broker check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The policy file.
    #[arg(value_name = "broker.toml")]
    pub policy: PathBuf,
    /// Accept insecure settings (as `broker serve --allow-insecure`): they are listed.
    #[arg(long)]
    pub allow_insecure: bool,
    /// One JSON object on stdout: `"ok"`, the limits, the secrets and every parsed rule
    /// (`"ok": false` and the error, exit 2, when the policy is refused).
    #[arg(long)]
    pub json: bool,
}

/// Runs a `pqcc broker` subcommand.
pub fn run(c: BrokerCommand) -> Result<()> {
    match c {
        BrokerCommand::Serve(a) => serve(a),
        BrokerCommand::Check(a) => check(&a),
    }
}

/// `pqcc broker check`: exit 0 when the policy loads, 2 with the reason when it does
/// not.
fn check(a: &CheckArgs) -> Result<()> {
    let opts = LoadOptions {
        allow_insecure: a.allow_insecure,
    };
    let p = match Policy::load(&a.policy, opts) {
        Ok(p) => p,
        Err(e) => {
            if a.json {
                println!("{}", json!({"ok": false, "error": format!("{e:#}")}));
            }
            return Err(e);
        }
    };
    if a.json {
        println!("{}", policy_json(&p));
        return Ok(());
    }
    println!(
        "ok: {} rule(s), {} secret(s), handshake timeout {} s, {} concurrent ({} per TCP peer)",
        p.rules.len(),
        p.secrets.len(),
        p.handshake_timeout_s,
        p.max_concurrent,
        p.max_per_peer
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
        if !r.insecure.is_empty() {
            println!("rule `{}`: INSECURE: {}", r.name, r.insecure.join(", "));
        }
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

/// The parsed policy as `broker check --json` prints it.
fn policy_json(p: &Policy) -> Value {
    let secrets: serde_json::Map<String, Value> = p
        .secrets
        .iter()
        .map(|(n, s)| {
            let v = match s {
                SecretSource::File(f) => json!({"file": f.display().to_string()}),
                SecretSource::Generate(len) => json!({"generate": len}),
            };
            (n.clone(), v)
        })
        .collect();
    let rules: Vec<Value> = p
        .rules
        .iter()
        .map(|r| {
            let tee = r.tee.as_ref().map(|t| {
                let tdx: Vec<Value> = t
                    .policy
                    .tdx
                    .measurements
                    .iter()
                    .map(|m| {
                        json!({"mrtd": m.mrtd, "rtmr0": m.rtmr0, "rtmr1": m.rtmr1,
                               "rtmr2": m.rtmr2, "rtmr3": m.rtmr3})
                    })
                    .collect();
                let status: Vec<&str> = t
                    .policy
                    .tdx
                    .accepted_tcb_status
                    .iter()
                    .map(|s| s.name())
                    .collect();
                json!({
                    "platform": t.policy.platform.name(),
                    "snp_measurements": t.policy.snp.measurements,
                    "snp_host_data": t.policy.snp.host_data,
                    "snp_min_tcb": format!("{:?}", t.policy.snp.min_tcb),
                    "tdx_measurements": tdx,
                    "tdx_accepted_tcb_status": status,
                    "max_collateral_age_secs": t.policy.max_collateral_age_secs,
                    "snp_vcek": t.collateral.snp_vcek.is_some(),
                    "snp_chain": t.collateral.snp_chain.is_some(),
                    "tdx_collateral": t.collateral.tdx.is_some(),
                })
            });
            let nvidia = r.nvidia.as_ref().map(|nv| {
                json!({
                    "rims": nv.rims.iter().map(|r| r.source.clone()).collect::<Vec<_>>(),
                    "revocation": format!("{:?}", nv.policy.revocation),
                    "require_report_fwid": nv.policy.require_report_fwid,
                    "collateral": nv.collateral.is_some(),
                })
            });
            json!({
                "name": r.name,
                "platform": r.platform.name(),
                "gpu": match r.gpu {
                    super::policy::GpuRequirement::None => "none",
                    super::policy::GpuRequirement::Required => "required",
                },
                "models": r.models.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
                "secrets": r.secrets,
                "insecure": r.insecure,
                "tee": tee,
                "nvidia": nvidia,
            })
        })
        .collect();
    json!({
        "ok": true,
        "handshake_timeout_s": p.handshake_timeout_s,
        "idle_timeout_s": p.idle_timeout_s,
        "max_concurrent": p.max_concurrent,
        "max_per_peer": p.max_per_peer,
        "secrets": secrets,
        "rules": rules,
        "insecure": p.insecure_settings(),
    })
}

fn serve(a: ServeArgs) -> Result<()> {
    let listen = Listen::parse(&a.listen)?;
    let opts = LoadOptions {
        allow_insecure: a.allow_insecure,
    };
    let policy = Policy::load(&a.policy, opts)?;
    for i in policy.insecure_settings() {
        eprintln!("broker: INSECURE (allowed by --allow-insecure): {i}");
    }
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
    broker.load_options = opts;
    let broker = Arc::new(broker);
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, broker.stop_flag())
            .context("installing the SIGTERM/SIGINT handler")?;
    }
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
