//! Signed statements: golden envelopes, strict decoding, and one test per weakness of
//! the Python libraries pqcc replaces (pqc-gpu-driver, pqc-hypervisor-attestation,
//! pqc-ebpf-attestation) that concerns signing and verification. Policy weaknesses are
//! in `tests/policy.rs`.
#![allow(clippy::cast_possible_truncation)] // PRNG output sliced into bytes and indices

use pqcc_core::{
    Error,
    hash::sha3_256,
    secret::Secret,
    sign::{SIG_LEN, SignerId, SigningKey, VerifyingKey},
    statement::{
        self, AnyStatement, BPF_PROGRAM_MAX_LEN, BpfProgType, BpfProgram, DRIVER_MODULE_MAX_LEN,
        DriverModule, Envelope, Kind, MAX_ATTACH_POINT_LEN, MAX_AUTHOR_LEN, MAX_NAME_LEN,
        MAX_REGION_ID_LEN, MAX_REGIONS, MAX_REVISION_LEN, MAX_SALT_LEN, MAX_VERSION_LEN,
        MAX_WORKLOAD_ID_LEN, MEMORY_REPORT_MAX_LEN, MODEL_MANIFEST_MAX_LEN, MemoryReport,
        ModelManifest, Protection, RegionClaim, SIGNED_MAX_LEN, Statement, Verified, VerityHash,
    },
    wire::{Bytes, Platform},
};

const T0: u64 = 1_700_000_000;

fn key(n: u8) -> SigningKey {
    SigningKey::from_seed(&Secret::new([n; 32]))
}

fn vk(k: &SigningKey) -> VerifyingKey {
    VerifyingKey::from_bytes(k.public_key()).unwrap()
}

/// Deterministically signed envelope, written into a buffer pre-filled with 0xa5.
fn signed<'a, T: Statement<'a>>(body: &T, k: &SigningKey, at: u64) -> Vec<u8> {
    let mut buf = vec![0xa5u8; SIGNED_MAX_LEN + 64];
    let n = statement::sign_with_rnd(body, k, at, &[0; 32], &mut buf).unwrap();
    assert!(buf[n..].iter().all(|&b| b == 0xa5), "wrote past its length");
    assert!(n <= T::KIND.max_len());
    buf.truncate(n);
    buf
}

fn driver() -> DriverModule<'static> {
    DriverModule {
        name: "nvidia",
        version: "550.54.15",
        sha3_256: [0x11; 32],
        size: 12345,
    }
}

fn bpf() -> BpfProgram<'static> {
    BpfProgram {
        name: "trace_open",
        prog_type: BpfProgType::Kprobe,
        attach_point: "do_sys_open",
        author: "ops",
        sha3_256: [0x22; 32],
        size: 300,
    }
}

fn report() -> MemoryReport<'static> {
    let mut regions = heapless::Vec::new();
    regions
        .push(RegionClaim {
            id: "text",
            address: 0x40_0000,
            size: 4096,
            protection: Protection::READ.union(Protection::EXEC),
            sha3_256: [0x33; 32],
        })
        .unwrap();
    MemoryReport {
        workload: "llm",
        platform: Platform::Tdx,
        issued_at: T0,
        expires_at: T0 + 300,
        nonce: [0x44; 32],
        regions,
    }
}

fn manifest() -> ModelManifest<'static> {
    ModelManifest {
        name: "llama",
        revision: "r1",
        root_hash: Bytes(&[0x55; 32]),
        salt: Bytes(&[0x66; 4]),
        data_size: 8192,
        hash_algorithm: VerityHash::Sha256,
        data_block_size: 4096,
        hash_block_size: 4096,
    }
}

fn enc_body<'a, T: Statement<'a>>(b: &T) -> Vec<u8> {
    let mut buf = vec![0xa5u8; MEMORY_REPORT_MAX_LEN + 16];
    let n = b.encode(&mut buf).unwrap();
    assert!(buf[n..].iter().all(|&x| x == 0xa5));
    buf.truncate(n);
    buf
}

/// Re-encodes `env` with one field changed by `f`, keeping the old signature.
fn tamper<'a>(bytes: &'a [u8], f: impl FnOnce(&mut Envelope<'a>)) -> Vec<u8> {
    let mut env = Envelope::decode(bytes).unwrap();
    f(&mut env);
    let mut out = vec![0u8; SIGNED_MAX_LEN];
    let n = env.encode(&mut out).unwrap();
    out.truncate(n);
    out
}

/// Re-signs `env` (everything before the signature) with `k` under `env.kind`'s context.
fn resign(env: &Envelope<'_>, k: &SigningKey) -> Vec<u8> {
    let placeholder = [0u8; SIG_LEN];
    let e = Envelope {
        signature: &placeholder,
        ..*env
    };
    let mut out = vec![0u8; SIGNED_MAX_LEN];
    let n = e.encode(&mut out).unwrap();
    out.truncate(n);
    let signed_len = n - 2 - SIG_LEN;
    let sig = k
        .sign_with_rnd(env.kind.context(), &out[..signed_len], &[0; 32])
        .unwrap();
    out[signed_len + 2..].copy_from_slice(&sig);
    out
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut o = Vec::new();
    while v >= 0x80 {
        o.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    o.push(v as u8);
    o
}

// ---------------------------------------------------------------------------------
// Golden bytes

#[test]
fn golden_driver_module_envelope() {
    let k = key(1);
    let env = signed(&driver(), &k, T0);
    let mut body = vec![
        0x06, b'n', b'v', b'i', b'd', b'i', b'a', // name "nvidia"
        0x09, b'5', b'5', b'0', b'.', b'5', b'4', b'.', b'1', b'5', // version "550.54.15"
    ];
    body.extend([0x11; 32]); // sha3_256, 32 raw bytes
    body.extend([0xb9, 0x60]); // size 12345
    assert_eq!(enc_body(&driver()), body);

    let mut expect = vec![
        0x01, // version 1
        0x00, // kind 0 = driver-module
        0x00, // algorithm 0 = ML-DSA-65
    ];
    expect.extend(k.signer_id().0); // signer id = SHA3-256(public key), 32 raw bytes
    expect.extend([0x80, 0xe2, 0xcf, 0xaa, 0x06]); // signed_at 1_700_000_000
    expect.push(body.len() as u8); // body length 51
    expect.extend(&body); // body
    expect.extend([0xed, 0x19]); // signature length 3309
    assert_eq!(env[..expect.len()], expect[..]);
    assert_eq!(env.len(), expect.len() + SIG_LEN);
    // The signature is ML-DSA-65 over every byte before it, context pqcc/v1/driver-module,
    // checkable by any FIPS 204 implementation.
    vk(&k)
        .verify(
            b"pqcc/v1/driver-module",
            &env[..expect.len() - 2],
            &env[expect.len()..],
        )
        .unwrap();
    // The whole envelope, signature included (deterministic signing, rnd = 0).
    assert_eq!(
        hex::encode(k.signer_id().0),
        "307f4559431e680933fc1c62503f050140e5740068248d7374461e0311a2728e",
        "signer id of the seed-[1; 32] key"
    );
    assert_eq!(
        hex::encode(sha3_256(&[&env])),
        "d4afff66b5256a9b9821ee0ecc2da8f84547d33d04ffb6461b485d2b30dad722"
    );

    let v: Verified<DriverModule<'_>> = statement::verify(&env, &[vk(&k)]).unwrap();
    assert_eq!(*v.body(), driver());
    assert_eq!(v.signer(), k.signer_id());
    assert_eq!(v.signed_at(), T0);
}

#[test]
fn golden_bpf_program_body() {
    let mut expect = vec![
        0x0a, b't', b'r', b'a', b'c', b'e', b'_', b'o', b'p', b'e', b'n', // name
        0x00, // prog_type 0 = kprobe
        0x0b, b'd', b'o', b'_', b's', b'y', b's', b'_', b'o', b'p', b'e',
        b'n', // attach point
        0x03, b'o', b'p', b's', // author "ops"
    ];
    expect.extend([0x22; 32]); // sha3_256
    expect.extend([0xac, 0x02]); // size 300
    assert_eq!(enc_body(&bpf()), expect);
    assert_eq!(BpfProgram::decode(&expect).unwrap(), bpf());
    let k = key(2);
    let env = signed(&bpf(), &k, T0);
    assert_eq!(env[..3], [0x01, 0x01, 0x00]); // version 1, kind 1 = bpf-program, ML-DSA-65
    assert_eq!(
        hex::encode(sha3_256(&[&env])),
        "c44356a2abe8415a424b96eb0cddbed7a8c6674578fb9dfb3068e9cd916b55f9"
    );
}

#[test]
fn golden_memory_report_body() {
    let mut expect = vec![
        0x03, b'l', b'l', b'm', // workload "llm"
        0x02, // platform 2 = tdx
        0x80, 0xe2, 0xcf, 0xaa, 0x06, // issued_at 1_700_000_000
        0xac, 0xe4, 0xcf, 0xaa, 0x06, // expires_at 1_700_000_300
    ];
    expect.extend([0x44; 32]); // nonce
    expect.push(0x01); // one region
    expect.extend([0x04, b't', b'e', b'x', b't']); // region.id "text"
    expect.extend([0x80, 0x80, 0x80, 0x02]); // region.address 0x400000
    expect.extend([0x80, 0x20]); // region.size 4096
    expect.push(0x05); // region.protection r-x (1 | 4)
    expect.extend([0x33; 32]); // region.sha3_256
    assert_eq!(enc_body(&report()), expect);
    assert_eq!(MemoryReport::decode(&expect).unwrap(), report());
}

#[test]
fn golden_model_manifest_body() {
    let mut expect = vec![
        0x05, b'l', b'l', b'a', b'm', b'a', // name "llama"
        0x02, b'r', b'1', // revision "r1"
        0x20, // root_hash length 32
    ];
    expect.extend([0x55; 32]); // root_hash
    expect.extend([0x04, 0x66, 0x66, 0x66, 0x66]); // salt, 4 bytes
    expect.extend([0x80, 0x40]); // data_size 8192
    expect.push(0x00); // hash_algorithm 0 = sha256
    expect.extend([0x80, 0x20]); // data_block_size 4096
    expect.extend([0x80, 0x20]); // hash_block_size 4096
    assert_eq!(enc_body(&manifest()), expect);
    assert_eq!(ModelManifest::decode(&expect).unwrap(), manifest());
}

#[test]
fn golden_envelope_digests_for_every_kind() {
    // Deterministic signing (rnd = 0) with the seed-[1; 32] key at T0: SHA3-256 of each
    // whole envelope. Any change to the envelope or a body encoding shows here.
    let k = key(1);
    let digest = |env: Vec<u8>| hex::encode(sha3_256(&[&env]));
    assert_eq!(
        digest(signed(&driver(), &k, T0)),
        "d4afff66b5256a9b9821ee0ecc2da8f84547d33d04ffb6461b485d2b30dad722"
    );
    assert_eq!(
        digest(signed(&bpf(), &k, T0)),
        "cedc85a90ad2b300d433268a69b618d3a78995208027ea8a7137e74da40c7df3"
    );
    assert_eq!(
        digest(signed(&report(), &k, T0)),
        "8be9f922c74519e1dc9819446662279b966765d122e06596fea137da849eec25"
    );
    assert_eq!(
        digest(signed(&manifest(), &k, T0)),
        "00418f0a9b2a9e58ce635eb3fce169697a5da7d8d4dbbc2fec4a017141df92ad"
    );
    assert_eq!(
        manifest().to_string(),
        format!("llama@r1:{}", "55".repeat(32))
    );
}

#[test]
fn frozen_orders_names_and_contexts() {
    for (i, k) in Kind::ALL.into_iter().enumerate() {
        let ctx = format!("pqcc/v1/{}", k.name());
        assert_eq!(k.context(), ctx.as_bytes());
        assert_eq!(Kind::from_name(k.name()), Some(k));
        let mut buf = [0u8; 4];
        assert_eq!(postcard::to_slice(&k, &mut buf).unwrap(), [i as u8]);
    }
    let names = [
        "kprobe",
        "kretprobe",
        "tracepoint",
        "xdp",
        "socket_filter",
        "cgroup_skb",
        "lsm",
        "tracing",
        "perf_event",
        "sched_cls",
        "syscall",
        "user",
        "unknown",
    ];
    assert_eq!(BpfProgType::ALL.len(), 13);
    for (i, (t, name)) in BpfProgType::ALL.into_iter().zip(names).enumerate() {
        assert_eq!(t.name(), name);
        assert_eq!(BpfProgType::from_name(name), Some(t));
        let mut buf = [0u8; 4];
        assert_eq!(postcard::to_slice(&t, &mut buf).unwrap(), [i as u8]);
    }
}

#[test]
fn max_len_constants_are_pinned_and_tight() {
    assert_eq!(DRIVER_MODULE_MAX_LEN, 237);
    assert_eq!(BPF_PROGRAM_MAX_LEN, 561);
    assert_eq!(MEMORY_REPORT_MAX_LEN, 3928);
    assert_eq!(MODEL_MANIFEST_MAX_LEN, 535);
    assert_eq!(SIGNED_MAX_LEN, 7286);
    assert_eq!(Kind::DriverModule.max_len(), 3595);
    assert_eq!(Kind::BpfProgram.max_len(), 3919);
    assert_eq!(Kind::MemoryReport.max_len(), SIGNED_MAX_LEN);
    assert_eq!(Kind::ModelManifest.max_len(), 3893);

    let name = "n".repeat(MAX_NAME_LEN);
    let d = DriverModule {
        name: &name,
        version: &"v".repeat(MAX_VERSION_LEN),
        sha3_256: [0xff; 32],
        size: u64::MAX,
    };
    assert_eq!(enc_body(&d).len(), DRIVER_MODULE_MAX_LEN);
    let b = BpfProgram {
        name: &name,
        prog_type: BpfProgType::Unknown,
        attach_point: &"a".repeat(MAX_ATTACH_POINT_LEN),
        author: &"w".repeat(MAX_AUTHOR_LEN),
        sha3_256: [0xff; 32],
        size: u64::MAX,
    };
    assert_eq!(enc_body(&b).len(), BPF_PROGRAM_MAX_LEN);
    let ids: Vec<String> = (0..MAX_REGIONS)
        .map(|i| format!("{i:0>width$}", width = MAX_REGION_ID_LEN))
        .collect();
    let mut regions = heapless::Vec::new();
    for id in &ids {
        regions
            .push(RegionClaim {
                id,
                address: 1 << 63,
                size: (1 << 63) - 1,
                protection: Protection::READ,
                sha3_256: [0xff; 32],
            })
            .unwrap();
    }
    let r = MemoryReport {
        workload: &"w".repeat(MAX_WORKLOAD_ID_LEN),
        platform: Platform::Tdx,
        issued_at: u64::MAX - 1,
        expires_at: u64::MAX,
        nonce: [0xff; 32],
        regions,
    };
    assert_eq!(enc_body(&r).len(), MEMORY_REPORT_MAX_LEN);
    let root = [0u8; 32];
    let salt = [0u8; MAX_SALT_LEN];
    let m = ModelManifest {
        name: &name,
        revision: &"r".repeat(MAX_REVISION_LEN),
        root_hash: Bytes(&root),
        salt: Bytes(&salt),
        data_size: u64::MAX - (u64::MAX % 65536),
        hash_algorithm: VerityHash::Sha256,
        data_block_size: 65536,
        hash_block_size: 65536,
    };
    // The root hash bound allows 64-byte digests; SHA-256 uses 32 of them.
    assert_eq!(enc_body(&m).len(), MODEL_MANIFEST_MAX_LEN - 32);
    // A maximal memory report envelope is exactly SIGNED_MAX_LEN with the largest time.
    let k = key(3);
    let env = signed(&r, &k, u64::MAX);
    assert_eq!(env.len(), SIGNED_MAX_LEN);
    statement::verify::<MemoryReport<'_>, _>(&env, &[vk(&k)]).unwrap();
}

#[test]
fn small_buffers_are_refused_not_overrun() {
    let k = key(1);
    let full = signed(&driver(), &k, T0).len();
    for n in [0, 1, 40, 60, full - SIG_LEN, full - 1] {
        let mut buf = vec![0xa5u8; n];
        assert_eq!(
            statement::sign_with_rnd(&driver(), &k, T0, &[0; 32], &mut buf),
            Err(Error::BufferTooSmall),
            "buffer of {n}"
        );
    }
}

// ---------------------------------------------------------------------------------
// One test per weakness

/// pqc-gpu-driver fell back to Ed25519 or stub signatures labelled ML-DSA. pqcc has one
/// algorithm id; any other is refused, as is a signature of another length or a stub.
#[test]
fn only_ml_dsa_65_is_accepted() {
    let k = key(1);
    let trust = [vk(&k)];
    let env = signed(&driver(), &k, T0);
    // Algorithm byte 1 ("Ed25519", say): refused before anything else is looked at.
    let mut other = env.clone();
    other[2] = 1;
    assert_eq!(
        statement::verify::<DriverModule<'_>, _>(&other, &trust).unwrap_err(),
        Error::UnsupportedAlgorithm(1)
    );
    // A 64-byte (Ed25519-sized) signature in an ML-DSA envelope.
    let ed = [0x77u8; 64];
    let short = tamper(&env, |e| e.signature = &ed);
    assert_eq!(
        statement::verify::<DriverModule<'_>, _>(&short, &trust).unwrap_err(),
        Error::InvalidKey
    );
    // A stub signature of the right length.
    let zeros = [0u8; SIG_LEN];
    let stub = tamper(&env, |e| e.signature = &zeros);
    assert_eq!(
        statement::verify::<DriverModule<'_>, _>(&stub, &trust).unwrap_err(),
        Error::BadSignature
    );
    // There is no way to sign other than ML-DSA-65: the only algorithm.
    assert_eq!(
        Envelope::decode(&env).unwrap().algorithm.name(),
        "ML-DSA-65"
    );
}

/// The Python libraries took a signer's DID on its word: a spoofed DID passed the
/// allow-list. In pqcc the id is the hash of the key that must verify, and keys come
/// only from the verifier's trust store.
#[test]
fn spoofed_did_is_refused() {
    let victim = key(1);
    let attacker = key(9);
    let trust = [vk(&victim)];
    // The attacker signs honestly with its own key: unknown signer.
    let own = signed(&driver(), &attacker, T0);
    assert_eq!(
        statement::verify::<DriverModule<'_>, _>(&own, &trust).unwrap_err(),
        Error::UnknownSigner
    );
    // The attacker claims the victim's id and signs with its own key (the signature
    // covers the claimed id): the victim's key does not verify it.
    let env = Envelope::decode(&own).unwrap();
    let spoofed = resign(
        &Envelope {
            signer: victim.signer_id(),
            ..env
        },
        &attacker,
    );
    assert_eq!(
        Envelope::decode(&spoofed).unwrap().signer,
        victim.signer_id()
    );
    assert_eq!(
        statement::verify::<DriverModule<'_>, _>(&spoofed, &trust).unwrap_err(),
        Error::BadSignature
    );
    // A trust store of nothing trusts nothing.
    let none: [VerifyingKey; 0] = [];
    let genuine = signed(&driver(), &victim, T0);
    assert_eq!(
        statement::verify::<DriverModule<'_>, _>(&genuine, &none).unwrap_err(),
        Error::UnknownSigner
    );
    // A DID is only ever the hash of a key: shown as did:pqaid:<hex>, parsed back exactly.
    let did = victim.signer_id().to_string();
    assert!(did.starts_with("did:pqaid:") && did.len() == 10 + 64);
    assert_eq!(SignerId::parse(&did).unwrap(), victim.signer_id());
    assert_eq!(SignerId::of(victim.public_key()), victim.signer_id());
}

/// A trust store that answers with the wrong key for an id is not believed.
#[test]
fn trust_store_must_return_the_key_it_was_asked_for() {
    struct Liar(VerifyingKey);
    impl statement::TrustStore for Liar {
        fn find(&self, _: &SignerId) -> Option<&VerifyingKey> {
            Some(&self.0)
        }
    }
    let attacker = key(9);
    let victim = key(1);
    let own = signed(&driver(), &attacker, T0);
    let env = Envelope::decode(&own).unwrap();
    let spoofed = resign(
        &Envelope {
            signer: victim.signer_id(),
            ..env
        },
        &attacker,
    );
    assert_eq!(
        statement::verify::<DriverModule<'_>, _>(&spoofed, &Liar(vk(&attacker))).unwrap_err(),
        Error::UnknownSigner
    );
}

/// The Python libraries left signer, algorithm and time fields outside the signature.
/// Every header field is covered here.
#[test]
fn signer_and_time_are_signed() {
    let a = key(1);
    let b = key(2);
    let trust = [vk(&a), vk(&b)];
    let env = signed(&driver(), &a, T0);
    let ok = statement::verify::<DriverModule<'_>, _>(&env, &trust).unwrap();
    assert_eq!(ok.signed_at(), T0);
    // Another time, same signature.
    let later = tamper(&env, |e| e.signed_at = T0 + 1);
    assert_eq!(
        statement::verify::<DriverModule<'_>, _>(&later, &trust).unwrap_err(),
        Error::BadSignature
    );
    // Another trusted signer's id, same signature.
    let swapped = tamper(&env, |e| e.signer = b.signer_id());
    assert_eq!(
        statement::verify::<DriverModule<'_>, _>(&swapped, &trust).unwrap_err(),
        Error::BadSignature
    );
    // Another body, same signature.
    let mut d2 = driver();
    d2.size += 1;
    let body2 = enc_body(&d2);
    let other_body = tamper(&env, |e| e.body = &body2);
    assert_eq!(
        statement::verify::<DriverModule<'_>, _>(&other_body, &trust).unwrap_err(),
        Error::BadSignature
    );
}

/// The kind is signed (in the bytes and in the ML-DSA context), and a statement of the
/// wrong kind is a distinct error.
#[test]
fn wrong_kind_is_a_distinct_error() {
    let k = key(1);
    let trust = [vk(&k)];
    let b = signed(&bpf(), &k, T0);
    assert_eq!(
        statement::verify::<DriverModule<'_>, _>(&b, &trust).unwrap_err(),
        Error::WrongKind {
            expected: Kind::DriverModule,
            got: Kind::BpfProgram
        }
    );
    assert_eq!(
        Error::WrongKind {
            expected: Kind::DriverModule,
            got: Kind::BpfProgram
        }
        .to_string(),
        "signed statement of kind bpf-program where driver-module was required"
    );
    // Relabel a driver statement as a model manifest: the signature was made under
    // another context and over another kind byte.
    let d = signed(&driver(), &k, T0);
    let relabelled = tamper(&d, |e| e.kind = Kind::ModelManifest);
    assert_eq!(
        statement::verify_any(&relabelled, &trust).unwrap_err(),
        Error::BadSignature
    );
    // A signature over the same bytes under another context does not verify either.
    let env = Envelope::decode(&d).unwrap();
    let mut forged = d.clone();
    let n = forged.len();
    let sig = k
        .sign_with_rnd(b"pqcc/v1/bpf-program", &d[..n - 2 - SIG_LEN], &[0; 32])
        .unwrap();
    forged[n - SIG_LEN..].copy_from_slice(&sig);
    assert_eq!(env.kind, Kind::DriverModule);
    assert_eq!(
        statement::verify::<DriverModule<'_>, _>(&forged, &trust).unwrap_err(),
        Error::BadSignature
    );
}

/// The Python libraries canonicalised with ad-hoc JSON. pqcc signs exact bytes and
/// accepts only the one canonical encoding.
#[test]
fn non_canonical_envelope_refused() {
    let k = key(1);
    let trust = [vk(&k)];
    let env = signed(&driver(), &k, T0);
    // signed_at starts at offset 35; pad its varint with one 0x80 continuation.
    let sa = varint(T0);
    assert_eq!(env[35..35 + sa.len()], sa[..]);
    let mut padded = env[..35].to_vec();
    let mut p = sa.clone();
    *p.last_mut().unwrap() |= 0x80;
    p.push(0x00);
    padded.extend(p);
    padded.extend(&env[35 + sa.len()..]);
    assert_eq!(Envelope::decode(&padded).unwrap_err(), Error::NonCanonical);
    assert_eq!(
        statement::verify::<DriverModule<'_>, _>(&padded, &trust).unwrap_err(),
        Error::NonCanonical
    );
    // Trailing bytes.
    let mut trailing = env.clone();
    trailing.push(0);
    assert_eq!(
        statement::verify::<DriverModule<'_>, _>(&trailing, &trust).unwrap_err(),
        Error::TrailingBytes
    );
    // A non-canonical body, even correctly signed by a trusted key, is refused.
    let mut body = enc_body(&driver());
    let n = body.len();
    body.truncate(n - 2);
    body.extend([0xb9, 0xe0, 0x00]); // size 12345 padded to three bytes
    let e = Envelope::decode(&env).unwrap();
    let resigned = resign(&Envelope { body: &body, ..e }, &k);
    assert_eq!(
        statement::verify::<DriverModule<'_>, _>(&resigned, &trust).unwrap_err(),
        Error::NonCanonical
    );
    // The same body bytes with a trailing byte: refused too.
    let mut body2 = enc_body(&driver());
    body2.push(0);
    let resigned = resign(&Envelope { body: &body2, ..e }, &k);
    assert_eq!(
        statement::verify::<DriverModule<'_>, _>(&resigned, &trust).unwrap_err(),
        Error::TrailingBytes
    );
}

// ---------------------------------------------------------------------------------
// Robustness

#[test]
fn truncated_envelopes_are_refused() {
    let k = key(1);
    let trust = [vk(&k)];
    let env = signed(&report(), &k, T0);
    assert_eq!(Envelope::decode(&[]).unwrap_err(), Error::Truncated);
    for n in 0..env.len() {
        let e = statement::verify::<MemoryReport<'_>, _>(&env[..n], &trust).unwrap_err();
        assert!(
            matches!(e, Error::Truncated | Error::InvalidKey | Error::Malformed),
            "prefix {n}: {e:?}"
        );
    }
    // Cutting exactly the signature's tail is a wrong-length signature.
    assert_eq!(
        Envelope::decode(&env[..env.len() - 1]).unwrap_err(),
        Error::Truncated
    );
}

#[test]
fn oversized_envelopes_are_refused() {
    let big = vec![1u8; SIGNED_MAX_LEN + 1];
    assert_eq!(Envelope::decode(&big).unwrap_err(), Error::Oversize);
    // A driver envelope carrying a body longer than a driver body can be, while the whole
    // is still under SIGNED_MAX_LEN.
    let k = key(1);
    let env = signed(&driver(), &k, T0);
    let long = vec![0u8; DRIVER_MODULE_MAX_LEN + 1];
    let e = Envelope::decode(&env).unwrap();
    let mut out = vec![0u8; SIGNED_MAX_LEN];
    let w = Envelope {
        kind: Kind::MemoryReport,
        body: &long,
        ..e
    };
    let n = w.encode(&mut out).unwrap();
    out[1] = 0; // relabel as driver-module
    assert_eq!(Envelope::decode(&out[..n]).unwrap_err(), Error::Oversize);
    // Bodies over their bound.
    assert_eq!(DriverModule::decode(&long).unwrap_err(), Error::Oversize);
}

#[test]
fn unknown_version_and_kind_are_refused() {
    let k = key(1);
    let env = signed(&driver(), &k, T0);
    let mut v2 = env.clone();
    v2[0] = 2;
    assert_eq!(Envelope::decode(&v2).unwrap_err(), Error::UnknownVersion(2));
    let mut k9 = env.clone();
    k9[1] = 9;
    assert_eq!(Envelope::decode(&k9).unwrap_err(), Error::Malformed);
}

#[test]
fn bit_flips_never_verify() {
    let k = key(1);
    let trust = [vk(&k)];
    let env = signed(&bpf(), &k, T0);
    for i in 0..env.len() {
        // Every byte of the signed part; every 5th of the signature.
        if i >= env.len() - SIG_LEN && i % 5 != 0 {
            continue;
        }
        let mut m = env.clone();
        m[i] ^= 1 << (i % 8);
        assert!(
            statement::verify::<BpfProgram<'_>, _>(&m, &trust).is_err(),
            "flip at byte {i} verified"
        );
    }
}

#[test]
fn body_bounds_are_enforced_on_both_sides() {
    let k = key(1);
    let mut out = vec![0u8; SIGNED_MAX_LEN];
    let long = "x".repeat(MAX_NAME_LEN + 1);
    let mut d = driver();
    d.name = &long;
    assert_eq!(
        statement::sign_with_rnd(&d, &k, T0, &[0; 32], &mut out),
        Err(Error::Oversize)
    );
    d.name = "";
    assert_eq!(
        statement::sign_with_rnd(&d, &k, T0, &[0; 32], &mut out),
        Err(Error::Malformed)
    );
    // Memory reports: duplicate region ids, bad protection bits, overflowing ranges.
    let mut r = report();
    let first = r.regions[0];
    r.regions.push(first).unwrap();
    assert_eq!(r.encode(&mut out), Err(Error::Malformed));
    let mut r = report();
    r.regions[0].address = u64::MAX;
    assert_eq!(r.encode(&mut out), Err(Error::Malformed));
    let mut bytes = enc_body(&report());
    let prot_at = bytes.len() - 33;
    assert_eq!(bytes[prot_at], 0x05);
    bytes[prot_at] = 0x08;
    assert_eq!(MemoryReport::decode(&bytes).unwrap_err(), Error::Malformed);
    assert_eq!(Protection::from_bits(8), None);
    // Model manifests: root hash length, block sizes, data size alignment.
    let mut m = manifest();
    m.root_hash = Bytes(&[0; 31]);
    assert_eq!(m.encode(&mut out), Err(Error::Malformed));
    let mut m = manifest();
    m.data_block_size = 3000;
    assert_eq!(m.encode(&mut out), Err(Error::Malformed));
    let mut m = manifest();
    m.data_size = 4097;
    assert_eq!(m.encode(&mut out), Err(Error::Malformed));
}

#[test]
fn verify_any_returns_each_kind() {
    let k = key(4);
    let trust = [vk(&k)];
    let cases = [
        (signed(&driver(), &k, T0), Kind::DriverModule),
        (signed(&bpf(), &k, T0), Kind::BpfProgram),
        (signed(&report(), &k, T0), Kind::MemoryReport),
        (signed(&manifest(), &k, T0), Kind::ModelManifest),
    ];
    for (env, kind) in &cases {
        let v = statement::verify_any(env, &trust).unwrap();
        assert_eq!(v.body().kind(), *kind);
        let e = Envelope::decode(env).unwrap();
        assert_eq!(e.body_unverified().unwrap(), *v.body());
    }
    let v = statement::verify_any(&cases[2].0, &trust).unwrap();
    assert_eq!(v.into_body(), AnyStatement::MemoryReport(report()));
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_and_mutated_input_never_panics() {
    let k = key(5);
    let trust = [vk(&k)];
    let mut r = XorShift(0x5eed_0f57_a7e0_0001);
    for _ in 0..20_000 {
        let n = (r.next() % 600) as usize;
        let mut b: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
        if !b.is_empty() && r.next().is_multiple_of(2) {
            b[0] = 1;
        }
        let _ = Envelope::decode(&b);
        for kind in Kind::ALL {
            let _ = AnyStatement::decode(kind, &b);
        }
    }
    // Mutations of genuine bodies: whatever decodes re-encodes to the same bytes.
    let bodies = [
        (Kind::DriverModule, enc_body(&driver())),
        (Kind::BpfProgram, enc_body(&bpf())),
        (Kind::MemoryReport, enc_body(&report())),
        (Kind::ModelManifest, enc_body(&manifest())),
    ];
    let mut out = vec![0u8; MEMORY_REPORT_MAX_LEN];
    for (kind, body) in &bodies {
        for _ in 0..5_000 {
            let mut m = body.clone();
            let i = (r.next() as usize) % m.len();
            match r.next() % 3 {
                0 => m[i] ^= 1 << (r.next() % 8),
                1 => m.truncate(i),
                _ => m.insert(i, r.next() as u8),
            }
            if let Ok(s) = AnyStatement::decode(*kind, &m) {
                let n = match &s {
                    AnyStatement::DriverModule(x) => x.encode(&mut out),
                    AnyStatement::BpfProgram(x) => x.encode(&mut out),
                    AnyStatement::MemoryReport(x) => x.encode(&mut out),
                    AnyStatement::ModelManifest(x) => x.encode(&mut out),
                    _ => unreachable!(),
                }
                .unwrap();
                assert_eq!(out[..n], m[..]);
            }
        }
    }
    // A few mutated whole envelopes through verification.
    let env = signed(&driver(), &k, T0);
    for _ in 0..200 {
        let mut m = env.clone();
        let i = (r.next() as usize) % m.len();
        m[i] = m[i].wrapping_add(1 + (r.next() % 255) as u8);
        assert!(statement::verify_any(&m, &trust).is_err());
    }
}
