//! Training the demo's tiny model: a Llama-architecture transformer trained on a text
//! corpus with a byte-level tokenizer, written as a genuine Hugging Face directory
//! (`config.json`, `tokenizer.json`, `tokenizer_config.json`,
//! `generation_config.json`, safetensors weights with Hugging Face Llama tensor names,
//! sharded with `model.safetensors.index.json` when asked).
//!
//! The forward pass used for training is written here with candle's differentiable
//! operations (candle's `Llama` only gives the last position's logits and its fused
//! kernels have no backward pass); it computes exactly what Hugging Face's
//! `LlamaForCausalLM` computes (RMSNorm, rotary embeddings with the halves rotated,
//! grouped-query attention, SwiGLU), and a test checks its logits against
//! `candle_transformers::models::llama::Llama` loaded from the written files.
//! Initialisation and batches come from a seeded generator, so a run is reproducible.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{D, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use pqcc_core::wire::DType as WireDType;
use serde_json::json;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::{Error, Result, model_err};

/// The end-of-text token (the only special token; id 256).
pub const EOS_TOKEN: &str = "<|endoftext|>";

/// How to train.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Optimiser steps.
    pub steps: usize,
    /// Safetensors files to write (1: `model.safetensors`; more: shards and an index).
    pub shards: usize,
    /// Seed of the initialisation and of the batches.
    pub seed: u64,
    /// Hidden size.
    pub hidden: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// MLP intermediate size.
    pub intermediate: usize,
    /// Context length (`max_position_embeddings`) and training sequence length.
    pub context: usize,
    /// Sequences per batch.
    pub batch: usize,
    /// Peak learning rate (AdamW; linear warm-up, cosine decay).
    pub lr: f64,
    /// Print the loss every this many steps on stdout (0: never).
    pub log_every: usize,
    /// Threads for candle's kernels (0: candle's default, all cores). One is both
    /// deterministic and the fastest for a model this small on a shared machine.
    pub threads: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            steps: 1000,
            shards: 1,
            seed: 0x5eed_a11c_e000_0001,
            hidden: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            intermediate: 176,
            context: 64,
            batch: 4,
            lr: 8e-3,
            log_every: 0,
            threads: 1,
        }
    }
}

/// What [`train()`] did.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Parameters of the model.
    pub parameters: usize,
    /// Steps run.
    pub steps: usize,
    /// Loss (cross-entropy, nats per token) of the first batch.
    pub first_loss: f32,
    /// Mean loss over the last tenth of the steps.
    pub final_loss: f32,
    /// Seconds of training (the files not included).
    pub seconds: f64,
    /// Files written, relative to the output directory.
    pub files: Vec<String>,
    /// Bytes of safetensors written.
    pub weight_bytes: u64,
}

/// SplitMix64: the initialisation and the batches.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Normal(0, std) by Box–Muller.
    #[allow(clippy::cast_possible_truncation)] // f64 → f32 on purpose: the weights are f32
    fn normal(&mut self, std: f64) -> f32 {
        let (u, v) = (self.unit(), self.unit());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos() * std) as f32
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("below n, which is a usize")
    }
}

/// GPT-2's map from bytes to printable characters (what the `ByteLevel`
/// pre-tokenizer and decoder use).
fn byte_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
        out[usize::from(b)] = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('\u{fffd}')
        };
    }
    out
}

/// The byte-level tokenizer: GPT-2's `ByteLevel` pre-tokenizer and decoder over a BPE
/// model with the 256 byte tokens (id = byte value) and no merges, plus
/// [`EOS_TOKEN`] (id 256). Every input encodes; decoding gives the bytes back.
pub fn byte_tokenizer() -> Result<Tokenizer> {
    let chars = byte_chars();
    let vocab: tokenizers::models::bpe::Vocab = (0..=255u8)
        .map(|b| (chars[usize::from(b)].to_string(), u32::from(b)))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, Vec::new())
        .build()
        .map_err(|e| Error::Model(format!("tokenizer: {e}")))?;
    let mut tk = Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tk.with_decoder(Some(ByteLevel::new(false, true, true)));
    tk.add_special_tokens(&[AddedToken::from(EOS_TOKEN, true)]);
    if tk.token_to_id(EOS_TOKEN) != Some(256) {
        return Err(Error::Model(
            "tokenizer: the end-of-text token is not id 256".into(),
        ));
    }
    Ok(tk)
}

/// The trainable model: its parameters by Hugging Face name, in checkpoint order.
struct TrainLlama {
    o: TrainOptions,
    vocab: usize,
    params: Vec<(String, Var)>,
    cos: Tensor,
    sin: Tensor,
    mask: Tensor,
}

impl TrainLlama {
    fn new(o: &TrainOptions, vocab: usize, rng: &mut Rng, dev: &Device) -> Result<Self> {
        let (h, hd) = (o.hidden, o.hidden / o.heads);
        let mut params = Vec::new();
        let mut add = |name: String, shape: &[usize], ones: bool| -> Result<()> {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if ones {
                vec![1.0; n]
            } else {
                (0..n).map(|_| rng.normal(0.02)).collect()
            };
            let t = Tensor::from_vec(data, shape, dev).map_err(model_err(&name))?;
            let v = Var::from_tensor(&t).map_err(model_err(&name))?;
            params.push((name, v));
            Ok(())
        };
        add("model.embed_tokens.weight".into(), &[vocab, h], false)?;
        for l in 0..o.layers {
            let p = format!("model.layers.{l}");
            add(format!("{p}.input_layernorm.weight"), &[h], true)?;
            add(
                format!("{p}.self_attn.q_proj.weight"),
                &[o.heads * hd, h],
                false,
            )?;
            add(
                format!("{p}.self_attn.k_proj.weight"),
                &[o.kv_heads * hd, h],
                false,
            )?;
            add(
                format!("{p}.self_attn.v_proj.weight"),
                &[o.kv_heads * hd, h],
                false,
            )?;
            add(
                format!("{p}.self_attn.o_proj.weight"),
                &[h, o.heads * hd],
                false,
            )?;
            add(format!("{p}.post_attention_layernorm.weight"), &[h], true)?;
            add(
                format!("{p}.mlp.gate_proj.weight"),
                &[o.intermediate, h],
                false,
            )?;
            add(
                format!("{p}.mlp.up_proj.weight"),
                &[o.intermediate, h],
                false,
            )?;
            add(
                format!("{p}.mlp.down_proj.weight"),
                &[h, o.intermediate],
                false,
            )?;
        }
        add("model.norm.weight".into(), &[h], true)?;
        add("lm_head.weight".into(), &[vocab, h], false)?;

        // Rotary tables as Hugging Face computes them (rope_theta 10000).
        let inv: Vec<f32> = (0..hd)
            .step_by(2)
            .map(|i| 1.0 / ROPE_THETA.powf(i as f32 / hd as f32))
            .collect();
        let mut ang = Vec::with_capacity(o.context * inv.len());
        for p in 0..o.context {
            ang.extend(inv.iter().map(|f| p as f32 * f));
        }
        let ang = Tensor::from_vec(ang, (o.context, hd / 2), dev).map_err(model_err("rope"))?;
        let cos = ang.cos().map_err(model_err("rope"))?;
        let sin = ang.sin().map_err(model_err("rope"))?;
        let t = o.context;
        let mask: Vec<f32> = (0..t * t)
            .map(|k| {
                if k % t > k / t {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), dev).map_err(model_err("mask"))?;
        Ok(Self {
            o: o.clone(),
            vocab,
            params,
            cos,
            sin,
            mask,
        })
    }

    fn p(&self, name: &str) -> &Tensor {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_tensor())
            .expect("every parameter is created in new()")
    }

    /// Logits for every position: `ids` (batch, seq) → (batch·seq, vocab).
    fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let o = &self.o;
        let (b, t) = ids.dims2()?;
        let hd = o.hidden / o.heads;
        let eps = RMS_EPS_F32;
        let lin = |x: &Tensor, w: &str| -> candle_core::Result<Tensor> {
            let (n, _) = x.dims2()?;
            let w = self.p(w);
            x.matmul(&w.t()?)?.reshape((n, w.dim(0)?))
        };
        let cos = self.cos.narrow(0, 0, t)?;
        let sin = self.sin.narrow(0, 0, t)?;
        let mask = self.mask.narrow(0, 0, t)?.narrow(1, 0, t)?;
        let mut x = self
            .p("model.embed_tokens.weight")
            .index_select(&ids.flatten_all()?, 0)?; // (b·t, h)
        for l in 0..o.layers {
            let p = format!("model.layers.{l}");
            let a = candle_nn::ops::rms_norm_slow(
                &x,
                self.p(&format!("{p}.input_layernorm.weight")),
                eps,
            )?;
            let heads = |w: &str, n: usize| -> candle_core::Result<Tensor> {
                lin(&a, &format!("{p}.self_attn.{w}"))?
                    .reshape((b, t, n, hd))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q =
                candle_nn::rotary_emb::rope_slow(&heads("q_proj.weight", o.heads)?, &cos, &sin)?;
            let k =
                candle_nn::rotary_emb::rope_slow(&heads("k_proj.weight", o.kv_heads)?, &cos, &sin)?;
            let v = heads("v_proj.weight", o.kv_heads)?;
            let rep = o.heads / o.kv_heads;
            let k = candle_transformers::utils::repeat_kv(k, rep)?.contiguous()?;
            let v = candle_transformers::utils::repeat_kv(v, rep)?.contiguous()?;
            let att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(&mask)?;
            let att = candle_nn::ops::softmax(&att, D::Minus1)?;
            let y = att
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * t, o.heads * hd))?;
            x = (x + lin(&y, &format!("{p}.self_attn.o_proj.weight"))?)?;
            let m = candle_nn::ops::rms_norm_slow(
                &x,
                self.p(&format!("{p}.post_attention_layernorm.weight")),
                eps,
            )?;
            let g = lin(&m, &format!("{p}.mlp.gate_proj.weight"))?.silu()?;
            let u = lin(&m, &format!("{p}.mlp.up_proj.weight"))?;
            x = (x + lin(&(g * u)?, &format!("{p}.mlp.down_proj.weight"))?)?;
        }
        let x = candle_nn::ops::rms_norm_slow(&x, self.p("model.norm.weight"), eps)?;
        let logits = lin(&x, "lm_head.weight")?;
        debug_assert_eq!(logits.dims(), [b * t, self.vocab]);
        Ok(logits)
    }
}

const ROPE_THETA: f32 = 10_000.0;
const RMS_EPS: f64 = 1e-5;
/// [`RMS_EPS`] as candle's normalisation takes it.
const RMS_EPS_F32: f32 = 1e-5;

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}

fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s.into_bytes()
}

/// Trains a tiny Llama on `corpus` and writes it as a Hugging Face directory `out`
/// (created; it must not exist or be empty).
pub fn train(corpus: &[u8], out: &Path, o: &TrainOptions) -> Result<TrainSummary> {
    if o.threads == 0 {
        return train_here(corpus, out, o);
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(o.threads)
        .build()
        .map_err(|e| Error::Model(format!("train: thread pool: {e}")))?
        .install(|| train_here(corpus, out, o))
}

fn train_here(corpus: &[u8], out: &Path, o: &TrainOptions) -> Result<TrainSummary> {
    if o.heads == 0
        || o.kv_heads == 0
        || !o.hidden.is_multiple_of(o.heads)
        || !o.heads.is_multiple_of(o.kv_heads)
        || !(o.hidden / o.heads).is_multiple_of(2)
        || o.layers == 0
        || o.context < 2
        || o.batch == 0
        || o.shards == 0
    {
        return Err(Error::Model(format!("train: inconsistent options {o:?}")));
    }
    let tokenizer = byte_tokenizer()?;
    let text = std::str::from_utf8(corpus)
        .map_err(|_| Error::Model("the corpus is not UTF-8 text".into()))?;
    let ids: Vec<u32> = tokenizer
        .encode(text, false)
        .map_err(|e| Error::Model(format!("tokenizing the corpus: {e}")))?
        .get_ids()
        .to_vec();
    if ids.len() < o.context + 2 {
        return Err(Error::Model(format!(
            "the corpus has {} tokens; at least context + 2 = {} are needed",
            ids.len(),
            o.context + 2
        )));
    }
    if out.exists()
        && std::fs::read_dir(out)
            .map_err(|e| Error::Io(format!("{}: {e}", out.display())))?
            .next()
            .is_some()
    {
        return Err(Error::Io(format!(
            "{}: exists and is not empty",
            out.display()
        )));
    }

    let dev = Device::Cpu;
    let vocab = tokenizer.get_vocab_size(true);
    let mut rng = Rng(o.seed);
    let model = TrainLlama::new(o, vocab, &mut rng, &dev)?;
    let parameters: usize = model.params.iter().map(|(_, v)| v.elem_count()).sum();
    let vars: Vec<Var> = model.params.iter().map(|(_, v)| v.clone()).collect();
    let mut opt = AdamW::new(
        vars,
        ParamsAdamW {
            lr: o.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .map_err(model_err("optimizer"))?;

    let t0 = Instant::now();
    let mut losses = Vec::with_capacity(o.steps);
    let warmup = (o.steps / 10).max(1);
    for step in 0..o.steps {
        let lr = if step < warmup {
            o.lr * (step + 1) as f64 / warmup as f64
        } else {
            let f = (step - warmup) as f64 / (o.steps - warmup).max(1) as f64;
            o.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * f).cos()))
        };
        opt.set_learning_rate(lr);
        let mut x = Vec::with_capacity(o.batch * o.context);
        let mut y = Vec::with_capacity(o.batch * o.context);
        for _ in 0..o.batch {
            let s = rng.below(ids.len() - o.context);
            x.extend_from_slice(&ids[s..s + o.context]);
            y.extend_from_slice(&ids[s + 1..s + o.context + 1]);
        }
        let step_loss = (|| -> candle_core::Result<f32> {
            let x = Tensor::from_vec(x, (o.batch, o.context), &dev)?;
            let y = Tensor::from_vec(y, o.batch * o.context, &dev)?;
            let logits = model.forward(&x)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            opt.backward_step(&loss)?;
            loss.to_scalar::<f32>()
        })()
        .map_err(model_err(format_args!("training step {step}")))?;
        if !step_loss.is_finite() {
            return Err(Error::Model(format!("training diverged at step {step}")));
        }
        if o.log_every > 0 && (step % o.log_every == 0 || step + 1 == o.steps) {
            println!("step {step:>5}  loss {step_loss:.4}  lr {lr:.2e}");
        }
        losses.push(step_loss);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let tail = (o.steps / 10).max(1).min(losses.len().max(1));
    let final_loss = if losses.is_empty() {
        f32::NAN
    } else {
        losses[losses.len() - tail..].iter().sum::<f32>() / tail as f32
    };

    std::fs::create_dir_all(out).map_err(|e| Error::Io(format!("{}: {e}", out.display())))?;
    let mut files = Vec::new();
    // The weights, f32 little-endian, Hugging Face names, checkpoint order.
    let mut tensors: Vec<(String, Vec<u64>, Vec<u8>)> = Vec::new();
    for (name, v) in &model.params {
        let t = v.as_tensor();
        let shape: Vec<u64> = t.dims().iter().map(|&d| d as u64).collect();
        let data: Vec<f32> = t
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(model_err(name))?;
        let bytes: Vec<u8> = data.iter().flat_map(|f| f.to_le_bytes()).collect();
        tensors.push((name.clone(), shape, bytes));
    }
    let weight_bytes = write_weights(out, &tensors, o.shards, &mut files)?;

    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": false,
        "attention_dropout": 0.0,
        "bos_token_id": 256,
        "eos_token_id": 256,
        "head_dim": o.hidden / o.heads,
        "hidden_act": "silu",
        "hidden_size": o.hidden,
        "initializer_range": 0.02,
        "intermediate_size": o.intermediate,
        "max_position_embeddings": o.context,
        "mlp_bias": false,
        "model_type": "llama",
        "num_attention_heads": o.heads,
        "num_hidden_layers": o.layers,
        "num_key_value_heads": o.kv_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": RMS_EPS,
        "rope_scaling": null,
        "rope_theta": f64::from(ROPE_THETA),
        "tie_word_embeddings": false,
        "torch_dtype": "float32",
        "transformers_version": "4.46.0",
        "use_cache": true,
        "vocab_size": vocab,
    });
    write(&out.join("config.json"), &json_bytes(&config))?;
    files.push("config.json".into());
    let generation = json!({
        "bos_token_id": 256,
        "eos_token_id": 256,
        "do_sample": true,
        "temperature": 0.7,
        "top_p": 0.9,
        "transformers_version": "4.46.0",
    });
    write(
        &out.join("generation_config.json"),
        &json_bytes(&generation),
    )?;
    files.push("generation_config.json".into());
    let tk = tokenizer
        .to_string(true)
        .map_err(|e| Error::Model(format!("tokenizer.json: {e}")))?;
    write(&out.join("tokenizer.json"), format!("{tk}\n").as_bytes())?;
    files.push("tokenizer.json".into());
    let tk_config = json!({
        "add_bos_token": false,
        "add_eos_token": false,
        "added_tokens_decoder": {
            "256": {
                "content": EOS_TOKEN,
                "lstrip": false,
                "normalized": false,
                "rstrip": false,
                "single_word": false,
                "special": true,
            }
        },
        "bos_token": EOS_TOKEN,
        "clean_up_tokenization_spaces": false,
        "eos_token": EOS_TOKEN,
        "model_max_length": o.context,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": null,
    });
    write(&out.join("tokenizer_config.json"), &json_bytes(&tk_config))?;
    files.push("tokenizer_config.json".into());
    files.sort();
    Ok(TrainSummary {
        parameters,
        steps: o.steps,
        first_loss: losses.first().copied().unwrap_or(f32::NAN),
        final_loss,
        seconds,
        files,
        weight_bytes,
    })
}

/// Writes `model.safetensors`, or `shards` files `model-0000k-of-0000N.safetensors`
/// (tensors in order, split by size) and `model.safetensors.index.json`.
fn write_weights(
    out: &Path,
    tensors: &[(String, Vec<u64>, Vec<u8>)],
    shards: usize,
    files: &mut Vec<String>,
) -> Result<u64> {
    let shards = shards.min(tensors.len()).max(1);
    let total: u64 = tensors.iter().map(|(_, _, b)| b.len() as u64).sum();
    // Greedy split: a shard closes once it reaches its share of the total, keeping at
    // least one tensor for each shard still to come.
    let mut groups: Vec<Vec<usize>> = vec![Vec::new()];
    let mut acc = 0u64;
    for (i, (_, _, b)) in tensors.iter().enumerate() {
        let left = tensors.len() - i;
        let need = shards - groups.len();
        let last = groups.last_mut().expect("one group at least");
        if !last.is_empty()
            && need > 0
            && (acc >= total * groups.len() as u64 / shards as u64 || left <= need)
        {
            groups.push(Vec::new());
        }
        groups.last_mut().expect("one group at least").push(i);
        acc += b.len() as u64;
    }
    let meta: &[(&str, &str)] = &[("format", "pt")];
    let mut weight_map = BTreeMap::new();
    let mut bytes = 0u64;
    for (k, g) in groups.iter().enumerate() {
        let name = if shards == 1 {
            "model.safetensors".to_owned()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", k + 1, shards)
        };
        let list: Vec<(&str, WireDType, &[u64], &[u8])> = g
            .iter()
            .map(|&i| {
                let (n, s, b) = &tensors[i];
                (n.as_str(), WireDType::F32, s.as_slice(), b.as_slice())
            })
            .collect();
        let st = pqcc_sealed::safetensors::encode(&list, Some(meta))
            .map_err(|e| Error::Model(format!("{name}: {e}")))?;
        write(&out.join(&name), &st)?;
        bytes += st.len() as u64;
        for &i in g {
            weight_map.insert(
                tensors[i].0.clone(),
                serde_json::Value::String(name.clone()),
            );
        }
        files.push(name);
    }
    if shards > 1 {
        let index = json!({
            "metadata": { "total_size": total },
            "weight_map": weight_map,
        });
        write(
            &out.join("model.safetensors.index.json"),
            &json_bytes(&index),
        )?;
        files.push("model.safetensors.index.json".into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn byte_tokenizer_round_trips_and_reloads() {
        let tk = byte_tokenizer().unwrap();
        let json = tk.to_string(false).unwrap();
        let tk = Tokenizer::from_bytes(json.as_bytes()).unwrap();
        let s = "Alice was beginning,\n  to get \"very\" tired… ünïcödé\t!";
        let ids = tk.encode(s, false).unwrap().get_ids().to_vec();
        assert_eq!(ids, s.bytes().map(u32::from).collect::<Vec<_>>());
        assert_eq!(tk.decode(&ids, true).unwrap(), s);
        assert_eq!(tk.get_vocab_size(true), 257);
    }

    #[test]
    fn training_forward_matches_candle_llama() {
        let o = TrainOptions {
            hidden: 32,
            heads: 4,
            kv_heads: 2,
            intermediate: 48,
            context: 16,
            ..Default::default()
        };
        let dev = Device::Cpu;
        let m = TrainLlama::new(&o, 257, &mut Rng(7), &dev).unwrap();
        let ids: Vec<u32> = b"Alice was begin".iter().map(|&b| u32::from(b)).collect();
        let x = Tensor::new(ids.as_slice(), &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let ours = m.forward(&x).unwrap();
        let last: Vec<f32> = ours.get(ids.len() - 1).unwrap().to_vec1().unwrap();

        let cfg: candle_transformers::models::llama::LlamaConfig = serde_json::from_value(json!({
            "hidden_size": 32, "intermediate_size": 48, "vocab_size": 257,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rms_norm_eps": RMS_EPS, "rope_theta": 10000.0,
            "max_position_embeddings": 16, "tie_word_embeddings": false,
        }))
        .unwrap();
        let cfg = cfg.into_config(false);
        let map = m
            .params
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let vb = candle_nn::VarBuilder::from_tensors(map, DType::F32, &dev);
        let llama = candle_transformers::models::llama::Llama::load(vb, &cfg).unwrap();
        let mut cache =
            candle_transformers::models::llama::Cache::new(false, DType::F32, &cfg, &dev).unwrap();
        let theirs: Vec<f32> = llama
            .forward(&x, 0, &mut cache)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        let diff = last
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "max |Δlogit| = {diff}");
    }

    #[test]
    fn shards_split_in_order_and_cover_everything() {
        let t: Vec<(String, Vec<u64>, Vec<u8>)> = (0..7)
            .map(|i| (format!("t{i}"), vec![1], vec![0u8; 4]))
            .collect();
        for shards in 1..=7 {
            let dir = std::env::temp_dir().join(format!(
                "pqcc-workload-shards-{}-{shards}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let mut files = Vec::new();
            write_weights(&dir, &t, shards, &mut files).unwrap();
            let st = files.iter().filter(|f| f.ends_with(".safetensors")).count();
            assert_eq!(st, shards);
            assert_eq!(
                files.contains(&"model.safetensors.index.json".into()),
                shards > 1
            );
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
