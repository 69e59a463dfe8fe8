//! The GPU engine against PyTorch + PEFT on the same checkpoint (fixtures made by
//! tools/make_fixtures.py): logits, LoRA and full gradients, and the weights after
//! three AdamW steps with clipping, plus each step's loss and gradient norm. The cases:
//! - `lora` / `full`: adapter_init (r 4, alpha 8, every linear) and the whole model, lr 1e-2 / 1e-3,
//!   weight decay 0.01;
//! - `lora_wd` / `full_wd`: weight decay 1.0 at lr 1e-2 (betas 0.8/0.95, eps 1e-6), where the decay
//!   alone moves the weights far beyond the 1e-4 tolerance (the fixture records by how much);
//! - `lora_r5`: adapter_r5, alpha / r = 3 / 5 on attn.c_proj and c_fc only.
mod common;
use std::path::PathBuf;

use common::*;
use webtune::data::{records, Batcher, TokenStream};
use webtune::gpu::Gpu;
use webtune::model::ModelGpu;
use webtune::model::Trainable;
use webtune::model::{Weights, LoraAdapter};
use webtune::train::{AdamWConfig, TrainConfig, Trainer};

const RTOL: f32 = 1e-4;

fn dir() -> PathBuf {
    tiny_fixtures()
}

/// Absolute tolerance for a tensor: 1e-4 relative to its largest entry (plus rtol per entry).
fn atol_for(want: &[f32]) -> f32 {
    RTOL * want.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

fn peft_name(module: &str, ab: &str) -> String {
    format!("base_model.model.transformer.{module}.{ab}.weight")
}

/// The init adapter of a LoRA fixture section ("lora", "lora_wd": adapter_init; "lora_r5": adapter_r5).
fn init_adapter_of(section: &str) -> &'static str {
    if section == "lora_r5" {
        "adapter_r5"
    } else {
        "adapter_init"
    }
}

fn setup() -> (Gpu, Weights, LoraAdapter, Batcher) {
    setup_with("adapter_init")
}

fn setup_with(adapter_dir: &str) -> (Gpu, Weights, LoraAdapter, Batcher) {
    let gpu = gpu();
    let w = Weights::load_dir(&dir().join("model")).unwrap();
    let adapter = LoraAdapter::load_peft(&dir().join(adapter_dir), &w.config).unwrap();
    let recs = records::read_jsonl(&dir().join("data.jsonl"), w.config.vocab_size).unwrap();
    let batcher = Batcher::new(TokenStream::new(&recs, w.config.eos_token_id), 2, 16, false, 0).unwrap();
    (gpu, w, adapter, batcher)
}

#[test]
fn logits_match_pytorch_base_and_peft() {
    let (gpu, w, adapter, mut batcher) = setup();
    let ex = expected();
    let batch = batcher.next_batch();
    for (lora, key) in [(None, "base.logits"), (Some(&adapter), "lora.logits")] {
        let m = ModelGpu::new(&gpu, &w, lora, Trainable::None).unwrap();
        let got = pollster::block_on(m.logits(&gpu, &batch.tokens, 2, 16)).unwrap();
        let want = ex.get(key);
        assert_close(key, &got, want, RTOL, atol_for(want));
    }
}

/// One gradient program on batch 0; returns (loss, [(param name, gradient)]).
fn gradients(mode: Trainable) -> (f32, Vec<(String, Vec<f32>)>) {
    gradients_with(mode, "adapter_init")
}

fn gradients_with(mode: Trainable, adapter_dir: &str) -> (f32, Vec<(String, Vec<f32>)>) {
    let (gpu, w, adapter, mut batcher) = setup_with(adapter_dir);
    let lora = if mode == Trainable::Lora { Some(&adapter) } else { None };
    let m = ModelGpu::new(&gpu, &w, lora, mode).unwrap();
    let a = m.activations(&gpu, 2, 16, true, 1 << 20).unwrap();
    let batch = batcher.next_batch();
    a.io().write_batch(&gpu, &batch.tokens, &batch.targets);
    m.gradient_program(&gpu, &a).run(&gpu);
    let loss = gpu.read_blocking(&a.io().loss).unwrap()[0];
    let grads = m.trained().iter().map(|p| (p.name.clone(), gpu.read_blocking(p.grad.as_ref().unwrap()).unwrap())).collect();
    (loss, grads)
}

#[test]
fn lora_gradients_match_peft() {
    let ex = expected();
    let (loss, grads) = gradients(Trainable::Lora);
    assert_close("loss", &[loss], &[ex.json["lora.loss0"].as_f64().unwrap() as f32], 1e-5, 0.0);
    assert_eq!(grads.len(), 16, "A and B for 4 linears x 2 layers");
    for (name, got) in grads {
        let (module, ab) = name.rsplit_once('.').unwrap();
        let key = format!("lora.grad.{}", peft_name(module, ab));
        let want = ex.get(&key);
        assert_close(&key, &got, want, RTOL, atol_for(want));
    }
}

#[test]
fn full_gradients_match_pytorch() {
    let ex = expected();
    let (loss, grads) = gradients(Trainable::Full);
    assert_close("loss", &[loss], &ex.floats("full.losses")[..1], 1e-5, 0.0);
    assert_eq!(grads.len(), ex.tensors.keys().filter(|k| k.starts_with("full.grad.")).count());
    for (name, got) in grads {
        let key = format!("full.grad.{name}");
        let want = ex.get(&key);
        assert_close(&key, &got, want, RTOL, atol_for(want));
    }
}

/// Three steps with the hyperparameters of the fixture's `section` ("lora", "full", "lora_wd",
/// "full_wd", "lora_r5").
fn train_three_steps(section: &str) -> (Gpu, Trainer, Vec<webtune::train::StepLog>) {
    let mode = if section.starts_with("full") { Trainable::Full } else { Trainable::Lora };
    let (gpu, w, adapter, batcher) = setup_with(init_adapter_of(section));
    let ex = expected();
    let o = &ex.json[section]["optimizer"];
    let f = |v: &serde_json::Value| v.as_f64().unwrap() as f32;
    let adamw = AdamWConfig {
        lr: f(&o["lr"]),
        beta1: f(&o["betas"][0]),
        beta2: f(&o["betas"][1]),
        eps: f(&o["eps"]),
        weight_decay: f(&o["weight_decay"]),
        grad_clip: f(&ex.json[section]["clip_grad_norm"]),
    };
    let lora = if mode == Trainable::Lora { Some(&adapter) } else { None };
    let model = ModelGpu::new(&gpu, &w, lora, mode).unwrap();
    let mut cfg = TrainConfig::new(2, 16, adamw);
    cfg.readback_every = 2; // exercises a partial ring at the end
    let mut trainer = Trainer::new(&gpu, model, batcher, cfg).unwrap();
    let mut logs = Vec::new();
    for _ in 0..3 {
        logs.extend(pollster::block_on(trainer.step(&gpu, adamw.lr)).unwrap());
    }
    logs.extend(pollster::block_on(trainer.flush(&gpu)).unwrap());
    (gpu, trainer, logs)
}

fn check_logs(logs: &[webtune::train::StepLog], ex: &Expected, section: &str) {
    assert_eq!(logs.iter().map(|l| l.step).collect::<Vec<_>>(), vec![1, 2, 3]);
    let loss: Vec<f32> = logs.iter().map(|l| l.loss).collect();
    let norm: Vec<f32> = logs.iter().map(|l| l.grad_norm).collect();
    assert_close("losses", &loss, &ex.floats(&format!("{section}.losses")), 1e-5, 0.0);
    assert_close("grad norms", &norm, &ex.floats(&format!("{section}.grad_norms")), 1e-4, 0.0);
}

/// Three LoRA steps of `section` against PEFT's adapter after them; returns the adapter's module names.
fn lora_steps_match(section: &str) -> Vec<String> {
    let (gpu, trainer, logs) = train_three_steps(section);
    let ex = expected();
    check_logs(&logs, &ex, section);
    let adapter = pollster::block_on(trainer.model.download_adapter(&gpu)).unwrap().unwrap();
    let prefix = format!("{section}.step3.");
    assert_eq!(2 * adapter.modules.len(), ex.tensors.keys().filter(|k| k.starts_with(&prefix)).count());
    for m in &adapter.modules {
        for (ab, t) in [("lora_A", &m.a), ("lora_B", &m.b)] {
            let key = format!("{prefix}{}", peft_name(&m.name(), ab));
            assert_close(&key, &t.data, ex.get(&key), 0.0, 1e-4);
        }
    }
    adapter.modules.iter().map(|m| m.name()).collect()
}

fn full_steps_match(section: &str) {
    let (gpu, trainer, logs) = train_three_steps(section);
    let ex = expected();
    check_logs(&logs, &ex, section);
    let w = pollster::block_on(trainer.model.download_weights(&gpu)).unwrap();
    let prefix = format!("{section}.step3.");
    assert_eq!(w.tensors.len(), ex.tensors.keys().filter(|k| k.starts_with(&prefix)).count());
    for (name, t) in &w.tensors {
        let key = format!("{prefix}{name}");
        assert_close(&key, &t.data, ex.get(&key), 0.0, 1e-4);
    }
}

/// The fixture's own measure of how far the decay alone moves the weights in `section` (PyTorch with
/// and without it): the case can only catch a missing decay if this is far above the 1e-4 tolerance.
fn assert_decay_is_visible(section: &str) {
    let effect = expected().json[section]["decay_effect"].as_f64().unwrap();
    assert!(effect > 1e-2, "{section}: weight decay moves the weights by only {effect}: the case cannot see it");
}

#[test]
fn three_lora_adamw_steps_match_peft() {
    lora_steps_match("lora");
}

#[test]
fn three_full_adamw_steps_match_pytorch() {
    full_steps_match("full");
}

#[test]
fn lora_weight_decay_matches_peft() {
    assert_decay_is_visible("lora_wd");
    lora_steps_match("lora_wd");
}

#[test]
fn full_weight_decay_matches_pytorch() {
    assert_decay_is_visible("full_wd");
    full_steps_match("full_wd");
}

#[test]
fn lora_alpha_3_rank_5_on_two_targets_matches_peft() {
    // logits, gradients and three steps with alpha / r = 0.6 (every other case has 2), and LoRA on
    // attn.c_proj and mlp.c_fc only
    let (gpu, w, adapter, mut batcher) = setup_with("adapter_r5");
    let ex = expected();
    assert_eq!((adapter.config.r, adapter.config.alpha), (5, 3.0));
    let batch = batcher.next_batch();
    let m = ModelGpu::new(&gpu, &w, Some(&adapter), Trainable::None).unwrap();
    let got = pollster::block_on(m.logits(&gpu, &batch.tokens, 2, 16)).unwrap();
    let want = ex.get("lora_r5.logits");
    assert_close("lora_r5.logits", &got, want, RTOL, atol_for(want));

    let (loss, grads) = gradients_with(Trainable::Lora, "adapter_r5");
    assert_close("loss", &[loss], &[ex.json["lora_r5.loss0"].as_f64().unwrap() as f32], 1e-5, 0.0);
    assert_eq!(grads.len(), 8, "A and B for attn.c_proj and mlp.c_fc x 2 layers");
    for (name, got) in grads {
        let (module, ab) = name.rsplit_once('.').unwrap();
        let key = format!("lora_r5.grad.{}", peft_name(module, ab));
        let want = ex.get(&key);
        assert_close(&key, &got, want, RTOL, atol_for(want));
    }
    let names = lora_steps_match("lora_r5");
    assert_eq!(names, ["h.0.attn.c_proj", "h.0.mlp.c_fc", "h.1.attn.c_proj", "h.1.mlp.c_fc"]);
}
