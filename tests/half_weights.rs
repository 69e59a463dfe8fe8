//! f16 frozen base weights (`--base-weights f16`, `Gpu::set_base_weights`) against the CPU
//! reference run on the same weights rounded to f16 (round to nearest even, as PyTorch's
//! `.half()`): the matmul with an f16 operand on every layout and tile (odd and vec4-aligned
//! shapes, bit-identical across tiles), the embedding gather from an f16 table, and whole models
//! (GPT-2 against the reference; GPT-2 and Qwen2 bit for bit against the f32 path — tested against
//! PyTorch elsewhere — on the rounded weights: LoRA loss and gradients, logits, a table split into
//! row chunks). What must
//! stay f32 does: LoRA pairs, trained weights (full fine-tuning), norms, biases, positions.
//! Tolerances as tests/kernel_matmul.rs and tests/model_reference.rs.
mod common;
use common::*;
use webtune::gpu::{BaseWeights, Gpu, Program};
use webtune::kernels::embedding::embedding_forward;
use webtune::kernels::matmul::{all_tiles, push_with, Epilogue, Matmul};
use webtune::model::{HostTensor, ModelConfig, ModelGpu, Trainable, Weights};
use webtune::reference::{gpt2 as reference, ops};

fn round(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

fn gpu_f16() -> Gpu {
    let gpu = gpu();
    gpu.set_base_weights(BaseWeights::F16).expect("the test GPU (lavapipe) has shader-f16");
    gpu
}

#[test]
fn matmul_with_an_f16_operand_matches_the_reference_on_every_layout_and_tile() {
    let gpu = gpu_f16();
    // odd shapes (no vec4 loads), aligned ones (vec4<f16> loads), one row (decoding), k = 1
    let shapes = [(7, 13, 11), (16, 24, 20), (1, 37, 24), (5, 8, 1)];
    for &(m, n, k) in &shapes {
        for (ta, tb) in [(false, false), (false, true), (true, false)] {
            let mut s = Matmul::new(m, n, k);
            if ta {
                s = s.ta();
            }
            if tb {
                s = s.tb();
            }
            let a = rand_vec(m * k, 1);
            let b = rand_vec(k * n, 2);
            let (a_t, b_t) = (gpu.upload("a", &[m * k], &a).unwrap(), gpu.upload_half("b", &[k * n], &b).unwrap());
            assert!(b_t.half && b_t.bytes() == 2 * (k * n) as u64);
            let want = ops::matmul(&a, &round(&b), m, n, k, ta, tb);
            // the f32 kernel on the rounded values gives the same bits (same loads, same order)
            let b_r = gpu.upload("b rounded", &[k * n], &round(&b)).unwrap();
            let c32 = gpu.zeros("c", &[m * n]).unwrap();
            let mut prog = Program::new();
            webtune::kernels::matmul::matmul(&gpu, &mut prog, &s, &a_t, &b_r, &c32, None);
            prog.run(&gpu);
            let mut first: Option<Vec<f32>> = Some(gpu.read_blocking(&c32).unwrap());
            for tile in all_tiles().into_iter().filter(|t| t.fits(&gpu.limits)) {
                let c = gpu.zeros("c", &[m * n]).unwrap();
                let mut prog = Program::new();
                push_with(&gpu, &mut prog, &s, &a_t, &b_t, &c, Epilogue::default(), tile).unwrap();
                prog.run(&gpu);
                let got = gpu.read_blocking(&c).unwrap();
                let what = format!("{m}x{n}x{k} ta {ta} tb {tb} tile {}", tile.name());
                assert_close(&what, &got, &want, 1e-4, 1e-5 * (k as f32).sqrt());
                match &first {
                    None => first = Some(got),
                    Some(f) => assert!(f.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits()), "{what}: not the same bits as f32 on the rounded values"),
                }
            }
            // an f16 A (not used by the model, but the kernel takes either operand)
            let a_h = gpu.upload_half("a", &[m * k], &a).unwrap();
            let c = gpu.zeros("c", &[m * n]).unwrap();
            let mut prog = Program::new();
            webtune::kernels::matmul::matmul(&gpu, &mut prog, &s, &a_h, &b_t, &c, None);
            prog.run(&gpu);
            let want = ops::matmul(&round(&a), &round(&b), m, n, k, ta, tb);
            assert_close(&format!("{m}x{n}x{k} f16 A and B"), &gpu.read_blocking(&c).unwrap(), &want, 1e-4, 1e-5 * (k as f32).sqrt());
        }
    }
    gpu.check().unwrap();
    // an f16 C is refused (results are f32)
    let a = gpu.upload("a", &[4], &[1.0; 4]).unwrap();
    let c = gpu.upload_half("c", &[4], &[0.0; 4]).unwrap();
    let mut prog = Program::new();
    let e = push_with(&gpu, &mut prog, &Matmul::new(2, 2, 1), &a, &a, &c, Epilogue::default(), all_tiles()[0]).unwrap_err();
    assert!(e.contains("C, bias and D must be f32"), "{e}");
}

#[test]
fn an_f16_tensor_reads_back_as_its_rounded_values() {
    let gpu = gpu_f16();
    for n in [1, 3, 8, 37] {
        let v: Vec<f32> = rand_vec(n, 9).iter().map(|x| x * 300.0).collect();
        let t = gpu.upload_half("t", &[n], &v).unwrap();
        assert_eq!(gpu.read_blocking(&t).unwrap(), round(&v), "{n} values");
    }
}

#[test]
fn embedding_gathers_from_an_f16_table() {
    let gpu = gpu_f16();
    let (v, c, b, t) = (29, 12, 2, 5);
    let wte = rand_vec(v * c, 3);
    let wpe = rand_vec(t * c, 4);
    let tokens: Vec<u32> = vec![0, 28, 5, 5, 17, 3, 28, 0, 11, 1];
    let x = gpu.zeros("x", &[b * t, c]).unwrap();
    let mut prog = Program::new();
    let tok = gpu.upload_u32("tokens", &[b * t], &tokens).unwrap();
    let table = gpu.upload_half("wte", &[v, c], &wte).unwrap();
    let pos = gpu.upload("wpe", &[t, c], &wpe).unwrap();
    embedding_forward(&gpu, &mut prog, &tok, &table, Some(&pos), &x, b, t, c);
    prog.run(&gpu);
    let wte_r = round(&wte);
    let want: Vec<f32> = (0..b * t)
        .flat_map(|r| (0..c).map(move |j| (r, j)))
        .map(|(r, j)| wte_r[tokens[r] as usize * c + j] + wpe[(r % t) * c + j])
        .collect();
    assert_eq!(gpu.read_blocking(&x).unwrap(), want);
}

/// `w` with the tensors webtune stores in f16 rounded: the linear layers' weights and the
/// vocabulary tables (every 2-D tensor but GPT-2's positions).
fn rounded(w: &Weights) -> Weights {
    let mut r = w.clone();
    for (name, t) in r.tensors.iter_mut() {
        if t.shape.len() == 2 && name != "wpe.weight" {
            t.data = round(&t.data);
        }
    }
    r
}

const B: usize = 2;
const T: usize = 7;

fn batch(vocab: usize) -> (Vec<u32>, Vec<i32>) {
    let mut rng = webtune::rng::Rng::new(3);
    let tokens: Vec<u32> = (0..B * T).map(|_| rng.below(vocab) as u32).collect();
    let targets: Vec<i32> = (0..B * T).map(|_| rng.below(vocab) as i32).collect();
    (tokens, targets)
}

/// (loss, LoRA gradients by name, logits).
type Step = (f32, Vec<(String, Vec<f32>)>, Vec<f32>);

/// One LoRA gradient step and the logits on `gpu`: (loss, LoRA gradients by name, logits);
/// checks what is stored in f16 and what is not.
fn lora_step(gpu: &Gpu, w: &Weights, ad: &webtune::model::LoraAdapter, tokens: &[u32], targets: &[i32]) -> Step {
    let m = ModelGpu::new(gpu, w, Some(ad), Trainable::Lora).unwrap();
    for p in m.params() {
        let matrix = p.value.shape.len() == 2 && !p.name.contains("lora_") && p.name != "wpe.weight";
        assert_eq!(p.value.half, matrix && gpu.half_weights(), "{}: f16 exactly for frozen weight matrices", p.name);
    }
    let a = m.activations(gpu, B, T, true, 4 * w.config.vocab_size as u64 * 4).unwrap();
    a.io().write_batch(gpu, tokens, targets);
    m.gradient_program(gpu, &a).run(gpu);
    let loss = gpu.read_blocking(&a.io().loss).unwrap()[0];
    let grads = m.trained().iter().map(|p| (p.name.clone(), gpu.read_blocking(p.grad.as_ref().unwrap()).unwrap())).collect();
    // the whole [B·T, V] logits only where they fit a binding
    let logits = match gpu.binding_limited() {
        true => Vec::new(),
        false => pollster::block_on(m.base_view().logits(gpu, tokens, B, T)).unwrap(),
    };
    gpu.check().unwrap();
    (loss, grads, logits)
}

/// The f16 run on `w` gives the same bits as the f32 run on `w` rounded (each product reads the
/// same values and accumulates in the same order). Under a binding `limit` the f32 run gets twice
/// the limit, so its tables are split into the same row chunks (the head's backward sums the
/// vocabulary chunk by chunk).
fn same_bits_as_f32_on_rounded(w: &Weights, ad: &webtune::model::LoraAdapter, tokens: &[u32], targets: &[i32], limit: Option<u64>) -> f32 {
    let run = |half: bool| {
        let gpu = gpu();
        gpu.set_base_weights(if half { BaseWeights::F16 } else { BaseWeights::F32 }).unwrap();
        if let Some(l) = limit {
            gpu.limit_binding(if half { l } else { 2 * l }).unwrap();
        }
        let wr = rounded(w);
        lora_step(&gpu, if half { w } else { &wr }, ad, tokens, targets)
    };
    let (h, f) = (run(true), run(false));
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(h.0.to_bits(), f.0.to_bits(), "loss");
    for ((name, g), (_, g32)) in h.1.iter().zip(&f.1) {
        assert_eq!(bits(g), bits(g32), "{name}");
    }
    assert_eq!(bits(&h.2), bits(&f.2), "logits");
    h.0
}

fn gpt2_model() -> Weights {
    // odd sizes; an untied head so both tables are f16
    let cfg = ModelConfig::gpt2(2, 3, 24, 301, 11);
    let mut w = Weights::random(&cfg, 5);
    let head = rand_vec(301 * 24, 77).iter().map(|v| 0.05 * v).collect();
    w.tensors.insert("lm_head.weight".into(), HostTensor::new(&[301, 24], head));
    w
}

#[test]
fn gpt2_lora_with_f16_base_weights_matches_the_reference_on_rounded_weights() {
    let w = gpt2_model();
    let ad = random_adapter(&w.config, 3, 0, 0.1);
    let (tokens, targets) = batch(301);
    let wr = rounded(&w);
    for limit in [None, Some(10000)] {
        // 10000 bytes, under the tables only: [301, 24] in 2 row chunks in f16, 3 in f32
        let gpu = gpu_f16();
        if let Some(l) = limit {
            gpu.limit_binding(l).unwrap();
        }
        let (loss, grads, logits) = lora_step(&gpu, &w, &ad, &tokens, &targets);
        let (want_loss, want) = reference::loss_and_grads(&wr, Some(&ad), &tokens, &targets, B, T);
        assert_close(&format!("loss, limit {limit:?}"), &[loss], &[want_loss], 1e-5, 0.0);
        assert_eq!(grads.len(), 2 * 4 * 2);
        for (name, g) in grads {
            let (da, db) = &want.lora[name.rsplit_once('.').unwrap().0];
            assert_close(&name, &g, if name.ends_with("lora_A") { da } else { db }, 1e-4, 1e-6);
        }
        if limit.is_none() {
            assert_close("logits", &logits, &reference::forward_logits(&wr, None, &tokens, B, T), 1e-4, 1e-5);
        }
        assert_eq!(same_bits_as_f32_on_rounded(&w, &ad, &tokens, &targets, limit).to_bits(), loss.to_bits());
        // and the rounding is real: the f32 weights' loss differs
        let (f32_loss, _) = reference::loss_and_grads(&w, Some(&ad), &tokens, &targets, B, T);
        assert_ne!(f32_loss.to_bits(), want_loss.to_bits());
    }
}

#[test]
fn qwen2_lora_with_f16_base_weights_is_the_f32_path_on_rounded_weights() {
    let cfg = serde_json::json!({
        "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "vocab_size": 301, "hidden_size": 16,
        "intermediate_size": 36, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 16, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": true,
        "bos_token_id": 300, "eos_token_id": 300,
    });
    let w = Weights::random(&ModelConfig::from_json(&cfg.to_string(), "test config").unwrap(), 6);
    let ad = random_adapter(&w.config, 2, 1, 0.1);
    let (tokens, targets) = batch(301);
    // 5000 bytes, under the table only: [301, 16] in 2 row chunks in f16, 4 in f32
    for limit in [None, Some(5000)] {
        assert!(same_bits_as_f32_on_rounded(&w, &ad, &tokens, &targets, limit).is_finite());
    }
}

#[test]
fn full_fine_tuning_and_f32_keep_every_weight_f32() {
    let w = gpt2_model();
    let gpu = gpu_f16();
    let m = ModelGpu::new(&gpu, &w, None, Trainable::Full).unwrap();
    assert!(m.params().iter().all(|p| !p.value.half), "trained weights are f32");
    gpu.set_base_weights(BaseWeights::F32).unwrap();
    let m = ModelGpu::new(&gpu, &w, None, Trainable::None).unwrap();
    assert!(m.params().iter().all(|p| !p.value.half), "--base-weights f32");
    // auto keeps f32 on a CPU adapter such as lavapipe, f16 on a GPU with shader-f16
    gpu.set_base_weights(BaseWeights::Auto).unwrap();
    assert_eq!(gpu.half_weights(), gpu.report.shader_f16 && gpu.report.device_type != "Cpu");
}

/// A table uploaded as row chunks, each read and written a piece of about 4 MiB of f32 at a time
/// (`RowParam::new`): f32 and f16, odd widths (an f16 piece of odd length), several pieces a
/// chunk; every chunk reads back as the rows it holds (rounded to f16 when half).
#[test]
fn tables_upload_in_pieces_and_read_back_whole() {
    use webtune::model::linear::RowParam;
    for (half, cols, limit) in [(false, 999, None), (true, 999, None), (true, 1000, Some(1201 * 1000 * 2)), (false, 1000, Some(1201 * 1000 * 4))] {
        let gpu = gpu();
        gpu.set_base_weights(if half { BaseWeights::F16 } else { BaseWeights::F32 }).unwrap();
        if let Some(l) = limit {
            gpu.limit_binding(l).unwrap();
        }
        let rows = 2101;
        let mut w = Weights::random(&ModelConfig::gpt2(1, 1, 8, 16, 4), 1);
        let data = rand_vec(rows * cols, 5);
        w.tensors.insert("big".into(), HostTensor::new(&[rows, cols], data.clone()));
        let t = RowParam::new(&gpu, &w, "big", false).unwrap();
        let want = if half { round(&data) } else { data };
        let mut at = 0;
        for p in &t.parts {
            assert_eq!(p.value.half, half);
            let got = gpu.read_blocking(&p.value).unwrap();
            assert!(got == want[at..at + got.len()], "half {half}, cols {cols}, part {} from element {at}", p.value.label);
            at += got.len();
        }
        assert_eq!(at, rows * cols);
        assert_eq!(t.parts.len(), if limit.is_some() { 2 } else { 1 });
    }
}
