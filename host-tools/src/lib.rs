//! pqcc host tools: the library behind the `pqcc` binary.
//!
//! - [`aead`]: [`aead::AwsLcAesGcm`], an AES-256-GCM provider for the pqcc channel on
//!   AWS-LC (std only; `pqcc-core`'s default is the `no_std` RustCrypto one).
//! - [`rng`]: [`rng::OsRng`], the OS random number generator for `rand_core` 0.10.
//! - [`keys`]: key files (`pqcc keygen`, `pqcc id`), format in `docs/keys.md`.
//! - [`audit`]: the hash-chained audit log (`pqcc audit verify`), `docs/audit-log.md`.
//! - [`hashing`]: streaming SHA3-256 of files.
//! - [`image`]: deterministic guest initramfs images (`pqcc image build`), `docs/guest.md`.
//! - [`launch`]: the QEMU command line for a guest from the profiles in `qemu/`, and
//!   running it (`pqcc launch`), `docs/guest.md`.
//! - [`model`]: model archives, reproducible tar + dm-verity (`pqcc model build|verify`),
//!   formats in `docs/model-archives.md`.
//! - [`statements`]: `pqcc sign`, `verify`, `info`, `policy check` (signed statements), `docs/cli.md`.
//! - [`gpu_cli`]: `pqcc gpu verify` and `pqcc gpu fetch-collateral` (NVIDIA GPU
//!   evidence, offline), `docs/gpu-attestation.md`.
//! - [`bench`](mod@bench): `pqcc bench channel` and `pqcc bench handshake`.

pub mod aead;
pub mod audit;
pub mod bench;
pub mod broker;
pub mod evidence_cli;
pub mod gpu_cli;
pub mod hashing;
pub mod image;
pub mod keys;
pub mod launch;
pub mod model;
pub mod rng;
pub mod statements;
pub mod text;
