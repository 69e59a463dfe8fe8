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
    /// Model shape: tiny (2 layers, 64 wide, 4 heads, vocab 256), small (2/128/4/512), gpt2, gpt2-medium
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Override the preset's layer count
    #[arg(long)]
    layers: Option<usize>,
    /// Override the preset's width
    #[arg(long)]
    embd: Option<usize>,
    /// Override the preset's head count
    #[arg(long)]
    heads: Option<usize>,
    /// Override the preset's vocabulary size
    #[arg(long)]
    vocab: Option<usize>,
    /// Override the preset's n_positions
    #[arg(long)]
    positions: Option<usize>,
    /// Sequences per batch [preset's: tiny 2, small 4, gpt2 8, gpt2-medium 4]
    #[arg(long)]
    batch: Option<usize>,
    /// Tokens per sequence [preset's: tiny 32, small 64, gpt2 512, gpt2-medium 512]
    #[arg(long)]
    seq: Option<usize>,
    /// lora (r 8, alpha 16 on c_attn, c_proj, c_fc) or full; comma-separated to run both
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
}

pub fn run(adapter: Option<&str>, a: BenchArgs) -> Result<(), String> {
    use webtune::bench::{self as wb, Mode};
    let err = |e: wb::BenchError| e.to_string();
    let shapes = a.sizes.iter().map(|s| wb::parse_shape(s)).collect::<Result<Vec<_>, _>>().map_err(err)?;
    let p = wb::preset(&a.preset).map_err(err)?;
    let custom = [a.layers, a.embd, a.heads, a.vocab, a.positions].iter().any(|o| o.is_some());
    let layers = a.layers.unwrap_or(p.n_layer);
    let (embd, heads, vocab) = (a.embd.unwrap_or(p.n_embd), a.heads.unwrap_or(p.n_head), a.vocab.unwrap_or(p.vocab));
    if layers == 0 || embd == 0 || heads == 0 || vocab < 2 || !embd.is_multiple_of(heads) {
        return Err(format!(
            "--layers {layers}, --embd {embd}, --heads {heads}, --vocab {vocab}: \
             need every one >= 1 (vocab >= 2) and embd a multiple of heads"
        ));
    }
    let config = webtune::model::ModelConfig::gpt2(layers, heads, embd, vocab, a.positions.unwrap_or(p.n_positions));
    let gpu = Gpu::new_blocking(adapter).map_err(|e| e.to_string())?;
    let mut report = wb::Report::new(&gpu);
    eprintln!("bench on {}", gpu.report);
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
        let name = if custom { format!("{} (custom)", p.name) } else { p.name.to_string() };
        let (batch, seq) = (a.batch.unwrap_or(p.batch), a.seq.unwrap_or(p.seq));
        for m in &a.mode {
            let mode = if m == "full" { Mode::Full } else { Mode::Lora };
            let mut tb = wb::TrainBench::new(&name, config.clone(), batch, seq, mode).map_err(err)?;
            (tb.steps, tb.warmup) = (a.steps, a.warmup);
            let r = wb::bench_train(&gpu, &tb).map_err(err)?;
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
            None => {
                let name = if custom { format!("{} (custom)", p.name) } else { p.name.to_string() };
                (name, webtune::model::Weights::random(&config, 0))
            }
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
