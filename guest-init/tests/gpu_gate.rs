//! The GPU gate's control flow against a fake NVML (no GPU here), driven by Set A
//! (../shared/data/nvidia-gpu): the 2023 H100 sample report, which carries a fixed
//! nonce, and the matching RIMs at a pinned time. Also: the NVML helper protocol and
//! the real helper binary, and the gate around a handshake with an in-process broker
//! built from pqcc-core's responder.

mod fake_nvml;

use std::ffi::CStr;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use fake_nvml::{FakeNvml, SET_A_NOW, set_a_path, set_a_rims};
use pqcc_core::bundle::{EvidenceBundle, GpuEvidenceList, READY};
use pqcc_core::handshake::Responder;
use pqcc_core::secret::Secret;
use pqcc_core::selftest::InsecureTestRng;
use pqcc_core::sign::SigningKey;
use pqcc_core::wire::{
    ACCEPT_MAX_LEN, CHALLENGE_MAX_LEN, HELLO_MAX_LEN, REJECT_MAX_LEN, RejectReason,
};
use pqcc_init::broker::{FdLink, read_msg, write_msg};
use pqcc_init::gpu_gate::{self, DlNvml, Gpus, LocalCheck, Nvml, Wait};
use pqcc_init::nvml_helper::{self, HelperNvml};
use pqcc_init::platform::InsecureNone;
use pqcc_init::{BrokerAttestation, Fatal, GpuGate, Stage, attest_over, config};
use pqcc_verify::nvidia::{GpuEvidence, GpuPolicy, RevocationPolicy};

fn check() -> LocalCheck {
    LocalCheck {
        policy: GpuPolicy {
            revocation: RevocationPolicy::InsecureSkip,
            ..GpuPolicy::default()
        },
        rims: set_a_rims(),
        collateral: None,
        now: SET_A_NOW,
    }
}

const WAIT: Wait = Wait {
    timeout: Duration::from_millis(50),
    poll: Duration::from_millis(5),
};

const ONE: Gpus = Gpus { count: 1 };

#[test]
fn set_a_verifies_and_ready_is_a_separate_step() {
    let mut nvml = FakeNvml::set_a();
    let nonce = nvml.nonce();
    let gpus = gpu_gate::wait_for_gpus(&mut nvml, WAIT).unwrap();
    assert_eq!(gpus, ONE);
    let v = gpu_gate::collect(&mut nvml, gpus, &nonce, &check()).unwrap();
    assert_eq!(
        nvml.count_of("ready"),
        0,
        "collect must not set the ready state"
    );
    assert_eq!(v.blobs.len(), 1);
    let ev = GpuEvidence::from_blob(&v.blobs[0].bytes).unwrap();
    assert_eq!(
        [ev.request.as_slice(), ev.response.as_slice()].concat(),
        nvml.report
    );
    assert_eq!(ev.certs.len(), 5);
    // The bundle's list decodes back to the same blob.
    let list = v.list_bytes().unwrap();
    let l = GpuEvidenceList::decode(&list).unwrap();
    assert_eq!(l.blobs[0].0, v.blobs[0].bytes.as_slice());
    gpu_gate::set_ready(&mut nvml, v).unwrap();
    assert_eq!(nvml.count_of("ready"), 1);
}

#[test]
fn two_gpus_both_verified() {
    let mut nvml = FakeNvml::set_a();
    nvml.count = 2;
    let nonce = nvml.nonce();
    let gpus = gpu_gate::wait_for_gpus(&mut nvml, WAIT).unwrap();
    let v = gpu_gate::collect(&mut nvml, gpus, &nonce, &check()).unwrap();
    assert_eq!(v.blobs.iter().map(|b| b.index).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(nvml.count_of("report"), 2);
    assert_eq!(
        GpuEvidenceList::decode(&v.list_bytes().unwrap())
            .unwrap()
            .blobs
            .len(),
        2
    );
}

#[test]
fn replayed_report_for_another_nonce_is_refused() {
    let mut nvml = FakeNvml::set_a();
    let mut nonce = nvml.nonce();
    nonce[31] ^= 1;
    let e = gpu_gate::collect(&mut nvml, ONE, &nonce, &check()).unwrap_err();
    assert!(e.contains("nonce"), "{e}");
}

#[test]
fn tampered_measurement_is_refused() {
    let mut nvml = FakeNvml::set_a();
    nvml.report[37 + 8 + 7] ^= 1; // first byte of block 1's value
    let nonce = nvml.nonce();
    let e = gpu_gate::collect(&mut nvml, ONE, &nonce, &check()).unwrap_err();
    assert!(e.contains("signature"), "{e}");
}

#[test]
fn failing_rim_is_refused() {
    let mut nvml = FakeNvml::set_a();
    let nonce = nvml.nonce();
    let mut c = check();
    c.rims.pop(); // no VBIOS RIM
    let e = gpu_gate::collect(&mut nvml, ONE, &nonce, &c).unwrap_err();
    assert!(e.contains("rim-version"), "{e}");
}

#[test]
fn revocation_required_without_collateral_is_refused() {
    let mut nvml = FakeNvml::set_a();
    let nonce = nvml.nonce();
    let mut c = check();
    c.policy = GpuPolicy::default();
    let e = gpu_gate::collect(&mut nvml, ONE, &nonce, &c).unwrap_err();
    assert!(e.contains("revocation"), "{e}");
}

#[test]
fn waits_for_the_driver_then_proceeds() {
    let mut nvml = FakeNvml::set_a();
    nvml.init_failures = 3;
    let w = Wait {
        timeout: Duration::from_secs(5),
        poll: Duration::from_millis(5),
    };
    assert_eq!(gpu_gate::wait_for_gpus(&mut nvml, w).unwrap(), ONE);
    assert_eq!(nvml.count_of("init"), 4);
}

#[test]
fn gives_up_after_the_bounded_wait() {
    let mut nvml = FakeNvml::set_a();
    nvml.init_failures = u32::MAX;
    let t = Instant::now();
    let e = gpu_gate::wait_for_gpus(&mut nvml, WAIT).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(
        e.contains("no GPU") && e.contains("Driver Not Loaded"),
        "{e}"
    );
    let n = nvml.count_of("init");
    assert!((2..=12).contains(&n), "{n} attempts in 50 ms at 5 ms");
}

#[test]
fn no_gpu_is_refused() {
    let mut nvml = FakeNvml::set_a();
    nvml.count = 0;
    let e = gpu_gate::wait_for_gpus(&mut nvml, WAIT).unwrap_err();
    assert!(e.contains("NVML reports no GPU"), "{e}");
}

#[test]
fn ready_state_failure_is_an_error() {
    let mut nvml = FakeNvml::set_a();
    nvml.ready_fails = true;
    let nonce = nvml.nonce();
    let v = gpu_gate::collect(&mut nvml, ONE, &nonce, &check()).unwrap();
    let e = gpu_gate::set_ready(&mut nvml, v).unwrap_err();
    assert!(e.contains("ready state"), "{e}");
}

#[test]
fn absent_library_is_a_clear_error() {
    let name: &CStr = c"libnvidia-ml-pqcc-absent.so.1";
    let e = DlNvml::load_from(name).err().expect("no such library");
    assert!(
        e.0.contains("cannot load libnvidia-ml-pqcc-absent.so.1"),
        "{e}"
    );
    // A library without NVML's symbols: named, and which symbol is missing.
    let e = DlNvml::load_from(c"libm.so.6")
        .err()
        .expect("libm is not NVML");
    assert!(e.0.contains("lacks nvmlInit_v2"), "{e}");
}

// ---- The helper protocol ----

/// A helper served in-process over a socket pair: the fake NVML behind the real
/// protocol code on both sides.
fn helper_over_fake(nvml: FakeNvml) -> (HelperNvml, std::thread::JoinHandle<FakeNvml>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut theirs_w = theirs.try_clone().unwrap();
    let mut theirs_r = theirs;
    let t = std::thread::spawn(move || {
        let mut nvml = nvml;
        let _ = nvml_helper::serve(Ok(&mut nvml), &mut theirs_r, &mut theirs_w);
        nvml
    });
    let w = ours.try_clone().unwrap();
    let h = HelperNvml::over(
        OwnedFd::from(w),
        OwnedFd::from(ours),
        Duration::from_secs(10),
    )
    .unwrap();
    (h, t)
}

#[test]
fn gate_through_the_helper_protocol() {
    let fake = FakeNvml::set_a();
    let nonce = fake.nonce();
    let (mut h, t) = helper_over_fake(fake);
    let gpus = gpu_gate::wait_for_gpus(&mut h, WAIT).unwrap();
    let v = gpu_gate::collect(&mut h, gpus, &nonce, &check()).unwrap();
    gpu_gate::set_ready(&mut h, v).unwrap();
    // An NVML error crosses the pipe as an error and the helper lives on.
    let e = h.attestation_report(7, &nonce).unwrap_err();
    assert!(e.0.contains("Invalid Argument"), "{e}");
    assert_eq!(h.device_count().unwrap(), 1);
    drop(h);
    let fake = t.join().unwrap();
    assert_eq!(fake.count_of("ready"), 1);
}

#[test]
fn helper_refuses_malformed_requests() {
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let mut theirs_w = theirs.try_clone().unwrap();
    let mut theirs_r = theirs;
    let t = std::thread::spawn(move || {
        let mut nvml = FakeNvml::set_a();
        nvml_helper::serve(Ok(&mut nvml), &mut theirs_r, &mut theirs_w)
    });
    use std::io::{Read, Write};
    let mut g = [0u8; 4 + 12];
    ours.read_exact(&mut g).unwrap();
    assert_eq!(&g[5..], nvml_helper::GREETING);
    // A report request without its nonce.
    ours.write_all(&[0, 0, 0, 5, 3, 0, 0, 0, 0]).unwrap();
    assert!(t.join().unwrap().is_err());
    // An oversize request length.
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let mut theirs_w = theirs.try_clone().unwrap();
    let mut theirs_r = theirs;
    let t = std::thread::spawn(move || {
        let mut nvml = FakeNvml::set_a();
        nvml_helper::serve(Ok(&mut nvml), &mut theirs_r, &mut theirs_w)
    });
    ours.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
    assert!(t.join().unwrap().is_err());
}

#[test]
fn a_lying_helper_is_refused() {
    // Greets, then answers a count request with a 3-byte payload.
    let (ours, theirs) = UnixStream::pair().unwrap();
    let t = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = theirs;
        let mut g = vec![0u8, 0, 0, 12, 0];
        g.extend_from_slice(nvml_helper::GREETING);
        s.write_all(&g).unwrap();
        let mut req = [0u8; 5];
        s.read_exact(&mut req).unwrap();
        s.write_all(&[0, 0, 0, 4, 0, 1, 2, 3]).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let w = ours.try_clone().unwrap();
    let mut h = HelperNvml::over(
        OwnedFd::from(w),
        OwnedFd::from(ours),
        Duration::from_secs(5),
    )
    .unwrap();
    let e = h.device_count().unwrap_err();
    assert!(e.0.contains("malformed count"), "{e}");
    // Broken for good.
    assert!(h.init().unwrap_err().0.contains("unusable"));
    drop(h);
    t.join().unwrap();
}

#[test]
fn real_helper_binary_reports_an_absent_library() {
    let helper = Path::new(env!("CARGO_BIN_EXE_pqcc-nvml-helper"));
    let e = HelperNvml::spawn(
        helper,
        "libnvidia-ml-pqcc-absent.so.1",
        Duration::from_secs(10),
    )
    .unwrap_err();
    assert!(
        e.0.contains("cannot load libnvidia-ml-pqcc-absent.so.1"),
        "{e}"
    );
    assert!(e.0.contains("pqcc-nvml-helper"), "{e}");
    let e = HelperNvml::spawn(helper, "libm.so.6", Duration::from_secs(10)).unwrap_err();
    assert!(e.0.contains("lacks nvmlInit_v2"), "{e}");
    // No helper at all.
    let e = HelperNvml::spawn(
        Path::new("/nonexistent/pqcc-nvml-helper"),
        "libnvidia-ml.so.1",
        Duration::from_secs(1),
    )
    .unwrap_err();
    assert!(e.0.contains("cannot start the NVML helper"), "{e}");
}

#[test]
fn a_silent_helper_times_out() {
    let dir = std::env::temp_dir().join(format!("pqcc-gate-silent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("helper.sh");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let t = Instant::now();
    let e =
        HelperNvml::spawn(&script, "libnvidia-ml.so.1", Duration::from_millis(300)).unwrap_err();
    assert!(e.0.contains("no answer within"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- The gate around a handshake ----

fn broker_key() -> SigningKey {
    SigningKey::from_seed(&Secret::new([0x5a; 32]))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BrokerDoes {
    Accept,
    Reject,
    /// Accepts a Hello whose GPU evidence a man in the middle changed.
    AcceptSwapped,
}

/// A broker in a thread (pqcc-core's responder): reads READY, sends a Challenge,
/// reads the Hello, and answers as told, logging "accept"/"reject" into `events`
/// before the answer leaves. Returns the GPU nonce the broker computed and the GPU
/// list it received.
/// The GPU nonce the fake broker computed and the GPU list it received.
type BrokerSaw = Option<([u8; 32], Vec<u8>)>;

fn fake_broker(
    s: UnixStream,
    does: BrokerDoes,
    events: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<BrokerSaw> {
    std::thread::spawn(move || {
        let mut link = FdLink(s);
        let until = Instant::now() + Duration::from_secs(20);
        let r = read_msg(&mut link, READY.len(), until).ok()?;
        assert_eq!(r, READY);
        let mut rng = InsecureTestRng::new([9; 32]);
        let mut ch = [0u8; CHALLENGE_MAX_LEN];
        let (resp, n) = Responder::start(&mut rng, &mut ch).unwrap();
        write_msg(&mut link, &ch[..n]).unwrap();
        let mut hello = read_msg(&mut link, HELLO_MAX_LEN, until).ok()?;
        if does == BrokerDoes::AcceptSwapped {
            // Flip a byte well inside the GPU blob (the bundle's last part).
            let at = hello.len() - 200;
            hello[at] ^= 0x01;
        }
        let v = resp.handle_hello(&hello).unwrap();
        let nonce = v.binding().gpu_nonce();
        let bundle = EvidenceBundle::decode(v.evidence().data.0).unwrap();
        let gpu = bundle.gpu.map(|b| b.0.to_vec()).unwrap_or_default();
        let mut out = vec![0u8; ACCEPT_MAX_LEN.max(REJECT_MAX_LEN)];
        let n = match does {
            BrokerDoes::Accept | BrokerDoes::AcceptSwapped => {
                events.lock().unwrap().push("accept".into());
                v.accept(&broker_key(), &[], &mut rng, &mut out).unwrap().1
            }
            BrokerDoes::Reject => {
                events.lock().unwrap().push("reject".into());
                v.reject(RejectReason::Evidence, &mut out).unwrap()
            }
        };
        write_msg(&mut link, &out[..n]).unwrap();
        let _ = read_msg(&mut link, 64, until);
        Some((nonce, gpu))
    })
}

fn cfg() -> config::Config {
    config::parse(include_str!("data/init.toml")).unwrap()
}

fn run_gate(
    nvml: &mut FakeNvml,
    does: BrokerDoes,
    nonce_override: Option<[u8; 32]>,
) -> (Result<pqcc_init::broker::Released, Fatal>, BrokerSaw) {
    let (g, b) = UnixStream::pair().unwrap();
    let t = fake_broker(b, does, nvml.events.clone());
    let c = check();
    let mut link = FdLink(g);
    let r = attest_over(
        &mut link,
        &cfg(),
        broker_key().public_key(),
        &mut InsecureNone,
        Some(GpuGate {
            gpus: Gpus { count: nvml.count },
            nvml,
            check: &c,
            insecure_nonce_override: nonce_override,
        }),
        Instant::now() + Duration::from_secs(20),
        Duration::from_secs(20),
    );
    drop(link);
    (r, t.join().unwrap())
}

#[test]
fn ready_is_set_once_after_the_brokers_accept() {
    let mut nvml = FakeNvml::set_a();
    let nonce = nvml.nonce();
    let (r, seen) = run_gate(&mut nvml, BrokerDoes::Accept, Some(nonce));
    r.unwrap();
    assert_eq!(nvml.events(), ["report", "certs", "accept", "ready"]);
    // The broker got the list with Set A's blob.
    let (_, gpu) = seen.unwrap();
    let l = GpuEvidenceList::decode(&gpu).unwrap();
    let ev = GpuEvidence::from_blob(l.blobs[0].0).unwrap();
    assert_eq!(ev.request[4..36], nonce);
}

#[test]
fn eight_gpus_fit_one_hello_beside_the_largest_tee_evidence() {
    let mut nvml = FakeNvml::set_a();
    nvml.count = 8;
    let nonce = nvml.nonce();
    let (r, seen) = run_gate(&mut nvml, BrokerDoes::Accept, Some(nonce));
    r.unwrap();
    assert_eq!(nvml.count_of("report"), 8);
    assert_eq!(nvml.count_of("ready"), 1);
    let (_, gpu) = seen.unwrap();
    assert_eq!(GpuEvidenceList::decode(&gpu).unwrap().blobs.len(), 8);
    // The fake platform's TEE evidence is tiny; a real one may take up to 32 KiB, and
    // the bundle's claims (model name, revision, root hash) a few hundred bytes more.
    let claims_and_framing = 1024;
    assert!(
        gpu.len() + pqcc_verify::tee::MAX_EVIDENCE_LEN + claims_and_framing
            <= pqcc_core::wire::MAX_EVIDENCE_LEN,
        "{} bytes of GPU evidence",
        gpu.len()
    );
}

#[test]
fn a_refusing_broker_means_no_ready_state() {
    let mut nvml = FakeNvml::set_a();
    let nonce = nvml.nonce();
    let (r, _) = run_gate(&mut nvml, BrokerDoes::Reject, Some(nonce));
    let f = r.unwrap_err();
    assert_eq!(f.stage, Stage::Attest);
    assert!(f.reason.contains("broker refused"), "{}", f.reason);
    assert_eq!(nvml.count_of("ready"), 0);
}

#[test]
fn swapped_gpu_evidence_fails_the_handshake() {
    let mut nvml = FakeNvml::set_a();
    let nonce = nvml.nonce();
    let (r, _) = run_gate(&mut nvml, BrokerDoes::AcceptSwapped, Some(nonce));
    let f = r.unwrap_err();
    assert_eq!(f.stage, Stage::Attest);
    assert!(
        f.reason.contains("not signed by the configured broker"),
        "{}",
        f.reason
    );
    assert_eq!(nvml.count_of("ready"), 0);
}

#[test]
fn evidence_for_the_handshake_nonce_is_what_the_gpu_is_asked_for() {
    // No override: the GPU is asked for the handshake's nonce; Set A's report carries
    // another, so the local check fails, nothing is sent, nothing is set.
    let mut nvml = FakeNvml::set_a();
    let (r, seen) = run_gate(&mut nvml, BrokerDoes::Accept, None);
    let f = r.unwrap_err();
    assert_eq!(f.stage, Stage::Gpu);
    assert!(f.reason.contains("nonce"), "{}", f.reason);
    assert_eq!(nvml.count_of("ready"), 0);
    assert!(
        seen.is_none(),
        "a Hello was sent despite failing GPU evidence"
    );
    assert!(!nvml.events().contains(&"accept".to_string()));
}

// ---- BrokerAttestation: FATAL gpu before any broker connection ----

fn abs(p: &str) -> String {
    std::fs::canonicalize(p).unwrap().display().to_string()
}

fn gpu_config(helper: &str, library: &str) -> config::Config {
    let key = "ab".repeat(config::ML_DSA_65_PUBLIC_KEY_LEN);
    let text = format!(
        "{}\n[broker]\npublic_key = \"{key}\"\ntransport = \"tcp:127.0.0.1:9\"\nwait_ms = 100\n\
         [gpu]\nrequired = true\nhelper = \"{helper}\"\nnvml_library = \"{library}\"\n\
         wait_ms = 100\nrims = [\"{}\", \"{}\"]\nrevocation = \"broker\"\n",
        include_str!("data/init.toml"),
        abs(&set_a_path("Driver_RIM_test_no_gpu.swidtag")),
        abs(&set_a_path("1010_0200_882_96005E0001_test_no_gpu.swidtag")),
    );
    config::parse(&text).unwrap()
}

fn attest(c: &config::Config) -> Fatal {
    use pqcc_init::{Attestation, OpenedModel};
    let m = OpenedModel {
        device: "/dev/dm-0".into(),
        len: 4096,
    };
    BrokerAttestation.attest(c, &m).unwrap_err()
}

#[test]
fn required_gpu_with_an_absent_library_is_fatal_gpu() {
    let helper = env!("CARGO_BIN_EXE_pqcc-nvml-helper");
    let f = attest(&gpu_config(helper, "libnvidia-ml-pqcc-absent.so.1"));
    assert_eq!(f.stage, Stage::Gpu);
    assert!(
        f.to_string()
            .starts_with("pqcc-init: FATAL gpu: NVML helper ")
            && f.reason
                .contains("cannot load libnvidia-ml-pqcc-absent.so.1"),
        "{f}"
    );
}

#[test]
fn required_gpu_without_the_helper_is_fatal_gpu() {
    let f = attest(&gpu_config(
        "/nonexistent/pqcc-nvml-helper",
        "libnvidia-ml.so.1",
    ));
    assert_eq!(f.stage, Stage::Gpu);
    assert!(f.reason.contains("cannot start the NVML helper"), "{f}");
    // A RIM file missing from the initramfs: named.
    let mut c = gpu_config("/nonexistent/pqcc-nvml-helper", "libnvidia-ml.so.1");
    if let Some(g) = c.gpu.as_mut() {
        g.rims[0] = "/nonexistent/driver.swidtag".into();
    }
    let f = attest(&c);
    assert_eq!(f.stage, Stage::Gpu);
    assert!(f.reason.contains("RIM /nonexistent/driver.swidtag"), "{f}");
}

#[test]
fn require_revocation_without_a_bundle_is_fatal_gpu() {
    let mut c = gpu_config("/nonexistent/pqcc-nvml-helper", "libnvidia-ml.so.1");
    if let Some(g) = c.gpu.as_mut() {
        g.revocation = config::GpuRevocation::Require {
            collateral: "/nonexistent/collateral".into(),
            max_age_s: 3600,
        };
    }
    let f = attest(&c);
    assert_eq!(f.stage, Stage::Gpu);
    assert!(
        f.reason
            .contains("revocation bundle /nonexistent/collateral: not a directory"),
        "{f}"
    );
    let dir = std::env::temp_dir().join(format!("pqcc-gate-coll-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(g) = c.gpu.as_mut() {
        g.revocation = config::GpuRevocation::Require {
            collateral: dir.display().to_string(),
            max_age_s: 3600,
        };
    }
    let f = attest(&c);
    assert!(f.reason.contains("holds no CRL or OCSP response"), "{f}");
    let _ = std::fs::remove_dir(&dir);
}

/// A helper (a shell script speaking `pqcc-nvml/1`) whose NVML initialises but reports
/// no GPU: the boot ends with `FATAL gpu` after the bounded wait, before any broker
/// connection.
#[test]
fn required_gpu_with_no_gpu_present_is_fatal_gpu() {
    let dir = std::env::temp_dir().join(format!("pqcc-gate-nogpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("helper.sh");
    // Greeting; then, per request pair: init → ok, device count → 0.
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf '\\000\\000\\000\\014\\000pqcc-nvml/1'\n\
         while [ \"$(head -c 5 | wc -c)\" = 5 ]; do\n\
         printf '\\000\\000\\000\\001\\000'\n\
         [ \"$(head -c 5 | wc -c)\" = 5 ] || exit 0\n\
         printf '\\000\\000\\000\\005\\000\\000\\000\\000\\000'\n\
         done\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let t = Instant::now();
    let f = attest(&gpu_config(
        &script.display().to_string(),
        "libnvidia-ml.so.1",
    ));
    assert_eq!(f.stage, Stage::Gpu);
    assert!(
        f.reason
            .starts_with("no GPU within 100ms: NVML reports no GPU"),
        "{f}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
}
