//! The device-memory interface: upload, download, free, device info.
//!
//! This is the interface the workload programs against (the seed's GPU backend
//! interface, in Rust). [`MemoryBackend`] keeps buffers in host memory and stands in
//! for a GPU in tests; [`crate::cuda::CudaBackend`] is the real one.

use std::collections::HashMap;

use zeroize::Zeroize;

use crate::GpuError;

/// An allocation in a backend. Handles are never reused within one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BufferHandle(pub u64);

/// What a backend runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device name (`"NVIDIA H100 80GB HBM3"`, `"host memory"`).
    pub name: String,
    /// Total device memory in bytes.
    pub total_memory: u64,
    /// CUDA compute capability (major, minor); `None` off CUDA.
    pub compute_capability: Option<(u32, u32)>,
    /// Streaming multiprocessors; 0 off CUDA.
    pub multiprocessors: u32,
}

/// Device memory as the workload sees it.
pub trait Backend {
    /// What this backend runs on.
    fn device_info(&self) -> DeviceInfo;
    /// Copies `bytes` into a new device buffer.
    fn upload(&mut self, bytes: &[u8]) -> Result<BufferHandle, GpuError>;
    /// A new device buffer of `len` zero bytes.
    fn alloc_zeroed(&mut self, len: usize) -> Result<BufferHandle, GpuError>;
    /// Copies a device buffer back to the host. (For tests and for data that is meant
    /// to leave the device; opened tensors normally stay in VRAM.)
    fn download(&mut self, handle: BufferHandle) -> Result<Vec<u8>, GpuError>;
    /// Length of a buffer in bytes.
    fn len_of(&self, handle: BufferHandle) -> Result<usize, GpuError>;
    /// Zeroes and releases a buffer.
    fn free(&mut self, handle: BufferHandle) -> Result<(), GpuError>;
}

/// A fake GPU for tests: buffers in host memory, zeroized when freed or dropped.
#[derive(Default)]
pub struct MemoryBackend {
    buffers: HashMap<u64, Vec<u8>>,
    next: u64,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("buffers", &self.buffers.len())
            .finish()
    }
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&mut self, v: Vec<u8>) -> BufferHandle {
        self.next += 1;
        self.buffers.insert(self.next, v);
        BufferHandle(self.next)
    }

    /// Overwrites a buffer in place (what a device-side writer would do).
    pub fn write(
        &mut self,
        handle: BufferHandle,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), GpuError> {
        let b = self
            .buffers
            .get_mut(&handle.0)
            .ok_or(GpuError::UnknownBuffer(handle.0))?;
        let end = offset
            .checked_add(bytes.len())
            .filter(|&e| e <= b.len())
            .ok_or(GpuError::InvalidArgument(
                "write past the end of the buffer",
            ))?;
        b[offset..end].copy_from_slice(bytes);
        Ok(())
    }
}

impl Drop for MemoryBackend {
    fn drop(&mut self) {
        for v in self.buffers.values_mut() {
            v.zeroize();
        }
    }
}

impl Backend for MemoryBackend {
    fn device_info(&self) -> DeviceInfo {
        DeviceInfo {
            name: "host memory".into(),
            total_memory: 0,
            compute_capability: None,
            multiprocessors: 0,
        }
    }

    fn upload(&mut self, bytes: &[u8]) -> Result<BufferHandle, GpuError> {
        Ok(self.insert(bytes.to_vec()))
    }

    fn alloc_zeroed(&mut self, len: usize) -> Result<BufferHandle, GpuError> {
        Ok(self.insert(vec![0; len]))
    }

    fn download(&mut self, handle: BufferHandle) -> Result<Vec<u8>, GpuError> {
        self.buffers
            .get(&handle.0)
            .cloned()
            .ok_or(GpuError::UnknownBuffer(handle.0))
    }

    fn len_of(&self, handle: BufferHandle) -> Result<usize, GpuError> {
        self.buffers
            .get(&handle.0)
            .map(Vec::len)
            .ok_or(GpuError::UnknownBuffer(handle.0))
    }

    fn free(&mut self, handle: BufferHandle) -> Result<(), GpuError> {
        let mut v = self
            .buffers
            .remove(&handle.0)
            .ok_or(GpuError::UnknownBuffer(handle.0))?;
        v.zeroize();
        Ok(())
    }
}
