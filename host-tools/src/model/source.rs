//! What `pqcc model build SOURCE` accepts, and where the files come from.
//!
//! - a local model directory: name = the directory's name, revision = `local`
//!   unless given; symbolic links are refused;
//! - a Hugging Face cache snapshot `…/models--ORG--NAME/snapshots/REV`: name
//!   `ORG/NAME`, revision `REV`; its links are followed only when they resolve to a
//!   regular file directly in its own `../../blobs` (any other link is refused);
//! - `ORG/NAME[@REV]` (`REV` a commit, branch or tag, default `main`): downloaded
//!   ([`super::hub`]) from `$HF_ENDPOINT` into the Hugging Face cache
//!   (`$HF_HUB_CACHE`, `$HF_HOME/hub`, `$XDG_CACHE_HOME/huggingface/hub` or
//!   `~/.cache/huggingface/hub`), then built as that snapshot. No network is used when
//!   `REV` is a commit already complete in the cache, nor ever with `HF_HUB_OFFLINE=1`
//!   (the cache only, branches and tags resolved through `refs/`). When the endpoint
//!   cannot be reached at all, a complete cached snapshot of `refs/REV` is used with a
//!   warning; otherwise the error names the endpoint and the reason.
//!
//! A snapshot that pqcc began to download and did not complete is never built from.
//!
//! Any form may end in `:ROOTHASH` (64 hex digits): the root hash the build must give.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

use super::scan::Links;

/// A resolved source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The directory to archive.
    pub dir: PathBuf,
    /// The model's name (default for `--name`).
    pub name: String,
    /// The revision (default for `--revision`).
    pub revision: String,
    /// How symbolic links inside are treated.
    pub links: Links,
    /// The root hash the build must produce, from a `:ROOTHASH` suffix.
    pub expected: Option<[u8; 32]>,
}

/// Splits a trailing `:ROOTHASH` (64 hex digits) off `spec`.
pub fn split_expected(spec: &str) -> anyhow::Result<(&str, Option<[u8; 32]>)> {
    if let Some((head, tail)) = spec.rsplit_once(':')
        && tail.len() == 64
        && tail.bytes().all(|c| c.is_ascii_hexdigit())
    {
        let h = pqcc_core::verity::parse_root_hash(tail)?;
        return Ok((head, Some(h)));
    }
    Ok((spec, None))
}

/// Resolves `spec` (see the module docs).
pub fn resolve(spec: &str) -> anyhow::Result<Source> {
    // An existing path wins, even if it happens to contain ':'.
    if Path::new(spec).exists() {
        return local(Path::new(spec), None);
    }
    let (head, expected) = split_expected(spec)?;
    if Path::new(head).exists() {
        return local(Path::new(head), expected);
    }
    if let Some((repo, rev)) = parse_repo(head) {
        return hub(repo, rev, expected);
    }
    bail!("{spec}: no such directory, and not of the form ORG/NAME[@REV][:ROOTHASH]")
}

fn local(path: &Path, expected: Option<[u8; 32]>) -> anyhow::Result<Source> {
    let dir =
        fs::canonicalize(path).with_context(|| format!("{}: cannot resolve", path.display()))?;
    if !dir.is_dir() {
        bail!("{}: not a directory", path.display());
    }
    if let Some((name, revision)) = snapshot_identity(&dir) {
        if super::hub::incomplete(&dir) {
            bail!(
                "{}: an incomplete download of {name}@{revision} (a download was \
                 interrupted or failed); run `pqcc model build {name}@{revision}` where the \
                 endpoint is reachable to complete it",
                dir.display()
            );
        }
        return Ok(Source {
            dir,
            name,
            revision,
            links: Links::FollowFiles,
            expected,
        });
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_owned());
    Ok(Source {
        dir,
        name,
        revision: "local".to_owned(),
        links: Links::Refuse,
        expected,
    })
}

/// `…/models--ORG--NAME/snapshots/REV` → (`ORG/NAME`, `REV`).
pub fn snapshot_identity(dir: &Path) -> Option<(String, String)> {
    let rev = dir.file_name()?.to_str()?;
    let snaps = dir.parent()?;
    if snaps.file_name()?.to_str()? != "snapshots" {
        return None;
    }
    let repo = snaps
        .parent()?
        .file_name()?
        .to_str()?
        .strip_prefix("models--")?;
    let (org, name) = repo.split_once("--")?;
    if org.is_empty() || name.is_empty() {
        return None;
    }
    Some((format!("{org}/{}", name.replace("--", "/")), rev.to_owned()))
}

fn parse_repo(s: &str) -> Option<(&str, Option<&str>)> {
    let (repo, rev) = match s.split_once('@') {
        Some((r, v)) => (r, Some(v)),
        None => (s, None),
    };
    let (org, name) = repo.split_once('/')?;
    let ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
    };
    let bad_rev = |r: &str| {
        r.is_empty()
            || r == "."
            || r.contains('/')
            || r.contains('\\')
            || r.contains("..")
            || r.chars().any(char::is_control)
    };
    if !ok(org) || !ok(name) || rev.is_some_and(bad_rev) {
        return None;
    }
    Some((repo, rev))
}

/// The Hugging Face hub cache directory.
pub fn hub_cache() -> Option<PathBuf> {
    if let Some(p) = env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = env::var_os("HF_HOME") {
        return Some(PathBuf::from(p).join("hub"));
    }
    if let Some(p) = env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(p).join("huggingface/hub"));
    }
    env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

fn hub(repo: &str, rev: Option<&str>, expected: Option<[u8; 32]>) -> anyhow::Result<Source> {
    let rev = rev.unwrap_or("main");
    let cache = hub_cache().context("no Hugging Face cache directory (HOME is not set)")?;
    let model_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    let is_commit = rev.len() == 40 && rev.bytes().all(|c| c.is_ascii_hexdigit());
    let cached = cached_snapshot(&model_dir, rev, is_commit);
    let from = |snap: &Path| -> anyhow::Result<Source> {
        let mut s = local(snap, expected)?;
        s.name = repo.to_owned();
        Ok(s)
    };
    if super::hub::offline() {
        if let Some(snap) = &cached {
            return from(snap);
        }
        bail!(
            "{repo}@{rev} is not in the local Hugging Face cache ({}), or not completely, and \
             HF_HUB_OFFLINE is set, so pqcc uses no network: unset HF_HUB_OFFLINE where {} is reachable, or \
             copy a complete cache here, or pass a model directory",
            model_dir.display(),
            super::hub::endpoint()
        );
    }
    // A commit never changes: a complete cached snapshot of it needs no network.
    if is_commit && let Some(snap) = &cached {
        return from(snap);
    }
    match (super::hub::download(&cache, repo, rev), cached) {
        (Ok(snap), _) => from(&snap),
        (Err(super::hub::Failure::Unreachable(e)), Some(snap)) => {
            eprintln!(
                "pqcc: warning: {e:#}; using the cached snapshot {}",
                snap.display()
            );
            from(&snap)
        }
        (Err(f), _) => Err(f.into_error()),
    }
}

/// The complete cached snapshot of `rev` (a commit, or a ref in `refs/`), if any.
fn cached_snapshot(model_dir: &Path, rev: &str, is_commit: bool) -> Option<PathBuf> {
    let commit = if is_commit {
        rev.to_ascii_lowercase()
    } else {
        fs::read_to_string(model_dir.join("refs").join(rev))
            .ok()?
            .trim()
            .to_owned()
    };
    if commit.is_empty() || commit.contains('/') || commit.contains("..") {
        return None;
    }
    let snap = model_dir.join("snapshots").join(&commit);
    (snap.is_dir() && !super::hub::incomplete(&snap)).then_some(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(parse_repo("org/name"), Some(("org/name", None)));
        assert_eq!(
            parse_repo("org/name@v1.0"),
            Some(("org/name", Some("v1.0")))
        );
        assert_eq!(parse_repo("org/name@"), None);
        assert_eq!(parse_repo("org/name@."), None);
        assert_eq!(parse_repo("org/name@a\\b"), None);
        assert_eq!(parse_repo("org/name@a\nb"), None);
        assert_eq!(parse_repo("/abs"), None);
        assert_eq!(parse_repo("./x/y"), None);
        assert_eq!(parse_repo("a/b/c"), None);
        let h = "ab".repeat(32);
        let spec = format!("org/name@r:{h}");
        let (head, e) = split_expected(&spec).unwrap();
        assert_eq!(head, "org/name@r");
        assert_eq!(e, Some([0xab; 32]));
        assert_eq!(
            split_expected("org/name:abc").unwrap(),
            ("org/name:abc", None)
        );
    }

    #[test]
    fn snapshot_paths() {
        let p = Path::new("/c/hub/models--meta-llama--Llama-3/snapshots/0123abcd");
        assert_eq!(
            snapshot_identity(p),
            Some(("meta-llama/Llama-3".to_owned(), "0123abcd".to_owned()))
        );
        assert_eq!(snapshot_identity(Path::new("/c/models/x")), None);
    }
}
