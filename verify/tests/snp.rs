//! SEV-SNP verification against the real Milan report in `../shared/data/sev-snp`.

use std::path::PathBuf;

use pqcc_verify::tee::{
    self, CertRole, Collateral, Measurements, TcbStatus, TeeError, TeePlatform, TeePolicy,
    snp::{self, REPORT_LEN, SIGNED_LEN, SnpTcb},
};

/// 2025-01-01T00:00:00Z: inside the VCEK's window (2023-04-03 .. 2030-04-03).
const NOW: u64 = 1_735_689_600;

fn data(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/sev-snp")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn report() -> Vec<u8> {
    data("report_milan.bin")
}

fn report_data(r: &[u8]) -> [u8; 64] {
    r[0x50..0x90].try_into().unwrap()
}

fn vcek_collateral() -> Collateral {
    Collateral {
        snp_vcek: Some(data("vcek_milan.der")),
        snp_chain: Some(data("cert_chain_milan")),
        tdx: None,
    }
}

fn pem_to_der(pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(pem).unwrap();
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64_decode(&b64)
}

fn base64_decode(s: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = alphabet.iter().position(|&a| a == c).unwrap() as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn check(
    evidence: &[u8],
    policy: &TeePolicy,
    coll: &Collateral,
    rd: &[u8; 64],
    now: u64,
) -> Result<tee::VerifiedTee, TeeError> {
    tee::verify(TeePlatform::Snp, evidence, policy, coll, rd, now)
}

#[test]
fn milan_report_verifies() {
    let r = report();
    let v = check(
        &r,
        &TeePolicy::report_only(TeePlatform::Snp),
        &vcek_collateral(),
        &report_data(&r),
        NOW,
    )
    .expect("Milan report verifies");
    assert_eq!(v.platform, TeePlatform::Snp);
    assert_eq!(v.tcb_status, TcbStatus::MeetsPolicyMinimum);
    assert!(!v.debug);
    let Measurements::Snp {
        measurement,
        policy,
        vmpl,
        reported_tcb,
        ..
    } = v.measurements
    else {
        panic!("not SNP measurements")
    };
    assert_eq!(
        hex::encode(measurement),
        "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"
    );
    assert_eq!(policy, 0x30000);
    assert_eq!(vmpl, 0);
    assert_eq!(
        reported_tcb,
        SnpTcb {
            fmc: 0,
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 0x73
        }
    );
}
