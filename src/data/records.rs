//! Records and the token stream they make.
//!
//! A dataset file is parsed by its extension ([`parse_dataset`]):
//! - `.txt`: the whole file is one record, `encode(text)`; every token counts.
//! - `.jsonl`: one JSON object per line (blank lines are skipped), all in one of three formats,
//!   decided by the first record:
//!   - `{"text": "..."}`: `encode(text)`; every token counts.
//!   - `{"prompt": "...", "completion": "..."}`: `encode(prompt) ++ encode(completion)` (encoded
//!     separately, no separator); prompt tokens get label -100, so the loss is on the completion
//!     tokens (and the EOS that follows every record) only. A completion that encodes to no
//!     tokens is an error.
//!   - `{"input_ids": [...]}`, optionally with `"labels": [...]` (same length; -100 masks a
//!     position out of the loss): token ids as they are.
//!
//! Other fields are ignored. Every error names the file and, for JSONL, the line.

use super::DataError;
use crate::rng::Rng;

/// Text -> token ids (the model's tokenizer).
type Encode<'a> = &'a dyn Fn(&str) -> Vec<u32>;

#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub input_ids: Vec<u32>,
    /// Per-token targets (the token itself where it counts, -100 where masked); None = all count.
    pub labels: Option<Vec<i32>>,
}

/// The JSONL record formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Text,
    PromptCompletion,
    Ids,
}

impl Format {
    /// The format an object's fields say (`input_ids` first, then prompt/completion, then text).
    fn detect(obj: &serde_json::Map<String, serde_json::Value>) -> Option<Format> {
        if obj.contains_key("input_ids") {
            Some(Format::Ids)
        } else if obj.contains_key("prompt") || obj.contains_key("completion") {
            Some(Format::PromptCompletion)
        } else if obj.contains_key("text") {
            Some(Format::Text)
        } else {
            None
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Format::Text => "{\"text\"}",
            Format::PromptCompletion => "{\"prompt\", \"completion\"}",
            Format::Ids => "{\"input_ids\"}",
        }
    }
}

/// Decodes UTF-8, naming the line and byte offset of the first invalid byte. A leading BOM is dropped.
fn utf8<'a>(bytes: &'a [u8], name: &str) -> Result<&'a str, DataError> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.strip_prefix('\u{feff}').unwrap_or(s)),
        Err(e) => {
            let at = e.valid_up_to();
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            Err(DataError::Line {
                path: name.into(),
                line,
                msg: format!("not valid UTF-8 (byte offset {at} in the file)"),
            })
        }
    }
}

/// Encodes `text` and checks every id against the vocabulary; `what` names the field.
fn encode_checked(
    encode: &dyn Fn(&str) -> Vec<u32>,
    text: &str,
    what: &str,
    vocab_size: usize,
) -> Result<Vec<u32>, String> {
    let ids = encode(text);
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab_size) {
        return Err(format!(
            "the tokenizer gave token id {bad} for {what}, out of range: the model's vocab_size is {vocab_size} (does the tokenizer belong to this model?)"
        ));
    }
    Ok(ids)
}

fn string_field<'a>(obj: &'a serde_json::Map<String, serde_json::Value>, key: &str) -> Result<&'a str, String> {
    match obj.get(key) {
        None => Err(format!("missing field \"{key}\"")),
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(v) => Err(format!("\"{key}\" must be a string, not {}", json_kind(v))),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// `{"input_ids": [...], "labels": [...]?}` -> a record.
fn ids_record(obj: &serde_json::Map<String, serde_json::Value>, vocab_size: usize) -> Result<Record, String> {
    let ids = obj.get("input_ids").ok_or_else(|| "missing field \"input_ids\"".to_string())?;
    let ids = ids.as_array().ok_or_else(|| "\"input_ids\" must be an array of integers".to_string())?;
    let mut input_ids = Vec::with_capacity(ids.len());
    for (j, x) in ids.iter().enumerate() {
        let id = x.as_u64().ok_or_else(|| format!("input_ids[{j}] = {x} is not a non-negative integer"))?;
        if id as usize >= vocab_size || id > u32::MAX as u64 {
            return Err(format!(
                "token id {id} (input_ids[{j}]) is out of range: the model's vocab_size is {vocab_size}"
            ));
        }
        input_ids.push(id as u32);
    }
    let labels = match obj.get("labels") {
        None | Some(serde_json::Value::Null) => None,
        Some(l) => {
            let l = l.as_array().ok_or_else(|| "\"labels\" must be an array of integers".to_string())?;
            if l.len() != input_ids.len() {
                return Err(format!("\"labels\" has {} entries but \"input_ids\" has {}", l.len(), input_ids.len()));
            }
            let mut out = Vec::with_capacity(l.len());
            for (j, x) in l.iter().enumerate() {
                let y = x.as_i64().ok_or_else(|| format!("labels[{j}] = {x} is not an integer"))?;
                if y != -100 && (y < 0 || y as u64 >= vocab_size as u64) {
                    return Err(format!("labels[{j}] = {y} must be -100 or a token id below {vocab_size}"));
                }
                out.push(y as i32);
            }
            Some(out)
        }
    };
    Ok(Record { input_ids, labels })
}

/// JSONL lines -> records. `encode` None = token-id records only (the format is fixed to `input_ids`).
fn parse_lines(text: &str, name: &str, vocab_size: usize, encode: Option<Encode>) -> Result<Vec<Record>, DataError> {
    let mut records = Vec::new();
    let mut format: Option<(Format, usize)> = encode.is_none().then_some((Format::Ids, 0));
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let err = |msg: String| DataError::Line { path: name.into(), line: lineno, msg };
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| err(format!("invalid JSON: {e}")))?;
        let obj = v.as_object().ok_or_else(|| err(format!("expected a JSON object, found {}", json_kind(&v))))?;
        let here = match (encode, Format::detect(obj), format) {
            (None, _, _) => Format::Ids,
            (Some(_), Some(f), _) => f,
            (Some(_), None, Some((f, _))) => f, // reports the missing field of the file's format below
            (Some(_), None, None) => {
                let expected =
                    "expected a record with \"text\", with \"prompt\" and \"completion\", or with \"input_ids\"";
                return Err(err(expected.into()));
            }
        };
        match format {
            None => format = Some((here, lineno)),
            Some((f, first)) if f != here => {
                return Err(err(format!(
                    "this record is {} but the file's records are {} (line {first}); one format per file",
                    here.describe(),
                    f.describe()
                )))
            }
            Some(_) => {}
        }
        let record = match (here, encode) {
            (Format::Ids, _) => ids_record(obj, vocab_size),
            (Format::Text, Some(enc)) => string_field(obj, "text")
                .and_then(|t| encode_checked(enc, t, "\"text\"", vocab_size))
                .map(|input_ids| Record { input_ids, labels: None }),
            (Format::PromptCompletion, Some(enc)) => (|| {
                let prompt = string_field(obj, "prompt")?;
                let completion = string_field(obj, "completion")?;
                let mut input_ids = encode_checked(enc, prompt, "\"prompt\"", vocab_size)?;
                let c = encode_checked(enc, completion, "\"completion\"", vocab_size)?;
                if c.is_empty() {
                    return Err("\"completion\" encodes to no tokens: nothing to train on".to_string());
                }
                let mut labels = vec![-100i32; input_ids.len()];
                labels.extend(c.iter().map(|&t| t as i32));
                input_ids.extend_from_slice(&c);
                Ok(Record { input_ids, labels: Some(labels) })
            })(),
            (_, None) => Err("missing field \"input_ids\"".to_string()),
        };
        records.push(record.map_err(err)?);
    }
    if records.is_empty() {
        return Err(DataError::Invalid(format!("{name}: the dataset is empty (no JSONL records)")));
    }
    Ok(records)
}

/// Parses a dataset file's bytes by the extension of `name` (which messages use too):
/// `.txt` (the whole file is one record) or `.jsonl` with records `{"text"}`,
/// `{"prompt", "completion"}` (loss on the completion tokens only: prompt tokens get label -100;
/// record = prompt ids ++ completion ids, encoded separately) or `{"input_ids"[, "labels"]}`.
/// The format is decided by the first record; a later line in another format is an error naming
/// the line. Errors name the file and line: invalid UTF-8 (with the byte offset), bad JSON, a
/// missing field, a wrong field type, an empty dataset, a token id out of range, a completion
/// that encodes to no tokens. `encode` turns text into token ids (the model's tokenizer).
pub fn parse_dataset(
    bytes: &[u8],
    name: &str,
    vocab_size: usize,
    encode: &dyn Fn(&str) -> Vec<u32>,
) -> Result<Vec<Record>, DataError> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".jsonl") {
        parse_lines(utf8(bytes, name)?, name, vocab_size, Some(encode))
    } else if lower.ends_with(".txt") {
        let text = utf8(bytes, name)?;
        let input_ids = encode_checked(encode, text, "the text", vocab_size)
            .map_err(|m| DataError::Invalid(format!("{name}: {m}")))?;
        if text.trim().is_empty() || input_ids.is_empty() {
            return Err(DataError::Invalid(format!("{name}: the dataset is empty (no text)")));
        }
        Ok(vec![Record { input_ids, labels: None }])
    } else {
        Err(DataError::Invalid(format!(
            "{name}: unknown dataset format: expected a .txt (plain text) or .jsonl (one JSON record per line) file"
        )))
    }
}

/// Reads a dataset file (see [`parse_dataset`]).
#[cfg(not(target_arch = "wasm32"))]
pub fn read_dataset(
    path: &std::path::Path,
    vocab_size: usize,
    encode: &dyn Fn(&str) -> Vec<u32>,
) -> Result<Vec<Record>, DataError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| DataError::Io { path: name.clone(), msg: e.to_string() })?;
    parse_dataset(&bytes, &name, vocab_size, encode)
}

/// Parses JSONL text of token-id records only (`{"input_ids"[, "labels"]}`; any other record
/// is a missing "input_ids"). `path` is used in messages; every error names the line.
pub fn parse_jsonl(text: &str, path: &str, vocab_size: usize) -> Result<Vec<Record>, DataError> {
    parse_lines(text.strip_prefix('\u{feff}').unwrap_or(text), path, vocab_size, None)
}

/// Reads a JSONL file of token-id records (see [`parse_jsonl`]).
#[cfg(not(target_arch = "wasm32"))]
pub fn read_jsonl(path: &std::path::Path, vocab_size: usize) -> Result<Vec<Record>, DataError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| DataError::Io { path: name.clone(), msg: e.to_string() })?;
    parse_jsonl(utf8(&bytes, &name)?, &name, vocab_size)
}

/// Holds whole records out for evaluation. With n records, n_eval = round(fraction · n) clamped
/// to [1, n − 1] (so each part has at least one record); the held-out records are the first
/// n_eval indices of a Fisher–Yates shuffle of 0..n drawn from `Rng::new(seed ^ 0x73706c6974)`
/// ("split", so the stream differs from the batch shuffle of the same seed). Both parts keep
/// file order. Returns (train, eval). Errors: fewer than 2 records, or `fraction` not in (0, 1).
pub fn split_eval(records: Vec<Record>, fraction: f32, seed: u64) -> Result<(Vec<Record>, Vec<Record>), DataError> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(DataError::Invalid(format!(
            "the held-out fraction must be between 0 and 1 (exclusive), not {fraction}"
        )));
    }
    let n = records.len();
    if n < 2 {
        return Err(DataError::Invalid(format!(
            "holding records out for evaluation needs at least 2 records (one to train on, one to evaluate), but the dataset has {n}"
        )));
    }
    let n_eval = ((fraction as f64 * n as f64).round() as usize).clamp(1, n - 1);
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(seed ^ 0x0073_706c_6974).shuffle(&mut order);
    let mut held = vec![false; n];
    for &i in &order[..n_eval] {
        held[i] = true;
    }
    let (mut train, mut eval) = (Vec::with_capacity(n - n_eval), Vec::with_capacity(n_eval));
    for (r, h) in records.into_iter().zip(held) {
        if h {
            eval.push(r)
        } else {
            train.push(r)
        }
    }
    Ok((train, eval))
}

/// The concatenated stream: `tokens[i]` and, aligned with it, `labels[i]` = the target
/// value of token i when it is predicted (itself, or -100 when masked).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenStream {
    pub tokens: Vec<u32>,
    pub labels: Vec<i32>,
}

impl TokenStream {
    /// Records in file order, each followed by `eos` (which always counts as a target).
    pub fn new(records: &[Record], eos: u32) -> TokenStream {
        let mut tokens = Vec::new();
        let mut labels = Vec::new();
        for r in records {
            tokens.extend_from_slice(&r.input_ids);
            match &r.labels {
                Some(l) => labels.extend_from_slice(l),
                None => labels.extend(r.input_ids.iter().map(|&t| t as i32)),
            }
            tokens.push(eos);
            labels.push(eos as i32);
        }
        TokenStream { tokens, labels }
    }
}
