//! The pinned trust anchors, taken from NVIDIA's published roots as shipped in
//! nv-local-gpu-verifier 2.7.3 (`verifier/certs/`): the device identity root that
//! ends every GPU's certificate chain, and the root that signs RIM signing CAs.
//! Their SHA-384 fingerprints are pinned too, so an edited PEM fails closed.

use sha2::{Digest, Sha384};

use super::x509::Cert;

/// "NVIDIA Device Identity CA" (P-384, self-signed), PEM.
pub const DEVICE_ROOT_PEM: &str = include_str!("certs/verifier_device_root.pem");
/// "NVIDIA CoRIM signing Root CA" (P-384, self-signed), PEM.
pub const RIM_ROOT_PEM: &str = include_str!("certs/verifier_RIM_root.pem");

/// SHA-384 of the device root's DER.
pub const DEVICE_ROOT_SHA384: &str = "4cbb092410e5a795067c12a3726e9e4c7cc2971bbeba56593219beb598fb399b0d2f877f383edfc06d40e5abad07cc16";
/// SHA-384 of the RIM root's DER.
pub const RIM_ROOT_SHA384: &str = "68aaabab77af2605c26c37607e7cbc4715bef89218ad3b11cd50349f79e8df716cd29f1a09b9b00da2c2b2fad680d182";

fn pinned(pem: &str, fp: &str) -> Result<Cert, String> {
    let c = Cert::from_pem(pem)?;
    if hex::encode(Sha384::digest(&c.der)) != fp {
        return Err(format!(
            "pinned root {} does not match its fingerprint",
            c.name()
        ));
    }
    Ok(c)
}

/// The pinned NVIDIA device identity root.
pub fn device_root() -> Result<Cert, String> {
    pinned(DEVICE_ROOT_PEM, DEVICE_ROOT_SHA384)
}

/// The pinned NVIDIA RIM signing root.
pub fn rim_root() -> Result<Cert, String> {
    pinned(RIM_ROOT_PEM, RIM_ROOT_SHA384)
}

/// [`device_root`], parsed and checked once per process.
pub fn device_root_ref() -> Result<&'static Cert, String> {
    static ROOT: std::sync::OnceLock<Result<Cert, String>> = std::sync::OnceLock::new();
    ROOT.get_or_init(device_root).as_ref().map_err(Clone::clone)
}

/// [`rim_root`], parsed and checked once per process.
pub fn rim_root_ref() -> Result<&'static Cert, String> {
    static ROOT: std::sync::OnceLock<Result<Cert, String>> = std::sync::OnceLock::new();
    ROOT.get_or_init(rim_root).as_ref().map_err(Clone::clone)
}
