//! Thin, checked wrappers over the Linux calls PID 1 needs: mount, finit_module,
//! sync, reboot, the monotonic clock, and the QEMU exit port. Each `unsafe` block is a
//! single libc call with its argument lifetimes spelled out.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in string"))
}

/// One filesystem to mount.
#[derive(Debug, Clone, Copy)]
pub struct MountSpec {
    /// Source (shown in /proc/mounts).
    pub source: &'static str,
    /// Mount point, created when missing.
    pub target: &'static str,
    /// Filesystem type.
    pub fstype: &'static str,
    /// `MS_*` flags.
    pub flags: libc::c_ulong,
    /// Filesystem options.
    pub data: &'static str,
}

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// The mounts made in every guest, in order.
pub const BASE_MOUNTS: &[MountSpec] = &[
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: libc::MS_NOSUID,
        data: "mode=0755",
    },
    MountSpec {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=0755",
    },
];

/// Mounted only when `/proc/filesystems` lists them.
pub const OPTIONAL_MOUNTS: &[MountSpec] = &[
    MountSpec {
        source: "configfs",
        target: "/sys/kernel/config",
        fstype: "configfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    MountSpec {
        source: "securityfs",
        target: "/sys/kernel/security",
        fstype: "securityfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
];

/// Mounts `m`, creating its mount point. A filesystem already mounted there (EBUSY,
/// e.g. a devtmpfs the kernel mounted itself) counts as done.
pub fn mount(m: &MountSpec) -> io::Result<()> {
    match std::fs::create_dir_all(m.target) {
        Ok(()) => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("mkdir {}: {e}", m.target))),
    }
    let (src, tgt, fs, data) = (
        cstr(m.source)?,
        cstr(m.target)?,
        cstr(m.fstype)?,
        cstr(m.data)?,
    );
    // SAFETY: all four pointers come from live `CString`s that outlive the call;
    // `mount` only reads them.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fs.as_ptr(),
            m.flags,
            data.as_ptr().cast(),
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EBUSY) {
        return Ok(());
    }
    Err(io::Error::new(
        e.kind(),
        format!("mount {} on {}: {e}", m.fstype, m.target),
    ))
}

/// Whether `/proc/filesystems` lists `fstype`.
pub fn has_filesystem(proc_filesystems: &str, fstype: &str) -> bool {
    proc_filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some(fstype))
}

/// `MODULE_INIT_COMPRESSED_FILE`: let the kernel decompress (Linux ≥ 6.4 with
/// `CONFIG_MODULE_DECOMPRESS`).
const MODULE_INIT_COMPRESSED_FILE: libc::c_int = 4;

/// Result of loading one module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// Newly loaded.
    Loaded,
    /// It was already loaded (or built in under the same name).
    AlreadyThere,
}

/// Loads the module file at `path` with `finit_module`, no parameters. Compressed
/// modules (`.ko.xz`, `.ko.zst`, `.ko.gz`) are passed with
/// `MODULE_INIT_COMPRESSED_FILE`; a kernel that cannot decompress them refuses, and
/// the error says so.
pub fn load_module(path: &Path) -> io::Result<Loaded> {
    let file = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let name = path.as_os_str().as_bytes();
    let compressed = [&b".ko.xz"[..], b".ko.zst", b".ko.gz"]
        .iter()
        .any(|s| name.ends_with(s));
    let flags = if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    let params = c"";
    // SAFETY: `finit_module(fd, params, flags)`: the fd is owned by `file`, open for
    // the whole call; `params` is a static NUL-terminated string the kernel only reads.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        return Ok(Loaded::Loaded);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EEXIST) => Ok(Loaded::AlreadyThere),
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOPKG) if compressed => Err(io::Error::new(
            e.kind(),
            format!(
                "{}: this kernel cannot load compressed modules ({e}); \
                 ship it uncompressed in the image",
                path.display()
            ),
        )),
        _ => Err(io::Error::new(
            e.kind(),
            format!("{}: finit_module: {e}", path.display()),
        )),
    }
}

/// Advises the kernel to drop `len` bytes of `file` at `offset` from the page cache
/// (`POSIX_FADV_DONTNEED`). Best effort: a failure only costs memory.
pub fn drop_cached(file: &File, offset: u64, len: u64) {
    let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return;
    };
    // SAFETY: `posix_fadvise` takes the fd (owned by `file`, open for the call) and
    // plain integers; it reads and writes no memory of ours.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), off, len, libc::POSIX_FADV_DONTNEED) };
}

/// `sync()`.
pub fn sync() {
    // SAFETY: `sync` takes no arguments and cannot fail.
    unsafe { libc::sync() }
}

/// Powers the machine off. Returns only when that is refused (not PID 1, no
/// CAP_SYS_BOOT); the caller then exits.
pub fn power_off() -> io::Error {
    sync();
    // SAFETY: `reboot(RB_POWER_OFF)` takes no pointers; on success it does not return.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    io::Error::last_os_error()
}

/// Seconds since boot (CLOCK_BOOTTIME), for log lines.
pub fn since_boot() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live, writable timespec for the duration of the call.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Writes one byte to QEMU's `isa-debug-exit` device at I/O port 0xf4 through
/// `/dev/port`; QEMU then exits with status `(code << 1) | 1`. Only called when the
/// measured config asks for it (tests).
pub fn qemu_debug_exit(code: u8) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut port = std::fs::OpenOptions::new().write(true).open("/dev/port")?;
    port.seek(SeekFrom::Start(0xf4))?;
    port.write_all(&[code])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystems_list() {
        let t = "nodev\tsysfs\nnodev\tconfigfs\n\text4\n";
        assert!(has_filesystem(t, "configfs"));
        assert!(has_filesystem(t, "ext4"));
        assert!(!has_filesystem(t, "securityfs"));
        assert!(!has_filesystem(t, "nodev"));
    }

    #[test]
    fn missing_module_names_the_path() {
        let e = load_module(Path::new("/nonexistent/dm-verity.ko")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/dm-verity.ko"), "{e}");
    }
}
