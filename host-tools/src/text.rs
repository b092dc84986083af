//! Printing strings that came from a peer.
//!
//! A model name in a guest's claims, a GPU's driver version, a line of a guest's
//! console: none of it is authenticated when it is logged, and a control character in
//! it (an escape sequence, a carriage return, a newline that forges a second log line)
//! would act on the operator's terminal or log. Everything a peer supplies is passed
//! through [`untrusted`] before it reaches stderr or the audit log.

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every control character (C0, DEL, C1, and the Unicode line and paragraph
/// separators and bidirectional controls) and every backslash written as a Rust
/// escape (`\n`, `\u{1b}`, `\\`), so the result is one line of inert text. Printable
/// text is returned as it is.
pub fn untrusted(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c) {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::untrusted;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(untrusted("tiny@r1"), "tiny@r1");
        assert!(matches!(untrusted("tiny"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(untrusted("a\nb"), "a\\nb");
        assert_eq!(untrusted("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(untrusted("x\r\u{7f}\u{85}"), "x\\r\\u{7f}\\u{85}");
        assert_eq!(untrusted("a\\nb"), "a\\\\nb");
        assert_eq!(untrusted("\u{202e}evil"), "\\u{202e}evil");
        assert_eq!(untrusted("modèle"), "modèle");
    }
}
