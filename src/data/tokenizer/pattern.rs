//! Patterns of tokenizer.json (`{"String": ..}` / `{"Regex": ..}` in Split, Replace) and how a
//! split behaves around their matches, as `tokenizers`' `Pattern::find_matches` and
//! `NormalizedString::split` do.
//!
//! Regexes are Oniguruma patterns in `tokenizers`; here they run on `fancy-regex` (the engine
//! `tokenizers` itself uses for wasm32), whose classes (`\p{L}`, `\p{N}`, `\s`, `(?i:..)`) the tests
//! compare with Oniguruma's code point by code point. GPT-2's pattern (the ByteLevel
//! pre-tokenizer's, also written out as a Split by some files) runs on a hand-written scanner
//! that gives the same pieces and is several times faster.

use fancy_regex::{Regex, RegexBuilder};
use serde_json::Value;
use unicode_general_category::{get_general_category, GeneralCategory as Gc};

use super::bad;
use crate::data::DataError;

/// GPT-2's pre-tokenizer regex (the ByteLevel pre-tokenizer's `use_regex`).
pub(super) const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Steps one regex search may take before it gives up (fancy-regex's default, as in the
/// wasm build of `tokenizers`): a pattern that backtracks without end stops there instead of
/// hanging, and the rest of the text is left unsplit (see `find_matches`).
const BACKTRACK_LIMIT: usize = 1_000_000;

/// A compiled `{"String": ..}` or `{"Regex": ..}` pattern.
#[derive(Debug)]
pub(super) enum Pattern {
    /// A non-empty literal string.
    Literal(String),
    /// GPT-2's regex, on the scanner below.
    Gpt2,
    Regex(Box<Regex>),
}

/// One piece of a string cut by a pattern: `start..end` in bytes, and whether it is a match.
pub(super) type Piece = (usize, usize, bool);

impl Pattern {
    /// Parses `{"String": s}` or `{"Regex": r}` at `at` (a field path for messages).
    pub(super) fn parse(v: &Value, name: &str, at: &str) -> Result<Pattern, DataError> {
        let obj = v.as_object().filter(|o| o.len() == 1);
        let (kind, text) = match obj.and_then(|o| o.iter().next()) {
            Some((k, Value::String(s))) if k == "String" || k == "Regex" => (k.as_str(), s.as_str()),
            _ => {
                return Err(bad(
                    name,
                    format!("{at} must be {{\"String\": ..}} or {{\"Regex\": ..}}, found {v}"),
                ))
            }
        };
        if text.is_empty() {
            return Err(bad(name, format!("{at}.{kind} is empty; an empty pattern is not supported")));
        }
        if kind == "String" {
            return Ok(Pattern::Literal(text.to_string()));
        }
        Pattern::regex(text).map_err(|e| bad(name, format!("{at}.Regex {text:?} does not compile: {e}")))
    }

    /// A regex pattern (GPT-2's goes to the scanner).
    pub(super) fn regex(text: &str) -> Result<Pattern, fancy_regex::Error> {
        if text == GPT2_PATTERN {
            return Ok(Pattern::Gpt2);
        }
        let re = RegexBuilder::new(text).backtrack_limit(BACKTRACK_LIMIT).build()?;
        Ok(Pattern::Regex(Box::new(re)))
    }

    /// `tokenizers`' `find_matches`: `s` cut into consecutive pieces covering it, matches flagged.
    /// Returns false if the regex hit its backtrack limit: the pieces up to there are kept and
    /// the rest is one non-match, which is what `tokenizers` built on fancy-regex does.
    pub(super) fn find_matches(&self, s: &str, out: &mut Vec<Piece>) -> bool {
        out.clear();
        let mut prev = 0;
        let mut ok = true;
        let mut push = |out: &mut Vec<Piece>, start: usize, end: usize| {
            if prev != start {
                out.push((prev, start, false));
            }
            out.push((start, end, true));
            prev = end;
        };
        match self {
            Pattern::Literal(lit) => {
                for (i, m) in s.match_indices(lit.as_str()) {
                    push(out, i, i + m.len());
                }
            }
            Pattern::Gpt2 => {
                let base = s.as_ptr() as usize;
                gpt2_pieces(s, |p| {
                    let i = p.as_ptr() as usize - base;
                    push(out, i, i + p.len());
                });
            }
            Pattern::Regex(re) => {
                for m in re.find_iter(s) {
                    match m {
                        Ok(m) => push(out, m.start(), m.end()),
                        Err(_) => {
                            ok = false;
                            break;
                        }
                    }
                }
            }
        }
        if prev != s.len() {
            out.push((prev, s.len(), false));
        }
        ok
    }
}

/// `SplitDelimiterBehavior`: what a split does with the matches of its pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Behavior {
    Removed,
    Isolated,
    MergedWithPrevious,
    MergedWithNext,
    Contiguous,
}

impl Behavior {
    pub(super) fn parse(v: Option<&Value>, name: &str, at: &str) -> Result<Behavior, DataError> {
        Ok(match v.and_then(Value::as_str) {
            Some("Removed") => Behavior::Removed,
            Some("Isolated") => Behavior::Isolated,
            Some("MergedWithPrevious") => Behavior::MergedWithPrevious,
            Some("MergedWithNext") => Behavior::MergedWithNext,
            Some("Contiguous") => Behavior::Contiguous,
            _ => {
                return Err(bad(
                    name,
                    format!(
                        "{at}.behavior must be one of Removed, Isolated, MergedWithPrevious, MergedWithNext, \
                         Contiguous; found {}",
                        v.map_or("nothing".to_string(), |v| v.to_string())
                    ),
                ))
            }
        })
    }

    /// `NormalizedString::split`: the ranges the pieces become (in order, possibly empty).
    pub(super) fn apply(self, pieces: &[Piece], out: &mut Vec<(usize, usize)>) {
        out.clear();
        match self {
            Behavior::Isolated => out.extend(pieces.iter().map(|&(a, b, _)| (a, b))),
            Behavior::Removed => out.extend(pieces.iter().filter(|p| !p.2).map(|&(a, b, _)| (a, b))),
            Behavior::Contiguous => {
                let mut previous = false;
                for &(a, b, m) in pieces {
                    match out.last_mut() {
                        Some(last) if m == previous => last.1 = b,
                        _ => out.push((a, b)),
                    }
                    previous = m;
                }
            }
            Behavior::MergedWithPrevious => {
                let mut previous = false;
                for &(a, b, m) in pieces {
                    match out.last_mut() {
                        Some(last) if m && !previous => last.1 = b,
                        _ => out.push((a, b)),
                    }
                    previous = m;
                }
            }
            Behavior::MergedWithNext => {
                let mut previous = false;
                for &(a, b, m) in pieces.iter().rev() {
                    match out.last_mut() {
                        Some(last) if m && !previous => last.0 = a,
                        _ => out.push((a, b)),
                    }
                    previous = m;
                }
                out.reverse();
            }
        }
    }
}

/// `\s` in the pre-tokenizer regex (Unicode White_Space).
pub(super) fn is_space(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r' | ' ' | '\u{85}' | '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}' | '\u{2028}' | '\u{2029}'
            | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Class {
    /// \p{L}
    Letter,
    /// \p{N}
    Number,
    /// \s
    Space,
    /// [^\s\p{L}\p{N}]
    Other,
}

pub(super) fn class(c: char) -> Class {
    if c.is_ascii() {
        return match c {
            'a'..='z' | 'A'..='Z' => Class::Letter,
            '0'..='9' => Class::Number,
            '\t'..='\r' | ' ' => Class::Space,
            _ => Class::Other,
        };
    }
    if is_space(c) {
        return Class::Space;
    }
    match get_general_category(c) {
        Gc::UppercaseLetter | Gc::LowercaseLetter | Gc::TitlecaseLetter | Gc::ModifierLetter | Gc::OtherLetter => {
            Class::Letter
        }
        Gc::DecimalNumber | Gc::LetterNumber | Gc::OtherNumber => Class::Number,
        _ => Class::Other,
    }
}

/// The character starting at byte `i` of `s` (a char boundary < s.len()).
#[inline]
fn char_at(s: &str, i: usize) -> char {
    s[i..].chars().next().unwrap_or('\0')
}

/// Splits `s` as GPT-2's pre-tokenizer regex does: every byte lands in exactly one piece, and
/// every piece is a match of the regex.
pub(super) fn gpt2_pieces<'a>(s: &'a str, mut piece: impl FnMut(&'a str)) {
    let b = s.as_bytes();
    let n = s.len();
    // end of the run of characters of class `cls` starting at `j`
    let run = |mut j: usize, cls: Class| {
        while j < n {
            let c = char_at(s, j);
            if class(c) != cls {
                break;
            }
            j += c.len_utf8();
        }
        j
    };
    let mut i = 0;
    while i < n {
        let c = char_at(s, i);
        // 's|'t|'re|'ve|'m|'ll|'d
        if c == '\'' {
            let rest = &b[i + 1..];
            let len = match rest {
                [b's' | b't' | b'm' | b'd', ..] => 1,
                [b'r', b'e', ..] | [b'v', b'e', ..] | [b'l', b'l', ..] => 2,
                _ => 0,
            };
            if len > 0 {
                piece(&s[i..i + 1 + len]);
                i += 1 + len;
                continue;
            }
        }
        // ' ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+'
        let (from, cls) = if c == ' ' && i + 1 < n {
            (i + 1, class(char_at(s, i + 1)))
        } else {
            (i, class(c))
        };
        if cls != Class::Space {
            let end = run(from, cls);
            piece(&s[i..end]);
            i = end;
            continue;
        }
        // '\s+(?!\S)|\s+': the whitespace run, less its last character when a non-space follows
        let end = run(i, Class::Space);
        let stop = if end < n {
            let last = s[..end].chars().next_back().map_or(end, |l| end - l.len_utf8());
            if last > i {
                last
            } else {
                end
            }
        } else {
            end
        };
        piece(&s[i..stop]);
        i = stop;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unicode_fixture() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/tokenizer/unicode_classes.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Code points of each Oniguruma class in the fixture (written by
    /// tools/make_tokenizer_fixtures.py with `tokenizers`' Split on every code point).
    fn oniguruma_sets(j: &Value, keys: &[&str]) -> Vec<Vec<bool>> {
        keys.iter()
            .map(|key| {
                let mut set = vec![false; 0x110000];
                for r in j[*key].as_array().unwrap() {
                    for c in r[0].as_u64().unwrap()..=r[1].as_u64().unwrap() {
                        set[c as usize] = true;
                    }
                }
                set
            })
            .collect()
    }

    /// Our \p{L}, \p{N}, \s classes equal the ones Oniguruma gives `tokenizers`, for every code point.
    #[test]
    fn tokenizer_unicode_classes_match_oniguruma() {
        let j = unicode_fixture();
        let sets = oniguruma_sets(&j, &["L", "N", "S"]);
        let mut wrong = Vec::new();
        for c in 0..0x110000u32 {
            let Some(ch) = char::from_u32(c) else { continue };
            let want = match (sets[0][c as usize], sets[1][c as usize], sets[2][c as usize]) {
                (true, false, false) => Class::Letter,
                (false, true, false) => Class::Number,
                (false, false, true) => Class::Space,
                (false, false, false) => Class::Other,
                _ => panic!("U+{c:04X} in two classes"),
            };
            if class(ch) != want {
                wrong.push(format!("U+{c:04X}: ours {:?}, Oniguruma {want:?}", class(ch)));
            }
        }
        assert!(wrong.is_empty(), "{} code points differ, e.g. {:?}", wrong.len(), &wrong[..wrong.len().min(10)]);
    }

    /// fancy-regex's (regex-syntax's) Unicode tables for the classes the Llama 3 / Qwen patterns use,
    /// and its case folding of `(?i:'s|'t|'re|'ve|'m|'ll|'d)`, against Oniguruma's for every code
    /// point (fixture written by tools/make_tokenizer_fixtures.py with `tokenizers`' Split).
    #[test]
    fn tokenizer_fancy_regex_classes_match_oniguruma() {
        let j = unicode_fixture();
        let keys = ["L", "N", "S", "ci_s", "ci_t", "ci_m", "ci_d", "ci_r", "ci_e", "ci_v", "ci_l"];
        let sets = oniguruma_sets(&j, &keys);
        // `x` in a class, as the whole match of the regex
        let patterns = [
            r"\p{L}",
            r"\p{N}",
            r"\s",
            r"(?i:s)",
            r"(?i:t)",
            r"(?i:m)",
            r"(?i:d)",
            r"(?i:r)",
            r"(?i:e)",
            r"(?i:v)",
            r"(?i:l)",
        ];
        let mut wrong = Vec::new();
        for (k, p) in patterns.iter().enumerate() {
            let re = Regex::new(&format!("^(?:{p})$")).unwrap();
            let mut buf = [0u8; 4];
            for c in 0..0x110000u32 {
                let Some(ch) = char::from_u32(c) else { continue };
                let ours = re.is_match(ch.encode_utf8(&mut buf)).unwrap();
                if ours != sets[k][c as usize] {
                    wrong.push(format!("{p} U+{c:04X}: fancy-regex {ours}, Oniguruma {}", !ours));
                }
            }
        }
        assert!(wrong.is_empty(), "{} differ, e.g. {:?}", wrong.len(), &wrong[..wrong.len().min(10)]);
    }

    #[test]
    fn tokenizer_gpt2_pieces_examples() {
        let split = |s: &str| {
            let mut v = Vec::new();
            gpt2_pieces(s, |p| v.push(p.to_string()));
            v
        };
        assert_eq!(split("Hello world"), ["Hello", " world"]);
        assert_eq!(split("it's  x"), ["it", "'s", " ", " x"]);
        assert_eq!(split("a\t\tb  "), ["a", "\t", "\t", "b", "  "]);
        assert_eq!(split("  \n x"), ["  \n", " x"]);
        assert_eq!(split("''s 'S"), ["''", "s", " '", "S"]);
        assert_eq!(split("x1 23 !?"), ["x", "1", " 23", " !?"]);
    }

    /// The scanner and fancy-regex running GPT-2's pattern cut the same pieces.
    #[test]
    fn tokenizer_gpt2_scanner_equals_the_regex() {
        let re = Regex::new(GPT2_PATTERN).unwrap();
        for s in [
            "Hello, world! It's 2024 -- 'LL 'll  \t\n\n  x  ",
            "日本語 😀👍🏽 e\u{301} ½ ٣٤٥\u{a0}\u{3000}a\u{85}b",
            "''s'''t 're've'm'd  '",
            "   ",
        ] {
            let mut ours = Vec::new();
            gpt2_pieces(s, |p| ours.push(p));
            let theirs: Vec<&str> = re.find_iter(s).map(|m| m.unwrap().as_str()).collect();
            assert_eq!(ours, theirs, "{s:?}");
        }
    }

    /// HF's own split examples (tokenizers' normalizer.rs tests), derived by hand: "The-final--countdown"
    /// split on "-".
    #[test]
    fn tokenizer_split_behaviors() {
        let s = "The-final--countdown";
        let pat = Pattern::Literal("-".into());
        let mut pieces = Vec::new();
        assert!(pat.find_matches(s, &mut pieces));
        let mut ranges = Vec::new();
        let mut cut = |b: Behavior| {
            b.apply(&pieces, &mut ranges);
            ranges.iter().map(|&(a, e)| s[a..e].to_string()).filter(|p| !p.is_empty()).collect::<Vec<_>>()
        };
        assert_eq!(cut(Behavior::Removed), ["The", "final", "countdown"]);
        assert_eq!(cut(Behavior::Isolated), ["The", "-", "final", "-", "-", "countdown"]);
        assert_eq!(cut(Behavior::MergedWithPrevious), ["The-", "final-", "-", "countdown"]);
        assert_eq!(cut(Behavior::MergedWithNext), ["The", "-final", "-", "-countdown"]);
        assert_eq!(cut(Behavior::Contiguous), ["The", "-", "final", "--", "countdown"]);
    }

    /// A regex that backtracks without end stops at the limit: the call returns (false) instead
    /// of hanging, and the pieces still cover the whole text.
    #[test]
    fn tokenizer_backtrack_limit_stops_the_search() {
        let pat = Pattern::regex(r"(?:a|aa)+(?=b)|x").unwrap();
        let s = format!("x{}c", "a".repeat(64));
        let mut pieces = Vec::new();
        let start = std::time::Instant::now();
        let ok = pat.find_matches(&s, &mut pieces);
        assert!(!ok, "{pieces:?}");
        assert!(start.elapsed().as_secs() < 20);
        assert_eq!(pieces.first(), Some(&(0, 1, true)));
        assert_eq!(pieces.last().map(|p| p.1), Some(s.len()));
    }
}
