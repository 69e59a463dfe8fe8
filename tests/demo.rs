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
    let args = ["demo", "--steps", "2", "--eval-windows", "2", "--sample-tokens", "4"];
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
