//! Records and the token stream they make. JSONL records are `{"input_ids": [...]}`,
//! optionally with `"labels": [...]` (same length; -100 masks a position out of the loss).

use super::DataError;

#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub input_ids: Vec<u32>,
    /// Per-token targets (the token itself where it counts, -100 where masked); None = all count.
    pub labels: Option<Vec<i32>>,
}

/// Parses JSONL text. `path` is used in messages; every error names the line.
pub fn parse_jsonl(text: &str, path: &str, vocab_size: usize) -> Result<Vec<Record>, DataError> {
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let err = |msg: String| DataError::Line { path: path.into(), line: lineno, msg };
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| err(format!("invalid JSON: {e}")))?;
        let obj = v.as_object().ok_or_else(|| err("expected a JSON object".into()))?;
        let ids = obj.get("input_ids").ok_or_else(|| err("missing field \"input_ids\"".into()))?;
        let ids = ids.as_array().ok_or_else(|| err("\"input_ids\" must be an array of integers".into()))?;
        let mut input_ids = Vec::with_capacity(ids.len());
        for (j, x) in ids.iter().enumerate() {
            let id = x.as_u64().ok_or_else(|| err(format!("input_ids[{j}] = {x} is not a non-negative integer")))?;
            if id as usize >= vocab_size {
                return Err(err(format!("token id {id} (input_ids[{j}]) is out of range: the model's vocab_size is {vocab_size}")));
            }
            input_ids.push(id as u32);
        }
        let labels = match obj.get("labels") {
            None | Some(serde_json::Value::Null) => None,
            Some(l) => {
                let l = l.as_array().ok_or_else(|| err("\"labels\" must be an array of integers".into()))?;
                if l.len() != input_ids.len() {
                    return Err(err(format!("\"labels\" has {} entries but \"input_ids\" has {}", l.len(), input_ids.len())));
                }
                let mut out = Vec::with_capacity(l.len());
                for (j, x) in l.iter().enumerate() {
                    let y = x.as_i64().ok_or_else(|| err(format!("labels[{j}] = {x} is not an integer")))?;
                    if y != -100 && (y < 0 || y as usize >= vocab_size) {
                        return Err(err(format!("labels[{j}] = {y} must be -100 or a token id below {vocab_size}")));
                    }
                    out.push(y as i32);
                }
                Some(out)
            }
        };
        records.push(Record { input_ids, labels });
    }
    if records.is_empty() {
        return Err(DataError::Invalid(format!("{path}: the dataset is empty (no JSONL records)")));
    }
    Ok(records)
}

/// Reads a JSONL file of token-id records.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_jsonl(path: &std::path::Path, vocab_size: usize) -> Result<Vec<Record>, DataError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| DataError::Io { path: name.clone(), msg: e.to_string() })?;
    let text = String::from_utf8(bytes).map_err(|e| DataError::Io {
        path: name.clone(),
        msg: format!("not valid UTF-8 (byte {})", e.utf8_error().valid_up_to()),
    })?;
    parse_jsonl(&text, &name, vocab_size)
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
