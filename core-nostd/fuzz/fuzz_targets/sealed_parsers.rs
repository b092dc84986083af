//! Sealed-model parsers (preamble, tensor table, manifest): never panic; whatever
//! parses re-encodes to exactly the bytes it came from, and every table entry yields
//! metadata and a frame layout without error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pqcc_core::sealed::{FrameRun, Manifest, PREAMBLE_LEN, Preamble, Table};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Preamble::parse(data) {
        assert_eq!(&p.emit()[..], &data[..PREAMBLE_LEN]);
    }
    let (count, rest) = match data.split_first() {
        Some((&c, r)) => (u32::from(c), r),
        None => return,
    };
    if let Ok(t) = Table::parse(rest, count) {
        let entries: Vec<_> = t.entries().map(|e| e.expect("parsed table")).collect();
        let mut out = vec![0u8; rest.len()];
        let n = Table::emit(t.original_header, entries.iter(), &mut out).expect("re-encode");
        assert_eq!(&out[..n], rest);
        for (i, e) in entries.iter().enumerate() {
            let run = FrameRun {
                meta: e.meta(i as u64 + 1).expect("valid metadata"),
                first_seq: 0,
                frame_size: 4096,
            };
            let frames = run.frames().min(4);
            for f in 0..frames {
                let mut h = [0u8; pqcc_core::wire::FRAME_HEADER_MAX_LEN];
                run.header(f, &mut h).expect("header of a parsed entry");
            }
        }
    }
    if let Ok(m) = Manifest::parse(data) {
        let entries: Vec<_> = m.entries().map(|e| e.expect("parsed manifest")).collect();
        let mut out = vec![0u8; data.len()];
        let n = Manifest::emit(m.model_id, entries.iter(), &mut out).expect("re-encode");
        assert_eq!(&out[..n], data);
    }
});
