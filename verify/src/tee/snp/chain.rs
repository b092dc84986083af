//! The AMD certificate chain: VCEK → ASK → ARK, where the ARK is compiled in.
//!
//! The ARKs (and the ASKs used when neither evidence nor collateral carries one) are
//! AMD's published certificates, as served by the AMD Key Distribution Service at
//! `https://kdsintf.amd.com/vcek/v1/{Milan,Genoa,Turin}/cert_chain`. Their SHA-256
//! fingerprints are pinned in [`PINNED`] and checked by the tests against the copies in
//! the project's evidence samples. An ARK found in the input is accepted only if it is
//! byte-for-byte the pinned one.
//!
//! Every link is RSASSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt (AMD KDS
//! specification, "VCEK Certificate"); no other algorithm is accepted. Signatures are
//! checked over the exact `tbsCertificate` bytes received.

use der::{Decode, Reader, SliceReader};
use p384::ecdsa::VerifyingKey;
use sha2::{Digest, Sha256, Sha384};
use x509_cert::Certificate;

use super::{CertTable, Product, SnpTcb};
use crate::tee::{CertRole, TeeError, ct_eq};

/// A pinned AMD product root.
#[derive(Debug, Clone, Copy)]
pub struct PinnedRoot {
    /// The product.
    pub product: Product,
    /// ASK subject CN (= VCEK issuer CN).
    pub ask_cn: &'static str,
    /// ARK certificate (DER).
    pub ark: &'static [u8],
    /// SHA-256 of the ARK DER.
    pub ark_sha256: &'static str,
    /// Built-in ASK certificate (DER), verified against the ARK like any other.
    pub ask: &'static [u8],
}

/// The pinned AMD roots.
pub const PINNED: [PinnedRoot; 3] = [
    PinnedRoot {
        product: Product::Milan,
        ask_cn: "SEV-Milan",
        ark: include_bytes!("roots/ark_milan.der"),
        ark_sha256: "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
        ask: include_bytes!("roots/ask_milan.der"),
    },
    PinnedRoot {
        product: Product::Genoa,
        ask_cn: "SEV-Genoa",
        ark: include_bytes!("roots/ark_genoa.der"),
        ark_sha256: "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
        ask: include_bytes!("roots/ask_genoa.der"),
    },
    PinnedRoot {
        product: Product::Turin,
        ask_cn: "SEV-Turin",
        ark: include_bytes!("roots/ark_turin.der"),
        ark_sha256: "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
        ask: include_bytes!("roots/ask_turin.der"),
    },
];

/// The accepted signature AlgorithmIdentifier: id-RSASSA-PSS with hashAlgorithm
/// sha384, maskGenAlgorithm mgf1(sha384), saltLength 48, trailerField 1, as AMD's ARKs,
/// ASKs and older VCEKs encode it (the default trailerField written out).
const PSS_SHA384_ALG: [u8; 72] = [
    0x30, 0x46, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30, 0x39, 0xa0,
    0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00,
    0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30,
    0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0xa2, 0x03,
    0x02, 0x01, 0x30, 0xa3, 0x03, 0x02, 0x01, 0x01,
];

/// The same parameters in strict DER (trailerField left out, as its default 1 must be):
/// how AMD KDS encodes newer VCEKs (e.g. Genoa VCEKs issued in 2025) and its CRLs.
const PSS_SHA384_ALG_DER: [u8; 67] = [
    0x30, 0x41, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30, 0x34, 0xa0,
    0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00,
    0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30,
    0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0xa2, 0x03,
    0x02, 0x01, 0x30,
];

/// Whether `alg` (a DER AlgorithmIdentifier) is RSASSA-PSS / SHA-384 / MGF1-SHA-384 /
/// salt 48 / trailer 1, in either encoding AMD uses. Nothing else is accepted.
pub(crate) fn is_pss_sha384(alg: &[u8]) -> bool {
    alg == PSS_SHA384_ALG || alg == PSS_SHA384_ALG_DER
}

/// Verifies an RSASSA-PSS (SHA-384, MGF1-SHA-384, salt 48) signature over `msg` with the
/// RSA key in `spki`.
pub(crate) fn pss_sha384_verify(
    spki: &spki::SubjectPublicKeyInfoOwned,
    msg: &[u8],
    sig: &[u8],
) -> bool {
    let Ok(spki_der) = der::Encode::to_der(spki) else {
        return false;
    };
    let Ok(spki_ref) = spki::SubjectPublicKeyInfoRef::from_der(&spki_der) else {
        return false;
    };
    let Ok(key) = rsa::PublicKey::try_from(spki_ref) else {
        return false;
    };
    pss_sha384_verify_key(&key, msg, sig)
}

/// As [`pss_sha384_verify`], with the key already decoded.
pub(crate) fn pss_sha384_verify_key(key: &rsa::PublicKey, msg: &[u8], sig: &[u8]) -> bool {
    let vk = rsa::pss::VerifyingKey::<Sha384>::new_with_salt_len(key.clone(), 48);
    let Ok(sig) = rsa::pss::Signature::try_from(sig) else {
        return false;
    };
    rsa::signature::Verifier::verify(&vk, msg, &sig).is_ok()
}

/// A certificate with the exact bytes its signature covers.
struct Parsed<'a> {
    role: CertRole,
    der: &'a [u8],
    cert: Certificate,
    tbs: &'a [u8],
}

fn malformed(role: CertRole, e: impl std::fmt::Display) -> TeeError {
    TeeError::CertificateMalformed {
        role,
        detail: e.to_string(),
    }
}

fn parse(role: CertRole, der: &[u8]) -> Result<Parsed<'_>, TeeError> {
    let cert = Certificate::from_der(der).map_err(|e| malformed(role, e))?;
    // The raw tbsCertificate: first element of the outer SEQUENCE.
    let mut r = SliceReader::new(der).map_err(|e| malformed(role, e))?;
    let tbs = r
        .sequence(|inner| {
            let t = inner.tlv_bytes()?;
            // Skip signatureAlgorithm and signature (already decoded above).
            inner.read_slice(inner.remaining_len())?;
            Ok::<_, der::Error>(t)
        })
        .map_err(|e| malformed(role, e))?;
    Ok(Parsed {
        role,
        der,
        cert,
        tbs,
    })
}

impl Parsed<'_> {
    fn check_validity(&self, now: u64) -> Result<(), TeeError> {
        let v = self.cert.tbs_certificate().validity();
        let not_before = v.not_before.to_unix_duration().as_secs();
        let not_after = v.not_after.to_unix_duration().as_secs();
        if now < not_before || now > not_after {
            return Err(TeeError::CertificateNotValidAt {
                role: self.role,
                not_before,
                not_after,
                now,
            });
        }
        Ok(())
    }

    fn common_name(&self, of_issuer: bool) -> Result<String, TeeError> {
        let tbs = self.cert.tbs_certificate();
        let name = if of_issuer {
            tbs.issuer()
        } else {
            tbs.subject()
        };
        name.common_name()
            .map_err(|e| malformed(self.role, e))?
            .map(|cn| cn.value().into_owned())
            .ok_or_else(|| malformed(self.role, "no common name"))
    }

    /// Checks that `issuer` issued and signed `self`.
    fn check_signed_by(&self, issuer: &Parsed<'_>) -> Result<(), TeeError> {
        if self.cert.tbs_certificate().issuer() != issuer.cert.tbs_certificate().subject() {
            return Err(TeeError::ChainBroken(self.role));
        }
        let bad = || TeeError::CertificateSignatureInvalid(self.role);
        let outer = der::Encode::to_der(self.cert.signature_algorithm()).map_err(|_| bad())?;
        let inner =
            der::Encode::to_der(self.cert.tbs_certificate().signature()).map_err(|_| bad())?;
        if !is_pss_sha384(&outer) || outer != inner {
            return Err(bad());
        }
        let spki = issuer.cert.tbs_certificate().subject_public_key_info();
        let sig_bytes = self.cert.signature().as_bytes().ok_or_else(bad)?;
        if pss_sha384_verify(spki, self.tbs, sig_bytes) {
            Ok(())
        } else {
            Err(bad())
        }
    }

    fn extension(&self, oid: &str) -> Option<&[u8]> {
        let oid = der::asn1::ObjectIdentifier::new(oid).ok()?;
        self.cert
            .tbs_certificate()
            .extensions()?
            .iter()
            .find(|e| e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes())
    }
}

/// A verified chain: the product and the VCEK's key and TCB extensions.
pub struct VerifiedChain {
    /// The product whose ARK the chain ends at.
    pub product: Product,
    /// The VCEK's public key.
    pub vcek_key: VerifyingKey,
    /// The serial number (DER INTEGER content bytes) of the ASK the chain went through,
    /// for the ARK's CRL.
    pub ask_serial: Vec<u8>,
    /// The pinned root the chain ends at.
    pub root: &'static PinnedRoot,
    vcek_tcb: Vec<(&'static str, Option<u8>)>,
    vcek_hwid: Option<Vec<u8>>,
}

/// VCEK extension OIDs (AMD KDS specification, "VCEK Certificate Extensions").
const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";

fn spl(ext: Option<&[u8]>) -> Result<Option<u8>, TeeError> {
    match ext {
        None => Ok(None),
        Some(b) => {
            let v = der::asn1::Uint::from_der(b).map_err(|e| malformed(CertRole::Vcek, e))?;
            let bytes = v.as_bytes();
            match bytes {
                [x] => Ok(Some(*x)),
                _ => Err(malformed(CertRole::Vcek, "SPL extension out of range")),
            }
        }
    }
}

impl VerifiedChain {
    /// Checks the VCEK's TCB extensions and hwID against the report.
    pub fn check_against_report(&self, tcb: &SnpTcb, chip_id: &[u8; 64]) -> Result<(), TeeError> {
        for (name, cert_value) in &self.vcek_tcb {
            let reported = match *name {
                "bootloader" => tcb.bootloader,
                "tee" => tcb.tee,
                "snp" => tcb.snp,
                "microcode" => tcb.microcode,
                _ => tcb.fmc,
            };
            match cert_value {
                Some(v) if *v == reported => {}
                Some(_) => return Err(TeeError::VcekReportMismatch(name)),
                None => return Err(TeeError::VcekReportMismatch("VCEK lacks a TCB extension")),
            }
        }
        match &self.vcek_hwid {
            Some(h) if ct_eq(h, chip_id) => Ok(()),
            // Turin VCEKs carry an 8-byte hwID; the report's chip id is zero-padded.
            Some(h)
                if self.product == Product::Turin
                    && h.len() == 8
                    && chip_id.get(..8).is_some_and(|c| ct_eq(h, c))
                    && chip_id.get(8..).is_some_and(|r| r.iter().all(|&b| b == 0)) =>
            {
                Ok(())
            }
            Some(_) => Err(TeeError::VcekReportMismatch("chip id (hwID)")),
            None => Err(TeeError::VcekReportMismatch("VCEK lacks hwID")),
        }
    }
}

fn pem_or_der_certs(input: &[u8]) -> Result<Vec<Vec<u8>>, TeeError> {
    if input.starts_with(b"-----BEGIN") {
        let certs = Certificate::load_pem_chain(input).map_err(|e| malformed(CertRole::Ask, e))?;
        certs
            .iter()
            .map(|c| der::Encode::to_der(c).map_err(|e| malformed(CertRole::Ask, e)))
            .collect()
    } else {
        // One or more DER certificates back to back.
        let mut out = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let mut r = SliceReader::new(rest).map_err(|e| malformed(CertRole::Ask, e))?;
            let tlv = r.tlv_bytes().map_err(|e| malformed(CertRole::Ask, e))?;
            out.push(tlv.to_vec());
            rest = rest.get(tlv.len()..).unwrap_or(&[]);
        }
        Ok(out)
    }
}

/// Verifies VCEK → ASK → pinned ARK at `now` and returns the VCEK key and extensions.
///
/// `chain` (collateral) may hold the ASK and ARK (PEM or DER, any order); `table` is
/// the evidence's certificate table.
pub fn verify_chain(
    vcek_der: &[u8],
    chain: Option<&[u8]>,
    table: CertTable<'_>,
    now: u64,
) -> Result<VerifiedChain, TeeError> {
    let vcek = parse(CertRole::Vcek, vcek_der)?;
    let issuer_cn = vcek.common_name(true)?;
    let root = PINNED
        .iter()
        .find(|p| p.ask_cn == issuer_cn)
        .ok_or(TeeError::UnknownProduct(issuer_cn))?;
    let pinned_ark = parse(CertRole::Ark, root.ark)?;

    // Supplied certificates: sort into ASK / ARK by subject CN.
    let supplied = match chain {
        Some(c) => pem_or_der_certs(c)?,
        None => Vec::new(),
    };
    let mut ask_der: Option<&[u8]> = None;
    let mut candidates: Vec<(CertRole, &[u8])> = Vec::new();
    for c in &supplied {
        candidates.push((CertRole::Ask, c.as_slice()));
    }
    if let Some(a) = table.ask {
        candidates.push((CertRole::Ask, a));
    }
    if let Some(a) = table.ark {
        candidates.push((CertRole::Ark, a));
    }
    for (_, der) in &candidates {
        let p = parse(CertRole::Ask, der)?;
        let cn = p.common_name(false)?;
        if p.cert.tbs_certificate().subject() == pinned_ark.cert.tbs_certificate().subject() {
            // An ARK in the input: it must be exactly the pinned one.
            if !ct_eq(der, root.ark) {
                return Err(TeeError::UntrustedRoot);
            }
        } else if cn == root.ask_cn {
            ask_der.get_or_insert(der);
        } else {
            return Err(TeeError::ChainBroken(CertRole::Ask));
        }
    }
    let ask = parse(CertRole::Ask, ask_der.unwrap_or(root.ask))?;

    // Pinned ARK: check its fingerprint (guards the embedded bytes) and validity.
    let fp = Sha256::digest(pinned_ark.der);
    if hex::encode(fp) != root.ark_sha256 {
        return Err(TeeError::UntrustedRoot);
    }
    pinned_ark.check_validity(now)?;
    pinned_ark.check_signed_by(&pinned_ark)?;
    ask.check_signed_by(&pinned_ark)?;
    ask.check_validity(now)?;
    vcek.check_signed_by(&ask)?;
    vcek.check_validity(now)?;

    let spki = vcek.cert.tbs_certificate().subject_public_key_info();
    let spki_der = der::Encode::to_der(spki).map_err(|e| malformed(CertRole::Vcek, e))?;
    let spki_ref = spki::SubjectPublicKeyInfoRef::from_der(&spki_der)
        .map_err(|e| malformed(CertRole::Vcek, e))?;
    let vcek_key = VerifyingKey::try_from(spki_ref).map_err(|e| malformed(CertRole::Vcek, e))?;

    let mut vcek_tcb = vec![
        ("bootloader", spl(vcek.extension(OID_BL_SPL))?),
        ("tee", spl(vcek.extension(OID_TEE_SPL))?),
        ("snp", spl(vcek.extension(OID_SNP_SPL))?),
        ("microcode", spl(vcek.extension(OID_UCODE_SPL))?),
    ];
    if root.product == Product::Turin {
        vcek_tcb.push(("fmc", spl(vcek.extension(OID_FMC_SPL))?));
    }
    let vcek_hwid = vcek.extension(OID_HWID).map(|h| {
        // Milan/Genoa VCEKs carry the raw 64 bytes; accept a DER OCTET STRING too.
        if h.len() == 64 || h.len() == 8 {
            h.to_vec()
        } else {
            der::asn1::OctetString::from_der(h)
                .map(|o| o.as_bytes().to_vec())
                .unwrap_or_default()
        }
    });
    let ask_serial = ask
        .cert
        .tbs_certificate()
        .serial_number()
        .as_bytes()
        .to_vec();
    Ok(VerifiedChain {
        product: root.product,
        vcek_key,
        ask_serial,
        root,
        vcek_tcb,
        vcek_hwid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/sev-snp")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// AMD writes the PSS parameters two ways: ARKs, ASKs and older VCEKs spell out the
    /// default trailerField (72 bytes), newer VCEKs (e.g. Genoa, issued 2025) and the KDS
    /// CRLs leave it out as DER requires (67 bytes). Both name the same parameters and
    /// both are accepted; before issue 29 the 67-byte form was refused, so such a VCEK
    /// failed with `CertificateSignatureInvalid(Vcek)` (checked against a real one by
    /// `tests/snp_crl.rs::real_amd_crls_and_genoa_v3_report`).
    #[test]
    fn pss_parameters_in_both_amd_encodings() {
        use der::{Decode, Encode};
        let params = |alg: &[u8]| {
            let a = spki::AlgorithmIdentifierOwned::from_der(alg).expect("alg");
            let p = a.parameters.expect("params").to_der().expect("der");
            rsa::pkcs1::RsaPssParams::<der::Any>::from_der(&p).map(|p| {
                (
                    p.hash.oid,
                    p.mask_gen.parameters.map(|h| h.oid),
                    p.salt_len,
                    format!("{:?}", p.trailer_field),
                )
            })
        };
        assert_eq!(params(&PSS_SHA384_ALG), params(&PSS_SHA384_ALG_DER));
        assert!(is_pss_sha384(&PSS_SHA384_ALG));
        assert!(is_pss_sha384(&PSS_SHA384_ALG_DER));
        // Salt 32, SHA-256, or any other byte: refused.
        for alg in [PSS_SHA384_ALG.as_slice(), PSS_SHA384_ALG_DER.as_slice()] {
            for i in 0..alg.len() {
                let mut a = alg.to_vec();
                a[i] ^= 0x01;
                assert!(!is_pss_sha384(&a), "byte {i} changed");
            }
        }
        let mut salt32 = PSS_SHA384_ALG_DER;
        salt32[66] = 0x20;
        assert!(!is_pss_sha384(&salt32));
    }

    /// The VCEK binds TCB and chip: a report claiming another TCB or chip is refused
    /// even though the chain is good (a forged report cannot reach this check through
    /// `verify`, so it is tested here directly).
    #[test]
    fn vcek_extensions_bind_tcb_and_chip() {
        let chain = verify_chain(
            &data("vcek_milan.der"),
            Some(&data("cert_chain_milan")),
            CertTable::default(),
            1_735_689_600,
        )
        .expect("chain verifies");
        assert_eq!(chain.product, Product::Milan);
        let report = data("report_milan.bin");
        let chip: [u8; 64] = report[0x1A0..0x1E0].try_into().unwrap();
        let tcb = SnpTcb::from_raw(
            u64::from_le_bytes(report[0x180..0x188].try_into().unwrap()),
            Product::Milan,
        );
        chain.check_against_report(&tcb, &chip).expect("matches");

        let mut newer = tcb;
        newer.snp += 1;
        assert_eq!(
            chain.check_against_report(&newer, &chip),
            Err(TeeError::VcekReportMismatch("snp"))
        );
        let mut older = tcb;
        older.microcode -= 1;
        assert_eq!(
            chain.check_against_report(&older, &chip),
            Err(TeeError::VcekReportMismatch("microcode"))
        );
        let mut other_chip = chip;
        other_chip[0] ^= 1;
        assert_eq!(
            chain.check_against_report(&tcb, &other_chip),
            Err(TeeError::VcekReportMismatch("chip id (hwID)"))
        );
    }
}
