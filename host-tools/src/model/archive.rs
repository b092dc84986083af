//! The single-pass writer: the tar stream is produced once and flows to the archive
//! file and to the dm-verity hasher at the same time.
//!
//! ```text
//!  reader (this thread) ──chunk──► writer thread ──► archive file
//!     files, headers      └─chunk─► hasher thread: rayon over all cores hashes the
//!     padding                        chunk's 4 KiB blocks, then feeds the digests in
//!                                    order to pqcc-core's TreeBuilder, whose hash
//!                                    blocks are written at their offsets
//! ```
//!
//! Chunks are 4 MiB, block-aligned, shared by reference and recycled through a small
//! pool, so memory stays bounded whatever the model's size. Every source file is read
//! exactly once; a file whose size or identity changes while it is read is an error.

use std::{
    fs::File,
    io::{Read, Write},
    os::unix::fs::{FileExt, MetadataExt},
    sync::{
        Arc,
        mpsc::{Receiver, SyncSender, sync_channel},
    },
    thread,
};

use anyhow::{Context, anyhow, bail};
use pqcc_core::verity::{self, DIGEST_LEN, Geometry, HashType, Salt, Superblock, TreeBuilder};
use rayon::prelude::*;

use super::{
    scan::Entry,
    tar::{self, Kind},
};

/// dm-verity data and hash block size used for model archives.
pub const VERITY_BLOCK: u32 = 4096;
/// Bytes per chunk of the tar stream (a multiple of [`VERITY_BLOCK`]).
pub const CHUNK: usize = 4 << 20;
/// Chunks in flight at most (bounds memory at `POOL * CHUNK`).
const POOL: usize = 8;
/// Data blocks hashed by one rayon task.
const BATCH_BLOCKS: usize = 64;

/// The dm-verity parameters of an archive.
#[derive(Debug, Clone, Copy)]
pub struct VerityParams {
    /// The salt (the recipe's is 17 bytes).
    pub salt: Salt,
    /// The UUID written in the superblock.
    pub uuid: [u8; 16],
}

/// What a build produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Built {
    /// The dm-verity root hash.
    pub root_hash: [u8; DIGEST_LEN],
    /// Length of the archive (tar + padding).
    pub archive_len: u64,
    /// Length of the hash file (superblock area + tree).
    pub verity_len: u64,
}

/// Salted SHA-256 of every `VERITY_BLOCK`-byte block of `data` (a multiple of the
/// block size), on all cores, in block order.
pub fn hash_data_blocks(salt: &Salt, data: &[u8]) -> Vec<[u8; DIGEST_LEN]> {
    let bs = VERITY_BLOCK as usize;
    let salt = salt.as_bytes();
    data.par_chunks(bs * BATCH_BLOCKS)
        .flat_map_iter(|batch| {
            batch
                .chunks(bs)
                .map(|b| verity::hash_block(HashType::Normal, salt, b))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Writes the hash file's superblock for `geometry`.
fn superblock_bytes(geometry: &Geometry, params: &VerityParams) -> anyhow::Result<[u8; 512]> {
    let sb = Superblock {
        hash_type: HashType::Normal,
        uuid: params.uuid,
        data_block_size: VERITY_BLOCK,
        hash_block_size: VERITY_BLOCK,
        data_blocks: geometry.data_blocks(),
        salt: params.salt,
    };
    let mut buf = [0u8; 512];
    sb.emit(&mut buf)?;
    Ok(buf)
}

type Chunk = Arc<Vec<u8>>;

/// Returns a chunk to the pool once its last user is done with it.
fn release(chunk: Chunk, pool: &SyncSender<Vec<u8>>) {
    if let Some(v) = Arc::into_inner(chunk) {
        let _ = pool.send(v);
    }
}

/// Writes the archive of `entries` to `tar_out` and its hash tree to `verity_out`
/// (both empty, freshly created) in one pass, and returns the root hash. Calls
/// `progress(bytes)` as the stream advances. Does not fsync.
pub fn write(
    entries: &[Entry],
    tar_out: &File,
    verity_out: &File,
    params: &VerityParams,
    start_writeback: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<Built> {
    let headers: Vec<_> = entries.iter().map(|e| e.header.clone()).collect();
    let archive_len = tar::archive_len(&headers);
    let geometry = Geometry::new(archive_len / u64::from(VERITY_BLOCK), VERITY_BLOCK, true)?;
    let verity_len = geometry.hash_device_len();
    verity_out
        .set_len(verity_len)
        .context("sizing the hash file")?;
    verity_out
        .write_all_at(&superblock_bytes(&geometry, params)?, 0)
        .context("writing the verity superblock")?;

    let (pool_tx, pool_rx) = sync_channel::<Vec<u8>>(POOL);
    for _ in 0..POOL {
        pool_tx
            .send(vec![0u8; CHUNK])
            .map_err(|_| anyhow!("buffer pool closed"))?;
    }
    let (wtx, wrx) = sync_channel::<(Chunk, usize)>(POOL);
    let (htx, hrx) = sync_channel::<(Chunk, usize)>(POOL);

    // Only the writer and the hasher return buffers: if both stop, the reader's wait
    // for a free buffer ends with an error instead of hanging.
    let (wpool, hpool) = (pool_tx.clone(), pool_tx);
    let result = thread::scope(|s| {
        let writer = s.spawn(move || write_loop(tar_out, wrx, &wpool, start_writeback));
        let hasher = {
            let params = *params;
            s.spawn(move || hash_loop(geometry, &params, verity_out, hrx, &hpool))
        };
        let produced = produce(entries, archive_len, &pool_rx, &wtx, &htx, progress);
        drop(wtx);
        drop(htx);
        let w = writer
            .join()
            .map_err(|_| anyhow!("archive writer panicked"));
        let h = hasher.join().map_err(|_| anyhow!("hasher panicked"));
        // The reader's error is the root cause when the others stopped because of it.
        produced?;
        w??;
        h?
    })?;
    Ok(Built {
        root_hash: result,
        archive_len,
        verity_len,
    })
}

fn write_loop(
    out: &File,
    rx: Receiver<(Chunk, usize)>,
    pool: &SyncSender<Vec<u8>>,
    start_writeback: bool,
) -> anyhow::Result<()> {
    let mut file = out;
    let mut written = 0u64;
    for (chunk, len) in rx {
        file.write_all(&chunk[..len])
            .context("writing the archive")?;
        release(chunk, pool);
        if start_writeback {
            start_writeback_of(out, written, len);
        }
        written += len as u64;
    }
    Ok(())
}

/// Asks the kernel to start writing `len` bytes at `offset` to disk now, so that the
/// fsync before the rename finds little left to do. Advisory: errors are ignored
/// (the fsync reports real ones).
fn start_writeback_of(file: &File, offset: u64, len: usize) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(off), Ok(n)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return;
        };
        // SAFETY: sync_file_range only reads its integer arguments and acts on the
        // open descriptor `file` owns for the duration of the call; it touches no
        // memory of ours.
        let _ =
            unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE) };
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, offset, len);
    }
}

fn hash_loop(
    geometry: Geometry,
    params: &VerityParams,
    verity_out: &File,
    rx: Receiver<(Chunk, usize)>,
    pool: &SyncSender<Vec<u8>>,
) -> anyhow::Result<[u8; DIGEST_LEN]> {
    let mut tree = Box::new(TreeBuilder::new(geometry, HashType::Normal, params.salt));
    let mut emit = |offset: u64, block: &[u8]| -> anyhow::Result<()> {
        verity_out
            .write_all_at(block, offset)
            .context("writing the hash file")
    };
    for (chunk, len) in rx {
        let digests = hash_data_blocks(&params.salt, &chunk[..len]);
        release(chunk, pool);
        for d in &digests {
            tree.push(d, &mut emit)?;
        }
    }
    tree.finish(&mut emit)
}

/// Fills chunks with the tar stream and hands each to the writer and the hasher.
struct Producer<'a> {
    pool: &'a Receiver<Vec<u8>>,
    wtx: &'a SyncSender<(Chunk, usize)>,
    htx: &'a SyncSender<(Chunk, usize)>,
    buf: Vec<u8>,
    len: usize,
    total: u64,
    progress: &'a (dyn Fn(u64) + Sync),
}

impl Producer<'_> {
    fn take(&mut self) -> anyhow::Result<()> {
        self.buf = self
            .pool
            .recv()
            .map_err(|_| anyhow!("archive writer or hasher stopped"))?;
        self.len = 0;
        Ok(())
    }

    /// Sends the current chunk when it is full (or when `force` and not empty).
    fn ship(&mut self, force: bool) -> anyhow::Result<()> {
        if self.len == CHUNK || (force && self.len > 0) {
            let buf = std::mem::take(&mut self.buf);
            let chunk = Arc::new(buf);
            let stopped = || anyhow!("archive writer or hasher stopped");
            self.wtx
                .send((Arc::clone(&chunk), self.len))
                .map_err(|_| stopped())?;
            self.htx.send((chunk, self.len)).map_err(|_| stopped())?;
            self.total += self.len as u64;
            (self.progress)(self.total);
            if !force {
                self.take()?;
            }
        }
        Ok(())
    }

    fn put(&mut self, mut data: &[u8]) -> anyhow::Result<()> {
        while !data.is_empty() {
            let n = data.len().min(CHUNK - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
            self.ship(false)?;
        }
        Ok(())
    }

    fn zeros(&mut self, mut n: u64) -> anyhow::Result<()> {
        while n > 0 {
            let k = usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(CHUNK - self.len);
            self.buf[self.len..self.len + k].fill(0);
            self.len += k;
            n -= k as u64;
            self.ship(false)?;
        }
        Ok(())
    }

    /// Copies exactly `size` bytes of `file` into the stream.
    fn file(&mut self, e: &Entry) -> anyhow::Result<()> {
        let size = e.header.size;
        let mut f =
            File::open(&e.path).with_context(|| format!("{}: cannot open", e.path.display()))?;
        let m = f
            .metadata()
            .with_context(|| format!("{}: cannot stat", e.path.display()))?;
        if (m.dev(), m.ino()) != e.dev_ino || m.len() != size {
            bail!(
                "{}: file changed while the archive was being built",
                e.path.display()
            );
        }
        let mut left = size;
        while left > 0 {
            let room = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(CHUNK - self.len);
            let n = f
                .read(&mut self.buf[self.len..self.len + room])
                .with_context(|| format!("{}: read error", e.path.display()))?;
            if n == 0 {
                bail!(
                    "{}: file shrank while the archive was being built",
                    e.path.display()
                );
            }
            self.len += n;
            left -= n as u64;
            self.ship(false)?;
        }
        let mut probe = [0u8; 1];
        if f.read(&mut probe)
            .with_context(|| format!("{}: read error", e.path.display()))?
            != 0
        {
            bail!(
                "{}: file grew while the archive was being built",
                e.path.display()
            );
        }
        Ok(())
    }
}

fn produce(
    entries: &[Entry],
    archive_len: u64,
    pool: &Receiver<Vec<u8>>,
    wtx: &SyncSender<(Chunk, usize)>,
    htx: &SyncSender<(Chunk, usize)>,
    progress: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<()> {
    let mut p = Producer {
        pool,
        wtx,
        htx,
        buf: Vec::new(),
        len: 0,
        total: 0,
        progress,
    };
    p.take()?;
    let block = tar::BLOCK as u64;
    for e in entries {
        p.put(&tar::header_bytes(&e.header))?;
        if e.header.kind == Kind::File {
            p.file(e)?;
            let pad = e.header.size.next_multiple_of(block) - e.header.size;
            p.zeros(pad)?;
        }
    }
    // End of archive, record padding and the recipe's 4 KiB padding: all zeros.
    let written = p.total + p.len as u64;
    let rest = archive_len
        .checked_sub(written)
        .ok_or_else(|| anyhow!("internal error: archive longer than computed"))?;
    p.zeros(rest)?;
    p.ship(true)?;
    if p.total != archive_len {
        bail!(
            "internal error: archive length {} differs from the computed {archive_len}",
            p.total
        );
    }
    Ok(())
}
