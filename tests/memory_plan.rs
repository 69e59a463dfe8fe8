//! The memory plan (src/train/plan.rs) against what a run really allocates: after `Run::new`
//! and one step, the GPU's record of every tensor (label, bytes, class) must be the plan's,
//! tensor by tensor, for GPT-2 and the Llama family (Qwen3: q/k norms, GQA, an untied head;
//! Llama: an init adapter), LoRA and full, with eval data and without, odd B and T. And the
//! refusal: a run that does not fit is refused before anything is allocated, and the batch /
//! seq it suggests do fit (hand-checked against the plan one step above).

use std::path::{Path, PathBuf};

use webtune::data::Dataset;
use webtune::flags::Style;
use webtune::gpu::{BaseWeights, Gpu, MemoryClass};
use webtune::model::{LoraAdapter, Weights};
use webtune::train::checkpoint::{ModelInfo, RunOptions};
use webtune::train::plan::{self, DeviceLimits};
use webtune::train::run::{RunData, RunInputs};
use webtune::train::{Control, MemoryPlan, Run, RunSpec};

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(p)
}

struct Case {
    model: &'static str,
    data: &'static str,
    spec: RunSpec,
    eval_data: Option<&'static str>,
    init_adapter: Option<&'static str>,
}

fn dataset(path: &Path, vocab: usize) -> Dataset {
    Dataset::read(path, vocab, &|| Err("token ids only".to_string())).unwrap()
}

fn inputs<'a>(w: &'a Weights, c: &Case, data: &Dataset, eval: Option<&Dataset>) -> RunInputs<'a> {
    let run_data = RunData::new(data, eval, &c.spec, w.config.eos_token_id, Style::Cli).unwrap();
    let init_adapter = c.init_adapter.map(|a| LoraAdapter::load_peft(&fixture(a), &w.config).unwrap());
    RunInputs {
        weights: w,
        model: ModelInfo::of(&w.config, c.model, c.model, 0, None),
        init_adapter,
        data: run_data,
        spec: c.spec.clone(),
        options: RunOptions::default(),
        readback_every: 16, // as the CLI
        style: Style::Cli,
    }
}

/// (label, class, bytes), sorted, for comparing multisets with a readable diff.
type Rows = Vec<(String, MemoryClass, u64)>;

fn rows_of_plan(p: &MemoryPlan) -> Rows {
    let mut r: Rows = p.entries.iter().map(|e| (e.name.clone(), e.class, e.bytes)).collect();
    r.sort();
    r
}

#[test]
fn the_plan_is_what_a_run_allocates() {
    let gpu = Gpu::new_blocking(None).unwrap();
    let spec = |batch, seq| RunSpec { steps: 3, batch, seq, ..RunSpec::default() };
    let cases = [
        // GPT-2, LoRA on every linear, a held-out split
        Case { model: "tiny/model", data: "tiny/data.jsonl", spec: RunSpec { eval_split: Some(0.3), ..spec(3, 17) }, eval_data: None, init_adapter: None },
        // GPT-2, full fine-tuning (trained embedding: the token index), gradient accumulation, no eval
        Case { model: "tiny/model", data: "tiny/data.jsonl", spec: RunSpec { full: true, grad_accum: 2, ..spec(2, 13) }, eval_data: None, init_adapter: None },
        // Qwen3 (q/k norms, 1 kv head, untied head), LoRA rank 5 on two targets, another eval file
        Case {
            model: "llama/qwen3/model",
            data: "llama/qwen3/data.jsonl",
            spec: RunSpec { lora_rank: 5, lora_targets: Some(vec!["q_proj".into(), "down_proj".into()]), ..spec(3, 17) },
            eval_data: Some("llama/qwen2/data.jsonl"),
            init_adapter: None,
        },
        // Qwen3, full, B 1, a held-out split
        Case { model: "llama/qwen3/model", data: "llama/qwen3/data.jsonl", spec: RunSpec { full: true, eval_split: Some(0.2), ..spec(1, 9) }, eval_data: None, init_adapter: None },
        // Llama from an init adapter (its rank and targets are the run's), no eval
        Case { model: "llama/llama/model", data: "llama/llama/data.jsonl", spec: spec(2, 11), eval_data: None, init_adapter: Some("llama/llama/adapter_init") },
    ];
    for c in &cases {
        let what = format!("{} {:?}", c.model, (c.spec.full, c.spec.batch, c.spec.seq, c.spec.eval_split, c.eval_data));
        let w = Weights::load_dir(&fixture(c.model)).unwrap();
        let data = dataset(&fixture(c.data), w.config.vocab_size);
        let eval = c.eval_data.map(|e| dataset(&fixture(e), w.config.vocab_size));
        plan_equals_allocations(&gpu, &w, c, &data, eval.as_ref(), &what);
    }
}

/// A binding limit that only the vocabulary tables exceed (`Gpu::limit_binding`, 7000 bytes; a
/// random Qwen2-style model, vocab 301 × 16, untied head): the plan splits them into the row
/// chunks the run uploads (109, 109 and 83 rows), with their gradients and AdamW moments, and caps
/// the head's logits block, tensor by tensor as the GPU records them, LoRA and full.
#[test]
fn the_plan_splits_vocabulary_tables_as_the_run_does() {
    let gpu = Gpu::new_blocking(None).unwrap();
    gpu.limit_binding(7000).unwrap();
    let cfg = serde_json::json!({
        "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "vocab_size": 301, "hidden_size": 16,
        "intermediate_size": 40, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "max_position_embeddings": 32, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": false,
        "bos_token_id": 300, "eos_token_id": 300,
    });
    let w = Weights::random(&webtune::model::ModelConfig::from_json(&cfg.to_string(), "test config").unwrap(), 8);
    let data = dataset(&fixture("tiny/data.jsonl"), 301);
    // f16 base weights (a LoRA run's frozen tables take 2 bytes a value: 218 rows a chunk); full
    // fine-tuning trains them, so they stay f32 whatever the device stores frozen weights as
    for (full, half) in [(false, false), (true, false), (false, true), (true, true)] {
        gpu.set_base_weights(if half { BaseWeights::F16 } else { BaseWeights::F32 }).unwrap();
        let c = Case { model: "random", data: "tiny/data.jsonl", spec: RunSpec { steps: 3, batch: 2, seq: 13, full, ..RunSpec::default() }, eval_data: None, init_adapter: None };
        let mut p = Run::prepare(inputs(&w, &c, &data, None), None).unwrap();
        p.check_fits(&DeviceLimits::of(&gpu)).unwrap();
        let chunks: Vec<&str> = p.plan.entries.iter().filter(|e| e.name.starts_with("embed_tokens.weight rows")).map(|e| e.name.as_str()).collect();
        match half && !full {
            false => assert_eq!(chunks, ["embed_tokens.weight rows 0..109", "embed_tokens.weight rows 109..218", "embed_tokens.weight rows 218..301"]),
            true => assert_eq!(chunks, ["embed_tokens.weight rows 0..218", "embed_tokens.weight rows 218..301"]),
        }
        let q = p.plan.entries.iter().find(|e| e.name == "layers.0.self_attn.q_proj.weight").unwrap();
        assert_eq!(q.bytes, if half && !full { 16 * 16 * 2 } else { 16 * 16 * 4 }, "q_proj [16, 16]");
        assert!(p.plan.largest().unwrap().bytes <= 7000, "every tensor fits the limit");
        plan_equals_allocations(&gpu, &w, &c, &data, None, &format!("split tables, full {full}, f16 base weights {half}"));
    }
    gpu.set_base_weights(BaseWeights::F32).unwrap();
}

/// f16 base weights on GPT-2 with eval data: the frozen linears and the (tied) token embedding
/// take 2 bytes a value, the rest of the plan is unchanged, tensor by tensor as the GPU records.
#[test]
fn the_plan_counts_f16_base_weights() {
    let gpu = Gpu::new_blocking(None).unwrap();
    gpu.set_base_weights(BaseWeights::F16).expect("the test GPU (lavapipe) has shader-f16");
    let c = Case { model: "tiny/model", data: "tiny/data.jsonl", spec: RunSpec { steps: 3, batch: 3, seq: 17, eval_split: Some(0.3), ..RunSpec::default() }, eval_data: None, init_adapter: None };
    let w = Weights::load_dir(&fixture(c.model)).unwrap();
    let data = dataset(&fixture(c.data), w.config.vocab_size);
    plan_equals_allocations(&gpu, &w, &c, &data, None, "GPT-2 LoRA, f16 base weights");
    let mut p = Run::prepare(inputs(&w, &c, &data, None), None).unwrap();
    p.check_fits(&DeviceLimits::of(&gpu)).unwrap();
    let half = p.plan.clone();
    p.check_fits(&DeviceLimits { half_weights: false, ..DeviceLimits::of(&gpu) }).unwrap();
    let full = p.plan;
    // the f16 tensors, by hand: every linear weight and wte [V, C]
    let cfg = &w.config;
    let (c_, v) = (cfg.n_embd, cfg.vocab_size);
    let linears = cfg.n_layer * (c_ * 3 * c_ + c_ * c_ + 2 * c_ * 4 * c_);
    let saved: u64 = (linears + v * c_) as u64 * 2;
    assert_eq!(full.total() - half.total(), saved);
}

/// Runs `c` (Run::new and one step, an evaluation where it has eval data) and compares what the
/// GPU recorded with the plan made for that GPU, tensor by tensor, per class and in total.
fn plan_equals_allocations(gpu: &Gpu, w: &Weights, c: &Case, data: &Dataset, eval: Option<&Dataset>, what: &str) {
    let mut prepared = Run::prepare(inputs(w, c, data, eval), None).unwrap();
    prepared.check_fits(&DeviceLimits::of(gpu)).unwrap();
    let planned = prepared.plan;
    assert!(planned.entries.iter().all(|e| e.class != MemoryClass::Other), "{what}");
    assert_eq!(planned.by_class().iter().any(|(c, _)| *c == MemoryClass::Eval), c.spec.eval_split.is_some() || c.eval_data.is_some(), "{what}");

    let (n0, bytes0) = (gpu.allocations().len(), gpu.allocated_bytes());
    let mut run = Run::new(gpu, inputs(w, c, data, eval), None, false).unwrap();
    let ev = pollster::block_on(run.step(gpu, &|| Control::Run)).unwrap();
    assert_eq!(ev.step, 1);
    if run.evaluator.is_some() {
        assert!(pollster::block_on(run.evaluate(gpu)).unwrap().unwrap().loss.is_finite(), "{what}");
    }
    let made = gpu.allocations()[n0..].to_vec();
    let mut got: Rows = made.iter().map(|a| (a.label.clone(), a.class, a.bytes)).collect();
    got.sort();
    let want = rows_of_plan(&planned);
    let only = |x: &Rows, y: &Rows| -> Rows { x.iter().filter(|r| !y.contains(r)).cloned().collect() };
    assert!(got == want, "{what}: only on the GPU: {:?}; only in the plan: {:?}", only(&got, &want), only(&want, &got));
    assert_eq!(gpu.allocated_bytes() - bytes0, planned.total(), "{what}");
    // the totals per class, as the dry run prints them
    for (class, bytes) in planned.by_class() {
        let sum: u64 = made.iter().filter(|a| a.class == class).map(|a| a.bytes).sum();
        assert_eq!(sum, bytes, "{what}: {}", class.name());
    }
    // the largest tensor is the largest binding any kernel gets
    let largest = made.iter().map(|a| a.bytes).max().unwrap();
    assert_eq!(planned.largest().unwrap().bytes, largest, "{what}");
}

#[test]
fn a_run_that_does_not_fit_is_refused_before_anything_is_allocated() {
    let gpu = Gpu::new_blocking(None).unwrap();
    let c = Case {
        model: "tiny/model",
        data: "tiny/data.jsonl",
        spec: RunSpec { steps: 2, batch: 5, seq: 31, eval_split: Some(0.3), ..RunSpec::default() },
        eval_data: None,
        init_adapter: None,
    };
    let w = Weights::load_dir(&fixture(c.model)).unwrap();
    let data = dataset(&fixture(c.data), w.config.vocab_size);
    let prepared = Run::prepare(inputs(&w, &c, &data, None), None).unwrap();
    let (cfg, ctx) = (prepared.config().clone(), prepared.plan_context.clone());
    let at = |batch, seq| MemoryPlan::of(&cfg, &RunSpec { batch, seq, ..prepared.spec.clone() }, &ctx).unwrap().total();
    // a budget between the plans of batch 3 and batch 4 (at seq 31)
    let budget = (at(3, 31) + at(4, 31)) / 2;
    gpu.set_memory_budget(Some(budget));
    let before = (gpu.allocations().len(), gpu.allocated_bytes());
    let e = Run::new(&gpu, inputs(&w, &c, &data, None), None, false).err().expect("refused").to_string();
    assert_eq!((gpu.allocations().len(), gpu.allocated_bytes()), before, "nothing was allocated");
    assert!(e.starts_with("this run does not fit the GPU: the run needs "), "{e}");
    assert!(e.contains(&format!("but the budget is {}", webtune::memory::human(budget))), "{e}");
    // the largest seq at batch 5: found by hand, one step at a time
    let seq = (1..=31).rev().find(|&t| at(5, t) <= budget).unwrap();
    assert!(at(5, seq + 1) > budget);
    assert!(e.contains(&format!("the largest --batch that fits at --seq 31 is 3; the largest --seq at --batch 5 is {seq}")), "{e}");
    // and the suggestion runs within the budget
    let c3 = Case { spec: RunSpec { batch: 3, ..c.spec.clone() }, ..c };
    let b0 = gpu.allocated_bytes();
    let mut run = Run::new(&gpu, inputs(&w, &c3, &data, None), None, false).unwrap();
    pollster::block_on(run.step(&gpu, &|| Control::Run)).unwrap();
    assert!(gpu.allocated_bytes() - b0 <= budget);
    gpu.set_memory_budget(None);
}

#[test]
fn the_refusal_names_the_tensor_and_says_when_the_model_itself_is_too_large() {
    let w = Weights::load_dir(&fixture("tiny/model")).unwrap();
    let cfg = &w.config;
    let spec = RunSpec { batch: 4, seq: 40, full: true, ..RunSpec::default() };
    let ctx = webtune::train::PlanContext::new(&w, 16);
    let p = MemoryPlan::of(cfg, &spec, &ctx).unwrap();
    // full fine-tuning: c_fc / mlp.c_proj [48, 192] (and their gradients and moments) are the
    // largest tensors whose size does not depend on B and T: 36 KiB. Below that no shape fits.
    let fixed = |e: &&plan::PlanEntry| !matches!(e.class, MemoryClass::Activations | MemoryClass::Eval);
    let fixed_max = p.entries.iter().filter(fixed).map(|e| e.bytes).max().unwrap();
    assert_eq!(fixed_max, 48 * 192 * 4);
    let small = DeviceLimits { max_binding: fixed_max - 4, max_buffer: u64::MAX, budget: None, half_weights: false };
    let e = plan::check(&p, cfg, &spec, &ctx, &small, Style::Js).unwrap_err().to_string();
    // the model's own tensor is named first (not the larger activations); no shape changes it
    let named = p.entries.iter().filter(fixed).find(|e| e.bytes == fixed_max).unwrap();
    let want = format!(
        "this run does not fit the GPU: the tensor '{}' ({}, {:?}) needs 36864 bytes (36.0 KiB) but this GPU allows at most \
         36860 bytes (36.0 KiB) per storage binding; no batch or seq changes that: the model itself is too large for this GPU",
        named.name,
        named.class.name(),
        named.shape
    );
    assert_eq!(e, want);
    // a binding limit that only the activations break: named, with a batch that fits
    let biggest_act = p.entries.iter().filter(|e| e.class == MemoryClass::Activations).map(|e| e.bytes).max().unwrap();
    assert!(biggest_act > fixed_max);
    let limits = DeviceLimits { max_binding: fixed_max, max_buffer: u64::MAX, budget: None, half_weights: false };
    let e = plan::check(&p, cfg, &spec, &ctx, &limits, Style::Cli).unwrap_err().to_string();
    let big = p.largest().unwrap();
    assert!(e.contains(&format!("the tensor '{}' (activations, {:?})", big.name, big.shape)), "{e}");
    let (b, t) = plan::largest_fitting(cfg, &spec, &ctx, &limits).unwrap();
    let fits = |batch, seq| MemoryPlan::of(cfg, &RunSpec { batch, seq, ..spec.clone() }, &ctx).unwrap().misfit(&limits).is_none();
    let (b, t) = (b.unwrap(), t.unwrap());
    assert!(fits(b, 40) && !fits(b + 1, 40) && fits(4, t) && !fits(4, t + 1), "{b} {t}");
    assert!(e.contains(&format!("the largest --batch that fits at --seq 40 is {b}; the largest --seq at --batch 4 is {t}")), "{e}");
    // a hostile batch: no overflow, refused with the batch that fits
    let huge = RunSpec { batch: usize::MAX / 3, ..spec.clone() };
    let hp = MemoryPlan::of(cfg, &huge, &ctx).unwrap();
    let e = plan::check(&hp, cfg, &huge, &ctx, &limits, Style::Cli).unwrap_err().to_string();
    assert!(e.contains(&format!("the largest --batch that fits at --seq 40 is {b};")), "{e}");
    // a plan that fits passes
    let roomy = DeviceLimits { max_binding: 1 << 30, max_buffer: 1 << 30, budget: Some(p.total()), half_weights: false };
    plan::check(&p, cfg, &spec, &ctx, &roomy, Style::Cli).unwrap();
}

/// Every file under `dir`, with its size, sorted.
fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        if m.is_dir() {
            out.extend(listing(&e.path()));
        } else {
            out.push((e.path(), m.len()));
        }
    }
    out.sort();
    out
}

#[test]
fn train_dry_run_prints_the_plan_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // the inputs are copied into the folder, so "nothing written" covers them too
    let model = tmp.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("llama/qwen3/model").join(f), model.join(f)).unwrap();
    }
    let (data, eval) = (tmp.path().join("data.jsonl"), tmp.path().join("eval.jsonl"));
    std::fs::copy(fixture("llama/qwen3/data.jsonl"), &data).unwrap();
    std::fs::copy(fixture("llama/qwen2/data.jsonl"), &eval).unwrap();
    let before = listing(tmp.path());
    let out = tmp.path().join("out");
    let log = tmp.path().join("log.jsonl");
    let webtune = |extra: &[&str]| {
        let mut args: Vec<String> = ["train", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--out", out.to_str().unwrap(), "--eval-data", eval.to_str().unwrap()].map(String::from));
        args.extend(["--log-json", log.to_str().unwrap(), "--batch", "3", "--seq", "17", "--lora-rank", "5"].map(String::from));
        args.extend(extra.iter().map(|s| s.to_string()));
        std::process::Command::new(env!("CARGO_BIN_EXE_webtune")).args(&args).env_remove("WEBTUNE_GPU_MEMORY").output().unwrap()
    };
    let o = webtune(&["--dry-run=json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();

    // the plan printed is MemoryPlan::of for the same run
    let w = Weights::load_dir(&model).unwrap();
    let spec = RunSpec { batch: 3, seq: 17, lora_rank: 5, ..RunSpec::default() };
    let c = Case { model: "qwen3", data: "", spec, eval_data: None, init_adapter: None };
    let (d, e) = (dataset(&data, w.config.vocab_size), dataset(&eval, w.config.vocab_size));
    let plan = Run::prepare(inputs(&w, &c, &d, Some(&e)), None).unwrap().plan;
    assert_eq!(v["plan"], plan.to_json());
    assert_eq!(v["plan"]["total_bytes"].as_u64(), Some(plan.total()));
    assert!(v["plan"]["classes"]["eval"].as_u64().unwrap() > 0);
    assert_eq!(v["fits"], true);
    assert_eq!(v["data"]["records"], 10);
    assert_eq!(v["eval_data"]["windows"].as_u64(), Some((e.stream_len() / 18) as u64));
    assert_eq!(v["model"]["trained_parameters"].as_u64(), Some(webtune::model::LoraConfig::new(5, 16.0, vec!["all-linear".into()], 0.0, w.config.family).unwrap().param_count(&w.config).unwrap() as u64));

    // the text form: the table's total, the largest tensor
    let o = webtune(&["--dry-run"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let total = format!("total {:>20}", webtune::memory::human(plan.total()));
    assert!(text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == total.split_whitespace().collect::<Vec<_>>().join(" ")), "{text}");
    assert!(text.contains(&format!("largest tensor: '{}'", plan.largest().unwrap().name)), "{text}");
    assert!(text.contains("data: ") && text.contains("eval data: ") && text.contains("first record"), "{text}");

    // a budget below the plan: shown, then refused with exit code 1
    let o = webtune(&["--dry-run", "--gpu-memory", "600K"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("error: this run does not fit the GPU: the run needs") && err.contains("the largest --batch that fits"), "{err}");
    let o = webtune(&["--dry-run", "--gpu-memory", "lots"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--gpu-memory \"lots\" is not a size"));

    assert!(!out.exists(), "--out was created");
    assert!(!log.exists(), "--log-json was created");
    assert_eq!(listing(tmp.path()), before, "a file was written");
}
