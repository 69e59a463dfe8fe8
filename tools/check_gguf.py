"""Checks `webtune export-gguf` against llama.cpp's own converter, convert_lora_to_gguf.py, on the
same PEFT adapters (not part of cargo test; needs torch, transformers, safetensors, numpy and the
`gguf` package from PyPI):

    /opt/venv-ref/bin/python tools/check_gguf.py [--webtune target/debug/webtune]
        [--llama-cpp DIR] [--cache DIR] [--write-fixtures]

The converter comes from the source distribution of llama-cpp-python on PyPI (LLAMA_CPP_PYTHON,
which vendors llama.cpp): `pip download` puts it in --cache (default ~/.cache/webtune) and the
script unpacks convert_lora_to_gguf.py, convert_hf_to_gguf.py, conversion/ and gguf-py/ of
vendor/llama.cpp, checks they are there and prints the llama.cpp commit the release names.
--llama-cpp DIR uses a llama.cpp checkout instead. The converter needs only the base model's
config.json (no weights, no tokenizer).

For each case (the tiny GPT-2 of tests/fixtures/tiny and the Llama, Llama 3, Qwen2, Qwen3 of
tests/fixtures/llama, each with its adapter_init; and `llama11`, made here: 11 layers, odd sizes,
random A and B) and each --outtype (f32, f16), both files are read with gguf.GGUFReader and
compared:
1. the metadata llama.cpp reads (general.architecture, general.type, adapter.type,
   adapter.lora.alpha, general.quantization_version): same keys, value types and values; the
   converter's descriptive keys (general.name and what it takes from the adapter's README.md) are
   printed, not compared;
2. the tensors: the same names in the same order, shapes, dtypes, and data bit for bit;
3. llama.cpp's loader check (src/llama-adapter.cpp) for every lora_a/lora_b pair against the base
   weight's dims [in, out] from config.json: lora_a dims [in, r], lora_b [r, out].
GPT-2 is the exception the script asserts: the converter applies GPT-2's Conv1D transpose to the
LoRA pair and writes lora_a = Bᵀ, lora_b = Aᵀ, which fails check 3 (attn_qkv, ffn_up, ffn_down);
webtune writes the pair llama.cpp computes with, so its lora_a must equal the converter's lora_bᵀ
and its lora_b the converter's lora_aᵀ, and only webtune's passes check 3.

--write-fixtures copies some of the converter's files to tests/fixtures/gguf/ (tests/gguf.rs
compares `webtune export-gguf` with them) and writes tests/fixtures/gguf/converter.json (versions
and each file's metadata and tensor list). Exits 1 naming every check that fails.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

LLAMA_CPP_PYTHON = "0.3.36"
ROOT = Path(__file__).resolve().parent.parent
FX = ROOT / "tests" / "fixtures"
CASES = {  # name: (model folder, adapter folder)
    "gpt2": (FX / "tiny" / "model", FX / "tiny" / "adapter_init"),
    "llama": (FX / "llama" / "llama" / "model", FX / "llama" / "llama" / "adapter_init"),
    "llama3": (FX / "llama" / "llama3" / "model", FX / "llama" / "llama3" / "adapter_init"),
    "qwen2": (FX / "llama" / "qwen2" / "model", FX / "llama" / "qwen2" / "adapter_init"),
    "qwen3": (FX / "llama" / "qwen3" / "model", FX / "llama" / "qwen3" / "adapter_init"),
}
# A case made here (make_synthetic): 11 layers (llama.cpp's order puts blk.10 before blk.2), odd
# sizes, head_dim given and not hidden/heads, GQA, r 3, a fractional alpha.
SYNTHETIC = "llama11"
OUTTYPES = ["f32", "f16"]
# The converter's files committed for tests/gguf.rs: every family, both output types, odd r (llama).
FIXTURES = [("gpt2", "f32"), ("llama", "f32"), ("llama3", "f16"), ("qwen2", "f16"), ("qwen3", "f32"),
            (SYNTHETIC, "f16")]
READ_BY_LLAMA_CPP = ["general.architecture", "general.type", "adapter.type", "adapter.lora.alpha",
                     "general.quantization_version"]
NEEDED = ["convert_lora_to_gguf.py", "convert_hf_to_gguf.py", "conversion/", "gguf-py/"]


def fetch_converter(cache: Path) -> tuple[Path, str]:
    """vendor/llama.cpp of llama-cpp-python's sdist, unpacked in `cache`; and its description."""
    cache.mkdir(parents=True, exist_ok=True)
    name = f"llama_cpp_python-{LLAMA_CPP_PYTHON}"
    root = cache / name
    sdist = cache / f"{name}.tar.gz"
    if not (root / "vendor" / "llama.cpp" / "convert_lora_to_gguf.py").exists():
        if not sdist.exists():
            subprocess.run([sys.executable, "-m", "pip", "download", f"llama-cpp-python=={LLAMA_CPP_PYTHON}",
                            "--no-deps", "--no-binary", "llama-cpp-python", "-d", str(cache)], check=True)
        prefix = f"{name}/vendor/llama.cpp/"
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers()
                       if m.isfile() and any(m.name.startswith(prefix + n) for n in NEEDED)
                       or m.name in (f"{name}/CHANGELOG.md", f"{name}/PKG-INFO")]
            tar.extractall(cache, members=members, filter="data")
    llama_cpp = root / "vendor" / "llama.cpp"
    for n in NEEDED:
        if not (llama_cpp / n).exists():
            sys.exit(f"{sdist}: has no vendor/llama.cpp/{n}; this release does not vendor the converter")
    commit = "?"
    changelog = root / "CHANGELOG.md"
    if changelog.exists():
        m = re.search(rf"## \[{re.escape(LLAMA_CPP_PYTHON)}\].*?llama\.cpp@([0-9a-f]+)", changelog.read_text(), re.S)
        commit = m.group(1) if m else "?"
    return llama_cpp, f"llama-cpp-python {LLAMA_CPP_PYTHON} (llama.cpp {commit}, gguf-py {gguf_py_version(llama_cpp)})"


def make_synthetic(dest: Path) -> tuple[Path, Path]:
    """A Llama config.json (no weights: the converter and export-gguf read only the config) and a
    PEFT adapter with random A and B on q_proj, k_proj, v_proj and down_proj, in `dest`."""
    from safetensors.numpy import save_file
    model, adapter = dest / "model", dest / "adapter"
    model.mkdir(parents=True, exist_ok=True)
    adapter.mkdir(parents=True, exist_ok=True)
    n_layer, hidden, heads, kv, head_dim, inter, r = 11, 10, 2, 1, 6, 7, 3
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": head_dim,
              "intermediate_size": inter, "num_hidden_layers": n_layer, "vocab_size": 31,
              "max_position_embeddings": 32, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "hidden_act": "silu",
              "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}
    (model / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    peft = json.loads((CASES["llama"][1] / "adapter_config.json").read_text())
    targets = ["down_proj", "k_proj", "q_proj", "v_proj"]
    peft.update({"r": r, "lora_alpha": 2.5, "target_modules": targets})
    (adapter / "adapter_config.json").write_text(json.dumps(peft, indent=2) + "\n")
    dims = {"self_attn.q_proj": (hidden, heads * head_dim), "self_attn.k_proj": (hidden, kv * head_dim),
            "self_attn.v_proj": (hidden, kv * head_dim), "mlp.down_proj": (inter, hidden)}
    rng = np.random.default_rng(11)
    tensors = {}
    for layer in range(n_layer):
        for module, (fin, fout) in dims.items():
            name = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{name}.lora_A.weight"] = rng.uniform(-1, 1, (r, fin)).astype(np.float32)
            tensors[f"{name}.lora_B.weight"] = rng.uniform(-1, 1, (fout, r)).astype(np.float32)
    save_file(tensors, str(adapter / "adapter_model.safetensors"))
    return model, adapter


def gguf_py_version(llama_cpp: Path) -> str:
    m = re.search(r'^version = "([^"]+)"', (llama_cpp / "gguf-py" / "pyproject.toml").read_text(), re.M)
    return m.group(1) if m else "?"


def base_dims(model_dir: Path) -> dict:
    """llama.cpp's dims [in, out] of every adaptable base weight, by its GGUF name without `blk.{i}.`."""
    c = json.loads((model_dir / "config.json").read_text())
    if c.get("model_type", "gpt2") == "gpt2":
        e = c["n_embd"]
        return {"attn_qkv.weight": [e, 3 * e], "attn_output.weight": [e, e],
                "ffn_up.weight": [e, 4 * e], "ffn_down.weight": [4 * e, e]}
    e, i, nh = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"]
    hd = c.get("head_dim") or e // nh
    kv = c.get("num_key_value_heads") or nh
    return {"attn_q.weight": [e, nh * hd], "attn_k.weight": [e, kv * hd], "attn_v.weight": [e, kv * hd],
            "attn_output.weight": [nh * hd, e], "ffn_gate.weight": [e, i], "ffn_up.weight": [e, i],
            "ffn_down.weight": [i, e]}


def llama_cpp_refuses(reader, dims: dict) -> list[str]:
    """What llama.cpp's adapter loader would refuse in the file (its shape checks)."""
    t = {x.name: x for x in reader.tensors}
    bad = []
    for name in sorted(n[: -len(".lora_a")] for n in t if n.endswith(".lora_a")):
        a, b = t.get(name + ".lora_a"), t.get(name + ".lora_b")
        if b is None:
            bad.append(f"{name}: no lora_b")
            continue
        w = dims.get(name.split(".", 2)[2])
        ne_a, ne_b = [int(x) for x in a.shape], [int(x) for x in b.shape]
        if w is None:
            bad.append(f"{name}: not a base tensor")
        elif w[0] != ne_a[0] or w[1] != ne_b[1]:
            bad.append(f"{name}: incorrect shape (base {w}, lora_a {ne_a}, lora_b {ne_b})")
        elif ne_a[1] != ne_b[0]:
            bad.append(f"{name}: lora_a is not transposed")
    return bad


def fields(reader) -> dict:
    out = {}
    for f in reader.fields.values():
        if f.name.startswith("GGUF."):
            continue
        out[f.name] = ([t.name for t in f.types], f.contents())
    return out


def as_array(t) -> np.ndarray:
    """The tensor as a row-major array of its torch shape (GGUF dims reversed)."""
    return np.asarray(t.data).reshape([int(x) for x in reversed(t.shape)])


def compare(case: str, outtype: str, conv, ours, dims: dict) -> list[str]:
    fail = []
    fc, fo = fields(conv), fields(ours)
    for k in READ_BY_LLAMA_CPP:
        if fc.get(k) != fo.get(k):
            fail.append(f"metadata {k}: converter {fc.get(k)}, webtune {fo.get(k)}")
    extra = sorted(set(fo) - set(fc))
    if extra:
        fail.append(f"metadata keys the converter does not write: {extra}")
    info = {k: v[1] for k, v in fc.items() if k not in READ_BY_LLAMA_CPP}
    print(f"    converter's descriptive keys: {info}; webtune's general.name: {fo.get('general.name', [0, None])[1]!r}")
    tc, to = conv.tensors, ours.tensors
    names_c, names_o = [t.name for t in tc], [t.name for t in to]
    if names_c != names_o:
        fail.append(f"tensor names/order differ: converter {names_c}, webtune {names_o}")
        return fail
    gpt2 = case == "gpt2"
    by_name = {t.name: t for t in tc}
    for t in to:
        c = by_name[t.name]
        if t.tensor_type != c.tensor_type:
            fail.append(f"{t.name}: dtype {t.tensor_type.name}, converter {c.tensor_type.name}")
        if gpt2:  # the converter's pair is (Bᵀ, Aᵀ): compare with the swap undone
            other = by_name[t.name[:-1] + ("b" if t.name.endswith("a") else "a")]
            want = as_array(other).T
        else:
            want = as_array(c)
        got = as_array(t)
        if got.shape != want.shape:
            fail.append(f"{t.name}: shape {list(got.shape)}, converter {list(want.shape)}" + (" (swap undone)" if gpt2 else ""))
        elif not np.array_equal(np.ascontiguousarray(got).view(np.uint8), np.ascontiguousarray(want).view(np.uint8)):
            d = np.abs(got.astype(np.float64) - want.astype(np.float64)).max()
            fail.append(f"{t.name}: data differ (max |diff| {d:.3g})")
    refused_ours, refused_conv = llama_cpp_refuses(ours, dims), llama_cpp_refuses(conv, dims)
    if refused_ours:
        fail.append(f"llama.cpp's loader would refuse webtune's file: {refused_ours}")
    if gpt2:
        if not refused_conv:
            fail.append("expected llama.cpp's loader to refuse the converter's GPT-2 file (its Conv1D transpose of "
                        "the LoRA pair); it passes: re-check the GPT-2 layout")
        else:
            print(f"    converter's GPT-2 file, refused by llama.cpp's loader check: {len(refused_conv)} of "
                  f"{len(tc) // 2} pairs, e.g. {refused_conv[0]}")
    elif refused_conv:
        fail.append(f"llama.cpp's loader would refuse the converter's file: {refused_conv}")
    return fail


def summary(reader) -> dict:
    """The file's metadata {key: [value types, value]} and tensors [name, dims, dtype], in file order."""
    return {
        "metadata": {k: [v[0], v[1]] for k, v in fields(reader).items()},
        "tensors": [[t.name, [int(x) for x in t.shape], t.tensor_type.name] for t in reader.tensors],
    }


def dumps(doc, indent="") -> str:
    """JSON with one metadata entry or tensor per line."""
    if isinstance(doc, dict) and any(isinstance(v, (dict, list)) and len(json.dumps(v)) > 100 for v in doc.values()):
        inner = indent + " "
        items = [f"{inner}{json.dumps(k)}: {dumps(v, inner)}" for k, v in doc.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(doc, list) and len(json.dumps(doc)) > 100:
        inner = indent + " "
        return "[\n" + ",\n".join(inner + json.dumps(v) for v in doc) + "\n" + indent + "]"
    return json.dumps(doc)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--webtune", default=str(ROOT / "target" / "debug" / "webtune"))
    p.add_argument("--llama-cpp", type=Path, help="a llama.cpp checkout (else llama-cpp-python's sdist)")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "webtune")
    p.add_argument("--write-fixtures", action="store_true")
    a = p.parse_args()

    import gguf  # PyPI's package (the converter uses its own vendored copy)
    if "gguf-py" in gguf.__file__:
        sys.exit(f"import gguf found {gguf.__file__}; install PyPI's gguf to read the files")
    reader_version = importlib_metadata.version("gguf")
    if a.llama_cpp:
        llama_cpp, what = a.llama_cpp, f"llama.cpp checkout {a.llama_cpp} (gguf-py {gguf_py_version(a.llama_cpp)})"
    else:
        llama_cpp, what = fetch_converter(a.cache)
    print(f"converter: {llama_cpp / 'convert_lora_to_gguf.py'} from {what}; reader: gguf {reader_version} (PyPI)")
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    failures = []
    summaries = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = dict(CASES)
        cases[SYNTHETIC] = make_synthetic(FX / "gguf" / SYNTHETIC if a.write_fixtures else tmp / SYNTHETIC)
        for case, (model, adapter) in cases.items():
            dims = base_dims(model)
            for outtype in OUTTYPES:
                conv_path, ours_path = tmp / f"{case}_{outtype}.gguf", tmp / f"webtune_{case}_{outtype}.gguf"
                r = subprocess.run([sys.executable, str(llama_cpp / "convert_lora_to_gguf.py"), "--base", str(model),
                                    "--outtype", outtype, "--outfile", str(conv_path), str(adapter)],
                                   capture_output=True, text=True, env=env)
                if r.returncode != 0:
                    failures.append(f"{case} {outtype}: the converter failed:\n{r.stderr[-3000:]}")
                    continue
                r = subprocess.run([a.webtune, "export-gguf", "--adapter", str(adapter), "--model", str(model),
                                    "--out", str(ours_path), "--outtype", outtype], capture_output=True, text=True)
                if r.returncode != 0:
                    failures.append(f"{case} {outtype}: webtune export-gguf failed: {r.stderr.strip()}")
                    continue
                conv, ours = gguf.GGUFReader(conv_path), gguf.GGUFReader(ours_path)
                print(f"== {case} {outtype}: {len(ours.tensors)} tensors, webtune {ours_path.stat().st_size} bytes, "
                      f"converter {conv_path.stat().st_size} bytes")
                fail = compare(case, outtype, conv, ours, dims)
                failures += [f"{case} {outtype}: {f}" for f in fail]
                print("    " + ("ok" if not fail else "FAILED: " + "; ".join(fail)))
                if a.write_fixtures and (case, outtype) in FIXTURES:
                    dest = FX / "gguf"
                    dest.mkdir(exist_ok=True)
                    shutil.copyfile(conv_path, dest / f"{case}_{outtype}.gguf")
                    summaries[f"{case}_{outtype}.gguf"] = {
                        "model": str(model.relative_to(ROOT)), "adapter": str(adapter.relative_to(ROOT)),
                        **summary(conv)}
    if a.write_fixtures:
        doc = {"converter": what, "reader": f"gguf {reader_version}", "command":
               "convert_lora_to_gguf.py --base MODEL --outtype OUTTYPE --outfile FILE ADAPTER", "files": summaries}
        (FX / "gguf" / "converter.json").write_text(dumps(doc) + "\n")
        print(f"wrote {len(summaries)} files and converter.json to {FX / 'gguf'}")
    if failures:
        print("\nFAILED:\n" + "\n".join(failures))
        sys.exit(1)
    print("all cases agree")


if __name__ == "__main__":
    main()
