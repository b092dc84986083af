//! Device-mapper through raw ioctls on `/dev/mapper/control`, enough to create one
//! read-only dm-verity device.
//!
//! The request buffers are encoded field by field into byte arrays (`struct dm_ioctl`
//! and `struct dm_target_spec` from `<linux/dm-ioctl.h>`, native endian as the kernel
//! reads them); no struct is transmuted. The only `unsafe` is the `ioctl` call itself.
//!
//! Sequence (what `dmsetup create --readonly` does): `DM_DEV_CREATE` (name → minor),
//! `DM_TABLE_LOAD` with `DM_READONLY_FLAG` and one `verity` target, `DM_DEV_SUSPEND`
//! without `DM_SUSPEND_FLAG`, which makes the loaded table live. The root hash and salt
//! in the table come from the measured config only.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Size of `struct dm_ioctl`.
pub const DM_IOCTL_LEN: usize = 312;
/// Size of `struct dm_target_spec`.
pub const DM_TARGET_SPEC_LEN: usize = 40;
/// `DM_NAME_LEN`.
pub const DM_NAME_LEN: usize = 128;
/// `DM_UUID_LEN`.
pub const DM_UUID_LEN: usize = 129;
/// `DM_MAX_TYPE_NAME`.
pub const DM_MAX_TYPE_NAME: usize = 16;
/// Size of every request buffer (header + data), as libdevmapper starts with.
pub const BUF_LEN: usize = 16 * 1024;
/// The interface version this code speaks (major 4; the kernel accepts any minor).
pub const DM_VERSION: [u32; 3] = [4, 0, 0];

/// `DM_READONLY_FLAG`.
pub const DM_READONLY_FLAG: u32 = 1 << 0;
/// `DM_SUSPEND_FLAG`.
pub const DM_SUSPEND_FLAG: u32 = 1 << 1;
/// `DM_SECURE_DATA_FLAG`: the kernel wipes its copy of the buffer afterwards.
pub const DM_SECURE_DATA_FLAG: u32 = 1 << 15;

// `DM_IOCTL_LEN` as the u32 the header and the ioctl number carry.
const DM_IOCTL_LEN_U32: u32 = 312;
const _: () = assert!(DM_IOCTL_LEN_U32 as usize == DM_IOCTL_LEN);

const fn dm_iowr(nr: u32) -> u32 {
    // _IOWR(DM_IOCTL = 0xfd, nr, struct dm_ioctl): dir 3 << 30, size << 16, type << 8.
    (3 << 30) | (DM_IOCTL_LEN_U32 << 16) | (0xfd << 8) | nr
}

/// `DM_DEV_CREATE`.
pub const DM_DEV_CREATE: u32 = dm_iowr(3);
/// `DM_DEV_REMOVE`.
pub const DM_DEV_REMOVE: u32 = dm_iowr(4);
/// `DM_DEV_SUSPEND` (also resumes).
pub const DM_DEV_SUSPEND: u32 = dm_iowr(6);
/// `DM_TABLE_LOAD`.
pub const DM_TABLE_LOAD: u32 = dm_iowr(9);

/// One `verity` target over a whole data device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityTable {
    /// Data device (a path or `major:minor`).
    pub data_dev: String,
    /// Hash device.
    pub hash_dev: String,
    /// Number of 4096-byte data blocks.
    pub data_blocks: u64,
    /// Hash tree start, in 4096-byte blocks of the hash device.
    pub hash_start_block: u64,
    /// Root hash (SHA-256).
    pub root_hash: [u8; 32],
    /// Salt (may be empty).
    pub salt: Vec<u8>,
}

impl VerityTable {
    /// Length of the mapped device in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.data_blocks * 8
    }

    /// The target's parameter line (dm-verity format 1, SHA-256, 4096-byte blocks).
    pub fn params(&self) -> String {
        let salt = if self.salt.is_empty() {
            "-".to_owned()
        } else {
            crate::config::to_hex(&self.salt)
        };
        format!(
            "1 {} {} 4096 4096 {} {} sha256 {} {}",
            self.data_dev,
            self.hash_dev,
            self.data_blocks,
            self.hash_start_block,
            crate::config::to_hex(&self.root_hash),
            salt
        )
    }
}

/// Why a request could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// The device name is empty, too long or has a `/` or NUL.
    BadName,
    /// The table does not fit the buffer.
    TooLong,
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadName => f.write_str("bad device-mapper name"),
            Self::TooLong => f.write_str("table does not fit the ioctl buffer"),
        }
    }
}

impl std::error::Error for EncodeError {}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Encodes a `struct dm_ioctl` header at the start of `buf` (which must be at least
/// [`DM_IOCTL_LEN`] bytes; the rest is untouched): version, `data_size = buf.len()`,
/// `data_start = 312`, `target_count`, `flags`, `name`; everything else zero.
pub fn encode_header(
    buf: &mut [u8],
    name: &str,
    flags: u32,
    target_count: u32,
) -> Result<(), EncodeError> {
    if name.is_empty()
        || name.len() >= DM_NAME_LEN
        || name.bytes().any(|b| b == 0 || b == b'/')
        || buf.len() < DM_IOCTL_LEN
    {
        return Err(EncodeError::BadName);
    }
    let data_size = u32::try_from(buf.len()).map_err(|_| EncodeError::TooLong)?;
    buf[..DM_IOCTL_LEN].fill(0);
    put_u32(buf, 0, DM_VERSION[0]); // version[0]
    put_u32(buf, 4, DM_VERSION[1]); // version[1]
    put_u32(buf, 8, DM_VERSION[2]); // version[2]
    put_u32(buf, 12, data_size); // data_size: header + data
    put_u32(buf, 16, DM_IOCTL_LEN_U32); // data_start
    put_u32(buf, 20, target_count); // target_count
    // 24 open_count (out), 32 event_nr, 36 padding, 40 dev (out): zero.
    put_u32(buf, 28, flags); // flags
    buf[48..48 + name.len()].copy_from_slice(name.as_bytes()); // name[128]
    // 176 uuid[129], 305 data[7]: zero.
    Ok(())
}

/// Encodes a `DM_TABLE_LOAD` request for `name` with one verity target into `buf`
/// (normally [`BUF_LEN`] bytes). Read-only, secure-data.
pub fn encode_table_load(
    buf: &mut [u8],
    name: &str,
    table: &VerityTable,
) -> Result<(), EncodeError> {
    encode_header(buf, name, DM_READONLY_FLAG | DM_SECURE_DATA_FLAG, 1)?;
    let params = table.params();
    let spec = DM_IOCTL_LEN;
    // The parameter string follows the spec, NUL-terminated; `next` is the distance
    // to where a following spec would start, rounded up to 8 bytes.
    let params_at = spec + DM_TARGET_SPEC_LEN;
    let end = params_at + params.len() + 1;
    let next = (DM_TARGET_SPEC_LEN + params.len() + 1).next_multiple_of(8);
    if end > buf.len() || spec + next > buf.len() {
        return Err(EncodeError::TooLong);
    }
    buf[spec..spec + next].fill(0);
    put_u64(buf, spec, 0); // sector_start
    put_u64(buf, spec + 8, table.sectors()); // length
    // spec + 16: status (out), zero.
    put_u32(
        buf,
        spec + 20,
        u32::try_from(next).map_err(|_| EncodeError::TooLong)?,
    ); // next
    buf[spec + 24..spec + 24 + 6].copy_from_slice(b"verity"); // target_type[16]
    buf[params_at..params_at + params.len()].copy_from_slice(params.as_bytes());
    Ok(())
}

/// The `dev` field of a reply, decoded into (major, minor) with the kernel's
/// `huge_encode_dev` layout.
pub fn reply_dev(buf: &[u8]) -> (u32, u32) {
    let mut d = [0u8; 8];
    d.copy_from_slice(&buf[40..48]);
    let dev = u64::from_ne_bytes(d);
    // Both values are masked to 12 and 20 bits, so the conversions cannot fail.
    let major = u32::try_from((dev >> 8) & 0xfff).unwrap_or(u32::MAX);
    let minor = u32::try_from((dev & 0xff) | ((dev >> 12) & 0xfff_ff00)).unwrap_or(u32::MAX);
    (major, minor)
}

/// The control device, `/dev/mapper/control`.
pub struct Control {
    file: File,
}

impl Control {
    /// Opens `/dev/mapper/control` (devtmpfs makes the node when `dm-mod` loads).
    pub fn open() -> io::Result<Self> {
        let path = "/dev/mapper/control";
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        {
            Ok(file) => Ok(Self { file }),
            Err(e) => Err(io::Error::new(e.kind(), format!("{path}: {e}"))),
        }
    }

    fn ioctl(&self, request: u32, buf: &mut [u8]) -> io::Result<()> {
        // The kernel trusts `data_size` (bytes 12..16) as the buffer's length: check
        // it here rather than rely on every caller.
        if buf.len() < DM_IOCTL_LEN || u32_at(buf, 12) != u32::try_from(buf.len()).ok() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "dm_ioctl data_size does not match the buffer",
            ));
        }
        // SAFETY: every dm ioctl reads and writes at most `data_size` bytes of the
        // buffer it is given; `data_size` was checked above to equal `buf.len()`,
        // and `buf` is a live, exclusively borrowed slice of that length for the
        // duration of the call.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::Ioctl::from(request),
                buf.as_mut_ptr(),
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Creates `name`, loads the verity table read-only and activates it. Returns
    /// the new device's minor number (`/dev/dm-<minor>`).
    pub fn create_verity(&self, name: &str, table: &VerityTable) -> io::Result<u32> {
        let inval = |e: EncodeError| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
        let mut buf = vec![0u8; BUF_LEN];

        encode_header(&mut buf, name, 0, 0).map_err(inval)?;
        self.ioctl(DM_DEV_CREATE, &mut buf)
            .map_err(|e| io::Error::new(e.kind(), format!("DM_DEV_CREATE: {e}")))?;
        let (_, minor) = reply_dev(&buf);

        let result = (|| {
            encode_table_load(&mut buf, name, table).map_err(inval)?;
            self.ioctl(DM_TABLE_LOAD, &mut buf)
                .map_err(|e| io::Error::new(e.kind(), format!("DM_TABLE_LOAD: {e}")))?;
            encode_header(&mut buf, name, 0, 0).map_err(inval)?;
            self.ioctl(DM_DEV_SUSPEND, &mut buf)
                .map_err(|e| io::Error::new(e.kind(), format!("DM_DEV_SUSPEND (resume): {e}")))
        })();
        if let Err(e) = result {
            // Leave no half-made device behind; the error that matters is the first.
            if encode_header(&mut buf, name, 0, 0).is_ok() {
                let _ = self.ioctl(DM_DEV_REMOVE, &mut buf);
            }
            return Err(e);
        }
        Ok(minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers() {
        // From NOTES-QEMU.md, measured against the 6.1 kernel.
        assert_eq!(DM_DEV_CREATE, 0xC138_FD03);
        assert_eq!(DM_DEV_REMOVE, 0xC138_FD04);
        assert_eq!(DM_DEV_SUSPEND, 0xC138_FD06);
        assert_eq!(DM_TABLE_LOAD, 0xC138_FD09);
    }

    fn table() -> VerityTable {
        VerityTable {
            data_dev: "/dev/vda".into(),
            hash_dev: "/dev/vdb".into(),
            data_blocks: 16,
            hash_start_block: 1,
            root_hash: [0x11; 32],
            salt: vec![0xab, 0xcd],
        }
    }

    #[test]
    fn params_line() {
        let t = table();
        assert_eq!(
            t.params(),
            format!(
                "1 /dev/vda /dev/vdb 4096 4096 16 1 sha256 {} abcd",
                "11".repeat(32)
            )
        );
        let mut t = t;
        t.salt.clear();
        assert!(t.params().ends_with(" -"));
        assert_eq!(t.sectors(), 128);
    }

    #[test]
    fn header_bytes() {
        let mut buf = [0xa5u8; 400];
        encode_header(&mut buf, "pqcc-model", DM_READONLY_FLAG, 1).unwrap();
        let mut want = [0u8; DM_IOCTL_LEN];
        // version 4.0.0
        want[0..4].copy_from_slice(&4u32.to_ne_bytes());
        // data_size = 400 (the whole buffer)
        want[12..16].copy_from_slice(&400u32.to_ne_bytes());
        // data_start = 312
        want[16..20].copy_from_slice(&312u32.to_ne_bytes());
        // target_count = 1
        want[20..24].copy_from_slice(&1u32.to_ne_bytes());
        // flags = DM_READONLY_FLAG
        want[28..32].copy_from_slice(&1u32.to_ne_bytes());
        // name at 48
        want[48..58].copy_from_slice(b"pqcc-model");
        assert_eq!(&buf[..DM_IOCTL_LEN], &want[..]);
        // Bytes after the header are untouched.
        assert!(buf[DM_IOCTL_LEN..].iter().all(|&b| b == 0xa5));
    }

    #[test]
    fn header_refuses_bad_names() {
        let mut buf = [0u8; DM_IOCTL_LEN];
        assert_eq!(encode_header(&mut buf, "", 0, 0), Err(EncodeError::BadName));
        assert_eq!(
            encode_header(&mut buf, "a/b", 0, 0),
            Err(EncodeError::BadName)
        );
        let long = "x".repeat(DM_NAME_LEN);
        assert_eq!(
            encode_header(&mut buf, &long, 0, 0),
            Err(EncodeError::BadName)
        );
        assert!(encode_header(&mut buf, &long[1..], 0, 0).is_ok());
        let mut small = [0u8; DM_IOCTL_LEN - 1];
        assert!(encode_header(&mut small, "a", 0, 0).is_err());
    }

    #[test]
    fn table_load_bytes() {
        let t = table();
        let mut buf = vec![0xa5u8; BUF_LEN];
        encode_table_load(&mut buf, "m", &t).unwrap();
        // Header: data_size 16384, data_start 312, one target, read-only + secure.
        assert_eq!(&buf[12..16], &16384u32.to_ne_bytes());
        assert_eq!(&buf[16..20], &312u32.to_ne_bytes());
        assert_eq!(&buf[20..24], &1u32.to_ne_bytes());
        assert_eq!(&buf[28..32], &(1u32 | (1 << 15)).to_ne_bytes());
        assert_eq!(&buf[48..50], b"m\0");

        let params = t.params();
        let next = (40 + params.len() + 1).next_multiple_of(8);
        let mut spec = vec![0u8; next];
        spec[0..8].copy_from_slice(&0u64.to_ne_bytes()); // sector_start
        spec[8..16].copy_from_slice(&128u64.to_ne_bytes()); // length: 16 blocks * 8
        spec[16..20].copy_from_slice(&0u32.to_ne_bytes()); // status
        spec[20..24].copy_from_slice(&u32::try_from(next).unwrap().to_ne_bytes()); // next
        spec[24..30].copy_from_slice(b"verity"); // target_type, NUL-padded to 16
        spec[40..40 + params.len()].copy_from_slice(params.as_bytes()); // params + NUL
        assert_eq!(&buf[312..312 + next], &spec[..]);
        assert!(buf[312 + next..].iter().all(|&b| b == 0xa5));
        assert_eq!(params.len(), 111);
        assert_eq!(next, 152);
    }

    #[test]
    fn table_too_long() {
        let t = table();
        let mut buf = vec![0u8; 400];
        assert_eq!(
            encode_table_load(&mut buf, "m", &t),
            Err(EncodeError::TooLong)
        );
    }

    #[test]
    fn dev_decoding() {
        let mut buf = [0u8; DM_IOCTL_LEN];
        // major 253, minor 0
        buf[40..48].copy_from_slice(&(253u64 << 8).to_ne_bytes());
        assert_eq!(reply_dev(&buf), (253, 0));
        // major 253, minor 0x1234: low byte in bits 0..8, the rest from bit 20.
        let dev: u64 = 0x34 | (253 << 8) | (0x12 << 20);
        buf[40..48].copy_from_slice(&dev.to_ne_bytes());
        assert_eq!(reply_dev(&buf), (253, 0x1234));
    }
}
