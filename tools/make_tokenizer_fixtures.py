#!/usr/bin/env python3
"""Regenerates tests/fixtures/tokenizer: small byte-level BPE tokenizers trained locally with
Hugging Face `tokenizers` (GPT-2's exact tokenizer.json structure), the same tokenizer as the older
vocab.json + merges.txt pair, and what Python computes from them (encode ids, decode strings,
the pre-tokenizer's Unicode classes), which tests/tokenizer.rs compares against.

Run from anywhere with a Python that has `tokenizers` and `transformers`:
    /path/to/python tools/make_tokenizer_fixtures.py
The training corpus is a fixed list of CPython library sources (found under /usr/lib/python3.11
or the running interpreter's own library) plus the multilingual text below. The output is
deterministic for a given corpus and library versions (recorded in cases.json).

What it writes (tests/fixtures/tokenizer/):
  gpt2like/tokenizer.json    vocab ~1000, "<|endoftext|>" a trainer special token (id 0, in the
                             model vocab and in added_tokens), merges saved as [a, b] pairs
  gpt2like/vocab.json, gpt2like/merges.txt   the same model as the older pair ("#version: 0.2")
  appended/tokenizer.json    trained without special tokens, "<|endoftext|>" appended afterwards
                             as an added token only (id = model vocab size, like GPT-2's 50256),
                             merges written in the legacy "a b" string form
  cases.json                 texts with ids + decode for both tokenizers, decode-only id lists
                             (split multibyte characters, out-of-range ids), vocab sizes
  unicode_classes.json       code point ranges the GPT-2 pre-tokenizer regex (Oniguruma) treats
                             as \\p{L}, \\p{N}, \\s
  options/tokenizer.json     gpt2like with add_prefix_space, ignore_merges and extra added tokens
                             (lstrip, rstrip, single_word, normalized, a prefix of "<|endoftext|>")
  bad/                       malformed files the loaders must refuse
"""

import glob
import json
import os
import random
import shutil
import sys
import sysconfig
import tempfile

import tokenizers
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import AddedToken
from transformers import GPT2Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
EOT = "<|endoftext|>"

# Multilingual text for the corpus (so merges cover multi-byte characters) and for cases.
UNICODE_TEXT = """\
Café, naïve, façade, jalapeño, Ångström, smörgåsbord, crème brûlée, Øresund, Łódź, Đakovo.
Combining: e\u0301 a\u0300 o\u0308 n\u0303 A\u030a; Zalgo-ish: Z\u0351\u0352\u0353a\u0354\u0355l\u0356g\u0357o.
Ελληνικά: Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.
Русский: Съешь же ещё этих мягких французских булок, да выпей чаю.
日本語: 吾輩は猫である。名前はまだ無い。カタカナとひらがな。
中文：我能吞下玻璃而不伤身体。你好，世界！
한국어: 다람쥐 헌 쳇바퀴에 타고파. 안녕하세요 세계.
العربية: أنا قادر على أكل الزجاج و هذا لا يؤلمني. مرحبا بالعالم
עברית: אני יכול לאכול זכוכית וזה לא מזיק לי. שלום עולם
हिन्दी: मैं काँच खा सकता हूँ और मुझे उससे कोई चोट नहीं पहुंचती.
ไทย: ฉันกินกระจกได้ แต่มันไม่ทำให้ฉันเจ็บ
Emoji: 😀 😂 👍🏽 ❤️ 🇫🇷 🇯🇵 👨‍👩‍👧‍👦 👩🏾‍💻 🏳️‍🌈 🧑‍🤝‍🧑 ✨🔥💯
Numbers: 3.14159 2,718 1e-9 0x1F 42nd ½ ¾ ² ³ Ⅻ ٣٤٥ ४५६ 一二三 ①②③
Maths: ∀x∈ℝ: x² ≥ 0, ∑ᵢ aᵢ ≤ ∞, α+β=γ, √2 ≈ 1.414
Quotes: “double” ‘single’ «guillemets» „German“ 「括弧」 — dash – en‑dash … ellipsis
"""

CORPUS_FILES = [
    "textwrap.py", "json/decoder.py", "json/encoder.py", "string.py", "shlex.py", "csv.py",
    "difflib.py", "argparse.py", "heapq.py", "bisect.py", "fractions.py", "statistics.py",
    "this.py", "colorsys.py", "calendar.py",
]


def corpus():
    libs = ["/usr/lib/python3.11", sysconfig.get_paths()["stdlib"]]
    texts = []
    for name in CORPUS_FILES:
        for lib in libs:
            p = os.path.join(lib, name)
            if os.path.exists(p):
                with open(p, encoding="utf-8") as f:
                    texts.append(f.read())
                break
    if len(texts) < 10:
        sys.exit("corpus: too few CPython library files found")
    texts += [UNICODE_TEXT] * 20
    return texts


def gpt2_pieces(tok):
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True, trim_offsets=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()


def train(special):
    tok = Tokenizer(models.BPE())
    gpt2_pieces(tok)
    trainer = trainers.BpeTrainer(
        vocab_size=1000, min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[EOT] if special else [])
    tok.train_from_iterator(corpus(), trainer=trainer)
    return tok


LONG_WORD = "Pneumonoultramicroscopicsilicovolcanoconiosis" * 8
CASES = [
    "",
    "Hello, world!",
    "hello world",
    " leading space",
    "trailing spaces   ",
    "   ",
    " ",
    "\t",
    "\n",
    "a  b   c    d",
    "tabs\tand\t\ttabs",
    "line one\nline two\r\nline three\n\n\nend\n",
    "mixed \t\n whitespace \n\t x",
    "  \n  indented\n    deeper\n",
    "nbsp\u00a0here, ideographic\u3000space, nel\u0085, thin\u2009space, zwsp\u200bx",
    "It's the cat's toy; they're here, we've gone, I'm fine, you'll see, he'd go.",
    "IT'S LOUD, THEY'RE LOUD, I'M LOUD, WE'LL SEE, HE'D GO. 'S 'T 'RE",
    "don't can't won't ''s 's 't 're 've 'm 'll 'd '' ' 'x 'sup",
    "rock 'n' roll, 'quoted' words",
    "def f(x):\n    return x ** 2  # square\n\nprint(f(3))\n",
    "for (int i = 0; i < n; ++i) { a[i] += b[i] * 2; }",
    "if x != y && z >= 10 || !w: pass  # comment",
    "12345 678 90 3.14 1,000,000 -42 +7 1e10 0xff 007",
    "2024-01-15T12:34:56Z v1.2.3 192.168.0.1",
    "Café naïve façade résumé über straße",
    "e\u0301 n\u0303 a\u0300\u0301\u0302 combining",
    "日本語のテキスト。中文文本。한국어 텍스트.",
    "שלום עולם مرحبا بالعالم",
    "😀👍🏽❤️🇫🇷👨‍👩‍👧‍👦👩🏾‍💻🏳️‍🌈",
    "emoji 😀 between 👍 words 🎉!",
    "Hello<|endoftext|>World",
    "<|endoftext|>",
    "a <|endoftext|> b<|endoftext|><|endoftext|>c",
    "<|endoftext|> leading and trailing <|endoftext|>",
    "<|endoftext| almost <|endoftext and <endoftext|> and <|ENDOFTEXT|>",
    LONG_WORD,
    "x" * 300,
    "9" * 100,
    "!!!???...,,,;;;:::---___===+++",
    "$100 €50 £20 ¥1000 ₹500",
    "½ ¾ ² ³ Ⅻ ٣٤٥ ①②③ numbers",
    "∀x∈ℝ: x² ≥ 0",
    "ﬁ ﬂ ﬀ ligatures and ＦＵＬＬＷＩＤＴＨ",
    "\x00\x01\x02 control \x7f chars \x1b[0m",
    "Zero\u200dwidth\u200cjoiners and \ufeffBOM",
    "a <mask> b", "  <mask>  [END]  x", "x<mask>[END]y", "\t<mask>\n[END]\n\n", "<mask> <mask>",
    "cat concat cat_ cats cat. (cat) cat\u0301 catcat 1cat", "cat", "é café É",
    "<|end <|endoftext|> <|endof oftext <|endoftext", "<|endoftext|>oftext<|end",
    UNICODE_TEXT,
]


def fuzz_cases(n, seed):
    rng = random.Random(seed)
    pool = (list("aAzZsStTdDmMlLrRvVeE") + list("0123456789") + ["'"] * 6 + [" "] * 10 + ["\t", "\n", "\r\n", "\r"]
            + list(".,;:!?-_()[]{}<>|/\\\"#$%&*+=@^`~") + list("éñüßøåçÉÑ") + ["e\u0301", "\u0300", "\u20dd"]
            + list("日本語中文한국어") + list("αβγΔЖжשלוםمرحبا") + list("½²①٣४Ⅻ")
            + ["😀", "👍🏽", "👨‍👩‍👧", "❤️", "🇫🇷", "\u200d", "\u00a0", "\u3000", "\u2009", "\u0085", "\x0b", "\x0c"]
            + [EOT, "<|", "|>", "endoftext", "<|endoftext"] + ["\U0001e900", "\U00016e40"])
    out = []
    for _ in range(n):
        k = rng.randint(1, 40)
        out.append("".join(rng.choice(pool) for _ in range(k)))
    return out


def unicode_classes():
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    s = "".join(chr(c) for c in cps)
    res = {}
    for name, rx in [("L", r"\p{L}"), ("N", r"\p{N}"), ("S", r"\s")]:
        pieces = pre_tokenizers.Split(Regex(rx), behavior="removed").pre_tokenize_str(s)
        non = {ord(ch) for piece, _ in pieces for ch in piece}
        ranges = []
        for c in cps:
            if c in non:
                continue
            if ranges and ranges[-1][1] == c - 1:
                ranges[-1][1] = c
            else:
                ranges.append([c, c])
        res[name] = ranges
    return res


def bytes_to_unicode():
    """GPT-2's byte -> printable character map (OpenAI's encoder.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


class OpenAIEncoder:
    """OpenAI's gpt-2 src/encoder.py (rank-greedy BPE over the `regex` module's pattern), plus
    "<|endoftext|>" split out of the text first as transformers does for special tokens."""

    def __init__(self, vocab_path, merges_path):
        import regex
        with open(vocab_path, encoding="utf-8") as f:
            self.encoder = json.load(f)
        self.decoder = {v: k for k, v in self.encoder.items()}
        with open(merges_path, encoding="utf-8") as f:
            lines = f.read().split("\n")[1:-1]
        self.ranks = {tuple(l.split()): i for i, l in enumerate(lines)}
        self.b2u = bytes_to_unicode()
        self.u2b = {v: k for k, v in self.b2u.items()}
        self.pat = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

    def bpe(self, token):
        word = tuple(token)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            new, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    new.append(word[i] + word[i + 1])
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            word = tuple(new)
        return word

    def encode(self, text):
        ids = []
        for k, part in enumerate(text.split(EOT)):
            if k:
                ids.append(self.encoder[EOT])
            for tok in self.pat.findall(part):
                tok = "".join(self.b2u[b] for b in tok.encode("utf-8"))
                ids += [self.encoder[t] for t in self.bpe(tok)]
        return ids

    def decode(self, ids):
        text = "".join(self.decoder[i] for i in ids)
        return bytearray(self.u2b[c] for c in text).decode("utf-8", errors="replace")


def write_vocab_merges(tok, d):
    """The older GPT2Tokenizer pair, written from the model's own vocab and merges."""
    tmp = tempfile.mkdtemp()
    tok.model.save(tmp)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(tmp, f), os.path.join(d, f))
    shutil.rmtree(tmp)


def legacy_merges(path):
    with open(path, encoding="utf-8") as f:
        j = json.load(f)
    j["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, indent=2)


def main():
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    for d in ("gpt2like", "appended", "bad"):
        os.makedirs(os.path.join(OUT, d))

    a = train(special=True)
    a.save(os.path.join(OUT, "gpt2like", "tokenizer.json"))
    write_vocab_merges(a, os.path.join(OUT, "gpt2like"))

    b = train(special=False)
    b.add_special_tokens([AddedToken(EOT, normalized=True, special=True)])
    bpath = os.path.join(OUT, "appended", "tokenizer.json")
    b.save(bpath)
    legacy_merges(bpath)

    # options: the gpt2like model with the pipeline options other GPT-2-family files use
    j = json.loads(a.to_str())
    j["pre_tokenizer"]["add_prefix_space"] = True
    j["model"]["ignore_merges"] = True
    n = len(j["model"]["vocab"])
    extra = [("<mask>", dict(lstrip=True)), ("[END]", dict(rstrip=True)), ("cat", dict(single_word=True)),
             ("é", dict(normalized=True, special=False)), ("<|end", dict()), ("oftext", dict(normalized=True))]
    for k, (content, opts) in enumerate(extra):
        t = dict(id=n + k, content=content, single_word=False, lstrip=False, rstrip=False, normalized=False,
                 special=True)
        t.update(opts)
        j["added_tokens"].append(t)
    os.makedirs(os.path.join(OUT, "options"))
    opath = os.path.join(OUT, "options", "tokenizer.json")
    with open(opath, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)

    toks = {
        "gpt2like": Tokenizer.from_file(os.path.join(OUT, "gpt2like", "tokenizer.json")),
        "appended": Tokenizer.from_file(bpath),
        "options": Tokenizer.from_file(opath),
    }
    # Cross-checks (asserted here, not stored): transformers' GPT2Tokenizer from the folder with
    # tokenizer.json and from a folder holding only vocab.json + merges.txt, and OpenAI's original
    # encoder.py algorithm over vocab.json + merges.txt (written out below).
    g = os.path.join(OUT, "gpt2like")
    pair_dir = tempfile.mkdtemp()
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(g, f), pair_dir)
    hf = {
        "transformers_json": GPT2Tokenizer.from_pretrained(g),
        "transformers_pair": GPT2Tokenizer.from_pretrained(pair_dir),
    }
    openai = OpenAIEncoder(os.path.join(g, "vocab.json"), os.path.join(g, "merges.txt"))

    texts = CASES + fuzz_cases(300, seed=1234)
    cases = []
    for t in texts:
        c = {"text": t}
        for name, tok in toks.items():
            ids = tok.encode(t, add_special_tokens=False).ids
            c[name] = {"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)}
        ids = c["gpt2like"]["ids"]
        assert openai.encode(t) == ids, ("openai", t, openai.encode(t), ids)
        assert openai.decode(ids) == c["gpt2like"]["decoded"], ("openai", t)
        for name, t2 in hf.items():
            got = t2.encode(t, add_special_tokens=False)
            assert got == ids, (name, t, got, ids)
            dec = t2.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            assert dec == c["gpt2like"]["decoded"], (name, t, dec)
        cases.append(c)

    # decode-only id lists: single bytes of multibyte characters, out-of-range ids
    decode_cases = []
    for name, tok in toks.items():
        n = tok.get_vocab_size(with_added_tokens=True)
        b2c = bytes_to_unicode()
        assert set(b2c.values()) == set(pre_tokenizers.ByteLevel.alphabet())
        vocab = tok.get_vocab(with_added_tokens=True)
        byte_id = lambda bb: vocab[b2c[bb]]
        e = "é".encode()  # c3 a9
        emoji = "😀".encode()  # 4 bytes
        hello = tok.encode("hello", add_special_tokens=False).ids
        lists = [
            [],
            [byte_id(e[0])],
            [byte_id(e[1])],
            [byte_id(e[0]), byte_id(e[1])],
            [byte_id(emoji[0]), byte_id(emoji[1])],
            [byte_id(emoji[0]), byte_id(emoji[1]), byte_id(emoji[2])] + hello,
            hello + [byte_id(emoji[3])] + hello,
            [byte_id(0xFF), byte_id(0xFE), byte_id(0x80)],
            hello + [n, n + 5, 10**6] + hello,
            [n + 1],
            [vocab[EOT]] + hello + [vocab[EOT]],
        ]
        for ids in lists:
            decode_cases.append({"tokenizer": name, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
        if name == "gpt2like":
            for ids in lists:
                ok = [i for i in ids if i < n]
                assert openai.decode(ok) == tok.decode(ok, skip_special_tokens=False), ("openai", ids)
                for t2name, t2 in hf.items():
                    dec = t2.decode(ok, skip_special_tokens=False, clean_up_tokenization_spaces=False)
                    assert dec == tok.decode(ok, skip_special_tokens=False), (t2name, ids, dec)

    out = {
        "versions": {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__,
                     "python": sys.version.split()[0]},
        "vocab_size": {name: tok.get_vocab_size(with_added_tokens=True) for name, tok in toks.items()},
        "eot_id": {name: tok.token_to_id(EOT) for name, tok in toks.items()},
        "token_to_id": {name: {t: tok.token_to_id(t) for t in ["Ġthe", "the", "Ġ", "!", "Ā", "ÿ", "not-a-token", EOT]}
                        for name, tok in toks.items()},
        "cases": cases,
        "decode_cases": decode_cases,
    }
    with open(os.path.join(OUT, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=0)
    with open(os.path.join(OUT, "unicode_classes.json"), "w") as f:
        json.dump(unicode_classes(), f, separators=(",", ":"))

    # bad files
    bad = os.path.join(OUT, "bad")
    with open(os.path.join(OUT, "gpt2like", "tokenizer.json"), encoding="utf-8") as f:
        good = f.read()
    j = json.loads(good)
    with open(os.path.join(bad, "truncated.json"), "w", encoding="utf-8") as f:
        f.write(good[: len(good) // 3])
    wp = json.loads(good)
    wp["model"] = {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                   "max_input_chars_per_word": 100, "vocab": {"[UNK]": 0, "a": 1}}
    with open(os.path.join(bad, "wordpiece.json"), "w", encoding="utf-8") as f:
        json.dump(wp, f, ensure_ascii=False)
    unk = json.loads(good)
    unk["model"]["merges"].append(["Ġzzqq", "xyzzy"])
    with open(os.path.join(bad, "unknown_merge.json"), "w", encoding="utf-8") as f:
        json.dump(unk, f, ensure_ascii=False)
    pre = json.loads(good)
    pre["pre_tokenizer"] = {"type": "Whitespace"}
    with open(os.path.join(bad, "whitespace_pretok.json"), "w", encoding="utf-8") as f:
        json.dump(pre, f, ensure_ascii=False)
    with open(os.path.join(g, "merges.txt"), encoding="utf-8") as f:
        merges = f.read()
    cut = merges.rstrip("\n")
    cut = cut[: cut.rfind(" ")]  # last line loses its second token
    with open(os.path.join(bad, "truncated_merges.txt"), "w", encoding="utf-8") as f:
        f.write(cut)
    with open(os.path.join(g, "vocab.json"), encoding="utf-8") as f:
        vocab = f.read()
    with open(os.path.join(bad, "truncated_vocab.json"), "w", encoding="utf-8") as f:
        f.write(vocab[: len(vocab) // 2])
    print("wrote", OUT)


if __name__ == "__main__":
    main()
