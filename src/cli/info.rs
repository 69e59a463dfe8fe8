//! `webtune info`: the GPU adapters this machine offers and the one webtune would use; with
//! `--model DIR`, what webtune reads in a model folder (family, shape, parameters) and whether its
//! largest tensor fits one binding of that GPU.

use std::path::PathBuf;

use clap::Args;
use webtune::gpu::Gpu;
use webtune::model::{Family, Weights};

#[derive(Args)]
pub struct InfoArgs {
    /// A Hugging Face model folder to describe (config.json + model.safetensors or its shards)
    #[arg(long)]
    model: Option<PathBuf>,
}

pub fn run(adapter: Option<&str>, a: InfoArgs) -> Result<(), String> {
    println!("GPU adapters:");
    for a in Gpu::list_adapters() {
        println!("  {a}");
    }
    let gpu = Gpu::new_blocking(adapter).map_err(|e| e.to_string())?;
    println!("chosen: {}", gpu.report);
    let Some(dir) = a.model else { return Ok(()) };
    let w = Weights::load_dir(&dir).map_err(|e| e.to_string())?;
    let c = &w.config;
    let params: usize = w.tensors.values().map(|t| t.data.len()).sum();
    println!("model {}: {} ({} layers, hidden {}, vocab {}, n_positions {})", dir.display(), c.model_type, c.n_layer, c.n_embd, c.vocab_size, c.n_positions);
    if c.family == Family::Llama {
        let rope = c.rope.as_ref().map_or(String::new(), |r| format!(", rope theta {} {:?}", r.theta, r.scaling));
        println!(
            "  {} query heads over {} key/value heads of {}, intermediate {}, rms_norm_eps {}{rope}{}{}",
            c.n_head,
            c.n_kv_head,
            c.head_dim,
            c.intermediate,
            c.layer_norm_epsilon,
            if c.qkv_bias { ", q/k/v biases" } else { "" },
            if c.qk_norm { ", q/k norms" } else { "" },
        );
    } else {
        println!("  {} heads of {}, MLP {}", c.n_head, c.head_dim, c.intermediate);
    }
    let tied = if w.tensors.contains_key("lm_head.weight") { "untied head" } else { "head tied to the embedding" };
    println!("  {params} parameters ({tied}), eos {:?}, bos {}", c.eos_token_ids, c.bos_token_id);
    let (name, largest) =
        w.tensors.iter().map(|(n, t)| (n.as_str(), 4 * t.data.len() as u64)).max_by_key(|x| x.1).unwrap_or(("", 0));
    let limit = gpu.report.max_storage_buffer_binding_size;
    println!(
        "  largest tensor {name}: {:.1} MiB in f32; this GPU binds at most {:.1} MiB per buffer{}",
        largest as f64 / (1 << 20) as f64,
        limit as f64 / (1 << 20) as f64,
        if largest > limit { " (it does not fit)" } else { "" }
    );
    Ok(())
}
