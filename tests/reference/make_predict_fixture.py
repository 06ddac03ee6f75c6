#!/usr/bin/env python3
"""Writes the `wte predict` reference: a tiny timm-named ViT as a hub-style folder, two committed PNGs and the
logits PyTorch computes for them after torchvision-style preprocessing done with PIL.

    /usr/bin/python3 tests/reference/make_predict_fixture.py

Outputs (tests/reference/fixtures/):
  predict_model/model.safetensors   timm names, F32
  predict_model/config.json         timm hub config: pretrained_cfg (input 32, bicubic, crop_pct 32/36, mean = std = 0.5)
  predict_no_resample.png           36×44: its shorter side is already 36, so preprocessing is a center crop only
  predict_resample.png              53×47: needs a bicubic resize to shorter side 36 first
  predict.safetensors               pixels_* [3,32,32] (model input after preprocessing) and logits_* [6] (float64 → F32)
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import draw_params, vit_forward, write_safetensors  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures")
CFG = dict(image_size=32, patch_size=8, in_chans=3, embed_dim=32, depth=2, num_heads=2, mlp_hidden=64,
           num_classes=6, ln_eps=1e-6, qkv_bias=True)
CROP_PCT = 32 / 36
LABELS = ["shirt", "sandal", "bag", "coat", "boot", "dress"]


def make_image(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 127 // max(w + h - 2, 1))], -1)
    noise = rng.integers(-40, 41, size=(h, w, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def preprocess(img, resize, crop):
    """torchvision Resize(resize, BICUBIC) + CenterCrop(crop) + ToTensor + Normalize(0.5, 0.5), with PIL."""
    w, h = img.size
    if min(w, h) != resize:  # torchvision returns the image unchanged when the shorter side already matches
        if w <= h:
            nw, nh = resize, int(resize * h / w)
        else:
            nw, nh = int(resize * w / h), resize
        img = img.resize((nw, nh), Image.BICUBIC)
    w, h = img.size
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    img = img.crop((left, top, left + crop, top + crop))
    a = torch.from_numpy(np.asarray(img, dtype=np.float64) / 255.0).permute(2, 0, 1)
    return (a - 0.5) / 0.5


def main():
    gen = torch.Generator().manual_seed(2024)
    params32 = draw_params(CFG, gen)
    model_dir = os.path.join(OUT, "predict_model")
    os.makedirs(model_dir, exist_ok=True)
    write_safetensors(os.path.join(model_dir, "model.safetensors"), list(params32.items()), {"format": "pt"})
    config = {
        "architecture": "vit_custom_patch8_32", "num_classes": CFG["num_classes"], "num_features": CFG["embed_dim"],
        "global_pool": "token", "model_args": {"num_heads": CFG["num_heads"], "depth": CFG["depth"]},
        "label_names": LABELS,
        "pretrained_cfg": {"input_size": [3, 32, 32], "interpolation": "bicubic", "crop_pct": CROP_PCT,
                           "crop_mode": "center", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                           "num_classes": CFG["num_classes"]},
    }
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")

    P = {k: v.to(torch.float64) for k, v in params32.items()}
    tensors = []
    for name, (w, h, seed) in {"no_resample": (36, 44, 1), "resample": (53, 47, 2)}.items():
        img = make_image(w, h, seed)
        img.save(os.path.join(OUT, f"predict_{name}.png"))
        img = Image.open(os.path.join(OUT, f"predict_{name}.png")).convert("RGB")
        x = preprocess(img, int(np.floor(32 / CROP_PCT)), 32)
        with torch.no_grad():
            logits, _ = vit_forward(P, x.unsqueeze(0), CFG)
        tensors.append((f"pixels_{name}", x.to(torch.float32).contiguous()))
        tensors.append((f"logits_{name}", logits[0].to(torch.float32).contiguous()))
    write_safetensors(os.path.join(OUT, "predict.safetensors"), tensors,
                      {"description": "wte predict reference (tests/reference/make_predict_fixture.py)",
                       "torch_version": torch.__version__})


if __name__ == "__main__":
    main()
