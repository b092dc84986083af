//! Known-answer and round-trip self-tests that run anywhere, including bare metal.
//!
//! The `no_std` proof binary and the Cortex-M test run call these; host tests call
//! them too. Each returns the name of the first check that failed.

use rand_core::{CryptoRng, Infallible, TryCryptoRng, TryRng};

use crate::{
    Error,
    aead::RustCryptoAesGcm,
    channel::{Limits, Session},
    hash,
    pair::establish_channel,
    secret::Secret,
    sign::{SigningKey, VerifyingKey},
    wire::{DType, TensorMetadata},
};

/// A deterministic SHAKE256 stream posing as a CSPRNG. **Insecure**: anyone who knows
/// the seed knows every output. Only for self-tests and reproducible fixtures on
/// targets with no entropy source.
pub struct InsecureTestRng {
    seed: [u8; 32],
    counter: u64,
}

impl InsecureTestRng {
    /// A stream determined entirely by `seed`.
    pub fn new(seed: [u8; 32]) -> Self {
        Self { seed, counter: 0 }
    }
}

impl TryRng for InsecureTestRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.counter = self.counter.wrapping_add(1);
        hash::shake256(
            &[
                b"pqcc/insecure-test-rng",
                &self.seed,
                &self.counter.to_be_bytes(),
            ],
            dst,
        );
        Ok(())
    }
}

impl TryCryptoRng for InsecureTestRng {}

/// Signs and verifies, and checks a modified message is refused.
#[inline(never)]
pub fn sign_verify<R: CryptoRng + ?Sized>(rng: &mut R) -> Result<(), &'static str> {
    let sk = SigningKey::from_seed(&Secret::new([0x42; 32]));
    let vk = VerifyingKey::from_bytes(sk.public_key()).map_err(|_| "sign: decode pk")?;
    let sig = sk
        .sign(b"pqcc/v1/selftest", b"message", rng)
        .map_err(|_| "sign: sign")?;
    vk.verify(b"pqcc/v1/selftest", b"message", &sig)
        .map_err(|_| "sign: verify")?;
    if vk.verify(b"pqcc/v1/selftest", b"messagf", &sig) != Err(Error::BadSignature) {
        return Err("sign: modified message accepted");
    }
    Ok(())
}

/// Runs a full in-memory handshake, then seals and opens a frame both ways, and checks
/// that a tampered frame, a replay and a frame opened by its own sender are refused.
#[inline(never)]
pub fn handshake_and_channel<R: CryptoRng + ?Sized>(rng: &mut R) -> Result<(), &'static str> {
    let broker = SigningKey::from_seed(&Secret::new([0x07; 32]));
    let (mut guest, mut host): (Session<RustCryptoAesGcm, 1>, Session<RustCryptoAesGcm, 1>) =
        establish_channel(&broker, &[], Limits::default(), 1_000, rng).map_err(|_| "handshake")?;
    if guest.session_id() != host.session_id() {
        return Err("handshake: session ids differ");
    }
    let meta = TensorMetadata::new(1, "selftest", DType::F32, &[4, 4]).map_err(|_| "meta")?;
    let plain = [0x5au8; 64];
    let mut frame = [0u8; 256];
    let n = guest
        .tx
        .seal_chunk(1_001, 0, &meta, 0, &plain, &mut frame)
        .map_err(|_| "channel: seal")?;
    let mut copy = [0u8; 256];
    copy[..n].copy_from_slice(&frame[..n]);
    // The sender cannot open its own frame (other direction's key).
    let mut own = copy;
    if guest.rx.open_in_place(1_001, &mut own[..n]).is_ok() {
        return Err("channel: sender opened its own frame");
    }
    let mut tampered = copy;
    tampered[n - 20] ^= 1;
    if host.rx.open_in_place(1_001, &mut tampered[..n]).err() != Some(Error::Decrypt) {
        return Err("channel: tampered frame accepted");
    }
    {
        let opened = host
            .rx
            .open_in_place(1_001, &mut frame[..n])
            .map_err(|_| "channel: open")?;
        if opened.plaintext[..] != plain[..] || !opened.header.is_final() {
            return Err("channel: wrong plaintext");
        }
    }
    if host.rx.open_in_place(1_001, &mut copy[..n]).err() != Some(Error::Replay { seq: 0 }) {
        return Err("channel: replay accepted");
    }
    // And the other direction.
    let n = host
        .tx
        .seal_chunk(1_002, 0, &meta, 0, &plain, &mut frame)
        .map_err(|_| "channel: seal back")?;
    let opened = guest
        .rx
        .open_in_place(1_002, &mut frame[..n])
        .map_err(|_| "channel: open back")?;
    if opened.plaintext[..] != plain[..] {
        return Err("channel: wrong plaintext back");
    }
    Ok(())
}

/// Signs a driver-module statement, verifies it through a trust store, and checks that
/// a flipped byte, a missing trust anchor and a wrong kind are refused.
#[inline(never)]
pub fn signed_statement<R: CryptoRng + ?Sized>(rng: &mut R) -> Result<(), &'static str> {
    use crate::statement::{self, BpfProgram, DriverModule};
    let sk = SigningKey::from_seed(&Secret::new([0x24; 32]));
    let vk = VerifyingKey::from_bytes(sk.public_key()).map_err(|_| "statement: decode pk")?;
    let body = DriverModule {
        name: "nvidia",
        version: "550.90.07",
        sha3_256: hash::sha3_256(&[b"module bytes"]),
        size: 12,
    };
    let mut env = [0u8; statement::SIGNED_MAX_LEN];
    let n =
        statement::sign(&body, &sk, 1_700_000_000, rng, &mut env).map_err(|_| "statement: sign")?;
    let trust = [vk];
    let v = statement::verify::<DriverModule<'_>, _>(&env[..n], &trust[..])
        .map_err(|_| "statement: verify")?;
    if *v.body() != body || v.signer() != sk.signer_id() {
        return Err("statement: wrong body or signer");
    }
    if statement::verify::<BpfProgram<'_>, _>(&env[..n], &trust[..]).is_ok() {
        return Err("statement: wrong kind accepted");
    }
    let empty: [VerifyingKey; 0] = [];
    if statement::verify::<DriverModule<'_>, _>(&env[..n], &empty[..]).is_ok() {
        return Err("statement: accepted without a trust anchor");
    }
    env[n / 2] ^= 1;
    if statement::verify::<DriverModule<'_>, _>(&env[..n], &trust[..]).is_ok() {
        return Err("statement: modified envelope accepted");
    }
    Ok(())
}

/// Every self-test, in order.
pub fn run_all<R: CryptoRng + ?Sized>(rng: &mut R) -> Result<(), &'static str> {
    sign_verify(rng)?;
    handshake_and_channel(rng)?;
    signed_statement(rng)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn self_tests_pass() {
        let mut rng = super::InsecureTestRng::new([9; 32]);
        super::run_all(&mut rng).unwrap();
    }
}
