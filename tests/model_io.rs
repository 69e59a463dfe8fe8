//! Model and adapter files: Hugging Face GPT-2 folders and PEFT LoRA adapters, checked against the
//! fixtures that tools/make_fixtures.py writes with transformers + PEFT. No GPU needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use webtune::model::lora::{LoraModule, VALID_TARGETS};
use webtune::model::weights::param_shapes;
use webtune::model::Linear;
use webtune::model::{Family, ModelConfig, Weights, LoraAdapter, LoraConfig, ModelError};

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny").join(p)
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

fn read_str(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

/// All tensors of a safetensors file as (dtype, shape, raw bytes).
fn raw_tensors(bytes: &[u8]) -> BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    st.tensors().into_iter().map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec()))).collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn serialize(tensors: &BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn model_config_text() -> String {
    read_str(&fixture("model/config.json"))
}

fn model_tensors() -> BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    raw_tensors(&read(&fixture("model/model.safetensors")))
}

/// Loads from bytes with the fixture config and the given tensors; returns the error text.
fn load_err(tensors: &BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>) -> String {
    match Weights::from_bytes(&model_config_text(), "cfg.json", &serialize(tensors), "w.safetensors") {
        Ok(_) => panic!("loading should fail"),
        Err(e) => e.to_string(),
    }
}

fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} should contain {p:?}");
    }
}

fn tiny_config() -> ModelConfig {
    ModelConfig::from_json(&model_config_text(), "config.json").unwrap()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------- model

#[test]
fn load_fixture_model() {
    let w = Weights::load_dir(&fixture("model")).unwrap();
    let c = &w.config;
    assert_eq!((c.n_layer, c.n_head, c.n_embd, c.vocab_size, c.n_positions), (2, 3, 48, 97, 64));
    assert_eq!((c.eos_token_id, c.bos_token_id), (96, 96));
    let shapes = param_shapes(c);
    assert_eq!(shapes.len(), 2 + 2 * 12 + 2);
    assert_eq!(w.tensors.len(), shapes.len(), "tied head: no lm_head.weight");
    let raw = model_tensors();
    for (name, shape) in &shapes {
        let t = &w.tensors[name];
        assert_eq!(&t.shape, shape, "{name}");
        let (dtype, file_shape, bytes) = &raw[&format!("transformer.{name}")];
        assert_eq!((*dtype, file_shape), (Dtype::F32, shape));
        assert_eq!(t.data, f32s(bytes), "{name}");
    }
    assert_eq!(w.lm_head().shape, vec![97, 48]);
}

#[test]
fn prefix_less_names_buffers_and_lm_head() {
    let raw = model_tensors();
    let want = Weights::load_dir(&fixture("model")).unwrap();
    let mut renamed: BTreeMap<_, _> =
        raw.iter().map(|(n, t)| (n.strip_prefix("transformer.").unwrap().to_string(), t.clone())).collect();
    // HF's old attention buffers are ignored; an lm_head equal to wte is the tied head.
    renamed.insert("h.1.attn.bias".into(), (Dtype::F32, vec![1, 1, 64, 64], vec![0; 64 * 64 * 4]));
    renamed.insert("transformer.h.0.attn.masked_bias".into(), (Dtype::F32, vec![], vec![0; 4]));
    renamed.insert("lm_head.weight".into(), renamed["wte.weight"].clone());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), model_config_text()).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), serialize(&renamed)).unwrap();
    let got = Weights::load_dir(dir.path()).unwrap();
    assert_eq!(got.tensors, want.tensors);

    // An untied head that differs from wte is kept under its canonical name.
    let (d, s, mut b) = renamed["wte.weight"].clone();
    b[0] ^= 1;
    renamed.insert("lm_head.weight".into(), (d, s, b.clone()));
    let got = Weights::from_bytes(&model_config_text(), "c", &serialize(&renamed), "w").unwrap();
    assert_eq!(got.lm_head().data, f32s(&b));
    assert_eq!(got.tensors.len(), want.tensors.len() + 1);
    // ... and survives a save (config marked untied).
    let out = tempfile::tempdir().unwrap();
    got.save_dir(out.path()).unwrap();
    let again = Weights::load_dir(out.path()).unwrap();
    assert_eq!(again.tensors, got.tensors);
    assert_eq!(again.config.raw["tie_word_embeddings"], serde_json::json!(false));
}

#[test]
fn bf16_and_f16_models_convert_to_f32() {
    let want = Weights::load_dir(&fixture("model")).unwrap();
    for (dir, round) in [
        ("model_bf16", (|x: f32| half::bf16::from_f32(x).to_f32()) as fn(f32) -> f32),
        ("model_f16", |x: f32| half::f16::from_f32(x).to_f32()),
    ] {
        let raw = raw_tensors(&read(&fixture(&format!("{dir}/model.safetensors"))));
        let dtype = if dir == "model_bf16" { Dtype::BF16 } else { Dtype::F16 };
        assert!(raw.values().all(|t| t.0 == dtype), "{dir} should hold {dtype:?} tensors");
        let got = Weights::load_dir(&fixture(dir)).unwrap();
        assert_eq!(got.tensors.len(), want.tensors.len());
        for (name, t) in &want.tensors {
            let g = &got.tensors[name];
            assert_eq!(g.shape, t.shape);
            let rounded: Vec<f32> = t.data.iter().map(|x| round(*x)).collect();
            assert_eq!(g.data, rounded, "{dir}: {name}");
            // The rounding is not a no-op, so this compares something.
            if name == "wte.weight" {
                assert_ne!(g.data, t.data);
            }
        }
    }
}

#[test]
fn save_dir_round_trip_writes_hf_layout() {
    let w = Weights::load_dir(&fixture("model_bf16")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("new/sub");
    w.save_dir(&out).unwrap();
    let mut files: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, ["config.json", "model.safetensors"], "no temp files left behind");
    let raw = raw_tensors(&read(&out.join("model.safetensors")));
    let fixture_raw = model_tensors();
    assert_eq!(raw.keys().collect::<Vec<_>>(), fixture_raw.keys().collect::<Vec<_>>(), "HF names, tied head omitted");
    assert!(raw.values().all(|t| t.0 == Dtype::F32));
    let st = read(&out.join("model.safetensors"));
    let meta = SafeTensors::read_metadata(&st).unwrap().1;
    assert_eq!(meta.metadata().as_ref().and_then(|m| m.get("format")).map(String::as_str), Some("pt"));
    let back = Weights::load_dir(&out).unwrap();
    assert_eq!(back.tensors, w.tensors);
    assert_eq!(back.config.n_embd, w.config.n_embd);
    assert_eq!(back.config.raw["dtype"], serde_json::json!("float32"));
    assert_eq!(back.config.raw["activation_function"], serde_json::json!("gelu_new"));
    assert_eq!(w.to_safetensors().unwrap(), st);
    // Overwriting an existing folder works too.
    back.save_dir(&out).unwrap();
}

#[test]
fn missing_dir_and_files() {
    let e = Weights::load_dir(Path::new("/no/such/model_dir")).unwrap_err();
    assert!(matches!(e, ModelError::Io { .. }));
    assert_has(&e.to_string(), &["/no/such/model_dir", "not a directory"]);

    let dir = tempfile::tempdir().unwrap();
    let e = Weights::load_dir(dir.path()).unwrap_err().to_string();
    assert_has(&e, &["config.json"]);

    std::fs::write(dir.path().join("config.json"), model_config_text()).unwrap();
    let e = Weights::load_dir(dir.path()).unwrap_err();
    assert!(matches!(e, ModelError::Io { .. }));
    assert_has(&e.to_string(), &["model.safetensors", "not found"]);

    std::fs::write(dir.path().join("pytorch_model.bin"), b"x").unwrap();
    assert_has(&Weights::load_dir(dir.path()).unwrap_err().to_string(), &["pytorch_model.bin", "safetensors"]);

    let e = LoraAdapter::load_peft(&dir.path().join("nope"), &tiny_config()).unwrap_err().to_string();
    assert_has(&e, &["nope", "not a directory"]);
    let e = LoraAdapter::load_peft(dir.path(), &tiny_config()).unwrap_err().to_string();
    assert_has(&e, &["adapter_config.json"]);
}

#[test]
fn bad_config_json() {
    let st = read(&fixture("model/model.safetensors"));
    let e = Weights::from_bytes("{\"n_layer\": 2,", "my/config.json", &st, "w").unwrap_err();
    assert!(matches!(e, ModelError::Json { .. }));
    assert_has(&e.to_string(), &["my/config.json", "invalid JSON"]);

    let mut cfg: serde_json::Value = serde_json::from_str(&model_config_text()).unwrap();
    cfg.as_object_mut().unwrap().remove("n_embd");
    let e = Weights::from_bytes(&cfg.to_string(), "my/config.json", &st, "w").unwrap_err().to_string();
    assert_has(&e, &["my/config.json", "n_embd"]);

    // The same through a folder: the message names the file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "not json").unwrap();
    std::fs::write(dir.path().join("model.safetensors"), &st).unwrap();
    let e = Weights::load_dir(dir.path()).unwrap_err().to_string();
    assert_has(&e, &[&dir.path().join("config.json").display().to_string(), "invalid JSON"]);
}

#[test]
fn truncated_or_garbage_safetensors() {
    let st = read(&fixture("model/model.safetensors"));
    for bytes in [&st[..st.len() - 100], &st[..20], &[][..], &b"\xff\xff\xff\xff\xff\xff\xff\xffgarbage"[..]] {
        let e = Weights::from_bytes(&model_config_text(), "c", bytes, "dir/model.safetensors").unwrap_err();
        assert!(matches!(e, ModelError::Safetensors { .. }), "{e}");
        assert_has(&e.to_string(), &["dir/model.safetensors", "not a valid safetensors"]);
    }
}

#[test]
fn wrong_shape_missing_unexpected_and_dtype() {
    // Wrong shape: name and both shapes.
    let mut t = model_tensors();
    t.insert("transformer.h.1.mlp.c_fc.weight".into(), (Dtype::F32, vec![192, 48], vec![0; 192 * 48 * 4]));
    let e = load_err(&t);
    assert_has(&e, &["w.safetensors", "transformer.h.1.mlp.c_fc.weight", "[192, 48]", "[48, 192]"]);

    // Missing tensor: the first missing one is named.
    let mut t = model_tensors();
    t.remove("transformer.h.1.ln_2.bias");
    t.remove("transformer.ln_f.weight");
    let e = load_err(&t);
    assert_has(&e, &["missing tensor", "h.1.ln_2.bias"]);

    // Unexpected tensor (a third layer the config does not have).
    let mut t = model_tensors();
    t.insert("transformer.h.2.ln_1.weight".into(), (Dtype::F32, vec![48], vec![0; 48 * 4]));
    let e = load_err(&t);
    assert_has(&e, &["unexpected tensor", "transformer.h.2.ln_1.weight"]);
    let mut t = model_tensors();
    t.insert("score.weight".into(), (Dtype::F32, vec![2, 48], vec![0; 2 * 48 * 4]));
    assert_has(&load_err(&t), &["unexpected tensor", "score.weight"]);

    // Integer tensor.
    let mut t = model_tensors();
    t.insert("transformer.ln_f.bias".into(), (Dtype::I64, vec![48], vec![0; 48 * 8]));
    let e = load_err(&t);
    assert_has(&e, &["transformer.ln_f.bias", "I64", "F32, F16 and BF16"]);

    // A wrong-shaped untied head.
    let mut t = model_tensors();
    t.insert("lm_head.weight".into(), (Dtype::F32, vec![96, 48], vec![0; 96 * 48 * 4]));
    assert_has(&load_err(&t), &["lm_head.weight", "[96, 48]", "[97, 48]"]);

    // The same name twice (with and without the prefix).
    let mut t = model_tensors();
    let wpe = t["transformer.wpe.weight"].clone();
    t.insert("wpe.weight".into(), wpe);
    assert_has(&load_err(&t), &["wpe.weight", "twice"]);
}

// ----------------------------------------------------------------------------------------- LoRA

#[test]
fn lora_config_validation_and_matching() {
    let e = LoraConfig::new(4, 8.0, strings(&["c_attn", "q_proj"]), 0.0, Family::Gpt2).unwrap_err();
    assert!(matches!(e, ModelError::Lora(_)));
    let msg = e.to_string();
    assert_has(&msg, &["q_proj"]);
    assert_has(&msg, &VALID_TARGETS);
    for bad in ["attn", "h.0.attn.c_attn", "transformer.h.0.mlp.c_fc", "q_proj", "all_linear", "lm_head", "", "_attn"] {
        assert!(LoraConfig::new(4, 8.0, strings(&[bad]), 0.0, Family::Gpt2).is_err(), "{bad:?} should be refused");
    }
    assert_has(&LoraConfig::new(0, 8.0, strings(&["c_fc"]), 0.0, Family::Gpt2).unwrap_err().to_string(), &["r"]);
    for alpha in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert_has(&LoraConfig::new(4, alpha, strings(&["c_fc"]), 0.0, Family::Gpt2).unwrap_err().to_string(), &["alpha"]);
    }
    for dropout in [1.0, -0.1, f32::NAN] {
        assert_has(&LoraConfig::new(4, 8.0, strings(&["c_fc"]), dropout, Family::Gpt2).unwrap_err().to_string(), &["dropout"]);
    }
    assert!(LoraConfig::new(4, 8.0, vec![], 0.0, Family::Gpt2).is_err());
    // PEFT's all-linear: every linear layer of the family, listed as PEFT saves it
    let all = |family| LoraConfig::new(4, 8.0, strings(&["all-linear"]), 0.0, family).unwrap().targets;
    assert_eq!(all(Family::Gpt2), strings(&["c_attn", "c_fc", "c_proj"]));
    assert_eq!(all(Family::Llama), strings(&["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]));
    let e = LoraConfig::new(4, 8.0, strings(&["c_attn"]), 0.0, Family::Llama).unwrap_err().to_string();
    assert_has(&e, &["'c_attn' matches no Llama-family linear layer", "q_proj", "mlp.down_proj", "all-linear"]);

    let m = |targets: &[&str]| {
        let c = LoraConfig::new(4, 8.0, strings(targets), 0.1, Family::Gpt2).unwrap();
        Linear::GPT2.iter().map(|l| c.matches(*l)).collect::<Vec<_>>()
    };
    assert_eq!(m(&["c_proj"]), [false, true, false, true]);
    assert_eq!(m(&["attn.c_proj"]), [false, true, false, false]);
    assert_eq!(m(&["mlp.c_proj"]), [false, false, false, true]);
    assert_eq!(m(&["c_attn", "c_fc"]), [true, false, true, false]);
    assert_eq!(m(&["mlp.c_fc", "attn.c_attn", "c_proj"]), [true, true, true, true]);
    let c = LoraConfig::new(8, 16.0, strings(&["c_proj", "c_attn", "c_proj"]), 0.05, Family::Gpt2).unwrap();
    assert_eq!(c.targets, strings(&["c_attn", "c_proj"]), "sorted and deduplicated like PEFT's set");
    assert_eq!(c.scale(), 2.0);
}

#[test]
fn init_statistics_and_determinism() {
    let model = ModelConfig::gpt2(2, 4, 96, 50, 32);
    let cfg = LoraConfig::new(8, 16.0, strings(&["c_attn", "c_proj", "c_fc"]), 0.0, Family::Gpt2).unwrap();
    let a = LoraAdapter::init(cfg.clone(), &model, 7);
    let keys: Vec<(usize, Linear)> = a.modules.iter().map(|m| (m.layer, m.linear)).collect();
    let mut want = vec![];
    for layer in 0..2 {
        for lin in Linear::GPT2 {
            want.push((layer, lin));
        }
    }
    assert_eq!(keys, want);
    for m in &a.modules {
        let (fan_in, fan_out) = m.linear.dims(&model);
        assert_eq!(m.a.shape, vec![8, fan_in]);
        assert_eq!(m.b.shape, vec![fan_out, 8]);
        assert!(m.b.data.iter().all(|x| *x == 0.0), "{}: B must start at zero", m.name());
        let bound = 1.0 / (fan_in as f64).sqrt();
        let n = m.a.data.len() as f64;
        assert!(m.a.data.iter().all(|x| (*x as f64).abs() <= bound), "{}: A outside ±1/sqrt(in)", m.name());
        let mean = m.a.data.iter().map(|x| *x as f64).sum::<f64>() / n;
        let var = m.a.data.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
        // U(-b, b): variance b²/3; the sample variance's standard error is sqrt(4/45)·b²/sqrt(n).
        let se_var = (4.0f64 / 45.0).sqrt() * bound * bound / n.sqrt();
        assert!(
            (var - bound * bound / 3.0).abs() < 5.0 * se_var,
            "{}: variance {var} vs {}",
            m.name(),
            bound * bound / 3.0
        );
        assert!(mean.abs() < 5.0 * bound / (3.0 * n).sqrt(), "{}: mean {mean}", m.name());
    }
    assert_eq!(LoraAdapter::init(cfg.clone(), &model, 7), a);
    let other = LoraAdapter::init(cfg.clone(), &model, 8);
    assert_ne!(other, a);
    assert!(other.modules.iter().zip(&a.modules).all(|(x, y)| x.a.data != y.a.data));
    // Only targeted linears get modules.
    let only = LoraAdapter::init(LoraConfig::new(2, 4.0, strings(&["attn.c_proj"]), 0.0, Family::Gpt2).unwrap(), &model, 1);
    assert_eq!(
        only.modules.iter().map(|m| (m.layer, m.linear)).collect::<Vec<_>>(),
        [(0, Linear::AttnProj), (1, Linear::AttnProj)]
    );
}

#[test]
fn peft_round_trip() {
    let model = tiny_config();
    let cfg = LoraConfig::new(3, 5.5, strings(&["c_fc", "attn.c_attn"]), 0.05, Family::Gpt2).unwrap();
    let mut a = LoraAdapter::init(cfg, &model, 42);
    // Non-zero B too, so B's layout is exercised.
    for (i, m) in a.modules.iter_mut().enumerate() {
        for (j, x) in m.b.data.iter_mut().enumerate() {
            *x = (i * 1000 + j) as f32 * 1e-3;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("adapter");
    a.save_peft(&out, "gpt2").unwrap();
    let mut files: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, ["adapter_config.json", "adapter_model.safetensors"]);
    let back = LoraAdapter::load_peft(&out, &model).unwrap();
    assert_eq!(back, a);
    let cfg_json: serde_json::Value = serde_json::from_str(&read_str(&out.join("adapter_config.json"))).unwrap();
    assert_eq!(cfg_json["base_model_name_or_path"], serde_json::json!("gpt2"));
    assert_eq!(cfg_json["lora_alpha"], serde_json::json!(5.5));
    assert_eq!(cfg_json["lora_dropout"], serde_json::json!(0.05));
    // Bytes API gives the same adapter.
    let (text, bytes) = a.to_peft_bytes("gpt2").unwrap();
    assert_eq!(LoraAdapter::from_peft_bytes(&text, &bytes, &model, "mem").unwrap(), a);
    assert_eq!(bytes, read(&out.join("adapter_model.safetensors")));
    // Overwrite in place.
    back.save_peft(&out, "gpt2").unwrap();
}

fn peft_fixture() -> (String, Vec<u8>) {
    (read_str(&fixture("adapter_init/adapter_config.json")), read(&fixture("adapter_init/adapter_model.safetensors")))
}

#[test]
fn loads_adapter_written_by_peft() {
    let model = tiny_config();
    let a = LoraAdapter::load_peft(&fixture("adapter_init"), &model).unwrap();
    assert_eq!(a.config, LoraConfig::new(4, 8.0, strings(&["c_attn", "c_proj", "c_fc"]), 0.0, Family::Gpt2).unwrap());
    assert_eq!(a.scale(), 2.0);
    let names: Vec<String> = a.modules.iter().map(LoraModule::name).collect();
    assert_eq!(
        names,
        [
            "h.0.attn.c_attn",
            "h.0.attn.c_proj",
            "h.0.mlp.c_fc",
            "h.0.mlp.c_proj",
            "h.1.attn.c_attn",
            "h.1.attn.c_proj",
            "h.1.mlp.c_fc",
            "h.1.mlp.c_proj"
        ]
    );
    let raw = raw_tensors(&peft_fixture().1);
    assert_eq!(raw.len(), 16);
    for m in &a.modules {
        for (ab, t) in [("lora_A", &m.a), ("lora_B", &m.b)] {
            let (dtype, shape, bytes) = &raw[&format!("base_model.model.transformer.{}.{ab}.weight", m.name())];
            assert_eq!((*dtype, shape), (Dtype::F32, &t.shape));
            assert_eq!(t.data, f32s(bytes), "{} {ab}", m.name());
        }
        assert!(m.b.data.iter().any(|x| *x != 0.0), "fixture B is randn, not PEFT's zeros");
        let bound = 1.0 / (m.a.shape[1] as f32).sqrt();
        assert!(m.a.data.iter().all(|x| x.abs() <= bound), "PEFT's A init lies within ±1/sqrt(in) too");
    }
}

#[test]
fn our_peft_files_match_peft_layout() {
    let model = tiny_config();
    let (peft_text, peft_bytes) = peft_fixture();
    let peft_json: serde_json::Value = serde_json::from_str(&peft_text).unwrap();
    let cfg = LoraConfig::new(4, 8.0, strings(&["c_attn", "c_proj", "c_fc"]), 0.0, Family::Gpt2).unwrap();
    let ours = LoraAdapter::init(cfg, &model, 3);
    let (text, bytes) = ours.to_peft_bytes("").unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&json), keys(&peft_json), "same key set as PEFT writes");
    for field in [
        "peft_type",
        "r",
        "lora_alpha",
        "target_modules",
        "fan_in_fan_out",
        "bias",
        "task_type",
        "lora_dropout",
        "use_dora",
        "use_rslora",
        "lora_bias",
        "inference_mode",
        "init_lora_weights",
        "base_model_name_or_path",
    ] {
        assert_eq!(json[field], peft_json[field], "{field}");
    }
    // In fact every value agrees for this config (PEFT wrote base_model_name_or_path null).
    assert_eq!(json, peft_json);

    let shapes = |b: &[u8]| raw_tensors(b).into_iter().map(|(n, t)| (n, (t.0, t.1))).collect::<BTreeMap<_, _>>();
    assert_eq!(shapes(&bytes), shapes(&peft_bytes), "same tensor names, dtypes and shapes as PEFT");
    let meta = SafeTensors::read_metadata(&bytes).unwrap().1;
    assert_eq!(meta.metadata().as_ref().and_then(|m| m.get("format")).map(String::as_str), Some("pt"));
}

/// adapter_config.json of the fixture with `edit` applied.
fn peft_config_with(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&peft_fixture().0).unwrap();
    edit(v.as_object_mut().unwrap());
    v.to_string()
}

fn peft_err(config: &str, bytes: &[u8]) -> String {
    match LoraAdapter::from_peft_bytes(config, bytes, &tiny_config(), "ad") {
        Ok(_) => panic!("loading should fail"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_peft_adapters() {
    let (_, bytes) = peft_fixture();
    let set = |k: &'static str, v: serde_json::Value| {
        peft_config_with(move |m| {
            m.insert(k.into(), v);
        })
    };
    use serde_json::json;
    assert_has(&peft_err(&set("use_dora", json!(true)), &bytes), &["ad/adapter_config.json", "use_dora"]);
    assert_has(&peft_err(&set("use_rslora", json!(true)), &bytes), &["use_rslora"]);
    assert_has(&peft_err(&set("bias", json!("all")), &bytes), &["bias", "all"]);
    assert_has(&peft_err(&set("rank_pattern", json!({"c_fc": 8})), &bytes), &["rank_pattern"]);
    assert_has(&peft_err(&set("layers_to_transform", json!([0])), &bytes), &["layers_to_transform"]);
    assert_has(&peft_err(&set("modules_to_save", json!(["lm_head"])), &bytes), &["modules_to_save"]);
    assert_has(
        &peft_err(&set("target_modules", json!(".*c_attn")), &bytes),
        &["target_modules", "regular expression", ".*c_attn"],
    );
    assert_has(&peft_err(&set("target_modules", json!(["c_attn", "q_proj"])), &bytes), &["q_proj", "mlp.c_proj"]);
    assert_has(&peft_err(&set("peft_type", json!("IA3")), &bytes), &["peft_type", "IA3"]);
    assert_has(&peft_err(&set("r", json!(0)), &bytes), &["'r'"]);
    assert_has(
        &peft_err(
            &peft_config_with(|m| {
                m.remove("lora_alpha");
            }),
            &bytes,
        ),
        &["lora_alpha"],
    );
    assert_has(&peft_err("[1, 2", &bytes), &["ad/adapter_config.json", "invalid JSON"]);

    let ok = peft_fixture().0;
    // r in the config disagrees with the tensors: shape error naming the tensor and both shapes.
    let e = peft_err(&set("r", json!(8)), &bytes);
    assert_has(&e, &["ad/adapter_model.safetensors", "lora_A.weight", "[4, 48]", "[8, 48]"]);
    // Fewer targets than tensors: unexpected tensor. More targets than tensors: missing tensor.
    assert_has(
        &peft_err(&set("target_modules", json!(["c_attn", "c_fc"])), &bytes),
        &["unexpected tensor", "c_proj.lora_A"],
    );
    let mut raw = raw_tensors(&bytes);
    raw.remove("base_model.model.transformer.h.1.mlp.c_fc.lora_B.weight");
    assert_has(
        &peft_err(&ok, &serialize(&raw)),
        &["missing tensor", "base_model.model.transformer.h.1.mlp.c_fc.lora_B.weight"],
    );
    let mut raw = raw_tensors(&bytes);
    raw.insert(
        "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight".into(),
        (Dtype::I32, vec![4, 48], vec![0; 4 * 48 * 4]),
    );
    assert_has(&peft_err(&ok, &serialize(&raw)), &["lora_A.weight", "I32"]);
    assert_has(&peft_err(&ok, &bytes[..bytes.len() / 2]), &["ad/adapter_model.safetensors", "not a valid safetensors"]);
    // A model with a different width: shape errors, not a panic.
    let wide = ModelConfig::gpt2(2, 4, 64, 97, 64);
    let e = LoraAdapter::from_peft_bytes(&ok, &bytes, &wide, "ad").unwrap_err().to_string();
    assert_has(&e, &["[4, 48]", "[4, 64]"]);
}

#[test]
fn peft_adapter_in_half_precision_and_short_names() {
    let (text, bytes) = peft_fixture();
    let raw = raw_tensors(&bytes);
    let want = LoraAdapter::from_peft_bytes(&text, &bytes, &tiny_config(), "f32").unwrap();
    let mut halves = BTreeMap::new();
    for (n, (_, s, b)) in &raw {
        // f16 tensors, and names without `transformer.` (a PEFT model wrapped around GPT2Model).
        let hb: Vec<u8> = f32s(b).iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect();
        halves.insert(n.replace("transformer.", ""), (Dtype::F16, s.clone(), hb));
    }
    let got = LoraAdapter::from_peft_bytes(&text, &serialize(&halves), &tiny_config(), "f16").unwrap();
    for (g, w) in got.modules.iter().zip(&want.modules) {
        let round = |v: &[f32]| v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect::<Vec<_>>();
        assert_eq!(g.a.data, round(&w.a.data));
        assert_eq!(g.b.data, round(&w.b.data));
    }
}

// ------------------------------------------------------------------------------------- fixtures

#[test]
fn fixture_expected_is_consistent() {
    let model = tiny_config();
    let st_bytes = read(&fixture("expected.safetensors"));
    let st = SafeTensors::deserialize(&st_bytes).unwrap();
    let shape = |n: &str| st.tensor(n).unwrap_or_else(|_| panic!("expected.safetensors lacks {n}")).shape().to_vec();
    assert_eq!(shape("base.logits"), [2, 16, 97]);
    assert_eq!(shape("lora.logits"), [2, 16, 97]);
    for (n, (_, s, _)) in raw_tensors(&peft_fixture().1) {
        assert_eq!(shape(&format!("lora.grad.{n}")), s);
        assert_eq!(shape(&format!("lora.step3.{n}")), s);
        assert_eq!(shape(&format!("lora_wd.step3.{n}")), s);
    }
    for (n, (_, s, _)) in raw_tensors(&read(&fixture("adapter_r5/adapter_model.safetensors"))) {
        assert_eq!(shape(&format!("lora_r5.grad.{n}")), s);
        assert_eq!(shape(&format!("lora_r5.step3.{n}")), s);
    }
    for (n, s) in param_shapes(&model) {
        assert_eq!(shape(&format!("full.grad.{n}")), s);
        assert_eq!(shape(&format!("full.step3.{n}")), s);
        assert_eq!(shape(&format!("full_wd.step3.{n}")), s);
    }
    let meta: serde_json::Value = serde_json::from_str(&read_str(&fixture("expected.json"))).unwrap();
    let (b, t) = (meta["B"].as_u64().unwrap() as usize, meta["T"].as_u64().unwrap() as usize);
    assert_eq!((b, t), (2, 16));
    for section in ["lora", "full", "lora_wd", "full_wd", "lora_r5"] {
        for k in ["losses", "grad_norms"] {
            assert_eq!(meta[format!("{section}.{k}")].as_array().unwrap().len(), 3, "{section}.{k}");
        }
    }

    // The batches recorded by PyTorch follow the stated semantics from data.jsonl.
    let mut stream = vec![];
    let mut n_records = 0;
    for line in read_str(&fixture("data.jsonl")).lines() {
        let rec: serde_json::Value = serde_json::from_str(line).unwrap();
        let ids: Vec<u64> = rec["input_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        assert!((5..=40).contains(&ids.len()) && ids.iter().all(|x| *x < 96));
        stream.extend(ids);
        stream.push(96);
        n_records += 1;
    }
    assert_eq!(n_records, 9);
    let windows: Vec<&[u64]> = stream.chunks_exact(t + 1).collect();
    assert_eq!(meta["n_windows"].as_u64().unwrap() as usize, windows.len());
    for (s, batch) in meta["batches"].as_array().unwrap().iter().enumerate() {
        for i in 0..b {
            let w = windows[(s * b + i) % windows.len()];
            let x: Vec<u64> = batch["input_ids"][i].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            let y: Vec<u64> = batch["labels"][i].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            assert_eq!((&x[..], &y[..]), (&w[..t], &w[1..]), "batch {s} row {i}");
        }
    }
}
