#!/usr/bin/env bash
# PEFT loads what webtune writes (run by .ci/run): `webtune train` writes two adapters on the tiny
# fixture (the defaults: r 8, alpha 16 on c_attn, c_proj, c_fc; and alpha 3, r 5 on attn.c_proj and
# c_fc), which tools/check_peft_adapter.py loads with PeftModel.from_pretrained (every tensor as
# written, the same loss as `webtune eval`), and `webtune merge` folds the second into the model,
# which tools/check_merge.py compares with PEFT's merge_and_unload(). Then the same for the Llama-family
# fixtures tests/fixtures/llama/{qwen3,llama3,qwen2,llama} (loaded with AutoModelForCausalLM; token-id data, no
# tokenizer): the all-linear default adapter, and r 5 / alpha 3 on q_proj,down_proj, which is merged.
#
#   bash tools/check_with_peft.sh [PYTHON] [WEBTUNE]
#
# PYTHON (default /opt/venv-ref/bin/python) has tools/requirements-ref.txt installed; WEBTUNE
# (default target/debug/webtune) is the binary to check.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-/opt/venv-ref/bin/python}
wt=${2:-target/debug/webtune}
fx=tests/fixtures/tiny
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

train() {  # OUT FLAGS...
    local out=$1
    shift
    "$wt" train --model "$fx/model" --data "$fx/data.jsonl" --out "$tmp/$out" --steps 20 --batch 2 --seq 16 \
        --lr 1e-2 --seed 1 "$@" 2>"$tmp/$out.log" || { cat "$tmp/$out.log"; exit 1; }
}

echo "== webtune train, default LoRA shape; PEFT loads it"
train default
"$py" tools/check_peft_adapter.py "$fx/model" "$tmp/default" "$fx/data.jsonl" 16 "$wt"

echo "== webtune train --lora-rank 5 --lora-alpha 3 --lora-targets attn.c_proj,c_fc; PEFT loads it"
train r5 --lora-rank 5 --lora-alpha 3 --lora-targets attn.c_proj,c_fc --weight-decay 0.1
"$py" tools/check_peft_adapter.py "$fx/model" "$tmp/r5" "$fx/data.jsonl" 16 "$wt"

echo "== webtune merge of that adapter (model folder with its tokenizer); transformers + PEFT agree"
mkdir "$tmp/model"
cp "$fx/model/config.json" "$fx/model/model.safetensors" "$fx/tokenizer/tokenizer.json" "$tmp/model/"
"$wt" merge --model "$tmp/model" --adapter "$tmp/r5" --out "$tmp/merged" >/dev/null
"$py" tools/check_merge.py "$tmp/model" "$tmp/r5" "$tmp/merged"

ltrain() {  # OUT FLAGS... (fixture folder $lf)
    local out=$1
    shift
    "$wt" train --model "$lf/model" --data "$lf/data.jsonl" --out "$tmp/$out" --steps 10 --batch 2 --seq 16 \
        --lr 1e-2 --seed 1 "$@" 2>"$tmp/$out.log" || { cat "$tmp/$out.log"; exit 1; }
}

for fam in qwen3 llama3 qwen2 llama; do
    lf=tests/fixtures/llama/$fam
    echo "== $fam: webtune train, default LoRA shape (all-linear); PEFT loads it"
    ltrain "$fam-default"
    "$py" tools/check_peft_adapter.py "$lf/model" "$tmp/$fam-default" "$lf/data.jsonl" 16 "$wt"

    echo "== $fam: webtune train --lora-rank 5 --lora-alpha 3 --lora-targets q_proj,down_proj; PEFT loads it"
    ltrain "$fam-r5" --lora-rank 5 --lora-alpha 3 --lora-targets q_proj,down_proj
    "$py" tools/check_peft_adapter.py "$lf/model" "$tmp/$fam-r5" "$lf/data.jsonl" 16 "$wt"

    echo "== $fam: webtune merge of that adapter; transformers + PEFT agree"
    "$wt" merge --model "$lf/model" --adapter "$tmp/$fam-r5" --out "$tmp/$fam-merged" >/dev/null
    "$py" tools/check_merge.py "$lf/model" "$tmp/$fam-r5" "$tmp/$fam-merged"
done
