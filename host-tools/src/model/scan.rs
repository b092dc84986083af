//! Walking a model directory into the list of archive entries, in GNU tar's
//! `--sort=name` order, with the special-file policy of `docs/model-archives.md`.
//!
//! Archived: directories and regular files. Refused, with a message naming the path:
//! names that are not UTF-8, symbolic links (except in a Hugging Face snapshot, where
//! links that resolve to a regular file directly inside the snapshot's own
//! `../../blobs/` are followed as `tar --dereference` would; a link anywhere else is
//! refused, naming where it points), the same file reached twice (a hard link inside
//! the tree, which GNU tar would store as a link entry), FIFOs, sockets, devices, files
//! or directories that cannot be read, and mtimes before 1970 (which `--clamp-mtime`
//! would keep and store in a pax record).
//!
//! Left out unless asked to keep them ([`Metadata::Keep`]): version-control and
//! download metadata, which would make the root hash depend on how the model was
//! fetched rather than on the model: anything named `.git` (directory or file, at any
//! depth), and `.cache/huggingface` at the top (what `huggingface_hub` writes into a
//! `--local-dir` download), with `.cache` itself when it holds nothing else.

use std::{
    collections::HashMap,
    ffi::{OsStr, OsString},
    fs::{self, Metadata as FsMetadata},
    os::unix::{
        ffi::OsStrExt,
        fs::{FileTypeExt, MetadataExt},
    },
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

use super::tar::{Header, Kind, normalise_mode};

/// One entry of the archive, with where its content comes from.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The header as archived.
    pub header: Header,
    /// The file to read the content from (for a directory, the directory).
    pub path: PathBuf,
    /// Device and inode of what was stat'ed, to notice a file replaced while read.
    pub dev_ino: (u64, u64),
    /// Modification and change times (seconds, nanoseconds), for the build cache.
    pub times: [i64; 4],
}

/// How symbolic links are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Refuse every symbolic link (a plain model directory).
    Refuse,
    /// Follow links to regular files, as `tar --dereference` (a Hugging Face cache
    /// snapshot, whose files are links into `../../blobs`).
    FollowFiles,
}

/// What to do with version-control and download metadata (`.git`,
/// `.cache/huggingface`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metadata {
    /// Leave it out of the archive (the default).
    #[default]
    Leave,
    /// Archive it like any other file (`--keep-vcs-metadata`).
    Keep,
}

/// The result of a scan.
#[derive(Debug, Clone)]
pub struct Scanned {
    /// The entries in archive order, `./` first.
    pub entries: Vec<Entry>,
    /// The archive names (`./.git/`, `./.cache/huggingface/`) of what was left out as
    /// metadata, in walk order.
    pub left_out: Vec<String>,
}

/// Where a walk may follow symbolic links to.
struct Walk<'a> {
    links: Links,
    /// The canonical `../../blobs` of a snapshot, when it exists.
    blobs: Option<PathBuf>,
    metadata: Metadata,
    out: &'a mut Vec<Entry>,
    left_out: &'a mut Vec<String>,
    seen: HashMap<(u64, u64), PathBuf>,
}

/// Walks `root` and returns its entries in archive order, `./` first.
pub fn scan(root: &Path, links: Links, metadata: Metadata) -> anyhow::Result<Scanned> {
    let meta = fs::metadata(root).with_context(|| format!("{}: cannot stat", root.display()))?;
    if !meta.is_dir() {
        bail!("{}: not a directory", root.display());
    }
    let blobs = match links {
        Links::Refuse => None,
        Links::FollowFiles => root
            .parent()
            .and_then(Path::parent)
            .and_then(|m| fs::canonicalize(m.join("blobs")).ok()),
    };
    let mut entries = Vec::new();
    let mut left_out = Vec::new();
    entries.push(entry(b"./".to_vec(), Kind::Dir, root.to_path_buf(), &meta)?);
    let mut w = Walk {
        links,
        blobs,
        metadata,
        out: &mut entries,
        left_out: &mut left_out,
        seen: HashMap::new(),
    };
    walk(root, b".", &mut w)?;
    Ok(Scanned { entries, left_out })
}

/// Whether `name` in the directory `prefix` (an archive name: `.`, `./a`) is metadata
/// to leave out; `dir` is its path. `.cache` counts when it holds only `huggingface`.
fn is_metadata(prefix: &[u8], name: &OsStr, path: &Path) -> Option<&'static str> {
    let n = name.as_bytes();
    if n == b".git" {
        return Some("");
    }
    if prefix == b"./.cache" && n == b"huggingface" {
        return Some("");
    }
    if prefix == b"." && n == b".cache" {
        let is_real_dir = fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
        let names: Vec<OsString> = fs::read_dir(path)
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if is_real_dir && names.len() == 1 && names[0] == "huggingface" {
            return Some("/huggingface");
        }
    }
    None
}

fn entry(name: Vec<u8>, kind: Kind, path: PathBuf, m: &FsMetadata) -> anyhow::Result<Entry> {
    if m.mtime() < 0 {
        bail!(
            "{}: modification time before 1970 (GNU tar's --clamp-mtime would keep it); \
             `touch` the file first",
            path.display()
        );
    }
    Ok(Entry {
        header: Header {
            name,
            kind,
            mode: normalise_mode(m.mode()),
            size: if kind == Kind::File { m.len() } else { 0 },
        },
        path,
        dev_ino: (m.dev(), m.ino()),
        times: [m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()],
    })
}

fn walk(dir: &Path, prefix: &[u8], w: &mut Walk<'_>) -> anyhow::Result<()> {
    let rd =
        fs::read_dir(dir).with_context(|| format!("{}: cannot read directory", dir.display()))?;
    let mut names = Vec::new();
    for e in rd {
        let e = e.with_context(|| format!("{}: cannot read directory", dir.display()))?;
        names.push(e.file_name());
    }
    // GNU tar --sort=name: strcmp on the bytes of the names.
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for n in names {
        let path = dir.join(&n);
        if std::str::from_utf8(n.as_bytes()).is_err() {
            bail!(
                "{}: file name is not UTF-8; a pax archive stores names as UTF-8 and \
                 pqcc refuses to guess (rename the file)",
                path.display()
            );
        }
        let mut name = prefix.to_vec();
        name.push(b'/');
        name.extend_from_slice(n.as_bytes());
        let lmeta = fs::symlink_metadata(&path)
            .with_context(|| format!("{}: cannot stat", path.display()))?;
        if w.metadata == Metadata::Leave
            && let Some(suffix) = is_metadata(prefix, &n, &path)
        {
            let slash = if lmeta.is_dir() { "/" } else { "" };
            w.left_out
                .push(format!("{}{suffix}{slash}", display_name(&name)));
            continue;
        }
        let ft = lmeta.file_type();
        let mut path = path;
        let meta = if ft.is_symlink() {
            match w.links {
                Links::Refuse => bail!(
                    "{}: symbolic link; model archives hold only regular files and \
                     directories (copy the model with `cp -rL`, or point pqcc at a Hugging \
                     Face snapshot, whose links are followed)",
                    path.display()
                ),
                Links::FollowFiles => {
                    let (target, m) = follow_into_blobs(&path, w.blobs.as_deref())?;
                    // Read the blob itself: no link is resolved again later.
                    path = target;
                    m
                }
            }
        } else {
            lmeta
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            let mut dname = name.clone();
            dname.push(b'/');
            w.out.push(entry(dname, Kind::Dir, path.clone(), &meta)?);
            walk(&path, &name, w)?;
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = w.seen.get(&key) {
                    bail!(
                        "{}: hard link to {} (GNU tar would store a link entry); model \
                         archives hold each file once: copy one of them",
                        path.display(),
                        first.display()
                    );
                }
                w.seen.insert(key, path.clone());
            }
            w.out.push(entry(name, Kind::File, path, &meta)?);
        } else {
            bail!(
                "{}: {}; model archives hold only regular files and directories",
                path.display(),
                kind_name(&meta)
            );
        }
    }
    Ok(())
}

/// Resolves the snapshot link `link`: it must lead to a regular file directly inside
/// `blobs` (the snapshot's own `../../blobs`, canonical). Returns the file's canonical
/// path and metadata; anything else is refused, naming the link and where it points.
fn follow_into_blobs(link: &Path, blobs: Option<&Path>) -> anyhow::Result<(PathBuf, FsMetadata)> {
    let text = fs::read_link(link)
        .map(|t| t.display().to_string())
        .unwrap_or_else(|e| format!("(unreadable: {e})"));
    let Some(blobs) = blobs else {
        bail!(
            "{}: symbolic link to {text}, but the snapshot has no blobs directory \
             (../../blobs); only links into it are followed",
            link.display()
        );
    };
    let target = fs::canonicalize(link)
        .with_context(|| format!("{}: dangling symbolic link (to {text})", link.display()))?;
    if target.parent() != Some(blobs) {
        bail!(
            "{}: symbolic link to {text} (resolving to {}), outside the snapshot's blobs \
             directory {}; only links into it are followed",
            link.display(),
            target.display(),
            blobs.display()
        );
    }
    let m = fs::metadata(&target)
        .with_context(|| format!("{}: cannot stat {}", link.display(), target.display()))?;
    if !m.is_file() {
        bail!(
            "{}: symbolic link to {text}, something other than a regular file",
            link.display()
        );
    }
    Ok((target, m))
}

fn kind_name(m: &FsMetadata) -> &'static str {
    let ft = m.file_type();
    if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

/// The archive name of a path, for messages: `./a/b`.
pub fn display_name(name: &[u8]) -> String {
    String::from_utf8_lossy(OsStr::from_bytes(name).as_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &Scanned) -> Vec<String> {
        s.entries
            .iter()
            .map(|e| display_name(&e.header.name))
            .collect()
    }

    #[test]
    fn snapshot_links_only_into_own_blobs_and_metadata_left_out() {
        let d = std::env::temp_dir().join(format!("pqcc-scan-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        let md = d.join("models--a--b");
        let snap = md.join("snapshots/c0");
        fs::create_dir_all(md.join("blobs")).unwrap();
        fs::create_dir_all(snap.join(".git")).unwrap();
        fs::create_dir_all(snap.join(".cache/huggingface")).unwrap();
        fs::write(md.join("blobs/h1"), b"one").unwrap();
        fs::write(d.join("secret"), b"no").unwrap();
        fs::write(snap.join(".git/HEAD"), b"ref").unwrap();
        fs::write(snap.join(".cache/huggingface/x"), b"m").unwrap();
        std::os::unix::fs::symlink("../../blobs/h1", snap.join("f")).unwrap();

        let s = scan(&snap, Links::FollowFiles, Metadata::Leave).unwrap();
        assert_eq!(names(&s), ["./", "./f"]);
        assert_eq!(s.left_out, ["./.cache/huggingface/", "./.git/"]);
        assert_eq!(
            s.entries[1].path,
            fs::canonicalize(md.join("blobs/h1")).unwrap()
        );
        let s = scan(&snap, Links::FollowFiles, Metadata::Keep).unwrap();
        assert!(s.left_out.is_empty());
        assert_eq!(s.entries.len(), 7, "{:?}", names(&s));

        std::os::unix::fs::symlink("../../../secret", snap.join("g")).unwrap();
        let e = format!(
            "{:#}",
            scan(&snap, Links::FollowFiles, Metadata::Leave).unwrap_err()
        );
        assert!(
            e.contains("/g: symbolic link to ../../../secret") && e.contains("blobs"),
            "{e}"
        );
        fs::remove_dir_all(&d).unwrap();
    }
}
