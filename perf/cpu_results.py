#!/usr/bin/env python3
"""Turns the JSON lines of perf/run-cpu-bench.sh into the CPU section of perf/RESULTS.md.

    cpu_results.py RAW.jsonl THREADS            -> markdown on stdout
    cpu_results.py --splice RESULTS.md TABLE.md -> replaces the section between the CPU markers
"""
import datetime
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_results import cpu_name, splice  # noqa: E402

ORDER = ["wte", "wte-bf16", "ort", "torchsharp", "pytorch"]


def stat(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return max(values), statistics.median(values)


def fmt(best_med, digits=2):
    best, med = best_med
    return "–" if best is None else f"{best:.{digits}f} ({med:.{digits}f})"


def executed_note(rows):
    r = next((r for r in rows if r.get("forward_gflop_per_image_executed")), None)
    if r is None:
        return "(not in this run's records)."
    return (f"{r['forward_gflop_per_image_executed']:.1f} of the model's {r['forward_gflop_per_image']:.1f} GFLOP per image "
            f"forward ({r['model']}).")


def table(raw_path, threads):
    rows = [json.loads(l) for l in open(raw_path) if l.strip().startswith("{")]
    loads = [r[k] for r in rows for k in ("load_before", "load_after")]
    sg = {}
    for r in rows:
        if r.get("what") == "sgemm":
            sg.setdefault(r["tag"], []).append(r)
    ceiling = {t: max(x["best_gflops"] for x in v) for t, v in sg.items()}
    native = ceiling.get("sgemm-native")
    env_core = next((x["coretype"] for x in sg.get("sgemm-env", [])), "?")
    impl_name = {}
    for r in rows:
        if "tag" in r and r.get("what") != "sgemm":
            impl_name.setdefault(r["tag"], r.get("impl") or f"wte ({r.get('backend', '?')})")
    rounds = len([r for r in rows if r.get("tag") == "sgemm-native" and r.get("attempt") == "first"])
    out = [f"Measured {datetime.date.today().isoformat()} on {cpu_name()}, {os.cpu_count()} cores, {threads} threads for "
           f"every implementation, fp32, random weights (the same numbers for wte, ONNX Runtime and TorchSharp; PyTorch its "
           f"own init), 224 px, {rounds} interleaved round(s). The machine is shared: 1-minute load "
           f"{min(loads):.1f}–{max(loads):.1f} on {os.cpu_count()} cores during the run"
           + (", so the figures are far below a quiet machine's" if max(loads) > 2 * (os.cpu_count() or 1) else "") +
           "; every implementation makes two untimed calls before each measurement; each cell is the best over rounds (median in parentheses), ratios are of bests from the same run." +
           (" Rows measured after the rounds (a peer that failed to load in them, re-run interleaved with wte) are "
            "marked †." if any(r.get("attempt") == "supplement" for r in rows) else ""), ""]
    if sg:
        out.append(f"sgemm ceiling (OpenBLAS cblas_sgemm 2048³, {threads} threads, best of 10): native kernel "
                   f"**{native:.0f} GFLOP/s** ({sg['sgemm-native'][0]['kernel']}); with OPENBLAS_CORETYPE={env_core} "
                   f"as this environment sets it: {ceiling.get('sgemm-env', float('nan')):.0f} GFLOP/s "
                   f"({sg.get('sgemm-env', [{}])[0].get('kernel', '?')}). The % columns use the native ceiling.")
        out.append("")
    has_bf16 = any(r.get("tag") == "wte-bf16" for r in rows)
    out.append("| model | batch | impl | fwd img/s | fwd GFLOP/s | fwd % ceiling | fwd+bwd img/s | fwd+bwd GFLOP/s | fwd+bwd % ceiling | edit step ms (B=1) | wte fwd × | wte fwd+bwd × | wte edit step ×"
               + (" | wte bf16 fwd × | wte bf16 edit step × |" if has_bf16 else " |"))
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if has_bf16 else ""))
    keys = sorted({(r["model"], r["batch"]) for r in rows if r.get("tag") in ORDER}, key=lambda k: (k[0], k[1]))
    for model, batch in keys:
        group = {t: [r for r in rows if r.get("tag") == t and r["model"] == model and r["batch"] == batch] for t in ORDER}
        gflop = next((r["forward_gflop_per_image"] for t in ("wte", "pytorch") for r in group[t] if r.get("forward_gflop_per_image")), None)
        ours = group["wte"]
        w_f = stat(r.get("forward_images_per_s") for r in ours)[0]
        w_b = stat(r.get("forward_backward_images_per_s") for r in ours)[0]
        w_e = stat(-r["edit_step_ms"] for r in ours if r.get("edit_step_ms"))[0]
        h_f = stat(r.get("forward_images_per_s") for r in group["wte-bf16"])[0]
        h_e = stat(-r["edit_step_ms"] for r in group["wte-bf16"] if r.get("edit_step_ms"))[0]
        for t in ORDER:
            g = group[t]
            if not g:
                continue
            f = stat(r.get("forward_images_per_s") for r in g)
            b = stat(r.get("forward_backward_images_per_s") for r in g)
            e = stat(-r["edit_step_ms"] for r in g if r.get("edit_step_ms"))
            # wte's rows count the FLOPs it executes (its last block runs past the attention for [CLS] only).
            gx = next((r["forward_gflop_per_image_executed"] for r in g if r.get("forward_gflop_per_image_executed")), gflop)
            ff = (f[0] * gx, f[1] * gx) if f[0] and gx else (None, None)
            bf = (b[0] * 3 * gx, b[1] * 3 * gx) if b[0] and gx else (None, None)
            pct = lambda x: "–" if x[0] is None or not native else f"{100 * x[0] / native:.0f} %"
            es = "–" if e[0] is None else f"{-e[0]:.1f} ({-e[1]:.1f})"
            hf = "1" if t == "wte-bf16" else ("–" if f[0] is None or h_f is None else f"**{h_f / f[0]:.2f}×**")
            he = "1" if t == "wte-bf16" else ("–" if e[0] is None or h_e is None else f"**{e[0] / h_e:.1f}×**")
            rf = "1" if t == "wte" else ("–" if f[0] is None or w_f is None else f"**{w_f / f[0]:.2f}×**")
            rb = "1" if t == "wte" else ("–" if b[0] is None or w_b is None else f"**{w_b / b[0]:.2f}×**")
            re = "1" if t == "wte" else ("–" if e[0] is None or w_e is None else f"**{e[0] / w_e:.1f}×**")
            dagger = " †" if t != "wte" and all(r.get("attempt") == "supplement" for r in g) else ""
            out.append(f"| {model} | {batch} | {impl_name.get(t, t)}{dagger} | {fmt(f)} | {fmt(ff, 0)} | {pct(ff)} | {fmt(b)} | "
                       f"{fmt(bf, 0)} | {pct(bf)} | {es} | {rf} | {rb} | {re} |" + (f" {hf} | {he} |" if has_bf16 else ""))
    missing = [t for t in ORDER if not any(r.get("tag") == t for r in rows)]
    out.append("")
    out.append("wte: `wte bench --gemm managed` (forward; forward + CE + full backward; the edit step = `ModelEditor.Step` at "
               "B=1 with its EditPass: blocks 7–11 on the cached output of blocks 0–6, the last block for [CLS] only, weight "
               "gradients for the masked 10 % of the 6 edited fc1/fc2 matrices, masked RMSprop). ONNX Runtime: perf/OrtBench "
               "(CPU EP, ORT_ENABLE_ALL, intra-op threads = threads, inter-op 1). PyTorch: perf/torch_peer.py (its edit step is "
               "the reference's: full forward + backward with every parameter's gradient). TorchSharp 0.107.0 (LibTorch 2.10): "
               "perf/TorchSharpBench, the same ViT in TorchSharp modules on wte's weights (loads on Debian 12 through "
               "perf/TorchSharpBench/glibcxx-shim.sh). PyTorch and LibTorch ran with OMP_WAIT_POLICY=PASSIVE and ONNX Runtime "
               "without intra-op spinning: on this oversubscribed machine their spinning defaults were up to 80× slower. "
               "GFLOP/s count 2 × the multiply-adds "
               "of the matmuls; forward+backward counts 3× the forward. wte's count the work it executes: its last block runs "
               "past the attention for the [CLS] token only (the only row the head reads; the same logits and gradients), "
               + executed_note(rows) + " The peers compute every token." +
               (" wte bf16 (opt-in `--precision bf16`): the linear layers' forward GEMMs in bf16 with fp32 sums "
                "(AVX512_BF16, libwte_cpu.so), every other op and the whole backward fp32; its % columns are of the fp32 "
                "ceiling (bf16's own peak is about twice that), and the fp32 targets are judged on the wte row." if has_bf16 else "") +
               (f" Not measured in this run: {', '.join(missing)} (see perf/RESULTS.md notes)." if missing else ""))
    return "\n".join(out)


if __name__ == "__main__":
    if sys.argv[1] == "--splice":
        splice(sys.argv[2], sys.argv[3])
    else:
        print(table(sys.argv[1], sys.argv[2]))
