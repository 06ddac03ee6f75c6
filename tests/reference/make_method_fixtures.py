#!/usr/bin/env python3
"""Write the method fixture (hypernetwork, one meta-training iteration, edits).

Usage (Debian python with PyTorch 1.13 CPU, not a pyenv python):

    /usr/bin/python3 tests/reference/make_method_fixtures.py [--out DIR] [--no-fp32-report]

Writes tests/reference/fixtures/method_tiny.safetensors. The tiny base ViT, the
safetensors writer/reader and the loss helpers come from make_fixtures.py (imported,
not copied). Everything is drawn as float32 from one seeded generator, computed in
float64 and stored as float32.

Three parts (see tests/reference/README.md, "Method fixture", for every tensor):

1. hyper/*  the mask hypernetwork (the reference HyperNetwork_mask, generalised to
   R units of H gates, qkv fused like timm): scores and parameter gradients.
2. meta/*   one meta-training iteration of the reference's "decoupled" scheme
   (meta_train.py VariationalMasks.train_hypernetwork + cutmix): stage A (free
   per-sample masks z, 10 outer RMSprop steps x 5 first-order masked inner steps)
   and stage B (4 RMSprop steps of 0.1*BCE distillation into the hypernetwork).
3. edit/*   HPRD masked RMSprop, FT-L1 and FT-L2 (editing/ft.py) on two images.

Every part is computed twice and the two must agree before anything is written:
  (a) "own" functional code: the B inner loops batched with per-sample edit matrices
      (the way the C# engine runs them), the inner step written as
      delta <- delta - elr * grad_W' (no division by m), hand-written RMSprop/SGD, a
      hand-written BCE, a where()-based clamp, and a closed-form check of the z gradient;
  (b) a literal port of the reference: nn.Modules named like the reference, the serial
      per-sample loop with get_params/get_delta_params/_interpolate_params and
      functional_call, in-place delta updates divided by the mask, torch.optim.RMSprop,
      F.kl_div / F.binary_cross_entropy / torch.norm, FT's SGD-then-RMSprop.
The stored values come from (a). Optionally (a) is rerun in float32 to report the
deviations an fp32 implementation should expect.
"""

import argparse
import copy
import json
import math
import os
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import stateless

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_fixtures as mf  # noqa: E402  (model, losses, safetensors writer/reader)

DEFAULT_OUT = os.path.join(HERE, "fixtures")
NAME = "method_tiny"
SEED = 2415

BASE_CFG = dict(image_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=4,
                num_heads=4, mlp_hidden=64, num_classes=5, ln_eps=1e-6, qkv_bias=True)
EDIT_BLOCKS = [1, 2]
HYPER_CFG = dict(embed_dim=32, depth=2, num_heads=2, mlp_hidden=32,
                 units=2 * len(EDIT_BLOCKS), unit_size=BASE_CFG["mlp_hidden"],
                 clamp=1e-5, amplify=3, ln_eps=1e-6, qkv_bias=True)
# fp32 decides clamping differently only if amplify*z lies within ~0.005 of +-11.513
# (1 - 1e-5 is 168 fp32 ulps below 1); the seed is chosen so no element is that close.
CLAMP_MARGIN = 0.05
HYPER_TEST = dict(batch=3, saturated_head=HYPER_CFG["units"] - 1, saturated_bias_scale=60.0)

RMSPROP = dict(type="RMSprop", alpha=0.99, eps=1e-8, centered=False, momentum=0.0,
               weight_decay=0.0)
META = dict(
    batch=2, temperature=5.0, outer_steps=10, inner_steps=5, inner_lr=1e-3,
    mask_scale=10.0, sparsity_weight=1.0, label_scale=3.0, bce_weight=0.1,
    stage_b_steps=4,
    outer_optimizer=dict(RMSPROP, lr=0.1, state="fresh for this iteration"),
    stage_b_optimizer=dict(RMSPROP, lr=1e-4,
                           state="fresh (first iteration), persists over the 4 steps"),
    # y0, x0, h, w in patch units; box 1 touches the bottom-right corner.
    boxes=[[0, 1, 2, 1], [2, 2, 2, 2]],
)
EDIT = dict(
    n_images=2, steps=4, stop_rule="none",
    hprd=dict(RMSPROP, lr=1e-2, mask_keep_prob=0.25, loss="mean CE"),
    ft_l1=dict(c=0.01, lr=1e-2, first_step="SGD(lr)", later_steps="RMSprop(lr, alpha 0.99, "
               "eps 1e-8), own state from step 2", reg="c * sum_W ||W - W0||_1"),
    ft_l2=dict(c=0.5, lr=1e-2, first_step="SGD(lr)", later_steps="RMSprop(lr, alpha 0.99, "
               "eps 1e-8), own state from step 2", reg="c * sum_W 0.5 * ||W - W0||_2^2"),
)


def units():
    """[(unit prefix, 'row'|'col')] in the mask order: blk.fc1, blk.fc2 per edit block."""
    out = []
    for b in EDIT_BLOCKS:
        out += [("blocks.%d.mlp.fc1" % b, "row"), ("blocks.%d.mlp.fc2" % b, "col")]
    return out


UNITS = units()
EDIT_NAMES = [u + ".weight" for u, _ in UNITS]
assert EDIT_NAMES == mf.edit_names(EDIT_BLOCKS)


# --------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------

def draw_kind(shape, kind, gen):
    z = torch.randn(shape, generator=gen, dtype=torch.float32)
    return {"w": 0.1 * z, "b": 0.05 * z, "lnw": 1.0 + 0.1 * z, "lnb": 0.1 * z}[kind]


def hyper_specs(h):
    D, Dm, R, H = h["embed_dim"], h["mlp_hidden"], h["units"], h["unit_size"]
    specs = [("query_tokens", (1, R, D), "w")]
    for i in range(h["depth"]):
        b = "blocks.%d." % i
        specs += [
            (b + "norm1.weight", (D,), "lnw"), (b + "norm1.bias", (D,), "lnb"),
            (b + "attn.qkv.weight", (3 * D, D), "w"), (b + "attn.qkv.bias", (3 * D,), "b"),
            (b + "attn.proj.weight", (D, D), "w"), (b + "attn.proj.bias", (D,), "b"),
            (b + "norm2.weight", (D,), "lnw"), (b + "norm2.bias", (D,), "lnb"),
            (b + "mlp.fc1.weight", (Dm, D), "w"), (b + "mlp.fc1.bias", (Dm,), "b"),
            (b + "mlp.fc2.weight", (D, Dm), "w"), (b + "mlp.fc2.bias", (D,), "b"),
        ]
    for r in range(R):
        specs += [("heads.%d.weight" % r, (H, D), "w"), ("heads.%d.bias" % r, (H,), "b")]
    return specs


def draw_hyper(h, gen):
    Q = OrderedDict()
    for name, shape, kind in hyper_specs(h):
        Q[name] = draw_kind(shape, kind, gen).contiguous()
    sat = "heads.%d.bias" % HYPER_TEST["saturated_head"]
    Q[sat] = (Q[sat] * HYPER_TEST["saturated_bias_scale"]).contiguous()  # ~N(0, 3^2)
    return Q


def draw_binary_mask(n, p, gen):
    while True:
        m = (torch.rand(n, generator=gen, dtype=torch.float32) < p).to(torch.float32)
        if 0 < int(m.sum()) < n:
            return m


def draw_all():
    """Draw order (one torch.Generator seeded SEED, float32): base params (make_fixtures
    order), hypernet params, hyper/input_cls, hyper/dscores, meta/images, meta/z0,
    edit/images, edit label offsets, HPRD masks (unit order)."""
    gen = torch.Generator().manual_seed(SEED)
    c, h = BASE_CFG, HYPER_CFG
    d = {}
    d["P"] = mf.draw_params(c, gen)
    d["Q"] = draw_hyper(h, gen)
    Bh, R, H = HYPER_TEST["batch"], h["units"], h["unit_size"]
    d["hyper_cls"] = torch.randn((Bh, h["embed_dim"]), generator=gen, dtype=torch.float32)
    d["dscores"] = torch.randn((Bh, R, H), generator=gen, dtype=torch.float32)
    B, S, C = META["batch"], c["image_size"], c["in_chans"]
    d["images"] = torch.randn((2 * B, C, S, S), generator=gen, dtype=torch.float32)
    d["z0"] = 2 * torch.rand((B, R, H), generator=gen, dtype=torch.float32) - 1
    E = EDIT["n_images"]
    d["edit_images"] = torch.randn((E, C, S, S), generator=gen, dtype=torch.float32)
    d["label_offsets"] = torch.randint(1, c["num_classes"], (E,), generator=gen)
    d["hprd_masks"] = [draw_binary_mask(H, EDIT["hprd"]["mask_keep_prob"], gen) for _ in UNITS]
    return d


# --------------------------------------------------------------------------
# (a) own functional code
# --------------------------------------------------------------------------

def block_fwd(t, P, b, D, heads, eps, W1=None, W2=None):
    """Pre-norm block. W1/W2 override the MLP matrices; a 3-D override is per-sample."""
    B, N, _ = t.shape
    hd = D // heads
    h = F.layer_norm(t, (D,), P[b + "norm1.weight"], P[b + "norm1.bias"], eps)
    qkv = F.linear(h, P[b + "attn.qkv.weight"], P.get(b + "attn.qkv.bias"))
    q, k, v = qkv.reshape(B, N, 3, heads, hd).permute(2, 0, 3, 1, 4)
    a = torch.softmax((q @ k.transpose(-2, -1)) * hd ** -0.5, dim=-1)
    t = t + F.linear((a @ v).transpose(1, 2).reshape(B, N, D),
                     P[b + "attn.proj.weight"], P[b + "attn.proj.bias"])
    h = F.layer_norm(t, (D,), P[b + "norm2.weight"], P[b + "norm2.bias"], eps)
    W1 = P[b + "mlp.fc1.weight"] if W1 is None else W1
    W2 = P[b + "mlp.fc2.weight"] if W2 is None else W2
    if W1.dim() == 3:
        h = torch.einsum("bnd,bhd->bnh", h, W1) + P[b + "mlp.fc1.bias"]
    else:
        h = F.linear(h, W1, P[b + "mlp.fc1.bias"])
    h = F.gelu(h)
    if W2.dim() == 3:
        h = torch.einsum("bnh,bdh->bnd", h, W2) + P[b + "mlp.fc2.bias"]
    else:
        h = F.linear(h, W2, P[b + "mlp.fc2.bias"])
    return t + h


def vit_embed(P, x, c):
    t = F.conv2d(x, P["patch_embed.proj.weight"], P["patch_embed.proj.bias"],
                 stride=c["patch_size"]).flatten(2).transpose(1, 2)
    t = torch.cat([P["cls_token"].expand(x.shape[0], -1, -1), t], dim=1)
    return t + P["pos_embed"]


def vit_blocks(P, t, c, start, stop, over=None):
    over = over or {}
    for i in range(start, stop):
        b = "blocks.%d." % i
        t = block_fwd(t, P, b, c["embed_dim"], c["num_heads"], c["ln_eps"],
                      over.get(b + "mlp.fc1.weight"), over.get(b + "mlp.fc2.weight"))
    return t


def vit_head(P, t, c):
    t = F.layer_norm(t, (c["embed_dim"],), P["norm.weight"], P["norm.bias"], c["ln_eps"])
    feat = t[:, 0]
    return F.linear(feat, P["head.weight"], P["head.bias"]), feat


def hyper_forward(Q, cls, h):
    """cls [B,D] -> (scores [B,R,H], pre-activations z [B,R,H])."""
    B = cls.shape[0]
    t = torch.cat([Q["query_tokens"].expand(B, -1, -1), cls[:, None, :]], dim=1)
    for i in range(h["depth"]):
        t = block_fwd(t, Q, "blocks.%d." % i, h["embed_dim"], h["num_heads"], h["ln_eps"])
    z = torch.stack([F.linear(t[:, r], Q["heads.%d.weight" % r], Q["heads.%d.bias" % r])
                     for r in range(h["units"])], dim=1)
    s = torch.sigmoid(h["amplify"] * z)
    lo, hi = h["clamp"], 1.0 - h["clamp"]
    inside = (s >= lo) & (s <= hi)               # gradient passes where lo <= s <= hi
    s = torch.where(inside, s, torch.where(s < lo, torch.full_like(s, lo),
                                           torch.full_like(s, hi)))
    return s, z


def gate(m, X, kind):
    """m [..., H] times X: rows of fc1 [..., H, D] or columns of fc2 [..., D, H]."""
    return m[..., :, None] * X if kind == "row" else m[..., None, :] * X


def cutmix(images, boxes, p):
    B = images.shape[0] // 2
    out = images[:B].clone()
    for i, (y0, x0, hh, ww) in enumerate(boxes):
        ys, xs = slice(y0 * p, (y0 + hh) * p), slice(x0 * p, (x0 + ww) * p)
        out[i, :, ys, xs] = images[i + B, :, ys, xs]
    return out


def own_bce(x, y):
    lx = torch.clamp(torch.log(x), min=-100.0)
    l1x = torch.clamp(torch.log(1 - x), min=-100.0)
    return -(y * lx + (1 - y) * l1x).mean()


def own_rmsprop(params, grads, state, lr, hp):
    out = []
    for p, g, v in zip(params, grads, state):
        v.mul_(hp["alpha"]).add_((1 - hp["alpha"]) * g * g)
        out.append(p - lr * g / (v.sqrt() + hp["eps"]))
    return out


def own_hyper_test(Q, cls, w, h):
    Ql = {n: t.clone().requires_grad_(True) for n, t in Q.items()}
    s, z = hyper_forward(Ql, cls, h)
    grads = torch.autograd.grad((w * s).sum(), list(Ql.values()))
    return s.detach(), z.detach(), dict(zip(Ql.keys(), grads))


def own_meta(P, Q, images, z0, c, h, stage_b_state=None, stage_b_lr=None, boxes=None):
    """One iteration, the B inner loops batched. Returns a dict of results. stage_b_state (the
    hypernetwork's RMSprop square averages, updated in place) and stage_b_lr carry a run over
    iterations (make_trajectory_fixtures.py); by default both are those of the first iteration.
    boxes: the CutMix boxes (default META["boxes"])."""
    B, T = META["batch"], META["temperature"]
    e0, e1 = min(EDIT_BLOCKS), max(EDIT_BLOCKS) + 1
    res = {}
    with torch.no_grad():
        logits_clean, _ = vit_head(P, vit_blocks(P, vit_embed(P, images[:B], c), c, 0, c["depth"]), c)
        teacher = torch.softmax(logits_clean / T, dim=-1)
        mixed = cutmix(images, META["boxes"] if boxes is None else boxes, c["patch_size"])
        cache = vit_blocks(P, vit_embed(P, mixed, c), c, 0, e0)  # blocks before the edits
        _, cls_mixed = vit_head(P, vit_blocks(P, cache, c, e0, c["depth"]), c)
    res.update(mixed=mixed, teacher=teacher, cls_mixed=cls_mixed)

    def kl_of(over):
        logits, _ = vit_head(P, vit_blocks(P, cache, c, e0, c["depth"], over), c)
        return mf.kl_per_sample(logits, teacher, T)             # [B]

    W = [P[n] for n in EDIT_NAMES]
    N = z0.numel()
    lr, hp = META["outer_optimizer"]["lr"], META["outer_optimizer"]
    z, v = z0.clone(), torch.zeros_like(z0)
    outer_kl, mask_mean, zgrad_check = [], [], 0.0
    for step in range(META["outer_steps"]):
        zr = z.clone().requires_grad_(True)
        m = torch.sigmoid(META["mask_scale"] * zr)             # [B,R,H]
        md = m.detach()
        delta = [torch.zeros((B,) + w.shape, dtype=w.dtype) for w in W]
        for _ in range(META["inner_steps"]):
            Wp = [(w + gate(md[:, r], delta[r], UNITS[r][1])).requires_grad_(True)
                  for r, w in enumerate(W)]
            g = torch.autograd.grad(kl_of(dict(zip(EDIT_NAMES, Wp))).sum(), Wp)
            delta = [d - META["inner_lr"] * gi for d, gi in zip(delta, g)]
        Wp = [w + gate(m[:, r], delta[r], UNITS[r][1]) for r, w in enumerate(W)]
        kl = kl_of(dict(zip(EDIT_NAMES, Wp)))
        L = kl.sum() + META["sparsity_weight"] * m.mean()
        Wl = [x.detach().requires_grad_(True) for x in Wp]
        gW = torch.autograd.grad(kl_of(dict(zip(EDIT_NAMES, Wl))).sum(), Wl)
        (gz,) = torch.autograd.grad(L, zr)
        # closed form: dL/dm = sum over the gated row/column of grad_W' * delta, + lambda/N
        dm = torch.stack([(gi * d).sum(-1) if UNITS[r][1] == "row" else (gi * d).sum(-2)
                          for r, (gi, d) in enumerate(zip(gW, delta))], dim=1)
        dm = dm + META["sparsity_weight"] / N
        gz_closed = META["mask_scale"] * md * (1 - md) * dm
        zgrad_check = max(zgrad_check, ((gz - gz_closed).abs().max() / gz.abs().max()).item())
        outer_kl.append(kl.sum().item())
        mask_mean.append(m.mean().item())
        if step == 0:
            res["z_grad0"] = gz.clone()
        if step == META["outer_steps"] - 1:
            res["delta"] = [d.detach().clone() for d in delta]
        (z,) = own_rmsprop([z], [gz], [v], lr, hp)
    res.update(outer_kl=torch.tensor(outer_kl, dtype=torch.float64),
               mask_mean=torch.tensor(mask_mean, dtype=torch.float64),
               z_final=z, zgrad_closed_form_rel_err=zgrad_check)

    y = torch.sigmoid(META["label_scale"] * z).detach()
    res["labels_y"] = y
    names = list(Q.keys())
    params = [Q[n].clone() for n in names]
    state = [torch.zeros_like(p) for p in params] if stage_b_state is None else stage_b_state
    stage_b_lr = META["stage_b_optimizer"]["lr"] if stage_b_lr is None else stage_b_lr
    losses, pre_acts = [], []
    for _ in range(META["stage_b_steps"]):
        Ql = [p.requires_grad_(True) for p in params]
        s, zpre = hyper_forward(dict(zip(names, Ql)), cls_mixed, h)
        pre_acts.append(zpre.detach())
        loss = META["bce_weight"] * own_bce(s, y)
        losses.append(loss.item())
        g = torch.autograd.grad(loss, Ql)
        params = [p.detach() for p in own_rmsprop([p.detach() for p in Ql], g, state,
                                                   stage_b_lr, META["stage_b_optimizer"])]
    res["stage_b_losses"] = torch.tensor(losses, dtype=torch.float64)
    res["hyper_after"] = dict(zip(names, params))
    res["stage_b_pre_acts"] = pre_acts
    return res


def own_edits(P, x, labels, masks, c):
    W0 = [P[n] for n in EDIT_NAMES]

    def ce_of(Ws):
        over = dict(zip(EDIT_NAMES, Ws))
        logits, _ = vit_head(P, vit_blocks(P, vit_embed(P, x, c), c, 0, c["depth"], over), c)
        return mf.ce_per_sample(logits, labels).mean()

    out = {}
    # HPRD: masked RMSprop on mean CE
    hp = EDIT["hprd"]
    Ws, state, losses = [w.clone() for w in W0], [torch.zeros_like(w) for w in W0], []
    for _ in range(EDIT["steps"]):
        Wl = [w.requires_grad_(True) for w in Ws]
        loss = ce_of(Wl)
        losses.append(loss.item())
        g = torch.autograd.grad(loss, Wl)
        g = [gate(masks[r], gi, UNITS[r][1]) for r, gi in enumerate(g)]
        Ws = [w.detach() for w in own_rmsprop([w.detach() for w in Wl], g, state, hp["lr"], hp)]
    out["hprd"] = (Ws, losses)
    # FT-L1 / FT-L2: SGD first step, then RMSprop with state from step 2
    for key, l1 in (("ft_l1", True), ("ft_l2", False)):
        hp = EDIT[key]
        Ws, state, losses = [w.clone() for w in W0], [torch.zeros_like(w) for w in W0], []
        for step in range(EDIT["steps"]):
            Wl = [w.requires_grad_(True) for w in Ws]
            if l1:
                reg = sum((w - w0).abs().sum() for w, w0 in zip(Wl, W0))
            else:
                reg = sum(0.5 * ((w - w0) ** 2).sum() for w, w0 in zip(Wl, W0))
            loss = ce_of(Wl) + hp["c"] * reg
            losses.append(loss.item())
            g = torch.autograd.grad(loss, Wl)
            if step == 0:
                Ws = [w.detach() - hp["lr"] * gi for w, gi in zip(Wl, g)]
            else:
                Ws = [w.detach() for w in own_rmsprop([w.detach() for w in Wl], g, state,
                                                      hp["lr"], RMSPROP)]
        out[key] = (Ws, losses)
    return out


# --------------------------------------------------------------------------
# (b) literal port of the reference (nn.Modules, functional_call, torch optimizers)
# --------------------------------------------------------------------------

class RefAttention(nn.Module):           # reference Attention, generalised widths
    def __init__(self, D, heads):
        super().__init__()
        self.num_attention_heads = heads
        self.attention_head_size = D // heads
        self.all_head_size = D
        self.query, self.key, self.value = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)
        self.out = nn.Linear(D, D)
        self.softmax = nn.Softmax(dim=-1)

    def transpose_for_scores(self, x):
        x = x.view(*(x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)))
        return x.permute(0, 2, 1, 3)

    def forward(self, hs):
        q = self.transpose_for_scores(self.query(hs))
        k = self.transpose_for_scores(self.key(hs))
        v = self.transpose_for_scores(self.value(hs))
        s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
        ctx = torch.matmul(self.softmax(s), v).permute(0, 2, 1, 3).contiguous()
        return self.out(ctx.view(*(ctx.size()[:-2] + (self.all_head_size,))))


class RefMlp(nn.Module):
    def __init__(self, D, Dm):
        super().__init__()
        self.fc1, self.fc2, self.act_fn = nn.Linear(D, Dm), nn.Linear(Dm, D), nn.GELU()

    def forward(self, x):
        return self.fc2(self.act_fn(self.fc1(x)))


class RefBlock(nn.Module):
    def __init__(self, D, heads, Dm):
        super().__init__()
        self.attention_norm = nn.LayerNorm(D, eps=1e-6)
        self.ffn_norm = nn.LayerNorm(D, eps=1e-6)
        self.ffn = RefMlp(D, Dm)
        self.attn = RefAttention(D, heads)

    def forward(self, x):
        x = self.attn(self.attention_norm(x)) + x
        return self.ffn(self.ffn_norm(x)) + x


class RefOutblock(nn.Module):
    def __init__(self, D, out_dim, amplify, ep):
        super().__init__()
        self.out = nn.Linear(D, out_dim)
        self.act_out = nn.Sigmoid()
        self.amplify, self.ep = amplify, ep

    def forward(self, x):
        return torch.clamp(self.act_out(self.amplify * self.out(x)), min=self.ep, max=1 - self.ep)


class RefHyperNetworkMask(nn.Module):
    def __init__(self, h):
        super().__init__()
        D, R = h["embed_dim"], h["units"]
        self.cls_token = nn.Parameter(torch.zeros(1, R, D))
        self.layer = nn.ModuleList([RefBlock(D, h["num_heads"], h["mlp_hidden"])
                                    for _ in range(h["depth"])])
        self.out_layer = nn.ModuleList([RefOutblock(D, h["unit_size"], h["amplify"], h["clamp"])
                                        for _ in range(R)])

    def forward(self, x):                 # x: [B, 1, D]
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for blk in self.layer:
            x = blk(x)
        return torch.cat([o(x[:, i:i + 1]) for i, o in enumerate(self.out_layer)], dim=1)


def ref_hyper_name_map(h):
    """our fused name -> list of (module param name, row slice or None)."""
    D = h["embed_dim"]
    mp = {"query_tokens": [("cls_token", None)]}
    for i in range(h["depth"]):
        a, b = "blocks.%d." % i, "layer.%d." % i
        for s in ("weight", "bias"):
            mp[a + "norm1." + s] = [(b + "attention_norm." + s, None)]
            mp[a + "norm2." + s] = [(b + "ffn_norm." + s, None)]
            mp[a + "attn.proj." + s] = [(b + "attn.out." + s, None)]
            mp[a + "mlp.fc1." + s] = [(b + "ffn.fc1." + s, None)]
            mp[a + "mlp.fc2." + s] = [(b + "ffn.fc2." + s, None)]
            mp[a + "attn.qkv." + s] = [(b + "attn.%s.%s" % (nm, s), slice(j * D, (j + 1) * D))
                                      for j, nm in enumerate(("query", "key", "value"))]
    for r in range(h["units"]):
        for s in ("weight", "bias"):
            mp["heads.%d.%s" % (r, s)] = [("out_layer.%d.out.%s" % (r, s), None)]
    return mp


def ref_hyper_load(Q, h):
    net = RefHyperNetworkMask(h).double()
    sd = {}
    for ours, parts in ref_hyper_name_map(h).items():
        for mname, sl in parts:
            sd[mname] = Q[ours] if sl is None else Q[ours][sl]
    net.load_state_dict({k: v.double() for k, v in sd.items()}, strict=True)
    return net


def ref_hyper_export(net, h, grads=False):
    named = dict(net.named_parameters())
    out = {}
    for ours, parts in ref_hyper_name_map(h).items():
        ts = [(named[m].grad if grads else named[m]).detach() for m, _ in parts]
        out[ours] = ts[0] if len(ts) == 1 else torch.cat(ts, dim=0)
    return out


class TimmAttn(nn.Module):
    def __init__(self, D, heads, qkv_bias):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(D, 3 * D, bias=qkv_bias), nn.Linear(D, D)

    def forward(self, x):
        B, N, D = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.heads, D // self.heads)
        q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))
        a = torch.einsum("bhnd,bhmd->bhnm", q, k).mul(1.0 / math.sqrt(D // self.heads))
        o = torch.einsum("bhnm,bhmd->bhnd", a.softmax(-1), v)
        return self.proj(o.transpose(1, 2).reshape(B, N, D))


class TimmMlp(nn.Module):
    def __init__(self, D, Hm):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(D, Hm), nn.GELU(), nn.Linear(Hm, D)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class TimmBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        D = c["embed_dim"]
        self.norm1 = nn.LayerNorm(D, eps=c["ln_eps"])
        self.attn = TimmAttn(D, c["num_heads"], c["qkv_bias"])
        self.norm2 = nn.LayerNorm(D, eps=c["ln_eps"])
        self.mlp = TimmMlp(D, c["mlp_hidden"])

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.proj = nn.Conv2d(c["in_chans"], c["embed_dim"], c["patch_size"], c["patch_size"])

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class TimmViT(nn.Module):
    """Returns (logits, features) like the reference Classifier; features = [CLS] after norm."""

    def __init__(self, c):
        super().__init__()
        D, n = c["embed_dim"], (c["image_size"] // c["patch_size"]) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, D))
        self.patch_embed = PatchEmbed(c)
        self.blocks = nn.ModuleList([TimmBlock(c) for _ in range(c["depth"])])
        self.norm = nn.LayerNorm(D, eps=c["ln_eps"])
        self.head = nn.Linear(D, c["num_classes"])

    def forward(self, x):
        t = self.patch_embed(x)
        t = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), t), dim=1) + self.pos_embed
        for blk in self.blocks:
            t = blk(t)
        f = self.norm(t)[:, 0]
        return self.head(f), f


def ref_vit_load(P, c):
    m = TimmViT(c).double()
    m.load_state_dict({n: t.double() for n, t in P.items()}, strict=True)
    return m.eval()


class InnerMasks(nn.Module):
    def __init__(self, z0):
        super().__init__()
        self.learn_masks = nn.Parameter(z0.clone())   # reference: 2*rand - 1, here given

    def forward(self, scale):
        return torch.sigmoid(scale * self.learn_masks)


class RefVariationalMasks:
    """Port of meta_train.VariationalMasks (only what one iteration needs)."""

    def __init__(self, model, hyper, edit_parameters, lr, elr, mes, mos, sw, T):
        self.pretrained_model = model.eval()
        self.edit_model = copy.deepcopy(model.eval())
        self.edit_parameters = edit_parameters
        self.hyper_network = hyper
        self.opt = torch.optim.RMSprop(self.hyper_network.parameters(), lr=lr)
        self.edit_lr, self.max_edit_steps, self.max_out_steps = elr, mes, mos
        self.lamda, self.T = sw, T
        self.total_loss = 0.0
        self.log = {}

    def get_delta_params(self, temp):
        return {n: (p - p).clone().requires_grad_(True) for n, p in temp.named_parameters()}

    def get_params(self, temp):
        return {n: p.clone().requires_grad_(True) for n, p in temp.named_parameters()}

    def _interpolate_params(self, edited_model_state, delta_model_state, z_masks, i):
        params = OrderedDict()
        ind = 0
        for (name, param), (_, delta_param) in zip(edited_model_state.items(),
                                                   delta_model_state.items()):
            if name in self.edit_parameters:
                if "fc1" in name:
                    params[name] = param.detach() + delta_param * z_masks[i, ind][:, None]
                else:
                    params[name] = param.detach() + delta_param * z_masks[i, ind][None, :]
                ind += 1
            else:
                params[name] = param.detach()
        return params

    def sparse_penalty(self, log_alphas):
        return torch.norm(log_alphas, 1) / log_alphas.numel()

    def _kl(self, out, ori):
        return self.T * self.T * F.kl_div(F.log_softmax(out / self.T, dim=-1),
                                          F.softmax(ori / self.T, dim=-1), reduction="batchmean")

    def train_hypernetwork(self, original_images, mixed_images, z0):
        edited_model = self.edit_model
        batch_size = mixed_images.size(0)
        R = len(self.edit_parameters)
        with torch.no_grad():
            ori_output, _ = self.pretrained_model(original_images)
            _, image_features = self.pretrained_model(mixed_images)
        combination = image_features[:, None, :].detach().clone()
        masks = self.hyper_network(combination).reshape(batch_size, R, -1)
        self.log["teacher"] = F.softmax(ori_output / self.T, dim=-1)
        self.log["cls_mixed"] = image_features

        learn_masks_module = InnerMasks(z0)
        opt = torch.optim.RMSprop(learn_masks_module.parameters(), lr=META["outer_optimizer"]["lr"])
        self.log["outer_kl"], self.log["mask_mean"] = [], []
        for steps in range(self.max_out_steps):
            total_kl_loss = 0.0
            learn_masks = learn_masks_module(META["mask_scale"])
            deltas = []
            for i in range(batch_size):
                edited_model_state = self.get_params(edited_model)
                delta_model_state = self.get_delta_params(edited_model)
                for _ in range(self.max_edit_steps):
                    params = self._interpolate_params(edited_model_state, delta_model_state,
                                                      learn_masks, i)
                    out, _ = stateless.functional_call(edited_model, params, (mixed_images[i:i + 1],))
                    loss = self._kl(out, ori_output[i:i + 1])
                    grads = torch.autograd.grad(loss, list(delta_model_state.values()),
                                                create_graph=False, retain_graph=False,
                                                allow_unused=True)
                    ind = 0
                    for (n, p), grad in zip(list(delta_model_state.items()), grads):
                        if n in self.edit_parameters:
                            if "fc1" in n:
                                p -= self.edit_lr * grad / (learn_masks[i, ind].detach())[:, None]
                            else:
                                p -= self.edit_lr * grad / (learn_masks[i, ind].detach())[None, :]
                            ind += 1
                params = self._interpolate_params(edited_model_state, delta_model_state,
                                                  learn_masks, i)
                out, _ = stateless.functional_call(edited_model, params, (mixed_images[i:i + 1],))
                total_kl_loss += self._kl(out, ori_output[i:i + 1])
                deltas.append({n: delta_model_state[n].detach().clone()
                               for n in self.edit_parameters})
            sparse_penalty = self.sparse_penalty(learn_masks)
            self.log["outer_kl"].append(total_kl_loss.item())
            self.log["mask_mean"].append(learn_masks.mean().item())
            total_loss = total_kl_loss + self.lamda * sparse_penalty
            total_loss.backward()
            if steps == 0:
                self.log["z_grad0"] = learn_masks_module.learn_masks.grad.detach().clone()
            opt.step()
            opt.zero_grad()
        self.log["delta"] = deltas
        self.log["z_final"] = learn_masks_module.learn_masks.detach().clone()
        label_masks = learn_masks_module(META["label_scale"]).clone().detach()
        self.log["labels_y"] = label_masks

        losses = []
        bce_loss = F.binary_cross_entropy(masks, label_masks)
        self.total_loss += META["bce_weight"] * bce_loss
        losses.append(self.total_loss.item())
        self.total_loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        self.total_loss = 0.0
        for _ in range(META["stage_b_steps"] - 1):
            masks = self.hyper_network(combination).reshape(batch_size, R, -1)
            loss = META["bce_weight"] * F.binary_cross_entropy(masks, label_masks)
            losses.append(loss.item())
            loss.backward()
            self.opt.step()
            self.opt.zero_grad()
        self.log["stage_b_losses"] = losses


def ref_meta(P, Q, images, z0, c, h):
    B = META["batch"]
    model = ref_vit_load(P, c)
    hyper = ref_hyper_load(Q, h)
    vm = RefVariationalMasks(model, hyper, EDIT_NAMES, lr=META["stage_b_optimizer"]["lr"],
                             elr=META["inner_lr"], mes=META["inner_steps"],
                             mos=META["outer_steps"], sw=META["sparsity_weight"],
                             T=META["temperature"])
    # reference cutmix with the fixture's boxes instead of np.random
    p = c["patch_size"]
    mixed = []
    for i in range(B):
        mix_ima = images[i].clone()
        ima_2 = images[i + B]
        yl, xl, cut_h, cut_w = META["boxes"][i]
        yh, xh = yl + cut_h, xl + cut_w
        mix_ima[:, yl * p:yh * p, xl * p:xh * p] = ima_2[:, yl * p:yh * p, xl * p:xh * p]
        mixed.append(mix_ima.unsqueeze(0))
    mixed = torch.cat(mixed, dim=0)
    vm.train_hypernetwork(images[:B], mixed, z0)
    log = vm.log
    log["mixed"] = mixed
    log["hyper_after"] = ref_hyper_export(hyper, h)
    return log


def ref_hyper_test(Q, cls, w, h):
    net = ref_hyper_load(Q, h)
    s = net(cls[:, None, :])
    (w * s).sum().backward()
    return s.detach(), ref_hyper_export(net, h, grads=True)


def ref_edits(P, x, labels, masks, c):
    out = {}
    # HPRD (editing/hprdmask.py HPRD.edit with given binary masks, no stop rule)
    model = ref_vit_load(P, c)
    for n, p in model.named_parameters():
        p.requires_grad_(n in EDIT_NAMES)
    opt_params = [{"params": p, "lr": EDIT["hprd"]["lr"]}
                  for n, p in model.named_parameters() if n in EDIT_NAMES]
    opt = torch.optim.RMSprop(opt_params, lr=EDIT["hprd"]["lr"])
    losses = []
    for _ in range(EDIT["steps"]):
        output, _ = model(x)
        loss = F.cross_entropy(output, labels)
        losses.append(loss.item())
        loss.backward()
        for k, j in enumerate(EDIT_BLOCKS):
            model.blocks[j].mlp.fc1.weight.grad *= masks[2 * k][:, None]
            model.blocks[j].mlp.fc2.weight.grad *= masks[2 * k + 1][None, :]
        opt.step()
        opt.zero_grad()
    named = dict(model.named_parameters())
    out["hprd"] = ([named[n].detach() for n in EDIT_NAMES], losses)

    # FT (editing/ft.py FT.edit, no stop rule)
    for key, l2 in (("ft_l1", False), ("ft_l2", True)):
        src = ref_vit_load(P, c)
        source_weight = {n: p.detach() for n, p in src.named_parameters() if n in EDIT_NAMES}

        def reg_loss(m):
            total = 0.0
            for n, p in m.named_parameters():
                if n in EDIT_NAMES:
                    if l2:
                        total += 0.5 * torch.norm(p - source_weight[n]) ** 2
                    else:
                        total += torch.norm(p - source_weight[n], p=1)
            return total

        for n, p in src.named_parameters():
            p.requires_grad_(n in EDIT_NAMES)
        edit_model = copy.deepcopy(src).eval()
        lr = EDIT[key]["lr"]
        opt_params = [{"params": p, "lr": lr} for n, p in edit_model.named_parameters()
                      if n in EDIT_NAMES]
        opt_1st = torch.optim.SGD(opt_params, lr=lr)
        opt = torch.optim.RMSprop(opt_params, lr=lr)
        losses = []
        for edit_step in range(EDIT["steps"]):
            output, _ = edit_model(x)
            loss = F.cross_entropy(output, labels) + EDIT[key]["c"] * reg_loss(edit_model)
            losses.append(loss.item())
            loss.backward()
            if edit_step == 0:
                opt_1st.step()
                opt_1st.zero_grad()
            else:
                opt.step()
                opt.zero_grad()
        named = dict(edit_model.named_parameters())
        out[key] = ([named[n].detach() for n in EDIT_NAMES], losses)
    return out


# --------------------------------------------------------------------------
# Build, cross-check, write
# --------------------------------------------------------------------------

def maxdiff(a, b):
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item() if a.numel() else 0.0


def check(label, a, b, tol, report):
    d = maxdiff(a, b)
    report.append((label, d))
    assert d <= tol, "%s: (a) vs (b) differ by %g > %g" % (label, d, tol)


def compute(d, dt):
    """Run the own (a) pipeline with inputs cast to dt."""
    c, h = BASE_CFG, HYPER_CFG
    P = {n: t.to(dt) for n, t in d["P"].items()}
    Q = OrderedDict((n, t.to(dt)) for n, t in d["Q"].items())
    r = {}
    r["hyper"] = own_hyper_test(Q, d["hyper_cls"].to(dt), d["dscores"].to(dt), h)
    r["meta"] = own_meta(P, Q, d["images"].to(dt), d["z0"].to(dt), c, h)
    with torch.no_grad():
        logits, _ = vit_head(P, vit_blocks(P, vit_embed(P, d["edit_images"].to(dt), c), c, 0,
                                           c["depth"]), c)
    labels = (logits.argmax(-1) + d["label_offsets"]) % c["num_classes"]
    r["edit_labels"] = labels
    r["edit_logits"] = logits
    r["edit"] = own_edits(P, d["edit_images"].to(dt), labels, [m.to(dt) for m in d["hprd_masks"]], c)
    return r


def build():
    c, h = BASE_CFG, HYPER_CFG
    d = draw_all()
    P64 = {n: t.double() for n, t in d["P"].items()}
    Q64 = OrderedDict((n, t.double()) for n, t in d["Q"].items())

    # Split/batched forward == make_fixtures.vit_forward == TransformerEncoderLayer check.
    with torch.no_grad():
        x = d["images"].double()
        ref_logits, ref_feat = mf.vit_forward(P64, x, c)
        lg, ft = vit_head(P64, vit_blocks(P64, vit_embed(P64, x, c), c, 0, c["depth"]), c)
        assert maxdiff(lg, ref_logits) < 1e-12 and maxdiff(ft, ref_feat) < 1e-12
        assert maxdiff(mf.crosscheck_forward(P64, x, c), ref_logits) < 1e-10
        over = {n: P64[n].expand((x.shape[0],) + P64[n].shape) for n in EDIT_NAMES}
        lg2, _ = vit_head(P64, vit_blocks(P64, vit_embed(P64, x, c), c, 0, c["depth"], over), c)
        assert maxdiff(lg2, ref_logits) < 1e-12

    r = compute(d, torch.float64)
    rep = []

    # ---- (b) reference port, compare ----
    s_b, g_b = ref_hyper_test(Q64, d["hyper_cls"].double(), d["dscores"].double(), h)
    s_a, z_a, g_a = r["hyper"]
    check("hyper/scores", s_a, s_b, 1e-13, rep)
    for n in Q64:
        check("hyper/grad/" + n, g_a[n], g_b[n], 1e-12, rep)
    mb = ref_meta(P64, Q64, d["images"].double(), d["z0"].double(), c, h)
    ma = r["meta"]
    check("meta/mixed", ma["mixed"], mb["mixed"], 0, rep)
    check("meta/teacher_probs", ma["teacher"], mb["teacher"], 1e-14, rep)
    check("meta/cls_mixed", ma["cls_mixed"], mb["cls_mixed"], 1e-12, rep)
    check("meta/outer_kl", ma["outer_kl"], mb["outer_kl"], 1e-12, rep)
    check("meta/mask_mean", ma["mask_mean"], mb["mask_mean"], 1e-14, rep)
    check("meta/z_grad0", ma["z_grad0"], mb["z_grad0"], 1e-14, rep)
    check("meta/z_final", ma["z_final"], mb["z_final"], 1e-10, rep)
    check("meta/labels_y", ma["labels_y"], mb["labels_y"], 1e-10, rep)
    for i in range(META["batch"]):
        for r_, n in enumerate(EDIT_NAMES):
            check("meta/delta/%d/%s" % (i, n), ma["delta"][r_][i], mb["delta"][i][n], 1e-13, rep)
    check("meta/stage_b_losses", ma["stage_b_losses"], mb["stage_b_losses"], 1e-12, rep)
    for n in Q64:
        check("meta/hyper_after/" + n, ma["hyper_after"][n], mb["hyper_after"][n], 1e-10, rep)
    eb = ref_edits(P64, d["edit_images"].double(), r["edit_labels"],
                   [m.double() for m in d["hprd_masks"]], c)
    for key in ("hprd", "ft_l1", "ft_l2"):
        for n, wa, wb in zip(EDIT_NAMES, r["edit"][key][0], eb[key][0]):
            check("edit/%s/%s" % (key, n), wa, wb, 1e-10, rep)
        check("edit/%s_losses" % key, r["edit"][key][1], eb[key][1], 1e-12, rep)

    # ---- sanity of the data ----
    info = {}
    lo, hi = h["clamp"], 1 - h["clamp"]
    thr = math.log(hi / lo)                         # |amplify*z| beyond this is clamped
    amp = [h["amplify"] * z_a] + [h["amplify"] * zp for zp in ma["stage_b_pre_acts"]]
    info["hyper_clamped_low_high"] = [int((amp[0] < -thr).sum()), int((amp[0] > thr).sum())]
    info["stage_b_clamped_low_high"] = [[int((a < -thr).sum()), int((a > thr).sum())]
                                        for a in amp[1:]]
    # distance of amplify*z from the clamp points -+log((1-eps)/eps), low and high side
    info["clamp_margin_low_high"] = [min((a + thr).abs().min().item() for a in amp),
                                     min((a - thr).abs().min().item() for a in amp)]
    assert info["hyper_clamped_low_high"][0] > 0 and info["hyper_clamped_low_high"][1] > 0
    assert all(lh[0] + lh[1] > 0 for lh in info["stage_b_clamped_low_high"])
    assert min(info["clamp_margin_low_high"]) > CLAMP_MARGIN, info
    info["zgrad_closed_form_rel_err"] = ma["zgrad_closed_form_rel_err"]
    assert ma["zgrad_closed_form_rel_err"] < 1e-10
    m_final = torch.sigmoid(META["mask_scale"] * ma["z_final"])
    info["z_final_range"] = [ma["z_final"].min().item(), ma["z_final"].max().item()]
    info["min_mask_in_stage_a"] = m_final.min().item()
    return d, r, rep, info


def tensors_of(d, r):
    c, h = BASE_CFG, HYPER_CFG
    f32 = mf.f32
    ts = [("vit/param/" + n, f32(t)) for n, t in d["P"].items()]
    ts += [("hyper/param/" + n, f32(t)) for n, t in d["Q"].items()]
    s, _, g = r["hyper"]
    ts += [("hyper/input_cls", f32(d["hyper_cls"])), ("hyper/dscores", f32(d["dscores"])),
           ("hyper/scores", f32(s))]
    ts += [("hyper/grad/" + n, f32(g[n])) for n in d["Q"]]
    m = r["meta"]
    ts += [("meta/images", f32(d["images"])),
           ("meta/boxes", f32(torch.tensor(META["boxes"], dtype=torch.float64))),
           ("meta/z0", f32(d["z0"])),
           ("meta/mixed", f32(m["mixed"])),
           ("meta/teacher_probs", f32(m["teacher"])),
           ("meta/cls_mixed", f32(m["cls_mixed"])),
           ("meta/outer_kl", f32(m["outer_kl"])),
           ("meta/mask_mean", f32(m["mask_mean"])),
           ("meta/z_grad0", f32(m["z_grad0"])),
           ("meta/z_final", f32(m["z_final"])),
           ("meta/labels_y", f32(m["labels_y"])),
           ("meta/stage_b_losses", f32(m["stage_b_losses"]))]
    ts += [("meta/hyper_after/" + n, f32(m["hyper_after"][n])) for n in d["Q"]]
    for i in range(META["batch"]):
        ts += [("meta/delta/%d/%s" % (i, n), f32(m["delta"][k][i]))
               for k, n in enumerate(EDIT_NAMES)]
    ts += [("edit/images", f32(d["edit_images"])),
           ("edit/labels", f32(r["edit_labels"].double())),
           ("edit/logits", f32(r["edit_logits"]))]
    ts += [("edit/mask/" + u, f32(mk)) for (u, _), mk in zip(UNITS, d["hprd_masks"])]
    for key in ("hprd", "ft_l1", "ft_l2"):
        Ws, losses = r["edit"][key]
        ts += [("edit/%s/%s" % (key, n), f32(w)) for n, w in zip(EDIT_NAMES, Ws)]
        ts.append(("edit/%s_losses" % key, f32(losses)))
    return ts


def fp32_report(d, r64):
    """Rerun (a) in float32 and report max |fp32 - fp64| per stored group."""
    r32 = compute(d, torch.float32)
    assert torch.equal(r32["edit_labels"], r64["edit_labels"])
    rows = []

    def add(label, a, b):
        a = torch.as_tensor(a, dtype=torch.float64)
        b = torch.as_tensor(b, dtype=torch.float64)
        rows.append((label, (a - b).abs().max().item(), b.abs().max().item()))

    add("hyper/scores", r32["hyper"][0], r64["hyper"][0])
    add("hyper/grad/*", torch.cat([r32["hyper"][2][n].flatten() for n in d["Q"]]),
        torch.cat([r64["hyper"][2][n].flatten() for n in d["Q"]]))
    m32, m64 = r32["meta"], r64["meta"]
    for k in ("teacher", "cls_mixed", "outer_kl", "mask_mean", "z_grad0", "z_final",
              "labels_y", "stage_b_losses"):
        add("meta/" + k, m32[k], m64[k])
    add("meta/delta/*", torch.cat([t.flatten() for t in m32["delta"]]),
        torch.cat([t.flatten() for t in m64["delta"]]))
    add("meta/hyper_after/*", torch.cat([m32["hyper_after"][n].flatten() for n in d["Q"]]),
        torch.cat([m64["hyper_after"][n].flatten() for n in d["Q"]]))
    for key in ("hprd", "ft_l1", "ft_l2"):
        add("edit/%s/*" % key, torch.cat([w.flatten() for w in r32["edit"][key][0]]),
            torch.cat([w.flatten() for w in r64["edit"][key][0]]))
        add("edit/%s_losses" % key, r32["edit"][key][1], r64["edit"][key][1])
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--no-fp32-report", action="store_true")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)

    d, r, rep, info = build()
    worst = max(rep, key=lambda t: t[1])
    print("(a) batched/own vs (b) reference port: %d comparisons, worst %s = %.3g"
          % (len(rep), worst[0], worst[1]))
    if args.verbose:
        for label, diff in rep:
            print("  %-50s %.3g" % (label, diff))
    print("info:", json.dumps(info))

    tensors = tensors_of(d, r)
    meta = {
        "config": json.dumps(BASE_CFG),
        "hyper_config": json.dumps(HYPER_CFG),
        "edit_blocks": json.dumps(EDIT_BLOCKS),
        "units": json.dumps([[u, k] for u, k in UNITS]),
        "hyper_test": json.dumps(HYPER_TEST),
        "meta_hparams": json.dumps(META),
        "edit_hparams": json.dumps(EDIT),
        "temperature": repr(META["temperature"]),
        "seed": str(SEED),
        "torch_version": torch.__version__,
        "description": ("WhereToEdit method fixture: tiny timm-layout ViT + mask hypernetwork; "
                        "hypernet forward/backward, one meta-training iteration (decoupled "
                        "stage A + stage B), HPRD / FT-L1 / FT-L2 edits; inputs drawn float32, "
                        "computed in float64, stored float32; written by "
                        "tests/reference/make_method_fixtures.py"),
    }
    path = os.path.join(args.out, NAME + ".safetensors")
    mf.write_safetensors(path, tensors, meta)
    rmeta, rtensors = mf.read_safetensors(path)
    assert rmeta == {k: str(v) for k, v in meta.items()}
    assert [n for n, _ in rtensors] == [n for n, _ in tensors]
    for (n, a), (_, b) in zip(tensors, rtensors):
        assert a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32)), n
    size = os.path.getsize(path)
    print("%s: %d tensors, %d bytes -> %s" % (NAME, len(tensors), size, path))
    assert size < 2 * 1024 * 1024, "fixture exceeds 2 MB"

    if not args.no_fp32_report:
        print("fp32 rerun of (a): max |fp32 - fp64| (max |fp64|)")
        for label, diff, scale in fp32_report(d, r):
            print("  %-28s %.3g  (%.3g)" % (label, diff, scale))


if __name__ == "__main__":
    sys.exit(main())
