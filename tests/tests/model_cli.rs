//! `pqcc model build` and `pqcc model verify` as a user runs them: the real binary,
//! its stdout line, exit codes, the expected-hash check, corruption reports, crash
//! safety under SIGKILL at several points, and the per-model lock.

mod common;

use std::{
    fs,
    os::unix::fs::FileExt,
    path::Path,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{TempDir, pqcc, recipe};

/// Runs `pqcc model build` and returns (exit code, stdout, stderr).
fn build(args: &[&str]) -> (i32, String, String) {
    let out = pqcc()
        .arg("model")
        .arg("build")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn verify(args: &[&str]) -> (i32, String, String) {
    let out = pqcc()
        .arg("model")
        .arg("verify")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn build_prints_one_line_and_verify_checks_it() {
    let t = TempDir::new("cli");
    let tree = t.path().join("my-model");
    common::random_tree(&tree, 3);
    let out = t.path().join("out");
    let (code, stdout, stderr) = build(&[s(&tree), "--out", s(&out), "--revision", "r1"]);
    assert_eq!(code, 0, "{stderr}");
    let root = recipe(&tree, &t.path().join("ref.tar"));
    let archive = fs::canonicalize(&out).unwrap().join("my-model@r1.tar");
    assert_eq!(
        stdout,
        format!("my-model@r1:{root} {}\n", archive.display())
    );
    assert!(archive.with_extension("tar.verity").is_file());

    // A second build reuses the archive and prints the same line.
    let (code, stdout2, stderr2) = build(&[s(&tree), "--out", s(&out), "--revision", "r1"]);
    assert_eq!((code, &stdout2), (0, &stdout));
    assert!(stderr2.contains("reusing"), "{stderr2}");

    // --json.
    let (code, js, _) = build(&[s(&tree), "--out", s(&out), "--revision", "r1", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&js).unwrap();
    assert_eq!(v["root_hash"], root.as_str());

    // verify: the hash alone, or the whole identity.
    let (code, ok, _) = verify(&[s(&archive), &root]);
    assert_eq!(code, 0);
    assert!(ok.starts_with("ok "), "{ok}");
    let (code, _, _) = verify(&[s(&archive), &format!("my-model@r1:{root}")]);
    assert_eq!(code, 0);

    // A wrong root hash.
    let wrong = "0".repeat(64);
    let (code, _, err) = verify(&[s(&archive), &wrong]);
    assert_eq!(code, 1);
    assert!(err.contains("root hash mismatch"), "{err}");

    // A flipped byte in data block 5 of a copy: named as the first bad block.
    let copy = t.path().join("copy.tar");
    fs::copy(&archive, &copy).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&copy)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 5 * 4096 + 17).unwrap();
    f.write_all_at(&[b[0] ^ 1], 5 * 4096 + 17).unwrap();
    let (code, _, err) = verify(&[
        s(&copy),
        "--verity",
        s(&archive.with_extension("tar.verity")),
        &root,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("data block 5 "), "{err}");

    // A corrupt hash file: a leaf-level hash block.
    let vcopy = t.path().join("copy.verity");
    fs::copy(archive.with_extension("tar.verity"), &vcopy).unwrap();
    let len = fs::metadata(&vcopy).unwrap().len();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&vcopy)
        .unwrap();
    f.write_all_at(&[0xff], len - 4096).unwrap();
    let (code, _, err) = verify(&[s(&archive), "--verity", s(&vcopy), &root]);
    assert_eq!(code, 1);
    assert!(
        err.contains("corrupt") || err.contains("root hash mismatch"),
        "{err}"
    );

    // Usage and I/O errors exit 2.
    let (code, _, err) = verify(&[s(&t.path().join("missing.tar")), &root]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = verify(&[s(&archive), "nothex"]);
    assert_eq!(code, 2);
}

#[test]
fn expected_root_hash_mismatch_exits_1_and_leaves_nothing() {
    let t = TempDir::new("expect");
    let tree = t.path().join("m");
    common::random_tree(&tree, 4);
    let out = t.path().join("out");
    let wrong = "ab".repeat(32);
    let (code, stdout, stderr) = build(&[&format!("{}:{wrong}", s(&tree)), "--out", s(&out)]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty());
    let root = recipe(&tree, &t.path().join("ref.tar"));
    assert!(
        stderr.contains(&wrong) && stderr.contains(&root),
        "both hashes printed: {stderr}"
    );
    let left: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // The right hash passes (suffix or --expect).
    let (code, _, stderr) = build(&[&format!("{}:{root}", s(&tree)), "--out", s(&out)]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, _) = build(&[s(&tree), "--out", s(&out), "--expect", &root]);
    assert_eq!(code, 0);
}

#[test]
fn errors_exit_2_with_a_clear_message() {
    let t = TempDir::new("errors");
    let tree = t.path().join("m");
    common::random_tree(&tree, 5);
    let out = t.path().join("out");
    let (code, _, err) = build(&[s(&tree), "--out", s(&out), "--key", "/nonexistent"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--key") && err.contains("/nonexistent"),
        "{err}"
    );
    let (code, _, err) = build(&["/definitely/not/here", "--out", s(&out)]);
    assert_eq!(code, 2);
    assert!(err.contains("no such directory"), "{err}");
    // A hub name that is not in the (empty) local cache: the offline error.
    let hub = t.path().join("empty-hub");
    fs::create_dir_all(&hub).unwrap();
    let o = pqcc()
        .env("HF_HUB_CACHE", &hub)
        .args(["model", "build", "acme/model@main", "--out", s(&out)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no network"), "{err}");
    let (code, _, err) = build(&[s(&tree), "--out", s(&out), "--salt", "xyz"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = build(&[s(&tree), "--out", s(&out), "--name", "../evil"]);
    assert_eq!(code, 2, "{err}");
    let inside = tree.join("out");
    let (code, _, err) = build(&[s(&tree), "--out", s(&inside)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("inside the model directory"), "{err}");
    assert!(!inside.exists(), "nothing created inside the model");
}

/// A tree big enough that a build takes a while (64 MiB in 4 files).
fn big_tree(dir: &Path, seed: u64) {
    fs::create_dir_all(dir.join("sub")).unwrap();
    let mut r = common::Rng::new(seed);
    for i in 0..4 {
        fs::write(dir.join(format!("shard-{i}.bin")), r.bytes((16 << 20) + i)).unwrap();
    }
    fs::write(dir.join("sub/config.json"), b"{}").unwrap();
}

fn spawn_build(tree: &Path, out: &Path, extra: &[&str]) -> Child {
    pqcc()
        .args(["model", "build"])
        .arg(tree)
        .arg("--out")
        .arg(out)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// After a kill: every file under a final name is complete, and a stamp means a
/// consistent set.
fn check_no_partial_final_files(out: &Path, stem: &str, good: &[(Vec<u8>, Vec<u8>, String)]) {
    let tar = out.join(format!("{stem}.tar"));
    let ver = out.join(format!("{stem}.tar.verity"));
    let hash = out.join(format!("{stem}.tar.hash"));
    let stamp = out.join(format!("{stem}.tar.stamp"));
    if let Ok(b) = fs::read(&tar) {
        assert!(
            good.iter().any(|g| g.0 == b),
            "{} is not a complete archive",
            tar.display()
        );
    }
    if let Ok(b) = fs::read(&ver) {
        assert!(
            good.iter().any(|g| g.1 == b),
            "{} is not a complete hash file",
            ver.display()
        );
    }
    if let Ok(h) = fs::read_to_string(&hash) {
        assert!(
            good.iter().any(|g| g.2 == h),
            "{} is not a complete root hash",
            hash.display()
        );
    }
    if let Ok(st) = fs::read_to_string(&stamp) {
        let v: serde_json::Value = serde_json::from_str(&st).expect("a stamp is complete JSON");
        let root = v["root_hash"].as_str().unwrap();
        let g = good
            .iter()
            .find(|g| g.2 == root)
            .expect("stamp names a good root");
        assert!(
            fs::read(&tar).unwrap() == g.0,
            "stamp present but archive not its own"
        );
        assert!(
            fs::read(&ver).unwrap() == g.1,
            "stamp present but hash file not its own"
        );
    }
}

/// When to SIGKILL a build.
#[derive(Debug, Clone)]
enum KillPoint {
    /// This many milliseconds after the start.
    After(u64),
    /// When a temporary archive has at least this many bytes.
    TmpArchiveAtLeast(u64),
    /// When a file of this final name exists while the stamp is being replaced.
    FinalExists(String),
}

/// Starts a build of `tree` into `out`, kills it at `point` (busy-polling the output
/// directory), and says whether it was killed before it finished.
fn kill_build_at(tree: &Path, out: &Path, point: &KillPoint, extra: &[&str]) -> bool {
    let before: Vec<_> = names(out);
    let mut c = spawn_build(tree, out, extra);
    let start = Instant::now();
    loop {
        if c.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(60) {
            break;
        }
        let now = names(out);
        let hit = match point {
            KillPoint::After(ms) => start.elapsed() >= Duration::from_millis(*ms),
            KillPoint::TmpArchiveAtLeast(n) => now.iter().any(|f| {
                f.contains(".tar.tmp.") && fs::metadata(out.join(f)).is_ok_and(|m| m.len() >= *n)
            }),
            // A new final file: the name exists and is not the one from before, or the
            // stamp has been removed for the swap.
            KillPoint::FinalExists(name) => {
                now.contains(name)
                    && (!before.contains(name) || !now.iter().any(|f| f.ends_with(".tar.stamp")))
            }
        };
        if hit {
            break;
        }
        std::hint::spin_loop();
    }
    let _ = c.kill();
    let status = c.wait().unwrap();
    eprintln!("kill at {point:?} ({status}): left {:?}", names(out));
    !status.success()
}

#[test]
fn sigkill_at_any_point_never_leaves_a_complete_looking_partial_file() {
    let t = TempDir::new("crash");
    let tree = t.path().join("m");
    big_tree(&tree, 1);
    let out = t.path().join("out");
    let stem = "m@local";
    // The right answer, from the recipe.
    let ref_tar = t.path().join("ref.tar");
    let root = recipe(&tree, &ref_tar);
    let good_a = (
        fs::read(&ref_tar).unwrap(),
        fs::read(t.path().join("ref.tar.verity")).unwrap(),
        root.clone(),
    );

    // Kill points: at fixed delays; when the temporary archive reaches ¼, ½, ¾ of its
    // size; and in the renaming phase (a final name exists, the stamp does not yet).
    let total = good_a.0.len() as u64;
    let mut points: Vec<KillPoint> = [0u64, 2, 5, 10, 20, 40].map(KillPoint::After).to_vec();
    points.extend([1, 2, 3].map(|q| KillPoint::TmpArchiveAtLeast(total * q / 4)));
    points.push(KillPoint::FinalExists(format!("{stem}.tar.verity")));
    points.push(KillPoint::FinalExists(format!("{stem}.tar")));
    let mut kills = 0;
    for point in &points {
        let _ = fs::remove_dir_all(&out);
        let killed = kill_build_at(&tree, &out, point, &[]);
        kills += usize::from(killed);
        check_no_partial_final_files(&out, stem, std::slice::from_ref(&good_a));
    }
    assert!(
        kills >= 3,
        "only {kills} builds were killed before finishing"
    );

    // A rebuild over whatever was left gives the right result and cleans up.
    let (code, stdout, stderr) = build(&[s(&tree), "--out", s(&out)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&root));
    assert!(fs::read(out.join(format!("{stem}.tar"))).unwrap() == good_a.0);
    assert!(
        names(&out).iter().all(|n| !n.contains(".tmp.")),
        "temporaries left: {:?}",
        names(&out)
    );

    // Kill rebuilds after the input changed (--force: a new content under the same
    // name@revision is otherwise refused): the old complete set or the new one, never a
    // stamp over a mixed pair.
    fs::write(tree.join("sub/config.json"), b"{\"changed\":true}").unwrap();
    let ref2 = t.path().join("ref2.tar");
    let root2 = recipe(&tree, &ref2);
    let good_b = (
        fs::read(&ref2).unwrap(),
        fs::read(t.path().join("ref2.tar.verity")).unwrap(),
        root2.clone(),
    );
    for point in &points {
        kill_build_at(&tree, &out, point, &["--force"]);
        check_no_partial_final_files(&out, stem, &[good_a.clone(), good_b.clone()]);
    }
    let (code, stdout, stderr) = build(&[s(&tree), "--out", s(&out), "--force"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&root2), "{stdout}");
    let (code, _, _) = verify(&[s(&out.join(format!("{stem}.tar"))), &root2]);
    assert_eq!(code, 0);
}

#[test]
fn concurrent_builds_of_one_model_wait_and_different_models_do_not() {
    let t = TempDir::new("lock");
    let tree = t.path().join("m");
    big_tree(&tree, 2);
    let out = t.path().join("out");
    fs::create_dir_all(&out).unwrap();

    // Hold model m's lock ourselves, as a running build would.
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(out.join("m@local.lock"))
        .unwrap();
    lock.lock().unwrap();
    let b = spawn_build(&tree, &out, &[]);
    // Another model builds to completion while m is locked.
    let c = spawn_build(&tree, &out, &["--name", "other"])
        .wait_with_output()
        .unwrap();
    let err = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(c.status.success(), "{}", err(&c));
    assert!(
        !err(&c).contains("waiting"),
        "another model did not wait: {}",
        err(&c)
    );
    // B is still waiting for the lock, and has written nothing.
    thread::sleep(Duration::from_millis(300));
    let mut b = b;
    assert!(
        b.try_wait().unwrap().is_none(),
        "B must wait while the lock is held"
    );
    assert!(
        !names(&out).iter().any(|n| n.starts_with(".m@local")),
        "{:?}",
        names(&out)
    );
    lock.unlock().unwrap();
    let b = b.wait_with_output().unwrap();
    assert!(b.status.success(), "{}", err(&b));
    assert!(err(&b).contains("waiting"), "B said it waits: {}", err(&b));
    let root = |o: &[u8]| -> String {
        let l = String::from_utf8_lossy(o).into_owned();
        l.split(':')
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        root(&b.stdout),
        root(&c.stdout),
        "same content, same root hash"
    );

    // Two real builds of new content at once (--force: it replaces m@local): one builds,
    // the other reuses its result.
    fs::write(tree.join("sub/config.json"), b"{\"v\":2}").unwrap();
    let (x, y) = (
        spawn_build(&tree, &out, &["--force"]),
        spawn_build(&tree, &out, &["--force"]),
    );
    let (x, y) = (x.wait_with_output().unwrap(), y.wait_with_output().unwrap());
    assert!(x.status.success() && y.status.success());
    assert_eq!(x.stdout, y.stdout);
    let reused = [&x, &y]
        .iter()
        .filter(|o| err(o).contains("reusing"))
        .count();
    assert_eq!(
        reused,
        1,
        "exactly one of them reused: {} / {}",
        err(&x),
        err(&y)
    );
}

#[test]
fn key_writes_a_signed_model_manifest() {
    use pqcc_core::statement::{self, ModelManifest};
    use pqcc_tools::keys;

    let t = TempDir::new("manifest");
    let tree = t.path().join("m");
    common::random_tree(&tree, 6);
    let out = t.path().join("out");
    let key = t.path().join("owner.key");
    let g = keys::keygen(keys::Alg::MlDsa65, &key, false).unwrap();
    let (code, stdout, stderr) = build(&[s(&tree), "--out", s(&out), "--key", s(&key)]);
    assert_eq!(code, 0, "{stderr}");
    let archive = stdout.trim().split(' ').nth(1).unwrap().to_owned();
    let root = stdout
        .split(':')
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    let bytes = fs::read(format!("{archive}.manifest")).unwrap();
    let vk = keys::read_public_key(&g.public_path)
        .unwrap()
        .verifying_key()
        .unwrap();
    let trusted = [vk];
    let v = statement::verify::<ModelManifest<'_>, _>(&bytes, &trusted[..]).unwrap();
    let m = v.body();
    assert_eq!((m.name, m.revision), ("m", "local"));
    assert_eq!(hex::encode(m.root_hash.0), root);
    assert_eq!(m.data_size, fs::metadata(&archive).unwrap().len());
    assert_eq!((m.data_block_size, m.hash_block_size), (4096, 4096));
    assert_eq!(
        m.salt.0,
        hex::decode(pqcc_tools::model::DEFAULT_SALT).unwrap()
    );
    // A KEM key is not a signing key: exit 2 before any work.
    let kem = t.path().join("kem.key");
    keys::keygen(keys::Alg::MlKem768, &kem, false).unwrap();
    let (code, _, err) = build(&[s(&tree), "--out", s(&out), "--key", s(&kem)]);
    assert_eq!(code, 2, "{err}");
}

/// `pqcc sign model --verity`: an archive made by the outside recipe (GNU tar +
/// `veritysetup format`) is checked against its hash file and signed with the root hash
/// veritysetup printed; a changed archive byte, a disagreeing salt or both --root-hash
/// and --verity are refused with exit 2 and nothing written.
#[test]
fn sign_model_with_verity_takes_the_identity_from_a_checked_tree() {
    use pqcc_core::statement::{self, ModelManifest};
    use pqcc_tools::keys;

    let t = TempDir::new("sign-verity");
    let tree = t.path().join("m");
    common::random_tree(&tree, 11);
    let archive = t.path().join("ref.tar");
    let root = recipe(&tree, &archive);
    let hash_file = format!("{}.verity", archive.display());
    let key = t.path().join("owner.key");
    let g = keys::keygen(keys::Alg::MlDsa65, &key, false).unwrap();
    let env = t.path().join("ref.pqsig");
    let sign = |extra: &[&str], archive: &Path| {
        let out = pqcc()
            .args(["sign", "model"])
            .arg(archive)
            .args([
                "--key",
                s(&key),
                "--name",
                "m",
                "--revision",
                "r7",
                "-o",
                s(&env),
            ])
            .args(["--verity", &hash_file])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, err) = sign(&[], &archive);
    assert_eq!(code, 0, "{err}");
    let bytes = fs::read(&env).unwrap();
    let vk = keys::read_public_key(&g.public_path)
        .unwrap()
        .verifying_key()
        .unwrap();
    let trusted = [vk];
    let v = statement::verify::<ModelManifest<'_>, _>(&bytes, &trusted[..]).unwrap();
    let m = v.body();
    assert_eq!(
        hex::encode(m.root_hash.0),
        root,
        "root hash differs from veritysetup's"
    );
    assert_eq!(m.data_size, fs::metadata(&archive).unwrap().len());
    // The recipe's salt, as veritysetup wrote it into the superblock.
    let sb = fs::read(&hash_file).unwrap();
    let sb = pqcc_core::verity::Superblock::parse(&sb).unwrap();
    assert_eq!(m.salt.0, sb.salt.as_bytes());
    assert_eq!((m.name, m.revision), ("m", "r7"));

    // A salt that agrees is accepted; one that does not is refused.
    let salt = hex::encode(sb.salt.as_bytes());
    assert_eq!(sign(&["--salt", &salt, "--force"], &archive).0, 0);
    fs::remove_file(&env).unwrap();
    let (code, err) = sign(&["--salt", "00"], &archive);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("disagrees with the hash file's salt"), "{err}");
    assert!(!env.exists());
    // --root-hash and --verity together: a usage error.
    let (code, err) = sign(&["--root-hash", &root], &archive);
    assert_eq!(code, 2, "{err}");
    assert!(!env.exists());

    // One changed byte in the archive: refused, naming the block.
    let bad = t.path().join("bad.tar");
    fs::copy(&archive, &bad).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&bad)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 5000).unwrap();
    f.write_all_at(&[b[0] ^ 1], 5000).unwrap();
    drop(f);
    let (code, err) = sign(&[], &bad);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("refusing to sign") && err.contains("data block 1 "),
        "{err}"
    );
    assert!(!env.exists());
}

/// The root hash of a `name@rev:root path` line.
fn root_of(line: &str) -> String {
    line.split(' ')
        .next()
        .and_then(|id| id.rsplit(':').next())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn vcs_and_download_metadata_are_left_out_unless_asked() {
    // Issue 29, finding 3: `.git/` and `.cache/huggingface/` made the root hash depend on
    // how the model was fetched (a git clone, `huggingface-cli download --local-dir`).
    let t = TempDir::new("vcs");
    let clean = t.path().join("clean/m");
    common::random_tree(&clean, 11);
    fs::write(clean.join(".gitattributes"), b"*.bin filter=lfs\n").unwrap();
    let fetched = t.path().join("fetched/m");
    fs::create_dir_all(fetched.parent().unwrap()).unwrap();
    assert!(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(&clean)
            .arg(&fetched)
            .status()
            .unwrap()
            .success()
    );
    for (p, d) in [
        (".git/HEAD", "ref: refs/heads/main\n"),
        (".git/objects/ab/cdef", "x"),
        (".cache/huggingface/.gitignore", "*\n"),
        (
            ".cache/huggingface/download/config.json.metadata",
            "abc\n123\n",
        ),
    ] {
        let f = fetched.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(f, d).unwrap();
    }
    // A nested repository's `.git` file.
    let sub = fs::read_dir(&fetched)
        .unwrap()
        .flatten()
        .find(|e| {
            e.file_type().unwrap().is_dir() && e.file_name() != ".git" && e.file_name() != ".cache"
        })
        .unwrap()
        .path();
    fs::write(sub.join(".git"), b"gitdir: ../.git/modules/x\n").unwrap();

    let (code, want, err) = build(&[s(&clean), "--out", s(&t.path().join("o1"))]);
    assert_eq!(code, 0, "{err}");
    let (code, got, err) = build(&[s(&fetched), "--out", s(&t.path().join("o2"))]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        root_of(&got),
        root_of(&want),
        "metadata changed the root hash"
    );
    assert!(
        err.contains("left out")
            && err.contains("./.git/")
            && err.contains("./.cache/huggingface/")
            && err.contains("--keep-vcs-metadata"),
        "{err}"
    );
    // --json names them too.
    let (code, js, _) = build(&[s(&fetched), "--out", s(&t.path().join("o2")), "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&js).unwrap();
    assert!(
        v["left_out"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "./.git/")),
        "{js}"
    );

    // --keep-vcs-metadata archives everything: the recipe's root hash over the whole tree.
    let (code, kept, err) = build(&[
        s(&fetched),
        "--out",
        s(&t.path().join("o3")),
        "--keep-vcs-metadata",
    ]);
    assert_eq!(code, 0, "{err}");
    let all = recipe(&fetched, &t.path().join("ref.tar"));
    assert_eq!(root_of(&kept), all);
    assert_ne!(root_of(&kept), root_of(&want));
    assert!(!err.contains("left out"), "{err}");
    let help = pqcc().args(["model", "build", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--keep-vcs-metadata") && help.contains("--force"),
        "{help}"
    );
}

#[test]
fn rebuilding_a_name_at_revision_with_other_content_is_refused_without_force() {
    // Issue 29, finding 3: a rebuild of an existing NAME@REV with different content
    // silently replaced the archive that identity named.
    let t = TempDir::new("rebuild");
    let tree = t.path().join("m");
    common::random_tree(&tree, 12);
    let out = t.path().join("out");
    let args = [s(&tree), "--out", s(&out), "--revision", "v1"];
    let (code, first, err) = build(&args);
    assert_eq!(code, 0, "{err}");
    let old = root_of(&first);
    let archive = fs::canonicalize(&out).unwrap().join("m@v1.tar");
    let before = fs::read(&archive).unwrap();

    // Other content, same identity: exit 1, both hashes named, the old set untouched.
    fs::write(tree.join("added.json"), b"{\"new\":1}").unwrap();
    let (code, stdout, err) = build(&args);
    let new = recipe(&tree, &t.path().join("ref.tar"));
    assert_eq!(code, 1, "{err}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        err.contains(&old) && err.contains(&new) && err.contains("--force"),
        "{err}"
    );
    assert!(
        fs::read(&archive).unwrap() == before,
        "the archive was replaced"
    );
    assert_eq!(fs::read_to_string(out.join("m@v1.tar.hash")).unwrap(), old);
    let (code, _, _) = verify(&[s(&archive), &old]);
    assert_eq!(code, 0);
    assert!(
        names(&out).iter().all(|n| !n.contains(".tmp.")),
        "{:?}",
        names(&out)
    );

    // --force replaces it.
    let mut forced = args.to_vec();
    forced.push("--force");
    let (code, stdout, err) = build(&forced);
    assert_eq!(code, 0, "{err}");
    assert_eq!(root_of(&stdout), new);
    let (code, _, _) = verify(&[s(&archive), &new]);
    assert_eq!(code, 0);

    // The same content again (the cache bypassed by a new mtime): idempotent, exit 0.
    let f = tree.join("added.json");
    fs::write(&f, fs::read(&f).unwrap()).unwrap();
    let (code, stdout, err) = build(&args);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("reusing"), "{err}");
    assert_eq!(root_of(&stdout), new);
}
