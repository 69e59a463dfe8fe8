//! The `normalizer` of tokenizer.json, applied to the text between added tokens before
//! pre-tokenization (`tokenizers`' `normalizers`): NFC / NFD / NFKC / NFKD, Prepend, Replace,
//! Lowercase, Strip, and Sequence of these.
//!
//! Unicode normalization uses `unicode-normalization-alignments`, the crate `tokenizers` itself
//! uses: its tables predate recent Unicode versions, and a newer table would compose or reorder
//! characters assigned since then differently from `tokenizers`.

use std::borrow::Cow;

use serde_json::Value;
use unicode_normalization_alignments::UnicodeNormalization;

use super::pattern::{Pattern, Piece};
use super::{bad, component_type, get_bool};
use crate::data::DataError;

#[derive(Debug)]
enum Normalizer {
    Nfc,
    Nfd,
    Nfkc,
    Nfkd,
    Prepend(String),
    Replace { pattern: Pattern, content: String },
    Lowercase,
    Strip { left: bool, right: bool },
}

/// The normalizer as a flat list (a Sequence's members in order; empty = none).
#[derive(Debug, Default)]
pub(super) struct Normalizers(Vec<Normalizer>);

/// A piece of text after normalization, and whether it still starts where the input text
/// started (Metaspace's `prepend_scheme: "first"` needs that; a normalizer that deletes the
/// first characters moves the start).
pub(super) struct Normalized<'a> {
    pub text: Cow<'a, str>,
    pub at_origin: bool,
}

impl Normalizers {
    pub(super) fn parse(root: &Value, name: &str) -> Result<Normalizers, DataError> {
        let mut list = Vec::new();
        if let Some(v) = root.get("normalizer").filter(|v| !v.is_null()) {
            parse_into(v, "normalizer", name, &mut list)?;
        }
        Ok(Normalizers(list))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Normalizes `s` (`at_origin`: it starts the input text). Sets `limit_hit` if a Replace
    /// regex hit its backtrack limit.
    pub(super) fn apply<'a>(&self, s: &'a str, at_origin: bool, limit_hit: &mut bool) -> Normalized<'a> {
        let mut text = Cow::Borrowed(s);
        let mut at_origin = at_origin;
        let mut pieces: Vec<Piece> = Vec::new();
        for n in &self.0 {
            let next: Option<String> = match n {
                Normalizer::Nfc | Normalizer::Nfd | Normalizer::Nfkc | Normalizer::Nfkd if text.is_ascii() => None,
                Normalizer::Nfc => Some(text.nfc().map(|(c, _)| c).collect()),
                Normalizer::Nfd => Some(text.nfd().map(|(c, _)| c).collect()),
                Normalizer::Nfkc => Some(text.nfkc().map(|(c, _)| c).collect()),
                Normalizer::Nfkd => Some(text.nfkd().map(|(c, _)| c).collect()),
                Normalizer::Prepend(p) => (!text.is_empty()).then(|| format!("{p}{text}")),
                Normalizer::Replace { pattern, content } => {
                    if !pattern.find_matches(&text, &mut pieces) {
                        *limit_hit = true;
                    }
                    if !pieces.iter().any(|p| p.2) {
                        None
                    } else {
                        if content.is_empty() && pieces.first().is_some_and(|p| p.2 && p.1 > p.0) {
                            at_origin = false;
                        }
                        let mut out = String::with_capacity(text.len());
                        for &(a, b, m) in &pieces {
                            out.push_str(if m { content } else { &text[a..b] });
                        }
                        Some(out)
                    }
                }
                Normalizer::Lowercase => {
                    (text.chars().any(|c| c.to_lowercase().ne(std::iter::once(c))))
                        .then(|| text.chars().flat_map(char::to_lowercase).collect())
                }
                Normalizer::Strip { left, right } => {
                    let mut t: &str = &text;
                    if *left {
                        let trimmed = t.trim_start_matches(char::is_whitespace);
                        if trimmed.len() != t.len() {
                            at_origin = false;
                        }
                        t = trimmed;
                    }
                    if *right {
                        t = t.trim_end_matches(char::is_whitespace);
                    }
                    (t.len() != text.len()).then(|| t.to_string())
                }
            };
            if let Some(s) = next {
                text = Cow::Owned(s);
            }
        }
        Normalized { text, at_origin }
    }
}

fn parse_into(v: &Value, at: &str, name: &str, out: &mut Vec<Normalizer>) -> Result<(), DataError> {
    let t = component_type(v, at, name)?;
    let n = match t {
        "Sequence" => {
            let list = v
                .get("normalizers")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(name, format!("{at}.normalizers is missing or not an array")))?;
            for (i, m) in list.iter().enumerate() {
                parse_into(m, &format!("{at}.normalizers[{i}]"), name, out)?;
            }
            return Ok(());
        }
        "NFC" => Normalizer::Nfc,
        "NFD" => Normalizer::Nfd,
        "NFKC" => Normalizer::Nfkc,
        "NFKD" => Normalizer::Nfkd,
        "Lowercase" => Normalizer::Lowercase,
        "Prepend" => Normalizer::Prepend(
            v.get("prepend")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(name, format!("{at}.prepend is missing or not a string")))?
                .to_string(),
        ),
        "Replace" => {
            let pattern = v
                .get("pattern")
                .ok_or_else(|| bad(name, format!("{at}.pattern is missing")))?;
            Normalizer::Replace {
                pattern: Pattern::parse(pattern, name, &format!("{at}.pattern"))?,
                content: v
                    .get("content")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(name, format!("{at}.content is missing or not a string")))?
                    .to_string(),
            }
        }
        "Strip" => Normalizer::Strip {
            left: get_bool(v, "strip_left", false, name, at)?,
            right: get_bool(v, "strip_right", false, name, at)?,
        },
        other => {
            return Err(bad(
                name,
                format!(
                    "{at}.type \"{other}\" is not supported (supported: NFC, NFD, NFKC, NFKD, Prepend, Replace, \
                     Lowercase, Strip, Sequence)"
                ),
            ))
        }
    };
    out.push(n);
    Ok(())
}
