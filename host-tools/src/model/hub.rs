//! Downloading a Hugging Face model snapshot with the `hf-hub` crate (blocking API,
//! ureq + rustls) into the standard cache layout, for `pqcc model build ORG/NAME[@REV]`.
//!
//! 1. `GET {endpoint}/api/models/ORG/NAME/revision/REV?blobs=true` gives the commit
//!    (`sha`) and every file (`siblings`: `rfilename`, and where the endpoint sends
//!    them `size` and `lfs.sha256`).
//! 2. Under the model's lock (`models--ORG--NAME/.pqcc-download.lock`), the marker
//!    `models--ORG--NAME/.pqcc-incomplete/COMMIT` is written *before* any file of the
//!    snapshot, and removed only when every listed file is in `snapshots/COMMIT` with the
//!    listed size (and, for a file downloaded now, the listed SHA-256). A snapshot with
//!    the marker is never built from (see [`incomplete`]).
//! 3. Each missing file is downloaded by hf-hub pinned to COMMIT (so a branch that moves
//!    meanwhile cannot mix two commits): a `blobs/ETAG.part` file (resumed with a
//!    `Range` request on a later run), renamed to `blobs/ETAG`, linked from
//!    `snapshots/COMMIT/PATH`. Empty files are written directly (a `Range: bytes=0-0`
//!    request on an empty file has no satisfiable answer).
//! 4. `refs/REV` is written (atomically) with COMMIT when REV is not the commit itself.

use std::{
    fs::{self, File, OpenOptions},
    io::{IsTerminal, Read, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use hf_hub::{
    Cache, Repo, RepoType,
    api::sync::{ApiBuilder, ApiError},
};
use sha2::{Digest, Sha256};

/// The endpoint used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The endpoint: `$HF_ENDPOINT` (without a trailing `/`) or [`DEFAULT_ENDPOINT`].
pub fn endpoint() -> String {
    match std::env::var("HF_ENDPOINT") {
        Ok(e) if !e.trim().is_empty() => e.trim().trim_end_matches('/').to_owned(),
        _ => DEFAULT_ENDPOINT.to_owned(),
    }
}

/// Whether `HF_HUB_OFFLINE` asks for no network access (`1`, `true`, `yes`, `on`).
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// The marker of a snapshot that pqcc started to download and has not completed.
pub fn incomplete_marker(model_dir: &Path, commit: &str) -> PathBuf {
    model_dir.join(".pqcc-incomplete").join(commit)
}

/// Whether the snapshot directory `…/models--ORG--NAME/snapshots/COMMIT` carries the
/// incomplete-download marker.
pub fn incomplete(snapshot: &Path) -> bool {
    let (Some(commit), Some(model_dir)) = (
        snapshot.file_name(),
        snapshot.parent().and_then(Path::parent),
    ) else {
        return false;
    };
    model_dir
        .join(".pqcc-incomplete")
        .join(commit)
        .symlink_metadata()
        .is_ok()
}

/// Why a download failed.
#[derive(Debug)]
pub enum Failure {
    /// The endpoint could not be reached at all (connection, DNS, TLS, timeout): a
    /// cached snapshot may be used instead.
    Unreachable(anyhow::Error),
    /// Anything else (an HTTP error status, a bad answer, a truncated file, I/O).
    Other(anyhow::Error),
}

impl Failure {
    /// The error, whatever the kind.
    pub fn into_error(self) -> anyhow::Error {
        match self {
            Failure::Unreachable(e) | Failure::Other(e) => e,
        }
    }
}

/// One file of the listing.
#[derive(Debug)]
struct Sibling {
    path: String,
    size: Option<u64>,
    sha256: Option<[u8; 32]>,
}

/// Downloads `repo` at `rev` into the hub cache `cache` and returns the complete
/// snapshot directory `cache/models--ORG--NAME/snapshots/COMMIT`.
pub fn download(cache: &Path, repo: &str, rev: &str) -> Result<PathBuf, Failure> {
    let endpoint = endpoint();
    let what = format!("cannot download {repo}@{rev} from {endpoint}");
    let mut builder = ApiBuilder::from_cache(Cache::new(cache.to_path_buf()))
        .with_endpoint(endpoint.clone())
        .with_progress(std::io::stderr().is_terminal())
        .with_retries(2)
        .with_user_agent("pqcc", env!("CARGO_PKG_VERSION"));
    if let Ok(t) = std::env::var("HF_TOKEN")
        && !t.trim().is_empty()
    {
        builder = builder.with_token(Some(t.trim().to_owned()));
    }
    let api = builder
        .build()
        .map_err(|e| Failure::Other(anyhow::anyhow!("{what}: {}", one_line(&e))))?;

    // 1. The listing.
    let listing = api
        .repo(Repo::with_revision(
            repo.to_owned(),
            RepoType::Model,
            rev.to_owned(),
        ))
        .info_request()
        .query("blobs", "true")
        .call();
    let body = match listing {
        Ok(r) => r
            .into_string()
            .map_err(|e| Failure::Other(anyhow::anyhow!("{what}: reading the listing: {e}")))?,
        Err(e) => {
            let msg = anyhow::anyhow!("{what}: {}", one_line(&e));
            return Err(if e.into_response().is_none() {
                Failure::Unreachable(msg)
            } else {
                Failure::Other(msg)
            });
        }
    };
    let (commit, siblings) =
        parse_listing(&body).map_err(|e| Failure::Other(anyhow::anyhow!("{what}: {e:#}")))?;

    fetch(&api, cache, repo, rev, &commit, &siblings)
        .map_err(|e| Failure::Other(anyhow::anyhow!("{what}: {e:#}")))
}

fn fetch(
    api: &hf_hub::api::sync::Api,
    cache: &Path,
    repo: &str,
    rev: &str,
    commit: &str,
    siblings: &[Sibling],
) -> anyhow::Result<PathBuf> {
    let model_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    fs::create_dir_all(&model_dir)
        .with_context(|| format!("{}: cannot create", model_dir.display()))?;
    let _lock = lock(&model_dir)?;

    // 2. Mark the snapshot incomplete before anything lands in it.
    let marker = incomplete_marker(&model_dir, commit);
    let snap = model_dir.join("snapshots").join(commit);
    fs::create_dir_all(marker.parent().unwrap_or(&model_dir))?;
    File::create(&marker)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("{}: cannot write", marker.display()))?;
    sync_dir(marker.parent().unwrap_or(&model_dir));
    fs::create_dir_all(&snap).with_context(|| format!("{}: cannot create", snap.display()))?;

    // 3. Every file.
    let pinned = api.repo(Repo::with_revision(
        repo.to_owned(),
        RepoType::Model,
        commit.to_owned(),
    ));
    let had_commit_ref = model_dir.join("refs").join(commit).exists();
    for s in siblings {
        let dst = snap.join(&s.path);
        if present(&dst, s) {
            continue;
        }
        discard(&dst);
        if s.size == Some(0) {
            write_empty(&dst)?;
            continue;
        }
        let got = pinned
            .download(&s.path)
            .map_err(|e: ApiError| anyhow::anyhow!("{}: {}", s.path, one_line(&e)))?;
        if got != dst {
            bail!(
                "{}: the endpoint served it from another commit ({}), not {commit}",
                s.path,
                got.display()
            );
        }
        if let Err(e) = check(&dst, s) {
            discard_with_blob(&dst);
            return Err(e);
        }
    }
    // hf-hub records the pinned revision as a ref named after the commit: not a ref.
    if !had_commit_ref {
        let _ = fs::remove_file(model_dir.join("refs").join(commit));
    }

    // 4. The ref, then the snapshot is complete.
    if rev != commit {
        write_ref(&model_dir, rev, commit)?;
    }
    sync_dir(&snap);
    fs::remove_file(&marker).with_context(|| format!("{}: cannot remove", marker.display()))?;
    sync_dir(marker.parent().unwrap_or(&model_dir));
    Ok(snap)
}

/// `sha` and `siblings` from the revision listing, checked.
fn parse_listing(body: &str) -> anyhow::Result<(String, Vec<Sibling>)> {
    let v: serde_json::Value =
        serde_json::from_str(body).context("the revision listing is not JSON")?;
    let commit = v["sha"]
        .as_str()
        .filter(|s| s.len() == 40 && s.bytes().all(|c| c.is_ascii_hexdigit()))
        .context("the revision listing has no commit (`sha` of 40 hex digits)")?
        .to_ascii_lowercase();
    let list = v["siblings"]
        .as_array()
        .context("the revision listing has no `siblings`")?;
    let mut out = Vec::with_capacity(list.len());
    for s in list {
        let path = s["rfilename"]
            .as_str()
            .context("a sibling without `rfilename`")?;
        let safe = !path.is_empty()
            && !path.contains('\0')
            && path
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if !safe {
            bail!("the listing names an unsafe path {path:?}");
        }
        let sha256 = match s["lfs"]["sha256"].as_str() {
            Some(h) => {
                let mut d = [0u8; 32];
                hex::decode_to_slice(h, &mut d)
                    .with_context(|| format!("{path}: bad lfs.sha256 {h:?}"))?;
                Some(d)
            }
            None => None,
        };
        out.push(Sibling {
            path: path.to_owned(),
            size: s["size"].as_u64().or_else(|| s["lfs"]["size"].as_u64()),
            sha256,
        });
    }
    Ok((commit, out))
}

/// Whether a file already in the snapshot is there whole (by its size; a file with
/// no listed size counts when it can be opened).
fn present(dst: &Path, s: &Sibling) -> bool {
    match fs::metadata(dst) {
        Ok(m) if m.is_file() => s.size.is_none_or(|n| m.len() == n),
        _ => false,
    }
}

/// Checks a freshly downloaded file against the listing: size, and SHA-256 for LFS files.
fn check(dst: &Path, s: &Sibling) -> anyhow::Result<()> {
    let len = fs::metadata(dst)
        .with_context(|| format!("{}: cannot stat", dst.display()))?
        .len();
    if let Some(n) = s.size
        && len != n
    {
        bail!("{}: got {len} bytes, the listing says {n}", s.path);
    }
    if let Some(want) = s.sha256 {
        let mut f = File::open(dst).with_context(|| format!("{}: cannot open", dst.display()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let got: [u8; 32] = h.finalize().into();
        if got != want {
            bail!(
                "{}: SHA-256 {} differs from the listing's {}",
                s.path,
                hex::encode(got),
                hex::encode(want)
            );
        }
    }
    Ok(())
}

/// Removes a snapshot entry (a link or a file) so that it is fetched again.
fn discard(dst: &Path) {
    if dst.symlink_metadata().is_ok() {
        let _ = fs::remove_file(dst);
    }
}

/// Removes a snapshot entry and the blob it links to, so a bad download is not reused.
fn discard_with_blob(dst: &Path) {
    if let Ok(blob) = fs::canonicalize(dst)
        && blob.parent().and_then(Path::file_name) == Some("blobs".as_ref())
    {
        let _ = fs::remove_file(blob);
    }
    discard(dst);
}

fn write_empty(dst: &Path) -> anyhow::Result<()> {
    if let Some(p) = dst.parent() {
        fs::create_dir_all(p)?;
    }
    File::create(dst)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("{}: cannot write", dst.display()))
}

/// `refs/REV` ← COMMIT, through a temporary file and a rename.
fn write_ref(model_dir: &Path, rev: &str, commit: &str) -> anyhow::Result<()> {
    let path = model_dir.join("refs").join(rev);
    let dir = path.parent().unwrap_or(model_dir);
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{rev}.tmp.{}", std::process::id()));
    let r = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(commit.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r.with_context(|| format!("{}: cannot write", path.display()))?;
    sync_dir(dir);
    Ok(())
}

/// The model's download lock; a second pqcc downloading the same model waits.
fn lock(model_dir: &Path) -> anyhow::Result<File> {
    let path = model_dir.join(".pqcc-download.lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("{}: cannot open lock file", path.display()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            eprintln!(
                "pqcc: another pqcc is downloading into {}; waiting for it",
                model_dir.display()
            );
            f.lock()
                .with_context(|| format!("{}: lock", path.display()))?;
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("{}: lock", path.display()));
        }
    }
    Ok(f)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// An error's text on one line.
fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing() {
        let body = r#"{"sha":"0123456789ABCDEF0123456789abcdef01234567","siblings":[
            {"rfilename":"a/b.json","size":3},
            {"rfilename":"w.bin","size":9,"lfs":{"sha256":"00000000000000000000000000000000000000000000000000000000000000ff","size":9}},
            {"rfilename":"c"}]}"#;
        let (c, s) = parse_listing(body).unwrap();
        assert_eq!(c, "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].size, Some(3));
        assert_eq!(s[1].sha256.unwrap()[31], 0xff);
        assert_eq!(s[2].size, None);
        for bad in ["../x", "a//b", "/abs", "a/./b", ""] {
            let body = format!(
                r#"{{"sha":"0123456789abcdef0123456789abcdef01234567","siblings":[{{"rfilename":"{bad}"}}]}}"#
            );
            assert!(parse_listing(&body).is_err(), "{bad}");
        }
        assert!(parse_listing(r#"{"sha":"main","siblings":[]}"#).is_err());
    }

    #[test]
    fn marker_path() {
        let m = Path::new("/c/models--a--b");
        let c = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            incomplete_marker(m, c),
            Path::new("/c/models--a--b/.pqcc-incomplete").join(c)
        );
    }
}
