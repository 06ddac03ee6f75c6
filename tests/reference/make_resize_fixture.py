#!/usr/bin/python3
"""Builds the PIL resize fixture for the C# resize tests (tests/WhereToEdit.Tests/IO/PilResizeTests.cs).

Run with Debian's interpreter (needs python3-pil and python3-numpy):
    /usr/bin/python3 tests/reference/make_resize_fixture.py

Writes, into tests/reference/fixtures/:
  resize_rgb_61x47.png, resize_gray_61x47.png   deterministic test images (sharp edges, gradients, noise)
  resize_pil.safetensors                         F16 tensors (values 0..255 are exact in F16):
      <kind>/input                      [47, 61, C]   the decoded PNG
      <kind>/<filter>/<W>x<H>           [H, W, C]     PIL Image.resize((W, H), filter)
      <kind>/pipeline/<filter>_s36_c32  [32, 32, C]   torchvision Resize(36) + CenterCrop(32) on the PIL image
  where kind is rgb (C=3) or gray (C=1), filter is bilinear or bicubic.
"""
import json
import os
import struct

import numpy as np
import PIL
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures")
W, H = 61, 47
SIZES = [(30, 23), (17, 40), (66, 51), (61, 30), (40, 47), (100, 9)]
FILTERS = {
    "bilinear": getattr(Image, "Resampling", Image).BILINEAR,
    "bicubic": getattr(Image, "Resampling", Image).BICUBIC,
}


def make_images():
    rng = np.random.RandomState(20240601)
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    r = 255 * x / (W - 1)
    g = 255 * y / (H - 1)
    b = 127.5 + 127.5 * np.sin(x * 0.7) * np.cos(y * 0.45)
    rgb = np.stack([r, g, b], axis=-1)
    checker = ((x // 5 + y // 7) % 2 == 0)[..., None]
    rgb = np.where(checker, rgb, 255 - rgb)  # hard edges: bicubic overshoot gets clipped
    rgb[10:14, :, :] = 0  # black bar
    rgb[:, 40:42, :] = 255  # white bar
    rgb += rng.normal(0, 12, size=rgb.shape)
    rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    gray = np.clip(np.rint(0.3 * rgb[..., 0] + 0.6 * rgb[..., 1] + 0.1 * rgb[..., 2] + rng.normal(0, 6, size=(H, W))), 0, 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB"), Image.fromarray(gray, "L")


def torchvision_resize_crop(img, size, crop, resample):
    """torchvision.transforms.Resize(size) + CenterCrop(crop) on a PIL image, written out."""
    w, h = img.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    img = img.resize((nw, nh), resample)
    top = int(round((nh - crop) / 2.0))
    left = int(round((nw - crop) / 2.0))
    return img.crop((left, top, left + crop, top + crop))


def as_hwc(img):
    a = np.asarray(img, dtype=np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    return a


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name, arr in tensors:
        data = np.ascontiguousarray(arr.astype("<f2")).tobytes()
        header[name] = {"dtype": "F16", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    os.makedirs(OUT, exist_ok=True)
    rgb, gray = make_images()
    rgb.save(os.path.join(OUT, "resize_rgb_61x47.png"), optimize=False)
    gray.save(os.path.join(OUT, "resize_gray_61x47.png"), optimize=False)
    tensors = []
    for kind, img in (("rgb", rgb), ("gray", gray)):
        tensors.append((f"{kind}/input", as_hwc(img)))
        for fname, f in FILTERS.items():
            for (w, h) in SIZES:
                tensors.append((f"{kind}/{fname}/{w}x{h}", as_hwc(img.resize((w, h), f))))
            tensors.append((f"{kind}/pipeline/{fname}_s36_c32", as_hwc(torchvision_resize_crop(img, 36, 32, f))))
    path = os.path.join(OUT, "resize_pil.safetensors")
    write_safetensors(path, tensors, {"pillow": PIL.__version__, "numpy": np.__version__, "generator": "make_resize_fixture.py"})
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(tensors)} tensors), Pillow {PIL.__version__}")


if __name__ == "__main__":
    main()
