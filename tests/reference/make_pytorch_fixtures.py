#!/usr/bin/env python3
"""Writes the PyTorch-checkpoint fixtures: tiny ViTs and the reference's hypernetwork saved with torch.save,
the outputs PyTorch computes for them, and a corpus of malicious or broken checkpoints.

    /usr/bin/python3 tests/reference/make_pytorch_fixtures.py

Outputs (tests/reference/fixtures/pytorch/):
  timm_fp32.pth        {"model": model.state_dict() with "module." names, "epoch": 3}: timm names, F32; norm1
                       weight/bias of block 0 share one storage (bias at a storage offset), every fc1.weight is a
                       transposed (non-contiguous) view, state dict _metadata kept (BUILD opcode)
  timm_fp32_legacy.pth the same in the legacy format (_use_new_zipfile_serialization=False)
  timm_fp16.pth        plain state dict, F16
  hf/pytorch_model.bin Hugging Face ViTForImageClassification names, F32, + an int64 buffer that must be skipped
  hf/config.json       Hugging Face ViTConfig
  hypernet_ref.pth     state dict of HyperNetwork_mask (the reference class, port below) for the tiny ViT
  expected.safetensors input [B,C,H,W]; probs_fp32 / probs_fp16 [B,K] (float64 softmax → F32);
                       hyper_cls [B,D] (the tiny ViT's [CLS] features of `input`), hyper_scores [B,R,H] (the
                       port's masks), hyper_mask [R*H] (the port's binary mask for an edit on images 0 and 1 at
                       keep 0.25, exactly k units kept); edit/<name> the edited fc1/fc2 weights and
                       edit_losses after an HPRD edit of images 0, 1 with that mask (EDIT below)
  bad/*.pth            malicious or broken checkpoints (see BAD below); loading any of them must fail
Computation in float64 from the stored (F32 or F16-rounded) values.

`check_export.py FILE` loads a hypernetwork .pth written by `wte export` into the port (strict) and compares its
masks with expected.safetensors.
"""
import io
import json
import math
import os
import pickle
import re
import sys
import zipfile
from collections import OrderedDict

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_fixtures import draw_params, vit_forward, write_safetensors, read_safetensors, ce_per_sample  # noqa: E402

OUT = os.path.join(HERE, "fixtures", "pytorch")
SEED = 1313
CFG = dict(image_size=16, patch_size=4, in_chans=3, embed_dim=16, depth=3, num_heads=2, mlp_hidden=32,
           num_classes=8, ln_eps=1e-6, qkv_bias=True)
EDIT_BLOCKS = [1, 2]
# Our HypernetConfig.For rule: heads of 128 where the width allows, else 64, else the largest of 4, 3, 2, 1.
HYPER = dict(embed_dim=16, depth=2, num_heads=4, mlp_hidden=16, units=2 * len(EDIT_BLOCKS),
             unit_size=CFG["mlp_hidden"], amplify=3, ep=1e-7)
BATCH = 3
KEEP = 0.25
# The edit: images 0 and 1 → EDIT_LABELS, HPRD masked RMSprop (editing/hprdmask.py HPRD.edit) for EDIT_STEPS steps.
EDIT_LABELS = [3, 6]
EDIT = dict(lr=1e-2, alpha=0.99, eps=1e-8, steps=4)


# ---------------------------------------------------------------------------------------------
# The reference hypernetwork (editing/hprdmask.py HyperNetwork_mask, Outblock ep = 1e-7), ported with the
# widths as parameters (the reference hard-codes 768 wide, 6 heads, 6 heads of 3072, MLP 768).
# ---------------------------------------------------------------------------------------------
class Attention(nn.Module):
    def __init__(self, D, heads):
        super().__init__()
        self.num_attention_heads = heads
        self.attention_head_size = D // heads
        self.all_head_size = D
        self.query, self.key, self.value = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)
        self.out = nn.Linear(D, D)
        self.softmax = nn.Softmax(dim=-1)

    def transpose_for_scores(self, x):
        return x.view(*(x.size()[:-1] + (self.num_attention_heads, self.attention_head_size))).permute(0, 2, 1, 3)

    def forward(self, hidden_states):
        q = self.transpose_for_scores(self.query(hidden_states))
        k = self.transpose_for_scores(self.key(hidden_states))
        v = self.transpose_for_scores(self.value(hidden_states))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
        ctx = torch.matmul(self.softmax(scores), v).permute(0, 2, 1, 3).contiguous()
        return self.out(ctx.view(*(ctx.size()[:-2] + (self.all_head_size,))))


class Mlp(nn.Module):
    def __init__(self, D, Dm):
        super().__init__()
        self.fc1, self.fc2, self.act_fn = nn.Linear(D, Dm), nn.Linear(Dm, D), nn.GELU()

    def forward(self, x):
        return self.fc2(self.act_fn(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, D, heads, Dm):
        super().__init__()
        self.hidden_size = D
        self.attention_norm = nn.LayerNorm(D, eps=1e-6)
        self.ffn_norm = nn.LayerNorm(D, eps=1e-6)
        self.ffn = Mlp(D, Dm)
        self.attn = Attention(D, heads)

    def forward(self, x):
        h = x
        x = self.attn(self.attention_norm(x)) + h
        h = x
        return self.ffn(self.ffn_norm(x)) + h


class Outblock(nn.Module):
    def __init__(self, D, out_dim, amplify, ep):
        super().__init__()
        self.out = nn.Linear(D, out_dim)
        self.act_out = nn.Sigmoid()
        self.amplify, self.ep = amplify, ep

    def forward(self, x):
        return torch.clamp(self.act_out(self.amplify * self.out(x)), min=self.ep, max=1 - self.ep)


class HyperNetwork_mask(nn.Module):
    def __init__(self, h):
        super().__init__()
        D, R = h["embed_dim"], h["units"]
        self.cls_token = nn.Parameter(torch.zeros(1, R, D))
        self.layer = nn.ModuleList([Block(D, h["num_heads"], h["mlp_hidden"]) for _ in range(h["depth"])])
        self.out_layer = nn.ModuleList([Outblock(D, h["unit_size"], h["amplify"], h["ep"]) for _ in range(R)])
        self.learn_masks = nn.Parameter(2 * torch.rand(R, h["unit_size"]) - 1)   # unused by forward, as in the reference

    def forward(self, x):
        B = x.shape[0]
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        for layer_block in self.layer:
            x = layer_block(x)
        return torch.cat([o(x[:, i:i + 1]) for i, o in enumerate(self.out_layer)], dim=1)


def generate_mask(scores, keep):
    """VariationalMasks.generate_masks, keeping exactly k units (method.md §2): mean over images, global top-k."""
    m = scores.mean(0).reshape(-1)
    k = int(math.floor(keep * m.numel()))
    idx = torch.topk(m, k).indices
    out = torch.zeros_like(m)
    out[idx] = 1
    return out


def hprd_edit(P, x, labels, mask):
    """HPRD.edit: RMSprop on the fc1/fc2 weights of the edit blocks, gradients gated by the binary mask (rows of fc1,
    columns of fc2), fixed number of steps (no stop rule), float64."""
    Q = {n: t.double().clone() for n, t in P.items()}
    names = []
    for b in EDIT_BLOCKS:
        names += ["blocks.%d.mlp.fc1.weight" % b, "blocks.%d.mlp.fc2.weight" % b]
    for n in names:
        Q[n].requires_grad_(True)
    opt = torch.optim.RMSprop([Q[n] for n in names], lr=EDIT["lr"], alpha=EDIT["alpha"], eps=EDIT["eps"])
    H = CFG["mlp_hidden"]
    losses = []
    for _ in range(EDIT["steps"]):
        opt.zero_grad()
        logits, _ = vit_forward(Q, x.double(), CFG)
        loss = ce_per_sample(logits, labels).mean()
        losses.append(loss.item())
        loss.backward()
        for r, n in enumerate(names):
            m = mask[r * H:(r + 1) * H].double()
            Q[n].grad.mul_(m[:, None] if ".fc1." in n else m[None, :])
        opt.step()
    return {n: Q[n].detach() for n in names}, losses


# ---------------------------------------------------------------------------------------------
def timm_module_state_dict(P):
    """A real nn.Module state dict (with _metadata) holding the parameters P (timm names)."""
    mod = nn.Module()
    for name, t in P.items():
        parts = name.split(".")
        m = mod
        for p in parts[:-1]:
            if not hasattr(m, p):
                m.add_module(p, nn.Module())
            m = getattr(m, p)
        m.register_parameter(parts[-1], nn.Parameter(t.clone()))
    return mod.state_dict()


def to_hf(P, cfg):
    D = cfg["embed_dim"]
    H = OrderedDict()
    H["vit.embeddings.cls_token"] = P["cls_token"]
    H["vit.embeddings.position_embeddings"] = P["pos_embed"]
    H["vit.embeddings.patch_embeddings.projection.weight"] = P["patch_embed.proj.weight"]
    H["vit.embeddings.patch_embeddings.projection.bias"] = P["patch_embed.proj.bias"]
    for i in range(cfg["depth"]):
        b, l = "blocks.%d." % i, "vit.encoder.layer.%d." % i
        for s in ("weight", "bias"):
            qkv = P[b + "attn.qkv." + s]
            for j, nm in enumerate(("query", "key", "value")):
                H[l + "attention.attention.%s.%s" % (nm, s)] = qkv[j * D:(j + 1) * D].clone()
            H[l + "attention.output.dense." + s] = P[b + "attn.proj." + s]
            H[l + "intermediate.dense." + s] = P[b + "mlp.fc1." + s]
            H[l + "output.dense." + s] = P[b + "mlp.fc2." + s]
            H[l + "layernorm_before." + s] = P[b + "norm1." + s]
            H[l + "layernorm_after." + s] = P[b + "norm2." + s]
    H["vit.layernorm.weight"], H["vit.layernorm.bias"] = P["norm.weight"], P["norm.bias"]
    H["classifier.weight"], H["classifier.bias"] = P["head.weight"], P["head.bias"]
    return H


def hf_config(cfg):
    return {"architectures": ["ViTForImageClassification"], "model_type": "vit", "hidden_size": cfg["embed_dim"],
            "num_hidden_layers": cfg["depth"], "num_attention_heads": cfg["num_heads"],
            "intermediate_size": cfg["mlp_hidden"], "hidden_act": "gelu", "layer_norm_eps": cfg["ln_eps"],
            "image_size": cfg["image_size"], "patch_size": cfg["patch_size"], "num_channels": cfg["in_chans"],
            "qkv_bias": cfg["qkv_bias"], "id2label": {str(i): "class_%d" % i for i in range(cfg["num_classes"])},
            "label2id": {"class_%d" % i: i for i in range(cfg["num_classes"])}}


def probs_of(P, x):
    logits, feat = vit_forward({k: v.double() for k, v in P.items()}, x.double(), CFG)
    return torch.softmax(logits, -1), feat


# ---------------------------------------------------------------------------------------------
# Malicious / broken checkpoints, written as torch.save archives with a hand-made data.pkl.
# ---------------------------------------------------------------------------------------------
class Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


class StoragePid:
    def __init__(self, key, numel, stype="FloatStorage"):
        self.key, self.numel, self.stype = key, numel, stype


class ForgedPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, StoragePid):
            return ("storage", getattr(torch, obj.stype), obj.key, "cpu", obj.numel)
        return None


def forged_tensor(key, numel, offset, size, stride):
    from torch._utils import _rebuild_tensor_v2
    return Reduce(_rebuild_tensor_v2, (StoragePid(key, numel), offset, tuple(size), tuple(stride), False, OrderedDict()))


def write_archive(path, obj=None, storages=None, pkl=None, byteorder=None, protocol=2):
    if pkl is None:
        buf = io.BytesIO()
        ForgedPickler(buf, protocol=protocol).dump(obj)
        pkl = buf.getvalue()
    def put(z, name, data):   # fixed timestamps: the same bytes on every run
        z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        put(z, "archive/data.pkl", pkl)
        if byteorder is not None:
            put(z, "archive/byteorder", byteorder)
        for key, data in (storages or {}).items():
            put(z, "archive/data/" + key, data)
        put(z, "archive/version", "3\n")


def make_bad(bad, good_path):
    import os as _os
    import builtins
    f4 = torch.arange(6, dtype=torch.float32).numpy().tobytes()
    ok_tensor = lambda: forged_tensor("0", 6, 0, [2, 3], [3, 1])  # noqa: E731
    cases = {
        # code execution attempts: must be refused by name before anything is built
        "reduce_os_system": dict(obj=OrderedDict(w=Reduce(_os.system, ("touch /tmp/wte_pwned",)))),
        "builtins_eval": dict(obj=OrderedDict(w=Reduce(builtins.eval, ("1+1",)))),
        "stack_global_os_system": dict(obj=OrderedDict(w=Reduce(_os.system, ("touch /tmp/wte_pwned",))), protocol=4),
        # broken structure
        "storage_out_of_bounds": dict(obj=OrderedDict(w=forged_tensor("0", 6, 4, [2, 3], [3, 1])), storages={"0": f4}),
        "storage_member_short": dict(obj=OrderedDict(w=ok_tensor()), storages={"0": f4[:8]}),
        "storage_missing": dict(obj=OrderedDict(w=ok_tensor()), storages={}),
        "storage_numel_huge": dict(obj=OrderedDict(w=forged_tensor("0", 10 ** 15, 0, [2, 3], [3, 1])), storages={"0": f4}),
        "wrong_byteorder": dict(obj=OrderedDict(w=ok_tensor()), storages={"0": f4}, byteorder="big"),
        "not_a_dict": dict(obj=[ok_tensor()], storages={"0": f4}),
        "no_tensors": dict(obj=OrderedDict(epoch=3, note="hello")),
    }
    for name, spec in cases.items():
        write_archive(os.path.join(bad, name + ".pth"), **spec)
    with open(good_path, "rb") as f:
        data = f.read()
    with open(os.path.join(bad, "truncated_zip.pth"), "wb") as f:
        f.write(data[: len(data) // 2])
    with open(os.path.join(bad, "empty.pth"), "wb") as f:
        pass
    legacy = io.BytesIO()
    torch.save(OrderedDict(w=torch.ones(2), v=torch.arange(3.)), legacy, _use_new_zipfile_serialization=False)
    with open(os.path.join(bad, "legacy_truncated.pth"), "wb") as f:
        f.write(legacy.getvalue()[:-6])
    legacy_big = re.sub(rb"(little_endianq.)\x88", lambda m: m.group(1) + b"\x89", legacy.getvalue())
    assert legacy_big != legacy.getvalue()
    with open(os.path.join(bad, "legacy_big_endian.pth"), "wb") as f:
        f.write(legacy_big)
    # a whole module instead of its state dict: names torch.nn.modules.linear.Linear (an unknown global)
    torch.manual_seed(0)
    torch.save(nn.Linear(2, 2), os.path.join(bad, "unknown_global.pth"))
    # the safe cases in the corpus must still be refused by torch's own weights_only loader or by us; sanity:
    # a good forged archive loads in torch (the forging itself is right)
    write_archive("/tmp/wte_forged_ok.pth", obj=OrderedDict(w=ok_tensor()), storages={"0": f4})
    assert torch.equal(torch.load("/tmp/wte_forged_ok.pth")["w"], torch.arange(6.).reshape(2, 3))
    os.remove("/tmp/wte_forged_ok.pth")
    return sorted(list(cases) + ["truncated_zip", "empty", "legacy_truncated", "legacy_big_endian", "unknown_global"])


def main():
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    os.makedirs(os.path.join(OUT, "hf"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "bad"), exist_ok=True)
    P = draw_params(CFG, gen)
    x = torch.randn(BATCH, CFG["in_chans"], CFG["image_size"], CFG["image_size"], generator=gen)

    # --- timm, F32, wrapped, DataParallel prefix, shared storage, non-contiguous views
    sd = timm_module_state_dict(P)
    D = CFG["embed_dim"]
    shared = torch.cat([P["blocks.0.norm1.weight"], P["blocks.0.norm1.bias"]])
    sd["blocks.0.norm1.weight"], sd["blocks.0.norm1.bias"] = shared[:D], shared[D:]
    for i in range(CFG["depth"]):
        n = "blocks.%d.mlp.fc1.weight" % i
        sd[n] = P[n].t().contiguous().t()
        assert not sd[n].is_contiguous()
    wrapped = OrderedDict((("module." + k), v) for k, v in sd.items())
    wrapped._metadata = sd._metadata
    torch.save({"model": wrapped, "epoch": 3}, os.path.join(OUT, "timm_fp32.pth"))
    back = torch.load(os.path.join(OUT, "timm_fp32.pth"))["model"]
    assert back["module.blocks.0.norm1.bias"].storage_offset() == D
    assert back["module.blocks.0.norm1.weight"].storage().data_ptr() == back["module.blocks.0.norm1.bias"].storage().data_ptr()
    assert not back["module.blocks.0.mlp.fc1.weight"].is_contiguous()

    # --- the same, in the legacy (pre-1.6) format
    torch.save({"model": wrapped, "epoch": 3}, os.path.join(OUT, "timm_fp32_legacy.pth"), _use_new_zipfile_serialization=False)
    back = torch.load(os.path.join(OUT, "timm_fp32_legacy.pth"))["model"]
    assert back["module.blocks.0.norm1.bias"].storage_offset() == D

    # --- timm, F16
    P16 = OrderedDict((k, v.half()) for k, v in P.items())
    torch.save(P16, os.path.join(OUT, "timm_fp16.pth"))

    # --- Hugging Face folder
    H = to_hf(P, CFG)
    H["vit.embeddings.position_ids"] = torch.arange((CFG["image_size"] // CFG["patch_size"]) ** 2 + 1).unsqueeze(0)
    torch.save(H, os.path.join(OUT, "hf", "pytorch_model.bin"))
    with open(os.path.join(OUT, "hf", "config.json"), "w") as f:
        json.dump(hf_config(CFG), f, indent=2)

    probs32, feat = probs_of(P, x)
    probs16, _ = probs_of({k: v.float() for k, v in P16.items()}, x)

    # --- the reference hypernetwork
    net = HyperNetwork_mask(HYPER)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name == "cls_token":
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    torch.save(net.state_dict(), os.path.join(OUT, "hypernet_ref.pth"))
    port = HyperNetwork_mask(HYPER).double()
    port.load_state_dict({k: v.double() for k, v in torch.load(os.path.join(OUT, "hypernet_ref.pth")).items()}, strict=True)
    cls32 = feat.float()
    with torch.no_grad():
        scores = port(cls32.double().unsqueeze(1))
    mask = generate_mask(scores[:2], KEEP)

    edited, losses = hprd_edit(P, x[:2], torch.tensor(EDIT_LABELS), mask)

    tensors = [("input", x.float()), ("probs_fp32", probs32.float()), ("probs_fp16", probs16.float()),
               ("hyper_cls", cls32), ("hyper_scores", scores.float()), ("hyper_mask", mask.float()),
               ("edit_losses", torch.tensor(losses).float())]
    tensors += [("edit/" + n, t.float()) for n, t in edited.items()]
    meta = {"config": json.dumps(CFG), "hyper": json.dumps(HYPER), "edit_blocks": json.dumps(EDIT_BLOCKS),
            "keep": repr(KEEP), "edit_labels": json.dumps(EDIT_LABELS), "edit": json.dumps(EDIT), "seed": str(SEED), "torch_version": torch.__version__,
            "description": "PyTorch checkpoint fixtures; written by tests/reference/make_pytorch_fixtures.py"}
    write_safetensors(os.path.join(OUT, "expected.safetensors"), [(n, t.numpy()) for n, t in tensors], meta)

    names = make_bad(os.path.join(OUT, "bad"), os.path.join(OUT, "timm_fp32.pth"))
    assert not os.path.exists("/tmp/wte_pwned")
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print("wrote %s (%d bytes); bad: %s" % (OUT, total, ", ".join(names)))
    print("top-5 fp32:", torch.topk(probs32, 5).indices.tolist())


if __name__ == "__main__":
    main()
