//! Where everything of a sealed file lies: the runs of frames (the table, then each
//! tensor; or one blob) and each frame's offset, shared by sealing and opening.

use pqcc_core::{
    sealed::{BLOB_NAME, FrameRun, TABLE_NAME},
    wire::{DType, TensorMetadata},
};

/// One run of frames: the table, a tensor or a blob.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    /// Tensor name in the headers.
    pub name: String,
    /// Tensor id in the headers (0 for the table or a blob, then 1, 2, …).
    pub id: u64,
    pub dtype: DType,
    pub shape: Vec<u64>,
    /// Plaintext length.
    pub len: u64,
    pub first_seq: u64,
    /// Offset of its first frame in the sealed file.
    pub sealed_off: u64,
    /// Offset of its plaintext in the original file (`None` for the table).
    pub plain_off: Option<u64>,
}

impl Run {
    pub(crate) fn frame_run(&self, frame_size: u32) -> Result<FrameRun<'_>, pqcc_core::Error> {
        Ok(FrameRun {
            meta: TensorMetadata::new(self.id, &self.name, self.dtype, &self.shape)?,
            first_seq: self.first_seq,
            frame_size,
        })
    }
}

/// A tensor to lay out: name, dtype, shape, offset in the original file.
pub(crate) struct TensorSpec<'a> {
    pub name: &'a str,
    pub dtype: DType,
    pub shape: &'a [u64],
    pub plain_off: u64,
}

/// The runs of a file whose frames start at `frames_start`: the table (when
/// `table_len` is given) and the tensors, or a blob of `blob_len` bytes. Returns the
/// runs, the file's total length and its frame count.
pub(crate) fn lay_out(
    frames_start: u64,
    frame_size: u32,
    table_len: Option<u64>,
    tensors: &[TensorSpec<'_>],
    blob_len: Option<u64>,
) -> Result<(Vec<Run>, u64, u64), pqcc_core::Error> {
    let mut runs = Vec::with_capacity(tensors.len() + 1);
    let mut seq = 0u64;
    let mut off = frames_start;
    let mut push = |name: &str,
                    id: u64,
                    dtype: DType,
                    shape: &[u64],
                    plain_off: Option<u64>|
     -> Result<(), pqcc_core::Error> {
        let meta = TensorMetadata::new(id, name, dtype, shape)?;
        let fr = FrameRun {
            meta,
            first_seq: seq,
            frame_size,
        };
        let sealed = fr.sealed_len()?;
        runs.push(Run {
            name: name.to_owned(),
            id,
            dtype,
            shape: shape.to_vec(),
            len: fr.meta.total_len,
            first_seq: seq,
            sealed_off: off,
            plain_off,
        });
        seq = fr.end_seq()?;
        off = off.checked_add(sealed).ok_or(pqcc_core::Error::Oversize)?;
        Ok(())
    };
    if let Some(t) = table_len {
        push(TABLE_NAME, 0, DType::Bytes, &[t], None)?;
    }
    for (i, t) in tensors.iter().enumerate() {
        push(t.name, i as u64 + 1, t.dtype, t.shape, Some(t.plain_off))?;
    }
    if let Some(b) = blob_len {
        push(BLOB_NAME, 0, DType::Bytes, &[b], Some(0))?;
    }
    Ok((runs, off, seq))
}

/// One frame's place: run index, frame index in the run, offset and length on disk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FramePos {
    pub run: usize,
    pub frame: u64,
    pub sealed_off: u64,
    pub sealed_len: usize,
    /// Offset of the frame's plaintext within its run.
    pub chunk_off: u64,
    pub chunk_len: usize,
}

/// Every frame of `run` (index `ri`).
pub(crate) fn frames(
    ri: usize,
    run: &Run,
    frame_size: u32,
) -> Result<Vec<FramePos>, pqcc_core::Error> {
    let fr = run.frame_run(frame_size)?;
    let mut off = run.sealed_off;
    let mut out = Vec::with_capacity(usize::try_from(fr.frames()).unwrap_or(0));
    for i in 0..fr.frames() {
        let len = fr.frame_len(i)?;
        let (coff, clen) = fr.chunk(i)?;
        out.push(FramePos {
            run: ri,
            frame: i,
            sealed_off: off,
            sealed_len: len,
            chunk_off: coff,
            chunk_len: clen as usize,
        });
        off += len as u64;
    }
    Ok(out)
}

/// A length or offset already known to fit in memory (bounded tables and manifests,
/// frame chunks, buffer sizes) as `usize`; saturates where it would not fit.
pub(crate) fn us(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}
