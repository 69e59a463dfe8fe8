"""Checks a `webtune merge` output against PyTorch + PEFT (not part of cargo test):

    /opt/venv-ref/bin/python tools/check_merge.py MODEL_DIR ADAPTER_DIR MERGED_DIR

1. transformers loads MERGED_DIR (AutoModelForCausalLM.from_pretrained: GPT-2, Llama, Qwen2, Qwen3; and AutoTokenizer when it holds
   tokenizer files);
2. its logits equal PeftModel.from_pretrained(MODEL_DIR, ADAPTER_DIR) on a random batch
   (max |diff| <= 1e-5 * max |logit|);
3. its weights equal PEFT's merge_and_unload() (max |diff| <= 1e-6 * max |weight| per tensor);
4. the merge is not a no-op: its logits differ from MODEL_DIR's by more than 1e-3.
Exits 1 naming the first check that fails.
"""
import os
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    model_dir, adapter_dir, merged_dir = sys.argv[1:]
    torch.manual_seed(0)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter_dir).eval()
    cfg = merged.config
    positions = getattr(cfg, "n_positions", None) or cfg.max_position_embeddings
    ids = torch.randint(0, cfg.vocab_size, (2, min(17, positions)))
    with torch.no_grad():
        want = peft(ids).logits
        got = merged(ids).logits
    diff = (got - want).abs().max().item()
    scale = want.abs().max().item()
    print(f"logits: max |merged - peft| = {diff:.3e} (max |logit| {scale:.3e})")
    ok = diff <= 1e-5 * scale
    with torch.no_grad():
        moved = (got - AutoModelForCausalLM.from_pretrained(model_dir).eval()(ids).logits).abs().max().item()
    print(f"the merge moves the logits by up to {moved:.3e}")
    if moved <= 1e-3:
        print("the merged model equals the base model (a no-op merge)")
        ok = False
    reference = peft.merge_and_unload().state_dict()
    for name, t in merged.state_dict().items():
        r = reference[name]
        d = (t - r).abs().max().item()
        if d > 1e-6 * max(r.abs().max().item(), 1e-30):
            print(f"weight {name}: max |diff| {d:.3e} vs merge_and_unload")
            ok = False
    if any(os.path.exists(os.path.join(merged_dir, f)) for f in ("tokenizer.json", "vocab.json")):
        tok = AutoTokenizer.from_pretrained(merged_dir)
        print("tokenizer loads:", type(tok).__name__, "vocab", len(tok))
    if not ok:
        sys.exit("FAILED")
    print("OK: transformers loads the merged folder and it equals PEFT's adapted model")


if __name__ == "__main__":
    main()
