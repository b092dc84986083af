//! Expected launch measurements for a direct kernel boot, computed from the build
//! outputs alone, so a broker policy can be written before the VM ever runs.
//!
//! **SEV-SNP** ([`snp_launch_digest`]): the launch digest the AMD-SP computes while
//! QEMU loads the guest (SEV-SNP ABI spec, `SNP_LAUNCH_UPDATE`, "PAGE_INFO"):
//!
//! 1. every 4 KiB page of the OVMF image, mapped to end at 4 GiB, as a NORMAL page;
//! 2. the OVMF SEV metadata sections in order: SNP_SEC_MEM → ZERO pages, SNP_SECRETS →
//!    a SECRETS page, CPUID → a CPUID page, SVSM_CAA → ZERO pages, SNP_KERNEL_HASHES →
//!    the page holding QEMU's kernel-hashes table (SHA-256 of kernel, initrd and
//!    NUL-terminated command line) as a NORMAL page, or ZERO pages without a kernel;
//! 3. one VMSA page per vCPU (the BSP starting at `0xfffffff0`, the APs at the OVMF
//!    SEV-ES reset vector), whose contents depend on the vCPU signature (`--vcpu-type`)
//!    and the SEV features.
//!
//! Each step: `digest = SHA-384(digest ‖ contents-hash ‖ 0x70u16 ‖ type ‖ 0 ‖ 0 0 0 0 ‖
//! gpa)`. What changes the value: the OVMF build (every byte), the kernel, initrd and
//! command line (only through the hashes table, which needs an OVMF built with the
//! `SNP_KERNEL_HASHES` section — the AmdSev build), the vCPU count and type, the SEV
//! features, and the VMM (QEMU's initial register state is assumed). GPU BAR sizes and
//! other devices do not enter it.
//!
//! **TDX** ([`tdx_mrtd`], [`tdx_boot_events`], [`replay_rtmr`]): MRTD from the TDVF
//! metadata of the same OVMF image, RTMR1/RTMR2 from the events OVMF and the Linux EFI
//! stub log for a direct kernel boot (module [`tdx`]). RTMR0 (TD HOB, OVMF variables,
//! ACPI tables, boot variables) depends on the VMM's configuration and is not predicted.

mod authenticode;
pub mod tdx;

pub use authenticode::authenticode_sha384;
pub use tdx::{
    CcEvent, TdvfSection, TdxDirectBoot, TdxPageOrder, replay_rtmr, tdvf_sections, tdx_boot_events,
    tdx_mrtd, tdx_mrtd_with,
};

use std::fmt;

use sha2::{Digest, Sha256, Sha384};

/// Why a measurement could not be computed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MeasureError {
    /// The firmware image is malformed (what is wrong).
    Ovmf(&'static str),
    /// The firmware has no SEV metadata (not an SEV-SNP capable OVMF).
    NoSevMetadata,
    /// A kernel was given but the firmware has no SNP_KERNEL_HASHES section (not an
    /// AmdSev build of OVMF).
    NoKernelHashesSection,
    /// More than one vCPU, but the firmware has no SEV-ES AP reset vector.
    NoApResetVector,
    /// The firmware has no TDX (TDVF) metadata.
    NoTdxMetadata,
    /// An unknown vCPU type name.
    UnknownVcpuType(String),
    /// The vCPU count is zero.
    NoVcpus,
    /// The kernel image is malformed or not a bzImage with an EFI stub (what is wrong).
    Kernel(&'static str),
    /// A boot configuration whose measurement is not predicted (which).
    Unsupported(&'static str),
}

impl fmt::Display for MeasureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MeasureError::Ovmf(w) => write!(f, "firmware image malformed: {w}"),
            MeasureError::NoSevMetadata => {
                write!(f, "firmware has no SEV metadata (not SNP-capable)")
            }
            MeasureError::NoKernelHashesSection => write!(
                f,
                "a kernel was given but the firmware has no SNP_KERNEL_HASHES section \
                 (use an AmdSev build of OVMF)"
            ),
            MeasureError::NoApResetVector => {
                write!(
                    f,
                    "firmware has no SEV-ES AP reset vector, needed for > 1 vCPU"
                )
            }
            MeasureError::NoTdxMetadata => write!(f, "firmware has no TDX (TDVF) metadata"),
            MeasureError::UnknownVcpuType(t) => write!(f, "unknown vCPU type {t:?}"),
            MeasureError::NoVcpus => write!(f, "at least one vCPU is needed"),
            MeasureError::Kernel(w) => write!(f, "kernel image: {w}"),
            MeasureError::Unsupported(w) => write!(f, "not predicted: {w}"),
        }
    }
}

impl std::error::Error for MeasureError {}

const PAGE: usize = 4096;
const FOUR_GIB: u64 = 1 << 32;

/// GUID bytes in the little-endian (EFI) layout firmware tables use.
const fn guid_le(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

const FOOTER_GUID: [u8; 16] = guid_le(
    0x96b582de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);
const SEV_HASH_TABLE_RV_GUID: [u8; 16] = guid_le(
    0x7255371f,
    0x3a3b,
    0x4b04,
    [0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54],
);
const SEV_ES_RESET_BLOCK_GUID: [u8; 16] = guid_le(
    0x00f771de,
    0x1a7e,
    0x4fcb,
    [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e],
);
const SEV_METADATA_GUID: [u8; 16] = guid_le(
    0xdc886566,
    0x984a,
    0x4798,
    [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc],
);
const TDX_METADATA_GUID: [u8; 16] = guid_le(
    0xe47a6535,
    0x984a,
    0x4798,
    [0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2],
);

const HASH_TABLE_HEADER_GUID: [u8; 16] = guid_le(
    0x9438d606,
    0x4f22,
    0x4cc9,
    [0xb4, 0x79, 0xa7, 0x93, 0xd4, 0x11, 0xfd, 0x21],
);
const HASH_KERNEL_GUID: [u8; 16] = guid_le(
    0x4de79437,
    0xabd2,
    0x427f,
    [0xb8, 0x35, 0xd5, 0xb1, 0x72, 0xd2, 0x04, 0x5b],
);
const HASH_INITRD_GUID: [u8; 16] = guid_le(
    0x44baf731,
    0x3a2f,
    0x4bd7,
    [0x9a, 0xf1, 0x41, 0xe2, 0x91, 0x69, 0x78, 0x1d],
);
const HASH_CMDLINE_GUID: [u8; 16] = guid_le(
    0x97d02dd8,
    0xbd20,
    0x4c94,
    [0xaa, 0x78, 0xe7, 0x71, 0x4d, 0x36, 0xab, 0x2a],
);

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off.checked_add(4)?)?
        .try_into()
        .ok()
        .map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off.checked_add(8)?)?
        .try_into()
        .ok()
        .map(u64::from_le_bytes)
}

/// The OVMF footer GUID table: entries `data ‖ size u16 ‖ guid[16]`, read backwards
/// from 32 bytes before the end of the image.
/// Footer table entries: GUID and data.
type FooterTable<'a> = Vec<([u8; 16], &'a [u8])>;

fn footer_table(ovmf: &[u8]) -> Result<FooterTable<'_>, MeasureError> {
    let bad = MeasureError::Ovmf;
    let footer_start = ovmf.len().checked_sub(32 + 18).ok_or(bad("too small"))?;
    let footer = ovmf
        .get(footer_start..footer_start + 18)
        .ok_or(bad("too small"))?;
    let (size, guid) = footer.split_at(2);
    if guid != FOOTER_GUID {
        return Ok(Vec::new());
    }
    let size = usize::from(u16::from_le_bytes([size[0], size[1]]));
    let table_len = size.checked_sub(18).ok_or(bad("footer table size"))?;
    let start = footer_start
        .checked_sub(table_len)
        .ok_or(bad("footer table size"))?;
    let mut table = ovmf
        .get(start..footer_start)
        .ok_or(bad("footer table size"))?;
    let mut out = Vec::new();
    while table.len() >= 18 {
        let hdr = table.len() - 18;
        let esize = usize::from(u16::from_le_bytes([table[hdr], table[hdr + 1]]));
        let mut g = [0u8; 16];
        g.copy_from_slice(&table[hdr + 2..]);
        if esize < 18 || esize > table.len() {
            return Err(bad("footer table entry size"));
        }
        out.push((g, &table[table.len() - esize..hdr]));
        table = &table[..table.len() - esize];
    }
    Ok(out)
}

fn table_entry<'a>(t: &[([u8; 16], &'a [u8])], g: &[u8; 16]) -> Option<&'a [u8]> {
    t.iter().find(|(k, _)| k == g).map(|(_, v)| *v)
}

/// An SEV metadata section (`OvmfSevMetadataSectionDesc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SevSection {
    gpa: u32,
    size: u32,
    kind: u32,
}

fn sev_sections(ovmf: &[u8], t: &[([u8; 16], &[u8])]) -> Result<Vec<SevSection>, MeasureError> {
    let bad = MeasureError::Ovmf;
    let entry = table_entry(t, &SEV_METADATA_GUID).ok_or(MeasureError::NoSevMetadata)?;
    let from_end = u32_at(entry, 0).ok_or(bad("SEV metadata entry"))? as usize;
    let start = ovmf
        .len()
        .checked_sub(from_end)
        .ok_or(bad("SEV metadata offset"))?;
    if ovmf.get(start..start + 4) != Some(b"ASEV".as_slice()) {
        return Err(bad("SEV metadata signature"));
    }
    if u32_at(ovmf, start + 8) != Some(1) {
        return Err(bad("SEV metadata version"));
    }
    let n = u32_at(ovmf, start + 12).ok_or(bad("SEV metadata header"))? as usize;
    (0..n)
        .map(|i| {
            let o = start + 16 + i * 12;
            Ok(SevSection {
                gpa: u32_at(ovmf, o).ok_or(bad("SEV metadata section"))?,
                size: u32_at(ovmf, o + 4).ok_or(bad("SEV metadata section"))?,
                kind: u32_at(ovmf, o + 8).ok_or(bad("SEV metadata section"))?,
            })
        })
        .collect()
}

/// QEMU's kernel-hashes table (`SevHashTable` padded to 16 bytes): header GUID, u16
/// length, then cmdline, initrd, kernel entries of `{GUID, u16 length 50, SHA-256}`.
pub fn snp_kernel_hashes_table(
    kernel: &[u8],
    initrd: Option<&[u8]>,
    cmdline: Option<&str>,
) -> [u8; 176] {
    let mut cmd = cmdline.unwrap_or("").as_bytes().to_vec();
    cmd.push(0);
    let entries = [
        (HASH_CMDLINE_GUID, <[u8; 32]>::from(Sha256::digest(&cmd))),
        (
            HASH_INITRD_GUID,
            Sha256::digest(initrd.unwrap_or(&[])).into(),
        ),
        (HASH_KERNEL_GUID, Sha256::digest(kernel).into()),
    ];
    let mut t = [0u8; 176];
    t[..16].copy_from_slice(&HASH_TABLE_HEADER_GUID);
    t[16..18].copy_from_slice(&168u16.to_le_bytes());
    for (i, (g, h)) in entries.iter().enumerate() {
        let o = 18 + i * 50;
        t[o..o + 16].copy_from_slice(g);
        t[o + 16..o + 18].copy_from_slice(&50u16.to_le_bytes());
        t[o + 18..o + 50].copy_from_slice(h);
    }
    t
}

/// The running SNP launch digest.
struct LaunchDigest([u8; 48]);

impl LaunchDigest {
    fn update(&mut self, page_type: u8, gpa: u64, contents: &[u8; 48]) {
        let mut h = Sha384::new();
        h.update(self.0);
        h.update(contents);
        h.update(0x70u16.to_le_bytes());
        h.update([page_type, 0, 0, 0, 0, 0]);
        h.update(gpa.to_le_bytes());
        self.0 = h.finalize().into();
    }

    fn normal(&mut self, gpa: u64, data: &[u8]) {
        for (i, page) in data.chunks(PAGE).enumerate() {
            self.update(1, gpa + (i * PAGE) as u64, &Sha384::digest(page).into());
        }
    }

    fn repeat(&mut self, page_type: u8, gpa: u64, len: u64) {
        for off in (0..len).step_by(PAGE) {
            self.update(page_type, gpa + off, &[0; 48]);
        }
    }
}

/// vCPU signatures (CPUID 1 EAX) of QEMU's EPYC CPU models.
pub fn vcpu_signature(cpu_type: &str) -> Option<u32> {
    let sig = |family: u32, model: u32, stepping: u32| {
        let (fam_lo, fam_hi) = if family > 0xf {
            (0xf, (family - 0xf) & 0xff)
        } else {
            (family, 0)
        };
        (fam_hi << 20)
            | (((model >> 4) & 0xf) << 16)
            | (fam_lo << 8)
            | ((model & 0xf) << 4)
            | (stepping & 0xf)
    };
    Some(match cpu_type {
        "EPYC" | "EPYC-v1" | "EPYC-v2" | "EPYC-IBPB" | "EPYC-v3" | "EPYC-v4" => sig(23, 1, 2),
        "EPYC-Rome" | "EPYC-Rome-v1" | "EPYC-Rome-v2" | "EPYC-Rome-v3" => sig(23, 49, 0),
        "EPYC-Milan" | "EPYC-Milan-v1" | "EPYC-Milan-v2" => sig(25, 1, 1),
        "EPYC-Genoa" | "EPYC-Genoa-v1" => sig(25, 17, 0),
        "EPYC-Turin" => sig(26, 0, 0),
        _ => return None,
    })
}

/// One vCPU's initial VMSA as QEMU/KVM sets it (AMD APM vol. 2, "VMSA layout" and the
/// x86 reset state): real mode at `eip`, `rdx` = CPU signature.
fn vmsa_page(eip: u32, vcpu_sig: u32, sev_features: u64) -> Vec<u8> {
    let mut v = vec![0u8; PAGE];
    let mut put = |off: usize, bytes: &[u8]| v[off..off + bytes.len()].copy_from_slice(bytes);
    // Segments {selector u16, attrib u16, limit u32, base u64}: es cs ss ds fs gs gdtr
    // ldtr idtr tr at 0x00, 0x10, …, 0x90.
    let seg = |sel: u16, attrib: u16, limit: u32, base: u64| {
        let mut s = [0u8; 16];
        s[..2].copy_from_slice(&sel.to_le_bytes());
        s[2..4].copy_from_slice(&attrib.to_le_bytes());
        s[4..8].copy_from_slice(&limit.to_le_bytes());
        s[8..].copy_from_slice(&base.to_le_bytes());
        s
    };
    put(0x00, &seg(0, 0x93, 0xffff, 0)); // es
    put(
        0x10,
        &seg(0xf000, 0x9b, 0xffff, u64::from(eip & 0xffff_0000)),
    ); // cs
    put(0x20, &seg(0, 0x93, 0xffff, 0)); // ss
    put(0x30, &seg(0, 0x93, 0xffff, 0)); // ds
    put(0x40, &seg(0, 0x93, 0xffff, 0)); // fs
    put(0x50, &seg(0, 0x93, 0xffff, 0)); // gs
    put(0x60, &seg(0, 0, 0xffff, 0)); // gdtr
    put(0x70, &seg(0, 0x82, 0xffff, 0)); // ldtr
    put(0x80, &seg(0, 0, 0xffff, 0)); // idtr
    put(0x90, &seg(0, 0x8b, 0xffff, 0)); // tr
    put(0xd0, &0x1000u64.to_le_bytes()); // efer: SVME
    put(0x148, &0x40u64.to_le_bytes()); // cr4: MCE
    put(0x158, &0x10u64.to_le_bytes()); // cr0: ET
    put(0x160, &0x400u64.to_le_bytes()); // dr7
    put(0x168, &0xffff_0ff0u64.to_le_bytes()); // dr6
    put(0x170, &0x2u64.to_le_bytes()); // rflags
    put(0x178, &u64::from(eip & 0xffff).to_le_bytes()); // rip
    put(0x268, &0x0007_0406_0007_0406u64.to_le_bytes()); // g_pat
    put(0x310, &u64::from(vcpu_sig).to_le_bytes()); // rdx
    put(0x3b0, &sev_features.to_le_bytes()); // sev_features
    put(0x3e8, &0x1u64.to_le_bytes()); // xcr0
    put(0x408, &0x1f80u32.to_le_bytes()); // mxcsr
    put(0x410, &0x37fu16.to_le_bytes()); // x87 fcw
    v
}

/// What [`snp_launch_digest`] measures.
#[derive(Debug, Clone, Copy)]
pub struct SnpLaunch<'a> {
    /// The OVMF image (the whole `-bios` file).
    pub ovmf: &'a [u8],
    /// Kernel, when booting one directly (`-kernel`).
    pub kernel: Option<&'a [u8]>,
    /// Initrd (`-initrd`).
    pub initrd: Option<&'a [u8]>,
    /// Command line (`-append`).
    pub cmdline: Option<&'a str>,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// vCPU signature ([`vcpu_signature`]).
    pub vcpu_sig: u32,
    /// SEV features of the VMSA (1 = SNP active, QEMU's default).
    pub sev_features: u64,
}

/// The expected SEV-SNP MEASUREMENT of a QEMU guest.
pub fn snp_launch_digest(l: &SnpLaunch<'_>) -> Result<[u8; 48], MeasureError> {
    if l.vcpus == 0 {
        return Err(MeasureError::NoVcpus);
    }
    let ovmf = l.ovmf;
    if ovmf.is_empty() || !ovmf.len().is_multiple_of(PAGE) || ovmf.len() as u64 > FOUR_GIB {
        return Err(MeasureError::Ovmf(
            "size is not a whole number of pages below 4 GiB",
        ));
    }
    let t = footer_table(ovmf)?;
    let sections = sev_sections(ovmf, &t)?;
    let mut ld = LaunchDigest([0; 48]);
    ld.normal(FOUR_GIB - ovmf.len() as u64, ovmf);

    let hashes_page = match l.kernel {
        Some(k) => {
            if !sections.iter().any(|s| s.kind == 0x10) {
                return Err(MeasureError::NoKernelHashesSection);
            }
            let gpa = table_entry(&t, &SEV_HASH_TABLE_RV_GUID)
                .and_then(|e| u32_at(e, 0))
                .ok_or(MeasureError::Ovmf("no SEV hash table entry"))?;
            let off = (gpa & 0xfff) as usize;
            let table = snp_kernel_hashes_table(k, l.initrd, l.cmdline);
            let mut page = vec![0u8; PAGE];
            page.get_mut(off..off + table.len())
                .ok_or(MeasureError::Ovmf("hash table crosses a page"))?
                .copy_from_slice(&table);
            Some(page)
        }
        None => None,
    };
    for s in &sections {
        let (gpa, size) = (u64::from(s.gpa), u64::from(s.size));
        if size % PAGE as u64 != 0 {
            return Err(MeasureError::Ovmf("SEV metadata section size"));
        }
        match s.kind {
            1 | 4 => ld.repeat(3, gpa, size), // SNP_SEC_MEM, SVSM_CAA: zero pages
            2 => ld.update(5, gpa, &[0; 48]), // SNP_SECRETS
            3 => ld.update(6, gpa, &[0; 48]), // CPUID
            0x10 => match &hashes_page {
                Some(p) if size == PAGE as u64 => ld.normal(gpa, p),
                Some(_) => return Err(MeasureError::Ovmf("kernel hashes section is not one page")),
                None => ld.repeat(3, gpa, size),
            },
            _ => return Err(MeasureError::Ovmf("unknown SEV metadata section type")),
        }
    }
    let ap_eip = table_entry(&t, &SEV_ES_RESET_BLOCK_GUID).and_then(|e| u32_at(e, 0));
    let bsp = vmsa_page(0xffff_fff0, l.vcpu_sig, l.sev_features);
    let bsp_hash: [u8; 48] = Sha384::digest(&bsp).into();
    const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;
    ld.update(2, VMSA_GPA, &bsp_hash);
    if l.vcpus > 1 {
        let eip = ap_eip
            .filter(|&e| e != 0)
            .ok_or(MeasureError::NoApResetVector)?;
        let ap: [u8; 48] = Sha384::digest(vmsa_page(eip, l.vcpu_sig, l.sev_features)).into();
        for _ in 1..l.vcpus {
            ld.update(2, VMSA_GPA, &ap);
        }
    }
    Ok(ld.0)
}
