//! `webtune bench` smoke tests: the tiniest configs run once, and the report's
//! arithmetic (tokens/s, FLOP counts, medians, parameter counts) is checked against
//! numbers worked out by hand. Timings themselves are never asserted.
mod common;
use common::*;
use webtune::bench::{self, GenerateBench, Layout, MatmulBench, Mode, TrainBench};
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
    assert_eq!(
        (p.n_layer, p.n_embd, p.n_head, p.vocab, p.batch, p.seq),
        (2, 128, 4, 512, 4, 64)
    );
    let p = bench::preset("gpt2").unwrap();
    assert_eq!(
        (p.n_layer, p.n_embd, p.n_head, p.vocab, p.n_positions),
        (12, 768, 12, 50257, 1024)
    );
    let e = bench::preset("huge").unwrap_err().to_string();
    assert!(
        e.contains("huge") && e.contains("tiny, small, gpt2, gpt2-medium"),
        "{e}"
    );
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
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_webtune"))
        .args(["bench", "--what", "train", "--embd", "10", "--heads", "4"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("embd a multiple of heads"));
}
