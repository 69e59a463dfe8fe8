//! The byte-level BPE tokenizer against Python `tokenizers` / `transformers`: fixtures written by
//! tools/make_tokenizer_fixtures.py (tests/fixtures/tokenizer). Encode ids and decoded strings
//! must be identical, for the tokenizer.json and the vocab.json + merges.txt loaders.

use std::path::{Path, PathBuf};

use serde_json::Value;
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
    let code = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/data/tokenizer.rs")).unwrap();
    for (label, t) in [("fixture texts", text), ("rust source", code)] {
        let big = t.repeat((4_000_000 / t.len()).max(1));
        let start = std::time::Instant::now();
        let n = tok.encode(&big).len();
        let s = start.elapsed().as_secs_f64();
        println!(
            "{label}: {:.1} MB in {s:.2}s = {:.2} MB/s, {n} tokens",
            big.len() as f64 / 1e6,
            big.len() as f64 / 1e6 / s
        );
    }
}

/// Every fixture text joined by spaces: text with all the fixtures' scripts, digits, contractions,
/// whitespace runs and added tokens.
fn joined() -> String {
    let j = cases();
    j["cases"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap()).collect::<Vec<_>>().join(" ")
}

/// What lets a dataset's text be encoded in chunks: wherever `Tokenizer::cut` finds a place in a
/// prefix of the text, the two sides encode to the ids of the whole. Checked from ~250 prefixes
/// of the joined fixture texts for the plain, the appended-token and the options tokenizer
/// (add_prefix_space; added tokens with lstrip / rstrip / single_word / normalized).
#[test]
fn cutting_where_cut_says_keeps_the_ids_of_the_whole() {
    let text = joined();
    for variant in ["gpt2like", "appended", "options"] {
        let tok = from_json(variant);
        let whole = tok.encode(&text);
        let (mut end, mut cuts) = (text.len(), 0);
        while let Some(p) = tok.cut(&text[..end]) {
            assert!(p > 0 && p < end && text.is_char_boundary(p), "{variant}: cut {p} of {end}");
            let mut ids = tok.encode(&text[..p]);
            ids.extend(tok.encode(&text[p..]));
            assert!(ids == whole, "{variant}: cut at byte {p} ({:?} | {:?}) changes the ids", &text[p.saturating_sub(12)..p], &text[p..(p + 12).min(text.len())]);
            cuts += 1;
            end = (p.saturating_sub(40)..p).find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        }
        assert!(cuts > 200, "{variant}: only {cuts} cuts");
        // no place to cut: no space after a non-space
        assert_eq!(tok.cut("  \n\t  "), None);
        assert_eq!(tok.cut("wordwithoutspaces"), None);
    }
}

/// A .txt dataset of a few MiB is read and encoded in 1 MiB chunks (a BOM dropped): its ids are
/// those of the whole text.
#[test]
fn a_large_text_file_streams_to_the_ids_of_the_whole() {
    let tok = from_json("options");
    let base = joined();
    let mut big = String::from("\u{feff}");
    let mut i = 0;
    while big.len() < (5 << 20) / 2 {
        big.push_str(&base);
        big.push_str(["\n", "  ", " <|endoftext|> ", "\n\n", "é ", ""][i % 6]);
        i += 1;
    }
    let want = tok.encode(&big[3..]);
    let got = webtune::data::Dataset::parse("big.txt", "big.txt", &big.into_bytes(), 100_000, &|| Ok(("options".into(), &tok)))
        .unwrap();
    assert_eq!(got.records.len(), 1);
    assert!(got.records[0].input_ids == want, "{} vs {} ids", got.records[0].input_ids.len(), want.len());
}
