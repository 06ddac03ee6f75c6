#!/usr/bin/env python3
"""The machine's sgemm ceiling: OpenBLAS cblas_sgemm, C = A·B, n×n×n fp32, on T threads (Debian's libopenblas0).

    OPENBLAS_CORETYPE=... /usr/bin/python3 perf/peers/sgemm_ceiling.py [--n 2048] [--threads 2] [--repeats 10]

Prints one JSON line: {"what": "sgemm", "n", "threads", "coretype" (the variable as set, or "native"), "best_gflops",
"median_gflops"}. Run it twice, with OPENBLAS_CORETYPE unset and with the value the environment sets, to see what the
variable costs; perf/run-cpu-bench.sh does.
"""
import argparse
import ctypes
import json
import os
import statistics
import sys
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    lib = ctypes.CDLL("libopenblas.so.0")
    lib.openblas_set_num_threads(ctypes.c_int(args.threads))
    n = args.n
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.zeros((n, n), dtype=np.float32)
    p = lambda x: x.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    lib.cblas_sgemm.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                                     ctypes.c_int, ctypes.c_float, ctypes.c_void_p, ctypes.c_int]

    def run():
        lib.cblas_sgemm(101, 111, 111, n, n, n, 1.0, p(a), n, p(b), n, 0.0, p(c), n)

    run()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    flops = 2.0 * n ** 3
    lib.openblas_get_corename.restype = ctypes.c_char_p
    print(json.dumps({
        "what": "sgemm", "n": n, "threads": args.threads, "coretype": os.environ.get("OPENBLAS_CORETYPE", "native"),
        "kernel": lib.openblas_get_corename().decode(), "best_gflops": round(flops / min(times) / 1e9, 1),
        "median_gflops": round(flops / statistics.median(times) / 1e9, 1), "load": os.getloadavg()[0],
    }), flush=True)


if __name__ == "__main__":
    sys.exit(main())
