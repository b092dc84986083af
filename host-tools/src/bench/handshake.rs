//! `pqcc bench handshake`: the cost of one full v1 handshake and of its parts.
//!
//! `handshake` times [`establish_channel`] end to end (both peers, in one thread:
//! Challenge, ML-KEM-768 key generation, Hello, evidence binding check, encapsulation,
//! ML-DSA-65 signing, verification, decapsulation, key schedule, session set-up). The
//! broker's long-term signing key is made once, outside the timing. The parts are timed
//! alone with the same primitives pqcc-core uses: `keygen` (ML-KEM-768),
//! `encaps` (parse the encapsulation key + encapsulate), `decaps`, `sign` (ML-DSA-65
//! over a 32-byte transcript hash with the handshake context) and `verify` (the same,
//! with the key already parsed).
//!
//! Times are wall-clock; the thread's CPU time is reported beside them (`cpu_*`), which
//! is what to compare on a busy machine. ML-DSA signing loops a variable number of
//! times (rejection sampling), so its time varies from one signature to the next.

use std::time::Instant;

use anyhow::Context as _;
use pqcc_core::{
    channel::{DEFAULT_WINDOW_WORDS, Limits},
    handshake::SIGNATURE_CONTEXT,
    kem::{DecapsulationKey, EncapsulationKey},
    pair::establish_channel,
    sign::{SigningKey, VerifyingKey},
};
use rand_core::Rng as _;

use super::{Stats, thread_cpu_time, unix_now};
use crate::{aead::AwsLcAesGcm, rng::OsRng};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Timed iterations of each measurement.
    pub iterations: usize,
    /// Whether to time the parts as well.
    pub parts: bool,
    /// One JSON object per line instead of a table.
    pub json: bool,
}

/// Wall-clock and thread-CPU statistics of one measurement, in µs.
struct Timing {
    wall: Stats,
    cpu: Stats,
}

/// Times `f` `iterations` times after a warm-up.
fn time_us(iterations: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Timing> {
    for _ in 0..(iterations / 10).clamp(2, 20) {
        f()?;
    }
    let mut wall = Vec::with_capacity(iterations);
    let mut cpu = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let c = thread_cpu_time();
        let t = Instant::now();
        f()?;
        let w = t.elapsed().as_secs_f64() * 1e6;
        wall.push(w);
        cpu.push(match (thread_cpu_time(), c) {
            (Some(b), Some(a)) => b.saturating_sub(a).as_secs_f64() * 1e6,
            _ => w,
        });
    }
    Ok(Timing {
        wall: Stats::of(&mut wall),
        cpu: Stats::of(&mut cpu),
    })
}

fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn print(json: bool, op: &str, t: &Timing) {
    let (s, c) = (&t.wall, &t.cpu);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "ok": true,
                "op": op,
                "iterations": s.n,
                "mean_us": r1(s.mean),
                "p50_us": r1(s.p50),
                "p90_us": r1(s.p90),
                "min_us": r1(s.min),
                "max_us": r1(s.max),
                "cpu_mean_us": r1(c.mean),
                "cpu_p50_us": r1(c.p50),
            })
        );
    } else {
        println!(
            "{op:<10} {:>6} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            s.n, s.mean, s.p50, s.p90, s.min, s.max, c.mean, c.p50
        );
    }
}

/// Runs the handshake benchmark and prints its report.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let n = opts.iterations.max(1);
    let mut rng = OsRng.unwrap_err();
    let broker = SigningKey::generate(&mut rng);
    if !opts.json {
        println!(
            "{:<10} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "op", "n", "mean µs", "p50 µs", "p90 µs", "min µs", "max µs", "cpu mean", "cpu p50"
        );
    }
    eprintln!("handshake: {n} iterations of establish_channel …");
    let s = time_us(n, || {
        let pair = establish_channel::<AwsLcAesGcm, DEFAULT_WINDOW_WORDS, _>(
            &broker,
            &[],
            Limits::default(),
            unix_now(),
            &mut rng,
        )
        .context("handshake")?;
        std::hint::black_box(pair);
        Ok(())
    })?;
    print(opts.json, "handshake", &s);
    if !opts.parts {
        return Ok(());
    }
    eprintln!("handshake parts …");
    let mut rng = OsRng.unwrap_err();
    print(
        opts.json,
        "keygen",
        &time_us(n, || {
            std::hint::black_box(DecapsulationKey::generate(&mut rng));
            Ok(())
        })?,
    );
    let dk = DecapsulationKey::generate(&mut rng);
    let ek = dk.encapsulation_key_bytes();
    print(
        opts.json,
        "encaps",
        &time_us(n, || {
            let key = EncapsulationKey::from_bytes(&ek)?;
            std::hint::black_box(key.encapsulate(&mut rng));
            Ok(())
        })?,
    );
    let (ct, _) = EncapsulationKey::from_bytes(&ek)?.encapsulate(&mut rng);
    print(
        opts.json,
        "decaps",
        &time_us(n, || {
            std::hint::black_box(dk.decapsulate(&ct)?);
            Ok(())
        })?,
    );
    let mut th = [0u8; 32];
    rng.fill_bytes(&mut th);
    print(
        opts.json,
        "sign",
        &time_us(n, || {
            std::hint::black_box(broker.sign(SIGNATURE_CONTEXT, &th, &mut rng)?);
            Ok(())
        })?,
    );
    let sig = broker.sign(SIGNATURE_CONTEXT, &th, &mut rng)?;
    let vk = VerifyingKey::from_bytes(broker.public_key())?;
    print(
        opts.json,
        "verify",
        &time_us(n, || {
            vk.verify(SIGNATURE_CONTEXT, &th, &sig)?;
            Ok(())
        })?,
    );
    Ok(())
}
