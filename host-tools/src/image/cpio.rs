//! A deterministic writer of "newc" cpio archives (the initramfs format the kernel
//! unpacks, `cpio -H newc`).
//!
//! Determinism: entries are written in byte order of their path (so a directory
//! always precedes what it holds), every parent directory exists as its own entry,
//! inode numbers count up from 1 in that order, mtime, uid and gid are 0, and the only
//! modes are 040755 for directories and 0100644 / 0100755 for files. The same set of
//! `(path, mode, bytes)` therefore gives the same archive, byte for byte.
//!
//! Record layout (`Documentation/driver-api/early-userspace/buffer-format.rst`):
//! the magic `070701`, thirteen 8-digit uppercase-hex fields (ino, mode, uid, gid,
//! nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check),
//! the NUL-terminated name padded to 4 bytes, the data padded to 4 bytes; the archive
//! ends with the entry `TRAILER!!!`.

use std::collections::BTreeMap;
use std::io::{self, Write};

use anyhow::{Context, bail};

/// Mode of a directory entry.
pub const DIR_MODE: u32 = 0o040_755;
/// Mode of an executable file.
pub const EXEC_MODE: u32 = 0o100_755;
/// Mode of another file.
pub const FILE_MODE: u32 = 0o100_644;

const TRAILER: &str = "TRAILER!!!";

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File { executable: bool, data: Vec<u8> },
}

/// An archive being assembled; [`Archive::write`] emits it.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    // Key: the path without a leading `/`, e.g. `etc/pqcc/init.toml`.
    entries: BTreeMap<String, Node>,
}

fn normalise(path: &str) -> anyhow::Result<String> {
    let rel = path.trim_start_matches('/');
    if !path.starts_with('/') || rel.is_empty() {
        bail!("{path:?}: destination must be an absolute path below /");
    }
    for c in rel.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            bail!("{path:?}: empty, `.` or `..` component");
        }
    }
    if rel.contains('\0') || rel == TRAILER {
        bail!("{path:?}: not allowed as a cpio name");
    }
    Ok(rel.to_owned())
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory (and its parents). Adding the same directory twice is fine.
    pub fn add_dir(&mut self, path: &str) -> anyhow::Result<()> {
        let rel = normalise(path)?;
        self.add_parents(&rel)?;
        match self.entries.get(&rel) {
            None | Some(Node::Dir) => {
                self.entries.insert(rel, Node::Dir);
                Ok(())
            }
            Some(Node::File { .. }) => bail!("{path:?} is already a file"),
        }
    }

    /// Adds a file (and its parent directories). A path added twice is an error.
    pub fn add_file(&mut self, path: &str, data: Vec<u8>, executable: bool) -> anyhow::Result<()> {
        let rel = normalise(path)?;
        if data.len() > u32::MAX as usize {
            bail!("{path:?}: larger than newc's 4 GiB limit");
        }
        self.add_parents(&rel)?;
        if self.entries.contains_key(&rel) {
            bail!("{path:?} is in the image twice");
        }
        self.entries.insert(rel, Node::File { executable, data });
        Ok(())
    }

    fn add_parents(&mut self, rel: &str) -> anyhow::Result<()> {
        let mut end = 0;
        while let Some(i) = rel[end..].find('/') {
            let parent = &rel[..end + i];
            match self.entries.get(parent) {
                Some(Node::File { .. }) => bail!("/{parent} is a file, not a directory"),
                Some(Node::Dir) => {}
                None => {
                    self.entries.insert(parent.to_owned(), Node::Dir);
                }
            }
            end += i + 1;
        }
        Ok(())
    }

    /// The bytes of the file at `path` (absolute), if the archive has one there.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        match self.entries.get(path.trim_start_matches('/')) {
            Some(Node::File { data, .. }) => Some(data),
            _ => None,
        }
    }

    /// The archive's paths in write order (for listings and tests).
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Writes the whole archive, trailer included.
    pub fn write(&self, out: &mut impl Write) -> io::Result<u64> {
        let mut n = 0u64;
        for (i, (name, node)) in self.entries.iter().enumerate() {
            let ino = u32::try_from(i + 1).map_err(|_| io::Error::other("too many entries"))?;
            let (mode, nlink, data): (u32, u32, &[u8]) = match node {
                Node::Dir => (DIR_MODE, 2, &[]),
                Node::File { executable, data } => {
                    (if *executable { EXEC_MODE } else { FILE_MODE }, 1, data)
                }
            };
            n += write_entry(out, ino, mode, nlink, name, data)?;
        }
        n += write_entry(out, 0, 0, 1, TRAILER, &[])?;
        Ok(n)
    }

    /// The archive as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = self.write(&mut v);
        v
    }
}

fn pad4(out: &mut impl Write, len: u64) -> io::Result<u64> {
    let pad = (4 - len % 4) % 4;
    out.write_all(&[0u8; 3][..pad as usize])?;
    Ok(pad)
}

fn write_entry(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    data: &[u8],
) -> io::Result<u64> {
    let size = u32::try_from(data.len()).map_err(|_| io::Error::other("file over 4 GiB"))?;
    let namesize = u32::try_from(name.len() + 1).map_err(|_| io::Error::other("name too long"))?;
    let header = format!(
        "070701{ino:08X}{mode:08X}{uid:08X}{gid:08X}{nlink:08X}{mtime:08X}{size:08X}\
         {dmaj:08X}{dmin:08X}{rmaj:08X}{rmin:08X}{namesize:08X}{check:08X}",
        uid = 0,
        gid = 0,
        mtime = 0,
        dmaj = 0,
        dmin = 0,
        rmaj = 0,
        rmin = 0,
        check = 0,
    );
    debug_assert_eq!(header.len(), 110);
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    let mut n = 110 + u64::from(namesize);
    n += pad4(out, n)?;
    out.write_all(data)?;
    n += u64::from(size);
    n += pad4(out, n)?;
    Ok(n)
}

/// Reads `src` for an image entry, with the path in the error.
pub fn read_source(src: &std::path::Path) -> anyhow::Result<(Vec<u8>, bool)> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(src).with_context(|| format!("{}", src.display()))?;
    if !meta.is_file() {
        bail!("{}: not a regular file", src.display());
    }
    let data = std::fs::read(src).with_context(|| format!("{}", src.display()))?;
    Ok((data, meta.permissions().mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes() {
        let mut a = Archive::new();
        a.add_file("/d/f", b"hello".to_vec(), false).unwrap();
        let got = a.to_bytes();
        let mut want = Vec::new();
        // "d": ino 1, dir 040755, nlink 2, size 0, namesize 2; 110 + 2 = 112, no pad.
        want.extend_from_slice(b"070701");
        for f in [1u32, 0o40755, 0, 0, 2, 0, 0, 0, 0, 0, 0, 2, 0] {
            want.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        want.extend_from_slice(b"d\0");
        // "d/f": ino 2, 0100644, nlink 1, size 5, namesize 4; 114 -> pad 2; data 5 -> pad 3.
        want.extend_from_slice(b"070701");
        for f in [2u32, 0o100644, 0, 0, 1, 0, 5, 0, 0, 0, 0, 4, 0] {
            want.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        want.extend_from_slice(b"d/f\0\0\0hello\0\0\0");
        // Trailer: ino 0, mode 0, nlink 1, namesize 11; 121 -> pad 3.
        want.extend_from_slice(b"070701");
        for f in [0u32, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0] {
            want.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        want.extend_from_slice(b"TRAILER!!!\0\0\0\0");
        assert_eq!(got, want);
        assert_eq!(got.len() % 4, 0);
    }

    #[test]
    fn order_does_not_matter() {
        let mut a = Archive::new();
        a.add_file("/init", b"x".to_vec(), true).unwrap();
        a.add_file("/etc/pqcc/init.toml", b"y".to_vec(), false)
            .unwrap();
        a.add_file("/lib/modules/a.ko", b"z".to_vec(), false)
            .unwrap();
        let mut b = Archive::new();
        b.add_file("/lib/modules/a.ko", b"z".to_vec(), false)
            .unwrap();
        b.add_dir("/etc").unwrap();
        b.add_file("/etc/pqcc/init.toml", b"y".to_vec(), false)
            .unwrap();
        b.add_file("/init", b"x".to_vec(), true).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        assert_eq!(
            a.paths().collect::<Vec<_>>(),
            [
                "etc",
                "etc/pqcc",
                "etc/pqcc/init.toml",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/a.ko"
            ]
        );
    }

    #[test]
    fn refusals() {
        let mut a = Archive::new();
        assert!(a.add_file("init", vec![], true).is_err());
        assert!(a.add_file("/", vec![], true).is_err());
        assert!(a.add_file("/a/../b", vec![], true).is_err());
        assert!(a.add_file("/a//b", vec![], true).is_err());
        a.add_file("/a", vec![], false).unwrap();
        assert!(a.add_file("/a", vec![], false).is_err());
        assert!(a.add_file("/a/b", vec![], false).is_err());
        assert!(a.add_dir("/a").is_err());
    }
}
