//! The GPU gate's control flow against a fake NVML (no GPU here), driven by Set A
//! (../shared/data/nvidia-gpu): the 2023 H100 sample report, which carries a fixed
//! nonce, and the matching RIMs at a pinned time.

use std::ffi::CStr;
use std::time::Duration;

use pqcc_init::gpu_gate::{self, DlNvml, Nvml, NvmlError, Wait};
use pqcc_verify::nvidia::{GpuEvidence, GpuPolicy, RevocationPolicy, Rim};

const NOW: u64 = 1_690_000_000;

fn read(name: &str) -> Vec<u8> {
    let p = format!(
        "{}/../../shared/data/nvidia-gpu/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// A fake NVML standing in for the GPU: answers with Set A whatever nonce it is asked
/// for (a real GPU would sign the nonce it got; this one cannot, so only Set A's own
/// nonce verifies).
struct FakeNvml {
    report: Vec<u8>,
    pem: Vec<u8>,
    /// How many init() calls fail before one succeeds.
    init_failures: u32,
    /// GPUs reported once initialised.
    count: u32,
    ready_calls: u32,
    ready_fails: bool,
    init_calls: u32,
}

impl FakeNvml {
    fn set_a() -> Self {
        let report =
            GpuEvidence::report_from_hex(&read("v2023_initial/attestationReport.txt")).unwrap();
        let mut pem = read("v2023_initial/gpuAkCertChain.txt");
        pem.extend_from_slice(&[0, 0, 0]); // NVML's buffers are NUL-padded
        Self {
            report,
            pem,
            init_failures: 0,
            count: 1,
            ready_calls: 0,
            ready_fails: false,
            init_calls: 0,
        }
    }
    fn nonce(&self) -> [u8; 32] {
        self.report[4..36].try_into().unwrap()
    }
}

impl Nvml for FakeNvml {
    fn init(&mut self) -> Result<(), NvmlError> {
        self.init_calls += 1;
        if self.init_failures > 0 {
            self.init_failures -= 1;
            return Err(NvmlError("nvmlInit_v2: Driver Not Loaded (NVML 9)".into()));
        }
        Ok(())
    }
    fn device_count(&mut self) -> Result<u32, NvmlError> {
        Ok(self.count)
    }
    fn attestation_report(&mut self, index: u32, _nonce: &[u8; 32]) -> Result<Vec<u8>, NvmlError> {
        assert!(index < self.count);
        Ok(self.report.clone())
    }
    fn attestation_cert_chain(&mut self, _index: u32) -> Result<Vec<u8>, NvmlError> {
        Ok(self.pem.clone())
    }
    fn set_cc_ready(&mut self) -> Result<(), NvmlError> {
        self.ready_calls += 1;
        if self.ready_fails {
            Err(NvmlError(
                "nvmlSystemSetConfComputeGpusReadyState: Insufficient Permissions (NVML 4)".into(),
            ))
        } else {
            Ok(())
        }
    }
}

fn rims() -> Vec<Rim> {
    vec![
        Rim {
            source: "driver".into(),
            bytes: read("Driver_RIM_test_no_gpu.swidtag"),
        },
        Rim {
            source: "vbios".into(),
            bytes: read("1010_0200_882_96005E0001_test_no_gpu.swidtag"),
        },
    ]
}

fn policy() -> GpuPolicy {
    GpuPolicy {
        revocation: RevocationPolicy::InsecureSkip,
        ..GpuPolicy::default()
    }
}

const WAIT: Wait = Wait {
    timeout: Duration::from_millis(50),
    poll: Duration::from_millis(5),
};

#[test]
fn set_a_passes_and_sets_ready_once() {
    let mut nvml = FakeNvml::set_a();
    let nonce = nvml.nonce();
    let blobs = gpu_gate::gate(&mut nvml, &nonce, &policy(), &rims(), NOW, WAIT, None).unwrap();
    assert_eq!(nvml.ready_calls, 1);
    assert_eq!(blobs.len(), 1);
    let ev = GpuEvidence::from_blob(&blobs[0].bytes).unwrap();
    assert_eq!(
        [ev.request.as_slice(), ev.response.as_slice()].concat(),
        nvml.report
    );
    assert_eq!(ev.certs.len(), 5);
}

#[test]
fn two_gpus_both_verified() {
    let mut nvml = FakeNvml::set_a();
    nvml.count = 2;
    let nonce = nvml.nonce();
    let blobs = gpu_gate::gate(&mut nvml, &nonce, &policy(), &rims(), NOW, WAIT, None).unwrap();
    assert_eq!(
        blobs.iter().map(|b| b.index).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert_eq!(nvml.ready_calls, 1);
}

#[test]
fn replayed_report_for_another_nonce_is_refused() {
    let mut nvml = FakeNvml::set_a();
    let mut nonce = nvml.nonce();
    nonce[31] ^= 1;
    let e = gpu_gate::gate(&mut nvml, &nonce, &policy(), &rims(), NOW, WAIT, None).unwrap_err();
    assert!(e.contains("nonce"), "{e}");
    assert_eq!(nvml.ready_calls, 0);
}

#[test]
fn tampered_measurement_is_refused_before_ready() {
    let mut nvml = FakeNvml::set_a();
    nvml.report[37 + 8 + 7] ^= 1; // first byte of block 1's value
    let nonce = nvml.nonce();
    let e = gpu_gate::gate(&mut nvml, &nonce, &policy(), &rims(), NOW, WAIT, None).unwrap_err();
    assert!(e.contains("signature"), "{e}");
    assert_eq!(nvml.ready_calls, 0);
}

#[test]
fn failing_rim_is_refused() {
    let mut nvml = FakeNvml::set_a();
    let nonce = nvml.nonce();
    let mut r = rims();
    r.pop(); // no VBIOS RIM
    let e = gpu_gate::gate(&mut nvml, &nonce, &policy(), &r, NOW, WAIT, None).unwrap_err();
    assert!(e.contains("rim-version"), "{e}");
    assert_eq!(nvml.ready_calls, 0);
}

#[test]
fn revocation_required_without_collateral_is_refused() {
    let mut nvml = FakeNvml::set_a();
    let nonce = nvml.nonce();
    let e = gpu_gate::gate(
        &mut nvml,
        &nonce,
        &GpuPolicy::default(),
        &rims(),
        NOW,
        WAIT,
        None,
    )
    .unwrap_err();
    assert!(e.contains("revocation"), "{e}");
    assert_eq!(nvml.ready_calls, 0);
}

#[test]
fn waits_for_the_driver_then_proceeds() {
    let mut nvml = FakeNvml::set_a();
    nvml.init_failures = 3;
    let nonce = nvml.nonce();
    gpu_gate::gate(&mut nvml, &nonce, &policy(), &rims(), NOW, WAIT, None).unwrap();
    assert_eq!(nvml.init_calls, 4);
    assert_eq!(nvml.ready_calls, 1);
}

#[test]
fn gives_up_after_the_bounded_wait() {
    let mut nvml = FakeNvml::set_a();
    nvml.init_failures = u32::MAX;
    let nonce = nvml.nonce();
    let e = gpu_gate::gate(&mut nvml, &nonce, &policy(), &rims(), NOW, WAIT, None).unwrap_err();
    assert!(
        e.contains("no GPU") && e.contains("Driver Not Loaded"),
        "{e}"
    );
    assert_eq!(nvml.init_calls, 10); // 50 ms / 5 ms
    assert_eq!(nvml.ready_calls, 0);
}

#[test]
fn no_gpu_is_refused() {
    let mut nvml = FakeNvml::set_a();
    nvml.count = 0;
    let nonce = nvml.nonce();
    let e = gpu_gate::gate(&mut nvml, &nonce, &policy(), &rims(), NOW, WAIT, None).unwrap_err();
    assert!(e.contains("NVML reports no GPU"), "{e}");
    assert_eq!(nvml.ready_calls, 0);
}

#[test]
fn ready_state_failure_is_an_error() {
    let mut nvml = FakeNvml::set_a();
    nvml.ready_fails = true;
    let nonce = nvml.nonce();
    let e = gpu_gate::gate(&mut nvml, &nonce, &policy(), &rims(), NOW, WAIT, None).unwrap_err();
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
