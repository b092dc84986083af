//! pqcc host tools: the library behind the `pqcc` binary.
//!
//! - [`aead`]: [`aead::AwsLcAesGcm`], an AES-256-GCM provider for the pqcc channel on
//!   AWS-LC (std only; `pqcc-core`'s default is the `no_std` RustCrypto one).
//! - [`rng`]: [`rng::OsRng`], the OS random number generator for `rand_core` 0.10.
//! - [`bench`](mod@bench): `pqcc bench channel` and `pqcc bench handshake`.

pub mod aead;
pub mod bench;
pub mod rng;
