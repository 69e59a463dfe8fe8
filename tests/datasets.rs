//! Text datasets (.txt, .jsonl text / prompt+completion / token ids) and their errors, the
//! held-out split, evaluation batches, and gradient accumulation in the trainer (GPU, against
//! plain batches of the same windows on the fixture model in tests/fixtures/tiny).
mod common;
use std::path::{Path, PathBuf};

use common::*;
use webtune::data::batch::eval_loss;
use webtune::data::records::{parse_dataset, parse_jsonl, read_dataset, split_eval, Record};
use webtune::data::{Batcher, TokenStream};
use webtune::gpu::Gpu;
use webtune::model::ModelGpu;
use webtune::model::Trainable;
use webtune::model::{Weights, LoraAdapter};
use webtune::train::{AdamWConfig, StepLog, TrainConfig, Trainer};

/// A stand-in tokenizer: one token per byte.
fn bytes(s: &str) -> Vec<u32> {
    s.bytes().map(u32::from).collect()
}

/// A tokenizer that starts every call with token 1, to see where encode calls begin.
fn marked(s: &str) -> Vec<u32> {
    std::iter::once(1).chain(s.bytes().map(u32::from)).collect()
}

fn parse(text: &str, name: &str) -> Result<Vec<Record>, String> {
    parse_dataset(text.as_bytes(), name, 256, &bytes).map_err(|e| e.to_string())
}

fn err(text: &str, name: &str) -> String {
    parse(text, name).unwrap_err()
}

#[test]
fn txt_is_one_record() {
    let r = parse("\u{feff}ab\nc\n", "notes.TXT").unwrap();
    assert_eq!(r, vec![Record { input_ids: bytes("ab\nc\n"), labels: None }], "BOM dropped, everything else kept");
    for empty in ["", "  \n\n"] {
        let e = err(empty, "d.txt");
        assert!(e.starts_with("d.txt: ") && e.contains("empty"), "{e}");
    }
    let e = parse_dataset("hi".as_bytes(), "d.txt", 97, &bytes).unwrap_err().to_string();
    assert!(e.starts_with("d.txt: ") && e.contains("token id 104") && e.contains("vocab_size is 97"), "{e}");
    let e = err("a,b\n", "d.csv");
    assert!(e.contains("d.csv") && e.contains(".txt") && e.contains(".jsonl"), "{e}");
    let e = parse_dataset(b"ok\nstill ok\nbad \xff here", "d.txt", 256, &bytes).unwrap_err().to_string();
    assert!(e.starts_with("d.txt:3: not valid UTF-8 (byte offset 16"), "{e}");
}

#[test]
fn jsonl_text_records() {
    let r = parse("{\"text\": \"ab\"}\r\n\n{\"text\": \"\", \"meta\": 3}\n  \n{\"text\": \"c\"}", "d.jsonl").unwrap();
    let want = |s: &str| Record { input_ids: bytes(s), labels: None };
    assert_eq!(r, vec![want("ab"), want(""), want("c")], "blank lines skipped, CRLF ok, other fields ignored");
}

#[test]
fn prompt_completion_trains_on_the_completion_only() {
    let text = "{\"prompt\": \"Q\", \"completion\": \"AB\"}\n{\"prompt\": \"\", \"completion\": \"C\"}\n";
    let r = parse_dataset(text.as_bytes(), "d.jsonl", 256, &marked).unwrap();
    // encoded separately: each part starts with the marker token 1
    assert_eq!(r[0].input_ids, vec![1, b'Q' as u32, 1, b'A' as u32, b'B' as u32]);
    assert_eq!(r[0].labels, Some(vec![-100, -100, 1, b'A' as i32, b'B' as i32]));
    assert_eq!(r[1].input_ids, vec![1, 1, b'C' as u32]);
    assert_eq!(r[1].labels, Some(vec![-100, 1, b'C' as i32]));

    // through the stream: prompt tokens are never targets; completion tokens and the EOS are
    let r = parse("{\"prompt\": \"pq\", \"completion\": \"xy\"}", "d.jsonl").unwrap();
    let s = TokenStream::new(&r, 0);
    let b = Batcher::new(s, 1, 4, false, 0).unwrap().next_batch();
    assert_eq!(b.tokens, vec![b'p' as u32, b'q' as u32, b'x' as u32, b'y' as u32]);
    assert_eq!(b.targets, vec![-100, b'x' as i32, b'y' as i32, 0]);
    assert_eq!(b.counted(), 3);

    let e = err("{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\", \"completion\": \"\"}\n", "d.jsonl");
    assert!(e.starts_with("d.jsonl:2: ") && e.contains("\"completion\" encodes to no tokens"), "{e}");
    let e = err("{\"prompt\": \"a\"}", "d.jsonl");
    assert!(e.starts_with("d.jsonl:1: missing field \"completion\""), "{e}");
    let e = err("{\"completion\": \"a\"}", "d.jsonl");
    assert!(e.starts_with("d.jsonl:1: missing field \"prompt\""), "{e}");
    let e = err("{\"prompt\": [1], \"completion\": \"a\"}", "d.jsonl");
    // a list prompt is the conversational (chat) form: its items must be messages
    assert!(e.starts_with("d.jsonl:1: \"prompt\"[0] must be an object"), "{e}");
    let e = err("{\"prompt\": \"a\", \"completion\": [1]}", "d.jsonl");
    assert!(e.starts_with("d.jsonl:1: \"completion\" must be a string, not an array"), "{e}");
}

#[test]
fn jsonl_token_ids_through_parse_dataset() {
    let r = parse("{\"input_ids\": [5, 6], \"labels\": [-100, 6]}\n{\"input_ids\": [7]}", "d.jsonl").unwrap();
    assert_eq!(r[0], Record { input_ids: vec![5, 6], labels: Some(vec![-100, 6]) });
    assert_eq!(r[1], Record { input_ids: vec![7], labels: None });
    let e = parse_dataset(b"{\"input_ids\": [5]}\n{\"input_ids\": [97]}", "d.jsonl", 97, &bytes).unwrap_err();
    let e = e.to_string();
    assert!(e.starts_with("d.jsonl:2: ") && e.contains("token id 97") && e.contains("vocab_size is 97"), "{e}");
    // the token-id-only parser keeps its behaviour
    let e = parse_jsonl("{\"text\": \"hi\"}\n", "d.jsonl", 97).unwrap_err().to_string();
    assert!(e.contains("missing field \"input_ids\""), "{e}");
    assert_eq!(parse_jsonl("{\"input_ids\": [3]}", "d.jsonl", 97).unwrap()[0].input_ids, vec![3]);
}

#[test]
fn jsonl_errors_name_file_and_line() {
    let cases: &[(&str, &str)] = &[
        ("{\"text\": \"a\"}\n\n{\"prompt\": \"a\", \"completion\": \"b\"}", "d.jsonl:3: this record is {\"prompt\", \"completion\"} but the file's records are {\"text\"} (line 1)"),
        ("{\"input_ids\": [1]}\n{\"text\": \"a\"}", "d.jsonl:2: this record is {\"text\"} but the file's records are {\"input_ids\"} (line 1)"),
        ("{\"text\": \"a\"}\n{\"txt\": \"b\"}", "d.jsonl:2: missing field \"text\""),
        ("{\"txt\": \"b\"}", "d.jsonl:1: expected a record with \"text\", with \"prompt\" and \"completion\", with \"messages\", or with \"input_ids\""),
        ("{\"text\": \"a\"}\n{\"text\": 5}", "d.jsonl:2: \"text\" must be a string, not a number"),
        ("{\"text\": \"a\"}\n{\"text\": \"b\"", "d.jsonl:2: invalid JSON"),
        ("[\"a\"]", "d.jsonl:1: expected a JSON object, found an array"),
        ("\n \n", "d.jsonl: the dataset is empty"),
        ("{\"input_ids\": [1, 2.5]}", "d.jsonl:1: input_ids[1] = 2.5 is not a non-negative integer"),
        ("{\"input_ids\": [1, 2], \"labels\": [1]}", "d.jsonl:1: \"labels\" has 1 entries but \"input_ids\" has 2"),
    ];
    for (text, want) in cases {
        let e = err(text, "d.jsonl");
        assert!(e.starts_with(want), "{text:?}:\n  got  {e}\n  want {want}...");
    }
    // a tokenizer id beyond the model's vocabulary, on line 2
    let e = parse_dataset(b"{\"text\": \"A\"}\n{\"text\": \"a\"}", "d.jsonl", 97, &bytes).unwrap_err().to_string();
    assert!(e.starts_with("d.jsonl:2: the tokenizer gave token id 97 for \"text\"") && e.contains("vocab_size is 97"), "{e}");
    let e = parse_dataset(b"{\"text\": \"a\"}\n{\"text\": \"\xc3(\"}", "d.jsonl", 256, &bytes).unwrap_err().to_string();
    assert!(e.starts_with("d.jsonl:2: not valid UTF-8 (byte offset 24 in the file)"), "{e}");
}

#[test]
fn read_dataset_reads_files_and_names_them() {
    let dir = std::env::temp_dir().join(format!("webtune-datasets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("train.jsonl");
    std::fs::write(&p, "{\"text\": \"hi\"}\n").unwrap();
    assert_eq!(read_dataset(&p, 256, &bytes).unwrap(), vec![Record { input_ids: bytes("hi"), labels: None }]);
    let missing = dir.join("nope.txt");
    let e = read_dataset(&missing, 256, &bytes).unwrap_err().to_string();
    assert!(e.starts_with(&missing.display().to_string()), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn numbered(n: usize) -> Vec<Record> {
    (0..n).map(|i| Record { input_ids: vec![i as u32; i + 1], labels: None }).collect()
}

#[test]
fn split_eval_holds_out_whole_records() {
    let recs = numbered(10);
    let (train, eval) = split_eval(recs.clone(), 0.2, 7).unwrap();
    assert_eq!((train.len(), eval.len()), (8, 2));
    let id = |r: &Record| r.input_ids[0];
    let (ti, ei): (Vec<u32>, Vec<u32>) = (train.iter().map(id).collect(), eval.iter().map(id).collect());
    assert!(ti.windows(2).all(|w| w[0] < w[1]) && ei.windows(2).all(|w| w[0] < w[1]), "file order kept");
    let mut all: Vec<u32> = ti.iter().chain(&ei).copied().collect();
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<u32>>(), "a partition of the records");
    for r in train.iter().chain(&eval) {
        assert_eq!(r, &recs[id(r) as usize], "records are whole");
    }
    assert_eq!(split_eval(recs.clone(), 0.2, 7).unwrap().1, eval, "seeded");
    let others: Vec<Vec<Record>> = (0..8).map(|s| split_eval(recs.clone(), 0.2, s).unwrap().1).collect();
    assert!(others.iter().any(|o| o != &eval), "the seed changes the choice");
    // at least one record in each part
    assert_eq!(split_eval(numbered(3), 0.01, 0).unwrap().1.len(), 1);
    assert_eq!(split_eval(numbered(3), 0.99, 0).unwrap().0.len(), 1);
    assert_eq!(split_eval(numbered(2), 0.5, 0).unwrap().1.len(), 1);
    let e = split_eval(numbered(1), 0.1, 0).unwrap_err().to_string();
    assert!(e.contains("at least 2 records") && e.contains("has 1"), "{e}");
    for bad in [0.0, 1.0, -0.5, f32::NAN] {
        let e = split_eval(numbered(5), bad, 0).unwrap_err().to_string();
        assert!(e.contains("between 0 and 1"), "{e}");
    }
}

#[test]
fn eval_batches_cover_every_window_once_in_order() {
    // stream: 0 0 0 99 1 1 99 2 2 2 2 99 + 3 3 99 -> 15 tokens, T = 2 -> 5 windows, 0 left over
    let recs = vec![
        Record { input_ids: vec![0; 3], labels: None },
        Record { input_ids: vec![1; 2], labels: None },
        Record { input_ids: vec![2; 4], labels: Some(vec![-100, -100, 2, 2]) },
        Record { input_ids: vec![3; 2], labels: None },
    ];
    let stream = TokenStream::new(&recs, 99);
    let mut bt = Batcher::new(stream.clone(), 2, 2, true, 5).unwrap();
    assert_eq!(bt.n_windows, 5);
    bt.next_batch();
    let eval = bt.eval_batches();
    assert_eq!(bt.position, 2, "eval does not move the training position");
    assert_eq!(eval.len(), 3);
    assert_eq!(eval.iter().map(|b| b.tokens.len()).collect::<Vec<_>>(), vec![4, 4, 2], "last batch holds B' = 1");
    let tokens: Vec<u32> = eval.iter().flat_map(|b| b.tokens.clone()).collect();
    let targets: Vec<i32> = eval.iter().flat_map(|b| b.targets.clone()).collect();
    let (mut want_tokens, mut want_targets) = (Vec::new(), Vec::new());
    for w in 0..5 {
        want_tokens.extend_from_slice(&stream.tokens[w * 3..w * 3 + 2]);
        want_targets.extend_from_slice(&stream.labels[w * 3 + 1..w * 3 + 3]);
    }
    assert_eq!(tokens, want_tokens, "file order even when training shuffles");
    assert_eq!(targets, want_targets);
    assert_eq!(eval[1].targets, vec![-100, -100, 2, 99]); // windows 2 and 3
    // B divides the windows: all batches full
    let b5 = Batcher::new(stream, 5, 2, false, 0).unwrap().eval_batches();
    assert_eq!(b5.len(), 1);
    assert_eq!(b5[0].tokens, want_tokens);

    // eval loss weights each batch by its counted positions
    assert_eq!(eval_loss(&[(2.0, 1), (1.0, 3)]), Some(1.25));
    assert_eq!(eval_loss(&[(5.0, 0)]), None);
    assert_eq!(eval_loss(&[]), None);
}

// ---- gradient accumulation (GPU) ----

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

const T: usize = 16;

fn fixture() -> (Gpu, Weights, LoraAdapter, Vec<Record>) {
    let gpu = gpu();
    let w = Weights::load_dir(&dir().join("model")).unwrap();
    let adapter = LoraAdapter::load_peft(&dir().join("adapter_init"), &w.config).unwrap();
    let bytes = std::fs::read(dir().join("data.jsonl")).unwrap();
    let recs = parse_dataset(&bytes, "data.jsonl", w.config.vocab_size, &|_| vec![]).unwrap();
    (gpu, w, adapter, recs)
}

/// eps 1e-6 rather than 1e-8: the key part of c_attn.bias has an exactly zero gradient (softmax
/// ignores a shift shared by all keys), so what the GPU computes for it is rounding noise
/// (~1e-11) that depends on the summation order, which differs between B = 2 and 2 x B = 1; with
/// eps 1e-8 AdamW would turn that noise into ~1e-5 steps and the value comparison below would
/// measure rounding instead of accumulation.
fn adamw() -> AdamWConfig {
    AdamWConfig { lr: 1e-2, weight_decay: 0.01, grad_clip: 1.0, eps: 1e-6, ..AdamWConfig::default() }
}

/// Trains `steps` steps of `grad_accum` micro-batches of `b` windows (file order); returns the
/// logs, the last step's gradients and the trained tensors' values.
#[allow(clippy::type_complexity)]
fn train(
    gpu: &Gpu,
    w: &Weights,
    adapter: Option<&LoraAdapter>,
    recs: &[Record],
    b: usize,
    grad_accum: usize,
    steps: usize,
) -> (Vec<StepLog>, Vec<(String, Vec<f32>)>, Vec<(String, Vec<f32>)>) {
    let mode = if adapter.is_some() { Trainable::Lora } else { Trainable::Full };
    let model = ModelGpu::new(gpu, w, adapter, mode).unwrap();
    let batcher = Batcher::new(TokenStream::new(recs, w.config.eos_token_id), b, T, false, 0).unwrap();
    let mut cfg = TrainConfig::new(b, T, adamw());
    cfg.grad_accum = grad_accum;
    cfg.readback_every = 3;
    let mut trainer = Trainer::new(gpu, model, batcher, cfg).unwrap();
    let mut logs = Vec::new();
    for _ in 0..steps {
        logs.extend(pollster::block_on(trainer.step(gpu, adamw().lr)).unwrap());
    }
    logs.extend(pollster::block_on(trainer.flush(gpu)).unwrap());
    assert_eq!(trainer.batcher.position, (steps * b * grad_accum) as u64);
    let read = |t: &webtune::gpu::Tensor| gpu.read_blocking(t).unwrap();
    let trained = trainer.model.trained();
    let grads = trained.iter().map(|p| (p.name.clone(), read(p.grad.as_ref().unwrap()))).collect();
    let values = trained.iter().map(|p| (p.name.clone(), read(&p.value))).collect();
    (logs, grads, values)
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

fn compare(what: &str, got: &[(String, Vec<f32>)], want: &[(String, Vec<f32>)], rtol: f32, atol_rel: f32) {
    assert_eq!(got.len(), want.len());
    for ((gn, g), (wn, w)) in got.iter().zip(want) {
        assert_eq!(gn, wn);
        assert_close(&format!("{what} {gn}"), g, w, rtol, atol_rel * max_abs(w));
    }
}

/// Same counted positions per micro-batch (no masks): grad_accum 2 × B 1 is B 2.
#[test]
fn grad_accum_matches_a_bigger_batch() {
    let (gpu, w, adapter, recs) = fixture();
    for adapter in [Some(&adapter), None] {
        let (logs_a, grads_a, values_a) = train(&gpu, &w, adapter, &recs, 1, 2, 2);
        let (logs_b, grads_b, values_b) = train(&gpu, &w, adapter, &recs, 2, 1, 2);
        assert_eq!(logs_a.iter().map(|l| l.step).collect::<Vec<_>>(), vec![1, 2]);
        let f = |l: &[StepLog], g: fn(&StepLog) -> f32| l.iter().map(g).collect::<Vec<f32>>();
        assert_close("loss", &f(&logs_a, |l| l.loss), &f(&logs_b, |l| l.loss), 1e-5, 0.0);
        assert_close("grad norm", &f(&logs_a, |l| l.grad_norm), &f(&logs_b, |l| l.grad_norm), 1e-5, 0.0);
        compare("step-2 gradient", &grads_a, &grads_b, 1e-5, 1e-5);
        for ((n, a), (_, b)) in values_a.iter().zip(&values_b) {
            assert_close(&format!("after 2 steps {n}"), a, b, 0.0, 1e-5);
        }
        // and it is not the same as one micro-batch
        let (logs_c, ..) = train(&gpu, &w, adapter, &recs, 1, 1, 1);
        assert!((logs_c[0].loss - logs_a[0].loss).abs() > 1e-3, "{} vs {}", logs_c[0].loss, logs_a[0].loss);
    }
}

/// Unequal counted positions: the step's gradient is the mean of the micro-batch gradients
/// (each a mean over its own counted positions) and the logged loss the mean of their losses.
#[test]
fn grad_accum_is_the_mean_of_micro_batch_means() {
    let (gpu, w, adapter, mut recs) = fixture();
    // window 0 = stream[0..17]: mask 9 of its 16 targets; window 1 counts all 16
    recs[0].labels = Some((0..recs[0].input_ids.len()).map(|i| if i < 10 { -100 } else { recs[0].input_ids[i] as i32 }).collect());
    let stream = TokenStream::new(&recs, w.config.eos_token_id);
    let mut bt = Batcher::new(stream, 1, T, false, 0).unwrap();
    let (b0, b1) = (bt.next_batch(), bt.next_batch());
    assert_eq!((b0.counted(), b1.counted()), (7, 16));

    let model = ModelGpu::new(&gpu, &w, Some(&adapter), Trainable::Lora).unwrap();
    let acts = model.activations(&gpu, 1, T, true, 1 << 20).unwrap();
    let prog = model.gradient_program(&gpu, &acts);
    let mut micro = Vec::new();
    for b in [&b0, &b1] {
        acts.io().write_batch(&gpu, &b.tokens, &b.targets);
        prog.run(&gpu);
        let loss = gpu.read_blocking(&acts.io().loss).unwrap()[0];
        let grads: Vec<Vec<f32>> = model.trained().iter().map(|p| gpu.read_blocking(p.grad.as_ref().unwrap()).unwrap()).collect();
        micro.push((loss, grads));
    }
    let want_loss = (micro[0].0 + micro[1].0) / 2.0;
    let want_grads: Vec<(String, Vec<f32>)> = model
        .trained()
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.clone(), micro[0].1[i].iter().zip(&micro[1].1[i]).map(|(a, b)| (a + b) / 2.0).collect()))
        .collect();

    let (logs, grads, _) = train(&gpu, &w, Some(&adapter), &recs, 1, 2, 1);
    assert_close("loss", &[logs[0].loss], &[want_loss], 1e-5, 0.0);
    compare("gradient", &grads, &want_grads, 1e-5, 1e-5);
    // not the pooled mean over the 23 positions of both windows
    let pooled = (micro[0].0 * 7.0 + micro[1].0 * 16.0) / 23.0;
    assert!((logs[0].loss - pooled).abs() > 1e-3, "{} vs pooled {pooled}", logs[0].loss);
}

#[test]
fn grad_accum_zero_is_an_error() {
    let (gpu, w, adapter, recs) = fixture();
    let model = ModelGpu::new(&gpu, &w, Some(&adapter), Trainable::Lora).unwrap();
    let batcher = Batcher::new(TokenStream::new(&recs, w.config.eos_token_id), 1, T, false, 0).unwrap();
    let mut cfg = TrainConfig::new(1, T, adamw());
    cfg.grad_accum = 0;
    let e = Trainer::new(&gpu, model, batcher, cfg).err().unwrap().to_string();
    assert!(e.contains("at least 1"), "{e}");
}
