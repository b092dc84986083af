//! Policy files written by people and read by `pqcc policy check`, `pqcc verify
//! --policy` and `pqcc broker serve|check`: the strict parsers reject what they do not
//! understand with an error and never panic. Files a broker policy names are looked up
//! under a directory that does not exist, so the target reads nothing from disk.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pqcc_tools::{broker::policy::Policy, statements::PolicyFile};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = PolicyFile::parse(text);
    let _ = Policy::parse(text, Path::new("/nonexistent/pqcc-fuzz"));
});
