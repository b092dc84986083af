//! Opening a sealed model: the manifest, every file's preamble and table, then blobs
//! and tensors on demand; and unsealing it back to the original files.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fs::File,
    path::{Path, PathBuf},
};

use pqcc_core::{
    aead::TAG_LEN,
    hash::Sha3_256Stream,
    sealed::{
        self as fmt, FileCipher, FileKey, FileKind, MANIFEST_PATH, ModelKey, PREAMBLE_LEN, Preamble,
    },
    secret::Secret,
    wire::{DType, FRAME_HEADER_MAX_LEN},
};
use rayon::prelude::*;
use zeroize::Zeroizing;

use crate::{
    CpuAead, Error, MANIFEST_FILE, Result, SEALED_SUFFIX,
    error::frame_reason,
    io::{TempDir, read_at, write_at},
    layout::{self, FramePos, Run, TensorSpec},
};

/// A tensor being opened: name, dtype, shape, destination.
type TensorBuf = (String, DType, Vec<u64>, Zeroizing<Vec<u8>>);

/// Largest manifest accepted (its plaintext).
const MAX_MANIFEST_LEN: u64 = 64 * 1024 * 1024;

/// Plaintext in host memory, zeroized when dropped.
pub struct Plaintext(Zeroizing<Vec<u8>>);

impl Plaintext {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Plaintext({} bytes, <redacted>)", self.0.len())
    }
}

/// One opened tensor in host memory (zeroized when dropped).
pub struct HostTensor {
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<u64>,
    data: Zeroizing<Vec<u8>>,
}

impl HostTensor {
    /// The tensor's bytes (little-endian elements, as in safetensors).
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

impl std::fmt::Debug for HostTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HostTensor({:?} {:?}, <redacted>)",
            self.dtype, self.shape
        )
    }
}

/// Every tensor of a sealed model, opened into host memory, by name.
pub type HostTensors = BTreeMap<String, HostTensor>;

/// A tensor of a sealed model, as its table says (nothing opened yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<u64>,
    /// Length in bytes.
    pub len: u64,
    /// The original file it belongs to (relative path).
    pub file: String,
}

/// One file of a sealed model, checked: its preamble, its key, its table, where its
/// frames lie.
pub struct SealedFile {
    /// Relative path of the original file.
    pub path: String,
    /// What it holds.
    pub kind: FileKind,
    /// Length of the original file.
    pub len: u64,
    sealed_path: PathBuf,
    preamble: Preamble,
    key: FileKey,
    runs: Vec<Run>,
    /// The original safetensors header bytes (safetensors only).
    original_header: Vec<u8>,
}

impl std::fmt::Debug for SealedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedFile")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("len", &self.len)
            .field("tensors", &self.tensor_runs().count())
            .finish()
    }
}

impl SealedFile {
    /// The sealed file on disk.
    pub fn sealed_path(&self) -> &Path {
        &self.sealed_path
    }

    /// The file's frame size.
    pub fn frame_size(&self) -> u32 {
        self.preamble.frame_size
    }

    /// The file's AES-256-GCM key and nonce prefix (for openers outside this crate,
    /// such as the GPU's).
    pub fn key(&self) -> &FileKey {
        &self.key
    }

    fn tensor_runs(&self) -> impl Iterator<Item = &Run> {
        self.runs
            .iter()
            .filter(|r| self.kind == FileKind::Safetensors && r.plain_off.is_some())
    }

    /// Where each frame of tensor `name` lies in the sealed file (`ciphertext ‖ tag`),
    /// in order, with the header that is its AAD: `header ‖ ciphertext ‖ tag` is the
    /// channel frame an opener outside this crate (the GPU's) opens with [`Self::key`].
    pub fn tensor_frames(&self, name: &str) -> Option<Result<Vec<FrameLoc>>> {
        let (ri, run) = self
            .runs
            .iter()
            .enumerate()
            .find(|(_, r)| r.plain_off.is_some() && r.name == name)?;
        Some(self.frame_locs(ri, run))
    }

    fn frame_locs(&self, ri: usize, run: &Run) -> Result<Vec<FrameLoc>> {
        let fs = self.preamble.frame_size;
        let fr = run
            .frame_run(fs)
            .map_err(|e| self.bad(Some(&run.name), e))?;
        layout::frames(ri, run, fs)
            .map_err(|e| self.bad(Some(&run.name), e))?
            .into_iter()
            .map(|p| {
                let mut h = [0u8; FRAME_HEADER_MAX_LEN];
                let n = fr
                    .header(p.frame, &mut h)
                    .map_err(|e| self.bad(Some(&run.name), e))?;
                Ok(FrameLoc {
                    offset: p.sealed_off,
                    len: p.sealed_len,
                    header: h[..n].to_vec(),
                    plain_offset: p.chunk_off,
                    plain_len: p.chunk_len,
                    seq: run.first_seq + p.frame,
                })
            })
            .collect()
    }

    fn bad(&self, tensor: Option<&str>, e: pqcc_core::Error) -> Error {
        Error::refused(&self.path, tensor, format!("{e}"))
    }
}

/// Where one frame lies and what its header must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameLoc {
    /// Offset of the frame (`ciphertext ‖ tag`) in the sealed file.
    pub offset: u64,
    /// Length of the frame on disk (ciphertext and tag).
    pub len: usize,
    /// The channel frame header that is the frame's AAD (not stored on disk).
    pub header: Vec<u8>,
    /// Offset of its plaintext within the tensor.
    pub plain_offset: u64,
    /// Length of its plaintext.
    pub plain_len: usize,
    /// Its sequence number (the nonce's counter).
    pub seq: u64,
}

/// An opened sealed model: the manifest verified and every file's preamble and table
/// checked. Tensors and blobs are opened on request.
pub struct SealedModel {
    dir: PathBuf,
    model_id: String,
    files: Vec<SealedFile>,
}

impl std::fmt::Debug for SealedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedModel")
            .field("dir", &self.dir)
            .field("model_id", &self.model_id)
            .field("files", &self.files)
            .finish()
    }
}

fn check_key_id(path: &str, pre: &Preamble, dek: &Secret<32>) -> Result<()> {
    let given = fmt::key_id(dek);
    if !pqcc_core::secret::ct_eq(&given, &pre.key_id) {
        return Err(Error::WrongKey {
            path: path.to_owned(),
            sealed_for: hex::encode(pre.key_id),
            given: hex::encode(given),
        });
    }
    Ok(())
}

fn read_preamble(f: &File, path: &Path, shown: &str) -> Result<(Preamble, [u8; PREAMBLE_LEN])> {
    let mut b = [0u8; PREAMBLE_LEN];
    read_at(f, path, 0, &mut b)?;
    let p = Preamble::parse(&b).map_err(|e| {
        Error::refused(
            shown,
            None,
            format!("not a pqcc sealed file or damaged preamble: {e}"),
        )
    })?;
    Ok((p, b))
}

/// Opens every frame of `run` into one buffer (tables, blobs, the manifest).
fn open_run_whole(
    f: &File,
    sealed_path: &Path,
    shown: &str,
    key: &FileKey,
    run: &Run,
    ri: usize,
    fs: u32,
) -> Result<Zeroizing<Vec<u8>>> {
    let c = FileCipher::<CpuAead>::new(key);
    let fr = run
        .frame_run(fs)
        .map_err(|e| Error::refused(shown, None, format!("{e}")))?;
    let mut out = Zeroizing::new(vec![0u8; usize::try_from(run.len).unwrap_or(usize::MAX)]);
    let mut frame = Zeroizing::new(vec![0u8; fs as usize + FRAME_HEADER_MAX_LEN + TAG_LEN]);
    for p in layout::frames(ri, run, fs).map_err(|e| Error::refused(shown, None, format!("{e}")))? {
        let buf = &mut frame[..p.sealed_len];
        read_at(f, sealed_path, p.sealed_off, buf).map_err(|e| rename(e, shown))?;
        let pt = c
            .open_frame(&fr, p.frame, buf)
            .map_err(|e| Error::refused(shown, None, frame_reason(e, run.first_seq + p.frame)))?;
        let s = layout::us(p.chunk_off);
        out[s..s + p.chunk_len].copy_from_slice(pt);
    }
    Ok(out)
}

/// Gives a refusal from the I/O layer (which names the on-disk path) the file's name.
fn rename(e: Error, shown: &str) -> Error {
    match e {
        Error::Refused { tensor, reason, .. } => Error::Refused {
            path: shown.to_owned(),
            tensor,
            reason,
        },
        e => e,
    }
}

fn check_len(f: &File, sealed_path: &Path, shown: &str, want: u64) -> Result<()> {
    let got = f
        .metadata()
        .map_err(|e| Error::io(sealed_path, "stat", e))?
        .len();
    if got < want {
        return Err(Error::refused(
            shown,
            None,
            format!("truncated: {got} bytes where the layout needs {want}"),
        ));
    }
    if got > want {
        return Err(Error::refused(
            shown,
            None,
            format!("{} bytes after the last frame", got - want),
        ));
    }
    Ok(())
}

impl SealedModel {
    /// Opens the sealed model in `dir` with `dek`. When `expected_model` is given, the
    /// model must be exactly that `name@revision`. Checks the manifest and, for every
    /// file it lists, that the sealed file exists, carries the key id of `dek`, the
    /// model's salt and the content id the manifest names, has exactly the length its
    /// layout requires, and (safetensors) that its table opens and parses. Nothing of
    /// the tensors is decrypted yet.
    pub fn open(dir: &Path, dek: &Secret<32>, expected_model: Option<&str>) -> Result<Self> {
        let mpath = dir.join(MANIFEST_FILE);
        let f = File::open(&mpath).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::refused(MANIFEST_FILE, None, "missing: not a sealed model directory")
            } else {
                Error::io(&mpath, "opening", e)
            }
        })?;
        let (pre, pre_bytes) = read_preamble(&f, &mpath, MANIFEST_FILE)?;
        if pre.kind != FileKind::Manifest {
            return Err(Error::refused(MANIFEST_FILE, None, "not a manifest"));
        }
        check_key_id(MANIFEST_FILE, &pre, dek)?;
        if pre.data_len > MAX_MANIFEST_LEN {
            return Err(Error::refused(MANIFEST_FILE, None, "manifest too large"));
        }
        let mut l = [0u8; 2];
        read_at(&f, &mpath, PREAMBLE_LEN as u64, &mut l).map_err(|e| rename(e, MANIFEST_FILE))?;
        let idlen = usize::from(u16::from_le_bytes(l));
        if idlen > fmt::MAX_MODEL_ID_LEN {
            return Err(Error::refused(MANIFEST_FILE, None, "model id too long"));
        }
        let mut id = vec![0u8; idlen];
        read_at(&f, &mpath, PREAMBLE_LEN as u64 + 2, &mut id)
            .map_err(|e| rename(e, MANIFEST_FILE))?;
        let model_id = String::from_utf8(id)
            .map_err(|_| Error::refused(MANIFEST_FILE, None, "model id is not UTF-8"))?;
        if let Some(want) = expected_model
            && want != model_id
        {
            return Err(Error::refused(
                MANIFEST_FILE,
                None,
                format!("sealed for model {model_id}, expected {want}"),
            ));
        }
        let model_key = ModelKey::derive(dek, &pre.salt, &model_id)
            .map_err(|_| Error::refused(MANIFEST_FILE, None, "model id is not name@revision"))?;
        let mkey = model_key
            .file_key(MANIFEST_PATH, &pre_bytes)
            .map_err(|e| Error::refused(MANIFEST_FILE, None, format!("{e}")))?;
        let start = (PREAMBLE_LEN + 2 + idlen) as u64;
        let (runs, total, frames) =
            layout::lay_out(start, pre.frame_size, None, &[], Some(pre.data_len))
                .map_err(|e| Error::refused(MANIFEST_FILE, None, format!("{e}")))?;
        if frames != pre.frame_count {
            return Err(Error::refused(
                MANIFEST_FILE,
                None,
                "frame count does not match",
            ));
        }
        check_len(&f, &mpath, MANIFEST_FILE, total)?;
        let mbytes = open_run_whole(
            &f,
            &mpath,
            MANIFEST_FILE,
            &mkey,
            &runs[0],
            0,
            pre.frame_size,
        )?;
        let sha3 = pqcc_core::hash::sha3_256(&[&mbytes]);
        let cid = model_key
            .content_id(MANIFEST_PATH, &sha3)
            .map_err(|e| Error::refused(MANIFEST_FILE, None, format!("{e}")))?;
        if cid != pre.content_id {
            return Err(Error::refused(
                MANIFEST_FILE,
                None,
                "content id does not match",
            ));
        }
        let manifest = fmt::Manifest::parse(&mbytes)
            .map_err(|e| Error::refused(MANIFEST_FILE, None, format!("malformed manifest: {e}")))?;
        if manifest.model_id != model_id {
            return Err(Error::refused(
                MANIFEST_FILE,
                None,
                "model id inside differs from the one outside",
            ));
        }

        let mut files = Vec::with_capacity(manifest.count() as usize);
        for e in manifest.entries() {
            let e = e.map_err(|e| Error::refused(MANIFEST_FILE, None, format!("{e}")))?;
            files.push(open_file(dir, dek, &model_key, &pre.salt, &e)?);
        }
        let mut names = HashSet::new();
        for sf in &files {
            for r in sf.tensor_runs() {
                if !names.insert(r.name.as_str()) {
                    return Err(Error::refused(
                        &sf.path,
                        Some(&r.name),
                        "a tensor of this name is in another file too",
                    ));
                }
            }
        }
        let model = Self {
            dir: dir.to_path_buf(),
            model_id,
            files,
        };
        model.check_indexes()?;
        Ok(model)
    }

    /// Every `*.safetensors.index.json` must name only shards and tensors that exist.
    fn check_indexes(&self) -> Result<()> {
        let names: BTreeMap<String, BTreeSet<String>> = self
            .files
            .iter()
            .filter(|f| f.kind == FileKind::Safetensors)
            .map(|f| {
                (
                    f.path.clone(),
                    f.tensor_runs().map(|r| r.name.clone()).collect(),
                )
            })
            .collect();
        for f in self.files.iter().filter(|f| crate::hf::is_index(&f.path)) {
            let text = self.read_file(&f.path)?;
            crate::hf::check_index(&f.path, text.as_slice(), &names).map_err(|r| {
                Error::refused(
                    &f.path,
                    None,
                    r.trim_start_matches(&format!("{}: ", f.path)),
                )
            })?;
        }
        Ok(())
    }

    /// The model id `name@revision`.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The sealed directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every file, in path order.
    pub fn files(&self) -> &[SealedFile] {
        &self.files
    }

    /// The file with this relative path.
    pub fn file(&self, path: &str) -> Option<&SealedFile> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Every tensor of every safetensors file, in file and data order.
    pub fn tensors(&self) -> Vec<TensorInfo> {
        self.files
            .iter()
            .flat_map(|f| {
                f.tensor_runs().map(|r| TensorInfo {
                    name: r.name.clone(),
                    dtype: r.dtype,
                    shape: r.shape.clone(),
                    len: r.len,
                    file: f.path.clone(),
                })
            })
            .collect()
    }

    /// Opens one whole original file into memory (a blob as it was; a safetensors
    /// file reassembled byte for byte). Meant for small files (config, tokenizer).
    pub fn read_file(&self, path: &str) -> Result<Plaintext> {
        let sf = self
            .file(path)
            .ok_or_else(|| Error::refused(path, None, "not in the sealed model's manifest"))?;
        let len = usize::try_from(sf.len)
            .map_err(|_| Error::refused(path, None, "too large for memory"))?;
        let mut out = Zeroizing::new(vec![0u8; len]);
        if sf.kind == FileKind::Safetensors {
            out[..sf.original_header.len()].copy_from_slice(&sf.original_header);
        }
        let jobs = plan_jobs(&[sf])?;
        let dests = split_dest(&mut out, sf, &jobs);
        run_open_jobs(&[sf], jobs, dests)?;
        Ok(Plaintext(out))
    }

    /// Opens every tensor of every safetensors file into host memory, on every core.
    /// Any failure fails the whole load; what was opened is zeroized.
    pub fn load_tensors(&self) -> Result<HostTensors> {
        let sts: Vec<&SealedFile> = self
            .files
            .iter()
            .filter(|f| f.kind == FileKind::Safetensors)
            .collect();
        let mut bufs: Vec<Vec<TensorBuf>> = sts
            .iter()
            .map(|sf| {
                sf.tensor_runs()
                    .map(|r| {
                        Ok((
                            r.name.clone(),
                            r.dtype,
                            r.shape.clone(),
                            Zeroizing::new(vec![
                                0u8;
                                usize::try_from(r.len).map_err(|_| {
                                    Error::refused(&sf.path, Some(&r.name), "too large for memory")
                                })?
                            ]),
                        ))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        {
            let mut jobs = Vec::new();
            let mut dests: Vec<&mut [u8]> = Vec::new();
            for (fi, (sf, tb)) in sts.iter().zip(bufs.iter_mut()).enumerate() {
                let mut it = tb.iter_mut();
                for (ri, r) in sf.runs.iter().enumerate() {
                    if r.plain_off.is_none() {
                        continue;
                    }
                    let (_, _, _, buf) = it.next().expect("one buffer per tensor run");
                    let fs = sf.preamble.frame_size as usize;
                    let frames = layout::frames(ri, r, sf.preamble.frame_size)
                        .map_err(|e| sf.bad(Some(&r.name), e))?;
                    let mut rest: &mut [u8] = &mut buf[..];
                    for p in frames {
                        let (d, tail) = rest.split_at_mut(p.chunk_len.min(fs));
                        rest = tail;
                        jobs.push((fi, p));
                        dests.push(d);
                    }
                }
            }
            run_open_jobs(&sts, jobs, dests)?;
        }
        let mut out = BTreeMap::new();
        for (name, dtype, shape, data) in bufs.into_iter().flatten() {
            out.insert(name, HostTensor { dtype, shape, data });
        }
        Ok(out)
    }
}

fn open_file(
    dir: &Path,
    dek: &Secret<32>,
    model_key: &ModelKey,
    salt: &[u8; 32],
    e: &fmt::ManifestEntry<'_>,
) -> Result<SealedFile> {
    let shown = e.path;
    let sealed_path = dir.join(format!("{}{SEALED_SUFFIX}", e.path));
    let f = File::open(&sealed_path).map_err(|err| {
        if err.kind() == std::io::ErrorKind::NotFound {
            Error::refused(
                format!("{}{SEALED_SUFFIX}", e.path),
                None,
                "missing: the manifest lists it",
            )
        } else {
            Error::io(&sealed_path, "opening", err)
        }
    })?;
    let (pre, pre_bytes) = read_preamble(&f, &sealed_path, shown)?;
    check_key_id(shown, &pre, dek)?;
    if pre.salt != *salt {
        return Err(Error::refused(
            shown,
            None,
            "sealed with another salt (a file of another sealing of this model)",
        ));
    }
    if pre.kind != e.kind || pre.content_id != e.content_id || pre.data_len != e.len {
        return Err(Error::refused(
            shown,
            None,
            "not the file the manifest lists (another version of it, or another file renamed)",
        ));
    }
    let key = model_key
        .file_key(e.path, &pre_bytes)
        .map_err(|err| Error::refused(shown, None, format!("{err}")))?;
    let fs = pre.frame_size;
    let layout_err = |err: pqcc_core::Error| Error::refused(shown, None, format!("layout: {err}"));
    let (runs, total, frames, original_header) = match pre.kind {
        FileKind::Safetensors => {
            let (truns, _, _) =
                layout::lay_out(PREAMBLE_LEN as u64, fs, Some(pre.table_len), &[], None)
                    .map_err(layout_err)?;
            let tbytes = open_run_whole(&f, &sealed_path, shown, &key, &truns[0], 0, fs)?;
            let table = fmt::Table::parse(&tbytes, pre.tensor_count).map_err(|err| {
                Error::refused(shown, None, format!("malformed tensor table: {err}"))
            })?;
            let base = table.original_header.len() as u64;
            if base.checked_add(table.data_len()) != Some(pre.data_len) {
                return Err(Error::refused(
                    shown,
                    None,
                    "the table's tensors do not add up to the file's length",
                ));
            }
            let entries: Vec<fmt::TensorEntry<'_>> = table
                .entries()
                .collect::<std::result::Result<_, _>>()
                .map_err(|err| Error::refused(shown, None, format!("tensor table: {err}")))?;
            let specs: Vec<TensorSpec<'_>> = entries
                .iter()
                .map(|t| TensorSpec {
                    name: t.name,
                    dtype: t.dtype,
                    shape: &t.shape,
                    plain_off: base + t.data_offset,
                })
                .collect();
            let (runs, total, frames) =
                layout::lay_out(PREAMBLE_LEN as u64, fs, Some(pre.table_len), &specs, None)
                    .map_err(layout_err)?;
            (runs, total, frames, table.original_header.to_vec())
        }
        FileKind::Blob => {
            let (runs, total, frames) =
                layout::lay_out(PREAMBLE_LEN as u64, fs, None, &[], Some(pre.data_len))
                    .map_err(layout_err)?;
            (runs, total, frames, Vec::new())
        }
        FileKind::Manifest => {
            return Err(Error::refused(
                shown,
                None,
                "a manifest where a model file belongs",
            ));
        }
    };
    if frames != pre.frame_count {
        return Err(Error::refused(
            shown,
            None,
            "frame count does not match the layout",
        ));
    }
    check_len(&f, &sealed_path, shown, total)?;
    Ok(SealedFile {
        path: e.path.to_owned(),
        kind: pre.kind,
        len: pre.data_len,
        sealed_path,
        preamble: pre,
        key,
        runs,
        original_header,
    })
}

/// Every data frame (not the table) of `files`, as (file index, frame).
fn plan_jobs(files: &[&SealedFile]) -> Result<Vec<(usize, FramePos)>> {
    let mut jobs = Vec::new();
    for (fi, sf) in files.iter().enumerate() {
        for (ri, r) in sf.runs.iter().enumerate() {
            if r.plain_off.is_none() {
                continue;
            }
            let fr = layout::frames(ri, r, sf.preamble.frame_size)
                .map_err(|e| sf.bad(Some(&r.name), e))?;
            jobs.extend(fr.into_iter().map(|p| (fi, p)));
        }
    }
    Ok(jobs)
}

/// Splits `out` (the whole original file) into one destination per job, in job order.
fn split_dest<'o>(
    out: &'o mut [u8],
    sf: &SealedFile,
    jobs: &[(usize, FramePos)],
) -> Vec<&'o mut [u8]> {
    // Jobs are in file order and cover the data exactly after the header.
    let (_, mut rest) = out.split_at_mut(sf.original_header.len());
    let mut v = Vec::with_capacity(jobs.len());
    for (_, p) in jobs {
        let (d, tail) = rest.split_at_mut(p.chunk_len);
        v.push(d);
        rest = tail;
    }
    v
}

/// Opens every job's frame straight into its destination: header and tag read beside
/// it, the ciphertext read into the destination and decrypted in place. On any
/// failure every destination is zeroed and the first error (in job order) returned.
fn run_open_jobs(
    files: &[&SealedFile],
    jobs: Vec<(usize, FramePos)>,
    mut dests: Vec<&mut [u8]>,
) -> Result<()> {
    let handles: Vec<File> = files
        .iter()
        .map(|sf| File::open(&sf.sealed_path).map_err(|e| Error::io(&sf.sealed_path, "opening", e)))
        .collect::<Result<_>>()?;
    let ciphers: Vec<FileCipher<CpuAead>> =
        files.iter().map(|sf| FileCipher::new(&sf.key)).collect();
    let results: Vec<Result<()>> = jobs
        .par_iter()
        .zip(dests.par_iter_mut())
        .map(|(&(fi, p), dest)| {
            let sf = files[fi];
            let run = &sf.runs[p.run];
            let fr = run
                .frame_run(sf.preamble.frame_size)
                .map_err(|e| sf.bad(Some(&run.name), e))?;
            let mut tag = [0u8; TAG_LEN];
            let named = |e: Error| match e {
                Error::Refused { reason, .. } => Error::refused(
                    &sf.path,
                    Some(&run.name),
                    format!("frame {}: {reason}", run.first_seq + p.frame),
                ),
                e => e,
            };
            read_at(&handles[fi], &sf.sealed_path, p.sealed_off, dest).map_err(named)?;
            read_at(
                &handles[fi],
                &sf.sealed_path,
                p.sealed_off + p.chunk_len as u64,
                &mut tag,
            )
            .map_err(named)?;
            ciphers[fi]
                .open_parts(&fr, p.frame, dest, &tag)
                .map_err(|e| {
                    Error::refused(
                        &sf.path,
                        Some(&run.name),
                        frame_reason(e, run.first_seq + p.frame),
                    )
                })
        })
        .collect();
    if let Some(e) = results.into_iter().find_map(|r| r.err()) {
        for d in dests.iter_mut() {
            zeroize::Zeroize::zeroize(&mut **d);
        }
        return Err(e);
    }
    Ok(())
}

/// What [`unseal_dir`] wrote.
#[derive(Debug, Clone)]
pub struct UnsealSummary {
    /// The output directory.
    pub out: PathBuf,
    /// The model id.
    pub model_id: String,
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// Unseals the sealed model in `sealed` into the new directory `out`: every original
/// file byte for byte, each checked against its content id (SHA3-256 recomputed over
/// what was written) before the directory appears under its final name.
pub fn unseal_dir(
    sealed: &Path,
    dek: &Secret<32>,
    out: &Path,
    progress: bool,
) -> Result<UnsealSummary> {
    let model = SealedModel::open(sealed, dek, None)?;
    let tmp = TempDir::create(out)?;
    let total: u64 = model.files.iter().map(|f| f.len).sum();
    let bar = crate::seal::progress_bar(progress, total);
    let mut outs = Vec::with_capacity(model.files.len());
    for sf in &model.files {
        let (f, p) = tmp.create_file(&sf.path)?;
        f.set_len(sf.len).map_err(|e| Error::io(&p, "sizing", e))?;
        if !sf.original_header.is_empty() {
            write_at(&f, &p, 0, &sf.original_header)?;
        }
        outs.push((f, p));
    }
    let refs: Vec<&SealedFile> = model.files.iter().collect();
    let jobs = plan_jobs(&refs)?;
    let handles: Vec<File> = refs
        .iter()
        .map(|sf| File::open(&sf.sealed_path).map_err(|e| Error::io(&sf.sealed_path, "opening", e)))
        .collect::<Result<_>>()?;
    let ciphers: Vec<FileCipher<CpuAead>> =
        refs.iter().map(|sf| FileCipher::new(&sf.key)).collect();
    let max_fs = refs
        .iter()
        .map(|f| f.preamble.frame_size)
        .max()
        .unwrap_or(0) as usize;
    jobs.par_iter().try_for_each_init(
        || Zeroizing::new(vec![0u8; max_fs + FRAME_HEADER_MAX_LEN + TAG_LEN]),
        |buf, &(fi, p)| -> Result<()> {
            let sf = refs[fi];
            let run = &sf.runs[p.run];
            let fr = run
                .frame_run(sf.preamble.frame_size)
                .map_err(|e| sf.bad(Some(&run.name), e))?;
            let frame = &mut buf[..p.sealed_len];
            read_at(&handles[fi], &sf.sealed_path, p.sealed_off, frame)
                .map_err(|e| rename(e, &sf.path))?;
            let pt = ciphers[fi].open_frame(&fr, p.frame, frame).map_err(|e| {
                Error::refused(
                    &sf.path,
                    Some(&run.name),
                    frame_reason(e, run.first_seq + p.frame),
                )
            })?;
            let base = run.plain_off.unwrap_or(0);
            write_at(&outs[fi].0, &outs[fi].1, base + p.chunk_off, pt)?;
            bar.inc(p.chunk_len as u64);
            Ok(())
        },
    )?;
    bar.finish_and_clear();
    // The owner's check: what was written hashes to the content id sealed in.
    let model_key_check: Vec<Result<()>> = refs
        .par_iter()
        .zip(outs.par_iter())
        .map(|(sf, (f, p))| {
            let mut h = Sha3_256Stream::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut off = 0;
            while off < sf.len {
                let n = layout::us((sf.len - off).min(buf.len() as u64));
                read_at(f, p, off, &mut buf[..n])?;
                h.update(&buf[..n]);
                off += n as u64;
            }
            let (sha3, _) = h.finish();
            let mk = ModelKey::derive(dek, &sf.preamble.salt, &model.model_id)
                .map_err(|e| sf.bad(None, e))?;
            let cid = mk
                .content_id(&sf.path, &sha3)
                .map_err(|e| sf.bad(None, e))?;
            if cid != sf.preamble.content_id {
                return Err(Error::refused(
                    &sf.path,
                    None,
                    "unsealed bytes do not hash to the sealed content id",
                ));
            }
            Ok(())
        })
        .collect();
    for r in model_key_check {
        r?;
    }
    let summary = UnsealSummary {
        out: out.to_path_buf(),
        model_id: model.model_id.clone(),
        files: model.files.len(),
        bytes: total,
    };
    tmp.commit(&outs)?;
    Ok(summary)
}
