//! Model archives against the tools they replace: every archive pqcc builds must be
//! byte-identical to GNU tar with the recipe's flags (+ padding), and every hash file
//! to `veritysetup format` on the same tar. Also the special-file policy of
//! `docs/model-archives.md`: what GNU tar would store differently is refused.

mod common;

use std::{
    fs,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::Path,
    process::Command,
};

use common::{TempDir, recipe, run_ok, tool};
use pqcc_core::verity::{Salt, parse_uuid};
use pqcc_tools::model::{
    DEFAULT_SALT, DEFAULT_UUID,
    build::{self, Outcome, Output},
    source,
    verify::{self, Finding},
};

fn options(out: &Path, name: &str) -> build::Options {
    build::Options {
        out_dir: out.to_path_buf(),
        name: name.to_owned(),
        revision: "test".to_owned(),
        salt: Salt::from_hex(DEFAULT_SALT).unwrap(),
        uuid: parse_uuid(DEFAULT_UUID).unwrap(),
        expected: None,
        progress: false,
        durable: true,
    }
}

fn build_dir(dir: &Path, opts: &build::Options) -> anyhow::Result<Output> {
    let src = source::resolve(dir.to_str().unwrap())?;
    match build::build(&src, opts)? {
        Outcome::Done(o) => Ok(o),
        Outcome::Mismatch { .. } => panic!("no expected hash was given"),
    }
}

/// Builds `dir` with pqcc and with the recipe and asserts identical bytes.
fn assert_same_as_recipe(dir: &Path, work: &Path, what: &str) {
    let out = work.join("pqcc-out");
    let o = build_dir(dir, &options(&out, "m")).unwrap_or_else(|e| panic!("{what}: {e:#}"));
    let reference = work.join("ref.tar");
    let root = recipe(dir, &reference);
    assert_eq!(hex::encode(o.root_hash), root, "{what}: root hash");
    let (a, b) = (fs::read(&o.archive).unwrap(), fs::read(&reference).unwrap());
    if a != b {
        let first = a.iter().zip(&b).position(|(x, y)| x != y);
        panic!(
            "{what}: archive differs from GNU tar's (lengths {} vs {}, first difference at {first:?})",
            a.len(),
            b.len()
        );
    }
    assert!(
        fs::read(&o.verity).unwrap() == fs::read(work.join("ref.tar.verity")).unwrap(),
        "{what}: hash file differs from veritysetup's"
    );
    assert_eq!(
        fs::read_to_string(o.archive.with_extension("tar.hash")).unwrap(),
        root
    );
    assert_eq!(
        verify::verify(&o.archive, &o.verity, &o.root_hash).unwrap(),
        Finding::Ok {
            data_blocks: a.len() as u64 / 4096
        }
    );
    fs::remove_dir_all(&out).unwrap();
}

#[test]
fn recipe_sample_tree_matches_the_vector() {
    let data = common::shared_data().join("repro-tar");
    let t = TempDir::new("sample");
    let tree = t.path().join("tree");
    run_ok(
        Command::new("bash")
            .arg(data.join("make_tree.sh"))
            .arg(&tree),
    );
    let o = build_dir(&tree, &options(&t.path().join("out"), "sample")).unwrap();
    assert!(fs::read(&o.archive).unwrap() == fs::read(data.join("sample.tar")).unwrap());
    assert!(fs::read(&o.verity).unwrap() == fs::read(data.join("sample.tar.verity")).unwrap());
    assert_eq!(
        hex::encode(o.root_hash),
        fs::read_to_string(data.join("sample.tar.hash"))
            .unwrap()
            .trim()
    );
    // The README's determinism check: other mtimes and a umask of 077 change nothing.
    let tree2 = t.path().join("tree2");
    run_ok(
        Command::new("bash")
            .arg("-c")
            .arg("umask 077 && bash \"$0\" \"$1\" 1234567890")
            .arg(data.join("make_tree.sh"))
            .arg(&tree2),
    );
    let o2 = build_dir(&tree2, &options(&t.path().join("out2"), "sample")).unwrap();
    assert_eq!(o2.root_hash, o.root_hash);
}

#[test]
fn random_trees_match_gnu_tar_and_veritysetup() {
    tool("tar");
    tool("veritysetup");
    for seed in 1..=8u64 {
        let t = TempDir::new("random");
        let tree = t.path().join("tree");
        common::random_tree(&tree, seed);
        assert_same_as_recipe(&tree, t.path(), &format!("random tree seed {seed}"));
    }
}

#[test]
fn names_at_the_header_limits() {
    // Names of 98..=102 bytes with and without the directory slash, a path > 255,
    // non-ASCII names that fit in 100 bytes (which still get a pax record).
    let t = TempDir::new("limits");
    let tree = t.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    for n in 95..=101 {
        fs::create_dir_all(tree.join("D".repeat(n))).unwrap();
        fs::write(tree.join("F".repeat(n)), b"x").unwrap();
    }
    let deep = tree.join("p".repeat(200)).join("q".repeat(200));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("r".repeat(250)), b"deep\n").unwrap();
    fs::write(tree.join("héllo"), b"").unwrap();
    fs::create_dir_all(tree.join("dïr")).unwrap();
    fs::write(tree.join("dïr/ä"), vec![7u8; 4096 * 3]).unwrap();
    assert_same_as_recipe(&tree, t.path(), "header limits");
}

#[test]
fn other_salt_and_uuid_match_veritysetup() {
    let vs = tool("veritysetup");
    let t = TempDir::new("salt");
    let tree = t.path().join("tree");
    common::random_tree(&tree, 99);
    for (salt, uuid) in [
        ("ab", "01234567-89ab-cdef-0123-456789abcdef"),
        ("-", "11111111-2222-3333-4444-555555555555"),
        (&"5a".repeat(64)[..], "645ac31f-7610-42e1-8434-9d733699eac0"),
    ] {
        let mut opts = options(&t.path().join("out"), "salted");
        opts.salt = Salt::from_hex(salt).unwrap();
        opts.uuid = parse_uuid(uuid).unwrap();
        let o = build_dir(&tree, &opts).unwrap();
        let reference = t.path().join("ref.verity");
        let _ = fs::remove_file(&reference);
        let out = run_ok(
            Command::new(&vs)
                .arg("format")
                .arg(format!("--salt={salt}"))
                .arg(format!("--uuid={uuid}"))
                .arg(&o.archive)
                .arg(&reference),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&hex::encode(o.root_hash)),
            "salt {salt}: veritysetup says {text}"
        );
        assert!(
            fs::read(&o.verity).unwrap() == fs::read(&reference).unwrap(),
            "salt {salt}"
        );
        // And veritysetup accepts pqcc's hash file.
        run_ok(
            Command::new(&vs)
                .arg("verify")
                .arg(&o.archive)
                .arg(&o.verity)
                .arg(hex::encode(o.root_hash)),
        );
        fs::remove_dir_all(t.path().join("out")).unwrap();
    }
}

#[test]
fn hugging_face_snapshot_is_archived_as_tar_dereference() {
    // A cache laid out as huggingface_hub does: snapshot files are symlinks to blobs.
    let t = TempDir::new("hf");
    let repo = t.path().join("hub/models--acme--tiny-llm");
    let blobs = repo.join("blobs");
    let snap = repo.join("snapshots/0123456789abcdef0123456789abcdef01234567");
    fs::create_dir_all(&blobs).unwrap();
    fs::create_dir_all(snap.join("sub")).unwrap();
    let mut r = common::Rng::new(5);
    for (name, size) in [
        ("config.json", 100),
        ("model.safetensors", 70_000),
        ("sub/tok.json", 4097),
    ] {
        let blob = blobs.join(format!("blob{size}"));
        fs::write(&blob, r.bytes(size)).unwrap();
        let depth = name.matches('/').count();
        let target = format!("{}../../blobs/blob{size}", "../".repeat(depth));
        std::os::unix::fs::symlink(target, snap.join(name)).unwrap();
    }
    fs::create_dir_all(repo.join("refs")).unwrap();
    fs::write(
        repo.join("refs/main"),
        "0123456789abcdef0123456789abcdef01234567",
    )
    .unwrap();

    let src = source::resolve(snap.to_str().unwrap()).unwrap();
    assert_eq!(src.name, "acme/tiny-llm");
    assert_eq!(src.revision, "0123456789abcdef0123456789abcdef01234567");
    let mut opts = options(&t.path().join("out"), &src.name);
    opts.revision = src.revision.clone();
    let Outcome::Done(o) = build::build(&src, &opts).unwrap() else {
        panic!("mismatch")
    };
    assert!(
        o.archive
            .ends_with("acme--tiny-llm@0123456789abcdef0123456789abcdef01234567.tar")
    );
    // GNU tar with the recipe's flags plus --dereference.
    let reference = t.path().join("ref.tar");
    run_ok(
        Command::new(tool("tar"))
            .env("LC_ALL", "C")
            .arg("-cf")
            .arg(&reference)
            .arg("-C")
            .arg(&snap)
            .args([
                ".",
                "--dereference",
                "--sort=name",
                "--format=posix",
                "--pax-option=exthdr.name=%d/PaxHeaders/%f",
                "--pax-option=delete=atime,delete=ctime",
                "--clamp-mtime",
                "--mtime=@0",
                "--numeric-owner",
                "--owner=0",
                "--group=0",
                "--mode=go+u,go-w",
            ]),
    );
    let mut want = fs::read(&reference).unwrap();
    want.resize(want.len() + 4096 - want.len() % 4096, 0);
    assert!(
        fs::read(&o.archive).unwrap() == want,
        "snapshot archive differs from tar -h"
    );

    // ORG/NAME and ORG/NAME@main resolve through the same cache, offline (HF_HUB_OFFLINE).
    // SAFETY (test): no other thread of this test binary reads HF_HUB_CACHE.
    let hub = t.path().join("hub");
    let by_name = with_hub_cache(&hub, || source::resolve("acme/tiny-llm@main").unwrap());
    assert_eq!(by_name.dir, fs::canonicalize(&snap).unwrap());
    let missing = with_hub_cache(&hub, || source::resolve("acme/other").unwrap_err());
    let msg = format!("{missing:#}");
    assert!(
        msg.contains("not in the local Hugging Face cache") && msg.contains("no network"),
        "{msg}"
    );
}

fn with_hub_cache<T>(hub: &Path, f: impl FnOnce() -> T) -> T {
    // The only test in this binary that touches the environment.
    // SAFETY: set_var is unsafe because other threads may read the environment
    // concurrently; no other test here reads HF_HUB_CACHE or the HF_* variables.
    // HF_HUB_OFFLINE: resolve from the cache only, never from a real hub.
    unsafe {
        std::env::set_var("HF_HUB_CACHE", hub);
        std::env::set_var("HF_HUB_OFFLINE", "1");
    }
    let r = f();
    // SAFETY: as above.
    unsafe {
        std::env::remove_var("HF_HUB_CACHE");
        std::env::remove_var("HF_HUB_OFFLINE");
    }
    r
}

fn refused(dir: &Path, out: &Path) -> String {
    let src = source::resolve(dir.to_str().unwrap()).unwrap();
    let e = build::build(&src, &options(out, "refused")).expect_err("the tree must be refused");
    let msg = format!("{e:#}");
    // Nothing was written: no archive, no temporary.
    let left: Vec<_> = fs::read_dir(out)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name())
                .filter(|n| !n.as_bytes().ends_with(b".lock"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "files left behind: {left:?}");
    msg
}

#[test]
fn special_files_are_refused_with_a_clear_message() {
    let t = TempDir::new("special");
    let base = |name: &str| {
        let d = t.path().join(name);
        fs::create_dir_all(d.join("sub")).unwrap();
        fs::write(d.join("sub/w.bin"), b"weights").unwrap();
        d
    };
    let out = t.path().join("out");

    let d = base("symlink");
    std::os::unix::fs::symlink("w.bin", d.join("sub/link")).unwrap();
    let m = refused(&d, &out);
    assert!(m.contains("sub/link") && m.contains("symbolic link"), "{m}");

    let d = base("hardlink");
    fs::hard_link(d.join("sub/w.bin"), d.join("sub/w2.bin")).unwrap();
    let m = refused(&d, &out);
    assert!(m.contains("hard link"), "{m}");

    let d = base("fifo");
    run_ok(Command::new("mkfifo").arg(d.join("sub/pipe")));
    let m = refused(&d, &out);
    assert!(m.contains("sub/pipe") && m.contains("FIFO"), "{m}");

    let d = base("socket");
    let _listener = std::os::unix::net::UnixListener::bind(d.join("sock")).unwrap();
    let m = refused(&d, &out);
    assert!(m.contains("socket"), "{m}");

    let d = base("nonutf8");
    fs::write(d.join(std::ffi::OsStr::from_bytes(b"bad\xffname")), b"").unwrap();
    let m = refused(&d, &out);
    assert!(m.contains("not UTF-8"), "{m}");

    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        let d = base("device");
        run_ok(
            Command::new("mknod")
                .arg(d.join("null"))
                .args(["c", "1", "3"]),
        );
        let m = refused(&d, &out);
        assert!(m.contains("character device"), "{m}");
    }

    let d = base("old");
    run_ok(
        Command::new("touch")
            .args(["-d", "1969-06-01"])
            .arg(d.join("sub/w.bin")),
    );
    let m = refused(&d, &out);
    assert!(m.contains("before 1970"), "{m}");

    // Mode 000: root reads it anyway, as GNU tar does, so the bytes must match; anyone
    // else cannot, and the build fails naming the file.
    let d = base("unreadable");
    fs::set_permissions(d.join("sub/w.bin"), fs::Permissions::from_mode(0o000)).unwrap();
    if root {
        assert_same_as_recipe(&d, t.path(), "mode 000 file read by root");
    } else {
        let m = refused(&d, &out);
        assert!(m.contains("w.bin"), "{m}");
    }
}

#[test]
fn a_file_with_other_links_outside_the_tree_is_archived_normally() {
    // GNU tar only writes a link entry when it meets the same inode twice.
    let t = TempDir::new("outside-link");
    let tree = t.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("w.bin"), vec![1u8; 5000]).unwrap();
    fs::hard_link(tree.join("w.bin"), t.path().join("elsewhere")).unwrap();
    assert_same_as_recipe(&tree, t.path(), "nlink 2, one link in the tree");
}
