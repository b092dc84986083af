//! Downloading a Hugging Face model snapshot into the standard cache layout, for
//! `pqcc model build ORG/NAME[@REV]`, with pqcc's own small HTTP client code (ureq 2,
//! rustls; no async runtime).
//!
//! The endpoint is not trusted with the local file system: no string it sends ever
//! becomes a path. Paths are built only from the repository name the user gave (checked
//! by [`super::source`]), the commit (40 hex digits), file names of the listing that
//! pass [`check_repo_path`], and hex digests that pqcc computed itself from the bytes
//! and compared with what the endpoint declared. (hf-hub's own download, used before,
//! named the blob after the server's `ETag` and the snapshot after its `X-Repo-Commit`:
//! an absolute `ETag` wrote a file wherever the server chose; issue 29.)
//!
//! 1. `GET {endpoint}/api/models/ORG/NAME/revision/REV?blobs=true` gives the commit
//!    (`sha`) and every file (`siblings`: `rfilename`, and where the endpoint sends
//!    them `size`, `blobId` and `lfs.sha256`). A file name with an empty, `.` or `..`
//!    component, a leading `/`, a backslash, a NUL or another control character is
//!    refused, as is a listing naming one file twice.
//! 2. Under the model's lock (`models--ORG--NAME/.pqcc-download.lock`), the marker
//!    `models--ORG--NAME/.pqcc-incomplete/COMMIT` is written *before* any file of the
//!    snapshot, and removed only when every listed file is in `snapshots/COMMIT`. A
//!    snapshot with the marker is never built from (see [`incomplete`]).
//! 3. Each missing file is fetched from `{endpoint}/ORG/NAME/resolve/COMMIT/PATH`
//!    (pinned to the commit, so a branch that moves meanwhile cannot mix two commits)
//!    into `blobs/.pqcc-XXXX.part` (XXXX: a hash of the commit and the path; resumed
//!    with a `Range` request on a later run), then checked against **every** hash
//!    declared for it, and refused unless at least one was declared:
//!    - `lfs.sha256` of the listing, and the response's `X-Linked-Etag` (or, when there
//!      is none, its `ETag`) when it is 64 hex digits: the SHA-256 of the content;
//!    - `blobId` of the listing (for a file not in LFS), and the `ETag` when it is 40
//!      hex digits: the git blob SHA-1 of the content (`SHA-1("blob LEN\0" ‖ content)`,
//!      what `git hash-object` gives);
//!    - any other `ETag` is refused; so is an `X-Repo-Commit` other than the commit,
//!      and a size other than the listed one.
//!
//!    The headers are taken only from the endpoint's own responses (a redirect to a CDN
//!    on another host carries the hub's `X-Linked-Etag`; the CDN's own `ETag` is
//!    ignored, and the token is not sent there). A checked file is renamed to
//!    `blobs/HASH` (its SHA-256 when one was declared, else its git blob SHA-1, as
//!    `huggingface_hub` names blobs) and linked from `snapshots/COMMIT/PATH` as
//!    `../../blobs/HASH`; directories on the way are created one by one and a symbolic
//!    link among them is refused. Empty files are written directly.
//! 4. `refs/REV` is written (atomically) with COMMIT when REV is not the commit itself.
//!
//! A file already in the snapshot counts as present when it is a regular file of the
//! listed size, or a link into this model's `blobs/` to a regular file of the listed
//! size whose name is one of the hashes the listing declares (when it declares one).
//! It is not hashed again: the hashes protect the download, and the model's identity is
//! its archive's root hash (`ORG/NAME@REV:ROOTHASH`).

use std::{
    collections::HashSet,
    fs::{self, File, OpenOptions},
    io::{IsTerminal, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

/// The endpoint used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Redirects followed for one request at most.
const MAX_REDIRECTS: usize = 5;
/// Attempts for one file when the connection fails or the body is cut short (each
/// resumes where the previous one stopped).
const ATTEMPTS: u32 = 3;
/// A file name of the listing longer than this is refused.
const MAX_PATH_LEN: usize = 1024;

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

/// Checks a file name from the endpoint's listing before it is used under the
/// snapshot directory: `/`-separated components, none empty, `.` or `..`, no leading
/// `/`, no backslash, no NUL or other control character, at most 1024 bytes.
pub fn check_repo_path(path: &str) -> anyhow::Result<()> {
    let why = if path.is_empty() {
        Some("empty")
    } else if path.len() > MAX_PATH_LEN {
        Some("longer than 1024 bytes")
    } else if path.starts_with('/') {
        Some("absolute")
    } else if path.contains('\\') {
        Some("contains a backslash")
    } else if path.chars().any(char::is_control) {
        Some("contains a NUL or another control character")
    } else if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        Some("has an empty, `.` or `..` component")
    } else {
        None
    };
    match why {
        Some(why) => bail!(
            "the listing names an unsafe path {:?} ({why}); refused",
            shorten(path)
        ),
        None => Ok(()),
    }
}

/// The git blob SHA-1 of `data`: `SHA-1("blob " ‖ decimal length ‖ "\0" ‖ data)`, what
/// `git hash-object` prints and the hub gives as the `ETag` of a file not in LFS.
pub fn git_blob_sha1(data: &[u8]) -> [u8; 20] {
    let mut h = GitSha1::new(data.len() as u64);
    h.update(data);
    h.finish()
}

/// Incremental git blob SHA-1 (the length must be known first).
struct GitSha1(aws_lc_rs::digest::Context);

impl GitSha1 {
    fn new(len: u64) -> Self {
        let mut c = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
        c.update(format!("blob {len}\0").as_bytes());
        Self(c)
    }

    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn finish(self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

/// A hash the endpoint declared for a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    /// SHA-256 of the content.
    Sha256([u8; 32]),
    /// git blob SHA-1 of the content.
    GitSha1([u8; 20]),
}

impl Declared {
    fn hex(&self) -> String {
        match self {
            Declared::Sha256(d) => hex::encode(d),
            Declared::GitSha1(d) => hex::encode(d),
        }
    }

    fn what(&self) -> &'static str {
        match self {
            Declared::Sha256(_) => "SHA-256",
            Declared::GitSha1(_) => "git blob SHA-1",
        }
    }
}

/// One file of the listing.
#[derive(Debug)]
struct Sibling {
    path: String,
    size: Option<u64>,
    /// `lfs.sha256`.
    sha256: Option<[u8; 32]>,
    /// `blobId` of a file not in LFS (for an LFS file it is the pointer's, not the
    /// content's, and is not kept).
    git_sha1: Option<[u8; 20]>,
}

impl Sibling {
    fn declared(&self) -> Vec<Declared> {
        let mut v = Vec::new();
        if let Some(d) = self.sha256 {
            v.push(Declared::Sha256(d));
        }
        if let Some(d) = self.git_sha1 {
            v.push(Declared::GitSha1(d));
        }
        v
    }
}

/// The HTTP side: one agent without automatic redirects (followed by hand, so that the
/// token stays on the endpoint's origin and the hub's headers can be told from a CDN's).
struct Client {
    agent: ureq::Agent,
    endpoint: String,
    origin: String,
    token: Option<String>,
    progress: bool,
}

/// A response, with the headers of the last response that came from the endpoint's
/// own origin.
struct Answer {
    response: ureq::Response,
    /// `X-Linked-Etag`, else `ETag`, from the endpoint's origin.
    etag: Option<String>,
    /// `X-Repo-Commit` from the endpoint's origin.
    commit: Option<String>,
}

/// Why a request failed.
enum HttpError {
    /// No answer at all (connection, DNS, TLS, timeout, a cut connection).
    Transport(anyhow::Error),
    /// An HTTP error status.
    Status(u16, anyhow::Error),
    /// A bad answer (a redirect without a usable `Location`, too many redirects).
    Bad(anyhow::Error),
}

impl HttpError {
    fn into_error(self) -> anyhow::Error {
        match self {
            HttpError::Transport(e) | HttpError::Status(_, e) | HttpError::Bad(e) => e,
        }
    }
}

/// `scheme://host[:port]` of a URL (lower-cased), or the URL itself when it has none.
fn origin(url: &str) -> String {
    let rest_at = url.find("://").map_or(0, |i| i + 3);
    let end = url[rest_at..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| rest_at + i);
    url[..end].to_ascii_lowercase()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    fn new(cache: &Path) -> anyhow::Result<Self> {
        let endpoint = endpoint();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            bail!("HF_ENDPOINT {endpoint:?} is not an http:// or https:// URL");
        }
        let token = match std::env::var("HF_TOKEN") {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_owned()),
            // As hf-hub and huggingface_hub: the `token` file beside the hub cache.
            _ => hf_hub::Cache::new(cache.to_path_buf()).token(),
        };
        let agent = ureq::AgentBuilder::new()
            .try_proxy_from_env(true)
            .redirects(0)
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(Duration::from_secs(120))
            .user_agent(&format!("pqcc/{}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Self {
            origin: origin(&endpoint),
            endpoint,
            agent,
            token,
            progress: std::io::stderr().is_terminal(),
        })
    }

    /// `GET url`, following up to [`MAX_REDIRECTS`] redirects by hand.
    fn get(&self, url: &str, range_from: u64) -> Result<Answer, HttpError> {
        let mut url = url.to_owned();
        let mut on_endpoint = true;
        let (mut etag, mut commit) = (None, None);
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.agent.get(&url).set("Accept-Encoding", "identity");
            if range_from > 0 {
                req = req.set("Range", &format!("bytes={range_from}-"));
            }
            if on_endpoint && let Some(t) = &self.token {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            let response = match req.call() {
                Ok(r) => r,
                Err(ureq::Error::Status(code, _)) => {
                    return Err(HttpError::Status(
                        code,
                        anyhow::anyhow!("{url}: HTTP status {code}"),
                    ));
                }
                Err(e) => return Err(HttpError::Transport(anyhow::anyhow!("{}", one_line(&e)))),
            };
            if on_endpoint {
                let linked = response.header("x-linked-etag");
                if let Some(e) = linked.or_else(|| response.header("etag")) {
                    etag = Some(e.to_owned());
                }
                if let Some(c) = response.header("x-repo-commit") {
                    commit = Some(c.to_owned());
                }
            }
            if !(300..400).contains(&response.status()) {
                return Ok(Answer {
                    response,
                    etag,
                    commit,
                });
            }
            let Some(location) = response.header("location") else {
                return Err(HttpError::Bad(anyhow::anyhow!(
                    "{url}: HTTP status {} without a Location",
                    response.status()
                )));
            };
            let next = if location.starts_with("http://") || location.starts_with("https://") {
                location.to_owned()
            } else if let Some(rest) = location.strip_prefix("//") {
                let scheme = url.split("://").next().unwrap_or("https");
                format!("{scheme}://{rest}")
            } else if location.starts_with('/') {
                format!("{}{location}", origin(&url))
            } else {
                return Err(HttpError::Bad(anyhow::anyhow!(
                    "{url}: a redirect to {:?}, not an absolute URL or path",
                    shorten(location)
                )));
            };
            if url.starts_with("https://") && next.starts_with("http://") {
                return Err(HttpError::Bad(anyhow::anyhow!(
                    "{url}: a redirect from https to plain http ({}); refused",
                    shorten(&next)
                )));
            }
            on_endpoint = on_endpoint && origin(&next) == self.origin;
            url = next;
        }
        Err(HttpError::Bad(anyhow::anyhow!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }
}

/// Downloads `repo` at `rev` into the hub cache `cache` and returns the complete
/// snapshot directory `cache/models--ORG--NAME/snapshots/COMMIT`.
pub fn download(cache: &Path, repo: &str, rev: &str) -> Result<PathBuf, Failure> {
    let what = format!("cannot download {repo}@{rev} from {}", endpoint());
    let client =
        Client::new(cache).map_err(|e| Failure::Other(anyhow::anyhow!("{what}: {e:#}")))?;

    // 1. The listing.
    let url = format!(
        "{}/api/models/{repo}/revision/{}?blobs=true",
        client.endpoint,
        encode_component(rev)
    );
    let body = match client.get(&url, 0) {
        Ok(a) => a
            .response
            .into_string()
            .map_err(|e| Failure::Other(anyhow::anyhow!("{what}: reading the listing: {e}")))?,
        Err(HttpError::Transport(e)) => {
            return Err(Failure::Unreachable(anyhow::anyhow!("{what}: {e:#}")));
        }
        Err(e) => {
            return Err(Failure::Other(anyhow::anyhow!(
                "{what}: {:#}",
                e.into_error()
            )));
        }
    };
    let (commit, siblings) =
        parse_listing(&body).map_err(|e| Failure::Other(anyhow::anyhow!("{what}: {e:#}")))?;
    let asked_commit = rev.len() == 40 && rev.bytes().all(|c| c.is_ascii_hexdigit());
    if asked_commit && !rev.eq_ignore_ascii_case(&commit) {
        return Err(Failure::Other(anyhow::anyhow!(
            "{what}: asked for commit {rev}, the listing is of commit {commit}"
        )));
    }

    fetch(&client, cache, repo, rev, &commit, &siblings)
        .map_err(|e| Failure::Other(anyhow::anyhow!("{what}: {e:#}")))
}

fn fetch(
    client: &Client,
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
    let blobs = model_dir.join("blobs");
    fs::create_dir_all(marker.parent().unwrap_or(&model_dir))?;
    File::create(&marker)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("{}: cannot write", marker.display()))?;
    sync_dir(marker.parent().unwrap_or(&model_dir));
    for d in [&snap, &blobs] {
        fs::create_dir_all(d).with_context(|| format!("{}: cannot create", d.display()))?;
    }
    let blobs_real =
        fs::canonicalize(&blobs).with_context(|| format!("{}: cannot resolve", blobs.display()))?;

    // 3. Every file.
    for s in siblings {
        let dst = snap.join(&s.path);
        make_parents(&snap, &s.path)?;
        if present(&dst, s, &blobs_real) {
            continue;
        }
        discard(&dst)?;
        if s.size == Some(0) {
            check_hashes(s, &[], &Sha256::digest([]).into(), &git_blob_sha1(&[]))?;
            write_empty(&dst)?;
            continue;
        }
        let name = fetch_file(client, repo, commit, s, &blobs)?;
        let up = "../".repeat(s.path.matches('/').count());
        std::os::unix::fs::symlink(format!("{up}../../blobs/{name}"), &dst)
            .with_context(|| format!("{}: cannot link", dst.display()))?;
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

/// Creates the directories of `rel`'s parent under `snap`, one by one, refusing any
/// component that exists as something other than a real directory.
fn make_parents(snap: &Path, rel: &str) -> anyhow::Result<()> {
    let mut dir = snap.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for c in &parts[..parts.len().saturating_sub(1)] {
        dir.push(c);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!(
                "{}: exists and is not a directory (a symbolic link is not followed)",
                dir.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(&dir).with_context(|| format!("{}: cannot create", dir.display()))?
            }
            Err(e) => return Err(e).with_context(|| format!("{}: cannot stat", dir.display())),
        }
    }
    Ok(())
}

/// Downloads one file into `blobs/`, checks it, and returns its blob name.
fn fetch_file(
    client: &Client,
    repo: &str,
    commit: &str,
    s: &Sibling,
    blobs: &Path,
) -> anyhow::Result<String> {
    let url = format!(
        "{}/{repo}/resolve/{commit}/{}",
        client.endpoint,
        s.path
            .split('/')
            .map(encode_component)
            .collect::<Vec<_>>()
            .join("/")
    );
    // A name of our own making: a hash of the commit and the path.
    let part_id = hex::encode(&Sha256::digest(format!("{commit}/{}", s.path))[..16]);
    let part = blobs.join(format!(".pqcc-{part_id}.part"));
    let mut header_hashes = Vec::new();
    let mut last_err = Some(anyhow::anyhow!("not attempted"));
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(300 << attempt));
        }
        match fetch_attempt(client, &url, commit, s, &part) {
            Ok(h) => {
                header_hashes = h;
                last_err = None;
                break;
            }
            Err(Retry::Again(e)) => last_err = Some(e),
            Err(Retry::Fatal(e)) => {
                let _ = fs::remove_file(&part);
                return Err(e.context(s.path.clone()));
            }
        }
    }
    if let Some(e) = last_err {
        // The part is kept: a later run resumes it (and checks all of it).
        return Err(e.context(format!("{} (after {ATTEMPTS} attempts)", s.path)));
    }
    // Hash what is on disk, all of it (a resumed part included).
    let r = (|| {
        let (sha256, sha1) = hash_file(&part)?;
        check_hashes(s, &header_hashes, &sha256, &sha1)?;
        let declared_sha256 = s.sha256.is_some()
            || header_hashes
                .iter()
                .any(|d| matches!(d, Declared::Sha256(_)));
        let name = if declared_sha256 {
            hex::encode(sha256)
        } else {
            hex::encode(sha1)
        };
        let blob = blobs.join(&name);
        fs::rename(&part, &blob).with_context(|| format!("{}: cannot rename", blob.display()))?;
        sync_dir(blobs);
        Ok(name)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&part);
    }
    r.map_err(|e: anyhow::Error| e.context(s.path.clone()))
}

/// How an attempt failed.
enum Retry {
    /// The connection failed or the body was cut: try again, resuming.
    Again(anyhow::Error),
    /// Anything else: stop (and drop the part).
    Fatal(anyhow::Error),
}

/// One request for a file, appended to `part` (resuming it). `Ok(hashes)`: the part
/// holds the whole body, and these are the hashes the headers declared.
fn fetch_attempt(
    client: &Client,
    url: &str,
    commit: &str,
    s: &Sibling,
    part: &Path,
) -> Result<Vec<Declared>, Retry> {
    let io = |what: &str, e: std::io::Error| {
        Retry::Fatal(anyhow::anyhow!("{}: {what}: {e}", part.display()))
    };
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(part)
        .map_err(|e| io("cannot open", e))?;
    let mut have = file.metadata().map_err(|e| io("cannot stat", e))?.len();
    if let Some(n) = s.size
        && have > n
    {
        file.set_len(0).map_err(|e| io("cannot truncate", e))?;
        have = 0;
    }
    let answer = match client.get(url, have) {
        Ok(a) => a,
        // The part is longer than the file: start again.
        Err(HttpError::Status(416, e)) if have > 0 => {
            let _ = file.set_len(0);
            return Err(Retry::Again(e));
        }
        Err(HttpError::Transport(e)) => return Err(Retry::Again(e)),
        Err(e) => return Err(Retry::Fatal(e.into_error())),
    };
    let header_hashes = parse_etag(answer.etag.as_deref()).map_err(Retry::Fatal)?;
    if let Some(c) = &answer.commit
        && !c.trim().eq_ignore_ascii_case(commit)
    {
        return Err(Retry::Fatal(anyhow::anyhow!(
            "the endpoint served it from commit {:?}, not {commit}",
            shorten(c)
        )));
    }
    let response = answer.response;
    let start = match response.status() {
        200 => 0,
        206 => {
            let from = response
                .header("content-range")
                .and_then(|v| v.trim().strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if from != Some(have) {
                let _ = file.set_len(0);
                return Err(Retry::Again(anyhow::anyhow!(
                    "asked for the bytes from {have}, got a Content-Range {:?}",
                    response.header("content-range").map(shorten)
                )));
            }
            have
        }
        n => {
            return Err(Retry::Fatal(anyhow::anyhow!("unexpected HTTP status {n}")));
        }
    };
    file.set_len(start).map_err(|e| io("cannot truncate", e))?;
    file.seek(SeekFrom::Start(start))
        .map_err(|e| io("cannot seek", e))?;
    let bar = client.progress.then(|| {
        let b = indicatif::ProgressBar::new(s.size.unwrap_or(0));
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_message(s.path.clone());
        b.set_position(start);
        b
    });
    let mut reader = response.into_reader();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = start;
    let r = loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(Retry::Again(anyhow::anyhow!("reading the body: {e}"))),
        };
        len += n as u64;
        if let Some(max) = s.size
            && len > max
        {
            break Err(Retry::Fatal(anyhow::anyhow!(
                "the endpoint sent more than the listed {max} bytes"
            )));
        }
        if let Err(e) = file.write_all(&buf[..n]) {
            break Err(io("cannot write", e));
        }
        if let Some(b) = &bar {
            b.set_position(len);
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    r?;
    file.sync_all().map_err(|e| io("fsync", e))?;
    if let Some(n) = s.size
        && len != n
    {
        return Err(Retry::Again(anyhow::anyhow!(
            "got {len} bytes, the listing says {n}"
        )));
    }
    Ok(header_hashes)
}

/// The hash an `X-Linked-Etag` or `ETag` value declares: 64 hex digits a SHA-256, 40 a
/// git blob SHA-1 (after removing a `W/` prefix and quotes); none without a header;
/// anything else is refused.
fn parse_etag(v: Option<&str>) -> anyhow::Result<Vec<Declared>> {
    let Some(raw) = v else {
        return Ok(Vec::new());
    };
    let t = raw.trim();
    let t = t.strip_prefix("W/").unwrap_or(t).trim_matches('"');
    let hexy = t.bytes().all(|c| c.is_ascii_hexdigit());
    if hexy && t.len() == 64 {
        let mut d = [0u8; 32];
        hex::decode_to_slice(t, &mut d)?;
        return Ok(vec![Declared::Sha256(d)]);
    }
    if hexy && t.len() == 40 {
        let mut d = [0u8; 20];
        hex::decode_to_slice(t, &mut d)?;
        return Ok(vec![Declared::GitSha1(d)]);
    }
    bail!(
        "the endpoint's ETag {:?} is neither a SHA-256 (64 hex digits) nor a git blob \
         SHA-1 (40); refused",
        shorten(raw)
    )
}

/// Checks the content's hashes against every declared one; at least one must be.
fn check_hashes(
    s: &Sibling,
    from_headers: &[Declared],
    sha256: &[u8; 32],
    sha1: &[u8; 20],
) -> anyhow::Result<()> {
    let mut declared = s.declared();
    declared.extend_from_slice(from_headers);
    if declared.is_empty() && s.size != Some(0) {
        bail!("the endpoint declared no SHA-256 or git blob SHA-1 for it; refused");
    }
    for d in declared {
        let got = match d {
            Declared::Sha256(_) => hex::encode(sha256),
            Declared::GitSha1(_) => hex::encode(sha1),
        };
        if got != d.hex() {
            bail!(
                "{} {got} of the downloaded bytes differs from the declared {}",
                d.what(),
                d.hex()
            );
        }
    }
    Ok(())
}

/// SHA-256 and git blob SHA-1 of a file.
fn hash_file(path: &Path) -> anyhow::Result<([u8; 32], [u8; 20])> {
    let mut f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("{}: cannot stat", path.display()))?
        .len();
    let mut sha256 = Sha256::new();
    let mut sha1 = GitSha1::new(len);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        sha256.update(&buf[..n]);
        sha1.update(&buf[..n]);
    }
    if total != len {
        bail!("{}: changed while hashed", path.display());
    }
    Ok((sha256.finalize().into(), sha1.finish()))
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
    let mut seen = HashSet::new();
    for s in list {
        let path = s["rfilename"]
            .as_str()
            .context("a sibling without `rfilename`")?;
        check_repo_path(path)?;
        if !seen.insert(path) {
            bail!("the listing names {path:?} twice");
        }
        let lfs = s["lfs"].is_object();
        let sha256 = match s["lfs"]["sha256"].as_str() {
            Some(h) => {
                let mut d = [0u8; 32];
                hex::decode_to_slice(h, &mut d)
                    .with_context(|| format!("{path}: bad lfs.sha256 {:?}", shorten(h)))?;
                Some(d)
            }
            None => None,
        };
        let git_sha1 = match s["blobId"].as_str() {
            Some(h) if !lfs => {
                let mut d = [0u8; 20];
                hex::decode_to_slice(h, &mut d)
                    .with_context(|| format!("{path}: bad blobId {:?}", shorten(h)))?;
                Some(d)
            }
            _ => None,
        };
        out.push(Sibling {
            path: path.to_owned(),
            size: s["size"].as_u64().or_else(|| s["lfs"]["size"].as_u64()),
            sha256,
            git_sha1,
        });
    }
    Ok((commit, out))
}

/// Whether a file already in the snapshot is there whole (see the module docs).
fn present(dst: &Path, s: &Sibling, blobs_real: &Path) -> bool {
    let Ok(lm) = fs::symlink_metadata(dst) else {
        return false;
    };
    let size_ok = |m: &fs::Metadata| m.is_file() && s.size.is_none_or(|n| m.len() == n);
    if lm.is_file() {
        return size_ok(&lm);
    }
    if !lm.file_type().is_symlink() {
        return false;
    }
    let Ok(target) = fs::canonicalize(dst) else {
        return false;
    };
    if target.parent() != Some(blobs_real) {
        return false;
    }
    let Ok(m) = fs::metadata(&target) else {
        return false;
    };
    let declared = s.declared();
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("");
    size_ok(&m) && (declared.is_empty() || declared.iter().any(|d| d.hex() == name))
}

/// Removes a snapshot entry (a link or a file) so that it is fetched again.
fn discard(dst: &Path) -> anyhow::Result<()> {
    match fs::symlink_metadata(dst) {
        Ok(m) if m.is_dir() => bail!(
            "{}: a directory where the listing has a file",
            dst.display()
        ),
        Ok(_) => fs::remove_file(dst).with_context(|| format!("{}: cannot remove", dst.display())),
        Err(_) => Ok(()),
    }
}

fn write_empty(dst: &Path) -> anyhow::Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
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

/// A server-supplied string cut to 200 characters for a message.
fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(200).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing() {
        let body = r#"{"sha":"0123456789ABCDEF0123456789abcdef01234567","siblings":[
            {"rfilename":"a/b.json","size":3,"blobId":"ce013625030ba8dba906f756967f9e9ca394464a"},
            {"rfilename":"w.bin","size":9,"blobId":"0000000000000000000000000000000000000001","lfs":{"sha256":"00000000000000000000000000000000000000000000000000000000000000ff","size":9}},
            {"rfilename":"c"}]}"#;
        let (c, s) = parse_listing(body).unwrap();
        assert_eq!(c, "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].size, Some(3));
        assert_eq!(s[0].git_sha1.unwrap()[0], 0xce);
        assert_eq!(s[1].sha256.unwrap()[31], 0xff);
        // An LFS file's blobId is its pointer's: not a hash of the content.
        assert_eq!(s[1].git_sha1, None);
        assert_eq!(s[2].size, None);
        for bad in [
            "../x",
            "a//b",
            "/abs",
            "a/./b",
            "",
            "a/..",
            "a\\\\b",
            "..\\\\x",
            "a\\u0000b",
            "a\\nb",
            "a/",
        ] {
            let body = format!(
                r#"{{"sha":"0123456789abcdef0123456789abcdef01234567","siblings":[{{"rfilename":"{bad}"}}]}}"#
            );
            assert!(parse_listing(&body).is_err(), "{bad}");
        }
        let long = "a".repeat(1025);
        assert!(check_repo_path(&long).is_err());
        assert!(check_repo_path("ok/.gitattributes").is_ok());
        assert!(parse_listing(r#"{"sha":"main","siblings":[]}"#).is_err());
        let twice = r#"{"sha":"0123456789abcdef0123456789abcdef01234567","siblings":[
            {"rfilename":"a"},{"rfilename":"a"}]}"#;
        assert!(parse_listing(twice).is_err());
        let bad_blob = r#"{"sha":"0123456789abcdef0123456789abcdef01234567","siblings":[
            {"rfilename":"a","blobId":"/etc/passwd"}]}"#;
        assert!(parse_listing(bad_blob).is_err());
    }

    #[test]
    fn etags() {
        let sha = "ab".repeat(32);
        assert_eq!(
            parse_etag(Some(&format!("\"{sha}\""))).unwrap(),
            vec![Declared::Sha256([0xab; 32])]
        );
        let git = "cd".repeat(20);
        assert_eq!(
            parse_etag(Some(&format!("W/\"{git}\""))).unwrap(),
            vec![Declared::GitSha1([0xcd; 20])]
        );
        assert!(parse_etag(None).unwrap().is_empty());
        for bad in ["\"/tmp/evil\"", "../../x", "\"abc\"", "", &"a".repeat(63)] {
            let e = parse_etag(Some(bad)).unwrap_err();
            assert!(format!("{e}").contains("ETag"), "{e}");
        }
    }

    #[test]
    fn git_blob_hash_is_gits() {
        // `git hash-object` of an empty file and of "hello\n".
        assert_eq!(
            hex::encode(git_blob_sha1(b"")),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
        assert_eq!(
            hex::encode(git_blob_sha1(b"hello\n")),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }

    #[test]
    fn hashes_are_all_checked_and_one_is_required() {
        let data = b"hello\n";
        let sha256: [u8; 32] = Sha256::digest(data).into();
        let sha1 = git_blob_sha1(data);
        let s = Sibling {
            path: "x".into(),
            size: Some(6),
            sha256: None,
            git_sha1: None,
        };
        let e = check_hashes(&s, &[], &sha256, &sha1).unwrap_err();
        assert!(format!("{e}").contains("declared no"), "{e}");
        check_hashes(&s, &[Declared::GitSha1(sha1)], &sha256, &sha1).unwrap();
        check_hashes(&s, &[Declared::Sha256(sha256)], &sha256, &sha1).unwrap();
        let e = check_hashes(&s, &[Declared::GitSha1([0; 20])], &sha256, &sha1).unwrap_err();
        assert!(format!("{e}").contains("git blob SHA-1"), "{e}");
        let s = Sibling {
            sha256: Some([1; 32]),
            ..s
        };
        let e = check_hashes(&s, &[Declared::GitSha1(sha1)], &sha256, &sha1).unwrap_err();
        assert!(format!("{e}").contains("SHA-256"), "{e}");
    }

    #[test]
    fn urls() {
        assert_eq!(
            origin("https://Hub.example:8443/a/b?c"),
            "https://hub.example:8443"
        );
        assert_eq!(origin("http://127.0.0.1:9"), "http://127.0.0.1:9");
        assert_eq!(encode_component("v1.0"), "v1.0");
        assert_eq!(encode_component("a b/c?#%"), "a%20b%2Fc%3F%23%25");
    }

    #[test]
    fn parents_are_made_without_following_links() {
        let d = std::env::temp_dir().join(format!("pqcc-hub-parents-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("snap")).unwrap();
        fs::create_dir_all(d.join("elsewhere")).unwrap();
        make_parents(&d.join("snap"), "a/b/c.json").unwrap();
        assert!(d.join("snap/a/b").is_dir());
        std::os::unix::fs::symlink(d.join("elsewhere"), d.join("snap/l")).unwrap();
        assert!(make_parents(&d.join("snap"), "l/x/y").is_err());
        assert!(!d.join("elsewhere/x").exists());
        fs::remove_dir_all(&d).unwrap();
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
