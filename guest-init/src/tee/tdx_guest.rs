//! `/dev/tdx_guest` (Linux `include/uapi/linux/tdx-guest.h`).
//!
//! ```c
//! struct tdx_report_req { __u8 reportdata[64]; __u8 tdreport[1024]; };
//! #define TDX_CMD_GET_REPORT0 _IOWR('T', 1, struct tdx_report_req)
//! ```
//!
//! A TDREPORT is MACed with a key only this CPU holds: a remote verifier cannot check
//! it. It becomes evidence only once the host's quoting enclave turns it into a quote,
//! which Linux exposes through configfs-tsm (`super::configfs`).

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Length of a TDREPORT.
pub const TDREPORT_LEN: usize = 1024;
/// Offset of REPORTDATA in a TDREPORT (inside REPORTMACSTRUCT).
pub const TDREPORT_DATA_OFFSET: usize = 128;

/// `struct tdx_report_req`.
#[repr(C)]
#[derive(Debug)]
pub struct ReportReq {
    /// Report data in.
    pub reportdata: [u8; 64],
    /// TDREPORT out.
    pub tdreport: [u8; TDREPORT_LEN],
}

const _: () = assert!(std::mem::size_of::<ReportReq>() == 1088);

/// `TDX_CMD_GET_REPORT0`.
pub const TDX_CMD_GET_REPORT0: u64 =
    (3u64 << 30) | ((std::mem::size_of::<ReportReq>() as u64) << 16) | ((b'T' as u64) << 8) | 1;

/// A TDREPORT with `report_data`, through `TDX_CMD_GET_REPORT0`.
pub fn get_report0(dev: &Path, report_data: &[u8; 64]) -> Result<Box<[u8; TDREPORT_LEN]>, String> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(|e| format!("open {}: {e}", dev.display()))?;
    let mut req = Box::new(ReportReq {
        reportdata: *report_data,
        tdreport: [0; TDREPORT_LEN],
    });
    let p: *mut ReportReq = &raw mut *req;
    // SAFETY: `p` points at a live, exclusively owned 1088-byte `tdx_report_req`; the
    // kernel reads `reportdata` and writes `tdreport`, nothing else.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), TDX_CMD_GET_REPORT0 as _, p) };
    if r != 0 {
        return Err(format!(
            "TDX_CMD_GET_REPORT0 on {}: {}",
            dev.display(),
            std::io::Error::last_os_error()
        ));
    }
    let got = req
        .tdreport
        .get(TDREPORT_DATA_OFFSET..TDREPORT_DATA_OFFSET + 64);
    if got != Some(report_data.as_slice()) {
        return Err("TDREPORT report data is not the value requested".into());
    }
    Ok(Box::new(req.tdreport))
}
