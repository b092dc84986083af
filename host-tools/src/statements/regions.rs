//! The std [`RegionSource`] for `pqcc sign memory-report`: region bytes read with
//! `pread(2)` from files, which covers ordinary files (address = offset in the file),
//! block devices and byte ranges of a process's memory through `/proc/<pid>/mem`
//! (address = virtual address; reading another process needs ptrace access to it).
//!
//! The core's [`pqcc_core::attest::Attester`] does the hashing and never asks past a
//! region's size; this backend only supplies bytes.

use std::{
    fs::File,
    io::ErrorKind,
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use pqcc_core::{
    attest::{RegionSource, RegionSpec},
    statement::Protection,
};

/// One `--region ID=PATH[@OFFSET+LEN][:PROT]` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionArg {
    /// The region id verifiers pin by.
    pub id: String,
    /// The file to read: a regular file, a device or `/proc/<pid>/mem`.
    pub path: PathBuf,
    /// `(offset, length)`; `None` means the whole (regular) file.
    pub range: Option<(u64, u64)>,
    /// The protection reported for the region (default `r--`).
    pub protection: Protection,
}

impl RegionArg {
    /// Parses `ID=PATH[@OFFSET+LEN][:PROT]`. OFFSET and LEN are decimal or `0x` hex;
    /// PROT is up to three of `r`, `w`, `x` with `-` as a placeholder (`r-x`, `rw`,
    /// `---`). Both suffixes are taken from the right, so a path that itself ends in
    /// something that looks like one needs the suffix written out.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (id, mut rest) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected ID=PATH[@OFFSET+LEN][:PROT]"))?;
        if id.is_empty() {
            return Err(format!("`{s}`: the region id is empty"));
        }
        let mut protection = Protection::READ;
        if let Some((head, tail)) = rest.rsplit_once(':')
            && let Some(p) = parse_protection(tail)
        {
            protection = p;
            rest = head;
        }
        let mut range = None;
        if let Some((head, tail)) = rest.rsplit_once('@')
            && let Some((off, len)) = tail.split_once('+')
        {
            let off = parse_u64(off).ok_or_else(|| format!("`{s}`: bad OFFSET `{off}`"))?;
            let len = parse_u64(len).ok_or_else(|| format!("`{s}`: bad LEN `{len}`"))?;
            if off.checked_add(len).is_none() {
                return Err(format!("`{s}`: OFFSET + LEN overflows"));
            }
            range = Some((off, len));
            rest = head;
        }
        if rest.is_empty() {
            return Err(format!("`{s}`: the path is empty"));
        }
        Ok(Self {
            id: id.to_owned(),
            path: PathBuf::from(rest),
            range,
            protection,
        })
    }
}

fn parse_protection(s: &str) -> Option<Protection> {
    if s.is_empty() || s.len() > 3 {
        return None;
    }
    let mut p = Protection::NONE;
    for c in s.chars() {
        let bit = match c {
            'r' => Protection::READ,
            'w' => Protection::WRITE,
            'x' => Protection::EXEC,
            '-' => continue,
            _ => return None,
        };
        if p.contains(bit) {
            return None;
        }
        p = p.union(bit);
    }
    Some(p)
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// A region resolved against its file: id, address, size, protection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// The region id.
    pub id: String,
    /// Start address (offset in the file).
    pub address: u64,
    /// Length in bytes.
    pub size: u64,
    /// Protection reported.
    pub protection: Protection,
}

impl Region {
    /// The core's view of this region.
    pub fn spec(&self) -> RegionSpec<'_> {
        RegionSpec {
            id: &self.id,
            address: self.address,
            size: self.size,
            protection: self.protection,
        }
    }
}

/// Region bytes from open files, one per region, read with `pread(2)`.
#[derive(Debug)]
pub struct FileRegions {
    files: Vec<(File, PathBuf)>,
}

impl FileRegions {
    /// Opens every region's file read-only (symlinks are followed: `/proc/self/mem`
    /// style paths are links by design) and resolves the arguments into [`Region`]s,
    /// with a whole regular file's length where no range is given (refused for a file
    /// of length 0, which is what `/proc/<pid>/mem` reports).
    pub fn open(args: &[RegionArg]) -> anyhow::Result<(Self, Vec<Region>)> {
        let mut files = Vec::with_capacity(args.len());
        let mut specs = Vec::with_capacity(args.len());
        for a in args {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&a.path)
                .with_context(|| format!("region {}: opening {}", a.id, a.path.display()))?;
            let (address, size) = match a.range {
                Some(r) => r,
                None => {
                    let md = f
                        .metadata()
                        .with_context(|| format!("region {}: fstat {}", a.id, a.path.display()))?;
                    if !md.file_type().is_file() {
                        bail!(
                            "region {}: {} is not a regular file; give its range as \
                             {}={}@OFFSET+LEN",
                            a.id,
                            a.path.display(),
                            a.id,
                            a.path.display()
                        );
                    }
                    if md.len() == 0 {
                        // procfs files such as /proc/<pid>/mem are "regular" with length 0.
                        bail!(
                            "region {}: {} has length 0 (empty, or a pseudo-file such as \
                             /proc/<pid>/mem); give its range as {}={}@OFFSET+LEN",
                            a.id,
                            a.path.display(),
                            a.id,
                            a.path.display()
                        );
                    }
                    (0, md.len())
                }
            };
            specs.push(Region {
                id: a.id.clone(),
                address,
                size,
                protection: a.protection,
            });
            files.push((f, a.path.clone()));
        }
        Ok((Self { files }, specs))
    }

    /// The path region `index` is read from.
    pub fn path(&self, index: usize) -> Option<&Path> {
        self.files.get(index).map(|(_, p)| p.as_path())
    }
}

impl RegionSource for FileRegions {
    type Error = std::io::Error;

    fn read(
        &mut self,
        index: usize,
        region: &RegionSpec<'_>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, std::io::Error> {
        let (f, _) = self
            .files
            .get(index)
            .ok_or_else(|| std::io::Error::other("no such region"))?;
        let pos = region
            .address
            .checked_add(offset)
            .ok_or_else(|| std::io::Error::other("region address overflows"))?;
        loop {
            match f.read_at(buf, pos) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_region_arguments() {
        let r = RegionArg::parse("text=/proc/42/mem@0x400000+4096:r-x").unwrap();
        assert_eq!(r.id, "text");
        assert_eq!(r.path, PathBuf::from("/proc/42/mem"));
        assert_eq!(r.range, Some((0x400000, 4096)));
        assert_eq!(r.protection, Protection::READ.union(Protection::EXEC));

        let r = RegionArg::parse("w=/tmp/weights.bin").unwrap();
        assert_eq!(r.range, None);
        assert_eq!(r.protection, Protection::READ);

        let r = RegionArg::parse("a=/x@y:z@10+20:rw").unwrap();
        assert_eq!(r.path, PathBuf::from("/x@y:z"));
        assert_eq!(r.range, Some((10, 20)));

        for bad in [
            "noequals",
            "=/p",
            "a=",
            "a=/p@x+1",
            "a=@1+2",
            "a=/p@1+0xffffffffffffffff",
        ] {
            assert!(RegionArg::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_protection("rr"), None);
        assert_eq!(parse_protection("---"), Some(Protection::NONE));
    }

    /// A range of this process's own memory through `/proc/self/mem`, hashed and signed
    /// by the core's attester: the report's hash is the SHA3-256 of those bytes.
    #[test]
    fn attests_process_memory_through_proc_mem() {
        use pqcc_core::{
            attest::{Attester, Schedule},
            sign::SigningKey,
            statement::{Envelope, Kind, MemoryReport, Statement as _},
            wire::Platform,
        };
        let secret: Vec<u8> = (0..10_000u32).map(|i| i.to_le_bytes()[0] ^ 0x5a).collect();
        let address = u64::try_from(secret.as_ptr().addr()).unwrap();
        let arg = RegionArg::parse(&format!("heap=/proc/self/mem@{address:#x}+10000:rw")).unwrap();
        let (mut source, resolved) = FileRegions::open(&[arg]).unwrap();
        assert_eq!(resolved[0].address, address);
        assert_eq!(source.path(0), Some(Path::new("/proc/self/mem")));
        let specs: Vec<_> = resolved.iter().map(Region::spec).collect();
        let mut rng = crate::rng::OsRng.unwrap_err();
        let key = SigningKey::generate(&mut rng);
        let sched = Schedule {
            interval: 10,
            validity: 10,
        };
        let mut att = Attester::new(&key, "w", Platform::InsecureNone, &specs, sched, 100).unwrap();
        let mut out = vec![0u8; Kind::MemoryReport.max_len()];
        let done = att
            .attest(&mut source, 100, &[7; 32], &mut rng, &mut out)
            .unwrap();
        let env = Envelope::decode(&out[..done.len]).unwrap();
        let report = MemoryReport::decode(env.body).unwrap();
        assert_eq!(
            report.regions[0].sha3_256,
            pqcc_core::hash::sha3_256(&[&secret])
        );
        assert_eq!(
            report.regions[0].protection,
            Protection::READ.union(Protection::WRITE)
        );
        // A whole-file region of something that is not a regular file needs a range.
        let arg = RegionArg::parse("m=/proc/self/mem").unwrap();
        assert!(FileRegions::open(&[arg]).is_err());
    }
}
