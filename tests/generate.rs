//! KV-cached generation (src/generate.rs) on small random models with odd sizes (n_embd 15,
//! 3 heads of dim 5, vocab 37, n_positions 23), against the CPU reference
//! (`reference::gpt2::forward_logits` on the growing sequence): greedy tokens equal the
//! reference argmax at every step (each step's top-2 margin is checked to exceed the
//! logits tolerance, so agreement is meaningful), and the last step's logits match to
//! rtol 1e-4 / atol 1e-4; seeded sampling is reproducible; eos, max_len clipping, bad
//! inputs. `sample` itself is tested on hand-derived distributions (20000 draws,
//! frequencies within 0.015, about 4 standard deviations).
mod common;
use common::*;
use webtune::generate::{sample, Generator, SampleConfig};
use webtune::gpu::Gpu;
use webtune::model::ModelGpu;
use webtune::model::Trainable;
use webtune::model::lora::LoraAdapter;
use webtune::model::{ModelConfig, Weights, HostTensor};
use webtune::reference::gpt2 as reference;
use webtune::rng::Rng;

const V: usize = 37;
const C: usize = 15;
const NPOS: usize = 23;

/// A small model whose logits are spread out (std ~2), so greedy choices are clear-cut.
fn model(untied: bool) -> Weights {
    let cfg = ModelConfig::gpt2(2, 3, C, V, NPOS);
    let mut w = Weights::random(&cfg, 11);
    for (i, (name, t)) in w.tensors.iter_mut().enumerate() {
        let noise = rand_vec(t.data.len(), 500 + i as u64);
        if name == "wte.weight" {
            t.data.iter_mut().for_each(|v| *v *= 5.0);
        } else if name == "wpe.weight" {
            t.data.iter_mut().for_each(|v| *v *= 5.0);
        } else if name == "ln_f.weight" {
            // random signs: a tied head would otherwise mostly echo the last token
            t.data.copy_from_slice(&noise);
        } else if name.contains("ln_") || name.ends_with(".bias") {
            t.data.iter_mut().zip(noise).for_each(|(v, n)| *v += 0.1 * n);
        } else {
            t.data.iter_mut().for_each(|v| *v *= 10.0);
        }
    }
    if untied {
        let head = rand_vec(V * C, 78).iter().map(|v| 0.8 * v).collect();
        w.tensors
            .insert("lm_head.weight".into(), HostTensor::new(&[V, C], head));
    }
    w
}

fn adapter(cfg: &ModelConfig, r: usize) -> LoraAdapter {
    random_adapter(cfg, r, 0, 0.3)
}

fn greedy(max_new_tokens: usize) -> SampleConfig {
    SampleConfig {
        max_new_tokens,
        temperature: 0.0,
        stop_at_eos: false,
        ..SampleConfig::default()
    }
}

fn last_row(w: &Weights, lora: Option<&LoraAdapter>, seq: &[u32]) -> Vec<f32> {
    let logits = reference::forward_logits(w, lora, seq, 1, seq.len());
    logits[(seq.len() - 1) * V..].to_vec()
}

/// The reference greedy continuation; asserts each step's top-1 / top-2 margin exceeds `margin`.
fn reference_greedy(w: &Weights, lora: Option<&LoraAdapter>, prompt: &[u32], n: usize, margin: f32) -> Vec<u32> {
    let mut seq = prompt.to_vec();
    for _ in 0..n {
        let row = last_row(w, lora, &seq);
        let mut order: Vec<usize> = (0..V).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let gap = row[order[0]] - row[order[1]];
        assert!(
            gap > margin,
            "test model: step {} has top-2 margin {gap} (too close to call)",
            seq.len()
        );
        seq.push(order[0] as u32);
    }
    seq[prompt.len()..].to_vec()
}

fn generate(gpu: &Gpu, g: &mut Generator, m: &ModelGpu, prompt: &[u32], cfg: &SampleConfig) -> Vec<u32> {
    pollster::block_on(g.generate(gpu, m, prompt, cfg)).unwrap()
}

#[test]
fn greedy_matches_reference_with_and_without_lora() {
    let gpu = gpu();
    let tied = model(false);
    let untied = model(true);
    let ad = adapter(&tied.config, 3);
    let cases: [(&str, &Weights, Option<&LoraAdapter>); 3] = [
        ("base", &tied, None),
        ("lora", &tied, Some(&ad)),
        ("untied head", &untied, None),
    ];
    for (what, w, lora) in cases {
        let m = ModelGpu::new(&gpu, w, lora, Trainable::None).unwrap();
        let mut g = Generator::new(&gpu, &m, NPOS).unwrap();
        // a long prompt first, then shorter ones on the same caches: nothing stale may leak
        for prompt in [&[3u32, 17, 5, 30, 1, 9, 22, 36, 0][..], &[3, 17, 5], &[8]] {
            let n = 12;
            let want = reference_greedy(w, lora, prompt, n, 1e-3);
            let got = generate(&gpu, &mut g, &m, prompt, &greedy(n));
            assert_eq!(got, want, "{what}, prompt {prompt:?}");
            // the last decoding step's logits (it fed got[n - 2] at position len + n - 2)
            let mut seq = prompt.to_vec();
            seq.extend(&got[..n - 1]);
            let logits = gpu.read_blocking(g.logits()).unwrap();
            assert_close(
                &format!("{what} prompt {prompt:?} last logits"),
                &logits,
                &last_row(w, lora, &seq),
                1e-4,
                1e-4,
            );
        }
        // one new token: only the prefill ran; its logits are the prompt's last row
        let prompt = [4u32, 4, 31, 2, 19];
        let got = generate(&gpu, &mut g, &m, &prompt, &greedy(1));
        assert_eq!(got, reference_greedy(w, lora, &prompt, 1, 1e-3), "{what} one token");
        let logits = gpu.read_blocking(g.logits()).unwrap();
        assert_close(
            &format!("{what} prefill logits"),
            &logits,
            &last_row(w, lora, &prompt),
            1e-4,
            1e-4,
        );
        // filling the whole context (positions up to n_positions - 1)
        let got = generate(&gpu, &mut g, &m, &[12, 6], &greedy(100));
        assert_eq!(
            got,
            reference_greedy(w, lora, &[12, 6], NPOS - 2, 1e-3),
            "{what} full context"
        );
        gpu.check().unwrap();
    }
}

#[test]
fn sampling_is_seeded() {
    let gpu = gpu();
    // GPT-2 init: logits near zero, a flat distribution, so different seeds differ
    let w = Weights::random(&ModelConfig::gpt2(2, 3, C, V, NPOS), 3);
    let m = ModelGpu::new(&gpu, &w, None, Trainable::None).unwrap();
    let mut g = Generator::new(&gpu, &m, NPOS).unwrap();
    let cfg = |seed| SampleConfig {
        max_new_tokens: 15,
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        seed,
        stop_at_eos: false,
    };
    let prompt = [1u32, 2, 3];
    let a = generate(&gpu, &mut g, &m, &prompt, &cfg(1));
    let b = generate(&gpu, &mut g, &m, &prompt, &cfg(1));
    let c = generate(&gpu, &mut g, &m, &prompt, &cfg(2));
    assert_eq!(a.len(), 15);
    assert_eq!(a, b, "same seed, same tokens");
    assert_ne!(a, c, "another seed, other tokens");
    // not a degenerate sampler: a flat distribution over 37 ids gives several distinct ones
    let mut distinct = a.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() >= 5, "{a:?}");
}

#[test]
fn top_k_one_is_greedy() {
    let gpu = gpu();
    let w = model(false);
    let m = ModelGpu::new(&gpu, &w, None, Trainable::None).unwrap();
    let mut g = Generator::new(&gpu, &m, NPOS).unwrap();
    let prompt = [5u32, 7, 11];
    let want = generate(&gpu, &mut g, &m, &prompt, &greedy(10));
    for seed in [0, 5, 99] {
        let cfg = SampleConfig {
            max_new_tokens: 10,
            temperature: 0.8,
            top_k: 1,
            top_p: 0.95,
            seed,
            stop_at_eos: false,
        };
        assert_eq!(generate(&gpu, &mut g, &m, &prompt, &cfg), want, "seed {seed}");
    }
}

#[test]
fn stops_at_eos() {
    let gpu = gpu();
    let mut w = model(false);
    let prompt = [2u32, 13, 29];
    let free = reference_greedy(&w, None, &prompt, 10, 1e-3);
    // eos := the first greedy token (from the third on) that did not come earlier
    let i = (2..free.len())
        .find(|&i| !free[..i].contains(&free[i]))
        .expect("a fresh token in the greedy run");
    let bos = w.config.bos_token_id;
    w.config.set_eos(free[i], bos);
    let m = ModelGpu::new(&gpu, &w, None, Trainable::None).unwrap();
    let mut g = Generator::new(&gpu, &m, NPOS).unwrap();
    let stop = SampleConfig {
        stop_at_eos: true,
        ..greedy(10)
    };
    assert_eq!(
        generate(&gpu, &mut g, &m, &prompt, &stop),
        free[..=i].to_vec(),
        "stops after eos, eos included"
    );
    assert_eq!(
        generate(&gpu, &mut g, &m, &prompt, &greedy(10)),
        free,
        "stop_at_eos false runs on"
    );
}

#[test]
fn max_len_clips_and_bad_inputs_fail() {
    let gpu = gpu();
    let w = model(false);
    let m = ModelGpu::new(&gpu, &w, None, Trainable::None).unwrap();
    let mut g = Generator::new(&gpu, &m, 8).unwrap();
    assert_eq!(g.max_len(), 8);
    let prompt = [3u32, 17, 5];
    let full = reference_greedy(&w, None, &prompt, 5, 1e-3);
    assert_eq!(
        generate(&gpu, &mut g, &m, &prompt, &greedy(100)),
        full,
        "3 + 5 = max_len 8"
    );
    assert_eq!(generate(&gpu, &mut g, &m, &prompt, &greedy(2)), full[..2].to_vec());
    assert_eq!(
        generate(&gpu, &mut g, &m, &[1; 8], &greedy(4)),
        Vec::<u32>::new(),
        "a full prompt leaves no room"
    );
    assert_eq!(generate(&gpu, &mut g, &m, &prompt, &greedy(0)), Vec::<u32>::new());

    let err = |r: Result<Vec<u32>, webtune::gpu::GpuError>| r.unwrap_err().to_string();
    let e = err(pollster::block_on(g.generate(&gpu, &m, &[1; 9], &greedy(1))));
    assert!(e.contains('9') && e.contains('8'), "{e}");
    let e = err(pollster::block_on(g.generate(&gpu, &m, &[], &greedy(1))));
    assert!(e.contains("empty"), "{e}");
    let e = err(pollster::block_on(g.generate(&gpu, &m, &[1, 37], &greedy(1))));
    assert!(e.contains("37"), "{e}");
    let other = ModelGpu::new(&gpu, &w, None, Trainable::None).unwrap();
    let e = err(pollster::block_on(g.generate(&gpu, &other, &prompt, &greedy(1))));
    assert!(e.contains("not the one"), "{e}");

    let e = Generator::new(&gpu, &m, NPOS + 1).err().unwrap().to_string();
    assert!(e.contains("max_len 24") && e.contains("n_positions 23"), "{e}");
    assert!(Generator::new(&gpu, &m, 0).is_err());
    gpu.check().unwrap();
}

// ---------------------------------------------------------------------------------------
// sample(): pure CPU.

fn frequencies(logits: &[f32], cfg: &SampleConfig, draws: usize) -> Vec<f64> {
    let mut rng = Rng::new(cfg.seed);
    let mut counts = vec![0usize; logits.len()];
    for _ in 0..draws {
        counts[sample(logits, cfg, &mut rng) as usize] += 1;
    }
    counts.iter().map(|&n| n as f64 / draws as f64).collect()
}

fn assert_freq(what: &str, got: &[f64], want: &[f64]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if *w == 0.0 {
            assert_eq!(
                *g, 0.0,
                "{what}: token {i} is outside the support but was drawn ({got:?})"
            );
        } else {
            assert!(
                (g - w).abs() < 0.015,
                "{what}: token {i} frequency {g}, want {w} ({got:?})"
            );
        }
    }
}

fn cfg(temperature: f32, top_k: usize, top_p: f32) -> SampleConfig {
    SampleConfig {
        max_new_tokens: 1,
        temperature,
        top_k,
        top_p,
        seed: 42,
        stop_at_eos: false,
    }
}

#[test]
fn sample_support_and_frequencies() {
    // probabilities 0.1, 0.2, 0.3, 0.4 at temperature 1 (token order shuffled: 2, 0, 3, 1)
    let p = [0.3f32, 0.1, 0.4, 0.2];
    let logits: Vec<f32> = p.iter().map(|x| x.ln() + 1.5).collect();
    let n = 20000;
    assert_freq(
        "plain",
        &frequencies(&logits, &cfg(1.0, 0, 1.0), n),
        &[0.3, 0.1, 0.4, 0.2],
    );
    // top_k 2: {0.4, 0.3} renormalised
    assert_freq(
        "top_k 2",
        &frequencies(&logits, &cfg(1.0, 2, 1.0), n),
        &[3.0 / 7.0, 0.0, 4.0 / 7.0, 0.0],
    );
    // top_p 0.5: 0.4 < 0.5 <= 0.4 + 0.3
    assert_freq(
        "top_p 0.5",
        &frequencies(&logits, &cfg(1.0, 0, 0.5), n),
        &[3.0 / 7.0, 0.0, 4.0 / 7.0, 0.0],
    );
    // top_p 0.75: 0.7 < 0.75 <= 0.9
    assert_freq(
        "top_p 0.75",
        &frequencies(&logits, &cfg(1.0, 0, 0.75), n),
        &[3.0 / 9.0, 0.0, 4.0 / 9.0, 2.0 / 9.0],
    );
    // top_k then top_p on the renormalised top_k set: 4/7 = 0.571 >= 0.55 keeps one token
    // (top_p alone on the full distribution would keep two)
    assert_freq(
        "top_k 2, top_p 0.55",
        &frequencies(&logits, &cfg(1.0, 2, 0.55), n),
        &[0.0, 0.0, 1.0, 0.0],
    );
    assert_freq(
        "top_p 0.55",
        &frequencies(&logits, &cfg(1.0, 0, 0.55), n),
        &[3.0 / 7.0, 0.0, 4.0 / 7.0, 0.0],
    );
    // temperature 0.5 squares the probabilities: 9, 1, 16, 4 over 30
    assert_freq(
        "temperature 0.5",
        &frequencies(&logits, &cfg(0.5, 0, 1.0), n),
        &[0.3, 1.0 / 30.0, 16.0 / 30.0, 4.0 / 30.0],
    );
    // temperature 2 takes square roots
    let s: f64 = p.iter().map(|x| (*x as f64).sqrt()).sum();
    let want: Vec<f64> = p.iter().map(|x| (*x as f64).sqrt() / s).collect();
    assert_freq("temperature 2", &frequencies(&logits, &cfg(2.0, 0, 1.0), n), &want);
    // top_k beyond the vocabulary is no restriction; top_p 0 keeps the top token
    assert_freq(
        "top_k 10",
        &frequencies(&logits, &cfg(1.0, 10, 1.0), n),
        &[0.3, 0.1, 0.4, 0.2],
    );
    assert_freq(
        "top_p 0",
        &frequencies(&logits, &cfg(1.0, 0, 0.0), 100),
        &[0.0, 0.0, 1.0, 0.0],
    );
}

#[test]
fn sample_greedy_ties_and_edge_cases() {
    let mut rng = Rng::new(0);
    let greedy = cfg(0.0, 0, 1.0);
    assert_eq!(
        sample(&[0.5, 2.0, -1.0, 2.0], &greedy, &mut rng),
        1,
        "ties go to the lower id"
    );
    assert_eq!(
        sample(&[f32::NAN, 0.1, 0.3], &greedy, &mut rng),
        2,
        "NaN is never the max"
    );
    assert_eq!(sample(&[f32::NEG_INFINITY, -5.0], &greedy, &mut rng), 1);
    assert_eq!(sample(&[], &greedy, &mut rng), 0);
    // greedy draws nothing from the rng
    let before = rng.clone().next_u64();
    sample(&[1.0, 2.0], &greedy, &mut rng);
    assert_eq!(rng.clone().next_u64(), before);
    // top_k 1 is greedy, ties included, whatever the temperature
    for t in [0.1, 1.0, 10.0] {
        assert_eq!(sample(&[0.5, 2.0, -1.0, 2.0], &cfg(t, 1, 1.0), &mut rng), 1);
    }
    // -inf and NaN logits are never drawn
    let f = frequencies(&[f32::NEG_INFINITY, 0.0, f32::NAN, 0.0], &cfg(1.0, 0, 1.0), 4000);
    assert_eq!((f[0], f[2]), (0.0, 0.0));
    assert_eq!(sample(&[f32::NAN, f32::NAN], &cfg(1.0, 0, 1.0), &mut rng), 0);
    // same seed, same draws
    let logits = rand_vec(50, 3);
    let draw = |seed| {
        let mut r = Rng::new(seed);
        (0..20)
            .map(|_| sample(&logits, &SampleConfig::default(), &mut r))
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));
}

#[test]
fn default_config() {
    let d = SampleConfig::default();
    assert_eq!(
        (d.max_new_tokens, d.temperature, d.top_k, d.top_p, d.seed, d.stop_at_eos),
        (64, 0.8, 50, 0.95, 0, true)
    );
}
