//! Replays the fuzz corpus (fuzz/corpus/<target>/: the seeds, and inputs the fuzzers found that
//! reach new code) through the fuzz targets' own bodies (fuzz/targets.rs), so every case a fuzzer
//! once ran keeps its promise in the normal suite: an error or a value, never a panic, and the
//! target's invariants for what is accepted. `cargo +nightly fuzz run <target>` in fuzz/ explores
//! further (see fuzz/README.md); `write_seed_corpus` (ignored) rebuilds the seeds.
#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target)
}

#[test]
fn every_corpus_input_keeps_its_targets_promise() {
    for (name, target) in targets::TARGETS {
        let mut files: Vec<PathBuf> = std::fs::read_dir(corpus(name))
            .unwrap_or_else(|e| panic!("fuzz/corpus/{name}: {e}"))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 3, "fuzz/corpus/{name} has {} inputs", files.len());
        for f in files {
            let data = std::fs::read(&f).unwrap();
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                panic!("{name}: {} fails (replay it with `cargo +nightly fuzz run {name} {}` in fuzz/)", f.display(), f.display());
            }
        }
    }
}

/// The seeds: valid files of each kind (made by webtune's own writers or taken from the test
/// fixtures) and a few broken ones. `cargo test --test fuzz_replay -- --ignored` rewrites them.
#[test]
#[ignore]
fn write_seed_corpus() {
    use webtune::model::{ModelConfig, Weights};
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let read = |p: &str| std::fs::read(fixtures.join(p)).unwrap();
    let put = |target: &str, name: &str, bytes: &[u8]| {
        std::fs::create_dir_all(corpus(target)).unwrap();
        std::fs::write(corpus(target).join(format!("seed-{name}")), bytes).unwrap();
    };

    let small = ModelConfig::from_json(targets::SMALL_CONFIG, "config.json").unwrap();
    let model = Weights::random(&small, 1).to_safetensors().unwrap();
    put("safetensors_model", "random", &model);
    put("safetensors_model", "truncated", &model[..model.len() / 2]);
    let mut nan = model.clone();
    let at = nan.len() - 4;
    nan[at..].copy_from_slice(&f32::NAN.to_le_bytes());
    put("safetensors_model", "nan", &nan);

    put("config_json", "tiny", targets::TINY_CONFIG.as_bytes());
    put("config_json", "small", targets::SMALL_CONFIG.as_bytes());
    put("config_json", "huge", br#"{"n_layer": 4000000000, "n_head": 1, "n_embd": 4000000000, "vocab_size": 50257, "n_positions": 1024}"#);

    put("tokenizer_json", "tiny", &read("tiny/tokenizer/tokenizer.json"));
    put("tokenizer_json", "options", &read("tokenizer/options/tokenizer.json"));
    put("tokenizer_json", "empty-vocab", br#"{"model": {"type": "BPE", "vocab": {}, "merges": []}, "pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"}}"#);

    let cases: serde_json::Value = serde_json::from_slice(&read("tokenizer/cases.json")).unwrap();
    for (i, c) in cases["cases"].as_array().unwrap().iter().step_by(60).enumerate() {
        put("tokenizer_encode", &format!("case{i}"), c["text"].as_str().unwrap().as_bytes());
    }

    let jsonl = read("tiny/data.jsonl");
    put("dataset", "ids", &[b"\0".as_slice(), &jsonl[..jsonl.len().min(400)]].concat());
    put("dataset", "prompt-completion", b"\0{\"prompt\": \"ab \", \"completion\": \"cd\"}\n{\"prompt\": \"\", \"completion\": \"e\"}\n");
    put("dataset", "text-jsonl", b"\0{\"text\": \"hello there\"}\n\n{\"text\": \"\"}\n");
    put("dataset", "txt", b"\x01\xef\xbb\xbfsome text, with a line\nand another <|endoftext|> one\n");
    put("dataset", "bad-utf8", b"\x01ok\n\xff\xfe");

    let adapter = [read("tiny/adapter_init/adapter_config.json"), read("tiny/adapter_init/adapter_model.safetensors")];
    put("adapter", "peft", &targets::join(&adapter[0], &adapter[1]));
    put("adapter", "no-weights", &targets::join(&adapter[0], b""));
    put("adapter", "dora", &targets::join(br#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["c_attn"], "use_dora": true}"#, &adapter[1]));

    // a real checkpoint of the tiny model: 1 step, stopped
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_webtune"))
        .args(["train", "--model"])
        .arg(fixtures.join("tiny/model"))
        .arg("--data")
        .arg(fixtures.join("tiny/data.jsonl"))
        .arg("--out")
        .arg(&out)
        .args(["--steps", "2", "--stop-after", "1", "--batch", "2", "--seq", "16", "--lora-rank", "2"])
        .status()
        .unwrap();
    assert!(st.success());
    let ck = out.join("checkpoint-1");
    let state = std::fs::read(ck.join("trainer_state.json")).unwrap();
    let opt = std::fs::read(ck.join("optimizer.safetensors")).unwrap();
    put("checkpoint", "lora", &targets::join(&state, &opt));
    put("checkpoint", "state-only", &targets::join(&state, b""));
    put("checkpoint", "future-format", &targets::join(br#"{"format": 99}"#, &opt));
}
