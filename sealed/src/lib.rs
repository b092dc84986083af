//! `pqcc-sealed`: sealed models, encrypted at rest and opened only with the model
//! owner's data-encryption key (DEK).
//!
//! The format's fixed parts (preamble, key derivation, the tensor table, the manifest,
//! each frame's header and AAD) are `no_std` code in [`pqcc_core::sealed`], so the host
//! that seals and the guest that opens share one definition. This crate adds what needs
//! files and threads: reading Hugging Face model directories and safetensors headers,
//! sealing a directory ([`seal_dir`], streaming with bounded memory on every core),
//! opening a sealed model ([`SealedModel`]: the manifest, every file's preamble and
//! table, blobs and tensors into host memory) and unsealing it byte for byte
//! ([`unseal_dir`], the owner's check). The GPU path (ciphertext copied to VRAM and
//! opened there) lives in `pqcc-gpu`, which uses this crate for the layout.
//!
//! ## Guarantees
//! - Everything read from a sealed directory is untrusted until its tag verified:
//!   preambles and tables are parsed strictly, every frame's header must equal the
//!   header its place in the table implies, and any failure refuses the whole file (and
//!   the loaders refuse the whole model): no partial result is ever handed out.
//! - Plaintext in host memory ([`Plaintext`], [`HostTensor`]) is zeroized on drop; keys
//!   are [`Secret`]s (zeroized, printed `<redacted>`).
//! - Outputs are written under a temporary name in the destination's parent and renamed
//!   into place only when complete: a killed run leaves no directory under the final
//!   name.
//!
//! Format byte by byte, key handling and a worked example: `docs/sealed-models.md`.

#[cfg(feature = "aws-lc")]
pub mod aead;
mod error;
pub mod hf;
mod io;
mod layout;
pub mod open;
pub mod safetensors;
pub mod seal;

use std::path::Path;

pub use error::{Error, Result};
pub use open::{
    FrameLoc, HostTensor, HostTensors, Plaintext, SealedFile, SealedModel, TensorInfo,
    UnsealSummary, unseal_dir,
};
pub use pqcc_core::sealed::{DEFAULT_FRAME_SIZE, FileKind};
use pqcc_core::secret::Secret;
pub use seal::{SealOptions, SealSummary, seal_dir};

/// The CPU AES-256-GCM used for sealing and opening: AWS-LC when the `aws-lc` feature
/// is on (the default), RustCrypto otherwise. Both give the same bytes.
#[cfg(feature = "aws-lc")]
pub type CpuAead = aead::AwsLcAesGcm;
/// The CPU AES-256-GCM used for sealing and opening (RustCrypto: the `aws-lc` feature
/// is off).
#[cfg(not(feature = "aws-lc"))]
pub type CpuAead = pqcc_core::aead::RustCryptoAesGcm;

/// File name suffix of a sealed file.
pub const SEALED_SUFFIX: &str = ".sealed";
/// File name of the sealed manifest in a sealed model directory.
pub const MANIFEST_FILE: &str = "pqcc-manifest.sealed";

/// Reads a data-encryption key file: exactly 32 raw bytes, or 64 hex digits with an
/// optional trailing newline. Anything else is refused. A key file that group or
/// others may read draws a warning on stderr.
pub fn read_key_file(path: &Path) -> Result<Secret<32>> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, "reading the key file", e))?;
    if !meta.is_file() {
        return Err(Error::Key(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    if meta.len() > 1024 {
        return Err(Error::Key(format!(
            "{}: {} bytes; a key file holds 32 raw bytes or 64 hex digits",
            path.display(),
            meta.len()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        eprintln!(
            "pqcc: warning: {} can be read by group or others (chmod 600 it)",
            path.display()
        );
    }
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(path).map_err(|e| Error::io(path, "reading the key file", e))?,
    );
    parse_key(&bytes).ok_or_else(|| {
        Error::Key(format!(
            "{}: {} bytes; a key file holds 32 raw bytes or 64 hex digits",
            path.display(),
            bytes.len()
        ))
    })
}

/// A key from a key file's bytes: 32 raw bytes, or 64 hex digits (an optional trailing
/// newline).
pub fn parse_key(bytes: &[u8]) -> Option<Secret<32>> {
    if bytes.len() == 32 {
        return Secret::from_slice(bytes);
    }
    let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    if text.len() != 64 {
        return None;
    }
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    let s = std::str::from_utf8(text).ok()?;
    pqcc_core::wire::hex_decode(s, &mut k[..]).ok()?;
    Some(Secret::new(*k))
}

/// The key id of a DEK, in hex (what preambles carry; safe to print).
pub fn key_id_hex(dek: &Secret<32>) -> String {
    hex::encode(pqcc_core::sealed::key_id(dek))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_encodings() {
        let raw = [7u8; 32];
        assert_eq!(parse_key(&raw).unwrap().expose(), &raw);
        let hex = format!("{}\n", hex::encode(raw));
        assert_eq!(parse_key(hex.as_bytes()).unwrap().expose(), &raw);
        assert!(parse_key(&[0u8; 31]).is_none());
        assert!(parse_key(&[b'z'; 64]).is_none());
        assert!(parse_key(&[b'a'; 66]).is_none());
    }
}
