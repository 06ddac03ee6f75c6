#!/usr/bin/env bash
# Time from starting a published `wte serve` to its first answered prediction (the start command until the first
# `POST /v1/predict` that answers 200), RUNS times. Publish first:
#   dotnet publish src/Cli -c Release -r linux-x64 --self-contained -p:PublishSingleFile=true -o out/wte
# Usage: bash perf/serve-startup.sh [WTE=out/wte/wte] [RUNS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
wte=${1:-out/wte/wte}; runs=${2:-3}
[[ -x "$wte" ]] || { echo "serve-startup.sh: $wte: not an executable (publish first, see the header)" >&2; exit 2; }
model=assets/fashion_mnist/vit.safetensors
image=assets/fashion_mnist/benchmark/natural/0_3/00674.png
echo "$(basename "$wte"): $(stat -c %s "$wte") bytes; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for run in $(seq 1 "$runs"); do
  start=$(date +%s.%N)
  "$wte" serve "$model" --urls http://127.0.0.1:18300 >/tmp/wte-startup.log 2>&1 &
  pid=$!
  until curl -sf -o /dev/null -H 'Content-Type: image/png' --data-binary @"$image" http://127.0.0.1:18300/v1/predict; do
    kill -0 "$pid" 2>/dev/null || { echo "serve-startup.sh: wte serve exited (log: /tmp/wte-startup.log)" >&2; exit 1; }
    sleep 0.05
  done
  end=$(date +%s.%N)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "run $run: first prediction answered $(awk "BEGIN { printf \"%.2f\", $end - $start }") s after start (load average $(cut -d' ' -f1 /proc/loadavg))"
done
