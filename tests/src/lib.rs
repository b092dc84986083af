//! Whole-system tests for pqcc. The test files under `tests/` run the real
//! components; this library holds helpers they share.

use std::path::PathBuf;

/// The shared outside test data, `../shared/data` seen from the repository root.
pub fn shared_data() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    root.join("../shared/data")
}
