//! SHA3-256, SHA3-512 and SHAKE256 helpers with pqcc's domain separation.
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
}
