//! Continuous attestation of memory regions, sans-IO.
//!
//! An [`Attester`] is configured once with a signing key, a workload id, a platform and
//! the regions to watch ([`RegionSpec`]: id, address, size, protection). Each time a
//! verifier sends a challenge — and at least every [`Schedule::interval`] seconds, which
//! [`Attester::poll_at`] tells the caller — [`Attester::attest`] reads every region
//! through a [`RegionSource`], hashes exactly `size` bytes of each with SHA3-256, and
//! writes a signed [`MemoryReport`] envelope (`issued_at = now`,
//! `expires_at = now + validity`, `nonce` = the challenge) into the caller's buffer.
//!
//! The core does the hashing; the source only supplies bytes. A std backend reads a file
//! (address = offset in the file) or a `/proc/<pid>/mem` range (address = virtual
//! address) with `pread`; a bare-metal backend copies from memory. Time, the challenge
//! and randomness are arguments; nothing here blocks or sleeps.
//!
//! The attester claims what it *saw*. It does not know or send expected hashes: the
//! verifier pins those ([`crate::policy::MemoryPolicy`]). Between reports it remembers
//! each region's last hash so the caller learns which regions changed
//! ([`Attestation::changed`]), e.g. to report early.

use core::fmt;

use heapless::Vec;
use rand_core::CryptoRng;

use crate::{
    Error,
    hash::Sha3_256Stream,
    sign::SigningKey,
    statement::{
        self, MAX_REGION_ID_LEN, MAX_REGIONS, MAX_WORKLOAD_ID_LEN, MemoryReport, Protection,
        RegionClaim, Statement,
    },
    wire::Platform,
};

/// Bytes read from a source per call while hashing a region.
pub const READ_CHUNK_LEN: usize = 4096;

// `Attestation::changed` has one bit per region.
const _: () = assert!(MAX_REGIONS <= 32);

/// A region to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionSpec<'a> {
    /// Region id (1..=[`MAX_REGION_ID_LEN`] bytes, unique), the key verifiers pin by.
    pub id: &'a str,
    /// Start address or file offset.
    pub address: u64,
    /// Exactly how many bytes the region has.
    pub size: u64,
    /// Its memory protection, reported as is.
    pub protection: Protection,
}

/// Where region bytes come from.
pub trait RegionSource {
    /// What a failed read reports (e.g. `std::io::Error`).
    type Error;

    /// Reads bytes of `region` (the `index`-th configured region) starting `offset`
    /// bytes into it, into `buf`; returns how many were read (at most `buf.len()`).
    /// `Ok(0)` means the region ended. The attester never asks past `region.size`.
    fn read(
        &mut self,
        index: usize,
        region: &RegionSpec<'_>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, Self::Error>;
}

/// Why an attestation could not be produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttestError<E> {
    /// The source failed to read a region.
    Source {
        /// The region's index.
        region: usize,
        /// The source's error.
        error: E,
    },
    /// The source ended a region early, or returned more bytes than asked for.
    RegionLength {
        /// The region's index.
        region: usize,
        /// Bytes hashed before it happened.
        read: u64,
        /// The region's configured size.
        expected: u64,
    },
    /// pqcc-core refused (output buffer, bounds, time overflow).
    Core(Error),
}

impl<E> From<Error> for AttestError<E> {
    fn from(e: Error) -> Self {
        AttestError::Core(e)
    }
}

impl<E: fmt::Display> fmt::Display for AttestError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttestError::Source { region, error } => {
                write!(f, "reading region {region} failed: {error}")
            }
            AttestError::RegionLength {
                region,
                read,
                expected,
            } => write!(
                f,
                "region {region} gave {read} bytes where {expected} were expected"
            ),
            AttestError::Core(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for AttestError<E> {}

/// How often reports are due and how long each stays valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Seconds between reports (> 0).
    pub interval: u64,
    /// Seconds each report is valid (> 0; `expires_at = issued_at + validity`).
    pub validity: u64,
}

/// One report written by [`Attester::attest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attestation {
    /// Length of the signed envelope written at the start of the output buffer.
    pub len: usize,
    /// Bit `i` set: region `i`'s hash differs from the previous report's. Zero on the
    /// first report.
    pub changed: u32,
    /// The report's `expires_at`.
    pub expires_at: u64,
}

/// The attester's state (see the module docs).
pub struct Attester<'k, 'a> {
    key: &'k SigningKey,
    workload: &'a str,
    platform: Platform,
    regions: &'a [RegionSpec<'a>],
    schedule: Schedule,
    next_due: u64,
    last: Option<Vec<[u8; 32], MAX_REGIONS>>,
}

impl fmt::Debug for Attester<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attester")
            .field("signer", &self.key.signer_id())
            .field("workload", &self.workload)
            .field("platform", &self.platform)
            .field("regions", &self.regions.len())
            .field("schedule", &self.schedule)
            .field("next_due", &self.next_due)
            .finish()
    }
}

impl<'k, 'a> Attester<'k, 'a> {
    /// Configures an attester; the first report is due at `now`. Out-of-bounds settings
    /// (workload id, region count, ids empty, too long or repeated, protection bits,
    /// `address + size` overflowing, a zero interval or validity) are
    /// [`Error::InvalidArgument`].
    pub fn new(
        key: &'k SigningKey,
        workload: &'a str,
        platform: Platform,
        regions: &'a [RegionSpec<'a>],
        schedule: Schedule,
        now: u64,
    ) -> Result<Self, Error> {
        let bad = workload.is_empty()
            || workload.len() > MAX_WORKLOAD_ID_LEN
            || regions.len() > MAX_REGIONS
            || schedule.interval == 0
            || schedule.validity == 0
            || regions.iter().enumerate().any(|(i, r)| {
                r.id.is_empty()
                    || r.id.len() > MAX_REGION_ID_LEN
                    || Protection::from_bits(r.protection.bits()).is_none()
                    || r.address.checked_add(r.size).is_none()
                    || regions[..i].iter().any(|p| p.id == r.id)
            });
        if bad {
            return Err(Error::InvalidArgument);
        }
        Ok(Self {
            key,
            workload,
            platform,
            regions,
            schedule,
            next_due: now,
            last: None,
        })
    }

    /// When the next report is due (seconds since the Unix epoch).
    pub fn poll_at(&self) -> u64 {
        self.next_due
    }

    /// Whether a report is due at `now`.
    pub fn is_due(&self, now: u64) -> bool {
        now >= self.next_due
    }

    /// Measures every region through `source` and writes a signed [`MemoryReport`]
    /// answering `nonce` into `out` (at most
    /// [`Kind::MemoryReport.max_len()`](statement::Kind::max_len) bytes). The next report
    /// is then due at `now + interval`. On error nothing is remembered.
    pub fn attest<S: RegionSource + ?Sized, R: CryptoRng + ?Sized>(
        &mut self,
        source: &mut S,
        now: u64,
        nonce: &[u8; 32],
        rng: &mut R,
        out: &mut [u8],
    ) -> Result<Attestation, AttestError<S::Error>> {
        let expires_at = now
            .checked_add(self.schedule.validity)
            .ok_or(Error::InvalidArgument)?;
        let mut claims: Vec<RegionClaim<'a>, MAX_REGIONS> = Vec::new();
        let mut hashes: Vec<[u8; 32], MAX_REGIONS> = Vec::new();
        let mut buf = [0u8; READ_CHUNK_LEN];
        for (i, spec) in self.regions.iter().enumerate() {
            let measured = measure(source, i, spec, &mut buf);
            // Region bytes may be the workload's secrets: do not leave them on the stack.
            zeroize::Zeroize::zeroize(&mut buf);
            let sha3_256 = measured?;
            let claim = RegionClaim {
                id: spec.id,
                address: spec.address,
                size: spec.size,
                protection: spec.protection,
                sha3_256,
            };
            // Both capacities are MAX_REGIONS, checked in `new`.
            claims.push(claim).map_err(|_| Error::InvalidState)?;
            hashes.push(sha3_256).map_err(|_| Error::InvalidState)?;
        }
        let report = MemoryReport {
            workload: self.workload,
            platform: self.platform,
            issued_at: now,
            expires_at,
            nonce: *nonce,
            regions: claims,
        };
        report.validate()?;
        let len = statement::sign(&report, self.key, now, rng, out)?;
        let changed = match &self.last {
            None => 0,
            Some(prev) => prev
                .iter()
                .zip(hashes.iter())
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .fold(0u32, |m, (i, _)| m | (1 << i)),
        };
        self.last = Some(hashes);
        self.next_due = now.saturating_add(self.schedule.interval);
        Ok(Attestation {
            len,
            changed,
            expires_at,
        })
    }
}

/// SHA3-256 of exactly `spec.size` bytes of region `index`.
fn measure<S: RegionSource + ?Sized>(
    source: &mut S,
    index: usize,
    spec: &RegionSpec<'_>,
    buf: &mut [u8; READ_CHUNK_LEN],
) -> Result<[u8; 32], AttestError<S::Error>> {
    let mut h = Sha3_256Stream::new();
    while h.len() < spec.size {
        let left = spec.size - h.len();
        let want = usize::try_from(left).map_or(READ_CHUNK_LEN, |l| l.min(READ_CHUNK_LEN));
        let n = source
            .read(index, spec, h.len(), &mut buf[..want])
            .map_err(|error| AttestError::Source {
                region: index,
                error,
            })?;
        if n == 0 || n > want {
            return Err(AttestError::RegionLength {
                region: index,
                read: h.len(),
                expected: spec.size,
            });
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish().0)
}
