//! A dataset file as a run uses it: its records, the fingerprint that identifies it in a
//! checkpoint, and the held-out split. The CLI reads it from a path, the browser from an
//! upload's bytes; both go through [`Dataset::parse`].

use std::cell::RefCell;

use super::records::{self, Record, TokenStream};
use super::{DataError, Tokenizer};

/// FNV-1a, 64 bits (the fingerprint of data and model files in checkpoints).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A hash as 16 hex digits.
pub fn hex(h: u64) -> String {
    format!("{h:016x}")
}

/// The record format of a dataset, as the preview shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    PromptCompletion,
    TokenIds,
}

impl Format {
    /// The format of a dataset file: `.txt` is text; a `.jsonl` file is what its first record
    /// holds (`input_ids`, else `prompt`/`completion`, else text).
    pub fn detect(name: &str, bytes: &[u8]) -> Format {
        if name.to_ascii_lowercase().ends_with(".txt") {
            return Format::Text;
        }
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(1 << 16)]);
        let first = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
        let has = |k: &str| first.contains(&format!("\"{k}\""));
        if has("input_ids") {
            Format::TokenIds
        } else if has("prompt") || has("completion") {
            Format::PromptCompletion
        } else {
            Format::Text
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::PromptCompletion => "prompt + completion",
            Format::TokenIds => "token ids",
        }
    }
}

/// A parsed dataset file.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// The file as the user named it (a path, or an upload's name).
    pub name: String,
    /// Where it is, absolute, for a file on disk (checkpoints record it); else the name.
    pub path: String,
    pub bytes: u64,
    /// FNV-1a 64 of the file's bytes, 16 hex digits.
    pub fnv1a64: String,
    pub format: Format,
    pub records: Vec<Record>,
    /// The tokenizer's name (a folder or an upload's name) when the data is text.
    pub tokenizer: Option<String>,
}

impl Dataset {
    /// Parses a dataset file (see [`records::parse_dataset`] for the formats) for a model with
    /// `vocab` tokens. Text records start with what the tokenizer puts before a sequence (its
    /// post-processor's prefix, e.g. Llama's BOS; nothing for GPT-2 and Qwen). `tokenizer` is asked for only when the data is text: it returns the
    /// tokenizer and its name, or why there is none (ending the message
    /// "`name`: text data needs a tokenizer: `why`").
    pub fn parse<'t>(
        name: &str,
        path: &str,
        bytes: &[u8],
        vocab: usize,
        tokenizer: &dyn Fn() -> Result<(String, &'t Tokenizer), String>,
    ) -> Result<Dataset, DataError> {
        let tokenizer_fn = tokenizer;
        let used: RefCell<Option<Result<String, String>>> = RefCell::new(None);
        let encode = |text: &str| -> Vec<u32> {
            let mut slot = used.borrow_mut();
            match tokenizer() {
                Ok((tok_name, tok)) => {
                    slot.get_or_insert(Ok(tok_name));
                    tok.encode(text)
                }
                Err(why) => {
                    slot.get_or_insert(Err(why));
                    Vec::new()
                }
            }
        };
        let parsed = records::parse_dataset(bytes, name, vocab, &encode);
        let tokenizer = match used.into_inner() {
            Some(Err(why)) => return Err(DataError::Invalid(format!("{name}: text data needs a tokenizer: {why}"))),
            Some(Ok(tok_name)) => Some(tok_name),
            None => None,
        };
        let mut records = parsed?;
        // Text starts as the tokenizer starts a sequence (Llama's BOS), as `tokenizer(text)` does
        // in transformers; a prompt's prefix is part of the prompt (not trained on).
        if tokenizer.is_some() {
            if let Ok((_, tok)) = tokenizer_fn() {
                let prefix = &tok.special_tokens().prefix;
                if let Some(&bad) = prefix.iter().find(|&&t| t as usize >= vocab) {
                    return Err(DataError::Invalid(format!(
                        "{name}: the tokenizer starts each text with token {bad}, not below the model's vocab_size {vocab}"
                    )));
                }
                if !prefix.is_empty() {
                    for r in &mut records {
                        r.input_ids.splice(0..0, prefix.iter().copied());
                        if let Some(l) = &mut r.labels {
                            l.splice(0..0, prefix.iter().map(|_| -100));
                        }
                    }
                }
            }
        }
        Ok(Dataset {
            name: name.to_string(),
            path: path.to_string(),
            bytes: bytes.len() as u64,
            fnv1a64: hex(fnv1a64(bytes)),
            format: Format::detect(name, bytes),
            records,
            tokenizer,
        })
    }

    /// Reads and parses a dataset file on disk.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read<'t>(
        path: &std::path::Path,
        vocab: usize,
        tokenizer: &dyn Fn() -> Result<(String, &'t Tokenizer), String>,
    ) -> Result<Dataset, DataError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| DataError::Io { path: name.clone(), msg: e.to_string() })?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string();
        Dataset::parse(&name, &abs, &bytes, vocab, tokenizer)
    }

    /// The token stream of these records, each followed by `eos`.
    pub fn stream(&self, eos: u32) -> TokenStream {
        TokenStream::new(&self.records, eos)
    }
}

/// What a dataset looks like to a run: counts and its first records (the demo page and
/// `--dry-run` show it).
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    pub name: String,
    pub format: &'static str,
    pub bytes: u64,
    pub records: usize,
    /// Tokens of the stream, with the EOS after each record.
    pub tokens: usize,
    pub seq: usize,
    /// Windows of `seq` + 1 tokens the stream makes.
    pub windows: usize,
    pub uses_tokenizer: bool,
    pub first_tokens: Option<Vec<u32>>,
    pub samples: Vec<Sample>,
}

/// One of the first records: its size, what is trained on, its first ids and text.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub tokens: usize,
    pub trained_tokens: usize,
    pub ids: Vec<u32>,
    /// The first 96 tokens decoded (cut at 240 characters), when there is a tokenizer.
    pub text: Option<String>,
}

impl Dataset {
    /// The preview of this dataset cut into windows of `seq` tokens, each record followed by `eos`.
    pub fn preview(&self, tokenizer: Option<&Tokenizer>, eos: u32, seq: usize) -> Preview {
        let tokens = self.stream(eos).tokens.len();
        let samples = self
            .records
            .iter()
            .take(3)
            .map(|r| {
                let trained = r.labels.as_ref().map_or(r.input_ids.len(), |l| l.iter().filter(|&&y| y >= 0).count());
                let text = tokenizer.map(|t| {
                    let s = t.decode(&r.input_ids[..r.input_ids.len().min(96)]);
                    if s.chars().count() > 240 {
                        s.chars().take(240).collect::<String>() + "…"
                    } else {
                        s
                    }
                });
                Sample { tokens: r.input_ids.len(), trained_tokens: trained, ids: r.input_ids.iter().take(24).copied().collect(), text }
            })
            .collect();
        Preview {
            name: self.name.clone(),
            format: self.format.describe(),
            bytes: self.bytes,
            records: self.records.len(),
            tokens,
            seq,
            windows: tokens / (seq + 1),
            uses_tokenizer: self.tokenizer.is_some(),
            first_tokens: self.records.first().map(|r| r.input_ids.iter().take(32).copied().collect()),
            samples,
        }
    }
}
