//! X.509 for NVIDIA's two PKIs (device identity, RIM signing): certificates parsed
//! strictly (DER), ECDSA P-384 with SHA-384 only, path validation (RFC 5280 §6.1,
//! the subset these chains need) at a caller-supplied time.

use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, OctetStringRef, UintRef};
use der::{Decode, Encode, Sequence};
#[cfg(not(feature = "aws-lc"))]
use p384::ecdsa::Signature;
use p384::ecdsa::VerifyingKey;
#[cfg(not(feature = "aws-lc"))]
use p384::ecdsa::signature::Verifier;
use x509_cert::Certificate;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};

/// ecdsa-with-SHA384 (RFC 5758 §3.2).
pub const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
/// id-ecPublicKey (RFC 5480 §2.1.1).
pub const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// secp384r1 (RFC 5480 §2.1.1.1).
pub const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// id-sha384 (RFC 5758 §2).
pub const ID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
/// TCG DICE TcbInfo-style extension that carries Hopper's FWID.
pub const TCG_DICE_FWID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.5.4.1");

/// Extensions this verifier understands, so they may be critical.
const KNOWN_CRITICAL: &[&str] = &[
    "2.5.29.15",      // keyUsage
    "2.5.29.19",      // basicConstraints
    "2.5.29.37",      // extKeyUsage
    "2.5.29.17",      // subjectAltName (no name constraints are used)
    "2.23.133.5.4.1", // TCG DICE FWID (parsed for the leaf)
];

/// The outer SEQUENCE of a certificate or CRL, to get the signed bytes as received.
#[derive(Sequence)]
struct Signed<'a> {
    tbs: AnyRef<'a>,
    alg: x509_cert::spki::AlgorithmIdentifierRef<'a>,
    sig: BitStringRef<'a>,
}

/// An ECDSA-Sig-Value (RFC 3279 §2.2.3).
#[derive(Sequence)]
struct EcdsaSig<'a> {
    r: UintRef<'a>,
    s: UintRef<'a>,
}

/// A parsed certificate that keeps its DER and the signed TBS bytes.
#[derive(Clone, Debug)]
pub struct Cert {
    /// The certificate's DER as received.
    pub der: Vec<u8>,
    tbs_der: Vec<u8>,
    sig_der: Vec<u8>,
    /// The decoded certificate.
    pub cert: Certificate,
}

/// Splits a signed structure (certificate, CRL) into its TBS bytes and DER signature,
/// checking the algorithm is ecdsa-with-SHA384 with absent parameters.
pub fn split_signed(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let s = Signed::from_der(der).map_err(|e| format!("not a signed DER structure: {e}"))?;
    let alg = s.alg;
    if alg.oid != ECDSA_WITH_SHA384 || alg.parameters.is_some() {
        return Err(format!(
            "signature algorithm {} is not ecdsa-with-SHA384",
            alg.oid
        ));
    }
    let tbs = s.tbs.to_der().map_err(|e| format!("tbs: {e}"))?;
    let sig = s
        .sig
        .as_bytes()
        .ok_or("signature BIT STRING has unused bits")?
        .to_vec();
    Ok((tbs, sig))
}

impl Cert {
    /// Parses a DER certificate (strict DER; trailing bytes rejected).
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let cert =
            Certificate::from_der(der).map_err(|e| format!("certificate does not parse: {e}"))?;
        let (tbs_der, sig_der) = split_signed(der)?;
        if cert.tbs_certificate().signature().oid != ECDSA_WITH_SHA384 {
            return Err("TBS signature algorithm differs from the outer one".into());
        }
        Ok(Self {
            der: der.to_vec(),
            tbs_der,
            sig_der,
            cert,
        })
    }

    /// Parses one PEM certificate.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let (label, der) =
            der::pem::decode_vec(pem.as_bytes()).map_err(|e| format!("bad PEM: {e}"))?;
        if label != "CERTIFICATE" {
            return Err(format!("PEM label {label} is not CERTIFICATE"));
        }
        Self::from_der(&der)
    }

    /// A short human name: the subject's common name, or the whole subject.
    pub fn name(&self) -> String {
        let subject = self.cert.tbs_certificate().subject();
        match subject.common_name() {
            Ok(Some(cn)) => cn.value().into_owned(),
            _ => subject.to_string(),
        }
    }

    /// The P-384 public key of the subject.
    pub fn public_key(&self) -> Result<VerifyingKey, String> {
        let spki = self.cert.tbs_certificate().subject_public_key_info();
        if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
            return Err(format!("{}: key is not an EC key", self.name()));
        }
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        if curve != Some(SECP384R1) {
            return Err(format!("{}: key is not on P-384", self.name()));
        }
        let bytes = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| format!("{}: key BIT STRING has unused bits", self.name()))?;
        VerifyingKey::from_sec1_bytes(bytes)
            .map_err(|_| format!("{}: invalid P-384 point", self.name()))
    }

    /// notBefore and notAfter as Unix seconds.
    pub fn validity(&self) -> (u64, u64) {
        let v = self.cert.tbs_certificate().validity();
        (
            v.not_before.to_unix_duration().as_secs(),
            v.not_after.to_unix_duration().as_secs(),
        )
    }

    /// Checks that `issuer` signed this certificate.
    pub fn verify_issued_by(&self, issuer: &Cert) -> Result<(), String> {
        let tbs = self.cert.tbs_certificate();
        if tbs.issuer().to_der().ok() != issuer.cert.tbs_certificate().subject().to_der().ok() {
            return Err(format!(
                "{}: issuer name does not match the subject of {}",
                self.name(),
                issuer.name()
            ));
        }
        let key = issuer.public_key()?;
        verify_der_sig(&key, &self.tbs_der, &self.sig_der).map_err(|e| {
            format!(
                "{}: signature by {} invalid: {e}",
                self.name(),
                issuer.name()
            )
        })
    }

    fn basic_constraints(&self) -> Result<Option<BasicConstraints>, String> {
        self.cert
            .tbs_certificate()
            .get_extension::<BasicConstraints>()
            .map(|o| o.map(|(_, bc)| bc))
            .map_err(|e| format!("{}: basicConstraints: {e}", self.name()))
    }

    fn key_usage(&self) -> Result<Option<KeyUsage>, String> {
        self.cert
            .tbs_certificate()
            .get_extension::<KeyUsage>()
            .map(|o| o.map(|(_, ku)| ku))
            .map_err(|e| format!("{}: keyUsage: {e}", self.name()))
    }

    fn check_critical_extensions(&self) -> Result<(), String> {
        for ext in self
            .cert
            .tbs_certificate()
            .extensions()
            .into_iter()
            .flatten()
        {
            if ext.critical && !KNOWN_CRITICAL.contains(&ext.extn_id.to_string().as_str()) {
                return Err(format!(
                    "{}: unknown critical extension {}",
                    self.name(),
                    ext.extn_id
                ));
            }
        }
        Ok(())
    }

    /// Raw value (OCTET STRING contents) of an extension, if present once.
    pub fn extension_value(&self, oid: ObjectIdentifier) -> Result<Option<&[u8]>, String> {
        let mut found = None;
        for ext in self
            .cert
            .tbs_certificate()
            .extensions()
            .into_iter()
            .flatten()
        {
            if ext.extn_id == oid {
                if found.is_some() {
                    return Err(format!("{}: extension {oid} appears twice", self.name()));
                }
                found = Some(ext.extn_value.as_bytes());
            }
        }
        Ok(found)
    }

    /// http(s) URIs of the cRLDistributionPoints extension (full names only).
    pub fn crl_distribution_uris(&self) -> Vec<String> {
        use x509_cert::ext::pkix::CrlDistributionPoints;
        use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
        let Ok(Some((_, dps))) = self
            .cert
            .tbs_certificate()
            .get_extension::<CrlDistributionPoints>()
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for dp in dps.0 {
            if let Some(DistributionPointName::FullName(names)) = dp.distribution_point {
                for n in names {
                    if let GeneralName::UniformResourceIdentifier(u) = n {
                        let u = u.to_string();
                        if u.starts_with("http://") || u.starts_with("https://") {
                            out.push(u);
                        }
                    }
                }
            }
        }
        out
    }

    /// The serial number's content octets.
    pub fn serial(&self) -> &[u8] {
        self.cert.tbs_certificate().serial_number().as_bytes()
    }
}

/// Verifies a DER ECDSA-Sig-Value over `msg` with SHA-384.
pub fn verify_der_sig(key: &VerifyingKey, msg: &[u8], sig_der: &[u8]) -> Result<(), String> {
    let sig = EcdsaSig::from_der(sig_der).map_err(|e| format!("bad ECDSA-Sig-Value: {e}"))?;
    let r = fixed48(sig.r.as_bytes()).ok_or("r longer than 48 bytes")?;
    let s = fixed48(sig.s.as_bytes()).ok_or("s longer than 48 bytes")?;
    let mut raw = [0u8; 96];
    raw[..48].copy_from_slice(&r);
    raw[48..].copy_from_slice(&s);
    verify_raw_sig(key, msg, &raw)
}

/// Which ECDSA P-384 implementation this build verifies with.
pub const ECDSA_BACKEND: &str = if cfg!(feature = "aws-lc") {
    "aws-lc-rs"
} else {
    "RustCrypto p384"
};

/// Verifies a raw r ‖ s P-384 signature over `msg` with SHA-384.
///
/// RustCrypto's `p384` by default; AWS-LC (assembly-backed P-384) with the
/// `aws-lc` feature, for hosts that verify many GPUs (the broker, `pqcc`). The key
/// has already been validated as a P-384 point either way.
pub fn verify_raw_sig(key: &VerifyingKey, msg: &[u8], raw: &[u8]) -> Result<(), String> {
    #[cfg(feature = "aws-lc")]
    {
        use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};
        if raw.len() != 96 {
            return Err("signature is not 96 bytes".into());
        }
        let point = key.to_sec1_point(false);
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, point.as_bytes())
            .verify(msg, raw)
            .map_err(|_| "ECDSA P-384/SHA-384 verification failed".to_string())
    }
    #[cfg(not(feature = "aws-lc"))]
    {
        let sig = Signature::from_slice(raw).map_err(|_| "signature scalars out of range")?;
        key.verify(msg, &sig)
            .map_err(|_| "ECDSA P-384/SHA-384 verification failed".to_string())
    }
}

fn fixed48(b: &[u8]) -> Option<[u8; 48]> {
    if b.len() > 48 {
        return None;
    }
    let mut out = [0u8; 48];
    out[48 - b.len()..].copy_from_slice(b);
    Some(out)
}

/// Certificate signatures already verified: within one verification (the chain two
/// RIMs share), and across verifications in a [`super::GpuVerifier`] (CA
/// certificates every GPU shares; the device-specific leaf and BROM certificates of
/// GPUs seen before). Keyed by the exact DER of both certificates (the whole bytes are
/// compared, not a digest); holds only the fact that the issuer-name match and the
/// signature verified, which is a pure function of those bytes. Validity periods, CA
/// constraints, FWID and revocation are checked on every use. Only successes are
/// stored, so a changed byte in either certificate always misses and is verified.
///
/// Bounded: at most [`SigCache::capacity`] entries (default [`SigCache::CAPACITY`]);
/// when full, the oldest entry is dropped (first in, first out).
#[derive(Debug)]
pub struct SigCache {
    /// Keys: `len(cert) as u32 BE ‖ cert DER ‖ issuer DER`.
    verified: std::collections::HashSet<Box<[u8]>>,
    /// Insertion order, for eviction.
    order: std::collections::VecDeque<Box<[u8]>>,
    capacity: usize,
}

impl Default for SigCache {
    fn default() -> Self {
        Self::with_capacity(Self::CAPACITY)
    }
}

impl SigCache {
    /// Default capacity (entries).
    pub const CAPACITY: usize = 64;

    /// A cache holding at most `capacity` entries; 0 remembers nothing (every
    /// signature is verified).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            verified: std::collections::HashSet::new(),
            order: std::collections::VecDeque::new(),
            capacity,
        }
    }

    /// Most entries kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.verified.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.verified.is_empty()
    }

    fn key(cert: &Cert, issuer: &Cert) -> Option<Box<[u8]>> {
        let n = u32::try_from(cert.der.len()).ok()?;
        let mut k = Vec::with_capacity(4 + cert.der.len() + issuer.der.len());
        k.extend_from_slice(&n.to_be_bytes());
        k.extend_from_slice(&cert.der);
        k.extend_from_slice(&issuer.der);
        Some(k.into_boxed_slice())
    }

    /// [`Cert::verify_issued_by`], skipped when exactly these two certificates
    /// verified before.
    pub fn check(&mut self, cert: &Cert, issuer: &Cert) -> Result<(), String> {
        let key = Self::key(cert, issuer);
        if let Some(k) = &key
            && self.verified.contains(k)
        {
            return Ok(());
        }
        cert.verify_issued_by(issuer)?;
        if let Some(k) = key
            && self.capacity > 0
        {
            while self.verified.len() >= self.capacity {
                match self.order.pop_front() {
                    Some(old) => {
                        self.verified.remove(&old);
                    }
                    None => self.verified.clear(),
                }
            }
            self.order.push_back(k.clone());
            self.verified.insert(k);
        }
        Ok(())
    }
}

/// What a chain's end-entity certificate must allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafUse {
    /// Signs data (SPDM responses, RIMs): digitalSignature when keyUsage is present.
    DigitalSignature,
}

/// Validates `chain` (leaf first) up to `root` at `now` (Unix seconds). Signatures of
/// certificates at positions `cache_from` and above may come from `cache`.
///
/// The chain may end with a byte-identical copy of the pinned root or with the
/// certificate the pinned root issued. Every certificate must be within its validity
/// period at `now`; every issuer must be a CA (basicConstraints cA, keyCertSign when
/// keyUsage is present, pathLenConstraint respected); unknown critical extensions
/// are refused; every signature is ECDSA P-384 / SHA-384.
pub fn verify_chain(
    chain: &[Cert],
    root: &Cert,
    now: u64,
    leaf_use: LeafUse,
    cache: &mut SigCache,
    cache_from: usize,
) -> Result<(), String> {
    verify_chain_memo(chain, root, now, leaf_use, None, cache_from, cache)
}

/// [`verify_chain`] with two caches: signatures of certificates below position
/// `cache_from` come from `below` (when given; else they are always verified), those
/// at `cache_from` and above from `above`. A host that verifies many GPUs keeps the
/// device-specific certificates (leaf, BROM) in a bounded `below` and the CA
/// certificates every GPU shares in `above`.
pub fn verify_chain_memo(
    chain: &[Cert],
    root: &Cert,
    now: u64,
    leaf_use: LeafUse,
    mut below: Option<&mut SigCache>,
    cache_from: usize,
    above: &mut SigCache,
) -> Result<(), String> {
    let mut certs: Vec<&Cert> = chain.iter().collect();
    if let Some(last) = certs.last()
        && last.der == root.der
    {
        certs.pop();
    } else if let Some(last) = certs.last()
        && last.cert.tbs_certificate().subject() == last.cert.tbs_certificate().issuer()
    {
        return Err(format!(
            "chain ends in the self-signed {} which is not the pinned root {}",
            last.name(),
            root.name()
        ));
    }
    if certs.is_empty() {
        return Err("chain holds no certificate below the root".into());
    }
    // The root is trusted because it is pinned (by fingerprint, `roots`), not
    // because of its self-signature, so that is not checked; its validity period is.
    certs.push(root);
    for (i, c) in certs.iter().enumerate() {
        let (nb, na) = c.validity();
        if now < nb {
            return Err(format!("{} is not valid before {nb} (now {now})", c.name()));
        }
        if now > na {
            return Err(format!("{} expired at {na} (now {now})", c.name()));
        }
        c.check_critical_extensions()?;
        if i + 1 < certs.len() {
            let issuer = certs[i + 1];
            if i >= cache_from {
                above.check(c, issuer)?;
            } else if let Some(b) = below.as_deref_mut() {
                b.check(c, issuer)?;
            } else {
                c.verify_issued_by(issuer)?;
            }
        }
        if i == 0 {
            match leaf_use {
                LeafUse::DigitalSignature => {
                    if let Some(ku) = c.key_usage()?
                        && !ku.digital_signature()
                    {
                        return Err(format!("{}: keyUsage lacks digitalSignature", c.name()));
                    }
                }
            }
        } else {
            // An issuer: i certificates below it, i - 1 of them intermediates.
            let bc = c
                .basic_constraints()?
                .ok_or_else(|| format!("{}: issuer without basicConstraints", c.name()))?;
            if !bc.ca {
                return Err(format!("{}: issuer is not a CA", c.name()));
            }
            if let Some(max) = bc.path_len_constraint
                && i - 1 > usize::from(max)
            {
                return Err(format!("{}: pathLenConstraint {max} exceeded", c.name()));
            }
            if let Some(ku) = c.key_usage()?
                && !ku.key_cert_sign()
            {
                return Err(format!("{}: keyUsage lacks keyCertSign", c.name()));
            }
        }
    }
    Ok(())
}

/// Hopper's FWID from the leaf's TCG DICE extension: `SEQUENCE { INTEGER version,
/// SubjectPublicKeyInfo, SEQUENCE { OID sha384, OCTET STRING (48) } }`.
pub fn leaf_fwid(leaf: &Cert) -> Result<Option<Vec<u8>>, String> {
    #[derive(Sequence)]
    struct Fwid<'a> {
        hash_alg: ObjectIdentifier,
        digest: &'a OctetStringRef,
    }
    #[derive(Sequence)]
    struct HopperTcbInfo<'a> {
        version: UintRef<'a>,
        key: AnyRef<'a>,
        fwid: Fwid<'a>,
    }
    let Some(raw) = leaf.extension_value(TCG_DICE_FWID)? else {
        return Ok(None);
    };
    let info = HopperTcbInfo::from_der(raw)
        .map_err(|e| format!("leaf FWID extension does not parse: {e}"))?;
    let _ = (info.version, info.key);
    if info.fwid.hash_alg != ID_SHA384 || info.fwid.digest.as_bytes().len() != 48 {
        return Err("leaf FWID is not a SHA-384 digest".into());
    }
    Ok(Some(info.fwid.digest.as_bytes().to_vec()))
}

/// Splits a PEM bundle into DER certificates, in order.
pub fn pem_chain_to_der(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "PEM chain is not UTF-8".to_string())?;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        if !rest[..start].trim().is_empty() {
            return Err("unexpected text between PEM certificates".into());
        }
        let after = &rest[start..];
        let end = after.find(END).ok_or("PEM certificate without END line")? + END.len();
        let (label, der) = der::pem::decode_vec(&after.as_bytes()[..end])
            .map_err(|e| format!("bad PEM certificate {}: {e}", out.len()))?;
        if label != "CERTIFICATE" {
            return Err(format!("PEM label {label} is not CERTIFICATE"));
        }
        out.push(der);
        rest = &after[end..];
    }
    if !rest.trim().is_empty() {
        return Err("trailing text after the last PEM certificate".into());
    }
    if out.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(out)
}
