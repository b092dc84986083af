//! The GPU path on a real device: Wycheproof through the kernel, GPU against the CPU
//! fallback on random tensors, tampering, each opener test under every `OpenSchedule`
//! the device's confidential-computing state allows, the others checked to be refused
//! (the cases are in `common/cases.rs`; `fake_gpu.rs` runs them against FakeCuda). Every
//! test prints why and returns when no CUDA driver, device or NVRTC is present.

mod common;

use common::cases::{self, Device};
use pqcc_gpu::{
    Backend,
    cuda::{CudaBackend, cuda_available},
};

/// The real driver and device 0.
struct RealGpu;

impl Device for RealGpu {
    fn tag(&self) -> &'static str {
        "gpu"
    }

    fn backend(&self, test: &str) -> Option<CudaBackend> {
        match cuda_available() {
            Err(e) => {
                println!("[gpu] {test}: skipped: {e}");
                None
            }
            Ok(()) => {
                let b = CudaBackend::new(0, 4).unwrap_or_else(|e| panic!("{e}"));
                println!("[gpu] {test}: on {:?}", b.device_info());
                Some(b)
            }
        }
    }

    fn another(&self) -> CudaBackend {
        CudaBackend::new(0, 2).unwrap()
    }
}

#[test]
fn wycheproof_aes256_gcm_through_the_gpu_kernel() {
    cases::wycheproof(&RealGpu);
}

#[test]
fn gpu_matches_cpu_on_random_tensors() {
    for schedule in cases::schedules_here(&RealGpu) {
        cases::cross_check(&RealGpu, schedule);
    }
}

#[test]
fn sealed_models_open_into_vram() {
    for schedule in cases::schedules_here(&RealGpu) {
        cases::sealed_model(&RealGpu, schedule);
    }
}

#[test]
fn pinned_frames_open_in_place_of_staging() {
    for schedule in cases::schedules_here(&RealGpu) {
        cases::pinned(&RealGpu, schedule);
    }
}

#[test]
fn tampered_frames_fail_and_leave_a_zeroed_buffer() {
    for schedule in cases::schedules_here(&RealGpu) {
        cases::tamper(&RealGpu, schedule);
    }
}

#[test]
fn batches_open_in_order_and_fail_closed() {
    for schedule in cases::schedules_here(&RealGpu) {
        cases::batch(&RealGpu, schedule);
    }
}

#[test]
fn gpu_rekey_follows_the_channel() {
    cases::rekey(&RealGpu);
}

#[test]
fn a_frame_refused_midway_leaves_a_zeroed_buffer_and_no_commit() {
    for schedule in cases::schedules_here(&RealGpu) {
        cases::refused_midway(&RealGpu, schedule);
    }
}
