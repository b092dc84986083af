//! AMD SEV-SNP attestation reports (SEV-SNP ABI specification, rev. 1.55+, table
//! "ATTESTATION_REPORT Structure") and the VCEK → ASK → ARK chain.
//!
//! Steps of verification ([`crate::tee::verify`] with an SNP policy), in order:
//! 1. split the blob into the 0x4A0-byte report and the optional certificate table;
//! 2. parse the report strictly ([`Report::parse`]);
//! 3. find the VCEK (table, else collateral), the ASK (collateral, else table, else
//!    built in) and the product from the VCEK's issuer; the ARK is always the pinned
//!    one ([`chain`]);
//! 4. check ARK → ASK → VCEK signatures (RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48),
//!    name links and validity windows at `now`;
//! 5. check the report signature (ECDSA P-384 over SHA-384 of bytes `[0, 0x2A0)`);
//! 6. check the VCEK's TCB extensions and hwID against the report;
//! 7. apply the policy: reported TCB ≥ minimum, debug, VMPL, measurement, host data,
//!    report data.

use p384::ecdsa::{Signature, VerifyingKey, signature::Verifier};
use serde::Deserialize;

use super::{
    Collateral, Measurements, TcbStatus, TeeError, TeePlatform, TeePolicy, VerifiedTee, ct_eq,
    policy_hex,
};

pub mod chain;

/// Length of an attestation report.
pub const REPORT_LEN: usize = 0x4A0;
/// Length of the signed part of the report.
pub const SIGNED_LEN: usize = 0x2A0;
/// Guest policy bit: debugging allowed (ABI spec, "GUEST_POLICY", bit 19).
pub const POLICY_DEBUG: u64 = 1 << 19;

/// A reported TCB split into its components (SPL = security patch level).
///
/// Milan and Genoa lay the 64-bit value out as `bootloader, tee, 4 reserved, snp,
/// microcode` (byte 0 first); Turin as `fmc, bootloader, tee, snp, 3 reserved,
/// microcode`. `fmc` is always 0 before Turin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnpTcb {
    /// Firmware (FMC) SPL, Turin and later.
    pub fmc: u8,
    /// Boot loader SPL.
    pub bootloader: u8,
    /// PSP OS (TEE) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
}

impl SnpTcb {
    /// Splits a raw 64-bit TCB_VERSION as `product` lays it out.
    pub fn from_raw(raw: u64, product: Product) -> SnpTcb {
        let b = raw.to_le_bytes();
        match product {
            Product::Milan | Product::Genoa => SnpTcb {
                fmc: 0,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            },
            Product::Turin => SnpTcb {
                fmc: b[0],
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            },
        }
    }

    fn components(&self) -> [(&'static str, u8); 5] {
        [
            ("fmc", self.fmc),
            ("bootloader", self.bootloader),
            ("tee", self.tee),
            ("snp", self.snp),
            ("microcode", self.microcode),
        ]
    }

    /// Checks every component against `min`.
    pub fn check_min(&self, min: &SnpTcb) -> Result<(), TeeError> {
        for ((component, reported), (_, minimum)) in
            self.components().into_iter().zip(min.components())
        {
            if reported < minimum {
                return Err(TeeError::TcbBelowMinimum {
                    component,
                    reported,
                    minimum,
                });
            }
        }
        Ok(())
    }
}

/// An AMD EPYC generation with a pinned ARK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    /// EPYC 7003 (Zen 3).
    Milan,
    /// EPYC 9004 (Zen 4).
    Genoa,
    /// EPYC 9005 (Zen 5).
    Turin,
}

/// A parsed attestation report (all fields copied out; `raw` keeps the exact bytes).
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// The exact report bytes.
    pub raw: &'a [u8],
    /// VERSION (2–5 accepted).
    pub version: u32,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// POLICY.
    pub policy: u64,
    /// VMPL.
    pub vmpl: u32,
    /// SIGNATURE_ALGO (1 = ECDSA P-384 with SHA-384).
    pub signature_algo: u32,
    /// PLATFORM_INFO.
    pub platform_info: u64,
    /// Flags at 0x48: bit 1 MASK_CHIP_KEY, bits 2–4 SIGNING_KEY (0 = VCEK).
    pub key_flags: u32,
    /// REPORT_DATA.
    pub report_data: [u8; 64],
    /// MEASUREMENT.
    pub measurement: [u8; 48],
    /// HOST_DATA.
    pub host_data: [u8; 32],
    /// REPORTED_TCB (raw).
    pub reported_tcb: u64,
    /// CHIP_ID.
    pub chip_id: [u8; 64],
    /// Signature R, big-endian.
    pub sig_r: [u8; 48],
    /// Signature S, big-endian.
    pub sig_s: [u8; 48],
}

fn field<const N: usize>(b: &[u8], off: usize) -> Result<[u8; N], TeeError> {
    b.get(off..off.saturating_add(N))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(TeeError::SnpReportMalformed("truncated"))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, TeeError> {
    field::<4>(b, off).map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, TeeError> {
    field::<8>(b, off).map(u64::from_le_bytes)
}

/// A 72-byte little-endian signature component → 48 bytes big-endian; the upper 24
/// bytes must be zero.
fn sig_component(b: &[u8], off: usize, what: &'static str) -> Result<[u8; 48], TeeError> {
    let le: [u8; 72] = field(b, off)?;
    let (low, high) = le.split_at(48);
    if high.iter().any(|&x| x != 0) {
        return Err(TeeError::SnpReportMalformed(what));
    }
    let mut be = [0u8; 48];
    for (dst, src) in be.iter_mut().zip(low.iter().rev()) {
        *dst = *src;
    }
    Ok(be)
}

impl<'a> Report<'a> {
    /// Parses exactly one report of [`REPORT_LEN`] bytes.
    pub fn parse(raw: &'a [u8]) -> Result<Report<'a>, TeeError> {
        if raw.len() != REPORT_LEN {
            return Err(TeeError::SnpReportMalformed("length is not 0x4A0"));
        }
        let version = u32_at(raw, 0x00)?;
        if !(2..=5).contains(&version) {
            return Err(TeeError::SnpReportVersion(version));
        }
        let signature_algo = u32_at(raw, 0x34)?;
        if signature_algo != 1 {
            return Err(TeeError::SnpSignatureAlgorithm(signature_algo));
        }
        let key_flags = u32_at(raw, 0x48)?;
        let signing_key = (key_flags >> 2) & 0b111;
        let mask_chip_key = key_flags & 0b10 != 0;
        if signing_key != 0 || mask_chip_key {
            return Err(TeeError::SnpSigningKey(signing_key));
        }
        let policy = u64_at(raw, 0x08)?;
        // GUEST_POLICY bit 17 is reserved and must be one.
        if policy & (1 << 17) == 0 {
            return Err(TeeError::SnpReportMalformed(
                "policy reserved bit 17 is zero",
            ));
        }
        // The signature area past R and S (0x330..0x4A0) is reserved, zero.
        if raw.get(0x330..).is_none_or(|r| r.iter().any(|&x| x != 0)) {
            return Err(TeeError::SnpReportMalformed(
                "signature reserved bytes not zero",
            ));
        }
        Ok(Report {
            raw,
            version,
            guest_svn: u32_at(raw, 0x04)?,
            policy,
            vmpl: u32_at(raw, 0x30)?,
            signature_algo,
            platform_info: u64_at(raw, 0x40)?,
            key_flags,
            report_data: field(raw, 0x50)?,
            measurement: field(raw, 0x90)?,
            host_data: field(raw, 0xC0)?,
            reported_tcb: u64_at(raw, 0x180)?,
            chip_id: field(raw, 0x1A0)?,
            sig_r: sig_component(raw, 0x2A0, "signature R has high bytes set")?,
            sig_s: sig_component(raw, 0x2E8, "signature S has high bytes set")?,
        })
    }

    /// The signed bytes `[0, 0x2A0)`.
    pub fn signed_bytes(&self) -> &'a [u8] {
        self.raw.get(..SIGNED_LEN).unwrap_or(&[])
    }

    /// Checks the report signature with the VCEK's public key.
    pub fn verify_signature(&self, vcek: &VerifyingKey) -> Result<(), TeeError> {
        let sig = Signature::from_scalars(self.sig_r, self.sig_s)
            .map_err(|_| TeeError::ReportSignatureInvalid)?;
        vcek.verify(self.signed_bytes(), &sig)
            .map_err(|_| TeeError::ReportSignatureInvalid)
    }
}

/// Certificate table GUIDs (RFC 4122 byte order).
const GUID_VCEK: [u8; 16] = guid(
    0x63da758d,
    0xe664,
    0x4564,
    [0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd],
);
const GUID_ASK: [u8; 16] = guid(
    0x4ab7b379,
    0xbbac,
    0x4fe4,
    [0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27, 0xc7, 0x82],
);
const GUID_ARK: [u8; 16] = guid(
    0xc0b406a4,
    0xa803,
    0x4952,
    [0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0, 0xae],
);

const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_be_bytes();
    let b = b.to_be_bytes();
    let c = c.to_be_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// The certificates found in an extended report's certificate table.
#[derive(Debug, Clone, Copy, Default)]
pub struct CertTable<'a> {
    /// VCEK (DER).
    pub vcek: Option<&'a [u8]>,
    /// ASK (DER).
    pub ask: Option<&'a [u8]>,
    /// ARK (DER).
    pub ark: Option<&'a [u8]>,
}

impl<'a> CertTable<'a> {
    /// Parses a certificate table (see [`super::EvidenceFormat`]). Entries with other
    /// GUIDs are ignored; bytes no entry points at are ignored (every certificate used
    /// is authenticated by the chain).
    pub fn parse(t: &'a [u8]) -> Result<CertTable<'a>, TeeError> {
        let mut out = CertTable::default();
        let mut pos = 0usize;
        loop {
            let entry = t
                .get(pos..pos.saturating_add(24))
                .ok_or(TeeError::SnpCertTableMalformed("no terminating entry"))?;
            pos += 24;
            if entry.iter().all(|&b| b == 0) {
                break;
            }
            let (g, rest) = entry.split_at(16);
            let (o, l) = rest.split_at(4);
            let off = u32::from_le_bytes(o.try_into().unwrap_or([0xff; 4])) as usize;
            let len = u32::from_le_bytes(l.try_into().unwrap_or([0xff; 4])) as usize;
            if len == 0 {
                return Err(TeeError::SnpCertTableMalformed("empty certificate"));
            }
            let data = t
                .get(off..off.saturating_add(len))
                .ok_or(TeeError::SnpCertTableMalformed("entry out of bounds"))?;
            let slot = if g == GUID_VCEK {
                &mut out.vcek
            } else if g == GUID_ASK {
                &mut out.ask
            } else if g == GUID_ARK {
                &mut out.ark
            } else {
                continue;
            };
            if slot.replace(data).is_some() {
                return Err(TeeError::SnpCertTableMalformed("duplicate entry"));
            }
        }
        // Certificates must not overlap the entries themselves.
        for d in [out.vcek, out.ask, out.ark].into_iter().flatten() {
            let start = d.as_ptr() as usize - t.as_ptr() as usize;
            if start < pos {
                return Err(TeeError::SnpCertTableMalformed(
                    "certificate overlaps the table",
                ));
            }
        }
        Ok(out)
    }
}

/// Builds a certificate table (for tests and for tools that assemble evidence).
pub fn build_cert_table(vcek: Option<&[u8]>, ask: Option<&[u8]>, ark: Option<&[u8]>) -> Vec<u8> {
    let certs: Vec<([u8; 16], &[u8])> = [(GUID_VCEK, vcek), (GUID_ASK, ask), (GUID_ARK, ark)]
        .into_iter()
        .filter_map(|(g, c)| c.map(|c| (g, c)))
        .collect();
    let mut table = Vec::new();
    let mut off = 24 * (certs.len() + 1);
    for (g, c) in &certs {
        table.extend_from_slice(g);
        table.extend_from_slice(&u32::try_from(off).unwrap_or(u32::MAX).to_le_bytes());
        table.extend_from_slice(&u32::try_from(c.len()).unwrap_or(u32::MAX).to_le_bytes());
        off += c.len();
    }
    table.extend_from_slice(&[0u8; 24]);
    for (_, c) in &certs {
        table.extend_from_slice(c);
    }
    table
}

/// Verifies an SNP evidence blob; see the module docs for the steps.
pub(crate) fn verify(
    evidence: &[u8],
    policy: &TeePolicy,
    collateral: &Collateral,
    expected_report_data: &[u8; 64],
    now: u64,
) -> Result<VerifiedTee, TeeError> {
    let (raw, table) = evidence
        .split_at_checked(REPORT_LEN)
        .ok_or(TeeError::SnpReportMalformed("shorter than 0x4A0 bytes"))?;
    let report = Report::parse(raw)?;
    let table = if table.is_empty() {
        CertTable::default()
    } else {
        CertTable::parse(table)?
    };

    // Steps 3–4: chain to the pinned ARK.
    let vcek_der = table
        .vcek
        .or(collateral.snp_vcek.as_deref())
        .ok_or(TeeError::MissingCertificate(super::CertRole::Vcek))?;
    let chain = chain::verify_chain(vcek_der, collateral.snp_chain.as_deref(), table, now)?;

    // Step 5: the report signature.
    report.verify_signature(&chain.vcek_key)?;

    // Step 6: the VCEK was issued for this chip at this TCB.
    let tcb = SnpTcb::from_raw(report.reported_tcb, chain.product);
    chain.check_against_report(&tcb, &report.chip_id)?;

    // Step 7: policy.
    tcb.check_min(&policy.snp.min_tcb)?;
    let debug = report.policy & POLICY_DEBUG != 0;
    if debug && !policy.insecure_allow_debug {
        return Err(TeeError::DebugNotAllowed);
    }
    if report.vmpl > policy.snp.max_vmpl {
        return Err(TeeError::VmplNotAllowed(report.vmpl));
    }
    check_measurement(policy, &report.measurement)?;
    if let Some(h) = &policy.snp.host_data {
        let want: [u8; 32] = policy_hex("snp.host_data", h)?;
        if !ct_eq(&want, &report.host_data) {
            return Err(TeeError::MeasurementNotAllowed("HOST_DATA"));
        }
    }
    if !ct_eq(&report.report_data, expected_report_data) {
        return Err(TeeError::ReportDataMismatch);
    }
    Ok(VerifiedTee {
        platform: TeePlatform::Snp,
        tcb_status: TcbStatus::MeetsPolicyMinimum,
        advisory_ids: Vec::new(),
        measurements: Measurements::Snp {
            measurement: report.measurement,
            host_data: report.host_data,
            policy: report.policy,
            vmpl: report.vmpl,
            reported_tcb: tcb,
            chip_id: report.chip_id,
        },
        report_data: report.report_data,
        debug,
    })
}

fn check_measurement(policy: &TeePolicy, measurement: &[u8; 48]) -> Result<(), TeeError> {
    if policy.snp.measurements.is_empty() {
        return if policy.insecure_any_measurement {
            Ok(())
        } else {
            Err(TeeError::NoMeasurementPolicy)
        };
    }
    let mut found = false;
    for m in &policy.snp.measurements {
        let want: [u8; 48] = policy_hex("snp.measurements", m)?;
        found |= ct_eq(&want, measurement);
    }
    if found {
        Ok(())
    } else {
        Err(TeeError::MeasurementNotAllowed("SNP measurement"))
    }
}
