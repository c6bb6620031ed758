"""PyTorch side of the training-step benchmark (benches/train_step.rs runs it).

A functional LaBraM-Base written from ../shared/spec/LABRAM.md (not the official code):
TemporalConv patch embedding, electrode and time embeddings, pre-norm blocks with
per-head q/k LayerNorm and layer scale, drop path, mean pooling + fc_norm + head; the
masked-EEG-modeling student with mask token, final norm and the 8192-way lm_head run
on the mask and on its complement; the VQ-NSP encoder (qkv bias, no q/k norm, no layer
scale) + task layer + nearest normalised code for the targets. One training step is
what the official engines do: (codes under no_grad,) forward, loss, backward, clip
(pretraining), AdamW step with the official parameter groups.

Prints one JSON object: {"torch": version, "threads": n, "cases": {name: {...}}}.
Usage: python train_step_torch.py [--threads 2] [--batch 64] [--steps 3] [--warmup 1]
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

EMBED, DEPTH, HEADS, CONV = 200, 12, 10, 8
VOCAB, CODE_DIM = 8192, 64


def param(shape, std=0.02):
    return torch.nn.Parameter(torch.randn(shape) * std)


def block_params(prefix, qkv_bias, qk_norm, layer_scale):
    d = EMBED
    p = {
        f"{prefix}.norm1.weight": torch.nn.Parameter(torch.ones(d)),
        f"{prefix}.norm1.bias": torch.nn.Parameter(torch.zeros(d)),
        f"{prefix}.attn.qkv.weight": param((3 * d, d)),
        f"{prefix}.attn.proj.weight": param((d, d)),
        f"{prefix}.attn.proj.bias": torch.nn.Parameter(torch.zeros(d)),
        f"{prefix}.norm2.weight": torch.nn.Parameter(torch.ones(d)),
        f"{prefix}.norm2.bias": torch.nn.Parameter(torch.zeros(d)),
        f"{prefix}.mlp.fc1.weight": param((4 * d, d)),
        f"{prefix}.mlp.fc1.bias": torch.nn.Parameter(torch.zeros(4 * d)),
        f"{prefix}.mlp.fc2.weight": param((d, 4 * d)),
        f"{prefix}.mlp.fc2.bias": torch.nn.Parameter(torch.zeros(d)),
    }
    if qkv_bias:
        p[f"{prefix}.attn.q_bias"] = torch.nn.Parameter(torch.zeros(d))
        p[f"{prefix}.attn.v_bias"] = torch.nn.Parameter(torch.zeros(d))
    if qk_norm:
        hd = d // HEADS
        for n in ("q_norm", "k_norm"):
            p[f"{prefix}.attn.{n}.weight"] = torch.nn.Parameter(torch.ones(hd))
            p[f"{prefix}.attn.{n}.bias"] = torch.nn.Parameter(torch.zeros(hd))
    if layer_scale:
        p[f"{prefix}.gamma_1"] = torch.nn.Parameter(torch.full((d,), 0.1))
        p[f"{prefix}.gamma_2"] = torch.nn.Parameter(torch.full((d,), 0.1))
    return p


def backbone_params(prefix="", qkv_bias=False, qk_norm=True, layer_scale=True, depth=DEPTH):
    pre = f"{prefix}." if prefix else ""
    p = {
        f"{pre}cls_token": param((1, 1, EMBED)),
        f"{pre}pos_embed": param((1, 129, EMBED)),
        f"{pre}time_embed": param((1, 16, EMBED)),
        f"{pre}patch_embed.conv1.weight": param((CONV, 1, 1, 15), 0.1),
        f"{pre}patch_embed.conv1.bias": torch.nn.Parameter(torch.zeros(CONV)),
    }
    for i in (2, 3):
        p[f"{pre}patch_embed.conv{i}.weight"] = param((CONV, CONV, 1, 3), 0.1)
        p[f"{pre}patch_embed.conv{i}.bias"] = torch.nn.Parameter(torch.zeros(CONV))
    for i in (1, 2, 3):
        p[f"{pre}patch_embed.norm{i}.weight"] = torch.nn.Parameter(torch.ones(CONV))
        p[f"{pre}patch_embed.norm{i}.bias"] = torch.nn.Parameter(torch.zeros(CONV))
    for i in range(depth):
        p.update(block_params(f"{pre}blocks.{i}", qkv_bias, qk_norm, layer_scale))
    return p


def drop_path(x, rate, training):
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


def patch_embed(p, pre, x):
    b, n, a, t = x.shape
    h = x.reshape(b, 1, n * a, t)
    h = F.gelu(F.group_norm(F.conv2d(h, p[f"{pre}patch_embed.conv1.weight"], p[f"{pre}patch_embed.conv1.bias"], stride=(1, 8), padding=(0, 7)), 4, p[f"{pre}patch_embed.norm1.weight"], p[f"{pre}patch_embed.norm1.bias"]))
    for i in (2, 3):
        h = F.gelu(F.group_norm(F.conv2d(h, p[f"{pre}patch_embed.conv{i}.weight"], p[f"{pre}patch_embed.conv{i}.bias"], padding=(0, 1)), 4, p[f"{pre}patch_embed.norm{i}.weight"], p[f"{pre}patch_embed.norm{i}.bias"]))
    # B C NA T -> B NA (T C)
    return h.permute(0, 2, 3, 1).reshape(b, n * a, -1)


def block(p, pre, x, dpr, training):
    d, hd = EMBED, EMBED // HEADS
    b, t, _ = x.shape
    h = F.layer_norm(x, (d,), p[f"{pre}.norm1.weight"], p[f"{pre}.norm1.bias"], 1e-6)
    bias = None
    if f"{pre}.attn.q_bias" in p:
        bias = torch.cat([p[f"{pre}.attn.q_bias"], torch.zeros_like(p[f"{pre}.attn.v_bias"]), p[f"{pre}.attn.v_bias"]])
    qkv = F.linear(h, p[f"{pre}.attn.qkv.weight"], bias).reshape(b, t, 3, HEADS, hd).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    if f"{pre}.attn.q_norm.weight" in p:
        q = F.layer_norm(q, (hd,), p[f"{pre}.attn.q_norm.weight"], p[f"{pre}.attn.q_norm.bias"], 1e-6)
        k = F.layer_norm(k, (hd,), p[f"{pre}.attn.k_norm.weight"], p[f"{pre}.attn.k_norm.bias"], 1e-6)
    q = q * hd ** -0.5
    attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
    h = (attn @ v).transpose(1, 2).reshape(b, t, d)
    h = F.linear(h, p[f"{pre}.attn.proj.weight"], p[f"{pre}.attn.proj.bias"])
    if f"{pre}.gamma_1" in p:
        h = p[f"{pre}.gamma_1"] * h
    x = x + drop_path(h, dpr, training)
    h = F.layer_norm(x, (d,), p[f"{pre}.norm2.weight"], p[f"{pre}.norm2.bias"], 1e-6)
    h = F.linear(F.gelu(F.linear(h, p[f"{pre}.mlp.fc1.weight"], p[f"{pre}.mlp.fc1.bias"])), p[f"{pre}.mlp.fc2.weight"], p[f"{pre}.mlp.fc2.bias"])
    if f"{pre}.gamma_2" in p:
        h = p[f"{pre}.gamma_2"] * h
    return x + drop_path(h, dpr, training)


def embed_tokens(p, pre, x, input_chans, mask=None, cls_from_first_electrode=False):
    b, n, a, _ = x.shape
    h = patch_embed(p, pre, x)
    if mask is not None:
        w = mask.unsqueeze(-1).type_as(h)
        h = h * (1 - w) + p[f"{pre}mask_token"] * w
    pos = p[f"{pre}pos_embed"][:, input_chans]  # [1, N+1, D]
    patch_pos = pos[:, 1:].unsqueeze(2).expand(1, n, a, EMBED).reshape(1, n * a, EMBED)
    cls_pos = patch_pos[:, :1] if cls_from_first_electrode else pos[:, :1]
    cls = p[f"{pre}cls_token"].expand(b, -1, -1) + cls_pos
    time = p[f"{pre}time_embed"][:, :a].unsqueeze(1).expand(1, n, a, EMBED).reshape(1, n * a, EMBED)
    return torch.cat([cls, h + patch_pos + time], dim=1)


def run_blocks(p, pre, x, depth, drop_path_rate, training):
    for i in range(depth):
        dpr = drop_path_rate * i / max(depth - 1, 1)
        x = block(p, f"{pre}blocks.{i}", x, dpr, training)
    return x


def finetune_forward(p, x, input_chans, training):
    h = run_blocks(p, "", embed_tokens(p, "", x, input_chans), DEPTH, 0.1, training)
    h = F.layer_norm(h[:, 1:].mean(1), (EMBED,), p["fc_norm.weight"], p["fc_norm.bias"], 1e-6)
    return F.linear(h, p["head.weight"], p["head.bias"])


def mem_forward(p, x, input_chans, mask):
    outs = []
    for m in (mask, ~mask):
        h = embed_tokens(p, "student.", x, input_chans, m, cls_from_first_electrode=True)
        h = run_blocks(p, "student.", h, DEPTH, 0.0, True)
        h = F.layer_norm(h, (EMBED,), p["student.norm.weight"], p["student.norm.bias"], 1e-6)
        outs.append(F.linear(h[:, 1:][m], p["lm_head.weight"], p["lm_head.bias"]))
    return outs


@torch.no_grad()
def tokenizer_codes(t, x, input_chans):
    h = run_blocks(t, "encoder.", embed_tokens(t, "encoder.", x, input_chans), DEPTH, 0.0, False)
    h = F.layer_norm(h[:, 1:], (EMBED,), t["encoder.fc_norm.weight"], t["encoder.fc_norm.bias"], 1e-6)
    z = F.linear(torch.tanh(F.linear(h, t["encode_task_layer.0.weight"], t["encode_task_layer.0.bias"])), t["encode_task_layer.2.weight"], t["encode_task_layer.2.bias"])
    z = F.normalize(z, dim=-1)
    e = t["quantize.embedding.weight"]
    d = z.pow(2).sum(-1, keepdim=True) + e.pow(2).sum(-1) - 2 * z @ e.t()
    return d.argmin(-1)


def layer_id(name, num_layers):
    if name in ("cls_token", "mask_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers + 1


def optimizer(p, lr, betas, wd, layer_decay, skip):
    groups = {}
    for name, t in p.items():
        no_decay = t.ndim <= 1 or name.endswith(".bias") or name in skip
        scale = layer_decay ** (DEPTH + 1 - layer_id(name, DEPTH)) if layer_decay < 1 else 1.0
        key = (no_decay, scale)
        groups.setdefault(key, {"params": [], "weight_decay": 0.0 if no_decay else wd, "lr": lr * scale})
        groups[key]["params"].append(t)
    return torch.optim.AdamW(list(groups.values()), lr=lr, betas=betas, eps=1e-8)


def eeg(batch, n, a, gen):
    return torch.randn(batch, n, a * 200, generator=gen) * 30.0


def time_steps(step, warmup, steps):
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--cases", default="finetune-19x4,finetune-23x10,pretrain-19x8")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--profile", action="store_true", help="time the phases of one more fine-tuning step")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    gen = torch.Generator().manual_seed(5)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(dev), "cases": {}}
    for case in args.cases.split(","):
        kind, shape = case.split("-")
        n, a = (int(v) for v in shape.split("x"))
        input_chans = torch.arange(n + 1, device=dev)  # 0 = cls, then electrodes 1..n
        x = (eeg(args.batch, n, a, gen).to(dev) / 100).reshape(args.batch, n, a, 200)
        if kind == "finetune":
            p = backbone_params()
            p.update({"fc_norm.weight": torch.nn.Parameter(torch.ones(EMBED)), "fc_norm.bias": torch.nn.Parameter(torch.zeros(EMBED)), "head.weight": param((2, EMBED)), "head.bias": torch.nn.Parameter(torch.zeros(2))})
            p = {k: torch.nn.Parameter(v.detach().to(dev)) for k, v in p.items()}
            opt = optimizer(p, 5e-4, (0.9, 0.999), 0.05, 0.65, {"pos_embed", "cls_token", "time_embed"})
            y = torch.randint(0, 2, (args.batch,), generator=gen).to(dev)

            def step(phases=None):
                t = time.perf_counter()
                opt.zero_grad()
                logits = finetune_forward(p, x, input_chans, True)
                logp = logits.log_softmax(-1)
                loss = (0.9 * -logp.gather(-1, y[:, None]).squeeze(-1) + 0.1 * -logp.mean(-1)).mean()
                loss.item()
                t1 = time.perf_counter()
                loss.backward()
                t2 = time.perf_counter()
                opt.step()
                sync()
                if phases is not None:
                    phases.extend([t1 - t, t2 - t1, time.perf_counter() - t2])
        else:
            p = backbone_params("student")
            p.update({"student.mask_token": param((1, 1, EMBED)), "student.norm.weight": torch.nn.Parameter(torch.ones(EMBED)), "student.norm.bias": torch.nn.Parameter(torch.zeros(EMBED)), "lm_head.weight": param((VOCAB, EMBED)), "lm_head.bias": torch.nn.Parameter(torch.zeros(VOCAB))})
            p = {k: torch.nn.Parameter(v.detach().to(dev)) for k, v in p.items()}
            t = backbone_params("encoder", qkv_bias=True, qk_norm=False, layer_scale=False)
            t.update({"encoder.fc_norm.weight": torch.ones(EMBED), "encoder.fc_norm.bias": torch.zeros(EMBED), "encode_task_layer.0.weight": torch.randn(EMBED, EMBED) * 0.02, "encode_task_layer.0.bias": torch.zeros(EMBED), "encode_task_layer.2.weight": torch.randn(CODE_DIM, EMBED) * 0.02, "encode_task_layer.2.bias": torch.zeros(CODE_DIM), "quantize.embedding.weight": F.normalize(torch.randn(VOCAB, CODE_DIM), dim=-1)})
            t = {k: v.detach().to(dev) for k, v in t.items()}
            opt = optimizer(p, 5e-4, (0.9, 0.98), 0.05, 1.0, {"student.pos_embed", "student.cls_token", "student.time_embed"})
            L = n * a

            def step():
                opt.zero_grad()
                codes = tokenizer_codes(t, x, input_chans)
                noise = torch.rand(args.batch, L, device=dev)
                keep = noise.argsort(1)[:, : int(L * 0.5)]
                mask = torch.ones(args.batch, L, dtype=torch.bool, device=dev)
                mask.scatter_(1, keep, False)
                x_rec, x_rec_sym = mem_forward(p, x, input_chans, mask)
                loss = F.cross_entropy(x_rec, codes[mask]) + F.cross_entropy(x_rec_sym, codes[~mask])
                loss.backward()
                torch.nn.utils.clip_grad_norm_([v for v in p.values() if v.grad is not None], 3.0)
                opt.step()
                loss.item()
                sync()
        sec = time_steps(step, args.warmup, args.steps)
        out["cases"][case] = {"seconds_per_step": sec, "samples_per_s": args.batch / sec, "batch": args.batch, "steps": args.steps}
        if args.profile and kind == "finetune":
            phases = []
            step(phases)
            out["cases"][case]["phases_s"] = {"forward_loss": phases[0], "backward": phases[1], "adamw": phases[2]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
