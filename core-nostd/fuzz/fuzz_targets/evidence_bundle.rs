//! The evidence bundle a guest sends inside its Hello, the GPU evidence list inside it,
//! and the stream framing prefix in front of every message: decoding never panics,
//! whatever decodes re-encodes to the same bytes, and a prefix is accepted only for
//! lengths 1..=max.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pqcc_core::bundle::{
    EvidenceBundle, FRAME_PREFIX_LEN, GpuEvidenceList, frame_prefix, parse_frame_prefix,
};
use pqcc_core::wire::MAX_EVIDENCE_LEN;

fuzz_target!(|data: &[u8]| {
    if let Some(prefix) = data.first_chunk::<FRAME_PREFIX_LEN>() {
        let max = usize::from(data.get(FRAME_PREFIX_LEN).copied().unwrap_or(0)) << 8;
        if let Ok(n) = parse_frame_prefix(*prefix, max) {
            assert!(n >= 1 && n <= max, "prefix length {n} outside 1..={max}");
            assert_eq!(frame_prefix(n).expect("re-encode"), *prefix);
        }
    }
    let mut out = vec![0u8; MAX_EVIDENCE_LEN];
    gpu_list(data, &mut out);
    let Ok(b) = EvidenceBundle::decode(data) else {
        return;
    };
    let n = b.encode(&mut out).expect("a decoded bundle must re-encode");
    assert_eq!(&out[..n], data, "decoding accepted a non-canonical bundle");
    if let Some(gpu) = b.gpu {
        gpu_list(gpu.0, &mut out);
    }
});

fn gpu_list(data: &[u8], out: &mut [u8]) {
    let Ok(l) = GpuEvidenceList::decode(data) else {
        return;
    };
    assert!(!l.blobs.is_empty() && l.blobs.iter().all(|b| !b.0.is_empty()));
    let n = l.encode(out).expect("a decoded GPU list must re-encode");
    assert_eq!(
        &out[..n],
        data,
        "decoding accepted a non-canonical GPU list"
    );
}
