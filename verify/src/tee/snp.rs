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
//! 6. check the VCEK's TCB extensions and hwID against the report, and (report v3+) the
//!    report's CPUID family/model against the chain's product;
//! 7. AMD's CRL, when the collateral holds one for the product (required with
//!    `snp.require_crl`): signed by the pinned ARK, current at `now`, the ASK not
//!    revoked ([`crl`]);
//! 8. apply the policy: reported TCB ≥ the product's minimum (which the policy must
//!    state), product accepted, guest policy (debug, then the bits the rule cares about:
//!    [`check_guest_policy`]), VMPL, measurement, host data, report data.

use p384::ecdsa::{Signature, VerifyingKey, signature::Verifier};
use serde::Deserialize;

use super::{
    Collateral, Measurements, TcbStatus, TeeError, TeePlatform, TeePolicy, VerifiedTee, ct_eq,
    policy_hex,
};

pub mod chain;
pub mod crl;

/// Length of an attestation report.
pub const REPORT_LEN: usize = 0x4A0;
/// Length of the signed part of the report.
pub const SIGNED_LEN: usize = 0x2A0;
/// Guest policy bit: debugging allowed (ABI spec, "GUEST_POLICY", bit 19).
pub const POLICY_DEBUG: u64 = 1 << 19;

/// The guest policy (SEV-SNP ABI specification, "GUEST_POLICY"; the same layout as the
/// `sev` crate's `GuestPolicy`). The guest owner is meant to choose it; in practice the
/// host that launches the guest does, and the firmware enforces it and signs it into
/// every report. Bits 26–63 are reserved (must be zero).
pub mod guest_policy {
    /// Bits 0–7: ABI_MINOR, the lowest firmware ABI minor version the guest runs on.
    pub const ABI_MINOR_MASK: u64 = 0xFF;
    /// Bits 8–15: ABI_MAJOR, the lowest firmware ABI major version the guest runs on.
    pub const ABI_MAJOR_MASK: u64 = 0xFF << 8;
    /// Bit 16: SMT — 1: the host may run with SMT enabled; 0: the firmware refuses to run
    /// the guest while SMT is enabled.
    pub const SMT: u64 = 1 << 16;
    /// Bit 17: reserved, must be one.
    pub const RESERVED_MBO: u64 = 1 << 17;
    /// Bit 18: MIGRATE_MA — 1: the host may associate a migration agent, which can
    /// export the guest's memory and state.
    pub const MIGRATE_MA: u64 = 1 << 18;
    /// Bit 19: DEBUG — 1: the host may read and write the guest's memory and registers
    /// through the debug commands.
    pub const DEBUG: u64 = 1 << 19;
    /// Bit 20: SINGLE_SOCKET — 1: the guest can only be activated on one socket.
    pub const SINGLE_SOCKET: u64 = 1 << 20;
    /// Bit 21: CXL_ALLOW — 1: CXL may be populated with devices or memory.
    pub const CXL_ALLOW: u64 = 1 << 21;
    /// Bit 22: MEM_AES_256_XTS — 1: memory encryption must be AES-256-XTS (0: AES-128
    /// XEX allowed).
    pub const MEM_AES_256_XTS: u64 = 1 << 22;
    /// Bit 23: RAPL_DIS — 1: Running Average Power Limit must be disabled.
    pub const RAPL_DIS: u64 = 1 << 23;
    /// Bit 24: CIPHERTEXT_HIDING — 1: ciphertext hiding must be enabled.
    pub const CIPHERTEXT_HIDING: u64 = 1 << 24;
    /// Bit 25: PAGE_SWAP_DISABLE — 1: SNP_PAGE_MOVE / SNP_SWAP_OUT / SNP_SWAP_IN are
    /// disabled for the guest.
    pub const PAGE_SWAP_DISABLE: u64 = 1 << 25;
    /// Every bit this verifier knows (0–25); any other set bit is refused.
    pub const KNOWN: u64 = (1 << 26) - 1;
}

/// Checks a report's guest policy value against the policy's rule, in this order:
/// reserved bits 26–63 zero (an unknown bit could loosen anything), DEBUG (refused
/// unless `insecure_allow_debug`), MIGRATE_MA (`snp.allow_migrate_ma`), SMT
/// (`snp.allow_smt`), SINGLE_SOCKET (`snp.require_single_socket`), CXL_ALLOW
/// (`snp.allow_cxl`), MEM_AES_256_XTS (`snp.require_aes_256_xts`), RAPL_DIS
/// (`snp.require_rapl_disabled`), CIPHERTEXT_HIDING (`snp.require_ciphertext_hiding`),
/// PAGE_SWAP_DISABLE (`snp.require_page_swap_disabled`), ABI_MAJOR.ABI_MINOR ≥
/// `snp.min_abi`. The first failing bit is named in the error.
pub fn check_guest_policy(policy: &TeePolicy, value: u64) -> Result<(), TeeError> {
    use self::guest_policy as gp;
    let rule = &policy.snp;
    let unknown = value & !gp::KNOWN;
    if unknown != 0 {
        return Err(TeeError::GuestPolicyRefused(
            "reserved bits 26-63 are set (a guest policy this verifier does not know)",
        ));
    }
    let set = |bit: u64| value & bit != 0;
    if set(gp::DEBUG) && !policy.insecure_allow_debug {
        return Err(TeeError::DebugNotAllowed);
    }
    let refusals: [(bool, &'static str); 8] = [
        (
            set(gp::MIGRATE_MA) && !rule.allow_migrate_ma,
            "MIGRATE_MA (bit 18) is set: the host may attach a migration agent that can              export the guest (rule: allow_migrate_ma = false)",
        ),
        (
            set(gp::SMT) && !rule.allow_smt,
            "SMT (bit 16) is set: the guest may run beside other threads on its cores              (rule: allow_smt = false)",
        ),
        (
            !set(gp::SINGLE_SOCKET) && rule.require_single_socket,
            "SINGLE_SOCKET (bit 20) is clear: the guest may span sockets (rule:              require_single_socket = true)",
        ),
        (
            set(gp::CXL_ALLOW) && !rule.allow_cxl,
            "CXL_ALLOW (bit 21) is set: CXL devices or memory may be attached (rule:              allow_cxl = false)",
        ),
        (
            !set(gp::MEM_AES_256_XTS) && rule.require_aes_256_xts,
            "MEM_AES_256_XTS (bit 22) is clear: memory may be encrypted with AES-128              (rule: require_aes_256_xts = true)",
        ),
        (
            !set(gp::RAPL_DIS) && rule.require_rapl_disabled,
            "RAPL_DIS (bit 23) is clear: RAPL power reporting may stay on (rule:              require_rapl_disabled = true)",
        ),
        (
            !set(gp::CIPHERTEXT_HIDING) && rule.require_ciphertext_hiding,
            "CIPHERTEXT_HIDING (bit 24) is clear: the host may read the guest's ciphertext              (rule: require_ciphertext_hiding = true)",
        ),
        (
            !set(gp::PAGE_SWAP_DISABLE) && rule.require_page_swap_disabled,
            "PAGE_SWAP_DISABLE (bit 25) is clear: the guest's pages may be moved and              swapped (rule: require_page_swap_disabled = true)",
        ),
    ];
    if let Some((_, why)) = refusals.into_iter().find(|(refused, _)| *refused) {
        return Err(TeeError::GuestPolicyRefused(why));
    }
    if let Some(min) = &rule.min_abi {
        let [minor, major, ..] = value.to_le_bytes();
        if (major, minor) < (min.major, min.minor) {
            return Err(TeeError::GuestPolicyAbiBelowMinimum {
                reported: (major, minor),
                minimum: (min.major, min.minor),
            });
        }
    }
    Ok(())
}

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

/// An AMD EPYC generation with a pinned ARK (`"Milan"`, `"Genoa"`, `"Turin"` in TOML, as
/// AMD KDS spells them; lower case is accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum Product {
    /// EPYC 7003 (Zen 3).
    #[serde(alias = "milan")]
    Milan,
    /// EPYC 9004 and 8004 (Zen 4: Genoa, Bergamo, Siena).
    #[serde(alias = "genoa")]
    Genoa,
    /// EPYC 9005 (Zen 5).
    #[serde(alias = "turin")]
    Turin,
}

impl Product {
    /// Every product with a pinned root.
    pub const ALL: [Product; 3] = [Product::Milan, Product::Genoa, Product::Turin];

    /// The name as AMD KDS spells it.
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    /// The product a report's CPUID_FAM_ID / CPUID_MOD_ID (report version 3 and later)
    /// names, or `None` for a CPU this crate has no root for (same table as the `sev`
    /// crate's `Generation::identify_cpu`).
    pub fn from_cpuid(family: u8, model: u8) -> Option<Product> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Product::Milan),
            (0x19, 0x10..=0x1F | 0xA0..=0xAF) => Some(Product::Genoa),
            (0x1A, 0x00..=0x11) => Some(Product::Turin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Product {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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
    /// CPUID_FAM_ID and CPUID_MOD_ID (report version 3 and later; `None` in v2).
    pub cpuid: Option<(u8, u8)>,
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
            cpuid: if version >= 3 {
                let [family, model] = field::<2>(raw, 0x188)?;
                Some((family, model))
            } else {
                None
            },
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

    // Step 6: the VCEK was issued for this chip at this TCB, and a v3+ report's CPUID
    // names the same product (a CPU this crate has no table entry for is left to the
    // chain, which already ended at a pinned product root).
    let tcb = SnpTcb::from_raw(report.reported_tcb, chain.product);
    chain.check_against_report(&tcb, &report.chip_id)?;
    if let Some((family, model)) = report.cpuid
        && Product::from_cpuid(family, model).is_some_and(|p| p != chain.product)
    {
        return Err(TeeError::VcekReportMismatch("CPUID family/model"));
    }

    // Step 7: AMD's CRL for the product.
    let crl_applied = match collateral.snp_crl.as_deref() {
        Some(crls) => crl::check_chain(crls, &chain, now)?,
        None => false,
    };
    if policy.snp.require_crl && !crl_applied {
        return Err(TeeError::MissingCollateral(match chain.product {
            Product::Milan => "AMD CRL for Milan (kdsintf.amd.com/vcek/v1/Milan/crl)",
            Product::Genoa => "AMD CRL for Genoa (kdsintf.amd.com/vcek/v1/Genoa/crl)",
            Product::Turin => "AMD CRL for Turin (kdsintf.amd.com/vcek/v1/Turin/crl)",
        }));
    }

    // Step 8: policy.
    let floor = policy.snp.tcb_floor(chain.product).ok_or_else(|| {
        TeeError::PolicyInvalid(format!(
            "snp.min_tcb: the policy states no minimum TCB for {} (there is no default)",
            chain.product
        ))
    })?;
    tcb.check_min(&floor)?;
    if !policy.snp.products.contains(&chain.product) {
        return Err(TeeError::ProductNotAllowed(chain.product));
    }
    check_guest_policy(policy, report.policy)?;
    let debug = report.policy & POLICY_DEBUG != 0;
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
        snp_product: Some(chain.product),
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
