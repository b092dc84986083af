//! A fake NVML standing in for an H100 we do not have here: it answers with NVIDIA's
//! 2023 sample evidence (Set A, ../shared/data/nvidia-gpu) whatever nonce it is asked
//! for. A real GPU signs the nonce it gets; this one cannot, so only Set A's own
//! (fixed) nonce verifies. Shared by pqcc-init's and the broker's tests.
#![allow(dead_code)] // each test crate uses part of it

use std::sync::{Arc, Mutex};

use pqcc_init::gpu_gate::{Nvml, NvmlError};
use pqcc_verify::nvidia::{GpuEvidence, Rim};

/// Set A's verification time (inside every certificate's validity).
pub const SET_A_NOW: u64 = 1_690_000_000;

/// A file of Set A.
pub fn read(name: &str) -> Vec<u8> {
    let p = set_a_path(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// The absolute path of a file of Set A.
pub fn set_a_path(name: &str) -> String {
    format!(
        "{}/../../shared/data/nvidia-gpu/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Set A's driver and VBIOS RIMs.
pub fn set_a_rims() -> Vec<Rim> {
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

/// The fake. Every call is appended to `events` (shared, so a test can interleave
/// other parties' events, e.g. the broker's Accept).
pub struct FakeNvml {
    pub report: Vec<u8>,
    pub pem: Vec<u8>,
    /// How many init() calls fail before one succeeds.
    pub init_failures: u32,
    /// GPUs reported once initialised.
    pub count: u32,
    pub ready_fails: bool,
    pub events: Arc<Mutex<Vec<String>>>,
}

impl FakeNvml {
    pub fn set_a() -> Self {
        let report =
            GpuEvidence::report_from_hex(&read("v2023_initial/attestationReport.txt")).unwrap();
        let mut pem = read("v2023_initial/gpuAkCertChain.txt");
        pem.extend_from_slice(&[0, 0, 0]); // NVML's buffers are NUL-padded
        Self {
            report,
            pem,
            init_failures: 0,
            count: 1,
            ready_fails: false,
            events: Arc::default(),
        }
    }

    /// Set A's fixed nonce (bytes 4..36 of the SPDM request).
    pub fn nonce(&self) -> [u8; 32] {
        self.report[4..36].try_into().unwrap()
    }

    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    pub fn count_of(&self, what: &str) -> usize {
        self.events().iter().filter(|e| *e == what).count()
    }

    fn log(&self, e: &str) {
        self.events.lock().unwrap().push(e.to_owned());
    }
}

impl Nvml for FakeNvml {
    fn init(&mut self) -> Result<(), NvmlError> {
        self.log("init");
        if self.init_failures > 0 {
            self.init_failures -= 1;
            return Err(NvmlError("nvmlInit_v2: Driver Not Loaded (NVML 9)".into()));
        }
        Ok(())
    }
    fn device_count(&mut self) -> Result<u32, NvmlError> {
        self.log("count");
        Ok(self.count)
    }
    fn attestation_report(&mut self, index: u32, _nonce: &[u8; 32]) -> Result<Vec<u8>, NvmlError> {
        self.log("report");
        if index >= self.count {
            return Err(NvmlError("Invalid Argument (NVML 2)".into()));
        }
        Ok(self.report.clone())
    }
    fn attestation_cert_chain(&mut self, _index: u32) -> Result<Vec<u8>, NvmlError> {
        self.log("certs");
        Ok(self.pem.clone())
    }
    fn set_cc_ready(&mut self) -> Result<(), NvmlError> {
        self.log("ready");
        if self.ready_fails {
            Err(NvmlError(
                "nvmlSystemSetConfComputeGpusReadyState: Insufficient Permissions (NVML 4)".into(),
            ))
        } else {
            Ok(())
        }
    }
}
