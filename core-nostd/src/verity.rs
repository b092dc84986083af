//! dm-verity arithmetic, byte-compatible with `veritysetup format` (cryptsetup
//! `lib/verity/verity.c` and `verity_hash.c`) and the kernel's `dm-verity` target.
//!
//! A dm-verity device is a data device cut into `data_block_size` blocks and a hash
//! device holding a Merkle tree over them:
//!
//! - **Leaf digests.** Every data block `B` is hashed with the salt: format 1
//!   ("normal") takes `SHA-256(salt ‖ B)`, format 0 ("Chrome OS") `SHA-256(B ‖ salt)`.
//! - **Hash blocks.** Digests are packed, in order, into `hash_block_size` blocks,
//!   `hash_block_size / 32` per block (SHA-256 digests are 32 bytes, already a power of
//!   two, so format 1's per-entry padding is empty); the rest of the last block of a
//!   level is zero. Each hash block is hashed the same salted way to give the entries of
//!   the level above. Levels are added until one block holds them all; the root hash is
//!   the salted hash of that top block (or of the only data block when there is one).
//! - **Layout.** The hash device starts with an optional 512-byte superblock, padded
//!   to a whole hash block; then the levels follow *top level first*, down to the level
//!   that holds the data blocks' digests (cryptsetup's `hash_level_block[]`).
//! - **Superblock** (`struct verity_sb`, little-endian): `"verity\0\0"`, version 1,
//!   hash type, UUID (16 bytes, in the order written), algorithm name (32 bytes,
//!   NUL-padded), data and hash block sizes, number of data blocks, salt size, 6 bytes
//!   of padding, the salt (256 bytes, zero-padded), 168 bytes of padding.
//!
//! This module is pure arithmetic over caller-supplied bytes: it hashes blocks it is
//! given, packs digests into hash blocks and hands each finished block to the caller
//! with its byte offset in the hash device ([`TreeBuilder`]); where those bytes go is the
//! caller's business. Only SHA-256 is supported (the one algorithm pqcc uses).
//!
//! What it checks: block sizes (powers of two, 512 to 4096 bytes), salt length (at most
//! 256 bytes), that a tree is built over exactly the announced number of blocks, and
//! every field of a superblock it parses. What it does not: whether the data is what
//! you meant — that is what the root hash, held by someone you trust, is for.

use core::fmt;

use sha2::{Digest, Sha256};

/// Length of a SHA-256 digest, the only hash this module supports.
pub const DIGEST_LEN: usize = 32;
const DIGEST_LEN_U32: u32 = 32;
/// Size of the on-disk superblock (`struct verity_sb`).
pub const SUPERBLOCK_LEN: usize = 512;
/// Largest salt the superblock can hold.
pub const MAX_SALT_LEN: usize = 256;
/// Smallest block size accepted (data and hash).
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Largest block size accepted (data and hash): the kernel wants a block to fit a page.
pub const MAX_BLOCK_SIZE: u32 = 4096;
/// Most tree levels possible: 2^64 blocks with 16 digests per 512-byte hash block.
pub const MAX_LEVELS: usize = 16;
/// The superblock's signature.
pub const SIGNATURE: [u8; 8] = *b"verity\0\0";
/// The only superblock version there is.
pub const SUPERBLOCK_VERSION: u32 = 1;
/// The hash algorithm name as stored in the superblock.
pub const ALGORITHM: &[u8] = b"sha256";

/// Everything that can go wrong in dm-verity arithmetic.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerityError {
    // ---- malformed input -------------------------------------------------
    /// A block size is not a power of two between 512 and 4096 bytes.
    BadBlockSize,
    /// A salt is longer than 256 bytes.
    SaltTooLong,
    /// A hex string has the wrong length or a character that is not a hex digit.
    BadHex,
    /// A UUID is not of the form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    BadUuid,
    /// Fewer than 512 bytes were given where a superblock was expected.
    SuperblockTruncated,
    /// The superblock does not start with `"verity\0\0"`.
    BadSignature,
    /// The superblock's version is not 1.
    UnsupportedVersion(u32),
    /// The hash type is neither 0 (Chrome OS) nor 1 (normal).
    UnsupportedHashType(u32),
    /// The superblock names a hash algorithm other than SHA-256.
    UnsupportedAlgorithm,
    // ---- misuse -----------------------------------------------------------
    /// A device of zero data blocks has no root hash.
    NoData,
    /// Offsets overflow 64 bits.
    Overflow,
    /// More or fewer leaf digests were pushed than the geometry announced.
    BlockCountMismatch,
    /// An output buffer is too small.
    BufferTooSmall,
}

impl fmt::Display for VerityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadBlockSize => f.write_str("block size must be a power of two from 512 to 4096"),
            Self::SaltTooLong => f.write_str("salt longer than 256 bytes"),
            Self::BadHex => f.write_str("malformed hex string"),
            Self::BadUuid => f.write_str("malformed UUID"),
            Self::SuperblockTruncated => f.write_str("verity superblock truncated"),
            Self::BadSignature => f.write_str("no verity superblock signature"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported verity superblock version {v}"),
            Self::UnsupportedHashType(t) => write!(f, "unsupported verity hash type {t}"),
            Self::UnsupportedAlgorithm => {
                f.write_str("unsupported verity hash algorithm (only sha256)")
            }
            Self::NoData => f.write_str("a verity device needs at least one data block"),
            Self::Overflow => f.write_str("verity offsets overflow"),
            Self::BlockCountMismatch => {
                f.write_str("number of hashed blocks differs from the geometry")
            }
            Self::BufferTooSmall => f.write_str("output buffer too small"),
        }
    }
}

impl core::error::Error for VerityError {}

/// How a block is salted (the superblock's `hash_type`, veritysetup's `--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashType {
    /// Format 0, Chrome OS: `H(block ‖ salt)`.
    ChromeOs,
    /// Format 1, the default: `H(salt ‖ block)`.
    Normal,
}

impl HashType {
    /// The value stored in the superblock.
    pub const fn as_u32(self) -> u32 {
        match self {
            Self::ChromeOs => 0,
            Self::Normal => 1,
        }
    }

    /// Parses the superblock's value.
    pub const fn from_u32(v: u32) -> Result<Self, VerityError> {
        match v {
            0 => Ok(Self::ChromeOs),
            1 => Ok(Self::Normal),
            other => Err(VerityError::UnsupportedHashType(other)),
        }
    }
}

/// A salt of at most 256 bytes (the empty salt is veritysetup's `--salt=-`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Salt {
    bytes: [u8; MAX_SALT_LEN],
    len: usize,
}

impl fmt::Debug for Salt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Salt(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

impl Salt {
    /// The empty salt.
    pub const EMPTY: Self = Self {
        bytes: [0; MAX_SALT_LEN],
        len: 0,
    };

    /// A salt holding `bytes`.
    pub fn new(bytes: &[u8]) -> Result<Self, VerityError> {
        if bytes.len() > MAX_SALT_LEN {
            return Err(VerityError::SaltTooLong);
        }
        let mut s = Self::EMPTY;
        s.bytes[..bytes.len()].copy_from_slice(bytes);
        s.len = bytes.len();
        Ok(s)
    }

    /// Parses hex as veritysetup's `--salt` does: `-` (or the empty string) is no salt.
    pub fn from_hex(hex: &str) -> Result<Self, VerityError> {
        if hex == "-" {
            return Ok(Self::EMPTY);
        }
        let h = hex.as_bytes();
        if !h.len().is_multiple_of(2) {
            return Err(VerityError::BadHex);
        }
        if h.len() / 2 > MAX_SALT_LEN {
            return Err(VerityError::SaltTooLong);
        }
        let mut s = Self::EMPTY;
        decode_hex(h, &mut s.bytes[..h.len() / 2])?;
        s.len = h.len() / 2;
        Ok(s)
    }

    /// The salt's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The salted SHA-256 of one block, as dm-verity computes it at every level.
pub fn hash_block(hash_type: HashType, salt: &[u8], block: &[u8]) -> [u8; DIGEST_LEN] {
    let mut h = Sha256::new();
    match hash_type {
        HashType::Normal => {
            h.update(salt);
            h.update(block);
        }
        HashType::ChromeOs => {
            h.update(block);
            h.update(salt);
        }
    }
    h.finalize().into()
}

/// Checks a block size: a power of two from 512 to 4096 bytes.
pub const fn check_block_size(size: u32) -> Result<(), VerityError> {
    if size.is_power_of_two() && size >= MIN_BLOCK_SIZE && size <= MAX_BLOCK_SIZE {
        Ok(())
    } else {
        Err(VerityError::BadBlockSize)
    }
}

/// Where every level of the hash tree lies in the hash device.
///
/// Level 0 holds the data blocks' digests; level `levels() - 1` is a single block
/// whose salted hash is the root hash. Offsets are in bytes from the start of the hash
/// device and include the superblock area when there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    hash_block_size: u32,
    data_blocks: u64,
    hash_start: u64,
    levels: usize,
    level_start: [u64; MAX_LEVELS],
    level_blocks: [u64; MAX_LEVELS],
    end_block: u64,
}

impl Geometry {
    /// The tree over `data_blocks` blocks with `hash_block_size`-byte hash blocks,
    /// after a superblock area when `superblock` is set (cryptsetup's
    /// `VERITY_hash_offset_block` with a zero hash-area offset).
    pub fn new(
        data_blocks: u64,
        hash_block_size: u32,
        superblock: bool,
    ) -> Result<Self, VerityError> {
        check_block_size(hash_block_size)?;
        if data_blocks == 0 {
            return Err(VerityError::NoData);
        }
        let hbs = u64::from(hash_block_size);
        // The superblock area: 512 bytes rounded up to a whole hash block.
        let hash_start = if superblock {
            (SUPERBLOCK_LEN as u64).div_ceil(hbs)
        } else {
            0
        };
        // Digests per hash block as a power of two (SHA-256: 32 bytes an entry).
        let bits = (hash_block_size / DIGEST_LEN_U32).trailing_zeros();
        // cryptsetup: levels++ while (data_blocks - 1) >> (bits * levels) != 0.
        let mut levels: u32 = 0;
        while bits * levels < 64 && ((data_blocks - 1) >> (bits * levels)) != 0 {
            levels += 1;
        }
        if levels as usize > MAX_LEVELS {
            return Err(VerityError::Overflow);
        }
        let mut level_start = [0u64; MAX_LEVELS];
        let mut level_blocks = [0u64; MAX_LEVELS];
        let mut pos = hash_start;
        // Top level first: level i has ceil(data_blocks / 2^((i+1)·bits)) blocks.
        for i in (0..levels).rev() {
            let shift = (i + 1) * bits;
            let blocks = if shift >= 64 {
                1
            } else {
                let per = 1u64 << shift;
                data_blocks.div_ceil(per)
            };
            level_start[i as usize] = pos;
            level_blocks[i as usize] = blocks;
            pos = pos.checked_add(blocks).ok_or(VerityError::Overflow)?;
        }
        pos.checked_mul(hbs).ok_or(VerityError::Overflow)?;
        Ok(Self {
            hash_block_size,
            data_blocks,
            hash_start,
            levels: levels as usize,
            level_start,
            level_blocks,
            end_block: pos,
        })
    }

    /// Number of data blocks covered.
    pub const fn data_blocks(&self) -> u64 {
        self.data_blocks
    }

    /// Size of a hash block in bytes.
    pub const fn hash_block_size(&self) -> u32 {
        self.hash_block_size
    }

    /// Digests per hash block.
    pub const fn hashes_per_block(&self) -> u64 {
        (self.hash_block_size as u64) / DIGEST_LEN as u64
    }

    /// Number of hash levels (0 when there is a single data block).
    pub const fn levels(&self) -> usize {
        self.levels
    }

    /// Number of hash blocks in `level`, or 0 past the top.
    pub fn level_blocks(&self, level: usize) -> u64 {
        if level < self.levels {
            self.level_blocks[level]
        } else {
            0
        }
    }

    /// Byte offset of the first block of `level` in the hash device.
    pub fn level_offset(&self, level: usize) -> u64 {
        if level < self.levels {
            self.level_start[level] * u64::from(self.hash_block_size)
        } else {
            self.end_block * u64::from(self.hash_block_size)
        }
    }

    /// Byte offset of block `index` of `level` in the hash device.
    pub fn block_offset(&self, level: usize, index: u64) -> u64 {
        self.level_offset(level) + index * u64::from(self.hash_block_size)
    }

    /// Where the digest of block `index` of the level below `level` (data blocks for
    /// level 0) is stored: the byte offset of its hash block and its offset within it.
    pub fn entry_location(&self, level: usize, index: u64) -> (u64, usize) {
        let per = self.hashes_per_block();
        let block = self.block_offset(level, index / per);
        // `index % per` < 128, so the product fits any usize.
        let within = usize::try_from(index % per).unwrap_or(0) * DIGEST_LEN;
        (block, within)
    }

    /// Number of hash blocks in the tree (without the superblock area).
    pub const fn tree_blocks(&self) -> u64 {
        self.end_block - self.hash_start
    }

    /// Size of the whole hash device in bytes, superblock area included: what
    /// `veritysetup format` reports as "Hash device size".
    pub const fn hash_device_len(&self) -> u64 {
        self.end_block * self.hash_block_size as u64
    }

    /// Byte offset of the tree (the end of the superblock area).
    pub const fn tree_offset(&self) -> u64 {
        self.hash_start * self.hash_block_size as u64
    }
}

/// The dm-verity superblock (`struct verity_sb`), SHA-256 only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    /// Format 0 or 1.
    pub hash_type: HashType,
    /// The UUID, bytes in the order of its text form.
    pub uuid: [u8; 16],
    /// Data block size in bytes.
    pub data_block_size: u32,
    /// Hash block size in bytes.
    pub hash_block_size: u32,
    /// Number of data blocks.
    pub data_blocks: u64,
    /// The salt.
    pub salt: Salt,
}

impl Superblock {
    /// Writes the 512-byte superblock into `out[..512]`.
    pub fn emit(&self, out: &mut [u8]) -> Result<(), VerityError> {
        check_block_size(self.data_block_size)?;
        check_block_size(self.hash_block_size)?;
        let out = out
            .get_mut(..SUPERBLOCK_LEN)
            .ok_or(VerityError::BufferTooSmall)?;
        out.fill(0);
        out[0..8].copy_from_slice(&SIGNATURE);
        out[8..12].copy_from_slice(&SUPERBLOCK_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.hash_type.as_u32().to_le_bytes());
        out[16..32].copy_from_slice(&self.uuid);
        out[32..32 + ALGORITHM.len()].copy_from_slice(ALGORITHM);
        out[64..68].copy_from_slice(&self.data_block_size.to_le_bytes());
        out[68..72].copy_from_slice(&self.hash_block_size.to_le_bytes());
        out[72..80].copy_from_slice(&self.data_blocks.to_le_bytes());
        let salt = self.salt.as_bytes();
        // A Salt never exceeds 256 bytes.
        let salt_len = u16::try_from(salt.len()).map_err(|_| VerityError::SaltTooLong)?;
        out[80..82].copy_from_slice(&salt_len.to_le_bytes());
        out[88..88 + salt.len()].copy_from_slice(salt);
        Ok(())
    }

    /// Parses a superblock from the first 512 bytes of `bytes`, checking the signature,
    /// version, hash type, algorithm, block sizes and salt size.
    pub fn parse(bytes: &[u8]) -> Result<Self, VerityError> {
        let b = bytes
            .get(..SUPERBLOCK_LEN)
            .ok_or(VerityError::SuperblockTruncated)?;
        if b[0..8] != SIGNATURE {
            return Err(VerityError::BadSignature);
        }
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let version = u32_at(8);
        if version != SUPERBLOCK_VERSION {
            return Err(VerityError::UnsupportedVersion(version));
        }
        let hash_type = HashType::from_u32(u32_at(12))?;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[16..32]);
        let alg = &b[32..64];
        if &alg[..ALGORITHM.len()] != ALGORITHM || alg[ALGORITHM.len()..].iter().any(|&c| c != 0) {
            return Err(VerityError::UnsupportedAlgorithm);
        }
        let data_block_size = u32_at(64);
        let hash_block_size = u32_at(68);
        check_block_size(data_block_size)?;
        check_block_size(hash_block_size)?;
        let mut blocks = [0u8; 8];
        blocks.copy_from_slice(&b[72..80]);
        let data_blocks = u64::from_le_bytes(blocks);
        let salt_len = usize::from(u16::from_le_bytes([b[80], b[81]]));
        if salt_len > MAX_SALT_LEN {
            return Err(VerityError::SaltTooLong);
        }
        let salt = Salt::new(&b[88..88 + salt_len])?;
        Ok(Self {
            hash_type,
            uuid,
            data_block_size,
            hash_block_size,
            data_blocks,
            salt,
        })
    }
}

/// Builds the hash tree from the data blocks' digests, streaming: each hash block is
/// handed to the caller as soon as it is complete, with its byte offset in the hash
/// device, and only one partly filled block per level is kept.
///
/// Push exactly [`Geometry::data_blocks`] leaf digests (in block order) with
/// [`push`](Self::push), then call [`finish`](Self::finish) for the root hash.
/// Every hash block of the tree is emitted exactly once.
pub struct TreeBuilder {
    geometry: Geometry,
    hash_type: HashType,
    salt: Salt,
    bufs: [[u8; MAX_BLOCK_SIZE as usize]; MAX_LEVELS],
    fill: [u64; MAX_LEVELS],
    emitted: [u64; MAX_LEVELS],
    pushed: u64,
    single: Option<[u8; DIGEST_LEN]>,
}

impl TreeBuilder {
    /// A builder for `geometry`, hashing with `hash_type` and `salt`.
    pub fn new(geometry: Geometry, hash_type: HashType, salt: Salt) -> Self {
        Self {
            geometry,
            hash_type,
            salt,
            bufs: [[0; MAX_BLOCK_SIZE as usize]; MAX_LEVELS],
            fill: [0; MAX_LEVELS],
            emitted: [0; MAX_LEVELS],
            pushed: 0,
            single: None,
        }
    }

    /// The geometry being built.
    pub const fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Adds the digest of the next data block (computed with [`hash_block`]). Calls
    /// `emit(offset, block)` for every hash block this completes.
    pub fn push<E: From<VerityError>>(
        &mut self,
        digest: &[u8; DIGEST_LEN],
        emit: &mut impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.pushed >= self.geometry.data_blocks {
            return Err(VerityError::BlockCountMismatch.into());
        }
        self.pushed += 1;
        if self.geometry.levels == 0 {
            self.single = Some(*digest);
            return Ok(());
        }
        self.add(0, digest, emit)
    }

    /// Pads and emits the remaining partial blocks and returns the root hash.
    pub fn finish<E: From<VerityError>>(
        mut self,
        emit: &mut impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<[u8; DIGEST_LEN], E> {
        if self.pushed != self.geometry.data_blocks {
            return Err(VerityError::BlockCountMismatch.into());
        }
        let levels = self.geometry.levels;
        if levels == 0 {
            return self
                .single
                .ok_or_else(|| VerityError::BlockCountMismatch.into());
        }
        for level in 0..levels {
            if self.fill[level] != 0 {
                self.flush(level, emit)?;
            }
        }
        // The top level's one block was flushed into `single` (see `flush`).
        let top = levels - 1;
        if self.emitted[top] != 1 {
            return Err(VerityError::BlockCountMismatch.into());
        }
        self.single
            .ok_or_else(|| VerityError::BlockCountMismatch.into())
    }

    fn add<E: From<VerityError>>(
        &mut self,
        level: usize,
        digest: &[u8; DIGEST_LEN],
        emit: &mut impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let per = self.geometry.hashes_per_block();
        // fill < per <= 128, so the offset is small.
        let at = usize::try_from(self.fill[level]).unwrap_or(0) * DIGEST_LEN;
        self.bufs[level][at..at + DIGEST_LEN].copy_from_slice(digest);
        self.fill[level] += 1;
        if self.fill[level] == per {
            self.flush(level, emit)?;
        }
        Ok(())
    }

    /// Emits the current block of `level` (zero-padded) and pushes its hash upwards.
    fn flush<E: From<VerityError>>(
        &mut self,
        level: usize,
        emit: &mut impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let hbs = self.geometry.hash_block_size as usize;
        let used = usize::try_from(self.fill[level]).unwrap_or(0) * DIGEST_LEN;
        self.bufs[level][used..hbs].fill(0);
        let index = self.emitted[level];
        if index >= self.geometry.level_blocks(level) {
            return Err(VerityError::BlockCountMismatch.into());
        }
        let offset = self.geometry.block_offset(level, index);
        emit(offset, &self.bufs[level][..hbs])?;
        let digest = hash_block(
            self.hash_type,
            self.salt.as_bytes(),
            &self.bufs[level][..hbs],
        );
        self.emitted[level] += 1;
        self.fill[level] = 0;
        if level + 1 < self.geometry.levels {
            self.add(level + 1, &digest, emit)
        } else {
            self.single = Some(digest);
            Ok(())
        }
    }
}

/// Decodes hex (either case) into `out`; `hex` must be exactly twice `out`'s length.
pub fn decode_hex(hex: &[u8], out: &mut [u8]) -> Result<(), VerityError> {
    if hex.len() != out.len() * 2 {
        return Err(VerityError::BadHex);
    }
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(())
}

/// Parses a 64-character hex root hash.
pub fn parse_root_hash(hex: &str) -> Result<[u8; DIGEST_LEN], VerityError> {
    let mut out = [0u8; DIGEST_LEN];
    decode_hex(hex.as_bytes(), &mut out)?;
    Ok(out)
}

/// Writes `bytes` as lowercase hex into `out` (twice `bytes`' length) and returns it.
pub fn encode_hex<'a>(bytes: &[u8], out: &'a mut [u8]) -> Result<&'a str, VerityError> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let out = out
        .get_mut(..bytes.len() * 2)
        .ok_or(VerityError::BufferTooSmall)?;
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 15)];
    }
    core::str::from_utf8(out).map_err(|_| VerityError::BadHex)
}

/// Parses a UUID in its text form (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex in
/// either case) into its 16 bytes, in text order (as libuuid's `uuid_parse`).
pub fn parse_uuid(text: &str) -> Result<[u8; 16], VerityError> {
    let t = text.as_bytes();
    if t.len() != 36 || t[8] != b'-' || t[13] != b'-' || t[18] != b'-' || t[23] != b'-' {
        return Err(VerityError::BadUuid);
    }
    let mut hex = [0u8; 32];
    let mut n = 0;
    for &c in t.iter().filter(|&&c| c != b'-') {
        if n == 32 {
            return Err(VerityError::BadUuid);
        }
        hex[n] = c;
        n += 1;
    }
    if n != 32 {
        return Err(VerityError::BadUuid);
    }
    let mut out = [0u8; 16];
    decode_hex(&hex, &mut out).map_err(|_| VerityError::BadUuid)?;
    Ok(out)
}

fn nibble(c: u8) -> Result<u8, VerityError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(VerityError::BadHex),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_veritysetup() {
        // 256 data blocks: 2 leaf-level blocks, 1 top block (format_nosb.txt: 3 blocks).
        let g = Geometry::new(256, 4096, false).unwrap();
        assert_eq!(g.levels(), 2);
        assert_eq!(g.level_blocks(0), 2);
        assert_eq!(g.level_blocks(1), 1);
        assert_eq!(g.level_offset(1), 0, "top level first");
        assert_eq!(g.level_offset(0), 4096);
        assert_eq!(g.hash_device_len(), 12288);
        // With a superblock the tree starts one 4 KiB block later (hash_sb.img: 16384).
        let g = Geometry::new(256, 4096, true).unwrap();
        assert_eq!(g.hash_device_len(), 16384);
        assert_eq!(g.tree_offset(), 4096);
        // 769 blocks: 7 leaf-level blocks + 1 (format_769blk_nosb.txt: 8 hash blocks).
        let g = Geometry::new(769, 4096, false).unwrap();
        assert_eq!(g.tree_blocks(), 8);
        // 21 blocks (sample.tar): one level, 8192 bytes with the superblock.
        let g = Geometry::new(21, 4096, true).unwrap();
        assert_eq!((g.levels(), g.hash_device_len()), (1, 8192));
        // One block: no hash levels at all; the superblock area alone.
        let g = Geometry::new(1, 4096, true).unwrap();
        assert_eq!((g.levels(), g.hash_device_len()), (0, 4096));
        // 512-byte hash blocks: the superblock fills exactly one block.
        let g = Geometry::new(16384, 512, true).unwrap();
        assert_eq!(g.tree_offset(), 512);
        assert_eq!(g.levels(), 4);
        // The largest device still has a tree of bounded depth.
        let g = Geometry::new(u64::MAX, 512, false);
        assert!(matches!(g, Ok(_) | Err(VerityError::Overflow)));
        assert_eq!(Geometry::new(0, 4096, true), Err(VerityError::NoData));
        assert_eq!(Geometry::new(1, 1000, true), Err(VerityError::BadBlockSize));
        assert_eq!(Geometry::new(1, 8192, true), Err(VerityError::BadBlockSize));
    }

    #[test]
    fn superblock_round_trip_and_rejects() {
        let sb = Superblock {
            hash_type: HashType::Normal,
            uuid: parse_uuid("11111111-2222-3333-4444-555555555555").unwrap(),
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks: 256,
            salt: Salt::from_hex("000102").unwrap(),
        };
        let mut buf = [0xa5u8; 600];
        sb.emit(&mut buf).unwrap();
        assert_eq!(&buf[..8], b"verity\0\0");
        assert_eq!(buf[80], 3, "salt size");
        assert!(buf[91..512].iter().all(|&b| b == 0), "padding is zero");
        assert_eq!(buf[512], 0xa5, "nothing written past 512 bytes");
        assert_eq!(Superblock::parse(&buf).unwrap(), sb);
        assert_eq!(
            Superblock::parse(&buf[..511]),
            Err(VerityError::SuperblockTruncated)
        );
        let mut bad = buf;
        bad[0] = b'V';
        assert_eq!(Superblock::parse(&bad), Err(VerityError::BadSignature));
        let mut bad = buf;
        bad[8] = 2;
        assert_eq!(
            Superblock::parse(&bad),
            Err(VerityError::UnsupportedVersion(2))
        );
        let mut bad = buf;
        bad[12] = 7;
        assert_eq!(
            Superblock::parse(&bad),
            Err(VerityError::UnsupportedHashType(7))
        );
        let mut bad = buf;
        bad[32..38].copy_from_slice(b"sha512");
        assert_eq!(
            Superblock::parse(&bad),
            Err(VerityError::UnsupportedAlgorithm)
        );
        let mut bad = buf;
        bad[64] = 1;
        assert_eq!(Superblock::parse(&bad), Err(VerityError::BadBlockSize));
        let mut bad = buf;
        bad[81] = 2;
        assert_eq!(Superblock::parse(&bad), Err(VerityError::SaltTooLong));
    }

    #[test]
    fn hex_salt_uuid() {
        assert_eq!(Salt::from_hex("-").unwrap().as_bytes(), b"");
        assert_eq!(Salt::from_hex("0aFf").unwrap().as_bytes(), &[0x0a, 0xff]);
        assert_eq!(Salt::from_hex("0"), Err(VerityError::BadHex));
        assert_eq!(Salt::from_hex("zz"), Err(VerityError::BadHex));
        let long = [b'0'; 514];
        assert_eq!(
            Salt::from_hex(core::str::from_utf8(&long).unwrap()),
            Err(VerityError::SaltTooLong)
        );
        assert_eq!(
            parse_uuid("645ac31f-7610-42e1-8434-9d733699eac0").unwrap()[..2],
            [0x64, 0x5a]
        );
        assert_eq!(
            parse_uuid("645ac31f-7610-42e1-8434-9d733699eac"),
            Err(VerityError::BadUuid)
        );
        assert_eq!(
            parse_uuid("645ac31f+7610-42e1-8434-9d733699eac0"),
            Err(VerityError::BadUuid)
        );
        let mut out = [0u8; 4];
        assert_eq!(encode_hex(&[0xab, 0x01], &mut out).unwrap(), "ab01");
        assert_eq!(parse_root_hash("00"), Err(VerityError::BadHex));
    }

    #[test]
    fn tree_builder_counts_and_order() {
        // 300 blocks: 3 leaf blocks (top level first at offset 0 is the 1 top block).
        let g = Geometry::new(300, 4096, false).unwrap();
        let mut b = TreeBuilder::new(g, HashType::Normal, Salt::EMPTY);
        let mut offsets = [0u64; 8];
        let mut n = 0;
        let mut emit = |off: u64, blk: &[u8]| -> Result<(), VerityError> {
            assert_eq!(blk.len(), 4096);
            offsets[n] = off;
            n += 1;
            Ok(())
        };
        for i in 0..300u32 {
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&i.to_le_bytes());
            b.push(&d, &mut emit).unwrap();
        }
        b.finish(&mut emit).unwrap();
        assert_eq!(n, 4);
        assert_eq!(&offsets[..4], &[4096, 8192, 12288, 0]);
        // Too few and too many digests are refused.
        let mut b = TreeBuilder::new(
            Geometry::new(2, 4096, false).unwrap(),
            HashType::Normal,
            Salt::EMPTY,
        );
        let mut sink = |_: u64, _: &[u8]| -> Result<(), VerityError> { Ok(()) };
        b.push(&[0; 32], &mut sink).unwrap();
        assert!(matches!(
            TreeBuilder::new(
                Geometry::new(2, 4096, false).unwrap(),
                HashType::Normal,
                Salt::EMPTY
            )
            .finish(&mut sink),
            Err(VerityError::BlockCountMismatch)
        ));
        b.push(&[0; 32], &mut sink).unwrap();
        assert_eq!(
            b.push(&[0; 32], &mut sink),
            Err(VerityError::BlockCountMismatch)
        );
    }
}
