//! `pqcc-init`: the PID 1 of pqcc's guest initramfs.
//!
//! This crate does not boot a guest yet. Until it does, [`run`] refuses to start
//! anything and says so, so a guest built from it powers off instead of running a
//! workload unchecked.

/// What `run` refuses with while guest support is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotBuilt;

impl core::fmt::Display for NotBuilt {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("this pqcc-init build has no guest boot support; refusing to start")
    }
}

impl std::error::Error for NotBuilt {}

/// The guest boot sequence. Always refuses in this build.
pub fn run() -> Result<(), NotBuilt> {
    Err(NotBuilt)
}

#[cfg(test)]
mod tests {
    #[test]
    fn refuses() {
        assert!(super::run().is_err());
    }
}
