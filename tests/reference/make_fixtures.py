#!/usr/bin/env python3
"""Write the reference fixtures the C# tests compare against.

Usage (Debian python with PyTorch 1.13 CPU, not a pyenv python):

    /usr/bin/python3 tests/reference/make_fixtures.py [--out DIR] [--only NAME]

For each small config below this builds a ViT laid out exactly like timm's
VisionTransformer (same parameter names and shapes, pre-norm blocks, fused
qkv, exact-erf GELU, class token, learned position embedding, final norm,
token-0 pooling, linear head), draws seeded float32 inputs and parameters,
then does every computation in float64 (the float32 values cast up) and stores
the results as float32 in tests/reference/fixtures/<name>.safetensors.

The safetensors writer and reader are written here by hand (no safetensors
package): u64 LE header length, a JSON header padded with spaces to a multiple
of 8 bytes, then the tensors packed row-major, little-endian, in header order.
After writing, each file is read back with the reader below and checked
bit-for-bit against what was meant to be written.

A self-check also runs before anything is written: the float64 forward is
compared against torch.nn.TransformerEncoderLayer(norm_first=True) fed the same
weights, as an independent implementation of the same block.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "fixtures")

TEMPERATURE = 5.0
N_STEPS = 3
MASK_KEEP_PROB = 0.4

CONFIGS = {
    "vit_rgb": dict(
        config=dict(image_size=32, patch_size=8, in_chans=3, embed_dim=64, depth=4,
                    num_heads=4, mlp_hidden=128, num_classes=10, ln_eps=1e-6,
                    qkv_bias=True),
        batch=3, edit_blocks=[1, 2], seed=1234),
    "vit_gray": dict(
        config=dict(image_size=28, patch_size=4, in_chans=1, embed_dim=36, depth=3,
                    num_heads=3, mlp_hidden=80, num_classes=7, ln_eps=1e-5,
                    qkv_bias=False),
        batch=2, edit_blocks=[1, 2], seed=5678),
}

OPTIMIZERS = {
    "sgd": dict(type="SGD", lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0,
                nesterov=False, steps=N_STEPS, params="edit matrices only",
                grad_mask=True),
    "rmsprop": dict(type="RMSprop", lr=1e-3, alpha=0.99, eps=1e-8, centered=False,
                    momentum=0.0, weight_decay=0.0, steps=N_STEPS,
                    params="edit matrices only", grad_mask=True),
    "adam": dict(type="Adam", lr=1e-3, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0,
                 amsgrad=False, steps=N_STEPS, params="edit matrices only",
                 grad_mask=True),
    "adamw": dict(type="AdamW", lr=1e-3, betas=[0.9, 0.999], eps=1e-8,
                  weight_decay=0.05, amsgrad=False, steps=N_STEPS,
                  params="all parameters", grad_mask=False),
}


# --------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------

def param_specs(cfg):
    """(name, shape, kind) in timm's named_parameters() order.

    kind: 'w' weight-like N(0, 0.1^2), 'b' bias N(0, 0.05^2),
          'lnw' 1 + 0.1 N(0,1), 'lnb' 0.1 N(0,1).
    """
    D, C, p = cfg["embed_dim"], cfg["in_chans"], cfg["patch_size"]
    H, K = cfg["mlp_hidden"], cfg["num_classes"]
    n_tok = (cfg["image_size"] // p) ** 2 + 1
    specs = [
        ("cls_token", (1, 1, D), "w"),
        ("pos_embed", (1, n_tok, D), "w"),
        ("patch_embed.proj.weight", (D, C, p, p), "w"),
        ("patch_embed.proj.bias", (D,), "b"),
    ]
    for i in range(cfg["depth"]):
        b = "blocks.%d." % i
        specs += [
            (b + "norm1.weight", (D,), "lnw"),
            (b + "norm1.bias", (D,), "lnb"),
            (b + "attn.qkv.weight", (3 * D, D), "w"),
        ]
        if cfg["qkv_bias"]:
            specs.append((b + "attn.qkv.bias", (3 * D,), "b"))
        specs += [
            (b + "attn.proj.weight", (D, D), "w"),
            (b + "attn.proj.bias", (D,), "b"),
            (b + "norm2.weight", (D,), "lnw"),
            (b + "norm2.bias", (D,), "lnb"),
            (b + "mlp.fc1.weight", (H, D), "w"),
            (b + "mlp.fc1.bias", (H,), "b"),
            (b + "mlp.fc2.weight", (D, H), "w"),
            (b + "mlp.fc2.bias", (D,), "b"),
        ]
    specs += [
        ("norm.weight", (D,), "lnw"),
        ("norm.bias", (D,), "lnb"),
        ("head.weight", (K, D), "w"),
        ("head.bias", (K,), "b"),
    ]
    return specs


def draw_params(cfg, gen):
    out = {}
    for name, shape, kind in param_specs(cfg):
        z = torch.randn(shape, generator=gen, dtype=torch.float32)
        if kind == "w":
            t = 0.1 * z
        elif kind == "b":
            t = 0.05 * z
        elif kind == "lnw":
            t = 1.0 + 0.1 * z
        else:
            t = 0.1 * z
        out[name] = t.to(torch.float32).contiguous()
    return out


# --------------------------------------------------------------------------
# Model (timm VisionTransformer semantics, functional form)
# --------------------------------------------------------------------------

def vit_forward(P, x, cfg):
    """Returns (logits [B,K], cls_feature [B,D]) for params dict P."""
    D, heads = cfg["embed_dim"], cfg["num_heads"]
    hd = D // heads
    eps = cfg["ln_eps"]
    p = cfg["patch_size"]
    B = x.shape[0]

    t = F.conv2d(x, P["patch_embed.proj.weight"], P["patch_embed.proj.bias"], stride=p)
    t = t.flatten(2).transpose(1, 2)                     # [B, Np, D]
    t = torch.cat([P["cls_token"].expand(B, -1, -1), t], dim=1)
    t = t + P["pos_embed"]
    N = t.shape[1]

    for i in range(cfg["depth"]):
        b = "blocks.%d." % i
        h = F.layer_norm(t, (D,), P[b + "norm1.weight"], P[b + "norm1.bias"], eps)
        qkv = F.linear(h, P[b + "attn.qkv.weight"], P.get(b + "attn.qkv.bias"))
        qkv = qkv.reshape(B, N, 3, heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                  # [B, heads, N, hd]
        a = torch.softmax((q @ k.transpose(-2, -1)) * hd ** -0.5, dim=-1)
        o = (a @ v).transpose(1, 2).reshape(B, N, D)
        t = t + F.linear(o, P[b + "attn.proj.weight"], P[b + "attn.proj.bias"])

        h = F.layer_norm(t, (D,), P[b + "norm2.weight"], P[b + "norm2.bias"], eps)
        h = F.linear(h, P[b + "mlp.fc1.weight"], P[b + "mlp.fc1.bias"])
        h = F.gelu(h)                                     # exact erf form
        t = t + F.linear(h, P[b + "mlp.fc2.weight"], P[b + "mlp.fc2.bias"])

    t = F.layer_norm(t, (D,), P["norm.weight"], P["norm.bias"], eps)
    feat = t[:, 0]
    logits = F.linear(feat, P["head.weight"], P["head.bias"])
    return logits, feat


def crosscheck_forward(P, x, cfg):
    """Same forward built from torch.nn.TransformerEncoderLayer; returns logits."""
    D, heads, H = cfg["embed_dim"], cfg["num_heads"], cfg["mlp_hidden"]
    eps, p = cfg["ln_eps"], cfg["patch_size"]
    B = x.shape[0]
    t = F.conv2d(x, P["patch_embed.proj.weight"], P["patch_embed.proj.bias"], stride=p)
    t = t.flatten(2).transpose(1, 2)
    t = torch.cat([P["cls_token"].expand(B, -1, -1), t], dim=1) + P["pos_embed"]
    for i in range(cfg["depth"]):
        b = "blocks.%d." % i
        layer = torch.nn.TransformerEncoderLayer(
            D, heads, dim_feedforward=H, dropout=0.0, activation="gelu",
            layer_norm_eps=eps, batch_first=True, norm_first=True).double()
        layer.train()  # keep off the fused inference fast path
        with torch.no_grad():
            layer.norm1.weight.copy_(P[b + "norm1.weight"])
            layer.norm1.bias.copy_(P[b + "norm1.bias"])
            layer.self_attn.in_proj_weight.copy_(P[b + "attn.qkv.weight"])
            if b + "attn.qkv.bias" in P:
                layer.self_attn.in_proj_bias.copy_(P[b + "attn.qkv.bias"])
            else:
                layer.self_attn.in_proj_bias.zero_()
            layer.self_attn.out_proj.weight.copy_(P[b + "attn.proj.weight"])
            layer.self_attn.out_proj.bias.copy_(P[b + "attn.proj.bias"])
            layer.norm2.weight.copy_(P[b + "norm2.weight"])
            layer.norm2.bias.copy_(P[b + "norm2.bias"])
            layer.linear1.weight.copy_(P[b + "mlp.fc1.weight"])
            layer.linear1.bias.copy_(P[b + "mlp.fc1.bias"])
            layer.linear2.weight.copy_(P[b + "mlp.fc2.weight"])
            layer.linear2.bias.copy_(P[b + "mlp.fc2.bias"])
        t = layer(t)
    t = F.layer_norm(t, (D,), P["norm.weight"], P["norm.bias"], eps)
    return F.linear(t[:, 0], P["head.weight"], P["head.bias"])


# --------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------

def ce_per_sample(logits, labels):
    return -torch.log_softmax(logits, dim=-1).gather(1, labels[:, None]).squeeze(1)


def kl_per_sample(logits, teacher_probs, T):
    logq = torch.log_softmax(logits / T, dim=-1)
    p = teacher_probs
    return (T * T) * (p * (torch.log(p) - logq)).sum(dim=-1)


# --------------------------------------------------------------------------
# safetensors (hand written)
# --------------------------------------------------------------------------

def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, float32 numpy array) in file order."""
    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    offset = 0
    blobs = []
    for name, arr in tensors:
        arr = np.ascontiguousarray(arr, dtype="<f4")
        nbytes = arr.size * 4
        header[name] = {"dtype": "F32", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + nbytes]}
        blobs.append(arr.tobytes(order="C"))
        offset += nbytes
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for blob in blobs:
            f.write(blob)


def read_safetensors(path):
    """Returns (metadata dict, list of (name, float32 array)) in header order."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0, "header not padded to 8 bytes"
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    body = data[8 + n:]
    out = []
    expect = 0
    for name, info in header.items():
        assert info["dtype"] == "F32", name
        start, end = info["data_offsets"]
        assert start == expect, "tensors not packed contiguously at " + name
        count = int(np.prod(info["shape"])) if info["shape"] else 1
        assert end - start == 4 * count, name
        arr = np.frombuffer(body[start:end], dtype="<f4").reshape(info["shape"])
        out.append((name, arr))
        expect = end
    assert expect == len(body), "trailing bytes after last tensor"
    return meta, out


# --------------------------------------------------------------------------
# Fixture generation
# --------------------------------------------------------------------------

def edit_names(edit_blocks):
    names = []
    for i in edit_blocks:
        names += ["blocks.%d.mlp.fc1.weight" % i, "blocks.%d.mlp.fc2.weight" % i]
    return names


def draw_mask(H, gen):
    while True:
        m = (torch.rand(H, generator=gen, dtype=torch.float32) < MASK_KEEP_PROB)
        m = m.to(torch.float32)
        if 0 < int(m.sum()) < H:
            return m


def run_optimizer(kind, P32, x, labels, cfg, train_names, masks):
    """3 steps of `kind` over train_names; returns (final params float64, losses)."""
    P = {n: t.double().clone() for n, t in P32.items()}
    for n in P:
        P[n].requires_grad_(n in train_names)
    params = [P[n] for n in train_names]
    h = OPTIMIZERS[kind]
    if kind == "sgd":
        opt = torch.optim.SGD(params, lr=h["lr"])
    elif kind == "rmsprop":
        opt = torch.optim.RMSprop(params, lr=h["lr"], alpha=h["alpha"], eps=h["eps"],
                                  weight_decay=0, momentum=0, centered=False)
    elif kind == "adam":
        opt = torch.optim.Adam(params, lr=h["lr"], betas=tuple(h["betas"]),
                               eps=h["eps"], weight_decay=0)
    elif kind == "adamw":
        opt = torch.optim.AdamW(params, lr=h["lr"], betas=tuple(h["betas"]),
                                eps=h["eps"], weight_decay=h["weight_decay"])
    else:
        raise ValueError(kind)
    losses = []
    for _ in range(N_STEPS):
        opt.zero_grad(set_to_none=True)
        logits, _ = vit_forward(P, x, cfg)
        loss = ce_per_sample(logits, labels).mean()
        losses.append(loss.item())
        loss.backward()
        if masks is not None:
            with torch.no_grad():
                for n in train_names:
                    m = masks[n.rsplit(".", 1)[0]].double()
                    if ".fc1." in n:
                        P[n].grad.mul_(m[:, None])      # rows of fc1.weight [H, D]
                    else:
                        P[n].grad.mul_(m[None, :])      # columns of fc2.weight [D, H]
        opt.step()
    return {n: P[n].detach() for n in train_names}, losses


def f32(t):
    if isinstance(t, (list, tuple)):
        t = torch.tensor(t, dtype=torch.float64)
    return t.detach().to(torch.float32).cpu().numpy()


def build_fixture(name, spec):
    cfg = spec["config"]
    B, K, H = spec["batch"], cfg["num_classes"], cfg["mlp_hidden"]
    C, S = cfg["in_chans"], cfg["image_size"]
    assert cfg["embed_dim"] % cfg["num_heads"] == 0
    assert S % cfg["patch_size"] == 0
    T = TEMPERATURE
    gen = torch.Generator().manual_seed(spec["seed"])

    # Draw order (all float32, one generator): input, labels, teacher logits,
    # parameters in timm order, then fc1/fc2 masks per edit block.
    x32 = torch.randn((B, C, S, S), generator=gen, dtype=torch.float32)
    labels = torch.randint(0, K, (B,), generator=gen)
    teacher_logits32 = 3.0 * torch.randn((B, K), generator=gen, dtype=torch.float32)
    P32 = draw_params(cfg, gen)
    masks = {}
    for i in spec["edit_blocks"]:
        masks["blocks.%d.mlp.fc1" % i] = draw_mask(H, gen)
        masks["blocks.%d.mlp.fc2" % i] = draw_mask(H, gen)

    teacher_probs32 = torch.softmax(teacher_logits32.double() / T, dim=-1).float()

    # ---- float64 from here on ----
    x = x32.double().requires_grad_(True)
    P = {n: t.double().requires_grad_(True) for n, t in P32.items()}
    p_teacher = teacher_probs32.double()

    logits, feat = vit_forward(P, x, cfg)
    with torch.no_grad():
        ref = crosscheck_forward({n: t.detach() for n, t in P.items()}, x.detach(), cfg)
        err = (ref - logits).abs().max().item()
        assert err < 1e-10, "%s: forward cross-check failed (%g)" % (name, err)

    ce_losses = ce_per_sample(logits, labels)
    ce_loss = ce_losses.mean()
    names = list(P32.keys())
    grads = torch.autograd.grad(ce_loss, [P[n] for n in names] + [x, logits],
                                retain_graph=True)
    g_param = dict(zip(names, grads[:len(names)]))
    g_input, ce_dlogits = grads[len(names)], grads[len(names) + 1]

    kl_losses = kl_per_sample(logits, p_teacher, T)
    kl_loss = kl_losses.mean()   # == T^2 * kl_div(log q, p, reduction='batchmean')
    with torch.no_grad():
        alt = (T * T) * F.kl_div(torch.log_softmax(logits / T, -1), p_teacher,
                                 reduction="batchmean")
        assert abs(alt.item() - kl_loss.item()) < 1e-12
    (kl_dlogits,) = torch.autograd.grad(kl_loss, logits)

    # Closed-form checks of the logit gradients.
    with torch.no_grad():
        onehot = F.one_hot(labels, K).double()
        assert torch.allclose(ce_dlogits, (torch.softmax(logits, -1) - onehot) / B,
                              atol=1e-14)
        q = torch.softmax(logits / T, -1)
        kl_closed = T * (q * p_teacher.sum(-1, keepdim=True) - p_teacher) / B
        assert torch.allclose(kl_dlogits, kl_closed, atol=1e-14)

    tensors = [
        ("input", f32(x32)),
        ("labels", f32(labels.double())),
        ("teacher_probs", f32(teacher_probs32)),
    ]
    tensors += [("param/" + n, f32(P32[n])) for n in names]
    tensors += [
        ("logits", f32(logits)),
        ("cls_feature", f32(feat)),
        ("ce_losses", f32(ce_losses)),
        ("ce_loss", f32(ce_loss.reshape(1))),
        ("ce_dlogits", f32(ce_dlogits)),
        ("kl_losses", f32(kl_losses)),
        ("kl_loss", f32(kl_loss.reshape(1))),
        ("kl_dlogits", f32(kl_dlogits)),
    ]
    tensors += [("grad/" + n, f32(g_param[n])) for n in names]
    tensors.append(("grad/input", f32(g_input)))
    tensors += [("mask/" + k, f32(m)) for k, m in masks.items()]

    enames = edit_names(spec["edit_blocks"])
    for kind in ("sgd", "rmsprop", "adam"):
        final, losses = run_optimizer(kind, P32, x32.double(), labels, cfg, enames, masks)
        tensors += [("%s/%s" % (kind, n), f32(final[n])) for n in enames]
        tensors.append(("%s_losses" % kind, f32(losses)))
        assert abs(losses[0] - ce_loss.item()) < 1e-12
    final, losses = run_optimizer("adamw", P32, x32.double(), labels, cfg, names, None)
    tensors += [("adamw/" + n, f32(final[n])) for n in names]
    tensors.append(("adamw_losses", f32(losses)))

    meta = {
        "config": json.dumps(cfg),
        "batch": str(B),
        "temperature": repr(T),
        "edit_blocks": json.dumps(spec["edit_blocks"]),
        "optimizers": json.dumps(OPTIMIZERS),
        "torch_version": torch.__version__,
        "seed": str(spec["seed"]),
        "description": ("WhereToEdit reference fixture '%s': timm-layout ViT params, "
                        "inputs, float64-computed forward/CE/KL/gradients/optimizer "
                        "steps stored as float32; written by "
                        "tests/reference/make_fixtures.py" % name),
    }
    return tensors, meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--only", choices=sorted(CONFIGS), default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    total = 0
    for name, spec in CONFIGS.items():
        if args.only and name != args.only:
            continue
        tensors, meta = build_fixture(name, spec)
        path = os.path.join(args.out, name + ".safetensors")
        write_safetensors(path, tensors, meta)

        # Round trip with our own reader: names, order, shapes, bits, metadata.
        rmeta, rtensors = read_safetensors(path)
        assert rmeta == {k: str(v) for k, v in meta.items()}
        assert [n for n, _ in rtensors] == [n for n, _ in tensors]
        for (n, a), (_, b) in zip(tensors, rtensors):
            assert a.shape == b.shape, n
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), n
        size = os.path.getsize(path)
        total += size
        print("%s: %d tensors, %d bytes -> %s" % (name, len(tensors), size, path))
    print("total %d bytes" % total)
    assert total < 5 * 1024 * 1024, "fixtures exceed 5 MB"


if __name__ == "__main__":
    sys.exit(main())
