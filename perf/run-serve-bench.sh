#!/usr/bin/env bash
# `wte serve` vs FastAPI + uvicorn + PyTorch on loopback, same weights, same threads, bounded in time. One command:
#   bash perf/run-serve-bench.sh [THREADS=2] [MODEL=fashion|vit_base] [REQUESTS]  > perf/out/serve-bench.log
# prints p50/p99 latency and throughput at concurrency 1, 8 and 32 and under a mixed predict + edit load, the ratios
# against the peer and where a `wte serve` request's time goes. Levels alternate between the servers (interleaved).
#   fashion:  assets/fashion_mnist/vit.safetensors, the 12 benchmark PNGs of natural/0_3; REQUESTS (400) per level,
#             at most 30 s per level and server; 5 edits of 20 steps. About 4 minutes.
#   vit_base: ViT-B/16 with random weights written by perf/make_vit_base.py (perf/out/vit_base/), 224x224 RGB PNGs;
#             REQUESTS (200) per level, at most 30 s per level and server; 2 edits of 2 steps. About 8 minutes.
# BASELINE=path/to/wte.dll adds another build of wte (e.g. the previous commit's) as a third server, measured in the
# same interleaved run, to compare a change before/after on a loaded machine.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}; which=${2:-fashion}
case "$which" in
  fashion)
    model=assets/fashion_mnist/vit.safetensors
    images=(assets/fashion_mnist/benchmark/natural/0_3/*.png)
    load_args=(--requests "${3:-400}" --max-seconds 30 --edits 5 --edit-steps 20) ;;
  vit_base)
    model=$(/usr/bin/python3 perf/make_vit_base.py perf/out/vit_base)
    images=(perf/out/vit_base/img*.png)
    load_args=(--requests "${3:-200}" --max-seconds 30 --warmup-requests 4 --warmup-seconds 10 --edits 2 --edit-steps 2) ;;
  *) echo "run-serve-bench.sh: MODEL '$which' is not fashion or vit_base" >&2; exit 2 ;;
esac
dotnet build src/Cli -c Release -v q >/dev/null
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
dotnet src/Cli/bin/Release/net10.0/wte.dll serve "$model" --urls http://127.0.0.1:18180 --threads "$threads" >/tmp/wte-serve-bench.log 2>&1 &
pids+=($!)
servers=(--server "wte serve=http://127.0.0.1:18180" --pid "wte serve=$!")
urls=(http://127.0.0.1:18180 http://127.0.0.1:18190)
if [[ -n "${BASELINE:-}" ]]; then
  dotnet "$BASELINE" serve "$model" --urls http://127.0.0.1:18170 --threads "$threads" >/tmp/wte-serve-baseline.log 2>&1 &
  pids+=($!)
  servers+=(--server "wte serve (baseline)=http://127.0.0.1:18170" --pid "wte serve (baseline)=$!")
  urls+=(http://127.0.0.1:18170)
fi
/usr/bin/python3 perf/serve_peer_fastapi.py "$model" --port 18190 --threads "$threads" >/tmp/wte-peer-bench.log 2>&1 &
pids+=($!)
servers+=(--server "FastAPI+PyTorch=http://127.0.0.1:18190" --pid "FastAPI+PyTorch=$!")
for url in "${urls[@]}"; do
  for _ in $(seq 1 480); do curl -sf "$url/healthz" >/dev/null && break; sleep 0.5; done
  curl -sf "$url/healthz" >/dev/null || { echo "run-serve-bench.sh: $url did not come up (logs in /tmp/wte-*-bench.log)" >&2; exit 1; }
done
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); threads $threads; model $model (fp32); client: Python threads on the same cores"
/usr/bin/python3 perf/serve_load.py "${servers[@]}" "${load_args[@]}" "${images[@]}"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
