"""Reference trajectory of torch.optim.AdamW for the Rust AdamW parity test.

Writes OUT.safetensors with, for a few parameters in two groups (weight decay 0.05 at
lr scale 1 and no decay at lr scale 0.65^3) and STEPS steps with a changing lr:
  init.<p>, grad.<step>.<p>, final.<p>, exp_avg.<p>, exp_avg_sq.<p>, lr (float64 [STEPS]).
Usage: python adamw_reference.py OUT.safetensors
"""
import sys

import torch
from safetensors.torch import save_file

torch.manual_seed(1234)
STEPS = 5
shapes = {"blocks.0.attn.qkv.weight": (12, 4), "head.weight": (3, 4), "blocks.0.norm1.weight": (4,), "head.bias": (3,)}
decay = {"blocks.0.attn.qkv.weight", "head.weight"}
scale = {"blocks.0.attn.qkv.weight": 0.65 ** 3, "head.weight": 1.0, "blocks.0.norm1.weight": 0.65 ** 3, "head.bias": 1.0}
params = {n: torch.nn.Parameter(torch.randn(s)) for n, s in shapes.items()}
out = {f"init.{n}": p.detach().clone() for n, p in params.items()}
groups = [
    {"params": [params[n]], "weight_decay": 0.05 if n in decay else 0.0, "lr_scale": scale[n]}
    for n in shapes
]
opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.98), eps=1e-8, foreach=False)
lrs = [1e-6, 2.5e-4, 5e-4, 4e-4, 1e-4]
for step in range(STEPS):
    for g in opt.param_groups:
        g["lr"] = lrs[step] * g["lr_scale"]
    for n, p in params.items():
        g = torch.randn(shapes[n]) * (10.0 ** (step % 3 - 1))
        out[f"grad.{step}.{n}"] = g.clone()
        p.grad = g
    opt.step()
    opt.zero_grad()
for n, p in params.items():
    out[f"final.{n}"] = p.detach().clone()
    st = opt.state[p]
    out[f"exp_avg.{n}"] = st["exp_avg"].clone()
    out[f"exp_avg_sq.{n}"] = st["exp_avg_sq"].clone()
out["lr"] = torch.tensor(lrs, dtype=torch.float64)
save_file(out, sys.argv[1])
