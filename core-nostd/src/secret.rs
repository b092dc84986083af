//! Fixed-size secret byte arrays that zeroize on drop and never print.

use core::fmt;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// `N` secret bytes. Zeroized on drop; `Debug` prints `<redacted>`; equality is
/// constant-time ([`Secret::ct_eq`]); there is deliberately no `Clone`, `Copy` or
/// `PartialEq`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Secret<const N: usize>([u8; N]);

impl<const N: usize> Secret<N> {
    /// Wraps `bytes`. The caller should zeroize its own copy.
    pub const fn new(bytes: [u8; N]) -> Self {
        Self(bytes)
    }

    /// Copies `bytes` into a new secret; `None` when the length is not `N`.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut out = [0u8; N];
        if bytes.len() != N {
            return None;
        }
        out.copy_from_slice(bytes);
        Some(Self(out))
    }

    /// Borrows the secret bytes. Keep the borrow short and do not copy them out.
    pub fn expose(&self) -> &[u8; N] {
        &self.0
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl<const N: usize> fmt::Debug for Secret<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Constant-time equality of two byte slices (lengths are not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct W<'a>(&'a mut [u8], usize);
    impl fmt::Write for W<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let b = s.as_bytes();
            let end = self.1 + b.len();
            self.0
                .get_mut(self.1..end)
                .ok_or(fmt::Error)?
                .copy_from_slice(b);
            self.1 = end;
            Ok(())
        }
    }

    #[test]
    fn debug_is_redacted_and_eq_is_constant_time() {
        use core::fmt::Write;
        let s = Secret::new([7u8; 32]);
        let mut buf = [0u8; 64];
        let mut w = W(&mut buf, 0);
        write!(w, "{s:?}").unwrap();
        let n = w.1;
        assert_eq!(&buf[..n], b"<redacted>");
        assert!(s.ct_eq(&Secret::new([7u8; 32])));
        assert!(!s.ct_eq(&Secret::new([8u8; 32])));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(Secret::<4>::from_slice(&[1, 2, 3]).is_none());
    }
}
