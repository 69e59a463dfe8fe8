//! `webtune generate`, `eval` and `merge`, and the library parts they run on:
//! - `train::eval::evaluate` against the CPU reference (loss of each window from
//!   `reference::gpt2::forward_logits` + `ops::cross_entropy`, pooled over counted positions),
//!   with masked labels, odd T (13, 7) and a short last batch (13 windows in 3s, 24 in 5s), base and LoRA: rtol 2e-5;
//! - `LoraAdapter::merge_into` on the CPU reference (merged logits = base + adapter logits,
//!   rtol 1e-5 of the largest logit) and on the GPU through `webtune merge` (same bound);
//! - `webtune generate`: greedy = the reference greedy continuation (each step's top-2 margin
//!   checked > 1e-3 so agreement is meaningful), a seed fixes the samples, another seed differs;
//! - `webtune eval --json`: the numbers equal `evaluate` within 1e-4; base and adapter differ;
//! - bad inputs: one `error:` line, exit 1, nothing written.
//!
//! Text commands use tests/fixtures/tiny/tokenizer (tools/make_tiny_tokenizer.py): a byte-level
//! BPE tokenizer whose 97 ids fit the tiny model: '!'..'~' = 0..93, space 94, newline 95,
//! "<|endoftext|>" 96, no merges.
mod common;
use std::path::{Path, PathBuf};

use common::*;
use webtune::data::{records, Batch, Batcher, Record, TokenStream, Tokenizer};
use webtune::gpu::Gpu;
use webtune::model::ModelGpu;
use webtune::model::Trainable;
use webtune::model::lora::LoraAdapter;
use webtune::model::{ModelConfig, Weights, Linear};
use webtune::reference::{gpt2 as reference, ops};
use webtune::train::eval::{evaluate, EvalResult};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

fn tokenizer_dir() -> PathBuf {
    fixtures().join("tokenizer")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `webtune`, requires exit 0 and returns its stdout.
fn webtune_stdout(args: &[&str]) -> String {
    text(&webtune_ok(args).stdout)
}

/// Runs a failing command: exit 1 (not a panic), one `error: ` line (besides the Vulkan loader's
/// XDG_RUNTIME_DIR noise) naming every `want`.
fn webtune_err(args: &[&str], want: &[&str]) -> String {
    let out = webtune(args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "webtune {args:?}: want exit 1:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.contains("XDG_RUNTIME_DIR")).collect();
    assert_eq!(lines.len(), 1, "webtune {args:?}: want one stderr line:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for w in want {
        assert!(
            lines[0].contains(w),
            "webtune {args:?}: the message should name '{w}': {}",
            lines[0]
        );
    }
    lines[0].to_string()
}

fn tiny() -> (Weights, LoraAdapter) {
    let w = Weights::load_dir(&fixtures().join("model")).unwrap();
    let ad = LoraAdapter::load_peft(&fixtures().join("adapter_init"), &w.config).unwrap();
    (w, ad)
}

/// The fixture records with labels masked here and there (-100 on every 5th token).
fn masked_records(vocab: usize) -> Vec<Record> {
    let mut recs = records::read_jsonl(&fixtures().join("data.jsonl"), vocab).unwrap();
    for (i, r) in recs.iter_mut().enumerate() {
        let labels = r
            .input_ids
            .iter()
            .enumerate()
            .map(|(j, &t)| if (i + j) % 5 == 0 { -100 } else { t as i32 });
        r.labels = Some(labels.collect());
    }
    recs
}

/// The reference eval loss: each window's mean cross-entropy of `forward_logits`, pooled over counted positions.
fn reference_eval(w: &Weights, lora: Option<&LoraAdapter>, batches: &[Batch], t: usize) -> (f64, usize) {
    let v = w.config.vocab_size;
    let (mut sum, mut counted) = (0.0f64, 0usize);
    for batch in batches {
        for (toks, ys) in batch.tokens.chunks(t).zip(batch.targets.chunks(t)) {
            let logits = reference::forward_logits(w, lora, toks, 1, t);
            let (mean, _, _) = ops::cross_entropy(&logits, ys, v);
            let n = ys.iter().filter(|&&y| y >= 0).count();
            sum += mean as f64 * n as f64;
            counted += n;
        }
    }
    (sum / counted as f64, counted)
}

fn run_eval(gpu: &Gpu, w: &Weights, lora: Option<&LoraAdapter>, batches: &[Batch], t: usize) -> EvalResult {
    let m = ModelGpu::new(gpu, w, lora, Trainable::None).unwrap();
    pollster::block_on(evaluate(gpu, &m, batches, t)).unwrap()
}

#[test]
fn evaluate_matches_reference() {
    let gpu = gpu();
    let (w, ad) = tiny();
    let recs = masked_records(w.config.vocab_size);
    let stream = TokenStream::new(&recs, w.config.eos_token_id);
    for (b, t) in [(3, 13), (5, 7)] {
        let batcher = Batcher::new(stream.clone(), b, t, true, 5).unwrap();
        let batches = batcher.eval_batches();
        assert_ne!(batcher.n_windows % b, 0, "the case should have a short last batch");
        for (what, lora) in [("base", None), ("lora", Some(&ad))] {
            let got = run_eval(&gpu, &w, lora, &batches, t);
            let (want, counted) = reference_eval(&w, lora, &batches, t);
            let what = format!("{what} B={b} T={t}");
            assert_eq!(got.tokens, counted, "{what}: counted positions");
            assert_eq!(counted, batches.iter().map(Batch::counted).sum::<usize>());
            assert!(counted < batcher.n_windows * t, "{what}: some labels are masked");
            assert_close(&format!("{what} loss"), &[got.loss], &[want as f32], 2e-5, 0.0);
            assert_close(
                &format!("{what} perplexity"),
                &[got.perplexity],
                &[want.exp() as f32],
                4e-5,
                0.0,
            );
        }
    }
    gpu.check().unwrap();
}

#[test]
fn evaluate_refuses_bad_batches() {
    let gpu = gpu();
    let (w, _) = tiny();
    let m = ModelGpu::new(&gpu, &w, None, Trainable::None).unwrap();
    let err = |batches: &[Batch], t: usize| {
        pollster::block_on(evaluate(&gpu, &m, batches, t))
            .unwrap_err()
            .to_string()
    };
    let ok = Batch {
        tokens: vec![1, 2, 3, 4],
        targets: vec![2, 3, 4, 5],
    };
    assert!(err(&[], 2).contains("no batches"));
    assert!(err(std::slice::from_ref(&ok), 0).contains("seq 0"));
    assert!(err(std::slice::from_ref(&ok), 65).contains("n_positions 64"));
    assert!(err(std::slice::from_ref(&ok), 3).contains("multiple of seq 3"));
    let short = Batch {
        tokens: vec![1, 2, 3, 4],
        targets: vec![2, 3],
    };
    assert!(err(&[short], 2).contains("2 targets"));
    let masked = Batch {
        tokens: vec![1, 2],
        targets: vec![-100, -100],
    };
    assert!(err(&[masked], 2).contains("no position counts"));
    let big = Batch {
        tokens: vec![1, 97],
        targets: vec![2, 3],
    };
    assert!(err(&[big], 2).contains("id 97"));
    let big = Batch {
        tokens: vec![1, 2],
        targets: vec![2, 97],
    };
    assert!(err(&[big], 2).contains("97"));
}

#[test]
fn merge_into_equals_the_adapted_forward_on_the_cpu() {
    let (w, ad) = tiny();
    let mut merged = w.clone();
    ad.merge_into(&mut merged).unwrap();
    let tokens: Vec<u32> = (0..2 * 11).map(|i| (i * 37 % 97) as u32).collect();
    let want = reference::forward_logits(&w, Some(&ad), &tokens, 2, 11);
    let got = reference::forward_logits(&merged, None, &tokens, 2, 11);
    let base = reference::forward_logits(&w, None, &tokens, 2, 11);
    let max = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert_close("merged logits (CPU)", &got, &want, 1e-5, 1e-5 * max);
    assert!(
        got.iter().zip(&base).any(|(a, b)| (a - b).abs() > 1e-3),
        "the adapter changes the logits"
    );
    // Only the adapted weights change (biases, LayerNorms, embeddings stay bit for bit).
    for (name, t) in &w.tensors {
        let adapted = name.ends_with(".weight") && Linear::GPT2.iter().any(|l| name.contains(l.hf_name()));
        assert_eq!(merged.tensors[name] != *t, adapted, "{name}");
    }
    // An adapter for another width is refused and leaves the weights as they were.
    let other = adapter_for(&ModelConfig::gpt2(2, 3, 15, 97, 40), 2);
    let mut untouched = w.clone();
    let e = other.merge_into(&mut untouched).unwrap_err().to_string();
    assert!(e.contains("cannot merge LoRA module h.0.attn.c_attn"), "{e}");
    assert!(untouched.tensors == w.tensors);
}

/// A non-zero adapter (r, alpha 2r) on every linear of `cfg`.
fn adapter_for(cfg: &ModelConfig, r: usize) -> LoraAdapter {
    random_adapter(cfg, r, 900, 0.3)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn merge_command_writes_a_checkpoint_with_the_adapted_logits() {
    let tmp = tempfile::tempdir().unwrap();
    // the fixture model with tokenizer files next to it
    let model = tmp.path().join("model");
    copy_dir(&fixtures().join("model"), &model);
    std::fs::copy(tokenizer_dir().join("tokenizer.json"), model.join("tokenizer.json")).unwrap();
    std::fs::write(model.join("tokenizer_config.json"), b"{\"model_max_length\": 64}").unwrap();
    std::fs::write(model.join("README.md"), b"not copied").unwrap();
    let adapter = fixtures().join("adapter_init");
    let out = tmp.path().join("nested/merged");
    webtune_stdout(&[
        "merge",
        "--model",
        s(&model),
        "--adapter",
        s(&adapter),
        "--out",
        s(&out),
    ]);
    assert_eq!(
        file_names(&out),
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    for f in ["generation_config.json", "tokenizer.json", "tokenizer_config.json"] {
        assert!(
            std::fs::read(out.join(f)).unwrap() == std::fs::read(model.join(f)).unwrap(),
            "{f} copied as is"
        );
    }
    assert_eq!(
        file_names(tmp.path()),
        ["model", "nested"],
        "no temporary folder is left"
    );
    let merged = Weights::load_dir(&out).unwrap();
    let (w, ad) = tiny();
    assert_eq!(
        ModelConfig {
            raw: serde_json::Value::Null,
            ..merged.config.clone()
        },
        ModelConfig {
            raw: serde_json::Value::Null,
            ..w.config.clone()
        }
    );

    // GPU: the merged model alone = the base model with the adapter
    let gpu = gpu();
    let (b, t) = (3, 17);
    let tokens: Vec<u32> = (0..b * t).map(|i| (i * 31 % 97) as u32).collect();
    let logits = |w: &Weights, lora: Option<&LoraAdapter>| {
        let m = ModelGpu::new(&gpu, w, lora, Trainable::None).unwrap();
        pollster::block_on(m.logits(&gpu, &tokens, b, t)).unwrap()
    };
    let want = logits(&w, Some(&ad));
    let got = logits(&merged, None);
    let max = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert_close("merged logits (GPU)", &got, &want, 1e-5, 1e-5 * max);
    let base = logits(&w, None);
    assert!(
        got.iter().zip(&base).any(|(a, b)| (a - b).abs() > 1e-3),
        "the merge changed the logits"
    );

    // Into an existing folder: files are replaced, others kept.
    std::fs::write(out.join("keep.txt"), b"x").unwrap();
    std::fs::write(out.join("model.safetensors"), b"stale").unwrap();
    webtune_stdout(&[
        "merge",
        "--model",
        s(&model),
        "--adapter",
        s(&adapter),
        "--out",
        s(&out),
    ]);
    assert!(file_names(&out).contains(&"keep.txt".to_string()));
    assert!(Weights::load_dir(&out).unwrap().tensors == merged.tensors);
}

#[test]
fn merge_bad_inputs_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = fixtures().join("model");
    let out = t.join("out");
    // an adapter for another model (width 15)
    let other = t.join("other_adapter");
    adapter_for(&ModelConfig::gpt2(2, 3, 15, 97, 40), 2)
        .save_peft(&other, "")
        .unwrap();
    let (missing, nope, init) = (t.join("missing"), t.join("nope"), fixtures().join("adapter_init"));
    let cases: [(&[&str], &[&str]); 4] = [
        (&["--adapter", s(&other)], &["other_adapter", "shape"]),
        (&["--adapter", s(&missing)], &["missing", "not a directory"]),
        (&["--adapter", s(&model)], &["adapter_config.json"]),
        (&["--adapter", s(&init), "--model", s(&nope)], &["nope"]),
    ];
    for (extra, want) in cases {
        let mut args = vec!["merge", "--out", s(&out)];
        if !extra.contains(&"--model") {
            args.extend(["--model", s(&model)]);
        }
        args.extend(extra);
        webtune_err(&args, want);
        assert!(!out.exists(), "{args:?} created --out");
    }
    let file = t.join("a_file");
    std::fs::write(&file, b"x").unwrap();
    let adapter = fixtures().join("adapter_init");
    webtune_err(
        &[
            "merge",
            "--model",
            s(&model),
            "--adapter",
            s(&adapter),
            "--out",
            s(&file),
        ],
        &["a_file", "not a folder"],
    );
    webtune_err(
        &[
            "merge",
            "--model",
            s(&model),
            "--adapter",
            s(&adapter),
            "--out",
            s(&model),
        ],
        &["--model folder"],
    );
    assert_eq!(file_names(t), ["a_file", "other_adapter"]);
}

// ---------------------------------------------------------------------------------------
// generate

const NPOS: usize = 40;

/// A random model with the tokenizer's 97 ids whose logits are spread out (greedy choices are
/// clear-cut), saved with tokenizer.json into `dir`.
fn spread_model(dir: &Path) -> Weights {
    let cfg = ModelConfig::gpt2(2, 3, 15, 97, NPOS);
    let mut w = Weights::random(&cfg, 11);
    for (i, (name, t)) in w.tensors.iter_mut().enumerate() {
        let noise = rand_vec(t.data.len(), 500 + i as u64);
        if name == "wte.weight" || name == "wpe.weight" {
            t.data.iter_mut().for_each(|v| *v *= 5.0);
        } else if name == "ln_f.weight" {
            t.data.copy_from_slice(&noise);
        } else if name.contains("ln_") || name.ends_with(".bias") {
            t.data.iter_mut().zip(noise).for_each(|(v, n)| *v += 0.1 * n);
        } else {
            t.data.iter_mut().for_each(|v| *v *= 10.0);
        }
    }
    w.save_dir(dir).unwrap();
    std::fs::copy(tokenizer_dir().join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    w
}

/// The reference greedy continuation; asserts each step's top-1 / top-2 margin exceeds 1e-3.
fn reference_greedy(w: &Weights, lora: Option<&LoraAdapter>, prompt: &[u32], n: usize) -> Vec<u32> {
    let v = w.config.vocab_size;
    let mut seq = prompt.to_vec();
    for _ in 0..n {
        let logits = reference::forward_logits(w, lora, &seq, 1, seq.len());
        let row = &logits[(seq.len() - 1) * v..];
        let mut order: Vec<usize> = (0..v).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let gap = row[order[0]] - row[order[1]];
        assert!(
            gap > 1e-3,
            "test model: step {} has top-2 margin {gap} (too close to call)",
            seq.len()
        );
        seq.push(order[0] as u32);
    }
    seq[prompt.len()..].to_vec()
}

#[test]
fn generate_greedy_equals_reference_and_seeds_fix_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    let w = spread_model(&dir);
    let tok = Tokenizer::load_dir(&tokenizer_dir()).unwrap();
    let lora = tmp.path().join("adapter");
    let ad = adapter_for(&w.config, 3);
    ad.save_peft(&lora, "").unwrap();
    let prompt = "Hi there, it's 42!";
    let ids = tok.encode(prompt);
    assert_eq!(ids.len(), prompt.len(), "one token per character");
    let m = s(&dir);
    let greedy = [
        "generate",
        "--model",
        m,
        "--prompt",
        prompt,
        "--greedy",
        "--no-stop-at-eos",
        "--max-new-tokens",
        "15",
    ];
    // tokenizer from the model folder; base and with the adapter
    let got = webtune_stdout(&greedy);
    assert_eq!(
        got,
        format!("{}\n", tok.decode(&reference_greedy(&w, None, &ids, 15))),
        "greedy, base"
    );
    let mut with = greedy.to_vec();
    with.extend(["--adapter", s(&lora)]);
    let got_lora = webtune_stdout(&with);
    assert_eq!(
        got_lora,
        format!("{}\n", tok.decode(&reference_greedy(&w, Some(&ad), &ids, 15))),
        "greedy, LoRA"
    );
    assert_ne!(got, got_lora);
    // to the end of the context: n_positions - prompt length new tokens, from a prompt file
    let pf = tmp.path().join("prompt.txt");
    std::fs::write(&pf, prompt).unwrap();
    let args = [
        "generate",
        "--model",
        m,
        "--prompt-file",
        s(&pf),
        "--temperature",
        "0",
        "--no-stop-at-eos",
    ];
    let want = reference_greedy(&w, None, &ids, NPOS - ids.len());
    assert_eq!(
        webtune_stdout(&args),
        format!("{}\n", tok.decode(&want)),
        "greedy to n_positions"
    );

    // sampling: a seed fixes it, another seed differs; sample i of a run uses seed + i
    let sample = |seed: &str, n: &str| {
        webtune_stdout(&[
            "generate",
            "--model",
            m,
            "--prompt",
            prompt,
            "--temperature",
            "1.5",
            "--top-k",
            "0",
            "--top-p",
            "1",
            "--no-stop-at-eos",
            "--max-new-tokens",
            "20",
            "--seed",
            seed,
            "--num-samples",
            n,
        ])
    };
    let a = sample("7", "1");
    assert_eq!(a, sample("7", "1"), "same seed, same text");
    assert_ne!(a, sample("8", "1"), "another seed, other text");
    let tok = Tokenizer::load_dir(&tokenizer_dir()).unwrap();
    assert_eq!(
        tok.encode(&a[..a.len() - 1]).len(),
        20,
        "20 new tokens and a newline: {a:?}"
    );
    let two = sample("7", "2");
    let want = format!(
        "--- sample 1 (seed 7) ---\n{a}--- sample 2 (seed 8) ---\n{}",
        sample("8", "1")
    );
    assert_eq!(two, want);
}

#[test]
fn generate_bad_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixtures().join("model");
    let tkdir = tokenizer_dir();
    let (m, tk) = (s(&model), s(&tkdir));
    webtune_err(
        &["generate", "--model", m, "--prompt", "hi"],
        &["no tokenizer found", "--tokenizer"],
    );
    let gpt2like = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer/gpt2like");
    webtune_err(
        &["generate", "--model", m, "--tokenizer", s(&gpt2like), "--prompt", "hi"],
        &["vocab_size is 97"],
    );
    let long = "x".repeat(64);
    webtune_err(
        &["generate", "--model", m, "--tokenizer", tk, "--prompt", &long],
        &["64 tokens", "n_positions is 64"],
    );
    webtune_err(
        &[
            "generate",
            "--model",
            m,
            "--tokenizer",
            tk,
            "--prompt",
            "hi",
            "--temperature",
            "-1",
        ],
        &["--temperature"],
    );
    webtune_err(
        &[
            "generate",
            "--model",
            m,
            "--tokenizer",
            tk,
            "--prompt",
            "hi",
            "--top-p",
            "0",
        ],
        &["--top-p"],
    );
    webtune_err(
        &[
            "generate",
            "--model",
            m,
            "--tokenizer",
            tk,
            "--prompt",
            "hi",
            "--num-samples",
            "0",
        ],
        &["--num-samples"],
    );
    let missing = tmp.path().join("missing.txt");
    webtune_err(
        &[
            "generate",
            "--model",
            m,
            "--tokenizer",
            tk,
            "--prompt-file",
            s(&missing),
        ],
        &["missing.txt"],
    );
    let other = tmp.path().join("other_adapter");
    adapter_for(&ModelConfig::gpt2(2, 3, 15, 97, 40), 2)
        .save_peft(&other, "")
        .unwrap();
    webtune_err(
        &[
            "generate",
            "--model",
            m,
            "--tokenizer",
            tk,
            "--prompt",
            "hi",
            "--adapter",
            s(&other),
        ],
        &["shape"],
    );
    // clap: exactly one of --prompt / --prompt-file
    for args in [
        vec!["generate", "--model", m],
        vec!["generate", "--model", m, "--prompt", "a", "--prompt-file", "b"],
    ] {
        let out = webtune(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
    }
}

/// The README's promises for `generate`: an empty prompt starts from the model's `bos_token_id`
/// (here 40, not the eos 96), and `--max-new-tokens` beyond n_positions is cut, with a note.
#[test]
fn generate_from_bos_and_the_note_when_max_new_tokens_is_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    spread_model(&dir);
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["bos_token_id"] = 40.into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let w = Weights::load_dir(&dir).unwrap();
    assert_eq!((w.config.bos_token_id, w.config.eos_token_id), (40, 96));
    let tok = Tokenizer::load_dir(&tokenizer_dir()).unwrap();
    let m = s(&dir);
    let empty = ["generate", "--model", m, "--prompt", "", "--greedy", "--no-stop-at-eos", "--max-new-tokens", "6"];
    let out = webtune_ok(&empty);
    let want = tok.decode(&reference_greedy(&w, None, &[40], 6));
    assert_eq!(text(&out.stdout), format!("{want}\n"), "greedy from bos_token_id 40");
    assert!(!text(&out.stderr).contains("note:"), "{}", text(&out.stderr));

    // 30 prompt tokens + 20 new > n_positions 40: 10 new tokens and a note
    let prompt = "abcdefghijklmnopqrstuvwxyz0123";
    let ids = tok.encode(prompt);
    assert_eq!(ids.len(), 30);
    let cut = ["generate", "--model", m, "--prompt", prompt, "--greedy", "--no-stop-at-eos", "--max-new-tokens", "20"];
    let out = webtune_ok(&cut);
    let want = tok.decode(&reference_greedy(&w, None, &ids, NPOS - 30));
    assert_eq!(text(&out.stdout), format!("{want}\n"));
    let notes: Vec<String> = text(&out.stderr).lines().filter(|l| l.starts_with("note: ")).map(String::from).collect();
    assert_eq!(
        notes,
        ["note: the prompt is 30 tokens and the model's n_positions is 40: at most 10 new tokens per sample"],
        "{}",
        text(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// eval

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn f(v: &serde_json::Value) -> f32 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")) as f32
}

#[test]
fn eval_command_equals_the_library_and_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, ad) = tiny();
    let gpu = gpu();
    let (model, adapter) = (fixtures().join("model"), fixtures().join("adapter_init"));
    // token-id data with masked labels
    let recs = masked_records(w.config.vocab_size);
    let data = tmp.path().join("masked.jsonl");
    let lines: Vec<String> = recs
        .iter()
        .map(|r| serde_json::json!({"input_ids": r.input_ids, "labels": r.labels}).to_string())
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let (b, t) = (3, 13);
    let out = webtune_stdout(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--adapter",
        s(&adapter),
        "--batch",
        "3",
        "--seq",
        "13",
        "--json",
    ]);
    let j = json(&out);
    let batches = Batcher::new(TokenStream::new(&recs, w.config.eos_token_id), b, t, false, 0)
        .unwrap()
        .eval_batches();
    let base = run_eval(&gpu, &w, None, &batches, t);
    let tuned = run_eval(&gpu, &w, Some(&ad), &batches, t);
    let (ref_base, counted) = reference_eval(&w, None, &batches, t);
    let (ref_tuned, _) = reference_eval(&w, Some(&ad), &batches, t);
    assert_eq!(j["tokens"].as_u64(), Some(counted as u64));
    assert_eq!(j["seq"].as_u64(), Some(13));
    assert_eq!(
        j["windows"].as_u64(),
        Some(((batches.len() - 1) * b + batches.last().unwrap().tokens.len() / t) as u64)
    );
    assert_close(
        "base loss vs evaluate",
        &[f(&j["base"]["loss"])],
        &[base.loss],
        1e-4,
        0.0,
    );
    assert_close(
        "adapter loss vs evaluate",
        &[f(&j["adapter"]["loss"])],
        &[tuned.loss],
        1e-4,
        0.0,
    );
    assert_close(
        "base loss vs reference",
        &[f(&j["base"]["loss"])],
        &[ref_base as f32],
        1e-4,
        0.0,
    );
    assert_close(
        "adapter loss vs reference",
        &[f(&j["adapter"]["loss"])],
        &[ref_tuned as f32],
        1e-4,
        0.0,
    );
    assert_close(
        "base perplexity",
        &[f(&j["base"]["perplexity"])],
        &[base.perplexity],
        1e-4,
        0.0,
    );
    assert_close(
        "adapter perplexity",
        &[f(&j["adapter"]["perplexity"])],
        &[tuned.perplexity],
        1e-4,
        0.0,
    );
    let diff = f(&j["difference"]["loss"]);
    assert_close("loss difference", &[diff], &[(ref_tuned - ref_base) as f32], 1e-3, 1e-5);
    assert!(diff.abs() > 1e-4, "the non-zero adapter changes the loss: {diff}");

    // text output; no adapter: no adapter line
    let out = webtune_stdout(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--batch",
        "3",
        "--seq",
        "13",
    ]);
    assert!(
        out.contains(&format!("base model:    loss {:.6}", f(&j["base"]["loss"]))),
        "{out}"
    );
    assert!(!out.contains("adapter"), "{out}");
    // without --seq: 128 clipped to n_positions 64
    let j = json(&webtune_stdout(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&fixtures().join("data.jsonl")),
        "--json",
    ]));
    assert_eq!(j["seq"].as_u64(), Some(64));
    assert!(j.get("adapter").is_none());

    // text data through the tokenizer: one token per character, every position counts
    let txt = tmp.path().join("story.txt");
    let story = "Once upon a time, a tiny model read a tiny story.\nThe end.";
    std::fs::write(&txt, story).unwrap();
    let tkdir = tokenizer_dir();
    let args = [
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&txt),
        "--tokenizer",
        s(&tkdir),
        "--seq",
        "7",
        "--json",
    ];
    let j = json(&webtune_stdout(&args));
    let n_windows = (story.len() + 1) / 8; // the text's tokens and EOS, in windows of T + 1 = 8
    assert_eq!(j["tokens"].as_u64(), Some(n_windows as u64 * 7));
    let tok = Tokenizer::load_dir(&tokenizer_dir()).unwrap();
    let recs = vec![Record {
        input_ids: tok.encode(story),
        labels: None,
    }];
    let batches = Batcher::new(TokenStream::new(&recs, 96), 8, 7, false, 0)
        .unwrap()
        .eval_batches();
    let (want, _) = reference_eval(&w, None, &batches, 7);
    assert_close("text eval loss", &[f(&j["base"]["loss"])], &[want as f32], 1e-4, 0.0);
}

#[test]
fn eval_bad_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixtures().join("model");
    let m = s(&model);
    let data = fixtures().join("data.jsonl");
    let d = s(&data);
    let txt = tmp.path().join("t.txt");
    std::fs::write(&txt, "some text").unwrap();
    webtune_err(
        &["eval", "--model", m, "--data", s(&txt)],
        &["t.txt", "no tokenizer", "--tokenizer"],
    );
    webtune_err(
        &["eval", "--model", m, "--data", d, "--seq", "65"],
        &["--seq 65", "n_positions 64"],
    );
    webtune_err(&["eval", "--model", m, "--data", d, "--batch", "0"], &["--batch"]);
    webtune_err(
        &["eval", "--model", m, "--data", s(&tmp.path().join("none.jsonl"))],
        &["none.jsonl"],
    );
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"input_ids\": [1, 2]}\n{\"input_ids\": [1, 300]}\n").unwrap();
    webtune_err(&["eval", "--model", m, "--data", s(&bad)], &["bad.jsonl:2", "300"]);
    let short = tmp.path().join("short.jsonl");
    std::fs::write(&short, "{\"input_ids\": [1, 2]}\n").unwrap();
    webtune_err(
        &["eval", "--model", m, "--data", s(&short), "--seq", "8"],
        &["3 tokens"],
    );
    let other = tmp.path().join("other_adapter");
    adapter_for(&ModelConfig::gpt2(2, 3, 15, 97, 40), 2)
        .save_peft(&other, "")
        .unwrap();
    webtune_err(&["eval", "--model", m, "--data", d, "--adapter", s(&other)], &["shape"]);
}
