//! The v1 handshake (ARCHITECTURE.md, "Protocol v1") as two state machines.
//!
//! ```text
//!  guest (Initiator)                                   broker (Responder)
//!                     <── Challenge { nonce_b }          Responder::start
//!  handle_challenge: fresh ML-KEM-768 key, nonce_g,
//!    binding = SHA3-512("pqcc/v1/bind" ‖ TH1)
//!  (get evidence with report data = binding)
//!  write_hello        ── Hello { nonce_g, ek, evidence } ──> handle_hello
//!                                                      (verify evidence + binding, policy)
//!                     <── Accept { ct, grants, sig } ── accept / reject
//!  handle_response: verify sig, decapsulate, keys       keys
//! ```
//!
//! Transcript (SHA3-256 over length-prefixed items, label `pqcc/v1/transcript`):
//! `Challenge bytes`, `nonce_g`, `ek` → TH1 (bound into the evidence); then the exact
//! `Hello bytes` received; then the exact `Accept bytes` before its signature field →
//! TH2, which the broker signs with ML-DSA-65 under context `pqcc/v1/handshake`; then
//! the signature → TH3. Keys: `SHAKE256("pqcc/v1/keys" ‖ ss ‖ TH3)` split into
//! initiator→responder key (32) ‖ responder→initiator key (32) ‖ i→r nonce prefix (4) ‖
//! r→i nonce prefix (4) ‖ session id (32) ‖ exporter secret (32).
//!
//! Every state is consumed by its transition, so a handshake object cannot be reused
//! after a step, successful or not.

use heapless::Vec;
use rand_core::CryptoRng;

use crate::{
    Error, hash,
    hash::Transcript,
    kem::{self, DecapsulationKey, EncapsulationKey},
    secret::Secret,
    sign::{self, SigningKey, VerifyingKey},
    wire::{
        self, Accept, Bytes, Challenge, Evidence, Grant, Hello, MAX_GRANTS, Message, Reject,
        RejectReason,
    },
};

/// ML-DSA context string of the broker's handshake signature.
pub const SIGNATURE_CONTEXT: &[u8] = b"pqcc/v1/handshake";
const TRANSCRIPT_LABEL: &[u8] = b"pqcc/v1/transcript";
const BIND_LABEL: &[u8] = b"pqcc/v1/bind";
const KEYS_LABEL: &[u8] = b"pqcc/v1/keys";
const GPU_NONCE_LABEL: &[u8] = b"pqcc/v1/gpu-nonce";

/// The 64-byte value that must appear as the report data of the guest's evidence:
/// `SHA3-512("pqcc/v1/bind" ‖ TH1)`. It binds the report to this challenge and this
/// ML-KEM key, so a report cannot be relayed into another handshake.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BindingValue(pub [u8; 64]);

impl core::fmt::Debug for BindingValue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("BindingValue(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…)")
    }
}

impl BindingValue {
    fn from_transcript(th1: &[u8; 32]) -> Self {
        Self(hash::sha3_512(&[BIND_LABEL, th1]))
    }

    /// Constant-time comparison with report data taken from evidence.
    pub fn matches(&self, report_data: &[u8]) -> bool {
        crate::secret::ct_eq(&self.0, report_data)
    }

    /// The nonce a GPU must sign in its attestation report for this handshake:
    /// `SHA3-256("pqcc/v1/gpu-nonce" ‖ binding value)`. Both sides compute it from the
    /// same transcript state (TH1), so a GPU report made for another challenge or
    /// another ML-KEM key carries another nonce and is refused.
    pub fn gpu_nonce(&self) -> [u8; 32] {
        hash::sha3_256(&[GPU_NONCE_LABEL, &self.0])
    }
}

/// Which side of a session this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The guest.
    Initiator,
    /// The broker.
    Responder,
}

/// The secrets a finished handshake produces. Zeroize on drop; `Debug` is redacted.
#[derive(Debug)]
pub struct SessionKeys {
    /// Which side these keys belong to.
    pub role: Role,
    /// Initiator → responder AES-256-GCM key.
    pub i2r_key: Secret<32>,
    /// Responder → initiator AES-256-GCM key.
    pub r2i_key: Secret<32>,
    /// Initiator → responder nonce prefix.
    pub i2r_prefix: [u8; 4],
    /// Responder → initiator nonce prefix.
    pub r2i_prefix: [u8; 4],
    /// Public session identifier (same on both sides).
    pub session_id: [u8; 32],
    /// Exporter secret for deriving application keys (same on both sides).
    pub exporter: Secret<32>,
}

impl SessionKeys {
    fn derive(role: Role, ss: &Secret<32>, th3: &[u8; 32]) -> Self {
        let mut okm = [0u8; 136];
        hash::shake256(&[KEYS_LABEL, ss.expose(), th3], &mut okm);
        let k = |r: core::ops::Range<usize>| {
            let mut a = [0u8; 32];
            a.copy_from_slice(&okm[r]);
            a
        };
        let i2r_key = Secret::new(k(0..32));
        let r2i_key = Secret::new(k(32..64));
        let mut i2r_prefix = [0u8; 4];
        i2r_prefix.copy_from_slice(&okm[64..68]);
        let mut r2i_prefix = [0u8; 4];
        r2i_prefix.copy_from_slice(&okm[68..72]);
        let session_id = k(72..104);
        let exporter = Secret::new(k(104..136));
        zeroize::Zeroize::zeroize(&mut okm);
        Self {
            role,
            i2r_key,
            r2i_key,
            i2r_prefix,
            r2i_prefix,
            session_id,
            exporter,
        }
    }

    /// Derives a 32-byte application secret from the exporter:
    /// `SHAKE256("pqcc/v1/export" ‖ len(label) ‖ label ‖ exporter)`.
    pub fn export(&self, label: &[u8]) -> Secret<32> {
        let mut out = [0u8; 32];
        let len = u32::try_from(label.len()).unwrap_or(u32::MAX).to_be_bytes();
        hash::shake256(
            &[b"pqcc/v1/export", &len, label, self.exporter.expose()],
            &mut out,
        );
        Secret::new(out)
    }
}

// ---------------------------------------------------------------------------------
// Initiator (guest)

/// The guest before it has seen a Challenge. It knows the broker's public key in
/// advance (from its measured config) and accepts no other.
pub struct Initiator {
    broker: VerifyingKey,
}

impl Initiator {
    /// Starts a handshake trusting exactly `broker_public_key` (ML-DSA-65, encoded).
    pub fn new(broker_public_key: &[u8]) -> Result<Self, Error> {
        Ok(Self {
            broker: VerifyingKey::from_bytes(broker_public_key)?,
        })
    }

    /// Reads the Challenge; makes a fresh ML-KEM-768 key and nonce.
    pub fn handle_challenge<R: CryptoRng + ?Sized>(
        self,
        challenge: &[u8],
        rng: &mut R,
    ) -> Result<InitiatorAwaitEvidence, Error> {
        let Message::Challenge(Challenge { .. }) = wire::decode_message(challenge)? else {
            return Err(Error::UnexpectedMessage);
        };
        let dk = DecapsulationKey::generate(rng);
        let ek = dk.encapsulation_key_bytes();
        let mut nonce_g = [0u8; 32];
        rng.fill_bytes(&mut nonce_g);
        let mut t = Transcript::new(TRANSCRIPT_LABEL);
        t.absorb(challenge);
        t.absorb(&nonce_g);
        t.absorb(&ek);
        let binding = BindingValue::from_transcript(&t.current());
        Ok(InitiatorAwaitEvidence {
            broker: self.broker,
            dk,
            ek,
            nonce_g,
            transcript: t,
            binding,
        })
    }
}

/// The guest after the Challenge: it must now get evidence whose report data is
/// [`InitiatorAwaitEvidence::binding`], then write the Hello.
pub struct InitiatorAwaitEvidence {
    broker: VerifyingKey,
    dk: DecapsulationKey,
    ek: [u8; kem::EK_LEN],
    nonce_g: [u8; 32],
    transcript: Transcript,
    binding: BindingValue,
}

impl InitiatorAwaitEvidence {
    /// The report data the evidence must carry.
    pub fn binding(&self) -> &BindingValue {
        &self.binding
    }

    /// Writes the Hello carrying `evidence` into `out` and returns its length.
    pub fn write_hello(
        self,
        evidence: Evidence<'_>,
        out: &mut [u8],
    ) -> Result<(InitiatorAwaitAccept, usize), Error> {
        let msg = Message::Hello(Hello {
            nonce_g: self.nonce_g,
            kem_ek: Bytes(&self.ek),
            evidence,
        });
        let n = msg.encode(out)?;
        let mut transcript = self.transcript;
        transcript.absorb(&out[..n]);
        Ok((
            InitiatorAwaitAccept {
                broker: self.broker,
                dk: self.dk,
                transcript,
            },
            n,
        ))
    }
}

/// The guest after sending its Hello, waiting for Accept or Reject.
pub struct InitiatorAwaitAccept {
    broker: VerifyingKey,
    dk: DecapsulationKey,
    transcript: Transcript,
}

impl InitiatorAwaitAccept {
    /// Reads the broker's answer. An Accept is checked — signature by the configured
    /// broker key over the transcript, then decapsulation — and yields the session keys
    /// and the grants; a Reject yields [`Error::Rejected`].
    pub fn handle_response<'a>(
        self,
        response: &'a [u8],
    ) -> Result<(SessionKeys, Vec<Grant<'a>, MAX_GRANTS>), Error> {
        let accept = match wire::decode_message(response)? {
            Message::Accept(a) => a,
            Message::Reject(Reject { reason }) => return Err(Error::Rejected(reason)),
            _ => return Err(Error::UnexpectedMessage),
        };
        let signed_len = wire::accept_signed_len(response, &accept)?;
        let mut t = self.transcript;
        t.absorb(&response[..signed_len]);
        let th2 = t.current();
        self.broker
            .verify(SIGNATURE_CONTEXT, &th2, accept.signature.0)
            .map_err(|_| Error::BadSignature)?;
        let ss = self.dk.decapsulate(accept.kem_ct.0)?;
        t.absorb(accept.signature.0);
        let keys = SessionKeys::derive(Role::Initiator, &ss, &t.current());
        Ok((keys, accept.grants))
    }
}

// ---------------------------------------------------------------------------------
// Responder (broker)

/// Starts a responder: writes a Challenge with a fresh nonce into `out`.
pub struct Responder;

impl Responder {
    /// Writes a fresh Challenge into `out`; returns the state and the length written.
    pub fn start<R: CryptoRng + ?Sized>(
        rng: &mut R,
        out: &mut [u8],
    ) -> Result<(ResponderAwaitHello, usize), Error> {
        let mut nonce_b = [0u8; 32];
        rng.fill_bytes(&mut nonce_b);
        let n = Message::Challenge(Challenge { nonce_b }).encode(out)?;
        let mut transcript = Transcript::new(TRANSCRIPT_LABEL);
        transcript.absorb(&out[..n]);
        Ok((
            ResponderAwaitHello {
                nonce_b,
                transcript,
            },
            n,
        ))
    }
}

/// The broker after its Challenge, waiting for a Hello.
pub struct ResponderAwaitHello {
    nonce_b: [u8; 32],
    transcript: Transcript,
}

impl ResponderAwaitHello {
    /// The challenge nonce this attempt issued (for single-use bookkeeping).
    pub fn nonce(&self) -> &[u8; 32] {
        &self.nonce_b
    }

    /// Reads the Hello. The returned state exposes the evidence and the binding value
    /// it must carry; the caller verifies both against its policy, then accepts or
    /// rejects.
    pub fn handle_hello(self, hello: &[u8]) -> Result<ResponderVerifyEvidence<'_>, Error> {
        let Message::Hello(h) = wire::decode_message(hello)? else {
            return Err(Error::UnexpectedMessage);
        };
        let ek = EncapsulationKey::from_bytes(h.kem_ek.0)?;
        let mut t = self.transcript;
        t.absorb(&h.nonce_g);
        t.absorb(h.kem_ek.0);
        let binding = BindingValue::from_transcript(&t.current());
        t.absorb(hello);
        Ok(ResponderVerifyEvidence {
            nonce_b: self.nonce_b,
            evidence: h.evidence,
            ek,
            binding,
            transcript: t,
        })
    }
}

/// The broker holding a decoded Hello: verify its evidence, then accept or reject.
pub struct ResponderVerifyEvidence<'a> {
    nonce_b: [u8; 32],
    evidence: Evidence<'a>,
    ek: EncapsulationKey,
    binding: BindingValue,
    transcript: Transcript,
}

impl<'a> ResponderVerifyEvidence<'a> {
    /// The evidence, not yet verified.
    pub fn evidence(&self) -> &Evidence<'a> {
        &self.evidence
    }

    /// The report data the evidence must carry.
    pub fn binding(&self) -> &BindingValue {
        &self.binding
    }

    /// The challenge nonce of this attempt.
    pub fn nonce(&self) -> &[u8; 32] {
        &self.nonce_b
    }

    /// Accepts: encapsulates to the guest's key, lists `grants`, signs the transcript
    /// with `key`, writes the Accept into `out`. Returns the session keys and length.
    pub fn accept<R: CryptoRng + ?Sized>(
        self,
        key: &SigningKey,
        grants: &[Grant<'_>],
        rng: &mut R,
        out: &mut [u8],
    ) -> Result<(SessionKeys, usize), Error> {
        let grants = Vec::from_slice(grants).map_err(|_| Error::InvalidArgument)?;
        let (ct, ss) = self.ek.encapsulate(rng);
        let placeholder = [0u8; sign::SIG_LEN];
        let accept = Accept {
            kem_ct: Bytes(&ct),
            grants,
            signature: Bytes(&placeholder),
        };
        let n = Message::Accept(accept.clone()).encode(out)?;
        let signed_len = wire::accept_signed_len(&out[..n], &accept)?;
        let mut t = self.transcript;
        t.absorb(&out[..signed_len]);
        let sig = key.sign(SIGNATURE_CONTEXT, &t.current(), rng)?;
        out[n - sign::SIG_LEN..n].copy_from_slice(&sig);
        t.absorb(&sig);
        Ok((SessionKeys::derive(Role::Responder, &ss, &t.current()), n))
    }

    /// Rejects with `reason`, writing the Reject into `out`.
    pub fn reject(self, reason: RejectReason, out: &mut [u8]) -> Result<usize, Error> {
        write_reject(reason, out)
    }
}

/// Writes a Reject (for refusals before a Hello decoded, e.g. a malformed one).
pub fn write_reject(reason: RejectReason, out: &mut [u8]) -> Result<usize, Error> {
    Message::Reject(Reject { reason }).encode(out)
}
