#!/usr/bin/env python3
"""Turns the JSON lines of perf/run-startup-bench.sh into the start-up section of perf/RESULTS.md.

    startup_results.py RAW.jsonl THREADS            -> markdown on stdout
    startup_results.py --splice RESULTS.md TABLE.md -> replaces the section between the start-up markers
"""
import datetime
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_results  # noqa: E402
from make_results import cpu_name  # noqa: E402

BEGIN, END = "<!-- startup:begin -->", "<!-- startup:end -->"


def table(raw_path, threads):
    rows = [json.loads(l) for l in open(raw_path) if l.strip().startswith("{")]
    loads = [r[k] for r in rows for k in ("load_before", "load_after")]
    variants = []
    for r in rows:
        v = (r["publish"], r["env"])
        if v not in variants:
            variants.append(v)
    models = []
    for r in rows:
        if r["what"] == "predict" and r["model"] not in models:
            models.append(r["model"])
    out = [f"Measured {datetime.date.today().isoformat()} on {cpu_name()}, {os.cpu_count()} cores, `--threads {threads}`, "
           f"framework-dependent publish (linux-x64), {max(r['round'] for r in rows)} interleaved rounds; the machine was "
           f"shared (1-minute load {min(loads):.1f}–{max(loads):.1f} on 2 cores): medians with min–max.", ""]
    head = "| publish | runtime settings | " + " | ".join(f"`wte predict` {m}: s to first prediction" for m in models) + " | vit_tiny B=1 forward img/s (steady state) |"
    out.append(head)
    out.append("|" + "---|" * (3 + len(models)))
    for v in variants:
        cells = []
        for m in models:
            t = [r["seconds"] for r in rows if (r["publish"], r["env"]) == v and r["what"] == "predict" and r["model"] == m]
            cells.append(f"{statistics.median(t):.2f} ({min(t):.2f}–{max(t):.2f})")
        f = [r["forward_images_per_s"] for r in rows if (r["publish"], r["env"]) == v and r["what"] == "bench"]
        env = v[1] or "as shipped (TieredCompilation=false)"
        out.append(f"| {'ReadyToRun' if v[0] == 'r2r' else 'JIT'} | {env} | " + " | ".join(cells) +
                   f" | {statistics.median(f):.1f} ({min(f):.1f}–{max(f):.1f}) |")
    out.append("")
    out.append("Start-up = wall time of `wte predict MODEL assets/fashion_mnist/benchmark/natural/0_3/00674.png --top-k 1 --json` "
               "from exec to exit (runtime start, JIT, model load, preprocessing, one forward, output). fashion = the shipped "
               "Fashion-MNIST model (0.6 MB); vit_base = a random-weight ViT-B/16 safetensors (346 MB).")
    return "\n".join(out)


def splice(results_path, table_path):
    make_results.splice(results_path, table_path, BEGIN, END, "## Start-up: process start to the first prediction\n\n`perf/run-startup-bench.sh ROUNDS THREADS [BIG_MODEL]`.\n\n")


if __name__ == "__main__":
    if sys.argv[1] == "--splice":
        splice(sys.argv[2], sys.argv[3])
    else:
        print(table(sys.argv[1], sys.argv[2]))
