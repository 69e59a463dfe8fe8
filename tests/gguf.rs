//! GGUF LoRA adapters for llama.cpp (src/model/gguf.rs, `webtune export-gguf`, `train --gguf`).
//! A small GGUF reader here parses what webtune writes, which is checked against hand-derived
//! bytes (header, metadata, tensor infos, offsets, padding, llama.cpp's rotary row order, f16
//! rounding) and against the files llama.cpp's own converter (convert_lora_to_gguf.py) wrote for
//! the same adapters: tests/fixtures/gguf, made by tools/check_gguf.py.
mod common;
use std::path::{Path, PathBuf};

use common::{text, webtune, webtune_ok};
use webtune::model::gguf::GgufDtype;
use webtune::model::lora::{LoraConfig, LoraModule};
use webtune::model::{Family, HostTensor, Linear, LoraAdapter, ModelConfig};

// ---------------------------------------------------------------------------------------
// A GGUF v3 reader (the specification's layout, read independently of the writer).

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Int(i128),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    Arr(Vec<Val>),
}

#[derive(Debug, PartialEq)]
struct Info {
    name: String,
    dims: Vec<u64>,
    ty: u32,
    offset: u64,
}

struct Gguf {
    kv: Vec<(String, Val)>,
    tensors: Vec<Info>,
    data_start: usize,
    bytes: Vec<u8>,
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        assert!(self.at + n <= self.b.len(), "GGUF ends inside a field at byte {}", self.at);
        self.at += n;
        &self.b[self.at - n..self.at]
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        String::from_utf8(self.take(n).to_vec()).expect("GGUF string is not UTF-8")
    }
    fn value(&mut self, ty: u32) -> Val {
        let int = |b: &[u8], signed: bool| -> i128 {
            let mut v: i128 = 0;
            for (i, x) in b.iter().enumerate() {
                v |= (*x as i128) << (8 * i);
            }
            if signed && b[b.len() - 1] & 0x80 != 0 {
                v -= 1i128 << (8 * b.len());
            }
            v
        };
        match ty {
            0 | 1 => Val::Int(int(self.take(1), ty == 1)),
            2 | 3 => Val::Int(int(self.take(2), ty == 3)),
            4 | 5 => Val::Int(int(self.take(4), ty == 5)),
            10 | 11 => Val::Int(int(self.take(8), ty == 11)),
            6 => Val::F32(f32::from_le_bytes(self.take(4).try_into().unwrap())),
            12 => Val::F64(f64::from_le_bytes(self.take(8).try_into().unwrap())),
            7 => Val::Bool(self.take(1)[0] != 0),
            8 => Val::Str(self.string()),
            9 => {
                let item = self.u32();
                let n = self.u64();
                Val::Arr((0..n).map(|_| self.value(item)).collect())
            }
            t => panic!("unknown GGUF value type {t}"),
        }
    }
}

impl Gguf {
    /// Parses a file and checks its framing: magic, version 3, alignment (general.alignment or
    /// 32), every tensor's offset aligned and its data inside the file.
    fn parse(bytes: Vec<u8>) -> Gguf {
        let mut c = Cursor { b: &bytes, at: 0 };
        assert_eq!(c.take(4), b"GGUF", "magic");
        assert_eq!(c.u32(), 3, "version");
        let (n_tensors, n_kv) = (c.u64(), c.u64());
        let mut kv = Vec::new();
        let mut types = Vec::new();
        for _ in 0..n_kv {
            let key = c.string();
            let ty = c.u32();
            types.push(ty);
            kv.push((key, c.value(ty)));
        }
        let mut tensors = Vec::new();
        for _ in 0..n_tensors {
            let name = c.string();
            let n_dims = c.u32();
            let dims = (0..n_dims).map(|_| c.u64()).collect();
            let (ty, offset) = (c.u32(), c.u64());
            tensors.push(Info { name, dims, ty, offset });
        }
        let align = match kv.iter().find(|(k, _)| k == "general.alignment") {
            Some((_, Val::Int(a))) => *a as usize,
            _ => 32,
        };
        let data_start = c.at.next_multiple_of(align);
        assert!(bytes[c.at..data_start].iter().all(|&x| x == 0), "padding before the data is not zeros");
        let g = Gguf { kv, tensors, data_start, bytes };
        for t in &g.tensors {
            assert_eq!(t.offset % align as u64, 0, "{}: offset {} not aligned to {align}", t.name, t.offset);
            assert!(g.data_start + t.offset as usize + g.nbytes(t) <= g.bytes.len(), "{}: data outside the file", t.name);
        }
        g
    }

    fn nbytes(&self, t: &Info) -> usize {
        let size = match t.ty {
            0 => 4,
            1 => 2,
            ty => panic!("{}: ggml type {ty} is not f32/f16", t.name),
        };
        t.dims.iter().product::<u64>() as usize * size
    }

    fn get(&self, key: &str) -> Option<&Val> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn info(&self, name: &str) -> &Info {
        self.tensors.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no tensor {name}"))
    }

    fn raw(&self, name: &str) -> &[u8] {
        let t = self.info(name);
        let start = self.data_start + t.offset as usize;
        &self.bytes[start..start + self.nbytes(t)]
    }

    /// The tensor as f32 (from f32 or f16).
    fn floats(&self, name: &str) -> Vec<f32> {
        let raw = self.raw(name);
        match self.info(name).ty {
            0 => raw.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
            _ => raw.chunks(2).map(|b| half::f16::from_le_bytes(b.try_into().unwrap()).to_f32()).collect(),
        }
    }

    fn names(&self) -> Vec<&str> {
        self.tensors.iter().map(|t| t.name.as_str()).collect()
    }
}

fn s(v: &str) -> Val {
    Val::Str(v.into())
}

// ---------------------------------------------------------------------------------------
// Hand-built adapters, hand-derived files.

/// A Llama-family config: 2 layers, hidden 6, 2 query heads and 1 key/value head of head_dim 4
/// (so q has 8 output rows, k 4), intermediate 5.
fn llama_config(model_type: &str) -> ModelConfig {
    let json = serde_json::json!({
        "model_type": model_type, "hidden_size": 6, "num_attention_heads": 2, "num_key_value_heads": 1,
        "head_dim": 4, "intermediate_size": 5, "num_hidden_layers": 2, "vocab_size": 11,
        "max_position_embeddings": 16, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    });
    ModelConfig::from_json(&json.to_string(), "config.json").unwrap()
}

/// Rank 1 on q_proj, k_proj and down_proj; every value distinct: A of module m in layer l is
/// 100·(3l + m) + [0, 1, ...], B is 100·(3l + m) + 50 + [0, 1, ...] (m: q 0, k 1, down 2).
fn llama_adapter(cfg: &ModelConfig) -> LoraAdapter {
    let targets = ["q_proj", "k_proj", "down_proj"].map(String::from).to_vec();
    let config = LoraConfig::new(1, 3.0, targets, 0.0, Family::Llama).unwrap();
    let mut modules = Vec::new();
    for layer in 0..2 {
        for (m, linear) in [Linear::Q, Linear::K, Linear::Down].into_iter().enumerate() {
            let (fin, fout) = linear.dims(cfg);
            let base = (100 * (3 * layer + m)) as f32;
            let a = (0..fin).map(|i| base + i as f32).collect();
            let b = (0..fout).map(|i| base + 50.0 + i as f32).collect();
            modules.push(LoraModule { layer, linear, a: HostTensor::new(&[1, fin], a), b: HostTensor::new(&[fout, 1], b) });
        }
    }
    LoraAdapter { config, modules }
}

fn metadata(arch: &str, name: &str, alpha: f32) -> Vec<(String, Val)> {
    vec![
        ("general.architecture".into(), s(arch)),
        ("general.type".into(), s("adapter")),
        ("adapter.type".into(), s("lora")),
        ("general.name".into(), s(name)),
        ("adapter.lora.alpha".into(), Val::F32(alpha)),
        ("general.quantization_version".into(), Val::Int(2)),
    ]
}

#[test]
fn llama_adapter_file_by_hand() {
    let cfg = llama_config("llama");
    let bytes = llama_adapter(&cfg).to_gguf(&cfg, GgufDtype::F32, "hand").unwrap();
    assert_eq!(&bytes[..24], [b"GGUF".as_slice(), &3u32.to_le_bytes(), &12u64.to_le_bytes(), &6u64.to_le_bytes()].concat());
    let g = Gguf::parse(bytes);
    assert_eq!(g.kv, metadata("llama", "hand", 3.0));
    // PEFT's names sorted: mlp.down_proj < self_attn.k_proj < self_attn.q_proj; lora_a then lora_b;
    // dims fastest first: lora_a [in, r], lora_b [r, out]; every tensor here is <= 32 bytes, so
    // one 32-byte slot each.
    let mut want = Vec::new();
    for l in 0..2u64 {
        for (name, fin, fout) in [("ffn_down", 5, 6), ("attn_k", 6, 4), ("attn_q", 6, 8)] {
            for (ab, dims) in [("a", vec![fin, 1]), ("b", vec![1, fout])] {
                let offset = 32 * want.len() as u64;
                want.push(Info { name: format!("blk.{l}.{name}.weight.lora_{ab}"), dims, ty: 0, offset });
            }
        }
    }
    assert_eq!(g.tensors, want);
    assert_eq!(g.data_start % 32, 0);
    assert_eq!(g.bytes.len(), g.data_start + 12 * 32, "each tensor padded to 32, the last too");
    // A as stored; B of q (2 heads of 4 rows) and of k (1 head of 4 rows) in llama.cpp's rotary
    // order: each head's rows [x0 x1 y0 y1] become [x0 y0 x1 y1]; B of down_proj as stored.
    assert_eq!(g.floats("blk.0.attn_q.weight.lora_a"), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(g.floats("blk.0.attn_q.weight.lora_b"), [50.0, 52.0, 51.0, 53.0, 54.0, 56.0, 55.0, 57.0]);
    assert_eq!(g.floats("blk.0.attn_k.weight.lora_b"), [150.0, 152.0, 151.0, 153.0]);
    assert_eq!(g.floats("blk.1.attn_k.weight.lora_b"), [450.0, 452.0, 451.0, 453.0]);
    assert_eq!(g.floats("blk.1.ffn_down.weight.lora_a"), [500.0, 501.0, 502.0, 503.0, 504.0]);
    assert_eq!(g.floats("blk.1.ffn_down.weight.lora_b"), [550.0, 551.0, 552.0, 553.0, 554.0, 555.0]);
    // the padding after a 20-byte tensor is zeros
    let at = g.data_start + 20;
    assert!(g.bytes[at..at + 12].iter().all(|&x| x == 0));

    // Qwen2 and Qwen3 keep HF's row order.
    for t in ["qwen2", "qwen3"] {
        let cfg = llama_config(t);
        let g = Gguf::parse(llama_adapter(&cfg).to_gguf(&cfg, GgufDtype::F32, "q").unwrap());
        assert_eq!(g.kv, metadata(t, "q", 3.0));
        assert_eq!(g.floats("blk.0.attn_q.weight.lora_b"), [50.0, 51.0, 52.0, 53.0, 54.0, 55.0, 56.0, 57.0]);
        assert_eq!(g.floats("blk.0.attn_k.weight.lora_b"), [150.0, 151.0, 152.0, 153.0]);
    }
}

#[test]
fn f16_rounds_to_nearest_even_and_refuses_what_does_not_fit() {
    let cfg = llama_config("llama");
    let mut adapter = llama_adapter(&cfg);
    let third = 1.0 + 3.0 * 2f32.powi(-11); // halfway between two f16 values: to the even one
    adapter.modules[0].a.data = vec![0.5, -2.0, 1.0, 1.0 + 2f32.powi(-11), third, 65504.0];
    let g = Gguf::parse(adapter.to_gguf(&cfg, GgufDtype::F16, "h").unwrap());
    assert!(g.tensors.iter().all(|t| t.ty == 1), "every tensor f16");
    let want: Vec<u8> = [0x3800u16, 0xC000, 0x3C00, 0x3C00, 0x3C02, 0x7BFF].iter().flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(g.raw("blk.0.attn_q.weight.lora_a"), want);
    assert_eq!(g.floats("blk.0.attn_q.weight.lora_b"), [50.0, 52.0, 51.0, 53.0, 54.0, 56.0, 55.0, 57.0]);
    assert_eq!(g.bytes.len(), g.data_start + 12 * 32);

    adapter.modules[0].a.data[5] = 70000.0;
    let e = adapter.to_gguf(&cfg, GgufDtype::F16, "h").unwrap_err().to_string();
    assert!(e.contains("layers.0.self_attn.q_proj lora_A: value 70000 at index 5") && e.contains("write f32"), "{e}");
    assert!(adapter.to_gguf(&cfg, GgufDtype::F32, "h").is_ok(), "70000 fits f32");
    adapter.modules[0].b.data[3] = f32::NAN;
    let e = adapter.to_gguf(&cfg, GgufDtype::F32, "h").unwrap_err().to_string();
    assert!(e.contains("layers.0.self_attn.q_proj lora_B: value NaN at index 3 is not finite"), "{e}");
}

#[test]
fn gpt2_adapter_file_by_hand() {
    // 1 layer, width 3 (c_attn 3 -> 9, c_fc 3 -> 12), r 2 on c_attn and mlp.c_proj.
    let cfg = ModelConfig::gpt2(1, 1, 3, 11, 16);
    let config = LoraConfig::new(2, 5.5, vec!["c_attn".into(), "mlp.c_proj".into()], 0.0, Family::Gpt2).unwrap();
    let module = |linear: Linear, base: f32| {
        let (fin, fout) = linear.dims(&cfg);
        let a = (0..2 * fin).map(|i| base + i as f32).collect();
        let b = (0..fout * 2).map(|i| base + 50.0 + i as f32).collect();
        LoraModule { layer: 0, linear, a: HostTensor::new(&[2, fin], a), b: HostTensor::new(&[fout, 2], b) }
    };
    let adapter = LoraAdapter { config, modules: vec![module(Linear::AttnQkv, 0.0), module(Linear::MlpProj, 100.0)] };
    let g = Gguf::parse(adapter.to_gguf(&cfg, GgufDtype::F32, "g").unwrap());
    assert_eq!(g.kv, metadata("gpt2", "g", 5.5));
    let dims: Vec<(&str, &[u64])> = g.tensors.iter().map(|t| (t.name.as_str(), t.dims.as_slice())).collect();
    assert_eq!(
        dims,
        [
            ("blk.0.attn_qkv.weight.lora_a", [3, 2].as_slice()),
            ("blk.0.attn_qkv.weight.lora_b", &[2, 9]),
            ("blk.0.ffn_down.weight.lora_a", &[12, 2]),
            ("blk.0.ffn_down.weight.lora_b", &[2, 3]),
        ]
    );
    // A and B as PEFT stores them (llama.cpp's GPT-2 weights are [in, out] like every family's)
    assert_eq!(g.floats("blk.0.attn_qkv.weight.lora_a"), (0..6).map(|i| i as f32).collect::<Vec<_>>());
    assert_eq!(g.floats("blk.0.ffn_down.weight.lora_b"), (0..6).map(|i| 150.0 + i as f32).collect::<Vec<_>>());
    // offsets: 24 -> 32, 72 -> 96, 96, then 24
    assert_eq!(g.tensors.iter().map(|t| t.offset).collect::<Vec<_>>(), [0, 32, 128, 224]);
    assert_eq!(g.bytes.len(), g.data_start + 256);
}

#[test]
fn refuses_an_adapter_that_does_not_fit_the_model() {
    let cfg = llama_config("llama");
    let adapter = llama_adapter(&cfg);
    let gpt2 = ModelConfig::gpt2(2, 2, 6, 11, 16);
    let e = adapter.to_gguf(&gpt2, GgufDtype::F32, "x").unwrap_err().to_string();
    assert!(e.contains("Llama-family") && e.contains("gpt2"), "{e}");
    let mut bad = adapter.clone();
    bad.modules[2].a = HostTensor::new(&[1, 4], vec![0.0; 4]);
    let e = bad.to_gguf(&cfg, GgufDtype::F32, "x").unwrap_err().to_string();
    assert!(e.contains("layers.0.mlp.down_proj") && e.contains("[1, 5]"), "{e}");
    let mut deep = adapter.clone();
    deep.modules[5].layer = 2;
    let e = deep.to_gguf(&cfg, GgufDtype::F32, "x").unwrap_err().to_string();
    assert!(e.contains("layers.2") && e.contains("n_layer 2"), "{e}");
    let mut twice = adapter;
    twice.modules[3].layer = 0;
    let e = twice.to_gguf(&cfg, GgufDtype::F32, "x").unwrap_err().to_string();
    assert_eq!(e, "LoRA module layers.0.self_attn.q_proj appears twice");
}

// ---------------------------------------------------------------------------------------
// Against llama.cpp's converter.

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols).flat_map(|c| (0..rows).map(move |r| x[r * cols + c])).collect()
}

/// `webtune export-gguf` on every adapter tests/fixtures/gguf holds the converter's file for:
/// the metadata llama.cpp reads, tensor names in order, dims, types and bytes are the converter's;
/// the converter's other keys are descriptive (general.name, README.md's tags) and webtune writes
/// no key it does not. GPT-2: the converter's pair is (Bᵀ, Aᵀ) (src/model/gguf.rs), so webtune's
/// lora_a must be its lora_bᵀ and webtune's lora_b its lora_aᵀ.
#[test]
fn export_gguf_matches_llama_cpp_converter() {
    let fx = root().join("tests/fixtures/gguf");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fx.join("converter.json")).unwrap()).unwrap();
    let files = doc["files"].as_object().unwrap();
    assert!(files.len() >= 6, "converter.json lists {} files", files.len());
    let tmp = tempfile::tempdir().unwrap();
    for (file, entry) in files {
        let outtype = if file.ends_with("_f16.gguf") { "f16" } else { "f32" };
        let out = tmp.path().join(file);
        let (model, adapter) = (root().join(entry["model"].as_str().unwrap()), root().join(entry["adapter"].as_str().unwrap()));
        webtune_ok(&[
            "export-gguf".as_ref(),
            "--adapter".as_ref(),
            adapter.as_os_str(),
            "--model".as_ref(),
            model.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--outtype".as_ref(),
            outtype.as_ref(),
        ]);
        let ours = Gguf::parse(std::fs::read(&out).unwrap());
        let conv = Gguf::parse(std::fs::read(fx.join(file)).unwrap());
        for key in ["general.architecture", "general.type", "adapter.type", "adapter.lora.alpha", "general.quantization_version"] {
            assert_eq!(ours.get(key), conv.get(key), "{file}: {key}");
            assert!(ours.get(key).is_some(), "{file}: {key}");
        }
        for (key, _) in &ours.kv {
            assert!(conv.get(key).is_some(), "{file}: webtune writes {key}, the converter does not");
        }
        assert_eq!(ours.names(), conv.names(), "{file}: tensor names and order");
        let gpt2 = file.starts_with("gpt2");
        for t in &ours.tensors {
            let c = conv.info(&t.name);
            assert_eq!(t.ty, c.ty, "{file}: {} type", t.name);
            if !gpt2 {
                assert_eq!(t.dims, c.dims, "{file}: {} dims", t.name);
                assert_eq!(ours.raw(&t.name), conv.raw(&t.name), "{file}: {} data", t.name);
                continue;
            }
            let other = format!("{}{}", &t.name[..t.name.len() - 1], if t.name.ends_with('a') { 'b' } else { 'a' });
            let o = conv.info(&other);
            assert_eq!(t.dims, [o.dims[1], o.dims[0]], "{file}: {} dims vs the converter's {other}", t.name);
            let (cols, rows) = (o.dims[0] as usize, o.dims[1] as usize);
            assert_eq!(ours.floats(&t.name), transpose(&conv.floats(&other), rows, cols), "{file}: {} data", t.name);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The CLI.

fn export(adapter: &Path, model: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "export-gguf".to_string(),
        "--adapter".into(),
        adapter.display().to_string(),
        "--model".into(),
        model.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    webtune(&args)
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn export_gguf_cli_keeps_files_safe() {
    let qwen = root().join("tests/fixtures/llama/qwen2");
    let (model, adapter) = (qwen.join("model"), qwen.join("adapter_init"));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("a.gguf");
    let ok = export(&adapter, &model, &out, &[]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stderr).contains("llama-cli -m BASE.gguf --lora"), "{}", text(&ok.stderr));
    let first = std::fs::read(&out).unwrap();
    assert_eq!(Gguf::parse(first.clone()).get("general.name"), Some(&s("adapter_init")));

    // an existing file is kept unless --overwrite
    std::fs::write(&out, b"mine").unwrap();
    let e = export(&adapter, &model, &out, &[]);
    assert!(!e.status.success());
    assert!(text(&e.stderr).contains("--out") && text(&e.stderr).contains("--overwrite"), "{}", text(&e.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), b"mine");
    let ok = export(&adapter, &model, &out, &["--overwrite", "--outtype", "f32"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), first);
    assert_eq!(listing(tmp.path()), ["a.gguf"], "no temporary file left");

    // never into an input folder, never onto a folder
    let copy = tmp.path().join("adapter");
    std::fs::create_dir(&copy).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(adapter.join(f), copy.join(f)).unwrap();
    }
    let e = export(&copy, &model, &copy.join("x.gguf"), &[]);
    assert!(text(&e.stderr).contains("inside the --adapter folder"), "{}", text(&e.stderr));
    assert_eq!(listing(&copy), ["adapter_config.json", "adapter_model.safetensors"]);
    let e = export(&adapter, &model, tmp.path(), &[]);
    assert!(!e.status.success() && text(&e.stderr).contains("is a folder"), "{}", text(&e.stderr));

    // a bad --outtype, and an adapter of another family, fail naming what is wrong
    let e = export(&adapter, &model, &tmp.path().join("b.gguf"), &["--outtype", "q8_0"]);
    assert!(!e.status.success() && text(&e.stderr).contains("use f32 or f16"), "{}", text(&e.stderr));
    let tiny = root().join("tests/fixtures/tiny/adapter_init");
    let e = export(&tiny, &model, &tmp.path().join("b.gguf"), &[]);
    assert!(!e.status.success() && text(&e.stderr).contains("adapter_config.json"), "{}", text(&e.stderr));
    assert!(!tmp.path().join("b.gguf").exists());
}

/// `webtune train --gguf`: the GGUF of the trained adapter, the same bytes `export-gguf` makes
/// of the PEFT output; a file there that is not a GGUF is refused before training, and an
/// earlier GGUF is replaced only with --overwrite.
#[test]
fn train_writes_the_gguf_of_its_adapter() {
    let case = root().join("tests/fixtures/llama/llama");
    let tmp = tempfile::tempdir().unwrap();
    let (out, gguf) = (tmp.path().join("run"), tmp.path().join("run.gguf"));
    let args = |gguf: &Path| -> Vec<String> {
        [
            "train",
            "--model",
            &case.join("model").display().to_string(),
            "--data",
            &case.join("data.jsonl").display().to_string(),
            "--init-adapter",
            &case.join("adapter_init").display().to_string(),
            "--out",
            &out.display().to_string(),
            "--steps=2",
            "--batch=2",
            "--seq=16",
            "--lr=1e-2",
            "--gguf",
            &gguf.display().to_string(),
        ]
        .map(String::from)
        .to_vec()
    };
    let mine = tmp.path().join("notes.txt");
    std::fs::write(&mine, "keep").unwrap();
    let e = webtune(&args(&mine));
    assert!(!e.status.success() && text(&e.stderr).contains("not a GGUF file"), "{}", text(&e.stderr));
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "keep");
    assert!(!out.join("adapter_model.safetensors").exists(), "refused before training");

    webtune_ok(&args(&gguf));
    let trained = std::fs::read(&gguf).unwrap();
    let again = tmp.path().join("again.gguf");
    let ok = export(&out, &case.join("model"), &again, &[]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert_eq!(trained, std::fs::read(&again).unwrap());
    let g = Gguf::parse(trained);
    assert_eq!(g.get("adapter.lora.alpha"), Some(&Val::F32(3.0)));
    assert_eq!(g.tensors.len(), 8);
    // a second run replaces the earlier GGUF only when asked
    let e = webtune(&args(&gguf));
    assert!(!e.status.success() && text(&e.stderr).contains("--overwrite"), "{}", text(&e.stderr));
    let mut again = args(&gguf);
    again.push("--overwrite".into());
    webtune_ok(&again);
}
