//! `webtune bench`: measures matmul GFLOP/s and training-step time on this device.
//! It reports numbers; it asserts nothing about them.
//!
//! - Matmul: C = A·B for each layout (NN, NT, TN). One sample records `reps` copies of
//!   the prepared dispatch into one encoder, submits once and waits for a one-element
//!   readback, so per-submit overhead is amortised; the time per product is the
//!   sample's time / reps, and GFLOP/s = 2·m·n·k / median time.
//!   The tile each product runs is the one the tuner picks on this device
//!   ([`tile_for`]; its [`name`](crate::kernels::matmul::Tile::name) in the report).
//! - Training: a random-init GPT-2 of the given shape, [`Trainer`] steps with a
//!   constant learning rate on random tokens. After `warmup` steps, `steps` steps are
//!   timed one by one (each waited for, no readback) for the median and mean, then
//!   `steps` more are queued back to back with one readback at the end ("pipelined",
//!   as `webtune train` runs them). Memory is the bytes of the tensors webtune
//!   allocates for the run (weights, activations, gradients, AdamW state).
//! - Generation: a model (random preset or a model folder), greedy KV-cached decoding of
//!   one sequence. Prefill = one `generate` call asking for 1 new token (the batched forward
//!   over the prompt, its last logits row read back); decode = the extra time of a call asking
//!   for `new_tokens` + 1, per extra token (one N = 1 step program and one logits readback
//!   each). Medians over `iters` calls of each.

use std::time::Instant;

use serde::Serialize;

use crate::data::{Batcher, Record, TokenStream};
use crate::gpu::{AdapterReport, Gpu, GpuError, Program};
use crate::generate::{Generator, SampleConfig};
use crate::kernels::matmul::{matmul, tile_for, Matmul};
use crate::model::{ModelGpu, Trainable};
use crate::model::{ModelConfig, Weights, Linear, LoraAdapter, LoraConfig};
use crate::train::plan::{self, DeviceLimits, MemoryPlan, PlanContext};
use crate::train::{AdamWConfig, RunSpec, TrainConfig, Trainer};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Webtune(#[from] crate::Error),
    #[error("{path}: {msg}")]
    Io { path: String, msg: String },
}

impl From<GpuError> for BenchError {
    fn from(e: GpuError) -> Self {
        BenchError::Webtune(e.into())
    }
}

// ---------------------------------------------------------------------------------------
// Machine

/// Where the numbers were measured.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub adapter: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    /// Host CPU threads available to this process.
    pub cpu_threads: usize,
    /// Build profile of webtune itself ("debug" = `cargo run`, "release" = `--release`).
    pub profile: &'static str,
    pub webtune_version: &'static str,
    /// Seconds since the Unix epoch when the report was made.
    pub unix_time: u64,
}

impl Machine {
    pub fn of(report: &AdapterReport) -> Machine {
        Machine {
            adapter: report.name.clone(),
            backend: report.backend.clone(),
            device_type: report.device_type.clone(),
            driver: report.driver.clone(),
            cpu_threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            profile: if cfg!(debug_assertions) { "debug" } else { "release" },
            webtune_version: env!("CARGO_PKG_VERSION"),
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Statistics

/// Median of `v` (mean of the two middle values for an even count); 0 for none.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

// ---------------------------------------------------------------------------------------
// Matmul

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Layout {
    /// C = A·B
    NN,
    /// C = A·Bᵀ
    NT,
    /// C = Aᵀ·B
    TN,
}

impl Layout {
    pub const ALL: [Layout; 3] = [Layout::NN, Layout::NT, Layout::TN];
}

/// What the matmul bench runs.
#[derive(Clone, Debug)]
pub struct MatmulBench {
    /// (m, n, k) of each product.
    pub shapes: Vec<(usize, usize, usize)>,
    pub layouts: Vec<Layout>,
    /// Timed samples per (shape, layout); the reported time is their median.
    pub iters: usize,
    /// Untimed samples first (one product each).
    pub warmup: usize,
    /// Products per sample; None picks enough for a sample of ~50 ms (1..=1000).
    pub reps: Option<usize>,
}

/// Square sizes that finish quickly: small ones on a CPU adapter (lavapipe), big ones on a GPU.
pub fn default_matmul_sizes(report: &AdapterReport) -> Vec<usize> {
    if report.device_type == "Cpu" {
        vec![256, 512, 1024]
    } else {
        vec![1024, 2048, 4096]
    }
}

/// "S" (a square S×S×S product) or "MxNxK".
pub fn parse_shape(s: &str) -> Result<(usize, usize, usize), BenchError> {
    let bad = || {
        BenchError::Invalid(format!(
            "matmul size '{s}': expected a size like 1024 or MxNxK like 512x768x64"
        ))
    };
    let parts: Vec<usize> = s
        .trim()
        .split('x')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let shape = match parts[..] {
        [n] => (n, n, n),
        [m, n, k] => (m, n, k),
        _ => return Err(bad()),
    };
    if shape.0 == 0 || shape.1 == 0 || shape.2 == 0 {
        return Err(bad());
    }
    Ok(shape)
}

/// 2·m·n·k: one multiply and one add per term.
pub fn matmul_flops(m: usize, n: usize, k: usize) -> u64 {
    2 * m as u64 * n as u64 * k as u64
}

#[derive(Clone, Debug, Serialize)]
pub struct MatmulResult {
    pub layout: Layout,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// The kernel tile the tuner chose for this product on this device
    /// ([`Tile::name`](crate::kernels::matmul::Tile::name)).
    pub tile: String,
    /// Products recorded per sample.
    pub reps: usize,
    /// Seconds per product of each timed sample (sample time / reps).
    pub samples_s: Vec<f64>,
    pub median_s: f64,
    pub flops: u64,
    /// flops / median_s / 1e9
    pub gflops: f64,
}

/// Times one sample: `reps` copies of `prog` in one encoder, one submit, then a
/// one-element readback of `out`. Returns the wall time in seconds.
fn time_sample(
    gpu: &Gpu,
    prog: &Program,
    reps: usize,
    out: &wgpu::Buffer,
    staging: &wgpu::Buffer,
) -> Result<f64, BenchError> {
    let t0 = Instant::now();
    let mut enc = gpu.encoder("bench");
    for _ in 0..reps {
        prog.record(&mut enc);
    }
    enc.copy_buffer_to_buffer(out, 0, staging, 0, 4);
    gpu.submit(enc);
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    gpu.poll_wait();
    let mapped = rx
        .recv()
        .map_err(|_| GpuError::Readback("bench output".into(), "device dropped the request".into()))?;
    mapped.map_err(|e| GpuError::Readback("bench output".into(), e.to_string()))?;
    let secs = t0.elapsed().as_secs_f64();
    staging.unmap();
    gpu.check()?;
    Ok(secs)
}

/// Runs every (shape, layout) of `cfg`; `progress` gets each result as it is measured.
pub fn bench_matmul(
    gpu: &Gpu,
    cfg: &MatmulBench,
    progress: &mut dyn FnMut(&MatmulResult),
) -> Result<Vec<MatmulResult>, BenchError> {
    if cfg.iters == 0 {
        return Err(BenchError::Invalid("--iters must be at least 1".into()));
    }
    let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("bench readback"),
        size: 4,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut results = Vec::new();
    for &(m, n, k) in &cfg.shapes {
        // the GPU's limits first, so a huge size is refused before its host data is made
        for (what, dims) in [("A [m, k]", [m, k]), ("B [k, n]", [k, n]), ("C [m, n]", [m, n])] {
            let bytes = crate::memory::elements(&dims).and_then(crate::memory::bytes_of::<f32>).unwrap_or(u64::MAX);
            gpu.check_binding(&format!("matmul {m}x{n}x{k}: {what}"), bytes)?;
        }
        let a = gpu.upload("bench a", &[m * k], &random(m * k, 1))?;
        let b = gpu.upload("bench b", &[k * n], &random(k * n, 2))?;
        let c = gpu.zeros("bench c", &[m * n])?;
        for &layout in &cfg.layouts {
            let spec = match layout {
                Layout::NN => Matmul::new(m, n, k),
                Layout::NT => Matmul::new(m, n, k).tb(),
                Layout::TN => Matmul::new(m, n, k).ta(),
            };
            let mut prog = Program::new();
            matmul(gpu, &mut prog, &spec, &a, &b, &c, None);
            let mut last = 0.0;
            for _ in 0..cfg.warmup.max(1) {
                last = time_sample(gpu, &prog, 1, &c.buffer, &staging)?;
            }
            let reps = cfg
                .reps
                .unwrap_or_else(|| (0.05 / last.max(1e-6)).ceil().clamp(1.0, 1000.0) as usize)
                .max(1);
            let mut samples_s = Vec::with_capacity(cfg.iters);
            for _ in 0..cfg.iters {
                samples_s.push(time_sample(gpu, &prog, reps, &c.buffer, &staging)? / reps as f64);
            }
            let median_s = median(&samples_s);
            let flops = matmul_flops(m, n, k);
            let r = MatmulResult {
                layout,
                m,
                n,
                k,
                tile: tile_for(gpu, &spec).name(),
                reps,
                samples_s,
                median_s,
                flops,
                gflops: flops as f64 / median_s / 1e9,
            };
            progress(&r);
            results.push(r);
        }
    }
    Ok(results)
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut r = crate::rng::Rng::new(seed);
    (0..n).map(|_| r.uniform_in(-1.0, 1.0)).collect()
}

// ---------------------------------------------------------------------------------------
// Training

/// A named model with its comparison batch shape (the shapes PERF.md compares with).
/// `config` is a full [`ModelConfig`]: GPT-2 shapes from [`ModelConfig::gpt2`], the
/// Llama-family ones parsed by [`ModelConfig::from_json`] from the published checkpoint's
/// config.json (the loader real checkpoints go through).
#[derive(Clone, Debug)]
pub struct Preset {
    pub name: &'static str,
    pub config: ModelConfig,
    pub batch: usize,
    pub seq: usize,
}

/// HuggingFaceTB/SmolLM2-135M's config.json (its model fields; dropout, dtype and the like left out).
pub const SMOLLM2_135M_CONFIG: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3,
  "intermediate_size": 1536, "vocab_size": 49152, "max_position_embeddings": 8192,
  "hidden_act": "silu", "rms_norm_eps": 1e-05, "rope_theta": 100000, "rope_scaling": null,
  "attention_bias": false, "mlp_bias": false, "tie_word_embeddings": true,
  "bos_token_id": 0, "eos_token_id": 0
}"#;

/// Qwen/Qwen2.5-0.5B's config.json (its model fields; dropout, dtype and the like left out).
pub const QWEN2_5_0_5B_CONFIG: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
  "num_hidden_layers": 24, "hidden_size": 896, "num_attention_heads": 14, "num_key_value_heads": 2,
  "intermediate_size": 4864, "vocab_size": 151936, "max_position_embeddings": 32768,
  "hidden_act": "silu", "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
  "use_sliding_window": false, "sliding_window": 32768, "max_window_layers": 24, "tie_word_embeddings": true,
  "bos_token_id": 151643, "eos_token_id": 151643
}"#;

/// The preset names, in the order [`presets`] lists them.
pub const PRESET_NAMES: [&str; 6] = ["tiny", "small", "gpt2", "gpt2-medium", "smollm2-135m", "qwen2.5-0.5b"];

/// Every preset (GPT-2: name, layers, heads, width, vocab, positions; then the Llama family).
pub fn presets() -> Vec<Preset> {
    let gpt2 = |name, l, h, c, v, p, batch, seq| Preset { name, config: ModelConfig::gpt2(l, h, c, v, p), batch, seq };
    let mut v = vec![
        gpt2("tiny", 2, 4, 64, 256, 64, 2, 32),
        gpt2("small", 2, 4, 128, 512, 128, 4, 64),
        gpt2("gpt2", 12, 12, 768, 50257, 1024, 8, 512),
        gpt2("gpt2-medium", 24, 16, 1024, 50257, 1024, 4, 512),
    ];
    for (name, json, batch, seq) in [("smollm2-135m", SMOLLM2_135M_CONFIG, 4, 256), ("qwen2.5-0.5b", QWEN2_5_0_5B_CONFIG, 2, 256)] {
        // a literal of this file: tests/bench.rs parses both, so a failure here is a programming error
        if let Ok(config) = ModelConfig::from_json(json, &format!("preset {name}'s config.json")) {
            v.push(Preset { name, config, batch, seq });
        }
    }
    v
}

pub fn preset(name: &str) -> Result<Preset, BenchError> {
    presets().into_iter().find(|p| p.name == name).ok_or_else(|| {
        BenchError::Invalid(format!("unknown preset '{name}'; presets are {}", PRESET_NAMES.join(", ")))
    })
}

/// `--layers --embd --heads --vocab --positions`: changes to a preset's shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShapeOverrides {
    pub layers: Option<usize>,
    pub embd: Option<usize>,
    pub heads: Option<usize>,
    pub vocab: Option<usize>,
    pub positions: Option<usize>,
}

impl ShapeOverrides {
    pub fn any(&self) -> bool {
        [self.layers, self.embd, self.heads, self.vocab, self.positions].iter().any(|o| o.is_some())
    }
}

impl Preset {
    /// The preset's config with `o` applied. GPT-2 takes all five; a Llama-family preset takes
    /// layers, vocab and positions (written into its config.json, which is parsed again; token ids
    /// past a smaller vocabulary become its last id) and refuses `--embd`/`--heads`, whose
    /// head_dim, kv heads and MLP width would have to be invented.
    pub fn config_with(&self, o: &ShapeOverrides) -> Result<ModelConfig, BenchError> {
        let c = &self.config;
        let layers = o.layers.unwrap_or(c.n_layer);
        let vocab = o.vocab.unwrap_or(c.vocab_size);
        let positions = o.positions.unwrap_or(c.n_positions);
        if c.family == crate::model::Family::Gpt2 {
            let (embd, heads) = (o.embd.unwrap_or(c.n_embd), o.heads.unwrap_or(c.n_head));
            if layers == 0 || embd == 0 || heads == 0 || vocab < 2 || positions == 0 || !embd.is_multiple_of(heads) {
                return Err(BenchError::Invalid(format!(
                    "--layers {layers}, --embd {embd}, --heads {heads}, --vocab {vocab}, --positions {positions}: \
                     need every one >= 1 (vocab >= 2) and embd a multiple of heads"
                )));
            }
            return Ok(ModelConfig::gpt2(layers, heads, embd, vocab, positions));
        }
        if o.embd.is_some() || o.heads.is_some() {
            return Err(BenchError::Invalid(format!(
                "--embd and --heads apply to the GPT-2 presets only: preset '{}' ({}) has its config.json's \
                 hidden_size {}, {} heads ({} key/value heads) and intermediate_size {}; it takes --layers, --vocab, --positions",
                self.name, c.model_type, c.n_embd, c.n_head, c.n_kv_head, c.intermediate
            )));
        }
        if layers == 0 || vocab < 2 || positions == 0 {
            return Err(BenchError::Invalid(format!(
                "--layers {layers}, --vocab {vocab}, --positions {positions}: need layers and positions >= 1, vocab >= 2"
            )));
        }
        let mut raw = c.raw.clone();
        if let Some(obj) = raw.as_object_mut() {
            obj.insert("num_hidden_layers".into(), layers.into());
            obj.insert("vocab_size".into(), vocab.into());
            obj.insert("max_position_embeddings".into(), positions.into());
            for id in ["bos_token_id", "eos_token_id"] {
                if obj.get(id).and_then(|v| v.as_u64()).is_some_and(|x| x >= vocab as u64) {
                    obj.insert(id.into(), (vocab - 1).into());
                }
            }
        }
        let what = format!("preset {} with --layers {layers} --vocab {vocab} --positions {positions}", self.name);
        Ok(ModelConfig::from_json(&raw.to_string(), &what).map_err(crate::Error::from)?)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Lora,
    Full,
}

/// What the training bench runs.
#[derive(Clone, Debug)]
pub struct TrainBench {
    /// Shown in the report (a preset name or "custom").
    pub name: String,
    pub config: ModelConfig,
    pub batch: usize,
    pub seq: usize,
    pub mode: Mode,
    /// LoRA r, alpha and targets (used in `Mode::Lora`).
    pub lora: LoraConfig,
    pub warmup: usize,
    pub steps: usize,
    pub lr: f32,
    pub seed: u64,
    /// Plan frozen weight matrices as f16 when no device says (`bench --dry-run --base-weights f16`);
    /// a run on a device follows [`Gpu::half_weights`].
    pub half_weights: bool,
}

impl TrainBench {
    /// The bench defaults: LoRA r 8, alpha 16 on every linear of the family (GPT-2's c_attn, c_proj, c_fc;
    /// Llama's q/k/v/o, gate/up/down projections); 3 warm-up and 10 timed steps.
    pub fn new(name: &str, config: ModelConfig, batch: usize, seq: usize, mode: Mode) -> Result<TrainBench, BenchError> {
        let targets = LoraConfig::default_targets(config.family);
        let lora = LoraConfig::new(8, 16.0, targets, 0.0, config.family).map_err(crate::Error::from)?;
        Ok(TrainBench {
            name: name.into(),
            config,
            batch,
            seq,
            mode,
            lora,
            warmup: 3,
            steps: 10,
            lr: 1e-4,
            seed: 0,
            half_weights: false,
        })
    }
}

impl TrainBench {
    /// Loss readbacks: only explicit flushes read back (after the warm-up and each phase).
    fn readback_every(&self) -> usize {
        self.warmup + 2 * self.steps + 1
    }

    /// The bench as a run's settings (for the memory plan).
    fn spec(&self) -> RunSpec {
        RunSpec {
            full: self.mode == Mode::Full,
            lora_rank: self.lora.r,
            lora_alpha: self.lora.alpha,
            lora_targets: Some(self.lora.targets.clone()),
            steps: u32::MAX,
            batch: self.batch,
            seq: self.seq,
            lr: self.lr,
            seed: self.seed,
            shuffle: false,
            ..RunSpec::default()
        }
    }

    fn plan_context(&self) -> PlanContext {
        let cfg = &self.config;
        PlanContext {
            // Weights::random makes a head only for an untied Llama-family config
            untied_head: !cfg.tie_word_embeddings && cfg.family != crate::model::Family::Gpt2,
            readback_every: self.readback_every(),
            head_bytes: crate::train::trainer::HEAD_BYTES,
            half_weights: self.half_weights,
            ..PlanContext::default()
        }
    }

    /// The memory plan of this bench's run: what it allocates on the GPU (no GPU needed).
    pub fn plan(&self) -> Result<MemoryPlan, BenchError> {
        Ok(MemoryPlan::of(&self.config, &self.spec(), &self.plan_context()).map_err(crate::Error::from)?)
    }

    /// Refuses a bench whose plan does not fit `limits`, with the batch and seq that would.
    /// The plan is made for that device (its binding limit splits vocabulary tables into rows).
    pub fn check_fits(&self, limits: &DeviceLimits) -> Result<MemoryPlan, BenchError> {
        let ctx = PlanContext { max_binding: Some(limits.max_binding), half_weights: limits.half_weights, ..self.plan_context() };
        let p = MemoryPlan::of(&self.config, &self.spec(), &ctx).map_err(crate::Error::from)?;
        plan::check(&p, &self.config, &self.spec(), &ctx, limits, crate::flags::Style::Cli).map_err(crate::Error::from)?;
        Ok(p)
    }
}

/// Matmul FLOPs of one training step (forward, loss head, backward; AdamW and the
/// elementwise kernels are not counted). N = B·T. Per layer the four linears cost
/// 2·N·in·out each forward (24·N·C² in all), attention 4·B·T²·C forward and 8·B·T²·C
/// backward (counted as the full T×T, though the kernels skip the masked half); the
/// head 2·N·C·V forward. Backward computes every linear's input gradient (another
/// 2·N·in·out) and the head's (2·N·C·V); weight gradients (2·N·in·out, 2·N·C·V) only
/// when the base is trained (`lora` None). A LoRA pair of rank r on a linear costs
/// 2·N·r·(in+out) forward and 4·N·r·(in+out) backward. So full fine-tuning is
/// 72·L·N·C² + 12·L·B·T²·C + 6·N·C·V, and LoRA on every linear
/// 48·L·N·C² + 12·L·B·T²·C + 4·N·C·V + 96·L·N·r·C.
pub fn train_flops(cfg: &ModelConfig, b: usize, t: usize, lora: Option<&LoraConfig>) -> u64 {
    let (b, t) = (b as u64, t as u64);
    let (c, v, l) = (cfg.n_embd as u64, cfg.vocab_size as u64, cfg.n_layer as u64);
    let n = b * t;
    let width = (cfg.n_head * cfg.head_dim) as u64;
    let mut per_layer = 12 * b * t * t * width; // attention: 4 forward + 8 backward
    for &lin in Linear::of(cfg.family) {
        let (fin, fout) = lin.dims(cfg);
        let (fin, fout) = (fin as u64, fout as u64);
        let base = 2 * n * fin * fout;
        per_layer += match lora {
            None => 3 * base,
            Some(lc) if lc.matches(lin) => 2 * base + 6 * n * lc.r as u64 * (fin + fout),
            Some(_) => 2 * base,
        };
    }
    let head = 2 * n * c * v * if lora.is_none() { 3 } else { 2 };
    l * per_layer + head
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainResult {
    pub name: String,
    /// config.json's model_type (gpt2, llama, qwen2, ...).
    pub model_type: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub vocab: usize,
    pub n_positions: usize,
    pub batch: usize,
    pub seq: usize,
    pub mode: Mode,
    /// LoRA rank (None for full fine-tuning).
    pub lora_rank: Option<usize>,
    pub warmup: usize,
    pub steps: usize,
    pub params_total: u64,
    pub params_trained: u64,
    /// Seconds of each timed step, each waited for to completion.
    pub step_s: Vec<f64>,
    pub median_ms: f64,
    pub mean_ms: f64,
    /// Sum of `step_s`.
    pub seconds: f64,
    /// batch · seq · steps / seconds
    pub tokens_per_s: f64,
    /// Wall time of `steps` more steps queued back to back, one readback at the end.
    pub pipelined_seconds: f64,
    /// batch · seq · steps / pipelined_seconds
    pub pipelined_tokens_per_s: f64,
    /// [`train_flops`] of one step.
    pub flops_per_step: u64,
    /// flops_per_step / median step time / 1e9
    pub gflops: f64,
    /// Bytes of the tensors webtune allocated for the run ([`Gpu::allocated_bytes`]).
    pub tensor_bytes: u64,
    /// The run's memory plan, made before anything was allocated ([`MemoryPlan::to_json`]);
    /// its `total_bytes` equals `tensor_bytes`.
    pub plan: serde_json::Value,
    /// Loss of the last step (a sanity check that the steps did real work).
    pub final_loss: f32,
}

/// What a train bench reports from its timings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepTiming {
    pub median_ms: f64,
    pub mean_ms: f64,
    /// Sum of the timed steps.
    pub seconds: f64,
    /// tokens_per_step · steps / seconds
    pub tokens_per_s: f64,
    /// tokens_per_step · steps / pipelined_seconds
    pub pipelined_tokens_per_s: f64,
    /// flops_per_step / median step time / 1e9
    pub gflops: f64,
}

impl StepTiming {
    /// `step_s`: each timed step's seconds; `pipelined_seconds`: as many steps again, queued back to back.
    pub fn of(step_s: &[f64], pipelined_seconds: f64, tokens_per_step: usize, flops_per_step: u64) -> StepTiming {
        let tokens = (tokens_per_step * step_s.len()) as f64;
        let seconds: f64 = step_s.iter().sum();
        let median_s = median(step_s);
        StepTiming {
            median_ms: 1e3 * median_s,
            mean_ms: 1e3 * mean(step_s),
            seconds,
            tokens_per_s: tokens / seconds,
            pipelined_tokens_per_s: tokens / pipelined_seconds,
            gflops: flops_per_step as f64 / median_s / 1e9,
        }
    }
}

/// Builds the model and trainer, then times its steps (see the module doc).
pub fn bench_train(gpu: &Gpu, tb: &TrainBench) -> Result<TrainResult, BenchError> {
    let cfg = &tb.config;
    if tb.batch == 0 || tb.seq == 0 || tb.steps == 0 {
        return Err(BenchError::Invalid(
            "--batch, --seq and --steps must be at least 1".into(),
        ));
    }
    if cfg.n_layer == 0
        || cfg.n_head == 0
        || cfg.n_embd == 0
        || cfg.vocab_size == 0
        || !cfg.n_embd.is_multiple_of(cfg.n_head)
    {
        return Err(BenchError::Invalid(format!(
            "model shape: layers {}, embd {}, heads {}, vocab {}: \
             every one must be at least 1 and embd a multiple of heads",
            cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.vocab_size
        )));
    }
    if tb.seq > cfg.n_positions {
        return Err(BenchError::Invalid(format!(
            "--seq {} is longer than n_positions {}",
            tb.seq, cfg.n_positions
        )));
    }
    let plan = tb.check_fits(&DeviceLimits::of(gpu))?;
    let before = gpu.allocated_bytes();
    let shape = || format!("a {}-layer, {}-wide {} with vocab {}", cfg.n_layer, cfg.n_embd, cfg.model_type, cfg.vocab_size);
    crate::model::weights::check_fits(cfg, &shape).map_err(crate::Error::from)?;
    let weights = Weights::random(cfg, tb.seed);
    let (adapter, trainable) = match tb.mode {
        Mode::Lora => (Some(LoraAdapter::init(tb.lora.clone(), cfg, tb.seed)), Trainable::Lora),
        Mode::Full => (None, Trainable::Full),
    };
    let model = ModelGpu::new(gpu, &weights, adapter.as_ref(), trainable)?;
    drop(weights);
    let params_total: u64 = model.params().iter().map(|p| p.value.len() as u64).sum();
    let params_trained: u64 = model.trained().iter().map(|p| p.value.len() as u64).sum();

    // Random tokens, enough windows for a few distinct batches.
    let mut rng = crate::rng::Rng::new(tb.seed.wrapping_add(1));
    let ids: Vec<u32> = (0..4 * tb.batch * (tb.seq + 1))
        .map(|_| rng.below(cfg.vocab_size) as u32)
        .collect();
    let stream = TokenStream::new(
        &[Record {
            input_ids: ids,
            labels: None,
        }],
        cfg.eos_token_id,
    );
    let batcher = Batcher::new(stream, tb.batch, tb.seq, false, tb.seed).map_err(crate::Error::from)?;
    let adamw = AdamWConfig {
        lr: tb.lr,
        ..AdamWConfig::default()
    };
    let mut config = TrainConfig::new(tb.batch, tb.seq, adamw);
    // Only explicit flushes read back: after the warm-up and at the end of each phase.
    config.readback_every = tb.readback_every();
    let mut trainer = Trainer::new(gpu, model, batcher, config).map_err(crate::Error::from)?;
    let tensor_bytes = gpu.allocated_bytes() - before;

    let step = |trainer: &mut Trainer| -> Result<(), BenchError> {
        pollster::block_on(trainer.step(gpu, tb.lr))?;
        Ok(())
    };
    let flush = |trainer: &mut Trainer| -> Result<f32, BenchError> {
        let logs = pollster::block_on(trainer.flush(gpu))?;
        gpu.check()?;
        Ok(logs.last().map(|l| l.loss).unwrap_or(f32::NAN))
    };
    for _ in 0..tb.warmup {
        step(&mut trainer)?;
    }
    flush(&mut trainer)?;

    let mut step_s = Vec::with_capacity(tb.steps);
    for _ in 0..tb.steps {
        let t0 = Instant::now();
        step(&mut trainer)?;
        gpu.poll_wait();
        step_s.push(t0.elapsed().as_secs_f64());
    }
    flush(&mut trainer)?;

    let t0 = Instant::now();
    for _ in 0..tb.steps {
        step(&mut trainer)?;
    }
    let final_loss = flush(&mut trainer)?;
    let pipelined_seconds = t0.elapsed().as_secs_f64();
    if !final_loss.is_finite() {
        return Err(BenchError::Invalid(format!(
            "the loss became {final_loss} during the bench"
        )));
    }

    let lora = (tb.mode == Mode::Lora).then_some(&tb.lora);
    let flops_per_step = train_flops(cfg, tb.batch, tb.seq, lora);
    let timing = StepTiming::of(&step_s, pipelined_seconds, tb.batch * tb.seq, flops_per_step);
    Ok(TrainResult {
        name: tb.name.clone(),
        model_type: cfg.model_type.clone(),
        n_layer: cfg.n_layer,
        n_embd: cfg.n_embd,
        n_head: cfg.n_head,
        vocab: cfg.vocab_size,
        n_positions: cfg.n_positions,
        batch: tb.batch,
        seq: tb.seq,
        mode: tb.mode,
        lora_rank: lora.map(|l| l.r),
        warmup: tb.warmup,
        steps: tb.steps,
        params_total,
        params_trained,
        median_ms: timing.median_ms,
        mean_ms: timing.mean_ms,
        seconds: timing.seconds,
        tokens_per_s: timing.tokens_per_s,
        pipelined_seconds,
        pipelined_tokens_per_s: timing.pipelined_tokens_per_s,
        flops_per_step,
        gflops: timing.gflops,
        tensor_bytes,
        plan: plan.to_json(),
        final_loss,
        step_s,
    })
}

// ---------------------------------------------------------------------------------------
// Generation

/// What the generation bench runs.
#[derive(Clone, Debug)]
pub struct GenerateBench {
    /// Shown in the report (a preset name or the model folder).
    pub name: String,
    pub weights: Weights,
    /// Prompt tokens (random ids) and tokens decoded after it; together at most n_positions.
    pub prompt: usize,
    pub new_tokens: usize,
    /// Timed calls of each kind (the medians are reported); one untimed call first.
    pub iters: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct GenerateResult {
    pub name: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub vocab: usize,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    /// Median seconds of a call that prefills the prompt and returns 1 token.
    pub prefill_s: f64,
    /// prompt_tokens / prefill_s
    pub prefill_tokens_per_s: f64,
    /// Median seconds per decoded token after the first.
    pub decode_s_per_token: f64,
    /// 1 / decode_s_per_token
    pub decode_tokens_per_s: f64,
}

/// Times prefill and decoding (see the module doc).
pub fn bench_generate(gpu: &Gpu, gb: &GenerateBench) -> Result<GenerateResult, BenchError> {
    let cfg = &gb.weights.config;
    if gb.prompt == 0 || gb.new_tokens == 0 || gb.iters == 0 {
        return Err(BenchError::Invalid("--prompt, --new-tokens and --iters must be at least 1".into()));
    }
    let max_len = gb.prompt + gb.new_tokens + 1;
    if max_len > cfg.n_positions {
        return Err(BenchError::Invalid(format!(
            "--prompt {} + --new-tokens {} + 1 is more than the model's n_positions {}",
            gb.prompt, gb.new_tokens, cfg.n_positions
        )));
    }
    let model = ModelGpu::new(gpu, &gb.weights, None, Trainable::None)?;
    let mut generator = Generator::new(gpu, &model, max_len)?;
    let mut rng = crate::rng::Rng::new(7);
    let prompt: Vec<u32> = (0..gb.prompt).map(|_| rng.below(cfg.vocab_size) as u32).collect();
    let mut call = |new: usize| -> Result<f64, BenchError> {
        let sc = SampleConfig { max_new_tokens: new, temperature: 0.0, stop_at_eos: false, ..SampleConfig::default() };
        let t0 = Instant::now();
        let out = pollster::block_on(generator.generate(gpu, &model, &prompt, &sc))?;
        let secs = t0.elapsed().as_secs_f64();
        gpu.check()?;
        if out.len() != new {
            return Err(BenchError::Invalid(format!("generation returned {} tokens, not {new}", out.len())));
        }
        Ok(secs)
    };
    call(2)?; // compiles and allocates
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for _ in 0..gb.iters {
        let one = call(1)?;
        let many = call(gb.new_tokens + 1)?;
        prefill.push(one);
        decode.push((many - one).max(0.0) / gb.new_tokens as f64);
    }
    let (prefill_s, decode_s) = (median(&prefill), median(&decode));
    Ok(GenerateResult {
        name: gb.name.clone(),
        n_layer: cfg.n_layer,
        n_embd: cfg.n_embd,
        n_head: cfg.n_head,
        vocab: cfg.vocab_size,
        prompt_tokens: gb.prompt,
        new_tokens: gb.new_tokens,
        prefill_s,
        prefill_tokens_per_s: gb.prompt as f64 / prefill_s,
        decode_s_per_token: decode_s,
        decode_tokens_per_s: 1.0 / decode_s,
    })
}

// ---------------------------------------------------------------------------------------
// Report

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    /// How frozen base weights were stored: "f16" or "f32" (`--base-weights`, [`Gpu::half_weights`]).
    pub base_weights: &'static str,
    pub matmul: Vec<MatmulResult>,
    pub train: Vec<TrainResult>,
    pub generate: Vec<GenerateResult>,
}

impl Report {
    pub fn new(gpu: &Gpu) -> Report {
        Report {
            machine: Machine::of(&gpu.report),
            base_weights: if gpu.half_weights() { "f16" } else { "f32" },
            matmul: Vec::new(),
            train: Vec::new(),
            generate: Vec::new(),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    pub fn write_json(&self, path: &std::path::Path) -> Result<(), BenchError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| BenchError::Io {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        std::fs::write(path, text + "\n").map_err(|e| BenchError::Io {
            path: path.display().to_string(),
            msg: e.to_string(),
        })
    }

    /// The results as Markdown tables, headed by the machine.
    pub fn table(&self) -> String {
        let m = &self.machine;
        let mut s = format!(
            "{} ({}, {}, driver {}); {} CPU threads, webtune {} ({} build)\n",
            m.adapter, m.backend, m.device_type, m.driver, m.cpu_threads, m.webtune_version, m.profile
        );
        if !self.matmul.is_empty() {
            s += "\n| matmul | m x n x k | reps | median ms | GFLOP/s | tile |\n| --- | --- | --- | --- | --- | --- |\n";
            for r in &self.matmul {
                s += &format!(
                    "| {:?} | {}x{}x{} | {} | {:.3} | {:.1} | {} |\n",
                    r.layout,
                    r.m,
                    r.n,
                    r.k,
                    r.reps,
                    1e3 * r.median_s,
                    r.gflops,
                    r.tile
                );
            }
        }
        if !self.train.is_empty() {
            s += "\n| model | L/C/H/V | mode | B x T | median ms | mean ms | tokens/s | pipelined tokens/s \
                  | GFLOP/s | MiB |\n";
            s += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
            for r in &self.train {
                let mode = match r.lora_rank {
                    Some(rank) => format!("LoRA r{rank}"),
                    None => "full".into(),
                };
                s += &format!(
                    "| {} | {}/{}/{}/{} | {} | {} x {} | {:.1} | {:.1} | {:.0} | {:.0} | {:.2} | {:.1} |\n",
                    r.name,
                    r.n_layer,
                    r.n_embd,
                    r.n_head,
                    r.vocab,
                    mode,
                    r.batch,
                    r.seq,
                    r.median_ms,
                    r.mean_ms,
                    r.tokens_per_s,
                    r.pipelined_tokens_per_s,
                    r.gflops,
                    r.tensor_bytes as f64 / (1u64 << 20) as f64
                );
            }
        }
        if !self.generate.is_empty() {
            s += "\n| generate | L/C/H/V | prompt | new | prefill ms | prefill tokens/s | decode ms/token | decode tokens/s |\n";
            s += "| --- | --- | --- | --- | --- | --- | --- | --- |\n";
            for r in &self.generate {
                s += &format!(
                    "| {} | {}/{}/{}/{} | {} | {} | {:.1} | {:.0} | {:.2} | {:.1} |\n",
                    r.name,
                    r.n_layer,
                    r.n_embd,
                    r.n_head,
                    r.vocab,
                    r.prompt_tokens,
                    r.new_tokens,
                    1e3 * r.prefill_s,
                    r.prefill_tokens_per_s,
                    1e3 * r.decode_s_per_token,
                    r.decode_tokens_per_s
                );
            }
        }
        s
    }
}
