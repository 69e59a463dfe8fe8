#!/usr/bin/env bash
# Same-run comparison of `webtune bench` with the Burn peer benchmark (burn-gpt, Burn 0.22.1
# on its wgpu backend): the same training shapes and matmul sizes, the two programs
# alternating, best of N runs each, then the ratios.
#
#   tools/bench-vs-burn.sh BURN_GPT_DIR
#
# BURN_GPT_DIR (or $BURN_GPT) is the peer's folder, a checkout of the Burn benchmark
# (Cargo.toml, Cargo.lock, src/main.rs). It is built once with `cargo build --release --locked`
# into $BURN_TARGET_DIR (default ${TMPDIR:-/tmp}/burn-gpt-target), outside this repository;
# nothing of it is copied here. On two CPU cores that build takes about 17 minutes.
#
# Settings (environment): PRESETS="tiny small", MODES="lora full", SIZES="512 1024",
# ROUNDS=2 (runs of each program per workload; the best is kept), STEPS=10, WARMUP=3,
# WEBTUNE=path of a webtune binary to compare instead of this tree's release build,
# BASELINE=path of another webtune binary (e.g. a build of main) run in the same rounds, for
# before/after columns.
# The adapter is the one webtune picks (WEBTUNE_ADAPTER) and Burn's default pick
# (CUBECL_WGPU_DEFAULT_DEVICE); on a machine with one adapter they agree.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
burn_dir="${1:-${BURN_GPT:-}}"
[ -n "$burn_dir" ] || { echo "usage: tools/bench-vs-burn.sh BURN_GPT_DIR (the burn-gpt benchmark's folder; or set BURN_GPT)" >&2; exit 2; }
burn_target="${BURN_TARGET_DIR:-${TMPDIR:-/tmp}/burn-gpt-target}"
presets="${PRESETS:-tiny small}"
modes="${MODES:-lora full}"
sizes="${SIZES:-512 1024}"
rounds="${ROUNDS:-2}"
steps="${STEPS:-10}"
warmup="${WARMUP:-3}"

[ -f "$burn_dir/Cargo.toml" ] || { echo "bench-vs-burn: no Cargo.toml in $burn_dir (give the burn-gpt folder)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "bench-vs-burn: needs python3 (to read the JSON reports)" >&2; exit 2; }

burn="$burn_target/release/burn-gpt"
if [ ! -x "$burn" ]; then
    echo "building burn-gpt into $burn_target (once; ~17 min on 2 cores)" >&2
    CARGO_TARGET_DIR="$burn_target" cargo build --release --locked --manifest-path "$burn_dir/Cargo.toml" >&2
fi
webtune="${WEBTUNE:-}"
if [ -z "$webtune" ]; then
    (cd "$here" && cargo build --release --locked >&2)
    webtune="$here/target/release/webtune"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# json FILE EXPR: evaluates EXPR (Python) on the parsed JSON in FILE (d) and prints it.
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }
# best A B: the larger of two numbers (empty = none yet).
best() { python3 -c "import sys; v=[float(x) for x in sys.argv[1:] if x]; print(max(v))" "$@"; }
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}x')" "$1" "$2"; }

echo "machine: $(nproc) CPU threads, load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?'), $(date -u +%Y-%m-%dT%H:%MZ)"
baseline="${BASELINE:-}"
rows=()
for preset in $presets; do
    for mode in $modes; do
        w="" b="" o="" dims=""
        for ((r = 1; r <= rounds; r++)); do
            if [ -n "$baseline" ]; then
                "$baseline" bench --what train --preset "$preset" --mode "$mode" --steps "$steps" --warmup "$warmup" \
                    --json "$tmp/o.json" >/dev/null 2>"$tmp/o.err" || { cat "$tmp/o.err" >&2; exit 1; }
                o="$(best "$o" "$(json "$tmp/o.json" "d['train'][0]['tokens_per_s']")")"
            fi
            "$webtune" bench --what train --preset "$preset" --mode "$mode" --steps "$steps" --warmup "$warmup" \
                --json "$tmp/w.json" >/dev/null 2>"$tmp/w.err" || { cat "$tmp/w.err" >&2; exit 1; }
            w="$(best "$w" "$(json "$tmp/w.json" "d['train'][0]['tokens_per_s']")")"
            [ -n "$dims" ] || dims="$(json "$tmp/w.json" "' '.join(str(d['train'][0][k]) for k in ['n_layer','n_embd','n_head','vocab','batch','seq','n_positions'])")"
            read -r L D H V B T P <<<"$dims"
            "$burn" --layers "$L" --dim "$D" --heads "$H" --vocab "$V" --batch "$B" --seq "$T" --ctx "$P" \
                --steps "$steps" --warmup "$warmup" --mode "$mode" --rank 8 >"$tmp/b.json" 2>"$tmp/b.err" \
                || { cat "$tmp/b.err" >&2; exit 1; }
            b="$(best "$b" "$(json "$tmp/b.json" "d['tok_per_s']")")"
            adapter="$(json "$tmp/w.json" "d['machine']['adapter'] + ' / ' + d['machine']['driver']")"
        done
        base_cols=""
        [ -z "$baseline" ] || base_cols=" $(printf '%.0f' "$o") tok/s | $(ratio "$o" "$b") |"
        rows+=("| $preset ($L/$D/$H/$V) $mode, B $B x T $T | $(printf '%.0f' "$w") tok/s | $(printf '%.0f' "$b") tok/s | $(ratio "$w" "$b") |$base_cols")
    done
done
for size in $sizes; do
    w="" b="" o=""
    for ((r = 1; r <= rounds; r++)); do
        if [ -n "$baseline" ]; then
            "$baseline" bench --what matmul --sizes "$size" --iters 5 --json "$tmp/o.json" >/dev/null 2>"$tmp/o.err" \
                || { cat "$tmp/o.err" >&2; exit 1; }
            o="$(best "$o" "$(json "$tmp/o.json" "[x['gflops'] for x in d['matmul'] if x['layout'] == 'NN'][0]")")"
        fi
        "$webtune" bench --what matmul --sizes "$size" --iters 5 --json "$tmp/w.json" >/dev/null 2>"$tmp/w.err" \
            || { cat "$tmp/w.err" >&2; exit 1; }
        w="$(best "$w" "$(json "$tmp/w.json" "[x['gflops'] for x in d['matmul'] if x['layout'] == 'NN'][0]")")"
        tile="$(json "$tmp/w.json" "[x.get('tile', '?') for x in d['matmul'] if x['layout'] == 'NN'][0]")"
        "$burn" --matmul "$size,$size,$size" --steps 5 --warmup 3 >"$tmp/b.json" 2>"$tmp/b.err" || { cat "$tmp/b.err" >&2; exit 1; }
        b="$(best "$b" "$(json "$tmp/b.json" "d['gflops']")")"
        adapter="$(json "$tmp/w.json" "d['machine']['adapter'] + ' / ' + d['machine']['driver']")"
    done
    base_cols=""
    [ -z "$baseline" ] || base_cols=" $(printf '%.1f' "$o") GFLOP/s | $(ratio "$o" "$b") |"
    rows+=("| matmul ${size}³ NN (webtune tile $tile) | $(printf '%.1f' "$w") GFLOP/s | $(printf '%.1f' "$b") GFLOP/s | $(ratio "$w" "$b") |$base_cols")
done
echo "adapter: ${adapter:-?}; best of $rounds alternating runs each; load average after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
echo
if [ -n "$baseline" ]; then
    echo "| workload | webtune | Burn 0.22.1 | webtune / Burn | baseline | baseline / Burn |"
    echo "| --- | --- | --- | --- | --- | --- |"
else
    echo "| workload | webtune | Burn 0.22.1 | webtune / Burn |"
    echo "| --- | --- | --- | --- |"
fi
printf '%s\n' "${rows[@]}"
