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

/// A verifier that remembers what every GPU shares, for a host that verifies many
/// (the broker): signatures on the device chain's CA certificates above the
/// device-specific ones (Provisioner ICA, GH100 Identity) and on RIM signing chains,
/// and whole RIM verifications keyed by the SHA-384 of the RIM's bytes, reused only
/// while `now` is inside the RIM chain's validity. Per evidence it always verifies the
/// report signature, the leaf and the device-unique BROM certificate, the nonce,
/// versions, measurements, validity periods and revocation. Results equal those of
/// [`verify`].
#[derive(Debug, Default)]
pub struct GpuVerifier {
    sigs: x509::SigCache,
    rims: Vec<CachedRim>,
}

/// SHA-384 of a RIM's bytes, the span in which its verification may be reused, and
/// the verified RIM.
type CachedRim = ([u8; 48], (u64, u64), std::sync::Arc<VerifiedRim>);

impl GpuVerifier {
    /// An empty verifier.
    pub fn new() -> Self {
        Self::default()
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

    fn rim(
        &mut self,
        r: &Rim,
        root: &Cert,
        now: u64,
    ) -> Result<std::sync::Arc<VerifiedRim>, String> {
        use sha2::{Digest, Sha384};
        let key: [u8; 48] = Sha384::digest(&r.bytes).into();
        if let Some((_, (nb, na), v)) = self.rims.iter().find(|(k, _, _)| *k == key)
            && (*nb..=*na).contains(&now)
        {
            return Ok(v.clone());
        }
        let v = std::sync::Arc::new(
            VerifiedRim::verify_with_cache(&r.bytes, root, now, &mut self.sigs)
                .map_err(|e| format!("{}: {e}", r.source))?,
        );
        self.rims.retain(|(k, _, _)| *k != key);
        if self.rims.len() >= RIM_CACHE {
            self.rims.clear();
        }
        self.rims.push((key, v.validity_window(root), v.clone()));
        Ok(v)
    }
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
    let device_root = roots::device_root();
    let chain_ok = b.put(
        "device-chain",
        device_root.and_then(|root| {
            x509::verify_chain(
                &certs,
                &root,
                now_unix,
                LeafUse::DigitalSignature,
                &mut ctx.sigs,
                // The leaf and the BROM certificate are device-specific: always checked.
                2,
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

    // rim-signature: verify every RIM before reading anything from it.
    let rim_root = roots::rim_root();
    let mut verified: Vec<(String, std::sync::Arc<VerifiedRim>)> = Vec::new();
    let rim_sig = (|| {
        let root = rim_root?;
        if rims.is_empty() {
            return Err("no RIM given".to_string());
        }
        let mut notes = Vec::new();
        for r in rims {
            let v = ctx.rim(r, &root, now_unix)?;
            notes.push(format!("{} ({})", r.source, v.colloquial_version));
            verified.push((r.source.clone(), v));
        }
        Ok(format!(
            "signed, chained to the pinned RIM root: {}",
            notes.join(", ")
        ))
    })();
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
        b.put("measurements", compare_measurements(&resp, d, v));
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
                    &certs,
                    1,
                    coll,
                    now_unix,
                    max_age_secs,
                )?];
                for (src, v) in &verified {
                    let mut chain = v.chain.clone();
                    if let Ok(root) = roots::rim_root()
                        && chain.last().map(|c| &c.der) != Some(&root.der)
                    {
                        chain.push(root);
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
