//! The operating system's random number generator for host tools.
//!
//! [`OsRng`] implements `rand_core` 0.10's [`TryRng`] and [`TryCryptoRng`] with
//! [`getrandom::fill`] (the `getrandom(2)` system call on Linux). It never falls back to
//! anything weaker: a failure is returned as an error. pqcc-core's APIs take an
//! infallible [`rand_core::CryptoRng`]; use [`OsRng::unwrap_err`] (or
//! [`rand_core::UnwrapErr`]) for those, which panics rather than continue without
//! randomness.

use rand_core::{TryCryptoRng, TryRng, UnwrapErr};

/// The OS random number generator (stateless; see the module docs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OsRng;

impl OsRng {
    /// An infallible adapter for APIs that take a [`rand_core::CryptoRng`]: it panics
    /// if the OS cannot provide randomness, so nothing proceeds without it.
    pub fn unwrap_err(self) -> UnwrapErr<OsRng> {
        UnwrapErr(self)
    }
}

impl TryRng for OsRng {
    type Error = getrandom::Error;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        getrandom::fill(dst)
    }
}

impl TryCryptoRng for OsRng {}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::Rng;

    #[test]
    fn produces_distinct_output() {
        let mut r = OsRng;
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        r.try_fill_bytes(&mut a).unwrap();
        r.try_fill_bytes(&mut b).unwrap();
        assert_ne!(a, b);
        let mut u = OsRng.unwrap_err();
        assert_ne!(u.next_u64(), u.next_u64());
    }
}
