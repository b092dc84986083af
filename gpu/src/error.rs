//! Errors of the GPU data path.

use std::fmt;

/// Why a GPU operation or a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GpuError {
    /// A frame was refused by the channel's host-side checks (header, epoch, key
    /// lifetime, replay window, tensor ordering).
    Channel {
        /// Index of the frame in the call.
        frame: usize,
        /// The channel's reason.
        error: pqcc_core::Error,
    },
    /// A frame's GCM tag did not verify; the destination buffer was zeroed.
    TagMismatch {
        /// Index of the first frame whose tag failed.
        frame: usize,
    },
    /// The resident kernel ([`crate::cuda::OpenSchedule::Resident`]) gave up waiting for
    /// a frame's ciphertext to reach VRAM; the destination buffer was zeroed.
    NotArrived {
        /// Index of the first frame that did not arrive.
        frame: usize,
    },
    /// No usable CUDA driver, device or NVRTC library (the reason says which).
    Unavailable(String),
    /// A CUDA driver call failed.
    Driver(String),
    /// NVRTC could not compile the kernel.
    Compile(String),
    /// The caller passed something unusable (the text says what).
    InvalidArgument(&'static str),
    /// The buffer handle is not (or no longer) allocated in this backend.
    UnknownBuffer(u64),
}

impl fmt::Display for GpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Channel { frame, error } => write!(f, "frame {frame} refused: {error}"),
            Self::TagMismatch { frame } => write!(
                f,
                "frame {frame}: authentication tag mismatch (destination zeroed in VRAM)"
            ),
            Self::NotArrived { frame } => write!(
                f,
                "frame {frame}: its ciphertext did not reach VRAM while the GPU waited for it \
                 (destination zeroed in VRAM)"
            ),
            Self::Unavailable(why) => write!(f, "GPU unavailable: {why}"),
            Self::Driver(e) => write!(f, "CUDA driver error: {e}"),
            Self::Compile(e) => write!(f, "NVRTC compilation failed: {e}"),
            Self::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Self::UnknownBuffer(h) => write!(f, "unknown buffer handle {h}"),
        }
    }
}

impl std::error::Error for GpuError {}

/// Why [`crate::cuda::GpuOpener::open_tensors_pinned`] stopped: the tensors before
/// `tensor` were opened and delivered; no destination from `tensor` on holds plaintext
/// of the call (those it had started on were zeroed in VRAM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    /// Index of the tensor that failed.
    pub tensor: usize,
    /// Why it failed.
    pub error: GpuError,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tensor {}: {}", self.tensor, self.error)
    }
}

impl std::error::Error for BatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
