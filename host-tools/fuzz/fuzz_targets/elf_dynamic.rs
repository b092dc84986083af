//! The ELF reader `pqcc image build` runs over packed programs and libraries (program
//! headers, `PT_INTERP`, the dynamic section, its string table) and the loader's search
//! directories it reads from a packed loader: they never panic, and what they return
//! comes from the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pqcc_tools::image::elf;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = elf::dynamic(data) {
        let names = d.needed.iter().chain(&d.runpath).chain(&d.interpreter);
        for n in names {
            assert!(n.len() <= data.len(), "a name longer than the file");
            assert!(!n.contains('\0'), "a name with a NUL");
        }
        assert!(d.runpath.iter().all(|p| !p.is_empty() && !p.contains(':')));
    }
    if let Some(dirs) = elf::loader_search_dirs(data) {
        assert!(dirs.len() >= 2);
        for d in &dirs {
            assert!(d.starts_with('/') && d.contains("lib") && d.len() < 64, "{d}");
            assert!(!d.contains('\0'));
        }
    }
});
