//! `webtune bench`: measures matmul GFLOP/s, training steps and generation (src/bench.rs does the work).

use std::path::PathBuf;

use clap::Args;
use webtune::gpu::Gpu;

#[derive(Args)]
pub struct BenchArgs {
    /// What to measure: matmul, train, generate or all
    #[arg(long, default_value = "all", value_parser = ["matmul", "train", "generate", "all"])]
    what: String,
    /// Matmul sizes: S (S x S x S) or MxNxK, comma-separated [CPU adapter: 256,512,1024; GPU: 1024,2048,4096]
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<String>,
    /// Timed samples per matmul size and layout, and of each generation call (at most 5); medians are reported
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Matmul products recorded per sample (default: enough for ~50 ms)
    #[arg(long)]
    reps: Option<usize>,
    /// Model: tiny (GPT-2, 2 layers, 64 wide, 4 heads, vocab 256), small (2/128/4/512), gpt2, gpt2-medium,
    /// smollm2-135m, qwen2.5-0.5b (shaped as those checkpoints' config.json, random weights)
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Override the preset's layer count
    #[arg(long)]
    layers: Option<usize>,
    /// Override the preset's width (GPT-2 presets only)
    #[arg(long)]
    embd: Option<usize>,
    /// Override the preset's head count (GPT-2 presets only)
    #[arg(long)]
    heads: Option<usize>,
    /// Override the preset's vocabulary size
    #[arg(long)]
    vocab: Option<usize>,
    /// Override the preset's n_positions
    #[arg(long)]
    positions: Option<usize>,
    /// Sequences per batch [preset's: tiny 2, small 4, gpt2 8, gpt2-medium 4, smollm2-135m 4, qwen2.5-0.5b 2]
    #[arg(long)]
    batch: Option<usize>,
    /// Tokens per sequence [preset's: tiny 32, small 64, gpt2 512, gpt2-medium 512, smollm2-135m 256, qwen2.5-0.5b 256]
    #[arg(long)]
    seq: Option<usize>,
    /// lora (r 8, alpha 16 on every linear layer) or full; comma-separated to run both
    #[arg(long, default_value = "lora", value_delimiter = ',', value_parser = ["lora", "full"])]
    mode: Vec<String>,
    /// Timed training steps
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed training steps first
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Generation: prompt tokens [16, at most half the model's n_positions]
    #[arg(long)]
    prompt: Option<usize>,
    /// Generation: tokens decoded after the prompt [32, at most what n_positions leaves]
    #[arg(long)]
    new_tokens: Option<usize>,
    /// Generation: a model folder (config.json, model.safetensors) instead of the random preset
    #[arg(long)]
    model: Option<PathBuf>,
    /// Also write the results (with the machine) as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
    /// Print the memory plan of each training workload and exit: no GPU is opened, nothing runs
    /// (with --json, the plans are written there; matmul and generate have none)
    #[arg(long)]
    dry_run: bool,
    /// GPU memory the training workloads may use (e.g. 6G; also WEBTUNE_GPU_MEMORY): a larger plan is refused
    #[arg(long, value_name = "SIZE")]
    gpu_memory: Option<String>,
    /// How frozen base weights are kept on the GPU: auto = f16 on a GPU with shader-f16 (half
    /// their memory; LoRA weights, gradients and optimizer state stay f32, products accumulate in
    /// f32; CPU adapters keep f32), f16 = f16 or refuse, f32 = the checkpoint's values exactly (as PyTorch fp32)
    #[arg(long, value_name = "auto|f16|f32", default_value = "auto")]
    base_weights: webtune::gpu::BaseWeights,
}

pub fn run(adapter: Option<&str>, a: BenchArgs) -> Result<(), String> {
    use webtune::bench::{self as wb, Mode};
    let err = |e: wb::BenchError| e.to_string();
    let shapes = a.sizes.iter().map(|s| wb::parse_shape(s)).collect::<Result<Vec<_>, _>>().map_err(err)?;
    let p = wb::preset(&a.preset).map_err(err)?;
    let overrides =
        wb::ShapeOverrides { layers: a.layers, embd: a.embd, heads: a.heads, vocab: a.vocab, positions: a.positions };
    let custom = overrides.any();
    let config = p.config_with(&overrides).map_err(err)?;
    let name = if custom { format!("{} (custom)", p.name) } else { p.name.to_string() };
    let (batch, seq) = (a.batch.unwrap_or(p.batch), a.seq.unwrap_or(p.seq));
    let bench_of = |m: &str| -> Result<wb::TrainBench, String> {
        let mode = if m == "full" { Mode::Full } else { Mode::Lora };
        let mut tb = wb::TrainBench::new(&name, config.clone(), batch, seq, mode).map_err(err)?;
        (tb.steps, tb.warmup) = (a.steps, a.warmup);
        tb.half_weights = a.base_weights == webtune::gpu::BaseWeights::F16;
        Ok(tb)
    };
    let budget = super::gpu_memory(a.gpu_memory.as_deref())?;
    if a.dry_run {
        let train = a.what == "train" || a.what == "all";
        let modes = if train { a.mode.as_slice() } else { &[] };
        return dry_run(&a, &modes.iter().map(|m| bench_of(m)).collect::<Result<Vec<_>, _>>()?, budget);
    }
    let gpu = Gpu::new_blocking(adapter).map_err(|e| e.to_string())?;
    gpu.set_base_weights(a.base_weights).map_err(|e| e.to_string())?;
    gpu.set_memory_budget(budget);
    let mut report = wb::Report::new(&gpu);
    eprintln!("bench on {}", gpu.report);
    eprintln!("frozen base weights: {} (--base-weights)", report.base_weights);
    if a.what == "matmul" || a.what == "all" {
        let shapes = match shapes.is_empty() {
            true => wb::default_matmul_sizes(&gpu.report).into_iter().map(|s| (s, s, s)).collect(),
            false => shapes,
        };
        let layouts = wb::Layout::ALL.to_vec();
        let cfg = wb::MatmulBench { shapes, layouts, iters: a.iters, warmup: 2, reps: a.reps };
        let mut show = |r: &wb::MatmulResult| {
            eprintln!("matmul {:?} {}x{}x{}: {:.1} GFLOP/s", r.layout, r.m, r.n, r.k, r.gflops)
        };
        report.matmul = wb::bench_matmul(&gpu, &cfg, &mut show).map_err(err)?;
    }
    if a.what == "train" || a.what == "all" {
        for m in &a.mode {
            let r = wb::bench_train(&gpu, &bench_of(m)?).map_err(err)?;
            let (name, ms, tps) = (&r.name, r.median_ms, r.tokens_per_s);
            eprintln!("train {name} {m} {batch}x{seq}: median {ms:.1} ms/step, {tps:.0} tokens/s");
            report.train.push(r);
        }
    }
    if a.what == "generate" || a.what == "all" {
        let (name, weights) = match &a.model {
            Some(dir) => {
                let w = webtune::model::Weights::load_dir(dir).map_err(|e| e.to_string())?;
                (dir.display().to_string(), w)
            }
            None => (name.clone(), webtune::model::Weights::random(&config, 0)),
        };
        let room = weights.config.n_positions.saturating_sub(1);
        let prompt = a.prompt.unwrap_or(16.min(room / 2)).max(1);
        let new_tokens = a.new_tokens.unwrap_or(32.min(room.saturating_sub(prompt))).max(1);
        let gb = wb::GenerateBench { name, weights, prompt, new_tokens, iters: a.iters.clamp(1, 5) };
        let r = wb::bench_generate(&gpu, &gb).map_err(err)?;
        eprintln!(
            "generate {}: prefill {} tokens {:.1} ms, decode {:.2} ms/token ({:.1} tokens/s)",
            r.name,
            r.prompt_tokens,
            1e3 * r.prefill_s,
            1e3 * r.decode_s_per_token,
            r.decode_tokens_per_s
        );
        report.generate.push(r);
    }
    println!("{}", report.table());
    if let Some(path) = &a.json {
        report.write_json(path).map_err(err)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// `--dry-run`: each training workload's memory plan (a table each, or JSON with --json), no GPU.
fn dry_run(a: &BenchArgs, benches: &[webtune::bench::TrainBench], budget: Option<u64>) -> Result<(), String> {
    let mut plans = Vec::new();
    for tb in benches {
        let plan = tb.plan().map_err(|e| e.to_string())?;
        let c = &tb.config;
        let mode = match tb.mode {
            webtune::bench::Mode::Lora => format!("LoRA r{}", tb.lora.r),
            webtune::bench::Mode::Full => "full".into(),
        };
        println!(
            "{} ({}, {} layers, {} wide, {} heads, {} kv heads, vocab {}, {} parameters), {mode}:",
            tb.name,
            c.model_type,
            c.n_layer,
            c.n_embd,
            c.n_head,
            c.n_kv_head,
            c.vocab_size,
            webtune::model::weights::param_count(c).map_or("too many".into(), |n| n.to_string())
        );
        print!("{}", plan.table(None));
        if let Some(b) = budget {
            let limits = webtune::train::DeviceLimits { max_binding: u64::MAX, max_buffer: u64::MAX, budget: Some(b), half_weights: false };
            match tb.check_fits(&limits) {
                Ok(_) => println!("  within the budget of {}", webtune::memory::human(b)),
                Err(e) => println!("  {e}"),
            }
        }
        plans.push(serde_json::json!({
            "name": tb.name, "model_type": c.model_type, "mode": tb.mode, "n_layer": c.n_layer, "n_kv_head": c.n_kv_head,
            "params_total": webtune::model::weights::param_count(c), "n_embd": c.n_embd, "n_head": c.n_head,
            "vocab": c.vocab_size, "n_positions": c.n_positions, "batch": tb.batch, "seq": tb.seq,
            "lora_rank": (tb.mode == webtune::bench::Mode::Lora).then_some(tb.lora.r), "plan": plan.to_json(),
        }));
    }
    println!("(per-buffer limits are the GPU's: run without --dry-run to check them)");
    if let Some(path) = &a.json {
        let v = serde_json::json!({"dry_run": true, "train": plans});
        let text = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())? + "\n";
        webtune::model::weights::write_atomic(path, text.as_bytes()).map_err(|e| e.to_string())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
