//! TDX DCAP verification against the real quote and collateral in `../shared/data/tdx`.

use std::path::PathBuf;

use pqcc_verify::tee::{
    self, Collateral, Measurements, TcbStatus, TeeError, TeePlatform, TeePolicy, tdx::TdxCollateral,
};

/// min(nextUpdate) − 1 of the sample collateral (2025-07-19T10:00:34Z).
const NOW: u64 = 1_752_919_234;

fn data(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/tdx")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn collateral() -> Collateral {
    Collateral {
        tdx: Some(
            TdxCollateral::from_json(&data("tdx_quote_collateral.json")).expect("collateral"),
        ),
        ..Collateral::default()
    }
}

fn quote() -> Vec<u8> {
    data("tdx_quote")
}

fn report_data(q: &[u8]) -> [u8; 64] {
    // v4: header 48 + TD report; report data is the last 64 bytes of the 584-byte body.
    q[48 + 584 - 64..48 + 584].try_into().unwrap()
}

fn check(
    q: &[u8],
    policy: &TeePolicy,
    coll: &Collateral,
    rd: &[u8; 64],
    now: u64,
) -> Result<tee::VerifiedTee, TeeError> {
    tee::verify(TeePlatform::Tdx, q, policy, coll, rd, now)
}

#[test]
fn tdx_quote_is_up_to_date() {
    let q = quote();
    let v = check(
        &q,
        &TeePolicy::report_only(TeePlatform::Tdx),
        &collateral(),
        &report_data(&q),
        NOW,
    )
    .expect("quote verifies");
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
    assert!(v.advisory_ids.is_empty());
    let Measurements::Tdx { mrtd, rtmr, .. } = v.measurements else {
        panic!()
    };
    println!("mrtd {} rtmr0 {}", hex::encode(mrtd), hex::encode(rtmr[0]));
}
