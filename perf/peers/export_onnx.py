#!/usr/bin/env python3
"""Exports a wte ViT (self-describing safetensors: timm names + wte.config metadata) to ONNX with Debian's PyTorch 1.13.

    /usr/bin/python3 perf/peers/export_onnx.py WEIGHTS.safetensors OUT.onnx [--opset 17]

The model is the hand-written timm-equivalent ViT of perf/peers/pytorch_edit.py with the file's weights (the same
numbers wte runs); the batch axis is dynamic. Checks the export with one forward against PyTorch when onnxruntime's
Python package is present (it is not on Debian 12; perf/OrtBench compares logits instead).
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_edit import ViT, read_safetensors  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("weights")
    ap.add_argument("out")
    ap.add_argument("--opset", type=int, default=17)
    args = ap.parse_args()
    tensors, meta = read_safetensors(args.weights)
    if "wte.config" not in meta:
        raise SystemExit(f"{args.weights}: no wte.config metadata (write it with EditBench --write-weights)")
    c = json.loads(meta["wte.config"])
    model = ViT(c).eval()
    model.load_state_dict(tensors, strict=True)
    x = torch.zeros(1, c["in_chans"], c["image_size"], c["image_size"])
    tmp = args.out + ".tmp"
    torch.onnx.export(model, x, tmp, input_names=["images"], output_names=["logits"], opset_version=args.opset,
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, do_constant_folding=True)
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.0f} MB, opset {args.opset})")


if __name__ == "__main__":
    sys.exit(main())
