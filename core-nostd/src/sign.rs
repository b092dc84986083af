//! ML-DSA-65 (FIPS 204) signatures with pqcc context strings, and signer ids.
//!
//! pqcc always signs with the "pure" external interface `ML-DSA.Sign(sk, M, ctx)`
//! (FIPS 204 Alg. 2), hedged (fresh `rnd` from the caller's RNG), with a context
//! string `pqcc/v1/<purpose>` so a signature made for one purpose never verifies
//! for another. The signer id of a key is SHA3-256 of its encoded public key, shown as
//! `did:pqaid:<hex>`; verifiers look it up in their own trust store.

use core::fmt;

use ml_dsa::{EncodedSignature, EncodedVerifyingKey, ExpandedSigningKey, MlDsa65, Signature};
use rand_core::CryptoRng;

use crate::{Error, hash, secret::Secret};

/// Length of an encoded ML-DSA-65 public key.
pub const PK_LEN: usize = 1952;
/// Length of an encoded ML-DSA-65 signature.
pub const SIG_LEN: usize = 3309;
/// Length of a key-generation seed ξ.
pub const SEED_LEN: usize = 32;
/// Longest context string FIPS 204 allows.
pub const MAX_CONTEXT_LEN: usize = 255;

/// An ML-DSA-65 signing key, kept with its seed. Zeroizes on drop, prints `<redacted>`.
pub struct SigningKey {
    seed: Secret<SEED_LEN>,
    sk: ExpandedSigningKey<MlDsa65>,
    pk: [u8; PK_LEN],
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// Generates a fresh key from `rng` (FIPS 204 Alg. 1).
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = [0u8; SEED_LEN];
        rng.fill_bytes(&mut seed);
        let k = Self::from_seed(&Secret::new(seed));
        zeroize::Zeroize::zeroize(&mut seed);
        k
    }

    /// Derives the key from a 32-byte seed ξ (FIPS 204 Alg. 6 `KeyGen_internal`).
    pub fn from_seed(seed: &Secret<SEED_LEN>) -> Self {
        // Two separate, non-inlined steps so their large temporaries (the 30 KiB
        // matrix Â and friends) never share one stack frame: on bare metal the
        // stack is the budget.
        #[inline(never)]
        fn expand(xi: &ml_dsa::B32) -> ExpandedSigningKey<MlDsa65> {
            ExpandedSigningKey::<MlDsa65>::from_seed(xi)
        }
        #[inline(never)]
        fn public(sk: &ExpandedSigningKey<MlDsa65>) -> [u8; PK_LEN] {
            sk.verifying_key().encode().0
        }
        let xi = ml_dsa::B32::from(*seed.expose());
        let sk = expand(&xi);
        let pk = public(&sk);
        Self {
            seed: Secret::new(*seed.expose()),
            sk,
            pk,
        }
    }

    /// The seed, for storing the key. Handle as secret.
    pub fn seed(&self) -> &Secret<SEED_LEN> {
        &self.seed
    }

    /// The encoded public key.
    pub fn public_key(&self) -> &[u8; PK_LEN] {
        &self.pk
    }

    /// This key's signer id.
    pub fn signer_id(&self) -> SignerId {
        SignerId::of(&self.pk)
    }

    /// Signs `msg` under context `ctx` with fresh randomness (hedged ML-DSA.Sign).
    pub fn sign<R: CryptoRng + ?Sized>(
        &self,
        ctx: &[u8],
        msg: &[u8],
        rng: &mut R,
    ) -> Result<[u8; SIG_LEN], Error> {
        let mut rnd = [0u8; 32];
        rng.fill_bytes(&mut rnd);
        let sig = self.sign_with_rnd(ctx, msg, &rnd);
        zeroize::Zeroize::zeroize(&mut rnd);
        sig
    }

    /// Signs with a caller-chosen `rnd` (all zero = the deterministic variant).
    /// Known-answer tests and reproducible fixtures only.
    pub fn sign_with_rnd(
        &self,
        ctx: &[u8],
        msg: &[u8],
        rnd: &[u8; 32],
    ) -> Result<[u8; SIG_LEN], Error> {
        // FIPS 204 Alg. 2 step 10: M' = IntegerToBytes(0, 1) ‖ IntegerToBytes(|ctx|, 1) ‖ ctx ‖ M
        let ctx_len = u8::try_from(ctx.len()).map_err(|_| Error::InvalidArgument)?;
        let rnd = ml_dsa::B32::from(*rnd);
        let sig = self.sk.sign_internal(&[&[0u8, ctx_len], ctx, msg], &rnd);
        Ok(sig.encode().0)
    }
}

/// A decoded ML-DSA-65 public key, ready to verify.
pub struct VerifyingKey {
    vk: ml_dsa::VerifyingKey<MlDsa65>,
    id: SignerId,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", self.id)
    }
}

impl VerifyingKey {
    /// Decodes a public key; a wrong length is [`Error::InvalidKey`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let b: &[u8; PK_LEN] = bytes.try_into().map_err(|_| Error::InvalidKey)?;
        let enc = EncodedVerifyingKey::<MlDsa65>::from(*b);
        Ok(Self {
            vk: ml_dsa::VerifyingKey::decode(&enc),
            id: SignerId::of(b),
        })
    }

    /// The signer id of this key.
    pub fn signer_id(&self) -> SignerId {
        self.id
    }

    /// Verifies `sig` over `msg` under context `ctx` (FIPS 204 Alg. 3). Any failure —
    /// wrong length, undecodable signature, too-long context, wrong signature — is
    /// [`Error::BadSignature`].
    pub fn verify(&self, ctx: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), Error> {
        if ctx.len() > MAX_CONTEXT_LEN {
            return Err(Error::BadSignature);
        }
        let b: &[u8; SIG_LEN] = sig.try_into().map_err(|_| Error::BadSignature)?;
        let enc = EncodedSignature::<MlDsa65>::from(*b);
        let sig = Signature::<MlDsa65>::decode(&enc).ok_or(Error::BadSignature)?;
        if self.vk.verify_with_context(msg, ctx, &sig) {
            Ok(())
        } else {
            Err(Error::BadSignature)
        }
    }
}

/// SHA3-256 of an encoded ML-DSA-65 public key; displays as `did:pqaid:<64 hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SignerId(pub [u8; 32]);

impl SignerId {
    /// The DID prefix.
    pub const DID_PREFIX: &'static str = "did:pqaid:";

    /// The id of an encoded public key.
    pub fn of(public_key: &[u8]) -> Self {
        Self(hash::sha3_256(&[public_key]))
    }

    /// Parses `did:pqaid:<64 lowercase or uppercase hex>`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let hex = s.strip_prefix(Self::DID_PREFIX).ok_or(Error::Malformed)?;
        let mut out = [0u8; 32];
        crate::wire::hex_decode(hex, &mut out)?;
        Ok(Self(out))
    }

    /// Constant-time comparison.
    pub fn ct_eq(&self, other: &SignerId) -> bool {
        crate::secret::ct_eq(&self.0, &other.0)
    }
}

impl fmt::Display for SignerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::DID_PREFIX)?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SignerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The underlying implementation, for known-answer tests that need `Sign_internal`.
#[doc(hidden)]
pub use ml_dsa as backend;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_context_separation() {
        let sk = SigningKey::from_seed(&Secret::new([1u8; 32]));
        let vk = VerifyingKey::from_bytes(sk.public_key()).unwrap();
        let sig = sk
            .sign_with_rnd(b"pqcc/v1/test", b"hello", &[0; 32])
            .unwrap();
        vk.verify(b"pqcc/v1/test", b"hello", &sig).unwrap();
        assert_eq!(
            vk.verify(b"pqcc/v1/other", b"hello", &sig),
            Err(Error::BadSignature)
        );
        assert_eq!(
            vk.verify(b"pqcc/v1/test", b"hellp", &sig),
            Err(Error::BadSignature)
        );
        assert_eq!(
            vk.verify(b"pqcc/v1/test", b"hello", &sig[1..]),
            Err(Error::BadSignature)
        );
        let mut bad = sig;
        bad[100] ^= 1;
        assert_eq!(
            vk.verify(b"pqcc/v1/test", b"hello", &bad),
            Err(Error::BadSignature)
        );
        assert_eq!(sk.signer_id(), vk.signer_id());
        assert!(sk.sign_with_rnd(&[0u8; 256], b"x", &[0; 32]).is_err());
    }
}
