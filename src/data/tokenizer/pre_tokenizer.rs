//! The `pre_tokenizer` of tokenizer.json (`tokenizers`' `pre_tokenizers`): ByteLevel, Split,
//! Digits, Metaspace and Sequence of these. Each stage cuts every piece the previous stage left
//! into smaller pieces; the model then tokenizes each final piece on its own.
//!
//! ByteLevel does not rewrite the text: its pieces go on flagged as byte-level, and the BPE model
//! maps their bytes to ids directly. Only when another stage follows a ByteLevel stage is the
//! byte-level string built, since that stage sees the mapped characters (as in `tokenizers`).

use serde_json::Value;

use super::pattern::{gpt2_pieces, Behavior, Pattern, Piece};
use super::{bad, byte_level_string, component_type, get_bool};
use crate::data::DataError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prepend {
    Always,
    First,
    Never,
}

#[derive(Debug)]
enum PreTokenizer {
    ByteLevel { add_prefix_space: bool, use_regex: bool },
    Split { pattern: Pattern, behavior: Behavior, invert: bool },
    Digits { individual: bool },
    Metaspace { replacement: char, prepend: Prepend, split: bool },
}

/// Pre-tokenizers a file may chain (real files use one to three).
const MAX_STAGES: usize = 64;

/// The pre-tokenizer as a flat list (a Sequence's members in order; empty = none).
#[derive(Debug, Default)]
pub(super) struct PreTokenizers(Vec<PreTokenizer>);

/// Reused buffers and what went wrong in one encode call.
#[derive(Default)]
pub(super) struct PreScratch {
    pieces: Vec<Piece>,
    ranges: Vec<Vec<(usize, usize)>>,
    /// A Split regex hit its backtrack limit (that piece was left unsplit from there on).
    pub limit_hit: bool,
}

impl PreTokenizers {
    pub(super) fn parse(root: &Value, name: &str) -> Result<PreTokenizers, DataError> {
        let mut list = Vec::new();
        if let Some(v) = root.get("pre_tokenizer").filter(|v| !v.is_null()) {
            parse_into(v, "pre_tokenizer", name, &mut list)?;
        }
        // each stage is one level of recursion when encoding
        if list.len() > MAX_STAGES {
            return Err(bad(
                name,
                format!("pre_tokenizer has {} stages; at most {MAX_STAGES} are supported", list.len()),
            ));
        }
        Ok(PreTokenizers(list))
    }

    /// GPT-2's pre-tokenizer alone (the vocab.json + merges.txt pair).
    pub(super) fn gpt2() -> PreTokenizers {
        PreTokenizers(vec![PreTokenizer::ByteLevel {
            add_prefix_space: false,
            use_regex: true,
        }])
    }

    pub(super) fn has_byte_level(&self) -> bool {
        self.0.iter().any(|p| matches!(p, PreTokenizer::ByteLevel { .. }))
    }

    /// Cuts `text` (`at_origin`: it starts the input text) and hands each final piece to `sink`
    /// with whether it is byte-level.
    pub(super) fn run(&self, text: &str, at_origin: bool, scratch: &mut PreScratch, sink: &mut dyn FnMut(&str, bool)) {
        if scratch.ranges.len() < self.0.len() {
            scratch.ranges.resize_with(self.0.len(), Vec::new);
        }
        self.stage(0, text, false, at_origin, scratch, sink);
    }

    fn stage(
        &self,
        k: usize,
        text: &str,
        byte_level: bool,
        at_origin: bool,
        scratch: &mut PreScratch,
        sink: &mut dyn FnMut(&str, bool),
    ) {
        if text.is_empty() {
            return;
        }
        let Some(pre) = self.0.get(k) else {
            sink(text, byte_level);
            return;
        };
        if byte_level {
            // a stage after ByteLevel sees the byte-level characters
            let mapped = byte_level_string(text);
            return self.stage(k, &mapped, false, at_origin, scratch, sink);
        }
        match pre {
            PreTokenizer::ByteLevel {
                add_prefix_space,
                use_regex,
            } => {
                let prefixed;
                let t = if *add_prefix_space && !text.starts_with(' ') {
                    prefixed = format!(" {text}");
                    prefixed.as_str()
                } else {
                    text
                };
                if *use_regex {
                    let base = t.as_ptr() as usize;
                    gpt2_pieces(t, |p| {
                        let first = p.as_ptr() as usize == base;
                        self.stage(k + 1, p, true, at_origin && first, scratch, sink)
                    });
                } else {
                    self.stage(k + 1, t, true, at_origin, scratch, sink);
                }
            }
            PreTokenizer::Split {
                pattern,
                behavior,
                invert,
            } => {
                if !pattern.find_matches(text, &mut scratch.pieces) {
                    scratch.limit_hit = true;
                }
                if *invert {
                    scratch.pieces.iter_mut().for_each(|p| p.2 = !p.2);
                }
                self.cut(k, text, *behavior, at_origin, scratch, sink);
            }
            PreTokenizer::Digits { individual } => {
                char_pieces(text, char::is_numeric, &mut scratch.pieces);
                let behavior = if *individual {
                    Behavior::Isolated
                } else {
                    Behavior::Contiguous
                };
                self.cut(k, text, behavior, at_origin, scratch, sink);
            }
            PreTokenizer::Metaspace {
                replacement,
                prepend,
                split,
            } => {
                let mut buf = [0; 4];
                let rep: &str = replacement.encode_utf8(&mut buf);
                let mut t = text.replace(' ', rep);
                let add = match prepend {
                    Prepend::Always => true,
                    Prepend::First => at_origin,
                    Prepend::Never => false,
                };
                if add && !t.starts_with(*replacement) {
                    t.insert_str(0, rep);
                }
                if *split {
                    let r = *replacement;
                    char_pieces(&t, |c| c == r, &mut scratch.pieces);
                    self.cut(k, &t, Behavior::MergedWithNext, at_origin, scratch, sink);
                } else {
                    self.stage(k + 1, &t, false, at_origin, scratch, sink);
                }
            }
        }
    }

    /// Applies `behavior` to the pieces in `scratch.pieces` and runs the next stage on each range.
    fn cut(
        &self,
        k: usize,
        text: &str,
        behavior: Behavior,
        at_origin: bool,
        scratch: &mut PreScratch,
        sink: &mut dyn FnMut(&str, bool),
    ) {
        let mut ranges = std::mem::take(&mut scratch.ranges[k]);
        behavior.apply(&scratch.pieces, &mut ranges);
        for &(a, b) in &ranges {
            self.stage(k + 1, &text[a..b], false, at_origin && a == 0, scratch, sink);
        }
        scratch.ranges[k] = ranges;
    }
}

/// `find_matches` of a `Fn(char) -> bool` pattern: every matching character is one match.
fn char_pieces(s: &str, is_match: impl Fn(char) -> bool, out: &mut Vec<Piece>) {
    out.clear();
    let mut last = 0;
    for (i, c) in s.char_indices() {
        if is_match(c) {
            if last < i {
                out.push((last, i, false));
            }
            out.push((i, i + c.len_utf8(), true));
            last = i + c.len_utf8();
        }
    }
    if last < s.len() {
        out.push((last, s.len(), false));
    }
}

fn parse_into(v: &Value, at: &str, name: &str, out: &mut Vec<PreTokenizer>) -> Result<(), DataError> {
    let p = match component_type(v, at, name)? {
        "Sequence" => {
            let list = v
                .get("pretokenizers")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(name, format!("{at}.pretokenizers is missing or not an array")))?;
            for (i, m) in list.iter().enumerate() {
                parse_into(m, &format!("{at}.pretokenizers[{i}]"), name, out)?;
            }
            return Ok(());
        }
        "ByteLevel" => PreTokenizer::ByteLevel {
            add_prefix_space: get_bool(v, "add_prefix_space", false, name, at)?,
            use_regex: get_bool(v, "use_regex", true, name, at)?,
        },
        "Split" => {
            let pattern = v
                .get("pattern")
                .ok_or_else(|| bad(name, format!("{at}.pattern is missing")))?;
            PreTokenizer::Split {
                pattern: Pattern::parse(pattern, name, &format!("{at}.pattern"))?,
                behavior: Behavior::parse(v.get("behavior"), name, at)?,
                invert: get_bool(v, "invert", false, name, at)?,
            }
        }
        "Digits" => PreTokenizer::Digits {
            individual: get_bool(v, "individual_digits", false, name, at)?,
        },
        "Metaspace" => {
            let replacement = match v.get("replacement").and_then(Value::as_str) {
                Some(s) if s.chars().count() == 1 => s.chars().next().unwrap_or('▁'),
                _ => {
                    return Err(bad(
                        name,
                        format!("{at}.replacement must be a string of one character"),
                    ))
                }
            };
            let mut prepend = match v.get("prepend_scheme").and_then(Value::as_str) {
                None => Prepend::Always,
                Some("always") => Prepend::Always,
                Some("first") => Prepend::First,
                Some("never") => Prepend::Never,
                Some(s) => {
                    return Err(bad(
                        name,
                        format!("{at}.prepend_scheme is \"{s}\"; expected \"always\", \"first\" or \"never\""),
                    ))
                }
            };
            // older files: add_prefix_space false means never (and contradicts any other scheme)
            if v.get("add_prefix_space") == Some(&Value::Bool(false)) {
                if v.get("prepend_scheme").is_some() && prepend != Prepend::Never {
                    return Err(bad(name, format!("{at}: add_prefix_space false contradicts prepend_scheme")));
                }
                prepend = Prepend::Never;
            }
            PreTokenizer::Metaspace {
                replacement,
                prepend,
                split: get_bool(v, "split", true, name, at)?,
            }
        }
        other => {
            return Err(bad(
                name,
                format!(
                    "{at}.type is \"{other}\"; supported: ByteLevel, Split, Digits, Metaspace, Sequence"
                ),
            ))
        }
    };
    out.push(p);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Digits' `char::is_numeric` (of the Rust this builds with) equals `tokenizers`' for every code
    /// point (fixture written by tools/make_tokenizer_fixtures.py with the Digits pre-tokenizer).
    #[test]
    fn tokenizer_digits_numeric_chars_match_tokenizers() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tokenizer/unicode_classes.json");
        let j: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut want = vec![false; 0x110000];
        for r in j["digits"].as_array().unwrap() {
            for c in r[0].as_u64().unwrap()..=r[1].as_u64().unwrap() {
                want[c as usize] = true;
            }
        }
        let wrong: Vec<String> = (0..0x110000u32)
            .filter_map(|c| char::from_u32(c).filter(|ch| ch.is_numeric() != want[c as usize]))
            .map(|c| format!("U+{:04X}", c as u32))
            .collect();
        assert!(wrong.is_empty(), "{} differ, e.g. {:?}", wrong.len(), &wrong[..wrong.len().min(10)]);
        assert!(want['7' as usize] && want['½' as usize] && !want['x' as usize]);
    }

    /// The pieces of a small pipeline, derived by hand: Metaspace "first" prepends only at the
    /// start of the text, and splits before each "▁".
    #[test]
    fn tokenizer_metaspace_first_by_hand() {
        let root: Value = serde_json::from_str(
            r#"{"pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true}}"#,
        )
        .unwrap();
        let pre = PreTokenizers::parse(&root, "t.json").unwrap();
        let run = |text: &str, at_origin: bool| {
            let mut out = Vec::new();
            pre.run(text, at_origin, &mut PreScratch::default(), &mut |p, bl| out.push((p.to_string(), bl)));
            out.into_iter().map(|(p, _)| p).collect::<Vec<_>>()
        };
        assert_eq!(run("Hey friend", true), ["▁Hey", "▁friend"]);
        assert_eq!(run("Hey friend", false), ["Hey", "▁friend"]);
        assert_eq!(run("  x", true), ["▁", "▁x"]);
    }
}
