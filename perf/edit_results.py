#!/usr/bin/env python3
"""Turns the JSON lines of perf/run-edit-bench.sh into the edit section of perf/RESULTS.md.

    edit_results.py RAW.jsonl THREADS            -> markdown on stdout
    edit_results.py --splice RESULTS.md TABLE.md -> replaces the section between the edit markers
"""
import datetime
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_results  # noqa: E402
from make_results import cpu_name  # noqa: E402

BEGIN, END = "<!-- edit-bench:begin -->", "<!-- edit-bench:end -->"


def table(raw_path, threads):
    rows = [json.loads(l) for l in open(raw_path) if l.strip().startswith("{")]
    groups = {}
    for r in rows:
        groups.setdefault((r["case"], r["impl"], r["threads"]), []).append(r)
    loads = [r[k] for r in rows for k in ("load_before", "load_after")]
    out = [f"Measured {datetime.date.today().isoformat()} on {cpu_name()}, {os.cpu_count()} cores, {threads} threads for "
           f"both (PyTorch with OMP_WAIT_POLICY=PASSIVE), fp32, batch 1 (one edit image), keep 10 %, "
           f"timed edits in rounds interleaved wte / PyTorch / wte full path. "
           f"The machine was shared: 1-minute load {min(loads):.1f}–{max(loads):.1f} during the run (2 cores), so every "
           f"figure is a median over rounds with its min–max, and ratios are of medians from the same run.", ""]
    out.append("| case | impl | threads | edits | steps | edit wall ms, median (min–max) | ms/step | process CPU ms | wte × this |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for case in ["fashion", "vit_base"]:
        ours = groups.get((case, "wte", int(threads)))
        ref = statistics.median(r["total_ms"] for r in ours) if ours else None
        for key in sorted([k for k in groups if k[0] == case], key=lambda k: (not k[1].startswith("wte"), k[1], -k[2])):
            g = groups[key]
            t = [r["total_ms"] for r in g]
            med = statistics.median(t)
            ratio = "1" if key[1] == "wte" and key[2] == int(threads) else (f"**{med / ref:.1f}×**" if ref else "–")
            out.append(f"| {case} | {key[1]} | {key[2]} | {len(g)} | {statistics.median(r['steps'] for r in g):.0f} | "
                       f"{med:.0f} ({min(t):.0f}–{max(t):.0f}) | {statistics.median(r['ms_per_step'] for r in g):.1f} | "
                       f"{statistics.median(r['cpu_ms'] for r in g):.0f} | {ratio} |")
    out.append("")
    out.append("One edit = the original model's forward for the [CLS] feature, the hypernetwork, the global top-k mask, then "
               "masked RMSprop steps until every image is right and the CE ≤ 0.01, or the step budget (fashion: the shipped "
               "model and hypernetwork, benchmark image natural/0_3/00674.png, 100 steps at most; vit_base: random weights, "
               "a random hypernetwork of the paper's shape, a random image, a fixed budget because a random model does not "
               "reach CE 0.01 in a few steps). `wte`: `ModelEditor` as `wte edit` runs it (perf/EditBench); `wte-fullpath`: "
               "the same editor without the EditPass (the model's own forward and truncated backward: dense weight gradients of "
               "the edited matrices, every edited block in full, the last block for [CLS] only since 2026-12-03); "
               "PyTorch: perf/peers/pytorch_edit.py, the reference's loop (full forward and backward with every parameter's "
               "gradient, mask-multiplied gradients, RMSprop). \"wte × this\" = this row's median time / wte's.")
    return "\n".join(out)


def splice(results_path, table_path):
    make_results.splice(results_path, table_path, BEGIN, END, "## CPU: end-to-end HPRD edit — `ModelEditor` vs the reference loop in PyTorch\n\n`perf/run-edit-bench.sh THREADS ROUNDS`.\n\n")


if __name__ == "__main__":
    if sys.argv[1] == "--splice":
        splice(sys.argv[2], sys.argv[3])
    else:
        print(table(sys.argv[1], sys.argv[2]))
