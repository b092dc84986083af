//! Sealing a model directory (`pqcc model seal`).
//!
//! Two passes over the input, both on every core: SHA3-256 of each file (its content
//! id, which enters the file key), then every frame sealed on its own (read the chunk,
//! seal, write it at its place), so memory stays at two frames per thread whatever the
//! model's size. The output directory is written under a temporary name and renamed
//! into place at the end.

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use pqcc_core::{
    aead::TAG_LEN,
    hash::Sha3_256Stream,
    sealed::{
        self as fmt, DEFAULT_FRAME_SIZE, FileCipher, FileKey, FileKind, MANIFEST_PATH,
        MAX_FRAME_SIZE, MIN_FRAME_SIZE, ManifestEntry, ModelKey, PREAMBLE_LEN, Preamble,
        TensorEntry,
    },
    secret::Secret,
    wire::FRAME_HEADER_MAX_LEN,
};
use rayon::prelude::*;
use zeroize::Zeroizing;

use crate::{
    CpuAead, Error, MANIFEST_FILE, Result, SEALED_SUFFIX,
    io::{TempDir, read_at, walk, write_at},
    layout::{self, FramePos, Run, TensorSpec},
    safetensors::{StHeader, read_header},
};

/// How to seal.
#[derive(Debug, Clone)]
pub struct SealOptions {
    /// The model id `name@revision` bound into every key.
    pub model_id: String,
    /// The salt; `None` draws a fresh random one (give one for byte-reproducible output).
    pub salt: Option<[u8; 32]>,
    /// Plaintext bytes per frame ([`DEFAULT_FRAME_SIZE`] = 1 MiB).
    pub frame_size: u32,
    /// Show a progress bar on stderr when it is a terminal.
    pub progress: bool,
}

impl SealOptions {
    /// Options for `model_id` with a random salt, 1 MiB frames and a progress bar.
    pub fn new(model_id: &str) -> Self {
        Self {
            model_id: model_id.to_owned(),
            salt: None,
            frame_size: DEFAULT_FRAME_SIZE,
            progress: true,
        }
    }
}

/// What [`seal_dir`] produced.
#[derive(Debug, Clone)]
pub struct SealSummary {
    /// The sealed directory.
    pub out: PathBuf,
    /// The model id.
    pub model_id: String,
    /// Key id of the DEK (hex).
    pub key_id: String,
    /// The salt (hex).
    pub salt: String,
    /// Files sealed (the manifest not counted).
    pub files: usize,
    /// Tensors sealed.
    pub tensors: usize,
    /// Bytes of input.
    pub plain_bytes: u64,
    /// Bytes written (the manifest included).
    pub sealed_bytes: u64,
}

struct FilePlan {
    rel: String,
    src: PathBuf,
    kind: FileKind,
    len: u64,
    header: Option<StHeader>,
    sha3: [u8; 32],
    table: Vec<u8>,
    preamble: [u8; PREAMBLE_LEN],
    key: Option<FileKey>,
    runs: Vec<Run>,
    total: u64,
}

fn core_err(path: &str, e: pqcc_core::Error) -> Error {
    Error::bad_input(path, format!("cannot be laid out: {e}"))
}

/// Seals the model directory `src` into the new directory `out` with `dek`.
pub fn seal_dir(
    src: &Path,
    out: &Path,
    dek: &Secret<32>,
    opts: &SealOptions,
) -> Result<SealSummary> {
    fmt::check_model_id(&opts.model_id).map_err(|_| {
        Error::Usage(format!(
            "model id {:?} is not name@revision (at most {} bytes)",
            opts.model_id,
            fmt::MAX_MODEL_ID_LEN
        ))
    })?;
    if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&opts.frame_size) {
        return Err(Error::Usage(format!(
            "frame size {} is outside {MIN_FRAME_SIZE}..={MAX_FRAME_SIZE}",
            opts.frame_size
        )));
    }
    if !src.is_dir() {
        return Err(Error::Usage(format!(
            "{}: not a model directory",
            src.display()
        )));
    }
    let salt = match opts.salt {
        Some(s) => s,
        None => {
            let mut s = [0u8; 32];
            getrandom::fill(&mut s).map_err(|e| Error::Usage(format!("random salt: {e}")))?;
            s
        }
    };
    let fs = opts.frame_size;
    let key_id = fmt::key_id(dek);
    let model_key = ModelKey::derive(dek, &salt, &opts.model_id)
        .map_err(|_| Error::Usage("invalid model id".into()))?;

    let files = walk(src)?;
    if files.is_empty() {
        return Err(Error::bad_input(src.display(), "no files to seal"));
    }
    if files.len() > fmt::MAX_FILES as usize {
        return Err(Error::bad_input(src.display(), "too many files"));
    }
    let tmp = TempDir::create(out)?;

    // Read every safetensors header and size every file.
    let mut plans = Vec::with_capacity(files.len());
    for (rel, path) in files {
        let f = File::open(&path).map_err(|e| Error::io(&path, "opening", e))?;
        let len = f.metadata().map_err(|e| Error::io(&path, "stat", e))?.len();
        let (kind, header) = if rel.ends_with(".safetensors") {
            (FileKind::Safetensors, Some(read_header(&f, &rel, len)?))
        } else {
            (FileKind::Blob, None)
        };
        plans.push(FilePlan {
            rel,
            src: path,
            kind,
            len,
            header,
            sha3: [0; 32],
            table: Vec::new(),
            preamble: [0; PREAMBLE_LEN],
            key: None,
            runs: Vec::new(),
            total: 0,
        });
    }
    // A sharded checkpoint's index must agree with its shards.
    let names: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = plans
        .iter()
        .filter_map(|p| {
            p.header.as_ref().map(|h| {
                (
                    p.rel.clone(),
                    h.tensors.iter().map(|t| t.name.clone()).collect(),
                )
            })
        })
        .collect();
    for p in plans.iter().filter(|p| crate::hf::is_index(&p.rel)) {
        let text = std::fs::read(&p.src).map_err(|e| Error::io(&p.src, "reading", e))?;
        crate::hf::check_index(&p.rel, &text, &names)
            .map_err(|r| Error::bad_input(&p.rel, r.trim_start_matches(&format!("{}: ", p.rel))))?;
    }
    let plain_bytes: u64 = plans.iter().map(|p| p.len).sum();
    let bar = progress_bar(opts.progress, plain_bytes.saturating_mul(2));

    // Pass 1: SHA3-256 of every file, in parallel.
    plans.par_iter_mut().try_for_each(|p| -> Result<()> {
        let f = File::open(&p.src).map_err(|e| Error::io(&p.src, "opening", e))?;
        let mut h = Sha3_256Stream::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        while off < p.len {
            let n = layout::us((p.len - off).min(buf.len() as u64));
            read_at(&f, &p.src, off, &mut buf[..n])?;
            h.update(&buf[..n]);
            off += n as u64;
            bar.inc(n as u64);
        }
        p.sha3 = h.finish().0;
        Ok(())
    })?;

    // Lay out every file: table, preamble, key, runs.
    for p in &mut plans {
        let content_id = model_key
            .content_id(&p.rel, &p.sha3)
            .map_err(|e| core_err(&p.rel, e))?;
        let (tensor_count, table_len, specs_owned);
        match &p.header {
            Some(h) => {
                let base = h.raw.len() as u64;
                let entries: Vec<TensorEntry<'_>> = h
                    .tensors
                    .iter()
                    .map(|t| {
                        Ok(TensorEntry {
                            name: &t.name,
                            dtype: t.dtype,
                            shape: heapless::Vec::from_slice(&t.shape)
                                .map_err(|_| Error::bad_input(&p.rel, "too many dimensions"))?,
                            data_offset: t.begin,
                        })
                    })
                    .collect::<Result<_>>()?;
                let cap = h.raw.len() + 16 + entries.len() * (pqcc_core::wire::MAX_RANK * 10 + 160);
                let mut table = vec![0u8; cap];
                let n = fmt::Table::emit(&h.raw, entries.iter(), &mut table)
                    .map_err(|e| core_err(&p.rel, e))?;
                table.truncate(n);
                if table.len() as u64 > fmt::MAX_TABLE_LEN {
                    return Err(Error::bad_input(&p.rel, "header too large to seal"));
                }
                tensor_count = u32::try_from(entries.len())
                    .ok()
                    .filter(|&c| c <= fmt::MAX_TENSORS)
                    .ok_or_else(|| Error::bad_input(&p.rel, "too many tensors"))?;
                table_len = table.len() as u64;
                p.table = table;
                specs_owned = h
                    .tensors
                    .iter()
                    .map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice(), base + t.begin))
                    .collect::<Vec<_>>();
            }
            None => {
                tensor_count = 0;
                table_len = 0;
                specs_owned = Vec::new();
            }
        }
        let specs: Vec<TensorSpec<'_>> = specs_owned
            .iter()
            .map(|&(name, dtype, shape, plain_off)| TensorSpec {
                name,
                dtype,
                shape,
                plain_off,
            })
            .collect();
        let (runs, total, frame_count) = match p.kind {
            FileKind::Safetensors => {
                layout::lay_out(PREAMBLE_LEN as u64, fs, Some(table_len), &specs, None)
            }
            _ => layout::lay_out(PREAMBLE_LEN as u64, fs, None, &[], Some(p.len)),
        }
        .map_err(|e| core_err(&p.rel, e))?;
        let pre = Preamble {
            kind: p.kind,
            frame_size: fs,
            key_id,
            salt,
            content_id,
            tensor_count,
            table_len,
            data_len: p.len,
            frame_count,
        };
        pre.validate().map_err(|e| core_err(&p.rel, e))?;
        p.preamble = pre.emit();
        p.key = Some(
            model_key
                .file_key(&p.rel, &p.preamble)
                .map_err(|e| core_err(&p.rel, e))?,
        );
        p.runs = runs;
        p.total = total;
    }

    // Create every output file at its final length, preamble in place.
    let mut outs = Vec::with_capacity(plans.len() + 1);
    for p in &plans {
        let (f, path) = tmp.create_file(&format!("{}{SEALED_SUFFIX}", p.rel))?;
        f.set_len(p.total)
            .map_err(|e| Error::io(&path, "sizing", e))?;
        write_at(&f, &path, 0, &p.preamble)?;
        outs.push((f, path));
    }

    // Pass 2: every frame of every file, in parallel.
    let mut jobs: Vec<(usize, FramePos)> = Vec::new();
    for (fi, p) in plans.iter().enumerate() {
        for (ri, r) in p.runs.iter().enumerate() {
            let fr = layout::frames(ri, r, fs).map_err(|e| core_err(&p.rel, e))?;
            jobs.extend(fr.into_iter().map(|f| (fi, f)));
        }
    }
    let ciphers: Vec<FileCipher<CpuAead>> = plans
        .iter()
        .map(|p| FileCipher::new(p.key.as_ref().expect("every plan has its key")))
        .collect();
    let srcs: Vec<File> = plans
        .iter()
        .map(|p| File::open(&p.src).map_err(|e| Error::io(&p.src, "opening", e)))
        .collect::<Result<_>>()?;
    let fsz = fs as usize;
    jobs.par_iter().try_for_each_init(
        || {
            (
                Zeroizing::new(vec![0u8; fsz]),
                vec![0u8; fsz + FRAME_HEADER_MAX_LEN + TAG_LEN],
            )
        },
        |(plain, frame), &(fi, fp)| -> Result<()> {
            let p = &plans[fi];
            let run = &p.runs[fp.run];
            let pt = &mut plain[..fp.chunk_len];
            match run.plain_off {
                None => {
                    let s = layout::us(fp.chunk_off);
                    pt.copy_from_slice(&p.table[s..s + fp.chunk_len]);
                }
                Some(base) => read_at(&srcs[fi], &p.src, base + fp.chunk_off, pt)?,
            }
            let fr = run.frame_run(fs).map_err(|e| core_err(&p.rel, e))?;
            let n = ciphers[fi]
                .seal_frame_from(&fr, fp.frame, pt, frame)
                .map_err(|e| core_err(&p.rel, e))?;
            debug_assert_eq!(n, fp.sealed_len);
            write_at(&outs[fi].0, &outs[fi].1, fp.sealed_off, &frame[..n])?;
            if run.plain_off.is_some() {
                bar.inc(fp.chunk_len as u64);
            }
            Ok(())
        },
    )?;
    bar.finish_and_clear();

    // The manifest.
    let mentries: Vec<ManifestEntry<'_>> = plans
        .iter()
        .map(|p| {
            Ok(ManifestEntry {
                path: &p.rel,
                kind: p.kind,
                len: p.len,
                content_id: Preamble::parse(&p.preamble)
                    .map_err(|e| core_err(&p.rel, e))?
                    .content_id,
            })
        })
        .collect::<Result<_>>()?;
    let mut mbuf = vec![0u8; 64 + opts.model_id.len() + mentries.len() * (fmt::MAX_PATH_LEN + 64)];
    let n = fmt::Manifest::emit(&opts.model_id, mentries.iter(), &mut mbuf)
        .map_err(|e| core_err(MANIFEST_PATH, e))?;
    mbuf.truncate(n);
    let (mf, mpath) = tmp.create_file(MANIFEST_FILE)?;
    let msealed = write_manifest(
        &mf,
        &mpath,
        &model_key,
        &key_id,
        &salt,
        fs,
        &opts.model_id,
        &mbuf,
    )?;
    outs.push((mf, mpath));

    let summary = SealSummary {
        out: out.to_path_buf(),
        model_id: opts.model_id.clone(),
        key_id: hex::encode(key_id),
        salt: hex::encode(salt),
        files: plans.len(),
        tensors: plans
            .iter()
            .filter_map(|p| p.header.as_ref())
            .map(|h| h.tensors.len())
            .sum(),
        plain_bytes,
        sealed_bytes: plans.iter().map(|p| p.total).sum::<u64>() + msealed,
    };
    tmp.commit(&outs)?;
    Ok(summary)
}

/// Writes the sealed manifest: preamble ‖ u16 LE id length ‖ model id ‖ frames.
#[allow(clippy::too_many_arguments)]
fn write_manifest(
    f: &File,
    path: &Path,
    model_key: &ModelKey,
    key_id: &[u8; 32],
    salt: &[u8; 32],
    fs: u32,
    model_id: &str,
    manifest: &[u8],
) -> Result<u64> {
    let sha3 = pqcc_core::hash::sha3_256(&[manifest]);
    let content_id = model_key
        .content_id(MANIFEST_PATH, &sha3)
        .map_err(|e| core_err(MANIFEST_PATH, e))?;
    let frames_start = (PREAMBLE_LEN + 2 + model_id.len()) as u64;
    let (runs, total, frame_count) =
        layout::lay_out(frames_start, fs, None, &[], Some(manifest.len() as u64))
            .map_err(|e| core_err(MANIFEST_PATH, e))?;
    let pre = Preamble {
        kind: FileKind::Manifest,
        frame_size: fs,
        key_id: *key_id,
        salt: *salt,
        content_id,
        tensor_count: 0,
        table_len: 0,
        data_len: manifest.len() as u64,
        frame_count,
    }
    .emit();
    let key = model_key
        .file_key(MANIFEST_PATH, &pre)
        .map_err(|e| core_err(MANIFEST_PATH, e))?;
    let c = FileCipher::<CpuAead>::new(&key);
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    out.extend_from_slice(&pre);
    let idlen =
        u16::try_from(model_id.len()).map_err(|_| Error::Usage("model id too long".into()))?;
    out.extend_from_slice(&idlen.to_le_bytes());
    out.extend_from_slice(model_id.as_bytes());
    let fr = runs[0]
        .frame_run(fs)
        .map_err(|e| core_err(MANIFEST_PATH, e))?;
    let mut frame = vec![0u8; fs as usize + FRAME_HEADER_MAX_LEN + TAG_LEN];
    for fp in layout::frames(0, &runs[0], fs).map_err(|e| core_err(MANIFEST_PATH, e))? {
        let s = layout::us(fp.chunk_off);
        let n = c
            .seal_frame_from(&fr, fp.frame, &manifest[s..s + fp.chunk_len], &mut frame)
            .map_err(|e| core_err(MANIFEST_PATH, e))?;
        out.extend_from_slice(&frame[..n]);
    }
    debug_assert_eq!(out.len() as u64, total);
    write_at(f, path, 0, &out)?;
    Ok(total)
}

pub(crate) fn progress_bar(enabled: bool, total: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !enabled || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(total);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b
}
