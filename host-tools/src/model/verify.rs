//! `pqcc model verify`: re-checks an archive against its hash file and a root hash in
//! userspace, top-down as the kernel's dm-verity target does on reads, with the same
//! code the builder uses ([`pqcc_core::verity`], [`super::archive::hash_data_blocks`]).
//!
//! Order of the checks: the superblock (signature, version, SHA-256, block sizes); the
//! hash file's length; the top hash block against the root hash; every hash block
//! against its entry one level up; every data block against its leaf digest. The first
//! failure is reported with the block it concerns.

use std::{
    fmt,
    fs::File,
    io::Read,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use pqcc_core::verity::{self, DIGEST_LEN, Geometry, HashType, Superblock};
use subtle::ConstantTimeEq;

use super::archive::{CHUNK, VERITY_BLOCK, hash_data_blocks};

/// The first problem found, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Everything matched.
    Ok {
        /// Data blocks checked.
        data_blocks: u64,
    },
    /// The top hash block (or the only data block) does not hash to the root hash.
    RootMismatch {
        /// The root hash the hash file leads to.
        computed: [u8; DIGEST_LEN],
    },
    /// A hash block does not match its entry in the level above.
    BadHashBlock {
        /// Tree level (0 holds the data blocks' digests).
        level: usize,
        /// Index of the block within the level.
        index: u64,
        /// Byte offset in the hash file.
        offset: u64,
    },
    /// A data block does not match its digest.
    BadDataBlock {
        /// Index of the 4 KiB block in the archive.
        index: u64,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok { data_blocks } => write!(f, "ok ({data_blocks} data blocks)"),
            Self::RootMismatch { computed } => {
                write!(
                    f,
                    "root hash mismatch: the hash file gives {}",
                    hex::encode(computed)
                )
            }
            Self::BadHashBlock {
                level,
                index,
                offset,
            } => write!(
                f,
                "hash block {index} of level {level} (hash file bytes {offset}..{}) is corrupt",
                offset + u64::from(VERITY_BLOCK)
            ),
            Self::BadDataBlock { index } => {
                let start = index * u64::from(VERITY_BLOCK);
                write!(
                    f,
                    "data block {index} (archive bytes {start}..{}) does not match its hash",
                    start + u64::from(VERITY_BLOCK)
                )
            }
        }
    }
}

/// What a hash file says about its archive: its root hash and the parameters in its
/// superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tree {
    /// The root hash the hash file leads to (the top hash block's digest, or the only
    /// data block's).
    pub root: [u8; DIGEST_LEN],
    /// The salt from the superblock.
    pub salt: verity::Salt,
    /// Data blocks (of 4096 bytes) the tree covers.
    pub data_blocks: u64,
}

/// Checks `archive` against `verity_file` (with superblock) and `root`.
/// Errors are I/O problems or a malformed hash file; mismatches are [`Finding`]s.
pub fn verify(
    archive: &Path,
    verity_file: &Path,
    root: &[u8; DIGEST_LEN],
) -> anyhow::Result<Finding> {
    check(archive, verity_file, Some(root)).map(|(finding, _)| finding)
}

/// Checks `archive` against `verity_file` and the root hash the hash file itself leads
/// to, top-down like [`verify`]: every hash block against its parent entry and every
/// data block against its leaf. For signing an archive built elsewhere (`pqcc sign
/// model --verity`): the root hash and parameters come from the tree only once the
/// archive's bytes were found to match it. [`Finding::RootMismatch`] cannot occur.
pub fn read_tree(archive: &Path, verity_file: &Path) -> anyhow::Result<(Finding, Tree)> {
    check(archive, verity_file, None)
}

/// [`verify`] against `root`, or against the tree's own root when `root` is `None`.
fn check(
    archive: &Path,
    verity_file: &Path,
    root: Option<&[u8; DIGEST_LEN]>,
) -> anyhow::Result<(Finding, Tree)> {
    let mut vf = File::open(verity_file)
        .with_context(|| format!("{}: cannot open", verity_file.display()))?;
    let mut hash = Vec::new();
    vf.read_to_end(&mut hash)
        .with_context(|| format!("{}: read error", verity_file.display()))?;
    let sb = Superblock::parse(&hash)
        .with_context(|| format!("{}: bad verity superblock", verity_file.display()))?;
    if sb.data_block_size != VERITY_BLOCK || sb.hash_block_size != VERITY_BLOCK {
        bail!(
            "{}: block sizes other than 4096 are not used by model archives",
            verity_file.display()
        );
    }
    if sb.hash_type != HashType::Normal {
        bail!(
            "{}: verity format 0 is not used by model archives",
            verity_file.display()
        );
    }
    let g = Geometry::new(sb.data_blocks, sb.hash_block_size, true)?;
    if (hash.len() as u64) < g.hash_device_len() {
        bail!(
            "{}: hash file is {} bytes, its superblock needs {}",
            verity_file.display(),
            hash.len(),
            g.hash_device_len()
        );
    }
    let salt = sb.salt;
    let ty = sb.hash_type;
    let bs = VERITY_BLOCK as usize;
    let block_at = |off: u64| -> &[u8] {
        // In bounds: the length was checked against the geometry above.
        let o = usize::try_from(off).unwrap_or(usize::MAX);
        &hash[o..o + bs]
    };
    let entry_at = |level: usize, index: u64| -> &[u8] {
        let (blk, within) = g.entry_location(level, index);
        &block_at(blk)[within..within + DIGEST_LEN]
    };

    let af = File::open(archive).with_context(|| format!("{}: cannot open", archive.display()))?;
    let alen = af
        .metadata()
        .with_context(|| format!("{}: cannot stat", archive.display()))?
        .len();
    if alen < sb.data_blocks * u64::from(VERITY_BLOCK) {
        bail!(
            "{}: archive is {alen} bytes, the hash file covers {} blocks of 4096",
            archive.display(),
            sb.data_blocks
        );
    }

    // 1. The root: the top hash block, or the single data block.
    let levels = g.levels();
    let tree = |root| Tree {
        root,
        salt,
        data_blocks: sb.data_blocks,
    };
    if levels == 0 {
        let mut b = vec![0u8; bs];
        af.read_exact_at(&mut b, 0)
            .with_context(|| format!("{}: read error", archive.display()))?;
        let d = verity::hash_block(ty, salt.as_bytes(), &b);
        if !bool::from(d.ct_eq(root.unwrap_or(&d))) {
            return Ok((Finding::RootMismatch { computed: d }, tree(d)));
        }
        return Ok((Finding::Ok { data_blocks: 1 }, tree(d)));
    }
    let top = verity::hash_block(ty, salt.as_bytes(), block_at(g.level_offset(levels - 1)));
    if !bool::from(top.ct_eq(root.unwrap_or(&top))) {
        return Ok((Finding::RootMismatch { computed: top }, tree(top)));
    }
    // 2. Each level's blocks against the entries one level up, top-down.
    for level in (0..levels - 1).rev() {
        for index in 0..g.level_blocks(level) {
            let off = g.block_offset(level, index);
            let d = verity::hash_block(ty, salt.as_bytes(), block_at(off));
            if !bool::from(d.ct_eq(entry_at(level + 1, index))) {
                return Ok((
                    Finding::BadHashBlock {
                        level,
                        index,
                        offset: off,
                    },
                    tree(top),
                ));
            }
        }
    }
    // 3. The data blocks, a chunk at a time, hashed on all cores.
    let mut buf = vec![0u8; CHUNK];
    let mut index = 0u64;
    while index < sb.data_blocks {
        let n_blocks = (sb.data_blocks - index).min((CHUNK / bs) as u64);
        let n = usize::try_from(n_blocks).unwrap_or(0) * bs;
        af.read_exact_at(&mut buf[..n], index * u64::from(VERITY_BLOCK))
            .with_context(|| format!("{}: read error", archive.display()))?;
        let digests = hash_data_blocks(&salt, &buf[..n]);
        for (i, d) in digests.iter().enumerate() {
            let bi = index + i as u64;
            if !bool::from(d.ct_eq(entry_at(0, bi))) {
                return Ok((Finding::BadDataBlock { index: bi }, tree(top)));
            }
        }
        index += n_blocks;
    }
    Ok((
        Finding::Ok {
            data_blocks: sb.data_blocks,
        },
        tree(top),
    ))
}

/// The largest build stamp read (`pqcc model build` writes well under 4 KiB).
const MAX_STAMP_LEN: u64 = 64 << 10;

/// `archive` with `suffix` appended to its file name (`m.tar` → `m.tar.verity`).
pub fn beside_path(archive: &Path, suffix: &str) -> PathBuf {
    let mut p = archive.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Where a fact about an archive was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The dm-verity superblock of this hash file.
    HashFile(PathBuf),
    /// This `pqcc model build` stamp (`ARCHIVE.stamp`).
    Stamp(PathBuf),
    /// The archive's file name (`ORG--NAME@REV.tar`, as `pqcc model build` names it).
    FileName(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HashFile(p) => write!(f, "the superblock of {}", p.display()),
            Self::Stamp(p) => write!(f, "the build stamp {}", p.display()),
            Self::FileName(p) => write!(f, "the file name of {}", p.display()),
        }
    }
}

/// The dm-verity salt of `archive`, from its hash file's superblock (`hash_file`, or
/// `ARCHIVE.verity`) and its build stamp (`ARCHIVE.stamp`), whichever exist. `None`
/// when neither does. Errors: a file that exists but cannot be read or parsed, or the
/// two disagreeing (nothing is guessed).
pub fn archive_salt(
    archive: &Path,
    hash_file: Option<&Path>,
) -> anyhow::Result<Option<(Vec<u8>, Source)>> {
    let hash_file = hash_file.map_or_else(|| beside_path(archive, ".verity"), Path::to_path_buf);
    let from_superblock = match File::open(&hash_file) {
        Ok(f) => {
            let mut sb = Vec::with_capacity(verity::SUPERBLOCK_LEN);
            f.take(verity::SUPERBLOCK_LEN as u64)
                .read_to_end(&mut sb)
                .with_context(|| format!("{}: read error", hash_file.display()))?;
            let sb = Superblock::parse(&sb)
                .with_context(|| format!("{}: bad verity superblock", hash_file.display()))?;
            Some((sb.salt.as_bytes().to_vec(), Source::HashFile(hash_file)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("{}: cannot open", hash_file.display())),
    };
    let from_stamp = match read_stamp(archive)? {
        Some((v, path)) => {
            let salt = v
                .get("salt")
                .and_then(|s| s.as_str())
                .and_then(|s| hex::decode(s).ok())
                .with_context(|| format!("{}: no hex `salt`", path.display()))?;
            Some((salt, Source::Stamp(path)))
        }
        None => None,
    };
    match (from_superblock, from_stamp) {
        (Some((a, sa)), Some((b, sb))) if a != b => bail!(
            "{}: its salt is {} in {sa} but {} in {sb}; refusing to pick one",
            archive.display(),
            hex::encode(&a),
            hex::encode(&b)
        ),
        (Some(x), _) | (None, Some(x)) => Ok(Some(x)),
        (None, None) => Ok(None),
    }
}

/// The build stamp beside `archive` (`ARCHIVE.stamp`), parsed; `None` when there is
/// none.
fn read_stamp(archive: &Path) -> anyhow::Result<Option<(serde_json::Value, PathBuf)>> {
    let path = beside_path(archive, ".stamp");
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot open", path.display())),
    };
    let mut bytes = Vec::new();
    f.take(MAX_STAMP_LEN + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{}: read error", path.display()))?;
    if bytes.len() as u64 > MAX_STAMP_LEN {
        bail!(
            "{}: over {MAX_STAMP_LEN} bytes: not a build stamp",
            path.display()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a build stamp (JSON)", path.display()))?;
    if v.get("format").and_then(|f| f.as_str()) != Some("pqcc-model-archive-v1") {
        bail!(
            "{}: not a pqcc-model-archive-v1 build stamp",
            path.display()
        );
    }
    Ok(Some((v, path)))
}

/// The `NAME@REV` an archive was built as: from its build stamp (`ARCHIVE.stamp`),
/// else from its file name when that is `ORG--NAME@REV.tar` (`--` standing for `/`).
/// `None` when neither says.
pub fn archive_identity(archive: &Path) -> anyhow::Result<Option<(String, String, Source)>> {
    if let Some((v, path)) = read_stamp(archive)? {
        let field = |k: &str| {
            v.get(k)
                .and_then(|s| s.as_str())
                .map(str::to_owned)
                .with_context(|| format!("{}: no string `{k}`", path.display()))
        };
        return Ok(Some((
            field("name")?,
            field("revision")?,
            Source::Stamp(path),
        )));
    }
    let from_name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar"))
        .and_then(|n| n.split_once('@'))
        .filter(|(n, r)| !n.is_empty() && !r.is_empty() && !r.contains('@'));
    Ok(from_name.map(|(n, r)| {
        (
            n.replace("--", "/"),
            r.to_owned(),
            Source::FileName(archive.to_path_buf()),
        )
    }))
}
