//! The model as ordinary read-only files: a minimal FUSE server over `/dev/fuse`
//! that serves the [`Index`] of the verified tar.
//!
//! Reads go straight to the dm-verity device at the file's offset, so every byte the
//! workload sees is checked against the root hash as it is read, and nothing is copied
//! into RAM beyond the page cache. A verity error becomes `EIO` for that read. The
//! mount is `ro,nosuid,nodev` with `default_permissions` (the kernel checks the modes
//! from the archive); requests that would change anything get `EROFS` or `ENOSYS`.
//!
//! Protocol: `<linux/fuse.h>` 7.x; requests are a 40-byte `fuse_in_header` and a body,
//! replies a 16-byte `fuse_out_header` and a body, all native endian. Structures are
//! encoded field by field, as in [`crate::dm`].

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::Arc;

use crate::tarindex::{Index, Kind};

const FUSE_LOOKUP: u32 = 1;
const FUSE_FORGET: u32 = 2;
const FUSE_GETATTR: u32 = 3;
const FUSE_OPEN: u32 = 14;
const FUSE_READ: u32 = 15;
const FUSE_STATFS: u32 = 17;
const FUSE_RELEASE: u32 = 18;
const FUSE_FLUSH: u32 = 25;
const FUSE_INIT: u32 = 26;
const FUSE_OPENDIR: u32 = 27;
const FUSE_READDIR: u32 = 28;
const FUSE_RELEASEDIR: u32 = 29;
const FUSE_ACCESS: u32 = 34;
const FUSE_INTERRUPT: u32 = 36;
const FUSE_DESTROY: u32 = 38;
const FUSE_BATCH_FORGET: u32 = 42;
// Operations that would write.
const WRITING: &[u32] = &[4, 6, 8, 9, 10, 11, 12, 13, 16, 21, 24, 35, 43, 45];

/// `FOPEN_KEEP_CACHE`: the content never changes, keep the page cache across opens.
const FOPEN_KEEP_CACHE: u32 = 1 << 1;
/// Size of `struct fuse_in_header`.
pub const IN_HEADER_LEN: usize = 40;
/// Size of `struct fuse_out_header`.
pub const OUT_HEADER_LEN: usize = 16;
/// Largest read answered at once.
pub const MAX_READ: u32 = 128 * 1024;
/// Attribute and entry cache lifetime handed to the kernel, in seconds: the tree
/// never changes.
const TTL_S: u64 = 86_400;

/// Node ids are index + 1 (FUSE's root is 1).
fn nodeid(i: usize) -> u64 {
    i as u64 + 1
}

fn index_of(idx: &Index, nodeid: u64) -> Option<usize> {
    let i = usize::try_from(nodeid.checked_sub(1)?).ok()?;
    (i < idx.nodes.len()).then_some(i)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A parsed `fuse_in_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InHeader {
    /// Total request length.
    pub len: u32,
    /// Operation.
    pub opcode: u32,
    /// Request id, echoed in the reply.
    pub unique: u64,
    /// The inode the request is about.
    pub nodeid: u64,
}

impl InHeader {
    /// Parses the 40-byte header at the start of `b`.
    pub fn parse(b: &[u8]) -> Option<Self> {
        Some(Self {
            len: u32_at(b, 0)?,
            opcode: u32_at(b, 4)?,
            unique: u64_at(b, 8)?,
            nodeid: u64_at(b, 16)?,
        })
    }
}

/// Encodes `struct fuse_attr` (88 bytes) for node `i`.
pub fn encode_attr(out: &mut Vec<u8>, idx: &Index, i: usize) {
    let n = &idx.nodes[i];
    let (size, mode, nlink) = match n.kind {
        Kind::Dir(_) => (0u64, libc::S_IFDIR | n.mode, 2u32),
        Kind::File { size, .. } => (size, libc::S_IFREG | n.mode, 1),
    };
    out.extend_from_slice(&nodeid(i).to_ne_bytes()); // ino
    out.extend_from_slice(&size.to_ne_bytes()); // size
    out.extend_from_slice(&size.div_ceil(512).to_ne_bytes()); // blocks
    out.extend_from_slice(&[0u8; 24]); // atime, mtime, ctime (the archive's are 0)
    out.extend_from_slice(&[0u8; 12]); // atimensec, mtimensec, ctimensec
    out.extend_from_slice(&mode.to_ne_bytes()); // mode
    out.extend_from_slice(&nlink.to_ne_bytes()); // nlink
    out.extend_from_slice(&0u32.to_ne_bytes()); // uid
    out.extend_from_slice(&0u32.to_ne_bytes()); // gid
    out.extend_from_slice(&0u32.to_ne_bytes()); // rdev
    out.extend_from_slice(&4096u32.to_ne_bytes()); // blksize
    out.extend_from_slice(&0u32.to_ne_bytes()); // flags
}

/// Encodes `struct fuse_entry_out` (128 bytes).
fn encode_entry(out: &mut Vec<u8>, idx: &Index, i: usize) {
    out.extend_from_slice(&nodeid(i).to_ne_bytes()); // nodeid
    out.extend_from_slice(&0u64.to_ne_bytes()); // generation
    out.extend_from_slice(&TTL_S.to_ne_bytes()); // entry_valid
    out.extend_from_slice(&TTL_S.to_ne_bytes()); // attr_valid
    out.extend_from_slice(&[0u8; 8]); // entry_valid_nsec, attr_valid_nsec
    encode_attr(out, idx, i);
}

/// Appends one `struct fuse_dirent` (24 bytes + name, padded to 8) when it fits in
/// `max` bytes in total; returns whether it did.
pub fn push_dirent(
    out: &mut Vec<u8>,
    max: usize,
    ino: u64,
    off: u64,
    name: &[u8],
    dir: bool,
) -> bool {
    let len = (24 + name.len()).next_multiple_of(8);
    if out.len() + len > max {
        return false;
    }
    let start = out.len();
    out.extend_from_slice(&ino.to_ne_bytes()); // ino
    out.extend_from_slice(&off.to_ne_bytes()); // off: where the next entry starts
    out.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_ne_bytes()); // namelen
    let dt = if dir { libc::DT_DIR } else { libc::DT_REG };
    out.extend_from_slice(&u32::from(dt).to_ne_bytes()); // type
    out.extend_from_slice(name);
    out.resize(start + len, 0);
    true
}

/// The file view: the index, the verified device, and the `/dev/fuse` connection.
pub struct Server {
    idx: Arc<Index>,
    dev: File,
    fuse: File,
}

/// What answering one request ended in.
enum Next {
    Continue,
    Stop,
}

impl Server {
    /// A server for `idx` reading from `dev`, talking on `fuse` (an open `/dev/fuse`
    /// that has been mounted).
    pub fn new(idx: Arc<Index>, dev: File, fuse: File) -> Self {
        Self { idx, dev, fuse }
    }

    fn reply(&self, unique: u64, error: i32, body: &[u8]) -> io::Result<()> {
        let len = u32::try_from(OUT_HEADER_LEN + body.len())
            .map_err(|_| io::Error::other("reply too long"))?;
        let mut msg = Vec::with_capacity(OUT_HEADER_LEN + body.len());
        msg.extend_from_slice(&len.to_ne_bytes()); // len
        msg.extend_from_slice(&(-error).to_ne_bytes()); // error: 0 or -errno
        msg.extend_from_slice(&unique.to_ne_bytes()); // unique
        msg.extend_from_slice(body);
        // One write per reply, as /dev/fuse requires.
        match (&self.fuse).write(&msg) {
            Ok(n) if n == msg.len() => Ok(()),
            Ok(_) => Err(io::Error::other("short write to /dev/fuse")),
            // The request was interrupted and is gone: not our failure.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Serves requests until the kernel unmounts (`ENODEV`) or sends `DESTROY`.
    pub fn serve(self) -> io::Result<()> {
        let mut buf = vec![0u8; MAX_READ as usize + 4096];
        loop {
            let n = match (&self.fuse).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ENOENT)) => {
                    continue;
                }
                Err(e) => return Err(e),
            };
            let req = &buf[..n];
            let Some(h) = InHeader::parse(req) else {
                return Err(io::Error::other("short FUSE request"));
            };
            let body = req.get(IN_HEADER_LEN..).unwrap_or(&[]);
            if let Next::Stop = self.handle(h, body)? {
                return Ok(());
            }
        }
    }

    fn handle(&self, h: InHeader, body: &[u8]) -> io::Result<Next> {
        let idx = &self.idx;
        let node = index_of(idx, h.nodeid);
        match h.opcode {
            FUSE_INIT => {
                let major = u32_at(body, 0).unwrap_or(0);
                let minor = u32_at(body, 4).unwrap_or(0);
                let max_readahead = u32_at(body, 8).unwrap_or(0);
                if major != 7 {
                    self.reply(h.unique, libc::EPROTO, &[])?;
                    return Err(io::Error::other(format!("FUSE protocol {major}.{minor}")));
                }
                let mut out = Vec::with_capacity(64);
                out.extend_from_slice(&7u32.to_ne_bytes()); // major
                out.extend_from_slice(&minor.min(31).to_ne_bytes()); // minor
                out.extend_from_slice(&max_readahead.to_ne_bytes()); // max_readahead
                out.extend_from_slice(&0u32.to_ne_bytes()); // flags: none
                out.extend_from_slice(&16u16.to_ne_bytes()); // max_background
                out.extend_from_slice(&12u16.to_ne_bytes()); // congestion_threshold
                out.extend_from_slice(&MAX_READ.to_ne_bytes()); // max_write
                out.extend_from_slice(&1u32.to_ne_bytes()); // time_gran
                out.resize(64, 0); // max_pages, map_alignment, flags2, unused
                self.reply(h.unique, 0, &out)?;
            }
            FUSE_FORGET | FUSE_BATCH_FORGET | FUSE_INTERRUPT => {} // no reply
            FUSE_DESTROY => {
                self.reply(h.unique, 0, &[])?;
                return Ok(Next::Stop);
            }
            FUSE_LOOKUP => {
                let name = body.split(|&b| b == 0).next().unwrap_or(&[]);
                match node.and_then(|d| idx.lookup(d, name)) {
                    Some(i) => {
                        let mut out = Vec::with_capacity(128);
                        encode_entry(&mut out, idx, i);
                        self.reply(h.unique, 0, &out)?;
                    }
                    None => self.reply(h.unique, libc::ENOENT, &[])?,
                }
            }
            FUSE_GETATTR => match node {
                Some(i) => {
                    let mut out = Vec::with_capacity(104);
                    out.extend_from_slice(&TTL_S.to_ne_bytes()); // attr_valid
                    out.extend_from_slice(&[0u8; 8]); // attr_valid_nsec, dummy
                    encode_attr(&mut out, idx, i);
                    self.reply(h.unique, 0, &out)?;
                }
                None => self.reply(h.unique, libc::ENOENT, &[])?,
            },
            FUSE_OPEN | FUSE_OPENDIR => {
                let flags = u32_at(body, 0).unwrap_or(0);
                let want_dir = h.opcode == FUSE_OPENDIR;
                let err = match node.map(|i| &idx.nodes[i].kind) {
                    None => libc::ENOENT,
                    Some(_) if flags & (libc::O_ACCMODE as u32) != libc::O_RDONLY as u32 => {
                        libc::EROFS
                    }
                    Some(Kind::Dir(_)) if !want_dir => libc::EISDIR,
                    Some(Kind::File { .. }) if want_dir => libc::ENOTDIR,
                    Some(_) => 0,
                };
                if err != 0 {
                    self.reply(h.unique, err, &[])?;
                } else {
                    let mut out = Vec::with_capacity(16);
                    out.extend_from_slice(&0u64.to_ne_bytes()); // fh
                    let of = if want_dir { 0 } else { FOPEN_KEEP_CACHE };
                    out.extend_from_slice(&of.to_ne_bytes()); // open_flags
                    out.extend_from_slice(&0u32.to_ne_bytes()); // padding
                    self.reply(h.unique, 0, &out)?;
                }
            }
            FUSE_READ => {
                let (off, size) = (u64_at(body, 8).unwrap_or(0), u32_at(body, 16).unwrap_or(0));
                match node.map(|i| &idx.nodes[i].kind) {
                    Some(&Kind::File { offset, size: len }) => {
                        let n = len.saturating_sub(off).min(u64::from(size.min(MAX_READ)));
                        let mut data = vec![0u8; usize::try_from(n).unwrap_or(0)];
                        // off < len here whenever n > 0, and offset + len is inside
                        // the device (checked by the index), so this cannot overflow.
                        let at = offset.saturating_add(off.min(len));
                        match std::os::unix::fs::FileExt::read_exact_at(&self.dev, &mut data, at) {
                            Ok(()) => self.reply(h.unique, 0, &data)?,
                            Err(e) => {
                                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                                self.reply(h.unique, errno, &[])?;
                            }
                        }
                    }
                    Some(Kind::Dir(_)) => self.reply(h.unique, libc::EISDIR, &[])?,
                    None => self.reply(h.unique, libc::ENOENT, &[])?,
                }
            }
            FUSE_READDIR => {
                let (off, size) = (u64_at(body, 8).unwrap_or(0), u32_at(body, 16).unwrap_or(0));
                match node.map(|i| (i, &idx.nodes[i].kind)) {
                    Some((i, Kind::Dir(children))) => {
                        let max = usize::try_from(size.min(MAX_READ)).unwrap_or(0);
                        let mut out = Vec::new();
                        // Entry k: 0 ".", 1 "..", 2.. the children; `off` of each
                        // dirent is the index of the one after it.
                        let total = 2 + children.len() as u64;
                        let mut k = off;
                        while k < total {
                            let (ino, name, dir): (u64, &[u8], bool) = match k {
                                0 => (nodeid(i), b".", true),
                                1 => (nodeid(idx.nodes[i].parent), b"..", true),
                                _ => {
                                    let c = children[usize::try_from(k - 2).unwrap_or(0)];
                                    let n = &idx.nodes[c];
                                    (nodeid(c), &n.name, matches!(n.kind, Kind::Dir(_)))
                                }
                            };
                            if !push_dirent(&mut out, max, ino, k + 1, name, dir) {
                                break;
                            }
                            k += 1;
                        }
                        self.reply(h.unique, 0, &out)?;
                    }
                    Some(_) => self.reply(h.unique, libc::ENOTDIR, &[])?,
                    None => self.reply(h.unique, libc::ENOENT, &[])?,
                }
            }
            FUSE_STATFS => {
                let blocks: u64 = idx
                    .nodes
                    .iter()
                    .map(|n| match n.kind {
                        Kind::File { size, .. } => size.div_ceil(4096),
                        Kind::Dir(_) => 0,
                    })
                    .sum();
                let mut out = Vec::with_capacity(80);
                out.extend_from_slice(&blocks.to_ne_bytes()); // blocks
                out.extend_from_slice(&0u64.to_ne_bytes()); // bfree
                out.extend_from_slice(&0u64.to_ne_bytes()); // bavail
                out.extend_from_slice(&(idx.nodes.len() as u64).to_ne_bytes()); // files
                out.extend_from_slice(&0u64.to_ne_bytes()); // ffree
                out.extend_from_slice(&4096u32.to_ne_bytes()); // bsize
                out.extend_from_slice(&255u32.to_ne_bytes()); // namelen
                out.extend_from_slice(&4096u32.to_ne_bytes()); // frsize
                out.resize(80, 0); // padding, spare[6]
                self.reply(h.unique, 0, &out)?;
            }
            FUSE_RELEASE | FUSE_RELEASEDIR | FUSE_FLUSH | FUSE_ACCESS => {
                self.reply(h.unique, 0, &[])?;
            }
            op if WRITING.contains(&op) => self.reply(h.unique, libc::EROFS, &[])?,
            _ => self.reply(h.unique, libc::ENOSYS, &[])?,
        }
        Ok(Next::Continue)
    }
}

/// Mounts a FUSE filesystem read-only at `target` and returns the `/dev/fuse`
/// connection to serve it on.
pub fn mount(target: &str) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    let fuse = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| io::Error::new(e.kind(), format!("/dev/fuse: {e} (is fuse.ko loaded?)")))?;
    std::fs::create_dir_all(target)
        .map_err(|e| io::Error::new(e.kind(), format!("mkdir {target}: {e}")))?;
    let opts = format!(
        "fd={},rootmode=40755,user_id=0,group_id=0,default_permissions,allow_other",
        fuse.as_raw_fd()
    );
    let cs = |s: &str| {
        std::ffi::CString::new(s)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in mount argument"))
    };
    let (src, tgt, fs, data) = (cs("pqcc-model")?, cs(target)?, cs("fuse")?, cs(&opts)?);
    // SAFETY: all four pointers come from live `CString`s that outlive the call;
    // `mount` only reads them.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fs.as_ptr(),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("mount fuse on {target}: {e}"),
        ));
    }
    Ok(fuse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tarindex::Node;

    fn idx() -> Index {
        Index {
            nodes: vec![
                Node {
                    name: vec![],
                    parent: 0,
                    mode: 0o755,
                    kind: Kind::Dir(vec![1]),
                },
                Node {
                    name: b"w.bin".to_vec(),
                    parent: 0,
                    mode: 0o644,
                    kind: Kind::File {
                        offset: 512,
                        size: 1000,
                    },
                },
            ],
        }
    }

    #[test]
    fn attr_bytes() {
        let mut out = Vec::new();
        encode_attr(&mut out, &idx(), 1);
        assert_eq!(out.len(), 88);
        assert_eq!(&out[0..8], &2u64.to_ne_bytes()); // ino = index + 1
        assert_eq!(&out[8..16], &1000u64.to_ne_bytes()); // size
        assert_eq!(&out[16..24], &2u64.to_ne_bytes()); // blocks of 512
        assert!(out[24..60].iter().all(|&b| b == 0)); // times
        assert_eq!(&out[60..64], &(0o100_644u32).to_ne_bytes()); // mode
        assert_eq!(&out[64..68], &1u32.to_ne_bytes()); // nlink
        assert_eq!(&out[80..84], &4096u32.to_ne_bytes()); // blksize
        let mut e = Vec::new();
        encode_entry(&mut e, &idx(), 0);
        assert_eq!(e.len(), 128);
        assert_eq!(&e[40 + 60..40 + 64], &(0o040_755u32).to_ne_bytes());
    }

    #[test]
    fn dirent_bytes() {
        let mut out = vec![];
        assert!(push_dirent(&mut out, 100, 7, 3, b"abc", false));
        assert_eq!(out.len(), 32); // 24 + 3, padded to 8
        assert_eq!(&out[0..8], &7u64.to_ne_bytes());
        assert_eq!(&out[8..16], &3u64.to_ne_bytes());
        assert_eq!(&out[16..20], &3u32.to_ne_bytes());
        assert_eq!(&out[20..24], &8u32.to_ne_bytes()); // DT_REG
        assert_eq!(&out[24..32], b"abc\0\0\0\0\0");
        // Does not fit: nothing written.
        assert!(!push_dirent(&mut out, 40, 8, 4, b"d", true));
        assert_eq!(out.len(), 32);
    }

    #[test]
    fn header_parse() {
        let mut b = [0u8; 40];
        b[0..4].copy_from_slice(&40u32.to_ne_bytes());
        b[4..8].copy_from_slice(&FUSE_LOOKUP.to_ne_bytes());
        b[8..16].copy_from_slice(&9u64.to_ne_bytes());
        b[16..24].copy_from_slice(&1u64.to_ne_bytes());
        assert_eq!(
            InHeader::parse(&b),
            Some(InHeader {
                len: 40,
                opcode: FUSE_LOOKUP,
                unique: 9,
                nodeid: 1
            })
        );
        assert_eq!(InHeader::parse(&b[..20]), None);
        assert_eq!(index_of(&idx(), 0), None);
        assert_eq!(index_of(&idx(), 2), Some(1));
        assert_eq!(index_of(&idx(), 3), None);
    }
}
