//! The native CLI: `webtune train` and `webtune info`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use webtune::data::{records, Batcher, TokenStream};
use webtune::gpu::Gpu;
use webtune::model::gpt2::{Gpt2Gpu, Trainable};
use webtune::model::{Gpt2Weights, LoraAdapter, LoraConfig};
use webtune::train::{AdamWConfig, TrainConfig, Trainer};

#[derive(Parser)]
#[command(name = "webtune", version, about = "Fine-tune GPT-2-family models on this device (wgpu: Vulkan, Metal, DX12)")]
struct Cli {
    /// Use the first GPU adapter whose name contains this (also WEBTUNE_ADAPTER)
    #[arg(long, global = true)]
    adapter: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a LoRA adapter (default) or the whole model (--full)
    Train(TrainArgs),
    /// Show the GPU adapters, the chosen one's backend, limits and features
    Info,
}

#[derive(Args)]
struct TrainArgs {
    /// Hugging Face GPT-2 folder: config.json + model.safetensors
    #[arg(long)]
    model: PathBuf,
    /// Training data: JSONL, one {"input_ids": [...]} record per line
    #[arg(long)]
    data: PathBuf,
    /// Output folder: a PEFT adapter (LoRA) or a full HF checkpoint (--full)
    #[arg(long)]
    out: PathBuf,
    /// LoRA rank r
    #[arg(long, default_value_t = 8)]
    lora_rank: usize,
    /// LoRA alpha (the update is scaled by alpha / r)
    #[arg(long, default_value_t = 16.0, allow_negative_numbers = true)]
    lora_alpha: f32,
    /// Comma-separated PEFT target modules: c_attn, c_proj (attention and MLP), c_fc, attn.c_proj, mlp.c_proj
    #[arg(long, default_value = "c_attn,c_proj,c_fc", value_delimiter = ',')]
    lora_targets: Vec<String>,
    /// Fine-tune every tensor instead of training a LoRA adapter
    #[arg(long, conflicts_with = "init_adapter")]
    full: bool,
    /// Start from an existing PEFT LoRA adapter (its r, alpha and targets are used)
    #[arg(long)]
    init_adapter: Option<PathBuf>,
    /// Optimizer steps
    #[arg(long, default_value_t = 100)]
    steps: u32,
    /// Sequences per batch
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Tokens per sequence (at most the model's n_positions)
    #[arg(long, default_value_t = 128)]
    seq: usize,
    #[arg(long, default_value_t = 2e-4, allow_negative_numbers = true)]
    lr: f32,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    weight_decay: f32,
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    beta1: f32,
    #[arg(long, default_value_t = 0.999, allow_negative_numbers = true)]
    beta2: f32,
    #[arg(long, default_value_t = 1e-8, allow_negative_numbers = true)]
    eps: f32,
    /// Clip the global gradient norm to this (0 = off)
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    grad_clip: f32,
    /// Seed for LoRA init and shuffling
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Take windows in file order instead of shuffling them
    #[arg(long)]
    no_shuffle: bool,
    /// Write one JSON object per step: {"step", "loss", "lr", "grad_norm"}
    #[arg(long)]
    log_json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => with_out_dir(&args.out.clone(), || train(cli.adapter.as_deref(), args)),
        Command::Info => info(cli.adapter.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn info(adapter: Option<&str>) -> Result<(), String> {
    println!("GPU adapters:");
    for a in Gpu::list_adapters() {
        println!("  {a}");
    }
    let gpu = Gpu::new_blocking(adapter).map_err(|e| e.to_string())?;
    println!("chosen: {}", gpu.report);
    Ok(())
}

/// Runs `f` with `out` created up front (so an unwritable --out fails before training),
/// and removes `out` again if `f` fails and the folder is one we made and left empty.
fn with_out_dir(out: &Path, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    if out.is_file() {
        return Err(format!("--out {}: is a file, not a folder", out.display()));
    }
    let created = !out.exists();
    let result = std::fs::create_dir_all(out).map_err(|e| format!("--out {}: cannot create the folder: {e}", out.display())).and_then(|_| f());
    if result.is_err() && created {
        let _ = std::fs::remove_dir(out); // only succeeds when empty
    }
    result
}

fn train(adapter_filter: Option<&str>, a: TrainArgs) -> Result<(), String> {
    // Validate every input before touching the GPU or the output folder.
    let adamw = AdamWConfig {
        lr: a.lr,
        beta1: a.beta1,
        beta2: a.beta2,
        eps: a.eps,
        weight_decay: a.weight_decay,
        grad_clip: a.grad_clip,
    };
    adamw.validate(|name| format!("--{name}")).map_err(|e| e.to_string())?;
    if a.steps == 0 || a.batch == 0 || a.seq == 0 {
        return Err("--steps, --batch and --seq must be at least 1".into());
    }
    let weights = Gpt2Weights::load_dir(&a.model).map_err(|e| e.to_string())?;
    let cfg = weights.config.clone();
    if a.seq > cfg.n_positions {
        return Err(format!("--seq {} is longer than the model's n_positions {}", a.seq, cfg.n_positions));
    }
    let adapter = if a.full {
        None
    } else if let Some(dir) = &a.init_adapter {
        Some(LoraAdapter::load_peft(dir, &cfg).map_err(|e| e.to_string())?)
    } else {
        let lc = LoraConfig::new(a.lora_rank, a.lora_alpha, a.lora_targets.clone(), 0.0).map_err(|e| e.to_string())?;
        Some(LoraAdapter::init(lc, &cfg, a.seed))
    };
    let recs = records::read_jsonl(&a.data, cfg.vocab_size).map_err(|e| e.to_string())?;
    let stream = TokenStream::new(&recs, cfg.eos_token_id);
    let batcher = Batcher::new(stream, a.batch, a.seq, !a.no_shuffle, a.seed).map_err(|e| e.to_string())?;
    let mut log = match &a.log_json {
        Some(p) => Some(std::fs::File::create(p).map_err(|e| format!("--log-json {}: {e}", p.display()))?),
        None => None,
    };

    let gpu = Gpu::new_blocking(adapter_filter).map_err(|e| e.to_string())?;
    let trainable = if a.full { Trainable::Full } else { Trainable::Lora };
    let model = Gpt2Gpu::new(&gpu, &weights, adapter.as_ref(), trainable).map_err(|e| e.to_string())?;
    let mut config = TrainConfig::new(a.batch, a.seq, adamw);
    config.readback_every = config.readback_every.min(a.steps as usize);
    let mut trainer = Trainer::new(&gpu, model, batcher, config).map_err(|e| e.to_string())?;
    eprintln!(
        "training {} on {} ({} steps, batch {} x {} tokens)",
        if a.full { "all weights" } else { "a LoRA adapter" },
        gpu.report.name,
        a.steps,
        a.batch,
        a.seq
    );
    let start = std::time::Instant::now();
    for s in 0..a.steps {
        let mut logs = pollster::block_on(trainer.step(&gpu, a.lr)).map_err(|e| e.to_string())?;
        if s + 1 == a.steps {
            logs.extend(pollster::block_on(trainer.flush(&gpu)).map_err(|e| e.to_string())?);
        }
        for l in logs {
            if !l.loss.is_finite() {
                return Err(format!("step {}: the loss is {} (diverged); try a smaller --lr", l.step, l.loss));
            }
            if let Some(f) = log.as_mut() {
                let line = serde_json::json!({
                    "step": l.step, "loss": f32_json(l.loss), "lr": f32_json(l.lr), "grad_norm": f32_json(l.grad_norm)
                });
                writeln!(f, "{line}").map_err(|e| format!("--log-json: {e}"))?;
            }
            let secs = start.elapsed().as_secs_f64();
            let tok_s = (l.step as usize * a.batch * a.seq) as f64 / secs.max(1e-9);
            eprintln!("step {:>5}  loss {:.4}  grad_norm {:.3}  {:.0} tok/s", l.step, l.loss, l.grad_norm, tok_s);
        }
    }
    gpu.check().map_err(|e| e.to_string())?;
    save(&gpu, &trainer.model, &a.out, &a.model)
}

/// An f32 as the JSON number with its shortest decimal form (0.01, not 0.009999999776).
fn f32_json(x: f32) -> serde_json::Value {
    x.to_string().parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(serde_json::Value::Null, Into::into)
}

fn save(gpu: &Gpu, model: &Gpt2Gpu, out: &Path, model_dir: &Path) -> Result<(), String> {
    if model.trainable == Trainable::Full {
        let w = pollster::block_on(model.download_weights(gpu)).map_err(|e| e.to_string())?;
        w.save_dir(out).map_err(|e| e.to_string())?;
        eprintln!("saved the fine-tuned model (config.json, model.safetensors) to {}", out.display());
    } else if let Some(adapter) = pollster::block_on(model.download_adapter(gpu)).map_err(|e| e.to_string())? {
        adapter.save_peft(out, &model_dir.display().to_string()).map_err(|e| e.to_string())?;
        eprintln!("saved the LoRA adapter (adapter_config.json, adapter_model.safetensors) to {}", out.display());
    }
    Ok(())
}
