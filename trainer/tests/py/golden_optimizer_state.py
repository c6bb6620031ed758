"""Dumps the AdamW state of ../shared/golden/finetune_base.pth for the Rust test.

The golden fine-tuning checkpoint was made by one official optimizer step over
fc_norm.* and head.* (see golden/README.md, section C). Writes OUT.safetensors with,
for each of the four parameters, `param.<name>`, `exp_avg.<name>`, `exp_avg_sq.<name>`,
and `decay.<name>` (1 if its group had weight decay).
Usage: python golden_optimizer_state.py finetune_base.pth OUT.safetensors
"""
import sys

import torch
from safetensors.torch import save_file

ck = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
opt = ck["optimizer"]
# The official factory builds its groups in named_parameters() order; state keys are the
# positions of the parameters across groups.
order = ["fc_norm.weight", "fc_norm.bias", "head.bias", "head.weight"]
out = {}
idx = 0
for g in opt["param_groups"]:
    assert g["betas"] == (0.9, 0.999) and g["eps"] == 1e-8 and g["lr"] == 5e-4
    for pid in g["params"]:
        name = order[idx]
        idx += 1
        st = opt["state"][pid]
        assert float(st["step"]) == 1.0
        out[f"param.{name}"] = ck["model"][name].clone()
        out[f"exp_avg.{name}"] = st["exp_avg"].clone()
        out[f"exp_avg_sq.{name}"] = st["exp_avg_sq"].clone()
        out[f"decay.{name}"] = torch.tensor([1.0 if g["weight_decay"] > 0 else 0.0])
save_file(out, sys.argv[2])
