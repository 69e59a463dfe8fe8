//! `webtune merge`: fold a LoRA adapter into the base weights and write a full HF checkpoint.

use std::path::{Path, PathBuf};

use clap::Args;

use super::generate::load_model;
use super::paths::{self, Inputs, OutRules};
use crate::say;

#[derive(Args)]
pub struct MergeArgs {
    /// Hugging Face model folder (GPT-2, Llama, Qwen2, Qwen3): config.json + model.safetensors (or its shards)
    #[arg(long)]
    model: PathBuf,
    /// The PEFT LoRA adapter folder to merge (adapter_config.json + adapter_model.safetensors)
    #[arg(long = "adapter", value_name = "DIR")]
    lora: PathBuf,
    /// Output folder: config.json + model.safetensors (f32) and the model's tokenizer files
    #[arg(long)]
    out: PathBuf,
    /// Replace the files of an earlier merge in a non-empty --out
    #[arg(long)]
    overwrite: bool,
}

/// Files copied from the model folder when present.
const COPIED: [&str; 6] = [
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
];

pub fn run(a: MergeArgs) -> Result<(), String> {
    let out = &a.out;
    let mut inputs = Inputs::default();
    inputs.add("--model folder", &a.model);
    inputs.add("--adapter folder", &a.lora);
    let mut results = vec!["config.json", "model.safetensors"];
    results.extend(COPIED);
    paths::check_out_dir("--out", out, &inputs, &results)?;
    let rules = OutRules { flag: "--out", results: &results, own: false, overwrite: a.overwrite };
    let doomed = paths::plan_out(out, &rules, &inputs)?;
    let (mut weights, adapter) = load_model(&a.model, Some(&a.lora))?;
    let adapter = adapter.ok_or("no adapter")?;
    adapter.merge_into(&mut weights).map_err(|e| e.to_string())?;
    // finite inputs can still overflow f32 when summed: such a model is not written
    for (name, t) in &weights.tensors {
        t.check_finite("", name).map_err(|e| match e {
            webtune::model::ModelError::NotFinite { value, count, len, .. } => format!(
                "merging {} into {} gives {value} in tensor '{name}' ({count} of {len} values are NaN or infinite): \
                 the adapter's update overflows f32; nothing was written",
                a.lora.display(),
                a.model.display()
            ),
            e => e.to_string(),
        })?;
    }
    let mut copies = Vec::new();
    for name in COPIED {
        let p = a.model.join(name);
        if p.is_file() {
            copies.push((name, std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?));
        }
    }

    // Everything is written into a temporary sibling folder first, then moved into place.
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let leaf = out
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "merged".into());
    std::fs::create_dir_all(&parent)
        .map_err(|e| format!("--out {}: cannot create {}: {e}", out.display(), parent.display()))?;
    paths::clean_leftovers(&parent, Some(&leaf));
    let tmp = parent.join(format!(".{leaf}.merge-tmp{}", std::process::id()));
    let removed = paths::clear(&doomed)?;
    if !removed.is_empty() {
        say!("--overwrite: removed {} from {}", removed.join(", "), out.display());
    }
    let result = write_into(&tmp, &weights, &copies)
        .map_err(|e| e.replace(&tmp.display().to_string(), &out.display().to_string()))
        .and_then(|names| move_into_place(&tmp, out, &names).map(|_| names));
    let _ = std::fs::remove_dir_all(&tmp); // gone already when it was renamed to --out
    let names = result?;
    say!(
        "merged the {} LoRA modules of {} (r {}, alpha {}, scale {}) into the weights of {}; wrote {} to {}",
        adapter.modules.len(),
        a.lora.display(),
        adapter.config.r,
        adapter.config.alpha,
        adapter.scale(),
        a.model.display(),
        names.join(", "),
        out.display()
    );
    Ok(())
}

/// Writes the checkpoint and the copied files into `tmp` (a fresh folder); returns the file names.
fn write_into(
    tmp: &Path,
    weights: &webtune::model::Weights,
    copies: &[(&str, Vec<u8>)],
) -> Result<Vec<String>, String> {
    if tmp.exists() {
        std::fs::remove_dir_all(tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    }
    weights.save_dir(tmp).map_err(|e| e.to_string())?;
    let mut names = vec!["config.json".to_string(), "model.safetensors".to_string()];
    for (name, bytes) in copies {
        let p = tmp.join(name);
        std::fs::write(&p, bytes).map_err(|e| format!("{}: {e}", p.display()))?;
        names.push(name.to_string());
    }
    Ok(names)
}

/// `tmp` becomes `out` (one rename) when `out` does not exist; otherwise each file is renamed into `out`.
fn move_into_place(tmp: &Path, out: &Path, names: &[String]) -> Result<(), String> {
    if !out.exists() {
        return std::fs::rename(tmp, out).map_err(|e| format!("--out {}: {e}", out.display()));
    }
    for name in names {
        std::fs::rename(tmp.join(name), out.join(name)).map_err(|e| format!("--out {}: {name}: {e}", out.display()))?;
    }
    Ok(())
}
