//! The hash-chained audit log: one JSON object per line, each holding the SHA3-256 of
//! the previous line's exact bytes. The format is specified in `docs/audit-log.md`.
//!
//! Every verify and policy decision the `pqcc` commands take is appended with
//! [`AuditLog::append`]. An append takes an exclusive `flock(2)` on the log, checks
//! the whole existing log ([`verify_bytes`]) and refuses to extend a damaged one,
//! chains the new record from the last line, writes it with `O_APPEND` in one
//! `write(2)` and fsyncs the file before releasing the lock.
//!
//! # What the chain proves and what it does not
//!
//! [`verify_bytes`] (`pqcc audit verify`) detects any change to the log short of a
//! rewrite of everything from the changed record to the end: a modified, deleted,
//! reordered or inserted record breaks the `prev` link of the record after it (or the
//! `seq` run), and a torn last write leaves a line without its newline. Truncating
//! whole records off the end, or rewriting the tail, is *not* detectable from the log
//! alone: keep the last line's hash (printed by `pqcc audit verify`) somewhere the
//! writer cannot change, and compare (`pqcc audit verify --anchor HEAD`). The chain is
//! unkeyed: anyone who can write the file can write a new, consistent log.
//!
//! An [`AuditLog`] keeps the head it last wrote in a second place too: the anchor file
//! `LOG.head` ([`anchor_path`], `{"records": N, "head": "<hex>"}`), rewritten atomically
//! after every append. A writer refuses to append to a log that lost records: one
//! shorter than it last left it, or one that no longer holds the anchor file's head at
//! its place. `pqcc audit verify` checks the anchor file when there is one. Both catch
//! a tail cut by someone who did not also rewrite the anchor file.

use std::{
    fmt,
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use pqcc_core::{hash, sign::SignerId};
use serde_json::{Map, Value};

/// The label whose SHA3-256 is the first record's `prev`.
pub const GENESIS_LABEL: &[u8] = b"pqcc/v1/audit-log/genesis";
/// The only record format version this build writes and reads.
pub const RECORD_VERSION: u64 = 1;
/// The longest line [`verify_bytes`] accepts (a guard against a garbage file).
pub const MAX_LINE_LEN: usize = 64 * 1024;

/// The label that starts the input of a record's own `hash`.
pub const RECORD_LABEL: &[u8] = b"pqcc/v1/audit-log/record\n";

/// The fields every record has, in the order they are written.
pub const FIELDS: [&str; 11] = [
    "v",
    "seq",
    "time",
    "prev",
    "kind",
    "decision",
    "reason",
    "signer",
    "artifact_sha3_256",
    "actor",
    "hash",
];

/// `prev` of the first record: SHA3-256 of [`GENESIS_LABEL`].
pub fn genesis_hash() -> [u8; 32] {
    hash::sha3_256(&[GENESIS_LABEL])
}

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A policy allowed the artifact.
    Allow,
    /// A policy denied the artifact.
    Deny,
    /// A signature or statement verified.
    Valid,
    /// A signature or statement did not verify.
    Invalid,
}

impl Decision {
    /// The JSON string: `allow`, `deny`, `valid`, `invalid`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Valid => "valid",
            Decision::Invalid => "invalid",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "allow" => Decision::Allow,
            "deny" => Decision::Deny,
            "valid" => Decision::Valid,
            "invalid" => Decision::Invalid,
            _ => return None,
        })
    }
}

/// One decision to record. `seq` and `prev` are supplied by [`AuditLog::append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Unix seconds of the decision, supplied by the caller.
    pub time: u64,
    /// What was decided about: e.g. `verify`, `policy`, or a statement kind.
    pub kind: String,
    /// The decision.
    pub decision: Decision,
    /// Why, in a few words.
    pub reason: String,
    /// The signer, when one was identified.
    pub signer: Option<SignerId>,
    /// SHA3-256 of the artifact the decision is about.
    pub artifact_sha3_256: [u8; 32],
    /// Who asked: a user name, a service, a host.
    pub actor: String,
}

/// What an append wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The new record's `seq` (0 for the first).
    pub seq: u64,
    /// SHA3-256 of the line written, newline included: the next record's `prev`.
    pub line_hash: [u8; 32],
}

/// The exact line (including the trailing `\n`) for `record` at `seq` chained from
/// `prev`. Its last field, `hash`, is SHA3-256 of [`RECORD_LABEL`] followed by the
/// line's JSON object without that field (`{"v":…,"actor":…}`).
pub fn encode_line(record: &Record, seq: u64, prev: &[u8; 32]) -> String {
    let body = encode_body(record, seq, prev);
    let own = hash::sha3_256(&[RECORD_LABEL, body.as_bytes()]);
    let mut s = body;
    s.pop(); // the closing brace
    s.push_str(",\"hash\":\"");
    s.push_str(&hex::encode(own));
    s.push_str("\"}\n");
    s
}

/// The canonical JSON object of a record without its `hash` field and newline.
fn encode_body(record: &Record, seq: u64, prev: &[u8; 32]) -> String {
    let mut m = Map::new();
    m.insert("v".into(), RECORD_VERSION.into());
    m.insert("seq".into(), seq.into());
    m.insert("time".into(), record.time.into());
    m.insert("prev".into(), hex::encode(prev).into());
    m.insert("kind".into(), record.kind.clone().into());
    m.insert("decision".into(), record.decision.as_str().into());
    m.insert("reason".into(), record.reason.clone().into());
    m.insert(
        "signer".into(),
        record
            .signer
            .map_or(Value::Null, |s| Value::String(s.to_string())),
    );
    m.insert(
        "artifact_sha3_256".into(),
        hex::encode(record.artifact_sha3_256).into(),
    );
    m.insert("actor".into(), record.actor.clone().into());
    Value::Object(m).to_string()
}

/// Why a log failed verification. Line numbers are 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Damage {
    /// The last line has no terminating newline: a torn or truncated write.
    MissingNewline,
    /// An empty line.
    EmptyLine,
    /// Longer than [`MAX_LINE_LEN`].
    LineTooLong,
    /// Not UTF-8 or not a JSON object.
    BadJson(String),
    /// A field is missing, of the wrong type, malformed, or unexpected.
    BadField(String),
    /// `seq` is not the previous record's plus one (0 for the first line).
    SeqMismatch {
        /// The `seq` that should be here.
        expected: u64,
        /// The `seq` found.
        found: u64,
    },
    /// `prev` is not the hash of the previous line (or the genesis hash).
    PrevMismatch,
    /// The line is valid JSON but not the canonical encoding of its record, so its
    /// bytes were edited (re-encoding differs).
    NotCanonical,
    /// The record's own `hash` does not match its content: the record was modified.
    HashMismatch,
    /// No line has the anchor hash the caller gave: records were cut off the end (or
    /// the log was rewritten). Named at the line after the last one present.
    AnchorNotFound,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::MissingNewline => {
                f.write_str("last line has no newline (truncated or torn write)")
            }
            Damage::EmptyLine => f.write_str("empty line"),
            Damage::LineTooLong => write!(f, "line longer than {MAX_LINE_LEN} bytes"),
            Damage::BadJson(e) => write!(f, "not a JSON object: {e}"),
            Damage::BadField(e) => write!(f, "bad field: {e}"),
            Damage::SeqMismatch { expected, found } => write!(
                f,
                "seq is {found}, expected {expected} (record deleted, inserted or reordered)"
            ),
            Damage::PrevMismatch => f.write_str(
                "prev does not match the hash of the previous line \
                 (this or the previous record was modified, deleted, inserted or reordered)",
            ),
            Damage::NotCanonical => {
                f.write_str("record is not in canonical form (its bytes were edited)")
            }
            Damage::AnchorNotFound => f.write_str(
                "missing: no record has the expected anchor hash \
                 (records truncated off the end, or the log was rewritten)",
            ),
            Damage::HashMismatch => {
                f.write_str("record's hash does not match its content (record modified)")
            }
        }
    }
}

/// The first problem in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number.
    pub line: u64,
    /// What is wrong with it.
    pub damage: Damage,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.damage)
    }
}

impl std::error::Error for BadLine {}

/// An intact log's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intact {
    /// Number of records.
    pub records: u64,
    /// SHA3-256 of the last line (the genesis hash for an empty log): the value the next
    /// record chains from, and the one to keep elsewhere to detect tail truncation.
    pub head: [u8; 32],
}

fn field<'a>(m: &'a Map<String, Value>, k: &str) -> Result<&'a Value, Damage> {
    m.get(k)
        .ok_or_else(|| Damage::BadField(format!("missing {k:?}")))
}

fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> Result<&'a str, Damage> {
    field(m, k)?
        .as_str()
        .ok_or_else(|| Damage::BadField(format!("{k:?} is not a string")))
}

fn u64_field(m: &Map<String, Value>, k: &str) -> Result<u64, Damage> {
    field(m, k)?
        .as_u64()
        .ok_or_else(|| Damage::BadField(format!("{k:?} is not an unsigned integer")))
}

fn hash_field(m: &Map<String, Value>, k: &str) -> Result<[u8; 32], Damage> {
    let s = str_field(m, k)?;
    let mut out = [0u8; 32];
    if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(Damage::BadField(format!("{k:?} is not 64 lowercase hex")));
    }
    hex::decode_to_slice(s, &mut out)
        .map_err(|_| Damage::BadField(format!("{k:?} is not 64 lowercase hex")))?;
    Ok(out)
}

/// Parses one line (without its newline) into `(seq, prev, record)`, checking every
/// field and that the line is the canonical encoding of what it holds.
fn parse_line(line: &[u8]) -> Result<(u64, [u8; 32], Record), Damage> {
    let text = std::str::from_utf8(line).map_err(|_| Damage::BadJson("not UTF-8".into()))?;
    let v: Value = serde_json::from_str(text).map_err(|e| Damage::BadJson(e.to_string()))?;
    let Value::Object(m) = v else {
        return Err(Damage::BadJson("not an object".into()));
    };
    for k in m.keys() {
        if !FIELDS.contains(&k.as_str()) {
            return Err(Damage::BadField(format!("unexpected field {k:?}")));
        }
    }
    let ver = u64_field(&m, "v")?;
    if ver != RECORD_VERSION {
        return Err(Damage::BadField(format!("unsupported version {ver}")));
    }
    let seq = u64_field(&m, "seq")?;
    let prev = hash_field(&m, "prev")?;
    let decision = Decision::parse(str_field(&m, "decision")?)
        .ok_or_else(|| Damage::BadField("\"decision\" is not allow/deny/valid/invalid".into()))?;
    let signer = match field(&m, "signer")? {
        Value::Null => None,
        Value::String(s) => Some(
            SignerId::parse(s)
                .map_err(|_| Damage::BadField("\"signer\" is not a did:pqaid".into()))?,
        ),
        _ => {
            return Err(Damage::BadField(
                "\"signer\" is not a string or null".into(),
            ));
        }
    };
    let record = Record {
        time: u64_field(&m, "time")?,
        kind: str_field(&m, "kind")?.to_owned(),
        decision,
        reason: str_field(&m, "reason")?.to_owned(),
        signer,
        artifact_sha3_256: hash_field(&m, "artifact_sha3_256")?,
        actor: str_field(&m, "actor")?.to_owned(),
    };
    let own = hash_field(&m, "hash")?;
    let body = encode_body(&record, seq, &prev);
    let canon = encode_line(&record, seq, &prev);
    // Same fields in the canonical order and format, whatever `hash` says.
    let tail = format!(",\"hash\":\"{}\"}}", hex::encode(own));
    let mut expected = body.clone();
    expected.pop();
    expected.push_str(&tail);
    if expected.as_bytes() != line {
        return Err(Damage::NotCanonical);
    }
    if canon.as_bytes()[..canon.len() - 1] != *line {
        return Err(Damage::HashMismatch);
    }
    Ok((seq, prev, record))
}

/// Checks a whole log held in memory. `Ok` with the record count and head hash when
/// intact, otherwise the first bad line.
pub fn verify_bytes(log: &[u8]) -> Result<Intact, BadLine> {
    verify_bytes_anchored(log, None)
}

/// [`verify_bytes`], and also requires `anchor` (a head printed by an earlier check, or
/// any line's hash) to be one of the log's line hashes or the genesis hash. That finds
/// whole records cut off the end, which the chain alone cannot: the first missing
/// line is named with [`Damage::AnchorNotFound`].
pub fn verify_bytes_anchored(log: &[u8], anchor: Option<&[u8; 32]>) -> Result<Intact, BadLine> {
    let genesis = Intact {
        records: 0,
        head: genesis_hash(),
    };
    walk(log, genesis, anchor).map(|w| w.intact)
}

/// Where a [`walk`] ended.
#[derive(Debug, Clone, Copy)]
struct Walk {
    /// The state after the last line.
    intact: Intact,
    /// The state before the last line (`start` when there was none).
    before_last: Intact,
    /// SHA3-256 of the first line walked, if any.
    first_hash: Option<[u8; 32]>,
}

/// Checks `log`, a run of whole lines continuing a chain that is at `start` (genesis
/// for a whole log; line numbers in errors count from `start.records + 1`).
fn walk(log: &[u8], start: Intact, anchor: Option<&[u8; 32]>) -> Result<Walk, BadLine> {
    let mut prev = start.head;
    let mut anchor_seen = anchor.is_none_or(|a| *a == prev);
    let mut seq: u64 = start.records;
    let mut rest = log;
    let mut lineno: u64 = start.records;
    let mut w = Walk {
        intact: start,
        before_last: start,
        first_hash: None,
    };
    while !rest.is_empty() {
        lineno += 1;
        let bad = |damage| BadLine {
            line: lineno,
            damage,
        };
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Err(bad(Damage::MissingNewline));
        };
        let line = &rest[..nl];
        let with_nl = &rest[..=nl];
        rest = &rest[nl + 1..];
        if line.is_empty() {
            return Err(bad(Damage::EmptyLine));
        }
        if line.len() > MAX_LINE_LEN {
            return Err(bad(Damage::LineTooLong));
        }
        let (s, p, _) = parse_line(line).map_err(bad)?;
        if s != seq {
            return Err(bad(Damage::SeqMismatch {
                expected: seq,
                found: s,
            }));
        }
        if !pqcc_core::secret::ct_eq(&p, &prev) {
            return Err(bad(Damage::PrevMismatch));
        }
        w.before_last = Intact {
            records: seq,
            head: prev,
        };
        prev = hash::sha3_256(&[with_nl]);
        w.first_hash.get_or_insert(prev);
        anchor_seen |= anchor.is_some_and(|a| *a == prev);
        seq = seq
            .checked_add(1)
            .ok_or_else(|| bad(Damage::BadField("seq overflow".into())))?;
    }
    if !anchor_seen {
        return Err(BadLine {
            line: lineno + 1,
            damage: Damage::AnchorNotFound,
        });
    }
    w.intact = Intact {
        records: seq,
        head: prev,
    };
    Ok(w)
}

/// Reads and checks the log at `path` ([`verify_bytes_anchored`]). The outer error is
/// an I/O error; the inner one is damage.
pub fn verify_file(
    path: &Path,
    anchor: Option<&[u8; 32]>,
) -> anyhow::Result<Result<Intact, BadLine>> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(verify_bytes_anchored(&buf, anchor))
}

/// The anchor file of the log at `log`: `LOG.head`.
pub fn anchor_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_os_string();
    name.push(".head");
    PathBuf::from(name)
}

/// The head an anchor file holds: the number of records the writer had written and the
/// hash of the last one. `Ok(None)` when there is no anchor file.
pub fn read_anchor(log: &Path) -> anyhow::Result<Option<Intact>> {
    let path = anchor_path(log);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let bad = || anyhow::anyhow!("{}: not an audit log anchor", path.display());
    let v: Value = serde_json::from_str(&text).map_err(|_| bad())?;
    let records = v["records"].as_u64().ok_or_else(bad)?;
    let head = v["head"]
        .as_str()
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(bad)?;
    Ok(Some(Intact { records, head }))
}

fn write_anchor(log: &Path, intact: &Intact) -> anyhow::Result<()> {
    let text = format!(
        "{}\n",
        serde_json::json!({"records": intact.records, "head": hex::encode(intact.head)})
    );
    crate::keys::write_file_atomic(&anchor_path(log), text.as_bytes(), 0o640, true)
}

/// Checks `log` against its anchor `a`: record `a.records` (counted from 1) exists and
/// its hash is `a.head`. `Err` names what is missing.
fn check_anchor(log: &[u8], a: &Intact) -> Result<(), String> {
    let genesis = Intact {
        records: 0,
        head: genesis_hash(),
    };
    let w = walk(log, genesis, Some(&a.head)).map_err(|b| b.to_string())?;
    if w.intact.records < a.records {
        return Err(format!(
            "it holds {} records, its anchor says {} were written",
            w.intact.records, a.records
        ));
    }
    Ok(())
}

/// [`verify_file`], and when `LOG.head` exists ([`anchor_path`]), also that the log
/// still holds the head it names. Returns the anchor checked, if any.
pub fn verify_file_with_anchor_file(
    path: &Path,
    anchor: Option<&[u8; 32]>,
) -> anyhow::Result<(Result<Intact, BadLine>, Option<Intact>)> {
    let result = verify_file(path, anchor)?;
    let stored = read_anchor(path)?;
    let result = match (result, &stored) {
        (Ok(intact), Some(a)) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            match check_anchor(&bytes, a) {
                Ok(()) => Ok(intact),
                Err(_) => Err(BadLine {
                    line: a.records.min(intact.records) + 1,
                    damage: Damage::AnchorNotFound,
                }),
            }
        }
        (r, _) => r,
    };
    Ok((result, stored))
}

/// An audit log file, opened for appending (created, mode 0640, if absent).
///
/// The first append checks the whole log. Later appends through the same `AuditLog`
/// check only what changed since its last append: that the line it wrote (or last
/// checked) is still there, byte for byte, at the same place, and every line added
/// after it by other writers. So an append costs the same however long the log is. A
/// log that got shorter than this writer left it is refused: records were cut off. The
/// first append of a new `AuditLog` (as at every broker start) checks the whole log and
/// the anchor file `LOG.head` ([`anchor_path`]); each append rewrites the anchor. Edits
/// further back than the last line are found by `pqcc audit verify` and by the next
/// whole check.
#[derive(Debug)]
pub struct AuditLog {
    file: File,
    path: PathBuf,
    known: Option<Known>,
}

/// What an [`AuditLog`] found at its last append.
#[derive(Debug, Clone, Copy)]
struct Known {
    /// The file's length right after that append.
    len: u64,
    /// Where the last line starts (0 for an empty log).
    last_start: u64,
    /// The chain state before the last line.
    before_last: Intact,
    /// The chain state after the last line.
    intact: Intact,
}

impl AuditLog {
    /// Opens (or creates) the log at `path` for appending. Nothing is read yet.
    pub fn open(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o640)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .with_context(|| format!("opening audit log {}", path.display()))?;
        Ok(Self {
            file,
            path,
            known: None,
        })
    }

    /// Appends `record`: under an exclusive lock, checks the log (see the type's docs),
    /// refuses to extend a damaged one, writes the next line chained from the last one,
    /// fsyncs.
    pub fn append(&mut self, record: &Record) -> anyhow::Result<Appended> {
        let p = self.path.display().to_string();
        self.file
            .lock()
            .with_context(|| format!("flock(LOCK_EX) on audit log {p}"))?;
        let result = self.append_locked(record, &p);
        let unlock = self
            .file
            .unlock()
            .with_context(|| format!("flock(LOCK_UN) on audit log {p}"));
        let appended = result?;
        unlock?;
        Ok(appended)
    }

    /// Checks the log as it is now, from the last known line on (or whole).
    fn check(&self, p: &str) -> anyhow::Result<Walk> {
        use std::os::unix::fs::FileExt;
        let len = self
            .file
            .metadata()
            .with_context(|| format!("stat audit log {p}"))?
            .len();
        if let Some(k) = self.known
            && len < k.len
        {
            bail!(
                "refusing to append to audit log {p}: it is {len} bytes, shorter than the {} \
                 bytes this writer left it with after record {}: records were cut off the end",
                k.len,
                k.intact.records
            );
        }
        let (from, start) = match self.known {
            Some(k) => (k.last_start, k.before_last),
            None => (
                0,
                Intact {
                    records: 0,
                    head: genesis_hash(),
                },
            ),
        };
        let n = usize::try_from(len - from)
            .with_context(|| format!("audit log {p} is too large to read"))?;
        let mut buf = vec![0u8; n];
        // Positioned reads: writes to an O_APPEND file always go to the end.
        self.file
            .read_exact_at(&mut buf, from)
            .with_context(|| format!("reading audit log {p}"))?;
        let w = match walk(&buf, start, None) {
            Ok(w) => w,
            Err(bad) => bail!("refusing to append to damaged audit log {p}: {bad}"),
        };
        if self.known.is_none()
            && let Some(a) = read_anchor(&self.path)?
            && let Err(why) = check_anchor(&buf, &a)
        {
            bail!(
                "refusing to append to audit log {p}: it lost records since the last append: \
                 its anchor {} names record {} with head {}, but {why}",
                anchor_path(&self.path).display(),
                a.records,
                hex::encode(a.head)
            );
        }
        if let Some(k) = self.known.filter(|k| len >= k.len && k.intact.records > 0) {
            // The line this log last wrote or checked must still be the same line.
            if w.first_hash
                .is_none_or(|h| !pqcc_core::secret::ct_eq(&h, &k.intact.head))
            {
                bail!(
                    "refusing to append to damaged audit log {p}: line {} changed since it was \
                     written",
                    k.intact.records
                );
            }
        }
        Ok(w)
    }

    fn append_locked(&mut self, record: &Record, p: &str) -> anyhow::Result<Appended> {
        let intact = self.check(p)?.intact;
        // serde_json escapes control characters, so a record is always one line.
        let line = encode_line(record, intact.records, &intact.head);
        if line.len() - 1 > MAX_LINE_LEN {
            bail!("audit record longer than {MAX_LINE_LEN} bytes");
        }
        let before = self
            .file
            .metadata()
            .with_context(|| format!("stat audit log {p}"))?
            .len();
        (&self.file)
            .write_all(line.as_bytes())
            .with_context(|| format!("writing audit log {p}"))?;
        self.file
            .sync_all()
            .with_context(|| format!("fsync audit log {p}"))?;
        let line_hash = hash::sha3_256(&[line.as_bytes()]);
        write_anchor(
            &self.path,
            &Intact {
                records: intact.records + 1,
                head: line_hash,
            },
        )
        .with_context(|| format!("audit log {p}: writing its anchor"))?;
        self.known = Some(Known {
            len: before + line.len() as u64,
            last_start: before,
            before_last: intact,
            intact: Intact {
                records: intact.records + 1,
                head: line_hash,
            },
        });
        Ok(Appended {
            seq: intact.records,
            line_hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u8) -> Record {
        Record {
            time: 1_700_000_000 + u64::from(i),
            kind: "driver-module".into(),
            decision: if i.is_multiple_of(2) {
                Decision::Valid
            } else {
                Decision::Deny
            },
            reason: format!("reason \"{i}\"\twith escapes"),
            signer: i.is_multiple_of(3).then_some(SignerId([i; 32])),
            artifact_sha3_256: [i; 32],
            actor: "alice".into(),
        }
    }

    fn build(n: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = genesis_hash();
        for i in 0..n {
            let line = encode_line(&rec(i), u64::from(i), &prev);
            prev = hash::sha3_256(&[line.as_bytes()]);
            out.extend_from_slice(line.as_bytes());
        }
        out
    }

    #[test]
    fn golden_first_line() {
        let r = Record {
            time: 1,
            kind: "k".into(),
            decision: Decision::Allow,
            reason: "r".into(),
            signer: None,
            artifact_sha3_256: [0; 32],
            actor: "a".into(),
        };
        let line = encode_line(&r, 0, &genesis_hash());
        // Cross-checked with Python: hashlib.sha3_256(b"pqcc/v1/audit-log/genesis") and
        // hashlib.sha3_256(b"pqcc/v1/audit-log/record\n" + line_without_hash_field).
        assert_eq!(
            hex::encode(genesis_hash()),
            "ac9828456f4e7ea726413b63d7ed23ed9c02a0e8a19cf7bce249ce028e7a2bf4"
        );
        assert_eq!(
            line,
            concat!(
                r#"{"v":1,"seq":0,"time":1,"#,
                r#""prev":"ac9828456f4e7ea726413b63d7ed23ed9c02a0e8a19cf7bce249ce028e7a2bf4","#,
                r#""kind":"k","decision":"allow","reason":"r","signer":null,"#,
                r#""artifact_sha3_256":"0000000000000000000000000000000000000000000000000000000000000000","#,
                r#""actor":"a","#,
                r#""hash":"f574391b4b97b03f916625d0100997344a584242bfa87a126f2b113498e27fe2"}"#,
                "\n"
            )
        );
    }

    #[test]
    fn intact_and_roundtrip() {
        assert_eq!(verify_bytes(b"").unwrap().records, 0);
        let log = build(5);
        let i = verify_bytes(&log).unwrap();
        assert_eq!(i.records, 5);
        for (n, line) in log.split(|&b| b == b'\n').take(5).enumerate() {
            let (seq, _, r) = parse_line(line).unwrap();
            assert_eq!(seq, n as u64);
            assert_eq!(r, rec(u8::try_from(n).unwrap()));
        }
    }

    #[test]
    fn whitespace_edit_is_not_canonical() {
        let log = String::from_utf8(build(2)).unwrap();
        let edited = log.replacen("\"seq\":0", "\"seq\": 0", 1);
        assert_eq!(verify_bytes(edited.as_bytes()).unwrap_err().line, 1);
        let err = verify_bytes(edited.as_bytes()).unwrap_err();
        assert_eq!(err.damage, Damage::NotCanonical);
    }
}
