//! Where the guest's evidence comes from: the [`Platform`] trait.
//!
//! A platform turns the handshake's 64-byte binding value into an evidence blob whose
//! report data is exactly that value. This build implements [`InsecureNone`] (no TEE:
//! the blob is the binding value itself, which proves nothing about the machine and is
//! accepted only by brokers whose policy says `insecure_no_tee`) and [`Tee`] (TDX and
//! SEV-SNP reports, `docs/evidence.md`).

use pqcc_core::wire;

/// A source of evidence for the handshake.
pub trait Platform {
    /// The platform named in the Hello.
    fn kind(&self) -> wire::Platform;
    /// An evidence blob whose report data is `report_data`, nothing else.
    fn evidence(&mut self, report_data: &[u8; 64]) -> Result<Vec<u8>, String>;
}

/// No TEE. Only for configs that say `insecure_no_tee = true`.
#[derive(Debug, Clone, Copy, Default)]
pub struct InsecureNone;

impl Platform for InsecureNone {
    fn kind(&self) -> wire::Platform {
        wire::Platform::InsecureNone
    }

    fn evidence(&mut self, report_data: &[u8; 64]) -> Result<Vec<u8>, String> {
        Ok(report_data.to_vec())
    }
}

/// A real TEE: TDX or SEV-SNP evidence collected through configfs-tsm or the guest
/// device ([`crate::tee::collect`]).
#[derive(Debug, Clone, Copy)]
pub struct Tee(pub crate::tee::TeeKind);

impl Platform for Tee {
    fn kind(&self) -> wire::Platform {
        match self.0 {
            crate::tee::TeeKind::Snp => wire::Platform::SevSnp,
            crate::tee::TeeKind::Tdx => wire::Platform::Tdx,
        }
    }

    fn evidence(&mut self, report_data: &[u8; 64]) -> Result<Vec<u8>, String> {
        crate::tee::collect(self.0, report_data, std::path::Path::new("/"))
    }
}
