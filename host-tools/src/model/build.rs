//! `pqcc model build`: cache, per-model lock and crash-safe outputs around the
//! single-pass writer ([`super::archive`]).
//!
//! For a model `NAME@REV` (with `/` in the name written `--`) the output directory
//! holds:
//!
//! | file | what |
//! |---|---|
//! | `NAME@REV.tar` | the archive (tar + padding) |
//! | `NAME@REV.tar.verity` | its dm-verity hash file (superblock + tree) |
//! | `NAME@REV.tar.hash` | the root hash in hex, no newline (veritysetup's `--root-hash-file`) |
//! | `NAME@REV.tar.stamp` | the build record: input fingerprint, root hash, lengths |
//! | `NAME@REV.lock` | the per-model lock (an empty file, never removed) |
//!
//! Every file is written under a temporary name (`.NAME@REV.tar….tmp.PID`), fsync'd and
//! renamed; the stamp comes last and is removed first, so a build killed at any
//! instant leaves either the previous complete set or files that the next build
//! ignores and deletes. An archive is reused only when its stamp names the same input
//! fingerprint (every entry's name, mode, size, device, inode, mtime and ctime, the
//! salt and the UUID) and the files have the recorded lengths.
//!
//! Concurrent builds of one model wait on its lock (an `flock`, released by the kernel
//! when a holder dies); builds of different models run in parallel.
//!
//! An identity `NAME@REV` names one content: a build whose root hash differs from the
//! one of the complete archive already under that name (its stamp's root hash, else its
//! `.hash` file's) fails with [`Conflict`] and leaves the old set as it was, unless
//! [`Policy::force`] is set. Files without a stamp or hash file (left by a build killed
//! before it completed) are not an archive and are replaced. The same content again
//! is fine.

use std::{
    fs::{self, File, OpenOptions},
    io::{IsTerminal, Write},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::Mutex,
};

use anyhow::{Context, bail};
use pqcc_core::verity::{DIGEST_LEN, Salt};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    archive::{self, VerityParams},
    scan::{self, Entry, Metadata},
    source::Source,
};

/// What to build and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// Output directory (created if missing).
    pub out_dir: PathBuf,
    /// Model name (`ORG/NAME` or a plain name).
    pub name: String,
    /// Revision.
    pub revision: String,
    /// dm-verity salt.
    pub salt: Salt,
    /// dm-verity UUID.
    pub uuid: [u8; 16],
    /// The root hash the build must give.
    pub expected: Option<[u8; DIGEST_LEN]>,
    /// Show a progress bar (only drawn when stderr is a terminal).
    pub progress: bool,
    /// fsync every output before renaming it (and the directory after). Always on
    /// in `pqcc model build`; only the benchmark turns it off, to compare with a
    /// recipe that does not sync either.
    pub durable: bool,
}

/// A finished (or reused) archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Model name.
    pub name: String,
    /// Revision.
    pub revision: String,
    /// dm-verity root hash.
    pub root_hash: [u8; DIGEST_LEN],
    /// Absolute path of the archive.
    pub archive: PathBuf,
    /// Absolute path of the hash file.
    pub verity: PathBuf,
    /// Whether an earlier build was reused.
    pub cached: bool,
    /// What was left out of the archive as version-control or download metadata
    /// (archive names such as `./.git/`; see [`scan`]).
    pub left_out: Vec<String>,
}

impl Output {
    /// The one stdout line: `name@revision:roothash /abs/path/archive.tar`.
    pub fn line(&self) -> String {
        format!(
            "{}@{}:{} {}",
            self.name,
            self.revision,
            hex::encode(self.root_hash),
            self.archive.display()
        )
    }
}

/// How a build ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Built or reused.
    Done(Output),
    /// The root hash differs from the expected one; nothing was left behind.
    Mismatch {
        /// What was asked for.
        expected: [u8; DIGEST_LEN],
        /// What the input gives.
        actual: [u8; DIGEST_LEN],
    },
}

/// What a build may do beyond [`Options`]; the default is the safe choice for each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Replace an existing archive of the same `NAME@REV` whose root hash differs
    /// (`--force`); without it such a build fails with [`Conflict`].
    pub force: bool,
    /// Whether `.git` and `.cache/huggingface` are archived (`--keep-vcs-metadata`) or
    /// left out (the default).
    pub metadata: Metadata,
}

/// A build refused because `NAME@REV` already names an archive with another root hash
/// (nothing was replaced; `--force` replaces it). `pqcc model build` exits 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// `NAME@REV`.
    pub identity: String,
    /// The existing archive.
    pub archive: PathBuf,
    /// Its root hash.
    pub existing: [u8; DIGEST_LEN],
    /// The root hash of this build.
    pub built: [u8; DIGEST_LEN],
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} already holds root hash {}; this build gives {}. An identity \
             name@revision must always name the same content, so the archive was not \
             replaced: give the new content another --revision, or pass --force to \
             replace it",
            self.identity,
            self.archive.display(),
            hex::encode(self.existing),
            hex::encode(self.built)
        )
    }
}

impl std::error::Error for Conflict {}

/// Checks a name or revision for use in a file name.
fn check_component(what: &str, s: &str, slash_ok: bool) -> anyhow::Result<()> {
    let ok = !s.is_empty()
        && !s.starts_with('.')
        && !s.contains("..")
        && !s.contains("--")
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.+".contains(&c) || (slash_ok && c == b'/'))
        && !s.starts_with('/')
        && !s.ends_with('/')
        && !s.contains("//");
    if !ok {
        bail!(
            "{what} {s:?}: use letters, digits and - _ . +{} (no leading dot, no `..` or `--`)",
            if slash_ok { " /" } else { "" }
        );
    }
    Ok(())
}

/// The file name stem of a model's outputs: `ORG--NAME@REV`.
pub fn stem(name: &str, revision: &str) -> anyhow::Result<String> {
    check_component("name", name, true)?;
    check_component("revision", revision, false)?;
    Ok(format!("{}@{revision}", name.replace('/', "--")))
}

/// The input fingerprint the cache compares.
fn fingerprint(entries: &[Entry], opts: &Options) -> String {
    let mut h = Sha256::new();
    h.update(b"pqcc/v1/model-archive-input\0");
    h.update(opts.salt.as_bytes().len().to_le_bytes());
    h.update(opts.salt.as_bytes());
    h.update(opts.uuid);
    for e in entries {
        h.update((e.header.name.len() as u64).to_le_bytes());
        h.update(&e.header.name);
        h.update(e.path.as_os_str().len().to_le_bytes());
        h.update(e.path.as_os_str().as_bytes());
        h.update([u8::from(e.header.kind == super::tar::Kind::Dir)]);
        h.update(e.header.mode.to_le_bytes());
        h.update(e.header.size.to_le_bytes());
        h.update(e.dev_ino.0.to_le_bytes());
        h.update(e.dev_ino.1.to_le_bytes());
        for t in e.times {
            h.update(t.to_le_bytes());
        }
    }
    hex::encode(h.finalize())
}

/// A temporary file removed on drop unless renamed into place.
struct Temp {
    path: PathBuf,
    file: File,
    keep: bool,
    durable: bool,
}

impl Temp {
    fn create(dir: &Path, final_name: &str, durable: bool) -> anyhow::Result<Self> {
        let path = dir.join(format!(".{final_name}.tmp.{}", std::process::id()));
        let _ = fs::remove_file(&path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("{}: cannot create", path.display()))?;
        Ok(Self {
            path,
            file,
            keep: false,
            durable,
        })
    }

    fn commit(mut self, to: &Path) -> anyhow::Result<()> {
        if self.durable {
            self.file
                .sync_all()
                .with_context(|| format!("{}: fsync", self.path.display()))?;
        }
        fs::rename(&self.path, to).with_context(|| format!("renaming to {}", to.display()))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn sync_dir(dir: &Path, durable: bool) -> anyhow::Result<()> {
    if !durable {
        return Ok(());
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("{}: fsync", dir.display()))
}

/// Takes the model's lock, waiting (with a note on stderr) while another build holds it.
fn lock(dir: &Path, stem: &str) -> anyhow::Result<File> {
    let path = dir.join(format!("{stem}.lock"));
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("{}: cannot open lock file", path.display()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            eprintln!("pqcc: another build of {stem} is running; waiting for it");
            f.lock()
                .with_context(|| format!("{}: lock", path.display()))?;
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("{}: lock", path.display()));
        }
    }
    Ok(f)
}

/// Removes temporary files that killed builds of this model left (we hold its lock,
/// so no live build owns them).
fn remove_stale_temps(dir: &Path, stem: &str) {
    let prefix = format!(".{stem}.tar");
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.starts_with(&prefix) && n.contains(".tmp.") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Paths of a model's outputs.
struct Paths {
    archive: PathBuf,
    verity: PathBuf,
    hash: PathBuf,
    stamp: PathBuf,
}

fn cached(paths: &Paths, fp: &str) -> Option<[u8; DIGEST_LEN]> {
    let stamp: serde_json::Value = serde_json::from_slice(&fs::read(&paths.stamp).ok()?).ok()?;
    if stamp.get("input")?.as_str()? != fp {
        return None;
    }
    let len = |p: &Path| fs::metadata(p).ok().map(|m| m.len());
    if len(&paths.archive)? != stamp.get("archive_len")?.as_u64()?
        || len(&paths.verity)? != stamp.get("verity_len")?.as_u64()?
    {
        return None;
    }
    pqcc_core::verity::parse_root_hash(stamp.get("root_hash")?.as_str()?).ok()
}

/// `path` made absolute through its nearest existing ancestor (resolved with
/// `canonicalize`), the rest appended as written.
fn resolve_lexically(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut base = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = fs::canonicalize(base) {
            return rest.iter().rev().fold(c, |p: PathBuf, r| p.join(r));
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                base = parent;
            }
            _ => return abs,
        }
    }
}

/// The root hash of the complete archive already at `paths` (its stamp's, else its
/// hash file's), if there is one.
fn existing_root(paths: &Paths) -> Option<[u8; DIGEST_LEN]> {
    if !paths.archive.exists() {
        return None;
    }
    let from_stamp = fs::read(&paths.stamp)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v.get("root_hash")
                .and_then(|r| r.as_str())
                .and_then(|r| pqcc_core::verity::parse_root_hash(r).ok())
        });
    from_stamp.or_else(|| {
        fs::read_to_string(&paths.hash)
            .ok()
            .and_then(|h| pqcc_core::verity::parse_root_hash(h.trim()).ok())
    })
}

/// Builds (or reuses) the archive of `source` with the default [`Policy`] (metadata
/// left out, an existing archive of other content never replaced).
pub fn build(source: &Source, opts: &Options) -> anyhow::Result<Outcome> {
    build_with(source, opts, Policy::default())
}

/// Builds (or reuses) the archive of `source`. Fails with [`Conflict`] (in the
/// `anyhow::Error`) when `NAME@REV` already names an archive of other content and
/// `policy.force` is not set.
pub fn build_with(source: &Source, opts: &Options, policy: Policy) -> anyhow::Result<Outcome> {
    let stem = stem(&opts.name, &opts.revision)?;
    if let Ok(src) = fs::canonicalize(&source.dir)
        && resolve_lexically(&opts.out_dir).starts_with(&src)
    {
        bail!(
            "the output directory {} is inside the model directory {}: the archive \
             would contain itself",
            opts.out_dir.display(),
            src.display()
        );
    }
    fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("{}: cannot create", opts.out_dir.display()))?;
    let dir = fs::canonicalize(&opts.out_dir)
        .with_context(|| format!("{}: cannot resolve", opts.out_dir.display()))?;
    let tar_name = format!("{stem}.tar");
    let paths = Paths {
        archive: dir.join(&tar_name),
        verity: dir.join(format!("{tar_name}.verity")),
        hash: dir.join(format!("{tar_name}.hash")),
        stamp: dir.join(format!("{tar_name}.stamp")),
    };
    let _lock = lock(&dir, &stem)?;
    remove_stale_temps(&dir, &stem);

    let scanned = scan::scan(&source.dir, source.links, policy.metadata)?;
    let entries = scanned.entries;
    let fp = fingerprint(&entries, opts);
    let output = |root_hash, cached| Output {
        name: opts.name.clone(),
        revision: opts.revision.clone(),
        root_hash,
        archive: paths.archive.clone(),
        verity: paths.verity.clone(),
        cached,
        left_out: scanned.left_out.clone(),
    };
    if let Some(root) = cached(&paths, &fp) {
        if let Some(expected) = opts.expected
            && expected != root
        {
            return Ok(Outcome::Mismatch {
                expected,
                actual: root,
            });
        }
        eprintln!("pqcc: reusing {} (same input)", paths.archive.display());
        return Ok(Outcome::Done(output(root, true)));
    }

    let tar_tmp = Temp::create(&dir, &tar_name, opts.durable)?;
    let verity_tmp = Temp::create(&dir, &format!("{tar_name}.verity"), opts.durable)?;
    let params = VerityParams {
        salt: opts.salt,
        uuid: opts.uuid,
    };
    let headers: Vec<_> = entries.iter().map(|e| e.header.clone()).collect();
    let total = super::tar::archive_len(&headers);
    let bar = (opts.progress && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Mutex::new(b)
    });
    let progress = |n: u64| {
        if let Some(b) = &bar
            && let Ok(b) = b.lock()
        {
            b.set_position(n);
        }
    };
    let built = archive::write(
        &entries,
        &tar_tmp.file,
        &verity_tmp.file,
        &params,
        opts.durable,
        &progress,
    )?;
    if let Some(b) = bar
        && let Ok(b) = b.into_inner()
    {
        b.finish_and_clear();
    }
    if let Some(expected) = opts.expected
        && expected != built.root_hash
    {
        // The temporaries are removed on drop: nothing is left behind.
        return Ok(Outcome::Mismatch {
            expected,
            actual: built.root_hash,
        });
    }

    // NAME@REV names one content: never replace another one silently.
    if let Some(existing) = existing_root(&paths)
        && existing != built.root_hash
    {
        if !policy.force {
            // The temporaries are removed on drop: the old set stays as it was.
            return Err(Conflict {
                identity: format!("{}@{}", opts.name, opts.revision),
                archive: paths.archive.clone(),
                existing,
                built: built.root_hash,
            }
            .into());
        }
        eprintln!(
            "pqcc: --force: replacing {} (root hash {}) with root hash {}",
            paths.archive.display(),
            hex::encode(existing),
            hex::encode(built.root_hash)
        );
    }

    let root_hex = hex::encode(built.root_hash);
    let mut hash_tmp = Temp::create(&dir, &format!("{tar_name}.hash"), opts.durable)?;
    hash_tmp
        .file
        .write_all(root_hex.as_bytes())
        .context("writing the root hash file")?;
    let stamp = json!({
        "format": "pqcc-model-archive-v1",
        "name": opts.name,
        "revision": opts.revision,
        "root_hash": root_hex,
        "salt": hex::encode(opts.salt.as_bytes()),
        "uuid": hex::encode(opts.uuid),
        "archive_len": built.archive_len,
        "verity_len": built.verity_len,
        "source": source.dir.display().to_string(),
        "input": fp,
    });
    let mut stamp_tmp = Temp::create(&dir, &format!("{tar_name}.stamp"), opts.durable)?;
    stamp_tmp
        .file
        .write_all(serde_json::to_string_pretty(&stamp)?.as_bytes())
        .context("writing the build stamp")?;

    // The old stamp goes first: from here until the new stamp is in place, the
    // cache treats the model as not built.
    match fs::remove_file(&paths.stamp) {
        Ok(()) => sync_dir(&dir, opts.durable)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("{}: cannot remove", paths.stamp.display()));
        }
    }
    verity_tmp.commit(&paths.verity)?;
    tar_tmp.commit(&paths.archive)?;
    hash_tmp.commit(&paths.hash)?;
    sync_dir(&dir, opts.durable)?;
    stamp_tmp.commit(&paths.stamp)?;
    sync_dir(&dir, opts.durable)?;
    Ok(Outcome::Done(output(built.root_hash, false)))
}
