//! The memory plan of a training run: every tensor the run will create on the GPU, with its
//! name, bytes and class, computed from the model's config and the run's settings alone (no
//! GPU, nothing allocated), so a run that cannot fit is refused before it starts, and
//! `--dry-run` can show what it would use.
//!
//! The plan lists the tensors the model and the trainer allocate, by the labels they give them
//! (`tests/memory_plan.rs` compares it with [`Gpu::allocations`] after a real run, tensor by
//! tensor): a change in the model's buffers that is not made here too fails that test. Kernel
//! scratch made with the pipelines (uniforms, the column-sum partials of bias gradients) and the
//! driver's own memory are not tensors and are not in the plan.
//!
//! A tensor of E elements takes max(E, 4) · 4 bytes ([`crate::gpu::tensor_bytes`]), or max(E, 4) · 2 rounded
//! up to 16 for the frozen weight matrices a device stores in f16 ([`Gpu::half_weights`]).

use std::collections::BTreeMap;

use super::{RunSpec, TrainError};
use crate::flags::Style;
use crate::gpu::{tensor_bytes_of, Gpu, MemoryClass};
use crate::kernels::cross_entropy::chunk_rows;
use crate::kernels::optimizer::GradNorm;
use crate::model::{Family, Linear, LoraAdapter, LoraConfig, ModelConfig, WeightSource};

/// One tensor of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanEntry {
    /// The label the tensor gets on the GPU (e.g. `h.0.attn.c_attn.weight`, `adam m wte.weight`).
    pub name: String,
    pub class: MemoryClass,
    pub shape: Vec<usize>,
    pub bytes: u64,
}

/// What the plan needs besides the config and the run's settings.
#[derive(Clone, Debug, Default)]
pub struct PlanContext {
    /// The weights hold an untied `lm_head.weight` (GPT-2 decides by the file, see `Weights`).
    pub untied_head: bool,
    /// The adapter's modules as (layer, linear, rank) when the run starts from one
    /// (`--init-adapter`, a checkpoint); None: the fresh adapter the spec describes.
    pub lora_modules: Option<Vec<(usize, Linear, usize)>>,
    /// Steps between loss readbacks, as given to the run (clamped to 1..=steps as the run does).
    pub readback_every: usize,
    /// Tokens of the eval stream (EOS included), when the run has eval data.
    pub eval_tokens: Option<usize>,
    /// Bytes allowed for the training LM head's logits chunk.
    pub head_bytes: u64,
    /// The device's binding limit (`Gpu::max_binding`): vocabulary tables over it are split into
    /// row chunks (`RowParam`) and the head's logits block stays under it. None: no device known
    /// (`bench --dry-run`), nothing is split.
    pub max_binding: Option<u64>,
    /// Frozen weight matrices (linear layers' weights, vocabulary tables) are stored in f16
    /// ([`Gpu::half_weights`]).
    pub half_weights: bool,
}

impl PlanContext {
    /// The context of a run over `weights` (an untied head if it has one), readback every
    /// `readback_every` steps, with the trainer's head chunk.
    pub fn new(weights: &dyn WeightSource, readback_every: usize) -> PlanContext {
        PlanContext {
            untied_head: weights.has("lm_head.weight"),
            readback_every,
            head_bytes: super::trainer::HEAD_BYTES,
            ..PlanContext::default()
        }
    }

    /// With `adapter`'s modules (the run starts from it).
    pub fn with_adapter(mut self, adapter: &LoraAdapter) -> PlanContext {
        self.lora_modules = Some(adapter.modules.iter().map(|m| (m.layer, m.linear, m.a.shape[0])).collect());
        self
    }
}

/// What a device allows: webtune's refusal compares the plan with this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceLimits {
    /// `max_storage_buffer_binding_size` of the device webtune opened.
    pub max_binding: u64,
    /// `max_buffer_size`.
    pub max_buffer: u64,
    /// The memory the run may use, when the user said (`--gpu-memory`); wgpu does not report it.
    pub budget: Option<u64>,
    /// The device stores frozen weight matrices in f16 ([`Gpu::half_weights`]).
    pub half_weights: bool,
}

impl DeviceLimits {
    pub fn of(gpu: &Gpu) -> DeviceLimits {
        DeviceLimits {
            max_binding: gpu.max_binding(),
            max_buffer: gpu.limits.max_buffer_size,
            budget: gpu.memory_budget(),
            half_weights: gpu.half_weights(),
        }
    }

    /// The most one tensor may take (it is one buffer, bound whole).
    pub fn per_tensor(&self) -> u64 {
        self.max_binding.min(self.max_buffer)
    }
}

/// The tensors a run creates on the GPU.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    pub entries: Vec<PlanEntry>,
    pub batch: usize,
    pub seq: usize,
}

/// Adds tensors to a plan under one class.
struct Builder {
    entries: Vec<PlanEntry>,
    class: MemoryClass,
}

impl Builder {
    fn add(&mut self, name: impl Into<String>, shape: &[usize]) {
        self.add_of(name, shape, false);
    }
    /// A tensor of f16 elements when `half`.
    fn add_of(&mut self, name: impl Into<String>, shape: &[usize], half: bool) {
        let elems = crate::memory::elements(shape).unwrap_or(usize::MAX);
        self.entries.push(PlanEntry { name: name.into(), class: self.class, shape: shape.to_vec(), bytes: tensor_bytes_of(elems, half) });
    }
    /// A parameter (`Param::new`, or `Param::matrix` with `half`: a frozen matrix in f16): its
    /// value, and when trained its gradient.
    fn param(&mut self, name: &str, shape: &[usize], trained: bool, half: bool) {
        self.class = if trained { MemoryClass::Trainable } else { MemoryClass::Weights };
        self.add_of(name, shape, half && !trained);
        if trained {
            self.class = MemoryClass::Gradients;
            self.add(format!("grad {name}"), shape);
        }
    }
}

impl MemoryPlan {
    /// The plan of a run of `spec` over a model of `cfg`. Errors: LoRA targets that name no
    /// layer of this family (as the run would report them).
    pub fn of(cfg: &ModelConfig, spec: &RunSpec, ctx: &PlanContext) -> Result<MemoryPlan, TrainError> {
        let lora: Vec<(usize, Linear, usize)> = match (&ctx.lora_modules, spec.full) {
            (_, true) => Vec::new(),
            (Some(m), false) => m.clone(),
            (None, false) => {
                let targets = spec.lora_targets.clone().unwrap_or_else(|| LoraConfig::default_targets(cfg.family));
                let lc = LoraConfig::new(spec.lora_rank, spec.lora_alpha, targets, 0.0, cfg.family)
                    .map_err(|e| TrainError::Invalid(e.to_string()))?;
                (0..cfg.n_layer)
                    .flat_map(|l| Linear::of(cfg.family).iter().filter(|k| lc.matches(**k)).map(move |&k| (l, k, lc.r)))
                    .collect()
            }
        };
        let mut p = Builder { entries: Vec::new(), class: MemoryClass::Weights };

        // The model (ModelGpu::new): every base tensor, an untied head, the LoRA pairs.
        let full = spec.full;
        let mut trained: Vec<(String, Vec<usize>)> = Vec::new();
        let mut base: Vec<(String, Vec<usize>)> = cfg.params().collect();
        if ctx.untied_head {
            base.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, cfg.n_embd]));
        }
        let tables = [cfg.embedding_name(), "lm_head.weight"];
        let linear_weights: std::collections::HashSet<String> = (0..cfg.n_layer)
            .flat_map(|l| Linear::of(cfg.family).iter().map(move |k| format!("{}.weight", cfg.block_name(l, k.hf_name()))))
            .collect();
        for (name, shape) in base {
            // frozen weight matrices are f16 where the device stores them so (Param::matrix)
            let is_table = tables.contains(&name.as_str());
            let half = ctx.half_weights && !full && (is_table || linear_weights.contains(&name));
            // a vocabulary table over the binding limit is uploaded as row chunks (RowParam::new)
            let parts = match shape[..] {
                [rows, cols] if is_table => row_parts(rows, cols, if half { 2 } else { 4 }, ctx.max_binding),
                _ => Vec::new(),
            };
            if parts.len() <= 1 {
                p.param(&name, &shape, full, half);
                if full {
                    trained.push((name, shape));
                }
                continue;
            }
            for (r0, r1) in parts {
                let part = vec![r1 - r0, shape[1]];
                p.param(&format!("{name} rows {r0}..{r1}"), &part, full, half);
                if full {
                    trained.push((name.clone(), part)); // AdamW labels a chunk's moments by the tensor's name
                }
            }
        }
        for &(l, k, r) in &lora {
            let (fin, fout) = k.dims(cfg);
            let name = cfg.block_name(l, k.hf_name());
            for (n, shape) in [(format!("{name}.lora_A"), vec![r, fin]), (format!("{name}.lora_B"), vec![fout, r])] {
                p.param(&n, &shape, true, false);
                trained.push((n, shape));
            }
        }
        if cfg.family == Family::Llama {
            p.class = MemoryClass::Weights;
            p.add("rope table", &[cfg.n_positions, cfg.head_dim]);
        }

        // The training step's buffers (Trainer::new).
        let max_rank = lora.iter().map(|m| m.2).max().unwrap_or(0);
        p.class = MemoryClass::Activations;
        let head_bytes = |b: u64| ctx.max_binding.map_or(b, |m| b.min(m));
        activations(&mut p, cfg, &lora, spec.batch, spec.seq, true, full, max_rank, head_bytes(ctx.head_bytes));
        let readback = ctx.readback_every.clamp(1, (spec.steps as usize).max(1));
        p.add("loss history", &[readback, spec.grad_accum.saturating_add(1)]);

        // AdamW (Optimizer::new).
        p.class = MemoryClass::Optimizer;
        let lens = trained.iter().map(|(_, s)| s.iter().product::<usize>());
        p.add("grad_norm.partials", &[GradNorm::partials_len(lens)]);
        p.add("grad_norm.out", &[2]);
        p.add("adamw step", &[8]);
        for (name, shape) in &trained {
            p.add(format!("adam m {name}"), shape);
            p.add(format!("adam v {name}"), shape);
        }

        // Evaluation (Evaluator::new): the largest eval batch, forward only, one loss slot a batch.
        if let Some(tokens) = ctx.eval_tokens {
            let windows = (tokens / spec.seq.saturating_add(1)).max(1);
            let rows = spec.batch.min(windows);
            p.class = MemoryClass::Eval;
            activations(&mut p, cfg, &lora, rows, spec.seq, false, false, max_rank, head_bytes(super::eval::HEAD_BYTES));
            p.add("eval losses", &[windows.div_ceil(spec.batch)]);
        }
        Ok(MemoryPlan { entries: p.entries, batch: spec.batch, seq: spec.seq })
    }

    /// Bytes of every tensor.
    pub fn total(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).fold(0u64, u64::saturating_add)
    }

    /// Bytes per class, in [`MemoryClass::ALL`] order, classes with no tensor left out.
    pub fn by_class(&self) -> Vec<(MemoryClass, u64)> {
        let mut m: BTreeMap<MemoryClass, u64> = BTreeMap::new();
        for e in &self.entries {
            let v = m.entry(e.class).or_default();
            *v = v.saturating_add(e.bytes);
        }
        m.into_iter().collect()
    }

    /// The largest tensor (one buffer, bound whole by the kernels that use it); the first in plan
    /// order of equals.
    pub fn largest(&self) -> Option<&PlanEntry> {
        self.entries.iter().rev().max_by_key(|e| e.bytes)
    }

    /// What does not fit `limits`, in words, or None when the plan fits: a tensor above the
    /// per-buffer limits (the largest of the model's own, whose size no batch or seq changes,
    /// before the largest of the others), or the total above the budget.
    pub fn misfit(&self, limits: &DeviceLimits) -> Option<String> {
        let over = |fixed: bool| {
            self.entries
                .iter()
                .filter(|e| e.bytes > limits.per_tensor() && fixed != matches!(e.class, MemoryClass::Activations | MemoryClass::Eval))
                .rev()
                .max_by_key(|e| e.bytes) // the first of equals: a weight before its gradient and moments
        };
        if let Some(e) = over(true).or_else(|| over(false)) {
            let kind = if limits.max_binding <= limits.max_buffer { "storage binding" } else { "buffer" };
            let limit = limits.per_tensor();
            return Some(format!(
                "the tensor '{}' ({}, {:?}) needs {} bytes ({}) but this GPU allows at most {limit} bytes ({}) per {kind}",
                e.name,
                e.class.name(),
                e.shape,
                e.bytes,
                crate::memory::human(e.bytes),
                crate::memory::human(limit)
            ));
        }
        match limits.budget {
            Some(b) if self.total() > b => Some(format!(
                "the run needs {} of GPU memory ({}) but the budget is {}",
                crate::memory::human(self.total()),
                self.classes_line(),
                crate::memory::human(b)
            )),
            _ => None,
        }
    }

    /// "frozen weights 474.7 MiB, activations 1.1 GiB, ..." for messages.
    pub fn classes_line(&self) -> String {
        let parts: Vec<String> =
            self.by_class().iter().map(|(c, b)| format!("{} {}", c.name(), crate::memory::human(*b))).collect();
        parts.join(", ")
    }

    /// A small table: class, bytes, share; the total; the largest tensor; and, with `limits`,
    /// the device's.
    pub fn table(&self, limits: Option<&DeviceLimits>) -> String {
        let total = self.total();
        let mut s = format!("memory plan (batch {} x seq {}):\n", self.batch, self.seq);
        for (c, b) in self.by_class() {
            let share = if total == 0 { 0.0 } else { 100.0 * b as f64 / total as f64 };
            s.push_str(&format!("  {:<20} {:>11} {:>5.1}%\n", c.name(), crate::memory::human(b), share));
        }
        s.push_str(&format!("  {:<20} {:>11}\n", "total", crate::memory::human(total)));
        if let Some(e) = self.largest() {
            s.push_str(&format!(
                "  largest tensor: '{}' ({}, {:?}) {}\n",
                e.name,
                e.class.name(),
                e.shape,
                crate::memory::human(e.bytes)
            ));
        }
        if let Some(l) = limits {
            s.push_str(&format!(
                "  device limits: {} per storage binding, {} per buffer; {}\n",
                crate::memory::human(l.max_binding),
                crate::memory::human(l.max_buffer),
                match l.budget {
                    Some(b) => format!("budget {} (--gpu-memory)", crate::memory::human(b)),
                    None => "GPU memory not known (wgpu does not report it; set --gpu-memory to check the total)".into(),
                }
            ));
        }
        s
    }

    /// The plan as JSON: total, per class, the largest tensor, batch and seq.
    pub fn to_json(&self) -> serde_json::Value {
        let classes: serde_json::Map<String, serde_json::Value> =
            self.by_class().iter().map(|(c, b)| (c.key().to_string(), (*b).into())).collect();
        let largest = self.largest().map(|e| {
            serde_json::json!({"name": e.name, "class": e.class.key(), "shape": e.shape, "bytes": e.bytes})
        });
        serde_json::json!({
            "batch": self.batch,
            "seq": self.seq,
            "total_bytes": self.total(),
            "classes": classes,
            "largest": largest,
            "tensors": self.entries.len(),
        })
    }
}

/// The row ranges a [rows, cols] table is uploaded in under a binding limit (as
/// `Gpu::rows_per_binding`): one range when it fits or no limit is known, none when not even one
/// row fits (then the whole tensor is planned, and refused by [`MemoryPlan::misfit`]).
fn row_parts(rows: usize, cols: usize, elem_bytes: u64, limit: Option<u64>) -> Vec<(usize, usize)> {
    let row_bytes = elem_bytes * cols.max(1) as u64;
    let per = match limit {
        Some(l) if row_bytes <= l => ((l / row_bytes).min(usize::MAX as u64) as usize).clamp(1, rows.max(1)),
        _ => return Vec::new(),
    };
    (0..rows).step_by(per).map(|r0| (r0, (r0 + per).min(rows))).collect()
}

/// The buffers of one (B, T) shape (`Activations::new` of each family, with `Io::new`).
#[allow(clippy::too_many_arguments)]
fn activations(
    p: &mut Builder,
    cfg: &ModelConfig,
    lora: &[(usize, Linear, usize)],
    b: usize,
    t: usize,
    backward: bool,
    embedding_trained: bool,
    max_rank: usize,
    head_bytes: u64,
) {
    // sizes come from the user: products saturate (a tensor of usize::MAX elements is refused
    // by the limits, never allocated)
    let (c, h, n, f, v) = (cfg.n_embd, cfg.n_head, b.saturating_mul(t), cfg.intermediate, cfg.vocab_size);
    let prefix = |l: usize| cfg.block_name(l, "");
    for l in 0..cfg.n_layer {
        let pre = prefix(l);
        let per_layer: Vec<(&str, Vec<usize>)> = match cfg.family {
            Family::Gpt2 => vec![
                ("ln1", vec![n, c]),
                ("ln1_mean", vec![n]),
                ("ln1_rstd", vec![n]),
                ("qkv", vec![n, 3 * c]),
                ("lse", vec![b, h, t]),
                ("atty", vec![n, c]),
                ("x_mid", vec![n, c]),
                ("ln2", vec![n, c]),
                ("ln2_mean", vec![n]),
                ("ln2_rstd", vec![n]),
                ("fc", vec![n, f]),
                ("fc_gelu", vec![n, f]),
                ("x_out", vec![n, c]),
            ],
            Family::Llama => {
                let (qw, kvw) = (cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim);
                let mut v = Vec::new();
                if cfg.qk_norm {
                    v.extend([
                        ("q_pre", vec![n, qw]),
                        ("k_pre", vec![n, kvw]),
                        ("q_rstd", vec![n.saturating_mul(cfg.n_head)]),
                        ("k_rstd", vec![n.saturating_mul(cfg.n_kv_head)]),
                    ]);
                }
                v.extend([
                    ("ln1", vec![n, c]),
                    ("rstd1", vec![n]),
                    ("q", vec![n, qw]),
                    ("k", vec![n, kvw]),
                    ("v", vec![n, kvw]),
                    ("att", vec![n, qw]),
                    ("lse", vec![n.saturating_mul(cfg.n_head)]),
                    ("x_mid", vec![n, c]),
                    ("ln2", vec![n, c]),
                    ("rstd2", vec![n]),
                    ("gate", vec![n, f]),
                    ("up", vec![n, f]),
                    ("h", vec![n, f]),
                    ("x_out", vec![n, c]),
                ]);
                v
            }
        };
        for (name, shape) in per_layer {
            p.add(format!("{pre}{name}"), &shape);
        }
        for &(_, k, r) in lora.iter().filter(|m| m.0 == l) {
            p.add(format!("{pre}{}.lora_xa", k.hf_name()), &[n, r]);
        }
    }
    if backward {
        let grads: Vec<(&str, Vec<usize>)> = match cfg.family {
            Family::Gpt2 => vec![
                ("dresid", vec![n, c]),
                ("dln", vec![n, c]),
                ("dqkv", vec![n, 3 * c]),
                ("delta", vec![b, h, t]),
                ("datty", vec![n, c]),
                ("dfc", vec![n, f]),
                ("dfc_gelu", vec![n, f]),
            ],
            Family::Llama => {
                let (qw, kvw) = (cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim);
                let mut v = vec![
                    ("dresid", vec![n, c]),
                    ("dln", vec![n, c]),
                    ("datt", vec![n, qw]),
                    ("dq", vec![n, qw]),
                    ("dk", vec![n, kvw]),
                    ("dv", vec![n, kvw]),
                    ("attention delta", vec![n.saturating_mul(cfg.n_head)]),
                    ("dgate", vec![n, f]),
                    ("dup", vec![n, f]),
                    ("dh", vec![n, f]),
                ];
                if cfg.qk_norm {
                    v.extend([("dq_pre", vec![n, qw]), ("dk_pre", vec![n, kvw])]);
                }
                v
            }
        };
        for (name, shape) in grads {
            p.add(name, &shape);
        }
        p.add("dxa", &[n, max_rank.max(1)]);
    }
    // Io::new
    p.add("tokens", &[n]);
    p.add("targets", &[n]);
    p.add("loss scale", &[1]);
    p.add("lnf", &[n, c]);
    p.add("head logits chunk", &[chunk_rows(n, v, head_bytes), v]);
    p.add("losses", &[n]);
    p.add("loss", &[1]);
    if backward && embedding_trained {
        p.add("token_index.unique_count", &[1]);
        p.add("token_index.unique", &[n]);
        p.add("token_index.offsets", &[n.saturating_add(1)]);
        p.add("token_index.positions", &[n]);
    }
    p.add("x0", &[n, c]);
    p.add("tmp", &[n, c]);
    match cfg.family {
        Family::Gpt2 => {
            p.add("lnf_mean", &[n]);
            p.add("lnf_rstd", &[n]);
        }
        Family::Llama => p.add("rstd_f", &[n]),
    }
}

/// The largest batch (at the plan's seq) and the largest seq (at its batch, up to
/// `n_positions`) whose plans fit `limits`; None where even 1 does not.
pub fn largest_fitting(
    cfg: &ModelConfig,
    spec: &RunSpec,
    ctx: &PlanContext,
    limits: &DeviceLimits,
) -> Result<(Option<usize>, Option<usize>), TrainError> {
    let fits = |batch: usize, seq: usize| -> Result<bool, TrainError> {
        let s = RunSpec { batch, seq, ..spec.clone() };
        Ok(MemoryPlan::of(cfg, &s, ctx)?.misfit(limits).is_none())
    };
    // the plans grow with B and T: the largest n in 1..=hi with fits(n)
    let search = |hi: usize, f: &dyn Fn(usize) -> Result<bool, TrainError>| -> Result<Option<usize>, TrainError> {
        if hi == 0 || !f(1)? {
            return Ok(None);
        }
        let (mut lo, mut hi) = (1usize, hi);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if f(mid)? {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(Some(lo))
    };
    let batch = search(spec.batch, &|b| fits(b, spec.seq))?;
    let seq = search(spec.seq.min(cfg.n_positions), &|t| fits(spec.batch, t))?;
    Ok((batch, seq))
}

/// Refuses a run whose plan does not fit `limits`, naming what does not fit and the largest
/// batch and seq that would (flags spelled the caller's way).
pub fn check(
    plan: &MemoryPlan,
    cfg: &ModelConfig,
    spec: &RunSpec,
    ctx: &PlanContext,
    limits: &DeviceLimits,
    style: Style,
) -> Result<(), TrainError> {
    let Some(what) = plan.misfit(limits) else { return Ok(()) };
    let (batch, seq) = largest_fitting(cfg, spec, ctx, limits)?;
    let (bf, sf) = (style.name("batch"), style.name("seq"));
    let advice = match (batch, seq) {
        (None, None) => {
            let tiny = MemoryPlan::of(cfg, &RunSpec { batch: 1, seq: 1, ..spec.clone() }, ctx)?;
            match tiny.misfit(limits) {
                Some(m) if m != what => format!("even at {bf} 1 {sf} 1 {m}: the model itself is too large for this GPU"),
                _ => format!("no {bf} or {sf} changes that: the model itself is too large for this GPU"),
            }
        }
        (b, t) => {
            let show = |x: Option<usize>| x.map_or("none".to_string(), |x| x.to_string());
            format!(
                "the largest {bf} that fits at {sf} {} is {}; the largest {sf} at {bf} {} is {}",
                spec.seq,
                show(b),
                spec.batch,
                show(t)
            )
        }
    };
    Err(TrainError::Invalid(format!("this run does not fit the GPU: {what}; {advice}")))
}
