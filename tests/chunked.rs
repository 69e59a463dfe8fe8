//! Tensors larger than one storage binding, split into row chunks: a tiny GPT-2 (tied head) and a
//! tiny Qwen2-style model (untied head) whose vocabulary tables are the only tensors over a forced
//! binding limit (`Gpu::limit_binding`, 7000 bytes: 301 rows of 16 floats become chunks of 109,
//! 109 and 83 rows; the head's logits blocks 5 rows of 301). Every result is checked against the
//! same model on a GPU without the limit (one buffer per tensor): logits and the loss are the same
//! bits (the vocabulary splits only the columns of the head's product), gradients, three AdamW
//! steps (LoRA and full), the files' shapes and greedy generation agree to f32 rounding (the head's
//! d lnf sums the vocabulary in chunk order). Also: a limit below one row is refused by name.
mod common;

use common::*;
use webtune::data::records::Record;
use webtune::data::{Batcher, TokenStream};
use webtune::generate::{Generator, SampleConfig};
use webtune::gpu::Gpu;
use webtune::model::linear::{join_parts, RowParam};
use webtune::model::{HostTensor, ModelConfig, ModelGpu, Trainable, Weights};
use webtune::rng::Rng;
use webtune::train::{AdamWConfig, StepLog, TrainConfig, Trainer};

const LIMIT: u64 = 7000;
const VOCAB: usize = 301;
const C: usize = 16;
const B: usize = 2;
const T: usize = 13;

fn gpt2() -> Weights {
    Weights::random(&ModelConfig::gpt2(2, 2, C, VOCAB, 32), 7)
}

fn qwen2() -> Weights {
    let cfg = serde_json::json!({
        "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
        "vocab_size": VOCAB, "hidden_size": C, "intermediate_size": 40, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 32,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": false,
        "bos_token_id": VOCAB - 1, "eos_token_id": VOCAB - 1,
    });
    let cfg = ModelConfig::from_json(&cfg.to_string(), "test config").unwrap();
    Weights::random(&cfg, 8)
}

fn limited() -> Gpu {
    let g = gpu();
    g.limit_binding(LIMIT).unwrap();
    g
}

fn batcher(cfg: &ModelConfig) -> Batcher {
    let mut rng = Rng::new(3);
    let recs: Vec<Record> = (0..6)
        .map(|_| Record { input_ids: (0..20).map(|_| (rng.uniform_in(0.0, 1.0) * VOCAB as f32) as u32 % VOCAB as u32).collect(), labels: None })
        .collect();
    Batcher::new(TokenStream::new(&recs, cfg.eos_token_id), B, T, false, 0).unwrap()
}

/// |got - want| <= 1e-5 · max |want| (+ 1e-6 · |want|) elementwise.
fn close(what: &str, got: &[f32], want: &[f32]) {
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: all zero, the comparison would be empty");
    assert_close(what, got, want, 1e-6, 1e-5 * scale);
}

fn read(gpu: &Gpu, t: &webtune::gpu::Tensor) -> Vec<f32> {
    gpu.read_blocking(t).unwrap()
}

/// Every trained tensor's gradient (chunks joined), by name, after one gradient program.
fn gradients(gpu: &Gpu, m: &ModelGpu, tokens: &[u32], targets: &[i32]) -> (f32, Vec<(String, HostTensor)>) {
    let acts = m.activations(gpu, B, T, true, 64 << 20).unwrap();
    acts.io().write_batch(gpu, tokens, targets);
    m.gradient_program(gpu, &acts).run(gpu);
    let list = m
        .trained()
        .iter()
        .map(|p| (p.name.clone(), HostTensor::new(&p.value.shape, read(gpu, p.grad.as_ref().unwrap()))))
        .collect();
    (read(gpu, &acts.io().loss)[0], join_parts(list))
}

fn train3(gpu: &Gpu, w: &Weights, mode: Trainable) -> (Trainer, Vec<StepLog>) {
    let adapter = random_adapter(&w.config, 4, 11, 0.5);
    let model = ModelGpu::new(gpu, w, (mode == Trainable::Lora).then_some(&adapter), mode).unwrap();
    let adamw = AdamWConfig { lr: 1e-2, weight_decay: 0.1, grad_clip: 1.0, ..AdamWConfig::default() };
    let mut cfg = TrainConfig::new(B, T, adamw);
    cfg.readback_every = 2;
    let mut trainer = Trainer::new(gpu, model, batcher(&w.config), cfg).unwrap();
    let mut logs = Vec::new();
    for _ in 0..3 {
        logs.extend(pollster::block_on(trainer.step(gpu, adamw.lr)).unwrap());
    }
    logs.extend(pollster::block_on(trainer.flush(gpu)).unwrap());
    (trainer, logs)
}

fn vocab_tables(w: &Weights) -> Vec<&'static str> {
    if w.config.tie_word_embeddings {
        vec![w.config.embedding_name()]
    } else {
        vec![w.config.embedding_name(), "lm_head.weight"]
    }
}

fn check_chunks(w: &Weights) {
    let (gpu, big) = (limited(), gpu());
    let m = ModelGpu::new(&gpu, w, None, Trainable::Full).unwrap();
    let rows = |m: &ModelGpu| m.head().parts.iter().map(|p| p.value.shape[0]).collect::<Vec<_>>();
    assert_eq!(rows(&m), [109, 109, 83], "head chunks");
    let tables = vocab_tables(w);
    for p in m.params() {
        assert!(p.value.bytes() <= LIMIT && p.grad.as_ref().unwrap().bytes() <= LIMIT, "{} over the limit", p.name);
        let parts = m.params().iter().filter(|q| q.name == p.name).count();
        assert_eq!(parts, if tables.contains(&p.name.as_str()) { 3 } else { 1 }, "{}: parts", p.name);
    }
    let unlimited = ModelGpu::new(&big, w, None, Trainable::Full).unwrap();
    assert_eq!(rows(&unlimited), [VOCAB], "without a limit the head is one buffer");
    // the chunks join back into the file's tensors, unchanged
    let back = pollster::block_on(m.download_weights(&gpu)).unwrap();
    assert_eq!(back.tensors.len(), w.tensors.len());
    for (name, t) in &w.tensors {
        assert_eq!(back.tensors[name].shape, t.shape, "{name}");
        assert!(back.tensors[name].data == t.data, "{name}: values changed on the way through the GPU");
    }
}

fn check_forward(w: &Weights) {
    let (gpu, big) = (limited(), gpu());
    let (m, u) = (ModelGpu::new(&gpu, w, None, Trainable::None).unwrap(), ModelGpu::new(&big, w, None, Trainable::None).unwrap());
    // token 300 lies in the last chunk, 0 in the first, 150 in the second
    let tokens = [300u32, 0, 150, 108, 109];
    let got = pollster::block_on(m.logits(&gpu, &tokens, 1, 5)).unwrap();
    let want = pollster::block_on(u.logits(&big, &tokens, 1, 5)).unwrap();
    assert!(got == want, "logits differ with the head in chunks");
    let mut b = batcher(&w.config);
    let batch = b.next_batch();
    let loss = |gpu: &Gpu, m: &ModelGpu| {
        let a = m.activations(gpu, B, T, false, 64 << 20).unwrap();
        a.io().write_batch(gpu, &batch.tokens, &batch.targets);
        let mut prog = webtune::gpu::Program::new();
        m.forward(gpu, &mut prog, &a, true);
        prog.run(gpu);
        (read(gpu, &a.io().loss), read(gpu, &a.io().losses))
    };
    let (got, want) = (loss(&gpu, &m), loss(&big, &u));
    assert!(want.0[0] > 1.0 && got == want, "loss {:?} vs {:?}", got.0, want.0);
}

fn check_gradients(w: &Weights, mode: Trainable) {
    let (gpu, big) = (limited(), gpu());
    let adapter = random_adapter(&w.config, 4, 11, 0.5);
    let lora = (mode == Trainable::Lora).then_some(&adapter);
    let (m, u) = (ModelGpu::new(&gpu, w, lora, mode).unwrap(), ModelGpu::new(&big, w, lora, mode).unwrap());
    let batch = batcher(&w.config).next_batch();
    let (l1, g1) = gradients(&gpu, &m, &batch.tokens, &batch.targets);
    let (l2, g2) = gradients(&big, &u, &batch.tokens, &batch.targets);
    assert_eq!(l1, l2, "loss");
    assert_eq!(g1.len(), g2.len());
    for ((n1, a), (n2, b)) in g1.iter().zip(&g2) {
        assert_eq!((n1, &a.shape), (n2, &b.shape));
        close(&format!("grad {n1}"), &a.data, &b.data);
    }
}

fn check_training(w: &Weights, mode: Trainable) {
    let (gpu, big) = (limited(), gpu());
    let (t1, logs1) = train3(&gpu, w, mode);
    let (t2, logs2) = train3(&big, w, mode);
    assert_eq!(logs1.len(), 3);
    for (a, b) in logs1.iter().zip(&logs2) {
        close(&format!("step {} loss", a.step), &[a.loss], &[b.loss]);
        close(&format!("step {} grad norm", a.step), &[a.grad_norm], &[b.grad_norm]);
    }
    if mode == Trainable::Full {
        let w1 = pollster::block_on(t1.model.download_weights(&gpu)).unwrap();
        let w2 = pollster::block_on(t2.model.download_weights(&big)).unwrap();
        // the first step's gradient, to leave out entries whose gradient is rounding noise (the key
        // bias's, which softmax cancels): AdamW moves those by about lr, in a direction noise picks
        let u = ModelGpu::new(&big, w, None, Trainable::Full).unwrap();
        let batch = batcher(&w.config).next_batch();
        let g0: std::collections::BTreeMap<_, _> = gradients(&big, &u, &batch.tokens, &batch.targets).1.into_iter().collect();
        let mut noise = 0;
        for (name, b) in &w2.tensors {
            assert_eq!(w1.tensors[name].shape, b.shape, "{name}");
            let moved: f32 = b.data.iter().zip(&w.tensors[name].data).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            assert!(moved > 1e-3, "{name} did not move");
            noise += assert_adam_close(name, &w1.tensors[name].data, &b.data, &g0[name].data, 1e-5);
        }
        assert!(noise <= 2 * w.config.n_layer * C, "{noise} entries left out as noise");
    } else {
        let a1 = pollster::block_on(t1.model.download_adapter(&gpu)).unwrap().unwrap();
        let a2 = pollster::block_on(t2.model.download_adapter(&big)).unwrap().unwrap();
        for (x, y) in a1.modules.iter().zip(&a2.modules) {
            assert_close("lora A", &x.a.data, &y.a.data, 0.0, 1e-5);
            assert_close("lora B", &x.b.data, &y.b.data, 0.0, 1e-5);
        }
    }
    // AdamW's moments come back whole (the checkpoint's layout) and go back in split
    let m1 = pollster::block_on(t1.optimizer.read_moments(&gpu, &t1.model)).unwrap();
    let m2 = pollster::block_on(t2.optimizer.read_moments(&big, &t2.model)).unwrap();
    assert_eq!(m1.len(), m2.len());
    for ((n1, m, v), (n2, mm, vv)) in m1.iter().zip(&m2) {
        assert_eq!((n1, &m.shape, &v.shape), (n2, &mm.shape, &vv.shape));
        assert_close(&format!("adam v {n1}"), &v.data, &vv.data, 1e-3, 1e-9);
    }
    if mode == Trainable::Full {
        let saved: std::collections::BTreeMap<_, _> = m2.into_iter().map(|(n, m, v)| (n, (m, v))).collect();
        let model = ModelGpu::new(&gpu, w, None, Trainable::Full).unwrap();
        let mut t3 = Trainer::new(&gpu, model, batcher(&w.config), TrainConfig::new(B, T, AdamWConfig::default())).unwrap();
        t3.restore(&gpu, 3, 0, &saved, "test").unwrap();
        let back = pollster::block_on(t3.optimizer.read_moments(&gpu, &t3.model)).unwrap();
        assert_eq!(back.len(), saved.len());
        for (n, m, v) in back {
            assert!(m.data == saved[&n].0.data && v.data == saved[&n].1.data, "{n}: moments changed through restore");
        }
    }
}

fn check_generation(w: &Weights) {
    let (gpu, big) = (limited(), gpu());
    let adapter = random_adapter(&w.config, 4, 11, 0.5);
    let greedy = SampleConfig { max_new_tokens: 12, temperature: 0.0, stop_at_eos: false, ..SampleConfig::default() };
    let prompt = [5u32, 299, 120, 7];
    let run = |gpu: &Gpu| {
        let m = ModelGpu::new(gpu, w, Some(&adapter), Trainable::None).unwrap();
        let mut gen = Generator::new(gpu, &m, prompt.len() + 12).unwrap();
        pollster::block_on(gen.generate(gpu, &m, &prompt, &greedy)).unwrap()
    };
    let (got, want) = (run(&gpu), run(&big));
    assert_eq!(want.len(), 12);
    assert_eq!(got, want, "greedy tokens");
}

#[test]
fn gpt2_chunks_hold_whole_rows_and_join_back() {
    check_chunks(&gpt2());
}

#[test]
fn qwen2_untied_chunks_hold_whole_rows_and_join_back() {
    check_chunks(&qwen2());
}

#[test]
fn forward_logits_and_loss_are_the_same_bits() {
    check_forward(&gpt2());
    check_forward(&qwen2());
}

#[test]
fn gradients_match_one_buffer() {
    for w in [gpt2(), qwen2()] {
        check_gradients(&w, Trainable::Full);
        check_gradients(&w, Trainable::Lora);
    }
}

#[test]
fn three_adamw_steps_match_one_buffer_full() {
    check_training(&gpt2(), Trainable::Full);
    check_training(&qwen2(), Trainable::Full);
}

#[test]
fn three_adamw_steps_match_one_buffer_lora() {
    check_training(&gpt2(), Trainable::Lora);
    check_training(&qwen2(), Trainable::Lora);
}

#[test]
fn greedy_generation_matches_one_buffer() {
    check_generation(&gpt2());
    check_generation(&qwen2());
}

#[test]
fn a_limit_below_one_row_is_refused_by_name() {
    let gpu = gpu();
    gpu.limit_binding(60).unwrap();
    let w = gpt2();
    let err = RowParam::new(&gpu, &w, "wte.weight", false).err().expect("a 64-byte row cannot fit 60 bytes");
    let msg = err.to_string();
    assert!(msg.contains("wte.weight") && msg.contains("64") && msg.contains("60"), "{msg}");
    assert!(gpu.limit_binding(6).is_err() && gpu.limit_binding(0).is_err(), "limits must be positive multiples of 4");
}

/// `webtune train --full` through the binary with `WEBTUNE_MAX_BINDING=7000` (the vocabulary table
/// in 3 chunks) against the same run without a limit: the model and checkpoint files hold whole
/// tensors of the same shapes, the weights agree (but for entries AdamW moves by gradient noise,
/// bounded below), and resuming the limited run from its step-2 checkpoint (moments split back
/// into chunks) gives the same bytes as the limited run done in one go.
#[test]
fn full_fine_tuning_cli_with_a_forced_limit_writes_whole_tensors_and_resumes() {
    use webtune::train::checkpoint;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let w = gpt2();
    let model = t.join("model");
    w.save_dir(&model).unwrap();
    let mut rng = Rng::new(5);
    let lines: Vec<String> = (0..8)
        .map(|_| {
            let ids: Vec<u32> = (0..30).map(|_| (rng.uniform_in(0.0, 1.0) * VOCAB as f32) as u32 % VOCAB as u32).collect();
            serde_json::json!({ "input_ids": ids }).to_string()
        })
        .collect();
    let data = t.join("data.jsonl");
    std::fs::write(&data, lines.join("\n")).unwrap();
    let run = |out: &str, limit: Option<&str>, extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_webtune"));
        cmd.env_remove("WEBTUNE_MAX_BINDING");
        if let Some(l) = limit {
            cmd.env("WEBTUNE_MAX_BINDING", l);
        }
        let p = |x: &std::path::Path| x.to_str().unwrap().to_string();
        cmd.args(["train", "--model", &p(&model), "--data", &p(&data), "--out", &p(&t.join(out)), "--full"]);
        cmd.args(["--batch", "2", "--seq", "13", "--lr", "1e-3", "--seed", "3", "--steps", "4"]);
        cmd.args(extra);
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "train {out} failed:\n{}", text(&o.stderr));
    };
    // the knob reaches the binary: a limit below a layer's weight refuses the run before anything
    // is allocated, naming the largest such tensor (the memory plan's refusal)
    let mut small = std::process::Command::new(env!("CARGO_BIN_EXE_webtune"));
    small.env("WEBTUNE_MAX_BINDING", "1000");
    small.args(["train", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--out"]);
    let o = small.args([t.join("refused").to_str().unwrap(), "--full", "--steps", "1", "--seq", "13"]).output().unwrap();
    let err = text(&o.stderr);
    assert!(!o.status.success() && err.contains("'h.0.mlp.c_fc.weight'") && err.contains("at most 1000 bytes") && err.contains("the model itself is too large"), "{err}");
    run("chunked", Some("7000"), &[]);
    run("whole", None, &[]);
    run("split", Some("7000"), &["--stop-after", "2", "--save-every", "2"]);
    let ck = t.join("split").join("checkpoint-2");
    let moments = checkpoint::read_moments(&ck).unwrap();
    assert_eq!(moments["wte.weight"].0.shape, [VOCAB, C], "the checkpoint's AdamW m of wte is the whole tensor");
    assert_eq!(moments["wte.weight"].1.shape, [VOCAB, C]);
    let mut resume = std::process::Command::new(env!("CARGO_BIN_EXE_webtune"));
    resume.env("WEBTUNE_MAX_BINDING", "7000").args(["train", "--resume", ck.to_str().unwrap()]);
    let o = resume.output().unwrap();
    assert!(o.status.success(), "resume failed:\n{}", text(&o.stderr));
    let bytes = |d: &str| std::fs::read(t.join(d).join("model.safetensors")).unwrap();
    assert!(bytes("split") == bytes("chunked"), "resumed with chunks != uninterrupted with chunks");
    let (a, b) = (Weights::load_dir(&t.join("chunked")).unwrap(), Weights::load_dir(&t.join("whole")).unwrap());
    assert_eq!(a.tensors.len(), b.tensors.len());
    let mut noise = 0;
    for (name, want) in &b.tensors {
        let got = &a.tensors[name];
        assert_eq!(got.shape, want.shape, "{name}");
        noise += got.data.iter().zip(&want.data).filter(|(x, y)| (*x - *y).abs() > 1e-5).count();
    }
    // only the key biases (a gradient softmax cancels, so rounding noise) may move differently
    assert!(noise <= w.config.n_layer * C, "{noise} entries differ by more than 1e-5");
}
