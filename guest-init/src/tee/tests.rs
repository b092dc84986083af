//! Collection against a fake configfs-tsm tree and fake device files in a temp dir.
//!
//! `FakeTsm` stands in for the kernel's configfs-tsm: its `mkdir` creates the entry's
//! attribute files, with `outblob` and `auxblob` as FIFOs served by a thread that, like
//! the kernel, reads `inblob`, bumps `generation` and answers with a report carrying
//! that report data (or, on request, misbehaves).

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("pqcc-tee-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn mkfifo(p: &Path) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a live NUL-terminated path for the duration of the call.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(r, 0, "mkfifo {}", p.display());
}

/// How the fake kernel behaves.
#[derive(Clone, Copy, PartialEq)]
enum Fake {
    Honest,
    /// Another writer changes `inblob` too: generation advances twice.
    ConcurrentWriter,
    /// Answers with a report for other report data.
    WrongReportData,
}

/// A fake configfs-tsm `mkdir`: provider, generation 0, inblob, FIFO outblob/auxblob,
/// and a thread acting as the kernel.
fn fake_mkdir(
    provider: &'static str,
    fake: Fake,
    make_out: fn(&[u8; 64]) -> Vec<u8>,
    aux: Vec<u8>,
) -> impl Fn(&Path) -> std::io::Result<()> {
    move |dir: &Path| {
        fs::create_dir(dir)?;
        fs::write(dir.join("provider"), format!("{provider}\n"))?;
        fs::write(dir.join("generation"), "0\n")?;
        fs::write(dir.join("inblob"), b"")?;
        mkfifo(&dir.join("outblob"));
        let has_aux = provider == "sev_guest";
        if has_aux {
            mkfifo(&dir.join("auxblob"));
        }
        let dir = dir.to_path_buf();
        let aux = aux.clone();
        std::thread::spawn(move || {
            // Blocks until the collector opens outblob for reading.
            let mut out = fs::OpenOptions::new()
                .write(true)
                .open(dir.join("outblob"))
                .unwrap();
            let inblob = fs::read(dir.join("inblob")).unwrap();
            let mut rd: [u8; 64] = inblob.as_slice().try_into().unwrap();
            let generation = if fake == Fake::ConcurrentWriter {
                "2\n"
            } else {
                "1\n"
            };
            fs::write(dir.join("generation"), generation).unwrap();
            if fake == Fake::WrongReportData {
                rd[0] ^= 1;
            }
            out.write_all(&make_out(&rd)).unwrap();
            drop(out);
            if has_aux {
                let mut a = fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("auxblob"))
                    .unwrap();
                a.write_all(&aux).unwrap();
            }
        });
        Ok(())
    }
}

fn snp_report(rd: &[u8; 64]) -> Vec<u8> {
    let mut r = vec![0xa5u8; SNP_REPORT_LEN];
    r[..4].copy_from_slice(&2u32.to_le_bytes());
    r[SNP_REPORT_DATA_OFFSET..SNP_REPORT_DATA_OFFSET + 64].copy_from_slice(rd);
    r
}

/// A v4 TD quote with 40 bytes of auth data and 30 bytes of zero padding.
fn tdx_quote(rd: &[u8; 64]) -> Vec<u8> {
    let mut q = vec![0x5au8; 48 + 584];
    q[..2].copy_from_slice(&4u16.to_le_bytes());
    q[48 + 520..48 + 584].copy_from_slice(rd);
    q.extend_from_slice(&40u32.to_le_bytes());
    q.extend_from_slice(&[0x11; 40]);
    q.extend_from_slice(&[0; 30]);
    q
}

fn rd() -> [u8; 64] {
    core::array::from_fn(|i| u8::try_from(i).unwrap() ^ 0x3c)
}

fn tsm_root(tag: &str) -> (TempDir, PathBuf) {
    let t = TempDir::new(tag);
    let report = t.0.join(TSM_REPORT_DIR);
    fs::create_dir_all(&report).unwrap();
    (t, report)
}

#[test]
fn snp_through_configfs_tsm() {
    let (_t, report) = tsm_root("snp");
    let table = vec![7u8; 100];
    let mk = fake_mkdir("sev_guest", Fake::Honest, snp_report, table.clone());
    let ev = configfs::collect(&report, TeeKind::Snp, &rd(), &mk).expect("collects");
    assert_eq!(ev.len(), SNP_REPORT_LEN + table.len());
    assert_eq!(&ev[..SNP_REPORT_LEN], snp_report(&rd()).as_slice());
    assert_eq!(&ev[SNP_REPORT_LEN..], table.as_slice());
    check_evidence(TeeKind::Snp, &ev, &rd()).unwrap();
    // The entry is removed afterwards.
    assert_eq!(fs::read_dir(&report).unwrap().count(), 0);
}

#[test]
fn tdx_through_configfs_tsm_is_trimmed() {
    let (_t, report) = tsm_root("tdx");
    let mk = fake_mkdir("tdx_guest", Fake::Honest, tdx_quote, Vec::new());
    let ev = configfs::collect(&report, TeeKind::Tdx, &rd(), &mk).expect("collects");
    assert_eq!(ev.len(), 48 + 584 + 4 + 40, "zero padding trimmed");
    check_evidence(TeeKind::Tdx, &ev, &rd()).unwrap();
}

#[test]
fn concurrent_writer_is_detected() {
    let (_t, report) = tsm_root("gen");
    let mk = fake_mkdir("sev_guest", Fake::ConcurrentWriter, snp_report, Vec::new());
    let e = configfs::collect(&report, TeeKind::Snp, &rd(), &mk).unwrap_err();
    assert!(e.contains("generation went 0 -> 2"), "{e}");
    assert_eq!(
        fs::read_dir(&report).unwrap().count(),
        0,
        "entry removed on error"
    );
}

#[test]
fn wrong_provider_is_refused() {
    let (_t, report) = tsm_root("prov");
    let mk = |dir: &Path| {
        fs::create_dir(dir)?;
        fs::write(dir.join("provider"), "tdx_guest\n")
    };
    let e = configfs::collect(&report, TeeKind::Snp, &rd(), &mk).unwrap_err();
    assert!(e.contains("provider is \"tdx_guest\""), "{e}");
}

#[test]
fn wrong_report_data_is_refused_by_collect() {
    // Through the public entry point, whose final check compares the report data.
    let (t, report) = tsm_root("rd");
    let mk = fake_mkdir("sev_guest", Fake::WrongReportData, snp_report, Vec::new());
    let ev = configfs::collect(&report, TeeKind::Snp, &rd(), &mk).unwrap();
    let e = check_evidence(TeeKind::Snp, &ev, &rd()).unwrap_err();
    assert!(e.contains("not the value requested"), "{e}");
    drop(t);
}

#[test]
fn collect_prefers_configfs_and_names_missing_sources() {
    // Nothing at all.
    let t = TempDir::new("none");
    let e = collect(TeeKind::Tdx, &rd(), &t.0).unwrap_err();
    assert!(
        e.contains("tsm/report") && e.contains("dev/tdx_guest"),
        "{e}"
    );
    let e = collect(TeeKind::Snp, &rd(), &t.0).unwrap_err();
    assert!(e.contains("dev/sev-guest"), "{e}");

    // A configfs-tsm directory that is not a real configfs (mkdir makes no files):
    // collection fails naming the attribute, it does not fall back to the device.
    let (t, _report) = tsm_root("plain");
    fs::create_dir_all(t.0.join("dev")).unwrap();
    fs::write(t.0.join(SEV_GUEST_DEV), b"").unwrap();
    let e = collect(TeeKind::Snp, &rd(), &t.0).unwrap_err();
    assert!(e.contains("provider"), "{e}");
}

#[test]
fn fake_device_files_give_clear_ioctl_errors() {
    // Regular files standing in for the devices: the ioctls fail with ENOTTY.
    let t = TempDir::new("dev");
    fs::create_dir_all(t.0.join("dev")).unwrap();
    fs::write(t.0.join(SEV_GUEST_DEV), b"").unwrap();
    fs::write(t.0.join(TDX_GUEST_DEV), b"").unwrap();
    let e = collect(TeeKind::Snp, &rd(), &t.0).unwrap_err();
    assert!(
        e.contains("SNP_GET_EXT_REPORT") && e.contains("dev/sev-guest"),
        "{e}"
    );
    let e = collect(TeeKind::Tdx, &rd(), &t.0).unwrap_err();
    assert!(
        e.contains("TDX_CMD_GET_REPORT0") && e.contains("dev/tdx_guest"),
        "{e}"
    );
}

#[test]
fn ioctl_numbers_match_the_kernel_headers() {
    // Values of the kernel's _IOWR macros on x86-64 (sev-guest.h, tdx-guest.h).
    assert_eq!(sev_guest::SNP_GET_REPORT, 0xc020_5300);
    assert_eq!(sev_guest::SNP_GET_EXT_REPORT, 0xc020_5302);
    assert_eq!(tdx_guest::TDX_CMD_GET_REPORT0, 0xc440_5401);
}

#[test]
fn snp_response_parsing() {
    let mut resp = vec![0u8; sev_guest::RESP_LEN];
    resp[4..8].copy_from_slice(&u32::try_from(SNP_REPORT_LEN).unwrap().to_le_bytes());
    resp[0x20] = 2;
    assert_eq!(
        sev_guest::parse_response(&resp).unwrap().len(),
        SNP_REPORT_LEN
    );
    let mut bad = resp.clone();
    bad[0] = 0x16;
    assert!(
        sev_guest::parse_response(&bad)
            .unwrap_err()
            .contains("status 0x16")
    );
    let mut bad = resp.clone();
    bad[4] = 0;
    assert!(
        sev_guest::parse_response(&bad)
            .unwrap_err()
            .contains("size")
    );
    assert!(sev_guest::parse_response(&resp[..10]).is_err());
}

#[test]
fn certificate_table_trimming() {
    // One entry (offset 48, length 10), the terminator, the certificate, zero tail.
    let mut t = vec![0u8; 4096];
    t[..16].fill(0x63);
    t[16..20].copy_from_slice(&48u32.to_le_bytes());
    t[20..24].copy_from_slice(&10u32.to_le_bytes());
    t[48..58].fill(0xcc);
    assert_eq!(sev_guest::trim_table(&t).len(), 58);
    assert!(sev_guest::trim_table(&[0u8; 4096]).is_empty());
    // Garbage never panics.
    let _ = sev_guest::trim_table(&[0xffu8; 100]);
}

#[test]
fn quote_length_never_panics() {
    let q = tdx_quote(&rd());
    assert_eq!(tdx_quote_len(&q), Some(48 + 584 + 4 + 40));
    for n in 0..q.len() {
        let _ = tdx_quote_len(&q[..n]);
        let _ = check_evidence(TeeKind::Tdx, &q[..n], &rd());
        let _ = check_evidence(TeeKind::Snp, &q[..n], &rd());
    }
    let mut v5 = vec![5u8, 0];
    v5.resize(60, 0xff);
    assert_eq!(tdx_quote_len(&v5), None);
}
