#!/usr/bin/env python3
"""Regenerates tests/fixtures/llama: tiny Llama, Qwen2 and Qwen3 checkpoints, token data, PEFT
LoRA adapters, and what PyTorch + PEFT compute from them (logits, LoRA and full gradients, three
AdamW steps with clipping, a weight-decay variant, greedy KV-cached generation), which the Rust
tests compare against. tests/fixtures/llama/README.md describes every file and key.

    /opt/venv-ref/bin/python tools/make_llama_fixtures.py

Made with (the versions of tools/make_fixtures.py; expected.json records them):
    torch 2.15.0+cu132, transformers 5.24.0, peft 0.21.2, safetensors 0.8.0, numpy 2.4.6
CPU only, deterministic for a given set of versions (one thread, deterministic algorithms, a seed
per case). Before writing, every case is reloaded from its own files and checked: the model
folders give the recorded logits, the adapter gives the LoRA logits, merge_and_unload() works and
generates the recorded ids, and data.jsonl gives the recorded batches.
"""

import copy
import json
import os
import shutil

import numpy as np
import torch
import torch.nn.functional as F
import transformers
import peft
import safetensors
from safetensors.torch import save_file
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                          Qwen3Config, Qwen3ForCausalLM)
from peft import LoraConfig, PeftModel, get_peft_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "llama")

B, T = 2, 16
STEPS = 3
VOCAB = 97
CLIP = 1.0
LORA_B_INIT_STD = 0.1
ALL_SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BETAS, EPS = (0.9, 0.999), 1e-8
OPTIMIZERS = {
    # section: (trained tensors, AdamW settings)
    "lora": ("lora", dict(lr=1e-2, betas=BETAS, eps=EPS, weight_decay=0.01)),
    "full": ("full", dict(lr=1e-3, betas=BETAS, eps=EPS, weight_decay=0.01)),
    # weight decay 1.0: large enough that decay moves weights well beyond any test tolerance
    "lora_wd": ("lora", dict(lr=5e-2, betas=BETAS, eps=EPS, weight_decay=1.0)),
    "full_wd": ("full", dict(lr=1e-2, betas=BETAS, eps=EPS, weight_decay=1.0)),
}
# Weights: HF's init with std 0.1 (not the default 0.02), q_proj/k_proj with std QK_STD, q_norm/k_norm
# around QK_NORM, so attention scores are O(1) and attention is far from uniform (expected.json's
# mean_max_attention): RoPE, the causal mask and GQA then change the numbers.
INIT_STD = 0.1
QK_STD = 0.25
QK_NORM = 2.0
PROMPTS = [[7, 30, 11, 52, 3], [60, 4, 41], [13, 77, 5, 19, 88, 24], [40, 41, 42, 43], [90, 12], [33, 8, 71, 50, 6, 17, 64]]
NEW_TOKENS = 8
MIN_MARGIN = 5e-3  # greedy generation: top-1 logit must beat top-2 by this at every step

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}

COMMON = dict(vocab_size=VOCAB, num_hidden_layers=2, hidden_size=48, max_position_embeddings=64,
              attention_dropout=0.0, hidden_act="silu", initializer_range=INIT_STD)

CASES = [
    dict(
        name="llama",
        what="LlamaForCausalLM, head_dim 16 = hidden/heads, GQA 3:1, untied head, default RoPE (theta 1e4); "
             "model/config.json in the hub layout (rope_theta + rope_scaling null, torch_dtype), "
             "model_sharded/ as transformers 5 writes it; LoRA r 5, alpha 3 on q_proj + down_proj only",
        cls=(LlamaConfig, LlamaForCausalLM),
        config=dict(num_attention_heads=3, num_key_value_heads=1, intermediate_size=56, rms_norm_eps=1e-6,
                    rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
        lora=dict(r=5, lora_alpha=3, target_modules=["q_proj", "down_proj"]),
        # this small adapter's gradient norms stay below 1: the one LoRA run that clipping leaves alone
        lora_clipped=False,
        hub_layout=True, sharded=True, full_wd=False,
    ),
    dict(
        name="llama3",
        what="LlamaForCausalLM, head_dim 24 != hidden/heads (16), GQA 3:1, tied head, llama3 RoPE scaling "
             "(factor 8, original 32 of 64 positions: all three frequency bands present), rope_theta 5e5, "
             "rms_norm_eps 1e-5; config as transformers 5 writes it (rope_parameters), config_hub.json the "
             "same config in the hub layout; full fine-tuning with weight decay 1 (decay of the tied embedding)",
        cls=(LlamaConfig, LlamaForCausalLM),
        config=dict(num_attention_heads=3, num_key_value_heads=1, head_dim=24, intermediate_size=80,
                    rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling=dict(LLAMA3_ROPE),
                    tie_word_embeddings=True, bos_token_id=94, eos_token_id=95),
        lora=dict(r=4, lora_alpha=8, target_modules=ALL_SEVEN),
        config_hub=True, rope_bites=True, full_wd=True,
    ),
    dict(
        name="qwen2",
        what="Qwen2ForCausalLM, q/k/v biases (non-zero), GQA 4:2 (head_dim 12), untied head, rope_theta 1e6",
        cls=(Qwen2Config, Qwen2ForCausalLM),
        config=dict(num_attention_heads=4, num_key_value_heads=2, intermediate_size=80, rms_norm_eps=1e-6,
                    rope_theta=1000000.0, tie_word_embeddings=False, bos_token_id=93, eos_token_id=93),
        lora=dict(r=4, lora_alpha=8, target_modules=ALL_SEVEN),
        full_wd=False,
    ),
    dict(
        name="qwen3",
        what="Qwen3ForCausalLM, q_norm/k_norm (perturbed), head_dim 24 != hidden/heads (16), GQA 3:1, untied "
             "head, no attention bias, rope_theta 1e6; model_bf16/ a bfloat16 copy",
        cls=(Qwen3Config, Qwen3ForCausalLM),
        config=dict(num_attention_heads=3, num_key_value_heads=1, head_dim=24, intermediate_size=56,
                    rms_norm_eps=1e-6, rope_theta=1000000.0, attention_bias=False, tie_word_embeddings=False,
                    bos_token_id=96, eos_token_id=96),
        lora=dict(r=4, lora_alpha=8, target_modules=ALL_SEVEN),
        bf16=True, full_wd=False,
    ),
]


# ---------------------------------------------------------------------------------------------
# model, data


def make_model(case):
    config_cls, model_cls = case["cls"]
    cfg = config_cls(**COMMON, **copy.deepcopy(case["config"]), attn_implementation="eager")
    model = model_cls(cfg)
    # q_proj/k_proj wider than the init (attention far from uniform); every norm weight (RMSNorm,
    # q_norm, k_norm) and the q/k/v biases perturbed, so that their gradients matter and a missing or
    # misplaced one changes the logits.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.copy_(QK_STD * torch.randn_like(p))
            elif name.endswith(("q_norm.weight", "k_norm.weight")):
                p.copy_(QK_NORM + 0.3 * torch.randn_like(p))
            elif "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model.float().eval()


def make_data(eos):
    """10 token-id records, some with labels that mask a prefix (like a prompt) with -100."""
    ids = torch.tensor([i for i in range(VOCAB) if i != eos])
    records = []
    for k in range(10):
        n = int(torch.randint(4, 31, (1,)).item())
        input_ids = [int(ids[j]) for j in torch.randint(0, len(ids), (n,)).tolist()]
        rec = {"input_ids": input_ids}
        if k % 3 == 0:
            m = max(1, n // 2)
            rec["labels"] = [-100] * m + input_ids[m:]
        records.append(rec)
    return records


def stream_of(records, eos):
    """webtune's TokenStream: tokens and their target values (-100 = not counted), EOS after each record."""
    tokens, labels = [], []
    for r in records:
        tokens.extend(r["input_ids"])
        labels.extend(r.get("labels", r["input_ids"]))
        tokens.append(eos)
        labels.append(eos)
    return tokens, labels


def windows_of(records, eos):
    tokens, labels = stream_of(records, eos)
    n = len(tokens) // (T + 1)
    return [(tokens[i * (T + 1):(i + 1) * (T + 1)], labels[i * (T + 1):(i + 1) * (T + 1)]) for i in range(n)]


def batch(windows, s):
    """Micro-batch s without shuffling: windows (s*B + i) mod n, inputs window[:-1], labels window[1:]."""
    w = [windows[(s * B + i) % len(windows)] for i in range(B)]
    x = torch.tensor([toks[:-1] for toks, _ in w], dtype=torch.long)
    y = torch.tensor([labs[1:] for _, labs in w], dtype=torch.long)
    return x, y


def loss_of(model, x, y):
    """Mean cross-entropy over the counted (label != -100) positions; no HF label shift."""
    logits = model(input_ids=x).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100), logits


# ---------------------------------------------------------------------------------------------
# training


def peft_name(param_name):
    # named_parameters: base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight
    # on disk:          base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
    return param_name.replace(".default.", ".")


def make_lora(base, case):
    cfg = LoraConfig(**case["lora"], lora_dropout=0.0, fan_in_fan_out=False, bias="none", task_type="CAUSAL_LM")
    lmodel = get_peft_model(copy.deepcopy(base), cfg)
    with torch.no_grad():
        for name, p in lmodel.named_parameters():
            if "lora_B" in name:
                p.copy_(LORA_B_INIT_STD * torch.randn_like(p))
    return lmodel


def trained_params(model, kind):
    model.train()
    if kind == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if kind == "lora":
        assert params and all("lora_" in n for n, _ in params), [n for n, _ in params]
    return params


def train(model, params, opt_kw, windows):
    """3 AdamW steps on batches 0, 1, 2 with clipping; returns losses, grad norms (before clipping), grads of step 0."""
    opt = torch.optim.AdamW([p for _, p in params], **opt_kw)
    losses, norms, grads0 = [], [], None
    for s in range(STEPS):
        x, y = batch(windows, s)
        opt.zero_grad(set_to_none=True)
        loss, _ = loss_of(model, x, y)
        loss.backward()
        if s == 0:
            grads0 = {n: p.grad.detach().clone() for n, p in params}
        norm = torch.nn.utils.clip_grad_norm_([p for _, p in params], CLIP)
        opt.step()
        losses.append(loss.item())
        norms.append(norm.item())
    return losses, norms, grads0


def key_of(kind, name):
    return peft_name(name) if kind == "lora" else name


def run_section(section, base, lbase, windows):
    """Trains a fresh copy (of the base model, or of the LoRA model) with the section's optimizer."""
    kind, opt_kw = OPTIMIZERS[section]
    model = copy.deepcopy(lbase if kind == "lora" else base)
    params = trained_params(model, kind)
    losses, norms, grads0 = train(model, params, opt_kw, windows)
    final = {key_of(kind, n): p.detach().clone() for n, p in params}
    return losses, norms, {key_of(kind, n): g for n, g in grads0.items()}, final


def decay_effect(section, base, lbase, windows, final):
    """How far weight decay moved the weights: the same run with weight_decay 0, compared after step 3."""
    kind, opt_kw = OPTIMIZERS[section]
    model = copy.deepcopy(lbase if kind == "lora" else base)
    params = trained_params(model, kind)
    train(model, params, {**opt_kw, "weight_decay": 0.0}, windows)
    diffs = torch.cat([(final[key_of(kind, n)] - p.detach()).abs().reshape(-1) for n, p in params])
    return {"max_abs": diffs.max().item(), "fraction_above_1e-3": (diffs > 1e-3).float().mean().item()}


# ---------------------------------------------------------------------------------------------
# generation


def greedy(model, prompt, eos):
    """model.generate(do_sample=False, KV cache) and the top-1 / top-2 logit margin of every step."""
    x = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                             max_new_tokens=NEW_TOKENS, use_cache=True, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=eos)
    ids = out.sequences[0, len(prompt):].tolist()
    margins = [float((lambda t: t[0] - t[1])(torch.topk(l[0], 2).values)) for l in out.logits]
    # the same tokens without a cache, one full forward per step
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(len(ids)):
            seq.append(int(model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1].argmax()))
    assert seq[len(prompt):] == ids, (seq, ids)
    return ids, margins


def generation(base, merged, eos):
    """Of the prompts whose base and merged generations run 8 tokens without EOS, each step's top-1 logit
    clear of the top-2 by MIN_MARGIN, the one that generates the most distinct tokens (first on ties)."""
    best = None
    for prompt in PROMPTS:
        b_ids, b_m = greedy(base, prompt, eos)
        m_ids, m_m = greedy(merged, prompt, eos)
        if len(b_ids) == len(m_ids) == NEW_TOKENS and min(b_m + m_m) > MIN_MARGIN:
            distinct = len(set(b_ids)) + len(set(m_ids))
            if best is None or distinct > best[0]:
                best = (distinct, {"prompt": prompt, "max_new_tokens": NEW_TOKENS, "base": b_ids,
                                   "base_min_margin": min(b_m), "merged": m_ids, "merged_min_margin": min(m_m)})
    if best is None:
        raise SystemExit("no prompt gives a clear greedy generation; add one to PROMPTS")
    return best[1]


# ---------------------------------------------------------------------------------------------
# files


def hub_layout(config):
    """A transformers 5 config.json dict rewritten the way hub checkpoints (transformers 4) have it:
    rope_theta + rope_scaling (null for default RoPE) instead of rope_parameters, torch_dtype instead of
    dtype, and no head_dim where it is hidden_size / num_attention_heads (Llama 2 / TinyLlama configs)."""
    c = dict(config)
    rope = dict(c.pop("rope_parameters"))
    c["rope_theta"] = rope.pop("rope_theta")
    c["rope_scaling"] = None if rope.get("rope_type", "default") == "default" else rope
    c["torch_dtype"] = c.pop("dtype")
    if c.get("head_dim") == c["hidden_size"] // c["num_attention_heads"]:
        del c["head_dim"]
    return c


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def read_json(path):
    with open(path) as f:
        return json.load(f)


def sorted_adapter_config(adapter_dir):
    # PEFT stores target_modules as a set and writes it in hash order; sort it so the file is
    # byte-for-byte reproducible (as tools/make_fixtures.py does).
    path = os.path.join(adapter_dir, "adapter_config.json")
    written = read_json(path)
    written["target_modules"] = sorted(written["target_modules"])
    with open(path, "w") as f:
        f.write(json.dumps(written, indent=2, sort_keys=True))


def save_sharded(model, path):
    total = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    model.save_pretrained(path, max_shard_size=f"{total // 3 // 1000 + 8}KB")
    shards = [f for f in os.listdir(path) if f.startswith("model-") and f.endswith(".safetensors")]
    assert os.path.exists(os.path.join(path, "model.safetensors.index.json")) and 2 <= len(shards) <= 3, shards


def dir_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def load(path, **kw):
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", dtype=torch.float32, **kw).eval()


# ---------------------------------------------------------------------------------------------


def make_case(case, seed):
    torch.manual_seed(seed)
    out = os.path.join(OUT, case["name"])
    os.makedirs(out)
    base = make_model(case)
    eos = base.config.eos_token_id
    tied = bool(base.config.tie_word_embeddings)
    assert (base.lm_head.weight is base.model.embed_tokens.weight) == tied

    base.save_pretrained(os.path.join(out, "model"))
    written_config = read_json(os.path.join(out, "model", "config.json"))
    if case.get("hub_layout"):
        write_json(os.path.join(out, "model", "config.json"), hub_layout(written_config))
    if case.get("config_hub"):
        write_json(os.path.join(out, "config_hub.json"), hub_layout(written_config))
    if case.get("sharded"):
        save_sharded(base, os.path.join(out, "model_sharded"))
    bf16 = None
    if case.get("bf16"):
        copy.deepcopy(base).to(torch.bfloat16).save_pretrained(os.path.join(out, "model_bf16"))
        # read back as webtune does: bf16 weights converted to f32 on load (converting the model in
        # memory instead would also round the rotary inv_freq buffer to bf16)
        bf16 = load(os.path.join(out, "model_bf16"))

    records = make_data(eos)
    with open(os.path.join(out, "data.jsonl"), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    windows = windows_of(records, eos)
    assert len(windows) >= STEPS * B, len(windows)
    batches = [batch(windows, s) for s in range(STEPS)]
    assert (batches[0][1] == -100).any(), "batch 0 should hold masked labels"
    assert all((y != -100).any() for _, y in batches)

    expected = {}
    x0, y0 = batches[0]
    with torch.no_grad():
        base_loss, expected["base.logits"] = loss_of(base, x0, y0)
        if bf16 is not None:
            expected["bf16.logits"] = bf16(input_ids=x0).logits
    if case.get("rope_bites"):
        # the llama3 scaling changes the numbers at these positions: the same weights with default RoPE differ
        plain_cfg = copy.deepcopy(base.config)
        plain_cfg.rope_parameters = {"rope_type": "default", "rope_theta": base.config.rope_parameters["rope_theta"]}
        with torch.random.fork_rng():  # its throw-away init leaves the case's random stream alone
            plain = type(base)(plain_cfg).eval()
        plain.load_state_dict(base.state_dict())
        with torch.no_grad():
            rope_diff = (plain(input_ids=x0).logits - expected["base.logits"]).abs().max().item()
        assert rope_diff > 1e-2, rope_diff
    with torch.no_grad():
        attn = base(input_ids=x0, output_attentions=True).attentions
    mean_max_attention = float(torch.stack([a.max(-1).values[..., 1:].mean() for a in attn]).mean())

    lbase = make_lora(base, case)
    lbase.save_pretrained(os.path.join(out, "adapter_init"))
    sorted_adapter_config(os.path.join(out, "adapter_init"))
    lbase.eval()
    with torch.no_grad():
        expected["lora.logits"] = lbase(input_ids=x0).logits

    meta_runs = {}
    for section in ["lora", "full", "lora_wd"] + (["full_wd"] if case["full_wd"] else []):
        losses, norms, grads0, final = run_section(section, base, lbase, windows)
        if section in ("lora", "full"):
            clipped = case.get("lora_clipped", True) if section == "lora" else True
            assert (max(norms) > CLIP) == clipped, f"{case['name']} {section}: clipped {clipped}, norms {norms}"
            for n, g in grads0.items():
                expected[f"{section}.grad.{n}"] = g
        for n, p in final.items():
            expected[f"{section}.step3.{n}"] = p
        meta_runs[section] = (losses, norms)
        if section.endswith("_wd"):
            effect = decay_effect(section, base, lbase, windows, final)
            assert effect["max_abs"] > 1e-3 and effect["fraction_above_1e-3"] > 0.1, effect
            meta_runs[section] += (effect,)

    merged = copy.deepcopy(lbase).merge_and_unload().eval()
    gen = generation(base, merged, eos)

    save_file({k: v.detach().float().contiguous() for k, v in expected.items()},
              os.path.join(out, "expected.safetensors"))
    meta = {
        "case": case["name"],
        "what": case["what"],
        "model_type": base.config.model_type,
        "tied_head": tied,
        "eos": eos,
        "B": B,
        "T": T,
        "n_windows": len(windows),
        "batches": [{"input_ids": x.tolist(), "labels": y.tolist(), "counted": int((y != -100).sum())}
                    for x, y in batches],
        "base.loss": base_loss.item(),
        "lora.loss0": meta_runs["lora"][0][0],
        "generation": gen,
        "mean_max_attention": mean_max_attention,
        "lora": {
            **case["lora"],
            "lora_dropout": 0.0,
            "fan_in_fan_out": False,
            "bias": "none",
            "lora_B_init_std": LORA_B_INIT_STD,
            "scaling": case["lora"]["lora_alpha"] / case["lora"]["r"],
        },
        "loss": "mean cross-entropy over the counted label positions (label != -100) of the batch; "
                "logits = model(input_ids).logits (no HF label shift)",
    }
    if case.get("rope_bites"):
        meta["rope_default_vs_llama3_max_logit_diff"] = rope_diff
    for section, run in meta_runs.items():
        kind, opt_kw = OPTIMIZERS[section]
        meta[section] = {
            **meta.get(section, {}),  # "lora": the adapter's settings first
            "trains": kind,
            "optimizer": {"name": "AdamW", **{k: list(v) if isinstance(v, tuple) else v for k, v in opt_kw.items()}},
            "clip_grad_norm": CLIP,
            "steps": STEPS,
        }
        if len(run) == 3:
            meta[section]["decay_effect_vs_weight_decay_0"] = run[2]
        meta[f"{section}.losses"], meta[f"{section}.grad_norms"] = run[0], run[1]
    meta["versions"] = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")

    self_check(case, out, expected, meta, written_config)
    return out


def self_check(case, out, expected, meta, written_config):
    """Everything again from the files on disk: the fixture never disagrees with itself."""
    eos = meta["eos"]
    records = [json.loads(line) for line in open(os.path.join(out, "data.jsonl"))]
    windows = windows_of(records, eos)
    for s, want in enumerate(meta["batches"]):
        x, y = batch(windows, s)
        assert x.tolist() == want["input_ids"] and y.tolist() == want["labels"]
    x0 = torch.tensor(meta["batches"][0]["input_ids"])

    def logits(model):
        with torch.no_grad():
            return model(input_ids=x0).logits

    variants = {"model": "base.logits", "model_sharded": "base.logits", "model_bf16": "bf16.logits"}
    for folder, key in variants.items():
        path = os.path.join(out, folder)
        if os.path.isdir(path):
            got = logits(load(path))
            assert torch.equal(got, expected[key]), (folder, (got - expected[key]).abs().max())
    if case.get("hub_layout"):
        cfg = read_json(os.path.join(out, "model", "config.json"))
        assert "rope_parameters" not in cfg and "rope_theta" in cfg and "rope_scaling" in cfg and "head_dim" not in cfg
        assert load(os.path.join(out, "model")).config.rope_parameters == written_config["rope_parameters"]
    if case.get("config_hub"):
        config_cls = case["cls"][0]
        hub = config_cls.from_json_file(os.path.join(out, "config_hub.json"))
        assert hub.rope_parameters == written_config["rope_parameters"], hub.rope_parameters
        got = logits(load(os.path.join(out, "model"), config=hub))
        assert torch.equal(got, expected["base.logits"])

    base = load(os.path.join(out, "model"))
    lmodel = PeftModel.from_pretrained(copy.deepcopy(base), os.path.join(out, "adapter_init")).eval()
    torch.testing.assert_close(logits(lmodel), expected["lora.logits"], rtol=0, atol=0)
    merged = lmodel.merge_and_unload().eval()
    torch.testing.assert_close(logits(merged), expected["lora.logits"], rtol=1e-5, atol=1e-5)
    gen = meta["generation"]
    assert greedy(base, gen["prompt"], eos)[0] == gen["base"]
    assert greedy(merged, gen["prompt"], eos)[0] == gen["merged"]


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if os.path.isdir(OUT):
        for entry in os.listdir(OUT):  # keep README.md
            if os.path.isdir(os.path.join(OUT, entry)):
                shutil.rmtree(os.path.join(OUT, entry))
    os.makedirs(OUT, exist_ok=True)
    total = 0
    for seed, case in enumerate(CASES):
        path = make_case(case, seed)
        size = dir_size(path)
        total += size
        meta = read_json(os.path.join(path, "expected.json"))
        print(f"{case['name']}: {size / 1e3:.0f} kB; lora losses {meta['lora.losses']} norms {meta['lora.grad_norms']}; "
              f"full losses {meta['full.losses']} norms {meta['full.grad_norms']}; "
              f"attention max {meta['mean_max_attention']:.2f}; generation {meta['generation']}")
    print(f"wrote {OUT} ({total / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
