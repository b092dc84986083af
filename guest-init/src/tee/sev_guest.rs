//! `/dev/sev-guest` ioctls (Linux `include/uapi/linux/sev-guest.h`).
//!
//! ```c
//! struct snp_report_req     { __u8 user_data[64]; __u32 vmpl; __u8 rsvd[28]; };        // 96
//! struct snp_ext_report_req { struct snp_report_req data; __u64 certs_address;
//!                             __u32 certs_len; };                                       // 112
//! struct snp_report_resp    { __u8 data[4000]; };
//! struct snp_guest_request_ioctl { __u8 msg_version; __u64 req_data; __u64 resp_data;
//!                                  union { __u64 exitinfo2; struct { __u32 fw_error;
//!                                  __u32 vmm_error; }; }; };                            // 32
//! #define SNP_GET_REPORT     _IOWR('S', 0x0, struct snp_guest_request_ioctl)
//! #define SNP_GET_EXT_REPORT _IOWR('S', 0x2, struct snp_guest_request_ioctl)
//! ```
//!
//! The response buffer holds the firmware's `MSG_REPORT_RSP` (SEV-SNP ABI spec):
//! `status: u32`, `report_size: u32`, 24 reserved bytes, then the report.
//! `SNP_GET_EXT_REPORT` needs a page-aligned certificate buffer; when it is too small
//! the call fails with `vmm_error = 1` (`SNP_GUEST_VMM_ERR_INVALID_LEN`) and
//! `certs_len` set to the size needed.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::SNP_REPORT_LEN;

/// `_IOWR(type, nr, size)` on x86-64 / arm64 / riscv.
const fn iowr(ty: u8, nr: u8, size: usize) -> u64 {
    (3u64 << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}

/// The ioctl argument (`struct snp_guest_request_ioctl`).
#[repr(C)]
#[derive(Debug, Default)]
pub struct GuestRequest {
    /// Message version: 1.
    pub msg_version: u8,
    /// Address of the request struct.
    pub req_data: u64,
    /// Address of the 4000-byte response buffer.
    pub resp_data: u64,
    /// Firmware error (low 32 bits) and VMM error (high 32 bits).
    pub exitinfo2: u64,
}

/// `struct snp_report_req`.
#[repr(C)]
#[derive(Debug)]
pub struct ReportReq {
    /// Report data.
    pub user_data: [u8; 64],
    /// VMPL to report at (0).
    pub vmpl: u32,
    /// Reserved, zero.
    pub rsvd: [u8; 28],
}

/// `struct snp_ext_report_req`.
#[repr(C)]
#[derive(Debug)]
pub struct ExtReportReq {
    /// The plain request.
    pub data: ReportReq,
    /// Address of the page-aligned certificate buffer.
    pub certs_address: u64,
    /// Its length (a multiple of 4096); on `INVALID_LEN` the length needed.
    pub certs_len: u32,
}

const _: () = assert!(std::mem::size_of::<GuestRequest>() == 32);
const _: () = assert!(std::mem::size_of::<ReportReq>() == 96);
const _: () = assert!(std::mem::size_of::<ExtReportReq>() == 112);

/// `SNP_GET_REPORT`.
pub const SNP_GET_REPORT: u64 = iowr(b'S', 0, std::mem::size_of::<GuestRequest>());
/// `SNP_GET_EXT_REPORT`.
pub const SNP_GET_EXT_REPORT: u64 = iowr(b'S', 2, std::mem::size_of::<GuestRequest>());
/// `SNP_GUEST_VMM_ERR_INVALID_LEN`.
const VMM_ERR_INVALID_LEN: u64 = 1;
/// Size of `struct snp_report_resp`.
pub const RESP_LEN: usize = 4000;
/// The certificate buffer's first size, and its cap (the evidence limit).
const CERTS_INITIAL: usize = 4 * 4096;
const CERTS_MAX: usize = 8 * 4096;

/// A page-aligned, zeroed buffer.
#[repr(C, align(4096))]
struct Page([u8; 4096]);

fn pages(n: usize) -> Vec<Page> {
    (0..n).map(|_| Page([0; 4096])).collect()
}

/// Extracts the report from a `MSG_REPORT_RSP` response buffer.
pub fn parse_response(resp: &[u8]) -> Result<&[u8], String> {
    let word = |o: usize| {
        resp.get(o..o + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| "SNP response truncated".to_string())
    };
    let status = word(0)?;
    if status != 0 {
        return Err(format!("SNP firmware status {status:#x}"));
    }
    let size = word(4)? as usize;
    if size != SNP_REPORT_LEN {
        return Err(format!("SNP report size {size}, expected {SNP_REPORT_LEN}"));
    }
    resp.get(0x20..0x20 + SNP_REPORT_LEN)
        .ok_or_else(|| "SNP response truncated".to_string())
}

/// Report ‖ certificate table through `SNP_GET_EXT_REPORT`, or the report alone
/// through `SNP_GET_REPORT` when the host has no certificates to give.
pub fn collect(dev: &Path, report_data: &[u8; 64]) -> Result<Vec<u8>, String> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(|e| format!("open {}: {e}", dev.display()))?;
    let mut resp = vec![0u8; RESP_LEN];
    let mut certs = pages(CERTS_INITIAL / 4096);
    loop {
        let certs_len = certs.len() * 4096;
        let mut ext = ExtReportReq {
            data: ReportReq {
                user_data: *report_data,
                vmpl: 0,
                rsvd: [0; 28],
            },
            certs_address: certs.as_mut_ptr() as u64,
            certs_len: u32::try_from(certs_len).unwrap_or(u32::MAX),
        };
        let mut req = GuestRequest {
            msg_version: 1,
            req_data: &raw mut ext as u64,
            resp_data: resp.as_mut_ptr() as u64,
            exitinfo2: 0,
        };
        // SAFETY: `req` points at `ext` (112 bytes), `resp` (RESP_LEN bytes) and `certs`
        // (`certs_len` bytes, page aligned), all live and exclusively borrowed for the
        // call; the kernel writes no more than those sizes (sev-guest.h ABI).
        let r = unsafe { libc::ioctl(f.as_raw_fd(), SNP_GET_EXT_REPORT as _, &raw mut req) };
        if r == 0 {
            let report = parse_response(&resp)?.to_vec();
            // SAFETY: `certs` is `certs_len` initialised bytes (zeroed, then written by
            // the kernel); `Page` is a plain byte array with no padding.
            let table =
                unsafe { std::slice::from_raw_parts(certs.as_ptr().cast::<u8>(), certs_len) };
            let mut out = report;
            out.extend_from_slice(trim_table(table));
            return Ok(out);
        }
        let err = std::io::Error::last_os_error();
        let vmm_error = req.exitinfo2 >> 32;
        if vmm_error == VMM_ERR_INVALID_LEN && (ext.certs_len as usize) > certs_len {
            let need = (ext.certs_len as usize).div_ceil(4096) * 4096;
            if need > CERTS_MAX {
                return Err(format!(
                    "SNP certificates need {need} bytes, over {CERTS_MAX}"
                ));
            }
            certs = pages(need / 4096);
            continue;
        }
        if err.raw_os_error() == Some(libc::ENOTTY) || err.raw_os_error() == Some(libc::EINVAL) {
            return Err(format!("SNP_GET_EXT_REPORT on {}: {err}", dev.display()));
        }
        // No certificates from the host (e.g. a hypervisor without an extended
        // request): the plain report, the VCEK then comes from the verifier's cache.
        return get_report(&f, dev, report_data, &mut resp);
    }
}

fn get_report(
    f: &std::fs::File,
    dev: &Path,
    report_data: &[u8; 64],
    resp: &mut [u8],
) -> Result<Vec<u8>, String> {
    let mut rq = ReportReq {
        user_data: *report_data,
        vmpl: 0,
        rsvd: [0; 28],
    };
    let mut req = GuestRequest {
        msg_version: 1,
        req_data: &raw mut rq as u64,
        resp_data: resp.as_mut_ptr() as u64,
        exitinfo2: 0,
    };
    // SAFETY: `req` points at `rq` (96 bytes) and `resp` (RESP_LEN bytes), both live
    // and exclusively borrowed for the call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), SNP_GET_REPORT as _, &raw mut req) };
    if r != 0 {
        let err = std::io::Error::last_os_error();
        return Err(format!(
            "SNP_GET_REPORT on {}: {err} (exitinfo2 {:#x})",
            dev.display(),
            req.exitinfo2
        ));
    }
    Ok(parse_response(resp)?.to_vec())
}

/// The certificate table without the kernel buffer's zero tail: entries up to the
/// terminator, then up to the end of the last certificate.
pub fn trim_table(t: &[u8]) -> &[u8] {
    let mut end = 0usize;
    let mut pos = 0usize;
    while let Some(e) = t.get(pos..pos + 24) {
        pos += 24;
        if e.iter().all(|&b| b == 0) {
            end = end.max(pos);
            break;
        }
        let off = e
            .get(16..20)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes);
        let len = e
            .get(20..24)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes);
        if let (Some(o), Some(l)) = (off, len) {
            end = end.max((o as usize).saturating_add(l as usize));
        }
    }
    if pos == 24 && end == 24 {
        // Only a terminator: no certificates.
        return &[];
    }
    t.get(..end.min(t.len())).unwrap_or(t)
}
