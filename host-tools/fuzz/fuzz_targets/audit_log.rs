//! The audit log checker (`pqcc audit verify`) reads a file anyone with write access
//! to the log could have edited: it must never panic; a log it accepts is also accepted
//! anchored at the head it reported, and an anchor never makes a bad log pass.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pqcc_tools::audit::{verify_bytes, verify_bytes_anchored};

fuzz_target!(|data: &[u8]| {
    let plain = verify_bytes(data);
    // Anchoring at a head the log does not end in must never turn a failure into a
    // success.
    let anchored = verify_bytes_anchored(data, Some(&[0x5a; 32]));
    match plain {
        Err(_) => assert!(anchored.is_err(), "an anchor made a bad log pass"),
        Ok(intact) => {
            let again = verify_bytes_anchored(data, Some(&intact.head)).expect("own head");
            assert_eq!(again.records, intact.records);
        }
    }
});
