//! Policies over verified statements: driver allow-list, eBPF load rules, memory-report
//! checks. Every decision is [`Decision::Allow`] or [`Decision::Deny`] with a
//! [`DenyReason`]; nothing here allocates.
//!
//! ## Rules that hold for every policy
//! - A policy only sees [`Verified`] statements: signature, trust store and strict
//!   decoding were already checked by [`crate::statement::verify`].
//! - An empty signer set admits **nobody**, never everybody.
//! - Artifact checks take the hash and length of the **actual bytes** ([`Artifact`]),
//!   computed by the caller (e.g. with [`Sha3_256Stream`]). No bytes — a stripped
//!   eBPF object, a missing module file — is [`DenyReason::NoArtifact`], never Allow.
//!   Size caps apply to the actual length; the declared size must also equal it.
//! - Expected values (hashes of memory regions) come from the verifier's policy, never
//!   from the thing being checked.
//! - Hash and nonce comparisons are constant-time.
//!
//! ## eBPF load rules ([`LoadPolicy`])
//! Rules are tried in order; a rule *matches* a load when its `program_types` list the
//! type the loader is about to load (an empty list matches nothing — use
//! [`BpfProgType::ALL`] for "any type"). The first matching rule decides: a `Deny`
//! action denies ([`DenyReason::RuleDenied`]); an `Allow` action allows only if the
//! rule's conditions hold: the actual bytecode within `max_size`, a verified signature
//! when `require_signature`, and a signed program's signer in `signers` (an empty set
//! admits no signed program). When no rule matches, `default` decides (deny unless set
//! otherwise, [`DenyReason::NoRuleMatched`]). Before any rule, every load needs the
//! bytecode's hash and length, and a signed load must match its statement: same program
//! type, same size, same hash. [`LoadPolicy::lint`] lists what a reviewer should look at.

use core::fmt;

use crate::{
    hash::Sha3_256Stream,
    secret::ct_eq,
    sign::SignerId,
    statement::{BpfProgType, BpfProgram, DriverModule, MemoryReport, Verified},
    wire::Platform,
};

/// The outcome of a policy check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admitted.
    Allow,
    /// Refused, with the reason.
    Deny(DenyReason),
}

impl Decision {
    /// Whether this is [`Decision::Allow`].
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allow => f.write_str("allow"),
            Decision::Deny(r) => write!(f, "deny: {r}"),
        }
    }
}

/// Why a policy refused.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    // ---- artifacts -----------------------------------------------------------
    /// The artifact's bytes were not supplied (e.g. stripped bytecode): nothing to check.
    NoArtifact,
    /// The actual length differs from the signed size.
    SizeMismatch {
        /// The size in the statement.
        declared: u64,
        /// The length of the bytes supplied.
        actual: u64,
    },
    /// SHA3-256 of the actual bytes differs from the signed hash.
    HashMismatch,
    /// The actual bytes are longer than the policy's cap.
    TooLarge {
        /// The length of the bytes supplied.
        actual: u64,
        /// The cap.
        max: u64,
    },
    // ---- signers ---------------------------------------------------------------
    /// The (verified) signer is not in the policy's signer set.
    SignerNotAllowed,
    /// The matching rule requires a verified signature and there is none.
    Unsigned,
    // ---- eBPF ------------------------------------------------------------------
    /// The loader's program type differs from the signed one.
    ProgTypeMismatch {
        /// The type in the statement.
        signed: BpfProgType,
        /// The type the loader was about to load.
        loading: BpfProgType,
    },
    /// No rule matched and the default is deny.
    NoRuleMatched,
    /// The first matching rule's action is deny.
    RuleDenied {
        /// The rule's index.
        rule: usize,
    },
    // ---- memory reports ---------------------------------------------------------
    /// The report's nonce is not the verifier's challenge.
    NonceMismatch,
    /// `now` is before the report's `issued_at`.
    NotYetValid,
    /// `now` is at or after the report's `expires_at`.
    Expired,
    /// The report's validity (`expires_at - issued_at`) exceeds the policy's maximum.
    ValidityTooLong,
    /// The report is for another workload.
    WorkloadMismatch,
    /// The report is from another TEE platform.
    PlatformMismatch,
    /// The policy pins no region at all, so no report can show anything.
    NothingPinned,
    /// The report claims a region the verifier has no pinned hash for.
    UnpinnedRegion {
        /// Index of the claim in the report.
        region: usize,
    },
    /// A claimed region's hash differs from the verifier's pinned hash.
    Drift {
        /// Index of the claim in the report.
        region: usize,
    },
    /// A region the verifier pins is missing from the report.
    MissingRegion {
        /// Index of the pin in the policy.
        pinned: usize,
    },
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::NoArtifact => f.write_str("artifact bytes missing"),
            DenyReason::SizeMismatch { declared, actual } => {
                write!(f, "size {actual} differs from the signed size {declared}")
            }
            DenyReason::HashMismatch => f.write_str("SHA3-256 differs from the signed hash"),
            DenyReason::TooLarge { actual, max } => {
                write!(f, "size {actual} over the cap of {max}")
            }
            DenyReason::SignerNotAllowed => f.write_str("signer not allowed"),
            DenyReason::Unsigned => f.write_str("signature required"),
            DenyReason::ProgTypeMismatch { signed, loading } => {
                write!(f, "loading as {loading}, signed as {signed}")
            }
            DenyReason::NoRuleMatched => f.write_str("no rule matched (default deny)"),
            DenyReason::RuleDenied { rule } => write!(f, "denied by rule {rule}"),
            DenyReason::NonceMismatch => f.write_str("nonce is not the challenge"),
            DenyReason::NotYetValid => f.write_str("report issued in the future"),
            DenyReason::Expired => f.write_str("report expired"),
            DenyReason::ValidityTooLong => f.write_str("report validity longer than allowed"),
            DenyReason::WorkloadMismatch => f.write_str("report for another workload"),
            DenyReason::PlatformMismatch => f.write_str("report from another platform"),
            DenyReason::NothingPinned => f.write_str("policy pins no region"),
            DenyReason::UnpinnedRegion { region } => {
                write!(f, "region {region} has no pinned hash")
            }
            DenyReason::Drift { region } => {
                write!(f, "region {region} differs from its pinned hash")
            }
            DenyReason::MissingRegion { pinned } => {
                write!(f, "pinned region {pinned} missing from the report")
            }
        }
    }
}

/// What a rule or a default does when it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Admit (if the rule's conditions hold).
    Allow,
    /// Refuse.
    Deny,
}

/// The SHA3-256 and exact length of an artifact's actual bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Artifact {
    /// SHA3-256 of the bytes.
    pub sha3_256: [u8; 32],
    /// Their length.
    pub len: u64,
}

impl Artifact {
    /// Hashes `bytes` in one go.
    pub fn measure(bytes: &[u8]) -> Self {
        let mut s = Sha3_256Stream::new();
        s.update(bytes);
        Self::from_stream(s)
    }

    /// The result of a stream that was fed every byte of the artifact.
    pub fn from_stream(stream: Sha3_256Stream) -> Self {
        let (sha3_256, len) = stream.finish();
        Self { sha3_256, len }
    }
}

/// A statement about an artifact's bytes.
pub trait ArtifactStatement {
    /// The signed SHA3-256.
    fn declared_sha3_256(&self) -> &[u8; 32];
    /// The signed size.
    fn declared_size(&self) -> u64;
}

impl ArtifactStatement for DriverModule<'_> {
    fn declared_sha3_256(&self) -> &[u8; 32] {
        &self.sha3_256
    }
    fn declared_size(&self) -> u64 {
        self.size
    }
}

impl ArtifactStatement for BpfProgram<'_> {
    fn declared_sha3_256(&self) -> &[u8; 32] {
        &self.sha3_256
    }
    fn declared_size(&self) -> u64 {
        self.size
    }
}

/// Checks the actual bytes against a statement: present ([`DenyReason::NoArtifact`]),
/// within `max_size` if given ([`DenyReason::TooLarge`], on the **actual** length),
/// the signed size ([`DenyReason::SizeMismatch`]), the signed hash
/// ([`DenyReason::HashMismatch`], constant-time).
pub fn check_artifact<S: ArtifactStatement + ?Sized>(
    statement: &S,
    actual: Option<&Artifact>,
    max_size: Option<u64>,
) -> Decision {
    let Some(actual) = actual else {
        return Decision::Deny(DenyReason::NoArtifact);
    };
    if let Some(max) = max_size
        && actual.len > max
    {
        return Decision::Deny(DenyReason::TooLarge {
            actual: actual.len,
            max,
        });
    }
    if actual.len != statement.declared_size() {
        return Decision::Deny(DenyReason::SizeMismatch {
            declared: statement.declared_size(),
            actual: actual.len,
        });
    }
    if !ct_eq(&actual.sha3_256, statement.declared_sha3_256()) {
        return Decision::Deny(DenyReason::HashMismatch);
    }
    Decision::Allow
}

fn signer_in(set: &[SignerId], signer: &SignerId) -> bool {
    // Fold over the whole set: no early exit on a match.
    set.iter().fold(false, |found, s| found | s.ct_eq(signer))
}

// ---------------------------------------------------------------------------------
// Drivers

/// Which driver modules may load: signed by one of `signers`, bytes matching the
/// statement, within `max_size`.
#[derive(Debug, Clone, Copy)]
pub struct DriverPolicy<'a> {
    /// Signers whose driver statements are admitted. Empty admits nobody.
    pub signers: &'a [SignerId],
    /// Cap on the module file's actual length, if any.
    pub max_size: Option<u64>,
}

impl DriverPolicy<'_> {
    /// Decides whether the module whose bytes measured `actual` may load under
    /// `statement`. `None` for `actual` (no bytes) is always denied.
    pub fn check(
        &self,
        statement: &Verified<DriverModule<'_>>,
        actual: Option<&Artifact>,
    ) -> Decision {
        if !signer_in(self.signers, &statement.signer()) {
            return Decision::Deny(DenyReason::SignerNotAllowed);
        }
        check_artifact(statement.body(), actual, self.max_size)
    }
}

// ---------------------------------------------------------------------------------
// eBPF

/// One eBPF load rule (see the module docs for how rules are applied).
#[derive(Debug, Clone, Copy)]
pub struct Rule<'a> {
    /// The program types this rule matches. Empty matches nothing.
    pub program_types: &'a [BpfProgType],
    /// Signers admitted for signed programs. Empty admits no signed program.
    pub signers: &'a [SignerId],
    /// Whether an unsigned program is refused ([`DenyReason::Unsigned`]).
    pub require_signature: bool,
    /// Cap on the actual bytecode length, if any.
    pub max_size: Option<u64>,
    /// What the rule does when it matches and its conditions hold.
    pub action: Action,
}

/// Ordered eBPF load rules and a default.
#[derive(Debug, Clone, Copy)]
pub struct LoadPolicy<'a> {
    /// The rules, first match wins.
    pub rules: &'a [Rule<'a>],
    /// What happens when no rule matches.
    pub default: Action,
}

impl Default for LoadPolicy<'_> {
    /// No rules, default deny: nothing loads.
    fn default() -> Self {
        Self {
            rules: &[],
            default: Action::Deny,
        }
    }
}

/// One eBPF load to decide on.
#[derive(Debug, Clone, Copy)]
pub struct BpfLoad<'r, 'a> {
    /// The program type the loader is about to load the bytecode as.
    pub prog_type: BpfProgType,
    /// The program's statement, if one verified; `None` for an unsigned program (or
    /// one whose envelope did not verify).
    pub statement: Option<&'r Verified<BpfProgram<'a>>>,
    /// Hash and length of the bytecode about to be loaded; `None` when there is none.
    pub bytecode: Option<&'r Artifact>,
}

impl<'a> LoadPolicy<'a> {
    /// The index of the rule that decides loads of `prog_type`, if any.
    pub fn matching_rule(&self, prog_type: BpfProgType) -> Option<usize> {
        self.rules
            .iter()
            .position(|r| r.program_types.contains(&prog_type))
    }

    /// Decides on `load` (see the module docs).
    pub fn evaluate(&self, load: &BpfLoad<'_, '_>) -> Decision {
        let Some(bytecode) = load.bytecode else {
            return Decision::Deny(DenyReason::NoArtifact);
        };
        if let Some(s) = load.statement {
            if s.body().prog_type != load.prog_type {
                return Decision::Deny(DenyReason::ProgTypeMismatch {
                    signed: s.body().prog_type,
                    loading: load.prog_type,
                });
            }
            if let d @ Decision::Deny(_) = check_artifact(s.body(), Some(bytecode), None) {
                return d;
            }
        }
        let Some(i) = self.matching_rule(load.prog_type) else {
            return match self.default {
                Action::Allow => Decision::Allow,
                Action::Deny => Decision::Deny(DenyReason::NoRuleMatched),
            };
        };
        let rule = &self.rules[i];
        if rule.action == Action::Deny {
            return Decision::Deny(DenyReason::RuleDenied { rule: i });
        }
        if let Some(max) = rule.max_size
            && bytecode.len > max
        {
            return Decision::Deny(DenyReason::TooLarge {
                actual: bytecode.len,
                max,
            });
        }
        match load.statement {
            None if rule.require_signature => Decision::Deny(DenyReason::Unsigned),
            None => Decision::Allow,
            Some(s) if signer_in(rule.signers, &s.signer()) => Decision::Allow,
            Some(_) => Decision::Deny(DenyReason::SignerNotAllowed),
        }
    }

    /// What a reviewer should look at in this policy, in rule order, then the default.
    pub fn lint(&self) -> Lints<'_, 'a> {
        Lints {
            policy: self,
            rule: 0,
            check: 0,
            default_done: false,
        }
    }
}

/// A finding of [`LoadPolicy::lint`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lint {
    /// The rule lists no program type, so it never matches.
    EmptyProgramTypes {
        /// The rule's index.
        rule: usize,
    },
    /// Earlier rules match every program type this rule lists, so it never decides.
    UnreachableRule {
        /// The rule's index.
        rule: usize,
    },
    /// An allow rule with an empty signer set: it admits no signed program (and, if it
    /// requires a signature, nothing at all).
    EmptySignerSet {
        /// The rule's index.
        rule: usize,
    },
    /// An allow rule that admits unsigned programs.
    UnsignedAllowed {
        /// The rule's index.
        rule: usize,
    },
    /// The default is allow: any program type no rule lists loads unchecked by rules.
    DefaultAllow,
}

impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lint::EmptyProgramTypes { rule } => {
                write!(f, "rule {rule} lists no program type and never matches")
            }
            Lint::UnreachableRule { rule } => write!(
                f,
                "rule {rule} is unreachable: earlier rules match all its program types"
            ),
            Lint::EmptySignerSet { rule } => {
                write!(
                    f,
                    "rule {rule} allows with an empty signer set: it admits no signed program"
                )
            }
            Lint::UnsignedAllowed { rule } => {
                write!(f, "rule {rule} admits unsigned programs")
            }
            Lint::DefaultAllow => f.write_str("the default is allow"),
        }
    }
}

/// Iterator over the [`Lint`]s of a [`LoadPolicy`].
#[derive(Debug, Clone)]
pub struct Lints<'p, 'a> {
    policy: &'p LoadPolicy<'a>,
    rule: usize,
    check: u8,
    default_done: bool,
}

impl Iterator for Lints<'_, '_> {
    type Item = Lint;

    fn next(&mut self) -> Option<Lint> {
        const CHECKS: u8 = 4;
        let rules = self.policy.rules;
        while let Some(r) = rules.get(self.rule) {
            let i = self.rule;
            let check = self.check;
            self.check += 1;
            if self.check == CHECKS {
                self.check = 0;
                self.rule += 1;
            }
            let allow = r.action == Action::Allow;
            let found = match check {
                0 => r
                    .program_types
                    .is_empty()
                    .then_some(Lint::EmptyProgramTypes { rule: i }),
                1 => (!r.program_types.is_empty()
                    && r.program_types
                        .iter()
                        .all(|t| rules[..i].iter().any(|p| p.program_types.contains(t))))
                .then_some(Lint::UnreachableRule { rule: i }),
                2 => (allow && r.signers.is_empty()).then_some(Lint::EmptySignerSet { rule: i }),
                _ => (allow && !r.require_signature).then_some(Lint::UnsignedAllowed { rule: i }),
            };
            if found.is_some() {
                return found;
            }
        }
        if !self.default_done {
            self.default_done = true;
            if self.policy.default == Action::Allow {
                return Some(Lint::DefaultAllow);
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------
// Memory reports

/// A region hash the verifier expects, pinned in its own policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedRegion<'a> {
    /// The region id the report must use.
    pub id: &'a str,
    /// SHA3-256 the region's bytes must have.
    pub sha3_256: [u8; 32],
}

/// How a verifier judges [`MemoryReport`]s.
#[derive(Debug, Clone, Copy)]
pub struct MemoryPolicy<'a> {
    /// Signers whose reports are admitted (the attesters' keys). Empty admits nobody.
    pub signers: &'a [SignerId],
    /// The workload the report must be about.
    pub workload: &'a str,
    /// The platform the report must come from.
    pub platform: Platform,
    /// The expected hash of every region; each must be claimed, and nothing else may be.
    pub pinned: &'a [PinnedRegion<'a>],
    /// Longest validity (`expires_at - issued_at`, seconds) a report may claim.
    pub max_validity: u64,
}

impl MemoryPolicy<'_> {
    /// Decides on a verified report answering `challenge`, at time `now` (seconds since
    /// the Unix epoch). Checks, in order: signer, nonce (constant-time), `issued_at ≤
    /// now < expires_at`, validity length, workload, platform, then every claimed region
    /// against the pinned hashes (constant-time) and every pin for a claim.
    pub fn check(
        &self,
        report: &Verified<MemoryReport<'_>>,
        challenge: &[u8; 32],
        now: u64,
    ) -> Decision {
        let r = report.body();
        if !signer_in(self.signers, &report.signer()) {
            return Decision::Deny(DenyReason::SignerNotAllowed);
        }
        if !ct_eq(&r.nonce, challenge) {
            return Decision::Deny(DenyReason::NonceMismatch);
        }
        if now < r.issued_at {
            return Decision::Deny(DenyReason::NotYetValid);
        }
        if now >= r.expires_at {
            return Decision::Deny(DenyReason::Expired);
        }
        if r.expires_at.saturating_sub(r.issued_at) > self.max_validity {
            return Decision::Deny(DenyReason::ValidityTooLong);
        }
        if r.workload != self.workload {
            return Decision::Deny(DenyReason::WorkloadMismatch);
        }
        if r.platform != self.platform {
            return Decision::Deny(DenyReason::PlatformMismatch);
        }
        if self.pinned.is_empty() {
            return Decision::Deny(DenyReason::NothingPinned);
        }
        for (i, claim) in r.regions.iter().enumerate() {
            let Some(pin) = self.pinned.iter().find(|p| p.id == claim.id) else {
                return Decision::Deny(DenyReason::UnpinnedRegion { region: i });
            };
            if !ct_eq(&pin.sha3_256, &claim.sha3_256) {
                return Decision::Deny(DenyReason::Drift { region: i });
            }
        }
        for (j, pin) in self.pinned.iter().enumerate() {
            if !r.regions.iter().any(|c| c.id == pin.id) {
                return Decision::Deny(DenyReason::MissingRegion { pinned: j });
            }
        }
        Decision::Allow
    }
}
