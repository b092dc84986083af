//! NVIDIA Reference Integrity Manifests: SWID tags (ISO/IEC 19770-2:2015) carrying
//! golden measurements, signed with an enveloped XML-DSig (ecdsa-sha384, SHA-384
//! digest, Canonical XML 1.1).
//!
//! [`VerifiedRim::verify`] checks the signature (reference digest, then SignedInfo
//! signature with the first embedded certificate's key) and that certificate's
//! chain to the pinned RIM root, and only then reads any value from the document.
//! The values come from the same parsed tree whose canonical form was digested.

use base64ct::{Base64, Encoding};
use sha2::{Digest, Sha384};

use super::x509::{Cert, LeafUse, SigCache, verify_chain, verify_raw_sig};
use super::xml::{self, Element, Scope};

const DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
const SWID: &str = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd";
const HASH_NS: &str = "http://www.w3.org/2001/04/xmlenc#sha384";
const C14N_10: &str = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315";
const C14N_11: &str = "http://www.w3.org/2006/12/xml-c14n11";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const ECDSA_SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384";
const SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#sha384";
const SHA384_ENC: &str = "http://www.w3.org/2001/04/xmlenc#sha384";
/// Most alternatives accepted for one index.
const MAX_ALTERNATIVES: usize = 16;

/// One golden measurement of a RIM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoldenMeasurement {
    /// Measurement index (matches the SPDM block index).
    pub index: u8,
    /// Whether the index is checked.
    pub active: bool,
    /// The `name` attribute.
    pub name: String,
    /// Acceptable values (any one matches).
    pub alternatives: Vec<Vec<u8>>,
}

/// A RIM whose signature and certificate chain have been verified.
#[derive(Debug, Clone)]
pub struct VerifiedRim {
    /// `Meta/@colloquialVersion`, as written.
    pub colloquial_version: String,
    /// `SoftwareIdentity/@tagId`.
    pub tag_id: String,
    /// The golden measurements, by index.
    pub measurements: Vec<GoldenMeasurement>,
    /// The embedded certificate chain (signer first), as verified.
    pub chain: Vec<Cert>,
}

impl VerifiedRim {
    /// The span of time in which every certificate of the chain (and `root`) is
    /// valid: a cached verification may be reused only inside it.
    pub fn validity_window(&self, root: &Cert) -> (u64, u64) {
        self.chain
            .iter()
            .chain(std::iter::once(root))
            .map(Cert::validity)
            .fold((0, u64::MAX), |(a, b), (nb, na)| (a.max(nb), b.min(na)))
    }
}

/// How far a RIM got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RimError {
    /// XML does not parse or is outside the accepted subset.
    Xml(String),
    /// The XML-DSig does not verify (structure, digest or signature).
    Signature(String),
    /// The signer's certificate chain does not reach the pinned root.
    Chain(String),
    /// The signed content is not a RIM this verifier understands.
    Content(String),
}

impl std::fmt::Display for RimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Xml(e) => write!(f, "XML: {e}"),
            Self::Signature(e) => write!(f, "XML-DSig: {e}"),
            Self::Chain(e) => write!(f, "certificate chain: {e}"),
            Self::Content(e) => write!(f, "content: {e}"),
        }
    }
}

fn only_attrs(el: &Element, allowed: &[&str]) -> Result<(), String> {
    for a in &el.attrs {
        if a.ns.is_some() || !allowed.contains(&a.local.as_str()) {
            return Err(format!(
                "unexpected attribute {} on {}",
                a.local,
                el.qname()
            ));
        }
    }
    Ok(())
}

fn ws_only(el: &Element) -> Result<(), String> {
    for n in &el.children {
        if let xml::Node::Text(t) = n
            && !t.chars().all(|c| c.is_ascii_whitespace())
        {
            return Err(format!("unexpected text in {}", el.qname()));
        }
    }
    Ok(())
}

/// Child elements, all required to be in the DSig namespace with the given names.
fn dsig_children<'a>(el: &'a Element, names: &[&str]) -> Result<Vec<&'a Element>, String> {
    ws_only(el)?;
    let kids: Vec<&Element> = el.elements().collect();
    if kids.len() != names.len() {
        return Err(format!(
            "{} has {} child elements, expected {:?}",
            el.qname(),
            kids.len(),
            names
        ));
    }
    for (k, n) in kids.iter().zip(names) {
        if !k.is(DSIG, n) {
            return Err(format!("{} where ds:{n} was expected", k.qname()));
        }
    }
    Ok(kids)
}

fn b64(text: &str) -> Result<Vec<u8>, String> {
    let clean: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    Base64::decode_vec(&clean).map_err(|_| "invalid base64".to_string())
}

fn algorithm(el: &Element) -> Result<&str, String> {
    only_attrs(el, &["Algorithm"])?;
    if el.elements().next().is_some() {
        return Err(format!("{} may not have child elements", el.qname()));
    }
    ws_only(el)?;
    el.attr("Algorithm")
        .ok_or_else(|| format!("{} without Algorithm", el.qname()))
}

impl VerifiedRim {
    /// Parses and verifies a RIM against the pinned RIM `root` at `now`.
    pub fn verify(bytes: &[u8], root: &Cert, now: u64) -> Result<Self, RimError> {
        Self::verify_with_cache(bytes, root, now, &mut SigCache::default())
    }

    /// [`VerifiedRim::verify`], sharing certificate checks with other RIMs.
    pub fn verify_with_cache(
        bytes: &[u8],
        root: &Cert,
        now: u64,
        cache: &mut SigCache,
    ) -> Result<Self, RimError> {
        let doc = xml::parse(bytes).map_err(RimError::Xml)?;
        let (sig_el, chain) = verify_signature(&doc).map_err(RimError::Signature)?;
        verify_chain(&chain, root, now, LeafUse::DigitalSignature, cache, 0)
            .map_err(RimError::Chain)?;
        // Only now is anything in the document used.
        let _ = sig_el;
        read_content(&doc, chain).map_err(RimError::Content)
    }
}

/// The certificates in a RIM's `ds:KeyInfo`, **unverified** — for finding out whose
/// revocation status to fetch, never for trusting anything.
pub fn embedded_certificates(bytes: &[u8]) -> Result<Vec<Cert>, String> {
    let doc = xml::parse(bytes)?;
    let sig = doc
        .elements()
        .find(|e| e.is(DSIG, "Signature"))
        .ok_or("no ds:Signature")?;
    let ki = sig
        .elements()
        .find(|e| e.is(DSIG, "KeyInfo"))
        .ok_or("no ds:KeyInfo")?;
    let xd = ki
        .elements()
        .find(|e| e.is(DSIG, "X509Data"))
        .ok_or("no ds:X509Data")?;
    xd.elements()
        .filter(|e| e.is(DSIG, "X509Certificate"))
        .map(|c| Cert::from_der(&b64(&c.text()?)?))
        .collect()
}

/// Checks the enveloped signature; returns the Signature element and the embedded
/// certificates (signer first). The signature is checked with the signer's key; the
/// caller still has to validate the chain.
fn verify_signature(doc: &Element) -> Result<(&Element, Vec<Cert>), String> {
    // Exactly one ds:Signature, a child of the root.
    let sigs: Vec<&Element> = doc.elements().filter(|e| e.is(DSIG, "Signature")).collect();
    let [sig] = sigs.as_slice() else {
        return Err(format!(
            "{} ds:Signature children of the root, expected 1",
            sigs.len()
        ));
    };
    if count_dsig_signatures(doc) != 1 {
        return Err("ds:Signature elsewhere in the document".into());
    }
    only_attrs(sig, &[])?;
    let [signed_info, sig_value, key_info] =
        dsig_children(sig, &["SignedInfo", "SignatureValue", "KeyInfo"])?[..]
    else {
        return Err("malformed ds:Signature".into());
    };
    only_attrs(signed_info, &[])?;
    let [c14n_m, sig_m, reference] = dsig_children(
        signed_info,
        &["CanonicalizationMethod", "SignatureMethod", "Reference"],
    )?[..] else {
        return Err("malformed ds:SignedInfo".into());
    };
    let si_c14n = algorithm(c14n_m)?;
    if si_c14n != C14N_11 && si_c14n != C14N_10 {
        return Err(format!(
            "SignedInfo canonicalization {si_c14n} not supported"
        ));
    }
    let sm = algorithm(sig_m)?;
    if sm != ECDSA_SHA384 {
        return Err(format!("signature method {sm} not supported"));
    }
    only_attrs(reference, &["URI"])?;
    if reference.attr("URI") != Some("") {
        return Err("Reference URI is not \"\" (whole document)".into());
    }
    let [transforms, digest_m, digest_v] =
        dsig_children(reference, &["Transforms", "DigestMethod", "DigestValue"])?[..]
    else {
        return Err("malformed ds:Reference".into());
    };
    only_attrs(transforms, &[])?;
    ws_only(transforms)?;
    let ts: Vec<&Element> = transforms.elements().collect();
    let mut algs = Vec::new();
    for t in &ts {
        if !t.is(DSIG, "Transform") {
            return Err(format!("{} in ds:Transforms", t.qname()));
        }
        algs.push(algorithm(t)?);
    }
    // enveloped-signature, then optionally one inclusive C14N (without it the
    // node-set is serialized with C14N 1.0 — the same output for this subset).
    match algs.as_slice() {
        [ENVELOPED] => {}
        [ENVELOPED, c] if *c == C14N_11 || *c == C14N_10 => {}
        other => return Err(format!("transforms {other:?} not supported")),
    }
    let dm = algorithm(digest_m)?;
    if dm != SHA384 && dm != SHA384_ENC {
        return Err(format!("digest method {dm} not supported"));
    }
    only_attrs(digest_v, &[])?;
    let expected_digest = b64(&digest_v.text()?)?;
    if expected_digest.len() != 48 {
        return Err("DigestValue is not 48 bytes".into());
    }
    only_attrs(sig_value, &[])?;
    let raw_sig = b64(&sig_value.text()?)?;
    if raw_sig.len() != 96 {
        return Err(format!(
            "SignatureValue is {} bytes, expected 96",
            raw_sig.len()
        ));
    }
    // KeyInfo / X509Data / X509Certificate+
    only_attrs(key_info, &[])?;
    let [x509_data] = dsig_children(key_info, &["X509Data"])?[..] else {
        return Err("malformed ds:KeyInfo".into());
    };
    only_attrs(x509_data, &[])?;
    ws_only(x509_data)?;
    let mut chain = Vec::new();
    for c in x509_data.elements() {
        if !c.is(DSIG, "X509Certificate") {
            return Err(format!("{} in ds:X509Data", c.qname()));
        }
        only_attrs(c, &[])?;
        chain.push(Cert::from_der(&b64(&c.text()?)?)?);
        if chain.len() > 8 {
            return Err("more than 8 certificates in ds:X509Data".into());
        }
    }
    let signer = chain.first().ok_or("no X509Certificate")?;

    // Reference validation (XML-DSig §3.2.1): digest of the canonical document
    // without the Signature element.
    let mut canon = String::with_capacity(64 * 1024);
    xml::canonicalize(doc, &Scope::new(), &Scope::new(), Some(sig), &mut canon);
    let digest = Sha384::digest(canon.as_bytes());
    if !ct_eq(digest.as_slice(), &expected_digest) {
        return Err("reference digest mismatch: the signed content was changed".into());
    }
    // Signature validation (§3.2.2): canonical SignedInfo, a document subset whose
    // apex inherits the namespaces in scope at ds:Signature.
    let sig_scope = sig.scope_inside(&doc.scope_inside(&Scope::new()));
    let mut si = String::new();
    xml::canonicalize(signed_info, &sig_scope, &Scope::new(), None, &mut si);
    let key = signer.public_key()?;
    verify_raw_sig(&key, si.as_bytes(), &raw_sig).map_err(|e| format!("SignatureValue: {e}"))?;
    Ok((sig, chain))
}

fn count_dsig_signatures(el: &Element) -> usize {
    el.elements()
        .map(|c| usize::from(c.is(DSIG, "Signature")) + count_dsig_signatures(c))
        .sum()
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn read_content(doc: &Element, chain: Vec<Cert>) -> Result<VerifiedRim, String> {
    if !doc.is(SWID, "SoftwareIdentity") {
        return Err(format!(
            "root element {} is not swid:SoftwareIdentity",
            doc.qname()
        ));
    }
    let tag_id = doc.attr("tagId").unwrap_or_default().to_string();
    let metas: Vec<&Element> = doc.elements().filter(|e| e.is(SWID, "Meta")).collect();
    let [meta] = metas.as_slice() else {
        return Err(format!("{} Meta elements, expected 1", metas.len()));
    };
    let colloquial_version = meta
        .attr("colloquialVersion")
        .filter(|v| !v.is_empty())
        .ok_or("Meta has no colloquialVersion")?
        .to_string();
    let payloads: Vec<&Element> = doc.elements().filter(|e| e.is(SWID, "Payload")).collect();
    let [payload] = payloads.as_slice() else {
        return Err(format!("{} Payload elements, expected 1", payloads.len()));
    };
    ws_only(payload)?;
    let mut measurements: Vec<GoldenMeasurement> = Vec::new();
    for r in payload.elements() {
        if !r.is(SWID, "Resource") {
            return Err(format!("{} in Payload", r.qname()));
        }
        if r.attr("type") != Some("Measurement") {
            return Err("Resource type is not Measurement".into());
        }
        let index: u8 = r
            .attr("index")
            .and_then(|v| v.parse().ok())
            .ok_or("Resource index missing or not 0..255")?;
        let active = match r.attr("active") {
            Some("True") => true,
            Some("False") => false,
            other => return Err(format!("Resource {index}: active = {other:?}")),
        };
        let n: usize = r
            .attr("alternatives")
            .and_then(|v| v.parse().ok())
            .filter(|n| (1..=MAX_ALTERNATIVES).contains(n))
            .ok_or_else(|| format!("Resource {index}: alternatives missing or out of range"))?;
        let size: usize = r
            .attr("size")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("Resource {index}: size missing"))?;
        if size != 48 {
            return Err(format!(
                "Resource {index}: size {size}, expected 48 (SHA-384)"
            ));
        }
        let mut alternatives = Vec::with_capacity(n);
        for i in 0..n {
            let h = r
                .attr_ns(HASH_NS, &format!("Hash{i}"))
                .ok_or_else(|| format!("Resource {index}: Hash{i} missing"))?;
            let v = hex::decode(h).map_err(|_| format!("Resource {index}: Hash{i} not hex"))?;
            if v.len() != size {
                return Err(format!("Resource {index}: Hash{i} is {} bytes", v.len()));
            }
            alternatives.push(v);
        }
        if r.attrs.iter().any(|a| {
            a.ns.as_deref() == Some(HASH_NS) && !(0..n).any(|i| a.local == format!("Hash{i}"))
        }) {
            return Err(format!("Resource {index}: more hashes than alternatives"));
        }
        if measurements.iter().any(|m| m.index == index) {
            return Err(format!("index {index} appears twice"));
        }
        measurements.push(GoldenMeasurement {
            index,
            active,
            name: r.attr("name").unwrap_or_default().to_string(),
            alternatives,
        });
    }
    if measurements.is_empty() {
        return Err("no measurements".into());
    }
    Ok(VerifiedRim {
        colloquial_version,
        tag_id,
        measurements,
        chain,
    })
}
