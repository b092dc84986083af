//! `pqcc model build --key`: a signed ModelManifest (`pqcc_core::statement`) beside the
//! archive, as `NAME@REV.tar.manifest`: the model's identity (name, revision, root
//! hash) and the dm-verity parameters needed to open it (salt, data size, SHA-256,
//! 4096-byte blocks), signed with ML-DSA-65 under the context `pqcc/v1/model-manifest`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use pqcc_core::{
    sign::SigningKey,
    statement::{self, Kind, ModelManifest, VerityHash},
    verity::Salt,
    wire::Bytes,
};

use super::{archive::VERITY_BLOCK, build::Output};
use crate::{keys, rng::OsRng};

/// Reads the ML-DSA-65 signing key from a pqcc secret key file.
pub fn read_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let sk = keys::read_secret_key(path)?;
    sk.signing_key()
        .with_context(|| format!("{}: not an ML-DSA-65 signing key", path.display()))
}

/// Signs the manifest of `out` (built with `salt`) and writes it atomically beside
/// the archive. Returns its path.
pub fn write_signed(out: &Output, salt: &Salt, key: &SigningKey) -> anyhow::Result<PathBuf> {
    let data_size = std::fs::metadata(&out.archive)
        .with_context(|| format!("{}: cannot stat", out.archive.display()))?
        .len();
    let m = ModelManifest {
        name: &out.name,
        revision: &out.revision,
        root_hash: Bytes(&out.root_hash),
        salt: Bytes(salt.as_bytes()),
        data_size,
        hash_algorithm: VerityHash::Sha256,
        data_block_size: VERITY_BLOCK,
        hash_block_size: VERITY_BLOCK,
    };
    let mut buf = vec![0u8; Kind::ModelManifest.max_len()];
    let now = crate::bench::unix_now();
    let n = statement::sign(&m, key, now, &mut OsRng.unwrap_err(), &mut buf)
        .map_err(|e| anyhow::anyhow!("signing the model manifest: {e}"))?;
    let mut path = out.archive.clone().into_os_string();
    path.push(".manifest");
    let path = PathBuf::from(path);
    keys::write_file_atomic(&path, &buf[..n], 0o644, true)?;
    Ok(path)
}
