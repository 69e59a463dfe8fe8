//! The GPU model (src/model/gpt2.rs) against the CPU reference (src/reference/gpt2.rs)
//! on a small model with odd sizes: logits, loss and gradients in LoRA mode, full mode,
//! and full mode with an untied head and ignored targets.
mod common;
use common::*;
use webtune::model::ModelGpu;
use webtune::model::Trainable;
use webtune::model::lora::LoraAdapter;
use webtune::model::{ModelConfig, Weights, HostTensor};
use webtune::reference::gpt2 as reference;

const B: usize = 2;
const T: usize = 7;

fn model(untied: bool) -> Weights {
    // n_embd 24 with 3 heads (head_dim 8), vocab 37, n_positions 11: no size is a tile multiple
    let cfg = ModelConfig::gpt2(2, 3, 24, 37, 11);
    let mut w = Weights::random(&cfg, 5);
    // non-trivial LayerNorm and bias values so their gradients matter
    for (i, (name, t)) in w.tensors.iter_mut().enumerate() {
        if name.contains("ln_") || name.ends_with(".bias") {
            let noise = rand_vec(t.data.len(), 100 + i as u64);
            for (v, n) in t.data.iter_mut().zip(noise) {
                *v += 0.1 * n;
            }
        }
    }
    if untied {
        let head = rand_vec(37 * 24, 77).iter().map(|v| 0.05 * v).collect();
        w.tensors.insert("lm_head.weight".into(), HostTensor::new(&[37, 24], head));
    }
    w
}

fn adapter(cfg: &ModelConfig, r: usize) -> LoraAdapter {
    random_adapter(cfg, r, 0, 0.1)
}

fn batch(vocab: usize, ignore_some: bool) -> (Vec<u32>, Vec<i32>) {
    let mut rng = webtune::rng::Rng::new(3);
    let tokens: Vec<u32> = (0..B * T).map(|_| rng.below(vocab) as u32).collect();
    let targets: Vec<i32> =
        (0..B * T).map(|i| if ignore_some && i % 4 == 1 { -100 } else { rng.below(vocab) as i32 }).collect();
    (tokens, targets)
}

/// Runs one gradient program on the GPU; returns (loss, name -> gradient).
fn gpu_loss_and_grads(w: &Weights, lora: Option<&LoraAdapter>, mode: Trainable, tokens: &[u32], targets: &[i32]) -> (f32, Vec<(String, Vec<f32>)>) {
    let gpu = gpu();
    let m = ModelGpu::new(&gpu, w, lora, mode).unwrap();
    // a small head budget so the LM head runs in several chunks (14 rows, chunks of 4)
    let a = m.activations(&gpu, B, T, true, 4 * 37 * 4).unwrap();
    assert_eq!(a.io().head.chunk, 4);
    a.io().write_batch(&gpu, tokens, targets);
    m.gradient_program(&gpu, &a).run(&gpu);
    let loss = gpu.read_blocking(&a.io().loss).unwrap()[0];
    let grads = m.trained().iter().map(|p| (p.name.clone(), gpu.read_blocking(p.grad.as_ref().unwrap()).unwrap())).collect();
    gpu.check().unwrap();
    (loss, grads)
}

#[test]
fn logits_match_reference_with_and_without_lora() {
    let w = model(false);
    let ad = adapter(&w.config, 3);
    let (tokens, _) = batch(37, false);
    let gpu = gpu();
    for lora in [None, Some(&ad)] {
        let m = ModelGpu::new(&gpu, &w, lora, Trainable::None).unwrap();
        let got = pollster::block_on(m.logits(&gpu, &tokens, B, T)).unwrap();
        let want = reference::forward_logits(&w, lora, &tokens, B, T);
        assert_close("logits", &got, &want, 1e-4, 1e-5);
    }
}

#[test]
fn lora_gradients_match_reference() {
    let w = model(false);
    let ad = adapter(&w.config, 3);
    let (tokens, targets) = batch(37, false);
    let (loss, grads) = gpu_loss_and_grads(&w, Some(&ad), Trainable::Lora, &tokens, &targets);
    let (want_loss, want) = reference::loss_and_grads(&w, Some(&ad), &tokens, &targets, B, T);
    assert_close("loss", &[loss], &[want_loss], 1e-5, 0.0);
    assert_eq!(grads.len(), 2 * 4 * 2, "LoRA A and B of 4 linears in 2 layers, nothing else");
    for (name, g) in grads {
        let module = name.rsplit_once('.').unwrap().0;
        let (da, db) = &want.lora[module];
        let wanted = if name.ends_with("lora_A") { da } else { db };
        assert_close(&name, &g, wanted, 1e-4, 1e-6);
    }
}

fn check_full(untied: bool, ignore_some: bool) {
    let w = model(untied);
    let (tokens, targets) = batch(37, ignore_some);
    let (loss, grads) = gpu_loss_and_grads(&w, None, Trainable::Full, &tokens, &targets);
    let (want_loss, want) = reference::loss_and_grads(&w, None, &tokens, &targets, B, T);
    assert_close("loss", &[loss], &[want_loss], 1e-5, 0.0);
    assert_eq!(grads.len(), want.base.len());
    for (name, g) in grads {
        assert_close(&name, &g, &want.base[&name], 1e-4, 1e-6);
    }
}

#[test]
fn full_gradients_match_reference() {
    check_full(false, false);
}

#[test]
fn full_gradients_untied_head_and_ignored_targets() {
    check_full(true, true);
}
