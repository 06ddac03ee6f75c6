#!/usr/bin/env python3
"""Turns the JSON lines of perf/run-cpu-bench.sh into the CPU table of perf/RESULTS.md.

    make_results.py RAW.jsonl THREADS            -> markdown table on stdout
    make_results.py --splice RESULTS.md TABLE.md -> replaces the section between the CPU markers
"""
import datetime
import json
import os
import platform
import sys

BEGIN, END = "<!-- cpu-bench:begin -->", "<!-- cpu-bench:end -->"


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def table(raw_path, threads):
    rows = [json.loads(l) for l in open(raw_path) if l.strip().startswith("{")]
    torch = {(r["model"], r["batch"]): r for r in rows if r["impl"].startswith("pytorch")}
    ours = [r for r in rows if r["impl"].startswith("wte")]
    torch_version = next((r["impl"] for r in torch.values()), "pytorch")
    out = []
    out.append(f"Measured {datetime.date.today().isoformat()} on {cpu_name()}, {os.cpu_count()} cores, "
               f"{threads} threads for both, fp32, random weights, 224 px. Peer: {torch_version} CPU "
               f"(`perf/torch_peer.py`, torch.set_num_threads({threads})), in the same run.")
    out.append("")
    out.append("| model | batch | impl | fwd img/s | fwd GFLOP/s | fwd+bwd img/s | fwd+bwd GFLOP/s | edit step ms (B=1) | fwd ×PyTorch | fwd+bwd ×PyTorch | edit step ×PyTorch |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for key in sorted(torch, key=lambda k: (["vit_tiny", "vit_small", "vit_base"].index(k[0].rsplit("_patch", 1)[0]) if k[0].rsplit("_patch", 1)[0] in ["vit_tiny", "vit_small", "vit_base"] else 9, k[1])):
        t = torch[key]
        out.append(f"| {key[0]} | {key[1]} | {t['impl']} | {t['forward_images_per_s']:.2f} | {t['forward_gflops_per_s']:.0f} | "
                   f"{t['forward_backward_images_per_s']:.2f} | {t['gflops_per_s']:.0f} | {t['edit_step_ms']:.0f} | 1 | 1 | 1 |")
        for r in [r for r in ours if (r["model"], r["batch"]) == key]:
            out.append(f"| {key[0]} | {key[1]} | {r['impl']} | {r['forward_images_per_s']:.2f} | {r['forward_gflops_per_s']:.0f} | "
                       f"{r['forward_backward_images_per_s']:.2f} | {r['gflops_per_s']:.0f} | {r['edit_step_ms']:.1f} | "
                       f"**{r['forward_images_per_s'] / t['forward_images_per_s']:.2f}×** | "
                       f"**{r['forward_backward_images_per_s'] / t['forward_backward_images_per_s']:.2f}×** | "
                       f"**{t['edit_step_ms'] / r['edit_step_ms']:.1f}×** |")
    out.append("")
    out.append("Edit step: ours runs blocks 7–11 forward+backward on the cached output of blocks 0–6, weight gradients for "
               "the 6 edited fc1/fc2 matrices only, then masked RMSprop (keep 10 %); PyTorch runs the reference code's step "
               "(full forward+backward with gradients for every parameter, mask-multiplied gradients, RMSprop on the 6 matrices). "
               "fwd+bwd GFLOP/s counts 3× the forward FLOPs.")
    return "\n".join(out)


def splice(results_path, table_path, begin=BEGIN, end=END, heading="## CPU: `wte bench` vs PyTorch\n\n"):
    """Replaces the section between the begin/end markers of results_path with table_path's text (or appends it under
    heading); written to a temp file, fsynced and renamed. Every perf/*_results.py splices through this."""
    new = open(table_path).read().strip()
    text = open(results_path).read() if os.path.exists(results_path) else "# Performance results\n"
    block = f"{begin}\n{new}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + heading + block + "\n"
    tmp = results_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, results_path)


if __name__ == "__main__":
    if sys.argv[1] == "--splice":
        splice(sys.argv[2], sys.argv[3])
    else:
        print(table(sys.argv[1], sys.argv[2]))
