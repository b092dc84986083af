//! AES-256-GCM on AWS-LC for the channel: [`AwsLcAesGcm`] lives in `pqcc-sealed`
//! (shared by the CLI, the broker and workloads) and is re-exported here.

pub use pqcc_sealed::aead::AwsLcAesGcm;
