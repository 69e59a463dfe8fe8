//! `webtune train`: flags and files in, the library's [`Run`] in between, and the terminal
//! around it — the progress bar, the JSON log, Ctrl-C. The run itself (settings and their
//! checks, the step loop's rules, checkpoints and every resume check) is
//! `webtune::train::run`, shared with the browser engine.
//!
//! Resume rule: with `--resume`, every setting comes from the checkpoint's trainer_state.json.
//! A flag that changes the math may be repeated but must then equal the checkpoint's value
//! (`RunSpec::give`); `--steps` may change under the constant schedule, so such a run can be
//! extended. Options that do not change the math (`--out`, `--eval-*`, `--save-every`,
//! `--keep-checkpoints`, `--log-json`, `--log-every`) may be changed.

use std::cell::OnceCell;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use webtune::data::dataset::Preview;
use webtune::data::{Dataset, Tokenizer};
use webtune::flags::Style;
use webtune::gpu::{Gpu, MemoryClass};
use webtune::model::weights::write_atomic;
use webtune::model::{ModelConfig, Weights, LoraAdapter};
use webtune::train::checkpoint::{self, ModelInfo, RunOptions, TrainerState};
use webtune::train::run::{Checkpoint, RunData, RunInputs};
use webtune::train::schedule::Schedule;
use webtune::train::{DeviceLimits, Run, RunSpec, StepLog};

use super::paths::{self, Inputs, OutRules};
use super::signals;
use crate::say;

#[derive(Args)]
pub struct TrainArgs {
    /// Hugging Face model folder (GPT-2, Llama, Qwen2, Qwen3): config.json + model.safetensors or its shards
    /// (with --resume: the checkpoint's)
    #[arg(long)]
    model: Option<PathBuf>,
    /// Training data: .txt, or .jsonl of {"text"}, {"prompt","completion"} or {"input_ids"[,"labels"]} records
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output folder: a PEFT adapter (LoRA) or a full HF checkpoint (--full), and checkpoint-<step>/ folders
    /// (with --resume: the checkpoint's parent folder)
    #[arg(long)]
    out: Option<PathBuf>,
    /// Tokenizer folder for text data: tokenizer.json, or vocab.json + merges.txt [default: the --model folder]
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// A Jinja chat template file for chat data ({"messages"} records), instead of the tokenizer's
    #[arg(long, value_name = "FILE")]
    chat_template: Option<PathBuf>,
    /// LoRA rank r [default: 8]
    #[arg(long)]
    lora_rank: Option<usize>,
    /// LoRA alpha (the update is scaled by alpha / r) [default: 16]
    #[arg(long, allow_negative_numbers = true)]
    lora_alpha: Option<f32>,
    /// Comma-separated PEFT target modules, suffix-matched: all-linear (every linear layer); GPT-2: c_attn, c_proj
    /// (attention and MLP), c_fc, attn.c_proj, mlp.c_proj; Llama family: q_proj, k_proj, v_proj, o_proj, gate_proj,
    /// up_proj, down_proj (or self_attn.q_proj, mlp.down_proj, ...) [default: all-linear]
    #[arg(long, value_delimiter = ',')]
    lora_targets: Option<Vec<String>>,
    /// Fine-tune every tensor instead of training a LoRA adapter
    #[arg(long, conflicts_with = "init_adapter")]
    full: bool,
    /// Start from an existing PEFT LoRA adapter (its r, alpha and targets are used)
    #[arg(long)]
    init_adapter: Option<PathBuf>,
    /// Optimizer steps [default: 100]
    #[arg(long)]
    steps: Option<u32>,
    /// Sequences per micro-batch [default: 8]
    #[arg(long)]
    batch: Option<usize>,
    /// Tokens per sequence, at most the model's n_positions [default: 128]
    #[arg(long)]
    seq: Option<usize>,
    /// Micro-batches per optimizer step (gradient accumulation) [default: 1]
    #[arg(long)]
    grad_accum: Option<usize>,
    /// Peak learning rate [default: 2e-4]
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f32>,
    /// Learning-rate schedule after warmup: constant, linear or cosine (to --min-lr) [default: constant]
    #[arg(long)]
    schedule: Option<Schedule>,
    /// Warmup steps (linear ramp from 0) [default: 0]
    #[arg(long)]
    warmup: Option<u32>,
    /// Floor of the linear and cosine decay [default: 0]
    #[arg(long, allow_negative_numbers = true)]
    min_lr: Option<f32>,
    /// AdamW decoupled weight decay [default: 0]
    #[arg(long, allow_negative_numbers = true)]
    weight_decay: Option<f32>,
    /// [default: 0.9]
    #[arg(long, allow_negative_numbers = true)]
    beta1: Option<f32>,
    /// [default: 0.999]
    #[arg(long, allow_negative_numbers = true)]
    beta2: Option<f32>,
    /// [default: 1e-8]
    #[arg(long, allow_negative_numbers = true)]
    eps: Option<f32>,
    /// Clip the global gradient norm to this, 0 = off [default: 1.0]
    #[arg(long, allow_negative_numbers = true)]
    grad_clip: Option<f32>,
    /// Seed for LoRA init, shuffling and --eval-split [default: 0]
    #[arg(long)]
    seed: Option<u64>,
    /// Take windows in file order instead of shuffling them
    #[arg(long)]
    no_shuffle: bool,
    /// Held-out data for the eval loss (same formats as --data)
    #[arg(long, conflicts_with = "eval_split")]
    eval_data: Option<PathBuf>,
    /// Hold this fraction of the --data records out for the eval loss (e.g. 0.1)
    #[arg(long, allow_negative_numbers = true)]
    eval_split: Option<f32>,
    /// Evaluate every N steps [default: only at the end, when there is eval data]
    #[arg(long)]
    eval_every: Option<u32>,
    /// Write a checkpoint (OUT/checkpoint-<step>/) every N steps [default: none]
    #[arg(long)]
    save_every: Option<u32>,
    /// Keep only the newest K checkpoints, 0 = all [default: 2]
    #[arg(long)]
    keep_checkpoints: Option<usize>,
    /// Continue from a checkpoint folder (or an output folder: its latest checkpoint)
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Stop after this step (writing a checkpoint and the output) to continue later with --resume
    #[arg(long)]
    stop_after: Option<u32>,
    /// Write one JSON object per step ({"step", "loss", "lr", "grad_norm"}) and per evaluation
    /// ({"step", "eval_loss"}); with --resume, lines after the checkpoint's step are dropped and new ones appended
    #[arg(long)]
    log_json: Option<PathBuf>,
    /// Without a terminal, print a progress line every N steps [default: 10]
    #[arg(long)]
    log_every: Option<u32>,
    /// Replace webtune's results in a non-empty --out (its checkpoints included) and an existing --log-json
    #[arg(long)]
    overwrite: bool,
    /// Also write the adapter as a GGUF file for llama.cpp (f32), replacing an earlier GGUF there
    #[arg(long, value_name = "FILE", conflicts_with = "full")]
    gguf: Option<PathBuf>,
    /// Check everything a run checks and print the model, the data and the memory plan, then exit without
    /// training or writing anything; --dry-run=json prints one JSON object instead
    #[arg(long, num_args = 0..=1, default_missing_value = "text", value_parser = ["text", "json"], value_name = "FORMAT")]
    dry_run: Option<String>,
    /// GPU memory the run may use (e.g. 6G, 512M; also WEBTUNE_GPU_MEMORY): a run whose memory plan needs more is
    /// refused before anything is allocated [default: unknown, only per-buffer limits are checked]
    #[arg(long, value_name = "SIZE")]
    gpu_memory: Option<String>,
    /// How frozen base weights are kept on the GPU: auto = f16 on a GPU with shader-f16 (half
    /// their memory; LoRA weights, gradients and optimizer state stay f32, products accumulate in
    /// f32; CPU adapters keep f32), f16 = f16 or refuse, f32 = the checkpoint's values exactly (as PyTorch fp32)
    #[arg(long, value_name = "auto|f16|f32", default_value = "auto")]
    base_weights: webtune::gpu::BaseWeights,
}

/// Every file a run may leave in --out besides its checkpoint folders: a LoRA run's adapter, a
/// full run's model (--overwrite clears both kinds, so a folder never mixes a base and an adapter).
const RESULTS: [&str; 4] = ["adapter_config.json", "adapter_model.safetensors", "config.json", "model.safetensors"];

/// How a run ended (beyond an error).
enum Outcome {
    /// Every step ran.
    Done,
    /// --stop-after: stopped early on purpose; exit 0.
    Stopped,
    /// A signal (Ctrl-C, SIGTERM, SIGHUP): exit 128 + its number. `wrote` is false when nothing
    /// was saved (interrupted before any step).
    Interrupted { wrote: bool },
}

fn interrupted() -> bool {
    signals::received().is_some()
}

/// Runs `f` with `out` created up front (so an unwritable --out fails before training),
/// and removes `out` again if `f` fails (or is interrupted before writing anything) and the
/// folder is one we made and left empty.
fn with_out_dir(out: &Path, f: impl FnOnce() -> Result<Outcome, String>) -> Result<Outcome, String> {
    if out.is_file() {
        return Err(format!("--out {}: is a file, not a folder", out.display()));
    }
    let created = !out.exists();
    let result = std::fs::create_dir_all(out)
        .map_err(|e| format!("--out {}: cannot create the folder: {e}", out.display()))
        .and_then(|_| f());
    if created && matches!(result, Err(_) | Ok(Outcome::Interrupted { wrote: false })) {
        let _ = std::fs::remove_dir(out); // only succeeds when empty
    }
    result
}

/// `path` made absolute (for trainer_state.json), as text.
fn abs(path: &Path) -> String {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string()
}

/// `webtune train`. After a signal it exits itself, once the checkpoint and the output are saved,
/// with 128 + the signal's number (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).
pub fn run(adapter_filter: Option<&str>, a: TrainArgs) -> Result<(), String> {
    signals::install()?;
    let ckpt = match &a.resume {
        Some(dir) => {
            let dir = checkpoint::locate(dir).map_err(|e| format!("--resume {e}"))?;
            let what = dir.display().to_string();
            let read = |name: &str| {
                let path = dir.join(name);
                std::fs::read(&path).map_err(|e| webtune::train::TrainError::Io { path: path.display().to_string(), msg: e.to_string() })
            };
            Some((dir.clone(), Checkpoint::read(&what, &read).map_err(|e| e.to_string())?))
        }
        None => None,
    };
    let out = match (&a.out, &ckpt) {
        (Some(o), _) => o.clone(),
        (None, Some((dir, _))) => match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        },
        (None, None) => return Err("--out is required (the folder the result goes to)".into()),
    };
    let saved = ckpt.as_ref().map(|c| &c.1.state);
    let spec = spec_of(&a, saved)?;
    let options = options_of(&a, saved, &out)?;
    let files = guard_files(&a, &out, &options, ckpt.as_ref())?;
    if a.dry_run.is_some() {
        // nothing is created or written: not even --out
        train(adapter_filter, a, out, ckpt, spec, options, files)?;
        return Ok(());
    }
    match with_out_dir(&out.clone(), || train(adapter_filter, a, out, ckpt, spec, options, files))? {
        Outcome::Done | Outcome::Stopped => Ok(()),
        Outcome::Interrupted { .. } => std::process::exit(signals::received().map_or(130, |s| s.exit_code())),
    }
}

/// What the run may do to files, decided before anything is read or written.
struct FilePlan {
    /// webtune's earlier results in --out that --overwrite replaces (removed just before the
    /// run's first write, so a run that fails its checks removes nothing).
    doomed: Vec<PathBuf>,
    /// Whether --log-json is the resumed run's own log (its lines up to the checkpoint are kept).
    own_log: bool,
}

/// The run's inputs, and its outputs checked against them (see src/cli/paths.rs): --out and
/// --log-json are never an input or inside one; --out is new, empty or (resuming) the run's own,
/// unless --overwrite; --log-json is new or the resumed run's own, unless --overwrite.
fn guard_files(a: &TrainArgs, out: &Path, options: &RunOptions, ckpt: Option<&(PathBuf, Checkpoint)>) -> Result<FilePlan, String> {
    let saved = ckpt.map(|c| &c.1.state);
    let mut inputs = Inputs::default();
    let saved_path = |p: &str| (!p.is_empty()).then(|| PathBuf::from(p));
    if let Some(m) = a.model.clone().or_else(|| saved.and_then(|s| saved_path(&s.model.path))) {
        inputs.add("--model folder", &m);
    }
    if let Some(d) = a.data.clone().or_else(|| saved.and_then(|s| saved_path(&s.data.path))) {
        inputs.add("--data file", &d);
    }
    if let Some(e) = &options.eval_data {
        inputs.add("--eval-data file", Path::new(e));
    }
    if let Some(t) = a.tokenizer.clone().or_else(|| saved.and_then(|s| s.data.tokenizer.as_deref().and_then(saved_path))) {
        inputs.add("--tokenizer folder", &t);
    }
    if let Some(i) = &a.init_adapter {
        inputs.add("--init-adapter folder", i);
    }
    if let Some((dir, _)) = ckpt {
        inputs.add("--resume checkpoint", dir);
    }
    paths::check_out_dir("--out", out, &inputs, &RESULTS)?;
    let own = match ckpt {
        Some((dir, ck)) => {
            dir.parent().is_some_and(|p| paths::same_place(out, if p.as_os_str().is_empty() { Path::new(".") } else { p }))
                || paths::same_place(out, Path::new(&ck.state.options.out))
        }
        None => false,
    };
    let rules = OutRules { flag: "--out", results: &RESULTS, own, overwrite: a.overwrite };
    let doomed = paths::plan_out(out, &rules, &inputs)?;
    let mut own_log = false;
    if let Some(log) = a.log_json.clone().or_else(|| options.log_json.as_ref().map(PathBuf::from)) {
        let log = log.as_path();
        paths::check_out_file("--log-json", log, &inputs)?;
        if paths::within(log, out) && (log.parent().is_some_and(|p| !paths::same_place(p, out)) || RESULTS.iter().any(|r| paths::same_place(log, &out.join(r)))) {
            return Err(format!(
                "--log-json {} is one of the files of --out {}: give a file beside them (e.g. {})",
                log.display(),
                out.display(),
                out.join("log.jsonl").display()
            ));
        }
        own_log = saved.and_then(|s| s.options.log_json.as_deref()).is_some_and(|l| paths::same_place(log, Path::new(l)));
        paths::prepare_log("--log-json", log, own_log, a.overwrite)?;
    }
    Ok(FilePlan { doomed, own_log })
}

// ---------------------------------------------------------------------------------------
// Flags -> the run's settings.

/// The run's settings: the checkpoint's (resuming) or the defaults, with the flags given.
fn spec_of(a: &TrainArgs, saved: Option<&TrainerState>) -> Result<RunSpec, String> {
    let resuming = saved.is_some();
    let mut s = match saved {
        Some(st) => RunSpec::from_state(st, "--resume").map_err(|e| e.to_string())?,
        None => RunSpec::default(),
    };
    if resuming && a.full && !s.full {
        return Err("--full: the checkpoint is of a LoRA run; omit --full to resume it".into());
    }
    s.full |= a.full;
    if resuming && a.no_shuffle && s.shuffle {
        return Err("--no-shuffle: the checkpoint's run shuffles; omit --no-shuffle to resume it".into());
    }
    s.shuffle &= !a.no_shuffle;
    let st = Style::Cli;
    let e = |r: Result<(), webtune::train::TrainError>| r.map_err(|e| e.to_string());
    e(RunSpec::give(&mut s.schedule, "schedule", a.schedule, resuming, st))?;
    // --steps may change on resume under the constant schedule, whose lrs do not depend on it.
    let steps_fixed = resuming && s.schedule != Schedule::Constant;
    e(RunSpec::give(&mut s.steps, "steps", a.steps, steps_fixed, st))?;
    e(RunSpec::give(&mut s.lora_rank, "lora-rank", a.lora_rank, resuming, st))?;
    e(RunSpec::give(&mut s.lora_alpha, "lora-alpha", a.lora_alpha, resuming, st))?;
    e(RunSpec::give(&mut s.lora_targets, "lora-targets", a.lora_targets.clone().map(Some), resuming, st))?;
    e(RunSpec::give(&mut s.init_adapter, "init-adapter", a.init_adapter.as_deref().map(|p| Some(abs(p))), resuming, st))?;
    e(RunSpec::give(&mut s.batch, "batch", a.batch, resuming, st))?;
    e(RunSpec::give(&mut s.seq, "seq", a.seq, resuming, st))?;
    e(RunSpec::give(&mut s.grad_accum, "grad-accum", a.grad_accum, resuming, st))?;
    e(RunSpec::give(&mut s.lr, "lr", a.lr, resuming, st))?;
    e(RunSpec::give(&mut s.warmup, "warmup", a.warmup, resuming, st))?;
    e(RunSpec::give(&mut s.min_lr, "min-lr", a.min_lr, resuming, st))?;
    e(RunSpec::give(&mut s.weight_decay, "weight-decay", a.weight_decay, resuming, st))?;
    e(RunSpec::give(&mut s.beta1, "beta1", a.beta1, resuming, st))?;
    e(RunSpec::give(&mut s.beta2, "beta2", a.beta2, resuming, st))?;
    e(RunSpec::give(&mut s.eps, "eps", a.eps, resuming, st))?;
    e(RunSpec::give(&mut s.grad_clip, "grad-clip", a.grad_clip, resuming, st))?;
    e(RunSpec::give(&mut s.seed, "seed", a.seed, resuming, st))?;
    e(RunSpec::give(&mut s.eval_split, "eval-split", a.eval_split.map(Some), resuming, st))?;
    // the loop's options may change on resume
    s.eval_every = a.eval_every.or(s.eval_every);
    s.save_every = a.save_every.or(s.save_every);
    s.stop_after = a.stop_after;
    s.validate(st).map_err(|e| e.to_string())?;
    Ok(s)
}

/// The CLI's own options (not the run's math), the flag, else the checkpoint's, else the default.
fn options_of(a: &TrainArgs, saved: Option<&TrainerState>, out: &Path) -> Result<RunOptions, String> {
    let so = saved.map(|s| &s.options);
    let o = RunOptions {
        out: abs(out),
        eval_data: a.eval_data.as_deref().map(abs).or_else(|| so.and_then(|o| o.eval_data.clone())),
        eval_every: None,
        save_every: None,
        keep_checkpoints: a.keep_checkpoints.or_else(|| so.map(|o| o.keep_checkpoints)).unwrap_or(2),
        log_json: a.log_json.as_deref().map(abs).or_else(|| so.and_then(|o| o.log_json.clone())),
        log_every: a.log_every.or_else(|| so.map(|o| o.log_every)).unwrap_or(10),
    };
    if o.log_every == 0 {
        return Err("--log-every must be at least 1".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------
// Files -> the run's inputs.

/// The tokenizer, loaded on first use only (token-id data needs none).
struct LazyTokenizer {
    dir: PathBuf,
    /// Whether --tokenizer named the folder (else it is the model's).
    explicit: bool,
    /// --chat-template FILE
    chat_template: Option<PathBuf>,
    cell: OnceCell<Result<Tokenizer, String>>,
}

impl LazyTokenizer {
    /// The tokenizer and its folder (absolute), or why there is none.
    fn get(&self) -> Result<(String, &Tokenizer), String> {
        let loaded = self.cell.get_or_init(|| {
            let tok = Tokenizer::load_dir(&self.dir).map_err(|e| e.to_string())?;
            super::generate::with_chat_template(tok, self.chat_template.as_deref())
        });
        match loaded {
            Ok(t) => Ok((abs(&self.dir), t)),
            Err(e) => {
                let has = |f: &str| self.dir.join(f).exists();
                if has("tokenizer.json") || (has("vocab.json") && has("merges.txt")) {
                    return Err(e.clone());
                }
                Err(format!(
                    "{} has none (looked for tokenizer.json, or vocab.json + merges.txt){}",
                    self.dir.display(),
                    if self.explicit { "" } else { "; name its folder with --tokenizer DIR" }
                ))
            }
        }
    }
}

/// The base model's weights (a full run resumes from the checkpoint's) and its identity.
fn load_model(a: &TrainArgs, full: bool, ckpt: Option<&Checkpoint>) -> Result<(Weights, ModelInfo), String> {
    let size = |dir: &Path| std::fs::metadata(dir.join("model.safetensors")).map(|m| m.len()).unwrap_or(0);
    match (full, ckpt, &a.model) {
        // a full run's weights are the checkpoint's; --model, if given, must have its shape
        (true, Some(ck), m) => {
            let w = ck.weights().map_err(|e| e.to_string())?;
            let saved = &ck.state.model;
            let info = match m {
                Some(m) => {
                    let path = m.join("config.json");
                    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                    let cfg = ModelConfig::from_json(&text, &path.display().to_string()).map_err(|e| e.to_string())?;
                    ModelInfo::of(&cfg, &m.display().to_string(), &abs(m), saved.weights_bytes, None)
                }
                None => saved.clone(),
            };
            Ok((w, info))
        }
        (_, _, Some(dir)) => {
            let w = Weights::load_dir(dir).map_err(|e| e.to_string())?;
            let info = ModelInfo::of(&w.config, &dir.display().to_string(), &abs(dir), size(dir), None);
            Ok((w, info))
        }
        (_, Some(ck), None) => {
            let saved = &ck.state.model;
            let dir = PathBuf::from(&saved.path);
            let w = Weights::load_dir(&dir).map_err(|e| e.to_string())?;
            let info = ModelInfo::of(&w.config, &saved.name, &saved.path, size(&dir), None);
            Ok((w, info))
        }
        (_, None, None) => Err("--model is required (a Hugging Face model folder)".into()),
    }
}

/// --init-adapter, checked against the LoRA flags given with it (the adapter decides the shape).
fn init_adapter(a: &TrainArgs, cfg: &ModelConfig) -> Result<Option<LoraAdapter>, String> {
    let Some(dir) = &a.init_adapter else { return Ok(None) };
    let adapter = LoraAdapter::load_peft(dir, cfg).map_err(|e| e.to_string())?;
    let c = &adapter.config;
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let clash = [
        ("lora-rank", a.lora_rank.is_some_and(|r| r != c.r), c.r.to_string()),
        ("lora-alpha", a.lora_alpha.is_some_and(|x| x != c.alpha), c.alpha.to_string()),
        (
            "lora-targets",
            a.lora_targets.clone().is_some_and(|t| sorted(t) != sorted(c.targets.clone())),
            c.targets.join(","),
        ),
    ];
    if let Some((flag, _, have)) = clash.into_iter().find(|c| c.1) {
        return Err(format!(
            "--{flag} disagrees with --init-adapter's {have}: the adapter decides the LoRA shape (omit --{flag})"
        ));
    }
    Ok(Some(adapter))
}

fn train(
    adapter_filter: Option<&str>,
    a: TrainArgs,
    out: PathBuf,
    ckpt: Option<(PathBuf, Checkpoint)>,
    spec: RunSpec,
    options: RunOptions,
    files: FilePlan,
) -> Result<Outcome, String> {
    let saved = ckpt.as_ref().map(|c| &c.1.state);
    let (weights, model) = load_model(&a, spec.full, ckpt.as_ref().map(|c| &c.1))?;
    let cfg = weights.config.clone();
    let init = if ckpt.is_none() && !spec.full { init_adapter(&a, &cfg)? } else { None };
    let continual = init.is_some();
    if let Some(g) = &a.gguf {
        super::export_gguf::check_train_gguf(g, spec.full, &model.path, a.overwrite, ckpt.is_some())?;
    }

    // The data (the tokenizer is loaded only for text).
    let data_path: PathBuf = match (&a.data, saved) {
        (Some(d), _) => d.clone(),
        (None, Some(s)) => PathBuf::from(&s.data.path),
        (None, None) => return Err("--data is required (a .txt or .jsonl file)".into()),
    };
    let tok_dir = a.tokenizer.clone().or_else(|| saved.and_then(|s| s.data.tokenizer.clone().map(PathBuf::from)));
    let tok = LazyTokenizer {
        explicit: tok_dir.is_some(),
        dir: tok_dir.unwrap_or_else(|| PathBuf::from(&model.path)),
        chat_template: a.chat_template.clone(),
        cell: OnceCell::new(),
    };
    let read = |p: &Path| Dataset::read(p, cfg.vocab_size, &|| tok.get()).map_err(|e| e.to_string());
    let data = read(&data_path)?;
    let eval = match &options.eval_data {
        Some(p) => Some(read(Path::new(p))?),
        None => None,
    };
    let run_data = RunData::new(&data, eval.as_ref(), &spec, cfg.eos_token_id, Style::Cli).map_err(|e| e.to_string())?;

    // The GPU and the run (restored from the checkpoint, after checking it is its run).
    let budget = super::gpu_memory(a.gpu_memory.as_deref())?;
    let gpu = Gpu::new_blocking(adapter_filter).map_err(|e| e.to_string())?;
    gpu.set_base_weights(a.base_weights).map_err(|e| e.to_string())?;
    gpu.set_memory_budget(budget);
    let input = RunInputs {
        weights: &weights,
        model,
        init_adapter: init,
        data: run_data,
        spec,
        options,
        readback_every: 16,
        style: Style::Cli,
    };
    if let Some(format) = &a.dry_run {
        let sets = DrySets { data: &data, eval: eval.as_ref(), tokenizer: tok.cell.get().and_then(|t| t.as_ref().ok()) };
        dry_run(&gpu, input, ckpt.as_ref().map(|c| &c.1), &sets, format == "json")?;
        return Ok(Outcome::Done);
    }
    let mut run = Run::new(&gpu, input, ckpt.as_ref().map(|c| &c.1), true).map_err(|e| e.to_string())?;
    drop(weights);
    if interrupted() {
        say!("interrupted before training started; nothing written");
        return Ok(Outcome::Interrupted { wrote: false });
    }
    let removed = paths::clear(&files.doomed)?;
    if !removed.is_empty() {
        say!("--overwrite: removed {} from {}", removed.join(", "), out.display());
    }
    let mut log = match &run.options.log_json {
        Some(p) => Some(open_log(Path::new(p), saved.map(|s| s.step).filter(|_| files.own_log))?),
        None => None,
    };
    let from = ckpt.as_ref().map_or(String::new(), |(dir, _)| format!(" from {}", dir.display()));
    say!("{}{from}", run.summary(&gpu));
    if let (Some(ev), Some(name)) = (&run.evaluator, &run.eval_name) {
        say!("eval data: {} counted tokens in windows of {} ({name})", ev.tokens(), run.spec.seq);
    }
    // continual fine-tuning: what the --init-adapter's task (the eval data) loses, measured before the first step
    let before = match (continual, &run.evaluator) {
        (true, Some(_)) => {
            let e = pollster::block_on(run.evaluate(&gpu)).map_err(|e| e.to_string())?;
            if let Some(e) = &e {
                say!("old task (eval data) with the --init-adapter, before training: loss {:.4}", e.loss);
            }
            e.map(|e| e.loss)
        }
        _ => None,
    };
    let outcome = run_steps(&gpu, &mut run, &out, &mut log, before)?;
    if let Some(g) = &a.gguf {
        super::export_gguf::from_train_output(&out, &cfg, g)?;
    }
    Ok(outcome)
}

// ---------------------------------------------------------------------------------------
// --dry-run: the run checked and planned, shown, and nothing more.

/// The datasets a dry run previews.
struct DrySets<'a> {
    data: &'a Dataset,
    eval: Option<&'a Dataset>,
    tokenizer: Option<&'a Tokenizer>,
}

/// A dataset's preview as lines of text (one function, so every field it gains is shown here).
fn preview_lines(label: &str, p: &Preview) -> Vec<String> {
    let mut lines = vec![format!(
        "{label}: {} ({}, {} bytes): {} records, {} tokens with EOS, {} windows of {} + 1 tokens",
        p.name, p.format, p.bytes, p.records, p.tokens, p.windows, p.seq
    )];
    if let Some(s) = p.samples.first() {
        let body = match &s.text {
            Some(t) => format!("{t:?}"),
            None => format!("ids {:?}", s.ids),
        };
        lines.push(format!("  first record ({} tokens, {} trained on): {body}", s.tokens, s.trained_tokens));
    }
    if let Some(r) = &p.rendered {
        lines.push(format!("  as the chat template renders it, trained spans in [[ ]]: {:?}", r.marked));
    }
    lines
}

/// `--dry-run`: everything `Run::new` checks before the GPU, the plan checked against the device,
/// then the model, the data and the plan shown (text, or one JSON object). A plan that does not fit
/// is shown and then refused, as the run would be.
fn dry_run(gpu: &Gpu, input: RunInputs<'_>, resume: Option<&Checkpoint>, sets: &DrySets<'_>, json: bool) -> Result<(), String> {
    let info = input.model.clone();
    let seq = input.spec.seq;
    let mut p = Run::prepare(input, resume).map_err(|e| e.to_string())?;
    let limits = DeviceLimits::of(gpu);
    let refusal = p.check_fits(&limits).err().map(|e| e.to_string());
    let cfg = p.config();
    let s = &p.spec;
    let params = webtune::model::weights::param_count(cfg).unwrap_or(0);
    let trained: u64 = p.plan.entries.iter().filter(|e| e.class == MemoryClass::Trainable).map(|e| e.shape.iter().product::<usize>() as u64).sum();
    let previews: Vec<(&str, Preview)> = [("data", Some(sets.data)), ("eval data", sets.eval)]
        .into_iter()
        .filter_map(|(l, d)| d.map(|d| (l, d.preview(sets.tokenizer, cfg.eos_token_id, seq))))
        .collect();
    if json {
        let v = serde_json::json!({
            "model": {"name": info.name, "model_type": cfg.model_type, "n_layer": cfg.n_layer, "n_embd": cfg.n_embd,
                      "n_head": cfg.n_head, "vocab_size": cfg.vocab_size, "n_positions": cfg.n_positions,
                      "parameters": params, "trained_parameters": trained},
            "settings": {"full": s.full, "lora_rank": (!s.full).then_some(s.lora_rank),
                         "lora_alpha": (!s.full).then(|| webtune::json::f32(s.lora_alpha)),
                         "lora_targets": if s.full { None } else { s.lora_targets.clone() },
                         "steps": s.steps, "batch": s.batch, "seq": s.seq, "grad_accum": s.grad_accum,
                         "lr": webtune::json::f32(s.lr), "schedule": s.schedule.to_string()},
            "data": previews.iter().find(|x| x.0 == "data").map(|x| &x.1),
            "eval_data": previews.iter().find(|x| x.0 == "eval data").map(|x| &x.1),
            "plan": p.plan.to_json(),
            "device": {"name": gpu.report.name, "max_storage_buffer_binding_size": limits.max_binding,
                       "max_buffer_size": limits.max_buffer, "memory_budget": limits.budget,
                       "f16_base_weights": limits.half_weights},
            "fits": refusal.is_none(),
            "refusal": refusal,
        });
        println!("{v}");
    } else {
        println!("dry run: nothing is trained or written");
        println!(
            "model {}: {} ({} layers, hidden {}, {} heads, vocab {}, n_positions {}; {params} parameters)",
            info.name, cfg.model_type, cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.vocab_size, cfg.n_positions
        );
        let what = match s.full {
            true => "all weights".to_string(),
            false => format!(
                "a LoRA adapter (r {}, alpha {}, targets {})",
                s.lora_rank,
                s.lora_alpha,
                s.lora_targets.as_ref().map_or("all-linear".to_string(), |t| t.join(","))
            ),
        };
        println!(
            "run: {what}, {trained} trained parameters; {} steps, batch {} x {} tokens, grad-accum {}; lr {} {}",
            s.steps, s.batch, s.seq, s.grad_accum, s.lr, s.schedule
        );
        for (label, pv) in &previews {
            for line in preview_lines(label, pv) {
                println!("{line}");
            }
        }
        print!("{}", p.plan.table(Some(&limits)));
        println!("{} on {}", if refusal.is_none() { "fits" } else { "does NOT fit" }, gpu.report.name);
    }
    match refusal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// The loop: the run's steps, with the terminal and the files around them.

/// Writes each file into `dir` under a temporary name and renames it, so none is left half-written.
fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<(), String> {
    for (name, bytes) in files {
        write_atomic(&dir.join(name), bytes).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn run_steps(gpu: &Gpu, run: &mut Run, out: &Path, log: &mut Option<std::fs::File>, before: Option<f32>) -> Result<Outcome, String> {
    let steps = run.spec.steps;
    let start_step = run.start_step;
    let tokens_per_step = run.spec.batch * run.spec.seq * run.spec.grad_accum;
    let progress = Progress::new(steps, start_step, tokens_per_step, run.options.log_every);
    let mut last_loss = f32::NAN;
    let mut last_eval: Option<(u32, f32)> = None;
    let mut saved_ckpt: Option<PathBuf> = None;
    let write_line = |log: &mut Option<std::fs::File>, v: serde_json::Value| -> Result<(), String> {
        match log.as_mut() {
            Some(f) => writeln!(f, "{v}").map_err(|e| format!("--log-json: {e}")),
            None => Ok(()),
        }
    };
    let f32_json = webtune::json::f32;
    let mut steps_loop = || -> Result<(), String> {
        loop {
            let ev = pollster::block_on(run.step(gpu, &signals::control)).map_err(|e| e.to_string())?;
            for l in &ev.logs {
                write_line(
                    log,
                    serde_json::json!({
                        "step": l.step, "loss": f32_json(l.loss), "lr": f32_json(l.lr), "grad_norm": f32_json(l.grad_norm)
                    }),
                )?;
                progress.step(l);
                last_loss = l.loss;
            }
            if let Some(e) = ev.eval {
                write_line(log, serde_json::json!({"step": ev.step, "eval_loss": f32_json(e.loss)}))?;
                progress.line(&format!("step {:>5}  eval loss {:.4}", ev.step, e.loss));
                last_eval = Some((ev.step, e.loss));
            }
            if ev.checkpoint {
                let files = pollster::block_on(run.checkpoint_files(gpu)).map_err(|e| e.to_string())?;
                let dir = checkpoint::write_checkpoint(out, ev.step, run.options.keep_checkpoints, |d| {
                    files.iter().try_for_each(|(name, bytes)| checkpoint::write_synced(&d.join(name), bytes))
                })
                .map_err(|e| e.to_string())?;
                progress.line(&format!("step {:>5}  saved checkpoint {}", ev.step, dir.display()));
                saved_ckpt = Some(dir);
            }
            if let Some(f) = log.as_mut() {
                f.flush().map_err(|e| format!("--log-json: {e}"))?;
            }
            if ev.stop {
                return Ok(());
            }
        }
    };
    let looped = steps_loop();
    progress.finish();
    if let Err(e) = looped {
        // the output is not written after a failed step; say what is kept
        return Err(match checkpoint::list_checkpoints(out).into_iter().rfind(|c| c.0 <= run.steps_done()) {
            Some((step, dir)) => format!("{e}; the output was not written, and the last checkpoint, {} (step {step}), is kept", dir.display()),
            None => format!("{e}; nothing was written to {}", out.display()),
        });
    }
    let done = run.steps_done();
    let files = pollster::block_on(run.output_files(gpu)).map_err(|e| e.to_string())?;
    write_files(out, &files)?;
    let outcome = if interrupted() {
        Outcome::Interrupted { wrote: true }
    } else if done < steps {
        Outcome::Stopped
    } else {
        Outcome::Done
    };
    let eval = last_eval.map_or(String::new(), |(s, e)| format!(", eval loss {e:.4} (step {s})"));
    let by = signals::received().filter(|s| s.0 != 2).map_or(String::new(), |s| format!(" by {}", s.name()));
    say!(
        "{} {} steps in {} ({:.0} tok/s), last loss {last_loss:.4}{eval}; saved {} to {}",
        match outcome {
            Outcome::Done => "done:".to_string(),
            Outcome::Stopped => "stopped:".to_string(),
            Outcome::Interrupted { .. } => format!("interrupted{by}:"),
        },
        done - start_step,
        duration(progress.start.elapsed().as_secs_f64()),
        progress.tok_s(done),
        run.output_what(),
        out.display()
    );
    if let (Some(b), Some((s, e))) = (before, last_eval) {
        say!("old task: {b:.4} → {e:.4} ({:+.4}) eval loss, before the first step → step {s}", e - b);
        write_line(log, serde_json::json!({"old_task": {"before": f32_json(b), "after": f32_json(e), "step": s}}))?;
    }
    if let (true, Some(dir)) = (done < steps, &saved_ckpt) {
        say!("at step {done} of {steps}; continue with: webtune train --resume {}", dir.display());
    }
    Ok(outcome)
}

// ---------------------------------------------------------------------------------------
// Progress: a bar on a terminal, else a plain line every N steps; the summary always.

struct Progress {
    bar: Option<indicatif::ProgressBar>,
    every: u32,
    total: u32,
    start: Instant,
    start_step: u32,
    tokens_per_step: usize,
}

fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

impl Progress {
    fn new(total: u32, start_step: u32, tokens_per_step: usize, every: u32) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = indicatif::ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            let bar =
                indicatif::ProgressBar::with_draw_target(Some(total as u64), indicatif::ProgressDrawTarget::stderr());
            bar.set_style(style);
            bar.set_position(start_step as u64);
            bar
        });
        Progress {
            bar,
            every: every.max(1),
            total,
            start: Instant::now(),
            start_step,
            tokens_per_step,
        }
    }

    fn tok_s(&self, step: u32) -> f64 {
        let tokens = step.saturating_sub(self.start_step) as usize * self.tokens_per_step;
        tokens as f64 / self.start.elapsed().as_secs_f64().max(1e-9)
    }

    /// Time left at the mean pace of this run's steps so far.
    fn eta(&self, step: u32) -> String {
        let done = step.saturating_sub(self.start_step).max(1) as f64;
        duration(self.start.elapsed().as_secs_f64() / done * self.total.saturating_sub(step) as f64)
    }

    fn step(&self, l: &StepLog) {
        let tok_s = self.tok_s(l.step);
        match &self.bar {
            Some(bar) => {
                bar.set_position(l.step as u64);
                let elapsed = duration(self.start.elapsed().as_secs_f64());
                let eta = self.eta(l.step);
                bar.set_message(format!(
                    "loss {:.4}  lr {:.2e}  {tok_s:.0} tok/s  [{elapsed}, ETA {eta}]",
                    l.loss, l.lr
                ));
            }
            None if l.step.is_multiple_of(self.every) || l.step == self.total => {
                say!(
                    "step {:>5}/{}  loss {:.4}  lr {:.3e}  grad_norm {:.3}  {:.0} tok/s  ETA {}",
                    l.step,
                    self.total,
                    l.loss,
                    l.lr,
                    l.grad_norm,
                    tok_s,
                    self.eta(l.step)
                );
            }
            None => {}
        }
    }

    fn line(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.println(msg),
            None => say!("{msg}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Opens --log-json: created anew, or on resume the existing file keeps its lines up to `keep_to`
/// (rewritten via a temporary file) and new lines are appended.
fn open_log(path: &Path, keep_to: Option<u32>) -> Result<std::fs::File, String> {
    let err = |e: std::io::Error| format!("--log-json {}: {e}", path.display());
    let Some(step) = keep_to.filter(|_| path.exists()) else {
        return std::fs::File::create(path).map_err(err);
    };
    let text = std::fs::read_to_string(path).map_err(err)?;
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step as u64)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, kept)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(e)
        })?;
    std::fs::OpenOptions::new().append(true).open(path).map_err(err)
}

