#!/usr/bin/env bash
# Side-by-side CPU benchmark: `wte bench` (both GEMMs) and the PyTorch peer (perf/torch_peer.py) on the
# same shapes and thread count, in one run; writes perf/RESULTS.md (CPU section) via perf/make_results.py.
# Usage: perf/run-cpu-bench.sh [threads=2] [models=vit_tiny_patch16_224,vit_small_patch16_224,vit_base_patch16_224] [batches=1,8]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
models=${2:-vit_tiny_patch16_224,vit_small_patch16_224,vit_base_patch16_224}
batches=${3:-1,8}
out=perf/out; mkdir -p "$out"
raw="$out/cpu-bench.jsonl"; : > "$raw"
dotnet build src/Cli/Cli.csproj -c Release -v q -nologo >/dev/null
wte="dotnet src/Cli/bin/Release/net10.0/wte.dll"
py=/usr/bin/python3   # Debian's python3 with python3-torch (not a pyenv one)
for model in ${models//,/ }; do
  for batch in ${batches//,/ }; do
    for gemm in managed openblas; do
      echo "wte bench $model batch $batch gemm $gemm" >&2
      $wte bench --model "$model" --batch "$batch" --threads "$threads" --gemm "$gemm" --seconds 5 --json \
        | sed "s/^{/{\"impl\":\"wte-$gemm\",/" >> "$raw"
    done
  done
  echo "torch_peer $model batches $batches" >&2
  $py perf/torch_peer.py --model "$model" --batch "$batches" --threads "$threads" --min-time 5 >> "$raw"
done
$py perf/make_results.py "$raw" "$threads" > "$out/cpu-table.md"
$py perf/make_results.py --splice perf/RESULTS.md "$out/cpu-table.md"
echo "wrote perf/RESULTS.md (raw: $raw)" >&2
