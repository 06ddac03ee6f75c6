#!/usr/bin/env python3
"""Checks a hypernetwork .pth written by `wte export` against the reference class.

    /usr/bin/python3 tests/reference/check_export.py EXPORTED.pth

Loads the file with torch.load (weights_only=True: only tensors and allow-listed globals), loads it with strict=True
into the port of the reference's HyperNetwork_mask (make_pytorch_fixtures.py), runs it on the [CLS] features of
fixtures/pytorch/expected.safetensors and compares the masks with the ones stored there (computed from
fixtures/pytorch/hypernet_ref.pth). Prints "OK max|diff| = ..." and exits 0, or exits 1.
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_fixtures import read_safetensors  # noqa: E402
from make_pytorch_fixtures import HyperNetwork_mask, OUT  # noqa: E402


def main():
    path = sys.argv[1]
    meta, tensors = read_safetensors(os.path.join(OUT, "expected.safetensors"))
    t = dict(tensors)
    h = json.loads(meta["hyper"])
    sd = torch.load(path, weights_only=True)
    port = HyperNetwork_mask(h).double()
    port.load_state_dict({k: v.double() for k, v in sd.items()}, strict=True)
    with torch.no_grad():
        scores = port(torch.from_numpy(t["hyper_cls"]).double().unsqueeze(1))
    diff = (scores - torch.from_numpy(t["hyper_scores"]).double()).abs().max().item()
    if not diff < 1e-6:
        print("FAIL max|diff| = %.3g" % diff)
        return 1
    print("OK max|diff| = %.3g (%d tensors, strict load)" % (diff, len(sd)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
