#!/usr/bin/env python3
"""Per-op forward profile of wte against ONNX Runtime's, by the same categories.

  op_profile.py --wte WTE_PROFILE.txt [...] --ort ORT_PROFILE.json [...]

WTE_PROFILE.txt: the output of `wte bench --profile` (its "forward (batch B)" table, after two warm-up calls);
ORT_PROFILE.json: a profile from perf/OrtBench --profile, of which the runs after the first two are counted. With
several of each (interleaved rounds), every cell is the median over them. Prints a Markdown table of milliseconds per
forward call by category, and wte / ONNX Runtime.
"""
import argparse
import json
import re
import statistics
import sys

LINEAR = "linear layers (GEMM; wte's with their bias, added in the GEMM's tiles; wte's patch embedding GEMM, ORT's Conv)"
ATTENTION = "attention (scores, softmax, weighted sum, layout)"
BIAS_GELU = "bias and GELU"
LAYERNORM = "LayerNorm"
RESIDUAL = "residual adds"
PATCH = "patch embedding (im2col, tokens, position)"
OTHER = "other"
ORDER = [LINEAR, ATTENTION, BIAS_GELU, LAYERNORM, RESIDUAL, PATCH, OTHER]

# wte op → category (ops the forward never runs are absent).
WTE = {
    "gemm (linear fwd)": LINEAR, "linear_fwd (gemm + bias)": LINEAR,
    "attention_fwd": ATTENTION, "cls_attention_fwd": ATTENTION,   # the last block's [CLS]-only attention
    "gelu_fwd": BIAS_GELU, "bias_add": BIAS_GELU,
    "layernorm_fwd": LAYERNORM,
    "residual_add": RESIDUAL,
    "im2col": PATCH, "tokens_fwd": PATCH, "copy_rows": PATCH,
}


def ort_category(op, node):
    """The category of an ONNX Runtime node, by its op type and its name in the exported graph."""
    if op in ("Gemm", "Conv") or (op == "MatMul" and re.search(r"/(qkv|proj|fc1|fc2)/|head", node)):
        return LINEAR
    if op in ("FusedMatMul", "Softmax", "Transpose", "Split") or (op == "MatMul" and "/attn/" in node):
        return ATTENTION
    if op == "BiasGelu" or (op == "Add" and re.search(r"/(qkv|proj|fc1|fc2)/Add$", node)):
        return BIAS_GELU
    if op == "LayerNormalization":
        return LAYERNORM
    if op == "Add" and re.search(r"/blocks\.\d+/Add(_1)?$", node):
        return RESIDUAL
    if node.startswith("/patch_embed") or node in ("/Add", "/Concat") or op in ("Concat", "Expand"):
        return PATCH
    return OTHER


def ort_profile(path, warmup=2):
    """Milliseconds per run by category, over the runs after the first `warmup` (the rule `wte bench` follows too)."""
    events = json.load(open(path))
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[warmup:]
    if not runs:
        sys.exit(f"{path}: no model_run event after {warmup} warm-up runs (not an ONNX Runtime profile?)")
    out = {c: 0.0 for c in ORDER}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") \
                and any(start <= e["ts"] <= end for start, end in runs):
            out[ort_category(e["args"].get("op_name", ""), e["name"][:-len("_kernel_time")])] += e["dur"] / 1000.0
    return {c: v / len(runs) for c, v in out.items()}


def wte_profile(path):
    text = open(path).read()
    m = re.search(r"^forward \(batch \d+\): .*?\n(.*?)(?:\n\s*\n|\Z)", text, re.S | re.M)
    if not m:
        sys.exit(f"{path}: no 'forward (batch B)' table (the output of `wte bench --profile`?)")
    out = {c: 0.0 for c in ORDER}
    for line in m.group(1).splitlines()[1:]:
        # "op name  calls  total  ms/call  share %": the op name may contain spaces.
        parts = line.split()
        if len(parts) < 6 or parts[-1] != "%":
            continue
        op = " ".join(parts[:-5])
        if op == "all ops":
            continue
        out[WTE.get(op, "other")] += float(parts[-3])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wte", nargs="+", required=True)
    ap.add_argument("--ort", nargs="+", required=True)
    a = ap.parse_args()
    w = [wte_profile(p) for p in a.wte]
    o = [ort_profile(p) for p in a.ort]
    med = lambda rows, c: statistics.median(r[c] for r in rows)
    print(f"| category | wte ms per forward | ONNX Runtime ms per forward | wte / ORT |")
    print("|---|---|---|---|")
    tw = to = 0.0
    for c in ORDER:
        mw, mo = med(w, c), med(o, c)
        tw += mw; to += mo
        if mw == 0 and mo == 0:
            continue
        ratio = f"{mw / mo:.2f}" if mo > 0 else "–"
        print(f"| {c} | {mw:.2f} | {mo:.2f} | {ratio} |")
    print(f"| all ops | {tw:.2f} | {to:.2f} | {tw / to:.2f} |")
    print(f"\n({len(w)} wte profile(s), {len(o)} ONNX Runtime profile(s); medians per category)")


if __name__ == "__main__":
    main()
