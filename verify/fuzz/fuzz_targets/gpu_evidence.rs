//! Every parser on the NVIDIA GPU evidence path, fed arbitrary bytes: the evidence
//! blob and the full verifier behind it, the SPDM request/response parsers, the
//! RIM path (XML parser, C14N, XML-DSig, certificates), the PEM chain splitter, and
//! the OCSP/CRL parsers. Nothing may panic; nothing made of noise may verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pqcc_verify::nvidia::{
    self, GpuEvidence, GpuPolicy, RevocationPolicy, Rim, revocation, rim::VerifiedRim, roots, spdm,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let policy = GpuPolicy {
        revocation: RevocationPolicy::InsecureSkip,
        ..GpuPolicy::default()
    };
    match mode % 5 {
        0 => {
            if let Ok(ev) = GpuEvidence::from_blob(rest) {
                let rims = [Rim {
                    source: "fuzz".into(),
                    bytes: rest.to_vec(),
                }];
                let r = nvidia::verify(&ev, &rims, &policy, &[0; 32], 1_690_000_000, None);
                assert!(!r.all_passed());
                let _ = ev.to_blob();
            }
        }
        1 => {
            let _ = spdm::MeasurementRequest::parse(rest);
            if let Ok(r) = spdm::MeasurementResponse::parse(rest) {
                let _ = (r.driver_version(), r.vbios_version());
            }
        }
        2 => {
            if let Ok(root) = roots::rim_root() {
                let _ = VerifiedRim::verify(rest, &root, 1_690_000_000);
            }
            let _ = nvidia::rim::embedded_certificates(rest);
        }
        3 => {
            let half = rest.len() / 2;
            let (report, pem) = rest.split_at(half);
            if let Ok(ev) = GpuEvidence::from_report_and_pem(report, pem) {
                let r = nvidia::verify(&ev, &[], &policy, &[0; 32], 1_690_000_000, None);
                assert!(!r.all_passed());
            }
        }
        _ => {
            let _ = revocation::ocsp_response_status(rest);
            let _ = revocation::check_crl_parses(rest);
            let _ = nvidia::x509::Cert::from_der(rest);
        }
    }
});
