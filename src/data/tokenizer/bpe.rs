//! The BPE model of tokenizer.json (`tokenizers`' `models::bpe`): a pre-token's characters start
//! as one symbol each (`merge_word`: vocabulary lookup, else `<0xXX>` byte tokens under
//! `byte_fallback`, else the unknown token, fused under `fuse_unk`), then merges are applied
//! lowest rank first, leftmost first among equal ranks, with `Word::merge_all`'s queue semantics.
//!
//! A pre-token that went through the ByteLevel pre-tokenizer arrives as raw bytes and is mapped
//! byte -> id directly (the same as looking up each byte's byte-level character, without
//! building the mapped string).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use serde_json::Value;

use super::{bad, byte_level_string, BYTE_CHAR};
use crate::data::DataError;

/// The largest token id accepted (2^24 - 1): real vocabularies stay under 300k; an id beyond this
/// is a broken or hostile file, refused before anything is sized by it.
pub(super) const MAX_TOKEN_ID: u32 = (1 << 24) - 1;

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

/// Options of the model (the `model` object's fields besides vocab and merges).
#[derive(Debug, Default)]
pub(super) struct BpeOptions {
    pub unk_token: Option<String>,
    pub fuse_unk: bool,
    pub byte_fallback: bool,
    pub ignore_merges: bool,
}

/// The unknown token: none, its id, or named but missing from the vocabulary (then `tokenizers`
/// fails to encode any text that needs it, and so does `try_encode`).
#[derive(Debug)]
enum Unk {
    None,
    Id(u32),
    Missing(String),
}

#[derive(Debug)]
pub(super) struct Bpe {
    /// token -> id.
    pub vocab: HashMap<String, u32>,
    /// id -> token.
    pub vocab_r: HashMap<u32, String>,
    /// (left id, right id) -> (rank, merged id).
    merges: MergeMap,
    /// Id of each byte's byte-level character (None where the vocabulary lacks it).
    byte_ids: [Option<u32>; 256],
    /// Id of each byte's `<0xXX>` token when `byte_fallback` is on.
    fallback_ids: [Option<u32>; 256],
    byte_fallback: bool,
    unk: Unk,
    fuse_unk: bool,
    ignore_merges: bool,
}

/// One symbol of a word being merged (`tokenizers`' `Symbol`).
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

/// Reused buffers of one encode call.
#[derive(Default)]
pub(super) struct BpeScratch {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Merge>,
    /// Results by pre-token, for byte-level pre-tokens and for character pre-tokens.
    cache_bytes: HashMap<Box<[u8]>, Box<[u32]>>,
    cache_chars: HashMap<Box<str>, Box<[u32]>>,
    /// Set when the text needed an unknown token the vocabulary lacks.
    pub missing_unk: Option<String>,
}

const CACHE_MAX_ENTRIES: usize = 16384;
const CACHE_MAX_LEN: usize = 64;

fn push_symbol(symbols: &mut Vec<Symbol>, c: u32, len: usize) {
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
}

impl Bpe {
    /// `vocab`: token -> id; `merges` in rank order. Every merge's two tokens and their
    /// concatenation must be in the vocabulary (`tokenizers` refuses the file otherwise).
    pub(super) fn new(
        vocab: HashMap<String, u32>,
        merges: Vec<(String, String)>,
        options: BpeOptions,
        name: &str,
    ) -> Result<Bpe, DataError> {
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
        let mut byte_ids = [None; 256];
        let mut fallback_ids = [None; 256];
        for b in 0..256 {
            byte_ids[b] = vocab.get(BYTE_CHAR[b].encode_utf8(&mut [0; 4]) as &str).copied();
            if options.byte_fallback {
                fallback_ids[b] = vocab.get(&format!("<0x{b:02X}>")).copied();
            }
        }
        let unk = match &options.unk_token {
            None => Unk::None,
            Some(t) => vocab.get(t).map_or_else(|| Unk::Missing(t.clone()), |&id| Unk::Id(id)),
        };
        Ok(Bpe {
            vocab,
            vocab_r,
            merges: merge_map,
            byte_ids,
            fallback_ids,
            byte_fallback: options.byte_fallback,
            unk,
            fuse_unk: options.fuse_unk,
            ignore_merges: options.ignore_merges,
        })
    }

    /// Whether every byte's byte-level character is in the vocabulary (then a byte-level
    /// pipeline never needs the unknown token or byte fallback).
    pub(super) fn covers_all_bytes(&self) -> bool {
        self.byte_ids.iter().all(Option::is_some)
    }

    /// The `<0xXX>` tokens missing from the vocabulary (byte_fallback needs all 256).
    pub(super) fn missing_byte_tokens(&self) -> Vec<String> {
        (0..256).filter(|&b| self.fallback_ids[b].is_none()).map(|b| format!("<0x{b:02X}>")).collect()
    }

    /// Appends the ids of one pre-token: raw bytes when it went through the ByteLevel
    /// pre-tokenizer (`byte_level`), else its characters as they are.
    pub(super) fn tokenize(&self, piece: &str, byte_level: bool, ids: &mut Vec<u32>, scratch: &mut BpeScratch) {
        if piece.is_empty() {
            return;
        }
        if self.ignore_merges {
            let id = if byte_level {
                self.vocab.get(&byte_level_string(piece))
            } else {
                self.vocab.get(piece)
            };
            if let Some(&id) = id {
                ids.push(id);
                return;
            }
        }
        let cacheable = piece.len() > 1 && piece.len() <= CACHE_MAX_LEN;
        if cacheable {
            let hit = if byte_level {
                scratch.cache_bytes.get(piece.as_bytes())
            } else {
                scratch.cache_chars.get(piece)
            };
            if let Some(hit) = hit {
                ids.extend_from_slice(hit);
                return;
            }
        }
        let start = ids.len();
        let mut symbols = std::mem::take(&mut scratch.symbols);
        symbols.clear();
        let mut unk: Option<(u32, usize)> = None;
        let mut missing = false;
        if byte_level {
            for &b in piece.as_bytes() {
                let c = BYTE_CHAR[b as usize];
                let mut buf = [0; 4];
                let utf8 = c.encode_utf8(&mut buf).as_bytes();
                self.start_symbol(self.byte_ids[b as usize], utf8, &mut symbols, &mut unk, &mut missing);
            }
        } else {
            let mut buf = [0; 4];
            for c in piece.chars() {
                let s = c.encode_utf8(&mut buf);
                let id = self.vocab.get(s as &str).copied();
                self.start_symbol(id, s.as_bytes(), &mut symbols, &mut unk, &mut missing);
            }
        }
        if let Some((u, l)) = unk {
            push_symbol(&mut symbols, u, l);
        }
        self.merge_all(&mut symbols, &mut scratch.queue);
        ids.extend(symbols.iter().filter(|s| s.len != 0).map(|s| s.c));
        scratch.symbols = symbols;
        if missing {
            if let Unk::Missing(t) = &self.unk {
                scratch.missing_unk.get_or_insert_with(|| t.clone());
            }
            return;
        }
        if cacheable {
            let out: Box<[u32]> = ids[start..].into();
            if byte_level && scratch.cache_bytes.len() < CACHE_MAX_ENTRIES {
                scratch.cache_bytes.insert(piece.as_bytes().into(), out);
            } else if !byte_level && scratch.cache_chars.len() < CACHE_MAX_ENTRIES {
                scratch.cache_chars.insert(piece.into(), out);
            }
        }
    }

    /// `merge_word`'s handling of one character: `id` its vocabulary id, `utf8` its bytes.
    fn start_symbol(
        &self,
        id: Option<u32>,
        utf8: &[u8],
        symbols: &mut Vec<Symbol>,
        unk: &mut Option<(u32, usize)>,
        missing: &mut bool,
    ) {
        let len = utf8.len();
        if let Some(id) = id {
            if let Some((u, l)) = unk.take() {
                push_symbol(symbols, u, l);
            }
            push_symbol(symbols, id, len);
            return;
        }
        if self.byte_fallback && utf8.iter().all(|&b| self.fallback_ids[b as usize].is_some()) {
            // as `tokenizers`: a pending unknown token is not flushed here
            for &b in utf8 {
                if let Some(id) = self.fallback_ids[b as usize] {
                    push_symbol(symbols, id, 1);
                }
            }
            return;
        }
        match self.unk {
            Unk::None => {}
            Unk::Missing(_) => *missing = true,
            Unk::Id(u) => {
                *unk = match *unk {
                    Some((u0, l0)) if self.fuse_unk => Some((u0, l0 + len)),
                    Some((u0, l0)) => {
                        push_symbol(symbols, u0, l0);
                        Some((u, len))
                    }
                    None => Some((u, len)),
                };
            }
        }
    }

    /// `tokenizers`' `Word::merge_all` (no dropout).
    fn merge_all(&self, symbols: &mut [Symbol], queue: &mut BinaryHeap<Merge>) {
        queue.clear();
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
    }
}

/// A JSON object token -> id.
pub(super) fn parse_vocab(v: &Value, name: &str, what: &str) -> Result<HashMap<String, u32>, DataError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad(name, format!("{what} is not an object of token -> id")))?;
    let mut vocab = HashMap::with_capacity(obj.len());
    for (token, id) in obj {
        let id = id
            .as_u64()
            .filter(|&i| i <= MAX_TOKEN_ID as u64)
            .ok_or_else(|| {
                bad(
                    name,
                    format!("{what}: the id of {token:?} is {id}, not an integer in 0..={MAX_TOKEN_ID}"),
                )
            })?;
        vocab.insert(token.clone(), id as u32);
    }
    Ok(vocab)
}

/// One merges.txt / legacy tokenizer.json merge line ("a b").
pub(super) fn parse_merge_line(line: &str) -> Option<(String, String)> {
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), None) => Some((a.to_string(), b.to_string())),
        _ => None,
    }
}

/// `model.merges`: "a b" strings or ["a", "b"] pairs.
pub(super) fn parse_merges(v: Option<&Value>, name: &str) -> Result<Vec<(String, String)>, DataError> {
    let list = v
        .and_then(Value::as_array)
        .ok_or_else(|| bad(name, "model.merges is missing or not an array"))?;
    let mut merges = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let pair = match m {
            Value::String(s) if s.starts_with("#version") => continue,
            Value::String(s) => parse_merge_line(s),
            Value::Array(a) => match a.as_slice() {
                [Value::String(x), Value::String(y)] => Some((x.clone(), y.clone())),
                _ => None,
            },
            _ => None,
        };
        let pair = pair.ok_or_else(|| bad(name, format!("model.merges[{i}] is {m}; expected \"a b\" or [\"a\", \"b\"]")))?;
        merges.push(pair);
    }
    Ok(merges)
}
