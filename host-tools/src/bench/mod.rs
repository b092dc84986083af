//! `pqcc bench`: throughput of the channel and cost of the handshake.
//!
//! Every benchmark runs the real code paths of `pqcc-core` with keys from a real
//! handshake and randomness from the OS ([`crate::rng::OsRng`]), warms up before it
//! times, writes its results to stdout (a table, or one JSON object per line with
//! `--json`) and its progress to stderr.

pub mod broker;
pub mod channel;
pub mod gpu;
pub mod gpu_verify;
pub mod handshake;
pub mod model;
pub mod openssl;
pub mod sealed;
pub mod sign;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (the channel's `now`).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// CPU time used so far by the calling thread (`CLOCK_THREAD_CPUTIME_ID`), or `None`
/// where that clock is unavailable.
///
/// Single-thread throughput is reported per CPU-second, as `openssl speed` does (it
/// divides by the process's user time), so that time the thread spends descheduled on
/// a busy machine does not count against it. `openssl speed -multi` divides by wall
/// time, and so do the multi-thread figures.
pub fn thread_cpu_time() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// CPU time used so far by the whole process, every thread together
/// (`CLOCK_PROCESS_CPUTIME_ID`), or `None` where that clock is unavailable. For work
/// that uses helper threads (overlapped reading), where the calling thread's clock
/// would leave their share out.
pub fn process_cpu_time() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(target_os = "linux")]
fn cpu_clock(clock: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec` that outlives the call, and
    // `clock_gettime` writes only into it.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

/// Bytes per second expressed in GB/s (10^9 bytes per second).
pub fn gbps(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 / seconds / 1e9
    } else {
        0.0
    }
}

/// Parses a size such as `4096`, `4K`, `1M`, `64MiB` or `1G` (binary multiples).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    let (num, suffix) = t.split_at(digits);
    let n: usize = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult: usize = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        _ => return Err(format!("bad size suffix in {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} too large"))
}

/// A human-readable size: `4 KiB`, `1 MiB`, `64 MiB`, or bytes.
pub fn human_size(n: usize) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{} GiB", n >> 30)
    } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

/// Summary statistics of a set of durations in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Number of samples.
    pub n: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Fastest sample.
    pub min: f64,
    /// Slowest sample.
    pub max: f64,
}

impl Stats {
    /// Computes the statistics of `samples` (sorted in place). Empty input gives zeros.
    pub fn of(samples: &mut [f64]) -> Self {
        let n = samples.len();
        if n == 0 {
            return Self {
                n,
                mean: 0.0,
                p50: 0.0,
                p90: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        samples.sort_by(f64::total_cmp);
        let pct = |p: usize| samples[((n - 1) * p) / 100];
        Self {
            n,
            mean: samples.iter().sum::<f64>() / n as f64,
            p50: pct(50),
            p90: pct(90),
            min: samples[0],
            max: samples[n - 1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert!(parse_size("x").is_err());
        assert!(parse_size("4Q").is_err());
        assert_eq!(human_size(67_108_864), "64 MiB");
        assert_eq!(human_size(4096), "4 KiB");
        assert_eq!(human_size(1000), "1000 B");
    }

    #[test]
    fn stats() {
        let mut v = [3.0, 1.0, 2.0, 4.0, 5.0];
        let s = Stats::of(&mut v);
        assert_eq!(s.p50, 3.0);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 5.0);
        assert_eq!(s.mean, 3.0);
    }
}
