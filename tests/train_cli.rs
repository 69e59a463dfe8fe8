//! `webtune train` for everyday use, end to end through the binary: checkpoints and --resume
//! (bit-identical to an uninterrupted run, LoRA and full), Ctrl-C (exit 130, a checkpoint that
//! resumes to the same result, a second Ctrl-C that leaves nothing half-written), text data
//! through the tokenizer (same adapter as the pre-encoded ids), the eval loss (against the CPU
//! reference), schedules, and the errors of the new flags.
mod common;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_close, text, webtune, webtune_ok};
use webtune::data::Tokenizer;
use webtune::model::{Weights, LoraAdapter};
use webtune::train::checkpoint;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

fn model_dir() -> PathBuf {
    fixtures().join("model")
}

fn data_file() -> PathBuf {
    fixtures().join("data.jsonl")
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}


fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|x| x.to_string()).collect()
}

/// `train --model M --data D --out OUT --log-json LOG` + `extra`.
fn train_args(out: &Path, log: &Path, data: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = args(&[
        "train",
        "--model",
        &s(&model_dir()),
        "--data",
        &s(data),
        "--out",
        &s(out),
        "--log-json",
        &s(log),
    ]);
    v.extend(args(extra));
    v
}

/// Lines of a --log-json file as JSON values.
fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The per-step lines ({"step", "loss", "lr", "grad_norm"}) as text, exactly as written.
fn step_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"loss\""))
        .map(String::from)
        .collect()
}

fn eval_lines(path: &Path) -> Vec<(u64, f32)> {
    log_lines(path)
        .iter()
        .filter(|v| v.get("eval_loss").is_some())
        .map(|v| (v["step"].as_u64().unwrap(), v["eval_loss"].as_f64().unwrap() as f32))
        .collect()
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The result file of a run: the adapter's or the full model's safetensors.
fn result_bytes(out: &Path, full: bool) -> Vec<u8> {
    read(&out.join(if full {
        "model.safetensors"
    } else {
        "adapter_model.safetensors"
    }))
}

/// A checkpoint folder holds exactly its four (or five, full: config + weights) files, and its
/// optimizer state has m and v for every trained tensor.
fn check_checkpoint(dir: &Path, full: bool, step: u32) -> checkpoint::TrainerState {
    let model_files = if full {
        ["config.json", "model.safetensors"]
    } else {
        ["adapter_config.json", "adapter_model.safetensors"]
    };
    let mut want: Vec<String> = model_files.iter().map(|x| x.to_string()).collect();
    want.extend(["optimizer.safetensors".to_string(), "trainer_state.json".to_string()]);
    want.sort();
    assert_eq!(file_names(dir), want, "{}", dir.display());
    let state = checkpoint::read_state(dir).unwrap();
    assert_eq!(state.step, step);
    assert_eq!(state.webtune_version, env!("CARGO_PKG_VERSION"));
    let moments = checkpoint::read_moments(dir).unwrap();
    let cfg = Weights::load_dir(&model_dir()).unwrap().config;
    if full {
        let w = Weights::load_dir(dir).unwrap();
        assert_eq!(moments.len(), w.tensors.len(), "one (m, v) per tensor");
        for (name, t) in &w.tensors {
            assert_eq!(moments[name].0.shape, t.shape, "{name}");
        }
    } else {
        let a = LoraAdapter::load_peft(dir, &cfg).unwrap();
        assert_eq!(moments.len(), 2 * a.modules.len(), "one (m, v) per LoRA matrix");
        for m in &a.modules {
            let name = format!("{}.lora_A", m.name());
            assert_eq!(moments[&name].0.shape, m.a.shape, "{name}");
            assert!(
                moments[&name].1.data.iter().any(|&x| x > 0.0),
                "{name}: v is all zero after training"
            );
        }
    }
    state
}

/// The defining resume test: 6 steps in one go vs 3 steps, a checkpoint, then --resume for the
/// rest; shuffled data, a schedule with warmup, gradient accumulation 2. The per-step log lines
/// and the result are bit-identical. `split`: how the first run stops at step 3 —
/// `--stop-after 3` (any schedule), or `--steps 3` with the constant schedule, extended to 6 on
/// resume.
fn resume_matches_uninterrupted(full: bool, schedule: &str, split: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let lr = if full { "1e-3" } else { "5e-3" };
    let mut common = vec![
        "--batch",
        "2",
        "--seq",
        "16",
        "--grad-accum",
        "2",
        "--lr",
        lr,
        "--schedule",
        schedule,
    ];
    common.extend([
        "--warmup",
        "2",
        "--seed",
        "7",
        "--eval-split",
        "0.2",
        "--eval-every",
        "2",
    ]);
    if full {
        common.push("--full");
    }
    let (one, log1) = (t.join("one"), t.join("one.jsonl"));
    let mut a = train_args(&one, &log1, &data_file(), &common);
    a.extend(args(&["--steps", "6"]));
    webtune_ok(&a);

    let (two, log2) = (t.join("two"), t.join("two.jsonl"));
    let mut a = train_args(&two, &log2, &data_file(), &common);
    if split == "stop-after" {
        a.extend(args(&["--steps", "6", "--stop-after", "3", "--save-every", "3"]));
    } else {
        a.extend(args(&["--steps", "3", "--save-every", "3"]));
    }
    let first = webtune_ok(&a);
    assert!(
        text(&first.stderr).contains("saved checkpoint"),
        "{}",
        text(&first.stderr)
    );
    let ck = two.join("checkpoint-3");
    let state = check_checkpoint(&ck, full, 3);
    assert_eq!(state.data_position, 3 * 2 * 2, "3 steps x 2 micro-batches x 2 windows");
    assert!(state.hyperparameters.shuffle && state.hyperparameters.grad_accum == 2);
    assert_eq!(state.schedule.kind, schedule);
    assert_eq!(state.schedule.total, if split == "stop-after" { 6 } else { 3 });
    assert_eq!(
        state.data.fnv1a64,
        checkpoint::hex(checkpoint::fnv1a64(&read(&data_file())))
    );

    // resume: settings come from the checkpoint; the log keeps its lines up to step 3
    let mut a = args(&["train", "--resume", &s(&ck)]);
    if split != "stop-after" {
        a.extend(args(&["--steps", "6"]));
    }
    let resumed = webtune_ok(&a);
    assert!(
        text(&resumed.stderr).contains("resuming at step 3"),
        "{}",
        text(&resumed.stderr)
    );

    let (l1, l2) = (step_lines(&log1), step_lines(&log2));
    assert_eq!(l1.len(), 6);
    assert_eq!(l1, l2, "per-step losses, lrs and grad norms");
    let lrs: Vec<f64> = log_lines(&log1)
        .iter()
        .filter_map(|v| v.get("lr").map(|x| x.as_f64().unwrap()))
        .collect();
    assert_eq!(lrs[0], 0.0, "HF convention: update 1 runs at lr_at(0) = 0 with warmup");
    assert!(
        result_bytes(&one, full) == result_bytes(&two, full),
        "the final result differs"
    );
    // eval after steps 2, 4, 6 in both (the first half of the split run also evaluated at its end, step 3)
    let e1 = eval_lines(&log1);
    assert_eq!(e1.iter().map(|e| e.0).collect::<Vec<_>>(), [2, 4, 6]);
    let e2: Vec<(u64, f32)> = eval_lines(&log2).into_iter().filter(|e| e.0 != 3).collect();
    assert_eq!(e1, e2);
    assert_eq!(
        list(&two),
        ["checkpoint-3", "checkpoint-6"],
        "the resumed run kept --save-every 3 from the checkpoint"
    );
}

/// checkpoint-* folder names in `dir`.
fn list(dir: &Path) -> Vec<String> {
    file_names(dir)
        .into_iter()
        .filter(|n| n.starts_with("checkpoint-"))
        .collect()
}

#[test]
fn lora_resume_is_bit_identical() {
    resume_matches_uninterrupted(false, "cosine", "stop-after");
}

#[test]
fn full_resume_is_bit_identical() {
    resume_matches_uninterrupted(true, "constant", "steps");
}

#[test]
fn checkpoints_keep_the_newest_and_resume_refuses_other_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (out, log) = (t.join("out"), t.join("log.jsonl"));
    let mut a = train_args(
        &out,
        &log,
        &data_file(),
        &["--steps", "5", "--batch", "2", "--seq", "16", "--schedule", "linear"],
    );
    a.extend(args(&[
        "--save-every",
        "1",
        "--keep-checkpoints",
        "2",
        "--min-lr",
        "1e-5",
    ]));
    webtune_ok(&a);
    assert_eq!(list(&out), ["checkpoint-4", "checkpoint-5"]);
    let ck = out.join("checkpoint-4");
    let st = check_checkpoint(&ck, false, 4);
    // HF's convention: update s runs at lr_at(s - 1), so update 5 of 5 runs at λ(4) = 0.2·(1 − r) + r
    assert_close(
        "next lr",
        &[st.schedule.next_lr],
        &[2e-4 * (0.2 * 0.95 + 0.05)],
        1e-6,
        0.0,
    );
    let last = checkpoint::read_state(&out.join("checkpoint-5")).unwrap();
    assert_close("lr after the last step", &[last.schedule.next_lr], &[1e-5], 1e-6, 0.0);
    let before = read(&out.join("adapter_model.safetensors"));

    let fails = |extra: &[&str], want: &[&str]| {
        let mut a = args(&["train", "--resume", &s(&ck)]);
        a.extend(args(extra));
        let r = webtune(&a);
        let stderr = text(&r.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.contains("XDG_RUNTIME_DIR")).collect();
        assert_eq!(r.status.code(), Some(1), "{extra:?}: {stderr}");
        assert_eq!(lines.len(), 1, "{extra:?}: one line: {stderr}");
        assert!(lines[0].starts_with("error: "), "{stderr}");
        for w in want {
            assert!(lines[0].contains(w), "{extra:?}: want '{w}' in: {}", lines[0]);
        }
    };
    fails(&["--lr", "1e-3"], &["--lr 0.001", "checkpoint's 0.0002"]);
    fails(&["--steps", "9"], &["--steps 9", "checkpoint's 5"]);
    fails(&["--batch", "3"], &["--batch 3"]);
    fails(&["--grad-accum", "2"], &["--grad-accum 2"]);
    fails(&["--schedule", "cosine"], &["--schedule"]);
    fails(&["--no-shuffle"], &["--no-shuffle"]);
    fails(&["--full"], &["--full"]);
    fails(&["--lora-rank", "4"], &["--lora-rank 4", "checkpoint's 8"]);
    let other = t.join("other.jsonl");
    std::fs::write(
        &other,
        "{\"input_ids\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]}\n",
    )
    .unwrap();
    fails(&["--data", &s(&other)], &[&s(&other), "not the checkpoint's data"]);
    fails(
        &["--model", &s(&fixtures().join("model_f16"))],
        &["not the checkpoint's base model"],
    );
    // the same weights under another eos_token_id (which ends every record): another model to a run
    let eos_model = t.join("model-eos5");
    std::fs::create_dir(&eos_model).unwrap();
    std::fs::copy(model_dir().join("model.safetensors"), eos_model.join("model.safetensors")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_slice(&read(&model_dir().join("config.json"))).unwrap();
    let eos = cfg["eos_token_id"].as_u64().unwrap();
    cfg["eos_token_id"] = 5.into();
    std::fs::write(eos_model.join("config.json"), cfg.to_string()).unwrap();
    fails(
        &["--model", &s(&eos_model)],
        &[
            &format!("--model {}: not the checkpoint's base model", s(&eos_model)),
            &format!("eos {eos}, model.safetensors 260096 bytes; this one: "),
            "eos 5, model.safetensors 260096 bytes): load that model to resume the run",
        ],
    );
    fails(&["--stop-after", "4"], &["--stop-after 4", "already at step 4"]);
    let r = webtune(&args(&["train", "--resume", &s(&t.join("nope"))]));
    assert_eq!(r.status.code(), Some(1));
    assert!(
        text(&r.stderr).contains("nope") && text(&r.stderr).contains("not a directory"),
        "{}",
        text(&r.stderr)
    );
    let done = out.join("checkpoint-5");
    let r = webtune(&args(&["train", "--resume", &s(&done)]));
    assert_eq!(r.status.code(), Some(1));
    assert!(text(&r.stderr).contains("nothing left to train"), "{}", text(&r.stderr));
    // a refused resume writes nothing
    assert_eq!(list(&out), ["checkpoint-4", "checkpoint-5"]);
    assert!(read(&out.join("adapter_model.safetensors")) == before);
    assert_eq!(step_lines(&log).len(), 5);

    // the output folder stands for its latest checkpoint; the repeated flags that match are fine
    let r = webtune(&args(&["train", "--resume", &s(&out), "--lr", "2e-4", "--steps", "5"]));
    assert!(text(&r.stderr).contains("nothing left to train"), "{}", text(&r.stderr));
}

/// Waits until `path` has at least one line (the run's first readback), at most `secs`.
fn wait_for_log(path: &Path, child: &mut std::process::Child, secs: u64) {
    let t0 = Instant::now();
    while std::fs::read_to_string(path).map_or(true, |s| s.lines().count() == 0) {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("webtune exited early: {st:?}");
        }
        assert!(t0.elapsed() < Duration::from_secs(secs), "no log line after {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigint(pid: u32) {
    let ok = Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
    assert!(ok.success());
}

fn spawn(a: &[String]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_webtune"))
        .args(a)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn ctrl_c_saves_a_checkpoint_that_resumes_to_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // a long run (constant schedule with warmup, so --steps can be shortened on resume)
    let common = [
        "--batch",
        "2",
        "--seq",
        "16",
        "--lr",
        "3e-3",
        "--warmup",
        "3",
        "--grad-accum",
        "2",
        "--seed",
        "5",
    ];
    let (out, log) = (t.join("out"), t.join("log.jsonl"));
    let mut a = train_args(&out, &log, &data_file(), &common);
    a.extend(args(&["--steps", "1000000"]));
    let mut child = spawn(&a);
    wait_for_log(&log, &mut child, 120);
    sigint(child.id());
    let res = child.wait_with_output().unwrap();
    let stderr = text(&res.stderr);
    assert_eq!(res.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let cks = list(&out);
    assert_eq!(cks.len(), 1, "{cks:?}");
    let n: u32 = cks[0].strip_prefix("checkpoint-").unwrap().parse().unwrap();
    assert!((1..1000000).contains(&n));
    assert!(
        stderr.contains(&format!("--resume {}", s(&out.join(&cks[0])))),
        "{stderr}"
    );
    check_checkpoint(&out.join(&cks[0]), false, n);
    assert_eq!(
        step_lines(&log).len(),
        n as usize,
        "every step up to the checkpoint is logged"
    );
    // the output was saved too, and equals the checkpoint's adapter
    assert!(result_bytes(&out, false) == read(&out.join(&cks[0]).join("adapter_model.safetensors")));

    // resume for 2 more steps == an uninterrupted run of n + 2 steps
    let total = (n + 2).to_string();
    webtune_ok(&args(&["train", "--resume", &s(&out.join(&cks[0])), "--steps", &total]));
    let (one, log1) = (t.join("one"), t.join("one.jsonl"));
    let mut a = train_args(&one, &log1, &data_file(), &common);
    a.extend(args(&["--steps", &total]));
    webtune_ok(&a);
    assert_eq!(step_lines(&log), step_lines(&log1));
    assert!(
        result_bytes(&out, false) == result_bytes(&one, false),
        "resumed after Ctrl-C: the adapter differs"
    );
}

/// The second Ctrl-C quits at once, saving nothing. To make "at once" observable, `--log-json` is a
/// FIFO that the test stops reading: once its (4 KiB) pipe is full, webtune blocks writing a step's
/// log line, which it always does before saving anything. The first Ctrl-C is seen (its message is
/// printed) but cannot finish the step; only the second one can end the process there, with exit
/// code 130, before any checkpoint or output exists. A build that ignored the second Ctrl-C stays
/// blocked: the test then drains the FIFO (so the run can save and end) and fails.
#[cfg(target_os = "linux")]
#[test]
fn second_ctrl_c_quits_at_once_without_saving() {
    use std::io::{BufRead, Read};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::{Arc, Mutex};

    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (out, fifo) = (t.join("out"), t.join("log.fifo"));
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let a = train_args(&out, &fifo, &data_file(), &["--steps", "1000000", "--batch", "2", "--seq", "16"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_webtune"))
        .args(&a)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let reader = {
        let (pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        })
    };
    let err_text = || stderr.lock().unwrap().clone();
    // (non-blocking, so a webtune that fails before opening its log does not hang the test)
    let mut log = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
    let fd = log.as_raw_fd();
    let capacity = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, 4096) };
    assert!(capacity >= 4096, "F_SETPIPE_SZ: {capacity}");
    let queued = || {
        let mut n: libc::c_int = 0;
        assert_eq!(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) }, 0);
        n
    };
    let wait = |what: &str, secs: u64, child: &mut std::process::Child, done: &mut dyn FnMut() -> bool| {
        let t0 = Instant::now();
        while !done() {
            if let Some(st) = child.try_wait().unwrap() {
                panic!("webtune exited ({st:?}) while waiting for {what}:\n{}", err_text());
            }
            assert!(t0.elapsed() < Duration::from_secs(secs), "no {what} after {secs} s:\n{}", err_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // the run is training: its first log line arrives; then stop reading until the pipe is full
    let mut first = Vec::new();
    wait("log line", 120, &mut child, &mut || {
        let mut buf = [0u8; 4096];
        if let Ok(n) = log.read(&mut buf) {
            first.extend_from_slice(&buf[..n]);
        }
        first.contains(&b'\n')
    });
    // blocked: a thread of webtune sleeps in the kernel's (anon_)pipe_write (Linux shows it in wchan)
    let pid = child.id();
    let blocked = || {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
        tasks.iter().any(|t| std::fs::read_to_string(t.path().join("wchan")).is_ok_and(|w| w.trim().ends_with("pipe_write")))
    };
    wait("write blocked on the full log pipe", 300, &mut child, &mut || queued() > capacity / 2 && blocked());

    sigint(child.id());
    wait("first Ctrl-C's message", 30, &mut child, &mut || err_text().contains("interrupted: finishing this step"));
    sigint(child.id());
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            // let the run go on, so that it can end, then report what it did
            let mut sink = Vec::new();
            let st = loop {
                let _ = log.read_to_end(&mut sink);
                if let Some(st) = child.try_wait().unwrap() {
                    break st;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            panic!(
                "the second Ctrl-C did not quit: webtune went on after it (exit code {:?}) and left {:?} in --out:\n{}",
                st.code(),
                file_names(&out),
                err_text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().unwrap();
    let stderr = err_text();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted again: quitting without saving"), "{stderr}");
    assert!(!stderr.contains("saved"), "nothing is saved after the second Ctrl-C:\n{stderr}");
    let left: Vec<String> = if out.exists() { file_names(&out) } else { Vec::new() };
    assert!(left.is_empty(), "--out holds {left:?} after the second Ctrl-C");
}

/// A tokenizer for the tiny model (vocab 97): byte-level BPE over lower-case letters, '.', ',',
/// space and newline with a few merges, 35 ids.
fn tiny_tokenizer(dir: &Path) -> Tokenizer {
    std::fs::create_dir_all(dir).unwrap();
    let mut vocab: Vec<String> = "abcdefghijklmnopqrstuvwxyz.,".chars().map(String::from).collect();
    vocab.extend(["Ġ".to_string(), "Ċ".to_string()]);
    let merges = [("t", "h"), ("th", "e"), ("Ġ", "the"), ("i", "n"), ("Ġ", "a")];
    for (a, b) in merges {
        vocab.push(format!("{a}{b}"));
    }
    let map: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::Value::from(i)))
        .collect();
    std::fs::write(dir.join("vocab.json"), serde_json::Value::Object(map).to_string()).unwrap();
    let m: String = merges.iter().map(|(a, b)| format!("{a} {b}\n")).collect();
    std::fs::write(dir.join("merges.txt"), format!("#version: 0.2\n{m}")).unwrap();
    Tokenizer::load_dir(dir).unwrap()
}

#[test]
fn text_data_trains_like_its_token_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let tok_dir = t.join("tok");
    let tok = tiny_tokenizer(&tok_dir);
    let story = "the cat sat on the mat. then the dog ate a bone,\nand ran in the park.\n".repeat(4);
    let txt = t.join("story.txt");
    std::fs::write(&txt, &story).unwrap();
    let ids = tok.encode(&story);
    assert!(ids.len() > 100 && ids.iter().all(|&i| i < 35), "{}", ids.len());
    let ids_file = t.join("story.jsonl");
    std::fs::write(&ids_file, serde_json::json!({ "input_ids": ids }).to_string()).unwrap();
    // prompt/completion: the loss is on the completion only, as {"input_ids", "labels"} with -100
    let pc = t.join("pc.jsonl");
    let pc_ids = t.join("pc_ids.jsonl");
    let (mut pc_text, mut pc_tok) = (String::new(), String::new());
    for (p, c) in [
        ("the question is ", "an answer."),
        ("in the park ", "the dog ran."),
        ("a cat ", "sat on a mat."),
    ] {
        pc_text.push_str(&format!("{}\n", serde_json::json!({"prompt": p, "completion": c})));
        let (pi, ci) = (tok.encode(p), tok.encode(c));
        let labels: Vec<i64> = pi.iter().map(|_| -100).chain(ci.iter().map(|&x| x as i64)).collect();
        let input: Vec<u32> = pi.iter().chain(&ci).copied().collect();
        pc_tok.push_str(&format!(
            "{}\n",
            serde_json::json!({"input_ids": input, "labels": labels})
        ));
    }
    std::fs::write(&pc, pc_text.repeat(3)).unwrap();
    std::fs::write(&pc_ids, pc_tok.repeat(3)).unwrap();

    let run = |name: &str, data: &Path, with_tok: bool| {
        let (out, log) = (t.join(name), t.join(format!("{name}.jsonl")));
        let mut a = train_args(
            &out,
            &log,
            data,
            &["--steps", "3", "--batch", "2", "--seq", "16", "--lr", "1e-2"],
        );
        if with_tok {
            a.extend(args(&["--tokenizer", &s(&tok_dir)]));
        }
        webtune_ok(&a);
        (result_bytes(&out, false), step_lines(&log))
    };
    assert!(
        run("txt", &txt, true) == run("ids", &ids_file, false),
        ".txt vs its token ids"
    );
    assert!(
        run("pc", &pc, true) == run("pc_ids", &pc_ids, false),
        "prompt/completion vs ids + labels"
    );

    // text without a tokenizer: one error naming the folder looked in, nothing written
    let out = t.join("never");
    let r = webtune(&train_args(
        &out,
        &t.join("x.jsonl"),
        &txt,
        &["--steps", "1", "--batch", "2", "--seq", "16"],
    ));
    let stderr = text(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("needs a tokenizer") && stderr.contains(&s(&model_dir())) && stderr.contains("--tokenizer"),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// Mean cross-entropy over the counted targets of `windows` (tokens, targets), on the CPU.
fn reference_eval_loss(model: &Path, adapter: &Path, windows: &[(Vec<u32>, Vec<i32>)], t: usize) -> f32 {
    let w = Weights::load_dir(model).unwrap();
    let a = LoraAdapter::load_peft(adapter, &w.config).unwrap();
    let tokens: Vec<u32> = windows.iter().flat_map(|w| w.0.clone()).collect();
    let logits = webtune::reference::gpt2::forward_logits(&w, Some(&a), &tokens, windows.len(), t);
    let v = w.config.vocab_size;
    let (mut sum, mut n) = (0.0f64, 0usize);
    for (i, y) in windows.iter().flat_map(|w| w.1.clone()).enumerate() {
        if y < 0 {
            continue;
        }
        let row = &logits[i * v..(i + 1) * v];
        let max = row.iter().fold(f32::MIN, |m, &x| m.max(x)) as f64;
        let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        sum += lse - row[y as usize] as f64;
        n += 1;
    }
    (sum / n as f64) as f32
}

#[test]
fn eval_loss_is_the_mean_over_counted_positions() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // held-out records with masked labels; 5 windows of 8 + 1 tokens, so batch 2 leaves a short last batch
    let eval = t.join("eval.jsonl");
    let mut lines = String::new();
    let mut stream: Vec<(u32, i32)> = Vec::new();
    for r in 0..3u32 {
        let ids: Vec<u32> = (0..14).map(|i| (r * 31 + i * 7) % 96).collect();
        let labels: Vec<i32> = ids
            .iter()
            .enumerate()
            .map(|(i, &x)| if i % 3 == 0 { -100 } else { x as i32 })
            .collect();
        lines.push_str(&format!(
            "{}\n",
            serde_json::json!({"input_ids": ids, "labels": labels})
        ));
        stream.extend(ids.iter().zip(&labels).map(|(&a, &b)| (a, b)));
        stream.push((96, 96)); // EOS, always counted
    }
    std::fs::write(&eval, lines).unwrap();
    let seq = 8;
    let windows: Vec<(Vec<u32>, Vec<i32>)> = stream
        .chunks_exact(seq + 1)
        .map(|w| {
            (
                w[..seq].iter().map(|p| p.0).collect(),
                w[1..].iter().map(|p| p.1).collect(),
            )
        })
        .collect();
    assert_eq!(windows.len(), 5);

    let (out, log) = (t.join("out"), t.join("log.jsonl"));
    let a = train_args(
        &out,
        &log,
        &data_file(),
        &[
            "--steps",
            "4",
            "--batch",
            "2",
            "--seq",
            "8",
            "--lr",
            "1e-2",
            "--eval-data",
            &s(&eval),
            "--eval-every",
            "3",
        ],
    );
    let r = webtune_ok(&a);
    assert!(text(&r.stderr).contains("eval loss"), "{}", text(&r.stderr));
    let evals = eval_lines(&log);
    assert_eq!(
        evals.iter().map(|e| e.0).collect::<Vec<_>>(),
        [3, 4],
        "every 3 steps and at the end"
    );
    let want = reference_eval_loss(&model_dir(), &out, &windows, seq);
    assert_close("eval loss at the end", &[evals[1].1], &[want], 1e-4, 1e-5);
    assert_ne!(evals[0].1, evals[1].1);

    // the held-out split: the eval loss is logged, and --eval-every without eval data is refused
    let (out2, log2) = (t.join("out2"), t.join("log2.jsonl"));
    webtune_ok(&train_args(
        &out2,
        &log2,
        &data_file(),
        &["--steps", "2", "--batch", "2", "--seq", "16", "--eval-split", "0.3"],
    ));
    assert_eq!(eval_lines(&log2).iter().map(|e| e.0).collect::<Vec<_>>(), [2]);
    let never = t.join("never");
    let init = s(&fixtures().join("adapter_init"));
    for (extra, want, code) in [
        (
            vec!["--init-adapter", init.as_str(), "--lora-rank", "8"],
            "--lora-rank disagrees with --init-adapter's 4",
            1,
        ),
        (vec!["--eval-every", "2"], "--eval-every needs held-out data", 1),
        (vec!["--eval-split", "1.5"], "--eval-split 1.5", 1),
        (
            vec!["--eval-split", "0.3", "--eval-data", "x.jsonl"],
            "cannot be used with",
            2,
        ),
        (vec!["--min-lr", "1"], "--min-lr 1", 1),
        (vec!["--grad-accum", "0"], "--grad-accum", 1),
        (vec!["--schedule", "exp"], "exp", 2),
        (vec!["--save-every", "0"], "--save-every", 1),
    ] {
        let mut e = vec!["--steps", "2", "--batch", "2", "--seq", "16"];
        e.extend(extra.iter().copied());
        let r = webtune(&train_args(&never, &t.join("n.jsonl"), &data_file(), &e));
        let stderr = text(&r.stderr);
        assert_eq!(r.status.code(), Some(code), "{extra:?}: {stderr}");
        assert!(stderr.contains(want), "{extra:?}: want '{want}': {stderr}");
        assert!(!never.exists(), "{extra:?}: --out was created");
    }
}

/// Without a terminal, progress goes to stderr as a plain line every `--log-every` steps (10 by
/// default) and after the last step, with that step's loss, lr and grad norm (as --log-json has
/// them); a summary line ends the run. `--keep-checkpoints 0` keeps every checkpoint.
#[test]
fn progress_lines_follow_log_every_and_a_summary_ends_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // "step     2/5  loss 4.5723  lr 1.000e-2  grad_norm 0.289  238 tok/s  ETA 0s" -> (step, loss, lr, norm)
    let progress = |stderr: &str, total: u32| -> Vec<(u32, f32, f32, f32)> {
        stderr
            .lines()
            .filter(|l| l.starts_with("step ") && l.contains("  loss "))
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                assert_eq!((w[2], w[4], w[6]), ("loss", "lr", "grad_norm"), "{l}");
                let (step, of) = w[1].split_once('/').unwrap();
                assert_eq!(of, total.to_string(), "{l}");
                (step.parse().unwrap(), w[3].parse().unwrap(), w[5].parse().unwrap(), w[7].parse().unwrap())
            })
            .collect()
    };
    for (steps, every, want) in [(5u32, Some("2"), vec![2u32, 4, 5]), (12, None, vec![10, 12])] {
        let (out, log) = (t.join(format!("out{steps}")), t.join(format!("log{steps}.jsonl")));
        let mut extra = vec!["--steps".to_string(), steps.to_string()];
        extra.extend(args(&["--batch", "2", "--seq", "16", "--lr", "1e-2", "--save-every", "1", "--keep-checkpoints", "0"]));
        if let Some(n) = every {
            extra.extend(args(&["--log-every", n]));
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let r = webtune_ok(&train_args(&out, &log, &data_file(), &extra));
        let stderr = text(&r.stderr);
        let lines = progress(&stderr, steps);
        assert_eq!(lines.iter().map(|l| l.0).collect::<Vec<_>>(), want, "progress lines with --log-every {every:?}:\n{stderr}");
        let logged: Vec<serde_json::Value> = log_lines(&log).into_iter().filter(|v| v.get("loss").is_some()).collect();
        for (step, loss, lr, norm) in &lines {
            let v = &logged[*step as usize - 1];
            let f = |k: &str| v[k].as_f64().unwrap() as f32;
            assert!((loss - f("loss")).abs() <= 5e-5, "step {step}: loss {loss} vs the log's {}", f("loss"));
            assert!((lr - f("lr")).abs() <= 5e-4 * f("lr"), "step {step}: lr {lr} vs the log's {}", f("lr"));
            assert!((norm - f("grad_norm")).abs() <= 5e-4, "step {step}: grad_norm {norm} vs the log's {}", f("grad_norm"));
        }
        let summary = stderr.lines().rfind(|l| !l.contains("XDG_RUNTIME_DIR")).unwrap();
        let last = logged.last().unwrap()["loss"].as_f64().unwrap() as f32;
        let want_start = format!("done: {steps} steps in ");
        let want_end = format!(
            "last loss {last:.4}; saved the LoRA adapter (adapter_config.json, adapter_model.safetensors) to {}",
            out.display()
        );
        assert!(summary.starts_with(&want_start) && summary.ends_with(&want_end), "summary line: {summary}");
        // --keep-checkpoints 0: all of them
        let want: Vec<String> = (1..=steps).map(|s| format!("checkpoint-{s}")).collect();
        let mut got = list(&out);
        got.sort_by_key(|n| n["checkpoint-".len()..].parse::<u32>().unwrap());
        assert_eq!(got, want);
    }
}
