//! Shared test helpers: one GPU per test, and closeness checks with stated tolerances.
#![allow(dead_code)]

use webtune::gpu::Gpu;

pub fn gpu() -> Gpu {
    match Gpu::new_blocking(None) {
        Ok(g) => g,
        Err(e) => panic!("tests need a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers): {e}"),
    }
}

/// Deterministic test data in [-1, 1).
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut r = webtune::rng::Rng::new(seed);
    (0..n).map(|_| r.uniform_in(-1.0, 1.0)).collect()
}

/// Asserts |a - b| <= atol + rtol * |b| elementwise, naming the first offender.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32, atol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs {}", got.len(), want.len());
    let mut worst = (0usize, 0.0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let tol = atol + rtol * w.abs();
        assert!(g.is_finite(), "{what}[{i}] = {g} is not finite (want {w})");
        if err - tol > worst.1 {
            worst = (i, err - tol);
        }
    }
    if worst.1 > 0.0 {
        let i = worst.0;
        panic!("{what}[{i}]: got {} want {} (|err| {} > atol {atol} + rtol {rtol} * |want|)", got[i], want[i], (got[i] - want[i]).abs());
    }
}

/// `assert_close` for weights after a few AdamW steps. An Adam update moves an entry by about lr
/// whatever its gradient's size, so an entry whose first gradient `g0` is at f32 noise level
/// (non-zero, below 1e-6 of the tensor's largest) moves by noise: such entries are left out of the
/// comparison and returned as a count (the caller bounds it); every other entry must agree to `atol`.
pub fn assert_adam_close(what: &str, got: &[f32], want: &[f32], g0: &[f32], atol: f32) -> usize {
    let floor = 1e-6 * g0.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let keep: Vec<usize> = (0..got.len()).filter(|&i| g0[i] == 0.0 || g0[i].abs() >= floor).collect();
    let pick = |v: &[f32]| keep.iter().map(|&i| v[i]).collect::<Vec<f32>>();
    assert_close(what, &pick(got), &pick(want), 0.0, atol);
    got.len() - keep.len()
}

/// tests/fixtures/tiny: the tiny GPT-2, its PEFT adapter and data, and what PyTorch + PEFT
/// computed from them (tools/make_fixtures.py).
pub fn tiny_fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

/// The PyTorch + PEFT results for the tiny fixture: tensors by name, and expected.json.
pub struct Expected {
    pub tensors: std::collections::HashMap<String, Vec<f32>>,
    pub json: serde_json::Value,
}

pub fn expected() -> Expected {
    expected_at(&tiny_fixtures())
}

/// expected.safetensors + expected.json of a fixture folder.
pub fn expected_at(dir: &std::path::Path) -> Expected {
    let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (name.to_string(), bytemuck::pod_collect_to_vec::<u8, f32>(view.data())))
        .collect();
    let json = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    Expected { tensors, json }
}

impl Expected {
    pub fn get(&self, name: &str) -> &[f32] {
        self.tensors.get(name).unwrap_or_else(|| panic!("fixture has no tensor {name}"))
    }
    /// A list of numbers at a top-level key of expected.json (e.g. "lora.losses").
    pub fn floats(&self, key: &str) -> Vec<f32> {
        self.json[key].as_array().unwrap_or_else(|| panic!("expected.json has no list {key}")).iter().map(|x| x.as_f64().unwrap() as f32).collect()
    }
}

/// Runs the `webtune` binary of this build with `args`.
pub fn webtune<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_webtune")).args(args).output().unwrap()
}

/// Runs `webtune` and requires exit 0, showing stderr otherwise.
pub fn webtune_ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> std::process::Output {
    let out = webtune(args);
    assert!(out.status.success(), "webtune {args:?} failed ({:?}):\n{}", out.status, text(&out.stderr));
    out
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A LoRA adapter (r, alpha 2r, c_attn/c_proj/c_fc: all four linears of every layer) with
/// (every linear layer of the model's family) random A (scaled by 1/sqrt(in)) and non-zero B (scaled by `b_scale`), so every gradient
/// and output path is exercised; seeds start at `seed0`.
pub fn random_adapter(cfg: &webtune::model::ModelConfig, r: usize, seed0: u64, b_scale: f32) -> webtune::model::LoraAdapter {
    use webtune::model::lora::{LoraConfig, LoraModule};
    use webtune::model::{HostTensor, Linear};
    let targets = LoraConfig::default_targets(cfg.family);
    let config = LoraConfig { r, alpha: 2.0 * r as f32, targets, dropout: 0.0, family: cfg.family };
    let mut modules = Vec::new();
    for layer in 0..cfg.n_layer {
        for (k, &linear) in Linear::of(cfg.family).iter().enumerate() {
            let (fin, fout) = linear.dims(cfg);
            let seed = seed0 + (layer * 10 + k) as u64;
            let a = rand_vec(r * fin, seed).iter().map(|v| v / (fin as f32).sqrt()).collect();
            let b = rand_vec(fout * r, seed + 1000).iter().map(|v| b_scale * v).collect();
            modules.push(LoraModule { layer, linear, a: HostTensor::new(&[r, fin], a), b: HostTensor::new(&[fout, r], b) });
        }
    }
    webtune::model::LoraAdapter { config, modules }
}
