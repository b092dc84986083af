//! Key files: `pqcc keygen` writes them, every command that signs, verifies or
//! decapsulates reads them. The format is specified in `docs/keys.md`.
//!
//! Both kinds of file are a 12-byte header followed by exactly one payload:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8   | magic: `PQCC-SK\n` (secret key) or `PQCC-PK\n` (public key) |
//! | 8      | format version, `1` |
//! | 9      | algorithm: `1` = ML-DSA-65, `2` = ML-KEM-768 |
//! | 10..12 | payload length, u16 big-endian; must be the algorithm's exact length |
//! | 12..   | payload: the seed (secret file) or the encoded public key (public file) |
//!
//! Secret payloads are seeds: ML-DSA-65 ξ (32 bytes, FIPS 204 Alg. 6) and ML-KEM-768
//! `d ‖ z` (64 bytes, FIPS 203 Alg. 16). Public payloads are the encoded ML-DSA-65
//! public key (1952 bytes) and the ML-KEM-768 encapsulation key (1184 bytes).
//!
//! # What is checked
//!
//! Parsing is strict: wrong magic (including a public file where a secret one is
//! expected and vice versa), unknown version, unknown or unexpected algorithm, a
//! length field that is not the algorithm's, a short file and trailing bytes are all
//! errors ([`KeyFileError`]), and an ML-KEM-768 encapsulation key must pass the FIPS 203
//! §7.2 modulus check. Nothing else is checked: a key file carries no integrity tag,
//! and a public key file is only as trustworthy as the channel it came through.
//!
//! # Secret handling
//!
//! A secret key file is created with mode 0600 under a temporary name in the target
//! directory (`O_CREAT | O_EXCL`, no symlink followed), written, fsync'd, moved into
//! place without replacing an existing file unless the caller asked for it
//! (`--force`), and the directory is fsync'd. Reading follows symlinks (as Kubernetes
//! mounts secrets) and refuses what it finally opens when that is not a regular file
//! (a directory, a FIFO, a device), or, for a secret key, when its mode grants any
//! access to group or others. Secret bytes are
//! held only in [`Secret`] values and [`Zeroizing`] buffers, and no error message ever
//! contains them.

use std::{
    fmt,
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use pqcc_core::{
    hash,
    kem::{self, DecapsulationKey, EncapsulationKey},
    secret::Secret,
    sign::{self, SignerId, SigningKey, VerifyingKey},
};
use zeroize::Zeroizing;

use crate::rng::OsRng;

/// Magic of a secret key file.
pub const SECRET_MAGIC: [u8; 8] = *b"PQCC-SK\n";
/// Magic of a public key file.
pub const PUBLIC_MAGIC: [u8; 8] = *b"PQCC-PK\n";
/// The only format version this build reads and writes.
pub const FORMAT_VERSION: u8 = 1;
/// Length of the header before the payload.
pub const HEADER_LEN: usize = 12;
/// Longest valid key file of either kind (an ML-DSA-65 public key file).
pub const MAX_FILE_LEN: usize = HEADER_LEN + sign::PK_LEN;
/// Longest valid secret key file (an ML-KEM-768 seed).
const MAX_SECRET_FILE_LEN: usize = HEADER_LEN + kem::SEED_LEN;
/// Bytes read past the longest valid file, so that a few trailing bytes are reported
/// as such; a file longer still is refused as too long without being read whole.
const READ_SLACK: usize = 256;

/// A key algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// ML-DSA-65 (FIPS 204) signatures.
    MlDsa65,
    /// ML-KEM-768 (FIPS 203) key encapsulation.
    MlKem768,
}

impl Alg {
    /// The algorithm byte in a key file header.
    pub const fn id(self) -> u8 {
        match self {
            Alg::MlDsa65 => 1,
            Alg::MlKem768 => 2,
        }
    }

    /// The algorithm for a header byte, if known.
    pub const fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Alg::MlDsa65),
            2 => Some(Alg::MlKem768),
            _ => None,
        }
    }

    /// The name used on the command line and in JSON: `ml-dsa-65` or `ml-kem-768`.
    pub const fn name(self) -> &'static str {
        match self {
            Alg::MlDsa65 => "ml-dsa-65",
            Alg::MlKem768 => "ml-kem-768",
        }
    }

    /// Length of this algorithm's secret payload (its seed).
    pub const fn secret_len(self) -> usize {
        match self {
            Alg::MlDsa65 => sign::SEED_LEN,
            Alg::MlKem768 => kem::SEED_LEN,
        }
    }

    /// Length of this algorithm's public payload (its encoded public key).
    pub const fn public_len(self) -> usize {
        match self {
            Alg::MlDsa65 => sign::PK_LEN,
            Alg::MlKem768 => kem::EK_LEN,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which of the two kinds of key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A secret key file (`PQCC-SK\n`).
    Secret,
    /// A public key file (`PQCC-PK\n`).
    Public,
}

impl FileKind {
    /// `secret` or `public`.
    pub const fn name(self) -> &'static str {
        match self {
            FileKind::Secret => "secret",
            FileKind::Public => "public",
        }
    }

    const fn magic(self) -> [u8; 8] {
        match self {
            FileKind::Secret => SECRET_MAGIC,
            FileKind::Public => PUBLIC_MAGIC,
        }
    }

    fn payload_len(self, alg: Alg) -> usize {
        match self {
            FileKind::Secret => alg.secret_len(),
            FileKind::Public => alg.public_len(),
        }
    }
}

/// Why the bytes of a key file were refused. Messages never contain key bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Shorter than the 12-byte header.
    TooShort {
        /// Bytes present.
        len: usize,
    },
    /// The magic is neither key file magic.
    BadMagic,
    /// A valid key file of the other kind (a public key where a secret one is
    /// expected, or the reverse).
    WrongKind {
        /// The kind the caller expected.
        expected: FileKind,
        /// The kind the file is.
        found: FileKind,
    },
    /// A format version this build does not know.
    UnsupportedVersion(u8),
    /// An algorithm byte this build does not know.
    UnknownAlgorithm(u8),
    /// A known algorithm other than the one the caller needs.
    WrongAlgorithm {
        /// The algorithm the caller needs.
        expected: Alg,
        /// The algorithm in the file.
        found: Alg,
    },
    /// The header's length field is not the algorithm's payload length.
    BadLengthField {
        /// The algorithm.
        alg: Alg,
        /// The payload length the algorithm has.
        expected: usize,
        /// The length field's value.
        found: usize,
    },
    /// The file ends before the payload does.
    Truncated {
        /// Payload bytes expected.
        expected: usize,
        /// Payload bytes present.
        found: usize,
    },
    /// Bytes after the payload.
    TrailingBytes(usize),
    /// The payload is not a valid key (ML-KEM-768 encapsulation key modulus check).
    InvalidKey(Alg),
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::TooShort { len } => write!(
                f,
                "not a pqcc key file: {len} bytes, shorter than the {HEADER_LEN}-byte header"
            ),
            KeyFileError::BadMagic => {
                f.write_str("not a pqcc key file: bad magic (expected PQCC-SK or PQCC-PK)")
            }
            KeyFileError::WrongKind { expected, found } => write!(
                f,
                "this is a {} key file, a {} key file is needed here",
                found.name(),
                expected.name()
            ),
            KeyFileError::UnsupportedVersion(v) => write!(
                f,
                "unsupported key file format version {v} (this build reads version {FORMAT_VERSION})"
            ),
            KeyFileError::UnknownAlgorithm(a) => write!(f, "unknown key algorithm id {a}"),
            KeyFileError::WrongAlgorithm { expected, found } => {
                write!(f, "key algorithm is {found}, {expected} is needed here")
            }
            KeyFileError::BadLengthField {
                alg,
                expected,
                found,
            } => write!(
                f,
                "length field says {found} bytes, a {alg} key file holds exactly {expected}"
            ),
            KeyFileError::Truncated { expected, found } => write!(
                f,
                "key file truncated: payload has {found} of {expected} bytes"
            ),
            KeyFileError::TrailingBytes(n) => {
                write!(f, "{n} trailing byte(s) after the key payload")
            }
            KeyFileError::InvalidKey(alg) => write!(f, "payload is not a valid {alg} public key"),
        }
    }
}

impl std::error::Error for KeyFileError {}

/// A secret key: the seed the whole key pair is derived from. Zeroizes on drop.
#[derive(Debug)]
pub enum SecretKey {
    /// An ML-DSA-65 seed ξ.
    MlDsa65(Secret<{ sign::SEED_LEN }>),
    /// An ML-KEM-768 seed `d ‖ z`.
    MlKem768(Secret<{ kem::SEED_LEN }>),
}

impl SecretKey {
    /// A fresh key from the OS random number generator.
    pub fn generate(alg: Alg) -> anyhow::Result<Self> {
        use rand_core::TryRng;
        Ok(match alg {
            Alg::MlDsa65 => {
                let mut s = Zeroizing::new([0u8; sign::SEED_LEN]);
                OsRng
                    .try_fill_bytes(&mut *s)
                    .context("getrandom for an ML-DSA-65 seed")?;
                SecretKey::MlDsa65(Secret::new(*s))
            }
            Alg::MlKem768 => {
                let mut s = Zeroizing::new([0u8; kem::SEED_LEN]);
                OsRng
                    .try_fill_bytes(&mut *s)
                    .context("getrandom for an ML-KEM-768 seed")?;
                SecretKey::MlKem768(Secret::new(*s))
            }
        })
    }

    /// The algorithm.
    pub fn alg(&self) -> Alg {
        match self {
            SecretKey::MlDsa65(_) => Alg::MlDsa65,
            SecretKey::MlKem768(_) => Alg::MlKem768,
        }
    }

    fn seed_bytes(&self) -> &[u8] {
        match self {
            SecretKey::MlDsa65(s) => s.expose(),
            SecretKey::MlKem768(s) => s.expose(),
        }
    }

    /// The ML-DSA-65 signing key, or [`KeyFileError::WrongAlgorithm`].
    pub fn signing_key(&self) -> Result<SigningKey, KeyFileError> {
        match self {
            SecretKey::MlDsa65(s) => Ok(SigningKey::from_seed(s)),
            SecretKey::MlKem768(_) => Err(KeyFileError::WrongAlgorithm {
                expected: Alg::MlDsa65,
                found: Alg::MlKem768,
            }),
        }
    }

    /// The ML-KEM-768 decapsulation key, or [`KeyFileError::WrongAlgorithm`].
    pub fn decapsulation_key(&self) -> Result<DecapsulationKey, KeyFileError> {
        match self {
            SecretKey::MlKem768(s) => Ok(DecapsulationKey::from_seed(s)),
            SecretKey::MlDsa65(_) => Err(KeyFileError::WrongAlgorithm {
                expected: Alg::MlKem768,
                found: Alg::MlDsa65,
            }),
        }
    }

    /// The matching public key (derives the key pair from the seed).
    pub fn public_key(&self) -> PublicKey {
        match self {
            SecretKey::MlDsa65(s) => {
                PublicKey::MlDsa65(Box::new(*SigningKey::from_seed(s).public_key()))
            }
            SecretKey::MlKem768(s) => PublicKey::MlKem768(Box::new(
                DecapsulationKey::from_seed(s).encapsulation_key_bytes(),
            )),
        }
    }

    /// The secret key file's bytes, in a buffer that zeroizes on drop.
    pub fn to_file_bytes(&self) -> Zeroizing<Vec<u8>> {
        let seed = self.seed_bytes();
        let mut out = Zeroizing::new(Vec::with_capacity(HEADER_LEN + seed.len()));
        out.extend_from_slice(&header(FileKind::Secret, self.alg()));
        out.extend_from_slice(seed);
        out
    }

    /// Parses a secret key file's bytes (strict; see the module docs).
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, KeyFileError> {
        let (alg, payload) = parse(bytes, FileKind::Secret)?;
        Ok(match alg {
            Alg::MlDsa65 => SecretKey::MlDsa65(
                Secret::from_slice(payload).ok_or(KeyFileError::InvalidKey(alg))?,
            ),
            Alg::MlKem768 => SecretKey::MlKem768(
                Secret::from_slice(payload).ok_or(KeyFileError::InvalidKey(alg))?,
            ),
        })
    }
}

/// A public key: an encoded ML-DSA-65 public key or ML-KEM-768 encapsulation key.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// An encoded ML-DSA-65 public key.
    MlDsa65(Box<[u8; sign::PK_LEN]>),
    /// An encoded ML-KEM-768 encapsulation key (passed the modulus check).
    MlKem768(Box<[u8; kem::EK_LEN]>),
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.identity() {
            KeyIdentity::Signer(id) => write!(f, "PublicKey(ml-dsa-65, {id})"),
            KeyIdentity::Fingerprint(fp) => {
                write!(f, "PublicKey(ml-kem-768, sha3-256 {})", hex::encode(fp))
            }
        }
    }
}

/// How a public key is named to a person: ML-DSA-65 keys by their signer id (a
/// `did:pqaid:`), ML-KEM-768 keys by a SHA3-256 fingerprint, which is not a signer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyIdentity {
    /// SHA3-256 of an ML-DSA-65 public key, shown as `did:pqaid:<hex>`.
    Signer(SignerId),
    /// SHA3-256 of an encoded ML-KEM-768 encapsulation key.
    Fingerprint([u8; 32]),
}

impl PublicKey {
    /// The algorithm.
    pub fn alg(&self) -> Alg {
        match self {
            PublicKey::MlDsa65(_) => Alg::MlDsa65,
            PublicKey::MlKem768(_) => Alg::MlKem768,
        }
    }

    /// The encoded key.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            PublicKey::MlDsa65(b) => &b[..],
            PublicKey::MlKem768(b) => &b[..],
        }
    }

    /// The signer id (ML-DSA-65) or fingerprint (ML-KEM-768).
    pub fn identity(&self) -> KeyIdentity {
        match self {
            PublicKey::MlDsa65(b) => KeyIdentity::Signer(SignerId::of(&b[..])),
            PublicKey::MlKem768(b) => KeyIdentity::Fingerprint(hash::sha3_256(&[&b[..]])),
        }
    }

    /// The ML-DSA-65 verifying key, or [`KeyFileError::WrongAlgorithm`].
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyFileError> {
        match self {
            PublicKey::MlDsa65(b) => {
                VerifyingKey::from_bytes(&b[..]).map_err(|_| KeyFileError::InvalidKey(Alg::MlDsa65))
            }
            PublicKey::MlKem768(_) => Err(KeyFileError::WrongAlgorithm {
                expected: Alg::MlDsa65,
                found: Alg::MlKem768,
            }),
        }
    }

    /// The ML-KEM-768 encapsulation key, or [`KeyFileError::WrongAlgorithm`].
    pub fn encapsulation_key(&self) -> Result<EncapsulationKey, KeyFileError> {
        match self {
            PublicKey::MlKem768(b) => EncapsulationKey::from_bytes(&b[..])
                .map_err(|_| KeyFileError::InvalidKey(Alg::MlKem768)),
            PublicKey::MlDsa65(_) => Err(KeyFileError::WrongAlgorithm {
                expected: Alg::MlKem768,
                found: Alg::MlDsa65,
            }),
        }
    }

    /// The public key file's bytes.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.as_bytes().len());
        out.extend_from_slice(&header(FileKind::Public, self.alg()));
        out.extend_from_slice(self.as_bytes());
        out
    }

    /// Parses a public key file's bytes (strict; see the module docs).
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, KeyFileError> {
        let (alg, payload) = parse(bytes, FileKind::Public)?;
        Ok(match alg {
            Alg::MlDsa65 => PublicKey::MlDsa65(Box::new(
                payload
                    .try_into()
                    .map_err(|_| KeyFileError::InvalidKey(alg))?,
            )),
            Alg::MlKem768 => {
                EncapsulationKey::from_bytes(payload).map_err(|_| KeyFileError::InvalidKey(alg))?;
                PublicKey::MlKem768(Box::new(
                    payload
                        .try_into()
                        .map_err(|_| KeyFileError::InvalidKey(alg))?,
                ))
            }
        })
    }
}

fn header(kind: FileKind, alg: Alg) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&kind.magic());
    h[8] = FORMAT_VERSION;
    h[9] = alg.id();
    let len = u16::try_from(kind.payload_len(alg)).expect("payload lengths fit in u16");
    h[10..12].copy_from_slice(&len.to_be_bytes());
    h
}

/// Which kind of key file `bytes` claims to be, judged by the magic alone.
pub fn sniff_kind(bytes: &[u8]) -> Result<FileKind, KeyFileError> {
    match bytes.get(..8) {
        None => Err(KeyFileError::TooShort { len: bytes.len() }),
        Some(m) if m == SECRET_MAGIC => Ok(FileKind::Secret),
        Some(m) if m == PUBLIC_MAGIC => Ok(FileKind::Public),
        Some(_) => Err(KeyFileError::BadMagic),
    }
}

/// Checks the header and lengths; returns the algorithm and the payload.
fn parse(bytes: &[u8], expected: FileKind) -> Result<(Alg, &[u8]), KeyFileError> {
    if bytes.len() < HEADER_LEN {
        // Name the wrong kind or bad magic first when the magic is there to judge.
        if bytes.len() >= 8 {
            let found = sniff_kind(bytes)?;
            if found != expected {
                return Err(KeyFileError::WrongKind { expected, found });
            }
        }
        return Err(KeyFileError::TooShort { len: bytes.len() });
    }
    let found = sniff_kind(bytes)?;
    if found != expected {
        return Err(KeyFileError::WrongKind { expected, found });
    }
    if bytes[8] != FORMAT_VERSION {
        return Err(KeyFileError::UnsupportedVersion(bytes[8]));
    }
    let alg = Alg::from_id(bytes[9]).ok_or(KeyFileError::UnknownAlgorithm(bytes[9]))?;
    let want = expected.payload_len(alg);
    let len_field = usize::from(u16::from_be_bytes([bytes[10], bytes[11]]));
    if len_field != want {
        return Err(KeyFileError::BadLengthField {
            alg,
            expected: want,
            found: len_field,
        });
    }
    let payload = &bytes[HEADER_LEN..];
    if payload.len() < want {
        return Err(KeyFileError::Truncated {
            expected: want,
            found: payload.len(),
        });
    }
    if payload.len() > want {
        return Err(KeyFileError::TrailingBytes(payload.len() - want));
    }
    Ok((alg, payload))
}

/// The path of the public key file that goes with secret key file `secret`: the same
/// path with `.pub` appended.
pub fn public_path(secret: &Path) -> PathBuf {
    let mut s = secret.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Writes `bytes` to `path` atomically: a new file of mode `mode` under a temporary
/// name in the same directory (`O_CREAT | O_EXCL | O_NOFOLLOW`), fsync'd, then moved
/// into place, then the directory fsync'd. Without `overwrite`, an existing `path`
/// is never replaced (the move is a `link(2)`, which fails if the name exists).
pub fn write_file_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    overwrite: bool,
) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !overwrite && fs::symlink_metadata(path).is_ok() {
        bail!(
            "{} already exists; refusing to overwrite it (use --force)",
            path.display()
        );
    }
    let mut suffix = [0u8; 8];
    rand_core::TryRng::try_fill_bytes(&mut OsRng, &mut suffix)
        .context("getrandom for a temporary file name")?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", hex::encode(suffix)));
    let tmp = dir.join(tmp_name);

    let result = (|| -> anyhow::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        // The umask may have cleared bits; never let it have added any.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("fchmod {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("fsync {}", tmp.display()))?;
        drop(f);
        if overwrite {
            fs::rename(&tmp, path)
                .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        } else {
            fs::hard_link(&tmp, path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    anyhow::anyhow!(
                        "{} already exists; refusing to overwrite it (use --force)",
                        path.display()
                    )
                } else {
                    anyhow::Error::new(e).context(format!(
                        "linking {} to {}",
                        tmp.display(),
                        path.display()
                    ))
                }
            })?;
            fs::remove_file(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        }
        Ok(())
    })();
    if result.is_err() {
        // Best effort: never leave a temporary copy of a secret behind.
        let _ = fs::remove_file(&tmp);
    }
    result?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync directory {}", dir.display()))?;
    Ok(())
}

/// Reads at most `max` bytes of the already opened `f` into `buf`; `Ok(None)` when
/// the file is longer than `max`.
fn read_bounded(f: &mut File, buf: &mut [u8], path: &Path) -> anyhow::Result<Option<usize>> {
    let mut n = 0;
    loop {
        if n == buf.len() {
            // One byte past the buffer: the file is too long.
            let mut extra = [0u8; 1];
            let more = f
                .read(&mut extra)
                .with_context(|| format!("reading {}", path.display()))?;
            return Ok(if more == 0 { Some(n) } else { None });
        }
        let r = f
            .read(&mut buf[n..])
            .with_context(|| format!("reading {}", path.display()))?;
        if r == 0 {
            return Ok(Some(n));
        }
        n += r;
    }
}

/// Opens `path` and checks that what it opened is a regular file; for a secret, also
/// that group and others have no access to it.
///
/// Symlinks are followed (Kubernetes mounts secrets as `KEY -> ..data/KEY` with
/// `..data -> ..2024_…/`): the checks apply to the file finally opened, through the
/// descriptor (`fstat`), so a link cannot lend its target another file's mode. The
/// open is non-blocking, so a FIFO (or a device) is refused at once instead of
/// waiting for a writer.
fn open_key_file(path: &Path, secret: bool) -> anyhow::Result<File> {
    let (f, mode) = open_regular_file(path, "a key file")?;
    if secret && mode & 0o077 != 0 {
        // A public key file passed by mistake deserves that diagnosis; its magic is not
        // secret, and nothing past it is read.
        let mut magic = [0u8; 8];
        let mut g = &f;
        if g.read_exact(&mut magic).is_ok() && magic == PUBLIC_MAGIC {
            return Err(KeyFileError::WrongKind {
                expected: FileKind::Secret,
                found: FileKind::Public,
            })
            .with_context(|| format!("{}", path.display()));
        }
        bail!(
            "secret key file {} has mode {mode:04o}, which lets group or others access it; \
             refusing to use it (chmod 600 it if it was not exposed, otherwise make a new key)",
            path.display()
        );
    }
    Ok(f)
}

/// Opens `path` for reading, following symlinks (as Kubernetes mounts secrets), and
/// checks through the opened descriptor (`fstat`, so a link cannot lend its target
/// another file's mode) that it is a regular file; returns it with its permission bits
/// for the caller's own check. The open is non-blocking, so a FIFO or a device is
/// refused at once instead of waiting for a writer. `what` names the file in the error
/// (`"a key file"`, `"a broker policy"`).
pub fn open_regular_file(path: &Path, what: &str) -> anyhow::Result<(File, u32)> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let md = f
        .metadata()
        .with_context(|| format!("fstat {}", path.display()))?;
    if !md.file_type().is_file() {
        bail!(
            "{} is not a regular file ({what} must be one, or a symlink to one)",
            path.display()
        );
    }
    Ok((f, md.mode() & 0o7777))
}

/// Reads and parses a secret key file, refusing one that group or others can access.
pub fn read_secret_key(path: &Path) -> anyhow::Result<SecretKey> {
    let mut f = open_key_file(path, true)?;
    let mut buf = Zeroizing::new([0u8; MAX_SECRET_FILE_LEN + READ_SLACK]);
    let n = read_bounded(&mut f, &mut buf[..], path)?;
    let n = n.with_context(|| {
        format!(
            "{}: too long for a pqcc secret key file (over {MAX_SECRET_FILE_LEN} bytes)",
            path.display()
        )
    })?;
    SecretKey::from_file_bytes(&buf[..n]).with_context(|| format!("{}", path.display()))
}

/// Reads and parses a public key file.
pub fn read_public_key(path: &Path) -> anyhow::Result<PublicKey> {
    let mut f = open_key_file(path, false)?;
    let mut buf = vec![0u8; MAX_FILE_LEN + READ_SLACK];
    let n = read_bounded(&mut f, &mut buf, path)?.with_context(|| {
        format!(
            "{}: too long for a pqcc key file (over {MAX_FILE_LEN} bytes)",
            path.display()
        )
    })?;
    PublicKey::from_file_bytes(&buf[..n]).with_context(|| format!("{}", path.display()))
}

/// A key file of either kind, as `pqcc id` takes it.
#[derive(Debug)]
pub enum AnyKey {
    /// A secret key file (its public key is derived).
    Secret(SecretKey),
    /// A public key file.
    Public(PublicKey),
}

/// Reads a key file of either kind, told apart by its magic. A secret key file gets
/// the same permission check as in [`read_secret_key`].
pub fn read_any_key(path: &Path) -> anyhow::Result<AnyKey> {
    let mut magic = [0u8; 8];
    {
        let mut f = open_key_file(path, false)?;
        let n = read_bounded(&mut f, &mut magic, path)?.unwrap_or(magic.len());
        sniff_kind(&magic[..n]).with_context(|| format!("{}", path.display()))?;
    }
    if magic == SECRET_MAGIC {
        read_secret_key(path).map(AnyKey::Secret)
    } else {
        read_public_key(path).map(AnyKey::Public)
    }
}

/// What `pqcc keygen` wrote.
#[derive(Debug)]
pub struct Generated {
    /// The algorithm.
    pub alg: Alg,
    /// The secret key file.
    pub secret_path: PathBuf,
    /// The public key file.
    pub public_path: PathBuf,
    /// The new key's signer id or fingerprint.
    pub identity: KeyIdentity,
}

/// `pqcc keygen`: a fresh key pair, the secret file at `out` (mode 0600) and the
/// public one at `out.pub`. Without `force`, refuses if either exists.
pub fn keygen(alg: Alg, out: &Path, force: bool) -> anyhow::Result<Generated> {
    let pub_path = public_path(out);
    if !force {
        for p in [out, pub_path.as_path()] {
            if fs::symlink_metadata(p).is_ok() {
                bail!(
                    "{} already exists; refusing to overwrite it (use --force)",
                    p.display()
                );
            }
        }
    }
    let sk = SecretKey::generate(alg)?;
    let pk = sk.public_key();
    write_file_atomic(out, &sk.to_file_bytes(), 0o600, force)?;
    write_file_atomic(&pub_path, &pk.to_file_bytes(), 0o644, force)?;
    Ok(Generated {
        alg,
        secret_path: out.to_path_buf(),
        public_path: pub_path,
        identity: pk.identity(),
    })
}

/// The JSON object `pqcc id --json` and `pqcc keygen --json` print for a key.
pub fn identity_json(
    alg: Alg,
    identity: &KeyIdentity,
) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("alg".into(), alg.name().into());
    match identity {
        KeyIdentity::Signer(id) => {
            m.insert("did".into(), id.to_string().into());
        }
        KeyIdentity::Fingerprint(fp) => {
            m.insert("fingerprint_sha3_256".into(), hex::encode(fp).into());
        }
    }
    m
}

/// The line `pqcc id` prints for a key.
pub fn identity_line(identity: &KeyIdentity) -> String {
    match identity {
        KeyIdentity::Signer(id) => id.to_string(),
        KeyIdentity::Fingerprint(fp) => {
            format!("ml-kem-768 sha3-256 fingerprint {}", hex::encode(fp))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dsa() -> SecretKey {
        SecretKey::MlDsa65(Secret::new([7u8; 32]))
    }
    fn kem_key() -> SecretKey {
        SecretKey::MlKem768(Secret::new([9u8; 64]))
    }

    #[test]
    fn golden_header_bytes() {
        let b = dsa().to_file_bytes();
        assert_eq!(
            &b[..HEADER_LEN],
            &[
                b'P', b'Q', b'C', b'C', b'-', b'S', b'K', b'\n', // magic
                1,     // format version
                1,     // ML-DSA-65
                0, 32, // payload length, u16 BE
            ]
        );
        assert_eq!(&b[HEADER_LEN..], &[7u8; 32]);
        let p = kem_key().public_key().to_file_bytes();
        assert_eq!(
            &p[..HEADER_LEN],
            &[
                b'P', b'Q', b'C', b'C', b'-', b'P', b'K', b'\n', // magic
                1,     // format version
                2,     // ML-KEM-768
                0x04, 0xa0, // 1184
            ]
        );
        assert_eq!(p.len(), HEADER_LEN + 1184);
    }

    #[test]
    fn roundtrip_both_algorithms() {
        for sk in [dsa(), kem_key()] {
            let b = sk.to_file_bytes();
            let back = SecretKey::from_file_bytes(&b).unwrap();
            assert_eq!(back.alg(), sk.alg());
            assert_eq!(back.seed_bytes(), sk.seed_bytes());
            let pk = sk.public_key();
            let pb = pk.to_file_bytes();
            assert_eq!(PublicKey::from_file_bytes(&pb).unwrap(), pk);
        }
        let id = dsa().signing_key().unwrap().signer_id();
        assert_eq!(dsa().public_key().identity(), KeyIdentity::Signer(id));
        assert!(dsa().decapsulation_key().is_err());
        assert!(kem_key().signing_key().is_err());
        assert!(kem_key().public_key().encapsulation_key().is_ok());
        assert!(dsa().public_key().verifying_key().is_ok());
    }

    #[test]
    fn strict_parsing() {
        let good = dsa().to_file_bytes().to_vec();
        let e = |b: &[u8]| SecretKey::from_file_bytes(b).unwrap_err();
        assert_eq!(e(&good[..5]), KeyFileError::TooShort { len: 5 });
        let mut m = good.clone();
        m[0] = b'X';
        assert_eq!(e(&m), KeyFileError::BadMagic);
        let pubfile = dsa().public_key().to_file_bytes();
        assert_eq!(
            e(&pubfile),
            KeyFileError::WrongKind {
                expected: FileKind::Secret,
                found: FileKind::Public
            }
        );
        assert_eq!(
            PublicKey::from_file_bytes(&good).unwrap_err(),
            KeyFileError::WrongKind {
                expected: FileKind::Public,
                found: FileKind::Secret
            }
        );
        let mut v = good.clone();
        v[8] = 2;
        assert_eq!(e(&v), KeyFileError::UnsupportedVersion(2));
        let mut a = good.clone();
        a[9] = 7;
        assert_eq!(e(&a), KeyFileError::UnknownAlgorithm(7));
        let mut l = good.clone();
        l[11] = 64;
        assert_eq!(
            e(&l),
            KeyFileError::BadLengthField {
                alg: Alg::MlDsa65,
                expected: 32,
                found: 64
            }
        );
        // ML-KEM header on an ML-DSA-sized payload: length field catches it.
        let mut k = good.clone();
        k[9] = 2;
        assert!(matches!(e(&k), KeyFileError::BadLengthField { .. }));
        assert_eq!(
            e(&good[..good.len() - 1]),
            KeyFileError::Truncated {
                expected: 32,
                found: 31
            }
        );
        let mut t = good.clone();
        t.push(0);
        assert_eq!(e(&t), KeyFileError::TrailingBytes(1));
        // ML-KEM encapsulation key failing the modulus check.
        let mut pk = kem_key().public_key().to_file_bytes();
        pk[HEADER_LEN] = 0xff;
        pk[HEADER_LEN + 1] |= 0x0f;
        assert_eq!(
            PublicKey::from_file_bytes(&pk).unwrap_err(),
            KeyFileError::InvalidKey(Alg::MlKem768)
        );
        // Error messages carry no key bytes.
        let msg = e(&t).to_string();
        assert!(!msg.contains("0707"));
    }

    #[test]
    fn debug_is_redacted() {
        assert!(!format!("{:?}", dsa()).contains('7'));
    }
}
