//! NVIDIA GPU evidence verification against Set A (../shared/data/nvidia-gpu): the
//! 2023 sample report and chain with the test driver and VBIOS RIMs, at a pinned time
//! inside the RIM certificates' validity; then one tampering at a time.

use std::path::PathBuf;

use pqcc_verify::nvidia::{
    self, Collateral, GpuEvidence, GpuPolicy, Outcome, Report, RevocationPolicy, Rim,
};

/// Inside every Set A certificate's validity (the RIM signer expired 2025-06-26).
const NOW: u64 = 1_690_000_000;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/nvidia-gpu")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(data(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

struct SetA {
    evidence: GpuEvidence,
    nonce: [u8; 32],
    driver: Vec<u8>,
    vbios: Vec<u8>,
}

fn set_a() -> SetA {
    let report = GpuEvidence::report_from_hex(&read("v2023_initial/attestationReport.txt")).unwrap();
    let evidence =
        GpuEvidence::from_report_and_pem(&report, &read("v2023_initial/gpuAkCertChain.txt")).unwrap();
    let mut nonce = [0u8; 32];
    nonce.copy_from_slice(&evidence.request[4..36]);
    SetA {
        evidence,
        nonce,
        driver: read("Driver_RIM_test_no_gpu.swidtag"),
        vbios: read("1010_0200_882_96005E0001_test_no_gpu.swidtag"),
    }
}

fn rims(driver: &[u8], vbios: &[u8]) -> Vec<Rim> {
    vec![
        Rim { source: "driver".into(), bytes: driver.to_vec() },
        Rim { source: "vbios".into(), bytes: vbios.to_vec() },
    ]
}

fn no_revocation() -> GpuPolicy {
    GpuPolicy { revocation: RevocationPolicy::InsecureSkip, ..GpuPolicy::default() }
}

fn run(a: &SetA) -> Report {
    nvidia::verify(&a.evidence, &rims(&a.driver, &a.vbios), &no_revocation(), &a.nonce, NOW, None)
}

#[test]
fn set_a_verifies_fully() {
    let a = set_a();
    let r = run(&a);
    println!("{r}");
    assert!(r.all_passed(), "{r}");
    for name in nvidia::CHECK_NAMES {
        let c = r.check(name).unwrap();
        let want = if name == "revocation" { Outcome::Skipped } else { Outcome::Pass };
        assert_eq!(c.outcome, want, "{name}: {}", c.detail);
    }
    assert_eq!(r.driver_version.as_deref(), Some("545.00"));
    assert_eq!(r.vbios_version.as_deref(), Some("96.00.5e.00.01"));
    assert!(r.check("measurements").unwrap().detail.contains("33 active indices"), "{r}");
}
