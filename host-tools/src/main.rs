//! The `pqcc` command.
fn main() {}
