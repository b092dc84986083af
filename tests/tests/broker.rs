//! The key broker end to end on loopback: the real `pqcc broker serve` process and
//! pqcc-init's own handshake code (the guest side that runs as PID 1), over a Unix
//! socket. QEMU boots with the broker are in `broker_boot.rs`.

#![allow(clippy::cast_possible_truncation)] // test data sizes and random bytes

mod common;
#[path = "../../guest-init/tests/fake_nvml/mod.rs"]
mod fake_nvml;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{TempDir, pqcc, run_ok};
use pqcc_core::bundle::{Claims, EvidenceBundle};
use pqcc_core::handshake::Initiator;
use pqcc_core::wire::{self, Evidence, Message, Platform, RejectReason};
use pqcc_init::broker::{FdLink, Released, handshake};
use pqcc_init::platform::InsecureNone;

const ROOT: [u8; 32] = [0x42; 32];
const MODEL_KEY: &[u8] = b"the model owner's data-encryption key, 48 bytes.";

struct Broker {
    child: Child,
    dir: TempDir,
    sock: PathBuf,
    pk: Vec<u8>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn policy(extra_rule: &str, timeout_s: u64) -> String {
    format!(
        r#"handshake_timeout_s = {timeout_s}
max_concurrent = 8

[secrets.model-key]
file = "model.key"
[secrets.session-dek]
generate = 32

[[rule]]
name = "tiny"
platform = "none"
insecure_no_tee = true
models = ["tiny@r1:{root}"]
secrets = ["model-key", "session-dek"]
{extra_rule}
"#,
        root = hex::encode(ROOT)
    )
}

/// A fresh directory with a broker key, the model key and `policy_text` as
/// broker.toml (the secret and the policy mode 0600, as the broker requires).
fn broker_dir(tag: &str, policy_text: &str) -> TempDir {
    let dir = TempDir::new(tag);
    let d = dir.path();
    run_ok(
        pqcc()
            .args(["keygen", "--alg", "ml-dsa-65", "--out"])
            .arg(d.join("broker.key")),
    );
    for (name, bytes) in [
        ("model.key", MODEL_KEY),
        ("broker.toml", policy_text.as_bytes()),
    ] {
        fs::write(d.join(name), bytes).unwrap();
        fs::set_permissions(d.join(name), fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir
}

/// `pqcc broker serve` in `d` on `listen`, with `--allow-insecure` (the test policies
/// have a `none` rule).
fn serve_cmd(d: &Path, listen: &str) -> std::process::Command {
    let mut c = pqcc();
    c.args(["broker", "serve", "--allow-insecure", "--key"])
        .arg(d.join("broker.key"))
        .arg("--policy")
        .arg(d.join("broker.toml"))
        .arg("--listen")
        .arg(listen)
        .arg("--audit-log")
        .arg(d.join("audit.log"));
    c
}

fn start(tag: &str, policy_text: &str) -> Broker {
    let dir = broker_dir(tag, policy_text);
    let d = dir.path();
    let sock = d.join("broker.sock");
    let child = serve_cmd(d, &format!("unix:{}", sock.display()))
        .stdout(Stdio::null())
        .stderr(fs::File::create(d.join("broker.err")).unwrap())
        .spawn()
        .unwrap();
    wait_for_socket(&sock);
    let pk = pqcc_tools::keys::read_public_key(&d.join("broker.key.pub"))
        .unwrap()
        .as_bytes()
        .to_vec();
    Broker {
        child,
        dir,
        sock,
        pk,
    }
}

fn claims(root: &[u8; 32]) -> Claims<'_> {
    Claims {
        model_name: "tiny",
        model_revision: "r1",
        model_root_hash: *root,
    }
}

fn guest(b: &Broker, pk: &[u8], root: &[u8; 32]) -> Result<Released, String> {
    let s = UnixStream::connect(&b.sock).unwrap();
    let mut link = FdLink(s);
    handshake(
        &mut link,
        pk,
        claims(root),
        &mut InsecureNone,
        Instant::now() + Duration::from_secs(20),
        Duration::from_secs(20),
    )
}

/// The audit log's records as (decision, reason).
fn audit(b: &Broker) -> Vec<(String, String)> {
    let text = fs::read_to_string(b.dir.path().join("audit.log")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["decision"].as_str().unwrap().to_string(),
                v["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn wait_records(b: &Broker, n: usize) -> Vec<(String, String)> {
    let t = Instant::now();
    loop {
        let a = audit(b);
        if a.len() >= n || t.elapsed() > Duration::from_secs(20) {
            return a;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn audit_intact(b: &Broker) {
    run_ok(
        pqcc()
            .args(["audit", "verify"])
            .arg(b.dir.path().join("audit.log")),
    );
}

#[test]
fn happy_path_releases_the_rules_secrets() {
    let b = start("broker-happy", &policy("", 10));
    let r = guest(&b, &b.pk, &ROOT).expect("handshake");
    let names: Vec<&str> = r.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["model-key", "session-dek"]);
    assert_eq!(&r.secrets[0].bytes[..], MODEL_KEY);
    assert_eq!(r.secrets[1].bytes.len(), 32);
    // Debug never shows the bytes.
    assert!(!format!("{:?}", r.secrets[0]).contains("model owner"));
    // The generated key is kept: the next guest gets the same one.
    let again = guest(&b, &b.pk, &ROOT).expect("second handshake");
    assert_eq!(again.secrets[1].bytes, r.secrets[1].bytes);
    assert_ne!(again.session_id, r.session_id);
    let state = b.dir.path().join("broker-state/session-dek.key");
    let mode = fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let a = wait_records(&b, 2);
    assert_eq!(a.len(), 2);
    for (d, reason) in &a {
        assert_eq!(d, "allow");
        assert!(
            reason.contains("rule `tiny`") && reason.contains("model-key"),
            "{reason}"
        );
        assert!(
            !reason.contains("model owner"),
            "secret in the log: {reason}"
        );
    }
    audit_intact(&b);
}

#[test]
fn installs_secrets_as_0400_files() {
    let b = start("broker-install", &policy("", 10));
    let r = guest(&b, &b.pk, &ROOT).unwrap();
    let dir = TempDir::new("secrets-out");
    let target = dir.path().join("secrets");
    pqcc_init::broker::install(r.secrets, &target).unwrap();
    let f = target.join("model-key");
    assert_eq!(
        fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o400
    );
    assert_eq!(
        fs::metadata(&target).unwrap().permissions().mode() & 0o777,
        0o500
    );
    assert_eq!(fs::read(&f).unwrap(), MODEL_KEY);
    fs::set_permissions(&target, fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn wrong_model_is_refused_by_policy() {
    let b = start("broker-model", &policy("", 10));
    let e = guest(&b, &b.pk, &[0x43; 32]).unwrap_err();
    assert!(e.contains("broker refused: refused by policy"), "{e}");
    let a = wait_records(&b, 1);
    assert_eq!(a[0].0, "deny");
    assert!(
        a[0].1
            .starts_with("policy: no rule admits platform none with model tiny@r1:4343"),
        "{}",
        a[0].1
    );
    audit_intact(&b);
}

/// Sends SIGHUP to the broker and waits for its audit log to reach `n` records.
fn sighup(b: &Broker, n: usize) -> Vec<(String, String)> {
    run_ok(std::process::Command::new("kill").args(["-HUP", &b.child.id().to_string()]));
    let a = wait_records(b, n);
    assert_eq!(a.len(), n, "no policy-reload record after SIGHUP: {a:?}");
    a
}

#[test]
fn sighup_reloads_the_policy_and_a_bad_one_is_refused() {
    let b = start("broker-reload", &policy("", 10));
    let other = [0x43; 32];
    guest(&b, &b.pk, &other).unwrap_err();
    // The operator admits the other model's revision and reloads.
    let admitting = policy("", 10).replace(
        &format!("models = [\"tiny@r1:{}\"]", hex::encode(ROOT)),
        &format!("models = [\"tiny@r1:{}\"]", hex::encode(other)),
    );
    assert_ne!(admitting, policy("", 10));
    fs::write(b.dir.path().join("broker.toml"), &admitting).unwrap();
    let a = sighup(&b, 2);
    assert_eq!(a[1].0, "allow");
    assert!(a[1].1.contains("loaded: 1 rule(s)"), "{}", a[1].1);
    guest(&b, &b.pk, &other).expect("admitted after the reload");
    guest(&b, &b.pk, &ROOT).unwrap_err();
    // A policy that does not load is refused; the one in force stays.
    fs::write(
        b.dir.path().join("broker.toml"),
        "max_concurrent = \"many\"\n",
    )
    .unwrap();
    let a = sighup(&b, 5);
    assert_eq!(a[4].0, "deny");
    assert!(
        a[4].1.contains("refused, the previous one stays in force")
            && a[4].1.contains("expected usize"),
        "{}",
        a[4].1
    );
    guest(&b, &b.pk, &other).expect("the previous policy still admits it");
    let text = fs::read_to_string(b.dir.path().join("audit.log")).unwrap();
    let kinds: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "\"handshake\"",
            "\"policy-reload\"",
            "\"handshake\"",
            "\"handshake\"",
            "\"policy-reload\"",
            "\"handshake\""
        ]
    );
    audit_intact(&b);
}

#[test]
fn a_raised_max_concurrent_serves_a_waiting_connection_at_once() {
    let one = policy("", 30).replace("max_concurrent = 8", "max_concurrent = 1");
    assert_ne!(one, policy("", 30));
    let b = start("broker-raise", &one);
    // The only place is taken by a connection that got its Challenge and sends nothing
    // (it would hold the place for the 30 s handshake timeout).
    let (_first, ch) = connect(&b);
    assert!(matches!(
        wire::decode_message(&ch),
        Ok(Message::Challenge(_))
    ));
    let mut second = UnixStream::connect(&b.sock).unwrap();
    write_msg(&mut second, pqcc_core::bundle::READY);
    second
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut p = [0u8; 4];
    let e = second.read_exact(&mut p).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "the second connection was served beyond max_concurrent = 1: {e}"
    );
    // Raising the limit serves it while the first still holds its place.
    fs::write(
        b.dir.path().join("broker.toml"),
        policy("", 30).replace("max_concurrent = 8", "max_concurrent = 2"),
    )
    .unwrap();
    sighup(&b, 1);
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t = Instant::now();
    let ch = read_msg(&mut second);
    assert!(
        matches!(wire::decode_message(&ch), Ok(Message::Challenge(_))),
        "expected a Challenge after the reload"
    );
    println!(
        "[broker] raised max_concurrent: waiting connection served {} ms after the reload",
        t.elapsed().as_millis()
    );
}

#[test]
fn a_broker_key_other_than_the_configured_one_is_refused() {
    let b = start("broker-key", &policy("", 10));
    let other = start("broker-key-other", &policy("", 10));
    // The guest trusts `other`'s key but reaches `b`.
    let e = guest(&b, &other.pk, &ROOT).unwrap_err();
    assert!(e.contains("not signed by the configured broker key"), "{e}");
}

/// Reads a length-prefixed message (test-side fake guest).
fn read_msg(s: &mut UnixStream) -> Vec<u8> {
    let mut p = [0u8; 4];
    s.read_exact(&mut p).unwrap();
    let mut m = vec![0u8; u32::from_be_bytes(p) as usize];
    s.read_exact(&mut m).unwrap();
    m
}

fn write_msg(s: &mut UnixStream, m: &[u8]) {
    s.write_all(&(m.len() as u32).to_be_bytes()).unwrap();
    s.write_all(m).unwrap();
}

/// Connects as a (fake, test-side) guest: READY, then the broker's Challenge.
fn connect(b: &Broker) -> (UnixStream, Vec<u8>) {
    let mut s = UnixStream::connect(&b.sock).unwrap();
    write_msg(&mut s, pqcc_core::bundle::READY);
    let ch = read_msg(&mut s);
    (s, ch)
}

fn reject_of(m: &[u8]) -> Option<RejectReason> {
    match wire::decode_message(m) {
        Ok(Message::Reject(r)) => Some(r.reason),
        _ => None,
    }
}

/// A Hello for the Challenge `ch`, built by hand (as a relaying attacker would): the
/// bundle of `claims(&ROOT)` with the TEE evidence `tee(binding)` (the binding value
/// itself when `None`) and `gpu` as its GPU list, sent as `platform`.
fn hello_with(
    ch: &[u8],
    pk: &[u8],
    platform: Platform,
    tee: Option<&[u8]>,
    gpu: Option<&[u8]>,
) -> Vec<u8> {
    let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
    let a = Initiator::new(pk)
        .unwrap()
        .handle_challenge(ch, &mut rng)
        .unwrap();
    let binding = *a.binding();
    let mut data = vec![0u8; wire::MAX_EVIDENCE_LEN];
    let n = EvidenceBundle::new(claims(&ROOT), tee.unwrap_or(&binding.0), gpu)
        .encode(&mut data)
        .unwrap();
    let mut hello = vec![0u8; wire::HELLO_MAX_LEN];
    let (_, hlen) = a
        .write_hello(
            Evidence {
                platform,
                data: wire::Bytes(&data[..n]),
            },
            &mut hello,
        )
        .unwrap();
    hello.truncate(hlen);
    hello
}

/// A Hello for the Challenge `ch`, built by hand (as a relaying attacker would).
fn hello_for(ch: &[u8], pk: &[u8]) -> Vec<u8> {
    hello_with(ch, pk, Platform::InsecureNone, None, None)
}

#[test]
fn a_replayed_hello_is_refused() {
    let b = start("broker-replay", &policy("", 10));
    let (mut s1, ch1) = connect(&b);
    let hello = hello_for(&ch1, &b.pk);
    write_msg(&mut s1, &hello);
    let accept = read_msg(&mut s1);
    assert!(matches!(
        wire::decode_message(&accept),
        Ok(Message::Accept(_))
    ));
    // The same Hello on a new connection (a new challenge): refused.
    let (mut s2, _ch2) = connect(&b);
    write_msg(&mut s2, &hello);
    assert_eq!(reject_of(&read_msg(&mut s2)), Some(RejectReason::Replay));
    let a = wait_records(&b, 2);
    assert_eq!(a[0].0, "allow");
    assert_eq!(a[1].0, "deny");
    assert!(a[1].1.starts_with("replay: "), "{}", a[1].1);
}

#[test]
fn a_slow_guest_is_dropped() {
    let b = start("broker-timeout", &policy("", 1));
    let (mut s, _ch) = connect(&b);
    let t = Instant::now();
    let m = read_msg(&mut s);
    assert_eq!(reject_of(&m), Some(RejectReason::Timeout));
    assert!(t.elapsed() < Duration::from_secs(5));
    let a = wait_records(&b, 1);
    assert!(a[0].1.starts_with("timeout: "), "{}", a[0].1);
}

/// xorshift64*.
fn next(x: &mut u64) -> u64 {
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn garbage_never_crashes_the_broker_nor_releases_anything() {
    let b = start("broker-garbage", &policy("", 2));
    let mut seed = 0x5eed_u64;
    const N: usize = 120;
    // A valid Hello for a challenge of its own connection, replayed below.
    let replayed = {
        let (_s, ch) = connect(&b);
        hello_for(&ch, &b.pk)
    };
    for i in 0..N {
        let (mut s, ch) = connect(&b);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = next(&mut seed);
        let msg: Vec<u8> = match i % 6 {
            // Random bytes of random length.
            0 => (0..(r % 4000) as usize + 1)
                .map(|_| next(&mut seed) as u8)
                .collect(),
            // A real Hello with one byte flipped.
            1 => {
                let mut h = hello_for(&ch, &b.pk);
                let k = (r as usize) % h.len();
                h[k] ^= 1 << (r % 8);
                h
            }
            // A real Hello cut short.
            2 => {
                let h = hello_for(&ch, &b.pk);
                h[..(r as usize) % h.len()].to_vec()
            }
            // A Hello for another challenge (replay).
            3 => replayed.clone(),
            // The wrong message type: the broker's own Challenge back.
            4 => ch.clone(),
            // A length prefix far over the maximum, then nothing.
            _ => {
                s.write_all(&u32::MAX.to_be_bytes()).unwrap();
                vec![]
            }
        };
        if !msg.is_empty() {
            let _ = s.write_all(&(msg.len() as u32).to_be_bytes());
            let _ = s.write_all(&msg);
        }
        // Closing our side ends the broker's wait for DONE.
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        // Whatever came back, it is not an Accept unless the flipped byte was
        // harmless — which a flipped Hello byte never is (the transcript changes).
        if rest.len() > 4 {
            assert!(
                !matches!(wire::decode_message(&rest[4..]), Ok(Message::Accept(_))),
                "iteration {i} got an Accept"
            );
        }
    }
    // Connections that never say READY, or say something else first, are closed
    // without a decision.
    for junk in [&b"pqcc/v1 ready!"[..], b"hello", b""] {
        let mut s = UnixStream::connect(&b.sock).unwrap();
        if !junk.is_empty() {
            write_msg(&mut s, junk);
        }
        drop(s);
    }
    // Still serving, and still right.
    let r = guest(&b, &b.pk, &ROOT).expect("handshake after the garbage");
    assert_eq!(&r.secrets[0].bytes[..], MODEL_KEY);
    let a = wait_records(&b, N + 2);
    let allows = a.iter().filter(|(d, _)| d == "allow").count();
    assert_eq!(allows, 1, "exactly the one real guest was admitted");
    audit_intact(&b);
}

#[test]
fn many_guests_at_once() {
    let b = start("broker-many", &policy("", 20));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let sock = b.sock.clone();
            let pk = b.pk.clone();
            std::thread::spawn(move || {
                let s = UnixStream::connect(&sock).unwrap();
                handshake(
                    &mut FdLink(s),
                    &pk,
                    claims(&ROOT),
                    &mut InsecureNone,
                    Instant::now() + Duration::from_secs(60),
                    Duration::from_secs(60),
                )
                .map(|r| r.secrets.len())
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), Ok(2));
    }
    assert_eq!(wait_records(&b, 16).len(), 16);
    audit_intact(&b);
}

fn write_private(p: &Path, text: &str) {
    fs::write(p, text).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o600)).unwrap();
}

/// `broker check` (exit 2 and the reason on refusal).
fn check(p: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = pqcc()
        .args(["broker", "check"])
        .args(args)
        .arg(p)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn policy_check_refuses_unsafe_policies() {
    let dir = broker_dir("broker-policy", &policy("", 10));
    let p = dir.path().join("broker.toml");
    write_private(&p, &policy("", 10).replace("insecure_no_tee = true\n", ""));
    let (code, _, err) = check(&p, &["--allow-insecure"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("insecure_no_tee = true"), "{err}");
    // Issue 29: a `none` rule is an insecure setting: refused unless allowed, then listed.
    write_private(&p, &policy("", 10));
    let (code, _, err) = check(&p, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("refused without --allow-insecure") && err.contains("rule `tiny`"),
        "{err}"
    );
    let (code, out, _) = check(&p, &["--allow-insecure"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("rule `tiny`: platform none"), "{out}");
    assert!(
        out.contains("rule `tiny`: INSECURE: platform \"none\""),
        "{out}"
    );
    // --json: the parsed rules, with "ok".
    let (code, out, _) = check(&p, &["--allow-insecure", "--json"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["rules"][0]["name"], "tiny");
    assert_eq!(v["rules"][0]["platform"], "none");
    assert_eq!(
        v["rules"][0]["models"][0],
        format!("tiny@r1:{}", hex::encode(ROOT))
    );
    assert_eq!(v["rules"][0]["secrets"][1], "session-dek");
    assert_eq!(v["secrets"]["session-dek"]["generate"], 32);
    assert_eq!(v["max_per_peer"], 8);
    let (code, out, _) = check(&p, &["--json"]);
    assert_eq!(code, Some(2));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("--allow-insecure"));
    // Values are checked when the policy loads, not at the first handshake: a missing
    // secret file, one others can read, a policy others can read.
    let key = dir.path().join("model.key");
    fs::rename(&key, dir.path().join("moved.key")).unwrap();
    let (code, _, err) = check(&p, &["--allow-insecure"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("secrets.model-key") && err.contains("model.key"),
        "{err}"
    );
    fs::rename(dir.path().join("moved.key"), &key).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = check(&p, &["--allow-insecure"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("mode 0644"), "{err}");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    let (code, _, err) = check(&p, &["--allow-insecure"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("broker policy") && err.contains("mode 0640"),
        "{err}"
    );
    // `broker serve` refuses the same policy without --allow-insecure, before binding.
    write_private(&p, &policy("", 10));
    let out = pqcc()
        .args(["broker", "serve", "--key"])
        .arg(dir.path().join("broker.key"))
        .arg("--policy")
        .arg(&p)
        .arg("--listen")
        .arg(format!("unix:{}", dir.path().join("s.sock").display()))
        .arg("--audit-log")
        .arg(dir.path().join("audit.log"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-insecure"));
    assert!(!dir.path().join("s.sock").exists());
}

/// Issue 29: a secret that a `none` rule releases is never also a TEE rule's, even with
/// --allow-insecure.
#[test]
fn a_secret_of_a_none_rule_is_never_released_by_a_tee_rule() {
    let tee_rule = format!(
        "[[rule]]\nname = \"prod\"\nplatform = \"sev-snp\"\nmodels = [\"tiny@r1:{}\"]\n\
         secrets = [\"model-key\"]\n[rule.tee]\nplatform = \"snp\"\n\
         snp = {{ min_tcb = {{ bootloader = 3, snp = 8, microcode = 115 }}, \
         measurements = [\"{}\"] }}\n",
        hex::encode(ROOT),
        "ab".repeat(48)
    );
    let text = format!("{}\n{tee_rule}", policy("", 10));
    let dir = broker_dir("broker-shared-secret", &text);
    let (code, _, err) = check(&dir.path().join("broker.toml"), &["--allow-insecure"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("secret `model-key`")
            && err.contains("rule `tiny`")
            && err.contains("rule `prod`")
            && err.contains("even with --allow-insecure"),
        "{err}"
    );
}

/// A genuine SEV-SNP report (AMD Milan, `../shared/data/sev-snp`) relayed into a
/// handshake: its signature and chain verify, but its report data is not this
/// handshake's binding value, so the broker refuses it as a replay.
#[test]
fn a_genuine_snp_report_not_bound_to_the_handshake_is_refused() {
    let data = common::shared_data().join("sev-snp");
    let text = format!(
        r#"[secrets.model-key]
file = "model.key"

[[rule]]
name = "snp"
platform = "sev-snp"
models = ["tiny@r1:{root}"]
secrets = ["model-key"]
snp_vcek = "{vcek}"
snp_chain = "{chain}"
[rule.tee]
platform = "snp"
insecure_any_measurement = true
[rule.tee.snp]
products = ["Milan"]
min_tcb = {{ bootloader = 3, snp = 8, microcode = 115 }}
"#,
        root = hex::encode(ROOT),
        vcek = data.join("vcek_milan.der").display(),
        chain = data.join("cert_chain_milan").display(),
    );
    let b = start("broker-snp", &text);
    let report = fs::read(data.join("report_milan.bin")).unwrap();
    let (mut s, ch) = connect(&b);
    write_msg(
        &mut s,
        &hello_with(&ch, &b.pk, Platform::SevSnp, Some(&report), None),
    );
    assert_eq!(reject_of(&read_msg(&mut s)), Some(RejectReason::Replay));
    let a = wait_records(&b, 1);
    assert_eq!(a[0].0, "deny");
    assert!(
        a[0].1.starts_with("replay: sev-snp evidence: "),
        "{}",
        a[0].1
    );
    // A TDX rule without its DCAP collateral does not load.
    let tdx = text
        .replace("sev-snp", "tdx")
        .replace("platform = \"snp\"", "platform = \"tdx\"");
    let dir = broker_dir("broker-tdx-policy", &tdx);
    let (code, _, err) = check(&dir.path().join("broker.toml"), &["--allow-insecure"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("tdx_collateral"), "{err}");
}

// ---- GPU rules (gpu = "required", [rule.nvidia]) with a fake NVML serving Set A ----

/// Set A's RIMs and the settings its recorded evidence needs (expired certificates,
/// no revocation data), plus `extra`.
fn gpu_rule(extra: &str) -> String {
    format!(
        "gpu = \"required\"\n[rule.nvidia]\nrims = [\"{}\", \"{}\"]\n\
         insecure_skip_revocation = true\ninsecure_now = {}\n{extra}",
        fake_nvml::set_a_path("Driver_RIM_test_no_gpu.swidtag"),
        fake_nvml::set_a_path("1010_0200_882_96005E0001_test_no_gpu.swidtag"),
        fake_nvml::SET_A_NOW,
    )
}

/// The guest's side with the GPU gate (pqcc-init's `attest_over`): the fake NVML
/// serving Set A, verified locally against Set A's own nonce (the insecure test
/// hook: no real GPU here signs the handshake's nonce).
fn gpu_guest(b: &Broker, nvml: &mut fake_nvml::FakeNvml) -> Result<Released, pqcc_init::Fatal> {
    let nonce = nvml.nonce();
    let check = pqcc_init::gpu_gate::LocalCheck {
        policy: pqcc_verify::nvidia::GpuPolicy {
            revocation: pqcc_verify::nvidia::RevocationPolicy::InsecureSkip,
            require_report_fwid: false,
        },
        rims: fake_nvml::set_a_rims(),
        collateral: None,
        now: fake_nvml::SET_A_NOW,
    };
    let cfg =
        pqcc_init::config::parse(include_str!("../../guest-init/tests/data/init.toml")).unwrap();
    let mut cfg = cfg;
    cfg.model.root_hash = ROOT;
    cfg.model.name = "tiny".into();
    cfg.model.revision = "r1".into();
    let mut link = FdLink(UnixStream::connect(&b.sock).unwrap());
    pqcc_init::attest_over(
        &mut link,
        &cfg,
        &b.pk,
        &mut InsecureNone,
        Some(pqcc_init::GpuGate {
            nvml,
            gpus: pqcc_init::gpu_gate::Gpus { count: 1 },
            check: &check,
            insecure_nonce_override: Some(nonce),
        }),
        Instant::now() + Duration::from_secs(20),
        Duration::from_secs(20),
    )
}

#[test]
fn gpu_rule_refuses_a_guest_without_gpu_evidence() {
    let b = start("broker-gpu-none", &policy(&gpu_rule(""), 10));
    let e = guest(&b, &b.pk, &ROOT).unwrap_err();
    assert!(e.contains("broker refused: refused by policy"), "{e}");
    let a = wait_records(&b, 1);
    assert_eq!(a[0].0, "deny");
    assert!(
        a[0].1.contains("requires GPU evidence; none was sent"),
        "{}",
        a[0].1
    );
    audit_intact(&b);
}

/// Set A is genuine, but its report signs a fixed nonce, not this handshake's: a
/// replayed GPU report. The broker recomputes the GPU nonce from the handshake and
/// refuses, naming the `nonce` check (and only it: time and revocation are set aside
/// for the recorded data). The CC ready state is never set.
#[test]
fn gpu_rule_refuses_a_report_for_another_nonce() {
    let b = start("broker-gpu-nonce", &policy(&gpu_rule(""), 10));
    let mut nvml = fake_nvml::FakeNvml::set_a();
    let f = gpu_guest(&b, &mut nvml).unwrap_err();
    assert_eq!(f.stage, pqcc_init::Stage::Attest);
    assert!(f.reason.contains("broker refused: evidence"), "{f}");
    assert_eq!(nvml.count_of("ready"), 0);
    let a = wait_records(&b, 1);
    assert_eq!(a[0].0, "deny");
    let reason = &a[0].1;
    assert!(
        reason.starts_with("evidence: GPU 0 failed nvidia checks: nonce ("),
        "{reason}"
    );
    assert!(!reason.contains("signature ("), "{reason}");
    audit_intact(&b);
}

/// The whole allow path: with the broker told (insecurely) to expect Set A's nonce,
/// the GPU evidence verifies at the broker, the secrets arrive, and the CC ready
/// state is set exactly once, after the Accept.
#[test]
fn gpu_rule_admits_verified_gpu_evidence_then_ready_is_set() {
    let nonce = fake_nvml::FakeNvml::set_a().nonce();
    let extra = format!("insecure_nonce = \"{}\"\n", hex::encode(nonce));
    let b = start("broker-gpu-ok", &policy(&gpu_rule(&extra), 10));
    let mut nvml = fake_nvml::FakeNvml::set_a();
    let r = gpu_guest(&b, &mut nvml).expect("GPU handshake");
    assert_eq!(&r.secrets[0].bytes[..], MODEL_KEY);
    assert_eq!(nvml.events(), ["report", "certs", "ready"]);
    let a = wait_records(&b, 1);
    assert_eq!(a[0].0, "allow");
    assert!(
        a[0].1
            .contains("admits tiny@r1:4242424242424242424242424242424242424242424242424242424242424242 with 1 GPU(s) verified (driver 545.00, vbios "),
        "{}",
        a[0].1
    );
    eprintln!("audit: {}", a[0].1);
    assert!(
        a[0].1.contains(
            "INSECURE: platform \"none\" (insecure_no_tee: no TEE evidence at all), \
             insecure_skip_revocation, insecure_now, insecure_nonce"
        ),
        "{}",
        a[0].1
    );
    audit_intact(&b);
    // `broker check` shows the insecure settings.
    let out = run_ok(
        pqcc()
            .args(["broker", "check", "--allow-insecure"])
            .arg(b.dir.path().join("broker.toml")),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("INSECURE GPU verification"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A Hello built by hand whose bundle carries `gpu` as its GPU list.
fn send_gpu_hello(b: &Broker, gpu: &[u8]) -> Option<RejectReason> {
    let (mut s, ch) = connect(b);
    write_msg(
        &mut s,
        &hello_with(&ch, &b.pk, Platform::InsecureNone, None, Some(gpu)),
    );
    reject_of(&read_msg(&mut s))
}

#[test]
fn gpu_rule_refuses_tampered_or_malformed_gpu_evidence() {
    use pqcc_core::bundle::GpuEvidenceList;
    use pqcc_verify::nvidia::GpuEvidence;
    let nvml = fake_nvml::FakeNvml::set_a();
    let extra = format!("insecure_nonce = \"{}\"\n", hex::encode(nvml.nonce()));
    let b = start("broker-gpu-bad", &policy(&gpu_rule(&extra), 10));
    let mut ev =
        GpuEvidence::from_report_and_pem(&nvml.report, &nvml.pem[..nvml.pem.len() - 3]).unwrap();
    ev.response[8 + 7] ^= 1; // first byte of measurement block 1's value
    let blob = ev.to_blob().unwrap();
    let mut list = vec![0u8; wire::MAX_EVIDENCE_LEN];
    let ln = GpuEvidenceList::new(&[&blob])
        .unwrap()
        .encode(&mut list)
        .unwrap();
    assert_eq!(
        send_gpu_hello(&b, &list[..ln]),
        Some(RejectReason::Evidence)
    );
    // Not a GPU list at all.
    assert_eq!(
        send_gpu_hello(&b, b"\x01\x01\x03abc"),
        Some(RejectReason::Evidence)
    );
    let a = wait_records(&b, 2);
    assert!(
        a[0].1
            .starts_with("evidence: GPU 0 failed nvidia checks: signature ("),
        "{}",
        a[0].1
    );
    assert!(
        a[1].1.starts_with("evidence: GPU 0 evidence: "),
        "{}",
        a[1].1
    );
    assert!(a.iter().all(|(d, _)| d == "deny"));
}

/// Waits (at most `limit`) for `child` to exit; its exit code.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        assert!(
            t.elapsed() < limit,
            "the broker did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_socket(sock: &Path) {
    let t = Instant::now();
    while !sock.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "broker did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Issue 29: `SIGTERM` stops the broker cleanly (exit 0, socket removed, a silent
/// connection dropped), a socket left by a killed broker is replaced at the next start,
/// and a socket a live broker serves is not taken over.
#[test]
fn sigterm_stops_the_broker_and_a_stale_socket_is_replaced() {
    let mut b = start("broker-term", &policy("", 10));
    let _silent = UnixStream::connect(&b.sock).unwrap();
    guest(&b, &b.pk, &ROOT).expect("handshake");
    run_ok(std::process::Command::new("kill").args(["-TERM", &b.child.id().to_string()]));
    let t = Instant::now();
    assert_eq!(wait_exit(&mut b.child, Duration::from_secs(10)), Some(0));
    println!(
        "[broker] SIGTERM with a silent connection open: exit 0 after {} ms",
        t.elapsed().as_millis()
    );
    assert!(!b.sock.exists(), "the socket was left behind");
    let err = fs::read_to_string(b.dir.path().join("broker.err")).unwrap();
    assert!(err.contains("broker: stopped"), "{err}");

    // A broker killed outright leaves its socket; the next start replaces it.
    let d = b.dir.path();
    let listen = format!("unix:{}", b.sock.display());
    let mut killed = serve_cmd(d, &listen).stderr(Stdio::null()).spawn().unwrap();
    wait_for_socket(&b.sock);
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert!(b.sock.exists(), "SIGKILL leaves the socket");
    let mut again = serve_cmd(d, &listen)
        .stderr(fs::File::create(d.join("again.err")).unwrap())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        let err = fs::read_to_string(d.join("again.err")).unwrap();
        if err.contains("listening on") {
            assert!(err.contains("replacing stale socket"), "{err}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{err}");
        std::thread::sleep(Duration::from_millis(20));
    }
    guest(&b, &b.pk, &ROOT).expect("handshake with the restarted broker");
    // A second broker on the live socket is refused and leaves it alone.
    let out = serve_cmd(d, &listen).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    guest(&b, &b.pk, &ROOT).expect("the live broker still serves");
    again.kill().unwrap();
    again.wait().unwrap();
}

/// A TCP connection from the loopback address `src` (127.0.0.0/8 is all loopback, so
/// each address is a peer of its own) to `dst`.
fn tcp_from(src: [u8; 4], dst: std::net::SocketAddr) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(dst) = dst else {
        panic!("IPv4 only")
    };
    let addr = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns; the addresses are
    // valid sockaddr_in values of the length given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let a = addr(src, 0);
        if libc::bind(fd, (&raw const a).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let b = addr(dst.ip().octets(), dst.port());
        if libc::connect(fd, (&raw const b).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Seconds until the broker closes `s` (reads until EOF or an error), at most `limit`.
fn closed_after(mut s: std::net::TcpStream, limit: Duration) -> Duration {
    let t = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return t.elapsed(),
            Ok(_) => {}
        }
    }
}

/// Issue 29: silent and slow peers hold a place only for a bounded time, one address
/// cannot take every place, and a real guest gets through while they try. Over TCP on
/// loopback: the attackers come from 127.0.0.2, the guest from 127.0.0.1.
#[test]
fn silent_and_slow_peers_do_not_keep_a_guest_out() {
    let text = policy("", 5).replace(
        "max_concurrent = 8",
        "max_concurrent = 3\nmax_per_peer = 2\nidle_timeout_s = 3",
    );
    let dir = broker_dir("broker-slow", &text);
    let d = dir.path();
    let mut child = serve_cmd(d, "tcp:127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(fs::File::create(d.join("broker.err")).unwrap())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let addr: std::net::SocketAddr = loop {
        let err = fs::read_to_string(d.join("broker.err")).unwrap();
        if let Some(a) = err
            .lines()
            .find_map(|l| l.strip_prefix("broker: listening on tcp:"))
        {
            break a.trim().parse().unwrap();
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{err}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let attacker = [127, 0, 0, 2];
    // Two silent connections take the attacker's two places ...
    let started = Instant::now();
    let silent: Vec<_> = (0..2).map(|_| tcp_from(attacker, addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    // ... and a slow one, which sends a byte of its READY every 700 ms, is over the
    // per-peer cap: closed at once, as is every further one.
    let slow = tcp_from(attacker, addr).unwrap();
    let over: Vec<_> = (0..6).map(|_| tcp_from(attacker, addr).unwrap()).collect();
    for s in over {
        let after = closed_after(s, Duration::from_secs(5));
        assert!(
            after < Duration::from_secs(2),
            "over the cap, closed after {after:?}"
        );
    }
    let closed = closed_after(slow, Duration::from_secs(5));
    assert!(closed < Duration::from_secs(2), "{closed:?}");
    // A real guest, from its own address, gets through while the silent ones wait.
    let t = Instant::now();
    let r = handshake(
        &mut FdLink(tcp_from([127, 0, 0, 1], addr).unwrap()),
        pqcc_tools::keys::read_public_key(&d.join("broker.key.pub"))
            .unwrap()
            .as_bytes(),
        claims(&ROOT),
        &mut InsecureNone,
        Instant::now() + Duration::from_secs(20),
        Duration::from_secs(20),
    )
    .expect("the guest gets through");
    assert_eq!(&r.secrets[0].bytes[..], MODEL_KEY);
    let guest_ms = t.elapsed().as_millis();
    // A dribbler with a place of its own (a second address): one byte every 700 ms of
    // its READY is cut off at the idle deadline, not stretched per byte.
    let mut dribbler = tcp_from([127, 0, 0, 3], addr).unwrap();
    let dribble_start = Instant::now();
    let ready = {
        let mut m = (pqcc_core::bundle::READY.len() as u32)
            .to_be_bytes()
            .to_vec();
        m.extend_from_slice(pqcc_core::bundle::READY);
        m
    };
    let mut cut = None;
    for b in ready.iter().chain(ready.iter()) {
        if dribbler.write_all(&[*b]).is_err() {
            cut = Some(dribble_start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    let cut = cut.unwrap_or_else(|| {
        dribble_start.elapsed() + closed_after(dribbler, Duration::from_secs(10))
    });
    // The silent ones are closed at their idle deadline (3 s after accept).
    for s in silent {
        let at = started.elapsed() + closed_after(s, Duration::from_secs(10));
        assert!(
            at < Duration::from_secs(6),
            "silent peer held its place {at:?}"
        );
    }
    println!(
        "[broker] attackers from one address: 2 held (silent), 7 closed at once; the guest \
         got through in {guest_ms} ms; a dribbler was cut off after {} ms",
        cut.as_millis()
    );
    assert!(
        cut < Duration::from_millis(5500),
        "a dribbler stretched its READY wait to {cut:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Issue 29: what a peer claims (its model name) reaches the log and stderr inert: a
/// control character cannot forge a line or drive the operator's terminal.
#[test]
fn a_peers_strings_are_logged_inert() {
    let b = start("broker-inert", &policy("", 10));
    let evil = "tiny\u{1b}[2K\rbroker: unix#9: ACCEPT everything\n";
    let e = handshake(
        &mut FdLink(UnixStream::connect(&b.sock).unwrap()),
        &b.pk,
        Claims {
            model_name: evil,
            model_revision: "r1",
            model_root_hash: ROOT,
        },
        &mut InsecureNone,
        Instant::now() + Duration::from_secs(20),
        Duration::from_secs(20),
    )
    .unwrap_err();
    assert!(e.contains("refused by policy"), "{e}");
    let a = wait_records(&b, 1);
    let want = "tiny\\u{1b}[2K\\rbroker: unix#9: ACCEPT everything\\n@r1";
    assert!(a[0].1.contains(want), "{}", a[0].1);
    let err = fs::read_to_string(b.dir.path().join("broker.err")).unwrap();
    assert!(err.contains(want), "{err}");
    assert!(!err.contains('\u{1b}') && !err.contains('\r'), "{err:?}");
    assert!(
        !err.lines().any(|l| l.starts_with("broker: unix#9")),
        "{err}"
    );
}

/// `pqcc bench broker` runs its own broker on a secret file it writes: that file must
/// pass the broker's own checks (private, regular), so the bench runs to its end.
#[test]
fn bench_broker_runs() {
    let out = pqcc()
        .args([
            "bench",
            "broker",
            "--iterations",
            "3",
            "--clients",
            "2",
            "--count",
            "6",
            "--seconds",
            "5",
            "--json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!rows.is_empty(), "{stdout}");
    assert!(rows.iter().all(|r| r["ok"] == true), "{stdout}");
}
