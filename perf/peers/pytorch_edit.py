#!/usr/bin/env python3
"""Reference-style end-to-end HPRD edit in PyTorch, the peer of perf/EditBench (ModelEditor).

    /usr/bin/python3 perf/peers/pytorch_edit.py CASE_DIR [--threads 2] [--repeats 3]

CASE_DIR is written by `EditBench --write-case CASE_DIR`: vit.safetensors and hypernet.safetensors (the same
weights wte edits), images.f32 (preprocessed pixels), case.json (configs, label, lr, max_steps, stop_loss, keep).

Each timed edit, like the reference (github.com/hustyyq/Where-to-Edit, HPRD.edit in editing/hprdmask.py):
  1. the original model's final [CLS] feature of the edit images, the mask hypernetwork on it, the mean over the
     images and ONE global top-k (k = floor(keep * gates), as wte, ties to the lower index);
  2. steps until the stop rule or max_steps: full forward, cross-entropy, the argmax check; stop when every image is
     right and the mean CE <= stop_loss; else loss.backward() with every parameter requiring grad (as higher's
     monkeypatched model does in the reference: weight gradients for all 12 blocks, the embeddings and the head),
     grad *= mask on the edited fc1 rows / fc2 columns, RMSprop(lr, alpha 0.99, eps 1e-8) on the edited matrices,
     zero_grad on those.
The weights are restored before each edit. The first edit is an untimed one-step warm-up. One JSON line per
timed edit (wall and process CPU time).
"""

import argparse
import json
import math
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {info['dtype']}, expected F32")
        a, b = info["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[a:b], dtype="<f4").copy().reshape(info["shape"]))
    return out, header.get("__metadata__", {})


class Attention(nn.Module):
    def __init__(self, dim, heads, qkv_bias):
        super().__init__()
        self.heads, self.hd = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, D = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, self.hd).permute(2, 0, 3, 1, 4).unbind(0)
        a = ((q * self.hd ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(B, N, D))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden, qkv_bias, eps):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
        self.attn, self.mlp = Attention(dim, heads, qkv_bias), Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, chans, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class ViT(nn.Module):
    """timm's VisionTransformer (pre-norm, [CLS] pooling) with timm's parameter names."""

    def __init__(self, c):
        super().__init__()
        d, tokens = c["embed_dim"], (c["image_size"] // c["patch_size"]) ** 2 + 1
        self.patch_embed = PatchEmbed(c["in_chans"], d, c["patch_size"])
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, d))
        self.blocks = nn.ModuleList([Block(d, c["num_heads"], c["mlp_hidden"], c["qkv_bias"], c["ln_eps"]) for _ in range(c["depth"])])
        self.norm = nn.LayerNorm(d, eps=c["ln_eps"])
        self.head = nn.Linear(d, c["num_classes"])

    def features(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 0]

    def forward(self, x):
        return self.head(self.features(x))


class Hypernet(nn.Module):
    """wte's mask hypernetwork: R query tokens + the [CLS] feature -> blocks -> head r on token r -> clamp(sigmoid(a*z))."""

    def __init__(self, c):
        super().__init__()
        d = c["embed_dim"]
        self.c = c
        self.query_tokens = nn.Parameter(torch.zeros(1, c["units"], d))
        self.blocks = nn.ModuleList([Block(d, c["num_heads"], c["mlp_hidden"], True, c["ln_eps"]) for _ in range(c["depth"])])
        self.heads = nn.ModuleList([nn.Linear(d, c["unit_size"]) for _ in range(c["units"])])

    def forward(self, cls):
        x = torch.cat([self.query_tokens.expand(cls.shape[0], -1, -1), cls[:, None, :]], dim=1)
        for blk in self.blocks:
            x = blk(x)
        z = torch.stack([h(x[:, r]) for r, h in enumerate(self.heads)], dim=1)
        lo = self.c["clamp"]
        return torch.sigmoid(self.c["amplify"] * z).clamp(lo, 1 - lo)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case_dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_interop_threads(1)
    torch.set_num_threads(args.threads)

    case = json.load(open(f"{args.case_dir}/case.json"))
    vc, hc = case["vit"], case["hypernet"]
    model = ViT(vc)
    weights, _ = read_safetensors(f"{args.case_dir}/vit.safetensors")
    model.load_state_dict(weights, strict=True)
    net = Hypernet(hc)
    hweights, _ = read_safetensors(f"{args.case_dir}/hypernet.safetensors")
    net.load_state_dict(hweights, strict=True)
    net.eval()
    n = case["images"]
    x = torch.from_numpy(np.fromfile(f"{args.case_dir}/images.f32", dtype="<f4").reshape(n, vc["in_chans"], vc["image_size"], vc["image_size"]).copy())
    y = torch.tensor(case["labels"], dtype=torch.long)
    blocks, keep, lr = case["edit_blocks"], case["keep"], case["lr"]
    original = {k: v.clone() for k, v in model.state_dict().items()}

    for run in range(args.repeats + 1):
        model.load_state_dict(original)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
            p.grad = None
        c0, t0 = time.process_time(), time.perf_counter()
        # 1. WHERE: hypernetwork scores on the original model's [CLS] feature, global top-k.
        with torch.no_grad():
            scores = net(model.features(x)).mean(0).reshape(-1)
        k = max(1, int(math.floor(keep * scores.numel() + 1e-9)))
        order = sorted(range(scores.numel()), key=lambda i: (-float(scores[i]), i))[:k]
        gates = torch.zeros(scores.numel())
        gates[order] = 1.0
        gates = gates.reshape(hc["units"], hc["unit_size"])
        params, masks = [], []
        for j, b in enumerate(blocks):
            mlp = model.blocks[b].mlp
            params += [mlp.fc1.weight, mlp.fc2.weight]
            masks += [gates[2 * j][:, None], gates[2 * j + 1][None, :]]
        opt = torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=1e-8)
        t_mask = time.perf_counter()
        # 2. HOW: masked RMSprop until the stop rule.
        steps, first_loss, loss_v = 0, None, None
        while True:
            out = model(x)
            loss = F.cross_entropy(out, y)
            loss_v = float(loss)
            if first_loss is None:
                first_loss = loss_v
            done = bool(out.data.max(1)[1].eq(y).all())
            # run 0 is an untimed one-step warm-up
            if (done and loss_v <= case["stop_loss"]) or steps >= (case["max_steps"] if run > 0 else 1):
                break
            loss.backward()
            for p, m in zip(params, masks):
                p.grad *= m
            opt.step()
            opt.zero_grad(set_to_none=True)
            steps += 1
        t1, c1 = time.perf_counter(), time.process_time()
        if run == 0:
            continue
        print(json.dumps({
            "impl": "pytorch-" + torch.__version__, "case": case["case"], "threads": args.threads, "run": run,
            "total_ms": round(1000 * (t1 - t0), 2), "cpu_ms": round(1000 * (c1 - c0), 1), "mask_ms": round(1000 * (t_mask - t0), 2), "steps": steps,
            "success": done, "initial_loss": first_loss, "final_loss": loss_v,
            "ms_per_step": round(1000 * (t1 - t_mask) / max(1, steps), 2), "kept_gates": k,
        }), flush=True)


if __name__ == "__main__":
    sys.exit(main())
