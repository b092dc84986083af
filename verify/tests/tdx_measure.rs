//! TDX launch-measurement prediction (MRTD, RTMR1, RTMR2).
//!
//! No installable TDX measurement calculator exists on crates.io or PyPI to compare
//! with, so these tests check the prediction against a second model written here from
//! the specifications, with a different data path:
//!
//! - MRTD: the test parses the TDVF metadata itself, lays the sections out in a guest
//!   memory image the way QEMU copies them, and runs the SEAMCALL sequence KVM issues
//!   against a model of the TDX module's measurement (which reads the chunk contents
//!   from that memory image, not from the file). Run on a synthetic image and on
//!   Debian's real OVMF build (which carries TDVF metadata), fetched with
//!   `apt-get download ovmf` into `target/ovmf` when missing.
//! - RTMR1/RTMR2: the patched setup-header fields are checked against values worked
//!   out by hand from QEMU's `x86_load_linux`; the register values are re-derived from
//!   the event definitions; the Authenticode hash of a real Debian kernel is compared
//!   with LIEF's independent implementation (PyPI `lief`) when it is installed
//!   (`scripts/test.sh` puts it in `target/pyref`).
//!
//! Each external input that is missing makes its test print why it skipped.

// Test fixtures built with small casts on purpose.
#![allow(clippy::cast_possible_truncation)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pqcc_verify::tee::measure::{
    self, CcEvent, MeasureError, TdxDirectBoot, TdxPageOrder, authenticode_sha384, replay_rtmr,
    tdx_boot_events, tdx_mrtd, tdx_mrtd_with,
};
use sha2::{Digest, Sha384};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

fn guid_le(s: &str) -> [u8; 16] {
    let h: String = s.chars().filter(|c| *c != '-').collect();
    let b = hex::decode(h).unwrap();
    let mut g = [0u8; 16];
    g[..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
    g[4..6].copy_from_slice(&[b[5], b[4]]);
    g[6..8].copy_from_slice(&[b[7], b[6]]);
    g[8..].copy_from_slice(&b[8..]);
    g
}

const TDVF_GUID: &str = "e47a6535-984a-4798-865e-4685a7bf8ec2";
const FOOTER_GUID: &str = "96b582de-1fb2-45f7-baea-a366c55a082d";

/// A synthetic TDVF image (64 KiB at 4 GiB − 64 KiB): a BFV (MR_EXTEND, raw data one
/// page shorter than its memory), a CFV, TEMP_MEM and TD_HOB sections, and a PAGE_AUG
/// section, described by a "TDVF" block the footer GUID table points at.
fn synthetic_tdvf() -> Vec<u8> {
    let len = 16 * 4096;
    let mut img: Vec<u8> = (0..len)
        .map(|i| ((i * 13 + i / 4096) % 251) as u8)
        .collect();
    let base = (1u64 << 32) - len as u64;
    // (data offset, raw size, gpa, mem size, type, attributes)
    let sections: [(u32, u32, u64, u64, u32, u32); 5] = [
        (0x4000, 0x7000, base + 0x4000, 0x8000, 0, 1),
        (0x0000, 0x2000, base, 0x2000, 1, 0),
        (0, 0, 0x80_0000, 0x3000, 3, 0),
        (0, 0, 0x80_9000, 0x1000, 2, 0),
        (0, 0, 0x90_0000, 0x4000, 4, 2),
    ];
    let meta_off = 0x2000;
    let mut meta = b"TDVF".to_vec();
    meta.extend_from_slice(&(16 + 32 * sections.len() as u32).to_le_bytes());
    meta.extend_from_slice(&1u32.to_le_bytes());
    meta.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for (off, raw, gpa, mem, kind, attr) in sections {
        meta.extend_from_slice(&off.to_le_bytes());
        meta.extend_from_slice(&raw.to_le_bytes());
        meta.extend_from_slice(&gpa.to_le_bytes());
        meta.extend_from_slice(&mem.to_le_bytes());
        meta.extend_from_slice(&kind.to_le_bytes());
        meta.extend_from_slice(&attr.to_le_bytes());
    }
    img[meta_off..meta_off + meta.len()].copy_from_slice(&meta);
    let mut table = ((len - meta_off) as u32).to_le_bytes().to_vec();
    table.extend_from_slice(&22u16.to_le_bytes());
    table.extend_from_slice(&guid_le(TDVF_GUID));
    table.extend_from_slice(&((table.len() + 18) as u16).to_le_bytes());
    table.extend_from_slice(&guid_le(FOOTER_GUID));
    let end = len - 32;
    img[end - table.len()..end].copy_from_slice(&table);
    img
}

/// The second MRTD model. Its own TDVF parser (footer table walked from the end), a
/// guest memory image filled as QEMU fills it, KVM's SEAMCALL sequence, and the TDX
/// module's 128-byte measurement records over that memory.
fn model_mrtd(img: &[u8], per_section: bool) -> [u8; 48] {
    // Footer: [entries…][u16 size][footer GUID] ending 32 bytes before the end.
    let foot = img.len() - 32;
    assert_eq!(img[foot - 16..foot], guid_le(FOOTER_GUID));
    let size = u16::from_le_bytes([img[foot - 18], img[foot - 17]]) as usize;
    let mut at = foot - 18;
    let lowest = foot - size;
    let mut tdvf_off = None;
    while at > lowest {
        let esize = u16::from_le_bytes([img[at - 18], img[at - 17]]) as usize;
        if img[at - 16..at] == guid_le(TDVF_GUID) {
            tdvf_off = Some(img.len() - le32(img, at - esize) as usize);
        }
        at -= esize;
    }
    let d = tdvf_off.expect("TDVF entry");
    assert_eq!(&img[d..d + 4], b"TDVF");
    let n = le32(img, d + 12) as usize;

    let mut memory: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut calls: Vec<(bool, u64)> = Vec::new(); // (is_extend, gpa)
    for i in 0..n {
        let s = d + 16 + 32 * i;
        let (off, raw) = (le32(img, s) as usize, le32(img, s + 4) as usize);
        let (gpa, mem) = (le64(img, s + 8), le64(img, s + 16));
        let attr = le32(img, s + 28);
        if attr & 2 != 0 {
            continue; // PAGE_AUG: accepted by the guest later, not measured
        }
        let mut bytes = vec![0u8; mem as usize];
        if attr & 1 != 0 {
            bytes[..raw].copy_from_slice(&img[off..off + raw]);
        }
        for (p, page) in bytes.chunks(4096).enumerate() {
            memory.insert(gpa + p as u64 * 4096, page.to_vec());
        }
        let pages: Vec<u64> = (0..mem / 4096).map(|p| gpa + p * 4096).collect();
        let extends = |p: u64| (0..16).map(move |c| (true, p + c * 256));
        if per_section {
            calls.extend(pages.iter().map(|&p| (false, p)));
            if attr & 1 != 0 {
                calls.extend(pages.iter().flat_map(|&p| extends(p)));
            }
        } else {
            for &p in &pages {
                calls.push((false, p));
                if attr & 1 != 0 {
                    calls.extend(extends(p));
                }
            }
        }
    }
    let record = |op: &[u8], gpa: u64| {
        let mut r = vec![0u8; 128];
        r[..op.len()].copy_from_slice(op);
        r[16..24].copy_from_slice(&gpa.to_le_bytes());
        r
    };
    let mut td = Sha384::new();
    for (is_extend, gpa) in calls {
        if is_extend {
            td.update(record(b"MR.EXTEND", gpa));
            let page = &memory[&(gpa & !0xfff)];
            let o = (gpa & 0xfff) as usize;
            td.update(&page[o..o + 256]);
        } else {
            td.update(record(b"MEM.PAGE.ADD", gpa));
        }
    }
    td.finalize().into()
}

#[test]
fn mrtd_matches_the_second_model_on_a_synthetic_image() {
    let img = synthetic_tdvf();
    let per_page = tdx_mrtd(&img).unwrap();
    assert_eq!(per_page, model_mrtd(&img, false));
    let per_section = tdx_mrtd_with(&img, TdxPageOrder::PerSection).unwrap();
    assert_eq!(per_section, model_mrtd(&img, true));
    assert_ne!(per_page, per_section, "the page order matters");
    // Every BFV byte counts; CFV contents do not (only its page GPAs).
    let mut bfv = img.clone();
    bfv[0x4000 + 77] ^= 1;
    assert_ne!(tdx_mrtd(&bfv).unwrap(), per_page);
    let mut cfv = img.clone();
    cfv[0x100] ^= 1;
    assert_eq!(tdx_mrtd(&cfv).unwrap(), per_page);
}

#[test]
fn tdvf_faults_are_named() {
    let img = synthetic_tdvf();
    let meta = 0x2000 + 16;
    // BFV raw data beyond the image.
    let mut bad = img.clone();
    bad[meta..meta + 4].copy_from_slice(&0xf000u32.to_le_bytes());
    assert_eq!(
        tdx_mrtd(&bad),
        Err(MeasureError::Ovmf("TDVF section outside the image"))
    );
    let mut bad = img.clone();
    bad[meta + 8] = 1; // GPA not page aligned
    assert_eq!(
        tdx_mrtd(&bad),
        Err(MeasureError::Ovmf("TDVF section not page aligned"))
    );
    let mut bad = img.clone();
    bad[meta + 28] = 4; // unknown attribute
    assert!(matches!(tdx_mrtd(&bad), Err(MeasureError::Ovmf(_))));
    let mut bad = img.clone();
    bad[0x2000 + 12..0x2000 + 16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(tdx_mrtd(&bad), Err(MeasureError::Ovmf(_))));
    assert_eq!(tdx_mrtd(&[0u8; 8192]), Err(MeasureError::NoTdxMetadata));
    // Random damage to the metadata and footer never panics.
    let mut x = 0x2545_f491_u64;
    for _ in 0..300 {
        let mut o = img.clone();
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = if x & 1 == 0 {
                0x2000 + (x >> 8) as usize % 176
            } else {
                o.len() - 80 + (x >> 8) as usize % 80
            };
            o[i] = (x >> 32) as u8;
        }
        let _ = tdx_mrtd(&o);
        let _ = tdx_mrtd_with(&o, TdxPageOrder::PerSection);
    }
}

/// A bzImage stand-in: a setup header (boot protocol 2.15, loaded high, may load the
/// initrd above 4 GiB) inside a PE32+ image with one section.
fn fake_bzimage() -> Vec<u8> {
    let mut k = vec![0u8; 0x4000];
    k[..2].copy_from_slice(b"MZ");
    k[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    k[0x80..0x84].copy_from_slice(b"PE\0\0");
    let coff = 0x84;
    k[coff + 2..coff + 4].copy_from_slice(&1u16.to_le_bytes());
    k[coff + 16..coff + 18].copy_from_slice(&(112u16 + 6 * 8).to_le_bytes());
    let opt = coff + 20;
    k[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
    k[opt + 60..opt + 64].copy_from_slice(&0x1000u32.to_le_bytes());
    k[opt + 108..opt + 112].copy_from_slice(&6u32.to_le_bytes());
    let sec = opt + 112 + 48;
    k[sec + 16..sec + 20].copy_from_slice(&0x3000u32.to_le_bytes());
    k[sec + 20..sec + 24].copy_from_slice(&0x1000u32.to_le_bytes());
    k[0x1f1] = 7; // setup_sects
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    k[0x211] = 0x01; // LOADED_HIGH
    k[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    k[0x236..0x238].copy_from_slice(&0x7fu16.to_le_bytes());
    for (i, b) in k[0x1000..].iter_mut().enumerate() {
        *b = (i % 239) as u8;
    }
    k
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    le32(b, o)
}

#[test]
fn qemu_header_patch_matches_hand_worked_values() {
    let k = fake_bzimage();
    let mib = 1u64 << 20;
    // 16 GiB: 2 GiB below 4 GiB; initrd_max = 2 GiB − 0x28000 − 1 = 0x7ffd7fff.
    let p = measure::tdx::qemu_patched_kernel(&k, Some(0x10_0000), None, 16 << 30).unwrap();
    assert_eq!(p[0x210], 0xb0, "type_of_loader");
    assert_eq!(p[0x211], 0x81, "CAN_USE_HEAP");
    assert_eq!(
        u16::from_le_bytes([p[0x224], p[0x225]]),
        0xfe00,
        "heap_end_ptr"
    );
    assert_eq!(u32_at(&p, 0x228), 0x2_0000, "cmd_line_ptr");
    assert_eq!(u32_at(&p, 0x218), 0x7fed_7000, "ramdisk_image");
    assert_eq!(u32_at(&p, 0x21c), 0x10_0000, "ramdisk_size");
    let changed: Vec<usize> = (0..k.len()).filter(|&i| k[i] != p[i]).collect();
    assert!(
        changed.iter().all(|&i| (0x210..0x230).contains(&i)),
        "{changed:x?}"
    );
    // 1 GiB: all below 4 GiB; 0x3ffd7fff − 3 MiB rounded down to a page.
    let p = measure::tdx::qemu_patched_kernel(&k, Some(3 * mib as usize), None, 1 << 30).unwrap();
    assert_eq!(u32_at(&p, 0x218), 0x3fcd_7000);
    // 2.75 GiB and more all place it at the same address.
    let at = |m: u64| {
        u32_at(
            &measure::tdx::qemu_patched_kernel(&k, Some(4096), None, m).unwrap(),
            0x218,
        )
    };
    assert_eq!(at(0xb000_0000), at(64 << 30));
    assert_ne!(at(0xb000_0000), at(0xa000_0000));
    // Without XLF_CAN_BE_LOADED_ABOVE_4G the header's initrd_addr_max rules.
    let mut k2 = k.clone();
    k2[0x236] = 0x7d;
    k2[0x22c..0x230].copy_from_slice(&0x37ff_ffffu32.to_le_bytes());
    let p = measure::tdx::qemu_patched_kernel(&k2, Some(4096), None, 16 << 30).unwrap();
    assert_eq!(u32_at(&p, 0x218), 0x37ff_e000);
    // Refused: no setup header, old protocol, vga=, an initrd larger than memory.
    let e = |r: Result<Vec<u8>, MeasureError>| r.unwrap_err().to_string();
    assert!(
        e(measure::tdx::qemu_patched_kernel(
            &k[..0x200],
            None,
            None,
            1 << 30
        ))
        .contains("HdrS")
    );
    let mut old = k.clone();
    old[0x206] = 0x01;
    assert!(e(measure::tdx::qemu_patched_kernel(&old, None, None, 1 << 30)).contains("2.02"));
    assert!(
        e(measure::tdx::qemu_patched_kernel(
            &k,
            None,
            Some("vga=791"),
            1 << 30
        ))
        .contains("vga=")
    );
    assert!(
        e(measure::tdx::qemu_patched_kernel(
            &k,
            Some(1 << 30),
            None,
            1 << 30
        ))
        .contains("initrd")
    );
}

fn extend(r: [u8; 48], d: &[u8]) -> [u8; 48] {
    let mut h = Sha384::new();
    h.update(r);
    h.update(Sha384::digest(d));
    h.finalize().into()
}

#[test]
fn rtmrs_replay_the_documented_events() {
    let k = fake_bzimage();
    let initrd: Vec<u8> = (0..50_000u32).map(|i| (i % 241) as u8).collect();
    let cmdline = "console=ttyS0 quiet panic=-1";
    let boot = TdxDirectBoot {
        kernel: &k,
        initrd: Some(&initrd),
        cmdline: Some(cmdline),
        memory: 16 << 30,
    };
    let ev = tdx_boot_events(&boot).unwrap();
    let patched =
        measure::tdx::qemu_patched_kernel(&k, Some(initrd.len()), Some(cmdline), 16 << 30).unwrap();
    let kernel_hash = authenticode_sha384(&patched).unwrap();
    let z = [0u8; 48];
    let mut r1 = {
        let mut h = Sha384::new();
        h.update(z);
        h.update(kernel_hash);
        <[u8; 48]>::from(h.finalize())
    };
    for d in [
        b"Calling EFI Application from Boot Option".as_slice(),
        &[0, 0, 0, 0],
        b"Exit Boot Services Invocation",
        b"Exit Boot Services Returned with Success",
    ] {
        r1 = extend(r1, d);
    }
    assert_eq!(replay_rtmr(&ev, 1), r1);
    let utf16: Vec<u8> = "console=ttyS0 quiet panic=-1 initrd=initrd\0"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let r2 = extend(extend(z, &utf16), &initrd);
    assert_eq!(replay_rtmr(&ev, 2), r2);
    assert_eq!(replay_rtmr(&ev, 0), z, "RTMR0 is not predicted");

    // What changes which register.
    let with = |f: &dyn Fn(&mut TdxDirectBoot<'_>)| {
        let mut b = boot;
        f(&mut b);
        let e = tdx_boot_events(&b).unwrap();
        (replay_rtmr(&e, 1), replay_rtmr(&e, 2))
    };
    let (m1, m2) = with(&|b| b.memory = 1 << 30);
    assert!(
        m1 != r1 && m2 == r2,
        "memory size moves the initrd: RTMR1 only"
    );
    let (c1, c2) = with(&|b| b.cmdline = Some("console=ttyS0"));
    assert!(c1 == r1 && c2 != r2, "command line: RTMR2 only");
    let other: Vec<u8> = initrd.iter().map(|b| b ^ 1).collect();
    let (i1, i2) = {
        let mut b = boot;
        b.initrd = Some(&other);
        let e = tdx_boot_events(&b).unwrap();
        (replay_rtmr(&e, 1), replay_rtmr(&e, 2))
    };
    assert!(
        i1 == r1 && i2 != r2,
        "initrd contents, same size: RTMR2 only"
    );
    // No initrd and no command line: no RTMR2 events at all.
    let (_, n2) = with(&|b| {
        b.initrd = None;
        b.cmdline = None;
    });
    assert_eq!(n2, z);
    // Non-ASCII command-line bytes are widened one by one (OVMF's %a conversion).
    let e = tdx_boot_events(&TdxDirectBoot {
        cmdline: Some("x=\u{e9}"),
        initrd: None,
        ..boot
    })
    .unwrap();
    let want = Sha384::digest([b'x', 0, b'=', 0, 0xc3, 0, 0xa9, 0, 0, 0]);
    assert_eq!(
        e.iter().find(|e| e.rtmr == 2).unwrap().digest,
        want.as_slice()
    );
    // A kernel that is not PE is refused.
    let mut not_pe = k.clone();
    not_pe[0] = 0;
    assert!(matches!(
        tdx_boot_events(&TdxDirectBoot {
            kernel: &not_pe,
            ..boot
        }),
        Err(MeasureError::Kernel(_))
    ));
    assert!(measure::tdx::predates_cc_stub(
        "6.1.0-41-amd64 (debian-kernel@lists.debian.org)"
    ));
    assert!(!measure::tdx::predates_cc_stub("6.12.9 #1 SMP"));
    assert!(!measure::tdx::predates_cc_stub("7.0.1"));
    assert_eq!(measure::tdx::bzimage_version(&k), None, "no version string");
    let names: Vec<&str> = ev.iter().map(CcEvent::event_type_name).collect();
    assert_eq!(
        names,
        [
            "EV_EFI_BOOT_SERVICES_APPLICATION",
            "EV_EFI_ACTION",
            "EV_SEPARATOR",
            "EV_EVENT_TAG",
            "EV_EVENT_TAG",
            "EV_EFI_ACTION",
            "EV_EFI_ACTION"
        ]
    );
}

/// Debian's OVMF.fd (OvmfPkgX64 with TDX support): `PQCC_TDX_OVMF`, else
/// `target/ovmf/usr/share/ovmf/OVMF.fd`, fetched with `apt-get download ovmf` once.
fn debian_ovmf() -> Result<Vec<u8>, String> {
    if let Some(p) = std::env::var_os("PQCC_TDX_OVMF") {
        return std::fs::read(&p).map_err(|e| format!("PQCC_TDX_OVMF: {e}"));
    }
    let dir = repo().join("target/ovmf");
    let fd = dir.join("usr/share/ovmf/OVMF.fd");
    if !fd.exists() {
        let deb = dir.join("deb");
        std::fs::create_dir_all(&deb).map_err(|e| e.to_string())?;
        let ok = Command::new("apt-get")
            .args(["download", "-q", "ovmf"])
            .current_dir(&deb)
            .output()
            .is_ok_and(|o| o.status.success());
        let file = std::fs::read_dir(&deb)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"));
        let (true, Some(file)) = (ok, file) else {
            return Err("`apt-get download ovmf` failed (no network or apt lists?)".into());
        };
        let x = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&file)
            .arg(&dir)
            .status();
        if !x.is_ok_and(|s| s.success()) {
            return Err("dpkg-deb -x failed".into());
        }
    }
    std::fs::read(&fd).map_err(|e| format!("{}: {e}", fd.display()))
}

/// Debian 12's ovmf 2022.11-6+deb12u2 OVMF.fd (SHA-256) and its MRTD per page order.
const DEBIAN_OVMF_SHA256: &str = "7b456907dd0786d415999e801a1ac4637b8ed4d7cf5378cfc6edbe5e574dd773";

#[test]
fn mrtd_of_debian_ovmf_matches_the_second_model() {
    let img = match debian_ovmf() {
        Ok(i) => i,
        Err(why) => {
            eprintln!("Debian OVMF unavailable, real-firmware MRTD check skipped: {why}");
            return;
        }
    };
    let sections = measure::tdvf_sections(&img).unwrap();
    assert!(
        sections
            .iter()
            .any(|s| s.kind_name() == "BFV" && s.attributes & 1 != 0)
    );
    let per_page = tdx_mrtd(&img).unwrap();
    let per_section = tdx_mrtd_with(&img, TdxPageOrder::PerSection).unwrap();
    assert_eq!(per_page, model_mrtd(&img, false));
    assert_eq!(per_section, model_mrtd(&img, true));
    let sha = hex::encode(sha2::Sha256::digest(&img));
    println!("Debian OVMF.fd sha256 {sha}");
    println!("  MRTD per-page    {}", hex::encode(per_page));
    println!("  MRTD per-section {}", hex::encode(per_section));
    if sha == DEBIAN_OVMF_SHA256 {
        assert_eq!(hex::encode(per_page), DEBIAN_MRTD_PER_PAGE);
        assert_eq!(hex::encode(per_section), DEBIAN_MRTD_PER_SECTION);
    }
    // OVMF_CODE.fd alone is not a TDVF image: its metadata describes the combined image.
    let code = repo().join("target/ovmf/usr/share/OVMF/OVMF_CODE.fd");
    if let Ok(code) = std::fs::read(code) {
        assert_eq!(
            tdx_mrtd(&code),
            Err(MeasureError::Ovmf("TDVF section outside the image"))
        );
    }
}

const DEBIAN_MRTD_PER_SECTION: &str = "acccbcc870a381adab0d3919d90a7f268ac3b0364771f202ed4bb4e892d045b33db3b32e6924cba830a724eed443f7e1";
const DEBIAN_MRTD_PER_PAGE: &str = "4c7206f0f483c524f12c366c711e9049030a8d47c471ee5aa9c4999a08de4057fb887fed0744d5631a212967fb231c47";

/// A kernel with an EFI stub: `PQCC_TEST_KERNEL`, else the Debian kernel
/// `scripts/guest-kernel.sh` caches in `target/guest-kernel`.
fn real_kernel() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PQCC_TEST_KERNEL") {
        return Some(PathBuf::from(p));
    }
    let current = repo().join("target/guest-kernel/current/vmlinuz");
    if current.is_file() {
        return Some(current);
    }
    std::fs::read_dir(repo().join("target/guest-kernel"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("vmlinuz"))
        .find(|p| p.is_file())
}

/// Issue 29: whether a kernel's EFI stub measures the initrd into RTMR2 is read from the
/// image (the CC measurement protocol's GUID in the stub), and agrees with the version
/// each Debian kernel cached in target/guest-kernel names (6.1: no, 6.12: yes; Linux 6.9
/// added it). The guest kernel the tests and the demo boot must measure it.
#[test]
fn real_kernels_stub_measures_the_initrd_as_their_version_says() {
    let Ok(dirs) = std::fs::read_dir(repo().join("target/guest-kernel")) else {
        eprintln!("no target/guest-kernel: real-kernel check skipped");
        return;
    };
    for p in dirs
        .filter_map(Result::ok)
        .map(|e| e.path().join("vmlinuz"))
        .filter(|p| p.is_file())
    {
        let k = std::fs::read(&p).unwrap();
        let version = measure::tdx::bzimage_version(&k).expect("version string");
        let measures = measure::tdx::stub_measures_cc(&k);
        println!("kernel {version}: EFI stub measures into the CC protocol: {measures}");
        assert_eq!(
            measures,
            !measure::tdx::predates_cc_stub(version),
            "{version}"
        );
    }
    if let Some(current) = real_kernel() {
        let k = std::fs::read(&current).unwrap();
        assert!(
            measure::tdx::stub_measures_cc(&k),
            "the guest kernel {} does not measure its initrd",
            current.display()
        );
    }
}

/// LIEF (PyPI `lief`, a C++ PE parser): from `target/pyref` (scripts/test.sh) or the
/// Python path.
fn lief_authenticode(file: &Path) -> Result<String, String> {
    let script = "import sys, lief\n\
        pe = lief.PE.parse(sys.argv[1])\n\
        print('AH', pe.authentihash(lief.PE.ALGORITHMS.SHA_384).hex())\n";
    let out = Command::new("python3")
        .env("PYTHONPATH", repo().join("target/pyref"))
        .args(["-c", script])
        .arg(file)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().find_map(|l| l.strip_prefix("AH ")) {
        Some(h) if out.status.success() => Ok(h.trim().to_owned()),
        _ => Err(format!(
            "lief not usable: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
    }
}

#[test]
fn real_kernel_authenticode_matches_lief() {
    let Some(path) = real_kernel() else {
        eprintln!("no kernel (PQCC_TEST_KERNEL or target/guest-kernel): real-kernel check skipped");
        return;
    };
    let k = std::fs::read(&path).unwrap();
    let ours = hex::encode(authenticode_sha384(&k).unwrap());
    let version = measure::tdx::bzimage_version(&k).expect("version string");
    println!("kernel version {version}");
    assert!(version.chars().next().is_some_and(|c| c.is_ascii_digit()));
    // Same for the QEMU-patched kernel, which is what OVMF measures.
    let patched =
        measure::tdx::qemu_patched_kernel(&k, Some(1 << 20), Some("console=ttyS0"), 16 << 30)
            .unwrap();
    let dir = std::env::temp_dir().join(format!("pqcc-tdx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pf = dir.join("patched");
    std::fs::write(&pf, &patched).unwrap();
    let ours_patched = hex::encode(authenticode_sha384(&patched).unwrap());
    println!("kernel {}: authenticode sha384 {ours}", path.display());
    match (lief_authenticode(&path), lief_authenticode(&pf)) {
        (Ok(theirs), Ok(theirs_patched)) => {
            println!("  lief    {theirs}");
            assert_eq!(ours, theirs);
            assert_eq!(ours_patched, theirs_patched);
            assert_ne!(ours, ours_patched);
        }
        (Err(why), _) | (_, Err(why)) => {
            eprintln!("LIEF cross-check skipped: {why}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
