//! `webtune eval`: loss and perplexity of a model on a dataset, with and without a LoRA adapter.

use std::path::PathBuf;

use clap::Args;
use webtune::data::{Batcher, Dataset};
use webtune::gpu::Gpu;
use webtune::model::{ModelGpu, Trainable};
use webtune::train::eval::{evaluate, EvalResult};

use super::generate::{check_tokenizer_fits, load_model, load_tokenizer, with_chat_template};

#[derive(Args)]
pub struct EvalArgs {
    /// Hugging Face model folder (GPT-2, Llama, Qwen2, Qwen3): config.json + model.safetensors (or its shards)
    #[arg(long)]
    model: PathBuf,
    /// Dataset: .txt, or .jsonl with {"text"}, {"prompt", "completion"} or {"input_ids"} records
    #[arg(long)]
    data: PathBuf,
    /// A PEFT LoRA adapter folder: also evaluate the model with it, and the difference; give it more
    /// than once to compare several adapters (a table: the base model, then each adapter)
    #[arg(long = "adapter", value_name = "DIR")]
    lora: Vec<PathBuf>,
    /// A Jinja chat template file for chat data, instead of the tokenizer's
    #[arg(long, value_name = "FILE")]
    chat_template: Option<PathBuf>,
    /// Folder with tokenizer.json (or vocab.json + merges.txt) for text data; default: the --model folder
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Windows per forward pass
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Tokens per window [default: 128, or the model's n_positions if smaller]
    #[arg(long)]
    seq: Option<usize>,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
    /// How frozen base weights are kept on the GPU: auto = f16 on a GPU with shader-f16 (half
    /// their memory; LoRA weights, gradients and optimizer state stay f32, products accumulate in
    /// f32; CPU adapters keep f32), f16 = f16 or refuse, f32 = the checkpoint's values exactly (as PyTorch fp32)
    #[arg(long, value_name = "auto|f16|f32", default_value = "auto")]
    base_weights: webtune::gpu::BaseWeights,
}

use webtune::json::f32 as num;

fn result_json(r: &EvalResult) -> serde_json::Value {
    serde_json::json!({ "loss": num(r.loss), "perplexity": num(r.perplexity) })
}

pub fn run(gpu_filter: Option<&str>, a: EvalArgs) -> Result<(), String> {
    if a.batch == 0 || a.seq == Some(0) {
        return Err("--batch and --seq must be at least 1".into());
    }
    let (weights, _) = load_model(&a.model, None)?;
    let mut adapters = Vec::new();
    for dir in &a.lora {
        adapters.push(webtune::model::LoraAdapter::load_peft(dir, &weights.config).map_err(|e| e.to_string())?);
    }
    let cfg = weights.config.clone();
    let seq = a.seq.unwrap_or(128.min(cfg.n_positions));
    if seq > cfg.n_positions {
        return Err(format!(
            "--seq {seq} is longer than the model's n_positions {}",
            cfg.n_positions
        ));
    }
    // Token-id data needs no tokenizer; text data does (an error naming it if there is none).
    let tok = load_tokenizer(&a.model, a.tokenizer.as_deref(), false)?;
    let tok = match tok {
        Some(t) => Some(with_chat_template(t, a.chat_template.as_deref())?),
        None => None,
    };
    if let Some(t) = &tok {
        check_tokenizer_fits(t, cfg.vocab_size)?;
    }
    let tok_name = a.tokenizer.as_deref().unwrap_or(&a.model).display().to_string();
    let tokenizer = || match &tok {
        Some(t) => Ok((tok_name.clone(), t)),
        None => Err(format!(
            "{} has no tokenizer (tokenizer.json, or vocab.json + merges.txt); give --tokenizer DIR",
            a.model.display()
        )),
    };
    let data = Dataset::read(&a.data, cfg.vocab_size, &tokenizer).map_err(|e| e.to_string())?;
    let stream = data.stream(cfg.eos_token_id).map_err(|e| e.to_string())?;
    drop(data);
    let batcher =
        Batcher::new(stream, a.batch, seq, false, 0).map_err(|e| e.to_string())?;
    let batches = batcher.eval_batches();

    let gpu = Gpu::new_blocking(gpu_filter).map_err(|e| e.to_string())?;
    gpu.set_base_weights(a.base_weights).map_err(|e| e.to_string())?;
    let run = |lora| -> Result<EvalResult, String> {
        let model = ModelGpu::new(&gpu, &weights, lora, Trainable::None).map_err(|e| e.to_string())?;
        pollster::block_on(evaluate(&gpu, &model, &batches, seq)).map_err(|e| e.to_string())
    };
    // weights are finite (checked at load), but their arithmetic can still overflow f32
    let finite = |r: EvalResult, with: &str| {
        if r.loss.is_finite() {
            return Ok(r);
        }
        Err(format!(
            "the loss of {}{with} on {} is {}: the model's arithmetic overflows f32 (its weights are finite but too large)",
            a.model.display(),
            a.data.display(),
            r.loss
        ))
    };
    let base = finite(run(None)?, "")?;
    let mut tuned_all = Vec::new();
    for (ad, dir) in adapters.iter().zip(&a.lora) {
        tuned_all.push(finite(run(Some(ad))?, &format!(" with {}", dir.display()))?);
    }
    let tuned = if tuned_all.len() == 1 { tuned_all.first() } else { None };
    gpu.check().map_err(|e| e.to_string())?;

    if a.json {
        let mut j = serde_json::json!({
            "windows": batcher.n_windows, "seq": seq, "tokens": base.tokens, "base": result_json(&base),
        });
        if let Some(t) = &tuned {
            j["adapter"] = result_json(t);
            j["difference"] = serde_json::json!({
                "loss": num(t.loss - base.loss), "perplexity": num(t.perplexity - base.perplexity),
            });
        }
        if !tuned_all.is_empty() {
            j["adapters"] = tuned_all
                .iter()
                .zip(&a.lora)
                .map(|(t, dir)| {
                    let mut r = result_json(t);
                    r["path"] = dir.display().to_string().into();
                    r["difference"] = serde_json::json!({
                        "loss": num(t.loss - base.loss), "perplexity": num(t.perplexity - base.perplexity),
                    });
                    r
                })
                .collect();
        }
        println!("{j}");
    } else {
        println!(
            "{} tokens in {} windows of {seq} (+1) tokens, on {}",
            base.tokens, batcher.n_windows, gpu.report.name
        );
        println!(
            "base model:    loss {:.6}  perplexity {:.4}",
            base.loss, base.perplexity
        );
        if tuned_all.len() > 1 {
            println!("{:<40} {:>10} {:>12} {:>10}", "adapter", "loss", "perplexity", "Δ loss");
            for (t, dir) in tuned_all.iter().zip(&a.lora) {
                println!("{:<40} {:>10.6} {:>12.4} {:>+10.6}", dir.display().to_string(), t.loss, t.perplexity, t.loss - base.loss);
            }
        }
        if let Some(t) = &tuned {
            println!("with adapter:  loss {:.6}  perplexity {:.4}", t.loss, t.perplexity);
            println!(
                "difference:    loss {:+.6}  perplexity {:+.4}  (adapter - base)",
                t.loss - base.loss,
                t.perplexity - base.perplexity
            );
        }
    }
    Ok(())
}
