//! Signed statements: what a driver module, an eBPF program, a memory report or a model
//! manifest is, signed with ML-DSA-65 and checked against the verifier's own trust store.
//!
//! ## Envelope
//!
//! ```text
//! Signed = version    u8      (= 1)
//!        ‖ kind       varint  (0 driver-module, 1 bpf-program, 2 memory-report, 3 model-manifest)
//!        ‖ algorithm  u8      (0 = ML-DSA-65; nothing else exists)
//!        ‖ signer     [32]    (SHA3-256 of the signer's encoded ML-DSA-65 public key)
//!        ‖ signed_at  varint u64 (seconds since the Unix epoch)
//!        ‖ body       varint length ‖ postcard encoding of the statement
//!        ‖ signature  varint length (= 3309) ‖ ML-DSA-65 signature
//! ```
//!
//! The signature is the last field and covers **every byte before it**, exactly as
//! received: version, kind, algorithm, signer id, time and body. It is made with
//! `ML-DSA.Sign(sk, M, ctx)` (FIPS 204 Alg. 2) with the context string
//! `pqcc/v1/<kind>` ([`Kind::context`]), so a signature made for one kind never
//! verifies as another.
//!
//! ## What verification checks ([`verify`])
//!
//! 1. Strict decoding: size at most [`SIGNED_MAX_LEN`] and at most the kind's own
//!    maximum, version 1, known kind, algorithm ML-DSA-65
//!    ([`Error::UnsupportedAlgorithm`] otherwise), no trailing bytes, the one canonical
//!    encoding (re-encoded and compared byte for byte), a signature of exactly
//!    [`sign::SIG_LEN`] bytes.
//! 2. The kind is the one the caller asked for ([`Error::WrongKind`] otherwise).
//! 3. The signer id is looked up in the caller's [`TrustStore`]; an id it does not hold
//!    is [`Error::UnknownSigner`]. A key is never taken from the message: the envelope
//!    carries only the id, and the id is the hash of the key that must verify it, so a
//!    spoofed id either names a key the verifier does not trust or a key that did not
//!    make the signature.
//! 4. The ML-DSA-65 signature over the exact received prefix, context `pqcc/v1/<kind>`.
//! 5. Only then the body is decoded, strictly, and its bounds checked; the typed body
//!    borrows from the input ([`Verified`]).
//!
//! What verification does **not** decide: whether the signer may sign this kind of
//! thing, whether the artifact's bytes match, whether a report is fresh. That is
//! [`crate::policy`]'s job, on a [`Verified`] statement (which only [`verify`] can make).
//!
//! Artifact hashes in statements are plain SHA3-256 of the artifact's bytes (no label),
//! so anyone can recompute them; sizes are the artifact's exact length in bytes.

use core::fmt;

use heapless::Vec;
use postcard::ser_flavors::Flavor;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::{
    Error, PROTOCOL_VERSION,
    sign::{self, SignerId, SigningKey, VerifyingKey},
    wire::{Bytes, Platform, decode_canonical, put_varint},
};

// ---------------------------------------------------------------------------------
// Bounds

/// Longest driver module, eBPF program or model name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 128;
/// Longest driver module version string.
pub const MAX_VERSION_LEN: usize = 64;
/// Longest eBPF attach point (e.g. a kernel function or tracepoint name).
pub const MAX_ATTACH_POINT_LEN: usize = 256;
/// Longest eBPF program author string.
pub const MAX_AUTHOR_LEN: usize = 128;
/// Longest workload id in a memory report.
pub const MAX_WORKLOAD_ID_LEN: usize = 128;
/// Longest region id in a memory report.
pub const MAX_REGION_ID_LEN: usize = 64;
/// Most regions one memory report may claim.
pub const MAX_REGIONS: usize = 32;
/// Longest model revision string.
pub const MAX_REVISION_LEN: usize = 64;
/// Longest dm-verity root hash (the digest length of the largest hash allowed).
pub const MAX_ROOT_HASH_LEN: usize = 64;
/// Longest dm-verity salt (`veritysetup` allows 256 bytes).
pub const MAX_SALT_LEN: usize = 256;
/// Smallest dm-verity block size.
pub const MIN_VERITY_BLOCK_SIZE: u32 = 512;
/// Largest dm-verity block size.
pub const MAX_VERITY_BLOCK_SIZE: u32 = 65536;

const fn varint_max(mut v: usize) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}
const fn str_max(n: usize) -> usize {
    varint_max(n) + n
}
const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}
const U64_MAX_LEN: usize = 10;

/// Maximum encoded size of a [`DriverModule`] body.
pub const DRIVER_MODULE_MAX_LEN: usize =
    str_max(MAX_NAME_LEN) + str_max(MAX_VERSION_LEN) + 32 + U64_MAX_LEN;
/// Maximum encoded size of a [`BpfProgram`] body.
pub const BPF_PROGRAM_MAX_LEN: usize = str_max(MAX_NAME_LEN)
    + 1
    + str_max(MAX_ATTACH_POINT_LEN)
    + str_max(MAX_AUTHOR_LEN)
    + 32
    + U64_MAX_LEN;
/// Maximum encoded size of one [`RegionClaim`]. `address + size` fits in a u64, so at
/// most one of them reaches 2^63 and needs a 10-byte varint; the other takes at most 9.
pub const REGION_CLAIM_MAX_LEN: usize =
    str_max(MAX_REGION_ID_LEN) + U64_MAX_LEN + (U64_MAX_LEN - 1) + 1 + 32;
/// Maximum encoded size of a [`MemoryReport`] body.
pub const MEMORY_REPORT_MAX_LEN: usize = str_max(MAX_WORKLOAD_ID_LEN)
    + 1
    + U64_MAX_LEN
    + U64_MAX_LEN
    + 32
    + varint_max(MAX_REGIONS)
    + MAX_REGIONS * REGION_CLAIM_MAX_LEN;
/// Maximum encoded size of a [`ModelManifest`] body.
pub const MODEL_MANIFEST_MAX_LEN: usize = str_max(MAX_NAME_LEN)
    + str_max(MAX_REVISION_LEN)
    + str_max(MAX_ROOT_HASH_LEN)
    + str_max(MAX_SALT_LEN)
    + U64_MAX_LEN
    + 1
    + varint_max(MAX_VERITY_BLOCK_SIZE as usize)
    + varint_max(MAX_VERITY_BLOCK_SIZE as usize);
/// Largest body of any kind.
pub const MAX_BODY_LEN: usize = max(
    max(DRIVER_MODULE_MAX_LEN, BPF_PROGRAM_MAX_LEN),
    max(MEMORY_REPORT_MAX_LEN, MODEL_MANIFEST_MAX_LEN),
);
/// Maximum encoded size of everything before the body: version, kind, algorithm,
/// signer id, signed_at.
pub const HEADER_MAX_LEN: usize = 1 + 1 + 1 + 32 + U64_MAX_LEN;
const SIGNATURE_FIELD_LEN: usize = varint_max(sign::SIG_LEN) + sign::SIG_LEN;

/// Maximum encoded size of an envelope whose body is at most `body_max` bytes.
pub const fn envelope_max_len(body_max: usize) -> usize {
    HEADER_MAX_LEN + varint_max(body_max) + body_max + SIGNATURE_FIELD_LEN
}

/// Maximum encoded size of a signed statement of any kind.
pub const SIGNED_MAX_LEN: usize = envelope_max_len(MAX_BODY_LEN);

// ---------------------------------------------------------------------------------
// Kind, algorithm

/// What a signed statement is about. Variant order is frozen (it is the kind on the wire);
/// new kinds are only ever appended.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A GPU (or other) kernel driver module: [`DriverModule`].
    DriverModule,
    /// An eBPF program: [`BpfProgram`].
    BpfProgram,
    /// A report of memory-region hashes: [`MemoryReport`].
    MemoryReport,
    /// A model archive's dm-verity identity: [`ModelManifest`].
    ModelManifest,
}

impl Kind {
    /// Every kind, in wire order.
    pub const ALL: [Kind; 4] = [
        Kind::DriverModule,
        Kind::BpfProgram,
        Kind::MemoryReport,
        Kind::ModelManifest,
    ];

    /// The kind's name, as in the context string and in the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::DriverModule => "driver-module",
            Kind::BpfProgram => "bpf-program",
            Kind::MemoryReport => "memory-report",
            Kind::ModelManifest => "model-manifest",
        }
    }

    /// The ML-DSA context string of this kind's signatures: `pqcc/v1/<name>`.
    pub const fn context(self) -> &'static [u8] {
        match self {
            Kind::DriverModule => b"pqcc/v1/driver-module",
            Kind::BpfProgram => b"pqcc/v1/bpf-program",
            Kind::MemoryReport => b"pqcc/v1/memory-report",
            Kind::ModelManifest => b"pqcc/v1/model-manifest",
        }
    }

    /// Maximum encoded size of this kind's body.
    pub const fn max_body_len(self) -> usize {
        match self {
            Kind::DriverModule => DRIVER_MODULE_MAX_LEN,
            Kind::BpfProgram => BPF_PROGRAM_MAX_LEN,
            Kind::MemoryReport => MEMORY_REPORT_MAX_LEN,
            Kind::ModelManifest => MODEL_MANIFEST_MAX_LEN,
        }
    }

    /// Maximum encoded size of a whole envelope of this kind.
    pub const fn max_len(self) -> usize {
        envelope_max_len(self.max_body_len())
    }

    /// Parses a kind name ([`Kind::name`]).
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The signature algorithm of an envelope. There is exactly one; any other id on the
/// wire is [`Error::UnsupportedAlgorithm`], never a fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ML-DSA-65 (FIPS 204), id 0.
    MlDsa65,
}

impl Algorithm {
    /// The id on the wire.
    pub const fn id(self) -> u8 {
        match self {
            Algorithm::MlDsa65 => 0,
        }
    }

    /// The algorithm with this id.
    pub fn from_id(id: u8) -> Result<Self, Error> {
        match id {
            0 => Ok(Algorithm::MlDsa65),
            other => Err(Error::UnsupportedAlgorithm(other)),
        }
    }

    /// The algorithm's name.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::MlDsa65 => "ML-DSA-65",
        }
    }
}

// ---------------------------------------------------------------------------------
// Bodies

mod sealed {
    pub trait Sealed {}
}

/// A statement body: one of [`DriverModule`], [`BpfProgram`], [`MemoryReport`],
/// [`ModelManifest`] (sealed). Its encoding is postcard; decoding is strict.
pub trait Statement<'a>: Serialize + Deserialize<'a> + sealed::Sealed + Sized {
    /// The kind of envelope this body travels in.
    const KIND: Kind;

    /// Checks every field bound (lengths, enumerations, consistency).
    fn validate(&self) -> Result<(), Error>;

    /// Encodes the body into `out` (after [`Statement::validate`]); returns the length.
    fn encode(&self, out: &mut [u8]) -> Result<usize, Error> {
        self.validate()?;
        let n = postcard::to_slice(self, out)
            .map_err(|_| Error::BufferTooSmall)?
            .len();
        if n > Self::KIND.max_body_len() {
            return Err(Error::Oversize);
        }
        Ok(n)
    }

    /// Decodes a body strictly: size bound, no trailing bytes, canonical encoding,
    /// field bounds. Does **not** authenticate anything; see [`verify`].
    fn decode(bytes: &'a [u8]) -> Result<Self, Error> {
        if bytes.len() > Self::KIND.max_body_len() {
            return Err(Error::Oversize);
        }
        let v: Self = decode_canonical(bytes)?;
        v.validate()?;
        Ok(v)
    }
}

fn check_str(s: &str, min: usize, max: usize) -> Result<(), Error> {
    if s.len() > max {
        Err(Error::Oversize)
    } else if s.len() < min {
        Err(Error::Malformed)
    } else {
        Ok(())
    }
}

/// A kernel driver module (e.g. a GPU driver `.ko`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverModule<'a> {
    /// Module name (1..=[`MAX_NAME_LEN`] bytes), e.g. `nvidia`.
    pub name: &'a str,
    /// Module version (≤ [`MAX_VERSION_LEN`] bytes).
    pub version: &'a str,
    /// SHA3-256 of the module file's bytes.
    pub sha3_256: [u8; 32],
    /// Length of the module file in bytes.
    pub size: u64,
}

impl sealed::Sealed for DriverModule<'_> {}
impl<'a> Statement<'a> for DriverModule<'a> {
    const KIND: Kind = Kind::DriverModule;
    fn validate(&self) -> Result<(), Error> {
        check_str(self.name, 1, MAX_NAME_LEN)?;
        check_str(self.version, 0, MAX_VERSION_LEN)
    }
}

/// eBPF program types (the 13 of pqc-ebpf-attestation). Variant order is frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BpfProgType {
    /// `kprobe`.
    Kprobe,
    /// `kretprobe`.
    Kretprobe,
    /// `tracepoint`.
    Tracepoint,
    /// `xdp`.
    Xdp,
    /// `socket_filter`.
    SocketFilter,
    /// `cgroup_skb`.
    CgroupSkb,
    /// `lsm`.
    Lsm,
    /// `tracing` (fentry/fexit and friends).
    Tracing,
    /// `perf_event`.
    PerfEvent,
    /// `sched_cls` (tc classifier).
    SchedCls,
    /// `syscall`.
    Syscall,
    /// `user` (uprobe-style user-space programs).
    User,
    /// `unknown`: a type the signer could not name. Policies decide; it matches only
    /// rules that list it.
    Unknown,
}

impl BpfProgType {
    /// Every program type, in wire order (for rules that mean "any type").
    pub const ALL: [BpfProgType; 13] = [
        BpfProgType::Kprobe,
        BpfProgType::Kretprobe,
        BpfProgType::Tracepoint,
        BpfProgType::Xdp,
        BpfProgType::SocketFilter,
        BpfProgType::CgroupSkb,
        BpfProgType::Lsm,
        BpfProgType::Tracing,
        BpfProgType::PerfEvent,
        BpfProgType::SchedCls,
        BpfProgType::Syscall,
        BpfProgType::User,
        BpfProgType::Unknown,
    ];

    /// The type's name as in pqc-ebpf-attestation (`kprobe`, `socket_filter`, …).
    pub const fn name(self) -> &'static str {
        match self {
            BpfProgType::Kprobe => "kprobe",
            BpfProgType::Kretprobe => "kretprobe",
            BpfProgType::Tracepoint => "tracepoint",
            BpfProgType::Xdp => "xdp",
            BpfProgType::SocketFilter => "socket_filter",
            BpfProgType::CgroupSkb => "cgroup_skb",
            BpfProgType::Lsm => "lsm",
            BpfProgType::Tracing => "tracing",
            BpfProgType::PerfEvent => "perf_event",
            BpfProgType::SchedCls => "sched_cls",
            BpfProgType::Syscall => "syscall",
            BpfProgType::User => "user",
            BpfProgType::Unknown => "unknown",
        }
    }

    /// Parses a type name ([`BpfProgType::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl fmt::Display for BpfProgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An eBPF program (its bytecode object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfProgram<'a> {
    /// Program name (1..=[`MAX_NAME_LEN`] bytes).
    pub name: &'a str,
    /// The program type it must be loaded as.
    pub prog_type: BpfProgType,
    /// Where it attaches (≤ [`MAX_ATTACH_POINT_LEN`] bytes; may be empty).
    pub attach_point: &'a str,
    /// Who wrote it (≤ [`MAX_AUTHOR_LEN`] bytes). Informational: who *signed* it is the
    /// envelope's signer id.
    pub author: &'a str,
    /// SHA3-256 of the bytecode object's bytes.
    pub sha3_256: [u8; 32],
    /// Length of the bytecode object in bytes.
    pub size: u64,
}

impl sealed::Sealed for BpfProgram<'_> {}
impl<'a> Statement<'a> for BpfProgram<'a> {
    const KIND: Kind = Kind::BpfProgram;
    fn validate(&self) -> Result<(), Error> {
        check_str(self.name, 1, MAX_NAME_LEN)?;
        check_str(self.attach_point, 0, MAX_ATTACH_POINT_LEN)?;
        check_str(self.author, 0, MAX_AUTHOR_LEN)
    }
}

/// Memory protection of a region: a set of [`Protection::READ`], [`Protection::WRITE`],
/// [`Protection::EXEC`]. One byte on the wire; other bits are refused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Protection(u8);

impl Protection {
    /// Readable.
    pub const READ: Protection = Protection(1);
    /// Writable.
    pub const WRITE: Protection = Protection(2);
    /// Executable.
    pub const EXEC: Protection = Protection(4);
    /// No access.
    pub const NONE: Protection = Protection(0);
    const ALL_BITS: u8 = 7;

    /// The protection with these bits; `None` if an unknown bit is set.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        if bits & !Self::ALL_BITS == 0 {
            Some(Protection(bits))
        } else {
            None
        }
    }

    /// The bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Both sets of permissions.
    pub const fn union(self, other: Protection) -> Protection {
        Protection(self.0 | other.0)
    }

    /// Whether every permission in `other` is in `self`.
    pub const fn contains(self, other: Protection) -> bool {
        self.0 & other.0 == other.0
    }

    fn is_valid(self) -> bool {
        self.0 & !Self::ALL_BITS == 0
    }
}

impl fmt::Debug for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = |p: Protection, c: char| if self.contains(p) { c } else { '-' };
        write!(
            f,
            "{}{}{}",
            flag(Protection::READ, 'r'),
            flag(Protection::WRITE, 'w'),
            flag(Protection::EXEC, 'x')
        )?;
        if !self.is_valid() {
            write!(f, "+{:#04x}", self.0 & !Self::ALL_BITS)?;
        }
        Ok(())
    }
}

/// One measured memory region in a [`MemoryReport`]: what the attester saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionClaim<'a> {
    /// Region id (1..=[`MAX_REGION_ID_LEN`] bytes), unique within the report; the
    /// verifier pins expected hashes by this id.
    pub id: &'a str,
    /// Start address (or file offset) of the region.
    pub address: u64,
    /// Length of the region in bytes; `address + size` must not overflow.
    pub size: u64,
    /// The region's memory protection.
    pub protection: Protection,
    /// SHA3-256 of the region's bytes as read.
    pub sha3_256: [u8; 32],
}

/// A signed snapshot of a workload's memory regions. There is no "expected hash" field:
/// what a region should hash to is pinned by the verifier ([`crate::policy::MemoryPolicy`]),
/// never taken from the attester.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryReport<'a> {
    /// The workload the regions belong to (1..=[`MAX_WORKLOAD_ID_LEN`] bytes).
    pub workload: &'a str,
    /// The TEE platform the attester runs on.
    pub platform: Platform,
    /// When the snapshot was taken (seconds since the Unix epoch).
    pub issued_at: u64,
    /// When the report stops being valid; required and after `issued_at`.
    pub expires_at: u64,
    /// The verifier's challenge this report answers.
    pub nonce: [u8; 32],
    /// The measured regions (≤ [`MAX_REGIONS`], ids unique).
    #[serde(borrow)]
    pub regions: Vec<RegionClaim<'a>, MAX_REGIONS>,
}

impl sealed::Sealed for MemoryReport<'_> {}
impl<'a> Statement<'a> for MemoryReport<'a> {
    const KIND: Kind = Kind::MemoryReport;
    fn validate(&self) -> Result<(), Error> {
        check_str(self.workload, 1, MAX_WORKLOAD_ID_LEN)?;
        if self.expires_at <= self.issued_at {
            return Err(Error::Malformed);
        }
        for (i, r) in self.regions.iter().enumerate() {
            check_str(r.id, 1, MAX_REGION_ID_LEN)?;
            if !r.protection.is_valid() || r.address.checked_add(r.size).is_none() {
                return Err(Error::Malformed);
            }
            if self.regions[..i].iter().any(|p| p.id == r.id) {
                return Err(Error::Malformed);
            }
        }
        Ok(())
    }
}

/// The hash function of a dm-verity tree. Variant order is frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VerityHash {
    /// SHA-256 (`veritysetup --hash sha256`, the default); 32-byte root hash.
    Sha256,
}

impl VerityHash {
    /// The digest length, which is the root hash's length.
    pub const fn digest_len(self) -> usize {
        match self {
            VerityHash::Sha256 => 32,
        }
    }

    /// The name `veritysetup` uses.
    pub const fn name(self) -> &'static str {
        match self {
            VerityHash::Sha256 => "sha256",
        }
    }
}

/// A model archive's identity, `name@revision:roothash`, and the dm-verity parameters
/// needed to open it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelManifest<'a> {
    /// Model name (1..=[`MAX_NAME_LEN`] bytes).
    pub name: &'a str,
    /// Model revision (1..=[`MAX_REVISION_LEN`] bytes).
    pub revision: &'a str,
    /// dm-verity root hash ([`VerityHash::digest_len`] bytes).
    #[serde(borrow)]
    pub root_hash: Bytes<'a>,
    /// dm-verity salt (≤ [`MAX_SALT_LEN`] bytes).
    #[serde(borrow)]
    pub salt: Bytes<'a>,
    /// Length of the data device in bytes (a multiple of `data_block_size`).
    pub data_size: u64,
    /// The tree's hash function.
    pub hash_algorithm: VerityHash,
    /// Data block size: a power of two in
    /// [[`MIN_VERITY_BLOCK_SIZE`], [`MAX_VERITY_BLOCK_SIZE`]].
    pub data_block_size: u32,
    /// Hash block size: same rule.
    pub hash_block_size: u32,
}

impl sealed::Sealed for ModelManifest<'_> {}
impl<'a> Statement<'a> for ModelManifest<'a> {
    const KIND: Kind = Kind::ModelManifest;
    fn validate(&self) -> Result<(), Error> {
        check_str(self.name, 1, MAX_NAME_LEN)?;
        check_str(self.revision, 1, MAX_REVISION_LEN)?;
        if self.root_hash.0.len() > MAX_ROOT_HASH_LEN || self.salt.0.len() > MAX_SALT_LEN {
            return Err(Error::Oversize);
        }
        if self.root_hash.0.len() != self.hash_algorithm.digest_len() {
            return Err(Error::Malformed);
        }
        let block_ok = |b: u32| {
            b.is_power_of_two() && (MIN_VERITY_BLOCK_SIZE..=MAX_VERITY_BLOCK_SIZE).contains(&b)
        };
        if !block_ok(self.data_block_size) || !block_ok(self.hash_block_size) {
            return Err(Error::Malformed);
        }
        if !self
            .data_size
            .is_multiple_of(u64::from(self.data_block_size))
        {
            return Err(Error::Malformed);
        }
        Ok(())
    }
}

impl fmt::Display for ModelManifest<'_> {
    /// The model's identity, `name@revision:<root hash in hex>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:", self.name, self.revision)?;
        for b in self.root_hash.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Any statement body, for callers that accept every kind (`pqcc verify`, `pqcc info`).
// No allocator to box the memory report's region list into; the size difference is by design.
#[allow(clippy::large_enum_variant)]
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyStatement<'a> {
    /// See [`DriverModule`].
    DriverModule(DriverModule<'a>),
    /// See [`BpfProgram`].
    BpfProgram(BpfProgram<'a>),
    /// See [`MemoryReport`].
    MemoryReport(MemoryReport<'a>),
    /// See [`ModelManifest`].
    ModelManifest(ModelManifest<'a>),
}

impl<'a> AnyStatement<'a> {
    /// Decodes `body` strictly as a body of `kind`. Authenticates nothing.
    pub fn decode(kind: Kind, body: &'a [u8]) -> Result<Self, Error> {
        Ok(match kind {
            Kind::DriverModule => AnyStatement::DriverModule(DriverModule::decode(body)?),
            Kind::BpfProgram => AnyStatement::BpfProgram(BpfProgram::decode(body)?),
            Kind::MemoryReport => AnyStatement::MemoryReport(MemoryReport::decode(body)?),
            Kind::ModelManifest => AnyStatement::ModelManifest(ModelManifest::decode(body)?),
        })
    }

    /// The statement's kind.
    pub fn kind(&self) -> Kind {
        match self {
            AnyStatement::DriverModule(_) => Kind::DriverModule,
            AnyStatement::BpfProgram(_) => Kind::BpfProgram,
            AnyStatement::MemoryReport(_) => Kind::MemoryReport,
            AnyStatement::ModelManifest(_) => Kind::ModelManifest,
        }
    }
}

// ---------------------------------------------------------------------------------
// Envelope

/// A decoded, **unverified** envelope: what the bytes say, for display and for
/// [`verify`]. Nothing in it is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The statement kind.
    pub kind: Kind,
    /// The signature algorithm.
    pub algorithm: Algorithm,
    /// Who claims to have signed (SHA3-256 of their public key).
    pub signer: SignerId,
    /// When it claims to have been signed (seconds since the Unix epoch).
    pub signed_at: u64,
    /// The encoded body.
    pub body: &'a [u8],
    /// The signature ([`sign::SIG_LEN`] bytes once decoded).
    pub signature: &'a [u8],
}

#[derive(Serialize, Deserialize)]
struct WireEnvelope<'a> {
    version: u8,
    kind: Kind,
    algorithm: u8,
    signer: [u8; 32],
    signed_at: u64,
    #[serde(borrow)]
    body: Bytes<'a>,
    #[serde(borrow)]
    signature: Bytes<'a>,
}

#[derive(Serialize)]
struct WireHead {
    version: u8,
    kind: Kind,
    algorithm: u8,
    signer: [u8; 32],
    signed_at: u64,
}

impl<'a> Envelope<'a> {
    /// Decodes an envelope strictly (see the module docs, step 1). Verifies nothing.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, Error> {
        if bytes.len() > SIGNED_MAX_LEN {
            return Err(Error::Oversize);
        }
        match bytes.first() {
            None => return Err(Error::Truncated),
            Some(&PROTOCOL_VERSION) => {}
            Some(&v) => return Err(Error::UnknownVersion(v)),
        }
        let w: WireEnvelope<'a> = decode_canonical(bytes)?;
        if bytes.len() > w.kind.max_len() || w.body.0.len() > w.kind.max_body_len() {
            return Err(Error::Oversize);
        }
        let algorithm = Algorithm::from_id(w.algorithm)?;
        if w.signature.0.len() != sign::SIG_LEN {
            return Err(Error::InvalidKey);
        }
        Ok(Self {
            kind: w.kind,
            algorithm,
            signer: SignerId(w.signer),
            signed_at: w.signed_at,
            body: w.body.0,
            signature: w.signature.0,
        })
    }

    /// Encodes the envelope as it stands (no signing, no body check); returns the
    /// length. For tools and tests; [`sign()`] is how statements are made.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, Error> {
        let w = WireEnvelope {
            version: PROTOCOL_VERSION,
            kind: self.kind,
            algorithm: self.algorithm.id(),
            signer: self.signer.0,
            signed_at: self.signed_at,
            body: Bytes(self.body),
            signature: Bytes(self.signature),
        };
        let n = postcard::to_slice(&w, out)
            .map_err(|_| Error::BufferTooSmall)?
            .len();
        if n > self.kind.max_len() {
            return Err(Error::Oversize);
        }
        Ok(n)
    }

    /// Decodes the body according to [`Envelope::kind`]. **Unauthenticated**: for
    /// display only; use [`verify`] or [`verify_any`] to act on a statement.
    pub fn body_unverified(&self) -> Result<AnyStatement<'a>, Error> {
        AnyStatement::decode(self.kind, self.body)
    }

    /// Length of the prefix of `bytes` (the encoding this envelope was decoded from)
    /// that the signature covers: everything before the signature field.
    fn signed_len(&self, bytes: &[u8]) -> Result<usize, Error> {
        let sig_field = crate::wire::varint_len(self.signature.len() as u64) + self.signature.len();
        bytes.len().checked_sub(sig_field).ok_or(Error::Malformed)
    }
}

// ---------------------------------------------------------------------------------
// Trust store, signing, verification

/// Where a verifier finds the public key for a signer id. The only source of keys for
/// [`verify`]: a key is never taken from a message.
pub trait TrustStore {
    /// The key whose signer id is `id`, if this store trusts one.
    fn find(&self, id: &SignerId) -> Option<&VerifyingKey>;
}

impl TrustStore for [VerifyingKey] {
    fn find(&self, id: &SignerId) -> Option<&VerifyingKey> {
        self.iter().find(|k| k.signer_id().ct_eq(id))
    }
}

impl<const N: usize> TrustStore for [VerifyingKey; N] {
    fn find(&self, id: &SignerId) -> Option<&VerifyingKey> {
        self.as_slice().find(id)
    }
}

impl<T: TrustStore + ?Sized> TrustStore for &T {
    fn find(&self, id: &SignerId) -> Option<&VerifyingKey> {
        (**self).find(id)
    }
}

/// A statement whose envelope decoded strictly, whose signer is in the verifier's trust
/// store and whose ML-DSA-65 signature verified. Only [`verify`] and [`verify_any`]
/// make one; policies take it so an unverified statement cannot reach them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<T> {
    signer: SignerId,
    signed_at: u64,
    body: T,
}

impl<T> Verified<T> {
    /// The signer (the key that verified, found in the trust store).
    pub fn signer(&self) -> SignerId {
        self.signer
    }

    /// When the signer says it signed (signed, so the signer vouches for it).
    pub fn signed_at(&self) -> u64 {
        self.signed_at
    }

    /// The statement.
    pub fn body(&self) -> &T {
        &self.body
    }

    /// The statement, dropping the envelope information.
    pub fn into_body(self) -> T {
        self.body
    }
}

/// Signs `body` with `key` into `out` with fresh randomness (hedged ML-DSA-65); returns
/// the envelope's length (at most `T::KIND.max_len()`).
pub fn sign<'a, T: Statement<'a>, R: CryptoRng + ?Sized>(
    body: &T,
    key: &SigningKey,
    signed_at: u64,
    rng: &mut R,
    out: &mut [u8],
) -> Result<usize, Error> {
    let mut rnd = [0u8; 32];
    rng.fill_bytes(&mut rnd);
    let r = sign_with_rnd(body, key, signed_at, &rnd, out);
    zeroize::Zeroize::zeroize(&mut rnd);
    r
}

/// Signs with a caller-chosen ML-DSA `rnd` (all zero = deterministic). Known-answer
/// tests and reproducible fixtures only; use [`sign()`].
pub fn sign_with_rnd<'a, T: Statement<'a>>(
    body: &T,
    key: &SigningKey,
    signed_at: u64,
    rnd: &[u8; 32],
    out: &mut [u8],
) -> Result<usize, Error> {
    body.validate()?;
    let head = WireHead {
        version: PROTOCOL_VERSION,
        kind: T::KIND,
        algorithm: Algorithm::MlDsa65.id(),
        signer: key.signer_id().0,
        signed_at,
    };
    let mut pos = postcard::to_slice(&head, out)
        .map_err(|_| Error::BufferTooSmall)?
        .len();
    let body_len = encoded_len(body)?;
    if body_len > T::KIND.max_body_len() {
        return Err(Error::Oversize);
    }
    pos = put_varint(out, pos, body_len as u64)?;
    let n = postcard::to_slice(body, out.get_mut(pos..).ok_or(Error::BufferTooSmall)?)
        .map_err(|_| Error::BufferTooSmall)?
        .len();
    if n != body_len {
        return Err(Error::InvalidState);
    }
    let signed_len = pos + n;
    let sig_at = put_varint(out, signed_len, sign::SIG_LEN as u64)?;
    let end = sig_at + sign::SIG_LEN;
    if end > out.len() {
        return Err(Error::BufferTooSmall);
    }
    let sig = key.sign_with_rnd(T::KIND.context(), &out[..signed_len], rnd)?;
    out[sig_at..end].copy_from_slice(&sig);
    Ok(end)
}

/// Verifies a signed statement of kind `T::KIND` against `trust` and returns its body
/// (borrowing from `bytes`). See the module docs for the checks and their order.
pub fn verify<'a, T: Statement<'a>, S: TrustStore + ?Sized>(
    bytes: &'a [u8],
    trust: &S,
) -> Result<Verified<T>, Error> {
    let env = verify_envelope(bytes, trust, Some(T::KIND))?;
    Ok(Verified {
        signer: env.signer,
        signed_at: env.signed_at,
        body: T::decode(env.body)?,
    })
}

/// Verifies a signed statement of any kind against `trust`.
pub fn verify_any<'a, S: TrustStore + ?Sized>(
    bytes: &'a [u8],
    trust: &S,
) -> Result<Verified<AnyStatement<'a>>, Error> {
    let env = verify_envelope(bytes, trust, None)?;
    Ok(Verified {
        signer: env.signer,
        signed_at: env.signed_at,
        body: AnyStatement::decode(env.kind, env.body)?,
    })
}

fn verify_envelope<'a, S: TrustStore + ?Sized>(
    bytes: &'a [u8],
    trust: &S,
    expected: Option<Kind>,
) -> Result<Envelope<'a>, Error> {
    let env = Envelope::decode(bytes)?;
    if let Some(expected) = expected
        && expected != env.kind
    {
        return Err(Error::WrongKind {
            expected,
            got: env.kind,
        });
    }
    let key = trust.find(&env.signer).ok_or(Error::UnknownSigner)?;
    // A store that hands back a key for another id does not get to vouch for this one.
    if !key.signer_id().ct_eq(&env.signer) {
        return Err(Error::UnknownSigner);
    }
    let signed_len = env.signed_len(bytes)?;
    key.verify(env.kind.context(), &bytes[..signed_len], env.signature)?;
    Ok(env)
}

// ---------------------------------------------------------------------------------
// Strict postcard helpers (same rules as `wire`)

/// The encoded length of `v` (counted, not written).
fn encoded_len<T: Serialize>(v: &T) -> Result<usize, Error> {
    struct Count(usize);
    impl Flavor for Count {
        type Output = usize;
        fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
            self.0 = self
                .0
                .checked_add(data.len())
                .ok_or(postcard::Error::SerializeBufferFull)?;
            Ok(())
        }
        fn try_push(&mut self, _: u8) -> postcard::Result<()> {
            self.try_extend(&[0])
        }
        fn finalize(self) -> postcard::Result<usize> {
            Ok(self.0)
        }
    }
    postcard::serialize_with_flavor(v, Count(0)).map_err(|_| Error::Oversize)
}
