//! `webtune bench` smoke tests: the tiniest configs run once, and the report's
//! arithmetic (tokens/s, FLOP counts, medians, parameter counts) is checked against
//! numbers worked out by hand. Timings themselves are never asserted.
mod common;
use common::*;
use webtune::bench::{self, GenerateBench, Layout, MatmulBench, Mode, ShapeOverrides, TrainBench};
use webtune::kernels::matmul::{all_tiles, tile_for, Matmul};
use webtune::model::{Family, LoraConfig, ModelConfig, Weights};

fn close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1e-300),
        "{what}: got {got}, want {want}"
    );
}

fn lora(r: usize, targets: &[&str]) -> LoraConfig {
    LoraConfig::new(r, 2.0 * r as f32, targets.iter().map(|s| s.to_string()).collect(), 0.0, Family::Gpt2).unwrap()
}

/// 1 layer, C = 8, 2 heads, V = 16, n_positions 8.
fn micro() -> ModelConfig {
    ModelConfig::gpt2(1, 2, 8, 16, 8)
}

#[test]
fn train_flops_match_the_closed_forms() {
    let (b, t) = (1, 5); // N = 5
                         // full: 72·L·N·C² + 12·L·B·T²·C + 6·N·C·V = 23040 + 2400 + 3840
    assert_eq!(bench::train_flops(&micro(), b, t, None), 29_280);
    // LoRA r 2 on every linear: 48·L·N·C² + 12·L·B·T²·C + 4·N·C·V + 96·L·N·r·C
    // = 15360 + 2400 + 2560 + 7680
    assert_eq!(
        bench::train_flops(&micro(), b, t, Some(&lora(2, &["c_attn", "c_proj", "c_fc"]))),
        28_000
    );
    // LoRA r 2 on c_attn only: 15360 + 2400 + 2560 + 6·N·r·(C + 3C) = ... + 1920
    assert_eq!(bench::train_flops(&micro(), b, t, Some(&lora(2, &["c_attn"]))), 22_240);
    // GPT-2 124M, full, B·T = 1 x 1: 72·12·768² + 12·12·768 + 6·768·50257
    let gpt2 = ModelConfig::gpt2(12, 12, 768, 50257, 1024);
    assert_eq!(
        bench::train_flops(&gpt2, 1, 1, None),
        509_607_936 + 110_592 + 231_584_256
    );
    assert_eq!(bench::matmul_flops(33, 17, 9), 10_098);
}

#[test]
fn shapes_presets_and_statistics() {
    assert_eq!(bench::parse_shape("512").unwrap(), (512, 512, 512));
    assert_eq!(bench::parse_shape("33x17x9").unwrap(), (33, 17, 9));
    for bad in ["", "0", "12x3", "axbxc", "1x2x0", "-4"] {
        let e = bench::parse_shape(bad).unwrap_err().to_string();
        assert!(e.contains("MxNxK"), "{bad}: {e}");
    }
    let p = bench::preset("small").unwrap();
    let c = &p.config;
    assert_eq!(
        (c.n_layer, c.n_embd, c.n_head, c.vocab_size, p.batch, p.seq),
        (2, 128, 4, 512, 4, 64)
    );
    let c = bench::preset("gpt2").unwrap().config;
    assert_eq!(
        (c.n_layer, c.n_embd, c.n_head, c.vocab_size, c.n_positions),
        (12, 768, 12, 50257, 1024)
    );
    let e = bench::preset("huge").unwrap_err().to_string();
    assert!(
        e.contains("huge") && e.contains("tiny, small, gpt2, gpt2-medium, smollm2-135m, qwen2.5-0.5b"),
        "{e}"
    );
    let names: Vec<&str> = bench::presets().iter().map(|p| p.name).collect();
    assert_eq!(names, bench::PRESET_NAMES);
    assert_eq!(bench::median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(bench::median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    assert_eq!(bench::mean(&[1.0, 2.0, 6.0]), 3.0);
}

#[test]
fn step_timing_arithmetic_by_hand() {
    // steps of 0.5, 0.25 and 1 s, 3 more queued in 1.5 s; 5 tokens and 28 000 FLOPs per step
    let t = bench::StepTiming::of(&[0.5, 0.25, 1.0], 1.5, 5, 28_000);
    close("seconds", t.seconds, 1.75);
    close("median ms", t.median_ms, 500.0);
    close("mean ms", t.mean_ms, 583.333_333_333_333_3);
    close("tokens/s", t.tokens_per_s, 8.571_428_571_428_571); // 15 / 1.75
    close("pipelined tokens/s", t.pipelined_tokens_per_s, 10.0); // 15 / 1.5
    close("GFLOP/s", t.gflops, 5.6e-5); // 28 000 / 0.5 s
}

#[test]
fn matmul_bench_reports_consistent_numbers() {
    let gpu = gpu();
    let cfg = MatmulBench {
        shapes: vec![bench::parse_shape("33x17x9").unwrap()],
        layouts: Layout::ALL.to_vec(),
        iters: 3,
        warmup: 1,
        reps: Some(2),
    };
    let mut seen = 0;
    let results = bench::bench_matmul(&gpu, &cfg, &mut |_| seen += 1).unwrap();
    assert_eq!((results.len(), seen), (3, 3));
    for (r, layout) in results.iter().zip(Layout::ALL) {
        assert_eq!(
            (r.layout, r.m, r.n, r.k, r.reps, r.samples_s.len()),
            (layout, 33, 17, 9, 2, 3)
        );
        assert_eq!(r.flops, 10_098);
        let spec = match layout {
            Layout::NN => Matmul::new(33, 17, 9),
            Layout::NT => Matmul::new(33, 17, 9).tb(),
            Layout::TN => Matmul::new(33, 17, 9).ta(),
        };
        assert_eq!(r.tile, tile_for(&gpu, &spec).name());
        assert!(all_tiles().iter().any(|t| t.name() == r.tile), "{}", r.tile);
        let (lo, hi) = r
            .samples_s
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &s| (lo.min(s), hi.max(s)));
        assert!(lo > 0.0 && lo <= r.median_s && r.median_s <= hi, "{r:?}");
        assert_eq!(r.median_s, bench::median(&r.samples_s));
    }
}

#[test]
fn train_bench_reports_consistent_numbers() {
    let gpu = gpu();
    for (mode, flops, total, trained) in [
        (Mode::Lora, 28_000u64, 1336u64, 256u64),
        (Mode::Full, 29_280, 1080, 1080),
    ] {
        let mut tb = TrainBench::new("micro", micro(), 1, 5, mode).unwrap();
        tb.lora = lora(2, &["c_attn", "c_proj", "c_fc"]);
        (tb.warmup, tb.steps) = (1, 3);
        let r = bench::bench_train(&gpu, &tb).unwrap();
        assert_eq!(
            (r.batch, r.seq, r.steps, r.warmup, r.mode, r.step_s.len()),
            (1, 5, 3, 1, mode, 3)
        );
        assert_eq!(r.lora_rank, (mode == Mode::Lora).then_some(2));
        // wte 128 + wpe 64 + ln 3·16 + c_attn 216 + attn.c_proj 72 + c_fc 288 + mlp.c_proj 264 = 1080;
        // LoRA r 2 adds r·(in + out) per linear: 64 + 32 + 80 + 80 = 256.
        assert_eq!((r.params_total, r.params_trained), (total, trained));
        assert_eq!(r.flops_per_step, flops);
        assert!(r.step_s.iter().all(|&x| x > 0.0) && r.pipelined_seconds > 0.0, "{r:?}");
        // the report's numbers are StepTiming's (checked by hand above) of its own timings, B·T = 5
        let t = bench::StepTiming::of(&r.step_s, r.pipelined_seconds, 5, flops);
        assert_eq!(
            (r.median_ms, r.mean_ms, r.seconds, r.tokens_per_s, r.pipelined_tokens_per_s, r.gflops),
            (t.median_ms, t.mean_ms, t.seconds, t.tokens_per_s, t.pipelined_tokens_per_s, t.gflops)
        );
        // Every parameter's value, plus gradient and AdamW m, v of the trained ones, at least.
        assert!(r.tensor_bytes >= 4 * (total + 3 * trained), "{} bytes", r.tensor_bytes);
        // the memory plan, made before anything was allocated, is what was allocated
        assert_eq!(r.plan["total_bytes"].as_u64(), Some(r.tensor_bytes));
        assert_eq!(r.plan, tb.plan().unwrap().to_json());
        // A random init predicts about uniformly: the loss stays near ln V after a few tiny steps.
        assert!((r.final_loss - 16f32.ln()).abs() < 0.5, "loss {}", r.final_loss);
    }
    let e = bench::bench_train(&gpu, &TrainBench::new("micro", micro(), 1, 9, Mode::Lora).unwrap()).unwrap_err();
    assert!(e.to_string().contains("--seq 9 is longer than n_positions 8"), "{e}");
}

#[test]
fn generate_bench_reports_consistent_numbers() {
    let gpu = gpu();
    let gb = GenerateBench { name: "micro".into(), weights: Weights::random(&micro(), 3), prompt: 3, new_tokens: 4, iters: 2 };
    let r = bench::bench_generate(&gpu, &gb).unwrap();
    assert_eq!((r.name.as_str(), r.n_layer, r.n_embd, r.n_head, r.vocab), ("micro", 1, 8, 2, 16));
    assert_eq!((r.prompt_tokens, r.new_tokens), (3, 4));
    assert!(r.prefill_s > 0.0 && r.decode_s_per_token > 0.0, "{r:?}");
    close("prefill tokens/s", r.prefill_tokens_per_s, 3.0 / r.prefill_s);
    close("decode tokens/s", r.decode_tokens_per_s, 1.0 / r.decode_s_per_token);
    // prompt + new tokens + 1 must fit n_positions (8).
    let too_long = GenerateBench { new_tokens: 5, ..gb };
    let e = bench::bench_generate(&gpu, &too_long).unwrap_err().to_string();
    assert!(e.contains("--prompt 3 + --new-tokens 5 + 1 is more than the model's n_positions 8"), "{e}");
}

#[test]
fn cli_writes_a_json_report() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_webtune"))
        .args([
            "bench", "--sizes", "9x7x5", "--iters", "1", "--reps", "1", "--layers", "1", "--embd", "8",
        ])
        .args([
            "--heads",
            "2",
            "--vocab",
            "16",
            "--positions",
            "8",
            "--batch",
            "1",
            "--seq",
            "5",
        ])
        .args(["--steps", "2", "--warmup", "0", "--mode", "lora,full", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| NT | 9x7x5 | 1 |") && stdout.contains("LoRA r8") && stdout.contains("| full |")
            && stdout.contains("| generate |"),
        "{stdout}"
    );
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(!v["machine"]["adapter"].as_str().unwrap().is_empty());
    assert_eq!(v["matmul"].as_array().unwrap().len(), 3);
    assert_eq!(v["matmul"][0]["flops"], 630);
    assert!(!v["matmul"][0]["tile"].as_str().unwrap().is_empty());
    // Generation on the same model: n_positions 8 leaves a 3-token prompt and 4 new tokens.
    let g = &v["generate"][0];
    assert_eq!((g["prompt_tokens"].as_u64(), g["new_tokens"].as_u64()), (Some(3), Some(4)));
    let train = v["train"].as_array().unwrap();
    assert_eq!(train.len(), 2);
    assert_eq!(
        (train[0]["mode"].as_str(), train[1]["mode"].as_str()),
        (Some("lora"), Some("full"))
    );
    assert_eq!(train[0]["name"], "tiny (custom)");
    // LoRA r 8 on every linear: 15360 + 2400 + 2560 + 96·5·8·8 = 51 040; full: 29 280.
    assert_eq!(
        (train[0]["flops_per_step"].as_u64(), train[1]["flops_per_step"].as_u64()),
        (Some(51_040), Some(29_280))
    );
    for (t, flops) in train.iter().zip([51_040u64, 29_280]) {
        let f = |k: &str| t[k].as_f64().unwrap();
        let steps: Vec<f64> = t["step_s"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(steps.len(), 2);
        let want = bench::StepTiming::of(&steps, f("pipelined_seconds"), 5, flops);
        close("json tokens/s", f("tokens_per_s"), want.tokens_per_s);
        close("json GFLOP/s", f("gflops"), want.gflops);
        assert_eq!(t["plan"]["total_bytes"], t["tensor_bytes"]);
    }
    // --dry-run: the same plans, no GPU work, nothing measured
    let dry = dir.path().join("dry.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_webtune"))
        .args(["bench", "--what", "train", "--layers", "1", "--embd", "8", "--heads", "2", "--vocab", "16"])
        .args(["--positions", "8", "--batch", "1", "--seq", "5", "--steps", "2", "--warmup", "0"])
        .args(["--mode", "lora,full", "--dry-run", "--json"])
        .arg(&dry)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("memory plan (batch 1 x seq 5)") && stdout.contains("LoRA r8") && stdout.contains("full"), "{stdout}");
    let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&dry).unwrap()).unwrap();
    for (planned, ran) in d["train"].as_array().unwrap().iter().zip(train) {
        assert_eq!(planned["plan"], ran["plan"]);
        assert_eq!(planned["plan"]["total_bytes"], ran["tensor_bytes"]);
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_webtune"))
        .args(["bench", "--what", "train", "--embd", "10", "--heads", "4"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("embd a multiple of heads"));
}

/// Values in every tensor the config lists (no tensor is made).
fn params_of(c: &ModelConfig) -> u64 {
    c.param_shapes().iter().map(|(_, s)| s.iter().product::<usize>() as u64).sum()
}

#[test]
fn llama_presets_are_the_published_checkpoints_shapes() {
    // SmolLM2-135M: head_dim 576 / 9 = 64, k/v width 3·64 = 192. Per layer:
    //   q, o 576·576 = 331 776 each; k, v 576·192 = 110 592 each; gate, up, down 576·1536 = 884 736 each;
    //   two RMSNorms 2·576 = 1152: 663 552 + 221 184 + 2 654 208 + 1152 = 3 540 096.
    //   30 layers 106 202 880 + embed_tokens 49152·576 = 28 311 552 + final norm 576 (head tied)
    //   = 134 515 008 (the model card's 135M; transformers' num_parameters() gives this number).
    let p = bench::preset("smollm2-135m").unwrap();
    let c = &p.config;
    assert_eq!((c.model_type.as_str(), c.family), ("llama", Family::Llama));
    assert_eq!((c.n_layer, c.n_embd, c.n_head, c.n_kv_head, c.head_dim), (30, 576, 9, 3, 64));
    assert_eq!((c.intermediate, c.vocab_size, c.n_positions), (1536, 49152, 8192));
    assert_eq!((c.layer_norm_epsilon, c.rope.as_ref().unwrap().theta), (1e-5, 1e5));
    assert!(c.tie_word_embeddings && !c.qkv_bias && !c.o_bias && !c.mlp_bias && !c.qk_norm);
    assert_eq!(params_of(c), 134_515_008);
    assert_eq!(webtune::model::weights::param_count(c), Some(134_515_008));
    assert_eq!((p.batch, p.seq), (4, 256));

    // Qwen2.5-0.5B: head_dim 896 / 14 = 64, k/v width 2·64 = 128. Per layer:
    //   q, o 896·896 = 802 816 each; k, v 896·128 = 114 688 each; biases on q, k, v 896 + 128 + 128 = 1152;
    //   gate, up, down 896·4864 = 4 358 144 each; two RMSNorms 1792:
    //   1 605 632 + 229 376 + 1152 + 13 074 432 + 1792 = 14 912 384.
    //   24 layers 357 897 216 + embed_tokens 151936·896 = 136 134 656 + final norm 896 (head tied)
    //   = 494 032 768 (the model card's "0.49B").
    let p = bench::preset("qwen2.5-0.5b").unwrap();
    let c = &p.config;
    assert_eq!((c.model_type.as_str(), c.family), ("qwen2", Family::Llama));
    assert_eq!((c.n_layer, c.n_embd, c.n_head, c.n_kv_head, c.head_dim), (24, 896, 14, 2, 64));
    assert_eq!((c.intermediate, c.vocab_size, c.n_positions), (4864, 151936, 32768));
    assert_eq!((c.layer_norm_epsilon, c.rope.as_ref().unwrap().theta), (1e-6, 1e6));
    assert!(c.tie_word_embeddings && c.qkv_bias && !c.o_bias && !c.mlp_bias && !c.qk_norm);
    assert_eq!(c.eos_token_id, 151_643);
    assert_eq!(params_of(c), 494_032_768);
    assert_eq!((p.batch, p.seq), (2, 256));
    // LoRA's default targets for the family: every linear
    let tb = TrainBench::new(p.name, c.clone(), p.batch, p.seq, Mode::Lora).unwrap();
    assert_eq!(tb.lora.targets, ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]);

    // Overrides: layers, vocab, positions go through config.json; an id past the new vocabulary becomes its last.
    let o = ShapeOverrides { layers: Some(1), vocab: Some(61), positions: Some(17), ..ShapeOverrides::default() };
    let small = p.config_with(&o).unwrap();
    assert_eq!((small.n_layer, small.vocab_size, small.n_positions), (1, 61, 17));
    assert_eq!((small.eos_token_id, small.bos_token_id), (60, 60));
    assert!(small.qkv_bias && small.n_kv_head == 2 && small.intermediate == 4864);
    // one layer 14 912 384 + 61·896 + 896
    assert_eq!(params_of(&small), 14_912_384 + 54_656 + 896);
    for (o, flag) in [
        (ShapeOverrides { embd: Some(64), ..ShapeOverrides::default() }, "--embd"),
        (ShapeOverrides { heads: Some(4), ..ShapeOverrides::default() }, "--heads"),
    ] {
        let e = p.config_with(&o).unwrap_err().to_string();
        assert!(e.contains(flag) && e.contains("GPT-2 presets only") && e.contains("qwen2.5-0.5b"), "{e}");
    }
    let e = p.config_with(&ShapeOverrides { vocab: Some(1), ..ShapeOverrides::default() }).unwrap_err().to_string();
    assert!(e.contains("--vocab 1"), "{e}");
    // GPT-2 presets still take all five
    let g = bench::preset("tiny").unwrap();
    let o = ShapeOverrides { layers: Some(3), embd: Some(24), heads: Some(3), vocab: Some(50), positions: Some(9) };
    let c = g.config_with(&o).unwrap();
    assert_eq!((c.n_layer, c.n_embd, c.n_head, c.vocab_size, c.n_positions), (3, 24, 3, 50, 9));
}

#[test]
fn cli_dry_run_plans_a_llama_preset_without_a_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("plan.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_webtune"))
        .args(["bench", "--what", "train", "--preset", "smollm2-135m", "--mode", "lora,full", "--dry-run", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("bench on"), "a GPU was opened: {stderr}");
    assert!(stdout.contains("smollm2-135m (llama, 30 layers, 576 wide, 9 heads, 3 kv heads, vocab 49152, 134515008 parameters)"),
        "{stdout}");
    assert!(stdout.contains("memory plan (batch 4 x seq 256)"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["dry_run"], true);
    let p = bench::preset("smollm2-135m").unwrap();
    let plans = v["train"].as_array().unwrap();
    assert_eq!(plans.len(), 2);
    for (t, mode) in plans.iter().zip([Mode::Lora, Mode::Full]) {
        assert_eq!((t["model_type"].as_str(), t["n_layer"].as_u64(), t["n_kv_head"].as_u64()), (Some("llama"), Some(30), Some(3)));
        assert_eq!((t["batch"].as_u64(), t["seq"].as_u64(), t["params_total"].as_u64()), (Some(4), Some(256), Some(134_515_008)));
        let want = TrainBench::new(p.name, p.config.clone(), 4, 256, mode).unwrap().plan().unwrap().to_json();
        assert_eq!(t["plan"], want);
    }
    // full fine-tuning keeps weights, gradients and AdamW m, v of every parameter at least: 16 bytes each
    assert!(plans[1]["plan"]["total_bytes"].as_u64().unwrap() >= 16 * 134_515_008);
}

#[test]
fn cli_runs_a_tiny_qwen2_bench() {
    // qwen2.5-0.5b cut to 1 layer, vocab 64, 16 positions (its width, heads, MLP and q/k/v biases kept);
    // B·T = 1 x 7, an odd sequence.
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_webtune"))
        .args(["bench", "--sizes", "9x7x5", "--iters", "1", "--reps", "1", "--preset", "qwen2.5-0.5b"])
        .args(["--layers", "1", "--vocab", "64", "--positions", "16", "--batch", "1", "--seq", "7"])
        .args(["--steps", "1", "--warmup", "0", "--mode", "lora,full", "--prompt", "3", "--new-tokens", "4", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let train = v["train"].as_array().unwrap();
    assert_eq!(train.len(), 2);
    // base: 14 912 384 (one layer, see above) + embed 64·896 = 57 344 + norm 896 = 14 970 624.
    // LoRA r 8 adds 8·(in + out) per linear: q, o 8·1792 = 14 336 each; k, v 8·1024 = 8192 each;
    // gate, up, down 8·5760 = 46 080 each: 183 296.
    let base = 14_970_624u64;
    let want = [(Some("lora"), base + 183_296, 183_296), (Some("full"), base, base)];
    for (t, (mode, total, trained)) in train.iter().zip(want) {
        assert_eq!((t["name"].as_str(), t["model_type"].as_str(), t["mode"].as_str()), (Some("qwen2.5-0.5b (custom)"), Some("qwen2"), mode));
        assert_eq!((t["params_total"].as_u64(), t["params_trained"].as_u64()), (Some(total), Some(trained)));
        assert_eq!(t["plan"]["total_bytes"], t["tensor_bytes"]);
        let loss = t["final_loss"].as_f64().unwrap();
        assert!((loss - 64f64.ln()).abs() < 0.5, "loss {loss}");
    }
    // Full fine-tuning's matmul FLOPs, N = 7: linears 3·2·N·(2·802 816 + 2·114 688 + 3·4 358 144) = 42·14 909 440
    // = 626 196 480; attention 12·B·T²·(14·64) = 526 848; head 6·N·C·V = 6·7·896·64 = 2 408 448.
    assert_eq!(train[1]["flops_per_step"].as_u64(), Some(626_196_480 + 526_848 + 2_408_448));
    let g = &v["generate"][0];
    assert_eq!((g["name"].as_str(), g["n_layer"].as_u64(), g["vocab"].as_u64()), (Some("qwen2.5-0.5b (custom)"), Some(1), Some(64)));
    assert_eq!((g["prompt_tokens"].as_u64(), g["new_tokens"].as_u64()), (Some(3), Some(4)));
    // --embd does not apply to a Llama-family preset: refused, naming the flag
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_webtune"))
        .args(["bench", "--what", "train", "--preset", "smollm2-135m", "--embd", "64", "--dry-run"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let e = String::from_utf8_lossy(&bad.stderr);
    assert!(e.contains("--embd and --heads apply to the GPT-2 presets only") && e.contains("hidden_size 576"), "{e}");
}
