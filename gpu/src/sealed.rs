//! Sealed models opened straight into GPU memory.
//!
//! [`load_sealed`] takes a [`SealedModel`] (opened and checked by `pqcc-sealed`: the
//! manifest, every preamble and table) and, file by file, reads each tensor's frames
//! (`ciphertext ‖ tag` on disk) into a pinned buffer, writes before each the channel
//! frame header that is its AAD (rebuilt from the sealed table), and opens the tensor
//! with the [`GpuOpener`] under the file's key: the ciphertext is copied to VRAM and
//! decrypted and checked there, so plaintext weights never exist in host memory. The
//! host checks each header, sequence numbers strictly increasing within the file, and
//! the frames forming the tensor exactly, as for any channel tensor.
//!
//! All or nothing: when any tensor fails, every buffer opened so far is zeroed and
//! freed and the error names the file and the tensor.

use std::{fs::File, os::unix::fs::FileExt};

use pqcc_core::{channel::Limits, secret::Secret, wire::DType};
use pqcc_sealed::{FileKind, SealedModel};

use crate::{
    Backend, BufferHandle, GpuError,
    cuda::{CudaBackend, GpuOpener, OpenSchedule, PinnedBuffer},
};

/// Key lifetime for sealed files: they are opened once, at any time, and their frame
/// count is fixed by the authenticated preamble.
const SEALED_LIMITS: Limits = Limits {
    max_frames: u64::MAX,
    ttl_secs: u64::MAX,
};

/// One tensor opened in VRAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VramTensor {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<u64>,
    /// Length in bytes.
    pub len: usize,
    /// The device buffer (`None` for a tensor without elements).
    pub buffer: Option<BufferHandle>,
}

/// A sealed model's tensors in VRAM, with the opener (and its backend) that holds them.
pub struct VramModel {
    opener: GpuOpener,
    tensors: Vec<VramTensor>,
    bytes: u64,
}

impl std::fmt::Debug for VramModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VramModel")
            .field("tensors", &self.tensors.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl VramModel {
    /// The tensors, in file and data order.
    pub fn tensors(&self) -> &[VramTensor] {
        &self.tensors
    }

    /// Bytes of tensor data in VRAM.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The backend that owns the buffers (device pointers, downloads for tests).
    pub fn backend(&mut self) -> &mut CudaBackend {
        self.opener.backend()
    }

    /// Zeroes and frees every tensor's buffer.
    pub fn free(mut self) -> Result<(), GpuError> {
        free_all(self.opener.backend(), &self.tensors)
    }
}

/// Why a sealed model did not load.
#[derive(Debug)]
pub enum LoadError {
    /// Reading the sealed files.
    Io {
        /// The original file's path in the model.
        file: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The GPU refused a tensor (a tag, a header, the driver).
    Gpu {
        /// The original file's path in the model.
        file: String,
        /// The tensor, when one was being opened.
        tensor: Option<String>,
        /// The opener's error.
        error: GpuError,
    },
    /// The sealed model's layout (from `pqcc-sealed`).
    Sealed(pqcc_sealed::Error),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io { file, error } => write!(f, "{file}: reading: {error}"),
            Self::Gpu {
                file,
                tensor: Some(t),
                error,
            } => write!(f, "{file}: tensor {t:?}: {error}"),
            Self::Gpu {
                file,
                tensor: None,
                error,
            } => write!(f, "{file}: {error}"),
            Self::Sealed(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LoadError {}

fn free_all(b: &mut CudaBackend, ts: &[VramTensor]) -> Result<(), GpuError> {
    let mut first = Ok(());
    for t in ts {
        if let Some(h) = t.buffer
            && let Err(e) = b.free(h)
            && first.is_ok()
        {
            first = Err(e);
        }
    }
    first
}

/// Opens every tensor of every safetensors file of `model` into VRAM on `backend`
/// under `schedule`. Returns the model's tensors in VRAM, or an error naming the file
/// and tensor with every buffer zeroed and freed.
pub fn load_sealed(
    backend: CudaBackend,
    model: &SealedModel,
    schedule: OpenSchedule,
) -> Result<VramModel, LoadError> {
    let files: Vec<_> = model
        .files()
        .iter()
        .filter(|f| f.kind == FileKind::Safetensors)
        .collect();
    let infos = model.tensors();
    let mut opener: Option<GpuOpener> = None;
    let mut backend = Some(backend);
    let mut out: Vec<VramTensor> = Vec::with_capacity(infos.len());
    let mut pinned: Option<PinnedBuffer> = None;
    let mut bytes = 0u64;
    let result = (|| -> Result<(), LoadError> {
        for sf in &files {
            let gpu = |tensor: Option<&str>, error: GpuError| LoadError::Gpu {
                file: sf.path.clone(),
                tensor: tensor.map(str::to_owned),
                error,
            };
            let key = Secret::new(*sf.key().key().expose());
            let prefix = sf.key().prefix();
            let g = match opener.as_mut() {
                Some(g) => {
                    g.reset_key(0, key, prefix, SEALED_LIMITS)
                        .map_err(|e| gpu(None, e))?;
                    g
                }
                None => {
                    let b = backend
                        .take()
                        .ok_or_else(|| gpu(None, GpuError::InvalidArgument("no backend")))?;
                    let mut g = GpuOpener::new(b, key, prefix, SEALED_LIMITS, 0)
                        .map_err(|e| gpu(None, e))?;
                    g.set_schedule(schedule);
                    opener.insert(g)
                }
            };
            let f = File::open(sf.sealed_path()).map_err(|error| LoadError::Io {
                file: sf.path.clone(),
                error,
            })?;
            for t in infos.iter().filter(|t| t.file == sf.path) {
                let locs = sf
                    .tensor_frames(&t.name)
                    .ok_or_else(|| gpu(Some(&t.name), GpuError::InvalidArgument("no such tensor")))?
                    .map_err(LoadError::Sealed)?;
                let len = usize::try_from(t.len).map_err(|_| {
                    gpu(Some(&t.name), GpuError::InvalidArgument("tensor too large"))
                })?;
                if len == 0 {
                    out.push(VramTensor {
                        name: t.name.clone(),
                        dtype: t.dtype,
                        shape: t.shape.clone(),
                        len,
                        buffer: None,
                    });
                    continue;
                }
                let need: usize = locs.iter().map(|l| l.header.len() + l.len).sum();
                if pinned.as_ref().is_none_or(|p| p.len() < need) {
                    pinned = None;
                    pinned = Some(
                        g.backend()
                            .alloc_pinned(need)
                            .map_err(|e| gpu(Some(&t.name), e))?,
                    );
                }
                let buf = pinned.as_mut().expect("allocated above");
                let mut ranges = Vec::with_capacity(locs.len());
                let mut pos = 0usize;
                {
                    let s = buf.as_mut_slice();
                    for l in &locs {
                        let hl = l.header.len();
                        s[pos..pos + hl].copy_from_slice(&l.header);
                        f.read_exact_at(&mut s[pos + hl..pos + hl + l.len], l.offset)
                            .map_err(|error| LoadError::Io {
                                file: sf.path.clone(),
                                error,
                            })?;
                        ranges.push(pos..pos + hl + l.len);
                        pos += hl + l.len;
                    }
                }
                let dst = g
                    .backend()
                    .alloc_zeroed(len)
                    .map_err(|e| gpu(Some(&t.name), e))?;
                out.push(VramTensor {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    len,
                    buffer: Some(dst),
                });
                g.open_tensor_pinned(0, buf, &ranges, dst)
                    .map_err(|e| gpu(Some(&t.name), e))?;
                bytes += t.len;
            }
        }
        Ok(())
    })();
    drop(pinned);
    match (result, opener) {
        (Ok(()), Some(opener)) => Ok(VramModel {
            opener,
            tensors: out,
            bytes,
        }),
        (Ok(()), None) => Err(LoadError::Gpu {
            file: String::new(),
            tensor: None,
            error: GpuError::InvalidArgument("the sealed model holds no safetensors file"),
        }),
        (Err(e), Some(mut g)) => {
            let _ = free_all(g.backend(), &out);
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}
