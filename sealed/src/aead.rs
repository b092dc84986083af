//! AES-256-GCM on AWS-LC ([`aws_lc_rs`]), a std [`Aes256GcmProvider`] for the channel.
//!
//! [`AwsLcAesGcm`] plugs into `pqcc_core::channel` exactly like the `no_std` default
//! [`pqcc_core::aead::RustCryptoAesGcm`], and produces the same bytes (the tests in
//! `host-tools/tests/` cross-check both on random inputs and run Wycheproof through it).
//! AWS-LC picks its fastest code path for the CPU at run time (AES-NI with CLMUL, and
//! VAES with VPCLMULQDQ on AVX-512 machines).
//!
//! # Key material
//!
//! This type keeps no copy of the raw key. [`aws_lc_rs::aead::UnboundKey::new`] hands
//! the 32 key bytes to AWS-LC, which expands them (AES round keys and the GHASH table)
//! into an `EVP_AEAD_CTX` allocated with `OPENSSL_malloc`. On drop, `aws-lc-rs` calls
//! `EVP_AEAD_CTX_free`, that is `EVP_AEAD_CTX_cleanup` and `OPENSSL_free`; AWS-LC's
//! `OPENSSL_free` overwrites the whole allocation with `OPENSSL_cleanse` before freeing
//! it (unless an application installed its own allocator hooks, which pqcc does not).
//! So the key schedule is erased when an [`AwsLcAesGcm`] is dropped; copies that the
//! assembly leaves in registers or on the stack during a call are beyond its control
//! (as they are for the RustCrypto provider). The caller's own key bytes (the channel
//! keeps them in a `pqcc_core::secret::Secret`) zeroize on their own drop.
//!
//! # Failed opens
//!
//! AWS-LC decrypts in place and then compares the tag, so after a failed open the
//! buffer may hold unauthenticated plaintext. [`AwsLcAesGcm::open_in_place`] therefore
//! zeroizes the whole buffer before returning [`Error::Decrypt`].

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use pqcc_core::{
    Error,
    aead::{Aes256GcmProvider, KEY_LEN, NONCE_LEN, TAG_LEN},
};
use zeroize::Zeroize;

/// AES-256-GCM (96-bit nonce, 128-bit tag) on AWS-LC through `aws-lc-rs`'s
/// [`LessSafeKey`]: the channel supplies its own never-repeating nonces.
pub struct AwsLcAesGcm(LessSafeKey);

impl core::fmt::Debug for AwsLcAesGcm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AwsLcAesGcm(<redacted>)")
    }
}

impl Aes256GcmProvider for AwsLcAesGcm {
    const NAME: &'static str = "aws-lc";

    /// Expands `key`.
    ///
    /// # Panics
    /// Only if AWS-LC cannot allocate its context (the key length is fixed at 32, the
    /// one length AES-256-GCM accepts).
    fn new(key: &[u8; KEY_LEN]) -> Self {
        let key = UnboundKey::new(&AES_256_GCM, key)
            .expect("AWS-LC refused a 32-byte AES-256-GCM key (allocation failure)");
        Self(LessSafeKey::new(key))
    }

    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error> {
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
            .map_err(|_| Error::Oversize)?;
        tag.as_ref().try_into().map_err(|_| Error::Oversize)
    }

    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Error> {
        match self.0.open_in_place_separate_tag(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            tag,
            buf,
        ) {
            Ok(_) => Ok(()),
            Err(_) => {
                // AWS-LC may have written unauthenticated plaintext: erase it.
                buf.zeroize();
                Err(Error::Decrypt)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_failed_open_zeroes() {
        let a = AwsLcAesGcm::new(&[7u8; KEY_LEN]);
        let nonce = [1u8; NONCE_LEN];
        let mut buf = *b"attack at dawn, bring snacks";
        let orig = buf;
        let tag = a.seal_in_place(&nonce, b"hdr", &mut buf).unwrap();
        assert_ne!(buf, orig);
        let mut bad = buf;
        assert_eq!(
            a.open_in_place(&nonce, b"hdx", &mut bad, &tag),
            Err(Error::Decrypt)
        );
        assert!(bad.iter().all(|&b| b == 0));
        a.open_in_place(&nonce, b"hdr", &mut buf, &tag).unwrap();
        assert_eq!(buf, orig);
        assert_eq!(format!("{a:?}"), "AwsLcAesGcm(<redacted>)");
    }
}
