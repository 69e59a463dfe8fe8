//! Added tokens (`added_tokens` in tokenizer.json: "<|endoftext|>", "<|im_start|>", ...), cut
//! out of the text before anything else as `tokenizers`' `AddedVocabulary` does: leftmost-longest
//! match, non-`normalized` tokens on the raw text, `normalized` ones on the normalized text (in
//! their normalized form), honouring `single_word`, `lstrip` and `rstrip`.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use serde_json::Value;
use unicode_general_category::{get_general_category, GeneralCategory as Gc};

use super::normalizer::Normalizers;
use super::pattern::is_space;
use super::{bad, get_bool};
use crate::data::DataError;

/// A token added on top of the model vocabulary.
#[derive(Debug, Clone)]
pub(super) struct AddedToken {
    pub content: String,
    pub id: u32,
    pub single_word: bool,
    pub lstrip: bool,
    pub rstrip: bool,
    pub normalized: bool,
    pub special: bool,
    /// What the normalizer makes of `content` (when `normalized` and it differs): the form
    /// matched in normalized text and given to the decoder.
    pub normalized_form: Option<String>,
}

impl AddedToken {
    /// A special, non-normalized token (as "<|endoftext|>" in GPT-2's vocab.json + merges.txt).
    pub(super) fn special(content: &str) -> AddedToken {
        AddedToken {
            content: content.to_string(),
            id: 0,
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
            special: true,
            normalized_form: None,
        }
    }

    /// The string this token matches and decodes as.
    pub(super) fn form(&self) -> &str {
        self.normalized_form.as_deref().unwrap_or(&self.content)
    }
}

/// Leftmost-longest matcher over the added tokens: candidates grouped by first byte, longest first.
#[derive(Debug)]
struct Matcher {
    /// For each first byte: indices into `AddedVocab::tokens`, longest form first.
    by_first_byte: Vec<Vec<usize>>,
}

/// Which tokens a search looks for.
#[derive(Clone, Copy)]
pub(super) enum Which {
    Raw,
    Normalized,
}

#[derive(Debug, Default)]
pub(super) struct AddedVocab {
    /// In `tokenizers`' id order (ids unique).
    pub tokens: Vec<AddedToken>,
    pub by_content: HashMap<String, u32>,
    pub by_id: HashMap<u32, usize>,
    /// Contents of the tokens marked special (HF's special_tokens_set).
    pub special: HashSet<String>,
    raw: Option<Matcher>,
    normalized: Option<Matcher>,
}

/// Parses `added_tokens` of tokenizer.json (ids come later, from `AddedVocab::new`).
pub(super) fn parse_added(root: &Value, name: &str) -> Result<Vec<AddedToken>, DataError> {
    let mut added = Vec::new();
    match root.get("added_tokens") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (i, t) in a.iter().enumerate() {
                let at = format!("added_tokens[{i}]");
                let content = t
                    .get("content")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(name, format!("{at}.content is missing or not a string")))?;
                added.push(AddedToken {
                    content: content.to_string(),
                    id: 0,
                    single_word: get_bool(t, "single_word", false, name, &at)?,
                    lstrip: get_bool(t, "lstrip", false, name, &at)?,
                    rstrip: get_bool(t, "rstrip", false, name, &at)?,
                    normalized: get_bool(t, "normalized", true, name, &at)?,
                    special: get_bool(t, "special", false, name, &at)?,
                    normalized_form: None,
                });
            }
        }
        Some(_) => return Err(bad(name, "added_tokens is not an array")),
    }
    Ok(added)
}

impl AddedVocab {
    /// Gives ids as `tokenizers`' `AddedVocabulary::add_tokens` does (the model's id for a
    /// content it has, else the next id from the model's vocabulary size; ids written in the
    /// file are not used) and normalizes the `normalized` ones with `normalizer`.
    pub(super) fn new(
        tokens: Vec<AddedToken>,
        model_vocab: &HashMap<String, u32>,
        normalizer: &Normalizers,
    ) -> AddedVocab {
        let mut v = AddedVocab::default();
        let mut next_id = model_vocab.len() as u32;
        for mut t in tokens {
            if t.content.is_empty() {
                continue;
            }
            let id = match v.by_content.get(&t.content).or_else(|| model_vocab.get(&t.content)) {
                Some(id) => *id,
                None => {
                    next_id += 1;
                    next_id - 1
                }
            };
            t.id = id;
            if t.normalized && !normalizer.is_empty() {
                let mut limit_hit = false;
                let n = normalizer.apply(&t.content, true, &mut limit_hit);
                if n.text != t.content.as_str() {
                    t.normalized_form = Some(n.text.into_owned());
                }
            }
            if t.special {
                v.special.insert(t.content.clone());
            }
            v.by_content.insert(t.content.clone(), id);
            match v.by_id.get(&id) {
                Some(&k) => v.tokens[k] = t,
                None => {
                    v.by_id.insert(id, v.tokens.len());
                    v.tokens.push(t);
                }
            }
        }
        v.raw = v.matcher(false);
        v.normalized = v.matcher(true);
        v
    }

    fn matcher(&self, normalized: bool) -> Option<Matcher> {
        let mut m = Matcher {
            by_first_byte: vec![Vec::new(); 256],
        };
        let mut any = false;
        for (k, t) in self.tokens.iter().enumerate() {
            if t.normalized == normalized && !t.form().is_empty() {
                m.by_first_byte[t.form().as_bytes()[0] as usize].push(k);
                any = true;
            }
        }
        for list in &mut m.by_first_byte {
            list.sort_by_key(|&k| std::cmp::Reverse(self.tokens[k].form().len()));
        }
        any.then_some(m)
    }

    /// `AddedVocabulary::find_matches`: (Some(id), range) for added tokens, (None, range) for the
    /// text between them, covering `s`.
    pub(super) fn find(&self, s: &str, which: Which) -> Vec<(Option<u32>, Range<usize>)> {
        let matcher = match which {
            Which::Raw => self.raw.as_ref(),
            Which::Normalized => self.normalized.as_ref(),
        };
        let Some(m) = matcher else {
            return vec![(None, 0..s.len())];
        };
        let b = s.as_bytes();
        let mut splits = Vec::new();
        let mut start_offset = 0;
        let mut pos = 0;
        while pos < b.len() {
            // leftmost-longest match at or after `pos`, not overlapping the previous match
            let found = (pos..b.len()).find_map(|i| {
                m.by_first_byte[b[i] as usize]
                    .iter()
                    .find(|&&k| b[i..].starts_with(self.tokens[k].form().as_bytes()))
                    .map(|&k| (i, k))
            });
            let Some((mstart, k)) = found else { break };
            let t = &self.tokens[k];
            let mend = mstart + t.form().len();
            pos = mend;
            let (mut start, mut stop) = (mstart, mend);
            if t.single_word {
                let start_space = start == 0 || !s[..start].chars().next_back().is_some_and(is_word_char);
                let stop_space = stop == s.len() || !s[stop..].chars().next().is_some_and(is_word_char);
                if !start_space || !stop_space {
                    continue;
                }
            }
            if t.lstrip {
                let trimmed = s[..start].trim_end_matches(is_space).len();
                start = trimmed.max(start_offset);
            }
            if t.rstrip {
                stop += s[stop..].len() - s[stop..].trim_start_matches(is_space).len();
            }
            if start_offset < start {
                splits.push((None, start_offset..start));
            }
            splits.push((Some(t.id), start..stop));
            start_offset = stop;
        }
        if start_offset != s.len() {
            splits.push((None, start_offset..s.len()));
        }
        splits
    }
}

/// `\w` of the `regex` crate (Alphabetic, marks, decimal numbers, connector punctuation, joiners),
/// used by `tokenizers` for `single_word` added tokens.
fn is_word_char(c: char) -> bool {
    c.is_alphabetic()
        || c == '\u{200c}'
        || c == '\u{200d}'
        || matches!(
            get_general_category(c),
            Gc::NonspacingMark | Gc::SpacingMark | Gc::EnclosingMark | Gc::DecimalNumber | Gc::ConnectorPunctuation
        )
}
