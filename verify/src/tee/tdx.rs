//! Intel TDX quotes (v4 and v5) with full DCAP verification.
//!
//! The DCAP steps are done by `dcap-qvl` (a maintained pure-Rust port of Intel's
//! Quote Verification Library), called offline with the Intel SGX Root CA compiled
//! into this crate ([`INTEL_SGX_ROOT_CA`], SHA-256 pinned in
//! [`INTEL_SGX_ROOT_CA_SHA256`]):
//!
//! 1. the root CA is checked against the root-CA CRL; the PCK CRL, TCB info and QE
//!    identity issuer chains must end at the pinned root and their signatures verify;
//! 2. the PCK certificate chain carried in the quote (certification data type 6 → 5)
//!    must end at the pinned root, with no certificate revoked by the CRLs;
//! 3. the QE report is signed by the PCK key, its report data is
//!    `SHA-256(attestation key ‖ QE auth data) ‖ 0³²`, and it matches the signed QE
//!    identity (MRSIGNER, ISVPRODID, masked MISCSELECT/ATTRIBUTES, ISVSVN level);
//! 4. the quote (header ‖ TD report) is signed by the attestation key;
//! 5. the PCK's FMSPC / PCE id must match the TCB info, and the TCB status is the
//!    TCB level of the PCK's CPUSVN/PCESVN and the TD's TEE_TCB_SVN (TDX module).
//!
//! Before that, this module parses the quote strictly (no trailing bytes) and checks
//! the TCB info and QE identity windows itself, so an out-of-date collateral is
//! reported as [`TeeError::TdxCollateralNotValidAt`]. After it: TD (not SGX) report,
//! accepted TCB status, debug attribute, measurements, report data.

use serde::Deserialize;

use super::{
    Collateral, Measurements, TcbStatus, TeeError, TeePlatform, TeePolicy, VerifiedTee, ct_eq,
    policy_hex,
};

/// The Intel SGX Root CA (DER), the only root a PCK chain may end at.
pub const INTEL_SGX_ROOT_CA: &[u8] = include_bytes!("tdx/intel_sgx_root_ca.der");
/// SHA-256 of [`INTEL_SGX_ROOT_CA`].
pub const INTEL_SGX_ROOT_CA_SHA256: &str =
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3";

/// Quote header TEE type of a TD quote.
const TEE_TYPE_TDX: u32 = 0x81;

/// TD attribute bit 0: the TD is debuggable.
pub const TD_ATTR_DEBUG: u64 = 1;

/// DCAP collateral for one platform (FMSPC), as fetched from Intel PCS / a PCCS.
///
/// JSON form (the format of `dcap-qvl`'s `QuoteCollateralV3`): `pck_crl_issuer_chain`,
/// `tcb_info_issuer_chain`, `qe_identity_issuer_chain` (PEM; the QE identity chain
/// defaults to the TCB info chain, the same Intel TCB Signing certificate), `root_ca_crl`
/// and `pck_crl` (hex DER), `tcb_info` and `qe_identity` (the signed JSON bodies, as
/// strings), `tcb_info_signature` and `qe_identity_signature` (hex `r ‖ s`).
#[derive(Debug, Clone)]
pub struct TdxCollateral {
    inner: dcap_qvl::QuoteCollateralV3,
    tcb_info_window: (u64, u64),
    qe_identity_window: (u64, u64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CollateralJson {
    pck_crl_issuer_chain: String,
    root_ca_crl: String,
    pck_crl: String,
    tcb_info_issuer_chain: String,
    tcb_info: String,
    tcb_info_signature: String,
    #[serde(default)]
    qe_identity_issuer_chain: Option<String>,
    qe_identity: String,
    qe_identity_signature: String,
    #[serde(default)]
    pck_certificate_chain: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Dates {
    issue_date: String,
    next_update: String,
}

fn bad(what: impl std::fmt::Display) -> TeeError {
    TeeError::TdxCollateralMalformed(what.to_string())
}

fn window(what: &str, json: &str) -> Result<(u64, u64), TeeError> {
    let d: Dates = serde_json::from_str(json).map_err(|e| bad(format!("{what}: {e}")))?;
    Ok((
        rfc3339_secs(&d.issue_date).ok_or_else(|| bad(format!("{what}: issueDate")))?,
        rfc3339_secs(&d.next_update).ok_or_else(|| bad(format!("{what}: nextUpdate")))?,
    ))
}

impl TdxCollateral {
    /// Parses the JSON collateral.
    pub fn from_json(json: &[u8]) -> Result<TdxCollateral, TeeError> {
        let j: CollateralJson = serde_json::from_slice(json).map_err(bad)?;
        let hexd =
            |name: &str, s: &str| hex::decode(s.trim()).map_err(|e| bad(format!("{name}: {e}")));
        let tcb_info_window = window("tcb_info", &j.tcb_info)?;
        let qe_identity_window = window("qe_identity", &j.qe_identity)?;
        let inner = dcap_qvl::QuoteCollateralV3 {
            root_ca_crl: hexd("root_ca_crl", &j.root_ca_crl)?,
            pck_crl: hexd("pck_crl", &j.pck_crl)?,
            tcb_info_signature: hexd("tcb_info_signature", &j.tcb_info_signature)?,
            qe_identity_signature: hexd("qe_identity_signature", &j.qe_identity_signature)?,
            qe_identity_issuer_chain: j
                .qe_identity_issuer_chain
                .unwrap_or_else(|| j.tcb_info_issuer_chain.clone()),
            pck_crl_issuer_chain: j.pck_crl_issuer_chain,
            tcb_info_issuer_chain: j.tcb_info_issuer_chain,
            tcb_info: j.tcb_info,
            qe_identity: j.qe_identity,
            pck_certificate_chain: j.pck_certificate_chain,
        };
        Ok(TdxCollateral {
            inner,
            tcb_info_window,
            qe_identity_window,
        })
    }

    /// The earliest `nextUpdate` of the TCB info and QE identity (Unix seconds).
    pub fn next_update(&self) -> u64 {
        self.tcb_info_window.1.min(self.qe_identity_window.1)
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` into Unix seconds.
fn rfc3339_secs(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: core::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 20
        || b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || b.get(10) != Some(&b'T')
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
        || b.last() != Some(&b'Z')
        || !matches!(b.get(19), Some(b'.' | b'Z'))
    {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// Checks that the quote is exactly one v4/v5 quote: header ‖ body ‖ u32 length ‖
/// auth data, followed by nothing but zero padding.
fn parse_strict(quote: &[u8]) -> Result<dcap_qvl::quote::Quote, TeeError> {
    let q = dcap_qvl::quote::Quote::parse(quote)
        .map_err(|e| TeeError::TdxQuoteMalformed(e.to_string()))?;
    if q.header.tee_type != TEE_TYPE_TDX {
        return Err(TeeError::NotATdQuote);
    }
    if !(4..=5).contains(&q.header.version) {
        return Err(TeeError::TdxQuoteMalformed(format!(
            "quote version {} (want 4 or 5)",
            q.header.version
        )));
    }
    // Auth data v4 (also in v5): signature ‖ attestation key ‖ certification data of
    // type 6 (QE report certification data) whose body is exactly QE report ‖ QE report
    // signature ‖ QE auth data ‖ certification data of type 5 (PCK chain, PEM).
    let dcap_qvl::quote::AuthData::V4(auth) = &q.auth_data else {
        return Err(TeeError::TdxQuoteMalformed(
            "auth data is not version 4".into(),
        ));
    };
    if auth.certification_data.cert_type != 6 {
        return Err(TeeError::TdxQuoteMalformed(format!(
            "certification data type {} (want 6, QE report)",
            auth.certification_data.cert_type
        )));
    }
    let inner = &auth.qe_report_data;
    if inner.certification_data.cert_type != 5 {
        return Err(TeeError::TdxQuoteMalformed(format!(
            "QE certification data type {} (want 5, PCK chain)",
            inner.certification_data.cert_type
        )));
    }
    let body_len = 384
        + 64
        + 2
        + inner.qe_auth_data.data.len()
        + 2
        + 4
        + inner.certification_data.body.data.len();
    if body_len != auth.certification_data.body.data.len() {
        return Err(TeeError::TdxQuoteMalformed(
            "bytes after the QE certification data".into(),
        ));
    }
    // The PCK chain must be well-formed PEM throughout (dcap-qvl's PEM reader skips
    // bytes between blocks); one trailing NUL is allowed, as Intel's QE writes it.
    let pem = inner.certification_data.body.data.as_slice();
    let pem = pem.strip_suffix(b"\0").unwrap_or(pem);
    match x509_cert::Certificate::load_pem_chain(pem) {
        Ok(chain) if !chain.is_empty() && pem.ends_with(b"-----END CERTIFICATE-----\n") => {}
        _ => {
            return Err(TeeError::TdxQuoteMalformed(
                "PCK chain is not strict PEM".into(),
            ));
        }
    }
    let auth_len_expected = 64 + 64 + 2 + 4 + body_len;
    let signed = q.signed_length();
    let auth_len = quote
        .get(signed..signed.saturating_add(4))
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| TeeError::TdxQuoteMalformed("truncated".into()))?;
    if auth_len as usize != auth_len_expected {
        return Err(TeeError::TdxQuoteMalformed(
            "bytes after the auth data".into(),
        ));
    }
    let total = signed
        .checked_add(4)
        .and_then(|n| n.checked_add(auth_len as usize))
        .ok_or_else(|| TeeError::TdxQuoteMalformed("length overflow".into()))?;
    // Quote services pad the quote with zeros to their buffer size; anything else after
    // the auth data is refused.
    match quote.get(total..) {
        Some(rest) if rest.iter().all(|&b| b == 0) => {}
        _ => {
            return Err(TeeError::TdxQuoteMalformed(
                "trailing bytes after the quote".into(),
            ));
        }
    }
    Ok(q)
}

fn tcb_status(s: &str) -> Result<TcbStatus, TeeError> {
    Ok(match s {
        "UpToDate" => TcbStatus::UpToDate,
        "SWHardeningNeeded" => TcbStatus::SWHardeningNeeded,
        "ConfigurationNeeded" => TcbStatus::ConfigurationNeeded,
        "ConfigurationAndSWHardeningNeeded" => TcbStatus::ConfigurationAndSWHardeningNeeded,
        "OutOfDate" => TcbStatus::OutOfDate,
        "OutOfDateConfigurationNeeded" => TcbStatus::OutOfDateConfigurationNeeded,
        "Revoked" => TcbStatus::Revoked,
        "TDRelaunchAdvised" => TcbStatus::TDRelaunchAdvised,
        "TDRelaunchAdvisedConfigurationNeeded" => TcbStatus::TDRelaunchAdvisedConfigurationNeeded,
        other => {
            return Err(TeeError::TdxQuoteRejected(format!(
                "unknown TCB status {other}"
            )));
        }
    })
}

/// The quote's REPORTDATA, unverified (see [`super::claimed_report_data`]).
pub(crate) fn claimed_report_data(quote: &[u8]) -> Result<[u8; 64], TeeError> {
    let q = parse_strict(quote)?;
    q.report
        .as_td10()
        .map(|td| td.report_data)
        .ok_or(TeeError::NotATdQuote)
}

/// Verifies a TDX evidence blob (the quote); see the module docs for the steps.
pub(crate) fn verify(
    quote: &[u8],
    policy: &TeePolicy,
    collateral: &Collateral,
    expected_report_data: &[u8; 64],
    now: u64,
) -> Result<VerifiedTee, TeeError> {
    let parsed = parse_strict(quote)?;
    if parsed.report.as_td10().is_none() {
        return Err(TeeError::NotATdQuote);
    }
    let coll = collateral
        .tdx
        .as_ref()
        .ok_or(TeeError::MissingCollateral("TDX DCAP collateral"))?;
    for (what, (issued, next_update)) in [
        ("TCB info", coll.tcb_info_window),
        ("QE identity", coll.qe_identity_window),
    ] {
        if now < issued || now > next_update {
            return Err(TeeError::TdxCollateralNotValidAt {
                what,
                issued,
                next_update,
                now,
            });
        }
        if let Some(max) = policy.max_collateral_age_secs
            && now - issued > max
        {
            return Err(TeeError::CollateralTooOld {
                age: now - issued,
                max,
            });
        }
    }

    // Full DCAP verification. Debug TDs are let through here and refused below with a
    // named error, so the policy's `insecure_allow_debug` is the one switch.
    let verifier =
        dcap_qvl::verify::QuoteVerifier::new(INTEL_SGX_ROOT_CA.to_vec()).allow_debug(true);
    let report = verifier
        .verify(quote, &coll.inner, now)
        .map_err(|e| TeeError::TdxQuoteRejected(format!("{e:#}")))?;
    let td = report.report.as_td10().ok_or(TeeError::NotATdQuote)?;

    let status = tcb_status(&report.status)?;
    if !policy.tdx.accepted_tcb_status.contains(&status) {
        return Err(TeeError::TcbStatusNotAccepted(status));
    }
    let td_attributes = u64::from_le_bytes(td.td_attributes);
    let debug = td_attributes & TD_ATTR_DEBUG != 0;
    if debug && !policy.insecure_allow_debug {
        return Err(TeeError::DebugNotAllowed);
    }
    let rtmr = [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3];
    check_measurements(policy, &td.mr_td, &rtmr)?;
    if !ct_eq(&td.report_data, expected_report_data) {
        return Err(TeeError::ReportDataMismatch);
    }
    Ok(VerifiedTee {
        platform: TeePlatform::Tdx,
        tcb_status: status,
        advisory_ids: report.advisory_ids,
        measurements: Measurements::Tdx {
            mrtd: td.mr_td,
            rtmr,
            mr_config_id: td.mr_config_id,
            mr_owner: td.mr_owner,
            td_attributes,
            tee_tcb_svn: td.tee_tcb_svn,
        },
        report_data: td.report_data,
        debug,
        snp_product: None,
    })
}

fn check_measurements(
    policy: &TeePolicy,
    mrtd: &[u8; 48],
    rtmr: &[[u8; 48]; 4],
) -> Result<(), TeeError> {
    if policy.tdx.measurements.is_empty() {
        return if policy.insecure_any_measurement {
            Ok(())
        } else {
            Err(TeeError::NoMeasurementPolicy)
        };
    }
    // Report the first field that differs in the closest candidate (the one matching
    // the most leading fields), so a policy author sees which value changed.
    let mut worst: &'static str = "MRTD";
    for m in &policy.tdx.measurements {
        let want: [u8; 48] = policy_hex("tdx.measurements.mrtd", &m.mrtd)?;
        if !ct_eq(&want, mrtd) {
            continue;
        }
        let mut ok = true;
        for (i, (want, got)) in [&m.rtmr0, &m.rtmr1, &m.rtmr2, &m.rtmr3]
            .into_iter()
            .zip(rtmr)
            .enumerate()
        {
            if let Some(w) = want {
                let w: [u8; 48] = policy_hex("tdx.measurements.rtmr", w)?;
                if !ct_eq(&w, got) {
                    ok = false;
                    worst = ["RTMR0", "RTMR1", "RTMR2", "RTMR3"]
                        .get(i)
                        .copied()
                        .unwrap_or("RTMR");
                    break;
                }
            }
        }
        if ok {
            return Ok(());
        }
    }
    Err(TeeError::MeasurementNotAllowed(worst))
}

#[cfg(test)]
mod tests {
    use super::rfc3339_secs;

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_secs("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_secs("2025-07-19T10:00:34Z"), Some(1_752_919_234));
        assert_eq!(
            rfc3339_secs("2025-07-19T10:00:34.123Z"),
            Some(1_752_919_234)
        );
        assert_eq!(rfc3339_secs("2025-13-19T10:00:34Z"), None);
        assert_eq!(rfc3339_secs("2025-07-19 10:00:34Z"), None);
        assert_eq!(rfc3339_secs("2025-07-19T10:00:34"), None);
    }
}
