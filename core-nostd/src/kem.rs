//! ML-KEM-768 (FIPS 203).
//!
//! Decapsulation keys are kept as their 64-byte seed form `d ‖ z` (FIPS 203 §7.1,
//! `ML-KEM.KeyGen_internal`) and zeroize on drop. Encapsulation keys are checked
//! on import (FIPS 203 §7.2 modulus check) so a malformed key from a peer is an error.

use ml_kem::{B32, Decapsulate, EncapsulationKey768, KeyExport, Seed, array::Array, kem::Key};
use rand_core::CryptoRng;

use crate::{Error, secret::Secret};

/// Length of an encoded ML-KEM-768 encapsulation key.
pub const EK_LEN: usize = 1184;
/// Length of an ML-KEM-768 ciphertext.
pub const CT_LEN: usize = 1088;
/// Length of the shared secret.
pub const SS_LEN: usize = 32;
/// Length of the decapsulation key seed `d ‖ z`.
pub const SEED_LEN: usize = 64;

/// An ML-KEM-768 decapsulation (private) key. Zeroizes on drop, prints `<redacted>`.
pub struct DecapsulationKey {
    dk: ml_kem::DecapsulationKey768,
}

impl core::fmt::Debug for DecapsulationKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DecapsulationKey(<redacted>)")
    }
}

impl DecapsulationKey {
    /// Generates a fresh key pair from `rng` (FIPS 203 Alg. 19 `ML-KEM.KeyGen`).
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = [0u8; SEED_LEN];
        rng.fill_bytes(&mut seed);
        let k = Self::from_seed(&Secret::new(seed));
        zeroize::Zeroize::zeroize(&mut seed);
        k
    }

    /// Derives the key pair from a 64-byte seed `d ‖ z` (FIPS 203 Alg. 16).
    pub fn from_seed(seed: &Secret<SEED_LEN>) -> Self {
        let s: Seed = Array(*seed.expose());
        Self {
            dk: ml_kem::DecapsulationKey768::from_seed(s),
        }
    }

    /// The matching encapsulation key, encoded.
    pub fn encapsulation_key_bytes(&self) -> [u8; EK_LEN] {
        self.dk.encapsulation_key().to_bytes().0
    }

    /// Decapsulates `ct` (FIPS 203 Alg. 21). A wrong-length ciphertext is an error;
    /// a well-formed but wrong ciphertext yields the implicit-rejection secret, which
    /// then fails authentication further on.
    pub fn decapsulate(&self, ct: &[u8]) -> Result<Secret<SS_LEN>, Error> {
        let ct: &[u8; CT_LEN] = ct.try_into().map_err(|_| Error::InvalidKey)?;
        let c: Array<u8, _> = Array(*ct);
        let ss = self.dk.decapsulate(&c);
        Ok(Secret::new(ss.0))
    }
}

/// A checked ML-KEM-768 encapsulation key.
#[derive(Clone)]
pub struct EncapsulationKey {
    ek: EncapsulationKey768,
}

impl core::fmt::Debug for EncapsulationKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("EncapsulationKey(ML-KEM-768)")
    }
}

impl EncapsulationKey {
    /// Imports an encoded key; wrong length or coefficients not reduced mod q
    /// (FIPS 203 §7.2 "modulus check") is [`Error::InvalidKey`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let b: &[u8; EK_LEN] = bytes.try_into().map_err(|_| Error::InvalidKey)?;
        let key: Key<EncapsulationKey768> = Array(*b);
        let ek = EncapsulationKey768::new(&key).map_err(|_| Error::InvalidKey)?;
        Ok(Self { ek })
    }

    /// Encapsulates with fresh randomness from `rng` (FIPS 203 Alg. 20).
    pub fn encapsulate<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
    ) -> ([u8; CT_LEN], Secret<SS_LEN>) {
        let mut m = [0u8; 32];
        rng.fill_bytes(&mut m);
        let out = self.encapsulate_deterministic(&m);
        zeroize::Zeroize::zeroize(&mut m);
        out
    }

    /// Encapsulates with the caller's `m` (FIPS 203 Alg. 17). Only for known-answer
    /// tests: `m` must be fresh uniform randomness, never reused.
    pub fn encapsulate_deterministic(&self, m: &[u8; 32]) -> ([u8; CT_LEN], Secret<SS_LEN>) {
        let m: B32 = Array(*m);
        let (ct, ss) = self.ek.encapsulate_deterministic(&m);
        (ct.0, Secret::new(ss.0))
    }
}

/// The underlying implementation, for known-answer tests that need its internals.
#[doc(hidden)]
pub use ml_kem as backend;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_reject_bad_inputs() {
        let dk = DecapsulationKey::from_seed(&Secret::new([3u8; 64]));
        let ek = EncapsulationKey::from_bytes(&dk.encapsulation_key_bytes()).unwrap();
        let (ct, ss) = ek.encapsulate_deterministic(&[9u8; 32]);
        assert!(dk.decapsulate(&ct).unwrap().ct_eq(&ss));
        // Implicit rejection: a modified ciphertext gives a different secret.
        let mut bad = ct;
        bad[0] ^= 1;
        assert!(!dk.decapsulate(&bad).unwrap().ct_eq(&ss));
        assert_eq!(dk.decapsulate(&ct[1..]).unwrap_err(), Error::InvalidKey);
        assert_eq!(
            EncapsulationKey::from_bytes(&[0u8; 10]).unwrap_err(),
            Error::InvalidKey
        );
        // A coefficient of 0xFFF (> q) fails the modulus check.
        let mut ekb = dk.encapsulation_key_bytes();
        ekb[0] = 0xff;
        ekb[1] |= 0x0f;
        assert_eq!(
            EncapsulationKey::from_bytes(&ekb).unwrap_err(),
            Error::InvalidKey
        );
    }
}
