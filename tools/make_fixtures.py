#!/usr/bin/env python3
"""Regenerates tests/fixtures/tiny: a tiny GPT-2 (f32, bf16, f16), a token data set, a PEFT LoRA
adapter, and what PyTorch + PEFT compute from them (logits, gradients, a few AdamW steps),
which the Rust tests compare against.

Run from anywhere with a Python that has torch, transformers, peft, safetensors and numpy:
    /path/to/python tools/make_fixtures.py
Deterministic: the same library versions give the same files.
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
from transformers import GPT2Config, GPT2LMHeadModel
from peft import LoraConfig, get_peft_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "tiny")

B, T = 2, 16
EOS = 96
STEPS = 3
LORA = dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"], lora_dropout=0.0)
LORA_B_INIT_STD = 0.1
LORA_OPT = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
FULL_OPT = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
CLIP = 1.0
# Cases whose weight decay moves the weights far beyond the tests' 1e-4 tolerance (at wd 0.01 above,
# three steps move a full-model weight by at most ~4e-5): wd 1.0 at lr 1e-2, with other betas and eps so
# that those flags are compared with PyTorch too. LoRA from adapter_init, full from the base model.
LORA_WD_OPT = dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=1.0)
FULL_WD_OPT = dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=1.0)
# Another LoRA scale (alpha / r = 0.6, not 2) on a subset of the linears (attn.c_proj and both c_fc).
LORA_R5 = dict(r=5, lora_alpha=3, target_modules=["attn.c_proj", "c_fc"], lora_dropout=0.0)


def make_model():
    cfg = GPT2Config(
        n_layer=2,
        n_head=3,
        n_embd=48,
        vocab_size=97,
        n_positions=64,
        bos_token_id=EOS,
        eos_token_id=EOS,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        summary_first_dropout=0.0,
    )
    cfg._attn_implementation = "eager"
    model = GPT2LMHeadModel(cfg)
    # Perturb LayerNorm parameters and every linear bias, so their gradients are non-trivial.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name or name.startswith("transformer.ln_f"):
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                else:
                    p.copy_(0.05 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.02 * torch.randn_like(p))
    return model.float()


def make_data():
    records = []
    for _ in range(9):
        n = int(torch.randint(5, 41, (1,)).item())
        records.append([int(x) for x in torch.randint(0, 96, (n,)).tolist()])
    return records


def windows_of(records):
    stream = []
    for r in records:
        stream.extend(r)
        stream.append(EOS)
    n = len(stream) // (T + 1)
    return [stream[i * (T + 1):(i + 1) * (T + 1)] for i in range(n)]


def batch(windows, s):
    w = [windows[(s * B + i) % len(windows)] for i in range(B)]
    x = torch.tensor([row[:-1] for row in w], dtype=torch.long)
    y = torch.tensor([row[1:] for row in w], dtype=torch.long)
    return x, y


def loss_of(model, x, y):
    logits = model(input_ids=x).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)), logits


def peft_name(param_name):
    # named_parameters: base_model.model.transformer.h.0.attn.c_attn.lora_A.default.weight
    # on disk:          base_model.model.transformer.h.0.attn.c_attn.lora_A.weight
    return param_name.replace(".default.", ".")


def canonical(param_name):
    return param_name[len("transformer."):] if param_name.startswith("transformer.") else param_name


def train(model, params, opt_kw, windows):
    """3 AdamW steps on batches 0, 1, 2 with clipping; returns losses, grad norms, grads of step 0."""
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


def save_adapter(lmodel, path):
    """PEFT's save_pretrained; target_modules sorted (PEFT writes its set in hash order) so the fixture
    is byte-for-byte reproducible."""
    lmodel.save_pretrained(path)
    cfg_path = os.path.join(path, "adapter_config.json")
    with open(cfg_path) as f:
        written = json.load(f)
    written["target_modules"] = sorted(written["target_modules"])
    with open(cfg_path, "w") as f:
        f.write(json.dumps(written, indent=2, sort_keys=True))


def max_abs_diff(a, b):
    return max((x.detach() - y.detach()).abs().max().item() for x, y in zip(a, b))


def opt_meta(opt):
    return {"name": "AdamW", **{k: list(v) if isinstance(v, tuple) else v for k, v in opt.items()}}


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    # Start clean, but keep tokenizer/ (tools/make_tiny_tokenizer.py writes it).
    os.makedirs(OUT, exist_ok=True)
    for name in os.listdir(OUT):
        path = os.path.join(OUT, name)
        if name != "tokenizer":
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)

    base = make_model()
    base.save_pretrained(os.path.join(OUT, "model"))
    copy.deepcopy(base).to(torch.bfloat16).save_pretrained(os.path.join(OUT, "model_bf16"))
    copy.deepcopy(base).to(torch.float16).save_pretrained(os.path.join(OUT, "model_f16"))

    records = make_data()
    with open(os.path.join(OUT, "data.jsonl"), "w") as f:
        for r in records:
            f.write(json.dumps({"input_ids": r}) + "\n")
    windows = windows_of(records)

    expected = {}
    x0, y0 = batch(windows, 0)
    base.eval()
    with torch.no_grad():
        expected["base.logits"] = base(input_ids=x0).logits

    # LoRA: PEFT's init for A, B = 0.1 * randn so that A gets gradients.
    lora_cfg = LoraConfig(**LORA, fan_in_fan_out=True, bias="none", task_type="CAUSAL_LM")
    lmodel = get_peft_model(copy.deepcopy(base), lora_cfg)
    with torch.no_grad():
        for name, p in lmodel.named_parameters():
            if "lora_B" in name:
                p.copy_(LORA_B_INIT_STD * torch.randn_like(p))
    save_adapter(lmodel, os.path.join(OUT, "adapter_init"))
    lmodel_init = copy.deepcopy(lmodel)  # for the weight-decay case below
    lmodel.eval()
    with torch.no_grad():
        expected["lora.logits"] = lmodel(input_ids=x0).logits
    lmodel.train()
    lparams = [(n, p) for n, p in lmodel.named_parameters() if p.requires_grad]
    assert all("lora_" in n for n, _ in lparams), [n for n, _ in lparams]
    lora_losses, lora_norms, lgrads = train(lmodel, lparams, LORA_OPT, windows)
    for n, g in lgrads.items():
        expected["lora.grad." + peft_name(n)] = g
    for n, p in lparams:
        expected["lora.step3." + peft_name(n)] = p.detach()

    # Full fine-tuning from the base model; tied head (lm_head.weight is wte.weight).
    def full_model():
        m = copy.deepcopy(base)
        m.train()
        for p in m.parameters():
            p.requires_grad_(True)
        ps = list(m.named_parameters())
        assert m.lm_head.weight is m.transformer.wte.weight
        assert not any(n.startswith("lm_head") for n, _ in ps)
        return m, ps

    fmodel, fparams = full_model()
    full_losses, full_norms, fgrads = train(fmodel, fparams, FULL_OPT, windows)
    for n, g in fgrads.items():
        expected["full.grad." + canonical(n)] = g
    for n, p in fparams:
        expected["full.step3." + canonical(n)] = p.detach()

    # Visible weight decay (LoRA from adapter_init, and full). The same run without decay measures how far
    # the decay alone moves the weights (recorded as decay_effect; the tests require it far above 1e-4).
    def lora_from_init():
        m = copy.deepcopy(lmodel_init)
        m.train()
        return m, [(n, p) for n, p in m.named_parameters() if p.requires_grad]

    wd = {}
    for section, make, opt, name in [
        ("lora_wd", lora_from_init, LORA_WD_OPT, peft_name),
        ("full_wd", full_model, FULL_WD_OPT, canonical),
    ]:
        m, ps = make()
        losses, norms, _ = train(m, ps, opt, windows)
        m0, ps0 = make()
        train(m0, ps0, {**opt, "weight_decay": 0.0}, windows)
        for n, p in ps:
            expected[f"{section}.step3." + name(n)] = p.detach()
        wd[section] = (losses, norms, max_abs_diff([p for _, p in ps], [p for _, p in ps0]))

    # alpha / r = 0.6 on a subset of the linears: PEFT init for A, B = 0.1 * randn, as adapter_init.
    r5_cfg = LoraConfig(**LORA_R5, fan_in_fan_out=True, bias="none", task_type="CAUSAL_LM")
    r5model = get_peft_model(copy.deepcopy(base), r5_cfg)
    with torch.no_grad():
        for name_, p in r5model.named_parameters():
            if "lora_B" in name_:
                p.copy_(LORA_B_INIT_STD * torch.randn_like(p))
    save_adapter(r5model, os.path.join(OUT, "adapter_r5"))
    r5model.eval()
    with torch.no_grad():
        expected["lora_r5.logits"] = r5model(input_ids=x0).logits
    r5model.train()
    r5params = [(n, p) for n, p in r5model.named_parameters() if p.requires_grad]
    assert len(r5params) == 2 * 2 * 2, [n for n, _ in r5params]  # A, B x (attn.c_proj, mlp.c_fc) x 2 layers
    r5_losses, r5_norms, r5grads = train(r5model, r5params, LORA_OPT, windows)
    for n, g in r5grads.items():
        expected["lora_r5.grad." + peft_name(n)] = g
    for n, p in r5params:
        expected["lora_r5.step3." + peft_name(n)] = p.detach()

    save_file({k: v.detach().float().contiguous() for k, v in expected.items()},
              os.path.join(OUT, "expected.safetensors"))
    meta = {
        "B": B,
        "T": T,
        "eos": EOS,
        "n_windows": len(windows),
        "batches": [
            {"input_ids": batch(windows, s)[0].tolist(), "labels": batch(windows, s)[1].tolist()}
            for s in range(STEPS)
        ],
        "lora": {
            **{k: v for k, v in LORA.items()},
            "fan_in_fan_out": True,
            "bias": "none",
            "lora_B_init_std": LORA_B_INIT_STD,
            "optimizer": {"name": "AdamW", **{k: list(v) if isinstance(v, tuple) else v for k, v in LORA_OPT.items()}},
            "clip_grad_norm": CLIP,
            "steps": STEPS,
        },
        "full": {
            "optimizer": {"name": "AdamW", **{k: list(v) if isinstance(v, tuple) else v for k, v in FULL_OPT.items()}},
            "clip_grad_norm": CLIP,
            "steps": STEPS,
            "tied_head": True,
        },
        "lora.loss0": lora_losses[0],
        "lora.losses": lora_losses,
        "lora.grad_norms": lora_norms,
        "full.losses": full_losses,
        "full.grad_norms": full_norms,
        "lora_wd": {
            "init": "adapter_init",
            "optimizer": opt_meta(LORA_WD_OPT),
            "clip_grad_norm": CLIP,
            "steps": STEPS,
            "decay_effect": wd["lora_wd"][2],
        },
        "lora_wd.losses": wd["lora_wd"][0],
        "lora_wd.grad_norms": wd["lora_wd"][1],
        "full_wd": {
            "optimizer": opt_meta(FULL_WD_OPT),
            "clip_grad_norm": CLIP,
            "steps": STEPS,
            "tied_head": True,
            "decay_effect": wd["full_wd"][2],
        },
        "full_wd.losses": wd["full_wd"][0],
        "full_wd.grad_norms": wd["full_wd"][1],
        "lora_r5": {
            **LORA_R5,
            "init": "adapter_r5",
            "fan_in_fan_out": True,
            "bias": "none",
            "lora_B_init_std": LORA_B_INIT_STD,
            "optimizer": opt_meta(LORA_OPT),
            "clip_grad_norm": CLIP,
            "steps": STEPS,
        },
        "lora_r5.loss0": r5_losses[0],
        "lora_r5.losses": r5_losses,
        "lora_r5.grad_norms": r5_norms,
        "loss": "mean cross-entropy over all B*T label positions; logits = model(input_ids).logits (no HF label shift)",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "safetensors": safetensors.__version__,
            "numpy": np.__version__,
        },
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")

    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT} ({total / 1e6:.2f} MB); lora losses {lora_losses}, full losses {full_losses}")
    print(f"weight decay alone moves: LoRA {wd['lora_wd'][2]:.3e}, full {wd['full_wd'][2]:.3e}")


if __name__ == "__main__":
    main()
