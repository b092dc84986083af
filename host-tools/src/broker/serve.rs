//! The broker's server loop and the decision for one connection.
//!
//! One thread per connection, at most [`Policy::max_concurrent`] in service at once;
//! as many more may wait for a place (each within its own deadline), and at most
//! [`Policy::max_per_peer`] of all of them come from one TCP peer address. A connection
//! over these limits is closed at once: the accept loop never waits for a place, and a
//! flood from one address cannot keep a real guest out. Each connection has one deadline from accept
//! to its end (`idle_timeout_s` for the guest's READY, then `handshake_timeout_s`, plus
//! a few seconds to say goodbye), and every read gets only the time that is left, so a
//! silent or slow peer holds its place for a bounded time. `SIGTERM` or `SIGINT`
//! ([`Broker::stop_flag`]) stops the accept loop: connections still waiting for a READY
//! are dropped, handshakes in progress finish, the Unix socket is removed, and
//! [`Broker::serve`] returns. Each connection gets a fresh Challenge, so
//! a challenge nonce is used once: a Hello recorded from another connection carries
//! evidence bound to another challenge and is refused (`replay`). A handshake not
//! finished within [`Policy::handshake_timeout_s`] is dropped. Nothing a guest sends
//! can crash the broker: every message is length-checked before it is read and decoded
//! strictly, and a panic in one connection's thread is caught and logged as an
//! internal error. Every decision is appended to the audit log before the Accept is
//! written, and secrets leave the broker only as channel frames after the Accept.
//!
//! [`Broker::reload_policy`] (`pqcc broker serve` calls it on `SIGHUP`) loads the
//! policy file again, with its RIMs and collateral: a policy that loads replaces the
//! old one for every handshake that starts afterwards (one in progress finishes under
//! the policy it started with); one that does not is refused, the old policy stays in
//! force, and either way the audit log gets a `policy-reload` record.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use pqcc_core::bundle::{DONE, EvidenceBundle, GpuEvidenceList, READY};
use pqcc_core::channel::{Limits, MAX_CHUNK_LEN, Session};
use pqcc_core::handshake::{BindingValue, Responder};
use pqcc_core::hash;
use pqcc_core::secret::ct_eq;
use pqcc_core::sign::SigningKey;
use pqcc_core::wire::{
    ACCEPT_MAX_LEN, CHALLENGE_MAX_LEN, DType, FRAME_HEADER_MAX_LEN, Grant, HELLO_MAX_LEN, Platform,
    REJECT_MAX_LEN, RejectReason, TensorMetadata,
};
use pqcc_verify::nvidia::{GpuEvidence, GpuVerifier, Outcome as CheckOutcome};
use pqcc_verify::tee::{TeeError, TeePlatform};
use zeroize::Zeroizing;

use super::io::{Conn, poll_readable, read_msg, write_msg};
use super::policy::{
    GpuRequirement, LoadOptions, NvidiaRule, Policy, SecretSource, read_policy_file,
    read_secret_file,
};
use crate::aead::AwsLcAesGcm;
use crate::audit::{AuditLog, Decision, Record};
use crate::rng::OsRng;
use crate::text::untrusted;

/// Where the broker listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A Unix socket path (created; must not exist).
    Unix(PathBuf),
    /// A TCP address (loopback unless you put TLS-free PQ channels on a network on
    /// purpose: the channel itself is end-to-end authenticated and encrypted).
    Tcp(SocketAddr),
}

impl Listen {
    /// Parses `unix:PATH` or `tcp:HOST:PORT`.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                bail!("--listen unix:PATH: empty path");
            }
            return Ok(Self::Unix(PathBuf::from(p)));
        }
        if let Some(a) = s.strip_prefix("tcp:") {
            let addr: SocketAddr = a
                .parse()
                .with_context(|| format!("--listen tcp:{a}: expected IP:PORT"))?;
            return Ok(Self::Tcp(addr));
        }
        bail!("--listen `{s}`: expected unix:PATH or tcp:IP:PORT")
    }
}

/// What a finished connection decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Accepted (secrets sent) or not.
    pub decision: Decision,
    /// The rule that matched, or why the guest was refused.
    pub reason: String,
    /// Time from the Hello's arrival to the decision (evidence, policy, secrets).
    pub decision_time: Duration,
}

/// The broker: key, policy, audit log.
pub struct Broker {
    key: SigningKey,
    policy: RwLock<Arc<Policy>>,
    audit: Mutex<AuditLog>,
    state_dir: PathBuf,
    generate_lock: Mutex<()>,
    next_conn: AtomicU64,
    decision_times: Mutex<Vec<Duration>>,
    gpu_verifier: Mutex<GpuVerifier>,
    /// Connections being served, in all and per TCP peer address.
    active: Mutex<Active>,
    /// Signalled when a place frees up or the limit changes.
    slot_freed: Condvar,
    /// Set (by `SIGTERM`/`SIGINT` in `pqcc broker serve`) to stop serving.
    stop: Arc<AtomicBool>,
    /// When a connection over a limit was last reported (one line a second at most).
    last_full_note: Mutex<Option<Instant>>,
    /// What a policy reload accepts (`--allow-insecure`).
    pub load_options: LoadOptions,
    /// Print one line per connection on stderr.
    pub verbose: bool,
    /// Keep each accepted handshake's decision time for [`Broker::decision_times`]
    /// (`pqcc bench broker`; off in `pqcc broker serve`, at most a million kept).
    pub keep_decision_times: bool,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("key", &"<redacted>")
            .field("rules", &self.policy().rules.len())
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Connections in service and waiting for a place.
#[derive(Debug, Default)]
struct Active {
    /// In service (at most `max_concurrent`).
    total: usize,
    /// Accepted, waiting for a place (at most `max_concurrent`).
    waiting: usize,
    /// Both, per TCP peer address (at most `max_per_peer` each).
    per_peer: HashMap<IpAddr, usize>,
}

/// Where a new connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In service.
    Now,
    /// Waiting for a place.
    Wait,
}

/// How long a connection may live in all, from accept: the READY wait, the handshake,
/// and a few seconds to deliver the answer (see `linger`).
fn connection_budget(p: &Policy) -> Duration {
    Duration::from_secs(p.idle_timeout_s + p.handshake_timeout_s + 6)
}

/// A refusal: what the guest is told and what the log records.
struct Refusal {
    reason: RejectReason,
    detail: String,
}

fn refuse(reason: RejectReason, detail: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        detail: detail.into(),
    }
}

impl Broker {
    /// A broker with `key`, `policy`, the audit log at `audit` and generated keys kept
    /// under `state_dir` (created, mode 0700).
    pub fn new(key: SigningKey, policy: Policy, audit: &Path, state_dir: &Path) -> Result<Self> {
        fs::create_dir_all(state_dir)
            .with_context(|| format!("creating state dir {}", state_dir.display()))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(state_dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", state_dir.display()))?;
        Ok(Self {
            key,
            policy: RwLock::new(Arc::new(policy)),
            audit: Mutex::new(AuditLog::open(audit)?),
            state_dir: state_dir.to_path_buf(),
            generate_lock: Mutex::new(()),
            next_conn: AtomicU64::new(1),
            decision_times: Mutex::new(Vec::new()),
            active: Mutex::new(Active::default()),
            slot_freed: Condvar::new(),
            stop: Arc::new(AtomicBool::new(false)),
            last_full_note: Mutex::new(None),
            load_options: LoadOptions::default(),
            gpu_verifier: Mutex::new(GpuVerifier::new()),
            verbose: false,
            keep_decision_times: false,
        })
    }

    /// The decision times of the accepted handshakes so far, when
    /// [`Broker::keep_decision_times`] is set (for `pqcc bench broker`).
    pub fn decision_times(&self) -> Vec<Duration> {
        self.decision_times
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The flag that stops [`Broker::serve`] (for `signal_hook::flag::register`).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Loads the policy file at `path` again (RIMs and collateral included) and, if it
    /// loads, puts it in force for the handshakes that start from now on; returns its number
    /// of rules. If it does not load, the policy in force stays and the error is
    /// returned. Either way a `policy-reload` record (the file's SHA3-256, allow or
    /// deny, why) goes to the audit log. The GPU verifier's caches start afresh.
    pub fn reload_policy(&self, path: &Path) -> Result<usize> {
        // One read: the hash recorded is that of the bytes checked.
        let bytes = read_policy_file(path);
        let digest = bytes
            .as_ref()
            .map(|b| hash::sha3_256(&[b]))
            .unwrap_or([0u8; 32]);
        let loaded = bytes.and_then(|b| Policy::from_file_bytes(path, &b, self.load_options));
        let (decision, reason) = match &loaded {
            Ok(p) => (
                Decision::Allow,
                format!(
                    "policy {} loaded: {} rule(s){}",
                    path.display(),
                    p.rules.len(),
                    insecure_note(&p.insecure_settings())
                ),
            ),
            Err(e) => (
                Decision::Deny,
                format!(
                    "policy {} refused, the previous one stays in force: {e:#}",
                    path.display()
                ),
            ),
        };
        let rec = Record {
            time: now_unix(),
            kind: "policy-reload".into(),
            decision,
            reason,
            signer: None,
            artifact_sha3_256: digest,
            actor: "broker".into(),
        };
        let append = |rec: &Record| -> Result<()> {
            self.audit
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .append(rec)?;
            Ok(())
        };
        let policy = match loaded {
            Ok(p) => p,
            Err(e) => {
                append(&rec)?;
                return Err(e);
            }
        };
        let rules = policy.rules.len();
        // The record and the swap happen under the write lock, so no handshake starts
        // under the old policy once the record says the new one is in force, and none
        // under the new one without its record.
        let mut slot = self.policy.write().unwrap_or_else(|e| e.into_inner());
        append(&rec)?;
        *slot = Arc::new(policy);
        drop(slot);
        *self.gpu_verifier.lock().unwrap_or_else(|e| e.into_inner()) = GpuVerifier::new();
        // A raised `max_concurrent` applies at once: wake the connections waiting for a
        // place (they check the limit under this lock, so the wake is not lost).
        let _active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        self.slot_freed.notify_all();
        Ok(rules)
    }

    /// Serves `listen` until `max_connections` connections were handled (forever when
    /// `None`) or [`Broker::stop_flag`] is set. Prints `listening on …` on stderr once
    /// the socket is ready. A Unix socket left behind by a broker that is gone (nobody
    /// accepts on it) is replaced; one that a live broker serves is an error. When
    /// serving ends, connections that never said READY are dropped, handshakes in
    /// progress finish, and the Unix socket is removed.
    pub fn serve(self: Arc<Self>, listen: &Listen, max_connections: Option<u64>) -> Result<()> {
        let mut handled = 0u64;
        let mut threads: Vec<std::thread::JoinHandle<()>> = Vec::new();
        let (unix, tcp) = match listen {
            Listen::Unix(path) => (Some((bind_unix(path)?, path.clone())), None),
            Listen::Tcp(addr) => {
                let l = TcpListener::bind(addr).with_context(|| format!("binding tcp {addr}"))?;
                (None, Some(l))
            }
        };
        let fd = match (&unix, &tcp) {
            (Some((l, path)), _) => {
                l.set_nonblocking(true)?;
                eprintln!("broker: listening on unix:{}", path.display());
                std::os::fd::AsRawFd::as_raw_fd(l)
            }
            (_, Some(l)) => {
                l.set_nonblocking(true)?;
                eprintln!("broker: listening on tcp:{}", l.local_addr()?);
                std::os::fd::AsRawFd::as_raw_fd(l)
            }
            _ => unreachable!("one listener is bound"),
        };
        while !self.stop.load(Ordering::Relaxed) && max_connections.is_none_or(|m| handled < m) {
            if !poll_readable(fd, Duration::from_millis(200)).unwrap_or(false) {
                continue;
            }
            let accepted: io::Result<(Box<dyn Conn>, String, Option<IpAddr>)> = match (&unix, &tcp)
            {
                (Some((l, _)), _) => l.accept().and_then(|(s, _)| {
                    s.set_nonblocking(false)?;
                    let n = self.next_conn.fetch_add(1, Ordering::Relaxed);
                    Ok((Box::new(s) as Box<dyn Conn>, format!("unix#{n}"), None))
                }),
                (_, Some(l)) => l.accept().and_then(|(s, a)| {
                    s.set_nonblocking(false)?;
                    let _ = s.set_nodelay(true);
                    Ok((
                        Box::new(s) as Box<dyn Conn>,
                        format!("tcp:{a}"),
                        Some(a.ip()),
                    ))
                }),
                _ => unreachable!("one listener is bound"),
            };
            let (conn, peer, ip) = match accepted {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    eprintln!("broker: accept: {e}");
                    // EMFILE and friends: do not spin.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            handled += 1;
            let accepted_at = Instant::now();
            let place = match self.take_place(ip) {
                Ok(p) => p,
                Err(why) => {
                    self.note_full(&peer, &why);
                    drop(conn);
                    continue;
                }
            };
            let me = Arc::clone(&self);
            threads.retain(|t| !t.is_finished());
            threads.push(std::thread::spawn(move || {
                let mut conn = conn;
                if place == Place::Wait && !me.wait_for_place(ip, accepted_at) {
                    if me.verbose {
                        eprintln!("broker: {peer}: no place before its deadline; closed");
                    }
                    return;
                }
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    me.handle_from(conn.as_mut(), &peer, accepted_at)
                }));
                if r.is_err() {
                    eprintln!("broker: {peer}: internal error (panic) — connection dropped");
                }
                me.give_place(ip);
            }));
        }
        let stopping = self.stop.load(Ordering::Relaxed);
        let in_flight = threads.iter().filter(|t| !t.is_finished()).count();
        if stopping {
            eprintln!("broker: stopping: no new connections; {in_flight} connection(s) finishing");
        }
        for t in threads {
            let _ = t.join();
        }
        if let Some((l, path)) = unix {
            drop(l);
            let _ = fs::remove_file(&path);
        }
        if stopping {
            eprintln!("broker: stopped");
        }
        Ok(())
    }

    /// Takes a place (or a place in the queue) for a new connection from `ip` (TCP),
    /// or says which limit is full.
    fn take_place(&self, ip: Option<IpAddr>) -> Result<Place, String> {
        let policy = self.policy();
        let mut a = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let place = if a.total < policy.max_concurrent {
            Place::Now
        } else if a.waiting < policy.max_concurrent {
            Place::Wait
        } else {
            return Err(format!(
                "{} connections in service and {} waiting (max_concurrent)",
                a.total, a.waiting
            ));
        };
        if let Some(ip) = ip {
            let n = a.per_peer.entry(ip).or_insert(0);
            if *n >= policy.max_per_peer {
                return Err(format!("{n} connections from {ip} (max_per_peer)"));
            }
            *n += 1;
        }
        match place {
            Place::Now => a.total += 1,
            Place::Wait => a.waiting += 1,
        }
        Ok(place)
    }

    /// Waits for a place in service for a queued connection accepted at `accepted_at`,
    /// until its READY deadline or until serving stops; `false` (and its queue place
    /// given back) when none came.
    fn wait_for_place(&self, ip: Option<IpAddr>, accepted_at: Instant) -> bool {
        let until = accepted_at + Duration::from_secs(self.policy().idle_timeout_s);
        let mut a = self.active.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if a.total < self.policy().max_concurrent {
                a.waiting -= 1;
                a.total += 1;
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stop.load(Ordering::Relaxed) {
                a.waiting -= 1;
                release_peer(&mut a, ip);
                return false;
            }
            a = self
                .slot_freed
                .wait_timeout(a, left.min(Duration::from_millis(200)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn give_place(&self, ip: Option<IpAddr>) {
        let mut a = self.active.lock().unwrap_or_else(|e| e.into_inner());
        a.total = a.total.saturating_sub(1);
        release_peer(&mut a, ip);
        drop(a);
        self.slot_freed.notify_one();
    }

    /// Says (at most once a second) that a connection was closed for a full limit.
    fn note_full(&self, peer: &str, why: &str) {
        let mut last = self
            .last_full_note
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *last = Some(Instant::now());
            eprintln!(
                "broker: {peer}: closed at once: {why} (further such lines held back for 1 s)"
            );
        }
    }

    /// Runs one connection to its end and records the decision. Returns the outcome,
    /// or `None` when the peer left before sending a Hello (nothing to decide).
    pub fn handle(&self, conn: &mut dyn Conn, peer: &str) -> Option<Outcome> {
        self.handle_from(conn, peer, Instant::now())
    }

    /// [`Broker::handle`] for a connection accepted at `accepted_at`: the whole
    /// connection ends by `accepted_at` + [`connection_budget`].
    fn handle_from(
        &self,
        conn: &mut dyn Conn,
        peer: &str,
        accepted_at: Instant,
    ) -> Option<Outcome> {
        // A QEMU chardev connects when the VM starts; the guest speaks (READY) once it
        // is up. The wait for it ends at the idle timeout, or at once when the broker
        // stops; the whole connection ends at its budget.
        let first = self.policy();
        let end_of_connection = accepted_at + connection_budget(&first);
        let idle = accepted_at + Duration::from_secs(first.idle_timeout_s);
        drop(first);
        let ready = loop {
            if self.stop.load(Ordering::Relaxed) {
                break false;
            }
            let left = idle.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            match poll_readable(conn.fd(), left.min(Duration::from_millis(200))) {
                Ok(true) => break true,
                Ok(false) => {}
                Err(_) => break false,
            }
        };
        let said_ready = ready && matches!(read_msg(conn, READY.len(), idle), Ok(m) if m == READY);
        if !said_ready {
            if self.verbose {
                eprintln!("broker: {peer}: closed before a READY");
            }
            return None;
        }
        // The handshake runs to its end under the policy in force when it starts.
        let policy = self.policy();
        let start = Instant::now();
        let deadline =
            (start + Duration::from_secs(policy.handshake_timeout_s)).min(end_of_connection);
        let mut rng = OsRng.unwrap_err();
        let mut challenge = [0u8; CHALLENGE_MAX_LEN];
        let (responder, clen) = match Responder::start(&mut rng, &mut challenge) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("broker: {peer}: cannot start a handshake: {e}");
                return None;
            }
        };
        if write_msg(conn, &challenge[..clen], deadline).is_err() {
            return None;
        }
        let hello = match read_msg(conn, HELLO_MAX_LEN, deadline) {
            Ok(h) => h,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return None,
            Err(e) => {
                let (reason, what) = match e.kind() {
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => (
                        RejectReason::Timeout,
                        "no Hello before the deadline".to_string(),
                    ),
                    io::ErrorKind::InvalidData => (RejectReason::Malformed, format!("Hello: {e}")),
                    _ => (RejectReason::Malformed, format!("reading Hello: {e}")),
                };
                return Some(self.finish_refusal(
                    conn,
                    peer,
                    &[],
                    refuse(reason, what),
                    Duration::ZERO,
                    deadline,
                ));
            }
        };
        let decided_at = Instant::now();
        let hello_hash = hash::sha3_256(&[&hello]);
        let verify = match responder.handle_hello(&hello) {
            Ok(v) => v,
            Err(e) => {
                return Some(self.finish_refusal(
                    conn,
                    peer,
                    &hello_hash,
                    refuse(RejectReason::Malformed, format!("Hello: {e}")),
                    decided_at.elapsed(),
                    deadline,
                ));
            }
        };
        let decision = self.decide(
            &policy,
            verify.evidence().platform,
            verify.evidence().data.0,
            verify.binding(),
        );
        let (rule_name, model, gpu_note, insecure, secrets) = match decision {
            Ok(x) => x,
            Err(r) => {
                return Some(self.finish_refusal(
                    conn,
                    peer,
                    &hello_hash,
                    r,
                    decided_at.elapsed(),
                    deadline,
                ));
            }
        };
        let names: Vec<String> = secrets.iter().map(|(n, _)| n.clone()).collect();
        let grants: Vec<Grant<'_>> = secrets
            .iter()
            .zip(1u32..)
            .map(|((n, s), stream)| Grant {
                stream,
                name: n.as_str(),
                // Secrets are at most MAX_SECRET_LEN (1 MiB), checked when read.
                len: u32::try_from(s.len()).unwrap_or(u32::MAX),
            })
            .collect();
        let mut accept = Zeroizing::new(vec![0u8; ACCEPT_MAX_LEN]);
        let (keys, alen) = match verify.accept(&self.key, &grants, &mut rng, &mut accept) {
            Ok(x) => x,
            Err(e) => {
                return Some(self.finish_refusal(
                    conn,
                    peer,
                    &hello_hash,
                    refuse(RejectReason::Internal, format!("building Accept: {e}")),
                    decided_at.elapsed(),
                    deadline,
                ));
            }
        };
        let decision_time = decided_at.elapsed();
        if self.keep_decision_times {
            let mut t = self
                .decision_times
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if t.len() < 1_000_000 {
                t.push(decision_time);
            }
        }
        let reason = format!(
            "rule `{rule_name}` admits {model}{gpu_note}: released {}{insecure}",
            names.join(", ")
        );
        // The record is durable before any secret leaves.
        if let Err(e) = self.record(Decision::Allow, &reason, &hello_hash, peer) {
            eprintln!("broker: {peer}: audit log: {e:#}; not releasing anything");
            return Some(Outcome {
                decision: Decision::Deny,
                reason: "audit log unavailable".into(),
                decision_time,
            });
        }
        let now = now_unix();
        let mut session: Session<AwsLcAesGcm> = Session::new(keys, Limits::default(), now);
        let sent = (|| -> Result<()> {
            write_msg(conn, &accept[..alen], deadline)?;
            for ((name, secret), stream) in secrets.iter().zip(1u32..) {
                let meta = TensorMetadata::new(0, name, DType::Bytes, &[secret.len() as u64])?;
                let mut frame = Zeroizing::new(vec![0u8; FRAME_HEADER_MAX_LEN + secret.len() + 16]);
                let n = session
                    .tx
                    .seal_chunk(now, stream, &meta, 0, secret, &mut frame)?;
                write_msg(conn, &frame[..n], deadline)?;
            }
            Ok(())
        })();
        if sent.is_ok() {
            linger(conn, deadline);
        }
        if self.verbose || sent.is_err() {
            eprintln!(
                "broker: {peer}: ACCEPT {reason} (decision {:.2} ms, total {:.2} ms){}",
                decision_time.as_secs_f64() * 1e3,
                start.elapsed().as_secs_f64() * 1e3,
                match &sent {
                    Ok(()) => String::new(),
                    Err(e) => format!("; sending failed: {e:#}"),
                }
            );
        }
        Some(Outcome {
            decision: Decision::Allow,
            reason,
            decision_time,
        })
    }

    /// Evidence, claims and policy → the matching rule, the model, what the GPU
    /// check found and the rule's insecure settings (for the log), and its secrets.
    #[allow(clippy::type_complexity)]
    fn decide(
        &self,
        policy: &Policy,
        platform: Platform,
        data: &[u8],
        binding_value: &BindingValue,
    ) -> Result<
        (
            String,
            String,
            String,
            String,
            Vec<(String, Zeroizing<Vec<u8>>)>,
        ),
        Refusal,
    > {
        let binding = binding_value.0.as_slice();
        let bundle = EvidenceBundle::decode(data)
            .map_err(|e| refuse(RejectReason::Evidence, format!("evidence bundle: {e}")))?;
        if platform == Platform::InsecureNone && !ct_eq(bundle.tee.0, binding) {
            // No report to verify: the one check is that the guest bound this very
            // challenge and key (a Hello from another connection fails here).
            return Err(refuse(
                RejectReason::Replay,
                "evidence is not bound to this challenge (replayed or relayed Hello)",
            ));
        }
        let c = bundle.claims;
        // The claimed name and revision are the peer's words: printed inert.
        let model = format!(
            "{}@{}:{}",
            untrusted(c.model_name),
            untrusted(c.model_revision),
            hex::encode(c.model_root_hash)
        );
        let rule = policy
            .find(platform, c.model_name, c.model_revision, &c.model_root_hash)
            .ok_or_else(|| {
                refuse(
                    RejectReason::Policy,
                    format!(
                        "no rule admits platform {} with model {model}",
                        platform.name()
                    ),
                )
            })?;
        if let Some(tee) = &rule.tee {
            let kind = if platform == Platform::Tdx {
                TeePlatform::Tdx
            } else {
                TeePlatform::Snp
            };
            let mut expected = [0u8; 64];
            expected.copy_from_slice(binding);
            let v = pqcc_verify::tee::verify(
                kind,
                bundle.tee.0,
                &tee.policy,
                &tee.collateral,
                &expected,
                now_unix(),
            )
            .map_err(|e| {
                let reason = match e {
                    TeeError::ReportDataMismatch => RejectReason::Replay,
                    _ => RejectReason::Evidence,
                };
                refuse(reason, format!("{} evidence: {e}", platform.name()))
            })?;
            if self.verbose {
                eprintln!(
                    "broker: {} evidence verified, TCB {:?}",
                    platform.name(),
                    v.tcb_status
                );
            }
        }
        let gpu_note = match (rule.gpu, bundle.gpu, &rule.nvidia) {
            (GpuRequirement::None, _, _) => String::new(),
            (GpuRequirement::Required, None, _) => {
                return Err(refuse(
                    RejectReason::Policy,
                    format!("rule `{}` requires GPU evidence; none was sent", rule.name),
                ));
            }
            (GpuRequirement::Required, Some(_), None) => {
                return Err(refuse(
                    RejectReason::Internal,
                    format!("rule `{}` has no [rule.nvidia] table", rule.name),
                ));
            }
            (GpuRequirement::Required, Some(list), Some(nv)) => {
                self.verify_gpus(nv, list.0, &binding_value.gpu_nonce())?
            }
        };
        let mut secrets = Vec::with_capacity(rule.secrets.len());
        for name in &rule.secrets {
            let bytes = self
                .secret(policy, name)
                .map_err(|e| refuse(RejectReason::Internal, format!("secret `{name}`: {e:#}")))?;
            secrets.push((name.clone(), bytes));
        }
        let insecure = insecure_note(&rule.insecure);
        Ok((rule.name.clone(), model, gpu_note, insecure, secrets))
    }

    /// Verifies every GPU's evidence in a bundle's GPU list against the rule's
    /// `[rule.nvidia]`, with the handshake's GPU nonce (`expected_nonce`). Returns a
    /// note for the audit log, or a refusal naming the GPU and the failed checks.
    fn verify_gpus(
        &self,
        nv: &NvidiaRule,
        list: &[u8],
        expected_nonce: &[u8; 32],
    ) -> Result<String, Refusal> {
        let list = GpuEvidenceList::decode(list)
            .map_err(|e| refuse(RejectReason::Evidence, format!("GPU evidence list: {e}")))?;
        let nonce = nv.insecure_nonce.as_ref().unwrap_or(expected_nonce);
        let now = nv.insecure_now.unwrap_or_else(now_unix);
        let mut versions = Vec::with_capacity(list.blobs.len());
        for (i, blob) in list.blobs.iter().enumerate() {
            let ev = GpuEvidence::from_blob(blob.0)
                .map_err(|e| refuse(RejectReason::Evidence, format!("GPU {i} evidence: {e}")))?;
            let report = self
                .gpu_verifier
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .verify(
                    &ev,
                    &nv.rims,
                    &nv.policy,
                    nonce,
                    now,
                    nv.collateral.as_ref(),
                );
            if !report.all_passed() {
                let failed: Vec<String> = report
                    .checks
                    .iter()
                    .filter(|c| c.outcome == CheckOutcome::Fail)
                    .map(|c| format!("{} ({})", c.name, c.detail))
                    .collect();
                return Err(refuse(
                    RejectReason::Evidence,
                    format!("GPU {i} failed nvidia checks: {}", failed.join("; ")),
                ));
            }
            versions.push(format!(
                "driver {}, vbios {}",
                untrusted(report.driver_version.as_deref().unwrap_or("?")),
                untrusted(report.vbios_version.as_deref().unwrap_or("?"))
            ));
        }
        Ok(format!(
            " with {} GPU(s) verified ({})",
            versions.len(),
            versions.join("; "),
        ))
    }

    fn secret(&self, policy: &Policy, name: &str) -> Result<Zeroizing<Vec<u8>>> {
        let src = policy
            .secrets
            .get(name)
            .with_context(|| format!("`{name}` is not defined"))?;
        let (path, generate) = match src {
            SecretSource::File(p) => (p.clone(), None),
            SecretSource::Generate(n) => (self.state_dir.join(format!("{name}.key")), Some(*n)),
        };
        if let Some(n) = generate {
            let _g = self.generate_lock.lock().unwrap_or_else(|e| e.into_inner());
            if fs::symlink_metadata(&path).is_err() {
                let mut k = Zeroizing::new(vec![0u8; n]);
                getrandom::fill(&mut k).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
                crate::keys::write_file_atomic(&path, &k, 0o600, false)?;
            }
        }
        let buf = read_secret_file(&path)?;
        if buf.len() > MAX_CHUNK_LEN as usize {
            bail!("{} is over {MAX_CHUNK_LEN} bytes", path.display());
        }
        if let Some(n) = generate
            && buf.len() != n
        {
            bail!(
                "{} holds {} bytes, the policy says generate = {n}",
                path.display(),
                buf.len()
            );
        }
        Ok(buf)
    }

    fn record(&self, decision: Decision, reason: &str, hello: &[u8], peer: &str) -> Result<()> {
        let mut artifact = [0u8; 32];
        if hello.len() == 32 {
            artifact.copy_from_slice(hello);
        }
        let rec = Record {
            time: now_unix(),
            kind: "handshake".into(),
            decision,
            reason: reason.into(),
            signer: None,
            artifact_sha3_256: artifact,
            actor: format!("broker {peer}"),
        };
        self.audit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .append(&rec)?;
        Ok(())
    }

    fn finish_refusal(
        &self,
        conn: &mut dyn Conn,
        peer: &str,
        hello_hash: &[u8],
        r: Refusal,
        decision_time: Duration,
        deadline: Instant,
    ) -> Outcome {
        let reason = format!("{}: {}", reject_code(r.reason), r.detail);
        if let Err(e) = self.record(Decision::Deny, &reason, hello_hash, peer) {
            eprintln!("broker: {peer}: audit log: {e:#}");
        }
        eprintln!("broker: {peer}: REJECT {reason}");
        let mut out = [0u8; REJECT_MAX_LEN];
        if let Ok(n) = pqcc_core::handshake::write_reject(r.reason, &mut out) {
            // A late guest gets a second to read the refusal.
            let late = deadline.max(Instant::now() + Duration::from_secs(1));
            if write_msg(conn, &out[..n], late).is_ok() {
                linger(conn, late);
            }
        }
        Outcome {
            decision: Decision::Deny,
            reason,
            decision_time,
        }
    }
}

fn release_peer(a: &mut Active, ip: Option<IpAddr>) {
    if let Some(ip) = ip
        && let Some(n) = a.per_peer.get_mut(&ip)
    {
        *n = n.saturating_sub(1);
        if *n == 0 {
            a.per_peer.remove(&ip);
        }
    }
}

/// `; INSECURE: a, b` for the audit record of a release a rule with insecure settings
/// allowed, or nothing.
fn insecure_note(insecure: &[String]) -> String {
    if insecure.is_empty() {
        String::new()
    } else {
        format!("; INSECURE: {}", insecure.join(", "))
    }
}

/// Binds the Unix socket at `path`, replacing a stale one: a socket file nobody
/// accepts on (a broker that was killed). A live socket, or a path that is not a
/// socket, is an error.
fn bind_unix(path: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    match fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => bail!(
                    "unix socket {} is in use: another broker listens on it",
                    path.display()
                ),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    eprintln!(
                        "broker: replacing stale socket {} (nobody listens on it)",
                        path.display()
                    );
                    fs::remove_file(path)
                        .with_context(|| format!("removing stale socket {}", path.display()))?;
                }
                Err(e) => bail!("unix socket {}: {e}", path.display()),
            }
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(_) => {}
    }
    UnixListener::bind(path).with_context(|| format!("binding unix socket {}", path.display()))
}

/// After the last message: wait (at most until `deadline`, and at most 5 s) for the
/// guest's DONE or for it to close, so the answer is not lost behind a hang-up.
fn linger(conn: &mut dyn Conn, deadline: Instant) {
    let until = deadline.min(Instant::now() + Duration::from_secs(5));
    let _ = read_msg(conn, DONE.len(), until);
}

/// The short name of a reject reason, as the audit log and the guest's FATAL line
/// print it.
pub fn reject_code(r: RejectReason) -> &'static str {
    match r {
        RejectReason::Evidence => "evidence",
        RejectReason::Policy => "policy",
        RejectReason::Replay => "replay",
        RejectReason::Malformed => "malformed",
        RejectReason::Version => "version",
        RejectReason::Timeout => "timeout",
        RejectReason::Internal => "internal",
        _ => "other",
    }
}
