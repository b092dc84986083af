//! Policies on arbitrary (validly encoded) statements: a fuzzed memory report or eBPF
//! statement is signed with a trusted key, verified, and judged. Nothing panics; a
//! report is admitted only if it answers the challenge, is fresh and matches every pin;
//! an eBPF load only with bytes that match its statement.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pqcc_core::{
    policy::{Action, Artifact, BpfLoad, Decision, LoadPolicy, MemoryPolicy, PinnedRegion, Rule},
    secret::Secret,
    sign::{SignerId, SigningKey, VerifyingKey},
    statement::{self, BpfProgType, BpfProgram, MemoryReport, SIGNED_MAX_LEN, Statement},
    wire::Platform,
};

fn keys() -> &'static (SigningKey, [VerifyingKey; 1]) {
    static KEYS: OnceLock<(SigningKey, [VerifyingKey; 1])> = OnceLock::new();
    KEYS.get_or_init(|| {
        let k = SigningKey::from_seed(&Secret::new([0x6e; 32]));
        let v = VerifyingKey::from_bytes(k.public_key()).unwrap();
        (k, [v])
    })
}

const NOW: u64 = 1_700_000_000;
const CHALLENGE: [u8; 32] = [0x42; 32];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let (key, trust) = keys();
    let ids = [key.signer_id()];
    let mut env = vec![0u8; SIGNED_MAX_LEN];
    if sel & 1 == 0 {
        let Ok(r) = MemoryReport::decode(body) else {
            return;
        };
        let n = statement::sign_with_rnd(&r, key, NOW, &[0; 32], &mut env).unwrap();
        let v = statement::verify::<MemoryReport<'_>, _>(&env[..n], trust).unwrap();
        let pins = [
            PinnedRegion {
                id: "text",
                sha3_256: [0x11; 32],
            },
            PinnedRegion {
                id: "data",
                sha3_256: [0x22; 32],
            },
        ];
        let policy = MemoryPolicy {
            signers: &ids,
            workload: "llm",
            platform: Platform::Tdx,
            pinned: &pins,
            max_validity: 600,
        };
        if policy.check(&v, &CHALLENGE, NOW).is_allow() {
            let r = v.body();
            assert_eq!(r.nonce, CHALLENGE);
            assert!(r.issued_at <= NOW && NOW < r.expires_at);
            assert_eq!(r.regions.len(), 2);
            for c in &r.regions {
                assert!(
                    pins.iter()
                        .any(|p| p.id == c.id && p.sha3_256 == c.sha3_256)
                );
            }
        }
        let other = [SignerId([0; 32])];
        let strangers = MemoryPolicy {
            signers: &other,
            ..policy
        };
        assert!(!strangers.check(&v, &CHALLENGE, NOW).is_allow());
    } else {
        let Ok(b) = BpfProgram::decode(body) else {
            return;
        };
        let n = statement::sign_with_rnd(&b, key, NOW, &[0; 32], &mut env).unwrap();
        let v = statement::verify::<BpfProgram<'_>, _>(&env[..n], trust).unwrap();
        let rules = [Rule {
            program_types: &BpfProgType::ALL[..usize::from(sel >> 1) % 14],
            signers: &ids,
            require_signature: sel & 0x80 != 0,
            max_size: Some(1 << 20),
            action: Action::Allow,
        }];
        let policy = LoadPolicy {
            rules: &rules,
            default: Action::Deny,
        };
        let _ = policy.lint().count();
        let genuine = Artifact {
            sha3_256: b.sha3_256,
            len: b.size,
        };
        let forged = Artifact {
            sha3_256: [0xee; 32],
            len: b.size,
        };
        for (bytecode, statement) in [
            (None, Some(&v)),
            (Some(&forged), Some(&v)),
            (Some(&genuine), Some(&v)),
            (Some(&genuine), None),
        ] {
            let d = policy.evaluate(&BpfLoad {
                prog_type: b.prog_type,
                statement,
                bytecode,
            });
            if d == Decision::Allow {
                assert!(bytecode.is_some());
                if statement.is_some() {
                    assert_eq!(bytecode, Some(&genuine));
                    assert!(b.size <= 1 << 20);
                }
            }
        }
    }
});
