//! `webtune train`: LoRA or full fine-tuning from the command line — text or token data,
//! learning-rate schedules, gradient accumulation, held-out evaluation, a progress bar,
//! checkpoints, `--resume` and Ctrl-C.
//!
//! Resume rule: with `--resume`, every setting comes from the checkpoint's trainer_state.json.
//! A flag that changes the math (the hyperparameters, the seed, shuffling, the LoRA shape, the
//! held-out split) may be repeated but must then equal the checkpoint's value; the one exception
//! is `--steps` with the constant schedule (whose learning rates do not depend on the total), so
//! such a run can be extended. The data must be the same (file fingerprint and token stream),
//! and so must the model's shape. Options that do not change the math (`--out`, `--eval-*`,
//! `--save-every`, `--keep-checkpoints`, `--log-json`, `--log-every`) may be changed.

use std::cell::OnceCell;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use clap::Args;
use webtune::data::{records, Batcher, Record, TokenStream, Tokenizer};
use webtune::gpu::Gpu;
use webtune::model::gpt2::{Gpt2Gpu, Trainable};
use webtune::model::{Gpt2Config, Gpt2Weights, LoraAdapter, LoraConfig};
use webtune::train::checkpoint::{self, DataInfo, Hyperparameters, ModelInfo, RunOptions, TrainerState};
use webtune::train::schedule::{LrSchedule, Schedule};
use webtune::train::eval::Evaluator;
use webtune::train::{AdamWConfig, StepLog, TrainConfig, Trainer};

#[derive(Args)]
pub struct TrainArgs {
    /// Hugging Face GPT-2 folder: config.json + model.safetensors (with --resume: the checkpoint's)
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
    /// LoRA rank r [default: 8]
    #[arg(long)]
    lora_rank: Option<usize>,
    /// LoRA alpha (the update is scaled by alpha / r) [default: 16]
    #[arg(long, allow_negative_numbers = true)]
    lora_alpha: Option<f32>,
    /// Comma-separated PEFT target modules: c_attn, c_proj (attention and MLP), c_fc, attn.c_proj, mlp.c_proj
    /// [default: c_attn,c_proj,c_fc]
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
}

const DEFAULT_RANK: usize = 8;
const DEFAULT_ALPHA: f32 = 16.0;
const DEFAULT_TARGETS: [&str; 3] = ["c_attn", "c_proj", "c_fc"];

/// How a run ended (beyond an error).
enum Outcome {
    /// Every step ran.
    Done,
    /// --stop-after: stopped early on purpose; exit 0.
    Stopped,
    /// Ctrl-C: exit 130. `wrote` is false when nothing was saved (interrupted before any step).
    Interrupted { wrote: bool },
}

/// Ctrl-C presses seen so far.
static INTERRUPTS: AtomicU32 = AtomicU32::new(0);

fn interrupted() -> bool {
    INTERRUPTS.load(Ordering::SeqCst) > 0
}

/// The first Ctrl-C asks the loop to stop after the current step (and save); the second exits at
/// once. Every file webtune writes is written to a temporary name and renamed, so exiting at any
/// moment leaves no half-written file or checkpoint.
fn install_ctrlc() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTS.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!("\ninterrupted: finishing this step, then saving a checkpoint and the output (Ctrl-C again quits at once)");
        } else {
            eprintln!("\ninterrupted again: quitting without saving");
            std::process::exit(130);
        }
    });
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

/// The optimiser part of a run's hyperparameters.
fn adamw_of(h: &Hyperparameters) -> AdamWConfig {
    AdamWConfig {
        lr: h.lr,
        beta1: h.beta1,
        beta2: h.beta2,
        eps: h.eps,
        weight_decay: h.weight_decay,
        grad_clip: h.grad_clip,
    }
}

fn check_range(name: &str, v: f32, ok: bool, want: &str) -> Result<(), String> {
    if ok && v.is_finite() {
        Ok(())
    } else {
        Err(format!("--{name} {v} is invalid: it must be {want}"))
    }
}

/// `webtune train`. Exits with code 130 itself after a Ctrl-C (once the checkpoint is saved).
pub fn run(adapter_filter: Option<&str>, a: TrainArgs) -> Result<(), String> {
    install_ctrlc();
    let ckpt = match &a.resume {
        Some(dir) => {
            let dir = checkpoint::locate(dir).map_err(|e| format!("--resume {e}"))?;
            let state = checkpoint::read_state(&dir).map_err(|e| e.to_string())?;
            Some((dir, state))
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
    match with_out_dir(&out.clone(), || train(adapter_filter, a, out, ckpt))? {
        Outcome::Done | Outcome::Stopped => Ok(()),
        Outcome::Interrupted { .. } => std::process::exit(130),
    }
}

// ---------------------------------------------------------------------------------------
// Settings: flags, the checkpoint's values, defaults.

/// A setting that changes the math: the flag if given, else the checkpoint's value, else the
/// default. A flag that differs from the checkpoint's value is refused.
fn pick<T: PartialEq + Clone + std::fmt::Debug>(
    flag: &str,
    given: Option<T>,
    saved: Option<T>,
    default: T,
) -> Result<T, String> {
    match (given, saved) {
        (Some(g), Some(s)) if g != s => Err(format!(
            "--{flag} {} differs from the checkpoint's {}: a resumed run keeps every setting that changes the math (omit --{flag}, or start a new run)",
            show(&g),
            show(&s)
        )),
        (Some(g), _) => Ok(g),
        (None, Some(s)) => Ok(s),
        (None, None) => Ok(default),
    }
}

/// A setting's value for a message: Debug without `Some(..)`; `None` as "none".
fn show<T: std::fmt::Debug>(v: &T) -> String {
    let d = format!("{v:?}");
    match d.strip_prefix("Some(").and_then(|x| x.strip_suffix(')')) {
        Some(inner) => inner.to_string(),
        None if d == "None" => "none".into(),
        None => d,
    }
}

/// `path` made absolute (for trainer_state.json), as text.
fn abs(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// The model's identity for a checkpoint: its shape and the size of its weights file.
fn model_info(dir: &Path, cfg: &Gpt2Config) -> ModelInfo {
    ModelInfo {
        path: abs(dir),
        name: dir.display().to_string(),
        n_layer: cfg.n_layer,
        n_head: cfg.n_head,
        n_embd: cfg.n_embd,
        vocab_size: cfg.vocab_size,
        n_positions: cfg.n_positions,
        eos_token_id: cfg.eos_token_id,
        weights_bytes: std::fs::metadata(dir.join("model.safetensors"))
            .map(|m| m.len())
            .unwrap_or(0),
    }
}

fn shape_of(m: &ModelInfo) -> String {
    format!(
        "{} layers, {} heads, n_embd {}, vocab {}, n_positions {}, eos {}",
        m.n_layer, m.n_head, m.n_embd, m.vocab_size, m.n_positions, m.eos_token_id
    )
}

/// The tokenizer, loaded on first use only (token-id data needs none).
struct LazyTokenizer {
    dir: PathBuf,
    /// Whether --tokenizer named the folder (else it is the model's).
    explicit: bool,
    cell: OnceCell<Result<Tokenizer, String>>,
}

impl LazyTokenizer {
    fn get(&self) -> &Result<Tokenizer, String> {
        self.cell
            .get_or_init(|| Tokenizer::load_dir(&self.dir).map_err(|e| e.to_string()))
    }

    fn encode(&self, text: &str) -> Vec<u32> {
        match self.get() {
            Ok(t) => t.encode(text),
            Err(_) => Vec::new(),
        }
    }

    /// The load error, if the data needed the tokenizer and it could not be loaded.
    fn failed(&self, data: &Path) -> Option<String> {
        let Some(Err(e)) = self.cell.get() else { return None };
        let has = |f: &str| self.dir.join(f).exists();
        let no_files = !(has("tokenizer.json") || (has("vocab.json") && has("merges.txt")));
        Some(if no_files {
            format!(
                "{}: text data needs a tokenizer, but {} has none (looked for tokenizer.json, or vocab.json + merges.txt){}",
                data.display(),
                self.dir.display(),
                if self.explicit { "" } else { "; name its folder with --tokenizer DIR" }
            )
        } else {
            e.clone()
        })
    }

    /// The folder, if the tokenizer was used.
    fn used(&self) -> Option<String> {
        matches!(self.cell.get(), Some(Ok(_))).then(|| abs(&self.dir))
    }
}

/// Reads a dataset file (and its bytes, for the fingerprint) with the lazy tokenizer.
fn load_records(path: &Path, vocab: usize, tok: &LazyTokenizer) -> Result<(Vec<Record>, Vec<u8>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let recs = records::parse_dataset(&bytes, &path.display().to_string(), vocab, &|t| tok.encode(t));
    if let Some(e) = tok.failed(path) {
        return Err(e);
    }
    Ok((recs.map_err(|e| e.to_string())?, bytes))
}

// ---------------------------------------------------------------------------------------
// Evaluation.

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
                eprintln!(
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
            None => eprintln!("{msg}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// An f32 as the JSON number with its shortest decimal form (0.01, not 0.009999999776).
fn f32_json(x: f32) -> serde_json::Value {
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, Into::into)
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

// ---------------------------------------------------------------------------------------
// Saving.

/// The trained parameters, read back once for a checkpoint and/or the output.
enum Snapshot {
    Adapter(LoraAdapter),
    Full(Gpt2Weights),
}

fn snapshot(gpu: &Gpu, model: &Gpt2Gpu) -> Result<Snapshot, String> {
    if model.trainable == Trainable::Full {
        Ok(Snapshot::Full(
            pollster::block_on(model.download_weights(gpu)).map_err(|e| e.to_string())?,
        ))
    } else {
        match pollster::block_on(model.download_adapter(gpu)).map_err(|e| e.to_string())? {
            Some(a) => Ok(Snapshot::Adapter(a)),
            None => Err("the model has no adapter to save".into()),
        }
    }
}

impl Snapshot {
    fn save(&self, dir: &Path, base_model: &str) -> Result<(), String> {
        match self {
            Snapshot::Adapter(a) => a.save_peft(dir, base_model),
            Snapshot::Full(w) => w.save_dir(dir),
        }
        .map_err(|e| e.to_string())
    }

    fn what(&self) -> &'static str {
        match self {
            Snapshot::Adapter(_) => "the LoRA adapter (adapter_config.json, adapter_model.safetensors)",
            Snapshot::Full(_) => "the fine-tuned model (config.json, model.safetensors)",
        }
    }
}

/// Everything a checkpoint records besides the step, position and tensors.
struct RunRecord {
    hyper: Hyperparameters,
    sched: LrSchedule,
    model: ModelInfo,
    data: DataInfo,
    options: RunOptions,
    out: PathBuf,
    /// base_model_name_or_path of a saved adapter: --model as given.
    base_model: String,
}

fn save_checkpoint(rec: &RunRecord, gpu: &Gpu, trainer: &Trainer, snap: &Snapshot) -> Result<PathBuf, String> {
    let step = trainer.steps_done();
    let moments = pollster::block_on(trainer.optimizer.read_moments(gpu, &trainer.model)).map_err(|e| e.to_string())?;
    let opt = checkpoint::optimizer_to_safetensors(&moments).map_err(|e| e.to_string())?;
    let state = TrainerState::of(trainer, &rec.sched, rec.hyper.clone(), rec.model.clone(), rec.data.clone(), rec.options.clone());
    let json = state.to_json().map_err(|e| e.to_string())? + "\n";
    let keep = rec.options.keep_checkpoints;
    checkpoint::write_checkpoint(&rec.out, step, keep, |dir| {
        snap.save(dir, &rec.base_model)
            .map_err(webtune::train::TrainError::Invalid)?;
        checkpoint::write_synced(&dir.join(checkpoint::OPTIMIZER_FILE), &opt)?;
        checkpoint::write_synced(&dir.join(checkpoint::STATE_FILE), json.as_bytes())
    })
    .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------
// The run.

/// Every setting of a run: the flag, else the checkpoint's value, else the default; checked.
struct Settings {
    /// Its LoRA fields hold the flags' (or the checkpoint's) values until the adapter is known.
    h: Hyperparameters,
    schedule: Schedule,
    eval_data: Option<PathBuf>,
    eval_every: Option<u32>,
    save_every: Option<u32>,
    keep_checkpoints: usize,
    log_json: Option<PathBuf>,
    log_every: u32,
    /// Steps already taken (the checkpoint's), and the step this invocation stops after.
    start_step: u32,
    last: u32,
}

fn settings(a: &TrainArgs, saved: Option<&TrainerState>) -> Result<Settings, String> {
    let sh = saved.map(|s| &s.hyperparameters);
    let full = pick("full", a.full.then_some(true), sh.map(|h| h.full), false)
        .map_err(|_| "--full: the checkpoint is of a LoRA run; omit --full to resume it".to_string())?;
    if a.no_shuffle && sh.is_some_and(|h| h.shuffle) {
        return Err("--no-shuffle: the checkpoint's run shuffles; omit --no-shuffle to resume it".into());
    }
    let schedule = pick(
        "schedule",
        a.schedule,
        sh.and_then(|h| h.schedule.parse().ok()),
        Schedule::Constant,
    )?;
    // --steps may change on resume under the constant schedule, whose lrs do not depend on it.
    let steps = match (a.steps, sh) {
        (Some(n), Some(_)) if schedule == Schedule::Constant => n,
        (given, h) => pick("steps", given, h.map(|h| h.steps), 100)?,
    };
    let h = Hyperparameters {
        full,
        lora_rank: pick("lora-rank", a.lora_rank.map(Some), sh.map(|h| h.lora_rank), None)?,
        lora_alpha: pick("lora-alpha", a.lora_alpha.map(Some), sh.map(|h| h.lora_alpha), None)?,
        lora_targets: pick(
            "lora-targets",
            a.lora_targets.clone().map(Some),
            sh.map(|h| h.lora_targets.clone()),
            None,
        )?,
        init_adapter: pick(
            "init-adapter",
            a.init_adapter.as_deref().map(|p| Some(abs(p))),
            sh.map(|h| h.init_adapter.clone()),
            None,
        )?,
        steps,
        batch: pick("batch", a.batch, sh.map(|h| h.batch), 8)?,
        seq: pick("seq", a.seq, sh.map(|h| h.seq), 128)?,
        grad_accum: pick("grad-accum", a.grad_accum, sh.map(|h| h.grad_accum), 1)?,
        lr: pick("lr", a.lr, sh.map(|h| h.lr), 2e-4)?,
        weight_decay: pick("weight-decay", a.weight_decay, sh.map(|h| h.weight_decay), 0.0)?,
        beta1: pick("beta1", a.beta1, sh.map(|h| h.beta1), 0.9)?,
        beta2: pick("beta2", a.beta2, sh.map(|h| h.beta2), 0.999)?,
        eps: pick("eps", a.eps, sh.map(|h| h.eps), 1e-8)?,
        grad_clip: pick("grad-clip", a.grad_clip, sh.map(|h| h.grad_clip), 1.0)?,
        schedule: schedule.to_string(),
        warmup: pick("warmup", a.warmup, sh.map(|h| h.warmup), 0)?,
        min_lr: pick("min-lr", a.min_lr, sh.map(|h| h.min_lr), 0.0)?,
        seed: pick("seed", a.seed, sh.map(|h| h.seed), 0)?,
        shuffle: !a.no_shuffle && sh.is_none_or(|h| h.shuffle),
        eval_split: pick("eval-split", a.eval_split.map(Some), sh.map(|h| h.eval_split), None)?,
    };

    // Options that do not change the math: the flag, else the checkpoint's, else the default.
    let so = saved.map(|s| &s.options);
    let path = |p: &Option<String>| p.as_ref().map(PathBuf::from);
    let st = Settings {
        eval_data: a.eval_data.clone().or_else(|| so.and_then(|o| path(&o.eval_data))),
        eval_every: a.eval_every.or_else(|| so.and_then(|o| o.eval_every)),
        save_every: a.save_every.or_else(|| so.and_then(|o| o.save_every)),
        keep_checkpoints: a
            .keep_checkpoints
            .or_else(|| so.map(|o| o.keep_checkpoints))
            .unwrap_or(2),
        log_json: a.log_json.clone().or_else(|| so.and_then(|o| path(&o.log_json))),
        log_every: a.log_every.or_else(|| so.map(|o| o.log_every)).unwrap_or(10),
        start_step: saved.map_or(0, |s| s.step),
        last: a.stop_after.map_or(steps, |n| n.min(steps)),
        schedule,
        h,
    };

    let h = &st.h;
    adamw_of(h).validate(|name| format!("--{name}")).map_err(|e| e.to_string())?;
    check_range("min-lr", h.min_lr, h.min_lr >= 0.0 && h.min_lr <= h.lr, "in [0, --lr]")?;
    if let Some(f) = h.eval_split {
        check_range("eval-split", f, f > 0.0 && f < 1.0, "between 0 and 1 (exclusive)")?;
    }
    if st.eval_data.is_some() && h.eval_split.is_some() {
        return Err("--eval-data: the checkpoint's run holds out --eval-split of --data; use one or the other".into());
    }
    if h.steps == 0 || h.batch == 0 || h.seq == 0 || h.grad_accum == 0 {
        return Err("--steps, --batch, --seq and --grad-accum must be at least 1".into());
    }
    for (name, v) in [
        ("eval-every", st.eval_every),
        ("save-every", st.save_every),
        ("stop-after", a.stop_after),
    ] {
        if v == Some(0) {
            return Err(format!("--{name} must be at least 1"));
        }
    }
    if st.log_every == 0 {
        return Err("--log-every must be at least 1".into());
    }
    if st.start_step >= h.steps {
        return Err(format!(
            "--resume: the checkpoint is at step {}, and the run has {} steps: nothing left to train",
            st.start_step, h.steps
        ));
    }
    if st.last <= st.start_step {
        return Err(format!(
            "--stop-after {}: the run is already at step {}",
            st.last, st.start_step
        ));
    }
    Ok(st)
}

/// The base model's weights (a full run resumes from the checkpoint's) and its identity, checked
/// against the checkpoint's: the same shape, and for LoRA the same weights file size.
fn load_model(
    a: &TrainArgs,
    full: bool,
    ckpt: Option<&(PathBuf, TrainerState)>,
    model_dir: Option<&Path>,
) -> Result<(Gpt2Weights, ModelInfo), String> {
    let (weights, info) = match (full, ckpt, model_dir) {
        // --model, if given, must have the checkpoint's shape
        (true, Some((dir, s)), _) => {
            let w = Gpt2Weights::load_dir(dir).map_err(|e| e.to_string())?;
            let info = match &a.model {
                Some(m) => {
                    let path = m.join("config.json");
                    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                    let cfg = Gpt2Config::from_json(&text, &path.display().to_string()).map_err(|e| e.to_string())?;
                    ModelInfo {
                        weights_bytes: s.model.weights_bytes,
                        ..model_info(m, &cfg)
                    }
                }
                None => s.model.clone(),
            };
            (w, info)
        }
        (_, _, Some(dir)) => {
            let w = Gpt2Weights::load_dir(dir).map_err(|e| e.to_string())?;
            let info = model_info(dir, &w.config);
            (w, info)
        }
        (_, _, None) => return Err("--model is required (a Hugging Face GPT-2 folder)".into()),
    };
    if let Some((_, s)) = ckpt {
        let (now, then) = (&info, &s.model);
        if shape_of(now) != shape_of(then) || (!full && now.weights_bytes != then.weights_bytes) {
            return Err(format!(
                "--model {}: not the checkpoint's base model {} ({}, model.safetensors {} bytes; this one: {}, {} bytes)",
                now.path,
                then.path,
                shape_of(then),
                then.weights_bytes,
                shape_of(now),
                now.weights_bytes
            ));
        }
    }
    Ok((weights, info))
}

/// The adapter to train: the checkpoint's, --init-adapter's (whose shape flags must agree with),
/// or a fresh one from the flags and the seed. None for full fine-tuning.
fn load_adapter(
    a: &TrainArgs,
    h: &Hyperparameters,
    ckpt_dir: Option<&Path>,
    cfg: &Gpt2Config,
) -> Result<Option<LoraAdapter>, String> {
    if h.full {
        return Ok(None);
    }
    let adapter = match (ckpt_dir, a.init_adapter.as_deref()) {
        (Some(dir), _) | (None, Some(dir)) => LoraAdapter::load_peft(dir, cfg).map_err(|e| e.to_string())?,
        (None, None) => {
            let targets = h
                .lora_targets
                .clone()
                .unwrap_or_else(|| DEFAULT_TARGETS.map(String::from).to_vec());
            let (r, alpha) = (
                h.lora_rank.unwrap_or(DEFAULT_RANK),
                h.lora_alpha.unwrap_or(DEFAULT_ALPHA),
            );
            let lc = LoraConfig::new(r, alpha, targets, 0.0).map_err(|e| e.to_string())?;
            LoraAdapter::init(lc, cfg, h.seed)
        }
    };
    if ckpt_dir.is_none() && a.init_adapter.is_some() {
        let c = &adapter.config;
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        let clash = [
            ("lora-rank", h.lora_rank.is_some_and(|r| r != c.r), c.r.to_string()),
            (
                "lora-alpha",
                h.lora_alpha.is_some_and(|x| x != c.alpha),
                c.alpha.to_string(),
            ),
            (
                "lora-targets",
                h.lora_targets
                    .clone()
                    .is_some_and(|t| sorted(t) != sorted(c.targets.clone())),
                c.targets.join(","),
            ),
        ];
        if let Some((flag, _, have)) = clash.into_iter().find(|c| c.1) {
            return Err(format!(
                "--{flag} disagrees with --init-adapter's {have}: the adapter decides the LoRA shape (omit --{flag})"
            ));
        }
    }
    Ok(Some(adapter))
}

fn train(
    adapter_filter: Option<&str>,
    a: TrainArgs,
    out: PathBuf,
    ckpt: Option<(PathBuf, TrainerState)>,
) -> Result<Outcome, String> {
    let saved = ckpt.as_ref().map(|c| &c.1);
    let mut st = settings(&a, saved)?;

    // The model and the adapter.
    let model_dir: Option<PathBuf> = a.model.clone().or_else(|| saved.map(|s| PathBuf::from(&s.model.path)));
    let (weights, info) = load_model(&a, st.h.full, ckpt.as_ref(), model_dir.as_deref())?;
    let cfg = weights.config.clone();
    if st.h.seq > cfg.n_positions {
        return Err(format!(
            "--seq {} is longer than the model's n_positions {}",
            st.h.seq, cfg.n_positions
        ));
    }
    let adapter = load_adapter(&a, &st.h, ckpt.as_ref().map(|c| c.0.as_path()), &cfg)?;
    if let Some(c) = adapter.as_ref().map(|ad| &ad.config) {
        (st.h.lora_rank, st.h.lora_alpha, st.h.lora_targets) = (Some(c.r), Some(c.alpha), Some(c.targets.clone()));
    }
    let base_model = match (&a.model, saved) {
        (Some(m), _) => m.display().to_string(),
        (None, Some(s)) => s.model.name.clone(),
        (None, None) => String::new(),
    };
    let h = &st.h;

    // The data (the tokenizer is loaded only for text).
    let data_path: PathBuf = match (&a.data, saved) {
        (Some(d), _) => d.clone(),
        (None, Some(s)) => PathBuf::from(&s.data.path),
        (None, None) => return Err("--data is required (a .txt or .jsonl file)".into()),
    };
    let tok_dir = a
        .tokenizer
        .clone()
        .or_else(|| saved.and_then(|s| s.data.tokenizer.clone().map(PathBuf::from)));
    let tok = LazyTokenizer {
        explicit: tok_dir.is_some(),
        dir: tok_dir.or_else(|| model_dir.clone()).unwrap_or_default(),
        cell: OnceCell::new(),
    };
    let (recs, bytes) = load_records(&data_path, cfg.vocab_size, &tok)?;
    let (recs, held_out) = match h.eval_split {
        Some(f) => {
            let (t, e) = records::split_eval(recs, f, h.seed).map_err(|e| format!("--eval-split {f}: {e}"))?;
            (t, Some(e))
        }
        None => (recs, None),
    };
    let stream = TokenStream::new(&recs, cfg.eos_token_id);
    let data = DataInfo {
        path: abs(&data_path),
        bytes: bytes.len() as u64,
        fnv1a64: checkpoint::hex(checkpoint::fnv1a64(&bytes)),
        tokenizer: tok.used(),
        tokens: stream.tokens.len(),
        windows: stream.tokens.len() / (h.seq + 1),
        stream_fnv1a64: checkpoint::hex(checkpoint::stream_fnv1a64(&stream)),
    };
    if let Some(s) = saved {
        let d = &s.data;
        if (d.bytes, &d.fnv1a64) != (data.bytes, &data.fnv1a64) {
            return Err(format!(
                "--data {}: not the checkpoint's data {} ({} bytes, fnv1a64 {}; this file: {} bytes, fnv1a64 {})",
                data_path.display(),
                d.path,
                d.bytes,
                d.fnv1a64,
                data.bytes,
                data.fnv1a64
            ));
        }
        if d.stream_fnv1a64 != data.stream_fnv1a64 {
            return Err(format!(
                "--data {}: the same file gives other tokens than in the checkpoint's run (a different --tokenizer?)",
                data_path.display()
            ));
        }
    }
    let batcher = Batcher::new(stream, h.batch, h.seq, h.shuffle, h.seed).map_err(|e| e.to_string())?;
    let eval_stream = match (&st.eval_data, held_out) {
        (Some(p), _) => {
            let (r, _) = load_records(p, cfg.vocab_size, &tok)?;
            Some(TokenStream::new(&r, cfg.eos_token_id))
        }
        (None, Some(r)) => Some(TokenStream::new(&r, cfg.eos_token_id)),
        (None, None) => None,
    };
    if st.eval_every.is_some() && eval_stream.is_none() {
        return Err("--eval-every needs held-out data: --eval-data FILE or --eval-split F".into());
    }
    let mut log = match &st.log_json {
        Some(p) => Some(open_log(p, saved.map(|s| s.step))?),
        None => None,
    };
    let rec = RunRecord {
        hyper: h.clone(),
        sched: LrSchedule {
            kind: st.schedule,
            lr: h.lr,
            warmup: h.warmup,
            total: h.steps,
            min_lr: h.min_lr,
        },
        model: ModelInfo {
            name: base_model.clone(),
            ..info
        },
        data,
        options: RunOptions {
            out: abs(&out),
            eval_data: st.eval_data.as_deref().map(abs),
            eval_every: st.eval_every,
            save_every: st.save_every,
            keep_checkpoints: st.keep_checkpoints,
            log_json: st.log_json.as_deref().map(abs),
            log_every: st.log_every,
        },
        out: out.clone(),
        base_model,
    };

    // The GPU: model, trainer (restored from the checkpoint), evaluator.
    let gpu = Gpu::new_blocking(adapter_filter).map_err(|e| e.to_string())?;
    let trainable = if h.full { Trainable::Full } else { Trainable::Lora };
    let model = Gpt2Gpu::new(&gpu, &weights, adapter.as_ref(), trainable).map_err(|e| e.to_string())?;
    drop(weights);
    let adamw = adamw_of(h);
    let mut config = TrainConfig::new(h.batch, h.seq, adamw);
    config.grad_accum = h.grad_accum;
    config.readback_every = config.readback_every.min(h.steps as usize);
    let mut trainer = Trainer::new(&gpu, model, batcher, config).map_err(|e| e.to_string())?;
    if let Some((dir, s)) = &ckpt {
        let moments = checkpoint::read_moments(dir).map_err(|e| e.to_string())?;
        let what = dir.join(checkpoint::OPTIMIZER_FILE).display().to_string();
        trainer
            .restore(&gpu, s.step, s.data_position, &moments, &what)
            .map_err(|e| e.to_string())?;
    }
    let evaluator = match eval_stream {
        Some(s) => {
            let batches = Batcher::new(s, h.batch, h.seq, false, 0).map_err(|e| format!("eval data: {e}"))?.eval_batches();
            let ev = Evaluator::new(&gpu, &trainer.model, batches, h.seq);
            Some(ev.map_err(|e| format!("eval: {e}; try a smaller --batch"))?)
        }
        None => None,
    };

    let accum = if h.grad_accum > 1 {
        format!(" x {} accumulated", h.grad_accum)
    } else {
        String::new()
    };
    let warm = if h.warmup > 0 {
        format!(", {} warmup", h.warmup)
    } else {
        String::new()
    };
    eprintln!(
        "training {} on {} ({} steps, batch {} x {} tokens{accum}; lr {} {}{warm}){}",
        if h.full { "all weights" } else { "a LoRA adapter" },
        gpu.report.name,
        h.steps,
        h.batch,
        h.seq,
        h.lr,
        st.schedule,
        match &ckpt {
            Some((dir, s)) => format!("; resuming at step {} from {}", s.step, dir.display()),
            None => String::new(),
        }
    );
    if let Some(ev) = &evaluator {
        eprintln!("eval data: {} counted tokens in windows of {}", ev.tokens(), h.seq);
    }
    if interrupted() {
        eprintln!("interrupted before training started; nothing written");
        return Ok(Outcome::Interrupted { wrote: false });
    }
    run_steps(&gpu, &mut trainer, evaluator.as_ref(), &rec, &st, &mut log)
}

/// The step loop: steps, logs, evaluations and checkpoints as due, then the output and a summary.
fn run_steps(
    gpu: &Gpu,
    trainer: &mut Trainer,
    evaluator: Option<&Evaluator>,
    rec: &RunRecord,
    st: &Settings,
    log: &mut Option<std::fs::File>,
) -> Result<Outcome, String> {
    let steps = st.h.steps;
    let tokens_per_step = st.h.batch * st.h.seq * st.h.grad_accum;
    let progress = Progress::new(steps, st.start_step, tokens_per_step, st.log_every);
    let mut last_loss = f32::NAN;
    let mut last_eval: Option<(u32, f32)> = None;
    let mut saved_ckpt: Option<PathBuf> = None;
    let mut snap: Option<(u32, Snapshot)> = None;
    let write_line = |log: &mut Option<std::fs::File>, v: serde_json::Value| -> Result<(), String> {
        match log.as_mut() {
            Some(f) => writeln!(f, "{v}").map_err(|e| format!("--log-json: {e}")),
            None => Ok(()),
        }
    };
    for s in st.start_step + 1..=st.last {
        let mut logs = pollster::block_on(trainer.step(gpu, rec.sched.lr_at(s - 1))).map_err(|e| e.to_string())?;
        let intr = interrupted();
        let mut stop = s == st.last || intr;
        let eval_due = evaluator.is_some() && (st.eval_every.is_some_and(|n| s.is_multiple_of(n)) || s == steps);
        let mut save_due = st.save_every.is_some_and(|n| s.is_multiple_of(n)) || (stop && s < steps) || intr;
        if stop || eval_due || save_due {
            logs.extend(pollster::block_on(trainer.flush(gpu)).map_err(|e| e.to_string())?);
        }
        for l in logs {
            if !l.loss.is_finite() {
                progress.finish();
                return Err(format!(
                    "step {}: the loss is {} (diverged); try a smaller --lr",
                    l.step, l.loss
                ));
            }
            write_line(
                log,
                serde_json::json!({
                    "step": l.step, "loss": f32_json(l.loss), "lr": f32_json(l.lr), "grad_norm": f32_json(l.grad_norm)
                }),
            )?;
            progress.step(&l);
            last_loss = l.loss;
        }
        if let (true, Some(ev)) = (eval_due, evaluator) {
            let result = pollster::block_on(ev.run(gpu, &interrupted)).map_err(|e| e.to_string())?;
            if let Some(e) = result.map(|r| r.loss) {
                write_line(log, serde_json::json!({"step": s, "eval_loss": f32_json(e)}))?;
                progress.line(&format!("step {s:>5}  eval loss {e:.4}"));
                last_eval = Some((s, e));
            }
            // a Ctrl-C during the evaluation stops here (the logs are flushed: eval_due)
            stop |= interrupted();
            save_due |= interrupted();
        }
        if save_due {
            gpu.check().map_err(|e| e.to_string())?;
            let sn = snapshot(gpu, &trainer.model)?;
            let dir = save_checkpoint(rec, gpu, trainer, &sn)?;
            progress.line(&format!("step {s:>5}  saved checkpoint {}", dir.display()));
            saved_ckpt = Some(dir);
            snap = Some((s, sn));
        }
        if let Some(f) = log.as_mut() {
            f.flush().map_err(|e| format!("--log-json: {e}"))?;
        }
        if stop {
            break;
        }
    }
    progress.finish();
    gpu.check().map_err(|e| e.to_string())?;
    let done = trainer.steps_done();
    let sn = match snap.take() {
        Some((s, sn)) if s == done => sn,
        _ => snapshot(gpu, &trainer.model)?,
    };
    sn.save(&rec.out, &rec.base_model)?;
    let outcome = if interrupted() {
        Outcome::Interrupted { wrote: true }
    } else if done < steps {
        Outcome::Stopped
    } else {
        Outcome::Done
    };
    let eval = last_eval.map_or(String::new(), |(s, e)| format!(", eval loss {e:.4} (step {s})"));
    eprintln!(
        "{} {} steps in {} ({:.0} tok/s), last loss {last_loss:.4}{eval}; saved {} to {}",
        match outcome {
            Outcome::Done => "done:",
            Outcome::Stopped => "stopped:",
            Outcome::Interrupted { .. } => "interrupted:",
        },
        done - st.start_step,
        duration(progress.start.elapsed().as_secs_f64()),
        progress.tok_s(done),
        sn.what(),
        rec.out.display()
    );
    if let (true, Some(dir)) = (done < steps, &saved_ckpt) {
        eprintln!(
            "at step {done} of {steps}; continue with: webtune train --resume {}",
            dir.display()
        );
    }
    Ok(outcome)
}
