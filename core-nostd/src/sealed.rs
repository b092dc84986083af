//! Sealed models: the fixed parts of pqcc's at-rest format for model files
//! (`docs/sealed-models.md` describes it byte by byte).
//!
//! A sealed model is a directory of sealed files, one per file of the original model
//! directory, plus a sealed manifest that lists them. A sealed file is
//!
//! ```text
//! preamble (PREAMBLE_LEN bytes, plaintext)
//! [manifest only: u16 LE length ‖ the model id `name@revision`, plaintext]
//! frames: table frames (safetensors only), then each tensor's frames in file order
//! ```
//!
//! and every frame is `ciphertext ‖ tag` under the channel's frame rules (see
//! [`crate::channel`]): the AAD is the channel frame header the frame's place in the
//! table implies (tensor id, name, dtype, shape, length, offset, sequence number,
//! FINAL), the nonce is the file's 4-byte prefix ‖ the frame's sequence number
//! (big-endian u64), sequence numbers run from 0 through the whole file, and the last
//! frame of each tensor carries FINAL. The header itself is not stored, so names,
//! dtypes and shapes appear nowhere in plaintext; an opener rebuilds it from the sealed
//! table, which makes `header ‖ ciphertext ‖ tag` an ordinary channel frame that every
//! channel opener pqcc has (CPU and GPU) can open.
//!
//! ## Keys
//! All derivations are SHAKE256 over a label and length-prefixed inputs (u32 BE):
//! - key id = SHA3-256(`"pqcc/v1/sealed/key-id"` ‖ DEK): in every preamble, so a wrong
//!   key is named as such before anything is decrypted;
//! - model key = SHAKE256(`"pqcc/v1/sealed/model"` ‖ DEK ‖ salt ‖ `name@revision`);
//! - content id = SHAKE256(`"pqcc/v1/sealed/content"` ‖ model key ‖ path ‖
//!   SHA3-256(the original file)): keyed, so it says nothing about the plaintext to
//!   anyone without the key;
//! - file key ‖ nonce prefix = SHAKE256(`"pqcc/v1/sealed/file"` ‖ model key ‖ path ‖
//!   the whole preamble).
//!
//! The file key thus binds the model, the file's path, its plaintext (through the
//! content id) and every preamble field; the AAD binds the tensor's name, dtype, shape
//! and length, the frame's offset and sequence number and FINAL. A frame or tensor
//! moved, swapped, dropped, repeated or truncated, within a file or between files or
//! models, fails its tag (or, for a dropped or added frame, the exact length check). Because the
//! content id enters the key, sealing different plaintext with the same DEK and salt
//! uses a different key, so a deterministic nonce never meets two plaintexts under one
//! key.
//!
//! Nothing here allocates or does I/O: callers read and write the bytes.

use crate::{
    Error, PROTOCOL_VERSION,
    aead::{Aes256GcmProvider, NONCE_LEN, TAG_LEN},
    channel::MAX_CHUNK_LEN,
    hash,
    secret::Secret,
    wire::{DType, FLAG_FINAL, FRAME_HEADER_MAX_LEN, HeaderFields, MAX_RANK, TensorMetadata},
};

/// The first 8 bytes of every sealed file.
pub const MAGIC: [u8; 8] = *b"PQCCSEAL";
/// The format version this code reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// Length of the plaintext preamble.
pub const PREAMBLE_LEN: usize = 160;
/// Smallest frame size a sealed file may declare.
pub const MIN_FRAME_SIZE: u32 = 4096;
/// Largest frame size a sealed file may declare (the channel's chunk limit).
pub const MAX_FRAME_SIZE: u32 = MAX_CHUNK_LEN;
/// The frame size `pqcc model seal` uses unless told otherwise (1 MiB).
pub const DEFAULT_FRAME_SIZE: u32 = 1 << 20;
/// Longest model id (`name@revision`) in bytes.
pub const MAX_MODEL_ID_LEN: usize = 256;
/// Longest relative path of a file in a sealed model, in bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// Largest table (the original safetensors header plus the entries) in bytes.
pub const MAX_TABLE_LEN: u64 = 128 * 1024 * 1024;
/// Most tensors one sealed safetensors file may hold.
pub const MAX_TENSORS: u32 = 1 << 20;
/// Most files one sealed model may hold.
pub const MAX_FILES: u32 = 1 << 16;
/// Version byte at the start of the manifest's plaintext.
pub const MANIFEST_VERSION: u8 = 1;
/// The path the manifest is bound to (its file is `pqcc-manifest.sealed`).
pub const MANIFEST_PATH: &str = "pqcc-manifest";
/// Tensor name carried in the headers of a table's frames.
pub const TABLE_NAME: &str = "pqcc.table";
/// Tensor name carried in the headers of a blob's (or the manifest's) frames.
pub const BLOB_NAME: &str = "pqcc.blob";

const KEY_ID_LABEL: &[u8] = b"pqcc/v1/sealed/key-id";
const MODEL_LABEL: &[u8] = b"pqcc/v1/sealed/model";
const CONTENT_LABEL: &[u8] = b"pqcc/v1/sealed/content";
const FILE_LABEL: &[u8] = b"pqcc/v1/sealed/file";

/// What a sealed file holds. Values are frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FileKind {
    /// Any file, sealed whole as one byte tensor.
    Blob = 0,
    /// A safetensors file: a sealed table, then every tensor sealed on its own.
    Safetensors = 1,
    /// The manifest: the list of every file of the model.
    Manifest = 2,
}

impl FileKind {
    /// The kind with this frozen value.
    pub fn from_u8(v: u8) -> Result<Self, Error> {
        match v {
            0 => Ok(Self::Blob),
            1 => Ok(Self::Safetensors),
            2 => Ok(Self::Manifest),
            _ => Err(Error::Malformed),
        }
    }

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Blob => "blob",
            Self::Safetensors => "safetensors",
            Self::Manifest => "manifest",
        }
    }
}

/// The plaintext preamble of a sealed file. Every field is authenticated: the whole
/// preamble enters the file key.
///
/// ```text
/// off len
///   0   8  magic "PQCCSEAL"
///   8   2  format version, u16 LE (1)
///  10   1  kind (FileKind)
///  11   1  flags, 0
///  12   4  frame size, u32 LE
///  16  32  key id
///  48  32  salt
///  80  32  content id
/// 112   4  tensor count, u32 LE (0 unless safetensors)
/// 116   4  reserved, 0
/// 120   8  table length in bytes, u64 LE (0 unless safetensors)
/// 128   8  plaintext length of the original file, u64 LE
/// 136   8  frame count, u64 LE (table frames included)
/// 144  16  reserved, 0
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    /// What the file holds.
    pub kind: FileKind,
    /// Plaintext bytes per frame (the last frame of a tensor may be shorter).
    pub frame_size: u32,
    /// [`key_id`] of the data-encryption key.
    pub key_id: [u8; 32],
    /// The model's salt (the same in every file of one sealed model).
    pub salt: [u8; 32],
    /// [`ModelKey::content_id`] of the original file.
    pub content_id: [u8; 32],
    /// Number of tensors (safetensors only).
    pub tensor_count: u32,
    /// Length of the table's plaintext (safetensors only).
    pub table_len: u64,
    /// Length of the original file.
    pub data_len: u64,
    /// Number of frames in the file.
    pub frame_count: u64,
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}
fn arr32(b: &[u8], at: usize) -> [u8; 32] {
    let mut x = [0u8; 32];
    x.copy_from_slice(&b[at..at + 32]);
    x
}

impl Preamble {
    /// Encodes the preamble.
    pub fn emit(&self) -> [u8; PREAMBLE_LEN] {
        let mut b = [0u8; PREAMBLE_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[10] = self.kind as u8;
        b[12..16].copy_from_slice(&self.frame_size.to_le_bytes());
        b[16..48].copy_from_slice(&self.key_id);
        b[48..80].copy_from_slice(&self.salt);
        b[80..112].copy_from_slice(&self.content_id);
        b[112..116].copy_from_slice(&self.tensor_count.to_le_bytes());
        b[120..128].copy_from_slice(&self.table_len.to_le_bytes());
        b[128..136].copy_from_slice(&self.data_len.to_le_bytes());
        b[136..144].copy_from_slice(&self.frame_count.to_le_bytes());
        b
    }

    /// Decodes and checks the preamble at the start of `bytes`: magic, version, kind,
    /// zero flags and reserved bytes, the frame size within bounds, counts consistent
    /// with the kind. Returns [`Error::Truncated`] when fewer than [`PREAMBLE_LEN`]
    /// bytes are given, [`Error::Malformed`] for a wrong magic or any other field out
    /// of range, [`Error::UnknownVersion`] for another version.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let b = bytes.get(..PREAMBLE_LEN).ok_or(Error::Truncated)?;
        if b[0..8] != MAGIC {
            return Err(Error::Malformed);
        }
        let version = le_u16(b, 8);
        if version != FORMAT_VERSION {
            return Err(Error::UnknownVersion(
                u8::try_from(version).unwrap_or(u8::MAX),
            ));
        }
        let kind = FileKind::from_u8(b[10])?;
        if b[11] != 0 || b[116..120] != [0; 4] || b[144..160] != [0; 16] {
            return Err(Error::Malformed);
        }
        let p = Self {
            kind,
            frame_size: le_u32(b, 12),
            key_id: arr32(b, 16),
            salt: arr32(b, 48),
            content_id: arr32(b, 80),
            tensor_count: le_u32(b, 112),
            table_len: le_u64(b, 120),
            data_len: le_u64(b, 128),
            frame_count: le_u64(b, 136),
        };
        p.validate()?;
        Ok(p)
    }

    /// The checks of [`Preamble::parse`] on the decoded fields.
    pub fn validate(&self) -> Result<(), Error> {
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&self.frame_size) {
            return Err(Error::Malformed);
        }
        match self.kind {
            FileKind::Safetensors => {
                if self.tensor_count > MAX_TENSORS
                    || self.table_len == 0
                    || self.table_len > MAX_TABLE_LEN
                {
                    return Err(Error::Malformed);
                }
                // The table, then at least one frame per tensor.
                let least = frames_of(self.table_len, self.frame_size)
                    .checked_add(u64::from(self.tensor_count))
                    .ok_or(Error::Malformed)?;
                if self.frame_count < least {
                    return Err(Error::Malformed);
                }
            }
            FileKind::Blob | FileKind::Manifest => {
                if self.tensor_count != 0
                    || self.table_len != 0
                    || self.frame_count != frames_of(self.data_len, self.frame_size)
                {
                    return Err(Error::Malformed);
                }
            }
        }
        Ok(())
    }
}

/// Frames a tensor of `len` bytes takes at `frame_size` (an empty tensor takes one
/// empty FINAL frame). `frame_size` must not be 0.
pub fn frames_of(len: u64, frame_size: u32) -> u64 {
    if len == 0 {
        1
    } else {
        len.div_ceil(u64::from(frame_size.max(1)))
    }
}

/// Checks a relative path of a file in a model directory: 1 to [`MAX_PATH_LEN`]
/// bytes, `/`-separated, no empty, `.` or `..` component, no leading `/`, no NUL or
/// backslash, and not [`MANIFEST_PATH`].
pub fn check_path(path: &str) -> Result<(), Error> {
    if path.is_empty() || path.len() > MAX_PATH_LEN || path == MANIFEST_PATH {
        return Err(Error::InvalidArgument);
    }
    if path.bytes().any(|c| c == 0 || c == b'\\') {
        return Err(Error::InvalidArgument);
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(Error::InvalidArgument);
        }
    }
    Ok(())
}

/// Checks a model id `name@revision`: 3 to [`MAX_MODEL_ID_LEN`] bytes, one `@` with
/// something on each side, no control characters.
pub fn check_model_id(id: &str) -> Result<(), Error> {
    if id.len() > MAX_MODEL_ID_LEN || id.chars().any(char::is_control) {
        return Err(Error::InvalidArgument);
    }
    match id.rsplit_once('@') {
        Some((n, r)) if !n.is_empty() && !r.is_empty() => Ok(()),
        _ => Err(Error::InvalidArgument),
    }
}

/// The key id of a data-encryption key: SHA3-256(`"pqcc/v1/sealed/key-id"` ‖ DEK).
pub fn key_id(dek: &Secret<32>) -> [u8; 32] {
    hash::sha3_256(&[KEY_ID_LABEL, dek.expose()])
}

fn lp(len: usize) -> [u8; 4] {
    // Every length passed here is bounded by MAX_PATH_LEN or MAX_MODEL_ID_LEN.
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

/// The per-model key derived from the DEK, the salt and the model id.
pub struct ModelKey(Secret<32>);

impl core::fmt::Debug for ModelKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ModelKey(<redacted>)")
    }
}

impl ModelKey {
    /// model key = SHAKE256(`"pqcc/v1/sealed/model"` ‖ DEK ‖ salt ‖ len ‖ model id).
    pub fn derive(dek: &Secret<32>, salt: &[u8; 32], model_id: &str) -> Result<Self, Error> {
        check_model_id(model_id)?;
        let mut k = [0u8; 32];
        hash::shake256(
            &[
                MODEL_LABEL,
                dek.expose(),
                salt,
                &lp(model_id.len()),
                model_id.as_bytes(),
            ],
            &mut k,
        );
        let s = Secret::new(k);
        zeroize::Zeroize::zeroize(&mut k);
        Ok(Self(s))
    }

    /// content id = SHAKE256(`"pqcc/v1/sealed/content"` ‖ model key ‖ len ‖ path ‖
    /// SHA3-256 of the original file).
    pub fn content_id(&self, path: &str, plaintext_sha3: &[u8; 32]) -> Result<[u8; 32], Error> {
        check_path_or_manifest(path)?;
        let mut out = [0u8; 32];
        hash::shake256(
            &[
                CONTENT_LABEL,
                self.0.expose(),
                &lp(path.len()),
                path.as_bytes(),
                plaintext_sha3,
            ],
            &mut out,
        );
        Ok(out)
    }

    /// file key ‖ prefix = SHAKE256(`"pqcc/v1/sealed/file"` ‖ model key ‖ len ‖ path ‖
    /// preamble).
    pub fn file_key(&self, path: &str, preamble: &[u8; PREAMBLE_LEN]) -> Result<FileKey, Error> {
        check_path_or_manifest(path)?;
        let mut out = [0u8; 36];
        hash::shake256(
            &[
                FILE_LABEL,
                self.0.expose(),
                &lp(path.len()),
                path.as_bytes(),
                preamble,
            ],
            &mut out,
        );
        let key = Secret::from_slice(&out[..32]).ok_or(Error::InvalidKey)?;
        let mut prefix = [0u8; 4];
        prefix.copy_from_slice(&out[32..]);
        zeroize::Zeroize::zeroize(&mut out);
        Ok(FileKey { key, prefix })
    }
}

fn check_path_or_manifest(path: &str) -> Result<(), Error> {
    if path == MANIFEST_PATH {
        Ok(())
    } else {
        check_path(path)
    }
}

/// One file's AES-256-GCM key and nonce prefix.
pub struct FileKey {
    key: Secret<32>,
    prefix: [u8; 4],
}

impl core::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FileKey(<redacted>)")
    }
}

impl FileKey {
    /// The AES-256-GCM key (for openers that expand it elsewhere, e.g. on a GPU).
    pub fn key(&self) -> &Secret<32> {
        &self.key
    }

    /// The 4-byte nonce prefix.
    pub fn prefix(&self) -> [u8; 4] {
        self.prefix
    }
}

/// One tensor (or the table, or a blob) as its frames describe it: the metadata that
/// goes into every frame header, and the file's frame size.
#[derive(Debug, Clone)]
pub struct FrameRun<'a> {
    /// The metadata in every header of this run.
    pub meta: TensorMetadata<'a>,
    /// Sequence number of the first frame.
    pub first_seq: u64,
    /// The file's frame size.
    pub frame_size: u32,
}

impl<'a> FrameRun<'a> {
    /// The run of the table (tensor id 0, [`TABLE_NAME`], bytes).
    pub fn table(table_len: u64, frame_size: u32) -> Result<Self, Error> {
        Ok(Self {
            meta: TensorMetadata::new(0, TABLE_NAME, DType::Bytes, &[table_len])?,
            first_seq: 0,
            frame_size,
        })
    }

    /// The run of a blob or the manifest (tensor id 0, [`BLOB_NAME`], bytes).
    pub fn blob(len: u64, frame_size: u32) -> Result<Self, Error> {
        Ok(Self {
            meta: TensorMetadata::new(0, BLOB_NAME, DType::Bytes, &[len])?,
            first_seq: 0,
            frame_size,
        })
    }

    /// Number of frames.
    pub fn frames(&self) -> u64 {
        frames_of(self.meta.total_len, self.frame_size)
    }

    /// Sequence number after the last frame.
    pub fn end_seq(&self) -> Result<u64, Error> {
        self.first_seq
            .checked_add(self.frames())
            .ok_or(Error::Oversize)
    }

    /// Plaintext offset and length of frame `i` of the run.
    pub fn chunk(&self, i: u64) -> Result<(u64, u32), Error> {
        if i >= self.frames() {
            return Err(Error::InvalidArgument);
        }
        let off = i
            .checked_mul(u64::from(self.frame_size))
            .ok_or(Error::Oversize)?;
        let left = self.meta.total_len - off.min(self.meta.total_len);
        let len = left.min(u64::from(self.frame_size));
        Ok((off, u32::try_from(len).map_err(|_| Error::Oversize)?))
    }

    fn fields(&self, i: u64) -> Result<HeaderFields, Error> {
        let (offset, chunk_len) = self.chunk(i)?;
        let end = offset + u64::from(chunk_len);
        Ok(HeaderFields {
            version: PROTOCOL_VERSION,
            stream: 0,
            epoch: 0,
            seq: self.first_seq.checked_add(i).ok_or(Error::Oversize)?,
            flags: if end == self.meta.total_len {
                FLAG_FINAL
            } else {
                0
            },
            chunk_len,
            offset,
        })
    }

    /// Writes the exact header frame `i` must carry into `out`; returns its length.
    pub fn header(&self, i: u64, out: &mut [u8]) -> Result<usize, Error> {
        let f = self.fields(i)?;
        f.validate(&self.meta)?;
        f.emit(&self.meta, out)
    }

    /// Length of frame `i` on disk: ciphertext and tag (the header is not stored: it is
    /// recomputed from the sealed table, so names, dtypes and shapes stay sealed).
    pub fn frame_len(&self, i: u64) -> Result<usize, Error> {
        let (_, c) = self.chunk(i)?;
        Ok(c as usize + TAG_LEN)
    }

    /// Length of the whole run on disk: its plaintext plus one tag per frame.
    pub fn sealed_len(&self) -> Result<u64, Error> {
        self.frames()
            .checked_mul(TAG_LEN as u64)
            .and_then(|t| t.checked_add(self.meta.total_len))
            .ok_or(Error::Oversize)
    }
}

/// AES-256-GCM under one file's key, for sealing and opening its frames.
pub struct FileCipher<A: Aes256GcmProvider> {
    aead: A,
    prefix: [u8; 4],
}

impl<A: Aes256GcmProvider> core::fmt::Debug for FileCipher<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FileCipher")
            .field("aead", &A::NAME)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The nonce of frame `seq` under `prefix`: prefix ‖ seq (u64 BE), as in the channel.
pub fn nonce(prefix: [u8; 4], seq: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(&prefix);
    n[4..].copy_from_slice(&seq.to_be_bytes());
    n
}

impl<A: Aes256GcmProvider> FileCipher<A> {
    /// Expands the file key.
    pub fn new(key: &FileKey) -> Self {
        Self {
            aead: A::new(key.key.expose()),
            prefix: key.prefix,
        }
    }

    /// Seals frame `i` of `run`: `plaintext` (its chunk) is encrypted into
    /// `frame[..chunk_len]` and the tag follows; the AAD is the header
    /// [`FrameRun::header`] gives. Returns the frame's length on disk.
    pub fn seal_frame_from(
        &self,
        run: &FrameRun<'_>,
        i: u64,
        plaintext: &[u8],
        frame: &mut [u8],
    ) -> Result<usize, Error> {
        let mut h = [0u8; FRAME_HEADER_MAX_LEN];
        let hl = run.header(i, &mut h)?;
        let (_, c) = run.chunk(i)?;
        let c = c as usize;
        if plaintext.len() != c {
            return Err(Error::InvalidArgument);
        }
        let total = c + TAG_LEN;
        let out = frame.get_mut(..total).ok_or(Error::BufferTooSmall)?;
        let (body, tail) = out.split_at_mut(c);
        body.copy_from_slice(plaintext);
        let seq = run.first_seq + i;
        let tag = self
            .aead
            .seal_in_place(&nonce(self.prefix, seq), &h[..hl], body)?;
        tail.copy_from_slice(&tag);
        Ok(total)
    }

    /// Opens frame `i` of `run` (`ciphertext ‖ tag`, exactly [`FrameRun::frame_len`]
    /// bytes: [`Error::Truncated`] / [`Error::TrailingBytes`] otherwise) in place and
    /// returns the plaintext. A frame from anywhere else (another place in the file,
    /// another tensor, file or model) or with any changed byte fails its tag
    /// ([`Error::Decrypt`]) and the buffer is zeroed.
    pub fn open_frame<'f>(
        &self,
        run: &FrameRun<'_>,
        i: u64,
        frame: &'f mut [u8],
    ) -> Result<&'f mut [u8], Error> {
        let (_, c) = run.chunk(i)?;
        let c = c as usize;
        let total = c + TAG_LEN;
        if frame.len() < total {
            return Err(Error::Truncated);
        }
        if frame.len() > total {
            return Err(Error::TrailingBytes);
        }
        let (body, tail) = frame.split_at_mut(c);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(tail);
        self.open_parts(run, i, body, &tag)?;
        Ok(body)
    }

    /// Opens frame `i` of `run` from its parts: the ciphertext `body` (decrypted in
    /// place; zeroed when the tag fails) and the `tag`. For readers that place the
    /// ciphertext straight where the plaintext belongs.
    pub fn open_parts(
        &self,
        run: &FrameRun<'_>,
        i: u64,
        body: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Error> {
        let mut h = [0u8; FRAME_HEADER_MAX_LEN];
        let hl = run.header(i, &mut h)?;
        let (_, c) = run.chunk(i)?;
        if body.len() != c as usize {
            return Err(Error::Truncated);
        }
        let seq = run.first_seq + i;
        if let Err(e) = self
            .aead
            .open_in_place(&nonce(self.prefix, seq), &h[..hl], body, tag)
        {
            body.fill(0);
            return Err(e);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Strict little readers and writers for the table and the manifest

/// A cursor over untrusted bytes with canonical varints (postcard's LEB128, refused
/// when padded or over 64 bits).
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `b`.
    pub fn new(b: &'a [u8]) -> Self {
        Self { b, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    /// One byte.
    pub fn byte(&mut self) -> Result<u8, Error> {
        let v = *self.b.get(self.pos).ok_or(Error::Truncated)?;
        self.pos += 1;
        Ok(v)
    }

    /// `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).ok_or(Error::Truncated)?;
        let s = self.b.get(self.pos..end).ok_or(Error::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    /// A canonical varint.
    pub fn varint(&mut self) -> Result<u64, Error> {
        let mut v: u64 = 0;
        for i in 0..10u32 {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            if i == 9 && byte > 1 {
                return Err(Error::Malformed);
            }
            v |= bits << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return Err(Error::NonCanonical);
                }
                return Ok(v);
            }
        }
        Err(Error::Malformed)
    }

    /// A varint that must fit `usize` and be at most `max`.
    pub fn bounded_len(&mut self, max: usize) -> Result<usize, Error> {
        let v = self.varint()?;
        let v = usize::try_from(v).map_err(|_| Error::Oversize)?;
        if v > max {
            return Err(Error::Oversize);
        }
        Ok(v)
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str(&mut self, max: usize) -> Result<&'a str, Error> {
        let n = self.bounded_len(max)?;
        core::str::from_utf8(self.take(n)?).map_err(|_| Error::Malformed)
    }

    /// Refuses unread bytes.
    pub fn finish(&self) -> Result<(), Error> {
        if self.remaining() != 0 {
            return Err(Error::TrailingBytes);
        }
        Ok(())
    }
}

/// A writer into a caller's buffer, the counterpart of [`Reader`].
#[derive(Debug)]
pub struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> Writer<'b> {
    /// A writer at the start of `buf`.
    pub fn new(buf: &'b mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.pos
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// One byte.
    pub fn byte(&mut self, v: u8) -> Result<(), Error> {
        *self.buf.get_mut(self.pos).ok_or(Error::BufferTooSmall)? = v;
        self.pos += 1;
        Ok(())
    }

    /// Raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> Result<(), Error> {
        let end = self.pos.checked_add(b.len()).ok_or(Error::BufferTooSmall)?;
        self.buf
            .get_mut(self.pos..end)
            .ok_or(Error::BufferTooSmall)?
            .copy_from_slice(b);
        self.pos = end;
        Ok(())
    }

    /// A varint (the channel header's encoder, `wire::put_varint`).
    pub fn varint(&mut self, v: u64) -> Result<(), Error> {
        self.pos = crate::wire::put_varint(self.buf, self.pos, v)?;
        Ok(())
    }

    /// A length-prefixed string.
    pub fn str(&mut self, s: &str) -> Result<(), Error> {
        self.varint(s.len() as u64)?;
        self.bytes(s.as_bytes())
    }
}

/// The element type with this frozen value ([`DType`]'s variant order).
pub fn dtype_from_u8(v: u8) -> Result<DType, Error> {
    Ok(match v {
        0 => DType::Bytes,
        1 => DType::Bool,
        2 => DType::U8,
        3 => DType::I8,
        4 => DType::U16,
        5 => DType::I16,
        6 => DType::U32,
        7 => DType::I32,
        8 => DType::U64,
        9 => DType::I64,
        10 => DType::F16,
        11 => DType::BF16,
        12 => DType::F32,
        13 => DType::F64,
        14 => DType::F8E4M3,
        15 => DType::F8E5M2,
        _ => return Err(Error::Malformed),
    })
}

/// One tensor of a sealed safetensors file, as its table entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its element type.
    pub dtype: DType,
    /// Its shape.
    pub shape: heapless::Vec<u64, MAX_RANK>,
    /// Offset of its bytes in the original file's data section (after the header).
    pub data_offset: u64,
}

impl<'a> TensorEntry<'a> {
    /// Its length in bytes (checked when the table was parsed).
    pub fn len(&self) -> u64 {
        self.meta(0).map(|m| m.total_len).unwrap_or(0)
    }

    /// True for a tensor without elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The metadata its frames carry, with tensor id `id`.
    pub fn meta(&self, id: u64) -> Result<TensorMetadata<'a>, Error> {
        TensorMetadata::new(id, self.name, self.dtype, &self.shape)
    }

    /// Writes the entry: name, dtype, rank, dims, data offset.
    pub fn emit(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.str(self.name)?;
        w.byte(self.dtype as u8)?;
        w.byte(u8::try_from(self.shape.len()).map_err(|_| Error::InvalidArgument)?)?;
        for &d in &self.shape {
            w.varint(d)?;
        }
        w.varint(self.data_offset)
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Error> {
        let name = r.str(crate::wire::MAX_TENSOR_NAME_LEN)?;
        if name.is_empty() {
            return Err(Error::Malformed);
        }
        let dtype = dtype_from_u8(r.byte()?)?;
        let rank = usize::from(r.byte()?);
        if rank > MAX_RANK {
            return Err(Error::Oversize);
        }
        let mut shape = heapless::Vec::new();
        for _ in 0..rank {
            shape.push(r.varint()?).map_err(|_| Error::Oversize)?;
        }
        let data_offset = r.varint()?;
        let e = Self {
            name,
            dtype,
            shape,
            data_offset,
        };
        // The shape must give a length that fits (checked arithmetic in `new`).
        e.meta(0).map_err(|_| Error::Malformed)?;
        Ok(e)
    }
}

/// The decrypted table of a sealed safetensors file:
///
/// ```text
/// varint H, H bytes   the original file's header (8-byte LE length ‖ JSON), verbatim
/// varint N            tensor count (= the preamble's)
/// N × entry           name (varint length ‖ UTF-8, 1..=128 bytes), dtype (u8),
///                     rank (u8, ≤ 8), rank × dim (varint), data offset (varint)
/// ```
///
/// Entries are in data order and cover the data section exactly: each data offset
/// is the sum of the lengths before it (safetensors allows no holes).
#[derive(Debug, Clone)]
pub struct Table<'a> {
    /// The original header bytes (8-byte length ‖ JSON), for byte-exact unsealing.
    pub original_header: &'a [u8],
    count: u32,
    entries: &'a [u8],
    data_len: u64,
}

impl<'a> Table<'a> {
    /// Parses and checks the whole table: strict encoding, `count` entries as the
    /// preamble says, names of 1 to 128 bytes, known dtypes, shapes whose byte length
    /// fits, contiguous data offsets, no trailing bytes.
    pub fn parse(bytes: &'a [u8], count: u32) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        let h = r.bounded_len(bytes.len())?;
        let original_header = r.take(h)?;
        let n = r.varint()?;
        if n != u64::from(count) || count > MAX_TENSORS {
            return Err(Error::Malformed);
        }
        let start = r.pos;
        let mut next = 0u64;
        for _ in 0..count {
            let e = TensorEntry::read(&mut r)?;
            if e.data_offset != next {
                return Err(Error::Malformed);
            }
            next = next.checked_add(e.len()).ok_or(Error::Oversize)?;
        }
        let entries = &bytes[start..r.pos];
        r.finish()?;
        Ok(Self {
            original_header,
            count,
            entries,
            data_len: next,
        })
    }

    /// Number of tensors.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Total length of the tensors' bytes.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// The entries in order.
    pub fn entries(&self) -> TableEntries<'a> {
        TableEntries {
            r: Reader::new(self.entries),
            left: self.count,
        }
    }

    /// Writes a table: the original header, then `entries`.
    pub fn emit<'e>(
        original_header: &[u8],
        entries: impl ExactSizeIterator<Item = &'e TensorEntry<'e>>,
        out: &mut [u8],
    ) -> Result<usize, Error> {
        let mut w = Writer::new(out);
        w.varint(original_header.len() as u64)?;
        w.bytes(original_header)?;
        w.varint(entries.len() as u64)?;
        for e in entries {
            e.emit(&mut w)?;
        }
        Ok(w.len())
    }
}

/// Iterator over a parsed [`Table`]'s entries.
#[derive(Debug, Clone)]
pub struct TableEntries<'a> {
    r: Reader<'a>,
    left: u32,
}

impl<'a> Iterator for TableEntries<'a> {
    type Item = Result<TensorEntry<'a>, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(TensorEntry::read(&mut self.r))
    }
}

/// One file of a sealed model, as the manifest lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestEntry<'a> {
    /// Relative path in the original model directory (sealed as `PATH.sealed`).
    pub path: &'a str,
    /// What the sealed file holds.
    pub kind: FileKind,
    /// Length of the original file.
    pub len: u64,
    /// The content id the sealed file's preamble must carry.
    pub content_id: [u8; 32],
}

impl ManifestEntry<'_> {
    /// Writes the entry.
    pub fn emit(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.str(self.path)?;
        w.byte(self.kind as u8)?;
        w.varint(self.len)?;
        w.bytes(&self.content_id)
    }
}

/// The decrypted manifest:
///
/// ```text
/// u8                  manifest version (1)
/// varint L, L bytes   the model id name@revision
/// varint N            file count (1..=65536)
/// N × entry           path (varint length ‖ UTF-8), kind (u8: 0 blob, 1 safetensors),
///                     original length (varint), content id (32 bytes)
/// ```
///
/// Paths are valid ([`check_path`]) and in strictly increasing byte order, so each
/// appears once.
#[derive(Debug, Clone)]
pub struct Manifest<'a> {
    /// The model id.
    pub model_id: &'a str,
    count: u32,
    entries: &'a [u8],
}

impl<'a> Manifest<'a> {
    /// Parses and checks the whole manifest.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        if r.byte()? != MANIFEST_VERSION {
            return Err(Error::Malformed);
        }
        let model_id = r.str(MAX_MODEL_ID_LEN)?;
        check_model_id(model_id).map_err(|_| Error::Malformed)?;
        let n = r.varint()?;
        if n == 0 || n > u64::from(MAX_FILES) {
            return Err(Error::Malformed);
        }
        let count = u32::try_from(n).map_err(|_| Error::Malformed)?;
        let start = r.pos;
        let mut prev: Option<&str> = None;
        for _ in 0..count {
            let e = read_manifest_entry(&mut r)?;
            if let Some(p) = prev
                && p.as_bytes() >= e.path.as_bytes()
            {
                return Err(Error::Malformed);
            }
            prev = Some(e.path);
        }
        let entries = &bytes[start..r.pos];
        r.finish()?;
        Ok(Self {
            model_id,
            count,
            entries,
        })
    }

    /// Number of files.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The entries in path order.
    pub fn entries(&self) -> ManifestEntries<'a> {
        ManifestEntries {
            r: Reader::new(self.entries),
            left: self.count,
        }
    }

    /// Writes a manifest; `entries` must be in strictly increasing path order.
    pub fn emit<'e>(
        model_id: &str,
        entries: impl ExactSizeIterator<Item = &'e ManifestEntry<'e>>,
        out: &mut [u8],
    ) -> Result<usize, Error> {
        let mut w = Writer::new(out);
        w.byte(MANIFEST_VERSION)?;
        w.str(model_id)?;
        w.varint(entries.len() as u64)?;
        for e in entries {
            e.emit(&mut w)?;
        }
        Ok(w.len())
    }
}

fn read_manifest_entry<'a>(r: &mut Reader<'a>) -> Result<ManifestEntry<'a>, Error> {
    let path = r.str(MAX_PATH_LEN)?;
    check_path(path).map_err(|_| Error::Malformed)?;
    let kind = FileKind::from_u8(r.byte()?)?;
    if kind == FileKind::Manifest {
        return Err(Error::Malformed);
    }
    let len = r.varint()?;
    let mut content_id = [0u8; 32];
    content_id.copy_from_slice(r.take(32)?);
    Ok(ManifestEntry {
        path,
        kind,
        len,
        content_id,
    })
}

/// Iterator over a parsed [`Manifest`]'s entries.
#[derive(Debug, Clone)]
pub struct ManifestEntries<'a> {
    r: Reader<'a>,
    left: u32,
}

impl<'a> Iterator for ManifestEntries<'a> {
    type Item = Result<ManifestEntry<'a>, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(read_manifest_entry(&mut self.r))
    }
}

#[cfg(test)]
mod tests;
