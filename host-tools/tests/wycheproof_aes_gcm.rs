//! Wycheproof `aes_gcm_test.json` through both AES-256-GCM providers: every test in the
//! groups with a 256-bit key, 96-bit IV and 128-bit tag (the only parameters the
//! channel uses), valid and invalid. The vectors live in the shared data folder beside
//! the repository; a missing file fails the test.

use pqcc_core::{
    Error,
    aead::{Aes256GcmProvider, KEY_LEN, NONCE_LEN, RustCryptoAesGcm, TAG_LEN},
};
use pqcc_tools::aead::AwsLcAesGcm;
use serde_json::Value;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/wycheproof/aes_gcm_test.json"
);

fn hex_field(t: &Value, name: &str) -> Vec<u8> {
    let s = t[name]
        .as_str()
        .unwrap_or_else(|| panic!("test {}: field {name} missing", t["tcId"]));
    hex::decode(s).unwrap_or_else(|e| panic!("test {}: bad hex in {name}: {e}", t["tcId"]))
}

#[derive(Debug, Default)]
struct Counts {
    valid: usize,
    invalid: usize,
    skipped_groups: usize,
    skipped_tests: usize,
}

fn run<A: Aes256GcmProvider>() -> Counts {
    let text = std::fs::read_to_string(VECTORS)
        .unwrap_or_else(|e| panic!("Wycheproof vectors not readable at {VECTORS}: {e}"));
    let doc: Value = serde_json::from_str(&text).expect("aes_gcm_test.json is not JSON");
    assert_eq!(doc["algorithm"], "AES-GCM");
    let mut c = Counts::default();
    for g in doc["testGroups"].as_array().expect("testGroups") {
        let tests = g["tests"].as_array().expect("tests");
        if g["keySize"] != 256 || g["ivSize"] != 96 || g["tagSize"] != 128 {
            c.skipped_groups += 1;
            c.skipped_tests += tests.len();
            continue;
        }
        for t in tests {
            let id = &t["tcId"];
            let key: [u8; KEY_LEN] = hex_field(t, "key").try_into().expect("key length");
            let iv: [u8; NONCE_LEN] = hex_field(t, "iv").try_into().expect("iv length");
            let aad = hex_field(t, "aad");
            let msg = hex_field(t, "msg");
            let ct = hex_field(t, "ct");
            let tag: [u8; TAG_LEN] = hex_field(t, "tag").try_into().expect("tag length");
            let a = A::new(&key);
            let mut sealed = msg.clone();
            let our_tag = a.seal_in_place(&iv, &aad, &mut sealed).unwrap();
            let mut opened = ct.clone();
            let open = a.open_in_place(&iv, &aad, &mut opened, &tag);
            match t["result"].as_str() {
                Some("valid") | Some("acceptable") => {
                    assert_eq!(sealed, ct, "{}: test {id}: ciphertext", A::NAME);
                    assert_eq!(our_tag, tag, "{}: test {id}: tag", A::NAME);
                    assert_eq!(open, Ok(()), "{}: test {id}: open", A::NAME);
                    assert_eq!(opened, msg, "{}: test {id}: plaintext", A::NAME);
                    c.valid += 1;
                }
                Some("invalid") => {
                    assert_eq!(
                        open,
                        Err(Error::Decrypt),
                        "{}: test {id} ({}): accepted an invalid input",
                        A::NAME,
                        t["comment"]
                    );
                    assert!(
                        (our_tag, &sealed) != (tag, &ct),
                        "{}: test {id}: sealing produced the invalid tag",
                        A::NAME
                    );
                    if A::NAME == AwsLcAesGcm::NAME {
                        assert!(opened.iter().all(|&b| b == 0), "test {id}: not zeroed");
                    }
                    c.invalid += 1;
                }
                other => panic!("test {id}: unknown result {other:?}"),
            }
        }
    }
    c
}

#[test]
fn wycheproof_aes_256_gcm_aws_lc() {
    let c = run::<AwsLcAesGcm>();
    println!(
        "wycheproof aes_gcm_test.json via aws-lc: {} valid + {} invalid passed \
         (skipped {} tests in {} groups with other key/IV/tag sizes)",
        c.valid, c.invalid, c.skipped_tests, c.skipped_groups
    );
    assert!(
        c.valid >= 30 && c.invalid >= 20,
        "too few vectors ran: {c:?}"
    );
}

#[test]
fn wycheproof_aes_256_gcm_rustcrypto() {
    let c = run::<RustCryptoAesGcm>();
    println!(
        "wycheproof aes_gcm_test.json via rustcrypto: {} valid + {} invalid passed \
         (skipped {} tests in {} groups with other key/IV/tag sizes)",
        c.valid, c.invalid, c.skipped_tests, c.skipped_groups
    );
    assert!(
        c.valid >= 30 && c.invalid >= 20,
        "too few vectors ran: {c:?}"
    );
}
