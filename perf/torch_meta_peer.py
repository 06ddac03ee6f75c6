#!/usr/bin/env python3
"""PyTorch CPU timing peer for `wte meta-train --bench`: the reference's meta-training loop
(hustyyq/Where-to-Edit meta_train.py, VariationalMasks.train_hypernetwork), ported to
torch 1.13 and timed on random weights at the same shapes.

Usage (Debian python with PyTorch 1.13 CPU):

    /usr/bin/python3 perf/torch_meta_peer.py --model vit_base_patch16_224 --threads 2
    /usr/bin/python3 perf/torch_meta_peer.py --model test_tiny --iterations 3

What is timed, per iteration, exactly as the reference runs it:
  * no_grad forwards of the frozen model on the B clean bases (targets) and the B mixed images
    ([CLS] features); the hypernetwork's forward on the features;
  * stage A: z ~ U(-1,1) [B,R,H], RMSprop(lr 0.1) on z; for each of `outer` steps:
    m = sigmoid(10 z); for each sample i SERIALLY: get_params / get_delta_params clone every
    parameter of the model (the reference's per-sample state), `inner` steps of
    functional_call over the WHOLE model on the one mixed image + T^2 KL(batchmean) +
    autograd.grad w.r.t. every delta (allow_unused) + the in-place masked update
    delta -= elr * grad / m; then the outer forward; after the B samples one backward of
    sum(KL) + lambda*mean(m) into z (through the m*delta products) and an RMSprop step;
  * stage B: 4 RMSprop steps on 0.1 * BCE(hypernet(cls), sigmoid(3 z)).
torch.func.functional_call does not exist in torch 1.13; torch.nn.utils.stateless.functional_call
is the same function there. Gradients are whatever autograd computes for the reference's graph:
every block is run forward; the backward reaches down to the lowest edited block (blocks below
run on detached parameters and an input that needs no gradient).

Shapes: --model vit_base_patch16_224 (D 768, 12 heads, depth 12, MLP 3072, 224 px, patch 16,
1000 classes), vit_small_patch16_224, vit_tiny_patch16_224, or test_tiny (32 px, patch 8, D 32,
depth 4, 4 heads, MLP 64, 10 classes). Edit blocks: 7,8,9 for depth 12, else round(7*depth/12)
and the next two (as wte). Hypernetwork: --hypernet-depth blocks (default 3), width D, heads of
128 (else 64, else 4/3/2/1), MLP D->D->D, R = 2*len(edit blocks) heads Linear(D->MLP).
Images are random N(0,1) tensors (data loading is not timed; wte reports it separately).

Output: one JSON object per line: model, batch, outer_steps, inner_steps, threads, impl,
iterations, seconds_per_iteration, first_iteration_s, cpu_seconds_per_iteration (process CPU
time, all threads), stage_a_s, stage_b_s, setup_s
(the two frozen forwards + hypernet forward), single_image_passes_per_iteration.
"""

import argparse
import copy
import json
import math
import time
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import stateless

PRESETS = {
    "vit_tiny_patch16_224": dict(img=224, patch=16, dim=192, depth=12, heads=3, mlp=768, classes=1000, chans=3),
    "vit_small_patch16_224": dict(img=224, patch=16, dim=384, depth=12, heads=6, mlp=1536, classes=1000, chans=3),
    "vit_base_patch16_224": dict(img=224, patch=16, dim=768, depth=12, heads=12, mlp=3072, classes=1000, chans=3),
    "test_tiny": dict(img=32, patch=8, dim=32, depth=4, heads=4, mlp=64, classes=10, chans=3),
}


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        out = att.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Vit(nn.Module):
    """timm-layout ViT; returns (logits, final-norm [CLS] feature) like the reference's Classifier."""

    def __init__(self, c):
        super().__init__()
        d = c["dim"]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.randn(1, (c["img"] // c["patch"]) ** 2 + 1, d) * 0.02)
        self.patch_embed = nn.Conv2d(c["chans"], d, c["patch"], c["patch"])
        self.blocks = nn.ModuleList([Block(d, c["heads"], c["mlp"]) for _ in range(c["depth"])])
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(d, c["classes"])

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        feature = self.norm(x[:, 0])
        return self.head(feature), feature


class HyperBlock(nn.Module):
    """The reference hypernetwork's pre-norm block (separate q/k/v like its Attention)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.attention_norm = nn.LayerNorm(dim, eps=1e-6)
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-6)
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        hd = d // self.heads
        h = self.attention_norm(x)
        q, k, v = (f(h).view(b, t, self.heads, hd).permute(0, 2, 1, 3) for f in (self.query, self.key, self.value))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1) @ v
        x = x + self.out(a.permute(0, 2, 1, 3).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ffn_norm(x))))


class HyperNetworkMask(nn.Module):
    def __init__(self, dim, heads, units, unit_size, blocks):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, units, dim))
        self.layer = nn.ModuleList([HyperBlock(dim, heads) for _ in range(blocks)])
        self.out_layer = nn.ModuleList([nn.Linear(dim, unit_size) for _ in range(units)])
        self.learn_masks = nn.Parameter(2 * torch.rand(units, unit_size) - 1)   # unused, as in the reference
        self.units = units

    def forward(self, x):
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for blk in self.layer:
            x = blk(x)
        outs = [torch.clamp(torch.sigmoid(3 * head(x[:, i:i + 1])), 1e-5, 1 - 1e-5) for i, head in enumerate(self.out_layer)]
        return torch.cat(outs, dim=1)


class InnerMasks(nn.Module):
    def __init__(self, batch, units, unit_size):
        super().__init__()
        self.learn_masks = nn.Parameter(2 * torch.rand(batch, units, unit_size) - 1)

    def forward(self, scale):
        return torch.sigmoid(scale * self.learn_masks)


class VariationalMasks:
    """The reference's VariationalMasks.train_hypernetwork (decoupled scheme), timed by phase."""

    def __init__(self, model, hyper, edit_parameters, lr, elr, mes, mos, sw, T=5.0):
        self.pretrained_model = model.eval()
        self.edit_model = copy.deepcopy(model.eval())
        self.edit_parameters = edit_parameters
        self.hyper_network = hyper
        self.opt = torch.optim.RMSprop(hyper.parameters(), lr=lr)
        self.lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, 2e4)
        self.edit_lr, self.max_edit_steps, self.max_out_steps, self.lamda, self.T = elr, mes, mos, sw, T

    def get_delta_params(self, temp):
        return {n: (p - p).clone().requires_grad_(True) for n, p in temp.named_parameters()}

    def get_params(self, temp):
        return {n: p.clone().requires_grad_(True) for n, p in temp.named_parameters()}

    def _interpolate_params(self, state, delta, z_masks, i):
        params = OrderedDict()
        ind = 0
        for (name, param), (_, delta_param) in zip(state.items(), delta.items()):
            if name in self.edit_parameters:
                gate = z_masks[i, ind][:, None] if "fc1" in name else z_masks[i, ind][None, :]
                params[name] = param.detach() + delta_param * gate
                ind += 1
            else:
                params[name] = param.detach()
        return params

    def _kl(self, out, ori):
        return self.T * self.T * F.kl_div(F.log_softmax(out / self.T, dim=-1), F.softmax(ori / self.T, dim=-1), reduction="batchmean")

    def train_hypernetwork(self, original_images, mixed_images):
        t0 = time.perf_counter()
        model = self.edit_model
        batch_size = mixed_images.size(0)
        units = len(self.edit_parameters)
        with torch.no_grad():
            ori_output, _ = self.pretrained_model(original_images)
            _, image_features = self.pretrained_model(mixed_images)
        combination = image_features[:, None, :].detach().clone()
        masks = self.hyper_network(combination).reshape(batch_size, units, -1)
        t1 = time.perf_counter()

        inner = InnerMasks(batch_size, units, masks.shape[-1])
        opt = torch.optim.RMSprop(inner.parameters(), lr=1e-1)
        for _ in range(self.max_out_steps):
            total_kl_loss = 0.0
            learn_masks = inner(10)
            for i in range(batch_size):
                state = self.get_params(model)
                delta = self.get_delta_params(model)
                for _ in range(self.max_edit_steps):
                    params = self._interpolate_params(state, delta, learn_masks, i)
                    out, _ = stateless.functional_call(model, params, (mixed_images[i:i + 1],))
                    loss = self._kl(out, ori_output[i:i + 1])
                    grads = torch.autograd.grad(loss, list(delta.values()), create_graph=False, retain_graph=False, allow_unused=True)
                    ind = 0
                    for (n, p), grad in zip(list(delta.items()), grads):
                        if n in self.edit_parameters:
                            gate = learn_masks[i, ind].detach()
                            p -= self.edit_lr * grad / (gate[:, None] if "fc1" in n else gate[None, :])
                            ind += 1
                params = self._interpolate_params(state, delta, learn_masks, i)
                out, _ = stateless.functional_call(model, params, (mixed_images[i:i + 1],))
                total_kl_loss += self._kl(out, ori_output[i:i + 1])
            penalty = torch.norm(learn_masks, 1) / learn_masks.numel()
            (total_kl_loss + self.lamda * penalty).backward()
            opt.step()
            opt.zero_grad()
        label_masks = inner(3).clone().detach()
        t2 = time.perf_counter()

        loss = 0.1 * F.binary_cross_entropy(masks, label_masks)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        for _ in range(3):
            masks = self.hyper_network(combination).reshape(batch_size, units, -1)
            loss = 0.1 * F.binary_cross_entropy(masks, label_masks)
            loss.backward()
            self.opt.step()
            self.opt.zero_grad()
        self.lr_scheduler.step()
        t3 = time.perf_counter()
        return dict(setup_s=t1 - t0, stage_a_s=t2 - t1, stage_b_s=t3 - t2, total_kl=float(total_kl_loss))


def default_blocks(depth):
    if depth == 12:
        return [7, 8, 9]
    first = min(max(int(round(depth * 7 / 12.0)), 0), max(0, depth - 1))
    return list(range(first, min(first + 3, depth)))


def hyper_heads(d):
    if d % 128 == 0:
        return d // 128
    if d % 64 == 0:
        return d // 64
    return next(k for k in (4, 3, 2, 1) if d % k == 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit_base_patch16_224", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--outer-steps", type=int, default=10)
    ap.add_argument("--inner-steps", type=int, default=5)
    ap.add_argument("--hypernet-depth", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(args.seed)
    c = PRESETS[args.model]
    model = Vit(c)
    blocks = default_blocks(c["depth"])
    edit = [f"blocks.{b}.mlp.{fc}.weight" for b in blocks for fc in ("fc1", "fc2")]
    hyper = HyperNetworkMask(c["dim"], hyper_heads(c["dim"]), len(edit), c["mlp"], args.hypernet_depth)
    vm = VariationalMasks(model, hyper, edit, lr=1e-4, elr=1e-3, mes=args.inner_steps, mos=args.outer_steps, sw=1.0)

    results = []
    for _ in range(args.iterations):
        images = torch.randn(2 * args.batch, c["chans"], c["img"], c["img"])
        mixed = images[:args.batch].clone()
        g = c["img"] // c["patch"]
        for i in range(args.batch):   # the reference's cutmix on the patch grid (boxes drawn with torch here)
            h, w = (int(v) for v in torch.randint(max(1, round(3 * g / 14)), max(1, round(8 * g / 14)) + 1, (2,)))
            y0, x0 = int(torch.randint(0, max(1, g - h), (1,))), int(torch.randint(0, max(1, g - w), (1,)))
            p = c["patch"]
            mixed[i, :, y0 * p:(y0 + h) * p, x0 * p:(x0 + w) * p] = images[i + args.batch, :, y0 * p:(y0 + h) * p, x0 * p:(x0 + w) * p]
        start, cpu = time.perf_counter(), time.process_time()
        r = vm.train_hypernetwork(images[:args.batch], mixed)
        r["seconds"] = time.perf_counter() - start
        r["cpu_seconds"] = time.process_time() - cpu
        results.append(r)

    mean = lambda k: sum(r[k] for r in results) / len(results)
    print(json.dumps(dict(
        model=args.model, batch=args.batch, outer_steps=args.outer_steps, inner_steps=args.inner_steps, edit_blocks=blocks,
        threads=args.threads, device="cpu", dtype="fp32", impl="pytorch-" + torch.__version__,
        single_image_passes_per_iteration=args.batch * args.outer_steps * (args.inner_steps + 1),
        iterations=len(results), seconds_per_iteration=mean("seconds"), first_iteration_s=results[0]["seconds"],
        cpu_seconds_per_iteration=mean("cpu_seconds"),
        setup_s=mean("setup_s"), stage_a_s=mean("stage_a_s"), stage_b_s=mean("stage_b_s"))))


if __name__ == "__main__":
    main()
