//! Hugging Face byte-level BPE tokenizer (GPT-2 and the models that share its pre-tokenizer),
//! giving the same ids and strings as Python `tokenizers` / `transformers`:
//!
//! 1. added tokens ("<|endoftext|>", ...) are cut out of the text first: leftmost-longest
//!    match, non-`normalized` tokens before `normalized` ones, honouring `single_word`,
//!    `lstrip` and `rstrip` (as `tokenizers`' `AddedVocabulary`);
//! 2. every other piece is split by GPT-2's pre-tokenizer regex
//!    `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, hand-written
//!    below as a scanner (Unicode general categories from `unicode-general-category`, `\s` the
//!    White_Space property, as Oniguruma in `tokenizers` has them);
//! 3. each split's UTF-8 bytes start as one symbol each (the byte-level alphabet), and merges
//!    are applied lowest rank first, leftmost first among equal ranks, with `tokenizers`' exact
//!    queue semantics (`Word::merge_all`).
//!
//! Decoding maps byte-level characters back to bytes and replaces invalid UTF-8 with U+FFFD, like
//! `tokenizers`' ByteLevel decoder; ids outside the vocabulary are skipped, as `tokenizers` does.
//! No regex engine and no `tokenizers` crate: the module is plain Rust and builds for wasm32.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use serde_json::Value;
use unicode_general_category::{get_general_category, GeneralCategory as Gc};

use super::DataError;
use crate::memory::MemoryError;

/// The special token GPT-2 uses as end of text; the vocab.json + merges.txt loader adds it as a
/// special token, as `transformers`' `GPT2Tokenizer` does.
const ENDOFTEXT: &str = "<|endoftext|>";

/// A token added on top of the BPE vocabulary (`added_tokens` in tokenizer.json).
#[derive(Debug, Clone)]
struct AddedToken {
    content: String,
    id: u32,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
}

/// Leftmost-longest matcher over a few added tokens: candidates grouped by first byte, longest first.
#[derive(Debug, Default)]
struct AddedMatcher {
    /// For each first byte: indices into `Tokenizer::added`, longest content first.
    by_first_byte: Vec<Vec<usize>>,
}

/// Fast hasher for the merge table's `(u32, u32)` keys (FxHash's multiply-rotate).
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type MergeMap = HashMap<(u32, u32), (u32, u32), BuildHasherDefault<PairHasher>>;

/// A byte-level BPE tokenizer loaded from Hugging Face files.
#[derive(Debug)]
pub struct Tokenizer {
    /// BPE model vocabulary: token -> id.
    vocab: HashMap<String, u32>,
    /// BPE model vocabulary: id -> token.
    vocab_r: HashMap<u32, String>,
    /// (left id, right id) -> (rank, merged id).
    merges: MergeMap,
    /// Model id of each byte's byte-level character (None where the vocab lacks it).
    byte_ids: [Option<u32>; 256],
    /// Where `byte_ids` is None: the `<0xXX>` fallback ids (byte_fallback) of that character.
    byte_fallback: Vec<Option<Vec<u32>>>,
    unk: Option<u32>,
    fuse_unk: bool,
    ignore_merges: bool,
    add_prefix_space: bool,
    use_regex: bool,
    /// Added tokens in HF's id order (ids unique).
    added: Vec<AddedToken>,
    added_by_content: HashMap<String, u32>,
    added_by_id: HashMap<u32, usize>,
    match_raw: Option<AddedMatcher>,
    match_normalized: Option<AddedMatcher>,
    /// GPT-2's byte -> printable character map and its inverse (code point -> byte, for < 324).
    byte_char: [char; 256],
    char_byte: Vec<Option<u8>>,
}

/// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes map to themselves, the other 68 bytes to
/// U+0100.. in byte order.
fn byte_char_table() -> [char; 256] {
    let mut t = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        let c = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        t[b as usize] = char::from_u32(c).unwrap_or('\0');
    }
    t
}

/// `\s` in the pre-tokenizer regex (Unicode White_Space).
fn is_space(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r' | ' ' | '\u{85}' | '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}' | '\u{2028}' | '\u{2029}'
            | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Class {
    /// \p{L}
    Letter,
    /// \p{N}
    Number,
    /// \s
    Space,
    /// [^\s\p{L}\p{N}]
    Other,
}

pub(crate) fn class(c: char) -> Class {
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

/// Splits `s` as GPT-2's pre-tokenizer regex does (every byte lands in exactly one piece).
pub(crate) fn pre_tokenize<'a>(s: &'a str, mut piece: impl FnMut(&'a str)) {
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

/// `\w` of the `regex` crate (Alphabetic, marks, decimal numbers, connector punctuation, joiners),
/// used by HF for `single_word` added tokens.
fn is_word_char(c: char) -> bool {
    c.is_alphabetic()
        || c == '\u{200c}'
        || c == '\u{200d}'
        || matches!(
            get_general_category(c),
            Gc::NonspacingMark | Gc::SpacingMark | Gc::EnclosingMark | Gc::DecimalNumber | Gc::ConnectorPunctuation
        )
}

/// One BPE symbol of a word being merged (`tokenizers`' `Symbol`).
#[derive(Clone, Copy, Debug)]
struct Symbol {
    c: u32,
    prev: isize,
    next: isize,
    len: usize,
}

/// A pending merge (`tokenizers`' `Merge`): the heap pops the lowest rank, then the lowest position.
#[derive(PartialEq, Eq)]
struct Merge {
    pos: usize,
    rank: u32,
    new_id: u32,
}

impl Ord for Merge {
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank.cmp(&self.rank).then_with(|| other.pos.cmp(&self.pos))
    }
}

impl PartialOrd for Merge {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Reused buffers for one `encode` call.
#[derive(Default)]
struct Scratch {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Merge>,
    cache: HashMap<Box<[u8]>, Box<[u32]>>,
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

/// The `type` of a component object, or None for null / absent.
fn component_type<'a>(root: &'a Value, field: &str, name: &str) -> Result<Option<&'a str>, DataError> {
    match root.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.get("type").and_then(Value::as_str) {
            Some(t) => Ok(Some(t)),
            None => Err(bad(name, format!("{field} has no \"type\""))),
        },
    }
}

/// Parses one merges.txt / legacy tokenizer.json merge line ("a b").
fn parse_merge_line(line: &str) -> Option<(String, String)> {
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), None) => Some((a.to_string(), b.to_string())),
        _ => None,
    }
}

/// Options of the BPE model and its pipeline.
struct Config {
    unk_token: Option<String>,
    fuse_unk: bool,
    byte_fallback: bool,
    ignore_merges: bool,
    add_prefix_space: bool,
    use_regex: bool,
}

impl Tokenizer {
    /// HF tokenizer.json text (model.type "BPE", ByteLevel pre-tokenizer/decoder; GPT-2 and models
    /// sharing its pre-tokenizer). `name` is for error messages. Other types are refused with a
    /// message naming the field.
    pub fn from_json(text: &str, name: &str) -> Result<Tokenizer, DataError> {
        let root: Value = serde_json::from_str(text).map_err(|e| bad(name, format!("not valid JSON: {e}")))?;
        if !root.is_object() {
            return Err(bad(name, "not a tokenizer.json: the top level is not an object"));
        }
        let model = root
            .get("model")
            .filter(|m| m.is_object())
            .ok_or_else(|| bad(name, "not a tokenizer.json: no \"model\" object"))?;
        match model.get("type").and_then(Value::as_str) {
            Some("BPE") => {}
            None if model.get("merges").is_some() => {}
            Some(t) => {
                return Err(bad(
                    name,
                    format!("model.type is \"{t}\"; only \"BPE\" (byte-level, like GPT-2) is supported"),
                ))
            }
            None => {
                return Err(bad(
                    name,
                    "model.type is missing; only \"BPE\" (byte-level, like GPT-2) is supported",
                ))
            }
        }
        if let Some(t) = component_type(&root, "normalizer", name)? {
            if !(t == "Sequence"
                && root["normalizer"]
                    .get("normalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.is_empty()))
            {
                return Err(bad(
                    name,
                    format!("normalizer.type \"{t}\" is not supported (GPT-2 has none)"),
                ));
            }
        }
        let pre = match component_type(&root, "pre_tokenizer", name)? {
            Some("ByteLevel") => &root["pre_tokenizer"],
            Some(t) => {
                return Err(bad(
                    name,
                    format!("pre_tokenizer.type is \"{t}\"; only \"ByteLevel\" is supported"),
                ))
            }
            None => return Err(bad(name, "pre_tokenizer is missing; only \"ByteLevel\" is supported")),
        };
        match component_type(&root, "decoder", name)? {
            Some("ByteLevel") => {}
            Some(t) => {
                return Err(bad(
                    name,
                    format!("decoder.type is \"{t}\"; only \"ByteLevel\" is supported"),
                ))
            }
            None => return Err(bad(name, "decoder is missing; only \"ByteLevel\" is supported")),
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
                Some(v) => return Err(bad(name, format!("model.{field} is {v}; byte-level BPE has none"))),
            }
        }
        let unk_token = match model.get("unk_token") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => return Err(bad(name, format!("model.unk_token must be a string, found {v}"))),
        };
        let config = Config {
            unk_token,
            fuse_unk: get_bool(model, "fuse_unk", false, name, "model")?,
            byte_fallback: get_bool(model, "byte_fallback", false, name, "model")?,
            ignore_merges: get_bool(model, "ignore_merges", false, name, "model")?,
            add_prefix_space: get_bool(pre, "add_prefix_space", false, name, "pre_tokenizer")?,
            use_regex: get_bool(pre, "use_regex", true, name, "pre_tokenizer")?,
        };

        let vocab_v = model.get("vocab").ok_or_else(|| bad(name, "model.vocab is missing"))?;
        let vocab = parse_vocab(vocab_v, name, "model.vocab")?;

        let merges_v = model
            .get("merges")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(name, "model.merges is missing or not an array"))?;
        let mut merges = Vec::with_capacity(merges_v.len());
        for (i, m) in merges_v.iter().enumerate() {
            let pair = match m {
                Value::String(s) if s.starts_with("#version") => continue,
                Value::String(s) => parse_merge_line(s),
                Value::Array(a) => match a.as_slice() {
                    [Value::String(x), Value::String(y)] => Some((x.clone(), y.clone())),
                    _ => None,
                },
                _ => None,
            };
            let pair = pair.ok_or_else(|| {
                bad(
                    name,
                    format!("model.merges[{i}] is {m}; expected \"a b\" or [\"a\", \"b\"]"),
                )
            })?;
            merges.push(pair);
        }

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
                    });
                }
            }
            Some(_) => return Err(bad(name, "added_tokens is not an array")),
        }
        Tokenizer::build(vocab, merges, added, config, name)
    }

    /// The older pair: vocab.json + merges.txt (first line "#version" optional), configured as
    /// `transformers`' `GPT2Tokenizer` does: ByteLevel without prefix space, "<|endoftext|>" a
    /// special token.
    pub fn from_vocab_merges(vocab_json: &str, merges_txt: &str, name: &str) -> Result<Tokenizer, DataError> {
        let vname = format!("{name}: vocab.json");
        let vocab_v: Value =
            serde_json::from_str(vocab_json).map_err(|e| bad(&vname, format!("not valid JSON: {e}")))?;
        let vocab = parse_vocab(&vocab_v, &vname, "the vocabulary")?;
        let mut merges = Vec::new();
        for (i, line) in merges_txt.lines().enumerate() {
            if line.starts_with("#version") || line.is_empty() {
                continue;
            }
            let pair = parse_merge_line(line).ok_or_else(|| {
                bad(
                    &format!("{name}: merges.txt"),
                    format!(
                        "line {}: expected two tokens separated by one space, found {line:?}",
                        i + 1
                    ),
                )
            })?;
            merges.push(pair);
        }
        let added = vec![AddedToken {
            content: ENDOFTEXT.to_string(),
            id: 0,
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
        }];
        let config = Config {
            unk_token: None,
            fuse_unk: false,
            byte_fallback: false,
            ignore_merges: false,
            add_prefix_space: false,
            use_regex: true,
        };
        Tokenizer::build(vocab, merges, added, config, name)
    }

    /// tokenizer.json in `dir`, else vocab.json + merges.txt; an error naming the dir if neither.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_dir(dir: &std::path::Path) -> Result<Tokenizer, DataError> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| DataError::Io {
                path: p.display().to_string(),
                msg: e.to_string(),
            })
        };
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Tokenizer::from_json(&read(&json)?, &json.display().to_string());
        }
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if vocab.is_file() && merges.is_file() {
            return Tokenizer::from_vocab_merges(&read(&vocab)?, &read(&merges)?, &dir.display().to_string());
        }
        Err(DataError::Io {
            path: dir.display().to_string(),
            msg: "no tokenizer found: expected tokenizer.json, or vocab.json + merges.txt".to_string(),
        })
    }

    fn build(
        vocab: HashMap<String, u32>,
        merges: Vec<(String, String)>,
        added_in: Vec<AddedToken>,
        config: Config,
        name: &str,
    ) -> Result<Tokenizer, DataError> {
        if vocab.is_empty() {
            return Err(bad(name, "the vocabulary is empty: this tokenizer has no tokens to encode text with"));
        }
        let vocab_r: HashMap<u32, String> = vocab.iter().map(|(k, v)| (*v, k.clone())).collect();
        let mut merge_map = MergeMap::default();
        merge_map.reserve(merges.len());
        for (rank, (a, b)) in merges.iter().enumerate() {
            let id = |t: &str| {
                vocab.get(t).copied().ok_or_else(|| {
                    bad(
                        name,
                        format!(
                            "merge {} ({a:?} {b:?}) names {t:?}, which is not in the vocabulary",
                            rank + 1
                        ),
                    )
                })
            };
            let (ia, ib, im) = (id(a)?, id(b)?, id(&format!("{a}{b}"))?);
            // `tokenizers` keeps the last of duplicate merges' ranks (its map is built in order)
            merge_map.insert((ia, ib), (rank as u32, im));
        }
        let byte_char = byte_char_table();
        let mut char_byte = vec![None; 324];
        for (b, c) in byte_char.iter().enumerate() {
            if let Some(slot) = char_byte.get_mut(*c as usize) {
                *slot = Some(b as u8);
            }
        }
        let mut byte_ids = [None; 256];
        let mut byte_fallback = vec![None; 256];
        for b in 0..256 {
            let c = byte_char[b];
            byte_ids[b] = vocab.get(c.encode_utf8(&mut [0; 4]) as &str).copied();
            if byte_ids[b].is_none() && config.byte_fallback {
                let mut buf = [0; 4];
                let ids: Option<Vec<u32>> = c
                    .encode_utf8(&mut buf)
                    .bytes()
                    .map(|x| vocab.get(&format!("<0x{x:02X}>")).copied())
                    .collect();
                byte_fallback[b] = ids;
            }
        }
        let unk = config.unk_token.as_ref().and_then(|u| vocab.get(u).copied());

        // Added tokens: ids as `tokenizers`' AddedVocabulary::add_tokens assigns them.
        let mut added: Vec<AddedToken> = Vec::new();
        let mut added_by_content: HashMap<String, u32> = HashMap::new();
        let mut added_by_id: HashMap<u32, usize> = HashMap::new();
        let mut next_id = vocab.len() as u32;
        for mut t in added_in {
            if t.content.is_empty() {
                continue;
            }
            let id = match added_by_content.get(&t.content).or_else(|| vocab.get(&t.content)) {
                Some(id) => *id,
                None => {
                    next_id += 1;
                    next_id - 1
                }
            };
            t.id = id;
            added_by_content.insert(t.content.clone(), id);
            match added_by_id.get(&id) {
                Some(&k) => added[k] = t,
                None => {
                    added_by_id.insert(id, added.len());
                    added.push(t);
                }
            }
        }
        let matcher = |normalized: bool| {
            let mut m = AddedMatcher {
                by_first_byte: vec![Vec::new(); 256],
            };
            let mut any = false;
            for (k, t) in added.iter().enumerate() {
                if t.normalized == normalized {
                    m.by_first_byte[t.content.as_bytes()[0] as usize].push(k);
                    any = true;
                }
            }
            for v in &mut m.by_first_byte {
                v.sort_by_key(|&k| std::cmp::Reverse(added[k].content.len()));
            }
            any.then_some(m)
        };
        let (match_raw, match_normalized) = (matcher(false), matcher(true));
        Ok(Tokenizer {
            vocab,
            vocab_r,
            merges: merge_map,
            byte_ids,
            byte_fallback,
            unk,
            fuse_unk: config.fuse_unk,
            ignore_merges: config.ignore_merges,
            add_prefix_space: config.add_prefix_space,
            use_regex: config.use_regex,
            added,
            added_by_content,
            added_by_id,
            match_raw,
            match_normalized,
            byte_char,
            char_byte,
        })
    }

    /// Token ids of `text`, without special tokens added (like HF's
    /// `encode(text, add_special_tokens=False)`); added tokens such as "<|endoftext|>" written in
    /// the text are recognised, as HF does. For text of a size a user controls (data, prompts),
    /// [`try_encode`](Self::try_encode) says when memory runs out instead of aborting.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self.try_encode(text) {
            Ok(ids) => ids,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`encode`](Self::encode), or why the machine lacks the memory for it (a "word" of
    /// gigabytes without whitespace needs ~48 bytes of working memory per byte).
    pub fn try_encode(&self, text: &str) -> Result<Vec<u32>, MemoryError> {
        let mut ids = Vec::new();
        crate::memory::reserve(&mut ids, text.len() / 4 + 1, &|| format!("the token ids of {} bytes of text", text.len()))?;
        let mut scratch = Scratch::default();
        for (tok, range) in self.find_added(text, self.match_raw.as_ref()) {
            if let Some(id) = tok {
                ids.push(id);
                continue;
            }
            let sub = &text[range];
            if sub.is_empty() {
                continue;
            }
            for (tok2, r2) in self.find_added(sub, self.match_normalized.as_ref()) {
                match tok2 {
                    Some(id) => ids.push(id),
                    None if r2.is_empty() => {}
                    None => self.encode_piece(&sub[r2], &mut ids, &mut scratch)?,
                }
            }
        }
        Ok(ids)
    }

    /// Where `text` may be cut so that encoding the two parts gives the ids of the whole: the
    /// last offset p > 0 that starts a " " after a character that is not whitespace, with no
    /// added token written near it (the ByteLevel pre-tokenizer always splits there, and such a
    /// piece starts the same whatever precedes it). None when there is no such place, or when
    /// this tokenizer does not pre-tokenize (`use_regex` false: the text is one piece).
    pub fn cut(&self, text: &str) -> Option<usize> {
        if !self.use_regex {
            return None;
        }
        let reach = self.added.iter().map(|t| t.content.len()).max().unwrap_or(0) + 4;
        let b = text.as_bytes();
        let mut p = b.len();
        while p > 1 {
            p -= 1;
            if b[p] != b' ' {
                continue;
            }
            let Some(before) = text[..p].chars().next_back() else { continue };
            if is_space(before) {
                continue;
            }
            let (lo, hi) = (p.saturating_sub(reach), (p + reach).min(b.len()));
            let near = &b[lo..hi];
            if self.added.iter().any(|t| !t.content.is_empty() && near.windows(t.content.len()).any(|w| w == t.content.as_bytes())) {
                continue;
            }
            return Some(p);
        }
        None
    }

    /// A piece of text free of added tokens: ByteLevel pre-tokenizer, then BPE on each split.
    fn encode_piece(&self, piece: &str, ids: &mut Vec<u32>, scratch: &mut Scratch) -> Result<(), MemoryError> {
        let prefixed;
        let piece = if self.add_prefix_space && !piece.starts_with(' ') {
            prefixed = format!(" {piece}");
            prefixed.as_str()
        } else {
            piece
        };
        if self.use_regex {
            let mut failed = None;
            pre_tokenize(piece, |w| {
                if failed.is_none() {
                    failed = self.bpe(w.as_bytes(), ids, scratch).err();
                }
            });
            failed.map_or(Ok(()), Err)
        } else {
            self.bpe(piece.as_bytes(), ids, scratch)
        }
    }

    /// BPE on the byte-level form of one pre-token (`tokenizers`' `BPE::tokenize` without dropout).
    fn bpe(&self, word: &[u8], ids: &mut Vec<u32>, scratch: &mut Scratch) -> Result<(), MemoryError> {
        if word.is_empty() {
            return Ok(());
        }
        if self.ignore_merges {
            let s: String = word.iter().map(|&b| self.byte_char[b as usize]).collect();
            if let Some(&id) = self.vocab.get(&s) {
                crate::memory::reserve(ids, 1, &|| "the token ids".to_string())?;
                ids.push(id);
                return Ok(());
            }
        }
        if word.len() > 1 {
            if let Some(hit) = scratch.cache.get(word) {
                crate::memory::reserve(ids, hit.len(), &|| "the token ids".to_string())?;
                ids.extend_from_slice(hit);
                return Ok(());
            }
        }
        // one symbol per byte (at most 4 with byte fallback), and a merge per neighbouring pair
        let what = || format!("encoding a word of {} bytes (text without whitespace)", word.len());
        let work = (word.len() as u64).checked_mul((4 * std::mem::size_of::<Symbol>() + std::mem::size_of::<Merge>()) as u64);
        crate::memory::check(&what, work)?;
        crate::memory::reserve(ids, word.len(), &what)?;
        let start = ids.len();
        let symbols = &mut scratch.symbols;
        symbols.clear();
        crate::memory::reserve(symbols, word.len(), &what)?;
        let push = |symbols: &mut Vec<Symbol>, c: u32, len: usize| {
            let n = symbols.len() as isize;
            if let Some(last) = symbols.last_mut() {
                last.next = n;
            }
            symbols.push(Symbol {
                c,
                prev: n - 1,
                next: -1,
                len,
            });
        };
        // `tokenizers`' merge_word: one symbol per byte-level character
        let mut unk: Option<(u32, usize)> = None;
        for &b in word {
            let clen = self.byte_char[b as usize].len_utf8();
            if let Some(id) = self.byte_ids[b as usize] {
                if let Some((u, l)) = unk.take() {
                    push(symbols, u, l);
                }
                push(symbols, id, clen);
                continue;
            }
            if let Some(fb) = &self.byte_fallback[b as usize] {
                for &id in fb {
                    push(symbols, id, 1);
                }
                continue;
            }
            if let Some(u) = self.unk {
                unk = match unk {
                    Some((u0, l0)) if self.fuse_unk => Some((u0, l0 + clen)),
                    Some((u0, l0)) => {
                        push(symbols, u0, l0);
                        Some((u, clen))
                    }
                    None => Some((u, clen)),
                };
            }
        }
        if let Some((u, l)) = unk {
            push(symbols, u, l);
        }
        // `tokenizers`' Word::merge_all
        let queue = &mut scratch.queue;
        queue.clear();
        queue.try_reserve(symbols.len()).map_err(|_| crate::memory::MemoryError {
            what: what(),
            bytes: crate::memory::bytes_of::<Merge>(symbols.len()),
            available: crate::memory::available(),
        })?;
        for i in 0..symbols.len().saturating_sub(1) {
            if let Some(&(rank, new_id)) = self.merges.get(&(symbols[i].c, symbols[i + 1].c)) {
                queue.push(Merge { pos: i, rank, new_id });
            }
        }
        while let Some(top) = queue.pop() {
            let cur = symbols[top.pos];
            if cur.len == 0 || cur.next == -1 {
                continue;
            }
            let next_pos = cur.next as usize;
            let right = symbols[next_pos];
            if self
                .merges
                .get(&(cur.c, right.c))
                .is_none_or(|&(_, id)| id != top.new_id)
            {
                continue;
            }
            symbols[top.pos].c = top.new_id;
            symbols[top.pos].len += right.len;
            symbols[top.pos].next = right.next;
            symbols[next_pos].len = 0;
            if right.next > -1 && (right.next as usize) < symbols.len() {
                symbols[right.next as usize].prev = top.pos as isize;
            }
            let current = symbols[top.pos];
            if current.prev >= 0 {
                let prev = symbols[current.prev as usize];
                if let Some(&(rank, new_id)) = self.merges.get(&(prev.c, current.c)) {
                    queue.push(Merge {
                        pos: current.prev as usize,
                        rank,
                        new_id,
                    });
                }
            }
            let next = current.next as usize;
            if current.next >= 0 && next < symbols.len() {
                if let Some(&(rank, new_id)) = self.merges.get(&(current.c, symbols[next].c)) {
                    queue.push(Merge {
                        pos: top.pos,
                        rank,
                        new_id,
                    });
                }
            }
        }
        ids.extend(symbols.iter().filter(|s| s.len != 0).map(|s| s.c));
        if word.len() > 1 && word.len() <= 64 && scratch.cache.len() < 16384 {
            scratch.cache.insert(word.into(), ids[start..].into());
        }
        Ok(())
    }

    /// `tokenizers`' AddedVocabulary::find_matches: (Some(id), range) for added tokens, (None,
    /// range) for the text between them.
    fn find_added(&self, s: &str, matcher: Option<&AddedMatcher>) -> Vec<(Option<u32>, std::ops::Range<usize>)> {
        let Some(m) = matcher else {
            return vec![(None, 0..s.len())];
        };
        let b = s.as_bytes();
        let mut splits = Vec::new();
        let mut start_offset = 0;
        let mut pos = 0;
        while pos < b.len() {
            // leftmost-longest match at or after `pos`, non-overlapping with the previous match
            let found = (pos..b.len()).find_map(|i| {
                m.by_first_byte[b[i] as usize]
                    .iter()
                    .find(|&&k| b[i..].starts_with(self.added[k].content.as_bytes()))
                    .map(|&k| (i, k))
            });
            let Some((mstart, k)) = found else { break };
            let t = &self.added[k];
            let mend = mstart + t.content.len();
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

    /// Text of `ids`, like HF's `decode(ids)` with special tokens kept: byte-level characters back
    /// to bytes, invalid UTF-8 replaced by U+FFFD. Ids outside the vocabulary are skipped (as HF
    /// does).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let token = match self.added_by_id.get(&id) {
                Some(&k) => &self.added[k].content,
                None => match self.vocab_r.get(&id) {
                    Some(t) => t,
                    None => continue,
                },
            };
            let start = bytes.len();
            let mut all_mapped = true;
            for c in token.chars() {
                match self.char_byte.get(c as usize).copied().flatten() {
                    Some(b) => bytes.push(b),
                    None => {
                        all_mapped = false;
                        break;
                    }
                }
            }
            if !all_mapped {
                bytes.truncate(start);
                bytes.extend_from_slice(token.as_bytes());
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Number of distinct tokens, added tokens included (HF's `get_vocab_size(True)`).
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
            + self
                .added_by_content
                .keys()
                .filter(|t| !self.vocab.contains_key(*t))
                .count()
    }

    /// Id of a token string (byte-level form, e.g. "Ġthe"), added tokens first, like HF.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.added_by_content
            .get(token)
            .or_else(|| self.vocab.get(token))
            .copied()
    }
}

/// A JSON object token -> id.
fn parse_vocab(v: &Value, name: &str, what: &str) -> Result<HashMap<String, u32>, DataError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad(name, format!("{what} is not an object of token -> id")))?;
    let mut vocab = HashMap::with_capacity(obj.len());
    for (token, id) in obj {
        let id = id.as_u64().and_then(|i| u32::try_from(i).ok()).ok_or_else(|| {
            bad(
                name,
                format!("{what}: the id of {token:?} is {id}, not an integer in 0..2^32"),
            )
        })?;
        vocab.insert(token.clone(), id);
    }
    Ok(vocab)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our \p{L}, \p{N}, \s classes equal the ones Oniguruma gives `tokenizers` (fixture written by
    /// tools/make_tokenizer_fixtures.py), for every code point.
    #[test]
    fn tokenizer_unicode_classes_match_oniguruma() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/tokenizer/unicode_classes.json"
        );
        let j: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut want = vec![Class::Other; 0x110000];
        for (key, cls) in [("L", Class::Letter), ("N", Class::Number), ("S", Class::Space)] {
            for r in j[key].as_array().unwrap() {
                for c in r[0].as_u64().unwrap()..=r[1].as_u64().unwrap() {
                    assert_eq!(want[c as usize], Class::Other, "U+{c:04X} in two classes");
                    want[c as usize] = cls;
                }
            }
        }
        let mut wrong = Vec::new();
        for (c, w) in want.iter().enumerate() {
            if let Some(ch) = char::from_u32(c as u32) {
                if class(ch) != *w {
                    wrong.push(format!("U+{c:04X}: ours {:?}, Oniguruma {w:?}", class(ch)));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "{} code points differ, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(10)]
        );
    }

    #[test]
    fn tokenizer_pre_tokenize_examples() {
        let split = |s: &str| {
            let mut v = Vec::new();
            pre_tokenize(s, |p| v.push(p.to_string()));
            v
        };
        assert_eq!(split("Hello world"), ["Hello", " world"]);
        assert_eq!(split("it's  x"), ["it", "'s", " ", " x"]);
        assert_eq!(split("a\t\tb  "), ["a", "\t", "\t", "b", "  "]);
        assert_eq!(split("  \n x"), ["  \n", " x"]);
        assert_eq!(split("''s 'S"), ["''", "s", " '", "S"]);
        assert_eq!(split("x1 23 !?"), ["x", "1", " 23", " !?"]);
    }

    #[test]
    fn tokenizer_byte_char_table_is_gpt2s() {
        let t = byte_char_table();
        assert_eq!(t[b'!' as usize], '!');
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[0], 'Ā');
        assert_eq!(t[0xad], 'Ń');
        let mut seen: Vec<char> = t.to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 256);
    }
}
