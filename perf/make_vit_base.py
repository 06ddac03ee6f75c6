"""Writes the vit_base load test's inputs (perf/run-serve-bench.sh vit_base): ViT-B/16 (timm's vit_base_patch16_224:
224 px, patch 16, width 768, depth 12, 12 heads, MLP 3072, 1000 classes) with random weights (seeded; normal(0, 0.02)
matrices, LayerNorm 1/0) as one self-describing safetensors file in timm names, which both servers load, and a few
224x224 RGB PNGs (filter type 0, so that the peer's pure-Python decoder takes its fast path). The preprocessing is
the identity resize (224 -> 224) with ImageNet's mean/std, so both servers see the same tensor.
Usage: /usr/bin/python3 perf/make_vit_base.py OUT_DIR
"""
import json, os, struct, sys, zlib

import numpy as np

D, depth, heads, mlp, classes, img, patch = 768, 12, 12, 3072, 1000, 224, 16


def tensors(rng):
    t = {}
    n = lambda *s: (rng.standard_normal(s, dtype=np.float32) * 0.02)
    t["cls_token"] = n(1, 1, D)
    t["pos_embed"] = n(1, (img // patch) ** 2 + 1, D)
    t["patch_embed.proj.weight"] = n(D, 3, patch, patch)
    t["patch_embed.proj.bias"] = np.zeros(D, np.float32)
    for b in range(depth):
        p = f"blocks.{b}."
        t[p + "norm1.weight"], t[p + "norm1.bias"] = np.ones(D, np.float32), np.zeros(D, np.float32)
        t[p + "attn.qkv.weight"], t[p + "attn.qkv.bias"] = n(3 * D, D), np.zeros(3 * D, np.float32)
        t[p + "attn.proj.weight"], t[p + "attn.proj.bias"] = n(D, D), np.zeros(D, np.float32)
        t[p + "norm2.weight"], t[p + "norm2.bias"] = np.ones(D, np.float32), np.zeros(D, np.float32)
        t[p + "mlp.fc1.weight"], t[p + "mlp.fc1.bias"] = n(mlp, D), np.zeros(mlp, np.float32)
        t[p + "mlp.fc2.weight"], t[p + "mlp.fc2.bias"] = n(D, mlp), np.zeros(D, np.float32)
    t["norm.weight"], t["norm.bias"] = np.ones(D, np.float32), np.zeros(D, np.float32)
    t["head.weight"], t["head.bias"] = n(classes, D), np.zeros(classes, np.float32)
    return t


def write_atomic(path, data_parts):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        for part in data_parts:
            f.write(part)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_safetensors(path, t):
    meta = {
        "format": "pt",
        "wte.config": json.dumps({"image_size": img, "patch_size": patch, "in_chans": 3, "embed_dim": D, "depth": depth,
                                  "num_heads": heads, "mlp_hidden": mlp, "num_classes": classes, "ln_eps": 1e-6,
                                  "qkv_bias": True, "heads_source": "wte.config"}),
        "wte.preprocessing": json.dumps({"resize_mode": "direct", "resize_size": img, "crop_size": img, "interpolation": "bilinear",
                                         "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "channels": 3,
                                         "alpha": "drop", "precision": "pil_uint8", "exif_orientation": True}),
    }
    header, offset, blobs = {"__metadata__": meta}, 0, []
    for name in sorted(t):
        b = np.ascontiguousarray(t[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t[name].shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    write_atomic(path, [struct.pack("<Q", len(h)), h] + blobs)


def write_png(path, rgb):
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    write_atomic(path, [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)),
                        chunk(b"IDAT", zlib.compress(raw, 6)), chunk(b"IEND", b"")])


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    model = os.path.join(out, "vit_base.safetensors")
    if not os.path.exists(model):
        write_safetensors(model, tensors(rng))
    for i in range(4):
        path = os.path.join(out, f"img{i}.png")
        if not os.path.exists(path):
            # smooth colour gradients plus noise: compressible like a photo, not a constant
            y, x = np.mgrid[0:img, 0:img]
            base = np.stack([(x * (i + 1)) % 256, (y * (i + 2)) % 256, ((x + y) * (i + 3) // 2) % 256], -1)
            noise = rng.integers(0, 24, size=base.shape)
            write_png(path, ((base + noise) % 256).astype(np.uint8))
    print(model)


if __name__ == "__main__":
    main()
