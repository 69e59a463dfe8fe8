"""Writes tests/fixtures/schedules.json: the learning rate that torch.optim + transformers'
schedulers give each optimizer update, for a few (schedule, lr, warmup, total, min_lr) cases.

    /opt/venv-ref/bin/python tools/make_schedule_fixtures.py

For each case, `lr_by_update[s - 1]` is `optimizer.param_groups[0]["lr"]` read just before
update number s (1-based), with `scheduler.step()` called after every `optimizer.step()` as the
HF Trainer does. LambdaLR starts at lambda(0), so update s runs at base_lr * lambda(s - 1).
"""
import json
import os

import torch
import transformers
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

CASES = [
    # kind, lr, warmup, total, min_lr
    ("constant", 2e-4, 0, 10, 0.0),
    ("constant", 2e-4, 4, 10, 0.0),
    ("linear", 1e-3, 0, 7, 0.0),
    ("linear", 1e-3, 3, 13, 0.0),
    ("linear", 5e-2, 1, 1, 0.0),
    ("cosine", 3e-4, 0, 9, 0.0),
    ("cosine", 3e-4, 5, 23, 0.0),
    ("cosine", 1e-2, 2, 2, 0.0),
    ("cosine", 1e-3, 3, 17, 1e-4),
]


def make(kind, opt, warmup, total, min_lr):
    if kind == "constant":
        return get_constant_schedule_with_warmup(opt, warmup)
    if kind == "linear":
        return get_linear_schedule_with_warmup(opt, warmup, total)
    if min_lr > 0:
        return get_cosine_with_min_lr_schedule_with_warmup(opt, warmup, total, min_lr=min_lr)
    return get_cosine_schedule_with_warmup(opt, warmup, total)


def main():
    out = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__}, "cases": []}
    for kind, lr, warmup, total, min_lr in CASES:
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.AdamW([p], lr=lr)
        sched = make(kind, opt, warmup, total, min_lr)
        lrs = []
        for _ in range(total + 4):  # a few updates past the end too
            lrs.append(opt.param_groups[0]["lr"])
            p.grad = torch.ones(1)
            opt.step()
            sched.step()
        out["cases"].append(
            {"kind": kind, "lr": lr, "warmup": warmup, "total": total, "min_lr": min_lr, "lr_by_update": lrs}
        )
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "schedules.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
