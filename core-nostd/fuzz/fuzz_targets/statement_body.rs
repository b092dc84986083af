//! Statement bodies of every kind (the first byte picks the kind): decoding never panics
//! and whatever decodes re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pqcc_core::statement::{AnyStatement, Kind, MAX_BODY_LEN, Statement};

fuzz_target!(|data: &[u8]| {
    let Some((&k, body)) = data.split_first() else {
        return;
    };
    let kind = Kind::ALL[usize::from(k) % Kind::ALL.len()];
    let Ok(s) = AnyStatement::decode(kind, body) else {
        return;
    };
    assert_eq!(s.kind(), kind);
    let mut out = vec![0u8; MAX_BODY_LEN];
    let n = match &s {
        AnyStatement::DriverModule(b) => b.encode(&mut out),
        AnyStatement::BpfProgram(b) => b.encode(&mut out),
        AnyStatement::MemoryReport(b) => b.encode(&mut out),
        AnyStatement::ModelManifest(b) => b.encode(&mut out),
        _ => return,
    }
    .expect("a decoded body must re-encode");
    assert_eq!(&out[..n], body, "decoding accepted a non-canonical body");
});
