//! TDX: MRTD from the TDVF metadata of an OVMF image, and RTMR1/RTMR2 of a QEMU direct
//! kernel boot replayed from the CC event log OVMF and the Linux EFI stub write.
//!
//! **MRTD.** QEMU hands every TDVF section to KVM (`KVM_TDX_INIT_MEM_REGION`), which
//! calls `TDH.MEM.PAGE.ADD` for each 4 KiB page and, for sections with the MR_EXTEND
//! attribute, `TDH.MR.EXTEND` for each 256-byte chunk of that page. The TDX module keeps
//! one SHA-384 context over 128-byte records: `"MEM.PAGE.ADD"` ‖ 0⁴ ‖ GPA (u64) ‖ 0¹⁰⁴
//! for a page, `"MR.EXTEND"` ‖ 0⁷ ‖ GPA ‖ 0¹⁰⁴ followed by the 256 bytes for a chunk
//! (Intel TDX module spec, "MRTD"). Sections marked PAGE_AUG are accepted later by the
//! guest and not measured. Upstream Linux (6.16 and newer) adds and extends page by
//! page ([`TdxPageOrder::PerPage`]); older out-of-tree KVM TDX trees added all pages
//! of a section before extending any ([`TdxPageOrder::PerSection`]).
//!
//! **RTMR1/RTMR2.** RTMR = SHA-384 extend from 48 zero bytes of each event's digest, in
//! log order (UEFI CC measurement: RTMR index = CC MR index − 1; PCR 1,7 → RTMR0,
//! PCR 2–6 → RTMR1, PCR 8–15 → RTMR2). See [`tdx_boot_events`] for the events assumed.

use sha2::{Digest, Sha384};

use super::{MeasureError, PAGE, TDX_METADATA_GUID, footer_table, table_entry, u32_at, u64_at};
use crate::tee::measure::authenticode::authenticode_sha384;

/// TDVF section attribute: the contents are measured into MRTD (`TDH.MR.EXTEND`).
pub const TDVF_MR_EXTEND: u32 = 1;
/// TDVF section attribute: the pages are accepted later (`TDH.MEM.PAGE.AUG`), unmeasured.
pub const TDVF_PAGE_AUG: u32 = 2;

/// The most memory the TDVF sections may add (bounds the work on a hostile image;
/// OVMF's sections add a few MiB).
const MAX_ADDED: u64 = 1 << 32;

/// One section of the TDVF metadata (`TDVF_SECTION`, TDVF design guide).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdvfSection {
    /// Offset of the raw data in the image.
    pub data_offset: u32,
    /// Size of the raw data in the image.
    pub raw_size: u32,
    /// Guest physical address.
    pub gpa: u64,
    /// Size in guest memory (whole pages).
    pub mem_size: u64,
    /// Type: 0 BFV, 1 CFV, 2 TD_HOB, 3 TEMP_MEM, 4 PERM_MEM, 5 PAYLOAD, 6 PAYLOAD_PARAM.
    pub kind: u32,
    /// Attributes ([`TDVF_MR_EXTEND`], [`TDVF_PAGE_AUG`]).
    pub attributes: u32,
}

impl TdvfSection {
    /// The section type's name.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            0 => "BFV",
            1 => "CFV",
            2 => "TD_HOB",
            3 => "TEMP_MEM",
            4 => "PERM_MEM",
            5 => "PAYLOAD",
            6 => "PAYLOAD_PARAM",
            _ => "unknown",
        }
    }
}

/// The TDVF sections of an OVMF image (the footer GUID table's TDX metadata entry points
/// at a `"TDVF"` descriptor, version 1). Every section is checked: page-aligned GPA and
/// size, no address overflow, at most 4 GiB added in all, known attributes, and for MR_EXTEND sections raw data
/// inside the image and no larger than the memory size.
pub fn tdvf_sections(ovmf: &[u8]) -> Result<Vec<TdvfSection>, MeasureError> {
    let bad = MeasureError::Ovmf;
    let t = footer_table(ovmf)?;
    let entry = table_entry(&t, &TDX_METADATA_GUID).ok_or(MeasureError::NoTdxMetadata)?;
    let from_end = u32_at(entry, 0).ok_or(bad("TDX metadata entry"))? as usize;
    let start = ovmf
        .len()
        .checked_sub(from_end)
        .ok_or(bad("TDX metadata offset"))?;
    if ovmf.get(start..start.saturating_add(4)) != Some(b"TDVF".as_slice()) {
        return Err(bad("TDVF signature"));
    }
    if u32_at(ovmf, start + 8) != Some(1) {
        return Err(bad("TDVF metadata version"));
    }
    let n = u32_at(ovmf, start + 12).ok_or(bad("TDVF header"))? as usize;
    if n.checked_mul(32)
        .and_then(|l| l.checked_add(start + 16))
        .is_none_or(|end| end > ovmf.len())
    {
        return Err(bad("TDVF sections outside the image"));
    }
    let mut out = Vec::with_capacity(n);
    let mut added: u64 = 0;
    for i in 0..n {
        let o = start + 16 + i * 32;
        let field = |off: usize| u32_at(ovmf, o + off).ok_or(bad("TDVF section"));
        let s = TdvfSection {
            data_offset: field(0)?,
            raw_size: field(4)?,
            gpa: u64_at(ovmf, o + 8).ok_or(bad("TDVF section"))?,
            mem_size: u64_at(ovmf, o + 16).ok_or(bad("TDVF section"))?,
            kind: field(24)?,
            attributes: field(28)?,
        };
        if !s.gpa.is_multiple_of(PAGE as u64) || !s.mem_size.is_multiple_of(PAGE as u64) {
            return Err(bad("TDVF section not page aligned"));
        }
        if s.gpa.checked_add(s.mem_size).is_none() {
            return Err(bad("TDVF section address overflow"));
        }
        if s.attributes & TDVF_PAGE_AUG == 0 {
            added = added.saturating_add(s.mem_size);
            if added > MAX_ADDED {
                return Err(bad("TDVF sections add more than 4 GiB"));
            }
        }
        if s.attributes & !(TDVF_MR_EXTEND | TDVF_PAGE_AUG) != 0 {
            return Err(bad("TDVF section has unknown attributes"));
        }
        if s.attributes & TDVF_MR_EXTEND != 0 {
            if u64::from(s.raw_size) > s.mem_size {
                return Err(bad("TDVF section raw data larger than its memory"));
            }
            let end = (s.data_offset as usize).checked_add(s.raw_size as usize);
            if end.is_none_or(|e| e > ovmf.len()) {
                return Err(bad("TDVF section outside the image"));
            }
        }
        out.push(s);
    }
    Ok(out)
}

/// The order of `TDH.MEM.PAGE.ADD` and `TDH.MR.EXTEND` within a section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TdxPageOrder {
    /// Add a page, then extend its chunks, page by page (upstream Linux KVM, 6.16+).
    #[default]
    PerPage,
    /// Add every page of a section, then extend every chunk of it (older KVM TDX trees).
    PerSection,
}

/// The expected MRTD of an OVMF (TDVF) image, pages added and extended page by page.
pub fn tdx_mrtd(ovmf: &[u8]) -> Result<[u8; 48], MeasureError> {
    tdx_mrtd_with(ovmf, TdxPageOrder::PerPage)
}

/// The expected MRTD of an OVMF (TDVF) image for a given page order.
pub fn tdx_mrtd_with(ovmf: &[u8], order: TdxPageOrder) -> Result<[u8; 48], MeasureError> {
    let sections = tdvf_sections(ovmf)?;
    let mut h = Sha384::new();
    let add = |h: &mut Sha384, gpa: u64| {
        let mut rec = [0u8; 128];
        rec[..12].copy_from_slice(b"MEM.PAGE.ADD");
        rec[16..24].copy_from_slice(&gpa.to_le_bytes());
        h.update(rec);
    };
    let extend = |h: &mut Sha384, s: &TdvfSection, page: u64| {
        let raw_start = s.data_offset as usize;
        let raw = ovmf
            .get(raw_start..raw_start.saturating_add(s.raw_size as usize))
            .unwrap_or_default();
        for chunk in (0..PAGE as u64).step_by(256) {
            let mut rec = [0u8; 128];
            rec[..9].copy_from_slice(b"MR.EXTEND");
            rec[16..24].copy_from_slice(&(s.gpa + page + chunk).to_le_bytes());
            h.update(rec);
            // Memory past the raw data is zero (QEMU copies the raw data into zeroed
            // pages); `page + chunk` is below mem_size, which the caller bounded.
            let mut data = [0u8; 256];
            let at = usize::try_from(page + chunk).unwrap_or(usize::MAX);
            if let Some(src) = raw.get(at..raw.len().min(at.saturating_add(256))) {
                data[..src.len()].copy_from_slice(src);
            }
            h.update(data);
        }
    };
    for s in &sections {
        if s.attributes & TDVF_PAGE_AUG != 0 {
            continue;
        }
        let measured = s.attributes & TDVF_MR_EXTEND != 0;
        let pages = (0..s.mem_size).step_by(PAGE);
        match order {
            TdxPageOrder::PerPage => {
                for page in pages {
                    add(&mut h, s.gpa + page);
                    if measured {
                        extend(&mut h, s, page);
                    }
                }
            }
            TdxPageOrder::PerSection => {
                for page in pages.clone() {
                    add(&mut h, s.gpa + page);
                }
                if measured {
                    for page in pages {
                        extend(&mut h, s, page);
                    }
                }
            }
        }
    }
    Ok(h.finalize().into())
}

/// TCG event type `EV_SEPARATOR`.
pub const EV_SEPARATOR: u32 = 0x4;
/// TCG event type `EV_EVENT_TAG` (tagged events of the Linux EFI stub).
pub const EV_EVENT_TAG: u32 = 0x6;
/// TCG event type `EV_EFI_BOOT_SERVICES_APPLICATION`.
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
/// TCG event type `EV_EFI_ACTION`.
pub const EV_EFI_ACTION: u32 = 0x8000_0007;

/// One predicted CC event log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CcEvent {
    /// The RTMR it extends (CC event log MR index − 1).
    pub rtmr: u8,
    /// TCG event type.
    pub event_type: u32,
    /// What was measured.
    pub description: &'static str,
    /// SHA-384 digest extended into the RTMR.
    pub digest: [u8; 48],
}

impl CcEvent {
    /// The TCG name of the event type.
    pub fn event_type_name(&self) -> &'static str {
        match self.event_type {
            EV_SEPARATOR => "EV_SEPARATOR",
            EV_EVENT_TAG => "EV_EVENT_TAG",
            EV_EFI_BOOT_SERVICES_APPLICATION => "EV_EFI_BOOT_SERVICES_APPLICATION",
            EV_EFI_ACTION => "EV_EFI_ACTION",
            _ => "unknown",
        }
    }
}

/// A QEMU direct kernel boot of a TD (`-kernel`, `-initrd`, `-append`, `-m`).
#[derive(Debug, Clone, Copy)]
pub struct TdxDirectBoot<'a> {
    /// The kernel (a bzImage with the EFI stub).
    pub kernel: &'a [u8],
    /// The initrd.
    pub initrd: Option<&'a [u8]>,
    /// The command line.
    pub cmdline: Option<&'a str>,
    /// Guest memory in bytes (`-m`).
    pub memory: u64,
}

/// QEMU's ACPI data reservation below 4 GiB for current PC machine types
/// (`acpi_data_size`, 128 KiB + 32 KiB).
pub const QEMU_ACPI_DATA_SIZE: u64 = 0x2_8000;

/// Guest RAM below 4 GiB on QEMU's q35 machine: all of it up to 2.75 GiB, otherwise
/// 2 GiB (the rest is mapped above 4 GiB).
pub fn q35_below_4g(memory: u64) -> u64 {
    if memory >= 0xb000_0000 {
        0x8000_0000
    } else {
        memory
    }
}

fn kernel_err(w: &'static str) -> MeasureError {
    MeasureError::Kernel(w)
}

/// The kernel as OVMF receives it through fw_cfg: QEMU (`x86_load_linux`, for guests
/// that are not SEV) writes into the setup header the loader type (`0x210` = 0xb0),
/// `CAN_USE_HEAP` (`0x211`), `heap_end_ptr` (`0x224`), `cmd_line_ptr` (`0x228` =
/// 0x20000) and, with an initrd, `ramdisk_image`/`ramdisk_size` (`0x218`, `0x21c`): the
/// initrd's load address depends on its size and on the RAM below 4 GiB. Only kernels
/// with boot protocol 2.02 or newer loaded high are supported, and `vga=` in the command
/// line (which QEMU also writes into the header) is refused.
pub fn qemu_patched_kernel(
    kernel: &[u8],
    initrd_len: Option<usize>,
    cmdline: Option<&str>,
    memory: u64,
) -> Result<Vec<u8>, MeasureError> {
    const REAL_ADDR: u32 = 0x1_0000;
    const CMDLINE_ADDR: u32 = 0x2_0000;
    if kernel.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        return Err(kernel_err("no Linux setup header (HdrS)"));
    }
    let rd16 = |o: usize| {
        kernel
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let protocol = rd16(0x206).ok_or(kernel_err("truncated setup header"))?;
    let loadflags = *kernel
        .get(0x211)
        .ok_or(kernel_err("truncated setup header"))?;
    if protocol < 0x202 || loadflags & 1 == 0 {
        return Err(kernel_err(
            "boot protocol before 2.02 or not loaded high (not predicted)",
        ));
    }
    if cmdline.is_some_and(|c| c.contains("vga=")) {
        return Err(MeasureError::Unsupported(
            "vga= in the command line (QEMU writes it into the kernel header)",
        ));
    }
    let mut k = kernel.to_vec();
    let mut put = |o: usize, b: &[u8]| -> Result<(), MeasureError> {
        k.get_mut(o..o + b.len())
            .ok_or(kernel_err("truncated setup header"))?
            .copy_from_slice(b);
        Ok(())
    };
    put(0x228, &CMDLINE_ADDR.to_le_bytes())?;
    put(0x210, &[0xb0])?;
    put(0x211, &[loadflags | 0x80])?;
    let heap_end = u16::try_from(CMDLINE_ADDR - REAL_ADDR - 0x200).unwrap_or(u16::MAX);
    put(0x224, &heap_end.to_le_bytes())?;
    if let Some(len) = initrd_len {
        let xloadflags = rd16(0x236).ok_or(kernel_err("truncated setup header"))?;
        let mut initrd_max: u64 = if protocol >= 0x20c && xloadflags & 2 != 0 {
            u64::from(u32::MAX)
        } else if protocol >= 0x203 {
            let b = kernel
                .get(0x22c..0x230)
                .ok_or(kernel_err("truncated setup header"))?;
            u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        } else {
            0x37ff_ffff
        };
        let low = q35_below_4g(memory)
            .checked_sub(QEMU_ACPI_DATA_SIZE)
            .filter(|&l| l > 0)
            .ok_or(MeasureError::Unsupported("guest memory too small"))?;
        if initrd_max >= low {
            initrd_max = low - 1;
        }
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        if len >= initrd_max {
            return Err(MeasureError::Unsupported(
                "initrd too large for the guest memory below 4 GiB",
            ));
        }
        let addr = u32::try_from((initrd_max - len) & !0xfff)
            .map_err(|_| MeasureError::Unsupported("initrd address"))?;
        let len = u32::try_from(len).map_err(|_| MeasureError::Unsupported("initrd size"))?;
        put(0x218, &addr.to_le_bytes())?;
        put(0x21c, &len.to_le_bytes())?;
    }
    Ok(k)
}

/// The kernel's `LoadOptions` as OVMF builds them: the command line, `" initrd=initrd"`
/// when there is an initrd, each byte widened to UTF-16LE, NUL-terminated; `None` when
/// both are empty (then nothing is measured).
pub fn ovmf_load_options(cmdline: Option<&str>, initrd: bool) -> Option<Vec<u8>> {
    let mut s = cmdline.unwrap_or("").as_bytes().to_vec();
    if initrd {
        s.extend_from_slice(b" initrd=initrd");
    }
    if s.is_empty() {
        return None;
    }
    s.push(0);
    Some(s.iter().flat_map(|&b| [b, 0]).collect())
}

/// The RTMR1 and RTMR2 events of a QEMU direct kernel boot with OVMF's TDX support
/// (`TdTcg2Dxe`) and a Linux EFI stub that measures into the CC protocol, Secure Boot
/// off, in log order:
///
/// - RTMR1: `EV_EFI_BOOT_SERVICES_APPLICATION` = Authenticode SHA-384 of the kernel as
///   QEMU patched it ([`qemu_patched_kernel`]), measured when OVMF loads it;
///   `EV_EFI_ACTION` "Calling EFI Application from Boot Option" and `EV_SEPARATOR`
///   (`00000000`) at ReadyToBoot; `EV_EFI_ACTION` "Exit Boot Services Invocation" and
///   "Exit Boot Services Returned with Success" when the stub exits boot services.
/// - RTMR2 (PCR 9, by the EFI stub): `EV_EVENT_TAG` "LOADED_IMAGE::LoadOptions" =
///   SHA-384 of [`ovmf_load_options`], when not empty; `EV_EVENT_TAG` "Linux initrd" =
///   SHA-384 of the initrd, when it is not empty.
pub fn tdx_boot_events(b: &TdxDirectBoot<'_>) -> Result<Vec<CcEvent>, MeasureError> {
    if b.cmdline.is_some_and(|c| c.contains('\0')) {
        return Err(MeasureError::Unsupported("NUL in the command line"));
    }
    let patched = qemu_patched_kernel(b.kernel, b.initrd.map(<[u8]>::len), b.cmdline, b.memory)?;
    let kernel_hash = authenticode_sha384(&patched).map_err(MeasureError::Kernel)?;
    let sha = |d: &[u8]| -> [u8; 48] { Sha384::digest(d).into() };
    let action = |s: &'static str| CcEvent {
        rtmr: 1,
        event_type: EV_EFI_ACTION,
        description: s,
        digest: sha(s.as_bytes()),
    };
    let mut ev = vec![
        CcEvent {
            rtmr: 1,
            event_type: EV_EFI_BOOT_SERVICES_APPLICATION,
            description: "kernel (Authenticode SHA-384 of the QEMU-patched bzImage)",
            digest: kernel_hash,
        },
        action("Calling EFI Application from Boot Option"),
        CcEvent {
            rtmr: 1,
            event_type: EV_SEPARATOR,
            description: "separator (00000000)",
            digest: sha(&[0; 4]),
        },
    ];
    let initrd = b.initrd.filter(|i| !i.is_empty());
    if let Some(opts) = ovmf_load_options(b.cmdline, initrd.is_some()) {
        ev.push(CcEvent {
            rtmr: 2,
            event_type: EV_EVENT_TAG,
            description: "LOADED_IMAGE::LoadOptions (command line, UTF-16LE)",
            digest: sha(&opts),
        });
    }
    if let Some(i) = initrd {
        ev.push(CcEvent {
            rtmr: 2,
            event_type: EV_EVENT_TAG,
            description: "Linux initrd",
            digest: sha(i),
        });
    }
    ev.push(action("Exit Boot Services Invocation"));
    ev.push(action("Exit Boot Services Returned with Success"));
    Ok(ev)
}

/// Replays `events` into RTMR `index`: starting from 48 zero bytes,
/// `RTMR = SHA-384(RTMR ‖ digest)` for each event of that RTMR, in order.
pub fn replay_rtmr(events: &[CcEvent], index: u8) -> [u8; 48] {
    events
        .iter()
        .filter(|e| e.rtmr == index)
        .fold([0u8; 48], |acc, e| {
            let mut h = Sha384::new();
            h.update(acc);
            h.update(e.digest);
            h.finalize().into()
        })
}

/// The version string a bzImage carries (setup header `kernel_version`, e.g.
/// `"6.1.0-41-amd64 (…) #1 SMP …"`), when present and printable.
pub fn bzimage_version(kernel: &[u8]) -> Option<&str> {
    if kernel.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        return None;
    }
    let ptr = kernel.get(0x20e..0x210)?;
    let at = usize::from(u16::from_le_bytes([ptr[0], ptr[1]])).checked_add(0x200)?;
    let tail = kernel.get(at..)?;
    let s = &tail[..tail.iter().position(|&b| b == 0)?.min(256)];
    std::str::from_utf8(s)
        .ok()
        .filter(|v| !v.is_empty() && v.chars().all(|c| !c.is_control()))
}

/// Whether the EFI stub of the bzImage `kernel` knows the UEFI CC measurement protocol
/// (`EFI_CC_MEASUREMENT_PROTOCOL_GUID` 96751a3d-72f4-41a6-a794-ed5d0e67ae6b), through
/// which it measures the command line and the initrd into RTMR2 on a TD.
///
/// The stub gained it in Linux 6.9 (commit ac93cbfc2a2c, "efi/libstub: Measure into CC
/// protocol if TCG2 protocol is absent", in the pull "EFI updates for v6.9"); a stub
/// without it measures nothing on a TD (no TCG2 protocol there), so RTMR2 stays zero and
/// the initrd, where a pqcc guest's measured `init.toml` lives, is not measured at all.
/// The check looks for the GUID's first field and its last eight bytes in the image,
/// where the stub's code holds them (as immediates or as data), so it holds for a
/// backport too; Debian 12's 6.1 kernel has neither, its 6.12 backport both.
pub fn stub_measures_cc(kernel: &[u8]) -> bool {
    const DATA1: [u8; 4] = 0x9675_1a3d_u32.to_le_bytes();
    const TAIL: [u8; 8] = [0xa7, 0x94, 0xed, 0x5d, 0x0e, 0x67, 0xae, 0x6b];
    let has = |p: &[u8]| kernel.windows(p.len()).any(|w| w == p);
    has(&DATA1) && has(&TAIL)
}

/// Whether a kernel version string names Linux older than 6.9, whose EFI stub does not
/// measure the command line and initrd into the CC protocol (RTMR2 then stays zero).
/// [`stub_measures_cc`] looks at the image itself.
pub fn predates_cc_stub(version: &str) -> bool {
    let mut it = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(str::parse::<u32>);
    match (it.next(), it.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) < (6, 9),
        _ => false,
    }
}
