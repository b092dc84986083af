//! AMD's CRL for the SEV-SNP VCEK chain (issue 29).
//!
//! The parsing, signature, window, extension and revocation logic is tested with CRLs
//! built here and signed by a generated RSA key (the pinned ARKs' private keys are
//! AMD's), through `snp::crl::Crl::check`, which takes the issuer key as an argument.
//! End to end, `tee::verify` with the real Milan report shows that the verifier checks
//! CRLs with the pinned ARK only and that `require_crl` is enforced.
//!
//! Real AMD CRLs are checked by `real_amd_crls_and_genoa_v3_report` when
//! `PQCC_SNP_EXTRA` names a directory holding them (see that test); the repository
//! carries no copy.

// Test PRNG helpers truncate on purpose.
#![allow(clippy::cast_possible_truncation)]

use std::path::PathBuf;
use std::time::Duration;

use der::{Decode, Encode};
use pqcc_verify::tee::{
    self, CertRole, Collateral, TeeError, TeePlatform, TeePolicy,
    snp::{self, Product, crl::Crl},
};
use rsa::rand_core::{TryCryptoRng, TryRng};
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use sha2::Digest;
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::time::Time;

/// 2025-01-01T00:00:00Z, inside the Milan sample's certificate windows.
const NOW: u64 = 1_735_689_600;
const DAY: u64 = 86_400;
const MEASUREMENT: &str = "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f";
/// The Milan ASK's serial (`ask_milan.pem`: 01 00 01).
const MILAN_ASK_SERIAL: [u8; 3] = [0x01, 0x00, 0x01];

/// RSASSA-PSS SHA-384 / MGF1-SHA-384 / salt 48 in strict DER, as AMD's CRLs carry it.
const PSS_DER: [u8; 67] = [
    0x30, 0x41, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30, 0x34, 0xa0,
    0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00,
    0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30,
    0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0xa2, 0x03,
    0x02, 0x01, 0x30,
];
/// sha256WithRSAEncryption (PKCS#1 v1.5).
const RSA_SHA256: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
];

fn data(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/sev-snp")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A deterministic test RNG (SHA-256 in counter mode): test keys only.
struct TestRng(u64);
impl TryRng for TestRng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for chunk in dst.chunks_mut(32) {
            self.0 += 1;
            let block = sha2::Sha256::digest(self.0.to_le_bytes());
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        Ok(())
    }
}
impl TryCryptoRng for TestRng {}

fn test_key(seed: u64) -> rsa::PrivateKey {
    rsa::PrivateKey::new(&mut TestRng(seed), 2048).expect("test key")
}

fn ark_name(product: Product) -> Name {
    let root = snp::chain::PINNED
        .iter()
        .find(|r| r.product == product)
        .expect("pinned");
    x509_cert::Certificate::from_der(root.ark)
        .expect("ARK parses")
        .tbs_certificate()
        .subject()
        .clone()
}

fn time(secs: u64) -> Time {
    Time::UtcTime(der::asn1::UtcTime::from_unix_duration(Duration::from_secs(secs)).unwrap())
}

/// What a test CRL holds.
struct Spec {
    issuer: Name,
    this_update: u64,
    next_update: Option<u64>,
    revoked: Vec<Vec<u8>>,
    alg: Vec<u8>,
    critical_ext: bool,
}

impl Spec {
    fn new(issuer: Name) -> Spec {
        Spec {
            issuer,
            this_update: NOW - DAY,
            next_update: Some(NOW + 30 * DAY),
            revoked: Vec::new(),
            alg: PSS_DER.to_vec(),
            critical_ext: false,
        }
    }

    /// DER of the CRL signed with `key` (RSASSA-PSS SHA-384, salt 48).
    fn sign(&self, key: &rsa::PrivateKey) -> Vec<u8> {
        let alg = AlgorithmIdentifierOwned::from_der(&self.alg).unwrap();
        let crl_number = Extension {
            extn_id: der::oid::ObjectIdentifier::new_unwrap("2.5.29.20"),
            critical: false,
            extn_value: der::asn1::OctetString::new(vec![0x02, 0x01, 0x06]).unwrap(),
        };
        let mut exts = vec![crl_number];
        if self.critical_ext {
            // issuingDistributionPoint, critical (an indirect or partial CRL).
            exts.push(Extension {
                extn_id: der::oid::ObjectIdentifier::new_unwrap("2.5.29.28"),
                critical: true,
                extn_value: der::asn1::OctetString::new(vec![0x30, 0x00]).unwrap(),
            });
        }
        let revoked = self
            .revoked
            .iter()
            .map(|s| RevokedCert {
                serial_number: SerialNumber::<x509_cert::certificate::Rfc5280>::new(s).unwrap(),
                revocation_date: time(NOW - 10 * DAY),
                crl_entry_extensions: None,
            })
            .collect::<Vec<_>>();
        let tbs = TbsCertList {
            version: x509_cert::Version::V2,
            signature: alg.clone(),
            issuer: self.issuer.clone(),
            this_update: time(self.this_update),
            next_update: self.next_update.map(time),
            revoked_certificates: (!revoked.is_empty()).then_some(revoked),
            crl_extensions: Some(exts),
        };
        let tbs_der = tbs.to_der().unwrap();
        let sk = rsa::pss::SigningKey::<sha2::Sha384>::new_with_salt_len(key.clone(), 48);
        let sig = sk.sign_with_rng(&mut TestRng(7), &tbs_der).to_vec();
        CertificateList {
            tbs_cert_list: tbs,
            signature_algorithm: alg,
            signature: der::asn1::BitString::from_bytes(&sig).unwrap(),
        }
        .to_der()
        .unwrap()
    }
}

fn check(der: &[u8], key: &rsa::PrivateKey, serial: &[u8], now: u64) -> Result<(), TeeError> {
    Crl::parse(der)?.check(&key.to_public_key(), serial, now)
}

#[test]
fn crl_checks_signature_window_extensions_and_serial() {
    let key = test_key(1);
    let other_key = test_key(2);
    let issuer = ark_name(Product::Milan);
    let good = Spec::new(issuer.clone()).sign(&key);
    let crl = Crl::parse(&good).expect("parses");
    assert_eq!(crl.issuer(), &issuer);
    check(&good, &key, &MILAN_ASK_SERIAL, NOW).expect("valid, ASK not listed");

    // Signature: another key, a changed byte of the signed part, another algorithm.
    assert_eq!(
        check(&good, &other_key, &MILAN_ASK_SERIAL, NOW),
        Err(TeeError::CrlSignatureInvalid)
    );
    let mut tampered = good.clone();
    let pos = tampered
        .windows(3)
        .position(|w| w == [0x02, 0x01, 0x06])
        .expect("CRL number");
    tampered[pos + 2] = 0x07;
    assert_eq!(
        check(&tampered, &key, &MILAN_ASK_SERIAL, NOW),
        Err(TeeError::CrlSignatureInvalid)
    );
    let mut salt32 = Spec::new(issuer.clone());
    salt32.alg = PSS_DER.to_vec();
    *salt32.alg.last_mut().unwrap() = 0x20;
    assert_eq!(
        check(&salt32.sign(&key), &key, &MILAN_ASK_SERIAL, NOW),
        Err(TeeError::CrlSignatureInvalid)
    );
    let mut pkcs1 = Spec::new(issuer.clone());
    pkcs1.alg = RSA_SHA256.to_vec();
    assert_eq!(
        check(&pkcs1.sign(&key), &key, &MILAN_ASK_SERIAL, NOW),
        Err(TeeError::CrlSignatureInvalid)
    );

    // Window: thisUpdate in the future (beyond the 5-minute skew), past nextUpdate, none.
    let mut future = Spec::new(issuer.clone());
    future.this_update = NOW + 301;
    assert!(matches!(
        check(&future.sign(&key), &key, &MILAN_ASK_SERIAL, NOW),
        Err(TeeError::CrlNotValidAt { now: NOW, .. })
    ));
    future.this_update = NOW + 299;
    check(&future.sign(&key), &key, &MILAN_ASK_SERIAL, NOW).expect("within the skew");
    let s = Spec::new(issuer.clone());
    check(&good, &key, &MILAN_ASK_SERIAL, s.next_update.unwrap()).expect("at nextUpdate");
    assert_eq!(
        check(&good, &key, &MILAN_ASK_SERIAL, s.next_update.unwrap() + 1),
        Err(TeeError::CrlNotValidAt {
            this_update: s.this_update,
            next_update: s.next_update.unwrap(),
            now: s.next_update.unwrap() + 1
        })
    );
    let mut open_ended = Spec::new(issuer.clone());
    open_ended.next_update = None;
    assert!(matches!(
        check(&open_ended.sign(&key), &key, &MILAN_ASK_SERIAL, NOW),
        Err(TeeError::CrlMalformed(m)) if m.contains("nextUpdate")
    ));

    // A critical extension this verifier does not process.
    let mut crit = Spec::new(issuer.clone());
    crit.critical_ext = true;
    assert!(matches!(
        check(&crit.sign(&key), &key, &MILAN_ASK_SERIAL, NOW),
        Err(TeeError::CrlMalformed(m)) if m.contains("critical")
    ));

    // Revocation: the ASK listed (among others); a serial that only shares a prefix is not.
    let mut revoking = Spec::new(issuer.clone());
    revoking.revoked = vec![vec![0x01, 0x00, 0x02], MILAN_ASK_SERIAL.to_vec()];
    let e = check(&revoking.sign(&key), &key, &MILAN_ASK_SERIAL, NOW).unwrap_err();
    assert_eq!(
        e,
        TeeError::CertificateRevoked {
            role: CertRole::Ask,
            serial: "010001".into()
        }
    );
    assert!(
        e.to_string()
            .contains("ASK certificate (serial 010001) is revoked")
    );
    let mut near = Spec::new(issuer);
    near.revoked = vec![vec![0x01, 0x00, 0x01, 0x00]];
    check(&near.sign(&key), &key, &MILAN_ASK_SERIAL, NOW).expect("other serial");

    // Garbage.
    assert!(matches!(
        Crl::parse(&good[..good.len() - 1]),
        Err(TeeError::CrlMalformed(_))
    ));
    assert!(matches!(
        Crl::parse(b"not a CRL"),
        Err(TeeError::CrlMalformed(_))
    ));
}

#[test]
fn crl_collateral_is_der_or_pem() {
    let key = test_key(1);
    let a = Spec::new(ark_name(Product::Milan)).sign(&key);
    let b = Spec::new(ark_name(Product::Genoa)).sign(&key);
    assert_eq!(
        snp::crl::split(&[a.clone(), b.clone()].concat()).unwrap(),
        [a.clone(), b.clone()]
    );
    let pem = |d: &[u8]| der::pem::encode_string("X509 CRL", der::pem::LineEnding::LF, d).unwrap();
    let both = format!("{}{}", pem(&a), pem(&b));
    assert_eq!(snp::crl::split(both.as_bytes()).unwrap(), [a.clone(), b]);
    let cert_pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &a).unwrap();
    assert!(matches!(
        snp::crl::split(cert_pem.as_bytes()),
        Err(TeeError::CrlMalformed(m)) if m.contains("X509 CRL")
    ));
    assert!(matches!(
        snp::crl::split(format!("{}junk", pem(&a)).as_bytes()),
        Err(TeeError::CrlMalformed(_))
    ));
    assert!(matches!(
        snp::crl::split(&[0x30, 0x82, 0xff]),
        Err(TeeError::CrlMalformed(_))
    ));
}

fn milan_report() -> Vec<u8> {
    data("report_milan.bin")
}

fn verify_milan(policy: &TeePolicy, crl: Option<Vec<u8>>) -> Result<tee::VerifiedTee, TeeError> {
    let r = milan_report();
    let rd: [u8; 64] = r[0x50..0x90].try_into().unwrap();
    let coll = Collateral {
        snp_vcek: Some(data("vcek_milan.der")),
        snp_chain: Some(data("cert_chain_milan")),
        snp_crl: crl,
        tdx: None,
    };
    tee::verify(TeePlatform::Snp, &r, policy, &coll, &rd, NOW)
}

fn milan_policy(require_crl: bool) -> TeePolicy {
    TeePolicy::from_toml(&format!(
        "platform = \"snp\"\n[snp]\nproducts = [\"Milan\"]\n\
         min_tcb = {{ bootloader = 3, snp = 8, microcode = 115 }}\n\
         measurements = [\"{MEASUREMENT}\"]\nrequire_crl = {require_crl}\n"
    ))
    .expect("policy")
}

/// End to end with the real Milan report: the verifier checks a CRL that names the
/// Milan ARK with the pinned ARK's key (so a CRL signed by anyone else is refused),
/// skips CRLs of other products, refuses malformed CRL collateral, and with
/// `require_crl` refuses evidence without a CRL for the product.
#[test]
fn verify_uses_the_pinned_ark_for_the_crl() {
    let key = test_key(1);
    verify_milan(&milan_policy(false), None).expect("no CRL, not required");
    assert_eq!(
        verify_milan(&milan_policy(true), None).unwrap_err(),
        TeeError::MissingCollateral("AMD CRL for Milan (kdsintf.amd.com/vcek/v1/Milan/crl)")
    );
    // A CRL naming ARK-Milan but signed by another key.
    let forged = Spec::new(ark_name(Product::Milan)).sign(&key);
    for require in [false, true] {
        assert_eq!(
            verify_milan(&milan_policy(require), Some(forged.clone())).unwrap_err(),
            TeeError::CrlSignatureInvalid
        );
    }
    // Another product's CRL does not apply to Milan.
    let genoa = Spec::new(ark_name(Product::Genoa)).sign(&key);
    verify_milan(&milan_policy(false), Some(genoa.clone())).expect("skipped");
    assert!(matches!(
        verify_milan(&milan_policy(true), Some(genoa)).unwrap_err(),
        TeeError::MissingCollateral(_)
    ));
    // Collateral that is not a CRL is refused, required or not.
    assert!(matches!(
        verify_milan(&milan_policy(false), Some(b"garbage".to_vec())).unwrap_err(),
        TeeError::CrlMalformed(_)
    ));
    // report_only checks a CRL it is given.
    let ro = TeePolicy::report_only(TeePlatform::Snp);
    assert!(!ro.snp.require_crl);
    assert_eq!(
        verify_milan(&ro, Some(forged)).unwrap_err(),
        TeeError::CrlSignatureInvalid
    );
}

/// Real AMD data, not in the repository: set `PQCC_SNP_EXTRA` to a directory holding
///
/// - `milan_crl.pem`, `genoa_crl.pem`: AMD KDS `vcek/v1/{Milan,Genoa}/crl` (CRL numbers
///   6 and 4: Milan valid 2025-05-06..2026-05-12, none revoked; Genoa valid
///   2024-10-23..2025-11-03, revoking serial 02 00 01, an earlier Genoa ASK);
/// - `vcek_genoa.der` and `report_genoa_v3.bin`: a Genoa VCEK (issued 2025-06-11, TCB
///   bl 10 / tee 0 / snp 23 / ucode 84) and the v3 report it signed (an Azure guest's,
///   from the HCL report at offset 0x20).
///
/// Copies were taken from public test data (openpcc `attestation/attest/testdata`,
/// which holds KDS downloads) and checked with openssl 3 against the pinned ARKs.
/// Without the variable the test only says it was skipped.
#[test]
fn real_amd_crls_and_genoa_v3_report() {
    let Some(dir) = std::env::var_os("PQCC_SNP_EXTRA").map(PathBuf::from) else {
        eprintln!("PQCC_SNP_EXTRA not set: real AMD CRL / Genoa v3 checks skipped");
        return;
    };
    let read = |n: &str| std::fs::read(dir.join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
    // 2025-06-15: inside the Milan CRL's window.
    let june = 1_749_945_600;
    let milan_crl = read("milan_crl.pem");
    let r = milan_report();
    let rd: [u8; 64] = r[0x50..0x90].try_into().unwrap();
    let coll = Collateral {
        snp_vcek: Some(data("vcek_milan.der")),
        snp_chain: Some(data("cert_chain_milan")),
        snp_crl: Some(milan_crl.clone()),
        tdx: None,
    };
    let p = milan_policy(true);
    tee::verify(TeePlatform::Snp, &r, &p, &coll, &rd, june).expect("real Milan CRL");
    assert!(matches!(
        tee::verify(TeePlatform::Snp, &r, &p, &coll, &rd, 1_779_000_000).unwrap_err(),
        TeeError::CrlNotValidAt { .. }
    ));

    // The real Genoa CRL revokes serial 020001; the pinned Genoa ASK is 020002.
    let genoa_crls = snp::crl::split(&read("genoa_crl.pem")).unwrap();
    let crl = Crl::parse(&genoa_crls[0]).unwrap();
    assert_eq!(crl.issuer(), &ark_name(Product::Genoa));
    let genoa_root = snp::chain::PINNED
        .iter()
        .find(|r| r.product == Product::Genoa)
        .unwrap();
    let ark = x509_cert::Certificate::from_der(genoa_root.ark).unwrap();
    let spki = ark
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .unwrap();
    let key = rsa::PublicKey::try_from(
        x509_cert::spki::SubjectPublicKeyInfoRef::from_der(&spki).unwrap(),
    )
    .unwrap();
    let oct_2025 = 1_760_000_000;
    crl.check(&key, &[0x02, 0x00, 0x02], oct_2025)
        .expect("pinned ASK not revoked");
    assert_eq!(
        crl.check(&key, &[0x02, 0x00, 0x01], oct_2025),
        Err(TeeError::CertificateRevoked {
            role: CertRole::Ask,
            serial: "020001".into()
        })
    );

    // A real Genoa v3 report whose VCEK uses AMD's strict-DER PSS parameters.
    let report = read("report_genoa_v3.bin");
    let rd: [u8; 64] = report[0x50..0x90].try_into().unwrap();
    let coll = Collateral {
        snp_vcek: Some(read("vcek_genoa.der")),
        snp_crl: Some([milan_crl, read("genoa_crl.pem")].concat()),
        ..Collateral::default()
    };
    let july = 1_751_328_000;
    let v = tee::verify(
        TeePlatform::Snp,
        &report,
        &TeePolicy::report_only(TeePlatform::Snp),
        &coll,
        &rd,
        july,
    )
    .expect("real Genoa v3 report");
    assert_eq!(v.snp_product, Some(Product::Genoa));
    let parsed = snp::Report::parse(&report).unwrap();
    assert_eq!(parsed.cpuid, Some((0x19, 0x11)));
    let rule = |extra: &str| {
        TeePolicy::from_toml(&format!(
            "platform = \"snp\"\ninsecure_any_measurement = true\n[snp]\nrequire_crl = true\n{extra}"
        ))
        .unwrap()
    };
    let genoa_floor =
        "product_min_tcb = { Genoa = { bootloader = 10, snp = 23, microcode = 84 } }\n";
    let p = rule(&format!("products = [\"Genoa\"]\n{genoa_floor}"));
    tee::verify(TeePlatform::Snp, &report, &p, &coll, &rd, july).expect("Genoa rule");
    let p =
        rule("products = [\"Genoa\"]\nmin_tcb = { bootloader = 10, snp = 24, microcode = 84 }\n");
    assert!(matches!(
        tee::verify(TeePlatform::Snp, &report, &p, &coll, &rd, july).unwrap_err(),
        TeeError::TcbBelowMinimum {
            component: "snp",
            ..
        }
    ));
    let p = rule("products = [\"Milan\"]\nmin_tcb = { bootloader = 1 }\n");
    assert_eq!(
        tee::verify(TeePlatform::Snp, &report, &p, &coll, &rd, july).unwrap_err(),
        TeeError::ProductNotAllowed(Product::Genoa)
    );
}
