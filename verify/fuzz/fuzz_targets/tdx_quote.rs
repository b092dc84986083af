//! The TDX quote parsers fed arbitrary bytes: the strict framing check in front of
//! dcap-qvl (`claimed_report_data` runs it, before any signature), and, for inputs that
//! pass it, full DCAP verification against the real collateral in
//! `../shared/data/tdx` when present (the corpus is seeded with the real quote by
//! `.ci/fuzz.sh`). Nothing may panic; nothing made of noise may verify.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pqcc_verify::tee::{self, Collateral, TeePlatform, TeePolicy, tdx::TdxCollateral};

/// Inside the shared collateral's window (`verify/tests/tdx.rs`).
const NOW: u64 = 1_752_919_234;

fn collateral() -> &'static Option<Collateral> {
    static C: OnceLock<Option<Collateral>> = OnceLock::new();
    C.get_or_init(|| {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/tdx/tdx_quote_collateral.json");
        let json = std::fs::read(p).ok()?;
        Some(Collateral {
            tdx: Some(TdxCollateral::from_json(&json).ok()?),
            ..Collateral::default()
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = TdxCollateral::from_json(data);
    let Ok(claimed) = tee::claimed_report_data(TeePlatform::Tdx, data) else {
        return;
    };
    if let Some(coll) = collateral() {
        // Expect report data other than the quote's own: a verified quote is an error.
        let mut expected = claimed;
        expected[0] ^= 1;
        let policy = TeePolicy::report_only(TeePlatform::Tdx);
        let r = tee::verify(TeePlatform::Tdx, data, &policy, coll, &expected, NOW);
        assert!(r.is_err());
    }
});
