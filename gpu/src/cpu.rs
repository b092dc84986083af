//! The CPU fallback: opens a tensor's frames on the host with `pqcc_core`'s AES-256-GCM
//! and uploads the plaintext to a [`Backend`].
//!
//! It applies exactly the checks of the GPU opener (same planning code) and produces the
//! same bytes, but the plaintext passes through host memory (zeroized after upload), so
//! it gives up the property the GPU path exists for. Use it where no GPU is present, and
//! as the reference the GPU path is cross-checked against.

use pqcc_core::{
    aead::{Aes256GcmProvider, RustCryptoAesGcm},
    channel::{DEFAULT_WINDOW_WORDS, Limits, Opener},
    secret::Secret,
};
use zeroize::Zeroize;

use crate::{
    Backend, BufferHandle, GpuError,
    plan::{commit_all, plan_tensor},
};

/// Opens tensors of one channel direction on the CPU into a backend.
pub struct CpuOpener<B: Backend, const W: usize = DEFAULT_WINDOW_WORDS> {
    backend: B,
    aead: RustCryptoAesGcm,
    channel: Opener<RustCryptoAesGcm, W>,
}

impl<B: Backend, const W: usize> std::fmt::Debug for CpuOpener<B, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuOpener")
            .field("key", &"<redacted>")
            .field("epoch", &self.channel.epoch())
            .finish()
    }
}

impl<B: Backend, const W: usize> CpuOpener<B, W> {
    /// An opener for the direction with frame `key` and nonce `prefix` (from
    /// `pqcc_core::handshake::SessionKeys`), delivering into `backend`.
    pub fn new(backend: B, key: &Secret<32>, prefix: [u8; 4], limits: Limits, now: u64) -> Self {
        Self {
            backend,
            aead: RustCryptoAesGcm::new(key.expose()),
            channel: Opener::new(key, prefix, limits, now),
        }
    }

    /// The backend the tensors land in.
    pub fn backend(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The current key epoch.
    pub fn epoch(&self) -> u32 {
        self.channel.epoch()
    }

    /// Moves to the next epoch; `next_key` is [`crate::next_epoch_key`] of the current key.
    pub fn rekey(&mut self, now: u64, next_key: &Secret<32>) -> Result<(), GpuError> {
        self.channel
            .rekey(now)
            .map_err(|error| GpuError::Channel { frame: 0, error })?;
        self.aead = RustCryptoAesGcm::new(next_key.expose());
        Ok(())
    }

    /// Opens the frames of one tensor (all chunks, in order, FINAL last) into a new
    /// buffer of the tensor's length. All frames verify or none is accepted: on any
    /// failure nothing is committed to the replay window and no buffer is created.
    pub fn open_tensor(&mut self, now: u64, frames: &[&[u8]]) -> Result<BufferHandle, GpuError> {
        let plan = plan_tensor(&self.channel, now, frames.iter().copied())?;
        let mut plain = vec![0u8; plan.total_len];
        let mut ct = Vec::new();
        for (i, (f, frame)) in plan.frames.iter().zip(frames).enumerate() {
            let (aad, ciphertext) = f.parts(frame)?;
            ct.clear();
            ct.extend_from_slice(ciphertext);
            if self
                .aead
                .open_in_place(f.nonce(), aad, &mut ct, &f.tag)
                .is_err()
            {
                ct.zeroize();
                plain.zeroize();
                return Err(GpuError::TagMismatch { frame: i });
            }
            plain
                .get_mut(f.offset..f.offset + f.ciphertext_len)
                .ok_or(GpuError::InvalidArgument(
                    "chunk beyond the tensor's length",
                ))?
                .copy_from_slice(&ct);
        }
        ct.zeroize();
        let uploaded = self.backend.upload(&plain);
        plain.zeroize();
        let handle = uploaded?;
        if let Err(e) = commit_all(&mut self.channel, &plan) {
            self.backend.free(handle)?;
            return Err(e);
        }
        Ok(handle)
    }
}

/// Opens one AES-256-GCM message with a 96-bit nonce on the CPU: the fallback's
/// counterpart of [`crate::cuda::CudaBackend::open_raw_into`], returning the plaintext
/// or [`GpuError::TagMismatch`] (with no plaintext left behind).
pub fn open_raw(
    key: &Secret<32>,
    iv: &[u8; 12],
    aad: &[u8],
    ct: &[u8],
    tag: &[u8; 16],
) -> Result<Vec<u8>, GpuError> {
    let aead = RustCryptoAesGcm::new(key.expose());
    let mut buf = ct.to_vec();
    if aead.open_in_place(iv, aad, &mut buf, tag).is_err() {
        buf.zeroize();
        return Err(GpuError::TagMismatch { frame: 0 });
    }
    Ok(buf)
}
