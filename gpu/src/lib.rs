//! `pqcc-gpu`: moves sealed pqcc channel frames to the GPU and opens them there.
//!
//! Model weights and activations reach the GPU over PCIe through host memory that the
//! host can read. This crate keeps that traffic sealed: frames of a pqcc channel
//! (`pqcc_core::channel`), or chunks of a sealed model, are copied to VRAM as
//! ciphertext and opened there with an AES-256-GCM kernel that NVRTC compiles at run
//! time ([`kernel`]). The frame key lives in the GPU context; the plaintext exists only
//! in device memory.
//!
//! ## What is checked where
//! - On the host, with `pqcc_core` only: each frame's header decodes strictly, the epoch
//!   is current, the key is live, the replay window accepts the sequence number
//!   ([`pqcc_core::channel::Opener::check`]), and the frames form one tensor exactly
//!   (offsets contiguous from 0 to FINAL, identical metadata:
//!   [`pqcc_core::channel::TensorAssembler`]). Sequence numbers are committed to the
//!   window ([`pqcc_core::channel::Opener::commit`]) only after every tag verified.
//! - On the GPU: decryption and the tag. A frame whose tag fails is zeroed in VRAM by
//!   the GPU itself, in stream order, before the host learns the outcome; the whole
//!   destination is then zeroed and the call fails with [`GpuError::TagMismatch`].
//!
//! ## Confidential-computing mode
//! An H100/H200 in CC mode cannot reach the guest's memory: host memory cannot be
//! registered, page-locked memory is copied through the driver's encrypted bounce
//! buffers, and nothing the GPU would write directly into host memory is available. The
//! CUDA backend reads the mode from NVML when it is created ([`cuda::CcState`]) and the
//! opener then runs only the schedules that need nothing of that
//! ([`cuda::CcState::allows`]); an unknown state counts as on.
//!
//! ## Parts
//! - [`backend`]: the device-memory interface (upload / download / free /
//!   device_info) with an in-memory implementation for tests ([`MemoryBackend`]).
//! - [`cuda`]: the CUDA backend and the GPU opener (cudarc, loaded at run time: this
//!   crate builds and its tests run on machines without CUDA; GPU tests skip with a
//!   printed reason).
//! - [`cpu`]: the CPU fallback, producing the same bytes (it holds plaintext in host
//!   memory, so it is for machines without a GPU and for cross-checks).
//! - [`kernel`]: the CUDA C source and its NVRTC compilation.
//!
//! Design, security argument and measurements: `docs/gpu.md`.

pub mod backend;
pub mod cpu;
pub mod cuda;
mod error;
pub mod kernel;
mod plan;
pub mod sealed;

pub use backend::{Backend, BufferHandle, DeviceInfo, MemoryBackend};
pub use error::{BatchError, GpuError};
pub use plan::next_epoch_key;
