//! AMD's certificate revocation list for the VCEK chain, read offline.
//!
//! AMD KDS publishes one CRL per product at
//! `https://kdsintf.amd.com/vcek/v1/{Milan,Genoa,Turin}/crl` (the URL in the ARK's and
//! ASK's CRL distribution point). It is an X.509 v2 CRL issued and signed by the product's
//! ARK with RSASSA-PSS (SHA-384, MGF1-SHA-384, salt 48); it lists revoked ASKs. The
//! operator fetches it and gives it to the verifier as collateral
//! ([`crate::tee::Collateral::snp_crl`]); nothing here goes to the network.
//!
//! A CRL is accepted only if its issuer is the pinned ARK of the chain's product, its
//! signature algorithm is exactly that RSASSA-PSS profile (either of AMD's two
//! encodings), the signature over the exact `tbsCertList` bytes received verifies with
//! the pinned ARK's key, `thisUpdate − 5 min ≤ now ≤ nextUpdate` (a CRL without
//! nextUpdate is refused), and it carries no critical extension (RFC 5280 §5.2: a CRL
//! with a critical extension the reader does not process must not be used). Then the
//! chain's ASK serial must not be listed.
//!
//! The VCEK is not looked up: X.509 serials are unique per issuer, the ARK's CRL can only
//! revoke what the ARK issued, and every VCEK AMD issues has serial 0. AMD retires
//! VCEKs through TCB versions instead; that is the policy's `min_tcb`.

use der::{Decode, Reader, SliceReader};
use x509_cert::crl::CertificateList;
use x509_cert::name::Name;

use super::chain::{PinnedRoot, VerifiedChain, is_pss_sha384, pss_sha384_verify_key};
use crate::tee::{CertRole, TeeError};

/// Tolerated clock skew for a thisUpdate in the future (seconds).
pub const SKEW: u64 = 300;

fn malformed(e: impl std::fmt::Display) -> TeeError {
    TeeError::CrlMalformed(e.to_string())
}

/// Splits collateral into DER CRLs: PEM `X509 CRL` blocks, or DER CRLs back to back.
pub fn split(input: &[u8]) -> Result<Vec<Vec<u8>>, TeeError> {
    let trimmed = input.trim_ascii_start();
    if trimmed.starts_with(b"-----BEGIN") {
        let text = std::str::from_utf8(trimmed).map_err(|_| malformed("PEM is not UTF-8"))?;
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("-----BEGIN") {
            let block = rest.get(start..).unwrap_or("");
            let end_marker = "-----END X509 CRL-----";
            let end = block
                .find(end_marker)
                .ok_or_else(|| malformed("PEM block without END X509 CRL"))?;
            let one = block.get(..end + end_marker.len()).unwrap_or("");
            let (label, der) = der::pem::decode_vec(one.as_bytes()).map_err(malformed)?;
            if label != "X509 CRL" {
                return Err(malformed(format!("PEM label {label}, want X509 CRL")));
            }
            out.push(der);
            rest = block.get(end + end_marker.len()..).unwrap_or("");
        }
        if !rest.trim().is_empty() {
            return Err(malformed("bytes after the last PEM block"));
        }
        Ok(out)
    } else {
        let mut out = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let mut r = SliceReader::new(rest).map_err(malformed)?;
            let tlv = r.tlv_bytes().map_err(malformed)?;
            out.push(tlv.to_vec());
            rest = rest.get(tlv.len()..).unwrap_or(&[]);
        }
        Ok(out)
    }
}

/// A parsed CRL with the exact bytes its signature covers.
#[derive(Debug)]
pub struct Crl<'a> {
    /// The decoded list.
    pub list: CertificateList,
    /// The raw `tbsCertList` (first element of the outer SEQUENCE).
    pub tbs: &'a [u8],
}

impl<'a> Crl<'a> {
    /// Parses one DER CRL (no trailing bytes).
    pub fn parse(der: &'a [u8]) -> Result<Crl<'a>, TeeError> {
        let list = CertificateList::from_der(der).map_err(malformed)?;
        let mut r = SliceReader::new(der).map_err(malformed)?;
        let tbs = r
            .sequence(|inner| {
                let t = inner.tlv_bytes()?;
                inner.read_slice(inner.remaining_len())?;
                Ok::<_, der::Error>(t)
            })
            .map_err(malformed)?;
        Ok(Crl { list, tbs })
    }

    /// The issuer name.
    pub fn issuer(&self) -> &Name {
        &self.list.tbs_cert_list.issuer
    }

    /// Checks the signature with `issuer_key`, the window at `now` and the extensions,
    /// then that `serial` (the ASK's, DER INTEGER content bytes) is not listed.
    ///
    /// `issuer_key` must be a key the caller trusts for this CRL's issuer:
    /// [`crate::tee::verify`] passes only the pinned ARK of the chain's product.
    pub fn check(
        &self,
        issuer_key: &rsa::PublicKey,
        serial: &[u8],
        now: u64,
    ) -> Result<(), TeeError> {
        let tbs = &self.list.tbs_cert_list;
        let outer = der::Encode::to_der(&self.list.signature_algorithm).map_err(malformed)?;
        let inner = der::Encode::to_der(&tbs.signature).map_err(malformed)?;
        if !is_pss_sha384(&outer) || outer != inner {
            return Err(TeeError::CrlSignatureInvalid);
        }
        let sig = self
            .list
            .signature
            .as_bytes()
            .ok_or(TeeError::CrlSignatureInvalid)?;
        if !pss_sha384_verify_key(issuer_key, self.tbs, sig) {
            return Err(TeeError::CrlSignatureInvalid);
        }
        let this_update = tbs.this_update.to_unix_duration().as_secs();
        let next_update = tbs
            .next_update
            .ok_or_else(|| malformed("no nextUpdate"))?
            .to_unix_duration()
            .as_secs();
        if now.saturating_add(SKEW) < this_update || now > next_update {
            return Err(TeeError::CrlNotValidAt {
                this_update,
                next_update,
                now,
            });
        }
        let critical = |exts: &Option<x509_cert::ext::Extensions>| {
            exts.as_ref()
                .and_then(|e| e.iter().find(|x| x.critical).map(|x| x.extn_id.to_string()))
        };
        if let Some(oid) = critical(&tbs.crl_extensions) {
            return Err(malformed(format!("critical CRL extension {oid}")));
        }
        for entry in tbs.revoked_certificates.iter().flatten() {
            if let Some(oid) = critical(&entry.crl_entry_extensions) {
                return Err(malformed(format!("critical CRL entry extension {oid}")));
            }
            if entry.serial_number.as_bytes() == serial {
                return Err(TeeError::CertificateRevoked {
                    role: CertRole::Ask,
                    serial: hex::encode(serial),
                });
            }
        }
        Ok(())
    }
}

/// The pinned ARK's subject and RSA key.
fn ark_identity(root: &PinnedRoot) -> Result<(Name, rsa::PublicKey), TeeError> {
    let ark =
        x509_cert::Certificate::from_der(root.ark).map_err(|e| TeeError::CertificateMalformed {
            role: CertRole::Ark,
            detail: e.to_string(),
        })?;
    let spki = ark.tbs_certificate().subject_public_key_info();
    let bad = || TeeError::CertificateSignatureInvalid(CertRole::Ark);
    let spki_der = der::Encode::to_der(spki).map_err(|_| bad())?;
    let spki_ref = spki::SubjectPublicKeyInfoRef::from_der(&spki_der).map_err(|_| bad())?;
    let key = rsa::PublicKey::try_from(spki_ref).map_err(|_| bad())?;
    Ok((ark.tbs_certificate().subject().clone(), key))
}

/// Checks every CRL in `crls` (see [`split`]) issued by the chain's pinned ARK.
///
/// Returns whether at least one CRL applied; CRLs of other issuers (another product's
/// ARK) are skipped, but every CRL must parse.
pub(crate) fn check_chain(crls: &[u8], chain: &VerifiedChain, now: u64) -> Result<bool, TeeError> {
    let (ark_name, ark_key) = ark_identity(chain.root)?;
    let mut applied = false;
    for der in split(crls)? {
        let crl = Crl::parse(&der)?;
        if crl.issuer() != &ark_name {
            continue;
        }
        crl.check(&ark_key, &chain.ask_serial, now)?;
        applied = true;
    }
    Ok(applied)
}
