//! `pqcc bench broker`: the key broker on loopback.
//!
//! A real [`Broker`] (policy, audit log with fsync, a file secret) serves a Unix socket
//! in this process; clients run the guest's side of the v1 handshake with pqcc-core
//! (READY, Challenge, Hello with a bound `none` evidence bundle, Accept checked against
//! the broker key, the secret frame opened). Reported:
//! - `round_trip`: one client, Hello sent → Accept read (the broker's evidence check,
//!   policy, audit append and signature inside);
//! - `handshake`: one client, connect → secret opened;
//! - `decision`: the broker's own time from the Hello's arrival to the signed Accept;
//! - `load`: `clients` concurrent clients, handshakes per second over a run bounded by
//!   `count` handshakes and `seconds`.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use pqcc_core::bundle::{Claims, DONE, EvidenceBundle, READY};
use pqcc_core::channel::{Limits, Session};
use pqcc_core::handshake::Initiator;
use pqcc_core::sign::SigningKey;
use pqcc_core::wire::{
    ACCEPT_MAX_LEN, Bytes, CHALLENGE_MAX_LEN, Evidence, FRAME_HEADER_MAX_LEN, MAX_EVIDENCE_LEN,
    Platform,
};

use super::{Stats, unix_now};
use crate::aead::AwsLcAesGcm;
use crate::broker::io::{read_msg, write_msg};
use crate::broker::policy::Policy;
use crate::broker::serve::{Broker, Listen};
use crate::rng::OsRng;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Sequential handshakes for the latency figures.
    pub iterations: usize,
    /// Concurrent clients in the load run.
    pub clients: usize,
    /// Handshakes in the load run (at most).
    pub count: u64,
    /// Seconds of the load run (at most).
    pub seconds: f64,
    /// One JSON object per line.
    pub json: bool,
}

const ROOT: [u8; 32] = [0x42; 32];
const SECRET: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

/// One guest handshake; returns (round trip, whole handshake).
fn guest(sock: &Path, pk: &[u8]) -> Result<(Duration, Duration)> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(60);
    let mut s = UnixStream::connect(sock).context("connect")?;
    let mut rng = OsRng.unwrap_err();
    write_msg(&mut s, READY, deadline)?;
    let ch = read_msg(&mut s, CHALLENGE_MAX_LEN, deadline)?;
    let a = Initiator::new(pk)?.handle_challenge(&ch, &mut rng)?;
    let binding = *a.binding();
    let claims = Claims {
        model_name: "bench",
        model_revision: "r1",
        model_root_hash: ROOT,
    };
    let mut data = vec![0u8; MAX_EVIDENCE_LEN];
    let n = EvidenceBundle::new(claims, &binding.0, None).encode(&mut data)?;
    let mut hello = vec![0u8; pqcc_core::wire::HELLO_MAX_LEN];
    let (a, hlen) = a.write_hello(
        Evidence {
            platform: Platform::InsecureNone,
            data: Bytes(&data[..n]),
        },
        &mut hello,
    )?;
    let sent = Instant::now();
    write_msg(&mut s, &hello[..hlen], deadline)?;
    let resp = read_msg(&mut s, ACCEPT_MAX_LEN, deadline)?;
    let rtt = sent.elapsed();
    let (keys, grants) = a.handle_response(&resp)?;
    let mut session: Session<AwsLcAesGcm> = Session::new(keys, Limits::default(), unix_now());
    for g in &grants {
        let mut frame = read_msg(&mut s, FRAME_HEADER_MAX_LEN + g.len as usize + 16, deadline)?;
        let o = session.rx.open_in_place(unix_now(), &mut frame)?;
        if o.plaintext != SECRET {
            bail!("secret mismatch");
        }
    }
    write_msg(&mut s, DONE, deadline)?;
    Ok((rtt, t0.elapsed()))
}

fn ms(d: &[Duration]) -> Stats {
    let mut v: Vec<f64> = d.iter().map(|x| x.as_secs_f64() * 1e3).collect();
    Stats::of(&mut v)
}

fn report(json: bool, name: &str, s: &Stats) {
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": true, "bench": "broker", "measure": name, "unit": "ms", "n": s.n,
                "mean": s.mean, "p50": s.p50, "p90": s.p90, "min": s.min, "max": s.max})
        );
    } else {
        println!(
            "{name:<11} n={:<5} mean {:8.3} ms  p50 {:8.3}  p90 {:8.3}  min {:8.3}  max {:8.3}",
            s.n, s.mean, s.p50, s.p90, s.min, s.max
        );
    }
}

/// Runs the benchmark.
pub fn run(o: &Options) -> Result<()> {
    if o.iterations == 0 || o.clients == 0 || o.count == 0 || o.seconds <= 0.0 {
        bail!("--iterations, --clients, --count and --seconds must be positive");
    }
    let dir = std::env::temp_dir().join(format!("pqcc-bench-broker-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let cleanup = Cleanup(dir.clone());
    // The broker releases only secret files that group and others cannot read.
    crate::keys::write_file_atomic(&dir.join("secret"), SECRET, 0o600, false)?;
    let policy = Policy::parse(
        &format!(
            "max_concurrent = {}\n[secrets.k]\nfile = \"secret\"\n[[rule]]\nname = \"bench\"\n\
             platform = \"none\"\ninsecure_no_tee = true\nmodels = [\"bench@r1:{}\"]\n\
             secrets = [\"k\"]\n",
            o.clients.max(1),
            hex::encode(ROOT)
        ),
        &dir,
    )?;
    policy.check_files()?;
    let mut rng = OsRng.unwrap_err();
    let key = SigningKey::generate(&mut rng);
    let pk = key.public_key().to_vec();
    let mut broker = Broker::new(key, policy, &dir.join("audit.log"), &dir.join("state"))?;
    broker.keep_decision_times = true;
    let broker = Arc::new(broker);
    let sock = dir.join("broker.sock");
    {
        let b = Arc::clone(&broker);
        let listen = Listen::Unix(sock.clone());
        std::thread::spawn(move || b.serve(&listen, None));
    }
    let t = Instant::now();
    while !sock.exists() {
        if t.elapsed() > Duration::from_secs(10) {
            bail!("the broker did not start");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    guest(&sock, &pk).context("warm-up handshake")?;
    let (mut rtt, mut whole) = (Vec::new(), Vec::new());
    for _ in 0..o.iterations {
        let (r, w) = guest(&sock, &pk)?;
        rtt.push(r);
        whole.push(w);
    }
    let decisions = broker.decision_times();
    report(o.json, "round_trip", &ms(&rtt));
    report(o.json, "handshake", &ms(&whole));
    report(o.json, "decision", &ms(&decisions[1..]));

    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs_f64(o.seconds);
    let start = Instant::now();
    let threads: Vec<_> = (0..o.clients)
        .map(|_| {
            let (sock, pk, done, failed) = (
                sock.clone(),
                pk.clone(),
                Arc::clone(&done),
                Arc::clone(&failed),
            );
            let count = o.count;
            std::thread::spawn(move || {
                while Instant::now() < stop_at {
                    if done.fetch_add(1, Ordering::Relaxed) >= count {
                        done.fetch_sub(1, Ordering::Relaxed);
                        break;
                    }
                    if guest(&sock, &pk).is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let f = failed.load(Ordering::Relaxed);
    let rate = (n - f) as f64 / secs;
    if o.json {
        println!(
            "{}",
            serde_json::json!({"ok": f == 0, "bench": "broker", "measure": "load", "clients": o.clients,
                "handshakes": n - f, "failed": f, "seconds": secs, "per_second": rate})
        );
    } else {
        println!(
            "load        {} clients: {} handshakes in {secs:.2} s = {rate:.1}/s ({f} failed; \
             clients and broker share this machine's {} cores; audit log fsync'd per decision)",
            o.clients,
            n - f,
            std::thread::available_parallelism().map_or(1, |p| p.get())
        );
    }
    drop(cleanup);
    if f > 0 {
        bail!("{f} handshakes failed under load");
    }
    Ok(())
}

struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
