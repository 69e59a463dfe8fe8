#!/usr/bin/env bash
# Builds the browser package: the engine for wasm32 (cargo), its JS glue (wasm-bindgen), an
# optional wasm-opt pass, then the TypeScript package and demo (npm run build in web/).
# Settings come from wasm-pack.toml at the repository root. Nothing is downloaded here:
# install wasm-bindgen-cli (the version in Cargo.lock) and run `npm ci` in web/ first
# (.ci/run does both).
set -euo pipefail
cd "$(dirname "$0")/.."

# toml KEY SECTION: the value of KEY in [SECTION] of wasm-pack.toml, quotes stripped
# (flat files only: strings, numbers, booleans and one-line arrays).
toml() {
    awk -v want_section="$2" -v want_key="$1" '
        /^[[:space:]]*#/ || /^[[:space:]]*$/ { next }
        /^[[:space:]]*\[/ { gsub(/[][[:space:]]/, ""); section = $0; next }
        section == want_section {
            line = $0
            sub(/[[:space:]]+#.*$/, "", line)
            key = line; sub(/[[:space:]]*=.*/, "", key); gsub(/[[:space:]]/, "", key)
            if (key != want_key) next
            val = line; sub(/^[^=]*=[[:space:]]*/, "", val)
            if (val ~ /^\[/) { gsub(/[][",]/, " ", val); gsub(/[[:space:]]+/, " ", val); sub(/^ /, "", val); sub(/ $/, "", val) }
            else gsub(/^"|"$/, "", val)
            print val; found = 1; exit
        }
        END { if (!found) exit 1 }
    ' wasm-pack.toml || { echo "wasm-pack.toml: missing $2.$1" >&2; exit 1; }
}

profile=$(toml profile build)
target=$(toml target build)
out_dir=$(toml out-dir build)
out_name=$(toml out-name build)

# The [profile] table becomes CARGO_PROFILE_<PROFILE>_<KEY> for this build only.
prof_env=()
P=$(echo "$profile" | tr 'a-z-' 'A-Z_')
for key in opt-level lto codegen-units debug; do
    if val=$(toml "$key" profile 2>/dev/null); then
        prof_env+=("CARGO_PROFILE_${P}_$(echo "$key" | tr 'a-z-' 'A-Z_')=$val")
    fi
done

echo "== cargo build (wasm32, profile $profile: ${prof_env[*]})"
env "${prof_env[@]}" cargo build --locked --profile "$profile" --lib --target wasm32-unknown-unknown
dir=$profile; [ "$profile" = dev ] && dir=debug
wasm="target/wasm32-unknown-unknown/$dir/webtune.wasm"

want=$(grep -A2 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
if ! command -v wasm-bindgen >/dev/null; then
    echo "wasm-bindgen not found: cargo install wasm-bindgen-cli --version $want" >&2
    exit 1
fi
have=$(wasm-bindgen --version | awk '{print $2}')
if [ "$have" != "$want" ]; then
    echo "wasm-bindgen $have does not match Cargo.lock's wasm-bindgen $want: cargo install wasm-bindgen-cli --version $want --force" >&2
    exit 1
fi

echo "== wasm-bindgen --target $target --out-dir $out_dir"
rm -rf "$out_dir"
wasm-bindgen --target "$target" --out-dir "$out_dir" --out-name "$out_name" "$wasm"

opt=$(toml enabled wasm-opt)
wasm_opt=""
if [ "$opt" = true ] || [ "$opt" = auto ]; then
    if command -v wasm-opt >/dev/null; then wasm_opt=wasm-opt
    elif [ -x web/node_modules/.bin/wasm-opt ]; then wasm_opt=web/node_modules/.bin/wasm-opt
    elif [ "$opt" = true ]; then echo "wasm-pack.toml asks for wasm-opt but none is installed" >&2; exit 1
    fi
fi
if [ -n "$wasm_opt" ]; then
    read -r -a flags <<<"$(toml flags wasm-opt)"
    echo "== $wasm_opt ${flags[*]}"
    "$wasm_opt" "${flags[@]}" "$out_dir/${out_name}_bg.wasm" -o "$out_dir/${out_name}_bg.wasm"
fi
ls -l "$out_dir"

echo "== npm run build (web/)"
(cd web && npm run build)
