//! configfs-tsm (Linux `Documentation/ABI/testing/configfs-tsm-report`).
//!
//! An entry `report/<name>` made with `mkdir` holds `inblob` (write: the 64 bytes of
//! report data), `outblob` (read: the report or quote, produced on first read),
//! `auxblob` (read: SEV-SNP certificate table, absent or empty otherwise), `provider`
//! (the driver: `sev_guest`, `tdx_guest`) and `generation` (incremented by every write
//! to `inblob` or an option). Sequence used here:
//!
//! 1. `mkdir report/pqcc-<pid>-<n>` (a fresh entry; no one else holds it);
//! 2. read `provider` — must be the expected platform; read `generation` = g₀;
//! 3. write `inblob`;
//! 4. read `outblob`, then `auxblob` (SNP);
//! 5. read `generation` = g₁ — must be g₀ + 1: exactly our write happened, so the blobs
//!    answer our report data (a second writer between 3 and 5 makes it g₀ + 2);
//! 6. `rmdir` the entry (also on error).

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{MAX_EVIDENCE_LEN, TeeKind, tdx_quote_len};

/// Makes a report entry; the kernel populates it. Tests pass a fake.
pub type MkEntry = dyn Fn(&Path) -> io::Result<()>;

/// The real `mkdir` (configfs creates the attribute files itself).
pub fn kernel_mkdir(p: &Path) -> io::Result<()> {
    fs::create_dir(p)
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Removes the entry when dropped.
struct Entry(PathBuf);

impl Drop for Entry {
    fn drop(&mut self) {
        // configfs removes the attribute files with the directory; a fake tree needs
        // them removed first. Errors are ignored: the entry is ours and short-lived.
        if fs::remove_dir(&self.0).is_err() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

fn read_limited(path: &Path, limit: usize) -> Result<Vec<u8>, String> {
    let f = fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut out = Vec::new();
    f.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("read {}: {e}", path.display()))?;
    if out.len() > limit {
        return Err(format!("{} is over {limit} bytes", path.display()));
    }
    Ok(out)
}

fn read_text(path: &Path) -> Result<String, String> {
    let b = read_limited(path, 64)?;
    String::from_utf8(b)
        .map(|s| s.trim().to_string())
        .map_err(|_| format!("{} is not text", path.display()))
}

fn read_generation(path: &Path) -> Result<u64, String> {
    let t = read_text(path)?;
    t.parse()
        .map_err(|_| format!("{}: {t:?} is not a number", path.display()))
}

/// Collects evidence through configfs-tsm under `report_dir`, making the entry with
/// `mkdir` ([`kernel_mkdir`] in the guest).
pub fn collect(
    report_dir: &Path,
    kind: TeeKind,
    report_data: &[u8; 64],
    mkdir: &MkEntry,
) -> Result<Vec<u8>, String> {
    let name = format!(
        "pqcc-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let dir = report_dir.join(name);
    mkdir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let entry = Entry(dir);
    let dir = &entry.0;

    let provider = read_text(&dir.join("provider"))?;
    if provider != kind.tsm_provider() {
        return Err(format!(
            "configfs-tsm provider is {provider:?}, expected {:?}",
            kind.tsm_provider()
        ));
    }
    let gen_path = dir.join("generation");
    let g0 = read_generation(&gen_path)?;
    let inblob = dir.join("inblob");
    fs::OpenOptions::new()
        .write(true)
        .open(&inblob)
        .and_then(|mut f| io::Write::write_all(&mut f, report_data))
        .map_err(|e| format!("write {}: {e}", inblob.display()))?;
    let mut out = read_limited(&dir.join("outblob"), MAX_EVIDENCE_LEN)?;
    let aux = match kind {
        TeeKind::Snp => {
            let p = dir.join("auxblob");
            if p.exists() {
                read_limited(&p, MAX_EVIDENCE_LEN)?
            } else {
                Vec::new()
            }
        }
        TeeKind::Tdx => Vec::new(),
    };
    let g1 = read_generation(&gen_path)?;
    if g1 != g0.wrapping_add(1) {
        return Err(format!(
            "configfs-tsm generation went {g0} -> {g1} (expected {}): another writer \
             changed the request",
            g0.wrapping_add(1)
        ));
    }
    match kind {
        TeeKind::Snp => {
            if out.len() != super::SNP_REPORT_LEN {
                return Err(format!("SNP outblob is {} bytes, expected 1184", out.len()));
            }
            out.extend_from_slice(&aux);
        }
        TeeKind::Tdx => {
            let n = tdx_quote_len(&out)
                .ok_or_else(|| format!("TDX outblob ({} bytes) is not a v4/v5 quote", out.len()))?;
            out.truncate(n);
        }
    }
    drop(entry);
    Ok(out)
}
