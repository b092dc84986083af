//! `pqcc-workload`: pqcc's inference workload. A Llama-architecture transformer
//! (candle's `candle_transformers::models::llama`, on the CPU) whose weights, config
//! and tokenizer come out of a sealed Hugging Face model directory (`pqcc-sealed`) and
//! open only with the model owner's data-encryption key, which the broker releases to
//! an attested guest.
//!
//! - [`load_sealed`] opens a sealed directory with the key: every tensor, `config.json`,
//!   `tokenizer.json` and (when present) `generation_config.json`, all authenticated,
//!   all-or-nothing.
//! - [`load_plain`] reads an ordinary Hugging Face directory (`model.safetensors`, or
//!   shards named by `model.safetensors.index.json`): the same files, handed to the
//!   same builder, so a real checkpoint can be tried with or without sealing.
//! - Both end in one function that parses `config.json` into candle's `LlamaConfig`,
//!   checks every tensor the config implies (name, shape), builds a
//!   `VarBuilder::from_tensors` over the opened bytes, `Llama::load`s it and loads the
//!   tokenizer from `tokenizer.json` ([`Model`]).
//! - [`Model::generate`] runs the prompt and samples tokens (KV cache, seeded).
//! - [`train()`] makes the demo's tiny model: a genuine Hugging Face Llama directory
//!   trained on a text corpus with a byte-level tokenizer (`docs/workload.md`).
//!
//! Plaintext weights opened from a sealed model ([`pqcc_sealed::HostTensor`]) are
//! zeroized when dropped; the copies candle makes for computing are not (they live as
//! long as the [`Model`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::llama::{Cache, Config, Llama, LlamaConfig, LlamaEosToks};
use pqcc_core::secret::Secret;
use pqcc_core::wire::DType as WireDType;
use tokenizers::Tokenizer;

pub mod train;
pub use train::{TrainOptions, TrainSummary, train};

/// An error: what failed, in one line. Never holds key material.
#[derive(Debug)]
pub enum Error {
    /// Opening the sealed model failed (wrong key, tampering, a missing file…).
    Sealed(pqcc_sealed::Error),
    /// The model's files are not a usable Llama checkpoint.
    Model(String),
    /// Reading or writing a file failed.
    Io(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sealed(e) => write!(f, "sealed model: {e}"),
            Self::Model(m) | Self::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<pqcc_sealed::Error> for Error {
    fn from(e: pqcc_sealed::Error) -> Self {
        Self::Sealed(e)
    }
}

impl Error {
    /// True when a sealed model was refused (wrong key, tampered or foreign files).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Sealed(e) if e.is_refusal())
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

fn model_err(what: impl std::fmt::Display) -> impl FnOnce(candle_core::Error) -> Error {
    move |e| Error::Model(format!("{what}: {}", one_line(&e.to_string())))
}

/// candle's errors may carry a backtrace on further lines: the first line says it.
fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_owned()
}

/// Where a model came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A sealed directory, opened with the data-encryption key; the model id it holds.
    Sealed {
        /// The directory.
        dir: PathBuf,
        /// `name@revision` from the sealed manifest.
        model_id: String,
    },
    /// An ordinary (plaintext) Hugging Face directory.
    Plain {
        /// The directory.
        dir: PathBuf,
    },
}

/// What loading found and how long it took.
#[derive(Debug, Clone)]
pub struct LoadInfo {
    /// Where the model came from.
    pub source: Source,
    /// Tensors in the checkpoint.
    pub tensors: usize,
    /// Bytes of tensor data in the checkpoint.
    pub bytes: u64,
    /// Parameters (elements) in the checkpoint.
    pub parameters: u64,
    /// The checkpoint's element types (safetensors names), sorted.
    pub dtypes: Vec<&'static str>,
    /// Seconds spent opening (decrypting) or reading the files.
    pub open_s: f64,
    /// Seconds spent building the model (dtype conversion, `Llama::load`, tokenizer).
    pub build_s: f64,
}

/// What one generation did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated (the end-of-sequence token, if reached, not counted).
    pub tokens: usize,
    /// Seconds for the prompt's forward pass.
    pub prompt_s: f64,
    /// Seconds for the whole generation (prompt included).
    pub total_s: f64,
}

impl Stats {
    /// Generated tokens per second over the whole generation.
    pub fn tokens_per_s(&self) -> f64 {
        if self.total_s > 0.0 {
            self.tokens as f64 / self.total_s
        } else {
            0.0
        }
    }
}

/// A loaded model: candle's Llama, its config, the tokenizer and the sampling settings.
pub struct Model {
    llama: Llama,
    config: Config,
    tokenizer: Tokenizer,
    device: Device,
    eos: Vec<u32>,
    /// How tokens are chosen: from `generation_config.json` (`do_sample`,
    /// `temperature`, `top_k`, `top_p`), greedy when it is absent or says
    /// `do_sample: false`. May be changed before [`Model::generate`].
    pub sampling: Sampling,
    /// What loading found.
    pub info: LoadInfo,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .field("sampling", &self.sampling)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// One tensor as found in a checkpoint: safetensors dtype, shape, little-endian bytes.
struct RawTensor<'a> {
    dtype: WireDType,
    shape: &'a [u64],
    data: &'a [u8],
}

/// The files a model is built from.
struct Parts<'a> {
    source: Source,
    config: &'a [u8],
    tokenizer: &'a [u8],
    generation_config: Option<&'a [u8]>,
    tensors: BTreeMap<String, RawTensor<'a>>,
    open_s: f64,
}

/// Opens the sealed model in `dir` with `dek` and builds it. With `model_id`, the
/// sealed model must be exactly that `name@revision`. Every tensor is opened
/// (authenticated) before any is used; any failure refuses the whole model.
pub fn load_sealed(dir: &Path, dek: &Secret<32>, model_id: Option<&str>) -> Result<Model> {
    let t0 = Instant::now();
    let sealed = pqcc_sealed::SealedModel::open(dir, dek, model_id)?;
    let tensors = sealed.load_tensors()?;
    let config = sealed.read_file("config.json")?;
    let tokenizer = sealed.read_file("tokenizer.json")?;
    let generation_config = match sealed.file("generation_config.json") {
        Some(_) => Some(sealed.read_file("generation_config.json")?),
        None => None,
    };
    let open_s = t0.elapsed().as_secs_f64();
    let parts = Parts {
        source: Source::Sealed {
            dir: dir.to_path_buf(),
            model_id: sealed.model_id().to_owned(),
        },
        config: config.as_slice(),
        tokenizer: tokenizer.as_slice(),
        generation_config: generation_config.as_ref().map(|p| p.as_slice()),
        tensors: tensors
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    RawTensor {
                        dtype: t.dtype,
                        shape: &t.shape,
                        data: t.data(),
                    },
                )
            })
            .collect(),
        open_s,
    };
    build(parts)
    // `tensors`, `config`, `tokenizer`: zeroized here.
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}

/// The safetensors files of a plain Hugging Face directory: the shards that
/// `model.safetensors.index.json` names, else `model.safetensors`, else every
/// `*.safetensors` at the top level.
fn plain_weight_files(dir: &Path) -> Result<Vec<String>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let v: serde_json::Value = serde_json::from_slice(&read(&index)?)
            .map_err(|e| Error::Model(format!("model.safetensors.index.json: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| {
                Error::Model("model.safetensors.index.json: no weight_map object".into())
            })?;
        let mut files: Vec<String> = map
            .values()
            .map(|f| {
                f.as_str().map(str::to_owned).ok_or_else(|| {
                    Error::Model("model.safetensors.index.json: a file is not a string".into())
                })
            })
            .collect::<Result<_>>()?;
        files.sort();
        files.dedup();
        return Ok(files);
    }
    if dir.join("model.safetensors").exists() {
        return Ok(vec!["model.safetensors".into()]);
    }
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::Io(format!("{}: {e}", dir.display())))? {
        let e = e.map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") {
            files.push(name);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::Model(format!(
            "{}: no safetensors weights (model.safetensors, an index, or *.safetensors)",
            dir.display()
        )));
    }
    Ok(files)
}

/// Reads the plain (unsealed) Hugging Face model in `dir` and builds it through the
/// same code as [`load_sealed`].
pub fn load_plain(dir: &Path) -> Result<Model> {
    let t0 = Instant::now();
    let config = read(&dir.join("config.json"))?;
    let tokenizer = read(&dir.join("tokenizer.json"))?;
    let gpath = dir.join("generation_config.json");
    let generation_config = if gpath.exists() {
        Some(read(&gpath)?)
    } else {
        None
    };
    let mut files = Vec::new();
    for name in plain_weight_files(dir)? {
        if name.contains('/') || name.contains("..") {
            return Err(Error::Model(format!(
                "model.safetensors.index.json: {name:?} is not a file beside it"
            )));
        }
        let path = dir.join(&name);
        let f = std::fs::File::open(&path)
            .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        let len = f
            .metadata()
            .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?
            .len();
        let header = pqcc_sealed::safetensors::read_header(&f, &name, len)?;
        let bytes = read(&path)?;
        files.push((name, header, bytes));
    }
    let open_s = t0.elapsed().as_secs_f64();
    let mut tensors = BTreeMap::new();
    for (name, header, bytes) in &files {
        let base = header.raw.len();
        for t in &header.tensors {
            let (b, e) = (
                base + usize::try_from(t.begin).unwrap_or(usize::MAX),
                base + usize::try_from(t.end).unwrap_or(usize::MAX),
            );
            let data = bytes.get(b..e).ok_or_else(|| {
                Error::Model(format!("{name}: tensor {:?} out of the file", t.name))
            })?;
            let raw = RawTensor {
                dtype: t.dtype,
                shape: &t.shape,
                data,
            };
            if tensors.insert(t.name.clone(), raw).is_some() {
                return Err(Error::Model(format!(
                    "tensor {:?} is in more than one safetensors file",
                    t.name
                )));
            }
        }
    }
    build(Parts {
        source: Source::Plain {
            dir: dir.to_path_buf(),
        },
        config: &config,
        tokenizer: &tokenizer,
        generation_config: generation_config.as_deref(),
        tensors,
        open_s,
    })
}

fn candle_dtype(d: WireDType) -> Option<DType> {
    Some(match d {
        WireDType::U8 => DType::U8,
        WireDType::U32 => DType::U32,
        WireDType::I16 => DType::I16,
        WireDType::I32 => DType::I32,
        WireDType::I64 => DType::I64,
        WireDType::F16 => DType::F16,
        WireDType::BF16 => DType::BF16,
        WireDType::F32 => DType::F32,
        WireDType::F64 => DType::F64,
        WireDType::F8E4M3 => DType::F8E4M3,
        _ => return None,
    })
}

/// Every tensor `Llama::load` takes for `cfg`, with its shape (`[out, in]` for linear
/// layers, as Hugging Face stores them).
pub fn expected_tensors(cfg: &Config) -> Vec<(String, Vec<usize>)> {
    let h = cfg.hidden_size;
    let hd = h / cfg.num_attention_heads;
    let q = hd * cfg.num_attention_heads;
    let kv = hd * cfg.num_key_value_heads;
    let i = cfg.intermediate_size;
    let mut v = vec![(
        "model.embed_tokens.weight".to_owned(),
        vec![cfg.vocab_size, h],
    )];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        v.extend([
            (format!("{p}.input_layernorm.weight"), vec![h]),
            (format!("{p}.self_attn.q_proj.weight"), vec![q, h]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.o_proj.weight"), vec![h, q]),
            (format!("{p}.post_attention_layernorm.weight"), vec![h]),
            (format!("{p}.mlp.gate_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.up_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.down_proj.weight"), vec![h, i]),
        ]);
    }
    v.push(("model.norm.weight".to_owned(), vec![h]));
    if !cfg.tie_word_embeddings {
        v.push(("lm_head.weight".to_owned(), vec![cfg.vocab_size, h]));
    }
    v
}

/// Parses and checks `config.json` as candle's `LlamaConfig` (and the Hugging Face
/// fields candle ignores but that change what the weights mean).
fn parse_config(bytes: &[u8]) -> Result<Config> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Error::Model(format!("config.json: {e}")))?;
    if let Some(t) = v.get("model_type").and_then(|t| t.as_str())
        && t != "llama"
    {
        return Err(Error::Model(format!(
            "config.json: model_type {t:?}; this workload runs Llama-architecture models"
        )));
    }
    for (key, ok) in [
        ("attention_bias", serde_json::Value::Bool(false)),
        ("mlp_bias", serde_json::Value::Bool(false)),
        ("hidden_act", serde_json::Value::String("silu".into())),
    ] {
        if let Some(x) = v.get(key)
            && *x != ok
        {
            return Err(Error::Model(format!(
                "config.json: {key} = {x} is not supported (only {ok})"
            )));
        }
    }
    let lc: LlamaConfig = serde_json::from_value(v.clone())
        .map_err(|e| Error::Model(format!("config.json: not a Llama config: {e}")))?;
    let (h, nh) = (lc.hidden_size, lc.num_attention_heads);
    let nkv = lc.num_key_value_heads();
    if h == 0
        || nh == 0
        || nkv == 0
        || !h.is_multiple_of(nh)
        || !nh.is_multiple_of(nkv)
        || !(h / nh).is_multiple_of(2)
    {
        return Err(Error::Model(format!(
            "config.json: hidden_size {h}, {nh} attention heads, {nkv} key/value heads do not fit \
             (hidden_size a multiple of the heads, an even head size, heads a multiple of the \
             key/value heads)"
        )));
    }
    if let Some(hd) = v.get("head_dim").and_then(|x| x.as_u64())
        && hd != (h / nh) as u64
    {
        return Err(Error::Model(format!(
            "config.json: head_dim {hd} differs from hidden_size / num_attention_heads = {}",
            h / nh
        )));
    }
    if lc.vocab_size == 0 || lc.num_hidden_layers == 0 || lc.max_position_embeddings < 2 {
        return Err(Error::Model(
            "config.json: vocab_size, num_hidden_layers and max_position_embeddings must be set"
                .into(),
        ));
    }
    Ok(lc.into_config(false))
}

/// The sampling that `generation_config.json` asks for (greedy without one).
fn parse_sampling(bytes: Option<&[u8]>) -> Result<Sampling> {
    let Some(bytes) = bytes else {
        return Ok(Sampling::ArgMax);
    };
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::Model(format!("generation_config.json: {e}")))?;
    if v.get("do_sample").and_then(|x| x.as_bool()) != Some(true) {
        return Ok(Sampling::ArgMax);
    }
    let temperature = v.get("temperature").and_then(|x| x.as_f64()).unwrap_or(1.0);
    if temperature < 1e-7 {
        return Ok(Sampling::ArgMax);
    }
    let top_k = v
        .get("top_k")
        .and_then(|x| x.as_u64())
        .filter(|&k| k > 0)
        .map(|k| usize::try_from(k).unwrap_or(usize::MAX));
    let top_p = v
        .get("top_p")
        .and_then(|x| x.as_f64())
        .filter(|&p| p > 0.0 && p < 1.0);
    Ok(match (top_k, top_p) {
        (None, None) => Sampling::All { temperature },
        (Some(k), None) => Sampling::TopK { k, temperature },
        (None, Some(p)) => Sampling::TopP { p, temperature },
        (Some(k), Some(p)) => Sampling::TopKThenTopP { k, p, temperature },
    })
}

fn build(parts: Parts<'_>) -> Result<Model> {
    let t0 = Instant::now();
    let config = parse_config(parts.config)?;
    let device = Device::Cpu;

    // Everything Llama::load will ask for must be there with the shape the config
    // implies (candle's loader would panic on a missing tensor).
    for (name, shape) in expected_tensors(&config) {
        let t = parts
            .tensors
            .get(&name)
            .ok_or_else(|| Error::Model(format!("tensor {name}: missing from the weights")))?;
        let got: Vec<usize> = t
            .shape
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect();
        if got != shape {
            return Err(Error::Model(format!(
                "tensor {name}: shape {got:?}, where config.json implies {shape:?}"
            )));
        }
    }

    let mut bytes = 0u64;
    let mut parameters = 0u64;
    let mut dtypes = Vec::new();
    let mut map = HashMap::with_capacity(parts.tensors.len());
    for (name, t) in &parts.tensors {
        let dt = candle_dtype(t.dtype).ok_or_else(|| {
            Error::Model(format!(
                "tensor {name}: dtype {:?} is not supported",
                t.dtype
            ))
        })?;
        let shape: Vec<usize> = t
            .shape
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect();
        let tensor = Tensor::from_raw_buffer(t.data, dt, &shape, &device)
            .map_err(model_err(format_args!("tensor {name}")))?;
        bytes += t.data.len() as u64;
        parameters += shape.iter().product::<usize>() as u64;
        if let Some(n) = pqcc_sealed::safetensors::dtype_name(t.dtype)
            && !dtypes.contains(&n)
        {
            dtypes.push(n);
        }
        map.insert(name.clone(), tensor);
    }
    dtypes.sort_unstable();
    // The CPU computes in f32 (bf16/f16 checkpoints are widened once, here).
    let vb = VarBuilder::from_tensors(map, DType::F32, &device);
    let llama = Llama::load(vb, &config).map_err(model_err("building the Llama model"))?;

    let tokenizer = Tokenizer::from_bytes(parts.tokenizer)
        .map_err(|e| Error::Model(format!("tokenizer.json: {}", one_line(&e.to_string()))))?;
    let tvocab = tokenizer.get_vocab_size(true);
    if tvocab > config.vocab_size {
        return Err(Error::Model(format!(
            "tokenizer.json has {tvocab} tokens, more than the model's vocab_size {}",
            config.vocab_size
        )));
    }
    let eos = match &config.eos_token_id {
        Some(LlamaEosToks::Single(t)) => vec![*t],
        Some(LlamaEosToks::Multiple(v)) => v.clone(),
        None => Vec::new(),
    };
    let sampling = parse_sampling(parts.generation_config)?;
    let info = LoadInfo {
        source: parts.source,
        tensors: parts.tensors.len(),
        bytes,
        parameters,
        dtypes,
        open_s: parts.open_s,
        build_s: t0.elapsed().as_secs_f64(),
    };
    Ok(Model {
        llama,
        config,
        tokenizer,
        device,
        eos,
        sampling,
        info,
    })
}

impl Model {
    /// candle's config of the model.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The logits of the next token after `ids` (no cache; for checks).
    pub fn next_logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut cache = Cache::new(false, DType::F32, &self.config, &self.device)
            .map_err(model_err("cache"))?;
        let input = Tensor::new(ids, &self.device)
            .and_then(|t| t.unsqueeze(0))
            .map_err(model_err("input"))?;
        self.llama
            .forward(&input, 0, &mut cache)
            .and_then(|l| l.squeeze(0))
            .and_then(|l| l.to_vec1::<f32>())
            .map_err(model_err("forward"))
    }

    /// Generates up to `n` tokens after `prompt` (stopping early at an end-of-sequence
    /// token), sampling as [`Model::sampling`] says with the random seed `seed`.
    /// Returns the generated text (the prompt not included) and what it took. The
    /// same model, prompt, `n` and `seed` always give the same text.
    ///
    /// The KV cache holds at most `max_position_embeddings` positions; when it is
    /// full, the cache restarts from the last half of the context.
    pub fn generate(&self, prompt: &str, n: usize, seed: u64) -> Result<(String, Stats)> {
        let t0 = Instant::now();
        let enc = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|e| Error::Model(format!("tokenizing the prompt: {e}")))?;
        let mut context: Vec<u32> = enc.get_ids().to_vec();
        if context.is_empty() {
            return Err(Error::Model("the prompt gives no tokens".into()));
        }
        let prompt_tokens = context.len();
        let max = self.config.max_position_embeddings;
        let keep = (max / 2).max(1);
        if context.len() >= max {
            context.drain(..context.len() - keep);
        }
        let mut processor = LogitsProcessor::from_sampling(seed, self.sampling.clone());
        let mut out = Vec::with_capacity(n);
        let mut cache =
            Cache::new(true, DType::F32, &self.config, &self.device).map_err(model_err("cache"))?;
        let mut logits = self.forward(&context, 0, &mut cache)?;
        let prompt_s = t0.elapsed().as_secs_f64();
        let mut pos = context.len();
        while out.len() < n {
            let next = processor.sample(&logits).map_err(model_err("sampling"))?;
            if self.eos.contains(&next) {
                break;
            }
            out.push(next);
            context.push(next);
            if out.len() == n {
                break;
            }
            if pos + 1 > max {
                // The cache is full: start again from the last half of the context.
                context.drain(..context.len() - keep);
                cache = Cache::new(true, DType::F32, &self.config, &self.device)
                    .map_err(model_err("cache"))?;
                logits = self.forward(&context, 0, &mut cache)?;
                pos = context.len();
            } else {
                logits = self.forward(&[next], pos, &mut cache)?;
                pos += 1;
            }
        }
        let text = self
            .tokenizer
            .decode(&out, true)
            .map_err(|e| Error::Model(format!("decoding: {e}")))?;
        let stats = Stats {
            prompt_tokens,
            tokens: out.len(),
            prompt_s,
            total_s: t0.elapsed().as_secs_f64(),
        };
        Ok((text, stats))
    }

    fn forward(&self, ids: &[u32], pos: usize, cache: &mut Cache) -> Result<Tensor> {
        Tensor::new(ids, &self.device)
            .and_then(|t| t.unsqueeze(0))
            .and_then(|input| self.llama.forward(&input, pos, cache))
            .and_then(|l| l.squeeze(0))
            .map_err(model_err("forward"))
    }
}
