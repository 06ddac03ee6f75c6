#!/usr/bin/env bash
# Per-op forward profile of wte (`wte bench --profile`) against ONNX Runtime's own profiler (perf/OrtBench --profile) on
# the same exported model, rounds interleaved, then perf/op_profile.py's table by category (medians over rounds).
# Needs perf/out/cpu/MODEL.onnx from perf/run-cpu-bench.sh (perf/peers/export_onnx.py).
# Usage: perf/run-op-profile.sh [threads=2] [batch=1] [rounds=3] [model=vit_base_patch16_224]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
batch=${2:-1}
rounds=${3:-3}
model=${4:-vit_base_patch16_224}
onnx=perf/out/cpu/$model.onnx
[[ -f $onnx ]] || { echo "$onnx is missing: run perf/run-cpu-bench.sh first (it exports the model)" >&2; exit 2; }
out=perf/out/op-profile; mkdir -p "$out"; rm -f "$out"/wte-*.txt "$out"/ort-*.json
dotnet build src/Cli/Cli.csproj -c Release -v q -nologo >/dev/null
dotnet build perf/OrtBench -c Release -v q -nologo >/dev/null
for round in $(seq "$rounds"); do
  echo "round $round (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  dotnet src/Cli/bin/Release/net10.0/wte.dll bench -m "$model" -b "$batch" -t "$threads" --gemm managed --seconds 1 --profile \
    > "$out/wte-$round.txt"
  # ONNX Runtime names its profile PREFIX_TIME.json.
  dotnet perf/OrtBench/bin/Release/net10.0/OrtBench.dll --onnx "$onnx" --model "$model" --batch "$batch" \
    --threads "$threads" --seconds 3 --spin 0 --profile "$out/ort-$round" >/dev/null 2>&1
  mv "$(ls -t "$out"/ort-"$round"_*.json | head -1)" "$out/ort-$round.json"
done
/usr/bin/python3 perf/op_profile.py --wte "$out"/wte-*.txt --ort "$out"/ort-*.json
