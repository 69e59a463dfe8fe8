//! The bodies of webtune's fuzz targets (fuzz/fuzz_targets/*.rs, run by cargo-fuzz) and of their
//! replay in the normal test suite (tests/fuzz_replay.rs). Each feeds arbitrary bytes to one
//! loader a user's file goes through and checks what it promises: an error or a value, never a
//! panic, an abort or a hang, and for what it accepts an invariant (finite tensors of the declared
//! shapes, ids inside the vocabulary, a round trip through the writer, cuts that keep the ids).
#![allow(dead_code)]

use std::sync::OnceLock;

use webtune::data::{Dataset, Tokenizer};
use webtune::flags::Style;
use webtune::model::weights::{param_count, param_shapes};
use webtune::model::{ModelConfig, Weights, LoraAdapter};
use webtune::train::checkpoint::{optimizer_from_safetensors, TrainerState};
use webtune::train::RunSpec;

/// A GPT-2 small enough that a fuzzer can build whole weight files for it.
pub const SMALL_CONFIG: &str =
    r#"{"n_layer": 1, "n_head": 2, "n_embd": 4, "vocab_size": 5, "n_positions": 3, "eos_token_id": 4, "bos_token_id": 4}"#;
/// The tiny test model's config (2 layers, 48 wide, vocab 97), for adapters.
pub const TINY_CONFIG: &str = include_str!("../tests/fixtures/tiny/model/config.json");
const TINY_TOKENIZER: &str = include_str!("../tests/fixtures/tiny/tokenizer/tokenizer.json");
const GPT2LIKE_TOKENIZER: &str = include_str!("../tests/fixtures/tokenizer/gpt2like/tokenizer.json");
const OPTIONS_TOKENIZER: &str = include_str!("../tests/fixtures/tokenizer/options/tokenizer.json");
/// Text every fuzzed tokenizer encodes: letters, digits, contractions, runs of whitespace, an
/// added token, multi-byte characters.
const SAMPLE: &str = "Hello wörld, it's 2024!  <|endoftext|>\n\n\tdone 😀 x";

fn config(text: &'static str, cell: &'static OnceLock<ModelConfig>) -> &'static ModelConfig {
    cell.get_or_init(|| ModelConfig::from_json(text, "config.json").expect("the fuzz configs are valid"))
}

fn small() -> &'static ModelConfig {
    static C: OnceLock<ModelConfig> = OnceLock::new();
    config(SMALL_CONFIG, &C)
}

fn tiny() -> &'static ModelConfig {
    static C: OnceLock<ModelConfig> = OnceLock::new();
    config(TINY_CONFIG, &C)
}

fn tokenizer(text: &'static str, cell: &'static OnceLock<Tokenizer>) -> &'static Tokenizer {
    cell.get_or_init(|| Tokenizer::from_json(text, "tokenizer.json").expect("the fixture tokenizers are valid"))
}

/// Two inputs from one: a little-endian u16 length, that many bytes, then the rest.
pub fn split(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 2 {
        return (&[], data);
    }
    let n = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    (&data[2..2 + n], &data[2 + n..])
}

/// The inverse of [`split`] (for seeds).
pub fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut v = (a.len() as u16).to_le_bytes().to_vec();
    v.extend_from_slice(a);
    v.extend_from_slice(b);
    v
}

fn assert_finite(what: &str, data: &[f32]) {
    assert!(data.iter().all(|x| x.is_finite()), "{what}: a non-finite value was accepted");
}

/// model.safetensors for the small config: accepted files hold every tensor with its shape,
/// finite, and survive a write and a read.
pub fn safetensors_model(data: &[u8]) {
    let Ok(w) = Weights::from_bytes(SMALL_CONFIG, "config.json", data, "model.safetensors") else { return };
    for (name, shape) in param_shapes(&w.config) {
        let t = &w.tensors[&name];
        assert_eq!(t.shape, shape, "{name}");
        assert_eq!(t.data.len(), shape.iter().product::<usize>(), "{name}");
        assert_finite(&name, &t.data);
    }
    let bytes = w.to_safetensors().expect("an accepted model writes");
    let back = Weights::from_bytes(SMALL_CONFIG, "config.json", &bytes, "model.safetensors").expect("and reads back");
    assert!(back.tensors == w.tensors, "round trip changed the weights");
}

/// config.json: an accepted config is consistent, and its size is computed without overflow.
pub fn config_json(data: &[u8]) {
    let Ok(c) = ModelConfig::from_json(&String::from_utf8_lossy(data), "config.json") else { return };
    assert!(c.n_layer > 0 && c.n_head > 0 && c.n_kv_head > 0 && c.head_dim > 0 && c.vocab_size > 0 && c.n_positions > 0);
    assert_eq!(c.n_head % c.n_kv_head, 0);
    assert!(c.eos_token_ids.iter().all(|&e| (e as usize) < c.vocab_size) && (c.bos_token_id as usize) < c.vocab_size);
    let _ = param_count(&c);
    let _ = webtune::model::weights::check_fits(&c, &|| "the model".to_string());
}

/// Checks that cutting `text` where `tok.cut` says keeps the ids of the whole.
fn check_cut(tok: &Tokenizer, text: &str) {
    let Ok(whole) = tok.try_encode(text) else { return };
    if let Some(p) = tok.cut(text) {
        assert!(p > 0 && p < text.len() && text.is_char_boundary(p));
        let mut ids = tok.try_encode(&text[..p]).expect("a part encodes when the whole does");
        ids.extend(tok.try_encode(&text[p..]).expect("a part encodes when the whole does"));
        assert!(ids == whole, "cut at {p} of {text:?} changes the ids");
    }
}

/// tokenizer.json: an accepted tokenizer has a vocabulary, encodes and decodes the sample text
/// without panicking, and its cuts keep the ids.
pub fn tokenizer_json(data: &[u8]) {
    let Ok(t) = Tokenizer::from_json(&String::from_utf8_lossy(data), "tokenizer.json") else { return };
    assert!(t.vocab_size() > 0);
    if let Ok(ids) = t.try_encode(SAMPLE) {
        let _ = t.decode(&ids);
    }
    check_cut(&t, SAMPLE);
}

/// Any text through a GPT-2-like tokenizer round-trips (byte-level BPE loses nothing), and through
/// one with add_prefix_space and lstrip/rstrip/single_word added tokens its cuts keep the ids.
pub fn tokenizer_encode(data: &[u8]) {
    static G: OnceLock<Tokenizer> = OnceLock::new();
    static O: OnceLock<Tokenizer> = OnceLock::new();
    let text = String::from_utf8_lossy(data);
    let g = tokenizer(GPT2LIKE_TOKENIZER, &G);
    let ids = g.try_encode(&text).expect("small text encodes");
    assert!(ids.iter().all(|&i| (i as usize) < g.vocab_size()));
    assert_eq!(g.decode(&ids), text, "round trip");
    check_cut(g, &text);
    check_cut(tokenizer(OPTIONS_TOKENIZER, &O), &text);
}

/// A dataset file (.jsonl when the first byte is even, else .txt) for the tiny model with its
/// tokenizer: accepted data has records of ids inside the vocabulary, labels aligned with them.
pub fn dataset(data: &[u8]) {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    let Some((&kind, bytes)) = data.split_first() else { return };
    let name = if kind % 2 == 0 { "data.jsonl" } else { "data.txt" };
    let tok = tokenizer(TINY_TOKENIZER, &T);
    let Ok(d) = Dataset::parse(name, name, bytes, 97, &|| Ok(("tokenizer".into(), tok))) else { return };
    assert!(!d.records.is_empty());
    for r in &d.records {
        assert!(r.input_ids.iter().all(|&i| i < 97));
        if let Some(l) = &r.labels {
            assert_eq!(l.len(), r.input_ids.len());
            assert!(l.iter().all(|&y| y == -100 || (0..97).contains(&y)));
        }
    }
    assert_eq!(d.stream(96).expect("a small stream").tokens.len(), d.stream_len());
}

/// A PEFT adapter (adapter_config.json, adapter_model.safetensors; see [`split`]) for the tiny
/// model: accepted adapters have finite A [r, in] and B [out, r], and survive a write and a read.
pub fn adapter(data: &[u8]) {
    let (config, st) = split(data);
    let Ok(a) = LoraAdapter::from_peft_bytes(&String::from_utf8_lossy(config), st, tiny(), "adapter") else { return };
    for m in &a.modules {
        let (fan_in, fan_out) = m.linear.dims(tiny());
        assert_eq!((m.a.shape.as_slice(), m.b.shape.as_slice()), (&[a.config.r, fan_in][..], &[fan_out, a.config.r][..]));
        assert_finite(&m.name(), &m.a.data);
        assert_finite(&m.name(), &m.b.data);
    }
    let (c, b) = a.to_peft_bytes("").expect("an accepted adapter writes");
    let back = LoraAdapter::from_peft_bytes(&c, &b, tiny(), "adapter").expect("and reads back");
    assert!(back == a, "round trip changed the adapter");
}

/// A checkpoint's trainer_state.json and optimizer.safetensors (see [`split`]): an accepted state
/// gives settings that validate or are refused by name; accepted moments are finite pairs.
pub fn checkpoint(data: &[u8]) {
    let (state, opt) = split(data);
    if let Ok(st) = TrainerState::from_json(&String::from_utf8_lossy(state), "trainer_state.json") {
        if let Ok(spec) = RunSpec::from_state(&st, "--resume") {
            let _ = spec.validate(Style::Cli);
            let _ = spec.lr_schedule().lr_at(st.step);
        }
    }
    if let Ok(moments) = optimizer_from_safetensors(opt, "optimizer.safetensors") {
        for (name, (m, v)) in &moments {
            assert_finite(name, &m.data);
            assert_finite(name, &v.data);
        }
    }
}

/// A target's body: arbitrary bytes in, a panic only when a promise is broken.
pub type Target = fn(&[u8]);

/// Every target by the name of its corpus folder.
pub const TARGETS: [(&str, Target); 7] = [
    ("safetensors_model", safetensors_model),
    ("config_json", config_json),
    ("tokenizer_json", tokenizer_json),
    ("tokenizer_encode", tokenizer_encode),
    ("dataset", dataset),
    ("adapter", adapter),
    ("checkpoint", checkpoint),
];
