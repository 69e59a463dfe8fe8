//! `webtune generate`: continue a prompt with the model (and optionally a LoRA adapter).

use std::path::{Path, PathBuf};

use clap::Args;
use webtune::data::Tokenizer;
use webtune::flags::Style;
use webtune::generate::{sample_text, Generator, Prompt, SampleConfig};
use webtune::gpu::Gpu;
use webtune::model::gpt2::{Gpt2Gpu, Trainable};
use webtune::model::{Gpt2Weights, LoraAdapter};

#[derive(Args)]
pub struct GenerateArgs {
    /// Hugging Face GPT-2 folder: config.json + model.safetensors (+ tokenizer.json)
    #[arg(long)]
    model: PathBuf,
    /// A PEFT LoRA adapter folder to apply (adapter_config.json + adapter_model.safetensors)
    #[arg(long = "adapter", value_name = "DIR")]
    lora: Option<PathBuf>,
    /// Folder with tokenizer.json (or vocab.json + merges.txt); default: the --model folder
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The prompt text
    #[arg(long, required_unless_present = "prompt_file", conflicts_with = "prompt_file")]
    prompt: Option<String>,
    /// Read the prompt from this UTF-8 file (used as is, final newline included)
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    /// New tokens per sample (fewer if the model's n_positions is reached)
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Softmax temperature; 0 = greedy
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    temperature: f32,
    /// Sample from the k most likely tokens only; 0 = off
    #[arg(long, default_value_t = 50)]
    top_k: usize,
    /// Nucleus sampling: the smallest set of most likely tokens with this much mass; 1 = off
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true)]
    top_p: f32,
    /// Sampling seed (sample i uses seed + i)
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Always take the most likely token (same as --temperature 0)
    #[arg(long)]
    greedy: bool,
    /// Keep going after the model's end-of-text token
    #[arg(long)]
    no_stop_at_eos: bool,
    /// Number of continuations of the same prompt
    #[arg(long, default_value_t = 1)]
    num_samples: usize,
}

/// The tokenizer: from `explicit` (an error if it has none), else from the model folder.
/// With `required` false a model folder without one gives Ok(None).
pub(crate) fn load_tokenizer(
    model: &Path,
    explicit: Option<&Path>,
    required: bool,
) -> Result<Option<Tokenizer>, String> {
    if let Some(dir) = explicit {
        return Tokenizer::load_dir(dir).map(Some).map_err(|e| e.to_string());
    }
    let has_one = model.join("tokenizer.json").is_file()
        || (model.join("vocab.json").is_file() && model.join("merges.txt").is_file());
    if has_one {
        Tokenizer::load_dir(model).map(Some).map_err(|e| e.to_string())
    } else if required {
        Err(format!(
            "{}: no tokenizer found (tokenizer.json, or vocab.json + merges.txt); give --tokenizer DIR",
            model.display()
        ))
    } else {
        Ok(None)
    }
}

/// The model's weights and, with `lora`, the adapter checked against them.
pub(crate) fn load_model(model: &Path, lora: Option<&Path>) -> Result<(Gpt2Weights, Option<LoraAdapter>), String> {
    let weights = Gpt2Weights::load_dir(model).map_err(|e| e.to_string())?;
    let adapter = match lora {
        Some(dir) => Some(LoraAdapter::load_peft(dir, &weights.config).map_err(|e| e.to_string())?),
        None => None,
    };
    Ok((weights, adapter))
}

/// Refuses a tokenizer with more tokens than the model has rows in its embedding.
pub(crate) fn check_tokenizer_fits(tok: &Tokenizer, vocab_size: usize) -> Result<(), String> {
    if tok.vocab_size() > vocab_size {
        return Err(format!(
            "the tokenizer has {} tokens but the model's vocab_size is {vocab_size}: does the tokenizer belong to this \
             model? (give --tokenizer DIR)",
            tok.vocab_size()
        ));
    }
    Ok(())
}

pub fn run(gpu_filter: Option<&str>, a: GenerateArgs) -> Result<(), String> {
    let sample = SampleConfig {
        max_new_tokens: a.max_new_tokens,
        temperature: if a.greedy { 0.0 } else { a.temperature },
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
        stop_at_eos: !a.no_stop_at_eos,
    };
    sample.validate(Style::Cli)?;
    if a.num_samples == 0 {
        return Err("--num-samples must be at least 1".into());
    }
    let prompt = match (&a.prompt, &a.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => {
            let bytes = std::fs::read(f).map_err(|e| format!("--prompt-file {}: {e}", f.display()))?;
            String::from_utf8(bytes).map_err(|e| {
                format!(
                    "--prompt-file {}: not valid UTF-8 (byte offset {})",
                    f.display(),
                    e.utf8_error().valid_up_to()
                )
            })?
        }
        (None, None) => return Err("give --prompt TEXT or --prompt-file FILE".into()),
    };
    let (weights, adapter) = load_model(&a.model, a.lora.as_deref())?;
    let cfg = weights.config.clone();
    let tok = load_tokenizer(&a.model, a.tokenizer.as_deref(), true)?.ok_or("no tokenizer")?;
    check_tokenizer_fits(&tok, cfg.vocab_size)?;
    let prompt = Prompt::new(&tok, &prompt, &cfg, sample.max_new_tokens)?;
    if let Some(note) = &prompt.cut {
        eprintln!("note: {note}");
    }

    let gpu = Gpu::new_blocking(gpu_filter).map_err(|e| e.to_string())?;
    let model = Gpt2Gpu::new(&gpu, &weights, adapter.as_ref(), Trainable::None).map_err(|e| e.to_string())?;
    let mut generator = Generator::new(&gpu, &model, prompt.max_len).map_err(|e| e.to_string())?;
    for i in 0..a.num_samples {
        let sc = SampleConfig { seed: a.seed.wrapping_add(i as u64), ..sample.clone() };
        let out = pollster::block_on(generator.generate(&gpu, &model, &prompt.ids, &sc)).map_err(|e| e.to_string())?;
        let (text, _, _) = sample_text(&tok, out, &cfg, sc.stop_at_eos);
        if a.num_samples > 1 {
            println!("--- sample {} (seed {}) ---", i + 1, sc.seed);
        }
        println!("{text}");
    }
    gpu.check().map_err(|e| e.to_string())
}
