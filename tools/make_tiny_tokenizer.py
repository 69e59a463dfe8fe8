"""Writes tests/fixtures/tiny/tokenizer/tokenizer.json: a byte-level BPE tokenizer whose vocabulary
is exactly the tiny fixture model's 97 ids, so text commands (generate, eval on .txt) can run on it.

ids 0..93 = the printable ASCII characters '!'..'~' (byte-level form = themselves), 94 = 'Ġ' (space),
95 = 'Ċ' (newline), 96 = '<|endoftext|>' (the model's eos/bos). No merges: one token per character.
Other bytes have no id and are dropped on encoding (no unk token).

Plain Python, no dependencies:  python3 tools/make_tiny_tokenizer.py
With `tokenizers` installed (e.g. /opt/venv-ref/bin/python) it also checks that Hugging Face loads
the file and encodes/decodes a sample as expected.
"""
import json
import os

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "tiny", "tokenizer")


def main():
    vocab = {chr(c): i for i, c in enumerate(range(0x21, 0x7F))}
    vocab["\u0120"] = len(vocab)  # 'Ġ' = byte 0x20
    vocab["\u010a"] = len(vocab)  # 'Ċ' = byte 0x0a
    vocab["<|endoftext|>"] = len(vocab)
    assert len(vocab) == 97 and vocab["<|endoftext|>"] == 96
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": 96, "content": "<|endoftext|>", "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": True, "special": True}
        ],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "tokenizer.json")
    with open(path, "w") as f:
        json.dump(tok, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print("wrote", os.path.normpath(path))
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return
    t = Tokenizer.from_file(path)
    text = "Hello, world!\nA b<|endoftext|>"
    ids = t.encode(text).ids
    assert t.get_vocab_size() == 97, t.get_vocab_size()
    assert ids[-1] == 96 and len(ids) == len(text) - len("<|endoftext|>") + 1, ids
    assert t.decode(ids, skip_special_tokens=False) == text, t.decode(ids, skip_special_tokens=False)
    print("tokenizers", "loads it:", ids)


if __name__ == "__main__":
    main()
