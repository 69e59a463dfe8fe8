//! Chat and several adapters through the `webtune` binary with the tiny GPT-2 fixture:
//! `generate --chat` (the template's generation prompt, its end-of-turn token), `eval` and
//! `generate` with more than one `--adapter` (each equals a run with that adapter alone), and
//! continual fine-tuning (`train --init-adapter --eval-data`: the old task's loss before and after
//! equals `webtune eval` of the init adapter and of the output adapter).

mod common;
use std::path::{Path, PathBuf};

use common::{text, webtune, webtune_ok};

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-4 * b.abs().max(1e-3)
}

/// An eval file of token-id records other than the training data's.
fn eval_file(dir: &Path) -> PathBuf {
    let p = dir.join("old_task.jsonl");
    let recs: Vec<String> = (0..5).map(|r| format!("{{\"input_ids\": [{}]}}", (0..23).map(|i| ((i * 7 + r * 13) % 95).to_string()).collect::<Vec<_>>().join(", "))).collect();
    std::fs::write(&p, recs.join("\n")).unwrap();
    p
}

fn eval_json(adapters: &[&Path], data: &Path) -> serde_json::Value {
    let mut args = vec!["eval".to_string(), "--model".into(), s(&tiny().join("model")), "--data".into(), s(data), "--seq".into(), "16".into(), "--json".into()];
    for a in adapters {
        args.push("--adapter".into());
        args.push(s(a));
    }
    serde_json::from_str(text(&webtune_ok(&args).stdout).trim()).unwrap()
}

#[test]
fn continual_fine_tuning_and_several_adapters_in_eval() {
    let dir = tempfile::tempdir().unwrap();
    let eval = eval_file(dir.path());
    let out = dir.path().join("out");
    let init = tiny().join("adapter_init");
    let r = webtune_ok(&[
        "train", "--model", &s(&tiny().join("model")), "--data", &s(&tiny().join("data.jsonl")), "--init-adapter", &s(&init),
        "--eval-data", &s(&eval), "--steps", "3", "--batch", "2", "--seq", "16", "--lr", "3e-2", "--out", &s(&out),
    ]);
    let err = text(&r.stderr);
    let line = err.lines().find(|l| l.starts_with("old task: ")).unwrap_or_else(|| panic!("no old task line:\n{err}"));
    // "old task: 2.9100 → 3.0500 (+0.1400) eval loss, ..."
    let nums: Vec<f64> = line["old task: ".len()..]
        .split([' ', '(', ')', '→'])
        .filter_map(|w| w.parse().ok())
        .collect();
    let (before, after, diff) = (nums[0], nums[1], nums[2]);
    assert!((after - before - diff).abs() < 2e-4, "{line}");
    assert!((after - before).abs() > 1e-3, "training moved the old task's loss: {line}");

    // several adapters: the base model and each adapter, from one load
    let both = eval_json(&[&init, &out], &eval);
    let list = both["adapters"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(both.get("adapter").is_none(), "with several adapters there is no single \"adapter\" entry");
    let l0 = list[0]["loss"].as_f64().unwrap();
    let l1 = list[1]["loss"].as_f64().unwrap();
    // the summary's numbers (4 decimals) equal webtune eval of the init and the output adapters
    assert!((l0 - before).abs() < 6e-5, "before {before} vs eval of the init adapter {l0}");
    assert!((l1 - after).abs() < 6e-5, "after {after} vs eval of the output adapter {l1}");
    // each entry equals a run with that adapter alone, whose --json keeps its single-adapter form
    for (k, a) in [&init, &out].iter().enumerate() {
        let one = eval_json(&[a], &eval);
        assert!(close(one["adapter"]["loss"].as_f64().unwrap(), list[k]["loss"].as_f64().unwrap()), "{one} vs {both}");
        assert!(close(one["base"]["loss"].as_f64().unwrap(), both["base"]["loss"].as_f64().unwrap()));
        assert_eq!(one["tokens"], both["tokens"]);
    }
    let table = text(&webtune_ok(&["eval", "--model", &s(&tiny().join("model")), "--data", &s(&eval), "--seq", "16", "--adapter", &s(&init), "--adapter", &s(&out)]).stdout);
    assert!(table.contains("base model:") && table.contains(&s(&init)) && table.contains(&s(&out)), "{table}");
}

fn generate(extra: &[&str]) -> String {
    let mut args = vec!["generate", "--greedy", "--max-new-tokens", "6"];
    let model = s(&tiny().join("model"));
    let tok = s(&tiny().join("tokenizer"));
    args.extend(["--model", &model, "--tokenizer", &tok]);
    args.extend(extra);
    text(&webtune_ok(&args).stdout)
}

#[test]
fn generate_with_several_adapters_and_chat() {
    let (a, b) = (s(&tiny().join("adapter_init")), s(&tiny().join("adapter_r5")));
    let both = generate(&["--prompt", "the cat", "--adapter", &a, "--adapter", &b]);
    let want = format!(
        "=== base model ===\n{}=== adapter {a} ===\n{}=== adapter {b} ===\n{}",
        generate(&["--prompt", "the cat"]),
        generate(&["--prompt", "the cat", "--adapter", &a]),
        generate(&["--prompt", "the cat", "--adapter", &b])
    );
    assert_eq!(both, want);

    // --chat: the user message through the template with its generation prompt; the same as
    // prompting with the rendered text (this tokenizer adds no prefix)
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.jinja");
    std::fs::write(&t, "{% for m in messages %}{{ m.role }}: {{ m.content }}<|endoftext|>{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}").unwrap();
    let chat = generate(&["--chat", "--chat-template", &s(&t), "--prompt", "hi cat"]);
    assert_eq!(chat, generate(&["--prompt", "user: hi cat<|endoftext|>assistant:"]));
    let msgs = dir.path().join("m.json");
    std::fs::write(&msgs, r#"[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi cat"}]"#).unwrap();
    let conv = generate(&["--messages", &s(&msgs), "--chat-template", &s(&t)]);
    assert_eq!(conv, generate(&["--prompt", "system: be brief<|endoftext|>user: hi cat<|endoftext|>assistant:"]));

    // no template: a clear refusal naming the flag
    let r = webtune(&["generate", "--model", &s(&tiny().join("model")), "--tokenizer", &s(&tiny().join("tokenizer")), "--chat", "--prompt", "x"]);
    assert!(!r.status.success());
    assert!(text(&r.stderr).contains("--chat needs a chat template") && text(&r.stderr).contains("--chat-template FILE"), "{}", text(&r.stderr));
    // a template error names the file
    std::fs::write(&t, "{{ raise_exception('roles must alternate') }}").unwrap();
    let r = webtune(&["generate", "--model", &s(&tiny().join("model")), "--tokenizer", &s(&tiny().join("tokenizer")), "--chat", "--chat-template", &s(&t), "--prompt", "x"]);
    let e = text(&r.stderr);
    assert!(!r.status.success() && e.contains(&s(&t)) && e.contains("roles must alternate"), "{e}");
}

fn chat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat")
}

/// A LoRA run on chat records (labels from the template's generation markers) equals PyTorch + PEFT
/// trained on transformers' assistant masks (tools/make_chat_peft_fixtures.py): the records' ids
/// and labels, two steps' losses and gradient norms, and the adapter after them.
#[test]
fn chat_lora_run_matches_peft() {
    let peft = chat_dir().join("peft");
    let ex: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(peft.join("expected.json")).unwrap()).unwrap();
    let llama = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama/llama");
    let template = chat_dir().join("tiny_marked.jinja");

    // the records' labels: the assistant masks of transformers
    let tok = webtune::data::Tokenizer::load_dir(&tiny().join("tokenizer"))
        .unwrap()
        .with_chat_template(&std::fs::read_to_string(&template).unwrap(), "tiny_marked.jinja")
        .unwrap();
    let ds = webtune::data::Dataset::read(&peft.join("records.jsonl"), 97, &|| Ok(("tiny".into(), &tok))).unwrap();
    let want = ex["records"].as_array().unwrap();
    assert_eq!(ds.records.len(), want.len());
    for (r, w) in ds.records.iter().zip(want) {
        assert_eq!(r.input_ids, serde_json::from_value::<Vec<u32>>(w["input_ids"].clone()).unwrap());
        assert_eq!(r.labels.as_ref().unwrap(), &serde_json::from_value::<Vec<i32>>(w["labels"].clone()).unwrap());
    }

    let dir = tempfile::tempdir().unwrap();
    let (out, log) = (dir.path().join("out"), dir.path().join("log.jsonl"));
    let o = &ex["optimizer"];
    let f = |v: &serde_json::Value| v.as_f64().unwrap().to_string();
    webtune_ok(&[
        "train".to_string(), "--model".into(), s(&llama.join("model")), "--tokenizer".into(), s(&tiny().join("tokenizer")),
        "--chat-template".into(), s(&template), "--data".into(), s(&peft.join("records.jsonl")), "--init-adapter".into(),
        s(&llama.join("adapter_init")), "--out".into(), s(&out), "--log-json".into(), s(&log), "--steps=2".into(),
        "--batch=2".into(), "--seq=16".into(), "--no-shuffle".into(), format!("--lr={}", f(&o["lr"])),
        format!("--weight-decay={}", f(&o["weight_decay"])), format!("--beta1={}", f(&o["betas"][0])),
        format!("--beta2={}", f(&o["betas"][1])), format!("--eps={}", f(&o["eps"])), format!("--grad-clip={}", f(&ex["clip_grad_norm"])),
    ]);
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let num = |k: &str| lines.iter().filter_map(|v| v.get(k)).map(|x| x.as_f64().unwrap()).collect::<Vec<_>>();
    let want = |k: &str| ex[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>();
    for k in ["loss", "grad_norm"] {
        let (got, w) = (num(k), want(if k == "loss" { "losses" } else { "grad_norms" }));
        assert_eq!(got.len(), 2);
        for (g, w) in got.iter().zip(&w) {
            assert!((g - w).abs() <= 1e-4 * w.abs(), "{k}: webtune {got:?}, PEFT {w:?}");
        }
    }
    let got_bytes = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
    let want_bytes = std::fs::read(peft.join("adapter_step2.safetensors")).unwrap();
    let (got, want) = (safetensors::SafeTensors::deserialize(&got_bytes).unwrap(), safetensors::SafeTensors::deserialize(&want_bytes).unwrap());
    let mut names = got.names();
    names.sort();
    let mut want_names = want.names();
    want_names.sort();
    assert_eq!(names, want_names);
    let (mut off, mut total) = (0, 0);
    for name in names {
        let g: Vec<f32> = bytemuck::pod_collect_to_vec(got.tensor(name).unwrap().data());
        let w: Vec<f32> = bytemuck::pod_collect_to_vec(want.tensor(name).unwrap().data());
        total += g.len();
        off += g.iter().zip(&w).filter(|(g, w)| (*g - *w).abs() > 1e-4 + 1e-4 * w.abs()).count();
    }
    // Adam moves an entry whose gradient is at float-noise level by ±lr either way: a few may differ
    assert!(off <= 2, "{off} of {total} adapter entries differ from PEFT's");
}

/// `train --dry-run` shows a chat record as the template renders it, trained spans marked: the
/// assistant's reply inside `[[ ]]`, the system and user turns outside, and as many trained tokens
/// as transformers' assistant mask has (tools/make_chat_peft_fixtures.py); nothing is written.
#[test]
fn dry_run_marks_the_trained_spans_of_a_chat_record() {
    let peft = chat_dir().join("peft");
    let ex: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(peft.join("expected.json")).unwrap()).unwrap();
    let llama = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama/llama");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = |json: bool| -> Vec<String> {
        [
            "train", "--model", &s(&llama.join("model")), "--tokenizer", &s(&tiny().join("tokenizer")), "--chat-template",
            &s(&chat_dir().join("tiny_marked.jinja")), "--data", &s(&peft.join("records.jsonl")), "--out", &s(&out),
            "--seq=16", if json { "--dry-run=json" } else { "--dry-run" },
        ]
        .map(String::from)
        .to_vec()
    };
    let v: serde_json::Value = serde_json::from_str(text(&webtune_ok(&args(true)).stdout).trim()).unwrap();
    let r = &v["data"]["rendered"];
    let marked = r["marked"].as_str().unwrap();
    let inside: String = marked.split("[[").skip(1).map(|p| p.split("]]").next().unwrap()).collect();
    let outside: String = marked.split("[[").enumerate().map(|(i, p)| if i == 0 { p } else { p.split("]]").nth(1).unwrap_or("") }).collect();
    assert!(inside.contains("it is 4."), "{marked}");
    for turn in ["be brief", "what is 2+2?"] {
        assert!(outside.contains(turn) && !inside.contains(turn), "{turn}: {marked}");
    }
    let labels: Vec<i64> = serde_json::from_value(ex["records"][0]["labels"].clone()).unwrap();
    let trained = labels.iter().filter(|&&l| l != -100).count();
    assert_eq!(v["data"]["samples"][0]["trainedTokens"].as_u64().unwrap() as usize, trained, "{}", v["data"]);
    let t = text(&webtune_ok(&args(false)).stdout);
    assert!(t.contains(&format!("trained spans in [[ ]]: {marked:?}")), "{t}");
    assert!(!out.exists(), "a dry run writes nothing");
}
