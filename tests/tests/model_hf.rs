//! `pqcc model build ORG/NAME[@REV][:ROOTHASH]` downloading from a Hugging Face
//! endpoint, against a FAKE one: a small plain-HTTP server on 127.0.0.1 written here
//! (`FakeHub`), serving only what pqcc's downloader asks for. No test here reaches a
//! real hub.
//!
//! The fake serves `GET /api/models/ORG/NAME/revision/REV` (JSON: `sha` and
//! `siblings` with `rfilename`, `size`, `blobId` and, for larger files, `lfs.sha256`)
//! and `GET /ORG/NAME/resolve/REV/PATH` (honouring `Range`, with `X-Repo-Commit`,
//! `Content-Range` and `Content-Length`, and, as the real hub does, the git blob SHA-1
//! as the `ETag` of a small file and the SHA-256 as the `X-Linked-Etag` of a large
//! one), and can cut one file short, corrupt one, or send hostile headers.

mod common;

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use common::{Rng, TempDir, pqcc};
use sha2::{Digest, Sha256};

const REPO: &str = "acme/tiny-llm";
const SHA: &str = "4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c";

/// The model's files: nested directories, an empty file, sizes around block edges.
fn files() -> Vec<(String, Vec<u8>)> {
    let mut r = Rng::new(77);
    vec![
        ("config.json".into(), br#"{"model_type":"tiny"}"#.to_vec()),
        ("empty.txt".into(), Vec::new()),
        ("one".into(), r.bytes(1)),
        ("model.safetensors".into(), r.bytes(70_000)),
        ("sub/tok.json".into(), r.bytes(4097)),
        ("sub/deeper/w.bin".into(), r.bytes(4096)),
    ]
}

fn write_tree(dir: &Path) {
    for (name, data) in files() {
        let p = dir.join(&name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
}

/// A FAKE Hugging Face endpoint on 127.0.0.1 (plain HTTP, one thread, bounded life).
struct FakeHub {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Clone)]
struct Served {
    files: Vec<(String, Vec<u8>)>,
    /// A file whose body is cut to half of each requested range (longer than 1 byte),
    /// after a `Content-Length` announcing all of it.
    truncate: Option<String>,
    /// A file served with its last byte flipped (right length, wrong SHA-256), under
    /// the headers of its true content.
    corrupt: Option<String>,
    /// Sent instead of the true `ETag` and `X-Linked-Etag` of every file.
    etag: Option<String>,
    /// Sent instead of the true `X-Repo-Commit` of every file.
    commit: Option<String>,
    /// Answer for LFS files with a `302` to this other server (a CDN), as the real hub
    /// does, with the `X-Linked-Etag` and `X-Repo-Commit` on the redirect.
    redirect_lfs: Option<String>,
    /// Be that CDN: serve `GET /cdn/PATH` with an `ETag` that is no hash.
    cdn: bool,
}

impl FakeHub {
    fn start(truncate: Option<&str>) -> Self {
        Self::with_faults(truncate, None)
    }

    fn with_faults(truncate: Option<&str>, corrupt: Option<&str>) -> Self {
        Self::serving(Served {
            files: files(),
            truncate: truncate.map(str::to_owned),
            corrupt: corrupt.map(str::to_owned),
            etag: None,
            commit: None,
            redirect_lfs: None,
            cdn: false,
        })
    }

    fn serving(served: Served) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (req, st) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // Stops by itself after two minutes at most.
            let deadline = Instant::now() + Duration::from_secs(120);
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = serve(stream, &served, &req);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// SHA-1 (FIPS 180-4), written out here so that the test does not trust pqcc's.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut m = data.to_vec();
    m.push(0x80);
    while m.len() % 64 != 56 {
        m.push(0);
    }
    m.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in m.chunks(64) {
        let mut w = [0u32; 80];
        for (i, c) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (o, x) in out.chunks_mut(4).zip(h) {
        o.copy_from_slice(&x.to_be_bytes());
    }
    out
}

/// The git blob SHA-1 of `data`: what the hub gives as the `ETag` of a non-LFS file.
fn git_blob_sha1_hex(data: &[u8]) -> String {
    let mut b = format!("blob {}\0", data.len()).into_bytes();
    b.extend_from_slice(data);
    hex::encode(sha1(&b))
}

/// Whether the fake treats a file as stored in LFS.
fn is_lfs(data: &[u8]) -> bool {
    data.len() > 1000
}

/// The git LFS pointer file of `data` (what git stores for an LFS file).
fn lfs_pointer(data: &[u8]) -> Vec<u8> {
    format!(
        "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
        sha256_hex(data),
        data.len()
    )
    .into_bytes()
}

/// Answers one request on `stream` and closes it.
fn serve(stream: TcpStream, served: &Served, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut range = None;
    let mut auth = false;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_owned());
            }
            auth |= k.trim().eq_ignore_ascii_case("authorization");
        }
    }
    let target = first.split_whitespace().nth(1).unwrap_or("").to_owned();
    log.lock()
        .unwrap()
        .push(format!("{target} {range:?} auth={auth}"));
    let path = target.split('?').next().unwrap_or("");
    let mut out = stream;

    let api = format!("/api/models/{REPO}/revision/");
    let resolve = format!("/{REPO}/resolve/");
    if let Some(rev) = path.strip_prefix(&api) {
        if rev != "main" && rev != SHA {
            return respond(
                &mut out,
                "404 Not Found",
                &[],
                b"{\"error\":\"Revision Not Found\"}",
            );
        }
        let siblings: Vec<serde_json::Value> = served
            .files
            .iter()
            .map(|(name, data)| {
                let blob = if is_lfs(data) {
                    git_blob_sha1_hex(&lfs_pointer(data))
                } else {
                    git_blob_sha1_hex(data)
                };
                let mut v =
                    serde_json::json!({ "rfilename": name, "size": data.len(), "blobId": blob });
                if is_lfs(data) {
                    v["lfs"] =
                        serde_json::json!({ "sha256": sha256_hex(data), "size": data.len() });
                }
                v
            })
            .collect();
        let body = serde_json::json!({ "id": REPO, "sha": SHA, "siblings": siblings });
        return respond(&mut out, "200 OK", &[], body.to_string().as_bytes());
    }
    let file = if served.cdn {
        path.strip_prefix("/cdn/")
    } else {
        path.strip_prefix(&resolve)
            .and_then(|rest| rest.split_once('/'))
            .filter(|(rev, _)| *rev == "main" || *rev == SHA)
            .map(|(_, file)| file)
    };
    if let Some(file) = file
        && let Some((name, data)) = served.files.iter().find(|(n, _)| n == file)
    {
        if let Some(cdn) = &served.redirect_lfs
            && is_lfs(data)
        {
            let headers = [
                ("Location", format!("{cdn}/cdn/{name}")),
                ("X-Linked-Etag", format!("\"{}\"", sha256_hex(data))),
                ("X-Linked-Size", data.len().to_string()),
                ("X-Repo-Commit", SHA.to_owned()),
                (
                    "ETag",
                    format!("\"{}\"", git_blob_sha1_hex(&lfs_pointer(data))),
                ),
            ];
            return respond(&mut out, "302 Found", &headers, b"");
        }
        let len = data.len();
        let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
            Some(r) => {
                let (a, b) = r.split_once('-').unwrap_or((r, ""));
                let a: usize = a.parse().unwrap_or(0);
                let b: usize = b.parse().unwrap_or(len.saturating_sub(1));
                (a, b.min(len.saturating_sub(1)))
            }
            None => (0, len.saturating_sub(1)),
        };
        // The headers declare the true content, whatever is sent.
        let mut headers = vec![
            ("Content-Range", format!("bytes {start}-{end}/{len}")),
            (
                "X-Repo-Commit",
                served.commit.clone().unwrap_or_else(|| SHA.to_owned()),
            ),
        ];
        let quoted = |h: String| format!("\"{}\"", served.etag.clone().unwrap_or(h));
        if served.cdn {
            headers.retain(|(k, _)| *k != "X-Repo-Commit");
            headers.push(("ETag", "\"cdn-opaque-etag-1\"".to_owned()));
        } else if is_lfs(data) {
            headers.push(("X-Linked-Etag", quoted(sha256_hex(data))));
            headers.push(("ETag", quoted(git_blob_sha1_hex(&lfs_pointer(data)))));
        } else {
            headers.push(("ETag", quoted(git_blob_sha1_hex(data))));
        }
        let mut data = data.clone();
        if served.corrupt.as_deref() == Some(name.as_str())
            && let Some(last) = data.last_mut()
        {
            *last ^= 1;
        }
        let body = if len == 0 {
            &data[..0]
        } else {
            &data[start..=end]
        };
        let status = if range.is_some() {
            "206 Partial Content"
        } else {
            "200 OK"
        };
        if served.truncate.as_deref() == Some(name.as_str()) && body.len() > 1 {
            // Announce everything, send half, hang up.
            write_head(&mut out, status, &headers, body.len())?;
            out.write_all(&body[..body.len() / 2])?;
            return out.flush();
        }
        return respond(&mut out, status, &headers, body);
    }
    respond(
        &mut out,
        "404 Not Found",
        &[],
        b"{\"error\":\"Entry not found\"}",
    )
}

fn write_head(
    out: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    len: usize,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())
}

fn respond(
    out: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    write_head(out, status, headers, body.len())?;
    out.write_all(body)?;
    out.flush()
}

/// `pqcc model build` with the cache in `hf_home`, online against `endpoint`.
fn online(hf_home: &Path, endpoint: &str) -> Command {
    let mut c = pqcc();
    c.env_remove("HF_HUB_OFFLINE")
        .env("HF_HOME", hf_home)
        .env("HF_ENDPOINT", endpoint)
        .args(["model", "build"]);
    c
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(c: &mut Command) -> Run {
    let o = c.output().unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `(identity, archive path)` from the one stdout line.
fn line(r: &Run) -> (String, PathBuf) {
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", r.stdout);
    let (id, path) = lines[0].split_once(' ').unwrap();
    (id.to_owned(), PathBuf::from(path))
}

fn tars(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".tar"))
                .collect()
        })
        .unwrap_or_default()
}

/// Builds the same files from a plain directory: the reference identity and archive.
fn local_reference(t: &TempDir) -> (String, Vec<u8>, Vec<u8>) {
    let tree = t.path().join("tree");
    write_tree(&tree);
    let r = run(pqcc()
        .args(["model", "build"])
        .arg(&tree)
        .arg("--out")
        .arg(t.path().join("out-local"))
        .args(["--name", REPO, "--revision", SHA]));
    let (id, archive) = line(&r);
    let verity = fs::read(format!("{}.verity", archive.display())).unwrap();
    (id, fs::read(&archive).unwrap(), verity)
}

fn model_dir(hf_home: &Path) -> PathBuf {
    hf_home.join("hub/models--acme--tiny-llm")
}

#[test]
fn download_builds_the_same_archive_as_a_local_directory() {
    let t = TempDir::new("hf-download");
    let (want_id, want_tar, want_verity) = local_reference(&t);
    assert!(want_id.starts_with(&format!("{REPO}@{SHA}:")), "{want_id}");
    let hub = FakeHub::start(None);
    let hf = t.path().join("hf");

    // ORG/NAME (default main): downloaded, built, recorded under the resolved commit.
    let out = t.path().join("out");
    let r = run(online(&hf, &hub.endpoint())
        .arg(REPO)
        .arg("--out")
        .arg(&out));
    let (id, archive) = line(&r);
    assert_eq!(id, want_id, "{}", r.stderr);
    assert!(fs::read(&archive).unwrap() == want_tar, "archive differs");
    assert!(fs::read(format!("{}.verity", archive.display())).unwrap() == want_verity);
    let md = model_dir(&hf);
    assert_eq!(fs::read_to_string(md.join("refs/main")).unwrap(), SHA);
    assert!(
        !md.join("refs").join(SHA).exists(),
        "no ref named after a commit"
    );
    assert!(!md.join(".pqcc-incomplete").join(SHA).exists());
    // The standard layout: snapshot entries link into blobs/.
    let snap = md.join("snapshots").join(SHA);
    assert!(
        fs::symlink_metadata(snap.join("model.safetensors"))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // Building the resulting snapshot directory gives the same bytes.
    let r = run(pqcc()
        .args(["model", "build"])
        .arg(&snap)
        .arg("--out")
        .arg(t.path().join("out-snap")));
    let (id, archive) = line(&r);
    assert_eq!(id, want_id);
    assert!(fs::read(&archive).unwrap() == want_tar);

    // The right :ROOTHASH passes; @main and the commit give the same identity.
    let hash = want_id.rsplit(':').next().unwrap();
    let r = run(online(&hf, &hub.endpoint())
        .arg(format!("{REPO}@main:{hash}"))
        .arg("--out")
        .arg(t.path().join("out2")));
    assert_eq!(line(&r).0, want_id);

    // HF_HUB_OFFLINE=1: the cache only, not one request.
    let before = hub.request_count();
    let r = run(pqcc()
        .env("HF_HOME", &hf)
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["model", "build", REPO, "--out"])
        .arg(t.path().join("out3")));
    assert_eq!(line(&r).0, want_id);
    assert_eq!(hub.request_count(), before, "offline made requests");

    // A commit complete in the cache needs no network either.
    let r = run(online(&hf, &hub.endpoint())
        .arg(format!("{REPO}@{SHA}"))
        .arg("--out")
        .arg(t.path().join("out4")));
    assert_eq!(line(&r).0, want_id);
    assert_eq!(hub.request_count(), before, "a cached commit made requests");

    // The endpoint gone: a branch falls back to the complete cached snapshot, warning.
    let endpoint = hub.endpoint();
    drop(hub);
    let r = run(online(&hf, &endpoint)
        .arg(REPO)
        .arg("--out")
        .arg(t.path().join("out5")));
    assert_eq!(line(&r).0, want_id);
    assert!(
        r.stderr.contains("warning") && r.stderr.contains(&endpoint),
        "{}",
        r.stderr
    );
}

#[test]
fn expected_root_hash_mismatch_exits_1_and_keeps_no_archive() {
    let t = TempDir::new("hf-mismatch");
    let (want_id, _, _) = local_reference(&t);
    let actual = want_id.rsplit(':').next().unwrap().to_owned();
    let hub = FakeHub::start(None);
    let wrong = "00".repeat(32);
    let out = t.path().join("out");
    let r = run(online(&t.path().join("hf"), &hub.endpoint())
        .arg(format!("{REPO}@main:{wrong}"))
        .arg("--out")
        .arg(&out));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr.contains(&wrong) && r.stderr.contains(&actual),
        "{}",
        r.stderr
    );
    assert_eq!(tars(&out), Vec::<String>::new(), "an archive was left");
}

#[test]
fn unreachable_or_refusing_endpoint_is_one_clear_error() {
    let t = TempDir::new("hf-down");
    // A port with nothing listening.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = t.path().join("out");
    let hf = t.path().join("hf");
    let r = run(online(&hf, &endpoint).arg(REPO).arg("--out").arg(&out));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stdout.is_empty());
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    assert!(
        lines[0].starts_with("pqcc: error: ")
            && lines[0].contains(&format!("{REPO}@main"))
            && lines[0].contains(&endpoint)
            && lines[0].to_lowercase().contains("connect"),
        "{}",
        lines[0]
    );
    assert_eq!(tars(&out), Vec::<String>::new());
    assert!(!model_dir(&hf).join("snapshots").exists());

    // An endpoint that answers 404 for an unknown revision: exit 2, the status named.
    let hub = FakeHub::start(None);
    let r = run(online(&hf, &hub.endpoint())
        .arg(format!("{REPO}@nope"))
        .arg("--out")
        .arg(&out));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("404") && r.stderr.contains(&hub.endpoint()),
        "{}",
        r.stderr
    );
    assert_eq!(tars(&out), Vec::<String>::new());
}

#[test]
fn truncated_file_fails_is_never_taken_as_complete_and_a_rerun_succeeds() {
    let t = TempDir::new("hf-truncated");
    let (want_id, want_tar, _) = local_reference(&t);
    let hf = t.path().join("hf");
    let out = t.path().join("out");
    {
        let bad = FakeHub::start(Some("model.safetensors"));
        let r = run(online(&hf, &bad.endpoint())
            .arg(REPO)
            .arg("--out")
            .arg(&out));
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(r.stdout.is_empty());
        assert!(
            r.stderr.contains("model.safetensors") && r.stderr.contains(&bad.endpoint()),
            "{}",
            r.stderr
        );
        assert_eq!(tars(&out), Vec::<String>::new(), "an archive was left");
    }
    let snap = model_dir(&hf).join("snapshots").join(SHA);
    assert!(model_dir(&hf).join(".pqcc-incomplete").join(SHA).exists());
    assert!(!snap.join("model.safetensors").exists());
    // Offline, the partial snapshot is not used: by name …
    let r = run(pqcc()
        .env("HF_HOME", &hf)
        .args(["model", "build", &format!("{REPO}@{SHA}"), "--out"])
        .arg(&out));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("HF_HUB_OFFLINE"), "{}", r.stderr);
    // … nor by its path.
    let r = run(pqcc()
        .args(["model", "build"])
        .arg(&snap)
        .arg("--out")
        .arg(&out));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("incomplete download"), "{}", r.stderr);
    assert_eq!(tars(&out), Vec::<String>::new());

    // A good endpoint: the download resumes and completes; same archive as the tree.
    let good = FakeHub::start(None);
    let r = run(online(&hf, &good.endpoint())
        .arg(REPO)
        .arg("--out")
        .arg(&out));
    let (id, archive) = line(&r);
    assert_eq!(id, want_id);
    assert!(fs::read(&archive).unwrap() == want_tar);
    assert!(!model_dir(&hf).join(".pqcc-incomplete").join(SHA).exists());
}

#[test]
fn a_file_with_the_wrong_sha256_is_discarded_and_fetched_again() {
    corrupted_file_is_refused_then_fetched_again(
        "hf-corrupt",
        "model.safetensors",
        &["model.safetensors", "SHA-256"],
        |_| {},
    );
}

/// A fake that sends `etag` as every file's `ETag` and `X-Linked-Etag`, and `commit`
/// as its `X-Repo-Commit`, where given.
fn hostile(etag: Option<&str>, commit: Option<&str>) -> FakeHub {
    FakeHub::serving(Served {
        files: files(),
        truncate: None,
        corrupt: None,
        etag: etag.map(str::to_owned),
        commit: commit.map(str::to_owned),
        redirect_lfs: None,
        cdn: false,
    })
}

/// Every path under `dir` (files, directories and links), relative, sorted.
fn tree_listing(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                out.push(p.strip_prefix(base).unwrap().display().to_string());
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(base, &p, out);
                }
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

#[test]
fn a_hostile_etag_or_commit_header_never_becomes_a_path() {
    // Issue 29, finding 1: hf-hub built `blobs/ETAG` and `snapshots/X-REPO-COMMIT/…` from
    // the server's headers, so an absolute ETag wrote a file wherever the server chose.
    let t = TempDir::new("hf-hostile-etag");
    // Build the binary before any fake starts (a fake stops by itself after 2 minutes).
    common::pqcc_bin();
    let hf = t.path().join("hf");
    let outside = t.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let out = t.path().join("out");

    // An ETag that is an absolute path, and one that climbs out of blobs/.
    for (i, etag) in [
        outside.join("planted").display().to_string(),
        "../../../../../outside/planted-rel".to_owned(),
    ]
    .iter()
    .enumerate()
    {
        let hub = hostile(Some(etag), None);
        let r = run(online(&hf.join(format!("{i}")), &hub.endpoint())
            .arg(REPO)
            .arg("--out")
            .arg(&out));
        assert_eq!(r.code, 2, "ETag {etag}: {}", r.stderr);
        assert!(r.stdout.is_empty());
        assert!(
            r.stderr.contains("ETag") && r.stderr.contains(&hub.endpoint()),
            "{}",
            r.stderr
        );
        assert_eq!(
            tree_listing(&outside),
            Vec::<String>::new(),
            "the server's ETag {etag} became a path"
        );
        assert_eq!(tars(&out), Vec::<String>::new());
    }

    // An X-Repo-Commit that is an absolute path (hf-hub made it the snapshot directory).
    let planted = outside.join("commit");
    let hub = hostile(None, Some(&planted.display().to_string()));
    let r = run(online(&hf.join("c"), &hub.endpoint())
        .arg(REPO)
        .arg("--out")
        .arg(&out));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("commit"), "{}", r.stderr);
    assert_eq!(
        tree_listing(&outside),
        Vec::<String>::new(),
        "the server's X-Repo-Commit became a path"
    );
    // Nothing of the hostile answers is taken as a snapshot.
    let snap = model_dir(&hf.join("c")).join("snapshots").join(SHA);
    assert!(
        model_dir(&hf.join("c"))
            .join(".pqcc-incomplete")
            .join(SHA)
            .exists()
    );
    assert!(fs::symlink_metadata(snap.join("config.json")).is_err());
}

#[test]
fn a_non_lfs_file_is_checked_against_its_git_blob_sha1() {
    // Issue 29, finding 1: a small (non-LFS) file has no SHA-256 in the listing; the hub
    // declares its git blob SHA-1 (ETag, blobId). A body that differs is refused.
    let good = git_blob_sha1_hex(br#"{"model_type":"tiny"}"#);
    corrupted_file_is_refused_then_fetched_again(
        "hf-git-sha1",
        "config.json",
        &["config.json", "git blob SHA-1", &good],
        |md| {
            // Every blob that was kept is named by its own hash (SHA-256 or git blob
            // SHA-1).
            for e in fs::read_dir(md.join("blobs")).unwrap().flatten() {
                let name = e.file_name().into_string().unwrap();
                let data = fs::read(e.path()).unwrap();
                assert!(
                    name == sha256_hex(&data) || name == git_blob_sha1_hex(&data),
                    "blob {name} is not named by its content"
                );
            }
        },
    );
}

/// A hub that corrupts `file`: the build exits 2 with one line on stderr holding each of
/// `want`, leaves no archive and no snapshot link for the file, and the download stays
/// marked incomplete; `between` then checks the model's cache folder. A good hub
/// afterwards: the file is fetched again and the archive equals the local reference.
fn corrupted_file_is_refused_then_fetched_again(
    tag: &str,
    file: &str,
    want: &[&str],
    between: impl Fn(&Path),
) {
    let t = TempDir::new(tag);
    let (want_id, want_tar, _) = local_reference(&t);
    let hf = t.path().join("hf");
    let out = t.path().join("out");
    {
        let bad = FakeHub::with_faults(None, Some(file));
        let r = run(online(&hf, &bad.endpoint())
            .arg(REPO)
            .arg("--out")
            .arg(&out));
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(want.iter().all(|w| r.stderr.contains(w)), "{}", r.stderr);
        assert_eq!(tars(&out), Vec::<String>::new(), "an archive was left");
    }
    let md = model_dir(&hf);
    assert!(fs::symlink_metadata(md.join("snapshots").join(SHA).join(file)).is_err());
    assert!(md.join(".pqcc-incomplete").join(SHA).exists());
    between(&md);
    let good = FakeHub::start(None);
    let r = run(online(&hf, &good.endpoint())
        .arg(REPO)
        .arg("--out")
        .arg(&out));
    let (id, archive) = line(&r);
    assert_eq!(id, want_id);
    assert!(fs::read(&archive).unwrap() == want_tar);
}

#[test]
fn git_blob_sha1_of_the_test_is_git_s() {
    // `git hash-object` of an empty file and of "hello\n".
    assert_eq!(
        git_blob_sha1_hex(b""),
        "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    );
    assert_eq!(
        git_blob_sha1_hex(b"hello\n"),
        "ce013625030ba8dba906f756967f9e9ca394464a"
    );
}

/// A hub cache laid out by hand: `hub/models--acme--tiny-llm/{blobs,snapshots/SHA}` with
/// the model's files as links into `blobs/`. Returns the snapshot directory.
fn hand_made_snapshot(hub: &Path) -> PathBuf {
    let md = hub.join("models--acme--tiny-llm");
    let snap = md.join("snapshots").join(SHA);
    fs::create_dir_all(md.join("blobs")).unwrap();
    for (name, data) in files() {
        let blob = sha256_hex(&data);
        fs::write(md.join("blobs").join(&blob), &data).unwrap();
        let link = snap.join(&name);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        let up = "../".repeat(name.matches('/').count());
        std::os::unix::fs::symlink(format!("{up}../../blobs/{blob}"), &link).unwrap();
    }
    snap
}

#[test]
fn snapshot_links_are_followed_only_into_its_own_blobs() {
    // Issue 29, finding 2: a snapshot link was followed to any file on the host.
    let t = TempDir::new("hf-links");
    let (want_id, want_tar, _) = local_reference(&t);
    let secret = t.path().join("secret.txt");
    fs::write(&secret, b"not for the archive").unwrap();
    let other_blobs = t.path().join("hub-x/models--other--model/blobs");
    fs::create_dir_all(&other_blobs).unwrap();
    fs::write(other_blobs.join("b"), b"another model's blob").unwrap();

    let escapes: [(&str, String); 4] = [
        ("abs.txt", secret.display().to_string()),
        ("rel.txt", "../../../../secret.txt".to_owned()),
        (
            "other.txt",
            "../../../../hub-x/models--other--model/blobs/b".to_owned(),
        ),
        // A link to a blob that is itself a link out of blobs/.
        ("via-blob.txt", "../../blobs/evil".to_owned()),
    ];
    for (i, (name, target)) in escapes.iter().enumerate() {
        let hub = t.path().join(format!("hub{i}"));
        let snap = hand_made_snapshot(&hub);
        fs::write(
            hub.join("models--acme--tiny-llm/blobs/dummy"),
            b"keeps blobs/ non-empty",
        )
        .unwrap();
        std::os::unix::fs::symlink(&secret, hub.join("models--acme--tiny-llm/blobs/evil")).unwrap();
        // (Relative targets climb from the snapshot, 4 levels below t.)
        std::os::unix::fs::symlink(target, snap.join(name)).unwrap();
        assert!(
            fs::metadata(snap.join(name)).is_ok_and(|m| m.is_file()),
            "{name} -> {target} must resolve for the test to mean anything"
        );
        let out = t.path().join(format!("out{i}"));
        // By path …
        let r = run(pqcc()
            .args(["model", "build"])
            .arg(&snap)
            .arg("--out")
            .arg(&out));
        assert_eq!(r.code, 2, "{name} -> {target}: {}", r.stderr);
        assert!(r.stdout.is_empty());
        assert!(
            r.stderr.contains(name) && r.stderr.contains(target) && r.stderr.contains("blobs"),
            "{}",
            r.stderr
        );
        assert_eq!(
            tars(&out),
            Vec::<String>::new(),
            "{name}: an archive was left"
        );
        // … and by name from the cache (offline).
        let r = run(pqcc()
            .env("HF_HUB_CACHE", &hub)
            .args(["model", "build", &format!("{REPO}@{SHA}"), "--out"])
            .arg(&out));
        assert_eq!(r.code, 2, "{name} -> {target}: {}", r.stderr);
        assert!(r.stderr.contains(name), "{}", r.stderr);
        assert_eq!(tars(&out), Vec::<String>::new());
    }

    // Links into the snapshot's own blobs/: built as before.
    let snap = hand_made_snapshot(&t.path().join("hub-ok"));
    let r = run(pqcc()
        .args(["model", "build"])
        .arg(&snap)
        .arg("--out")
        .arg(t.path().join("out-ok")));
    let (id, archive) = line(&r);
    assert_eq!(id, want_id);
    assert!(fs::read(&archive).unwrap() == want_tar);
}

#[test]
fn lfs_files_redirected_to_a_cdn_are_checked_against_the_hubs_declaration() {
    // The real hub answers an LFS file with a redirect to a CDN on another host: the
    // hash is the hub's X-Linked-Etag (the CDN's ETag is no hash), and the token stays
    // with the hub.
    let t = TempDir::new("hf-cdn");
    let (want_id, want_tar, _) = local_reference(&t);
    let cdn_with = |corrupt: Option<&str>| {
        FakeHub::serving(Served {
            files: files(),
            truncate: None,
            corrupt: corrupt.map(str::to_owned),
            etag: None,
            commit: None,
            redirect_lfs: None,
            cdn: true,
        })
    };
    let hub_to = |cdn: &FakeHub| {
        FakeHub::serving(Served {
            files: files(),
            truncate: None,
            corrupt: None,
            etag: None,
            commit: None,
            redirect_lfs: Some(cdn.endpoint()),
            cdn: false,
        })
    };

    // A CDN that serves a corrupt body: refused by the hub's SHA-256.
    let hf = t.path().join("hf");
    let out = t.path().join("out");
    {
        let cdn = cdn_with(Some("model.safetensors"));
        let hub = hub_to(&cdn);
        let r = run(online(&hf, &hub.endpoint())
            .env("HF_TOKEN", "hf_secret")
            .arg(REPO)
            .arg("--out")
            .arg(&out));
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(
            r.stderr.contains("model.safetensors") && r.stderr.contains("SHA-256"),
            "{}",
            r.stderr
        );
        assert_eq!(tars(&out), Vec::<String>::new());
    }

    let cdn = cdn_with(None);
    let hub = hub_to(&cdn);
    let r = run(online(&hf, &hub.endpoint())
        .env("HF_TOKEN", "hf_secret")
        .arg(REPO)
        .arg("--out")
        .arg(&out));
    let (id, archive) = line(&r);
    assert_eq!(id, want_id);
    assert!(fs::read(&archive).unwrap() == want_tar);
    let (hub_log, cdn_log) = (hub.requests(), cdn.requests());
    assert!(
        !cdn_log.is_empty() && cdn_log.iter().all(|l| l.ends_with("auth=false")),
        "the token went to the CDN: {cdn_log:?}"
    );
    assert!(
        hub_log.iter().all(|l| l.ends_with("auth=true")),
        "{hub_log:?}"
    );
    // Blobs are named by the content's SHA-256 (LFS) or git blob SHA-1.
    let blobs = model_dir(&hf).join("blobs");
    for (name, data) in files().iter().filter(|(_, d)| !d.is_empty()) {
        let want = if is_lfs(data) {
            sha256_hex(data)
        } else {
            git_blob_sha1_hex(data)
        };
        assert!(blobs.join(&want).is_file(), "{name}: no blob {want}");
    }
}
