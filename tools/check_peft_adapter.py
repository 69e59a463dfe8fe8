"""Checks that PEFT loads an adapter written by `webtune train` unchanged and computes the
same loss as webtune (not part of cargo test; needs torch, transformers, peft):

    /opt/venv-ref/bin/python tools/check_peft_adapter.py MODEL_DIR ADAPTER_DIR DATA.jsonl SEQ WEBTUNE_BIN

Any family transformers' AutoModelForCausalLM loads (GPT-2, Llama, Qwen2, Qwen3):
1. PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(MODEL_DIR), ADAPTER_DIR) loads it
   with no missing or unexpected adapter keys, and every lora_A/lora_B in the model equals the file;
2. the mean cross-entropy over the data's windows (token-id JSONL, the README's training
   semantics: records + eos (config.json's `eos_token_id`, the first of a list), windows of SEQ+1,
   labels from the record's optional `labels` with -100 not counted, the eos label always counted)
   equals `WEBTUNE_BIN eval --model MODEL_DIR --adapter ADAPTER_DIR --data DATA --seq SEQ --json`
   within 1e-5 relative, for the base model and with the adapter;
3. the adapter is not a no-op: its logits differ from the base model's by more than 1e-3.
Exits 1 naming the first check that fails.
"""
import json
import subprocess
import sys

import torch
import torch.nn.functional as F
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def windows(data_path, eos, seq):
    """(inputs [n, seq], labels [n, seq]) as webtune cuts them: ids and labels streams."""
    ids, labels = [], []
    for line in open(data_path):
        if line.strip():
            rec = json.loads(line)
            ids += rec["input_ids"] + [eos]
            labels += rec.get("labels", rec["input_ids"]) + [eos]
    n = len(ids) // (seq + 1)
    ids = torch.tensor(ids[: n * (seq + 1)]).view(n, seq + 1)
    labels = torch.tensor(labels[: n * (seq + 1)]).view(n, seq + 1)
    return ids[:, :-1], labels[:, 1:]


def logits_of(model, w):
    with torch.no_grad():
        return model(w[0]).logits


def mean_ce(logits, w):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[1].reshape(-1), ignore_index=-100).item()


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    model_dir, adapter_dir, data, seq, webtune = sys.argv[1:]
    seq = int(seq)
    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    eos = base.config.eos_token_id
    w = windows(data, eos[0] if isinstance(eos, list) else eos, seq)
    base_logits = logits_of(base, w)
    base_loss = mean_ce(base_logits, w)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter_dir).eval()
    ok = True
    saved = load_file(f"{adapter_dir}/adapter_model.safetensors")
    loaded = {k: v for k, v in peft.state_dict().items() if "lora_" in k}
    for k, v in saved.items():
        key = k.replace(".weight", ".default.weight")
        if key not in loaded or not torch.equal(loaded[key], v):
            print(f"adapter tensor {k} not loaded as written")
            ok = False
    if len(loaded) != len(saved):
        print(f"PEFT built {len(loaded)} LoRA tensors, the file has {len(saved)}")
        ok = False
    lora_logits = logits_of(peft, w)
    lora_loss = mean_ce(lora_logits, w)
    moved = (lora_logits - base_logits).abs().max().item()
    print(f"adapter moves the logits by up to {moved:.3e}")
    if moved <= 1e-3:
        print("the adapter is a no-op (logits equal the base model's)")
        ok = False
    out = subprocess.run(
        [webtune, "eval", "--model", model_dir, "--adapter", adapter_dir, "--data", data, "--seq", str(seq), "--json"],
        check=True, capture_output=True, text=True,
    )
    ours = json.loads(out.stdout)
    for name, want, got in [("base", base_loss, ours["base"]["loss"]), ("adapter", lora_loss, ours["adapter"]["loss"])]:
        print(f"{name}: PyTorch {want:.6f}  webtune {got:.6f}")
        if abs(got - want) > 1e-5 * abs(want):
            ok = False
    if not ok:
        sys.exit("FAILED")
    print("OK: PEFT loads the adapter as written and both compute the same loss")


if __name__ == "__main__":
    main()
