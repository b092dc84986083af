//! TEE evidence collection in the guest: SEV-SNP and TDX.
//!
//! [`collect`] asks the platform for a report whose report data is exactly the
//! caller's 64 bytes (the handshake binding value) and returns the evidence blob in the
//! format `pqcc_verify::tee` verifies (`docs/evidence.md`):
//!
//! - **SEV-SNP**: the 0x4A0-byte attestation report ‖ the certificate table (empty
//!   when the host supplies no certificates).
//! - **TDX**: the quote, trimmed to its exact length.
//!
//! Sources, in order of preference:
//! 1. **configfs-tsm** (`/sys/kernel/config/tsm/report`, Linux ≥ 6.7): a fresh entry,
//!    `inblob` ← report data, then `outblob` (report or quote) and `auxblob` (SNP
//!    certificates). `provider` must name the expected platform, and `generation` must
//!    have advanced exactly once (our own `inblob` write) by the time both blobs are
//!    read, so a concurrent writer cannot substitute another report. On TDX this is
//!    the only way to a quote (the host's quote service).
//! 2. **/dev/sev-guest**: `SNP_GET_EXT_REPORT` (report + certificate table), falling
//!    back to `SNP_GET_REPORT` when the host has no certificates ([`sev_guest`]).
//! 3. **/dev/tdx_guest**: `TDX_CMD_GET_REPORT0` yields a TDREPORT, which only the
//!    platform's quoting enclave can turn into a verifiable quote; without
//!    configfs-tsm [`collect`] refuses TDX with that reason ([`tdx_guest`]).
//!
//! In every case the collected report's report data is compared with the caller's
//! before it is returned. Nothing here verifies a signature: that is the broker's job.

use std::path::Path;

pub mod configfs;
pub mod sev_guest;
pub mod tdx_guest;

/// The largest TEE evidence blob (report and certificates) the guest sends, the limit
/// the broker's verifier applies (`pqcc_verify::tee::MAX_EVIDENCE_LEN`, 32 KiB); the
/// bundle around it, GPU evidence included, has the wire format's larger limit.
pub const MAX_EVIDENCE_LEN: usize = pqcc_verify::tee::MAX_EVIDENCE_LEN;
/// Length of an SEV-SNP attestation report.
pub const SNP_REPORT_LEN: usize = 0x4A0;
/// Offset of REPORT_DATA in an SEV-SNP report.
pub const SNP_REPORT_DATA_OFFSET: usize = 0x50;

/// Which TEE to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeeKind {
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
}

impl TeeKind {
    /// The configfs-tsm `provider` name of this platform's driver.
    pub fn tsm_provider(self) -> &'static str {
        match self {
            TeeKind::Snp => "sev_guest",
            TeeKind::Tdx => "tdx_guest",
        }
    }
}

/// configfs-tsm report directory, relative to the root.
pub const TSM_REPORT_DIR: &str = "sys/kernel/config/tsm/report";
/// SEV-SNP guest device, relative to the root.
pub const SEV_GUEST_DEV: &str = "dev/sev-guest";
/// TDX guest device, relative to the root.
pub const TDX_GUEST_DEV: &str = "dev/tdx_guest";

/// Collects evidence for `kind` with `report_data` in its report-data field. `root` is
/// the filesystem root (`/` in the guest; a fake tree in tests).
pub fn collect(kind: TeeKind, report_data: &[u8; 64], root: &Path) -> Result<Vec<u8>, String> {
    let tsm = root.join(TSM_REPORT_DIR);
    let evidence = if tsm.is_dir() {
        configfs::collect(&tsm, kind, report_data, &configfs::kernel_mkdir)?
    } else {
        match kind {
            TeeKind::Snp => sev_guest::collect(&root.join(SEV_GUEST_DEV), report_data)?,
            TeeKind::Tdx => {
                let dev = root.join(TDX_GUEST_DEV);
                if !dev.exists() {
                    return Err(format!(
                        "TDX: neither {} nor {} exists",
                        tsm.display(),
                        dev.display()
                    ));
                }
                // Check the device answers, so the error names the real gap.
                tdx_guest::get_report0(&dev, report_data)?;
                return Err(format!(
                    "TDX: {} gives only a TDREPORT; a quote needs the host's quote \
                     service through configfs-tsm ({} is missing)",
                    dev.display(),
                    tsm.display()
                ));
            }
        }
    };
    check_evidence(kind, &evidence, report_data)?;
    Ok(evidence)
}

/// Checks a collected blob's size and that its report data is ours.
pub fn check_evidence(
    kind: TeeKind,
    evidence: &[u8],
    report_data: &[u8; 64],
) -> Result<(), String> {
    if evidence.len() > MAX_EVIDENCE_LEN {
        return Err(format!(
            "evidence is {} bytes, over the {MAX_EVIDENCE_LEN}-byte limit",
            evidence.len()
        ));
    }
    let got = match kind {
        TeeKind::Snp => evidence.get(SNP_REPORT_DATA_OFFSET..SNP_REPORT_DATA_OFFSET + 64),
        TeeKind::Tdx => tdx_quote_report_data(evidence),
    };
    match got {
        Some(rd) if rd == report_data => Ok(()),
        Some(_) => Err(format!(
            "{kind:?}: the report's report data is not the value requested"
        )),
        None => Err(format!(
            "{kind:?}: report too short ({} bytes)",
            evidence.len()
        )),
    }
}

/// The byte range of the TD report in a v4/v5 quote (header 48 bytes; v5 adds a
/// 6-byte body descriptor).
fn tdx_body_offset(quote: &[u8]) -> Option<usize> {
    match quote.get(..2)? {
        [4, 0] => Some(48),
        [5, 0] => Some(48 + 6),
        _ => None,
    }
}

/// REPORTDATA of a v4/v5 TD quote: the last 64 bytes of the TDX 1.0 report part.
fn tdx_quote_report_data(quote: &[u8]) -> Option<&[u8]> {
    let off = tdx_body_offset(quote)? + 520;
    quote.get(off..off + 64)
}

/// A v4/v5 quote's exact length (signed part ‖ u32 auth-data length ‖ auth data), so
/// a quote service's zero padding can be trimmed.
pub fn tdx_quote_len(quote: &[u8]) -> Option<usize> {
    let signed = match quote.get(..2)? {
        [4, 0] => 48 + 584,
        [5, 0] => {
            let size = u32::from_le_bytes(quote.get(50..54)?.try_into().ok()?);
            54usize.checked_add(usize::try_from(size).ok()?)?
        }
        _ => return None,
    };
    let auth = u32::from_le_bytes(quote.get(signed..signed.checked_add(4)?)?.try_into().ok()?);
    let total = signed
        .checked_add(4)?
        .checked_add(usize::try_from(auth).ok()?)?;
    (total <= quote.len()).then_some(total)
}

#[cfg(test)]
mod tests;
