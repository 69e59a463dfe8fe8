//! `webtune generate`: continue a prompt with the model (and optionally a LoRA adapter).

use std::path::{Path, PathBuf};

use clap::Args;
use webtune::data::Tokenizer;
use webtune::flags::Style;
use webtune::generate::{sample_text_until, Generator, Prompt, SampleConfig};
use webtune::gpu::Gpu;
use webtune::model::{ModelGpu, Trainable};
use webtune::model::{Weights, LoraAdapter};

#[derive(Args)]
pub struct GenerateArgs {
    /// Hugging Face model folder (GPT-2, Llama, Qwen2, Qwen3): config.json + model.safetensors (+ tokenizer.json)
    #[arg(long)]
    model: PathBuf,
    /// A PEFT LoRA adapter folder to apply (adapter_config.json + adapter_model.safetensors); give it
    /// more than once to compare: the base model and each adapter continue the prompt (same seed)
    #[arg(long = "adapter", value_name = "DIR")]
    lora: Vec<PathBuf>,
    /// Folder with tokenizer.json (or vocab.json + merges.txt); default: the --model folder
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The prompt text (with --chat: the user's message)
    #[arg(long, required_unless_present_any = ["prompt_file", "messages"], conflicts_with = "prompt_file")]
    prompt: Option<String>,
    /// Chat: format the prompt as a user message with the tokenizer's chat template (add_generation_prompt)
    /// and stop at the template's end-of-turn token
    #[arg(long)]
    chat: bool,
    /// Chat: the whole conversation from this JSON file, a list of {"role", "content"} (implies --chat)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["prompt", "prompt_file"])]
    messages: Option<PathBuf>,
    /// A Jinja chat template file to use instead of the tokenizer's
    #[arg(long, value_name = "FILE")]
    chat_template: Option<PathBuf>,
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
    /// How frozen base weights are kept on the GPU: auto = f16 on a GPU with shader-f16 (half
    /// their memory; LoRA weights, gradients and optimizer state stay f32, products accumulate in
    /// f32; CPU adapters keep f32), f16 = f16 or refuse, f32 = the checkpoint's values exactly (as PyTorch fp32)
    #[arg(long, value_name = "auto|f16|f32", default_value = "auto")]
    base_weights: webtune::gpu::BaseWeights,
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

/// `tok` with the chat template of `file` (a `--chat-template FILE`), when given.
pub(crate) fn with_chat_template(tok: Tokenizer, file: Option<&Path>) -> Result<Tokenizer, String> {
    let Some(f) = file else { return Ok(tok) };
    let bytes = std::fs::read(f).map_err(|e| format!("--chat-template {}: {e}", f.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        format!("--chat-template {}: not valid UTF-8 (byte offset {})", f.display(), e.utf8_error().valid_up_to())
    })?;
    tok.with_chat_template(&text, &f.display().to_string()).map_err(|e| e.to_string())
}

/// A `--messages FILE`: a JSON list of {"role", "content"}.
fn read_messages(f: &Path) -> Result<Vec<serde_json::Value>, String> {
    let text = std::fs::read_to_string(f).map_err(|e| format!("--messages {}: {e}", f.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("--messages {}: invalid JSON: {e}", f.display()))?;
    webtune::data::chat::check_messages(&v, "the list").map_err(|e| format!("--messages {}: {e}", f.display()))
}

/// The model's weights and, with `lora`, the adapter checked against them.
pub(crate) fn load_model(model: &Path, lora: Option<&Path>) -> Result<(Weights, Option<LoraAdapter>), String> {
    let weights = Weights::load_dir(model).map_err(|e| e.to_string())?;
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
    let chat = a.chat || a.messages.is_some();
    let prompt = match (&a.prompt, &a.prompt_file) {
        _ if a.messages.is_some() => String::new(),
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
    let weights = Weights::load_dir(&a.model).map_err(|e| e.to_string())?;
    let mut adapters = Vec::new();
    for dir in &a.lora {
        adapters.push(LoraAdapter::load_peft(dir, &weights.config).map_err(|e| e.to_string())?);
    }
    let cfg = weights.config.clone();
    let tok = load_tokenizer(&a.model, a.tokenizer.as_deref(), true)?.ok_or("no tokenizer")?;
    let tok = with_chat_template(tok, a.chat_template.as_deref())?;
    check_tokenizer_fits(&tok, cfg.vocab_size)?;
    let (prompt, stops) = if chat {
        let messages = match &a.messages {
            Some(f) => read_messages(f)?,
            None => vec![serde_json::json!({"role": "user", "content": prompt})],
        };
        let p = Prompt::chat(&tok, &messages, &cfg, sample.max_new_tokens)?;
        (p, tok.chat_end_of_turn().into_iter().collect::<Vec<u32>>())
    } else {
        (Prompt::new(&tok, &prompt, &cfg, sample.max_new_tokens)?, Vec::new())
    };
    if let Some(note) = &prompt.cut {
        eprintln!("note: {note}");
    }

    // one adapter (or none): as always; several: the base model, then each adapter, under headings
    let mut runs: Vec<(Option<String>, Option<&LoraAdapter>)> = Vec::new();
    if adapters.len() > 1 {
        runs.push((Some("base model".into()), None));
        for (dir, ad) in a.lora.iter().zip(&adapters) {
            runs.push((Some(format!("adapter {}", dir.display())), Some(ad)));
        }
    } else {
        runs.push((None, adapters.first()));
    }
    let gpu = Gpu::new_blocking(gpu_filter).map_err(|e| e.to_string())?;
    gpu.set_base_weights(a.base_weights).map_err(|e| e.to_string())?;
    for (heading, adapter) in runs {
        if let Some(h) = heading {
            println!("=== {h} ===");
        }
        let model = ModelGpu::new(&gpu, &weights, adapter, Trainable::None).map_err(|e| e.to_string())?;
        let mut generator = Generator::new(&gpu, &model, prompt.max_len).map_err(|e| e.to_string())?;
        generator.stop_also_at(&stops);
        for i in 0..a.num_samples {
            let sc = SampleConfig { seed: a.seed.wrapping_add(i as u64), ..sample.clone() };
            let out = pollster::block_on(generator.generate(&gpu, &model, &prompt.ids, &sc)).map_err(|e| e.to_string())?;
            let (text, _, _) = sample_text_until(&tok, out, &cfg, sc.stop_at_eos, &stops);
            if a.num_samples > 1 {
                println!("--- sample {} (seed {}) ---", i + 1, sc.seed);
            }
            println!("{text}");
        }
    }
    gpu.check().map_err(|e| e.to_string())
}
