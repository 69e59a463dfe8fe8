//! Chat records through the real Llama 3 and Qwen3 templates equal transformers'
//! `apply_chat_template(..., tokenize=True, return_assistant_tokens_mask=True)` (tests/fixtures/chat,
//! tools/make_chat_fixtures.py): the ids always; the mask exactly for the templates with
//! `{% generation %}` markers, and for the real templates (no markers) the assistant turns found by
//! rendering, computed in Python with transformers' rendering and tokenizers' offsets.

use std::io::Read;
use std::path::PathBuf;

use webtune::data::{Dataset, Tokenizer};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn tokenizer(family: &str, marked: bool) -> Tokenizer {
    let dir = fixtures().join("tokenizer").join(family);
    let gz = std::fs::read(dir.join("tokenizer.json.gz")).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut text).unwrap();
    let config = std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap();
    let tok = Tokenizer::from_json(&text, family).unwrap().with_config(&config, "tokenizer_config.json").unwrap();
    if marked {
        let path = fixtures().join("chat").join(format!("{family}_marked.jinja"));
        tok.with_chat_template(&std::fs::read_to_string(&path).unwrap(), &path.display().to_string()).unwrap()
    } else {
        tok
    }
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("chat/expected.json")).unwrap()).unwrap()
}

#[test]
fn chat_records_equal_transformers_ids_and_masks() {
    let exp = expected();
    let data = std::fs::read(fixtures().join("chat/records.jsonl")).unwrap();
    let mut compared = 0;
    for family in ["llama3", "qwen3"] {
        for (kind, marked) in [("real", false), ("marked", true)] {
            let tok = tokenizer(family, marked);
            assert_eq!(tok.chat_template().unwrap().has_generation, marked);
            let ds = Dataset::parse("records.jsonl", "records.jsonl", &data, tok.vocab_size(), &|| Ok(("tok".into(), &tok))).unwrap();
            let cases: Vec<&serde_json::Value> = exp["cases"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["tokenizer"] == family && c["template"] == kind)
                .collect();
            assert_eq!(cases.len(), ds.records.len());
            for c in cases {
                let r = &ds.records[c["record"].as_u64().unwrap() as usize];
                let ids: Vec<u32> = serde_json::from_value(c["input_ids"].clone()).unwrap();
                let mask: Vec<u8> = serde_json::from_value(c["mask"].clone()).unwrap();
                let what = format!("{family} {kind} record {}", c["record"]);
                assert_eq!(r.input_ids, ids, "{what}: ids");
                let labels: Vec<i32> = ids.iter().zip(&mask).map(|(&t, &m)| if m == 1 { t as i32 } else { -100 }).collect();
                assert_eq!(r.labels.as_ref().unwrap(), &labels, "{what}: labels");
                let n = mask.iter().filter(|&&m| m == 1).count();
                let hf = c["hf_mask_sum"].as_u64().unwrap() as usize;
                if !marked {
                    assert_eq!(hf, 0, "{what}: transformers trains nothing without generation markers");
                } else if c["record"] == 5 {
                    assert!(n > 0 && n <= hf, "{what}: the prompt/completion form trains the completion's part of the mask");
                } else {
                    assert_eq!(n, hf, "{what}");
                }
                compared += 1;
            }
            // the preview shows the first record rendered, trained spans marked
            let p = ds.preview(Some(&tok), 0, 16);
            let rendered = p.rendered.unwrap();
            assert_eq!(rendered.text, exp["cases"].as_array().unwrap().iter().find(|c| c["tokenizer"] == family && c["template"] == kind).unwrap()["text"]);
            assert!(rendered.marked.contains("[[") && rendered.marked.replace("[[", "").replace("]]", "") == rendered.text);
        }
    }
    assert_eq!(compared, 24);
}

#[test]
fn chat_generation_prompt_and_end_of_turn_equal_transformers() {
    let exp = expected();
    for g in exp["generation"].as_array().unwrap() {
        let family = g["tokenizer"].as_str().unwrap();
        let tok = tokenizer(family, false);
        let msgs = g["messages"].as_array().unwrap();
        let text = tok.chat_template().unwrap().render(msgs, true).unwrap();
        let ids: Vec<u32> = serde_json::from_value(g["input_ids"].clone()).unwrap();
        assert_eq!(tok.encode(&text), ids, "{family}");
        let eot = tok.chat_end_of_turn().unwrap();
        assert_eq!(tok.id_to_token(eot), g["end_of_turn"].as_str(), "{family}");
    }
}

#[test]
fn chat_data_without_template_or_with_bad_records_is_refused() {
    let tok = Tokenizer::load_dir(&fixtures().join("tiny/tokenizer")).unwrap();
    assert!(tok.chat_template().is_none());
    let data = br#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#;
    let e = Dataset::parse("c.jsonl", "c.jsonl", data, 100_000, &|| Ok(("tiny".into(), &tok))).unwrap_err().to_string();
    assert!(e.starts_with("c.jsonl: chat data needs a chat template") && e.contains("--chat-template FILE"), "{e}");

    let tok = tokenizer("qwen3", false);
    let parse = |d: &[u8]| Dataset::parse("c.jsonl", "c.jsonl", d, tok.vocab_size(), &|| Ok(("qwen3".into(), &tok)));
    let cases: [(&[u8], &str); 4] = [
        (br#"{"messages": [{"role": "user", "content": "a"}]}"#, "c.jsonl:1: the conversation has no assistant message to train on"),
        (br#"{"messages": [{"role": "user", "content": 3}]}"#, "c.jsonl:1: \"messages\"[0] needs a string \"content\""),
        (br#"{"messages": {"role": "user"}}"#, "c.jsonl:1: \"messages\" must be a list of messages"),
        (
            b"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}\n{\"text\": \"x\"}",
            "c.jsonl:2: this record is {\"text\"} but the file's records are chat",
        ),
    ];
    for (d, want) in cases {
        let e = parse(d).unwrap_err().to_string();
        assert!(e.starts_with(want), "{e}");
    }
    // a template error names the template
    let bad = tokenizer("qwen3", false)
        .with_chat_template("{% if messages[0].role != 'system' %}{{ raise_exception('a system message comes first') }}{% endif %}", "t.jinja")
        .unwrap();
    let e = Dataset::parse("c.jsonl", "c.jsonl", &cases[3].0[..cases[3].0.iter().position(|&b| b == b'\n').unwrap()], bad.vocab_size(), &|| Ok(("t".into(), &bad)))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("c.jsonl:1: t.jinja: rendering the chat template") && e.contains("a system message comes first"), "{e}");
}

/// `encode_with_offsets` gives tokenizers' ids and offsets on every rendered text of the fixtures
/// (tokenizers widens a token that holds part of a character to the whole character: so is ours
/// widened before comparing; ours are the exact bytes, and they tile the text).
#[test]
fn chat_token_offsets_equal_tokenizers() {
    let exp = expected();
    let mut n = 0;
    for family in ["llama3", "qwen3"] {
        let tok = tokenizer(family, false);
        for c in exp["cases"].as_array().unwrap().iter().filter(|c| c["tokenizer"] == family) {
            let text = c["text"].as_str().unwrap();
            let (ids, offsets) = tok.encode_with_offsets(text).unwrap();
            assert_eq!(ids, serde_json::from_value::<Vec<u32>>(c["input_ids"].clone()).unwrap());
            let mut at = 0;
            for r in &offsets {
                assert_eq!(r.start, at, "{family}: offsets tile the text");
                at = r.end;
            }
            assert_eq!(at, text.len());
            let widened: Vec<[usize; 2]> = offsets
                .iter()
                .map(|r| {
                    let (mut s, mut e) = (r.start, r.end);
                    while !text.is_char_boundary(s) {
                        s -= 1;
                    }
                    while !text.is_char_boundary(e) {
                        e += 1;
                    }
                    [s, e]
                })
                .collect();
            assert_eq!(widened, serde_json::from_value::<Vec<[usize; 2]>>(c["offsets"].clone()).unwrap(), "{family}: {text:?}");
            n += 1;
        }
    }
    assert_eq!(n, 24);
}
