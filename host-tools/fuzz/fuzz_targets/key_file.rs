//! Key files (`pqcc keygen` output, read by every command that takes `--key` or
//! `--trust`): the strict parser never panics, and whatever it accepts is the
//! canonical encoding of what it parsed (re-encoding gives the same bytes back).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pqcc_tools::keys::{PublicKey, SecretKey, sniff_kind};

fuzz_target!(|data: &[u8]| {
    let _ = sniff_kind(data);
    if let Ok(sk) = SecretKey::from_file_bytes(data) {
        assert_eq!(
            &sk.to_file_bytes()[..],
            data,
            "secret key file not canonical"
        );
        let _ = sk.signing_key();
        let _ = sk.decapsulation_key();
        // The public half derived from any accepted seed is itself a valid file.
        let pk = sk.public_key();
        let again = PublicKey::from_file_bytes(&pk.to_file_bytes()).expect("derived public key");
        assert!(again == pk);
    }
    if let Ok(pk) = PublicKey::from_file_bytes(data) {
        assert_eq!(pk.to_file_bytes(), data, "public key file not canonical");
        let _ = pk.identity();
        let _ = pk.verifying_key();
        let _ = pk.encapsulation_key();
    }
});
