#!/usr/bin/env bash
# `wte serve` vs FastAPI + uvicorn + PyTorch on loopback, same weights, same threads (bounded: N requests per level,
# at most 30 s each). Usage: bash perf/run-serve-bench.sh [THREADS=2] [REQUESTS=400] > perf/serve-bench.log
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}; requests=${2:-400}
model=assets/fashion_mnist/vit.safetensors
dotnet build src/Cli -c Release -v q >/dev/null
dotnet src/Cli/bin/Release/net10.0/wte.dll serve "$model" --urls http://127.0.0.1:18180 --threads "$threads" >/tmp/wte-serve-bench.log 2>&1 &
ours=$!
/usr/bin/python3 perf/serve_peer_fastapi.py "$model" --port 18190 --threads "$threads" >/tmp/wte-peer-bench.log 2>&1 &
peer=$!
trap 'kill $ours $peer 2>/dev/null || true' EXIT
for url in http://127.0.0.1:18180 http://127.0.0.1:18190; do
  for _ in $(seq 1 240); do curl -sf "$url/healthz" >/dev/null && break; sleep 0.5; done
done
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); threads $threads; model $model (fp32)"
/usr/bin/python3 perf/serve_load.py --ours http://127.0.0.1:18180 --peer http://127.0.0.1:18190 --requests "$requests" \
  assets/fashion_mnist/benchmark/natural/0_3/*.png
