#!/usr/bin/env bash
# End-to-end HPRD edits: wte (ModelEditor through perf/EditBench, fast path and full path) against the reference-style
# loop in PyTorch 1.13 (perf/peers/pytorch_edit.py) on the same weights, image, mask rule and step budget, interleaved
# round by round (wte, PyTorch, wte full path, ...), each line tagged with the 1-minute load before and after. Writes
# the edit section of perf/RESULTS.md via perf/edit_results.py (medians over rounds).
# Usage: perf/run-edit-bench.sh [threads=2] [rounds=3] [vit_base max steps=10]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
rounds=${2:-3}
base_steps=${3:-10}
out=perf/out/edit; mkdir -p "$out"
raw="$out/edit-bench.jsonl"; : > "$raw"
dotnet build perf/EditBench -c Release -v q -nologo >/dev/null
bench="dotnet perf/EditBench/bin/Release/net10.0/EditBench.dll"
py=/usr/bin/python3   # Debian's python3 with python3-torch 1.13
# PyTorch's OpenMP threads busy-wait at every barrier by default; on a shared, oversubscribed machine that made its
# 2-thread edit of the small model 80× slower than its 1-thread one. Passive waiting is its best setting there.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
load() { cut -d' ' -f1 /proc/loadavg; }
measure() {
  local before; before=$(load)
  "$@" | while read -r line; do
    if [[ $line == \{* ]]; then echo "${line%\}},\"load_before\":$before,\"load_after\":$(load)}"; fi
  done >> "$raw"
}
steps_of() { [[ $1 == vit_base ]] && echo "--max-steps $base_steps" || true; }
for case in fashion vit_base; do
  # shellcheck disable=SC2046
  $bench --case "$case" --threads "$threads" --repeats 0 $(steps_of "$case") --write-case "$out/$case" >/dev/null
done
for round in $(seq "$rounds"); do
  for case in fashion vit_base; do
    echo "round $round: $case" >&2
    # shellcheck disable=SC2046
    measure $bench --case "$case" --threads "$threads" --repeats 1 $(steps_of "$case")
    measure $py perf/peers/pytorch_edit.py "$out/$case" --threads "$threads" --repeats 1
    # shellcheck disable=SC2046
    measure $bench --case "$case" --threads "$threads" --repeats 1 $(steps_of "$case") --path full
  done
done
$py perf/edit_results.py "$raw" "$threads" > "$out/edit-table.md"
$py perf/edit_results.py --splice perf/RESULTS.md "$out/edit-table.md"
echo "wrote perf/RESULTS.md (raw: $raw)" >&2
