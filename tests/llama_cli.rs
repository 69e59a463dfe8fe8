//! `webtune train`, `eval` and `merge` on Llama-family checkpoints through the
//! binary, against the PyTorch + PEFT fixtures of tests/fixtures/llama: a LoRA run from the
//! fixture's adapter and a full fine-tuning run give the fixture's losses, gradient norms and
//! weights after three steps; the adapter is written under PEFT's names and `merge` folds it in.
mod common;
use std::path::{Path, PathBuf};

use common::{assert_adam_close, assert_close, expected_at, text, webtune, webtune_ok, Expected};
use webtune::model::{LoraAdapter, Weights};

fn case_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama").join(case)
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// `webtune train` on the case's three batches with the section's hyperparameters.
fn train(case: &str, section: &str, out: &Path, log: &Path) {
    let dir = case_dir(case);
    let ex = expected_at(&dir);
    let o = &ex.json[section]["optimizer"];
    let f = |v: &serde_json::Value| v.as_f64().unwrap().to_string();
    let mut args: Vec<String> = vec![
        "train".into(),
        "--model".into(),
        s(&dir.join("model")),
        "--data".into(),
        s(&dir.join("data.jsonl")),
        "--out".into(),
        s(out),
        "--log-json".into(),
        s(log),
        "--steps=3".into(),
        "--batch=2".into(),
        "--seq=16".into(),
        "--no-shuffle".into(),
        format!("--lr={}", f(&o["lr"])),
        format!("--weight-decay={}", f(&o["weight_decay"])),
        format!("--beta1={}", f(&o["betas"][0])),
        format!("--beta2={}", f(&o["betas"][1])),
        format!("--eps={}", f(&o["eps"])),
        format!("--grad-clip={}", f(&ex.json[section]["clip_grad_norm"])),
    ];
    if section.starts_with("full") {
        args.push("--full".into());
    } else {
        args.extend(["--init-adapter".into(), s(&dir.join("adapter_init"))]);
    }
    webtune_ok(&args);
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let num = |k: &str| lines.iter().map(|v| v[k].as_f64().unwrap() as f32).collect::<Vec<_>>();
    assert_close(&format!("{case} {section} losses"), &num("loss"), &ex.floats(&format!("{section}.losses")), 1e-4, 0.0);
    assert_close(&format!("{case} {section} norms"), &num("grad_norm"), &ex.floats(&format!("{section}.grad_norms")), 1e-4, 0.0);
}

fn check_adapter(ex: &Expected, out: &Path, cfg: &webtune::model::ModelConfig) {
    let st_bytes = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
    let mut names = st.names();
    names.sort();
    let mut want: Vec<String> = ex.tensors.keys().filter_map(|k| k.strip_prefix("lora.step3.").map(String::from)).collect();
    want.sort();
    assert_eq!(names, want.iter().map(String::as_str).collect::<Vec<_>>(), "PEFT's key names");
    let mut noisy = 0;
    for (name, view) in st.tensors() {
        let got: Vec<f32> = bytemuck::pod_collect_to_vec(view.data());
        noisy += assert_adam_close(&name, &got, ex.get(&format!("lora.step3.{name}")), ex.get(&format!("lora.grad.{name}")), 1e-4);
    }
    assert!(noisy <= 2, "{noisy} entries with gradients at noise level");
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["fan_in_fan_out"], false, "nn.Linear layers");
    let set = |v: &serde_json::Value| {
        let mut t: Vec<String> = v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
        t.sort();
        t
    };
    assert_eq!(set(&config["target_modules"]), set(&ex.json["lora"]["target_modules"]));
    LoraAdapter::load_peft(out, cfg).unwrap();
}

#[test]
fn lora_and_full_training_through_the_cli_match_pytorch() {
    for case in ["llama", "llama3", "qwen2", "qwen3"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = case_dir(case);
        let ex = expected_at(&dir);
        let cfg = Weights::load_dir(&dir.join("model")).unwrap().config;
        let out = tmp.path().join("lora");
        train(case, "lora", &out, &tmp.path().join("lora.jsonl"));
        check_adapter(&ex, &out, &cfg);

        let full = tmp.path().join("full");
        train(case, "full", &full, &tmp.path().join("full.jsonl"));
        let w = Weights::load_dir(&full).unwrap();
        let (mut noisy, mut entries) = (0, 0);
        for (name, t) in &w.tensors {
            entries += t.data.len();
            let hf = if name == "lm_head.weight" { name.clone() } else { format!("model.{name}") };
            let (want, g0) = (ex.get(&format!("full.step3.{hf}")), ex.get(&format!("full.grad.{hf}")));
            noisy += assert_adam_close(&format!("{case} full {hf}"), &t.data, want, g0, 1e-4);
        }
        assert!(noisy * 1000 <= entries, "{case}: {noisy} of {entries} entries with gradients at noise level");
        let config: serde_json::Value = serde_json::from_slice(&std::fs::read(full.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["model_type"], ex.json["model_type"], "the input's HF layout");
    }
}

#[test]
fn eval_and_merge_on_a_llama_family_model() {
    let dir = case_dir("qwen2");
    let ex = expected_at(&dir);
    let model = s(&dir.join("model"));
    let adapter = s(&dir.join("adapter_init"));
    // eval on exactly the fixture's batch 0 (its two windows, tokens 0..34 of the stream as one record)
    let w0 = Weights::load_dir(&dir.join("model")).unwrap();
    let recs = webtune::data::records::read_jsonl(&dir.join("data.jsonl"), w0.config.vocab_size).unwrap();
    let stream = webtune::data::TokenStream::new(&recs, w0.config.eos_token_id);
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("batch0.jsonl");
    let record = serde_json::json!({"input_ids": &stream.tokens[..34], "labels": &stream.labels[..34]});
    std::fs::write(&first, format!("{record}\n")).unwrap();
    let out = webtune_ok(&["eval", "--model", &model, "--adapter", &adapter, "--data", &s(&first), "--seq", "16", "--batch", "2", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let loss = |k: &str| v[k]["loss"].as_f64().unwrap() as f32;
    assert_close("eval base loss = transformers'", &[loss("base")], &[ex.json["base.loss"].as_f64().unwrap() as f32], 1e-5, 0.0);
    assert_close("eval adapter loss = PEFT's", &[loss("adapter")], &[ex.json["lora.loss0"].as_f64().unwrap() as f32], 1e-5, 0.0);
    // merge: base + adapter folded in gives the PEFT logits (merge_and_unload's model)
    let merged = tmp.path().join("merged");
    webtune_ok(&["merge", "--model", &model, "--adapter", &adapter, "--out", &s(&merged)]);
    let w = Weights::load_dir(&merged).unwrap();
    assert_eq!(w.config.model_type, "qwen2");
    let gpu = common::gpu();
    let m = webtune::model::ModelGpu::new(&gpu, &w, None, webtune::model::Trainable::None).unwrap();
    let ids: Vec<u32> = ex.json["batches"][0]["input_ids"].as_array().unwrap().iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32)).collect();
    let got = pollster::block_on(m.logits(&gpu, &ids, 2, 16)).unwrap();
    let want = ex.get("lora.logits");
    let atol = 1e-4 * want.iter().fold(0.0f32, |a, b| a.max(b.abs()));
    assert_close("merged logits = PEFT's", &got, want, 1e-4, atol);
    // a refused model type names itself
    let bad = tmp.path().join("mistral");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("config.json"), r#"{"model_type": "mistral", "hidden_size": 8}"#).unwrap();
    let r = webtune(&["eval", "--model", &s(&bad), "--data", &s(&dir.join("data.jsonl"))]);
    assert_eq!(r.status.code(), Some(1));
    let e = text(&r.stderr);
    assert!(e.contains("model_type 'mistral' is not supported; webtune trains gpt2, llama, qwen2, qwen3 models"), "{e}");
}
