//! NVIDIA GPU evidence verification (Hopper: H100 / H200), offline.
//!
//! Evidence is an SPDM 1.1 GET_MEASUREMENTS request and its signed MEASUREMENTS
//! response, plus the GPU's five-certificate device chain (leaf first). Reference
//! values are NVIDIA's driver and VBIOS RIMs (signed SWID XML). [`verify`] runs
//! every check and returns a [`Report`] naming each one:
//!
//! | check | what passes |
//! |---|---|
//! | `structure` | request and response parse strictly ([`spdm`]): SPDM 1.1, GET_MEASUREMENTS / MEASUREMENTS codes, signature requested, lengths, block count, DMTF blocks, known opaque TLVs only, nothing after the signature; five DER certificates |
//! | `nonce` | the request nonce equals the caller's (constant-time) |
//! | `signature` | ECDSA P-384 / SHA-384 over request ‖ response without its 96 signature bytes, with the leaf certificate's key |
//! | `device-chain` | the chain validates to the pinned NVIDIA Device Identity CA at `now` |
//! | `fwid` | the leaf's TCG DICE FWID equals the report's FWID opaque field (policy decides whether a report without one passes) |
//! | `rim-signature` | every RIM's enveloped XML-DSig verifies and its signer chains to the pinned RIM root at `now` — before anything in it is read |
//! | `rim-version` | exactly one RIM's `colloquialVersion` equals the report's driver version and exactly one the VBIOS version |
//! | `measurements` | every active index i of both RIMs matches one alternative with the report's block i + 1 (RIMs count from 0, SPDM from 1); no index is active in both |
//! | `revocation` | every non-leaf certificate of the device chain below the root, and every RIM signing certificate below the root, has a fresh verified "good" CRL or OCSP status in the offline bundle |
//!
//! Trusted: the two pinned roots in [`roots`] (NVIDIA's published roots, as shipped
//! in nv-local-gpu-verifier), the caller's clock and nonce. Untrusted: everything
//! else, including the certificates embedded in RIMs and the evidence. Nothing here
//! touches the network.

pub mod evidence;
pub mod revocation;
pub mod rim;
pub mod roots;
pub mod spdm;
pub mod x509;
pub mod xml;

use std::fmt;

pub use evidence::GpuEvidence;
pub use revocation::Collateral;
use rim::VerifiedRim;
use spdm::{MeasurementRequest, MeasurementResponse, SIGNATURE_LEN};
use x509::{Cert, LeafUse};

/// Number of certificates in a Hopper device chain.
pub const DEVICE_CHAIN_LEN: usize = 5;

/// A RIM as given by the caller: its raw bytes and where it came from.
#[derive(Debug, Clone)]
pub struct Rim {
    /// Where it came from (a file name), for messages.
    pub source: String,
    /// The XML bytes.
    pub bytes: Vec<u8>,
}

/// How revocation is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationPolicy {
    /// CRL/OCSP status from the collateral bundle is required, no older than this.
    Require {
        /// Oldest acceptable thisUpdate, in seconds before `now`.
        max_age_secs: u64,
    },
    /// Not checked; the report shows the check as skipped. For test data whose
    /// revocation status can no longer be fetched.
    InsecureSkip,
}

/// What the verifier accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuPolicy {
    /// Revocation handling.
    pub revocation: RevocationPolicy,
    /// Fail the `fwid` check when the report carries no FWID opaque field (older
    /// firmware, including the 2023 sample, does not; NVIDIA's verifier then skips
    /// the comparison).
    pub require_report_fwid: bool,
}

impl Default for GpuPolicy {
    /// Revocation required with a 7-day maximum age; a missing report FWID tolerated.
    fn default() -> Self {
        Self {
            revocation: RevocationPolicy::Require {
                max_age_secs: 7 * 24 * 3600,
            },
            require_report_fwid: false,
        }
    }
}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The check passed.
    Pass,
    /// The check failed (or could not run because an earlier one failed).
    Fail,
    /// The policy said not to run it.
    Skipped,
}

/// One named check and its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Stable name (`structure`, `nonce`, `signature`, `device-chain`, `fwid`,
    /// `rim-signature`, `rim-version`, `measurements`, `revocation`).
    pub name: &'static str,
    /// The outcome.
    pub outcome: Outcome,
    /// Why, in one line.
    pub detail: String,
}

/// Every check's result, in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The checks.
    pub checks: Vec<Check>,
    /// Driver version from the report, when it parsed.
    pub driver_version: Option<String>,
    /// VBIOS version from the report, when it parsed.
    pub vbios_version: Option<String>,
}

/// The check names, in report order.
pub const CHECK_NAMES: [&str; 9] = [
    "structure",
    "nonce",
    "signature",
    "device-chain",
    "fwid",
    "rim-signature",
    "rim-version",
    "measurements",
    "revocation",
];

impl Report {
    /// True when no check failed (a check skipped by policy does not fail).
    pub fn all_passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.outcome != Outcome::Fail)
    }

    /// The check with this name.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// Names of the failed checks.
    pub fn failed(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| c.outcome == Outcome::Fail)
            .map(|c| c.name)
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            let o = match c.outcome {
                Outcome::Pass => "PASS",
                Outcome::Fail => "FAIL",
                Outcome::Skipped => "SKIP",
            };
            writeln!(f, "{o:4}  {:13} {}", c.name, c.detail)?;
        }
        Ok(())
    }
}

struct Builder {
    checks: Vec<Check>,
}

impl Builder {
    fn put(&mut self, name: &'static str, r: Result<String, String>) -> bool {
        let ok = r.is_ok();
        let (outcome, detail) = match r {
            Ok(d) => (Outcome::Pass, d),
            Err(d) => (Outcome::Fail, d),
        };
        self.checks.push(Check {
            name,
            outcome,
            detail,
        });
        ok
    }
    fn skip(&mut self, name: &'static str, detail: String) {
        self.checks.push(Check {
            name,
            outcome: Outcome::Skipped,
            detail,
        });
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Verifies GPU evidence against RIMs, the pinned roots and the policy.
///
/// `now_unix` is the time certificates and revocation data are judged at;
/// `collateral` is the offline revocation bundle (needed unless the policy skips
/// revocation). Never panics on any input; every failure is a failed check. Every
/// signature is checked (a fresh [`GpuVerifier`]).
pub fn verify(
    evidence: &GpuEvidence,
    rims: &[Rim],
    policy: &GpuPolicy,
    expected_nonce: &[u8; 32],
    now_unix: u64,
    collateral: Option<&Collateral>,
) -> Report {
    GpuVerifier::new().verify(evidence, rims, policy, expected_nonce, now_unix, collateral)
}

/// Most RIM verifications a [`GpuVerifier`] keeps.
const RIM_CACHE: usize = 16;
/// Largest RIM whose verification a [`GpuVerifier`] keeps (its bytes are kept too,
/// for an exact comparison); larger ones are verified on every call.
const MAX_CACHED_RIM_LEN: usize = 1 << 20;

/// A verifier that remembers what it verified before, for a host that verifies many
/// GPUs (the broker), often the same ones again (every boot re-attests the fleet).
///
/// Remembered, each keyed by the exact bytes involved (compared in full, not by
/// digest), and only after they verified:
/// - certificate signatures of the device chain's CA certificates that every GPU
///   shares (Provisioner ICA, GH100 Identity) and of the RIM signing chains
///   (at most [`x509::SigCache::CAPACITY`] each);
/// - certificate signatures of the device-specific leaf and BROM certificates of GPUs
///   seen before, at most [`GpuVerifier::DEFAULT_DEVICE_CAPACITY`] entries (two per GPU;
///   [`GpuVerifier::with_device_capacity`] sets another bound, 0 turns this off);
///   the oldest entry is dropped first;
/// - whole RIM verifications (at most 16 RIMs of at most 1 MiB), reused only while
///   `now` is inside the RIM chain's validity.
///
/// Per evidence it always verifies the structure, the nonce, the report signature
/// (fresh nonce, so never cached), every certificate's validity period at `now`, CA
/// constraints, the FWID, versions, measurements and revocation. A cached entry only
/// says "these exact bytes verified": any changed byte misses and is verified in
/// full, so results equal those of [`verify`].
///
/// On a machine with more than one core, a call that has RIMs to verify does that on
/// a second thread while it checks the evidence (see [`GpuVerifier::parallel`]).
#[derive(Debug)]
pub struct GpuVerifier {
    /// Device chain: CA certificates above the device-specific ones.
    sigs: x509::SigCache,
    /// Device chain: the device-specific leaf and BROM certificates.
    device: x509::SigCache,
    /// RIM signing chains.
    rim_sigs: x509::SigCache,
    rims: Vec<CachedRim>,
    parallel: bool,
}

impl Default for GpuVerifier {
    fn default() -> Self {
        Self::with_device_capacity(Self::DEFAULT_DEVICE_CAPACITY)
    }
}

/// A RIM's bytes, the span in which its verification may be reused, and the
/// verified RIM.
type CachedRim = (Vec<u8>, (u64, u64), std::sync::Arc<VerifiedRim>);

/// Whether this machine has more than one core (asked once).
fn multi_core() -> bool {
    static MULTI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MULTI.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

impl GpuVerifier {
    /// Default bound on remembered leaf/BROM certificate signatures: 2048 entries,
    /// 1024 GPUs (about 2 KiB each: both certificates' DER).
    pub const DEFAULT_DEVICE_CAPACITY: usize = 2048;

    /// An empty verifier (device-certificate memo of
    /// [`GpuVerifier::DEFAULT_DEVICE_CAPACITY`] entries).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty verifier remembering at most `entries` leaf/BROM certificate
    /// signatures (two per GPU); 0: they are verified on every call, and only what
    /// every GPU shares (CA certificates, RIMs) is remembered.
    pub fn with_device_capacity(entries: usize) -> Self {
        Self {
            sigs: x509::SigCache::default(),
            device: x509::SigCache::with_capacity(entries),
            rim_sigs: x509::SigCache::default(),
            rims: Vec::new(),
            parallel: multi_core(),
        }
    }

    /// Whether RIMs that are not remembered are verified on a second thread while the
    /// evidence is checked (default: when the machine has more than one core). The
    /// results are the same either way.
    pub fn parallel(mut self, on: bool) -> Self {
        self.parallel = on;
        self
    }

    /// Leaf/BROM certificate signatures remembered now (at most the capacity).
    pub fn device_memo_len(&self) -> usize {
        self.device.len()
    }

    /// Most leaf/BROM certificate signatures remembered.
    pub fn device_memo_capacity(&self) -> usize {
        self.device.capacity()
    }

    /// Like [`verify`], reusing what earlier calls verified (see the type's docs).
    pub fn verify(
        &mut self,
        evidence: &GpuEvidence,
        rims: &[Rim],
        policy: &GpuPolicy,
        expected_nonce: &[u8; 32],
        now_unix: u64,
        collateral: Option<&Collateral>,
    ) -> Report {
        verify_with(
            self,
            evidence,
            rims,
            policy,
            expected_nonce,
            now_unix,
            collateral,
        )
    }
}

/// The cached verification of `r` valid at `now`, if any.
fn cached_rim<'c>(cache: &'c [CachedRim], r: &Rim, now: u64) -> Option<&'c CachedRim> {
    cache
        .iter()
        .find(|(b, (nb, na), _)| *b == r.bytes && (*nb..=*na).contains(&now))
}

fn verify_rim(
    cache: &mut Vec<CachedRim>,
    sigs: &mut x509::SigCache,
    r: &Rim,
    root: &Cert,
    now: u64,
) -> Result<std::sync::Arc<VerifiedRim>, String> {
    if let Some((_, _, v)) = cached_rim(cache, r, now) {
        return Ok(v.clone());
    }
    let v = std::sync::Arc::new(
        VerifiedRim::verify_with_cache(&r.bytes, root, now, sigs)
            .map_err(|e| format!("{}: {e}", r.source))?,
    );
    if r.bytes.len() <= MAX_CACHED_RIM_LEN {
        cache.retain(|(b, _, _)| *b != r.bytes);
        if cache.len() >= RIM_CACHE {
            cache.remove(0);
        }
        cache.push((r.bytes.clone(), v.validity_window(root), v.clone()));
    }
    Ok(v)
}

/// The `rim-signature` check: every RIM verified (or remembered), in order.
type RimOutcome = (
    Result<String, String>,
    Vec<(String, std::sync::Arc<VerifiedRim>)>,
);

fn verify_rims(
    rims: &[Rim],
    now: u64,
    sigs: &mut x509::SigCache,
    cache: &mut Vec<CachedRim>,
) -> RimOutcome {
    let mut verified = Vec::new();
    let r = (|| {
        let root = roots::rim_root_ref()?;
        if rims.is_empty() {
            return Err("no RIM given".to_string());
        }
        let mut notes = Vec::new();
        for r in rims {
            let v = verify_rim(cache, sigs, r, root, now)?;
            notes.push(format!("{} ({})", r.source, v.colloquial_version));
            verified.push((r.source.clone(), v));
        }
        Ok(format!(
            "signed, chained to the pinned RIM root: {}",
            notes.join(", ")
        ))
    })();
    (r, verified)
}

#[allow(clippy::too_many_arguments)]
fn verify_with(
    ctx: &mut GpuVerifier,
    evidence: &GpuEvidence,
    rims: &[Rim],
    policy: &GpuPolicy,
    expected_nonce: &[u8; 32],
    now_unix: u64,
    collateral: Option<&Collateral>,
) -> Report {
    let GpuVerifier {
        sigs,
        device,
        rim_sigs,
        rims: rim_cache,
        parallel,
    } = ctx;
    let mut b = Builder { checks: Vec::new() };
    let not_run = |dep: &str| Err(format!("not evaluated: {dep} failed"));

    // structure
    let parsed = (|| -> Result<(MeasurementRequest, MeasurementResponse, Vec<Cert>), String> {
        let req =
            MeasurementRequest::parse(&evidence.request).map_err(|e| format!("request: {e}"))?;
        let resp =
            MeasurementResponse::parse(&evidence.response).map_err(|e| format!("response: {e}"))?;
        if resp.slot_id != req.slot_id {
            return Err(format!(
                "response slot {} differs from requested slot {}",
                resp.slot_id, req.slot_id
            ));
        }
        if evidence.certs.len() != DEVICE_CHAIN_LEN {
            return Err(format!(
                "device chain has {} certificates, expected {DEVICE_CHAIN_LEN}",
                evidence.certs.len()
            ));
        }
        let certs = evidence
            .certs
            .iter()
            .enumerate()
            .map(|(i, d)| Cert::from_der(d).map_err(|e| format!("device certificate {i}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((req, resp, certs))
    })();
    let (req, resp, certs) = match parsed {
        Ok(p) => {
            b.put(
                "structure",
                Ok(format!(
                    "SPDM 1.1, {} measurement blocks, {} opaque fields, {} certificates",
                    p.1.blocks.len(),
                    p.1.opaque.len(),
                    p.2.len()
                )),
            );
            p
        }
        Err(e) => {
            b.put("structure", Err(e));
            for n in &CHECK_NAMES[1..] {
                b.put(n, not_run("structure"));
            }
            return Report {
                checks: b.checks,
                driver_version: None,
                vbios_version: None,
            };
        }
    };
    // The RIMs depend only on their bytes, the pinned root and `now`: verify them on
    // a second thread while this one checks the evidence, unless all are remembered.
    let rims_to_verify = rims
        .iter()
        .any(|r| cached_rim(rim_cache, r, now_unix).is_none());
    std::thread::scope(|scope| {
        let mut rim_state = Some((rim_sigs, rim_cache));
        let rim_job = if *parallel
            && rims_to_verify
            && let Some((rs, rc)) = rim_state.take()
        {
            Some(scope.spawn(move || verify_rims(rims, now_unix, rs, rc)))
        } else {
            None
        };
        let rim_result = move || -> RimOutcome {
            match (rim_job, rim_state) {
                (Some(h), _) => h.join().unwrap_or_else(|_| {
                    (Err("RIM verification thread panicked".into()), Vec::new())
                }),
                (None, Some((rs, rc))) => verify_rims(rims, now_unix, rs, rc),
                (None, None) => (Err("RIMs not verified".into()), Vec::new()),
            }
        };
        evidence_checks(
            b,
            &req,
            &resp,
            &certs,
            evidence,
            policy,
            expected_nonce,
            now_unix,
            collateral,
            sigs,
            device,
            rim_result,
        )
    })
}

#[allow(clippy::too_many_arguments)]
fn evidence_checks(
    mut b: Builder,
    req: &MeasurementRequest,
    resp: &MeasurementResponse,
    certs: &[Cert],
    evidence: &GpuEvidence,
    policy: &GpuPolicy,
    expected_nonce: &[u8; 32],
    now_unix: u64,
    collateral: Option<&Collateral>,
    sigs: &mut x509::SigCache,
    device: &mut x509::SigCache,
    rim_result: impl FnOnce() -> RimOutcome,
) -> Report {
    let not_run = |dep: &str| Err(format!("not evaluated: {dep} failed"));
    let driver_version = resp.driver_version();
    let vbios_version = resp.vbios_version();

    // nonce
    b.put(
        "nonce",
        if ct_eq(&req.nonce, expected_nonce) {
            Ok("request nonce equals the expected nonce".into())
        } else {
            Err(format!(
                "request nonce {} differs from the expected {}",
                hex::encode(req.nonce),
                hex::encode(expected_nonce)
            ))
        },
    );

    // signature
    let leaf = &certs[0];
    let sig_ok = b.put(
        "signature",
        (|| {
            let key = leaf.public_key()?;
            let body_len = evidence.response.len() - SIGNATURE_LEN;
            let mut signed = Vec::with_capacity(evidence.request.len() + body_len);
            signed.extend_from_slice(&evidence.request);
            signed.extend_from_slice(&evidence.response[..body_len]);
            x509::verify_raw_sig(&key, &signed, &resp.signature)?;
            Ok(format!("response signed by the key of {}", leaf.name()))
        })(),
    );

    // device chain
    let device_root = roots::device_root_ref();
    let chain_ok = b.put(
        "device-chain",
        device_root.and_then(|root| {
            x509::verify_chain_memo(
                certs,
                root,
                now_unix,
                LeafUse::DigitalSignature,
                // The leaf and the BROM certificate are device-specific: remembered
                // in their own bounded memo (capacity 0: always verified).
                Some(device),
                2,
                sigs,
            )?;
            if certs.last().map(|c| &c.der) != Some(&root.der) {
                return Err("the chain's last certificate is not the pinned device root".into());
            }
            Ok(format!(
                "{} certificates up to the pinned {}",
                certs.len(),
                root.name()
            ))
        }),
    );

    // fwid
    b.put(
        "fwid",
        (|| {
            let cert_fwid = x509::leaf_fwid(leaf)?;
            match (resp.opaque_field(spdm::OPAQUE_FWID), cert_fwid) {
                (Some(r), Some(c)) if ct_eq(r, &c) => Ok(format!(
                    "report FWID equals the leaf's ({})",
                    hex::encode(&c)
                )),
                (Some(r), Some(c)) => Err(format!(
                    "report FWID {} differs from the leaf's {}",
                    hex::encode(r),
                    hex::encode(c)
                )),
                (Some(_), None) => {
                    Err("report has a FWID but the leaf has no FWID extension".into())
                }
                (None, _) if policy.require_report_fwid => {
                    Err("report carries no FWID and the policy requires one".into())
                }
                (None, Some(c)) => Ok(format!(
                    "report carries no FWID (older firmware; policy allows); leaf FWID {}",
                    hex::encode(c)
                )),
                (None, None) => Ok("neither report nor leaf carries a FWID (policy allows)".into()),
            }
        })(),
    );

    // rim-signature: every RIM verified before anything is read from it.
    let (rim_sig, verified) = rim_result();
    let rims_ok = b.put("rim-signature", rim_sig);

    // rim-version
    let mut driver_rim: Option<&VerifiedRim> = None;
    let mut vbios_rim: Option<&VerifiedRim> = None;
    let version_ok = if !rims_ok {
        b.put("rim-version", not_run("rim-signature"))
    } else {
        b.put(
            "rim-version",
            (|| {
                let dv = driver_version.clone()?;
                let vv = vbios_version.clone()?;
                for (src, v) in &verified {
                    let cv = v.colloquial_version.to_ascii_lowercase();
                    let slot = if cv == dv.to_ascii_lowercase() {
                        &mut driver_rim
                    } else if cv == vv {
                        &mut vbios_rim
                    } else {
                        return Err(format!(
                            "{src}: colloquialVersion {} matches neither driver {dv} nor VBIOS {vv}",
                            v.colloquial_version
                        ));
                    };
                    if slot.is_some() {
                        return Err(format!("{src}: a second RIM for version {cv}"));
                    }
                    *slot = Some(v);
                }
                match (driver_rim.is_some(), vbios_rim.is_some()) {
                    (true, true) => Ok(format!("driver {dv} and VBIOS {vv} RIMs")),
                    (false, _) => Err(format!("no RIM for driver version {dv}")),
                    (_, false) => Err(format!("no RIM for VBIOS version {vv}")),
                }
            })(),
        )
    };

    // measurements
    if !version_ok {
        b.put("measurements", not_run("rim-version"));
    } else if let (Some(d), Some(v)) = (driver_rim, vbios_rim) {
        b.put("measurements", compare_measurements(resp, d, v));
    } else {
        b.put("measurements", not_run("rim-version"));
    }

    // revocation
    match policy.revocation {
        RevocationPolicy::InsecureSkip => b.skip(
            "revocation",
            "not checked: policy InsecureSkip (no CRL/OCSP status consulted)".into(),
        ),
        RevocationPolicy::Require { max_age_secs } => {
            let r = (|| {
                let coll = collateral.ok_or("no collateral bundle given")?;
                if !chain_ok {
                    return Err("not evaluated: device-chain failed".to_string());
                }
                if !rims_ok {
                    return Err("not evaluated: rim-signature failed".to_string());
                }
                let mut parts = vec![revocation::check_chain(
                    "device",
                    certs,
                    1,
                    coll,
                    now_unix,
                    max_age_secs,
                )?];
                for (src, v) in &verified {
                    let mut chain = v.chain.clone();
                    if let Ok(root) = roots::rim_root_ref()
                        && chain.last().map(|c| &c.der) != Some(&root.der)
                    {
                        chain.push(root.clone());
                    }
                    parts.push(revocation::check_chain(
                        src,
                        &chain,
                        0,
                        coll,
                        now_unix,
                        max_age_secs,
                    )?);
                }
                Ok(parts.join(" | "))
            })();
            b.put("revocation", r);
        }
    }
    let _ = sig_ok;

    Report {
        checks: b.checks,
        driver_version: driver_version.ok(),
        vbios_version: vbios_version.ok(),
    }
}

fn compare_measurements(
    resp: &MeasurementResponse,
    driver: &VerifiedRim,
    vbios: &VerifiedRim,
) -> Result<String, String> {
    let mut golden: Vec<(&rim::GoldenMeasurement, &str)> = Vec::new();
    for m in driver.measurements.iter().filter(|m| m.active) {
        golden.push((m, "driver"));
    }
    for m in vbios.measurements.iter().filter(|m| m.active) {
        if golden.iter().any(|(g, _)| g.index == m.index) {
            return Err(format!(
                "index {} is active in both the driver and the VBIOS RIM",
                m.index
            ));
        }
        golden.push((m, "vbios"));
    }
    if golden.is_empty() {
        return Err("no active golden measurement".into());
    }
    let mut bad = Vec::new();
    for (g, src) in &golden {
        // RIM indices count from 0, SPDM block indices from 1 (NVIDIA's verifier
        // compares RIM index i with the i-th block).
        let ok = g
            .index
            .checked_add(1)
            .and_then(|i| resp.block(i))
            .is_some_and(|blk| g.alternatives.iter().any(|a| ct_eq(a, &blk.value)));
        if !ok {
            bad.push(format!("{} ({src})", g.index));
        }
    }
    if bad.is_empty() {
        let nd = golden.iter().filter(|(_, s)| *s == "driver").count();
        Ok(format!(
            "{} active indices match ({nd} driver, {} VBIOS)",
            golden.len(),
            golden.len() - nd
        ))
    } else {
        Err(format!("mismatched indices: {}", bad.join(", ")))
    }
}
