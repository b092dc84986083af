//! pqcc-core on a Cortex-M4: the library self-tests (real ML-DSA-65, ML-KEM-768 and
//! AES-256-GCM), the replay window and strict wire decoding, then a stack check.
//!
//! Run with `cargo test --release` from this folder (QEMU mps2-an386, see
//! run-qemu.sh). defmt-test runs the tests in order and stops at the first failure.
#![no_std]
#![no_main]

use core::fmt::Debug;

use pqcc_cortex_m as _;

/// Headroom the stack must keep above `.bss`.
const STACK_GUARD: usize = 64 * 1024;

/// `Ok` when `got == want`; otherwise logs both and names the check.
fn check<T: PartialEq + Debug>(got: T, want: T, what: &'static str) -> Result<(), &'static str> {
    if got == want {
        Ok(())
    } else {
        defmt::error!(
            "{}: got {}, want {}",
            what,
            defmt::Debug2Format(&got),
            defmt::Debug2Format(&want)
        );
        Err(what)
    }
}

#[defmt_test::tests]
mod tests {
    use pqcc_core::{
        Error,
        replay::{MAX_SEQ, ReplayWindow},
        selftest::{self, InsecureTestRng},
        wire::{self, Message, Reject, RejectReason},
    };

    use super::{STACK_GUARD, check};

    #[init]
    fn init() -> InsecureTestRng {
        InsecureTestRng::new(*b"pqcc/cortex-m/selftest/seed/0001")
    }

    /// Runs after each test that passed; run-qemu.sh counts these lines.
    #[after_each]
    fn after_each() {
        let u = pqcc_cortex_m::stack_usage();
        defmt::println!(
            "test ok (stack high-water mark so far: {=usize} bytes)",
            u.peak
        );
    }

    #[test]
    fn sign_verify(rng: &mut InsecureTestRng) -> Result<(), &'static str> {
        selftest::sign_verify(rng)
    }

    #[test]
    fn signed_statement(rng: &mut InsecureTestRng) -> Result<(), &'static str> {
        selftest::signed_statement(rng)
    }

    #[test]
    fn handshake_and_channel(rng: &mut InsecureTestRng) -> Result<(), &'static str> {
        selftest::handshake_and_channel(rng)
    }

    #[test]
    fn replay_window() -> Result<(), &'static str> {
        // 128 numbers tracked.
        let mut w = ReplayWindow::<2>::new();
        for s in 0..200u64 {
            w.mark(s).map_err(|_| "in-order mark refused")?;
            check(
                w.check(s),
                Err(Error::Replay { seq: s }),
                "duplicate accepted",
            )?;
        }
        check(w.next_expected(), 200, "next_expected")?;
        check(
            w.check(199 - 127),
            Err(Error::Replay { seq: 72 }),
            "window edge",
        )?;
        check(
            w.check(199 - 128),
            Err(Error::TooOld { seq: 71 }),
            "below window",
        )?;
        check(w.mark(10), Err(Error::TooOld { seq: 10 }), "old mark")?;

        // Out of order inside the window, then a jump that clears it.
        let mut w = ReplayWindow::<1>::new();
        check(w.mark(100), Ok(()), "mark 100")?;
        check(w.mark(40), Ok(()), "mark 40 out of order")?;
        check(w.mark(40), Err(Error::Replay { seq: 40 }), "replayed 40")?;
        check(w.check(37), Ok(()), "37 still inside")?;
        check(w.check(36), Err(Error::TooOld { seq: 36 }), "36 outside")?;
        check(w.mark(10_000), Ok(()), "jump")?;
        check(w.check(9_999), Ok(()), "after jump")?;
        check(
            w.check(100),
            Err(Error::TooOld { seq: 100 }),
            "stale after jump",
        )?;

        // The counter never wraps.
        check(
            w.mark(u64::MAX),
            Err(Error::TooOld { seq: u64::MAX }),
            "u64::MAX",
        )?;
        check(w.mark(MAX_SEQ), Ok(()), "MAX_SEQ")?;
        check(
            w.check(MAX_SEQ),
            Err(Error::Replay { seq: MAX_SEQ }),
            "MAX_SEQ replay",
        )?;
        Ok(())
    }

    #[test]
    fn wire_decode_rejects() -> Result<(), &'static str> {
        check(
            wire::decode_message(&[2]),
            Err(Error::UnknownVersion(2)),
            "version 2",
        )?;
        check(wire::decode_message(&[]), Err(Error::Truncated), "empty")?;
        check(
            wire::decode_message(&[1]),
            Err(Error::Truncated),
            "version only",
        )?;
        check(
            wire::decode_message(&[1, 9]),
            Err(Error::Malformed),
            "unknown type",
        )?;

        let reject = Message::Reject(Reject {
            reason: RejectReason::Policy,
        });
        let mut buf = [0u8; 8];
        let n = reject.encode(&mut buf).map_err(|_| "encode reject")?;
        check(&buf[..n], &[1u8, 3, 1][..], "reject golden bytes")?;
        check(
            wire::decode_message(&buf[..n]),
            Ok(reject.clone()),
            "round trip",
        )?;
        check(
            wire::decode_message(&buf[..n + 1]),
            Err(Error::TrailingBytes),
            "trailing",
        )?;
        check(
            wire::decode_message(&buf[..n - 1]),
            Err(Error::Truncated),
            "cut short",
        )?;
        // The message type 3 as a padded two-byte varint: same value, not canonical.
        check(
            wire::decode_message(&[1, 0x83, 0x00, 1]),
            Err(Error::NonCanonical),
            "padded varint",
        )?;
        Ok(())
    }

    /// Runs last: the deepest stack any test above reached must stay clear of `.bss`.
    #[test]
    fn stack_headroom() -> Result<(), &'static str> {
        let u = pqcc_cortex_m::stack_usage();
        defmt::println!("stack: peak {=usize} bytes of {=usize}", u.peak, u.size);
        if u.peak + STACK_GUARD > u.size {
            return Err("stack came within 64 KiB of .bss");
        }
        Ok(())
    }
}
