"""PyTorch + PEFT reference for `webtune bench` (issue 10): the same GPT-2 shapes, random init,
LoRA r 8 / alpha 16 on every linear layer (c_attn, c_proj, c_fc), AdamW, fp32 with TF32 off, steps
timed after warm-up steps; or an f32 matmul (cuBLAS SGEMM on CUDA). Writes one JSON object.

    python tools/bench_torch.py train --preset gpt2 --batch 8 --seq 512 --mode lora --json out.json
    python tools/bench_torch.py matmul --size 4096 --json out.json

Runs on CUDA when torch sees a GPU, else on the CPU (a smoke test with --preset tiny).
"""

import argparse
import json
import time

import torch

PRESETS = {
    # GPT2Config() is GPT-2 124M; tiny is webtune's tiny preset (2 layers, 64 wide, 4 heads, vocab 256)
    "gpt2": {},
    "tiny": {"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 256, "n_positions": 128},
    "small": {"n_layer": 2, "n_embd": 128, "n_head": 4, "vocab_size": 512, "n_positions": 128},
}


def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def train(a):
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    dev = device()
    torch.manual_seed(0)
    cfg = GPT2Config(**PRESETS[a.preset], attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0)
    model = GPT2LMHeadModel(cfg)
    if a.mode == "lora":
        lc = LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"], lora_dropout=0.0, fan_in_fan_out=True)
        model = get_peft_model(model, lc)
    model.to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    tokens = torch.randint(0, cfg.vocab_size, (a.batch, a.seq), device=dev)

    def step():
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(a.warmup):
        step()
    sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        loss = step()
        sync(dev)
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    return {
        "what": "train", "preset": a.preset, "mode": a.mode, "batch": a.batch, "seq": a.seq, "steps": a.steps,
        "warmup": a.warmup, "median_ms": median * 1e3, "tokens_per_s": a.batch * a.seq / median,
        "peak_bytes": torch.cuda.max_memory_allocated() if dev.type == "cuda" else None,
        "trained_parameters": sum(p.numel() for p in params), "final_loss": float(loss),
    }


def matmul(a):
    dev = device()
    n = a.size
    x = torch.randn(n, n, device=dev)
    y = torch.randn(n, n, device=dev)
    for _ in range(3):
        x @ y
    sync(dev)
    times = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        for _ in range(a.reps):
            x @ y
        sync(dev)
        times.append((time.perf_counter() - t0) / a.reps)
    times.sort()
    median = times[len(times) // 2]
    return {"what": "matmul", "size": n, "median_s": median, "gflops": 2 * n**3 / median / 1e9}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("train")
    t.add_argument("--preset", choices=sorted(PRESETS), default="gpt2")
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--seq", type=int, default=512)
    t.add_argument("--mode", choices=["lora", "full"], default="lora")
    t.add_argument("--steps", type=int, default=10)
    t.add_argument("--warmup", type=int, default=3)
    m = sub.add_parser("matmul")
    m.add_argument("--size", type=int, default=4096)
    m.add_argument("--iters", type=int, default=5)
    m.add_argument("--reps", type=int, default=10)
    for s in (t, m):
        s.add_argument("--json", required=True)
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    out = train(a) if a.what == "train" else matmul(a)
    dev = device()
    out["device"] = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    out["torch"] = torch.__version__
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
