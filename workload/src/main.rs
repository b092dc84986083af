//! `pqcc-workload`: the guest's inference workload, and the model owner's trainer for
//! the demo's model.
//!
//! ```text
//! pqcc-workload [run] [--model DIR | --plain DIR] [--key FILE] [--expect-model NAME@REV]
//!                     [--prompt TEXT] [--tokens N] [--seed N] [--greedy]
//!                     [--threads N]
//! pqcc-workload train CORPUS OUT_DIR [--shards N] [--steps S] [--seed N] [--log-every K] [--threads T]
//! ```
//!
//! `run` (the default, as pqcc-init starts it) opens the sealed model in `$MODEL_PATH`
//! (default `/model`) with the key in `$PQCC_SECRETS_DIR/model-key`, expects the model
//! `$MODEL_NAME@$MODEL_COMMIT` when pqcc-init set them, and generates text. Every line
//! starts with `pqcc-workload: `; any failure is one `pqcc-workload: FATAL <reason>` line
//! and exit status 1 (2 for a usage error). The key is never printed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::exit;

use pqcc_workload::{Model, Source, TrainOptions};

const PREFIX: &str = "pqcc-workload:";
const DEFAULT_PROMPT: &str = "Alice was ";
const DEFAULT_TOKENS: usize = 200;

fn fatal(msg: impl std::fmt::Display) -> ! {
    let _ = std::io::stdout().flush();
    eprintln!("{PREFIX} FATAL {msg}");
    exit(1)
}

fn usage(msg: impl std::fmt::Display) -> ! {
    eprintln!("{PREFIX} {msg}");
    eprintln!(
        "usage: pqcc-workload [run] [--model DIR | --plain DIR] [--key FILE] \
         [--expect-model NAME@REV] [--prompt TEXT] [--tokens N] [--seed N] [--greedy] [--threads N]\n       \
         pqcc-workload train CORPUS OUT_DIR [--shards N] [--steps S] [--seed N] [--log-every K] [--threads T]"
    );
    exit(2)
}

/// Options and positional arguments, by hand (no argument parser in the guest binary).
struct Args {
    positional: Vec<String>,
    options: Vec<(String, Option<String>)>,
}

impl Args {
    fn parse(args: &[String], flags: &[&str], valued: &[&str]) -> Self {
        let mut positional = Vec::new();
        let mut options = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                let (name, inline) = match name.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_owned())),
                    None => (name, None),
                };
                if flags.contains(&name) && inline.is_none() {
                    options.push((name.to_owned(), None));
                } else if valued.contains(&name) {
                    let v = inline
                        .or_else(|| it.next().cloned())
                        .unwrap_or_else(|| usage(format_args!("--{name} needs a value")));
                    options.push((name.to_owned(), Some(v)));
                } else {
                    usage(format_args!("unknown option --{name}"));
                }
            } else {
                positional.push(a.clone());
            }
        }
        Self {
            positional,
            options,
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    fn flag(&self, name: &str) -> bool {
        self.options.iter().any(|(n, _)| n == name)
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        match self.get(name) {
            None => default,
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| usage(format_args!("--{name}: {v:?} is not a number"))),
        }
    }
}

fn mib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30))
    } else if bytes >= 1 << 20 {
        format!("{:.2} MiB", bytes as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

fn train_cmd(args: &[String]) {
    let a = Args::parse(
        args,
        &[],
        &["shards", "steps", "seed", "log-every", "threads"],
    );
    let [corpus, out] = a.positional.as_slice() else {
        usage("train needs CORPUS and OUT_DIR");
    };
    let d = TrainOptions::default();
    let o = TrainOptions {
        shards: a.number("shards", d.shards),
        steps: a.number("steps", d.steps),
        seed: a.number("seed", d.seed),
        log_every: a.number("log-every", d.log_every),
        threads: a.number("threads", d.threads),
        ..d
    };
    if o.shards == 0 || o.steps == 0 {
        usage("--shards and --steps must be at least 1");
    }
    let text = std::fs::read(corpus).unwrap_or_else(|e| fatal(format_args!("{corpus}: {e}")));
    let s = pqcc_workload::train(&text, Path::new(out), &o).unwrap_or_else(|e| fatal(e));
    println!(
        "{PREFIX} trained a Llama ({} layers, hidden {}, {} heads / {} key-value, context {}, \
         byte-level vocab 257): {} parameters, {} steps of {}×{} tokens in {:.1} s, loss {:.2} → {:.2}",
        o.layers,
        o.hidden,
        o.heads,
        o.kv_heads,
        o.context,
        s.parameters,
        s.steps,
        o.batch,
        o.context,
        s.seconds,
        s.first_loss,
        s.final_loss
    );
    println!(
        "{PREFIX} wrote {out}: {} ({} of safetensors)",
        s.files.join(" "),
        mib(s.weight_bytes)
    );
}

fn describe(m: &Model) {
    let c = m.config();
    let i = &m.info;
    match &i.source {
        Source::Sealed { dir, model_id } => {
            println!(
                "{PREFIX} weights opened with the released model-key ({} tensors, {}) from {} \
                 [{model_id}] in {:.2} s",
                i.tensors,
                mib(i.bytes),
                dir.display(),
                i.open_s
            );
        }
        Source::Plain { dir } => {
            println!(
                "{PREFIX} weights read from the plain directory {} ({} tensors, {}), not sealed, \
                 in {:.2} s",
                dir.display(),
                i.tensors,
                mib(i.bytes),
                i.open_s
            );
        }
    }
    println!(
        "{PREFIX} llama: {} layers, hidden {}, {} heads / {} key-value, context {}, vocab {}: \
         {} parameters ({}), built in {:.2} s",
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.max_position_embeddings,
        c.vocab_size,
        i.parameters,
        i.dtypes.join("+"),
        i.build_s
    );
}

fn run_cmd(args: &[String]) {
    let a = Args::parse(
        args,
        &["greedy"],
        &[
            "model",
            "plain",
            "key",
            "expect-model",
            "prompt",
            "tokens",
            "seed",
            "threads",
        ],
    );
    if !a.positional.is_empty() {
        usage(format_args!("unexpected argument {:?}", a.positional[0]));
    }
    let tokens: usize = a.number("tokens", DEFAULT_TOKENS);
    let seed: u64 = a.number("seed", 0);
    let prompt = a.get("prompt").unwrap_or(DEFAULT_PROMPT).to_owned();
    let threads: usize = a.number("threads", 0);
    if threads > 0 {
        // candle's CPU kernels read RAYON_NUM_THREADS for every matmul (and rayon for
        // its pool); one thread is much the fastest for a tiny model.
        // SAFETY: nothing else runs yet (no thread has been started, nothing reads the
        // environment concurrently).
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    }

    let mut model = if let Some(plain) = a.get("plain") {
        if a.get("model").is_some() || a.get("key").is_some() {
            usage("--plain takes neither --model nor --key");
        }
        pqcc_workload::load_plain(Path::new(plain)).unwrap_or_else(|e| fatal(e))
    } else {
        let dir = a
            .get("model")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("MODEL_PATH").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/model"));
        let key_path = match a.get("key") {
            Some(k) => PathBuf::from(k),
            None => match std::env::var_os("PQCC_SECRETS_DIR") {
                Some(d) => Path::new(&d).join("model-key"),
                None => fatal(
                    "no secrets were released to this guest (PQCC_SECRETS_DIR is unset), so \
                     there is no model-key",
                ),
            },
        };
        // pqcc-init names the model it verified (init.toml, measured): the sealed
        // model must be the same name@revision.
        let expected = a.get("expect-model").map(str::to_owned).or_else(|| {
            match (std::env::var("MODEL_NAME"), std::env::var("MODEL_COMMIT")) {
                (Ok(n), Ok(c)) => Some(format!("{n}@{c}")),
                _ => None,
            }
        });
        let dek = pqcc_sealed::read_key_file(&key_path).unwrap_or_else(|e| fatal(e));
        let m = pqcc_workload::load_sealed(&dir, &dek, expected.as_deref())
            .unwrap_or_else(|e| fatal(e));
        drop(dek);
        if expected.is_none()
            && let Source::Sealed { model_id, .. } = &m.info.source
        {
            println!(
                "{PREFIX} model {model_id} (from the sealed manifest; no expected model given)"
            );
        }
        m
    };
    describe(&model);
    if a.flag("greedy") {
        model.sampling = candle_transformers::generation::Sampling::ArgMax;
    }
    println!("{PREFIX} prompt {prompt:?}");
    let _ = std::io::stdout().flush();
    let (text, stats) = model
        .generate(&prompt, tokens, seed)
        .unwrap_or_else(|e| fatal(e));
    println!("{PREFIX} text {:?}", format!("{prompt}{text}"));
    println!(
        "{PREFIX} {} tokens in {:.2} s ({:.1} tokens/s; prompt: {} tokens in {:.3} s; sampling {:?}, seed {seed})",
        stats.tokens,
        stats.total_s,
        stats.tokens_per_s(),
        stats.prompt_tokens,
        stats.prompt_s,
        model.sampling
    );
}

fn main() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let _ = std::io::stdout().flush();
        eprintln!(
            "{PREFIX} FATAL panic: {}{at}",
            msg.lines().next().unwrap_or("")
        );
        exit(1)
    }));
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("train") => train_cmd(&args[1..]),
        Some("run") => run_cmd(&args[1..]),
        Some("-h" | "--help" | "help") => usage("the guest's inference workload"),
        _ => run_cmd(&args),
    }
}
