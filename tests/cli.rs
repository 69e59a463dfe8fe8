//! The `webtune` binary end to end: `train` against the PyTorch + PEFT fixtures (LoRA and
//! full), a fresh seeded LoRA run (reproducible, PEFT files only), every bad input ending in
//! one `error:` line with nothing written to --out, and `info`.
mod common;
use std::path::{Path, PathBuf};

use common::{assert_close, expected, text, tiny_fixtures, webtune, webtune_ok, Expected};
use webtune::model::{ModelConfig, Weights, LoraAdapter};

fn fixtures() -> PathBuf {
    tiny_fixtures()
}

fn model_dir() -> PathBuf {
    fixtures().join("model")
}

fn data_file() -> PathBuf {
    fixtures().join("data.jsonl")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The training flags recorded for `section` ("lora" or "full").
fn optimizer_args(ex: &Expected, section: &str) -> Vec<String> {
    {
        let o = &ex.json[section]["optimizer"];
        let f = |v: &serde_json::Value| v.as_f64().unwrap().to_string();
        vec![
            format!("--lr={}", f(&o["lr"])),
            format!("--weight-decay={}", f(&o["weight_decay"])),
            format!("--beta1={}", f(&o["betas"][0])),
            format!("--beta2={}", f(&o["betas"][1])),
            format!("--eps={}", f(&o["eps"])),
            format!("--grad-clip={}", f(&ex.json[section]["clip_grad_norm"])),
        ]
    }
}

/// (step, loss, lr, grad_norm) per line of a --log-json file.
fn read_log(path: &Path) -> Vec<(u64, f32, f32, f32)> {
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("log line lacks {k}: {v}")) as f32;
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                v["step"].as_u64().unwrap(),
                f(&v, "loss"),
                f(&v, "lr"),
                f(&v, "grad_norm"),
            )
        })
        .collect()
}

/// `webtune train` on the fixture's three batches with the recorded hyperparameters of `section`
/// ("lora", "full", "lora_wd", "full_wd", "lora_r5"; `extra` flags added); returns the output folder
/// (inside `tmp`) after checking the logged losses, lrs and grad norms.
fn train_like_fixture(tmp: &Path, ex: &Expected, section: &str, extra: &[&str]) -> PathBuf {
    let out = tmp.join("out");
    let log = tmp.join("log.jsonl");
    let mut args: Vec<String> = [
        "train",
        "--model",
        s(&model_dir()),
        "--data",
        s(&data_file()),
        "--out",
        s(&out),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    if section.starts_with("full") {
        args.push("--full".into());
    } else {
        let init = if section == "lora_r5" { "adapter_r5" } else { "adapter_init" };
        args.extend(["--init-adapter".to_string(), s(&fixtures().join(init)).to_string()]);
    }
    let steps = ex.json[section]["steps"].as_u64().unwrap().to_string();
    let (b, t) = (ex.json["B"].to_string(), ex.json["T"].to_string());
    for a in ["--steps", &steps, "--batch", &b, "--seq", &t, "--no-shuffle", "--log-json", s(&log)] {
        args.push(a.into());
    }
    args.extend(optimizer_args(ex, section));
    args.extend(extra.iter().map(|a| a.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    webtune_ok(&argv);

    let logs = read_log(&log);
    let want_steps: Vec<u64> = (1..=ex.floats(&format!("{section}.losses")).len() as u64).collect();
    assert_eq!(logs.iter().map(|l| l.0).collect::<Vec<_>>(), want_steps, "logged steps");
    let lr = ex.json[section]["optimizer"]["lr"].as_f64().unwrap() as f32;
    for l in &logs {
        assert_eq!(l.2, lr, "logged lr at step {} (constant schedule)", l.0);
    }
    let loss: Vec<f32> = logs.iter().map(|l| l.1).collect();
    let norm: Vec<f32> = logs.iter().map(|l| l.3).collect();
    assert_close("logged losses", &loss, &ex.floats(&format!("{section}.losses")), 1e-4, 0.0);
    assert_close("logged grad norms", &norm, &ex.floats(&format!("{section}.grad_norms")), 1e-4, 0.0);
    out
}

/// The output of a LoRA fixture run against PEFT's adapter after the same steps.
fn check_lora_output(out: &Path, ex: &Expected, section: &str) -> LoraAdapter {
    assert_eq!(file_names(out), ["adapter_config.json", "adapter_model.safetensors"]);
    let adapter = LoraAdapter::load_peft(out, &tiny_config()).unwrap();
    let prefix = format!("{section}.step3.");
    assert_eq!(2 * adapter.modules.len(), ex.tensors.keys().filter(|k| k.starts_with(&prefix)).count());
    for m in &adapter.modules {
        for (ab, t) in [("lora_A", &m.a), ("lora_B", &m.b)] {
            let key = format!("{prefix}base_model.model.transformer.{}.{ab}.weight", m.name());
            assert_close(&key, &t.data, ex.get(&key), 0.0, 1e-4);
        }
    }
    adapter
}

/// The output of a full fixture run against PyTorch's weights after the same steps.
fn check_full_output(out: &Path, ex: &Expected, section: &str) {
    assert_eq!(file_names(out), ["config.json", "model.safetensors"]);
    let w = Weights::load_dir(out).unwrap();
    // The fields webtune uses survive the round trip (the raw JSON gains dtype float32 etc.).
    let shape = |c: &ModelConfig| ModelConfig { raw: serde_json::Value::Null, ..c.clone() };
    assert_eq!(shape(&w.config), shape(&tiny_config()));
    let prefix = format!("{section}.step3.");
    assert_eq!(w.tensors.len(), ex.tensors.keys().filter(|k| k.starts_with(&prefix)).count());
    for (name, t) in &w.tensors {
        let key = format!("{prefix}{name}");
        assert_close(&key, &t.data, ex.get(&key), 0.0, 1e-4);
    }
}

fn tiny_config() -> ModelConfig {
    let path = model_dir().join("config.json");
    ModelConfig::from_json(&std::fs::read_to_string(&path).unwrap(), s(&path)).unwrap()
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
fn lora_train_matches_peft() {
    let tmp = tempfile::tempdir().unwrap();
    let ex = expected();
    let out = train_like_fixture(tmp.path(), &ex, "lora", &[]);
    let adapter = check_lora_output(&out, &ex, "lora");
    assert_eq!((adapter.config.r, adapter.config.alpha), (4, 8.0), "rank and alpha come from --init-adapter");
    assert_eq!(adapter.modules.len(), 8, "4 linears x 2 layers");
}

#[test]
fn full_train_matches_pytorch() {
    let tmp = tempfile::tempdir().unwrap();
    let ex = expected();
    let out = train_like_fixture(tmp.path(), &ex, "full", &[]);
    check_full_output(&out, &ex, "full");
}

/// Weight decay 1.0 at lr 1e-2 (and betas 0.8 / 0.95, eps 1e-6 through their flags), where the decay
/// alone moves the weights by far more than the 1e-4 tolerance (the fixture records how far).
#[test]
fn weight_decay_train_matches_pytorch() {
    let ex = expected();
    for section in ["lora_wd", "full_wd"] {
        let effect = ex.json[section]["decay_effect"].as_f64().unwrap();
        assert!(effect > 1e-2, "{section}: the decay moves the weights by only {effect}");
        let tmp = tempfile::tempdir().unwrap();
        let out = train_like_fixture(tmp.path(), &ex, section, &[]);
        if section == "full_wd" {
            check_full_output(&out, &ex, section);
        } else {
            check_lora_output(&out, &ex, section);
        }
    }
}

/// alpha / r = 3 / 5 on attn.c_proj and c_fc (the LoRA flags repeat adapter_r5's shape, which the
/// command checks), against PEFT.
#[test]
fn lora_alpha_3_rank_5_on_two_targets_matches_peft() {
    let tmp = tempfile::tempdir().unwrap();
    let ex = expected();
    let flags = ["--lora-rank", "5", "--lora-alpha", "3", "--lora-targets", "attn.c_proj,c_fc"];
    let out = train_like_fixture(tmp.path(), &ex, "lora_r5", &flags);
    let adapter = check_lora_output(&out, &ex, "lora_r5");
    assert_eq!((adapter.config.r, adapter.config.alpha), (5, 3.0));
    assert_eq!(adapter.config.targets, ["attn.c_proj", "c_fc"]);
    let names: Vec<String> = adapter.modules.iter().map(|m| m.name()).collect();
    assert_eq!(names, ["h.0.attn.c_proj", "h.0.mlp.c_fc", "h.1.attn.c_proj", "h.1.mlp.c_fc"]);
}

/// `steps` LoRA training steps of the CPU reference from `adapter` (AdamW lr `lr`, betas 0.9 / 0.999,
/// eps 1e-8, no decay, clipping at 1.0; batches of 2 x 16 in file order): (losses, grad norms, adapter).
fn reference_lora_steps(mut ad: LoraAdapter, steps: usize, lr: f32) -> (Vec<f32>, Vec<f32>, LoraAdapter) {
    use webtune::data::{records, Batcher, TokenStream};
    use webtune::reference::{gpt2 as reference, ops};
    let w = Weights::load_dir(&model_dir()).unwrap();
    let recs = records::read_jsonl(&data_file(), w.config.vocab_size).unwrap();
    let mut batcher = Batcher::new(TokenStream::new(&recs, w.config.eos_token_id), 2, 16, false, 0).unwrap();
    let h = ops::AdamW { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
    let mut moments: Vec<[Vec<f32>; 4]> = ad
        .modules
        .iter()
        .map(|m| [vec![0.0; m.a.data.len()], vec![0.0; m.a.data.len()], vec![0.0; m.b.data.len()], vec![0.0; m.b.data.len()]])
        .collect();
    let (mut losses, mut norms) = (Vec::new(), Vec::new());
    for step in 1..=steps as u32 {
        let batch = batcher.next_batch();
        let (loss, g) = reference::loss_and_grads(&w, Some(&ad), &batch.tokens, &batch.targets, 2, 16);
        let grads: Vec<&(Vec<f32>, Vec<f32>)> = ad.modules.iter().map(|m| &g.lora[&m.name()]).collect();
        let all: Vec<&[f32]> = grads.iter().flat_map(|(da, db)| [da.as_slice(), db.as_slice()]).collect();
        let norm = ops::grad_norm(&all);
        let clip = ops::clip_coef(norm, 1.0);
        for ((m, (da, db)), [ma, va, mb, vb]) in ad.modules.iter_mut().zip(grads).zip(moments.iter_mut()) {
            let scaled = |g: &[f32]| g.iter().map(|x| x * clip).collect::<Vec<f32>>();
            ops::adamw_step(&mut m.a.data, &scaled(da), ma, va, step, h);
            ops::adamw_step(&mut m.b.data, &scaled(db), mb, vb, step, h);
        }
        losses.push(loss);
        norms.push(norm);
    }
    (losses, norms, ad)
}

/// A fresh adapter from the LoRA flags (alpha / r = 3 / 5 on attn.c_proj and c_fc, seeded init, B = 0)
/// trained 4 steps through `webtune train`, against the CPU reference's training from the same init.
#[test]
fn lora_flags_shape_a_fresh_adapter_that_trains_like_the_reference() {
    use webtune::model::LoraConfig;
    let tmp = tempfile::tempdir().unwrap();
    let (out, log) = (tmp.path().join("out"), tmp.path().join("log.jsonl"));
    let (model, data) = (model_dir(), data_file());
    let flags = ["--lora-rank", "5", "--lora-alpha", "3", "--lora-targets", "attn.c_proj,c_fc", "--seed", "4"];
    let mut args = vec!["train", "--model", s(&model), "--data", s(&data), "--out", s(&out), "--log-json", s(&log)];
    args.extend(["--steps", "4", "--batch", "2", "--seq", "16", "--lr", "1e-2", "--no-shuffle"]);
    args.extend(flags);
    webtune_ok(&args);
    let got = LoraAdapter::load_peft(&out, &tiny_config()).unwrap();
    assert_eq!((got.config.r, got.config.alpha), (5, 3.0));
    assert_eq!(got.config.targets, ["attn.c_proj", "c_fc"]);
    let names: Vec<String> = got.modules.iter().map(|m| m.name()).collect();
    assert_eq!(names, ["h.0.attn.c_proj", "h.0.mlp.c_fc", "h.1.attn.c_proj", "h.1.mlp.c_fc"]);

    // the README's init: A ~ U(-1/sqrt(in), 1/sqrt(in)) from the seed, B = 0
    let targets = vec!["attn.c_proj".to_string(), "c_fc".to_string()];
    let init = LoraAdapter::init(LoraConfig::new(5, 3.0, targets, 0.0, webtune::model::Family::Gpt2).unwrap(), &tiny_config(), 4);
    for m in &init.modules {
        let bound = 1.0 / (m.a.shape[1] as f32).sqrt();
        assert!(m.a.data.iter().all(|x| x.abs() <= bound) && m.b.data.iter().all(|&x| x == 0.0));
    }
    let (losses, norms, want) = reference_lora_steps(init, 4, 1e-2);
    let logs = read_log(&log);
    let loss: Vec<f32> = logs.iter().map(|l| l.1).collect();
    let norm: Vec<f32> = logs.iter().map(|l| l.3).collect();
    assert_close("losses vs the reference", &loss, &losses, 1e-4, 0.0);
    assert_close("grad norms vs the reference", &norm, &norms, 1e-4, 0.0);
    for (g, w) in got.modules.iter().zip(&want.modules) {
        assert_close(&format!("{} A", g.name()), &g.a.data, &w.a.data, 0.0, 1e-4);
        assert_close(&format!("{} B", g.name()), &g.b.data, &w.b.data, 0.0, 1e-4);
    }
    // the scale shows: after a step B is non-zero, and from then on the loss depends on alpha / r
    assert!(want.modules.iter().all(|m| m.b.data.iter().any(|&x| x != 0.0)));
}

/// A fresh adapter (no --init-adapter, default rank/alpha/targets), 4 shuffled steps.
fn fresh_lora(tmp: &Path, name: &str, seed: &str) -> (Vec<u8>, Vec<u8>) {
    let out = tmp.join(name);
    let log = tmp.join(format!("{name}.jsonl"));
    let (model, data) = (model_dir(), data_file());
    webtune_ok(&[
        "train",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--steps",
        "4",
        "--batch",
        "2",
        "--seq",
        "16",
        "--lr",
        "1e-2",
        "--seed",
        seed,
        "--log-json",
        s(&log),
    ]);
    assert_eq!(
        file_names(&out),
        ["adapter_config.json", "adapter_model.safetensors"],
        "{name}: exactly PEFT's files"
    );
    let logs = read_log(&log);
    assert_eq!(logs.iter().map(|l| l.0).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert!(logs.iter().all(|l| l.1.is_finite() && l.3.is_finite()), "{logs:?}");
    let adapter = LoraAdapter::load_peft(&out, &tiny_config()).unwrap();
    assert_eq!((adapter.config.r, adapter.config.alpha), (8, 16.0));
    assert_eq!(adapter.config.targets, ["c_attn", "c_fc", "c_proj"]);
    assert_eq!(adapter.modules.len(), 8);
    // Trained: B moved away from its zero init.
    assert!(adapter.modules.iter().all(|m| m.b.data.iter().any(|&x| x != 0.0)));
    (
        std::fs::read(out.join("adapter_config.json")).unwrap(),
        std::fs::read(out.join("adapter_model.safetensors")).unwrap(),
    )
}

#[test]
fn fresh_lora_run_is_reproducible_from_its_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let a = fresh_lora(tmp.path(), "a", "1");
    let b = fresh_lora(tmp.path(), "b", "1");
    let c = fresh_lora(tmp.path(), "c", "2");
    assert!(a.0 == b.0, "same seed: adapter_config.json differs");
    assert!(a.1 == b.1, "same seed: adapter_model.safetensors differs");
    assert!(a.0 == c.0, "the config does not depend on the seed");
    assert!(a.1 != c.1, "seeds 1 and 2 gave the same adapter");
}

// ---------------------------------------------------------------------------------------
// Bad inputs.

/// A copy of the fixture model in `dir` with its config.json / model.safetensors replaced.
fn model_copy(dir: &Path, config: Option<&[u8]>, weights: Option<&[u8]>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let config = config
        .map(<[u8]>::to_vec)
        .unwrap_or_else(|| std::fs::read(model_dir().join("config.json")).unwrap());
    let weights = weights
        .map(<[u8]>::to_vec)
        .unwrap_or_else(|| std::fs::read(model_dir().join("model.safetensors")).unwrap());
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
    dir.to_path_buf()
}

/// The fixture's model.safetensors with `name`'s shape replaced by `shape` (same bytes).
fn reshaped_weights(name: &str, shape: &[usize]) -> Vec<u8> {
    let bytes = std::fs::read(model_dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            if n == name {
                let v = safetensors::tensor::TensorView::new(v.dtype(), shape.to_vec(), v.data()).unwrap();
                (n, v)
            } else {
                (n, v)
            }
        })
        .collect();
    assert!(views.iter().any(|(n, _)| n == name));
    safetensors::serialize(views, None).unwrap()
}

struct Case {
    what: &'static str,
    args: Vec<String>,
    /// Substrings the error line must contain.
    want: Vec<String>,
    how: Exit,
}

#[derive(Clone, Copy, PartialEq)]
enum Exit {
    /// webtune's own error: exit 1, one `error: ...` line containing every `want`.
    Error,
    /// A clap usage error: exit 2, clap's own format.
    Usage,
    /// Either of the two (clap's parsing of the value may change).
    Either,
}

/// Lines on stderr that are not webtune's: the Vulkan loader's environment warnings.
fn is_loader_noise(line: &str) -> bool {
    line.contains("XDG_RUNTIME_DIR")
}

fn check_case(c: &Case, out_dir: &Path) {
    let argv: Vec<&str> = c.args.iter().map(String::as_str).collect();
    let out = webtune(&argv);
    let stderr = text(&out.stderr);
    let code = out.status.code();
    assert_ne!(code, Some(101), "{}: webtune panicked:\n{stderr}", c.what);
    assert!(!out.status.success(), "{}: exit 0 on bad input", c.what);
    assert!(!out_dir.exists(), "{}: --out {} was created", c.what, out_dir.display());
    if c.how == Exit::Usage || (c.how == Exit::Either && code == Some(2)) {
        assert_eq!(code, Some(2), "{}: clap usage errors exit 2:\n{stderr}", c.what);
        assert!(stderr.starts_with("error:"), "{}: {stderr}", c.what);
    } else {
        assert_eq!(code, Some(1), "{}: webtune errors exit 1:\n{stderr}", c.what);
        let lines: Vec<&str> = stderr.lines().filter(|l| !is_loader_noise(l)).collect();
        assert_eq!(
            lines.len(),
            1,
            "{}: want exactly one stderr line, got:\n{stderr}",
            c.what
        );
        assert!(lines[0].starts_with("error: "), "{}: {stderr}", c.what);
        for w in &c.want {
            assert!(
                lines[0].contains(w.as_str()),
                "{}: the message should name '{w}': {}",
                c.what,
                lines[0]
            );
        }
    }
}

#[test]
fn bad_inputs_end_in_one_error_line_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let out = t.join("out-never-written");
    let (model, data) = (model_dir(), data_file());
    let good_config = std::fs::read(model.join("config.json")).unwrap();
    let good_weights = std::fs::read(model.join("model.safetensors")).unwrap();

    // Broken models.
    let missing_dir = t.join("no-such-model");
    let no_weights = t.join("no-weights");
    std::fs::create_dir_all(&no_weights).unwrap();
    std::fs::write(no_weights.join("config.json"), &good_config).unwrap();
    let bad_json = model_copy(&t.join("bad-config"), Some(b"{\"n_layer\": 2,"), None);
    let truncated = model_copy(
        &t.join("truncated"),
        None,
        Some(&good_weights[..good_weights.len() / 2]),
    );
    let reshaped = model_copy(
        &t.join("reshaped"),
        None,
        Some(&reshaped_weights("transformer.h.1.attn.c_attn.weight", &[144, 48])),
    );

    // Broken data.
    let write = |name: &str, body: &str| {
        let p = t.join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let missing_data = t.join("no-such-data.jsonl");
    let bad_line = write(
        "bad-line.jsonl",
        "{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": [4, 5]}\n{\"input_ids\": [6,\n",
    );
    let big_id = write(
        "big-id.jsonl",
        "{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": [4, 200, 5]}\n",
    );
    let empty = write("empty.jsonl", "");
    let short = write("short.jsonl", "{\"input_ids\": [1, 2, 3, 4, 5]}\n");
    let no_adapter = t.join("not-an-adapter");
    std::fs::create_dir_all(&no_adapter).unwrap();

    let case = |what: &'static str, model: &Path, data: &Path, extra: &[&str], want: &[&str], how: Exit| {
        let mut args: Vec<String> = [
            "train",
            "--model",
            s(model),
            "--data",
            s(data),
            "--out",
            s(&out),
            "--steps",
            "1",
            "--batch",
            "2",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        if !extra.contains(&"--seq") {
            args.extend(["--seq".to_string(), "16".to_string()]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        Case {
            what,
            args,
            want: want.iter().map(|w| w.to_string()).collect(),
            how,
        }
    };
    let cases = [
        case(
            "missing --model dir",
            &missing_dir,
            &data,
            &[],
            &[s(&missing_dir), "not a directory"],
            Exit::Error,
        ),
        case(
            "no model.safetensors",
            &no_weights,
            &data,
            &[],
            &["model.safetensors", "not found"],
            Exit::Error,
        ),
        case(
            "malformed config.json",
            &bad_json,
            &data,
            &[],
            &["config.json", "invalid JSON"],
            Exit::Error,
        ),
        case(
            "truncated model.safetensors",
            &truncated,
            &data,
            &[],
            &["model.safetensors", "not a valid safetensors"],
            Exit::Error,
        ),
        case(
            "tensor with a wrong shape",
            &reshaped,
            &data,
            &[],
            &["transformer.h.1.attn.c_attn.weight", "[144, 48]", "[48, 144]"],
            Exit::Error,
        ),
        case(
            "missing data file",
            &model,
            &missing_data,
            &[],
            &[s(&missing_data)],
            Exit::Error,
        ),
        case(
            "bad JSON line",
            &model,
            &bad_line,
            &[],
            &[&format!("{}:3:", s(&bad_line)), "invalid JSON"],
            Exit::Error,
        ),
        case(
            "token id >= vocab",
            &model,
            &big_id,
            &[],
            &[&format!("{}:2:", s(&big_id)), "200", "97"],
            Exit::Error,
        ),
        case(
            "empty data file",
            &model,
            &empty,
            &[],
            &[s(&empty), "empty"],
            Exit::Error,
        ),
        case(
            "--seq > n_positions",
            &model,
            &data,
            &["--seq", "65"],
            &["--seq 65", "n_positions 64"],
            Exit::Error,
        ),
        case(
            "unknown --lora-targets",
            &model,
            &data,
            &["--lora-targets", "c_attn,q_proj"],
            &["q_proj"],
            Exit::Error,
        ),
        case(
            "--lora-rank 0",
            &model,
            &data,
            &["--lora-rank", "0"],
            &["rank"],
            Exit::Error,
        ),
        case("--lr=-1", &model, &data, &["--lr=-1"], &["--lr -1"], Exit::Error),
        case("--lr nan", &model, &data, &["--lr", "nan"], &["--lr NaN"], Exit::Error),
        case(
            "--init-adapter without adapter_config.json",
            &model,
            &data,
            &["--init-adapter", s(&no_adapter)],
            &["adapter_config.json"],
            Exit::Error,
        ),
        case(
            "data too short for one window",
            &model,
            &short,
            &[],
            &["seq + 1 = 17"],
            Exit::Error,
        ),
        case(
            "--init-adapter with --full",
            &model,
            &data,
            &["--full", "--init-adapter", s(&no_adapter)],
            &[],
            Exit::Usage,
        ),
        case(
            "--lr -1 (a negative number, not a flag)",
            &model,
            &data,
            &["--lr", "-1"],
            &["--lr -1"],
            Exit::Error,
        ),
    ];
    for c in &cases {
        check_case(c, &out);
    }
}

#[test]
fn unwritable_out_fails_before_training() {
    let out = Path::new("/proc/webtune-no-such-dir/out");
    let r = webtune(&["train", "--model", s(&model_dir()), "--data", s(&data_file()), "--out", s(out), "--steps", "1"]);
    let stderr = text(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot create the folder") && !stderr.contains("training "), "{stderr}");
}

/// The adapters `webtune info` lists ("  NAME (Backend, DeviceType)"), as (name, backend, type).
fn listed_adapters(info: &str) -> Vec<(String, String, String)> {
    info.lines()
        .skip_while(|l| *l != "GPU adapters:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let (name, rest) = l.trim().rsplit_once(" (").unwrap_or_else(|| panic!("adapter line {l:?}"));
            let (backend, kind) = rest.trim_end_matches(')').split_once(", ").unwrap_or_else(|| panic!("adapter line {l:?}"));
            (name.to_string(), backend.to_string(), kind.to_string())
        })
        .collect()
}

/// The "chosen: NAME (Backend, DeviceType, driver ...)" line's (name, backend, type).
fn chosen_adapter(info: &str) -> (String, String, String) {
    let line = info.lines().find_map(|l| l.strip_prefix("chosen: ")).unwrap_or_else(|| panic!("no 'chosen:' line:\n{info}"));
    let (head, _) = line.split_once(", driver ").unwrap_or_else(|| panic!("chosen line {line:?}"));
    let (name, rest) = head.rsplit_once(" (").unwrap();
    let (backend, kind) = rest.split_once(", ").unwrap();
    (name.to_string(), backend.to_string(), kind.to_string())
}

/// `webtune info` names the adapter the README's rule picks from the ones it lists: by default a
/// discrete GPU before an integrated, virtual, other or CPU one (Vulkan/Metal/DX12 before GL);
/// with `--gpu PART` or `WEBTUNE_ADAPTER=PART` the first listed whose name contains PART (any case).
/// A PART that matches nothing is one error naming what there is, and `train` stops before
/// writing --out; `train --gpu` trains on the adapter it names.
#[test]
fn info_and_gpu_choose_the_adapter() {
    let info = text(&webtune_ok(&["info"]).stdout);
    let listed = listed_adapters(&info);
    assert!(!listed.is_empty(), "{info}");
    let rank = |kind: &str| ["DiscreteGpu", "IntegratedGpu", "VirtualGpu", "Other", "Cpu"].iter().position(|k| *k == kind).unwrap();
    let best = listed.iter().min_by_key(|a| (rank(&a.2), a.1 == "Gl")).unwrap();
    assert_eq!(&chosen_adapter(&info), best, "the default choice among {listed:?}");

    // by a part of a name, in another case: every listed name's first word
    for (name, _, _) in &listed {
        let part = name.split_whitespace().next().unwrap().to_uppercase();
        let want = listed.iter().find(|a| a.0.to_lowercase().contains(&part.to_lowercase())).unwrap();
        let by_flag = text(&webtune_ok(&["info", "--gpu", &part]).stdout);
        assert_eq!(&chosen_adapter(&by_flag), want, "--gpu {part}");
        let by_env = std::process::Command::new(env!("CARGO_BIN_EXE_webtune")).arg("info").env("WEBTUNE_ADAPTER", &part).output().unwrap();
        assert!(by_env.status.success(), "{}", text(&by_env.stderr));
        assert_eq!(&chosen_adapter(&text(&by_env.stdout)), want, "WEBTUNE_ADAPTER={part}");
    }

    // a name that matches nothing
    let errors = |out: &std::process::Output| -> Vec<String> {
        text(&out.stderr).lines().filter(|l| !is_loader_noise(l)).map(String::from).collect()
    };
    let no_such = "no-such-gpu-3f9";
    let r = webtune(&["info", "--gpu", no_such]);
    assert_eq!(r.status.code(), Some(1));
    let lines = errors(&r);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(&format!("'{no_such}'")), "{lines:?}");
    for (name, _, _) in &listed {
        assert!(lines[0].contains(name.as_str()), "the error lists {name}: {}", lines[0]);
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let (model, data) = (model_dir(), data_file());
    let args = ["train", "--model", s(&model), "--data", s(&data), "--out", s(&out), "--steps", "1", "--batch", "2", "--seq", "16"];
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_webtune")).args(args).env("WEBTUNE_ADAPTER", no_such).output().unwrap();
    assert_eq!(r.status.code(), Some(1), "{}", text(&r.stderr));
    assert!(errors(&r).len() == 1 && errors(&r)[0].contains(no_such), "{:?}", errors(&r));
    assert!(!out.exists(), "--out was created");

    // train on the adapter --gpu names
    let (name, _, _) = &listed[listed.len() - 1];
    let part = name.split_whitespace().next().unwrap();
    let want = listed.iter().find(|a| a.0.to_lowercase().contains(&part.to_lowercase())).unwrap();
    let mut with_gpu = vec!["--gpu", part];
    with_gpu.extend(args);
    let r = webtune_ok(&with_gpu);
    assert!(text(&r.stderr).contains(&format!("training a LoRA adapter on {} (", want.0)), "{}", text(&r.stderr));
}
