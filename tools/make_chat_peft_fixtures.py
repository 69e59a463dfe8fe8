#!/usr/bin/env python3
"""Regenerates tests/fixtures/chat/peft/: LoRA training on chat records, PyTorch + PEFT, for
tests/chat.rs to compare `webtune train` with.

    /opt/venv-ref/bin/python tools/make_chat_peft_fixtures.py

Three chat records (records.jsonl) are rendered by transformers' apply_chat_template with
tests/fixtures/chat/tiny_marked.jinja (generation markers) and the character-level tokenizer of
tests/fixtures/tiny/tokenizer; the labels are the token where transformers' assistant mask is 1,
else -100. The tiny Llama of tests/fixtures/llama/llama (model/, adapter_init/) is then trained
for 2 steps as tools/make_llama_fixtures.py trains it (its stream, windows, batches, loss and
AdamW + clipping with the "lora" settings; no shuffle, B 2, T 16). expected.json holds the
records' ids and labels, the losses and gradient norms; adapter_step2.safetensors the trained
LoRA tensors under PEFT's names.
"""

import copy
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
from peft import PeftModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_llama_fixtures as L  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "chat", "peft")
CASE = os.path.join(ROOT, "tests", "fixtures", "llama", "llama")
STEPS = 2

RECORDS = [
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is 2+2?"},
                  {"role": "assistant", "content": "it is 4."}]},
    {"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": " Hello! "},
                  {"role": "user", "content": "a colour?"}, {"role": "assistant", "content": "Blue, or red."}]},
    {"prompt": [{"role": "user", "content": "say yes"}], "completion": [{"role": "assistant", "content": "yes (y)"}]},
]


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(ROOT, "tests", "fixtures", "tiny", "tokenizer", "tokenizer.json"))
    with open(os.path.join(ROOT, "tests", "fixtures", "chat", "tiny_marked.jinja")) as f:
        template = f.read()
    records = []
    for r in RECORDS:
        msgs = r["messages"] if "messages" in r else r["prompt"] + r["completion"]
        out = tok.apply_chat_template(msgs, chat_template=template, tokenize=True, return_dict=True,
                                      return_assistant_tokens_mask=True)
        ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
        if "prompt" in r:
            text = tok.apply_chat_template(msgs, chat_template=template, tokenize=False)
            p = len(tok.apply_chat_template(r["prompt"], chat_template=template, tokenize=False, add_generation_prompt=True))
            lo = tok(text, add_special_tokens=False).char_to_token(p)
            mask = [m if k >= lo else 0 for k, m in enumerate(mask)]
        assert sum(mask) > 0
        records.append({"input_ids": ids, "labels": [t if m else -100 for t, m in zip(ids, mask)]})
    with open(os.path.join(OUT, "records.jsonl"), "w") as f:
        for r in RECORDS:
            f.write(json.dumps(r) + "\n")

    expected_llama = L.read_json(os.path.join(CASE, "expected.json"))
    eos = expected_llama["eos"] if "eos" in expected_llama else 2
    windows = L.windows_of(records, eos)
    base = AutoModelForCausalLM.from_pretrained(os.path.join(CASE, "model"), torch_dtype=torch.float32)
    lmodel = PeftModel.from_pretrained(copy.deepcopy(base), os.path.join(CASE, "adapter_init"), is_trainable=True)
    params = L.trained_params(lmodel, "lora")
    kind, opt_kw = L.OPTIMIZERS["lora"]
    opt = torch.optim.AdamW([p for _, p in params], **opt_kw)
    losses, norms = [], []
    for s in range(STEPS):
        x, y = L.batch(windows, s)
        opt.zero_grad(set_to_none=True)
        loss, _ = L.loss_of(lmodel, x, y)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_([p for _, p in params], L.CLIP)
        opt.step()
        losses.append(loss.item())
        norms.append(norm.item())
    save_file({L.peft_name(n): p.detach().contiguous() for n, p in params}, os.path.join(OUT, "adapter_step2.safetensors"))
    expected = {"records": records, "eos": eos, "windows": len(windows), "B": L.B, "T": L.T, "steps": STEPS,
                "optimizer": opt_kw, "clip_grad_norm": L.CLIP, "losses": losses, "grad_norms": norms}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print("windows", len(windows), "losses", losses, "norms", norms)


if __name__ == "__main__":
    main()
