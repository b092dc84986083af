//! # pqcc-core — the protocol core of pqcc
//!
//! `#![no_std]`, no `alloc`, `#![forbid(unsafe_code)]`. This crate is sans-IO: it
//! never touches files, sockets, clocks or devices. Bytes come in as slices and go
//! out into caller-supplied buffers; the current time (`now`, seconds since the Unix
//! epoch) and randomness (a [`rand_core::CryptoRng`]) are always arguments.
//!
//! ## What it provides
//! - [`kem`]: ML-KEM-768 (FIPS 203) key generation, encapsulation, decapsulation.
//! - [`sign`]: ML-DSA-65 (FIPS 204) signing and verification with context strings,
//!   and signer ids (`did:pqaid:<hex>` = SHA3-256 of the public key).
//! - [`aead`]: AES-256-GCM behind a small provider trait ([`aead::Aes256GcmProvider`]),
//!   with RustCrypto's `aes-gcm` as the `no_std` default.
//! - [`wire`]: the protocol v1 messages in postcard, each with a maximum encoded size,
//!   decoded strictly (unknown version, trailing bytes, oversize and non-canonical
//!   encodings are refused).
//! - [`handshake`]: the two-round-trip v1 handshake as initiator (guest) and responder
//!   (broker) state machines, and the SHAKE256 key schedule.
//! - [`channel`]: sealing and opening tensor frames with AES-256-GCM; header bytes as
//!   AAD; nonce = direction prefix ‖ seq; a sliding replay window ([`replay`]); key
//!   expiry by time and by frame count; explicit rekey; tensor chunk reassembly rules.
//! - [`statement`]: signed statements (driver modules, eBPF programs, memory reports,
//!   model manifests) in an ML-DSA-65-signed envelope that covers every field, checked
//!   only against the verifier's own trust store.
//! - [`policy`]: driver allow-list, ordered eBPF load rules with a linter, memory-report
//!   checks (freshness, challenge nonce, drift against verifier-pinned hashes); every
//!   decision is `Allow` or `Deny(reason)`.
//! - [`attest`]: continuous attestation: an attester that hashes memory regions through a
//!   backend trait and signs reports, with caller-supplied time, nonce and randomness.
//! - [`sealed`]: the fixed parts of sealed models (encrypted at rest): the plaintext
//!   preamble, key derivation (key id, model key, content id, file key), the tensor
//!   table and manifest encodings, and sealing / opening frames in the channel's frame
//!   format with the header checked against the table.
//! - [`pair`]: `establish_channel`, running the real handshake between two in-process
//!   peers (what pqc-gpu-driver's helper of the same name pretended to do).
//!
//! ## Resources
//! Nothing allocates. Stack is the budget: the ML-DSA-65 and ML-KEM-768 objects are
//! tens of KiB each, and a full self-test run (key expansion, hedged signing,
//! verification, a whole handshake and channel round trip) peaks at about 630 KiB of
//! stack on x86_64 and 655 KiB on a Cortex-M4 (measured by painting the stack in
//! `core-nostd/proof-nostd` and `core-nostd/cortex-m`). Give threads that run the
//! handshake at least 1 MiB.
//!
//! ## Guarantees and trust
//! - Everything decoded from the peer is untrusted: every decoder is bounded and strict,
//!   and no input can make this crate panic (errors are data, [`Error`]).
//! - Signatures are verified over the exact bytes received, never a re-encoding.
//! - The guest trusts exactly one broker key, given in advance (its measured config).
//!   The broker trusts evidence only after checking it against its own policy; this
//!   crate hands it the bytes and the binding value to check, and does not judge them.
//! - Secrets ([`secret::Secret`], session keys, KEM decapsulation keys, signing keys)
//!   zeroize on drop and print `<redacted>`; tag and hash comparisons are constant-time.
//! - Not covered: side channels of the underlying primitives beyond what the RustCrypto
//!   crates provide, denial of service, and the evidence formats (checked by the
//!   broker's platform verifiers).
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod aead;
pub mod attest;
pub mod bundle;
pub mod channel;
pub mod error;
pub mod handshake;
pub mod hash;
pub mod kem;
pub mod pair;
pub mod policy;
pub mod replay;
pub mod sealed;
pub mod secret;
pub mod selftest;
pub mod sign;
pub mod statement;
pub mod verity;
pub mod wire;

pub use error::Error;
pub use rand_core::CryptoRng;

/// Protocol version carried in every v1 message and frame header.
pub const PROTOCOL_VERSION: u8 = 1;
