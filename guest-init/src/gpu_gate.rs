//! The GPU gate: before any secret reaches the guest, every NVIDIA GPU it sees must
//! prove, with a nonce fresh for this handshake, that it is genuine and runs the
//! expected firmware and driver; only after the broker has verified the same evidence
//! and accepted is the GPUs' confidential-computing "ready" state set, which is what
//! lets CUDA work start on them (`docs/gpu-attestation.md`).
//!
//! The gate runs in three steps, each a function here, which
//! [`crate::BrokerAttestation`] calls in this order:
//! 1. [`wait_for_gpus`] — before the broker connection (so a slow driver does not eat
//!    the broker's handshake timeout): wait, bounded, until NVML initialises and
//!    reports at least one GPU;
//! 2. [`collect`] — inside the handshake, after the Challenge: for each GPU fetch the
//!    attestation report for the handshake's GPU nonce
//!    ([`pqcc_core::handshake::BindingValue::gpu_nonce`]) and the device certificate
//!    chain, and verify each locally with [`pqcc_verify::nvidia`]; the result,
//!    [`Verified`], is sent to the broker in the Hello (as a
//!    [`pqcc_core::bundle::GpuEvidenceList`]), which the transcript covers;
//! 3. [`set_ready`] — after the broker's Accept (its signature checked) and the
//!    secrets arrived: set the CC ready state. It takes the [`Verified`] token, so it
//!    cannot run for GPUs that were not collected and verified.
//!
//! Absent helper or library, no GPU before the deadline, an NVML error or any failed
//! check returns `Err`; the ready state is then never set, and pqcc-init prints
//! `FATAL gpu` and powers off.
//!
//! NVML is reached through the [`Nvml`] trait, shaped like NVML's attestation calls.
//! In the guest it is [`crate::nvml_helper::HelperNvml`]: a small dynamically linked
//! helper process that loads NVML ([`DlNvml`]) and answers over pipes. pqcc-init
//! itself is a static-pie glibc binary, and glibc's static `dlopen` of
//! `libnvidia-ml.so.1` crashed on an H100 host (SIGFPE inside `dlopen` with a
//! different glibc beside it), so pqcc-init never loads NVML into its own process.

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::time::{Duration, Instant};

use pqcc_core::bundle::GpuEvidenceList;
use pqcc_core::wire::MAX_EVIDENCE_LEN;
use pqcc_verify::nvidia::{self, Collateral, GpuEvidence, GpuPolicy, Rim};

/// An error from NVML (or from loading it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmlError(pub String);

impl std::fmt::Display for NvmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// NVML's attestation calls, as the gate needs them.
pub trait Nvml {
    /// `nvmlInit_v2` (idempotent: a second successful call does nothing).
    fn init(&mut self) -> Result<(), NvmlError>;
    /// `nvmlDeviceGetCount_v2`.
    fn device_count(&mut self) -> Result<u32, NvmlError>;
    /// `nvmlDeviceGetConfComputeGpuAttestationReport` for `nonce`: the SPDM
    /// GET_MEASUREMENTS request ‖ MEASUREMENTS response.
    fn attestation_report(&mut self, index: u32, nonce: &[u8; 32]) -> Result<Vec<u8>, NvmlError>;
    /// `nvmlDeviceGetConfComputeGpuCertificate`: the attestation certificate chain (PEM).
    fn attestation_cert_chain(&mut self, index: u32) -> Result<Vec<u8>, NvmlError>;
    /// `nvmlSystemSetConfComputeGpusReadyState(1)`.
    fn set_cc_ready(&mut self) -> Result<(), NvmlError>;
}

/// How long to wait for the GPU to appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// Give up after this long.
    pub timeout: Duration,
    /// Time between attempts.
    pub poll: Duration,
}

/// Verified evidence of one GPU, in the `PQGE` blob format
/// ([`pqcc_verify::nvidia::evidence`]), ready to send to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuEvidenceBlob {
    /// NVML's index of the GPU.
    pub index: u32,
    /// The blob.
    pub bytes: Vec<u8>,
}

/// What the local verifier needs: the policy, the RIMs and the revocation bundle from
/// the initramfs, and the time to judge certificates at (Unix seconds).
#[derive(Debug, Clone)]
pub struct LocalCheck {
    /// What the verifier accepts.
    pub policy: GpuPolicy,
    /// Driver and VBIOS RIMs.
    pub rims: Vec<Rim>,
    /// Offline CRL/OCSP bundle (needed when the policy requires revocation).
    pub collateral: Option<Collateral>,
    /// Unix seconds.
    pub now: u64,
}

/// The GPUs NVML reported, once [`wait_for_gpus`] saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gpus {
    /// How many.
    pub count: u32,
}

/// Every GPU's evidence, verified locally for one handshake's nonce. The only way to
/// call [`set_ready`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// One blob per GPU, in index order.
    pub blobs: Vec<GpuEvidenceBlob>,
}

impl Verified {
    /// The [`GpuEvidenceList`] encoding for [`pqcc_core::bundle::EvidenceBundle::gpu`].
    pub fn list_bytes(&self) -> Result<Vec<u8>, String> {
        let slices: Vec<&[u8]> = self.blobs.iter().map(|b| b.bytes.as_slice()).collect();
        let list = GpuEvidenceList::new(&slices)
            .map_err(|e| format!("{} GPUs' evidence: {e}", slices.len()))?;
        let mut out = vec![0u8; MAX_EVIDENCE_LEN];
        let n = list.encode(&mut out).map_err(|e| {
            format!(
                "{} GPUs' evidence does not fit the {MAX_EVIDENCE_LEN}-byte bundle: {e}",
                slices.len()
            )
        })?;
        out.truncate(n);
        Ok(out)
    }
}

/// Step 1: waits (bounded by `wait`) until NVML initialises and reports at least one
/// GPU.
pub fn wait_for_gpus(nvml: &mut dyn Nvml, wait: Wait) -> Result<Gpus, String> {
    let deadline = Instant::now() + wait.timeout;
    loop {
        let last = match nvml.init().and_then(|()| nvml.device_count()) {
            Ok(n) if n > 0 => return Ok(Gpus { count: n }),
            Ok(_) => "NVML reports no GPU".to_owned(),
            Err(e) => e.0,
        };
        let now = Instant::now();
        if now >= deadline || wait.poll.is_zero() {
            return Err(format!("no GPU within {:?}: {last}", wait.timeout));
        }
        std::thread::sleep(wait.poll.min(deadline - now));
    }
}

/// Step 2: every GPU's report for `nonce` and its certificate chain, each verified
/// locally. Does not set the ready state.
pub fn collect(
    nvml: &mut dyn Nvml,
    gpus: Gpus,
    nonce: &[u8; 32],
    check: &LocalCheck,
) -> Result<Verified, String> {
    let mut verifier = nvidia::GpuVerifier::new();
    let mut blobs = Vec::new();
    for index in 0..gpus.count {
        let report = nvml
            .attestation_report(index, nonce)
            .map_err(|e| format!("GPU {index}: attestation report: {e}"))?;
        let mut pem = nvml
            .attestation_cert_chain(index)
            .map_err(|e| format!("GPU {index}: certificate chain: {e}"))?;
        while pem.last() == Some(&0) {
            pem.pop();
        }
        let evidence = GpuEvidence::from_report_and_pem(&report, &pem)
            .map_err(|e| format!("GPU {index}: evidence: {e}"))?;
        let r = verifier.verify(
            &evidence,
            &check.rims,
            &check.policy,
            nonce,
            check.now,
            check.collateral.as_ref(),
        );
        if !r.all_passed() {
            let failed: Vec<String> = r
                .checks
                .iter()
                .filter(|c| c.outcome == nvidia::Outcome::Fail)
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect();
            return Err(format!("GPU {index} failed {}", failed.join("; ")));
        }
        let bytes = evidence
            .to_blob()
            .map_err(|e| format!("GPU {index}: evidence blob: {e}"))?;
        blobs.push(GpuEvidenceBlob { index, bytes });
    }
    Ok(Verified { blobs })
}

/// Step 3: every GPU passed here and at the broker: let work start.
pub fn set_ready(nvml: &mut dyn Nvml, verified: Verified) -> Result<(), String> {
    drop(verified);
    nvml.set_cc_ready()
        .map_err(|e| format!("setting the CC ready state: {e}"))
}

// ---- The real NVML, loaded at run time. ----

const NVML_SUCCESS: c_int = 0;
const NVML_CC_GPU_CEC_NONCE_SIZE: usize = 0x20;
const NVML_CC_GPU_ATTESTATION_REPORT_SIZE: usize = 0x2000;
const NVML_CC_GPU_CEC_ATTESTATION_REPORT_SIZE: usize = 0x1000;
const NVML_GPU_CERT_CHAIN_SIZE: usize = 0x1000;
const NVML_GPU_ATTESTATION_CERT_CHAIN_SIZE: usize = 0x1400;

/// `nvmlConfComputeGpuAttestationReport_t` (nvml.h).
#[repr(C)]
struct CcAttestationReport {
    is_cec_attestation_report_present: c_uint,
    attestation_report_size: c_uint,
    cec_attestation_report_size: c_uint,
    nonce: [u8; NVML_CC_GPU_CEC_NONCE_SIZE],
    attestation_report: [u8; NVML_CC_GPU_ATTESTATION_REPORT_SIZE],
    cec_attestation_report: [u8; NVML_CC_GPU_CEC_ATTESTATION_REPORT_SIZE],
}

/// `nvmlConfComputeGpuCertificate_t` (nvml.h).
#[repr(C)]
struct CcGpuCertificate {
    cert_chain_size: c_uint,
    attestation_cert_chain_size: c_uint,
    cert_chain: [u8; NVML_GPU_CERT_CHAIN_SIZE],
    attestation_cert_chain: [u8; NVML_GPU_ATTESTATION_CERT_CHAIN_SIZE],
}

type Device = *mut c_void;
type FnVoid = unsafe extern "C" fn() -> c_int;
type FnCount = unsafe extern "C" fn(*mut c_uint) -> c_int;
type FnHandle = unsafe extern "C" fn(c_uint, *mut Device) -> c_int;
type FnReport = unsafe extern "C" fn(Device, *mut CcAttestationReport) -> c_int;
type FnCert = unsafe extern "C" fn(Device, *mut CcGpuCertificate) -> c_int;
type FnReady = unsafe extern "C" fn(c_uint) -> c_int;
type FnErr = unsafe extern "C" fn(c_int) -> *const c_char;

/// NVML through `dlopen("libnvidia-ml.so.1")`.
pub struct DlNvml {
    lib: *mut c_void,
    init: FnVoid,
    shutdown: FnVoid,
    count: FnCount,
    handle: FnHandle,
    report: FnReport,
    cert: FnCert,
    ready: FnReady,
    error_string: FnErr,
    initialised: bool,
}

fn dl_error() -> String {
    // SAFETY: dlerror takes no arguments and returns NULL or a pointer to a
    // NUL-terminated string valid until the next dl* call on this thread; it is
    // copied before any other call.
    let p = unsafe { libc::dlerror() };
    if p.is_null() {
        "unknown dynamic loader error".into()
    } else {
        // SAFETY: non-NULL, NUL-terminated (see above).
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

impl DlNvml {
    /// Loads `libnvidia-ml.so.1` and resolves the calls the gate uses.
    pub fn load() -> Result<Self, NvmlError> {
        Self::load_from(c"libnvidia-ml.so.1")
    }

    /// Loads NVML from `path` (a file name searched by the loader, or a path).
    pub fn load_from(path: &CStr) -> Result<Self, NvmlError> {
        // SAFETY: `path` is NUL-terminated; loading NVML runs its initialisers,
        // which is what using it means.
        let lib = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if lib.is_null() {
            return Err(NvmlError(format!(
                "cannot load {}: {}",
                path.to_string_lossy(),
                dl_error()
            )));
        }
        let sym = |name: &CStr| -> Result<*mut c_void, NvmlError> {
            // SAFETY: `lib` is a live handle from dlopen, `name` NUL-terminated.
            let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
            if p.is_null() {
                Err(NvmlError(format!(
                    "{} lacks {} (driver too old for confidential computing?)",
                    path.to_string_lossy(),
                    name.to_string_lossy()
                )))
            } else {
                Ok(p)
            }
        };
        let r = (|| {
            // SAFETY: every transmute below turns the address of NVML's exported
            // function of that name into the function type of its C signature in
            // nvml.h; the addresses stay valid until dlclose in Drop.
            unsafe {
                Ok(Self {
                    lib,
                    init: std::mem::transmute::<*mut c_void, FnVoid>(sym(c"nvmlInit_v2")?),
                    shutdown: std::mem::transmute::<*mut c_void, FnVoid>(sym(c"nvmlShutdown")?),
                    count: std::mem::transmute::<*mut c_void, FnCount>(sym(
                        c"nvmlDeviceGetCount_v2",
                    )?),
                    handle: std::mem::transmute::<*mut c_void, FnHandle>(sym(
                        c"nvmlDeviceGetHandleByIndex_v2",
                    )?),
                    report: std::mem::transmute::<*mut c_void, FnReport>(sym(
                        c"nvmlDeviceGetConfComputeGpuAttestationReport",
                    )?),
                    cert: std::mem::transmute::<*mut c_void, FnCert>(sym(
                        c"nvmlDeviceGetConfComputeGpuCertificate",
                    )?),
                    ready: std::mem::transmute::<*mut c_void, FnReady>(sym(
                        c"nvmlSystemSetConfComputeGpusReadyState",
                    )?),
                    error_string: std::mem::transmute::<*mut c_void, FnErr>(sym(
                        c"nvmlErrorString",
                    )?),
                    initialised: false,
                })
            }
        })();
        if r.is_err() {
            // SAFETY: `lib` came from dlopen and nothing from it is used any more.
            unsafe { libc::dlclose(lib) };
        }
        r
    }

    fn check(&self, what: &str, rc: c_int) -> Result<(), NvmlError> {
        if rc == NVML_SUCCESS {
            return Ok(());
        }
        // SAFETY: nvmlErrorString accepts any return code and returns a pointer to a
        // static NUL-terminated string (or NULL).
        let p = unsafe { (self.error_string)(rc) };
        let msg = if p.is_null() {
            String::from("unknown error")
        } else {
            // SAFETY: non-NULL static NUL-terminated string (above).
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        };
        Err(NvmlError(format!("{what}: {msg} (NVML {rc})")))
    }

    fn device(&self, index: u32) -> Result<Device, NvmlError> {
        let mut dev: Device = std::ptr::null_mut();
        // SAFETY: NVML is initialised (callers check), `dev` is a valid out-pointer.
        let rc = unsafe { (self.handle)(index, &mut dev) };
        self.check("nvmlDeviceGetHandleByIndex_v2", rc)?;
        Ok(dev)
    }

    fn need_init(&self) -> Result<(), NvmlError> {
        if self.initialised {
            Ok(())
        } else {
            Err(NvmlError("NVML is not initialised".into()))
        }
    }
}

impl Nvml for DlNvml {
    fn init(&mut self) -> Result<(), NvmlError> {
        if self.initialised {
            return Ok(());
        }
        // SAFETY: nvmlInit_v2 takes no arguments.
        let rc = unsafe { (self.init)() };
        self.check("nvmlInit_v2", rc)?;
        self.initialised = true;
        Ok(())
    }

    fn device_count(&mut self) -> Result<u32, NvmlError> {
        self.need_init()?;
        let mut n: c_uint = 0;
        // SAFETY: NVML initialised, `n` a valid out-pointer.
        let rc = unsafe { (self.count)(&mut n) };
        self.check("nvmlDeviceGetCount_v2", rc)?;
        Ok(n)
    }

    fn attestation_report(&mut self, index: u32, nonce: &[u8; 32]) -> Result<Vec<u8>, NvmlError> {
        self.need_init()?;
        let dev = self.device(index)?;
        let mut rep = Box::new(CcAttestationReport {
            is_cec_attestation_report_present: 0,
            attestation_report_size: 0,
            cec_attestation_report_size: 0,
            nonce: *nonce,
            attestation_report: [0; NVML_CC_GPU_ATTESTATION_REPORT_SIZE],
            cec_attestation_report: [0; NVML_CC_GPU_CEC_ATTESTATION_REPORT_SIZE],
        });
        // SAFETY: `dev` is a handle from NVML, `rep` a valid, writable struct of the
        // layout nvml.h declares, alive for the call.
        let rc = unsafe { (self.report)(dev, &mut *rep) };
        self.check("nvmlDeviceGetConfComputeGpuAttestationReport", rc)?;
        let n = rep.attestation_report_size as usize;
        rep.attestation_report
            .get(..n)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| NvmlError(format!("attestation report size {n} out of range")))
    }

    fn attestation_cert_chain(&mut self, index: u32) -> Result<Vec<u8>, NvmlError> {
        self.need_init()?;
        let dev = self.device(index)?;
        let mut c = Box::new(CcGpuCertificate {
            cert_chain_size: 0,
            attestation_cert_chain_size: 0,
            cert_chain: [0; NVML_GPU_CERT_CHAIN_SIZE],
            attestation_cert_chain: [0; NVML_GPU_ATTESTATION_CERT_CHAIN_SIZE],
        });
        // SAFETY: as for the report: valid handle, valid writable struct.
        let rc = unsafe { (self.cert)(dev, &mut *c) };
        self.check("nvmlDeviceGetConfComputeGpuCertificate", rc)?;
        let n = c.attestation_cert_chain_size as usize;
        c.attestation_cert_chain
            .get(..n)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| NvmlError(format!("certificate chain size {n} out of range")))
    }

    fn set_cc_ready(&mut self) -> Result<(), NvmlError> {
        self.need_init()?;
        // SAFETY: NVML initialised; 1 = NVML_CC_ACCEPTING_CLIENT_REQUESTS_TRUE.
        let rc = unsafe { (self.ready)(1) };
        self.check("nvmlSystemSetConfComputeGpusReadyState", rc)
    }
}

impl Drop for DlNvml {
    fn drop(&mut self) {
        // SAFETY: shutdown balances a successful init; the handle came from dlopen and
        // no function pointer from it is used after this.
        unsafe {
            if self.initialised {
                (self.shutdown)();
            }
            libc::dlclose(self.lib);
        }
    }
}
