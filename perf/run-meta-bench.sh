#!/usr/bin/env bash
# One meta-training iteration (B = 8, 10 outer × (5 + 1) passes) timed by `wte meta-train --bench` and by the
# PyTorch port of the reference loop (perf/torch_meta_peer.py), same shapes and threads, random weights.
# Prints one JSON line per (implementation, model) to stdout. ViT-B takes minutes for wte and tens of
# minutes for the reference loop on 2 threads.
# Usage: perf/run-meta-bench.sh [threads=2] [models=test_tiny,vit_tiny_patch16_224,vit_base_patch16_224] [iterations=1]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
models=${2:-test_tiny,vit_tiny_patch16_224,vit_base_patch16_224}
iterations=${3:-1}
dotnet build src/Cli/Cli.csproj -c Release -v q -nologo >/dev/null
for model in ${models//,/ }; do
  echo "wte meta-train --bench $model" >&2
  dotnet src/Cli/bin/Release/net10.0/wte.dll meta-train "$model" --bench --threads "$threads" --iterations "$iterations" --no-progress \
    | sed 's/^{/{"impl":"wte",/'
  echo "torch_meta_peer $model" >&2
  /usr/bin/python3 perf/torch_meta_peer.py --model "$model" --threads "$threads" --iterations "$iterations"
done
