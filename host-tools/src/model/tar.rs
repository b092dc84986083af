//! The reproducible tar format of a model archive: what GNU tar 1.34 writes with
//!
//! ```text
//! LC_ALL=C tar -cf OUT -C MODEL_DIR . --sort=name --format=posix \
//!     --pax-option='exthdr.name=%d/PaxHeaders/%f' --pax-option='delete=atime,delete=ctime' \
//!     --clamp-mtime --mtime=@0 --numeric-owner --owner=0 --group=0 --mode='go+u,go-w'
//! ```
//!
//! then zero-padded with `4096 - size % 4096` bytes (a whole 4 KiB block when the tar
//! is already aligned). The details, each checked against GNU tar's output in the
//! tests:
//!
//! - Entries in depth-first order, each directory's children sorted by the bytes of
//!   their names (`strcmp`); names start with `./`, directories end with `/`.
//! - Every header is ustar (`ustar\0`, `00`) with uid, gid and mtime 0, empty user and
//!   group names, device numbers `0000000`, the mode after `go+u,go-w`.
//! - A name longer than 100 bytes, or with any non-ASCII byte, gets a pax `x` header
//!   named `<dir>/PaxHeaders/<base>` (cut to 100 bytes) with a `path` record; the ustar
//!   name field then holds the name's first 100 bytes. A file larger than 8 GiB - 1
//!   gets a `size` record and a zero size field. The `x` header has mode 0644, mtime 0
//!   and empty device fields.
//! - The archive ends with two zero blocks and is padded with zeros to a multiple of
//!   10240 bytes (GNU tar's default record of 20 blocks).
//!
//! Since every header depends only on names, modes and sizes, the size of the archive
//! is known before a byte of content is read ([`archive_len`]).

/// Size of a tar block.
pub const BLOCK: usize = 512;
/// GNU tar's default record size (blocking factor 20): the archive is a multiple of it.
pub const RECORD: u64 = 10240;
/// The dm-verity data block size the archive is padded to.
pub const PAD_TO: u64 = 4096;
/// The largest size the 12-byte octal size field holds (8 GiB - 1).
pub const MAX_OCTAL_SIZE: u64 = 0o77777777777;

/// The kind of an archive entry (the only two kinds a model archive holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory (typeflag `5`).
    Dir,
    /// A regular file (typeflag `0`).
    File,
}

/// One entry's header data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name as archived: `./`, `./dir/`, `./dir/file`.
    pub name: Vec<u8>,
    /// Directory or regular file.
    pub kind: Kind,
    /// The mode as stored, already normalised with [`normalise_mode`].
    pub mode: u32,
    /// The content length (0 for a directory).
    pub size: u64,
}

/// GNU tar's `--mode='go+u,go-w'`: group and others get the owner's bits, then lose
/// write. Set-id and sticky bits are kept; the file type is dropped.
pub fn normalise_mode(mode: u32) -> u32 {
    let m = mode & 0o7777;
    let u = (m >> 6) & 7;
    let g = (((m >> 3) & 7) | u) & !2;
    let o = ((m & 7) | u) & !2;
    (m & 0o7700) | (g << 3) | o
}

/// Whether the name needs a pax `path` record.
fn needs_path_record(name: &[u8]) -> bool {
    name.len() > 100 || !name.is_ascii()
}

/// The name of the pax header of an entry: `%d/PaxHeaders/%f` of its name without the
/// trailing slash, cut to 100 bytes.
fn pax_header_name(name: &[u8]) -> Vec<u8> {
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    let (dir, base) = match trimmed.iter().rposition(|&c| c == b'/') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (&b"."[..], trimmed),
    };
    let dir = if dir.is_empty() { &b"/"[..] } else { dir };
    let mut out = Vec::with_capacity(dir.len() + base.len() + 12);
    out.extend_from_slice(dir);
    out.extend_from_slice(b"/PaxHeaders/");
    out.extend_from_slice(base);
    out
}

/// One pax record `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len != rest + decimal_digits(len) {
        len = rest + decimal_digits(len);
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn decimal_digits(n: usize) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// The pax records of an entry, or empty when it needs none.
fn pax_records(h: &Header) -> Vec<u8> {
    let mut rec = Vec::new();
    if needs_path_record(&h.name) {
        pax_record(&mut rec, "path", &h.name);
    }
    if h.size > MAX_OCTAL_SIZE {
        pax_record(&mut rec, "size", h.size.to_string().as_bytes());
    }
    rec
}

/// Writes `value` as zero-padded octal in `field[..len-1]` and a NUL at the end.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    // Callers only pass values that fit (checked above or bounded by construction).
    let s = &s.as_bytes()[s.len().saturating_sub(digits)..];
    field[..digits].copy_from_slice(s);
    field[digits] = 0;
}

/// Copies up to `field.len()` bytes of `s`; the rest of the field stays zero.
fn copy_str(field: &mut [u8], s: &[u8]) {
    let n = s.len().min(field.len());
    field[..n].copy_from_slice(&s[..n]);
}

/// Fills in the checksum: the sum of all header bytes with the checksum field as
/// spaces, as six octal digits, NUL, space.
fn checksum(block: &mut [u8; BLOCK]) {
    block[148..156].fill(b' ');
    let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
    octal(&mut block[148..155], sum);
    block[155] = b' ';
}

fn ustar_block(
    name: &[u8],
    mode: u32,
    size: u64,
    typeflag: u8,
    device_fields: bool,
) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    copy_str(&mut b[0..100], name);
    octal(&mut b[100..108], u64::from(mode));
    octal(&mut b[108..116], 0);
    octal(&mut b[116..124], 0);
    octal(&mut b[124..136], size);
    octal(&mut b[136..148], 0);
    b[156] = typeflag;
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    if device_fields {
        octal(&mut b[329..337], 0);
        octal(&mut b[337..345], 0);
    }
    checksum(&mut b);
    b
}

/// The header blocks of an entry: an optional pax `x` header and its records, then
/// the ustar header. A multiple of 512 bytes.
pub fn header_bytes(h: &Header) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCK);
    let rec = pax_records(h);
    if !rec.is_empty() {
        let xname = pax_header_name(&h.name);
        out.extend_from_slice(&ustar_block(&xname, 0o644, rec.len() as u64, b'x', false));
        out.extend_from_slice(&rec);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }
    let (size_field, typeflag) = match h.kind {
        Kind::Dir => (0, b'5'),
        Kind::File if h.size > MAX_OCTAL_SIZE => (0, b'0'),
        Kind::File => (h.size, b'0'),
    };
    out.extend_from_slice(&ustar_block(&h.name, h.mode, size_field, typeflag, true));
    out
}

/// Length of the header blocks of an entry (without building them).
pub fn header_len(h: &Header) -> u64 {
    let rec = pax_records(h).len() as u64;
    let pax = if rec == 0 {
        0
    } else {
        BLOCK as u64 + rec.next_multiple_of(BLOCK as u64)
    };
    pax + BLOCK as u64
}

/// Bytes an entry occupies: headers, then content padded to 512 bytes.
pub fn entry_len(h: &Header) -> u64 {
    header_len(h) + h.size.next_multiple_of(BLOCK as u64)
}

/// Length of GNU tar's output (two zero blocks at the end, padded to 10240 bytes).
pub fn tar_len(headers: &[Header]) -> u64 {
    let body: u64 = headers.iter().map(entry_len).sum();
    (body + 2 * BLOCK as u64).next_multiple_of(RECORD)
}

/// The 4 KiB padding the recipe appends: `4096 - size % 4096`, so a whole block of
/// zeros when the tar is already aligned (the recipe's `dd` quirk, kept on purpose).
pub const fn quirk_padding(tar_len: u64) -> u64 {
    PAD_TO - tar_len % PAD_TO
}

/// Length of the final archive: the tar plus the recipe's padding.
pub fn archive_len(headers: &[Header]) -> u64 {
    let t = tar_len(headers);
    t + quirk_padding(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(normalise_mode(0o100644), 0o644);
        assert_eq!(normalise_mode(0o600), 0o644);
        assert_eq!(normalise_mode(0o700), 0o755);
        assert_eq!(normalise_mode(0o777), 0o755);
        assert_eq!(normalise_mode(0o400), 0o444);
        assert_eq!(normalise_mode(0o200), 0o200);
        assert_eq!(normalise_mode(0o000), 0o000);
        assert_eq!(normalise_mode(0o4750), 0o4755);
    }

    #[test]
    fn pax_records_count_themselves() {
        let mut v = Vec::new();
        pax_record(&mut v, "path", b"./d\xc3\xafr/");
        assert_eq!(v, b"16 path=./d\xc3\xafr/\n");
        let mut v = Vec::new();
        pax_record(&mut v, "p", b"abc");
        assert_eq!(v, b"8 p=abc\n");
        // 9 bytes + 1 digit would be 10, which has 2 digits: the fixed point is 11.
        let mut v = Vec::new();
        pax_record(&mut v, "p", b"abcde");
        assert_eq!(v, b"11 p=abcde\n");
        let mut v = Vec::new();
        pax_record(&mut v, "size", b"9663676416");
        assert_eq!(v, b"19 size=9663676416\n");
    }

    #[test]
    fn pax_names() {
        assert_eq!(pax_header_name(b"./sub/x"), b"./sub/PaxHeaders/x");
        assert_eq!(pax_header_name(b"./x/"), b"./PaxHeaders/x");
    }

    #[test]
    fn padding_quirk() {
        assert_eq!(quirk_padding(81920), 4096);
        assert_eq!(quirk_padding(10240), 2048);
    }

    #[test]
    fn big_file_header() {
        let h = Header {
            name: b"./big.bin".to_vec(),
            kind: Kind::File,
            mode: 0o644,
            size: 9 << 30,
        };
        let b = header_bytes(&h);
        assert_eq!(b.len(), 3 * BLOCK);
        assert_eq!(&b[0..20], b"./PaxHeaders/big.bin");
        assert_eq!(&b[124..136], b"00000000023\0");
        assert_eq!(&b[148..156], b"011464\0 ", "checksum as GNU tar");
        assert_eq!(&b[512..531], b"19 size=9663676416\n");
        assert_eq!(&b[1024 + 124..1024 + 136], b"00000000000\0");
        assert_eq!(&b[1024 + 148..1024 + 156], b"010563\0 ");
        assert_eq!(header_len(&h), 3 * BLOCK as u64);
    }
}
