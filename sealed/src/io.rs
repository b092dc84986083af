//! File plumbing: positioned reads and writes, the model directory walk, and outputs
//! that appear under their final name only when complete.

use std::{
    fs::File,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use crate::{Error, Result};

/// Reads exactly `buf.len()` bytes at `off`.
pub(crate) fn read_at(f: &File, path: &Path, off: u64, buf: &mut [u8]) -> Result<()> {
    f.read_exact_at(buf, off).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::refused(path.display(), None, "file ends early (truncated)")
        } else {
            Error::io(path, "reading", e)
        }
    })
}

/// Writes all of `buf` at `off`.
pub(crate) fn write_at(f: &File, path: &Path, off: u64, buf: &[u8]) -> Result<()> {
    f.write_all_at(buf, off)
        .map_err(|e| Error::io(path, "writing", e))
}

/// Every regular file under `root` (symbolic links to regular files included, as in a
/// Hugging Face cache snapshot), as `/`-separated relative paths in byte order.
/// Anything else (sockets, devices, links to directories) is refused.
pub(crate) fn walk(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), root.to_path_buf())];
    while let Some((rel, dir)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, "listing", e))?;
        for ent in rd {
            let ent = ent.map_err(|e| Error::io(&dir, "listing", e))?;
            let name = ent.file_name();
            let name = name
                .to_str()
                .ok_or_else(|| Error::bad_input(ent.path().display(), "file name is not UTF-8"))?;
            let relp = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            let p = ent.path();
            let lmeta = std::fs::symlink_metadata(&p).map_err(|e| Error::io(&p, "stat", e))?;
            if lmeta.is_dir() {
                stack.push((relp, p));
                continue;
            }
            let meta = std::fs::metadata(&p).map_err(|e| Error::io(&p, "stat", e))?;
            if !meta.is_file() {
                return Err(Error::bad_input(
                    p.display(),
                    "not a regular file (directories behind links, devices and sockets are not sealed)",
                ));
            }
            pqcc_core::sealed::check_path(&relp).map_err(|_| {
                Error::bad_input(&relp, "path cannot be sealed (reserved or invalid name)")
            })?;
            out.push((relp, p));
        }
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out)
}

/// A directory being written under a temporary name beside `final_path`; removed on
/// drop unless [`TempDir::commit`] renamed it into place.
pub(crate) struct TempDir {
    pub(crate) path: PathBuf,
    final_path: PathBuf,
    done: bool,
}

impl TempDir {
    /// Creates the temporary directory; refuses an existing `final_path`.
    pub(crate) fn create(final_path: &Path) -> Result<Self> {
        if final_path.exists() {
            return Err(Error::Usage(format!(
                "{} already exists; remove it or choose another output",
                final_path.display()
            )));
        }
        let parent = match final_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, "creating", e))?;
        let name = final_path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                Error::Usage(format!(
                    "{}: not a usable output name",
                    final_path.display()
                ))
            })?;
        let mut tag = [0u8; 6];
        getrandom::fill(&mut tag).map_err(|e| Error::Usage(format!("random tag: {e}")))?;
        let path = parent.join(format!(
            ".{name}.partial-{}-{}",
            std::process::id(),
            hex::encode(tag)
        ));
        std::fs::create_dir(&path).map_err(|e| Error::io(&path, "creating", e))?;
        Ok(Self {
            path,
            final_path: final_path.to_path_buf(),
            done: false,
        })
    }

    /// Makes `rel`'s parent directories inside the temporary directory and creates the
    /// file.
    pub(crate) fn create_file(&self, rel: &str) -> Result<(File, PathBuf)> {
        let p = self.path.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, "creating", e))?;
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&p)
            .map_err(|e| Error::io(&p, "creating", e))?;
        Ok((f, p))
    }

    /// Flushes every file to disk and renames the directory to its final name.
    pub(crate) fn commit(mut self, files: &[(File, PathBuf)]) -> Result<PathBuf> {
        for (f, p) in files {
            f.sync_all().map_err(|e| Error::io(p, "flushing", e))?;
        }
        sync_tree(&self.path)?;
        std::fs::rename(&self.path, &self.final_path)
            .map_err(|e| Error::io(&self.final_path, "renaming into place", e))?;
        if let Some(parent) = self.final_path.parent()
            && let Ok(d) = File::open(if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            })
        {
            let _ = d.sync_all();
        }
        self.done = true;
        Ok(self.final_path.clone())
    }
}

fn sync_tree(dir: &Path) -> Result<()> {
    for ent in std::fs::read_dir(dir).map_err(|e| Error::io(dir, "listing", e))? {
        let ent = ent.map_err(|e| Error::io(dir, "listing", e))?;
        if ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            sync_tree(&ent.path())?;
        }
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, "flushing", e))
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
