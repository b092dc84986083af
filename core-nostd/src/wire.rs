//! Protocol v1 wire formats (postcard), decoded strictly.
//!
//! Every message starts with the protocol version byte. Handshake messages then carry a
//! message type (postcard varint enum index; the variant order is frozen and pinned by
//! golden-byte tests). Each message has a maximum encoded size (`*_MAX_LEN`).
//!
//! Decoding ([`decode_message`], [`FrameHeader::decode`]) refuses, in this order:
//! oversize input ([`Error::Oversize`]), an empty or unknown version
//! ([`Error::Truncated`], [`Error::UnknownVersion`]), undecodable bytes
//! ([`Error::Malformed`], [`Error::Truncated`]), trailing bytes
//! ([`Error::TrailingBytes`]), encodings that are not the one canonical encoding of the
//! decoded value — such as a varint padded with `0x80` bytes ([`Error::NonCanonical`]),
//! found by re-encoding the value and comparing byte for byte without allocating — and
//! fields over their bounds ([`Error::Oversize`], [`Error::InvalidKey`]).

use core::fmt;

use heapless::Vec;
use postcard::ser_flavors::Flavor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, PROTOCOL_VERSION, kem, sign};

/// Largest evidence (platform report, certificates, GPU evidence) a Hello may carry:
/// 128 KiB, room for a TEE report with its certificates (at most 32 KiB) and the
/// evidence of [`MAX_GPUS`](crate::bundle::MAX_GPUS) GPUs (NVIDIA: about 7.5 KiB
/// each, an SPDM report and a five-certificate chain). Its length prefix stays a
/// 3-byte varint (below 2^21).
pub const MAX_EVIDENCE_LEN: usize = 128 * 1024;
/// Most grants an Accept may list.
pub const MAX_GRANTS: usize = 16;
/// Longest grant name, in bytes of UTF-8.
pub const MAX_GRANT_NAME_LEN: usize = 64;
/// Longest tensor name, in bytes of UTF-8.
pub const MAX_TENSOR_NAME_LEN: usize = 128;
/// Most dimensions a tensor shape may have.
pub const MAX_RANK: usize = 8;

/// Maximum encoded size of a [`Challenge`] message.
pub const CHALLENGE_MAX_LEN: usize = 1 + 1 + 32;
/// Maximum encoded size of a [`Hello`] message.
pub const HELLO_MAX_LEN: usize = 1 + 1 + 32 + 2 + kem::EK_LEN + 1 + 3 + MAX_EVIDENCE_LEN;
/// Maximum encoded size of one [`Grant`].
pub const GRANT_MAX_LEN: usize = 5 + 1 + MAX_GRANT_NAME_LEN + 5;
/// Maximum encoded size of an [`Accept`] message.
pub const ACCEPT_MAX_LEN: usize =
    1 + 1 + 2 + kem::CT_LEN + 1 + MAX_GRANTS * GRANT_MAX_LEN + 2 + sign::SIG_LEN;
/// Maximum encoded size of a [`Reject`] message.
pub const REJECT_MAX_LEN: usize = 1 + 1 + 1;
/// Largest handshake message of any type.
pub const MESSAGE_MAX_LEN: usize = HELLO_MAX_LEN;
/// Maximum encoded size of a [`FrameHeader`].
pub const FRAME_HEADER_MAX_LEN: usize =
    1 + 5 + 5 + 10 + 1 + 5 + (10 + 2 + MAX_TENSOR_NAME_LEN + 1 + 1 + MAX_RANK * 10 + 10 + 10);

// ---------------------------------------------------------------------------------
// Byte strings

/// A borrowed byte string, encoded as postcard bytes (varint length ‖ bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Bytes<'a>(pub &'a [u8]);

impl fmt::Debug for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes(len {})", self.0.len())
    }
}

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Bytes<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a [u8]>::deserialize(d).map(Bytes)
    }
}

// ---------------------------------------------------------------------------------
// Handshake messages

/// The TEE platform whose evidence a Hello carries. Variant order is frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Platform {
    /// No TEE. Accepted only by policies that explicitly say `insecure_no_tee`.
    InsecureNone,
    /// AMD SEV-SNP.
    SevSnp,
    /// Intel TDX.
    Tdx,
}

impl Platform {
    /// The name used in configs and policies.
    pub fn name(self) -> &'static str {
        match self {
            Platform::InsecureNone => "none",
            Platform::SevSnp => "sev-snp",
            Platform::Tdx => "tdx",
        }
    }
}

/// Evidence: a platform tag and opaque, bounded bytes that the platform's verifier
/// parses. Its report-data field must hold [`crate::handshake::BindingValue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence<'a> {
    /// Which platform produced it.
    pub platform: Platform,
    /// The platform's report and whatever certificates it needs (≤ [`MAX_EVIDENCE_LEN`]).
    #[serde(borrow)]
    pub data: Bytes<'a>,
}

/// Broker → guest, round 1: a fresh challenge nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Fresh per attempt, single use.
    pub nonce_b: [u8; 32],
}

/// Guest → broker, round 1: the guest's nonce, ephemeral ML-KEM-768 key and evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello<'a> {
    /// The guest's fresh nonce.
    pub nonce_g: [u8; 32],
    /// The guest's ephemeral ML-KEM-768 encapsulation key ([`kem::EK_LEN`] bytes).
    #[serde(borrow)]
    pub kem_ek: Bytes<'a>,
    /// Evidence bound to this handshake.
    #[serde(borrow)]
    pub evidence: Evidence<'a>,
}

/// One secret the broker will send over the channel after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant<'a> {
    /// The channel stream the secret arrives on.
    pub stream: u32,
    /// The secret's name (≤ [`MAX_GRANT_NAME_LEN`] bytes).
    #[serde(borrow)]
    pub name: &'a str,
    /// The secret's length in bytes.
    pub len: u32,
}

/// Broker → guest, round 2: encapsulation, grants, and the broker's signature over the
/// transcript. The signature is the last field; it signs the transcript hash that ends
/// with the exact bytes of this message before the signature field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept<'a> {
    /// ML-KEM-768 ciphertext to the guest's key ([`kem::CT_LEN`] bytes).
    #[serde(borrow)]
    pub kem_ct: Bytes<'a>,
    /// The secrets that follow on the channel.
    #[serde(borrow)]
    pub grants: Vec<Grant<'a>, MAX_GRANTS>,
    /// ML-DSA-65 signature ([`sign::SIG_LEN`] bytes).
    #[serde(borrow)]
    pub signature: Bytes<'a>,
}

/// Why a responder refused. Variant order is frozen.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// The evidence did not verify (signature, chain, binding).
    Evidence,
    /// The evidence verified but the policy does not admit this platform, measurement,
    /// model or GPU.
    Policy,
    /// The challenge nonce was unknown, expired or already used.
    Replay,
    /// A message did not decode.
    Malformed,
    /// The protocol version is not supported.
    Version,
    /// The handshake took too long.
    Timeout,
    /// The responder failed internally.
    Internal,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RejectReason::Evidence => "evidence did not verify",
            RejectReason::Policy => "refused by policy",
            RejectReason::Replay => "challenge unknown, expired or reused",
            RejectReason::Malformed => "malformed message",
            RejectReason::Version => "unsupported version",
            RejectReason::Timeout => "handshake timed out",
            RejectReason::Internal => "internal error",
        })
    }
}

/// Broker → guest, round 2 (instead of Accept): a refusal. Not signed: a forged Reject
/// can only deny service, which the host can always do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// Why.
    pub reason: RejectReason,
}

/// A handshake message. Variant order is frozen (it is the message type on the wire).
// No allocator to box the Accept's grant list into; the size difference is by design.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<'a> {
    /// See [`Challenge`].
    Challenge(Challenge),
    /// See [`Hello`].
    #[serde(borrow)]
    Hello(Hello<'a>),
    /// See [`Accept`].
    #[serde(borrow)]
    Accept(Accept<'a>),
    /// See [`Reject`].
    Reject(Reject),
}

#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    version: u8,
    #[serde(borrow)]
    msg: Message<'a>,
}

impl<'a> Message<'a> {
    /// The maximum encoded size of this message's type.
    pub fn max_len(&self) -> usize {
        match self {
            Message::Challenge(_) => CHALLENGE_MAX_LEN,
            Message::Hello(_) => HELLO_MAX_LEN,
            Message::Accept(_) => ACCEPT_MAX_LEN,
            Message::Reject(_) => REJECT_MAX_LEN,
        }
    }

    /// Checks every field bound.
    fn validate(&self) -> Result<(), Error> {
        match self {
            Message::Challenge(_) | Message::Reject(_) => Ok(()),
            Message::Hello(h) => {
                if h.kem_ek.0.len() != kem::EK_LEN {
                    return Err(Error::InvalidKey);
                }
                if h.evidence.data.0.len() > MAX_EVIDENCE_LEN {
                    return Err(Error::Oversize);
                }
                Ok(())
            }
            Message::Accept(a) => {
                if a.kem_ct.0.len() != kem::CT_LEN || a.signature.0.len() != sign::SIG_LEN {
                    return Err(Error::InvalidKey);
                }
                if a.grants.iter().any(|g| g.name.len() > MAX_GRANT_NAME_LEN) {
                    return Err(Error::Oversize);
                }
                Ok(())
            }
        }
    }

    /// Encodes `version ‖ message` into `out`, returning the written length. Refuses a
    /// message whose fields are out of bounds.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, Error> {
        self.validate()?;
        let env = Envelope {
            version: PROTOCOL_VERSION,
            msg: self.clone(),
        };
        let n = postcard::to_slice(&env, out)
            .map_err(|_| Error::BufferTooSmall)?
            .len();
        if n > self.max_len() {
            return Err(Error::Oversize);
        }
        Ok(n)
    }
}

/// Decodes one handshake message strictly (see the module docs).
pub fn decode_message(bytes: &[u8]) -> Result<Message<'_>, Error> {
    if bytes.len() > MESSAGE_MAX_LEN {
        return Err(Error::Oversize);
    }
    check_version(bytes)?;
    let env: Envelope<'_> = decode_canonical(bytes)?;
    if bytes.len() > env.msg.max_len() {
        return Err(Error::Oversize);
    }
    env.msg.validate()?;
    Ok(env.msg)
}

/// For an encoded Accept: the length of the prefix its signature covers (everything
/// before the signature field). `bytes` must be a canonical Accept.
pub(crate) fn accept_signed_len(bytes: &[u8], accept: &Accept<'_>) -> Result<usize, Error> {
    let sig_field = varint_len(accept.signature.0.len() as u64) + accept.signature.0.len();
    bytes.len().checked_sub(sig_field).ok_or(Error::Malformed)
}

fn check_version(bytes: &[u8]) -> Result<(), Error> {
    match bytes.first() {
        None => Err(Error::Truncated),
        Some(&PROTOCOL_VERSION) => Ok(()),
        Some(&v) => Err(Error::UnknownVersion(v)),
    }
}

fn map_de_err(e: postcard::Error) -> Error {
    match e {
        postcard::Error::DeserializeUnexpectedEnd => Error::Truncated,
        _ => Error::Malformed,
    }
}

/// Decodes `T` from all of `bytes`: trailing bytes and non-canonical encodings refused.
pub(crate) fn decode_canonical<'a, T: Deserialize<'a> + Serialize>(
    bytes: &'a [u8],
) -> Result<T, Error> {
    let (v, rest) = postcard::take_from_bytes::<T>(bytes).map_err(map_de_err)?;
    if !rest.is_empty() {
        return Err(Error::TrailingBytes);
    }
    if !encodes_to(&v, bytes) {
        return Err(Error::NonCanonical);
    }
    Ok(v)
}

/// True when `v` encodes to exactly `expected` (compared as it is produced, no buffer).
fn encodes_to<T: Serialize>(v: &T, expected: &[u8]) -> bool {
    struct Compare<'e> {
        expected: &'e [u8],
        pos: usize,
    }
    impl Flavor for Compare<'_> {
        type Output = bool;
        fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
            let end = self
                .pos
                .checked_add(data.len())
                .ok_or(postcard::Error::SerializeBufferFull)?;
            match self.expected.get(self.pos..end) {
                Some(exp) if exp == data => {
                    self.pos = end;
                    Ok(())
                }
                _ => Err(postcard::Error::SerializeBufferFull),
            }
        }
        fn try_push(&mut self, data: u8) -> postcard::Result<()> {
            self.try_extend(&[data])
        }
        fn finalize(self) -> postcard::Result<bool> {
            Ok(self.pos == self.expected.len())
        }
    }
    postcard::serialize_with_flavor(v, Compare { expected, pos: 0 }).unwrap_or(false)
}

/// Encoded length of a postcard varint.
pub(crate) fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

// ---------------------------------------------------------------------------------
// Channel frame header

/// Element type of a tensor. Variant order is frozen.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DType {
    /// Raw bytes (secrets, archives): shape is the byte length.
    Bytes,
    /// Boolean, one byte each.
    Bool,
    /// Unsigned 8-bit.
    U8,
    /// Signed 8-bit.
    I8,
    /// Unsigned 16-bit.
    U16,
    /// Signed 16-bit.
    I16,
    /// Unsigned 32-bit.
    U32,
    /// Signed 32-bit.
    I32,
    /// Unsigned 64-bit.
    U64,
    /// Signed 64-bit.
    I64,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE single.
    F32,
    /// IEEE double.
    F64,
    /// FP8 E4M3.
    F8E4M3,
    /// FP8 E5M2.
    F8E5M2,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            DType::Bytes | DType::Bool | DType::U8 | DType::I8 | DType::F8E4M3 | DType::F8E5M2 => 1,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 => 8,
        }
    }
}

/// What a tensor is: carried (authenticated) in every chunk's header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorMetadata<'a> {
    /// Caller-chosen tensor id, unique within a stream.
    pub id: u64,
    /// Name (≤ [`MAX_TENSOR_NAME_LEN`] bytes of UTF-8).
    #[serde(borrow)]
    pub name: &'a str,
    /// Element type.
    pub dtype: DType,
    /// Dimensions (≤ [`MAX_RANK`]).
    pub shape: Vec<u64, MAX_RANK>,
    /// Length of the whole tensor in bytes; equals the product of the shape times the
    /// element size.
    pub total_len: u64,
}

impl<'a> TensorMetadata<'a> {
    /// Builds metadata, computing `total_len` from shape and dtype with checked
    /// arithmetic. Too long a name, too many dimensions or an overflowing size is
    /// [`Error::InvalidArgument`].
    pub fn new(id: u64, name: &'a str, dtype: DType, shape: &[u64]) -> Result<Self, Error> {
        let shape = Vec::from_slice(shape).map_err(|_| Error::InvalidArgument)?;
        let mut m = Self {
            id,
            name,
            dtype,
            shape,
            total_len: 0,
        };
        m.total_len = m.computed_len().ok_or(Error::InvalidArgument)?;
        m.validate().map_err(|_| Error::InvalidArgument)?;
        Ok(m)
    }

    fn computed_len(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(self.dtype.size(), |acc, &d| acc.checked_mul(d))
    }

    fn validate(&self) -> Result<(), Error> {
        if self.name.len() > MAX_TENSOR_NAME_LEN {
            return Err(Error::Oversize);
        }
        if self.computed_len() != Some(self.total_len) {
            return Err(Error::Malformed);
        }
        Ok(())
    }
}

/// Frame flag: this chunk ends its tensor.
pub const FLAG_FINAL: u8 = 0x01;
const KNOWN_FLAGS: u8 = FLAG_FINAL;

/// The header of a channel frame; its exact encoded bytes are the frame's AAD.
/// The frame on the wire is `header ‖ ciphertext (chunk_len bytes) ‖ tag (16)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameHeader<'a> {
    /// Protocol version ([`PROTOCOL_VERSION`]).
    pub version: u8,
    /// Stream number (several tensors may be in flight on different streams).
    pub stream: u32,
    /// Key epoch: 0 after the handshake, +1 at every rekey.
    pub epoch: u32,
    /// Sequence number within this direction and epoch; also the nonce's counter.
    pub seq: u64,
    /// [`FLAG_FINAL`] or 0; other bits are refused.
    pub flags: u8,
    /// Length of the ciphertext that follows the header.
    pub chunk_len: u32,
    /// Offset of this chunk within its tensor.
    pub offset: u64,
    /// The tensor this chunk belongs to.
    #[serde(borrow)]
    pub meta: TensorMetadata<'a>,
}

/// The fixed-size fields of a frame header (everything but the tensor metadata), so a
/// sender can encode a header without copying the metadata into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderFields {
    /// See [`FrameHeader::version`].
    pub version: u8,
    /// See [`FrameHeader::stream`].
    pub stream: u32,
    /// See [`FrameHeader::epoch`].
    pub epoch: u32,
    /// See [`FrameHeader::seq`].
    pub seq: u64,
    /// See [`FrameHeader::flags`].
    pub flags: u8,
    /// See [`FrameHeader::chunk_len`].
    pub chunk_len: u32,
    /// See [`FrameHeader::offset`].
    pub offset: u64,
}

impl HeaderFields {
    /// Checks consistency with `meta`: version, known flags, metadata bounds, the chunk
    /// inside the tensor, FINAL exactly when the chunk reaches the end.
    pub fn validate(&self, meta: &TensorMetadata<'_>) -> Result<(), Error> {
        if self.version != PROTOCOL_VERSION {
            return Err(Error::UnknownVersion(self.version));
        }
        if self.flags & !KNOWN_FLAGS != 0 {
            return Err(Error::Malformed);
        }
        meta.validate()?;
        let end = self
            .offset
            .checked_add(u64::from(self.chunk_len))
            .ok_or(Error::Malformed)?;
        if end > meta.total_len {
            return Err(Error::Malformed);
        }
        if (self.flags & FLAG_FINAL != 0) != (end == meta.total_len) {
            return Err(Error::Malformed);
        }
        Ok(())
    }

    /// Writes the header (these fields and `meta`) into `out` in exactly postcard's
    /// encoding of [`FrameHeader`] (a hand-written encoder: the per-frame hot path;
    /// tests pin it to postcard). Does not validate. Returns the length.
    pub fn emit(&self, meta: &TensorMetadata<'_>, out: &mut [u8]) -> Result<usize, Error> {
        let mut w = Writer { buf: out, pos: 0 };
        w.byte(self.version)?;
        w.varint(u64::from(self.stream))?;
        w.varint(u64::from(self.epoch))?;
        w.varint(self.seq)?;
        w.byte(self.flags)?;
        w.varint(u64::from(self.chunk_len))?;
        w.varint(self.offset)?;
        w.varint(meta.id)?;
        w.varint(meta.name.len() as u64)?;
        w.bytes(meta.name.as_bytes())?;
        w.varint(meta.dtype as u64)?;
        w.varint(meta.shape.len() as u64)?;
        for &d in meta.shape.iter() {
            w.varint(d)?;
        }
        w.varint(meta.total_len)?;
        Ok(w.pos)
    }
}

/// Writes `v` as a postcard varint at `out[pos..]`; returns the position after it.
pub(crate) fn put_varint(out: &mut [u8], pos: usize, v: u64) -> Result<usize, Error> {
    let mut w = Writer { buf: out, pos };
    w.varint(v)?;
    Ok(w.pos)
}

struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl Writer<'_> {
    #[inline]
    fn byte(&mut self, b: u8) -> Result<(), Error> {
        *self.buf.get_mut(self.pos).ok_or(Error::BufferTooSmall)? = b;
        self.pos += 1;
        Ok(())
    }
    #[inline]
    fn varint(&mut self, mut v: u64) -> Result<(), Error> {
        while v >= 0x80 {
            // Low 7 bits with the continuation bit; the cast keeps exactly those bits.
            self.byte((v & 0x7f) as u8 | 0x80)?;
            v >>= 7;
        }
        self.byte((v & 0x7f) as u8)
    }
    #[inline]
    fn bytes(&mut self, b: &[u8]) -> Result<(), Error> {
        let end = self.pos.checked_add(b.len()).ok_or(Error::BufferTooSmall)?;
        self.buf
            .get_mut(self.pos..end)
            .ok_or(Error::BufferTooSmall)?
            .copy_from_slice(b);
        self.pos = end;
        Ok(())
    }
}

impl<'a> FrameHeader<'a> {
    /// Whether this chunk ends its tensor.
    pub fn is_final(&self) -> bool {
        self.flags & FLAG_FINAL != 0
    }

    /// The fixed-size fields.
    pub fn fields(&self) -> HeaderFields {
        HeaderFields {
            version: self.version,
            stream: self.stream,
            epoch: self.epoch,
            seq: self.seq,
            flags: self.flags,
            chunk_len: self.chunk_len,
            offset: self.offset,
        }
    }

    /// Checks the header's internal consistency (see [`HeaderFields::validate`]).
    pub fn validate(&self) -> Result<(), Error> {
        self.fields().validate(&self.meta)
    }

    /// Encodes the header into `out`, returning its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, Error> {
        self.validate()?;
        self.fields().emit(&self.meta, out)
    }

    /// Decodes the header at the start of `frame`, strictly, returning it and its
    /// encoded length. The rest of `frame` is the ciphertext and tag.
    pub fn decode(frame: &'a [u8]) -> Result<(Self, usize), Error> {
        check_version(frame)?;
        let (h, n) = Self::decode_prefix(frame)?;
        if n > FRAME_HEADER_MAX_LEN {
            return Err(Error::Oversize);
        }
        // Canonical: re-encode into a stack buffer and compare.
        let mut again = [0u8; FRAME_HEADER_MAX_LEN];
        match h.fields().emit(&h.meta, &mut again) {
            Ok(m) if again[..m] == frame[..n] => {}
            _ => return Err(Error::NonCanonical),
        }
        h.validate()?;
        Ok((h, n))
    }

    /// Plain postcard decoding of the header at the start of `frame`, without the
    /// strictness checks. Only for bytes that already passed [`FrameHeader::decode`].
    pub(crate) fn decode_prefix(frame: &'a [u8]) -> Result<(Self, usize), Error> {
        let (h, rest) = postcard::take_from_bytes::<FrameHeader<'a>>(frame).map_err(map_de_err)?;
        Ok((h, frame.len() - rest.len()))
    }
}

/// Decodes lowercase or uppercase hex into exactly `out.len()` bytes.
pub fn hex_decode(s: &str, out: &mut [u8]) -> Result<(), Error> {
    let b = s.as_bytes();
    if b.len() != out.len() * 2 {
        return Err(Error::Malformed);
    }
    fn nib(c: u8) -> Result<u8, Error> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(Error::Malformed),
        }
    }
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = (nib(pair[0])? << 4) | nib(pair[1])?;
    }
    Ok(())
}
