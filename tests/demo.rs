//! The bundled default end to end: `webtune demo` from another folder writes a loadable PEFT
//! adapter that training changed; `webtune pretrain` on a tiny shape writes a model that loads,
//! sized to its tokenizer; bad inputs end in one `error:` line.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use webtune::data::Tokenizer;
use webtune::model::{Weights, LoraAdapter};

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
}

fn webtune(args: &[&str], cwd: &Path, env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_webtune"));
    c.args(args).current_dir(cwd).env_remove("WEBTUNE_ASSETS");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// stderr without the Vulkan loader's environment warnings.
fn error_lines(out: &Output) -> Vec<String> {
    text(&out.stderr)
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .map(String::from)
        .collect()
}

fn assert_one_error(out: &Output, want: &[&str]) {
    let lines = error_lines(out);
    assert_ne!(out.status.code(), Some(101), "panicked: {lines:?}");
    assert_eq!(out.status.code(), Some(1), "want exit 1: {lines:?}");
    assert_eq!(lines.len(), 1, "want one stderr line, got {lines:?}");
    assert!(lines[0].starts_with("error: "), "{lines:?}");
    for w in want {
        assert!(lines[0].contains(w), "the error should name {w:?}: {}", lines[0]);
    }
}

#[test]
fn demo_runs_from_another_folder_and_writes_a_trained_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let args = ["demo", "--steps", "2", "--eval-windows", "2", "--sample-tokens", "4", "--lr", "5e-3", "--seed", "9"];
    let out = webtune(&args, tmp.path(), &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{}\n{}", stdout, text(&out.stderr));
    for want in [
        "Samples before fine-tuning",
        "Samples after fine-tuning",
        "Moby Dick",
        "State of the Union",
        "before",
        "after",
    ] {
        assert!(stdout.contains(want), "the demo's output lacks {want:?}:\n{stdout}");
    }
    // Six samples, each starting with its prompt.
    assert_eq!(stdout.matches("  > Call me Ishmael").count(), 2, "{stdout}");

    let dir = tmp.path().join("webtune-demo-adapter");
    let weights = Weights::load_dir(&assets().join("model")).unwrap();
    let adapter = LoraAdapter::load_peft(&dir, &weights.config).unwrap();
    assert_eq!((adapter.config.r, adapter.config.alpha), (8, 16.0));
    assert_eq!(
        adapter.modules.len(),
        4 * weights.config.n_layer,
        "c_attn, attn.c_proj, c_fc, mlp.c_proj per layer"
    );
    // B starts at zero; two steps (the first at warmup lr 0, the second at the peak) move it.
    let moved = adapter
        .modules
        .iter()
        .flat_map(|m| &m.b.data)
        .filter(|x| **x != 0.0)
        .count();
    assert!(
        moved > 0,
        "the adapter's B matrices are still zero: nothing was trained"
    );
    assert!(adapter
        .modules
        .iter()
        .flat_map(|m| m.a.data.iter().chain(&m.b.data))
        .all(|x| x.is_finite()));
    // --lr and --seed: the same fine-tune through `webtune train` gives the same adapter, bit for bit
    let same = train_like_demo(tmp.path(), 2, None, "5e-3", 9);
    assert!(adapter.modules == same.modules, "the demo's adapter is not webtune train's with the same settings");
}

/// The demo's fine-tune as `webtune train` (the README's description: LoRA r 8, alpha 16 on c_attn,
/// c_proj, c_fc; batch 4 x 128; AdamW lr LR, warmup min(10, steps / 2), cosine to LR / 10, grad clip 1;
/// the addresses without the held-out tenth (split with seed 0), shuffled with --seed), on the same
/// records written as token ids; returns the adapter.
fn train_like_demo(dir: &Path, steps: u32, stop_after: Option<u32>, lr: &str, seed: u64) -> LoraAdapter {
    use webtune::data::records::{read_dataset, split_eval};
    let model = assets().join("model");
    let tok = Tokenizer::load_dir(&model).unwrap();
    let recs = read_dataset(&assets().join("sotu-1961-1980.jsonl"), tok.vocab_size(), &|t| tok.encode(t)).unwrap();
    let (train, _) = split_eval(recs, 0.1, 0).unwrap();
    let data = dir.join("demo-train.jsonl");
    let lines: String = train.iter().map(|r| serde_json::json!({ "input_ids": r.input_ids }).to_string() + "\n").collect();
    std::fs::write(&data, lines).unwrap();
    let out = dir.join("like-demo");
    let min_lr = (lr.parse::<f32>().unwrap() / 10.0).to_string();
    let (steps_s, seed_s, warmup) = (steps.to_string(), seed.to_string(), 10u32.min(steps / 2).to_string());
    let mut args = vec!["train", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(["--steps", &steps_s, "--batch", "4", "--seq", "128", "--lr", lr, "--schedule", "cosine", "--warmup", &warmup]);
    args.extend(["--min-lr", &min_lr, "--seed", &seed_s, "--lora-rank", "8", "--lora-alpha", "16", "--grad-clip", "1"]);
    let stop = stop_after.map(|n| n.to_string());
    if let Some(n) = &stop {
        args.extend(["--stop-after", n]);
    }
    let r = webtune(&args, dir, &[]);
    assert!(r.status.success(), "webtune train like the demo failed:\n{}", text(&r.stderr));
    LoraAdapter::load_peft(&out, &Weights::load_dir(&model).unwrap().config).unwrap()
}

/// A valid --seconds ends the fine-tune early: 1 ms is over after the first step on any device. The
/// adapter is then webtune train's after as many steps of the same schedule (and --seed's init: the
/// first update runs at warmup lr 0).
#[test]
fn demo_seconds_stops_the_fine_tune_on_time() {
    use webtune::model::LoraConfig;
    let tmp = tempfile::tempdir().unwrap();
    let args = ["demo", "--steps", "1000", "--seconds", "0.001", "--seed", "9", "--eval-windows", "1", "--sample-tokens", "2"];
    let out = webtune(&args, tmp.path(), &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{}\n{}", stdout, text(&out.stderr));
    let line = stdout.lines().find(|l| l.contains("stopped after")).unwrap_or_else(|| panic!("no 'stopped after' line:\n{stdout}"));
    let done: u32 = line.trim().strip_prefix("stopped after ").unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(line.contains("steps: the 0.001 s limit was reached"), "{line}");
    assert!((1..1000).contains(&done), "{line}");
    let weights = Weights::load_dir(&assets().join("model")).unwrap();
    let adapter = LoraAdapter::load_peft(&tmp.path().join("webtune-demo-adapter"), &weights.config).unwrap();
    let same = train_like_demo(tmp.path(), 1000, Some(done), "2e-3", 9);
    assert!(adapter.modules == same.modules, "the demo's adapter after {done} steps is not webtune train's");
    if done == 1 {
        let targets = ["c_attn", "c_proj", "c_fc"].map(String::from).to_vec();
        let init = LoraAdapter::init(LoraConfig::new(8, 16.0, targets, 0.0, webtune::model::Family::Gpt2).unwrap(), &weights.config, 9);
        assert!(adapter.modules == init.modules, "one step at lr 0 leaves --seed 9's init");
    }
}

/// `webtune pretrain`'s optimizer flags reach the trainer as `webtune train --full`'s do: the same
/// run from the same init (GPT-2's init from --seed, which the test builds and saves) gives the same
/// per-step log (losses, lrs, grad norms), the same held-out losses and the same weights. The lrs
/// are the linear schedule's by hand.
#[test]
fn pretrain_flags_train_like_webtune_train_full() {
    use webtune::model::ModelConfig;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = t.join("data.jsonl");
    let line = |s: &str| serde_json::json!({ "text": s }).to_string() + "\n";
    let body: String = [
        "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse.",
        "It is a way I have of driving off the spleen and regulating the circulation.",
        "Whenever I find myself growing grim about the mouth, I account it high time to get to sea.",
        "There now is your insular city of the Manhattoes, belted round by wharves.",
        "Circumambulate the city of a dreamy Sabbath afternoon.",
    ]
    .iter()
    .map(|s| line(s))
    .collect();
    std::fs::write(&data, body).unwrap();
    let tok_dir = assets().join("model");
    let flags = [
        "--steps", "3", "--batch", "2", "--seq", "8", "--lr", "5e-3", "--min-lr", "1e-3", "--warmup", "1", "--schedule",
        "linear", "--weight-decay", "0.5", "--beta1", "0.8", "--beta2", "0.9", "--grad-clip", "0.5", "--seed", "7",
    ];
    let (pre, pre_log) = (t.join("pre"), t.join("pre.jsonl"));
    let mut a = vec!["pretrain", "--tokenizer", tok_dir.to_str().unwrap(), "--data", data.to_str().unwrap(), "--out", pre.to_str().unwrap()];
    a.extend(["--layers", "1", "--heads", "2", "--embd", "16", "--positions", "16", "--eval-fraction", "0.25", "--eval-every", "1"]);
    a.extend(["--log-json", pre_log.to_str().unwrap()]);
    a.extend(flags);
    let r = webtune(&a, t, &[]);
    assert!(r.status.success(), "pretrain failed:\n{}", text(&r.stderr));

    // the same init, as a model folder
    let tok = Tokenizer::load_dir(&tok_dir).unwrap();
    let eos = tok.token_to_id("<|endoftext|>").unwrap();
    let mut cfg = ModelConfig::gpt2(1, 2, 16, tok.vocab_size(), 16);
    (cfg.eos_token_id, cfg.bos_token_id) = (eos, eos);
    if let Some(raw) = cfg.raw.as_object_mut() {
        raw.insert("eos_token_id".into(), eos.into());
        raw.insert("bos_token_id".into(), eos.into());
    }
    let init = t.join("init");
    Weights::random(&cfg, 7).save_dir(&init).unwrap();
    let (full, full_log) = (t.join("full"), t.join("full.jsonl"));
    let mut a = vec!["train", "--full", "--model", init.to_str().unwrap(), "--tokenizer", tok_dir.to_str().unwrap()];
    a.extend(["--data", data.to_str().unwrap(), "--out", full.to_str().unwrap(), "--eval-split", "0.25", "--eval-every", "1"]);
    a.extend(["--log-json", full_log.to_str().unwrap()]);
    a.extend(flags);
    let r = webtune(&a, t, &[]);
    assert!(r.status.success(), "train --full failed:\n{}", text(&r.stderr));

    let read = |p: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let (pl, fl) = (read(&pre_log), read(&full_log));
    let steps = |v: &[serde_json::Value]| -> Vec<(u64, f64, f64, f64)> {
        let f = |x: &serde_json::Value, k: &str| x[k].as_f64().unwrap();
        v.iter().filter(|x| x.get("loss").is_some()).map(|x| (x["step"].as_u64().unwrap(), f(x, "loss"), f(x, "lr"), f(x, "grad_norm"))).collect()
    };
    let evals = |v: &[serde_json::Value]| -> Vec<(u64, f64)> {
        v.iter().filter_map(|x| x.get("eval_loss").map(|e| (x["step"].as_u64().unwrap(), e.as_f64().unwrap()))).collect()
    };
    assert_eq!(steps(&pl), steps(&fl), "per-step loss, lr and grad norm");
    assert_eq!(evals(&pl), evals(&fl), "held-out losses");
    assert_eq!(evals(&pl).iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3]);
    // linear decay after 1 warmup step to min_lr = 0.2 lr: update s runs at lr·λ(s−1): 0, 1, 0.5·0.8 + 0.2
    let lrs: Vec<f64> = steps(&pl).iter().map(|s| s.2).collect();
    for (got, want) in lrs.iter().zip([0.0, 5e-3, 3e-3]) {
        assert!((got - want).abs() <= 1e-9, "lrs {lrs:?}");
    }
    let (a, b) = (Weights::load_dir(&pre).unwrap(), Weights::load_dir(&full).unwrap());
    assert!(a.tensors == b.tensors, "pretrain's weights differ from train --full's");
}

#[test]
fn bundled_model_matches_its_tokenizer() {
    let dir = assets().join("model");
    let w = Weights::load_dir(&dir).unwrap();
    let tok = Tokenizer::load_dir(&dir).unwrap();
    assert_eq!(w.config.vocab_size, tok.vocab_size());
    assert_eq!(Some(w.config.eos_token_id), tok.token_to_id("<|endoftext|>"));
    // Ids from Python `tokenizers` on the same tokenizer.json (tools/make_assets.py's BPE).
    let ids = tok.encode("The whale and the sea.");
    assert_eq!(
        ids,
        [697, 377, 282, 261, 552, 14],
        "one token per word: 'The', ' whale', ' and', ' the', ' sea', '.'"
    );
    assert_eq!(tok.decode(&ids), "The whale and the sea.");
    assert_eq!(tok.encode("Call me Ishmael."), [35, 390, 397, 315, 855, 1719, 439, 14]);
}

#[test]
fn pretrain_tiny_writes_a_model_sized_to_its_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = t.join("data.jsonl");
    let line = |s: &str| serde_json::json!({ "text": s }).to_string() + "\n";
    let body: String = [
        "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse.",
        "It is a way I have of driving off the spleen and regulating the circulation.",
        "Whenever I find myself growing grim about the mouth, I account it high time to get to sea.",
        "There now is your insular city of the Manhattoes, belted round by wharves.",
    ]
    .iter()
    .map(|s| line(s))
    .collect();
    std::fs::write(&data, body).unwrap();
    let tok_dir = assets().join("model");
    let (out, log) = (t.join("model"), t.join("log.jsonl"));
    let args = [
        "pretrain",
        "--tokenizer",
        tok_dir.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--layers",
        "1",
        "--heads",
        "2",
        "--embd",
        "16",
        "--positions",
        "16",
        "--steps",
        "2",
        "--batch",
        "2",
        "--seq",
        "8",
        "--warmup",
        "1",
        "--eval-fraction",
        "0.25",
        "--log-json",
        log.to_str().unwrap(),
    ];
    let run = webtune(&args, t, &[]);
    assert!(run.status.success(), "pretrain failed:\n{}", text(&run.stderr));

    let w = Weights::load_dir(&out).unwrap();
    let tok = Tokenizer::load_dir(&out).unwrap();
    assert_eq!(
        std::fs::read(out.join("tokenizer.json")).unwrap(),
        std::fs::read(tok_dir.join("tokenizer.json")).unwrap()
    );
    let c = &w.config;
    assert_eq!((c.n_layer, c.n_head, c.n_embd, c.n_positions), (1, 2, 16, 16));
    assert_eq!(c.vocab_size, tok.vocab_size());
    assert_eq!(Some(c.eos_token_id), tok.token_to_id("<|endoftext|>"));
    assert_eq!(w.get("wte.weight").shape, vec![tok.vocab_size(), 16]);
    // Trained away from the seeded init: every tensor is written, and wte moved.
    let init = Weights::random(c, 0);
    assert_ne!(w.get("wte.weight").data, init.get("wte.weight").data);

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<u64> = lines
        .iter()
        .filter(|l| l.get("loss").is_some())
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![1, 2]);
    assert_eq!(
        lines[0]["lr"].as_f64(),
        Some(0.0),
        "warmup: update 1 runs at lr_at(0) = 0"
    );
    let eval = lines
        .iter()
        .find(|l| l.get("eval_loss").is_some())
        .expect("an eval_loss line");
    let e = eval["eval_loss"].as_f64().unwrap();
    assert!(
        e.is_finite() && e > 0.0 && e < 2.0 * (tok.vocab_size() as f64).ln(),
        "{eval}"
    );
}

#[test]
fn bad_inputs_end_in_one_error_line() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let out = t.join("adapter-never-written");
    let o = out.to_str().unwrap();

    // Missing assets: an empty folder by flag, a folder without the second text by WEBTUNE_ASSETS.
    let empty = t.join("empty-assets");
    std::fs::create_dir_all(&empty).unwrap();
    let r = webtune(&["demo", "--assets", empty.to_str().unwrap(), "--out", o], t, &[]);
    assert_one_error(&r, &["config.json", "missing", "--assets"]);
    let partial = t.join("partial-assets");
    std::fs::create_dir_all(partial.join("model")).unwrap();
    for f in [
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
        "moby-dick.jsonl",
    ] {
        std::fs::copy(assets().join(f), partial.join(f)).unwrap();
    }
    let r = webtune(&["demo", "--out", o], t, &[("WEBTUNE_ASSETS", &partial)]);
    assert_one_error(&r, &["sotu-1961-1980.jsonl", "missing"]);

    // Bad limits.
    assert_one_error(&webtune(&["demo", "--steps", "0", "--out", o], t, &[]), &["--steps"]);
    assert_one_error(
        &webtune(&["demo", "--seconds", "-1", "--out", o], t, &[]),
        &["--seconds"],
    );
    assert_one_error(
        &webtune(&["demo", "--seconds", "NaN", "--out", o], t, &[]),
        &["--seconds"],
    );
    let r = webtune(&["demo", "--steps", "many", "--out", o], t, &[]);
    assert_eq!(
        r.status.code(),
        Some(2),
        "clap rejects a non-number: {}",
        text(&r.stderr)
    );
    assert!(!out.exists(), "--out was written on bad input");

    // pretrain: shape, missing data, tokenizer.
    let tok = assets().join("model");
    let tok = tok.to_str().unwrap();
    let data = assets().join("sotu-1961-1980.jsonl");
    let data = data.to_str().unwrap();
    let r = webtune(
        &[
            "pretrain",
            "--tokenizer",
            tok,
            "--data",
            data,
            "--out",
            o,
            "--embd",
            "10",
            "--heads",
            "4",
        ],
        t,
        &[],
    );
    assert_one_error(&r, &["--embd 10", "--heads 4"]);
    let r = webtune(
        &["pretrain", "--tokenizer", tok, "--data", "no-such.jsonl", "--out", o],
        t,
        &[],
    );
    assert_one_error(&r, &["no-such.jsonl"]);
    let r = webtune(
        &[
            "pretrain",
            "--tokenizer",
            t.to_str().unwrap(),
            "--data",
            data,
            "--out",
            o,
        ],
        t,
        &[],
    );
    assert_one_error(&r, &["tokenizer"]);
    let r = webtune(
        &[
            "pretrain",
            "--tokenizer",
            tok,
            "--data",
            data,
            "--out",
            o,
            "--positions",
            "64",
            "--seq",
            "65",
        ],
        t,
        &[],
    );
    assert_one_error(&r, &["--seq 65"]);
    assert!(!out.exists(), "--out was written on bad input");
}
