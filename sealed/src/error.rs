//! Errors: one line each, naming the file (and the tensor) and the reason.

use std::path::Path;

/// What went wrong. `Display` gives one line without secrets.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error {
    /// A file could not be read or written.
    Io {
        /// The path.
        path: String,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A key file is not a key.
    Key(String),
    /// The input to sealing is not a valid model directory or safetensors file.
    BadInput {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file was sealed under another data-encryption key.
    WrongKey {
        /// The sealed file.
        path: String,
        /// The key id its preamble names.
        sealed_for: String,
        /// The key id of the key given.
        given: String,
    },
    /// A sealed file does not check out: malformed, truncated, reordered, tampered with,
    /// from another file or model, or missing.
    Refused {
        /// The sealed file.
        path: String,
        /// The tensor, when one is concerned.
        tensor: Option<String>,
        /// Why.
        reason: String,
    },
    /// The caller asked for something that cannot be done (an existing output, a model
    /// id that is not `name@revision`).
    Usage(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: &Path, op: &'static str, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            op,
            source,
        }
    }

    pub(crate) fn bad_input(path: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Self::BadInput {
            path: path.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn refused(
        path: impl std::fmt::Display,
        tensor: Option<&str>,
        reason: impl Into<String>,
    ) -> Self {
        Self::Refused {
            path: path.to_string(),
            tensor: tensor.map(str::to_owned),
            reason: reason.into(),
        }
    }

    /// True for errors about the sealed input itself (refused, wrong key, bad input),
    /// as opposed to I/O and usage: the CLI exits 1 for these, 2 for the others.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::WrongKey { .. } | Self::Refused { .. } | Self::BadInput { .. }
        )
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io { path, op, source } => write!(f, "{path}: {op}: {source}"),
            Self::Key(m) => write!(f, "key: {m}"),
            Self::BadInput { path, reason } => write!(f, "{path}: {reason}"),
            Self::WrongKey {
                path,
                sealed_for,
                given,
            } => write!(
                f,
                "{path}: wrong key: sealed for key id {sealed_for}, the key given has id {given}"
            ),
            Self::Refused {
                path,
                tensor: Some(t),
                reason,
            } => write!(f, "{path}: tensor {t:?}: {reason}"),
            Self::Refused {
                path,
                tensor: None,
                reason,
            } => write!(f, "{path}: {reason}"),
            Self::Usage(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A core error on a sealed frame, in words for a one-line refusal.
pub(crate) fn frame_reason(e: pqcc_core::Error, frame: u64) -> String {
    use pqcc_core::Error as E;
    match e {
        E::Decrypt => format!(
            "frame {frame}: authentication tag did not verify (changed bytes, frames moved or swapped, or sealed under another key, file or model)"
        ),
        E::Truncated => format!("frame {frame}: truncated"),
        E::TrailingBytes => format!("frame {frame}: longer than its header says"),
        other => format!("frame {frame}: {other}"),
    }
}
