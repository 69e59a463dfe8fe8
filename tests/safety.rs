//! A hostile user's inputs and faults (issue 9), one test per class, each with its exact message
//! and a check of what was kept: (1) no command writes onto or into its inputs, and an output
//! folder holds one run's results; (2) SIGTERM and SIGHUP stop a run like Ctrl-C, with its work
//! saved and the signal in the exit code; (3) sizes from user input end in an error, not an
//! abort; (4) NaN, infinity or nothing is never passed off as a result; (5) messages point at
//! what the user typed, and the graphics stack's stray lines stay out of the output.
mod common;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use webtune::model::{ModelConfig, Weights, LoraAdapter};
use webtune::train::checkpoint;

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// `webtune args` with `env` set (None = removed).
fn run_env(args: &[String], env: &[(&str, Option<&str>)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_webtune"));
    c.args(args);
    for (k, v) in env {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.output().unwrap()
}

/// Requires exit 1 and a stderr of exactly `error: <want>`: nothing else is printed.
fn refused_env(args: &[String], env: &[(&str, Option<&str>)], want: &str) {
    let out = run_env(args, env);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "webtune {args:?}: want exit 1:\n{stderr}");
    assert_eq!(stderr, format!("error: {want}\n"), "webtune {args:?}");
}

fn refused(args: &[String], want: &str) {
    refused_env(args, &[], want)
}

/// Like [`refused`] for a command that failed after it started working: its progress lines come
/// first, then the error as the last line (and the only `error:` line).
fn failed_after_progress(args: &[String], want: &str) {
    let out = run_env(args, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "webtune {args:?}: want exit 1:\n{stderr}");
    assert_eq!(stderr.lines().last(), Some(format!("error: {want}").as_str()), "webtune {args:?}");
    assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|x| x.to_string()).collect()
}

/// Every file under `dir` (or the file itself) with its bytes, to show that nothing changed.
fn snapshot(p: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    if p.is_file() {
        return vec![(p.to_path_buf(), std::fs::read(p).unwrap())];
    }
    let mut v = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        v.extend(snapshot(&e.unwrap().path()));
    }
    v.sort();
    v
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// A copy of the tiny fixture model and its data in `t` (the tests' inputs, never the repository's).
fn inputs(t: &Path) -> (PathBuf, PathBuf) {
    let (m, d) = (t.join("model"), t.join("data.jsonl"));
    copy_dir(&tiny_fixtures().join("model"), &m);
    std::fs::copy(tiny_fixtures().join("data.jsonl"), &d).unwrap();
    (m, d)
}

/// `webtune train` of the tiny model: batch 2 x 16 tokens, 2 steps unless `extra` says otherwise.
fn train(m: &Path, d: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = args(&["train", "--model", &s(m), "--data", &s(d), "--out", &s(out), "--batch", "2", "--seq", "16"]);
    if !extra.contains(&"--steps") {
        a.extend(args(&["--steps", "2"]));
    }
    a.extend(args(extra));
    a
}

// ---------------------------------------------------------------------------------------
// (1) Inputs are never written; an output folder holds one run's results.

#[test]
fn log_json_onto_or_into_an_input_is_refused_and_the_input_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (m, d) = inputs(t);
    let before = (snapshot(&m), snapshot(&d));
    let out = t.join("out");
    refused(
        &train(&m, &d, &out, &["--log-json", &s(&d)]),
        &format!("--log-json {} is the --data file {}: webtune never writes onto its inputs; give another file", s(&d), s(&d)),
    );
    #[cfg(unix)]
    {
        // a hard link is the same file under another name
        let hard = t.join("hard.jsonl");
        std::fs::hard_link(&d, &hard).unwrap();
        refused(
            &train(&m, &d, &out, &["--log-json", &s(&hard)]),
            &format!("--log-json {} is the --data file {}: webtune never writes onto its inputs; give another file", s(&hard), s(&d)),
        );
    }
    let weights = m.join("model.safetensors");
    refused(
        &train(&m, &d, &out, &["--log-json", &s(&weights)]),
        &format!(
            "--log-json {} is inside the --model folder {}: webtune never writes into its inputs; give a file outside it",
            s(&weights),
            s(&m)
        ),
    );
    assert!(!out.exists());
    assert!((snapshot(&m), snapshot(&d)) == before, "an input changed");
}

#[test]
fn out_onto_or_into_an_input_is_refused_and_the_input_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (m, d) = inputs(t);
    let a = t.join("adapter");
    copy_dir(&tiny_fixtures().join("adapter_init"), &a);
    let before = (snapshot(&m), snapshot(&a));
    let is = |flag: &str, out: &Path, what: &str, input: &Path| {
        format!("{flag} {} is the {what} {}: webtune never writes into its inputs; give another folder", s(out), s(input))
    };
    // a full run into its base model, a LoRA run into it (through a link), a run into its adapter
    refused(&train(&m, &d, &m, &["--full"]), &is("--out", &m, "--model folder", &m));
    #[cfg(unix)]
    {
        let link = t.join("link");
        std::os::unix::fs::symlink(&m, &link).unwrap();
        refused(&train(&link, &d, &m, &[]), &is("--out", &m, "--model folder", &link));
    }
    refused(&train(&m, &d, &a, &["--init-adapter", &s(&a)]), &is("--out", &a, "--init-adapter folder", &a));
    let sub = m.join("adapter");
    refused(
        &train(&m, &d, &sub, &[]),
        &format!(
            "--out {} is inside the --model folder {}: webtune never writes into its inputs; give a folder outside it",
            s(&sub),
            s(&m)
        ),
    );
    // merge: neither into the model nor into the adapter
    let merge = |out: &Path| args(&["merge", "--model", &s(&m), "--adapter", &s(&a), "--out", &s(out)]);
    refused(&merge(&a), &is("--out", &a, "--adapter folder", &a));
    refused(&merge(&m), &is("--out", &m, "--model folder", &m));
    assert!(!sub.exists());
    assert!((snapshot(&m), snapshot(&a)) == before, "an input changed");
}

#[test]
fn a_second_run_into_an_output_needs_overwrite_which_clears_the_old_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (m, d) = inputs(t);
    let out = t.join("out");
    webtune_ok(&train(&m, &d, &out, &["--steps", "4", "--save-every", "2", "--seed", "1"]));
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let first = snapshot(&out);
    let second = train(&m, &d, &out, &["--save-every", "2", "--seed", "2"]);
    refused(
        &second,
        &format!(
            "--out {} is not empty (it holds adapter_config.json, adapter_model.safetensors, checkpoint-2 and 2 more): \
             a run writes into a new or empty folder (or, resuming, its own); give another folder, or add --overwrite \
             to replace webtune's results there (checkpoints included)",
            s(&out)
        ),
    );
    assert!(snapshot(&out) == first, "a refused run changed --out");

    // --overwrite would delete a checkpoint another input lives in: refused
    let ck2 = out.join("checkpoint-2");
    refused(
        &train(&m, &d, &out, &["--overwrite", "--init-adapter", &s(&ck2)]),
        &format!(
            "--overwrite would delete {}, which holds the --init-adapter folder {}: give another --out",
            s(&ck2),
            s(&ck2)
        ),
    );
    // --out the resumed checkpoint itself: refused
    refused(
        &args(&["train", "--resume", &s(&ck2), "--out", &s(&ck2)]),
        &format!("--out {} is the --resume checkpoint {}: webtune never writes into its inputs; give another folder", s(&ck2), s(&ck2)),
    );

    // with --overwrite: the first run's results and all its checkpoints go, the user's file stays,
    // and --resume finds the second run's state
    let r = webtune_ok(&[second.clone(), args(&["--overwrite"])].concat());
    let stderr = text(&r.stderr);
    let removed = format!(
        "--overwrite: removed adapter_config.json, adapter_model.safetensors, checkpoint-2, checkpoint-4 from {}\n",
        s(&out)
    );
    assert!(stderr.starts_with(&removed), "{stderr}");
    assert_eq!(names(&out), ["adapter_config.json", "adapter_model.safetensors", "checkpoint-2", "notes.txt"]);
    let latest = checkpoint::locate(&out).unwrap();
    assert_eq!(latest, out.join("checkpoint-2"));
    assert_eq!(checkpoint::read_state(&latest).unwrap().hyperparameters.seed, 2);

    // resuming into the run's own folder needs no --overwrite (constant schedule: --steps may grow)
    webtune_ok(&args(&["train", "--resume", &s(&latest), "--steps", "3"]));
    assert_eq!(names(&out), ["adapter_config.json", "adapter_model.safetensors", "checkpoint-2", "notes.txt"]);
}

#[test]
fn an_existing_log_file_needs_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (m, d) = inputs(t);
    let log = t.join("log.jsonl");
    std::fs::write(&log, "precious").unwrap();
    let a = train(&m, &d, &t.join("out"), &["--log-json", &s(&log)]);
    refused(
        &a,
        &format!(
            "--log-json {} exists (8 bytes): give a new file (a run's log is never written over another file), or add \
             --overwrite to replace it",
            s(&log)
        ),
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "precious");
    assert!(!t.join("out").exists());
    webtune_ok(&[a, args(&["--overwrite"])].concat());
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().map(|v| v["step"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2]);
}

// ---------------------------------------------------------------------------------------
// (2) Signals.

/// A process id that is certainly gone (a child that exited and was reaped).
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

#[cfg(unix)]
#[test]
fn sigterm_and_sighup_save_like_ctrl_c_and_exit_with_the_signals_code() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (m, d) = inputs(t);
    for (sig, code, name) in [("TERM", 143, "SIGTERM"), ("HUP", 129, "SIGHUP")] {
        let (out, log) = (t.join(format!("out-{sig}")), t.join(format!("{sig}.jsonl")));
        let a = train(&m, &d, &out, &["--steps", "1000000", "--log-json", &s(&log), "--log-every", "1"]);
        let mut child = Command::new(env!("CARGO_BIN_EXE_webtune"))
            .args(&a)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while std::fs::read_to_string(&log).map_or(true, |l| l.lines().count() == 0) {
            assert!(child.try_wait().unwrap().is_none(), "webtune exited early");
            assert!(t0.elapsed() < Duration::from_secs(120), "no step after 120 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status().unwrap().success());
        let res = child.wait_with_output().unwrap();
        let stderr = text(&res.stderr);
        assert_eq!(res.status.code(), Some(code), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "interrupted by {name}: finishing this step, then saving a checkpoint and the output (a second signal quits at once)"
            )),
            "{stderr}"
        );
        let cks = checkpoint::list_checkpoints(&out);
        assert_eq!(cks.len(), 1, "{stderr}");
        let (step, dir) = &cks[0];
        assert!(stderr.contains(&format!("interrupted by {name}: ")), "{stderr}");
        assert!(stderr.contains(&format!("at step {step} of 1000000; continue with: webtune train --resume {}", s(dir))), "{stderr}");
        // the output is the checkpoint's adapter
        assert_eq!(
            std::fs::read(out.join("adapter_model.safetensors")).unwrap(),
            std::fs::read(dir.join("adapter_model.safetensors")).unwrap()
        );
        if sig == "TERM" {
            // what a killed run left (a half-built checkpoint, a half-written file) goes at the next
            // start; a live process's temporary folder is not touched
            let dead = dead_pid();
            std::fs::create_dir(out.join(format!(".checkpoint-99.tmp{dead}"))).unwrap();
            std::fs::write(out.join(format!(".adapter_model.safetensors.tmp{dead}")), "half").unwrap();
            let live = out.join(format!(".checkpoint-98.tmp{}", std::process::id()));
            std::fs::create_dir(&live).unwrap();
            let more = (step + 1).to_string();
            webtune_ok(&args(&["train", "--resume", &s(dir), "--steps", &more]));
            let left: Vec<String> = names(&out).into_iter().filter(|n| n.starts_with('.')).collect();
            assert_eq!(left, [format!(".checkpoint-98.tmp{}", std::process::id())]);
        }
    }
}

// ---------------------------------------------------------------------------------------
// (3) Sizes from user input: an error that says what was asked and what the machine has.

/// Caps what webtune believes the machine has, so the messages are exact on any machine.
const CAP: (&str, Option<&str>) = ("WEBTUNE_MAX_MEMORY", Some("1G"));

#[test]
fn absurd_sizes_are_errors_not_aborts() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (m, d) = inputs(t);
    let out = t.join("out");
    refused_env(
        &train(&m, &d, &out, &["--lora-rank", "100000000000"]),
        &[CAP],
        "--lora-rank 100000000000: the adapter (153600000000000 values) needs 558.8 TiB of memory, but this machine has \
         1.0 GiB available",
    );
    assert!(!out.exists());

    // pretrain far beyond the machine
    let text = t.join("story.txt");
    std::fs::write(&text, "a story about the sea and a whale. ".repeat(40)).unwrap();
    let tok = tiny_fixtures().join("tokenizer");
    let cfg = ModelConfig::gpt2(4, 1, 1_000_000, 97, 128);
    let n = webtune::model::weights::param_count(&cfg).unwrap();
    let big = args(&[
        "pretrain", "--tokenizer", &s(&tok), "--data", &s(&text), "--out", &s(&out), "--embd", "1000000", "--heads", "1",
        "--eval-fraction", "0",
    ]);
    refused_env(
        &big,
        &[CAP],
        &format!(
            "--layers 4 --embd 1000000 --positions 128 (vocab 97): the model ({n} parameters) needs {} of memory, but this \
             machine has 1.0 GiB available",
            webtune::memory::human(4 * n as u64)
        ),
    );
    assert!(!out.exists());

    // a matmul far beyond the GPU's buffers
    let gpu = gpu();
    let limit = gpu.limits.max_storage_buffer_binding_size.min(gpu.limits.max_buffer_size);
    failed_after_progress(
        &args(&["bench", "--what", "matmul", "--sizes", "100000"]),
        &format!("matmul 100000x100000x100000: A [m, k] needs 40000000000 bytes but this GPU allows at most {limit} bytes per storage binding"),
    );

    // a 64 MiB "word" (no whitespace: BPE works on it whole) in a text file; the file is read in
    // chunks, and the word's working memory is asked for before it is allocated
    let blob = t.join("blob.txt");
    std::fs::File::create(&blob).unwrap().set_len(64 << 20).unwrap();
    refused_env(
        &args(&["eval", "--model", &s(&m), "--tokenizer", &s(&tok), "--data", &s(&blob)]),
        &[CAP],
        &format!(
            "{}: encoding a word of 67108864 bytes (text without whitespace) needs 9.0 GiB of memory, but this machine has \
             1.0 GiB available",
            s(&blob)
        ),
    );
}

// ---------------------------------------------------------------------------------------
// (4) NaN, infinity or nothing is never passed off as a result.

/// Writes `value` at `index` of tensor `name` in the safetensors file `path` (f32).
fn poke(path: &Path, name: &str, index: usize, value: f32) {
    let mut bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize + 8 + n + 4 * index;
    bytes[start..start + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

const REFUSED: &str = "webtune refuses weights that are not finite (a corrupt file, or one saved from a run that diverged)";

#[test]
fn non_finite_tensors_are_refused_at_load_naming_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (m, d) = inputs(t);
    let tok = tiny_fixtures().join("tokenizer");
    // a model with a NaN: eval and generate refuse it
    let bad = t.join("bad");
    copy_dir(&m, &bad);
    let wfile = bad.join("model.safetensors");
    poke(&wfile, "transformer.h.1.mlp.c_fc.weight", 17, f32::NAN);
    let msg = format!(
        "{}: tensor 'transformer.h.1.mlp.c_fc.weight' holds NaN (element 17; 1 of its 9216 values are NaN or infinite): {REFUSED}",
        s(&wfile)
    );
    refused(&args(&["eval", "--model", &s(&bad), "--data", &s(&d)]), &msg);
    refused(&args(&["generate", "--model", &s(&bad), "--tokenizer", &s(&tok), "--prompt", "hi"]), &msg);

    // an adapter with an infinity: generate and merge refuse it
    let cfg = Weights::load_dir(&m).unwrap().config;
    let mut ad = random_adapter(&cfg, 4, 1, 0.1);
    ad.modules[0].b.data[3] = f32::INFINITY;
    let a = t.join("adapter");
    ad.save_peft(&a, "").unwrap();
    let afile = a.join("adapter_model.safetensors");
    let msg = format!(
        "{}: tensor 'base_model.model.transformer.h.0.attn.c_attn.lora_B.weight' holds inf (element 3; 1 of its 576 values \
         are NaN or infinite): {REFUSED}",
        s(&afile)
    );
    refused(&args(&["generate", "--model", &s(&m), "--adapter", &s(&a), "--tokenizer", &s(&tok), "--prompt", "hi"]), &msg);
    let out = t.join("merged");
    refused(&args(&["merge", "--model", &s(&m), "--adapter", &s(&a), "--out", &s(&out)]), &msg);
    assert!(!out.exists());

    // a checkpoint whose optimizer state holds a NaN: --resume refuses it
    let run = t.join("run");
    webtune_ok(&train(&m, &d, &run, &["--steps", "4", "--stop-after", "2"]));
    let ck = run.join("checkpoint-2");
    let opt = ck.join("optimizer.safetensors");
    poke(&opt, "h.0.attn.c_attn.lora_A.exp_avg", 0, f32::NAN);
    refused(
        &args(&["train", "--resume", &s(&ck)]),
        &format!(
            "{}: tensor 'h.0.attn.c_attn.lora_A.exp_avg' holds NaN (element 0; 1 of its 384 values are NaN or infinite): {REFUSED}",
            s(&opt)
        ),
    );
}

#[test]
fn a_merge_that_overflows_and_a_run_that_diverges_write_no_result() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (m, d) = inputs(t);
    // finite but huge: W + scale·(B·A)ᵀ overflows f32 in every element of every adapted weight
    let cfg = Weights::load_dir(&m).unwrap().config;
    let mut ad: LoraAdapter = random_adapter(&cfg, 4, 1, 0.1);
    for md in &mut ad.modules {
        md.a.data.iter_mut().for_each(|x| *x = 1.0);
        md.b.data.iter_mut().for_each(|x| *x = 3e38);
    }
    let a = t.join("huge");
    ad.save_peft(&a, "").unwrap();
    let out = t.join("merged");
    refused(
        &args(&["merge", "--model", &s(&m), "--adapter", &s(&a), "--out", &s(&out)]),
        &format!(
            "merging {} into {} gives inf in tensor 'h.0.attn.c_attn.weight' (6912 of 6912 values are NaN or infinite): \
             the adapter's update overflows f32; nothing was written",
            s(&a),
            s(&m)
        ),
    );
    assert!(!out.exists());

    // a learning rate that blows the run up: it stops at the first non-finite loss, keeps the last
    // checkpoint, and writes no adapter
    let run = t.join("run");
    failed_after_progress(
        &train(&m, &d, &run, &["--steps", "6", "--lr", "1e30", "--grad-clip", "0", "--save-every", "1"]),
        &format!(
            "step 2: the loss is NaN (diverged); try a smaller --lr; the output was not written, and the last checkpoint, \
             {} (step 1), is kept",
            s(&run.join("checkpoint-1"))
        ),
    );
    assert_eq!(names(&run), ["checkpoint-1"]);
}

/// A tokenizer.json of byte-level BPE with `vocab` and no merges, in a new folder `dir`.
fn tokenizer_with(dir: &Path, vocab: serde_json::Value) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let json = serde_json::json!({
        "version": "1.0", "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null, "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": vocab, "merges": []}
    });
    std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
    dir.join("tokenizer.json")
}

#[test]
fn a_tokenizer_that_gives_nothing_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (m, _) = inputs(t);
    let text = t.join("text.jsonl");
    std::fs::write(&text, "{\"text\": \"\"}\n{\"text\": \"xyz\"}\n").unwrap();
    let out = t.join("out");
    // no vocabulary at all
    let empty = t.join("empty");
    let file = tokenizer_with(&empty, serde_json::json!({}));
    refused(
        &train(&m, &text, &out, &["--tokenizer", &s(&empty)]),
        &format!(
            "{}: text data needs a tokenizer: {}: the vocabulary is empty: this tokenizer has no tokens to encode text with",
            s(&text),
            s(&file)
        ),
    );
    // a vocabulary without the text's bytes: non-empty text would train on EOS tokens only
    let partial = t.join("partial");
    tokenizer_with(&partial, serde_json::json!({"a": 0, "b": 1}));
    refused(
        &train(&m, &text, &out, &["--tokenizer", &s(&partial)]),
        &format!(
            "{}:2: \"text\" is 3 bytes of text but the tokenizer {} encodes it to no tokens (does its vocabulary cover this text?)",
            s(&text),
            s(&std::path::absolute(&partial).unwrap())
        ),
    );
    refused(
        &args(&["generate", "--model", &s(&m), "--tokenizer", &s(&partial), "--prompt", "xyz"]),
        "the prompt is 3 bytes of text but the tokenizer encodes it to no tokens (does its vocabulary cover this text?)",
    );
    assert!(!out.exists());
}

// ---------------------------------------------------------------------------------------
// (5) Messages.

#[test]
fn without_xdg_runtime_dir_stderr_holds_only_webtunes_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, d) = inputs(tmp.path());
    let unset = [("XDG_RUNTIME_DIR", None)];
    let info = run_env(&args(&["info"]), &unset);
    assert!(info.status.success());
    assert_eq!(text(&info.stderr), "", "webtune info");
    let eval = run_env(&args(&["eval", "--model", &s(&m), "--data", &s(&d), "--json"]), &unset);
    assert!(eval.status.success(), "{}", text(&eval.stderr));
    assert_eq!(text(&eval.stderr), "", "webtune eval");
    let v: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert!(v["base"]["loss"].as_f64().unwrap().is_finite());
    // a failing command: exactly its one error line
    refused_env(
        &args(&["eval", "--model", &s(&m), "--data", &s(&tmp.path().join("missing.jsonl"))]),
        &unset,
        &format!("{}: No such file or directory (os error 2)", s(&tmp.path().join("missing.jsonl"))),
    );
}

#[test]
fn max_new_tokens_at_the_top_of_its_range_is_cut_to_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, _) = inputs(tmp.path());
    let tok = tiny_fixtures().join("tokenizer");
    let r = webtune_ok(&args(&[
        "generate", "--model", &s(&m), "--tokenizer", &s(&tok), "--prompt", "ab ", "--greedy",
        "--max-new-tokens", "18446744073709551615", "--no-stop-at-eos",
    ]));
    assert_eq!(
        text(&r.stderr),
        "note: the prompt is 3 tokens and the model's n_positions is 64: at most 61 new tokens per sample\n"
    );
}
