//! The one error type of pqcc-core.
//!
//! Errors are data: no strings, a doc line per variant, grouped as malformed input,
//! peer misbehaviour, policy refusal and misuse. `Display` gives a short fixed text
//! suitable for a log line; nothing secret ever appears in an error.

use core::fmt;

use crate::{statement::Kind, wire::RejectReason};

/// Everything that can go wrong in pqcc-core.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    // ---- malformed input -------------------------------------------------
    /// A message or header could not be decoded (bad encoding, bad enum tag, bad UTF-8).
    Malformed,
    /// A message ended before it was complete.
    Truncated,
    /// Bytes followed the end of a complete message.
    TrailingBytes,
    /// A message or field is larger than its declared maximum.
    Oversize,
    /// A message's encoding is not the one canonical encoding (e.g. a padded varint).
    NonCanonical,
    /// The version byte is not one this implementation speaks.
    UnknownVersion(u8),
    /// A key, ciphertext or signature has the wrong length or is not a valid encoding.
    InvalidKey,
    /// A message of another type arrived where this one was expected.
    UnexpectedMessage,
    /// A signed statement of another kind arrived where this kind was required (e.g. an
    /// eBPF program statement presented as a driver module statement).
    WrongKind {
        /// The kind the caller asked for.
        expected: Kind,
        /// The kind the envelope carries.
        got: Kind,
    },
    /// A signed statement names a signature algorithm other than ML-DSA-65.
    UnsupportedAlgorithm(u8),

    // ---- peer misbehaviour / authentication ------------------------------
    /// The AEAD tag did not verify: the frame was modified, is from another session or
    /// direction, or was sealed under another key.
    Decrypt,
    /// The ML-DSA signature did not verify.
    BadSignature,
    /// A frame with this sequence number was already accepted.
    Replay {
        /// The duplicated sequence number.
        seq: u64,
    },
    /// A frame's sequence number is older than the replay window still tracks.
    TooOld {
        /// The refused sequence number.
        seq: u64,
    },
    /// A frame was sealed under another key epoch (a rekey happened on one side only).
    EpochMismatch {
        /// The epoch the receiver expects.
        expected: u32,
        /// The epoch in the frame header.
        got: u32,
    },
    /// A tensor chunk does not continue the tensor being received (wrong offset, wrong
    /// metadata, gap, overlap, FINAL missing or early, or beyond the total length).
    ChunkOutOfOrder,
    /// A tensor ended (stream closed or new tensor started) before its FINAL chunk.
    TensorTruncated,
    /// More tensor streams are in progress at once than the receiver tracks.
    TooManyStreams,
    /// The responder refused the handshake with this reason.
    Rejected(RejectReason),

    // ---- policy refusal ----------------------------------------------------
    /// A signed statement's signer id is not in the verifier's trust store.
    UnknownSigner,
    /// The channel keys have expired by time; establish a new session.
    KeyExpired,
    /// The channel keys have sealed or opened their maximum number of frames; rekey.
    FrameLimit,

    // ---- misuse --------------------------------------------------------------
    /// The output buffer is too small for what must be written into it.
    BufferTooSmall,
    /// A state machine method was called in the wrong state, or a handshake object was
    /// used after it failed.
    InvalidState,
    /// An argument is out of its allowed range (a too-long name, a too-long context).
    InvalidArgument,
    /// The random number generator failed.
    Rng,
}

impl Error {
    /// The group this error belongs to, for callers that act per group.
    pub fn kind(&self) -> ErrorKind {
        use Error::*;
        match self {
            Malformed
            | Truncated
            | TrailingBytes
            | Oversize
            | NonCanonical
            | UnknownVersion(_)
            | InvalidKey
            | UnexpectedMessage
            | WrongKind { .. }
            | UnsupportedAlgorithm(_) => ErrorKind::MalformedInput,
            Decrypt
            | BadSignature
            | Replay { .. }
            | TooOld { .. }
            | EpochMismatch { .. }
            | ChunkOutOfOrder
            | TensorTruncated
            | TooManyStreams
            | Rejected(_) => ErrorKind::PeerMisbehaviour,
            UnknownSigner | KeyExpired | FrameLimit => ErrorKind::PolicyRefusal,
            BufferTooSmall | InvalidState | InvalidArgument | Rng => ErrorKind::Misuse,
        }
    }
}

/// Groups of [`Error`]s.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bytes from outside did not decode.
    MalformedInput,
    /// Bytes decoded but failed authentication, freshness or ordering.
    PeerMisbehaviour,
    /// A limit set by policy was reached.
    PolicyRefusal,
    /// The caller used the API wrongly.
    Misuse,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Malformed => f.write_str("malformed message"),
            Error::Truncated => f.write_str("truncated message"),
            Error::TrailingBytes => f.write_str("trailing bytes after message"),
            Error::Oversize => f.write_str("message or field over its maximum size"),
            Error::NonCanonical => f.write_str("non-canonical encoding"),
            Error::UnknownVersion(v) => write!(f, "unknown protocol version {v}"),
            Error::InvalidKey => f.write_str("invalid key, ciphertext or signature encoding"),
            Error::UnexpectedMessage => f.write_str("unexpected message type"),
            Error::WrongKind { expected, got } => write!(
                f,
                "signed statement of kind {} where {} was required",
                got.name(),
                expected.name()
            ),
            Error::UnsupportedAlgorithm(a) => write!(f, "unsupported signature algorithm {a}"),
            Error::Decrypt => f.write_str("authentication tag did not verify"),
            Error::BadSignature => f.write_str("signature did not verify"),
            Error::Replay { seq } => write!(f, "replayed frame (seq {seq})"),
            Error::TooOld { seq } => write!(f, "frame older than the replay window (seq {seq})"),
            Error::EpochMismatch { expected, got } => {
                write!(f, "key epoch mismatch (expected {expected}, got {got})")
            }
            Error::ChunkOutOfOrder => f.write_str("tensor chunk out of order"),
            Error::TensorTruncated => f.write_str("tensor ended before its final chunk"),
            Error::TooManyStreams => f.write_str("too many tensor streams in progress"),
            Error::Rejected(r) => write!(f, "rejected by responder: {r}"),
            Error::UnknownSigner => f.write_str("signer not in the trust store"),
            Error::KeyExpired => f.write_str("channel key expired"),
            Error::FrameLimit => f.write_str("channel key reached its frame limit; rekey"),
            Error::BufferTooSmall => f.write_str("output buffer too small"),
            Error::InvalidState => f.write_str("called in the wrong state"),
            Error::InvalidArgument => f.write_str("argument out of range"),
            Error::Rng => f.write_str("random number generator failed"),
        }
    }
}

impl core::error::Error for Error {}
