//! `webtune export-gguf`: a PEFT LoRA adapter as the GGUF file llama.cpp loads
//! (`llama-cli -m base.gguf --lora FILE.gguf`), and the same for `webtune train --gguf`.

use std::path::{Path, PathBuf};

use clap::Args;
use webtune::model::gguf::GgufDtype;
use webtune::model::weights::write_atomic;
use webtune::model::{LoraAdapter, ModelConfig};

#[derive(Args)]
pub struct ExportGgufArgs {
    /// The PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors)
    #[arg(long = "adapter", value_name = "DIR")]
    lora: PathBuf,
    /// The base model's Hugging Face folder (GPT-2, Llama, Qwen2, Qwen3); only its config.json is read
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// The GGUF file to write
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Tensor data type: f32 or f16
    #[arg(long, default_value = "f32")]
    outtype: GgufDtype,
    /// Replace --out if it exists
    #[arg(long)]
    overwrite: bool,
}

pub fn run(a: ExportGgufArgs) -> Result<(), String> {
    check_out("--out", &a.out, a.overwrite, &[("--adapter", &a.lora), ("--model", &a.model)])?;
    let path = a.model.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("--model {}: {e}", path.display()))?;
    let cfg = ModelConfig::from_json(&text, &path.display().to_string()).map_err(|e| e.to_string())?;
    let adapter = LoraAdapter::load_peft(&a.lora, &cfg).map_err(|e| e.to_string())?;
    let bytes = write(&adapter, &cfg, &a.out, a.outtype, &folder_name(&a.lora))?;
    eprintln!(
        "wrote {} ({} bytes, {}): the {} LoRA modules of {} (r {}, alpha {}) for llama.cpp's {}; load it with \
         llama-cli -m BASE.gguf --lora {}",
        a.out.display(),
        bytes,
        a.outtype,
        adapter.modules.len(),
        a.lora.display(),
        adapter.config.r,
        adapter.config.alpha,
        webtune::model::gguf::architecture(&cfg).unwrap_or("?"),
        a.out.display()
    );
    Ok(())
}

/// The adapter's GGUF written to `out` (a temporary file renamed into place); returns its size.
pub(crate) fn write(adapter: &LoraAdapter, cfg: &ModelConfig, out: &Path, dtype: GgufDtype, name: &str) -> Result<usize, String> {
    let bytes = adapter.to_gguf(cfg, dtype, name).map_err(|e| e.to_string())?;
    write_atomic(out, &bytes).map_err(|e| e.to_string())?;
    Ok(bytes.len())
}

/// A folder's last component (`general.name`), or "adapter".
pub(crate) fn folder_name(dir: &Path) -> String {
    std::path::absolute(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "adapter".into())
}

/// Refuses an output file `out` (named `flag` in messages) that is a folder, that exists (unless
/// `overwrite`), or that lies in one of the `inputs` folders.
pub(crate) fn check_out(flag: &str, out: &Path, overwrite: bool, inputs: &[(&str, &Path)]) -> Result<(), String> {
    if out.is_dir() {
        return Err(format!("{flag} {}: is a folder; name the .gguf file to write", out.display()));
    }
    if out.exists() && !overwrite {
        return Err(format!("{flag} {}: the file exists (give --overwrite to replace it)", out.display()));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(parent) = parent.canonicalize() {
        for (name, dir) in inputs {
            if dir.canonicalize().is_ok_and(|d| parent.starts_with(&d)) {
                return Err(format!(
                    "{flag} {} is inside the {name} folder {}: write the GGUF elsewhere (webtune never writes into its \
                     inputs)",
                    out.display(),
                    dir.display()
                ));
            }
        }
    }
    Ok(())
}

/// `webtune train --gguf FILE`, before training: a LoRA run, and FILE not a folder, not in the
/// model's folder, and absent, or a GGUF file that may be replaced: with --overwrite, or when
/// resuming (the run being continued wrote it when it stopped).
pub(crate) fn check_train_gguf(out: &Path, full: bool, model_dir: &str, overwrite: bool, resuming: bool) -> Result<(), String> {
    if full {
        return Err("--gguf writes a LoRA adapter, but this run fine-tunes every weight".into());
    }
    if out.is_file() && !is_gguf(out) {
        return Err(format!("--gguf {}: the file exists and is not a GGUF file; not replacing it", out.display()));
    }
    check_out("--gguf", out, overwrite || resuming, &[("--model", Path::new(model_dir))])
}

/// `webtune train --gguf FILE`, after training: the adapter just written to `out` as FILE.
pub(crate) fn from_train_output(out: &Path, cfg: &ModelConfig, file: &Path) -> Result<(), String> {
    let adapter = LoraAdapter::load_peft(out, cfg).map_err(|e| e.to_string())?;
    let bytes = write(&adapter, cfg, file, GgufDtype::F32, &folder_name(out))?;
    eprintln!("wrote {} ({bytes} bytes): the adapter as GGUF for llama.cpp (llama-cli --lora)", file.display());
    Ok(())
}

fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"GGUF"
}
