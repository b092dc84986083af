//! The Authenticode (PE/COFF image) hash, computed the way UEFI firmware measures an
//! EFI application before starting it (PE/COFF spec, "Calculating the PE Image Hash";
//! EDK II `DxeTpm2MeasureBootLib`, which OVMF uses for TPM and TDX measured boot):
//!
//! 1. the headers up to `SizeOfHeaders`, leaving out the `CheckSum` field and the
//!    certificate-table data directory entry (when the optional header has one);
//! 2. every section with raw data, in ascending `PointerToRawData` order;
//! 3. whatever follows the last byte hashed so far, less the certificate table's size.
//!
//! Parsing is strict: a field that points outside the file, overlapping or truncated
//! structures, or a certificate table larger than the trailing data are errors.

use sha2::{Digest, Sha384};

/// Section header size.
const SECTION_HEADER: usize = 40;
/// Index of the certificate table (IMAGE_DIRECTORY_ENTRY_SECURITY).
const SECURITY_DIR: usize = 4;

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off.checked_add(2)?)?
        .try_into()
        .ok()
        .map(u16::from_le_bytes)
}

fn u32_at(b: &[u8], off: usize) -> Option<usize> {
    b.get(off..off.checked_add(4)?)?
        .try_into()
        .ok()
        .map(u32::from_le_bytes)
        .and_then(|v| usize::try_from(v).ok())
}

/// The byte ranges of `pe` that the Authenticode hash covers, in hashing order.
fn hashed_ranges(pe: &[u8]) -> Result<Vec<(usize, usize)>, &'static str> {
    if pe.get(..2) != Some(b"MZ".as_slice()) {
        return Err("no MZ header (not a PE/COFF image)");
    }
    let nt = u32_at(pe, 0x3c).ok_or("truncated DOS header")?;
    if pe.get(nt..nt.checked_add(4).ok_or("e_lfanew")?) != Some(b"PE\0\0".as_slice()) {
        return Err("no PE signature at e_lfanew");
    }
    let coff = nt + 4;
    let nsections = usize::from(u16_at(pe, coff + 2).ok_or("truncated COFF header")?);
    let opt_size = usize::from(u16_at(pe, coff + 16).ok_or("truncated COFF header")?);
    let opt = coff + 20;
    let (dirs_at, nrva_at) = match u16_at(pe, opt).ok_or("truncated optional header")? {
        0x10b => (96, 92),   // PE32
        0x20b => (112, 108), // PE32+
        _ => return Err("unknown optional header magic"),
    };
    if opt_size < dirs_at {
        return Err("optional header too small");
    }
    let nrva = u32_at(pe, opt + nrva_at).ok_or("truncated optional header")?;
    if nrva > (opt_size - dirs_at) / 8 {
        return Err("data directories exceed the optional header");
    }
    let size_of_headers = u32_at(pe, opt + 60).ok_or("truncated optional header")?;
    let sections_at = opt + opt_size;
    let sections_end = nsections
        .checked_mul(SECTION_HEADER)
        .and_then(|n| n.checked_add(sections_at))
        .ok_or("section table size")?;
    if sections_end > size_of_headers || size_of_headers > pe.len() {
        return Err("SizeOfHeaders does not cover the headers or exceeds the file");
    }
    let checksum = opt + 64;
    let mut ranges = vec![(0, checksum)];
    let cert_size = if nrva > SECURITY_DIR {
        let cert_dir = opt + dirs_at + SECURITY_DIR * 8;
        ranges.push((checksum + 4, cert_dir));
        ranges.push((cert_dir + 8, size_of_headers));
        u32_at(pe, cert_dir + 4).ok_or("truncated data directory")?
    } else {
        ranges.push((checksum + 4, size_of_headers));
        0
    };

    let mut sections = Vec::with_capacity(nsections);
    for i in 0..nsections {
        let h = sections_at + i * SECTION_HEADER;
        let raw_size = u32_at(pe, h + 16).ok_or("truncated section header")?;
        let raw_ptr = u32_at(pe, h + 20).ok_or("truncated section header")?;
        if raw_size == 0 {
            continue;
        }
        let end = raw_ptr
            .checked_add(raw_size)
            .filter(|&e| e <= pe.len())
            .ok_or("section raw data outside the file")?;
        sections.push((raw_ptr, end));
    }
    // Stable sort: equal pointers keep the section-table order, as EDK II's insertion
    // sort does.
    sections.sort_by_key(|&(start, _)| start);
    let mut hashed = size_of_headers;
    for &(start, end) in &sections {
        ranges.push((start, end));
        hashed = hashed
            .checked_add(end - start)
            .ok_or("section sizes overflow")?;
    }
    if pe.len() > hashed {
        let trailing_end = pe
            .len()
            .checked_sub(cert_size)
            .filter(|&e| e >= hashed)
            .ok_or("certificate table larger than the data after the sections")?;
        ranges.push((hashed, trailing_end));
    }
    Ok(ranges)
}

/// The SHA-384 Authenticode hash of a PE/COFF image, as UEFI firmware measures it
/// (`EV_EFI_BOOT_SERVICES_APPLICATION`). The error names what is malformed.
pub fn authenticode_sha384(pe: &[u8]) -> Result<[u8; 48], &'static str> {
    let mut h = Sha384::new();
    for (start, end) in hashed_ranges(pe)? {
        h.update(pe.get(start..end).ok_or("range outside the file")?);
    }
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PE32+ image: headers (0x200), two sections, optional trailing data and a
    /// certificate table.
    fn image(trailing: &[u8], cert: &[u8], nrva: u32) -> Vec<u8> {
        let mut pe = vec![0u8; 0x200];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        pe[coff + 2..coff + 4].copy_from_slice(&2u16.to_le_bytes());
        pe[coff + 16..coff + 18].copy_from_slice(&(112u16 + 16 * 8).to_le_bytes());
        let opt = coff + 20;
        pe[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        pe[opt + 60..opt + 64].copy_from_slice(&0x200u32.to_le_bytes());
        pe[opt + 64..opt + 68].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        pe[opt + 108..opt + 112].copy_from_slice(&nrva.to_le_bytes());
        let sec = opt + 112 + 16 * 8;
        // Section table order is the reverse of file order.
        for (i, (ptr, size)) in [(0x300u32, 0x100u32), (0x200, 0x100)].iter().enumerate() {
            let h = sec + i * 40;
            pe[h + 16..h + 20].copy_from_slice(&size.to_le_bytes());
            pe[h + 20..h + 24].copy_from_slice(&ptr.to_le_bytes());
        }
        pe.extend((0..0x200u32).map(|i| (i % 251) as u8));
        pe.extend_from_slice(trailing);
        if !cert.is_empty() {
            let cert_dir = opt + 112 + 4 * 8;
            let at = u32::try_from(pe.len()).unwrap();
            pe[cert_dir..cert_dir + 4].copy_from_slice(&at.to_le_bytes());
            let len = u32::try_from(cert.len()).unwrap();
            pe[cert_dir + 4..cert_dir + 8].copy_from_slice(&len.to_le_bytes());
            pe.extend_from_slice(cert);
        }
        pe
    }

    #[test]
    fn excluded_fields_do_not_change_the_hash() {
        let base = authenticode_sha384(&image(b"tail", b"", 16)).unwrap();
        let signed = authenticode_sha384(&image(b"tail", b"certificate blob", 16)).unwrap();
        assert_eq!(base, signed, "certificate table and its directory entry");
        let mut other = image(b"tail", b"", 16);
        other[0x84 + 20 + 64] ^= 0xff; // CheckSum
        assert_eq!(base, authenticode_sha384(&other).unwrap());
        let mut other = image(b"tail", b"", 16);
        other[0x250] ^= 1; // section data
        assert_ne!(base, authenticode_sha384(&other).unwrap());
        assert_ne!(
            base,
            authenticode_sha384(&image(b"tail2", b"", 16)).unwrap(),
            "trailing data is hashed"
        );
    }

    #[test]
    fn matches_the_spelled_out_preimage() {
        let pe = image(b"xyz", b"cert", 16);
        let opt = 0x84 + 20;
        let cert_dir = opt + 112 + 32;
        let mut pre = Vec::new();
        pre.extend_from_slice(&pe[..opt + 64]);
        pre.extend_from_slice(&pe[opt + 68..cert_dir]);
        pre.extend_from_slice(&pe[cert_dir + 8..0x200]);
        pre.extend_from_slice(&pe[0x200..0x400]); // sections, sorted
        pre.extend_from_slice(b"xyz");
        let want: [u8; 48] = Sha384::digest(&pre).into();
        assert_eq!(authenticode_sha384(&pe).unwrap(), want);
        // Without a security directory entry only the checksum is left out.
        let pe = image(b"", b"", 4);
        let mut pre = pe[..opt + 64].to_vec();
        pre.extend_from_slice(&pe[opt + 68..]);
        let want: [u8; 48] = Sha384::digest(&pre).into();
        assert_eq!(authenticode_sha384(&pe).unwrap(), want);
    }

    #[test]
    fn malformed_images_are_errors() {
        assert!(authenticode_sha384(b"").is_err());
        assert!(authenticode_sha384(b"MZ").is_err());
        let good = image(b"", b"cert", 16);
        let mut bad = good.clone();
        bad[0x80] = b'X';
        assert_eq!(
            authenticode_sha384(&bad),
            Err("no PE signature at e_lfanew")
        );
        let mut bad = good.clone();
        bad[0x84 + 20] = 0x0c;
        assert!(authenticode_sha384(&bad).is_err());
        // A section past the end of the file.
        let mut bad = good.clone();
        let h = 0x84 + 20 + 112 + 128;
        bad[h + 16..h + 20].copy_from_slice(&0x10_0000u32.to_le_bytes());
        assert_eq!(
            authenticode_sha384(&bad),
            Err("section raw data outside the file")
        );
        // A certificate table claiming more than the file holds.
        let mut bad = good.clone();
        let cert_dir = 0x84 + 20 + 112 + 32;
        bad[cert_dir + 4..cert_dir + 8].copy_from_slice(&0x1000u32.to_le_bytes());
        assert!(authenticode_sha384(&bad).is_err());
        // Truncations and random damage never panic.
        for n in 0..good.len() {
            let _ = authenticode_sha384(&good[..n]);
        }
        let mut x = 0x9e37_79b9_u64;
        for _ in 0..3000 {
            let mut b = good.clone();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = usize::try_from(x % 0x200).unwrap();
            b[i] = x.to_le_bytes()[5];
            let _ = authenticode_sha384(&b);
        }
    }
}
