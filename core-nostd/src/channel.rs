//! The encrypted channel: tensor frames sealed and opened with AES-256-GCM.
//!
//! A frame on the wire is `header ‖ ciphertext ‖ tag`, where `header` is a
//! [`FrameHeader`] whose exact encoded bytes are the AAD, and the nonce is the
//! direction's 4-byte prefix ‖ the header's `seq` (u64, big-endian) — never random.
//! Each direction has its own key and prefix, so a side can never open a frame it
//! sealed itself, and a frame from another session fails its tag.
//!
//! The receiver ([`Opener`]) checks, in order: the header decodes strictly and is
//! consistent; the epoch is current; the key has not expired (caller's `now`) or hit
//! its frame limit; the replay window accepts `seq` (duplicate and too-old are distinct
//! errors); the ciphertext length equals `chunk_len`; the tag. Only after the tag
//! verifies is `seq` marked in the window. A failed tag zeroes the buffer.
//!
//! Tensors larger than one frame are chunked: every chunk carries the tensor's
//! metadata and its offset, and the last one the FINAL flag. [`TensorAssembler`] refuses
//! a chunk that does not continue its tensor exactly (reordering, splicing, gaps,
//! overlaps) and a tensor that ends without FINAL (truncation).

use crate::{
    Error, PROTOCOL_VERSION,
    aead::{Aes256GcmProvider, NONCE_LEN, RustCryptoAesGcm, TAG_LEN},
    handshake::{Role, SessionKeys},
    hash,
    replay::{MAX_SEQ, ReplayWindow},
    secret::Secret,
    wire::{FLAG_FINAL, FrameHeader, HeaderFields, MAX_RANK, MAX_TENSOR_NAME_LEN, TensorMetadata},
};

/// Largest ciphertext one frame may carry (16 MiB).
pub const MAX_CHUNK_LEN: u32 = 16 * 1024 * 1024;

/// Replay window words used by [`Session`] by default (4 × 64 = 256 frames).
pub const DEFAULT_WINDOW_WORDS: usize = 4;

/// Key lifetime limits for one epoch of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Frames a key may seal (sender) or accept (receiver) before a rekey is required.
    pub max_frames: u64,
    /// Seconds a key lives after the handshake or its last rekey.
    pub ttl_secs: u64,
}

impl Default for Limits {
    /// 2^32 frames and one hour.
    fn default() -> Self {
        Self {
            max_frames: 1 << 32,
            ttl_secs: 3600,
        }
    }
}

/// One direction's key material and counters.
struct DirectionKey<A> {
    aead: A,
    key: Secret<32>,
    prefix: [u8; 4],
    epoch: u32,
    frames: u64,
    expires_at: u64,
    limits: Limits,
}

impl<A: Aes256GcmProvider> DirectionKey<A> {
    fn new(key: &Secret<32>, prefix: [u8; 4], limits: Limits, now: u64) -> Self {
        Self {
            aead: A::new(key.expose()),
            key: Secret::new(*key.expose()),
            prefix,
            epoch: 0,
            frames: 0,
            expires_at: now.saturating_add(limits.ttl_secs),
            limits,
        }
    }

    fn nonce(&self, seq: u64) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        n[..4].copy_from_slice(&self.prefix);
        n[4..].copy_from_slice(&seq.to_be_bytes());
        n
    }

    fn check_live(&self, now: u64) -> Result<(), Error> {
        if now >= self.expires_at {
            return Err(Error::KeyExpired);
        }
        if self.frames >= self.limits.max_frames.min(MAX_SEQ) {
            return Err(Error::FrameLimit);
        }
        Ok(())
    }

    /// key' = SHAKE256("pqcc/v1/rekey" ‖ key ‖ new epoch (u32 BE)).
    fn rekey(&mut self, now: u64) -> Result<(), Error> {
        let epoch = self.epoch.checked_add(1).ok_or(Error::FrameLimit)?;
        let mut next = [0u8; 32];
        hash::shake256(
            &[b"pqcc/v1/rekey", self.key.expose(), &epoch.to_be_bytes()],
            &mut next,
        );
        self.key = Secret::new(next);
        zeroize::Zeroize::zeroize(&mut next);
        self.aead = A::new(self.key.expose());
        self.epoch = epoch;
        self.frames = 0;
        self.expires_at = now.saturating_add(self.limits.ttl_secs);
        Ok(())
    }
}

/// The sending half of a channel.
pub struct Sealer<A: Aes256GcmProvider = RustCryptoAesGcm> {
    k: DirectionKey<A>,
    next_seq: u64,
}

impl<A: Aes256GcmProvider> core::fmt::Debug for Sealer<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sealer")
            .field("aead", &A::NAME)
            .field("key", &"<redacted>")
            .field("epoch", &self.k.epoch)
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

impl<A: Aes256GcmProvider> Sealer<A> {
    /// A sealer for one direction (normally made by [`Session::new`]).
    pub fn new(key: &Secret<32>, prefix: [u8; 4], limits: Limits, now: u64) -> Self {
        Self {
            k: DirectionKey::new(key, prefix, limits, now),
            next_seq: 0,
        }
    }

    /// The sequence number the next frame will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The current key epoch.
    pub fn epoch(&self) -> u32 {
        self.k.epoch
    }

    /// Derives the next epoch's key. The peer must call [`Opener::rekey`] at the same
    /// point in the stream (frames of the old epoch are refused afterwards).
    pub fn rekey(&mut self, now: u64) -> Result<(), Error> {
        self.k.rekey(now)?;
        self.next_seq = 0;
        Ok(())
    }

    /// Every check before sealing, and the header fields the frame will carry.
    fn prepare(
        &self,
        now: u64,
        stream: u32,
        meta: &TensorMetadata<'_>,
        offset: u64,
        len: usize,
    ) -> Result<HeaderFields, Error> {
        self.k.check_live(now)?;
        let chunk_len = u32::try_from(len).map_err(|_| Error::Oversize)?;
        if chunk_len > MAX_CHUNK_LEN {
            return Err(Error::Oversize);
        }
        let end = offset
            .checked_add(u64::from(chunk_len))
            .ok_or(Error::InvalidArgument)?;
        let fields = HeaderFields {
            version: PROTOCOL_VERSION,
            stream,
            epoch: self.k.epoch,
            seq: self.next_seq,
            flags: if end == meta.total_len { FLAG_FINAL } else { 0 },
            chunk_len,
            offset,
        };
        fields.validate(meta).map_err(|e| match e {
            Error::Malformed => Error::InvalidArgument,
            e => e,
        })?;
        Ok(fields)
    }

    /// Counters move only after a frame was produced. `frames < max_frames <= MAX_SEQ`
    /// was checked in `prepare`, so neither addition can overflow.
    fn advance(&mut self) {
        self.next_seq += 1;
        self.k.frames += 1;
    }

    /// Seals one chunk of a tensor in place: `chunk` (the bytes at `offset` of the
    /// tensor described by `meta`) is encrypted where it lies, the header is written to
    /// `header_out`. Returns the header length and the tag; the frame is
    /// `header_out[..len] ‖ chunk ‖ tag`. FINAL is set when the chunk reaches the end.
    pub fn seal_chunk_in_place(
        &mut self,
        now: u64,
        stream: u32,
        meta: &TensorMetadata<'_>,
        offset: u64,
        chunk: &mut [u8],
        header_out: &mut [u8],
    ) -> Result<(usize, [u8; TAG_LEN]), Error> {
        let f = self.prepare(now, stream, meta, offset, chunk.len())?;
        let hlen = f.emit(meta, header_out)?;
        let tag = self
            .k
            .aead
            .seal_in_place(&self.k.nonce(f.seq), &header_out[..hlen], chunk)?;
        self.advance();
        Ok((hlen, tag))
    }

    /// Seals a chunk into `out` as a complete frame (`header ‖ ciphertext ‖ tag`) and
    /// returns the frame length.
    pub fn seal_chunk(
        &mut self,
        now: u64,
        stream: u32,
        meta: &TensorMetadata<'_>,
        offset: u64,
        chunk: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Error> {
        let f = self.prepare(now, stream, meta, offset, chunk.len())?;
        let hlen = f.emit(meta, out)?;
        let total = hlen
            .checked_add(chunk.len())
            .and_then(|n| n.checked_add(TAG_LEN))
            .ok_or(Error::Oversize)?;
        if out.len() < total {
            return Err(Error::BufferTooSmall);
        }
        let (head, rest) = out.split_at_mut(hlen);
        let (body, tail) = rest.split_at_mut(chunk.len());
        body.copy_from_slice(chunk);
        let tag = self
            .k
            .aead
            .seal_in_place(&self.k.nonce(f.seq), head, body)?;
        tail[..TAG_LEN].copy_from_slice(&tag);
        self.advance();
        Ok(total)
    }
}

/// Where a received frame's parts are, after the header and freshness checks but
/// before decryption (for openers that decrypt elsewhere, e.g. on a GPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingFrame {
    /// The frame's sequence number.
    pub seq: u64,
    /// The AES-GCM nonce for this frame.
    pub nonce: [u8; NONCE_LEN],
    /// Length of the header (= AAD) at the start of the frame.
    pub header_len: usize,
    /// Length of the ciphertext after the header.
    pub ciphertext_len: usize,
}

/// A sealed frame seen from outside: the parsed header, the ciphertext and the tag,
/// borrowed from the frame bytes. This is all a host that relays frames to another
/// opener (a GPU, another process) ever sees; nothing here is authenticated until the
/// tag is checked.
#[derive(Debug, Clone)]
pub struct EncryptedFrame<'f> {
    /// The header (strictly decoded and self-consistent, not yet authenticated).
    pub header: FrameHeader<'f>,
    /// The exact header bytes, which are the AAD.
    pub aad: &'f [u8],
    /// The ciphertext (`header.chunk_len` bytes).
    pub ciphertext: &'f [u8],
    /// The GCM tag.
    pub tag: [u8; TAG_LEN],
}

impl<'f> EncryptedFrame<'f> {
    /// Splits `frame` into header, ciphertext and tag; refuses a body whose length is
    /// not `chunk_len + 16`.
    pub fn parse(frame: &'f [u8]) -> Result<Self, Error> {
        let (header, hlen) = FrameHeader::decode(frame)?;
        let (aad, body) = frame.split_at(hlen);
        let ct_len = usize::try_from(header.chunk_len).map_err(|_| Error::Oversize)?;
        if header.chunk_len > MAX_CHUNK_LEN {
            return Err(Error::Oversize);
        }
        match body.len().checked_sub(TAG_LEN) {
            None => Err(Error::Truncated),
            Some(n) if n < ct_len => Err(Error::Truncated),
            Some(n) if n > ct_len => Err(Error::TrailingBytes),
            Some(_) => {
                let (ciphertext, tag) = body.split_at(ct_len);
                let mut t = [0u8; TAG_LEN];
                t.copy_from_slice(tag);
                Ok(Self {
                    header,
                    aad,
                    ciphertext,
                    tag: t,
                })
            }
        }
    }
}

/// An opened frame: its header and the plaintext (decrypted in place in the frame).
#[derive(Debug)]
pub struct Opened<'f> {
    /// The authenticated header.
    pub header: FrameHeader<'f>,
    /// The plaintext.
    pub plaintext: &'f mut [u8],
}

/// The receiving half of a channel, with a replay window of `64 * W` frames.
pub struct Opener<A: Aes256GcmProvider = RustCryptoAesGcm, const W: usize = DEFAULT_WINDOW_WORDS> {
    k: DirectionKey<A>,
    window: ReplayWindow<W>,
}

impl<A: Aes256GcmProvider, const W: usize> core::fmt::Debug for Opener<A, W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Opener")
            .field("aead", &A::NAME)
            .field("key", &"<redacted>")
            .field("epoch", &self.k.epoch)
            .finish()
    }
}

impl<A: Aes256GcmProvider, const W: usize> Opener<A, W> {
    /// An opener for one direction (normally made by [`Session::new`]).
    pub fn new(key: &Secret<32>, prefix: [u8; 4], limits: Limits, now: u64) -> Self {
        Self {
            k: DirectionKey::new(key, prefix, limits, now),
            window: ReplayWindow::new(),
        }
    }

    /// The current key epoch.
    pub fn epoch(&self) -> u32 {
        self.k.epoch
    }

    /// Moves to the next epoch's key (see [`Sealer::rekey`]); the window restarts.
    pub fn rekey(&mut self, now: u64) -> Result<(), Error> {
        self.k.rekey(now)?;
        self.window = ReplayWindow::new();
        Ok(())
    }

    /// Every check that can be made before decryption. Does not change any state.
    pub fn check(&self, now: u64, frame: &[u8]) -> Result<PendingFrame, Error> {
        let f = EncryptedFrame::parse(frame)?;
        if f.header.epoch != self.k.epoch {
            return Err(Error::EpochMismatch {
                expected: self.k.epoch,
                got: f.header.epoch,
            });
        }
        self.k.check_live(now)?;
        self.window.check(f.header.seq)?;
        Ok(PendingFrame {
            seq: f.header.seq,
            nonce: self.k.nonce(f.header.seq),
            header_len: f.aad.len(),
            ciphertext_len: f.ciphertext.len(),
        })
    }

    /// Records a frame whose tag verified elsewhere (see [`Opener::check`]).
    pub fn commit(&mut self, pending: &PendingFrame) -> Result<(), Error> {
        self.window.mark(pending.seq)?;
        self.k.frames += 1;
        Ok(())
    }

    /// Opens `frame` (`header ‖ ciphertext ‖ tag`) in place.
    pub fn open_in_place<'f>(
        &mut self,
        now: u64,
        frame: &'f mut [u8],
    ) -> Result<Opened<'f>, Error> {
        let p = self.check(now, frame)?;
        let (head, rest) = frame.split_at_mut(p.header_len);
        let head: &'f [u8] = head;
        // These bytes passed the strict decode in `check`; decode them again, plainly,
        // to hand out a header that borrows the frame (before anything is committed).
        let (header, _) = FrameHeader::decode_prefix(head)?;
        let (ct, tag) = rest.split_at_mut(p.ciphertext_len);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().map_err(|_| Error::Truncated)?;
        if let Err(e) = self.k.aead.open_in_place(&p.nonce, head, ct, tag) {
            ct.fill(0);
            return Err(e);
        }
        self.commit(&p)?;
        Ok(Opened {
            header,
            plaintext: ct,
        })
    }
}

/// Both halves of a channel plus the session's public id and exporter.
pub struct Session<A: Aes256GcmProvider = RustCryptoAesGcm, const W: usize = DEFAULT_WINDOW_WORDS> {
    /// Seals frames to the peer.
    pub tx: Sealer<A>,
    /// Opens frames from the peer.
    pub rx: Opener<A, W>,
    keys: SessionKeys,
}

impl<A: Aes256GcmProvider, const W: usize> core::fmt::Debug for Session<A, W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.keys.role)
            .field("tx", &self.tx)
            .field("rx", &self.rx)
            .finish()
    }
}

impl<A: Aes256GcmProvider, const W: usize> Session<A, W> {
    /// Builds the channel from finished handshake keys: the initiator seals with the
    /// initiator→responder key and opens with the other, the responder the reverse.
    pub fn new(keys: SessionKeys, limits: Limits, now: u64) -> Self {
        let (tx, rx) = match keys.role {
            Role::Initiator => (
                Sealer::new(&keys.i2r_key, keys.i2r_prefix, limits, now),
                Opener::new(&keys.r2i_key, keys.r2i_prefix, limits, now),
            ),
            Role::Responder => (
                Sealer::new(&keys.r2i_key, keys.r2i_prefix, limits, now),
                Opener::new(&keys.i2r_key, keys.i2r_prefix, limits, now),
            ),
        };
        Self { tx, rx, keys }
    }

    /// The public session id (equal on both sides).
    pub fn session_id(&self) -> &[u8; 32] {
        &self.keys.session_id
    }

    /// Derives an application secret from the exporter (see [`SessionKeys::export`]).
    pub fn export(&self, label: &[u8]) -> Secret<32> {
        self.keys.export(label)
    }

    /// Whether the channel can still seal at `now` (the seed's `is_valid`).
    pub fn is_valid(&self, now: u64) -> bool {
        self.tx.k.check_live(now).is_ok() && self.rx.k.check_live(now).is_ok()
    }

    /// Seconds until the sending key expires at `now` (0 when expired).
    pub fn ttl_remaining(&self, now: u64) -> u64 {
        self.tx.k.expires_at.saturating_sub(now)
    }
}

// ---------------------------------------------------------------------------------
// Tensor reassembly

/// Position of an accepted chunk within its tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPosition {
    /// The stream.
    pub stream: u32,
    /// The tensor id.
    pub tensor_id: u64,
    /// Offset of the chunk.
    pub offset: u64,
    /// Length of the chunk.
    pub len: u32,
    /// Whether the tensor is now complete.
    pub complete: bool,
}

#[derive(Debug, Clone)]
struct InProgress {
    stream: u32,
    id: u64,
    name: heapless::String<MAX_TENSOR_NAME_LEN>,
    dtype: crate::wire::DType,
    shape: heapless::Vec<u64, MAX_RANK>,
    total_len: u64,
    next_offset: u64,
}

/// Enforces that each stream's chunks arrive as one tensor at a time, contiguous from
/// offset 0 to FINAL, with identical metadata in every chunk. Feed it the header of
/// every opened frame, in the order frames were opened. Tracks up to `S` streams with a
/// tensor in progress.
#[derive(Debug, Default)]
pub struct TensorAssembler<const S: usize> {
    active: heapless::Vec<InProgress, S>,
}

impl<const S: usize> TensorAssembler<S> {
    /// An assembler with no tensor in progress.
    pub fn new() -> Self {
        Self {
            active: heapless::Vec::new(),
        }
    }

    /// Whether a tensor is in progress on `stream`.
    pub fn in_progress(&self, stream: u32) -> bool {
        self.active.iter().any(|p| p.stream == stream)
    }

    /// Accepts the next chunk or explains why it does not continue its stream.
    pub fn accept(&mut self, h: &FrameHeader<'_>) -> Result<ChunkPosition, Error> {
        let end = h
            .offset
            .checked_add(u64::from(h.chunk_len))
            .ok_or(Error::Malformed)?;
        let pos = ChunkPosition {
            stream: h.stream,
            tensor_id: h.meta.id,
            offset: h.offset,
            len: h.chunk_len,
            complete: h.is_final(),
        };
        if let Some(i) = self.active.iter().position(|p| p.stream == h.stream) {
            let p = &mut self.active[i];
            if p.id != h.meta.id {
                // A new tensor started before the previous one's FINAL.
                return Err(Error::TensorTruncated);
            }
            let same = p.name.as_str() == h.meta.name
                && p.dtype == h.meta.dtype
                && p.shape == h.meta.shape
                && p.total_len == h.meta.total_len;
            if !same || h.offset != p.next_offset {
                return Err(Error::ChunkOutOfOrder);
            }
            if h.is_final() {
                self.active.swap_remove(i);
            } else {
                p.next_offset = end;
            }
            return Ok(pos);
        }
        if h.offset != 0 {
            return Err(Error::ChunkOutOfOrder);
        }
        if !h.is_final() {
            let mut name = heapless::String::new();
            name.push_str(h.meta.name).map_err(|_| Error::Oversize)?;
            self.active
                .push(InProgress {
                    stream: h.stream,
                    id: h.meta.id,
                    name,
                    dtype: h.meta.dtype,
                    shape: h.meta.shape.clone(),
                    total_len: h.meta.total_len,
                    next_offset: end,
                })
                .map_err(|_| Error::TooManyStreams)?;
        }
        Ok(pos)
    }

    /// Declares the end of `stream`: an unfinished tensor on it is
    /// [`Error::TensorTruncated`].
    pub fn finish_stream(&mut self, stream: u32) -> Result<(), Error> {
        if let Some(i) = self.active.iter().position(|p| p.stream == stream) {
            self.active.swap_remove(i);
            return Err(Error::TensorTruncated);
        }
        Ok(())
    }
}
