//! `webtune info`: the GPU adapters this machine offers and the one webtune would use; with
//! `--model DIR`, what webtune reads in a model folder (family, shape, parameters) and whether its
//! tensors are larger than one binding of that GPU (the vocabulary tables are then split into row chunks).

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
    let limit = gpu.max_binding();
    let mib = |b: u64| match b {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    };
    let forced = if gpu.binding_limited() { " (lowered by WEBTUNE_MAX_BINDING)" } else { "" };
    println!("  this GPU binds at most {} per buffer{forced}", mib(limit));
    // the vocabulary tables are stored as row chunks when over the limit; nothing else is split
    let chunkable = [c.embedding_name(), "lm_head.weight"];
    let mut over = 0;
    for (name, t) in &w.tensors {
        let bytes = 4 * t.data.len() as u64;
        if bytes <= limit {
            continue;
        }
        over += 1;
        match (chunkable.contains(&name.as_str()), &t.shape[..]) {
            (true, &[rows, cols]) => match gpu.rows_per_binding(name, rows, cols, 4) {
                Ok(per) => println!(
                    "  {name}: {} in f32, split into {} row chunks of at most {per} rows (its gradient and AdamW state too)",
                    mib(bytes),
                    rows.div_ceil(per)
                ),
                Err(e) => println!("  {name}: does not fit: {e}"),
            },
            _ => println!("  {name}: {} in f32 does not fit one binding (only the vocabulary tables are split)", mib(bytes)),
        }
    }
    if over == 0 {
        let largest = w.tensors.iter().map(|(n, t)| (n.as_str(), 4 * t.data.len() as u64)).max_by_key(|x| x.1);
        if let Some((name, bytes)) = largest {
            println!("  every tensor fits one binding (largest {name}: {} in f32)", mib(bytes));
        }
    }
    Ok(())
}
