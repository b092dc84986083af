//! Walking a model directory into the list of archive entries, in GNU tar's
//! `--sort=name` order, with the special-file policy of `docs/model-archives.md`.
//!
//! Archived: directories and regular files. Refused, with a message naming the path:
//! names that are not UTF-8, symbolic links (except in a Hugging Face snapshot, where
//! links to regular files are followed as `tar --dereference` would), the same file
//! reached twice (a hard link inside the tree, which GNU tar would store as a link
//! entry), FIFOs, sockets, devices, files or directories that cannot be read, and
//! mtimes before 1970 (which `--clamp-mtime` would keep and store in a pax record).

use std::{
    collections::HashMap,
    ffi::OsStr,
    fs::{self, Metadata},
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

/// Walks `root` and returns its entries in archive order, `./` first.
pub fn scan(root: &Path, links: Links) -> anyhow::Result<Vec<Entry>> {
    let meta = fs::metadata(root).with_context(|| format!("{}: cannot stat", root.display()))?;
    if !meta.is_dir() {
        bail!("{}: not a directory", root.display());
    }
    let mut out = Vec::new();
    let mut seen = HashMap::new();
    out.push(entry(b"./".to_vec(), Kind::Dir, root.to_path_buf(), &meta)?);
    walk(root, b".", links, &mut out, &mut seen)?;
    Ok(out)
}

fn entry(name: Vec<u8>, kind: Kind, path: PathBuf, m: &Metadata) -> anyhow::Result<Entry> {
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

fn walk(
    dir: &Path,
    prefix: &[u8],
    links: Links,
    out: &mut Vec<Entry>,
    seen: &mut HashMap<(u64, u64), PathBuf>,
) -> anyhow::Result<()> {
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
        let ft = lmeta.file_type();
        let meta = if ft.is_symlink() {
            match links {
                Links::Refuse => bail!(
                    "{}: symbolic link; model archives hold only regular files and \
                     directories (copy the model with `cp -rL`, or point pqcc at a Hugging \
                     Face snapshot, whose links are followed)",
                    path.display()
                ),
                Links::FollowFiles => {
                    let m = fs::metadata(&path)
                        .with_context(|| format!("{}: dangling symbolic link", path.display()))?;
                    if !m.is_file() {
                        bail!(
                            "{}: symbolic link to something other than a regular file",
                            path.display()
                        );
                    }
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
            out.push(entry(dname, Kind::Dir, path.clone(), &meta)?);
            walk(&path, &name, links, out, seen)?;
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = seen.get(&key) {
                    bail!(
                        "{}: hard link to {} (GNU tar would store a link entry); model \
                         archives hold each file once: copy one of them",
                        path.display(),
                        first.display()
                    );
                }
                seen.insert(key, path.clone());
            }
            out.push(entry(name, Kind::File, path, &meta)?);
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

fn kind_name(m: &Metadata) -> &'static str {
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
