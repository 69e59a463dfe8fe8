"""Writes tests/fixtures/rope.json: the rotary-embedding frequencies and cos/sin that
transformers computes for a few Llama / Qwen2 / Qwen3 configs, so tests/rope_config.rs can
check src/model/rope.rs against them.

    /opt/venv-ref/bin/python tools/make_rope_fixtures.py

Each case holds the raw config dict (as a config.json would have it: hub style with
`rope_theta` + `rope_scaling`, or transformers 5 style with `rope_parameters`), the family whose
RotaryEmbedding module computed the numbers, and what that module holds and returns:
`inv_freq` [head_dim / 2], `attention_scaling`, and for a few positions the first half of
`cos` and `sin` (HF's second half repeats the first; the script checks that) in float32.
`apply_rotary` holds a random q of 2 heads at positions 0..7 (webtune's layout [T, heads·hd]) and
what `apply_rotary_pos_emb` makes of it with the cos/sin of case `case`: the rotate_half
convention itself, end to end.
"""
import json
import os

import torch
import transformers
from transformers import LlamaConfig, Qwen2Config, Qwen3Config
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb
from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding
from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding

FAMILIES = {
    "llama": (LlamaConfig, LlamaRotaryEmbedding),
    "qwen2": (Qwen2Config, Qwen2RotaryEmbedding),
    "qwen3": (Qwen3Config, Qwen3RotaryEmbedding),
}

LLAMA32_SCALING = {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}

CASES = [
    # name, family, config.json keys that matter
    ("tinyllama_default", "llama",
     {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048,
      "rope_theta": 10000.0, "rope_scaling": None}),
    ("smollm2_theta_1e5", "llama",
     {"hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192,
      "rope_theta": 100000.0, "rope_scaling": None}),
    ("no_theta_defaults_to_1e4", "llama",
     {"hidden_size": 96, "num_attention_heads": 4, "max_position_embeddings": 512}),
    ("qwen2_theta_1e6", "qwen2",
     {"hidden_size": 896, "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 32768,
      "rope_theta": 1000000.0, "rope_scaling": None}),
    ("qwen3_head_dim_128", "qwen3",
     {"hidden_size": 64, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 128,
      "max_position_embeddings": 40960, "rope_theta": 1000000.0, "rope_scaling": None}),
    ("llama32_hub_rope_scaling", "llama",
     {"hidden_size": 2048, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
      "max_position_embeddings": 131072, "rope_theta": 500000.0, "rope_scaling": LLAMA32_SCALING}),
    ("llama32_v5_rope_parameters", "llama",
     {"hidden_size": 3072, "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128,
      "max_position_embeddings": 131072,
      "rope_parameters": {**LLAMA32_SCALING, "rope_theta": 500000.0}}),
    # every band (kept, divided, interpolated) at hd 24; old "type" key
    ("llama3_all_bands_type_key", "llama",
     {"hidden_size": 72, "num_attention_heads": 3, "max_position_embeddings": 256, "rope_theta": 10000.0,
      "rope_scaling": {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 64}}),
    # original_max_position_embeddings missing: max_position_embeddings stands in
    ("llama3_original_from_max_positions", "llama",
     {"hidden_size": 128, "num_attention_heads": 2, "max_position_embeddings": 100, "rope_theta": 50000.0,
      "rope_scaling": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 2.0, "high_freq_factor": 8.0}}),
]

POSITIONS = [0, 1, 2, 7, 100, 1000, 8191, 100000]


def main():
    out = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__},
           "positions": POSITIONS, "cases": []}
    for name, family, raw in CASES:
        config_cls, rotary_cls = FAMILIES[family]
        config = config_cls(**json.loads(json.dumps(raw)))  # a copy: transformers edits the dicts
        rotary = rotary_cls(config)
        hd = rotary.inv_freq.shape[0] * 2
        x = torch.zeros(1, 1, len(POSITIONS), hd, dtype=torch.float32)
        cos, sin = rotary(x, torch.tensor([POSITIONS]))
        cos, sin = cos[0], sin[0]
        assert torch.equal(cos[:, : hd // 2], cos[:, hd // 2 :]) and torch.equal(sin[:, : hd // 2], sin[:, hd // 2 :])
        out["cases"].append({
            "name": name,
            "family": family,
            "config": raw,
            "head_dim": hd,
            "inv_freq": [float(v) for v in rotary.inv_freq.tolist()],
            "attention_scaling": float(rotary.attention_scaling),
            "cos": [[float(v) for v in row] for row in cos[:, : hd // 2].tolist()],
            "sin": [[float(v) for v in row] for row in sin[:, : hd // 2].tolist()],
        })
    # apply_rotary_pos_emb on q [B=1, heads=2, T=7, hd], stored as [T, heads·hd]
    name, family, raw = CASES[7]
    config_cls, rotary_cls = FAMILIES[family]
    rotary = rotary_cls(config_cls(**json.loads(json.dumps(raw))))
    hd, t = rotary.inv_freq.shape[0] * 2, 7
    q = torch.randn(1, 2, t, hd, generator=torch.Generator().manual_seed(0))
    cos, sin = rotary(q, torch.arange(t)[None])
    q_embed, _ = apply_rotary_pos_emb(q, q, cos, sin)
    flat = lambda x: [float(v) for v in x[0].transpose(0, 1).reshape(-1).tolist()]
    out["apply_rotary"] = {"case": name, "heads": 2, "t": t, "q": flat(q), "q_embed": flat(q_embed)}

    path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "rope.json")
    with open(path, "w") as f:  # one line per case
        head = json.dumps({k: v for k, v in out.items() if k != "cases"})[:-1]
        cases = ",\n".join(json.dumps(c, separators=(",", ":")) for c in out["cases"])
        f.write(f'{head}, "cases": [\n{cases}\n]}}\n')
    print(f"wrote {path}: {len(out['cases'])} cases")


if __name__ == "__main__":
    main()
