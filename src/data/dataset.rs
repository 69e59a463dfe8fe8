//! A dataset file as a run uses it: its records, the fingerprint that identifies it in a
//! checkpoint, and the held-out split. The CLI reads it from a path, the browser from an
//! upload's bytes; both go through [`Dataset::parse`].

use std::cell::RefCell;

use super::records::{self, Record, TokenStream};
use super::{DataError, Tokenizer};

/// FNV-1a, 64 bits (the fingerprint of data and model files in checkpoints).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a64::default();
    h.update(bytes);
    h.0
}

/// FNV-1a 64 fed piece by piece: the same hash as [`fnv1a64`] of the concatenation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fnv1a64(pub u64);

impl Default for Fnv1a64 {
    fn default() -> Self {
        Fnv1a64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a64 {
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
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
    Chat,
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
        let prompt_is_list = first.split("\"prompt\"").nth(1).is_some_and(|r| r.trim_start().trim_start_matches(':').trim_start().starts_with('['));
        if has("input_ids") {
            Format::TokenIds
        } else if has("messages") || prompt_is_list {
            Format::Chat
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
            Format::Chat => "chat",
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
    /// Chat data: the first record's rendered text and its trained byte spans.
    pub first_chat: Option<(String, Vec<std::ops::Range<usize>>)>,
}

/// A reader that fingerprints what passes through it: the size, FNV-1a 64, and the first
/// 64 KiB (the format is detected from them).
struct Fingerprinted<R> {
    inner: R,
    bytes: u64,
    fnv: Fnv1a64,
    head: Vec<u8>,
}

impl<R: std::io::Read> std::io::Read for Fingerprinted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        self.fnv.update(&buf[..n]);
        let room = (1usize << 16).saturating_sub(self.head.len()).min(n);
        self.head.extend_from_slice(&buf[..room]);
        Ok(n)
    }
}

/// The tokenizer as records ask for it: loaded on first use (token-id data needs none), the
/// first answer remembered (its name, or why there is none).
struct LazyEncoder<'t, 'f> {
    tokenizer: &'f dyn Fn() -> Result<(String, &'t Tokenizer), String>,
    name: &'f str,
    used: RefCell<Option<Result<String, String>>>,
    /// The first chat record's text and spans, and whether any record was chat.
    first_chat: RefCell<Option<(String, Vec<std::ops::Range<usize>>)>>,
}

impl records::Encoder for LazyEncoder<'_, '_> {
    fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        let (tok_name, tok) = (self.tokenizer)().map_err(|why| {
            DataError::Invalid(format!("{}: text data needs a tokenizer: {why}", self.name))
        })?;
        self.used.borrow_mut().get_or_insert(Ok(tok_name));
        tok.try_encode(text).map_err(|e| DataError::Invalid(format!("{}: {e}", self.name)))
    }

    fn encode_chat(&self, messages: &[serde_json::Value], first_trained: usize) -> Result<records::ChatIds, DataError> {
        let (tok_name, tok) = (self.tokenizer)().map_err(|why| {
            DataError::Invalid(format!("{}: chat data needs a tokenizer: {why}", self.name))
        })?;
        self.used.borrow_mut().get_or_insert(Ok(tok_name.clone()));
        if tok.chat_template().is_none() {
            return Err(DataError::Invalid(format!(
                "{}: chat data needs a chat template, and the tokenizer {tok_name} has none (no chat_template in \
                 tokenizer_config.json, no chat_template.jinja); give one with --chat-template FILE",
                self.name
            )));
        }
        match tok.encode_chat(messages, first_trained) {
            Ok(c) => {
                let mut first = self.first_chat.borrow_mut();
                if first.is_none() {
                    *first = Some((c.text, c.spans));
                }
                Ok(Ok((c.ids, c.labels)))
            }
            Err(DataError::Memory(e)) => Err(DataError::Memory(e)),
            Err(e) => Ok(Err(e.to_string())),
        }
    }

    fn cut(&self, text: &str) -> Option<usize> {
        (self.tokenizer)().ok().and_then(|(_, tok)| tok.cut(text))
    }

    fn describe(&self) -> String {
        match self.used.borrow().as_ref() {
            Some(Ok(name)) => format!("the tokenizer {name}"),
            _ => "the tokenizer".into(),
        }
    }
}

impl Dataset {
    /// Parses a dataset file (see [`records::read_records`] for the formats) for a model with
    /// `vocab` tokens. Text records start with what the tokenizer puts before a sequence (its
    /// post-processor's prefix, e.g. Llama's BOS; nothing for GPT-2 and Qwen), as transformers'
    /// `tokenizer(text)` does; a prompt's prefix is part of the prompt (not trained on).
    /// `tokenizer` is asked for only when the data is text: it returns the
    /// tokenizer and its name, or why there is none (ending the message
    /// "`name`: text data needs a tokenizer: `why`").
    pub fn parse<'t>(
        name: &str,
        path: &str,
        bytes: &[u8],
        vocab: usize,
        tokenizer: &dyn Fn() -> Result<(String, &'t Tokenizer), String>,
    ) -> Result<Dataset, DataError> {
        Dataset::from_reader(name, path, bytes, vocab, tokenizer)
    }

    /// Reads and parses a dataset file on disk, as a stream: the file is never held whole.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read<'t>(
        path: &std::path::Path,
        vocab: usize,
        tokenizer: &dyn Fn() -> Result<(String, &'t Tokenizer), String>,
    ) -> Result<Dataset, DataError> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| DataError::Io { path: name.clone(), msg: e.to_string() })?;
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(DataError::Io { path: name, msg: "is a folder, not a .txt or .jsonl file".into() });
        }
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string();
        Dataset::from_reader(&name, &abs, file, vocab, tokenizer)
    }

    fn from_reader<'t>(
        name: &str,
        path: &str,
        src: impl std::io::Read,
        vocab: usize,
        tokenizer: &dyn Fn() -> Result<(String, &'t Tokenizer), String>,
    ) -> Result<Dataset, DataError> {
        let enc = LazyEncoder { tokenizer, name, used: RefCell::new(None), first_chat: RefCell::new(None) };
        let mut reader = Fingerprinted { inner: src, bytes: 0, fnv: Fnv1a64::default(), head: Vec::new() };
        let records = {
            let mut buffered = std::io::BufReader::with_capacity(1 << 16, &mut reader);
            records::read_records(&mut buffered, name, vocab, &enc)?
        };
        let tokenizer = match enc.used.into_inner() {
            Some(Ok(tok_name)) => Some(tok_name),
            _ => None,
        };
        let mut records = records;
        let first_chat = enc.first_chat.into_inner();
        // a chat template writes its own special tokens (e.g. Llama 3's BOS): nothing is added
        if let (Some(_), None, Ok((_, tok))) = (&tokenizer, &first_chat, (enc.tokenizer)()) {
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
        Ok(Dataset {
            name: name.to_string(),
            path: path.to_string(),
            bytes: reader.bytes,
            fnv1a64: hex(reader.fnv.0),
            format: Format::detect(name, &reader.head),
            records,
            tokenizer,
            first_chat,
        })
    }

    /// The token stream of these records, each followed by `eos`, or why the machine lacks the
    /// memory for it.
    pub fn stream(&self, eos: u32) -> Result<TokenStream, DataError> {
        Ok(TokenStream::try_new(&self.records, eos, &self.name)?)
    }

    /// Tokens of the stream (each record and its EOS), without building it.
    pub fn stream_len(&self) -> usize {
        self.records.iter().map(|r| r.input_ids.len() + 1).sum()
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
    /// Chat data: the first record as the template renders it, trained spans marked.
    pub rendered: Option<Rendered>,
}

/// A chat record's rendered text: `marked` wraps each trained span in `[[` `]]`; `spans` are
/// the trained byte ranges of `text` (start, end).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rendered {
    pub text: String,
    pub marked: String,
    pub spans: Vec<(usize, usize)>,
}

impl Rendered {
    pub fn new(text: &str, spans: &[std::ops::Range<usize>]) -> Rendered {
        let mut marked = String::with_capacity(text.len() + 4 * spans.len());
        let mut at = 0;
        for s in spans {
            marked.push_str(&text[at..s.start]);
            marked.push_str("[[");
            marked.push_str(&text[s.clone()]);
            marked.push_str("]]");
            at = s.end;
        }
        marked.push_str(&text[at..]);
        Rendered { text: text.to_string(), marked, spans: spans.iter().map(|s| (s.start, s.end)).collect() }
    }
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
    pub fn preview(&self, tokenizer: Option<&Tokenizer>, _eos: u32, seq: usize) -> Preview {
        let tokens = self.stream_len();
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
            rendered: self.first_chat.as_ref().map(|(t, s)| Rendered::new(t, s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_rendered_marks_spans() {
        let r = Rendered::new("<u>hi</u><a>yo</a><u>q</u><a>é</a>", &[12..18, 29..35]);
        assert_eq!(r.marked, "<u>hi</u><a>[[yo</a>]]<u>q</u><a>[[é</a>]]");
        assert_eq!(r.spans, vec![(12, 18), (29, 35)]);
        assert_eq!(Format::detect("d.jsonl", br#"{"messages": [{"role": "user", "content": "x"}]}"#), Format::Chat);
        assert_eq!(Format::detect("d.jsonl", br#"{"prompt" : [{"role": "user"}], "completion": []}"#), Format::Chat);
        assert_eq!(Format::detect("d.jsonl", br#"{"prompt": "[x]", "completion": "y"}"#), Format::PromptCompletion);
    }
}
