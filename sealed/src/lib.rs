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

/// The longest data-encryption key file read (64 hex digits and a line end fit well).
const MAX_KEY_FILE_LEN: u64 = 1024;

/// Reads a data-encryption key file: exactly 32 raw bytes, or 64 hex digits with an
/// optional trailing newline. Anything else is refused.
///
/// Symlinks are followed (Kubernetes mounts secrets as `KEY -> ..data/KEY`), and the
/// file finally opened must be a regular file that group and others cannot access
/// (mode `& 0o077 == 0`): a directory, a FIFO (refused at once: the open does not
/// block), a device or a readable-by-others file is refused with the reason.
pub fn read_key_file(path: &Path) -> Result<Secret<32>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(path, "opening the key file", e))?;
    let meta = f
        .metadata()
        .map_err(|e| Error::io(path, "reading the key file", e))?;
    if !meta.is_file() {
        return Err(Error::Key(format!(
            "{}: not a regular file (a key file must be one, or a symlink to one)",
            path.display()
        )));
    }
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(80));
    f.take(MAX_KEY_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, "reading the key file", e))?;
    if bytes.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(Error::Key(format!(
            "{}: over {MAX_KEY_FILE_LEN} bytes; a key file holds 32 raw bytes or 64 hex digits",
            path.display()
        )));
    }
    let key = parse_key(&bytes).ok_or_else(|| {
        Error::Key(format!(
            "{}: {} bytes; a key file holds 32 raw bytes or 64 hex digits",
            path.display(),
            bytes.len()
        ))
    })?;
    // After the format (whose error is the more useful one for a file that is no key),
    // before the key is used.
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::Key(format!(
            "{} has mode {mode:04o}, which lets group or others access it; refusing to use \
             it (chmod 600 it if it was not exposed, otherwise make a new key)",
            path.display()
        )));
    }
    Ok(key)
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

    /// Issue 29: a key behind a symlink chain (as Kubernetes mounts secrets) is read;
    /// a directory, a FIFO (without blocking) and a file others may read are refused,
    /// through a link or not.
    #[test]
    fn key_files_follow_links_to_private_regular_files() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let d = std::env::temp_dir().join(format!("pqcc-sealed-keyfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let real = d.join("..2024_01_01");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::write(real.join("model-key"), [7u8; 32]).unwrap();
        std::fs::set_permissions(real.join("model-key"), PermissionsExt::from_mode(0o400)).unwrap();
        symlink("..2024_01_01", d.join("..data")).unwrap();
        symlink("..data/model-key", d.join("model-key")).unwrap();
        assert_eq!(
            read_key_file(&d.join("model-key")).unwrap().expose(),
            &[7u8; 32]
        );

        std::fs::write(d.join("open"), [7u8; 32]).unwrap();
        std::fs::set_permissions(d.join("open"), PermissionsExt::from_mode(0o644)).unwrap();
        symlink("open", d.join("open-link")).unwrap();
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        symlink("fifo", d.join("fifo-link")).unwrap();
        for (name, why) in [
            ("open", "mode 0644"),
            ("open-link", "mode 0644"),
            ("fifo", "not a regular file"),
            ("fifo-link", "not a regular file"),
            ("..data", "not a regular file"),
        ] {
            let e = read_key_file(&d.join(name)).unwrap_err().to_string();
            assert!(e.contains(why), "{name}: {e}");
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
