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
//!   - `{"messages": [{"role", "content"}, ...]}` (a conversation), or `{"prompt": [messages],
//!     "completion": [messages]}` (its conversational prompt/completion form): rendered by the
//!     tokenizer's chat template (see [`crate::data::chat`]), encoded without special tokens added;
//!     labels -100 except on the assistant turns (of the completion, for the second form).
//!   - `{"input_ids": [...]}`, optionally with `"labels": [...]` (same length; -100 masks a
//!     position out of the loss): token ids as they are.
//!
//! Other fields are ignored. Every error names the file and, for JSONL, the line.

use std::io::BufRead;

use super::DataError;
use crate::memory;
use crate::rng::Rng;

/// A conversation's (ids, labels), or why the template refuses the record.
pub type ChatIds = Result<(Vec<u32>, Vec<i32>), String>;

/// Text -> token ids for a dataset's text records: the model's tokenizer, as records need it.
pub trait Encoder {
    /// The ids of `text`; an error (no tokenizer, no memory) ends the parse as it is.
    fn encode(&self, text: &str) -> Result<Vec<u32>, DataError>;
    /// The last offset 0 < p < text.len() where `text` may be cut so that encoding the two parts
    /// gives the ids of the whole, or None (then a large text is encoded whole).
    fn cut(&self, _text: &str) -> Option<usize> {
        None
    }
    /// A conversation's (ids, labels) through the chat template, training messages from
    /// `first_trained` on; Err(why) for a record the template refuses; an error (no template)
    /// ends the parse.
    fn encode_chat(&self, _messages: &[serde_json::Value], _first_trained: usize) -> Result<ChatIds, DataError> {
        Err(DataError::Invalid("chat data needs a tokenizer with a chat template".into()))
    }
    /// The tokenizer, for messages.
    fn describe(&self) -> String {
        "the tokenizer".into()
    }
}

/// A plain function (tests, stand-in tokenizers): infallible, never cut.
impl<F: Fn(&str) -> Vec<u32> + ?Sized> Encoder for F {
    fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        Ok(self(text))
    }
}

/// A text file is encoded in chunks of about this many bytes, cut where the tokenizer allows.
const TEXT_CHUNK: usize = 1 << 20;

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
    Chat,
}

impl Format {
    /// The format an object's fields say (`input_ids` first, then messages or prompt/completion
    /// (chat when the prompt is a list), then text).
    fn detect(obj: &serde_json::Map<String, serde_json::Value>) -> Option<Format> {
        if obj.contains_key("input_ids") {
            Some(Format::Ids)
        } else if obj.contains_key("messages") || obj.get("prompt").is_some_and(serde_json::Value::is_array) {
            Some(Format::Chat)
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
            Format::Chat => "chat {\"messages\"} (or {\"prompt\": [...], \"completion\": [...]})",
        }
    }
}

fn io_error(name: &str, e: std::io::Error) -> DataError {
    DataError::Io { path: name.into(), msg: e.to_string() }
}

/// The error for invalid UTF-8 at byte `at` of the file, on line `line`.
fn not_utf8(name: &str, line: usize, at: u64) -> DataError {
    DataError::Line { path: name.into(), line, msg: format!("not valid UTF-8 (byte offset {at} in the file)") }
}

/// Encodes `text` and checks every id against the vocabulary; `what` names the field. Text that
/// is not empty must give at least one token (a tokenizer whose vocabulary misses it is refused).
fn encode_checked(enc: &dyn Encoder, text: &str, what: &str, vocab_size: usize) -> Result<Result<Vec<u32>, String>, DataError> {
    let ids = enc.encode(text)?;
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab_size) {
        return Ok(Err(format!(
            "the tokenizer gave token id {bad} for {what}, out of range: the model's vocab_size is {vocab_size} (does the tokenizer belong to this model?)"
        )));
    }
    if ids.is_empty() && !text.is_empty() {
        return Ok(Err(format!(
            "{what} is {} bytes of text but {} encodes it to no tokens (does its vocabulary cover this text?)",
            text.len(),
            enc.describe()
        )));
    }
    Ok(Ok(ids))
}

/// A chat record: `{"messages"}` or `{"prompt": [...], "completion": [...]}` through the template.
fn chat_record(obj: &serde_json::Map<String, serde_json::Value>, enc: &dyn Encoder, vocab_size: usize) -> Result<Result<Record, String>, DataError> {
    use super::chat::check_messages;
    let (messages, first_trained) = if let Some(m) = obj.get("messages") {
        match check_messages(m, "\"messages\"") {
            Ok(m) => (m, 0),
            Err(e) => return Ok(Err(e)),
        }
    } else {
        let (p, c) = match (obj.get("prompt"), obj.get("completion")) {
            (Some(p), Some(c)) => (p, c),
            _ => return Ok(Err("a conversational record needs \"prompt\" and \"completion\" lists of messages".into())),
        };
        match (check_messages(p, "\"prompt\""), check_messages(c, "\"completion\"")) {
            (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
            (Ok(mut p), Ok(c)) => {
                let n = p.len();
                p.extend(c);
                (p, n)
            }
        }
    };
    if !messages.iter().skip(first_trained).any(|m| m.get("role").and_then(serde_json::Value::as_str) == Some("assistant")) {
        return Ok(Err("the conversation has no assistant message to train on".into()));
    }
    let (ids, labels) = match enc.encode_chat(&messages, first_trained)? {
        Ok(x) => x,
        Err(e) => return Ok(Err(e)),
    };
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab_size) {
        return Ok(Err(format!(
            "the tokenizer gave token id {bad}, out of range: the model's vocab_size is {vocab_size} (does the tokenizer belong to this model?)"
        )));
    }
    if labels.iter().all(|&l| l < 0) {
        return Ok(Err("no token of the rendered conversation is trained on (the assistant turns render to nothing)".into()));
    }
    Ok(Ok(Record { input_ids: ids, labels: Some(labels) }))
}

fn string_field<'a>(obj: &'a serde_json::Map<String, serde_json::Value>, key: &str) -> Result<&'a str, String> {
    match obj.get(key) {
        None => Err(format!("missing field \"{key}\"")),
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(v) => Err(format!("\"{key}\" must be a string, not {}", json_kind(v))),
    }
}

pub(crate) fn json_kind(v: &serde_json::Value) -> &'static str {
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

/// A file's lines as UTF-8, read one at a time (a line of any length in fallible memory, the
/// file never whole); a leading BOM is dropped, "\r\n" ends a line like "\n".
struct Lines<'a> {
    src: &'a mut dyn BufRead,
    name: &'a str,
    /// The number of the line last read (1-based).
    line: usize,
    /// Bytes read so far.
    offset: u64,
    buf: Vec<u8>,
}

impl<'a> Lines<'a> {
    fn new(src: &'a mut dyn BufRead, name: &'a str) -> Lines<'a> {
        Lines { src, name, line: 0, offset: 0, buf: Vec::new() }
    }

    /// The next line and its number, or None at the end of the file.
    fn next(&mut self) -> Result<Option<(usize, &str)>, DataError> {
        self.buf.clear();
        let start = self.offset;
        let name = self.name;
        loop {
            let chunk = self.src.fill_buf().map_err(|e| io_error(name, e))?;
            if chunk.is_empty() {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                break;
            }
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            let line = self.line + 1;
            memory::reserve(&mut self.buf, take, &|| format!("{name}:{line}: a line"))?;
            self.buf.extend_from_slice(&chunk[..take]);
            self.src.consume(take);
            self.offset += take as u64;
            if done {
                break;
            }
        }
        self.line += 1;
        let mut bytes = &self.buf[..];
        bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let text = std::str::from_utf8(bytes).map_err(|e| not_utf8(name, self.line, start + e.valid_up_to() as u64))?;
        Ok(Some((self.line, if self.line == 1 { text.strip_prefix('\u{feff}').unwrap_or(text) } else { text })))
    }
}

/// JSONL records, one per line. `encode` None = token-id records only (the format is fixed to `input_ids`).
fn parse_lines(src: &mut dyn BufRead, name: &str, vocab_size: usize, encode: Option<&dyn Encoder>) -> Result<Vec<Record>, DataError> {
    let mut records = Vec::new();
    let mut format: Option<(Format, usize)> = encode.is_none().then_some((Format::Ids, 0));
    let mut lines = Lines::new(src, name);
    while let Some((lineno, line)) = lines.next()? {
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
                let expected = "expected a record with \"text\", with \"prompt\" and \"completion\", with \"messages\", \
                                or with \"input_ids\"";
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
            (Format::Text, Some(enc)) => match string_field(obj, "text") {
                Ok(t) => encode_checked(enc, t, "\"text\"", vocab_size)?.map(|input_ids| Record { input_ids, labels: None }),
                Err(e) => Err(e),
            },
            (Format::PromptCompletion, Some(enc)) => {
                match (string_field(obj, "prompt"), string_field(obj, "completion")) {
                    (Err(e), _) | (_, Err(e)) => Err(e),
                    (Ok(prompt), Ok(completion)) => {
                        let p = encode_checked(enc, prompt, "\"prompt\"", vocab_size)?;
                        let c = encode_checked(enc, completion, "\"completion\"", vocab_size)?;
                        match (p, c) {
                            (Err(e), _) | (_, Err(e)) => Err(e),
                            (Ok(_), Ok(c)) if c.is_empty() => {
                                Err("\"completion\" encodes to no tokens: nothing to train on".to_string())
                            }
                            (Ok(mut input_ids), Ok(c)) => {
                                let mut labels = vec![-100i32; input_ids.len()];
                                labels.extend(c.iter().map(|&t| t as i32));
                                input_ids.extend_from_slice(&c);
                                Ok(Record { input_ids, labels: Some(labels) })
                            }
                        }
                    }
                }
            }
            (Format::Chat, Some(enc)) => chat_record(obj, enc, vocab_size)?,
            (_, None) => Err("missing field \"input_ids\"".to_string()),
        };
        memory::reserve(&mut records, 1, &|| format!("{name}: the records up to line {lineno}"))?;
        records.push(record.map_err(err)?);
    }
    if records.is_empty() {
        return Err(DataError::Invalid(format!("{name}: the dataset is empty (no JSONL records)")));
    }
    Ok(records)
}

/// A `.txt` file as one record, read and encoded in chunks of about [`TEXT_CHUNK`] bytes cut where
/// `enc` allows (so the file is never in memory whole; the ids are those of the whole text).
fn read_text(src: &mut dyn BufRead, name: &str, vocab_size: usize, enc: &dyn Encoder) -> Result<Vec<Record>, DataError> {
    let mut pending: Vec<u8> = Vec::new();
    let mut ids: Vec<u32> = Vec::new();
    let (mut offset, mut line) = (0u64, 1usize); // of pending[0] in the file
    let (mut first, mut any_text) = (true, false); // BOM not looked for yet; text other than whitespace seen
    let mut next_try = TEXT_CHUNK;
    loop {
        let chunk = src.fill_buf().map_err(|e| io_error(name, e))?;
        let eof = chunk.is_empty();
        if !eof {
            let n = chunk.len();
            memory::reserve(&mut pending, n, &|| format!("{name}: the text after byte {offset}"))?;
            pending.extend_from_slice(chunk);
            src.consume(n);
            if pending.len() < next_try {
                continue;
            }
        }
        if first && (pending.len() >= 3 || eof) {
            first = false;
            if pending.starts_with("\u{feff}".as_bytes()) {
                pending.drain(..3);
                offset += 3;
            }
        }
        // the valid UTF-8 prefix (a character cut by the end of a read waits for the next one)
        let valid = match std::str::from_utf8(&pending) {
            Ok(_) => pending.len(),
            Err(e) if e.error_len().is_none() && !eof => e.valid_up_to(),
            Err(e) => {
                let at = e.valid_up_to();
                let lines = pending[..at].iter().filter(|&&b| b == b'\n').count();
                return Err(not_utf8(name, line + lines, offset + at as u64));
            }
        };
        let body = std::str::from_utf8(&pending[..valid]).map_err(|_| not_utf8(name, line, offset))?;
        let end = if eof { Some(body.len()) } else { enc.cut(body) };
        let Some(end) = end else {
            // no place to cut yet: read on (twice as much before looking again, so a long text
            // without one is scanned a bounded number of times)
            next_try = pending.len().saturating_mul(2);
            continue;
        };
        let part = &body[..end];
        any_text |= !part.trim().is_empty();
        let got = encode_checked(enc, part, "the text", vocab_size)?.map_err(|m| DataError::Invalid(format!("{name}: {m}")))?;
        memory::reserve(&mut ids, got.len(), &|| format!("{name}: the token ids of its text"))?;
        ids.extend_from_slice(&got);
        let used = end;
        line += pending[..used].iter().filter(|&&b| b == b'\n').count();
        offset += used as u64;
        pending.drain(..used);
        next_try = pending.len() + TEXT_CHUNK;
        if eof {
            break;
        }
    }
    if !any_text || ids.is_empty() {
        return Err(DataError::Invalid(format!("{name}: the dataset is empty (no text)")));
    }
    Ok(vec![Record { input_ids: ids, labels: None }])
}

/// Reads a dataset by the extension of `name` (which messages use too): `.txt` (the whole file
/// is one record) or `.jsonl` with records `{"text"}`, `{"prompt", "completion"}` (loss on the
/// completion tokens only: prompt tokens get label -100; record = prompt ids ++ completion ids,
/// encoded separately) or `{"input_ids"[, "labels"]}`. The file is read as a stream (a line, or
/// a chunk of text, at a time). The format is decided by the first record; a later line in
/// another format is an error naming the line. Errors name the file and line: invalid UTF-8
/// (with the byte offset), bad JSON, a missing field, a wrong field type, an empty dataset, a
/// token id out of range, text the tokenizer encodes to nothing, a completion that encodes to
/// no tokens, and memory the records would need that the machine does not have.
pub fn read_records(src: &mut dyn BufRead, name: &str, vocab_size: usize, enc: &dyn Encoder) -> Result<Vec<Record>, DataError> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".jsonl") {
        parse_lines(src, name, vocab_size, Some(enc))
    } else if lower.ends_with(".txt") {
        read_text(src, name, vocab_size, enc)
    } else {
        Err(DataError::Invalid(format!(
            "{name}: unknown dataset format: expected a .txt (plain text) or .jsonl (one JSON record per line) file"
        )))
    }
}

/// [`read_records`] over a file's bytes in memory, with a plain encoding function.
pub fn parse_dataset(bytes: &[u8], name: &str, vocab_size: usize, encode: &dyn Fn(&str) -> Vec<u32>) -> Result<Vec<Record>, DataError> {
    read_records(&mut &bytes[..], name, vocab_size, &encode)
}

/// [`read_records`] of a file on disk, with a plain encoding function.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_dataset(path: &std::path::Path, vocab_size: usize, encode: &dyn Fn(&str) -> Vec<u32>) -> Result<Vec<Record>, DataError> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| io_error(&name, e))?;
    read_records(&mut std::io::BufReader::with_capacity(1 << 16, file), &name, vocab_size, &encode)
}

/// Parses JSONL text of token-id records only (`{"input_ids"[, "labels"]}`; any other record
/// is a missing "input_ids"). `path` is used in messages; every error names the line.
pub fn parse_jsonl(text: &str, path: &str, vocab_size: usize) -> Result<Vec<Record>, DataError> {
    parse_lines(&mut text.as_bytes(), path, vocab_size, None)
}

/// Reads a JSONL file of token-id records (see [`parse_jsonl`]).
#[cfg(not(target_arch = "wasm32"))]
pub fn read_jsonl(path: &std::path::Path, vocab_size: usize) -> Result<Vec<Record>, DataError> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| io_error(&name, e))?;
    parse_lines(&mut std::io::BufReader::new(file), &name, vocab_size, None)
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
        Self::fill(records, eos, Vec::new(), Vec::new())
    }

    /// [`new`](Self::new), or why the machine lacks the memory for it; `what` names the data.
    pub fn try_new(records: &[Record], eos: u32, what: &str) -> Result<TokenStream, memory::MemoryError> {
        let n = records.iter().try_fold(0usize, |acc, r| acc.checked_add(r.input_ids.len())?.checked_add(1));
        let describe = || format!("{what}: the token stream ({} tokens and their labels)", n.map_or("too many".into(), |n| n.to_string()));
        memory::check(&describe, n.and_then(memory::bytes_of::<u64>))?;
        let n = n.unwrap_or(usize::MAX);
        let (mut tokens, mut labels) = (Vec::new(), Vec::new());
        memory::reserve(&mut tokens, n, &describe)?;
        memory::reserve(&mut labels, n, &describe)?;
        Ok(Self::fill(records, eos, tokens, labels))
    }

    fn fill(records: &[Record], eos: u32, mut tokens: Vec<u32>, mut labels: Vec<i32>) -> TokenStream {
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
