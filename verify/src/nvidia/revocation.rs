//! Offline revocation: X.509 CRLs (RFC 5280 §5) and OCSP responses (RFC 6960)
//! fetched earlier (`pqcc gpu fetch-collateral`) and read from a bundle directory.
//!
//! A certificate counts as not revoked only when a status for it verifies: an OCSP
//! response signed by its issuer (or by a responder certificate the issuer gave the
//! OCSPSigning purpose), or a CRL signed by its issuer, in both cases issued no more
//! than `max_age` seconds before `now` and not past its nextUpdate. A verified
//! "revoked" (or OCSP "unknown") from any source fails the check.

use std::path::Path;

use der::asn1::{AnyRef, BitStringRef, GeneralizedTime, IntRef, ObjectIdentifier, OctetStringRef};
use der::{Decode, Encode, Sequence};
use sha2::{Digest, Sha256, Sha384, Sha512};
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::ExtendedKeyUsage;

use super::x509::{Cert, ECDSA_WITH_SHA384, split_signed, verify_der_sig};

const ID_PKIX_OCSP_BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
const ID_KP_OCSP_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.9");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
/// Tolerated clock skew for thisUpdate in the future.
const SKEW: u64 = 300;
/// Largest collateral file read.
const MAX_FILE: u64 = 16 << 20;

/// Revocation data read from a collateral bundle.
#[derive(Debug, Clone, Default)]
pub struct Collateral {
    /// CRLs (DER), with the file each came from.
    pub crls: Vec<(String, Vec<u8>)>,
    /// OCSP responses (DER `OCSPResponse`), with the file each came from.
    pub ocsp: Vec<(String, Vec<u8>)>,
}

impl Collateral {
    /// Reads `DIR/crl/*` (DER, or PEM `X509 CRL`) and `DIR/ocsp/*` (DER). A missing
    /// subdirectory is empty; an unreadable file is an error.
    pub fn load_dir(dir: &Path) -> Result<Self, String> {
        let mut c = Collateral::default();
        for (sub, is_crl) in [("crl", true), ("ocsp", false)] {
            let d = dir.join(sub);
            if !d.exists() {
                continue;
            }
            let mut entries: Vec<_> = std::fs::read_dir(&d)
                .map_err(|e| format!("{}: {e}", d.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", d.display()))?;
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let p = e.path();
                if !p.is_file() {
                    continue;
                }
                let len = p
                    .metadata()
                    .map_err(|e| format!("{}: {e}", p.display()))?
                    .len();
                if len > MAX_FILE {
                    return Err(format!("{}: larger than {MAX_FILE} bytes", p.display()));
                }
                let mut bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                if is_crl && bytes.starts_with(b"-----BEGIN") {
                    let (label, der) = der::pem::decode_vec(&bytes)
                        .map_err(|e| format!("{}: bad PEM: {e}", p.display()))?;
                    if label != "X509 CRL" {
                        return Err(format!("{}: PEM label {label}", p.display()));
                    }
                    bytes = der;
                }
                let name = p.display().to_string();
                if is_crl {
                    c.crls.push((name, bytes));
                } else {
                    c.ocsp.push((name, bytes));
                }
            }
        }
        Ok(c)
    }

    /// Whether the bundle holds nothing.
    pub fn is_empty(&self) -> bool {
        self.crls.is_empty() && self.ocsp.is_empty()
    }

    /// The entries that could not serve a check at `now` with the age limit `max_age`
    /// (seconds since `thisUpdate`): past their `nextUpdate`, too old, issued in the
    /// future, or not parsing. Empty when every entry is usable. A loader calls this to
    /// refuse collateral that is already out of date, before any evidence arrives.
    pub fn stale_entries(&self, now: u64, max_age: u64) -> Vec<String> {
        let mut out = Vec::new();
        for (file, der) in &self.crls {
            match CertificateList::<x509_cert::certificate::Rfc5280>::from_der(der) {
                Ok(crl) => {
                    let tbs = &crl.tbs_cert_list;
                    let tu = tbs.this_update.to_unix_duration().as_secs();
                    let nu = tbs.next_update.map(|t| t.to_unix_duration().as_secs());
                    if let Err(e) = fresh(tu, nu, now, max_age) {
                        out.push(format!("{file}: CRL {e}"));
                    }
                }
                Err(e) => out.push(format!("{file}: not a CRL: {e}")),
            }
        }
        for (file, der) in &self.ocsp {
            match ocsp_single_responses(der) {
                Ok(times) => {
                    for (tu, nu) in times {
                        if let Err(e) = fresh(tu, nu, now, max_age) {
                            out.push(format!("{file}: OCSP response {e}"));
                        }
                    }
                }
                Err(e) => out.push(format!("{file}: {e}")),
            }
        }
        out
    }
}

/// `(thisUpdate, nextUpdate)` of every SingleResponse of an OCSPResponse (the
/// signature is judged at verification time).
fn ocsp_single_responses(der: &[u8]) -> Result<Vec<(u64, Option<u64>)>, String> {
    ocsp_response_status(der)?;
    let resp = OcspResponse::from_der(der).map_err(|e| format!("not an OCSPResponse: {e}"))?;
    let rb = resp.bytes.ok_or("no responseBytes")?;
    let basic = BasicOcspResponse::from_der(rb.response.as_bytes())
        .map_err(|e| format!("BasicOCSPResponse: {e}"))?;
    let tbs = basic.tbs.to_der().map_err(|e| e.to_string())?;
    let data = ResponseData::from_der(&tbs).map_err(|e| format!("ResponseData: {e}"))?;
    Ok(data
        .responses
        .iter()
        .map(|sr| {
            (
                sr.this_update.to_unix_duration().as_secs(),
                sr.next_update.map(|t| t.to_unix_duration().as_secs()),
            )
        })
        .collect())
}

#[derive(Sequence)]
struct OcspResponse<'a> {
    status: AnyRef<'a>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    bytes: Option<ResponseBytes<'a>>,
}

#[derive(Sequence)]
struct ResponseBytes<'a> {
    response_type: ObjectIdentifier,
    response: &'a OctetStringRef,
}

#[derive(Sequence)]
struct BasicOcspResponse<'a> {
    tbs: AnyRef<'a>,
    alg: x509_cert::spki::AlgorithmIdentifierRef<'a>,
    sig: BitStringRef<'a>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    certs: Option<Vec<AnyRef<'a>>>,
}

#[derive(Sequence)]
struct ResponseData<'a> {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    version: Option<u8>,
    responder_id: AnyRef<'a>,
    produced_at: GeneralizedTime,
    responses: Vec<SingleResponse<'a>>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    extensions: Option<AnyRef<'a>>,
}

#[derive(Sequence)]
struct SingleResponse<'a> {
    cert_id: CertId<'a>,
    cert_status: AnyRef<'a>,
    this_update: GeneralizedTime,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    next_update: Option<GeneralizedTime>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    extensions: Option<AnyRef<'a>>,
}

#[derive(Sequence)]
struct AlgId<'a> {
    oid: ObjectIdentifier,
    #[asn1(optional = "true")]
    params: Option<AnyRef<'a>>,
}

/// CertID (RFC 6960 §4.1.1).
#[derive(Sequence)]
struct CertId<'a> {
    hash_alg: AlgId<'a>,
    name_hash: &'a OctetStringRef,
    key_hash: &'a OctetStringRef,
    serial: IntRef<'a>,
}

/// Builds a DER OCSPRequest (RFC 6960 §4.1.1) for `cert` issued by `issuer`, with a
/// SHA-384 CertID and no nonce (responses are cached for offline use).
pub fn ocsp_request(cert: &Cert, issuer: &Cert) -> Result<Vec<u8>, String> {
    #[derive(Sequence)]
    struct Request<'a> {
        cert_id: CertId<'a>,
    }
    #[derive(Sequence)]
    struct TbsRequest<'a> {
        request_list: Vec<Request<'a>>,
    }
    #[derive(Sequence)]
    struct OcspRequest<'a> {
        tbs: TbsRequest<'a>,
    }
    let (name_hash, key_hash) = issuer_hashes(cert, issuer, &ID_SHA384)?;
    let serial = IntRef::new(cert.serial()).map_err(|e| e.to_string())?;
    let req = OcspRequest {
        tbs: TbsRequest {
            request_list: vec![Request {
                cert_id: CertId {
                    hash_alg: AlgId {
                        oid: ID_SHA384,
                        params: Some(AnyRef::NULL),
                    },
                    name_hash: OctetStringRef::new(&name_hash).map_err(|e| e.to_string())?,
                    key_hash: OctetStringRef::new(&key_hash).map_err(|e| e.to_string())?,
                    serial,
                },
            }],
        },
    };
    req.to_der().map_err(|e| e.to_string())
}

fn hash(alg: &ObjectIdentifier, data: &[u8]) -> Option<Vec<u8>> {
    Some(match *alg {
        ID_SHA256 => Sha256::digest(data).to_vec(),
        ID_SHA384 => Sha384::digest(data).to_vec(),
        ID_SHA512 => Sha512::digest(data).to_vec(),
        _ => return None,
    })
}

/// issuerNameHash and issuerKeyHash of `cert` under `alg`.
fn issuer_hashes(
    cert: &Cert,
    issuer: &Cert,
    alg: &ObjectIdentifier,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let name = cert
        .cert
        .tbs_certificate()
        .issuer()
        .to_der()
        .map_err(|e| e.to_string())?;
    let key = issuer
        .cert
        .tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .raw_bytes();
    let nh = hash(alg, &name).ok_or("unsupported CertID hash")?;
    let kh = hash(alg, key).ok_or("unsupported CertID hash")?;
    Ok((nh, kh))
}

/// The status one source gives a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Good(String),
    Revoked(String),
}

fn fresh(this_update: u64, next_update: Option<u64>, now: u64, max_age: u64) -> Result<(), String> {
    if this_update > now.saturating_add(SKEW) {
        return Err(format!("issued in the future ({this_update} > {now})"));
    }
    if now.saturating_sub(this_update) > max_age {
        return Err(format!(
            "issued at {this_update}, older than the {max_age} s the policy allows"
        ));
    }
    if let Some(n) = next_update
        && now > n
    {
        return Err(format!("past its nextUpdate {n}"));
    }
    Ok(())
}

/// Checks that `der` is an OCSPResponse with status successful and a basic response
/// (its signature and content are judged at verification time).
pub fn ocsp_response_status(der: &[u8]) -> Result<(), String> {
    let resp = OcspResponse::from_der(der).map_err(|e| format!("not an OCSPResponse: {e}"))?;
    let st = resp.status.to_der().map_err(|e| e.to_string())?;
    if st != [0x0A, 0x01, 0x00] {
        return Err(format!("OCSP responseStatus {st:02x?} is not successful"));
    }
    let rb = resp.bytes.ok_or("no responseBytes")?;
    if rb.response_type != ID_PKIX_OCSP_BASIC {
        return Err(format!("response type {} is not basic", rb.response_type));
    }
    BasicOcspResponse::from_der(rb.response.as_bytes())
        .map_err(|e| format!("BasicOCSPResponse: {e}"))?;
    Ok(())
}

/// Checks that `der` parses as an X.509 v2 CRL with an ECDSA P-384 signature
/// (v1 CRLs, without a version field, are not accepted).
pub fn check_crl_parses(der: &[u8]) -> Result<(), String> {
    CertificateList::<x509_cert::certificate::Rfc5280>::from_der(der)
        .map_err(|e| format!("not a CRL: {e}"))?;
    split_signed(der).map(|_| ())
}

fn ocsp_status(
    file: &str,
    der: &[u8],
    cert: &Cert,
    issuer: &Cert,
    now: u64,
    max_age: u64,
) -> Result<Option<Status>, String> {
    let resp =
        OcspResponse::from_der(der).map_err(|e| format!("{file}: not an OCSPResponse: {e}"))?;
    let st = resp.status.to_der().map_err(|e| e.to_string())?;
    if st != [0x0A, 0x01, 0x00] {
        return Err(format!("{file}: OCSP responseStatus is not successful"));
    }
    let rb = resp
        .bytes
        .ok_or_else(|| format!("{file}: no responseBytes"))?;
    if rb.response_type != ID_PKIX_OCSP_BASIC {
        return Err(format!(
            "{file}: response type {} is not basic",
            rb.response_type
        ));
    }
    let basic_der = rb.response.as_bytes();
    let basic = BasicOcspResponse::from_der(basic_der)
        .map_err(|e| format!("{file}: BasicOCSPResponse: {e}"))?;
    let tbs = basic.tbs.to_der().map_err(|e| e.to_string())?;
    let data = ResponseData::from_der(&tbs).map_err(|e| format!("{file}: ResponseData: {e}"))?;
    let _ = (
        &data.version,
        &data.responder_id,
        &data.produced_at,
        &data.extensions,
    );
    // Which single responses are about this certificate?
    let mut mine = Vec::new();
    for sr in &data.responses {
        let Ok((nh, kh)) = issuer_hashes(cert, issuer, &sr.cert_id.hash_alg.oid) else {
            continue;
        };
        if sr.cert_id.name_hash.as_bytes() == nh.as_slice()
            && sr.cert_id.key_hash.as_bytes() == kh.as_slice()
            && sr.cert_id.serial.as_bytes() == cert.serial()
        {
            mine.push(sr);
        }
    }
    if mine.is_empty() {
        return Ok(None);
    }
    // Signature: the issuer itself, or a delegated responder it certified.
    if basic.alg.oid != ECDSA_WITH_SHA384 || basic.alg.parameters.is_some() {
        return Err(format!(
            "{file}: OCSP signature algorithm {} is not ecdsa-with-SHA384",
            basic.alg.oid
        ));
    }
    let sig = basic
        .sig
        .as_bytes()
        .ok_or_else(|| format!("{file}: OCSP signature has unused bits"))?
        .to_vec();
    let by_issuer = issuer
        .public_key()
        .and_then(|k| verify_der_sig(&k, &tbs, &sig))
        .is_ok();
    let mut delegated_err = String::from("no responder certificate");
    let mut by_delegate = false;
    if !by_issuer {
        for c in basic.certs.iter().flatten() {
            let der = c.to_der().map_err(|e| e.to_string())?;
            let r = Cert::from_der(&der).and_then(|rc| {
                rc.verify_issued_by(issuer)?;
                let (nb, na) = rc.validity();
                if now < nb || now > na {
                    return Err("responder certificate not valid now".into());
                }
                let eku = rc
                    .cert
                    .tbs_certificate()
                    .get_extension::<ExtendedKeyUsage>()
                    .map_err(|e| e.to_string())?;
                if !eku.is_some_and(|(_, e)| e.0.contains(&ID_KP_OCSP_SIGNING)) {
                    return Err("responder certificate lacks id-kp-OCSPSigning".into());
                }
                verify_der_sig(&rc.public_key()?, &tbs, &sig)
            });
            match r {
                Ok(()) => {
                    by_delegate = true;
                    break;
                }
                Err(e) => delegated_err = e,
            }
        }
    }
    if !by_issuer && !by_delegate {
        return Err(format!(
            "{file}: OCSP signature does not verify ({delegated_err})"
        ));
    }
    let mut result = None;
    for sr in mine {
        let tu = sr.this_update.to_unix_duration().as_secs();
        let nu = sr.next_update.map(|t| t.to_unix_duration().as_secs());
        let cs = sr.cert_status.to_der().map_err(|e| e.to_string())?;
        match cs.first() {
            Some(0xA1) => {
                return Ok(Some(Status::Revoked(format!("{file}: OCSP says revoked"))));
            }
            Some(0x82) => {
                return Ok(Some(Status::Revoked(format!(
                    "{file}: OCSP status unknown"
                ))));
            }
            Some(0x80) if cs == [0x80, 0x00] => {
                fresh(tu, nu, now, max_age).map_err(|e| format!("{file}: OCSP response {e}"))?;
                result = Some(Status::Good(format!("OCSP good ({file})")));
            }
            _ => return Err(format!("{file}: malformed certStatus")),
        }
    }
    Ok(result)
}

fn crl_status(
    file: &str,
    der: &[u8],
    cert: &Cert,
    issuer: &Cert,
    now: u64,
    max_age: u64,
) -> Result<Option<Status>, String> {
    let crl = CertificateList::<x509_cert::certificate::Rfc5280>::from_der(der)
        .map_err(|e| format!("{file}: not a CRL: {e}"))?;
    let tbs = &crl.tbs_cert_list;
    if tbs.issuer != *cert.cert.tbs_certificate().issuer() {
        return Ok(None);
    }
    if tbs.issuer != *issuer.cert.tbs_certificate().subject() {
        return Ok(None);
    }
    let (tbs_der, sig) = split_signed(der).map_err(|e| format!("{file}: {e}"))?;
    verify_der_sig(&issuer.public_key()?, &tbs_der, &sig)
        .map_err(|e| format!("{file}: CRL signature by {}: {e}", issuer.name()))?;
    if tbs.crl_extensions.iter().flatten().any(|e| e.critical) {
        return Err(format!(
            "{file}: CRL has a critical extension (partitioned or delta CRLs are not supported)"
        ));
    }
    let tu = tbs.this_update.to_unix_duration().as_secs();
    let nu = tbs.next_update.map(|t| t.to_unix_duration().as_secs());
    fresh(tu, nu, now, max_age).map_err(|e| format!("{file}: CRL {e}"))?;
    for rc in tbs.revoked_certificates.iter().flatten() {
        if rc.crl_entry_extensions.iter().flatten().any(|e| e.critical) {
            return Err(format!("{file}: CRL entry with a critical extension"));
        }
        if rc.serial_number.as_bytes() == cert.serial() {
            return Ok(Some(Status::Revoked(format!("{file}: listed in CRL"))));
        }
    }
    Ok(Some(Status::Good(format!("not in CRL ({file})"))))
}

/// Checks `chain[first..len-1]`, each against `chain[i + 1]` as issuer. Returns a
/// summary on success.
pub fn check_chain(
    label: &str,
    chain: &[Cert],
    first: usize,
    coll: &Collateral,
    now: u64,
    max_age: u64,
) -> Result<String, String> {
    let mut summary = Vec::new();
    for i in first..chain.len().saturating_sub(1) {
        let (cert, issuer) = (&chain[i], &chain[i + 1]);
        let mut good = None;
        for (file, der) in &coll.ocsp {
            match ocsp_status(file, der, cert, issuer, now, max_age)? {
                Some(Status::Revoked(why)) => {
                    return Err(format!("{label}: {} revoked: {why}", cert.name()));
                }
                Some(Status::Good(why)) => good = Some(why),
                None => {}
            }
        }
        for (file, der) in &coll.crls {
            match crl_status(file, der, cert, issuer, now, max_age)? {
                Some(Status::Revoked(why)) => {
                    return Err(format!("{label}: {} revoked: {why}", cert.name()));
                }
                Some(Status::Good(why)) => good = good.or(Some(why)),
                None => {}
            }
        }
        match good {
            Some(why) => summary.push(format!("{}: {why}", cert.name())),
            None => {
                return Err(format!(
                    "{label}: no fresh CRL or OCSP status for {} in the bundle",
                    cert.name()
                ));
            }
        }
    }
    Ok(format!("{label}: {}", summary.join("; ")))
}
