//! TDX quote and SEV-SNP report verification.
//!
//! One entry point, [`verify`], checks a platform's evidence blob (the bytes a pqcc
//! guest sends in `wire::Evidence::data`, format in [`EvidenceFormat`]) against a
//! [`TeePolicy`], the [`Collateral`] the verifier holds, the handshake's expected
//! report data and the caller's `now`.
//!
//! # What is checked
//!
//! **SEV-SNP** ([`snp`]): the attestation report is parsed strictly (version 2–5,
//! exact length, ECDSA P-384 with SHA-384, VCEK signing key, zero upper bytes in the
//! signature fields); its signature over bytes `[0, 0x2A0)` is checked with the VCEK's
//! key; the VCEK → ASK → ARK chain (RSASSA-PSS SHA-384) ends at an ARK compiled into
//! this crate (Milan, Genoa, Turin), never at one taken from the input; every
//! certificate is inside its validity window at `now`; the VCEK's TCB extensions and
//! hardware id equal the report's reported TCB and chip id (and a v3+ report's CPUID
//! names the chain's product); AMD's CRL, when given (or required), is signed by the
//! pinned ARK, current, and does not list the ASK; the reported TCB is at or above the
//! minimum the policy must state for the product; the product is one the policy
//! accepts (Milan only when named); the guest policy's debug bit is refused unless
//! `insecure_allow_debug`, and its other bits (MIGRATE_MA, SMT, SINGLE_SOCKET, CXL,
//! AES-256-XTS, RAPL, ciphertext hiding, page swap, ABI minimum, reserved bits) are
//! checked against the rule ([`snp::check_guest_policy`]); the VMPL, measurement and
//! report data match.
//!
//! **TDX** ([`tdx`]): full DCAP verification of a v4 or v5 quote with `dcap-qvl` —
//! PCK chain to the Intel SGX Root CA compiled into this crate, root-CA and PCK CRLs,
//! signed TCB info and QE identity, QE report signature and its binding to the
//! attestation key, quote signature — giving a TCB status that must be in the policy's
//! accepted set; then debug TDs are refused, and MRTD, RTMR0–3 and report data must
//! match.
//!
//! # What is trusted
//!
//! The AMD ARKs and the Intel root CA in this crate (their SHA-256 fingerprints are
//! pinned next to them), the caller's clock, and the policy. Everything in the
//! evidence and in the collateral is untrusted until it chains to those roots.
//!
//! # What is not checked
//!
//! AMD's CRL is consulted only when the verifier holds it ([`Collateral::snp_crl`]) or
//! the policy requires it (`snp.require_crl`). A report carries no time: freshness comes
//! from the expected report data, which the broker derives from a fresh per-handshake
//! nonce, and from the collateral age limit.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

pub mod measure;
pub mod snp;
pub mod tdx;

pub use snp::{Product, SnpTcb};

/// The largest TEE evidence blob accepted: 32 KiB, a report with its certificates.
/// It travels in the evidence bundle beside any GPU evidence, within the wire format's
/// larger `pqcc_core::wire::MAX_EVIDENCE_LEN`.
pub const MAX_EVIDENCE_LEN: usize = 32 * 1024;

/// A TEE platform that [`verify`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TeePlatform {
    /// AMD SEV-SNP (`"snp"` or `"sev-snp"` in TOML).
    #[serde(rename = "snp", alias = "sev-snp")]
    Snp,
    /// Intel TDX (`"tdx"` in TOML).
    #[serde(rename = "tdx")]
    Tdx,
}

impl TeePlatform {
    /// The name printed in CLI, log and JSON output: `sev-snp` or `tdx`, as
    /// `pqcc_core::wire::Platform::name` spells them (policies and CLI flags accept
    /// `snp` for `sev-snp` too).
    pub fn name(self) -> &'static str {
        match self {
            TeePlatform::Snp => "sev-snp",
            TeePlatform::Tdx => "tdx",
        }
    }
}

impl fmt::Display for TeePlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The byte format of the evidence blob per platform (documentation anchor; see
/// `docs/evidence.md`).
///
/// - **SEV-SNP**: the 1184-byte (0x4A0) `ATTESTATION_REPORT` exactly as the AMD-SP
///   returned it, followed by the optional certificate table exactly as
///   `SNP_GET_EXT_REPORT` / configfs-tsm `auxblob` returns it: 24-byte entries
///   `{ guid[16] (RFC 4122 byte order), offset: u32 LE, length: u32 LE }` ended by an
///   all-zero entry, offsets counted from the start of the table, certificates in DER
///   (VCEK `63da758d-e664-4564-adc5-f4b93be8accd`, ASK
///   `4ab7b379-bbac-4fe4-a02f-05aef327c782`, ARK `c0b406a4-a803-4952-9743-3fb6014cd0ae`).
///   With no table, the VCEK must come from [`Collateral::snp_vcek`].
/// - **TDX**: the DCAP quote (version 4 or 5); the guest trims it to its exact length
///   (header ‖ body ‖ `u32` auth-data length ‖ auth data). The verifier also accepts
///   trailing zero bytes (quote services pad to their buffer size), nothing else.
#[derive(Debug, Clone, Copy)]
pub struct EvidenceFormat;

/// A firmware ABI version `major.minor` (e.g. `{ major = 1, minor = 55 }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpAbi {
    /// ABI major version.
    pub major: u8,
    /// ABI minor version.
    pub minor: u8,
}

/// The SEV-SNP part of a [`TeePolicy`] (`[snp]` table; `[rule.tee.snp]` in a broker
/// rule). Defaults are those of [`SnpPolicy::default`]; see `docs/evidence.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnpPolicy {
    /// Minimum reported TCB, component by component, for every accepted product that
    /// [`SnpPolicy::product_min_tcb`] does not name. **Required**: a policy read from
    /// TOML must state a minimum for every product it accepts, and it may not be all
    /// zero ([`TeePolicy::check_complete`]); [`verify`] refuses a product without one.
    pub min_tcb: Option<SnpTcb>,
    /// Minimum reported TCB per product (TOML: `product_min_tcb = { Genoa = {…},
    /// Turin = {…} }`), overriding `min_tcb` for that product: the TCB components of
    /// different generations are not comparable.
    pub product_min_tcb: BTreeMap<Product, SnpTcb>,
    /// The products accepted, by the pinned ARK the VCEK chains to (default `["Genoa",
    /// "Turin"]`: Milan must be named, see `docs/evidence.md` on the 2026 Milan key
    /// extraction).
    pub products: Vec<Product>,
    /// Accepted launch measurements (hex, 48 bytes each).
    pub measurements: Vec<String>,
    /// Required HOST_DATA (hex, 32 bytes), when set.
    pub host_data: Option<String>,
    /// Highest VMPL a report may come from (default 0).
    pub max_vmpl: u32,
    /// Accept a guest policy with SMT (bit 16) set, i.e. a host that may run other
    /// threads on the guest's cores (default true: most hosts run with SMT on; say
    /// false to require a guest the firmware runs only with SMT off).
    pub allow_smt: bool,
    /// Accept a guest policy with MIGRATE_MA (bit 18) set (default false: a migration
    /// agent can export the guest).
    pub allow_migrate_ma: bool,
    /// Require SINGLE_SOCKET (bit 20) (default false).
    pub require_single_socket: bool,
    /// Accept a guest policy with CXL_ALLOW (bit 21) set (default false).
    pub allow_cxl: bool,
    /// Require MEM_AES_256_XTS (bit 22) (default false).
    pub require_aes_256_xts: bool,
    /// Require RAPL_DIS (bit 23) (default false).
    pub require_rapl_disabled: bool,
    /// Require CIPHERTEXT_HIDING (bit 24) (default false; Turin and later).
    pub require_ciphertext_hiding: bool,
    /// Require PAGE_SWAP_DISABLE (bit 25) (default false).
    pub require_page_swap_disabled: bool,
    /// Lowest ABI version the guest policy may name (ABI_MAJOR.ABI_MINOR, bits 8–15 and
    /// 0–7): the firmware refuses to launch the guest on an older firmware, so this
    /// proves the firmware's ABI at launch (default: no minimum).
    pub min_abi: Option<SnpAbi>,
    /// Refuse evidence unless the verifier holds AMD's CRL for the product
    /// ([`Collateral::snp_crl`]) (default false; a CRL that is given is always checked).
    pub require_crl: bool,
}

impl Default for SnpPolicy {
    fn default() -> Self {
        SnpPolicy {
            min_tcb: None,
            product_min_tcb: BTreeMap::new(),
            products: vec![Product::Genoa, Product::Turin],
            measurements: Vec::new(),
            host_data: None,
            max_vmpl: 0,
            allow_smt: true,
            allow_migrate_ma: false,
            require_single_socket: false,
            allow_cxl: false,
            require_aes_256_xts: false,
            require_rapl_disabled: false,
            require_ciphertext_hiding: false,
            require_page_swap_disabled: false,
            min_abi: None,
            require_crl: false,
        }
    }
}

impl SnpPolicy {
    /// The minimum TCB for `product`: its `product_min_tcb` entry, else `min_tcb`.
    pub fn tcb_floor(&self, product: Product) -> Option<SnpTcb> {
        self.product_min_tcb.get(&product).copied().or(self.min_tcb)
    }
}

/// One accepted set of TDX measurements; an RTMR left out is not checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxMeasurements {
    /// MRTD (hex, 48 bytes).
    pub mrtd: String,
    /// RTMR0 (hex, 48 bytes): firmware configuration.
    #[serde(default)]
    pub rtmr0: Option<String>,
    /// RTMR1 (hex, 48 bytes): kernel.
    #[serde(default)]
    pub rtmr1: Option<String>,
    /// RTMR2 (hex, 48 bytes): kernel command line and initrd.
    #[serde(default)]
    pub rtmr2: Option<String>,
    /// RTMR3 (hex, 48 bytes): runtime extensions.
    #[serde(default)]
    pub rtmr3: Option<String>,
}

/// The TDX part of a [`TeePolicy`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxPolicy {
    /// The TDX minimum TCB: DCAP TCB statuses accepted (default `["UpToDate"]`).
    #[serde(default = "default_tdx_status")]
    pub accepted_tcb_status: Vec<TcbStatus>,
    /// Accepted measurement sets; one must match.
    #[serde(default)]
    pub measurements: Vec<TdxMeasurements>,
}

fn default_tdx_status() -> Vec<TcbStatus> {
    vec![TcbStatus::UpToDate]
}

impl Default for TdxPolicy {
    fn default() -> Self {
        TdxPolicy {
            accepted_tcb_status: default_tdx_status(),
            measurements: Vec::new(),
        }
    }
}

/// What the verifier requires of a TEE, read from the broker's TOML (`[tee]` table).
///
/// ```toml
/// platform = "snp"
/// max_collateral_age_secs = 2592000
/// [snp]
/// min_tcb = { bootloader = 10, tee = 0, snp = 23, microcode = 84 }
/// measurements = ["7a1e5c26…"]
/// ```
///
/// Deserializing checks the policy is complete ([`TeePolicy::check_complete`]): an SNP
/// policy without a TCB minimum does not parse, wherever it is read from.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "TeePolicyToml")]
pub struct TeePolicy {
    /// The only platform accepted.
    pub platform: TeePlatform,
    /// SEV-SNP requirements.
    #[serde(default)]
    pub snp: SnpPolicy,
    /// TDX requirements.
    #[serde(default)]
    pub tdx: TdxPolicy,
    /// Freshness of the collateral: the TDX TCB info and QE identity must have been
    /// issued at most this many seconds before `now` (reports carry no time; the
    /// report's own freshness is the expected report data).
    #[serde(default)]
    pub max_collateral_age_secs: Option<u64>,
    /// Accept evidence from a debug guest (SNP policy bit 19, TD attribute DEBUG).
    /// A debug guest's memory is readable by the host: never in production.
    #[serde(default)]
    pub insecure_allow_debug: bool,
    /// Accept any measurement (used by `pqcc evidence verify`, which only reports
    /// them). Without it an empty measurement list is refused.
    #[serde(default)]
    pub insecure_any_measurement: bool,
}

/// The TOML form of [`TeePolicy`], before [`TeePolicy::check_complete`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeePolicyToml {
    platform: TeePlatform,
    #[serde(default)]
    snp: SnpPolicy,
    #[serde(default)]
    tdx: TdxPolicy,
    #[serde(default)]
    max_collateral_age_secs: Option<u64>,
    #[serde(default)]
    insecure_allow_debug: bool,
    #[serde(default)]
    insecure_any_measurement: bool,
}

impl TryFrom<TeePolicyToml> for TeePolicy {
    type Error = TeeError;

    fn try_from(t: TeePolicyToml) -> Result<TeePolicy, TeeError> {
        let p = TeePolicy {
            platform: t.platform,
            snp: t.snp,
            tdx: t.tdx,
            max_collateral_age_secs: t.max_collateral_age_secs,
            insecure_allow_debug: t.insecure_allow_debug,
            insecure_any_measurement: t.insecure_any_measurement,
        };
        p.check_complete()?;
        Ok(p)
    }
}

impl TeePolicy {
    /// Parses a policy from TOML text (and checks it is complete).
    pub fn from_toml(text: &str) -> Result<TeePolicy, TeeError> {
        toml::from_str(text).map_err(|e| TeeError::PolicyInvalid(e.to_string()))
    }

    /// What the policy leaves unstated that a verifier must not guess; empty when it is
    /// complete. For an SNP policy: a TCB minimum for every accepted product
    /// (`snp.min_tcb` or `snp.product_min_tcb`), none of them all zero, and at least one
    /// accepted product.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.platform != TeePlatform::Snp {
            return out;
        }
        let snp = &self.snp;
        if snp.products.is_empty() {
            out.push("snp.products is empty: no report would pass".to_string());
        }
        for &product in &snp.products {
            match snp.tcb_floor(product) {
                None => out.push(format!(
                    "snp.min_tcb is missing: state the lowest TCB accepted for {product}                      (min_tcb, or product_min_tcb.{product}); there is no default"
                )),
                Some(t) if t == SnpTcb::default() => out.push(format!(
                    "the minimum TCB for {product} is all zero, which admits every                      firmware and microcode ever released: state the lowest TCB accepted"
                )),
                Some(_) => {}
            }
        }
        for product in snp.product_min_tcb.keys() {
            if !snp.products.contains(product) {
                out.push(format!(
                    "snp.product_min_tcb names {product}, which snp.products does not accept"
                ));
            }
        }
        out
    }

    /// [`TeePolicy::problems`] as an error ([`TeeError::PolicyInvalid`] listing them).
    /// Deserialization calls it, so a policy read from TOML is always complete; call it
    /// for a policy built in code.
    pub fn check_complete(&self) -> Result<(), TeeError> {
        let p = self.problems();
        if p.is_empty() {
            Ok(())
        } else {
            Err(TeeError::PolicyInvalid(p.join("; ")))
        }
    }

    /// A policy that checks authenticity, chain, validity and report data and refuses
    /// debug guests, but applies no rule: any measurement; SNP: every product, a TCB
    /// minimum of zero, any guest policy bits but DEBUG and the reserved ones, a CRL
    /// checked when given but not required; TDX: `UpToDate` only. For tools that report
    /// what evidence says (`pqcc evidence verify` without `--policy`), never for release.
    pub fn report_only(platform: TeePlatform) -> TeePolicy {
        TeePolicy {
            platform,
            snp: SnpPolicy {
                min_tcb: Some(SnpTcb::default()),
                products: Product::ALL.to_vec(),
                allow_smt: true,
                allow_migrate_ma: true,
                allow_cxl: true,
                ..SnpPolicy::default()
            },
            tdx: TdxPolicy::default(),
            max_collateral_age_secs: None,
            insecure_allow_debug: false,
            insecure_any_measurement: true,
        }
    }
}

/// Verifier-side inputs that do not travel in the evidence.
#[derive(Debug, Clone, Default)]
pub struct Collateral {
    /// The VCEK (DER), when the SNP evidence has no certificate table.
    pub snp_vcek: Option<Vec<u8>>,
    /// ASK (and optionally ARK), PEM or DER. The ARK, if present, must equal the pinned
    /// one. Without it the certificate table's ASK, then the built-in ASK is used.
    pub snp_chain: Option<Vec<u8>>,
    /// AMD's CRL(s) for the VCEK chain (`kdsintf.amd.com/vcek/v1/<product>/crl`), DER
    /// back to back or PEM `X509 CRL` blocks; one per product, CRLs of products other
    /// than the evidence's are ignored ([`snp::crl`]).
    pub snp_crl: Option<Vec<u8>>,
    /// DCAP collateral for TDX quotes.
    pub tdx: Option<tdx::TdxCollateral>,
}

/// TCB status of verified evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub enum TcbStatus {
    /// DCAP: the platform and QE are at the latest TCB level.
    UpToDate,
    /// DCAP: up to date, but software hardening is needed (advisories apply).
    SWHardeningNeeded,
    /// DCAP: up to date, but the platform configuration needs changing.
    ConfigurationNeeded,
    /// DCAP: both of the above.
    ConfigurationAndSWHardeningNeeded,
    /// DCAP: an older TCB level.
    OutOfDate,
    /// DCAP: an older TCB level and configuration needed.
    OutOfDateConfigurationNeeded,
    /// DCAP: the TCB level is revoked.
    Revoked,
    /// DCAP (TDX 1.5): launched at an out-of-date TCB, now updated; relaunch advised.
    TDRelaunchAdvised,
    /// DCAP (TDX 1.5): as `TDRelaunchAdvised`, and configuration needed.
    TDRelaunchAdvisedConfigurationNeeded,
    /// SEV-SNP: AMD publishes no status; the reported TCB matched the VCEK and was at
    /// or above the policy minimum.
    MeetsPolicyMinimum,
}

impl TcbStatus {
    /// The status's name as DCAP spells it (and `MeetsPolicyMinimum` for SNP).
    pub fn name(self) -> &'static str {
        match self {
            TcbStatus::UpToDate => "UpToDate",
            TcbStatus::SWHardeningNeeded => "SWHardeningNeeded",
            TcbStatus::ConfigurationNeeded => "ConfigurationNeeded",
            TcbStatus::ConfigurationAndSWHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            TcbStatus::OutOfDate => "OutOfDate",
            TcbStatus::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            TcbStatus::Revoked => "Revoked",
            TcbStatus::TDRelaunchAdvised => "TDRelaunchAdvised",
            TcbStatus::TDRelaunchAdvisedConfigurationNeeded => {
                "TDRelaunchAdvisedConfigurationNeeded"
            }
            TcbStatus::MeetsPolicyMinimum => "MeetsPolicyMinimum",
        }
    }
}

impl fmt::Display for TcbStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The measurements of verified evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Measurements {
    /// SEV-SNP report fields.
    Snp {
        /// Launch measurement.
        measurement: [u8; 48],
        /// HOST_DATA given at launch.
        host_data: [u8; 32],
        /// Guest policy.
        policy: u64,
        /// VMPL of the request.
        vmpl: u32,
        /// Reported TCB.
        reported_tcb: SnpTcb,
        /// Chip id (equal to the VCEK's hwID).
        chip_id: [u8; 64],
    },
    /// TDX TD report fields.
    Tdx {
        /// MRTD: initial TD contents (firmware).
        mrtd: [u8; 48],
        /// RTMR0–3.
        rtmr: [[u8; 48]; 4],
        /// MRCONFIGID.
        mr_config_id: [u8; 48],
        /// MROWNER.
        mr_owner: [u8; 48],
        /// TD attributes (bit 0: DEBUG).
        td_attributes: u64,
        /// TEE TCB SVN.
        tee_tcb_svn: [u8; 16],
    },
}

/// Evidence that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedTee {
    /// The platform.
    pub platform: TeePlatform,
    /// TCB status.
    pub tcb_status: TcbStatus,
    /// Intel advisory ids attached to the TCB status (empty for SNP).
    pub advisory_ids: Vec<String>,
    /// Measurements and identity fields.
    pub measurements: Measurements,
    /// The report data (equal to the expected value).
    pub report_data: [u8; 64],
    /// Whether the guest is a debug guest (only possible with `insecure_allow_debug`).
    pub debug: bool,
    /// SEV-SNP: the product whose pinned ARK the VCEK chains to (`None` for TDX).
    pub snp_product: Option<Product>,
}

/// Which certificate of a chain an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRole {
    /// AMD Versioned Chip Endorsement Key certificate.
    Vcek,
    /// AMD SEV Key (intermediate).
    Ask,
    /// AMD Root Key.
    Ark,
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertRole::Vcek => "VCEK",
            CertRole::Ask => "ASK",
            CertRole::Ark => "ARK",
        })
    }
}

/// Why evidence was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TeeError {
    // --- malformed input ---
    /// The evidence blob is larger than [`MAX_EVIDENCE_LEN`].
    EvidenceTooLarge(usize),
    /// The SNP report is malformed (the field named).
    SnpReportMalformed(&'static str),
    /// The SNP report version is not one this verifier knows (2–5).
    SnpReportVersion(u32),
    /// The SNP report is signed with an algorithm other than ECDSA P-384 / SHA-384.
    SnpSignatureAlgorithm(u32),
    /// The SNP report is signed with a key other than the VCEK (e.g. VLEK), or the
    /// chip key was masked.
    SnpSigningKey(u32),
    /// The SNP certificate table is malformed (the fault named).
    SnpCertTableMalformed(&'static str),
    /// A certificate could not be parsed.
    CertificateMalformed {
        /// Which certificate.
        role: CertRole,
        /// Parser detail.
        detail: String,
    },
    /// The TDX quote is malformed.
    TdxQuoteMalformed(String),
    /// The TDX collateral is malformed.
    TdxCollateralMalformed(String),
    // --- authenticity ---
    /// A certificate needed for the chain was given nowhere.
    MissingCertificate(CertRole),
    /// Collateral the platform needs was not supplied.
    MissingCollateral(&'static str),
    /// The VCEK's issuer names no AMD product this crate has a root for.
    UnknownProduct(String),
    /// A supplied ARK is not the pinned AMD root for the product.
    UntrustedRoot,
    /// Issuer and subject names do not link.
    ChainBroken(CertRole),
    /// A certificate's signature (or its algorithm) is not valid.
    CertificateSignatureInvalid(CertRole),
    /// A certificate is outside its validity window at `now`.
    CertificateNotValidAt {
        /// Which certificate.
        role: CertRole,
        /// notBefore (Unix seconds).
        not_before: u64,
        /// notAfter (Unix seconds).
        not_after: u64,
        /// The time checked.
        now: u64,
    },
    /// The report's signature does not verify with the VCEK key.
    ReportSignatureInvalid,
    /// The VCEK's TCB or hwID extension does not match the report (the field named).
    VcekReportMismatch(&'static str),
    /// DCAP verification failed (dcap-qvl's reason).
    TdxQuoteRejected(String),
    /// The TDX collateral is outside its validity at `now` (which item).
    TdxCollateralNotValidAt {
        /// `"TCB info"` or `"QE identity"`.
        what: &'static str,
        /// issueDate (Unix seconds).
        issued: u64,
        /// nextUpdate (Unix seconds).
        next_update: u64,
        /// The time checked.
        now: u64,
    },
    /// The evidence is not a TD quote (e.g. an SGX enclave quote).
    NotATdQuote,
    // --- policy refusals ---
    /// The evidence's platform is not the policy's.
    PlatformMismatch {
        /// The policy's platform.
        policy: TeePlatform,
        /// The evidence's platform.
        evidence: TeePlatform,
    },
    /// The report data is not the expected value.
    ReportDataMismatch,
    /// The guest is a debug guest and the policy does not say `insecure_allow_debug`.
    DebugNotAllowed,
    /// A reported TCB component is below the policy minimum.
    TcbBelowMinimum {
        /// Component name.
        component: &'static str,
        /// Reported value.
        reported: u8,
        /// Policy minimum.
        minimum: u8,
    },
    /// The DCAP TCB status is not in the policy's accepted set.
    TcbStatusNotAccepted(TcbStatus),
    /// The report's VMPL is above the policy maximum.
    VmplNotAllowed(u32),
    /// The measurement (named) is not one the policy accepts.
    MeasurementNotAllowed(&'static str),
    /// The policy lists no measurements and does not say `insecure_any_measurement`.
    NoMeasurementPolicy,
    /// The collateral was issued longer ago than `max_collateral_age_secs`.
    CollateralTooOld {
        /// Age in seconds.
        age: u64,
        /// Policy maximum.
        max: u64,
    },
    /// The policy is invalid (parse error, bad hex, or incomplete: the fault named).
    PolicyInvalid(String),
    /// The SNP product (by the pinned ARK the VCEK chains to) is not in `snp.products`.
    ProductNotAllowed(Product),
    /// A guest policy bit the rule refuses (the bit and the rule key named).
    GuestPolicyRefused(&'static str),
    /// The guest policy's ABI_MAJOR.ABI_MINOR is below `snp.min_abi`.
    GuestPolicyAbiBelowMinimum {
        /// (major, minor) in the report's guest policy.
        reported: (u8, u8),
        /// (major, minor) the policy requires.
        minimum: (u8, u8),
    },
    /// AMD's CRL could not be parsed or carries what this verifier will not process.
    CrlMalformed(String),
    /// AMD's CRL is not signed by the pinned ARK (or not with RSASSA-PSS SHA-384).
    CrlSignatureInvalid,
    /// AMD's CRL is outside `thisUpdate ..= nextUpdate` at `now`.
    CrlNotValidAt {
        /// thisUpdate (Unix seconds).
        this_update: u64,
        /// nextUpdate (Unix seconds).
        next_update: u64,
        /// The time checked.
        now: u64,
    },
    /// A certificate of the chain is listed in the CRL.
    CertificateRevoked {
        /// Which certificate.
        role: CertRole,
        /// Its serial number (hex).
        serial: String,
    },
}

impl fmt::Display for TeeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TeeError::EvidenceTooLarge(n) => {
                write!(
                    f,
                    "evidence is {n} bytes, over the {MAX_EVIDENCE_LEN}-byte limit"
                )
            }
            TeeError::SnpReportMalformed(what) => write!(f, "SNP report malformed: {what}"),
            TeeError::SnpReportVersion(v) => write!(f, "SNP report version {v} not supported"),
            TeeError::SnpSignatureAlgorithm(a) => {
                write!(
                    f,
                    "SNP report signature algorithm {a} is not ECDSA P-384/SHA-384"
                )
            }
            TeeError::SnpSigningKey(k) => {
                write!(
                    f,
                    "SNP report signing key {k} is not the VCEK (or the chip key is masked)"
                )
            }
            TeeError::SnpCertTableMalformed(what) => {
                write!(f, "SNP certificate table malformed: {what}")
            }
            TeeError::CertificateMalformed { role, detail } => {
                write!(f, "{role} certificate malformed: {detail}")
            }
            TeeError::TdxQuoteMalformed(d) => write!(f, "TDX quote malformed: {d}"),
            TeeError::TdxCollateralMalformed(d) => write!(f, "TDX collateral malformed: {d}"),
            TeeError::MissingCertificate(role) => write!(f, "{role} certificate missing"),
            TeeError::MissingCollateral(what) => write!(f, "collateral missing: {what}"),
            TeeError::UnknownProduct(p) => write!(f, "no pinned AMD root for product {p:?}"),
            TeeError::UntrustedRoot => write!(f, "supplied ARK is not the pinned AMD root"),
            TeeError::ChainBroken(role) => {
                write!(
                    f,
                    "certificate chain broken: {role} issuer does not match its signer"
                )
            }
            TeeError::CertificateSignatureInvalid(role) => {
                write!(f, "{role} certificate signature invalid")
            }
            TeeError::CertificateNotValidAt {
                role,
                not_before,
                not_after,
                now,
            } => write!(
                f,
                "{role} certificate not valid at {now} (valid {not_before}..={not_after})"
            ),
            TeeError::ReportSignatureInvalid => {
                write!(f, "SNP report signature does not verify with the VCEK")
            }
            TeeError::VcekReportMismatch(what) => {
                write!(f, "VCEK does not match the report: {what}")
            }
            TeeError::TdxQuoteRejected(d) => write!(f, "TDX quote rejected: {d}"),
            TeeError::TdxCollateralNotValidAt {
                what,
                issued,
                next_update,
                now,
            } => write!(
                f,
                "TDX {what} not valid at {now} (issued {issued}, next update {next_update})"
            ),
            TeeError::NotATdQuote => write!(f, "quote is not a TD quote"),
            TeeError::PlatformMismatch { policy, evidence } => {
                write!(f, "policy requires {policy}, evidence is {evidence}")
            }
            TeeError::ReportDataMismatch => {
                write!(f, "report data is not the expected handshake binding value")
            }
            TeeError::DebugNotAllowed => {
                write!(f, "debug guest refused (policy lacks insecure_allow_debug)")
            }
            TeeError::TcbBelowMinimum {
                component,
                reported,
                minimum,
            } => write!(
                f,
                "reported TCB {component} {reported} is below the policy minimum {minimum}"
            ),
            TeeError::TcbStatusNotAccepted(s) => write!(f, "TCB status {s} not accepted"),
            TeeError::VmplNotAllowed(v) => write!(f, "VMPL {v} above the policy maximum"),
            TeeError::MeasurementNotAllowed(what) => {
                write!(f, "{what} is not an accepted value")
            }
            TeeError::NoMeasurementPolicy => write!(
                f,
                "policy lists no measurements (and does not say insecure_any_measurement)"
            ),
            TeeError::CollateralTooOld { age, max } => {
                write!(f, "collateral is {age} s old, over the {max} s limit")
            }
            TeeError::PolicyInvalid(d) => write!(f, "TEE policy invalid: {d}"),
            TeeError::ProductNotAllowed(p) => write!(
                f,
                "SNP product {p} is not in the policy's snp.products (Milan must be named \
                 explicitly)"
            ),
            TeeError::GuestPolicyRefused(why) => write!(f, "SNP guest policy refused: {why}"),
            TeeError::GuestPolicyAbiBelowMinimum { reported, minimum } => write!(
                f,
                "SNP guest policy ABI {}.{} is below the policy minimum {}.{}",
                reported.0, reported.1, minimum.0, minimum.1
            ),
            TeeError::CrlMalformed(d) => write!(f, "AMD CRL malformed: {d}"),
            TeeError::CrlSignatureInvalid => {
                write!(f, "AMD CRL is not signed by the pinned ARK")
            }
            TeeError::CrlNotValidAt {
                this_update,
                next_update,
                now,
            } => write!(
                f,
                "AMD CRL not valid at {now} (thisUpdate {this_update}, nextUpdate {next_update})"
            ),
            TeeError::CertificateRevoked { role, serial } => {
                write!(
                    f,
                    "{role} certificate (serial {serial}) is revoked by AMD's CRL"
                )
            }
        }
    }
}

impl std::error::Error for TeeError {}

/// Verifies `evidence` (format: [`EvidenceFormat`]) from `platform` against `policy`.
///
/// `expected_report_data` is the handshake binding value; `now_unix` is the time at
/// which certificates, CRLs and collateral must be valid.
pub fn verify(
    platform: TeePlatform,
    evidence: &[u8],
    policy: &TeePolicy,
    collateral: &Collateral,
    expected_report_data: &[u8; 64],
    now_unix: u64,
) -> Result<VerifiedTee, TeeError> {
    if platform != policy.platform {
        return Err(TeeError::PlatformMismatch {
            policy: policy.platform,
            evidence: platform,
        });
    }
    if evidence.len() > MAX_EVIDENCE_LEN {
        return Err(TeeError::EvidenceTooLarge(evidence.len()));
    }
    match platform {
        TeePlatform::Snp => {
            snp::verify(evidence, policy, collateral, expected_report_data, now_unix)
        }
        TeePlatform::Tdx => {
            tdx::verify(evidence, policy, collateral, expected_report_data, now_unix)
        }
    }
}

/// Decodes a hex policy value of exactly `N` bytes.
pub(crate) fn policy_hex<const N: usize>(field: &str, s: &str) -> Result<[u8; N], TeeError> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s.trim(), &mut out)
        .map_err(|e| TeeError::PolicyInvalid(format!("{field}: {e} (want {N} bytes of hex)")))?;
    Ok(out)
}

/// Constant-time equality of two byte strings of equal length.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The report data a piece of evidence claims, read without verifying anything.
///
/// For tools that display evidence or that have no expected value to compare with
/// (`pqcc evidence verify` without `--expect-report-data`); never a basis for trust.
pub fn claimed_report_data(platform: TeePlatform, evidence: &[u8]) -> Result<[u8; 64], TeeError> {
    match platform {
        TeePlatform::Snp => {
            let raw = evidence
                .get(..snp::REPORT_LEN)
                .ok_or(TeeError::SnpReportMalformed("shorter than 0x4A0 bytes"))?;
            Ok(snp::Report::parse(raw)?.report_data)
        }
        TeePlatform::Tdx => tdx::claimed_report_data(evidence),
    }
}
