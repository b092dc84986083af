//! The launch-measurement parsers fed arbitrary bytes: the OVMF footer table, SEV and
//! TDVF metadata (SNP launch digest, MRTD) and a kernel image (QEMU's setup-header
//! patch, the Authenticode PE parser, the RTMR events). Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pqcc_verify::tee::measure::{self, SnpLaunch, TdxDirectBoot, TdxPageOrder};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            // Firmware: bounded work only (a hostile TDVF table may describe up to
            // 4 GiB of pages, which is slow but not wrong).
            if let Ok(sections) = measure::tdvf_sections(rest) {
                let added: u64 = sections.iter().map(|s| s.mem_size).sum();
                if added <= 1 << 24 {
                    let _ = measure::tdx_mrtd(rest);
                    let _ = measure::tdx_mrtd_with(rest, TdxPageOrder::PerSection);
                }
            }
            let _ = measure::snp_launch_digest(&SnpLaunch {
                ovmf: rest,
                kernel: Some(b"k"),
                initrd: None,
                cmdline: Some("c"),
                vcpus: 2,
                vcpu_sig: 0x00a0_0f11,
                sev_features: 1,
            });
        }
        1 => {
            let _ = measure::authenticode_sha384(rest);
        }
        _ => {
            let initrd = [0u8; 100];
            for memory in [1 << 30, 16 << 30] {
                let _ = measure::tdx_boot_events(&TdxDirectBoot {
                    kernel: rest,
                    initrd: Some(&initrd),
                    cmdline: Some("console=ttyS0"),
                    memory,
                });
            }
            let _ = measure::tdx::bzimage_version(rest);
        }
    }
});
