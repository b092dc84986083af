//! Policies over verified statements and continuous attestation: one test per weakness
//! of pqc-gpu-driver, pqc-ebpf-attestation and pqc-hypervisor-attestation that concerns
//! a policy decision, plus the rule semantics (first match wins, default, lint).

use pqcc_core::{
    Error,
    attest::{AttestError, Attester, RegionSource, RegionSpec, Schedule},
    hash::Sha3_256Stream,
    policy::{
        Action, Artifact, BpfLoad, Decision, DenyReason, DriverPolicy, Lint, LoadPolicy,
        MemoryPolicy, PinnedRegion, Rule, check_artifact,
    },
    secret::Secret,
    selftest::InsecureTestRng,
    sign::{SignerId, SigningKey, VerifyingKey},
    statement::{
        self, BpfProgType, BpfProgram, DriverModule, Kind, MemoryReport, Protection, RegionClaim,
        SIGNED_MAX_LEN, Statement, Verified,
    },
    wire::Platform,
};

const T0: u64 = 1_700_000_000;

fn key(n: u8) -> SigningKey {
    SigningKey::from_seed(&Secret::new([n; 32]))
}

fn vk(k: &SigningKey) -> VerifyingKey {
    VerifyingKey::from_bytes(k.public_key()).unwrap()
}

fn signed<'a, T: Statement<'a>>(body: &T, k: &SigningKey) -> Vec<u8> {
    let mut rng = InsecureTestRng::new([7; 32]);
    let mut buf = vec![0xa5u8; SIGNED_MAX_LEN];
    let n = statement::sign(body, k, T0, &mut rng, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

const MODULE: &[u8] = b"\x7fELF pretend this is nvidia.ko";
const BYTECODE: &[u8] = b"\x7fELF pretend this is an eBPF object";

fn driver_for(bytes: &[u8]) -> DriverModule<'static> {
    DriverModule {
        name: "nvidia",
        version: "550.54.15",
        sha3_256: Artifact::measure(bytes).sha3_256,
        size: bytes.len() as u64,
    }
}

fn bpf_for(bytes: &[u8], t: BpfProgType) -> BpfProgram<'static> {
    BpfProgram {
        name: "trace_open",
        prog_type: t,
        attach_point: "do_sys_open",
        author: "ops",
        sha3_256: Artifact::measure(bytes).sha3_256,
        size: bytes.len() as u64,
    }
}

// ---------------------------------------------------------------------------------
// Drivers

#[test]
fn driver_without_bytes_is_refused() {
    let k = key(1);
    let env = signed(&driver_for(MODULE), &k);
    let v = statement::verify(&env, &[vk(&k)]).unwrap();
    let ids = [k.signer_id()];
    let p = DriverPolicy {
        signers: &ids,
        max_size: None,
    };
    assert_eq!(p.check(&v, None), Decision::Deny(DenyReason::NoArtifact));
    assert_eq!(
        p.check(&v, Some(&Artifact::measure(MODULE))),
        Decision::Allow
    );
}

#[test]
fn driver_hash_of_actual_bytes_is_checked() {
    let k = key(1);
    let env = signed(&driver_for(MODULE), &k);
    let v = statement::verify(&env, &[vk(&k)]).unwrap();
    let ids = [k.signer_id()];
    let p = DriverPolicy {
        signers: &ids,
        max_size: None,
    };
    let mut evil = MODULE.to_vec();
    evil[5] ^= 1;
    assert_eq!(
        p.check(&v, Some(&Artifact::measure(&evil))),
        Decision::Deny(DenyReason::HashMismatch)
    );
    // Streaming in pieces gives the same answer as one go.
    let mut s = Sha3_256Stream::new();
    for c in MODULE.chunks(3) {
        s.update(c);
    }
    assert_eq!(
        p.check(&v, Some(&Artifact::from_stream(s))),
        Decision::Allow
    );
}

/// An empty allow-list admitted any signer in the Python libraries.
#[test]
fn empty_allow_list_admits_nobody() {
    let k = key(1);
    let env = signed(&driver_for(MODULE), &k);
    let v = statement::verify(&env, &[vk(&k)]).unwrap();
    let actual = Artifact::measure(MODULE);
    let p = DriverPolicy {
        signers: &[],
        max_size: None,
    };
    assert_eq!(
        p.check(&v, Some(&actual)),
        Decision::Deny(DenyReason::SignerNotAllowed)
    );
    // eBPF: an allow rule with no signers admits no signed program.
    let benv = signed(&bpf_for(BYTECODE, BpfProgType::Xdp), &k);
    let bv = statement::verify(&benv, &[vk(&k)]).unwrap();
    let bytecode = Artifact::measure(BYTECODE);
    let rules = [Rule {
        program_types: &BpfProgType::ALL,
        signers: &[],
        require_signature: true,
        max_size: None,
        action: Action::Allow,
    }];
    let lp = LoadPolicy {
        rules: &rules,
        default: Action::Deny,
    };
    let load = BpfLoad {
        prog_type: BpfProgType::Xdp,
        statement: Some(&bv),
        bytecode: Some(&bytecode),
    };
    assert_eq!(
        lp.evaluate(&load),
        Decision::Deny(DenyReason::SignerNotAllowed)
    );
    // An empty rule list with the default deny admits nothing either.
    assert_eq!(
        LoadPolicy::default().evaluate(&load),
        Decision::Deny(DenyReason::NoRuleMatched)
    );
    // Memory reports: no signers, no admission.
    let r = report_from(&k, [0x42; 32], &[("text", MODULE)]);
    let pins = [PinnedRegion {
        id: "text",
        sha3_256: Artifact::measure(MODULE).sha3_256,
    }];
    let mp = memory_policy(&[], &pins);
    assert_eq!(
        mp.check(&r.verified(&k), &[0x42; 32], T0),
        Decision::Deny(DenyReason::SignerNotAllowed)
    );
}

/// The Python libraries applied the size cap to the declared size.
#[test]
fn size_cap_uses_actual_bytes() {
    let k = key(1);
    let ids = [k.signer_id()];
    let big = vec![0x90u8; 10_000];
    // A statement that lies about the size (small) for big bytes: the cap sees 10 000.
    let mut lying = driver_for(&big);
    lying.size = 10;
    let env = signed(&lying, &k);
    let v = statement::verify(&env, &[vk(&k)]).unwrap();
    let p = DriverPolicy {
        signers: &ids,
        max_size: Some(4096),
    };
    assert_eq!(
        p.check(&v, Some(&Artifact::measure(&big))),
        Decision::Deny(DenyReason::TooLarge {
            actual: 10_000,
            max: 4096
        })
    );
    // Without a cap, the declared size still has to be the real one.
    let uncapped = DriverPolicy {
        signers: &ids,
        max_size: None,
    };
    assert_eq!(
        uncapped.check(&v, Some(&Artifact::measure(&big))),
        Decision::Deny(DenyReason::SizeMismatch {
            declared: 10,
            actual: 10_000
        })
    );
    // eBPF: the rule's cap applies to the bytecode's actual length.
    let benv = signed(&bpf_for(&big, BpfProgType::Kprobe), &k);
    let bv = statement::verify(&benv, &[vk(&k)]).unwrap();
    let rules = [Rule {
        program_types: &[BpfProgType::Kprobe],
        signers: &ids,
        require_signature: true,
        max_size: Some(4096),
        action: Action::Allow,
    }];
    let lp = LoadPolicy {
        rules: &rules,
        default: Action::Deny,
    };
    let actual = Artifact::measure(&big);
    assert_eq!(
        lp.evaluate(&BpfLoad {
            prog_type: BpfProgType::Kprobe,
            statement: Some(&bv),
            bytecode: Some(&actual),
        }),
        Decision::Deny(DenyReason::TooLarge {
            actual: 10_000,
            max: 4096
        })
    );
    assert_eq!(
        check_artifact(bv.body(), Some(&actual), Some(10_000)),
        Decision::Allow
    );
}

// ---------------------------------------------------------------------------------
// eBPF

/// pqc-ebpf-attestation reported an envelope whose bytecode was stripped as VALID.
#[test]
fn stripped_bpf_bytecode_is_refused() {
    let k = key(1);
    let ids = [k.signer_id()];
    let env = signed(&bpf_for(BYTECODE, BpfProgType::Kprobe), &k);
    let v = statement::verify(&env, &[vk(&k)]).unwrap();
    // Even the most permissive policy refuses a load without bytes.
    let rules = [Rule {
        program_types: &BpfProgType::ALL,
        signers: &ids,
        require_signature: false,
        max_size: None,
        action: Action::Allow,
    }];
    for lp in [
        LoadPolicy {
            rules: &rules,
            default: Action::Allow,
        },
        LoadPolicy {
            rules: &[],
            default: Action::Allow,
        },
    ] {
        for statement in [Some(&v), None] {
            assert_eq!(
                lp.evaluate(&BpfLoad {
                    prog_type: BpfProgType::Kprobe,
                    statement,
                    bytecode: None,
                }),
                Decision::Deny(DenyReason::NoArtifact)
            );
        }
    }
    assert_eq!(
        check_artifact(v.body(), None, None),
        Decision::Deny(DenyReason::NoArtifact)
    );
    // And the bytes must be the signed ones.
    let other = Artifact::measure(b"\x7fELF something else entirely!!!!!!!");
    assert_eq!(other.len, BYTECODE.len() as u64);
    assert_eq!(
        rules_policy(&rules).evaluate(&BpfLoad {
            prog_type: BpfProgType::Kprobe,
            statement: Some(&v),
            bytecode: Some(&other),
        }),
        Decision::Deny(DenyReason::HashMismatch)
    );
}

fn rules_policy<'a>(rules: &'a [Rule<'a>]) -> LoadPolicy<'a> {
    LoadPolicy {
        rules,
        default: Action::Deny,
    }
}

#[test]
fn first_matching_rule_decides_and_default_is_deny() {
    let a = key(1);
    let b = key(2);
    let a_id = [a.signer_id()];
    let b_id = [b.signer_id()];
    let rules = [
        Rule {
            program_types: &[BpfProgType::Lsm],
            signers: &a_id,
            require_signature: true,
            max_size: None,
            action: Action::Deny,
        },
        Rule {
            program_types: &[BpfProgType::Kprobe, BpfProgType::Lsm],
            signers: &a_id,
            require_signature: true,
            max_size: None,
            action: Action::Allow,
        },
        Rule {
            program_types: &[BpfProgType::Kprobe, BpfProgType::Xdp],
            signers: &b_id,
            require_signature: false,
            max_size: None,
            action: Action::Allow,
        },
    ];
    let lp = rules_policy(&rules);
    let trust = [vk(&a), vk(&b)];
    let bytecode = Artifact::measure(BYTECODE);
    let check = |t: BpfProgType, k: Option<&SigningKey>| {
        let env = k.map(|k| signed(&bpf_for(BYTECODE, t), k));
        let v: Option<Verified<BpfProgram<'_>>> =
            env.as_ref().map(|e| statement::verify(e, &trust).unwrap());
        lp.evaluate(&BpfLoad {
            prog_type: t,
            statement: v.as_ref(),
            bytecode: Some(&bytecode),
        })
    };
    assert_eq!(lp.matching_rule(BpfProgType::Lsm), Some(0));
    assert_eq!(
        check(BpfProgType::Lsm, Some(&a)),
        Decision::Deny(DenyReason::RuleDenied { rule: 0 })
    );
    assert_eq!(check(BpfProgType::Kprobe, Some(&a)), Decision::Allow);
    // Rule 1 decides kprobes: b's signature is not admitted there, even though rule 2
    // would admit it.
    assert_eq!(
        check(BpfProgType::Kprobe, Some(&b)),
        Decision::Deny(DenyReason::SignerNotAllowed)
    );
    assert_eq!(
        check(BpfProgType::Kprobe, None),
        Decision::Deny(DenyReason::Unsigned)
    );
    assert_eq!(check(BpfProgType::Xdp, Some(&b)), Decision::Allow);
    assert_eq!(check(BpfProgType::Xdp, None), Decision::Allow);
    assert_eq!(
        check(BpfProgType::Tracing, Some(&a)),
        Decision::Deny(DenyReason::NoRuleMatched)
    );
    let open = LoadPolicy {
        rules: &rules,
        default: Action::Allow,
    };
    assert_eq!(
        open.evaluate(&BpfLoad {
            prog_type: BpfProgType::Tracing,
            statement: None,
            bytecode: Some(&bytecode),
        }),
        Decision::Allow
    );
}

#[test]
fn signed_program_type_must_match_the_load() {
    let k = key(1);
    let ids = [k.signer_id()];
    let env = signed(&bpf_for(BYTECODE, BpfProgType::Tracepoint), &k);
    let v = statement::verify(&env, &[vk(&k)]).unwrap();
    let rules = [Rule {
        program_types: &BpfProgType::ALL,
        signers: &ids,
        require_signature: true,
        max_size: None,
        action: Action::Allow,
    }];
    let bytecode = Artifact::measure(BYTECODE);
    assert_eq!(
        rules_policy(&rules).evaluate(&BpfLoad {
            prog_type: BpfProgType::Kprobe,
            statement: Some(&v),
            bytecode: Some(&bytecode),
        }),
        Decision::Deny(DenyReason::ProgTypeMismatch {
            signed: BpfProgType::Tracepoint,
            loading: BpfProgType::Kprobe
        })
    );
}

#[test]
fn lint_reports_what_a_reviewer_must_see() {
    let ids = [SignerId([1; 32])];
    let rules = [
        Rule {
            program_types: &[BpfProgType::Kprobe, BpfProgType::Xdp],
            signers: &ids,
            require_signature: true,
            max_size: Some(1 << 20),
            action: Action::Allow,
        },
        Rule {
            program_types: &[],
            signers: &ids,
            require_signature: true,
            max_size: None,
            action: Action::Deny,
        },
        Rule {
            program_types: &[BpfProgType::Xdp],
            signers: &ids,
            require_signature: true,
            max_size: None,
            action: Action::Allow,
        },
        Rule {
            program_types: &[BpfProgType::Lsm],
            signers: &[],
            require_signature: false,
            max_size: None,
            action: Action::Allow,
        },
    ];
    let lp = LoadPolicy {
        rules: &rules,
        default: Action::Allow,
    };
    let lints: Vec<Lint> = lp.lint().collect();
    assert_eq!(
        lints,
        [
            Lint::EmptyProgramTypes { rule: 1 },
            Lint::UnreachableRule { rule: 2 },
            Lint::EmptySignerSet { rule: 3 },
            Lint::UnsignedAllowed { rule: 3 },
            Lint::DefaultAllow,
        ]
    );
    assert_eq!(
        Lint::UnreachableRule { rule: 2 }.to_string(),
        "rule 2 is unreachable: earlier rules match all its program types"
    );
    assert_eq!(rules_policy(&rules[..1]).lint().count(), 0);
    assert_eq!(LoadPolicy::default().lint().count(), 0);
}

// ---------------------------------------------------------------------------------
// Memory reports

struct Report {
    env: Vec<u8>,
}

impl Report {
    fn verified(&self, k: &SigningKey) -> Verified<MemoryReport<'_>> {
        statement::verify(&self.env, &[vk(k)]).unwrap()
    }
}

fn report_with(k: &SigningKey, r: &MemoryReport<'_>) -> Report {
    Report { env: signed(r, k) }
}

fn report_from(k: &SigningKey, nonce: [u8; 32], regions: &[(&'static str, &[u8])]) -> Report {
    let mut claims = heapless::Vec::new();
    for (i, (id, bytes)) in regions.iter().enumerate() {
        claims
            .push(RegionClaim {
                id,
                address: 0x1000 * (i as u64 + 1),
                size: bytes.len() as u64,
                protection: Protection::READ,
                sha3_256: Artifact::measure(bytes).sha3_256,
            })
            .unwrap();
    }
    report_with(
        k,
        &MemoryReport {
            workload: "llm",
            platform: Platform::Tdx,
            issued_at: T0,
            expires_at: T0 + 60,
            nonce,
            regions: claims,
        },
    )
}

fn memory_policy<'a>(signers: &'a [SignerId], pins: &'a [PinnedRegion<'a>]) -> MemoryPolicy<'a> {
    MemoryPolicy {
        signers,
        workload: "llm",
        platform: Platform::Tdx,
        pinned: pins,
        max_validity: 600,
    }
}

fn pin(id: &'static str, bytes: &[u8]) -> PinnedRegion<'static> {
    PinnedRegion {
        id,
        sha3_256: Artifact::measure(bytes).sha3_256,
    }
}

/// pqc-hypervisor-attestation's verifier had no trust anchor.
#[test]
fn memory_report_needs_a_trust_anchor() {
    let attester = key(3);
    let stranger = key(4);
    let r = report_from(&stranger, [1; 32], &[("text", MODULE)]);
    assert_eq!(
        statement::verify::<MemoryReport<'_>, _>(&r.env, &[vk(&attester)]).unwrap_err(),
        Error::UnknownSigner
    );
    let none: [VerifyingKey; 0] = [];
    assert_eq!(
        statement::verify::<MemoryReport<'_>, _>(&r.env, &none).unwrap_err(),
        Error::UnknownSigner
    );
    // A key trusted for something else (here: in the store) but not a report signer.
    let ids = [attester.signer_id()];
    let pins = [pin("text", MODULE)];
    assert_eq!(
        memory_policy(&ids, &pins).check(&r.verified(&stranger), &[1; 32], T0),
        Decision::Deny(DenyReason::SignerNotAllowed)
    );
}

/// pqc-hypervisor-attestation never checked the nonce.
#[test]
fn nonce_must_match_challenge() {
    let k = key(3);
    let ids = [k.signer_id()];
    let pins = [pin("text", MODULE)];
    let p = memory_policy(&ids, &pins);
    let r = report_from(&k, [0xaa; 32], &[("text", MODULE)]);
    assert_eq!(p.check(&r.verified(&k), &[0xaa; 32], T0), Decision::Allow);
    let mut other = [0xaa; 32];
    other[31] ^= 1;
    assert_eq!(
        p.check(&r.verified(&k), &other, T0),
        Decision::Deny(DenyReason::NonceMismatch)
    );
}

/// pqc-hypervisor-attestation treated a missing expiry as "never expires".
#[test]
fn missing_expiry_is_refused() {
    let k = key(3);
    let ids = [k.signer_id()];
    let pins = [pin("text", MODULE)];
    let p = memory_policy(&ids, &pins);
    let base = report_from(&k, [1; 32], &[("text", MODULE)]);
    let v = base.verified(&k);
    // The field is not optional: a report without an expiry after issue cannot be made
    // or decoded (expires_at = 0 or = issued_at is "missing").
    let mut r = v.body().clone();
    let mut buf = vec![0u8; SIGNED_MAX_LEN];
    for e in [0, T0] {
        r.expires_at = e;
        assert_eq!(r.encode(&mut buf), Err(Error::Malformed));
    }
    // A report body that stops before expires_at does not decode.
    let mut body = vec![0u8; 4096];
    let n = v.body().encode(&mut body).unwrap();
    let cut = 1 + 3 + 1 + 5; // workload "llm", platform, issued_at
    assert_eq!(
        MemoryReport::decode(&body[..cut]).unwrap_err(),
        Error::Truncated
    );
    assert!(MemoryReport::decode(&body[..n]).is_ok());
    // Expiry is enforced: valid in [issued_at, expires_at).
    assert_eq!(p.check(&v, &[1; 32], T0 + 59), Decision::Allow);
    assert_eq!(
        p.check(&v, &[1; 32], T0 + 60),
        Decision::Deny(DenyReason::Expired)
    );
    assert_eq!(
        p.check(&v, &[1; 32], T0 - 1),
        Decision::Deny(DenyReason::NotYetValid)
    );
    // "Never expires" (u64::MAX) is longer than any policy allows.
    let mut forever = v.body().clone();
    forever.expires_at = u64::MAX;
    let fr = report_with(&k, &forever);
    assert_eq!(
        p.check(&fr.verified(&k), &[1; 32], T0),
        Decision::Deny(DenyReason::ValidityTooLong)
    );
}

/// pqc-hypervisor-attestation let the attester choose its own expected hashes.
/// A report has no expected-hash field; only the verifier's pins count.
#[test]
fn attester_cannot_choose_expected_hashes() {
    let k = key(3);
    let ids = [k.signer_id()];
    let pins = [pin("text", MODULE), pin("rodata", b"constants")];
    let p = memory_policy(&ids, &pins);
    // What the attester saw for rodata differs from the pin: drift names region 1.
    let r = report_from(
        &k,
        [1; 32],
        &[("text", MODULE), ("rodata", b"constants, patched")],
    );
    assert_eq!(
        p.check(&r.verified(&k), &[1; 32], T0),
        Decision::Deny(DenyReason::Drift { region: 1 })
    );
    // A region the verifier does not pin cannot vouch for itself.
    let r = report_from(
        &k,
        [1; 32],
        &[("text", MODULE), ("rodata", b"constants"), ("heap", b"x")],
    );
    assert_eq!(
        p.check(&r.verified(&k), &[1; 32], T0),
        Decision::Deny(DenyReason::UnpinnedRegion { region: 2 })
    );
    // Leaving a pinned region out does not help.
    let r = report_from(&k, [1; 32], &[("text", MODULE)]);
    assert_eq!(
        p.check(&r.verified(&k), &[1; 32], T0),
        Decision::Deny(DenyReason::MissingRegion { pinned: 1 })
    );
    // Nothing pinned, nothing shown.
    assert_eq!(
        memory_policy(&ids, &[]).check(&r.verified(&k), &[1; 32], T0),
        Decision::Deny(DenyReason::NothingPinned)
    );
    let ok = report_from(&k, [1; 32], &[("rodata", b"constants"), ("text", MODULE)]);
    assert_eq!(p.check(&ok.verified(&k), &[1; 32], T0), Decision::Allow);
}

#[test]
fn workload_and_platform_must_match() {
    let k = key(3);
    let ids = [k.signer_id()];
    let pins = [pin("text", MODULE)];
    let r = report_from(&k, [1; 32], &[("text", MODULE)]);
    let mut p = memory_policy(&ids, &pins);
    p.workload = "other";
    assert_eq!(
        p.check(&r.verified(&k), &[1; 32], T0),
        Decision::Deny(DenyReason::WorkloadMismatch)
    );
    let mut p = memory_policy(&ids, &pins);
    p.platform = Platform::SevSnp;
    assert_eq!(
        p.check(&r.verified(&k), &[1; 32], T0),
        Decision::Deny(DenyReason::PlatformMismatch)
    );
}

// ---------------------------------------------------------------------------------
// Continuous attestation

/// Regions backed by byte slices; `chunk` limits each read to exercise partial reads.
struct MemSource<'m> {
    regions: Vec<&'m [u8]>,
    chunk: usize,
    fail: Option<usize>,
}

impl RegionSource for MemSource<'_> {
    type Error = &'static str;
    fn read(
        &mut self,
        index: usize,
        _region: &RegionSpec<'_>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, &'static str> {
        if self.fail == Some(index) {
            return Err("EIO");
        }
        let data = self.regions[index];
        let off = usize::try_from(offset).unwrap().min(data.len());
        let n = buf.len().min(self.chunk).min(data.len() - off);
        buf[..n].copy_from_slice(&data[off..off + n]);
        Ok(n)
    }
}

#[test]
fn attester_reports_verify_and_detect_drift() {
    let k = key(5);
    let ids = [k.signer_id()];
    let text = vec![0xc3u8; 10_000];
    let mut data = vec![0x00u8; 5000];
    let specs = [
        RegionSpec {
            id: "text",
            address: 0x40_0000,
            size: text.len() as u64,
            protection: Protection::READ.union(Protection::EXEC),
        },
        RegionSpec {
            id: "data",
            address: 0x60_0000,
            size: data.len() as u64,
            protection: Protection::READ.union(Protection::WRITE),
        },
    ];
    let schedule = Schedule {
        interval: 30,
        validity: 60,
    };
    let mut att = Attester::new(&k, "llm", Platform::Tdx, &specs, schedule, T0).unwrap();
    assert!(att.is_due(T0));
    let mut rng = InsecureTestRng::new([8; 32]);
    let mut out = vec![0xa5u8; Kind::MemoryReport.max_len()];
    let mut src = MemSource {
        regions: vec![&text, &data],
        chunk: 777,
        fail: None,
    };
    let a = att
        .attest(&mut src, T0, &[9; 32], &mut rng, &mut out)
        .unwrap();
    assert_eq!((a.changed, a.expires_at), (0, T0 + 60));
    assert_eq!(att.poll_at(), T0 + 30);
    assert!(!att.is_due(T0 + 29) && att.is_due(T0 + 30));

    let pins = [pin("text", &text), pin("data", &data)];
    let policy = memory_policy(&ids, &pins);
    {
        let v: Verified<MemoryReport<'_>> = statement::verify(&out[..a.len], &[vk(&k)]).unwrap();
        assert_eq!(v.body().regions[0].protection, specs[0].protection);
        assert_eq!(policy.check(&v, &[9; 32], T0 + 10), Decision::Allow);
    }

    // Someone writes into the data region: the next report says so, the verifier denies.
    data[4999] = 1;
    let mut src = MemSource {
        regions: vec![&text, &data],
        chunk: 4096,
        fail: None,
    };
    let b = att
        .attest(&mut src, T0 + 30, &[10; 32], &mut rng, &mut out)
        .unwrap();
    assert_eq!(b.changed, 0b10);
    let v: Verified<MemoryReport<'_>> = statement::verify(&out[..b.len], &[vk(&k)]).unwrap();
    assert_eq!(
        policy.check(&v, &[10; 32], T0 + 31),
        Decision::Deny(DenyReason::Drift { region: 1 })
    );
}

#[test]
fn attester_refuses_short_regions_and_reports_source_errors() {
    let k = key(5);
    let bytes = [1u8; 100];
    let specs = [RegionSpec {
        id: "r",
        address: 0,
        size: 101,
        protection: Protection::READ,
    }];
    let schedule = Schedule {
        interval: 1,
        validity: 1,
    };
    let mut att = Attester::new(&k, "w", Platform::Tdx, &specs, schedule, T0).unwrap();
    let mut rng = InsecureTestRng::new([8; 32]);
    let mut out = vec![0u8; Kind::MemoryReport.max_len()];
    let mut src = MemSource {
        regions: vec![&bytes],
        chunk: 64,
        fail: None,
    };
    assert_eq!(
        att.attest(&mut src, T0, &[0; 32], &mut rng, &mut out),
        Err(AttestError::RegionLength {
            region: 0,
            read: 100,
            expected: 101
        })
    );
    src.fail = Some(0);
    assert_eq!(
        att.attest(&mut src, T0, &[0; 32], &mut rng, &mut out),
        Err(AttestError::Source {
            region: 0,
            error: "EIO"
        })
    );
    // Nothing was reported, so a report is still due.
    assert!(att.is_due(T0));
    let mut small = [0u8; 100];
    let ok_specs = [RegionSpec {
        size: 100,
        ..specs[0]
    }];
    let mut att = Attester::new(&k, "w", Platform::Tdx, &ok_specs, schedule, T0).unwrap();
    src.fail = None;
    assert_eq!(
        att.attest(&mut src, T0, &[0; 32], &mut rng, &mut small),
        Err(AttestError::Core(Error::BufferTooSmall))
    );
}

#[test]
fn attester_configuration_is_bounded() {
    let k = key(5);
    let s = Schedule {
        interval: 10,
        validity: 10,
    };
    let r = |id: &'static str| RegionSpec {
        id,
        address: 0,
        size: 1,
        protection: Protection::READ,
    };
    assert!(Attester::new(&k, "w", Platform::Tdx, &[r("a"), r("b")], s, T0).is_ok());
    for (workload, regions, sched) in [
        ("", vec![r("a")], s),
        ("w", vec![r("a"), r("a")], s),
        ("w", vec![r("")], s),
        ("w", vec![r("a")], Schedule { interval: 0, ..s }),
        ("w", vec![r("a")], Schedule { validity: 0, ..s }),
        ("w", (0..33).map(|_| r("x")).collect(), s),
        (
            "w",
            vec![RegionSpec {
                address: u64::MAX,
                ..r("a")
            }],
            s,
        ),
    ] {
        assert_eq!(
            Attester::new(&k, workload, Platform::Tdx, &regions, sched, T0).unwrap_err(),
            Error::InvalidArgument
        );
    }
}
