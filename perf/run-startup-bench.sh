#!/usr/bin/env bash
# Start-up of the published `wte`: wall time from process start to the first prediction printed (`wte predict MODEL
# IMAGE`, JIT + model load + one forward), for two publishes (JIT only, ReadyToRun) × the runtime's tiering settings
# (the CLI ships TieredCompilation=false; DOTNET_* variables switch it per run), interleaved round by round with the
# 1-minute load recorded. Also a steady-state check per variant (`wte bench` forward, vit_tiny B=1) so that a faster
# start does not cost the hot loops. Writes perf/out/startup/startup.jsonl and the start-up section of perf/RESULTS.md.
# Usage: perf/run-startup-bench.sh [rounds=5] [threads=2] [big model .safetensors (optional, e.g. perf/out/edit/vit_base/vit.safetensors)]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
threads=${2:-2}
big=${3:-}
out=perf/out/startup; mkdir -p "$out"
raw="$out/startup.jsonl"; : > "$raw"
image=assets/fashion_mnist/benchmark/natural/0_3/00674.png
for kind in jit r2r; do
  if [[ ! -f $out/$kind/wte.dll || ${REPUBLISH:-0} == 1 ]]; then
    extra=(-p:PublishReadyToRun=false); [[ $kind == r2r ]] && extra=(-p:PublishReadyToRun=true)
    echo "publishing $kind" >&2
    dotnet publish src/Cli -c Release -r linux-x64 --self-contained false -v q -nologo "${extra[@]}" -o "$out/$kind" >/dev/null
  fi
done
load() { cut -d' ' -f1 /proc/loadavg; }
# variant = publish:env
variants=("jit:" "r2r:" "jit:DOTNET_TieredCompilation=1 DOTNET_TC_QuickJitForLoops=0" "r2r:DOTNET_TieredCompilation=1 DOTNET_TC_QuickJitForLoops=0" "r2r:DOTNET_TieredCompilation=1")
models=("fashion:assets/fashion_mnist/vit.safetensors")
[[ -n $big ]] && models+=("vit_base:$big")
for round in $(seq "$rounds"); do
  for v in "${variants[@]}"; do
    kind=${v%%:*}; envs=${v#*:}
    for m in "${models[@]}"; do
      name=${m%%:*}; file=${m#*:}
      before=$(load)
      t0=$(date +%s.%N)
      # shellcheck disable=SC2086
      env $envs "$out/$kind/wte" predict "$file" "$image" --threads "$threads" --top-k 1 --json >/dev/null
      t1=$(date +%s.%N)
      echo "{\"what\":\"predict\",\"model\":\"$name\",\"publish\":\"$kind\",\"env\":\"$envs\",\"round\":$round,\"seconds\":$(printf '%.3f' "$(echo "$t1 - $t0" | bc)"),\"load_before\":$before,\"load_after\":$(load)}" >> "$raw"
    done
    before=$(load)
    # shellcheck disable=SC2086
    fwd=$(env $envs "$out/$kind/wte" bench --model vit_tiny_patch16_224 --batch 1 --threads "$threads" --seconds 2 --json | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['forward_images_per_s'])")
    echo "{\"what\":\"bench\",\"model\":\"vit_tiny_patch16_224\",\"publish\":\"$kind\",\"env\":\"$envs\",\"round\":$round,\"forward_images_per_s\":$fwd,\"load_before\":$before,\"load_after\":$(load)}" >> "$raw"
  done
done
/usr/bin/python3 perf/startup_results.py "$raw" "$threads" > "$out/startup-table.md"
/usr/bin/python3 perf/startup_results.py --splice perf/RESULTS.md "$out/startup-table.md"
echo "wrote perf/RESULTS.md (raw: $raw)" >&2
