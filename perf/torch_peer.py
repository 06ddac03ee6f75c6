#!/usr/bin/env python3
"""PyTorch CPU timing peer for `wte bench` (same shapes, fp32, random weights).

Usage (Debian python with PyTorch 1.13 CPU):

    /usr/bin/python3 perf/torch_peer.py --model vit_tiny_patch16_224 --batch 1 --threads 2
    /usr/bin/python3 perf/torch_peer.py --model vit_small_patch16_224,vit_base_patch16_224 \
        --batch 1,8 --threads 2 --warmup 2 --iters 3 --min-time 5

Options:
  --model    one or more (comma separated) of vit_tiny_patch16_224 (D 192, 3 heads),
             vit_small_patch16_224 (384, 6), vit_base_patch16_224 (768, 12). All are
             224 px, patch 16, depth 12, MLP 4*D, 1000 classes, qkv bias, LN eps 1e-6,
             3 input channels.
  --batch    one or more (comma separated) batch sizes for forward and forward+backward.
  --threads  torch.set_num_threads(T); set_num_interop_threads(1) is always set.
  --warmup   untimed iterations before each measurement (default 2, the rule of every
             runner in perf/run-cpu-bench.sh).
  --iters    minimum timed iterations per measurement (default 3).
  --min-time keep iterating until at least this many seconds have passed (default 5).
  --max-time stop once this many seconds have passed, even if fewer than --iters
             iterations have run (at least one always runs; default 60).
  --what     all | forward | fwdbwd | edit (default all). Measurements that are not run
             are reported as null.
  --seed     RNG seed for the weights and inputs (default 0).

Output: one JSON object per line for each (model, batch), with these keys:
  model, batch, threads, device "cpu", dtype "fp32", impl "pytorch-<version>",
  forward_images_per_s        eval mode, torch.no_grad()
  forward_backward_images_per_s  mean CE, backward over all params, zero_grad(set_to_none)
  edit_step_ms                batch-1 "reference-style edit step" (see edit_step below);
                              this is independent of --batch, so it is measured once per
                              model and repeated on every line for that model
  gflops_per_s                forward+backward GFLOP/s (3 x forward FLOPs)
  forward_gflops_per_s
plus these informational keys: forward_gflop_per_image, edit_blocks, edit_keep_frac.

FLOP count: forward FLOPs = 2 * multiply-adds of every matmul. These are the patch
embedding (196 * D * 3*16*16) and, in each block, qkv (N*D*3D), QK^T (N*N*D), PV (N*N*D),
proj (N*D*D), fc1 (N*D*4D) and fc2 (N*4D*D), with N = 197 tokens; plus the head (D*1000,
class token only). LayerNorm, softmax, GELU and the adds are not counted. Forward+backward
is counted as 3 x forward.

Leave OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE as the environment sets them.
"""

import argparse
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

MODELS = {
    "vit_tiny_patch16_224": (192, 3),
    "vit_small_patch16_224": (384, 6),
    "vit_base_patch16_224": (768, 12),
}
IMG, PATCH, DEPTH, CLASSES, IN_CHANS, EPS = 224, 16, 12, 1000, 3, 1e-6

# Reference edit step settings (Where-to-Edit HPRD with its default layer=9).
EDIT_BLOCKS = (7, 8, 9)
EDIT_KEEP_FRAC = 0.10
EDIT_LR = 2e-5


# --------------------------------------------------------------------------
# timm-equivalent ViT (same parameter names as timm's VisionTransformer)
# --------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Conv2d(IN_CHANS, dim, kernel_size=PATCH, stride=PATCH)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.hd = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, self.hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        a = ((q * self.hd ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(B, N, D))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=EPS)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=EPS)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        n_tok = (IMG // PATCH) ** 2 + 1
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, n_tok, dim) * 0.02)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(DEPTH)])
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


def forward_flops_per_image(dim, heads):
    n_p = (IMG // PATCH) ** 2
    n = n_p + 1
    macs = n_p * dim * IN_CHANS * PATCH * PATCH
    per_block = (n * dim * 3 * dim      # qkv
                 + n * n * dim          # q k^T (all heads)
                 + n * n * dim          # attn @ v
                 + n * dim * dim        # proj
                 + n * dim * 4 * dim    # fc1
                 + n * 4 * dim * dim)   # fc2
    macs += DEPTH * per_block + dim * CLASSES
    return 2 * macs


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------

def timed(fn, args):
    """Runs fn() args.warmup times, then until >= iters and >= min_time (capped by
    max_time). Returns seconds per iteration (total time / count)."""
    for _ in range(args.warmup):
        fn()
    count = 0
    t0 = time.perf_counter()
    while True:
        fn()
        count += 1
        el = time.perf_counter() - t0
        if (count >= args.iters and el >= args.min_time) or el >= args.max_time:
            return el / count


def measure_forward(model, batch, args):
    x = torch.randn(batch, IN_CHANS, IMG, IMG)
    model.eval()

    def step():
        with torch.no_grad():
            model(x)
    return batch / timed(step, args)


def measure_fwdbwd(model, batch, args):
    x = torch.randn(batch, IN_CHANS, IMG, IMG)
    y = torch.randint(0, CLASSES, (batch,))
    model.train()  # no dropout/droppath in this model, so same math as eval
    for p in model.parameters():
        p.requires_grad_(True)

    def step():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    r = batch / timed(step, args)
    model.zero_grad(set_to_none=True)
    return r


def edit_step(model, args):
    """Batch-1 edit step as done by github.com/hustyyq/Where-to-Edit (HPRD.edit in
    editing/hprdmask.py, commit 804e2ad).

    requires_grad there: HPRD never freezes anything. The model is built with all
    parameters trainable; edit_natural.py passes copy.deepcopy(classifier) and
    Classifier(finetune=True) does not change requires_grad. HPRD.edit wraps it with
    higher.monkeypatch(model, track_higher_grads=True), and higher's
    get_func_params/_copy_tensor keeps each parameter's requires_grad flag
    (`t.clone().detach().requires_grad_(t.requires_grad)`). So EVERY parameter requires
    grad during an HPRD edit, and loss.backward() computes weight gradients for all
    12 blocks, the patch embedding, the norm and the head. Only the 6 inner params
    (layer.{7,8,9}.ffn.fc1/fc2.weight) are in the RMSprop optimizer, so
    opt.zero_grad() clears only those. The other .grad buffers are never cleared and
    keep accumulating from step to step. We mirror that exactly.

    (The FT baseline in editing/ft.py is different: FT.assign() sets
    requires_grad=False on everything except the 6 inner matrices, so its backward
    stops at block 7's fc1 and computes only those 6 weight grads.)

    Each step: forward, CE loss, the argmax accuracy check the reference does, backward,
    grad *= mask (fc1 rows with mask[:, None], fc2 columns with mask[None, :]),
    RMSprop(lr=2e-5) step on the 6 matrices, then zero_grad on those.
    Not mirrored: higher's monkey-patched forward overhead, the one-off mask-hypernetwork
    query before the loop, and the early exit.
    The masks here are random, keeping 10% of the hidden units of each matrix. The
    reference picks its top 10% jointly over all 6 matrices, but the cost is the same.
    """
    model.eval()  # the reference edits edit_model = self.model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    model.zero_grad(set_to_none=True)
    x = torch.randn(1, IN_CHANS, IMG, IMG)
    y = torch.randint(0, CLASSES, (1,))
    hidden = model.blocks[0].mlp.fc1.out_features
    keep = max(1, int(round(EDIT_KEEP_FRAC * hidden)))
    masks = []
    params = []
    for i in EDIT_BLOCKS:
        mlp = model.blocks[i].mlp
        for w in (mlp.fc1.weight, mlp.fc2.weight):
            m = torch.zeros(hidden)
            m[torch.randperm(hidden)[:keep]] = 1.0
            masks.append(m)
            params.append(w)
    opt = torch.optim.RMSprop([{"params": p, "lr": EDIT_LR} for p in params], lr=EDIT_LR)

    def step():
        out = model(x)
        loss = F.cross_entropy(out, y)
        _acc = out.data.max(1)[1].eq(y.data).sum().item() / y.size(0)
        loss.backward()
        for j in range(len(EDIT_BLOCKS)):
            params[2 * j].grad *= masks[2 * j][:, None]           # fc1.weight [H, D]: rows
            params[2 * j + 1].grad *= masks[2 * j + 1][None, :]   # fc2.weight [D, H]: cols
        opt.step()
        opt.zero_grad(set_to_none=True)  # torch 2.x default, which the reference used
    ms = 1000.0 * timed(step, args)
    model.zero_grad(set_to_none=True)
    return ms


def main():
    ap = argparse.ArgumentParser(description="PyTorch CPU timing peer for wte bench")
    ap.add_argument("--model", default="vit_tiny_patch16_224")
    ap.add_argument("--batch", default="1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=5.0)
    ap.add_argument("--max-time", type=float, default=60.0)
    ap.add_argument("--what", choices=["all", "forward", "fwdbwd", "edit"], default="all")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    models = [m.strip() for m in args.model.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            ap.error("unknown model %r (choose from %s)" % (m, ", ".join(MODELS)))
    batches = [int(b) for b in args.batch.split(",") if b.strip()]

    torch.set_num_interop_threads(1)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    for name in models:
        dim, heads = MODELS[name]
        model = ViT(dim, heads)
        fl = forward_flops_per_image(dim, heads)
        edit_ms = edit_step(model, args) if args.what in ("all", "edit") else None
        for b in batches:
            fwd = measure_forward(model, b, args) if args.what in ("all", "forward") else None
            fb = measure_fwdbwd(model, b, args) if args.what in ("all", "fwdbwd") else None
            rec = {
                "model": name,
                "batch": b,
                "threads": args.threads,
                "device": "cpu",
                "dtype": "fp32",
                "impl": "pytorch-" + torch.__version__,
                "forward_images_per_s": fwd,
                "forward_backward_images_per_s": fb,
                "edit_step_ms": edit_ms,
                "gflops_per_s": None if fb is None else 3 * fl * fb / 1e9,
                "forward_gflops_per_s": None if fwd is None else fl * fwd / 1e9,
                "forward_gflop_per_image": fl / 1e9,
                "edit_blocks": list(EDIT_BLOCKS),
                "edit_keep_frac": EDIT_KEEP_FRAC,
            }
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    sys.exit(main())
