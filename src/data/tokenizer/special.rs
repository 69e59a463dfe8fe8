//! Special tokens: the ids a sequence gets around it (tokenizer.json's `post_processor`) and the
//! bos / eos / pad / unk tokens tokenizer_config.json names.
//!
//! tokenizer_config.json's `add_bos_token` / `add_eos_token` are not applied: `transformers`
//! 5.24 was measured to ignore them when loading a folder (Llama 2 with `add_bos_token: false`
//! still gets "<s>", Llama 3 and Qwen3 with `true` get nothing; tools/make_tokenizer_fixtures.py
//! records this), so the post-processor alone decides, as in Python `tokenizers`.

use serde_json::Value;

use super::bpe::MAX_TOKEN_ID;
use super::{bad, component_type};
use crate::data::DataError;

/// What the tokenizer files say about special tokens.
///
/// `bos`, `eos`, `pad`, `unk`: from tokenizer_config.json (`bos_token` ..., a string or an
/// AddedToken object) when it names them; without it, `bos` / `eos` are the single token the
/// post-processor puts before / after a sequence, if it does, and `unk` the BPE model's unknown
/// token. The vocab.json + merges.txt pair has GPT-2's: "<|endoftext|>" for bos, eos and unk.
/// The model's config.json names bos / eos ids too; reconciling them is the caller's job.
///
/// `prefix` / `suffix`: the ids `encode_with_special_tokens` puts before / after the text;
/// `add_bos` / `add_eos` say whether `bos` / `eos` are among them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
    pub unk: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub prefix: Vec<u32>,
    pub suffix: Vec<u32>,
}

impl SpecialTokens {
    /// Sets `add_bos` / `add_eos` from `prefix` / `suffix`.
    pub(super) fn refresh_flags(&mut self) {
        self.add_bos = self.bos.is_some_and(|b| self.prefix.contains(&b));
        self.add_eos = self.eos.is_some_and(|e| self.suffix.contains(&e));
    }
}

/// The ids tokenizer.json's `post_processor` adds around one sequence: (prefix, suffix).
pub(super) fn post_processor(root: &Value, name: &str) -> Result<(Vec<u32>, Vec<u32>), DataError> {
    let mut prefix = Vec::new();
    let mut suffix = Vec::new();
    if let Some(v) = root.get("post_processor").filter(|v| !v.is_null()) {
        parse_into(v, "post_processor", name, &mut prefix, &mut suffix)?;
    }
    Ok((prefix, suffix))
}

fn id_of(v: &Value, name: &str, at: &str) -> Result<u32, DataError> {
    v.as_u64()
        .filter(|&i| i <= MAX_TOKEN_ID as u64)
        .map(|i| i as u32)
        .ok_or_else(|| bad(name, format!("{at} is {v}, not a token id in 0..={MAX_TOKEN_ID}")))
}

/// Wraps (prefix, suffix) in one more processor: a Sequence applies its members in order, each
/// around the result of the previous one.
fn parse_into(v: &Value, at: &str, name: &str, prefix: &mut Vec<u32>, suffix: &mut Vec<u32>) -> Result<(), DataError> {
    match component_type(v, at, name)? {
        "Sequence" => {
            let list = v
                .get("processors")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(name, format!("{at}.processors is missing or not an array")))?;
            for (i, p) in list.iter().enumerate() {
                parse_into(p, &format!("{at}.processors[{i}]"), name, prefix, suffix)?;
            }
        }
        "ByteLevel" => {}
        "BertProcessing" | "RobertaProcessing" => {
            let pair_id = |field: &str| -> Result<u32, DataError> {
                match v.get(field).and_then(Value::as_array).map(Vec::as_slice) {
                    Some([Value::String(_), id]) => id_of(id, name, &format!("{at}.{field}[1]")),
                    _ => Err(bad(name, format!("{at}.{field} must be [token, id]"))),
                }
            };
            let (cls, sep) = (pair_id("cls")?, pair_id("sep")?);
            prefix.insert(0, cls);
            suffix.push(sep);
        }
        "TemplateProcessing" => {
            let single = v
                .get("single")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(name, format!("{at}.single is missing or not a list of pieces")))?;
            let specials = v.get("special_tokens").and_then(Value::as_object);
            let (mut before, mut after) = (Vec::new(), Vec::new());
            let mut seen_a = false;
            for (i, piece) in single.iter().enumerate() {
                let here = format!("{at}.single[{i}]");
                if let Some(seq) = piece.get("Sequence") {
                    if seq.get("id").and_then(Value::as_str) != Some("A") || seen_a {
                        return Err(bad(
                            name,
                            format!("{here}: a single-sequence template must name the sequence A exactly once"),
                        ));
                    }
                    seen_a = true;
                } else if let Some(tok) = piece.get("SpecialToken") {
                    let key = tok
                        .get("id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad(name, format!("{here}.SpecialToken.id is missing or not a string")))?;
                    let entry = specials.and_then(|m| m.get(key)).ok_or_else(|| {
                        bad(name, format!("{here} names {key:?}, which {at}.special_tokens does not define"))
                    })?;
                    let ids = entry
                        .get("ids")
                        .and_then(Value::as_array)
                        .ok_or_else(|| bad(name, format!("{at}.special_tokens[{key:?}].ids is missing")))?;
                    for (j, id) in ids.iter().enumerate() {
                        let id = id_of(id, name, &format!("{at}.special_tokens[{key:?}].ids[{j}]"))?;
                        if seen_a { &mut after } else { &mut before }.push(id);
                    }
                } else {
                    return Err(bad(name, format!("{here} is {piece}; expected a SpecialToken or a Sequence")));
                }
            }
            if !seen_a {
                return Err(bad(name, format!("{at}.single has no $A sequence")));
            }
            before.append(prefix);
            *prefix = before;
            suffix.append(&mut after);
        }
        other => {
            return Err(bad(
                name,
                format!(
                    "{at}.type is \"{other}\"; supported: TemplateProcessing, ByteLevel, BertProcessing, \
                     RobertaProcessing, Sequence"
                ),
            ))
        }
    }
    Ok(())
}

/// The special tokens tokenizer_config.json names. Outer `None`: the field is absent;
/// `Some(None)`: null.
#[derive(Debug, Default)]
pub(super) struct Config {
    pub bos: Option<Option<String>>,
    pub eos: Option<Option<String>>,
    pub pad: Option<Option<String>>,
    pub unk: Option<Option<String>>,
}

/// Parses tokenizer_config.json text (`name` for messages).
pub(super) fn parse_config(text: &str, name: &str) -> Result<Config, DataError> {
    let root: Value = serde_json::from_str(text).map_err(|e| bad(name, format!("not valid JSON: {e}")))?;
    if !root.is_object() {
        return Err(bad(name, "not a tokenizer_config.json: the top level is not an object"));
    }
    let token = |field: &str| -> Result<Option<Option<String>>, DataError> {
        match root.get(field) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
            Some(v @ Value::Object(o)) => match o.get("content") {
                Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
                _ => Err(bad(name, format!("{field} is {v}; an AddedToken object needs a \"content\" string"))),
            },
            Some(v) => Err(bad(name, format!("{field} is {v}; expected a string, an AddedToken object or null"))),
        }
    };
    Ok(Config {
        bos: token("bos_token")?,
        eos: token("eos_token")?,
        pad: token("pad_token")?,
        unk: token("unk_token")?,
    })
}
