//! The GPU evidence a guest sends, and its byte format (`docs/gpu-attestation.md`).
//!
//! ```text
//! offset  size  field
//! 0       4     magic "PQGE"
//! 4       1     format version = 1
//! 5       2     request length, u16 LE (must be 37)
//! 7       R     SPDM GET_MEASUREMENTS request
//! 7+R     4     response length, u32 LE (1 .. 1 MiB)
//! 11+R    S     SPDM MEASUREMENTS response, signature included
//! 11+R+S  1     certificate count N (1 .. 8), leaf first
//! …       N ×   { u16 LE length (1 .. 8192), DER certificate }
//! ```
//! Nothing may follow the last certificate.

use super::spdm::{MAX_RESPONSE_LEN, REQUEST_LEN};
use super::x509::pem_chain_to_der;

/// Magic at the start of an evidence blob.
pub const MAGIC: &[u8; 4] = b"PQGE";
/// The format version this code writes and reads.
pub const VERSION: u8 = 1;
/// Most certificates in a blob.
pub const MAX_CERTS: usize = 8;
/// Largest certificate in a blob.
pub const MAX_CERT_LEN: usize = 8192;

/// GPU evidence: the SPDM exchange and the device certificate chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuEvidence {
    /// SPDM GET_MEASUREMENTS request, as sent to the GPU.
    pub request: Vec<u8>,
    /// SPDM MEASUREMENTS response, signature included.
    pub response: Vec<u8>,
    /// DER certificates, leaf first, root last.
    pub certs: Vec<Vec<u8>>,
}

/// Why an evidence blob or file does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceError(pub String);

impl std::fmt::Display for EvidenceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EvidenceError {}

fn err<T>(s: impl Into<String>) -> Result<T, EvidenceError> {
    Err(EvidenceError(s.into()))
}

impl GpuEvidence {
    /// Builds evidence from NVML's attestation report (request ‖ response, as
    /// `nvmlDeviceGetConfComputeGpuAttestationReport` and NVIDIA's sample files hold
    /// it) and a PEM certificate chain.
    pub fn from_report_and_pem(report: &[u8], pem_chain: &[u8]) -> Result<Self, EvidenceError> {
        if report.len() <= REQUEST_LEN {
            return err(format!("attestation report is only {} bytes", report.len()));
        }
        let (request, response) = report.split_at(REQUEST_LEN);
        let certs = pem_chain_to_der(pem_chain).map_err(EvidenceError)?;
        Ok(Self {
            request: request.to_vec(),
            response: response.to_vec(),
            certs,
        })
    }

    /// Decodes hex (whitespace ignored), as in NVIDIA's `attestationReport.txt`.
    pub fn report_from_hex(text: &[u8]) -> Result<Vec<u8>, EvidenceError> {
        let clean: Vec<u8> = text
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        hex::decode(clean).map_err(|e| EvidenceError(format!("report is not hex: {e}")))
    }

    /// Encodes the blob (format above).
    pub fn to_blob(&self) -> Result<Vec<u8>, EvidenceError> {
        if self.request.len() != REQUEST_LEN {
            return err("request is not 37 bytes");
        }
        if self.response.is_empty() || self.response.len() > MAX_RESPONSE_LEN {
            return err("response length out of range");
        }
        if self.certs.is_empty() || self.certs.len() > MAX_CERTS {
            return err("certificate count out of range");
        }
        let mut out = Vec::with_capacity(16 + self.request.len() + self.response.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&37u16.to_le_bytes());
        out.extend_from_slice(&self.request);
        let rl = u32::try_from(self.response.len())
            .map_err(|_| EvidenceError("response too long".into()))?;
        out.extend_from_slice(&rl.to_le_bytes());
        out.extend_from_slice(&self.response);
        out.push(
            u8::try_from(self.certs.len())
                .map_err(|_| EvidenceError("too many certificates".into()))?,
        );
        for c in &self.certs {
            if c.is_empty() || c.len() > MAX_CERT_LEN {
                return err("certificate length out of range");
            }
            let l =
                u16::try_from(c.len()).map_err(|_| EvidenceError("certificate too long".into()))?;
            out.extend_from_slice(&l.to_le_bytes());
            out.extend_from_slice(c);
        }
        Ok(out)
    }

    /// Decodes a blob strictly: magic, version, every length in range, no trailing bytes.
    pub fn from_blob(blob: &[u8]) -> Result<Self, EvidenceError> {
        let mut pos = 0usize;
        let mut take = |n: usize, what: &str| -> Result<&[u8], EvidenceError> {
            let end = pos
                .checked_add(n)
                .filter(|e| *e <= blob.len())
                .ok_or_else(|| EvidenceError(format!("blob truncated at {what}")))?;
            let s = &blob[pos..end];
            pos = end;
            Ok(s)
        };
        if take(4, "magic")? != MAGIC {
            return err("not a GPU evidence blob (bad magic)");
        }
        let v = take(1, "version")?[0];
        if v != VERSION {
            return err(format!("evidence format version {v} is not supported"));
        }
        let b = take(2, "request length")?;
        let rl = usize::from(u16::from_le_bytes([b[0], b[1]]));
        if rl != REQUEST_LEN {
            return err(format!("request length {rl}, expected {REQUEST_LEN}"));
        }
        let request = take(rl, "request")?.to_vec();
        let b = take(4, "response length")?;
        let sl = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if sl == 0 || sl > MAX_RESPONSE_LEN {
            return err(format!("response length {sl} out of range"));
        }
        let response = take(sl, "response")?.to_vec();
        let n = usize::from(take(1, "certificate count")?[0]);
        if n == 0 || n > MAX_CERTS {
            return err(format!("certificate count {n} out of range"));
        }
        let mut certs = Vec::with_capacity(n);
        for i in 0..n {
            let b = take(2, "certificate length")?;
            let cl = usize::from(u16::from_le_bytes([b[0], b[1]]));
            if cl == 0 || cl > MAX_CERT_LEN {
                return err(format!("certificate {i} length {cl} out of range"));
            }
            certs.push(take(cl, "certificate")?.to_vec());
        }
        if pos != blob.len() {
            return err(format!(
                "{} trailing bytes after the blob",
                blob.len() - pos
            ));
        }
        Ok(Self {
            request,
            response,
            certs,
        })
    }
}
