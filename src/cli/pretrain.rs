//! `webtune pretrain`: a GPT-2 trained from scratch (random init, every tensor trained) on a
//! text dataset with a given tokenizer. The bundled demo model (assets/model) is made by it.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use webtune::data::{Batch, Batcher, Dataset, Record, TokenStream, Tokenizer};
use webtune::flags::Style;
use webtune::gpu::Gpu;
use webtune::model::ModelGpu;
use webtune::model::{ModelConfig, Weights};
use webtune::train::checkpoint::{ModelInfo, RunOptions};
use webtune::train::eval::EvalResult;
use webtune::train::run::{Control, RunData, RunInputs};
use webtune::train::schedule::Schedule;
use webtune::train::{Run, RunSpec};

use super::paths::{self, Inputs, OutRules};
use crate::say;

/// The special token that ends each record (GPT-2's).
pub const EOS: &str = "<|endoftext|>";

#[derive(Args)]
pub struct PretrainArgs {
    /// Folder with the tokenizer: tokenizer.json (or vocab.json + merges.txt); it must have <|endoftext|>
    #[arg(long)]
    tokenizer: PathBuf,
    /// Training text: .txt or .jsonl ({"text"}, {"prompt", "completion"} or {"input_ids"} records)
    #[arg(long)]
    data: PathBuf,
    /// Output folder: config.json, model.safetensors and the tokenizer's files
    #[arg(long)]
    out: PathBuf,
    /// Transformer blocks
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Attention heads (must divide --embd)
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Width of the residual stream
    #[arg(long, default_value_t = 128)]
    embd: usize,
    /// Longest sequence the model takes (n_positions)
    #[arg(long, default_value_t = 128)]
    positions: usize,
    /// Optimizer steps
    #[arg(long, default_value_t = 1000)]
    steps: u32,
    /// Sequences per batch
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Tokens per sequence (default: --positions)
    #[arg(long)]
    seq: Option<usize>,
    /// Peak learning rate
    #[arg(long, default_value_t = 3e-3, allow_negative_numbers = true)]
    lr: f32,
    /// Warmup steps (linear ramp to --lr)
    #[arg(long, default_value_t = 50)]
    warmup: u32,
    /// Decay after warmup: constant, linear or cosine (Hugging Face's formulas)
    #[arg(long, default_value = "cosine")]
    schedule: Schedule,
    /// Floor of the linear/cosine decay
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    min_lr: f32,
    /// Seed for the initial weights, the held-out split and shuffling
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// AdamW decoupled weight decay
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    weight_decay: f32,
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    beta1: f32,
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true)]
    beta2: f32,
    /// Clip the global gradient norm to this (0 = off)
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    grad_clip: f32,
    /// Fraction of the records held out for evaluation (0 = none)
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    eval_fraction: f32,
    /// Evaluate the held-out records every N steps (0 = only at the end)
    #[arg(long, default_value_t = 0)]
    eval_every: u32,
    /// Write one JSON object per step ({"step", "loss", "lr", "grad_norm"}) and per evaluation ({"step", "eval_loss"})
    #[arg(long)]
    log_json: Option<PathBuf>,
    /// Replace webtune's results in a non-empty --out and an existing --log-json
    #[arg(long)]
    overwrite: bool,
}

/// What pretrain writes into --out.
const RESULTS: [&str; 5] = ["config.json", "model.safetensors", "tokenizer.json", "vocab.json", "merges.txt"];

/// Held-out loss of `model` over `batches` (see [`webtune::train::eval::evaluate`]).
pub fn evaluate(gpu: &Gpu, model: &ModelGpu, batches: &[Batch], seq: usize) -> Result<EvalResult, String> {
    pollster::block_on(webtune::train::eval::evaluate(gpu, model, batches, seq)).map_err(|e| e.to_string())
}

/// Evaluation batches (B windows of T+1 tokens, in file order) of `records`, at most `max_windows` windows.
pub fn eval_batches(
    records: &[Record],
    eos: u32,
    b: usize,
    t: usize,
    max_windows: usize,
) -> Result<Vec<Batch>, String> {
    let batcher = Batcher::new(TokenStream::new(records, eos), b, t, false, 0).map_err(|e| e.to_string())?;
    let mut batches = batcher.eval_batches();
    let mut left = max_windows;
    batches.retain_mut(|batch| {
        let n = batch.tokens.len() / t;
        if left == 0 {
            return false;
        }
        if n > left {
            batch.tokens.truncate(left * t);
            batch.targets.truncate(left * t);
        }
        left -= n.min(left);
        true
    });
    Ok(batches)
}

/// The tokenizer's <|endoftext|> id, or an error naming the folder.
pub fn eos_id(tok: &Tokenizer, dir: &Path) -> Result<u32, String> {
    tok.token_to_id(EOS).ok_or_else(|| {
        format!(
            "{}: the tokenizer has no {EOS} token (the end-of-text id)",
            dir.display()
        )
    })
}

/// `webtune pretrain`. --out is created only after every input has been checked and removed
/// again if the run fails and the folder was ours and is still empty.
pub fn run(adapter_filter: Option<&str>, a: PretrainArgs) -> Result<(), String> {
    let seq = a.seq.unwrap_or(a.positions);
    if !(a.eval_fraction.is_finite() && (0.0..1.0).contains(&a.eval_fraction)) {
        return Err(format!("--eval-fraction {} is invalid: it must be in [0, 1)", a.eval_fraction));
    }
    let spec = RunSpec {
        full: true,
        steps: a.steps,
        batch: a.batch,
        seq,
        lr: a.lr,
        schedule: a.schedule,
        warmup: a.warmup,
        min_lr: a.min_lr,
        weight_decay: a.weight_decay,
        beta1: a.beta1,
        beta2: a.beta2,
        grad_clip: a.grad_clip,
        seed: a.seed,
        shuffle: true,
        eval_split: (a.eval_fraction > 0.0).then_some(a.eval_fraction),
        eval_every: (a.eval_every > 0).then_some(a.eval_every),
        ..RunSpec::default()
    };
    spec.validate(Style::Cli).map_err(|e| e.to_string())?;
    if a.layers == 0 || a.heads == 0 || a.embd == 0 || a.positions == 0 {
        return Err("--layers, --heads, --embd and --positions must be at least 1".into());
    }
    if !a.embd.is_multiple_of(a.heads) {
        return Err(format!("--embd {} is not a multiple of --heads {}", a.embd, a.heads));
    }
    if seq > a.positions {
        return Err(format!("--seq {seq} is longer than --positions {}", a.positions));
    }
    let mut inputs = Inputs::default();
    inputs.add("--tokenizer folder", &a.tokenizer);
    inputs.add("--data file", &a.data);
    paths::check_out_dir("--out", &a.out, &inputs, &RESULTS)?;
    let rules = OutRules { flag: "--out", results: &RESULTS, own: false, overwrite: a.overwrite };
    let doomed = paths::plan_out(&a.out, &rules, &inputs)?;
    if let Some(log) = &a.log_json {
        paths::check_out_file("--log-json", log, &inputs)?;
        paths::prepare_log("--log-json", log, false, a.overwrite)?;
    }
    let tok = Tokenizer::load_dir(&a.tokenizer).map_err(|e| e.to_string())?;
    let eos = eos_id(&tok, &a.tokenizer)?;
    let vocab = tok.vocab_size();
    let tok_name = a.tokenizer.display().to_string();
    let data = Dataset::read(&a.data, vocab, &|| Ok((tok_name.clone(), &tok))).map_err(|e| e.to_string())?;
    let run_data = RunData::new(&data, None, &spec, eos, Style::Cli).map_err(|e| e.to_string())?;
    if a.out.is_file() {
        return Err(format!("--out {}: is a file, not a folder", a.out.display()));
    }
    let mut cfg = ModelConfig::gpt2(a.layers, a.heads, a.embd, vocab, a.positions);
    let shape = || {
        format!("--layers {} --embd {} --positions {} (vocab {vocab}): the model", a.layers, a.embd, a.positions)
    };
    webtune::model::weights::check_fits(&cfg, &shape).map_err(|e| e.to_string())?;
    cfg.eos_token_id = eos;
    cfg.bos_token_id = eos;
    if let Some(raw) = cfg.raw.as_object_mut() {
        raw.insert("eos_token_id".into(), eos.into());
        raw.insert("bos_token_id".into(), eos.into());
    }
    let removed = paths::clear(&doomed)?;
    if !removed.is_empty() {
        say!("--overwrite: removed {} from {}", removed.join(", "), a.out.display());
    }
    let mut log = match &a.log_json {
        Some(p) => Some(std::fs::File::create(p).map_err(|e| format!("--log-json {}: {e}", p.display()))?),
        None => None,
    };
    let created = !a.out.exists();
    let result = std::fs::create_dir_all(&a.out)
        .map_err(|e| format!("--out {}: cannot create the folder: {e}", a.out.display()))
        .and_then(|_| pretrain(adapter_filter, &a, cfg, spec, run_data, &mut log));
    if result.is_err() && created {
        let _ = std::fs::remove_dir(&a.out); // only succeeds when empty
    }
    result
}

fn pretrain(
    adapter_filter: Option<&str>,
    a: &PretrainArgs,
    cfg: ModelConfig,
    spec: RunSpec,
    data: RunData,
    log: &mut Option<std::fs::File>,
) -> Result<(), String> {
    let gpu = Gpu::new_blocking(adapter_filter).map_err(|e| e.to_string())?;
    let weights = Weights::random(&cfg, a.seed);
    let n_params: usize = weights.tensors.values().map(|t| t.data.len()).sum();
    let (batch, seq, steps) = (spec.batch, spec.seq, spec.steps);
    let input = RunInputs {
        weights: &weights,
        model: ModelInfo::of(&cfg, "random init", "", 0, None),
        init_adapter: None,
        data,
        spec,
        options: RunOptions::default(),
        readback_every: 16,
        style: Style::Cli,
    };
    let mut run = Run::new(&gpu, input, None, false).map_err(|e| e.to_string())?;
    eprintln!(
        "pretraining a {}-layer, {}-wide GPT-2 ({:.2} M parameters, vocab {}) on {} ({} steps, batch {} x {} tokens, {} training windows)",
        cfg.n_layer,
        cfg.n_embd,
        n_params as f64 / 1e6,
        cfg.vocab_size,
        gpu.report.name,
        steps,
        batch,
        seq,
        run.data_info.windows
    );
    let mut write = |v: serde_json::Value| -> Result<(), String> {
        match log.as_mut() {
            Some(f) => writeln!(f, "{v}").map_err(|e| format!("--log-json: {e}")),
            None => Ok(()),
        }
    };
    let f32_json = webtune::json::f32;
    let start = std::time::Instant::now();
    let mut last_loss = f32::NAN;
    loop {
        let ev = pollster::block_on(run.step(&gpu, &|| Control::Run)).map_err(|e| e.to_string())?;
        for l in &ev.logs {
            write(serde_json::json!({
                "step": l.step, "loss": f32_json(l.loss), "lr": f32_json(l.lr), "grad_norm": f32_json(l.grad_norm)
            }))?;
            let secs = start.elapsed().as_secs_f64();
            let tok_s = (l.step as usize * batch * seq) as f64 / secs.max(1e-9);
            eprintln!(
                "step {:>5}  loss {:.4}  lr {:.2e}  grad_norm {:.3}  {:.0} tok/s  {:.0} s",
                l.step, l.loss, l.lr, l.grad_norm, tok_s, secs
            );
            last_loss = l.loss;
        }
        if let Some(e) = ev.eval {
            write(serde_json::json!({"step": ev.step, "eval_loss": f32_json(e.loss), "eval_tokens": e.tokens}))?;
            eprintln!(
                "step {:>5}  held-out loss {:.4}  perplexity {:.1}  ({} tokens)",
                ev.step, e.loss, e.perplexity, e.tokens
            );
        }
        if ev.stop {
            break;
        }
    }
    let w = pollster::block_on(run.trainer.model.download_weights(&gpu)).map_err(|e| e.to_string())?;
    gpu.check().map_err(|e| e.to_string())?;
    w.save_dir(&a.out).map_err(|e| e.to_string())?;
    copy_tokenizer(&a.tokenizer, &a.out)?;
    eprintln!(
        "saved the model (config.json, model.safetensors, tokenizer) to {}; last training loss {last_loss:.4}, {:.0} s",
        a.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Copies the tokenizer's files (tokenizer.json, else vocab.json + merges.txt) next to the model.
fn copy_tokenizer(from: &Path, to: &Path) -> Result<(), String> {
    let names: &[&str] = if from.join("tokenizer.json").is_file() {
        &["tokenizer.json"]
    } else {
        &["vocab.json", "merges.txt"]
    };
    for n in names {
        let src = from.join(n);
        let bytes = std::fs::read(&src).map_err(|e| format!("{}: {e}", src.display()))?;
        webtune::model::weights::write_atomic(&to.join(n), &bytes).map_err(|e| e.to_string())?;
    }
    Ok(())
}
