#!/usr/bin/python3
"""Builds a tiny AugReg-style .npz with NumPy itself, plus the timm tensors it must map to.

Run with Debian's interpreter (needs python3-numpy):
    /usr/bin/python3 tests/reference/make_npz_fixture.py

Writes, into tests/reference/fixtures/:
  augreg_tiny.npz                 np.savez_compressed of Flax-layout ViT params (dim 8, 2 heads, depth 2,
                                  mlp 16, patch 4, 8 px, 3 channels, 5 classes) under Google's names
  augreg_tiny_timm.safetensors    the same parameters in timm names/layouts (F32), converted here with NumPy
                                  reshapes/transposes, independently of the C# code
"""
import json
import os
import struct

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
D, H, HD, DEPTH, MLP, P, C, IMG, K = 8, 2, 4, 2, 16, 4, 3, 8, 5
T = (IMG // P) ** 2 + 1


def main():
    rng = np.random.RandomState(7)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)
    flax = {
        "cls": r(1, 1, D),
        "Transformer/posembed_input/pos_embedding": r(1, T, D),
        "embedding/kernel": r(P, P, C, D),
        "embedding/bias": r(D),
        "Transformer/encoder_norm/scale": r(D),
        "Transformer/encoder_norm/bias": r(D),
        "head/kernel": r(D, K),
        "head/bias": r(K),
    }
    for i in range(DEPTH):
        b = f"Transformer/encoderblock_{i}/"
        a = b + "MultiHeadDotProductAttention_1/"
        flax.update({
            b + "LayerNorm_0/scale": r(D), b + "LayerNorm_0/bias": r(D),
            b + "LayerNorm_2/scale": r(D), b + "LayerNorm_2/bias": r(D),
            a + "query/kernel": r(D, H, HD), a + "query/bias": r(H, HD),
            a + "key/kernel": r(D, H, HD), a + "key/bias": r(H, HD),
            a + "value/kernel": r(D, H, HD), a + "value/bias": r(H, HD),
            a + "out/kernel": r(H, HD, D), a + "out/bias": r(D),
            b + "MlpBlock_3/Dense_0/kernel": r(D, MLP), b + "MlpBlock_3/Dense_0/bias": r(MLP),
            b + "MlpBlock_3/Dense_1/kernel": r(MLP, D), b + "MlpBlock_3/Dense_1/bias": r(D),
        })
    np.savez_compressed(os.path.join(OUT, "augreg_tiny.npz"), **flax)

    timm = [
        ("cls_token", flax["cls"]),
        ("pos_embed", flax["Transformer/posembed_input/pos_embedding"]),
        ("patch_embed.proj.weight", flax["embedding/kernel"].transpose(3, 2, 0, 1)),  # HWIO -> OIHW
        ("patch_embed.proj.bias", flax["embedding/bias"]),
    ]
    for i in range(DEPTH):
        b = f"Transformer/encoderblock_{i}/"
        a = b + "MultiHeadDotProductAttention_1/"
        t = f"blocks.{i}."
        qkv_w = np.concatenate([flax[a + n + "/kernel"].reshape(D, D).T for n in ("query", "key", "value")], axis=0)
        qkv_b = np.concatenate([flax[a + n + "/bias"].reshape(D) for n in ("query", "key", "value")])
        timm += [
            (t + "norm1.weight", flax[b + "LayerNorm_0/scale"]), (t + "norm1.bias", flax[b + "LayerNorm_0/bias"]),
            (t + "attn.qkv.weight", qkv_w), (t + "attn.qkv.bias", qkv_b),
            (t + "attn.proj.weight", flax[a + "out/kernel"].reshape(D, D).T), (t + "attn.proj.bias", flax[a + "out/bias"]),
            (t + "norm2.weight", flax[b + "LayerNorm_2/scale"]), (t + "norm2.bias", flax[b + "LayerNorm_2/bias"]),
            (t + "mlp.fc1.weight", flax[b + "MlpBlock_3/Dense_0/kernel"].T), (t + "mlp.fc1.bias", flax[b + "MlpBlock_3/Dense_0/bias"]),
            (t + "mlp.fc2.weight", flax[b + "MlpBlock_3/Dense_1/kernel"].T), (t + "mlp.fc2.bias", flax[b + "MlpBlock_3/Dense_1/bias"]),
        ]
    timm += [
        ("norm.weight", flax["Transformer/encoder_norm/scale"]), ("norm.bias", flax["Transformer/encoder_norm/bias"]),
        ("head.weight", flax["head/kernel"].T), ("head.bias", flax["head/bias"]),
    ]
    header, blobs, off = {}, [], 0
    for name, arr in timm:
        data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(os.path.join(OUT, "augreg_tiny_timm.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    print("wrote augreg_tiny.npz and augreg_tiny_timm.safetensors")


if __name__ == "__main__":
    main()
