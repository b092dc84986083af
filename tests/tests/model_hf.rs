//! `pqcc model build ORG/NAME[@REV][:ROOTHASH]` downloading with hf-hub, against a
//! FAKE Hugging Face endpoint: a small plain-HTTP server on 127.0.0.1 written here
//! (`FakeHub`), serving only what hf-hub's blocking client asks for. No test here
//! reaches a real hub.
//!
//! The fake serves `GET /api/models/ORG/NAME/revision/REV` (JSON: `sha` and
//! `siblings` with `rfilename`, `size` and, for larger files, `lfs.sha256`) and
//! `GET /ORG/NAME/resolve/REV/PATH` (honouring `Range`, with `X-Repo-Commit`, `ETag`,
//! `Content-Range` and `Content-Length`), and can cut one file short.

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
    /// A file served with its last byte flipped (right length, wrong SHA-256).
    corrupt: Option<String>,
}

impl FakeHub {
    fn start(truncate: Option<&str>) -> Self {
        Self::with_faults(truncate, None)
    }

    fn with_faults(truncate: Option<&str>, corrupt: Option<&str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = Served {
            files: files(),
            truncate: truncate.map(str::to_owned),
            corrupt: corrupt.map(str::to_owned),
        };
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

/// Answers one request on `stream` and closes it.
fn serve(stream: TcpStream, served: &Served, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_owned());
        }
    }
    let target = first.split_whitespace().nth(1).unwrap_or("").to_owned();
    log.lock().unwrap().push(format!("{target} {range:?}"));
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
                let mut v = serde_json::json!({ "rfilename": name, "size": data.len() });
                if data.len() > 1000 {
                    v["lfs"] =
                        serde_json::json!({ "sha256": sha256_hex(data), "size": data.len() });
                }
                v
            })
            .collect();
        let body = serde_json::json!({ "id": REPO, "sha": SHA, "siblings": siblings });
        return respond(&mut out, "200 OK", &[], body.to_string().as_bytes());
    }
    if let Some(rest) = path.strip_prefix(&resolve)
        && let Some((rev, file)) = rest.split_once('/')
        && (rev == "main" || rev == SHA)
        && let Some((name, data)) = served.files.iter().find(|(n, _)| n == file)
    {
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
        let headers = [
            ("Content-Range", format!("bytes {start}-{end}/{len}")),
            ("ETag", format!("\"{}\"", sha256_hex(&data))),
            ("X-Repo-Commit", SHA.to_owned()),
        ];
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
    let t = TempDir::new("hf-corrupt");
    let (want_id, want_tar, _) = local_reference(&t);
    let hf = t.path().join("hf");
    let out = t.path().join("out");
    {
        let bad = FakeHub::with_faults(None, Some("model.safetensors"));
        let r = run(online(&hf, &bad.endpoint())
            .arg(REPO)
            .arg("--out")
            .arg(&out));
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(
            r.stderr.contains("model.safetensors") && r.stderr.contains("SHA-256"),
            "{}",
            r.stderr
        );
        assert_eq!(tars(&out), Vec::<String>::new(), "an archive was left");
    }
    let snap = model_dir(&hf).join("snapshots").join(SHA);
    assert!(fs::symlink_metadata(snap.join("model.safetensors")).is_err());
    assert!(model_dir(&hf).join(".pqcc-incomplete").join(SHA).exists());
    let good = FakeHub::start(None);
    let r = run(online(&hf, &good.endpoint())
        .arg(REPO)
        .arg("--out")
        .arg(&out));
    let (id, archive) = line(&r);
    assert_eq!(id, want_id);
    assert!(fs::read(&archive).unwrap() == want_tar);
}
