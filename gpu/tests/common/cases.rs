//! The opener tests, written once and run against any CUDA driver: the real one on a GPU
//! (`gpu/tests/gpu.rs`) and FakeCuda, the test fake standing in for one
//! (`gpu/tests/fake_gpu.rs`).

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use pqcc_core::{Error, channel::Limits, secret::Secret};
use pqcc_gpu::{
    Backend, BatchError, GpuError, MemoryBackend,
    cpu::CpuOpener,
    cuda::{CudaBackend, GpuOpener, OpenSchedule, PinnedBuffer, resident_applies},
    next_epoch_key,
};

use super::*;

/// Every schedule; the opener tests run under each.
pub const SCHEDULES: [OpenSchedule; 3] = [
    OpenSchedule::PerTensor,
    OpenSchedule::Persistent,
    OpenSchedule::Resident,
];

/// Where the tests get their CUDA backends.
pub trait Device {
    /// Prefix of the printed lines ("gpu", "fake-gpu").
    fn tag(&self) -> &'static str;
    /// A backend with 4 streams, or `None` after printing why the test is skipped.
    fn backend(&self, test: &str) -> Option<CudaBackend>;
    /// A second backend with 2 streams (the device is known to be there).
    fn another(&self) -> CudaBackend;
}

/// While set, the openers these cases make try schedules never run in
/// confidential-computing mode (`GpuOpener::allow_unverified_in_cc_mode`): FakeCuda's
/// CC-mode tests run `Resident` through the cases that way.
pub static UNVERIFIED_IN_CC: AtomicBool = AtomicBool::new(false);

pub fn gpu_opener(b: CudaBackend, key: &[u8; 32]) -> GpuOpener {
    let mut g = GpuOpener::new(b, Secret::new(*key), PREFIX, Limits::default(), NOW).unwrap();
    g.allow_unverified_in_cc_mode(UNVERIFIED_IN_CC.load(Ordering::Relaxed));
    g
}

pub fn gpu_opener_with(b: CudaBackend, key: &[u8; 32], schedule: OpenSchedule) -> GpuOpener {
    let mut g = gpu_opener(b, key);
    g.set_schedule(schedule);
    g
}

/// The schedules the device runs in its confidential-computing state
/// (`CcState::allows`), which the callers then test. For each schedule the state does not
/// allow, checks that the opener refuses a tensor under it before anything runs
/// (`Unavailable`, the destination zeroed, nothing committed: the tensor then opens under
/// the default schedule). Without a device, every schedule (the cases skip themselves).
pub fn schedules_here(dev: &dyn Device) -> Vec<OpenSchedule> {
    let Some(b) = dev.backend("confidential-computing state") else {
        return SCHEDULES.to_vec();
    };
    let cc = b.cc_state().clone();
    println!("[{}] confidential-computing state: {cc:?}", dev.tag());
    let mut rng = Rng(0xCC);
    let key = rng.key();
    let mut s = sealer(&key);
    let mut g = gpu_opener(b, &key);
    let mut here = Vec::new();
    for (id, schedule) in SCHEDULES.into_iter().enumerate() {
        let Err(why) = g.schedule_allowed(schedule) else {
            here.push(schedule);
            continue;
        };
        assert!(matches!(why, GpuError::Unavailable(_)), "{why}");
        let data = rng.bytes(70_000);
        let frames = seal_tensor(&mut s, id as u64, &data, 30_000);
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let dst = g.backend().upload(&vec![0x77; data.len()]).unwrap();
        g.set_schedule(schedule);
        assert_eq!(g.open_tensor_into(NOW, &refs, dst).unwrap_err(), why);
        assert!(g.backend().download(dst).unwrap().iter().all(|&x| x == 0));
        g.set_schedule(OpenSchedule::default());
        g.open_tensor_into(NOW, &refs, dst).unwrap();
        assert_eq!(g.backend().download(dst).unwrap(), data);
        g.backend().free(dst).unwrap();
        println!(
            "[{}] {schedule:?}: not run in this state, and refused: {why}",
            dev.tag()
        );
    }
    here
}

/// `frames` one after another in a new pinned buffer, and where each lies.
pub fn in_pinned(g: &mut GpuOpener, frames: &[Vec<u8>]) -> (PinnedBuffer, Vec<Range<usize>>) {
    let total: usize = frames.iter().map(Vec::len).sum();
    let mut pinned = g.backend().alloc_pinned(total).unwrap();
    let mut ranges = Vec::new();
    let mut at = 0;
    for f in frames {
        pinned.as_mut_slice()[at..at + f.len()].copy_from_slice(f);
        ranges.push(at..at + f.len());
        at += f.len();
    }
    (pinned, ranges)
}

pub fn cpu_opener(key: &[u8; 32]) -> CpuOpener<MemoryBackend> {
    CpuOpener::new(
        MemoryBackend::new(),
        &Secret::new(*key),
        PREFIX,
        Limits::default(),
        NOW,
    )
}

/// Wycheproof AES-GCM through the kernel (`CudaBackend::open_raw_into`).
pub fn wycheproof(dev: &dyn Device) {
    let Some(mut b) = dev.backend("wycheproof") else {
        return;
    };
    let (vectors, skipped) = wycheproof_aes256_gcm();
    let (mut valid, mut invalid) = (0, 0);
    for v in &vectors {
        let key = b
            .upload_key(Secret::new(v.key.as_slice().try_into().unwrap()))
            .unwrap();
        let iv: [u8; 12] = v.iv.as_slice().try_into().unwrap();
        let tag: [u8; 16] = v.tag.as_slice().try_into().unwrap();
        let dst = b.upload(&vec![0xa5; v.ct.len()]).unwrap();
        let r = b.open_raw_into(&key, &iv, &v.aad, &v.ct, &tag, dst);
        let out = b.download(dst).unwrap();
        if v.valid {
            assert!(r.is_ok(), "tcId {}: {r:?}", v.id);
            assert_eq!(out, v.msg, "tcId {}", v.id);
            valid += 1;
        } else {
            assert_eq!(r, Err(GpuError::TagMismatch { frame: 0 }), "tcId {}", v.id);
            assert!(
                out.iter().all(|&x| x == 0),
                "tcId {}: buffer not zeroed",
                v.id
            );
            invalid += 1;
        }
        b.free(dst).unwrap();
    }
    println!(
        "[wycheproof {}] {valid} valid, {invalid} invalid (zeroed), {skipped} skipped (not AES-256/96-bit IV/128-bit tag)",
        dev.tag()
    );
    assert!(valid > 20 && invalid > 20);
}

/// The tensor shapes (length, chunk) of [`cross_check`].
pub const CROSS_CHECK_SHAPES: &[(usize, usize)] = &[
    (0, 1),
    (1, 1),
    (15, 16),
    (16, 16),
    (17, 16),
    (4095, 4095),
    (65_539, 65_536),
    (100_000, 1000), // unaligned chunk offsets: the kernel's edge path
    (7_003, 1000),   // the same within one resident launch (8 frames)
    (1 << 20, 1 << 20),
    ((1 << 20) + 5, 1 << 18),
    (5 << 20, 1 << 20),
    (16 << 20, 16 << 20),  // the largest frame
    (40 << 20, 4 << 20),   // ten frames over four streams
    (64 * 65_536, 65_536), // 64 small frames
];

/// GPU against the CPU fallback on random tensors of many shapes.
pub fn cross_check(dev: &dyn Device, schedule: OpenSchedule) {
    cross_check_shapes(dev, schedule, CROSS_CHECK_SHAPES);
}

/// GPU against the CPU fallback on random tensors of the given (length, chunk) shapes.
pub fn cross_check_shapes(dev: &dyn Device, schedule: OpenSchedule, cases: &[(usize, usize)]) {
    let Some(b) = dev.backend("cross-check") else {
        return;
    };
    let mut rng = Rng(0xdead_beef);
    let key = rng.key();
    let mut s = sealer(&key);
    let mut g = gpu_opener_with(b, &key, schedule);
    let mut c = cpu_opener(&key);
    for (id, &(len, chunk)) in cases.iter().enumerate() {
        // `Resident` hands the tensors it does not take to the `Persistent` path; of those,
        // the small ones still run here, the large ones only under `Persistent`.
        let frames_n = len.div_ceil(chunk).max(1);
        if schedule == OpenSchedule::Resident && !resident_applies(frames_n, len) && len > 1 << 20 {
            continue;
        }
        let data = rng.bytes(len);
        let frames = seal_tensor(&mut s, id as u64, &data, chunk);
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let hg = g
            .open_tensor(NOW, &refs)
            .unwrap_or_else(|e| panic!("len {len} chunk {chunk}: {e}"));
        let hc = c.open_tensor(NOW, &refs).unwrap();
        let (og, oc) = (
            g.backend().download(hg).unwrap(),
            c.backend().download(hc).unwrap(),
        );
        assert_eq!(oc, data);
        if og != data {
            let first = og.iter().zip(&data).position(|(a, b)| a != b);
            panic!("len {len} chunk {chunk}: GPU output differs at byte {first:?}");
        }
        g.backend().free(hg).unwrap();
        println!(
            "[{}] cross-check ({schedule:?}) len {len} chunk {chunk}: {} frames identical",
            dev.tag(),
            frames.len()
        );
    }
}

/// Frames lying in pinned memory open in place of staging; a replay is refused.
pub fn pinned(dev: &dyn Device, schedule: OpenSchedule) {
    let Some(b) = dev.backend("pinned") else {
        return;
    };
    let mut rng = Rng(77);
    let key = rng.key();
    let mut s = sealer(&key);
    let mut g = gpu_opener_with(b, &key, schedule);
    let data = rng.bytes(3 << 20);
    let frames = seal_tensor(&mut s, 1, &data, 1 << 20);
    let (pinned, ranges) = in_pinned(&mut g, &frames);
    let dst = g.backend().alloc_zeroed(data.len()).unwrap();
    g.open_tensor_pinned(NOW, &pinned, &ranges, dst).unwrap();
    assert_eq!(g.backend().download(dst).unwrap(), data);
    let e = g
        .open_tensor_pinned(NOW, &pinned, &ranges, dst)
        .unwrap_err();
    assert!(
        matches!(
            e,
            GpuError::Channel {
                frame: 0,
                error: Error::Replay { .. }
            }
        ),
        "{e}"
    );
}

/// Tampered ciphertext or tag, and a wrong key: refused, destination zeroed, nothing
/// committed.
pub fn tamper(dev: &dyn Device, schedule: OpenSchedule) {
    tamper_sized(dev, schedule, 1 << 20);
}

/// [`tamper`] with three frames of `chunk` bytes (more than 5000).
pub fn tamper_sized(dev: &dyn Device, schedule: OpenSchedule, chunk: usize) {
    let Some(b) = dev.backend("tamper") else {
        return;
    };
    let mut rng = Rng(4242);
    let key = rng.key();
    let mut s = sealer(&key);
    let mut g = gpu_opener_with(b, &key, schedule);
    let data = rng.bytes(3 * chunk);
    let frames = seal_tensor(&mut s, 9, &data, chunk);
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    for (what, frame, at_end) in [("ciphertext", 1usize, 5000usize), ("tag", 2, 3)] {
        let mut bad = frames.clone();
        let n = bad[frame].len();
        bad[frame][n - at_end] ^= 0x40;
        let bad_refs: Vec<&[u8]> = bad.iter().map(Vec::as_slice).collect();
        let dst = g.backend().upload(&vec![0xa5; data.len()]).unwrap();
        let e = g.open_tensor_into(NOW, &bad_refs, dst).unwrap_err();
        assert_eq!(e, GpuError::TagMismatch { frame }, "{what}");
        let out = g.backend().download(dst).unwrap();
        assert!(out.iter().all(|&x| x == 0), "{what}: buffer not zeroed");
        g.backend().free(dst).unwrap();
        println!(
            "[{}] tampered {what} in frame {frame} ({schedule:?}): {e}; buffer zeroed",
            dev.tag()
        );
    }
    // A wrong key: every tag fails.
    let mut other = gpu_opener_with(dev.another(), &rng.key(), schedule);
    assert_eq!(
        other.open_tensor(NOW, &refs).unwrap_err(),
        GpuError::TagMismatch { frame: 0 }
    );
    // Nothing was committed: the genuine frames open, once.
    let h = g.open_tensor(NOW, &refs).unwrap();
    assert_eq!(g.backend().download(h).unwrap(), data);
    assert!(g.open_tensor(NOW, &refs).is_err());
    // After a tensor whose verdicts were all good, a bad one with as many frames still
    // fails: no verdict of the earlier tensor is read for it.
    let mut next = seal_tensor(&mut s, 10, &data, chunk);
    let n = next[2].len();
    next[2][n - 1] ^= 1;
    let next_refs: Vec<&[u8]> = next.iter().map(Vec::as_slice).collect();
    assert_eq!(
        g.open_tensor(NOW, &next_refs).unwrap_err(),
        GpuError::TagMismatch { frame: 2 }
    );
}

/// The opener follows the channel's rekey.
pub fn rekey(dev: &dyn Device) {
    let Some(b) = dev.backend("rekey") else {
        return;
    };
    let mut rng = Rng(31337);
    let key = rng.key();
    let mut s = sealer(&key);
    let mut g = gpu_opener(b, &key);
    s.rekey(NOW).unwrap();
    g.rekey(NOW, next_epoch_key(&Secret::new(key), 1)).unwrap();
    let data = rng.bytes(100_000);
    let frames = seal_tensor(&mut s, 2, &data, 30_000);
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let h = g.open_tensor(NOW, &refs).unwrap();
    assert_eq!(g.backend().download(h).unwrap(), data);
}

/// A frame refused by the host checks after earlier ones were enqueued.
pub fn refused_midway(dev: &dyn Device, schedule: OpenSchedule) {
    let Some(b) = dev.backend("refused midway") else {
        return;
    };
    let mut rng = Rng(0x5eed);
    let key = rng.key();
    let mut s = sealer(&key);
    let mut g = gpu_opener_with(b, &key, schedule);
    let data = rng.bytes(8 << 20);
    let frames = seal_tensor(&mut s, 1, &data, 1 << 20);
    let other = seal_tensor(&mut s, 2, &rng.bytes(1 << 20), 1 << 20);
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    // Frame 5 belongs to another tensor: refused after frames 0..4 were already enqueued.
    let mut spliced = refs.clone();
    spliced[5] = &other[0];
    let dst = g.backend().upload(&vec![0xa5; data.len()]).unwrap();
    let e = g.open_tensor_into(NOW, &spliced, dst).unwrap_err();
    assert!(matches!(e, GpuError::Channel { frame: 5, .. }), "{e}");
    assert!(g.backend().download(dst).unwrap().iter().all(|&x| x == 0));
    // Truncated (no FINAL): refused after every frame was enqueued.
    let e = g.open_tensor_into(NOW, &refs[..7], dst).unwrap_err();
    assert!(
        matches!(
            e,
            GpuError::Channel {
                error: Error::TensorTruncated,
                ..
            }
        ),
        "{e}"
    );
    // Nothing was committed.
    g.open_tensor_into(NOW, &refs, dst).unwrap();
    assert_eq!(g.backend().download(dst).unwrap(), data);
    println!(
        "[{}] refusals midway ({schedule:?}): destination zeroed, nothing committed",
        dev.tag()
    );
}

/// A pinned buffer of sealed tensors, their data, and each one's frame ranges.
type Batch = (PinnedBuffer, Vec<Vec<u8>>, Vec<Vec<Range<usize>>>);

/// Tensors of `sizes` bytes (cut into `chunk`-byte frames) sealed one after another,
/// all in one pinned buffer: the data, and each tensor's frame ranges.
fn batch_in_pinned(
    g: &mut GpuOpener,
    s: &mut Sealer,
    rng: &mut Rng,
    first_id: u64,
    sizes: &[(usize, usize)],
) -> Batch {
    let mut all = Vec::new();
    let mut data = Vec::new();
    let mut counts = Vec::new();
    for (i, &(len, chunk)) in sizes.iter().enumerate() {
        let d = rng.bytes(len);
        let frames = seal_tensor(s, first_id + i as u64, &d, chunk);
        counts.push(frames.len());
        all.extend(frames);
        data.push(d);
    }
    let (pinned, ranges) = in_pinned(g, &all);
    let mut per = Vec::new();
    let mut at = 0;
    for n in counts {
        per.push(ranges[at..at + n].to_vec());
        at += n;
    }
    (pinned, data, per)
}

/// `GpuOpener::open_tensors_pinned`: a batch of tensors (those the resident kernel
/// takes, one it does not, an empty one) opens in order into distinct destinations; a
/// tampered tensor midway stops the batch there (the ones before delivered and
/// committed, it and the one queued after it zeroed and not committed, the rest
/// untouched); a destination given twice, and a tensor repeated within a batch (the
/// replay window refuses it at commit), fail closed.
pub fn batch(dev: &dyn Device, schedule: OpenSchedule) {
    let Some(b) = dev.backend("batch") else {
        return;
    };
    let mut rng = Rng(0xBA7C);
    let key = rng.key();
    let mut s = sealer(&key);
    let mut g = gpu_opener_with(b, &key, schedule);
    // 9 frames: not the resident kernel's; the others are (6 frames: more than the
    // streams, so in a batch only each stream's last frame has an arrival flag).
    let sizes = [
        (300_000, 100_000),
        (1 << 20, 256 << 10),
        (0, 1),
        (90_000, 10_000),
        (5000, 5000),
        (60_000, 10_000),
        (70_001, 65_536),
    ];
    let (pinned, data, ranges) = batch_in_pinned(&mut g, &mut s, &mut rng, 1, &sizes);
    let dsts: Vec<_> = data
        .iter()
        .map(|d| g.backend().alloc_zeroed(d.len().max(1)).unwrap())
        .collect();
    let batch: Vec<_> = ranges
        .iter()
        .map(Vec::as_slice)
        .zip(dsts.iter().copied())
        .collect();
    g.open_tensors_pinned(NOW, &pinned, &batch).unwrap();
    for (d, h) in data.iter().zip(&dsts) {
        assert_eq!(
            &g.backend().download(*h).unwrap()[..d.len()],
            &d[..],
            "{schedule:?}"
        );
    }
    // Committed: the same batch again is a replay of its first frame.
    let e = g.open_tensors_pinned(NOW, &pinned, &batch).unwrap_err();
    assert_replay(&e, 0);

    // Tensor 2 of 5 tampered (a ciphertext byte of its second frame).
    let sizes = [(200_000, 100_000); 5];
    let (mut pinned, data, ranges) = batch_in_pinned(&mut g, &mut s, &mut rng, 100, &sizes);
    let bad = ranges[2][1].start + 300;
    pinned.as_mut_slice()[bad] ^= 0x40;
    let marker = vec![0x5Au8; 200_000];
    let dsts: Vec<_> = (0..5)
        .map(|_| g.backend().upload(&marker).unwrap())
        .collect();
    let batch: Vec<_> = ranges
        .iter()
        .map(Vec::as_slice)
        .zip(dsts.iter().copied())
        .collect();
    let e = g.open_tensors_pinned(NOW, &pinned, &batch).unwrap_err();
    assert_eq!(e.tensor, 2, "{schedule:?}: {e}");
    assert_eq!(e.error, GpuError::TagMismatch { frame: 1 }, "{schedule:?}");
    for t in 0..2 {
        assert_eq!(
            g.backend().download(dsts[t]).unwrap(),
            data[t],
            "{schedule:?}"
        );
    }
    assert_eq!(g.backend().download(dsts[2]).unwrap(), vec![0u8; 200_000]);
    // Under Resident, the tensors after it that were already on the GPU beside it (up to
    // the batch depth) are zeroed; the others are untouched.
    let depth = if schedule == OpenSchedule::Resident {
        g.batch_depth()
    } else {
        1
    };
    for (t, d) in dsts.iter().enumerate().skip(3) {
        let got = g.backend().download(*d).unwrap();
        if t < 2 + depth {
            assert!(got == marker || got == vec![0u8; 200_000], "{schedule:?}");
        } else {
            assert_eq!(got, marker, "{schedule:?}: tensor {t} untouched");
        }
    }
    // Nothing of tensors 2..5 was committed: repaired, they open.
    pinned.as_mut_slice()[bad] ^= 0x40;
    g.open_tensors_pinned(NOW, &pinned, &batch[2..]).unwrap();
    for t in 2..5 {
        assert_eq!(
            g.backend().download(dsts[t]).unwrap(),
            data[t],
            "{schedule:?}"
        );
    }

    // A destination named twice: refused before anything runs.
    let sizes = [(1000, 1000), (1000, 1000)];
    let (pinned, small, ranges) = batch_in_pinned(&mut g, &mut s, &mut rng, 200, &sizes);
    let e = g
        .open_tensors_pinned(
            NOW,
            &pinned,
            &[(&ranges[0], dsts[0]), (&ranges[1], dsts[0])],
        )
        .unwrap_err();
    assert_eq!(
        (e.tensor, e.error),
        (
            1,
            GpuError::InvalidArgument("a destination appears twice in the batch")
        )
    );
    // The same tensor twice: delivered once, the repeat refused by the replay window.
    let e = g
        .open_tensors_pinned(
            NOW,
            &pinned,
            &[(&ranges[0], dsts[0]), (&ranges[0], dsts[1])],
        )
        .unwrap_err();
    assert_replay(&e, 1);
    assert_eq!(
        &g.backend().download(dsts[0]).unwrap()[..1000],
        &small[0][..]
    );
    assert_eq!(g.backend().download(dsts[1]).unwrap(), vec![0u8; 200_000]);
    for h in dsts {
        g.backend().free(h).unwrap();
    }
}

/// `e` is the replay window's refusal of a frame of batch tensor `tensor`.
fn assert_replay(e: &BatchError, tensor: usize) {
    assert_eq!(e.tensor, tensor, "{e}");
    assert!(
        matches!(
            e.error,
            GpuError::Channel {
                error: Error::Replay { .. },
                ..
            }
        ),
        "{e}"
    );
}

/// A sealed Hugging Face-layout model (two shards, an index, a config) sealed by
/// `pqcc-sealed` with 16 KiB frames, opened into VRAM by `pqcc_gpu::sealed::load_sealed`
/// under `schedule`: every tensor equals the CPU opener's bytes. Then one changed byte of
/// the second shard's ciphertext: the load fails naming file and tensor, and every
/// buffer is freed (the caller checks the allocations).
pub fn sealed_model(dev: &dyn Device, schedule: OpenSchedule) {
    use pqcc_core::wire::DType;
    use pqcc_sealed::{SealOptions, SealedModel, safetensors::encode, seal_dir};
    let Some(b) = dev.backend("sealed model") else {
        return;
    };
    let mut rng = Rng(0x5ea1 + schedule as u64);
    let dir = std::env::temp_dir().join(format!(
        "pqcc-gpu-sealed-{}-{}-{schedule:?}",
        dev.tag(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let src = dir.join("m");
    std::fs::create_dir_all(&src).unwrap();
    let (a, c, d) = (rng.bytes(70_000), rng.bytes(16_384 * 3), rng.bytes(4_000));
    std::fs::write(
        src.join("model-00001-of-00002.safetensors"),
        encode(
            &[
                ("model.embed_tokens.weight", DType::BF16, &[35_000], &a),
                ("model.norm.weight", DType::F32, &[0], &[]),
            ],
            None,
        )
        .unwrap(),
    )
    .unwrap();
    std::fs::write(
        src.join("model-00002-of-00002.safetensors"),
        encode(
            &[
                ("model.layers.0.mlp.weight", DType::F32, &[3, 4_096], &c),
                ("lm_head.weight", DType::U8, &[4_000], &d),
            ],
            None,
        )
        .unwrap(),
    )
    .unwrap();
    std::fs::write(src.join("config.json"), b"{}").unwrap();
    let dek = Secret::new(rng.key());
    let mut o = SealOptions::new("test/sealed@v1");
    o.frame_size = 16_384;
    o.progress = false;
    seal_dir(&src, &dir.join("s"), &dek, &o).unwrap();
    let model = SealedModel::open(&dir.join("s"), &dek, Some("test/sealed@v1")).unwrap();
    let cpu = model.load_tensors().unwrap();

    let mut vram = pqcc_gpu::sealed::load_sealed(b, &model, schedule)
        .unwrap_or_else(|e| panic!("{schedule:?}: {e}"));
    assert_eq!(vram.tensors().len(), 4);
    assert_eq!(vram.bytes(), 70_000 + 16_384 * 3 + 4_000);
    for t in vram.tensors().to_vec() {
        let want = cpu[&t.name].data();
        match t.buffer {
            Some(h) => assert_eq!(vram.backend().download(h).unwrap(), want, "{}", t.name),
            None => assert!(want.is_empty()),
        }
        assert_eq!(t.shape, cpu[&t.name].shape);
    }
    vram.free().unwrap();

    // One changed byte in the second shard's ciphertext.
    let shard = dir.join("s/model-00002-of-00002.safetensors.sealed");
    let mut bytes = std::fs::read(&shard).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    std::fs::write(&shard, bytes).unwrap();
    let model = SealedModel::open(&dir.join("s"), &dek, None).unwrap();
    let e = pqcc_gpu::sealed::load_sealed(dev.another(), &model, schedule).unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("model-00002-of-00002.safetensors") && m.contains("lm_head.weight"),
        "{m}"
    );
    assert!(
        matches!(
            e,
            pqcc_gpu::sealed::LoadError::Gpu {
                error: GpuError::TagMismatch { .. },
                ..
            }
        ),
        "{e:?}"
    );
    println!(
        "[{}] {schedule:?}: sealed model opened in VRAM; tampered shard refused: {m}",
        dev.tag()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
