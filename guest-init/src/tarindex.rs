//! An index of the model tar, read from the verified device: which byte ranges of
//! the device are which files. The file view ([`crate::fuse`]) serves reads from it.
//!
//! The bytes come through dm-verity, so they are the model owner's; the parser is
//! still strict, because a wrong index would show the workload wrong files. It accepts
//! what a pqcc model archive holds (`docs/model-archives.md`): ustar headers of
//! directories (`5`) and regular files (`0`), each optionally preceded by a pax `x`
//! header with `path` and `size` records; names `./…`. Anything else — links, devices,
//! global pax headers, GNU long names, `..` components, duplicates, a file before its
//! directory, a bad header checksum — is an error.

use std::fmt;

/// A tar block.
pub const BLOCK: u64 = 512;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory with its children (indices into [`Index::nodes`]), sorted by name.
    Dir(Vec<usize>),
    /// A regular file: its content starts at `offset` on the device.
    File {
        /// Byte offset of the content on the device.
        offset: u64,
        /// Content length.
        size: u64,
    },
}

/// One file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The last path component (empty for the root).
    pub name: Vec<u8>,
    /// The parent's index (the root is its own parent).
    pub parent: usize,
    /// Permission bits from the archive (`0o7777` at most).
    pub mode: u32,
    /// File or directory.
    pub kind: Kind,
}

/// The whole tree; node 0 is the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// All nodes, the root first.
    pub nodes: Vec<Node>,
}

/// Why an archive was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarError {
    /// Byte offset of the header concerned.
    pub at: u64,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for TarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "model tar at byte {}: {}", self.at, self.what)
    }
}

impl std::error::Error for TarError {}

/// Reads `buf.len()` bytes at `offset` of the archive.
pub trait ReadAt {
    /// Fills `buf` from `offset`, or fails.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).ok();
        let end = start.and_then(|s| s.checked_add(buf.len()));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.len() => {
                buf.copy_from_slice(&self[s..e]);
                Ok(())
            }
            _ => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

fn octal(field: &[u8]) -> Option<u64> {
    let s = field
        .iter()
        .position(|&b| b == 0)
        .map_or(field, |n| &field[..n]);
    let s = std::str::from_utf8(s).ok()?.trim_matches(' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn cstr(field: &[u8]) -> &[u8] {
    field
        .iter()
        .position(|&b| b == 0)
        .map_or(field, |n| &field[..n])
}

/// Parses pax records `"<len> <key>=<value>\n"` for `path` and `size`.
fn pax(rec: &[u8]) -> Result<(Option<Vec<u8>>, Option<u64>), String> {
    let (mut path, mut size) = (None, None);
    let mut rest = rec;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("pax record without length")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad pax record length")?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err("bad pax record".into());
        }
        let kv = &rest[sp + 1..len - 1];
        let eq = kv
            .iter()
            .position(|&b| b == b'=')
            .ok_or("pax record without =")?;
        let (k, v) = (&kv[..eq], &kv[eq + 1..]);
        match k {
            b"path" => path = Some(v.to_vec()),
            b"size" => {
                size = Some(
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or("bad pax size")?,
                );
            }
            // Times, owners and the like change nothing in a read-only view.
            _ => {}
        }
        rest = &rest[len..];
    }
    Ok((path, size))
}

/// Largest pax header accepted.
const MAX_PAX: u64 = 64 * 1024;

impl Index {
    /// Reads the archive's headers from `dev` (of length `len`) and builds the tree.
    pub fn build(dev: &(impl ReadAt + ?Sized), len: u64) -> Result<Self, TarError> {
        let mut idx = Self {
            nodes: vec![Node {
                name: Vec::new(),
                parent: 0,
                mode: 0o755,
                kind: Kind::Dir(Vec::new()),
            }],
        };
        let mut at = 0u64;
        let mut pending: (Option<Vec<u8>>, Option<u64>) = (None, None);
        let mut h = [0u8; 512];
        loop {
            let err = |what: String| TarError { at, what };
            if at + BLOCK > len {
                return Err(err("archive ends without its end blocks".into()));
            }
            dev.read_at(&mut h, at)
                .map_err(|e| err(format!("read: {e}")))?;
            if h.iter().all(|&b| b == 0) {
                if pending != (None, None) {
                    return Err(err("pax header without an entry".into()));
                }
                break;
            }
            let sum: u64 = h
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u64::from(b)
                    }
                })
                .sum();
            if octal(&h[148..156]) != Some(sum) {
                return Err(err("bad header checksum".into()));
            }
            if &h[257..263] != b"ustar\0" {
                return Err(err("not a ustar header".into()));
            }
            let size_field = octal(&h[124..136]).ok_or_else(|| err("bad size".into()))?;
            let typeflag = h[156];
            let data_at = at + BLOCK;
            if typeflag == b'x' {
                if size_field > MAX_PAX || data_at + size_field > len {
                    return Err(err("pax header too large".into()));
                }
                let n = usize::try_from(size_field).map_err(|_| err("pax size".into()))?;
                let mut rec = vec![0u8; n];
                dev.read_at(&mut rec, data_at)
                    .map_err(|e| err(format!("read: {e}")))?;
                pending = pax(&rec).map_err(err)?;
                at = data_at + size_field.next_multiple_of(BLOCK);
                continue;
            }
            let (pax_path, pax_size) = std::mem::take(&mut pending);
            let mut name = match pax_path {
                Some(p) => p,
                None => {
                    let mut n = Vec::new();
                    let prefix = cstr(&h[345..500]);
                    if !prefix.is_empty() {
                        n.extend_from_slice(prefix);
                        n.push(b'/');
                    }
                    n.extend_from_slice(cstr(&h[0..100]));
                    n
                }
            };
            let size = pax_size.unwrap_or(size_field);
            let mode = u32::try_from(octal(&h[100..108]).ok_or_else(|| err("bad mode".into()))?)
                .map_err(|_| err("bad mode".into()))?
                & 0o7777;
            let kind = match typeflag {
                b'0' | 0 => {
                    if data_at.checked_add(size).is_none_or(|end| end > len) {
                        return Err(err("file runs past the archive".into()));
                    }
                    Kind::File {
                        offset: data_at,
                        size,
                    }
                }
                b'5' => Kind::Dir(Vec::new()),
                t => {
                    return Err(err(format!(
                        "entry type `{}` is not allowed in a model archive",
                        t.escape_ascii()
                    )));
                }
            };
            if name.ends_with(b"/") {
                name.pop();
            }
            idx.insert(&name, mode, kind).map_err(err)?;
            let data_len = if typeflag == b'5' { 0 } else { size };
            at = data_at + data_len.next_multiple_of(BLOCK);
        }
        for n in &mut idx.nodes {
            if let Kind::Dir(children) = &mut n.kind {
                children.shrink_to_fit();
            }
        }
        let names: Vec<Vec<u8>> = idx.nodes.iter().map(|n| n.name.clone()).collect();
        for n in &mut idx.nodes {
            if let Kind::Dir(children) = &mut n.kind {
                children.sort_by(|&a, &b| names[a].cmp(&names[b]));
            }
        }
        Ok(idx)
    }

    fn insert(&mut self, path: &[u8], mode: u32, kind: Kind) -> Result<(), String> {
        let shown = String::from_utf8_lossy(path).into_owned();
        let rel = path.strip_prefix(b"./").unwrap_or(path);
        if rel.is_empty() || rel == b"." {
            // The root itself: take its mode.
            if !matches!(kind, Kind::Dir(_)) {
                return Err(format!("`{shown}`: the root is not a directory"));
            }
            self.nodes[0].mode = mode;
            return Ok(());
        }
        let comps: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
        let mut dir = 0usize;
        for (i, c) in comps.iter().enumerate() {
            if c.is_empty() || *c == b"." || *c == b".." || c.contains(&0) {
                return Err(format!("`{shown}`: bad path component"));
            }
            let found = match &self.nodes[dir].kind {
                Kind::Dir(ch) => ch.iter().copied().find(|&k| self.nodes[k].name == *c),
                Kind::File { .. } => return Err(format!("`{shown}`: parent is a file")),
            };
            let last = i + 1 == comps.len();
            match (found, last) {
                (Some(_), true) => return Err(format!("`{shown}`: in the archive twice")),
                (Some(k), false) => dir = k,
                (None, false) => {
                    return Err(format!("`{shown}`: parent directory not archived first"));
                }
                (None, true) => {
                    let k = self.nodes.len();
                    self.nodes.push(Node {
                        name: c.to_vec(),
                        parent: dir,
                        mode,
                        kind,
                    });
                    if let Kind::Dir(ch) = &mut self.nodes[dir].kind {
                        ch.push(k);
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The child of directory `dir` named `name`.
    pub fn lookup(&self, dir: usize, name: &[u8]) -> Option<usize> {
        match &self.nodes.get(dir)?.kind {
            Kind::Dir(ch) => ch
                .binary_search_by(|&k| self.nodes[k].name.as_slice().cmp(name))
                .ok()
                .map(|i| ch[i]),
            Kind::File { .. } => None,
        }
    }

    /// Number of regular files.
    pub fn files(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| matches!(n.kind, Kind::File { .. }))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &[u8], mode: u32, size: u64, typeflag: u8) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..name.len()].copy_from_slice(name);
        b[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
        b[108..116].copy_from_slice(b"0000000\0");
        b[116..124].copy_from_slice(b"0000000\0");
        b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        b[136..148].copy_from_slice(b"00000000000\0");
        b[156] = typeflag;
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        b[148..156].fill(b' ');
        let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        b
    }

    fn push(t: &mut Vec<u8>, name: &[u8], mode: u32, data: &[u8], tf: u8) {
        t.extend_from_slice(&header(name, mode, data.len() as u64, tf));
        t.extend_from_slice(data);
        t.resize(t.len().next_multiple_of(512), 0);
    }

    fn archive() -> Vec<u8> {
        let mut t = Vec::new();
        push(&mut t, b"./", 0o755, b"", b'5');
        push(&mut t, b"./a.json", 0o644, b"{}", b'0');
        push(&mut t, b"./d/", 0o755, b"", b'5');
        // A pax header giving the next file a long name.
        let long = format!("./d/{}", "n".repeat(120));
        let body = format!(" path={long}\n");
        let mut n = body.len() + 1;
        while n.to_string().len() + body.len() != n {
            n += 1;
        }
        let rec = format!("{n}{body}");
        assert_eq!(rec.len(), n);
        push(&mut t, b"./d/PaxHeaders/x", 0o644, rec.as_bytes(), b'x');
        push(&mut t, &long.as_bytes()[..100], 0o755, &[7u8; 1000], b'0');
        t.extend_from_slice(&[0u8; 1024]);
        t.resize(t.len().next_multiple_of(4096), 0);
        t
    }

    #[test]
    fn indexes_a_model_archive() {
        let t = archive();
        let idx = Index::build(&t[..], t.len() as u64).unwrap();
        assert_eq!(idx.files(), 2);
        let a = idx.lookup(0, b"a.json").unwrap();
        assert_eq!(
            idx.nodes[a].kind,
            Kind::File {
                offset: 1024,
                size: 2
            }
        );
        assert_eq!(&t[1024..1026], b"{}");
        let d = idx.lookup(0, b"d").unwrap();
        let n = idx.lookup(d, "n".repeat(120).as_bytes()).unwrap();
        let Kind::File { offset, size } = idx.nodes[n].kind else {
            panic!()
        };
        assert_eq!(size, 1000);
        let o = usize::try_from(offset).unwrap();
        assert!(t[o..o + 1000].iter().all(|&b| b == 7));
        assert_eq!(idx.nodes[n].mode, 0o755);
        assert_eq!(idx.nodes[n].parent, d);
        assert_eq!(idx.lookup(0, b"missing"), None);
        assert_eq!(idx.lookup(a, b"x"), None);
    }

    #[test]
    fn refuses_what_a_model_archive_does_not_hold() {
        let base = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut t = Vec::new();
            push(&mut t, b"./", 0o755, b"", b'5');
            f(&mut t);
            t.extend_from_slice(&[0u8; 1024]);
            let len = t.len() as u64;
            Index::build(&t[..], len).unwrap_err().to_string()
        };
        assert!(base(&|t| push(t, b"./l", 0o777, b"", b'2')).contains("not allowed"));
        assert!(base(&|t| push(t, b"./../x", 0o644, b"", b'0')).contains("bad path"));
        assert!(base(&|t| push(t, b"./d/x", 0o644, b"", b'0')).contains("parent"));
        assert!(
            base(&|t| {
                push(t, b"./x", 0o644, b"1", b'0');
                push(t, b"./x", 0o644, b"2", b'0');
            })
            .contains("twice")
        );
        assert!(
            base(&|t| {
                push(t, b"./x", 0o644, b"1", b'0');
                let n = t.len() - 512;
                t[n - 512 + 10] ^= 1; // corrupt the header (name) after the checksum
            })
            .contains("checksum")
        );
        // No end blocks.
        let mut t = Vec::new();
        push(&mut t, b"./x", 0o644, b"1", b'0');
        assert!(
            Index::build(&t[..], t.len() as u64)
                .unwrap_err()
                .to_string()
                .contains("end blocks")
        );
        // A file claiming more bytes than the archive has.
        let mut t = Vec::new();
        t.extend_from_slice(&header(b"./x", 0o644, 1 << 20, b'0'));
        t.extend_from_slice(&[0u8; 1024]);
        assert!(
            Index::build(&t[..], t.len() as u64)
                .unwrap_err()
                .to_string()
                .contains("past the archive")
        );
    }

    #[test]
    fn mutations_never_panic() {
        // Every single-byte change of a real archive's headers either still parses
        // or is refused; nothing panics and no file points past the archive.
        let t = archive();
        let len = t.len() as u64;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut m = t.clone();
            let pos = usize::try_from(seed % 3072).unwrap();
            m[pos] = m[pos].wrapping_add(u8::try_from(seed >> 56).unwrap() | 1);
            if seed & 1 == 0 {
                // Re-seal the block's checksum so the change reaches the parser.
                let b = pos / 512 * 512;
                m[b + 148..b + 156].fill(b' ');
                let sum: u32 = m[b..b + 512].iter().map(|&x| u32::from(x)).sum();
                m[b + 148..b + 156]
                    .copy_from_slice(format!("{:06o}\0 ", sum % 0o1000000).as_bytes());
            }
            if let Ok(idx) = Index::build(&m[..], len) {
                for n in &idx.nodes {
                    if let Kind::File { offset, size } = n.kind {
                        assert!(offset + size <= len);
                    }
                }
            }
        }
    }

    #[test]
    fn pax_records() {
        assert_eq!(
            pax(b"12 path=abc\n13 size=1234\n").unwrap(),
            (Some(b"abc".to_vec()), Some(1234))
        );
        assert!(pax(b"99 path=abc\n").is_err());
        assert!(pax(b"12 pathXabc\n").is_err());
        assert_eq!(pax(b"11 mtime=0\n").unwrap(), (None, None));
    }
}
