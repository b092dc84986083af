//! Signed statement envelopes: decoding never panics, whatever decodes re-encodes to the
//! same bytes (envelope and body), and nothing verifies without the signer's key.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pqcc_core::{
    secret::Secret,
    sign::{SigningKey, VerifyingKey},
    statement::{self, AnyStatement, Envelope, SIGNED_MAX_LEN, Statement},
};

fn trust() -> &'static [VerifyingKey; 1] {
    static TRUST: OnceLock<[VerifyingKey; 1]> = OnceLock::new();
    TRUST.get_or_init(|| {
        let k = SigningKey::from_seed(&Secret::new([0x5f; 32]));
        [VerifyingKey::from_bytes(k.public_key()).unwrap()]
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::decode(data) {
        let mut out = vec![0u8; SIGNED_MAX_LEN];
        let n = env
            .encode(&mut out)
            .expect("a decoded envelope must re-encode");
        assert_eq!(
            &out[..n],
            data,
            "decoding accepted a non-canonical envelope"
        );
        if let Ok(body) = env.body_unverified() {
            let m = match &body {
                AnyStatement::DriverModule(b) => b.encode(&mut out),
                AnyStatement::BpfProgram(b) => b.encode(&mut out),
                AnyStatement::MemoryReport(b) => b.encode(&mut out),
                AnyStatement::ModelManifest(b) => b.encode(&mut out),
                _ => return,
            }
            .expect("a decoded body must re-encode");
            assert_eq!(
                &out[..m],
                env.body,
                "decoding accepted a non-canonical body"
            );
        }
    }
    assert!(
        statement::verify_any(data, trust()).is_err(),
        "an envelope verified without the signing key"
    );
});
