#!/usr/bin/env bash
# One prepared comparison for a GPU machine (issue 10, item 5): `webtune bench` on GPT-2 124M shapes
# and the PyTorch + PEFT reference (tools/bench_torch.py) in the same command, then each ratio
# against the issue's target.
#
#   tools/gpu-bench.sh WEBTUNE_BIN [PYTHON] [OUT_DIR]
#
# WEBTUNE_BIN: a webtune binary (a release build); PYTHON: one with torch, transformers and peft
# (default python3); OUT_DIR (default ./gpu-bench): every JSON report, and summary.md.
# Workloads (SHAPES=gpt2, the default): LoRA r8 B8 T512 with f32 and with f16 base weights, LoRA
# B1 T128, full B8 T512, matmul 4096³. SHAPES=tiny runs the same list on the tiny preset (B2 T32,
# matmul 256): a smoke test of this script on any machine. STEPS (10) and WARMUP (3) as bench's.
set -euo pipefail

bin="${1:?usage: tools/gpu-bench.sh WEBTUNE_BIN [PYTHON] [OUT_DIR]}"
py="${2:-python3}"
out="${3:-gpu-bench}"
here="$(cd "$(dirname "$0")" && pwd)"
steps="${STEPS:-10}"
warmup="${WARMUP:-3}"
case "${SHAPES:-gpt2}" in
    gpt2) preset=gpt2; big="8 512"; small="1 128"; size=4096 ;;
    tiny) preset=tiny; big="2 32"; small="1 16"; size=256 ;;
    *) echo "gpu-bench: SHAPES is gpt2 or tiny" >&2; exit 2 ;;
esac
[ -x "$bin" ] || { echo "gpu-bench: $bin is not an executable webtune" >&2; exit 2; }
"$py" -c "import torch, transformers, peft" || { echo "gpu-bench: $py lacks torch, transformers or peft" >&2; exit 2; }
mkdir -p "$out"

# name, mode, batch, seq, base weights
run_train() {
    local name=$1 mode=$2 b=$3 t=$4 bw=$5
    echo "== $name" >&2
    "$bin" bench --what train --preset "$preset" --mode "$mode" --batch "$b" --seq "$t" --steps "$steps" \
        --warmup "$warmup" --base-weights "$bw" --json "$out/webtune-$name.json" >&2
    if [ "$bw" = f32 ]; then
        "$py" "$here/bench_torch.py" train --preset "$preset" --mode "$mode" --batch "$b" --seq "$t" \
            --steps "$steps" --warmup "$warmup" --json "$out/torch-$name.json" >&2
    fi
}
run_train lora-big lora $big f32
run_train lora-big-f16 lora $big f16
run_train lora-small lora $small f32
run_train full-big full $big f32
echo "== matmul $size" >&2
"$bin" bench --what matmul --sizes "$size" --json "$out/webtune-matmul.json" >&2
"$py" "$here/bench_torch.py" matmul --size "$size" --json "$out/torch-matmul.json" >&2

"$py" - "$out" <<'EOF' | tee "$out/summary.md"
import json, sys
out = sys.argv[1]
load = lambda n: json.load(open(f"{out}/{n}.json"))
w = {n: load(f"webtune-{n}")["train"][0] for n in ["lora-big", "lora-big-f16", "lora-small", "full-big"]}
t = {n: load(f"torch-{n}") for n in ["lora-big", "lora-small", "full-big"]}
machine = load("webtune-lora-big")["machine"]
print(f"webtune on {machine['adapter']} ({machine['backend']}, driver {machine['driver']}); PyTorch {t['lora-big']['torch']} on {t['lora-big']['device']}\n")
print("| workload | webtune tok/s | PyTorch tok/s | ratio | webtune tensors | PyTorch peak | memory ratio | target |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
gib = lambda b: "-" if not b else f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"
def row(label, wn, tn, target):
    a, b = w[wn], t[tn]
    r = a["tokens_per_s"] / b["tokens_per_s"]
    m = a["tensor_bytes"] / b["peak_bytes"] if b.get("peak_bytes") else None
    mr = f"{m:.2f}x" if m else "-"
    print(f"| {label} | {a['tokens_per_s']:,.0f} | {b['tokens_per_s']:,.0f} | {r:.2f}x | {gib(a['tensor_bytes'])} | {gib(b.get('peak_bytes'))} | {mr} | {target} |")
big = f"B{w['lora-big']['batch']} T{w['lora-big']['seq']}"
row(f"LoRA r8 {big}, f32 base", "lora-big", "lora-big", "≥ 0.6x tok/s, ≤ 0.5x memory")
row(f"LoRA r8 {big}, f16 base", "lora-big-f16", "lora-big", "(memory)")
row(f"LoRA r8 B{w['lora-small']['batch']} T{w['lora-small']['seq']}", "lora-small", "lora-small", "≥ 3x tok/s")
row(f"full {big}", "full-big", "full-big", "-")
wm = max(r["gflops"] for r in load("webtune-matmul")["matmul"] if r["layout"] == "NN")
tm = load("torch-matmul")["gflops"]
print(f"| matmul {load('torch-matmul')['size']}³ f32 NN | {wm:,.0f} GFLOP/s | {tm:,.0f} GFLOP/s | {wm / tm:.2f}x | | | | ≥ 0.6x |")
print("\nwebtune tensors: the planned tensors (bench's tensor_bytes), without the driver's own memory; PyTorch peak: torch.cuda.max_memory_allocated.")
EOF
