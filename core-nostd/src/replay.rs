//! A fixed-size sliding replay window (RFC 6479 style, after boringtun's).
//!
//! The window tracks the highest sequence number accepted and a bitmap of the
//! `64 * WORDS` numbers at and below it. [`ReplayWindow::check`] is the cheap test done
//! *before* decryption; [`ReplayWindow::mark`] records a number only *after* its tag
//! verified, so a forged frame can never move the window. A duplicate
//! ([`Error::Replay`]) and a number that fell out of the window ([`Error::TooOld`]) are
//! distinct errors. Arithmetic is checked; `u64::MAX` is never accepted, so the counter
//! cannot wrap.

use crate::Error;

/// Highest sequence number a window accepts (`u64::MAX` is reserved so nothing wraps).
pub const MAX_SEQ: u64 = u64::MAX - 1;

/// A replay window covering `64 * WORDS` sequence numbers.
#[derive(Debug, Clone)]
pub struct ReplayWindow<const WORDS: usize> {
    /// Bit `i` of the ring (word `(i / 64) % WORDS`) is set when `seq ≡ i` was accepted.
    bits: [u64; WORDS],
    /// One past the highest accepted sequence number (0 = none accepted yet).
    next: u64,
}

impl<const WORDS: usize> Default for ReplayWindow<WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const WORDS: usize> ReplayWindow<WORDS> {
    /// Number of sequence numbers the window tracks.
    pub const SIZE: u64 = 64 * WORDS as u64;

    /// An empty window.
    pub const fn new() -> Self {
        assert!(WORDS > 0, "a replay window needs at least one word");
        Self {
            bits: [0; WORDS],
            next: 0,
        }
    }

    /// One past the highest sequence number accepted so far.
    pub fn next_expected(&self) -> u64 {
        self.next
    }

    fn slot(seq: u64) -> (usize, u64) {
        let bit = seq % Self::SIZE;
        // `bit / 64 < WORDS`, which is a usize.
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    /// Would `seq` be accepted? Does not change the window.
    pub fn check(&self, seq: u64) -> Result<(), Error> {
        if seq > MAX_SEQ {
            return Err(Error::TooOld { seq });
        }
        if seq >= self.next {
            return Ok(());
        }
        // seq < next: inside the window only if next - seq <= SIZE.
        if self.next - seq > Self::SIZE {
            return Err(Error::TooOld { seq });
        }
        let (w, m) = Self::slot(seq);
        if self.bits[w] & m != 0 {
            Err(Error::Replay { seq })
        } else {
            Ok(())
        }
    }

    /// Records `seq` as accepted (call only after its tag verified). Re-checks first,
    /// so marking a refused number is refused too.
    pub fn mark(&mut self, seq: u64) -> Result<(), Error> {
        self.check(seq)?;
        if seq >= self.next {
            // Clear every slot between the old head and the new one. At most SIZE slots
            // need clearing; beyond that the whole ring is stale.
            let advance = seq - self.next + 1;
            if advance >= Self::SIZE {
                self.bits = [0; WORDS];
            } else {
                let mut s = self.next;
                while s <= seq {
                    let (w, m) = Self::slot(s);
                    // Clear a whole word at once when aligned and fully covered.
                    if s.is_multiple_of(64) && seq - s >= 63 {
                        self.bits[w] = 0;
                        s += 64;
                    } else {
                        self.bits[w] &= !m;
                        s += 1;
                    }
                }
            }
            // seq <= MAX_SEQ so seq + 1 cannot overflow.
            self.next = seq + 1;
        }
        let (w, m) = Self::slot(seq);
        self.bits[w] |= m;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_duplicates_and_too_old() {
        let mut w = ReplayWindow::<2>::new();
        for s in 0..300 {
            w.mark(s).unwrap();
            assert_eq!(w.check(s), Err(Error::Replay { seq: s }));
        }
        assert_eq!(w.check(299 - 127), Err(Error::Replay { seq: 172 }));
        assert_eq!(w.check(299 - 128), Err(Error::TooOld { seq: 171 }));
        assert_eq!(w.mark(10), Err(Error::TooOld { seq: 10 }));
    }

    #[test]
    fn out_of_order_within_window_and_jumps() {
        let mut w = ReplayWindow::<1>::new();
        w.mark(100).unwrap();
        w.mark(40).unwrap(); // 100 - 40 = 60 < 64
        // 64 numbers tracked: 37..=100.
        assert_eq!(w.check(37), Ok(()));
        assert_eq!(w.check(36), Err(Error::TooOld { seq: 36 }));
        assert_eq!(w.mark(40), Err(Error::Replay { seq: 40 }));
        // A big jump clears everything older.
        w.mark(10_000).unwrap();
        assert_eq!(w.check(9_999), Ok(()));
        assert_eq!(w.check(100), Err(Error::TooOld { seq: 100 }));
    }

    #[test]
    fn u64_edges() {
        let mut w = ReplayWindow::<4>::new();
        assert_eq!(w.check(u64::MAX), Err(Error::TooOld { seq: u64::MAX }));
        w.mark(MAX_SEQ).unwrap();
        assert_eq!(w.next_expected(), u64::MAX);
        assert_eq!(w.mark(MAX_SEQ), Err(Error::Replay { seq: MAX_SEQ }));
        assert_eq!(w.check(MAX_SEQ - 1), Ok(()));
        w.mark(MAX_SEQ - 255).unwrap();
        assert_eq!(
            w.check(MAX_SEQ - 256),
            Err(Error::TooOld { seq: MAX_SEQ - 256 })
        );
        assert_eq!(w.mark(u64::MAX), Err(Error::TooOld { seq: u64::MAX }));
        let mut z = ReplayWindow::<1>::new();
        z.mark(0).unwrap();
        assert_eq!(z.check(0), Err(Error::Replay { seq: 0 }));
    }

    #[test]
    fn matches_a_naive_model() {
        // Compare with a naive model over a pseudo-random walk.
        let mut w = ReplayWindow::<2>::new();
        let mut seen = [false; 4096];
        let mut hi: Option<u64> = None;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let base = hi.unwrap_or(0);
            let seq = (base + (x % 200)).saturating_sub(150).min(4095);
            let naive = match hi {
                Some(h) if seq + 128 <= h => Err(Error::TooOld { seq }),
                _ if seen[seq as usize] => Err(Error::Replay { seq }),
                _ => Ok(()),
            };
            assert_eq!(w.check(seq), naive, "seq {seq} hi {hi:?}");
            if naive.is_ok() {
                w.mark(seq).unwrap();
                seen[seq as usize] = true;
                hi = Some(hi.map_or(seq, |h| h.max(seq)));
            }
        }
    }
}
