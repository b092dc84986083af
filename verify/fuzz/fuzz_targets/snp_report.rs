//! The SEV-SNP evidence parsers fed arbitrary bytes, before and around the signature
//! checks: the strict report parser, the certificate table, the guest-policy check,
//! AMD's CRL collateral (splitting, parsing, checking against the pinned ARK), and the
//! full verifier behind them. Nothing may panic; nothing made of noise may verify.
//!
//! With `../shared/data/sev-snp` present, the verifier is given the real Milan VCEK
//! and ASK, so mutated reports (the corpus is seeded with the real one by
//! `.ci/fuzz.sh`) reach the chain, the signature and the policy.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pqcc_verify::tee::{
    self, Collateral, TeePlatform, TeePolicy,
    snp::{self, REPORT_LEN, crl::Crl},
};

/// 2025-01-01, inside the Milan sample's certificate windows.
const NOW: u64 = 1_735_689_600;

fn milan_collateral() -> &'static Collateral {
    static C: OnceLock<Collateral> = OnceLock::new();
    C.get_or_init(|| {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/sev-snp");
        Collateral {
            snp_vcek: std::fs::read(dir.join("vcek_milan.der")).ok(),
            snp_chain: std::fs::read(dir.join("cert_chain_milan")).ok(),
            ..Collateral::default()
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let policy = TeePolicy::report_only(TeePlatform::Snp);
    match mode % 3 {
        0 => {
            // An evidence blob: report (padded to its length, so short inputs still
            // reach the fields) followed by a certificate table.
            let mut ev = rest.to_vec();
            if ev.len() < REPORT_LEN {
                ev.resize(REPORT_LEN, 0);
            }
            let _ = tee::claimed_report_data(TeePlatform::Snp, &ev);
            if let Some((raw, table)) = ev.split_at_checked(REPORT_LEN) {
                if let Ok(r) = snp::Report::parse(raw) {
                    let _ = r.signed_bytes();
                    let _ = snp::check_guest_policy(&policy, r.policy);
                }
                let _ = snp::CertTable::parse(table);
            }
            // The expected report data never matches (all 0xA5), so nothing verifies.
            let r = tee::verify(
                TeePlatform::Snp,
                &ev,
                &policy,
                milan_collateral(),
                &[0xA5; 64],
                NOW,
            );
            assert!(r.is_err());
        }
        1 => {
            // A certificate table alone, and the chain from what it holds.
            if let Ok(t) = snp::CertTable::parse(rest) {
                if let Some(vcek) = t.vcek {
                    let _ = snp::chain::verify_chain(vcek, None, t, NOW);
                }
            }
        }
        _ => {
            // AMD CRL collateral: DER or PEM, then each CRL against the pinned Milan ARK
            // (through the verifier, with the real report when it is present).
            if let Ok(crls) = snp::crl::split(rest) {
                for c in &crls {
                    if let Ok(crl) = Crl::parse(c) {
                        let _ = crl.issuer();
                    }
                }
            }
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/data/sev-snp/report_milan.bin");
            static REPORT: OnceLock<Option<Vec<u8>>> = OnceLock::new();
            if let Some(report) = REPORT.get_or_init(|| std::fs::read(&dir).ok()) {
                let coll = Collateral {
                    snp_crl: Some(rest.to_vec()),
                    ..milan_collateral().clone()
                };
                let rd: [u8; 64] = report
                    .get(0x50..0x90)
                    .and_then(|s| s.try_into().ok())
                    .unwrap_or([0; 64]);
                let r = tee::verify(TeePlatform::Snp, report, &policy, &coll, &rd, NOW);
                // Noise is never a CRL the pinned ARK signed; a CRL for another issuer
                // (or none) leaves the real report valid.
                if let Err(e) = r {
                    let _ = e.to_string();
                }
            }
        }
    }
});
