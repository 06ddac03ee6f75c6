#!/usr/bin/env bash
# Side-by-side CPU benchmark, interleaved: per round, per model and batch, `wte bench` (managed GEMM), ONNX Runtime
# (perf/OrtBench on the model exported by perf/peers/export_onnx.py with wte's own random weights), TorchSharp
# (perf/TorchSharpBench, when it builds and runs here) and PyTorch 1.13 (perf/torch_peer.py), then the OpenBLAS sgemm
# ceiling with OPENBLAS_CORETYPE unset and as the environment sets it; wte's opt-in bf16 linear layers get a row when
# they run here. Every line carries the 1-minute load before and
# after; a measurement during which the load rose by more than half is run again (both kept, the retry marked).
# Writes perf/out/cpu/cpu-bench.jsonl and the CPU section of perf/RESULTS.md (perf/cpu_results.py).
# Usage: perf/run-cpu-bench.sh [threads=2] [rounds=2] [models=vit_base_patch16_224] [batches=1,8] [seconds=3]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
rounds=${2:-2}
models=${3:-vit_base_patch16_224}
batches=${4:-1,8}
seconds=${5:-3}
out=perf/out/cpu; mkdir -p "$out"
raw="$out/cpu-bench.jsonl"; : > "$raw"
py=/usr/bin/python3   # Debian's python3 with python3-torch 1.13 (not a pyenv one)
# Every peer in its best mode for a shared, oversubscribed machine: OpenMP threads (PyTorch, LibTorch) wait passively
# (spinning made LibTorch's vit_tiny forward 80× slower here), ONNX Runtime's intra-op threads do not spin (--spin 0).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
ort_spin=${ORT_SPIN:-0}
dotnet build src/Cli/Cli.csproj -c Release -v q -nologo >/dev/null
dotnet build perf/EditBench -c Release -v q -nologo >/dev/null
dotnet build perf/OrtBench -c Release -v q -nologo >/dev/null
wte="dotnet src/Cli/bin/Release/net10.0/wte.dll"
ort="dotnet perf/OrtBench/bin/Release/net10.0/OrtBench.dll"
ts=""
if dotnet build perf/TorchSharpBench -c Release -v q -nologo >"$out/torchsharp-build.log" 2>&1 \
   && bash perf/TorchSharpBench/glibcxx-shim.sh >>"$out/torchsharp-build.log" 2>&1 \
   && dotnet perf/TorchSharpBench/bin/Release/net10.0/TorchSharpBench.dll --check 1 >"$out/torchsharp-check.log" 2>&1; then
  ts="dotnet perf/TorchSharpBench/bin/Release/net10.0/TorchSharpBench.dll"
else
  echo "TorchSharp peer unavailable (see $out/torchsharp-check.log); continuing without it" >&2
fi
# The opt-in bf16 linear layers (--precision bf16: libwte_cpu.so from native/build.sh, a CPU with AVX512_BF16) get a row
# of their own when they run here.
bf16=0
cmake -S . -B build/native -DWTE_BUILD_PTX=OFF -DWTE_BUILD_TESTS=OFF >"$out/native-build.log" 2>&1 \
  && cmake --build build/native --target wte_cpu >>"$out/native-build.log" 2>&1 \
  && dotnet build src/Cli/Cli.csproj -c Release -v q -nologo >/dev/null \
  && $wte bench --model vit_tiny_patch16_224 --seconds 0 --precision bf16 --json >/dev/null 2>>"$out/native-build.log" && bf16=1 \
  || echo "wte --precision bf16 unavailable here (see $out/native-build.log); no bf16 row" >&2
load() { cut -d' ' -f1 /proc/loadavg; }
# measure TAG CMD...: appends the command's JSON lines with the load, re-runs once if the load rose by more than half.
measure() {
  local tag=$1; shift
  local attempt lines before after
  for attempt in first retry; do
    before=$(load)
    lines=$("$@" | grep '^{' || true)
    after=$(load)
    while read -r line; do
      [[ -n $line ]] && echo "${line%\}},\"tag\":\"$tag\",\"attempt\":\"$attempt\",\"load_before\":$before,\"load_after\":$after}" >> "$raw"
    done <<< "$lines"
    if ! $py -c "import sys; b, a = map(float, sys.argv[1:]); sys.exit(0 if a > 1.5 * b + 1 else 1)" "$before" "$after"; then break; fi
    echo "  load rose from $before to $after during $tag: measuring again" >&2
  done
}
for model in ${models//,/ }; do
  if [[ ! -f $out/$model.onnx ]]; then
    echo "exporting $model to ONNX" >&2
    dotnet perf/EditBench/bin/Release/net10.0/EditBench.dll --write-weights "$out/$model.safetensors" --preset "$model"
    $py perf/peers/export_onnx.py "$out/$model.safetensors" "$out/$model.onnx"
    $ort --onnx "$out/$model.onnx" --model "$model" --batch 1 --seconds 0 --threads "$threads" --check-logits "$out/$model.safetensors.logits.f32" >/dev/null
  fi
done
for round in $(seq "$rounds"); do
  for model in ${models//,/ }; do
    for batch in ${batches//,/ }; do
      echo "round $round: $model batch $batch" >&2
      measure wte $wte bench --model "$model" --batch "$batch" --threads "$threads" --gemm managed --seconds "$seconds" --json
      [[ $bf16 == 1 ]] && measure wte-bf16 $wte bench --model "$model" --batch "$batch" --threads "$threads" --gemm managed --precision bf16 --seconds "$seconds" --json
      measure ort $ort --onnx "$out/$model.onnx" --model "$model" --batch "$batch" --threads "$threads" --seconds "$seconds" --spin "$ort_spin"
      [[ -n $ts ]] && measure torchsharp $ts --weights "$out/$model.safetensors" --model "$model" --batch "$batch" --threads "$threads" --seconds "$seconds"
      measure pytorch $py perf/torch_peer.py --model "$model" --batch "$batch" --threads "$threads" --min-time "$seconds"
    done
  done
  measure sgemm-native env -u OPENBLAS_CORETYPE $py perf/peers/sgemm_ceiling.py --threads "$threads"
  measure sgemm-env $py perf/peers/sgemm_ceiling.py --threads "$threads"
done
$py perf/cpu_results.py "$raw" "$threads" > "$out/cpu-table.md"
$py perf/cpu_results.py --splice perf/RESULTS.md "$out/cpu-table.md"
echo "wrote perf/RESULTS.md (raw: $raw)" >&2
