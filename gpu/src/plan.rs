//! Host-side checks shared by the GPU opener and the CPU fallback: everything that can
//! be decided from headers before decryption, with `pqcc_core` doing the deciding.

use pqcc_core::{
    Error,
    aead::{NONCE_LEN, TAG_LEN},
    channel::{EncryptedFrame, Opener, PendingFrame, TensorAssembler},
    hash,
    secret::Secret,
};

use crate::GpuError;

/// One frame of a tensor, located: where its parts are in the frame bytes and where
/// its plaintext goes in the tensor.
#[derive(Debug, Clone)]
pub(crate) struct FramePlan {
    pub pending: PendingFrame,
    /// Offset of this chunk in the tensor.
    pub offset: usize,
    pub header_len: usize,
    pub ciphertext_len: usize,
    pub tag: [u8; TAG_LEN],
}

impl FramePlan {
    pub fn nonce(&self) -> &[u8; NONCE_LEN] {
        &self.pending.nonce
    }

    /// The AAD (header bytes) and ciphertext of `frame`, the frame this plan was made from.
    pub fn parts<'f>(&self, frame: &'f [u8]) -> Result<(&'f [u8], &'f [u8]), GpuError> {
        let end = self.header_len + self.ciphertext_len;
        match (
            frame.get(..self.header_len),
            frame.get(self.header_len..end),
        ) {
            (Some(a), Some(c)) => Ok((a, c)),
            _ => Err(GpuError::InvalidArgument(
                "frame changed since it was checked",
            )),
        }
    }
}

/// A whole tensor's frames, checked.
#[derive(Debug, Clone)]
pub(crate) struct TensorPlan {
    pub frames: Vec<FramePlan>,
    pub total_len: usize,
}

/// Checks frames one at a time as the complete, in-order chunks of one tensor: each
/// passes [`Opener::check`] (header, epoch, key lifetime, replay window); sequence
/// numbers strictly increase; the chunks continue each other from offset 0 to FINAL
/// with the same metadata ([`TensorAssembler`]). Changes no channel state, so a caller
/// may start work on a frame as soon as it is checked and still refuse the whole tensor.
pub(crate) struct Planner {
    asm: TensorAssembler<1>,
    frames: Vec<FramePlan>,
    total_len: Option<usize>,
    complete: bool,
}

impl Planner {
    pub fn new() -> Self {
        Self {
            asm: TensorAssembler::new(),
            frames: Vec::new(),
            total_len: None,
            complete: false,
        }
    }

    /// Checks the next frame; returns its plan and the tensor's total length.
    pub fn push<A, const W: usize>(
        &mut self,
        opener: &Opener<A, W>,
        now: u64,
        frame: &[u8],
    ) -> Result<(&FramePlan, usize), GpuError>
    where
        A: pqcc_core::aead::Aes256GcmProvider,
    {
        let i = self.frames.len();
        let refuse = |error| GpuError::Channel { frame: i, error };
        if self.complete {
            // A chunk after FINAL belongs to another tensor.
            return Err(refuse(Error::ChunkOutOfOrder));
        }
        let pending = opener.check(now, frame).map_err(refuse)?;
        let ef = EncryptedFrame::parse(frame).map_err(refuse)?;
        if let Some(prev) = self.frames.last() {
            if pending.seq == prev.pending.seq {
                return Err(refuse(Error::Replay { seq: pending.seq }));
            }
            if pending.seq < prev.pending.seq {
                return Err(refuse(Error::ChunkOutOfOrder));
            }
        }
        let pos = self.asm.accept(&ef.header).map_err(refuse)?;
        self.complete = pos.complete;
        let total =
            usize::try_from(ef.header.meta.total_len).map_err(|_| refuse(Error::Oversize))?;
        let total = *self.total_len.get_or_insert(total);
        let offset = usize::try_from(pos.offset).map_err(|_| refuse(Error::Oversize))?;
        if offset
            .checked_add(ef.ciphertext.len())
            .is_none_or(|end| end > total)
        {
            return Err(refuse(Error::ChunkOutOfOrder));
        }
        self.frames.push(FramePlan {
            pending,
            offset,
            header_len: ef.aad.len(),
            ciphertext_len: ef.ciphertext.len(),
            tag: ef.tag,
        });
        let last = self
            .frames
            .last()
            .ok_or(GpuError::InvalidArgument("no frames"))?;
        Ok((last, total))
    }

    /// The whole tensor's plan, once its FINAL chunk was seen.
    pub fn finish(self) -> Result<TensorPlan, GpuError> {
        let Some(total_len) = self.total_len else {
            return Err(GpuError::InvalidArgument("no frames"));
        };
        if !self.complete {
            return Err(GpuError::Channel {
                frame: self.frames.len().saturating_sub(1),
                error: Error::TensorTruncated,
            });
        }
        Ok(TensorPlan {
            frames: self.frames,
            total_len,
        })
    }
}

/// [`Planner`] over all of `frames`.
pub(crate) fn plan_tensor<'f, A, const W: usize>(
    opener: &Opener<A, W>,
    now: u64,
    frames: impl IntoIterator<Item = &'f [u8]>,
) -> Result<TensorPlan, GpuError>
where
    A: pqcc_core::aead::Aes256GcmProvider,
{
    let mut p = Planner::new();
    for f in frames {
        p.push(opener, now, f)?;
    }
    p.finish()
}

/// Records every frame of a verified tensor in the replay window, in order.
pub(crate) fn commit_all<A, const W: usize>(
    opener: &mut Opener<A, W>,
    plan: &TensorPlan,
) -> Result<(), GpuError>
where
    A: pqcc_core::aead::Aes256GcmProvider,
{
    for (i, f) in plan.frames.iter().enumerate() {
        opener
            .commit(&f.pending)
            .map_err(|error| GpuError::Channel { frame: i, error })?;
    }
    Ok(())
}

/// The next epoch's frame key, as `pqcc_core`'s channel derives it on rekey:
/// `SHAKE256("pqcc/v1/rekey" ‖ key ‖ epoch (u32 BE))`. An opener whose key lives on
/// the GPU holds no host copy, so its owner derives the next key with this and hands
/// it over (`GpuOpener::rekey`, `CpuOpener::rekey`).
pub fn next_epoch_key(key: &Secret<32>, new_epoch: u32) -> Secret<32> {
    let mut next = [0u8; 32];
    hash::shake256(
        &[b"pqcc/v1/rekey", key.expose(), &new_epoch.to_be_bytes()],
        &mut next,
    );
    let s = Secret::new(next);
    zeroize::Zeroize::zeroize(&mut next);
    s
}
