//! The `decoder` of tokenizer.json (`tokenizers`' `decoders`): token strings back to text.
//! ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace and Sequence of these; each takes the
//! list of token strings the previous one left (`decode_chain`), and the result is joined.

use serde_json::Value;

use super::pattern::{Pattern, Piece};
use super::{bad, char_byte, component_type};
use crate::data::DataError;

#[derive(Debug)]
enum Decoder {
    ByteLevel,
    Replace { pattern: Pattern, content: String },
    ByteFallback,
    Fuse,
    Strip { content: char, start: usize, stop: usize },
    Metaspace { replacement: char, strip_first: bool },
}

/// The decoder as a flat list (a Sequence's members in order). `None` in `Tokenizer` means no
/// decoder: tokens are joined with spaces, as `tokenizers` does.
#[derive(Debug)]
pub(super) struct Decoders(Vec<Decoder>);

impl Decoders {
    pub(super) fn parse(root: &Value, name: &str) -> Result<Option<Decoders>, DataError> {
        let Some(v) = root.get("decoder").filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let mut list = Vec::new();
        parse_into(v, "decoder", name, &mut list)?;
        Ok(Some(Decoders(list)))
    }

    pub(super) fn byte_level() -> Decoders {
        Decoders(vec![Decoder::ByteLevel])
    }

    pub(super) fn decode(&self, tokens: Vec<String>) -> String {
        let mut tokens = tokens;
        let mut pieces: Vec<Piece> = Vec::new();
        for d in &self.0 {
            tokens = match d {
                Decoder::ByteLevel => {
                    let mut bytes = Vec::with_capacity(tokens.iter().map(String::len).sum());
                    for t in &tokens {
                        let start = bytes.len();
                        let all = t.chars().all(|c| match char_byte(c) {
                            Some(b) => {
                                bytes.push(b);
                                true
                            }
                            None => false,
                        });
                        if !all {
                            bytes.truncate(start);
                            bytes.extend_from_slice(t.as_bytes());
                        }
                    }
                    vec![String::from_utf8_lossy(&bytes).into_owned()]
                }
                Decoder::Replace { pattern, content } => tokens
                    .into_iter()
                    .map(|t| {
                        pattern.find_matches(&t, &mut pieces);
                        if !pieces.iter().any(|p| p.2) {
                            return t;
                        }
                        let mut out = String::with_capacity(t.len());
                        for &(a, b, m) in &pieces {
                            out.push_str(if m { content } else { &t[a..b] });
                        }
                        out
                    })
                    .collect(),
                Decoder::ByteFallback => byte_fallback(tokens),
                Decoder::Fuse => vec![tokens.concat()],
                Decoder::Strip { content, start, stop } => tokens
                    .into_iter()
                    .map(|t| {
                        let chars: Vec<char> = t.chars().collect();
                        let lead = chars.iter().take(*start).take_while(|&&c| c == *content).count();
                        let rest = &chars[lead..];
                        let trail = rest.iter().rev().take(*stop).take_while(|&&c| c == *content).count();
                        rest[..rest.len() - trail].iter().collect()
                    })
                    .collect(),
                Decoder::Metaspace {
                    replacement,
                    strip_first,
                } => tokens
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        t.chars()
                            .filter_map(|c| match c == *replacement {
                                true if i == 0 && *strip_first => None,
                                true => Some(' '),
                                false => Some(c),
                            })
                            .collect()
                    })
                    .collect(),
            };
        }
        tokens.concat()
    }
}

/// `<0xXX>` runs to their bytes: valid UTF-8 becomes its text, else one U+FFFD per byte.
fn byte_fallback(tokens: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut bytes: Vec<u8> = Vec::new();
    let flush = |bytes: &mut Vec<u8>, out: &mut Vec<String>| {
        if bytes.is_empty() {
            return;
        }
        match String::from_utf8(std::mem::take(bytes)) {
            Ok(s) => out.push(s),
            Err(e) => out.extend(std::iter::repeat_n("\u{fffd}".to_string(), e.as_bytes().len())),
        }
    };
    for t in tokens {
        let byte = if t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') {
            // as `tokenizers` (u8::from_str_radix, which also takes a leading '+')
            t.get(3..5).and_then(|h| u8::from_str_radix(h, 16).ok())
        } else {
            None
        };
        match byte {
            Some(b) => bytes.push(b),
            None => {
                flush(&mut bytes, &mut out);
                out.push(t);
            }
        }
    }
    flush(&mut bytes, &mut out);
    out
}

fn parse_into(v: &Value, at: &str, name: &str, out: &mut Vec<Decoder>) -> Result<(), DataError> {
    let str_field = |field: &str| {
        v.get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(name, format!("{at}.{field} is missing or not a string")))
    };
    let one_char = |field: &str| -> Result<char, DataError> {
        let s = str_field(field)?;
        let mut it = s.chars();
        match (it.next(), it.next()) {
            (Some(c), None) => Ok(c),
            _ => Err(bad(name, format!("{at}.{field} must be one character, found {s:?}"))),
        }
    };
    let count = |field: &str| {
        v.get(field)
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad(name, format!("{at}.{field} is missing or not a count")))
    };
    let d = match component_type(v, at, name)? {
        "Sequence" => {
            let list = v
                .get("decoders")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(name, format!("{at}.decoders is missing or not an array")))?;
            for (i, m) in list.iter().enumerate() {
                parse_into(m, &format!("{at}.decoders[{i}]"), name, out)?;
            }
            return Ok(());
        }
        "ByteLevel" => Decoder::ByteLevel,
        "ByteFallback" => Decoder::ByteFallback,
        "Fuse" => Decoder::Fuse,
        "Replace" => Decoder::Replace {
            pattern: Pattern::parse(
                v.get("pattern").unwrap_or(&Value::Null),
                name,
                &format!("{at}.pattern"),
            )?,
            content: str_field("content")?.to_string(),
        },
        "Strip" => Decoder::Strip {
            content: one_char("content")?,
            start: count("start")?,
            stop: count("stop")?,
        },
        "Metaspace" => {
            let scheme = v.get("prepend_scheme").and_then(Value::as_str);
            let never = scheme == Some("never") || v.get("add_prefix_space") == Some(&Value::Bool(false));
            Decoder::Metaspace {
                replacement: one_char("replacement")?,
                strip_first: !never,
            }
        }
        other => {
            return Err(bad(
                name,
                format!(
                    "{at}.type is \"{other}\"; supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, \
                     Sequence"
                ),
            ))
        }
    };
    out.push(d);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoders(json: &str) -> Decoders {
        let root: Value = serde_json::from_str(&format!("{{\"decoder\": {json}}}")).unwrap();
        Decoders::parse(&root, "t.json").unwrap().unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Llama 2's decoder, derived by hand: "▁" -> " ", byte tokens to UTF-8 (an invalid run gives
    /// one U+FFFD per byte), fused, one leading space stripped.
    #[test]
    fn tokenizer_llama2_decoder_by_hand() {
        let d = decoders(
            r#"{"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}"#,
        );
        assert_eq!(d.decode(strings(&["▁Hello", "▁wor", "ld"])), "Hello world");
        assert_eq!(d.decode(strings(&["▁", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>", "!"])), "😀!");
        assert_eq!(d.decode(strings(&["a", "<0xF0>", "<0x9F>", "b"])), "a\u{fffd}\u{fffd}b");
        assert_eq!(d.decode(strings(&["▁▁x"])), " x");
        assert_eq!(d.decode(Vec::new()), "");
    }

    /// Strip never panics where `start`/`stop` exceed the token (tokenizers' would index out of range).
    #[test]
    fn tokenizer_strip_and_metaspace_by_hand() {
        let d = decoders(r#"{"type": "Strip", "content": "x", "start": 3, "stop": 5}"#);
        assert_eq!(d.decode(strings(&["xxaxx", "", "xx", "axxxxxx"])), "aax");
        let m = decoders(r#"{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}"#);
        assert_eq!(m.decode(strings(&["▁a▁b", "▁c"])), "ab c");
        let n = decoders(r#"{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never", "split": false}"#);
        assert_eq!(n.decode(strings(&["▁a", "▁c"])), " a c");
    }
}
