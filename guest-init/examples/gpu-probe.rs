//! Probe a real GPU through the gate's NVML binding: load `libnvidia-ml.so.1`, count
//! GPUs, fetch GPU 0's attestation report for a fresh nonce and its certificate chain,
//! write them to OUT_DIR (report.bin, chain.pem, nonce.hex) and verify what can be
//! verified without RIMs (structure, nonce, signature, device chain, FWID) at the
//! current time. Never sets the CC ready state.
//!
//! Usage: gpu-probe OUT_DIR

use std::time::{SystemTime, UNIX_EPOCH};

use pqcc_init::gpu_gate::{DlNvml, Nvml};
use pqcc_verify::nvidia::{self, GpuEvidence, GpuPolicy, RevocationPolicy};

fn main() {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let mut nvml = match DlNvml::load() {
        Ok(n) => n,
        Err(e) => {
            println!("load: FAILED: {e}");
            std::process::exit(1);
        }
    };
    println!("load: ok (dlopen libnvidia-ml.so.1 from this binary)");
    if let Err(e) = nvml.init() {
        println!("init: FAILED: {e}");
        std::process::exit(1);
    }
    let count = nvml.device_count();
    println!("device_count: {count:?}");
    let mut nonce = [0u8; 32];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut nonce)
    }) {
        println!("nonce: FAILED: {e}");
        std::process::exit(1);
    }
    std::fs::write(out.join("nonce.hex"), hex::encode(nonce)).ok();
    let report = nvml.attestation_report(0, &nonce);
    let chain = nvml.attestation_cert_chain(0);
    match (&report, &chain) {
        (Ok(r), Ok(c)) => {
            println!(
                "attestation_report: {} bytes; cert chain: {} bytes",
                r.len(),
                c.len()
            );
            std::fs::write(out.join("report.bin"), r).ok();
            std::fs::write(out.join("chain.pem"), c).ok();
            let mut pem = c.clone();
            while pem.last() == Some(&0) {
                pem.pop();
            }
            match GpuEvidence::from_report_and_pem(r, &pem) {
                Ok(ev) => {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let policy = GpuPolicy {
                        revocation: RevocationPolicy::InsecureSkip,
                        ..GpuPolicy::default()
                    };
                    print!("{}", nvidia::verify(&ev, &[], &policy, &nonce, now, None));
                }
                Err(e) => println!("evidence: {e}"),
            }
        }
        _ => {
            println!("attestation_report: {:?}", report.as_ref().map(Vec::len));
            println!("cert chain: {:?}", chain.as_ref().map(Vec::len));
        }
    }
}
