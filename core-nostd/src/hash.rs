//! SHA3-256, SHA3-512 and SHAKE256 helpers with pqcc's domain separation, and a
//! streaming SHA3-256 for artifacts ([`Sha3_256Stream`]).
//!
//! Every hash pqcc computes over its own data starts with an ASCII label
//! (`"pqcc/v1/<purpose>"`) so a value computed for one purpose can never be taken
//! for another. Variable-length parts are length-prefixed (u32 big-endian) where
//! two of them follow each other.

use sha3::{Digest, Sha3_256, Sha3_512};
use shake::{ExtendableOutput, Shake256, Update, XofReader};

/// SHA3-256 of the concatenation of `parts`.
pub fn sha3_256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha3_256::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

/// SHA3-512 of the concatenation of `parts`.
pub fn sha3_512(parts: &[&[u8]]) -> [u8; 64] {
    let mut h = Sha3_512::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

/// SHAKE256 of the concatenation of `parts`, squeezed into `out`.
pub fn shake256(parts: &[&[u8]], out: &mut [u8]) {
    let mut h = Shake256::default();
    for p in parts {
        h.update(p);
    }
    h.finalize_xof().read(out);
}

/// An incremental transcript hash: SHA3-256 over length-prefixed items.
///
/// Each `absorb` adds `len(item) as u32 BE ‖ item`, so the boundaries between items
/// are part of the hash.
#[derive(Clone)]
pub struct Transcript {
    h: Sha3_256,
}

impl Transcript {
    /// Starts a transcript with a domain label.
    pub fn new(label: &[u8]) -> Self {
        let mut t = Self { h: Sha3_256::new() };
        t.absorb(label);
        t
    }

    /// Adds one length-prefixed item. Items longer than `u32::MAX` cannot occur in
    /// pqcc (every message is bounded far below); the length saturates.
    pub fn absorb(&mut self, item: &[u8]) {
        let len = u32::try_from(item.len()).unwrap_or(u32::MAX);
        Digest::update(&mut self.h, len.to_be_bytes());
        Digest::update(&mut self.h, item);
    }

    /// The hash of everything absorbed so far (the transcript goes on).
    pub fn current(&self) -> [u8; 32] {
        self.h.clone().finalize().into()
    }
}

/// Incremental SHA3-256 of an artifact's bytes, counting them as it goes.
///
/// For hashing drivers, eBPF objects, model files and memory regions piece by piece
/// without holding them in memory: feed every chunk to [`Sha3_256Stream::update`] in
/// order, then [`Sha3_256Stream::finish`] gives the digest and the exact number of
/// bytes hashed. Plain SHA3-256 (FIPS 202), no label: the value must equal what any
/// other tool computes over the same bytes.
#[derive(Clone, Default)]
pub struct Sha3_256Stream {
    h: Sha3_256,
    len: u64,
}

impl core::fmt::Debug for Sha3_256Stream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Sha3_256Stream(len {})", self.len)
    }
}

impl Sha3_256Stream {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hashes the next `chunk`. The byte count saturates at `u64::MAX` (unreachable).
    pub fn update(&mut self, chunk: &[u8]) {
        Digest::update(&mut self.h, chunk);
        self.len = self.len.saturating_add(chunk.len() as u64);
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The SHA3-256 digest of everything fed in, and its length in bytes.
    pub fn finish(self) -> ([u8; 32], u64) {
        (self.h.finalize().into(), self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        // FIPS 202 SHA3-256("") and SHA3-256("abc").
        let empty = sha3_256(&[]);
        assert_eq!(
            empty[..4],
            [0xa7, 0xff, 0xc6, 0xf8],
            "SHA3-256 of the empty string"
        );
        let abc = sha3_256(&[b"a", b"bc"]);
        assert_eq!(abc[..4], [0x3a, 0x98, 0x5d, 0xa7]);
        let abc512 = sha3_512(&[b"abc"]);
        assert_eq!(abc512[..4], [0xb7, 0x51, 0x85, 0x0b]);
        let mut out = [0u8; 4];
        shake256(&[b""], &mut out);
        assert_eq!(out, [0x46, 0xb9, 0xdd, 0x2b]);
    }

    #[test]
    fn transcript_is_length_prefixed() {
        let mut a = Transcript::new(b"t");
        a.absorb(b"ab");
        a.absorb(b"c");
        let mut b = Transcript::new(b"t");
        b.absorb(b"a");
        b.absorb(b"bc");
        assert_ne!(a.current(), b.current());
    }

    #[test]
    fn stream_equals_one_shot_and_counts_bytes() {
        let mut s = Sha3_256Stream::new();
        assert!(s.is_empty());
        s.update(b"a");
        s.update(b"");
        s.update(b"bc");
        assert_eq!(s.len(), 3);
        let (d, n) = s.finish();
        assert_eq!((d, n), (sha3_256(&[b"abc"]), 3));
    }
}
