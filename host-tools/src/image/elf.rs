//! The little of ELF that `pqcc image build` reads to check that a dynamically linked
//! program in the image can start: its program interpreter (`PT_INTERP`) and, from its
//! dynamic section (`PT_DYNAMIC`), the shared libraries it needs (`DT_NEEDED`) and where
//! it asks the loader to look (`DT_RUNPATH`, `DT_RPATH`). 64-bit little-endian only
//! (x86-64 and aarch64 guests); every offset is bounds-checked, so a malformed file is
//! an error, never a panic.

/// What the loader needs to know about one ELF file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dynamic {
    /// `PT_INTERP`, `None` for a static or shared-library file.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` names, in order.
    pub needed: Vec<String>,
    /// `DT_RUNPATH` (or, without one, `DT_RPATH`) directories, in order.
    pub runpath: Vec<String>,
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

const BAD: &str = "a malformed ELF file";

fn u16_at(b: &[u8], o: usize) -> Result<u16, &'static str> {
    let s = b.get(o..o.checked_add(2).ok_or(BAD)?).ok_or(BAD)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], o: usize) -> Result<u32, &'static str> {
    let s = b.get(o..o.checked_add(4).ok_or(BAD)?).ok_or(BAD)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], o: usize) -> Result<u64, &'static str> {
    let s = b.get(o..o.checked_add(8).ok_or(BAD)?).ok_or(BAD)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

fn usize_at(b: &[u8], o: usize) -> Result<usize, &'static str> {
    usize::try_from(u64_at(b, o)?).map_err(|_| BAD)
}

/// The NUL-terminated string at `off` of `b`, as UTF-8.
fn c_str(b: &[u8], off: usize) -> Result<String, &'static str> {
    let tail = b.get(off..).ok_or(BAD)?;
    let end = tail.iter().position(|&c| c == 0).ok_or(BAD)?;
    std::str::from_utf8(&tail[..end])
        .map(str::to_owned)
        .map_err(|_| BAD)
}

/// One program header: (type, file offset, virtual address, file size).
fn program_headers(b: &[u8]) -> Result<Vec<(u32, usize, u64, usize)>, &'static str> {
    if b.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err("not a 64-bit little-endian ELF file");
    }
    let phoff = usize_at(b, 0x20)?;
    let phentsize = usize::from(u16_at(b, 0x36)?);
    let phnum = usize::from(u16_at(b, 0x38)?);
    if phentsize < 0x38 {
        return Err(BAD);
    }
    let mut out = Vec::with_capacity(phnum);
    for i in 0..phnum {
        let ph = phentsize
            .checked_mul(i)
            .and_then(|o| o.checked_add(phoff))
            .ok_or(BAD)?;
        out.push((
            u32_at(b, ph)?,
            usize_at(b, ph + 0x08)?,
            u64_at(b, ph + 0x10)?,
            usize_at(b, ph + 0x20)?,
        ));
    }
    Ok(out)
}

/// Reads the interpreter, the needed libraries and the run path of an ELF file; `Err`
/// names what is wrong with a file that is not a well-formed 64-bit little-endian ELF.
pub fn dynamic(b: &[u8]) -> Result<Dynamic, &'static str> {
    let phs = program_headers(b)?;
    let mut d = Dynamic::default();
    for &(kind, off, _, len) in &phs {
        if kind == PT_INTERP {
            // The loader reads the path as a C string: up to the first NUL.
            let raw = b.get(off..off.checked_add(len).ok_or(BAD)?).ok_or(BAD)?;
            let path = raw.split(|&c| c == 0).next().unwrap_or_default();
            d.interpreter = Some(std::str::from_utf8(path).map_err(|_| BAD)?.to_owned());
        }
    }
    let Some(&(_, dyn_off, _, dyn_len)) = phs.iter().find(|p| p.0 == PT_DYNAMIC) else {
        return Ok(d);
    };
    let dynamic = b
        .get(dyn_off..dyn_off.checked_add(dyn_len).ok_or(BAD)?)
        .ok_or(BAD)?;
    let mut entries = Vec::new();
    for e in dynamic.chunks_exact(16) {
        let tag = u64_at(e, 0)?;
        if tag == DT_NULL {
            break;
        }
        entries.push((tag, u64_at(e, 8)?));
    }
    // DT_STRTAB is a virtual address: find the loaded segment holding it.
    let strtab_vaddr = entries
        .iter()
        .find(|e| e.0 == DT_STRTAB)
        .map(|e| e.1)
        .ok_or(BAD)?;
    let strtab = phs
        .iter()
        .filter(|p| p.0 == PT_LOAD)
        .find_map(|&(_, off, vaddr, len)| {
            let rel = strtab_vaddr.checked_sub(vaddr)?;
            let rel = usize::try_from(rel).ok()?;
            (rel < len).then(|| off.checked_add(rel)).flatten()
        })
        .ok_or(BAD)?;
    let string = |v: u64| -> Result<String, &'static str> {
        let o = usize::try_from(v).map_err(|_| BAD)?;
        c_str(b, strtab.checked_add(o).ok_or(BAD)?)
    };
    let mut rpath = Vec::new();
    for &(tag, val) in &entries {
        match tag {
            DT_NEEDED => d.needed.push(string(val)?),
            DT_RUNPATH => d.runpath.extend(string(val)?.split(':').map(str::to_owned)),
            DT_RPATH => rpath.extend(string(val)?.split(':').map(str::to_owned)),
            _ => {}
        }
    }
    // The loader ignores DT_RPATH when DT_RUNPATH is present.
    if d.runpath.is_empty() {
        d.runpath = rpath;
    }
    d.runpath.retain(|p| !p.is_empty());
    Ok(d)
}

/// The directories glibc's dynamic loader searches after an object's run path (its
/// built-in `system_dirs`), read from the loader file itself. glibc keeps them as one run
/// of NUL-terminated absolute paths, each ending in `/`:
/// `/lib/x86_64-linux-gnu/\0/usr/lib/x86_64-linux-gnu/\0/lib/\0/usr/lib/\0` on Debian,
/// `/lib64/\0/usr/lib64/\0` on Fedora. Returns the first such run of at least two paths
/// that all contain `lib` (without their trailing `/`), or `None` when the file has none
/// (not glibc's loader): the caller then falls back to a fixed list.
pub fn loader_search_dirs(b: &[u8]) -> Option<Vec<String>> {
    let path_byte =
        |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'/' | b'_' | b'-' | b'.' | b'+');
    let lib_dir = |s: &[u8]| {
        (2..=64).contains(&s.len())
            && s.first() == Some(&b'/')
            && s.last() == Some(&b'/')
            && s.iter().all(|&c| path_byte(c))
            && s.windows(3).any(|w| w == b"lib")
    };
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'/' || (i > 0 && b[i - 1] != 0) {
            i += 1;
            continue;
        }
        let mut dirs = Vec::new();
        let mut j = i;
        while let Some(len) = b.get(j..).and_then(|r| r.iter().position(|&c| c == 0)) {
            let s = &b[j..j + len];
            if !lib_dir(s) {
                break;
            }
            dirs.push(String::from_utf8_lossy(&s[..s.len() - 1]).into_owned());
            j += len + 1;
        }
        if dirs.len() >= 2 {
            return Some(dirs);
        }
        i = j.max(i + 1);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_search_dirs_match_what_the_loader_reports() {
        // This machine's own loader says where it searches (glibc 2.33 and later).
        let loader = "/lib64/ld-linux-x86-64.so.2";
        let Ok(bytes) = std::fs::read(loader) else {
            println!("no {loader} here: skipped");
            return;
        };
        let out = std::process::Command::new(loader)
            .arg("--list-diagnostics")
            .output()
            .unwrap();
        let reported: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("path.system_dirs["))
            .filter_map(|l| l.split_once("]=\"").map(|(_, v)| v))
            .map(|v| v.trim_end_matches('"').trim_end_matches('/').to_owned())
            .collect();
        if reported.is_empty() {
            println!("{loader} --list-diagnostics lists no system_dirs: skipped");
            return;
        }
        assert_eq!(loader_search_dirs(&bytes), Some(reported));
    }

    #[test]
    fn loader_search_dirs_take_the_first_run_of_library_directories() {
        let fedora = b"\x7fELF junk\0/etc/ld.so.cache\0/lib64/\0/usr/lib64/\0\0more";
        assert_eq!(
            loader_search_dirs(fedora),
            Some(vec!["/lib64".to_owned(), "/usr/lib64".to_owned()])
        );
        // One directory alone, paths without a trailing slash, non-path bytes: no run.
        assert_eq!(loader_search_dirs(b"\0/lib/\0x/usr/lib\0/usr/lib/\0"), None);
        assert_eq!(loader_search_dirs(b"/lib/\0/us\x01r/lib/\0"), None);
        assert_eq!(loader_search_dirs(b""), None);
        assert_eq!(loader_search_dirs(b"/lib/"), None);
    }

    #[test]
    fn reads_real_binaries_and_never_panics_on_cut_ones() {
        // This test binary is dynamically linked by cargo's default (no crt-static).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let d = dynamic(&me).unwrap();
        let interp = d.interpreter.as_deref().unwrap();
        assert!(
            interp.starts_with('/') && interp.contains("ld-"),
            "{interp}"
        );
        assert!(d.needed.iter().any(|n| n == "libc.so.6"), "{:?}", d.needed);
        // A shared library: no interpreter, its own needs.
        let libm = ["/lib/x86_64-linux-gnu/libm.so.6", "/lib64/libm.so.6"]
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .expect("libm.so.6 on this machine");
        let d = dynamic(&libm).unwrap();
        assert_eq!(d.interpreter, None);
        assert!(d.needed.iter().any(|n| n == "libc.so.6"), "{d:?}");
        assert!(dynamic(b"#!/bin/sh\n").is_err());
        // Cut anywhere, or a byte flipped anywhere in the headers: an error or an
        // answer, never a panic.
        for n in (0..me.len().min(16384)).step_by(7) {
            let _ = dynamic(&me[..n]);
        }
        let mut m = me.clone();
        for i in (0..4096.min(m.len())).step_by(3) {
            m[i] ^= 0xa5;
            let _ = dynamic(&m);
            m[i] ^= 0xa5;
        }
    }
}
