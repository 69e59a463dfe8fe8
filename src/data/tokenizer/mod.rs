//! Hugging Face BPE tokenizers (GPT-2, SmolLM2, Llama 2 / TinyLlama, Llama 3, Qwen2 / Qwen2.5 /
//! Qwen3 and others built the same way) from their own tokenizer.json, giving the same ids and
//! strings as Python `tokenizers` / `transformers`. The pipeline is `tokenizers`':
//!
//! 1. added tokens ("<|endoftext|>", "<|im_start|>", ...) are cut out of the text first
//!    (added.rs);
//! 2. the text between them is normalized (normalizer.rs: NFC, Prepend, Replace, ...), and added
//!    tokens marked `normalized` are cut out of that;
//! 3. the pre-tokenizer cuts the rest into pieces (pre_tokenizer.rs: ByteLevel, Split regexes,
//!    Digits, Metaspace);
//! 4. the BPE model turns each piece into ids (bpe.rs: merges, byte fallback, unknown token);
//! 5. `encode_with_special_tokens` adds what the post-processor or tokenizer_config.json says
//!    (special.rs: Llama's BOS, ...).
//!
//! Decoding runs the file's decoder (decoder.rs). A component type or option this module does
//! not implement is refused when the file is loaded, with the file and the field named: a
//! tokenizer either loads and matches `tokenizers`, or does not load.

mod added;
mod bpe;
mod decoder;
mod normalizer;
mod pattern;
mod pre_tokenizer;
mod special;

pub use special::SpecialTokens;

use std::borrow::Cow;

use serde_json::Value;

use super::chat::{self, ChatTemplate};
use super::DataError;
use added::{AddedToken, AddedVocab, Which};
use bpe::{Bpe, BpeOptions, BpeScratch};
use decoder::Decoders;
use normalizer::Normalizers;
use pre_tokenizer::{PreScratch, PreTokenizers};

/// The special token GPT-2 uses as end of text; the vocab.json + merges.txt loader adds it as a
/// special token, as `transformers`' `GPT2Tokenizer` does.
const ENDOFTEXT: &str = "<|endoftext|>";

/// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes map to themselves, the other 68 bytes to
/// U+0100.. in byte order.
const BYTE_CHAR: [char; 256] = {
    let mut t = ['\0'; 256];
    let mut n = 0u32;
    let mut b = 0;
    while b < 256 {
        let printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        let c = if printable {
            b as u32
        } else {
            n += 1;
            255 + n
        };
        t[b] = match char::from_u32(c) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    t
};

/// The byte a byte-level character stands for.
fn char_byte(c: char) -> Option<u8> {
    match c as u32 {
        0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff => Some(c as u8),
        0x100..=0x143 => BYTE_CHAR.iter().position(|&x| x == c).map(|b| b as u8),
        _ => None,
    }
}

/// `s` in byte-level characters (what the ByteLevel pre-tokenizer turns text into).
fn byte_level_string(s: &str) -> String {
    s.bytes().map(|b| BYTE_CHAR[b as usize]).collect()
}

fn bad(name: &str, msg: impl std::fmt::Display) -> DataError {
    DataError::Invalid(format!("{name}: {msg}"))
}

fn get_bool(obj: &Value, field: &str, default: bool, name: &str, at: &str) -> Result<bool, DataError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(bad(name, format!("{at}.{field} must be true or false, found {v}"))),
    }
}

/// The `type` of a component object at `at`.
fn component_type<'a>(v: &'a Value, at: &str, name: &str) -> Result<&'a str, DataError> {
    v.get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(name, format!("{at} has no \"type\"")))
}

/// A BPE tokenizer loaded from Hugging Face files.
#[derive(Debug)]
pub struct Tokenizer {
    model: Bpe,
    normalizer: Normalizers,
    pre_tokenizer: PreTokenizers,
    /// None: no decoder (tokens joined with spaces, as `tokenizers` does).
    decoder: Option<Decoders>,
    added: AddedVocab,
    special: SpecialTokens,
    /// tokenizer_config.json's special-token variables for a chat template.
    chat_vars: std::collections::BTreeMap<String, Value>,
    /// The chat template of tokenizer_config.json or chat_template.jinja, if any.
    chat: Option<ChatTemplate>,
}

/// Reused buffers of one encode call, and what went wrong.
#[derive(Default)]
struct Scratch {
    bpe: BpeScratch,
    pre: PreScratch,
    /// A Replace normalizer's regex hit its backtrack limit.
    limit_hit: bool,
}

impl Tokenizer {
    /// Hugging Face tokenizer.json text (model.type "BPE"). `name` is for error messages.
    /// Component types and options that are not implemented are refused with a message naming
    /// the field.
    pub fn from_json(text: &str, name: &str) -> Result<Tokenizer, DataError> {
        let root: Value = serde_json::from_str(text).map_err(|e| bad(name, format!("not valid JSON: {e}")))?;
        if !root.is_object() {
            return Err(bad(name, "not a tokenizer.json: the top level is not an object"));
        }
        match root.get("version") {
            None | Some(Value::Null) => {}
            Some(Value::String(v)) if v == "1.0" => {}
            Some(v) => return Err(bad(name, format!("version is {v}; only \"1.0\" is known"))),
        }
        let model = root
            .get("model")
            .filter(|m| m.is_object())
            .ok_or_else(|| bad(name, "not a tokenizer.json: no \"model\" object"))?;
        match model.get("type").and_then(Value::as_str) {
            Some("BPE") => {}
            None if model.get("merges").is_some() => {}
            Some(t) => return Err(bad(name, format!("model.type is \"{t}\"; only \"BPE\" is supported"))),
            None => return Err(bad(name, "model.type is missing; only \"BPE\" is supported")),
        }
        match model.get("dropout") {
            None | Some(Value::Null) => {}
            Some(v) if v.as_f64() == Some(0.0) => {}
            Some(v) => return Err(bad(name, format!("model.dropout is {v}; BPE dropout is not supported"))),
        }
        for field in ["continuing_subword_prefix", "end_of_word_suffix"] {
            match model.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s.is_empty() => {}
                Some(v) => return Err(bad(name, format!("model.{field} is {v}; only an empty one is supported"))),
            }
        }
        let unk_token = match model.get("unk_token") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => return Err(bad(name, format!("model.unk_token must be a string, found {v}"))),
        };
        let options = BpeOptions {
            unk_token,
            fuse_unk: get_bool(model, "fuse_unk", false, name, "model")?,
            byte_fallback: get_bool(model, "byte_fallback", false, name, "model")?,
            ignore_merges: get_bool(model, "ignore_merges", false, name, "model")?,
        };
        let vocab = bpe::parse_vocab(
            model.get("vocab").ok_or_else(|| bad(name, "model.vocab is missing"))?,
            name,
            "model.vocab",
        )?;
        let merges = bpe::parse_merges(model.get("merges"), name)?;
        let normalizer = Normalizers::parse(&root, name)?;
        let pre_tokenizer = PreTokenizers::parse(&root, name)?;
        let decoder = Decoders::parse(&root, name)?;
        let (prefix, suffix) = special::post_processor(&root, name)?;
        let byte_fallback = options.byte_fallback;
        let model = Bpe::new(vocab, merges, options, name)?;
        if byte_fallback && !(pre_tokenizer.has_byte_level() && model.covers_all_bytes()) {
            let missing = model.missing_byte_tokens();
            if !missing.is_empty() {
                return Err(bad(
                    name,
                    format!(
                        "model.byte_fallback is true but model.vocab lacks {} of the 256 byte tokens (e.g. {})",
                        missing.len(),
                        missing[..missing.len().min(3)].join(", ")
                    ),
                ));
            }
        }
        let added = AddedVocab::new(added::parse_added(&root, name)?, &model.vocab, &normalizer);
        let mut tok = Tokenizer {
            model,
            normalizer,
            pre_tokenizer,
            decoder,
            added,
            special: SpecialTokens::default(),
            chat: None,
            chat_vars: Default::default(),
        };
        tok.special = SpecialTokens {
            bos: (prefix.len() == 1).then(|| prefix[0]),
            eos: (suffix.len() == 1).then(|| suffix[0]),
            pad: None,
            unk: model_unk(&tok, &root),
            add_bos: false,
            add_eos: false,
            prefix,
            suffix,
        };
        tok.special.refresh_flags();
        Ok(tok)
    }

    /// The older pair: vocab.json + merges.txt (first line "#version" optional), configured as
    /// `transformers`' `GPT2Tokenizer` does: ByteLevel without prefix space, "<|endoftext|>" a
    /// special token and the bos, eos and unk token.
    pub fn from_vocab_merges(vocab_json: &str, merges_txt: &str, name: &str) -> Result<Tokenizer, DataError> {
        let vname = format!("{name}: vocab.json");
        let vocab_v: Value =
            serde_json::from_str(vocab_json).map_err(|e| bad(&vname, format!("not valid JSON: {e}")))?;
        let vocab = bpe::parse_vocab(&vocab_v, &vname, "the vocabulary")?;
        let mut merges = Vec::new();
        for (i, line) in merges_txt.lines().enumerate() {
            if line.starts_with("#version") || line.is_empty() {
                continue;
            }
            let pair = bpe::parse_merge_line(line).ok_or_else(|| {
                bad(
                    &format!("{name}: merges.txt"),
                    format!("line {}: expected two tokens separated by one space, found {line:?}", i + 1),
                )
            })?;
            merges.push(pair);
        }
        let model = Bpe::new(vocab, merges, BpeOptions::default(), name)?;
        let normalizer = Normalizers::default();
        let added = AddedVocab::new(vec![AddedToken::special(ENDOFTEXT)], &model.vocab, &normalizer);
        let eot = added.by_content.get(ENDOFTEXT).copied();
        Ok(Tokenizer {
            model,
            normalizer,
            pre_tokenizer: PreTokenizers::gpt2(),
            decoder: Some(Decoders::byte_level()),
            added,
            special: SpecialTokens {
                bos: eot,
                eos: eot,
                unk: eot,
                ..SpecialTokens::default()
            },
            chat: None,
            chat_vars: Default::default(),
        })
    }

    /// Applies tokenizer_config.json text (`name` for messages): the bos / eos / pad / unk
    /// tokens it names, each of which must be a token of this tokenizer. What
    /// `encode_with_special_tokens` adds stays the post-processor's (see `SpecialTokens`).
    pub fn with_config(mut self, text: &str, name: &str) -> Result<Tokenizer, DataError> {
        let cfg = special::parse_config(text, name)?;
        let resolve = |field: &str, v: &Option<Option<String>>, current: Option<u32>| -> Result<Option<u32>, DataError> {
            match v {
                None => Ok(current),
                Some(None) => Ok(None),
                Some(Some(t)) => self.token_to_id(t).map(Some).ok_or_else(|| {
                    bad(name, format!("{field} {t:?} is not a token of the tokenizer"))
                }),
            }
        };
        let s = &self.special;
        let special = SpecialTokens {
            bos: resolve("bos_token", &cfg.bos, s.bos)?,
            eos: resolve("eos_token", &cfg.eos, s.eos)?,
            pad: resolve("pad_token", &cfg.pad, s.pad)?,
            unk: resolve("unk_token", &cfg.unk, s.unk)?,
            add_bos: false,
            add_eos: false,
            prefix: s.prefix.clone(),
            suffix: s.suffix.clone(),
        };
        self.special = special;
        self.special.refresh_flags();
        let root: Value = serde_json::from_str(text).map_err(|e| bad(name, format!("not valid JSON: {e}")))?;
        if let Some(src) = chat::template_of_config(&root, name)? {
            self.chat = Some(ChatTemplate::new(&src, &format!("{name}: chat_template"), chat::special_vars(&root))?);
        }
        self.chat_vars = chat::special_vars(&root);
        Ok(self)
    }

    /// Uses `source` as the chat template (chat_template.jinja, or a `--chat-template` file;
    /// `name` names it in messages), with the special-token variables of tokenizer_config.json.
    pub fn with_chat_template(mut self, source: &str, name: &str) -> Result<Tokenizer, DataError> {
        self.chat = Some(ChatTemplate::new(source, name, self.chat_vars.clone())?);
        Ok(self)
    }

    /// The chat template, if the tokenizer has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat.as_ref()
    }

    /// The token a chat template ends an assistant turn with: the first token of what it
    /// renders after an assistant message's content when that is a special token (Llama 3's
    /// `<|eot_id|>`, Qwen's `<|im_end|>`), else the eos token.
    pub fn chat_end_of_turn(&self) -> Option<u32> {
        let after = self.chat.as_ref()?.after_assistant();
        let first = after.and_then(|a| self.encode(&a).first().copied());
        first
            .filter(|id| self.id_to_token(*id).is_some_and(|t| self.added.special.contains(t)))
            .or(self.special.eos)
    }

    /// A conversation's ids and labels (-100 for what is not trained on): rendered by the chat
    /// template, encoded without special tokens added (the template writes them, as
    /// `apply_chat_template(tokenize=True)`), trained spans mapped to tokens as transformers
    /// maps its assistant mask (the tokens holding a span's first and last byte, and all between).
    /// Only messages from `first_trained` on are trained. Returns the text and spans too.
    pub fn encode_chat(&self, messages: &[Value], first_trained: usize) -> Result<ChatEncoding, DataError> {
        let t = self.chat.as_ref().ok_or_else(|| {
            DataError::Invalid(
                "chat data needs a chat template: the tokenizer has none (tokenizer_config.json's chat_template or \
                 chat_template.jinja); give one with --chat-template FILE"
                    .into(),
            )
        })?;
        let eot = self.chat_end_of_turn().and_then(|id| self.id_to_token(id)).map(str::to_string);
        let (text, spans) = t.trained_spans(messages, first_trained, eot.as_deref())?;
        let (ids, offsets) = self.encode_with_offsets(&text)?;
        let mut labels = vec![-100i32; ids.len()];
        let token_at = |b: usize| offsets.iter().position(|r| r.start <= b && b < r.end);
        for s in &spans {
            if let (Some(a), Some(z)) = (token_at(s.start), token_at(s.end - 1)) {
                for k in a..=z {
                    labels[k] = ids[k] as i32;
                }
            }
        }
        Ok(ChatEncoding { ids, labels, text, spans })
    }

    /// `try_encode` with each token's byte range in `text`. Exact for byte-level pipelines
    /// (GPT-2, Llama 3, Qwen, SmolLM) on text the normalizer leaves as it is; an error otherwise.
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<std::ops::Range<usize>>), DataError> {
        if !self.pre_tokenizer.has_byte_level() {
            return Err(DataError::Invalid(
                "token offsets (chat data) need a byte-level tokenizer (GPT-2, Llama 3, Qwen style); this one is not".into(),
            ));
        }
        let mut ids = Vec::new();
        let mut offsets = Vec::new();
        let mut scratch = Scratch::default();
        for (tok, range) in self.added.find(text, Which::Raw) {
            if let Some(id) = tok {
                ids.push(id);
                offsets.push(range);
                continue;
            }
            if range.is_empty() {
                continue;
            }
            if !self.normalizer.is_empty() {
                let mut hit = false;
                if self.normalizer.apply(&text[range.clone()], range.start == 0, &mut hit).text != text[range.clone()] {
                    return Err(DataError::Invalid(format!(
                        "the tokenizer's normalizer changes the text at bytes {}..{}, so token offsets (chat data) are not exact",
                        range.start, range.end
                    )));
                }
            }
            let before = ids.len();
            self.encode_segment(text, range.clone(), &mut ids, &mut scratch);
            let mut at = range.start;
            for &id in &ids[before..] {
                let n = match self.added.by_id.get(&id) {
                    Some(&k) => self.added.tokens[k].form().len(),
                    None => {
                        let s = self.id_to_token(id).unwrap_or("");
                        if s.len() == 6 && s.starts_with("<0x") && s.ends_with('>') {
                            1
                        } else {
                            s.chars().map(|c| usize::from(char_byte(c).is_some())).sum()
                        }
                    }
                };
                offsets.push(at..at + n);
                at += n;
            }
            if at != range.end {
                return Err(DataError::Invalid(format!(
                    "token offsets (chat data): the tokens of bytes {}..{} do not spell them exactly",
                    range.start, range.end
                )));
            }
        }
        if let Some(e) = scratch.bpe.memory {
            return Err(e.into());
        }
        if scratch.limit_hit || scratch.pre.limit_hit {
            return Err(DataError::Invalid("a regex of the tokenizer hit its backtrack limit on this text".to_string()));
        }
        Ok((ids, offsets))
    }

    /// The tokenizer of a Hugging Face model folder: tokenizer.json, else vocab.json +
    /// merges.txt, with tokenizer_config.json applied when present (and chat_template.jinja as the
    /// chat template when present); an error naming the folder
    /// if there is no tokenizer.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_dir(dir: &std::path::Path) -> Result<Tokenizer, DataError> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| DataError::Io {
                path: p.display().to_string(),
                msg: e.to_string(),
            })
        };
        let json = dir.join("tokenizer.json");
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        let tok = if json.is_file() {
            Tokenizer::from_json(&read(&json)?, &json.display().to_string())?
        } else if vocab.is_file() && merges.is_file() {
            Tokenizer::from_vocab_merges(&read(&vocab)?, &read(&merges)?, &dir.display().to_string())?
        } else {
            return Err(DataError::Io {
                path: dir.display().to_string(),
                msg: "no tokenizer found: expected tokenizer.json, or vocab.json + merges.txt".to_string(),
            });
        };
        let config = dir.join("tokenizer_config.json");
        let mut tok = if config.is_file() { tok.with_config(&read(&config)?, &config.display().to_string())? } else { tok };
        // transformers prefers chat_template.jinja to tokenizer_config.json's field
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            tok = tok.with_chat_template(&read(&jinja)?, &jinja.display().to_string())?;
        }
        Ok(tok)
    }

    /// Token ids of `text`, without special tokens added (like HF's
    /// `encode(text, add_special_tokens=False)`); added tokens such as "<|endoftext|>" written in
    /// the text are recognised, as HF does. If a regex of the file hits its backtrack limit, the
    /// text it was cutting is left uncut from there on, as `tokenizers`' own fancy-regex build
    /// does; `try_encode` reports that (and an unknown token missing from the vocabulary) instead.
    ///
    /// For text of a size a user controls (data, prompts), `try_encode` says when memory runs
    /// out; `encode` panics then.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut scratch = Scratch::default();
        let mut ids = Vec::with_capacity(text.len() / 3 + 1);
        self.encode_into(text, &mut ids, &mut scratch);
        if let Some(e) = scratch.bpe.memory {
            panic!("{e}");
        }
        ids
    }

    /// `encode`, or an error where `tokenizers` could not have matched it: a regex of the file
    /// hit its backtrack limit, or the text needs the model's unknown token and the vocabulary
    /// lacks it; or the machine lacks the memory to encode it (a "word" of gigabytes without
    /// whitespace needs ~48 bytes of working memory per byte).
    pub fn try_encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        let mut ids = Vec::new();
        crate::memory::reserve(&mut ids, text.len() / 4 + 1, &|| format!("the token ids of {} bytes of text", text.len()))?;
        let mut scratch = Scratch::default();
        self.encode_into(text, &mut ids, &mut scratch);
        if let Some(e) = scratch.bpe.memory {
            return Err(e.into());
        }
        if scratch.limit_hit || scratch.pre.limit_hit {
            return Err(DataError::Invalid(
                "a regex of the tokenizer hit its backtrack limit on this text".to_string(),
            ));
        }
        if let Some(t) = scratch.bpe.missing_unk {
            return Err(DataError::Invalid(format!(
                "the text needs the unknown token {t:?}, which is not in the model vocabulary"
            )));
        }
        Ok(ids)
    }

    /// `encode` with the special tokens of `special_tokens()` around it (HF's default
    /// `add_special_tokens=True`, e.g. Llama's BOS first).
    pub fn encode_with_special_tokens(&self, text: &str) -> Vec<u32> {
        let mut ids = self.special.prefix.clone();
        ids.extend(self.encode(text));
        ids.extend_from_slice(&self.special.suffix);
        ids
    }

    /// Where `text` may be cut so that encoding the two parts gives the ids of the whole (what
    /// lets a large dataset be encoded in chunks): the last offset p > 0 that starts a " " after
    /// a character that is not whitespace, with no added token written near it. GPT-2's
    /// pre-tokenizer (ByteLevel with its regex, no normalizer) always splits there, and such a
    /// piece starts the same whatever precedes it. None when there is no such place, or for
    /// other pipelines (Metaspace, Split patterns, normalizers), whose text is encoded whole.
    pub fn cut(&self, text: &str) -> Option<usize> {
        if !self.normalizer.is_empty() || !self.pre_tokenizer.is_gpt2() {
            return None;
        }
        let reach = self.added.tokens.iter().map(|t| t.content.len()).max().unwrap_or(0) + 4;
        let b = text.as_bytes();
        let mut p = b.len();
        while p > 1 {
            p -= 1;
            if b[p] != b' ' {
                continue;
            }
            let Some(before) = text[..p].chars().next_back() else { continue };
            if pattern::is_space(before) {
                continue;
            }
            let (lo, hi) = (p.saturating_sub(reach), (p + reach).min(b.len()));
            let near = &b[lo..hi];
            let added_near = self
                .added
                .tokens
                .iter()
                .any(|t| !t.content.is_empty() && near.windows(t.content.len()).any(|w| w == t.content.as_bytes()));
            if !added_near {
                return Some(p);
            }
        }
        None
    }

    fn encode_into(&self, text: &str, ids: &mut Vec<u32>, scratch: &mut Scratch) {
        for (tok, range) in self.added.find(text, Which::Raw) {
            if let Some(id) = tok {
                ids.push(id);
                continue;
            }
            if range.is_empty() {
                continue;
            }
            self.encode_segment(text, range, ids, scratch);
        }
    }

    /// The ids of `text[range]`, a part between raw added tokens.
    fn encode_segment(&self, text: &str, range: std::ops::Range<usize>, ids: &mut Vec<u32>, scratch: &mut Scratch) {
        let Scratch {
            bpe,
            pre,
            limit_hit,
        } = scratch;
        let model = &self.model;
        let normalized = if self.normalizer.is_empty() {
            normalizer::Normalized {
                text: Cow::Borrowed(&text[range.clone()]),
                at_origin: range.start == 0,
            }
        } else {
            self.normalizer.apply(&text[range.clone()], range.start == 0, limit_hit)
        };
        let sub: &str = &normalized.text;
        for (tok2, r2) in self.added.find(sub, Which::Normalized) {
            match tok2 {
                Some(id) => ids.push(id),
                None if r2.is_empty() => {}
                None => {
                    let at_origin = normalized.at_origin && r2.start == 0;
                    self.pre_tokenizer.run(&sub[r2], at_origin, pre, &mut |piece, byte_level| {
                        model.tokenize(piece, byte_level, ids, bpe)
                    });
                }
            }
        }
    }

    /// Text of `ids`, like HF's `decode(ids, skip_special_tokens=False)`: the file's decoder on
    /// the ids' token strings. Ids outside the vocabulary are skipped (as HF does).
    pub fn decode(&self, ids: &[u32]) -> String {
        self.decode_tokens(ids, false)
    }

    /// `decode` without the special tokens (HF's `skip_special_tokens=True`).
    pub fn decode_skip_special(&self, ids: &[u32]) -> String {
        self.decode_tokens(ids, true)
    }

    fn decode_tokens(&self, ids: &[u32], skip_special: bool) -> String {
        let tokens: Vec<String> = ids
            .iter()
            .filter_map(|&id| self.id_to_token(id))
            .filter(|t| !skip_special || !self.added.special.contains(*t))
            .map(str::to_string)
            .collect();
        match &self.decoder {
            Some(d) => d.decode(tokens),
            None => tokens.join(" "),
        }
    }

    /// What the tokenizer files say about special tokens (see `SpecialTokens`).
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Number of distinct tokens, added tokens included (HF's `get_vocab_size(True)`).
    pub fn vocab_size(&self) -> usize {
        self.model.vocab.len()
            + self
                .added
                .by_content
                .keys()
                .filter(|t| !self.model.vocab.contains_key(*t))
                .count()
    }

    /// Id of a token string (as stored: byte-level form such as "Ġthe", or "▁the"), added
    /// tokens first, like HF.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.added
            .by_content
            .get(token)
            .or_else(|| self.model.vocab.get(token))
            .copied()
    }

    /// Token string of an id (an added token's normalized form, as HF's `id_to_token`).
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        match self.added.by_id.get(&id) {
            Some(&k) => Some(self.added.tokens[k].form()),
            None => self.model.vocab_r.get(&id).map(String::as_str),
        }
    }
}

/// A conversation as [`Tokenizer::encode_chat`] encodes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatEncoding {
    pub ids: Vec<u32>,
    /// The token where trained, -100 elsewhere.
    pub labels: Vec<i32>,
    /// The rendered text and its trained byte spans.
    pub text: String,
    pub spans: Vec<std::ops::Range<usize>>,
}

/// The model's unknown token id (`model.unk_token`), if it is a token.
fn model_unk(tok: &Tokenizer, root: &Value) -> Option<u32> {
    root["model"].get("unk_token").and_then(Value::as_str).and_then(|t| tok.token_to_id(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_byte_char_table_is_gpt2s() {
        let t = BYTE_CHAR;
        assert_eq!(t[b'!' as usize], '!');
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[0], 'Ā');
        assert_eq!(t[0xad], 'Ń');
        let mut seen: Vec<char> = t.to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 256);
        for b in 0..=255u8 {
            assert_eq!(char_byte(t[b as usize]), Some(b));
        }
        assert_eq!(char_byte('\u{144}'), None);
        assert_eq!(char_byte(' '), None);
    }
}
