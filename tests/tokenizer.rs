//! The BPE tokenizer against Python `tokenizers` / `transformers`: fixtures written by
//! tools/make_tokenizer_fixtures.py (tests/fixtures/tokenizer). Encode ids and decoded strings
//! must be identical, for the tokenizer.json and the vocab.json + merges.txt loaders, for the
//! local GPT-2-like files and for the real Llama-2-format, Llama 3 and Qwen3 tokenizer.json files
//! (and variants of them as other models of those families write them).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;
use webtune::data::tokenizer::SpecialTokens;
use webtune::data::{DataError, Tokenizer};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(dir().join(rel)).unwrap()
}

fn cases() -> Value {
    serde_json::from_str(&read("cases.json")).unwrap()
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn from_json(variant: &str) -> Tokenizer {
    let rel = format!("{variant}/tokenizer.json");
    Tokenizer::from_json(&read(&rel), &rel).unwrap()
}

fn from_pair() -> Tokenizer {
    Tokenizer::from_vocab_merges(&read("gpt2like/vocab.json"), &read("gpt2like/merges.txt"), "gpt2like").unwrap()
}

/// Every fixture text: our ids == Python's, our decode of them == Python's, and the text round-trips.
fn check_cases(tok: &Tokenizer, variant: &str, label: &str) {
    let j = cases();
    let list = j["cases"].as_array().unwrap();
    assert!(list.len() > 300);
    let mut failures = Vec::new();
    for c in list {
        let text = c["text"].as_str().unwrap();
        let want = ids_of(&c[variant]["ids"]);
        let got = tok.encode(text);
        if got != want {
            failures.push(format!("encode {text:?}: got {got:?}, python {want:?}"));
        }
        let want_dec = c[variant]["decoded"].as_str().unwrap();
        let dec = tok.decode(&want);
        if dec != want_dec {
            failures.push(format!("decode {want:?}: got {dec:?}, python {want_dec:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{label}: {} mismatches:\n{}",
        failures.len(),
        failures[..failures.len().min(8)].join("\n")
    );
}

#[test]
fn json_gpt2like_matches_python() {
    check_cases(&from_json("gpt2like"), "gpt2like", "gpt2like/tokenizer.json");
}

#[test]
fn json_appended_eot_and_legacy_merges_match_python() {
    check_cases(&from_json("appended"), "appended", "appended/tokenizer.json");
}

#[test]
fn json_options_match_python() {
    // add_prefix_space, ignore_merges, added tokens with lstrip / rstrip / single_word / normalized
    check_cases(&from_json("options"), "options", "options/tokenizer.json");
}

#[test]
fn vocab_merges_pair_matches_python() {
    check_cases(&from_pair(), "gpt2like", "gpt2like vocab.json + merges.txt");
}

#[test]
fn load_dir_prefers_tokenizer_json_else_pair() {
    let a = Tokenizer::load_dir(&dir().join("gpt2like")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(dir().join("gpt2like").join(f), tmp.path().join(f)).unwrap();
    }
    let b = Tokenizer::load_dir(tmp.path()).unwrap();
    let text = "It's 2024 — <|endoftext|>héllo wörld 😀!\n\n";
    assert_eq!(a.encode(text), b.encode(text));
    assert_eq!(a.vocab_size(), b.vocab_size());
    // "appended" has only tokenizer.json
    let c = Tokenizer::load_dir(&dir().join("appended")).unwrap();
    assert_eq!(c.token_to_id("<|endoftext|>"), Some(1000));
}

#[test]
fn decode_split_multibyte_and_out_of_range_ids() {
    let j = cases();
    let toks = ["gpt2like", "appended", "options"].map(|v| (v, from_json(v)));
    let pair = from_pair();
    let mut n = 0;
    for d in j["decode_cases"].as_array().unwrap() {
        let ids = ids_of(&d["ids"]);
        let want = d["decoded"].as_str().unwrap();
        let name = d["tokenizer"].as_str().unwrap();
        let tok = &toks.iter().find(|(k, _)| *k == name).unwrap().1;
        assert_eq!(tok.decode(&ids), want, "{name} decode {ids:?}");
        if name == "gpt2like" {
            assert_eq!(pair.decode(&ids), want, "pair decode {ids:?}");
        }
        n += 1;
    }
    assert!(n >= 20);
    // a lone lead byte of a multibyte character decodes to U+FFFD, as HF does
    let tok = from_json("gpt2like");
    let e_acute = tok.encode("é");
    assert_eq!(e_acute.len(), 2);
    assert_eq!(tok.decode(&e_acute[..1]), "\u{fffd}");
}

#[test]
fn vocab_size_and_token_to_id_match_python() {
    let j = cases();
    for (variant, tok) in [
        ("gpt2like", from_json("gpt2like")),
        ("appended", from_json("appended")),
        ("options", from_json("options")),
    ] {
        assert_eq!(
            tok.vocab_size() as u64,
            j["vocab_size"][variant].as_u64().unwrap(),
            "{variant}"
        );
        for (token, id) in j["token_to_id"][variant].as_object().unwrap() {
            assert_eq!(
                tok.token_to_id(token),
                id.as_u64().map(|i| i as u32),
                "{variant} token_to_id({token:?})"
            );
        }
    }
    let pair = from_pair();
    assert_eq!(pair.vocab_size(), 1000);
    assert_eq!(pair.token_to_id("<|endoftext|>"), Some(0));
}

fn err_text(r: Result<Tokenizer, DataError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_files_are_refused_with_the_file_named() {
    let cases = [
        ("bad/truncated.json", "not valid JSON"),
        ("bad/wordpiece.json", "model.type is \"WordPiece\""),
        ("bad/unknown_merge.json", "not in the vocabulary"),
        ("bad/whitespace_pretok.json", "pre_tokenizer.type is \"Whitespace\""),
    ];
    for (file, what) in cases {
        let msg = err_text(Tokenizer::from_json(&read(file), file));
        assert!(msg.contains(file) && msg.contains(what), "{file}: {msg}");
    }
    let msg = err_text(Tokenizer::from_json("[1, 2]", "list.json"));
    assert!(msg.contains("list.json"), "{msg}");
    let msg = err_text(Tokenizer::from_json("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"decoder\": {\"type\": \"ByteLevel\"}}", "neg.json"));
    assert!(msg.contains("neg.json") && msg.contains("\"a\""), "{msg}");

    let vocab = read("gpt2like/vocab.json");
    let merges = read("gpt2like/merges.txt");
    let msg = err_text(Tokenizer::from_vocab_merges(
        &vocab,
        &read("bad/truncated_merges.txt"),
        "m1",
    ));
    let last_line = read("bad/truncated_merges.txt").lines().count();
    assert!(
        msg.contains("m1: merges.txt") && msg.contains(&format!("line {last_line}")),
        "{msg}"
    );
    let msg = err_text(Tokenizer::from_vocab_merges(
        &read("bad/truncated_vocab.json"),
        &merges,
        "m2",
    ));
    assert!(
        msg.contains("m2: vocab.json") && msg.contains("not valid JSON"),
        "{msg}"
    );
    let msg = err_text(Tokenizer::from_vocab_merges(&vocab, "#version: 0.2\nĠ zzzq\n", "m3"));
    assert!(msg.contains("m3") && msg.contains("zzzq"), "{msg}");

    // load_dir: neither file -> the dir is named; an unreadable tokenizer.json -> its path is named
    let tmp = tempfile::tempdir().unwrap();
    let msg = err_text(Tokenizer::load_dir(tmp.path()));
    assert!(
        msg.contains(&tmp.path().display().to_string()) && msg.contains("tokenizer.json"),
        "{msg}"
    );
    std::fs::write(tmp.path().join("tokenizer.json"), b"{\"model\": \xff}").unwrap();
    let msg = err_text(Tokenizer::load_dir(tmp.path()));
    assert!(msg.contains("tokenizer.json"), "{msg}");
}

#[test]
fn encode_decode_round_trip_and_no_panic_on_odd_ids() {
    let tok = from_json("gpt2like");
    for text in [
        "",
        " ",
        "\u{0}",
        "a\u{10ffff}b",
        "'''''",
        "<|endoftext|><|endoftext|>",
        "\r\n\r\n  \t",
    ] {
        assert_eq!(tok.decode(&tok.encode(text)), text);
    }
    assert_eq!(tok.decode(&[u32::MAX, 5_000_000]), "");
}

/// Encode throughput (not asserted): `cargo test --test tokenizer -- --ignored --nocapture`.
#[test]
#[ignore]
fn encode_speed() {
    let tok = from_json("gpt2like");
    let j = cases();
    let mut text = String::new();
    for c in j["cases"].as_array().unwrap() {
        text.push_str(c["text"].as_str().unwrap());
        text.push('\n');
    }
    let code = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/data/tokenizer/bpe.rs")).unwrap();
    let toks = [
        ("gpt2like", tok),
        ("llama2", Tokenizer::from_json(&family_json("llama2"), "llama2").unwrap()),
        ("llama3", Tokenizer::from_json(&family_json("llama3"), "llama3").unwrap()),
        ("qwen3", Tokenizer::from_json(&family_json("qwen3"), "qwen3").unwrap()),
    ];
    for (name, tok) in &toks {
        for (label, t) in [("fixture texts", &text), ("rust source", &code)] {
            let big = t.repeat((4_000_000 / t.len()).max(1));
            let start = std::time::Instant::now();
            let n = tok.encode(&big).len();
            let s = start.elapsed().as_secs_f64();
            println!(
                "{name} {label}: {:.1} MB in {s:.2}s = {:.2} MB/s, {n} tokens",
                big.len() as f64 / 1e6,
                big.len() as f64 / 1e6 / s
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Real tokenizers (tests/fixtures/tokenizer/{llama2,llama3,qwen3}, see REAL.md) and variants.

fn families() -> &'static Value {
    static F: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    F.get_or_init(|| serde_json::from_str(&read("families.json")).unwrap())
}

/// A real family's tokenizer.json text (stored gzipped).
fn family_json(family: &str) -> String {
    let gz = std::fs::read(dir().join(family).join("tokenizer.json.gz")).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut text).unwrap();
    text
}

/// The base file of a variant with its components replaced, as the fixture script builds it.
fn variant_json(base_cache: &mut std::collections::HashMap<String, Value>, name: &str) -> String {
    let v = &families()["variants"][name];
    let base = v["base"].as_str().unwrap();
    let root = base_cache.entry(base.to_string()).or_insert_with(|| {
        let text = if dir().join(base).join("tokenizer.json.gz").exists() {
            family_json(base)
        } else {
            read(&format!("{base}/tokenizer.json"))
        };
        serde_json::from_str(&text).unwrap()
    });
    let mut j = root.clone();
    for (k, val) in v["set"].as_object().unwrap() {
        j[k] = val.clone();
    }
    j.to_string()
}

/// Every text of the corpus: ids with and without special tokens, decode with and without
/// special tokens; decode-only id lists; vocab size and token lookups, against Python.
fn check_variants(names: &[&str]) {
    let f = families();
    let texts: Vec<&str> = f["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(texts.len() > 200);
    let mut cache = std::collections::HashMap::new();
    for &name in names {
        let v = &f["variants"][name];
        let tok = Tokenizer::from_json(&variant_json(&mut cache, name), name).unwrap();
        let (prefix, suffix) = (ids_of(&v["prefix"]), ids_of(&v["suffix"]));
        assert_eq!(tok.special_tokens().prefix, prefix, "{name} prefix");
        assert_eq!(tok.special_tokens().suffix, suffix, "{name} suffix");
        assert_eq!(tok.vocab_size() as u64, v["vocab_size"].as_u64().unwrap(), "{name} vocab size");
        let mut failures = Vec::new();
        for (text, r) in texts.iter().zip(v["results"].as_array().unwrap()) {
            let r = r.as_array().unwrap();
            let want = ids_of(&r[0]);
            let got = tok.encode(text);
            if got != want {
                failures.push(format!("encode {text:?}: got {got:?}, python {want:?}"));
            }
            let got = tok.encode_with_special_tokens(text);
            let want_sp: Vec<u32> = prefix.iter().chain(&want).chain(&suffix).copied().collect();
            if got != want_sp {
                failures.push(format!("encode with special tokens {text:?}: got {got:?}, python {want_sp:?}"));
            }
            let want_dec = r[1].as_str().unwrap();
            let dec = tok.decode(&want);
            if dec != want_dec {
                failures.push(format!("decode {want:?}: got {dec:?}, python {want_dec:?}"));
            }
            let want_skip = r.get(2).map_or(want_dec, |s| s.as_str().unwrap());
            let skip = tok.decode_skip_special(&want);
            if skip != want_skip {
                failures.push(format!("decode skipping specials {want:?}: got {skip:?}, python {want_skip:?}"));
            }
        }
        for d in v["decode_cases"].as_array().unwrap() {
            let ids = ids_of(&d[0]);
            assert_eq!(tok.decode(&ids), d[1].as_str().unwrap(), "{name} decode {ids:?}");
            assert_eq!(tok.decode_skip_special(&ids), d[2].as_str().unwrap(), "{name} decode skip {ids:?}");
        }
        for (token, id) in v["token_to_id"].as_object().unwrap() {
            assert_eq!(tok.token_to_id(token), id.as_u64().map(|i| i as u32), "{name} token_to_id({token:?})");
        }
        for pair in v["id_to_token"].as_array().unwrap() {
            let id = pair[0].as_u64().unwrap() as u32;
            assert_eq!(tok.id_to_token(id), pair[1].as_str(), "{name} id_to_token({id})");
        }
        assert!(
            failures.is_empty(),
            "{name}: {} mismatches:\n{}",
            failures.len(),
            failures[..failures.len().min(8)].join("\n")
        );
    }
}

#[test]
fn llama2_format_real_file_and_variants_match_python() {
    // Prepend/Replace normalizer, byte_fallback, fuse_unk, "<s>" template; Metaspace "first" (the
    // legacy=false / Mistral layout); NFKD + Metaspace "always" with split
    check_variants(&["llama2", "llama2_metaspace", "llama2_nfkd_split"]);
}

#[test]
fn llama3_real_file_and_variants_match_python() {
    // Split with the lookahead pattern, ignore_merges, 256 special tokens; Llama 3.2's BOS template
    check_variants(&["llama3", "llama3_bos"]);
}

#[test]
fn qwen3_real_file_matches_python() {
    // NFC normalizer, Split with Qwen's pattern (digits one by one), merges as pairs
    check_variants(&["qwen3"]);
}

#[test]
fn other_pipelines_match_python() {
    // SmolLM2's Digits + ByteLevel; NFKC/Lowercase/Strip, Split behaviours, invert, Replace regex,
    // Prepend, NFD, Contiguous digits, Roberta and template post-processors, decoder Sequence
    check_variants(&["smollm2like", "mixed_a", "mixed_b", "mixed_c"]);
}

fn special_of(v: &Value) -> SpecialTokens {
    let id = |k: &str| v[k].as_u64().map(|i| i as u32);
    let mut s = SpecialTokens {
        bos: id("bos"),
        eos: id("eos"),
        pad: id("pad"),
        unk: id("unk"),
        prefix: ids_of(&v["prefix"]),
        suffix: ids_of(&v["suffix"]),
        ..SpecialTokens::default()
    };
    s.add_bos = s.bos.is_some_and(|b| s.prefix.contains(&b));
    s.add_eos = s.eos.is_some_and(|e| s.suffix.contains(&e));
    s
}

/// tokenizer_config.json on top of tokenizer.json: the special tokens and added ids equal what
/// transformers' AutoTokenizer reports for a folder holding the two files.
#[test]
fn tokenizer_config_special_tokens_match_transformers() {
    let f = families();
    let mut cache = std::collections::HashMap::new();
    for (name, c) in f["configs"].as_object().unwrap() {
        let variant = c["variant"].as_str().unwrap();
        let family = f["variants"][variant]["base"].as_str().unwrap();
        let mut config: Value = serde_json::from_str(&read(&format!("{family}/tokenizer_config.json"))).unwrap();
        for (k, v) in c["config"].as_object().unwrap() {
            config[k] = v.clone();
        }
        let tok = Tokenizer::from_json(&variant_json(&mut cache, variant), variant)
            .unwrap()
            .with_config(&config.to_string(), name)
            .unwrap();
        assert_eq!(tok.special_tokens(), &special_of(&c["special"]), "{name}");
    }
    // load_dir reads tokenizer_config.json beside tokenizer.json
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("tokenizer.json"), family_json("qwen3")).unwrap();
    std::fs::copy(dir().join("qwen3/tokenizer_config.json"), tmp.path().join("tokenizer_config.json")).unwrap();
    let tok = Tokenizer::load_dir(tmp.path()).unwrap();
    assert_eq!(tok.special_tokens(), &special_of(&f["configs"]["qwen3"]["special"]));
    // a config naming a token the tokenizer lacks is refused, naming the file and the field
    let msg = err_text(Tokenizer::from_json(&variant_json(&mut cache, "qwen3"), "q").and_then(|t| {
        t.with_config(r#"{"eos_token": {"content": "<|nope|>"}}"#, "cfg.json")
    }));
    assert!(msg.contains("cfg.json") && msg.contains("eos_token") && msg.contains("<|nope|>"), "{msg}");
    let msg = err_text(Tokenizer::from_json(&variant_json(&mut cache, "qwen3"), "q").and_then(|t| {
        t.with_config(r#"{"bos_token": 5}"#, "cfg.json")
    }));
    assert!(msg.contains("cfg.json") && msg.contains("bos_token"), "{msg}");
}

/// A small tokenizer.json with the given components (the gpt2like model underneath).
fn with_components(set: &[(&str, Value)]) -> String {
    let mut j: Value = serde_json::from_str(&read("gpt2like/tokenizer.json")).unwrap();
    for (k, v) in set {
        j[*k] = v.clone();
    }
    j.to_string()
}

#[test]
fn hostile_tokenizer_files_are_refused_with_the_file_and_field_named() {
    use serde_json::json;
    let split = |pattern: &str| {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]})
    };
    let cases: Vec<(String, &str)> = vec![
        // a regex that does not compile, and Oniguruma syntax fancy-regex does not know
        (with_components(&[("pre_tokenizer", split("(unclosed"))]), "pre_tokenizer.pretokenizers[0].pattern.Regex"),
        (with_components(&[("pre_tokenizer", split(r"\p{NoSuchClass}+"))]), "does not compile"),
        (with_components(&[("pre_tokenizer", json!({"type": "Split", "pattern": {"Regex": ""}, "behavior": "Isolated", "invert": false}))]), "empty"),
        (with_components(&[("pre_tokenizer", json!({"type": "Split", "pattern": {"Glob": "*"}, "behavior": "Isolated", "invert": false}))]), "pre_tokenizer.pattern"),
        (with_components(&[("pre_tokenizer", json!({"type": "Split", "pattern": {"String": "x"}, "behavior": "Sideways", "invert": false}))]), "pre_tokenizer.behavior"),
        (with_components(&[("pre_tokenizer", json!({"type": "Whitespace"}))]), "pre_tokenizer.type is \"Whitespace\""),
        (with_components(&[("normalizer", json!({"type": "BertNormalizer"}))]), "normalizer.type \"BertNormalizer\""),
        (with_components(&[("normalizer", json!({"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Precompiled"}]}))]), "normalizer.normalizers[1].type \"Precompiled\""),
        (with_components(&[("decoder", json!({"type": "WordPiece"}))]), "decoder.type is \"WordPiece\""),
        (with_components(&[("decoder", json!({"type": "Strip", "content": "ab", "start": 1, "stop": 0}))]), "decoder.content"),
        (with_components(&[("post_processor", json!({"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<x>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {}}))]), "\"<x>\""),
        (with_components(&[("post_processor", json!({"type": "TemplateProcessing", "single": [{"Sequence": {"id": "B", "type_id": 0}}], "special_tokens": {}}))]), "post_processor.single[0]"),
        (with_components(&[("post_processor", json!({"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<x>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {"<x>": {"id": "<x>", "ids": [4294967295u64], "tokens": ["<x>"]}}}))]), "ids[0]"),
        (with_components(&[("post_processor", json!({"type": "BertProcessing", "cls": ["[CLS]", 0], "sep": "[SEP]"}))]), "post_processor.sep"),
        (with_components(&[("version", json!("2.0"))]), "version"),
        (with_components(&[("pre_tokenizer", json!({"type": "Sequence", "pretokenizers": vec![json!({"type": "Digits", "individual_digits": true}); 100_000]}))]), "100000 stages"),
    ];
    for (text, what) in &cases {
        let msg = err_text(Tokenizer::from_json(text, "hostile.json"));
        assert!(msg.starts_with("hostile.json: ") && msg.contains(what), "want {what:?}: {msg}");
    }

    // byte_fallback without the <0xNN> tokens (and no byte-level alphabet to make it moot)
    let mut j: Value = serde_json::from_str(&family_json("llama2")).unwrap();
    let vocab = j["model"]["vocab"].as_object_mut().unwrap();
    vocab.remove("<0x41>");
    vocab.remove("<0xFF>");
    let msg = err_text(Tokenizer::from_json(&j.to_string(), "nofallback.json"));
    assert!(msg.contains("nofallback.json") && msg.contains("byte_fallback") && msg.contains("<0x41>"), "{msg}");
    // an absurd id, and a merge naming a token the vocabulary lacks
    let mut j: Value = serde_json::from_str(&read("gpt2like/tokenizer.json")).unwrap();
    j["model"]["vocab"]["Ġzz"] = Value::from(4_000_000_000u64);
    let msg = err_text(Tokenizer::from_json(&j.to_string(), "absurd.json"));
    assert!(msg.contains("absurd.json") && msg.contains("\"Ġzz\"") && msg.contains("4000000000"), "{msg}");
    let mut j: Value = serde_json::from_str(&read("gpt2like/tokenizer.json")).unwrap();
    j["model"]["merges"].as_array_mut().unwrap().push(serde_json::json!(["Ġth", "<missing>"]));
    let msg = err_text(Tokenizer::from_json(&j.to_string(), "merge.json"));
    assert!(msg.contains("merge.json") && msg.contains("<missing>"), "{msg}");
}

/// A Split regex that backtracks without end returns (the piece is left uncut from there, as
/// `tokenizers`' fancy-regex build does); `try_encode` reports it. A text needing an unknown
/// token the vocabulary lacks is an error of `try_encode` too.
#[test]
fn backtracking_regex_and_missing_unknown_token_do_not_hang_or_panic() {
    use serde_json::json;
    let text = with_components(&[(
        "pre_tokenizer",
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "(?:a|aa)+(?=b)|\\s"}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}),
    )]);
    let tok = Tokenizer::from_json(&text, "backtrack.json").unwrap();
    let hostile = format!("x y {}c", "a".repeat(80));
    let start = std::time::Instant::now();
    let ids = tok.encode(&hostile);
    assert!(start.elapsed().as_secs() < 60);
    assert_eq!(tok.decode(&ids), hostile);
    let msg = tok.try_encode(&hostile).unwrap_err().to_string();
    assert!(msg.contains("backtrack"), "{msg}");
    assert_eq!(tok.try_encode("x y").unwrap(), tok.encode("x y"));

    let mut j: Value = serde_json::from_str(&family_json("llama2")).unwrap();
    j["model"]["byte_fallback"] = Value::Bool(false);
    j["model"]["unk_token"] = Value::from("<not-in-vocab>");
    let tok = Tokenizer::from_json(&j.to_string(), "unk.json").unwrap();
    assert!(tok.try_encode("Hello").is_ok());
    let msg = tok.try_encode("Hello \u{10fffd}").unwrap_err().to_string();
    assert!(msg.contains("<not-in-vocab>"), "{msg}");
    assert_eq!(tok.encode("Hello \u{10fffd}"), tok.encode("Hello "));
}

/// Text data starts each record as the tokenizer starts a sequence (transformers' `tokenizer(text)`):
/// the Llama-2-format file's <s> (its post-processor's template), nothing for Qwen3 (ByteLevel);
/// a prompt's prefix is not trained on.
#[test]
fn text_records_start_with_the_tokenizers_prefix() {
    let text_data = b"{\"text\": \"Hello world\"}\n";
    let chat_data = b"{\"prompt\": \"Q: 2+2?\", \"completion\": \" 4\"}\n";
    for (family, bos) in [("llama2", Some(1u32)), ("qwen3", None)] {
        let config = read(&format!("{family}/tokenizer_config.json"));
        let tok = Tokenizer::from_json(&family_json(family), family).unwrap().with_config(&config, family).unwrap();
        let parse = |data: &[u8]| {
            webtune::data::Dataset::parse("d.jsonl", "d.jsonl", data, 200_000, &|| Ok((family.to_string(), &tok))).unwrap().records
        };
        let (t, pc) = (parse(text_data), parse(chat_data));
        let prefix: Vec<u32> = bos.into_iter().collect();
        let text: Vec<u32> = prefix.iter().copied().chain(tok.encode("Hello world")).collect();
        assert_eq!(t[0].input_ids, text, "{family}");
        assert_eq!(t[0].input_ids, tok.encode_with_special_tokens("Hello world"), "{family}: as tokenizer(text)");
        assert_eq!(t[0].labels, None);
        let (p, c) = (tok.encode("Q: 2+2?"), tok.encode(" 4"));
        let ids: Vec<u32> = prefix.iter().chain(&p).chain(&c).copied().collect();
        let labels: Vec<i32> = prefix.iter().chain(&p).map(|_| -100).chain(c.iter().map(|&t| t as i32)).collect();
        assert_eq!((&pc[0].input_ids, pc[0].labels.as_ref()), (&ids, Some(&labels)), "{family}");
    }
}
