#!/usr/bin/env bash
# Mutation spot-check: build a copy of the engine with one core op broken on purpose (GELU's backward sign,
# WTE_MUTANT_GELU_BACKWARD in src/Engine/Backends/Cpu/CpuBackend.Gelu.cs), run the tests that guard that op, and
# succeed only if they FAIL (the mutant is killed). The copy lives in a temporary folder, so the tree's own build
# outputs are untouched.
#
#   tests/mutation/run.sh [MUTANT]      (default GELU_BACKWARD)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mutant="${1:-GELU_BACKWARD}"
filter="FullyQualifiedName~CpuConformanceTests|FullyQualifiedName~GradientCheckTests"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Sources only: no bin/obj/build outputs.
tar -C "$root" --exclude='bin' --exclude='obj' -cf - Directory.Build.props WhereToEdit.sln src tests/WhereToEdit.Tests tests/fuzz tests/reference/fixtures \
  | tar -C "$work" -xf -
grep -q "WTE_MUTANT_${mutant}" -r "$work/src" || { echo "mutation: no WTE_MUTANT_${mutant} in src/" >&2; exit 1; }

echo "mutation: building with WTE_MUTANT_${mutant}"
if ! dotnet build "$work/tests/WhereToEdit.Tests" -c Release -v q -p:WteMutant="$mutant" >"$work/build.log" 2>&1; then
  tail -20 "$work/build.log" >&2
  echo "mutation: the mutant did not build" >&2
  exit 1
fi
dotnet test "$work/tests/WhereToEdit.Tests" -c Release --no-build --filter "$filter" >"$work/test.log" 2>&1
status=$?
summary=$(grep -E '(Passed|Failed)!? +- +Failed: +[0-9]+, Passed: +[0-9]+' "$work/test.log" | tail -1)
failed=$(echo "$summary" | sed -nE 's/.*Failed: +([0-9]+).*/\1/p')
grep -E '^\s+Failed ' "$work/test.log" | sed -E 's/^\s+Failed /  failed: /; s/ \[[^]]*\]$//' | head -20
if [ "$status" -ne 0 ] && [ "${failed:-0}" -gt 0 ]; then
  echo "mutation: WTE_MUTANT_${mutant} killed: ${failed} test(s) failed"
  exit 0
fi
echo "mutation: WTE_MUTANT_${mutant} SURVIVED: the tests did not notice the broken op (${summary:-no summary})" >&2
exit 1
