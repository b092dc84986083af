//! What a guest puts inside [`Evidence::data`](crate::wire::Evidence): an
//! [`EvidenceBundle`] holding its claims (which model it opened), the TEE platform's
//! report and, when it has one, its GPU's evidence.
//!
//! The claims are the guest's own statement. They are worth exactly what the TEE
//! measurement behind them is worth: a measured initramfs pins the config that names the
//! model, so a broker that checked the measurement may trust the claims; under
//! [`Platform::InsecureNone`](crate::wire::Platform) nothing is measured and they are
//! unverifiable. They are integrity-protected in transit either way: the Hello that
//! carries them is absorbed into the transcript the broker signs and the guest checks.
//!
//! Encoding: postcard, one format byte ([`BUNDLE_FORMAT`]) first, decoded strictly
//! (trailing bytes, non-canonical encodings, oversize fields and unknown formats are
//! refused), so one bundle has one encoding.

use serde::{Deserialize, Serialize};

use crate::{
    Error,
    wire::{self, Bytes, MAX_EVIDENCE_LEN},
};

/// The bundle format this build writes and reads.
pub const BUNDLE_FORMAT: u8 = 1;
/// Longest model name in the claims, in bytes of UTF-8.
pub const MAX_CLAIM_NAME_LEN: usize = 128;
/// Longest model revision in the claims, in bytes of UTF-8.
pub const MAX_CLAIM_REVISION_LEN: usize = 64;

/// The guest's claims about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims<'a> {
    /// The model's name, from the guest's measured config.
    pub model_name: &'a str,
    /// The model's revision, from the guest's measured config.
    pub model_revision: &'a str,
    /// The dm-verity root hash the guest opened the model with.
    pub model_root_hash: [u8; 32],
}

/// The content of [`Evidence::data`](crate::wire::Evidence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceBundle<'a> {
    /// Always [`BUNDLE_FORMAT`].
    pub format: u8,
    /// What the guest says it runs.
    #[serde(borrow)]
    pub claims: Claims<'a>,
    /// The TEE platform's evidence blob (a report or quote with what verifying it
    /// needs); for `InsecureNone`, the 64-byte binding value itself.
    #[serde(borrow)]
    pub tee: Bytes<'a>,
    /// The GPU's evidence blob, when the guest has a GPU that it attested.
    #[serde(borrow)]
    pub gpu: Option<Bytes<'a>>,
}

impl<'a> EvidenceBundle<'a> {
    /// A bundle in the current format.
    pub fn new(claims: Claims<'a>, tee: &'a [u8], gpu: Option<&'a [u8]>) -> Self {
        Self {
            format: BUNDLE_FORMAT,
            claims,
            tee: Bytes(tee),
            gpu: gpu.map(Bytes),
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if self.format != BUNDLE_FORMAT {
            return Err(Error::UnknownVersion(self.format));
        }
        if self.claims.model_name.is_empty() || self.claims.model_revision.is_empty() {
            return Err(Error::Malformed);
        }
        if self.claims.model_name.len() > MAX_CLAIM_NAME_LEN
            || self.claims.model_revision.len() > MAX_CLAIM_REVISION_LEN
        {
            return Err(Error::Oversize);
        }
        Ok(())
    }

    /// Encodes the bundle into `out`; it must fit [`MAX_EVIDENCE_LEN`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, Error> {
        self.validate()?;
        encode_evidence(self, out)
    }

    /// Decodes a bundle strictly (see the module docs).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, Error> {
        let b: Self = decode_evidence(bytes, BUNDLE_FORMAT)?;
        b.validate()?;
        Ok(b)
    }
}

// ---------------------------------------------------------------------------------
// GPU evidence

/// The GPU evidence list format this build writes and reads.
pub const GPU_LIST_FORMAT: u8 = 1;
/// Most GPUs whose evidence one bundle carries.
pub const MAX_GPUS: usize = 8;

/// The content of [`EvidenceBundle::gpu`]: one evidence blob per GPU, in the order the
/// guest's driver numbers them (NVIDIA: the `PQGE` blob of `pqcc_verify::nvidia::evidence`,
/// an SPDM report signed over the handshake's
/// [`gpu_nonce`](crate::handshake::BindingValue::gpu_nonce), and its certificate chain).
///
/// Encoding: postcard, `format` ([`GPU_LIST_FORMAT`]) ‖ count ‖ { varint length ‖ blob }
/// per GPU, decoded strictly: 1 to [`MAX_GPUS`] blobs, none empty, nothing after the last.
/// The list travels inside the Hello, which both sides absorb into the transcript the
/// broker signs, so a list changed on the way fails the guest's signature check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuEvidenceList<'a> {
    /// Always [`GPU_LIST_FORMAT`].
    pub format: u8,
    /// One blob per GPU.
    #[serde(borrow)]
    pub blobs: heapless::Vec<Bytes<'a>, MAX_GPUS>,
}

impl<'a> GpuEvidenceList<'a> {
    /// A list in the current format; `Oversize` with more than [`MAX_GPUS`] blobs.
    pub fn new(blobs: &[&'a [u8]]) -> Result<Self, Error> {
        let mut v = heapless::Vec::new();
        for b in blobs {
            v.push(Bytes(b)).map_err(|_| Error::Oversize)?;
        }
        let l = Self {
            format: GPU_LIST_FORMAT,
            blobs: v,
        };
        l.validate()?;
        Ok(l)
    }

    fn validate(&self) -> Result<(), Error> {
        if self.format != GPU_LIST_FORMAT {
            return Err(Error::UnknownVersion(self.format));
        }
        if self.blobs.is_empty() || self.blobs.iter().any(|b| b.0.is_empty()) {
            return Err(Error::Malformed);
        }
        Ok(())
    }

    /// Encodes the list into `out`; it must fit [`MAX_EVIDENCE_LEN`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, Error> {
        self.validate()?;
        encode_evidence(self, out)
    }

    /// Decodes a list strictly (see the type's docs).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, Error> {
        let l: Self = decode_evidence(bytes, GPU_LIST_FORMAT)?;
        l.validate()?;
        Ok(l)
    }
}

/// Postcard-encodes an evidence structure into `out`; the result must fit
/// [`MAX_EVIDENCE_LEN`].
fn encode_evidence<T: Serialize>(v: &T, out: &mut [u8]) -> Result<usize, Error> {
    let n = postcard::to_slice(v, out)
        .map_err(|_| Error::BufferTooSmall)?
        .len();
    if n > MAX_EVIDENCE_LEN {
        return Err(Error::Oversize);
    }
    Ok(n)
}

/// Decodes an evidence structure whose first byte is its format: at most
/// [`MAX_EVIDENCE_LEN`] bytes, the `format` this build reads, canonical, nothing after.
fn decode_evidence<'a, T: Deserialize<'a> + Serialize>(
    bytes: &'a [u8],
    format: u8,
) -> Result<T, Error> {
    if bytes.len() > MAX_EVIDENCE_LEN {
        return Err(Error::Oversize);
    }
    match bytes.first() {
        None => return Err(Error::Truncated),
        Some(&f) if f == format => {}
        Some(&v) => return Err(Error::UnknownVersion(v)),
    }
    wire::decode_canonical(bytes)
}

// ---------------------------------------------------------------------------------
// Stream framing

/// The first message on a stream transport, guest → broker, before the Challenge:
/// "I am up and reading". It is not part of the handshake transcript. It lets the
/// broker start its handshake clock only when the guest is listening (on a virtio port
/// the host side connects when QEMU starts, seconds before the guest can read) and lets
/// it bound idle connections separately.
pub const READY: &[u8] = b"pqcc/v1 ready";

/// The last message on a stream transport, guest → broker, after the guest has read
/// the broker's answer (and, after an Accept, every secret frame). The broker keeps the
/// connection open until it arrives (bounded): closing earlier can lose data still in
/// flight on a virtio port, whose host-side hang-up may overtake it.
pub const DONE: &[u8] = b"pqcc/v1 done";

/// Bytes of the length prefix in front of every message on a byte stream.
pub const FRAME_PREFIX_LEN: usize = 4;

/// The length prefix for a message of `len` bytes: `len` as a big-endian u32.
pub fn frame_prefix(len: usize) -> Result<[u8; FRAME_PREFIX_LEN], Error> {
    if len == 0 {
        return Err(Error::InvalidArgument);
    }
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|_| Error::Oversize)
}

/// Reads a length prefix: refuses an empty message and one longer than `max`, before
/// anything is allocated or read for it.
pub fn parse_frame_prefix(prefix: [u8; FRAME_PREFIX_LEN], max: usize) -> Result<usize, Error> {
    let n = usize::try_from(u32::from_be_bytes(prefix)).map_err(|_| Error::Oversize)?;
    if n == 0 {
        return Err(Error::Malformed);
    }
    if n > max {
        return Err(Error::Oversize);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims<'static> {
        Claims {
            model_name: "tiny",
            model_revision: "r1",
            model_root_hash: [7; 32],
        }
    }

    #[test]
    fn round_trip_and_golden() {
        let b = EvidenceBundle::new(claims(), &[1, 2, 3], None);
        let mut out = [0u8; 128];
        let n = b.encode(&mut out).unwrap();
        let mut golden = [0u8; 46];
        golden[..9].copy_from_slice(&[1, 4, b't', b'i', b'n', b'y', 2, b'r', b'1']);
        golden[9..41].copy_from_slice(&[7; 32]);
        golden[41..].copy_from_slice(&[3, 1, 2, 3, 0]);
        assert_eq!(&out[..n], &golden);
        assert_eq!(EvidenceBundle::decode(&out[..n]).unwrap(), b);
        let g = EvidenceBundle::new(claims(), &[], Some(&[9]));
        let n = g.encode(&mut out).unwrap();
        assert_eq!(&out[41..n], &[0, 1, 1, 9]);
        assert_eq!(EvidenceBundle::decode(&out[..n]).unwrap(), g);
    }

    #[test]
    fn strict() {
        let b = EvidenceBundle::new(claims(), &[1, 2, 3], None);
        let mut out = [0u8; 128];
        let n = b.encode(&mut out).unwrap();
        assert_eq!(EvidenceBundle::decode(&[]), Err(Error::Truncated));
        assert_eq!(EvidenceBundle::decode(&out[..n - 1]), Err(Error::Truncated));
        out[n] = 0;
        assert_eq!(
            EvidenceBundle::decode(&out[..n + 1]),
            Err(Error::TrailingBytes)
        );
        let mut v = out;
        v[0] = 2;
        assert_eq!(
            EvidenceBundle::decode(&v[..n]),
            Err(Error::UnknownVersion(2))
        );
        // Option tag 2 is not a valid Option.
        let mut v = out;
        v[n - 1] = 2;
        assert!(EvidenceBundle::decode(&v[..n]).is_err());
        let empty = EvidenceBundle::new(
            Claims {
                model_name: "",
                ..claims()
            },
            &[],
            None,
        );
        assert_eq!(empty.encode(&mut out), Err(Error::Malformed));
    }

    #[test]
    fn gpu_list_golden_and_strict() {
        let l = GpuEvidenceList::new(&[&b"PQGE1"[..], &[9, 8]]).unwrap();
        let mut out = [0xa5u8; 64];
        let n = l.encode(&mut out).unwrap();
        // format 1, count 2, len 5 "PQGE1", len 2 [9, 8]
        assert_eq!(&out[..n], &[1, 2, 5, b'P', b'Q', b'G', b'E', b'1', 2, 9, 8]);
        assert_eq!(out[n], 0xa5);
        assert_eq!(GpuEvidenceList::decode(&out[..n]).unwrap(), l);
        assert_eq!(GpuEvidenceList::decode(&[]), Err(Error::Truncated));
        assert_eq!(
            GpuEvidenceList::decode(&out[..n - 1]),
            Err(Error::Truncated)
        );
        assert_eq!(
            GpuEvidenceList::decode(&out[..n + 1]),
            Err(Error::TrailingBytes)
        );
        assert_eq!(
            GpuEvidenceList::decode(&[2, 1, 1, 0]),
            Err(Error::UnknownVersion(2))
        );
        // No GPU, an empty blob, too many GPUs.
        assert_eq!(GpuEvidenceList::decode(&[1, 0]), Err(Error::Malformed));
        assert_eq!(GpuEvidenceList::decode(&[1, 1, 0]), Err(Error::Malformed));
        assert!(
            GpuEvidenceList::decode(&[1, 9, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
                .is_err()
        );
        assert_eq!(GpuEvidenceList::new(&[]), Err(Error::Malformed));
        assert_eq!(
            GpuEvidenceList::new(&[&b"x"[..]; MAX_GPUS + 1]),
            Err(Error::Oversize)
        );
        // A non-canonical length (varint 0x85 0x00 for 5) is refused.
        assert!(GpuEvidenceList::decode(&[1, 1, 0x85, 0, 1, 2, 3, 4, 5]).is_err());
    }

    #[test]
    fn prefixes() {
        assert_eq!(frame_prefix(5).unwrap(), [0, 0, 0, 5]);
        assert_eq!(frame_prefix(0), Err(Error::InvalidArgument));
        assert_eq!(parse_frame_prefix([0, 0, 1, 0], 256), Ok(256));
        assert_eq!(parse_frame_prefix([0, 0, 1, 1], 256), Err(Error::Oversize));
        assert_eq!(parse_frame_prefix([0; 4], 256), Err(Error::Malformed));
        assert_eq!(parse_frame_prefix([0xff; 4], 256), Err(Error::Oversize));
    }
}
