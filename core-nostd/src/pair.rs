//! `establish_channel`: the real v1 handshake between two in-process peers.
//!
//! pqc-gpu-driver's helper of the same name "established" a channel by hashing a key
//! pair. This one runs every step both sides run over a wire: Challenge, ML-KEM-768
//! key generation, Hello with evidence bound to the key, ML-DSA-65-signed Accept,
//! encapsulation and decapsulation, key schedule. It is meant for tests, benchmarks and
//! a workload that talks to itself (e.g. a CPU process and its GPU context); the
//! evidence it carries is [`Platform::InsecureNone`] holding the binding value, which
//! the responder side checks.

use rand_core::CryptoRng;

use crate::{
    Error,
    aead::Aes256GcmProvider,
    channel::{Limits, Session},
    handshake::{Initiator, Responder},
    sign::SigningKey,
    wire::{ACCEPT_MAX_LEN, Bytes, CHALLENGE_MAX_LEN, Evidence, Grant, Platform},
};

/// Runs a full handshake in memory and returns `(initiator, responder)` sessions.
/// `broker` is the responder's signing key; the initiator trusts its public key.
pub fn establish_channel<A: Aes256GcmProvider, const W: usize, R: CryptoRng + ?Sized>(
    broker: &SigningKey,
    grants: &[Grant<'_>],
    limits: Limits,
    now: u64,
    rng: &mut R,
) -> Result<(Session<A, W>, Session<A, W>), Error> {
    let mut challenge = [0u8; CHALLENGE_MAX_LEN];
    let (responder, clen) = Responder::start(rng, &mut challenge)?;
    let initiator = Initiator::new(broker.public_key())?;
    let awaiting = initiator.handle_challenge(&challenge[..clen], rng)?;
    let binding = *awaiting.binding();
    let mut hello = [0u8; 1400];
    let (awaiting, hlen) = awaiting.write_hello(
        Evidence {
            platform: Platform::InsecureNone,
            data: Bytes(&binding.0),
        },
        &mut hello,
    )?;
    let verify = responder.handle_hello(&hello[..hlen])?;
    // The one evidence check possible without a TEE: the binding value.
    if verify.evidence().platform != Platform::InsecureNone
        || !verify.binding().matches(verify.evidence().data.0)
    {
        return Err(Error::BadSignature);
    }
    let mut accept = [0u8; ACCEPT_MAX_LEN];
    let (r_keys, alen) = verify.accept(broker, grants, rng, &mut accept)?;
    let (i_keys, _grants) = awaiting.handle_response(&accept[..alen])?;
    Ok((
        Session::new(i_keys, limits, now),
        Session::new(r_keys, limits, now),
    ))
}
