//! The GPU engine against PyTorch + PEFT on the same checkpoint (fixtures made by
//! tools/make_fixtures.py): logits, LoRA and full gradients, and the weights after
//! three AdamW steps with clipping, plus each step's loss and gradient norm.
mod common;
use std::path::PathBuf;

use common::*;
use webtune::data::{records, Batcher, TokenStream};
use webtune::gpu::Gpu;
use webtune::model::gpt2::{Activations, Gpt2Gpu};
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

fn setup() -> (Gpu, Weights, LoraAdapter, Batcher) {
    let gpu = gpu();
    let w = Weights::load_dir(&dir().join("model")).unwrap();
    let adapter = LoraAdapter::load_peft(&dir().join("adapter_init"), &w.config).unwrap();
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
        let m = Gpt2Gpu::new(&gpu, &w, lora, Trainable::None).unwrap();
        let got = pollster::block_on(m.logits(&gpu, &batch.tokens, 2, 16)).unwrap();
        let want = ex.get(key);
        assert_close(key, &got, want, RTOL, atol_for(want));
    }
}

/// One gradient program on batch 0; returns (loss, [(param name, gradient)]).
fn gradients(mode: Trainable) -> (f32, Vec<(String, Vec<f32>)>) {
    let (gpu, w, adapter, mut batcher) = setup();
    let lora = if mode == Trainable::Lora { Some(&adapter) } else { None };
    let m = Gpt2Gpu::new(&gpu, &w, lora, mode).unwrap();
    let a = Activations::new(&gpu, &m, 2, 16, true, 1 << 20).unwrap();
    let batch = batcher.next_batch();
    a.io.write_batch(&gpu, &batch.tokens, &batch.targets);
    m.gradient_program(&gpu, &a).run(&gpu);
    let loss = gpu.read_blocking(&a.io.loss).unwrap()[0];
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

fn train_three_steps(mode: Trainable) -> (Gpu, Trainer, Vec<webtune::train::StepLog>) {
    let (gpu, w, adapter, batcher) = setup();
    let ex = expected();
    let section = if mode == Trainable::Full { "full" } else { "lora" };
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
    let model = Gpt2Gpu::new(&gpu, &w, lora, mode).unwrap();
    let mut cfg = TrainConfig::new(2, 16, adamw);
    cfg.readback_every = 2; // exercises a partial ring at the end
    let mut trainer = Trainer::new(&gpu, model.into(), batcher, cfg).unwrap();
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

#[test]
fn three_lora_adamw_steps_match_peft() {
    let (gpu, trainer, logs) = train_three_steps(Trainable::Lora);
    let ex = expected();
    check_logs(&logs, &ex, "lora");
    let adapter = pollster::block_on(trainer.model.download_adapter(&gpu)).unwrap().unwrap();
    for m in &adapter.modules {
        for (ab, t) in [("lora_A", &m.a), ("lora_B", &m.b)] {
            let key = format!("lora.step3.{}", peft_name(&m.name(), ab));
            assert_close(&key, &t.data, ex.get(&key), 0.0, 1e-4);
        }
    }
}

#[test]
fn three_full_adamw_steps_match_pytorch() {
    let (gpu, trainer, logs) = train_three_steps(Trainable::Full);
    let ex = expected();
    check_logs(&logs, &ex, "full");
    let w = pollster::block_on(trainer.model.download_weights(&gpu)).unwrap();
    assert_eq!(w.tensors.len(), ex.tensors.keys().filter(|k| k.starts_with("full.step3.")).count());
    for (name, t) in &w.tensors {
        let key = format!("full.step3.{name}");
        assert_close(&key, &t.data, ex.get(&key), 0.0, 1e-4);
    }
}
