#!/usr/bin/env python3
"""Write the trajectory fixture: several real meta-training iterations and a whole HPRD edit.

Usage (Debian python with PyTorch 1.13 CPU):

    /usr/bin/python3 tests/reference/make_trajectory_fixtures.py [--out DIR]

Writes tests/reference/fixtures/method_trajectory.safetensors. It extends make_method_fixtures.py
(imported, not copied), whose one-step functions are checked there against a literal port of the
reference code, from one step to whole runs, in float64 from the same base ViT and hypernetwork
(method_tiny.safetensors holds them: vit/param/*, hyper/param/*):

1. traj/meta/*  ITERATIONS meta-training iterations in a row, each with its own images, CutMix boxes
   and z0 (drawn here), the hypernetwork carried over, its stage-B RMSprop state persisting across
   iterations, and the cosine learning rate lr_i = 1e-4 (1 + cos(pi i / 2e4)) / 2 (MetaTrainer).
   Stored: every iteration's outer KL (10 values) and stage-B losses (4), and the final hypernetwork.
2. traj/edit/*  a whole HPRD edit of the method fixture's two edit images with its masks: masked
   RMSprop (lr EDIT_LR) until every image is classified as its label and the mean CE <= STOP_LOSS,
   checked before each step (ModelEditor's stop rule; 0.15 rather than the default 0.01 because these
   masks cannot bring this tiny model's CE below ~0.089), at most EDIT_MAX_STEPS. Stored: the loss before every
   step, the step count and the edited matrices.
"""

import argparse
import json
import math
import os
import sys
from collections import OrderedDict

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_fixtures as mf  # noqa: E402
import make_method_fixtures as mm  # noqa: E402

NAME = "method_trajectory"
SEED = 7719
ITERATIONS = 3
COSINE_T_MAX = 2e4
EDIT_LR = 1e-2
EDIT_MAX_STEPS = 60
STOP_LOSS = 0.15
# The stop rule compares the loss with STOP_LOSS and the predictions with the labels: a float32 run decides
# them like the float64 one only if neither is close; checked below.
STOP_MARGIN = 1e-3


def draw_boxes(gen, grid, batch):
    boxes = []
    for _ in range(batch):
        y0, x0 = (int(v) for v in torch.randint(0, grid, (2,), generator=gen))
        h = int(torch.randint(1, grid - y0 + 1, (1,), generator=gen))
        w = int(torch.randint(1, grid - x0 + 1, (1,), generator=gen))
        boxes.append([y0, x0, h, w])
    return boxes


def meta_trajectory(P, Q, c, h):
    gen = torch.Generator().manual_seed(SEED)
    B, S, C = mm.META["batch"], c["image_size"], c["in_chans"]
    R, H = h["units"], h["unit_size"]
    grid = S // c["patch_size"]
    state = [torch.zeros_like(t) for t in Q.values()]
    out = []
    for i in range(ITERATIONS):
        images = torch.randn((2 * B, C, S, S), generator=gen, dtype=torch.float32)
        z0 = 2 * torch.rand((B, R, H), generator=gen, dtype=torch.float32) - 1
        boxes = draw_boxes(gen, grid, B)
        lr = mm.META["stage_b_optimizer"]["lr"] * (1 + math.cos(math.pi * i / COSINE_T_MAX)) / 2
        r = mm.own_meta(P, Q, images.double(), z0.double(), c, h, stage_b_state=state, stage_b_lr=lr, boxes=boxes)
        Q = OrderedDict((n, r["hyper_after"][n]) for n in Q)
        out.append(dict(images=images, z0=z0, boxes=boxes, lr=lr, outer_kl=r["outer_kl"],
                        stage_b_losses=r["stage_b_losses"]))
        print("iteration %d: lr %.6g, outer KL %.5f -> %.5f, stage-B BCE %.6f -> %.6f"
              % (i, lr, r["outer_kl"][0], r["outer_kl"][-1], r["stage_b_losses"][0], r["stage_b_losses"][-1]))
    return out, Q


def whole_edit(P, x, labels, masks, c):
    """ModelEditor's HPRD loop: check (all right and CE <= 0.01) before each step, else a masked RMSprop step."""
    W = [P[n].clone() for n in mm.EDIT_NAMES]
    state = [torch.zeros_like(w) for w in W]
    hp = mm.EDIT["hprd"]
    losses, margins = [], []

    def evaluate(Ws):
        over = dict(zip(mm.EDIT_NAMES, Ws))
        logits, _ = mm.vit_head(P, mm.vit_blocks(P, mm.vit_embed(P, x, c), c, 0, c["depth"], over), c)
        return logits, mf.ce_per_sample(logits, labels).mean()

    steps = 0
    while steps < EDIT_MAX_STEPS:
        Wl = [w.detach().requires_grad_(True) for w in W]
        logits, loss = evaluate(Wl)
        right = bool((logits.argmax(-1) == labels).all())
        top2 = logits.topk(2, dim=-1).values
        margins.append(min(abs(loss.item() - STOP_LOSS), (top2[:, 0] - top2[:, 1]).abs().min().item()))
        if right and loss.item() <= STOP_LOSS:
            break
        losses.append(loss.item())
        g = torch.autograd.grad(loss, Wl)
        g = [mm.gate(masks[r], gi, mm.UNITS[r][1]) for r, gi in enumerate(g)]
        W = [w.detach() for w in mm.own_rmsprop([w.detach() for w in Wl], g, state, EDIT_LR, hp)]
        steps += 1
    with torch.no_grad():
        logits, final = evaluate(W)
    assert bool((logits.argmax(-1) == labels).all()) and final.item() <= STOP_LOSS, "the edit did not converge"
    assert min(margins) > STOP_MARGIN, "a stop decision is too close to call in float32: %g" % min(margins)
    print("edit: %d steps, CE %.5f -> %.5f (final %.5f), closest stop decision %.3g"
          % (steps, losses[0], losses[-1], final.item(), min(margins)))
    return W, losses, steps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=mm.DEFAULT_OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    c, h = mm.BASE_CFG, mm.HYPER_CFG
    d = mm.draw_all()   # the same base ViT, hypernetwork, edit images and masks as method_tiny
    P = {n: t.double() for n, t in d["P"].items()}
    Q = OrderedDict((n, t.double()) for n, t in d["Q"].items())

    iterations, Q_final = meta_trajectory(P, Q, c, h)
    with torch.no_grad():
        x = d["edit_images"].double()
        logits, _ = mm.vit_head(P, mm.vit_blocks(P, mm.vit_embed(P, x, c), c, 0, c["depth"]), c)
    labels = (logits.argmax(-1) + d["label_offsets"]) % c["num_classes"]
    W, losses, steps = whole_edit(P, x, labels, [m.double() for m in d["hprd_masks"]], c)

    f32 = mf.f32
    ts = []
    for i, it in enumerate(iterations):
        ts += [("traj/meta/%d/images" % i, f32(it["images"])),
               ("traj/meta/%d/boxes" % i, f32(torch.tensor(it["boxes"], dtype=torch.float64))),
               ("traj/meta/%d/z0" % i, f32(it["z0"])),
               ("traj/meta/%d/outer_kl" % i, f32(it["outer_kl"])),
               ("traj/meta/%d/stage_b_losses" % i, f32(it["stage_b_losses"]))]
    ts += [("traj/meta/hyper_final/" + n, f32(t)) for n, t in Q_final.items()]
    ts += [("traj/edit/labels", f32(labels.double())),
           ("traj/edit/losses", f32(torch.tensor(losses, dtype=torch.float64)))]
    ts += [("traj/edit/final/" + n, f32(w)) for n, w in zip(mm.EDIT_NAMES, W)]
    meta = {
        "iterations": str(ITERATIONS),
        "cosine_t_max": repr(COSINE_T_MAX),
        "stage_b_lrs": json.dumps([it["lr"] for it in iterations]),
        "edit": json.dumps(dict(method="hprd", lr=EDIT_LR, max_steps=EDIT_MAX_STEPS, stop_loss=STOP_LOSS, steps=steps)),
        "base_fixture": mm.NAME,
        "seed": str(SEED),
        "torch_version": torch.__version__,
        "description": ("WhereToEdit trajectory fixture: %d meta-training iterations in a row and a whole HPRD "
                        "edit, computed in float64 from method_tiny's ViT and hypernetwork, stored float32; "
                        "written by tests/reference/make_trajectory_fixtures.py" % ITERATIONS),
    }
    path = os.path.join(args.out, NAME + ".safetensors")
    mf.write_safetensors(path, ts, meta)
    size = os.path.getsize(path)
    print("%s: %d tensors, %d bytes -> %s" % (NAME, len(ts), size, path))
    assert size < 512 * 1024, "fixture exceeds 512 KB"


if __name__ == "__main__":
    sys.exit(main())
