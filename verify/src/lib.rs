//! `pqcc-verify`: offline verifiers for the evidence a pqcc guest presents.
//!
//! - [`tee`]: Intel TDX quotes and AMD SEV-SNP attestation reports, and the
//!   measurements a direct kernel boot is expected to produce.
//! - [`nvidia`]: NVIDIA H100/H200 GPU evidence (SPDM measurements, device
//!   certificate chain) against signed reference values (RIMs).
//!
//! Nothing here touches the network: time, trust anchors and revocation data are
//! arguments. Used by the broker (`pqcc broker serve`), by `pqcc evidence verify` /
//! `pqcc gpu verify`, and by `pqcc-init`.

pub mod nvidia;
pub mod tee;
